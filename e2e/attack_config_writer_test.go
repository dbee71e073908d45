package e2e

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

// The attacks of an operator whose only right on a mount is `update` on its
// config (no read, no create, no delete), carried out through a real Vault
// server: Vault's ACL decides what the token may do, and a file audit
// device records every attempt. The engine's own tests of these attacks
// (attack_config_writer_test.go in the root package) call the backend
// directly; these show that Vault hands the engine an update for a write
// to an existing config, refuses the delete and the create that the
// engine's rules send the attacker to, and that nothing the attacker tries
// reaches a host of theirs or puts a secret into the audit log.
//
// Every write here runs with verify_connection on (Vault's default): that
// login is the first request a config write makes.

// writerName is the config writer's token display name; Vault's audit log
// shows it as "token-" + writerName.
const writerName = "config-writer"

// freshMount is a mount with no config yet, whose config the writer's
// policy covers too: a write there is a create.
const freshMount = "fresh"

// configAttack is a mount under attack: the root view of the server, the
// writer's view, the real server, the attacker's host, and every refusal
// the writer met, in order, which the audit log must show.
type configAttack struct {
	mount    string
	root     *vaultServer
	writer   *vaultServer
	fake     *fakeupstream.Server
	attacker *fakeupstream.Recorder
	auditLog string
	refused  []refusal
}

// refusal is a request of the writer's that Vault or the engine refused.
type refusal struct {
	operation, path string
	// fields are the fields the request wrote.
	fields []string
	// message is the error the writer got: the engine's 400 message, or
	// Vault's "permission denied".
	message string
}

// startConfigAttack starts a dev server with a file audit device, the
// plugin at mount configured by configure (as root) with a role "app"
// whose creds read works, a second mount with no config, and a token whose
// policy allows only `update` on both mounts' config.
func startConfigAttack(t *testing.T, mount string, configure func(v *vaultServer, fake *fakeupstream.Server)) *configAttack {
	t.Helper()
	fake := startFake(t, fakeupstream.Options{})
	v := startDevVault(t)
	auditLog := filepath.Join(t.TempDir(), "audit.log")
	v.mustCLI("audit", "enable", "file", "file_path="+auditLog)
	v.registerPlugin(pluginV1)
	v.enable(mount, pluginV1)
	v.enable(freshMount, pluginV1)
	configure(v, fake)
	v.mustCLI("write", mount+"/roles/app", "ttl=5m")
	a := &configAttack{mount: mount, root: v, fake: fake, auditLog: auditLog}
	a.requireServesCreds(t)

	policy := fmt.Sprintf("path %q {\n  capabilities = [\"update\"]\n}\npath %q {\n  capabilities = [\"update\"]\n}\n",
		mount+"/config", freshMount+"/config")
	file := filepath.Join(t.TempDir(), "config-writer.hcl")
	require.NoError(t, os.WriteFile(file, []byte(policy), 0o600))
	v.mustCLI("policy", "write", writerName, file)
	out := decodeJSON(t, v.mustCLI("token", "create", "-format=json", "-policy="+writerName, "-display-name="+writerName))
	auth, ok := out["auth"].(map[string]any)
	require.True(t, ok)
	a.writer = v.as(t, auth["client_token"].(string))

	a.attacker = fakeupstream.StartRecorder(http.StatusBadRequest)
	t.Cleanup(a.attacker.Close)

	// The premise: the token may update the config, and may not read it.
	a.requireForbidden(t, "read", http.MethodGet, mount+"/config", nil)
	code, msg := a.request(http.MethodPost, mount+"/config", map[string]any{"request_timeout": 20})
	require.True(t, code/100 == 2, "the config writer may update the config: got %d %s", code, msg)
	return a
}

// request is a request of the attacker's: Vault's status and error text.
func (a *configAttack) request(method, path string, data map[string]any) (int, string) {
	code, body := a.writer.api(method, path, data)
	errs, _ := body["errors"].([]any)
	return code, fmt.Sprint(errs...)
}

