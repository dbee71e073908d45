package mapsindoors

import (
	"context"
	"errors"
	"time"
)

// Fetching ahead: a role's next token is fetched before its current one's
// switch, so that reads of a warm role (creds and static-creds alike)
// never wait on the upstream.
//
//   - Only roles read in the current token's window: the first read of a
//     window arms one fetch at the token's aheadAt (lease.go); a role
//     nobody reads costs nothing.
//   - One request per role, shared with any read that waits meanwhile
//     (the same singleflight key as a waiting read's).
//   - A failed fetch is remembered in the outage memory like any other;
//     reads keep getting the current token while it is safe (until its
//     safeUntil) and try again, one at a time, once the memory runs out.
//   - The switch is the current token's switchAt for every reader of the
//     node (tokenCache.lookup).
//   - Only the active node fetches ahead: a performance standby (or a
//     performance secondary's non-local mount) fetches when a read needs
//     a token, as before, and a node that becomes active starts cold and
//     is warm again after one read.

// stepAhead does what lookup said a read should do about fetching ahead.
func (b *backend) stepAhead(r *roleRead, request string, cur *sharedToken, step aheadStep) {
	fetch := func(gen uint64) {
		ahead := *r
		ahead.cacheGen = gen
		b.fetchAhead(&ahead, request, cur)
	}
	if step == aheadDecide {
		// Once per window and role: each System call is a round trip to
		// Vault for an external plugin.
		step = b.tokens.activate(r.name, cur, r.st.gen, b.WriteSafeReplicationState(), b.now(), fetch)
	}
	if step != aheadStart {
		return
	}
	if b.outages.check(r.name, r.st.gen, b.now()) != nil {
		// The last try failed: the next read tries once the memory runs
		// out, and until then the current token is served while safe.
		b.tokens.fetched(r.name, cur)
		return
	}
	b.tokens.ahead.Add(1)
	go func() {
		defer b.tokens.ahead.Done()
		fetch(r.cacheGen)
	}()
}

// fetchAhead fetches the token that follows cur, and keeps it as the
// role's next one.
func (b *backend) fetchAhead(r *roleRead, request string, cur *sharedToken) {
	defer b.tokens.fetched(r.name, cur)
	_, err := b.fetchShared(context.Background(), r, request, true)
	var remembered *backedOffError
	switch {
	case err == nil:
	case errors.As(err, &remembered) && remembered.replay:
		// Not tried: a recent failure is remembered.
	default:
		b.metrics.aheadFailed()
		b.Logger().Warn("fetching the role's next token ahead failed; reads keep the current token while it is safe",
			"mount", r.mount, "role", r.name, "safe_until", cur.safeUntil.UTC().Format(time.RFC3339), "error", err)
	}
}
