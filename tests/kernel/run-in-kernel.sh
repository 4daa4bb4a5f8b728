#!/bin/bash
# run-in-kernel.sh — run a command inside a throw-away QEMU guest that boots a
# Debian distribution kernel (which has nfnetlink_cthelper, nfnetlink_queue,
# NETFILTER_NETLINK_GLUE_CT, ... as modules) on top of the HOST's filesystem.
#
#   run-in-kernel.sh [options] [--] command [args...]
#
# Inside the guest:
#   * /            = host root, read-only 9p, under an overlay whose upper is a
#                    tmpfs (so /etc, /var, ... are writable and thrown away)
#   * $PWD         = host's current directory, READ-WRITE (9p passthrough),
#                    same path as on the host, and the command starts there
#   * /lib/modules/<guest kernel> = the modules of the Debian kernel package,
#                    so `modprobe nfnetlink_cthelper` etc. just work
#   * you are root, in the initial network namespace, lo is up, no other NIC
# The command's stdout/stderr are streamed to this script's stdout/stderr and
# its exit status becomes this script's exit status (125 = guest/infra failure,
# 124 = timeout).
#
# Options (or environment variables):
#   --timeout SECS   RIK_TIMEOUT   (default 600) whole-VM wall clock limit
#   --mem MB         RIK_MEM       (default 1024)
#   --cpus N         RIK_CPUS      (default 2)
#   --accel kvm|tcg|auto RIK_ACCEL (default auto: kvm if usable, else tcg)
#   --ro             RIK_RO=1      do not share $PWD read-write (still visible ro)
#   --env NAME=VAL   pass an environment variable (repeatable)
#   --console        RIK_CONSOLE=1 also print the guest kernel console log
#   --setup-only     install/download everything, build the initramfs, exit
#   RIK_KERNEL_PKG   Debian kernel package to boot (default: what
#                    linux-image-amd64 depends on, resolved once and cached)
#   RIK_KERNEL / RIK_MODDIR  boot your own bzImage with modules from
#                    RIK_MODDIR/<version>/ instead of a Debian package
#   RIK_CACHE        cache directory (default: ~/.cache/cthelperd-kernel)
#   RIK_BOOT=bzimage boot the compressed bzImage via SeaBIOS instead of the
#                    extracted ELF vmlinux via PVH (PVH saves ~8 s under TCG)
#   RIK_CPU          -cpu model for KVM (default host)
#   RIK_CMDLINE      extra kernel command line (e.g. "loglevel=7")
#   RIK_KEEP=1       keep the per-run control dir (/tmp/rik.*: console.log,
#                    stdout, stderr, rc); RIK_TRACE=1 xtrace guest-init there
#   RIK_QUIET=1      no run-in-kernel: progress lines on stderr
#
# Idempotent setup: apt-get installs qemu-system-x86 busybox-static cpio kmod
# iproute2 if missing; the kernel .deb is fetched with `apt-get download` and
# unpacked into the cache (nothing is installed into the host's /boot or
# /lib/modules).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${RIK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cthelperd-kernel}
TIMEOUT=${RIK_TIMEOUT:-600}
MEM=${RIK_MEM:-1024}
CPUS=${RIK_CPUS:-2}
ACCEL=${RIK_ACCEL:-auto}
RO=${RIK_RO:-0}
CONSOLE=${RIK_CONSOLE:-0}
SETUP_ONLY=0
ENVS=()

log() { [ "${RIK_QUIET:-0}" = 1 ] || echo "run-in-kernel: $*" >&2; }
die() { echo "run-in-kernel: ERROR: $*" >&2; exit 125; }

while [ $# -gt 0 ]; do
    case "$1" in
        --timeout) TIMEOUT=$2; shift 2 ;;
        --mem) MEM=$2; shift 2 ;;
        --cpus) CPUS=$2; shift 2 ;;
        --accel) ACCEL=$2; shift 2 ;;
        --ro) RO=1; shift ;;
        --env) ENVS+=("$2"); shift 2 ;;
        --console) CONSOLE=1; shift ;;
        --setup-only) SETUP_ONLY=1; shift ;;
        --) shift; break ;;
        -h|--help) sed -n '2,40p' "$0"; exit 0 ;;
        -*) die "unknown option $1" ;;
        *) break ;;
    esac
