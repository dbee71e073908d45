package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

// connectProxy is an HTTPS egress proxy on loopback: it answers CONNECT,
// records the target, and tunnels to the fake (wherever the target's name
// points, it dials the fake's loopback port).
type connectProxy struct {
	ln      net.Listener
	mu      sync.Mutex
	targets []string
}

func startConnectProxy(t *testing.T) *connectProxy {
	t.Helper()
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &connectProxy{ln: ln}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(conn)
		}
	}()
	t.Cleanup(func() { _ = ln.Close() })
	return p
}

func (p *connectProxy) URL() string { return "http://" + p.ln.Addr().String() }

func (p *connectProxy) serve(client net.Conn) {
	defer func() { _ = client.Close() }() // the tunnel is over either way
	br := bufio.NewReader(client)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	if req.Method != http.MethodConnect {
		_, _ = io.WriteString(client, "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
		return
	}
	p.mu.Lock()
	p.targets = append(p.targets, req.Host)
	p.mu.Unlock()
	_, port, err := net.SplitHostPort(req.Host)
	if err != nil {
		return
	}
	upstream, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(context.Background(), "tcp", net.JoinHostPort("127.0.0.1", port))
	if err != nil {
		_, _ = io.WriteString(client, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
		return
	}
	defer func() { _ = upstream.Close() }()
	if _, err := io.WriteString(client, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(upstream, br); done <- struct{}{} }()
	go func() { _, _ = io.Copy(client, upstream); done <- struct{}{} }()
	<-done
}

func (p *connectProxy) Targets() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.targets...)
}

// docs/egress-proxy.md: the plugin registered with -env HTTPS_PROXY=...
// reaches the upstream only through the proxy. Go's proxy rules never
// proxy loopback names, so the mount names the fake "localhost." (with the
// root dot: not loopback to the proxy rules, still the fake's certificate).
func TestGuides_EgressProxyFromThePluginsEnvironment(t *testing.T) {
	requireVault(t)
	t.Parallel()
	fake := startFake(t, fakeupstream.Options{})
	proxy := startConnectProxy(t)
	v := startDevVault(t)
	v.mustCLI("plugin", "register", "-sha256="+pluginV1.SHA256, "-version="+pluginV1.Version, "-command="+pluginV1.Command,
		"-env", "HTTPS_PROXY="+proxy.URL(), "secret", pluginName)
	v.enable("mapsindoors", pluginV1)

	cfg := fake.PluginConfig("mapsindoors")
	for _, k := range []string{"token_url", "rotation_url"} {
		cfg[k] = strings.Replace(cfg[k].(string), "https://127.0.0.1:", "https://localhost.:", 1)
	}
	v.writeFile("mapsindoors/config", cfg) // verify_connection logs in through the proxy
	v.mustCLI("write", "mapsindoors/roles/app", "ttl=5m")
	readCreds(t, v, fake, "mapsindoors", "app")
	require.Equal(t, true, dataOf(t, v.cliJSON("read", "mapsindoors/verify"))["ok"])
	v.mustCLI("write", "-f", "mapsindoors/rotate-root")

	_, port, err := net.SplitHostPort(strings.TrimPrefix(fake.URL(), "https://"))
	require.NoError(t, err)
	targets := proxy.Targets()
	require.NotEmpty(t, targets)
	for _, target := range targets {
		require.Equal(t, "localhost.:"+port, target, "every upstream connection went through the proxy")
	}

	// Without the proxy there is no way out: the check says so.
	require.NoError(t, proxy.ln.Close())
	got := dataOf(t, v.cliJSON("read", "mapsindoors/verify"))
	require.Equal(t, false, got["ok"])
	require.Contains(t, got["error"], "proxyconnect")
}

