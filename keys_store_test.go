package mapsindoors

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

// mustKey is a new rsa-2048 key in state.
func mustKey(t testing.TB, state keyState) signingKey {
	t.Helper()
	k, err := newSigningKey(defaultKeyType, time.Now())
	require.NoError(t, err)
	k.State = state
	return k
}

// failingDeletes fails every Delete of key, after it took effect when
// committed is set (a delete can commit and still report failure).
type failingDeletes struct {
	logical.Storage
	key       string
	committed bool
}

func (s *failingDeletes) Delete(ctx context.Context, key string) error {
	if key != s.key {
		return s.Storage.Delete(ctx, key)
	}
	if s.committed {
		if err := s.Storage.Delete(ctx, key); err != nil {
			return err
		}
	}
	return errors.New("storage unavailable")
}

func TestRetireSigningKeys_DeletesTheKeysFromStorageAndMemoryAndNamesThem(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	cur, prev := mustKey(t, keyCurrent), mustKey(t, keyPrevious)
	require.NoError(t, e.b.storeKeys(t.Context(), e.storage, &keySet{Keys: []signingKey{cur, prev}, RolledOverAt: time.Now()}))
	_, published := jwksOf(t, e.b, e.storage)
	require.Len(t, published.Keys, 2)

	warning, err := e.b.retireSigningKeys(t.Context(), e.storage)
	require.NoError(t, err)
	require.Contains(t, warning, "retired this mount's private_key_jwt signing keys "+cur.KeyID+", "+prev.KeyID)
	require.Contains(t, warning, "remove them from the client's registration at the server")
	entry, err := e.storage.Get(t.Context(), keysStoragePath)
	require.NoError(t, err)
	require.True(t, entry == nil, "the key set is gone from storage")
	_, published = jwksOf(t, e.b, e.storage)
	require.Empty(t, published.Keys, "and from the JWKS this node serves")
	_, err = e.b.keys.SigningKey(t.Context())
	require.ErrorContains(t, err, "this mount has no signing key", "nothing signs with them")

	// Nothing to retire: no warning.
	warning, err = e.b.retireSigningKeys(t.Context(), e.storage)
	require.NoError(t, err)
	require.Empty(t, warning)
}

func TestRetireSigningKeys_AFailedDeleteLeavesTheNodeOnWhatStorageHolds(t *testing.T) {
	for _, committed := range []bool{false, true} {
		e := newTestEnv(t, fakeupstream.Options{})
		cur := mustKey(t, keyCurrent)
		require.NoError(t, e.b.storeKeys(t.Context(), e.storage, &keySet{Keys: []signingKey{cur}}))
		s := &failingDeletes{Storage: e.storage, key: keysStoragePath, committed: committed}

		_, err := e.b.retireSigningKeys(t.Context(), s)
		require.ErrorContains(t, err, "retire the signing keys: storage unavailable")
		_, published := jwksOf(t, e.b, e.storage)
		if committed {
			require.Empty(t, published.Keys, "the delete took effect: the node follows storage")
		} else {
			require.Equal(t, []string{cur.KeyID}, kidsOf(published), "the delete did not take effect")
		}
	}
}

// A write that moves away from private_key_jwt has committed when it
// retires the keys: if that fails, the write says so, and the periodic
// function retires them.
func TestRetireSigningKeys_AFailedRetirementIsRetriedByThePeriodicFunction(t *testing.T) {
	e := newJWTEnv(t, nil)
	kid := e.storedKeys(t).Keys[0].KeyID
	plain := e.storage
	e.storage = &failingDeletes{Storage: plain, key: keysStoragePath}

	resp, err := e.write(t, "config", map[string]any{"token_auth_method": "client_secret_post", "client_secret": e.fake.Credentials().ClientSecret})
	require.NoError(t, err)
	require.False(t, resp.IsError(), "%v", resp.Error())
	require.Contains(t, resp.Warnings, "the config no longer uses private_key_jwt, but its signing keys could not be retired yet: they sign nothing, "+
		"and Vault retires them within minutes (or delete and write the config again)")
	require.Equal(t, "client_secret_post", e.storedConfig(t).TokenAuthMethod, "the write is stored")
	require.Equal(t, []string{kid}, []string{e.storedKeys(t).Keys[0].KeyID})

	e.storage = plain
	e.rollback(t) // the periodic function
	require.Zero(t, len(e.storedKeys(t).Keys))
	_, published := e.jwks(t)
	require.Empty(t, published.Keys)
}
