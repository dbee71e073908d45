package fakeupstream_test

import (
	"context"
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
		req, err := http.NewRequestWithContext(context.Background(), method, fake.RotationURL()+"?"+query, nil)
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
	require.False(t, strings.Contains(string(body), created.Secret), "the list never shows values")
	require.False(t, strings.Contains(string(body), cr.ClientSecret), "the list never shows values")
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
