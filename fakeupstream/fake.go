// Package fakeupstream is a stand-in for the token services the plugin talks
// to, served over real TLS on loopback. It follows the vendors' pages (see
// shared/upstream-apis.md): the MapsIndoors token endpoint with the client
// credentials and password grants, and the clientcredentials API that lists,
// creates and deletes client secrets. Unit tests, end-to-end tests and the
// demo command all use it, and it has knobs for token lifetime, injected
// failures and request counts.
package fakeupstream

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Endpoint names one method and path the fake serves.
type Endpoint string

// The endpoints the fake serves.
const (
	EndpointToken        Endpoint = "POST /connect/token"
	EndpointListSecrets  Endpoint = "GET /api/clientcredentials"
	EndpointCreateSecret Endpoint = "POST /api/clientcredentials"
	EndpointDeleteSecret Endpoint = "DELETE /api/clientcredentials"

	// EndpointMetapackToken is Metapack's token endpoint: client
	// credentials with the API key as raw HTTP Basic.
	EndpointMetapackToken Endpoint = "POST /oauth"
	// EndpointCameraManagerToken is CameraManager's token endpoint: the
	// password and refresh_token grants with the API key as raw HTTP Basic,
	// parameters in the query string or the form.
	EndpointCameraManagerToken Endpoint = "POST /oauth/token"
	// EndpointCameraManagerLogout deletes the bearer token and its refresh
	// token.
	EndpointCameraManagerLogout Endpoint = "DELETE /rest/v2.0/users/self/tokens/current"
)

// PasswordClientID is the client id MapsIndoors' password grant uses.
const PasswordClientID = "client"

// Options sets up a fake. Empty credentials get generated values.
type Options struct {
	// Addr to listen on; "127.0.0.1:0" when empty.
	Addr string
	// Credentials the fake accepts.
	Credentials
	// TokenLifetime is the expires_in of issued tokens; one hour when 0.
	TokenLifetime time.Duration
	// AllowedScopes, when set, are the only scopes a client may ask for.
	AllowedScopes []string
}

// Credentials are what the fake accepts, as a vendor would hand them out.
type Credentials struct {
	ClientID       string
	ClientSecret   string
	ClientSecretID string
	CustomerID     string

	// Username and Password are the user accepted by the password grants
	// (MapsIndoors' CMS user, CameraManager's user).
	Username string
	Password string

	// The API keys of Metapack and CameraManager (ID and SECRET). Generated
	// secrets carry $ and + like the example on Metapack's page, so a
	// client that form-encodes Basic credentials is refused.
	MetapackKeyID          string
	MetapackKeySecret      string
	CameraManagerKeyID     string
	CameraManagerKeySecret string
}

// Fault changes how the fake answers requests to one endpoint.
type Fault struct {
	// Status, when set, answers with this HTTP status and an OAuth2 error
	// body with Code (default "server_error").
	Status int
	Code   string
	// Body, when set, is sent as is (with Status, or 200).
	Body string
	// Malformed answers 200 with a body that is not JSON.
	Malformed bool
	// Delay waits this long first (or until the client gives up), then
	// answers as the other fields say, or normally when none is set.
	Delay time.Duration
	// After lets this many matching requests through before the fault
	// starts; Times is how many it hits (1 when 0, every one when < 0).
	After int
	Times int
}

type fault struct {
	Fault
	left int
}

type clientSecret struct {
	id          string
	description string
	createdAt   time.Time
	value       string
}

type issuedToken struct {
	expiresAt time.Time
	// refreshToken is the CameraManager refresh token this token came with.
	refreshToken string
}

// Server is a running fake upstream.
type Server struct {
	creds         Credentials
	allowedScopes map[string]bool
	caPEM         []byte
	listener      net.Listener
	http          *http.Server
	baseURL       string
	tokenLifetime time.Duration

	// mu guards everything below.
	mu            sync.Mutex
	secrets       []*clientSecret
	everSecrets   []string
	tokens        map[string]issuedToken
	refreshTokens map[string]bool // live CameraManager refresh tokens
	everRefresh   []string
	hits          map[Endpoint]int
	grants        map[Endpoint]map[string]int
	lastForm      map[Endpoint]url.Values
	faults        map[Endpoint][]*fault
	unexpected    []string
	hook          func(Endpoint, *http.Request)
}

