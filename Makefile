# edgesync: the targets people and CI both use.
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS  := -X main.version=$(VERSION) -X main.commit=$(COMMIT)
PKGS     := ./...
# The image the manifests run: name and tag come from their one place, the kustomize component.
IMAGE_COMPONENT := deploy/k8s/components/image/kustomization.yaml
IMAGE    ?= $(shell sed -n 's/^ *newName: *//p' $(IMAGE_COMPONENT)):$(shell sed -n 's/^ *newTag: *//p' $(IMAGE_COMPONENT))

.PHONY: build test soak lint bench demo run image push postgres node-tools chromium canister clean

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/edgesync ./cmd/edgesync
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/icp-replica ./cmd/icp-replica

# The test command of the README: installs PostgreSQL (and chromium, for the
# storage console's browser test) if missing, then runs every test with the
# race detector against throwaway Postgres clusters and in-process NATS servers.
test: postgres node-tools chromium
	$(GO) test -race -count=1 -timeout 9m $(PKGS)

# The production-shape scenarios (prodtest/) at volume, including outages longer
# than the stream's duplicate window (about 20 minutes); prints a table of
# scenario -> events -> lost / duplicated / out of order -> peak RSS. Known
# defects show as XFAIL with the issue item that fixes them. See docs/testing.md.
soak: postgres
	cd prodtest && EDGESYNC_SOAK=1 $(GO) test -count=1 -timeout 60m -v -run 'TestProd_' .

postgres:
	@scripts/ensure-postgres.sh

# Debian's chromium, which the storage console's browser test drives (internal/console).
chromium:
	@scripts/ensure-chromium.sh

# The pinned npm tools (tools/node): the Motoko compiler and interpreter, the IC JavaScript agent.
node-tools:
	@scripts/ensure-node-tools.sh

# The memory-store canister: canister/build/memory_store.wasm and the Candid interface the
# compiler derives from the source (a test checks it against icp/memory_store.did).
canister: node-tools
	node tools/node/build-canister.js canister canister/build

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	@if command -v staticcheck >/dev/null 2>&1; then staticcheck $(PKGS); else echo "staticcheck not installed; skipped (go install honnef.co/go/tools/cmd/staticcheck@latest)"; fi

# Benchmarks with the figures the issues ask for; see docs/benchmarks.md.
bench: postgres
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 60m ./bench/...
	$(GO) test -run '^$$' -bench 'BenchmarkUpload|BenchmarkMirror' -benchtime 3x -timeout 30m ./icp/ ./mirror/

demo: postgres build
	$(GO) run ./cmd/edgesync-demo

run: build
	bin/edgesync run

# Builds (and `push` pushes) exactly the image deploy/k8s references; to release, change newTag in
# $(IMAGE_COMPONENT) first. The binary reports the tag as its version.
image:
	docker build --build-arg VERSION=$(lastword $(subst :, ,$(IMAGE))) --build-arg COMMIT=$(COMMIT) -t $(IMAGE) .

push: image
	docker push $(IMAGE)

clean:
	rm -rf bin data canister/build
