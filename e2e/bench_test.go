package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

// BenchmarkVaultRead compares, through a real Vault dev server's HTTP API,
// a warm creds read with a read of a plugin that does nothing but return a
// leased secret of the same shape (the gRPC hop and the lease write are
// Vault's cost; the difference is this plugin's) and with a read of
// Vault's built-in KV. Run with: make bench-e2e.
func BenchmarkVaultRead(b *testing.B) {
	requireVault(b)
	noop := buildNoopPlugin(b)
	fake, err := fakeupstream.Start(fakeupstream.Options{})
	require.NoError(b, err)
	defer fake.Close()
	v := startDevVault(b)
	v.registerPlugin(pluginV1)
	v.enable("mapsindoors", pluginV1)
	v.configure("mapsindoors", fake, nil)
	v.mustCLI("write", "mapsindoors/roles/app", "ttl=5m")
	v.mustCLI("kv", "put", "secret/app", "value=x")
	v.mustCLI("plugin", "register", "-sha256="+noop.SHA256, "-version="+noop.Version, "-command="+noop.Command, "secret", "noop")
	v.mustCLI("secrets", "enable", "-path=noop", "-plugin-version="+noop.Version, "noop")

	for _, path := range []string{"mapsindoors/creds/app", "noop/creds/app", "secret/data/app"} {
		b.Run(path, func(b *testing.B) {
			before := fake.Hits(fakeupstream.EndpointToken)
			b.RunParallel(func(pb *testing.PB) {
				client := &http.Client{}
				for pb.Next() {
					req, _ := http.NewRequest(http.MethodGet, v.addr+"/v1/"+path, nil)
					req.Header.Set("X-Vault-Token", v.token)
					resp, err := client.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						b.Errorf("%s: HTTP %d", path, resp.StatusCode)
						return
					}
				}
			})
			b.ReportMetric(float64(fake.Hits(fakeupstream.EndpointToken)-before)/float64(b.N), "upstream-requests/op")
		})
	}
}

// buildNoopPlugin builds ./noopplugin into the shared plugin directory.
func buildNoopPlugin(b *testing.B) pluginBuild {
	b.Helper()
	out := filepath.Join(pluginDir, "noop-plugin")
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, "./noopplugin")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	require.NoError(b, cmd.Run())
	data, err := os.ReadFile(out)
	require.NoError(b, err)
	sum := sha256.Sum256(data)
	return pluginBuild{Version: "v0.0.1", Command: "noop-plugin", SHA256: hex.EncodeToString(sum[:])}
}
