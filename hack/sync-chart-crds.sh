#!/usr/bin/env bash
# Copies the generated CRDs (deploy/crds/, one file per CRD) into the Helm chart
# (deploy/helm/tailor/crds/, the same file names).
#
# Each copy goes through `kustomize build`, which writes strings such as `Off` quoted: Helm and
# kubectl read YAML 1.1, where a plain Off is the boolean false. tests/tests/deploy.rs checks
# that the copies hold the same objects as deploy/crds/. Run this after `make crds`.
set -euo pipefail
cd "$(dirname "$0")/.."

tools=$(hack/tools.sh)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chart=deploy/helm/tailor/crds
rm -f "$chart"/*.yaml
for src in deploy/crds/*.yaml; do
  name=$(basename "$src")
  [ "$name" = kustomization.yaml ] && continue
  # A kustomization of this one file, so that each CRD keeps a file of its own.
  rm -rf "${work:?}"/*
  cp "$src" "$work/$name"
  printf 'resources:\n  - %s\n' "$name" >"$work/kustomization.yaml"
  out="$chart/$name"
  {
    printf '# Copied from deploy/crds/ by hack/sync-chart-crds.sh. Do not edit.\n'
    "$tools/kustomize" build "$work"
  } >"$out.tmp"
  mv "$out.tmp" "$out"
  printf 'sync-chart-crds: wrote %s\n' "$out" >&2
done
