#!/usr/bin/env bash
# Filter throughput, side by side on the same R1-style samples (GSM8K train and MATH-500
# solutions wrapped as <think>…</think> + a boxed answer): retort's per-sample filters
# (verify, format, language, readability, repetition, length, 10-gram decontam) against the
# same checks written in Python (bench/filter.py — the project's own rewrite, not an
# independent library: no Python package does this set of checks; its row is labelled so),
# one core each; then `retort filter` end
# to end on a run database (import + every filter incl. dedup, all cores). MB/s per core.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
: "${PYTHON:=python3}" "${BENCH_BIN_DIR:=build/cpu/bench}" "${RETORT_ASSETS:=$(cd .. && pwd)/shared/assets}"
REPS=${REPS:-3}
dir=$(mktemp -d /tmp/retort-bench.XXXXXX)
trap 'rm -rf "$dir"' EXIT
B="$RETORT_ASSETS/benchmarks"
for f in gsm8k_train gsm8k_test math500_test aime24_test; do
  [ -f "$B/$f.jsonl" ] || { bench_skip bench/filter "$B/$f.jsonl absent"; exit 0; }
done
"$PYTHON" - "$B" "$dir/samples.jsonl" "$dir/chat.jsonl" <<'PY'
import json, os, re, sys
src, out, chat = sys.argv[1:4]
rows = []
for l in open(os.path.join(src, "gsm8k_train.jsonl"), encoding="utf-8"):
    r = json.loads(l)
    sol, gold = r["answer"].rsplit("####", 1)
    rows.append((r["question"], sol.strip(), gold.strip()))
for l in open(os.path.join(src, "math500_test.jsonl"), encoding="utf-8"):
    r = json.loads(l)
    rows.append((r["problem"], r["solution"], r["answer"]))
with open(out, "w") as f, open(chat, "w") as g:
    for q, sol, gold in rows:
        text = "<think>\n" + sol + "\n</think>\n\nSo the final answer is $\\boxed{" + gold + "}$."
        f.write(json.dumps({"prompt": q, "text": text, "gold": gold}) + "\n")
        g.write(json.dumps({"messages": [{"role": "user", "content": q},
                                         {"role": "assistant", "content": text}], "gold": gold}) + "\n")
PY
lb=$(bench_load)
read -r n mb r_mbs r_sps < <(taskset -c 0 "$BENCH_BIN_DIR/filter" "$dir/samples.jsonl" "$B" "$REPS" 2>/dev/null)
read -r label p_mbs p_sps < <(taskset -c 0 "$PYTHON" bench/filter.py "$dir/samples.jsonl" "$B" "$REPS")
la=$(bench_load)
./retort import --db "$dir/run.db" --format chat --as-samples --answer-field gold "$dir/chat.jsonl" >/dev/null
threads=$(nproc)
line=$(./retort filter --db "$dir/run.db" --quiet --assets "$RETORT_ASSETS" | head -1)
e2e=$(printf '%s\n' "$line" | sed -n 's/.*(\([0-9.]*\) MB\/s.*/\1/p')
secs=$(printf '%s\n' "$line" | sed -n 's/.* in \([0-9.]*\) s .*/\1/p')
awk -v n="$n" -v mb="$mb" -v r="$r_mbs" -v rs="$r_sps" -v l="$label" -v p="$p_mbs" -v ps="$p_sps" \
    -v e="$e2e" -v s="$secs" -v t="$threads" 'BEGIN {
  printf "bench/filter     %d samples, %.1f MB, per-sample filters, 1 core (median of '"$REPS"')\n", n, mb
  printf "  retort             %9.2f MB/s  %10.0f samples/s\n", r, rs
  printf "  %-18s %9.2f MB/s  %10.0f samples/s\n", l, p, ps
  printf "  ratio              %9.1fx\n", r / p
  printf "  retort filter --db (every filter incl. dedup, %d threads, SQLite reads/writes): %.2f s, %.2f MB/s, %.2f MB/s per core\n", t, s, e, e / t
}'
bench_row "filter per-sample checks" MB/s "$r_mbs" "$p_mbs" "retort's own python rewrite" 1 "$lb" "$la"
