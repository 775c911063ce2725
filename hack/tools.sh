#!/usr/bin/env bash
# Provides helm (v3) and kustomize (v5) and prints the directory that holds them.
#
# 1. If the cache directory for the pinned versions is complete, use it.
# 2. Else build both from the Go module proxy into the cache (a few minutes on 2 cores, once).
#
# Only the directory is printed on stdout; progress goes to stderr.
# Environment:
#   HELM_VERSION       helm version to build (default v3.22.0)
#   KUSTOMIZE_VERSION  kustomize version to build (default v5.8.2)
#   TAILOR_CACHE       cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/tailor)
set -euo pipefail

HELM_VERSION=${HELM_VERSION:-v3.22.0}
KUSTOMIZE_VERSION=${KUSTOMIZE_VERSION:-v5.8.2}
CACHE_ROOT=${TAILOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tailor}
DEST="$CACHE_ROOT/tools-helm-${HELM_VERSION}-kustomize-${KUSTOMIZE_VERSION}"

log() { printf 'tools: %s\n' "$*" >&2; }

usable() {
  local dir=$1
  [ -x "$dir/helm" ] && [ -x "$dir/kustomize" ] || return 1
  "$dir/helm" version --short 2>/dev/null | grep -q "^${HELM_VERSION}+\{0,1\}" || return 1
  "$dir/kustomize" version 2>/dev/null | grep -q "${KUSTOMIZE_VERSION}" || return 1
}

if usable "$DEST"; then
  printf '%s\n' "$DEST"
  exit 0
fi

command -v go >/dev/null || { log "go is required to build helm and kustomize (install Go >= 1.26)"; exit 1; }

mkdir -p "$CACHE_ROOT"
# One builder at a time (parallel test runs may call this together).
exec 9>"$CACHE_ROOT/.tools.lock"
flock 9
if usable "$DEST"; then
  printf '%s\n' "$DEST"
  exit 0
fi

work=$(mktemp -d "$CACHE_ROOT/tools.XXXXXX")
trap 'rm -rf "$work"' EXIT
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
mkdir -p "$work/out"

# --- helm -----------------------------------------------------------------
log "building helm $HELM_VERSION from the Go module proxy (this takes a while, once)"
mkdir -p "$work/helm"
cd "$work/helm"
go mod init tailor.dev/hack/helm >/dev/null 2>&1
printf 'require helm.sh/helm/v3 %s\n' "$HELM_VERSION" >>go.mod
cat >tools.go <<'GO'
//go:build tools

package tools

import _ "helm.sh/helm/v3/cmd/helm"
GO
go mod tidy >&2
# The default Kubernetes version helm template assumes follows the client-go it is built with,
# as helm's own Makefile does.
client_go=$(go list -m -f '{{.Version}}' k8s.io/client-go)
k8s_minor=$(printf '%s' "$client_go" | sed -E 's/^v0\.([0-9]+)\..*/\1/')
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
ldflags="$ldflags -X helm.sh/helm/v3/internal/version.metadata="
ldflags="$ldflags -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  ldflags="$ldflags -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=${k8s_minor}"
done
go build -trimpath -ldflags "$ldflags" -o "$work/out/helm" helm.sh/helm/v3/cmd/helm >&2

# --- kustomize ------------------------------------------------------------
log "building kustomize $KUSTOMIZE_VERSION from the Go module proxy"
mkdir -p "$work/kustomize"
cd "$work/kustomize"
go mod init tailor.dev/hack/kustomize >/dev/null 2>&1
printf 'require sigs.k8s.io/kustomize/kustomize/v5 %s\n' "$KUSTOMIZE_VERSION" >>go.mod
cat >tools.go <<'GO'
//go:build tools

package tools

import _ "sigs.k8s.io/kustomize/kustomize/v5"
GO
go mod tidy >&2
go build -trimpath \
  -ldflags "-s -w -X sigs.k8s.io/kustomize/api/provenance.version=${KUSTOMIZE_VERSION}" \
  -o "$work/out/kustomize" sigs.k8s.io/kustomize/kustomize/v5 >&2

rm -rf "$DEST.tmp"
mv "$work/out" "$DEST.tmp"
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
usable "$DEST" || { log "built tools in $DEST do not report the expected versions"; exit 1; }
log "helm: $("$DEST/helm" version --short)"
log "kustomize: $("$DEST/kustomize" version)"
printf '%s\n' "$DEST"
