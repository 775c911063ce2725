#!/usr/bin/env bash
# Simulator benchmark: a real control plane, one tailor-sim process with 100 nodes, 5,000 pods,
# 1,000 in-place resizes. Prints pods started per second, resizes handled per second and the
# simulator's peak RSS. Extra arguments go to sim-bench (--nodes, --pods, --resizes).
set -euo pipefail
cd "$(dirname "$0")/.."
export KUBEBUILDER_ASSETS="$(hack/test-binaries.sh)"
cargo build --release -q -p tailor-e2e --bins
exec "${CARGO_TARGET_DIR:-target}/release/sim-bench" "$@"
