package mapsindoors

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

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
	requireQuietlyEqual(t, before, withoutRotationStatus(e.storedConfig(t)), "the stored config is as it was, but for the rotation status")

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
