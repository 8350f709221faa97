#!/usr/bin/env bash
# Kernel lab: boots a Debian 6.1 kernel under QEMU (TCG), brings up soft-RoCE (rdma_rxe) in the
# guest and runs C checks against the real kernel RDMA stack and real rdma-core.
#
#   tests/lab/run.sh tier1   stock Debian kernel + stock rdma-core 44 (bookworm); memory-window
#                            semantics (guest/mwtest.c) and the verbs fabric provider's
#                            conformance suite on broker-owned memory (fabric/tests/verbs_lab.rs).
#                            Needs ~300 MB in $LAB_WORK; see README.md.
#   tests/lab/run.sh tier3   kernel built from the pinned linux-source-6.1 + mlx5-patch/ series,
#                            rdma-core from libverbs-patch/; registration of another process's
#                            memory (tier3/pidfdtest.c), the verbs provider doing it by pidfd
#                            (fabric/tests/verbs_pidfd_lab.rs), memgate demo over rdma: with
#                            memgated registering by pidfd (tier3/memgate-e2e), plus the
#                            tier-1 memory-window checks. The kernel build
#                            (~15-20 min on 2 cores) is cached by the series' hash.
#
# Env: LAB_WORK (default /var/tmp/memgate-lab) holds downloads and builds, never the repo;
#      GUEST_TIMEOUT seconds (default 600); KEEP_LOG=1 prints the whole guest console.
# Output: one "@@CHK name PASS|FAIL detail" line per check, then "lab <tier>: N passed, N failed".
# Exit status: 0 only when every check passed and the guest finished before the timeout.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# shellcheck source=../../mlx5-patch/pin.env
. "$REPO/mlx5-patch/pin.env"
WORK=${LAB_WORK:-/var/tmp/memgate-lab}
# tier 1's guest finishes in ~3 min, tier 3's in ~4 (TCG on two busy cores can double that)
GUEST_TIMEOUT=${GUEST_TIMEOUT:-600}
KREL_STOCK=$DEBIAN_ABI-amd64
mkdir -p "$WORK/dl"

log() { echo "[lab $(date -u +%T)] $*" >&2; }

