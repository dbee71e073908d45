package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

// verify, status and verify_connection through the vault CLI, and status
// polled with the narrow monitor token docs/operating.md gives.
func TestOperate_VerifyStatusAndVerifyConnection(t *testing.T) {
	requireVault(t)
	t.Parallel()
	fake := startFake(t, fakeupstream.Options{TokenLifetime: 10 * time.Minute})
	v := startDevVault(t)
	v.registerPlugin(pluginV1)
	v.enable("mapsindoors", pluginV1)
	v.configure("mapsindoors", fake, nil)
	v.mustCLI("write", "mapsindoors/roles/app", "ttl=5m")
	readCreds(t, v, fake, "mapsindoors", "app")
	readCreds(t, v, fake, "mapsindoors", "app")

	got := dataOf(t, v.cliJSON("read", "mapsindoors/verify"))
	require.Equal(t, true, got["ok"])
	require.EqualValues(t, 600, got["token_lifetime"])
	require.IsType(t, float64(0), got["latency_ms"])
	require.Equal(t, "none", got["last_rotation_outcome"])

	// A secret that does not log in is refused before it is stored, with
	// the upstream's reason; verify_connection=false stores it anyway.
	_, err := v.cli("write", "mapsindoors/config", "client_secret=not-the-secret")
	require.ErrorContains(t, err, "Code: 400")
	require.ErrorContains(t, err, "verify_connection")
	require.ErrorContains(t, err, `OAuth2 error "invalid_client"`)
	require.Equal(t, true, dataOf(t, v.cliJSON("read", "mapsindoors/verify"))["ok"], "the stored secret is unchanged")
	v.mustCLI("write", "mapsindoors/config", "client_secret=not-the-secret", "client_secret_id=", "verify_connection=false")
	got = dataOf(t, v.cliJSON("read", "mapsindoors/verify"))
	require.Equal(t, false, got["ok"], "a failed check is an answer, not an error")
	require.EqualValues(t, 400, got["upstream_status"])
	require.Equal(t, "invalid_client", got["oauth2_error"])
	require.NotContains(t, v.readConfig("mapsindoors"), "verify_connection", "it is not stored")

	// status, polled with the monitor policy's token.
	monitor := v.as(t, v.as(t, v.token).tokenWithPolicy("monitor", "-period=24h", "-orphan", "-display-name=monitoring"))
	code, body := monitor.api(http.MethodGet, "mapsindoors/status", nil)
	require.Equal(t, http.StatusOK, code)
	status := body["data"].(map[string]any)
	require.EqualValues(t, 2, status["leases_issued"])
	require.EqualValues(t, 1, status["token_cache_hits"])
	require.EqualValues(t, 1, status["token_cache_misses"])
	require.EqualValues(t, map[string]any{"succeeded": 2.0, "failed": 1.0}, status["verifications"])
	failures := status["upstream_failures"].(map[string]any)["token"].(map[string]any)
	require.EqualValues(t, 2, failures["400"], "the refused config write's login and the failed check")
	require.Positive(t, status["upstream_latency_p99_ms"])
	code, _ = monitor.api(http.MethodGet, "mapsindoors/creds/app", nil)
	require.Equal(t, http.StatusForbidden, code)
}

// docs/teardown.md: disabling a mount revokes its leases first, through the
// plugin, while the config is still there: CameraManager's tokens are
// logged out, and the mount goes away. The upstream secrets stay live.
func TestTeardown_DisablingMountsWithLiveLeases(t *testing.T) {
	requireVault(t)
	t.Parallel()
	fake := startFake(t, fakeupstream.Options{})
	v := startDevVault(t)
	v.registerPlugin(pluginV1)
	mounts := map[string]string{"mapsindoors": "mapsindoors", "metapack": "metapack", "oauth2": "oauth2", "cameramanager": "cameramanager"}
	tokens := map[string][]string{}
	leases := map[string][]string{}
	for mount, provider := range mounts {
		v.enable(mount, pluginV1)
		v.writeFile(mount+"/config", fake.PluginConfig(provider))
		v.mustCLI("write", mount+"/roles/app", "ttl=1h")
		for range 2 {
			tok, lease := readCreds(t, v, fake, mount, "app")
			tokens[mount] = append(tokens[mount], tok)
			leases[mount] = append(leases[mount], lease)
		}
	}
	for mount := range mounts {
		v.mustCLI("secrets", "disable", mount)
		for _, lease := range leases[mount] {
			_, err := v.cli("lease", "lookup", lease)
			require.Error(t, err, "%s: the lease is gone", lease)
		}
	}
	out := v.mustCLI("secrets", "list")
	for mount := range mounts {
		require.NotContains(t, out, mount+"/")
	}
	for _, tok := range tokens["cameramanager"] {
		require.False(t, fake.TokenLive(tok), "each CameraManager lease's token was logged out")
	}
	// Vault does not own the account: the client secret it held is live
	// upstream until someone deletes it there.
	require.True(t, fake.SecretWorks(fake.Credentials().ClientSecret))
	require.Len(t, fake.Secrets(), 1)
}

// docs/teardown.md: a CameraManager mount whose config was deleted while
// leases were live cannot log their tokens out. The recipe: write the
// config back and revoke, or force-revoke the leases (their tokens then
// live out their ~12 hours), then disable.
func TestTeardown_ConfigDeletedBeforeItsLeases(t *testing.T) {
	requireVault(t)
	t.Parallel()
	fake := startFake(t, fakeupstream.Options{})
	v := startDevVault(t)
	v.registerPlugin(pluginV1)
	v.enable("cameramanager", pluginV1)
	v.writeFile("cameramanager/config", fake.PluginConfig("cameramanager"))
	v.mustCLI("write", "cameramanager/roles/app", "ttl=1h")
	tok, lease := readCreds(t, v, fake, "cameramanager", "app")
	v.mustCLI("delete", "cameramanager/config")

	if _, err := v.cli("secrets", "disable", "cameramanager"); err != nil {
		// What the plugin says names the way out.
		require.ErrorContains(t, err, "write cameramanager/config again")
		t.Log("disable was refused while a lease's token could not be logged out; force-revoking the leases")
		v.mustCLI("lease", "revoke", "-force", "-prefix", "cameramanager/creds/")
		v.mustCLI("secrets", "disable", "cameramanager")
		require.True(t, fake.TokenLive(tok), "a force-revoked lease's token lives on upstream until it expires")
	}
	_, err := v.cli("lease", "lookup", lease)
	require.Error(t, err)
	require.False(t, strings.Contains(v.mustCLI("secrets", "list"), "cameramanager/"))
}
