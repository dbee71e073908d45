package upstream

import (
	"bytes"
	"context"
	"encoding/json"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// ClientSecret is one secret of the clientcredentials API. Secret is set
// only in the answer to a create: the upstream does not store it.
// CreatedAt is zero when the answer's time could not be read.
type ClientSecret struct {
	ID          string    `json:"id"`
	Description string    `json:"description"`
	ClientID    string    `json:"client_id,omitempty"`
	CreatedAt   time.Time `json:"createdAt"`
	Secret      string    `json:"secret,omitempty"`
}

// UnmarshalJSON reads a secret leniently. The answer to a create is the
// only time the API shows the new secret's value, so nothing merely
// informational in it (a time in another format, a numeric id, a field
// named created_at) may fail the decoding and lose that value.
func (s *ClientSecret) UnmarshalJSON(data []byte) error {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return err
	}
	field := func(names ...string) json.RawMessage {
		for _, name := range names {
			if v, ok := fields[name]; ok {
				return v
			}
		}
		// encoding/json matches names without regard to case; so does this.
		for _, name := range names {
			for k, v := range fields {
				if strings.EqualFold(k, name) {
					return v
				}
			}
		}
		return nil
	}
	*s = ClientSecret{
		ID:          lenientText(field("id")),
		Description: lenientText(field("description")),
		ClientID:    lenientText(field("client_id", "clientId")),
		CreatedAt:   lenientTime(field("createdAt", "created_at")),
		Secret:      lenientText(field("secret")),
	}
	return nil
}

// lenientText is a JSON string, or a number as it was written, else "".
func lenientText(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		return n.String()
	}
	return ""
}

// lenientTime reads RFC 3339 with or without a fraction, or without a
// zone (taken as UTC, as .NET writes a UTC time it does not mark); else
// it is the zero time.
func lenientTime(raw json.RawMessage) time.Time {
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return time.Time{}
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999"} {
		if t, err := time.Parse(layout, strings.TrimSpace(s)); err == nil {
			return t
		}
	}
	return time.Time{}
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
	out := list[:0]
	for _, s := range list {
		if s.ID == "" {
			continue // nothing can be done with a secret that has no id
		}
		s.Secret = "" // never carry a value the API should not have sent
		out = append(out, s)
	}
	return out, nil
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

	var body string
	if method == http.MethodPost {
		// The vendor's page shows the client credentials form sent along
		// with a create; the bearer token is what authorizes it.
		body = url.Values{
			"grant_type":    {string(GrantClientCredentials)},
			"client_id":     {c.cfg.ClientID},
			"client_secret": {c.cfg.ClientSecret},
		}.Encode()
	}
	// Only a GET is repeated: a create tried again after it took effect
	// makes a second secret, and a delete tried again answers 404.
	x := c.newExchange(method == http.MethodGet)
	req, err := http.NewRequestWithContext(ctx, method, u.String(), strings.NewReader(body))
	if err != nil {
		return &Error{Op: op, URL: redactURL(c.cfg.RotationURL), Err: err}
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	e := &Error{Op: op, URL: redactURL(c.cfg.RotationURL)}
	resp, err := x.client(x).Do(req)
	if err != nil {
		x.fill(e)
		e.Err = c.redactor(tok.AccessToken).err(unwrapURLError(err))
		return e
	}
	defer resp.Body.Close()
	data, err := readBounded(resp.Body)
	x.fill(e)
	if err != nil {
		e.Err = c.redactor(tok.AccessToken).err(err)
		return e
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		if code, description, ok := apiError(resp.Header.Get("Content-Type"), data); ok {
			e.setOAuth2Error(c.redactor(tok.AccessToken), code, description)
		}
		return e
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		e.Description = "the answer is not the JSON the API documents"
		return e
	}
	return nil
}

// apiError reads the OAuth2 error (RFC 6749 §5.2) of a failed call to the
// clientcredentials API: a JSON object, whatever the content type says,
// or a form when it says so. ok is false for anything else; a field that
// is not a string is left empty.
func apiError(contentType string, body []byte) (code, description string, ok bool) {
	if trimmed := bytes.TrimSpace(body); len(trimmed) > 0 && trimmed[0] == '{' {
		var fields map[string]any
		if json.Unmarshal(trimmed, &fields) != nil {
			return "", "", false
		}
		code, _ = fields["error"].(string)
		description, _ = fields["error_description"].(string)
		return code, description, true
	}
	media, _, _ := mime.ParseMediaType(contentType)
	if media != "application/x-www-form-urlencoded" && media != "text/plain" {
		return "", "", false
	}
	vals, err := url.ParseQuery(string(body))
	if err != nil {
		return "", "", false
	}
	return vals.Get("error"), vals.Get("error_description"), true
}
