package mapsindoors

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

// useJWKSURI has the fake fetch the mount's JWKS for a kid it does not
// know, as a server given its URL as jwks_uri would: in the middle of the
// token request that needs it.
func (e *testEnv) useJWKSURI(t testing.TB, alg string) {
	t.Helper()
	e.fake.UseJWKSSource(alg, func() ([]byte, error) {
		resp, err := e.b.HandleRequest(context.Background(), &logical.Request{
			Operation: logical.ReadOperation, Path: "jwks", Storage: e.storage, MountPoint: "mapsindoors/",
		})
		if err != nil {
			return nil, err
		}
		return resp.Data[logical.HTTPRawBody].([]byte), nil
	})
}

// keyStates is kid → state as a config read shows them.
func (e *testEnv) keyStates(t testing.TB) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, k := range e.read(t, "config").Data["signing_keys"].([]map[string]any) {
		out[k["kid"].(string)] = k["state"].(string)
	}
	return out
}

// signedWith is the kid of the last assertion the fake accepted after a
// fresh creds read (the role shares no token, so every read signs).
func (e *testEnv) signedWith(t testing.TB) string {
	t.Helper()
	e.read(t, "creds/each")
	seen, ok := e.fake.LastAssertion()
	require.True(t, ok)
	require.True(t, seen.Accepted, "the read's assertion was accepted")
	return seen.Header.KeyID
}

func TestKeyRollover_JWKSURIServerPromotesAtOnceAndDropsTheOldKeyAfterGrace(t *testing.T) {
	e := newJWTEnv(t, map[string]any{"previous_secret_grace": "1h"})
	clock := &fixedClock{t: time.Now().UTC().Truncate(time.Second)}
	e.b.now = clock.Now
	e.useJWKSURI(t, "RS256")
	e.role(t, "each", map[string]any{"token_per_lease": true})
	old := e.signedWith(t)
	fetches := e.fake.JWKSFetches()

	resp, err := e.rotate(t)
	require.NoError(t, err)
	require.False(t, resp.IsError())
	newKID := resp.Data["kid"].(string)
	require.NotEqual(t, old, newKID)
	require.Equal(t, "current", resp.Data["state"], "the server fetched the JWKS for the new kid and took it")
	require.Equal(t, newKID, resp.Data["signing_kid"])
	require.Equal(t, old, resp.Data["previous_kid"])
	require.Equal(t, formatTime(clock.Now().Add(time.Hour)), resp.Data["previous_removal_at"])
	require.Empty(t, resp.Warnings)
	require.Greater(t, e.fake.JWKSFetches(), fetches, "the server refetched the JWKS, from inside the rotation's proof")

	require.Equal(t, map[string]string{newKID: "current", old: "previous"}, e.keyStates(t))
	_, set := e.jwks(t)
	require.ElementsMatch(t, []string{old, newKID}, kidsOf(set), "the old key stays published through the grace")
	require.Equal(t, newKID, e.signedWith(t))
	cfg := e.read(t, "config").Data
	require.Equal(t, formatTime(clock.Now()), cfg["last_rotated"])

	clock.Add(59 * time.Minute)
	e.rollback(t)
	_, set = e.jwks(t)
	require.Equal(t, 2, len(set.Keys), "not before the grace ends")
	clock.Add(time.Minute)
	e.rollback(t)
	_, set = e.jwks(t)
	require.Equal(t, []string{newKID}, kidsOf(set), "the periodic function drops it when the grace ends")
	require.Equal(t, map[string]string{newKID: "current"}, e.keyStates(t))
	require.Equal(t, newKID, e.signedWith(t))
}

func TestKeyRollover_DelayPublishesFirstAndThePeriodicFunctionPromotes(t *testing.T) {
	e := newJWTEnv(t, map[string]any{"key_rollover_delay": "2h"})
	clock := &fixedClock{t: time.Now().UTC().Truncate(time.Second)}
	e.b.now = clock.Now
	e.writeConfig(t, map[string]any{"key_type": "ec-p256"}) // for the next key
	e.useJWKSURI(t, "RS256")
	e.role(t, "each", map[string]any{"token_per_lease": true})
	old := e.signedWith(t)

	resp, err := e.rotate(t)
	require.NoError(t, err)
	next := resp.Data["kid"].(string)
	require.Equal(t, "next", resp.Data["state"])
	require.Equal(t, old, resp.Data["signing_kid"])
	require.Equal(t, formatTime(clock.Now().Add(2*time.Hour)), resp.Data["promote_after"])
	require.Contains(t, resp.Warnings[0], "signs from "+formatTime(clock.Now().Add(2*time.Hour)))

	_, set := e.jwks(t)
	require.ElementsMatch(t, []string{old, next}, kidsOf(set), "published before it signs")
	keys := e.read(t, "config").Data["signing_keys"].([]map[string]any)
	for _, k := range keys {
		if k["kid"] == next {
			require.Equal(t, "ES256", k["alg"], "the new key has the new key_type")
			require.Equal(t, formatTime(clock.Now().Add(2*time.Hour)), k["state_ends_at"])
		}
	}
	require.Equal(t, old, e.signedWith(t), "the current key signs until the delay has passed")

	// A second rotate-root during the delay starts nothing new.
	resp, err = e.rotate(t)
	require.NoError(t, err)
	require.Equal(t, next, resp.Data["kid"])
	require.Equal(t, false, resp.Data["rollover_started_here"])
	require.Equal(t, 2, len(e.storedKeys(t).Keys))

	clock.Add(2*time.Hour - time.Second)
	e.rollback(t)
	require.Equal(t, old, e.signedWith(t))
	// The server now has the old and the new key (an ES256 key for an RS256
	// client: it accepts ES256 from here on, as a re-registration would).
	e.useJWKSURI(t, "ES256")
	clock.Add(time.Second)
	e.rollback(t)
	require.Equal(t, map[string]string{next: "current"}, e.keyStates(t), "promoted; no grace drops the old one at once")
	require.Equal(t, next, e.signedWith(t))
	_, set = e.jwks(t)
	require.Equal(t, []string{next}, kidsOf(set))
}

