#!/usr/bin/env bash
# make demo: the plugin in a real Vault dev server, end to end.
#
# Builds the plugin, gets the pinned Vault (scripts/vault.sh), starts the fake
# MapsIndoors upstream, starts a Vault dev server on loopback, registers the
# plugin by checksum and version, enables it at mapsindoors/, configures it,
# creates a role and reads a token. Everything it starts is stopped on exit,
# Ctrl-C included.
#
# With MAPSINDOORS_CLIENT_ID, MAPSINDOORS_CLIENT_SECRET and
# MAPSINDOORS_CUSTOMER_ID (and optionally MAPSINDOORS_CLIENT_SECRET_ID) set,
# it talks to the real MapsIndoors instead. It then skips rotate-root unless
# MAPSINDOORS_DEMO_ROTATE=1, because a rotated secret would exist only in this
# throwaway dev server.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
# The plugin's version has one source, the Makefile's VERSION: `make demo`
# exports it; run directly, the demo reads its default the way `make build`
# below falls back to it.
version="${VERSION:-$(sed -nE 's/^VERSION[[:space:]]*\?=[[:space:]]*([^[:space:]]+).*/\1/p' Makefile)}"
[[ -n "$version" ]] || { echo "no VERSION in the environment nor a 'VERSION ?= ...' line in the Makefile" >&2; exit 1; }
port="${VAULT_DEMO_PORT:-18200}"
work="$(mktemp -d "${TMPDIR:-/tmp}/mapsindoors-demo.XXXXXX")"
pids=()

cleaned=0
cleanup() {
  [[ "$cleaned" == 1 ]] && return
  cleaned=1
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
  echo
  echo "==> Stopped everything the demo started."
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

step() { printf '\n==> %s\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }

step "Building the plugin"
make -s build
mkdir -p "$work/plugins"
cp bin/vault-plugin-secrets-mapsindoors "$work/plugins/"

step "Getting Vault (the pinned build, see e2e/vault/go.mod)"
VAULT="$(bash scripts/vault.sh)"
echo "$VAULT"
vault() { "$VAULT" "$@"; }

if [[ -n "${MAPSINDOORS_CLIENT_ID:-}" && -n "${MAPSINDOORS_CLIENT_SECRET:-}" ]]; then
  step "Using the real MapsIndoors (credentials from the environment)"
  : "${MAPSINDOORS_CUSTOMER_ID:?set MAPSINDOORS_CUSTOMER_ID too}"
  client_id="$MAPSINDOORS_CLIENT_ID"
  client_secret="$MAPSINDOORS_CLIENT_SECRET"
  client_secret_id="${MAPSINDOORS_CLIENT_SECRET_ID:-}"
  customer_id="$MAPSINDOORS_CUSTOMER_ID"
  real=1
else
  step "Starting the fake MapsIndoors upstream (TLS on loopback)"
  bin/fakeupstream -dir "$work" -token-lifetime 10m >"$work/fake.log" 2>&1 &
  pids+=($!)
  # fake.env is the last file the fake writes, each one whole.
  for _ in $(seq 1 100); do [[ -s "$work/fake.env" ]] && break; sleep 0.1; done
  [[ -s "$work/fake.env" ]] || { cat "$work/fake.log"; echo "the fake did not start" >&2; exit 1; }
  # shellcheck source=/dev/null # written by bin/fakeupstream at run time
  source "$work/fake.env"
  echo "fake upstream at $FAKE_URL"
  real=0
fi

step "Starting a Vault dev server on 127.0.0.1:$port"
export VAULT_ADDR="http://127.0.0.1:$port" VAULT_TOKEN=root
if vault status >/dev/null 2>&1; then
  echo "Something already answers on 127.0.0.1:$port; stop it or pick another port with VAULT_DEMO_PORT=..." >&2
  exit 1
fi
printf 'plugin_directory = "%s"\n' "$work/plugins" >"$work/vault.hcl"
# Started directly, not through the vault function, so that $! is Vault itself.
"$VAULT" server -dev -dev-root-token-id=root -dev-listen-address="127.0.0.1:$port" \
  -config="$work/vault.hcl" >"$work/vault.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 150); do vault status >/dev/null 2>&1 && break; sleep 0.2; done
vault status >/dev/null 2>&1 || { tail -20 "$work/vault.log"; echo "Vault did not start" >&2; exit 1; }
echo "Vault is up (log: $work/vault.log)"

step "Registering the plugin by checksum and version, and enabling it"
sha="$(sha256sum "$work/plugins/vault-plugin-secrets-mapsindoors" | cut -d' ' -f1)"
show vault plugin register -sha256="$sha" -version="$version" -command=vault-plugin-secrets-mapsindoors \
  secret vault-plugin-secrets-mapsindoors
show vault secrets enable -path=mapsindoors -plugin-version="$version" vault-plugin-secrets-mapsindoors

if [[ "$real" == 1 ]]; then
  step "Storing the root client credentials (the secret goes in on stdin)"
  printf '$ vault write mapsindoors/config client_id=%s client_secret=- customer_id=%s client_secret_id=%s\n' \
    "$client_id" "$customer_id" "$client_secret_id"
  printf '%s' "$client_secret" | vault write mapsindoors/config client_id="$client_id" client_secret=- \
    customer_id="$customer_id" client_secret_id="$client_secret_id"
else
  step "Storing the root client credentials (the fake's config file, so the secret is on no command line)"
  echo '$ vault write mapsindoors/config @config-mapsindoors.json'
  vault write mapsindoors/config @"$work/config-mapsindoors.json"
fi
show vault read mapsindoors/config

step "Creating a role"
show vault write mapsindoors/roles/demo ttl=5m

step "Reading a short-lived token"
show vault read mapsindoors/creds/demo

if [[ "$real" == 0 || "${MAPSINDOORS_DEMO_ROTATE:-}" == 1 ]]; then
  step "Rotating the root client secret"
  show vault write -f mapsindoors/rotate-root
  show vault list mapsindoors/client-secrets
  step "Reading a token with the rotated secret"
  show vault read mapsindoors/creds/demo
else
  step "Skipping rotate-root against the real service (set MAPSINDOORS_DEMO_ROTATE=1 to rotate for real)"
fi
