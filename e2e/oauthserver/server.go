package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/go-jose/go-jose/v3"
	"github.com/hashicorp/go-retryablehttp"
	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/internal/throwawayca"
)

// Options configures one server. The zero value of each field is usable
// except Addr.
type Options struct {
	// Addr is where to listen; it must be a loopback address (port 0 picks a
	// free one). The base URL is built from the address actually bound.
	Addr    string
	Clients []ClientSpec
	// TokenLifetime is the access-token lifetime; short, so a test sees
	// expiry. Zero means an hour, fosite's default.
	TokenLifetime time.Duration
	// JWKSRoots verifies https jwks_uri servers; nil means the system roots.
	JWKSRoots *x509.CertPool
	// JWKSCacheTTL is how long fosite keeps a fetched JWKS (it refetches
	// sooner only for an unknown kid). Zero means an hour, as in Hydra.
	JWKSCacheTTL time.Duration
	// AcceptIssuerAudience also accepts the issuer (the base URL) as a
	// client assertion's aud, as RFC 7523bis and FAPI 2.0 recommend. Off by
	// default: fosite itself accepts only the token endpoint URL.
	AcceptIssuerAudience bool
	// BcryptCost hashes client secrets; 0 means bcrypt's minimum, since
	// these are throwaway test secrets and each token request compares one.
	BcryptCost int
	// CAFile, if set, receives the throwaway CA's PEM; ReadyFile, if set,
	// receives a ReadyInfo once the server is listening (written last and
	// atomically, so a reader that sees it can use both).
	CAFile    string
	ReadyFile string
	// Log receives one line per request; nil means stderr.
	Log io.Writer
}

// ReadyInfo is the ready file's content: everything a test needs to talk to
// the server without parsing its log.
type ReadyInfo struct {
	BaseURL string `json:"base_url"`
	Issuer  string `json:"issuer"`
	// TokenEndpoint is also the exact string a client assertion's aud must
	// equal, on every endpoint (fosite compares it byte for byte).
	TokenEndpoint         string   `json:"token_endpoint"`
	RevocationEndpoint    string   `json:"revocation_endpoint"`
	IntrospectionEndpoint string   `json:"introspection_endpoint"`
	AssertionAudiences    []string `json:"assertion_audiences"`
	// AdminClientsURL takes /{id} (PUT a whole client) or /{id}/jwks (PUT a
	// JWKS) appended.
	AdminClientsURL string `json:"admin_clients_url"`
	CAFile          string `json:"ca_file,omitempty"`
	TokenLifetime   string `json:"token_lifetime"`
	PID             int    `json:"pid"`
}

// Endpoint paths, fixed so the e2e suite can also build them itself.
const (
	pathToken      = "/oauth2/token" //nolint:gosec // G101: an endpoint path, not a credential.
	pathRevoke     = "/oauth2/revoke"
	pathIntrospect = "/oauth2/introspect"
	pathMetadata   = "/.well-known/oauth-authorization-server"
	pathAdmin      = "/admin/clients"
)

// Server is a running authorization server.
type Server struct {
	Info  ReadyInfo
	CAPEM []byte

	provider fosite.OAuth2Provider
	store    *clientStore
	jwks     *fosite.DefaultJWKSFetcherStrategy // its cache, for tests that need it settled
	log      *log.Logger
	srv      *http.Server
	done     chan struct{}
	serveErr error
}

// tokenURLConfig is fosite's Config with the list of accepted assertion
// audiences widened: fosite.Config answers only its single TokenURL, and the
// interface is the one place fosite asks.
type tokenURLConfig struct {
	*fosite.Config
	audiences []string
}

func (c *tokenURLConfig) GetTokenURLs(context.Context) []string { return c.audiences }

