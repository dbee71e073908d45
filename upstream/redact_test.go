package upstream_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"unicode/utf16"

	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

// Secrets with every character that encodes differently in a URL, a form,
// base64, JSON or HTML, and some that are not ASCII.
var awkwardSecrets = map[string]string{
	"specials": `pl+s$d/ll=r&pct%"q\bs<lt>'ap`,
	"unicode":  "ünïcødé-秘密-🔑+$/",
	"spaces":   "sp ace+and=more ",
}

// encodings are the ways a server might echo a credential it was sent:
// as is, URL- and form-encoded (either case of hex), base64 in every
// alphabet, JSON-escaped as Go, PHP or Python would, and, when id is set,
// inside the HTTP Basic credentials.
func encodings(id, s string) map[string]string {
	lowerHex := func(v string) string {
		var b strings.Builder
		for i := 0; i < len(v); i++ {
			if v[i] == '%' && i+2 < len(v) {
				b.WriteString("%" + strings.ToLower(v[i+1:i+3]))
				i += 2
				continue
			}
			b.WriteByte(v[i])
		}
		return b.String()
	}
	jsonGo, _ := json.Marshal(s)
	var jsonASCII strings.Builder // Python's ensure_ascii and PHP's default
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			jsonASCII.WriteString(`\` + string(r))
		case r == '/':
			jsonASCII.WriteString(`\/`)
		case r < 0x20 || r > 0x7e:
			for _, u := range utf16.Encode([]rune{r}) {
				fmt.Fprintf(&jsonASCII, `\u%04x`, u)
			}
		default:
			jsonASCII.WriteRune(r)
		}
	}
	out := map[string]string{
		"raw":                  s,
		"query escaped":        url.QueryEscape(s),
		"query escaped, %20":   strings.ReplaceAll(url.QueryEscape(s), "+", "%20"),
		"query escaped, lower": lowerHex(url.QueryEscape(s)),
		"path escaped":         url.PathEscape(s),
		"form encoded":         strings.TrimPrefix(url.Values{"v": {s}}.Encode(), "v="),
		"base64 std":           base64.StdEncoding.EncodeToString([]byte(s)),
		"base64 url":           base64.URLEncoding.EncodeToString([]byte(s)),
		"base64 raw std":       base64.RawStdEncoding.EncodeToString([]byte(s)),
		"base64 raw url":       base64.RawURLEncoding.EncodeToString([]byte(s)),
		"JSON escaped":         strings.Trim(string(jsonGo), `"`),
		"JSON escaped, ASCII":  jsonASCII.String(),
		"JSON escaped, upper":  upperUnicodeEscapes(jsonASCII.String()),
	}
	if id != "" {
		out["Basic, raw"] = base64.StdEncoding.EncodeToString([]byte(id + ":" + s))
		out["Basic, RFC 6749"] = base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id) + ":" + url.QueryEscape(s)))
	}
	return out
}

// upperUnicodeEscapes writes the hex of \u escapes in upper case, as some
// encoders do; what only looks like one (a literal backslash and u, not
// followed by four hex digits) stays as it is.
func upperUnicodeEscapes(s string) string {
	return regexp.MustCompile(`\\u[0-9a-fA-F]{4}`).ReplaceAllStringFunc(s, func(e string) string { return `\u` + strings.ToUpper(e[2:]) })
}

// requireNoEncoding fails when text holds the credential in any encoding.
// Its message shows the text with each encoding masked, so not even a
// failing test prints a credential.
func requireNoEncoding(t *testing.T, text, id, secret string) {
	t.Helper()
	encs := encodings(id, secret)
	masked := text
	for name, enc := range encs {
		masked = strings.ReplaceAll(masked, enc, "<"+name+">")
	}
	for name, enc := range encs {
		require.False(t, strings.Contains(text, enc), "the credential, %s, is in the error: %s", name, masked)
	}
}

// oauthError answers with an OAuth2 error body.
func oauthError(w http.ResponseWriter, status int, code, description string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": description})
}

// validCode is RFC 6749's error code: %x20-21 / %x23-5B / %x5D-7E, here
// also at most 64 characters.
func validCode(code string) bool {
	if len(code) > 64 {
		return false
	}
	for _, r := range code {
		if r < 0x20 || r == 0x22 || r == 0x5c || r > 0x7e {
			return false
		}
	}
	return true
}

