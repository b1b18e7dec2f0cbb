#!/usr/bin/env bash
# Import, side by side on the same file: `retort import --format gsm8k --as-samples` against
# a plain Python json + sqlite3 loader (bench/import.py), each into a fresh database. The
# file is GSM8K's training set repeated with numbered questions (so every row is new), about
# 40 MB. Medians of REPS runs (default 3); prints rows/s, MB/s and the ratio retort / Python.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
: "${PYTHON:=python3}" "${RETORT:=./retort}" "${RETORT_ASSETS:=$(cd .. && pwd)/shared/assets}"
REPS=${REPS:-3}
COPIES=${COPIES:-10}
src="$RETORT_ASSETS/benchmarks/gsm8k_train.jsonl"
[ -f "$src" ] || { bench_skip bench/import "$src absent"; exit 0; }
dir=$(mktemp -d /tmp/retort-bench-import.XXXXXX)
trap 'rm -rf "$dir"' EXIT
"$PYTHON" - "$src" "$dir/in.jsonl" "$COPIES" <<'PY'
import json, sys
src, out, copies = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = [json.loads(l) for l in open(src, encoding="utf-8")]
with open(out, "w", encoding="utf-8") as f:
    for c in range(copies):
        for r in rows:
            f.write(json.dumps({"question": f"({c}) {r['question']}", "answer": r["answer"]}, ensure_ascii=False) + "\n")
PY
lb=$(bench_load)
median() { sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
rw=() rc=() pw=() pc=()
for i in $(seq "$REPS"); do
  rm -f "$dir"/r.db* "$dir"/p.db*
  read -r w c rows bytes < <("$PYTHON" bench/import.py "$dir/r.db" "$dir/in.jsonl" \
                               "$RETORT" import --db "$dir/r.db" --format gsm8k --as-samples "$dir/in.jsonl")
  rw+=("$w") rc+=("$c")
  read -r w c rows bytes < <("$PYTHON" bench/import.py "$dir/p.db" "$dir/in.jsonl")
  pw+=("$w") pc+=("$c")
done
la=$(bench_load)
m() { printf '%s\n' "$@" | median; }
db_r=$(stat -c %s "$dir/r.db") db_p=$(stat -c %s "$dir/p.db")
awk -v rows="$rows" -v b="$bytes" -v rw="$(m "${rw[@]}")" -v rc="$(m "${rc[@]}")" -v pw="$(m "${pw[@]}")" \
    -v pc="$(m "${pc[@]}")" -v n="$REPS" -v t="$(nproc)" -v dr="$db_r" -v dp="$db_p" 'BEGIN {
  printf "bench/import   gsm8k x copies: %d rows, %.1f MB, --as-samples (median of %d, %d CPUs)\n", rows, b / 1e6, n, t
  printf "  retort import          %9.0f rows/s  %7.1f MB/s  cpu %6.2f s  (zstd text; db %.1f MB)\n", rows / rw, b / 1e6 / rw, rc, dr / 1e6
  printf "  python json + sqlite3  %9.0f rows/s  %7.1f MB/s  cpu %6.2f s  (plain text; db %.1f MB)\n", rows / pw, b / 1e6 / pw, pc, dp / 1e6
  printf "  ratio (retort / python)  wall %.2fx   cpu %.2fx\n", pw / rw, pc / rc
}'
bench_row "import gsm8k x$COPIES --as-samples" s "$(m "${rw[@]}")" "$(m "${pw[@]}")" "python json+sqlite3" 1 "$lb" "$la"
