package upstream

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// The token request is made here rather than by golang.org/x/oauth2: its
// answer parser throws a whole token away for an expires_in it cannot
// read as an int64 (a fraction, an exponent, beyond 2^63), it cannot send
// Basic credentials unencoded or extra parameters with every grant, and
// its error keeps the whole answer body in a field whose text prints it.

// Token gets a new access token with the configured grant.
func (c *HTTPClient) Token(ctx context.Context, req TokenRequest) (*Token, error) {
	form := url.Values{"grant_type": {string(c.cfg.GrantType)}}
	if c.cfg.GrantType == GrantPassword {
		form.Set("username", c.cfg.Username)
		form.Set("password", c.cfg.Password)
	}
	return c.tokenExchange(ctx, "token request", form, req)
}

// Refresh gets a new access token with a refresh token (RFC 6749 §6). The
// scope goes along, as CameraManager's page sends it.
func (c *HTTPClient) Refresh(ctx context.Context, refreshToken string, req TokenRequest) (*Token, error) {
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refreshToken}}
	tok, err := c.tokenExchange(ctx, "token refresh", form, req, refreshToken)
	if err != nil {
		return nil, err
	}
	if tok.RefreshToken == "" {
		// RFC 6749 §6: a server that issues no new refresh token leaves
		// the old one in force.
		tok.RefreshToken = refreshToken
	}
	return tok, nil
}

// tokenExchange sends one token request with the grant's form, the scopes
// and extra parameters, and the client's credentials as the auth method
// says, and reads the answer (RFC 6749 §5). held are credentials the
// request carries besides the configured ones, to redact from the answer.
func (c *HTTPClient) tokenExchange(ctx context.Context, op string, form url.Values, treq TokenRequest, held ...string) (*Token, error) {
	var basicUser, basicPass string
	switch c.cfg.AuthMethod {
	case AuthClientSecretPost:
		if c.cfg.ClientID != "" {
			form.Set("client_id", c.cfg.ClientID)
		}
		if c.cfg.ClientSecret != "" {
			form.Set("client_secret", c.cfg.ClientSecret)
		}
	case AuthClientSecretBasic:
		// RFC 6749 §2.3.1: each part form-encoded first.
		basicUser, basicPass = url.QueryEscape(c.cfg.ClientID), url.QueryEscape(c.cfg.ClientSecret)
	case AuthClientSecretBasicRaw:
		basicUser, basicPass = c.cfg.ClientID, c.cfg.ClientSecret
	}
	if len(treq.Scopes) > 0 {
		form.Set("scope", strings.Join(treq.Scopes, " "))
	}
	// Extra parameters never replace the grant's own or the credentials.
	for k, v := range treq.Params {
		if _, taken := form[k]; !taken {
			form[k] = v
		}
	}
	body := form.Encode()

	// A token request does no harm done twice (at worst a token goes
	// unused), so it is tried again when the upstream lets it down.
	x := c.newExchange(true)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.cfg.TokenURL, strings.NewReader(body))
	if err != nil {
		return nil, &Error{Op: op, URL: redactURL(c.cfg.TokenURL), Err: err}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if c.cfg.AuthMethod != AuthClientSecretPost {
		req.SetBasicAuth(basicUser, basicPass)
	}
	e := &Error{Op: op, URL: redactURL(c.cfg.TokenURL)}
	resp, err := x.client(x).Do(req)
	if err != nil {
		x.fill(e)
		e.Err = c.redactor(held...).err(unwrapURLError(err))
		return nil, e
	}
	defer resp.Body.Close()
	data, err := readBounded(resp.Body)
	x.fill(e)
	if err != nil {
		e.Err = c.redactor(held...).err(err)
		return nil, e
	}
	answer, parsed := parseTokenAnswer(resp.Header.Get("Content-Type"), data)
	code := answer.text("error")
	if resp.StatusCode < 200 || resp.StatusCode > 299 || code != "" {
		e.setOAuth2Error(c.redactor(held...), code, answer.text("error_description"))
		return nil, e
	}
	if !parsed {
		e.Description = "cannot parse the answer: it is neither a JSON nor a form-encoded token response"
		return nil, e
	}
	return c.toToken(e, answer, treq.Scopes, x.arrived)
}

