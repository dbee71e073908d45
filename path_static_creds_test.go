package mapsindoors

import (
	"math/rand/v2"
	"net/http"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

// simClock is a clock a test moves by hand, with the timers of the token
// cache (fetching ahead) on it: moving it runs the timers that came due.
type simClock struct {
	fixedClock
	mu     sync.Mutex
	timers []*simTimer
	// running are the timers' funcs that have started.
	running sync.WaitGroup
}

type simTimer struct {
	at      time.Time
	f       func()
	stopped bool
}

// useSimClock puts the env's backend on a simulated clock: its lease and
// token schedules, the times of the tokens it gets (restamped on arrival)
// and its fetch-ahead timers. Call it before the config is written.
func useSimClock(e *testEnv) *simClock {
	c := &simClock{fixedClock: fixedClock{t: time.Now()}}
	e.b.now = c.Now
	newClient := e.b.newClient
	e.b.newClient = func(cfg upstream.Config) (upstream.Client, error) {
		client, err := newClient(cfg)
		return &restampedClient{Client: client, now: c.Now}, err
	}
	e.b.tokens.after = func(d time.Duration, f func()) func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		t := &simTimer{at: c.Now().Add(d), f: f}
		c.timers = append(c.timers, t)
		return func() bool {
			c.mu.Lock()
			defer c.mu.Unlock()
			was := !t.stopped
			t.stopped = true
			return was
		}
	}
	return c
}

// advance moves the clock by d and starts the timers that came due, each
// on its own goroutine as time.AfterFunc would.
func (c *simClock) advance(d time.Duration) {
	c.Add(d)
	c.mu.Lock()
	now := c.Now()
	var due []*simTimer
	kept := c.timers[:0]
	for _, t := range c.timers {
		switch {
		case t.stopped:
		case !now.Before(t.at):
			t.stopped = true
			due = append(due, t)
		default:
			kept = append(kept, t)
		}
	}
	c.timers = kept
	c.mu.Unlock()
	for _, t := range due {
		c.running.Add(1)
		go func() {
			defer c.running.Done()
			t.f()
		}()
	}
}

// settle waits until the fetches ahead under way have landed, as they
// would before the switch when the upstream answers within the lead
// (a fifth of the token's span, at least 1 s).
func (e *testEnv) settle(c *simClock) {
	c.running.Wait()
	e.b.tokens.ahead.Wait()
}

func (e *testEnv) status(t testing.TB) map[string]any {
	t.Helper()
	return e.read(t, "status").Data
}

func counter(t testing.TB, status map[string]any, name string) uint64 {
	t.Helper()
	v, ok := status[name].(uint64)
	require.True(t, ok, "status has no counter %s", name)
	return v
}

func TestStaticCreds_SharedTokenWithoutALease(t *testing.T) {
	cases := []struct {
		name             string
		roleTTL          string
		wantTTL, wantRot int64 // at the first read
	}{
		// An hour's token, no ttl: current for half its life less the
		// one minute margin.
		{"no ttl", "0", 29 * 60, 29 * 60},
		// A 5 minute ttl: replaced when 5 minutes and the margin are left.
		{"5m ttl", "5m", 54 * 60, 54 * 60},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, fakeupstream.Options{TokenLifetime: time.Hour})
			clock := useSimClock(e)
			e.configure(t, nil)
			e.role(t, "app", map[string]any{"ttl": tc.roleTTL})
			before := e.storageDump(t)

			resp := e.read(t, "static-creds/app")
			require.Nil(t, resp.Secret, "no lease")
			require.ElementsMatch(t, []string{"access_token", "token_type", "expires_in", "expires_at", "scope", "role",
				"ttl", "rotation_period", "last_vault_rotation"}, keys(resp.Data))
			require.Equal(t, tc.wantTTL, resp.Data["ttl"])
			require.Equal(t, tc.wantRot, resp.Data["rotation_period"])
			last, err := time.Parse(time.RFC3339Nano, resp.Data["last_vault_rotation"].(string))
			require.NoError(t, err)
			require.WithinDuration(t, clock.Now(), last, time.Millisecond)
			token := resp.Data["access_token"].(string)
			require.True(t, e.fake.TokenLive(token))

			// creds hands out the same token, with a lease.
			creds := e.read(t, "creds/app")
			requireSameToken(t, token, creds.Data["access_token"], "creds hands out the static-creds token")
			require.NotNil(t, creds.Secret)

			// ttl counts down in whole seconds, rounded up; rotation_period
			// stays.
			clock.advance(10*time.Second + 300*time.Millisecond)
			again := e.read(t, "static-creds/app")
			requireSameToken(t, token, again.Data["access_token"], "a re-read before the switch gets the same token")
			require.Equal(t, tc.wantTTL-10, again.Data["ttl"])
			require.Equal(t, tc.wantRot, again.Data["rotation_period"])
			require.Equal(t, resp.Data["last_vault_rotation"], again.Data["last_vault_rotation"])

			require.Equal(t, 1, e.fake.Hits(fakeupstream.EndpointToken))
			requireQuietlyEqual(t, before, e.storageDump(t), "a read writes nothing")
			status := e.status(t)
			require.Equal(t, map[string]uint64{"creds": 1, "static-creds": 2}, status["reads"])
		})
	}
}

