package e2e

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

// readCreds reads creds/<role> with the CLI and checks the lease against
// the token: live at the fake, not renewable, and ending before it.
func readCreds(t *testing.T, v *vaultServer, fake *fakeupstream.Server, mount, role string) (token, leaseID string) {
	t.Helper()
	before := time.Now()
	resp := v.cliJSON("read", mount+"/creds/"+role)
	data := dataOf(t, resp)
	token, _ = data["access_token"].(string)
	require.NotEmpty(t, token)
	require.True(t, fake.TokenLive(token), "the token Vault handed out is live at the fake")
	require.Equal(t, false, resp["renewable"])
	lease := time.Duration(resp["lease_duration"].(float64)) * time.Second
	require.Positive(t, lease)
	expiry, issued := fake.TokenExpiry(token)
	require.True(t, issued)
	require.True(t, before.Add(lease).Before(expiry), "the lease (%s) ends before the token", lease)
	leaseID = resp["lease_id"].(string)
	require.True(t, strings.HasPrefix(leaseID, mount+"/creds/"+role+"/"), leaseID)
	return token, leaseID
}

// Dev servers must keep their root token to themselves: a dev server
// stores it in ~/.vault-token by default, where the servers of parallel
// tests raced on renaming the same file (and one exited while starting),
// and where it replaced the token of whoever ran the tests.
func TestHarness_DevServerLeavesTheTokenHelperAlone(t *testing.T) {
	requireVault(t)
	t.Parallel()
	v := startDevVault(t)
	_, err := os.Stat(filepath.Join(v.home, ".vault-token"))
	require.ErrorIs(t, err, fs.ErrNotExist, "the dev server stored its root token in its HOME")
}

// A failing test dumps the server's log; the dev banner and "operator
// init" print keys and tokens there, which the dump must not repeat.
func TestHarness_ServerLogDumpHidesKeysAndTokens(t *testing.T) {
	t.Parallel()
	log := strings.Join([]string{
		"Unseal Key: c2VjcmV0LXVuc2VhbC1rZXk=",
		"Root Token: hvs.dev-root",
		"Unseal Key 1: c2Vjb25kLWtleQ==",
		"Recovery Key 2: cmVjb3Zlcnk=",
		"Initial Root Token: hvs.initial",
		"2026-11-23T16:21:17.953Z [INFO]  core: vault is sealed",
	}, "\n")
	got := redactServerLog(log)
	for _, secret := range []string{"c2VjcmV0LXVuc2VhbC1rZXk=", "hvs.dev-root", "c2Vjb25kLWtleQ==", "cmVjb3Zlcnk=", "hvs.initial"} {
		require.NotContains(t, got, secret)
	}
	require.Contains(t, got, "Unseal Key 1: (redacted)")
	require.Contains(t, got, "core: vault is sealed", "the rest of the log is kept")
}

