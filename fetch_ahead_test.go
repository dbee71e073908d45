package mapsindoors

import (
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

// The token endpoint answers after 500 ms. A stream of reads (one every
// 250 ms of simulated time, creds and static-creds) across six
// replacements never waits on it: the next token is fetched ahead, and
// while that fetch is on the wire reads keep being served from the
// current token. The waiting-read counter stays at 0.
func TestFetchAhead_SlowUpstreamNeverMakesAReadWait(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{TokenLifetime: 30 * time.Second})
	clock := useSimClock(e)
	e.configure(t, nil)
	e.role(t, "app", nil)
	e.read(t, "static-creds/app") // the one cold read
	e.fake.InjectFault(fakeupstream.EndpointToken, fakeupstream.Fault{Delay: 500 * time.Millisecond, Times: -1})

	var duringFetch atomic.Int64
	tokens := map[string]bool{}
	for i := 0; len(tokens) < 7; i++ {
		clock.advance(250 * time.Millisecond)
		// Reads go on while any fetch ahead is under way.
		done := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				if e.b.tokens.inFlight() {
					e.read(t, "creds/app")
					duringFetch.Add(1)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}()
		path := "creds/app"
		if i%2 == 0 {
			path = "static-creds/app"
		}
		tokens[e.read(t, path).Data["access_token"].(string)] = true
		e.settle(clock)
		close(done)
		wg.Wait()
	}
	status := e.status(t)
	require.Zero(t, counter(t, status, "reads_waited_on_upstream"), "no read waited on the slow upstream")
	require.Equal(t, uint64(1), counter(t, status, "cold_reads"))
	require.Equal(t, uint64(6), counter(t, status, "fetch_ahead_requests"))
	require.Zero(t, counter(t, status, "fetch_ahead_failures"))
	require.Equal(t, 7, e.fake.Hits(fakeupstream.EndpointToken), "one request per replacement")
	require.Positive(t, duringFetch.Load(), "reads were served while a fetch ahead was on the wire")
}

// A fetch ahead that fails leaves the current token in service, past its
// switch, while it is still safe (static-creds then says ttl 0, so agents
// come back in a second); the next try waits for the outage memory, and
// then one read starts it. Past the safe end a read waits, and is
// counted.
func TestFetchAhead_FailureKeepsServingWhileSafeAndRetriesUnderTheOutageMemory(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{TokenLifetime: 30 * time.Second})
	clock := useSimClock(e)
	e.configure(t, nil)
	e.role(t, "app", nil)
	first := e.read(t, "static-creds/app")
	token := first.Data["access_token"].(string)
	// 30 s: margin 3 s, hold 15 s: switch at 12 s, fetch ahead at 9.6 s,
	// safe until 25 s.
	require.Equal(t, int64(12), first.Data["ttl"])
	// Each failed fetch is tried MaxAttemptsLimit times by the client.
	a := upstream.MaxAttemptsLimit
	e.fake.InjectFault(fakeupstream.EndpointToken, fakeupstream.Fault{Status: http.StatusServiceUnavailable, Times: 2 * a})

	clock.advance(10 * time.Second) // the fetch ahead, armed by the first read, fails
	e.settle(clock)
	require.Equal(t, 1+a, e.fake.Hits(fakeupstream.EndpointToken))
	clock.advance(3 * time.Second) // past the switch, and past the 1 s outage memory
	for range 5 {
		resp := e.read(t, "static-creds/app")
		require.True(t, resp.Data["access_token"] == token, "the current token, still safe")
		require.Equal(t, int64(0), resp.Data["ttl"])
		e.settle(clock)
	}
	require.Equal(t, 1+2*a, e.fake.Hits(fakeupstream.EndpointToken), "one retry, which failed, then the memory (2 s) holds the next back")
	clock.advance(2100 * time.Millisecond)
	resp := e.read(t, "static-creds/app") // starts the retry, which works
	require.True(t, resp.Data["access_token"] == token)
	e.settle(clock)
	require.Equal(t, 2+2*a, e.fake.Hits(fakeupstream.EndpointToken))
	resp = e.read(t, "static-creds/app")
	require.True(t, resp.Data["access_token"] != token, "the next token, once it is there")
	require.Positive(t, resp.Data["ttl"])

	status := e.status(t)
	require.Zero(t, counter(t, status, "reads_waited_on_upstream"))
	require.Equal(t, uint64(2), counter(t, status, "fetch_ahead_failures"))
	require.Equal(t, uint64(3), counter(t, status, "fetch_ahead_requests"))

	// The upstream goes down for good: past the new token's safe end, a
	// read waits (and gets the 502).
	e.fake.InjectFault(fakeupstream.EndpointToken, fakeupstream.Fault{Status: http.StatusServiceUnavailable, Times: -1})
	clock.advance(30 * time.Second)
	e.settle(clock)
	_, err := e.do(t, logical.ReadOperation, "creds/app", nil)
	requireCoded(t, err, http.StatusBadGateway, "")
	require.Equal(t, uint64(1), counter(t, e.status(t), "reads_waited_on_upstream"))
}

