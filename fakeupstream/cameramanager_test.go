package fakeupstream_test

import (
	"context"
	"net/http"
	"net/url"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

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
	require.True(t, refreshed["refresh_token"] == any(rt), "the refresh token is kept") // not Equal: it would print it

	logout := func(token string) int {
		req, err := http.NewRequestWithContext(context.Background(), http.MethodDelete, fake.CameraManagerLogoutURL(), nil)
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
