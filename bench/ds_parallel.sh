#!/usr/bin/env bash
# DeepSeek-V3 on the parallel forward (teacher/parallel.h), side by side with the serial one on
# the same core budget: `mpirun -np 2` with 1 thread per rank against one process with 2
# threads, same small DeepSeek-V3 shape as bench/deepseek_decode.sh (f32, 8 heads, 16 experts,
# vocabulary 32000), same prompt (PLEN 64) and new tokens (NEW 32). Inherently multi-process:
# its rows run 2 threads in all (2 ranks x 1 thread; the peer, the serial forward, 1 process x 2
# threads), there is no 1-thread row. Prints prefill and decode tokens/s, the ratios (parallel
# / serial: above 1 the ranks are faster), the bytes each rank read at load, and whether the
# greedy tokens agree; two summary rows (prefill, decode). On one machine this measures the cost
# of the collectives, not a speed-up. Skips (exit 0) where mpirun is missing or cannot start 2
# ranks, or the binary was built without MPI (MPI=0).
# Quick run: PLEN=16 NEW=8.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
: "${PYTHON:=python3}" "${BENCH_BIN_DIR:=build/cpu/bench}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
MPIRUN=(mpirun --oversubscribe -np 2 --mca btl "self,vader")
command -v mpirun >/dev/null || { bench_skip bench/ds_parallel "mpirun not installed (Open MPI)"; exit 0; }
if ! out=$(timeout 60 "${MPIRUN[@]}" true 2>&1); then
  bench_skip bench/ds_parallel "mpirun cannot start 2 ranks here: $(printf '%s\n' "$out" | grep -m1 -v '^[-[:space:]]*$' | cut -c1-120)"
  exit 0
fi
dir=$(mktemp -d /tmp/retort-bench.XXXXXX)
trap 'rm -rf "$dir"' EXIT
PLEN=${PLEN:-64} NEW=${NEW:-32}
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
lb=$(bench_load)
s=$("$BENCH_BIN_DIR/ds_parallel" "$dir" $PLEN $NEW 2 serial)
p=$("${MPIRUN[@]}" "$BENCH_BIN_DIR/ds_parallel" "$dir" $PLEN $NEW 1)
la=$(bench_load)
if [ "$(printf '%s\n' "$p" | wc -l)" != 1 ]; then   # every rank printed: each ran alone
  bench_skip bench/ds_parallel "$BENCH_BIN_DIR/ds_parallel has no MPI (built with MPI=0?): each rank ran the whole model"
  exit 0
fi
echo "bench/ds_parallel   small DeepSeek-V3 (f32), prompt $PLEN, $NEW new tokens, 2 cores, load $lb -> $la"
awk -v s="$s" -v p="$p" -v plen=$PLEN 'BEGIN {
  split(s, a, " "); split(p, b, " ")
  printf "  serial, 2 threads            prefill %8.1f tokens/s   decode %7.1f tokens/s   read %6.1f MB\n", plen / a[3], a[2] / a[1], a[4] / 1e6
  printf "  2 ranks x 1 thread (MPI)     prefill %8.1f tokens/s   decode %7.1f tokens/s   read %6.1f MB per rank\n", plen / b[3], b[2] / b[1], b[4] / 1e6
  printf "  ratio (2 ranks / serial)     prefill %8.2fx            decode %7.2fx\n", a[3] / b[3], a[1] / b[1]
  printf "  greedy tokens agree          %s\n", (a[5] == b[5] && a[6] == b[6]) ? "yes" : "NO" }'
read -r sd sn sp _ < <(printf '%s\n' "$s")
read -r pd pn pp _ < <(printf '%s\n' "$p")
rate() { awk -v n="$1" -v t="$2" 'BEGIN { print n / t }'; }
bench_row "ds-v3 prefill, 2 MPI ranks x 1 thread" tokens/s "$(rate $PLEN "$pp")" "$(rate $PLEN "$sp")" "serial, 1 process x 2 threads" 2 "$lb" "$la"
bench_row "ds-v3 decode, 2 MPI ranks x 1 thread" tokens/s "$(rate "$pn" "$pd")" "$(rate "$sn" "$sd")" "serial, 1 process x 2 threads" 2 "$lb" "$la"
