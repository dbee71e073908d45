package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

// TestHA_RaftClusterForwardsFailsOverAndRotatesOnce runs three Vault
// servers with integrated storage on loopback, the plugin registered on
// all of them.
func TestHA_RaftClusterForwardsFailsOverAndRotatesOnce(t *testing.T) {
	requireVault(t)
	t.Parallel()
	fake := startFake(t, fakeupstream.Options{})
	dir := t.TempDir()

	nodes := make([]*vaultServer, 3)
	for i := range nodes {
		name := fmt.Sprintf("node%d", i+1)
		storage := fmt.Sprintf("storage \"raft\" {\n  path    = %q\n  node_id = %q\n}\n", mkdir(t, filepath.Join(dir, name)), name)
		nodes[i] = newConfiguredServer(t, name, dir, storage, freePort(t), freePort(t))
		nodes[i].startConfigured()
	}
	key := initVault(t, nodes[0])
	unseal(t, nodes[0], key)
	for _, n := range nodes[1:] {
		n.token = nodes[0].token
		n.mustCLI("operator", "raft", "join", nodes[0].addr)
		unseal(t, n, key)
	}
	leader := nodes[0]
	eventually(t, 90*time.Second, "three raft voters", func() bool {
		out, err := leader.cli("operator", "raft", "list-peers", "-format=json")
		if err != nil {
			return false
		}
		servers, _ := dataOf(t, decode(t, out))["config"].(map[string]any)["servers"].([]any)
		voters := 0
		for _, s := range servers {
			if s.(map[string]any)["voter"] == true {
				voters++
			}
		}
		return voters == 3
	})

	// The plugin catalog and the mount live in replicated storage; the
	// binary is in every node's plugin directory.
	leader.registerPlugin(pluginV1)
	leader.enable("mapsindoors", pluginV1)
	leader.configure("mapsindoors", fake, nil)
	leader.mustCLI("write", "mapsindoors/roles/app", "ttl=10m")

	// A standby forwards creds reads and rotations to the active node.
	standby := nodes[1]
	readCreds(t, standby, fake, "mapsindoors", "app")
	old := fake.Credentials()
	rot := dataOf(t, standby.cliJSON("write", "-f", "mapsindoors/rotate-root"))
	require.Equal(t, true, rot["previous_deleted"])
	require.False(t, fake.SecretWorks(old.ClientSecret))
	cfgBefore := dataOf(t, standby.cliJSON("read", "mapsindoors/config"))

	// Stop the active node: another one takes over, cold, from storage.
	leader.stop()
	var active *vaultServer
	eventually(t, 90*time.Second, "a new active node", func() bool {
		for _, n := range nodes[1:] {
			code, body := n.api("GET", "sys/leader", nil)
			if code == 200 && body["is_self"] == true {
				active = n
				return true
			}
		}
		return false
	})
	require.Equal(t, cfgBefore, dataOf(t, active.cliJSON("read", "mapsindoors/config")))
	readCreds(t, active, fake, "mapsindoors", "app")
	for _, n := range nodes[1:] {
		readCreds(t, n, fake, "mapsindoors", "app")
	}

	// A scheduled rotation runs on the active node only: however many
	// nodes there are, each due rotation creates one secret and exactly
	// the stored one is left live upstream.
	creates := fake.Hits(fakeupstream.EndpointCreateSecret)
	active.mustCLI("write", "mapsindoors/config", "rotation_period=1m")
	start := time.Now()
	eventually(t, 4*time.Minute, "two scheduled rotations", func() bool {
		return fake.Hits(fakeupstream.EndpointCreateSecret) >= creates+2
	})
	elapsed := time.Since(start)
	cfg := dataOf(t, active.cliJSON("read", "mapsindoors/config"))
	ids := []string{}
	for _, s := range fake.Secrets() {
		ids = append(ids, s.ID)
	}
	require.Equal(t, []string{cfg["client_secret_id"].(string)}, ids, "one live secret: no rotation ran twice")
	maxRuns := int(elapsed/time.Minute) + 2
	require.LessOrEqual(t, fake.Hits(fakeupstream.EndpointCreateSecret)-creates, maxRuns)
	readCreds(t, active, fake, "mapsindoors", "app")
}

func mkdir(t *testing.T, path string) string {
	t.Helper()
	require.NoError(t, os.MkdirAll(path, 0o700))
	return path
}
