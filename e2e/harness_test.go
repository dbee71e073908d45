// Package e2e runs the plugin inside real Vault servers (the pinned build
// from ../scripts/vault.sh), through the vault CLI, its HTTP API and Vault
// Agent, against the fake upstream over real TLS.
package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

const pluginName = "vault-plugin-secrets-mapsindoors"

// skipEnv, set to 1, skips every test here; nothing else does.
const skipEnv = "MAPSINDOORS_E2E_SKIP"

// pluginBuild is one version of the plugin in the shared plugin directory.
type pluginBuild struct {
	Version string
	Command string
	SHA256  string
}

var (
	vaultBin  string
	pluginDir string
	// The version first enabled, and the one upgrades go to.
	pluginV1, pluginV2 pluginBuild
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Getenv(skipEnv) == "1" {
		return m.Run() // each test skips and says why
	}
	// Checked first: a bad version should not wait for a Vault build.
	v1, err := pluginVersion()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	v2, err := nextMinor(v1)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	if vaultBin, err = findVault(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: no Vault server binary:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "mapsindoors-e2e-plugins-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer func() { _ = os.RemoveAll(dir) }() // a temporary directory; nothing to do if it stays
	pluginDir = dir
	for _, b := range []struct {
		build   *pluginBuild
		version string
	}{{&pluginV1, v1}, {&pluginV2, v2}} {
		if *b.build, err = buildPlugin(dir, b.version); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: build the plugin:", err)
			return 1
		}
	}
	return m.Run()
}

// pluginVersionEnv overrides the version the suite builds and enables
// first; without it the suite takes the Makefile's, as `make build` does.
const pluginVersionEnv = "PLUGIN_VERSION"

func pluginVersion() (string, error) {
	if v := os.Getenv(pluginVersionEnv); v != "" {
		return v, nil
	}
	makefile, err := os.ReadFile("../Makefile")
	if err != nil {
		return "", fmt.Errorf("no %s set and no Makefile to take the version from: %w", pluginVersionEnv, err)
	}
	return makefileVersion(string(makefile))
}

var makefileVersionLine = regexp.MustCompile(`(?m)^VERSION\s*\?=\s*(\S+)`)

// makefileVersion reads the default of the Makefile's VERSION, the one
// place the plugin's version is written down.
func makefileVersion(makefile string) (string, error) {
	m := makefileVersionLine.FindStringSubmatch(makefile)
	if m == nil {
		return "", fmt.Errorf("the Makefile has no \"VERSION ?= vX.Y.Z\" line; set %s", pluginVersionEnv)
	}
	return m[1], nil
}

