#!/usr/bin/env bash
# Logit distillation's cost on the CPU trainer (bench/kd.c): forward+backward of a KD step
# (top-20 teacher entries on every target) against the SFT step of the same model and batch,
# interleaved in one process; the peer is that SFT step. Same ~56M-parameter Qwen2 shape as
# bench/train.sh (bench/train_qwen50m.json, vocab 32000), batch 2 x sequence SEQ (512), f32,
# median of STEPS (5) steps each, one row per loss in LOSSES ("forward forward:2 reverse
# jsd:0.5 uld"; forward:2 is temperature 2), at each thread count of bench_threads (1, then 2;
# both steps run at the same count). The row's ratio is SFT time / KD time: 1 means KD costs
# nothing over SFT, below 1 is KD's extra cost (goal: KD <= 1.15x SFT, a ratio >= 0.87).
# Quick run: STEPS=2 SEQ=128 LOSSES=forward (about a minute at 1 and 2 threads).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
: "${BENCH_BIN_DIR:=build/cpu/bench}" "${STEPS:=5}" "${SEQ:=512}" "${LOSSES:=forward forward:2 reverse jsd:0.5 uld}"
cfg=bench/train_qwen50m.json
for THREADS in $(bench_threads); do
  echo "bench/kd   Qwen2 shape, batch 2 x seq $SEQ, $THREADS thread(s), f32, top-20, median of $STEPS steps"
  for spec in $LOSSES; do
    case $spec in forward:*) loss=forward temp=${spec#forward:} ;; *) loss=$spec temp=1 ;; esac
    lb=$(bench_load)
    r=$(OPENBLAS_NUM_THREADS=1 "$BENCH_BIN_DIR/kd" "$cfg" 2 "$SEQ" "$STEPS" "$THREADS" "$loss" "$temp")
    la=$(bench_load)
    s=$(printf '%s\n' "$r" | awk '/^sft_step_s/ {print $2}')
    k=$(printf '%s\n' "$r" | awk '/^kd_step_s/ {print $2}')
    awk -v l="$loss" -v t="$temp" -v s="$s" -v k="$k" -v lb="$lb" -v la="$la" 'BEGIN {
      printf "  kd %-8s temp %-3s  sft %.3f s  kd %.3f s  KD / SFT %.3fx  (load %s -> %s)\n", l, t, s, k, k / s, lb, la }'
    bench_row "kd step $loss temp $temp b2x$SEQ" s "$k" "$s" "sft step; ratio sft/kd, <1: kd extra" "$THREADS" "$lb" "$la"
  done
done
