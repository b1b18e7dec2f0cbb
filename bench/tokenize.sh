#!/usr/bin/env bash
# Tokenizer, side by side on the same corpus (every text of shared/assets/benchmarks, encoded
# one text at a time): retort against PyPI tokenizers (the Rust library) — encode MB/s on one
# thread and on all threads, and load time — for each real tokenizer. Medians of 5; prints
# the ratios (retort / HF for throughput, HF / retort for load time: above 1 = retort ahead).
# The one-line process row times a whole process encoding one line (`retort tokenize` against
# python -c with tokenizers), wall and CPU (user + sys), the two alternating.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
: "${PYTHON:=python3}" "${BENCH_BIN_DIR:=build/cpu/bench}" "${RETORT_ASSETS:=$(cd .. && pwd)/shared/assets}"
REPS=${REPS:-5}
THREADS=2   # the second row (bench/common.sh); the first is 1 thread
export RETORT_ASSETS
dir=$(mktemp -d /tmp/retort-bench.XXXXXX)
trap 'rm -rf "$dir"' EXIT
if [ ! -d "$RETORT_ASSETS/tokenizers" ] || [ ! -d "$RETORT_ASSETS/benchmarks" ]; then
  bench_skip bench/tokenize "$RETORT_ASSETS/tokenizers or benchmarks absent"; exit 0
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
  lb=$(bench_load)
  read -r r_load r_one r_all bytes < <("$BENCH_BIN_DIR/tokenize" "$tj" "$dir/corpus.jsonl" "$THREADS" "$REPS")
  read -r h_load h_one < <(RAYON_NUM_THREADS=1 "$PYTHON" bench/tokenize.py "$tj" "$dir/corpus.jsonl" "$REPS")
  read -r _ h_all < <(RAYON_NUM_THREADS=$THREADS "$PYTHON" bench/tokenize.py "$tj" "$dir/corpus.jsonl" "$REPS")
  # start-up of a whole process that encodes one line: the CLI against Python + tokenizers
  # (wall, and CPU = user + sys of the process, from bash's `time`; alternating)
  r_st=() h_st=() r_cpu=() h_cpu=()
  echo '{"text": "hello world"}' > "$dir/one.jsonl"
  TIMEFORMAT='%R %U %S'
  for i in $(seq "$REPS"); do
    read -r w u s < <({ time ./retort tokenize --tokenizer "$tj" --threads 1 < "$dir/one.jsonl" > /dev/null 2>&1; } 2>&1)
    r_st+=("$w") r_cpu+=("$(awk -v u="$u" -v s="$s" 'BEGIN { print u + s }')")
    read -r w u s < <({ time RAYON_NUM_THREADS=1 "$PYTHON" -c 'import sys; from tokenizers import Tokenizer; print(Tokenizer.from_file(sys.argv[1]).encode("hello world").ids)' "$tj" > /dev/null 2>&1; } 2>&1)
    h_st+=("$w") h_cpu+=("$(awk -v u="$u" -v s="$s" 'BEGIN { print u + s }')")
  done
  unset TIMEFORMAT
  med() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
  r_start=$(med "${r_st[@]}") h_start=$(med "${h_st[@]}") r_startc=$(med "${r_cpu[@]}") h_startc=$(med "${h_cpu[@]}")
  la=$(bench_load)
  awk -v n="$name" -v b="$bytes" -v t="$THREADS" -v rl="$r_load" -v r1="$r_one" -v ra="$r_all" \
      -v hl="$h_load" -v h1="$h_one" -v ha="$h_all" 'BEGIN {
    printf "bench/tokenize   %s, corpus %.1f MB (median of '"$REPS"')\n", n, b / 1e6
    printf "  encode, 1 thread    retort %8.2f MB/s   hf tokenizers %8.2f MB/s   ratio %5.2fx\n", r1, h1, r1 / h1
    printf "  encode, %d threads   retort %8.2f MB/s   hf tokenizers %8.2f MB/s   ratio %5.2fx\n", t, ra, ha, ra / ha
    printf "  load                retort %8.1f ms     hf tokenizers %8.1f ms     ratio %5.2fx\n", rl, hl, hl / rl
  }'
  awk -v r="$r_start" -v h="$h_start" -v rc="$r_startc" -v hc="$h_startc" -v lb="$lb" -v la="$la" 'BEGIN {
    printf "  one-line process    retort %8.3f s      python+tokenizers %6.3f s   ratio %5.2fx   (load %s -> %s)\n", r, h, h / r, lb, la
    printf "    CPU (user+sys)    retort %8.3f s      python+tokenizers %6.3f s   ratio %5.2fx\n", rc, hc, hc / rc }'
  bench_row "tokenize $name encode" MB/s "$r_one" "$h_one" "hf tokenizers" 1 "$lb" "$la"
  bench_row "tokenize $name encode" MB/s "$r_all" "$h_all" "hf tokenizers" "$THREADS" "$lb" "$la"
  bench_row "tokenize $name load" ms "$r_load" "$h_load" "hf tokenizers" 1 "$lb" "$la"
  bench_row "tokenize $name one-line process" s "$r_start" "$h_start" "python+tokenizers" 1 "$lb" "$la"
  bench_row "tokenize $name one-line process cpu" s "$r_startc" "$h_startc" "python+tokenizers" 1 "$lb" "$la"
done
