#!/usr/bin/env bash
# Chats to packed shards, side by side on the same chats: `retort pack` (chat JSONL) and
# `retort export --format shards` (the same chats imported into a database, as a snapshot)
# against Python with HF tokenizers + numpy (bench/pack.py: encode_batch, best-fit decreasing),
# Qwen template, sequences of SEQ (4096). The chats are GSM8K's training set with the worked
# solution as reasoning, repeated COPIES times (default 4). At each thread count T of
# bench_threads (1, then 2): retort --threads T, and tokenizers' Rayon pool of T threads
# (RAYON_NUM_THREADS; its batch encoding is the part it runs in parallel, the rest of the peer
# is one Python thread). Medians of REPS runs (default 3), the three alternating; prints
# tokens/s by the wall clock and CPU seconds; two rows per thread count (pack, export), wall.
# retort's time is the whole process; the peer's starts after its imports (bench/pack.py).
# Quick run: COPIES=1 REPS=1.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
: "${PYTHON:=python3}" "${RETORT:=./retort}" "${RETORT_ASSETS:=$(cd .. && pwd)/shared/assets}"
REPS=${REPS:-3}
COPIES=${COPIES:-4}
SEQ=${SEQ:-4096}
src="$RETORT_ASSETS/benchmarks/gsm8k_train.jsonl"
tok="$RETORT_ASSETS/tokenizers/qwen3/tokenizer.json"
[ -f "$src" ] && [ -f "$tok" ] || { bench_skip bench/pack "$src or $tok absent"; exit 0; }
dir=$(mktemp -d /tmp/retort-bench-pack.XXXXXX)
trap 'rm -rf "$dir"' EXIT
"$PYTHON" - "$src" "$dir/chats.jsonl" "$COPIES" <<'PY'
import json, sys
src, out, copies = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = [json.loads(l) for l in open(src, encoding="utf-8")]
with open(out, "w", encoding="utf-8") as f:
    for c in range(copies):
        for r in rows:
            work, final = r["answer"].rsplit("####", 1)
            f.write(json.dumps({"messages": [{"role": "user", "content": f"({c}) {r['question']}"},
                                             {"role": "assistant", "content": f"The answer is {final.strip()}.",
                                              "reasoning_content": work.strip()}]}, ensure_ascii=False) + "\n")
PY
"$RETORT" import --db "$dir/run.db" --format chat --as-samples "$dir/chats.jsonl" >/dev/null
"$RETORT" db snapshot "$dir/run.db" all >/dev/null
timed() { "$PYTHON" - "$@" <<'PY'
import resource, subprocess, sys, time
b = resource.getrusage(resource.RUSAGE_CHILDREN)
t0 = time.perf_counter()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
w = time.perf_counter() - t0
a = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"{w:.4f} {a.ru_utime - b.ru_utime + a.ru_stime - b.ru_stime:.4f}")
PY
}
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
"$PYTHON" -c 'import numpy, tokenizers' # warm the page cache for the peer's imports (retort's are warm from the import above)
for T in $(bench_threads); do
  lb=$(bench_load)
  kw=() kc=() ew=() ec=() pw=() pc=()
  for _ in $(seq "$REPS"); do
    read -r w c < <(timed "$RETORT" pack --tokenizer "$tok" --template qwen --jsonl "$dir/chats.jsonl" --seq "$SEQ" \
                      --threads "$T" --out "$dir/k")
    kw+=("$w") kc+=("$c")
    read -r w c < <(timed "$RETORT" export --db "$dir/run.db" --snapshot all --format shards --tokenizer "$tok" \
                      --template qwen --seq "$SEQ" --threads "$T" --out "$dir/e")
    ew+=("$w") ec+=("$c")
    read -r w c tokens < <(RAYON_NUM_THREADS=$T RAYON_RS_NUM_THREADS=$T "$PYTHON" bench/pack.py "$tok" "$dir/chats.jsonl" "$SEQ" "$dir/p")
    pw+=("$w") pc+=("$c")
  done
  la=$(bench_load)
  rtok=$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["stats"]["tokens"])' "$dir/k/index.json")
  [ "$rtok" = "$tokens" ] || echo "  note: token counts differ: retort $rtok, python $tokens"
  kwm=$(median "${kw[@]}") ewm=$(median "${ew[@]}") pwm=$(median "${pw[@]}")
  awk -v t="$tokens" -v n="$(wc -l < "$dir/chats.jsonl")" -v kw="$kwm" -v kc="$(median "${kc[@]}")" \
      -v ew="$ewm" -v ec="$(median "${ec[@]}")" -v pw="$pwm" -v pc="$(median "${pc[@]}")" \
      -v r="$REPS" -v th="$T" -v s="$SEQ" -v lb="$lb" -v la="$la" 'BEGIN {
    printf "bench/pack   %d chats, %.2f M tokens, qwen template, seq %d, %d thread(s) (median of %d), load %s -> %s\n", n, t / 1e6, s, th, r, lb, la
    printf "  retort pack (jsonl)          %6.2f M tokens/s  cpu %6.2f s\n", t / kw / 1e6, kc
    printf "  retort export --format shards %5.2f M tokens/s  cpu %6.2f s\n", t / ew / 1e6, ec
    printf "  python tokenizers + numpy    %6.2f M tokens/s  cpu %6.2f s\n", t / pw / 1e6, pc
    printf "  ratio pack / python    wall %.2fx  cpu %.2fx\n", pw / kw, pc / kc
    printf "  ratio export / python  wall %.2fx  cpu %.2fx\n", pw / ew, pc / ec
  }'
  rate() { awk -v t="$tokens" -v w="$1" 'BEGIN { print t / w / 1e6 }'; }
  bench_row "pack chats->shards (jsonl)" "M tok/s" "$(rate "$kwm")" "$(rate "$pwm")" "hf tokenizers+numpy" "$T" "$lb" "$la"
  bench_row "export --format shards (db)" "M tok/s" "$(rate "$ewm")" "$(rate "$pwm")" "hf tokenizers+numpy, from jsonl" "$T" "$lb" "$la"
done
