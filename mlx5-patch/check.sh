#!/usr/bin/env bash
# Checks and builds the Linux 6.1 series in this directory against the pinned Debian source.
#
#   mlx5-patch/check.sh [check]  git am the series onto pristine linux-source-6.1 ($DEBIAN_KVER),
#                                run scripts/checkpatch.pl --strict on every patch, and compile
#                                the RDMA core, rxe and mlx5 (plus kernel/fork.o, kernel/pid.o).
#   mlx5-patch/check.sh bisect   as check, then compile the touched objects after every patch
#                                (each patch must build on its own; ~3 min per patch on 2 cores).
#   mlx5-patch/check.sh kernel   build bzImage + modules of a small lab config (QEMU guest,
#                                rxe, mlx5) with the series applied; prints the output directory
#                                (boot/vmlinuz-REL, lib/modules/REL, release). Cached by the
#                                series hash: a second run with the same patches costs nothing.
#
# Env: LAB_WORK (default /var/tmp/memgate-lab) holds the source tree and builds, never the repo.
#      JOBS (default: nproc). Builds run under nice -n 19.
# Host packages: build-essential flex bison libelf-dev libssl-dev bc busybox-static (installed
# when missing).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=pin.env
. "$HERE/pin.env"
WORK=${LAB_WORK:-/var/tmp/memgate-lab}
JOBS=${JOBS:-$(nproc)}
TREE=$WORK/linux-$DEBIAN_KVER
mkdir -p "$WORK/dl"

log() { echo "[mlx5-patch $(date -u +%T)] $*" >&2; }
die() { log "error: $*"; exit 1; }
kmake() { nice -n 19 make -C "$TREE" -j"$JOBS" "$@"; }

series() { ls "$HERE"/[0-9][0-9][0-9][0-9]-*.patch; }
# what the built kernel depends on: the patches, the pinned version and the config recipe
series_hash() {
    { cat $(series) "$HERE/pin.env"; sed -n '/^configure() {/,/^}/p' "$HERE/check.sh"; } |
        sha256sum | cut -c1-16
}