done
[ $# -gt 0 ] || [ "$SETUP_ONLY" = 1 ] || die "usage: $0 [options] [--] command [args...]"
[ "$(id -u)" = 0 ] || die "must run as root (apt-get, 9p passthrough)"

# ---------------------------------------------------------------- host packages
export DEBIAN_FRONTEND=noninteractive
APT_UPDATED=0
apt_update() { [ "$APT_UPDATED" = 1 ] && return 0; log "apt-get update"; apt-get update -q >&2 && APT_UPDATED=1; }
apt_install() { # install packages, refreshing the package lists once if needed
    apt-get install -y -q --no-install-recommends "$@" >&2 && return 0
    apt_update && apt-get install -y -q --no-install-recommends "$@" >&2
}
need_pkgs=()
command -v qemu-system-x86_64 >/dev/null || need_pkgs+=(qemu-system-x86)
# busybox-static is required (the initramfs has no libc)
dpkg -s busybox-static >/dev/null 2>&1 || need_pkgs+=(busybox-static)
command -v cpio >/dev/null || need_pkgs+=(cpio)
command -v depmod >/dev/null || need_pkgs+=(kmod)
command -v ip >/dev/null || need_pkgs+=(iproute2)
command -v dpkg-deb >/dev/null || need_pkgs+=(dpkg)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    log "installing ${need_pkgs[*]}"
    apt_install "${need_pkgs[@]}" || die "apt-get install ${need_pkgs[*]} failed"
fi
/bin/busybox --list 2>/dev/null | grep -qx switch_root || die "/bin/busybox has no switch_root (need busybox-static)"
PY=/usr/bin/python3; [ -x "$PY" ] || PY=python3

# ---------------------------------------------------------------- kernel
mkdir -p "$CACHE"
if [ -n "${RIK_KERNEL:-}" ]; then
    KIMG=$RIK_KERNEL
    MODROOT=${RIK_MODDIR:?RIK_MODDIR must be set with RIK_KERNEL}
    KVER=${RIK_KVER:-$(ls "$MODROOT" | head -n1)}
else
    resolve_pkg() { apt-cache depends linux-image-amd64 2>/dev/null |
        awk '/Depends: linux-image-[0-9]/{print $2; exit}'; }
    fetch_pkg() { # fetch_pkg PKG: download + unpack into $CACHE/PKG
        local pkg=$1 kdir=$CACHE/$1 kv dl
        log "downloading + unpacking $pkg"
        rm -rf "$kdir"
        # a world-writable temp dir so apt's _apt user can write there (no "unsandboxed" warning)
        dl=$(mktemp -d /tmp/cthelperd-kernel-dl.XXXXXX); chmod 777 "$dl"
        ( cd "$dl" && apt-get download -q "$pkg" >&2 ) || { rm -rf "$dl"; return 1; }
        mkdir -p "$kdir"
        dpkg-deb -x "$dl"/"$pkg"_*.deb "$kdir" || { rm -rf "$dl"; return 1; }
        rm -rf "$dl"
        # merged-/usr packages (trixie+) ship usr/lib/modules
        [ -d "$kdir/lib/modules" ] || { mkdir -p "$kdir/lib"; ln -s ../usr/lib/modules "$kdir/lib/modules"; }
        kv=$(ls "$kdir/lib/modules/" | head -n1)
        depmod -b "$kdir" "$kv" || return 1
        touch "$kdir/.done"
    }
    PINNED=${RIK_KERNEL_PKG:-}
    if [ -z "${RIK_KERNEL_PKG:-}" ]; then
        if [ -s "$CACHE/kernel.pkg" ]; then
            RIK_KERNEL_PKG=$(cat "$CACHE/kernel.pkg")
        else
            RIK_KERNEL_PKG=$(resolve_pkg)
            [ -n "$RIK_KERNEL_PKG" ] || { apt_update || true; RIK_KERNEL_PKG=$(resolve_pkg); }
            [ -n "$RIK_KERNEL_PKG" ] || die "cannot resolve linux-image-amd64"
            echo "$RIK_KERNEL_PKG" >"$CACHE/kernel.pkg"
        fi
    fi
    KDIR=$CACHE/$RIK_KERNEL_PKG
    if [ ! -e "$KDIR/.done" ]; then
        if ! fetch_pkg "$RIK_KERNEL_PKG"; then
            # stale package lists, or the cached ABI name left the archive
            apt_update || true
            if [ -z "$PINNED" ]; then
                RIK_KERNEL_PKG=$(resolve_pkg)
                [ -n "$RIK_KERNEL_PKG" ] || die "cannot resolve linux-image-amd64"
                echo "$RIK_KERNEL_PKG" >"$CACHE/kernel.pkg"
                KDIR=$CACHE/$RIK_KERNEL_PKG
            fi
            fetch_pkg "$RIK_KERNEL_PKG" || die "apt-get download $RIK_KERNEL_PKG failed"
        fi
    fi
    KVER=$(ls "$KDIR/lib/modules/" | head -n1)
    KIMG=$(ls "$KDIR"/boot/vmlinuz-* | head -n1)
    MODROOT=$KDIR/lib/modules
fi
MODROOT=$(readlink -f "$MODROOT")
[ -r "$KIMG" ] || die "no kernel image $KIMG"

# PVH boot of the uncompressed ELF vmlinux (default): skips SeaBIOS' real-mode
# bzImage path and the in-guest xz decompressor. RIK_BOOT=bzimage to disable.
BOOT=${RIK_BOOT:-pvh}
if [ "$BOOT" = pvh ]; then
    VMLINUX=$CACHE/vmlinux-$KVER
    if [ ! -s "$VMLINUX" ] || [ "$VMLINUX" -ot "$KIMG" ]; then
        log "extracting uncompressed vmlinux for PVH boot"
        if ! "$PY" "$HERE/extract-vmlinux.py" "$KIMG" "$VMLINUX.tmp"; then
            log "could not extract vmlinux, booting bzImage"; rm -f "$VMLINUX.tmp"; BOOT=bzimage
        else
            mv "$VMLINUX.tmp" "$VMLINUX"
        fi
    fi
    [ "$BOOT" = pvh ] && KIMG=$VMLINUX
fi

# ---------------------------------------------------------------- initramfs
INITRD=$CACHE/initramfs-$KVER.cpio.gz
stamp=$(cat "$HERE/initramfs-init.sh" /bin/busybox | md5sum | cut -c1-12)-$KVER
if [ ! -s "$INITRD" ] || [ "$(cat "$INITRD.stamp" 2>/dev/null)" != "$stamp" ]; then
    log "building initramfs for $KVER"
    t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
    mkdir -p "$t"/{bin,proc,sys,dev,mods,newroot}
    cp /bin/busybox "$t/bin/busybox"
    cp "$HERE/initramfs-init.sh" "$t/init"; chmod 755 "$t/init"
    : >"$t/modules.list"
    for m in virtio_pci 9pnet_virtio 9p overlay; do
        modprobe -d "$(dirname "$(dirname "$MODROOT")")" -S "$KVER" --show-depends "$m" 2>/dev/null |
            awk '$1=="insmod"{print $2}'
    done | awk '!seen[$0]++' | while read -r ko; do
        cp "$ko" "$t/mods/"; basename "$ko" >>"$t/modules.list"
    done
    [ -s "$t/modules.list" ] || die "could not resolve 9p/virtio modules in $MODROOT/$KVER (built in? then fine)"
    ( cd "$t" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1 ) >"$INITRD.tmp"
    mv "$INITRD.tmp" "$INITRD"; echo "$stamp" >"$INITRD.stamp"
    rm -rf "$t"; trap - EXIT
fi
[ "$SETUP_ONLY" = 1 ] && { log "setup ok: kernel $KVER ($KIMG)"; exit 0; }

# ---------------------------------------------------------------- per-run control dir
CTL=$(mktemp -d /tmp/rik.XXXXXX)
QPID=
cleanup() {
    [ -n "$QPID" ] && kill "$QPID" 2>/dev/null || true
    [ -n "${TPIDS:-}" ] && kill $TPIDS 2>/dev/null || true
    [ "${RIK_KEEP:-0}" = 1 ] && log "kept $CTL" || rm -rf "$CTL"
}
trap cleanup EXIT
CWD=$(pwd -P)
printf '%s\n' "$CWD" >"$CTL/cwd"
[ "$RO" = 1 ] || touch "$CTL/cwd-rw"
readlink -f "$MODROOT" >"$CTL/moddir"   # host path of .../lib/modules
printf '%s\n' "$HERE/guest-init.sh" >"$CTL/guest_init"
{
    # the host's PATH (cargo, pyenv shims, ... live on the shared root too)
    printf 'export PATH=%q\n' "${RIK_PATH:-$PATH:/usr/sbin:/sbin}"
    for e in "${ENVS[@]+"${ENVS[@]}"}"; do printf 'export %q\n' "$e"; done
} >"$CTL/env"
{
    printf 'cd %q || exit 125\n' "$CWD"
    printf 'exec'; printf ' %q' "$@"; printf '\n'
} >"$CTL/cmd.sh"
: >"$CTL/stdout"; : >"$CTL/stderr"
[ "${RIK_TRACE:-0}" = 1 ] && touch "$CTL/trace"

# ---------------------------------------------------------------- accel
if [ "$ACCEL" = auto ]; then
    if [ -d /sys/module/kvm_pvm ]; then
        # /dev/kvm is provided by kvm-pvm (nested "pagetable-based VM"): it only
        # runs PVM-aware guest kernels; a stock Debian kernel hangs right after
        # the real-mode setup code (bzImage) or at the PVH entry. Use TCG.
        ACCEL=tcg
    elif [ -w /dev/kvm ] && [ -r /dev/kvm ]; then ACCEL=kvm
    else ACCEL=tcg; fi
fi
case "$ACCEL" in
    kvm) ACCEL_ARGS=(-accel kvm -cpu "${RIK_CPU:-host}") ;;
    tcg) ACCEL_ARGS=(-accel tcg,thread=multi -cpu max) ;;
    *) die "bad accel $ACCEL" ;;