// nextMinor is the version the upgrade tests move to: v0.1.0 becomes
// v0.2.0. golang.org/x/mod/semver is not in the module graph, and this
// needs no more than the three numbers.
func nextMinor(version string) (string, error) {
	bad := fmt.Errorf("plugin version %q is not vMAJOR.MINOR.PATCH; set %s to one like v0.1.0", version, pluginVersionEnv)
	rest, ok := strings.CutPrefix(version, "v")
	if !ok {
		// Vault lists a registered version with the v, so the suite's
		// comparisons need it.
		return "", bad
	}
	if i := strings.IndexAny(rest, "-+"); i >= 0 {
		rest = rest[:i] // a pre-release or build suffix
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 3 {
		return "", bad
	}
	var nums [3]uint64
	for i, part := range parts {
		n, err := strconv.ParseUint(part, 10, 32)
		if err != nil || (len(part) > 1 && part[0] == '0') {
			return "", bad
		}
		nums[i] = n
	}
	return fmt.Sprintf("v%d.%d.0", nums[0], nums[1]+1), nil
}

func findVault() (string, error) {
	if bin := os.Getenv("VAULT_BIN"); bin != "" {
		return bin, nil
	}
	cmd := exec.CommandContext(context.Background(), "bash", "../scripts/vault.sh")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}

func buildPlugin(dir, version string) (pluginBuild, error) {
	command := pluginName + "-" + version
	out := filepath.Join(dir, command)
	cmd := goBuild("..", "-ldflags", "-X github.com/mapsindoors/vault-plugin-secrets-mapsindoors.Version="+version,
		"-o", out, "./cmd/"+pluginName)
	if err := cmd.Run(); err != nil {
		return pluginBuild{}, err
	}
	data, err := os.ReadFile(out)
	if err != nil {
		return pluginBuild{}, err
	}
	sum := sha256.Sum256(data)
	return pluginBuild{Version: version, Command: command, SHA256: hex.EncodeToString(sum[:])}, nil
}

// goBuild is "go build" in dir with the release's flags: no cgo and
// -trimpath, as make release, make build, make vet and make e2e use, so
// every build of a make test run reuses the packages vet compiled.
func goBuild(dir string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(context.Background(), "go", append([]string{"build", "-trimpath"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return cmd
}

func requireVault(t testing.TB) {
	t.Helper()
	if os.Getenv(skipEnv) == "1" {
		t.Skipf("%s=1: the end-to-end tests against a real Vault server are skipped", skipEnv)
	}
}

// Ports come from one allocator below the kernel's ephemeral range
// (32768 and up), so that a port handed to one server cannot be handed out
// again, by the kernel or by this allocator, while that server starts.
// Picking ":0" and closing it left a second of race for parallel tests:
// seen here as a Raft node's cluster port answered by another server.
var (
	portMu   sync.Mutex
	nextPort = 20000 + rand.IntN(8000)
)

// freePorts reserves n consecutive free ports and returns the first.
func freePorts(t testing.TB, n int) int {
	t.Helper()
	portMu.Lock()
	defer portMu.Unlock()
	for range 500 {
		base := nextPort
		nextPort += n
		if nextPort+n >= 32000 {
			nextPort = 20000
		}
		if portsFree(base, n) {
			return base
		}
	}
	t.Fatalf("found no %d free ports in a row", n)
	return 0
}

func portsFree(base, n int) bool {
	for p := base; p < base+n; p++ {
		ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			return false
		}
		_ = ln.Close() // only probing whether the port is free
	}
	return true
}

func freePort(t testing.TB) int { return freePorts(t, 1) }

// freePortPair is a port whose next port is free too: a dev server's
// cluster listener takes PORT+1.
func freePortPair(t testing.TB) int { return freePorts(t, 2) }

// vaultServer is one Vault server process.
type vaultServer struct {
	t       testing.TB
	name    string
	addr    string // http://127.0.0.1:PORT
	token   string
	config  string
	logPath string
	home    string // the process's HOME: its own, never the runner's
	cmd     *exec.Cmd
	exited  chan struct{}
}

// startDevVault starts a dev server (in-memory storage, unsealed, root
// token "root") with the shared plugin directory.
func startDevVault(t testing.TB) *vaultServer {
	t.Helper()
	dir := t.TempDir()
	port := freePortPair(t)
	cfg := filepath.Join(dir, "extra.hcl")
	require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf("plugin_directory = %q\n", pluginDir)), 0o600))
	v := &vaultServer{t: t, name: "dev", addr: fmt.Sprintf("http://127.0.0.1:%d", port), token: "root", config: cfg,
		logPath: filepath.Join(dir, "vault.log")}
	v.start("server", "-dev", "-dev-root-token-id=root", "-dev-no-store-token", fmt.Sprintf("-dev-listen-address=127.0.0.1:%d", port), "-config="+cfg)
	v.waitHealthy(func(code int) bool { return code == http.StatusOK })
	return v
}

