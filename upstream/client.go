// Package upstream talks to OAuth2 token endpoints and to the MapsIndoors
// clientcredentials API. It knows nothing of Vault: the plugin hands it a
// Config and gets plain values back, so it can be tested and reused alone.
package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/hashicorp/go-cleanhttp"
)

// GrantType is the OAuth2 grant used to get a token.
type GrantType string

// The grants this client speaks.
const (
	GrantClientCredentials GrantType = "client_credentials"
	GrantPassword          GrantType = "password"
)

// AuthMethod says how the client authenticates itself at the token endpoint
// (RFC 6749 §2.3.1, named as in OpenID Connect's token_endpoint_auth_method).
type AuthMethod string

// The client authentication methods this client speaks.
const (
	// AuthClientSecretPost sends client_id and client_secret in the form body,
	// as MapsIndoors' page shows.
	AuthClientSecretPost AuthMethod = "client_secret_post"
	// AuthClientSecretBasic sends them as HTTP Basic, each part form-encoded
	// first as RFC 6749 §2.3.1 says.
	AuthClientSecretBasic AuthMethod = "client_secret_basic"
	// AuthClientSecretBasicRaw sends them as HTTP Basic as they are, not
	// form-encoded first: Metapack's and CameraManager's pages base64 the
	// raw "id:secret", which differs for secrets with $, + or the like.
	AuthClientSecretBasicRaw AuthMethod = "client_secret_basic_raw"
	// AuthPrivateKeyJWT sends a client assertion signed with a private key
	// the server knows only the public half of (RFC 7523 §2.2, OpenID
	// Connect Core §9); see assertion.go.
	AuthPrivateKeyJWT AuthMethod = "private_key_jwt"
)

// AuthMethods lists every AuthMethod, for messages.
var AuthMethods = []AuthMethod{AuthClientSecretPost, AuthClientSecretBasic, AuthClientSecretBasicRaw, AuthPrivateKeyJWT}

// DefaultTimeout bounds one attempt at an upstream HTTP exchange (its
// answer's body read too) when Config.Timeout is 0.
const DefaultTimeout = 30 * time.Second

// maxBodyBytes bounds what is read of any upstream answer. Token answers
// and secret lists are a few hundred bytes; anything near this is not one.
const maxBodyBytes = 1 << 20

// Config is everything needed to reach one upstream account.
type Config struct {
	TokenURL    string
	RotationURL string
	// RevocationURL, when set, is where a token is revoked, in
	// RevocationStyle: a DELETE with the token as bearer, as CameraManager
	// does it (the default), or RFC 7009.
	RevocationURL   string
	RevocationStyle RevocationStyle

	ClientID     string
	ClientSecret string
	CustomerID   string

	GrantType  GrantType
	Username   string
	Password   string
	AuthMethod AuthMethod

	// CACertPEM, when set, is the only set of roots trusted for the
	// upstream's TLS certificate; otherwise the system roots are used.
	CACertPEM string
	Timeout   time.Duration

	// MaxAttempts is how many times an exchange that is safe to repeat (a
	// token request, a list) is tried while the upstream answers 429 or
	// 5xx, or the connection fails without an answer: 0 or 1 tries once,
	// and at most MaxAttemptsLimit. Creates, deletes and logouts are tried
	// once whatever it says. RetryBackoff is the first wait between
	// attempts, doubled for each further one, with jitter;
	// DefaultRetryBackoff when 0.
	MaxAttempts  int
	RetryBackoff time.Duration

	// DefaultTokenLifetime, when > 0, is how long a token lives whose
	// answer has no expires_in (RFC 6749 §5.1 makes it optional: the
	// server documents the lifetime instead). When 0, such an answer is
	// refused, as no lease can be sized for its token.
	DefaultTokenLifetime time.Duration

	// Signer signs the client assertions of AuthPrivateKeyJWT; their aud
	// is AssertionAudience, or TokenURL when that is empty.
	Signer            AssertionSigner
	AssertionAudience string
}

// Token is an access token as the token endpoint issued it.
type Token struct {
	AccessToken  string
	TokenType    string
	Scope        string
	RefreshToken string
	// IssuedAt is when the answer arrived; ExpiresAt is IssuedAt plus
	// expires_in (or Config.DefaultTokenLifetime when the answer has none,
	// and at most MaxTokenLifetime), so both are on this machine's clock.
	IssuedAt  time.Time
	ExpiresAt time.Time
}

// Lifetime is how long the token was issued for.
func (t *Token) Lifetime() time.Duration { return t.ExpiresAt.Sub(t.IssuedAt) }

