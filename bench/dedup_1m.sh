#!/usr/bin/env bash
# Deduplication at scale (bench/dedup_1m.py: N synthetic samples, default 200,000 here —
# N=1000000 for the million-sample memory figure — with planted near and exact duplicates;
# `retort dedup` and, unless NO_DB=1, import + filter through a run database: wall time, peak
# RSS, duplicates found against planted), then the thread scaling of `retort dedup` on the same
# documents: --threads 2 against --threads 1, interleaved, median of REPS (goal ≥ 1.7x; on a
# shared 2-core machine the load line says whether the second core was free).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
: "${PYTHON:=python3}" "${REPS:=3}"
dir=$(mktemp -d /tmp/retort-dedup1m.XXXXXX)
trap 'rm -rf "$dir"' EXIT
"$PYTHON" bench/dedup_1m.py "$PWD/retort" "$dir" "${N:-200000}" ${NO_DB:+--no-db}
lb=$(bench_load)
t1=() t2=()
for i in $(seq "$REPS"); do
  for th in 1 2; do
    s=$(date +%s.%N)
    ./retort dedup --threads "$th" < "$dir/docs.jsonl" > /dev/null
    e=$(date +%s.%N)
    d=$(awk -v s="$s" -v e="$e" 'BEGIN { print e - s }')
    if [ "$th" = 1 ]; then t1+=("$d"); else t2+=("$d"); fi
  done
done
la=$(bench_load)
med() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
m1=$(med "${t1[@]}") m2=$(med "${t2[@]}")
echo "bench/dedup_1m   retort dedup scaling on $(wc -l < "$dir/docs.jsonl") documents (median of $REPS), load $lb -> $la"
awk -v a="$m1" -v b="$m2" 'BEGIN { printf "  --threads 1  %7.2f s\n  --threads 2  %7.2f s\n  scaling      %7.2fx\n", a, b, a / b }'
bench_row "dedup scaling 2 vs 1 thread" s "$m2" "$m1" "retort --threads 1" 2 "$lb" "$la"
