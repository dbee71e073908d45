package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	josev3 "github.com/go-jose/go-jose/v3"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

const jwtBearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// Keys are made once: RSA generation is slow under -race.
var (
	rsaKeyA = sync.OnceValue(mustRSA)
	rsaKeyB = sync.OnceValue(mustRSA)
	ecKey   = sync.OnceValue(func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		return k
	})
)

func mustRSA() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
}

// signingKey is a private key with the kid and alg it is registered under.
type signingKey struct {
	kid  string
	alg  jose.SignatureAlgorithm
	priv crypto.Signer
}

func keyRSA_A() signingKey { return signingKey{"rs-1", jose.RS256, rsaKeyA()} }
func keyRSA_B() signingKey { return signingKey{"rs-2", jose.RS256, rsaKeyB()} }
func keyEC() signingKey    { return signingKey{"es-1", jose.ES256, ecKey()} }

// jwksJSON is the public JWKS document of keys, as a plugin would publish it.
func jwksJSON(t *testing.T, keys ...signingKey) []byte {
	t.Helper()
	var set jose.JSONWebKeySet
	for _, k := range keys {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.priv.Public(), KeyID: k.kid, Algorithm: string(k.alg), Use: "sig"})
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// jwksV3 is the same document in the go-jose v3 type fosite's clients hold.
func jwksV3(t *testing.T, keys ...signingKey) *josev3.JSONWebKeySet {
	t.Helper()
	var set josev3.JSONWebKeySet
	if err := json.Unmarshal(jwksJSON(t, keys...), &set); err != nil {
		t.Fatal(err)
	}
	return &set
}

func randomString(t *testing.T) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// syncBuffer collects the server's log while its goroutines write to it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// fixture is one running server and what the test knows about it. Every
// secret, assertion and token the test handles is noted in sensitive, and
// the cleanup fails the test if any of them reached the server's log.
type fixture struct {
	t       *testing.T
	srv     *Server
	info    ReadyInfo
	hc      *http.Client
	log     *syncBuffer
	secrets map[string]string // client id -> secret

	mu        sync.Mutex
	sensitive []string
}

func (f *fixture) noteSensitive(s string) {
	f.mu.Lock()
	f.sensitive = append(f.sensitive, s)
	f.mu.Unlock()
}

// standardClients is the client set most tests use; secrets are random per
// run so the log check below means something.
func standardClients(t *testing.T) ([]ClientSpec, map[string]string) {
	secrets := map[string]string{
		"basic":        randomString(t),
		"post":         randomString(t),
		"introspector": randomString(t),
	}
	return []ClientSpec{
		{ID: "basic", Secret: secrets["basic"], TokenEndpointAuthMethod: authBasic, Scopes: []string{"read", "write"}},
		{ID: "post", Secret: secrets["post"], TokenEndpointAuthMethod: authPost, Scopes: []string{"read"}},
		{ID: "introspector", Secret: secrets["introspector"], TokenEndpointAuthMethod: authBasic},
		{ID: "jwt-rs", TokenEndpointAuthMethod: authJWT, Scopes: []string{"read"}, JWKS: jwksV3(t, keyRSA_A())},
		{ID: "jwt-es", TokenEndpointAuthMethod: authJWT, TokenEndpointAuthSigningAlg: "ES256", JWKS: jwksV3(t, keyEC())},
		// No keys yet: they arrive through the admin endpoint, as a Vault
		// mount's do.
		{ID: "jwt-late", TokenEndpointAuthMethod: authJWT},
	}, secrets
}

func newFixture(t *testing.T, opts Options) *fixture {
	t.Helper()
	dir := t.TempDir()
	buf := &syncBuffer{}
	opts.Addr = "127.0.0.1:0"
	opts.CAFile = filepath.Join(dir, "ca.pem")
	opts.ReadyFile = filepath.Join(dir, "ready.json")
	opts.Log = buf
	var secrets map[string]string
	if opts.Clients == nil {
		opts.Clients, secrets = standardClients(t)
	}
	srv, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}

	// Talk to the server the way the e2e suite will: from the ready file and
	// the CA file, not from the in-process values.
	var info ReadyInfo
	b, err := os.ReadFile(opts.ReadyFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &info); err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(info.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("CA file holds no certificate")
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	f := &fixture{
		t: t, srv: srv, info: info, log: buf, secrets: secrets,
		hc: &http.Client{Transport: tr, Timeout: 30 * time.Second},
	}
	for _, s := range secrets {
		f.noteSensitive(s)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		tr.CloseIdleConnections()
		logs := buf.String()
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, s := range f.sensitive {
			if s != "" && strings.Contains(logs, s) {
				// Say which kind without printing the value itself.
				t.Errorf("the server log holds a secret, assertion or token (%d bytes)", len(s))
			}
		}
		if t.Failed() {
			for _, s := range f.sensitive {
				if s != "" {
					logs = strings.ReplaceAll(logs, s, "(masked)")
				}
			}
			t.Logf("server log, its secrets, assertions and tokens masked:\n%s", logs)
		}
	})
	return f
}

