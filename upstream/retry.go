package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	// MaxAttemptsLimit caps Config.MaxAttempts: a few attempts ride out a
	// blip, more only add load to an upstream that is already failing.
	MaxAttemptsLimit = 3
	// DefaultRetryBackoff is the first wait between attempts when
	// Config.RetryBackoff is 0.
	DefaultRetryBackoff = 250 * time.Millisecond
	// maxRetryAfter bounds a Retry-After read as seconds, so a huge one
	// cannot overflow a time.Duration.
	maxRetryAfter = 24 * time.Hour
)

// answer is what the last attempt of an exchange got: an HTTP answer with
// its bounded body, or an error (from the network, or reading the body).
type answer struct {
	resp       *http.Response // nil when the exchange got no answer
	arrived    time.Time      // when resp's header came in
	body       []byte
	err        error
	attempts   int
	retryAfter time.Duration // from a 429 or 5xx, 0 when it sent none
}

// fill sets what every Error built from this answer carries.
func (a *answer) fill(e *Error) {
	e.Attempts = a.attempts
	if a.resp != nil {
		e.StatusCode = a.resp.StatusCode
		e.RetryAfter = a.retryAfter
	}
}

// send makes one exchange with a request newRequest builds afresh for
// each attempt. A repeatable exchange (one that does no harm done twice:
// a token request, a GET) is tried again, up to Config.MaxAttempts times,
// after a 429 or a 5xx that may pass, or a connection that failed without
// an answer; each wait is exponential backoff with jitter, or the
// upstream's Retry-After when that is longer, and is taken only when it
// ends before the context's deadline. The body of the answer is read and
// closed here.
func (c *HTTPClient) send(ctx context.Context, repeatable bool, newRequest func(context.Context) (*http.Request, error)) answer {
	limit := 1
	if repeatable {
		limit = c.cfg.MaxAttempts
	}
	for attempt := 1; ; attempt++ {
		a := c.attempt(ctx, newRequest)
		a.attempts = attempt
		if attempt >= limit || !retryable(ctx, a, repeatable) {
			return a
		}
		wait := max(c.backoff(attempt), a.retryAfter)
		if !fits(ctx, wait, c.cfg.Timeout) {
			return a
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return a
		case <-timer.C:
		}
	}
}

func (c *HTTPClient) attempt(ctx context.Context, newRequest func(context.Context) (*http.Request, error)) answer {
	req, err := newRequest(ctx)
	if err != nil {
		return answer{err: err}
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return answer{err: unwrapURLError(err)}
	}
	defer resp.Body.Close()
	a := answer{resp: resp, arrived: time.Now()}
	a.body, a.err = readBounded(resp.Body)
	if retryableStatus(resp.StatusCode) {
		a.retryAfter, _ = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	}
	return a
}

// retryable says whether another attempt may go better.
func retryable(ctx context.Context, a answer, repeatable bool) bool {
	if !repeatable || ctx.Err() != nil {
		return false
	}
	if a.resp != nil {
		return retryableStatus(a.resp.StatusCode)
	}
	return transient(a.err)
}

// retryableStatus is an answer that says "not now": too many requests, or
// a server error that may pass. 501 (not implemented), 505 and the like
// will not.
func retryableStatus(status int) bool {
	switch status {
	case http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusBadGateway,
		http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// transient is a failure to get an answer that another attempt may not
// meet: the connection refused, reset or closed before the answer. A
// certificate the config does not trust, a timeout (the whole budget is
// gone) or a cancellation will not pass, and are not retried.
func transient(err error) bool {
	var (
		verify    *tls.CertificateVerificationError
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
	)
	switch {
	case err == nil, errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &verify), errors.As(err, &unknownCA), errors.As(err, &hostname), errors.As(err, &invalid):
		return false
	}
	var timeout interface{ Timeout() bool }
	if errors.As(err, &timeout) && timeout.Timeout() {
		return false
	}
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// backoff is the wait after the given attempt: the base doubled for each
// attempt before, jittered over its upper half so that clients that
// failed together do not come back together.
func (c *HTTPClient) backoff(attempt int) time.Duration {
	base := c.cfg.RetryBackoff
	if base <= 0 {
		base = DefaultRetryBackoff
	}
	d := base << (attempt - 1)
	return d/2 + rand.N(d/2+1)
}

// fits says whether a wait ends before the context's deadline; without a
// deadline, a wait may be as long as one exchange may take.
func fits(ctx context.Context, wait, timeout time.Duration) bool {
	if deadline, ok := ctx.Deadline(); ok {
		return wait < time.Until(deadline)
	}
	return wait <= timeout
}

// parseRetryAfter reads a Retry-After header (RFC 9110 §10.2.3): a number
// of seconds or an HTTP date, at most maxRetryAfter.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseUint(v, 10, 64); err == nil {
		return time.Duration(min(n, uint64(maxRetryAfter/time.Second))) * time.Second, true
	} else if errors.Is(err, strconv.ErrRange) {
		return maxRetryAfter, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return min(max(t.Sub(now), 0), maxRetryAfter), true
	}
	return 0, false
}