// docs/terraform.md: the HTTP API calls the Vault provider makes for
// vault_plugin, vault_mount, vault_generic_endpoint and the ephemeral
// vault_generic_secret, in that order, and the read-back Terraform compares
// to what it wrote. Terraform itself cannot be installed here.
func TestGuides_TerraformAPICallsShowNoDrift(t *testing.T) {
	requireVault(t)
	t.Parallel()
	fake := startFake(t, fakeupstream.Options{})
	v := startDevVault(t)

	// vault_plugin
	code, body := v.api(http.MethodPut, "sys/plugins/catalog/secret/"+pluginName, map[string]any{
		"sha256": pluginV1.SHA256, "command": pluginV1.Command, "version": pluginV1.Version,
	})
	require.Equal(t, http.StatusNoContent, code, "%v", body["errors"])
	// vault_mount with plugin_version
	code, body = v.api(http.MethodPost, "sys/mounts/mapsindoors", map[string]any{
		"type": pluginName, "plugin_version": pluginV1.Version, "description": "MapsIndoors tokens",
	})
	require.Equal(t, http.StatusNoContent, code, "%v", body["errors"])
	code, body = v.api(http.MethodGet, "sys/mounts/mapsindoors", nil)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, pluginV1.Version, body["data"].(map[string]any)["plugin_version"])

	// vault_generic_endpoint "credentials": what a login needs, written once
	// with disable_read and ignore_changes, because rotation replaces the
	// secret and its id inside Vault.
	credentials := fake.PluginConfig("mapsindoors")
	code, body = v.api(http.MethodPut, "mapsindoors/config", credentials)
	// A config write answers with what it stored (never a secret), so that
	// Vault's warnings, such as one about an unknown field, reach the caller.
	require.Equal(t, http.StatusOK, code, "%v", body["errors"])
	// vault_generic_endpoint "settings", with ignore_absent_fields:
	// durations in seconds and lists as lists read back as written.
	settings := map[string]any{
		"token_url":             credentials["token_url"],
		"rotation_url":          credentials["rotation_url"],
		"ca_cert":               credentials["ca_cert"],
		"scopes":                []string{"integration"},
		"request_timeout":       20,
		"rotation_period":       86400,
		"previous_secret_grace": 3600,
	}
	requireNoDrift(t, v, "mapsindoors/config", settings, true)
	role := map[string]any{"ttl": 300, "scopes": []string{"integration"}, "audience": "https://api.example"}
	requireNoDrift(t, v, "mapsindoors/roles/app", role, true)

	// A rotation changes nothing the settings compare, and applying them
	// again keeps the rotated secret.
	v.mustCLI("write", "-f", "mapsindoors/rotate-root")
	require.NotEqual(t, credentials["client_secret_id"], v.readConfig("mapsindoors")["client_secret_id"])
	settings["request_timeout"] = 25
	requireNoDrift(t, v, "mapsindoors/config", settings, true)
	require.Equal(t, true, dataOf(t, v.cliJSON("read", "mapsindoors/verify"))["ok"])

	// A duration written as "24h" is stored the same, but reads back as
	// 86400: Terraform would plan a change on every run.
	requireNoDrift(t, v, "mapsindoors/config", map[string]any{"rotation_period": "24h"}, false)
	// So does a comma-separated scope string, which reads back as a list.
	requireNoDrift(t, v, "mapsindoors/roles/app", map[string]any{"scopes": "integration"}, false)

	// ephemeral "vault_generic_secret": a plain read, leased and not
	// renewable, as data; the provider does not revoke it on close.
	code, body = v.api(http.MethodGet, "mapsindoors/creds/app", nil)
	require.Equal(t, http.StatusOK, code, "%v", body["errors"])
	require.Equal(t, false, body["renewable"])
	require.Positive(t, body["lease_duration"])
	require.True(t, fake.TokenLive(body["data"].(map[string]any)["access_token"].(string)))

	// terraform destroy: the endpoints, then the mount (which revokes the
	// creds leases first).
	for _, p := range []string{"mapsindoors/roles/app", "mapsindoors/config", "sys/mounts/mapsindoors"} {
		code, body = v.api(http.MethodDelete, p, nil)
		if p == "mapsindoors/config" {
			// The rotation's replaced secret is still in its grace: the
			// delete says it stays live upstream.
			require.Equal(t, http.StatusOK, code, "%s: %v", p, body["errors"])
			require.Contains(t, fmt.Sprint(body["warnings"]), "stay live upstream")
			continue
		}
		require.Equal(t, http.StatusNoContent, code, "%s: %v", p, body["errors"])
	}
}

