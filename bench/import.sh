#!/usr/bin/env bash
# Import, side by side on the same file: `retort import --format gsm8k --as-samples --threads T`
# against a plain Python json + sqlite3 loader (bench/import.py, one thread), each into a fresh
# database. The file is GSM8K's training set repeated with numbered questions (so every row is
# new): COPIES=10 (default) is about 42 MB and 75k rows; COPIES=2 is a quick run (its ratio is
# lower: retort's fixed start-up, about 0.1 s of CPU in a CUDA build, most of it loading
# libcublasLt, weighs five times more). T is each of
# bench_threads (1, then 2). REPS runs (default 3), retort and Python alternating; prints the
# medians of wall time and CPU time (user + system: steadier on a shared machine) and both
# ratios. The summary rows are CPU time; wall time is mostly the disk's on this machine.
#
# The peer does less work than retort: it stores the sample text uncompressed (retort: one
# zstd frame per text, level 3, raw literals below 1 KiB: about a tenth of retort's CPU time
# here), and its database keeps SQLite's default 4 KiB pages (retort makes new files with
# 16 KiB pages, docs/database.md), and its tables have
# no source index, no (prompt, teacher, text hash) index, no json_valid() CHECKs, no foreign
# keys and no external id / prompt key columns. Both parse every line, hash the prompt, skip
# what is present and commit in transactions of 5000 rows in WAL mode (synchronous NORMAL).
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
median() { sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
m() { printf '%s\n' "$@" | median; }
for t in $(bench_threads); do
  lb=$(bench_load)
  rw=() rc=() pw=() pc=()
  for i in $(seq "$REPS"); do
    rm -f "$dir"/r.db* "$dir"/p.db*
    read -r w c rows bytes < <("$PYTHON" bench/import.py "$dir/r.db" "$dir/in.jsonl" \
                                 "$RETORT" import --db "$dir/r.db" --format gsm8k --as-samples --threads "$t" "$dir/in.jsonl")
    rw+=("$w") rc+=("$c")
    read -r w c rows bytes < <("$PYTHON" bench/import.py "$dir/p.db" "$dir/in.jsonl")
    pw+=("$w") pc+=("$c")
  done
  la=$(bench_load)
  db_r=$(stat -c %s "$dir/r.db") db_p=$(stat -c %s "$dir/p.db")
  awk -v rows="$rows" -v b="$bytes" -v rw="$(m "${rw[@]}")" -v rc="$(m "${rc[@]}")" -v pw="$(m "${pw[@]}")" \
      -v pc="$(m "${pc[@]}")" -v n="$REPS" -v t="$t" -v dr="$db_r" -v dp="$db_p" -v lb="$lb" -v la="$la" 'BEGIN {
    printf "bench/import   gsm8k x copies: %d rows, %.1f MB, --as-samples, retort %d thread%s (median of %d; load %s -> %s)\n", rows, b / 1e6, t, (t > 1 ? "s" : ""), n, lb, la
    printf "  retort import          %9.0f rows/s  %7.1f MB/s  wall %6.2f s  cpu %6.2f s  (zstd text; db %.1f MB)\n", rows / rw, b / 1e6 / rw, rw, rc, dr / 1e6
    printf "  python json + sqlite3  %9.0f rows/s  %7.1f MB/s  wall %6.2f s  cpu %6.2f s  (plain text; db %.1f MB)\n", rows / pw, b / 1e6 / pw, pw, pc, dp / 1e6
    printf "  ratio (python / retort time)  wall %.2fx   cpu %.2fx\n", pw / rw, pc / rc
  }'
  bench_row "import gsm8k x$COPIES --as-samples (cpu)" s "$(m "${rc[@]}")" "$(m "${pc[@]}")" "python json+sqlite3" "$t" "$lb" "$la"
done
