#!/usr/bin/env bash
# Admission benchmark: a real control plane and the tailor-updater binary serving its webhook;
# pod creates with and without the webhook, side by side. Extra arguments go to
# admission-bench (--pods, --concurrency).
set -euo pipefail
cd "$(dirname "$0")/.."
export KUBEBUILDER_ASSETS="$(hack/test-binaries.sh)"
cargo build --release -q -p tailor-e2e -p tailor-updater --bins
target="$(realpath -m "${CARGO_TARGET_DIR:-target}")"
go -C hack/bench/floor-webhook build -o "$target/release/floor-webhook" .
exec "$target/release/admission-bench" --floor-webhook "$target/release/floor-webhook" "$@"
