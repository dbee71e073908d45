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

for target in "${targets[@]}"; do
  read -r pkg name <<<"$target"
  echo "fuzz: ${name} in ${pkg} for ${fuzztime}"
  "$go" test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg"
done
