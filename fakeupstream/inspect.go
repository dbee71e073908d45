package fakeupstream

import (
	"net/http"
	"net/url"
	"time"
)

// OnRequest calls fn, outside the fake's lock, before each request to a
// known endpoint is handled; a test can block in it to hold a request.
func (s *Server) OnRequest(fn func(Endpoint, *http.Request)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hook = fn
}

// Hits is how many requests reached an endpoint.
func (s *Server) Hits(ep Endpoint) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits[ep]
}

// Grants is how many well-formed token requests with this grant_type
// reached a token endpoint.
func (s *Server) Grants(ep Endpoint, grant string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.grants[ep][grant]
}

// LastForm is the parameters of the last request a token endpoint parsed,
// so tests can see what a client sent.
func (s *Server) LastForm(ep Endpoint) url.Values {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastForm[ep]
}

// recordLocked counts a parsed token request.
func (s *Server) recordLocked(ep Endpoint, form url.Values) {
	if s.grants[ep] == nil {
		s.grants[ep] = map[string]int{}
	}
	s.grants[ep][form.Get("grant_type")]++
	cp := url.Values{}
	for k, v := range form {
		cp[k] = append([]string(nil), v...)
	}
	s.lastForm[ep] = cp
}

// Unexpected lists requests to paths or methods the fake does not serve.
func (s *Server) Unexpected() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.unexpected...)
}

// Sensitive lists every value that must never show up in a log, an error
// or a response other than a token's own: each client secret this fake ever
// accepted, the password, and each access token it issued.
func (s *Server) Sensitive() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := append([]string{s.creds.Password, s.creds.MetapackKeySecret, s.creds.CameraManagerKeySecret}, s.everSecrets...)
	out = append(out, s.everRefresh...)
	for t := range s.tokens {
		out = append(out, t)
	}
	return append(out, s.jwt.sensitive()...)
}

// TokenLive reports whether an access token was issued here and has not
// expired.
func (s *Server) TokenLive(token string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.liveTokenLocked(token)
	return ok
}

// liveTokenLocked is an issued token that has not expired.
func (s *Server) liveTokenLocked(token string) (issuedToken, bool) {
	t, ok := s.tokens[token]
	return t, ok && time.Now().Before(t.expiresAt)
}

// TokenExpiry is when an issued token expires, and whether it was issued.
func (s *Server) TokenExpiry(token string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tokens[token]
	return t.expiresAt, ok
}