// Start runs a fake on loopback with TLS from a CA of its own.
func Start(opts Options) (*Server, error) {
	caPEM, leaf, err := newCA()
	if err != nil {
		return nil, fmt.Errorf("make TLS certificates: %w", err)
	}
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &Server{
		creds: Credentials{
			ClientID:       orRandom(opts.ClientID, "client-", 8),
			ClientSecret:   orRandom(opts.ClientSecret, "", 48),
			ClientSecretID: orRandom(opts.ClientSecretID, "", 12),
			CustomerID:     orRandom(opts.CustomerID, "customer-", 8),
			Username:       orRandom(opts.Username, "user-", 6),
			Password:       orRandom(opts.Password, "", 24),

			MetapackKeyID:          orRandom(opts.MetapackKeyID, "MP", 24),
			MetapackKeySecret:      orRandom(opts.MetapackKeySecret, randomString("", 20)+"$7d+b7-", 12),
			CameraManagerKeyID:     orRandom(opts.CameraManagerKeyID, "cameramanager.", 8),
			CameraManagerKeySecret: orRandom(opts.CameraManagerKeySecret, randomString("", 20)+"+$", 8),
		},
		caPEM:         caPEM,
		listener:      ln,
		tokenLifetime: opts.TokenLifetime,
		tokens:        map[string]issuedToken{},
		refreshTokens: map[string]bool{},
		hits:          map[Endpoint]int{},
		grants:        map[Endpoint]map[string]int{},
		lastForm:      map[Endpoint]url.Values{},
		faults:        map[Endpoint][]*fault{},
	}
	if s.tokenLifetime <= 0 {
		s.tokenLifetime = time.Hour
	}
	if len(opts.AllowedScopes) > 0 {
		s.allowedScopes = map[string]bool{}
		for _, sc := range opts.AllowedScopes {
			s.allowedScopes[sc] = true
		}
	}
	s.secrets = []*clientSecret{{
		id: s.creds.ClientSecretID, description: "initial secret", createdAt: time.Now().UTC(), value: s.creds.ClientSecret,
	}}
	s.everSecrets = []string{s.creds.ClientSecret}
	host := ln.Addr().(*net.TCPAddr)
	s.baseURL = "https://" + net.JoinHostPort(host.IP.String(), fmt.Sprint(host.Port))

	mux := http.NewServeMux()
	mux.HandleFunc("/connect/token", s.route(s.handleToken, EndpointToken))
	mux.HandleFunc("/api/clientcredentials", s.route(s.handleClientCredentials,
		EndpointListSecrets, EndpointCreateSecret, EndpointDeleteSecret))
	mux.HandleFunc("/oauth", s.route(s.handleMetapackToken, EndpointMetapackToken))
	mux.HandleFunc("/oauth/token", s.route(s.handleCameraManagerToken, EndpointCameraManagerToken))
	mux.HandleFunc("/rest/v2.0/users/self/tokens/current", s.route(s.handleCameraManagerLogout, EndpointCameraManagerLogout))
	mux.HandleFunc("/", s.unexpectedRequest)
	s.http = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{leaf}, MinVersion: tls.VersionTLS12},
	}
	go func() { _ = s.http.Serve(tls.NewListener(ln, s.http.TLSConfig)) }()
	return s, nil
}

// Close stops the server.
func (s *Server) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = s.http.Shutdown(ctx)
}

// URL is the base URL, https://127.0.0.1:PORT.
func (s *Server) URL() string { return s.baseURL }

// TokenURL is the MapsIndoors token endpoint.
func (s *Server) TokenURL() string { return s.baseURL + "/connect/token" }

// RotationURL is the clientcredentials API.
func (s *Server) RotationURL() string { return s.baseURL + "/api/clientcredentials" }

// MetapackTokenURL is Metapack's token endpoint.
func (s *Server) MetapackTokenURL() string { return s.baseURL + "/oauth" }

// CameraManagerTokenURL is CameraManager's token endpoint.
func (s *Server) CameraManagerTokenURL() string { return s.baseURL + "/oauth/token" }

// CameraManagerLogoutURL is CameraManager's logout endpoint.
func (s *Server) CameraManagerLogoutURL() string {
	return s.baseURL + "/rest/v2.0/users/self/tokens/current"
}

// CACertPEM is the CA that signed the server's certificate.
func (s *Server) CACertPEM() string { return string(s.caPEM) }

// Credentials are the ones the fake was started with (the initial secret).
func (s *Server) Credentials() Credentials { return s.creds }

