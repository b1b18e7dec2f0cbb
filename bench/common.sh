# bench/common.sh — sourced by the bench/*.sh scripts: thread counts, machine load, and the
# one summary row each measurement appends for bench/run.sh's table.
#
#   bench_threads          the thread counts to run, "1 2" unless BENCH_THREADS says otherwise
#                          (1 is the default row: on a shared machine a second thread measures
#                          the neighbours as much as the code)
#   bench_load             the 1-minute load average now (/proc/loadavg), "?" where unknown
#   bench_row NAME UNIT RETORT PEER PEER_LABEL THREADS LOAD_BEFORE LOAD_AFTER
#                          prints one line and appends it to $BENCH_SUMMARY (a TSV file that
#                          bench/run.sh creates; unset: printing only). UNIT ending in "/s" is
#                          a rate (ratio = retort / peer), anything else a time (ratio = peer /
#                          retort): a ratio above 1 always means retort is faster. The row is
#                          marked "!" when the load before or after exceeded THREADS: other
#                          work was competing for the cores, so the numbers are suspect.
#   bench_skip NAME WHY    prints "NAME   skipped: WHY" and appends a skipped row
bench_threads() { echo "${BENCH_THREADS:-1 2}"; }

bench_load() { if [ -r /proc/loadavg ]; then cut -d' ' -f1 /proc/loadavg; else echo '?'; fi; }

bench_row() {
  local name=$1 unit=$2 r=$3 p=$4 label=$5 th=$6 lb=$7 la=$8
  local line
  line=$(awk -v n="$name" -v u="$unit" -v r="$r" -v p="$p" -v l="$label" -v t="$th" -v lb="$lb" -v la="$la" 'BEGIN {
    rate = u ~ /\/s$/
    ratio = (r > 0 && p > 0) ? (rate ? r / p : p / r) : 0
    mark = ((lb != "?" && lb + 0 > t + 0) || (la != "?" && la + 0 > t + 0)) ? "!" : ""
    printf "%s\t%.4g %s\t%.4g %s (%s)\t%s\t%s\t%s->%s%s\n", n, r, u, p, u, l, (ratio > 0 ? sprintf("%.2fx", ratio) : "n/a"), t, lb, la, mark }')
  printf '%s\n' "$line" | awk -F'\t' '{ printf "  row: %-34s retort %-18s peer %-40s ratio %-7s threads %s  load %s\n", $1, $2, $3, $4, $5, $6 }'
  [ -n "${BENCH_SUMMARY:-}" ] && printf '%s\n' "$line" >> "$BENCH_SUMMARY"
  return 0
}

bench_skip() {
  echo "$1   skipped: $2"
  [ -n "${BENCH_SUMMARY:-}" ] && printf '%s\tskipped: %s\t\t\t\t\n' "$1" "$2" >> "$BENCH_SUMMARY"
  return 0
}
