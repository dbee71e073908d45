package mapsindoors

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

func (e *testEnv) rotate(t testing.TB) (*logical.Response, error) {
	t.Helper()
	return e.do(t, logical.UpdateOperation, "rotate-root", nil)
}

func (e *testEnv) storedConfig(t testing.TB) *mapsConfig {
	t.Helper()
	cfg, err := getConfig(context.Background(), e.storage)
	require.NoError(t, err)
	require.NotNil(t, cfg)
	return cfg
}

func (e *testEnv) wals(t testing.TB) []string {
	t.Helper()
	ids, err := framework.ListWAL(context.Background(), e.storage)
	require.NoError(t, err)
	return ids
}

// ageWALs makes every WAL entry look older than the rollback's minimum
// age, as if that much time had passed.
func (e *testEnv) ageWALs(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	for _, id := range e.wals(t) {
		entry, err := e.storage.Get(ctx, framework.WALPrefix+id)
		require.NoError(t, err)
		var w framework.WALEntry
		require.NoError(t, entry.DecodeJSON(&w))
		w.CreatedAt = time.Now().Add(-walRollbackMinAge - time.Minute).Unix()
		aged, err := logical.StorageEntryJSON(framework.WALPrefix+id, &w)
		require.NoError(t, err)
		require.NoError(t, e.storage.Put(ctx, aged))
	}
}

// rollback sends the request Vault's rollback manager sends each minute.
func (e *testEnv) rollback(t testing.TB) {
	t.Helper()
	_, err := e.do(t, logical.RollbackOperation, "", map[string]any{})
	require.NoError(t, err)
}

func secretIDs(fake *fakeupstream.Server) []string {
	var ids []string
	for _, s := range fake.Secrets() {
		ids = append(ids, s.ID)
	}
	return ids
}

func TestRotateRoot_ReplacesAndDeletesTheOldSecret(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)
	e.role(t, "app", nil)
	old := e.fake.Credentials()
	e.read(t, "creds/app")

	resp, err := e.rotate(t)
	require.NoError(t, err)
	require.False(t, resp.IsError())
	newID := resp.Data["client_secret_id"].(string)
	require.NotEqual(t, old.ClientSecretID, newID)
	require.Equal(t, old.ClientSecretID, resp.Data["previous_client_secret_id"])
	require.Equal(t, true, resp.Data["previous_deleted"])
	_, err = time.Parse(time.RFC3339, resp.Data["rotated_at"].(string))
	require.NoError(t, err)
	require.Empty(t, resp.Warnings)

	require.False(t, e.fake.SecretWorks(old.ClientSecret), "the old secret is deleted upstream")
	stored := e.storedConfig(t)
	require.True(t, e.fake.SecretWorks(stored.ClientSecret), "the stored secret works")
	require.Equal(t, []string{newID}, secretIDs(e.fake))
	require.Empty(t, e.wals(t))

	cfg := e.read(t, "config").Data
	require.Equal(t, newID, cfg["client_secret_id"])
	require.Equal(t, old.ClientSecretID, cfg["previous_client_secret_id"])
	require.NotEmpty(t, cfg["last_rotated"])

	// Cached tokens and clients were dropped: the next read logs in with
	// the new secret.
	hits := e.fake.Hits(fakeupstream.EndpointToken)
	e.read(t, "creds/app")
	require.Equal(t, hits+1, e.fake.Hits(fakeupstream.EndpointToken))

	logs := e.logs.String()
	require.Contains(t, logs, "rotation done")
	require.Contains(t, logs, "new_client_secret_id="+newID)
	require.Contains(t, logs, "mount=mapsindoors/")
}

// failingStorage fails writes of chosen keys.
type failingStorage struct {
	logical.Storage
	failPut func(key string) bool
}

func (s *failingStorage) Put(ctx context.Context, e *logical.StorageEntry) error {
	if s.failPut(e.Key) {
		return errors.New("storage is down")
	}
	return s.Storage.Put(ctx, e)
}

