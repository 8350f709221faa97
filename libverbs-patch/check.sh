#!/usr/bin/env bash
# Applies and builds the rdma-core series in this directory (ibv_reg_mr_pidfd).
#
#   libverbs-patch/check.sh [build]  fetch rdma-core v55.0 (vendored by the crates.io crate
#                                    ibverbs-sys 0.3.2+55.0, through cargo), git am the series,
#                                    build libibverbs, the rxe provider and libmlx5 with the
#                                    Debian layout (/usr, /etc); prints the build directory
#                                    (include/, lib/). Cached by the series hash.
#
# Env: LAB_WORK (default /var/tmp/memgate-lab). Builds run under nice -n 10.
# Host packages: cmake ninja-build pkg-config libnl-3-dev libnl-route-3-dev libudev-dev.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${LAB_WORK:-/var/tmp/memgate-lab}
CRATE=ibverbs-sys
CRATE_VERSION=0.3.2+55.0
mkdir -p "$WORK"

log() { echo "[libverbs-patch $(date -u +%T)] $*" >&2; }
series() { ls "$HERE"/[0-9][0-9][0-9][0-9]-*.patch; }
series_hash() { cat $(series) "$HERE/check.sh" | sha256sum | cut -c1-16; }

host_deps() {
    local need=()
    command -v cmake >/dev/null || need+=(cmake)
    command -v ninja >/dev/null || need+=(ninja-build)
    command -v pkg-config >/dev/null || need+=(pkg-config)
    [ -e /usr/include/libnl3/netlink/netlink.h ] || need+=(libnl-3-dev)
    [ -e /usr/include/libnl3/netlink/route/link.h ] || need+=(libnl-route-3-dev)
    [ -e /usr/include/libudev.h ] || need+=(libudev-dev)
    [ ${#need[@]} -eq 0 ] && return 0
    log "apt-get install ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}

# rdma-core v55.0 as vendored by the crate; cargo fetches and unpacks it into its registry.
crate_source() {
    local proj=$WORK/crate-fetch
    mkdir -p "$proj/src"
    printf '[package]\nname = "rdma-core-fetch"\nversion = "0.0.0"\nedition = "2021"\n\n[dependencies]\n%s = "=%s"\n' \
        "$CRATE" "${CRATE_VERSION%%+*}" > "$proj/Cargo.toml"
    echo 'fn main() {}' > "$proj/src/main.rs"
    (cd "$proj" && cargo fetch -q) >&2
    local home=${CARGO_HOME:-$HOME/.cargo} d
    for d in "$home"/registry/src/*/"$CRATE-$CRATE_VERSION"/vendor/rdma-core; do
        [ -f "$d/CMakeLists.txt" ] && { echo "$d"; return 0; }
    done
    log "rdma-core not found in the $CRATE $CRATE_VERSION crate"; return 1
}

build() {
    local h out; h=$(series_hash); out=$WORK/rdma-core-$h
    if [ -f "$out/build/.done" ]; then log "cached $out/build"; echo "$out/build"; return 0; fi
    host_deps
    local src; src=$(crate_source)
    rm -rf "$out"; mkdir -p "$out"
    cp -a "$src/." "$out/"
    git -C "$out" init -q
    git -C "$out" add -A
    git -C "$out" -c user.name=pristine -c user.email=pristine@localhost commit -qm "rdma-core v55.0"
    git -C "$out" -c user.name=check -c user.email=check@localhost am -q $(series)
    echo "@@CHK rdma_core_git_am PASS $(series | wc -l) patches onto rdma-core v55.0" >&2
    mkdir -p "$out/build"
    local t0=$SECONDS
    (
        cd "$out/build"
        nice -n 10 cmake -GNinja -DNO_MAN_PAGES=1 -DNO_PYVERBS=1 -DENABLE_STATIC=0 \
            -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX=/usr \
            -DCMAKE_INSTALL_SYSCONFDIR=/etc -DCMAKE_INSTALL_LIBDIR=lib/x86_64-linux-gnu \
            -DCMAKE_INSTALL_RUNDIR=/run .. >"$out/cmake.log" 2>&1
        nice -n 10 ninja -j2 lib/libibverbs.so.1 lib/librxe-rdmav35.so lib/libmlx5.so.1 \
            >"$out/ninja.log" 2>&1
    ) || { tail -30 "$out/cmake.log" "$out/ninja.log" >&2; return 1; }
    local warn; warn=$(grep -c 'warning:' "$out/ninja.log" || true)
    echo "@@CHK rdma_core_build PASS libibverbs + rxe + mlx5, warnings=$warn, $((SECONDS - t0))s" >&2
    touch "$out/build/.done"
    echo "$out/build"
}

case ${1:-build} in
    build) build ;;
    *) echo "usage: $0 [build]" >&2; exit 2 ;;
esac