// TokenRequest asks for a token with these scopes; Params are extra form
// parameters some servers need (audience, resource).
type TokenRequest struct {
	Scopes []string
	Params url.Values
}

// Client is what the plugin needs of an upstream account. The backend
// depends on this interface only, so tests can put failures in its way.
type Client interface {
	// Token gets a new access token.
	Token(ctx context.Context, req TokenRequest) (*Token, error)
	// CreateClientSecret logs in with the current secret and creates a new
	// one with the given description.
	CreateClientSecret(ctx context.Context, description string) (*ClientSecret, error)
	// DeleteClientSecret logs in with the current secret and deletes the
	// secret with this id.
	DeleteClientSecret(ctx context.Context, id string) error
	// ListClientSecrets logs in with the current secret and lists the
	// account's active secrets, without their values.
	ListClientSecrets(ctx context.Context) ([]ClientSecret, error)
	// Refresh gets a new access token with a refresh token.
	Refresh(ctx context.Context, refreshToken string, req TokenRequest) (*Token, error)
	// Logout revokes an access token (and, at CameraManager, its refresh
	// token) at the revocation URL.
	Logout(ctx context.Context, accessToken string) error
	// Close lets go of the client's pooled connections; a client is closed
	// once nothing uses it any more.
	Close()
}

// HTTPClient is the Client over HTTP.
type HTTPClient struct {
	cfg  Config
	http *http.Client
}

var _ Client = (*HTTPClient)(nil)

// New checks cfg and builds a client with its own pooled transport that
// trusts cfg.CACertPEM, follows no redirects and bounds every attempt.
func New(cfg Config) (*HTTPClient, error) {
	if cfg.TokenURL == "" {
		return nil, errors.New("no token URL")
	}
	switch cfg.GrantType {
	case GrantClientCredentials, GrantPassword:
	default:
		return nil, fmt.Errorf("unsupported grant type %q", cfg.GrantType)
	}
	switch cfg.AuthMethod {
	case AuthClientSecretPost, AuthClientSecretBasic, AuthClientSecretBasicRaw, AuthPrivateKeyJWT:
	default:
		return nil, fmt.Errorf("unsupported token auth method %q", cfg.AuthMethod)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	cfg.DefaultTokenLifetime = min(max(cfg.DefaultTokenLifetime, 0), MaxTokenLifetime)
	cfg.MaxAttempts = min(max(cfg.MaxAttempts, 1), MaxAttemptsLimit)
	hc, err := newHTTPClient(cfg.CACertPEM)
	if err != nil {
		return nil, err
	}
	if cfg.AuthMethod == AuthPrivateKeyJWT {
		// Under each call's retries, so every attempt signs anew.
		if hc, err = withAssertions(hc, cfg); err != nil {
			return nil, err
		}
	}
	return &HTTPClient{cfg: cfg, http: hc}, nil
}

// newHTTPClient is the pooled transport and the redirect rule every call
// shares; each call's exchange bounds its attempts by Config.Timeout.
func newHTTPClient(caPEM string) (*http.Client, error) {
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	if caPEM != "" {
		pool, err := CertPool(caPEM)
		if err != nil {
			return nil, err
		}
		tlsConfig.RootCAs = pool
	}
	transport := cleanhttp.DefaultPooledTransport()
	transport.TLSClientConfig = tlsConfig
	return &http.Client{
		Transport: &acceptJSONTransport{base: transport},
		// A redirect could carry the form body, and with it a secret, to
		// another host: hand the 3xx back as an answer, which is an error.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, nil
}

// CertPool parses a PEM bundle and fails unless it holds at least one
// certificate and nothing that is not one.
func CertPool(caPEM string) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	rest := []byte(caPEM)
	n := 0
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %d is a %q, not a CERTIFICATE", n+1, block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d does not parse: %w", n+1, err)
		}
		pool.AddCert(cert)
		n++
	}
	if strings.TrimSpace(string(rest)) != "" {
		return nil, errors.New("it has text that is not a PEM block")
	}
	if n == 0 {
		return nil, errors.New("it holds no PEM certificate")
	}
	return pool, nil
}

// Close lets go of the client's pooled connections. A request still under
// way finishes; its connection closes when it is done.
func (c *HTTPClient) Close() { c.http.CloseIdleConnections() }

func readBounded(r io.Reader) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxBodyBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxBodyBytes {
		return nil, ownError(fmt.Sprintf("the answer is larger than %d bytes", maxBodyBytes))
	}
	return data, nil
}

// ownError is an error whose whole text this package wrote, so it holds
// nothing the upstream chose and needs no redaction.
type ownError string

func (e ownError) Error() string { return string(e) }
