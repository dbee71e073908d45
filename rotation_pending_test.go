package mapsindoors

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

// Was TestReview_RotateRootMisreportsThePreviousSecretWhenAnOlderDeletionFails
// (defect 11): with a grace, rotate-root answered previous_deletion_due =
// now and warned that the just-replaced secret's delete failed, when an
// older one's had.
func TestPendingDeletion_RotateRootReportsThePreviousSecretsOwnOutcome(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{TokenLifetime: 48 * time.Hour})
	clock := &fixedClock{t: time.Now()}
	e.b.now = clock.Now
	e.configure(t, map[string]any{"previous_secret_grace": "10m"})
	s0 := e.fake.Credentials()
	_, err := e.rotate(t) // S1 stored, S0 pending until +10m
	require.NoError(t, err)
	s1 := e.storedConfig(t)

	clock.Add(11 * time.Minute)
	e.fake.InjectFault(fakeupstream.EndpointDeleteSecret, fakeupstream.Fault{Status: 503, Times: 100})
	resp, err := e.rotate(t) // S2 stored, S1 pending until +10m; S0 is due and its delete fails
	require.NoError(t, err)
	e.fake.ClearFaults()
	require.Equal(t, s1.ClientSecretID, resp.Data["previous_client_secret_id"])
	pending := e.storedConfig(t).PendingDeletions
	require.Len(t, pending, 2)
	require.Equal(t, s1.ClientSecretID, pending[1].ID)
	require.Equal(t, formatTime(pending[1].DueAt), resp.Data["previous_deletion_due"], "the previous secret's own due time (now+grace)")
	require.Equal(t, formatTime(clock.Now().Add(10*time.Minute)), resp.Data["previous_deletion_due"])
	require.Equal(t, false, resp.Data["previous_deleted"])
	require.Len(t, resp.Warnings, 1)
	require.NotContains(t, resp.Warnings[0], "deleting the previous one")
	require.Contains(t, resp.Warnings[0], "an older replaced client secret, "+s0.ClientSecretID)
}

// badIDClient answers 400 for one id, as an API that validates the id's
// format does.
type badIDClient struct {
	upstream.Client
	bad string
}

func (c *badIDClient) DeleteClientSecret(ctx context.Context, id string) error {
	if id == c.bad {
		return &upstream.Error{Op: "delete client secret " + id, StatusCode: http.StatusBadRequest,
			Code: "invalid_request", Description: "id is not a valid id"}
	}
	return c.Client.DeleteClientSecret(ctx, id)
}

// Was TestReview_OneUndeletablePendingDeletionBlocksAllLaterOnes (defect
// 12): the first refused id stopped every later deletion, so each later
// rotation left the secret it replaced live for good.
func TestPendingDeletion_ARefusedIDIsKeptWithItsReasonAndBlocksNoOther(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{TokenLifetime: 48 * time.Hour})
	clock := &fixedClock{t: time.Now()}
	e.b.now = clock.Now
	const typo = "0f3c-typo"
	e.configure(t, map[string]any{"client_secret_id": typo}) // the operator mistyped the id
	real := e.b.newClient
	e.b.newClient = func(c upstream.Config) (upstream.Client, error) {
		cl, err := real(c)
		if err != nil {
			return nil, err
		}
		return &badIDClient{Client: cl, bad: typo}, nil
	}

	var replaced []*config
	for i := range 3 {
		replaced = append(replaced, e.storedConfig(t))
		resp, err := e.rotate(t)
		require.NoError(t, err)
		switch i {
		case 0:
			require.Contains(t, strings.Join(resp.Warnings, "\n"), "deleting the previous one, "+typo+", failed")
		case 1:
			require.Contains(t, strings.Join(resp.Warnings, "\n"), "an older replaced client secret, "+typo)
		}
		if i > 0 {
			require.Equal(t, true, resp.Data["previous_deleted"], "rotation %d deleted the secret it replaced", i)
		}
		clock.Add(time.Hour)
		e.rollback(t)
	}
	for _, c := range replaced[1:] {
		require.False(t, e.fake.SecretWorks(c.ClientSecret), "secret %s was replaced an hour ago (grace 0)", c.ClientSecretID)
	}
	pending := e.storedConfig(t).PendingDeletions
	require.Len(t, pending, 1, "only the refused id is left")
	require.Equal(t, typo, pending[0].ID)
	require.GreaterOrEqual(t, pending[0].Attempts, 3)
	require.Contains(t, pending[0].LastError, "HTTP 400")
	require.Contains(t, pending[0].LastError, "id is not a valid id")
	view := e.read(t, "config").Data["pending_deletions"].([]map[string]any)
	require.Contains(t, view[0]["last_error"], "id is not a valid id", "a config read shows why")

	// After a few failures it is no longer tried every minute.
	hits := e.fake.Hits(fakeupstream.EndpointToken)
	for range 5 {
		e.rollback(t)
	}
	require.Equal(t, hits, e.fake.Hits(fakeupstream.EndpointToken), "the refused id waits out its backoff")
}

