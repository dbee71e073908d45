// Package upstream talks to OAuth2 token endpoints and to the MapsIndoors
// clientcredentials API. It knows nothing of Vault: the plugin hands it a
// Config and gets plain values back, so it can be tested and reused alone.
package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-cleanhttp"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
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

// DefaultTimeout bounds one upstream HTTP exchange when Config.Timeout is 0.
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
	// expires_in, so both are on this machine's clock.
	IssuedAt  time.Time
	ExpiresAt time.Time
}

// Lifetime is how long the token was issued for.
func (t *Token) Lifetime() time.Duration { return t.ExpiresAt.Sub(t.IssuedAt) }

// ClientSecret is one secret of the clientcredentials API. Secret is set
// only in the answer to a create: the upstream does not store it.
type ClientSecret struct {
	ID          string    `json:"id"`
	Description string    `json:"description"`
	ClientID    string    `json:"client_id,omitempty"`
	CreatedAt   time.Time `json:"createdAt"`
	Secret      string    `json:"secret,omitempty"`
}

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
// trusts cfg.CACertPEM, follows no redirects and bounds every exchange.
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
	hc, err := newHTTPClient(cfg.CACertPEM, cfg.Timeout)
	if err != nil {
		return nil, err
	}
	if cfg.AuthMethod == AuthPrivateKeyJWT {
		if hc, err = withAssertions(hc, cfg); err != nil {
			return nil, err
		}
	}
	return &HTTPClient{cfg: cfg, http: hc}, nil
}