// newConfiguredServer writes a server config with the given storage
// stanza and returns a server that is not started yet.
func newConfiguredServer(t testing.TB, name, dir, storage string, apiPort, clusterPort int) *vaultServer {
	t.Helper()
	cfg := filepath.Join(dir, name+".hcl")
	hcl := fmt.Sprintf(`%s
listener "tcp" {
  address         = "127.0.0.1:%d"
  cluster_address = "127.0.0.1:%d"
  tls_disable     = true
}
api_addr         = "http://127.0.0.1:%d"
cluster_addr     = "https://127.0.0.1:%d"
disable_mlock    = true
plugin_directory = %q
log_level        = "debug"
`, storage, apiPort, clusterPort, apiPort, clusterPort, pluginDir)
	require.NoError(t, os.WriteFile(cfg, []byte(hcl), 0o600))
	return &vaultServer{t: t, name: name, addr: fmt.Sprintf("http://127.0.0.1:%d", apiPort), config: cfg,
		logPath: filepath.Join(dir, name+".log")}
}

func (v *vaultServer) start(args ...string) {
	v.t.Helper()
	logFile, err := os.OpenFile(v.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	require.NoError(v.t, err)
	// The server outlives this call: stop() ends it, and a context would
	// kill it before the test's cleanups ran.
	cmd := exec.Command(vaultBin, args...) //nolint:noctx // see above
	if v.home == "" {
		v.home = v.t.TempDir()
	}
	// Its own HOME: a dev server stores its root token in ~/.vault-token,
	// and neither the runner's token nor another server's may be touched.
	cmd.Env = append(cleanEnv(), "HOME="+v.home)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own process group, so stopping it also stops its plugins.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(v.t, cmd.Start())
	v.cmd = cmd
	v.exited = make(chan struct{})
	go func() {
		_ = cmd.Wait()
		_ = logFile.Close() // the server is gone; dumpLog reads what it wrote
		close(v.exited)
	}()
	v.t.Cleanup(v.stop)
}

// startConfigured starts a server from its config file.
func (v *vaultServer) startConfigured() {
	v.t.Helper()
	v.start("server", "-config="+v.config)
	v.waitHealthy(func(int) bool { return true })
}

// stop ends the server (and its plugins) gracefully, then by force.
func (v *vaultServer) stop() {
	if v.cmd == nil || v.cmd.Process == nil {
		return
	}
	select {
	case <-v.exited:
		return
	default:
	}
	_ = syscall.Kill(-v.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-v.exited:
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(-v.cmd.Process.Pid, syscall.SIGKILL)
		<-v.exited
	}
	if v.t.Failed() {
		v.dumpLog()
	}
}

func (v *vaultServer) dumpLog() {
	data, err := os.ReadFile(v.logPath)
	if err != nil {
		return
	}
	lines := strings.Split(maskSensitive(redactServerLog(string(data))), "\n")
	var problems []string
	for _, l := range lines {
		if strings.Contains(l, "[ERROR]") || strings.Contains(l, "[WARN]") {
			problems = append(problems, l)
		}
	}
	if len(lines) > 60 {
		lines = lines[len(lines)-60:]
	}
	v.t.Logf("warnings and errors in the %s log:\n%s\nits last lines:\n%s", v.name,
		strings.Join(problems, "\n"), strings.Join(lines, "\n"))
}

// serverSecrets are the lines where a server prints what unseals it or
// logs in to it: a dev server's banner, "vault operator init".
var serverSecrets = regexp.MustCompile(`(?m)^(\s*(?:Unseal Key(?: \d+)?|Recovery Key(?: \d+)?|Root Token|Initial Root Token):)\s*\S+`)

// redactServerLog blanks those lines' values, so a failing test's dump of
// the log shows no key or token.
func redactServerLog(log string) string {
	return serverSecrets.ReplaceAllString(log, "$1 (redacted)")
}

func (v *vaultServer) waitHealthy(ok func(code int) bool) {
	v.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-v.exited:
			v.dumpLog()
			v.t.Fatalf("the %s Vault server exited while starting", v.name)
		default:
		}
		req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, v.addr+"/v1/sys/health?standbyok=true&perfstandbyok=true", nil)
		require.NoError(v.t, err)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if ok(resp.StatusCode) {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	v.dumpLog()
	v.t.Fatalf("the %s Vault server did not become healthy", v.name)
}

