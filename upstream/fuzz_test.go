package upstream

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// The fuzz targets drive the real client over a stub transport that
// answers with what the fuzzer made, so every byte goes through the same
// code as an answer from the network, without a socket per input.

// stubTransport answers every request with its status, headers and body,
// or, for paths in byPath, with those.
type stubTransport struct {
	status      int
	contentType string
	retryAfter  string
	body        []byte
	byPath      map[string]string
}

func (s *stubTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		_, _ = io.Copy(io.Discard, req.Body)
		_ = req.Body.Close()
	}
	resp := &http.Response{
		StatusCode: s.status, Header: http.Header{}, Request: req,
		Body: io.NopCloser(bytes.NewReader(s.body)), ContentLength: int64(len(s.body)),
	}
	if fixed, ok := s.byPath[req.URL.Path]; ok {
		resp.StatusCode, resp.Body, resp.ContentLength = http.StatusOK, io.NopCloser(strings.NewReader(fixed)), int64(len(fixed))
		resp.Header.Set("Content-Type", "application/json")
		return resp, nil
	}
	resp.Header.Set("Content-Type", s.contentType)
	if s.retryAfter != "" {
		resp.Header.Set("Retry-After", s.retryAfter)
	}
	return resp, nil
}

// fuzzSecrets are configured credentials with every character that
// encodes differently somewhere.
var fuzzSecrets = []string{`pl+s$d/ll=r&pct%"q\bs<lt>`, "ünïcødé-秘密-🔑+$/", "plain-secret-value-123"}

