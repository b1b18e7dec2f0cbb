#!/usr/bin/env bash
# Answer verification, side by side on the same pairs (MATH-500 and GSM8K answers against
# reference, model-style and perturbed solutions; tests/ref/gen_verify.py builds them):
# `retort verify --last-number` against PyPI math-verify, one core each. Prints pairs/s
# and the ratio retort / math-verify.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${PYTHON:=python3}" "${RETORT:=./retort}" "${RETORT_ASSETS:=$(cd .. && pwd)/shared/assets}"
export RETORT_ASSETS
dir=$(mktemp -d /tmp/retort-bench.XXXXXX)
trap 'rm -rf "$dir"' EXIT
if [ ! -f "$RETORT_ASSETS/benchmarks/math500_test.jsonl" ] || [ ! -f "$RETORT_ASSETS/benchmarks/gsm8k_test.jsonl" ]; then
  echo "bench/verify     skipped: $RETORT_ASSETS/benchmarks absent"; exit 0
fi
"$PYTHON" - "$dir/pairs.jsonl" <<'PY'
import json, sys
sys.path.insert(0, "tests/ref")
from gen_verify import build_pairs
with open(sys.argv[1], "w", encoding="utf-8") as f:
    for p in build_pairs("full"):
        f.write(json.dumps({"gold": p["gold"], "pred": p["pred"]}) + "\n")
PY
n=$(wc -l < "$dir/pairs.jsonl")
best=""
for _ in 1 2 3; do
  t0=$(date +%s.%N)
  taskset -c 0 "$RETORT" verify --last-number < "$dir/pairs.jsonl" > /dev/null 2>&1 || "$RETORT" verify --last-number < "$dir/pairs.jsonl" > /dev/null
  t1=$(date +%s.%N)
  s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
  if [ -z "$best" ] || awk -v s="$s" -v b="$best" 'BEGIN { exit !(s < b) }'; then best=$s; fi
done
read -r _ mv_rate < <(taskset -c 0 "$PYTHON" bench/verify.py "$dir/pairs.jsonl" 2>/dev/null || "$PYTHON" bench/verify.py "$dir/pairs.jsonl")
awk -v n="$n" -v t="$best" -v m="$mv_rate" 'BEGIN {
  printf "bench/verify     %d pairs (MATH-500 + GSM8K, reference / styled / perturbed), 1 core\n", n
  printf "  retort verify      %10.0f pairs/s   (best of 3, whole process)\n", n / t
  printf "  math-verify        %10.0f pairs/s\n", m
  printf "  ratio              %10.1fx\n", n / t / m
}'