host_deps() {
    local need=()
    command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
    command -v cpio >/dev/null || need+=(cpio)
    [ -x /bin/busybox ] || need+=(busybox-static)
    command -v gcc >/dev/null || need+=(gcc libc6-dev)
    command -v python3 >/dev/null || need+=(python3)
    [ -e /usr/include/infiniband/verbs.h ] || need+=(libibverbs-dev)
    # the verbs provider's Rust bindings (rdma-sys: bindgen needs libclang 14)
    [ -e /usr/include/rdma/rdma_cma.h ] || need+=(librdmacm-dev)
    command -v pkg-config >/dev/null || need+=(pkg-config)
    [ -e /usr/lib/llvm-14/lib/libclang.so.1 ] || need+=(libclang1-14)
    [ -d /usr/lib/llvm-14/lib/clang ] || need+=(libclang-common-14-dev)
    [ -e /usr/lib/x86_64-linux-gnu/libibverbs/librxe-rdmav34.so ] || need+=(ibverbs-providers)
    command -v rdma >/dev/null || need+=(iproute2)
    [ ${#need[@]} -eq 0 ] && return 0
    log "apt-get install ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}

# Stock kernel image, unpacked once, with a modules.dep made by busybox depmod.
stock_kernel() {
    local root=$WORK/stock-$KREL_STOCK
    if [ ! -f "$root/lib/modules/$KREL_STOCK/modules.dep" ]; then
        (cd "$WORK/dl" && ls linux-image-"${KREL_STOCK}"_"${DEBIAN_KVER}"_amd64.deb >/dev/null 2>&1 ||
            apt-get download "linux-image-$KREL_STOCK=$DEBIAN_KVER" 2>&1 | grep -v unsandboxed >&2 || true)
        [ -f "$WORK/dl/linux-image-${KREL_STOCK}_${DEBIAN_KVER}_amd64.deb" ] || {
            log "linux-image-$KREL_STOCK=$DEBIAN_KVER could not be downloaded (apt-get update first; if the archive has dropped that version, move both pins in mlx5-patch/pin.env together)"
            exit 1
        }
        rm -rf "$root"; mkdir -p "$root"
        dpkg -x "$WORK/dl/linux-image-${KREL_STOCK}_${DEBIAN_KVER}_amd64.deb" "$root"
        /bin/busybox depmod -b "$root" "$KREL_STOCK"
    fi
    echo "$root"
}

# Prints the .ko paths (relative to lib/modules/REL) needed for the named modules, deps first.
mod_closure() { # modules_dir module...
    python3 - "$@" <<'EOF'
import os, sys
mdir, want = sys.argv[1], sys.argv[2:]
deps = {}
for line in open(os.path.join(mdir, "modules.dep")):
    key, _, rest = line.partition(":")
    deps[key.strip()] = rest.split()
by_name = {os.path.basename(k).split(".ko")[0].replace("-", "_"): k for k in deps}
order = []
def visit(k):
    if k in order:
        return
    for d in deps.get(k, []):
        visit(d)
    order.append(k)
for m in want:
    if m in by_name:
        visit(by_name[m])
print("\n".join(order))
EOF
}

# Copies a host file and every shared library it needs into the initramfs root.
copy_bin() { # root file [dest]
    local root=$1 f=$2 dest=${3:-$2} lib
    mkdir -p "$root$(dirname "$dest")"; cp -L "$f" "$root$dest"
    for lib in $(ldd "$f" 2>/dev/null | awk '/=> \//{print $3} /^\t\/lib64/{print $1}'); do
        lib=${lib#/usr}
        [ -e "$root/usr$lib" ] || cp -L "$lib" "$root/usr$lib"
    done
}

# Builds the initramfs: busybox, iproute2 (ip, rdma), libibverbs + librxe, modules, tests.
# Env for overrides: LIBOVERRIDE (dir with libibverbs.so.1 and librxe-rdmav34.so).
mk_initramfs() { # kernel_root kernel_release out.cpio.gz test_bin...
    local kroot=$1 krel=$2 out=$3; shift 3
    local R; R=$(mktemp -d "$WORK/initramfs.XXXXXX")
    chmod 755 "$R"   # the archive's "." is the guest's /: other users must traverse it
    mkdir -p "$R"/{bin,sbin,dev,proc,sys,tmp,etc/lab,tests,usr/lib/x86_64-linux-gnu,usr/lib64,usr/bin,usr/sbin}
    ln -s usr/lib "$R/lib"; ln -s usr/lib64 "$R/lib64"
    cp /bin/busybox "$R/bin/busybox"
    local a
    for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$R/bin/$a"; done
    cp -L /lib64/ld-linux-x86-64.so.2 "$R/usr/lib64/"
    copy_bin "$R" "$(command -v rdma)" /usr/sbin/rdma
    copy_bin "$R" "$(command -v ip)" /usr/sbin/ip
    local pdir=/usr/lib/x86_64-linux-gnu/libibverbs
    copy_bin "$R" "$pdir/librxe-rdmav34.so"
    mkdir -p "$R/etc/libibverbs.d"; echo "driver rxe" > "$R/etc/libibverbs.d/rxe.driver"
    local t
    for t in "$@"; do copy_bin "$R" "$t" "/tests/$(basename "$t")"; done
    if [ -n "${VERBS_BIN:-}" ]; then
        # The verbs provider's conformance suite (a Rust test binary) and a wrapper the
        # guest init runs like any other test program.
        copy_bin "$R" "$VERBS_BIN" /usr/bin/verbs_lab
        # The suite's target process is a real `sleep` (coreutils, not the busybox applet).
        copy_bin "$R" "$(command -v sleep)" /usr/bin/sleep
        cat > "$R/tests/verbs-conformance" <<'EOS'
#!/bin/sh
# Runs the fabric conformance suite against rxe through the verbs provider.
cd /tmp && MEMGATE_LAB_LISTEN=rdma:192.0.2.1:0 /usr/bin/verbs_lab --ignored --exact lab_conformance \
    --nocapture --test-threads 1
EOS
        # MEMGATE_VERBS_TRACE=1 on the host traces the provider's steps on the guest console.
        [ -z "${MEMGATE_VERBS_TRACE:-}" ] || sed -i '2i export MEMGATE_VERBS_TRACE=1' "$R/tests/verbs-conformance"
        chmod 755 "$R/tests/verbs-conformance"
    fi
    if [ -n "${LIBOVERRIDE:-}" ]; then
        cp -L "$LIBOVERRIDE/libibverbs.so.1" "$R/usr/lib/x86_64-linux-gnu/libibverbs.so.1"
        cp -L "$LIBOVERRIDE/librxe-rdmav34.so" "$R$pdir/librxe-rdmav34.so"
    fi
    local mdir=$kroot/lib/modules/$krel m
    # rxe computes its ICRC with the crypto API's "crc32": without a provider, "rdma link add" fails ENOENT
    mod_closure "$mdir" rdma_rxe ib_uverbs rdma_ucm veth crc32_generic crc32_pclmul > "$R/etc/lab/modules"
    while read -r m; do
        mkdir -p "$R/lib/modules/$(dirname "$m")"; cp "$mdir/$m" "$R/lib/modules/$m"
    done < "$R/etc/lab/modules"
    install -m 755 "$HERE/guest/init" "$R/init"
    (cd "$R" && find . | cpio -o -H newc --quiet | gzip -1 > "$out")
    rm -rf "$R"
    log "initramfs $(du -h "$out" | cut -f1)"
}

# Boots kernel+initramfs under TCG, prints the check lines, returns non-zero on any failure.
boot() { # tier vmlinuz initramfs
    local tier=$1 kernel=$2 initrd=$3 logf=$WORK/$1-guest.log t0 rc=0
    log "booting $kernel (TCG, timeout ${GUEST_TIMEOUT}s), console -> $logf"
    t0=$SECONDS
    timeout "$GUEST_TIMEOUT" qemu-system-x86_64 -accel tcg,thread=multi -cpu max -m 1024 -smp 2 \
        -nodefaults -nographic -no-reboot -serial stdio -bios /usr/share/qemu/qboot.rom \
        -kernel "$kernel" -initrd "$initrd" \
        -append "console=ttyS0 panic=-1 quiet loglevel=3" </dev/null >"$logf" 2>&1 || rc=$?
    local wall=$((SECONDS - t0))
    tr -d '\r' < "$logf" > "$logf.txt"
    [ -n "${KEEP_LOG:-}" ] && cat "$logf.txt"
    grep -E '^@@(CHK|INFO)' "$logf.txt" || true
    local pass fail
    pass=$(grep -cE '^@@CHK [^ ]+ PASS' "$logf.txt" || true)
    fail=$(grep -cE '^@@CHK [^ ]+ FAIL' "$logf.txt" || true)
    if ! grep -q '^@@DONE' "$logf.txt"; then
        echo "@@CHK guest_finished FAIL qemu rc=$rc after ${wall}s (timeout or crash; see $logf.txt)"
        tail -n 20 "$logf.txt" >&2
        fail=$((fail + 1))
    fi
    log "$tier guest wall time: ${wall}s"
    echo "lab $tier: $pass passed, $fail failed"
    [ "$fail" -eq 0 ]
}

build_guest_prog() { # out source...
    local out=$1; shift
    gcc -O2 -Wall -Wextra -Werror -o "$out" "$@" "$HERE/guest/rdmautil.c" -libverbs
}

# Builds the verbs provider's conformance test binary on the host (linked against the
# host's libibverbs/librdmacm, bookworm's in CI) and prints its path.
build_verbs_suite() {
    export LIBCLANG_PATH=${LIBCLANG_PATH:-/usr/lib/llvm-14/lib}
    (cd "$REPO" && cargo test -q -p memgate-fabric --features verbs --test verbs_lab --no-run \
        --message-format=json 2>"$WORK/cargo-tier1.log" || true) |
        python3 -c 'import json,sys
for l in sys.stdin:
    try: m = json.loads(l)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "verbs_lab":
        print(m["executable"])'
}

# Builds (on the host, linked against the host's libibverbs/librdmacm) what the tier-3 guest
# runs with the patched rdma-core: the pidfd registration lab test and release memgate +
# memgated with the verbs provider. Prints "name path" lines.
build_tier3_rust() {
    export LIBCLANG_PATH=${LIBCLANG_PATH:-/usr/lib/llvm-14/lib}
    {
        (cd "$REPO" && cargo test -q -p memgate-fabric --features verbs --test verbs_pidfd_lab \
            --no-run --message-format=json 2>"$WORK/cargo-tier3.log" || true)
        (cd "$REPO" && cargo build -q --release -p memgate -p memgated \
            --features memgate/verbs,memgated/verbs --message-format=json 2>>"$WORK/cargo-tier3.log" || true)
    } | python3 -c 'import json,sys
want = {"verbs_pidfd_lab", "memgate", "memgated"}
for l in sys.stdin:
    try: m = json.loads(l)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] in want:
        print(m["target"]["name"], m["executable"])'
}

tier1() {
    local t0=$SECONDS
    host_deps
    local kroot; kroot=$(stock_kernel)
    build_guest_prog "$WORK/mwtest" "$HERE/guest/mwtest.c"
    local vbin; vbin=$(build_verbs_suite | tail -n 1)
    if [ -z "$vbin" ]; then
        echo "@@CHK verbs_suite_build FAIL cargo test --no-run -p memgate-fabric --features verbs: $(grep -E 'error|panicked|please install' "$WORK/cargo-tier1.log" | head -n 3 | tr '\n' ' ') (log: $WORK/cargo-tier1.log)"
        echo "lab tier1: 0 passed, 1 failed"
        return 1
    fi
    VERBS_BIN=$vbin mk_initramfs "$kroot" "$KREL_STOCK" "$WORK/tier1.cpio.gz" "$WORK/mwtest"
    log "tier1 prepared in $((SECONDS - t0))s"
    local rc=0
    boot tier1 "$kroot/boot/vmlinuz-$KREL_STOCK" "$WORK/tier1.cpio.gz" || rc=$?
    log "tier1 total: $((SECONDS - t0))s"
    return $rc
}

# ---- tier 3 (kernel series + rdma-core series) -------------------------------------------
# Appends a second gzip'd cpio to the initramfs (the kernel unpacks concatenated archives in
# order, later files win) carrying the patched libibverbs and its rxe provider. The patched
# library has private ABI 35, so it loads only librxe-rdmav35.so and never the stock one.
# Also carries the Rust programs (built against the host's libraries; the patched
# libibverbs keeps every stock symbol version) and their guest wrappers.
tier3_overlay() { # rdma-core build dir, initramfs to extend, "name path" list file
    local rc=$1 img=$2 bins=$3 R; R=$(mktemp -d "$WORK/tier3-overlay.XXXXXX")
    chmod 755 "$R"
    local lib=$R/usr/lib/x86_64-linux-gnu name path
    mkdir -p "$lib/libibverbs" "$R/tests" "$R/usr/bin" "$R/usr/lib64"
    while read -r name path; do
        copy_bin "$R" "$path" "/usr/bin/$name"
    done < "$bins"
    copy_bin "$R" "$(command -v sleep)" /usr/bin/sleep
    cat > "$R/tests/verbs-pidfd" <<'EOS'
#!/bin/sh
# The verbs provider registering a real process by pidfd, and the kernel's refusals.
cd /tmp && MEMGATE_LAB_LISTEN=rdma:192.0.2.1:0 /usr/bin/verbs_pidfd_lab --ignored --exact lab_pidfd \
    --nocapture --test-threads 1
EOS
    install -m 755 "$HERE/tier3/memgate-e2e" "$R/tests/memgate-e2e"
    chmod 755 "$R/tests/verbs-pidfd"
    # after copy_bin, so that the patched libraries replace the host's copies
    cp -L "$rc/lib/libibverbs.so.1" "$lib/libibverbs.so.1"
    cp -L "$rc/lib/librxe-rdmav35.so" "$lib/libibverbs/librxe-rdmav35.so"
    (cd "$R" && find . | cpio -o -H newc --quiet | gzip -1 >> "$img")
    rm -rf "$R"
}

tier3() {
    local t0=$SECONDS
    host_deps
    # Patched kernel (cached by the series hash, ~15-20 min the first time) and patched
    # rdma-core (cached likewise, ~2 min).
    local kout; kout=$("$REPO/mlx5-patch/check.sh" kernel)
    local krel; krel=$(cat "$kout/release")
    local rcbuild; rcbuild=$("$REPO/libverbs-patch/check.sh" build)
    # pidfdtest links against the patched headers and library; mwtest (tier 1) is stock.
    gcc -O2 -Wall -Wextra -Werror -I"$HERE/guest" -I"$rcbuild/include" -o "$WORK/pidfdtest" \
        "$HERE/tier3/pidfdtest.c" "$HERE/guest/rdmautil.c" -L"$rcbuild/lib" -libverbs \
        -Wl,-rpath-link,"$rcbuild/lib"
    build_guest_prog "$WORK/mwtest" "$HERE/guest/mwtest.c"
    build_tier3_rust > "$WORK/tier3-bins"
    if [ "$(wc -l < "$WORK/tier3-bins")" -ne 3 ]; then
        echo "@@CHK tier3_rust_build FAIL cargo build --features verbs (got: $(tr '\n' ' ' < "$WORK/tier3-bins")): $(grep -E 'error|panicked|please install' "$WORK/cargo-tier3.log" | head -n 3 | tr '\n' ' ') (log: $WORK/cargo-tier3.log)"
        echo "lab tier3: 0 passed, 1 failed"
        return 1
    fi
    mk_initramfs "$kout" "$krel" "$WORK/tier3.cpio.gz" "$WORK/mwtest" "$WORK/pidfdtest"
    tier3_overlay "$rcbuild" "$WORK/tier3.cpio.gz" "$WORK/tier3-bins"
    log "tier3 prepared in $((SECONDS - t0))s"
    local rc=0
    boot tier3 "$kout/boot/vmlinuz-$krel" "$WORK/tier3.cpio.gz" || rc=$?
    log "tier3 total: $((SECONDS - t0))s"
    return $rc
}
# ---- end of tier 3 -------------------------------------------------------------------------

case ${1:-} in
    tier1) tier1 ;;
    tier3) tier3 ;;
    *) echo "usage: $0 tier1|tier3" >&2; exit 2 ;;
esac