esac

CMDLINE="console=ttyS0 quiet loglevel=4 panic=-1 rdinit=/init tsc=reliable no_timer_check
 i8042.noaux i8042.nomux i8042.nopnp i8042.nokbd mitigations=off ${RIK_CMDLINE:-}"
CMDLINE=$(echo $CMDLINE)

QEMU=(qemu-system-x86_64 "${ACCEL_ARGS[@]}" -m "$MEM" -smp "$CPUS"
    -nodefaults -no-user-config -nographic -no-reboot
    -kernel "$KIMG" -initrd "$INITRD" -append "$CMDLINE"
    -serial "file:$CTL/console.log"
    -device virtio-rng-pci
    -fsdev local,id=fsroot,path=/,security_model=none,readonly=on,multidevs=remap
    -device virtio-9p-pci,fsdev=fsroot,mount_tag=hostroot
    -fsdev local,id=fsctl,path="$CTL",security_model=none,multidevs=remap
    -device virtio-9p-pci,fsdev=fsctl,mount_tag=rikctl
)
if [ "$RO" != 1 ]; then
    QEMU+=(-fsdev local,id=fscwd,path="$CWD",security_model=passthrough,multidevs=remap
        -device virtio-9p-pci,fsdev=fscwd,mount_tag=rikcwd)
