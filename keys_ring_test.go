package mapsindoors

import (
	"context"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

// stalledGet holds a Get of key after it read storage, until released:
// a load that read the key set just before a rollover published a new
// one, and finishes after it.
type stalledGet struct {
	logical.Storage
	key     string
	read    chan struct{}
	release chan struct{}
}

func (s *stalledGet) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	entry, err := s.Storage.Get(ctx, key)
	if key == s.key {
		close(s.read)
		<-s.release
	}
	return entry, err
}

// The key ring's generation: a load that read storage before a rollover
// published must not replace what the rollover published with the older
// set it read, or the node would sign with the replaced key and serve a
// JWKS without the new one.
func TestKeyRing_ALoadThatReadBeforeARolloverDoesNotUndoIt(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	ctx := t.Context()
	old := mustKey(t, keyCurrent)
	require.NoError(t, putKeySet(ctx, e.storage, &keySet{Keys: []signingKey{old}}))
	e.b.keys.invalidate() // nothing loaded: the next use reads storage

	s := &stalledGet{Storage: e.storage, key: keysStoragePath, read: make(chan struct{}), release: make(chan struct{})}
	loaded := make(chan error, 1)
	go func() {
		_, err := e.b.keys.load(ctx, s)
		loaded <- err
	}()
	<-s.read // the load holds the old set

	retired, current := old, mustKey(t, keyCurrent)
	retired.State = keyPrevious
	require.NoError(t, e.b.storeKeys(ctx, e.storage, &keySet{Keys: []signingKey{retired, current}}))
	close(s.release)
	require.NoError(t, <-loaded)

	k, err := e.b.keys.SigningKey(ctx)
	require.NoError(t, err)
	require.Equal(t, current.KeyID, k.KeyID, "the rollover's key signs; the late load did not put the old set back")
	_, published := jwksOf(t, e.b, e.storage)
	require.ElementsMatch(t, []string{old.KeyID, current.KeyID}, kidsOf(published))
}