func TestRotateRoot_FailureBeforeStoreChangesNothing(t *testing.T) {
	cases := []struct {
		name     string
		setup    func(e *testEnv)
		mentions string
	}{
		{"step 3: login with the current secret refused", func(e *testEnv) {
			e.fake.InjectFault(fakeupstream.EndpointToken, fakeupstream.Fault{Status: 401, Code: "invalid_client"})
		}, `HTTP 401, OAuth2 error "invalid_client"`},
		{"step 3: create refused", func(e *testEnv) {
			e.fake.InjectFault(fakeupstream.EndpointCreateSecret, fakeupstream.Fault{Status: 500})
		}, "create client secret"},
		{"step 3: create answer malformed", func(e *testEnv) {
			e.fake.InjectFault(fakeupstream.EndpointCreateSecret, fakeupstream.Fault{Malformed: true})
		}, "create client secret"},
		{"step 4: the new secret does not log in", func(e *testEnv) {
			// The first token request is the login for the create; the next
			// three are every attempt with the new secret.
			e.fake.InjectFault(fakeupstream.EndpointToken, fakeupstream.Fault{After: 1, Times: 3, Status: 400, Code: "invalid_client"})
		}, "log in with the new client secret"},
		{"step 5: storing the new secret fails", func(e *testEnv) {
			e.storage = &failingStorage{Storage: e.storage, failPut: func(k string) bool { return k == configStoragePath }}
		}, "storage is down"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, fakeupstream.Options{})
			e.configure(t, nil)
			before := e.storedConfig(t)
			beforeIDs := secretIDs(e.fake)
			tc.setup(e)

			resp, err := e.rotate(t)
			require.Nil(t, resp)
			require.ErrorContains(t, err, tc.mentions)
			for _, s := range e.fake.Sensitive() {
				require.NotContains(t, err.Error(), s)
			}

			require.Equal(t, before, e.storedConfig(t), "the stored config is exactly as it was")
			require.Equal(t, beforeIDs, secretIDs(e.fake), "what the rotation created upstream is deleted")
			require.True(t, e.fake.SecretWorks(before.ClientSecret))
			require.Empty(t, e.wals(t), "a cleanup that worked drops the WAL")
			require.Contains(t, e.logs.String(), "rotation failed")
		})
	}
}

func TestRotateRoot_FailedDeleteKeepsNewSecretAndRetriesByRollback(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)
	old := e.fake.Credentials()
	e.fake.InjectFault(fakeupstream.EndpointDeleteSecret, fakeupstream.Fault{Status: 503})

	resp, err := e.rotate(t)
	require.NoError(t, err)
	require.Equal(t, false, resp.Data["previous_deleted"])
	require.Len(t, resp.Warnings, 1)
	require.Contains(t, resp.Warnings[0], "deleting the previous one, "+old.ClientSecretID+", failed")
	require.Contains(t, e.logs.String(), "previous_client_secret_id="+old.ClientSecretID)

	stored := e.storedConfig(t)
	require.Equal(t, resp.Data["client_secret_id"], stored.ClientSecretID)
	require.True(t, e.fake.SecretWorks(stored.ClientSecret), "the new secret is kept and works")
	require.True(t, e.fake.SecretWorks(old.ClientSecret), "the old one is still live upstream")

	list, err := e.do(t, logical.ListOperation, "client-secrets/", nil)
	require.NoError(t, err)
	info := list.Data["key_info"].(map[string]any)
	require.Equal(t, true, info[stored.ClientSecretID].(map[string]any)["current"])
	require.Equal(t, true, info[old.ClientSecretID].(map[string]any)["previous"])

	// The WAL stays for the rollback, which deletes the old secret once it
	// is old enough and never touches the new one.
	require.Len(t, e.wals(t), 1)
	e.rollback(t)
	require.True(t, e.fake.SecretWorks(old.ClientSecret), "too young to roll back")
	e.ageWALs(t)
	e.rollback(t)
	require.False(t, e.fake.SecretWorks(old.ClientSecret))
	require.True(t, e.fake.SecretWorks(stored.ClientSecret))
	require.Empty(t, e.wals(t))
}

// crashingClient stands for a plugin process that dies right after the
// upstream created a secret: the answer is lost, and nothing it does
// afterwards (its cleanup) reaches the upstream.
type crashingClient struct {
	upstream.Client
	crashed bool
}

func (c *crashingClient) CreateClientSecret(ctx context.Context, d string) (*upstream.ClientSecret, error) {
	if _, err := c.Client.CreateClientSecret(ctx, d); err != nil {
		return nil, err
	}
	c.crashed = true
	return nil, errors.New("connection reset")
}

