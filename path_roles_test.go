package mapsindoors

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

func TestRoles_CRUDAndList(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.role(t, "app", map[string]any{"scopes": "read, write", "ttl": "5m"})
	e.role(t, "other", nil)

	got := e.read(t, "roles/app").Data
	require.Equal(t, []string{"read", "write"}, got["scopes"])
	require.Equal(t, int64(300), got["ttl"])

	// A partial update keeps the scopes.
	e.role(t, "app", map[string]any{"ttl": 60})
	got = e.read(t, "roles/app").Data
	require.Equal(t, []string{"read", "write"}, got["scopes"])
	require.Equal(t, int64(60), got["ttl"])

	resp, err := e.do(t, logical.ListOperation, "roles/", nil)
	require.NoError(t, err)
	require.Equal(t, []string{"app", "other"}, resp.Data["keys"])

	resp, err = e.do(t, logical.DeleteOperation, "roles/other", nil)
	require.NoError(t, err)
	require.Nil(t, resp)
	resp, err = e.do(t, logical.ReadOperation, "roles/other", nil)
	require.NoError(t, err)
	require.Nil(t, resp)
}

func TestRoles_BadInputIsRejectedAndStoredRoleKept(t *testing.T) {
	cases := []struct {
		name     string
		data     map[string]any
		mentions string
	}{
		{"negative ttl", map[string]any{"ttl": "-1m"}, `field "ttl": cannot provide negative value`},
		{"ttl not a duration", map[string]any{"ttl": "later"}, "ttl"},
		{"scope with a backslash", map[string]any{"scopes": `a\b`}, "scopes"},
		{"scope with a non-ASCII letter", map[string]any{"scopes": "læs"}, "scopes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, fakeupstream.Options{})
			e.role(t, "app", map[string]any{"scopes": "read", "ttl": "1m"})
			before := e.read(t, "roles/app").Data

			resp, err := e.write(t, "roles/app", tc.data)
			requireBadRequest(t, resp, err, tc.mentions)
			require.Equal(t, before, e.read(t, "roles/app").Data)
		})
	}
}

func TestRoles_ChangeDropsTheRolesToken(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)
	e.role(t, "app", map[string]any{"scopes": "a"})
	first := e.read(t, "creds/app").Data
	require.Equal(t, "a", first["scope"])

	e.role(t, "app", map[string]any{"scopes": "b"})
	second := e.read(t, "creds/app").Data
	require.Equal(t, "b", second["scope"])
	requireNewToken(t, first["access_token"], second["access_token"], "a role whose scopes changed gets a new token")
	require.Equal(t, 2, e.fake.Hits(fakeupstream.EndpointToken))
}

// Role names are case-sensitive storage keys and ACL paths: folding them
// would let creds/ADMIN serve role admin past a policy that denies
// creds/admin, and hide the read from an audit search for creds/admin.
func TestRoles_NamesThatAreNotLowerCaseAreRefusedNotFolded(t *testing.T) {
	cases := []struct {
		name string
		op   logical.Operation
		path string
		data map[string]any
	}{
		{"creds read", logical.ReadOperation, "creds/ADMIN", nil},
		{"creds read, mixed case", logical.ReadOperation, "creds/Admin", nil},
		{"role read", logical.ReadOperation, "roles/ADMIN", nil},
		{"role create", logical.CreateOperation, "roles/Other", map[string]any{"ttl": "1m"}},
		{"role update", logical.UpdateOperation, "roles/ADMIN", map[string]any{"ttl": "1m"}},
		{"role delete", logical.DeleteOperation, "roles/ADMIN", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, fakeupstream.Options{})
			e.configure(t, nil)
			e.role(t, "admin", map[string]any{"ttl": "5m"})
			before := e.storageDump(t)

			resp, err := e.do(t, tc.op, tc.path, tc.data)
			requireBadRequest(t, resp, err, "lower case")

			requireQuietlyEqual(t, before, e.storageDump(t), "a refused role request changed storage")
			require.Equal(t, 0, e.fake.Hits(fakeupstream.EndpointToken), "no token was fetched")
			require.Equal(t, int64(300), e.read(t, "roles/admin").Data["ttl"])
		})
	}
}

// meetingStorage reads one key and then holds the answer until a second
// read of it arrives or a short wait ends, so two writers that read a role
// without a lock are sure to read the same version of it.
type meetingStorage struct {
	logical.Storage
	key     string
	mu      sync.Mutex
	waiting chan struct{}
}

func (s *meetingStorage) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	entry, err := s.Storage.Get(ctx, key)
	if key != s.key {
		return entry, err
	}
	s.mu.Lock()
	if s.waiting != nil {
		close(s.waiting)
		s.waiting = nil
		s.mu.Unlock()
		return entry, err
	}
	ch := make(chan struct{})
	s.waiting = ch
	s.mu.Unlock()
	select {
	case <-ch:
	case <-time.After(300 * time.Millisecond):
		s.mu.Lock()
		if s.waiting == ch {
			s.waiting = nil
		}
		s.mu.Unlock()
	}
	return entry, err
}

func TestRoles_ConcurrentPartialUpdatesKeepBothChanges(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.role(t, "app", map[string]any{"scopes": "read", "ttl": "1m"})
	e.storage = &meetingStorage{Storage: e.storage, key: roleStoragePrefix + "app"}

	changes := []map[string]any{{"ttl": "5m"}, {"audience": "https://api.example.com"}}
	var wg sync.WaitGroup
	for _, data := range changes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := e.b.HandleRequest(context.Background(), &logical.Request{
				Operation: logical.UpdateOperation, Path: "roles/app", Data: data, Storage: e.storage, MountPoint: "mapsindoors/",
			})
			assert.NoError(t, err)
			assert.False(t, resp != nil && resp.IsError(), "role write refused")
		}()
	}
	wg.Wait()

	got := e.read(t, "roles/app").Data
	require.Equal(t, int64(300), got["ttl"], "the ttl update was lost")
	require.Equal(t, "https://api.example.com", got["audience"], "the audience update was lost")
	require.Equal(t, []string{"read"}, got["scopes"])
}