// Was TestReview_AReadoptedSecretLosesTheGraceItsNextRotationPromised
// (defect 14): going back to S0 left its stale entry, which deleted S0 six
// minutes after rotate-root promised it a day.
func TestPendingDeletion_AReadoptedSecretKeepsTheGraceItsNextRotationPromised(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{TokenLifetime: 48 * time.Hour})
	clock := &fixedClock{t: time.Now()}
	e.b.now = clock.Now
	e.configure(t, map[string]any{"previous_secret_grace": "1h"})
	s0 := e.fake.Credentials()
	_, err := e.rotate(t) // S1 stored; S0 pending until T+1h
	require.NoError(t, err)

	clock.Add(50 * time.Minute)
	resp, err := e.write(t, "config", map[string]any{"client_secret": s0.ClientSecret, "client_secret_id": s0.ClientSecretID, "previous_secret_grace": "24h"})
	require.NoError(t, err)
	require.False(t, resp.IsError())
	require.Contains(t, strings.Join(resp.Warnings, "\n"), "client_secret_id "+s0.ClientSecretID+" was a replaced secret pending deletion")
	pending := e.storedConfig(t).PendingDeletions
	require.Len(t, pending, 1, "S0 stays tracked, suspended while it is the stored secret")
	require.Equal(t, s0.ClientSecretID, pending[0].ID)
	clock.Add(5 * time.Minute) // T+55m
	rot, err := e.rotate(t)
	require.NoError(t, err)
	require.Equal(t, s0.ClientSecretID, rot.Data["previous_client_secret_id"])
	require.Equal(t, formatTime(clock.Now().Add(24*time.Hour)), rot.Data["previous_deletion_due"], "rotate-root promises S0 a day")
	require.Len(t, e.storedConfig(t).PendingDeletions, 1, "one entry per id")

	clock.Add(6 * time.Minute) // T+61m: the stale entry's time
	e.rollback(t)
	require.True(t, e.fake.SecretWorks(s0.ClientSecret), "S0 keeps the day it was promised")
	clock.Add(24 * time.Hour)
	e.rollback(t)
	require.False(t, e.fake.SecretWorks(s0.ClientSecret), "and is deleted when it ends")
}

// One entry per id, whatever the list held before (an entry kept by an
// older version): recording an id again replaces its entry.
func TestPendingDeletion_OneEntryPerID(t *testing.T) {
	now := time.Now().UTC()
	list := []pendingDeletion{{ID: "a", DueAt: now}, {ID: "b", DueAt: now}}
	list = withPending(list, pendingDeletion{ID: "a", DueAt: now.Add(time.Hour)})
	require.Len(t, list, 2)
	require.Equal(t, pendingDeletion{ID: "a", DueAt: now.Add(time.Hour)}, list[1])
	rest, dropped := withoutStored(list, "b")
	require.Equal(t, "b", dropped.ID)
	require.Len(t, rest, 1)
	require.Len(t, list, 2, "the list it was given is not changed")
}

