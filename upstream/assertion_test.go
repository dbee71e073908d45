package upstream_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

// staticSigner signs with one key and counts how often it was asked.
type staticSigner struct {
	mu    sync.Mutex
	key   upstream.SigningKey
	err   error
	asked int
}

func (s *staticSigner) SigningKey(context.Context) (upstream.SigningKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.asked++
	return s.key, s.err
}

func testKey(t *testing.T, alg string) upstream.SigningKey {
	t.Helper()
	var (
		k   crypto.Signer
		err error
	)
	switch alg {
	case "RS256":
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ES256":
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "EdDSA":
		_, k, err = ed25519.GenerateKey(rand.Reader)
	}
	require.NoError(t, err)
	return upstream.SigningKey{KeyID: "kid-" + alg, Algorithm: alg, Key: k}
}

// decodeAssertion verifies an assertion with the key's public half, as a
// server would, and returns its header and raw claims.
func decodeAssertion(t *testing.T, raw string, key upstream.SigningKey) (jose.Header, map[string]any) {
	t.Helper()
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(key.Algorithm)})
	require.NoError(t, err)
	require.Len(t, tok.Headers, 1)
	var claims map[string]any
	require.NoError(t, tok.Claims(key.Key.Public(), &claims), "the signature verifies with the public key")
	return tok.Headers[0], claims
}

func TestNewAssertion_ClaimsAndHeaderForEveryKeyType(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 999_000_000, time.UTC)
	for _, alg := range []string{"RS256", "ES256", "EdDSA"} {
		t.Run(alg, func(t *testing.T) {
			key := testKey(t, alg)
			raw, err := upstream.NewAssertion(key, "client-1", "https://as.example/oauth2/token", now)
			require.NoError(t, err)
			header, claims := decodeAssertion(t, raw, key)

			require.Equal(t, alg, header.Algorithm)
			require.Equal(t, "kid-"+alg, header.KeyID)
			require.Equal(t, "JWT", header.ExtraHeaders["typ"])
			require.Nil(t, header.JSONWebKey, "the key is named by kid, not embedded")

			require.Equal(t, "client-1", claims["iss"])
			require.Equal(t, "client-1", claims["sub"])
			require.Equal(t, "https://as.example/oauth2/token", claims["aud"], "aud is one string, the token URL exactly")
			// iat is 5 s back and truncated, never rounded up; exp is a
			// minute on. The promised figures, not the code's constants.
			require.Equal(t, float64(now.Unix()-5), claims["iat"])
			require.Equal(t, float64(now.Unix()+60), claims["exp"])
			require.NotContains(t, claims, "nbf")
			jti, _ := claims["jti"].(string)
			require.GreaterOrEqual(t, len(jti), 20, "the jti is random enough never to repeat")
			require.Len(t, claims, 6, "iss, sub, aud, jti, iat and exp, nothing else")
		})
	}
}

func TestNewAssertion_FreshJTIEveryTimeAndBadKeysRefused(t *testing.T) {
	key := testKey(t, "ES256")
	seen := map[string]bool{}
	for range 50 {
		raw, err := upstream.NewAssertion(key, "c", "aud", time.Now())
		require.NoError(t, err)
		_, claims := decodeAssertion(t, raw, key)
		jti := claims["jti"].(string)
		require.False(t, seen[jti], "a jti repeated")
		seen[jti] = true
	}

	for _, tc := range []struct {
		name string
		key  upstream.SigningKey
	}{
		{"no key", upstream.SigningKey{KeyID: "k", Algorithm: "RS256"}},
		{"no kid", upstream.SigningKey{Algorithm: "ES256", Key: key.Key}},
		{"no alg", upstream.SigningKey{KeyID: "k", Key: key.Key}},
		{"alg of another key type", upstream.SigningKey{KeyID: "k", Algorithm: "RS256", Key: key.Key}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := upstream.NewAssertion(tc.key, "c", "aud", time.Now())
			require.Error(t, err)
		})
	}
}

// assertionServer is a token and a revocation endpoint that record what
// each request carried.
type assertionServer struct {
	srv  *httptest.Server
	mu   sync.Mutex
	seen []captured
	// status, when set, answers every request with it and this body.
	status int
	body   string
}

