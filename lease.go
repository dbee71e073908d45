package mapsindoors

import (
	"time"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

const (
	minSafetyMargin = 2 * time.Second
	maxSafetyMargin = time.Minute
)

// safetyMargin is how long before its token a lease ends: a tenth of the
// token's lifetime, at least 2 s (clock skew, the time the reply takes to
// reach the app) and at most a minute.
func safetyMargin(lifetime time.Duration) time.Duration {
	return min(max(lifetime/10, minSafetyMargin), maxSafetyMargin)
}

// leaseDuration is the longest lease tok can back at now: its remaining
// life less the safety margin, capped by the role's ttl when set, in whole
// seconds as Vault counts leases.
func leaseDuration(tok *upstream.Token, roleTTL time.Duration, now time.Time) time.Duration {
	lease := tok.ExpiresAt.Sub(now) - safetyMargin(tok.Lifetime())
	if roleTTL > 0 && roleTTL < lease {
		lease = roleTTL
	}
	return lease.Truncate(time.Second)
}

// reusable says whether a cached token still backs a useful lease: one as
// long as the role's ttl, or, when the token lives shorter than that, at
// least half of the token's lifetime. Past that a fresh token gives apps
// (and Vault Agent, which re-reads at ~90 % of the lease) longer leases.
func reusable(tok *upstream.Token, roleTTL time.Duration, now time.Time) bool {
	want := tok.Lifetime() / 2
	if roleTTL > 0 && roleTTL < want {
		want = roleTTL
	}
	return leaseDuration(tok, roleTTL, now) >= max(want, time.Second)
}
