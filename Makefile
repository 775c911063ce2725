# tailor — the commands the README documents.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO ?= cargo

.PHONY: help test test-deps lint fmt crds unit bench-sim bench-recommender bench-updater

bench-sim: ## simulator benchmark: 100 nodes, 5,000 pods, 1,000 resizes (prints rates and peak RSS)
	hack/bench-sim.sh

bench-recommender: ## recommender benchmark: 2,000 workloads, 7 days (first, steady-state, after-restart passes)
	hack/bench-recommender.sh

bench-updater: ## updater benchmark: 1,000 VerticalAutoscalers over 5,000 pods, every recommendation changed at once
	hack/bench-updater.sh

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

test: test-deps lint ## install what the tests need, check formatting and lints, run every test
	KUBEBUILDER_ASSETS="$$(hack/test-binaries.sh)" $(CARGO) test --workspace --all-targets

test-deps: ## kube-apiserver + etcd (built once, cached) and Prometheus (Debian package)
	hack/install-prometheus.sh
	@assets="$$(hack/test-binaries.sh)" && echo "test binaries in $$assets:" && \
	  "$$assets/kube-apiserver" --version && "$$assets/etcd" --version | head -n1 && \
	  prometheus --version 2>&1 | head -n1 && promtool --version 2>&1 | head -n1

unit: ## the tests that need no servers
	$(CARGO) test --workspace --lib --bins -p tailor-crds

lint: ## rustfmt and clippy, warnings are errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## format the code
	$(CARGO) fmt --all

crds: ## regenerate deploy/crds/ from the Rust types
	$(CARGO) run -q -p tailor-crds --bin crdgen