// InjectFault adds a fault on one endpoint; faults apply in the order added.
func (s *Server) InjectFault(ep Endpoint, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	left := f.Times
	if left == 0 {
		left = 1
	}
	s.faults[ep] = append(s.faults[ep], &fault{Fault: f, left: left})
}

// ClearFaults drops every fault not yet used up.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = map[Endpoint][]*fault{}
}

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

// SecretInfo is a client secret as the GET of the clientcredentials API
// shows it.
type SecretInfo struct {
	ID          string    `json:"id"`
	Description string    `json:"description"`
	ClientID    string    `json:"client_id"`
	CreatedAt   time.Time `json:"createdAt"`
}

// Secrets lists the active client secrets, oldest first.
func (s *Server) Secrets() []SecretInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.secretInfosLocked()
}

func (s *Server) secretInfosLocked() []SecretInfo {
	out := make([]SecretInfo, 0, len(s.secrets))
	for _, cs := range s.secrets {
		out = append(out, SecretInfo{ID: cs.id, Description: cs.description, ClientID: s.creds.ClientID, CreatedAt: cs.createdAt})
	}
	return out
}

// SecretWorks reports whether a login with this client secret would succeed.
func (s *Server) SecretWorks(secret string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.findSecretLocked(secret) != nil
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
	return out
}

// RefreshTokenLive reports whether a CameraManager refresh token works.
func (s *Server) RefreshTokenLive(rt string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refreshTokens[rt]
}

// ForgetRefreshTokens makes every refresh token stop working, as a
// server that lost its sessions would.
func (s *Server) ForgetRefreshTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refreshTokens = map[string]bool{}
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

// route serves the endpoints of one path, each with its own method: a
// request with another method is unexpected; otherwise it is counted and
// its faults apply before h runs.
func (s *Server) route(h func(Endpoint, http.ResponseWriter, *http.Request), endpoints ...Endpoint) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for _, ep := range endpoints {
			if method, _, _ := strings.Cut(string(ep), " "); method == r.Method {
				if s.begin(ep, w, r) {
					h(ep, w, r)
				}
				return
			}
		}
		s.unexpectedRequest(w, r)
	}
}

// formPost parses a form body, answering 400 when it is not one.
func formPost(w http.ResponseWriter, r *http.Request) bool {
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "the body must be application/x-www-form-urlencoded")
		return false
	}
	if err := r.ParseForm(); err != nil {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "the form does not parse")
		return false
	}
	return true
}