fi

log "booting $KVER ($ACCEL, $BOOT, ${CPUS} cpu, ${MEM}M), cwd $CWD"
t0=$(date +%s.%N)
timeout --foreground -k 5 "$TIMEOUT" "${QEMU[@]}" </dev/null >"$CTL/qemu.log" 2>&1 &
QPID=$!
tail -n +1 -s 0.2 -f --pid="$QPID" "$CTL/stdout" &
T1=$!
tail -n +1 -s 0.2 -f --pid="$QPID" "$CTL/stderr" >&2 &
T2=$!
TPIDS="$T1 $T2"
set +e
wait "$QPID"; qrc=$?
QPID=
wait $T1 $T2 2>/dev/null
TPIDS=
set -e
t1=$(date +%s.%N)

if [ -s "$CTL/t_userspace" ]; then
    boot=$(echo "$(cat "$CTL/t_userspace") - $t0" | bc 2>/dev/null || awk "BEGIN{print $(cat "$CTL/t_userspace") - $t0}")
else
    boot=?
fi
total=$(awk "BEGIN{printf \"%.2f\", $t1 - $t0}")
[ "$CONSOLE" = 1 ] && { echo "----- guest console -----" >&2; cat "$CTL/console.log" >&2; }
if [ -s "$CTL/rc" ]; then
    rc=$(cat "$CTL/rc")
    log "guest exit status $rc (boot-to-userspace ${boot}s, total ${total}s, accel $ACCEL)"
    exit "$rc"
fi
if [ "$qrc" = 124 ]; then
    echo "run-in-kernel: TIMEOUT after ${TIMEOUT}s" >&2
    tail -n 30 "$CTL/console.log" >&2 || true
    exit 124
fi
echo "run-in-kernel: guest died without exit status (qemu rc $qrc)" >&2
echo "----- qemu -----" >&2; cat "$CTL/qemu.log" >&2 || true
echo "----- console (tail) -----" >&2; tail -n 40 "$CTL/console.log" >&2 || true
exit 125
