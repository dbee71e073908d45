package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

// cliInput runs the vault CLI with stdin, as `printf '%s' "$X" | vault ...
// input=-` does: the value is on no command line and in no shell history.
func (v *vaultServer) cliInput(stdin string, args ...string) string {
	v.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, vaultBin, args...)
	cmd.Env = append(cleanEnv(), "VAULT_ADDR="+v.addr, "VAULT_TOKEN="+v.token)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(v.t, cmd.Run(), "vault %s: %s", strings.Join(redactArgs(args), " "), stderr.String())
	return stdout.String()
}

// auditEntry is one line of a file audit device, as far as these tests
// look into it.
type auditEntry struct {
	Type string `json:"type"`
	Auth struct {
		DisplayName string            `json:"display_name"`
		Policies    []string          `json:"policies"`
		Metadata    map[string]string `json:"metadata"`
		EntityID    string            `json:"entity_id"`
	} `json:"auth"`
	Request struct {
		ID            string         `json:"id"`
		Path          string         `json:"path"`
		Operation     string         `json:"operation"`
		RemoteAddress string         `json:"remote_address"`
		Data          map[string]any `json:"data"`
	} `json:"request"`
	Response struct {
		Data   map[string]any `json:"data"`
		Secret struct {
			LeaseID string `json:"lease_id"`
		} `json:"secret"`
	} `json:"response"`
}

func readAudit(t *testing.T, file string) []auditEntry {
	t.Helper()
	f, err := os.Open(file)
	require.NoError(t, err)
	defer func() { _ = f.Close() }() // read only
	var out []auditEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e auditEntry
		require.NoError(t, json.Unmarshal(sc.Bytes(), &e))
		out = append(out, e)
	}
	require.NoError(t, sc.Err())
	return out
}

// responses are the response entries for a request path and operation,
// oldest first.
func responses(entries []auditEntry, path, operation string) []auditEntry {
	var out []auditEntry
	for _, e := range entries {
		if e.Type == "response" && e.Request.Path == path && e.Request.Operation == operation {
			out = append(out, e)
		}
	}
	return out
}

func isHMAC(v any) bool {
	s, ok := v.(string)
	return ok && strings.HasPrefix(s, "hmac-sha256:")
}

