#!/usr/bin/env bash
# Runs every benchmark script bench/*.sh (each prints retort against a peer from the same run,
# and appends its rows to one summary file), then prints the summary table: benchmark,
# retort, peer, ratio (above 1: retort faster), threads, load before->after ("!": the load
# exceeded the thread count, other work competed). A script that fails gets a FAILED row and
# makes the exit status 1; a GPU benchmark on a machine without a GPU skips (exit 0).
# BENCH_ONLY="train generate" runs only those scripts; BENCH_THREADS="1" only one thread.
set -u
cd "$(dirname "$0")/.."
. bench/common.sh
BENCH_SUMMARY=$(mktemp /tmp/retort-bench-summary.XXXXXX)
export BENCH_SUMMARY
trap 'rm -f "$BENCH_SUMMARY"' EXIT
status=0
echo "bench/run   $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: //'), $(nproc) CPUs, $(date -u '+%Y-%m-%d %H:%M UTC'), load $(bench_load)"
for b in bench/*.sh; do
  n=$(basename "$b" .sh)
  case $n in run|common) continue ;; esac
  if [ -n "${BENCH_ONLY:-}" ] && ! printf ' %s ' $BENCH_ONLY | grep -q " $n "; then continue; fi
  echo "== $b"
  before=$(wc -l < "$BENCH_SUMMARY")
  out=$(mktemp /tmp/retort-bench-out.XXXXXX)
  bash "$b" 2>&1 | tee "$out"
  rc=${PIPESTATUS[0]}
  if [ "$rc" -ne 0 ]; then
    echo "   $b FAILED (exit $rc)"
    printf 'bench/%s\tFAILED\t\t\t\t\n' "$n" >> "$BENCH_SUMMARY"
    status=1
  elif [ "$(wc -l < "$BENCH_SUMMARY")" = "$before" ]; then
    skip=$(grep -m1 -o 'skipped: .*' "$out" || true)
    printf 'bench/%s\t%s\t\t\t\t\n' "$n" "${skip:-(ran; no summary row: see its output above)}" >> "$BENCH_SUMMARY"
  fi
  rm -f "$out"
done
echo
echo "== summary ($(date -u '+%Y-%m-%d %H:%M UTC'); ratio > 1: retort faster; '!': load above the thread count)"
{
  printf 'benchmark\tretort\tpeer\tratio\tthreads\tload\n'
  cat "$BENCH_SUMMARY"
} | awk -F'\t' '{ printf "%-36s | %-20s | %-44s | %-7s | %-7s | %s\n", $1, $2, $3, $4, $5, $6 }'
exit $status