func TestStaticCreds_PerLeaseRolesAreRefusedWithTheReason(t *testing.T) {
	t.Run("token_per_lease", func(t *testing.T) {
		e := newTestEnv(t, fakeupstream.Options{})
		e.configure(t, nil)
		e.role(t, "own", map[string]any{"token_per_lease": true})
		resp, err := e.do(t, logical.ReadOperation, "static-creds/own", nil)
		requireBadRequest(t, resp, err, "token_per_lease")
		require.Contains(t, resp.Error().Error(), "read mapsindoors/creds/own instead")
		resp, err = e.do(t, logical.UpdateOperation, "rotate-role/own", nil)
		requireBadRequest(t, resp, err, "vault lease revoke -prefix mapsindoors/creds/own")
		require.Zero(t, e.fake.Hits(fakeupstream.EndpointToken))
	})
	t.Run("cameramanager", func(t *testing.T) {
		e := newTestEnv(t, fakeupstream.Options{})
		e.writeConfig(t, e.fake.PluginConfig("cameramanager"))
		e.role(t, "cam", nil)
		resp, err := e.do(t, logical.ReadOperation, "static-creds/cam", nil)
		requireBadRequest(t, resp, err, "the cameramanager provider logs each token out when its lease ends")
		require.Zero(t, e.fake.Hits(fakeupstream.EndpointCameraManagerToken))
	})
}

func TestStaticCreds_UnknownRoleMissingConfigAndTooShortTokens(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{TokenLifetime: 3 * time.Second})
	resp, err := e.do(t, logical.ReadOperation, "static-creds/app", nil)
	requireBadRequest(t, resp, err, "does not exist")
	e.role(t, "app", nil)
	resp, err = e.do(t, logical.ReadOperation, "static-creds/app", nil)
	requireBadRequest(t, resp, err, "config")
	e.configure(t, nil)
	// 3 s tokens back a 1 s lease, but are current for no time at all.
	_, err = e.do(t, logical.ReadOperation, "static-creds/app", nil)
	requireCoded(t, err, http.StatusBadGateway, "too short to share without a lease")
}

