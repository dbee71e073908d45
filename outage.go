package mapsindoors

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

const (
	// outageMemoryMin and outageMemoryMax bound how long a failed token
	// request is remembered for its role: 1 s after the first failure,
	// doubling with each failure in a row, at most 30 s. Every read of the
	// role meanwhile gets the remembered failure at once, so however many
	// agents read during an outage, the upstream sees about one request per
	// role each time the memory runs out, not one per read. The first read
	// after it runs out tries again, and a success forgets it.
	outageMemoryMin = time.Second
	outageMemoryMax = 30 * time.Second
	// outageRetryAfterMax caps how long a Retry-After from the upstream
	// can make the memory last, so that a broken or hostile upstream cannot
	// shut a role for hours.
	outageRetryAfterMax = 5 * time.Minute
)

// outageMemory remembers, per role, the last failed token request of the
// current config. A config change resets it and a role change forgets the
// role's entry: the new credential or request deserves a try at once.
// Entries carry the config generation they were made under, so a request
// that failed with an old config never holds back reads of a new one.
type outageMemory struct {
	mu      sync.Mutex
	entries map[string]outageEntry
}

type outageEntry struct {
	gen uint64
	failureRecord
}

func newOutageMemory() *outageMemory {
	return &outageMemory{entries: map[string]outageEntry{}}
}

// check is the role's remembered failure while it is not due for another
// try, else nil.
func (m *outageMemory) check(role string, gen uint64, now time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[role]
	if !ok || e.gen != gen || !now.Before(e.until) {
		return nil
	}
	return outageError(e.failureRecord, now, true)
}

// record remembers a failed token request, unless it failed because the
// caller gave up, and returns the error to answer with, which says when
// the next try is due.
func (m *outageMemory) record(role string, gen uint64, err error, now time.Time) error {
	if errors.Is(err, context.Canceled) || alreadyRemembered(err) {
		// A login the login memory held back, or refused and remembered,
		// is remembered there.
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	count := 1
	if e, ok := m.entries[role]; ok && e.gen == gen {
		count = e.count + 1
	}
	wait := growing(count, outageMemoryMin, outageMemoryMax)
	if ra := min(retryAfter(err), outageRetryAfterMax); ra > wait {
		wait = ra
	}
	rec := failureRecord{err: err, count: count, until: now.Add(wait)}
	m.entries[role] = outageEntry{gen: gen, failureRecord: rec}
	return outageError(rec, now, false)
}

// succeeded forgets the role's failures once a request has worked.
func (m *outageMemory) succeeded(role string, gen uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.entries[role]; ok && e.gen == gen {
		delete(m.entries, role)
	}
}

func (m *outageMemory) forget(role string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.entries, role)
}

func (m *outageMemory) reset() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.entries = map[string]outageEntry{}
}

func outageError(r failureRecord, now time.Time, replay bool) error {
	return &backedOffError{err: r.err, until: r.until, now: now, replay: replay,
		what: "to spare the upstream, the role's next token request"}
}

// retryAfter is how long the upstream asked to wait before the next
// request (an HTTP Retry-After), or 0.
func retryAfter(err error) time.Duration {
	var ue *upstream.Error
	if errors.As(err, &ue) {
		return ue.RetryAfter
	}
	return 0
}
