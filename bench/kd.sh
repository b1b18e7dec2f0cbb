#!/usr/bin/env bash
# Logit distillation's cost on the CPU trainer (bench/kd.c): forward+backward of a KD step
# (top-20 teacher entries on every target) against the SFT step of the same model and batch,
# interleaved in one process; the ratio KD / SFT (goal <= 1.15x). Same ~56M-parameter Qwen2
# shape as bench/train.sh (bench/train_qwen50m.json, vocab 32000), batch 2 x sequence 512.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${BENCH_BIN_DIR:=build/cpu/bench}" "${THREADS:=$(nproc)}" "${STEPS:=5}"
cfg=bench/train_qwen50m.json
for loss in forward "forward 2" reverse jsd:0.5 uld; do
  set -- $loss
  r=$(OPENBLAS_NUM_THREADS=1 "$BENCH_BIN_DIR/kd" "$cfg" 2 512 "$STEPS" "$THREADS" "$1" "${2:-1}")
  printf '%s\n' "$r" | awk -v l="$1" -v t="${2:-1}" '/^sft_step_s/ {s=$2} /^kd_step_s/ {k=$2} /^ratio/ {q=$2}
    END { printf "  kd %-8s T=%-3s  sft %.3f s  kd %.3f s  ratio %.3fx  (median of steps)\n", l, t, s, k, q }'
done | { echo "bench/kd   Qwen2 shape, batch 2 x seq 512, ${THREADS} threads, f32, top-20"; cat; }
