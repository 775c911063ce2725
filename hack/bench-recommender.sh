#!/usr/bin/env bash
# Recommender benchmark: a real control plane and Prometheus backfilled with days of history of
# many workloads; the tailor-recommender binary's first pass, a steady-state pass and the first
# pass after a restart. Extra arguments go to recommender-bench (--workloads, --days, --step).
set -euo pipefail
cd "$(dirname "$0")/.."
export KUBEBUILDER_ASSETS="$(hack/test-binaries.sh)"
hack/install-prometheus.sh
cargo build --release -q -p tailor-e2e -p tailor-recommender --bins
exec "${CARGO_TARGET_DIR:-target}/release/recommender-bench" "$@"
