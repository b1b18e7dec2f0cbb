#!/usr/bin/env bash
# HTTP overhead of `retort serve`: the same greedy generation through the service (B concurrent
# /v1/completions requests from bench/serve_client.py, streamed as SSE and not) against the
# in-process engine (`retort generate` with the same prompts, --max-batch B), on the same tiny
# model: the Llama shape of configs/models/tiny-llama.json (hidden 256, 4 layers) over the
# DeepSeek-V3 tokenizer asset (vocabulary 128815), f32, prompts of 32 token ids, 64 new tokens
# each, EOS ignored, at each batch of BATCHES ("1 16 64"), at each thread count of bench_threads
# (1, then 2; the server and generate get the same --threads; the Python client is one more
# process on the same cores, as a real client would be). serve's clock runs from the first
# request sent to the last response read (HTTP, JSON, SSE, the Python client included);
# generate's from its first engine step. Medians of REPS (3), interleaved. Two rows per batch
# and thread count (SSE, JSON): serve is retort, the in-process engine the peer, so the ratio
# is serve / in-process: 1 is no overhead, below 1 what the HTTP layer costs.
# Quick run: BATCHES="1 16" REPS=1.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
: "${PYTHON:=python3}" "${RETORT:=./retort}" "${BATCHES:=1 16 64}" "${REPS:=3}"
ASSETS=${RETORT_ASSETS:-../shared/assets}
TOK="$ASSETS/tokenizers/deepseek_v3/tokenizer.json"
if [ ! -f "$TOK" ]; then bench_skip bench/serve "$TOK absent (set RETORT_ASSETS)"; exit 0; fi
dir=$(mktemp -d /tmp/retort-bench-serve.XXXXXX)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
NEW=64 PLEN=32
export TQDM_DISABLE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 OPENBLAS_NUM_THREADS=1
"$PYTHON" - "$dir" "$TOK" $PLEN $BATCHES <<'PY'
import json, os, sys, shutil, torch, tokenizers
from transformers import AutoConfig, AutoModelForCausalLM
d, tok_path, plen = sys.argv[1], sys.argv[2], int(sys.argv[3])
tok = tokenizers.Tokenizer.from_file(tok_path)
cfg = json.load(open("configs/models/tiny-llama.json"))
cfg.update(vocab_size=tok.get_vocab_size(), eos_token_id=tok.token_to_id("<｜end▁of▁sentence｜>"), bos_token_id=0)
torch.manual_seed(0)
AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg)).float().save_pretrained(d + "/model")
shutil.copy(tok_path, d + "/model/tokenizer.json")
for b in map(int, sys.argv[4:]):
    with open(f"{d}/p{b}.jsonl", "w") as f:
        for i in range(b):
            f.write(json.dumps({"prompt_ids": [(i * 7919 + j * 104729 + 13) % 128000 for j in range(plen)]}) + "\n")
PY
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
for THREADS in $(bench_threads); do
echo "bench/serve   Llama shape (hidden 256, 4 layers, vocab 128815, f32), prompt $PLEN, $NEW new tokens, greedy, $THREADS thread(s)"
: > "$dir/serve.err"
"$RETORT" serve --model "$dir/model" --port 0 --threads "$THREADS" --max-batch 64 2> "$dir/serve.err" &
pid=$!
for _ in $(seq 600); do grep -q "listening on" "$dir/serve.err" && break; sleep 0.1; done
url=$(grep -o 'http://[^ ]*' "$dir/serve.err")
for B in $BATCHES; do
  "$PYTHON" bench/serve_client.py "$url" "$dir/p$B.jsonl" $NEW 1 > /dev/null   # warm-up
  : > "$dir/g" ; : > "$dir/s"; : > "$dir/n"
  lb=$(bench_load)
  for _ in $(seq "$REPS"); do   # interleaved, so that load from elsewhere hits both alike
    "$RETORT" generate --model "$dir/model" --jsonl "$dir/p$B.jsonl" --max-batch $B --max-tokens $NEW --ignore-eos \
      --temperature 0 --threads "$THREADS" 2>&1 >/dev/null | grep -o '[0-9.]* tokens/s' | tail -1 | cut -d' ' -f1 >> "$dir/g"
    "$PYTHON" bench/serve_client.py "$url" "$dir/p$B.jsonl" $NEW 1 | awk '{ print $2 / $1 }' >> "$dir/s"
    "$PYTHON" bench/serve_client.py "$url" "$dir/p$B.jsonl" $NEW 0 | awk '{ print $2 / $1 }' >> "$dir/n"
  done
  la=$(bench_load)
  g=$(median < "$dir/g") sse=$(median < "$dir/s") js=$(median < "$dir/n")
  awk -v g="$g" -v s="$sse" -v n="$js" -v b=$B -v r="$REPS" -v lb="$lb" -v la="$la" 'BEGIN {
    printf "  batch %2d  in-process %8.1f tokens/s   serve SSE %8.1f tokens/s (ratio %4.2fx)   serve JSON %8.1f tokens/s (ratio %4.2fx)   (medians of %d, load %s -> %s)\n",
      b, g, s, s / g, n, n / g, r, lb, la }'
  bench_row "serve b$B SSE (http overhead)" tokens/s "$sse" "$g" "in-process generate; ratio serve/in-proc" "$THREADS" "$lb" "$la"
  bench_row "serve b$B JSON (http overhead)" tokens/s "$js" "$g" "in-process generate; ratio serve/in-proc" "$THREADS" "$lb" "$la"
done
kill -TERM "$pid"; wait "$pid"; pid=
done
