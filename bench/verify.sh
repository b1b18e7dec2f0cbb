#!/usr/bin/env bash
# Answer verification, side by side on the same pairs (MATH-500 and GSM8K answers against
# reference, model-style and perturbed solutions, and issue 19's surface forms on MATH-500,
# GSM8K and AIME answers, built by tests/ref/gen_verify.py at SCALE=full, the default):
# `retort verify --last-number` against PyPI math-verify (bench/verify.py: parse + verify with
# its defaults, timeouts on; and a second peer row with its signal-alarm timeouts off, its
# fastest configuration, which retort's verify, having no timeouts, compares with most
# directly). Both do the same work — read the JSONL pairs, judge each, write
# one verdict line per pair (retort's line is the longer one: it adds the answers found and the
# rule) — as whole processes, one thread each (neither has more: a second thread would change
# nothing), pinned to one core where taskset works, timed from start to exit, so each side's
# start-up counts (for Python mostly the imports of math-verify and sympy; the runs on empty
# input show it). REPS runs each (default 1: math-verify takes minutes), alternating, medians.
# Two summary rows (one per math-verify configuration), 1 thread.
# Quick run: SCALE=test PAIRS=2000 (PAIRS=N keeps N pairs, evenly spaced so every kind stays
# in; about 25 s, nearly all of it math-verify's).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
: "${PYTHON:=python3}" "${RETORT:=./retort}" "${RETORT_ASSETS:=$(cd .. && pwd)/shared/assets}" "${SCALE:=full}" "${REPS:=1}" "${PAIRS:=0}"
export RETORT_ASSETS OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
dir=$(mktemp -d /tmp/retort-bench.XXXXXX)
trap 'rm -rf "$dir"' EXIT
for f in math500_test.jsonl gsm8k_test.jsonl aime24_test.jsonl; do
  [ -f "$RETORT_ASSETS/benchmarks/$f" ] || { bench_skip bench/verify "$RETORT_ASSETS/benchmarks/$f absent"; exit 0; }
done
"$PYTHON" - "$dir/pairs.jsonl" "$SCALE" "$PAIRS" <<'PY'
import json, sys
sys.path.insert(0, "tests/ref")
from gen_verify import build_pairs, build_edge_pairs
pairs = build_pairs(sys.argv[2]) + build_edge_pairs(sys.argv[2])
keep = int(sys.argv[3])
if 0 < keep < len(pairs):
    pairs = [pairs[i * len(pairs) // keep] for i in range(keep)]
with open(sys.argv[1], "w", encoding="utf-8") as f:
    for p in pairs:
        f.write(json.dumps({"gold": p["gold"], "pred": p["pred"]}) + "\n")
PY
: > "$dir/empty.jsonl"
n=$(wc -l < "$dir/pairs.jsonl")
pin() { if taskset -c 0 true 2>/dev/null; then taskset -c 0 "$@"; else "$@"; fi; }
# seconds of wall time of one whole process reading IN and writing its verdicts
timed() {
  local in=$1 t0 t1 want
  shift
  want=$(wc -l < "$in")
  t0=$(date +%s.%N)
  pin "$@" < "$in" > "$dir/out.jsonl"
  t1=$(date +%s.%N)
  [ "$(wc -l < "$dir/out.jsonl")" -eq "$want" ] || { echo "bench/verify: $1 wrote $(wc -l < "$dir/out.jsonl") verdicts for $want pairs" >&2; exit 1; }
  awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }'
}
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
"$PYTHON" -P -c 'import math_verify'   # warm the page cache for the peer's imports, as retort's binary is
"$RETORT" verify --last-number < "$dir/empty.jsonl" > /dev/null
lb=$(bench_load)
rs=() ms=() ns=()
for _ in $(seq "$REPS"); do
  rs+=("$(timed "$dir/pairs.jsonl" "$RETORT" verify --last-number)")
  ms+=("$(timed "$dir/pairs.jsonl" "$PYTHON" bench/verify.py)")
  ns+=("$(timed "$dir/pairs.jsonl" "$PYTHON" bench/verify.py --no-timeouts)")
done
la=$(bench_load)
r0=$(timed "$dir/empty.jsonl" "$RETORT" verify --last-number)
m0=$(timed "$dir/empty.jsonl" "$PYTHON" bench/verify.py)
r=$(median "${rs[@]}") m=$(median "${ms[@]}") mn=$(median "${ns[@]}")
awk -v n="$n" -v t="$r" -v m="$m" -v mn="$mn" -v r0="$r0" -v m0="$m0" -v reps="$REPS" -v s="$SCALE" -v lb="$lb" -v la="$la" 'BEGIN {
  printf "bench/verify     %d pairs (%s: MATH-500 + GSM8K + AIME: reference / styled / perturbed / issue-19 forms), 1 core, 1 thread, whole processes, median of %d, load %s -> %s\n", n, s, reps, lb, la
  printf "  retort verify      %10.0f pairs/s   (%.2f s; start-up alone, no pairs: %.3f s)\n", n / t, t, r0
  printf "  math-verify        %10.0f pairs/s   (%.2f s; start-up alone, no pairs: %.3f s)\n", n / m, m, m0
  printf "  ... timeouts off   %10.0f pairs/s   (%.2f s)\n", n / mn, mn
  printf "  ratio              %10.1fx   (timeouts off: %.1fx)\n", m / t, mn / t
}'
bench_row "verify $n pairs ($SCALE), whole process" pairs/s "$(awk -v n="$n" -v t="$r" 'BEGIN { print n / t }')" \
  "$(awk -v n="$n" -v t="$m" 'BEGIN { print n / t }')" "math-verify process" 1 "$lb" "$la"
bench_row "verify $n pairs ($SCALE), whole process" pairs/s "$(awk -v n="$n" -v t="$r" 'BEGIN { print n / t }')" \
  "$(awk -v n="$n" -v t="$mn" 'BEGIN { print n / t }')" "math-verify process, timeouts off" 1 "$lb" "$la"