// Defect 5: a 200 KB error code holding the client secret came back whole.
func TestError_CodeIsBoundedAndRedacted(t *testing.T) {
	const secret = "the-client-secret+$=/"
	cases := []struct {
		name, code string
	}{
		{"200 KB holding the secret", strings.Repeat("x", 200<<10) + secret},
		{"the secret form-encoded", "invalid_client:" + url.QueryEscape(secret)},
		{"the secret alone", secret},
		{"quotes, backslashes and line ends", "bad\"code\\with\nnewline"},
		{"not ASCII", "ünïcode_error"},
		{"65 characters", strings.Repeat("a", 65)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fake, err := fakeupstream.Start(fakeupstream.Options{Credentials: fakeupstream.Credentials{ClientSecret: secret}})
			require.NoError(t, err)
			defer fake.Close()
			fake.InjectFault(fakeupstream.EndpointToken, fakeupstream.Fault{Status: 400, Code: tc.code})
			cr := fake.Credentials()
			c := newClient(t, upstream.Config{TokenURL: fake.TokenURL(), CACertPEM: fake.CACertPEM(), ClientID: cr.ClientID,
				ClientSecret: secret, GrantType: upstream.GrantClientCredentials, AuthMethod: upstream.AuthClientSecretPost})

			_, err = c.Token(context.Background(), upstream.TokenRequest{})
			require.Error(t, err)
			require.Contains(t, err.Error(), "HTTP 400")
			require.Less(t, len(err.Error()), 1024, "the error is bounded")
			requireNoEncoding(t, err.Error(), cr.ClientID, secret)
			var ue *upstream.Error
			require.True(t, errors.As(err, &ue))
			require.True(t, validCode(ue.Code), "the code (%d bytes) is not one RFC 6749 allows", len(ue.Code))
			require.Empty(t, fake.Unexpected())
		})
	}
}

// Defect 5: redaction matched only the exact value, so an encoded echo of
// a secret with + or $ passed. Each credential the client holds, in each
// encoding, in the error description and in the error code.
func TestError_RedactsEveryEncodingOfEveryCredential(t *testing.T) {
	// Each call makes its own client, against one server per credential
	// and secret whose answers the subtests set in turn.
	type call func(t *testing.T, srv *httptest.Server, secret string) (id string, err error)
	clientFor := func(t *testing.T, srv *httptest.Server, cfg upstream.Config) *upstream.HTTPClient {
		cfg.TokenURL, cfg.RotationURL, cfg.CACertPEM = srv.URL+"/token", srv.URL+"/api", caPEM(srv)
		cfg.CustomerID = "cust"
		if cfg.GrantType == "" {
			cfg.GrantType = upstream.GrantClientCredentials
		}
		if cfg.AuthMethod == "" {
			cfg.AuthMethod = upstream.AuthClientSecretPost
		}
		return newClient(t, cfg)
	}
	credentials := []struct {
		name string
		// api says whether the echo comes from the clientcredentials API
		// rather than the token endpoint.
		api bool
		do  call
	}{
		{"client secret", false, func(t *testing.T, srv *httptest.Server, secret string) (string, error) {
			_, err := clientFor(t, srv, upstream.Config{ClientID: "my-id", ClientSecret: secret}).Token(context.Background(), upstream.TokenRequest{})
			return "my-id", err
		}},
		{"client secret as raw Basic", false, func(t *testing.T, srv *httptest.Server, secret string) (string, error) {
			c := clientFor(t, srv, upstream.Config{ClientID: "my-id", ClientSecret: secret, AuthMethod: upstream.AuthClientSecretBasicRaw})
			_, err := c.Token(context.Background(), upstream.TokenRequest{})
			return "my-id", err
		}},
		{"password", false, func(t *testing.T, srv *httptest.Server, secret string) (string, error) {
			c := clientFor(t, srv, upstream.Config{ClientID: "client", GrantType: upstream.GrantPassword, Username: "me", Password: secret})
			_, err := c.Token(context.Background(), upstream.TokenRequest{})
			return "me", err
		}},
		{"refresh token", false, func(t *testing.T, srv *httptest.Server, secret string) (string, error) {
			c := clientFor(t, srv, upstream.Config{ClientID: "my-id", ClientSecret: "s3cret-other", AuthMethod: upstream.AuthClientSecretBasicRaw})
			_, err := c.Refresh(context.Background(), secret, upstream.TokenRequest{})
			return "", err
		}},
		{"access token, echoed by the clientcredentials API", true, func(t *testing.T, srv *httptest.Server, _ string) (string, error) {
			_, err := clientFor(t, srv, upstream.Config{ClientID: "my-id", ClientSecret: "s3cret-other"}).ListClientSecrets(context.Background())
			return "", err
		}},
	}
	for _, cred := range credentials {
		for secretName, secret := range awkwardSecrets {
			var answer atomic.Pointer[func(http.ResponseWriter)]
			echo := func(w http.ResponseWriter) { (*answer.Load())(w) }
			tokenEcho, apiEcho, accessToken := echo, (func(http.ResponseWriter))(nil), "t"
			if cred.api {
				tokenEcho, apiEcho, accessToken = nil, echo, secret
			}
			srv := newEchoServer(t, accessToken, tokenEcho, apiEcho)
			for encName, enc := range encodings("my-id", secret) {
				for _, where := range []string{"error_description", "error"} {
					t.Run(cred.name+"/"+secretName+"/"+encName+"/"+where, func(t *testing.T) {
						a := echoAnswer(where, enc)
						answer.Store(&a)
						id, err := cred.do(t, srv, secret)
						require.Error(t, err)
						require.Contains(t, err.Error(), "HTTP 400")
						requireNoEncoding(t, err.Error(), id, secret)
					})
				}
			}
		}
	}
}

