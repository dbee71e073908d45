package mapsindoors

import (
	"context"
	"errors"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

// latencyWindow is how many recent token requests the latency percentiles
// are taken over: enough for a stable p99, small enough to sort on a read.
const latencyWindow = 1024

// The upstream calls status counts, by the operation of the client.
//
//nolint:gosec // G101: operation names, not credentials.
const (
	opToken        = "token"
	opRefresh      = "refresh"
	opLogout       = "logout"
	opCreateSecret = "create_client_secret"
	opDeleteSecret = "delete_client_secret"
	opListSecrets  = "list_client_secrets"
)

// Outcomes, as status and the events name them.
const (
	outcomeSucceeded = "succeeded"
	outcomeFailed    = "failed"
	// A revoked lease whose token could not be revoked upstream: it
	// expires there by itself.
	outcomeExpires   = "expires_upstream"
	outcomeLoggedOut = "logged_out"
)

// metrics are the counters status shows, for this mount since its backend
// started (the plugin process, a reload, or the mount's enable). External
// plugins cannot feed Vault's /sys/metrics, so they are kept in memory and
// read from a path an operator polls; nothing here is ever stored, and
// nothing here is secret.
type metrics struct {
	since time.Time

	// The creds read path touches only these atomics on a cache hit.
	cacheHits     atomic.Uint64
	cacheMisses   atomic.Uint64
	leasesIssued  atomic.Uint64
	credsFailures atomic.Uint64
	// Reads by path, and what fetching ahead did (fetch_ahead.go).
	credsReads       atomic.Uint64
	staticCredsReads atomic.Uint64
	coldReads        atomic.Uint64
	waitedReads      atomic.Uint64
	aheadRequests    atomic.Uint64
	aheadFailures    atomic.Uint64

	// mu guards the maps and the latency ring, which change on upstream
	// calls, rotations and revocations, never on a cache hit.
	mu       sync.Mutex
	requests map[string]uint64
	// failures counts failed upstream calls by operation, then by HTTP
	// status ("401") or "timeout" / "no_response" when none came back.
	failures map[string]map[string]uint64
	// latencies is a ring of the last token requests' durations.
	latencies     [latencyWindow]time.Duration
	latencyCount  uint64
	rotations     map[string]uint64
	revocations   map[string]uint64
	verifications map[string]uint64
	deleted       uint64
}

func newMetrics(now time.Time) *metrics {
	return &metrics{
		since:         now.UTC(),
		requests:      map[string]uint64{},
		failures:      map[string]map[string]uint64{},
		rotations:     map[string]uint64{},
		revocations:   map[string]uint64{},
		verifications: map[string]uint64{},
	}
}

// The paths that read a role's token, as reads counts them.
const (
	pathKindCreds       = "creds"
	pathKindStaticCreds = "static-creds"
)

func (m *metrics) read(kind string) {
	if kind == pathKindStaticCreds {
		m.staticCredsReads.Add(1)
	} else {
		m.credsReads.Add(1)
	}
}

// readWaited counts a read that waited on the upstream for a shared
// token: one that found the role's token spent (warm), which fetching
// ahead is there to prevent, or one that found none at all on this node
// (cold: the first read of a role, after a change, a rotate-role or a
// fail-over).
func (m *metrics) readWaited(warm bool) {
	if warm {
		m.waitedReads.Add(1)
	} else {
		m.coldReads.Add(1)
	}
}

func (m *metrics) aheadRequested() { m.aheadRequests.Add(1) }
func (m *metrics) aheadFailed()    { m.aheadFailures.Add(1) }

func (m *metrics) cacheHit()  { m.cacheHits.Add(1) }
func (m *metrics) cacheMiss() { m.cacheMisses.Add(1) }

// upstreamCall counts one call to the upstream; token requests (and
// refreshes) also go into the latency ring.
func (m *metrics) upstreamCall(op string, took time.Duration, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.requests[op]++
	if op == opToken || op == opRefresh {
		m.latencies[m.latencyCount%latencyWindow] = took
		m.latencyCount++
	}
	if err != nil {
		if m.failures[op] == nil {
			m.failures[op] = map[string]uint64{}
		}
		m.failures[op][failureStatus(err)]++
	}
}

func (m *metrics) count(into map[string]uint64, outcome string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	into[outcome]++
}

func (m *metrics) rotation(outcome string)     { m.count(m.rotations, outcome) }
func (m *metrics) revocation(outcome string)   { m.count(m.revocations, outcome) }
func (m *metrics) verification(outcome string) { m.count(m.verifications, outcome) }

func (m *metrics) secretDeleted() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.deleted++
}

