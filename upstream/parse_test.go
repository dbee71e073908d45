package upstream_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

// aYear is the longest lifetime the client believes a token has.
const aYear = 365 * 24 * time.Hour

// tokenClient is a client of a token endpoint that answers with body, as
// contentType, once per request.
func tokenClient(t *testing.T, contentType, body string, cfg upstream.Config) *upstream.HTTPClient {
	t.Helper()
	srv, _ := recordingServer(t, func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", contentType)
		_, _ = fmt.Fprint(w, body)
	})
	cfg.TokenURL, cfg.CACertPEM = srv.URL, caPEM(srv)
	cfg.ClientID, cfg.ClientSecret = "id", "secret"
	cfg.GrantType, cfg.AuthMethod = upstream.GrantClientCredentials, upstream.AuthClientSecretPost
	return newClient(t, cfg)
}

// Defect 6: a huge expires_in overflowed (9999999999 s wrapped to a
// negative lifetime) or lost the whole token (1e30, fractions). x/oauth2
// reads the answer: it takes an integer (a number or a string), clamped
// to 2^31-1, and refuses the whole answer for a fraction, an exponent or
// a value beyond 64 bits. Such an answer is refused clearly, naming
// expires_in; a long lifetime is clamped to a year; none wraps.
func TestToken_ExpiresInIsClampedOrRefusedNeverWrapped(t *testing.T) {
	const (
		notWhole = "the token answer's expires_in is not a whole number of seconds"
		underOne = "expires_in is less than a second"
	)
	cases := []struct {
		name, expiresIn string
		want            time.Duration
		refused         string
	}{
		{"beyond time.Duration", `9999999999`, aYear, ""},
		{"beyond int32, which x/oauth2 clamps", `3000000000`, aYear, ""},
		{"a string beyond a year", `"99999999"`, aYear, ""},
		{"just under a year", `31535999`, aYear - time.Second, ""},
		{"a string", `"3600"`, time.Hour, ""},
		{"beyond int64", `99999999999999999999`, 0, notWhole},
		{"exponent", `1e30`, 0, notWhole},
		{"beyond float64", `1e400`, 0, notWhole},
		{"a string beyond int64", `"99999999999999999999"`, 0, notWhole},
		{"a string with an exponent", `"1e3"`, 0, notWhole},
		{"fractional", `3600.5`, 0, notWhole},
		{"a fractional string", `" 3600.9 "`, 0, notWhole},
		{"negative", `-5`, 0, underOne},
		{"hugely negative", `-1e30`, 0, notWhole},
		{"zero", `0`, 0, underOne},
		{"under a second", `0.5`, 0, notWhole},
		{"not a number", `"soon"`, 0, notWhole},
		{"NaN", `"NaN"`, 0, notWhole},
		{"infinity", `"Infinity"`, 0, notWhole},
		{"hex", `"0x10"`, 0, notWhole},
		{"a bool", `true`, 0, notWhole},
		{"an object", `{"s":60}`, 0, notWhole},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := tokenClient(t, "application/json", `{"access_token":"t","expires_in":`+tc.expiresIn+`}`, upstream.Config{})
			tok, err := c.Token(context.Background(), upstream.TokenRequest{})
			if tc.refused != "" {
				require.ErrorContains(t, err, tc.refused)
				var ue *upstream.Error
				require.ErrorAs(t, err, &ue)
				require.Equal(t, http.StatusOK, ue.StatusCode)
				require.Nil(t, tok)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, tok.Lifetime())
			require.True(t, tok.ExpiresAt.After(tok.IssuedAt))
		})
	}
}

// A form-encoded answer's expires_in, which x/oauth2 leaves unchecked
// (it reads it with strconv.Atoi and ignores what does not parse), is
// held to the same rule as a JSON one: whole seconds, or refused.
func TestToken_ExpiresInFormEncoded(t *testing.T) {
	for body, want := range map[string]time.Duration{
		"access_token=t&expires_in=1e30":   0,
		"access_token=t&expires_in=60.7":   0,
		"access_token=t&expires_in=1e400":  0,
		"access_token=t&expires_in=%2B60":  time.Minute,
		"access_token=t&expires_in=-60":    0,
		"access_token=t&expires_in=sixty":  0,
		"access_token=t&expires_in=60&x=1": time.Minute,
	} {
		t.Run(body, func(t *testing.T) {
			c := tokenClient(t, "application/x-www-form-urlencoded", body, upstream.Config{})
			tok, err := c.Token(context.Background(), upstream.TokenRequest{})
			if want == 0 {
				require.ErrorContains(t, err, "expires_in")
				return
			}
			require.NoError(t, err)
			require.Equal(t, want, tok.Lifetime())
		})
	}
}

// Defect 6: RFC 6749 §5.1 lets a server omit expires_in; such a server
// is usable when the operator says how long its tokens live.
func TestToken_MissingExpiresInUsesTheDefaultTokenLifetime(t *testing.T) {
	cases := []struct {
		name, body string
		def        time.Duration
		want       time.Duration
		wantErr    string
	}{
		{"omitted, with a default", `{"access_token":"t"}`, time.Hour, time.Hour, ""},
		{"null, with a default", `{"access_token":"t","expires_in":null}`, time.Hour, time.Hour, ""},
		// x/oauth2 refuses the whole answer: "" is not a JSON number.
		{"empty, with a default", `{"access_token":"t","expires_in":""}`, time.Hour, 0, "expires_in is not a whole number"},
		{"empty and form-encoded, with a default", `access_token=t&expires_in=`, time.Hour, time.Hour, ""},
		{"given, with a default", `{"access_token":"t","expires_in":60}`, time.Hour, time.Minute, ""},
		{"omitted, no default", `{"access_token":"t"}`, 0, 0, "default_token_lifetime"},
		{"negative, with a default", `{"access_token":"t","expires_in":-1}`, time.Hour, 0, "expires_in"},
		{"garbage, with a default", `{"access_token":"t","expires_in":"soon"}`, time.Hour, 0, "expires_in"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			contentType := "application/json"
			if !strings.HasPrefix(tc.body, "{") {
				contentType = "application/x-www-form-urlencoded"
			}
			c := tokenClient(t, contentType, tc.body, upstream.Config{DefaultTokenLifetime: tc.def})
			tok, err := c.Token(context.Background(), upstream.TokenRequest{})
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, tok.Lifetime())
		})
	}
}

