#!/usr/bin/env bash
# Runs every test and closes with one line "tests: N passed, N failed, N skipped".
#   1. tests/ref/gen_*.py write expected values from the reference implementations
#      (torch, transformers, …) into $REF_DIR;
#   2. the C unit tests (Criterion) in $TEST_BIN_DIR, which read $REF_DIR;
#   3. the pytest suites in tests/ref/ (round trips and CLI tests against ./retort).
# Environment: RETORT (binary), TEST_BIN_DIR, PYTHON (the reference venv's python).
set -u
cd "$(dirname "$0")/.."
: "${RETORT:=$PWD/retort}" "${TEST_BIN_DIR:=build/cpu/tests}" "${TOOLS_DIR:=$PWD/build/cpu/tools}" "${PYTHON:=python3}"
export TOOLS_DIR
export RETORT
export RETORT_ASSETS="${RETORT_ASSETS:-$(cd .. && pwd)/shared/assets}"
REF_DIR=$(mktemp -d /tmp/retort-ref.XXXXXX)
export REF_DIR
trap 'rm -rf "$REF_DIR"' EXIT

pass=0 fail=0 skip=0
failed=()

echo "== reference data (tests/ref/gen_*.py)"
for g in tests/ref/gen_*.py; do
  [ -e "$g" ] || continue
  if "$PYTHON" "$g" "$REF_DIR"; then
    echo "   $(basename "$g"): ok"
  else
    echo "   $(basename "$g"): FAILED"
    fail=$((fail + 1)); failed+=("$g")
  fi
done

echo "== C unit tests"
for t in "$TEST_BIN_DIR"/test_*; do
  [ -x "$t" ] || continue
  tap=$(mktemp)
  "$t" --tap="$tap" -j2 >/dev/null 2>"$tap.err"
  rc=$?
  p=$(grep -c '^ok ' "$tap" || true)
  s=$(grep -c '^ok .*# SKIP' "$tap" || true)
  f=$(grep -c '^not ok ' "$tap" || true)
  p=$((p - s))
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi   # crashed before reporting
  printf '   %-28s %3d passed, %d failed, %d skipped\n' "$(basename "$t")" "$p" "$f" "$s"
  grep '# SKIP' "$tap" | sed 's/^ok - /      skip /'
  if [ "$f" -gt 0 ]; then cat "$tap.err"; failed+=("$t"); fi
  pass=$((pass + p)); fail=$((fail + f)); skip=$((skip + s))
  rm -f "$tap" "$tap.err"
done

echo "== reference and CLI tests (pytest tests/ref)"
log=$(mktemp)
"$PYTHON" -m pytest -q -rs -p no:cacheprovider tests/ref 2>&1 | tee "$log"
summary=$(tail -n 1 "$log")
rm -f "$log"
for kind in passed failed skipped error errors; do
  n=$(printf '%s\n' "$summary" | grep -oE "[0-9]+ $kind" | grep -oE '^[0-9]+' || true)
  n=${n:-0}
  case $kind in
    passed) pass=$((pass + n)) ;;
    failed|error|errors) fail=$((fail + n)); [ "$n" -gt 0 ] && failed+=("pytest") ;;
    skipped) skip=$((skip + n)) ;;
  esac
done

echo
[ ${#failed[@]} -eq 0 ] || echo "failures in: ${failed[*]}"
echo "tests: $pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ] && [ "$pass" -gt 0 ]
