#!/usr/bin/env bash
# Runs every test of the workspace, several test binaries at once.
#
# `cargo test` runs its test binaries one after the other. Most of tailor's binaries wait on
# servers (kube-apiserver, etcd, Prometheus, a kubelet) far more than they compute, so running a
# few side by side cuts the wall time by more than half on a 2-core machine. What each binary
# does is unchanged: it is built by `cargo test --no-run`, run from its package directory with
# the environment `cargo test` gives it, and its own tests run in parallel as usual.
#
# - TAILOR_TEST_JOBS (default 3): binaries run at once.
# - The binaries that use the machine's one real node run one after the other, in one lane
#   (they would wait for its lock anyway, holding a lane each).
# - Longest first: each binary's last wall time is kept in the target directory and the
#   slowest start first; binaries never seen before start before all of them.
# - Each binary's output goes to a log; it is printed whole when the binary fails, otherwise
#   only its `test result` line. The run fails if any binary fails.
#
# Usage: hack/run-tests.sh [args for every test binary, e.g. a name filter]
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'run-tests: %s\n' "$*" >&2; }

CARGO="${CARGO:-cargo}"
jobs="${TAILOR_TEST_JOBS:-3}"
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
times_file="$target_dir/tailor-test-times"
# Binaries that start the real node (tests/src/real_node): one lane, one at a time.
real_node='^(conformance|demo_real_node|real_node_guard|real_node_updater)$'

command -v jq >/dev/null || { log "jq is missing: apt-get install jq (make test-deps installs it)"; exit 1; }

logs=$(mktemp -d -t tailor-tests-XXXXXX)
trap 'rm -rf "$logs"' EXIT

log "building the test binaries"
"$CARGO" test --workspace --all-targets --no-run --message-format=json-render-diagnostics \
  | jq -r 'select(.reason == "compiler-artifact" and .profile.test and .executable != null)
           | [(.manifest_path | split("/") | .[-2]) + "/" + .target.name + "(" + .target.kind[0] + ")",
              .executable, .manifest_path] | @tsv' \
  > "$logs/binaries"

# "name<TAB>seconds" from the last run; unknown binaries get a large weight (run first).
touch "$times_file"
weight() { awk -F'\t' -v n="$1" '$1 == n { print $2; found = 1 } END { if (!found) print 100000 }' "$times_file"; }

# One job per line: "weight<TAB>id<TAB>binary names separated by spaces".
: > "$logs/jobs"
serial=() serial_weight=0
while IFS=$'\t' read -r name exe manifest; do
  w=$(weight "$name")
  base=${name#*/}
  if [[ "${base%%(*}" =~ $real_node ]]; then
    serial+=("$name"); serial_weight=$((serial_weight + ${w%.*}))
  else
    printf '%s\t%s\n' "${w%.*}" "$name" >> "$logs/jobs"
  fi
done < "$logs/binaries"
[ ${#serial[@]} -gt 0 ] && printf '%s\t%s\n' "$serial_weight" "${serial[*]}" >> "$logs/jobs"
sort -t$'\t' -k1,1nr -o "$logs/jobs" "$logs/jobs"

logfile() { printf '%s/%s.log' "$logs" "${1//\//_}"; }

# Runs one binary the way `cargo test` does; records its wall time and outcome.
run_one() {
  local name=$1 exe manifest dir start status
  shift
  IFS=$'\t' read -r _ exe manifest < <(awk -F'\t' -v n="$name" '$1 == n' "$logs/binaries")
  dir=$(dirname "$manifest")
  start=$(date +%s.%N)
  set +e
  (cd "$dir" && CARGO="$(command -v "$CARGO")" CARGO_MANIFEST_DIR="$dir" exec "$exe" "$@") \
    > "$(logfile "$name")" 2>&1
  status=$?
  set -e
  local secs
  secs=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
  printf '%s\t%s\t%s\n' "$name" "$secs" "$status" >> "$logs/results"
  return "$status"
}

# Runs the binaries of one job (space-separated names in $1) one after the other.
run_job() {
  local names=$1 status=0 name
  shift
  for name in $names; do
    run_one "$name" "$@" || status=1
    report "$name"
  done
  return "$status"
}

# Prints one binary's outcome as it ends (whole log on failure).
report() {
  local name=$1 line
  line=$(awk -F'\t' -v n="$1" '$1 == n' "$logs/results")
  local secs status
  secs=$(cut -f2 <<< "$line"); status=$(cut -f3 <<< "$line")
  if [ "$status" = 0 ]; then
    printf '%-40s ok    %7s s  %s\n' "$name" "$secs" "$(grep -a '^test result:' "$(logfile "$name")" | tail -n1)"
  else
    printf '%-40s FAILED %6s s (exit %s); its output:\n' "$name" "$secs" "$status"
    sed 's/^/    /' "$(logfile "$name")"
  fi
}

: > "$logs/results"
start=$(date +%s)
running=0 failed=0
while IFS=$'\t' read -r _ names; do
  if [ "$running" -ge "$jobs" ]; then
    wait -n || failed=1
    running=$((running - 1))
  fi
  run_job "$names" "$@" &
  running=$((running + 1))
done < "$logs/jobs"
while [ "$running" -gt 0 ]; do
  wait -n || failed=1
  running=$((running - 1))
done

# Keep this run's times for the next run's order (only binaries that ran whole).
awk -F'\t' '{ print $1 "\t" $2 }' "$logs/results" > "$times_file.new" && mv "$times_file.new" "$times_file"
total=$(wc -l < "$logs/results")
bad=$(awk -F'\t' '$3 != 0' "$logs/results" | wc -l)
log "$total test binaries in $(( $(date +%s) - start )) s, $jobs at a time; $bad failed"
if [ "$failed" -ne 0 ] || [ "$bad" -ne 0 ]; then
  awk -F'\t' '$3 != 0 { print "  failed: " $1 }' "$logs/results" >&2
  exit 1
fi