// clientCredentialsAPI is a client of a clientcredentials API that answers
// a create and a list with these bodies.
func clientCredentialsAPI(t *testing.T, createBody, listBody string) *upstream.HTTPClient {
	t.Helper()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.URL.Path == "/token":
			_, _ = fmt.Fprint(w, `{"access_token":"t","expires_in":60}`)
		case r.Method == http.MethodPost:
			_, _ = io.WriteString(w, createBody)
		case r.Method == http.MethodGet:
			_, _ = io.WriteString(w, listBody)
		default:
			t.Errorf("unexpected %s %s", r.Method, r.URL.Path)
		}
	}))
	t.Cleanup(srv.Close)
	return newClient(t, upstream.Config{TokenURL: srv.URL + "/token", RotationURL: srv.URL + "/api", CACertPEM: caPEM(srv),
		ClientID: "id", ClientSecret: "s", CustomerID: "c", GrantType: upstream.GrantClientCredentials, AuthMethod: upstream.AuthClientSecretPost})
}

// Defect 6: a createdAt the client could not parse failed the whole create
// (and lost the new secret's value, which the API shows once) or list.
func TestClientSecrets_InformationalFieldsAreReadLeniently(t *testing.T) {
	at := time.Date(2024, 5, 27, 14, 26, 36, 0, time.UTC)
	cases := []struct {
		name   string
		fields string
		wantID string
		want   time.Time
	}{
		{"the page's example", `"id":"a1","createdAt":"2024-05-27T14:26:36.9981013Z"`, "a1", at.Add(998101300)},
		{"no fraction", `"id":"a1","createdAt":"2024-05-27T14:26:36Z"`, "a1", at},
		{"an offset", `"id":"a1","createdAt":"2024-05-27T16:26:36+02:00"`, "a1", at},
		{"no zone, taken as UTC", `"id":"a1","createdAt":"2024-05-27T14:26:36.5"`, "a1", at.Add(500 * time.Millisecond)},
		{"no zone, no fraction", `"id":"a1","createdAt":"2024-05-27T14:26:36"`, "a1", at},
		{"snake case", `"id":"a1","created_at":"2024-05-27T14:26:36Z"`, "a1", at},
		{"a date the client cannot read", `"id":"a1","createdAt":"27/05/2024"`, "a1", time.Time{}},
		{"a number", `"id":"a1","createdAt":1716820000`, "a1", time.Time{}},
		{"null", `"id":"a1","createdAt":null`, "a1", time.Time{}},
		{"an object", `"id":"a1","createdAt":{"t":1}`, "a1", time.Time{}},
		{"missing", `"id":"a1"`, "a1", time.Time{}},
		{"a numeric id", `"id":123,"createdAt":"2024-05-27T14:26:36Z"`, "123", at},
		{"a description that is not text", `"id":"a1","description":["x"],"createdAt":"2024-05-27T14:26:36Z"`, "a1", at},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := clientCredentialsAPI(t, `{`+tc.fields+`,"secret":"the-new-secret"}`, `[{`+tc.fields+`,"client_id":"id"}]`)
			created, err := c.CreateClientSecret(context.Background(), "x")
			require.NoError(t, err)
			require.Equal(t, "the-new-secret", created.Secret, "the value shown once is never lost")
			require.Equal(t, tc.wantID, created.ID)
			require.True(t, tc.want.Equal(created.CreatedAt), "created at %v, want %v", created.CreatedAt, tc.want)

			list, err := c.ListClientSecrets(context.Background())
			require.NoError(t, err)
			require.Len(t, list, 1)
			require.Equal(t, tc.wantID, list[0].ID)
			require.Equal(t, "id", list[0].ClientID)
			require.True(t, tc.want.Equal(list[0].CreatedAt), "listed at %v, want %v", list[0].CreatedAt, tc.want)
		})
	}
}

// What is not a secret or a list of them still fails, clearly.
func TestClientSecrets_AnswersThatAreNotTheAPIsFail(t *testing.T) {
	cases := []struct{ name, create, list, wantCreate, wantList string }{
		{"not JSON", `<html>`, `<html>`, "not the JSON", "not the JSON"},
		{"the wrong shape", `[]`, `{}`, "not the JSON", "not the JSON"},
		{"no secret", `{"id":"a1"}`, `[]`, "no id or no secret", ""},
		{"a secret that is not text", `{"id":"a1","secret":{"v":"x"}}`, `[null]`, "no id or no secret", ""},
		{"elements that are not objects", `{"id":"a1","secret":"s2"}`, `["a1"]`, "", "not the JSON"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := clientCredentialsAPI(t, tc.create, tc.list)
			_, err := c.CreateClientSecret(context.Background(), "x")
			if tc.wantCreate == "" {
				require.NoError(t, err)
			} else {
				require.ErrorContains(t, err, tc.wantCreate)
			}
			_, err = c.ListClientSecrets(context.Background())
			if tc.wantList == "" {
				require.NoError(t, err)
			} else {
				require.ErrorContains(t, err, tc.wantList)
			}
		})
	}
}