func (c *crashingClient) ListClientSecrets(ctx context.Context) ([]upstream.ClientSecret, error) {
	if c.crashed {
		return nil, errors.New("process gone")
	}
	return c.Client.ListClientSecrets(ctx)
}

func TestRotateRoot_RollbackDeletesTheOrphanOfACrash(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)
	before := e.storedConfig(t)
	real := e.b.newClient
	e.b.newClient = func(c upstream.Config) (upstream.Client, error) {
		client, err := real(c)
		return &crashingClient{Client: client}, err
	}
	_, err := e.rotate(t)
	require.Error(t, err)
	require.Len(t, e.fake.Secrets(), 2, "the orphan is live upstream")
	require.Len(t, e.wals(t), 1)
	require.Equal(t, before, e.storedConfig(t))

	// A new process (or the same, recovered) runs Vault's rollback.
	e.b.newClient = real
	e.rollback(t)
	require.Len(t, e.fake.Secrets(), 2, "a WAL younger than the minimum age is left alone")
	e.ageWALs(t)
	e.rollback(t)
	require.Equal(t, []string{before.ClientSecretID}, secretIDs(e.fake))
	require.True(t, e.fake.SecretWorks(before.ClientSecret))
	require.Empty(t, e.wals(t))
	require.Contains(t, e.logs.String(), "rotation rollback done")
}

func TestRotateRoot_RollbackAfterStoreKeepsTheNewSecret(t *testing.T) {
	// A crash after step 5: the config holds the new secret, the WAL is
	// still there, the old secret is live. The rollback deletes the old
	// one and keeps the new.
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)
	old := e.fake.Credentials()
	real := e.b.newClient
	e.b.newClient = func(c upstream.Config) (upstream.Client, error) {
		client, err := real(c)
		if c.ClientSecret != old.ClientSecret {
			return &noDeleteClient{client}, err
		}
		return client, err
	}
	_, err := e.rotate(t)
	require.NoError(t, err)
	e.b.newClient = real
	stored := e.storedConfig(t)

	e.ageWALs(t)
	e.rollback(t)
	require.Equal(t, []string{stored.ClientSecretID}, secretIDs(e.fake))
	require.Empty(t, e.wals(t))
}

type noDeleteClient struct{ upstream.Client }

func (noDeleteClient) DeleteClientSecret(context.Context, string) error {
	return errors.New("process gone")
}

func TestRotateRoot_ConcurrentCallsRunOneAtATime(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)

	const callers = 4
	var wg sync.WaitGroup
	ids := make([]string, callers)
	errs := make([]error, callers)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := e.b.HandleRequest(context.Background(), &logical.Request{
				Operation: logical.UpdateOperation, Path: "rotate-root", Storage: e.storage, MountPoint: "mapsindoors/",
			})
			errs[i] = err
			if err == nil {
				ids[i] = resp.Data["client_secret_id"].(string)
				require.Equal(t, true, resp.Data["previous_deleted"])
			}
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	for i := range callers {
		require.NoError(t, errs[i])
		require.False(t, seen[ids[i]])
		seen[ids[i]] = true
	}
	stored := e.storedConfig(t)
	require.Equal(t, []string{stored.ClientSecretID}, secretIDs(e.fake), "exactly the stored secret is left")
	require.True(t, e.fake.SecretWorks(stored.ClientSecret))
	require.Equal(t, callers, e.fake.Hits(fakeupstream.EndpointCreateSecret))
}

func TestRotateRoot_CredsReadsWorkDuringRotation(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)
	e.role(t, "app", nil)

	held := make(chan struct{})
	release := make(chan struct{})
	e.fake.OnRequest(func(ep fakeupstream.Endpoint, _ *http.Request) {
		if ep == fakeupstream.EndpointCreateSecret {
			close(held)
			<-release
		}
	})
	done := make(chan error, 1)
	go func() {
		_, err := e.b.HandleRequest(context.Background(), &logical.Request{
			Operation: logical.UpdateOperation, Path: "rotate-root", Storage: e.storage, MountPoint: "mapsindoors/",
		})
		done <- err
	}()
	<-held
	// The rotation holds its lock and waits on the upstream: a cold read
	// still gets a token.
	resp, err := e.b.HandleRequest(context.Background(), &logical.Request{
		Operation: logical.ReadOperation, Path: "creds/app", Storage: e.storage, MountPoint: "mapsindoors/",
	})
	require.NoError(t, err)
	require.NotEmpty(t, resp.Data["access_token"])
	close(release)
	require.NoError(t, <-done)
	e.read(t, "creds/app")
}

