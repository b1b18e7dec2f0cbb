#!/usr/bin/env bash
# bench/gpu_student.sh — everything about the student's CUDA kernels in one go, on a machine
# with an NVIDIA GPU (H100/H200): the GPU-only build (core basics + kernels + CUDA, no other
# -dev packages), every GPU test (each kernel against its CPU twin), every kernel lab (time,
# TFLOP/s or GB/s, % of the peak measured in the same run) and, when python3 has torch, the
# PyTorch peer of the labs with the per-variant ratio, and at the end the GPU training path
# against the CPU trainer (tests/ref/test_train_gpu.py on a full CUDA build). Results go to
# $OUT (default build/gpu-student-out): build.log, gpu-test.log, gpu-bench.log,
# torch-peer.log, ratios.txt, train-build.log, train-gpu.log, nvidia-smi.txt, and
# summary.txt (one line per stage).
#
# The single device-tool call that runs it (from the repository root, ~5 minutes), after
# `bash scripts/device_debs.sh` here (the Debian packages the full build needs):
#   run(command="bash bench/gpu_student.sh", carry=[".device"], kind="nvidia-h100-x1", timeout_s=600)
# By hand on any GPU machine:  OUT=/tmp/gs bash bench/gpu_student.sh
# On a machine without a GPU it prints "skipped: ..." and exits 0 (so bench/run.sh can
# include it); with a GPU, every stage that cannot build (no nvcc, a failed build, packages
# not carried) FAILS and the script exits 1 — it never reports "skipped" for a build.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-build/gpu-student-out}
mkdir -p "$OUT"
[ -d /usr/local/cuda/bin ] && PATH=$PATH:/usr/local/cuda/bin
if ! nvidia-smi -L >/dev/null 2>&1; then echo "skipped: no CUDA device"; exit 0; fi
if ! command -v nvcc >/dev/null 2>&1; then echo "build: FAILED (a GPU but no nvcc: the CUDA toolkit is needed)"; exit 1; fi
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
B=${GPU_STUDENT_BUILD:-build/gpu-student}
# Hopper only (H100/H200: sm_90a): one device code per kernel instead of the Makefile's two
# halves nvcc's share of both builds below, which must fit the 8-minute budget
NV="-O3 -std=c++17 -I. -gencode arch=compute_90a,code=sm_90a -Xcompiler -Wall,-Wextra,-Wno-unused-parameter"
J=$(nproc 2>/dev/null || echo 8)
export LAB_REPS=${LAB_REPS:-5}   # median of 5 per variant keeps the whole run inside one 10-minute call
summary() { echo "$*" | tee -a "$OUT/summary.txt"; }
: > "$OUT/summary.txt"
summary "device: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)"
summary "nvcc: $(nvcc --version | tail -1)"

t0=$(date +%s)
if make -j"$J" CUDA=1 NVFLAGS="$NV" BUILD="$B" gpu-test-build > "$OUT/build.log" 2>&1; then
  summary "build: ok ($(( $(date +%s) - t0 )) s; warnings: $(grep -c 'warning' "$OUT/build.log"))"
else
  tail -40 "$OUT/build.log"
  summary "build: FAILED (see build.log)"
  exit 1
