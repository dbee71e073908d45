package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

// TestHA_RaftClusterForwardsFailsOverAndRotatesOncePerScheduledMinute runs three Vault
// servers with integrated storage on loopback, the plugin registered on
// all of them.
func TestHA_RaftClusterForwardsFailsOverAndRotatesOncePerScheduledMinute(t *testing.T) {
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

	// A one-minute cron schedule: scheduled rotations run on the active
	// node only, once per scheduled minute, and one that comes due during a
	// fail-over runs on the new active node.
	var mu sync.Mutex
	var creates []time.Time
	fake.OnRequest(func(ep fakeupstream.Endpoint, _ *http.Request) {
		if ep == fakeupstream.EndpointCreateSecret {
			mu.Lock()
			creates = append(creates, time.Now())
			mu.Unlock()
		}
	})
	t.Cleanup(func() { fake.OnRequest(nil) })
	createdSince := func(since time.Time) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, c := range creates {
			if c.After(since) {
				n++
			}
		}
		return n
	}
	leader.mustCLI("write", "mapsindoors/config", "rotation_schedule=* * * * *")
	eventually(t, 3*time.Minute, "a scheduled rotation on the first active node", func() bool {
		return createdSince(time.Time{}) >= 1
	})

	// Stop the active node: another one takes over, cold, from storage.
	leader.stop()
	stopped := time.Now()
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
	cfg := active.readConfig("mapsindoors")
	require.Equal(t, "* * * * *", cfg["rotation_schedule"], "the new active node serves the same config")
	require.Equal(t, fake.Credentials().ClientID, cfg["client_id"])
	readCreds(t, active, fake, "mapsindoors", "app")
	for _, n := range nodes[1:] {
		readCreds(t, n, fake, "mapsindoors", "app")
	}
	eventually(t, 3*time.Minute, "a scheduled rotation on the new active node", func() bool {
		return createdSince(stopped) >= 1
	})
	active.mustCLI("write", "mapsindoors/config", "disable_automated_rotation=true")
	mu.Lock()
	times := slices.Clone(creates)
	mu.Unlock()
	for i := 1; i < len(times); i++ {
		require.Greater(t, times[i].Sub(times[i-1]), 40*time.Second, "no scheduled minute rotated twice: %v", times)
	}

	// Let a rotation that was under way finish, then exactly the stored
	// secret is live: every replaced one was deleted.
	eventually(t, time.Minute, "one live secret", func() bool {
		cfg := active.readConfig("mapsindoors")
		ids := secretIDs(fake)
		return len(ids) == 1 && ids[0] == cfg["client_secret_id"] && len(cfg["pending_deletions"].([]any)) == 0
	})
	readCreds(t, active, fake, "mapsindoors", "app")
}

func mkdir(t *testing.T, path string) string {
	t.Helper()
	require.NoError(t, os.MkdirAll(path, 0o700))
	return path
}
