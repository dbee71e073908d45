package fakeupstream_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
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

func TestToken_GrantsAndClientAuthentication(t *testing.T) {
	fake := start(t, fakeupstream.Options{TokenLifetime: 90 * time.Second, AllowedScopes: []string{"integration", "read"}})
	c := client(t, fake)
	cr := fake.Credentials()
	cases := []struct {
		name       string
		form       url.Values
		user, pass string
		status     int
		code       string
	}{
		{"client_secret_post", url.Values{"grant_type": {"client_credentials"}, "client_id": {cr.ClientID}, "client_secret": {cr.ClientSecret}, "scope": {"read"}}, "", "", 200, ""},
		{"client_secret_basic", url.Values{"grant_type": {"client_credentials"}}, url.QueryEscape(cr.ClientID), url.QueryEscape(cr.ClientSecret), 200, ""},
		{"password grant", url.Values{"grant_type": {"password"}, "client_id": {"client"}, "username": {cr.Username}, "password": {cr.Password}, "scope": {"integration"}}, "", "", 200, ""},
		{"wrong secret in the body", url.Values{"grant_type": {"client_credentials"}, "client_id": {cr.ClientID}, "client_secret": {"nope"}}, "", "", 400, "invalid_client"},
		{"wrong secret as Basic", url.Values{"grant_type": {"client_credentials"}}, cr.ClientID, "nope", 401, "invalid_client"},
		{"two ways at once", url.Values{"grant_type": {"client_credentials"}, "client_secret": {cr.ClientSecret}}, cr.ClientID, cr.ClientSecret, 400, "invalid_request"},
		{"wrong password", url.Values{"grant_type": {"password"}, "client_id": {"client"}, "username": {cr.Username}, "password": {"nope"}}, "", "", 400, "invalid_grant"},
		{"scope not allowed", url.Values{"grant_type": {"client_credentials"}, "client_id": {cr.ClientID}, "client_secret": {cr.ClientSecret}, "scope": {"admin"}}, "", "", 400, "invalid_scope"},
		{"unknown grant", url.Values{"grant_type": {"implicit"}}, "", "", 400, "unsupported_grant_type"},
		{"no grant", url.Values{}, "", "", 400, "invalid_request"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body := post(t, c, fake.TokenURL(), tc.form, tc.user, tc.pass)
			require.Equal(t, tc.status, status)
			if tc.code != "" {
				require.Equal(t, tc.code, body["error"])
				return
			}
			require.Equal(t, float64(90), body["expires_in"])
			require.Equal(t, "Bearer", body["token_type"])
			require.Equal(t, tc.form.Get("scope"), body["scope"])
			require.True(t, fake.TokenLive(body["access_token"].(string)))
		})
	}
	require.Equal(t, len(cases), fake.Hits(fakeupstream.EndpointToken))
}

func TestClientCredentialsAPI_BearerCustomerAndLifecycle(t *testing.T) {
	fake := start(t, fakeupstream.Options{})
	c := client(t, fake)
	cr := fake.Credentials()
	_, tok := post(t, c, fake.TokenURL(), url.Values{"grant_type": {"client_credentials"}, "client_id": {cr.ClientID}, "client_secret": {cr.ClientSecret}}, "", "")
	bearer := "Bearer " + tok["access_token"].(string)

	call := func(method, query, auth string) (int, []byte) {
		req, err := http.NewRequest(method, fake.RotationURL()+"?"+query, nil)
		require.NoError(t, err)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := c.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, body
	}
	customer := "customerId=" + cr.CustomerID

	status, _ := call(http.MethodGet, customer, "")
	require.Equal(t, 401, status, "no bearer token")
	status, _ = call(http.MethodGet, customer, "Bearer made-up")
	require.Equal(t, 401, status, "unknown bearer token")
	status, _ = call(http.MethodGet, "", bearer)
	require.Equal(t, 400, status, "no customerId")
	status, _ = call(http.MethodGet, "customerId=other", bearer)
	require.Equal(t, 403, status, "another customer")

	status, body := call(http.MethodPost, customer+"&description=MyNewKey", bearer)
	require.Equal(t, 200, status)
	var created struct {
		ID, Description, Secret string
		CreatedAt               time.Time
	}
	require.NoError(t, json.Unmarshal(body, &created))
	require.Equal(t, "MyNewKey", created.Description)
	require.NotEmpty(t, created.Secret)
	require.WithinDuration(t, time.Now(), created.CreatedAt, time.Minute)

	status, body = call(http.MethodGet, customer, bearer)
	require.Equal(t, 200, status)
	require.NotContains(t, string(body), created.Secret, "the list never shows values")
	require.NotContains(t, string(body), cr.ClientSecret)
	var list []map[string]any
	require.NoError(t, json.Unmarshal(body, &list))
	require.Len(t, list, 2)
	require.ElementsMatch(t, []string{"id", "description", "client_id", "createdAt"}, keys(list[0]))

	status, _ = call(http.MethodDelete, customer+"&id="+cr.ClientSecretID, bearer)
	require.Equal(t, 200, status)
	require.False(t, fake.SecretWorks(cr.ClientSecret))
	require.True(t, fake.SecretWorks(created.Secret))
	status, _ = call(http.MethodDelete, customer+"&id="+cr.ClientSecretID, bearer)
	require.Equal(t, 404, status)

	status, _ = call(http.MethodPut, customer, bearer)
	require.Equal(t, 404, status)
	require.Equal(t, []string{"PUT /api/clientcredentials"}, fake.Unexpected())
}

