package mapsindoors

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

// commitThenFailStorage commits chosen writes and then reports them as
// failed, as a Raft apply that commits after its deadline fired does.
type commitThenFailStorage struct {
	logical.Storage
	fail func(key string) bool
}

func (s *commitThenFailStorage) Put(ctx context.Context, e *logical.StorageEntry) error {
	if err := s.Storage.Put(ctx, e); err != nil {
		return err
	}
	if s.fail(e.Key) {
		return errors.New("context deadline exceeded")
	}
	return nil
}

// ctxStorage honors its context as Vault's storage does over gRPC.
type ctxStorage struct{ logical.Storage }

func (s ctxStorage) Put(ctx context.Context, e *logical.StorageEntry) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.Storage.Put(ctx, e)
}

func (s ctxStorage) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.Storage.Delete(ctx, key)
}

// liveIDs are the ids of the upstream's active secrets.
func liveIDs(fake *fakeupstream.Server) map[string]bool {
	out := map[string]bool{}
	for _, id := range secretIDs(fake) {
		out[id] = true
	}
	return out
}

// Defect: a config write that committed but reported failure made the
// rotation delete the secret it had just stored.
func TestRotateRoot_AmbiguousStoreNeverLocksTheMountOut(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)
	e.role(t, "app", nil)
	old := e.fake.Credentials()
	e.storage = &commitThenFailStorage{Storage: e.storage, fail: func(k string) bool { return k == configStoragePath }}

	_, _ = e.rotate(t)

	stored := e.storedConfig(t)
	require.True(t, e.fake.SecretWorks(stored.ClientSecret), "the stored secret must work upstream")
	e.read(t, "creds/app")

	// Once the rollback and the periodic function have run, only the
	// stored secret is live: the one it replaced is gone too.
	e.storage = e.storage.(*commitThenFailStorage).Storage
	e.ageWALs(t)
	e.rollback(t)
	e.rollback(t)
	require.True(t, e.fake.SecretWorks(stored.ClientSecret))
	require.False(t, e.fake.SecretWorks(old.ClientSecret), "the replaced secret is deleted")
}

// noWALUpdateStorage fails WAL writes once armed: a rotation then cannot
// record its progress.
type noWALUpdateStorage struct {
	logical.Storage
	mu    sync.Mutex
	armed bool
}

func (s *noWALUpdateStorage) Put(ctx context.Context, e *logical.StorageEntry) error {
	s.mu.Lock()
	armed := s.armed
	s.mu.Unlock()
	if armed && strings.HasPrefix(e.Key, "wal/") {
		return errors.New("storage is down")
	}
	return s.Storage.Put(ctx, e)
}

// Defect: a rotation that stored its secret but could not delete the one
// it replaced, followed by a second rotation within the rollback's minimum
// age, left the original secret live for good.
func TestRotateRoot_SecondRotationSoonAfterAStoppedOneLeavesNoOrphan(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)
	original := e.fake.Credentials()

	// The first rotation stores S1 but cannot delete S0 nor record that.
	walStore := &noWALUpdateStorage{Storage: e.storage}
	e.storage = walStore
	e.fake.InjectFault(fakeupstream.EndpointDeleteSecret, fakeupstream.Fault{Status: 503})
	e.fake.OnRequest(func(ep fakeupstream.Endpoint, _ *http.Request) {
		if ep == fakeupstream.EndpointDeleteSecret {
			walStore.mu.Lock()
			walStore.armed = true
			walStore.mu.Unlock()
		}
	})
	_, _ = e.rotate(t)
	e.fake.OnRequest(nil)
	walStore.mu.Lock()
	walStore.armed = false
	walStore.mu.Unlock()
	require.True(t, e.fake.SecretWorks(original.ClientSecret), "S0 is still live after the first rotation")

	// A second rotation a minute later, well within the rollback's age.
	resp, err := e.rotate(t)
	require.NoError(t, err)
	require.False(t, resp.IsError())

	e.ageWALs(t)
	e.rollback(t)
	e.rollback(t)
	stored := e.storedConfig(t)
	require.True(t, e.fake.SecretWorks(stored.ClientSecret))
	require.False(t, e.fake.SecretWorks(original.ClientSecret), "the original secret must not outlive both rotations")
	require.Equal(t, map[string]bool{stored.ClientSecretID: true}, liveIDs(e.fake))
}

