package mapsindoors

import (
	"sync"
	"time"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

// tokenCache keeps the last token fetched for each role in memory only:
// it is never written to storage (the creds read path must not write), and
// after a restart or fail-over it simply fills again.
type tokenCache struct {
	mu sync.Mutex
	// gen counts drops; a fetch that started before one must not put its
	// token back, since it was made with a config or role now gone.
	gen     uint64
	entries map[string]cachedToken
}

type cachedToken struct {
	// request fingerprints what the token was asked for (its scopes), so a
	// role whose request changed never gets a token made for the old one.
	request string
	token   *upstream.Token
}

func newTokenCache() *tokenCache {
	return &tokenCache{entries: map[string]cachedToken{}}
}

// get returns the role's token if it was made for this request, and the
// generation to hand back to put.
func (c *tokenCache) get(role, request string) (*upstream.Token, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[role]
	if !ok || e.request != request {
		return nil, c.gen
	}
	return e.token, c.gen
}

// put stores a token unless the cache was dropped since gen was read.
func (c *tokenCache) put(role, request string, tok *upstream.Token, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	c.entries[role] = cachedToken{request: request, token: tok}
}

func (c *tokenCache) dropRole(role string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.entries, role)
	c.gen++
}

func (c *tokenCache) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.entries = map[string]cachedToken{}
	c.gen++
}

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