func TestRotateRoot_RefusedWhereStorageIsReadOnly(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{}, func(c *logical.BackendConfig) {
		c.System = &logical.StaticSystemView{ReplicationStateVal: consts.ReplicationPerformanceStandby}
	})
	e.configure(t, nil)
	_, err := e.rotate(t)
	require.ErrorIs(t, err, logical.ErrReadOnly)
	require.Zero(t, e.fake.Hits(fakeupstream.EndpointToken))
	require.Zero(t, e.fake.Hits(fakeupstream.EndpointCreateSecret))

	// Nor does the schedule rotate there.
	e.configure(t, map[string]any{"rotation_period": "1m"})
	e.b.now = func() time.Time { return time.Now().Add(time.Hour) }
	e.rollback(t)
	require.Zero(t, e.fake.Hits(fakeupstream.EndpointCreateSecret))
}

func TestRotateRoot_UnknownSecretIDIsNeverDeleted(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, map[string]any{"client_secret_id": ""})
	old := e.fake.Credentials()

	resp, err := e.rotate(t)
	require.NoError(t, err)
	require.Equal(t, false, resp.Data["previous_deleted"])
	require.Equal(t, "", resp.Data["previous_client_secret_id"])
	require.Len(t, resp.Warnings, 1)
	require.Contains(t, resp.Warnings[0], "client_secret_id was not set")
	require.True(t, e.fake.SecretWorks(old.ClientSecret), "a secret Vault cannot identify is left alone")
	require.Zero(t, e.fake.Hits(fakeupstream.EndpointDeleteSecret))
	require.Len(t, e.fake.Secrets(), 2)
	require.Empty(t, e.wals(t))

	// The next rotation knows the id it created and deletes it.
	resp, err = e.rotate(t)
	require.NoError(t, err)
	require.Equal(t, true, resp.Data["previous_deleted"])
	require.Len(t, e.fake.Secrets(), 2)
}

func TestRotateRoot_ConfigsThatCannotRotateAre400(t *testing.T) {
	cases := []struct {
		name     string
		config   map[string]any
		mentions string
	}{
		{"no config", nil, "has no config"},
		{"provider without a secret API", map[string]any{"provider": "oauth2"}, "cannot be rotated"},
		{"password grant", map[string]any{"grant_type": "password", "username": "u", "password": "p"}, "password grant"},
		{"no customer id", map[string]any{"customer_id": ""}, "customer_id is required"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, fakeupstream.Options{})
			if tc.config != nil {
				e.configure(t, tc.config)
			}
			resp, err := e.rotate(t)
			requireBadRequest(t, resp, err, tc.mentions)
			require.Zero(t, e.fake.Hits(fakeupstream.EndpointToken))
			require.Empty(t, e.wals(t))
		})
	}
}

func TestClientSecrets_ListsWithoutValues(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)
	old := e.fake.Credentials()
	resp, err := e.do(t, logical.ListOperation, "client-secrets/", nil)
	require.NoError(t, err)
	require.Equal(t, []string{old.ClientSecretID}, resp.Data["keys"])
	info := resp.Data["key_info"].(map[string]any)[old.ClientSecretID].(map[string]any)
	require.Equal(t, true, info["current"])
	require.Equal(t, "initial secret", info["description"])
	require.Equal(t, old.ClientID, info["client_id"])
	require.NotEmpty(t, info["created_at"])

	read, err := e.do(t, logical.ReadOperation, "client-secrets", nil)
	require.NoError(t, err)
	require.Equal(t, resp.Data, read.Data)

	e.fake.InjectFault(fakeupstream.EndpointListSecrets, fakeupstream.Fault{Status: 403, Code: "forbidden"})
	_, err = e.do(t, logical.ListOperation, "client-secrets/", nil)
	requireCoded(t, err, http.StatusBadGateway, "HTTP 403")
}

