package upstream

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// ClientAssertionType is the client_assertion_type of a JWT client
// assertion (RFC 7523 §2.2).
const ClientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

const (
	// AssertionLifetime is how long after it is signed an assertion
	// expires. Servers refuse a jti they saw until the assertion's exp, so a
	// short one keeps their replay caches small; a minute is far longer than
	// one exchange takes.
	AssertionLifetime = time.Minute
	// AssertionBackdate is how far before now an assertion's iat lies.
	// Several servers check iat with no leeway: a server whose clock runs a
	// few seconds behind this machine's would otherwise see an assertion
	// from the future and refuse it.
	AssertionBackdate = 5 * time.Second
)

// SigningKey is the key a client assertion is signed with. Key is the
// private key; this package only ever signs with it.
type SigningKey struct {
	// KeyID goes into the JWS header as kid, so a server finds the key
	// in the client's JWKS, and refetches the JWKS for a kid it has not
	// seen (a rollover).
	KeyID string
	// Algorithm is the JWS alg: RS256, ES256 or EdDSA.
	Algorithm string
	Key       crypto.Signer
}

// AssertionSigner hands out the key to sign the next client assertion
// with. It is asked once per HTTP request, so a key rollover reaches the
// very next request without a new client.
type AssertionSigner interface {
	SigningKey(ctx context.Context) (SigningKey, error)
}

// NewAssertion signs a client assertion (RFC 7523 §3): iss and sub are the
// client id, aud the audience, a random jti, iat now less
// AssertionBackdate (NumericDate truncates, so it is never rounded up),
// exp now plus AssertionLifetime, and the key's kid in the header. Every
// call makes a new jti: servers refuse a jti they have seen before.
func NewAssertion(key SigningKey, clientID, audience string, now time.Time) (string, error) {
	if key.Key == nil || key.KeyID == "" || key.Algorithm == "" {
		return "", errors.New("the signing key is incomplete")
	}
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.SignatureAlgorithm(key.Algorithm), Key: jose.JSONWebKey{Key: key.Key, KeyID: key.KeyID}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", fmt.Errorf("make a %s signer for key %s: %w", key.Algorithm, key.KeyID, err)
	}
	jti := make([]byte, 18)
	if _, err := rand.Read(jti); err != nil {
		return "", err
	}
	claims := jwt.Claims{
		Issuer:   clientID,
		Subject:  clientID,
		Audience: jwt.Audience{audience},
		ID:       base64.RawURLEncoding.EncodeToString(jti),
		IssuedAt: jwt.NewNumericDate(now.Add(-AssertionBackdate)),
		Expiry:   jwt.NewNumericDate(now.Add(AssertionLifetime)),
	}
	out, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		return "", fmt.Errorf("sign the client assertion with key %s: %w", key.KeyID, err)
	}
	return out, nil
}

// compactJWS matches a JWS in compact serialization, as a server that
// echoes the request might quote the client assertion: a base64url header
// that starts a JSON object ("eyJ"), a payload and a signature.
var compactJWS = regexp.MustCompile(`eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*`)

// assertionTransport authenticates the client with a fresh client
// assertion on every POST to the token endpoint (and, for RFC 7009, to the
// revocation endpoint): whoever builds the form, and however often it is
// retried, each HTTP request carries an assertion of its own, since a
// server refuses a jti it has seen, even one it refused before. It also
// takes out whatever secret-based authentication the request came with.
type assertionTransport struct {
	base     http.RoundTripper
	signer   AssertionSigner
	clientID string
	audience string
	// endpoints are the URLs that authenticate the client; other requests
	// (a bearer call to another API) never get an assertion.
	endpoints []*url.URL
	now       func() time.Time
}

// withAssertions returns hc with an assertionTransport in front of its
// transport, for a private_key_jwt client.
func withAssertions(hc *http.Client, cfg Config) (*http.Client, error) {
	if cfg.Signer == nil {
		return nil, errors.New("private_key_jwt needs a signer for the client assertions")
	}
	t := &assertionTransport{
		base:     hc.Transport,
		signer:   cfg.Signer,
		clientID: cfg.ClientID,
		audience: assertionAudience(cfg),
		now:      time.Now,
	}
	for _, raw := range []string{cfg.TokenURL, cfg.RevocationURL} {
		if raw == "" {
			continue
		}
		u, err := url.Parse(raw)
		if err != nil {
			return nil, errors.New("an endpoint URL does not parse")
		}
		t.endpoints = append(t.endpoints, u)
	}
	cp := *hc
	cp.Transport = t
	return &cp, nil
}

