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
#   --info           --setup-only, then print label=, kver=, pkg=, image=,
#                    config= (the kernel's config file) lines on stdout
#   --kernel VERSION RIK_KERNEL_VERSION: boot this Debian kernel, from the
#                    suites RIK_SUITES (default: bookworm bookworm-backports
#                    trixie trixie-backports) and the system's own Debian
#                    suites, through a private apt configuration in
#                    $RIK_CACHE/apt derived from the system's sources (same
#                    mirror, keyrings, apt.conf.d; the first use runs
#                    apt-get update there, suites the mirror lacks are left
#                    out). VERSION is an upstream version (6.12.95: the image
#                    whose Debian version is 6.12.95-*), a major.minor (6.12:
#                    the newest 6.12.x), a Debian ABI name (6.1.0-50,
#                    7.3.4+deb13) or a package name (linux-image-...). The
#                    choice is cached per VERSION ($RIK_CACHE/version/VERSION);
#                    a cached kernel boots without apt. Kernels >= 6.19 come
#                    as linux-image (empty) + linux-binary + linux-modules +
#                    linux-base; all are fetched.
#   --list-kernels   list the kernel images the private configuration offers
#   RIK_KERNEL_PKG   Debian kernel package to boot with the system's own apt
#                    configuration (default, without RIK_KERNEL_VERSION: what
#                    linux-image-amd64 depends on, resolved once and cached)
#   RIK_KERNEL / RIK_MODDIR  boot your own bzImage with modules from
#                    RIK_MODDIR/<version>/ instead of a Debian package
#   RIK_CACHE        cache directory (default: ~/.cache/cthelperd-kernel)
#   RIK_BOOT=bzimage boot the compressed bzImage via SeaBIOS instead of the
#                    extracted ELF vmlinux via PVH (PVH saves ~8 s under TCG;
#                    xz, gzip and zstd payloads are extracted)
#   RIK_CPU          -cpu model for KVM (default host)
#   RIK_CMDLINE      extra kernel command line (e.g. "loglevel=7")
#   RIK_KEEP=1       keep the per-run control dir (/tmp/rik.*: console.log,
#                    stdout, stderr, rc); RIK_TRACE=1 xtrace guest-init there
#   RIK_QUIET=1      no run-in-kernel: progress lines on stderr
#   RIK_BOOT_ATTEMPTS  boots tried when the guest kernel dies before user
#                    space (default 3; a death after that is never retried)
#
# Idempotent setup: apt-get installs qemu-system-x86 busybox-static cpio kmod
# iproute2 zstd if missing; the kernel .deb is fetched with `apt-get download` and
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
INFO=0
LIST_KERNELS=0
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
        --kernel) RIK_KERNEL_VERSION=$2; shift 2 ;;
        --info) INFO=1; SETUP_ONLY=1; shift ;;
        --list-kernels) LIST_KERNELS=1; SETUP_ONLY=1; shift ;;
        --) shift; break ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
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
command -v zstd >/dev/null || need_pkgs+=(zstd)   # >= 6.19 kernel images, .ko.zst
if [ ${#need_pkgs[@]} -gt 0 ]; then
    log "installing ${need_pkgs[*]}"
    apt_install "${need_pkgs[@]}" || die "apt-get install ${need_pkgs[*]} failed"
fi
# Not `grep -q`: it exits at the first match, busybox then dies of SIGPIPE and, with
# pipefail, the pipeline fails (seen once in CI under load).
/bin/busybox --list 2>/dev/null | grep -x switch_root >/dev/null || die "/bin/busybox has no switch_root (need busybox-static)"
PY=/usr/bin/python3; [ -x "$PY" ] || PY=python3

# ---------------------------------------------------------------- kernel
mkdir -p "$CACHE"
# Setting up a kernel (download, unpack, vmlinux, initramfs) is serialised per
# cache; the lock is released before the VM boots.
exec {SETUP_LOCK}>"$CACHE/.setup.lock"
flock "$SETUP_LOCK"

first_dir() { # first_dir DIR: the name of the first directory in DIR
    local d
    for d in "$1"/*/; do [ -d "$d" ] && { basename "$d"; return 0; }; done
}
first_file() { # first_file PATH...: the first that exists
    local f
    for f in "$@"; do [ -e "$f" ] && { echo "$f"; return 0; }; done
}

# fetch_pkg DIR PKG [APT-OPTION...]: apt-get download PKG and the packages of
# the same kernel ABI it depends on (>= 6.19: linux-binary-*, linux-modules-*,
# linux-base-*), unpack them all into DIR, depmod
fetch_pkg() {
    local kdir=$1 pkg=$2 abi kv dl deps f
    shift 2
    abi=${pkg#linux-image-}
    # shellcheck disable=SC2016 # awk program
    deps=$(apt-cache "$@" show --no-all-versions "$pkg" 2>/dev/null |
        awk -v s="-$abi" '/^Depends:/{sub(/^Depends:/, ""); n = split($0, d, /[,|]/)
            for (i = 1; i <= n; i++) { split(d[i], w, " "); x = w[1]
                if (x ~ /^linux-/ && length(x) > length(s) && substr(x, length(x) - length(s) + 1) == s) print x }
            exit}' | sort -u)
    log "downloading + unpacking $pkg${deps:+ (with ${deps//$'\n'/ })}"
    rm -rf "$kdir"
    # a world-writable temp dir so apt's _apt user can write there (no "unsandboxed" warning)
    dl=$(mktemp -d /tmp/cthelperd-kernel-dl.XXXXXX); chmod 777 "$dl"
    # shellcheck disable=SC2086
    ( cd "$dl" && apt-get "$@" download -q "$pkg" $deps >&2 ) || { rm -rf "$dl"; return 1; }
    mkdir -p "$kdir"
    for f in "$dl"/*.deb; do
        dpkg-deb -x "$f" "$kdir" || { rm -rf "$dl"; return 1; }
    done
    rm -rf "$dl"
    # merged-/usr packages (trixie+) ship usr/lib/modules
    [ -d "$kdir/lib/modules" ] || { mkdir -p "$kdir/lib"; ln -s ../usr/lib/modules "$kdir/lib/modules"; }
    kv=$(first_dir "$kdir/lib/modules")
    if [ -z "$kv" ] || [ ! -d "$kdir/lib/modules/$kv/kernel" ]; then log "$pkg: no modules in the package(s)"; return 1; fi
    depmod -b "$kdir" "$kv" || return 1
    touch "$kdir/.done"
}

# ---- RIK_KERNEL_VERSION: a private apt configuration in $CACHE/apt
# It is derived from the system's own sources (apt-get indextargets names the
# active entries): every Debian entry is copied as it is (URIs, Signed-By,
# components and all), and the first one of the main archive (a suite that is
# not -security) also gets the suites RIK_SUITES. Suites the mirror does not
# serve are dropped after the first update. The system's apt.conf.d applies.
RIK_SUITES=${RIK_SUITES:-bookworm bookworm-backports trixie trixie-backports}
APTDIR=$CACHE/apt
PAPT=(-o "Dir::Etc::sourcelist=$APTDIR/sources.list" -o "Dir::Etc::sourceparts=$APTDIR/sources.list.d"
    -o "Dir::Etc::preferences=$APTDIR/preferences" -o "Dir::Etc::preferencesparts=$APTDIR/preferences.d"
    -o "Dir::State=$APTDIR/state" -o "Dir::State::lists=$APTDIR/lists" -o "Dir::State::status=$APTDIR/status"
    -o "Dir::Cache=$APTDIR/cache" -o "Dir::Cache::archives=$APTDIR/archives"
    -o "Acquire::Languages=none" -o "APT::Sandbox::User=root"
    -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
    -o "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false"
    -o "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false"
    -o "Acquire::IndexTargets::deb::DEP-11-icons-hidpi::DefaultEnabled=false")
DEBIAN_SUITE_RE='^(buster|bullseye|bookworm|trixie|forky|duke|sid|oldoldstable|oldstable|stable|testing|unstable)(-|$)'

# private_sources SKIP: the private sources, in deb822 (.sources) and
# one-line (.list) form, on stdout as "FORMAT<TAB>TEXT" records, without the
# suites in SKIP
private_sources() {
    local skip=$1 entries
    # shellcheck disable=SC2016 # apt's format strings
    entries=$(apt-get indextargets --no-release-info --format '$(TARGET_OF) $(RELEASE) $(SOURCESENTRY)' \
        'Identifier: Packages' 2>/dev/null | awk -v re="$DEBIAN_SUITE_RE" '$1 == "deb" && $2 ~ re {print $3}' |
        awk '!seen[$0]++')
    [ -n "$entries" ] || return 1
    local e file idx added=0 suites
    for e in $entries; do
        file=${e%:*}; idx=${e##*:}
        case "$file" in
            *.sources)
                # stanza number idx of a deb822 file; its suites, then itself with the new suites
                suites=$(awk -v n="$idx" 'BEGIN{RS=""; FS="\n"} NR == n {
                    for (i = 1; i <= NF; i++) if ($i ~ /^Suites:/) { sub(/^Suites:[ \t]*/, "", $i); print $i } }' "$file")
                suites=$(new_suites "$suites" "$added" "$skip")
                [ -n "$suites" ] || continue
                case " $suites " in *-security\ *) ;; *) added=1 ;; esac
                printf 'sources\t'
                awk -v n="$idx" -v s="$suites" 'BEGIN{RS=""; FS="\n"} NR == n {
                    for (i = 1; i <= NF; i++) {
                        if ($i ~ /^#/) continue
                        if ($i ~ /^Suites:/) { print "Suites: " s; cont = 1; continue }
                        if (cont && $i ~ /^[ \t]/) continue
                        cont = 0; print $i } }' "$file" | tr '\n' '\001'
                echo ;;
            *)
                # one-line format: "deb [options] URI SUITE COMPONENTS..." on line idx
                local line pre rest s
                line=$(sed -n "${idx}p" "$file")
                if [[ $line =~ ^(deb[[:space:]]+(\[[^]]*\][[:space:]]+)?[^[:space:]]+)[[:space:]]+([^[:space:]]+)(.*)$ ]]; then
                    pre=${BASH_REMATCH[1]}; suites=${BASH_REMATCH[3]}; rest=${BASH_REMATCH[4]}
                    suites=$(new_suites "$suites" "$added" "$skip")
                    case " $suites " in *-security\ *) ;; *) [ -n "$suites" ] && added=1 ;; esac
                    for s in $suites; do printf 'list\t%s %s%s\n' "$pre" "$s" "$rest"; done
                fi ;;
        esac
    done
}
# new_suites SUITES ADDED SKIP: SUITES, plus RIK_SUITES if this is the first
# main-archive entry (ADDED=0), minus SKIP
new_suites() {
    local s out=() all=$1
    case " $1 " in *-security\ *) ;; *) [ "$2" = 0 ] && all="$1 $RIK_SUITES" ;; esac
    for s in $all; do
        case " $3 ${out[*]} " in *" $s "*) continue ;; esac
        out+=("$s")
    done
    echo "${out[*]}"
}
write_private_sources() { # write_private_sources SKIP
    local recs
    recs=$(private_sources "$1") || die "no Debian archive in the system's apt sources (apt-get indextargets)"
    mkdir -p "$APTDIR/sources.list.d" "$APTDIR/preferences.d" "$APTDIR/lists/partial" \
        "$APTDIR/archives/partial" "$APTDIR/state" "$APTDIR/cache"
    : >"$APTDIR/sources.list"; : >"$APTDIR/preferences"; [ -e "$APTDIR/status" ] || : >"$APTDIR/status"
    rm -f "$APTDIR/sources.list.d/rik.sources" "$APTDIR/sources.list.d/rik.list"
    sources_text "$recs" sources "$APTDIR/sources.list.d/rik.sources"
    sources_text "$recs" list "$APTDIR/sources.list.d/rik.list"
}
sources_text() { # sources_text RECORDS sources|list [FILE]: the records of one format (into FILE if any)
    local text
    text=$(printf '%s\n' "$1" | awk -F'\t' -v f="$2" '$1 == f {gsub(/\001/, "\n", $2); print $2 (f == "sources" ? "\n" : "")}')
    if [ -z "${3:-}" ]; then printf '%s\n' "$text"; elif [ -n "$text" ]; then printf '%s\n' "$text" >"$3"; fi
}
PRIVATE_UPDATED=0
private_update() { # apt-get update under the private configuration, once per run
    [ "$PRIVATE_UPDATED" = 1 ] && return 0
    PRIVATE_UPDATED=1
    local stamp served=() missing=() s
    write_private_sources ""
    stamp=$(private_sources_stamp)
    log "apt-get update (private configuration in $APTDIR: $RIK_SUITES and the system's Debian suites)"
    apt-get "${PAPT[@]}" update -q >&2 || log "apt-get update reported errors (a suite the mirror does not serve?)"
    for s in $(private_sources "" | awk -F'\t' '$1 == "list" {sub(/\[[^]]*\][ \t]*/, "", $2); split($2, w, " "); print w[3]}
            $1 == "sources" {n = split($2, l, "\001"); for (i = 1; i <= n; i++) if (l[i] ~ /^Suites:/) {
                sub(/^Suites:[ \t]*/, "", l[i]); print l[i] } }' | tr ' ' '\n' | awk 'NF && !seen[$0]++'); do
        if compgen -G "$APTDIR/lists/*_dists_${s}_*Release" >/dev/null; then served+=("$s"); else missing+=("$s"); fi
    done
    [ ${#served[@]} -gt 0 ] || die "the mirror serves none of the suites (see apt-get's errors above)"
    if [ ${#missing[@]} -gt 0 ]; then
        log "suites not served, left out: ${missing[*]}"
        write_private_sources "${missing[*]}"
    fi
    echo "$stamp" >"$APTDIR/sources.stamp"
    log "suites: ${served[*]}"
}
private_ready() { # lists present and made from today's system sources
    local stamp
    [ -s "$APTDIR/sources.stamp" ] && compgen -G "$APTDIR/lists/*_Packages*" >/dev/null || return 1
    stamp=$(private_sources_stamp)
    [ "$stamp" = "$(cat "$APTDIR/sources.stamp")" ]
}
private_sources_stamp() { # of the unfiltered private sources, and the suites asked for
    { private_sources "" || echo none; echo "$RIK_SUITES"; } | md5sum | cut -c1-32
}
# kernel_list: "UPSTREAM-VERSION DEBIAN-VERSION PACKAGE" of every amd64 kernel
# image the private configuration offers (not -cloud, -rt, -dbg, -unsigned,
# nor meta packages such as linux-image-6.12-amd64)
kernel_list() {
    local names
    names=$(apt-cache "${PAPT[@]}" pkgnames linux-image- 2>/dev/null |
        grep -E '^linux-image-[0-9]+\.[0-9]+\.[0-9]+[^ ]*-amd64$' | grep -v -E -- '-(cloud|rt)-amd64$' | sort)
    [ -n "$names" ] || return 0
    # shellcheck disable=SC2086
    apt-cache "${PAPT[@]}" show $names 2>/dev/null |
        awk '/^Package:/{p = $2} /^Version:/{v = $2; u = v; sub(/-[^-]*$/, "", u); print u, v, p}' |
        sort -u | sort -V
}
# resolve_version VERSION: the image package for VERSION, or nothing.
#   6.12.95            upstream version: the package whose Debian version is 6.12.95-*
#                      (the newest such, if several)
#   6.12               the newest 6.12.x
#   6.1.0-50, 7.3.4+deb13, 6.1.0-50-amd64   Debian ABI name: linux-image-<abi>[-amd64]
#   linux-image-...    that package
resolve_version() {
    local v=$1 c best='' bestv='' u dv p
    case "$v" in
        linux-image-*) set -- "$v" ;;
        *-amd64) set -- "linux-image-$v" ;;
        *) set -- "linux-image-$v-amd64" ;;
    esac
    for c in "$@"; do
        if apt-cache "${PAPT[@]}" policy "$c" 2>/dev/null | grep 'Candidate: [0-9]' >/dev/null; then echo "$c"; return 0; fi
    done
    [[ $v =~ ^[0-9]+\.[0-9]+(\.[0-9]+)?$ ]] || return 0
    while read -r u dv p; do
        if [ "$u" = "$v" ] || [[ $u == "$v".* && $v != *.*.* ]]; then
            if [ -z "$best" ] || dpkg --compare-versions "$dv" gt "$bestv"; then best=$p; bestv=$dv; fi
        fi
    done < <(kernel_list)
    echo "$best"
}

if [ "$LIST_KERNELS" = 1 ]; then
    private_ready || private_update
    printf '%-12s %-24s %s\n' upstream debian-version package
    kernel_list | while read -r u dv p; do printf '%-12s %-24s %s\n' "$u" "$dv" "$p"; done
    exit 0
fi

KCONFIG=
KLABEL=
if [ -n "${RIK_KERNEL:-}" ]; then
    KIMG=$RIK_KERNEL
    MODROOT=${RIK_MODDIR:?RIK_MODDIR must be set with RIK_KERNEL}
    KVER=${RIK_KVER:-$(first_dir "$MODROOT")}
    KLABEL=$KVER
elif [ -n "${RIK_KERNEL_VERSION:-}" ]; then
    KLABEL=$RIK_KERNEL_VERSION
    case "$RIK_KERNEL_VERSION" in */*|*..*|.*) die "bad RIK_KERNEL_VERSION $RIK_KERNEL_VERSION" ;; esac
    vmap=$CACHE/version/$RIK_KERNEL_VERSION
    pkg=
    [ -s "$vmap" ] && pkg=$(cat "$vmap")
    if [ -z "$pkg" ] || [ ! -e "$CACHE/$pkg/.done" ]; then
        private_ready || private_update
        pkg=$(resolve_version "$RIK_KERNEL_VERSION")
        if [ -z "$pkg" ] && [ "$PRIVATE_UPDATED" = 0 ]; then private_update; pkg=$(resolve_version "$RIK_KERNEL_VERSION"); fi
        if [ -z "$pkg" ]; then
            mm=$(echo "$RIK_KERNEL_VERSION" | grep -o -E '^[0-9]+\.[0-9]+' || true)
            echo "run-in-kernel: available${mm:+ $mm.x}: $(kernel_list | awk -v m="$mm." 'm == "." || index($1, m) == 1 {print $1}' | tr '\n' ' ')" >&2
            die "no Debian kernel package for version $RIK_KERNEL_VERSION (suites: $RIK_SUITES and the system's own; run-in-kernel.sh --list-kernels)"
        fi
        if [ ! -e "$CACHE/$pkg/.done" ]; then
            if ! fetch_pkg "$CACHE/$pkg" "$pkg" "${PAPT[@]}"; then
                [ "$PRIVATE_UPDATED" = 1 ] && die "apt-get download $pkg failed"
                private_update   # stale lists: the package moved or left the archive
                pkg=$(resolve_version "$RIK_KERNEL_VERSION")
                [ -n "$pkg" ] || die "no Debian kernel package for version $RIK_KERNEL_VERSION"
                fetch_pkg "$CACHE/$pkg" "$pkg" "${PAPT[@]}" || die "apt-get download $pkg failed"
            fi
        fi
        mkdir -p "$CACHE/version"; echo "$pkg" >"$vmap"
    fi
    KDIR=$CACHE/$pkg
    RIK_KERNEL_PKG=$pkg
else
    resolve_pkg() { apt-cache depends linux-image-amd64 2>/dev/null |
        awk '/Depends: linux-image-[0-9]/{print $2; exit}'; }
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
        if ! fetch_pkg "$KDIR" "$RIK_KERNEL_PKG"; then
            # stale package lists, or the cached ABI name left the archive
            apt_update || true
            if [ -z "$PINNED" ]; then
                RIK_KERNEL_PKG=$(resolve_pkg)
                [ -n "$RIK_KERNEL_PKG" ] || die "cannot resolve linux-image-amd64"
                echo "$RIK_KERNEL_PKG" >"$CACHE/kernel.pkg"
                KDIR=$CACHE/$RIK_KERNEL_PKG
            fi
            fetch_pkg "$KDIR" "$RIK_KERNEL_PKG" || die "apt-get download $RIK_KERNEL_PKG failed"
        fi
    fi
fi
if [ -z "${RIK_KERNEL:-}" ]; then
    KVER=$(first_dir "$KDIR/lib/modules")
    # <= 6.18: boot/vmlinuz-KVER, boot/config-KVER; >= 6.19 (linux-binary-*,
    # linux-base-*): lib/modules/KVER/vmlinuz, lib/modules/KVER/config
    KIMG=$(first_file "$KDIR/boot/vmlinuz-$KVER" "$KDIR/lib/modules/$KVER/vmlinuz" "$KDIR"/boot/vmlinuz-*)
    KCONFIG=$(first_file "$KDIR/boot/config-$KVER" "$KDIR/lib/modules/$KVER/config" "$KDIR"/boot/config-*)
    KLABEL=${KLABEL:-$KVER}
    MODROOT=$KDIR/lib/modules
fi
[ -n "$KCONFIG" ] && KCONFIG=$(readlink -f "$KCONFIG")
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
    while read -r ko; do
        # trixie+ kernels ship .ko.xz (>= 6.19 maybe .ko.zst): unpack here, so
        # that busybox's insmod needs no decompressor
        b=$(basename "$ko")
        case "$ko" in
            *.ko.xz) b=${b%.xz}; /bin/busybox xzcat "$ko" >"$t/mods/$b" ;;
            *.ko.gz) b=${b%.gz}; /bin/busybox zcat "$ko" >"$t/mods/$b" ;;
            *.ko.zst) b=${b%.zst}; zstd -dcq "$ko" >"$t/mods/$b" ;;
            *) cp "$ko" "$t/mods/" ;;
        esac || die "cannot unpack $ko"
        echo "$b" >>"$t/modules.list"
    done < <(for m in virtio_pci 9pnet_virtio 9p overlay; do
        modprobe -d "$(dirname "$(dirname "$MODROOT")")" -S "$KVER" --show-depends "$m" 2>/dev/null |
            awk '$1=="insmod"{print $2}'
    done | awk '!seen[$0]++')
    [ -s "$t/modules.list" ] || die "could not resolve 9p/virtio modules in $MODROOT/$KVER (built in? then fine)"
    ( cd "$t" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1 ) >"$INITRD.tmp"
    mv "$INITRD.tmp" "$INITRD"; echo "$stamp" >"$INITRD.stamp"
    rm -rf "$t"; trap - EXIT
fi
if [ "$INFO" = 1 ]; then
    # what run.sh needs to know about the kernel it is about to boot
    printf 'label=%s\nkver=%s\npkg=%s\nimage=%s\nconfig=%s\n' \
        "$KLABEL" "$KVER" "${RIK_KERNEL_PKG:-}" "$KIMG" "$KCONFIG"
fi
[ "$SETUP_ONLY" = 1 ] && { log "setup ok: kernel $KVER ($KIMG)"; exit 0; }
exec {SETUP_LOCK}>&-   # not held by the VM

# ---------------------------------------------------------------- per-run control dir
CTL=$(mktemp -d /tmp/rik.XXXXXX)
QPID=
# shellcheck disable=SC2317 # called by the trap
cleanup() {
    if [ -n "$QPID" ]; then kill "$QPID" 2>/dev/null || true; fi
    # shellcheck disable=SC2086 # a list of pids
    if [ -n "${TPIDS:-}" ]; then kill $TPIDS 2>/dev/null || true; fi
    if [ "${RIK_KEEP:-0}" = 1 ]; then log "kept $CTL"; else rm -rf "$CTL"; fi
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
# shellcheck disable=SC2054 # qemu's commas
case "$ACCEL" in
    kvm) ACCEL_ARGS=(-accel kvm -cpu "${RIK_CPU:-host}") ;;
    tcg) ACCEL_ARGS=(-accel tcg,thread=multi -cpu max) ;;
    *) die "bad accel $ACCEL" ;;
esac

CMDLINE="console=ttyS0 quiet loglevel=4 panic=-1 rdinit=/init tsc=reliable no_timer_check
 i8042.noaux i8042.nomux i8042.nopnp i8042.nokbd mitigations=off ${RIK_CMDLINE:-}"
# shellcheck disable=SC2086,SC2116 # one line, single spaces
CMDLINE=$(echo $CMDLINE)

# shellcheck disable=SC2054 # qemu's commas
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
    # shellcheck disable=SC2054 # qemu's commas
    QEMU+=(-fsdev local,id=fscwd,path="$CWD",security_model=passthrough,multidevs=remap
        -device virtio-9p-pci,fsdev=fscwd,mount_tag=rikcwd)
fi

# A guest kernel that dies before it reaches user space has not run the test:
# under TCG with several vCPUs, boot-time code patching occasionally oopses
# (seen once on 7.3.4: "Oops: int3" in sched_clock_cpu, then a panic, ~1.8 s in).
# Boot again then, at most RIK_BOOT_ATTEMPTS times; a guest that reached
# user space and then died is a failure, never retried.
ATTEMPTS=${RIK_BOOT_ATTEMPTS:-3}
attempt=1
while :; do
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
    if [ -s "$CTL/rc" ] || [ -e "$CTL/t_userspace" ] || [ "$qrc" = 124 ] ||
        [ "$attempt" -ge "$ATTEMPTS" ]; then
        break
    fi
    echo "run-in-kernel: guest kernel died before user space (qemu rc $qrc, attempt $attempt of $ATTEMPTS); console tail:" >&2
    grep -m 3 -E 'Oops|BUG|panic' "$CTL/console.log" >&2 || tail -n 5 "$CTL/console.log" >&2 || true
    attempt=$((attempt + 1))
    : >"$CTL/console.log"
done
t1=$(date +%s.%N)

if [ -s "$CTL/t_userspace" ]; then
    boot=$(echo "$(cat "$CTL/t_userspace") - $t0" | bc 2>/dev/null || awk "BEGIN{print $(cat "$CTL/t_userspace") - $t0}")
else
    boot='?'
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
