#!/usr/bin/env bash
# Makes sure Prometheus and promtool (Debian's `prometheus` package) are installed.
# The tests start the real server on loopback; nothing else is configured.
set -euo pipefail

log() { printf 'install-prometheus: %s\n' "$*" >&2; }

if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
  log "$(prometheus --version 2>&1 | head -n1)"
  exit 0
fi

if ! command -v apt-get >/dev/null; then
  log "prometheus/promtool are missing and apt-get is not available: install Prometheus >= 2.24 (with promtool) and put both on PATH"
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { log "run as root or install sudo: apt-get install prometheus"; exit 1; }
  SUDO=sudo
fi
log "installing Debian's prometheus package"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >&2
# The package's service is not needed; tests start their own servers on free ports.
$SUDO apt-get install -y -qq --no-install-recommends prometheus >&2
command -v promtool >/dev/null || { log "promtool missing after install"; exit 1; }
log "$(prometheus --version 2>&1 | head -n1)"
