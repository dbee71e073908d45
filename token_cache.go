package mapsindoors

import (
	"sync"
	"time"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

// tokenCache keeps each role's shared token in memory only: it is never
// written to storage (the read paths must not write), and after a restart
// or fail-over it simply fills again. Beside the current token a role may
// hold the next one, fetched ahead of the switch (fetch_ahead.go), which
// every reader of this node moves on to at the same instant: the current
// token's switchAt.
type tokenCache struct {
	mu sync.Mutex
	// gen counts drops; a fetch that started before one must not put its
	// token back, since it was made with a config or role now gone.
	gen     uint64
	entries map[string]*roleTokens

	// after runs f once d has passed, and returns a func that stops it;
	// time.AfterFunc unless a test drives the timers with its own clock.
	after func(d time.Duration, f func()) (stop func() bool)
	// ahead counts the fetches ahead under way, so that a test can wait
	// for them as the upstream's answer would arrive in time.
	ahead sync.WaitGroup
}

// roleTokens is what a role has on this node.
type roleTokens struct {
	// request fingerprints what the tokens were asked for (their scopes),
	// so a role whose request changed never gets a token made for the old
	// one.
	request string
	cur     *sharedToken
	// next is the token fetched ahead, current from cur.switchAt on.
	next *sharedToken
	// seen is the token whose window a read has seen; active says whether
	// this node fetches ahead for that window (only the active node
	// does), decided once per window.
	seen   *sharedToken
	active bool
	// tried says a fetch ahead started for cur: only then may cur be
	// served past its switch while the next token is late.
	tried    bool
	fetching bool
	stop     func() bool // the armed fetch ahead's timer, if any
}

// sharedToken is a role's token and its schedule (lease.go).
type sharedToken struct {
	*upstream.Token
	tokenTimes
	// configGen is the config generation the token was fetched under.
	// Only a read that looked up that same generation may arm the fetch
	// ahead of its window: the fetch runs with the reader's client, and a
	// read that found an older config holds the replaced credential.
	configGen uint64
}

func newTokenCache() *tokenCache {
	return &tokenCache{
		entries: map[string]*roleTokens{},
		after: func(d time.Duration, f func()) func() bool {
			return time.AfterFunc(d, f).Stop
		},
	}
}

// generation is the generation to hand to install. A read takes it before
// it looks up its role and config, so any change to either after that
// makes install drop the token the read fetched with what it looked up.
func (c *tokenCache) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// aheadStep is what a read should do about fetching ahead.
type aheadStep int

const (
	aheadNothing aheadStep = iota
	// aheadDecide: the first read of the token's window; the caller
	// decides whether this node fetches ahead (activate).
	aheadDecide
	// aheadStart: a fetch ahead is due now, and this read claimed it.
	aheadStart
)

// lookup is the role's token to serve at now, nil when it has none that
// is safe to serve (warm then says that it had one, spent). It moves the
// role on to the next token once the current one's switch has come. With
// observe, from a read that looked up config generation configGen, it
// also says what the read should do about fetching ahead; without, or
// when the token was fetched under another config generation, it changes
// nothing but the switch.
func (c *tokenCache) lookup(role, request string, now time.Time, observe bool, configGen uint64) (tok *sharedToken, step aheadStep, warm bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.entries[role]
	if !ok || s.request != request || s.cur == nil {
		return nil, aheadNothing, false
	}
	if s.next != nil && !now.Before(s.cur.switchAt) {
		s.cur, s.next, s.tried = s.next, nil, false
	}
	cur := s.cur
	if !cur.leasable {
		// Remembered for its life, so that reads do not each ask again.
		if now.Before(cur.ExpiresAt) {
			return cur, aheadNothing, true
		}
		return nil, aheadNothing, false
	}
	switch {
	case now.Before(cur.switchAt):
	case s.tried && now.Before(cur.safeUntil):
		// The next token is late: the current one is still safe to hand
		// out, and reads go on without waiting.
	default:
		return nil, aheadNothing, true
	}
	if !observe || cur.configGen != configGen {
		return cur, aheadNothing, true
	}
	if s.seen != cur {
		s.seen, s.active = cur, false
		return cur, aheadDecide, true
	}
	if s.active && s.next == nil && !s.fetching && !now.Before(cur.aheadAt) {
		s.fetching, s.tried = true, true
		return cur, aheadStart, true
	}
	return cur, aheadNothing, true
}

// activate records whether this node fetches ahead in cur's window. When
// it does, it arms fetch to run at cur.aheadAt, or says to start it now
// when that has come. fetch is a read's, of config generation configGen;
// a read of another generation arms nothing.
func (c *tokenCache) activate(role string, cur *sharedToken, configGen uint64, active bool, now time.Time, fetch func(gen uint64)) aheadStep {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.entries[role]
	if !ok || s.cur != cur || s.seen != cur || !active || cur.aheadAt.IsZero() || cur.configGen != configGen {
		return aheadNothing
	}
	s.active = true
	if s.next != nil || s.fetching {
		return aheadNothing
	}
	if !now.Before(cur.aheadAt) {
		s.fetching, s.tried = true, true
		return aheadStart
	}
	if s.stop != nil {
		s.stop()
	}
	s.stop = c.after(cur.aheadAt.Sub(now), func() {
		if gen, ok := c.claim(role, cur, configGen); ok {
			c.ahead.Add(1)
			defer c.ahead.Done()
			fetch(gen)
		}
	})
	return aheadNothing
}

// claim starts the armed fetch ahead of cur's window, unless the role has
// moved on, has its next token, or is fetching it already, or the fetch
// was armed by a read of another config generation than cur's (its
// client is not cur's config's). It returns the generation to install
// the fetched token with: the role still holds cur, so neither the role
// nor the config changed since cur's window was armed, and a change from
// now on drops what the fetch brings.
func (c *tokenCache) claim(role string, cur *sharedToken, configGen uint64) (uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.entries[role]
	if !ok || s.cur != cur || !s.active || s.next != nil || s.fetching || cur.configGen != configGen {
		return 0, false
	}
	s.fetching, s.tried = true, true
	return c.gen, true
}

// fetched ends a fetch ahead of cur's window, whatever came of it.
func (c *tokenCache) fetched(role string, cur *sharedToken) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.entries[role]; ok && s.cur == cur {
		s.fetching = false
	}
}

