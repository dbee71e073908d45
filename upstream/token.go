package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// Token requests are made by golang.org/x/oauth2: it sends the grant's
// form (RFC 6749 §4.3, §4.4, §6) and reads the answer (§5). What is here
// fits it to the upstreams: the client's credentials as the auth method
// says, extra parameters with every grant, retries (the exchange, in the
// HTTP client x/oauth2 is handed), and a Token on this machine's clock
// with a bounded lifetime, or an Error that never echoes the answer.

// Token gets a new access token with the configured grant.
func (c *HTTPClient) Token(ctx context.Context, req TokenRequest) (*Token, error) {
	const op = "token request"
	x := c.newExchange(true)
	var (
		tok *oauth2.Token
		err error
	)
	switch c.cfg.GrantType {
	case GrantClientCredentials:
		ctx, clientID, clientSecret, style := c.tokenContext(ctx, x, nil)
		cc := clientcredentials.Config{
			ClientID:       clientID,
			ClientSecret:   clientSecret,
			TokenURL:       c.cfg.TokenURL,
			Scopes:         req.Scopes,
			EndpointParams: endpointParams(req),
			AuthStyle:      style,
		}
		tok, err = cc.Token(ctx)
	case GrantPassword:
		// x/oauth2 takes no extra parameters for this grant: the
		// transport adds them.
		ctx, clientID, clientSecret, style := c.tokenContext(ctx, x, req.Params)
		tok, err = c.oauth2Config(clientID, clientSecret, style, req.Scopes).
			PasswordCredentialsToken(ctx, c.cfg.Username, c.cfg.Password)
	}
	if err != nil {
		return nil, c.tokenError(op, x, err)
	}
	return c.toToken(op, x, tok, req.Scopes)
}

// Refresh gets a new access token with a refresh token (RFC 6749 §6). The
// scope goes along, as CameraManager's page sends it.
func (c *HTTPClient) Refresh(ctx context.Context, refreshToken string, req TokenRequest) (*Token, error) {
	const op = "token refresh"
	// x/oauth2 sends neither a scope nor extra parameters with a refresh:
	// the transport adds both.
	params := url.Values{}
	maps.Copy(params, req.Params)
	if len(req.Scopes) > 0 {
		params.Set("scope", strings.Join(req.Scopes, " "))
	}
	x := c.newExchange(true)
	ctx, clientID, clientSecret, style := c.tokenContext(ctx, x, params)
	// A token with no access token makes x/oauth2's TokenSource refresh at
	// once. When the answer has no refresh_token, x/oauth2 keeps the one
	// sent, which RFC 6749 §6 leaves in force.
	expired := &oauth2.Token{RefreshToken: refreshToken}
	tok, err := c.oauth2Config(clientID, clientSecret, style, req.Scopes).TokenSource(ctx, expired).Token()
	if err != nil {
		return nil, c.tokenError(op, x, err, refreshToken)
	}
	return c.toToken(op, x, tok, req.Scopes)
}

func (c *HTTPClient) oauth2Config(clientID, clientSecret string, style oauth2.AuthStyle, scopes []string) *oauth2.Config {
	return &oauth2.Config{
		ClientID:     clientID,
		ClientSecret: clientSecret,
		Endpoint:     oauth2.Endpoint{TokenURL: c.cfg.TokenURL, AuthStyle: style},
		Scopes:       scopes,
	}
}

