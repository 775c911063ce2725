#!/usr/bin/env bash
# Provides kube-controller-manager for the tests that need real workload controllers (the
# Deployment and ReplicaSet controllers create and replace pods as they do on a cluster), and
# prints the directory that holds it.
#
# 1. If KUBEBUILDER_ASSETS holds kube-controller-manager of the pinned minor version, use it.
# 2. Else, if the cache directory for the pinned version holds it, use it.
# 3. Else build it from the Go module proxy into the cache (minutes on 2 cores, once).
#
# Only the directory is printed on stdout; progress goes to stderr.
# Environment:
#   KUBE_VERSION   Kubernetes version to build (default v1.35.4)
#   TAILOR_CACHE   cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/tailor), shared with hack/test-binaries.sh
set -euo pipefail

KUBE_VERSION=${KUBE_VERSION:-v1.35.4}
CACHE_ROOT=${TAILOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tailor}
DEST="$CACHE_ROOT/kube-controller-manager-${KUBE_VERSION}"
kube_minor=$(printf '%s' "$KUBE_VERSION" | sed -E 's/^(v[0-9]+\.[0-9]+)\..*/\1/')

log() { printf 'controller-manager: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

usable() {
  [ -x "$1/kube-controller-manager" ] &&
    "$1/kube-controller-manager" --version 2>/dev/null | grep -q "Kubernetes ${kube_minor}\."
}

if [ -n "${KUBEBUILDER_ASSETS:-}" ] && usable "$KUBEBUILDER_ASSETS"; then
  printf '%s\n' "$KUBEBUILDER_ASSETS"
  exit 0
fi
if usable "$DEST"; then printf '%s\n' "$DEST"; exit 0; fi

command -v go >/dev/null || die "go is required to build kube-controller-manager (install Go >= 1.25)"
mkdir -p "$CACHE_ROOT"
# The same lock as hack/test-binaries.sh: one Go build of Kubernetes at a time on this machine.
exec 9>"$CACHE_ROOT/.build.lock"
flock 9
if usable "$DEST"; then printf '%s\n' "$DEST"; exit 0; fi

work=$(mktemp -d "$CACHE_ROOT/build-kcm.XXXXXX")
trap 'rm -rf "$work"' EXIT
log "building kube-controller-manager $KUBE_VERSION from the Go module proxy (minutes, once)"
mkdir -p "$work/out"
# shellcheck source=lib/kube-build.sh
. "$(dirname "$0")/lib/kube-build.sh"
kube_build "$KUBE_VERSION" k8s.io/kubernetes/cmd/kube-controller-manager "$work/out/kube-controller-manager"
rm -rf "$DEST.tmp" && mv "$work/out" "$DEST.tmp" && rm -rf "$DEST" && mv "$DEST.tmp" "$DEST"
usable "$DEST" || die "the built kube-controller-manager does not report $KUBE_VERSION"
log "$("$DEST/kube-controller-manager" --version)"
printf '%s\n' "$DEST"
