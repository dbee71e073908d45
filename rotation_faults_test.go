package mapsindoors

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

// ---------------------------------------------------------------------------
// Raft leadership loss during the apply of the config write. The entry
// is replicated and later committed by the new leader, but this node's FSM
// has not applied it yet when the rotation reads back: the read-back shows
// the old id, the rotation deletes the new secret, and the new active node
// then holds a deleted secret.

type demotedStorage struct {
	logical.Storage
	mu       sync.Mutex
	demoted  bool
	inFlight *logical.StorageEntry // committed later, by the new leader
}

func (s *demotedStorage) Put(ctx context.Context, e *logical.StorageEntry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.demoted {
		return errors.New("node is not the leader")
	}
	if e.Key == configStoragePath {
		var c config
		_ = e.DecodeJSON(&c)
		if !c.LastRotated.IsZero() && c.Rotation.LastError == "" {
			s.demoted = true
			s.inFlight = e
			return errors.New("leadership lost while committing the log")
		}
	}
	return s.Storage.Put(ctx, e)
}

func (s *demotedStorage) Delete(ctx context.Context, k string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.demoted {
		return errors.New("node is not the leader")
	}
	return s.Storage.Delete(ctx, k)
}

func TestRotateRoot_StaleReadBackAfterALeadershipLossNeverLocksTheMountOut(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)
	e.role(t, "app", nil)
	real := e.storage
	ds := &demotedStorage{Storage: real}
	e.storage = ds

	_, _ = e.rotate(t)
	require.NotNil(t, ds.inFlight, "the rotation reached its store")

	// The new leader commits the replicated entry; Vault starts the plugin
	// on the new active node on that storage.
	require.NoError(t, real.Put(context.Background(), ds.inFlight))
	e.storage = real
	e.b = e.newBackend(t)
	e.ageWALs(t)
	e.rollback(t)
	e.rollback(t)

	stored := e.storedConfig(t)
	require.True(t, e.fake.SecretWorks(stored.ClientSecret), "the stored secret must work upstream (lock-out)")
}

// ---------------------------------------------------------------------------
// The create times out at the client but the upstream finishes it a
// moment later (a slow upstream). abandonRotation lists, sees nothing yet,
// deletes the WAL: the created secret is live and tracked by nothing.

type lateCreateClient struct {
	upstream.Client
	pending string
}

func (c *lateCreateClient) CreateClientSecret(ctx context.Context, d string) (*upstream.ClientSecret, error) {
	c.pending = d
	return nil, fmt.Errorf("create client secret failed: timed out: %w", context.DeadlineExceeded)
}

func (c *lateCreateClient) ListClientSecrets(ctx context.Context) ([]upstream.ClientSecret, error) {
	list, err := c.Client.ListClientSecrets(ctx)
	if c.pending != "" { // the upstream's handler commits the create now
		_, _ = c.Client.CreateClientSecret(context.Background(), c.pending)
		c.pending = ""
	}
	return list, err
}

func TestRotateRoot_ACreateThatCompletesAfterItsTimeoutIsNotOrphaned(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)
	real := e.b.newClient
	e.b.newClient = func(c upstream.Config) (upstream.Client, error) {
		cl, err := real(c)
		return &lateCreateClient{Client: cl}, err
	}
	_, _ = e.rotate(t)
	e.b.newClient = real

	e.ageWALs(t)
	e.rollback(t)
	e.rollback(t)
	stored := e.storedConfig(t)
	live := liveIDs(e.fake)
	t.Logf("live upstream: %v, stored: %s, pending: %v, wals: %v", live, stored.ClientSecretID, stored.PendingDeletions, e.wals(t))
	require.Equal(t, map[string]bool{stored.ClientSecretID: true}, live, "a secret Vault created is live and tracked by nothing")
}

// ---------------------------------------------------------------------------
// A mount configured without client_secret_id (allowed; rotation only
// warns). A crash right after the create: the rollback drops the WAL without
// deleting the marked secret, so it is orphaned for good.

func TestRollback_DeletesWhatACrashedRotationCreatedOnAMountWithoutID(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, map[string]any{"client_secret_id": ""})
	require.Empty(t, e.storedConfig(t).ClientSecretID)
	real := e.b.newClient
	e.b.newClient = func(c upstream.Config) (upstream.Client, error) {
		cl, err := real(c)
		return &crashingClient{Client: cl}, err
	}
	_, _ = e.rotate(t)
	e.b = e.newBackend(t) // the process died; a new one starts
	e.ageWALs(t)
	e.rollback(t)
	e.rollback(t)
	require.Empty(t, e.wals(t), "the WAL is gone")
	orig := e.fake.Credentials().ClientSecretID
	for _, cs := range e.fake.Secrets() {
		require.True(t, cs.ID == orig, "secret %s (%q) created by Vault is live, not stored, not pending, no WAL", cs.ID, cs.Description)
	}
}

