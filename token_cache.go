package mapsindoors

import (
	"sync"

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

// generation is the generation to hand to put. A read takes it before it
// looks up its role and config, so any change to either after that makes
// put drop the token the read fetched with what it looked up.
func (c *tokenCache) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// get returns the role's token if it was made for this request.
func (c *tokenCache) get(role, request string) *upstream.Token {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[role]
	if !ok || e.request != request {
		return nil
	}
	return e.token
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