// tokenAnswer is the fields of a token endpoint's answer: strings, or
// json.Number for JSON numbers.
type tokenAnswer map[string]any

// parseTokenAnswer reads a JSON object (whatever the content type says,
// as some servers send JSON as text/plain) or, as RFC 6749's predecessors
// and some servers still do, a form-encoded answer.
func parseTokenAnswer(contentType string, body []byte) (tokenAnswer, bool) {
	if trimmed := bytes.TrimSpace(body); len(trimmed) > 0 && trimmed[0] == '{' {
		d := json.NewDecoder(bytes.NewReader(trimmed))
		d.UseNumber()
		var m map[string]any
		if err := d.Decode(&m); err != nil {
			return nil, false
		}
		if _, err := d.Token(); !errors.Is(err, io.EOF) {
			return nil, false // something after the object
		}
		return m, true
	}
	media, _, _ := mime.ParseMediaType(contentType)
	if media != "application/x-www-form-urlencoded" && media != "text/plain" {
		return nil, false
	}
	vals, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, false
	}
	m := tokenAnswer{}
	for k, v := range vals {
		m[k] = v[0]
	}
	return m, true
}

// text is a string field, or "" when it is missing or not a string.
func (a tokenAnswer) text(key string) string {
	s, _ := a[key].(string)
	return s
}

// toToken makes a Token of a successful answer, or fills e with why it
// cannot.
func (c *HTTPClient) toToken(e *Error, answer tokenAnswer, requested []string, arrived time.Time) (*Token, error) {
	accessToken := answer.text("access_token")
	if accessToken == "" {
		e.Description = "the answer is missing access_token"
		return nil, e
	}
	lifetime, problem := c.lifetime(answer["expires_in"])
	if problem != "" {
		e.Description = problem
		return nil, e
	}
	scope := strings.Join(strings.Fields(answer.text("scope")), " ")
	if scope == "" {
		// RFC 6749 §5.1: an omitted scope is the scope that was asked for.
		scope = strings.Join(requested, " ")
	}
	tokenType := answer.text("token_type")
	if tokenType == "" {
		tokenType = "Bearer"
	}
	return &Token{
		AccessToken:  accessToken,
		TokenType:    tokenType,
		Scope:        scope,
		RefreshToken: answer.text("refresh_token"),
		IssuedAt:     arrived,
		ExpiresAt:    arrived.Add(lifetime),
	}, nil
}

// MaxTokenLifetime is the longest a token is taken to live. A server that
// says longer (expires_in 1e30) is believed up to here: Vault caps the
// lease far sooner anyway, and no arithmetic on the expiry can overflow.
const MaxTokenLifetime = 365 * 24 * time.Hour

// seconds is a number as JSON writes one, leading zeros allowed.
var seconds = regexp.MustCompile(`^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$`)

// lifetime reads expires_in: a JSON number, or a string holding one (some
// servers send a string, and a form-encoded answer has nothing else),
// whole seconds counted, at most MaxTokenLifetime. An answer without it
// gets the configured default; otherwise problem says what is wrong.
func (c *HTTPClient) lifetime(v any) (lifetime time.Duration, problem string) {
	var text string
	switch n := v.(type) {
	case nil:
	case json.Number:
		text = n.String()
	case string:
		text = strings.TrimPrefix(strings.TrimSpace(n), "+")
	default:
		return 0, "the answer's expires_in is not a number of seconds, so no lease can be sized for the token"
	}
	if text == "" {
		if c.cfg.DefaultTokenLifetime > 0 {
			return c.cfg.DefaultTokenLifetime, ""
		}
		return 0, "the answer has no expires_in, so no lease can be sized for the token; " +
			"if the server documents how long its tokens live, set default_token_lifetime to that"
	}
	if !seconds.MatchString(text) {
		return 0, "the answer's expires_in is not a number of seconds, so no lease can be sized for the token"
	}
	// A range error leaves f at ±Inf or 0, which the checks below handle.
	f, _ := strconv.ParseFloat(text, 64)
	switch {
	case f < 1:
		return 0, "the answer's expires_in is less than a second, so no lease can be sized for the token"
	case f >= MaxTokenLifetime.Seconds():
		return MaxTokenLifetime, ""
	}
	return time.Duration(math.Floor(f)) * time.Second, ""
}