// requireRefused checks that Vault let the write through to the engine
// (not a 403), that the engine refused it with a 400 whose message says
// each of mentions, that nothing was stored, and that the attacker's host
// received nothing.
func (a *configAttack) requireRefused(t *testing.T, data map[string]any, mentions ...string) {
	t.Helper()
	before := a.root.readConfig(a.mount)
	code, msg := a.request(http.MethodPost, a.mount+"/config", data)
	require.Equal(t, http.StatusBadRequest, code, "the engine refuses the write: %s", msg)
	for _, m := range mentions {
		require.Contains(t, msg, m)
	}
	a.refused = append(a.refused, refusal{"update", a.mount + "/config", slices.Sorted(maps.Keys(data)), msg})
	require.Equal(t, before, a.root.readConfig(a.mount), "nothing was stored")
	a.requireNothingHarvested(t)
}

// requireForbidden checks that Vault's ACL refuses the writer's request
// (operation is how Vault names it).
func (a *configAttack) requireForbidden(t *testing.T, operation, method, path string, data map[string]any) {
	t.Helper()
	code, msg := a.request(method, path, data)
	require.Equal(t, http.StatusForbidden, code, "%s %s", operation, path)
	require.Contains(t, msg, "permission denied")
	a.refused = append(a.refused, refusal{operation, path, slices.Sorted(maps.Keys(data)), msg})
}

// requireNothingHarvested checks what the attacker's host got: nothing,
// and any assertion it had got would not buy a token at the real server.
func (a *configAttack) requireNothingHarvested(t *testing.T) {
	t.Helper()
	for _, assertion := range a.attacker.Assertions() {
		live, err := a.fake.ReplayAssertion(t.Context(), a.fake.Credentials().ClientID, assertion)
		require.NoError(t, err)
		require.False(t, live, "an assertion the attacker's host received buys a token at the real server")
	}
	// Counts and paths only: what the host got may be a secret, and test
	// output is no place for one.
	require.Zero(t, len(a.attacker.Credentials()), "the attacker's host received a credential")
	require.Zero(t, len(a.attacker.Received()), "the attacker's host received requests: %v", receivedPaths(a.attacker))
}

// requireDeleteAndCreateForbidden tries the two ways around the engine's
// rules, which its messages name: deleting the config, and writing a new
// one (a create, on a mount with no config). Vault's ACL refuses both
// before the engine sees them.
func (a *configAttack) requireDeleteAndCreateForbidden(t *testing.T, newConfig map[string]any) {
	t.Helper()
	a.requireForbidden(t, "delete", http.MethodDelete, a.mount+"/config", nil)
	a.requireForbidden(t, "create", http.MethodPost, freshMount+"/config", newConfig)
	code, _ := a.root.api(http.MethodGet, freshMount+"/config", nil)
	require.Equal(t, http.StatusNotFound, code, "the fresh mount has no config")
	a.requireNothingHarvested(t)
}

// controlOwnSecret is the control for requireNothingHarvested: a move that
// carries a secret of the attacker's own is theirs to make, so its
// verify_connection login reaches their host through Vault. The host gets
// that secret and nothing the real server ever issued or accepted, no
// assertion, and the failed login stores nothing.
func (a *configAttack) controlOwnSecret(t *testing.T, move map[string]any) {
	t.Helper()
	data := maps.Clone(move)
	data["client_secret"] = "the-attackers-own"
	before := a.root.readConfig(a.mount)
	code, msg := a.request(http.MethodPost, a.mount+"/config", data)
	require.Equal(t, http.StatusBadRequest, code, msg)
	require.Contains(t, msg, "verify_connection")
	a.refused = append(a.refused, refusal{"update", a.mount + "/config", slices.Sorted(maps.Keys(data)), msg})
	require.Equal(t, before, a.root.readConfig(a.mount), "nothing was stored")
	require.NotEmpty(t, a.attacker.Received(), "the attacker's host is reachable from the plugin")
	got := a.attacker.Credentials()
	require.True(t, slices.Contains(got, "client_secret=the-attackers-own"), "the host got the attacker's own secret")
	for _, c := range got {
		for _, s := range a.fake.Sensitive() {
			if strings.Contains(c, s) {
				t.Fatal("a real secret, token or assertion reached the attacker's host")
			}
		}
	}
	require.Zero(t, len(a.attacker.Assertions()), "no assertion reached the attacker's host")
}