// Defect 13: nothing bounded the pending deletions. A rotation that would
// pass the bound is refused before it creates anything, and says how to
// settle.
func TestPendingDeletion_ARotationThatWouldPassTheBoundIsRefusedBeforeItCreates(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, map[string]any{"previous_secret_grace": "720h"})
	stored := e.storedConfig(t)
	now := time.Now().UTC()
	for i := range maxPendingDeletions {
		stored.PendingDeletions = append(stored.PendingDeletions, pendingDeletion{ID: fmt.Sprintf("old-%d", i), ReplacedAt: now, DueAt: now.Add(time.Hour)})
	}
	require.NoError(t, putConfig(context.Background(), e.storage, stored))

	resp, err := e.rotate(t)
	requireBadRequest(t, resp, err, "client-secrets/pending")
	require.Contains(t, resp.Error().Error(), fmt.Sprintf("%d replaced client secrets are still pending deletion", maxPendingDeletions))
	require.Zero(t, e.fake.Hits(fakeupstream.EndpointCreateSecret))
	require.Empty(t, e.wals(t))

	// A scheduled rotation meets the same bound, records it and backs off.
	e.b.rotateRootIf(context.Background(), e.storage, "mapsindoors/", triggerSchedule, nil) //nolint:errcheck // recorded
	require.Equal(t, 1, e.storedConfig(t).Rotation.ConsecutiveFailures)
}

// Defect 13: settings under which the replaced secrets in their grace
// would pass the bound are a 400 naming the fields.
func TestConfig_RotationSettingsThatWouldPassThePendingBoundAre400(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)
	before := e.storageDump(t)
	for _, bad := range []map[string]any{
		{"rotation_period": "1h", "previous_secret_grace": "720h"},
		{"rotation_period": "1m", "previous_secret_grace": "1h"},
		{"rotation_schedule": "0 * * * *", "previous_secret_grace": "720h"},
		{"rotation_schedule": "*/5 9-14 * * 1", "previous_secret_grace": "24h"}, // 72 on Mondays, none the other days
	} {
		resp, err := e.write(t, "config", bad)
		requireBadRequest(t, resp, err, "previous_secret_grace")
		field := "rotation_period"
		if _, ok := bad["rotation_schedule"]; ok {
			field = "rotation_schedule"
		}
		require.Contains(t, resp.Error().Error(), field)
	}
	requireQuietlyEqual(t, before, e.storageDump(t), "a refused write changed storage")
	for _, good := range []map[string]any{
		{"rotation_period": "24h", "previous_secret_grace": "168h"},
		{"rotation_period": "1h", "previous_secret_grace": "24h"},
		{"rotation_period": "0", "rotation_schedule": "0 3 * * *", "previous_secret_grace": "720h"},
		// Kept but not run: nothing is scheduled, so nothing piles up.
		{"rotation_schedule": "", "rotation_period": "1h", "previous_secret_grace": "720h", "disable_automated_rotation": true},
	} {
		e.writeConfig(t, good)
	}
}

