package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	jose4 "github.com/go-jose/go-jose/v4"
	jwt4 "github.com/go-jose/go-jose/v4/jwt"
	"github.com/ory/fosite"
)

// requestNote is what a handler tells the access log about its request:
// the client fosite authenticated, and the error it refused with. The log
// never holds a secret, an assertion or a token, only names and fosite's
// error code and hint (fosite's hints name a kid, an alg or a scope, never
// a credential; its debug field, which may quote one, is not logged).
type requestNote struct {
	clientID string
	err      error
}

type noteKey struct{}

func noteFrom(ctx context.Context) *requestNote {
	if n, ok := ctx.Value(noteKey{}).(*requestNote); ok {
		return n
	}
	return &requestNote{}
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// logged writes one line per request: method, path, status, client id, and
// for a client assertion its kid and alg, which is what a key rollover test
// needs to read when a request fails.
func (s *Server) logged(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		note := &requestNote{}
		rec := &statusRecorder{ResponseWriter: w}
		// Handlers parse the form into this copy of the request, which is
		// where the claimed client id is read from afterwards.
		req := r.WithContext(context.WithValue(r.Context(), noteKey{}, note))
		h.ServeHTTP(rec, req)
		if rec.status == 0 {
			rec.status = http.StatusOK
		}

		var b strings.Builder
		fmt.Fprintf(&b, "%s %s %d", r.Method, r.URL.Path, rec.status)
		client, assertion := note.clientID, ""
		if client == "" {
			client, assertion = claimedClient(req)
		}
		if client != "" {
			fmt.Fprintf(&b, " client=%q", client)
		}
		if assertion != "" {
			b.WriteString(" " + assertion)
		}
		if note.err != nil {
			var e *fosite.RFC6749Error
			if errors.As(note.err, &e) {
				fmt.Fprintf(&b, " error=%s", e.ErrorField)
				if e.HintField != "" {
					fmt.Fprintf(&b, " hint=%q", e.HintField)
				}
			} else {
				// fosite lets some bare errors through (an expired
				// assertion's is "Token is expired"); they come from the
				// JWT checks and name no credential.
				fmt.Fprintf(&b, " error=%q", truncate(note.err.Error(), 200))
			}
		}
		fmt.Fprintf(&b, " (%s)", time.Since(start).Round(time.Microsecond))
		s.log.Print(b.String())
	})
}

// claimedClient names the client a request claims to be, for requests fosite
// refused before it knew the client: the Basic user, the client_id field,
// or the sub of an (unverified) client assertion, with that assertion's kid
// and alg. Only form fields already parsed by the handler are read.
func claimedClient(r *http.Request) (client, assertion string) {
	if user, _, ok := r.BasicAuth(); ok {
		if u, err := url.QueryUnescape(user); err == nil {
			return u, ""
		}
		return "", ""
	}
	if r.PostForm == nil {
		return "", ""
	}
	client = r.PostForm.Get("client_id")
	if raw := r.PostForm.Get("client_assertion"); raw != "" {
		sub, kid, alg := peekAssertion(raw)
		if client == "" {
			client = sub
		}
		assertion = fmt.Sprintf("assertion(kid=%q alg=%q)", kid, alg)
	}
	return client, assertion
}

// allAlgs lets the log name whatever alg a client sent, refused ones too.
var allAlgs = []jose4.SignatureAlgorithm{
	jose4.RS256, jose4.RS384, jose4.RS512, jose4.PS256, jose4.PS384, jose4.PS512,
	jose4.ES256, jose4.ES384, jose4.ES512, jose4.EdDSA, jose4.HS256, jose4.HS384, jose4.HS512,
}

// peekAssertion reads an assertion's sub, kid and alg without verifying it,
// for the log only; fosite does the verifying.
func peekAssertion(raw string) (sub, kid, alg string) {
	tok, err := jwt4.ParseSigned(raw, allAlgs)
	if err != nil || len(tok.Headers) == 0 {
		return "", "", "unparsable"
	}
	var claims jwt4.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&claims); err == nil {
		sub = claims.Subject
	}
	return sub, tok.Headers[0].KeyID, tok.Headers[0].Algorithm
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
