#!/usr/bin/env bash
# Sets up a fresh Debian machine for retort: the -dev packages the code links against, the
# test and fuzz tools, and a Python virtual environment with the reference implementations
# (tests/requirements.txt). Idempotent and quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(
  build-essential pkg-config clang
  libsqlite3-dev sqlite3 libzstd-dev libjansson-dev libpcre2-dev libutf8proc-dev
  libopenblas-dev libopenmpi-dev openmpi-bin libmicrohttpd-dev libcurl4-openssl-dev
  libxxhash-dev libcriterion-dev python3 python3-venv
  libdnnl2
  chromium
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

VENV="${VENV:-$HOME/.cache/retort/venv}"
REQ=tests/requirements.txt
stamp="$VENV/.retort-$(sha256sum "$REQ" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "deps: building the Python reference environment in $VENV (torch, transformers, tokenizers, …)"
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --no-cache-dir --upgrade pip
  "$VENV/bin/python" -m pip install -q --no-cache-dir -r "$REQ"
  touch "$stamp"
fi

# Benchmark-only peers (make bench sets BENCH_DEPS=1).
if [ "${BENCH_DEPS:-0}" = 1 ]; then
  BREQ=bench/requirements.txt
  bstamp="$VENV/.retort-bench-$(sha256sum "$BREQ" | cut -c1-16)"
  if [ ! -f "$bstamp" ]; then
    echo "deps: adding the benchmark peers to $VENV (datatrove, …)"
    "$VENV/bin/python" -m pip install -q --no-cache-dir -r "$BREQ" -c "$REQ"   # never moves a test pin
    touch "$bstamp"
  fi
fi