// Defect 13: every config an operator can write stays, with all the pending
// deletions rotation may add and the new secret's id, under 512 KiB.
func TestConfig_AnAcceptedConfigStaysUnderTheEntryBoundWithEveryPendingDeletion(t *testing.T) {
	worstID := strings.Repeat("{", maxSecretIDBytes) // allowed, unescaped
	cfg := &config{Provider: "mapsindoors", ClientID: strings.Repeat("<", maxTextBytes), ClientSecretID: worstID}
	// Grow ca_cert (JSON-escaped to six bytes a character) until refused.
	for size := 1 << 10; ; size += 4 << 10 {
		next := cfg.clone()
		next.CACert = strings.Repeat("&", size)
		if err := checkConfigSize(next); err != nil {
			require.Contains(t, err.Error(), "ca_cert", "the message names the largest field")
			break
		}
		cfg = next
	}
	reason := &upstream.Error{Op: "delete", StatusCode: 400, Description: strings.Repeat("<\u00e9", 400)}
	for i := range maxPendingDeletions {
		cfg.PendingDeletions = append(cfg.PendingDeletions, pendingDeletion{
			ID: worstID[:maxSecretIDBytes-3] + fmt.Sprintf("%03d", i), ReplacedAt: time.Now(), DueAt: time.Now(), NextAttempt: time.Now(), LastAttempt: time.Now(),
			Account: accountID{}.fingerprint(), Attempts: 1 << 30, LastError: boundedReason(reason),
		})
	}
	cfg.ClientSecretID = worstID
	cfg.PreviousClientSecretID = worstID
	require.NoError(t, putConfig(context.Background(), &logical.InmemStorage{}, cfg), "the config with every pending deletion fits")
}

// A WAL entry stays far under the bound, whatever it holds.
func TestWAL_AnEntryStaysSmall(t *testing.T) {
	raw, err := json.Marshal(rotateWAL{Marker: newMarker(), PreviousID: strings.Repeat("{", maxSecretIDBytes), StartedAt: time.Now(),
		Account: accountID{}.fingerprint()})
	require.NoError(t, err)
	require.Less(t, len(raw), 4<<10)
}

// rotatedOnce is a mount on a fixed clock with previous_secret_grace
// grace, rotated once: S1 is stored, and S0 (returned) is pending
// deletion.
func rotatedOnce(t *testing.T, grace string) (*testEnv, *fixedClock, fakeupstream.Credentials) {
	t.Helper()
	e := newTestEnv(t, fakeupstream.Options{TokenLifetime: 48 * time.Hour})
	clock := &fixedClock{t: time.Now()}
	e.b.now = clock.Now
	e.configure(t, map[string]any{"previous_secret_grace": grace})
	s0 := e.fake.Credentials()
	_, err := e.rotate(t)
	require.NoError(t, err)
	return e, clock, s0
}

// rotatedTwice is rotatedOnce rotated again: S2 is stored, and S0 and S1
// (returned, S1 as the config that held it) are pending deletion.
func rotatedTwice(t *testing.T, grace string) (*testEnv, *fixedClock, fakeupstream.Credentials, *config) {
	t.Helper()
	e, clock, s0 := rotatedOnce(t, grace)
	s1 := e.storedConfig(t)
	_, err := e.rotate(t)
	require.NoError(t, err)
	require.Len(t, e.storedConfig(t).PendingDeletions, 2)
	return e, clock, s0, s1
}

// UP-5 with an upstream that never answers: each delete of a pass gets its
// share of what is left of the pass's deadline (at most a request's
// timeout), so one that hangs cannot spend the time of those after it.
func TestPendingDeletion_EachDeleteHasItsShareOfThePassDeadline(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 40*time.Second)
	defer cancel()
	share := deleteShare(ctx, time.Minute, 4)
	require.LessOrEqual(t, share, 10*time.Second)
	require.Greater(t, share, 9*time.Second)
	require.Equal(t, 5*time.Second, deleteShare(ctx, 5*time.Second, 4), "never more than a request's timeout")
	require.Equal(t, 5*time.Second, deleteShare(t.Context(), 5*time.Second, 4), "without a deadline, a request's timeout")
}

// recordDeletes is an upstream that records the order of its deletes.
type recordDeletes struct {
	upstream.Client
	ids *[]string
}

func (r recordDeletes) DeleteClientSecret(ctx context.Context, id string) error {
	*r.ids = append(*r.ids, id)
	return r.Client.DeleteClientSecret(ctx, id)
}