func TestCLI_RegisterConfigureReadRevokeRotateAndAudit(t *testing.T) {
	requireVault(t)
	t.Parallel()
	fake := startFake(t, fakeupstream.Options{TokenLifetime: 2 * time.Minute})
	v := startDevVault(t)
	auditLog := filepath.Join(t.TempDir(), "audit.log")
	v.mustCLI("audit", "enable", "file", "file_path="+auditLog)

	// Register by checksum with a version, enable that version.
	v.registerPlugin(pluginV1)
	v.enable("mapsindoors", pluginV1)
	var plugins struct{ Details []map[string]any }
	require.NoError(t, json.Unmarshal([]byte(v.mustCLI("plugin", "list", "-detailed", "-format=json", "secret")), &plugins))
	found := false
	for _, p := range plugins.Details {
		if p["name"] == pluginName && p["version"] == pluginV1.Version {
			found = true
		}
	}
	require.True(t, found, "vault plugin list shows %s %s", pluginName, pluginV1.Version)

	// Vault builds OpenAPI for the mount, and path-help answers.
	code, spec := v.api("GET", "sys/internal/specs/openapi", nil)
	require.Equal(t, 200, code)
	paths, _ := spec["paths"].(map[string]any)
	for _, p := range []string{"/mapsindoors/config", "/mapsindoors/roles/{name}", "/mapsindoors/creds/{name}", "/mapsindoors/rotate-root"} {
		require.Contains(t, paths, p)
	}
	require.Contains(t, v.mustCLI("path-help", "mapsindoors/creds/app"), "short-lived bearer token")

	// Config: written from a file, read back without the secret.
	v.configure("mapsindoors", fake, map[string]any{"scopes": "integration"})
	cfgOut := v.mustCLI("read", "-format=json", "mapsindoors/config")
	require.False(t, strings.Contains(cfgOut, fake.Credentials().ClientSecret), "the config read shows the secret")
	cfg := dataOf(t, decode(t, cfgOut))
	delete(cfg, "client_secret_age")
	require.NotContains(t, cfg, "client_secret")
	require.Equal(t, true, cfg["client_secret_set"])

	// A bad write is a 400 that names the field, and changes nothing.
	_, err := v.cli("write", "mapsindoors/config", "token_url=http://auth.example.com/connect/token")
	require.ErrorContains(t, err, "Code: 400")
	require.ErrorContains(t, err, "token_url must use https")
	require.Equal(t, cfg, v.readConfig("mapsindoors"))

	v.mustCLI("write", "mapsindoors/roles/app", "ttl=5m", "scopes=integration")
	_, err = v.cli("read", "mapsindoors/creds/missing")
	require.ErrorContains(t, err, "Code: 400")

	// creds: a live token as a lease shorter than the token.
	_, leaseID := readCreds(t, v, fake, "mapsindoors", "app")
	_, err = v.cli("lease", "renew", leaseID)
	require.Error(t, err, "creds leases are not renewable")

	// Revoke one lease, then every lease under the prefix.
	v.mustCLI("lease", "revoke", leaseID)
	_, err = v.cli("lease", "lookup", leaseID)
	require.Error(t, err, "a revoked lease is gone")
	_, lease2 := readCreds(t, v, fake, "mapsindoors", "app")
	_, lease3 := readCreds(t, v, fake, "mapsindoors", "app")
	v.mustCLI("lease", "revoke", "-prefix", "mapsindoors/creds/")
	eventually(t, 30*time.Second, "prefix revocation", func() bool {
		_, err2 := v.cli("lease", "lookup", lease2)
		_, err3 := v.cli("lease", "lookup", lease3)
		return err2 != nil && err3 != nil
	})

	// Rotation through the CLI; the old secret stops working.
	old := fake.Credentials()
	rot := dataOf(t, v.cliJSON("write", "-f", "mapsindoors/rotate-root"))
	require.Equal(t, true, rot["previous_deleted"])
	require.Equal(t, old.ClientSecretID, rot["previous_client_secret_id"])
	require.False(t, fake.SecretWorks(old.ClientSecret))
	var keys []string
	require.NoError(t, json.Unmarshal([]byte(v.mustCLI("list", "-format=json", "mapsindoors/client-secrets")), &keys))
	require.Equal(t, []string{rot["client_secret_id"].(string)}, keys)
	token, _ := readCreds(t, v, fake, "mapsindoors", "app")

	// The audit log holds no secret, password or token in clear, and an
	// operator can still find a token's entries by its hash.
	hash := dataOf(t, v.cliJSON("write", "sys/audit-hash/file", "input="+token))["hash"].(string)
	require.True(t, strings.HasPrefix(hash, "hmac-sha256:"))
	audit, err := os.ReadFile(auditLog)
	require.NoError(t, err)
	for _, s := range fake.Sensitive() {
		if strings.Contains(string(audit), s) {
			t.Fatalf("the audit log holds a secret or token in clear")
		}
	}
	require.Contains(t, string(audit), hash, "the token's HMAC is in the audit log")
	require.Contains(t, string(audit), `"mapsindoors/creds/app"`, "request paths are in clear")
}