func keys(m map[string]any) []string {
	out := []string{}
	for k := range m {
		out = append(out, k)
	}
	return out
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

func TestMetapack_RawBasicOnly(t *testing.T) {
	fake := start(t, fakeupstream.Options{})
	c := client(t, fake)
	cr := fake.Credentials()
	require.Contains(t, cr.MetapackKeySecret, "$")
	require.Contains(t, cr.MetapackKeySecret, "+")
	form := url.Values{"grant_type": {"client_credentials"}}

	status, body := post(t, c, fake.MetapackTokenURL(), form, cr.MetapackKeyID, cr.MetapackKeySecret)
	require.Equal(t, 200, status)
	require.Equal(t, "bearer", body["token_type"])
	require.True(t, strings.HasSuffix(body["scope"].(string), " "), "the page's scope has a trailing space")
	require.True(t, strings.HasPrefix(body["access_token"].(string), "eyJ"))
	require.True(t, fake.TokenLive(body["access_token"].(string)))

	status, _ = post(t, c, fake.MetapackTokenURL(), form, url.QueryEscape(cr.MetapackKeyID), url.QueryEscape(cr.MetapackKeySecret))
	require.Equal(t, 401, status, "form-encoded credentials are not the raw key")
	status, _ = post(t, c, fake.MetapackTokenURL(), url.Values{"grant_type": {"password"}}, cr.MetapackKeyID, cr.MetapackKeySecret)
	require.Equal(t, 400, status)
}

func TestCameraManager_QueryOrFormRefreshAndLogout(t *testing.T) {
	fake := start(t, fakeupstream.Options{})
	c := client(t, fake)
	cr := fake.Credentials()
	login := url.Values{"grant_type": {"password"}, "scope": {"write"}, "username": {cr.Username}, "password": {cr.Password}}

	// The page puts the parameters in the query string.
	status, byQuery := post(t, c, fake.CameraManagerTokenURL()+"?"+login.Encode(), url.Values{}, cr.CameraManagerKeyID, cr.CameraManagerKeySecret)
	require.Equal(t, 200, status)
	require.NotEmpty(t, byQuery["refresh_token"])
	status, byForm := post(t, c, fake.CameraManagerTokenURL(), login, cr.CameraManagerKeyID, cr.CameraManagerKeySecret)
	require.Equal(t, 200, status)

	rt := byForm["refresh_token"].(string)
	status, refreshed := post(t, c, fake.CameraManagerTokenURL(), url.Values{"grant_type": {"refresh_token"}, "scope": {"write"}, "refresh_token": {rt}},
		cr.CameraManagerKeyID, cr.CameraManagerKeySecret)
	require.Equal(t, 200, status)
	require.Equal(t, rt, refreshed["refresh_token"])

	logout := func(token string) int {
		req, err := http.NewRequest(http.MethodDelete, fake.CameraManagerLogoutURL(), nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := c.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	access := refreshed["access_token"].(string)
	require.Equal(t, 200, logout(access))
	require.False(t, fake.TokenLive(access))
	require.False(t, fake.RefreshTokenLive(rt))
	require.True(t, fake.TokenLive(byForm["access_token"].(string)), "only that access token")
	require.True(t, fake.RefreshTokenLive(byQuery["refresh_token"].(string)), "another login's refresh token lives on")
	require.Equal(t, 401, logout(access))

	status, _ = post(t, c, fake.CameraManagerTokenURL(), url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}},
		cr.CameraManagerKeyID, cr.CameraManagerKeySecret)
	require.Equal(t, 400, status)
	status, _ = post(t, c, fake.CameraManagerTokenURL(), login, cr.CameraManagerKeyID, "wrong")
	require.Equal(t, 401, status)
	require.Equal(t, 2, fake.Grants(fakeupstream.EndpointCameraManagerToken, "password"))
}
