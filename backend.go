// Package mapsindoors is a Vault secrets engine that keeps an OAuth2 client
// credential (MapsIndoors' first of all) in Vault and hands out short-lived
// bearer tokens from it as leases that never outlive the token.
package mapsindoors

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	"golang.org/x/sync/singleflight"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

// Version is the plugin's semantic version, "v" first, as Vault compares it
// with the -version given at registration. The Makefile's VERSION is the one
// source of it: builds stamp it with
// -ldflags "-X github.com/mapsindoors/vault-plugin-secrets-mapsindoors.Version=v1.2.3",
// and a build that was not stamped says so.
var Version = "v0.0.0-dev"

const (
	operationPrefix = "mapsindoors"

	backendHelp = `
The MapsIndoors secrets engine keeps an OAuth2 client credential in Vault and
hands out short-lived bearer tokens for it. Write the root credential to
"config", define roles under "roles/", and read tokens from "creds/<role>".
`
)

// Factory builds the backend of one mount. It also runs when Vault only
// wants the plugin's metadata, so it does no network or storage work.
func Factory(ctx context.Context, conf *logical.BackendConfig) (logical.Backend, error) {
	b := newBackend()
	b.keys.storage = conf.StorageView
	if err := b.Setup(ctx, conf); err != nil {
		return nil, err
	}
	return b, nil
}

type backend struct {
	*framework.Backend

	// newClient builds the upstream client for a config. Tests replace it
	// to put failures between the backend and the fake upstream.
	newClient func(upstream.Config) (upstream.Client, error)
	// now is the clock for lease math and rotation schedules.
	now func() time.Time

	// mu guards the in-memory copies of what storage holds, and the client
	// built from the config. Every creds read needs the config and its
	// role; keeping them here saves two storage round trips per read.
	// Writes and Invalidate refresh them.
	mu     sync.RWMutex
	config *config // nil when not loaded or not configured
	loaded bool    // whether config reflects storage
	client upstream.Client
	roles  map[string]*roleEntry
	// rolesGen counts role writes and invalidations, so a read that raced
	// one does not put a stale role into roles.
	rolesGen uint64

	tokens *tokenCache
	// refresh is the refresh token of providers that log in with a
	// password (in memory only); refreshGen counts config changes, so a
	// login that raced one does not keep a token of the old config.
	refreshMu  sync.Mutex
	refresh    string
	refreshGen uint64
	// flight makes concurrent creds reads of a role whose token is missing
	// or spent share one upstream request.
	flight singleflight.Group

	// writeLock serializes every change to the stored config (config writes,
	// rotations, rotation rollbacks), so that a rotation never writes over a
	// config changed while it talked to the upstream. It is never taken on
	// the creds read path.
	writeLock chan struct{}

	// verifyBackoff are the waits between attempts to log in with a newly
	// created secret before a rotation gives up on it.
	verifyBackoff []time.Duration
	// rotationTimeout bounds one rotation, every step and wait included.
	rotationTimeout time.Duration

	// keys are the private_key_jwt signing keys in memory (keys.go): the
	// published JWKS and the upstream clients' signer.
	keys *keyRing
}

func newBackend() *backend {
	b := &backend{
		newClient: nil, // b.newUpstreamClient (keys.go), set below: it needs b
		now:       time.Now,
		roles:     map[string]*roleEntry{},
		tokens:    newTokenCache(),

		verifyBackoff:   []time.Duration{500 * time.Millisecond, 2 * time.Second},
		rotationTimeout: defaultRotationTimeout,
		writeLock:       make(chan struct{}, 1),
		keys:            &keyRing{},
	}
	b.newClient = b.newUpstreamClient
	b.Backend = &framework.Backend{
		Help:        strings.TrimSpace(backendHelp),
		BackendType: logical.TypeLogical,
		PathsSpecial: &logical.Paths{
			SealWrapStorage: []string{configStoragePath, keysStoragePath},
			// A server given the JWKS URL as a client's jwks_uri has no
			// Vault token; the JWKS holds public keys only.
			Unauthenticated: []string{jwksPath},
		},
		Paths: framework.PathAppend(
			pathConfig(b),
			pathRoles(b),
			pathCreds(b),
			pathRotate(b),
			pathClientSecrets(b),
			pathJWKS(b),
		),
		Secrets:           []*framework.Secret{secretToken(b)},
		Invalidate:        b.invalidate,
		Clean:             b.clean,
		PeriodicFunc:      b.periodic,
		WALRollback:       b.walRollback,
		WALRollbackMinAge: walRollbackMinAge,
		RunningVersion:    Version,
	}
	return b
}

