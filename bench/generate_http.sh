#!/usr/bin/env bash
# `retort generate --db` throughput against the fake OpenAI-compatible server (fixed latency
# per response) at concurrency 1, 8 and 64, beside a Python stdlib-threads client doing the
# same job on the same server in the same run, and the ideal (concurrency / latency).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${PYTHON:=python3}" "${RETORT:=./retort}"
"$PYTHON" bench/generate_http.py "$RETORT" --latency "${LATENCY:-0.05}" --levels "${LEVELS:-1,8,64}" --reps "${REPS:-3}"
