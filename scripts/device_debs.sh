#!/usr/bin/env bash
# scripts/device_debs.sh — run HERE (a Debian machine with apt): downloads the Debian packages
# whose headers and libraries the full retort build needs, except Open MPI and the CUDA
# toolkit, into .device/debs/ (git-ignored). The GPU machine of the device tool has the CUDA
# toolkit but no -dev packages and reaches no registry: carry .device with the call, and there
# scripts/device_sysroot.sh unpacks them into build/sysroot for `make CUDA=1 MPI=0
# SYSROOT=build/sysroot` (about 24 MB of packages; the binary finds the libraries by its rpath).
set -euo pipefail
cd "$(dirname "$0")/.."
PKGS=(
  libjansson4 libjansson-dev libzstd-dev libsqlite3-0 libsqlite3-dev
  libpcre2-dev libpcre2-16-0 libpcre2-32-0 libpcre2-posix3 libutf8proc2 libutf8proc-dev
  libopenblas0-pthread libopenblas-pthread-dev libgfortran5 libquadmath0
  libmicrohttpd12 libmicrohttpd-dev libxxhash0 libxxhash-dev
  libcurl4 libcurl4-openssl-dev libbrotli1 libcom-err2 libgssapi-krb5-2 libk5crypto3 libkeyutils1 libkrb5-3
  libkrb5support0 libldap-2.5-0 libnghttp2-14 libpsl5 librtmp1 libsasl2-2 libsasl2-modules-db libssh2-1 libssl3
  libidn2-0 libunistring2 libgnutls30 libhogweed6 libnettle8 libp11-kit0 libtasn1-6
)
mkdir -p .device/debs
grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude
cd .device/debs
rm -f ./*.deb
apt-get download "${PKGS[@]}" >/dev/null
echo "device_debs: $(ls ./*.deb | wc -l) packages, $(du -sh . | cut -f1) in .device/debs"