func newAssertionServer(t *testing.T) *assertionServer {
	t.Helper()
	a := &assertionServer{}
	a.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		require.NoError(t, r.ParseForm())
		a.mu.Lock()
		a.seen = append(a.seen, captured{auth: r.Header.Get("Authorization"), form: r.PostForm})
		status, body := a.status, a.body
		a.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if status != 0 {
			w.WriteHeader(status)
			_, _ = fmt.Fprint(w, body)
			return
		}
		if r.URL.Path == "/revoke" {
			return
		}
		_, _ = fmt.Fprint(w, `{"access_token":"tok","token_type":"bearer","expires_in":120}`)
	}))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *assertionServer) requests() []captured {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]captured(nil), a.seen...)
}

func TestAssertionTransport_FreshAssertionOnEveryTokenRequestAndRevocation(t *testing.T) {
	for _, tc := range []struct {
		name, audience, wantAud string
		grant                   upstream.GrantType
	}{
		{name: "aud is the token URL", grant: upstream.GrantClientCredentials},
		{name: "a configured audience replaces it", audience: "https://issuer.example", wantAud: "https://issuer.example", grant: upstream.GrantClientCredentials},
		{name: "the password grant authenticates the client the same way", grant: upstream.GrantPassword},
	} {
		t.Run(tc.name, func(t *testing.T) {
			as := newAssertionServer(t)
			key := testKey(t, "RS256")
			signer := &staticSigner{key: key}
			tokenURL := as.srv.URL + "/token"
			c := newClient(t, upstream.Config{
				TokenURL: tokenURL, RevocationURL: as.srv.URL + "/revoke", RevocationStyle: upstream.RevocationRFC7009,
				ClientID: "client-1", ClientSecret: "must-not-be-sent", GrantType: tc.grant, Username: "u", Password: "p",
				AuthMethod: upstream.AuthPrivateKeyJWT, Signer: signer, AssertionAudience: tc.audience, CACertPEM: caPEM(as.srv),
			})
			for range 2 {
				_, err := c.Token(context.Background(), upstream.TokenRequest{Scopes: []string{"read"}})
				require.NoError(t, err)
			}
			require.NoError(t, c.Logout(context.Background(), "tok"))

			want := tc.wantAud
			if want == "" {
				want = tokenURL
			}
			jtis := map[string]bool{}
			reqs := as.requests()
			require.Len(t, reqs, 3)
			for i, r := range reqs {
				require.Empty(t, r.auth, "request %d: no HTTP Basic beside the assertion", i)
				_, sent := r.form["client_secret"]
				require.False(t, sent, "request %d", i)
				require.Equal(t, "client-1", r.form.Get("client_id"))
				require.Equal(t, upstream.ClientAssertionType, r.form.Get("client_assertion_type"))
				header, claims := decodeAssertion(t, r.form.Get("client_assertion"), key)
				require.Equal(t, key.KeyID, header.KeyID)
				require.Equal(t, want, claims["aud"], "request %d: the same aud on the token and the revocation endpoint", i)
				jtis[claims["jti"].(string)] = true
			}
			require.Len(t, jtis, 3, "every request has its own jti")
			require.Equal(t, 3, signer.asked, "the signer is asked per request, so a rollover reaches the next one")
			require.Equal(t, "tok", reqs[2].form.Get("token"))
			require.Equal(t, "access_token", reqs[2].form.Get("token_type_hint"))
			require.Equal(t, "read", reqs[0].form.Get("scope"))
		})
	}
}

func TestAssertionTransport_OnlyTheConfiguredEndpointsGetAnAssertion(t *testing.T) {
	as := newAssertionServer(t)
	signer := &staticSigner{key: testKey(t, "ES256")}
	// The token URL is matched with its query; a DELETE logout elsewhere
	// authenticates with the token and gets no assertion.
	c := newClient(t, upstream.Config{
		TokenURL: as.srv.URL + "/token?tenant=a", GrantType: upstream.GrantClientCredentials, ClientID: "c",
		AuthMethod: upstream.AuthPrivateKeyJWT, Signer: signer, CACertPEM: caPEM(as.srv),
		RevocationURL: as.srv.URL + "/logout", // the DELETE style: no assertion
	})
	_, err := c.Token(context.Background(), upstream.TokenRequest{})
	require.NoError(t, err)
	require.NotEmpty(t, as.requests()[0].form.Get("client_assertion"))
	require.NoError(t, c.Logout(context.Background(), "tok"))
	require.Len(t, as.requests(), 2)
	require.Empty(t, as.requests()[1].form.Get("client_assertion"), "a DELETE logout carries the token, never an assertion")
	require.Equal(t, 1, signer.asked)
}

