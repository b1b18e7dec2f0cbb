#!/usr/bin/env bash
# Deduplicating 1M samples fits in memory and runs in minutes: bench/dedup_1m.py generates
# them, runs `retort dedup` and `retort filter` (dedup only) over a run database, and prints
# time and peak RSS. Not part of `make test`; N=... for a smaller run, NO_DB=1 to skip the
# database path.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${PYTHON:=python3}"
dir=$(mktemp -d /tmp/retort-dedup1m.XXXXXX)
trap 'rm -rf "$dir"' EXIT
"$PYTHON" bench/dedup_1m.py "$PWD/retort" "$dir" "${N:-1000000}" ${NO_DB:+--no-db}
