package mapsindoors

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

func TestOAuth2_RoleTokenParameters(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.writeConfig(t, e.fake.PluginConfig("oauth2"))
	e.role(t, "api", map[string]any{"audience": "https://api.example", "resource": "urn:x", "token_params": []string{"tenant=t1", "region=eu"}})
	got := e.read(t, "roles/api").Data
	require.Equal(t, map[string]string{"tenant": "t1", "region": "eu"}, got["token_params"])

	first := e.read(t, "creds/api")
	form := e.fake.LastForm(fakeupstream.EndpointToken)
	require.Equal(t, "https://api.example", form.Get("audience"))
	require.Equal(t, "urn:x", form.Get("resource"))
	require.Equal(t, "t1", form.Get("tenant"))
	require.Equal(t, "eu", form.Get("region"))
	require.True(t, form.Get("client_secret") == "", "client_secret_basic keeps the secret out of the body")

	// Another role with other parameters gets its own token.
	e.role(t, "other", map[string]any{"audience": "https://other.example"})
	other := e.read(t, "creds/other")
	requireNewToken(t, first.Data["access_token"], other.Data["access_token"], "a role with other parameters gets its own token")

	for _, key := range []string{"grant_type", "client_secret", "scope", "audience"} {
		resp, err := e.write(t, "roles/api", map[string]any{"token_params": key + "=x"})
		requireBadRequest(t, resp, err, "token_params cannot set")
	}
	require.Equal(t, got, e.read(t, "roles/api").Data, "the role is as it was")
}
