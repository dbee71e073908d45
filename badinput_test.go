package mapsindoors

import (
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

// Every field of every path, written wrong: each is a 400 that names the
// field, nothing stored changes, and nothing reaches the upstream.
func TestBadInput_Is400NamingTheFieldAndChangesNothing(t *testing.T) {
	const (
		none  = "none" // no config at all
		write = logical.Operation("write")
	)
	huge := strings.Repeat("x", 100<<10)
	hugePEM := "-----BEGIN CERTIFICATE-----\n" + strings.Repeat("QUFB\n", 600<<10/5) + "-----END CERTIFICATE-----\n"
	manyScopes := strings.TrimSuffix(strings.Repeat("s,", 500), ",")
	manyParams := make([]any, 100)
	for i := range manyParams {
		manyParams[i] = "p" + strings.Repeat("x", i) + "=v"
	}
	cases := []struct {
		name     string
		provider string // the config the mount starts with; mapsindoors when empty
		op       logical.Operation
		path     string
		data     map[string]any
		mentions string
	}{
		// config: wrong types
		{name: "request_timeout a list", path: "config", data: map[string]any{"request_timeout": []any{1, 2}}, mentions: "request_timeout"},
		{name: "allow_loopback_http not a bool", path: "config", data: map[string]any{"allow_loopback_http": "maybe"}, mentions: "allow_loopback_http"},
		{name: "scopes a map", path: "config", data: map[string]any{"scopes": map[string]any{"a": 1}}, mentions: "scopes"},
		{name: "rotation_period not a duration", path: "config", data: map[string]any{"rotation_period": "soon"}, mentions: "rotation_period"},
		{name: "client_id a list", path: "config", data: map[string]any{"client_id": []any{"a", "b"}}, mentions: "client_id"},
		{name: "client_secret a list", path: "config", data: map[string]any{"client_secret": []any{"a-secret-in-a-list"}}, mentions: "client_secret"},
		{name: "client_secret a map", path: "config", data: map[string]any{"client_secret": map[string]any{"k": "a-secret-in-a-map"}}, mentions: "client_secret"},
		{name: "password a list", provider: "cameramanager", path: "config", data: map[string]any{"password": []any{"a-password-in-a-list"}}, mentions: "password"},
		{name: "api_key_properties a list", provider: "metapack", path: "config", data: map[string]any{"api_key_properties": []any{"apiKey.secret = s3cr3t-in-a-list"}}, mentions: "api_key_properties"},
		// config: empty values
		{name: "client_id empty", path: "config", data: map[string]any{"client_id": ""}, mentions: "client_id"},
		{name: "client_secret empty", path: "config", data: map[string]any{"client_secret": ""}, mentions: "client_secret"},
		{name: "token_url empty for oauth2", provider: "oauth2", path: "config", data: map[string]any{"token_url": ""}, mentions: "token_url"},
		{name: "provider empty moves the credentials", provider: "cameramanager", path: "config", data: map[string]any{"provider": ""}, mentions: "provider"},
		{name: "ca_cert empty moves the trust", path: "config", data: map[string]any{"ca_cert": ""}, mentions: "ca_cert"},
		{name: "username empty", provider: "cameramanager", path: "config", data: map[string]any{"username": ""}, mentions: "username"},
		// config: huge values
		{name: "client_id huge", path: "config", data: map[string]any{"client_id": huge}, mentions: "client_id"},
		{name: "client_secret huge", path: "config", data: map[string]any{"client_secret": huge}, mentions: "client_secret"},
		{name: "customer_id huge", path: "config", data: map[string]any{"customer_id": huge}, mentions: "customer_id"},
		{name: "token_url huge", path: "config", data: map[string]any{"token_url": "https://auth.example.com/" + huge, "client_secret": "s"}, mentions: "token_url"},
		{name: "ca_cert huge", path: "config", data: map[string]any{"ca_cert": hugePEM, "client_secret": "s"}, mentions: "ca_cert"},
		{name: "scopes too many", path: "config", data: map[string]any{"scopes": manyScopes}, mentions: "scopes"},
		{name: "provider huge", path: "config", data: map[string]any{"provider": huge}, mentions: "provider"},
		// config: control characters
		{name: "client_id with NUL", path: "config", data: map[string]any{"client_id": "client\x00id"}, mentions: "client_id"},
		{name: "client_secret with a control character", path: "config", data: map[string]any{"client_secret": "sec\x1bret"}, mentions: "client_secret"},
		{name: "username with a line end", provider: "cameramanager", path: "config", data: map[string]any{"username": "me\nroot"}, mentions: "username"},
		{name: "customer_id with CR LF", path: "config", data: map[string]any{"customer_id": "12\r\n34"}, mentions: "customer_id"},
		{name: "client_secret_id with an escape", path: "config", data: map[string]any{"client_secret_id": "\x1b[31mid"}, mentions: "client_secret_id"},
		{name: "token_url with DEL", path: "config", data: map[string]any{"token_url": "https://auth.example.com/\x7f", "client_secret": "s"}, mentions: "token_url"},
		{name: "rotation_schedule with a tab", path: "config", data: map[string]any{"rotation_schedule": "0 3 * *\t1"}, mentions: "rotation_schedule"},
		// config: URLs
		{name: "token_url with user info", path: "config", data: map[string]any{"token_url": "https://u:p@auth.example.com/token", "client_secret": "s"}, mentions: "token_url"},
		{name: "rotation_url with a user", path: "config", data: map[string]any{"rotation_url": "https://u@auth.example.com/api", "client_secret": "s"}, mentions: "rotation_url"},
		{name: "token_url with a fragment", path: "config", data: map[string]any{"token_url": "https://auth.example.com/token#x", "client_secret": "s"}, mentions: "token_url"},
		{name: "revocation_url with a fragment", provider: "cameramanager", path: "config", data: map[string]any{"revocation_url": "https://rest.example.com/logout#x"}, mentions: "revocation_url"},
		{name: "token_url IPv6 loopback over http", path: "config", data: map[string]any{"token_url": "http://[::1]:8080/token", "client_secret": "s"}, mentions: "token_url"},
		{name: "token_url IPv6 unbracketed", path: "config", data: map[string]any{"token_url": "https://::1/token", "client_secret": "s"}, mentions: "token_url"},
		{name: "token_url IPv6 unclosed", path: "config", data: map[string]any{"token_url": "https://[::1/token", "client_secret": "s"}, mentions: "token_url"},
		{name: "token_url IPv6 link-local over http", path: "config", data: map[string]any{"token_url": "http://[fe80::1]/token", "allow_loopback_http": true, "client_secret": "s"}, mentions: "token_url"},
		{name: "token_url port too big", path: "config", data: map[string]any{"token_url": "https://auth.example.com:99999/token", "client_secret": "s"}, mentions: "token_url"},
		{name: "token_url port zero", path: "config", data: map[string]any{"token_url": "https://auth.example.com:0/token", "client_secret": "s"}, mentions: "token_url"},
		{name: "rotation_url port not a number", path: "config", data: map[string]any{"rotation_url": "https://auth.example.com:https/api", "client_secret": "s"}, mentions: "rotation_url"},
		{name: "token_url IPv6 port too big", path: "config", data: map[string]any{"token_url": "https://[2001:db8::1]:70000/token", "client_secret": "s"}, mentions: "token_url"},
		{name: "token_url ftp", path: "config", data: map[string]any{"token_url": "ftp://auth.example.com/token", "client_secret": "s"}, mentions: "token_url"},
		{name: "token_url no scheme", path: "config", data: map[string]any{"token_url": "auth.example.com/token", "client_secret": "s"}, mentions: "token_url"},
		{name: "token_url http to a public host", path: "config", data: map[string]any{"token_url": "http://auth.example.com/token", "client_secret": "s"}, mentions: "token_url"},
		{name: "token_url http to a name that only starts like localhost", path: "config", data: map[string]any{"token_url": "http://localhost.example.com/token", "allow_loopback_http": true, "client_secret": "s"}, mentions: "token_url"},
		{name: "token_url http to loopback without opt-in", path: "config", data: map[string]any{"token_url": "http://127.0.0.1:8080/token", "client_secret": "s"}, mentions: "token_url"},
		// config: PEM
		{name: "ca_cert a public key", path: "config", data: map[string]any{"ca_cert": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "client_secret": "s"}, mentions: "ca_cert"},
		{name: "ca_cert not PEM", path: "config", data: map[string]any{"ca_cert": "not a certificate", "client_secret": "s"}, mentions: "ca_cert"},
		{name: "ca_cert a broken certificate", path: "config", data: map[string]any{"ca_cert": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "client_secret": "s"}, mentions: "ca_cert"},
		// config: durations out of range
		{name: "request_timeout too long", path: "config", data: map[string]any{"request_timeout": "6m"}, mentions: "request_timeout"},
		{name: "request_timeout negative", path: "config", data: map[string]any{"request_timeout": "-1s"}, mentions: "request_timeout"},
		{name: "rotation_period too short", path: "config", data: map[string]any{"rotation_period": "30s"}, mentions: "rotation_period"},
		{name: "rotation_period overflows", path: "config", data: map[string]any{"rotation_period": "100000000h"}, mentions: "rotation_period"},
		{name: "previous_secret_grace too long", path: "config", data: map[string]any{"previous_secret_grace": "1000h"}, mentions: "previous_secret_grace"},
		// config: provider input
		{name: "provider unknown", path: "config", data: map[string]any{"provider": "acme"}, mentions: "provider"},
		{name: "grant_type unknown", path: "config", data: map[string]any{"grant_type": "implicit"}, mentions: "grant_type"},
		{name: "token_auth_method unknown", path: "config", data: map[string]any{"token_auth_method": "private_key_jwt"}, mentions: "token_auth_method"},
		{name: "api_key_properties without the secret", provider: "metapack", path: "config", data: map[string]any{"api_key_properties": "apiKey.id = x\n"}, mentions: "api_key_properties"},
		{name: "api_key_properties with client_id", provider: "metapack", path: "config", data: map[string]any{"api_key_properties": "apiKey.id = x\napiKey.secret = y\n", "client_id": "x"}, mentions: "api_key_properties"},
		{name: "api_key_properties huge", provider: "metapack", path: "config", data: map[string]any{"api_key_properties": "apiKey.id = x\napiKey.secret = " + huge + "\n"}, mentions: "api_key_properties"},
		// roles
		{name: "role ttl negative", path: "roles/app", data: map[string]any{"ttl": "-1m"}, mentions: "ttl"},
		{name: "role ttl overflows", path: "roles/app", data: map[string]any{"ttl": 9223372036854775807}, mentions: "ttl"},
		{name: "role ttl not a duration", path: "roles/app", data: map[string]any{"ttl": "later"}, mentions: "ttl"},
		{name: "role scopes with a quote", path: "roles/app", data: map[string]any{"scopes": `re"ad`}, mentions: "scopes"},
		{name: "role scopes too many", path: "roles/app", data: map[string]any{"scopes": manyScopes}, mentions: "scopes"},
		{name: "role audience with a control character", path: "roles/app", data: map[string]any{"audience": "api\x00"}, mentions: "audience"},
		{name: "role audience huge", path: "roles/app", data: map[string]any{"audience": huge}, mentions: "audience"},
		{name: "role resource with a line end", path: "roles/app", data: map[string]any{"resource": "https://api.example.com\nX-Injected: 1"}, mentions: "resource"},
		{name: "role token_params not key=value", path: "roles/app", data: map[string]any{"token_params": "tenant"}, mentions: "token_params"},
		{name: "role token_params grant_type", path: "roles/app", data: map[string]any{"token_params": "grant_type=password"}, mentions: "token_params"},
		{name: "role token_params client_secret", path: "roles/app", data: map[string]any{"token_params": "client_secret=x"}, mentions: "token_params"},
		{name: "role token_params scope", path: "roles/app", data: map[string]any{"token_params": "scope=admin"}, mentions: "token_params"},
		{name: "role token_params empty key", path: "roles/app", data: map[string]any{"token_params": "=x"}, mentions: "token_params"},
		{name: "role token_params value with a control character", path: "roles/app", data: map[string]any{"token_params": "tenant=t\x001"}, mentions: "token_params"},
		{name: "role token_params too many", path: "roles/app", data: map[string]any{"token_params": manyParams}, mentions: "token_params"},
		// names that break the path patterns
		{name: "role name upper case", path: "roles/App", data: map[string]any{"ttl": "1m"}, mentions: "role name"},
		{name: "role name with a space", path: "roles/a b", data: map[string]any{"ttl": "1m"}, mentions: "role name"},
		{name: "role name with a slash", path: "roles/app/x", data: map[string]any{"ttl": "1m"}, mentions: "role name"},
		{name: "role name starting with a dot", path: "roles/.app", data: map[string]any{"ttl": "1m"}, mentions: "role name"},
		{name: "role name ending with a dash", path: "roles/app-", data: map[string]any{"ttl": "1m"}, mentions: "role name"},
		{name: "role name not ASCII", path: "roles/rôle", data: map[string]any{"ttl": "1m"}, mentions: "role name"},
		{name: "role name too long", path: "roles/" + strings.Repeat("a", 300), data: map[string]any{"ttl": "1m"}, mentions: "role name"},
		{name: "role read upper case", op: logical.ReadOperation, path: "roles/APP", mentions: "role name"},
		{name: "role delete with a space", op: logical.DeleteOperation, path: "roles/a b", mentions: "role name"},
		{name: "creds upper case", op: logical.ReadOperation, path: "creds/APP", mentions: "role name"},
		{name: "creds with a slash", op: logical.ReadOperation, path: "creds/app/x", mentions: "role name"},
		{name: "creds with a percent sign", op: logical.ReadOperation, path: "creds/app%00", mentions: "role name"},
		{name: "creds of an unknown role", op: logical.ReadOperation, path: "creds/nope", mentions: "role"},
		{name: "creds without config", provider: none, op: logical.ReadOperation, path: "creds/app", mentions: "config"},
		// rotate-root and client-secrets
		{name: "rotate-root without config", provider: none, op: logical.UpdateOperation, path: "rotate-root", mentions: "config"},
		{name: "rotate-root for metapack", provider: "metapack", op: logical.UpdateOperation, path: "rotate-root", mentions: "provider"},
		{name: "rotate-root for cameramanager", provider: "cameramanager", op: logical.UpdateOperation, path: "rotate-root", mentions: "provider"},
		{name: "rotate-root with the password grant", provider: "mapsindoors-password", op: logical.UpdateOperation, path: "rotate-root", mentions: "grant"},
		{name: "rotate-root without customer_id", provider: "mapsindoors-no-customer", op: logical.UpdateOperation, path: "rotate-root", mentions: "customer_id"},
		{name: "client-secrets without config", provider: none, op: logical.ListOperation, path: "client-secrets/", mentions: "config"},
		{name: "client-secrets for oauth2", provider: "oauth2", op: logical.ListOperation, path: "client-secrets/", mentions: "provider"},
		{name: "client-secrets without customer_id", provider: "mapsindoors-no-customer", op: logical.ReadOperation, path: "client-secrets", mentions: "customer_id"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, fakeupstream.Options{})
			switch tc.provider {
			case none:
			case "", "mapsindoors":
				e.writeConfig(t, e.fake.PluginConfig("mapsindoors"))
			case "mapsindoors-password":
				c := e.fake.Credentials()
				e.writeConfig(t, map[string]any{"token_url": e.fake.TokenURL(), "ca_cert": e.fake.CACertPEM(),
					"grant_type": "password", "username": c.Username, "password": c.Password, "customer_id": c.CustomerID})
			case "mapsindoors-no-customer":
				data := e.fake.PluginConfig("mapsindoors")
				delete(data, "customer_id")
				e.writeConfig(t, data)
			default:
				e.writeConfig(t, e.fake.PluginConfig(tc.provider))
			}
			e.role(t, "app", map[string]any{"scopes": "read", "ttl": "5m", "audience": "api", "token_params": "tenant=t1"})
			before := e.storageDump(t)
			hits := e.upstreamHits()

			var resp *logical.Response
			var err error
			if tc.op == "" || tc.op == write {
				resp, err = e.write(t, tc.path, tc.data)
			} else {
				resp, err = e.do(t, tc.op, tc.path, tc.data)
			}
			requireBadRequest(t, resp, err, tc.mentions)
			msg := resp.Error().Error()
			require.Less(t, len(msg), 1000, "a 400 echoes what it refused")
			for _, field := range []string{"client_secret", "password", "api_key_properties"} {
				for _, v := range stringsIn(tc.data[field]) {
					if len(v) > 3 {
						// Not printed: the value written is the secret.
						require.False(t, strings.Contains(msg, v), "a 400 echoes the %s it refused", field)
					}
				}
			}

			requireQuietlyEqual(t, before, e.storageDump(t), "storage changed")
			require.Equal(t, hits, e.upstreamHits(), "the upstream was called")
		})
	}
	require.GreaterOrEqual(t, len(cases), 50)
}

// upstreamHits counts every request the fake served.
func (e *testEnv) upstreamHits() int {
	n := 0
	for _, ep := range []fakeupstream.Endpoint{
		fakeupstream.EndpointToken, fakeupstream.EndpointListSecrets, fakeupstream.EndpointCreateSecret,
		fakeupstream.EndpointDeleteSecret, fakeupstream.EndpointMetapackToken,
		fakeupstream.EndpointCameraManagerToken, fakeupstream.EndpointCameraManagerLogout,
	} {
		n += e.fake.Hits(ep)
	}
	return n
}

// stringsIn is every string in a written value, however nested.
func stringsIn(v any) []string {
	switch v := v.(type) {
	case string:
		return []string{v}
	case []any:
		var out []string
		for _, x := range v {
			out = append(out, stringsIn(x)...)
		}
		return out
	case map[string]any:
		var out []string
		for k, x := range v {
			out = append(out, k)
			out = append(out, stringsIn(x)...)
		}
		return out
	}
	return nil
}