// ---------------------------------------------------------------------------
// A list answer that does not (yet) show a pending deletion makes the
// periodic function forget it, although it is still live.

func TestPendingDeletion_IsNotForgottenWhenAListMissesIt(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	clock := &fixedClock{t: time.Now()}
	e.b.now = clock.Now
	e.configure(t, map[string]any{"previous_secret_grace": "10m"})
	old := e.fake.Credentials()
	_, err := e.rotate(t)
	require.NoError(t, err)
	clock.Add(11 * time.Minute)
	e.fake.InjectFault(fakeupstream.EndpointListSecrets, fakeupstream.Fault{Body: "[]"})
	e.rollback(t)
	e.rollback(t)
	e.rollback(t)
	require.Empty(t, e.storedConfig(t).PendingDeletions)
	require.False(t, e.fake.SecretWorks(old.ClientSecret), "the replaced secret is still live and no longer pending")
}

// ---------------------------------------------------------------------------
// The write lock is held well past the one-minute rotation deadline:
// settle contexts add 15 s each, and a config write waits for all of it,
// ignoring its own context.

func TestWriteLock_AConfigWriteGivesUpWithItsOwnContext(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)
	e.b.rotationTimeout = 300 * time.Millisecond
	e.fake.InjectFault(fakeupstream.EndpointCreateSecret, fakeupstream.Fault{Delay: time.Hour})
	e.fake.InjectFault(fakeupstream.EndpointListSecrets, fakeupstream.Fault{Delay: time.Hour})
	go func() { _, _ = e.rotate(t) }()
	time.Sleep(50 * time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	_, _ = e.b.HandleRequest(ctx, &logical.Request{Operation: logical.UpdateOperation, Path: "config",
		Data: map[string]any{"scopes": "a"}, Storage: e.storage, MountPoint: "mapsindoors/"})
	waited := time.Since(start)
	t.Logf("config write with a 1s context returned after %s (rotation deadline 300ms)", waited)
	require.Less(t, waited, 2*time.Second, "a config write waited for the write lock past its own deadline")
}

// A rotation_period counts from when a rotation began, so one that takes a
// while does not push the next a whole tick later: a 1m period whose
// rotation took 7 s is due again at the next tick.
func TestScheduledRotation_PeriodCountsFromTheRotationsStart(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	tick := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	clock := &fixedClock{t: tick.Add(-2 * time.Minute)}
	e.b.now = clock.Now
	e.configure(t, map[string]any{"rotation_period": "1m"})
	// The rotation takes 7 s: its create is slow.
	e.fake.OnRequest(func(ep fakeupstream.Endpoint, _ *http.Request) {
		if ep == fakeupstream.EndpointCreateSecret {
			clock.Add(7 * time.Second)
		}
	})
	clock.t = tick
	e.rollback(t)
	require.Equal(t, 1, e.fake.Hits(fakeupstream.EndpointCreateSecret))
	clock.t = tick.Add(time.Minute)
	e.rollback(t)
	require.Equal(t, 2, e.fake.Hits(fakeupstream.EndpointCreateSecret), "the tick a period after the last rotation began rotates")
}

// A rotate-root whose caller gave up while it waited for the write lock
// still runs a full rotation afterwards.
func TestRotateRoot_AQueuedRotationWhoseCallerLeftDoesNotRun(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)
	e.fake.InjectFault(fakeupstream.EndpointCreateSecret, fakeupstream.Fault{Delay: time.Second})
	done := make(chan struct{})
	go func() { _, _ = e.rotate(t); close(done) }()
	time.Sleep(100 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, _ = e.b.HandleRequest(ctx, &logical.Request{Operation: logical.UpdateOperation, Path: "rotate-root", Storage: e.storage, MountPoint: "mapsindoors/"})
	<-done
	require.Equal(t, 1, e.fake.Hits(fakeupstream.EndpointCreateSecret), "the second caller had given up before the lock was free")
}

