package e2e

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

// as is the server seen by test t with another token.
func (v *vaultServer) as(t testing.TB, token string) *vaultServer {
	cp := *v
	cp.t, cp.token = t, token
	return &cp
}

// tokenWithPolicy writes a policy from docs/policies and creates a token
// that has it (and Vault's default policy, as every token does).
func (v *vaultServer) tokenWithPolicy(policy string, extra ...string) string {
	v.t.Helper()
	v.mustCLI("policy", "write", policy, filepath.Join("..", "docs", "policies", policy+".hcl"))
	out := decodeJSON(v.t, v.mustCLI(append([]string{"token", "create", "-format=json", "-policy=" + policy}, extra...)...))
	auth, ok := out["auth"].(map[string]any)
	require.True(v.t, ok)
	return auth["client_token"].(string)
}

func decodeJSON(t testing.TB, s string) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(s), &m), "the CLI printed no JSON object")
	return m
}

// leaseOf reads creds as root and returns the lease's id.
func (v *vaultServer) leaseOf(path string) string {
	v.t.Helper()
	return v.cliJSON("read", path)["lease_id"].(string)
}

// The policies in docs/policies, each given to a token that tries every
// operation on the mount through the real Vault: what the policy's comment
// says it allows succeeds, and everything else is refused with a 403.
func TestPolicies_EachAllowsWhatItSaysAndNothingElse(t *testing.T) {
	requireVault(t)
	t.Parallel()
	fake := startFake(t, fakeupstream.Options{})
	v := startDevVault(t)
	v.mustCLI("audit", "enable", "file", "file_path="+filepath.Join(t.TempDir(), "audit.log"))
	v.registerPlugin(pluginV1)
	v.enable("mapsindoors", pluginV1)
	v.configure("mapsindoors", fake, nil)
	v.mustCLI("write", "mapsindoors/roles/app", "ttl=5m")
	v.mustCLI("write", "mapsindoors/roles/other", "ttl=5m")

	type operation struct {
		name, method, path string
		// body is the request's, made by root as the subtest sees it.
		body func(root *vaultServer) map[string]any
	}
	none := func(*vaultServer) map[string]any { return nil }
	ops := []operation{
		{"read creds/app", http.MethodGet, "mapsindoors/creds/app", none},
		{"read creds/other", http.MethodGet, "mapsindoors/creds/other", none},
		{"read static-creds/app", http.MethodGet, "mapsindoors/static-creds/app", none},
		{"read static-creds/other", http.MethodGet, "mapsindoors/static-creds/other", none},
		{"rotate-role app", http.MethodPost, "mapsindoors/rotate-role/app", none},
		{"read config", http.MethodGet, "mapsindoors/config", none},
		{"write config", http.MethodPost, "mapsindoors/config", func(*vaultServer) map[string]any { return map[string]any{"request_timeout": 20} }},
		{"read role", http.MethodGet, "mapsindoors/roles/app", none},
		{"list roles", "LIST", "mapsindoors/roles", none},
		{"write role", http.MethodPost, "mapsindoors/roles/scratch", func(*vaultServer) map[string]any { return map[string]any{"ttl": 60} }},
		{"delete role", http.MethodDelete, "mapsindoors/roles/scratch", none},
		{"rotate-root", http.MethodPost, "mapsindoors/rotate-root", none},
		{"read verify", http.MethodGet, "mapsindoors/verify", none},
		{"read status", http.MethodGet, "mapsindoors/status", none},
		{"list client-secrets", "LIST", "mapsindoors/client-secrets", none},
		{"read client-secrets", http.MethodGet, "mapsindoors/client-secrets", none},
		{"read pending deletions", http.MethodGet, "mapsindoors/client-secrets/pending", none},
		{"settle pending deletions", http.MethodPost, "mapsindoors/client-secrets/pending", none},
		{"revoke the mount's leases", http.MethodPut, "sys/leases/revoke-prefix/mapsindoors/creds", none},
		{"revoke a role's leases", http.MethodPut, "sys/leases/revoke-prefix/mapsindoors/creds/app", none},
		{"revoke a lease", http.MethodPut, "sys/leases/revoke", func(root *vaultServer) map[string]any {
			return map[string]any{"lease_id": root.leaseOf("mapsindoors/creds/other")}
		}},
		{"hash for the audit log", http.MethodPut, "sys/audit-hash/file", func(*vaultServer) map[string]any { return map[string]any{"input": "x"} }},
		{"tune the mount", http.MethodPost, "sys/mounts/mapsindoors/tune", func(*vaultServer) map[string]any {
			return map[string]any{"audit_non_hmac_response_keys": []string{"role"}}
		}},
		{"delete config", http.MethodDelete, "mapsindoors/config", none},
	}
	allowed := map[string][]string{
		"app": {"read creds/app", "read static-creds/app"},
		"operator": {"read config", "write config", "read role", "list roles", "write role", "delete role", "rotate-root",
			"read verify", "read status", "list client-secrets", "read client-secrets", "read pending deletions", "settle pending deletions",
			"rotate-role app", "revoke the mount's leases", "revoke a role's leases", "delete config"},
		"auditor": {"read config", "read role", "list roles", "read verify", "read status", "list client-secrets",
			"read client-secrets", "read pending deletions", "hash for the audit log"},
		"monitor": {"read verify", "read status"},
		"vso":     {"read creds/app", "read static-creds/app", "revoke a lease"},
	}
	// The operator goes last: it rotates the secret and deletes the config.
	for _, policy := range []string{"app", "auditor", "monitor", "vso", "operator"} {
		t.Run(policy, func(t *testing.T) {
			root := v.as(t, v.token)
			as := v.as(t, root.tokenWithPolicy(policy))
			for _, op := range ops {
				code, body := as.api(op.method, op.path, op.body(root))
				if slices.Contains(allowed[policy], op.name) {
					require.True(t, code/100 == 2, "%s may %s: got %d %v", policy, op.name, code, body["errors"])
				} else {
					require.Equal(t, http.StatusForbidden, code, "%s may not %s: got %d", policy, op.name, code)
				}
			}
		})
	}
}