// Start listens, registers the clients and serves until Shutdown.
func Start(opts Options) (*Server, error) {
	logOut := opts.Log
	if logOut == nil {
		logOut = os.Stderr
	}
	logger := log.New(logOut, "oauthserver: ", log.LstdFlags|log.Lmicroseconds)

	// Test infrastructure with an unauthenticated admin endpoint: it must
	// never be reachable from another machine, so refuse before binding.
	host, _, err := net.SplitHostPort(opts.Addr)
	if err != nil {
		return nil, err
	}
	if !isLoopbackHost(host) {
		return nil, fmt.Errorf("refusing to listen on %q: loopback addresses only", opts.Addr)
	}
	// Start takes no context: the listener lives until Shutdown.
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", opts.Addr)
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().(*net.TCPAddr)
	if !addr.IP.IsLoopback() {
		_ = ln.Close() // already failing
		return nil, fmt.Errorf("refusing to listen on %s: loopback addresses only", addr)
	}
	// The ready file's reader may run elsewhere: name the CA file absolutely.
	if opts.CAFile != "" {
		if opts.CAFile, err = filepath.Abs(opts.CAFile); err != nil {
			_ = ln.Close() // already failing
			return nil, err
		}
	}
	caPEM, cert, err := throwawayca.New("oauthserver", addr.IP)
	if err != nil {
		_ = ln.Close() // already failing
		return nil, fmt.Errorf("making the throwaway CA: %w", err)
	}

	base := "https://" + net.JoinHostPort(addr.IP.String(), fmt.Sprint(addr.Port))
	info := ReadyInfo{
		BaseURL:               base,
		Issuer:                base,
		TokenEndpoint:         base + pathToken,
		RevocationEndpoint:    base + pathRevoke,
		IntrospectionEndpoint: base + pathIntrospect,
		AssertionAudiences:    []string{base + pathToken},
		AdminClientsURL:       base + pathAdmin,
		CAFile:                opts.CAFile,
		PID:                   os.Getpid(),
	}
	if opts.AcceptIssuerAudience {
		info.AssertionAudiences = append(info.AssertionAudiences, base)
	}
	if opts.TokenLifetime <= 0 {
		opts.TokenLifetime = time.Hour // fosite's default, made explicit for the ready file
	}
	info.TokenLifetime = opts.TokenLifetime.String()

	s, err := newServer(opts, info, logger)
	if err != nil {
		_ = ln.Close() // already failing
		return nil, err
	}
	s.CAPEM = caPEM

	s.srv = &http.Server{
		Handler:           s.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          logger,
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{cert},
			MinVersion:   tls.VersionTLS12,
		},
	}
	if opts.CAFile != "" {
		if err := writeFileAtomic(opts.CAFile, caPEM); err != nil {
			_ = ln.Close() // already failing
			return nil, fmt.Errorf("writing the CA: %w", err)
		}
	}
	go func() {
		defer close(s.done)
		if err := s.srv.ServeTLS(ln, "", ""); !errors.Is(err, http.ErrServerClosed) {
			s.serveErr = err
		}
	}()
	if opts.ReadyFile != "" {
		b, _ := json.MarshalIndent(info, "", "  ")
		if err := writeFileAtomic(opts.ReadyFile, append(b, '\n')); err != nil {
			_ = s.Shutdown(context.Background()) // already failing: report the ready-file error
			return nil, fmt.Errorf("writing the ready file: %w", err)
		}
	}
	logger.Printf("listening on %s (token lifetime %s, %d clients)", base, info.TokenLifetime, len(opts.Clients))
	return s, nil
}

func newServer(opts Options, info ReadyInfo, logger *log.Logger) (*Server, error) {
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	cost := opts.BcryptCost
	if cost == 0 {
		cost = 4 // bcrypt.MinCost
	}
	ttl := opts.JWKSCacheTTL
	if ttl == 0 {
		ttl = time.Hour
	}
	cfg := &fosite.Config{
		AccessTokenLifespan: opts.TokenLifetime,
		TokenURL:            info.TokenEndpoint,
		GlobalSecret:        secret,
		HashCost:            cost,
		// Exact matching, so a plugin that asks for a scope it was not
		// given fails here as it would at a strict server.
		ScopeStrategy:            fosite.ExactScopeStrategy,
		AudienceMatchingStrategy: fosite.DefaultAudienceMatchingStrategy,
		JWKSFetcherStrategy: fosite.NewDefaultJWKSFetcherStrategy(
			fosite.JWKSFetcherWithHTTPClient(jwksHTTPClient(opts.JWKSRoots, logger)),
			fosite.JKWKSFetcherWithDefaultTTL(ttl),
		),
	}
	fetcher := cfg.JWKSFetcherStrategy.(*fosite.DefaultJWKSFetcherStrategy)
	// fosite's getters fill these in lazily, which races when the first
	// requests arrive together; set every one of them up front.
	cfg.ClientSecretsHasher = &fosite.BCrypt{Config: cfg}

	conf := &tokenURLConfig{Config: cfg, audiences: info.AssertionAudiences}
	store := newClientStore(cfg.ClientSecretsHasher)
	for _, c := range opts.Clients {
		if err := store.put(context.Background(), c); err != nil {
			return nil, err
		}
	}

	// What compose.Compose does, with our Configurator in place of the bare
	// *fosite.Config so the audience list above is the one fosite asks.
	strategy := compose.NewOAuth2HMACStrategy(conf)
	provider := fosite.NewOAuth2Provider(store, conf)
	for _, factory := range []compose.Factory{
		compose.OAuth2ClientCredentialsGrantFactory,
		compose.OAuth2TokenIntrospectionFactory,
		compose.OAuth2TokenRevocationFactory,
	} {
		h := factory(conf, store, strategy)
		if th, ok := h.(fosite.TokenEndpointHandler); ok {
			cfg.TokenEndpointHandlers.Append(th)
		}
		if ti, ok := h.(fosite.TokenIntrospector); ok {
			cfg.TokenIntrospectionHandlers.Append(ti)
		}
		if rh, ok := h.(fosite.RevocationHandler); ok {
			cfg.RevocationHandlers.Append(rh)
		}
	}
	return &Server{
		Info:     info,
		provider: provider,
		store:    store,
		jwks:     fetcher,
		log:      logger,
		done:     make(chan struct{}),
	}, nil
}

