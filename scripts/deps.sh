#!/usr/bin/env bash
# Installs what memgate needs on a Debian 12 machine, and nothing that is already there.
#   scripts/deps.sh demo   packages the demo needs (build tools)
#   scripts/deps.sh test   everything the test suite needs (minisign, pyseto, redis, rdma-core
#                          headers for the `verbs` feature, systemd-analyze, QEMU for the lab)
# Safe to run again: it only installs what is missing. Needs root (or sudo) for apt.
set -euo pipefail
what=${1:-test}

need_apt=()
want() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$1"); }

for p in build-essential pkg-config git ca-certificates; do want "$p"; done
if [ "$what" = test ]; then
    for p in minisign python3 python3-pip redis-server redis-tools strace systemd \
             libibverbs-dev librdmacm-dev libclang1-14 libclang-common-14-dev \
             qemu-system-x86 cpio busybox-static iproute2 rdma-core ibverbs-utils; do
        want "$p"
    done
fi

if [ ${#need_apt[@]} -gt 0 ]; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
    echo "deps: installing ${need_apt[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [ "$what" = test ] && ! python3 -c 'import pyseto' 2>/dev/null; then
    echo "deps: installing pyseto (PyPI) for the token interoperability tests" >&2
    python3 -m pip install -q pyseto 2>/dev/null || python3 -m pip install -q --break-system-packages pyseto
fi

if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    else
        echo "deps: installing the stable Rust toolchain with rustup" >&2
        curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy -c rustfmt >&2
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
fi
if [ "$what" = test ] && ! cargo nextest --version >/dev/null 2>&1; then
    echo "deps: installing cargo-nextest" >&2
    cargo install --locked -q cargo-nextest
fi
if [ "$what" = test ] && ! cargo fuzz --version >/dev/null 2>&1; then
    echo "deps: installing cargo-fuzz (bounded fuzzing runs in the suite)" >&2
    cargo install --locked -q cargo-fuzz
fi
