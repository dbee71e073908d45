package e2e

import (
	"io"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

// BenchmarkVaultRead compares, through a real Vault dev server's HTTP API,
// a warm creds read (a leased, non-renewable secret) with a read of
// Vault's built-in KV: the gRPC hop and the lease write are Vault's cost,
// the rest is the plugin's. Run with: make bench-e2e.
func BenchmarkVaultRead(b *testing.B) {
	requireVault(b)
	fake, err := fakeupstream.Start(fakeupstream.Options{})
	require.NoError(b, err)
	defer fake.Close()
	v := startDevVault(b)
	v.registerPlugin(pluginV1)
	v.enable("mapsindoors", pluginV1)
	v.configure("mapsindoors", fake, nil)
	v.mustCLI("write", "mapsindoors/roles/app", "ttl=5m")
	v.mustCLI("kv", "put", "secret/app", "value=x")

	for _, path := range []string{"mapsindoors/creds/app", "secret/data/app"} {
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