// failureStatus is how a failed upstream call is counted: the HTTP status
// the upstream answered with, or why there was none.
func failureStatus(err error) string {
	var ue *upstream.Error
	if errors.As(err, &ue) && ue.StatusCode != 0 {
		return strconv.Itoa(ue.StatusCode)
	}
	var timeout interface{ Timeout() bool }
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &timeout) && timeout.Timeout()) {
		return "timeout"
	}
	return "no_response"
}

// snapshot is what status shows of the counters. Every map is a copy.
func (m *metrics) snapshot() map[string]any {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := min(m.latencyCount, latencyWindow)
	recent := slices.Clone(m.latencies[:n])
	slices.Sort(recent)
	failures := make(map[string]map[string]uint64, len(m.failures))
	for op, byStatus := range m.failures {
		failures[op] = cloneCounts(byStatus)
	}
	return map[string]any{
		"since":                    m.since.Format(time.RFC3339),
		"upstream_requests":        cloneCounts(m.requests),
		"upstream_failures":        failures,
		"upstream_latency_p50_ms":  percentileMillis(recent, 0.50),
		"upstream_latency_p99_ms":  percentileMillis(recent, 0.99),
		"upstream_latency_samples": n,
		"token_cache_hits":         m.cacheHits.Load(),
		"token_cache_misses":       m.cacheMisses.Load(),
		"leases_issued":            m.leasesIssued.Load(),
		"token_request_failures":   m.credsFailures.Load(),
		"reads": map[string]uint64{
			pathKindCreds:       m.credsReads.Load(),
			pathKindStaticCreds: m.staticCredsReads.Load(),
		},
		"reads_waited_on_upstream": m.waitedReads.Load(),
		"cold_reads":               m.coldReads.Load(),
		"fetch_ahead_requests":     m.aheadRequests.Load(),
		"fetch_ahead_failures":     m.aheadFailures.Load(),
		"rotations":                cloneCounts(m.rotations),
		"revocations":              cloneCounts(m.revocations),
		"verifications":            cloneCounts(m.verifications),
		"previous_secrets_deleted": m.deleted,
	}
}

func cloneCounts(in map[string]uint64) map[string]uint64 {
	out := make(map[string]uint64, len(in))
	for k, v := range in {
		out[k] = v
	}
	return out
}

// percentileMillis is the nearest-rank percentile of sorted durations in
// milliseconds, to a tenth; 0 when there are none.
func percentileMillis(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return millis(sorted[min(max(i, 0), len(sorted)-1)])
}

// millis is a duration in milliseconds, to a tenth.
func millis(d time.Duration) float64 {
	return math.Round(float64(d)/float64(time.Millisecond)*10) / 10
}

// measuredClient counts every call the backend makes to the upstream and
// times its token requests. It wraps the client the backend's newClient
// builds, so creds reads, verify, rotation and revocation are all counted
// without each of them knowing.
type measuredClient struct {
	upstream.Client
	m *metrics
}

// measure wraps a client factory so that its clients are counted.
func (m *metrics) measure(newClient func(upstream.Config) (upstream.Client, error)) func(upstream.Config) (upstream.Client, error) {
	return func(c upstream.Config) (upstream.Client, error) {
		client, err := newClient(c)
		if err != nil {
			return nil, err
		}
		return &measuredClient{Client: client, m: m}, nil
	}
}

func (c *measuredClient) Token(ctx context.Context, req upstream.TokenRequest) (*upstream.Token, error) {
	start := time.Now()
	tok, err := c.Client.Token(ctx, req)
	c.m.upstreamCall(opToken, time.Since(start), err)
	return tok, err
}

func (c *measuredClient) Refresh(ctx context.Context, refreshToken string, req upstream.TokenRequest) (*upstream.Token, error) {
	start := time.Now()
	tok, err := c.Client.Refresh(ctx, refreshToken, req)
	c.m.upstreamCall(opRefresh, time.Since(start), err)
	return tok, err
}

func (c *measuredClient) Logout(ctx context.Context, accessToken string) error {
	start := time.Now()
	err := c.Client.Logout(ctx, accessToken)
	c.m.upstreamCall(opLogout, time.Since(start), err)
	return err
}

func (c *measuredClient) CreateClientSecret(ctx context.Context, description string) (*upstream.ClientSecret, error) {
	start := time.Now()
	cs, err := c.Client.CreateClientSecret(ctx, description)
	c.m.upstreamCall(opCreateSecret, time.Since(start), err)
	return cs, err
}

func (c *measuredClient) DeleteClientSecret(ctx context.Context, id string) error {
	start := time.Now()
	err := c.Client.DeleteClientSecret(ctx, id)
	c.m.upstreamCall(opDeleteSecret, time.Since(start), err)
	return err
}

func (c *measuredClient) ListClientSecrets(ctx context.Context) ([]upstream.ClientSecret, error) {
	start := time.Now()
	list, err := c.Client.ListClientSecrets(ctx)
	c.m.upstreamCall(opListSecrets, time.Since(start), err)
	return list, err
}
