package fakeupstream

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// An RFC 6749 server that also authenticates clients by private_key_jwt
// (RFC 7523) and revokes tokens as RFC 7009 says, checking an assertion as
// strictly as Ory fosite does: the exact client_assertion_type, no secret
// beside the assertion, the registered alg only, the key by its kid (with
// use=sig), iss = sub = client id, aud equal to the token URL as a string,
// a jti never seen before (recorded before anything else is checked), an
// exp, and an iat that is not in the future, with no leeway. A client may
// instead authenticate with the client secret, by HTTP Basic or in the form.
//
//nolint:gosec // G101: endpoint paths and a URN, not credentials.
const (
	EndpointJWTToken  Endpoint = "POST /oauth2/token"
	EndpointJWTRevoke Endpoint = "POST /oauth2/revoke"
)

// ClientAssertionType is RFC 7523's client_assertion_type.
const ClientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

var jwtServer = vendor{
	routes: []route{
		{(*Server).handleJWTToken, []Endpoint{EndpointJWTToken}},
		{(*Server).handleJWTRevoke, []Endpoint{EndpointJWTRevoke}},
	},
}

// jwtState is the private_key_jwt client's registration and what the
// server saw of it, under its own lock.
type jwtState struct {
	mu sync.Mutex
	// alg is the one alg the client is registered for (RS256 unless set).
	alg string
	// keys are the client's registered public keys; source, when set,
	// stands for a jwks_uri: it is fetched when an assertion names a kid
	// that keys lack, as fosite does.
	keys    jose.JSONWebKeySet
	source  func() ([]byte, error)
	fetches int
	// usedJTIs are the jti of every assertion seen, until its exp.
	usedJTIs map[string]time.Time
	// assertions are every assertion received: credentials until they
	// expire, so they belong with Sensitive.
	assertions []string
	last       *SeenAssertion
	revoked    map[string]bool
}

func newJWTState() *jwtState {
	return &jwtState{alg: "RS256", usedJTIs: map[string]time.Time{}, revoked: map[string]bool{}}
}

// SeenAssertion is a client assertion as the server read it: its header
// and its claims (as JSON decodes them: aud stays a string when it was
// one), whether or not it was accepted.
type SeenAssertion struct {
	Endpoint Endpoint
	Header   jose.Header
	Claims   map[string]any
	// ClientID and ClientSecret are the form's client_id and client_secret
	// (the latter must be empty), and Basic whether an Authorization header
	// came along.
	ClientID     string
	ClientSecret string
	Basic        bool
	Accepted     bool
}

// JWTTokenURL is the token endpoint that takes private_key_jwt.
func (s *Server) JWTTokenURL() string { return s.endpointURL(EndpointJWTToken) }

// JWTRevocationURL is its RFC 7009 revocation endpoint.
func (s *Server) JWTRevocationURL() string { return s.endpointURL(EndpointJWTRevoke) }

// JWTPluginConfig points an oauth2 mount at the private_key_jwt endpoint,
// authenticating with method: private_key_jwt (no secret), or a secret
// method with the fake's client secret.
func (s *Server) JWTPluginConfig(method string) map[string]any {
	cfg := map[string]any{
		"provider":          "oauth2",
		"client_id":         s.creds.ClientID,
		"token_url":         s.JWTTokenURL(),
		"token_auth_method": method,
		"ca_cert":           s.CACertPEM(),
	}
	if method != "private_key_jwt" {
		cfg["client_secret"] = s.creds.ClientSecret
	}
	return cfg
}

// RegisterJWKS registers the client's public keys inline, as an operator
// pasting the mount's JWKS would, for assertions signed with alg; it drops
// any JWKS source. A key with private members is refused.
func (s *Server) RegisterJWKS(doc []byte, alg string) error {
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(doc, &set); err != nil {
		return fmt.Errorf("the JWKS does not parse: %w", err)
	}
	for _, k := range set.Keys {
		if !k.IsPublic() {
			return fmt.Errorf("key %q has private members", k.KeyID)
		}
	}
	st := s.jwt
	st.mu.Lock()
	defer st.mu.Unlock()
	st.keys, st.source, st.alg = set, nil, alg
	return nil
}

// UseJWKSSource makes the server fetch the client's keys from fetch (as a
// jwks_uri) now and whenever an assertion names a kid it does not have.
func (s *Server) UseJWKSSource(alg string, fetch func() ([]byte, error)) {
	st := s.jwt
	st.mu.Lock()
	defer st.mu.Unlock()
	st.keys, st.source, st.alg = jose.JSONWebKeySet{}, fetch, alg
}