// Shutdown stops serving and waits for requests under way.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	<-s.done
	if err == nil {
		err = s.serveErr
	}
	return err
}

// Done is closed when the server stops serving.
func (s *Server) Done() <-chan struct{} { return s.done }

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	// fosite checks the method itself and answers in OAuth2's error format.
	mux.HandleFunc(pathToken, s.handleToken)
	mux.HandleFunc(pathRevoke, s.handleRevoke)
	mux.HandleFunc(pathIntrospect, s.handleIntrospect)
	mux.HandleFunc("GET "+pathMetadata, s.handleMetadata)
	mux.Handle("PUT "+pathAdmin+"/{id}", loopbackOnly(http.HandlerFunc(s.handlePutClient)))
	mux.Handle("PUT "+pathAdmin+"/{id}/jwks", loopbackOnly(http.HandlerFunc(s.handlePutJWKS)))
	return s.logged(mux)
}

func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	note := noteFrom(ctx)
	session := &fosite.DefaultSession{}
	ar, err := s.provider.NewAccessRequest(ctx, r, session)
	if err != nil {
		note.err = err
		s.provider.WriteAccessError(ctx, w, ar, err)
		return
	}
	note.clientID = ar.GetClient().GetID()
	session.Subject = note.clientID
	// The client credentials handler has already refused any scope or
	// audience the client is not registered for; what is left is granted.
	for _, scope := range ar.GetRequestedScopes() {
		ar.GrantScope(scope)
	}
	for _, aud := range ar.GetRequestedAudience() {
		ar.GrantAudience(aud)
	}
	resp, err := s.provider.NewAccessResponse(ctx, ar)
	if err != nil {
		note.err = err
		s.provider.WriteAccessError(ctx, w, ar, err)
		return
	}
	s.provider.WriteAccessResponse(ctx, w, ar, resp)
}

// handleRevoke is fosite's RFC 7009 endpoint. fosite answers 200 not only for
// unknown or already revoked tokens but also for a token of another client
// and for a refused client assertion whose jti was already used: only an
// invalid_client or invalid_request error gets a 4xx. The log line says what
// really happened; tests check revocation with introspection.
func (s *Server) handleRevoke(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	err := s.provider.NewRevocationRequest(ctx, r)
	noteFrom(ctx).err = err
	s.provider.WriteRevocationResponse(ctx, w, err)
}

// handleIntrospect is fosite's RFC 7662 endpoint. fosite authenticates the
// caller by HTTP Basic with any registered client's secret, or by a bearer
// access token; it never takes a client assertion here, so the suite uses a
// separate client_secret_basic client to introspect.
func (s *Server) handleIntrospect(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	ir, err := s.provider.NewIntrospectionRequest(ctx, r, &fosite.DefaultSession{})
	if err != nil {
		noteFrom(ctx).err = err
		s.provider.WriteIntrospectionError(ctx, w, err)
		return
	}
	s.provider.WriteIntrospectionResponse(ctx, w, ir)
}

// handleMetadata answers RFC 8414 metadata, so a client that discovers
// endpoints can be pointed at the base URL alone.
func (s *Server) handleMetadata(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                s.Info.Issuer,
		"token_endpoint":                        s.Info.TokenEndpoint,
		"revocation_endpoint":                   s.Info.RevocationEndpoint,
		"introspection_endpoint":                s.Info.IntrospectionEndpoint,
		"grant_types_supported":                 []string{"client_credentials"},
		"token_endpoint_auth_methods_supported": []string{authBasic, authPost, authJWT},
		"token_endpoint_auth_signing_alg_values_supported": sortedAlgs(),
		"revocation_endpoint_auth_methods_supported":       []string{authBasic, authPost, authJWT},
		"introspection_endpoint_auth_methods_supported":    []string{authBasic},
	})
}

