package mapsindoors

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

// keyRing is the mount's keys in memory. The JWKS path reads it without
// any lock that a token request or a rotation holds: a server given the
// JWKS URL fetches it while the token request it answers waits (a rotation
// that proves a new key holds the write lock meanwhile). It is also the
// upstream client's AssertionSigner, asked once per HTTP request.
type keyRing struct {
	// storage is the mount's storage, for a signer that finds nothing
	// loaded (after Invalidate) outside any request.
	storage logical.Storage

	snap atomic.Pointer[keySnapshot]
	// mu guards gen and orders replacements of snap; it is held for
	// neither I/O nor signing. gen counts replacements, so a load that
	// read storage before a rotation published does not overwrite what
	// the rotation published with what it read.
	mu  sync.Mutex
	gen uint64
}

var _ upstream.AssertionSigner = (*keyRing)(nil)

// load is the snapshot, read from storage when none is loaded.
func (r *keyRing) load(ctx context.Context, s logical.Storage) (*keySnapshot, error) {
	if snap := r.snap.Load(); snap != nil {
		return snap, nil
	}
	if s == nil {
		return nil, errors.New("the signing keys are not loaded and there is no storage to read them from")
	}
	r.mu.Lock()
	gen := r.gen
	r.mu.Unlock()
	set, err := getKeySet(ctx, s)
	if err != nil {
		return nil, err
	}
	snap, err := newKeySnapshot(set)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	if r.gen == gen {
		r.snap.Store(snap)
	}
	r.mu.Unlock()
	return snap, nil
}

// publish makes set the one that signs and is published, once it is
// stored.
func (r *keyRing) publish(set *keySet) error {
	snap, err := newKeySnapshot(set)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.gen++
	r.snap.Store(snap)
	r.mu.Unlock()
	return nil
}

// invalidate drops the snapshot; the next use reads storage. A write whose
// outcome is unknown invalidates, so that what signs and what is published
// both follow what storage holds.
func (r *keyRing) invalidate() {
	r.mu.Lock()
	r.gen++
	r.snap.Store(nil)
	r.mu.Unlock()
}

// SigningKey is the current key: what every token request and revocation
// of the mount signs its assertion with.
func (r *keyRing) SigningKey(ctx context.Context) (upstream.SigningKey, error) {
	snap, err := r.load(ctx, r.storage)
	if err != nil {
		return upstream.SigningKey{}, err
	}
	k, ok := snap.signingKey(keyCurrent)
	if !ok {
		return upstream.SigningKey{}, errors.New("this mount has no signing key; write its config with token_auth_method=private_key_jwt to make one")
	}
	return k, nil
}

// newUpstreamClient is the backend's newClient: a private_key_jwt client
// signs with the mount's current key unless the caller named a key (a
// rollover proving its next one).
func (b *backend) newUpstreamClient(c upstream.Config) (upstream.Client, error) {
	if c.AuthMethod == upstream.AuthPrivateKeyJWT && c.Signer == nil {
		c.Signer = b.keys
	}
	return upstream.New(c)
}
