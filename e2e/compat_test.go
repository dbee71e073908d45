package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

// The compatibility suite: the same tests against each Vault server of the
// matrix (make compat), the server chosen by the environment. It is skipped
// unless compatVaultEnv names the version the server must report, so a
// plain e2e run does not repeat what its own tests already cover.
const (
	// compatVaultEnv is the Vault version under test, as `vault version`
	// prints it without the v (1.19.0); VAULT_BIN is its binary.
	compatVaultEnv = "MAPSINDOORS_COMPAT_VAULT"
	// compatSuiteEnv is "full" (the default) or "smoke": register, config,
	// creds and rotate-root only, for a server between the oldest and the
	// newest when CI time is short.
	compatSuiteEnv = "MAPSINDOORS_COMPAT_SUITE"
)

// requireCompat skips unless a compat run asked for this test, and fails
// when the server is not the version the run names: a matrix entry that
// silently ran another server would claim what was never tested.
func requireCompat(t *testing.T, full bool) {
	t.Helper()
	requireVault(t)
	want := os.Getenv(compatVaultEnv)
	if want == "" {
		t.Skipf("%s is not set: the compatibility suite runs under make compat", compatVaultEnv)
	}
	suite := os.Getenv(compatSuiteEnv)
	switch suite {
	case "", "full":
	case "smoke":
		if full {
			t.Skipf("%s=smoke: only register, config, creds and rotate-root run on Vault %s", compatSuiteEnv, want)
		}
	default:
		t.Fatalf("%s=%q: want full or smoke", compatSuiteEnv, suite)
	}
	out, err := runVaultVersion()
	require.NoError(t, err)
	m := vaultVersionLine.FindStringSubmatch(out)
	require.NotNil(t, m, "vault version printed %q", out)
	require.Equal(t, want, m[1], "VAULT_BIN is the server %s names", compatVaultEnv)
}

var vaultVersionLine = regexp.MustCompile(`Vault v(\d+\.\d+\.\d+)\b`)

var compatVersion struct {
	once sync.Once
	out  string
	err  error
}

// runVaultVersion is `vault version` of VAULT_BIN, asked once per run.
func runVaultVersion() (string, error) {
	compatVersion.once.Do(func() {
		out, err := exec.CommandContext(context.Background(), vaultBin, "version").CombinedOutput()
		compatVersion.out, compatVersion.err = string(out), err
	})
	return compatVersion.out, compatVersion.err
}

// Smoke, on every server of the matrix: register by checksum and version,
// enable, config with verify_connection, a role, creds, rotate-root.
func TestCompat_RegisterConfigCredsRotate(t *testing.T) {
	requireCompat(t, false)
	t.Parallel()
	fake := startFake(t, fakeupstream.Options{})
	v := startDevVault(t)
	v.registerPlugin(pluginV1)
	requirePluginListed(t, v, pluginV1)
	v.enable("mapsindoors", pluginV1)
	requireRunning(t, v, "mapsindoors/", pluginV1)

	// A secret that does not log in is refused before it is stored.
	bad := fake.PluginConfig("mapsindoors")
	bad["client_secret"] = "not-the-secret"
	bad["verify_connection"] = true
	_, err := v.cliWithFile("write", "mapsindoors/config", bad)
	require.ErrorContains(t, err, "Code: 400")
	require.ErrorContains(t, err, "verify_connection")
	v.configure("mapsindoors", fake, map[string]any{"verify_connection": true})

	v.mustCLI("write", "mapsindoors/roles/app", "ttl=5m")
	readCreds(t, v, fake, "mapsindoors", "app")
	old := fake.Credentials()
	rot := dataOf(t, v.cliJSON("write", "-f", "mapsindoors/rotate-root"))
	require.Equal(t, true, rot["previous_deleted"])
	require.False(t, fake.SecretWorks(old.ClientSecret), "the replaced secret is deleted upstream")
	readCreds(t, v, fake, "mapsindoors", "app")
}

