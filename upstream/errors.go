package upstream

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Error is a failed upstream exchange. Its text names the operation, the
// endpoint (without query or user info), the HTTP status and the OAuth2
// error code, and never a credential or a token.
type Error struct {
	Op          string
	URL         string
	StatusCode  int
	Code        string
	Description string
	Err         error
	// Attempts is how many times the exchange was tried.
	Attempts int
	// RetryAfter is how long the upstream asked to wait (its Retry-After
	// header, from a 429 or 5xx), so a caller can hold off that long.
	RetryAfter time.Duration
	// Hint, when set, says what to check on the client's side: with
	// private_key_jwt a refused client authentication is about the key
	// registration, aud and alg (assertion.go).
	Hint string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Op)
	if e.URL != "" {
		b.WriteString(" to ")
		b.WriteString(e.URL)
	}
	b.WriteString(" failed")
	if e.Attempts > 1 {
		fmt.Fprintf(&b, " after %d attempts", e.Attempts)
	}
	if e.StatusCode != 0 {
		fmt.Fprintf(&b, ": HTTP %d", e.StatusCode)
	}
	if e.Code != "" {
		fmt.Fprintf(&b, ", OAuth2 error %q", e.Code)
	}
	if e.Description != "" {
		fmt.Fprintf(&b, ": %s", e.Description)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, "; retry after %s, as the upstream's Retry-After asks", e.RetryAfter.Round(time.Second))
	}
	if e.Hint != "" {
		fmt.Fprintf(&b, "; %s", e.Hint)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// setOAuth2Error sets the code and description of an OAuth2 error answer
// (RFC 6749 §5.2), with every credential out and both bounded. A code
// that is not one RFC 6749 allows is dropped, and the description says so.
func (e *Error) setOAuth2Error(r *redactor, code, description string) {
	e.Description = r.text(description)
	var valid bool
	if e.Code, valid = r.code(code); !valid {
		e.Description = strings.TrimSuffix("the answer's error code is not a valid OAuth2 error code; "+e.Description, "; ")
	}
}

// IsInvalidClient reports whether the upstream refused the client's
// credentials: the stored secret is wrong, expired or deleted.
func IsInvalidClient(err error) bool {
	var e *Error
	return errors.As(err, &e) && (e.Code == "invalid_client" || e.StatusCode == 401)
}

// IsPermanent reports whether err is an answer the upstream will give
// again however often it is asked: a redirect (which no client here
// follows), or a 4xx or 5xx other than those that say "not now" (408,
// 429, 500, 502, 503, 504). A failure without an answer (the network, a
// timeout) is not permanent.
func IsPermanent(err error) bool {
	var e *Error
	if !errors.As(err, &e) || e.StatusCode < 300 {
		return false
	}
	return e.StatusCode != http.StatusRequestTimeout && !retryableStatus(e.StatusCode)
}

// redactURL keeps scheme, host and path: query strings and user info may
// carry what is not ours to log.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "the configured URL"
	}
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
}

// unwrapURLError drops net/url's wrapper, whose text repeats the full URL.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if ue.Timeout() {
			return fmt.Errorf("timed out: %w", ue.Err)
		}
		return ue.Err
	}
	return err
}
