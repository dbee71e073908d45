package mapsindoors

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

// status counts what this mount did since it started, each counter moved
// by the request that does the thing it counts.
func TestStatus_CountsWhatTheMountDid(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	fresh := e.read(t, "status").Data
	require.Equal(t, false, fresh["configured"])
	require.Equal(t, 0.0, fresh["upstream_latency_p50_ms"])
	require.Equal(t, uint64(0), fresh["upstream_latency_samples"])

	e.configure(t, map[string]any{"previous_secret_grace": "1h"})
	e.role(t, "app", nil)
	e.read(t, "creds/app") // miss: one token request
	e.read(t, "creds/app") // hit
	e.read(t, "creds/app") // hit
	e.b.tokens.reset()
	e.fake.InjectFault(fakeupstream.EndpointToken, fakeupstream.Fault{Status: 401, Code: "invalid_client"})
	_, err := e.do(t, logical.ReadOperation, "creds/app", nil) // miss, failed
	require.Error(t, err)
	e.b.outages.reset()          // as a config write would: the failure is not remembered
	mi := e.read(t, "creds/app") // miss
	_, err = e.revoke(t, mi.Secret)
	require.NoError(t, err)

	_, err = e.rotate(t) // succeeds; the old secret waits out its grace
	require.NoError(t, err)
	e.fake.InjectFault(fakeupstream.EndpointCreateSecret, fakeupstream.Fault{Status: 500})
	_, err = e.rotate(t)
	require.Error(t, err)
	require.Equal(t, true, e.read(t, "verify").Data["ok"])
	e.fake.InjectFault(fakeupstream.EndpointToken, fakeupstream.Fault{Status: 503, Times: -1})
	require.Equal(t, false, e.read(t, "verify").Data["ok"])
	e.fake.ClearFaults()

	got := e.read(t, "status").Data
	require.Equal(t, true, got["configured"])
	require.Equal(t, uint64(2), got["token_cache_hits"])
	require.Equal(t, uint64(3), got["token_cache_misses"])
	require.Equal(t, uint64(4), got["leases_issued"])
	require.Equal(t, uint64(1), got["token_request_failures"])
	require.Equal(t, map[string]uint64{outcomeSucceeded: 1, outcomeFailed: 1}, got["rotations"])
	require.Equal(t, map[string]uint64{outcomeExpires: 1}, got["revocations"])
	require.Equal(t, map[string]uint64{outcomeSucceeded: 1, outcomeFailed: 1}, got["verifications"])
	require.Equal(t, 1, got["pending_deletions"], "the replaced secret is in its grace")
	require.Equal(t, 0, got["pending_deletions_due"])
	require.Equal(t, uint64(0), got["previous_secrets_deleted"])

	// Every token request the fake saw went through the counters: creds
	// reads, the rotations' logins with the new secret, and verify. The
	// counters count a call once; the failing verify's 503 was retried.
	requests := got["upstream_requests"].(map[string]uint64)
	retried := upstream.MaxAttemptsLimit - 1
	require.EqualValues(t, e.fake.Hits(fakeupstream.EndpointToken)-countedInside(e)-retried, requests[opToken])
	require.Equal(t, uint64(2), requests[opCreateSecret])
	failures := got["upstream_failures"].(map[string]map[string]uint64)
	require.Equal(t, uint64(1), failures[opToken]["401"])
	require.Equal(t, uint64(1), failures[opToken]["503"])
	require.Equal(t, uint64(1), failures[opCreateSecret]["500"])
	require.Equal(t, requests[opToken], got["upstream_latency_samples"])
	p50, p99 := got["upstream_latency_p50_ms"].(float64), got["upstream_latency_p99_ms"].(float64)
	require.Positive(t, p99)
	require.LessOrEqual(t, p50, p99)
	since, err := time.Parse(time.RFC3339, got["since"].(string))
	require.NoError(t, err)
	require.WithinDuration(t, time.Now(), since, time.Minute)

	// Logouts count by outcome, and a deleted replaced secret is counted.
	e.fake.ClearFaults()
	e.settlePending(t) // another account: the old one's leftovers are settled first
	e.writeConfig(t, e.fake.PluginConfig("cameramanager"))
	e.role(t, "cam", nil)
	cam := e.read(t, "creds/cam")
	e.fake.InjectFault(fakeupstream.EndpointCameraManagerLogout, fakeupstream.Fault{Status: 503})
	_, err = e.revoke(t, cam.Secret)
	require.Error(t, err)
	_, err = e.revoke(t, cam.Secret)
	require.NoError(t, err)
	got = e.read(t, "status").Data
	require.Equal(t, map[string]uint64{outcomeExpires: 1, outcomeFailed: 1, outcomeLoggedOut: 1}, got["revocations"])
	after := got["upstream_requests"].(map[string]uint64)
	require.Equal(t, requests[opToken]+1, after[opToken], "the cam read's password login")
	require.Equal(t, uint64(2), after[opLogout])
	require.Equal(t, uint64(1), got["upstream_failures"].(map[string]map[string]uint64)[opLogout]["503"])
}

