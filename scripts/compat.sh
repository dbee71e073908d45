#!/usr/bin/env bash
# The compatibility matrix (make compat): the same suite, e2e/compat_test.go,
# against each Vault server below, each built once per machine by
# scripts/vault.sh from its own module and cached beside the pinned one.
#
#   scripts/compat.sh          build what is missing, run the suite on each
#   scripts/compat.sh build    only build the servers (what .ci/run starts
#                              in the background while the checks run)
#
# COMPAT_MATRIX overrides the matrix: "MODULE:SUITE ..." with SUITE full or
# smoke (register, config, creds, rotate-root); COMPAT_SUITE=full runs the
# full suite everywhere.
set -euo pipefail
cd "$(dirname "$0")/.."

# Every server gets the full suite: the suites run side by side and mostly
# wait, so a full one costs about as much wall time as a smoke (about 90 s
# against 35 s here); what a fresh 2-core CI run pays for is building the
# servers (measured in README.md's opening: a cold .ci/run, the four builds
# included, took 22-28 minutes, under the 45 it must keep). Should it not
# fit, give the servers between the oldest and the newest ":smoke". Not
# here: Vault 1.20 (no 1.20 release builds from the Go module proxy against
# a published sdk), 1.21.3 and 1.21.4 (neither builds against a published
# sdk; 1.21.2 is the newest 1.21 that does).
COMPAT_MATRIX="${COMPAT_MATRIX:-e2e/vault-1.19.0:full e2e/vault-1.19.5:full e2e/vault:full e2e/vault-1.21.2:full}"
read -r -a matrix <<<"$COMPAT_MATRIX"

if [[ "${1:-}" == "build" ]]; then
  for entry in "${matrix[@]}"; do
    bash scripts/vault.sh "${entry%%:*}" >/dev/null
  done
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# One test binary for every server: compiled once, not once per run.
(cd e2e && CGO_ENABLED=0 go test -trimpath -c -o "$work/e2e.test" .)

# Each server's suite starts as soon as its binary is there (the next one
# may still be building) and they run side by side: they mostly wait on
# Vault's clock.
declare -a names pids logs suites
for entry in "${matrix[@]}"; do
  module="${entry%%:*}"
  suite="${COMPAT_SUITE:-${entry##*:}}"
  bin="$(bash scripts/vault.sh "$module")"
  version="$("$bin" version | sed -n 's/^Vault v\([0-9][0-9.]*\).*/\1/p')"
  log="$work/vault-$version.log"
  echo "Vault $version ($module): $suite suite started." >&2
  (
    start=$(date +%s) status=0
    cd e2e
    VAULT_BIN="$bin" MAPSINDOORS_COMPAT_VAULT="$version" MAPSINDOORS_COMPAT_SUITE="$suite" \
      "$work/e2e.test" -test.run '^TestCompat_' -test.count 1 -test.v -test.timeout 15m -test.parallel 16 >"$log" 2>&1 || status=$?
    echo $(( $(date +%s) - start )) >"$log.seconds"
    exit $status
  ) &
  names+=("$version") pids+=($!) logs+=("$log") suites+=("$suite")
done

rc=0
summary=""
for i in "${!pids[@]}"; do
  if wait "${pids[$i]}"; then result=ok; else result=FAILED; rc=1; fi
  secs="$(cat "${logs[$i]}.seconds" 2>/dev/null || echo '?')"
  echo "=== Vault ${names[$i]} (${suites[$i]} suite): $result" >&2
  # Which tests ran, passed or were skipped, and any failure in full.
  if [[ $result == ok ]]; then
    grep -E '^\s*--- (PASS|SKIP)' "${logs[$i]}" >&2 || true
  else
    cat "${logs[$i]}" >&2
  fi
  summary+="$(printf '%-8s %-6s %-7s %ss' "${names[$i]}" "${suites[$i]}" "$result" "$secs")"$'\n'
done
echo "Compatibility matrix:" >&2
printf '%s' "$summary" >&2
exit $rc
