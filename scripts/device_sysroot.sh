#!/usr/bin/env bash
# scripts/device_sysroot.sh — run THERE (the GPU machine): unpacks the packages that
# scripts/device_debs.sh downloaded (.device/debs, carried with the call) into build/sysroot,
# for `make CUDA=1 MPI=0 SYSROOT=build/sysroot`. Fails, with one line, when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
SR=${1:-build/sysroot}
ls .device/debs/*.deb >/dev/null 2>&1 || {
  echo "device_sysroot: no packages in .device/debs (run scripts/device_debs.sh here and carry .device)"; exit 1; }
rm -rf "$SR" && mkdir -p "$SR"
for f in .device/debs/*.deb; do dpkg -x "$f" "$SR"; done
echo "device_sysroot: $(ls .device/debs/*.deb | wc -l) packages unpacked into $SR"
