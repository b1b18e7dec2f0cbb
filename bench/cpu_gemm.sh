#!/usr/bin/env bash
# mm_sgemm's CPU kernels side by side (bench/cpu_gemm.c), 1 thread, interleaved, median of
# REPS: retort's AVX2+FMA kernel and oneDNN's sgemm (where libdnnl is installed) against
# OpenBLAS as installed, on the 56M Qwen2's training GEMMs (NT forward, NN input gradient, TN
# weight gradient) and decode's x·wᵀ at batch 1 and 8.
# Then the same with OPENBLAS_CORETYPE=Prescott: what OpenBLAS 0.3.21 runs on CPUs it does not
# recognise (Sapphire Rapids), the case retort's automatic choice exists for (printed only).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
: "${BENCH_BIN_DIR:=build/cpu/bench}" "${REPS:=5}"
lb=$(bench_load)
out=$("$BENCH_BIN_DIR/cpu_gemm" "$REPS")
la=$(bench_load)
printf '%s\n(load %s -> %s)\n' "$out" "$lb" "$la"
if printf '%s\n' "$out" | grep -q skipped; then exit 0; fi
# shape rows: name, blas, avx2, dnnl ("-" without oneDNN), avx2/blas, dnnl/blas
printf '%s\n' "$out" | awk '$(NF-1) ~ /x$/ && $(NF-5) ~ /^[0-9.]+$/ {
  name = $1; for (i = 2; i <= NF - 6; i++) name = name " " $i
  printf "%s\t%s\t%s\t%s\n", name, $(NF-5), $(NF-4), $(NF-3) }' |
while IFS=$'\t' read -r name blas avx2 dnnl; do
  bench_row "gemm avx2 $name" GFLOP/s "$avx2" "$blas" "openblas as installed" 1 "$lb" "$la"
  if [ "$dnnl" != "-" ]; then bench_row "gemm dnnl $name" GFLOP/s "$dnnl" "$blas" "openblas as installed" 1 "$lb" "$la"; fi
done
echo "with OPENBLAS_CORETYPE=Prescott (OpenBLAS's fallback on CPUs it does not know):"
OPENBLAS_CORETYPE=Prescott "$BENCH_BIN_DIR/cpu_gemm" "$REPS"
