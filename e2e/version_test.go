package e2e

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestNextMinor(t *testing.T) {
	for _, tc := range []struct {
		version, want string
	}{
		{"v0.1.0", "v0.2.0"},
		{"v0.1.7", "v0.2.0"},
		{"v1.9.3", "v1.10.0"},
		{"v2.0.0-rc.1", "v2.1.0"},
		{"v0.1.0+build.5", "v0.2.0"},
		{"0.1.0", ""},
		{"v0.1", ""},
		{"v0.1.0.0", ""},
		{"v0.x.0", ""},
		{"v0.-1.0", ""},
		{"v0.+1.0", ""},
		{"v01.1.0", ""},
		{"", ""},
	} {
		t.Run(tc.version, func(t *testing.T) {
			got, err := nextMinor(tc.version)
			if tc.want == "" {
				require.ErrorContains(t, err, pluginVersionEnv, "the error says how to fix it")
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestMakefileVersion(t *testing.T) {
	for _, tc := range []struct {
		name, makefile, want string
	}{
		{"aligned", "PLUGIN      := x\nVERSION     ?= v0.1.0\nBIN := bin\n", "v0.1.0"},
		{"tight", "VERSION?=v1.2.3\n", "v1.2.3"},
		{"trailing comment", "VERSION ?= v0.3.0 # bump on release\n", "v0.3.0"},
		{"only a use of it", "LDFLAGS := -X main.Version=$(VERSION)\n", ""},
		{"another variable", "VAULT_VERSION ?= 1.21.0\n", ""},
		{"indented, in a recipe", "print:\n\tVERSION ?= v9.9.9\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := makefileVersion(tc.makefile)
			if tc.want == "" {
				require.ErrorContains(t, err, pluginVersionEnv)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

// TestPluginVersion_TheMakefilesUnlessOverridden reads the real Makefile,
// so the suite fails here, not in a build, if the VERSION line moves.
func TestPluginVersion_TheMakefilesUnlessOverridden(t *testing.T) {
	t.Setenv(pluginVersionEnv, "")
	fromMakefile, err := pluginVersion()
	require.NoError(t, err)
	_, err = nextMinor(fromMakefile)
	require.NoError(t, err, "the Makefile's VERSION is one the upgrade tests can bump")

	t.Setenv(pluginVersionEnv, "v7.0.1")
	got, err := pluginVersion()
	require.NoError(t, err)
	require.Equal(t, "v7.0.1", got)
}
