#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# bench/ftp-bench.sh — host entry of the FTP helper benchmark (NOT a test: it
# measures and prints, it asserts nothing about the numbers).
#
#   bench/ftp-bench.sh
#
# Builds cthelperd as it ships: a static musl binary of the router build
# (openwrt/router-build.mk; cross/build.sh x86_64-unknown-linux-musl, stripped);
# BENCH_BINARY=glibc benchmarks the ordinary `cargo build --release` binary
# instead (dynamically linked against glibc). BENCH_BIN=FILE benchmarks a binary
# built elsewhere instead (e.g. cross/build.sh in a `git archive` export of a
# commit, when the work tree has changes that are not to be measured; FILE
# must be visible in the VM, e.g. under target/), with BENCH_REV naming it and
# BENCH_BINARY_KIND describing it. Then installs the Debian packages
# the guest needs (as tests/kernel/run.sh does), then boots ONE VM
# (tests/kernel/run-in-kernel.sh: Debian's 6.1 kernel under qemu on the host
# filesystem) that runs bench/ftp-bench-guest.sh: the same FTP workloads
# through cthelperd, through conntrackd 1.4.7 in helper mode and through the
# kernel's nf_conntrack_ftp, one after the other, plus a router without any
# helper as the baseline of the round-trip and bulk figures. Prints a markdown
# table and writes it to bench/results/ftp-bench.md; raw logs go to
# bench/results/*.log.
# Environment: BENCH_CPUS (2), BENCH_MEM (1024), BENCH_TIMEOUT (900 s), the
# workload sizes NOOP_CONNS NOOP_COUNT PASV_CONNS PASV_COUNT IDLE_CONNS
# LAT_COUNT LAT_BLOCKS BULK_MB BULK_REPS SESS_SEQ SESS_PAR SESS_PAR_N
# SESS_SIZE SESS_WARM SESS_REPS RESTART_REPS BENCH_OUT and SYSTEMS / DAEMONS (see
# ftp-bench-guest.sh), and run-in-kernel.sh's RIK_*.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "ftp-bench.sh: must run as root (apt-get, qemu 9p passthrough)" >&2; exit 2; }
cd "$REPO" || exit 2

# ---------------------------------------------------------------- build
if [ -n "${BENCH_BIN:-}" ]; then
    BIN=$(readlink -f "$BENCH_BIN")
    STRIPPED=$BIN
    [ -x "$BIN" ] || { echo "ftp-bench.sh: BENCH_BIN $BENCH_BIN is not an executable" >&2; exit 2; }
elif [ "${BENCH_BINARY:-static}" = glibc ]; then
    cargo build --release || { echo "ftp-bench.sh: cargo build --release failed" >&2; exit 2; }
    BIN=$REPO/target/release/cthelperd
    STRIPPED=$REPO/target/release/cthelperd.stripped
    strip -o "$STRIPPED" "$BIN" || { echo "ftp-bench.sh: strip failed" >&2; exit 2; }
else
    cross/build.sh x86_64-unknown-linux-musl || { echo "ftp-bench.sh: static build failed" >&2; exit 2; }
    BIN=$REPO/cross/out/bin/x86_64-unknown-linux-musl/cthelperd
    STRIPPED=$BIN
fi

# ---------------------------------------------------------------- guest-side tools (idempotent, like run.sh)
pkgs=(nftables conntrack nfct conntrackd python3 iproute2 binutils)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    echo "ftp-bench.sh: apt-get install ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    { apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 ||
        { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; }; } ||
        { echo "ftp-bench.sh: cannot install ${missing[*]}" >&2; exit 2; }
fi
"$REPO/tests/kernel/run-in-kernel.sh" --setup-only || exit 2

