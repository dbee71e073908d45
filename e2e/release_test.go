package e2e

import (
	"bufio"
	"context"
	"crypto/sha256"
	"debug/buildinfo"
	"debug/elf"
	"debug/macho"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

// releaseVersion is what the test releases: not the suite's own version,
// so a binary that reports it can only have been stamped by make release.
const releaseVersion = "v9.8.7-release.1"

// make release, as the README's install section uses its output: static
// binaries whose SHA256SUMS check, and the one for this machine, registered
// by the sum in SHA256SUMS, reports its version to Vault. A release is for
// the four platforms of RELEASE_PLATFORMS; the test builds this machine's
// (each platform is a compile of every dependency, minutes on a small CI
// machine, and scripts/release.sh builds each the same way).
func TestRelease_BinariesSumsAndTheVersionVaultSees(t *testing.T) {
	requireVault(t)
	t.Parallel()
	if runtime.GOOS != "linux" && runtime.GOOS != "darwin" {
		t.Skipf("no release binary for %s", runtime.GOOS)
	}
	dist := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()

	list := exec.CommandContext(ctx, "make", "-s", "print-release-platforms")
	list.Dir = ".."
	list.Env = cleanEnv()
	out, err := list.Output()
	require.NoError(t, err)
	require.Equal(t, []string{"linux/amd64", "linux/arm64", "darwin/amd64", "darwin/arm64"}, strings.Fields(string(out)),
		"a release is for linux and darwin on amd64 and arm64")

	platforms := []struct{ os, arch string }{{runtime.GOOS, runtime.GOARCH}}
	cmd := exec.CommandContext(ctx, "make", "release", "VERSION="+releaseVersion, "DIST="+dist,
		"RELEASE_PLATFORMS="+runtime.GOOS+"/"+runtime.GOARCH)
	cmd.Dir = ".."
	cmd.Env = cleanEnv()
	out, err = cmd.CombinedOutput()
	require.NoError(t, err, "make release:\n%s", out)

	sums := readSums(t, filepath.Join(dist, "SHA256SUMS"))
	require.Len(t, sums, len(platforms), "one sum per binary, nothing else")
	for _, p := range platforms {
		name := fmt.Sprintf("%s_%s_%s_%s", pluginName, releaseVersion, p.os, p.arch)
		t.Run(p.os+"_"+p.arch, func(t *testing.T) {
			file := filepath.Join(dist, name)
			data, err := os.ReadFile(file)
			require.NoError(t, err)
			sum := sha256.Sum256(data)
			require.Equal(t, hex.EncodeToString(sum[:]), sums[name], "SHA256SUMS matches the file")

			info, err := buildinfo.ReadFile(file)
			require.NoError(t, err)
			settings := map[string]string{}
			for _, s := range info.Settings {
				settings[s.Key] = s.Value
			}
			require.Equal(t, "0", settings["CGO_ENABLED"], "built without cgo")
			require.Equal(t, "true", settings["-trimpath"], "no build machine paths")
			require.Equal(t, p.os, settings["GOOS"])
			require.Equal(t, p.arch, settings["GOARCH"])
			require.Contains(t, string(data), releaseVersion, "the version is stamped in")

			switch p.os {
			case "linux":
				f, err := elf.Open(file)
				require.NoError(t, err)
				defer func() { _ = f.Close() }()
				libs, err := f.ImportedLibraries()
				require.NoError(t, err)
				require.Empty(t, libs, "statically linked")
				for _, prog := range f.Progs {
					require.NotEqual(t, elf.PT_INTERP, prog.Type, "no dynamic loader")
				}
			case "darwin":
				// macOS binaries always link the system library; without cgo
				// they need nothing else.
				f, err := macho.Open(file)
				require.NoError(t, err)
				defer func() { _ = f.Close() }()
				libs, err := f.ImportedLibraries()
				require.NoError(t, err)
				for _, lib := range libs {
					require.True(t, strings.HasPrefix(lib, "/usr/lib/") || strings.HasPrefix(lib, "/System/"), lib)
				}
			}
		})
	}

	// Install as the README says: the binary for this machine into the
	// plugin directory, registered with the sum from SHA256SUMS.
	name := fmt.Sprintf("%s_%s_%s_%s", pluginName, releaseVersion, runtime.GOOS, runtime.GOARCH)
	// The README's check and its sum for the register command, as shell.
	check := exec.CommandContext(ctx, "bash", "-c",
		`if command -v sha256sum >/dev/null; then sha256sum -c --ignore-missing SHA256SUMS; else shasum -a 256 -c --ignore-missing SHA256SUMS; fi >&2 &&
		 awk -v f="$BIN" '$2 == f { print $1 }' SHA256SUMS`)
	check.Dir = dist
	check.Env = append(cleanEnv(), "BIN="+name)
	fromShell, err := check.Output()
	require.NoError(t, err)
	require.Equal(t, sums[name], strings.TrimSpace(string(fromShell)))
	data, err := os.ReadFile(filepath.Join(dist, name))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(pluginDir, name), data, 0o755)) //nolint:gosec // G306: a plugin must be executable.
	fake := startFake(t, fakeupstream.Options{})
	v := startDevVault(t)
	v.mustCLI("plugin", "register", "-sha256="+sums[name], "-version="+releaseVersion, "-command="+name, "secret", pluginName)
	v.mustCLI("secrets", "enable", "-path=mapsindoors", "-plugin-version="+releaseVersion, pluginName)

	info := v.cliJSON("plugin", "info", "-version="+releaseVersion, "secret", pluginName)
	require.Equal(t, sums[name], info["sha256"])
	require.Equal(t, releaseVersion, info["version"])
	mounts := v.cliJSON("secrets", "list", "-detailed")
	mount, _ := mounts["mapsindoors/"].(map[string]any)
	require.NotNil(t, mount)
	require.Equal(t, releaseVersion, mount["running_plugin_version"], "the binary reports the version it was stamped with")
	require.Equal(t, sums[name], mount["running_sha256"])

	v.configure("mapsindoors", fake, nil)
	v.mustCLI("write", "mapsindoors/roles/app", "ttl=5m")
	readCreds(t, v, fake, "mapsindoors", "app")
}

// readSums reads a SHA256SUMS file in the format sha256sum writes and
// checks: "<hex>  <name>" per line.
func readSums(t *testing.T, file string) map[string]string {
	t.Helper()
	f, err := os.Open(file)
	require.NoError(t, err)
	defer func() { _ = f.Close() }() // read only
	sums := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		require.True(t, ok, "line %q is not \"<sum>  <name>\"", sc.Text())
		require.Len(t, sum, 64)
		sums[name] = sum
	}
	require.NoError(t, sc.Err())
	return sums
}
