#!/usr/bin/env bash
# Runs every benchmark script bench/*.sh (each prints retort against a peer from the same run).
set -u
cd "$(dirname "$0")/.."
status=0
for b in bench/*.sh; do
  [ "$(basename "$b")" = run.sh ] && continue
  echo "== $b"
  bash "$b" || { echo "   $b FAILED"; status=1; }
done
exit $status