// begin counts a request, runs the hook and applies any fault. It returns
// false when the fault has answered.
func (s *Server) begin(ep Endpoint, w http.ResponseWriter, r *http.Request) bool {
	s.mu.Lock()
	s.hits[ep]++
	hook := s.hook
	var active *Fault
	remaining := s.faults[ep][:0]
	for _, f := range s.faults[ep] {
		switch {
		case active != nil:
		case f.After > 0:
			f.After--
		default:
			cp := f.Fault
			active = &cp
			if f.left > 0 {
				f.left--
			}
		}
		if f.left != 0 {
			remaining = append(remaining, f)
		}
	}
	s.faults[ep] = remaining
	s.mu.Unlock()

	if hook != nil {
		hook(ep, r)
	}
	if active == nil {
		return true
	}
	if active.Delay > 0 {
		select {
		case <-time.After(active.Delay):
		case <-r.Context().Done():
			return false
		}
	}
	switch {
	case active.Malformed:
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token": "unterminated`))
	case active.Body != "":
		w.Header().Set("Content-Type", "application/json")
		status := active.Status
		if status == 0 {
			status = http.StatusOK
		}
		w.WriteHeader(status)
		_, _ = w.Write([]byte(active.Body))
	case active.Status != 0:
		code := active.Code
		if code == "" {
			code = "server_error"
		}
		writeOAuthError(w, active.Status, code, "injected fault")
	default:
		return true
	}
	return false
}

func (s *Server) unexpectedRequest(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.unexpected = append(s.unexpected, r.Method+" "+r.URL.Path)
	s.mu.Unlock()
	http.Error(w, "not found", http.StatusNotFound)
}

// handleToken is the IdentityServer-style /connect/token: a form POST with
// the client authenticated in the body (client_secret_post) or by HTTP
// Basic (client_secret_basic), as IdentityServer accepts both.
func (s *Server) handleToken(_ Endpoint, w http.ResponseWriter, r *http.Request) {
	if !formPost(w, r) {
		return
	}
	form := r.PostForm
	clientID, clientSecret, basic, err := clientAuth(r)
	if err != nil {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	if !basic {
		clientID, clientSecret = form.Get("client_id"), form.Get("client_secret")
	}
	scope := strings.Join(strings.Fields(form.Get("scope")), " ")
	if s.allowedScopes != nil {
		for _, sc := range strings.Fields(scope) {
			if !s.allowedScopes[sc] {
				writeOAuthError(w, http.StatusBadRequest, "invalid_scope", "scope "+sc+" is not allowed for this client")
				return
			}
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.recordLocked(EndpointToken, form)
	switch form.Get("grant_type") {
	case "client_credentials":
		if clientID != s.creds.ClientID || s.findSecretLocked(clientSecret) == nil {
			s.writeClientError(w, basic)
			return
		}
	case "password":
		if clientID != PasswordClientID || clientSecret != "" {
			s.writeClientError(w, basic)
			return
		}
		if !equal(form.Get("username"), s.creds.Username) || !equal(form.Get("password"), s.creds.Password) {
			writeOAuthError(w, http.StatusBadRequest, "invalid_grant", "invalid username or password")
			return
		}
	case "":
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "grant_type is missing")
		return
	default:
		writeOAuthError(w, http.StatusBadRequest, "unsupported_grant_type", "")
		return
	}
	token, expiresIn := s.issueLocked("")
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": token,
		"expires_in":   expiresIn,
		"token_type":   "Bearer",
		"scope":        scope,
	})
}

func (s *Server) writeClientError(w http.ResponseWriter, basic bool) {
	status := http.StatusBadRequest
	if basic {
		// RFC 6749 §5.2: 401 when the client tried HTTP Basic.
		w.Header().Set("WWW-Authenticate", `Basic realm="token"`)
		status = http.StatusUnauthorized
	}
	writeOAuthError(w, status, "invalid_client", "")
}

// clientAuth reads HTTP Basic client authentication, whose parts RFC 6749
// §2.3.1 form-encodes.
func clientAuth(r *http.Request) (id, secret string, ok bool, err error) {
	user, pass, ok := r.BasicAuth()
	if !ok {
		return "", "", false, nil
	}
	if r.PostForm.Get("client_secret") != "" {
		return "", "", false, errors.New("the client authenticated in more than one way")
	}
	if id, err = url.QueryUnescape(user); err != nil {
		return "", "", false, errors.New("the Basic user does not decode")
	}
	if secret, err = url.QueryUnescape(pass); err != nil {
		return "", "", false, errors.New("the Basic password does not decode")
	}
	return id, secret, true, nil
}

func (s *Server) findSecretLocked(value string) *clientSecret {
	for _, cs := range s.secrets {
		if equal(cs.value, value) {
			return cs
		}
	}
	return nil
}

// handleClientCredentials is the clientcredentials API: GET lists, POST
// creates, DELETE deletes, all behind a bearer token and a customerId.
func (s *Server) handleClientCredentials(ep Endpoint, w http.ResponseWriter, r *http.Request) {
	if !s.bearerOK(r) {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_token"})
		return
	}
	q := r.URL.Query()
	switch customer := q.Get("customerId"); {
	case customer == "":
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "error_description": "customerId is required"})
		return
	case customer != s.creds.CustomerID:
		writeJSON(w, http.StatusForbidden, map[string]string{"error": "forbidden", "error_description": "not your customer"})
		return
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	switch ep {
	case EndpointListSecrets:
		writeJSON(w, http.StatusOK, s.secretInfosLocked())
	case EndpointCreateSecret:
		cs := &clientSecret{
			id:          randomHex(12),
			description: q.Get("description"),
			createdAt:   time.Now().UTC(),
			value:       randomString("", 72),
		}
		s.secrets = append(s.secrets, cs)
		s.everSecrets = append(s.everSecrets, cs.value)
		writeJSON(w, http.StatusOK, map[string]any{
			"id": cs.id, "description": cs.description, "createdAt": cs.createdAt, "secret": cs.value,
		})
	case EndpointDeleteSecret:
		id := q.Get("id")
		for i, cs := range s.secrets {
			if cs.id == id {
				s.secrets = append(s.secrets[:i], s.secrets[i+1:]...)
				w.WriteHeader(http.StatusOK)
				return
			}
		}
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "not_found", "error_description": "no client secret with that id"})
	}
}

func (s *Server) bearerOK(r *http.Request) bool {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && s.TokenLive(token)
}

func (s *Server) issueLocked(refreshToken string) (string, int) {
	token := randomString("", 32)
	s.tokens[token] = issuedToken{expiresAt: time.Now().Add(s.tokenLifetime), refreshToken: refreshToken}
	return token, int(s.tokenLifetime / time.Second)
}

// handleMetapackToken is Metapack's POST /oauth: grant_type
// client_credentials in the form, the API key as raw HTTP Basic.
func (s *Server) handleMetapackToken(_ Endpoint, w http.ResponseWriter, r *http.Request) {
	if !formPost(w, r) {
		return
	}
	if r.PostForm.Get("grant_type") != "client_credentials" {
		writeOAuthError(w, http.StatusBadRequest, "unsupported_grant_type", "")
		return
	}
	// The API key as Metapack takes it: base64 of the raw "id:secret",
	// not form-decoded as RFC 6749 would have it.
	id, secret, ok := r.BasicAuth()
	if !ok || !equal(id, s.creds.MetapackKeyID) || !equal(secret, s.creds.MetapackKeySecret) {
		s.writeClientError(w, true)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recordLocked(EndpointMetapackToken, r.PostForm)
	// A JWT-shaped token and a scope with a trailing space, as on the page.
	token, expiresIn := s.issueLocked("")
	jwt := "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9." + token
	s.tokens[jwt] = s.tokens[token]
	delete(s.tokens, token)
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": jwt,
		"expires_in":   expiresIn,
		"scope":        "can-create-locations can-delete-own-locations ",
		"token_type":   "bearer",
	})
}

// handleCameraManagerToken is CameraManager's POST /oauth/token: the
// password and refresh_token grants, parameters in the query string (as
// the page shows) or the form, the API key as raw HTTP Basic.
func (s *Server) handleCameraManagerToken(_ Endpoint, w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "the form does not parse")
		return
	}
	params := r.Form                // query string and form body together
	id, secret, ok := r.BasicAuth() // raw, as for Metapack
	if !ok || !equal(id, s.creds.CameraManagerKeyID) || !equal(secret, s.creds.CameraManagerKeySecret) {
		s.writeClientError(w, true)
		return
	}
	scope := params.Get("scope")
	if scope == "" {
		scope = "write"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recordLocked(EndpointCameraManagerToken, params)
	var refresh string
	switch params.Get("grant_type") {
	case "password":
		if !equal(params.Get("username"), s.creds.Username) || !equal(params.Get("password"), s.creds.Password) {
			writeOAuthError(w, http.StatusBadRequest, "invalid_grant", "Bad credentials")
			return
		}
		refresh = randomString("", 36)
		s.refreshTokens[refresh] = true
		s.everRefresh = append(s.everRefresh, refresh)
	case "refresh_token":
		refresh = params.Get("refresh_token")
		if !s.refreshTokens[refresh] {
			writeOAuthError(w, http.StatusBadRequest, "invalid_grant", "Invalid refresh token")
			return
		}
	default:
		writeOAuthError(w, http.StatusBadRequest, "unsupported_grant_type", "")
		return
	}
	token, expiresIn := s.issueLocked(refresh)
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token":  token,
		"token_type":    "bearer",
		"refresh_token": refresh,
		"expires_in":    expiresIn,
		"scope":         scope,
	})
}

// handleCameraManagerLogout deletes the bearer token and its refresh token.
func (s *Server) handleCameraManagerLogout(_ Endpoint, w http.ResponseWriter, r *http.Request) {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	defer s.mu.Unlock()
	t, live := s.liveTokenLocked(token)
	if !ok || !live {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_token"})
		return
	}
	delete(s.tokens, token)
	delete(s.refreshTokens, t.refreshToken)
	w.WriteHeader(http.StatusOK)
}

func writeOAuthError(w http.ResponseWriter, status int, code, description string) {
	body := map[string]string{"error": code}
	if description != "" {
		body["error_description"] = description
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func equal(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

func orRandom(v, prefix string, n int) string {
	if v != "" {
		return v
	}
	return randomString(prefix, n)
}

func randomString(prefix string, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	s := base64.RawURLEncoding.EncodeToString(b)
	return prefix + s[:n]
}

func randomHex(n int) string {
	b := make([]byte, (n+1)/2)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)[:n]
}
