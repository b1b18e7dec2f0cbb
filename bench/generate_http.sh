#!/usr/bin/env bash
# `retort generate --db` throughput against the fake OpenAI-compatible server (fixed latency
# LATENCY, 0.05 s, per response) at each concurrency of LEVELS (1,8,64), beside a Python
# stdlib-threads client doing the same job on the same server in the same run, and the ideal
# (concurrency / latency); median of REPS (3), alternating, fresh databases (bench/generate_http.py).
# Threads: retort's client is one event-loop thread, the Python peer one thread per connection
# under the GIL; both clients are pinned to one core and the fake server (Python) to another
# where the machine has two, so each row says 1 thread (one core) whatever the concurrency.
# Two rows per level: samples/s by the wall clock, and the client's CPU milliseconds per sample
# (retort's counts its process start-up; the peer runs inside the already started harness).
# Quick run: LEVELS=1,8 REPS=1.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
: "${PYTHON:=python3}" "${RETORT:=./retort}"
rows=$(mktemp /tmp/retort-bench-rows.XXXXXX)
trap 'rm -f "$rows"' EXIT
"$PYTHON" bench/generate_http.py "$RETORT" --latency "${LATENCY:-0.05}" --levels "${LEVELS:-1,8,64}" --reps "${REPS:-3}" \
  --rows "$rows"
while IFS=$'\t' read -r name unit r p label th lb la; do
  bench_row "$name" "$unit" "$r" "$p" "$label" "$th" "$lb" "$la"
done < "$rows"