func TestKeyRollover_ServerWithoutTheNewKeyKeepsTheCurrentOneSigning(t *testing.T) {
	e := newJWTEnv(t, nil)
	clock := &fixedClock{t: time.Now().UTC().Truncate(time.Second)}
	e.b.now = clock.Now
	e.register(t, "RS256") // keys registered by hand: no refetch
	e.role(t, "each", map[string]any{"token_per_lease": true})
	old := e.signedWith(t)

	resp, err := e.rotate(t)
	require.NoError(t, err)
	next := resp.Data["kid"].(string)
	require.Equal(t, "next", resp.Data["state"])
	require.Contains(t, resp.Warnings[0], "the server does not accept it yet, so key "+old+" still signs")
	require.Contains(t, resp.Warnings[0], `OAuth2 error "invalid_request"`)
	require.Equal(t, old, e.signedWith(t), "no read fails: the current key signs on")

	// The periodic function backs off: 1m, then 2m, ...
	for i, wait := range []time.Duration{time.Minute, 2 * time.Minute} {
		clock.Add(wait - time.Second)
		e.rollback(t)
		require.Equal(t, i+1, failedPromotions(t, e), "not before the back-off ends")
		clock.Add(time.Second)
		e.rollback(t)
		require.Equal(t, i+2, failedPromotions(t, e))
	}
	k := e.storedKeys(t).find(keyNext)
	require.Contains(t, k.LastPromotionError, "invalid_request")
	require.Equal(t, clock.Now().Add(4*time.Minute), k.NextPromotionAttempt)

	// The operator registers the new JWKS (both keys); a manual rotate-root
	// tries at once, whatever the back-off says.
	e.register(t, "RS256")
	resp, err = e.rotate(t)
	require.NoError(t, err)
	require.Equal(t, next, resp.Data["kid"])
	require.Equal(t, "current", resp.Data["state"])
	require.Equal(t, next, e.signedWith(t))
	require.Empty(t, e.storedKeys(t).find(keyCurrent).LastPromotionError)
}

func failedPromotions(t *testing.T, e *testEnv) int {
	t.Helper()
	return e.storedKeys(t).find(keyNext).FailedPromotions
}

// flakyStorage fails Puts of one key while fail is set.
type flakyStorage struct {
	logical.Storage
	key  string
	fail atomic.Bool
}

func (s *flakyStorage) Put(ctx context.Context, entry *logical.StorageEntry) error {
	if entry.Key == s.key && s.fail.Load() {
		return errors.New("storage unavailable")
	}
	return s.Storage.Put(ctx, entry)
}

func TestKeyRollover_StorageFailuresNeverLeaveAnUnpublishedKeySigning(t *testing.T) {
	e := newJWTEnv(t, nil)
	e.useJWKSURI(t, "RS256")
	e.role(t, "each", map[string]any{"token_per_lease": true})
	flaky := &flakyStorage{Storage: e.storage, key: keysStoragePath}
	e.storage = flaky
	old := e.signedWith(t)

	// The new key cannot be stored: nothing changes.
	flaky.fail.Store(true)
	_, err := e.rotate(t)
	require.ErrorContains(t, err, "store the signing keys: storage unavailable")
	flaky.fail.Store(false)
	require.Equal(t, 1, len(e.storedKeys(t).Keys))
	_, set := e.jwks(t)
	require.Equal(t, []string{old}, kidsOf(set))
	require.Equal(t, old, e.signedWith(t))
	cfg := e.read(t, "config").Data
	require.Contains(t, cfg["last_rotation_error"], "storage unavailable", "the failure is recorded as a rotation's")

	// The proof works, but its promotion cannot be stored: the new key stays
	// next, and what signs is in what is published.
	e.fake.OnRequest(func(ep fakeupstream.Endpoint, _ *http.Request) {
		if ep == fakeupstream.EndpointJWTToken {
			flaky.fail.Store(true) // the new key is stored; the proof is under way
		}
	})
	_, err = e.rotate(t)
	require.ErrorContains(t, err, "could not be made the signing key")
	e.fake.OnRequest(nil)
	flaky.fail.Store(false)
	set2 := e.storedKeys(t)
	require.Equal(t, 2, len(set2.Keys))
	require.Equal(t, old, set2.find(keyCurrent).KeyID)
	signing := e.signedWith(t)
	require.Equal(t, old, signing)
	_, published := e.jwks(t)
	require.Contains(t, kidsOf(published), signing)

	// The next run promotes it.
	e.rollback(t)
	require.Equal(t, set2.find(keyNext).KeyID, e.signedWith(t))
}

