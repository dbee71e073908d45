package upstream

import (
	"context"
	"net/http"
	"net/url"
	"strings"
)

// RevocationStyle says how a token is revoked at Config.RevocationURL.
type RevocationStyle string

const (
	// RevocationLogout is a DELETE with the token itself as bearer, as
	// CameraManager logs a token out. It is what an empty style means, so
	// configs from before the style existed keep their behavior.
	RevocationLogout RevocationStyle = "logout"
	// RevocationRFC7009 is RFC 7009 token revocation: a POST of
	// token=...&token_type_hint=access_token, with the client
	// authentication of the token request.
	RevocationRFC7009 RevocationStyle = "rfc7009"
)

// revokeRFC7009 revokes an access token as RFC 7009 says. A 2xx is all it
// can learn: servers answer 200 for tokens they do not know, already
// revoked ones and even other clients' tokens (§2.2), so success does not
// prove the token is gone. Any other answer is an Error with its status and
// OAuth2 error code, for the caller to tell a refusal from an outage.
func (c *HTTPClient) revokeRFC7009(ctx context.Context, token string) error {
	const op = "token revocation"
	form := url.Values{"token": {token}, "token_type_hint": {"access_token"}}
	var basicUser, basicPass string
	switch c.cfg.AuthMethod {
	case AuthClientSecretPost:
		form.Set("client_id", c.cfg.ClientID)
		form.Set("client_secret", c.cfg.ClientSecret)
	case AuthClientSecretBasic:
		basicUser, basicPass = url.QueryEscape(c.cfg.ClientID), url.QueryEscape(c.cfg.ClientSecret)
	case AuthClientSecretBasicRaw:
		basicUser, basicPass = c.cfg.ClientID, c.cfg.ClientSecret
	case AuthPrivateKeyJWT:
		// The assertion transport adds a fresh assertion (aud: the token
		// endpoint) and client_id.
	}
	// Tried once, as a logout is: Vault retries a revocation that failed.
	x := c.newExchange(false)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.cfg.RevocationURL, strings.NewReader(form.Encode()))
	if err != nil {
		return &Error{Op: op, URL: redactURL(c.cfg.RevocationURL), Description: "the revocation URL does not parse"}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if basicUser != "" {
		req.SetBasicAuth(basicUser, basicPass)
	}
	e := &Error{Op: op, URL: redactURL(c.cfg.RevocationURL)}
	// A server may echo what it was sent: the token above all.
	r := c.redactor(token)
	resp, err := x.client(x).Do(req)
	if err != nil {
		x.fill(e)
		e.Err = r.err(unwrapURLError(err))
		return e
	}
	defer resp.Body.Close()
	data, _ := readBounded(resp.Body)
	x.fill(e)
	if resp.StatusCode/100 == 2 {
		return nil
	}
	if code, description, ok := apiError(resp.Header.Get("Content-Type"), data); ok {
		e.setOAuth2Error(r, code, description)
	}
	c.explainRefusedAssertion(e)
	return e
}

// Logout revokes an access token at the revocation URL: by RFC 7009 where
// that is the style (revoke.go), otherwise with a DELETE authorized by the
// token itself, where a 401 means the token is already gone, which is what
// a logout wants. It is tried once: Vault retries a revocation that failed.
func (c *HTTPClient) Logout(ctx context.Context, accessToken string) error {
	const op = "logout"
	if c.cfg.RevocationURL == "" {
		return &Error{Op: op, Description: "no revocation URL is configured"}
	}
	if c.cfg.RevocationStyle == RevocationRFC7009 {
		return c.revokeRFC7009(ctx, accessToken)
	}
	x := c.newExchange(false)
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, c.cfg.RevocationURL, nil)
	if err != nil {
		return &Error{Op: op, URL: redactURL(c.cfg.RevocationURL), Err: err}
	}
	req.Header.Set("Authorization", "Bearer "+accessToken)
	e := &Error{Op: op, URL: redactURL(c.cfg.RevocationURL)}
	resp, err := x.client(x).Do(req)
	if err != nil {
		x.fill(e)
		e.Err = c.redactor(accessToken).err(unwrapURLError(err))
		return e
	}
	defer resp.Body.Close()
	_, _ = readBounded(resp.Body) // so that the connection is reused
	x.fill(e)
	if resp.StatusCode/100 == 2 || resp.StatusCode == http.StatusUnauthorized {
		return nil
	}
	return e
}
