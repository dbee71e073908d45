package mapsindoors

import (
	"net/http"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

func TestMetapack_APIKeyPropertiesAndRawBasicAuth(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.writeConfig(t, e.fake.PluginConfig("metapack"))
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
	require.True(t, e.fake.LastForm(fakeupstream.EndpointMetapackToken).Get("client_secret") == "", "the key is not in the body")

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
			data := e.fake.PluginConfig("metapack")
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
	e.writeConfig(t, e.fake.PluginConfig("metapack"))
	resp, err := e.rotate(t)
	requireBadRequest(t, resp, err, "provider metapack has no client-secret API")
}

func TestParseProperties(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want map[string]string
		err  string
	}{
		{"Metapack's file", "apiKey.id = 1DR3434KDFJLR32L53L4235J6\napiKey.secret = wqe34tyyh7679jokkDa$7df46bbbbjui+b7-sdfsdfY\n",
			map[string]string{"apiKey.id": "1DR3434KDFJLR32L53L4235J6", "apiKey.secret": "wqe34tyyh7679jokkDa$7df46bbbbjui+b7-sdfsdfY"}, ""},
		{"comments, colons, CRLF-free blanks", "# a comment\n! another\n\napiKey.id: abc\n  apiKey.secret=s=t\n",
			map[string]string{"apiKey.id": "abc", "apiKey.secret": "s=t"}, ""},
		{"white space separator", "apiKey.id abc\n", map[string]string{"apiKey.id": "abc"}, ""},
		{"escapes and continuation", "key\\ one = a\\:b\\\\\\\n    c\\u0041\n", map[string]string{"key one": `a:b\cA`}, ""},
		{"trailing escaped backslash", "k = v\\\\\n", map[string]string{"k": `v\`}, ""},
		{"broken unicode escape", "k = \\u12\n", nil, "line 1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseProperties(tc.in)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}