// receivedPaths is what the attacker's host was asked for, without what
// the requests carried.
func receivedPaths(rec *fakeupstream.Recorder) []string {
	var out []string
	for _, c := range rec.Received() {
		out = append(out, c.Method+" "+c.Path)
	}
	return out
}

// requireServesCreds reads creds as root and checks the real server issued
// the token.
func (a *configAttack) requireServesCreds(t *testing.T) {
	t.Helper()
	token, _, err := a.root.credsToken(a.mount, "app")
	require.NoError(t, err)
	require.True(t, a.fake.TokenLive(token), "the real server issued the token the mount handed out")
}

// requireAudited checks the audit log: no secret the real server ever
// issued or accepted is in it (or in the server's log) in clear, nor a
// private key or an assertion; and it shows every refusal the writer met,
// in order, with the fields the request wrote (hashed) and the error the
// writer got (Vault's or the engine's), hashed as the audit device hashes
// every string: an auditor recomputes that hash with sys/audit-hash.
func (a *configAttack) requireAudited(t *testing.T) {
	t.Helper()
	for name, file := range map[string]string{"audit log": a.auditLog, "server log": a.root.logPath} {
		raw, err := os.ReadFile(file)
		require.NoError(t, err)
		text := string(raw)
		// A hit is named, never printed: it is a secret.
		for _, s := range append(a.fake.Sensitive(), "PRIVATE KEY", "eyJhbGci") {
			if strings.Contains(text, s) {
				t.Fatalf("the %s holds a secret, token, private key or assertion in clear", name)
			}
		}
	}

	var seen []auditEntry
	for _, e := range readAudit(t, a.auditLog) {
		if e.Type == "response" && e.Auth.DisplayName == "token-"+writerName && e.Response.Data["error"] != nil {
			seen = append(seen, e)
		}
	}
	require.Len(t, seen, len(a.refused), "the audit log shows every refusal the config writer met, and no other")
	for i, want := range a.refused {
		got := seen[i]
		require.Equal(t, want.operation+" "+want.path, got.Request.Operation+" "+got.Request.Path, "refusal %d", i)
		require.Equal(t, want.fields, slices.Sorted(maps.Keys(got.Request.Data)), "refusal %d: the fields written", i)
		for field, v := range got.Request.Data {
			if _, ok := v.(string); ok {
				require.True(t, isHMAC(v), "refusal %d: %s is hashed", i, field)
			}
		}
		code, hashed := a.root.api(http.MethodPost, "sys/audit-hash/file", map[string]any{"input": want.message})
		require.Equal(t, http.StatusOK, code)
		require.Equal(t, dataOf(t, hashed)["hash"], got.Response.Data["error"], "refusal %d: %q, hashed", i, want.message)
	}
}

// A client-secret mount (MapsIndoors): every move of where the stored
// secret goes needs the secret in the same write, so the writer, who cannot
// read it, is refused before any request is made; the way around it
// (delete, or create anew) is Vault's to refuse.
func TestAttackConfigWriterThroughVault_ClientSecretMountSendsNoStoredSecret(t *testing.T) {
	requireVault(t)
	t.Parallel()
	a := startConfigAttack(t, "mapsindoors", func(v *vaultServer, fake *fakeupstream.Server) {
		v.configure("mapsindoors", fake, nil)
	})
	host, hostCA := a.attacker.URL(), a.attacker.CACertPEM()
	const carry = "write client_secret"

	a.requireRefused(t, map[string]any{"token_url": host + "/token", "ca_cert": hostCA}, "token_url", carry)
	a.requireRefused(t, map[string]any{"revocation_url": host + "/revoke", "ca_cert": a.fake.CACertPEM() + hostCA}, "revocation_url", carry)
	a.requireRefused(t, map[string]any{"ca_cert": hostCA}, "ca_cert", carry)
	a.requireRefused(t, map[string]any{"provider": "oauth2", "token_url": host + "/token", "ca_cert": hostCA}, "provider", carry)
	a.requireRefused(t, map[string]any{"rotation_url": host + "/clientcredentials", "ca_cert": hostCA}, "rotation_url", carry)
	// client_secret_id names the secret the next rotation deletes.
	a.requireRefused(t, map[string]any{"client_secret_id": "another-integrations-secret-id"}, "client_secret_id", carry)
	// private_key_jwt only in a new config, which takes create.
	a.requireRefused(t, map[string]any{
		"token_auth_method": "private_key_jwt", "client_secret": "", "provider": "oauth2", "token_url": host + "/token", "ca_cert": hostCA,
	},
		"private_key_jwt can only be set on a new config", "delete the config")
	stolen := a.fake.PluginConfig("mapsindoors")
	delete(stolen, "client_secret")
	stolen["token_url"], stolen["ca_cert"] = host+"/token", hostCA
	a.requireDeleteAndCreateForbidden(t, stolen)

	// The control: with a secret of the attacker's own, the move is theirs
	// to try, and their host is reached through Vault.
	a.controlOwnSecret(t, map[string]any{"token_url": host + "/token", "ca_cert": hostCA})

	a.requireServesCreds(t)
	a.requireAudited(t)
}