// assertionClaims are the claims of a client assertion; fresh() fills them
// as RFC 7523 and the interop notes want them.
type assertionClaims struct {
	iss, sub, aud, jti string
	iat, exp           time.Time
	noExp              bool
}

func (f *fixture) fresh(clientID string) assertionClaims {
	now := time.Now()
	return assertionClaims{
		iss: clientID, sub: clientID, aud: f.info.TokenEndpoint, jti: randomString(f.t),
		iat: now.Add(-5 * time.Second), exp: now.Add(2 * time.Minute),
	}
}

func (f *fixture) sign(k signingKey, c assertionClaims) string {
	f.t.Helper()
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: k.alg, Key: jose.JSONWebKey{Key: k.priv, KeyID: k.kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		f.t.Fatal(err)
	}
	claims := jwt.Claims{
		Issuer: c.iss, Subject: c.sub, Audience: jwt.Audience{c.aud}, ID: c.jti,
		IssuedAt: jwt.NewNumericDate(c.iat),
	}
	if !c.noExp {
		claims.Expiry = jwt.NewNumericDate(c.exp)
	}
	raw, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		f.t.Fatal(err)
	}
	f.noteSensitive(raw)
	return raw
}

// post sends a form and decodes a JSON answer (if any).
func (f *fixture) post(endpoint string, form url.Values, basicUser, basicPass string) (int, map[string]any) {
	f.t.Helper()
	req, err := http.NewRequestWithContext(f.t.Context(), http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		f.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if basicUser != "" {
		req.SetBasicAuth(url.QueryEscape(basicUser), url.QueryEscape(basicPass))
	}
	resp, err := f.hc.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	out := map[string]any{}
	if len(bytes.TrimSpace(body)) > 0 {
		if err := json.Unmarshal(body, &out); err != nil {
			f.t.Fatalf("%s answered %d with non-JSON %q", endpoint, resp.StatusCode, body)
		}
	}
	if tok, ok := out["access_token"].(string); ok {
		f.noteSensitive(tok)
	}
	return resp.StatusCode, out
}

// jwtToken asks for a token with a client assertion.
func (f *fixture) jwtToken(assertion, scope string) (int, map[string]any) {
	form := url.Values{
		"grant_type":            {"client_credentials"},
		"client_assertion_type": {jwtBearer},
		"client_assertion":      {assertion},
	}
	if scope != "" {
		form.Set("scope", scope)
	}
	return f.post(f.info.TokenEndpoint, form, "", "")
}

func (f *fixture) mustJWTToken(k signingKey, clientID string) string {
	f.t.Helper()
	code, body := f.jwtToken(f.sign(k, f.fresh(clientID)), "")
	if code != http.StatusOK {
		f.t.Fatalf("token for %s with kid %s: %d %v", clientID, k.kid, code, body)
	}
	return body["access_token"].(string)
}

// introspect asks as the separate introspection client.
func (f *fixture) introspect(token string) map[string]any {
	f.t.Helper()
	code, body := f.post(f.info.IntrospectionEndpoint,
		url.Values{"token": {token}, "token_type_hint": {"access_token"}},
		"introspector", f.secrets["introspector"])
	if code != http.StatusOK {
		f.t.Fatalf("introspection: %d %v", code, body)
	}
	return body
}

func (f *fixture) putJWKS(clientID string, doc []byte) (int, string) {
	f.t.Helper()
	req, err := http.NewRequestWithContext(f.t.Context(), http.MethodPut, f.info.AdminClientsURL+"/"+clientID+"/jwks", bytes.NewReader(doc))
	if err != nil {
		f.t.Fatal(err)
	}
	resp, err := f.hc.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func wantError(t *testing.T, what string, code int, body map[string]any, wantCode int, wantErr string) {
	t.Helper()
	if code != wantCode || body["error"] != wantErr {
		t.Errorf("%s: got %d %v, want %d %s", what, code, body["error"], wantCode, wantErr)
	}
}

func TestReadyFileAndMetadata(t *testing.T) {
	f := newFixture(t, Options{})
	base := f.info.BaseURL
	if !strings.HasPrefix(base, "https://127.0.0.1:") {
		t.Fatalf("base URL %q", base)
	}
	if f.info.TokenEndpoint != base+"/oauth2/token" || f.info.RevocationEndpoint != base+"/oauth2/revoke" ||
		f.info.IntrospectionEndpoint != base+"/oauth2/introspect" {
		t.Errorf("endpoints %+v", f.info)
	}
	if len(f.info.AssertionAudiences) != 1 || f.info.AssertionAudiences[0] != f.info.TokenEndpoint {
		t.Errorf("assertion audiences %v", f.info.AssertionAudiences)
	}
	if f.info.TokenLifetime != "1h0m0s" || f.info.PID != os.Getpid() {
		t.Errorf("ready file %+v", f.info)
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, base+"/.well-known/oauth-authorization-server", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := f.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var md map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&md); err != nil {
		t.Fatal(err)
	}
	if md["token_endpoint"] != f.info.TokenEndpoint || md["issuer"] != base {
		t.Errorf("metadata %v", md)
	}
}

func TestClientSecretMethods(t *testing.T) {
	f := newFixture(t, Options{})
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, f.hc)

	basic := clientcredentials.Config{
		ClientID: "basic", ClientSecret: f.secrets["basic"], TokenURL: f.info.TokenEndpoint,
		Scopes: []string{"read"}, AuthStyle: oauth2.AuthStyleInHeader,
	}
	tok, err := basic.Token(ctx)
	if err != nil {
		t.Fatalf("client_secret_basic: %v", err)
	}
	f.noteSensitive(tok.AccessToken)
	in := f.introspect(tok.AccessToken)
	if in["active"] != true || in["client_id"] != "basic" || in["scope"] != "read" {
		t.Errorf("introspection of the basic client's token: %v", in)
	}

	post := clientcredentials.Config{
		ClientID: "post", ClientSecret: f.secrets["post"], TokenURL: f.info.TokenEndpoint,
		AuthStyle: oauth2.AuthStyleInParams,
	}
	tok, err = post.Token(ctx)
	if err != nil {
		t.Fatalf("client_secret_post: %v", err)
	}
	f.noteSensitive(tok.AccessToken)
	if in := f.introspect(tok.AccessToken); in["active"] != true || in["client_id"] != "post" {
		t.Errorf("introspection of the post client's token: %v", in)
	}

	// fosite holds each client to its registered method and scopes.
	code, body := f.post(f.info.TokenEndpoint, url.Values{"grant_type": {"client_credentials"}}, "post", f.secrets["post"])
	wantError(t, "basic credentials of a client_secret_post client", code, body, 401, "invalid_client")
	code, body = f.post(f.info.TokenEndpoint, url.Values{
		"grant_type": {"client_credentials"}, "client_id": {"basic"}, "client_secret": {f.secrets["basic"]},
	}, "", "")
	wantError(t, "post credentials of a client_secret_basic client", code, body, 401, "invalid_client")
	code, body = f.post(f.info.TokenEndpoint, url.Values{"grant_type": {"client_credentials"}}, "basic", "wrong")
	wantError(t, "wrong secret", code, body, 401, "invalid_client")
	code, body = f.post(f.info.TokenEndpoint, url.Values{"grant_type": {"client_credentials"}, "scope": {"admin"}}, "basic", f.secrets["basic"])
	wantError(t, "unregistered scope", code, body, 400, "invalid_scope")
}

func TestPrivateKeyJWT(t *testing.T) {
	f := newFixture(t, Options{})

	t.Run("RS256", func(t *testing.T) {
		code, body := f.jwtToken(f.sign(keyRSA_A(), f.fresh("jwt-rs")), "read")
		if code != http.StatusOK {
			t.Fatalf("%d %v", code, body)
		}
		if body["token_type"] != "bearer" || body["scope"] != "read" {
			t.Errorf("token answer: token_type %v, scope %v", body["token_type"], body["scope"])
		}
		if in := f.introspect(body["access_token"].(string)); in["active"] != true || in["client_id"] != "jwt-rs" || in["sub"] != "jwt-rs" {
			t.Errorf("introspection %v", in)
		}
	})
	t.Run("ES256", func(t *testing.T) {
		tok := f.mustJWTToken(keyEC(), "jwt-es")
		if in := f.introspect(tok); in["active"] != true || in["client_id"] != "jwt-es" {
			t.Errorf("introspection %v", in)
		}
	})
	t.Run("client_id beside the assertion", func(t *testing.T) {
		form := url.Values{
			"grant_type": {"client_credentials"}, "client_id": {"jwt-rs"},
			"client_assertion_type": {jwtBearer}, "client_assertion": {f.sign(keyRSA_A(), f.fresh("jwt-rs"))},
		}
		if code, body := f.post(f.info.TokenEndpoint, form, "", ""); code != http.StatusOK {
			t.Errorf("%d %v", code, body)
		}
	})
	t.Run("alg other than registered", func(t *testing.T) {
		// An ES256 key listed in an RS256 client's JWKS would still be
		// refused: fosite compares the header's alg with the registration
		// before it looks for a key.
		code, body := f.jwtToken(f.sign(signingKey{"rs-1", jose.ES256, ecKey()}, f.fresh("jwt-rs")), "")
		wantError(t, "ES256 assertion for an RS256 client", code, body, 401, "invalid_client")
		code, body = f.jwtToken(f.sign(signingKey{"rs-1", jose.PS256, rsaKeyA()}, f.fresh("jwt-rs")), "")
		wantError(t, "PS256 assertion for an RS256 client", code, body, 401, "invalid_client")
	})
	t.Run("iss or sub not the client", func(t *testing.T) {
		c := f.fresh("jwt-rs")
		c.iss = "someone-else"
		code, body := f.jwtToken(f.sign(keyRSA_A(), c), "")
		wantError(t, "iss", code, body, 401, "invalid_client")
		c = f.fresh("jwt-rs")
		c.sub = "jwt-es"
		code, body = f.jwtToken(f.sign(keyRSA_A(), c), "")
		wantError(t, "sub naming another client", code, body, 401, "invalid_client")
	})
	t.Run("exp", func(t *testing.T) {
		c := f.fresh("jwt-rs")
		c.noExp = true
		code, body := f.jwtToken(f.sign(keyRSA_A(), c), "")
		wantError(t, "no exp", code, body, 401, "invalid_client")
		// fosite v0.49 passes the time checks' bare error up instead of an
		// OAuth2 one, so an expired assertion (or an iat or nbf ahead of the
		// server's clock: it allows no leeway) is a 500 "error", not an
		// invalid_client. A client must not take such a 500 for an outage
		// worth retrying with the same assertion.
		c = f.fresh("jwt-rs")
		c.iat, c.exp = time.Now().Add(-time.Hour), time.Now().Add(-time.Minute)
		code, body = f.jwtToken(f.sign(keyRSA_A(), c), "")
		wantError(t, "expired", code, body, 500, "error")
	})
	t.Run("iat in the future", func(t *testing.T) {
		c := f.fresh("jwt-rs")
		c.iat = time.Now().Add(time.Minute)
		code, body := f.jwtToken(f.sign(keyRSA_A(), c), "")
		wantError(t, "iat a minute ahead", code, body, 500, "error")
	})
	t.Run("unknown kid", func(t *testing.T) {
		// fosite calls a kid missing from the JWKS a malformed request.
		code, body := f.jwtToken(f.sign(keyRSA_B(), f.fresh("jwt-rs")), "")
		wantError(t, "kid not in the JWKS", code, body, 400, "invalid_request")
	})
	t.Run("right kid, wrong key", func(t *testing.T) {
		code, body := f.jwtToken(f.sign(signingKey{"rs-1", jose.RS256, rsaKeyB()}, f.fresh("jwt-rs")), "")
		wantError(t, "signature by another key", code, body, 401, "invalid_client")
	})
	t.Run("secret for a private_key_jwt client", func(t *testing.T) {
		code, body := f.post(f.info.TokenEndpoint, url.Values{"grant_type": {"client_credentials"}}, "jwt-rs", "anything")
		wantError(t, "basic auth", code, body, 401, "invalid_client")
	})
}

func TestJTIIsSingleUse(t *testing.T) {
	f := newFixture(t, Options{})
	a := f.sign(keyRSA_A(), f.fresh("jwt-rs"))
	if code, body := f.jwtToken(a, ""); code != http.StatusOK {
		t.Fatalf("first use: %d %v", code, body)
	}
	code, body := f.jwtToken(a, "")
	wantError(t, "the same assertion again", code, body, 400, "jti_known")

	// A new assertion with an old jti is refused too.
	c := f.fresh("jwt-rs")
	c.jti = randomString(t)
	if code, body := f.jwtToken(f.sign(keyRSA_A(), c), ""); code != http.StatusOK {
		t.Fatalf("%d %v", code, body)
	}
	c.exp = c.exp.Add(time.Second)
	code, body = f.jwtToken(f.sign(keyRSA_A(), c), "")
	wantError(t, "a re-signed assertion with a used jti", code, body, 400, "jti_known")
}

func TestWrongAudience(t *testing.T) {
	f := newFixture(t, Options{})
	tokenURL := f.info.TokenEndpoint
	u, _ := url.Parse(tokenURL)
	for name, aud := range map[string]string{
		"trailing slash":  tokenURL + "/",
		"issuer":          f.info.BaseURL,
		"upper-case host": "HTTPS://" + strings.ToUpper(u.Host) + u.Path,
		"localhost":       "https://localhost:" + u.Port() + u.Path,
		"revoke endpoint": f.info.RevocationEndpoint,
	} {
		c := f.fresh("jwt-rs")
		c.aud = aud
		code, body := f.jwtToken(f.sign(keyRSA_A(), c), "")
		wantError(t, "aud "+name, code, body, 401, "invalid_client")
	}

	// fosite records the jti before it checks aud: a refused assertion
	// has used its jti up.
	c := f.fresh("jwt-rs")
	c.aud = tokenURL + "/"
	code, body := f.jwtToken(f.sign(keyRSA_A(), c), "")
	wantError(t, "wrong aud", code, body, 401, "invalid_client")
	c.aud = tokenURL
	code, body = f.jwtToken(f.sign(keyRSA_A(), c), "")
	wantError(t, "right aud with the refused assertion's jti", code, body, 400, "jti_known")
}

func TestIssuerAudienceWhenAccepted(t *testing.T) {
	f := newFixture(t, Options{AcceptIssuerAudience: true})
	c := f.fresh("jwt-rs")
	c.aud = f.info.BaseURL
	if code, body := f.jwtToken(f.sign(keyRSA_A(), c), ""); code != http.StatusOK {
		t.Errorf("issuer as aud: %d %v", code, body)
	}
	if code, body := f.jwtToken(f.sign(keyRSA_A(), f.fresh("jwt-rs")), ""); code != http.StatusOK {
		t.Errorf("token endpoint as aud: %d %v", code, body)
	}
}

func TestRevocation(t *testing.T) {
	f := newFixture(t, Options{})
	revoke := func(token string, k signingKey, c assertionClaims) int {
		code, _ := f.post(f.info.RevocationEndpoint, url.Values{
			"token": {token}, "token_type_hint": {"access_token"},
			"client_assertion_type": {jwtBearer}, "client_assertion": {f.sign(k, c)},
		}, "", "")
		return code
	}

	t.Run("private_key_jwt", func(t *testing.T) {
		tok := f.mustJWTToken(keyRSA_A(), "jwt-rs")
		if in := f.introspect(tok); in["active"] != true {
			t.Fatalf("fresh token inactive: %v", in)
		}
		// The revocation endpoint wants the token endpoint as aud, too.
		c := f.fresh("jwt-rs")
		c.aud = f.info.RevocationEndpoint
		if code := revoke(tok, keyRSA_A(), c); code != http.StatusUnauthorized {
			t.Errorf("revocation endpoint as aud: %d, want 401", code)
		}
		if code := revoke(tok, keyRSA_A(), f.fresh("jwt-rs")); code != http.StatusOK {
			t.Fatalf("revoke: %d", code)
		}
		if in := f.introspect(tok); in["active"] != false {
			t.Errorf("revoked token still active: %v", in)
		}
		// Revoking again, or an unknown token, is 200 as RFC 7009 wants.
		if code := revoke(tok, keyRSA_A(), f.fresh("jwt-rs")); code != http.StatusOK {
			t.Errorf("second revoke: %d", code)
		}
	})

	t.Run("client_secret_basic", func(t *testing.T) {
		ctx := context.WithValue(context.Background(), oauth2.HTTPClient, f.hc)
		cc := clientcredentials.Config{ClientID: "basic", ClientSecret: f.secrets["basic"], TokenURL: f.info.TokenEndpoint, AuthStyle: oauth2.AuthStyleInHeader}
		tok, err := cc.Token(ctx)
		if err != nil {
			t.Fatal(err)
		}
		f.noteSensitive(tok.AccessToken)
		code, _ := f.post(f.info.RevocationEndpoint, url.Values{"token": {tok.AccessToken}, "token_type_hint": {"access_token"}}, "basic", f.secrets["basic"])
		if code != http.StatusOK {
			t.Fatalf("revoke: %d", code)
		}
		if in := f.introspect(tok.AccessToken); in["active"] != false {
			t.Errorf("revoked token still active: %v", in)
		}
		code, _ = f.post(f.info.RevocationEndpoint, url.Values{"token": {"x"}}, "basic", "wrong")
		if code != http.StatusUnauthorized {
			t.Errorf("revoke with a wrong secret: %d, want 401", code)
		}
	})

	t.Run("200 that revoked nothing", func(t *testing.T) {
		// Why tests must introspect: fosite answers 200 when the
		// assertion's jti was used already, and when the token belongs
		// to another client, and revokes nothing.
		tok := f.mustJWTToken(keyRSA_A(), "jwt-rs")
		used := f.fresh("jwt-rs")
		if code := revoke("not-a-token", keyRSA_A(), used); code != http.StatusOK {
			t.Fatalf("first revoke: %d", code)
		}
		if code := revoke(tok, keyRSA_A(), used); code != http.StatusOK {
			t.Errorf("revoke with a used jti: %d (fosite answers 200)", code)
		}
		if code := revoke(tok, keyEC(), f.fresh("jwt-es")); code != http.StatusOK {
			t.Errorf("revoke by another client: %d (fosite answers 200)", code)
		}
		if in := f.introspect(tok); in["active"] != true {
			t.Errorf("token revoked after all: %v", in)
		}
		if !strings.Contains(f.log.String(), "POST /oauth2/revoke 200 client=\"jwt-rs\" assertion(kid=\"rs-1\" alg=\"RS256\") error=jti_known") {
			t.Errorf("the log does not say the 200 was a refused jti")
		}
	})

	t.Run("introspection needs the introspection client", func(t *testing.T) {
		code, body := f.post(f.info.IntrospectionEndpoint, url.Values{"token": {"x"}}, "introspector", "wrong")
		wantError(t, "wrong introspection secret", code, body, 401, "request_unauthorized")
		code, body = f.post(f.info.IntrospectionEndpoint, url.Values{"token": {"x"}}, "", "")
		wantError(t, "no authentication", code, body, 401, "request_unauthorized")
	})
}

func TestTokenExpiry(t *testing.T) {
	f := newFixture(t, Options{TokenLifetime: time.Second})
	if f.info.TokenLifetime != "1s" {
		t.Errorf("ready file lifetime %q", f.info.TokenLifetime)
	}
	code, body := f.jwtToken(f.sign(keyRSA_A(), f.fresh("jwt-rs")), "")
	if code != http.StatusOK {
		t.Fatalf("%d %v", code, body)
	}
	if exp, _ := body["expires_in"].(float64); exp < 0 || exp > 1 {
		t.Errorf("expires_in %v", body["expires_in"])
	}
	tok := body["access_token"].(string)
	time.Sleep(1500 * time.Millisecond)
	if in := f.introspect(tok); in["active"] != false {
		t.Errorf("expired token still active: %v", in)
	}
}

// jwksServer serves a JWKS the test can swap, counting fetches.
type jwksServer struct {
	doc     atomic.Pointer[[]byte]
	fetches atomic.Int32
}

func (j *jwksServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	j.fetches.Add(1)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(*j.doc.Load()) // a failed write shows up as the fetching client's error
}

func (j *jwksServer) set(doc []byte) { j.doc.Store(&doc) }

func TestJWKSURI(t *testing.T) {
	for _, scheme := range []string{"https", "http on loopback"} {
		t.Run(scheme, func(t *testing.T) {
			js := &jwksServer{}
			js.set(jwksJSON(t, keyRSA_A()))
			var hs *httptest.Server
			opts := Options{}
			if scheme == "https" {
				hs = httptest.NewTLSServer(js)
				opts.JWKSRoots = x509.NewCertPool()
				opts.JWKSRoots.AddCert(hs.Certificate())
			} else {
				hs = httptest.NewServer(js)
			}
			defer hs.Close()
			clients, secrets := standardClients(t)
			clients = append(clients, ClientSpec{ID: "jwt-uri", TokenEndpointAuthMethod: authJWT, JWKSURI: hs.URL + "/jwks"})
			opts.Clients = clients
			f := newFixture(t, opts)
			f.secrets = secrets
			for _, s := range secrets {
				f.noteSensitive(s)
			}

			tok := f.mustJWTToken(keyRSA_A(), "jwt-uri")
			if in := f.introspect(tok); in["active"] != true || in["client_id"] != "jwt-uri" {
				t.Errorf("introspection %v", in)
			}
			f.mustJWTToken(keyRSA_A(), "jwt-uri")
			if n := js.fetches.Load(); n < 1 {
				t.Fatalf("JWKS fetched %d times", n)
			}

			// Rollover: publish the new key beside the old, then sign
			// with it. fosite's cached set lacks the new kid, so it
			// refetches at once instead of waiting out its cache.
			before := js.fetches.Load()
			js.set(jwksJSON(t, keyRSA_A(), keyRSA_B()))
			f.mustJWTToken(keyRSA_B(), "jwt-uri")
			if js.fetches.Load() == before {
				t.Errorf("fosite did not refetch the JWKS for an unknown kid")
			}
			f.mustJWTToken(keyRSA_A(), "jwt-uri")

			// The old key leaves the JWKS: fosite still has it cached, and
			// a cached kid is not refetched, so it is accepted until the
			// cache expires (an hour by default).
			f.srv.jwks.WaitForCache() // the cache stores asynchronously
			js.set(jwksJSON(t, keyRSA_B()))
			f.mustJWTToken(keyRSA_A(), "jwt-uri")
		})
	}

	t.Run("untrusted https", func(t *testing.T) {
		js := &jwksServer{}
		js.set(jwksJSON(t, keyRSA_A()))
		hs := httptest.NewUnstartedServer(js)
		hs.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake is the point
		hs.StartTLS()
		defer hs.Close()
		clients, _ := standardClients(t)
		f := newFixture(t, Options{
			Clients:   append(clients, ClientSpec{ID: "jwt-uri", TokenEndpointAuthMethod: authJWT, JWKSURI: hs.URL}),
			JWKSRoots: x509.NewCertPool(),
		})
		code, body := f.jwtToken(f.sign(keyRSA_A(), f.fresh("jwt-uri")), "")
		wantError(t, "JWKS behind an untrusted certificate", code, body, 500, "server_error")
	})
}

func TestAdminJWKSReplacement(t *testing.T) {
	f := newFixture(t, Options{})

	// A client registered before its keys exist.
	code, body := f.jwtToken(f.sign(keyRSA_A(), f.fresh("jwt-late")), "")
	wantError(t, "no keys registered", code, body, 401, "invalid_client")

	if code, msg := f.putJWKS("jwt-late", jwksJSON(t, keyRSA_A())); code != http.StatusNoContent {
		t.Fatalf("put JWKS: %d %s", code, msg)
	}
	f.mustJWTToken(keyRSA_A(), "jwt-late")

	// Rollover: new key published beside the old one, then alone.
	if code, msg := f.putJWKS("jwt-late", jwksJSON(t, keyRSA_A(), keyRSA_B())); code != http.StatusNoContent {
		t.Fatalf("put JWKS: %d %s", code, msg)
	}
	f.mustJWTToken(keyRSA_B(), "jwt-late")
	f.mustJWTToken(keyRSA_A(), "jwt-late")
	if code, msg := f.putJWKS("jwt-late", jwksJSON(t, keyRSA_B())); code != http.StatusNoContent {
		t.Fatalf("put JWKS: %d %s", code, msg)
	}
	f.mustJWTToken(keyRSA_B(), "jwt-late")
	code, body = f.jwtToken(f.sign(keyRSA_A(), f.fresh("jwt-late")), "")
	wantError(t, "dropped key", code, body, 400, "invalid_request")

	// The same on a client registered with a key from the start.
	if code, msg := f.putJWKS("jwt-rs", jwksJSON(t, keyRSA_B())); code != http.StatusNoContent {
		t.Fatalf("put JWKS: %d %s", code, msg)
	}
	f.mustJWTToken(keyRSA_B(), "jwt-rs")

	// Refused: private material, keys without use=sig, unknown clients,
	// secret clients.
	priv, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: rsaKeyA(), KeyID: "p", Use: "sig"}}})
	if code, _ := f.putJWKS("jwt-late", priv); code != http.StatusBadRequest {
		t.Errorf("private JWKS: %d, want 400", code)
	}
	noUse, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: rsaKeyA().Public(), KeyID: "n"}}})
	if code, msg := f.putJWKS("jwt-late", noUse); code != http.StatusBadRequest || !strings.Contains(msg, "use=sig") {
		t.Errorf("JWKS without use: %d %s", code, msg)
	}
	if code, _ := f.putJWKS("nobody", jwksJSON(t, keyRSA_B())); code != http.StatusNotFound {
		t.Errorf("unknown client: %d, want 404", code)
	}
	if code, _ := f.putJWKS("basic", jwksJSON(t, keyRSA_B())); code != http.StatusBadRequest {
		t.Errorf("secret client: %d, want 400", code)
	}
	// A refused upload leaves the keys as they were.
	f.mustJWTToken(keyRSA_B(), "jwt-late")
}

