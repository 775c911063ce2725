# tailor — the commands the README documents.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO ?= cargo

.PHONY: help demo demo-ci demo-real-node test test-deps lint fmt crds observability unit bench-sim bench-recommender bench-updater bench-admission bench-scale

demo: ## the whole system on this machine: API server, simulated nodes, Prometheus with a week of history, recommender, updater (Ctrl-C stops it)
	hack/install-prometheus.sh
	$(CARGO) build -p tailor-recommender -p tailor-updater
	$(CARGO) build -p tailor-e2e --bin tailor-demo
	KUBEBUILDER_ASSETS="$$(hack/test-binaries.sh)" $(CARGO) run -q -p tailor-e2e --bin tailor-demo

demo-ci: ## the demo without a person: checks the expected outcome and every dashboard and alert query, then exits
	hack/install-prometheus.sh
	$(CARGO) build -p tailor-recommender -p tailor-updater
	KUBEBUILDER_ASSETS="$$(hack/test-binaries.sh)" $(CARGO) run -q -p tailor-e2e --bin tailor-demo -- --ci

demo-real-node: ## the demo's workloads on a real kubelet + containerd + runc on this machine (root; CPU scaled to fit), printing the cgroups before and after each resize (Ctrl-C stops it; DEMO_ARGS=--ci checks and exits)
	hack/install-prometheus.sh
	hack/real-node.sh all
	$(CARGO) build -p tailor-recommender -p tailor-updater
	$(CARGO) build -p tailor-e2e --bin tailor-demo
	KUBEBUILDER_ASSETS="$$(hack/test-binaries.sh)" $(CARGO) run -q -p tailor-e2e --bin tailor-demo -- --real-node $(DEMO_ARGS)

bench-sim: ## simulator benchmark: 100 nodes, 5,000 pods, 1,000 resizes (prints rates and peak RSS)
	hack/bench-sim.sh

bench-recommender: ## recommender benchmark: 2,000 workloads, 14 days (first, steady-state, after-restart passes)
	hack/bench-recommender.sh

bench-updater: ## updater benchmark: 1,000 VerticalAutoscalers over 5,000 pods, every recommendation changed at once
	hack/bench-updater.sh

bench-scale: ## scale benchmark: recommender and updater memory at 50,000 pods, through an API server restart and a churn of 100,000 pods
	hack/bench-scale.sh

bench-admission: ## admission benchmark: 1,000 pod creates each with tailor's webhook, a minimal Go one and none, side by side
	hack/bench-admission.sh

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

test: test-deps lint ## install what the tests need, check formatting and lints, run every test
	KUBEBUILDER_ASSETS="$$(hack/test-binaries.sh)" TAILOR_CONTROLLER_MANAGER="$$(hack/controller-manager.sh)" \
	  CARGO=$(CARGO) hack/run-tests.sh

test-deps: ## kube-apiserver + etcd + kube-controller-manager, helm + kustomize, a kubelet (built once, cached), Prometheus, containerd and jq (Debian packages), the real-node image
	hack/install-prometheus.sh
	@command -v jq >/dev/null || { echo "test-deps: installing jq (Debian)"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends jq >&2; }
	@if [ "$${TAILOR_REAL_NODE:-}" = skip ]; then echo "real node: skipped (TAILOR_REAL_NODE=skip)"; \
	  else hack/real-node.sh all; fi
	@tools="$$(hack/tools.sh)" && "$$tools/helm" version --short && "$$tools/kustomize" version
	@assets="$$(hack/test-binaries.sh)" && echo "test binaries in $$assets:" && \
	  "$$assets/kube-apiserver" --version && "$$assets/etcd" --version | head -n1 && \
	  "$$(hack/controller-manager.sh)/kube-controller-manager" --version && \
	  prometheus --version 2>&1 | head -n1 && promtool --version 2>&1 | head -n1

unit: ## the tests that need no servers
	$(CARGO) test --workspace --lib --bins -p tailor-crds

lint: ## rustfmt and clippy, warnings are errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## format the code
	$(CARGO) fmt --all

crds: ## regenerate deploy/crds/ from the Rust types (one file per CRD), and the chart's copies
	$(CARGO) run -q -p tailor-crds --bin crdgen
	hack/sync-chart-crds.sh

observability: ## regenerate the PrometheusRule and the dashboards ConfigMap from their sources
	hack/gen-observability.sh