func TestAssertionTransport_SignerFailureAndMissingSigner(t *testing.T) {
	as := newAssertionServer(t)
	_, err := upstream.New(upstream.Config{TokenURL: as.srv.URL + "/token", GrantType: upstream.GrantClientCredentials,
		AuthMethod: upstream.AuthPrivateKeyJWT})
	require.ErrorContains(t, err, "needs a signer")

	signer := &staticSigner{err: errors.New("no current key")}
	c := newClient(t, upstream.Config{TokenURL: as.srv.URL + "/token", GrantType: upstream.GrantClientCredentials, ClientID: "c",
		AuthMethod: upstream.AuthPrivateKeyJWT, Signer: signer, CACertPEM: caPEM(as.srv)})
	_, err = c.Token(context.Background(), upstream.TokenRequest{})
	require.ErrorContains(t, err, "no key to sign the client assertion with: no current key")
	require.Empty(t, as.requests(), "nothing is sent without an assertion")
}

func TestAssertion_RefusalHintNamesKeyAudAndAlgAndNeverEchoesTheAssertion(t *testing.T) {
	as := newAssertionServer(t)
	key := testKey(t, "ES256")
	c := newClient(t, upstream.Config{TokenURL: as.srv.URL + "/token", RevocationURL: as.srv.URL + "/revoke",
		RevocationStyle: upstream.RevocationRFC7009, GrantType: upstream.GrantClientCredentials, ClientID: "client-1",
		AuthMethod: upstream.AuthPrivateKeyJWT, Signer: &staticSigner{key: key}, CACertPEM: caPEM(as.srv)})
	for _, tc := range []struct {
		status int
		code   string
		hint   bool
	}{
		{http.StatusUnauthorized, "invalid_client", true},
		{http.StatusBadRequest, "invalid_request", true}, // fosite's unknown kid
		{http.StatusBadRequest, "invalid_scope", false},
		{http.StatusServiceUnavailable, "temporarily_unavailable", false},
	} {
		t.Run(tc.code, func(t *testing.T) {
			// A server that echoes the assertion it was sent.
			as.mu.Lock()
			as.status, as.body = tc.status, `{"error":"`+tc.code+`","error_description":"bad assertion eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJjIn0.c2lnbmF0dXJl here"}`
			as.mu.Unlock()
			for _, call := range []func() error{
				func() error { _, err := c.Token(context.Background(), upstream.TokenRequest{}); return err },
				func() error { return c.Logout(context.Background(), "the-token") },
			} {
				err := call()
				var ue *upstream.Error
				require.ErrorAs(t, err, &ue)
				require.Equal(t, tc.status, ue.StatusCode)
				require.Equal(t, tc.code, ue.Code)
				require.False(t, strings.Contains(err.Error(), "eyJ"), "an echoed assertion is taken out")
				require.False(t, strings.Contains(err.Error(), "the-token"), "an echoed token is taken out")
				require.NotContains(t, err.Error(), "client_secret")
				if tc.hint {
					require.Contains(t, err.Error(), `kid "kid-ES256" (alg ES256)`)
					require.Contains(t, err.Error(), `aud "`+as.srv.URL+`/token"`)
					require.Contains(t, err.Error(), "jwks")
				} else {
					require.Empty(t, ue.Hint)
				}
			}
		})
	}
}

