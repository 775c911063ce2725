#!/usr/bin/env bash
# Provides kube-apiserver and etcd for the tests and prints the directory that holds them.
#
# 1. If KUBEBUILDER_ASSETS names a directory holding kube-apiserver (v1.35.x) and etcd, use it.
# 2. Else, if the cache directory for the pinned versions is complete, use it.
# 3. Else build both from the Go module proxy into the cache (many minutes on 2 cores, once).
#
# Only the directory is printed on stdout; progress goes to stderr.
# Environment:
#   KUBE_VERSION   Kubernetes version to build (default v1.35.4)
#   ETCD_VERSION   etcd version to build (default v3.6.16)
#   TAILOR_CACHE   cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/tailor)
set -euo pipefail

KUBE_VERSION=${KUBE_VERSION:-v1.35.4}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
CACHE_ROOT=${TAILOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tailor}
DEST="$CACHE_ROOT/k8s-${KUBE_VERSION}-etcd-${ETCD_VERSION}"

log() { printf 'test-binaries: %s\n' "$*" >&2; }

kube_minor=$(printf '%s' "$KUBE_VERSION" | sed -E 's/^(v[0-9]+\.[0-9]+)\..*/\1/')

usable() {
  local dir=$1
  [ -x "$dir/kube-apiserver" ] && [ -x "$dir/etcd" ] || return 1
  "$dir/kube-apiserver" --version 2>/dev/null | grep -q "Kubernetes ${kube_minor}\." || return 1
  "$dir/etcd" --version >/dev/null 2>&1 || return 1
}

if [ -n "${KUBEBUILDER_ASSETS:-}" ]; then
  if usable "$KUBEBUILDER_ASSETS"; then
    log "using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
    printf '%s\n' "$KUBEBUILDER_ASSETS"
    exit 0
  fi
  log "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS lacks kube-apiserver ${kube_minor}.x or etcd; building instead"
fi

if usable "$DEST"; then
  printf '%s\n' "$DEST"
  exit 0
fi

command -v go >/dev/null || { log "go is required to build kube-apiserver and etcd (install Go >= 1.25)"; exit 1; }

mkdir -p "$CACHE_ROOT"
# One builder at a time (parallel test runs may call this together).
exec 9>"$CACHE_ROOT/.build.lock"
flock 9
if usable "$DEST"; then
  printf '%s\n' "$DEST"
  exit 0
fi

work=$(mktemp -d "$CACHE_ROOT/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0

# --- kube-apiserver -------------------------------------------------------
log "building kube-apiserver $KUBE_VERSION from the Go module proxy (this takes a while, once)"
mkdir -p "$work/out"
# shellcheck source=lib/kube-build.sh
. "$(dirname "$0")/lib/kube-build.sh"
kube_build "$KUBE_VERSION" k8s.io/kubernetes/cmd/kube-apiserver "$work/out/kube-apiserver"

# --- etcd -----------------------------------------------------------------
log "building etcd $ETCD_VERSION from the Go module proxy"
mkdir -p "$work/etcd"
cd "$work/etcd"
go mod init tailor.dev/hack/etcd >/dev/null 2>&1
printf 'require go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" >>go.mod
cat >tools.go <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
go mod tidy >&2
go build -trimpath -ldflags "-s -w" -o "$work/out/etcd" go.etcd.io/etcd/server/v3 >&2

rm -rf "$DEST.tmp"
mv "$work/out" "$DEST.tmp"
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
usable "$DEST" || { log "built binaries in $DEST do not report the expected versions"; exit 1; }
log "kube-apiserver: $("$DEST/kube-apiserver" --version)"
printf '%s\n' "$DEST"
