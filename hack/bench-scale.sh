#!/usr/bin/env bash
# Scale benchmark: both controllers' memory with 50,000 running pods (simulated nodes), through
# an API server restart (every watch lists again) and a churn of 100,000 pods created and
# deleted. Extra arguments go to scale-bench (--pods, --pods-per-workload, --churn, --rounds).
# About 25 minutes on 2 cores, most of it the API server creating and deleting pods.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/install-prometheus.sh
export KUBEBUILDER_ASSETS="$(hack/test-binaries.sh)"
cargo build --release -q -p tailor-e2e -p tailor-recommender -p tailor-updater --bins
exec "${CARGO_TARGET_DIR:-target}/release/scale-bench" "$@"
