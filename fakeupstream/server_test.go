package fakeupstream_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
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
