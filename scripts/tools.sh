#!/usr/bin/env bash
# Prints the path of a pinned development tool, building it from the Go
# module proxy the first time (no prebuilt binary can be downloaded here).
# The build is cached outside the repository and reused.
#
#   bash scripts/tools.sh golangci-lint
#
#   GOLANGCI_LINT=/path/to/golangci-lint   use this binary instead
set -euo pipefail

# Bump deliberately: a new golangci-lint brings new checks and new findings.
GOLANGCI_LINT_VERSION=v2.15.0

cache="${TOOLS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vault-plugin-secrets-mapsindoors}"

# build_tool NAME VERSION PACKAGE: prints the cached binary, building it if absent.
build_tool() {
  local name="$1" version="$2" pkg="$3"
  local dir="$cache/$name-$version"
  local bin="$dir/$name"
  if [[ -x "$bin" ]]; then
    echo "$bin"; return
  fi
  mkdir -p "$cache"
  local start tmp
  start=$(date +%s)
  echo "Building $name $version from source into $dir (once per machine, a few minutes on 2 cores)." >&2
  tmp="$(mktemp -d "$cache/$name-build.XXXXXX")"
  # A fresh GOBIN per build, moved into place whole, so an interrupted build
  # never leaves a half-written binary that later runs would trust.
  # GOFLAGS is cleared so a -mod=... meant for this repository does not reach
  # the tool's own module.
  # Without cgo and symbol tables, with -trimpath: a little less to build,
  # and the standard library compiled as for the pinned Vault and for vet.
  if ! (cd "$tmp" && GOBIN="$tmp" GOFLAGS='' CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "$pkg@$version") >&2; then
    rm -rf "$tmp"
    echo "Building $name $version failed." >&2
    return 1
  fi
  rm -rf "$dir"
  mv "$tmp" "$dir"
  echo "$name $version built in $(( $(date +%s) - start ))s." >&2
  echo "$bin"
}

case "${1:-}" in
  golangci-lint)
    if [[ -n "${GOLANGCI_LINT:-}" ]]; then
      echo "$GOLANGCI_LINT"; exit 0
    fi
    build_tool golangci-lint "$GOLANGCI_LINT_VERSION" \
      github.com/golangci/golangci-lint/v2/cmd/golangci-lint
    ;;
  *)
    echo "usage: $0 golangci-lint" >&2
    exit 2
    ;;
esac
