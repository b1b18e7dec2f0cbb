#!/usr/bin/env bash
# Tokenizer, side by side on the same corpus (every text of shared/assets/benchmarks, encoded
# one text at a time): retort against PyPI tokenizers (the Rust library) — encode MB/s on one
# thread and on all threads, and load time — for each real tokenizer. Medians of 5; prints
# the ratios (retort / HF for throughput, HF / retort for load time: above 1 = retort ahead).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${PYTHON:=python3}" "${BENCH_BIN_DIR:=build/cpu/bench}" "${RETORT_ASSETS:=$(cd .. && pwd)/shared/assets}"
REPS=${REPS:-5}
THREADS=$(nproc)
export RETORT_ASSETS
dir=$(mktemp -d /tmp/retort-bench.XXXXXX)
trap 'rm -rf "$dir"' EXIT
if [ ! -d "$RETORT_ASSETS/tokenizers" ] || [ ! -d "$RETORT_ASSETS/benchmarks" ]; then
  echo "bench/tokenize   skipped: $RETORT_ASSETS/tokenizers or benchmarks absent"; exit 0
fi
"$PYTHON" - "$dir/corpus.jsonl" <<'PY'
import json, sys
sys.path.insert(0, "tests/ref")
from gen_tok_corpus import benchmark_texts
with open(sys.argv[1], "w", encoding="utf-8") as f:
    for t in benchmark_texts():
        f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
PY
for name in deepseek_v3 qwen3 llama3_1; do
  tj="$RETORT_ASSETS/tokenizers/$name/tokenizer.json"
  [ -f "$tj" ] || { echo "bench/tokenize $name   skipped: $tj absent"; continue; }
  read -r r_load r_one r_all bytes < <("$BENCH_BIN_DIR/tokenize" "$tj" "$dir/corpus.jsonl" "$THREADS" "$REPS")
  read -r h_load h_one < <(RAYON_NUM_THREADS=1 "$PYTHON" bench/tokenize.py "$tj" "$dir/corpus.jsonl" "$REPS")
  read -r _ h_all < <("$PYTHON" bench/tokenize.py "$tj" "$dir/corpus.jsonl" "$REPS")
  awk -v n="$name" -v b="$bytes" -v t="$THREADS" -v rl="$r_load" -v r1="$r_one" -v ra="$r_all" \
      -v hl="$h_load" -v h1="$h_one" -v ha="$h_all" 'BEGIN {
    printf "bench/tokenize   %s, corpus %.1f MB (median of '"$REPS"')\n", n, b / 1e6
    printf "  encode, 1 thread    retort %8.2f MB/s   hf tokenizers %8.2f MB/s   ratio %5.2fx\n", r1, h1, r1 / h1
    printf "  encode, %d threads   retort %8.2f MB/s   hf tokenizers %8.2f MB/s   ratio %5.2fx\n", t, ra, ha, ra / ha
    printf "  load                retort %8.1f ms     hf tokenizers %8.1f ms     ratio %5.2fx\n", rl, hl, hl / rl
  }'
done
