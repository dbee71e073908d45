package upstream_test

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"maps"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

// Edges a mutation run found untested: each test here fails when the
// boundary or the rule it names is moved.

// statusLineEcho is a server that answers every request with a malformed
// status line holding what pick takes from the request. net/http quotes
// such a line in its error, so the credential would reach the error's text
// unless the transport error is redacted too.
func statusLineEcho(t *testing.T, pick func(r *http.Request) string) *httptest.Server {
	t.Helper()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		conn, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer func() { _ = conn.Close() }()
		_, _ = buf.WriteString("HTTP/1.1 " + pick(r) + " Nope\r\nContent-Length: 0\r\n\r\n")
		_ = buf.Flush()
	}))
	t.Cleanup(srv.Close)
	return srv
}

// A transport error can carry what the server sent, and the server may
// echo a credential in it: token requests, refreshes, the clientcredentials
// API, logouts and RFC 7009 revocations all redact it. (Made a pass-through,
// redactor.err let all of these through.)
func TestError_TransportErrorsEchoingACredentialAreRedacted(t *testing.T) {
	const secret, password, refresh, access = "cl13nt-s3cr3t-value", "p4ssw0rd-value-here", "r3fr3sh-t0k3n-value", "acc3ss-t0k3n-value"
	formOr := func(field string) func(r *http.Request) string {
		return func(r *http.Request) string {
			if v := r.PostForm.Get(field); v != "" {
				return v
			}
			return strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		}
	}
	cases := []struct {
		name, secret, field string
		call                func(c *upstream.HTTPClient) error
	}{
		{"token request, client secret", secret, "client_secret", func(c *upstream.HTTPClient) error {
			_, err := c.Token(context.Background(), upstream.TokenRequest{})
			return err
		}},
		{"token request, password", password, "password", func(c *upstream.HTTPClient) error {
			_, err := c.Token(context.Background(), upstream.TokenRequest{})
			return err
		}},
		{"refresh", refresh, "refresh_token", func(c *upstream.HTTPClient) error {
			_, err := c.Refresh(context.Background(), refresh, upstream.TokenRequest{})
			return err
		}},
		{"logout", access, "", func(c *upstream.HTTPClient) error { return c.Logout(context.Background(), access) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := statusLineEcho(t, formOr(tc.field))
			c := newClient(t, upstream.Config{TokenURL: srv.URL + "/token", RevocationURL: srv.URL + "/logout", CACertPEM: caPEM(srv),
				ClientID: "id", ClientSecret: secret, GrantType: upstream.GrantPassword, AuthMethod: upstream.AuthClientSecretPost,
				Username: "me@example.com", Password: password})
			err := tc.call(c)
			require.ErrorContains(t, err, "malformed HTTP status code")
			requireNoEncoding(t, err.Error(), "id", tc.secret)
		})
	}
	t.Run("RFC 7009 revocation", func(t *testing.T) {
		srv := statusLineEcho(t, func(r *http.Request) string { return r.PostForm.Get("token") })
		c := newClient(t, upstream.Config{TokenURL: srv.URL + "/token", RevocationURL: srv.URL + "/revoke", RevocationStyle: upstream.RevocationRFC7009,
			CACertPEM: caPEM(srv), ClientID: "id", ClientSecret: secret, GrantType: upstream.GrantClientCredentials, AuthMethod: upstream.AuthClientSecretPost})
		err := c.Logout(context.Background(), access)
		require.ErrorContains(t, err, "malformed HTTP status code")
		requireNoEncoding(t, err.Error(), "id", access)
	})
	t.Run("clientcredentials API", func(t *testing.T) {
		srv := newEchoServer(t, access, nil, nil)
		echo := statusLineEcho(t, formOr(""))
		srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/api" {
				echo.Config.Handler.ServeHTTP(w, r)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"access_token":"` + access + `","expires_in":60}`))
		})
		c := newClient(t, upstream.Config{TokenURL: srv.URL + "/token", RotationURL: srv.URL + "/api", CustomerID: "cust", CACertPEM: caPEM(srv),
			ClientID: "id", ClientSecret: secret, GrantType: upstream.GrantClientCredentials, AuthMethod: upstream.AuthClientSecretPost})
		_, err := c.ListClientSecrets(context.Background())
		require.ErrorContains(t, err, "malformed HTTP status code")
		requireNoEncoding(t, err.Error(), "id", access)
	})
}

// describe answers one token request with this error_description and
// returns what the client made of it.
func describe(t *testing.T, secret, description string) *upstream.Error {
	t.Helper()
	srv := newEchoServer(t, "t", func(w http.ResponseWriter) {
		oauthError(w, http.StatusBadRequest, "invalid_request", description)
	}, nil)
	c := newClient(t, upstream.Config{TokenURL: srv.URL + "/token", CACertPEM: caPEM(srv), ClientID: "my-id", ClientSecret: secret,
		GrantType: upstream.GrantClientCredentials, AuthMethod: upstream.AuthClientSecretPost})
	_, err := c.Token(context.Background(), upstream.TokenRequest{})
	var ue *upstream.Error
	require.True(t, errors.As(err, &ue), "%v", err)
	return ue
}

// A description that ends inside an escape is read to its end, not past
// it: the JSON-escape backstop stops at the text's last byte.
func TestError_DescriptionsEndingInsideAnEscape(t *testing.T) {
	for _, d := range []string{`ends in \`, `ends in \u`, `ends in \u12`, `ends in \u123`, `ends in \ud83d`, `ends in \ud83d\`,
		`ends in \ud83d\u`, `ends in \ud83d\ude0`, `\`, `\u`, `x\"\`} {
		t.Run(d, func(t *testing.T) {
			require.Equal(t, d, describe(t, "s3cr3t-value", d).Description)
		})
	}
}