// lockWrites takes the write lock, or gives up when ctx ends first: a
// caller who left does not queue a config change or a rotation behind one
// that is under way. unlock releases it.
func (b *backend) lockWrites(ctx context.Context) (unlock func(), err error) {
	select {
	case b.writeLock <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("another config change or rotation is under way on this mount; try again: %w", ctx.Err())
	}
	if err := ctx.Err(); err != nil {
		<-b.writeLock
		return nil, fmt.Errorf("the request ended while it waited for another config change or rotation: %w", err)
	}
	return func() { <-b.writeLock }, nil
}

// reset drops the cached config, client and tokens; the next request
// rebuilds them from storage.
func (b *backend) reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.resetLocked()
}

func (b *backend) resetLocked() {
	// The dropped client's pooled connections would otherwise linger until
	// their idle timeout.
	if b.client != nil {
		b.client.Close()
	}
	b.config = nil
	b.loaded = false
	b.client = nil
	b.roles = map[string]*roleEntry{}
	b.rolesGen++
	b.tokens.reset()
	b.refreshMu.Lock()
	b.refresh = ""
	b.refreshGen++
	b.refreshMu.Unlock()
}

func (b *backend) refreshToken() (uint64, string) {
	b.refreshMu.Lock()
	defer b.refreshMu.Unlock()
	return b.refreshGen, b.refresh
}

// setRefreshToken keeps a new refresh token; an empty one (a server that
// returned none on refresh) keeps the one there is.
func (b *backend) setRefreshToken(gen uint64, rt string) {
	b.refreshMu.Lock()
	defer b.refreshMu.Unlock()
	if gen == b.refreshGen && rt != "" {
		b.refresh = rt
	}
}

// invalidate is called when another node (a performance standby or a
// replica) sees storage change under it.
func (b *backend) invalidate(_ context.Context, key string) {
	switch {
	case key == configStoragePath:
		b.reset()
	case key == keysStoragePath:
		b.keys.invalidate()
	case strings.HasPrefix(key, roleStoragePrefix):
		b.forgetRole(strings.TrimPrefix(key, roleStoragePrefix))
	}
}

func (b *backend) clean(context.Context) { b.reset() }

// upstreamClient is the resolved config and its upstream client, built
// once and kept until the config changes; nil, nil when the mount has no
// config.
func (b *backend) upstreamClient(ctx context.Context, s logical.Storage) (*config, upstream.Client, error) {
	b.mu.RLock()
	if b.loaded {
		cfg, client := b.config, b.client
		b.mu.RUnlock()
		if cfg == nil || client != nil {
			return cfg, client, nil
		}
	} else {
		b.mu.RUnlock()
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	// Another request may have loaded it while this one waited.
	if !b.loaded {
		stored, err := getConfig(ctx, s)
		if err != nil {
			return nil, nil, err
		}
		b.config, b.loaded = nil, true
		if stored != nil {
			b.config = stored.resolved()
		}
	}
	if b.config == nil {
		return nil, nil, nil
	}
	if b.client == nil {
		client, err := b.newClient(b.config.clientConfig())
		if err != nil {
			return nil, nil, fmt.Errorf("build upstream client: %w", err)
		}
		b.client = client
	}
	return b.config, b.client, nil
}
