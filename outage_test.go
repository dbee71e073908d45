package mapsindoors

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

// readMany reads creds/<role> from many goroutines at once and returns
// how many reads failed and how many got a token.
func (e *testEnv) readMany(t testing.TB, role string, readers, each int) (failed, served int) {
	t.Helper()
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for range each {
				resp, err := e.b.HandleRequest(context.Background(), &logical.Request{
					Operation: logical.ReadOperation, Path: "creds/" + role, Storage: e.storage, MountPoint: "mapsindoors/",
				})
				mu.Lock()
				if err == nil && resp != nil && !resp.IsError() {
					served++
				} else {
					failed++
				}
				mu.Unlock()
			}
		}()
	}
	close(start)
	wg.Wait()
	return failed, served
}

// During an outage a thousand agents keep reading. A failed token request
// is remembered per role for a short, growing time and shared by every
// reader, so the upstream sees a few requests a second, not one per read;
// once the upstream is back and the memory has run out, the first read
// gets a token.
func TestOutage_FailuresAreRememberedNotAmplified(t *testing.T) {
	for _, provider := range []string{"mapsindoors", "cameramanager"} {
		t.Run(provider, func(t *testing.T) {
			e := newTestEnv(t, fakeupstream.Options{})
			clock := &fixedClock{t: time.Now()}
			e.b.now = clock.Now
			e.writeConfig(t, e.fake.PluginConfig(provider))
			e.role(t, "app", nil)
			e.role(t, "other", nil)
			ep := fakeupstream.EndpointToken
			if provider == "cameramanager" {
				ep = fakeupstream.EndpointCameraManagerToken
			}
			e.fake.InjectFault(ep, fakeupstream.Fault{Status: 503, Code: "temporarily_unavailable", Times: -1})

			// The clock stands still: all of this is within the memory.
			failed, served := e.readMany(t, "app", 1000, 3)
			require.Equal(t, 3000, failed)
			require.Zero(t, served)
			// One read's worth of requests: it retries a 503 a few times.
			perRead := upstream.MaxAttemptsLimit
			require.Equal(t, perRead, e.fake.Hits(ep), "3000 reads during an outage reached the upstream more than once")

			// A remembered failure says what failed and when the next try is.
			_, err := e.do(t, logical.ReadOperation, "creds/app", nil)
			requireCoded(t, err, http.StatusBadGateway, "HTTP 503")
			requireCoded(t, err, http.StatusBadGateway, "not tried again before")

			// Per role: another role makes its own request.
			_, err = e.do(t, logical.ReadOperation, "creds/other", nil)
			requireCoded(t, err, http.StatusBadGateway, "HTTP 503")
			require.Equal(t, 2*perRead, e.fake.Hits(ep))

			// When the memory runs out one request goes; failing again, the
			// next wait is longer.
			clock.Add(outageMemoryMin + 10*time.Millisecond)
			e.readMany(t, "app", 100, 2)
			require.Equal(t, 3*perRead, e.fake.Hits(ep))
			clock.Add(outageMemoryMin + 10*time.Millisecond)
			e.readMany(t, "app", 100, 2)
			require.Equal(t, 3*perRead, e.fake.Hits(ep), "the second wait is longer than the first")

			// The upstream recovers: the first read after the memory runs
			// out gets a token.
			e.fake.ClearFaults()
			clock.Add(outageMemoryMax)
			token := e.read(t, "creds/app").Data["access_token"].(string)
			require.True(t, e.fake.TokenLive(token))
		})
	}
}

// A config or role change forgets what was remembered about the old one.
func TestOutage_ChangesForgetRememberedFailures(t *testing.T) {
	cases := []struct {
		name   string
		change func(t *testing.T, e *testEnv)
	}{
		{"role written", func(t *testing.T, e *testEnv) { e.role(t, "app", map[string]any{"ttl": "5m"}) }},
		{"config written", func(t *testing.T, e *testEnv) { e.writeConfig(t, map[string]any{"request_timeout": "20s"}) }},
		{"config invalidated", func(_ *testing.T, e *testEnv) { e.b.invalidate(context.Background(), configStoragePath) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, fakeupstream.Options{})
			e.b.now = (&fixedClock{t: time.Now()}).Now
			e.configure(t, nil)
			e.role(t, "app", nil)
			e.fake.InjectFault(fakeupstream.EndpointToken, fakeupstream.Fault{Status: 500, Times: -1})
			_, err := e.do(t, logical.ReadOperation, "creds/app", nil)
			requireCoded(t, err, http.StatusBadGateway, "HTTP 500")
			_, err = e.do(t, logical.ReadOperation, "creds/app", nil)
			requireCoded(t, err, http.StatusBadGateway, "HTTP 500")
			perRead := upstream.MaxAttemptsLimit // the read retried the 500
			require.Equal(t, perRead, e.fake.Hits(fakeupstream.EndpointToken), "the second read was answered from memory")

			e.fake.ClearFaults()
			tc.change(t, e)
			e.read(t, "creds/app")
			require.Equal(t, perRead+1, e.fake.Hits(fakeupstream.EndpointToken))
		})
	}
}

