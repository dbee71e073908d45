package fakeupstream_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

// client trusts the fake's CA, as the plugin does through ca_cert.
func client(t *testing.T, fake *fakeupstream.Server) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM([]byte(fake.CACertPEM())))
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

func start(t *testing.T, opts fakeupstream.Options) *fakeupstream.Server {
	t.Helper()
	fake, err := fakeupstream.Start(opts)
	require.NoError(t, err)
	t.Cleanup(fake.Close)
	return fake
}

func post(t *testing.T, c *http.Client, u string, form url.Values, basicUser, basicPass string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, u, strings.NewReader(form.Encode()))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if basicUser != "" {
		req.SetBasicAuth(basicUser, basicPass)
	}
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}

func TestFaults_AfterTimesAndExpiry(t *testing.T) {
	fake := start(t, fakeupstream.Options{TokenLifetime: time.Second})
	c := client(t, fake)
	cr := fake.Credentials()
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {cr.ClientID}, "client_secret": {cr.ClientSecret}}
	fake.InjectFault(fakeupstream.EndpointToken, fakeupstream.Fault{After: 1, Times: 2, Status: 503, Code: "temporarily_unavailable"})

	issuing := time.Now()
	status, tok := post(t, c, fake.TokenURL(), form, "", "")
	issued := time.Now()
	require.Equal(t, 200, status)
	require.Equal(t, float64(1), tok["expires_in"])
	for range 2 {
		status, body := post(t, c, fake.TokenURL(), form, "", "")
		require.Equal(t, 503, status)
		require.Equal(t, "temporarily_unavailable", body["error"])
	}
	status, _ = post(t, c, fake.TokenURL(), form, "", "")
	require.Equal(t, 200, status)

	token := tok["access_token"].(string)
	expiry, known := fake.TokenExpiry(token)
	require.True(t, known)
	require.False(t, expiry.Before(issuing.Add(time.Second)) || expiry.After(issued.Add(time.Second)),
		"the token expires one lifetime after it was issued")
	require.Eventually(t, func() bool { return !fake.TokenLive(token) }, 3*time.Second, 50*time.Millisecond)
	require.False(t, time.Now().Before(expiry), "the token died at its expiry, not before")
	_, known = fake.TokenExpiry(token)
	require.True(t, known, "an expired token is still one the fake issued")
}

