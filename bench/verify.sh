#!/usr/bin/env bash
# Answer verification, side by side on the same pairs (MATH-500 and GSM8K answers against
# reference, model-style and perturbed solutions, and issue 19's surface forms on MATH-500,
# GSM8K and AIME answers; tests/ref/gen_verify.py builds them): `retort verify --last-number`
# against PyPI math-verify (bench/verify.py). Both do the same work — read the JSONL pairs,
# judge each, write one verdict line — as whole processes pinned to one core with one thread;
# each is timed from start to exit (best of 3 for retort, one run for math-verify, whose
# run takes minutes). Prints pairs/s and the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${PYTHON:=python3}" "${RETORT:=./retort}" "${RETORT_ASSETS:=$(cd .. && pwd)/shared/assets}"
export RETORT_ASSETS OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
dir=$(mktemp -d /tmp/retort-bench.XXXXXX)
trap 'rm -rf "$dir"' EXIT
for f in math500_test.jsonl gsm8k_test.jsonl aime24_test.jsonl; do
  if [ ! -f "$RETORT_ASSETS/benchmarks/$f" ]; then echo "bench/verify     skipped: $RETORT_ASSETS/benchmarks/$f absent"; exit 0; fi
done
"$PYTHON" - "$dir/pairs.jsonl" <<'PY'
import json, sys
sys.path.insert(0, "tests/ref")
from gen_verify import build_pairs, build_edge_pairs
with open(sys.argv[1], "w", encoding="utf-8") as f:
    for p in build_pairs("full") + build_edge_pairs("test"):
        f.write(json.dumps({"gold": p["gold"], "pred": p["pred"]}) + "\n")
PY
n=$(wc -l < "$dir/pairs.jsonl")
pin() { if taskset -c 0 true 2>/dev/null; then taskset -c 0 "$@"; else "$@"; fi; }
# seconds of wall time of one whole process reading pairs.jsonl and writing its verdicts
timed() {
  local t0 t1
  t0=$(date +%s.%N)
  pin "$@" < "$dir/pairs.jsonl" > "$dir/out.jsonl"
  t1=$(date +%s.%N)
  [ "$(wc -l < "$dir/out.jsonl")" -eq "$n" ] || { echo "bench/verify: $1 wrote $(wc -l < "$dir/out.jsonl") verdicts for $n pairs" >&2; exit 1; }
  awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }'
}
best=""
for _ in 1 2 3; do
  s=$(timed "$RETORT" verify --last-number)
  if [ -z "$best" ] || awk -v s="$s" -v b="$best" 'BEGIN { exit !(s < b) }'; then best=$s; fi
done
mv_s=$(timed "$PYTHON" bench/verify.py)
awk -v n="$n" -v t="$best" -v m="$mv_s" 'BEGIN {
  printf "bench/verify     %d pairs (MATH-500 + GSM8K + AIME: reference / styled / perturbed / issue-19 forms), 1 core, 1 thread, whole processes\n", n
  printf "  retort verify      %10.0f pairs/s   (%.2f s, best of 3)\n", n / t, t
  printf "  math-verify        %10.0f pairs/s   (%.1f s)\n", n / m, m
  printf "  ratio              %10.1fx\n", m / t
}'