fi
# what the test binaries link against: CUDA libraries and libc only
ldd "$B"/gpuonly/gpu-tests/* "$B"/gpuonly/labs/* 2>/dev/null | awk '/=>/ {print $1}' | sort -u > "$OUT/linked-libs.txt"

# the student's kernels only (make gpu-test also runs the teacher's tests/gpu/test_ds_*)
rc=0
for t in matmul norm rope act embed attention loss optim convert; do
  echo "== test_${t}_gpu" >> "$OUT/gpu-test.log"
  timeout 300 "$B/gpuonly/gpu-tests/test_${t}_gpu" >> "$OUT/gpu-test.log" 2>&1 || rc=1
done
cat "$OUT/gpu-test.log"
summary "gpu-test: $([ $rc = 0 ] && echo ok || echo FAILED) — $(grep -c '^ok ' "$OUT/gpu-test.log") passed, $(grep -c '^FAIL' "$OUT/gpu-test.log") failed"

# the student's labs (bench/lab_ds_* are the teacher's: bench/r1_layer.sh); each bounded in time
brc=0
for l in lab_gemm lab_attention lab_memory lab_loss lab_layer; do
  echo "== $l" >> "$OUT/gpu-bench.log"
  timeout 200 "$B/gpuonly/labs/$l" >> "$OUT/gpu-bench.log" 2>&1 || { echo "   $l FAILED (rc $?)" >> "$OUT/gpu-bench.log"; brc=1; }
done
cat "$OUT/gpu-bench.log"
summary "gpu-bench: $([ $brc = 0 ] && echo ok || echo FAILED)"

if python3 -c 'import torch; assert torch.cuda.is_available()' >/dev/null 2>&1; then
  python3 bench/lab_torch_peer.py > "$OUT/torch-peer.log" 2>&1
  prc=$?
  python3 bench/lab_torch_peer.py --ratios "$OUT/gpu-bench.log" "$OUT/torch-peer.log" > "$OUT/ratios.txt" 2>&1
  cat "$OUT/ratios.txt"
  summary "torch peer: $([ $prc = 0 ] && echo ok || echo FAILED) ($(python3 -c 'import torch; print(torch.__version__)'))"
else
  summary "torch peer: skipped (python3 has no CUDA torch)"
fi
# the GPU training path (`retort train --device cuda`): the full CUDA build (it needs the -dev
# packages of README, carried as .deb files and unpacked, or the stage FAILS) and the pytest that
# trains a tiny Qwen2 on the GPU against the CPU trainer and crosses checkpoints both ways.
# GPU_TRAIN=0 leaves it out.
trc=0
if [ "${GPU_TRAIN:-1}" = 1 ]; then
  GT=${GPU_TRAIN_BUILD:-build/gpu-train}
  PY=${PYTHON:-python3}
  [ -z "${PYTHON:-}" ] && [ -x "$HOME/.cache/retort/venv/bin/python" ] && PY=$HOME/.cache/retort/venv/bin/python
  t0=$(date +%s)
  # the GPU machine has no -dev packages: the carried Debian packages (scripts/device_debs.sh
  # here, carry .device), unpacked into build/sysroot; no Open MPI there (MPI=0, one rank)
  if bash scripts/device_sysroot.sh build/sysroot > "$OUT/train-build.log" 2>&1 &&
     timeout 300 make -j"$J" CUDA=1 NVFLAGS="$NV" MPI=0 SYSROOT=build/sysroot BUILD="$GT" BIN="$GT/retort" "$GT/retort" \
       "$GT/tools/student_mkshard" "$GT/bench/train_gpu_mkshard" >> "$OUT/train-build.log" 2>&1; then
    if "$PY" -c 'import pytest, numpy, safetensors' >/dev/null 2>&1; then
      RETORT=$PWD/$GT/retort TOOLS_DIR=$PWD/$GT/tools timeout 300 "$PY" -m pytest -q -rs tests/ref/test_train_gpu.py \
        > "$OUT/train-gpu.log" 2>&1 || trc=1
      cat "$OUT/train-gpu.log"
      summary "gpu train: $([ $trc = 0 ] && echo ok || echo FAILED) ($(( $(date +%s) - t0 )) s with the build) — $(tail -1 "$OUT/train-gpu.log")"
    else
      trc=1
      summary "gpu train: FAILED ($PY has no pytest, numpy or safetensors)"
    fi
  else
    tail -20 "$OUT/train-build.log"
    trc=1
    summary "gpu train: FAILED (the full CUDA build failed or timed out: see train-build.log; were the packages carried?)"
  fi
fi
# retort train --device cuda against PyTorch (transformers Qwen2, SDPA, torch.compile, fused
# AdamW, bf16) on Qwen2.5-0.5B and 1.5B shapes at 4k and 16k packed tokens: tokens/s, MFU,
# peak memory beside the plan (bench/train_gpu.sh). GPU_TRAIN_BENCH=0 leaves it out.
if [ "${GPU_TRAIN:-1}" = 1 ] && [ "${GPU_TRAIN_BENCH:-1}" = 1 ] && [ -x "${GT:-}/retort" ]; then
  if RETORT="$GT/retort" BENCH_BIN_DIR="$GT/bench" STEPS=${TRAIN_STEPS:-6} WARMUP=2 timeout 300 \
       bash bench/train_gpu.sh > "$OUT/train-bench.md" 2>&1; then
    cat "$OUT/train-bench.md"
    summary "gpu train bench: ok (train-bench.md)"
  else
    trc=1
    tail -20 "$OUT/train-bench.md"
    summary "gpu train bench: FAILED (train-bench.md)"
  fi
fi
cat "$OUT/summary.txt"
[ $rc = 0 ] && [ $brc = 0 ] && [ $trc = 0 ]
