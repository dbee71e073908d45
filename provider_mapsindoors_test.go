package mapsindoors

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

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
