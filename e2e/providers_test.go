package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

// TestProviders_OneEngineMountedPerUpstream mounts the engine once per
// token API in the seeds and reads creds from each through the vault CLI.
func TestProviders_OneEngineMountedPerUpstream(t *testing.T) {
	requireVault(t)
	t.Parallel()
	fake := startFake(t, fakeupstream.Options{})
	v := startDevVault(t)
	auditLog := filepath.Join(t.TempDir(), "audit.log")
	v.mustCLI("audit", "enable", "file", "file_path="+auditLog)
	v.registerPlugin(pluginV1)
	for _, mount := range []string{"metapack", "cameramanager", "oauth2"} {
		v.enable(mount, pluginV1)
	}

	// Metapack: the operator pastes the apiKey.properties file.
	v.writeFile("metapack/config", fake.PluginConfig("metapack"))
	v.mustCLI("write", "metapack/roles/shipping", "ttl=10m")
	readCreds(t, v, fake, "metapack", "shipping")
	_, err := v.cli("write", "-f", "metapack/rotate-root")
	require.ErrorContains(t, err, "Code: 400")

	// Any RFC 6749 endpoint, with a role that sends an audience.
	v.writeFile("oauth2/config", fake.PluginConfig("oauth2"))
	v.mustCLI("write", "oauth2/roles/api", "audience=https://api.example", "token_params=tenant=t1")
	readCreds(t, v, fake, "oauth2", "api")
	form := fake.LastForm(fakeupstream.EndpointToken)
	require.Equal(t, "https://api.example", form.Get("audience"))
	require.Equal(t, "t1", form.Get("tenant"))

	// CameraManager: a token per lease, logged out when the lease is
	// revoked or runs out.
	v.writeFile("cameramanager/config", fake.PluginConfig("cameramanager"))
	v.mustCLI("write", "cameramanager/roles/cam", "ttl=1h")
	first, firstLease := readCreds(t, v, fake, "cameramanager", "cam")
	second, _ := readCreds(t, v, fake, "cameramanager", "cam")
	require.True(t, first != second, "a token per lease") // not NotEqual: it would print them
	require.Equal(t, 1, fake.Grants(fakeupstream.EndpointCameraManagerToken, "refresh_token"))

	v.mustCLI("lease", "revoke", firstLease)
	eventually(t, 30*time.Second, "vault lease revoke to log the token out", func() bool { return !fake.TokenLive(first) })
	require.True(t, fake.TokenLive(second))

	v.mustCLI("write", "cameramanager/roles/short", "ttl=3s")
	short, _ := readCreds(t, v, fake, "cameramanager", "short")
	eventually(t, 45*time.Second, "the expired lease's token to be logged out", func() bool { return !fake.TokenLive(short) })
	require.GreaterOrEqual(t, fake.Hits(fakeupstream.EndpointCameraManagerLogout), 2)

	// The tokens kept with CameraManager leases for the logout, the API
	// keys and the password are nowhere in the audit log in clear.
	audit, err := os.ReadFile(auditLog)
	require.NoError(t, err)
	for _, s := range fake.Sensitive() {
		if strings.Contains(string(audit), s) {
			t.Fatalf("the audit log holds a secret or token in clear")
		}
	}
}