// cleanEnv is this process's environment without any VAULT_ setting of
// the person running the tests.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VAULT_") {
			env = append(env, kv)
		}
	}
	return env
}

// cli runs the vault CLI against this server. Config goes in through a
// file; what else could be sensitive (input=) is blanked in the error.
func (v *vaultServer) cli(args ...string) (string, error) {
	v.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, vaultBin, args...)
	cmd.Env = append(cleanEnv(), "VAULT_ADDR="+v.addr, "VAULT_TOKEN="+v.token)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("vault %s: %w\n%s", strings.Join(redactArgs(args), " "), err, stderr.String())
	}
	return stdout.String(), nil
}

func redactArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if k, _, ok := strings.Cut(a, "="); ok && (k == "input" || strings.Contains(k, "secret") || strings.Contains(k, "password")) {
			a = k + "=(redacted)"
		}
		out[i] = a
	}
	return out
}

func (v *vaultServer) mustCLI(args ...string) string {
	v.t.Helper()
	out, err := v.cli(args...)
	require.NoError(v.t, err)
	return out
}

// cliJSON runs the CLI with -format=json and decodes the answer.
func (v *vaultServer) cliJSON(args ...string) map[string]any {
	v.t.Helper()
	full := append([]string{args[0], "-format=json"}, args[1:]...)
	if len(args) > 1 && !strings.HasPrefix(args[1], "-") && isSubcommandGroup(args[0]) {
		full = append([]string{args[0], args[1], "-format=json"}, args[2:]...)
	}
	out := v.mustCLI(full...)
	var m map[string]any
	// The output may hold a token: say only that it did not decode.
	require.NoError(v.t, json.Unmarshal([]byte(out), &m), "vault %s printed no JSON object", strings.Join(redactArgs(args), " "))
	return m
}

func isSubcommandGroup(cmd string) bool {
	switch cmd {
	case "secrets", "plugin", "lease", "operator", "audit":
		return true
	}
	return false
}

// api makes a raw HTTP API call.
func (v *vaultServer) api(method, path string, body any) (int, map[string]any) {
	v.t.Helper()
	var r io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		require.NoError(v.t, err)
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, v.addr+"/v1/"+path, r)
	require.NoError(v.t, err)
	req.Header.Set("X-Vault-Token", v.token)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(v.t, err)
	defer resp.Body.Close()
	var m map[string]any
	data, _ := io.ReadAll(resp.Body)
	if len(data) > 0 {
		_ = json.Unmarshal(data, &m)
	}
	return resp.StatusCode, m
}

// registerPlugin registers a plugin version by checksum, as an operator
// would.
func (v *vaultServer) registerPlugin(p pluginBuild) {
	v.t.Helper()
	v.mustCLI("plugin", "register", "-sha256="+p.SHA256, "-version="+p.Version, "-command="+p.Command, "secret", pluginName)
}

func (v *vaultServer) enable(mount string, p pluginBuild) {
	v.t.Helper()
	v.mustCLI("secrets", "enable", "-path="+mount, "-plugin-version="+p.Version, pluginName)
}

// configure writes the mount's MapsIndoors config against the fake, with
// extra on top, through a file, so the secret is never on a command line.
func (v *vaultServer) configure(mount string, fake *fakeupstream.Server, extra map[string]any) {
	v.t.Helper()
	data := fake.PluginConfig("mapsindoors")
	maps.Copy(data, extra)
	v.writeFile(mount+"/config", data)
}

// writeFile is `vault write PATH @file.json`.
func (v *vaultServer) writeFile(path string, data map[string]any) {
	v.t.Helper()
	blob, err := json.Marshal(data)
	require.NoError(v.t, err)
	file := filepath.Join(v.t.TempDir(), "data.json")
	require.NoError(v.t, os.WriteFile(file, blob, 0o600))
	v.mustCLI("write", path, "@"+file)
}

