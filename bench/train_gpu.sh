#!/usr/bin/env bash
# Training on one GPU, side by side: `retort train` (bf16, f32 master weights, layer
# checkpointing) against PyTorch (bench/train_gpu_torch.py: transformers Qwen2 from config,
# random weights, bf16 autocast over f32 parameters, SDPA flash attention, torch.compile,
# fused AdamW, activation checkpointing), same shape, same packed sequences, same tokens per
# step. Shapes: Qwen2.5-0.5B and 1.5B (configs/models), sequences of 4k and 16k tokens.
#
# Prints the rows of bench/RESULTS.md's training table:
#   | device | date | model | seq | impl | tokens/s | MFU | peak memory | ratio |
# MFU = (6·N + attention FLOPs per token) × tokens/s / peak (H100 dense bf16: 989 TFLOP/s;
# PEAK_TFLOPS=… for another device; formula in bench/train_gpu_torch.py). Ratio: retort's
# tokens/s over PyTorch's from this same run.
#
# Environment: RETORT (binary, default ./retort), PYTHON (with torch + transformers),
# BENCH_BIN_DIR (where bench/train_gpu_mkshard was built), MODELS ("0.5b 1.5b"), SEQS
# ("4096 16384"), TOKENS (tokens per optimizer step, default 16384: batch = TOKENS/seq),
# DOCS (equal documents per packed sequence, default 1), STEPS (timed, default 10),
# WARMUP (untimed, default 3), PEAK_TFLOPS (989).
# SMOKE=1: the whole script on the CPU with a tiny shape (both sides on the CPU trainer /
# torch CPU), to check the plumbing on a machine without a GPU.
#
# The retort side is `retort train --device cuda` (student/gpu_train.h; docs/student.md, "GPU
# path"); a binary without --device (or a CPU-only build, which fails with "built without
# CUDA") gets a "not built"/"failed" row and PyTorch is still measured. retort's peak memory
# is the peak_mem_gib its log reports (cudaMemGetInfo: the CUDA context included).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${PYTHON:=python3}" "${RETORT:=./retort}" "${BENCH_BIN_DIR:=build/gpu/bench}" "${TOKENS:=16384}" "${DOCS:=1}"
: "${STEPS:=10}" "${WARMUP:=3}" "${PEAK_TFLOPS:=989}" "${SMOKE:=0}"
if [ "$SMOKE" = 1 ]; then
  : "${MODELS:=tiny}" "${SEQS:=128 256}"
  TOKENS=512 STEPS=2 WARMUP=1
  dev=cpu torch_flags=(--device cpu --no-compile)
else
  : "${MODELS:=0.5b 1.5b}" "${SEQS:=4096 16384}"
  dev=cuda torch_flags=(--device cuda)
  if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "bench/train_gpu   skipped: no CUDA device (SMOKE=1 runs the plumbing on the CPU with a tiny shape)"
    exit 0
  fi
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

have_gpu_train=0
if "$RETORT" train --help 2>/dev/null | grep -q -- '--device'; then have_gpu_train=1; fi
if [ "$dev" = cpu ]; then have_gpu_train=1; fi   # the smoke test runs retort's CPU trainer

# retort side: tokens/s (mean of the logged steps after WARMUP), peak memory (the log's
# peak_mem_gib when retort reports it, else the most nvidia-smi saw in use on the device)
run_retort() {   # model seq batch → "tokens_per_s peak_gib plan_gib"
  local model=$1 seq=$2 batch=$3 cfg vocab
  if [ "$model" = tiny ]; then
    cfg="$work/tiny.json"
    "$PYTHON" -P bench/train_gpu_torch.py --model tiny --print-config > "$cfg"
  else
    cfg="configs/models/qwen2.5-$model.json"
  fi
  vocab=$("$PYTHON" -P -c 'import json, sys; print(json.load(open(sys.argv[1]))["vocab_size"])' "$cfg")
  local n=$(( batch * (STEPS + WARMUP) ))
  rm -rf "$work/shards" "$work/out" "$work/log.jsonl"
  mkdir -p "$work/shards"
  "$BENCH_BIN_DIR/train_gpu_mkshard" "$work/shards/shard-00000.bin" "$seq" "$n" "$vocab" "$DOCS" 1
  local flags=(--init "$cfg" --data "$work/shards" --batch "$batch" --steps $((STEPS + WARMUP)) --lr 1e-5
               --schedule constant --weight-decay 0.1 --checkpoint-layers --out "$work/out" --log "$work/log.jsonl")
  [ "$dev" = cuda ] && flags+=(--device cuda)
  local smi_pid=""
  if [ "$dev" = cuda ]; then
    (while sleep 0.2; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0; done) > "$work/smi" 2>/dev/null &
    smi_pid=$!
  fi
  local ok=1
  "$RETORT" train "${flags[@]}" 2> "$work/retort.err" || ok=0
  [ -n "$smi_pid" ] && kill "$smi_pid" 2>/dev/null && wait "$smi_pid" 2>/dev/null || true
  if [ $ok = 0 ]; then echo "failed: $(tail -1 "$work/retort.err")"; return; fi
  # the memory plan of the same run (student/gpu_plan.h), to set beside the measured peak
  "$RETORT" train --plan --init "$cfg" --ranks 1 --seq "$seq" --batch "$batch" --zero 0 --checkpoint-layers --json \
    > "$work/plan.json" 2>/dev/null || echo '{}' > "$work/plan.json"
  "$PYTHON" -P - "$work/log.jsonl" "$WARMUP" "$work/smi" "$work/plan.json" <<'EOF'
import json, os, sys
plan = json.load(open(sys.argv[4])).get("total_bytes", 0) / 2**30
rows = [json.loads(l) for l in open(sys.argv[1])][int(sys.argv[2]):]
tps = sum(r["tokens_per_s"] for r in rows) / len(rows)
peak = max((r.get("peak_mem_gib", 0) for r in rows), default=0)
if not peak and os.path.exists(sys.argv[3]):
    mib = [float(x) for x in open(sys.argv[3]).read().split() if x.strip()]
    peak = max(mib) / 1024 if mib else 0
print(f"{tps:.6g} {peak:.4g} {plan:.4g}" if peak else f"{tps:.6g} nan {plan:.4g}")
EOF
}