// Texts are kept up to exactly 300 bytes; one byte more is cut there.
func TestError_DescriptionOfExactly300BytesIsKeptWhole(t *testing.T) {
	for n, want := range map[int]string{
		299: strings.Repeat("y", 299),
		300: strings.Repeat("y", 300),
		301: strings.Repeat("y", 300) + "…",
	} {
		require.Equal(t, want, describe(t, "s3cr3t-value", strings.Repeat("y", n)).Description, "%d bytes", n)
	}
	// A rune that would end past byte 300 is left out whole.
	require.Equal(t, strings.Repeat("y", 299)+"…", describe(t, "s3cr3t-value", strings.Repeat("y", 299)+"é").Description)
	require.Equal(t, strings.Repeat("y", 298)+"é", describe(t, "s3cr3t-value", strings.Repeat("y", 298)+"é").Description)
}

// The backstop undoes \u escapes that no listed encoding matches (hex in
// mixed case, surrogate pairs for astral runes) and finds a non-ASCII
// secret in them: the text is withheld.
func TestError_BackstopDecodesUnicodeEscapesOfANonASCIISecret(t *testing.T) {
	const secret = "ünï-秘密-🔑-cødé"
	var mixed strings.Builder
	for i, r := range secret {
		if r < 0x80 {
			mixed.WriteRune(r)
			continue
		}
		for _, u := range utf16.Encode([]rune{r}) {
			hex := []byte(strings.ToLower(string([]byte{"0123456789abcdef"[u>>12], "0123456789abcdef"[u>>8&15], "0123456789abcdef"[u>>4&15], "0123456789abcdef"[u&15]})))
			if i%2 == 0 {
				hex[len(hex)-1] = byte(strings.ToUpper(string(hex[len(hex)-1]))[0])
			} else {
				hex[0] = byte(strings.ToUpper(string(hex[0]))[0])
			}
			mixed.WriteString(`\u` + string(hex))
		}
	}
	for name, text := range map[string]string{
		"mixed-case hex":              mixed.String(),
		"mixed-case hex, URL-encoded": url.QueryEscape(mixed.String()),
		"escaped only in the middle":  "ünï-" + `\u79D8\u5bC6` + "-🔑-cødé",
		"astral rune as a mixed pair": "ünï-秘密-" + `\uD83d\uDd11` + "-cødé",
	} {
		t.Run(name, func(t *testing.T) {
			ue := describe(t, secret, "you sent "+text)
			require.Equal(t, "[withheld: it held a credential]", ue.Description)
		})
	}
	// A lone surrogate, or one followed by no low surrogate, decodes to
	// nothing that matches: the text stays.
	require.Equal(t, `lone \ud83d and \ud83dx`, describe(t, secret, `lone \ud83d and \ud83dx`).Description)
}

