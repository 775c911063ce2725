#!/usr/bin/env bash
# Copies the generated CRDs (deploy/crds/) into the Helm chart (deploy/helm/tailor/crds/).
#
# The copy goes through `kustomize build`, which writes strings such as `Off` quoted: Helm and
# kubectl read YAML 1.1, where a plain Off is the boolean false. tests/tests/deploy.rs checks
# that the copy holds the same objects as deploy/crds/. Run this after `make crds`.
set -euo pipefail
cd "$(dirname "$0")/.."

tools=$(hack/tools.sh)
out=deploy/helm/tailor/crds/tailor.dev_verticalautoscalers.yaml
{
  printf '# Copied from deploy/crds/ by hack/sync-chart-crds.sh. Do not edit.\n'
  "$tools/kustomize" build deploy/crds
} >"$out.tmp"
mv "$out.tmp" "$out"
printf 'sync-chart-crds: wrote %s\n' "$out" >&2
