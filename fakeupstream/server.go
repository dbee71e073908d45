// Package fakeupstream is a stand-in for the token services the plugin talks
// to, served over real TLS on loopback. It follows the vendors' documented
// contracts (their pages, summed up in this package's tests), one file per
// vendor: MapsIndoors (the token
// endpoint with the client credentials and password grants, and the
// clientcredentials API that lists, creates and deletes client secrets),
// Metapack and CameraManager. Unit tests, end-to-end tests and the demo
// command all use it, and it has knobs for token lifetime, injected failures
// and request counts.
package fakeupstream

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/internal/throwawayca"
)

// Endpoint names one method and path the fake serves, as "METHOD /path".
type Endpoint string

func (ep Endpoint) method() string {
	method, _, _ := strings.Cut(string(ep), " ")
	return method
}

func (ep Endpoint) path() string {
	_, path, _ := strings.Cut(string(ep), " ")
	return path
}

// A vendor is one upstream the fake stands in for. Its file holds its
// endpoints, handlers, URL accessors and plugin configs, so adding a vendor
// takes that file and one line in vendors.
type vendor struct {
	routes []route
	// pluginConfigs are, by plugin provider name, the configs that point
	// a mount at this vendor's endpoints on a running fake.
	pluginConfigs map[string]func(*Server) map[string]any
}

// A route is the endpoints of one path, told apart by method, and the
// handler that serves them all.
type route struct {
	handle    handler
	endpoints []Endpoint
}

type handler func(s *Server, ep Endpoint, w http.ResponseWriter, r *http.Request)

var vendors = []vendor{mapsIndoors, metapack, cameraManager, jwtServer}

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

	// jwt is the private_key_jwt client's state (jwtclient.go), under its
	// own lock.
	jwt *jwtState
}

// Start runs a fake on loopback with TLS from a CA of its own.
func Start(opts Options) (*Server, error) {
	caPEM, leaf, err := throwawayca.New("fakeupstream")
	if err != nil {
		return nil, fmt.Errorf("make TLS certificates: %w", err)
	}
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", addr)
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
		tokenLifetime: opts.TokenLifetime,
		tokens:        map[string]issuedToken{},
		refreshTokens: map[string]bool{},
		hits:          map[Endpoint]int{},
		grants:        map[Endpoint]map[string]int{},
		lastForm:      map[Endpoint]url.Values{},
		faults:        map[Endpoint][]*fault{},
		jwt:           newJWTState(),
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
	for _, v := range vendors {
		for _, rt := range v.routes {
			path := rt.endpoints[0].path()
			for _, ep := range rt.endpoints {
				if ep.path() != path {
					panic(fmt.Sprintf("fakeupstream: %s is routed with %s, but a route serves one path", ep, path))
				}
			}
			mux.HandleFunc(path, s.route(rt.handle, rt.endpoints...))
		}
	}
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

// endpointURL is where a client reaches ep on this server.
func (s *Server) endpointURL(ep Endpoint) string { return s.baseURL + ep.path() }

// CACertPEM is the CA that signed the server's certificate.
func (s *Server) CACertPEM() string { return string(s.caPEM) }

// Credentials are the ones the fake was started with (the initial secret).
func (s *Server) Credentials() Credentials { return s.creds }

// Providers are the plugin providers PluginConfig knows, sorted.
func Providers() []string {
	var names []string
	for _, v := range vendors {
		for name := range v.pluginConfigs {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// PluginConfig is the body of a config write that points a plugin mount,
// configured as provider, at this fake: its URLs, its CA as ca_cert and the
// credentials it started with (after a rotation the client secret in it may
// no longer work). Each call returns a new map, so a test can add to it.
// It panics on a provider the fake does not serve, as a test helper would
// fail the test.
func (s *Server) PluginConfig(provider string) map[string]any {
	for _, v := range vendors {
		if config, ok := v.pluginConfigs[provider]; ok {
			return config(s)
		}
	}
	panic(fmt.Sprintf("fakeupstream: no plugin config for provider %q; the fake serves %s",
		provider, strings.Join(Providers(), ", ")))
}
func (s *Server) issueLocked(refreshToken string) (string, int) {
	token := randomString("", 32)
	s.tokens[token] = issuedToken{expiresAt: time.Now().Add(s.tokenLifetime), refreshToken: refreshToken}
	return token, int(s.tokenLifetime / time.Second)
}

// route serves the endpoints of one path, each with its own method: a
// request with another method is unexpected; otherwise it is counted and
// its faults apply before h runs.
func (s *Server) route(h handler, endpoints ...Endpoint) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for _, ep := range endpoints {
			if ep.method() == r.Method {
				s.serve(ep, h, w, r)
				return
			}
		}
		s.unexpectedRequest(w, r)
	}
}

// serve counts a request, runs the hook, and answers it with h or as its
// fault says.
func (s *Server) serve(ep Endpoint, h handler, w http.ResponseWriter, r *http.Request) {
	active := s.begin(ep, r)
	if active == nil {
		h(s, ep, w, r)
		return
	}
	if active.Then != nil {
		// Deferred, so it also runs while the abort of a dropped
		// connection unwinds.
		defer active.Then()
	}
	if active.Delay > 0 {
		select {
		case <-time.After(active.Delay):
		case <-r.Context().Done():
			// The client is gone: close the connection without an
			// answer (returning would have net/http send an empty 200).
			panic(http.ErrAbortHandler)
		}
	}
	if active.RetryAfter != "" {
		w.Header().Set("Retry-After", active.RetryAfter)
	}
	status := func(def int) int {
		if active.Status != 0 {
			return active.Status
		}
		return def
	}
	switch {
	case active.DropAfterProcessing:
		h(s, ep, discardWriter{header: http.Header{}}, r)
		// net/http closes the connection without an answer and logs
		// nothing for this panic.
		panic(http.ErrAbortHandler)
	case active.Redirect != "":
		w.Header().Set("Location", active.Redirect)
		w.WriteHeader(status(http.StatusTemporaryRedirect))
	case active.BodyBytes > 0:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status(http.StatusOK))
		writePadding(w, active.BodyBytes)
	case active.Malformed:
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token": "unterminated`))
	case active.Body != "":
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status(http.StatusOK))
		_, _ = w.Write([]byte(active.Body))
	case active.Status != 0:
		code, description := active.Code, active.Description
		if code == "" {
			code = "server_error"
		}
		if description == "" {
			description = "injected fault"
		}
		writeOAuthError(w, active.Status, code, description)
	default:
		h(s, ep, w, r)
	}
}

func (s *Server) unexpectedRequest(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.unexpected = append(s.unexpected, r.Method+" "+r.URL.Path)
	s.mu.Unlock()
	http.Error(w, "not found", http.StatusNotFound)
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

func (s *Server) writeClientError(w http.ResponseWriter, basic bool) {
	status := http.StatusBadRequest
	if basic {
		// RFC 6749 §5.2: 401 when the client tried HTTP Basic.
		w.Header().Set("WWW-Authenticate", `Basic realm="token"`)
		status = http.StatusUnauthorized
	}
	writeOAuthError(w, status, "invalid_client", "")
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
