#!/usr/bin/env bash
# bench/r1_layer.sh — the one device call for issue #11's measurements (an H100 or H200):
#   1. builds, from the GPU-only tree (make gpu-test-build's rules: core basics + kernels/ +
#      CUDA, no package registry needed), the DeepSeek tests and labs;
#   2. runs the DeepSeek kernel tests, tests/gpu/test_ds_*_gpu (each kernel against its CPU
#      twin, with the tolerances stated in each file);
#   3. runs bench/lab_ds_r1_layer: one full-width R1 layer with random FP8 weights, decode at
#      batch 1/32/256 with 4k contexts (CUDA graphs and eager) and a 4k prefill, its peers
#      (copy bandwidth, a dense FP8 GEMM) and the 61-layer 8×H200 projection, as markdown
#      tables for bench/RESULTS.md;
#   4. runs bench/lab_ds_kernels: each kernel on R1's shapes, GB/s and TFLOP/s against the
#      same run's copy bandwidth and cuBLASLt FP8 GEMM.
# Usage: bench/r1_layer.sh [--quick]   (BUILD=dir as for make; logs beside the binaries)
# Exit status: 1 when a test or the lab fails.
set -uo pipefail
cd "$(dirname "$0")/.."
[ -d /usr/local/cuda/bin ] && PATH=$PATH:/usr/local/cuda/bin
command -v nvcc >/dev/null 2>&1 || { echo "r1_layer: skipped: no nvcc (CUDA toolkit)"; exit 0; }
nvidia-smi -L >/dev/null 2>&1 || { echo "r1_layer: skipped: no CUDA device"; exit 0; }
BUILD=${BUILD:-build/r1}
G="$BUILD/gpuonly"
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 4)}

# only what this call runs (the GPU-only library, the DeepSeek tests and labs), not every lab
TARGETS=()
for t in tests/gpu/test_ds_*_gpu.c; do TARGETS+=("$G/gpu-tests/$(basename "$t" .c)"); done
TARGETS+=("$G/labs/lab_ds_r1_layer" "$G/labs/lab_ds_kernels")
echo "== build ($(date -u +%H:%M:%S)): make CUDA=1 BUILD=$BUILD ${#TARGETS[@]} targets of gpu-test-build"
make -j"$JOBS" --no-print-directory CUDA=1 BUILD="$BUILD" "${TARGETS[@]}" || { echo "r1_layer: build failed"; exit 1; }

status=0
echo "== GPU tests against the CPU twins ($(date -u +%H:%M:%S))"
for t in "$G"/gpu-tests/test_ds_*_gpu; do
  echo "-- $(basename "$t")"
  "$t" 2>&1 | tee "$t.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
done

echo "== R1 layer ($(date -u +%H:%M:%S))"
"$G/labs/lab_ds_r1_layer" "$@" 2>&1 | tee "$G/labs/r1_layer.md"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
echo "== DeepSeek kernel lab ($(date -u +%H:%M:%S))"
"$G/labs/lab_ds_kernels" "$@" 2>&1 | tee -a "$G/labs/r1_layer.md"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
echo "== done ($(date -u +%H:%M:%S)), status $status; tables in $G/labs/r1_layer.md"
exit $status
