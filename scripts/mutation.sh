#!/usr/bin/env bash
# Mutation testing of the upstream package with gremlins, pinned. Not part
# of `make test`: on 2 cores a run takes tens of minutes.
#
#   bash scripts/mutation.sh                 # ./upstream
#   bash scripts/mutation.sh ./fakeupstream  # another package
#
#   GREMLINS=/path/to/gremlins   use this binary instead of building it
#   MUTATION_WORKERS=2           parallel mutants (default 1)
#   MUTATION_EFFICACY=90         fail below this efficacy percent (default 90)
set -euo pipefail
cd "$(dirname "$0")/.."

# Bump deliberately: a new gremlins brings new mutants and a new score.
GREMLINS_VERSION=v0.6.0

cache="${TOOLS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vault-plugin-secrets-mapsindoors}"
bin="${GREMLINS:-$cache/gremlins-$GREMLINS_VERSION/gremlins}"
if [[ ! -x "$bin" ]]; then
  echo "Building gremlins $GREMLINS_VERSION into $(dirname "$bin") (once per machine)." >&2
  tmp="$(mkdir -p "$cache" && mktemp -d "$cache/gremlins-build.XXXXXX")"
  # Built in a fresh GOBIN and moved into place whole; GOFLAGS cleared so a
  # -mod=... meant for this repository does not reach the tool's module.
  if ! (cd "$tmp" && GOBIN="$tmp" GOFLAGS='' go install \
        "github.com/go-gremlins/gremlins/cmd/gremlins@$GREMLINS_VERSION") >&2; then
    rm -rf "$tmp"; echo "Building gremlins failed." >&2; exit 1
  fi
  rm -rf "$(dirname "$bin")"; mv "$tmp" "$(dirname "$bin")"
fi

pkg="${1:-./upstream}"
# gremlins times each mutant's tests against its first, coverage-gathering
# run; a result from go test's cache would make that run take a second and
# every mutant time out. -count=1 is ignored by go commands without it.
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-count=1"
# A mutant whose tests run past coefficient x the unmutated run counts as
# TIMED OUT (a kill by gremlins' rules); 3 leaves room on a busy machine.
# No --test-cpu: v0.6.0 passes it to go test as the one argument "-cpu N",
# which go test refuses, so every mutant would count as killed.
exec "$bin" unleash "$pkg" \
  --workers "${MUTATION_WORKERS:-1}" \
  --timeout-coefficient 3 \
  --threshold-efficacy "${MUTATION_EFFICACY:-90}"
