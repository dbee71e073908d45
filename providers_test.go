package mapsindoors

import (
	"context"
	"net/http"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

func (e *testEnv) metapackConfig() map[string]any {
	c := e.fake.Credentials()
	return map[string]any{
		"provider":           "metapack",
		"token_url":          e.fake.MetapackTokenURL(),
		"ca_cert":            e.fake.CACertPEM(),
		"api_key_properties": "apiKey.id = " + c.MetapackKeyID + "\napiKey.secret = " + c.MetapackKeySecret + "\n",
	}
}

func (e *testEnv) cameraManagerConfig() map[string]any {
	c := e.fake.Credentials()
	return map[string]any{
		"provider":       "cameramanager",
		"token_url":      e.fake.CameraManagerTokenURL(),
		"revocation_url": e.fake.CameraManagerLogoutURL(),
		"ca_cert":        e.fake.CACertPEM(),
		"client_id":      c.CameraManagerKeyID,
		"client_secret":  c.CameraManagerKeySecret,
		"username":       c.Username,
		"password":       c.Password,
	}
}

func (e *testEnv) writeConfig(t *testing.T, data map[string]any) {
	t.Helper()
	resp, err := e.write(t, "config", data)
	require.NoError(t, err)
	require.False(t, resp != nil && resp.IsError(), "config write: %v", resp)
}

func TestMetapack_APIKeyPropertiesAndRawBasicAuth(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.writeConfig(t, e.metapackConfig())
	cfg := e.read(t, "config").Data
	require.Equal(t, "metapack", cfg["provider"])
	require.Equal(t, e.fake.Credentials().MetapackKeyID, cfg["client_id"])
	require.Equal(t, true, cfg["client_secret_set"])
	require.Equal(t, "client_secret_basic_raw", cfg["token_auth_method"])
	require.Equal(t, "client_credentials", cfg["grant_type"])

	e.role(t, "app", nil)
	resp := e.read(t, "creds/app")
	require.True(t, e.fake.TokenLive(resp.Data["access_token"].(string)))
	require.Equal(t, "can-create-locations can-delete-own-locations", resp.Data["scope"], "the trailing space is gone")
	require.Equal(t, "bearer", resp.Data["token_type"])
	require.Equal(t, "client_credentials", e.fake.LastForm(fakeupstream.EndpointMetapackToken).Get("grant_type"))
	require.Empty(t, e.fake.LastForm(fakeupstream.EndpointMetapackToken).Get("client_secret"), "the key is not in the body")

	// The secret has $ and +: RFC 6749's form-encoding of the Basic
	// credentials changes it, and Metapack refuses.
	e.writeConfig(t, map[string]any{"token_auth_method": "client_secret_basic"})
	_, err := e.do(t, logical.ReadOperation, "creds/app", nil)
	requireCoded(t, err, http.StatusBadGateway, `HTTP 401, OAuth2 error "invalid_client"`)
}

func TestMetapack_BadInputIs400(t *testing.T) {
	cases := []struct {
		name     string
		change   map[string]any
		mentions string
	}{
		{"no token url", map[string]any{"token_url": nil}, "token_url is required for provider metapack"},
		{"properties without the secret", map[string]any{"api_key_properties": "apiKey.id = x\n"}, "apiKey.id and apiKey.secret"},
		{"properties and client_id", map[string]any{"client_id": "x"}, "either api_key_properties or client_id"},
		{"properties that do not parse", map[string]any{"api_key_properties": "apiKey.id = \\u12"}, "api_key_properties does not parse"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, fakeupstream.Options{})
			data := e.metapackConfig()
			for k, v := range tc.change {
				if v == nil {
					delete(data, k)
					continue
				}
				data[k] = v
			}
			resp, err := e.write(t, "config", data)
			requireBadRequest(t, resp, err, tc.mentions)
		})
	}

	e := newTestEnv(t, fakeupstream.Options{})
	e.writeConfig(t, e.metapackConfig())
	resp, err := e.rotate(t)
	requireBadRequest(t, resp, err, "provider metapack has no client-secret API")
}

func TestCameraManager_TokenPerLeaseRefreshAndPasswordFallback(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.writeConfig(t, e.cameraManagerConfig())
	cfg := e.read(t, "config").Data
	require.Equal(t, "password", cfg["grant_type"])
	require.Equal(t, []string{"write"}, cfg["scopes"])
	require.Equal(t, e.fake.CameraManagerLogoutURL(), cfg["revocation_url"])
	e.role(t, "cam", nil)

	first := e.read(t, "creds/cam")
	second := e.read(t, "creds/cam")
	a, b := first.Data["access_token"].(string), second.Data["access_token"].(string)
	require.NotEqual(t, a, b, "every lease has a token of its own")
	require.True(t, e.fake.TokenLive(a))
	require.True(t, e.fake.TokenLive(b))
	require.Equal(t, "write", first.Data["scope"])
	require.Equal(t, 1, e.fake.Grants(fakeupstream.EndpointCameraManagerToken, "password"))
	require.Equal(t, 1, e.fake.Grants(fakeupstream.EndpointCameraManagerToken, "refresh_token"), "the second read used the refresh token")
	require.Equal(t, "write", e.fake.LastForm(fakeupstream.EndpointCameraManagerToken).Get("scope"))

	// The server forgets its refresh tokens: the next read logs in again.
	e.fake.ForgetRefreshTokens()
	third := e.read(t, "creds/cam")
	require.True(t, e.fake.TokenLive(third.Data["access_token"].(string)))
	require.Equal(t, 2, e.fake.Grants(fakeupstream.EndpointCameraManagerToken, "password"))
	e.read(t, "creds/cam")
	require.Equal(t, 3, e.fake.Grants(fakeupstream.EndpointCameraManagerToken, "refresh_token"), "and then refreshes with the new one")
}

