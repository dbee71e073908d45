package upstream

import (
	"bytes"
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

// exchange is the transport of one call to the upstream: a token request
// (made by golang.org/x/oauth2, through the HTTP client it is handed) or a
// call to the clientcredentials API. It gives each attempt Config.Timeout,
// tries a repeatable request again when the upstream lets it down, and
// keeps what the last attempt got (its status and Retry-After, when it
// arrived, what was read of its body), which an Error reports and
// x/oauth2's errors do not carry. An exchange serves one call, on that
// call's goroutine.
type exchange struct {
	c    *HTTPClient
	base http.RoundTripper
	// repeatable is a request that does no harm done twice: a token
	// request (at worst a token goes unused), a GET.
	repeatable bool

	attempts int
	resp     *http.Response // the answer the call goes on with; nil when none came
	arrived  time.Time      // when resp's header came in
	body     []byte         // what its reader read of resp's body, at most maxBodyBytes
	readErr  error          // why reading resp's body failed, when it did
}

func (c *HTTPClient) newExchange(repeatable bool) *exchange {
	return &exchange{c: c, base: c.http.Transport, repeatable: repeatable}
}

// client is an HTTP client that sends through rt (the exchange, or
// transports over it) and follows no redirect, as c's does.
func (x *exchange) client(rt http.RoundTripper) *http.Client {
	return &http.Client{Transport: rt, CheckRedirect: x.c.http.CheckRedirect}
}

// RoundTrip sends req, and, when it is repeatable, sends it again (its
// body from req.GetBody), up to Config.MaxAttempts times, after a 429 or a
// 5xx that may pass, or a connection that failed without an answer; each
// wait is exponential backoff with jitter, or the upstream's Retry-After
// when that is longer, and is taken only when it ends before the
// context's deadline.
func (x *exchange) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	limit := 1
	if x.repeatable && rewindable(req) {
		limit = x.c.cfg.MaxAttempts
	}
	for attempt := 1; ; attempt++ {
		x.attempts = attempt
		resp, err := x.try(req, attempt)
		if attempt >= limit || !retryable(ctx, resp, err) {
			return x.keep(resp), err
		}
		wait := max(x.c.backoff(attempt), retryAfter(resp, x.arrived))
		if !fits(ctx, wait, x.c.cfg.Timeout) {
			return x.keep(resp), err
		}
		resp = buffered(resp)
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return x.keep(resp), err
		case <-timer.C:
		}
	}
}

// try makes one attempt under its own Config.Timeout, which lasts until
// the answer's body is closed.
func (x *exchange) try(req *http.Request, attempt int) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(req.Context(), x.c.cfg.Timeout)
	out := req.WithContext(ctx)
	if attempt > 1 && req.GetBody != nil {
		body, err := req.GetBody()
		if err != nil {
			cancel()
			return nil, err
		}
		out.Body = body
	}
	resp, err := x.base.RoundTrip(out)
	if err != nil {
		cancel()
		return nil, err
	}
	x.arrived = time.Now()
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// keep makes resp the answer the call goes on with, and records what its
// reader reads of the body.
func (x *exchange) keep(resp *http.Response) *http.Response {
	if resp != nil {
		x.resp = resp
		resp.Body = &recordingBody{ReadCloser: resp.Body, x: x}
	}
	return resp
}

// fill sets what every Error of this exchange carries: the attempts, and
// the last answer's status and Retry-After.
func (x *exchange) fill(e *Error) {
	e.Attempts = x.attempts
	if x.resp != nil {
		e.StatusCode = x.resp.StatusCode
		e.RetryAfter = retryAfter(x.resp, x.arrived)
	}
}

// rewindable is a request whose body can be sent again.
func rewindable(req *http.Request) bool {
	return req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
}

// buffered reads a failed answer's body (bounded) and closes it, so its
// connection goes back to the pool during the wait, and the answer can
// still be the one the call goes on with.
func buffered(resp *http.Response) *http.Response {
	if resp == nil {
		return nil
	}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxBodyBytes))
	_ = resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(data))
	return resp
}

// cancelOnClose ends an attempt's context once its answer is read.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelOnClose) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// recordingBody keeps, in its exchange, what is read of the body (up to
// maxBodyBytes) and why reading it failed.
type recordingBody struct {
	io.ReadCloser
	x *exchange
}

func (b *recordingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if room := maxBodyBytes - len(b.x.body); room > 0 {
		b.x.body = append(b.x.body, p[:min(n, room)]...)
	}
	if err != nil && !errors.Is(err, io.EOF) {
		b.x.readErr = err
	}
	return n, err
}

// retryable says whether another attempt may go better.
func retryable(ctx context.Context, resp *http.Response, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	if resp != nil {
		return retryableStatus(resp.StatusCode)
	}
	return transient(err)
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
	return d/2 + rand.N(d/2+1) //nolint:gosec // G404: jitter spreads retries out; nothing depends on guessing it
}

// fits says whether a wait ends before the context's deadline; without a
// deadline, a wait may be as long as one exchange may take.
func fits(ctx context.Context, wait, timeout time.Duration) bool {
	if deadline, ok := ctx.Deadline(); ok {
		return wait < time.Until(deadline)
	}
	return wait <= timeout
}

// retryAfter is how long an answer asks to wait: its Retry-After, read on
// a 429 or a 5xx that may pass, 0 on any other answer or when it has none.
func retryAfter(resp *http.Response, now time.Time) time.Duration {
	if resp == nil || !retryableStatus(resp.StatusCode) {
		return 0
	}
	d, _ := parseRetryAfter(resp.Header.Get("Retry-After"), now)
	return d
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
