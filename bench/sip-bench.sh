#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# bench/sip-bench.sh — host entry of the SIP helper benchmark (NOT a test: it
# measures and prints, it asserts nothing about the numbers).
#
#   bench/sip-bench.sh
#
# Builds cthelperd as it ships: a static musl binary of the router build
# (openwrt/router-build.mk; cross/build.sh x86_64-unknown-linux-musl, stripped);
# BENCH_BINARY=glibc benchmarks the ordinary `cargo build --release` binary
# instead. Then installs the Debian packages the guest needs (sip-tester for
# sipp, nftables, conntrack, nfct), then boots ONE VM
# (tests/kernel/run-in-kernel.sh: Debian's 6.1 kernel under qemu on the host
# filesystem) that runs bench/sip-bench-guest.sh: SIP calls (sipp UAC -> router
# -> sipp UAS) through cthelperd's sip helper and through the kernel's own
# nf_conntrack_sip in alternating rounds, then the daemon's memory with 1 to
# 1,000 registered phones. Prints a markdown table and writes it to
# bench/results/sip-bench.md; raw logs go to bench/results/sip-*.log.
# conntrackd is not in it: it has no SIP helper.
# Environment: BENCH_CPUS (2), BENCH_MEM (1024), BENCH_TIMEOUT (1800 s),
# BENCH_REV (default: git describe of this tree), the workload sizes ROUNDS
# MODES CALLS_SEQ CALLS_CONC CONC WARMUP PHONES PHONE_RATE (see
# sip-bench-guest.sh), and run-in-kernel.sh's RIK_*.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "sip-bench.sh: must run as root (apt-get, qemu 9p passthrough)" >&2; exit 2; }
cd "$REPO" || exit 2

# ---------------------------------------------------------------- build
if [ "${BENCH_BINARY:-static}" = glibc ]; then
    cargo build --release || { echo "sip-bench.sh: cargo build --release failed" >&2; exit 2; }
    BIN=$REPO/target/release/cthelperd
    kind="release build, dynamically linked (glibc)"
else
    cross/build.sh x86_64-unknown-linux-musl || { echo "sip-bench.sh: static build failed" >&2; exit 2; }
    BIN=$REPO/cross/out/bin/x86_64-unknown-linux-musl/cthelperd
    kind="static musl binary (router build of openwrt/router-build.mk, as shipped)"
fi

# ---------------------------------------------------------------- guest-side tools (idempotent, like run.sh)
pkgs=(nftables conntrack nfct iproute2 kmod sip-tester)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    echo "sip-bench.sh: apt-get install ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    { apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 ||
        { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; }; } ||
        { echo "sip-bench.sh: cannot install ${missing[*]}" >&2; exit 2; }
fi
"$REPO/tests/kernel/run-in-kernel.sh" --setup-only || exit 2

# how run-in-kernel.sh will run the guest (for the table's header only)
accel=${RIK_ACCEL:-auto}
if [ "$accel" = auto ]; then
    if [ -d /sys/module/kvm_pvm ] || [ ! -w /dev/kvm ]; then accel=tcg; else accel=kvm; fi
fi

# ---------------------------------------------------------------- run
mkdir -p "$HERE/results"
rev=${BENCH_REV:-$(git describe --always --dirty 2>/dev/null || echo '?')}
envs=(--env "BENCH_BINARY_KIND=$kind" --env "REPO=$REPO" --env "CTHELPERD_BIN=$BIN"
    --env "BENCH_REV=$rev" --env "BENCH_ACCEL=$accel")
for v in ROUNDS MODES CALLS_SEQ CALLS_CONC CONC WARMUP PHONES PHONE_RATE; do
    [ -n "${!v:-}" ] && envs+=(--env "$v=${!v}")
done
t0=${EPOCHREALTIME/./}
"$REPO/tests/kernel/run-in-kernel.sh" --cpus "${BENCH_CPUS:-2}" --mem "${BENCH_MEM:-1024}" \
    --timeout "${BENCH_TIMEOUT:-1800}" "${envs[@]}" bash "$HERE/sip-bench-guest.sh" |
    tee "$HERE/results/sip-output.log"
rc=${PIPESTATUS[0]}
d=$((${EPOCHREALTIME/./} - t0))
echo "sip-bench.sh: VM run took $((d / 1000000)).$(((d / 100000) % 10))s, exit $rc" >&2
[ -s "$HERE/results/sip-bench.md" ] && echo "sip-bench.sh: table in bench/results/sip-bench.md" >&2
exit "$rc"
