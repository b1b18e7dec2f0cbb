#!/usr/bin/env bash
# The recipe runner's overhead: configs/recipes/tiny-cpu.yaml end to end through
# `retort run` (state file, hashing, one child process per stage) against the same commands,
# taken from `retort run --dry-run`, run one after another by bash. Both start from an empty
# work_dir, in the same process tree, with the same `threads` (each stage's --threads), at each
# thread count of bench_threads (1, then 2). Wall seconds, median of REPS (3), bash and the
# runner alternating (which goes first alternates too); one row per thread count, whose ratio
# is bash time / runner time: 1 is no overhead, below 1 is what the runner costs (it runs the
# same commands, so above 1 is noise). Also prints the rerun of a finished recipe (every stage
# skipped). One untimed run of the recipe comes first (warm caches).
# Quick run: REPS=1 STUDENT_STEPS=25 (about a minute per thread count, and one for the warm-up;
# the teacher keeps its 150 steps: a shorter one writes no sample that passes the filters, and
# the student's stages then have no data).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
RETORT=${RETORT:-./retort}
REPS=${REPS:-3}
TS=${TEACHER_STEPS:-150} SS=${STUDENT_STEPS:-100}
dir=$(mktemp -d /tmp/retort-bench.XXXXXX)
trap 'rm -rf "$dir"' EXIT
now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# one untimed run first: without it the side that goes first pays for a cold page cache
# (binary, libraries, recipe data), which made bash ~12% slower than the runner at REPS=1
"$RETORT" run configs/recipes/tiny-cpu.yaml --set work_dir="$dir/warm" --set student_steps="$SS" > /dev/null 2>&1
rm -rf "$dir/warm"
for THREADS in $(bench_threads); do
  set_=(--set threads="$THREADS" --set teacher_steps="$TS" --set student_steps="$SS")
  : > "$dir/runner" ; : > "$dir/bash"; : > "$dir/rerun"
  lb=$(bench_load)
  for i in $(seq "$REPS"); do
    w=$dir/t$THREADS-$i
    # the peer: the resolved commands, fresh work_dir
    # (the checkpoints that ${checkpoint:...} binds when a stage starts are named here)
    "$RETORT" run configs/recipes/tiny-cpu.yaml --dry-run --set work_dir="$w/b" "${set_[@]}" |
      sed -e "s|\${checkpoint:teacher}|$w/b/teacher/step-$TS|" -e "s|\${checkpoint:student}|$w/b/student/step-$SS|" > "$dir/cmds.sh"
    mkdir -p "$w/b"
    # odd runs bash first, even runs the runner first: a cold cache or a burst of load from
    # elsewhere does not always fall on the same side
    for side in $( [ $((i % 2)) = 1 ] && echo "bash runner" || echo "runner bash"); do
      t0=$(now)
      if [ "$side" = bash ]; then bash -e "$dir/cmds.sh" > /dev/null 2>&1
      else "$RETORT" run configs/recipes/tiny-cpu.yaml --set work_dir="$w/r" "${set_[@]}" > /dev/null 2>&1; fi
      t1=$(now)
      echo "$t1 - $t0" | bc >> "$dir/$side"
    done
    [ -f "$w/r/report.html" ] && [ -f "$w/b/report.html" ] || { echo "bench/recipe    a run did not finish"; exit 1; }
    # a rerun of the finished recipe: every stage skipped
    t0=$(now)
    "$RETORT" run configs/recipes/tiny-cpu.yaml --set work_dir="$w/r" "${set_[@]}" > /dev/null
    t1=$(now)
    echo "$t1 - $t0" | bc >> "$dir/rerun"
    rm -rf "$w"
  done
  la=$(bench_load)
  r=$(median < "$dir/runner"); b=$(median < "$dir/bash"); z=$(median < "$dir/rerun")
  stages=$(wc -l < "$dir/cmds.sh")
  echo "bench/recipe   tiny-cpu.yaml, $stages stages, train $TS + $SS steps, $THREADS thread(s) (median of $REPS), load $lb -> $la"
  printf '  retort run          %8.2f s\n' "$r"
  printf '  bash, same commands %8.2f s\n' "$b"
  printf '  ratio runner / bash %8.3fx\n' "$(echo "$r / $b" | bc -l)"
  printf '  rerun, all skipped  %8.3f s\n' "$z"
  bench_row "recipe tiny-cpu, $stages stages ($TS+$SS steps)" s "$r" "$b" "bash, same cmds; ratio bash/runner, <1: runner cost" "$THREADS" "$lb" "$la"
done