// A refresh without scopes sends no scope parameter at all: an empty
// scope= asks some servers for a token with no scope.
func TestRefresh_WithoutScopesSendsNoScope(t *testing.T) {
	srv, last := recordingServer(t, nil)
	c := newClient(t, upstream.Config{TokenURL: srv.URL, CACertPEM: caPEM(srv), ClientID: "id", ClientSecret: "s",
		GrantType: upstream.GrantPassword, AuthMethod: upstream.AuthClientSecretPost, Username: "u", Password: "p"})
	_, err := c.Refresh(context.Background(), "rt", upstream.TokenRequest{})
	require.NoError(t, err)
	_, sent := last.Load().form["scope"]
	require.False(t, sent, "a refresh without scopes sent scope=")
	_, err = c.Refresh(context.Background(), "rt", upstream.TokenRequest{Scopes: []string{"a", "b"}})
	require.NoError(t, err)
	require.Equal(t, "a b", last.Load().form.Get("scope"))
}

// IsInvalidClient is a refused credential (401, or invalid_client), never
// an outage or a throttle: a rotation that took those for a refusal would
// give up on a new secret that merely met a bad minute.
func TestIsInvalidClient_OnlyForARefusedCredential(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&upstream.Error{StatusCode: 401}, true},
		{&upstream.Error{StatusCode: 400, Code: "invalid_client"}, true},
		{&upstream.Error{StatusCode: 400, Code: "invalid_grant"}, false},
		{&upstream.Error{StatusCode: 500}, false},
		{&upstream.Error{StatusCode: 503, Code: "temporarily_unavailable"}, false},
		{&upstream.Error{StatusCode: 429, Code: "slow_down"}, false},
		{&upstream.Error{Description: "connection refused"}, false},
		{errors.New("invalid_client"), false},
		{nil, false},
	} {
		require.Equal(t, tc.want, upstream.IsInvalidClient(tc.err), "%#v", tc.err)
	}
}

// IsPermanent: redirects and answers that a retry gets again; never the
// answers that say "not now", nor a failure without an answer.
func TestIsPermanent_RedirectsAndRefusalsNotOutages(t *testing.T) {
	for status, want := range map[int]bool{
		200: false, 299: false, 300: true, 301: true, 308: true, 400: true, 404: true, 405: true,
		408: false, 429: false, 500: false, 501: true, 502: false, 503: false, 504: false, 505: true,
	} {
		require.Equal(t, want, upstream.IsPermanent(&upstream.Error{StatusCode: status}), "HTTP %d", status)
	}
	require.False(t, upstream.IsPermanent(&upstream.Error{Description: "connection reset"}))
	require.False(t, upstream.IsPermanent(errors.New("HTTP 301")))
}