// The timing contract, with readers as Vault Agent (re-reads at ttl + 1 s)
// and the Vault Secrets Operator (ttl + 0.5 s + up to 0.15 s of jitter)
// make them, on the active node (fetching ahead) and on a performance
// standby (no fetching ahead): every re-read gets a newer token than the
// reader had, and the token it had is still live then, by at least the
// safety margin. creds readers (Agent: at 85-95 % of the lease) always
// hold a live token too.
func TestStaticCreds_TimingContract(t *testing.T) {
	cases := []struct {
		lifetime time.Duration
		roleTTL  string
	}{
		{30 * time.Second, "0"},
		{30 * time.Second, "1s"},
		{5 * time.Minute, "0"},
		{5 * time.Minute, "10s"},
		{time.Hour, "5m"},
		{time.Hour, "2m"},
	}
	for _, standby := range []bool{false, true} {
		for _, tc := range cases {
			name := tc.lifetime.String() + "_ttl_" + tc.roleTTL
			if standby {
				name += "_standby"
			}
			t.Run(name, func(t *testing.T) {
				var tune []func(*logical.BackendConfig)
				if standby {
					tune = append(tune, asPerformanceStandby)
				}
				e := newTestEnv(t, fakeupstream.Options{TokenLifetime: tc.lifetime}, tune...)
				clock := useSimClock(e)
				e.configure(t, nil)
				e.role(t, "app", map[string]any{"ttl": tc.roleTTL})
				replacements := runReaders(t, e, clock, tc.lifetime, 6)
				require.GreaterOrEqual(t, replacements, 5)
				status := e.status(t)
				if standby {
					require.Zero(t, counter(t, status, "fetch_ahead_requests"), "a standby does not fetch ahead")
				} else {
					require.Zero(t, counter(t, status, "reads_waited_on_upstream"), "no read of a warm role waits on the active node")
					require.Positive(t, counter(t, status, "fetch_ahead_requests"))
				}
				require.Equal(t, uint64(1), counter(t, status, "cold_reads"))
			})
		}
	}
}

func asPerformanceStandby(conf *logical.BackendConfig) {
	sys := *conf.System.(*logical.StaticSystemView)
	sys.ReplicationStateVal = consts.ReplicationPerformanceStandby
	conf.System = &sys
}

// simReader is a reader of the simulation: what it holds, and when it
// comes back.
type simReader struct {
	static  bool
	vso     bool
	at      time.Time
	token   string
	expires time.Time
	issued  string
}

// runReaders runs 30 static-creds readers (Agents and VSOs) and 10 creds
// readers (Agents) on the simulated clock until the role's token has been
// replaced `until` times, checks the contract at every re-read, and
// returns the replacements seen.
func runReaders(t *testing.T, e *testEnv, clock *simClock, lifetime time.Duration, until int) int {
	t.Helper()
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	start := clock.Now()
	var readers []*simReader
	for i := range 40 {
		readers = append(readers, &simReader{
			static: i < 30, vso: i%2 == 1,
			at: start.Add(time.Duration(rng.Int64N(int64(lifetime / 2)))),
		})
	}
	seen := map[string]bool{}
	margin := safetyMargin(lifetime)
	for len(seen) <= until {
		sort.Slice(readers, func(i, j int) bool { return readers[i].at.Before(readers[j].at) })
		r := readers[0]
		clock.advance(r.at.Sub(clock.Now()))
		e.settle(clock)
		now := clock.Now()
		path := "creds/app"
		if r.static {
			path = "static-creds/app"
		}
		resp := e.read(t, path)
		token := resp.Data["access_token"].(string)
		expires, err := time.Parse(time.RFC3339, resp.Data["expires_at"].(string))
		require.NoError(t, err)
		seen[token] = true
		if r.token != "" {
			// expires_at is in whole seconds, rounded down.
			require.Greater(t, r.expires.Sub(now), margin-time.Second,
				"a %s reader's token must still be live, by the safety margin, when it comes back", path)
		}
		if r.static {
			if r.token != "" {
				// Compared without require.NotEqual, which would print the token.
				require.True(t, r.token != token, "a static-creds reader that comes back after ttl gets a newer token")
				require.Greater(t, resp.Data["last_vault_rotation"].(string), r.issued)
			}
			ttl := time.Duration(resp.Data["ttl"].(int64)) * time.Second
			require.Positive(t, resp.Data["rotation_period"].(int64))
			delay := time.Second // Vault Agent
			if r.vso {
				delay = 500*time.Millisecond + time.Duration(rng.Int64N(int64(150*time.Millisecond)))
			}
			r.issued = resp.Data["last_vault_rotation"].(string)
			r.at = now.Add(ttl + delay)
		} else {
			lease := resp.Secret.TTL
			require.True(t, now.Add(lease).Before(expires.Add(time.Second)), "a lease never outlives its token")
			r.at = now.Add(time.Duration(float64(lease) * (0.85 + 0.1*rng.Float64())))
		}
		r.token, r.expires = token, expires
	}
	return len(seen) - 1
}
