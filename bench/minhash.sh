#!/usr/bin/env bash
# MinHash signatures, side by side on the same texts (every question, answer and solution of
# shared/assets/benchmarks), 1 thread each (pinned to one core where taskset works): retort
# against datasketch given the same work (the same normalization, word 5-grams, xxhash64,
# 112 = 14 bands x 8 rows of a 64-bit affine permutation mod 2^61-1, MinHash.bulk), and
# datatrove's signature step as an extra row (its spaCy word splitting dominates its time).
# Medians; prints MB/s, the ratio retort / peer and the load.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
: "${PYTHON:=python3}" "${BENCH_BIN_DIR:=build/cpu/bench}" "${RETORT_ASSETS:=$(cd .. && pwd)/shared/assets}"
REPS=${REPS:-5}
dir=$(mktemp -d /tmp/retort-bench.XXXXXX)
trap 'rm -rf "$dir"' EXIT
B="$RETORT_ASSETS/benchmarks"
if [ ! -f "$B/gsm8k_train.jsonl" ] || [ ! -f "$B/math500_test.jsonl" ]; then
  bench_skip bench/minhash "$B absent"; exit 0
fi
"$PYTHON" - "$B" "$dir/texts.jsonl" <<'PY'
import json, os, sys
src, out = sys.argv[1], sys.argv[2]
with open(out, "w", encoding="utf-8") as f:
    for name in sorted(os.listdir(src)):
        for l in open(os.path.join(src, name), encoding="utf-8"):
            r = json.loads(l)
            t = "\n".join(str(r[k]) for k in ("question", "problem", "answer", "solution") if k in r)
            f.write(json.dumps({"text": t}) + "\n")
PY
pin() { if taskset -c 0 true 2>/dev/null; then taskset -c 0 "$@"; else "$@"; fi; }
lb=$(bench_load)
read -r docs mb r_mbs r_dps < <(pin "$BENCH_BIN_DIR/minhash" "$dir/texts.jsonl" "$REPS")
peers=$(OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 pin "$PYTHON" bench/minhash.py "$dir/texts.jsonl" "$REPS")
la=$(bench_load)
printf 'bench/minhash    %d texts, %.1f MB, 14x8 signatures, 1 thread (median of %d), load %s -> %s\n' "$docs" "$mb" "$REPS" "$lb" "$la"
printf '  %-18s %9.2f MB/s  %10.0f docs/s\n' retort "$r_mbs" "$r_dps"
while read -r label p_mbs p_dps; do
  awk -v l="$label" -v r="$r_mbs" -v p="$p_mbs" -v pd="$p_dps" 'BEGIN {
    printf "  %-18s %9.2f MB/s  %10.0f docs/s   ratio %6.1fx\n", l, p, pd, r / p }'
  bench_row "minhash signatures" MB/s "$r_mbs" "$p_mbs" "$label" 1 "$lb" "$la"
done <<< "$peers"
