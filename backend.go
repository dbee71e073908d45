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
	"github.com/hashicorp/vault/sdk/helper/errutil"
	"github.com/hashicorp/vault/sdk/helper/locksutil"
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
	// configGen counts config changes (every reset). Shared token fetches
	// are keyed by it, so a read that arrives after a change never joins a
	// fetch made with the replaced credential.
	configGen uint64
	roles     map[string]*roleEntry
	// rolesGen counts role writes and invalidations, so a read that raced
	// one does not put a stale role into roles.
	rolesGen uint64

	tokens *tokenCache
	// outages remembers failed token requests per role, so that reads
	// during an outage do not each reach the upstream.
	outages *outageMemory
	// refresh is the refresh token of providers that log in with a
	// password (in memory only); refreshGen counts config changes, so a
	// login that raced one does not keep a token of the old config.
	refreshMu  sync.Mutex
	refresh    string
	refreshGen uint64
	// logins remembers, per credential, a refused password login and a
	// Retry-After: every client newClient builds asks it before it logs
	// in, whichever path it serves (backoff.go).
	logins *loginMemory
	// loginSem lets one password login run at a time, so that a burst of
	// cold reads makes one login and refreshes after it.
	loginSem chan struct{}
	// flight makes concurrent creds reads of a role whose token is missing
	// or spent share one upstream request.
	flight singleflight.Group

	// roleLocks serialize the read-modify-write of each role, so that two
	// partial updates of one role cannot lose either change. A role's lock
	// is locksutil.LockForKey(roleLocks, name); creds reads never take it.
	roleLocks []*locksutil.LockEntry

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

	// metrics are the counters status shows; events sends Vault events.
	// Both live in memory only (metrics.go, events.go).
	metrics *metrics
	events  *eventQueue

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
		outages:   newOutageMemory(),
		roleLocks: locksutil.CreateLocks(),
		loginSem:  make(chan struct{}, 1),

		verifyBackoff:   []time.Duration{500 * time.Millisecond, 2 * time.Second},
		rotationTimeout: defaultRotationTimeout,
		writeLock:       make(chan struct{}, 1),
		keys:            &keyRing{},

		metrics: newMetrics(time.Now()),
		events:  &eventQueue{},
	}
	// Its clock is b.now at the time of asking: tests move it.
	b.logins = newLoginMemory(func() time.Time { return b.now() })
	// The keys' signer first, measured like every client; what the login
	// memory holds back is no upstream call, and is not measured.
	b.newClient = b.logins.guard(b.metrics.measure(b.newUpstreamClient))
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
			pathStaticCreds(b),
			pathRotate(b),
			pathClientSecrets(b),
			pathJWKS(b),
			pathVerify(b),
			pathStatus(b),
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

// HandleRequest refuses a secret written as a list or a map before the
// framework does: its type error quotes the value.
func (b *backend) HandleRequest(ctx context.Context, req *logical.Request) (*logical.Response, error) {
	if err := mistypedSecret(req); err != nil {
		return errorResponse(err)
	}
	return b.Backend.HandleRequest(ctx, req)
}

// HandleExistenceCheck is HandleRequest's check for the existence check,
// which Vault runs first on a write and which parses the fields too.
func (b *backend) HandleExistenceCheck(ctx context.Context, req *logical.Request) (bool, bool, error) {
	if err := mistypedSecret(req); err != nil {
		return false, false, errutil.UserError{Err: err.Error()}
	}
	return b.Backend.HandleExistenceCheck(ctx, req)
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
	b.configGen++
	b.roles = map[string]*roleEntry{}
	b.rolesGen++
	b.tokens.reset()
	b.outages.reset()
	b.refreshMu.Lock()
	b.refresh = ""
	b.refreshGen++
	b.refreshMu.Unlock()
}

// refreshToken is the refresh token kept for the config of generation gen
// (the configGen a read looked up; resetLocked moves refreshGen with it), or
// "" once the config has changed: a read that looked up a replaced config
// never uses, nor keeps, a refresh token for the one that replaced it.
func (b *backend) refreshToken(gen uint64) string {
	b.refreshMu.Lock()
	defer b.refreshMu.Unlock()
	if gen != b.refreshGen {
		return ""
	}
	return b.refresh
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

// dropRefreshToken forgets a refresh token the upstream refused, unless
// another read has replaced it since.
func (b *backend) dropRefreshToken(gen uint64, rt string) {
	b.refreshMu.Lock()
	defer b.refreshMu.Unlock()
	if gen == b.refreshGen && b.refresh == rt {
		b.refresh = ""
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
	st, err := b.upstreamState(ctx, s)
	return st.cfg, st.client, err
}

// upstreamState is the resolved config, its client and the config
// generation they belong to, read together, so that whatever is keyed by
// the generation (shared fetches, remembered failures) never mixes configs.
type upstreamState struct {
	cfg    *config // nil when the mount has no config
	client upstream.Client
	gen    uint64
}

func (b *backend) upstreamState(ctx context.Context, s logical.Storage) (upstreamState, error) {
	b.mu.RLock()
	if b.loaded {
		st := upstreamState{cfg: b.config, client: b.client, gen: b.configGen}
		b.mu.RUnlock()
		if st.cfg == nil || st.client != nil {
			return st, nil
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
			return upstreamState{}, err
		}
		b.config, b.loaded = nil, true
		if stored != nil {
			b.config = stored.resolved()
		}
	}
	if b.config == nil {
		return upstreamState{gen: b.configGen}, nil
	}
	if b.client == nil {
		client, err := b.newClient(b.config.clientConfig())
		if err != nil {
			return upstreamState{}, fmt.Errorf("build upstream client: %w", err)
		}
		b.client = client
	}
	return upstreamState{cfg: b.config, client: b.client, gen: b.configGen}, nil
}