func TestRevokeRFC7009_SecretMethodsAndAnswers(t *testing.T) {
	const secret = "s3cr+t&x"
	for _, tc := range []struct {
		method   upstream.AuthMethod
		wantAuth string
		wantForm map[string]string
	}{
		{upstream.AuthClientSecretPost, "", map[string]string{"client_id": "id", "client_secret": secret}},
		{upstream.AuthClientSecretBasic, "Basic " + basic("id", url.QueryEscape(secret)), nil},
		{upstream.AuthClientSecretBasicRaw, "Basic " + basic("id", secret), nil},
	} {
		t.Run(string(tc.method), func(t *testing.T) {
			as := newAssertionServer(t)
			c := newClient(t, upstream.Config{TokenURL: as.srv.URL + "/token", RevocationURL: as.srv.URL + "/revoke",
				RevocationStyle: upstream.RevocationRFC7009, GrantType: upstream.GrantClientCredentials, ClientID: "id",
				ClientSecret: secret, AuthMethod: tc.method, CACertPEM: caPEM(as.srv)})
			require.NoError(t, c.Logout(context.Background(), "tok-1"))
			r := as.requests()[0]
			require.Equal(t, tc.wantAuth, r.auth)
			for k, v := range tc.wantForm {
				require.Equal(t, v, r.form.Get(k))
			}
			require.Equal(t, "tok-1", r.form.Get("token"))
			require.Equal(t, "access_token", r.form.Get("token_type_hint"))
			require.Empty(t, r.form.Get("client_assertion"))

			as.mu.Lock()
			as.status, as.body = http.StatusBadRequest, `{"error":"unsupported_token_type","error_description":"cannot revoke tok-1"}`
			as.mu.Unlock()
			err := c.Logout(context.Background(), "tok-1")
			var ue *upstream.Error
			require.ErrorAs(t, err, &ue)
			require.Equal(t, "unsupported_token_type", ue.Code)
			require.NotContains(t, err.Error(), "tok-1", "a token the server echoes is redacted")
			require.False(t, strings.Contains(err.Error(), secret), "the error holds the secret") // not NotContains: it would print it
		})
	}
}

// The JWKS a server would be given carries the public halves only: a
// sanity check of the go-jose behavior the engine relies on.
func TestJWK_PublicKeyMarshalsPublicMembersOnly(t *testing.T) {
	for _, alg := range []string{"RS256", "ES256", "EdDSA"} {
		key := testKey(t, alg)
		doc, err := json.Marshal(jose.JSONWebKey{Key: key.Key.Public(), KeyID: "k", Algorithm: alg, Use: "sig"})
		require.NoError(t, err)
		var m map[string]any
		require.NoError(t, json.Unmarshal(doc, &m))
		for _, private := range []string{"d", "p", "q", "dp", "dq", "qi"} {
			_, has := m[private]
			require.False(t, has, alg)
		}
	}
}

// The retries of a call go through the assertion transport one by one, so
// each attempt carries an assertion of its own: a server refuses a jti it
// has seen, even on an attempt it answered with a 503.
func TestAssertionTransport_EveryRetryAttemptSignsAnew(t *testing.T) {
	as := newAssertionServer(t)
	key := testKey(t, "RS256")
	as.mu.Lock()
	as.status, as.body = http.StatusServiceUnavailable, `{"error":"temporarily_unavailable"}`
	as.mu.Unlock()
	var once sync.Once
	as.srv.Config.Handler = func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			next.ServeHTTP(w, r)
			once.Do(func() { // the first attempt failed; let the next ones through
				as.mu.Lock()
				as.status = 0
				as.mu.Unlock()
			})
		})
	}(as.srv.Config.Handler)
	c := newClient(t, upstream.Config{TokenURL: as.srv.URL + "/token", GrantType: upstream.GrantClientCredentials, ClientID: "c",
		AuthMethod: upstream.AuthPrivateKeyJWT, Signer: &staticSigner{key: key}, CACertPEM: caPEM(as.srv),
		MaxAttempts: 3, RetryBackoff: time.Millisecond})
	_, err := c.Token(context.Background(), upstream.TokenRequest{})
	require.NoError(t, err)
	reqs := as.requests()
	require.Len(t, reqs, 2, "one failed attempt, one retry")
	_, first := decodeAssertion(t, reqs[0].form.Get("client_assertion"), key)
	_, second := decodeAssertion(t, reqs[1].form.Get("client_assertion"), key)
	require.NotEqual(t, first["jti"], second["jti"], "the retry signed a fresh assertion")
}
