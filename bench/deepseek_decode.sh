#!/usr/bin/env bash
# DeepSeek-V3 decode, side by side: retort's CPU engine (absorbed MLA over the latent cache)
# against transformers' greedy generate (DynamicCache, SDPA attention, f32) on the same small
# DeepSeek-V3 shape (~60M parameters: 4 layers, 1 dense + 3 MoE with 16 experts, YaRN), same
# prompt length, same number of new tokens, same thread count: 1, then 2 (bench/common.sh).
# transformers' decode time is a full generate minus a prefill-plus-one-token generate, both
# timed after a warm-up generate (an un-warmed first call would inflate what is subtracted).
# Prints decode tokens/s, the ratio and the load.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
: "${PYTHON:=python3}" "${BENCH_BIN_DIR:=build/cpu/bench}"
dir=$(mktemp -d /tmp/retort-bench.XXXXXX)
trap 'rm -rf "$dir"' EXIT
PLEN=32 NEW=64
export TQDM_DISABLE=1 HF_HUB_DISABLE_PROGRESS_BARS=1
"$PYTHON" - "$dir" <<'PY'
import json, os, sys, torch
os.environ["TQDM_DISABLE"] = "1"
from transformers import AutoConfig, AutoModelForCausalLM
cfg = json.load(open("configs/models/tiny-deepseek-v3.json"))
cfg.pop("quantization_config")
cfg.update(hidden_size=512, intermediate_size=1536, moe_intermediate_size=256, num_hidden_layers=4,
           n_routed_experts=16, n_group=4, topk_group=2, num_experts_per_tok=4, num_attention_heads=8,
           num_key_value_heads=8, kv_lora_rank=128, q_lora_rank=256, qk_nope_head_dim=64, qk_rope_head_dim=32,
           v_head_dim=64, vocab_size=32000, num_nextn_predict_layers=0)
torch.manual_seed(0)
AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg)).float().save_pretrained(sys.argv[1])
PY
for THREADS in $(bench_threads); do
lb=$(bench_load)
r=$("$BENCH_BIN_DIR/deepseek_decode" "$dir" $PLEN $NEW "$THREADS")
p=$("$PYTHON" - "$dir" $PLEN $NEW "$THREADS" <<'PY'
import os, sys, time, torch
os.environ["TQDM_DISABLE"] = "1"
from transformers import AutoModelForCausalLM
d, plen, new, th = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(th)
m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="sdpa").eval()
ids = (torch.arange(plen) * 7919 + 13) % m.config.vocab_size
with torch.no_grad():
    m.generate(ids[None], max_new_tokens=2, min_new_tokens=2, do_sample=False)   # warm-up
    t0 = time.perf_counter()
    m.generate(ids[None], max_new_tokens=1, min_new_tokens=1, do_sample=False)
    t1 = time.perf_counter()
    m.generate(ids[None], max_new_tokens=new, min_new_tokens=new, do_sample=False)
    t2 = time.perf_counter()
# decode time = full generate minus the prefill-plus-one-token run
print((t2 - t1) - (t1 - t0), new - 1)
PY
)
la=$(bench_load)
echo "bench/deepseek_decode   small DeepSeek-V3 (f32), prompt $PLEN, $NEW new tokens, $THREADS thread(s), load $lb -> $la"
awk -v r="$r" -v p="$p" 'BEGIN {
  split(r, a, " "); split(p, b, " ")
  rt = a[2] / a[1]; hf = b[2] / b[1]
  printf "  retort (absorbed MLA)       %8.1f tokens/s\n", rt
  printf "  transformers generate       %8.1f tokens/s\n", hf
  printf "  ratio                       %8.2fx\n", rt / hf }'
rt=$(awk -v r="$r" 'BEGIN { split(r, a, " "); printf "%.2f", a[2] / a[1] }')
hf=$(awk -v p="$p" 'BEGIN { split(p, b, " "); printf "%.2f", b[2] / b[1] }')
bench_row "deepseek_decode b1" tokens/s "$rt" "$hf" "transformers sdpa" "$THREADS" "$lb" "$la"
done
