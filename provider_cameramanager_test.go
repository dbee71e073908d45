package mapsindoors

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

func TestCameraManager_TokenPerLeaseRefreshAndPasswordFallback(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.writeConfig(t, e.fake.PluginConfig("cameramanager"))
	cfg := e.read(t, "config").Data
	require.Equal(t, "password", cfg["grant_type"])
	require.Equal(t, []string{"write"}, cfg["scopes"])
	require.Equal(t, e.fake.CameraManagerLogoutURL(), cfg["revocation_url"])
	e.role(t, "cam", nil)

	first := e.read(t, "creds/cam")
	second := e.read(t, "creds/cam")
	a, b := first.Data["access_token"].(string), second.Data["access_token"].(string)
	requireNewToken(t, a, b, "every lease has a token of its own")
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
	e.writeConfig(t, e.fake.PluginConfig("cameramanager"))
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
	e.writeConfig(t, e.fake.PluginConfig("cameramanager"))
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

// A refresh the upstream answers with 429 is not a refused refresh token:
// logging in with the password then would only add load, and a login per
// read is what locks accounts. A refused password is not tried again on
// every read either: it backs off for a growing time, and reads say when
// the next login is due, without calling the upstream.
func TestCameraManager_RefusedLoginsBackOff(t *testing.T) {
	t.Run("429 on refresh does not fall back to the password", func(t *testing.T) {
		e := newTestEnv(t, fakeupstream.Options{})
		e.writeConfig(t, e.fake.PluginConfig("cameramanager"))
		e.role(t, "cam", nil)
		e.read(t, "creds/cam")
		require.Equal(t, 1, e.fake.Grants(fakeupstream.EndpointCameraManagerToken, "password"))

		e.fake.InjectFault(fakeupstream.EndpointCameraManagerToken, fakeupstream.Fault{Status: 429, Code: "slow_down", Times: -1})
		_, err := e.do(t, logical.ReadOperation, "creds/cam", nil)
		requireCoded(t, err, http.StatusBadGateway, "HTTP 429")
		require.Equal(t, 1, e.fake.Grants(fakeupstream.EndpointCameraManagerToken, "password"), "a 429 made a password login")
	})

	t.Run("a refused password backs off", func(t *testing.T) {
		e := newTestEnv(t, fakeupstream.Options{})
		clock := &fixedClock{t: time.Now()}
		e.b.now = clock.Now
		e.writeConfig(t, e.fake.PluginConfig("cameramanager"))
		e.writeConfig(t, map[string]any{"password": "wrong"})
		e.role(t, "cam", nil)

		_, err := e.do(t, logical.ReadOperation, "creds/cam", nil)
		requireCoded(t, err, http.StatusBadGateway, `HTTP 400, OAuth2 error "invalid_grant"`)
		require.Equal(t, 1, e.fake.Hits(fakeupstream.EndpointCameraManagerToken))

		// Reads during the back-off say when the next login is due and do
		// not reach the upstream.
		for range 5 {
			_, err = e.do(t, logical.ReadOperation, "creds/cam", nil)
			requireCoded(t, err, http.StatusBadGateway, "refused the password login")
			requireCoded(t, err, http.StatusBadGateway, "write the right password to config")
		}
		require.Equal(t, 1, e.fake.Hits(fakeupstream.EndpointCameraManagerToken), "a login per read risks locking the account")

		// When it is over, one login is tried; refused again, the next
		// back-off is longer.
		clock.Add(passwordBackoffMin + time.Second)
		_, err = e.do(t, logical.ReadOperation, "creds/cam", nil)
		requireCoded(t, err, http.StatusBadGateway, `"invalid_grant"`)
		require.Equal(t, 2, e.fake.Hits(fakeupstream.EndpointCameraManagerToken))
		clock.Add(passwordBackoffMin + time.Second)
		_, err = e.do(t, logical.ReadOperation, "creds/cam", nil)
		requireCoded(t, err, http.StatusBadGateway, "refused the password login")
		require.Equal(t, 2, e.fake.Hits(fakeupstream.EndpointCameraManagerToken), "the second back-off is longer than the first")

		// The right password, written, is tried at once.
		e.writeConfig(t, map[string]any{"password": e.fake.Credentials().Password})
		e.read(t, "creds/cam")
		require.Equal(t, 3, e.fake.Hits(fakeupstream.EndpointCameraManagerToken))
	})
}