// CertPool names the block that is wrong, counting from 1 across the
// bundle.
func TestCertPool_NamesTheBlockThatIsWrong(t *testing.T) {
	srv, _ := recordingServer(t, nil)
	ca := caPEM(srv)
	_, err := upstream.CertPool(ca + "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
	require.EqualError(t, err, `PEM block 2 is a "PRIVATE KEY", not a CERTIFICATE`)
	_, err = upstream.CertPool(ca + ca + "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
	require.ErrorContains(t, err, "certificate 3 does not parse")
	_, err = upstream.CertPool("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
	require.EqualError(t, err, `PEM block 1 is a "PRIVATE KEY", not a CERTIFICATE`)
}

// An answer of exactly 1 MiB is read; one byte more is refused.
func TestClientSecrets_AnswerOfExactly1MiBIsRead(t *testing.T) {
	for size, ok := range map[int]bool{1 << 20: true, 1<<20 + 1: false} {
		srv := newEchoServer(t, "t", nil, func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/json")
			head := `[{"id":"a","description":"`
			_, _ = w.Write([]byte(head + strings.Repeat("x", size-len(head)-3) + `"}]`))
		})
		c := newClient(t, upstream.Config{TokenURL: srv.URL + "/token", RotationURL: srv.URL + "/api", CustomerID: "cust", CACertPEM: caPEM(srv),
			ClientID: "id", ClientSecret: "s", GrantType: upstream.GrantClientCredentials, AuthMethod: upstream.AuthClientSecretPost})
		list, err := c.ListClientSecrets(context.Background())
		if ok {
			require.NoError(t, err, "%d bytes", size)
			require.Len(t, list, 1)
		} else {
			require.ErrorContains(t, err, "larger than 1048576 bytes", "%d bytes", size)
		}
	}
}

// Every encoding of a credential is replaced whole, leaving no remnant of
// a longer one that a shorter one is part of (base64 without padding is
// the start of base64 with it): the longest is replaced first.
func TestError_EncodingsAreReplacedWholeLongestFirst(t *testing.T) {
	secrets := map[string]string{
		"U+0080, the first rune past ASCII": "c0ntrol-\u0080-and-\u00ff",
		"a backslash and u":                 `p4ss\u12-and\uabc`,
	}
	maps.Copy(secrets, awkwardSecrets)
	for name, secret := range secrets {
		for encName, enc := range encodings("my-id", secret) {
			t.Run(name+"/"+encName, func(t *testing.T) {
				require.Equal(t, "you sent [redacted], which is wrong", describe(t, secret, "you sent "+enc+", which is wrong").Description)
			})
		}
	}
}

// An error says "retry after" only when the upstream sent a Retry-After.
func TestError_TextMentionsRetryAfterOnlyWhenSent(t *testing.T) {
	require.NotContains(t, (&upstream.Error{Op: "token request", StatusCode: 503}).Error(), "retry after")
	require.Contains(t, (&upstream.Error{Op: "token request", StatusCode: 503, RetryAfter: time.Second}).Error(), "retry after 1s")
}

// A text of exactly 16 KiB is read whole; only a longer one is cut, and a
// cut drops what could be part of an encoded credential at its end: with
// a long credential that is all of what was read.
func TestError_TextOfExactly16KiBIsReadWhole(t *testing.T) {
	long := strings.Repeat("%", 4<<10) // 12 KiB URL-encoded
	require.Equal(t, strings.Repeat("y", 300)+"…", describe(t, long, strings.Repeat("y", 16<<10)).Description)
	require.Equal(t, "…", describe(t, long, strings.Repeat("y", 16<<10+1)).Description)
}

// codeOf answers one token request with this error code and returns the
// code the client kept.
func codeOf(t *testing.T, secret, code string) *upstream.Error {
	t.Helper()
	srv := newEchoServer(t, "t", func(w http.ResponseWriter) { oauthError(w, http.StatusBadRequest, code, "") }, nil)
	c := newClient(t, upstream.Config{TokenURL: srv.URL + "/token", CACertPEM: caPEM(srv), ClientID: "my-id", ClientSecret: secret,
		GrantType: upstream.GrantClientCredentials, AuthMethod: upstream.AuthClientSecretPost})
	_, err := c.Token(context.Background(), upstream.TokenRequest{})
	var ue *upstream.Error
	require.True(t, errors.As(err, &ue), "%v", err)
	return ue
}

// An error code is kept up to exactly 64 characters, with every character
// RFC 6749 allows (space and ~ at its ends), and dropped past that; a code
// read whole (16 KiB) that is a code once the credential is out is kept.
func TestError_CodeBoundsAsRFC6749Says(t *testing.T) {
	for code, kept := range map[string]bool{
		strings.Repeat("c", 64): true, strings.Repeat("c", 65): false,
		"invalid client": true, "a~b": true, "!#[]": true, "a\x7fb": false, "a\x1fb": false, `a"b`: false, `a\b`: false,
	} {
		want := ""
		if kept {
			want = code
		}
		require.Equal(t, want, codeOf(t, "s3cr3t-value", code).Code, "%q", code)
	}
	long := strings.Repeat("z", 16<<10-len("invalid_client:"))
	require.Equal(t, "invalid_client:[redacted]", codeOf(t, long, "invalid_client:"+long).Code)
	require.Empty(t, codeOf(t, long, "invalid_client:"+long+"x").Code, "past 16 KiB a code is not read")
}

// The base64 backstop reads runs of every character of both alphabets:
// base64 that no listed encoding matches (of "Bearer: " and the secret)
// is found whatever characters it has, and the text is withheld.
func TestError_Base64BackstopReadsEveryAlphabetCharacter(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	seen := map[byte]bool{}
	for range 60 {
		b := make([]byte, 12+rng.Intn(12))
		for i := range b {
			b[i] = byte(0x21 + rng.Intn(0x5e)) //nolint:gosec // G115: 0x21..0x7e fits a byte
		}
		secret := string(b)
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawURLEncoding} {
			text := enc.EncodeToString([]byte("Bearer: " + secret))
			for i := range len(text) {
				seen[text[i]] = true
			}
			require.Equal(t, "[withheld: it held a credential]", describe(t, secret, "you sent "+text).Description)
		}
	}
	for _, c := range []byte("AZaz09+/-_=") {
		require.True(t, seen[c], "no encoding had %q", c)
	}
}

// The percent-decoding backstop reads every hex digit in either case,
// escapes of characters that need none included: a text that holds the
// secret percent-encoded in mixed case (no listed encoding is) is withheld.
// A text that ends inside an escape is read to its end.
func TestError_BackstopDecodesPercentEscapesInMixedCase(t *testing.T) {
	const secret = "a*b:c/d?e)f0gZ"
	for _, text := range []string{"a%2ab%3Ac%2fd%3Fe%29f%30g%5a", "a%2Ab%3ac%2Fd%3fe%29f0g%5A"} {
		require.Equal(t, "[withheld: it held a credential]", describe(t, secret, "you sent "+text).Description, text)
	}
	for _, d := range []string{`ends in %`, `ends in %4`, `ends in %4g`, `%`, `+`} {
		require.Equal(t, d, describe(t, secret, d).Description)
	}
}

// The base64 backstop reads a run from each of its four offsets, whatever
// base64 characters the echo is glued to on either side, and a run as
// short as 4 characters (3 bytes).
func TestError_Base64BackstopReadsRunsGluedToOtherCharacters(t *testing.T) {
	const secret = "s3cr3t+v4lue" // "Bearer: " and it: 20 bytes, no padding
	enc := base64.RawStdEncoding.EncodeToString([]byte("Bearer: " + secret + "!"))
	require.Zero(t, len(enc)%4)
	for _, text := range []string{enc + "x", "x" + enc, "xy" + enc, "xyz" + enc, "x" + enc + "yz"} {
		require.Equal(t, "[withheld: it held a credential]", describe(t, secret, "you sent "+text).Description, text)
	}
	// "%41" in base64 is 4 characters: the shortest run read.
	require.Equal(t, "[withheld: it held a credential]", describe(t, "A", "you sent "+base64.StdEncoding.EncodeToString([]byte("%41"))).Description)
}

// seenRequest is what an API server saw of one request.
type seenRequest struct{ method, contentType, body string }

// apiServer answers token requests with a token and API requests with
// status and body (content type ct), recording what the API got.
func apiServer(t *testing.T, status int, ct, body string) (*upstream.HTTPClient, *[]seenRequest) {
	t.Helper()
	var seen []seenRequest
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"access_token":"acc3ss-t0ken-for-the-api","expires_in":60}`))
			return
		}
		b, _ := io.ReadAll(r.Body)
		seen = append(seen, seenRequest{r.Method, r.Header.Get("Content-Type"), string(b)})
		w.Header().Set("Content-Type", ct)
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return newClient(t, upstream.Config{TokenURL: srv.URL + "/token", RotationURL: srv.URL + "/api", CustomerID: "cust", CACertPEM: caPEM(srv),
		ClientID: "id", ClientSecret: "s3cret", GrantType: upstream.GrantClientCredentials, AuthMethod: upstream.AuthClientSecretPost}), &seen
}

// A create carries the client credentials form the vendor's page shows;
// a list and a delete carry no body and no form content type.
func TestClientSecrets_OnlyACreateCarriesTheForm(t *testing.T) {
	c, seen := apiServer(t, 200, "application/json", `{"id":"n","secret":"v"}`)
	_, err := c.CreateClientSecret(context.Background(), "d")
	require.NoError(t, err)
	require.NoError(t, c.DeleteClientSecret(context.Background(), "old"))
	_, _ = c.ListClientSecrets(context.Background())
	require.Len(t, *seen, 3)
	create := (*seen)[0]
	require.Equal(t, "application/x-www-form-urlencoded", create.contentType)
	form, err := url.ParseQuery(create.body)
	require.NoError(t, err)
	require.Equal(t, url.Values{"grant_type": {"client_credentials"}, "client_id": {"id"}, "client_secret": {"s3cret"}}, form)
	for _, r := range (*seen)[1:] {
		require.Empty(t, r.body, r.method)
		require.Empty(t, r.contentType, r.method)
	}
}

// Any 2xx is a success (299 too); an OAuth2 error from the API is read
// from JSON whatever the content type, and from a form only when it says
// it is one (or plain text).
func TestClientSecrets_AnswersAndTheirErrors(t *testing.T) {
	c, _ := apiServer(t, 299, "application/json", `[{"id":"a"}]`)
	list, err := c.ListClientSecrets(context.Background())
	require.NoError(t, err)
	require.Len(t, list, 1)
	for ct, code := range map[string]string{
		"application/x-www-form-urlencoded": "invalid_request", "text/plain; charset=utf-8": "invalid_request", "text/html": "",
	} {
		c, _ := apiServer(t, 400, ct, "error=invalid_request&error_description=bad+customer")
		_, err := c.ListClientSecrets(context.Background())
		var ue *upstream.Error
		require.True(t, errors.As(err, &ue))
		require.Equal(t, code, ue.Code, "%s: %v", ct, err)
	}
	c, _ = apiServer(t, 300, "application/json", `[]`)
	_, err = c.ListClientSecrets(context.Background())
	require.ErrorContains(t, err, "HTTP 300")
}

// A scope among the extra parameters is sent when the request names no
// scopes, and gives way to them when it does.
func TestToken_ScopeParameterGivesWayToScopes(t *testing.T) {
	srv, last := recordingServer(t, nil)
	c := newClient(t, upstream.Config{TokenURL: srv.URL, CACertPEM: caPEM(srv), ClientID: "id", ClientSecret: "s",
		GrantType: upstream.GrantClientCredentials, AuthMethod: upstream.AuthClientSecretPost})
	_, err := c.Token(context.Background(), upstream.TokenRequest{Params: url.Values{"scope": {"from-params"}}})
	require.NoError(t, err)
	require.Equal(t, "from-params", last.Load().form.Get("scope"))
	_, err = c.Token(context.Background(), upstream.TokenRequest{Scopes: []string{"a"}, Params: url.Values{"scope": {"from-params"}}})
	require.NoError(t, err)
	require.Equal(t, []string{"a"}, last.Load().form["scope"])
}

// A token answer past the 1 MiB x/oauth2 reads is named as such.
func TestToken_AnswerPast1MiBIsNamed(t *testing.T) {
	srv, _ := recordingServer(t, func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"tok","padding":"` + strings.Repeat("x", 1<<20) + `"}`))
	})
	c := newClient(t, upstream.Config{TokenURL: srv.URL, CACertPEM: caPEM(srv), ClientID: "id", ClientSecret: "s",
		GrantType: upstream.GrantClientCredentials, AuthMethod: upstream.AuthClientSecretPost})
	_, err := c.Token(context.Background(), upstream.TokenRequest{})
	require.ErrorContains(t, err, "it is at least 1048576 bytes, all x/oauth2 reads of one")
}

