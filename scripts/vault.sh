#!/usr/bin/env bash
# Prints the path of a Vault server binary of the pinned version, building
# it from the Go module proxy the first time (no vault binary can be
# downloaded here). The build is cached outside the repository and reused.
#
#   scripts/vault.sh [MODULE_DIR]
#   scripts/vault.sh --clean     removes every cached Vault build
#
# MODULE_DIR is the Go module that builds the server, relative to the
# repository: e2e/vault (the default) is the pinned server, e2e/vault-X.Y.Z
# a server of the compatibility matrix (make compat).
#
#   VAULT_BIN=/path/to/vault   use this binary instead (pinned server only)
#   a vault on PATH of the same major.minor is used as is (pinned server only)
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${VAULT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vault-plugin-secrets-mapsindoors}"
if [[ "${1:-}" == "--clean" ]]; then
  # Every cached Vault build goes; the next run builds what it needs.
  rm -fv "$cache"/vault-v* >&2
  exit 0
fi
module="${1:-e2e/vault}"
pinned=0
[[ "$module" == "e2e/vault" ]] && pinned=1
if [[ ! -f "$root/$module/go.mod" ]]; then
  echo "No Vault build module at $module (no go.mod there)." >&2
  exit 1
fi
# One source for the version: the require line of the Vault build module.
VAULT_VERSION="$(awk '
  $1 == "require" && $2 == "github.com/hashicorp/vault" { print $3; exit }
  $1 == "github.com/hashicorp/vault" { print $2; exit }
' "$root/$module/go.mod")"
VAULT_VERSION="${VAULT_VERSION#v}"
if [[ -z "$VAULT_VERSION" ]]; then
  echo "No 'github.com/hashicorp/vault vX.Y.Z' require line in $module/go.mod." >&2
  exit 1
fi
if [[ $pinned == 1 && -n "${VAULT_BIN:-}" ]]; then
  echo "$VAULT_BIN"; exit 0
fi

# Vault's own "minimal" build: the server, the CLI, Vault Agent, integrated
# storage and the core plugins (kv, transit, approle, userpass, ...), without
# the cloud storage backends and auth methods the tests never use. It builds
# in half the time of the full binary (measured on 2 cores: 448 s against
# 849 s). Without cgo, as HashiCorp builds its releases; -s -w drop the
# symbol and debug tables nobody reads here.
build_env=(CGO_ENABLED=0)
build_flags=(-tags minimal -trimpath -ldflags "-s -w")
# The binary is named by version and by everything that builds it: the
# module (go.mod, go.sum, main.go), the build's flags and the Go toolchain.
# A change to any of them builds anew instead of reusing a binary built
# from something else. Older builds stay (another checkout may be running
# one); `scripts/vault.sh --clean` (make clean-vault) removes them all.
for f in go.sum main.go; do
  if [[ ! -f "$root/$module/$f" ]]; then
    echo "The Vault build module $module has no $f." >&2
    exit 1
  fi
done
build_key="$(
  cd "$root/$module"
  { cat go.mod go.sum main.go; echo "${build_env[*]} ${build_flags[*]}"; go env GOVERSION; } | sha256sum | cut -c1-12
)"
bin="$cache/vault-v$VAULT_VERSION-$build_key"

if [[ -x "$bin" ]]; then
  echo "$bin"; exit 0
fi
if [[ $pinned == 1 ]] && command -v vault >/dev/null 2>&1; then
  have="$(vault version 2>/dev/null | sed -n 's/^Vault v\([0-9]*\.[0-9]*\)\..*/\1/p')"
  if [[ "$have" == "${VAULT_VERSION%.*}" ]]; then
    command -v vault; exit 0
  fi
fi

mkdir -p "$cache"
# One build at a time, of any version: a second caller (the e2e step while
# .ci/run's early build is still going) waits for the first and then uses
# its binary, and two servers never compete with each other for the cores.
exec 9>"$cache/.vault-build.lock"
flock 9
if [[ -x "$bin" ]]; then
  echo "$bin"; exit 0
fi
start=$(date +%s)
echo "Building Vault v$VAULT_VERSION from source into $cache." >&2
echo "This happens once per machine and takes about 7 minutes on 2 cores; later runs reuse it." >&2
tmp="$(mktemp "$cache/vault-build.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
(cd "$root/$module" && env "${build_env[@]}" go build "${build_flags[@]}" -o "$tmp" .) >&2
chmod +x "$tmp"
mv -f "$tmp" "$bin"
trap - EXIT
echo "Vault v$VAULT_VERSION built in $(( $(date +%s) - start ))s." >&2
echo "$bin"
