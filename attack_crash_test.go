package mapsindoors

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

// Attacks by a crash or fail-over at any point, and by storage faults:
// what must never happen is a secret Vault created or replaced left live
// upstream with nothing tracking it and nobody told, a node left on
// credentials storage no longer holds, or a write lock held past its
// deadline.

// Was TestReview_ConfigDeleteAfterAFailedRotationForgetsItsOrphanSilently
// (defect 15): a delete after a rotation whose create's answer was lost
// said nothing of the secret the WAL still tracked.
func TestAttackCrash_ConfigDeleteAfterAFailedRotationSaysWhatStaysLive(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, map[string]any{"previous_secret_grace": "1h"})
	_, err := e.rotate(t) // leaves a pending deletion in its grace
	require.NoError(t, err)
	pending := e.storedConfig(t).PendingDeletions[0].ID
	crashNextCreate(e)
	_, err = e.rotate(t)
	require.Error(t, err)
	require.Len(t, e.wals(t), 1, "the WAL tracks the orphan")
	marker := e.read(t, "client-secrets/pending").Data["unsettled_rotations"].([]map[string]any)[0]["marker"].(string)

	resp, err := e.do(t, logical.DeleteOperation, "config", nil)
	require.NoError(t, err)
	require.NotNil(t, resp)
	all := strings.Join(resp.Warnings, "\n")
	require.Contains(t, all, pending, "names the pending deletion")
	require.Contains(t, all, rotationDescriptionPrefix+marker, "names the stopped rotation's secret by its description")
	require.Contains(t, all, "client-secrets/pending", "says how to settle them first")
	require.Contains(t, e.logs.String(), "config deleted: a rotation that began at")
}

// Settled first, the delete has nothing to warn about and nothing is left.
func TestAttackCrash_SettlingBeforeTheDeleteLeavesNothingLive(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, map[string]any{"previous_secret_grace": "1h"})
	_, err := e.rotate(t)
	require.NoError(t, err)
	crashNextCreate(e)
	_, err = e.rotate(t)
	require.Error(t, err)

	e.settlePending(t)
	stored := e.storedConfig(t)
	require.Equal(t, []string{stored.ClientSecretID}, secretIDs(e.fake), "only the stored secret is live")
	resp, err := e.do(t, logical.DeleteOperation, "config", nil)
	require.NoError(t, err)
	require.Nil(t, resp, "nothing to warn about")
}

// crashNextCreate makes the next rotation's create land upstream and its
// answer (and everything after) be lost.
func crashNextCreate(e *testEnv) {
	real := e.b.newClient
	e.b.newClient = func(c upstream.Config) (upstream.Client, error) {
		e.b.newClient = real
		cl, err := real(c)
		return &crashingClient{Client: cl}, err
	}
}

// Was TestReview_AmbiguousConfigWriteLeavesTheNodeOnTheOldSecret (defect
// 16): a config write that committed but reported failure left the
// node's cached client on the old secret (verify ok, creds failing).
func TestAttackCrash_AConfigWriteThatCommitsButFailsResetsTheNode(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)
	e.role(t, "app", nil)
	e.read(t, "creds/app") // the node caches the config and its client
	old := e.fake.Credentials()

	// The operator rotates by hand: makes a new secret upstream ...
	cfg := e.storedConfig(t).resolved()
	oldClient, err := upstream.New(cfg.clientConfig())
	require.NoError(t, err)
	defer oldClient.Close()
	created, err := oldClient.CreateClientSecret(context.Background(), "made by hand")
	require.NoError(t, err)
	// ... writes it to config (the Put commits, then reports failure) ...
	real := e.storage
	e.storage = &commitThenFailStorage{Storage: real, fail: func(k string) bool { return k == configStoragePath }}
	_, werr := e.write(t, "config", map[string]any{"client_secret": created.Secret, "client_secret_id": created.ID})
	e.storage = real
	require.Error(t, werr)
	require.Equal(t, created.ID, e.storedConfig(t).ClientSecretID, "storage holds the new secret")
	// ... and deletes the old one.
	cfg.ClientSecret = created.Secret
	newClient, err := upstream.New(cfg.clientConfig())
	require.NoError(t, err)
	defer newClient.Close()
	require.NoError(t, newClient.DeleteClientSecret(context.Background(), old.ClientSecretID))

	e.role(t, "cold", nil)
	resp, err := e.do(t, logical.ReadOperation, "creds/cold", nil)
	require.NoError(t, err, "the node logs in with the stored secret")
	require.False(t, resp.IsError())
}

// The same for a delete that happens but reports failure: the node does
// not go on handing out tokens of a config storage no longer holds.
func TestAttackCrash_AConfigDeleteThatCommitsButFailsResetsTheNode(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)
	e.role(t, "app", nil)
	e.read(t, "creds/app")

	real := e.storage
	e.storage = deleteThenFailStorage{real}
	_, err := e.do(t, logical.DeleteOperation, "config", nil)
	e.storage = real
	require.Error(t, err)

	e.role(t, "cold", nil)
	resp, err := e.do(t, logical.ReadOperation, "creds/cold", nil)
	require.NoError(t, err)
	require.True(t, resp.IsError())
	require.Contains(t, resp.Error().Error(), "no config")
}

// deleteThenFailStorage deletes and then reports failure.
type deleteThenFailStorage struct{ logical.Storage }

func (s deleteThenFailStorage) Delete(ctx context.Context, key string) error {
	if err := s.Storage.Delete(ctx, key); err != nil {
		return err
	}
	return errors.New("context deadline exceeded")
}

// hangingListClient is an upstream that never answers a listing: only the
// caller's deadline ends the wait.
type hangingListClient struct{ upstream.Client }