// install keeps a token just fetched, unless the cache was dropped since
// gen was read: as the role's next token while its current one is still
// served, else as its current one.
func (c *tokenCache) install(role, request string, tok *sharedToken, gen uint64, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	s, ok := c.entries[role]
	if ok && s.request == request && s.cur != nil && s.cur.leasable && now.Before(s.cur.safeUntil) && tok.IssuedAt.After(s.cur.IssuedAt) {
		if s.next == nil || tok.IssuedAt.After(s.next.IssuedAt) {
			s.next = tok
		}
		return
	}
	if ok && s.stop != nil {
		s.stop()
	}
	c.entries[role] = &roleTokens{request: request, cur: tok}
}

// take drops the role's tokens and returns them, so that they can be
// revoked upstream.
func (c *tokenCache) take(role string) []*upstream.Token {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	s, ok := c.entries[role]
	if !ok {
		return nil
	}
	delete(c.entries, role)
	if s.stop != nil {
		s.stop()
	}
	var out []*upstream.Token
	for _, t := range []*sharedToken{s.cur, s.next} {
		if t != nil {
			out = append(out, t.Token)
		}
	}
	return out
}

func (c *tokenCache) dropRole(role string) { c.take(role) }

func (c *tokenCache) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.entries {
		if s.stop != nil {
			s.stop()
		}
	}
	c.entries = map[string]*roleTokens{}
	c.gen++
}
