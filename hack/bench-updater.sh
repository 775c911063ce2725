#!/usr/bin/env bash
# Updater benchmark: a real control plane, the node simulator with thousands of pods, one
# VerticalAutoscaler per workload, and the tailor-updater binary; every recommendation changes
# at once. Extra arguments go to updater-bench (--workloads, --pods-per-workload, --updater-arg).
set -euo pipefail
cd "$(dirname "$0")/.."
export KUBEBUILDER_ASSETS="$(hack/test-binaries.sh)"
cargo build --release -q -p tailor-e2e -p tailor-updater --bins
exec "${CARGO_TARGET_DIR:-target}/release/updater-bench" "$@"
