package e2e

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/internal/latency"
	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

// BenchmarkVaultRead reads through a real Vault dev server's HTTP API, as
// agents do, and compares a warm creds read with a read of a plugin that
// does nothing but return a leased secret of the same shape (the gRPC hop
// and the lease write are Vault's cost; the difference is this plugin's)
// and with a read of Vault's built-in KV v2, all in one run on one server.
// Each reports reads per second, the median and 99th percentile latency
// under load, and upstream token requests per 1,000 reads. The latency/
// benchmarks read one at a time: a hit (a cached token) and a miss (a mount
// whose upstream issues 4 s tokens, too short to share, so every read
// fetches one). Run with: make bench-e2e.
func BenchmarkVaultRead(b *testing.B) {
	requireVault(b)
	noop := buildNoopPlugin(b)
	fake := startFake(b, fakeupstream.Options{})
	short := startFake(b, fakeupstream.Options{TokenLifetime: 4 * time.Second})
	v := startDevVault(b)
	v.registerPlugin(pluginV1)
	v.enable("mapsindoors", pluginV1)
	v.enable("miss", pluginV1)
	v.apiOK("POST", "mapsindoors/config", fake.PluginConfig("mapsindoors"))
	v.apiOK("POST", "miss/config", short.PluginConfig("mapsindoors"))
	v.apiOK("POST", "mapsindoors/roles/app", map[string]any{"ttl": "5m"})
	v.apiOK("POST", "miss/roles/app", map[string]any{"ttl": "5m"})
	v.apiOK("POST", "secret/data/app", map[string]any{"data": map[string]any{"value": "x"}})
	v.mustCLI("plugin", "register", "-sha256="+noop.SHA256, "-version="+noop.Version, "-command="+noop.Command, "secret", "noop")
	v.mustCLI("secrets", "enable", "-path=noop", "-plugin-version="+noop.Version, "noop")

	// The role's first read fetches its token; the runs read it warm.
	v.timedRead(b, &http.Client{}, "mapsindoors/creds/app", nil)
	for _, path := range []string{"mapsindoors/creds/app", "noop/creds/app", "secret/data/app"} {
		b.Run(path, func(b *testing.B) {
			before := fake.Hits(fakeupstream.EndpointToken)
			var lat latency.Recorder
			b.RunParallel(func(pb *testing.PB) {
				client := &http.Client{}
				for pb.Next() {
					if !v.timedRead(b, client, path, &lat) {
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "reads/s")
			lat.Report(b, time.Microsecond)
			hits := fake.Hits(fakeupstream.EndpointToken) - before
			b.ReportMetric(1000*float64(hits)/float64(b.N), "upstream-requests/1000-reads")
			// The role's one-hour token serves every read of a run far
			// shorter than its 29 minutes: no request at all.
			if hits > 0 && b.Elapsed() < 20*time.Minute {
				b.Fatalf("%s: %d upstream requests for %d reads of a warm role", path, hits, b.N)
			}
		})
	}
	for _, c := range []struct{ name, path string }{{"latency/hit", "mapsindoors/creds/app"}, {"latency/miss", "miss/creds/app"}} {
		b.Run(c.name, func(b *testing.B) {
			client := &http.Client{}
			var lat latency.Recorder
			for b.Loop() {
				if !v.timedRead(b, client, c.path, &lat) {
					return
				}
			}
			lat.Report(b, time.Microsecond)
		})
	}
}

// BenchmarkVaultPluginMemory reads 100 roles 100 times each through a real
// Vault, then reports the resident memory (VmRSS) of the plugin process,
// found among the Vault server's children, before and after the reads.
// The reads happen once, before the measurement; the benchmark itself
// only reads /proc.
func BenchmarkVaultPluginMemory(b *testing.B) {
	requireVault(b)
	const roles, reads = 100, 10000
	fake := startFake(b, fakeupstream.Options{})
	v := startDevVault(b)
	v.registerPlugin(pluginV1)
	v.enable("mapsindoors", pluginV1)
	v.apiOK("POST", "mapsindoors/config", fake.PluginConfig("mapsindoors"))
	for i := range roles {
		v.apiOK("POST", fmt.Sprintf("mapsindoors/roles/r%d", i), map[string]any{"ttl": "5m"})
	}
	pid := v.pluginPID(b, pluginV1.Command)
	rssBefore := vmRSS(b, pid)

	var next atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{}
			for n := next.Add(1); n <= reads; n = next.Add(1) {
				if !v.timedRead(b, client, fmt.Sprintf("mapsindoors/creds/r%d", n%roles), nil) {
					return
				}
			}
		}()
	}
	wg.Wait()

	b.Run(fmt.Sprintf("after_%d_reads_of_%d_roles", reads, roles), func(b *testing.B) {
		var rss int64
		for b.Loop() {
			rss = vmRSS(b, pid)
		}
		b.ReportMetric(float64(rssBefore), "rss-before-KiB")
		b.ReportMetric(float64(rss), "rss-after-KiB")
		b.ReportMetric(float64(fake.Hits(fakeupstream.EndpointToken)), "upstream-requests")
	})
}

// BenchmarkVaultOutage reads a role from many clients through a real Vault
// while the upstream answers every token request with a 503, and reports
// how many requests reached the upstream per second, beside the reads per
// second Vault answered (each with a 502). Every run reads a role of its
// own, so each starts at the beginning of an outage.
func BenchmarkVaultOutage(b *testing.B) {
	requireVault(b)
	fake := startFake(b, fakeupstream.Options{})
	v := startDevVault(b)
	v.registerPlugin(pluginV1)
	v.enable("mapsindoors", pluginV1)
	v.apiOK("POST", "mapsindoors/config", fake.PluginConfig("mapsindoors"))
	fake.InjectFault(fakeupstream.EndpointToken, fakeupstream.Fault{Status: 503, Code: "temporarily_unavailable", Times: -1})
	run := 0

	b.Run("503_from_the_token_endpoint", func(b *testing.B) {
		run++
		role := fmt.Sprintf("mapsindoors/creds/down%d", run)
		v.apiOK("POST", strings.Replace(role, "/creds/", "/roles/", 1), map[string]any{"ttl": "5m"})
		before := fake.Hits(fakeupstream.EndpointToken)
		b.ResetTimer()
		b.SetParallelism(16)
		b.RunParallel(func(pb *testing.PB) {
			client := &http.Client{}
			for pb.Next() {
				code, err := v.get(client, role)
				if err != nil || code != http.StatusBadGateway {
					b.Errorf("%s during the outage: HTTP %d, %v", role, code, err)
					return
				}
			}
		})
		elapsed := b.Elapsed().Seconds()
		hits := fake.Hits(fakeupstream.EndpointToken) - before
		b.ReportMetric(float64(hits)/elapsed, "upstream-requests/s")
		b.ReportMetric(float64(b.N)/elapsed, "reads/s")
		// One try (of up to the client's attempt limit) per second of
		// outage at the most: the outage memory holds a failure at least
		// that long, however many reads there are.
		if bound := (1 + int(math.Ceil(elapsed))) * upstream.MaxAttemptsLimit; hits > bound {
			b.Fatalf("%d upstream requests in %.1f s of outage (%d reads): want at most %d", hits, elapsed, b.N, bound)
		}
	})
}

// get reads a path through the HTTP API and drains the answer.
func (v *vaultServer) get(client *http.Client, path string) (int, error) {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, v.addr+"/v1/"+path, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("X-Vault-Token", v.token)
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// timedRead reads a path that must answer 200, adding its latency to lat
// when given; false (with the benchmark failed) when it did not.
func (v *vaultServer) timedRead(b *testing.B, client *http.Client, path string, lat *latency.Recorder) bool {
	start := time.Now()
	code, err := v.get(client, path)
	if lat != nil {
		lat.Add(time.Since(start))
	}
	if err != nil || code != http.StatusOK {
		b.Errorf("%s: HTTP %d, %v", path, code, err)
		return false
	}
	return true
}

// apiOK makes an HTTP API call that must succeed (the CLI costs a process
// start per call, too slow for a hundred roles).
func (v *vaultServer) apiOK(method, path string, body map[string]any) {
	v.t.Helper()
	code, resp := v.api(method, path, body)
	require.Less(v.t, code, 300, "%s %s: %v", method, path, resp["errors"])
}

// pluginPID finds the plugin process: a child of the Vault server whose
// command is the plugin's file.
func (v *vaultServer) pluginPID(b *testing.B, command string) int {
	b.Helper()
	entries, err := os.ReadDir("/proc")
	require.NoError(b, err)
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces, so split after ")".
		fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(fields) < 2 || fields[1] != strconv.Itoa(v.cmd.Process.Pid) {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if filepath.Base(strings.SplitN(string(cmdline), "\x00", 2)[0]) == command {
			return pid
		}
	}
	b.Fatalf("no child of the Vault server runs %s", command)
	return 0
}

// vmRSS is a process's resident memory in KiB.
func vmRSS(b *testing.B, pid int) int64 {
	b.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(b, err)
	defer func() { _ = f.Close() }() // read only
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
			kib, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			require.NoError(b, err)
			return kib
		}
	}
	b.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// buildNoopPlugin builds ./noopplugin into the shared plugin directory.
func buildNoopPlugin(b *testing.B) pluginBuild {
	b.Helper()
	out := filepath.Join(pluginDir, "noop-plugin")
	require.NoError(b, goBuild(".", "-o", out, "./noopplugin").Run())
	data, err := os.ReadFile(out)
	require.NoError(b, err)
	sum := sha256.Sum256(data)
	return pluginBuild{Version: "v0.0.1", Command: "noop-plugin", SHA256: hex.EncodeToString(sum[:])}
}

// BenchmarkVaultReadRaft reads through one Vault server on integrated
// storage (Raft, one node, a file audit device), as production runs, side
// by side in one run: static-creds, a lease-free no-op plugin answering the
// same fields (the floor static-creds is held to), KV v2, leased creds, and
// the no-op plugin's leased read. The upstream issues 30 s tokens, so a run
// of a few seconds crosses token replacements (one about every 10 s).
// Each reports reads per second, p50 and p99 latency, Raft log entries
// (storage writes) per read, and upstream token requests per 1,000 reads.
// It fails when a static-creds read writes storage. Run with:
//
//	cd e2e && VAULT_BIN=... go test -run '^$' -bench VaultReadRaft -benchtime 20s .
func BenchmarkVaultReadRaft(b *testing.B) {
	requireVault(b)
	noop := buildNoopPlugin(b)
	fake := startFake(b, fakeupstream.Options{TokenLifetime: 30 * time.Second})
	v := startRaftVault(b)
	v.mustCLI("audit", "enable", "file", "file_path="+filepath.Join(b.TempDir(), "audit.log"))
	v.registerPlugin(pluginV1)
	v.enable("mapsindoors", pluginV1)
	v.apiOK("POST", "mapsindoors/config", fake.PluginConfig("mapsindoors"))
	v.apiOK("POST", "mapsindoors/roles/app", map[string]any{})
	v.mustCLI("secrets", "enable", "-path=secret", "kv-v2")
	eventually(b, 30*time.Second, "KV v2 to take writes", func() bool {
		code, _ := v.api("POST", "secret/data/app", map[string]any{"data": map[string]any{"value": "x"}})
		return code == http.StatusOK
	})
	v.mustCLI("plugin", "register", "-sha256="+noop.SHA256, "-version="+noop.Version, "-command="+noop.Command, "secret", "noop")
	v.mustCLI("secrets", "enable", "-path=noop", "-plugin-version="+noop.Version, "noop")
	// Warm every path once.
	client := &http.Client{}
	for _, path := range []string{"mapsindoors/static-creds/app", "noop/static-creds/app", "secret/data/app", "mapsindoors/creds/app", "noop/creds/app"} {
		v.timedRead(b, client, path, nil)
	}

	for _, path := range []string{"mapsindoors/static-creds/app", "noop/static-creds/app", "secret/data/app", "mapsindoors/creds/app", "noop/creds/app"} {
		b.Run(path, func(b *testing.B) {
			hits := fake.Hits(fakeupstream.EndpointToken)
			index := v.raftIndex(b)
			var lat latency.Recorder
			var reads rotationReads
			static := strings.Contains(path, "static-creds")
			b.SetParallelism(4) // 8 clients on two cores
			b.RunParallel(func(pb *testing.PB) {
				client := &http.Client{}
				for pb.Next() {
					if static {
						// Decoded to see which token each read got.
						if !v.rotationRead(b, client, path, &reads, &lat) {
							return
						}
					} else if !v.timedRead(b, client, path, &lat) {
						return
					}
				}
			})
			if strings.HasPrefix(path, "mapsindoors/") && static {
				reads.report(b)
			}
			writes := float64(v.raftIndex(b)-index) / float64(b.N)
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "reads/s")
			lat.Report(b, time.Microsecond)
			b.ReportMetric(writes, "storage-writes/read")
			b.ReportMetric(1000*float64(fake.Hits(fakeupstream.EndpointToken)-hits)/float64(b.N), "upstream-requests/1000-reads")
			// Vault's own background writes (a few per second at most) are
			// all a static-creds run may see.
			if strings.Contains(path, "static-creds") && writes > 0.05 {
				b.Fatalf("%s: %.3f storage writes per read, want none of its own", path, writes)
			}
		})
	}
}