func (hangingListClient) ListClientSecrets(ctx context.Context) ([]upstream.ClientSecret, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// The review: walRollback held the write lock with no deadline, so a hung
// upstream held every config write and rotation of the mount behind it.
func TestAttackCrash_TheRollbackHoldsTheWriteLockNoLongerThanItsDeadline(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)
	crashNextCreate(e)
	_, err := e.rotate(t)
	require.Error(t, err)
	e.ageWALs(t)

	real := e.b.newClient
	e.b.newClient = func(c upstream.Config) (upstream.Client, error) {
		cl, err := real(c)
		return hangingListClient{cl}, err
	}
	e.b.rotationTimeout = 200 * time.Millisecond
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = e.b.HandleRequest(context.Background(), &logical.Request{Operation: logical.RollbackOperation, Storage: e.storage, MountPoint: "mapsindoors/"})
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second): // a third of request_timeout, which bounds each upstream call
		t.Fatal("the rollback still holds the write lock, long past its deadline")
	}
	e.b.newClient = real
	require.Len(t, e.wals(t), 1, "what the rollback could not do stays for the next run")
	unlock, err := e.b.lockWrites(context.Background())
	require.NoError(t, err)
	unlock()
}

// Defect 13 for the WAL: rotations that stop half way again and again
// (an upstream that takes creates and loses the answers) keep at most
// maxRotationWALs entries; the next rotation is refused before it
// creates anything, and a settle clears them.
func TestAttackCrash_StoppedRotationsAreBounded(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)
	for range maxRotationWALs {
		crashNextCreate(e)
		_, err := e.rotate(t)
		require.Error(t, err)
	}
	require.Len(t, e.wals(t), maxRotationWALs)
	creates := e.fake.Hits(fakeupstream.EndpointCreateSecret)
	resp, err := e.rotate(t)
	requireBadRequest(t, resp, err, "client-secrets/pending")
	require.Equal(t, creates, e.fake.Hits(fakeupstream.EndpointCreateSecret), "refused before any create")

	e.settlePending(t)
	require.Empty(t, e.wals(t))
	require.Equal(t, []string{e.fake.Credentials().ClientSecretID}, secretIDs(e.fake), "every orphan is deleted")
	_, err = e.rotate(t)
	require.NoError(t, err)
}

// failConfigPutsAfterDelete fails the config write that records a
// deletion, after the delete upstream: a crash between the two.
type failConfigPutsAfterDelete struct {
	logical.Storage
	armed atomic.Bool
}

func (s *failConfigPutsAfterDelete) Put(ctx context.Context, e *logical.StorageEntry) error {
	if e.Key == configStoragePath && s.armed.Load() {
		return errors.New("injected: the node died before it recorded the deletion")
	}
	return s.Storage.Put(ctx, e)
}

// A deletion that happened upstream but was not recorded is settled by
// the next pass (the upstream says 404 at the same account); a failed
// attempt whose reason could not be recorded is simply tried again.
func TestAttackCrash_ADeletionNotRecordedIsSettledByTheNextPass(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, map[string]any{"previous_secret_grace": "1m"})
	clock := &fixedClock{t: time.Now()}
	e.b.now = clock.Now
	s0 := e.fake.Credentials()
	_, err := e.rotate(t)
	require.NoError(t, err)

	flaky := &failConfigPutsAfterDelete{Storage: e.storage}
	e.storage = flaky
	flaky.armed.Store(true)
	clock.Add(2 * time.Minute)
	e.rollback(t)
	require.False(t, e.fake.SecretWorks(s0.ClientSecret), "deleted upstream")
	require.Len(t, e.storedConfig(t).PendingDeletions, 1, "but not recorded")
	flaky.armed.Store(false)
	e.rollback(t)
	require.Empty(t, e.storedConfig(t).PendingDeletions, "the next pass's 404 settles it")
	require.Contains(t, e.logs.String(), "the upstream says it is gone already (404)")
}

// hangOnDelete is an upstream whose delete of one id never answers.
type hangOnDelete struct {
	upstream.Client
	id string
}

func (h hangOnDelete) DeleteClientSecret(ctx context.Context, id string) error {
	if id == h.id {
		<-ctx.Done()
		return ctx.Err()
	}
	return h.Client.DeleteClientSecret(ctx, id)
}

// Was TestReview_OneIDWhoseDeleteHangsStopsEveryLaterDeletion (review
// finding 8, UP-5): an id whose delete the upstream never answers spent
// the whole pass's deadline, every entry after it failed on that deadline
// and backed off alike, and the list was tried in the same order every
// pass: the replaced secret behind it was never tried and stayed live.
// Now each delete has its share of the deadline, an entry never tried is
// not a failure, and the least recently tried go first.
func TestAttackCrash_AnIDWhoseDeleteHangsHoldsBackNoOtherDeletion(t *testing.T) {
	e, clock, s0, s1 := rotatedTwice(t, "1h")

	e.b.rotationTimeout = 300 * time.Millisecond
	newClient := e.b.newClient
	e.b.newClient = func(c upstream.Config) (upstream.Client, error) {
		client, err := newClient(c)
		return hangOnDelete{Client: client, id: s0.ClientSecretID}, err
	}
	for range 12 { // 12 passes over a day and a half
		clock.Add(3 * time.Hour)
		e.rollback(t)
	}
	require.False(t, e.fake.SecretWorks(s1.ClientSecret), "S1, behind the id whose delete hangs, was never deleted")
	pending := e.storedConfig(t).PendingDeletions
	require.Len(t, pending, 1, "the hanging one is kept, with its reason")
	require.Equal(t, s0.ClientSecretID, pending[0].ID)
	require.Positive(t, pending[0].Attempts)
	require.Contains(t, pending[0].LastError, "deadline")
}