func decode(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(s), &m))
	return m
}

func TestAgent_TemplateAlwaysHoldsALiveToken(t *testing.T) {
	requireVault(t)
	t.Parallel()
	fake := startFake(t, fakeupstream.Options{TokenLifetime: 30 * time.Second})
	v := startDevVault(t)
	v.registerPlugin(pluginV1)
	v.enable("mapsindoors", pluginV1)
	v.configure("mapsindoors", fake, nil)
	v.mustCLI("write", "mapsindoors/roles/agent", "ttl=1h")

	rendered, _ := startTemplateAgent(t, v, "mapsindoors/creds/agent")

	eventually(t, 30*time.Second, "the first render", func() bool {
		b, err := os.ReadFile(rendered)
		return err == nil && len(b) > 0
	})
	// Over 75 s, at least two 30 s tokens have to be replaced; every look
	// at the file finds a live one.
	seen := map[string]bool{}
	for end := time.Now().Add(75 * time.Second); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		b, err := os.ReadFile(rendered)
		require.NoError(t, err)
		tok := strings.TrimSpace(string(b))
		require.True(t, fake.TokenLive(tok), "the rendered token is live at the fake")
		exp, _ := fake.TokenExpiry(tok)
		require.Greater(t, time.Until(exp), time.Second, "and not about to die")
		seen[tok] = true
	}
	require.GreaterOrEqual(t, len(seen), 3, "the template was re-rendered before each token expired")
}

func TestUpgrade_NewPluginVersionKeepsStateAndServesCreds(t *testing.T) {
	requireVault(t)
	t.Parallel()
	v, fake := startMapsIndoorsMount(t, map[string]any{"rotation_period": "24h"})
	v.mustCLI("write", "mapsindoors/roles/app", "ttl=10m", "scopes=integration")
	v.mustCLI("write", "-f", "mapsindoors/rotate-root")
	readCreds(t, v, fake, "mapsindoors", "app")
	cfgBefore := v.readConfig("mapsindoors")
	roleBefore := dataOf(t, v.cliJSON("read", "mapsindoors/roles/app"))
	require.NotEmpty(t, cfgBefore["last_rotated"])

	v.registerPlugin(pluginV2)
	v.mustCLI("secrets", "tune", "-plugin-version="+pluginV2.Version, "mapsindoors/")
	v.mustCLI("plugin", "reload", "-type=secret", "-plugin="+pluginName)
	eventually(t, 30*time.Second, "the mount to run the new version", func() bool {
		mounts := v.cliJSON("secrets", "list", "-detailed")
		m, _ := mounts["mapsindoors/"].(map[string]any)
		return m != nil && m["running_plugin_version"] == pluginV2.Version
	})

	require.Equal(t, cfgBefore, v.readConfig("mapsindoors"))
	require.Equal(t, roleBefore, dataOf(t, v.cliJSON("read", "mapsindoors/roles/app")))
	readCreds(t, v, fake, "mapsindoors", "app")
	rot := dataOf(t, v.cliJSON("write", "-f", "mapsindoors/rotate-root"))
	require.Equal(t, true, rot["previous_deleted"])
}