// rotate-root with a grace, verify, lease revocation and the audit log
// without secrets, in one mount.
func TestCompat_GraceVerifyRevokeAndAudit(t *testing.T) {
	requireCompat(t, true)
	t.Parallel()
	fake := startFake(t, fakeupstream.Options{TokenLifetime: 2 * time.Minute})
	v := startDevVault(t)
	auditLog := filepath.Join(t.TempDir(), "audit.log")
	v.mustCLI("audit", "enable", "file", "file_path="+auditLog)
	v.registerPlugin(pluginV1)
	v.enable("mapsindoors", pluginV1)
	v.configure("mapsindoors", fake, map[string]any{"previous_secret_grace": "20s"})
	v.mustCLI("write", "mapsindoors/roles/app", "ttl=5m")

	require.Equal(t, true, dataOf(t, v.cliJSON("read", "mapsindoors/verify"))["ok"])

	token, leaseID := readCreds(t, v, fake, "mapsindoors", "app")
	v.mustCLI("lease", "revoke", leaseID)
	_, err := v.cli("lease", "lookup", leaseID)
	require.Error(t, err, "a revoked lease is gone")
	_, lease2 := readCreds(t, v, fake, "mapsindoors", "app")
	v.mustCLI("lease", "revoke", "-prefix", "mapsindoors/creds/")
	eventually(t, 30*time.Second, "prefix revocation", func() bool {
		_, err := v.cli("lease", "lookup", lease2)
		return err != nil
	})

	old := fake.Credentials()
	rot := dataOf(t, v.cliJSON("write", "-f", "mapsindoors/rotate-root"))
	require.Equal(t, false, rot["previous_deleted"], "the replaced secret is kept for its grace")
	require.True(t, fake.SecretWorks(old.ClientSecret), "within its grace the replaced secret works")
	// Vault runs the periodic function about once a minute.
	eventually(t, 2*time.Minute, "the replaced secret deleted after its grace", func() bool {
		return !fake.SecretWorks(old.ClientSecret)
	})
	cfg := v.readConfig("mapsindoors")
	require.Empty(t, cfg["pending_deletions"])
	require.Equal(t, []string{cfg["client_secret_id"].(string)}, secretIDs(fake))
	require.Equal(t, true, dataOf(t, v.cliJSON("read", "mapsindoors/verify"))["ok"])
	readCreds(t, v, fake, "mapsindoors", "app")

	requireAuditClean(t, v, fake, auditLog, token)
}

// requireAuditClean: no secret or token of the fake's in clear in the audit
// log, and yet an operator finds a token's entries by its HMAC, and the
// request paths are in clear.
func requireAuditClean(t *testing.T, v *vaultServer, fake *fakeupstream.Server, auditLog, token string) {
	t.Helper()
	audit, err := os.ReadFile(auditLog)
	require.NoError(t, err)
	inClear := slices.ContainsFunc(fake.Sensitive(), func(s string) bool { return strings.Contains(string(audit), s) })
	require.False(t, inClear, "the audit log holds a secret or token in clear")
	hmac := dataOf(t, v.cliJSON("write", "sys/audit-hash/file", "input="+token))["hash"].(string)
	require.Contains(t, string(audit), hmac, "the token's HMAC is in the audit log")
	require.Contains(t, string(audit), `"mapsindoors/creds/app"`, "request paths are in clear")
}

// A rotation_schedule rotates on its own, through the plugin's periodic
// function (the community edition has no rotation manager).
func TestCompat_ScheduledRotation(t *testing.T) {
	requireCompat(t, true)
	t.Parallel()
	v, fake := startMapsIndoorsMount(t, nil)
	before := fake.Credentials()
	v.mustCLI("write", "mapsindoors/config", "rotation_schedule=* * * * *")
	eventually(t, 3*time.Minute, "a scheduled rotation", func() bool {
		return !slices.Contains(secretIDs(fake), before.ClientSecretID)
	})
	require.NotEmpty(t, v.readConfig("mapsindoors")["last_rotated"])
	eventually(t, time.Minute, "the stored secret is the live one", func() bool {
		cfg := v.readConfig("mapsindoors")
		ids := secretIDs(fake)
		return len(ids) == 1 && ids[0] == cfg["client_secret_id"]
	})
	v.mustCLI("write", "mapsindoors/config", "disable_automated_rotation=true")
	v.mustCLI("write", "mapsindoors/roles/app", "ttl=5m")
	readCreds(t, v, fake, "mapsindoors", "app")
}

