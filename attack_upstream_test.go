package mapsindoors

import (
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

// Attacks of a malicious or echoing upstream: a token endpoint that repeats
// what it was sent, hoping the engine shows it to whoever reads the error
// (the creds reader, a verify poller, the server log, the audit log, which
// keeps an error in clear).

// echoingTokenEndpoint answers every token request with 400 and the
// password it got in error_description.
func echoingTokenEndpoint(t *testing.T) *httptest.Server {
	t.Helper()
	echo := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": "invalid_grant",
			"error_description": "bad password " + r.PostForm.Get("password")})
	}))
	t.Cleanup(echo.Close)
	return echo
}

// Defect 2 of issue 16, through the backend: a password with a rune that
// is not printable is accepted by the config write; an echoing token
// endpoint got it, that rune made a space, into the creds reader's 502,
// verify's "error" field and the server log. Before the fix:
// `... should not contain "Tr0ub4dor and-correct-horse"`.
func TestAttackUpstream_EchoOfAPasswordWithInvisibleRunesStaysOut(t *testing.T) {
	for name, password := range map[string]string{
		"NBSP":        "Tr0ub4dor\u00a0and-correct-horse",
		"ZWSP":        "Tr0ub4dor\u200band-correct-horse",
		"soft hyphen": "Tr0ub4dor\u00adand-correct-horse",
	} {
		t.Run(name, func(t *testing.T) {
			e := newTestEnv(t, fakeupstream.Options{})
			echo := echoingTokenEndpoint(t)
			e.writeConfig(t, map[string]any{"provider": "oauth2", "token_url": echo.URL + "/token", "grant_type": "password",
				"token_auth_method": "client_secret_post", "client_id": "cli", "username": "me", "password": password,
				"ca_cert": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: echo.Certificate().Raw}))})
			e.role(t, "app", nil)

			_, err := e.do(t, logical.ReadOperation, "creds/app", nil)
			requireCoded(t, err, http.StatusBadGateway, `"invalid_grant": bad password [redacted]`)
			v := e.read(t, "verify")
			require.Equal(t, false, v.Data["ok"])
			require.Contains(t, v.Data["error"], "bad password [redacted]")

			shown := strings.Map(func(r rune) rune {
				if !unicode.IsPrint(r) {
					return ' '
				}
				return r
			}, password)
			for place, text := range map[string]string{"the 502": err.Error(), "verify": v.Data["error"].(string), "the log": e.logs.String()} {
				for _, form := range append(secretForms(password), secretForms(shown)...) {
					require.False(t, strings.Contains(text, form.text), "%s holds the password (%s)", place, form.encoding)
				}
			}
		})
	}
}

// A token endpoint that redirects (to a host of the attacker's) gets a 502,
// and the credential goes nowhere else: no redirect is followed, for any
// provider.
func TestAttackUpstream_RedirectCarriesNoCredentialAway(t *testing.T) {
	for _, provider := range fakeupstream.Providers() {
		t.Run(provider, func(t *testing.T) {
			e := newTestEnv(t, fakeupstream.Options{})
			thief := startOtherFake(t)
			e.writeConfig(t, e.fake.PluginConfig(provider))
			e.role(t, "app", nil)
			e.fake.InjectFault(tokenEndpoint(provider), fakeupstream.Fault{Status: http.StatusTemporaryRedirect,
				Redirect: thief.URL() + "/collect", Times: -1})
			_, err := e.do(t, logical.ReadOperation, "creds/app", nil)
			requireCoded(t, err, http.StatusBadGateway, "HTTP 307")
			v := e.read(t, "verify")
			require.Equal(t, false, v.Data["ok"])
			require.Empty(t, thief.Unexpected(), "the thief's host got a request")
		})
	}
}

// A network attacker who answers in the upstream's place (a certificate of
// its own) gets no request: the TLS handshake fails on the configured CA
// before anything is sent, and the error says so without a secret.
func TestAttackNetwork_InterceptorWithAnotherCertificateGetsNothing(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	var got int
	interceptor := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { got++ }))
	t.Cleanup(interceptor.Close)
	cfg := e.fake.PluginConfig("oauth2")
	cfg["token_url"] = interceptor.URL + "/token" // the fake's CA stays the trusted one
	e.writeConfig(t, cfg)
	e.role(t, "app", nil)
	_, err := e.do(t, logical.ReadOperation, "creds/app", nil)
	requireCoded(t, err, http.StatusBadGateway, "certificate")
	v := e.read(t, "verify")
	require.Equal(t, false, v.Data["ok"])
	require.Zero(t, got, "the interceptor got a request")
}

// An upstream that asks for days of quiet (Retry-After) holds the mount's
// logins back at most 5 minutes: it cannot shut the mount for longer.
func TestAttackUpstream_RetryAfterCannotShutTheMountForLong(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	clock := &fixedClock{t: time.Now()}
	e.b.now = clock.Now
	e.configure(t, nil)
	e.role(t, "app", nil)
	e.fake.InjectFault(fakeupstream.EndpointToken, fakeupstream.Fault{Status: 429, Code: "slow_down", RetryAfter: "864000", Times: 1})
	_, err := e.do(t, logical.ReadOperation, "creds/app", nil)
	requireCoded(t, err, http.StatusBadGateway, "HTTP 429")
	clock.Add(5*time.Minute - time.Second)
	_, err = e.do(t, logical.ReadOperation, "creds/app", nil)
	requireCoded(t, err, http.StatusBadGateway, "Retry-After")
	clock.Add(2 * time.Second)
	e.read(t, "creds/app")
	require.Equal(t, true, e.read(t, "verify").Data["ok"])
}