// The recipes of docs/security.md, in the order it gives them, through a
// real Vault with a file audit device.
func TestSecurity_AuditLogRecipes(t *testing.T) {
	requireVault(t)
	t.Parallel()
	fake := startFake(t, fakeupstream.Options{})
	v := startDevVault(t)
	auditLog := filepath.Join(t.TempDir(), "audit.log")
	v.mustCLI("audit", "enable", "file", "file_path="+auditLog)
	v.registerPlugin(pluginV1)
	v.enable("mapsindoors", pluginV1)
	v.configure("mapsindoors", fake, map[string]any{"previous_secret_grace": "1h"})
	v.mustCLI("write", "mapsindoors/roles/app", "ttl=5m", "scopes=integration")
	first := fake.Credentials()

	// What the audit log holds for each path.
	creds := v.cliJSON("read", "mapsindoors/creds/app")
	v.mustCLI("read", "mapsindoors/config")
	rot := dataOf(t, v.cliJSON("write", "-f", "mapsindoors/rotate-root"))
	v.mustCLI("read", "mapsindoors/verify")
	v.mustCLI("read", "mapsindoors/status")
	v.mustCLI("list", "mapsindoors/client-secrets")

	entries := readAudit(t, auditLog)
	write := responses(entries, "mapsindoors/config", "create")
	require.NotEmpty(t, write)
	require.True(t, isHMAC(write[0].Request.Data["client_secret"]), "the written secret is hashed")
	require.True(t, isHMAC(write[0].Request.Data["client_id"]), "every string is hashed, secret or not")
	read := responses(entries, "mapsindoors/creds/app", "read")
	require.Len(t, read, 1)
	require.True(t, isHMAC(read[0].Response.Data["access_token"]))
	require.True(t, isHMAC(read[0].Response.Data["role"]), "strings are hashed until the mount is tuned")
	require.IsType(t, float64(0), read[0].Response.Data["expires_in"], "numbers are in clear")
	require.Equal(t, creds["lease_id"], read[0].Response.Secret.LeaseID, "lease ids are in clear")
	cfg := responses(entries, "mapsindoors/config", "read")
	require.Len(t, cfg, 1)
	require.Equal(t, true, cfg[0].Response.Data["client_secret_set"])
	require.NotContains(t, cfg[0].Response.Data, "client_secret")
	rotated := responses(entries, "mapsindoors/rotate-root", "update")
	require.Len(t, rotated, 1)
	require.Equal(t, false, rotated[0].Response.Data["previous_deleted"])
	verify := responses(entries, "mapsindoors/verify", "read")
	require.Len(t, verify, 1)
	require.Equal(t, true, verify[0].Response.Data["ok"])
	require.IsType(t, float64(0), verify[0].Response.Data["latency_ms"])
	require.NotEmpty(t, responses(entries, "mapsindoors/status", "read"))
	require.NotEmpty(t, responses(entries, "mapsindoors/client-secrets/", "list"))

	// Tuning the mount lets the non-secret creds fields through in clear;
	// the token stays hashed.
	v.mustCLI("secrets", "tune",
		"-audit-non-hmac-response-keys=role", "-audit-non-hmac-response-keys=expires_at",
		"-audit-non-hmac-response-keys=scope", "-audit-non-hmac-response-keys=token_type",
		"mapsindoors/")
	v.mustCLI("read", "mapsindoors/creds/app")
	read = responses(readAudit(t, auditLog), "mapsindoors/creds/app", "read")
	require.Len(t, read, 2)
	tuned := read[1].Response.Data
	require.Equal(t, "app", tuned["role"])
	require.Equal(t, "integration", tuned["scope"])
	require.Equal(t, "Bearer", tuned["token_type"])
	_, err := time.Parse(time.RFC3339, tuned["expires_at"].(string))
	require.NoError(t, err)
	require.True(t, isHMAC(tuned["access_token"]))

	// Tracing a token seen upstream back to the request and the identity
	// that read it: an app token with a display name and metadata reads a
	// token; an auditor hashes that token and finds the entry.
	root := v.as(t, v.token)
	app := v.as(t, root.tokenWithPolicy("app", "-display-name=billing", "-metadata=team=billing"))
	appCreds := app.cliJSON("read", "mapsindoors/creds/app")
	seenUpstream := dataOf(t, appCreds)["access_token"].(string)
	auditor := v.as(t, root.tokenWithPolicy("auditor"))
	hash := strings.TrimSpace(auditor.cliInput(seenUpstream, "write", "-field=hash", "sys/audit-hash/file", "input=-"))
	require.True(t, strings.HasPrefix(hash, "hmac-sha256:"))
	// docs/security.md selects this with jq; the same selection in Go:
	var found []auditEntry
	for _, e := range readAudit(t, auditLog) {
		if e.Type == "response" && e.Response.Data["access_token"] == hash {
			found = append(found, e)
		}
	}
	// A role's token is shared by the reads made while it lasts (the tuned
	// read as root above got the same one), so every reader is listed.
	require.Len(t, found, 2, "both reads that were handed the token")
	require.Equal(t, []string{"root"}, found[0].Auth.Policies)
	hit := found[1]
	require.Equal(t, "mapsindoors/creds/app", hit.Request.Path)
	require.Equal(t, appCreds["request_id"], hit.Request.ID)
	require.Equal(t, appCreds["lease_id"], hit.Response.Secret.LeaseID)
	require.Equal(t, "token-billing", hit.Auth.DisplayName)
	require.Contains(t, hit.Auth.Policies, "app")
	require.Equal(t, "billing", hit.Auth.Metadata["team"])
	require.Equal(t, "127.0.0.1", hit.Request.RemoteAddress)

	// The client-secrets listing: which secrets exist upstream and which
	// one Vault holds; the replaced one is listed until its grace ends.
	list := dataOf(t, auditor.cliJSON("read", "mapsindoors/client-secrets"))
	info := list["key_info"].(map[string]any)
	require.Len(t, info, 2)
	current := info[rot["client_secret_id"].(string)].(map[string]any)
	require.Equal(t, true, current["current"])
	require.True(t, strings.HasPrefix(current["description"].(string), "vault-rotation "), "Vault's own secrets say so")
	previous := info[first.ClientSecretID].(map[string]any)
	require.Equal(t, true, previous["previous"])
	pending := auditor.readConfig("mapsindoors")["pending_deletions"].([]any)
	require.Equal(t, first.ClientSecretID, pending[0].(map[string]any)["id"], "and the config says when it goes")

	// Nothing secret is in the audit log in clear, whatever was tuned.
	audit, err := os.ReadFile(auditLog)
	require.NoError(t, err)
	for _, s := range fake.Sensitive() {
		if strings.Contains(string(audit), s) {
			t.Fatalf("the audit log holds a secret or token in clear")
		}
	}
}

// Response wrapping: the creds answer goes to a single-use wrapping token,
// which the app unwraps; the lease is the same as for a plain read.
func TestSecurity_ResponseWrapping(t *testing.T) {
	requireVault(t)
	t.Parallel()
	fake := startFake(t, fakeupstream.Options{})
	v := startDevVault(t)
	v.registerPlugin(pluginV1)
	v.enable("mapsindoors", pluginV1)
	v.configure("mapsindoors", fake, nil)
	v.mustCLI("write", "mapsindoors/roles/app", "ttl=5m")

	wrapToken := strings.TrimSpace(v.mustCLI("read", "-wrap-ttl=2m", "-field=wrapping_token", "mapsindoors/creds/app"))
	require.NotEmpty(t, wrapToken)
	require.False(t, fake.TokenLive(wrapToken), "the wrapping token is Vault's, not an access token")
	info := dataOf(t, v.cliJSON("write", "sys/wrapping/lookup", "token="+wrapToken))
	require.Equal(t, "mapsindoors/creds/app", info["creation_path"])
	require.EqualValues(t, 120, info["creation_ttl"])

	// The app unwraps with the wrapping token alone.
	unwrapper := v.as(t, wrapToken)
	out := decodeJSON(t, unwrapper.mustCLI("unwrap", "-format=json"))
	token := dataOf(t, out)["access_token"].(string)
	require.True(t, fake.TokenLive(token))
	require.Equal(t, false, out["renewable"])
	require.True(t, strings.HasPrefix(out["lease_id"].(string), "mapsindoors/creds/app/"))
	v.mustCLI("lease", "lookup", out["lease_id"].(string))

	// A wrapping token works once: a second unwrap (someone who copied it
	// in transit) fails, and the app would know.
	code, _ := unwrapper.api(http.MethodPost, "sys/wrapping/unwrap", nil)
	require.Equal(t, http.StatusBadRequest, code)
}
