package mapsindoors

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

// fieldSep separates the values of the config fields in a fuzz input, in
// the order of configFields, so a field added to the table is fuzzed too.
const fieldSep = "\x1f"

// fuzzConfig builds a config as a write of these values would, each set
// through its field's own setter.
func fuzzConfig(values []string) *config {
	c := &config{}
	for i, f := range configFields {
		v := ""
		if i < len(values) {
			v = values[i]
		}
		switch f.fieldType {
		case framework.TypeBool:
			f.set(c, v == "true" || v == "1")
		case framework.TypeDurationSecond:
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			f.set(c, n)
		case framework.TypeCommaStringSlice:
			f.set(c, strings.Split(v, ","))
		default:
			f.set(c, v)
		}
	}
	return c
}

// configSeed is a fuzz input from field values by name.
func configSeed(values map[string]string) string {
	parts := make([]string, len(configFields))
	for i, f := range configFields {
		parts[i] = values[f.name]
	}
	return strings.Join(parts, fieldSep)
}

// FuzzConfigValidation: whatever an operator writes to the config's
// fields, resolving and validating it never panics, a config that
// validates makes an upstream client, and no error repeats a write-only
// field (client_secret, password).
func FuzzConfigValidation(f *testing.F) {
	const secret, password = `pl+s$d/ll=r&pct%"q\bs`, "pa55 w0rd ünï"
	pem := fakeCAPEM(f)
	for _, seed := range []map[string]string{
		{"client_id": "id", "client_secret": secret},
		{"provider": "mapsindoors", "client_id": "id", "client_secret": secret, "customer_id": "c", "ca_cert": pem, "request_timeout": "10"},
		{"provider": "oauth2", "client_id": "id", "client_secret": secret, "token_url": "https://auth.example/token", "token_auth_method": "client_secret_basic"},
		{"provider": "metapack", "client_id": "MP1", "client_secret": secret, "token_url": "https://dmo.metapack.com/oauth"},
		{"provider": "cameramanager", "client_id": "cm", "client_secret": secret, "username": "me", "password": password},
		{"grant_type": "password", "username": "me", "password": password, "scopes": "integration, ,a"},
		{"client_id": "id", "client_secret": secret, "token_url": "http://127.0.0.1:8200/token", "allow_loopback_http": "true"},
		{"client_id": "id", "client_secret": secret, "token_url": "https://user:" + secret + "@auth.example/t#" + secret},
		{"client_id": "id", "client_secret": secret, "ca_cert": "-----BEGIN CERTIFICATE-----\n" + secret + "\n-----END CERTIFICATE-----\n"},
		{"client_id": "id", "client_secret": secret, "scopes": secret + ",\"bad\""},
		{"client_id": "id", "client_secret": secret, "rotation_schedule": secret, "rotation_period": "60"},
		{"client_id": "id", "client_secret": secret, "rotation_schedule": "0 3 * * 1", "rotation_window": "3600"},
		{"client_id": "id", "client_secret": secret, "default_token_lifetime": "5", "previous_secret_grace": "-1"},
		{"provider": secret, "client_secret": secret, "grant_type": secret, "token_auth_method": secret},
		{"client_id": "id", "client_secret": secret, "grant_type": "implicit"},
		{"client_id": "id", "client_secret": secret, "token_auth_method": "none"},
		{"provider": "cameramanager", "password": password, "token_url": "ftp://x"},
		{"client_id": "id", "client_secret": "\r\n", "password": "\n"},
	} {
		f.Add(configSeed(seed))
	}
	f.Fuzz(func(t *testing.T, input string) {
		values := strings.Split(input, fieldSep)
		c := fuzzConfig(values)
		err := c.resolved().validate()
		if err == nil {
			if _, newErr := upstream.New(c.resolved().clientConfig()); newErr != nil {
				t.Fatalf("a config that validates makes no client: %v", newErr)
			}
			return
		}
		// A write-only value that shows in the error only because of that
		// field (the error of the same config with another value in its
		// place does not show it) was repeated.
		for i, field := range configFields {
			v := textOf(c, field)
			if !field.writeOnly || i >= len(values) || len(v) < 4 || !strings.Contains(err.Error(), v) {
				continue
			}
			other := append([]string(nil), values...)
			other[i] = "\x00other-value\x00"
			if otherErr := fuzzConfig(other).resolved().validate(); otherErr == nil || !strings.Contains(otherErr.Error(), v) {
				t.Fatalf("the error repeats the value of %s", field.name)
			}
		}
	})
}

// textOf is the stored text of a text field, "" for other fields.
func textOf(c *config, f configField) string {
	if f.text == nil {
		return ""
	}
	return *f.text(c)
}

// fakeCAPEM is a real CA certificate, for seeds with a ca_cert.
func fakeCAPEM(tb testing.TB) string {
	fake, err := fakeupstream.Start(fakeupstream.Options{})
	require.NoError(tb, err)
	defer fake.Close()
	return fake.CACertPEM()
}

// Defect 6: a server that omits expires_in (RFC 6749 §5.1 allows it)
// could not be used at all; default_token_lifetime says how long its
// tokens live.
func TestConfig_DefaultTokenLifetime(t *testing.T) {
	t.Run("bounds", func(t *testing.T) {
		cases := []struct {
			value   any
			wantErr bool
			want    int64
		}{
			{"0", false, 0},
			{"10s", false, 10},
			{"1h", false, 3600},
			{"24h", false, 86400},
			{"9s", true, 0},
			{"25h", true, 0},
			{"-1s", true, 0},
			{"soon", true, 0},
		}
		for _, tc := range cases {
			t.Run(tc.value.(string), func(t *testing.T) {
				e := newTestEnv(t, fakeupstream.Options{})
				e.configure(t, nil)
				resp, err := e.write(t, "config", map[string]any{"default_token_lifetime": tc.value})
				if tc.wantErr {
					requireBadRequest(t, resp, err, "default_token_lifetime")
					return
				}
				require.NoError(t, err)
				require.False(t, resp != nil && resp.IsError(), "config write: %v", resp)
				require.Equal(t, tc.want, e.read(t, "config").Data["default_token_lifetime"])
			})
		}
	})

	t.Run("a server that omits expires_in", func(t *testing.T) {
		e := newTestEnv(t, fakeupstream.Options{})
		e.configure(t, map[string]any{"default_token_lifetime": "1h"})
		e.role(t, "app", nil)
		noExpiresIn := fakeupstream.Fault{Body: `{"access_token":"abc","token_type":"Bearer"}`}

		e.fake.InjectFault(fakeupstream.EndpointToken, noExpiresIn)
		resp := e.read(t, "creds/app")
		require.Equal(t, "abc", resp.Data["access_token"])
		require.InDelta(t, time.Hour.Seconds(), float64(resp.Data["expires_in"].(int64)), 1)
		require.LessOrEqual(t, resp.Secret.TTL, time.Hour-time.Minute, "the lease keeps its margin")

		// Without it, the answer is refused with what to set.
		e.writeConfig(t, map[string]any{"default_token_lifetime": 0})
		e.fake.InjectFault(fakeupstream.EndpointToken, noExpiresIn)
		_, err := e.do(t, logical.ReadOperation, "creds/app", nil)
		requireCoded(t, err, http.StatusBadGateway, "default_token_lifetime")
	})
}