// A server restarted between a rotation and the deletion of the secret it
// replaced still deletes that secret when its grace ends.
func TestRestart_PersistentStorageKeepsConfigRolesAndPendingDeletions(t *testing.T) {
	requireVault(t)
	t.Parallel()
	fake := startFake(t, fakeupstream.Options{})
	dir := t.TempDir()
	// Integrated storage, one node: what a production server runs.
	storage := fmt.Sprintf("storage \"raft\" {\n  path    = %q\n  node_id = \"restart\"\n}\n", mkdir(t, filepath.Join(dir, "data")))
	v := newConfiguredServer(t, "restart", dir, storage, freePort(t), freePort(t))
	v.startConfigured()
	unsealKey := initVault(t, v)
	unseal(t, v, unsealKey)

	v.registerPlugin(pluginV1)
	v.enable("mapsindoors", pluginV1)
	v.configure("mapsindoors", fake, map[string]any{"previous_secret_grace": "40s"})
	v.mustCLI("write", "mapsindoors/roles/app", "ttl=10m")
	readCreds(t, v, fake, "mapsindoors", "app")
	old := fake.Credentials()
	rot := dataOf(t, v.cliJSON("write", "-f", "mapsindoors/rotate-root"))
	require.Equal(t, false, rot["previous_deleted"])
	cfgBefore := v.readConfig("mapsindoors")
	require.Len(t, cfgBefore["pending_deletions"], 1)
	roleBefore := dataOf(t, v.cliJSON("read", "mapsindoors/roles/app"))

	v.stop()
	require.True(t, fake.SecretWorks(old.ClientSecret), "within its grace the replaced secret works")
	v.startConfigured()
	unseal(t, v, unsealKey)
	require.Equal(t, cfgBefore, v.readConfig("mapsindoors"))
	require.Equal(t, roleBefore, dataOf(t, v.cliJSON("read", "mapsindoors/roles/app")))
	readCreds(t, v, fake, "mapsindoors", "app")

	eventually(t, 3*time.Minute, "the replaced secret deleted after the restart", func() bool {
		return !fake.SecretWorks(old.ClientSecret)
	})
	cfg := v.readConfig("mapsindoors")
	require.Empty(t, cfg["pending_deletions"])
	require.Equal(t, []string{cfg["client_secret_id"].(string)}, secretIDs(fake))
	readCreds(t, v, fake, "mapsindoors", "app")
}

// previous_secret_grace: the replaced secret keeps working until its grace
// ends, and then the upstream refuses it.
func TestGrace_ReplacedSecretWorksUntilTheGraceEnds(t *testing.T) {
	requireVault(t)
	t.Parallel()
	v, fake := startMapsIndoorsMount(t, map[string]any{"previous_secret_grace": "30s"})
	old := fake.Credentials()

	rot := dataOf(t, v.cliJSON("write", "-f", "mapsindoors/rotate-root"))
	require.Equal(t, false, rot["previous_deleted"])
	due, err := time.Parse(time.RFC3339, rot["previous_deletion_due"].(string))
	require.NoError(t, err)
	pending := v.readConfig("mapsindoors")["pending_deletions"].([]any)
	require.Len(t, pending, 1)
	require.Equal(t, old.ClientSecretID, pending[0].(map[string]any)["id"])

	for time.Now().Before(due.Add(-2 * time.Second)) {
		require.True(t, fake.SecretWorks(old.ClientSecret), "the replaced secret works until its grace ends")
		time.Sleep(time.Second)
	}
	// Vault runs the periodic function about once a minute.
	eventually(t, 2*time.Minute, "the replaced secret deleted once due", func() bool {
		return !fake.SecretWorks(old.ClientSecret)
	})
	require.True(t, time.Now().After(due))
	cfg := v.readConfig("mapsindoors")
	require.Empty(t, cfg["pending_deletions"])
	require.Equal(t, []string{cfg["client_secret_id"].(string)}, secretIDs(fake))
}

func secretIDs(fake *fakeupstream.Server) []string {
	ids := []string{}
	for _, s := range fake.Secrets() {
		ids = append(ids, s.ID)
	}
	return ids
}

// initVault initializes a server with one unseal key and takes its root
// token.
func initVault(t *testing.T, v *vaultServer) string {
	t.Helper()
	out := decode(t, v.mustCLI("operator", "init", "-key-shares=1", "-key-threshold=1", "-format=json"))
	v.token = out["root_token"].(string)
	return out["unseal_keys_b64"].([]any)[0].(string)
}

// unseal goes through the HTTP API so that the key is on no command line.
func unseal(t *testing.T, v *vaultServer, key string) {
	t.Helper()
	code, body := v.api("PUT", "sys/unseal", map[string]any{"key": key})
	require.Equal(t, 200, code, "unseal: %v", body["errors"])
	v.waitHealthy(func(code int) bool { return code == 200 || code == 429 })
}