// tokenContext carries the HTTP client x/oauth2 is to send one token
// request with (through the exchange x), and says how x/oauth2 is to send
// the client's credentials. x/oauth2 form-encodes Basic credentials, as
// RFC 6749 §2.3.1 says; for client_secret_basic_raw it gets none, and a
// transport sets them as they are. params, when set, are added to the
// form by a transport, never replacing what x/oauth2 put there.
func (c *HTTPClient) tokenContext(ctx context.Context, x *exchange, params url.Values) (context.Context, string, string, oauth2.AuthStyle) {
	var rt http.RoundTripper = x
	clientID, clientSecret, style := c.cfg.ClientID, c.cfg.ClientSecret, oauth2.AuthStyleInParams
	switch c.cfg.AuthMethod {
	case AuthClientSecretBasic:
		style = oauth2.AuthStyleInHeader
	case AuthClientSecretBasicRaw:
		rt = &rawBasicTransport{base: rt, user: clientID, pass: clientSecret}
		clientID, clientSecret = "", ""
	}
	if len(params) > 0 {
		rt = &formParamsTransport{base: rt, params: params}
	}
	return context.WithValue(ctx, oauth2.HTTPClient, x.client(rt)), clientID, clientSecret, style
}

// endpointParams are the extra parameters for x/oauth2's client
// credentials grant, without those the grant sets: x/oauth2 would let an
// extra grant_type replace the grant's, and refuse the request for an
// extra scope beside Scopes.
func endpointParams(req TokenRequest) url.Values {
	out := url.Values{}
	for k, v := range req.Params {
		if k == "grant_type" || (k == "scope" && len(req.Scopes) > 0) {
			continue
		}
		out[k] = v
	}
	return out
}

// tokenError makes an Error of what x/oauth2 returned, with the status,
// the Retry-After and the attempts of the exchange. A *RetrieveError's
// Body, the answer as it came, is never kept: only its code and
// description, bounded and with every credential out.
func (c *HTTPClient) tokenError(op string, x *exchange, err error, held ...string) error {
	e := &Error{Op: op, URL: redactURL(c.cfg.TokenURL)}
	x.fill(e)
	r := c.redactor(held...)
	var re *oauth2.RetrieveError
	switch {
	case errors.As(err, &re):
		// Its status and Retry-After are the exchange's last answer's,
		// which x.fill has set.
		e.setOAuth2Error(r, re.ErrorCode, re.ErrorDescription)
	case x.readErr != nil:
		// x/oauth2 keeps only the text of why reading the answer failed.
		e.Err = r.err(x.readErr)
	case x.resp != nil:
		// A successful answer x/oauth2 could not read.
		e.Description = unreadableAnswer(x.resp.Header.Get("Content-Type"), x.body)
	default:
		e.Err = r.err(unwrapURLError(err))
	}
	c.explainRefusedAssertion(e)
	return e
}

// The reasons an answer is refused.
const (
	missingAccessToken = "the answer is missing access_token"
	expiresInNotWhole  = "the token answer's expires_in is not a whole number of seconds; " +
		"x/oauth2, which reads the answer, takes only an integer (no fraction, no exponent, within 64 bits), " +
		"so no lease can be sized for the token"
)

// unreadableAnswer says why x/oauth2 could not read a successful answer.
// Its error says so only in text that may hold what the server sent, so
// the answer x/oauth2 read (the exchange keeps it) is looked at again by
// x/oauth2's rules: a form when the content type says
// application/x-www-form-urlencoded or text/plain, else a JSON object
// whose expires_in is an integer and whose fields are of RFC 6749's
// types; either with an access_token.
func unreadableAnswer(contentType string, body []byte) string {
	if len(body) >= maxBodyBytes {
		return fmt.Sprintf("cannot parse the answer: it is at least %d bytes, all x/oauth2 reads of one", maxBodyBytes)
	}
	media, _, _ := mime.ParseMediaType(contentType)
	if media == "application/x-www-form-urlencoded" || media == "text/plain" {
		if trimmed := strings.TrimSpace(string(body)); strings.HasPrefix(trimmed, "{") && json.Valid(body) {
			return "cannot parse the answer: it is JSON sent as " + media +
				", which x/oauth2 reads as form-encoded; the server must send JSON as application/json"
		}
		if _, err := url.ParseQuery(string(body)); err != nil {
			return "cannot parse the answer: it is not form-encoded, as its content type says"
		}
		return missingAccessToken
	}
	var fields struct {
		AccessToken json.RawMessage `json:"access_token"`
		ExpiresIn   json.RawMessage `json:"expires_in"`
	}
	if json.Unmarshal(body, &fields) != nil {
		return "cannot parse the answer: it is not a JSON object, and its content type does not say it is form-encoded"
	}
	if !readsAsSeconds(fields.ExpiresIn) {
		return expiresInNotWhole
	}
	var accessToken string
	if json.Unmarshal(fields.AccessToken, &accessToken) != nil || accessToken == "" {
		return missingAccessToken
	}
	return "cannot parse the answer: one of its fields is not of the type RFC 6749 §5.1 gives it"
}