// stubClient is a client over stub whose configuration variant picks:
// grant, auth method, credential and default lifetime.
func stubClient(t *testing.T, stub *stubTransport, variant uint8) (*HTTPClient, []string) {
	t.Helper()
	secret := fuzzSecrets[int(variant)%len(fuzzSecrets)]
	cfg := Config{
		TokenURL: "https://token.example/token", RotationURL: "https://token.example/api",
		ClientID: "client-id", ClientSecret: secret, CustomerID: "customer",
		GrantType: GrantClientCredentials, AuthMethod: []AuthMethod{AuthClientSecretPost, AuthClientSecretBasic, AuthClientSecretBasicRaw}[int(variant/3)%3],
		MaxAttempts: int(variant/9)%3 + 1, RetryBackoff: time.Nanosecond,
	}
	if variant&0x40 != 0 {
		cfg.GrantType, cfg.Username, cfg.Password = GrantPassword, "user@example.com", secret+"-pw"
	}
	if variant&0x80 != 0 {
		cfg.DefaultTokenLifetime = time.Hour
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.http.Transport = stub
	return c, []string{cfg.ClientSecret, cfg.Password}
}

// checkNoCredential fails when text holds a credential in an encoding a
// server might echo it in (an independent list from the redactor's).
func checkNoCredential(t *testing.T, text string, credentials ...string) {
	t.Helper()
	for _, s := range credentials {
		if s == "" {
			continue
		}
		j, _ := json.Marshal(s)
		encs := []string{
			s, url.QueryEscape(s), url.PathEscape(s), strings.Trim(string(j), `"`),
			base64.StdEncoding.EncodeToString([]byte(s)), base64.RawURLEncoding.EncodeToString([]byte(s)),
			base64.StdEncoding.EncodeToString([]byte("client-id:" + s)),
		}
		for i, enc := range encs {
			if strings.Contains(text, enc) {
				t.Fatalf("encoding %d of a credential is in the error", i)
			}
		}
	}
	if len(text) > 2048 {
		t.Fatalf("the error is %d bytes long", len(text))
	}
}

// FuzzTokenResponse: whatever a token endpoint answers, the client never
// panics, never returns a token without a positive lifetime (at most
// MaxTokenLifetime), and its errors never hold a configured credential.
func FuzzTokenResponse(f *testing.F) {
	seeds := []struct {
		status           uint16
		contentType      string
		body, retryAfter string
	}{
		{200, "application/json", `{"access_token":"t","expires_in":3600,"token_type":"bearer","scope":"a b "}`, ""},
		{200, "application/json", `{"access_token":"t","expires_in":"3600"}`, ""},
		{200, "application/json", `{"access_token":"t","expires_in":1e30}`, ""},
		{200, "application/json", `{"access_token":"t","expires_in":"99999999999999999999"}`, ""},
		{200, "application/json", `{"access_token":"t","expires_in":9999999999}`, ""},
		{200, "application/json", `{"access_token":"t","expires_in":-1}`, ""},
		{200, "application/json", `{"access_token":"t","expires_in":0.5}`, ""},
		{200, "application/json", `{"access_token":"t"}`, ""},
		{200, "application/json", `{"access_token":"t","expires_in":null}`, ""},
		{200, "text/plain", `access_token=t&expires_in=60`, ""},
		{200, "application/x-www-form-urlencoded", `access_token=t&expires_in=1e400&scope=x`, ""},
		{200, "application/json", `{"access_token": "unterminated`, ""},
		{200, "application/json", `{"error":"invalid_scope"}`, ""},
		{400, "application/json", `{"error":"invalid_client","error_description":"bad secret pl+s$d/ll=r&pct%\"q\\bs<lt>"}`, ""},
		{400, "application/json", `{"error":"invalid_client","error_description":"pl%2Bs%24d%2Fll%3Dr%26pct%25%22q%5Cbs%3Clt%3E"}`, ""},
		{401, "application/json", `{"error":"Y2xpZW50LWlkOnBsYWluLXNlY3JldC12YWx1ZS0xMjM="}`, ""},
		{400, "application/json", `{"error":"` + strings.Repeat("x", 1000) + `"}`, ""},
		{429, "application/json", `{"error":"slow_down"}`, "1"},
		{503, "application/json", `{"error":"temporarily_unavailable"}`, "Wed, 21 Oct 2015 07:28:00 GMT"},
		{503, "text/html", `<html>down</html>`, "99999999999999999999999"},
		{302, "", ``, ""},
		{100, "", ``, ""},
	}
	var variant uint8
	for _, s := range seeds {
		f.Add(s.status, s.contentType, []byte(s.body), s.retryAfter, variant)
		variant += 37 // wraps: the seeds spread over the configuration variants
	}
	f.Fuzz(func(t *testing.T, status uint16, contentType string, body []byte, retryAfter string, variant uint8) {
		if status < 100 || status > 999 {
			status = 200
		}
		stub := &stubTransport{status: int(status), contentType: contentType, body: body, retryAfter: retryAfter}
		c, credentials := stubClient(t, stub, variant)
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()

		var (
			tok *Token
			err error
		)
		if variant&0x20 != 0 {
			tok, err = c.Refresh(ctx, "refresh+$/token=", TokenRequest{Scopes: []string{"s"}})
			credentials = append(credentials, "refresh+$/token=")
		} else {
			tok, err = c.Token(ctx, TokenRequest{Scopes: []string{"s"}})
		}
		if err != nil {
			checkNoCredential(t, err.Error(), credentials...)
			var ue *Error
			if !errors.As(err, &ue) {
				t.Fatalf("not an *Error: %T", err)
			}
			if ue.RetryAfter < 0 || ue.Attempts < 1 || ue.Attempts > MaxAttemptsLimit {
				t.Fatalf("retry after %v, %d attempts", ue.RetryAfter, ue.Attempts)
			}
			return
		}
		if tok.AccessToken == "" {
			t.Fatal("a token without an access token")
		}
		if life := tok.Lifetime(); life <= 0 || life > MaxTokenLifetime {
			t.Fatalf("a token with a lifetime of %v", life)
		}
		if !tok.ExpiresAt.After(tok.IssuedAt) {
			t.Fatal("a token that expires before it was issued")
		}
	})
}

// FuzzClientSecretsResponses: whatever the clientcredentials API answers
// to a create, a list or a delete, the client never panics, a create it
// accepts has an id and the secret's value, a list never carries a value
// or an entry without an id, and errors hold neither the client secret
// nor the access token the call was made with.
func FuzzClientSecretsResponses(f *testing.F) {
	const accessToken = "acc+ess$tok/en=="
	seeds := []struct {
		status uint16
		body   string
	}{
		{200, `{"id":"abcdbe9e8084022af463000","description":"MyNewKey","createdAt":"2024-05-27T14:26:36.9981013Z","secret":"Pv2A7iGsui9ys8bMn0m5J4"}`},
		{200, `[{"id":"abcdbe9e8084022af463000","description":"MyNewKey","client_id":"xxx","createdAt":"2024-05-27T13:46:31.843Z"}]`},
		{200, `{"id":123,"createdAt":"27/05/2024","secret":"s"}`},
		{200, `[{"id":"a","createdAt":1716820000},null,{"Id":"B","CreatedAt":"2024-05-27T13:46:31"}]`},
		{200, `[{"id":"a","secret":"should-not-be-here"}]`},
		{200, `{"id":"a"}`},
		{200, `not json`},
		{200, `[` + strings.Repeat(`{"id":"a"},`, 100) + `{"id":"b"}]`},
		{400, `{"error":"invalid_request","error_description":"token ` + url.QueryEscape(accessToken) + `"}`},
		{400, `{"error":"` + base64.StdEncoding.EncodeToString([]byte(accessToken)) + `"}`},
		{401, `{"error":"invalid_token"}`},
		{404, `{"error":"not_found","error_description":"no client secret with that id"}`},
		{503, ``},
	}
	for i, s := range seeds {
		f.Add(s.status, []byte(s.body), uint8(i))
	}
	f.Fuzz(func(t *testing.T, status uint16, body []byte, variant uint8) {
		if status < 100 || status > 999 {
			status = 200
		}
		stub := &stubTransport{status: int(status), contentType: "application/json", body: body,
			byPath: map[string]string{"/token": `{"access_token":"` + accessToken + `","expires_in":60}`}}
		c, credentials := stubClient(t, stub, variant&^0x40) // the clientcredentials API goes with client credentials
		credentials = append(credentials, accessToken)
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()

		var err error
		switch variant % 3 {
		case 0:
			var created *ClientSecret
			if created, err = c.CreateClientSecret(ctx, "fuzz"); err == nil && (created.ID == "" || created.Secret == "") {
				t.Fatal("a created secret without an id or a value")
			}
		case 1:
			var list []ClientSecret
			list, err = c.ListClientSecrets(ctx)
			for _, s := range list {
				if s.ID == "" || s.Secret != "" {
					t.Fatal("a listed secret without an id, or with a value")
				}
			}
		case 2:
			err = c.DeleteClientSecret(ctx, "some-id")
		}
		if err != nil {
			checkNoCredential(t, err.Error(), credentials...)
		}
	})
}