// Vault Agent renders a live token, and renders a new one before it dies.
func TestCompat_AgentRender(t *testing.T) {
	requireCompat(t, true)
	t.Parallel()
	fake := startFake(t, fakeupstream.Options{TokenLifetime: 30 * time.Second})
	v, _ := startMapsIndoorsMountWith(t, fake)
	v.mustCLI("write", "mapsindoors/roles/agent", "ttl=1h")
	rendered, agent := startTemplateAgent(t, v, "mapsindoors/creds/agent")
	seen := map[string]bool{}
	eventually(t, 90*time.Second, "two rendered tokens, each live when read", func() bool {
		select {
		case <-agent.exited:
			agent.dumpLog()
			t.Fatal("Vault Agent exited")
		default:
		}
		b, err := os.ReadFile(rendered)
		if err != nil || len(b) == 0 {
			return false
		}
		tok := strings.TrimSpace(string(b))
		require.True(t, fake.TokenLive(tok), "the rendered token is live at the fake")
		seen[tok] = true
		return len(seen) >= 2
	})
}

// A plugin upgrade: register the next version, secrets tune
// -plugin-version, plugin reload; state is kept and creds still work.
func TestCompat_PluginUpgrade(t *testing.T) {
	requireCompat(t, true)
	t.Parallel()
	v, fake := startMapsIndoorsMount(t, nil)
	v.mustCLI("write", "mapsindoors/roles/app", "ttl=5m")
	readCreds(t, v, fake, "mapsindoors", "app")
	cfgBefore := v.readConfig("mapsindoors")

	v.registerPlugin(pluginV2)
	v.mustCLI("secrets", "tune", "-plugin-version="+pluginV2.Version, "mapsindoors/")
	v.mustCLI("plugin", "reload", "-type=secret", "-plugin="+pluginName)
	eventually(t, 30*time.Second, "the mount to run the new version", func() bool {
		m, _ := v.cliJSON("secrets", "list", "-detailed")["mapsindoors/"].(map[string]any)
		return m != nil && m["running_plugin_version"] == pluginV2.Version
	})
	require.Equal(t, cfgBefore, v.readConfig("mapsindoors"))
	readCreds(t, v, fake, "mapsindoors", "app")
	rot := dataOf(t, v.cliJSON("write", "-f", "mapsindoors/rotate-root"))
	require.Equal(t, true, rot["previous_deleted"])
}

func requirePluginListed(t *testing.T, v *vaultServer, p pluginBuild) {
	t.Helper()
	var plugins struct{ Details []map[string]any }
	require.NoError(t, json.Unmarshal([]byte(v.mustCLI("plugin", "list", "-detailed", "-format=json", "secret")), &plugins))
	for _, d := range plugins.Details {
		if d["name"] == pluginName && d["version"] == p.Version {
			return
		}
	}
	t.Fatalf("vault plugin list does not show %s %s", pluginName, p.Version)
}

func requireRunning(t *testing.T, v *vaultServer, mount string, p pluginBuild) {
	t.Helper()
	m, _ := v.cliJSON("secrets", "list", "-detailed")[mount].(map[string]any)
	require.NotNil(t, m, "%s is mounted", mount)
	require.Equal(t, p.Version, m["running_plugin_version"])
	require.Equal(t, p.SHA256, m["running_sha256"], "the mount runs the binary registered by its checksum")
}

// cliWithFile is `vault ARGS... PATH @file.json`, returning the error: for
// writes that are meant to fail.
func (v *vaultServer) cliWithFile(cmd, path string, data map[string]any) (string, error) {
	v.t.Helper()
	blob, err := json.Marshal(data)
	require.NoError(v.t, err)
	file := filepath.Join(v.t.TempDir(), "data.json")
	require.NoError(v.t, os.WriteFile(file, blob, 0o600))
	return v.cli(cmd, path, "@"+file)
}

// startMapsIndoorsMountWith is startMapsIndoorsMount with a fake of the
// caller's.
func startMapsIndoorsMountWith(t *testing.T, fake *fakeupstream.Server) (*vaultServer, *fakeupstream.Server) {
	t.Helper()
	v := startDevVault(t)
	v.registerPlugin(pluginV1)
	v.enable("mapsindoors", pluginV1)
	v.configure("mapsindoors", fake, nil)
	return v, fake
}