// JWKSFetches is how often the server fetched the JWKS source.
func (s *Server) JWKSFetches() int {
	st := s.jwt
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.fetches
}

// LastAssertion is the last client assertion the server read.
func (s *Server) LastAssertion() (SeenAssertion, bool) {
	st := s.jwt
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.last == nil {
		return SeenAssertion{}, false
	}
	return *st.last, true
}

// TokenRevoked reports whether an RFC 7009 revocation named the token.
func (s *Server) TokenRevoked(token string) bool {
	st := s.jwt
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.revoked[token]
}

// TokenActive is what introspection would say: issued here, not expired
// and not revoked.
func (s *Server) TokenActive(token string) bool {
	return s.TokenLive(token) && !s.TokenRevoked(token)
}

func (st *jwtState) sensitive() []string {
	st.mu.Lock()
	defer st.mu.Unlock()
	return slices.Clone(st.assertions)
}

// clientError is a refused client authentication: its status and OAuth2
// error code as fosite answers them.
type clientError struct {
	status      int
	code        string
	description string
}

func (e *clientError) Error() string { return e.code + ": " + e.description }

func refused(status int, code, format string, args ...any) *clientError {
	return &clientError{status: status, code: code, description: fmt.Sprintf(format, args...)}
}

// authenticateClient checks the client authentication of a request to ep.
func (s *Server) authenticateClient(ep Endpoint, r *http.Request) *clientError {
	form := r.PostForm
	if form.Get("client_assertion_type") == "" && form.Get("client_assertion") == "" {
		id, secret, basic, err := clientAuth(r)
		if err != nil {
			return refused(http.StatusBadRequest, "invalid_request", "%v", err)
		}
		if !basic {
			id, secret = form.Get("client_id"), form.Get("client_secret")
		}
		s.mu.Lock()
		ok := id == s.creds.ClientID && s.findSecretLocked(secret) != nil
		s.mu.Unlock()
		if !ok {
			return refused(http.StatusUnauthorized, "invalid_client", "client authentication failed")
		}
		return nil
	}
	return s.jwt.check(ep, r, s.creds.ClientID, s.JWTTokenURL())
}

// check verifies a client assertion as fosite does.
func (st *jwtState) check(ep Endpoint, r *http.Request, clientID, audience string) *clientError {
	form := r.PostForm
	raw := form.Get("client_assertion")
	_, _, basic := r.BasicAuth()
	seen := &SeenAssertion{Endpoint: ep, ClientID: form.Get("client_id"), ClientSecret: form.Get("client_secret"), Basic: basic}

	st.mu.Lock()
	defer st.mu.Unlock()
	st.assertions = append(st.assertions, raw)
	st.last = seen
	if form.Get("client_assertion_type") != ClientAssertionType {
		return refused(http.StatusBadRequest, "invalid_request", "client_assertion_type must be %s", ClientAssertionType)
	}
	if seen.ClientSecret != "" || basic {
		return refused(http.StatusBadRequest, "invalid_request", "the client authenticated in more than one way")
	}
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256, jose.PS256, jose.ES256, jose.EdDSA})
	if err != nil || len(tok.Headers) != 1 {
		return refused(http.StatusUnauthorized, "invalid_client", "the client assertion does not parse")
	}
	seen.Header = tok.Headers[0]
	var claims map[string]any
	if err := tok.UnsafeClaimsWithoutVerification(&claims); err != nil {
		return refused(http.StatusUnauthorized, "invalid_client", "the client assertion's claims do not parse")
	}
	seen.Claims = claims
	// fosite records the jti before it checks the rest: even a refused
	// assertion uses its jti up.
	jti, _ := claims["jti"].(string)
	now := time.Now()
	for id, exp := range st.usedJTIs {
		if now.After(exp) {
			delete(st.usedJTIs, id)
		}
	}
	if jti == "" {
		return refused(http.StatusUnauthorized, "invalid_client", "the client assertion has no jti")
	}
	if _, used := st.usedJTIs[jti]; used {
		return refused(http.StatusUnauthorized, "invalid_client", "the client assertion's jti was used before")
	}
	st.usedJTIs[jti] = now.Add(time.Hour)

	if seen.Header.Algorithm != st.alg {
		return refused(http.StatusUnauthorized, "invalid_client", "the client is registered for alg %s, not %s", st.alg, seen.Header.Algorithm)
	}
	key, cerr := st.keyLocked(seen.Header.KeyID)
	if cerr != nil {
		return cerr
	}
	var verified jwt.Claims
	if err := tok.Claims(key.Key, &verified); err != nil {
		return refused(http.StatusUnauthorized, "invalid_client", "the client assertion's signature does not verify with key %q", key.KeyID)
	}
	switch {
	case verified.Issuer != clientID || verified.Subject != clientID:
		return refused(http.StatusUnauthorized, "invalid_client", "iss and sub must both be the client id")
	case seen.ClientID != "" && seen.ClientID != clientID:
		return refused(http.StatusUnauthorized, "invalid_client", "client_id differs from the assertion's iss")
	case !slices.Contains(verified.Audience, audience):
		return refused(http.StatusUnauthorized, "invalid_client", "aud must be %s", audience)
	case verified.Expiry == nil:
		return refused(http.StatusUnauthorized, "invalid_client", "the client assertion has no exp")
	case now.After(verified.Expiry.Time()):
		// fosite answers an expired assertion with a 500.
		return refused(http.StatusInternalServerError, "error", "the client assertion has expired")
	case verified.IssuedAt != nil && verified.IssuedAt.Time().After(now):
		return refused(http.StatusInternalServerError, "error", "the client assertion was issued in the future")
	}
	seen.Accepted = true
	return nil
}

