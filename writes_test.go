package mapsindoors

import (
	"maps"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

// The framework warns about parameters a path does not know only on a
// response that is not nil; a write that answers 204 drops the warning,
// and a misspelled field is then ignored without a word.
func TestWrites_MisspelledFieldIsReportedNotDropped(t *testing.T) {
	cases := []struct {
		name string
		path string
		// createConfig writes the whole config in the request, with the
		// misspelled field, rather than on top of a stored one.
		createConfig bool
		data         map[string]any
		ignored      string
	}{
		{"config update", "config", false, map[string]any{"rotaton_period": "1h"}, "rotaton_period"},
		{"config create", "config", true, map[string]any{"client_secert": "x"}, "client_secert"},
		{"role create", "roles/new", false, map[string]any{"tll": "5m"}, "tll"},
		{"role update", "roles/app", false, map[string]any{"scopse": "read"}, "scopse"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, fakeupstream.Options{})
			data := tc.data
			if tc.createConfig {
				data = e.fake.PluginConfig("mapsindoors")
				maps.Copy(data, tc.data)
			} else {
				e.configure(t, nil)
			}
			e.role(t, "app", nil)

			resp, err := e.write(t, tc.path, data)
			require.NoError(t, err)
			require.NotNil(t, resp, "the write answered 204, so Vault drops the warning")
			require.False(t, resp.IsError())
			require.Contains(t, resp.Warnings, "Endpoint ignored these unrecognized parameters: ["+tc.ignored+"]")
		})
	}
}

// requireCleanWrite asserts a write that succeeded with no warning.
func requireCleanWrite(t testing.TB, resp *logical.Response, err error) {
	t.Helper()
	require.NoError(t, err)
	require.NotNil(t, resp)
	require.False(t, resp.IsError(), "write refused: %v", resp.Error())
	require.Empty(t, resp.Warnings)
}
