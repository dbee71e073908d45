package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

func TestWriteFiles_ConfigPerProviderReadableOnlyByTheOwner(t *testing.T) {
	srv, err := fakeupstream.Start(fakeupstream.Options{})
	require.NoError(t, err)
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	require.NoError(t, writeFiles(srv, dir))

	type file struct {
		name string
		mode os.FileMode
		// check looks at the content.
		check func(t *testing.T, data []byte)
	}
	files := []file{
		{"ca.pem", 0o644, func(t *testing.T, data []byte) { require.Equal(t, srv.CACertPEM(), string(data)) }},
		{"fake.env", 0o600, func(t *testing.T, data []byte) {
			require.Contains(t, string(data), "FAKE_TOKEN_URL=\""+srv.TokenURL()+"\"\n")
			require.NotContains(t, string(data), "INTROSPECT")
		}},
	}
	for _, provider := range fakeupstream.Providers() {
		files = append(files, file{configFile(provider), 0o600, func(t *testing.T, data []byte) {
			var got map[string]any
			require.NoError(t, json.Unmarshal(data, &got), "vault write takes @file as JSON")
			require.Equal(t, srv.PluginConfig(provider), got)
		}})
	}

	var want []string
	for _, f := range files {
		want = append(want, f.name)
		t.Run(f.name, func(t *testing.T) {
			path := filepath.Join(dir, f.name)
			info, err := os.Stat(path)
			require.NoError(t, err)
			require.Equal(t, f.mode, info.Mode().Perm())
			data, err := os.ReadFile(path)
			require.NoError(t, err)
			f.check(t, data)
		})
	}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	require.ElementsMatch(t, want, got, "nothing else, no file left aside")
	require.FileExists(t, filepath.Join(dir, "config-mapsindoors.json"), "scripts/demo.sh configures its mount with this one")
}