kv() { printf '%s\n' "$1" | awk -v k="$2" '$1 == k {print $2}'; }

date_s=$(date -u +%Y-%m-%d)
device=$([ "$dev" = cuda ] && nvidia-smi --query-gpu=name --format=csv,noheader -i 0 || echo "cpu ($(nproc) threads)")
echo "bench/train_gpu   $device, tokens per step $TOKENS, $DOCS document(s) per sequence, mean of $STEPS steps after $WARMUP"
[ "$have_gpu_train" = 1 ] || echo "  note: retort's GPU training path is not built yet (\`retort train\` has no --device); PyTorch side only"
echo
echo "| device | date | model | seq | impl | tokens/s | MFU | peak memory | ratio |"
echo "|---|---|---|---|---|---|---|---|---|"
for model in $MODELS; do
  for seq in $SEQS; do
    batch=$(( TOKENS / seq )); [ "$batch" -ge 1 ] || batch=1
    fl=$("$PYTHON" -P bench/train_gpu_torch.py --model "$model" --seq "$seq" --docs "$DOCS" --flops-only)
    fpt=$(kv "$fl" flops_per_token)
    p=$("$PYTHON" -P bench/train_gpu_torch.py --model "$model" --seq "$seq" --docs "$DOCS" --batch "$batch" \
          --steps "$STEPS" --warmup "$WARMUP" --ckpt --peak-tflops "$PEAK_TFLOPS" "${torch_flags[@]}" 2>"$work/torch.err") \
      || p="failed $(tail -1 "$work/torch.err")"
    pt=$(kv "$p" tokens_per_s); pt=${pt:-nan}
    pm=$(kv "$p" peak_mem_gib); pm=${pm:-nan}
    if [ "$have_gpu_train" = 1 ]; then
      r=$(run_retort "$model" "$seq" "$batch")
    else
      r="n/a"
    fi
    label="$seq x $batch"; [ "$DOCS" = 1 ] || label="$label ($DOCS docs)"
    awk -v dev="$device" -v d="$date_s" -v m="$model" -v s="$label" -v pt="$pt" -v pm="$pm" -v r="$r" \
        -v fpt="$fpt" -v peak="$PEAK_TFLOPS" -v perr="$p" 'BEGIN {
      split(r, rv, " ")
      if (pt == "nan") printf "| %s | %s | %s | %s | pytorch | %s | | | |\n", dev, d, m, s, perr
      else printf "| %s | %s | %s | %s | pytorch | %.0f | %.1f%% | %s GiB | |\n", dev, d, m, s, pt, 100 * fpt * pt / (peak * 1e12), pm
      if (r == "n/a") printf "| %s | %s | %s | %s | retort | not built (no GPU training path yet) | | | |\n", dev, d, m, s
      else if (rv[1] == "failed:") printf "| %s | %s | %s | %s | retort | %s | | | |\n", dev, d, m, s, r
      else printf "| %s | %s | %s | %s | retort | %.0f | %.1f%% | %s GiB (plan %s) | %s |\n", dev, d, m, s, rv[1],
                  100 * fpt * rv[1] / (peak * 1e12), rv[2], rv[3], (pt == "nan" ? "" : sprintf("%.2fx", rv[1] / pt))
    }'
  done
done