// startRaftVault starts one Vault server on integrated storage, initialized
// and unsealed, with the root token.
func startRaftVault(b *testing.B) *vaultServer {
	b.Helper()
	dir := b.TempDir()
	data := filepath.Join(dir, "data")
	require.NoError(b, os.MkdirAll(data, 0o700))
	storage := fmt.Sprintf("storage \"raft\" {\n  path    = %q\n  node_id = \"bench\"\n}\n", data)
	v := newConfiguredServer(b, "raft", dir, storage, freePort(b), freePort(b))
	v.startConfigured()
	out := decodeJSON(b, v.mustCLI("operator", "init", "-key-shares=1", "-key-threshold=1", "-format=json"))
	v.token = out["root_token"].(string)
	code, body := v.api("PUT", "sys/unseal", map[string]any{"key": out["unseal_keys_b64"].([]any)[0]})
	require.Equal(b, http.StatusOK, code, "unseal: %v", body["errors"])
	v.waitHealthy(func(code int) bool { return code == http.StatusOK })
	return v
}

// raftIndex is the server's Raft commit index: one more for each log
// entry, that is each storage write.
func (v *vaultServer) raftIndex(b *testing.B) uint64 {
	b.Helper()
	code, body := v.api("GET", "sys/leader", nil)
	require.Equal(b, http.StatusOK, code)
	idx, ok := body["raft_committed_index"].(float64)
	require.True(b, ok, "sys/leader has no raft_committed_index: %v", body)
	return uint64(idx)
}