func TestAdminPutClient(t *testing.T) {
	f := newFixture(t, Options{})
	spec := map[string]any{
		"token_endpoint_auth_method":      "private_key_jwt",
		"token_endpoint_auth_signing_alg": "ES256",
		"jwks":                            json.RawMessage(jwksJSON(t, keyEC())),
	}
	b, _ := json.Marshal(spec)
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPut, f.info.AdminClientsURL+"/new-client", bytes.NewReader(b))
	resp, err := f.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("put client: %d", resp.StatusCode)
	}
	f.mustJWTToken(keyEC(), "new-client")

	spec["token_endpoint_auth_signing_alg"] = "EdDSA"
	b, _ = json.Marshal(spec)
	req, _ = http.NewRequestWithContext(t.Context(), http.MethodPut, f.info.AdminClientsURL+"/new-client", bytes.NewReader(b))
	resp, err = f.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("EdDSA client: %d, want 400 (fosite cannot verify EdDSA)", resp.StatusCode)
	}
}

func TestRequestLog(t *testing.T) {
	f := newFixture(t, Options{})
	f.mustJWTToken(keyRSA_A(), "jwt-rs")
	f.post(f.info.TokenEndpoint, url.Values{"grant_type": {"client_credentials"}}, "basic", "wrong")
	logs := f.log.String()
	for _, want := range []string{
		`POST /oauth2/token 200 client="jwt-rs"`,
		`POST /oauth2/token 401 client="basic" error=invalid_client`,
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	if strings.Contains(logs, "wrong") {
		t.Errorf("the log holds a refused secret")
	}
}

func TestClientsFile(t *testing.T) {
	dir := t.TempDir()
	doc := fmt.Sprintf(`{"clients": [
  {"id": "basic", "secret": "s3", "token_endpoint_auth_method": "client_secret_basic", "scopes": ["read"]},
  {"id": "jwt", "token_endpoint_auth_method": "private_key_jwt", "token_endpoint_auth_signing_alg": "ES256", "jwks": %s},
  {"id": "uri", "token_endpoint_auth_method": "private_key_jwt", "jwks_uri": "http://127.0.0.1:8200/v1/oauth/jwks"}
]}`, jwksJSON(t, keyEC()))
	path := filepath.Join(dir, "clients.json")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	cs, err := readClientsFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if err := c.validate(); err != nil {
			t.Errorf("%s: %v", c.ID, err)
		}
	}

	for name, c := range map[string]ClientSpec{
		"no method":           {ID: "a", Secret: "x"},
		"basic, no secret":    {ID: "a", TokenEndpointAuthMethod: authBasic},
		"jwt with a secret":   {ID: "a", TokenEndpointAuthMethod: authJWT, Secret: "x"},
		"jwt, HS256":          {ID: "a", TokenEndpointAuthMethod: authJWT, TokenEndpointAuthSigningAlg: "HS256"},
		"jwt, both key kinds": {ID: "a", TokenEndpointAuthMethod: authJWT, JWKS: jwksV3(t, keyEC()), JWKSURI: "https://127.0.0.1/jwks"},
		"http off loopback":   {ID: "a", TokenEndpointAuthMethod: authJWT, JWKSURI: "http://192.0.2.1/jwks"},
		"none":                {ID: "a", TokenEndpointAuthMethod: "none"},
	} {
		if err := c.validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}

	if err := os.WriteFile(path, []byte(`{"clients": [{"id": "a", "client_secret": "x"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readClientsFile(path); err == nil {
		t.Errorf("a misspelled field was accepted")
	}
}

func TestRefusesNonLoopback(t *testing.T) {
	if _, err := Start(Options{Addr: "0.0.0.0:0", Log: io.Discard}); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Errorf("Start on 0.0.0.0: %v", err)
	}
}
