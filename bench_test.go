package mapsindoors

import (
	"context"
	"fmt"
	"io"
	"math"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/internal/latency"
	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

// quietLog keeps a benchmark's log out of memory: a read logs at debug,
// and a benchmark makes millions of them.
func quietLog(conf *logical.BackendConfig) {
	conf.Logger = hclog.New(&hclog.LoggerOptions{Output: io.Discard, Level: hclog.Info})
}

func credsRequest(e *testEnv, role string) *logical.Request {
	return &logical.Request{Operation: logical.ReadOperation, Path: "creds/" + role, Storage: e.storage, MountPoint: "mapsindoors/"}
}

// BenchmarkCredsRead is one creds read in-process against the fake, with
// the role's token cached (a hit: no upstream request, no storage round
// trip) and dropped before each read (a miss: one token request over TLS
// to the fake on loopback), with the median and 99th percentile latency.
func BenchmarkCredsRead(b *testing.B) {
	for _, warm := range []bool{true, false} {
		name := "cache_miss"
		if warm {
			name = "cache_hit"
		}
		b.Run(name, func(b *testing.B) {
			e := newTestEnv(b, fakeupstream.Options{}, quietLog)
			e.configure(b, nil)
			e.role(b, "app", nil)
			req := credsRequest(e, "app")
			ctx := context.Background()
			if _, err := e.b.HandleRequest(ctx, req); err != nil {
				b.Fatal(err)
			}
			before := e.fake.Hits(fakeupstream.EndpointToken)
			var lat latency.Recorder
			b.ReportAllocs()
			reads := 0
			for b.Loop() {
				reads++
				if !warm {
					e.b.tokens.reset()
				}
				start := time.Now()
				resp, err := e.b.HandleRequest(ctx, req)
				lat.Add(time.Since(start))
				if err != nil || resp.IsError() {
					b.Fatal(fmt.Sprint(err, resp.Error()))
				}
			}
			b.StopTimer()
			hits := e.fake.Hits(fakeupstream.EndpointToken) - before
			b.ReportMetric(float64(hits)/float64(reads), "upstream-requests/op")
			lat.Report(b, time.Nanosecond)
			if warm && hits != 0 || !warm && hits != reads {
				b.Fatalf("%d upstream requests for %d reads", hits, reads)
			}
		})
	}
}

// BenchmarkCredsSteadyReads is reads spread over time as agents make them:
// roles with a 5 minute ttl against tokens that live an hour, one read
// every 3.6 s of a simulated clock, round robin over 10 or 100 roles (each
// role read every 36 s or every 6 min). It reports the upstream token
// requests per 1,000 reads: what token reuse spares the upstream.
func BenchmarkCredsSteadyReads(b *testing.B) {
	for _, roles := range []int{10, 100} {
		b.Run(fmt.Sprintf("%d_roles", roles), func(b *testing.B) {
			e := newTestEnv(b, fakeupstream.Options{TokenLifetime: time.Hour}, quietLog)
			clock := &fixedClock{t: time.Now()}
			e.b.now = clock.Now
			// Tokens arrive stamped with the machine's clock; restamp them
			// with the simulated one.
			newClient := e.b.newClient
			e.b.newClient = func(c upstream.Config) (upstream.Client, error) {
				client, err := newClient(c)
				return &restampedClient{Client: client, now: clock.Now}, err
			}
			e.configure(b, nil)
			reqs := make([]*logical.Request, roles)
			for i := range roles {
				e.role(b, fmt.Sprintf("r%d", i), map[string]any{"ttl": "5m"})
				reqs[i] = credsRequest(e, fmt.Sprintf("r%d", i))
			}
			before := e.fake.Hits(fakeupstream.EndpointToken)
			reads := 0
			for b.Loop() {
				clock.Add(3600 * time.Millisecond)
				resp, err := e.b.HandleRequest(context.Background(), reqs[reads%roles])
				if err != nil || resp.IsError() {
					b.Fatal(fmt.Sprint(err, resp.Error()))
				}
				reads++
			}
			hits := e.fake.Hits(fakeupstream.EndpointToken) - before
			b.ReportMetric(1000*float64(hits)/float64(reads), "upstream-requests/1000-reads")
			// A token serves its role until an hour less the margin (1 min)
			// and the ttl (5 min) is left, and the next is fetched no sooner
			// than a lead (1 min) before that: at most one request per role
			// per 53 simulated minutes, after each role's first.
			simulated := time.Duration(reads) * 3600 * time.Millisecond
			if bound := roles * (1 + int(simulated/(53*time.Minute))); hits > bound || hits < roles {
				b.Fatalf("%d upstream requests for %d reads of %d roles over %s: want %d to %d", hits, reads, roles, simulated, roles, bound)
			}
		})
	}
}

// BenchmarkCredsOutage reads one role from many goroutines while its
// token endpoint answers 503 to everything, and reports how many requests
// reached the upstream per second: the failure memory (outageMemoryMin,
// growing to outageMemoryMax) keeps it near one per second at first and
// fewer later, however many reads there are.
func BenchmarkCredsOutage(b *testing.B) {
	for _, provider := range []string{"mapsindoors", "cameramanager"} {
		b.Run(provider, func(b *testing.B) {
			e := newTestEnv(b, fakeupstream.Options{}, quietLog)
			e.writeConfig(b, e.fake.PluginConfig(provider))
			e.role(b, "app", nil)
			ep := tokenEndpoint(provider)
			e.fake.InjectFault(ep, fakeupstream.Fault{Status: 503, Times: -1})
			req := credsRequest(e, "app")
			b.SetParallelism(16)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					r := *req
					if _, err := e.b.HandleRequest(context.Background(), &r); err == nil {
						b.Error("a read succeeded during the outage")
						return
					}
				}
			})
			elapsed := b.Elapsed().Seconds()
			hits := e.fake.Hits(ep)
			b.ReportMetric(float64(hits)/elapsed, "upstream-requests/s")
			b.ReportMetric(float64(b.N)/elapsed, "reads/s")
			// The outage memory lets one try (of up to MaxAttemptsLimit
			// attempts) through per outageMemoryMin at the most, however
			// many reads there are.
			tries := 1 + int(math.Ceil(b.Elapsed().Seconds()/outageMemoryMin.Seconds()))
			if bound := tries * upstream.MaxAttemptsLimit; hits > bound {
				b.Fatalf("%d upstream requests in %s of outage (%d reads): want at most %d", hits, b.Elapsed(), b.N, bound)
			}
		})
	}
}

// restampedClient moves the times of the tokens it gets onto another clock.
type restampedClient struct {
	upstream.Client
	now func() time.Time
}

func (c *restampedClient) Token(ctx context.Context, req upstream.TokenRequest) (*upstream.Token, error) {
	tok, err := c.Client.Token(ctx, req)
	if err != nil {
		return nil, err
	}
	shift := c.now().Sub(tok.IssuedAt)
	tok.IssuedAt, tok.ExpiresAt = tok.IssuedAt.Add(shift), tok.ExpiresAt.Add(shift)
	return tok, nil
}
