#!/usr/bin/env bash
# Provides what the real-node tests need: a kubelet, containerd + runc, and the test image.
#
# usage: hack/real-node.sh COMMAND
#   deps      install the Debian packages (containerd runc busybox-static containernetworking-plugins);
#             quick when they are already installed
#   kubelet   build kubelet $KUBE_VERSION from the Go module proxy once, into the cache; prints its directory
#   image     build the test image (a docker-archive tarball: /pause and /workload, static, plus
#             busybox), cached by a hash of its sources; prints the tarball's path
#   check     say whether this machine can run a real node (root, cgroups, packages); exit 1 if not
#   all       deps + kubelet + image + check (what `make test-deps` runs)
#
# Only the requested path is printed on stdout; progress goes to stderr.
# Environment:
#   KUBE_VERSION   kubelet version (default v1.35.4)
#   TAILOR_CACHE   cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/tailor), shared with hack/test-binaries.sh
set -euo pipefail

KUBE_VERSION=${KUBE_VERSION:-v1.35.4}
CACHE_ROOT=${TAILOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tailor}
REPO=$(cd "$(dirname "$0")/.." && pwd)
IMAGE_SRC="$REPO/tests/image"
PACKAGES=(containerd runc busybox-static containernetworking-plugins)

log() { printf 'real-node: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

missing_packages() {
  local p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || printf '%s\n' "$p"
  done
}

cmd_deps() {
  local missing
  command -v dpkg-query >/dev/null || die "not a Debian system: install ${PACKAGES[*]} (or their equivalents) by hand"
  missing=$(missing_packages)
  if [ -z "$missing" ]; then
    log "packages present: ${PACKAGES[*]}"
    return 0
  fi
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "run as root or install sudo: apt-get install $missing"
    sudo=sudo
  fi
  log "installing $(echo $missing)"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq >&2
  # shellcheck disable=SC2086
  $sudo apt-get install -y -qq --no-install-recommends $missing >&2
  [ -z "$(missing_packages)" ] || die "still missing after apt-get install: $(missing_packages | xargs)"
  # The package starts containerd as a service where an init system runs; the tests start their
  # own on a private socket and never use the system one.
}

kubelet_usable() {
  [ -x "$1/kubelet" ] && "$1/kubelet" --version 2>/dev/null | grep -qx "Kubernetes $KUBE_VERSION"
}

cmd_kubelet() {
  local dest="$CACHE_ROOT/kubelet-$KUBE_VERSION"
  if kubelet_usable "$dest"; then printf '%s\n' "$dest"; return 0; fi
  command -v go >/dev/null || die "go is required to build the kubelet (install Go >= 1.25)"
  mkdir -p "$CACHE_ROOT"
  # The same lock as hack/test-binaries.sh: one Go build of Kubernetes at a time on this machine.
  exec 9>"$CACHE_ROOT/.build.lock"
  flock 9
  if kubelet_usable "$dest"; then printf '%s\n' "$dest"; return 0; fi
  work=$(mktemp -d "$CACHE_ROOT/build-kubelet.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  log "building kubelet $KUBE_VERSION from the Go module proxy (minutes, once)"
  mkdir -p "$work/out"
  # shellcheck source=lib/kube-build.sh
  . "$REPO/hack/lib/kube-build.sh"
  kube_build "$KUBE_VERSION" k8s.io/kubernetes/cmd/kubelet "$work/out/kubelet"
  rm -rf "$dest.tmp" && mv "$work/out" "$dest.tmp" && rm -rf "$dest" && mv "$dest.tmp" "$dest"
  kubelet_usable "$dest" || die "the built kubelet does not report $KUBE_VERSION"
  log "$("$dest/kubelet" --version)"
  printf '%s\n' "$dest"
}

# The image's content hash: its sources, this script, and the busybox it copies.
image_hash() {
  {
    (cd "$IMAGE_SRC" && find . -type f | LC_ALL=C sort | xargs sha256sum)
    sha256sum "$REPO/hack/real-node.sh" | cut -d' ' -f1
    sha256sum /bin/busybox | cut -d' ' -f1
    go version
  } | sha256sum | cut -c1-16
}

cmd_image() {
  [ -x /bin/busybox ] || die "/bin/busybox missing: hack/real-node.sh deps (busybox-static)"
  command -v go >/dev/null || die "go is required to build the test image's programs"
  local dest
  dest="$CACHE_ROOT/real-node-image-$(image_hash)"
  if [ -f "$dest/image.tar" ]; then printf '%s\n' "$dest/image.tar"; return 0; fi
  mkdir -p "$CACHE_ROOT"
  t=$(mktemp -d "$CACHE_ROOT/build-image.XXXXXX")
  trap 'rm -rf "$t"' EXIT
  mkdir -p "$t/root/bin" "$t/root/etc" "$t/root/tmp" "$t/root/proc" "$t/root/sys" "$t/root/dev" "$t/root/ctl" "$t/arc"
  (cd "$IMAGE_SRC/workload" && CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod \
    go build -trimpath -ldflags "-s -w" -o "$t/root/workload" .) >&2
  # One program, two roles: /pause (the CRI sandbox) is the same binary under another name.
  ln "$t/root/workload" "$t/root/pause"
  cp /bin/busybox "$t/root/bin/busybox"
  local a
  for a in sh sleep cat ls ps echo head kill mkdir rm stat env; do ln -s busybox "$t/root/bin/$a"; done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$t/root/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\n' >"$t/root/etc/group"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$t/root" -cf "$t/arc/layer.tar" .
  local diffid cid
  diffid=$(sha256sum "$t/arc/layer.tar" | cut -d' ' -f1)
  cat >"$t/arc/config.json" <<JSON
{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z",
 "config":{"Env":["PATH=/bin"],"Entrypoint":["/workload"],"WorkingDir":"/"},
 "rootfs":{"type":"layers","diff_ids":["sha256:$diffid"]},
 "history":[{"created":"1970-01-01T00:00:00Z","created_by":"hack/real-node.sh image"}]}
JSON
  cid=$(sha256sum "$t/arc/config.json" | cut -d' ' -f1)
  mv "$t/arc/config.json" "$t/arc/$cid.json"
  printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["layer.tar"]}]\n' "$cid" "localhost/tailor-workload:1" >"$t/arc/manifest.json"
  mkdir -p "$t/out"
  tar -C "$t/arc" -cf "$t/out/image.tar" .
  rm -rf "$dest" && mv "$t/out" "$dest"
  # Older images (other sources) are not needed any more.
  find "$CACHE_ROOT" -maxdepth 1 -name 'real-node-image-*' ! -path "$dest" -exec rm -rf {} +
  log "image localhost/tailor-workload:1 (config sha256:$cid)"
  printf '%s\n' "$dest/image.tar"
}

cmd_check() {
  local why=()
  [ "$(id -u)" -eq 0 ] || why+=("not root (the kubelet and containerd need root)")
  [ -d /sys/fs/cgroup/memory ] || [ -f /sys/fs/cgroup/cgroup.controllers ] || why+=("no cgroup hierarchy under /sys/fs/cgroup")
  local m
  m=$(missing_packages 2>/dev/null || true)
  [ -z "$m" ] || why+=("missing Debian packages: $(echo $m) (hack/real-node.sh deps)")
  command -v runc >/dev/null || why+=("runc not on PATH")
  grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || why+=("no overlay filesystem")
  if [ ${#why[@]} -gt 0 ]; then
    printf 'real-node: this machine cannot run a real node: %s\n' "${why[@]}" >&2
    return 1
  fi
  log "this machine can run a real node"
}

case "${1:-}" in
  deps) cmd_deps ;;
  kubelet) cmd_kubelet ;;
  image) cmd_image ;;
  check) cmd_check ;;
  all)
    cmd_deps
    kubelet=$(cmd_kubelet)
    image=$(cmd_image)
    cmd_check
    log "kubelet in $kubelet, image $image"
    ;;
  *) sed -n '2,16p' "$0" >&2; exit 2 ;;
esac
