#!/usr/bin/env bash
# DeepSeek-V3 CPU decode with FP8-resident weights against the same weights in f32, side by
# side: one checkpoint stored as R1 is (linear layers e4m3 with 128x128 block scales, the rest
# BF16) and its dequantized F32 twin (the same values), both loaded by bench/deepseek_fp8_decode.c:
# the first keeps the projections in e4m3 and dequantizes a tile at a time inside the GEMM
# (kernels/fp8.h fp8_linear_fwd), the second multiplies f32 matrices. Same prompt, same new
# tokens, same threads, both models in one process (bench/deepseek_fp8_decode.c), runs
# alternated, median of $REPS (5). SHAPES (default "tiny small"): the tiny preset
# (configs/models/tiny-deepseek-v3.json) and the ~60M shape of bench/deepseek_decode.sh. At each
# thread count of bench_threads (1, then 2). Prints decode tokens/s of both, by the wall clock and
# by CPU time (steadier on a busy machine), and the ratio f32 / FP8 (> 1: FP8 slower); the
# summary row (wall clock) has FP8 as retort and the f32 weights as the peer, so its ratio is
# FP8 / f32: below 1 is what reading e4m3 costs (FP8 holds a quarter of the bytes).
# Quick run: SHAPES=tiny REPS=1 NEW=16.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
: "${PYTHON:=python3}" "${BENCH_BIN_DIR:=build/cpu/bench}" "${REPS:=5}" "${SHAPES:=tiny small}"
dir=$(mktemp -d /tmp/retort-bench.XXXXXX)
trap 'rm -rf "$dir"' EXIT
PLEN=${PLEN:-32} NEW=${NEW:-64}
export TQDM_DISABLE=1 HF_HUB_DISABLE_PROGRESS_BARS=1
"$PYTHON" - "$dir" $SHAPES <<'PY'
import glob, json, os, shutil, sys, torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM
QUANTIZED = ("q_a_proj", "q_b_proj", "q_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj", "gate_proj", "up_proj",
             "down_proj", "eh_proj")

def quantize(w, b=128):
    """DeepSeek's scheme, vectorized: per 128x128 block scale = amax / 448, q = fp8(w / scale)."""
    r, c = w.shape
    br, bc = -(-r // b), -(-c // b)
    p = torch.zeros(br * b, bc * b)
    p[:r, :c] = w
    blk = p.reshape(br, b, bc, b)
    s = (blk.abs().amax(dim=(1, 3)).clamp_min(1e-12) / 448.0)
    q = (blk / s[:, None, :, None]).to(torch.float8_e4m3fn).reshape(br * b, bc * b)[:r, :c]
    deq = (q.float().reshape(-1)).reshape(r, c)
    sf = s.repeat_interleave(b, 0).repeat_interleave(b, 1)[:r, :c]
    return q.contiguous(), s.float().contiguous(), (deq * sf).contiguous()

def write(d, cfg, tensors):
    os.makedirs(d, exist_ok=True)
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    save_file(tensors, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})

base = json.load(open("configs/models/tiny-deepseek-v3.json"))
big = dict(base, hidden_size=512, intermediate_size=1536, moe_intermediate_size=256, num_hidden_layers=4,
           n_routed_experts=16, n_group=4, topk_group=2, num_experts_per_tok=4, num_attention_heads=8,
           num_key_value_heads=8, kv_lora_rank=128, q_lora_rank=256, qk_nope_head_dim=64, qk_rope_head_dim=32,
           v_head_dim=64, vocab_size=32000)
for name, cfg in (("tiny", base), ("small", big)):
    if name not in sys.argv[2:]:
        continue
    cfg = dict(cfg, num_nextn_predict_layers=0)
    hf = dict(cfg)
    hf.pop("quantization_config")
    torch.manual_seed(0)
    raw = os.path.join(sys.argv[1], name, "raw")   # save_pretrained: the checkpoint's tensor names
    AutoModelForCausalLM.from_config(AutoConfig.for_model(**hf)).float().save_pretrained(raw)
    sd = {}
    for f in sorted(glob.glob(os.path.join(raw, "*.safetensors"))):
        sd.update(load_file(f))
    shutil.rmtree(raw)
    fp8, f32 = {}, {}
    for k, v in sd.items():
        if k.endswith(".weight") and v.ndim == 2 and k.split(".")[-2] in QUANTIZED:
            q, s, deq = quantize(v.float())
            fp8[k], fp8[k + "_scale_inv"], f32[k] = q, s, deq
        else:
            fp8[k] = v.float() if k.endswith("e_score_correction_bias") else v.to(torch.bfloat16)
            f32[k] = fp8[k].float()
    write(os.path.join(sys.argv[1], name, "fp8"), cfg, fp8)
    nq = dict(cfg)
    nq.pop("quantization_config")
    write(os.path.join(sys.argv[1], name, "f32"), nq, f32)
PY
for THREADS in $(bench_threads); do
for shape in $SHAPES; do
  lb=$(bench_load)
  r=$("$BENCH_BIN_DIR/deepseek_fp8_decode" "$dir/$shape/fp8" "$dir/$shape/f32" $PLEN $NEW "$THREADS" "$REPS")
  la=$(bench_load)
  echo "bench/deepseek_fp8_decode   $shape DeepSeek-V3, prompt $PLEN, $NEW new tokens, $THREADS thread(s), median of $REPS, load $lb -> $la"
  awk -v r="$r" 'BEGIN {
    n = split(r, l, "\n"); split(l[1], f, " "); split(l[2], q, " ")
    printf "  f32 weights (dequantized)   %8.1f tokens/s (wall)  %8.1f tokens/s (CPU time)  %7.1f MB held\n", f[2], f[3], f[4] / 1e6
    printf "  FP8-resident weights        %8.1f tokens/s (wall)  %8.1f tokens/s (CPU time)  %7.1f MB held\n", q[2], q[3], q[4] / 1e6
    printf "  ratio f32 / FP8             %8.2fx (wall)          %8.2fx (CPU time)\n", f[2] / q[2], f[3] / q[3] }'
  f32=$(printf '%s\n' "$r" | awk '$1 == "f32" { print $2 }')
  fp8=$(printf '%s\n' "$r" | awk '$1 == "fp8" { print $2 }')
  bench_row "ds-v3 $shape decode, fp8 weights" tokens/s "$fp8" "$f32" "f32 weights, same values; <1: fp8 cost" "$THREADS" "$lb" "$la"
done
done
