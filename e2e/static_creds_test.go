package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

// A Vault Agent template on static-creds, with 30 s upstream tokens: the
// rendered file is re-rendered at each replacement and holds a token that
// is live upstream (by more than a second) at every 100 ms sample, across
// several replacements; static-creds leaves no lease behind, while creds
// reads do; and no read waited on the upstream once the role was warm.
func TestStaticCreds_AgentTemplateFollowsEachReplacementWithoutLeases(t *testing.T) {
	requireVault(t)
	t.Parallel()
	fake := startFake(t, fakeupstream.Options{TokenLifetime: 30 * time.Second})
	v := startDevVault(t)
	v.registerPlugin(pluginV1)
	v.enable("mapsindoors", pluginV1)
	v.configure("mapsindoors", fake, nil)
	v.mustCLI("write", "mapsindoors/roles/agent", "ttl=0")

	rendered, _ := startTemplateAgent(t, v, "mapsindoors/static-creds/agent")

	eventually(t, 30*time.Second, "the first render", func() bool {
		b, err := os.ReadFile(rendered)
		return err == nil && len(b) > 0
	})
	// 30 s tokens are replaced about every 10 s (current for 12 s, the
	// next fetched 2.4 s ahead): over 45 s, at least four replacements.
	seen := map[string]bool{}
	samples := 0
	for end := time.Now().Add(45 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		b, err := os.ReadFile(rendered)
		require.NoError(t, err)
		tok := strings.TrimSpace(string(b))
		require.True(t, fake.TokenLive(tok), "the rendered token is live at the fake")
		exp, _ := fake.TokenExpiry(tok)
		require.Greater(t, time.Until(exp), time.Second, "and not about to die")
		seen[tok] = true
		samples++
	}
	t.Logf("%d samples, %d tokens rendered", samples, len(seen))
	require.GreaterOrEqual(t, len(seen), 5, "the template was re-rendered at each replacement")

	// No lease for static-creds; creds leaves one per read.
	code, _ := v.api("LIST", "sys/leases/lookup/mapsindoors/static-creds/", nil)
	require.Equal(t, http.StatusNotFound, code, "static-creds reads leave no lease")
	for range 3 {
		readCreds(t, v, fake, "mapsindoors", "agent")
	}
	code, body := v.api("LIST", "sys/leases/lookup/mapsindoors/creds/agent/", nil)
	require.Equal(t, http.StatusOK, code)
	require.Len(t, dataOf(t, body)["keys"], 3, "each creds read leaves a lease")

	status := dataOf(t, v.cliJSON("read", "mapsindoors/status"))
	require.Equal(t, float64(0), status["reads_waited_on_upstream"], "no read of the warm role waited on the upstream")
	require.Equal(t, float64(1), status["cold_reads"])
	require.GreaterOrEqual(t, status["fetch_ahead_requests"], float64(4))
}

// static-creds through Vault: the fields Agent and the Vault Secrets
// Operator read, no lease, the token HMAC'd in the audit log, and a
// rotate-role write that makes the next read get a new token.
func TestStaticCreds_FieldsAuditAndRotateRole(t *testing.T) {
	requireVault(t)
	t.Parallel()
	v, fake := startMapsIndoorsMount(t, nil)
	v.mustCLI("write", "mapsindoors/roles/app", "ttl=5m")
	auditLog := filepath.Join(t.TempDir(), "audit.log")
	v.mustCLI("audit", "enable", "file", "file_path="+auditLog)

	resp := v.cliJSON("read", "mapsindoors/static-creds/app")
	require.Empty(t, resp["lease_id"])
	require.Equal(t, float64(0), resp["lease_duration"])
	data := dataOf(t, resp)
	token := data["access_token"].(string)
	require.True(t, fake.TokenLive(token))
	// An hour's token, 5 minute ttl: replaced when 6 minutes are left.
	require.InDelta(t, 54*60, data["ttl"], 2)
	require.Equal(t, float64(54*60), data["rotation_period"])
	_, err := time.Parse(time.RFC3339Nano, data["last_vault_rotation"].(string))
	require.NoError(t, err)

	audit, err := os.ReadFile(auditLog)
	require.NoError(t, err)
	// Searched without require.Contains, which would print the whole log
	// (and the token) on failure.
	require.True(t, strings.Contains(string(audit), "mapsindoors/static-creds/app"), "the audit log records the static-creds read")
	require.False(t, strings.Contains(string(audit), token), "the audit log HMACs the token")

	before := fake.Hits(fakeupstream.EndpointToken)
	v.mustCLI("write", "-f", "mapsindoors/rotate-role/app")
	fresh := dataOf(t, v.cliJSON("read", "mapsindoors/static-creds/app"))["access_token"].(string)
	require.True(t, fresh != token, "after rotate-role the next read gets a new token")
	require.Equal(t, before+1, fake.Hits(fakeupstream.EndpointToken))
}