// Only roles read in the current window are fetched ahead: a role read
// once gets one fetch ahead (for the window it was read in) and no more;
// a role never read gets none.
func TestFetchAhead_IdleRolesCostNothing(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{TokenLifetime: 30 * time.Second})
	clock := useSimClock(e)
	e.configure(t, nil)
	e.role(t, "read-once", nil)
	e.role(t, "never-read", nil)
	e.read(t, "creds/read-once")
	for range 20 {
		clock.advance(5 * time.Second)
		e.settle(clock)
	}
	require.Equal(t, 2, e.fake.Hits(fakeupstream.EndpointToken))
	require.Equal(t, uint64(1), counter(t, e.status(t), "fetch_ahead_requests"))
}

// rotate-role drops the shared token (and the next one, fetched ahead),
// revokes them by RFC 7009 where the config has a revocation_url, and
// the next read gets a new token.
func TestRotateRole_DropsAndRevokesTheSharedToken(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{TokenLifetime: 30 * time.Second})
	clock := useSimClock(e)
	cfg := e.fake.JWTPluginConfig("client_secret_basic")
	cfg["revocation_url"] = e.fake.JWTRevocationURL()
	e.writeConfig(t, cfg)
	e.role(t, "app", nil)
	old := e.read(t, "static-creds/app").Data["access_token"].(string)
	clock.advance(10 * time.Second) // the next token is fetched ahead
	e.settle(clock)
	require.Equal(t, 2, e.fake.Hits(fakeupstream.EndpointJWTToken))

	resp, err := e.do(t, logical.UpdateOperation, "rotate-role/app", nil)
	require.NoError(t, err)
	require.False(t, resp.IsError())
	require.Equal(t, map[string]any{"role": "app", "dropped": 2, "revoked": 2}, resp.Data)
	require.Empty(t, resp.Warnings)
	require.True(t, e.fake.TokenRevoked(old), "the dropped token was revoked upstream")
	fresh := e.read(t, "static-creds/app").Data["access_token"].(string)
	require.True(t, fresh != old)
	require.Equal(t, 3, e.fake.Hits(fakeupstream.EndpointJWTToken), "the next read fetched a new token")
	require.True(t, e.fake.TokenActive(fresh))
}

// Without a revocation_url the dropped token cannot be revoked: the
// answer says until when it stays valid.
func TestRotateRole_WithoutRevocationURLSaysTheTokenStaysValid(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)
	e.role(t, "app", nil)
	old := e.read(t, "creds/app").Data["access_token"].(string)
	resp, err := e.do(t, logical.UpdateOperation, "rotate-role/app", nil)
	require.NoError(t, err)
	require.Equal(t, map[string]any{"role": "app", "dropped": 1, "revoked": 0}, resp.Data)
	require.Len(t, resp.Warnings, 1)
	require.Contains(t, resp.Warnings[0], "stays valid upstream until it expires")
	require.True(t, e.read(t, "creds/app").Data["access_token"] != old)
	require.Equal(t, 2, e.fake.Hits(fakeupstream.EndpointToken))
	resp, err = e.do(t, logical.UpdateOperation, "rotate-role/nobody", nil)
	requireBadRequest(t, resp, err, "does not exist")
}

// inFlight says whether a fetch ahead is under way for any role.
func (c *tokenCache) inFlight() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.entries {
		if s.fetching {
			return true
		}
	}
	return false
}

// A fail-over (the plugin starting on another node) starts cold: the first
// read waits for a token, and the role is warm again after it.
func TestFetchAhead_FailOverStartsColdAndIsWarmAfterOneRead(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{TokenLifetime: 30 * time.Second})
	useSimClock(e)
	e.configure(t, nil)
	e.role(t, "app", nil)
	e.read(t, "static-creds/app")
	e.b = e.newBackend(t)
	clock := useSimClock(e)
	for range 40 {
		e.read(t, "static-creds/app")
		clock.advance(time.Second)
		e.settle(clock)
	}
	status := e.status(t)
	require.Equal(t, uint64(1), counter(t, status, "cold_reads"))
	require.Zero(t, counter(t, status, "reads_waited_on_upstream"))
	require.EqualValues(t, 2+counter(t, status, "fetch_ahead_requests"), e.fake.Hits(fakeupstream.EndpointToken))
}

// A write to another role between the arming read and the fetch ahead
// does not waste the fetched token: it is kept as the next one.
func TestFetchAhead_AnotherRolesChangeDoesNotDropTheNextToken(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{TokenLifetime: 30 * time.Second})
	clock := useSimClock(e)
	e.configure(t, nil)
	e.role(t, "app", nil)
	first := e.read(t, "static-creds/app").Data["access_token"].(string)
	e.role(t, "other", map[string]any{"ttl": "1m"})
	clock.advance(10 * time.Second) // the fetch ahead armed by the first read
	e.settle(clock)
	clock.advance(3 * time.Second) // past the switch
	resp := e.read(t, "static-creds/app")
	require.True(t, resp.Data["access_token"] != first, "the token fetched ahead")
	require.Equal(t, 2, e.fake.Hits(fakeupstream.EndpointToken))
}