// countedInside is the token requests the upstream client makes on its own,
// behind the calls the counters see: each clientcredentials call logs in
// first.
func countedInside(e *testEnv) int {
	return e.fake.Hits(fakeupstream.EndpointCreateSecret) + e.fake.Hits(fakeupstream.EndpointListSecrets) +
		e.fake.Hits(fakeupstream.EndpointDeleteSecret)
}

func TestStatus_PendingDeletionsThatAreDue(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	clock := &fixedClock{t: time.Now()}
	e.b.now = clock.Now
	e.configure(t, map[string]any{"previous_secret_grace": "10m"})
	_, err := e.rotate(t)
	require.NoError(t, err)
	got := e.read(t, "status").Data
	require.Equal(t, 1, got["pending_deletions"])
	require.Equal(t, 0, got["pending_deletions_due"])
	clock.Add(11 * time.Minute)
	got = e.read(t, "status").Data
	require.Equal(t, 1, got["pending_deletions_due"])

	e.rollback(t) // the periodic function deletes it
	got = e.read(t, "status").Data
	require.Equal(t, 0, got["pending_deletions"])
	require.Equal(t, uint64(1), got["previous_secrets_deleted"])
}

func TestMetrics_LatencyPercentilesOverABoundedWindow(t *testing.T) {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	cases := []struct {
		name     string
		samples  []time.Duration
		p50, p99 float64
		n        uint64
	}{
		{"none", nil, 0, 0, 0},
		{"one", []time.Duration{ms(7)}, 7, 7, 1},
		{"sub-millisecond", []time.Duration{1500 * time.Microsecond, 250 * time.Microsecond}, 0.3, 1.5, 2},
		{"hundred", seq(1, 100, ms), 50, 99, 100},
		// The first 1000 samples are slow and fall out of the window.
		{"window keeps the last", append(repeat(ms(900), 1000), seq(1, latencyWindow, ms)...), 512, 1014, latencyWindow},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := newMetrics(time.Now())
			for _, d := range tc.samples {
				m.upstreamCall(opToken, d, nil)
			}
			got := m.snapshot()
			require.Equal(t, tc.p50, got["upstream_latency_p50_ms"])
			require.Equal(t, tc.p99, got["upstream_latency_p99_ms"])
			require.Equal(t, tc.n, got["upstream_latency_samples"])
			require.Equal(t, uint64(len(tc.samples)), got["upstream_requests"].(map[string]uint64)[opToken])
		})
	}
}

func seq(from, to int, unit func(int) time.Duration) []time.Duration {
	var out []time.Duration
	for i := from; i <= to; i++ {
		out = append(out, unit(i))
	}
	return out
}

func repeat(d time.Duration, n int) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = d
	}
	return out
}

func TestMetrics_FailureStatus(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"http status", &upstream.Error{Op: "token request", StatusCode: 401, Code: "invalid_client"}, "401"},
		{"wrapped http status", fmt.Errorf("create the new client secret: %w", &upstream.Error{StatusCode: 500}), "500"},
		{"deadline", &upstream.Error{Op: "token request", Err: context.DeadlineExceeded}, "timeout"},
		{"net timeout", &upstream.Error{Err: &net.DNSError{IsTimeout: true}}, "timeout"},
		{"refused", &upstream.Error{Err: errors.New("connect: connection refused")}, "no_response"},
		{"not an upstream error", errors.New("boom"), "no_response"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, failureStatus(tc.err))
		})
	}
}

// A suspended entry (the stored secret's id, written back) is not deleted
// while it is stored, so it is not due: a monitor that alerts on
// pending_deletions_due > 0 would otherwise alert for as long as the
// operator keeps that secret.
func TestStatus_ASuspendedPendingDeletionIsNotDue(t *testing.T) {
	e, clock, s0 := rotatedOnce(t, "1h") // S1 stored; S0 due at T+1h
	e.writeConfig(t, map[string]any{"client_secret": s0.ClientSecret, "client_secret_id": s0.ClientSecretID})
	clock.Add(2 * time.Hour)

	got := e.read(t, "status").Data
	require.Equal(t, 1, got["pending_deletions"], "the entry is kept")
	require.Equal(t, 0, got["pending_deletions_due"], "but it is not due while it is the stored secret")
	e.rollback(t)
	require.True(t, e.fake.SecretWorks(s0.ClientSecret), "and nothing deleted it")
}

// A deletion that failed and waits for its next attempt is still due: it
// is past its grace and not deleted, which is what a monitor alerts on.
func TestStatus_AFailedDeletionWaitingForItsNextAttemptIsStillDue(t *testing.T) {
	e, clock, s0 := rotatedOnce(t, "1h")
	e.fake.InjectFault(fakeupstream.EndpointDeleteSecret, fakeupstream.Fault{Status: 403, Times: -1})
	clock.Add(2 * time.Hour)
	for range 4 { // the first three failures are retried at once
		e.rollback(t)
	}

	stored := e.storedConfig(t)
	require.Len(t, stored.PendingDeletions, 1)
	require.Positive(t, stored.PendingDeletions[0].Attempts, "the delete was tried and failed")
	require.False(t, stored.hasDueDeletions(clock.Now()), "it waits for its next attempt")
	require.Equal(t, 1, e.read(t, "status").Data["pending_deletions_due"])
	require.True(t, e.fake.SecretWorks(s0.ClientSecret))
}