// The admin endpoints change clients while the server runs, so a test can
// register keys a Vault mount made after the server started and roll them
// over. They have no authentication on purpose: this is test infrastructure
// that listens on loopback only (Start refuses anything else, and
// loopbackOnly checks each caller too).

func (s *Server) handlePutClient(w http.ResponseWriter, r *http.Request) {
	var spec ClientSpec
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&spec); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid JSON: " + err.Error()})
		return
	}
	id := r.PathValue("id")
	noteFrom(r.Context()).clientID = id
	if spec.ID == "" {
		spec.ID = id
	}
	if spec.ID != id {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "the body's id differs from the path's"})
		return
	}
	if err := s.store.put(r.Context(), spec); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handlePutJWKS(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	noteFrom(r.Context()).clientID = id
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&set); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid JWKS: " + err.Error()})
		return
	}
	switch err := s.store.setJWKS(id, &set); {
	case errors.Is(err, errNoClient):
		writeJSON(w, http.StatusNotFound, map[string]string{"error": err.Error()})
	case err != nil:
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
	default:
		s.log.Printf("client %q: JWKS replaced, kids %v", id, kids(&set))
		w.WriteHeader(http.StatusNoContent)
	}
}

func loopbackOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
			http.Error(w, "admin endpoints answer loopback callers only", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// jwksHTTPClient is the client fosite fetches jwks_uri documents with. It
// trusts roots (the test's CA), never uses a proxy from the environment,
// allows plain http only to loopback, and gives up fast: fosite fetches while
// the token request that needs the keys waits, and retryablehttp's defaults
// (4 retries, waits up to 30 s) would turn a test failure into a timeout.
func jwksHTTPClient(roots *x509.CertPool, logger *log.Logger) *retryablehttp.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	rc := retryablehttp.NewClient()
	rc.HTTPClient = &http.Client{Transport: &jwksTransport{next: tr, log: logger}, Timeout: 10 * time.Second}
	rc.RetryMax = 1
	rc.RetryWaitMin = 100 * time.Millisecond
	rc.RetryWaitMax = 500 * time.Millisecond
	rc.Logger = nil
	return rc
}

type jwksTransport struct {
	next http.RoundTripper
	log  *log.Logger
}

// RoundTrip enforces the jwks_uri scheme rule on every hop, redirects too,
// and logs each fetch so a test's log shows when fosite refetched.
func (t *jwksTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if err := checkJWKSURI(r.URL.String()); err != nil {
		return nil, err
	}
	resp, err := t.next.RoundTrip(r)
	if err != nil {
		t.log.Printf("jwks fetch %s: %v", redactURL(r.URL), err)
		return nil, err
	}
	t.log.Printf("jwks fetch %s: %d", redactURL(r.URL), resp.StatusCode)
	return resp, nil
}

// redactURL drops a query and user info: a JWKS URL needs neither, and a
// test could put a token in one.
func redactURL(u *url.URL) string {
	c := *u
	c.User = nil
	c.RawQuery = ""
	return c.String()
}

func kids(set *jose.JSONWebKeySet) []string {
	var out []string
	for _, k := range set.Keys {
		out = append(out, k.KeyID)
	}
	return out
}

func sortedAlgs() []string {
	return []string{"ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "RS256", "RS384", "RS512"}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeFileAtomic writes through a temporary file and a rename, so a test
// polling for the file never reads half of it.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	// On failure the temporary file is removed as best effort: the first
	// error is the one to report, and a leftover dot-file is harmless.
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()           // already failing
		_ = os.Remove(tmp.Name()) // best effort, see above
		return err
	}
	if err := tmp.Close(); err != nil {
		_ = os.Remove(tmp.Name()) // best effort, see above
		return err
	}
	// Both files (the CA certificate, the ready file's URLs and pid) are public
	// and meant for other processes, which may run as another user.
	if err := os.Chmod(tmp.Name(), 0o644); err != nil { //nolint:gosec // G302: public content, read by other processes.
		_ = os.Remove(tmp.Name()) // best effort, see above
		return err
	}
	return os.Rename(tmp.Name(), path)
}