// keyLocked finds the registered key with kid, fetching the source once
// for a kid it does not have. An unknown kid is an invalid_request, as at
// fosite.
func (st *jwtState) keyLocked(kid string) (jose.JSONWebKey, *clientError) {
	find := func() (jose.JSONWebKey, bool) {
		for _, k := range st.keys.Key(kid) {
			if k.Use == "sig" {
				return k, true
			}
		}
		return jose.JSONWebKey{}, false
	}
	if k, ok := find(); ok {
		return k, nil
	}
	if st.source != nil {
		st.fetches++
		doc, err := st.source()
		if err != nil {
			return jose.JSONWebKey{}, refused(http.StatusBadRequest, "invalid_request", "the JWKS could not be fetched")
		}
		var set jose.JSONWebKeySet
		if err := json.Unmarshal(doc, &set); err != nil {
			return jose.JSONWebKey{}, refused(http.StatusBadRequest, "invalid_request", "the fetched JWKS does not parse")
		}
		st.keys = set
		if k, ok := find(); ok {
			return k, nil
		}
	}
	return jose.JSONWebKey{}, refused(http.StatusBadRequest, "invalid_request", "no key with kid %q is registered", kid)
}

func writeClientRefusal(w http.ResponseWriter, e *clientError) {
	if e.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="token"`)
	}
	writeOAuthError(w, e.status, e.code, e.description)
}

// handleJWTToken is the client_credentials grant with either client
// authentication.
func (s *Server) handleJWTToken(ep Endpoint, w http.ResponseWriter, r *http.Request) {
	if !formPost(w, r) {
		return
	}
	if e := s.authenticateClient(ep, r); e != nil {
		writeClientRefusal(w, e)
		return
	}
	form := r.PostForm
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recordLocked(ep, form)
	if form.Get("grant_type") != "client_credentials" {
		writeOAuthError(w, http.StatusBadRequest, "unsupported_grant_type", "")
		return
	}
	token, expiresIn := s.issueLocked("")
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": token, "expires_in": expiresIn, "token_type": "Bearer", "scope": form.Get("scope"),
	})
}

// handleJWTRevoke is RFC 7009: 200 whether or not the token was known.
func (s *Server) handleJWTRevoke(ep Endpoint, w http.ResponseWriter, r *http.Request) {
	if !formPost(w, r) {
		return
	}
	if e := s.authenticateClient(ep, r); e != nil {
		writeClientRefusal(w, e)
		return
	}
	form := r.PostForm
	s.mu.Lock()
	s.recordLocked(ep, form)
	s.mu.Unlock()
	token := form.Get("token")
	if token == "" {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "token is missing")
		return
	}
	if hint := form.Get("token_type_hint"); hint != "" && hint != "access_token" && hint != "refresh_token" {
		writeOAuthError(w, http.StatusBadRequest, "unsupported_token_type", "")
		return
	}
	st := s.jwt
	st.mu.Lock()
	st.revoked[token] = true
	st.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}