func keys(m map[string]any) []string {
	out := []string{}
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestPluginConfig_EachProviderGetsATokenFromThisFake logs in with nothing
// but each provider's config, the way the plugin authenticates as that
// provider, so a config that names a wrong field, URL or credential fails.
func TestPluginConfig_EachProviderGetsATokenFromThisFake(t *testing.T) {
	fake := start(t, fakeupstream.Options{})
	c := client(t, fake)
	str := func(cfg map[string]any, key string) string {
		t.Helper()
		v, ok := cfg[key].(string)
		require.True(t, ok, "%s is not a string", key)
		return v
	}
	cases := []struct {
		provider string
		tokenURL string
		fields   []string
		login    func(cfg map[string]any) int
	}{
		{
			provider: "mapsindoors",
			tokenURL: fake.TokenURL(),
			fields:   []string{"provider", "client_id", "client_secret", "client_secret_id", "customer_id", "token_url", "rotation_url", "ca_cert"},
			login: func(cfg map[string]any) int { // client_secret_post
				form := url.Values{"grant_type": {"client_credentials"}, "client_id": {str(cfg, "client_id")}, "client_secret": {str(cfg, "client_secret")}}
				status, _ := post(t, c, str(cfg, "token_url"), form, "", "")
				return status
			},
		},
		{
			provider: "oauth2",
			tokenURL: fake.TokenURL(),
			fields:   []string{"provider", "client_id", "client_secret", "token_url", "token_auth_method", "ca_cert"},
			login: func(cfg map[string]any) int { // client_secret_basic, form-encoded as RFC 6749 says
				require.Equal(t, "client_secret_basic", cfg["token_auth_method"])
				status, _ := post(t, c, str(cfg, "token_url"), url.Values{"grant_type": {"client_credentials"}},
					url.QueryEscape(str(cfg, "client_id")), url.QueryEscape(str(cfg, "client_secret")))
				return status
			},
		},
		{
			provider: "metapack",
			tokenURL: fake.MetapackTokenURL(),
			fields:   []string{"provider", "token_url", "ca_cert", "api_key_properties"},
			login: func(cfg map[string]any) int { // the properties file's key as raw Basic
				key := map[string]string{}
				for _, line := range strings.Split(strings.TrimSpace(str(cfg, "api_key_properties")), "\n") {
					name, value, ok := strings.Cut(line, " = ")
					require.True(t, ok, `a properties line without " = "`)
					key[name] = value
				}
				require.Len(t, key, 2)
				status, _ := post(t, c, str(cfg, "token_url"), url.Values{"grant_type": {"client_credentials"}}, key["apiKey.id"], key["apiKey.secret"])
				return status
			},
		},
		{
			provider: "cameramanager",
			tokenURL: fake.CameraManagerTokenURL(),
			fields:   []string{"provider", "token_url", "revocation_url", "ca_cert", "client_id", "client_secret", "username", "password"},
			login: func(cfg map[string]any) int { // the password grant, the API key as raw Basic
				form := url.Values{"grant_type": {"password"}, "scope": {"write"}, "username": {str(cfg, "username")}, "password": {str(cfg, "password")}}
				status, _ := post(t, c, str(cfg, "token_url"), form, str(cfg, "client_id"), str(cfg, "client_secret"))
				return status
			},
		},
	}
	var tested []string
	for _, tc := range cases {
		tested = append(tested, tc.provider)
		t.Run(tc.provider, func(t *testing.T) {
			cfg := fake.PluginConfig(tc.provider)
			require.ElementsMatch(t, tc.fields, keys(cfg))
			require.Equal(t, tc.provider, cfg["provider"])
			require.Equal(t, tc.tokenURL, cfg["token_url"])
			require.Equal(t, fake.CACertPEM(), cfg["ca_cert"])
			for k, v := range cfg {
				if strings.HasSuffix(k, "_url") {
					require.True(t, strings.HasPrefix(v.(string), fake.URL()+"/"), "%s points elsewhere", k)
				}
			}
			require.Equal(t, http.StatusOK, tc.login(cfg))

			cfg["provider"] = "changed"
			require.Equal(t, tc.provider, fake.PluginConfig(tc.provider)["provider"], "each call makes a new map")
		})
	}
	require.ElementsMatch(t, fakeupstream.Providers(), tested, "every provider the fake serves has a case")
	require.Empty(t, fake.Unexpected())
}

func TestPluginConfig_UnknownProviderPanicsNamingTheKnownOnes(t *testing.T) {
	fake := start(t, fakeupstream.Options{})
	defer func() {
		msg := fmt.Sprint(recover())
		require.Contains(t, msg, `"azure"`)
		for _, p := range fakeupstream.Providers() {
			require.Contains(t, msg, p)
		}
	}()
	fake.PluginConfig("azure")
	t.Fatal("PluginConfig returned for a provider the fake does not serve")
}

// TestFaults_Kinds checks each kind of answer a fault can give, against
// the token endpoint and the clientcredentials API.
func TestFaults_Kinds(t *testing.T) {
	date := time.Now().Add(time.Minute).UTC().Format(http.TimeFormat)
	longCode := strings.Repeat("c", 100<<10)
	cases := []struct {
		name  string
		fault fakeupstream.Fault
		check func(t *testing.T, resp *http.Response, body []byte)
	}{
		{"retry after in seconds", fakeupstream.Fault{Status: 429, Code: "slow_down", RetryAfter: "30"},
			func(t *testing.T, resp *http.Response, body []byte) {
				require.Equal(t, 429, resp.StatusCode)
				require.Equal(t, "30", resp.Header.Get("Retry-After"))
				require.JSONEq(t, `{"error":"slow_down","error_description":"injected fault"}`, string(body))
			}},
		{"retry after as a date", fakeupstream.Fault{Status: 503, RetryAfter: date},
			func(t *testing.T, resp *http.Response, _ []byte) {
				require.Equal(t, 503, resp.StatusCode)
				require.Equal(t, date, resp.Header.Get("Retry-After"))
			}},
		{"retry after on a normal answer", fakeupstream.Fault{RetryAfter: "5"},
			func(t *testing.T, resp *http.Response, body []byte) {
				require.Equal(t, 200, resp.StatusCode)
				require.Equal(t, "5", resp.Header.Get("Retry-After"))
				require.Contains(t, string(body), "access_token")
			}},
		{"an error code of any length and content", fakeupstream.Fault{Status: 400, Code: longCode, Description: "quote \" and \\ and \n"},
			func(t *testing.T, resp *http.Response, body []byte) {
				require.Equal(t, 400, resp.StatusCode)
				var got map[string]string
				require.NoError(t, json.Unmarshal(body, &got))
				require.Equal(t, longCode, got["error"])
				require.Equal(t, "quote \" and \\ and \n", got["error_description"])
			}},
		{"a huge body", fakeupstream.Fault{BodyBytes: 3 << 20},
			func(t *testing.T, resp *http.Response, body []byte) {
				require.Equal(t, 200, resp.StatusCode)
				require.Len(t, body, 3<<20)
				require.True(t, json.Valid(body))
			}},
		{"a huge error body", fakeupstream.Fault{Status: 500, BodyBytes: 10},
			func(t *testing.T, resp *http.Response, body []byte) {
				require.Equal(t, 500, resp.StatusCode)
				require.JSONEq(t, `{"padding":""}`, string(body), "never less than a JSON object")
			}},
		{"a redirect", fakeupstream.Fault{Redirect: "https://elsewhere.example/token"},
			func(t *testing.T, resp *http.Response, _ []byte) {
				require.Equal(t, http.StatusTemporaryRedirect, resp.StatusCode)
				require.Equal(t, "https://elsewhere.example/token", resp.Header.Get("Location"))
			}},
		{"a redirect with its own status", fakeupstream.Fault{Redirect: "/elsewhere", Status: 302},
			func(t *testing.T, resp *http.Response, _ []byte) {
				require.Equal(t, 302, resp.StatusCode)
				require.Equal(t, "/elsewhere", resp.Header.Get("Location"))
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fake := start(t, fakeupstream.Options{})
			c := client(t, fake)
			c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
			cr := fake.Credentials()
			var then atomic.Int32
			tc.fault.Then = func() { then.Add(1) }
			fake.InjectFault(fakeupstream.EndpointToken, tc.fault)

			form := url.Values{"grant_type": {"client_credentials"}, "client_id": {cr.ClientID}, "client_secret": {cr.ClientSecret}}
			req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, fake.TokenURL(), strings.NewReader(form.Encode()))
			require.NoError(t, err)
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			resp, err := c.Do(req)
			require.NoError(t, err)
			body, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			require.NoError(t, resp.Body.Close())
			tc.check(t, resp, body)
			require.Equal(t, int32(1), then.Load(), "Then runs once, when the fault applied")

			status, _ := post(t, c, fake.TokenURL(), form, "", "")
			require.Equal(t, 200, status, "the fault is used up")
			require.Equal(t, int32(1), then.Load())
			require.Empty(t, fake.Unexpected())
		})
	}
}

