#!/usr/bin/env bash
# Prints the path of a Vault server binary of the pinned version, building
# it from the Go module proxy the first time (no vault binary can be
# downloaded here). The build is cached outside the repository and reused.
#
#   scripts/vault.sh [MODULE_DIR]
#
# MODULE_DIR is the Go module that builds the server, relative to the
# repository: e2e/vault (the default) is the pinned server, e2e/vault-X.Y.Z
# a server of the compatibility matrix (make compat).
#
#   VAULT_BIN=/path/to/vault   use this binary instead (pinned server only)
#   a vault on PATH of the same major.minor is used as is (pinned server only)
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
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
cache="${VAULT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vault-plugin-secrets-mapsindoors}"
# The binary is named by version and by what builds it (the module's go.mod,
# go.sum and main.go), so a change to its pins or build tags builds anew
# instead of reusing a binary built from something else.
build_key="$(cat "$root/$module/go.mod" "$root/$module/go.sum" "$root/$module/main.go" | sha256sum | cut -c1-12)"
bin="$cache/vault-v$VAULT_VERSION-$build_key"

if [[ $pinned == 1 && -n "${VAULT_BIN:-}" ]]; then
  echo "$VAULT_BIN"; exit 0
fi
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
# Vault's own "minimal" build: the server, the CLI, Vault Agent, integrated
# storage and the core plugins (kv, transit, approle, userpass, ...), without
# the cloud storage backends and auth methods the tests never use. It builds
# in half the time of the full binary (measured on 2 cores: 448 s against
# 849 s). Without cgo, as HashiCorp builds its releases; -s -w drop the
# symbol and debug tables nobody reads here.
(cd "$root/$module" && CGO_ENABLED=0 go build -tags minimal -trimpath -ldflags "-s -w" -o "$tmp" .) >&2
chmod +x "$tmp"
mv -f "$tmp" "$bin"
trap - EXIT
# Builds of this version from an earlier module are no longer used.
for old in "$cache/vault-v$VAULT_VERSION" "$cache/vault-v$VAULT_VERSION"-*; do
  [[ "$old" == "$bin" || ! -e "$old" ]] || rm -f "$old"
done
echo "Vault v$VAULT_VERSION built in $(( $(date +%s) - start ))s." >&2
echo "$bin"
