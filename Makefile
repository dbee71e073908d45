# Targets a newcomer needs: `make demo` and `make test` (see README.md).
PLUGIN      := vault-plugin-secrets-mapsindoors
VERSION     ?= v0.1.0
BIN         := bin
LDFLAGS     := -X github.com/mapsindoors/vault-plugin-secrets-mapsindoors.Version=$(VERSION)
GO          ?= go

.PHONY: all build demo test unit e2e vault fmt fmt-check vet bench bench-e2e

all: build

build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/$(PLUGIN) ./cmd/$(PLUGIN)
	$(GO) build -trimpath -o $(BIN)/fakeupstream ./cmd/fakeupstream

# A real Vault dev server with the plugin, against the fake upstream.
demo:
	bash scripts/demo.sh

# The README's test command, and what CI runs: checks, unit tests, then the
# end-to-end tests in real Vault servers (the pinned Vault is built once per
# machine; MAPSINDOORS_E2E_SKIP=1 skips them, and they say so).
test: fmt-check vet unit e2e

unit:
	$(GO) test -race -count=1 ./...

e2e: vault
	cd e2e && VAULT_BIN="$$(bash ../scripts/vault.sh)" $(GO) test -count=1 -timeout 25m .

# Builds (once) and prints the pinned Vault server.
vault:
	@bash scripts/vault.sh

fmt:
	gofmt -w .

fmt-check:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...
	cd e2e && $(GO) vet ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# creds reads against Vault's built-in KV, through a real Vault dev server.
bench-e2e: vault
	cd e2e && VAULT_BIN="$$(bash ../scripts/vault.sh)" $(GO) test -run '^$$' -bench . -benchtime 5s .