// readsAsSeconds is whether x/oauth2 reads this JSON expires_in: absent,
// null, or a number or a string that holds an integer within 64 bits.
func readsAsSeconds(raw json.RawMessage) bool {
	if len(raw) == 0 || string(raw) == "null" {
		return true
	}
	var n json.Number
	if json.Unmarshal(raw, &n) != nil {
		return false
	}
	_, err := n.Int64()
	return err == nil
}

// toToken makes a Token of what x/oauth2 read, issued when the answer
// arrived, or an Error saying why it cannot.
func (c *HTTPClient) toToken(op string, x *exchange, tok *oauth2.Token, requested []string) (*Token, error) {
	lifetime, problem := c.lifetime(tok.Extra("expires_in"))
	if problem != "" {
		e := &Error{Op: op, URL: redactURL(c.cfg.TokenURL), Description: problem}
		x.fill(e)
		return nil, e
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
		IssuedAt:     x.arrived,
		ExpiresAt:    x.arrived.Add(lifetime),
	}, nil
}

// MaxTokenLifetime is the longest a token is taken to live. A server that
// says longer (expires_in 9999999999) is believed up to here: Vault caps
// the lease far sooner anyway, and no arithmetic on the expiry can
// overflow.
const MaxTokenLifetime = 365 * 24 * time.Hour

// lifetime reads expires_in as x/oauth2 keeps it among the token's extra
// fields. tok.Expiry is not used: x/oauth2 sets it by its own clock, a
// moment after the answer arrived, and leaves it zero for a form-encoded
// expires_in it cannot read. From a JSON answer, x/oauth2 has refused any
// expires_in but an integer, and keeps it as a float64 (a number) or a
// string (as some servers send it); from a form-encoded one, which it
// does not check, as an int64, a float64 or a string. A whole number of
// seconds is taken, at most MaxTokenLifetime; an answer without one gets
// the configured default; otherwise problem says what is wrong.
func (c *HTTPClient) lifetime(v any) (lifetime time.Duration, problem string) {
	var seconds float64
	switch n := v.(type) {
	case nil:
		return c.defaultLifetime()
	case int64:
		seconds = float64(n)
	case float64:
		seconds = n
	case string:
		s := strings.TrimSpace(n)
		if s == "" {
			return c.defaultLifetime()
		}
		i, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, expiresInNotWhole
		}
		seconds = float64(i)
	default:
		return 0, expiresInNotWhole
	}
	switch {
	case seconds != math.Trunc(seconds): // a fraction
		return 0, expiresInNotWhole
	case seconds < 1:
		return 0, "the answer's expires_in is less than a second, so no lease can be sized for the token"
	case seconds >= MaxTokenLifetime.Seconds():
		return MaxTokenLifetime, ""
	}
	return time.Duration(seconds) * time.Second, ""
}

// defaultLifetime is the lifetime of a token whose answer has no
// expires_in, which RFC 6749 §5.1 allows.
func (c *HTTPClient) defaultLifetime() (time.Duration, string) {
	if c.cfg.DefaultTokenLifetime > 0 {
		return c.cfg.DefaultTokenLifetime, ""
	}
	return 0, "the answer has no expires_in, so no lease can be sized for the token; " +
		"if the server documents how long its tokens live, set default_token_lifetime to that"
}
