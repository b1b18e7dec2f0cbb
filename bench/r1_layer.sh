#!/usr/bin/env bash
# bench/r1_layer.sh — the one device call for issue #11's measurements (needs an H100/H200):
#   1. builds the DeepSeek GPU tests and the R1-layer lab with nvcc from core/ + kernels/
#      (+ OpenBLAS for the CPU twins, cuBLASLt) — no package registry needed;
#   2. runs tests/gpu/test_ds_*_gpu (each kernel against its CPU twin);
#   3. runs bench/lab_ds_r1_layer: one full-width R1 layer, decode at batch 1/32/256 with 4k
#      contexts and a 4k prefill, the peers (copy bandwidth, dense FP8 GEMM) and the 8×H200
#      projection, as markdown tables for bench/RESULTS.md.
# Usage: bench/r1_layer.sh [--quick]     OUT=dir keeps the logs (default build/r1_layer).
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC=${NVCC:-nvcc}
OUT=${OUT:-build/r1_layer}
ARCH=${ARCH:-"-gencode arch=compute_90a,code=sm_90a -gencode arch=compute_80,code=sm_80"}
mkdir -p "$OUT/obj"
command -v "$NVCC" >/dev/null || { echo "r1_layer: nvcc not found"; exit 1; }
CUDA_HOME=${CUDA_HOME:-$(dirname "$(dirname "$(command -v "$NVCC")")")}

echo "== build ($(date -u +%H:%M:%S))"
CU="kernels/cuda/fp8_gemm.cu kernels/cuda/ds_moe.cu kernels/cuda/ds_mla.cu kernels/cuda/ds_sample.cu kernels/cuda/ds_norm.cu kernels/cuda/convert.cu"
# the CPU twins the tests compare against, and what they need from core/
CSRC="core/status.c core/alloc.c core/threadpool.c core/log.c core/dtype.c kernels/cpu/fp8.c kernels/cpu/convert.c
      kernels/cpu/moe.c kernels/cpu/act.c kernels/cpu/matmul.c kernels/cpu/mla.c kernels/cpu/sample.c
      kernels/cpu/norm.c"
# YaRN's CPU twin (kernels/cpu/yarn.c) reads core/model_config.h, which needs jansson; without
# it the rope comparison is skipped (and says so).
YARN_FLAGS=() ; YARN_LIBS=()
if echo '#include <jansson.h>' | cc -E -x c - >/dev/null 2>&1; then
  CSRC="$CSRC kernels/cpu/yarn.c core/model_config.c core/json.c core/fsutil.c"
  YARN_LIBS=(-ljansson)
else
  YARN_FLAGS=(-DDS_NO_YARN)
  echo "   (no jansson.h: the rope test will be skipped)"
fi
OBJS=()
for f in $CU; do
  o="$OUT/obj/$(basename "$f" .cu).o"
  "$NVCC" -O3 -std=c++17 -I. $ARCH -Xcompiler -Wall,-Wextra,-Wno-unused-parameter -DRT_HAVE_CUDA=1 -c "$f" -o "$o" &
  OBJS+=("$o")
done
for f in $CSRC; do
  o="$OUT/obj/$(basename "$f" .c)_c.o"
  cc -std=c11 -O2 -Wall -Wextra -Wno-unused-parameter -I. -D_GNU_SOURCE -DRT_HAVE_CUDA=1 -DRT_KERNELS_ONLY -pthread -c "$f" -o "$o" &
  OBJS+=("$o")
done
wait
ar rcs "$OUT/libds.a" "${OBJS[@]}"
LIBS=(-L"$CUDA_HOME/lib64" -Wl,-rpath,"$CUDA_HOME/lib64" -lcublasLt -lcudart -lopenblas "${YARN_LIBS[@]}" -lstdc++ -lm -lpthread -ldl -lrt)
for t in tests/gpu/test_ds_*_gpu.c; do
  cc -std=c11 -O2 -Wall -Wextra -Wno-unused-parameter -I. -I"$CUDA_HOME/include" -D_GNU_SOURCE -DRT_HAVE_CUDA=1 -pthread "${YARN_FLAGS[@]}" \
     -o "$OUT/$(basename "$t" .c)" "$t" "$OUT/libds.a" "${LIBS[@]}"
done
"$NVCC" -O3 -std=c++17 -I. $ARCH -DRT_HAVE_CUDA=1 -o "$OUT/lab_ds_r1_layer" bench/lab_ds_r1_layer.cu "$OUT/libds.a" \
  -lcublasLt -lopenblas

echo "== GPU tests against the CPU twins ($(date -u +%H:%M:%S))"
status=0
for t in "$OUT"/test_ds_*_gpu; do
  echo "-- $(basename "$t")"
  "$t" 2>&1 | tee "$t.log" || status=1
done

echo "== R1 layer ($(date -u +%H:%M:%S))"
"$OUT/lab_ds_r1_layer" "$@" 2>&1 | tee "$OUT/r1_layer.md" || status=1
echo "== done ($(date -u +%H:%M:%S)); tables in $OUT/r1_layer.md"
exit $status
