#!/usr/bin/env bash
# Deduplication at scale (bench/dedup_1m.py: N synthetic samples, default 200,000 here —
# N=1000000 for the million-sample memory figure — with planted near and exact duplicates;
# `retort dedup` and, unless NO_DB=1, import + filter through a run database: wall time, peak
# RSS, duplicates found against planted), then the thread scaling of `retort dedup` on the same
# documents: --threads 2 against --threads 1, interleaved, median of REPS (goal ≥ 1.7x; on a
# shared 2-core machine the load line says whether the second core was free). Each run logs its
# phases (wall, CPU, busiest thread's CPU); the second row estimates the scaling on idle cores
# from CPU times alone (1-thread CPU / Σ busiest thread at 2 threads), which holds under load.
# Quick run: N=20000 NO_DB=1 REPS=3 (well under 2 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
: "${PYTHON:=python3}" "${REPS:=3}"
dir=$(mktemp -d /tmp/retort-dedup1m.XXXXXX)
trap 'rm -rf "$dir"' EXIT
"$PYTHON" bench/dedup_1m.py "$PWD/retort" "$dir" "${N:-200000}" ${NO_DB:+--no-db}
lb=$(bench_load)
# each run at log level debug: retort logs every phase's wall, process CPU and busiest-thread
# CPU (core/phase.h); /usr/bin/time adds the process's wall and user+sys
t1=() t2=()
for i in $(seq "$REPS"); do
  for th in 1 2; do
    /usr/bin/time -f '%e %U %S' -o "$dir/time.$th.$i" \
      ./retort --log-level debug dedup --threads "$th" < "$dir/docs.jsonl" > /dev/null 2> "$dir/phases.$th.$i"
    d=$(awk '{ print $1 }' "$dir/time.$th.$i")
    if [ "$th" = 1 ]; then t1+=("$d"); else t2+=("$d"); fi
  done
done
la=$(bench_load)
med() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
m1=$(med "${t1[@]}") m2=$(med "${t2[@]}")
echo "bench/dedup_1m   retort dedup scaling on $(wc -l < "$dir/docs.jsonl") documents (median of $REPS), load $lb -> $la"
# per phase (median over the repetitions): 1 thread wall/cpu, 2 threads wall/cpu/busiest; the
# estimate for idle cores is cpu(1 thread) / Σ busiest(2 threads), and Amdahl's serial fraction
# s follows from speed-up S = 1 / (s + (1 - s) / 2): s = 2 / S - 1
"$PYTHON" - "$dir" "$REPS" > "$dir/est" <<'PY'
import re, statistics, sys
d, reps = sys.argv[1], int(sys.argv[2])
pat = re.compile(r"debug: (\w+): phase (\S+)\s+wall\s+([\d.-]+) s\s+cpu\s+([\d.-]+) s\s+busiest\s+([\d.-]+) s")
ph, order = {}, []
for th in (1, 2):
    for i in range(1, reps + 1):
        for m in pat.finditer(open(f"{d}/phases.{th}.{i}").read()):
            key = f"{m[1]}/{m[2]}"
            if key not in order:
                order.append(key)
            ph.setdefault((th, key), []).append(tuple(float(m[k]) for k in (3, 4, 5)))
        w, u, s = map(float, open(f"{d}/time.{th}.{i}").read().split()[-3:])
        ph.setdefault((th, "process (time)"), []).append((w, u + s, -1.0))
order.append("process (time)")
med = lambda th, k, f: statistics.median(v[f] for v in ph.get((th, k), [(0, 0, 0)]))
print("  phase                   1 thread: wall      cpu    2 threads: wall      cpu  busiest")
for k in order:
    b = med(2, k, 2)
    print(f"  {k:<22} {med(1, k, 0):15.3f} {med(1, k, 1):8.3f} {med(2, k, 0):16.3f} {med(2, k, 1):8.3f} "
          + (f"{b:8.3f}" if b >= 0 else "       -"))
phases = order[:-1]
c1 = sum(med(1, k, 1) for k in phases)
b2 = sum(med(2, k, 2) for k in phases)
# the process's CPU outside the phases (start-up, exit) counted as serial
p1 = med(1, "process (time)", 1)
rest = max(p1 - c1, 0)
S = c1 / b2 if b2 > 0 else 0
Sp = p1 / (b2 + rest) if b2 > 0 else 0
print(f"  phases: cpu at 1 thread {c1:.3f} s, busiest thread at 2 threads {b2:.3f} s: estimated scaling on idle "
      f"cores {S:.2f}x (serial fraction s = 2/S - 1 = {2 / S - 1 if S else 1:.3f})")
print(f"  whole process, its {rest:.3f} s CPU outside the phases counted as serial: {Sp:.2f}x "
      f"(s = {2 / Sp - 1 if Sp else 1:.3f})")
print(f"EST {b2 + rest:.4f} {p1:.4f}")
PY
grep -v '^EST ' "$dir/est"
awk -v a="$m1" -v b="$m2" 'BEGIN { printf "  --threads 1  %7.2f s wall\n  --threads 2  %7.2f s wall\n  scaling      %7.2fx (wall; only meaningful when the load stayed below 1)\n", a, b, a / b }'
bench_row "dedup scaling 2 vs 1 thread" s "$m2" "$m1" "retort --threads 1" 2 "$lb" "$la"
read -r _ b2 c1 < <(grep '^EST ' "$dir/est")
bench_row "dedup scaling est. (thread CPU)" s "$b2" "$c1" "cpu at 1 thread / busiest thread at 2" 2 "$lb" "$la"
