#!/usr/bin/env bash
# DeepSeek-V3 on the parallel forward (teacher/parallel.h), side by side with the serial one on
# the same core budget: `mpirun -np 2` with 1 thread per rank against one process with 2
# threads, same small DeepSeek-V3 shape as bench/deepseek_decode.sh (f32, 8 heads, 16 experts,
# vocabulary 32000), same prompt and new tokens. Prints prefill and decode tokens/s, the
# ratios (parallel / serial), the bytes each rank read at load, and whether the greedy tokens
# agree. On one machine this measures the cost of the collectives, not a speed-up.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${PYTHON:=python3}" "${BENCH_BIN_DIR:=build/cpu/bench}"
command -v mpirun >/dev/null || { echo "bench/ds_parallel: skipped: mpirun not installed"; exit 0; }
dir=$(mktemp -d /tmp/retort-bench.XXXXXX)
trap 'rm -rf "$dir"' EXIT
PLEN=64 NEW=32
export TQDM_DISABLE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
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
s=$("$BENCH_BIN_DIR/ds_parallel" "$dir" $PLEN $NEW 2 serial)
p=$(mpirun --oversubscribe -np 2 --mca btl self,vader "$BENCH_BIN_DIR/ds_parallel" "$dir" $PLEN $NEW 1)
echo "bench/ds_parallel   small DeepSeek-V3 (f32), prompt $PLEN, $NEW new tokens, 2 cores"
awk -v s="$s" -v p="$p" -v plen=$PLEN 'BEGIN {
  split(s, a, " "); split(p, b, " ")
  printf "  serial, 2 threads            prefill %8.1f tokens/s   decode %7.1f tokens/s   read %6.1f MB\n", plen / a[3], a[2] / a[1], a[4] / 1e6
  printf "  2 ranks x 1 thread (MPI)     prefill %8.1f tokens/s   decode %7.1f tokens/s   read %6.1f MB per rank\n", plen / b[3], b[2] / b[1], b[4] / 1e6
  printf "  ratio (2 ranks / serial)     prefill %8.2fx            decode %7.2fx\n", a[3] / b[3], a[1] / b[1]
  printf "  greedy tokens agree          %s\n", (a[5] == b[5] && a[6] == b[6]) ? "yes" : "NO" }'
