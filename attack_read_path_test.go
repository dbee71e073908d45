package mapsindoors

import (
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

// AP-11 and AP-4, through the fetch ahead: a read R looks up config A, a
// config write moves the mount to config B, and a read R2 of B installs
// B's first token. R, still holding A's client, then sees that token
// first. Were R allowed to arm the token's fetch ahead, the armed fetch
// would log in with A's replaced credential and install A's token as B's
// next one, which every reader gets after the switch. Only a read of the
// config generation the token was fetched under arms its window.
func TestAttackReadPath_AReadOfTheOldConfigCannotArmTheNewTokensFetchAhead(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{TokenLifetime: 30 * time.Second})
	clock := useSimClock(e)
	e.configure(t, nil)
	e.role(t, "app", nil)
	other, err := fakeupstream.Start(fakeupstream.Options{TokenLifetime: 30 * time.Second})
	require.NoError(t, err)
	t.Cleanup(other.Close)

	var calls int
	var mu sync.Mutex
	r2AtLookup, releaseR2, r2Done := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	e.b.now = func() time.Time {
		if pc, _, _, ok := runtime.Caller(1); ok && strings.HasSuffix(runtime.FuncForPC(pc).Name(), ".(*backend).roleToken") {
			mu.Lock()
			calls++
			n := calls
			mu.Unlock()
			switch n {
			case 1: // R has looked up the old config; the move lands now, and R2 reads
				go func() {
					resp, err := e.write(t, "config", other.PluginConfig("mapsindoors"))
					if err == nil && resp != nil && resp.IsError() {
						err = resp.Error()
					}
					if err == nil {
						_, err = e.do(t, logical.ReadOperation, "static-creds/app", nil)
					}
					r2Done <- err
				}()
				<-r2AtLookup
			case 3: // R2 has installed the new config's first token
				close(r2AtLookup)
				<-releaseR2
			}
		}
		return clock.Now()
	}
	_, err = e.do(t, logical.ReadOperation, "static-creds/app", nil) // R
	require.NoError(t, err)
	close(releaseR2)
	require.NoError(t, <-r2Done)
	e.b.now = clock.Now
	oldHits := e.fake.Hits(fakeupstream.EndpointToken)
	waited := counter(t, e.status(t), "reads_waited_on_upstream")

	clock.advance(10 * time.Second) // the fetch ahead of the new token's window
	e.settle(clock)
	clock.advance(3 * time.Second) // past the switch
	tok := e.read(t, "static-creds/app").Data["access_token"].(string)
	require.False(t, e.fake.TokenLive(tok), "after the move, a reader got a token of the replaced config's account")
	require.True(t, other.TokenLive(tok), "after the move, a reader gets a token of the new config's account")
	require.Equal(t, oldHits, e.fake.Hits(fakeupstream.EndpointToken), "the fetch ahead went to the replaced config's token endpoint")
	// R2, a read of the new config, armed the window: the read past the
	// switch did not wait.
	require.Equal(t, waited, counter(t, e.status(t), "reads_waited_on_upstream"), "a read of the new config did not arm the window's fetch ahead")
}

// CR-7 for roles: a role delete that commits but reports failure (a
// deadline after the commit, a leadership change during apply) must not
// leave the node handing out the deleted role's tokens.
func TestAttackReadPath_ARoleDeleteThatCommitsButFailsStopsServingTheRole(t *testing.T) {
	e := servedRole(t, "creds/app")
	e.failAfterCommit(t, deleteThenFailStorage{e.storage}, logical.DeleteOperation, "roles/app", nil)
	stored, err := getRole(t.Context(), e.storage, "app")
	require.NoError(t, err)
	require.Nil(t, stored, "the delete committed")

	for _, path := range []string{"creds/app", "static-creds/app"} {
		resp, err := e.do(t, logical.ReadOperation, path, nil)
		require.NoError(t, err)
		require.True(t, resp != nil && resp.IsError(), "%s: a role storage no longer holds still hands out tokens on this node", path)
		require.Contains(t, resp.Error().Error(), "does not exist")
	}
}

// The same for a role write that commits but reports failure: the node
// serves the role as storage holds it, not as it was. Here the write
// makes the role token_per_lease, which static-creds must then refuse
// rather than hand out the old shared token.
func TestAttackReadPath_ARoleWriteThatCommitsButFailsServesTheStoredRole(t *testing.T) {
	e := servedRole(t, "static-creds/app")
	failing := &commitThenFailStorage{Storage: e.storage, fail: func(k string) bool { return k == roleStoragePrefix+"app" }}
	e.failAfterCommit(t, failing, logical.UpdateOperation, "roles/app", map[string]any{"token_per_lease": true})
	stored, err := getRole(t.Context(), e.storage, "app")
	require.NoError(t, err)
	require.True(t, stored.TokenPerLease, "the write committed")

	resp, err := e.do(t, logical.ReadOperation, "static-creds/app", nil)
	requireBadRequest(t, resp, err, "token_per_lease")
}

// servedRole is an env whose role "app" this node has served once
// through path, so that it holds the role and its shared token in memory.
func servedRole(t *testing.T, path string) *testEnv {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)
	e.role(t, "app", nil)
	e.read(t, path)
	return e
}

// failAfterCommit does op on path through failing, a storage that commits
// it and then reports failure (as a Raft apply that commits after its
// deadline fired does), and goes back to the env's own storage.
func (e *testEnv) failAfterCommit(t *testing.T, failing logical.Storage, op logical.Operation, path string, data map[string]any) {
	t.Helper()
	own := e.storage
	e.storage = failing
	defer func() { e.storage = own }()
	_, err := e.do(t, op, path, data)
	require.Error(t, err, "the storage reported the %s of %s as failed", op, path)
}

// The cache's side of the rule above, each gate on its own: a token
// fetched under config generation 2 is observed, armed and claimed only
// for a read of generation 2. A read of generation 1 is served the token
// but arms nothing, and leaves the window for a read of generation 2.
func TestAttackReadPath_OnlyAReadOfTheTokensConfigGenerationArmsItsWindow(t *testing.T) {
	c := newTokenCache()
	var armed []func()
	c.after = func(_ time.Duration, f func()) func() bool {
		armed = append(armed, f)
		return func() bool { return true }
	}
	now := time.Now()
	tok := &upstream.Token{AccessToken: "t", IssuedAt: now, ExpiresAt: now.Add(time.Hour)}
	cur := &sharedToken{Token: tok, tokenTimes: scheduleToken(tok, 0), configGen: 2}
	c.install("app", "req", cur, c.generation(), now)

	got, step, _ := c.lookup("app", "req", now, true, 1)
	require.True(t, got == cur, "a read of the old config is still served the token")
	require.Equal(t, aheadNothing, step, "a read of the old config decides nothing for the window")
	_, step, _ = c.lookup("app", "req", now, true, 2)
	require.Equal(t, aheadDecide, step, "the window is left for a read of the token's config")

	require.Equal(t, aheadNothing, c.activate("app", cur, 1, true, now, func(uint64) {}))
	require.Empty(t, armed, "a read of the old config armed the window's fetch ahead")

	var fetched []uint64
	require.Equal(t, aheadNothing, c.activate("app", cur, 2, true, now, func(gen uint64) { fetched = append(fetched, gen) }))
	require.Len(t, armed, 1, "a read of the token's config arms its window")
	_, ok := c.claim("app", cur, 1)
	require.False(t, ok, "a fetch armed by a read of the old config was claimed")
	armed[0]()
	require.Equal(t, []uint64{c.generation()}, fetched, "the armed fetch runs with the cache's generation")
}
