#!/usr/bin/env bash
# Runs each fuzz target for FUZZTIME (default 5s). go test fuzzes one
# target per run, so each gets its own. Seeds and the committed corpora in
# testdata/fuzz/ also run with every plain `go test`; a failure found here
# is written to testdata/fuzz/<target>/ for a regression test.
set -euo pipefail
cd "$(dirname "$0")/.."

go="${GO:-go}"
fuzztime="${FUZZTIME:-5s}"

# package and target, one pair a line
targets=(
  "./upstream FuzzTokenResponse"
  "./upstream FuzzClientSecretsResponses"
  ". FuzzParseProperties"
  ". FuzzConfigValidation"
)

# Go's fuzzing engine can end a run whose time is up with "context deadline
# exceeded" and no failing input (seen on a loaded 2-core machine): that is
# the engine stopping, not a finding, so such a run is tried once more. A
# run that wrote a failing input always fails.
fuzz_once() {
  local pkg="$1" name="$2" out
  out="$(mktemp)"
  if "$go" test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg" 2>&1 | tee "$out"; then
    rm -f "$out"; return 0
  fi
  if grep -q "context deadline exceeded" "$out" && ! grep -q "Failing input written" "$out"; then
    rm -f "$out"; return 2
  fi
  rm -f "$out"; return 1
}

for target in "${targets[@]}"; do
  read -r pkg name <<<"$target"
  echo "fuzz: ${name} in ${pkg} for ${fuzztime}"
  rc=0
  fuzz_once "$pkg" "$name" || rc=$?
  if [[ $rc == 2 ]]; then
    echo "fuzz: ${name} stopped with the engine's deadline and no failing input; once more"
    fuzz_once "$pkg" "$name"
  elif [[ $rc != 0 ]]; then
    exit "$rc"
  fi
done