func TestKeyRollover_ScheduledAndConcurrentReadsNeverFail(t *testing.T) {
	e := newJWTEnv(t, map[string]any{"rotation_period": "1h"})
	clock := &fixedClock{t: time.Now().UTC().Truncate(time.Second)}
	e.b.now = clock.Now
	e.writeConfig(t, map[string]any{"rotation_period": "1h"}) // counts from the fixed clock
	e.useJWKSURI(t, "RS256")
	e.role(t, "each", map[string]any{"token_per_lease": true})
	first := e.signedWith(t)

	stop := make(chan struct{})
	var failures atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := e.b.HandleRequest(context.Background(), &logical.Request{
					Operation: logical.ReadOperation, Path: "creds/each", Storage: e.storage, MountPoint: "mapsindoors/",
				}); err != nil {
					failures.Add(1)
				}
			}
		}()
	}
	kids := map[string]bool{first: true}
	for range 3 {
		clock.Add(time.Hour)
		e.rollback(t)
		kids[e.storedKeys(t).find(keyCurrent).KeyID] = true
	}
	close(stop)
	wg.Wait()
	require.Zero(t, failures.Load(), "no creds read failed during three rollovers")
	require.Len(t, kids, 4, "each scheduled rollover moved signing to a new key")
	require.Equal(t, e.storedKeys(t).find(keyCurrent).KeyID, e.signedWith(t))
	require.Contains(t, e.logs.String(), "trigger=schedule")
}

func TestKeyRollover_TwoRolloversWithinTheGraceKeepBothPreviousKeys(t *testing.T) {
	e := newJWTEnv(t, map[string]any{"previous_secret_grace": "1h"})
	clock := &fixedClock{t: time.Now().UTC().Truncate(time.Second)}
	e.b.now = clock.Now
	e.useJWKSURI(t, "RS256")
	first := e.storedKeys(t).find(keyCurrent).KeyID

	resp, err := e.rotate(t)
	require.NoError(t, err)
	second := resp.Data["kid"].(string)
	clock.Add(10 * time.Minute)
	resp, err = e.rotate(t)
	require.NoError(t, err)
	third := resp.Data["kid"].(string)
	require.Equal(t, "current", resp.Data["state"])
	require.Equal(t, second, resp.Data["previous_kid"], "the key it replaced, not the older one still in its grace")
	require.Equal(t, formatTime(clock.Now().Add(time.Hour)), resp.Data["previous_removal_at"])
	require.Equal(t, map[string]string{first: "previous", second: "previous", third: "current"}, e.keyStates(t))

	clock.Add(50 * time.Minute)
	e.rollback(t)
	require.Equal(t, map[string]string{second: "previous", third: "current"}, e.keyStates(t), "each leaves at the end of its own grace")
	clock.Add(10 * time.Minute)
	e.rollback(t)
	require.Equal(t, map[string]string{third: "current"}, e.keyStates(t))
}

func TestJWKS_InvalidateReloadsFromStorage(t *testing.T) {
	e := newJWTEnv(t, nil)
	standby := e.newBackend(t) // another node on the same storage
	_, before := e.jwks(t)
	_, got := jwksOf(t, standby, e.storage)
	require.Equal(t, kidsOf(before), kidsOf(got))

	_, err := e.rotate(t) // the active node adds a key; the standby is told
	require.NoError(t, err)
	_, stale := jwksOf(t, standby, e.storage)
	require.Equal(t, 1, len(stale.Keys), "until invalidated, the standby serves what it loaded")
	standby.invalidate(context.Background(), keysStoragePath)
	_, fresh := jwksOf(t, standby, e.storage)
	_, active := e.jwks(t)
	require.Equal(t, kidsOf(active), kidsOf(fresh))
	require.Equal(t, 2, len(fresh.Keys))
}

func jwksOf(t *testing.T, b *backend, s logical.Storage) ([]byte, jose.JSONWebKeySet) {
	t.Helper()
	resp, err := b.HandleRequest(context.Background(), &logical.Request{Operation: logical.ReadOperation, Path: "jwks", Storage: s})
	require.NoError(t, err)
	body := resp.Data[logical.HTTPRawBody].([]byte)
	var set jose.JSONWebKeySet
	require.NoError(t, json.Unmarshal(body, &set))
	return body, set
}
