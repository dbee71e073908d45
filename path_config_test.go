package mapsindoors

import (
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

func TestConfig_WriteReadDelete(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	creds := e.fake.Credentials()
	e.configure(t, map[string]any{"scopes": "a,b", "request_timeout": "10s"})

	got := e.read(t, "config").Data
	require.Equal(t, "mapsindoors", got["provider"])
	require.Equal(t, creds.ClientID, got["client_id"])
	require.Equal(t, true, got["client_secret_set"])
	require.Equal(t, false, got["password_set"])
	require.Equal(t, creds.ClientSecretID, got["client_secret_id"])
	require.Equal(t, creds.CustomerID, got["customer_id"])
	require.Equal(t, "client_credentials", got["grant_type"])
	require.Equal(t, "client_secret_post", got["token_auth_method"])
	require.Equal(t, []string{"a", "b"}, got["scopes"])
	require.Equal(t, int64(10), got["request_timeout"])
	requireNoKey(t, got, "client_secret", "a config read shows the secret")
	requireNoKey(t, got, "password", "a config read shows the password")

	resp, err := e.do(t, logical.DeleteOperation, "config", nil)
	require.NoError(t, err)
	require.Nil(t, resp)
	resp, err = e.do(t, logical.ReadOperation, "config", nil)
	require.NoError(t, err)
	require.Nil(t, resp)
}

func TestConfig_ProviderDefaults(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	resp, err := e.write(t, "config", map[string]any{"client_id": "id", "client_secret": "s"})
	requireCleanWrite(t, resp, err)
	got := e.read(t, "config").Data
	require.Equal(t, "https://auth.mapsindoors.com/connect/token", got["token_url"])
	require.Equal(t, "https://auth.mapsindoors.com/api/clientcredentials", got["rotation_url"])
	require.Equal(t, "client_secret_post", got["token_auth_method"])
	require.Equal(t, int64(30), got["request_timeout"])

	// The password grant of MapsIndoors uses client_id "client" and scope
	// "integration" unless told otherwise.
	resp, err = e.write(t, "config", map[string]any{"grant_type": "password", "client_id": "", "username": "u", "password": "p"})
	requireCleanWrite(t, resp, err)
	got = e.read(t, "config").Data
	require.Equal(t, "client", got["client_id"])
	require.Equal(t, []string{"integration"}, got["scopes"])
	require.Equal(t, true, got["password_set"])
}

func TestConfig_BadInputIsRejectedAndStoredConfigKept(t *testing.T) {
	cases := []struct {
		name     string
		data     map[string]any
		mentions string
	}{
		{"unknown provider", map[string]any{"provider": "acme"}, "provider"},
		{"unknown grant", map[string]any{"grant_type": "implicit"}, "grant_type"},
		{"unknown auth method", map[string]any{"token_auth_method": "private_key_jwt"}, "token_auth_method"},
		{"http token url", map[string]any{"token_url": "http://auth.example.com/connect/token"}, "token_url must use https"},
		{"http loopback without opt-in", map[string]any{"token_url": "http://127.0.0.1:1/connect/token"}, "allow_loopback_http"},
		{"relative token url", map[string]any{"token_url": "/connect/token"}, "token_url is not an absolute URL"},
		{"ftp token url", map[string]any{"token_url": "ftp://auth.example.com/"}, "token_url must be an https URL"},
		{"user info in token url", map[string]any{"token_url": "https://u:pw@auth.example.com/"}, "token_url must not carry user info"},
		{"http rotation url", map[string]any{"rotation_url": "http://auth.example.com/api"}, "rotation_url must use https"},
		{"ca_cert not PEM", map[string]any{"ca_cert": "not a certificate"}, "ca_cert"},
		{"ca_cert with a key", map[string]any{"ca_cert": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}, "ca_cert"},
		{"ca_cert broken certificate", map[string]any{"ca_cert": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}, "ca_cert"},
		{"negative timeout", map[string]any{"request_timeout": "-5s"}, "request_timeout"},
		{"timeout not a duration", map[string]any{"request_timeout": "soon"}, "request_timeout"},
		{"timeout too long", map[string]any{"request_timeout": "1h"}, "request_timeout"},
		{"scope with a quote", map[string]any{"scopes": `read,wr"ite`}, "scopes"},
		{"empty client secret", map[string]any{"client_secret": ""}, "client_secret is required"},
		{"password grant without password", map[string]any{"grant_type": "password", "username": "u"}, "username and password are required"},
		{"token url removed for oauth2", map[string]any{"provider": "oauth2", "token_url": ""}, "token_url is required"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, fakeupstream.Options{})
			e.configure(t, nil)
			before := e.read(t, "config").Data
			stored, err := getConfig(t.Context(), e.storage)
			require.NoError(t, err)

			resp, err := e.write(t, "config", tc.data)
			requireBadRequest(t, resp, err, tc.mentions)

			require.Equal(t, before, e.read(t, "config").Data)
			after, err := getConfig(t.Context(), e.storage)
			require.NoError(t, err)
			requireQuietlyEqual(t, stored, after, "the stored config changed")
		})
	}
}