// A token type the answer leaves out is Bearer; one it gives is kept.
func TestToken_TypeDefaultsToBearer(t *testing.T) {
	for answer, want := range map[string]string{
		`{"access_token":"tok","expires_in":60}`:                     "Bearer",
		`{"access_token":"tok","expires_in":60,"token_type":"DPoP"}`: "DPoP",
	} {
		srv, _ := recordingServer(t, func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(answer))
		})
		c := newClient(t, upstream.Config{TokenURL: srv.URL, CACertPEM: caPEM(srv), ClientID: "id", ClientSecret: "s",
			GrantType: upstream.GrantClientCredentials, AuthMethod: upstream.AuthClientSecretPost})
		tok, err := c.Token(context.Background(), upstream.TokenRequest{})
		require.NoError(t, err)
		require.Equal(t, want, tok.TokenType)
	}
}

// Every token request asks for JSON, as CameraManager's page requires.
func TestToken_AsksForJSON(t *testing.T) {
	var accept string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		accept = r.Header.Get("Accept")
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"tok","expires_in":60}`))
	}))
	t.Cleanup(srv.Close)
	c := newClient(t, upstream.Config{TokenURL: srv.URL, CACertPEM: caPEM(srv), ClientID: "id", ClientSecret: "s",
		GrantType: upstream.GrantClientCredentials, AuthMethod: upstream.AuthClientSecretPost})
	_, err := c.Token(context.Background(), upstream.TokenRequest{})
	require.NoError(t, err)
	require.Equal(t, "application/json", accept)
}
