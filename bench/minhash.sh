#!/usr/bin/env bash
# MinHash signatures, side by side on the same texts (every question, answer and solution of
# shared/assets/benchmarks): retort against datatrove's signature step (or its faithful numpy
# reimplementation when datatrove is not installed; the label says which), one core each.
# Medians; prints the ratio retort / peer (target ≥ 20x).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${PYTHON:=python3}" "${BENCH_BIN_DIR:=build/cpu/bench}" "${RETORT_ASSETS:=$(cd .. && pwd)/shared/assets}"
REPS=${REPS:-5}
dir=$(mktemp -d /tmp/retort-bench.XXXXXX)
trap 'rm -rf "$dir"' EXIT
B="$RETORT_ASSETS/benchmarks"
if [ ! -f "$B/gsm8k_train.jsonl" ] || [ ! -f "$B/math500_test.jsonl" ]; then
  echo "bench/minhash   skipped: $B absent"; exit 0
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
read -r docs mb r_mbs r_dps < <(taskset -c 0 "$BENCH_BIN_DIR/minhash" "$dir/texts.jsonl" "$REPS" 2>/dev/null || "$BENCH_BIN_DIR/minhash" "$dir/texts.jsonl" "$REPS")
read -r label p_mbs p_dps < <(OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 "$PYTHON" bench/minhash.py "$dir/texts.jsonl" "$REPS")
awk -v d="$docs" -v mb="$mb" -v r="$r_mbs" -v rd="$r_dps" -v l="$label" -v p="$p_mbs" -v pd="$p_dps" 'BEGIN {
  printf "bench/minhash    %d texts, %.1f MB, 14x8 signatures, 1 core (median of '"$REPS"')\n", d, mb
  printf "  retort             %9.2f MB/s  %10.0f docs/s\n", r, rd
  printf "  %-18s %9.2f MB/s  %10.0f docs/s\n", l, p, pd
  printf "  ratio              %9.1fx\n", r / p
}'
