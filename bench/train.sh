#!/usr/bin/env bash
# Training step, side by side: retort's CPU student (bench/train.c) against PyTorch on CPU
# (transformers Qwen2 model with SDPA attention + torch.optim.AdamW, one warm-up step,
# bench/train_torch.py), same ~56M-parameter Qwen2 shape (bench/train_qwen50m.json: hidden
# 512, 8 layers, 8 heads / 2 KV heads, FFN 2816, vocab 32000, tied), batch 2 × sequence 512,
# the same thread count on both sides: 1, then 2 (bench/common.sh; BENCH_THREADS overrides).
# Prints tokens/s of each, the ratio, the load before and after, and where retort's step time
# goes.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
: "${PYTHON:=python3}" "${BENCH_BIN_DIR:=build/cpu/bench}" "${STEPS:=3}"
cfg=bench/train_qwen50m.json
for THREADS in $(bench_threads); do
  lb=$(bench_load)
  r=$(OPENBLAS_NUM_THREADS=1 "$BENCH_BIN_DIR/train" "$cfg" 2 512 "$STEPS" "$THREADS")
  p=$("$PYTHON" -P bench/train_torch.py "$cfg" 2 512 "$STEPS" "$THREADS")
  la=$(bench_load)
  rt=$(printf '%s\n' "$r" | awk '/^tokens_per_s/ {print $2}')
  pt=$(printf '%s\n' "$p" | awk '/^tokens_per_s/ {print $2}')
  params=$(printf '%s\n' "$r" | awk '/^params/ {print $2}')
  echo "bench/train   Qwen2 shape, ${params} parameters, batch 2 x seq 512, ${THREADS} thread(s), f32, mean of ${STEPS} steps, load $lb -> $la"
  awk -v r="$rt" -v p="$pt" 'BEGIN {
    printf "  retort            %9.1f tokens/s\n", r
    printf "  pytorch (hf)      %9.1f tokens/s\n", p
    printf "  ratio             %9.2fx\n", r / p }'
  echo "  retort step time by kernel (seconds per step):"
  rc=$(printf '%s\n' "$r" | awk '/^tokens_per_cpu_s/ {print $2}')
  pc=$(printf '%s\n' "$p" | awk '/^tokens_per_cpu_s/ {print $2}')
  awk -v r="$rc" -v p="$pc" 'BEGIN { if (r > 0 && p > 0)
    printf "  CPU time (user+sys): retort %9.1f tokens/CPU-s   pytorch %9.1f tokens/CPU-s   ratio %5.2fx\n", r, p, r / p }'
  printf '%s\n' "$r" | grep '^time' | sed 's/^time /    /'
  bench_row "train 56M Qwen2 b2x512" tokens/s "$rt" "$pt" "pytorch sdpa" "$THREADS" "$lb" "$la"
done