func TestGrowing_DoublesUpToItsLimit(t *testing.T) {
	cases := []struct {
		count int
		want  time.Duration
	}{
		{1, time.Second}, {2, 2 * time.Second}, {5, 16 * time.Second},
		{6, 30 * time.Second}, {7, 30 * time.Second}, {100, 30 * time.Second},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprint(tc.count), func(t *testing.T) {
			require.Equal(t, tc.want, growing(tc.count, time.Second, 30*time.Second))
		})
	}
}

// An upstream that asks for a pause with Retry-After gets it: the failure
// is remembered that long, not just the short default.
func TestOutage_RetryAfterIsHonoured(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	clock := &fixedClock{t: time.Now()}
	e.b.now = clock.Now
	// A 20 s pause does not fit in a 5 s request: the read fails at once
	// and says so, rather than retrying.
	e.configure(t, map[string]any{"request_timeout": "5s"})
	e.role(t, "app", nil)
	e.fake.InjectFault(fakeupstream.EndpointToken, fakeupstream.Fault{Status: 429, Code: "slow_down", RetryAfter: "20", Times: -1})

	_, err := e.do(t, logical.ReadOperation, "creds/app", nil)
	requireCoded(t, err, http.StatusBadGateway, "retry after 20s")
	hits := e.fake.Hits(fakeupstream.EndpointToken)
	e.fake.ClearFaults()

	clock.Add(10 * time.Second) // past the default memory, within Retry-After
	_, err = e.do(t, logical.ReadOperation, "creds/app", nil)
	requireCoded(t, err, http.StatusBadGateway, "HTTP 429")
	require.Equal(t, hits, e.fake.Hits(fakeupstream.EndpointToken), "the upstream asked for 20 s of quiet")

	clock.Add(11 * time.Second)
	e.read(t, "creds/app")
	require.Equal(t, hits+1, e.fake.Hits(fakeupstream.EndpointToken))
}

// The outage memory's bounds as README promises them, in figures (not read
// from the code's constants): 1 s after the first failure, doubling with
// each one in a row up to 30 s; a Retry-After is honored up to 5 minutes;
// a failure under another config generation holds nothing back, and a
// success forgets.
func TestOutageMemory_PromisedBounds(t *testing.T) {
	now := time.Now()
	m := newOutageMemory()
	outage := &upstream.Error{Op: "token request", StatusCode: 503}
	at := now
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second,
		16 * time.Second, 30 * time.Second, 30 * time.Second} {
		require.Error(t, m.record("app", 7, outage, at), "failure %d", i+1)
		require.Error(t, m.check("app", 7, at.Add(want-time.Millisecond)), "failure %d: held for %s", i+1, want)
		require.NoError(t, m.check("app", 7, at.Add(want)), "failure %d: and no longer", i+1)
		require.NoError(t, m.check("app", 8, at), "another config generation is not held back")
		require.NoError(t, m.check("other", 7, at), "nor another role")
		at = at.Add(want)
	}
	m.succeeded("app", 7)
	require.Error(t, m.record("app", 7, outage, at))
	require.Error(t, m.check("app", 7, at.Add(999*time.Millisecond)), "after a success, 1 s again")
	require.NoError(t, m.check("app", 7, at.Add(time.Second)))

	slow := &upstream.Error{Op: "token request", StatusCode: 429, RetryAfter: 48 * time.Hour}
	require.Error(t, m.record("slow", 7, slow, now))
	require.Error(t, m.check("slow", 7, now.Add(5*time.Minute-time.Millisecond)))
	require.NoError(t, m.check("slow", 7, now.Add(5*time.Minute)), "a Retry-After holds at most 5 minutes")
}