func TestScheduledRotation_FiresWhenDueAndNotEarly(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	clock := &fixedClock{t: time.Now()}
	e.b.now = clock.Now
	e.configure(t, nil)

	resp, err := e.write(t, "config", map[string]any{"rotation_period": "30s"})
	requireBadRequest(t, resp, err, "rotation_period must be 0 (off) or at least 1m0s")
	e.configure(t, map[string]any{"rotation_period": "1h"})
	cfg := e.read(t, "config").Data
	require.Equal(t, int64(3600), cfg["rotation_period"])
	require.Equal(t, clock.Now().Add(time.Hour).UTC().Format(time.RFC3339), cfg["next_rotation"])
	require.Equal(t, "", cfg["last_rotated"])

	clock.Add(59 * time.Minute)
	e.rollback(t)
	require.Zero(t, e.fake.Hits(fakeupstream.EndpointCreateSecret), "not before it is due")

	clock.Add(2 * time.Minute)
	e.rollback(t)
	require.Equal(t, 1, e.fake.Hits(fakeupstream.EndpointCreateSecret))
	stored := e.storedConfig(t)
	require.Equal(t, []string{stored.ClientSecretID}, secretIDs(e.fake))
	cfg = e.read(t, "config").Data
	require.Equal(t, clock.Now().UTC().Format(time.RFC3339), cfg["last_rotated"])
	require.Equal(t, clock.Now().Add(time.Hour).UTC().Format(time.RFC3339), cfg["next_rotation"])

	clock.Add(time.Minute)
	e.rollback(t)
	require.Equal(t, 1, e.fake.Hits(fakeupstream.EndpointCreateSecret), "once per period")
	require.Contains(t, e.logs.String(), "trigger=schedule")
}

func TestScheduledRotation_RetriesWithBackoffAndKeepsAWorkingSecret(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	clock := &fixedClock{t: time.Now()}
	e.b.now = clock.Now
	e.configure(t, map[string]any{"rotation_period": "1h"})
	old := e.fake.Credentials()
	e.fake.InjectFault(fakeupstream.EndpointCreateSecret, fakeupstream.Fault{Status: 503, Times: 2})

	clock.Add(time.Hour)
	e.rollback(t) // fails; next try in 1m
	require.Equal(t, 1, e.fake.Hits(fakeupstream.EndpointCreateSecret))
	require.True(t, e.fake.SecretWorks(old.ClientSecret))
	require.Contains(t, e.logs.String(), "scheduled rotation failed")

	clock.Add(30 * time.Second)
	e.rollback(t)
	require.Equal(t, 1, e.fake.Hits(fakeupstream.EndpointCreateSecret), "waits out the backoff")

	clock.Add(31 * time.Second)
	e.rollback(t) // fails again; next try in 2m
	require.Equal(t, 2, e.fake.Hits(fakeupstream.EndpointCreateSecret))

	clock.Add(90 * time.Second)
	e.rollback(t)
	require.Equal(t, 2, e.fake.Hits(fakeupstream.EndpointCreateSecret), "the backoff grows")

	clock.Add(31 * time.Second)
	e.rollback(t)
	require.Equal(t, 3, e.fake.Hits(fakeupstream.EndpointCreateSecret))
	stored := e.storedConfig(t)
	require.NotEqual(t, old.ClientSecretID, stored.ClientSecretID)
	require.True(t, e.fake.SecretWorks(stored.ClientSecret))
	require.False(t, e.fake.SecretWorks(old.ClientSecret))
	require.True(t, strings.Contains(e.logs.String(), "rotation done"))
}

func TestScheduledRotation_DueAllowsForTickJitter(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name   string
		period time.Duration
		after  time.Duration
		due    bool
	}{
		{"off", 0, 48 * time.Hour, false},
		{"1m period, tick a hair early", time.Minute, 59*time.Second + 990*time.Millisecond, true},
		{"1m period, half way", time.Minute, 30 * time.Second, false},
		{"1m period, 7s early", time.Minute, 53 * time.Second, false},
		{"1h period, a minute early", time.Hour, 59 * time.Minute, false},
		{"1h period, 20s early", time.Hour, 59*time.Minute + 40*time.Second, true},
		{"1h period, late", time.Hour, 61 * time.Minute, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := &mapsConfig{RotationPeriod: tc.period, ScheduleStart: t0.Add(-time.Hour), LastRotated: t0}
			require.Equal(t, tc.due, c.dueForRotation(t0.Add(tc.after)))
		})
	}
}