// jwksFrom is the mount's JWKS fetched from Vault's unauthenticated URL,
// as a server given it as jwks_uri fetches it. It runs on the fake's
// request goroutine, so it returns errors rather than failing the test.
func jwksFrom(addr, mount string) func() ([]byte, error) {
	return func() ([]byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, addr+"/v1/"+mount+"/jwks", nil)
		if err != nil {
			return nil, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("JWKS fetch: HTTP %d", resp.StatusCode)
		}
		return io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	}
}

// A private_key_jwt mount against a real server that trusts the mount's
// JWKS by URL, so that any key the mount publishes is trusted: the
// destination of the config is fixed for its life, and moving it takes a
// delete, which Vault refuses this writer.
func TestAttackConfigWriterThroughVault_PrivateKeyJWTDestinationCannotBeMoved(t *testing.T) {
	requireVault(t)
	t.Parallel()
	a := startConfigAttack(t, "jwt", func(v *vaultServer, fake *fakeupstream.Server) {
		fake.UseJWKSSource("RS256", jwksFrom(v.addr, "jwt"))
		cfg := fake.JWTPluginConfig("private_key_jwt")
		cfg["revocation_url"] = fake.JWTRevocationURL()
		v.writeFile("jwt/config", cfg)
	})
	host, hostCA := a.attacker.URL(), a.attacker.CACertPEM()
	const fixed = "delete the config"

	moves := []struct {
		field string
		data  map[string]any
	}{
		{"token_url", map[string]any{"token_url": host + "/token", "ca_cert": hostCA, "assertion_audience": a.fake.JWTTokenURL()}},
		{"token_url", map[string]any{"token_url": host + "/token", "ca_cert": hostCA}},
		{"revocation_url", map[string]any{"revocation_url": host + "/revoke", "ca_cert": a.fake.CACertPEM() + hostCA}},
		{"ca_cert", map[string]any{"ca_cert": hostCA}},
		{"assertion_audience", map[string]any{"assertion_audience": host + "/token"}},
		{"provider", map[string]any{"provider": "mapsindoors", "token_url": host + "/token", "ca_cert": hostCA}},
	}
	for _, m := range moves {
		a.requireRefused(t, m.data, m.field, fixed)
	}
	a.requireDeleteAndCreateForbidden(t, map[string]any{
		"provider": "oauth2", "client_id": a.fake.Credentials().ClientID, "token_auth_method": "private_key_jwt",
		"token_url": host + "/token", "ca_cert": hostCA, "assertion_audience": a.fake.JWTTokenURL(),
	})

	// The control: switching away from private_key_jwt, with a secret of
	// the attacker's own, is an update the writer may try; its login goes
	// to their host, and the failed login stores nothing: the keys stay.
	a.controlOwnSecret(t, map[string]any{"token_auth_method": "client_secret_post", "token_url": host + "/token", "ca_cert": hostCA})

	a.requireServesCreds(t)
	a.requireAudited(t)
}
