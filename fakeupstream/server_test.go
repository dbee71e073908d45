package fakeupstream_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
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
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
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