// A pass tries the least recently tried first, so one whose delete hung
// last time goes after those never tried.
func TestPendingDeletion_APassTriesTheLeastRecentlyTriedFirst(t *testing.T) {
	e, clock, s0, s1 := rotatedTwice(t, "1h")
	stored := e.storedConfig(t)
	require.Equal(t, []string{s0.ClientSecretID, s1.ClientSecretID}, []string{stored.PendingDeletions[0].ID, stored.PendingDeletions[1].ID})
	stored.PendingDeletions[0].Attempts, stored.PendingDeletions[0].LastAttempt = 1, clock.Now()
	require.NoError(t, putConfig(context.Background(), e.storage, stored))
	clock.Add(2 * time.Hour)

	var order []string
	newClient := e.b.newClient
	e.b.newClient = func(c upstream.Config) (upstream.Client, error) {
		client, err := newClient(c)
		return recordDeletes{Client: client, ids: &order}, err
	}
	e.rollback(t)
	require.Equal(t, []string{s1.ClientSecretID, s0.ClientSecretID}, order, "S1, never tried, goes before S0, tried before")
	require.Empty(t, e.storedConfig(t).PendingDeletions)
}

// Entries a pass has no time left for are not tried, and so count no
// failure: no attempt, no backoff.
func TestPendingDeletion_AnEntryThePassHadNoTimeForIsNotAFailure(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	chosen := []pendingDeletion{{ID: "a"}, {ID: "b"}}
	var tried []string
	untried := tryInTurn(ctx, chosen, func(_ context.Context, p pendingDeletion, _ int) error {
		tried = append(tried, p.ID)
		return ctx.Err()
	}, func(pendingDeletion, error) {})
	require.Empty(t, tried)
	require.Equal(t, 2, untried)

	// A deadline keeps back time to record what the pass did.
	ctx, cancel = context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	deletes, cancelDeletes := deletesContext(ctx)
	defer cancelDeletes()
	outer, _ := ctx.Deadline()
	inner, _ := deletes.Deadline()
	require.Equal(t, settleTimeout, outer.Sub(inner))
}

// CW-11 with review finding 5: going back to a replaced secret suspends
// its pending deletion (it stays tracked, and is not deleted while it is
// the stored secret). When the stored id moves on again, it is due with a
// fresh grace, since whoever used it meanwhile is owed one.
func TestPendingDeletion_ASuspendedEntryIsDueAgainWithAFreshGraceOnceTheStoredIDMovesOn(t *testing.T) {
	e, clock, s0 := rotatedOnce(t, "1h") // S1 stored; S0 due at T+1h
	s1 := e.storedConfig(t)
	e.writeConfig(t, map[string]any{"client_secret": s0.ClientSecret, "client_secret_id": s0.ClientSecretID})

	clock.Add(2 * time.Hour) // past S0's old due time
	require.False(t, e.storedConfig(t).hasDueDeletions(clock.Now()), "the stored secret's entry is never due")
	e.rollback(t)
	require.True(t, e.fake.SecretWorks(s0.ClientSecret), "S0 is the stored secret: suspended")

	resp, err := e.write(t, "config", map[string]any{"client_secret": s1.ClientSecret, "client_secret_id": s1.ClientSecretID})
	require.NoError(t, err)
	require.False(t, resp.IsError())
	require.Contains(t, strings.Join(resp.Warnings, "\n"), "client_secret_id "+s0.ClientSecretID+", pending deletion, is no longer the stored secret: it is deleted at "+
		formatTime(clock.Now().Add(time.Hour)))
	pending := e.storedConfig(t).PendingDeletions
	require.Len(t, pending, 1)
	require.Equal(t, clock.Now().Add(time.Hour).UTC(), pending[0].DueAt.UTC())

	clock.Add(30 * time.Minute)
	e.rollback(t)
	require.True(t, e.fake.SecretWorks(s0.ClientSecret), "S0 has its fresh grace")
	clock.Add(time.Hour)
	e.rollback(t)
	require.False(t, e.fake.SecretWorks(s0.ClientSecret), "and is deleted when it ends")
	require.Empty(t, e.storedConfig(t).PendingDeletions)
}