// noWALDeleteStorage cannot delete WAL entries: a rotation's step 6 fails
// and its WAL stays behind.
type noWALDeleteStorage struct{ logical.Storage }

func (s noWALDeleteStorage) Delete(ctx context.Context, key string) error {
	if strings.HasPrefix(key, "wal/") {
		return errors.New("storage is down")
	}
	return s.Storage.Delete(ctx, key)
}

// The rollback of a rotation whose secret was stored and later replaced
// leaves that secret to its grace, and each pending deletion waits for its
// own due time.
func TestPendingDeletion_EachWaitsForItsOwnGraceAndTheRollbackLeavesThemAlone(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{TokenLifetime: 48 * time.Hour})
	start := time.Now()
	clock := &fixedClock{t: start}
	e.b.now = clock.Now
	e.configure(t, map[string]any{"previous_secret_grace": "10m"})
	s0 := e.fake.Credentials()

	// Rotation A stores S1, but its WAL entry stays behind.
	real := e.storage
	e.storage = noWALDeleteStorage{real}
	_, err := e.rotate(t)
	require.NoError(t, err)
	e.storage = real
	require.Len(t, e.wals(t), 1)
	s1 := e.storedConfig(t)

	// Five minutes later rotation B stores S2: S0 is due at +10m, S1 at +15m.
	clock.Add(5 * time.Minute)
	_, err = e.rotate(t)
	require.NoError(t, err)
	s2 := e.storedConfig(t)
	require.Len(t, s2.PendingDeletions, 2)

	e.ageWALs(t)
	e.rollback(t)
	require.Empty(t, e.wals(t))
	require.True(t, e.fake.SecretWorks(s1.ClientSecret), "rotation A's secret was stored: the rollback leaves it to its grace")
	require.True(t, e.fake.SecretWorks(s0.ClientSecret))

	clock.t = start.Add(11 * time.Minute)
	e.rollback(t)
	require.False(t, e.fake.SecretWorks(s0.ClientSecret), "S0 is due")
	require.True(t, e.fake.SecretWorks(s1.ClientSecret), "S1 is not due yet")

	clock.t = start.Add(16 * time.Minute)
	e.rollback(t)
	require.False(t, e.fake.SecretWorks(s1.ClientSecret))
	require.Equal(t, []string{s2.ClientSecretID}, secretIDs(e.fake))
	require.True(t, e.fake.SecretWorks(s2.ClientSecret))
}

// An operator who goes back to a replaced secret, with its id, keeps it:
// a pending deletion never deletes the secret the mount holds.
func TestPendingDeletion_NeverDeletesTheStoredSecret(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{TokenLifetime: 48 * time.Hour})
	clock := &fixedClock{t: time.Now()}
	e.b.now = clock.Now
	e.configure(t, map[string]any{"previous_secret_grace": "10m"})
	s0 := e.fake.Credentials()
	_, err := e.rotate(t)
	require.NoError(t, err)
	require.Len(t, e.storedConfig(t).PendingDeletions, 1)

	e.writeConfig(t, map[string]any{"client_secret": s0.ClientSecret, "client_secret_id": s0.ClientSecretID})
	clock.Add(11 * time.Minute)
	e.rollback(t)
	require.True(t, e.fake.SecretWorks(s0.ClientSecret), "the stored secret is never deleted")
	pending := e.storedConfig(t).PendingDeletions
	require.Len(t, pending, 1, "it stays tracked, suspended while it is the stored secret")
	require.Equal(t, s0.ClientSecretID, pending[0].ID)
	e.role(t, "app", nil)
	e.read(t, "creds/app")
}

// A rotation stored S1 but left its WAL entry; the operator then blanks
// client_secret_id. S1 carries the rotation's marker and is the stored
// secret: the rollback must not delete it.
func TestRollback_NeverDeletesAMarkedSecretTheMountMayHold(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)
	real := e.storage
	e.storage = noWALDeleteStorage{real}
	_, err := e.rotate(t)
	require.NoError(t, err)
	e.storage = real
	s1 := e.storedConfig(t)

	e.writeConfig(t, map[string]any{"client_secret": s1.ClientSecret, "client_secret_id": ""})
	require.Empty(t, e.storedConfig(t).ClientSecretID)
	e.ageWALs(t)
	e.rollback(t)
	require.Empty(t, e.wals(t))
	require.True(t, e.fake.SecretWorks(s1.ClientSecret), "the secret the mount holds is never deleted")
	e.role(t, "app", nil)
	e.read(t, "creds/app")
}
