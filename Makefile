# Targets a newcomer needs: `make demo` and `make test` (see README.md).
PLUGIN      := vault-plugin-secrets-mapsindoors
VERSION     ?= v0.1.0
# The e2e harness and the demo read it from the environment as well.
export VERSION
BIN         := bin
# Where `make release` puts the release binaries and SHA256SUMS, and for
# which platforms (GOOS/GOARCH) it builds them.
DIST        ?= dist
RELEASE_PLATFORMS ?= linux/amd64 linux/arm64 darwin/amd64 darwin/arm64
LDFLAGS     := -X github.com/mapsindoors/vault-plugin-secrets-mapsindoors.Version=$(VERSION)
GO          ?= go
# The release's build flags, which build, vet and the e2e tests (and the
# plugin they build) use too: each compiles the dependencies the same way,
# so a make test run compiles them once for all of them, not once each.
# The unit tests cannot share them: -race needs cgo.
STATIC      := CGO_ENABLED=0
TRIMPATH    := -trimpath

.PHONY: all build release demo test unit fuzz e2e vault clean-vault fmt fmt-check vet lint lint-go lint-sh tidy-check print-version print-release-platforms bench bench-e2e compat mutation

all: build

build:
	$(STATIC) $(GO) build $(TRIMPATH) -ldflags "$(LDFLAGS)" -o $(BIN)/$(PLUGIN) ./cmd/$(PLUGIN)
	$(STATIC) $(GO) build $(TRIMPATH) -o $(BIN)/fakeupstream ./cmd/fakeupstream

# Static release binaries for RELEASE_PLATFORMS, stamped with VERSION, and
# their SHA256SUMS, in $(DIST): make release VERSION=v0.2.0
release:
	VERSION=$(VERSION) LDFLAGS="$(LDFLAGS)" DIST=$(DIST) PLATFORMS="$(RELEASE_PLATFORMS)" bash scripts/release.sh

# A real Vault dev server with the plugin, against the fake upstream.
demo:
	VERSION=$(VERSION) bash scripts/demo.sh

# The README's test command, and what CI runs: checks (cheapest first), unit
# tests, then the fuzz targets beside the end-to-end tests in real Vault
# servers (the pinned Vault is built once per machine; MAPSINDOORS_E2E_SKIP=1
# skips them, and they say so). The end-to-end tests spend most of their time
# waiting on Vault's clock, so the fuzz step's compile and fuzzing use the
# cores they leave idle; the e2e output (go test prints it at the end) stays
# in one piece.
test: fmt-check vet lint unit
	@$(MAKE) --no-print-directory -j2 fuzz e2e

unit:
	$(GO) test -race -count=1 ./...

# Each fuzz target for a few seconds (FUZZTIME, default 5s); their seed
# corpora also run with every plain go test.
fuzz:
	FUZZTIME=$${FUZZTIME:-5s} bash scripts/fuzz.sh

# The end-to-end tests mostly wait (on Vault's periodic function, a cron
# minute, a lease's end), so all of them run at once, not GOMAXPROCS at a
# time: warm on 2 cores the suite took 205 s at 6 and 152 s at 16.
E2E_PARALLEL ?= 16
e2e: vault
	cd e2e && VAULT_BIN="$$(bash ../scripts/vault.sh)" PLUGIN_VERSION=$(VERSION) $(STATIC) $(GO) test $(TRIMPATH) -count=1 -timeout 25m -parallel $(E2E_PARALLEL) . ./oauthserver/

# Builds (once) and prints the pinned Vault server.
vault:
	@bash scripts/vault.sh

# Removes every cached Vault build (each is kept by version and by what
# built it, so older ones pile up); the next run builds what it needs.
clean-vault:
	@bash scripts/vault.sh --clean

# The compatibility matrix: e2e/compat_test.go against each Vault server of
# scripts/compat.sh (1.19 LTS to 1.21), each built once per machine and
# cached beside the pinned one. .ci/run runs it after make test.
compat:
	PLUGIN_VERSION=$(VERSION) bash scripts/compat.sh

# Mutation testing of the engine (slow; not part of make test).
mutation:
	bash scripts/mutation.sh

fmt:
	gofmt -w .

fmt-check:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(STATIC) $(GO) vet $(TRIMPATH) ./...
	cd e2e && $(STATIC) $(GO) vet $(TRIMPATH) ./...

# Static checks that need no Vault: go mod tidy, shellcheck, golangci-lint.
lint: lint-sh tidy-check lint-go

# Fails if `go mod tidy` would change go.mod or go.sum (and shows the diff).
# e2e/vault is left out: tidying it would resolve all of Vault's dependencies.
tidy-check:
	@rc=0; \
	  $(GO) mod tidy -diff || { echo "go.mod/go.sum are not tidy: run 'go mod tidy'"; rc=1; }; \
	  (cd e2e && $(GO) mod tidy -diff) || { echo "e2e/go.mod/go.sum are not tidy: run 'cd e2e && go mod tidy'"; rc=1; }; \
	  exit $$rc

lint-sh:
	@command -v shellcheck >/dev/null 2>&1 || { \
	  echo "shellcheck is not installed; make lint needs it."; \
	  echo "Install it with 'sudo apt-get install shellcheck' (Debian/Ubuntu) or 'brew install shellcheck' (macOS)."; \
	  exit 1; }
	shellcheck scripts/*.sh .ci/run

# golangci-lint at the version pinned in scripts/tools.sh (built once per
# machine), over both modules, reporting both before failing. e2e/vault, one
# main.go around Vault's CLI, is left out: loading it type-checks all of Vault.
# It loads the dependencies through go list -export, which compiles them:
# with vet's flags, so it reuses what vet compiled.
lint-go:
	@gl="$$(bash scripts/tools.sh golangci-lint)" || exit 1; rc=0; \
	  export $(STATIC) GOFLAGS="$(TRIMPATH) $$GOFLAGS"; \
	  echo "golangci-lint run ./..."; "$$gl" run ./... || rc=1; \
	  echo "golangci-lint run ./... (in e2e/)"; (cd e2e && "$$gl" run --config ../.golangci.yml ./...) || rc=1; \
	  exit $$rc

print-version:
	@echo $(VERSION)

print-release-platforms:
	@echo $(RELEASE_PLATFORMS)

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# creds reads against Vault's built-in KV, through a real Vault dev server.
bench-e2e: vault
	cd e2e && VAULT_BIN="$$(bash ../scripts/vault.sh)" PLUGIN_VERSION=$(VERSION) $(STATIC) $(GO) test $(TRIMPATH) -run '^$$' -bench . -benchtime 5s .
