#!/usr/bin/env bash
# The recipe runner's overhead: configs/recipes/tiny-cpu.yaml end to end through
# `retort run` (state file, hashing, one child process per stage) against the same twelve
# commands, taken from `retort run --dry-run`, run one after another by bash. Both start
# from an empty work_dir, in the same process tree, at the same thread count; the ratio
# (runner time / bash time) is what the runner costs. Wall seconds, median of REPS.
set -euo pipefail
cd "$(dirname "$0")/.."
RETORT=${RETORT:-./retort}
REPS=${REPS:-3}
THREADS=${THREADS:-2}
dir=$(mktemp -d /tmp/retort-bench.XXXXXX)
trap 'rm -rf "$dir"' EXIT
now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
: > "$dir/runner" ; : > "$dir/bash"
for i in $(seq "$REPS"); do
  # the peer: the resolved commands, fresh work_dir
  # (the checkpoints that ${checkpoint:...} binds when a stage starts are named here)
  "$RETORT" run configs/recipes/tiny-cpu.yaml --dry-run --set work_dir="$dir/b$i" --set threads="$THREADS" |
    sed -e "s|\${checkpoint:teacher}|$dir/b$i/teacher/step-150|" -e "s|\${checkpoint:student}|$dir/b$i/student/step-100|" > "$dir/cmds.sh"
  mkdir -p "$dir/b$i"
  t0=$(now); bash -e "$dir/cmds.sh" > /dev/null 2>&1; t1=$(now)
  echo "$t1 - $t0" | bc >> "$dir/bash"
  t0=$(now)
  "$RETORT" run configs/recipes/tiny-cpu.yaml --set work_dir="$dir/r$i" --set threads="$THREADS" > /dev/null 2>&1
  t1=$(now)
  echo "$t1 - $t0" | bc >> "$dir/runner"
  [ -f "$dir/r$i/report.html" ] && [ -f "$dir/b$i/report.html" ] || { echo "bench/recipe    a run did not finish"; exit 1; }
  # a rerun of the finished recipe: every stage skipped
  t0=$(now)
  "$RETORT" run configs/recipes/tiny-cpu.yaml --set work_dir="$dir/r$i" --set threads="$THREADS" > /dev/null
  t1=$(now)
  echo "$t1 - $t0" | bc >> "$dir/rerun"
done
r=$(median < "$dir/runner"); b=$(median < "$dir/bash"); z=$(median < "$dir/rerun")
echo "bench/recipe   tiny-cpu.yaml, 12 stages, $THREADS threads (median of $REPS)"
printf '  retort run          %8.2f s\n' "$r"
printf '  bash, same commands %8.2f s\n' "$b"
printf '  ratio               %8.3fx\n' "$(echo "$r / $b" | bc -l)"
printf '  rerun, all skipped  %8.3f s\n' "$z"
