# Targets a newcomer needs: `make demo` and `make test` (see README.md).
PLUGIN      := vault-plugin-secrets-mapsindoors
VERSION     ?= v0.1.0
BIN         := bin
LDFLAGS     := -X github.com/mapsindoors/vault-plugin-secrets-mapsindoors.Version=$(VERSION)
GO          ?= go

.PHONY: all build test unit fmt fmt-check vet bench

all: build

build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/$(PLUGIN) ./cmd/$(PLUGIN)
	$(GO) build -trimpath -o $(BIN)/fakeupstream ./cmd/fakeupstream

# The README's test command, and what CI runs.
test: fmt-check vet unit

unit:
	$(GO) test -race -count=1 ./...

fmt:
	gofmt -w .

fmt-check:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...
