#!/usr/bin/env bash
# Builds the release binaries of the plugin: static (CGO_ENABLED=0), with
# -trimpath and the version stamped by the Makefile's LDFLAGS, for each
# GOOS/GOARCH in PLATFORMS, into DIST, with a SHA256SUMS file that
# `sha256sum -c` (or `shasum -a 256 -c`) checks. Run it through
#
#   make release VERSION=v0.2.0            # into dist/
#   make release VERSION=v0.2.0 DIST=/tmp/out
#
# which passes VERSION, LDFLAGS, DIST and PLATFORMS (RELEASE_PLATFORMS: linux
# and darwin on amd64 and arm64); the version is written in one place, the
# Makefile, and this script refuses flags that do not stamp it.
set -euo pipefail
cd "$(dirname "$0")/.."

plugin=vault-plugin-secrets-mapsindoors
version="${VERSION:-}"
ldflags="${LDFLAGS:-}"
dist="${DIST:-dist}"

# Vault compares a plugin's running version with the -version it was
# registered with as an exact string: "v" and semantic version.
semver='^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?$'
if [[ ! "$version" =~ $semver ]]; then
  echo "VERSION must look like v1.2.3 (or v1.2.3-rc.1), as Vault compares it; got '$version'." >&2
  echo "Run: make release VERSION=v1.2.3" >&2
  exit 1
fi
if [[ "$ldflags" != *"Version=$version"* ]]; then
  echo "LDFLAGS does not stamp version $version; run this through 'make release VERSION=$version'." >&2
  exit 1
fi
read -r -a platforms <<<"${PLATFORMS:-}"
if [[ ${#platforms[@]} -eq 0 ]]; then
  echo "PLATFORMS is empty; run this through 'make release', which sets it." >&2
  exit 1
fi
for platform in "${platforms[@]}"; do
  if [[ ! "$platform" =~ ^[a-z0-9]+/[a-z0-9]+$ ]]; then
    echo "PLATFORMS must be GOOS/GOARCH pairs such as linux/amd64; got '$platform'." >&2
    exit 1
  fi
done
if [[ -n "$(git status --porcelain 2>/dev/null)" ]]; then
  echo "Note: the work tree has uncommitted changes; build a release from a clean, tagged commit." >&2
fi

sum() {
  if command -v sha256sum >/dev/null 2>&1; then
    sha256sum -- "$@"
  else
    shasum -a 256 -- "$@"
  fi
}

mkdir -p "$dist"
# Only what a release puts there is replaced; nothing else in DIST is touched.
rm -f -- "$dist/${plugin}_"* "$dist/SHA256SUMS"
files=()
for platform in "${platforms[@]}"; do
  os="${platform%/*}"
  arch="${platform#*/}"
  name="${plugin}_${version}_${os}_${arch}"
  echo "Building $dist/$name" >&2
  CGO_ENABLED=0 GOOS="$os" GOARCH="$arch" go build -trimpath -ldflags "$ldflags" -o "$dist/$name" "./cmd/$plugin"
  files+=("$name")
done
(cd "$dist" && sum "${files[@]}" > SHA256SUMS)
echo "Wrote ${#files[@]} binaries and $dist/SHA256SUMS for $version." >&2