// rotationReads are static-creds reads: when each started, how long it
// took, and which token it got (by last_vault_rotation).
type rotationReads struct {
	mu    sync.Mutex
	reads []rotationRead
}

type rotationRead struct {
	start time.Time
	took  time.Duration
	token string
}

// rotationRead reads a static-creds path that must answer 200 and records
// the read; false (with the benchmark failed) when it did not.
func (v *vaultServer) rotationRead(b *testing.B, client *http.Client, path string, into *rotationReads, lat *latency.Recorder) bool {
	start := time.Now()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, v.addr+"/v1/"+path, nil)
	if err != nil {
		b.Error(err)
		return false
	}
	req.Header.Set("X-Vault-Token", v.token)
	resp, err := client.Do(req)
	if err != nil {
		b.Errorf("%s: %v", path, err)
		return false
	}
	var body struct {
		Data struct {
			LastVaultRotation string `json:"last_vault_rotation"`
		} `json:"data"`
	}
	err = json.NewDecoder(resp.Body).Decode(&body)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	took := time.Since(start)
	if err != nil || resp.StatusCode != http.StatusOK {
		b.Errorf("%s: HTTP %d, %v", path, resp.StatusCode, err)
		return false
	}
	lat.Add(took)
	into.mu.Lock()
	into.reads = append(into.reads, rotationRead{start: start, took: took, token: body.Data.LastVaultRotation})
	into.mu.Unlock()
	return true
}

// report splits the reads into those that started within a second of a
// token replacement (the first start that got a newer token) and the
// others, and reports the p99 of each and the replacements seen.
func (r *rotationReads) report(b *testing.B) {
	r.mu.Lock()
	defer r.mu.Unlock()
	slices.SortFunc(r.reads, func(x, y rotationRead) int { return x.start.Compare(y.start) })
	var switches []time.Time
	seen := map[string]bool{}
	for i, rd := range r.reads {
		if !seen[rd.token] {
			seen[rd.token] = true
			if i > 0 {
				switches = append(switches, rd.start)
			}
		}
	}
	var across, between latency.Recorder
	for _, rd := range r.reads {
		near := slices.ContainsFunc(switches, func(s time.Time) bool {
			d := rd.start.Sub(s)
			return d > -time.Second && d < time.Second
		})
		if near {
			across.Add(rd.took)
		} else {
			between.Add(rd.took)
		}
	}
	b.ReportMetric(float64(len(switches)), "replacements")
	if len(switches) > 0 {
		b.ReportMetric(float64(across.Percentile(99))/float64(time.Microsecond), "p99-across-replacement-µs")
		b.ReportMetric(float64(between.Percentile(99))/float64(time.Microsecond), "p99-between-replacements-µs")
	}
}