func (e *testEnv) revoke(t *testing.T, secret *logical.Secret) (*logical.Response, error) {
	t.Helper()
	return e.b.HandleRequest(context.Background(), &logical.Request{
		Operation: logical.RevokeOperation, Storage: e.storage, Secret: secret, MountPoint: "mapsindoors/",
	})
}

func TestCameraManager_RevokeLogsTheTokenOut(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.writeConfig(t, e.cameraManagerConfig())
	e.role(t, "cam", nil)
	first := e.read(t, "creds/cam")
	second := e.read(t, "creds/cam")
	a, b := first.Data["access_token"].(string), second.Data["access_token"].(string)

	// A logout that fails is an error, so Vault retries the revocation.
	e.fake.InjectFault(fakeupstream.EndpointCameraManagerLogout, fakeupstream.Fault{Status: 503})
	_, err := e.revoke(t, first.Secret)
	require.ErrorContains(t, err, "log the token out")
	require.True(t, e.fake.TokenLive(a))

	_, err = e.revoke(t, first.Secret)
	require.NoError(t, err)
	require.False(t, e.fake.TokenLive(a), "the lease's token is logged out")
	require.True(t, e.fake.TokenLive(b), "another lease's token is not")
	require.Equal(t, 2, e.fake.Hits(fakeupstream.EndpointCameraManagerLogout))

	// The logout also ended the refresh token: the next read logs in.
	e.read(t, "creds/cam")
	require.Equal(t, 2, e.fake.Grants(fakeupstream.EndpointCameraManagerToken, "password"))

	// A token that is already gone counts as logged out.
	_, err = e.revoke(t, first.Secret)
	require.NoError(t, err)
}

func TestCameraManager_FailuresAndBadInput(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.writeConfig(t, e.cameraManagerConfig())
	e.role(t, "cam", nil)

	e.writeConfig(t, map[string]any{"password": "wrong"})
	_, err := e.do(t, logical.ReadOperation, "creds/cam", nil)
	requireCoded(t, err, http.StatusBadGateway, `HTTP 400, OAuth2 error "invalid_grant"`)

	e.writeConfig(t, map[string]any{"password": e.fake.Credentials().Password, "client_secret": "wrong-key"})
	_, err = e.do(t, logical.ReadOperation, "creds/cam", nil)
	requireCoded(t, err, http.StatusBadGateway, `HTTP 401, OAuth2 error "invalid_client"`)

	for _, tc := range []struct {
		data     map[string]any
		mentions string
	}{
		{map[string]any{"username": ""}, "username and password are required"},
		{map[string]any{"revocation_url": "http://rest.example.com/logout"}, "revocation_url must use https"},
		{map[string]any{"client_secret": ""}, "client_secret is required with token_auth_method client_secret_basic_raw"},
	} {
		resp, err := e.write(t, "config", tc.data)
		requireBadRequest(t, resp, err, tc.mentions)
	}
	resp, err := e.rotate(t)
	requireBadRequest(t, resp, err, "provider cameramanager has no client-secret API")
}

func TestOAuth2_RoleTokenParameters(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, map[string]any{"provider": "oauth2", "token_auth_method": "client_secret_basic"})
	e.role(t, "api", map[string]any{"audience": "https://api.example", "resource": "urn:x", "token_params": []string{"tenant=t1", "region=eu"}})
	got := e.read(t, "roles/api").Data
	require.Equal(t, map[string]string{"tenant": "t1", "region": "eu"}, got["token_params"])

	first := e.read(t, "creds/api")
	form := e.fake.LastForm(fakeupstream.EndpointToken)
	require.Equal(t, "https://api.example", form.Get("audience"))
	require.Equal(t, "urn:x", form.Get("resource"))
	require.Equal(t, "t1", form.Get("tenant"))
	require.Equal(t, "eu", form.Get("region"))
	require.Empty(t, form.Get("client_secret"), "client_secret_basic keeps the secret out of the body")

	// Another role with other parameters gets its own token.
	e.role(t, "other", map[string]any{"audience": "https://other.example"})
	other := e.read(t, "creds/other")
	require.NotEqual(t, first.Data["access_token"], other.Data["access_token"])

	for _, key := range []string{"grant_type", "client_secret", "scope", "audience"} {
		resp, err := e.write(t, "roles/api", map[string]any{"token_params": key + "=x"})
		requireBadRequest(t, resp, err, "token_params cannot set")
	}
	require.Equal(t, got, e.read(t, "roles/api").Data, "the role is as it was")
}

func TestMapsIndoors_PasswordGrant(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	c := e.fake.Credentials()
	e.configure(t, map[string]any{"grant_type": "password", "client_id": "", "client_secret": "", "client_secret_id": "",
		"username": c.Username, "password": c.Password})
	e.role(t, "app", nil)
	resp := e.read(t, "creds/app")
	require.True(t, e.fake.TokenLive(resp.Data["access_token"].(string)))
	require.Equal(t, "integration", resp.Data["scope"])
	form := e.fake.LastForm(fakeupstream.EndpointToken)
	require.Equal(t, "password", form.Get("grant_type"))
	require.Equal(t, "client", form.Get("client_id"))
}
