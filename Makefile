# spawn — build, test, lint, bench. Only Go is needed; `make test` runs everything on the
# in-process kumo emulator.
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo none)
LDFLAGS   := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
# lambda.norpc leaves out aws-lambda-go's legacy net/rpc runtime: net/rpc's reflection on
# methods stops the linker from dropping unused SDK methods (63 MB → 18 MB binary).
BUILDFLAGS := -tags lambda.norpc -trimpath
TESTFLAGS ?=
# GoReleaser builds the release archives (.goreleaser.yaml); v2.15.1 is the newest that
# builds with this Go. It is installed on first use from the module proxy, under a name
# that carries its version in GOPATH/bin, so every clone on the machine shares one build
# (compiling it takes minutes).
GORELEASER_VERSION := v2.15.1
GORELEASER ?= $(shell $(GO) env GOPATH)/bin/goreleaser-$(GORELEASER_VERSION)

.PHONY: all build test test-localstack test-race lint bench fuzz demo clean release-snapshot release-binary release-check

all: build

build:
	mkdir -p bin
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build $(BUILDFLAGS) -ldflags "$(LDFLAGS)" -o bin/spawn-linux-amd64 .
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build $(BUILDFLAGS) -ldflags "$(LDFLAGS)" -o bin/spawn-linux-arm64 .
	CGO_ENABLED=0 $(GO) build $(BUILDFLAGS) -ldflags "$(LDFLAGS)" -o bin/spawn .

test:
	$(GO) test -count=1 $(TESTFLAGS) ./...

# test-localstack: the same suite on LocalStack, started by testcontainers-go. Needs a
# Docker engine and the pinned image (pulled on first use; see the README's Tests
# section); without an engine every integration test skips and says why.
test-localstack:
	SPAWN_TEST_BACKEND=localstack $(GO) test -count=1 -timeout 60m $(TESTFLAGS) ./...

lint:
	gofmt -l . | tee /dev/stderr | (! read -r _)
	$(GO) vet ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem -count=1 .

# demo: the main job on an in-process AWS emulator; needs only Go, no AWS account.
demo:
	mkdir -p bin
	CGO_ENABLED=0 $(GO) build $(BUILDFLAGS) -ldflags "$(LDFLAGS)" -o bin/spawn .
	CGO_ENABLED=0 GOOS=linux $(GO) build $(BUILDFLAGS) -ldflags "$(LDFLAGS)" -o bin/spawn-linux-bootstrap .
	$(GO) run ./demo --spawn bin/spawn --bootstrap bin/spawn-linux-bootstrap

# fuzz: the parser and event-decoder fuzz targets, longer than CI's short run.
FUZZTIME ?= 60s
fuzz:
	for t in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' *_test.go | sed 's/^func //'); do \
		$(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) . || exit 1; \
	done

# release-snapshot: the release archives of the current commit, without publishing:
# dist/spawn_<version>_<os>_<arch>.tar.gz for linux and darwin, amd64 and arm64, and
# dist/checksums.txt (SHA-256).
release-snapshot: $(GORELEASER)
	SPAWN_COMMIT=$(COMMIT) $(GORELEASER) release --snapshot --clean

# release-binary: the snapshot build of one target only (GOOS/GOARCH, linux/amd64 unless
# set), no archive: what CI runs, since a cold build of the four targets takes minutes each.
release-binary: $(GORELEASER)
	GOOS=$${GOOS:-linux} GOARCH=$${GOARCH:-amd64} SPAWN_COMMIT=$(COMMIT) $(GORELEASER) build --snapshot --clean --single-target

release-check: $(GORELEASER)
	$(GORELEASER) check

$(GORELEASER):
	rm -rf bin/.goreleaser
	mkdir -p bin/.goreleaser $(dir $@)
	GOBIN=$(CURDIR)/bin/.goreleaser $(GO) install github.com/goreleaser/goreleaser/v2@$(GORELEASER_VERSION)
	mv bin/.goreleaser/goreleaser $@

clean:
	rm -rf bin dist
