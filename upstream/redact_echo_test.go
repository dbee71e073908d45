package upstream_test

import (
	"context"
	"math/rand"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

// Defect 2 of issue 16: the redactor made every rune that is not printable
// a space before it looked for the credentials. A password with one (NBSP,
// which macOS types for Option+Space, a zero-width space, a soft hyphen),
// echoed by the upstream, no longer matched, and came out with that rune
// turned into a space: in the 502, verify, the log and the audit log.
func TestError_EchoedPasswordWithNonPrintableRunesIsRedacted(t *testing.T) {
	for name, password := range map[string]string{
		"NBSP":        "Tr0ub4dor\u00a0and-correct-horse",
		"ZWSP":        "Tr0ub4dor\u200band-correct-horse",
		"soft hyphen": "Tr0ub4dor\u00adand-correct-horse",
		"U+2028":      "Tr0ub4dor\u2028and-correct-horse",
	} {
		t.Run(name, func(t *testing.T) {
			srv, _ := recordingServer(t, nil)
			// An echoing server: error_description repeats the form it got.
			srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_ = r.ParseForm()
				oauthError(w, http.StatusBadRequest, "invalid_grant",
					"login refused for "+r.PostForm.Get("username")+" with password "+r.PostForm.Get("password"))
			})
			c := newClient(t, upstream.Config{TokenURL: srv.URL, CACertPEM: caPEM(srv), ClientID: "client",
				GrantType: upstream.GrantPassword, AuthMethod: upstream.AuthClientSecretPost,
				Username: "me@example.com", Password: password})
			_, err := c.Token(context.Background(), upstream.TokenRequest{})
			require.ErrorContains(t, err, `HTTP 400, OAuth2 error "invalid_grant": login refused for [redacted] with password [redacted]`)
			requireNoEncoding(t, err.Error(), "client", password)
			require.False(t, strings.Contains(err.Error(), asShown(password)), "the password, a rune turned into a space, is in the error")

			// An upstream that turned the rune into a space itself.
			srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				oauthError(w, http.StatusBadRequest, "invalid_grant", "bad password "+asShown(password))
			})
			_, err = c.Token(context.Background(), upstream.TokenRequest{})
			require.ErrorContains(t, err, `"invalid_grant": bad password [redacted]`)
		})
	}
}

// asShown is s with every rune that is not printable made a space, as an
// error shows what the upstream said.
func asShown(s string) string {
	return strings.Map(func(r rune) rune {
		if !unicode.IsPrint(r) {
			return ' '
		}
		return r
	}, s)
}

// A property over secrets drawn from all of Unicode: whatever the secret
// (spaces of every kind, format characters, combining marks, astral runes,
// ASCII that every encoding escapes), an upstream that echoes it in any
// encoding the sweep knows (requireNoEncoding's list), in the description
// or as the code, never gets it, or what text shows of it, into the error.
// The seed is fixed so that a failure reproduces; the count is bounded.
func TestError_RandomUnicodeSecretsAreRedactedInEveryEncoding(t *testing.T) {
	const seed, secrets = 20261202, 60
	rng := rand.New(rand.NewSource(seed))
	var answer atomic.Pointer[func(http.ResponseWriter)]
	srv := newEchoServer(t, "t", func(w http.ResponseWriter) { (*answer.Load())(w) }, nil)
	for i := range secrets {
		secret := randomSecret(rng)
		c := newClient(t, upstream.Config{TokenURL: srv.URL + "/token", CACertPEM: caPEM(srv), ClientID: "my-id",
			ClientSecret: secret, GrantType: upstream.GrantClientCredentials, AuthMethod: upstream.AuthClientSecretPost})
		for encName, enc := range encodings("my-id", secret) {
			for _, where := range []string{"error_description", "error"} {
				a := echoAnswer(where, enc)
				answer.Store(&a)
				_, err := c.Token(context.Background(), upstream.TokenRequest{})
				require.ErrorContains(t, err, "HTTP 400", "secret %d (seed %d), %s in %s", i, seed, encName, where)
				requireNoEncoding(t, err.Error(), "my-id", secret)
				require.False(t, strings.Contains(err.Error(), asShown(secret)), "secret %d (seed %d), %s in %s: shown with spaces", i, seed, encName, where)
				require.True(t, utf8.ValidString(err.Error()))
			}
		}
		c.Close()
	}
}

// randomSecret is 8 to 24 runes, each from one of the kinds that encode or
// show differently, or from anywhere in Unicode.
func randomSecret(rng *rand.Rand) string {
	const escaped = `+$/=&%"\<>'#?:@ ~`
	kinds := []func() rune{
		func() rune { return fromTable(rng, unicode.Zs) },             // spaces: NBSP, ideographic, thin
		func() rune { return fromTable(rng, unicode.Cf) },             // format: ZWSP, soft hyphen, bidi marks
		func() rune { return fromTable(rng, unicode.Mn) },             // combining marks
		func() rune { return 0x10000 + rng.Int31n(0x10FFFF-0x10000) }, // astral
		func() rune { return rune(escaped[rng.Intn(len(escaped))]) },  // ASCII every encoding escapes
		func() rune { return '!' + rng.Int31n('~'-'!'+1) },            // printable ASCII
		func() rune { return rng.Int31n(0x110000) },                   // anywhere
	}
	var b strings.Builder
	for n := 8 + rng.Intn(17); n > 0; {
		r := kinds[rng.Intn(len(kinds))]()
		if !utf8.ValidRune(r) {
			continue // a surrogate is no rune of a Go string
		}
		b.WriteRune(r)
		n--
	}
	return b.String()
}

// fromTable is a rune drawn from a Unicode range table.
func fromTable(rng *rand.Rand, t *unicode.RangeTable) rune {
	if n := len(t.R32); n > 0 && rng.Intn(4) == 0 {
		r := t.R32[rng.Intn(n)]
		return rune(r.Lo + r.Stride*uint32(rng.Intn(int((r.Hi-r.Lo)/r.Stride)+1))) //nolint:gosec // G115: within the table's range
	}
	r := t.R16[rng.Intn(len(t.R16))]
	return rune(r.Lo + r.Stride*uint16(rng.Intn(int((r.Hi-r.Lo)/r.Stride)+1))) //nolint:gosec // G115: within the table's range
}

// The username is taken out where the upstream names it, but not from
// inside other words: a short one ("admin") left "[redacted]istrator" in
// an upstream's message.
func TestError_UsernameIsRedactedAsAWordOnly(t *testing.T) {
	srv, _ := recordingServer(t, nil)
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		oauthError(w, http.StatusBadRequest, "invalid_grant",
			"the administrator locked "+r.PostForm.Get("username")+"; ask admin-desk or "+r.PostForm.Get("username")+"@example.com")
	})
	c := newClient(t, upstream.Config{TokenURL: srv.URL, CACertPEM: caPEM(srv), ClientID: "client",
		GrantType: upstream.GrantPassword, AuthMethod: upstream.AuthClientSecretPost,
		Username: "admin", Password: "a-long-enough-password"})
	_, err := c.Token(context.Background(), upstream.TokenRequest{})
	require.ErrorContains(t, err, `"invalid_grant": the administrator locked [redacted]; ask [redacted]-desk or [redacted]@example.com`)
}
