#!/usr/bin/env bash
# Teacher decode, side by side: retort's engine (teacher/engine.h: paged KV cache, batched
# decode) against transformers' greedy generate (DynamicCache, SDPA attention, f32, warmed up
# by a generate before the timed ones) on the same models — a ~124M-parameter Llama shape (hidden 768, 12 layers, 12 heads / 4 KV heads,
# FFN 2048, vocab 32000) and the small DeepSeek-V3 shape of bench/deepseek_decode.sh (~60M:
# 4 layers, 1 dense + 3 MoE with 16 experts, YaRN) — prompt 32, 64 new tokens, batch 1 and 8
# (equal-length prompts, no padding), the same thread count on both sides: 1, then 2
# (bench/common.sh; BENCH_THREADS overrides). Prints decode tokens/s, the ratio, the load, and
# the bytes-per-token roofline: f32 weights are read once per decode step, so tokens/s ≤
# batch · read bandwidth / weight bytes (for the MoE model every expert is counted, an upper
# bound on what one step reads, so its roofline is a lower bound). Each row also prints the same
# tokens per second of CPU time (user + system of each process over the decode): on a machine
# shared with other work wall time measures the neighbours too, CPU time far less.
# GEN_MODELS=llama-bf16: the Llama shape saved in bf16; retort keeps its matrices bf16 on an AVX2
# CPU (RETORT_CPU_WEIGHTS=f32 in the environment: f32 copies, the path before), transformers
# loads the same file with dtype=float32 (f32 math on the widened weights, as retort's), SDPA,
# warmed up like the others.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
: "${PYTHON:=python3}" "${BENCH_BIN_DIR:=build/cpu/bench}"
dir=$(mktemp -d /tmp/retort-bench.XXXXXX)
trap 'rm -rf "$dir"' EXIT
# a quick run (well under 2 minutes on a quiet machine): BENCH_THREADS=1 GEN_NEW=16 GEN_MODELS=llama
PLEN=32 NEW=${GEN_NEW:-64} MODELS=${GEN_MODELS:-llama deepseek} BATCHES=${GEN_BATCHES:-1 8}
export TQDM_DISABLE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 OPENBLAS_NUM_THREADS=1
"$PYTHON" - "$dir" "$MODELS" <<'PY'
import json, os, sys, torch
from transformers import AutoConfig, AutoModelForCausalLM
cfg = json.load(open("configs/models/tiny-llama.json"))
cfg.update(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
           num_key_value_heads=4, head_dim=64, vocab_size=32000)
torch.manual_seed(0)
m = AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg)).float()
m.save_pretrained(sys.argv[1] + "/llama")
if "llama-bf16" in sys.argv[2].split():
    m.to(torch.bfloat16).save_pretrained(sys.argv[1] + "/llama-bf16")
cfg = json.load(open("configs/models/tiny-deepseek-v3.json"))
cfg.pop("quantization_config")
cfg.update(hidden_size=512, intermediate_size=1536, moe_intermediate_size=256, num_hidden_layers=4,
           n_routed_experts=16, n_group=4, topk_group=2, num_experts_per_tok=4, num_attention_heads=8,
           num_key_value_heads=8, kv_lora_rank=128, q_lora_rank=256, qk_nope_head_dim=64, qk_rope_head_dim=32,
           v_head_dim=64, vocab_size=32000, num_nextn_predict_layers=0)
AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg)).float().save_pretrained(sys.argv[1] + "/deepseek")
PY
for THREADS in $(bench_threads); do
for model in $MODELS; do
case $model in
  llama) echo "bench/generate   Llama shape ~124M parameters (f32), prompt $PLEN, $NEW new tokens, $THREADS thread(s), greedy" ;;
  llama-bf16) echo "bench/generate   Llama shape ~124M parameters (bf16 file; retort RETORT_CPU_WEIGHTS=${RETORT_CPU_WEIGHTS:-auto}, transformers f32), prompt $PLEN, $NEW new tokens, $THREADS thread(s), greedy" ;;
  deepseek) echo "bench/generate   DeepSeek-V3 shape ~60M parameters (f32, MoE 4 of 16), prompt $PLEN, $NEW new tokens, $THREADS thread(s), greedy" ;;
esac
for B in $BATCHES; do
  lb=$(bench_load)
  r=$("$BENCH_BIN_DIR/generate" "$dir/$model" $PLEN $NEW $B "$THREADS")
  p=$("$PYTHON" - "$dir/$model" $PLEN $NEW $B "$THREADS" <<'PY'
import os, sys, time, torch
from transformers import AutoModelForCausalLM
d, plen, new, b, th = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(th)
m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="sdpa").eval()
ids = ((torch.arange(b * plen) * 7919 + 13) % m.config.vocab_size).view(b, plen)
kw = dict(do_sample=False, eos_token_id=None, pad_token_id=0)
with torch.no_grad():
    m.generate(ids, max_new_tokens=1, **kw)
    t0, c0 = time.perf_counter(), time.process_time()
    m.generate(ids, max_new_tokens=1, **kw)
    t1, c1 = time.perf_counter(), time.process_time()
    m.generate(ids, max_new_tokens=new, min_new_tokens=new, **kw)
    t2, c2 = time.perf_counter(), time.process_time()
print((t2 - t1) - (t1 - t0), b * (new - 1), (c2 - c1) - (c1 - c0))
PY
)
  la=$(bench_load)
  awk -v r="$r" -v p="$p" -v b=$B 'BEGIN {
    split(r, a, " "); split(p, c, " ")
    rt = a[2] / a[1]; hf = c[2] / c[1]; roof = b * a[4] * 1e9 / a[3]
    printf "  batch %2d  retort %8.1f tokens/s   transformers %8.1f tokens/s   ratio %5.2fx   roofline %8.1f tokens/s (%.0f MB/token-step at %.1f GB/s; retort at %2.0f%%)\n",
      b, rt, hf, rt / hf, roof, a[3] / 1e6, a[4], 100 * rt / roof
    if (a[5] > 0 && c[3] > 0)
      printf "            CPU time (user+sys): retort %8.1f tokens/CPU-s   transformers %8.1f tokens/CPU-s   ratio %5.2fx\n",
        a[2] / a[5], c[2] / c[3], (a[2] / a[5]) / (c[2] / c[3]) }'
  rt=$(awk -v r="$r" 'BEGIN { split(r, a, " "); printf "%.2f", a[2] / a[1] }')
  hf=$(awk -v p="$p" 'BEGIN { split(p, c, " "); printf "%.2f", c[2] / c[1] }')
  bench_row "generate $model b$B" tokens/s "$rt" "$hf" "transformers sdpa" "$THREADS" "$lb" "$la"
done
done
done