# ---------------------------------------------------------------- sizes (for the guest's table)
# libs FILE: "count bytes names" of its shared libraries other than libc and
# ld.so (every program needs those)
libs() {
    ldd "$1" | awk '$3 ~ /^\// { print $1, $3 }' | grep -Ev '^(libc\.so|ld-linux)' |
        while read -r soname path; do echo "$soname $(stat -L -c %s "$path")"; done |
        awk '{ n++; s += $2; names = names (names ? ", " : "") $1 } END { print n + 0, s + 0, names }'
}
mkdir -p "$HERE/results"
{
    printf 'SIZE_CTHELPERD=%q\n' "$(stat -c %s "$STRIPPED")"
    printf 'SIZE_CTHELPERD_UNSTRIPPED=%q\n' "$(stat -c %s "$BIN")"
    read -r n b names < <(libs "$BIN")
    printf 'SIZE_CTHELPERD_NLIBS=%q\nSIZE_CTHELPERD_LIBS=%q\nSIZE_CTHELPERD_LIBNAMES=%q\n' "$n" "$b" "$names"
    printf 'SIZE_CONNTRACKD=%q\n' "$(stat -c %s /usr/sbin/conntrackd)"
    # conntrackd dlopen()s its FTP helper from a plugin
    printf 'SIZE_CONNTRACKD_PLUGIN=%q\n' "$(stat -c %s /usr/lib/x86_64-linux-gnu/conntrack-tools/ct_helper_ftp.so)"
    read -r n b names < <(libs /usr/sbin/conntrackd)
    printf 'SIZE_CONNTRACKD_NLIBS=%q\nSIZE_CONNTRACKD_LIBS=%q\nSIZE_CONNTRACKD_LIBNAMES=%q\n' "$n" "$b" "$names"
} >"$HERE/results/sizes.log"

# how run-in-kernel.sh will run the guest (for the table's header only)
accel=${RIK_ACCEL:-auto}
if [ "$accel" = auto ]; then
    if [ -d /sys/module/kvm_pvm ] || [ ! -w /dev/kvm ]; then accel=tcg; else accel=kvm; fi
fi

# ---------------------------------------------------------------- run
if [ -n "${BENCH_BIN:-}" ]; then
    kind=${BENCH_BINARY_KIND:-binary $BIN}
elif [ "${BENCH_BINARY:-static}" = glibc ]; then
    kind="release build, dynamically linked (glibc)"
else
    kind="static musl binary (router build of openwrt/router-build.mk, as shipped)"
fi
envs=(--env "BENCH_BINARY_KIND=$kind" --env "REPO=$REPO" --env "CTHELPERD_BIN=$BIN" --env "CTHELPERD_STRIPPED=$STRIPPED"
    --env "BENCH_REV=${BENCH_REV:-$(git describe --always --dirty 2>/dev/null || echo '?')}" --env "BENCH_ACCEL=$accel"
    --env "BENCH_HOST_LOAD=$(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg) when the VM started")
for v in NOOP_CONNS NOOP_COUNT PASV_CONNS PASV_COUNT IDLE_CONNS LAT_COUNT LAT_BLOCKS BULK_MB BULK_REPS \
    SESS_SEQ SESS_PAR SESS_PAR_N SESS_SIZE SESS_WARM SESS_REPS RESTART_REPS SYSTEMS DAEMONS BENCH_OUT; do
    [ -n "${!v:-}" ] && envs+=(--env "$v=${!v}")
done
t0=${EPOCHREALTIME/./}
"$REPO/tests/kernel/run-in-kernel.sh" --cpus "${BENCH_CPUS:-2}" --mem "${BENCH_MEM:-1024}" \
    --timeout "${BENCH_TIMEOUT:-900}" "${envs[@]}" bash "$HERE/ftp-bench-guest.sh" |
    tee "$HERE/results/output.log"
rc=${PIPESTATUS[0]}
d=$((${EPOCHREALTIME/./} - t0))
echo "ftp-bench.sh: VM run took $((d / 1000000)).$(((d / 100000) % 10))s, exit $rc; host load average now $(cut -d' ' -f1-3 /proc/loadavg)" >&2
if [ -s "$HERE/results/ftp-bench.md" ] && [ "$HERE/results/ftp-bench.md" -nt "$HERE/results/sizes.log" ]; then
    # the guest knows the host's load only when the VM started
    printf '\nHost load average when the VM had finished (%s s later): %s.\n' "$((d / 1000000))" \
        "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$HERE/results/ftp-bench.md"
    echo "ftp-bench.sh: table in bench/results/ftp-bench.md" >&2
fi
exit "$rc"