// A create dropped after processing made a secret the client never saw,
// which is what rotation's crash tests need.
func TestFaults_DropAfterProcessing(t *testing.T) {
	fake := start(t, fakeupstream.Options{})
	c := client(t, fake)
	cr := fake.Credentials()
	_, tok := post(t, c, fake.TokenURL(), url.Values{"grant_type": {"client_credentials"}, "client_id": {cr.ClientID}, "client_secret": {cr.ClientSecret}}, "", "")
	var secretsAtThen atomic.Int32
	fake.InjectFault(fakeupstream.EndpointCreateSecret, fakeupstream.Fault{
		DropAfterProcessing: true,
		Then:                func() { secretsAtThen.Store(int32(len(fake.Secrets()))) }, //nolint:gosec // G115: a handful of secrets
	})

	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, fake.RotationURL()+"?customerId="+cr.CustomerID+"&description=lost", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+tok["access_token"].(string))
	resp, err := c.Do(req)
	if err == nil {
		_ = resp.Body.Close()
	}
	require.Error(t, err, "the client gets no answer")
	require.Equal(t, int32(2), secretsAtThen.Load(), "Then runs after the request took effect")
	secrets := fake.Secrets()
	require.Len(t, secrets, 2, "but the secret was created")
	require.Equal(t, "lost", secrets[1].Description)
	require.Equal(t, 1, fake.Hits(fakeupstream.EndpointCreateSecret))
	require.Empty(t, fake.Unexpected())
}

// A client that gives up during a Delay still sees Then called, so a test
// waiting on it is never stuck.
func TestFaults_ThenRunsWhenTheClientGivesUp(t *testing.T) {
	fake := start(t, fakeupstream.Options{})
	c := client(t, fake)
	c.Timeout = 50 * time.Millisecond
	done := make(chan struct{})
	fake.InjectFault(fakeupstream.EndpointToken, fakeupstream.Fault{Delay: time.Minute, Then: func() { close(done) }})
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, fake.TokenURL(), strings.NewReader(""))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := c.Do(req)
	if err == nil {
		_ = resp.Body.Close()
	}
	require.Error(t, err)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Then was not called")
	}
}