// startMapsIndoorsMount is a dev server with the plugin (the first
// version) enabled at mapsindoors/ and configured against a fake, with
// extra config fields.
func startMapsIndoorsMount(t *testing.T, extra map[string]any) (*vaultServer, *fakeupstream.Server) {
	t.Helper()
	fake := startFake(t, fakeupstream.Options{})
	v := startDevVault(t)
	v.registerPlugin(pluginV1)
	v.enable("mapsindoors", pluginV1)
	v.configure("mapsindoors", fake, extra)
	return v, fake
}

// readConfig reads a mount's config without client_secret_age, which
// changes by itself every second.
func (v *vaultServer) readConfig(mount string) map[string]any {
	v.t.Helper()
	cfg := dataOf(v.t, v.cliJSON("read", mount+"/config"))
	delete(cfg, "client_secret_age")
	return cfg
}

func dataOf(t testing.TB, m map[string]any) map[string]any {
	t.Helper()
	d, ok := m["data"].(map[string]any)
	require.True(t, ok, "no data in %v", m)
	return d
}

// sensitive holds what every log a failing test prints is masked with: the
// secrets and tokens of each fake the tests started, and the tokens they
// read. A log is printed because something failed, perhaps because it
// holds a secret; the print must not show it.
var sensitive struct {
	mu      sync.Mutex
	sources []func() []string
}

// noteSensitive adds a source of values to mask in printed logs.
func noteSensitive(source func() []string) {
	sensitive.mu.Lock()
	defer sensitive.mu.Unlock()
	sensitive.sources = append(sensitive.sources, source)
}

// maskSensitive is log with every value noteSensitive knows masked.
func maskSensitive(log string) string {
	sensitive.mu.Lock()
	sources := slices.Clone(sensitive.sources)
	sensitive.mu.Unlock()
	for _, source := range sources {
		for _, v := range source() {
			if v != "" {
				log = strings.ReplaceAll(log, v, "(masked)")
			}
		}
	}
	return log
}

func startFake(t testing.TB, opts fakeupstream.Options) *fakeupstream.Server {
	t.Helper()
	fake, err := fakeupstream.Start(opts)
	require.NoError(t, err)
	noteSensitive(fake.Sensitive)
	t.Cleanup(func() {
		require.Empty(t, fake.Unexpected(), "the fake got requests it does not serve")
		fake.Close()
	})
	return fake
}

// eventually polls cond until it holds or the time is up.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// startTemplateAgent runs a Vault Agent that renders the access_token of
// path into a file, and returns the file's path and the agent.
func startTemplateAgent(t *testing.T, v *vaultServer, path string) (string, *vaultServer) {
	t.Helper()
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "vault-token")
	require.NoError(t, os.WriteFile(tokenFile, []byte(v.token), 0o600))
	rendered := filepath.Join(dir, "rendered.txt")
	cfg := filepath.Join(dir, "agent.hcl")
	require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf(`
vault {
  address = %q
}
auto_auth {
  method "token_file" {
    config {
      token_file_path = %q
    }
  }
}
template {
  contents    = "{{ with secret \"%s\" }}{{ .Data.access_token }}{{ end }}"
  destination = %q
}
`, v.addr, tokenFile, path, rendered)), 0o600))
	agent := &vaultServer{t: t, name: "agent", addr: v.addr, logPath: filepath.Join(dir, "agent.log")}
	agent.start("agent", "-config="+cfg)
	return rendered, agent
}

// A log printed for a failing test shows none of the values noted as
// sensitive: a fake's secrets and the tokens the tests read.
func TestMaskSensitive_MasksEveryNotedValue(t *testing.T) {
	fake := startFake(t, fakeupstream.Options{})
	token := "a-token-the-test-read"
	noteSensitive(func() []string { return []string{token} })
	log := "login with " + fake.Credentials().ClientSecret + " gave " + token + "; nothing else"
	got := maskSensitive(log)
	require.False(t, strings.Contains(got, fake.Credentials().ClientSecret), "the fake's secret is shown")
	require.False(t, strings.Contains(got, token), "a noted token is shown")
	require.Equal(t, "login with (masked) gave (masked); nothing else", got)
}