// assertionAudience is the aud of the client's assertions: the token
// endpoint URL exactly as configured (servers compare it as a plain
// string), unless the server wants another, such as its issuer. The same
// aud goes to the revocation endpoint, as fosite requires.
func assertionAudience(cfg Config) string {
	if cfg.AssertionAudience != "" {
		return cfg.AssertionAudience
	}
	return cfg.TokenURL
}

func (t *assertionTransport) authenticates(u *url.URL) bool {
	for _, e := range t.endpoints {
		if u.Scheme == e.Scheme && u.Host == e.Host && u.Path == e.Path && u.RawQuery == e.RawQuery {
			return true
		}
	}
	return false
}

func (t *assertionTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodPost || !t.authenticates(req.URL) {
		return t.base.RoundTrip(req)
	}
	var data []byte
	if req.Body != nil {
		var err error
		data, err = io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
	}
	form, err := url.ParseQuery(string(data))
	if err != nil {
		return nil, errors.New("the request's form does not parse")
	}
	key, err := t.signer.SigningKey(req.Context())
	if err != nil {
		return nil, fmt.Errorf("no key to sign the client assertion with: %w", err)
	}
	assertion, err := NewAssertion(key, t.clientID, t.audience, t.now())
	if err != nil {
		return nil, err
	}
	// The assertion is the client's only authentication: never a secret
	// beside it, and client_id only as the assertion's iss.
	form.Del("client_secret")
	form.Set("client_id", t.clientID)
	form.Set("client_assertion_type", ClientAssertionType)
	form.Set("client_assertion", assertion)
	body := form.Encode()

	out := req.Clone(req.Context())
	out.Header.Del("Authorization")
	out.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	out.Body = io.NopCloser(bytes.NewBufferString(body))
	out.ContentLength = int64(len(body))
	// net/http rewinds the body only to resend a request it did not get
	// onto the wire, so the server never saw this assertion's jti.
	out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewBufferString(body)), nil }
	return t.base.RoundTrip(out)
}

// CloseIdleConnections passes through, so replaced clients let go of their
// pooled connections.
func (t *assertionTransport) CloseIdleConnections() {
	if ci, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}

// explainRefusedAssertion says, on an error from an endpoint that
// authenticated the client with an assertion, what a refusal of the
// client's authentication is about with private_key_jwt: the key the
// server has registered, the aud it expects and the alg the client is
// registered with, never a client secret. An unknown kid is an
// invalid_request at some servers (fosite), so that gets the hint too.
//
// A server may echo what it was sent; an assertion is a credential until
// its exp, so anything shaped like one is taken out of the error's text.
func (c *HTTPClient) explainRefusedAssertion(e *Error) {
	if c.cfg.AuthMethod != AuthPrivateKeyJWT {
		return
	}
	e.Code = compactJWS.ReplaceAllString(e.Code, "[redacted]")
	e.Description = compactJWS.ReplaceAllString(e.Description, "[redacted]")
	if e.Code != "invalid_client" && e.Code != "invalid_request" && e.StatusCode != http.StatusUnauthorized {
		return
	}
	key := "its current signing key"
	// The key in memory; the call's own context may be spent by now.
	if k, err := c.cfg.Signer.SigningKey(context.Background()); err == nil {
		key = fmt.Sprintf("the key with kid %q (alg %s)", k.KeyID, k.Algorithm)
	}
	e.Hint = fmt.Sprintf("with private_key_jwt the server checks the client assertion, not a secret: check that it has %s "+
		"registered for client %q (the mount's jwks path lists the public keys, or give the server its URL as the client's jwks_uri), "+
		"that the client is registered for that alg, and that it takes aud %q (token_url, or assertion_audience if the server wants another)",
		key, c.cfg.ClientID, assertionAudience(c.cfg))
}