host_deps() {
    local need=()
    command -v gcc >/dev/null || need+=(build-essential)
    command -v flex >/dev/null || need+=(flex)
    command -v bison >/dev/null || need+=(bison)
    command -v bc >/dev/null || need+=(bc)
    [ -e /usr/include/libelf.h ] || need+=(libelf-dev)
    [ -e /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
    [ -x /bin/busybox ] || need+=(busybox-static)   # depmod for the lab kernel's modules
    [ ${#need[@]} -eq 0 ] && return 0
    log "apt-get install ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}

# Pristine linux-source-6.1 at exactly the pinned Debian version, as a git repository (tag
# "pristine") so that the series can be applied with git am.
pristine_tree() {
    [ -d "$TREE/.git" ] && git -C "$TREE" rev-parse -q --verify pristine >/dev/null && return 0
    local deb=$WORK/dl/linux-source-6.1_${DEBIAN_KVER}_all.deb
    if [ ! -f "$deb" ]; then
        log "apt-get download linux-source-6.1=$DEBIAN_KVER"
        (cd "$WORK/dl" && apt-get download "linux-source-6.1=$DEBIAN_KVER" 2>&1 | grep -v unsandboxed >&2 || true)
        [ -f "$deb" ] || die "linux-source-6.1=$DEBIAN_KVER could not be downloaded (apt-get update first; if the archive has dropped that version, move both pins in mlx5-patch/pin.env together)"
    fi
    rm -rf "$TREE" "$TREE.tmp"; mkdir -p "$TREE.tmp"
    log "unpacking linux-source-6.1 $DEBIAN_KVER"
    dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/src/linux-source-6.1.tar.xz |
        tar -xJ -C "$TREE.tmp" --strip-components=1
    mv "$TREE.tmp" "$TREE"
    # Debian's top-level .gitignore ignores everything outside debian/: drop those two rules.
    sed -i '/^\/\*$/d;/^!\/debian\/$/d' "$TREE/.gitignore"
    git -C "$TREE" init -q
    git -C "$TREE" add -A
    git -C "$TREE" -c user.name=pristine -c user.email=pristine@localhost \
        commit -qm "linux-source-6.1 $DEBIAN_KVER"
    git -C "$TREE" tag pristine
}

# Resets the tree to pristine and applies the series with git am (unless it already is).
apply_series() {
    local h; h=$(series_hash)
    if [ "$(cat "$TREE/.memgate-series" 2>/dev/null)" = "$h" ] &&
       [ -z "$(git -C "$TREE" status --porcelain --untracked-files=no)" ]; then
        return 0
    fi
    git -C "$TREE" am --abort >/dev/null 2>&1 || true
    git -C "$TREE" checkout -q -f -B memgate pristine
    git -C "$TREE" -c user.name=check -c user.email=check@localhost am -q $(series)
    echo "$h" > "$TREE/.memgate-series"
    log "series applied: $(git -C "$TREE" log --oneline pristine..HEAD | wc -l) patches ($h)"
}

# Small config: a QEMU guest kernel with the RDMA core, rxe and veth, userfaultfd (the fault
# server) and Landlock and Yama as Debian enables them. mlx5 is enabled only
# while check/bisect compile it (with_mlx5): the lab kernel never builds mlx5_core.
configure() {
    local want; want=$(sed -n '/^configure() {/,/^}/p' "$HERE/check.sh" | sha256sum | cut -c1-16)
    [ -f "$TREE/.config" ] && [ "$(cat "$TREE/.memgate-config" 2>/dev/null)" = "$want" ] && return 0
    (
        cd "$TREE"
        make -s x86_64_defconfig
        make -s kvm_guest.config >/dev/null
        scripts/config --set-str LOCALVERSION -memgate --disable LOCALVERSION_AUTO \
            --module INFINIBAND --module INFINIBAND_USER_ACCESS --disable INFINIBAND_USER_MAD \
            --enable INFINIBAND_USER_MEM --enable INFINIBAND_ON_DEMAND_PAGING \
            --enable INFINIBAND_ADDR_TRANS --module RDMA_RXE --module VETH --module DUMMY \
            --enable NET_NS --module CONFIGFS_FS --enable MODULES --enable MODVERSIONS \
            --disable MODULE_SIG --disable DEBUG_INFO --disable DRM --disable SOUND \
            --disable USB_SUPPORT --disable WLAN --disable WIRELESS --disable HID \
            --disable NETFILTER --disable AGP --disable FB --disable MD --disable ETHERNET \
            --module CRYPTO_CRC32 --enable SECURITY_YAMA --enable SECURITY_LANDLOCK \
            --enable USERFAULTFD
        # not needed by an initramfs-only serial guest; these options gate whole directories
        # and no widely included header, so toggling them does not force a full rebuild
        local o
        for o in NETWORK_FILESYSTEMS EXT4_FS ISO9660_FS MSDOS_FS VFAT_FS AUTOFS_FS SCSI ATA \
                 BLK_DEV_SD INPUT_KEYBOARD INPUT_MOUSE SECURITY_SELINUX IPV6 XFRM NET_SCHED \
                 IP_MULTICAST IP_ADVANCED_ROUTER IP_PNP NETLABEL RFKILL VIRTIO_NET VIRTIO_BLK \
                 HW_RANDOM I2C THERMAL WATCHDOG HWMON PCCARD HOTPLUG_PCI NET_9P 9P_FS \
                 PERF_EVENTS_INTEL_UNCORE PERF_EVENTS_INTEL_RAPL PERF_EVENTS_INTEL_CSTATE \
                 PERF_EVENTS_AMD_POWER PERF_EVENTS_AMD_UNCORE X86_MCE MICROCODE HIBERNATION \
                 KEXEC CRASH_DUMP; do
            scripts/config --disable "$o"
        done
        make -s olddefconfig
    )
    echo "$want" > "$TREE/.memgate-config"
}

# Runs "$@" with mlx5 (core + IB, no ethernet part) enabled, then restores the lab config.
with_mlx5() {
    cp "$TREE/.config" "$TREE/.config.lab"
    (cd "$TREE" && scripts/config --enable ETHERNET --enable NET_VENDOR_MELLANOX \
        --module MLX5_CORE --module MLX5_INFINIBAND --disable MLX5_CORE_EN &&
        make -s olddefconfig)
    local rc=0
    "$@" || rc=$?
    mv "$TREE/.config.lab" "$TREE/.config"
    return $rc
}

run_checkpatch() {
    local p bad=0 out
    for p in $(series); do
        if out=$("$TREE/scripts/checkpatch.pl" --strict -q "$p" 2>&1); then
            echo "@@CHK checkpatch_$(basename "$p" .patch | cut -c1-4) PASS"
        else
            echo "@@CHK checkpatch_$(basename "$p" .patch | cut -c1-4) FAIL"; echo "$out" >&2; bad=1
        fi
    done
    return $bad
}

OBJS=(drivers/infiniband/core/ drivers/infiniband/sw/rxe/ drivers/infiniband/hw/mlx5/
      kernel/fork.o kernel/pid.o)

compile_rdma() { # label
    local logf=$WORK/check-compile-$1.log
    if kmake W=1 "${OBJS[@]}" >"$logf" 2>&1; then
        local warn; warn=$(grep -cE 'warning:' "$logf" || true)
        echo "@@CHK compile_$1 PASS warnings=$warn"
    else
        grep -E 'error|Error' "$logf" | head -20 >&2
        echo "@@CHK compile_$1 FAIL see $logf"; return 1
    fi
}

check() {
    host_deps; pristine_tree; configure
    local rc=0
    apply_series || { echo "@@CHK git_am FAIL"; return 1; }
    echo "@@CHK git_am PASS $(series | wc -l) patches onto linux-source-6.1 $DEBIAN_KVER"
    run_checkpatch || rc=1
    with_mlx5 compile_rdma series || rc=1
    return $rc
}

bisect() {
    check || return 1
    local n i rc=0
    n=$(series | wc -l)
    for i in $(seq 1 "$n"); do
        git -C "$TREE" checkout -q "memgate~$((n - i))"
        with_mlx5 compile_rdma "after_$i" || rc=1
    done
    git -C "$TREE" checkout -q memgate
    return $rc
}

kernel() {
    local h out; h=$(series_hash); out=$WORK/kernel-$h
    if [ -f "$out/release" ]; then log "cached kernel $out"; echo "$out"; return 0; fi
    host_deps; pristine_tree; configure; apply_series
    local t0=$SECONDS
    log "building bzImage + modules (nice 19, -j$JOBS), log $WORK/kernel-build.log"
    kmake bzImage modules >"$WORK/kernel-build.log" 2>&1 ||
        { tail -30 "$WORK/kernel-build.log" >&2; return 1; }
    local rel; rel=$(make -s -C "$TREE" kernelrelease)
    rm -rf "$out.tmp"; mkdir -p "$out.tmp/boot"
    cp "$TREE/arch/x86/boot/bzImage" "$out.tmp/boot/vmlinuz-$rel"
    make -s -C "$TREE" modules_install INSTALL_MOD_PATH="$out.tmp" INSTALL_MOD_STRIP=1 \
        DEPMOD=/bin/true >/dev/null
    /bin/busybox depmod -b "$out.tmp" "$rel"
    echo "$rel" > "$out.tmp/release"
    rm -rf "$out"; mv "$out.tmp" "$out"
    log "kernel $rel built in $((SECONDS - t0))s -> $out"
    echo "$out"
}

case ${1:-check} in
    check) check ;;
    bisect) bisect ;;
    kernel) kernel ;;
    *) echo "usage: $0 [check|bisect|kernel]" >&2; exit 2 ;;
esac