func TestConfig_CreateNeedsCredentials(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	resp, err := e.write(t, "config", map[string]any{"client_id": "id"})
	requireBadRequest(t, resp, err, "client_secret is required")
	resp, err = e.write(t, "config", map[string]any{"client_secret": "s"})
	requireBadRequest(t, resp, err, "client_id is required")
	stored, err := getConfig(t.Context(), e.storage)
	require.NoError(t, err)
	require.Nil(t, stored)
}

func TestConfig_LoopbackHTTPWithOptIn(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	resp, err := e.write(t, "config", map[string]any{
		"client_id": "id", "client_secret": "s",
		"token_url": "http://localhost:8200/connect/token", "allow_loopback_http": true,
	})
	requireCleanWrite(t, resp, err)
	require.Equal(t, true, e.read(t, "config").Data["allow_loopback_http"])
}

func TestConfig_PartialUpdateKeepsOtherFields(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, map[string]any{"scopes": "x"})
	before := e.read(t, "config").Data
	storedBefore, err := getConfig(t.Context(), e.storage)
	require.NoError(t, err)

	resp, err := e.write(t, "config", map[string]any{"request_timeout": 12})
	requireCleanWrite(t, resp, err)

	after := e.read(t, "config").Data
	require.Equal(t, int64(12), after["request_timeout"])
	after["request_timeout"] = before["request_timeout"]
	require.Equal(t, before, after)
	storedAfter, err := getConfig(t.Context(), e.storage)
	require.NoError(t, err)
	requireSameToken(t, storedBefore.ClientSecret, storedAfter.ClientSecret, "the stored secret is kept")
}

func TestConfig_NewSecretWithoutIDClearsStaleID(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)
	resp, err := e.write(t, "config", map[string]any{"client_secret": "another-secret"})
	require.NoError(t, err)
	require.NotNil(t, resp)
	require.Len(t, resp.Warnings, 1)
	require.Contains(t, resp.Warnings[0], "client_secret_id was cleared")
	require.Equal(t, "", e.read(t, "config").Data["client_secret_id"])
}

func TestConfig_ChangeDropsCachedTokens(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)
	e.role(t, "app", nil)
	first := e.read(t, "creds/app").Data["access_token"]
	requireSameToken(t, first.(string), e.read(t, "creds/app").Data["access_token"], "a warm role reuses its token")
	require.Equal(t, 1, e.fake.Hits(fakeupstream.EndpointToken))

	resp, err := e.write(t, "config", map[string]any{"request_timeout": "20s"})
	requireCleanWrite(t, resp, err)

	second := e.read(t, "creds/app").Data["access_token"]
	requireNewToken(t, first, second, "a config change drops the cached token")
	require.Equal(t, 2, e.fake.Hits(fakeupstream.EndpointToken))
}

func TestConfig_SealWrapped(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	require.Contains(t, e.b.PathsSpecial.SealWrapStorage, "config")
}

func TestConfig_SecretFromStdinLosesItsLineEndOnly(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	secret := e.fake.Credentials().ClientSecret
	e.configure(t, map[string]any{"client_secret": secret + "\n"})
	requireSameToken(t, secret, e.storedConfig(t).ClientSecret, "the stored secret lost its line end only")
	e.role(t, "app", nil)
	e.read(t, "creds/app")

	e.configure(t, map[string]any{"client_secret": " spaced secret \r\n", "client_secret_id": ""})
	requireSameToken(t, " spaced secret ", e.storedConfig(t).ClientSecret, "the stored secret lost its line end only")
}

// startOtherFake is a second upstream, on another port with a CA of its
// own: the host a config write could redirect the credentials to.
func startOtherFake(t testing.TB) *fakeupstream.Server {
	t.Helper()
	other, err := fakeupstream.Start(fakeupstream.Options{})
	require.NoError(t, err)
	t.Cleanup(other.Close)
	return other
}