// requireNoDrift writes data to path as vault_generic_endpoint does, reads
// it back as its Read does with ignore_absent_fields = true (fields the
// read does not return, such as write-only secrets, keep their written
// value), and checks whether Terraform would see a difference.
func requireNoDrift(t *testing.T, v *vaultServer, path string, data map[string]any, wantSame bool) {
	t.Helper()
	code, body := v.api(http.MethodPut, path, data)
	require.Contains(t, []int{http.StatusOK, http.StatusNoContent}, code, "%v", body["errors"])
	code, body = v.api(http.MethodGet, path, nil)
	require.Equal(t, http.StatusOK, code)
	read := body["data"].(map[string]any)
	written := normalizeJSON(t, data)
	relevant := normalizeJSON(t, data)
	for k, val := range read {
		if _, ok := relevant[k]; ok {
			relevant[k] = val
		}
	}
	same := jsonString(t, written) == jsonString(t, relevant)
	if wantSame {
		for k := range written {
			require.True(t, assert.ObjectsAreEqual(written[k], relevant[k]), "%s: %s reads back differently", path, k) // not Equal: it may be a secret
		}
	}
	require.Equal(t, wantSame, same, "%s: whether Terraform sees no drift", path)
}

// normalizeJSON is Terraform's NormalizeDataJSON: through JSON and back.
func normalizeJSON(t *testing.T, data map[string]any) map[string]any {
	t.Helper()
	var out map[string]any
	require.NoError(t, json.Unmarshal([]byte(jsonString(t, data)), &out))
	return out
}

func jsonString(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}

// docs/vault-secrets-operator.md: the calls a VaultDynamicSecret makes with
// the Vault token of its VaultAuth, and what happens to its leases when that
// token ends. Kubernetes and the operator cannot run here. The mount is a
// CameraManager one, whose revocations are visible upstream as logouts.
func TestGuides_VSOLeasesEndWithTheConsumersToken(t *testing.T) {
	requireVault(t)
	t.Parallel()
	fake := startFake(t, fakeupstream.Options{})
	v := startDevVault(t)
	v.registerPlugin(pluginV1)
	v.enable("mapsindoors", pluginV1)
	v.writeFile("mapsindoors/config", fake.PluginConfig("cameramanager"))
	v.mustCLI("write", "mapsindoors/roles/app", "ttl=10m")

	// What Kubernetes auth would hand the operator: a token with the vso
	// policy and a life of its own.
	root := v.as(t, v.token)
	vso := v.as(t, root.tokenWithPolicy("vso", "-ttl=1h"))

	// A sync: GET <mount>/<path>; the lease is not renewable, so the
	// operator syncs again at renewalPercent of lease_duration.
	sync := func() (token, lease string) {
		code, body := vso.api(http.MethodGet, "mapsindoors/creds/app", nil)
		require.Equal(t, http.StatusOK, code, "%v", body["errors"])
		require.Equal(t, false, body["renewable"])
		require.EqualValues(t, 600, body["lease_duration"])
		return body["data"].(map[string]any)["access_token"].(string), body["lease_id"].(string)
	}
	first, firstLease := sync()
	second, secondLease := sync()
	require.True(t, first != second, "each lease has its own token") // not NotEqual: it would print them

	// revoke: true — the operator revokes the lease it replaced.
	code, body := vso.api(http.MethodPut, "sys/leases/revoke", map[string]any{"lease_id": firstLease})
	require.Equal(t, http.StatusNoContent, code, "%v", body["errors"])
	eventually(t, 30*time.Second, "the replaced lease's token logged out", func() bool { return !fake.TokenLive(first) })
	require.True(t, fake.TokenLive(second))

	// The operator's Vault token ends (expiry, a new login, a revoke): its
	// leases end with it, and the next sync reads anew with the new token.
	root.mustCLI("token", "revoke", vso.token)
	eventually(t, 30*time.Second, "the leases of the revoked token to end", func() bool { return !fake.TokenLive(second) })
	_, err := root.cli("lease", "lookup", secondLease)
	require.Error(t, err, "the lease is gone")
}