// echoAnswer answers 400 with enc as the error code (where is "error") or
// inside the error_description.
func echoAnswer(where, enc string) func(http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		if where == "error" {
			oauthError(w, http.StatusBadRequest, enc, "")
			return
		}
		oauthError(w, http.StatusBadRequest, "invalid_request", "you sent "+enc+", which is wrong")
	}
}

// newEchoServer serves /token, answering with tokenAnswer or else issuing
// accessToken, and /api, answering with apiAnswer.
func newEchoServer(t *testing.T, accessToken string, tokenAnswer, apiAnswer func(w http.ResponseWriter)) *httptest.Server {
	t.Helper()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/token" && tokenAnswer != nil:
			tokenAnswer(w)
		case r.URL.Path == "/token":
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{"access_token": accessToken, "expires_in": 60})
		case r.URL.Path == "/api" && apiAnswer != nil:
			apiAnswer(w)
		default:
			t.Errorf("unexpected request %s %s", r.Method, r.URL.Path)
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// An encoding nobody listed (twice over, inside other base64, as HTML
// entities) still keeps the credential out: the whole text is withheld.
func TestError_WithholdsTextWithAnEncodingNotListed(t *testing.T) {
	secret := awkwardSecrets["specials"]
	cases := map[string]string{
		"URL-encoded twice":          url.QueryEscape(url.QueryEscape(secret)),
		"base64 of a bearer header":  base64.StdEncoding.EncodeToString([]byte("Bearer: " + secret)),
		"base64 of a form body":      base64.RawURLEncoding.EncodeToString([]byte("a=1&client_secret=" + url.QueryEscape(secret))),
		"HTML entities":              strings.NewReplacer("+", "&#43;", "&", "&amp;", "<", "&lt;").Replace(secret),
		"JSON-escaped, URL-encoded":  url.QueryEscape(encodings("", secret)["JSON escaped, ASCII"]),
		"upper and lower hex, mixed": strings.Replace(url.QueryEscape(secret), "%2B", "%2b", 1),
	}
	for name, enc := range cases {
		t.Run(name, func(t *testing.T) {
			srv := newEchoServer(t, "t", func(w http.ResponseWriter) {
				oauthError(w, http.StatusBadRequest, "invalid_request", "you sent "+enc)
			}, nil)
			c := newClient(t, upstream.Config{TokenURL: srv.URL + "/token", CACertPEM: caPEM(srv), ClientID: "my-id", ClientSecret: secret,
				GrantType: upstream.GrantClientCredentials, AuthMethod: upstream.AuthClientSecretPost})
			_, err := c.Token(context.Background(), upstream.TokenRequest{})
			require.ErrorContains(t, err, `HTTP 400, OAuth2 error "invalid_request": `)
			require.False(t, strings.Contains(err.Error(), enc), "the credential is in the error")
			requireNoEncoding(t, err.Error(), "my-id", secret)
		})
	}
}

// What the upstream says is kept short and printable, and a text cut
// short never ends in part of a credential.
func TestError_TextIsBoundedAndPrintable(t *testing.T) {
	long := strings.Repeat(`l0ng+$ecret/`, 100) // 1200 bytes
	cases := []struct {
		name, description, secret string
		want                      string
	}{
		{"control characters", "line1\nline2\ttab\x00nul\u202eoverride\x7f", "s3cr3t-value", "line1 line2 tab nul override "},
		{"invalid UTF-8", "bad \xff\xfe bytes", "s3cr3t-value", "bad \uFFFD\uFFFD bytes"},
		{"half a megabyte", strings.Repeat("y", 1<<19), "s3cr3t-value", strings.Repeat("y", 300) + "…"},
		{"cut within a rune", strings.Repeat("y", 299) + "é and more", "s3cr3t-value", strings.Repeat("y", 299) + "…"},
	}
	// However far in the text is cut, no remnant of a long credential
	// that straddles the cut shows.
	for n := 1; n <= 40; n++ {
		cases = append(cases, struct{ name, description, secret, want string }{
			fmt.Sprintf("%d long credentials and then one more", n), strings.Repeat(long+" ", n) + long, long, "",
		})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newEchoServer(t, "t", func(w http.ResponseWriter) {
				oauthError(w, http.StatusBadRequest, "invalid_request", tc.description)
			}, nil)
			c := newClient(t, upstream.Config{TokenURL: srv.URL + "/token", CACertPEM: caPEM(srv), ClientID: "my-id", ClientSecret: tc.secret,
				GrantType: upstream.GrantClientCredentials, AuthMethod: upstream.AuthClientSecretPost})
			_, err := c.Token(context.Background(), upstream.TokenRequest{})
			var ue *upstream.Error
			require.True(t, errors.As(err, &ue))
			require.LessOrEqual(t, len(ue.Description), 300+len("…"))
			if tc.want != "" {
				require.Equal(t, tc.want, ue.Description)
			}
			requireNoEncoding(t, err.Error(), "my-id", tc.secret)
			require.False(t, strings.Contains(err.Error(), tc.secret[:12]), "part of the credential is in the error")
		})
	}
}
