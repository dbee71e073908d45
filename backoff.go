package mapsindoors

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

const (
	// passwordBackoffMin and passwordBackoffMax bound how long a refused
	// password login is remembered: 10 s after the first refusal, doubling
	// with each refusal in a row, at most 10 min. Reads in between answer
	// at once and never reach the upstream, so a wrong password costs the
	// account a handful of failed logins an hour rather than one per read,
	// which is what locks accounts. Writing the config forgets it.
	passwordBackoffMin = 10 * time.Second
	passwordBackoffMax = 10 * time.Minute
)

// failureRecord is a failure remembered so that reads do not repeat it
// against the upstream until it is due again.
type failureRecord struct {
	err   error
	count int       // failures in a row
	until time.Time // no new attempt before this
}

// growing is the wait after the count-th failure in a row: first doubled
// count-1 times, at most limit.
func growing(count int, first, limit time.Duration) time.Duration {
	d := first
	for i := 1; i < count && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

// backedOffError is a remembered failure, answered without calling the
// upstream. It unwraps to the upstream's error, so it is answered as that
// (a 502), with what the caller can do about it.
type backedOffError struct {
	err   error
	until time.Time
	now   time.Time
	// what is the subject of the message ("the password login"), and
	// advice what the operator can do meanwhile.
	what, advice string
	// replay marks a failure answered from memory, not one that just
	// happened: it is logged at debug, or an outage would flood the log.
	replay bool
}

func (e *backedOffError) Error() string {
	return fmt.Sprintf("%v; %s is not tried again before %s (in %s)%s",
		e.err, e.what, e.until.UTC().Format(time.RFC3339), e.until.Sub(e.now).Round(time.Second), e.advice)
}

func (e *backedOffError) Unwrap() error { return e.err }

// refusedByUpstream says whether the upstream refused what was sent (a
// 4xx other than 429) rather than failing to answer: a refused refresh
// token is dead, and a refused password will be refused again.
func refusedByUpstream(err error) bool {
	var ue *upstream.Error
	return errors.As(err, &ue) && ue.StatusCode >= 400 && ue.StatusCode < 500 && ue.StatusCode != http.StatusTooManyRequests
}

// maxLoginMemory bounds how many credentials the login memory holds. A
// mount has one credential at a time, and a handful while config writes
// and rotations try new ones; past this, entries whose wait is over go
// first, then those due soonest.
const maxLoginMemory = 64

// loginMemory remembers, per credential (not per role, nor per path), what
// the upstream last said against logging in with it: a refused password,
// and a Retry-After. Every client the backend builds asks it before a login
// (guardedClient), so creds of every role, verify, client-secrets, rotate-
// root and key rotations all hold back alike: a verify poll makes no more
// password logins with a refused password than a creds read does. A new
// credential (the right password, written) is another entry and is tried
// at once.
type loginMemory struct {
	now     func() time.Time
	mu      sync.Mutex
	entries map[credentialKey]*loginEntry
}

// credentialKey identifies a credential at its token endpoint: a hash, so
// the memory holds no secret of its own.
type credentialKey [sha256.Size]byte

type loginEntry struct {
	// refused is the last refused password login, while the next one has
	// not succeeded.
	refused *failureRecord
	// quiet is the last Retry-After the upstream sent for this credential.
	quiet *failureRecord
}

func newLoginMemory(now func() time.Time) *loginMemory {
	return &loginMemory{now: now, entries: map[credentialKey]*loginEntry{}}
}

func keyOf(c upstream.Config) credentialKey {
	h := sha256.New()
	for _, part := range []string{c.TokenURL, string(c.GrantType), string(c.AuthMethod), c.ClientID, c.ClientSecret, c.Username, c.Password} {
		_, _ = fmt.Fprintf(h, "%d:%s;", len(part), part)
	}
	var k credentialKey
	h.Sum(k[:0])
	return k
}

// held is the remembered answer that holds back a login with key, or nil.
// A refused password holds back logins only (login is true); a Retry-After
// every request that logs in, a refresh too.
func (m *loginMemory) held(key credentialKey, login bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.entries[key]
	if e == nil {
		return nil
	}
	now := m.now()
	if r := e.refused; login && r != nil && now.Before(r.until) {
		return refusedLoginError(r, now, true)
	}
	if r := e.quiet; r != nil && now.Before(r.until) {
		return quietError(r, now)
	}
	return nil
}

// record remembers what err says against logging in with key, and returns
// the error to answer with. refusable is whether a refusal of err is a
// refused password (a password login, not a refresh or an API call).
func (m *loginMemory) record(key credentialKey, err error, refusable bool) error {
	if err == nil || alreadyRemembered(err) {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	e := m.entry(key, now)
	if ra := min(retryAfter(err), outageRetryAfterMax); ra > 0 {
		e.quiet = &failureRecord{err: err, until: now.Add(ra)}
	}
	if !refusable || !refusedByUpstream(err) {
		return err
	}
	count := 1
	if e.refused != nil {
		count = e.refused.count + 1
	}
	e.refused = &failureRecord{err: err, count: count, until: now.Add(growing(count, passwordBackoffMin, passwordBackoffMax))}
	return refusedLoginError(e.refused, now, false)
}

// succeeded forgets a refused password once a login with it worked.
func (m *loginMemory) succeeded(key credentialKey) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.entries[key]; e != nil {
		e.refused = nil
	}
}

// entry is key's entry, made room for and added if need be.
func (m *loginMemory) entry(key credentialKey, now time.Time) *loginEntry {
	if e := m.entries[key]; e != nil {
		return e
	}
	for len(m.entries) >= maxLoginMemory {
		var drop credentialKey
		var dropUntil time.Time
		first := true
		for k, e := range m.entries {
			if until := e.until(); first || until.Before(dropUntil) {
				drop, dropUntil, first = k, until, false
			}
		}
		delete(m.entries, drop)
	}
	e := &loginEntry{}
	m.entries[key] = e
	return e
}

// until is when the entry holds nothing back any more.
func (e *loginEntry) until() time.Time {
	var t time.Time
	for _, r := range []*failureRecord{e.refused, e.quiet} {
		if r != nil && r.until.After(t) {
			t = r.until
		}
	}
	return t
}

func refusedLoginError(r *failureRecord, now time.Time, replay bool) error {
	return &backedOffError{err: r.err, until: r.until, now: now, replay: replay,
		what:   "the upstream refused the password login, and to keep the account from being locked out the next login",
		advice: "; write the right password to config to try at once"}
}

func quietError(r *failureRecord, now time.Time) error {
	return &backedOffError{err: r.err, until: r.until, now: now, replay: true,
		what: "as the upstream's Retry-After asks, the next request with this credential"}
}

// alreadyRemembered says whether err is a failure the login memory answered
// from memory or has just remembered,
// and is not remembered again.
func alreadyRemembered(err error) bool {
	var b *backedOffError
	return errors.As(err, &b)
}

// guard wraps every client newClient builds in a guardedClient.
func (m *loginMemory) guard(newClient func(upstream.Config) (upstream.Client, error)) func(upstream.Config) (upstream.Client, error) {
	return func(c upstream.Config) (upstream.Client, error) {
		client, err := newClient(c)
		if err != nil {
			return nil, err
		}
		return &guardedClient{Client: client, m: m, key: keyOf(c), password: c.GrantType == upstream.GrantPassword}, nil
	}
}

// guardedClient asks the login memory before each request that logs in,
// and tells it what came of it. A logout does not log in and is left alone.
type guardedClient struct {
	upstream.Client
	m        *loginMemory
	key      credentialKey
	password bool
}

func (c *guardedClient) Token(ctx context.Context, req upstream.TokenRequest) (*upstream.Token, error) {
	if err := c.m.held(c.key, true); err != nil {
		return nil, err
	}
	tok, err := c.Client.Token(ctx, req)
	if err != nil {
		return nil, c.m.record(c.key, err, c.password)
	}
	c.m.succeeded(c.key)
	return tok, nil
}

func (c *guardedClient) Refresh(ctx context.Context, refreshToken string, req upstream.TokenRequest) (*upstream.Token, error) {
	if err := c.m.held(c.key, false); err != nil {
		return nil, err
	}
	tok, err := c.Client.Refresh(ctx, refreshToken, req)
	return tok, c.m.record(c.key, err, false)
}

// The clientcredentials API's calls log in first: a refused password or a
// Retry-After holds them back too. What they answer is remembered only for
// its Retry-After, as their refusals are not all the login's.

func (c *guardedClient) CreateClientSecret(ctx context.Context, description string) (*upstream.ClientSecret, error) {
	if err := c.m.held(c.key, true); err != nil {
		return nil, err
	}
	s, err := c.Client.CreateClientSecret(ctx, description)
	return s, c.m.record(c.key, err, false)
}

func (c *guardedClient) DeleteClientSecret(ctx context.Context, id string) error {
	if err := c.m.held(c.key, true); err != nil {
		return err
	}
	return c.m.record(c.key, c.Client.DeleteClientSecret(ctx, id), false)
}

func (c *guardedClient) ListClientSecrets(ctx context.Context) ([]upstream.ClientSecret, error) {
	if err := c.m.held(c.key, true); err != nil {
		return nil, err
	}
	list, err := c.Client.ListClientSecrets(ctx)
	return list, c.m.record(c.key, err, false)
}