// Anyone with update on config but no way to read the secret could point
// the mount at a host of theirs and collect the stored secret with the
// next token request. So a write that changes where the credentials go,
// or whom to trust there, must carry them again.
func TestConfig_EndpointChangeMustCarryTheCredentials(t *testing.T) {
	cases := []struct {
		name     string
		provider string
		change   func(e *testEnv, other *fakeupstream.Server) map[string]any
		// mentions is what a refusal names; empty when the write is fine.
		mentions []string
	}{
		{"token_url alone", "mapsindoors", func(_ *testEnv, o *fakeupstream.Server) map[string]any {
			return map[string]any{"token_url": o.TokenURL()}
		}, []string{"token_url", "client_secret"}},
		{"token_url with the secret", "mapsindoors", func(e *testEnv, o *fakeupstream.Server) map[string]any {
			return map[string]any{"token_url": o.TokenURL(), "client_secret": e.fake.Credentials().ClientSecret, "client_secret_id": ""}
		}, nil},
		{"token_url back to the provider's default", "mapsindoors", func(*testEnv, *fakeupstream.Server) map[string]any {
			return map[string]any{"token_url": ""}
		}, []string{"token_url", "client_secret"}},
		{"rotation_url alone", "mapsindoors", func(_ *testEnv, o *fakeupstream.Server) map[string]any {
			return map[string]any{"rotation_url": o.RotationURL()}
		}, []string{"rotation_url", "client_secret"}},
		{"ca_cert alone", "mapsindoors", func(_ *testEnv, o *fakeupstream.Server) map[string]any {
			return map[string]any{"ca_cert": o.CACertPEM()}
		}, []string{"ca_cert", "client_secret"}},
		{"allow_loopback_http alone", "mapsindoors", func(*testEnv, *fakeupstream.Server) map[string]any {
			return map[string]any{"allow_loopback_http": true}
		}, []string{"allow_loopback_http", "client_secret"}},
		{"provider alone", "mapsindoors", func(*testEnv, *fakeupstream.Server) map[string]any {
			return map[string]any{"provider": "oauth2"}
		}, []string{"provider", "client_secret"}},
		{"revocation_url alone", "cameramanager", func(_ *testEnv, o *fakeupstream.Server) map[string]any {
			return map[string]any{"revocation_url": o.CameraManagerLogoutURL()}
		}, []string{"revocation_url", "client_secret", "password"}},
		{"token_url with the password only", "cameramanager", func(e *testEnv, o *fakeupstream.Server) map[string]any {
			return map[string]any{"token_url": o.CameraManagerTokenURL(), "password": e.fake.Credentials().Password}
		}, []string{"token_url", "client_secret"}},
		{"token_url with the API key and the password", "cameramanager", func(e *testEnv, o *fakeupstream.Server) map[string]any {
			c := e.fake.Credentials()
			return map[string]any{"token_url": o.CameraManagerTokenURL(), "password": c.Password, "client_secret": c.CameraManagerKeySecret}
		}, nil},
		{"metapack token_url alone", "metapack", func(_ *testEnv, o *fakeupstream.Server) map[string]any {
			return map[string]any{"token_url": o.MetapackTokenURL()}
		}, []string{"token_url", "api_key_properties"}},
		{"metapack token_url with the API key", "metapack", func(e *testEnv, o *fakeupstream.Server) map[string]any {
			return map[string]any{"token_url": o.MetapackTokenURL(), "api_key_properties": e.fake.PluginConfig("metapack")["api_key_properties"]}
		}, nil},
		{"the same token_url again", "mapsindoors", func(e *testEnv, _ *fakeupstream.Server) map[string]any {
			return map[string]any{"token_url": e.fake.TokenURL()}
		}, nil},
		{"a field that does not move the credentials", "mapsindoors", func(*testEnv, *fakeupstream.Server) map[string]any {
			return map[string]any{"request_timeout": "10s", "scopes": "a"}
		}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, fakeupstream.Options{})
			other := startOtherFake(t)
			e.writeConfig(t, e.fake.PluginConfig(tc.provider))
			before := e.storageDump(t)

			resp, err := e.write(t, "config", tc.change(e, other))
			if tc.mentions == nil {
				require.NoError(t, err)
				require.False(t, resp != nil && resp.IsError(), "refused: %v", resp.Error())
				return
			}
			for _, m := range tc.mentions {
				requireBadRequest(t, resp, err, m)
			}
			requireQuietlyEqual(t, before, e.storageDump(t), "the stored config changed")

			// Nothing reaches the other host, whatever is read next.
			e.role(t, "app", nil)
			_, _ = e.do(t, logical.ReadOperation, "creds/app", nil)
			for _, ep := range []fakeupstream.Endpoint{fakeupstream.EndpointToken, fakeupstream.EndpointCameraManagerToken, fakeupstream.EndpointMetapackToken} {
				require.Zero(t, other.Hits(ep), "a request reached the other host")
			}
		})
	}
}

// The signing keys belong to their config: deleting it retires them, the
// response names them, and the JWKS no longer shows them.
func TestConfigDelete_RetiresTheSigningKeysAndSaysSo(t *testing.T) {
	e := newJWTEnv(t, nil)
	kid := e.storedKeys(t).Keys[0].KeyID
	resp, err := e.do(t, logical.DeleteOperation, "config", nil)
	require.NoError(t, err)
	require.NotNil(t, resp, "the delete answers with what it retired")
	require.Contains(t, strings.Join(resp.Warnings, "\n"), kid)
	require.Contains(t, strings.Join(resp.Warnings, "\n"), "retired")
	require.Zero(t, len(e.storedKeys(t).Keys))
	_, published := e.jwks(t)
	require.Empty(t, published.Keys)
}
