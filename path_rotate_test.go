package mapsindoors

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

func (e *testEnv) rotate(t testing.TB) (*logical.Response, error) {
	t.Helper()
	return e.do(t, logical.UpdateOperation, "rotate-root", nil)
}

func (e *testEnv) storedConfig(t testing.TB) *config {
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
		// walKept: the outcome upstream is not known yet, so the WAL stays
		// for Vault's rollback to look again later.
		walKept bool
	}{
		{"step 3: login with the current secret refused", func(e *testEnv) {
			e.fake.InjectFault(fakeupstream.EndpointToken, fakeupstream.Fault{Status: 401, Code: "invalid_client"})
		}, `HTTP 401, OAuth2 error "invalid_client"`, false},
		{"step 3: create refused with a 400", func(e *testEnv) {
			e.fake.InjectFault(fakeupstream.EndpointCreateSecret, fakeupstream.Fault{Status: 400, Code: "invalid_request"})
		}, "create client secret", false},
		{"step 3: create failed with a 500", func(e *testEnv) {
			e.fake.InjectFault(fakeupstream.EndpointCreateSecret, fakeupstream.Fault{Status: 500})
		}, "create client secret", true},
		{"step 3: create answer malformed", func(e *testEnv) {
			e.fake.InjectFault(fakeupstream.EndpointCreateSecret, fakeupstream.Fault{Malformed: true})
		}, "create client secret", true},
		{"step 4: the new secret does not log in", func(e *testEnv) {
			// The first token request is the login for the create; the next
			// three are every attempt with the new secret.
			e.fake.InjectFault(fakeupstream.EndpointToken, fakeupstream.Fault{After: 1, Times: 3, Status: 400, Code: "invalid_client"})
		}, "log in with the new client secret", false},
		{"step 5: storing the new secret fails", func(e *testEnv) {
			e.storage = &failingStorage{Storage: e.storage, failPut: func(k string) bool { return k == configStoragePath }}
		}, "storage is down", true},
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
				requireNoSecretIn(t, err.Error(), s, "the error holds a secret or token")
			}

			after := e.storedConfig(t)
			requireQuietlyEqual(t, before, withoutRotationStatus(after), "the stored config is exactly as it was, but for the rotation status")
			if fs, storageDown := e.storage.(*failingStorage); storageDown {
				e.storage = fs.Storage
			} else {
				require.Equal(t, 1, after.Rotation.ConsecutiveFailures)
				require.Contains(t, after.Rotation.LastError, tc.mentions)
			}
			require.True(t, e.fake.SecretWorks(before.ClientSecret))
			require.Contains(t, e.logs.String(), "rotation failed")
			if !tc.walKept {
				require.Empty(t, e.wals(t), "nothing is left to look for: the WAL is dropped at once")
				require.Equal(t, beforeIDs, secretIDs(e.fake), "what the rotation created upstream is deleted at once")
				return
			}
			require.Len(t, e.wals(t), 1)
			e.fake.ClearFaults()
			e.ageWALs(t)
			e.rollback(t)
			require.Empty(t, e.wals(t))
			require.Equal(t, beforeIDs, secretIDs(e.fake), "what the rotation created upstream is deleted by the rollback")
			require.True(t, e.fake.SecretWorks(before.ClientSecret))
		})
	}
}

func TestRotateRoot_FailedDeleteKeepsNewSecretAndRetriesFromThePeriodicFunction(t *testing.T) {
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
	require.Len(t, stored.PendingDeletions, 1, "the config names the secret still to delete")
	require.Equal(t, old.ClientSecretID, stored.PendingDeletions[0].ID)
	require.Empty(t, e.wals(t), "nothing is left for the WAL rollback")

	list, err := e.do(t, logical.ListOperation, "client-secrets/", nil)
	require.NoError(t, err)
	info := list.Data["key_info"].(map[string]any)
	require.Equal(t, true, info[stored.ClientSecretID].(map[string]any)["current"])
	require.Equal(t, true, info[old.ClientSecretID].(map[string]any)["previous"])

	// The periodic function (which Vault runs with the rollback, about once
	// a minute) deletes it and never touches the new one.
	e.rollback(t)
	require.False(t, e.fake.SecretWorks(old.ClientSecret))
	require.True(t, e.fake.SecretWorks(stored.ClientSecret))
	require.Empty(t, e.storedConfig(t).PendingDeletions)
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