// Defect: the rollback (and the schedule) called the upstream on nodes
// that cannot write storage, such as a performance secondary.
func TestRollback_NoUpstreamCallWhereStorageIsNotWriteSafe(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, map[string]any{"rotation_period": "1m"})
	// A rotation that stopped after the create leaves a WAL entry behind.
	real := e.b.newClient
	e.b.newClient = func(c upstream.Config) (upstream.Client, error) {
		client, err := real(c)
		return &crashingClient{Client: client}, err
	}
	_, _ = e.rotate(t)
	e.b.newClient = real
	e.ageWALs(t)
	require.NotEmpty(t, e.wals(t))

	secondary := e.newBackend(t, func(c *logical.BackendConfig) {
		c.System = &logical.StaticSystemView{ReplicationStateVal: consts.ReplicationPerformanceSecondary}
	})
	secondary.now = func() time.Time { return time.Now().Add(time.Hour) }
	before := e.fake.Hits(fakeupstream.EndpointToken) + e.fake.Hits(fakeupstream.EndpointListSecrets) +
		e.fake.Hits(fakeupstream.EndpointDeleteSecret) + e.fake.Hits(fakeupstream.EndpointCreateSecret)
	// What a secondary replicates from the primary it cannot write.
	_, err := secondary.HandleRequest(context.Background(), &logical.Request{
		Operation: logical.RollbackOperation, Storage: &readOnlyStorage{Storage: e.storage}, MountPoint: "mapsindoors/", Data: map[string]any{},
	})
	require.NoError(t, err)
	after := e.fake.Hits(fakeupstream.EndpointToken) + e.fake.Hits(fakeupstream.EndpointListSecrets) +
		e.fake.Hits(fakeupstream.EndpointDeleteSecret) + e.fake.Hits(fakeupstream.EndpointCreateSecret)
	require.Equal(t, before, after, "a performance secondary makes no upstream call")
	require.NotEmpty(t, e.wals(t), "and leaves the WAL to the primary")
}

// Defect: with no id for the stored secret, the rollback deleted the
// previous id, which may well be the very secret the mount now holds.
func TestRollback_NeverDeletesWhenTheStoredSecretHasNoID(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)
	original := e.fake.Credentials()
	e.fake.InjectFault(fakeupstream.EndpointDeleteSecret, fakeupstream.Fault{Status: 503})
	resp, err := e.rotate(t)
	require.NoError(t, err)
	require.Equal(t, false, resp.Data["previous_deleted"])

	// The operator goes back to the original secret, without its id.
	resp, err = e.write(t, "config", map[string]any{"client_secret": original.ClientSecret})
	require.NoError(t, err)
	require.False(t, resp != nil && resp.IsError())
	require.Empty(t, e.storedConfig(t).ClientSecretID)

	e.ageWALs(t)
	e.rollback(t)
	e.rollback(t)
	require.True(t, e.fake.SecretWorks(original.ClientSecret), "the secret the mount holds must never be deleted")
	e.role(t, "app", nil)
	e.read(t, "creds/app")
}

// Defect: storage steps used the request's context, so a rotation whose
// request was given up on after the create discarded a secret it had
// created and proven.
func TestRotateRoot_FinishesWhenTheRequestIsCancelled(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)
	original := e.fake.Credentials()
	e.storage = ctxStorage{e.storage}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	creates := 0
	e.fake.OnRequest(func(ep fakeupstream.Endpoint, _ *http.Request) {
		if ep == fakeupstream.EndpointCreateSecret {
			creates++
			cancel() // the caller gives up while the upstream creates
		}
	})
	_, _ = e.b.HandleRequest(ctx, &logical.Request{
		Operation: logical.UpdateOperation, Path: "rotate-root", Storage: e.storage, MountPoint: "mapsindoors/",
	})
	e.fake.OnRequest(nil)
	require.Equal(t, 1, creates)

	stored := e.storedConfig(t)
	requireNewToken(t, original.ClientSecret, stored.ClientSecret, "the created and proven secret is stored")
	require.True(t, e.fake.SecretWorks(stored.ClientSecret))
	require.False(t, e.fake.SecretWorks(original.ClientSecret))
	require.Empty(t, e.wals(t))
}

// Defect: the waits between verify attempts ignored cancellation, and no
// single deadline bounded a rotation, so it could hold the write lock for
// many minutes.
func TestRotateRoot_OneDeadlineBoundsEveryStepAndWait(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)
	original := e.fake.Credentials()
	e.b.rotationTimeout = 300 * time.Millisecond
	e.b.verifyBackoff = []time.Duration{time.Hour, time.Hour}
	// The first login with the new secret is refused; the next attempt
	// would come an hour later.
	e.fake.InjectFault(fakeupstream.EndpointToken, fakeupstream.Fault{After: 1, Status: 400, Code: "invalid_client"})

	done := make(chan error, 1)
	go func() {
		_, err := e.rotate(t)
		done <- err
	}()
	select {
	case err := <-done:
		require.ErrorContains(t, err, "log in with the new client secret")
		require.ErrorContains(t, err, "the rotation's deadline passed")
	case <-time.After(30 * time.Second):
		t.Fatal("the rotation did not end with its deadline")
	}
	e.fake.ClearFaults()
	requireSameToken(t, original.ClientSecret, e.storedConfig(t).ClientSecret, "the original secret stays stored")
	require.Equal(t, []string{original.ClientSecretID}, secretIDs(e.fake), "the created secret is deleted after the deadline too")
	require.Empty(t, e.wals(t))
}