func newHTTPClient(caPEM string, timeout time.Duration) (*http.Client, error) {
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
		Timeout:   timeout,
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
			return nil, fmt.Errorf("certificate %d does not parse: %v", n+1, err)
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

// Token gets a new access token with the configured grant.
func (c *HTTPClient) Token(ctx context.Context, req TokenRequest) (*Token, error) {
	ctx, clientID, clientSecret, style := c.tokenContext(ctx, req, c.cfg.GrantType == GrantPassword)
	var (
		tok *oauth2.Token
		err error
	)
	switch c.cfg.GrantType {
	case GrantClientCredentials:
		cc := clientcredentials.Config{
			ClientID:       clientID,
			ClientSecret:   clientSecret,
			TokenURL:       c.cfg.TokenURL,
			Scopes:         req.Scopes,
			EndpointParams: req.Params,
			AuthStyle:      style,
		}
		tok, err = cc.Token(ctx)
	case GrantPassword:
		tok, err = c.oauth2Config(clientID, clientSecret, style, req).PasswordCredentialsToken(ctx, c.cfg.Username, c.cfg.Password)
	}
	arrived := time.Now()
	if err != nil {
		return nil, c.tokenError(ctx, "token request", err)
	}
	return c.toToken(tok, req.Scopes, arrived)
}

// Refresh gets a new access token with a refresh token (RFC 6749 §6).
func (c *HTTPClient) Refresh(ctx context.Context, refreshToken string, req TokenRequest) (*Token, error) {
	// x/oauth2 sends no scope with a refresh; CameraManager's page does.
	params := url.Values{}
	for k, v := range req.Params {
		params[k] = v
	}
	if len(req.Scopes) > 0 {
		params.Set("scope", strings.Join(req.Scopes, " "))
	}
	req.Params = params
	ctx, clientID, clientSecret, style := c.tokenContext(ctx, req, true)
	// An expired token makes x/oauth2's TokenSource refresh at once.
	expired := &oauth2.Token{RefreshToken: refreshToken, Expiry: time.Now().Add(-time.Hour)}
	tok, err := c.oauth2Config(clientID, clientSecret, style, req).TokenSource(ctx, expired).Token()
	arrived := time.Now()
	if err != nil {
		return nil, c.tokenError(ctx, "token refresh", err)
	}
	return c.toToken(tok, req.Scopes, arrived)
}

func (c *HTTPClient) oauth2Config(clientID, clientSecret string, style oauth2.AuthStyle, req TokenRequest) *oauth2.Config {
	return &oauth2.Config{
		ClientID:     clientID,
		ClientSecret: clientSecret,
		Endpoint:     oauth2.Endpoint{TokenURL: c.cfg.TokenURL, AuthStyle: style},
		Scopes:       req.Scopes,
	}
}

// tokenContext carries the HTTP client for one token request, and says how
// x/oauth2 is to send the client's credentials. x/oauth2 form-encodes
// Basic credentials and takes no extra parameters for the password and
// refresh grants; a wrapped transport does both instead.
func (c *HTTPClient) tokenContext(ctx context.Context, req TokenRequest, paramsByTransport bool) (context.Context, string, string, oauth2.AuthStyle) {
	hc := c.http
	clientID, clientSecret, style := c.cfg.ClientID, c.cfg.ClientSecret, oauth2.AuthStyleInParams
	wrap := func(rt func(http.RoundTripper) http.RoundTripper) {
		cp := *hc
		cp.Transport = rt(hc.Transport)
		hc = &cp
	}
	switch c.cfg.AuthMethod {
	case AuthClientSecretBasic:
		style = oauth2.AuthStyleInHeader
	case AuthClientSecretBasicRaw:
		id, secret := clientID, clientSecret
		wrap(func(base http.RoundTripper) http.RoundTripper {
			return &rawBasicTransport{base: base, user: id, pass: secret}
		})
		// Nothing for x/oauth2 to put in the body.
		clientID, clientSecret = "", ""
	}
	if len(req.Params) > 0 && paramsByTransport {
		wrap(func(base http.RoundTripper) http.RoundTripper {
			return &formParamsTransport{base: base, params: req.Params}
		})
	}
	return context.WithValue(ctx, oauth2.HTTPClient, hc), clientID, clientSecret, style
}

func (c *HTTPClient) toToken(tok *oauth2.Token, requested []string, arrived time.Time) (*Token, error) {
	expiresIn := expiresInSeconds(tok.Extra("expires_in"))
	if expiresIn <= 0 {
		return nil, &Error{Op: "token request", URL: redactURL(c.cfg.TokenURL), StatusCode: http.StatusOK,
			Description: "the answer has no positive expires_in, so no lease can be sized for the token"}
	}
	scope, _ := tok.Extra("scope").(string)
	scope = strings.Join(strings.Fields(scope), " ")
	if scope == "" {
		// RFC 6749 §5.1: an omitted scope is the scope that was asked for.
		scope = strings.Join(requested, " ")
	}
	tokenType := tok.TokenType
	if tokenType == "" {
		tokenType = "Bearer"
	}
	return &Token{
		AccessToken:  tok.AccessToken,
		TokenType:    tokenType,
		Scope:        scope,
		RefreshToken: tok.RefreshToken,
		IssuedAt:     arrived,
		ExpiresAt:    arrived.Add(time.Duration(expiresIn) * time.Second),
	}, nil
}

// expiresInSeconds reads expires_in as x/oauth2 keeps it: a float64 or a
// string from a JSON answer (some servers send a string), an int64 from a
// form-encoded one.
func expiresInSeconds(v any) int64 {
	switch n := v.(type) {
	case int64:
		return n
	case float64:
		return int64(n)
	case json.Number:
		i, _ := n.Int64()
		return i
	case string:
		i, _ := strconv.ParseInt(strings.TrimSpace(n), 10, 64)
		return i
	}
	return 0
}

// tokenError turns what x/oauth2 returns into an Error that names the
// status and OAuth2 error code but never echoes the body, which could
// hold anything.
func (c *HTTPClient) tokenError(ctx context.Context, op string, err error) error {
	e := &Error{Op: op, URL: redactURL(c.cfg.TokenURL)}
	var re *oauth2.RetrieveError
	switch {
	case errors.As(err, &re):
		if re.Response != nil {
			e.StatusCode = re.Response.StatusCode
		}
		e.Code = re.ErrorCode
		e.Description = c.redact(re.ErrorDescription)
	default:
		e.Err = unwrapURLError(err)
	}
	c.explainRefusedAssertion(ctx, e)
	return e
}

// CreateClientSecret logs in with the current secret and creates a new
// secret at the clientcredentials API.
func (c *HTTPClient) CreateClientSecret(ctx context.Context, description string) (*ClientSecret, error) {
	q := url.Values{"customerId": {c.cfg.CustomerID}}
	if description != "" {
		q.Set("description", description)
	}
	var created ClientSecret
	if err := c.manage(ctx, http.MethodPost, "create client secret", q, &created); err != nil {
		return nil, err
	}
	if created.ID == "" || created.Secret == "" {
		return nil, &Error{Op: "create client secret", URL: redactURL(c.cfg.RotationURL), StatusCode: http.StatusOK,
			Description: "the answer has no id or no secret"}
	}
	return &created, nil
}

// DeleteClientSecret logs in with the current secret and deletes the
// secret with this id.
func (c *HTTPClient) DeleteClientSecret(ctx context.Context, id string) error {
	q := url.Values{"customerId": {c.cfg.CustomerID}, "id": {id}}
	return c.manage(ctx, http.MethodDelete, "delete client secret "+id, q, nil)
}

// ListClientSecrets logs in with the current secret and lists the active
// secrets.
func (c *HTTPClient) ListClientSecrets(ctx context.Context) ([]ClientSecret, error) {
	var list []ClientSecret
	q := url.Values{"customerId": {c.cfg.CustomerID}}
	if err := c.manage(ctx, http.MethodGet, "list client secrets", q, &list); err != nil {
		return nil, err
	}
	for i := range list {
		list[i].Secret = "" // never carry a value the API should not have sent
	}
	return list, nil
}

// manage makes one bearer-authenticated call to the clientcredentials API
// with a token from the current secret, and decodes a JSON answer into out.
func (c *HTTPClient) manage(ctx context.Context, method, op string, query url.Values, out any) error {
	if c.cfg.RotationURL == "" {
		return &Error{Op: op, Description: "no rotation URL is configured"}
	}
	if c.cfg.CustomerID == "" {
		return &Error{Op: op, Description: "no customer id is configured"}
	}
	tok, err := c.Token(ctx, TokenRequest{})
	if err != nil {
		return err
	}
	u, err := url.Parse(c.cfg.RotationURL)
	if err != nil {
		return &Error{Op: op, Description: "the rotation URL does not parse"}
	}
	q := u.Query()
	for k, v := range query {
		q[k] = v
	}
	u.RawQuery = q.Encode()

	var body io.Reader
	if method == http.MethodPost {
		// The vendor's page shows the client credentials form sent along
		// with a create; the bearer token is what authorizes it.
		body = strings.NewReader(url.Values{
			"grant_type":    {string(GrantClientCredentials)},
			"client_id":     {c.cfg.ClientID},
			"client_secret": {c.cfg.ClientSecret},
		}.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return &Error{Op: op, URL: redactURL(c.cfg.RotationURL), Err: err}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)

	resp, err := c.http.Do(req)
	if err != nil {
		return &Error{Op: op, URL: redactURL(c.cfg.RotationURL), Err: unwrapURLError(err)}
	}
	defer resp.Body.Close()
	data, err := readBounded(resp.Body)
	if err != nil {
		return &Error{Op: op, URL: redactURL(c.cfg.RotationURL), StatusCode: resp.StatusCode, Err: err}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		e := &Error{Op: op, URL: redactURL(c.cfg.RotationURL), StatusCode: resp.StatusCode}
		var oe struct {
			Error       string `json:"error"`
			Description string `json:"error_description"`
		}
		if json.Unmarshal(data, &oe) == nil {
			e.Code, e.Description = oe.Error, c.redact(oe.Description)
		}
		return e
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return &Error{Op: op, URL: redactURL(c.cfg.RotationURL), StatusCode: resp.StatusCode,
			Description: "the answer is not the JSON the API documents"}
	}
	return nil
}

// Logout revokes an access token at the revocation URL: by RFC 7009 where
// that is the style (revoke.go), otherwise with a DELETE authorized by the
// token itself. A 401 to the DELETE means the token is already gone, which
// is what a logout wants.
func (c *HTTPClient) Logout(ctx context.Context, accessToken string) error {
	const op = "logout"
	if c.cfg.RevocationURL == "" {
		return &Error{Op: op, Description: "no revocation URL is configured"}
	}
	if c.cfg.RevocationStyle == RevocationRFC7009 {
		return c.revokeRFC7009(ctx, accessToken)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, c.cfg.RevocationURL, nil)
	if err != nil {
		return &Error{Op: op, URL: redactURL(c.cfg.RevocationURL), Err: err}
	}
	req.Header.Set("Authorization", "Bearer "+accessToken)
	resp, err := c.http.Do(req)
	if err != nil {
		return &Error{Op: op, URL: redactURL(c.cfg.RevocationURL), Err: unwrapURLError(err)}
	}
	defer resp.Body.Close()
	_, _ = readBounded(resp.Body)
	if resp.StatusCode/100 == 2 || resp.StatusCode == http.StatusUnauthorized {
		return nil
	}
	return &Error{Op: op, URL: redactURL(c.cfg.RevocationURL), StatusCode: resp.StatusCode}
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
		return nil, fmt.Errorf("the answer is larger than %d bytes", maxBodyBytes)
	}
	return data, nil
}

// redact removes every configured secret from text the upstream chose, in
// case a server echoes what it was sent.
func (c *HTTPClient) redact(s string) string {
	for _, secret := range []string{c.cfg.ClientSecret, c.cfg.Password, c.cfg.Username} {
		if secret != "" {
			s = strings.ReplaceAll(s, secret, "[redacted]")
		}
	}
	const maxLen = 300
	if len(s) > maxLen {
		s = s[:maxLen] + "…"
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}
