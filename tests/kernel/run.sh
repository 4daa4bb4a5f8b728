#!/bin/bash
# tests/kernel/run.sh — host entry for the real-kernel scenarios.
#
#   tests/kernel/run.sh [--reference conntrackd] [--kernel VERSION[,VERSION...]]...
#                       [--matrix] [scenario...]
#
# Scenarios are the guest scripts tests/kernel/<name>.sh listed in SCENARIOS
# below (default: all). Each one runs in its own freshly booted VM
# (run-in-kernel.sh: Debian's 6.1 kernel under qemu, host filesystem).
# --kernel VERSION (repeatable, or a comma/space separated list; KERNELS=...)
# runs every scenario on each of those Debian kernels instead
# (run-in-kernel.sh --kernel: 6.12.95, 6.12, 6.1.0-50, 7.3.4+deb13, ...);
# --matrix on each kernel pinned in tests/kernel/kernels.txt. Before a
# kernel's scenarios it prints the kernel (version, package, ABI) and the
# kernel config symbols that matter (KCONFIG_SYMS); after them one summary line
# per kernel.
# Builds nothing: the daemon is $CTHELPERD (default target/debug/cthelperd,
# relative to the repository root). --reference conntrackd (or
# REFERENCE=conntrackd) runs the scenarios against Debian's conntrackd instead.
# Installs the guest-side tools with apt-get if missing (a scenario may name
# extra Debian packages in a header line "# packages: a b c"). Prints the guest's
# per-check lines and finally "N passed, M failed"; exits non-zero on any
# failure (or if a VM could not run a scenario to its end).
# Logs: tests/kernel/results/<scenario>[-<reference>]/, with --kernel
# tests/kernel/results/<kernel>/<scenario>[-<reference>]/ (<kernel> as given;
# a private .../<scenario>.XXXXXX/ if another run holds that one); each
# output.log starts with the kernel lines.
# Environment: KERNEL_TEST_TIMEOUT (per VM, default 600 s), and run-in-kernel.sh's RIK_*.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
SCENARIOS=(ftp tftp openwrt nat nat-table sip sip-nat faults)
REFERENCE=${REFERENCE:-}
# the kernel config symbols printed for each kernel (=y, =m, or "unset")
KCONFIG_SYMS=(NF_CONNTRACK NF_CT_NETLINK NF_CT_NETLINK_HELPER NETFILTER_NETLINK_QUEUE
    NETFILTER_NETLINK_GLUE_CT NF_CONNTRACK_EVENTS NF_CONNTRACK_LABELS NF_NAT NF_TABLES NFT_CT
    NFT_QUEUE NF_CONNTRACK_FTP NF_CONNTRACK_TFTP NF_CONNTRACK_SIP NF_NAT_FTP)

want=()
kernels=()
add_kernels() { local k; for k in ${1//,/ }; do kernels+=("$k"); done; }
# the pinned kernels: tests/kernel/kernels.txt, one version a line, # comments
pinned_kernels() { sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' "$HERE/kernels.txt"; }
[ -n "${KERNELS:-}" ] && add_kernels "$KERNELS"
while [ $# -gt 0 ]; do
    case "$1" in
        --reference) REFERENCE=$2; shift 2 ;;
        --reference=*) REFERENCE=${1#*=}; shift ;;
        --kernel) add_kernels "$2"; shift 2 ;;
        --kernel=*) add_kernels "${1#*=}"; shift ;;
        --matrix) add_kernels "$(pinned_kernels | tr '\n' ' ')"; shift ;;
        -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d'; exit 0 ;;
        -*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
        *) want+=("$1"); shift ;;
    esac
done
[ ${#want[@]} -gt 0 ] || want=("${SCENARIOS[@]}")
for k in "${kernels[@]+"${kernels[@]}"}"; do
    case "$k" in */*|.*|-*) echo "run.sh: bad kernel version $k" >&2; exit 2 ;; esac
done
for s in "${want[@]}"; do
    [ -f "$HERE/$s.sh" ] || { echo "run.sh: no scenario $s ($HERE/$s.sh)" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "run.sh: must run as root (apt-get, qemu 9p passthrough)" >&2; exit 2; }

if [ -z "$REFERENCE" ]; then
    CTHELPERD=${CTHELPERD:-target/debug/cthelperd}
    case "$CTHELPERD" in /*) ;; *) CTHELPERD=$REPO/$CTHELPERD ;; esac
    [ -x "$CTHELPERD" ] || { echo "run.sh: no daemon binary at $CTHELPERD (cargo build first, or set CTHELPERD)" >&2; exit 2; }
fi

# ---------------------------------------------------------------- guest-side tools (idempotent)
pkgs=(nftables conntrack nfct python3-pyftpdlib curl iproute2 tftpd-hpa)
[ "$REFERENCE" = conntrackd ] && pkgs+=(conntrackd)
for s in "${want[@]}"; do
    # shellcheck disable=SC2207
    pkgs+=($(sed -n 's/^# packages:[[:space:]]*//p' "$HERE/$s.sh"))
done
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    echo "run.sh: apt-get install ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    { apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 ||
        { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; }; } ||
        { echo "run.sh: cannot install ${missing[*]}" >&2; exit 2; }
fi

secs() { printf '%d.%d' $(($1 / 1000000)) $(( ($1 / 100000) % 10 )); }
# kernel_info [VERSION]: set up the kernel (download, unpack, initramfs) and
# set K_KVER K_PKG K_CONFIG from run-in-kernel.sh --info
kernel_info() {
    local info key val
    K_KVER=; K_PKG=; K_CONFIG=
    info=$("$HERE/run-in-kernel.sh" --info ${1:+--kernel "$1"}) || return 1
    while IFS='=' read -r key val; do
        case "$key" in
            kver) K_KVER=$val ;; pkg) K_PKG=$val ;; config) K_CONFIG=$val ;;
        esac
    done <<<"$info"
    [ -n "$K_KVER" ]
}
# kernel_lines: the kernel and its config symbols, for the log and output.log
kernel_lines() {
    local sym v set=() unset=()
    echo "kernel: ${kernel:-default} = $K_KVER (${K_PKG:-own build})"
    if [ -n "$K_CONFIG" ] && [ -r "$K_CONFIG" ]; then
        for sym in "${KCONFIG_SYMS[@]}"; do
            v=$(sed -n "s/^CONFIG_$sym=//p" "$K_CONFIG")
            if [ -n "$v" ]; then set+=("CONFIG_$sym=$v"); else unset+=("CONFIG_$sym"); fi
        done
        echo "kernel config: ${set[*]}"
        [ ${#unset[@]} -eq 0 ] || echo "kernel config not set: ${unset[*]}"
    else
        echo "kernel config: no config file"
    fi
}

# ---------------------------------------------------------------- run
# run_scenario NAME: one scenario in its own VM on $kernel; adds to the counts
run_scenario() {
    local s=$1 results lock_fd='' t0 envs rc d line p f
    results=$base/$s${REFERENCE:+-$REFERENCE}
    mkdir -p "$base"
    # Concurrent runs of the same scenario (several engineers, the demo, CI)
    # must not share a results directory: the first one gets the usual
    # directory, the others a private one.
    exec {lock_fd}>"$results.lock"
    if ! flock -n "$lock_fd"; then
        exec {lock_fd}>&-; lock_fd=
        results=$(mktemp -d "$results.XXXXXX")
        echo "run.sh: $base/$s${REFERENCE:+-$REFERENCE} is in use by another run; results in $results" >&2
    fi
    mkdir -p "$results"
    echo "run.sh: === scenario $s (${REFERENCE:-cthelperd}${kernel:+, kernel $kernel}) ===" >&2
    t0=${EPOCHREALTIME/./}
    envs=(--env "REPO=$REPO" --env "RESULTS=$results" --env "KCONFIG=$K_CONFIG" --env "REFERENCE=$REFERENCE")
    [ -z "$REFERENCE" ] && envs+=(--env "CTHELPERD=$CTHELPERD")
    [ -n "${HELPER_RULES:-}" ] && envs+=(--env "HELPER_RULES=$HELPER_RULES")
    printf '%s\n' "$KLINES" >"$results/output.log"
    "$HERE/run-in-kernel.sh" --timeout "${KERNEL_TEST_TIMEOUT:-600}" ${kernel:+--kernel "$kernel"} "${envs[@]}" \
        bash "$HERE/$s.sh" | tee -a "$results/output.log"
    rc=${PIPESTATUS[0]}
    d=$((${EPOCHREALTIME/./} - t0))
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$results/output.log" | tail -n1)
    if [ -n "$line" ]; then
        p=${line%% passed*}; f=${line#*, }; f=${f%% failed}
    else
        p=0; f=1
        echo "run.sh: scenario $s did not finish (exit $rc)" >&2
    fi
    # a scenario that reports no failures but exits non-zero still fails
    [ "$f" = 0 ] && [ "$rc" != 0 ] && f=1
    total_pass=$((total_pass + p)); total_fail=$((total_fail + f))
    k_pass=$((k_pass + p)); k_fail=$((k_fail + f))
    [ -n "$lock_fd" ] && exec {lock_fd}>&-
    echo "run.sh: scenario $s${kernel:+ on $kernel}: $p passed, $f failed, exit $rc, $(secs "$d")s" >&2
}

# run_kernel VERSION|"": every wanted scenario on that kernel ("": the default
# kernel, results in today's paths)
run_kernel() {
    local t_kernel=${EPOCHREALTIME/./} s d
    kernel=$1 k_pass=0 k_fail=0
    if [ -n "$kernel" ]; then
        echo "run.sh: ===== kernel $kernel =====" >&2
        base=$REPO/tests/kernel/results/$kernel
    else
        base=$REPO/tests/kernel/results
    fi
    if ! kernel_info "$kernel"; then
        echo "run.sh: kernel ${kernel:-default}: setup failed, its scenarios not run" >&2
        total_fail=$((total_fail + 1))
        summaries+=("kernel ${kernel:-default}: setup failed, 1 failed")
        return 1
    fi
    KLINES=$(kernel_lines)
    printf 'run.sh: %s\n' "${KLINES//$'\n'/$'\n'run.sh: }" >&2
    for s in "${want[@]}"; do run_scenario "$s"; done
    d=$((${EPOCHREALTIME/./} - t_kernel))
    summaries+=("kernel ${kernel:-default} = $K_KVER: $k_pass passed, $k_fail failed, $(secs "$d")s")
    [ -z "$kernel" ] || echo "run.sh: ${summaries[-1]}" >&2
}

cd "$REPO" || exit 2
total_pass=0; total_fail=0; t_all=${EPOCHREALTIME/./}
summaries=()
if [ ${#kernels[@]} -eq 0 ]; then
    run_kernel "" || exit 2
else
    for k in "${kernels[@]}"; do run_kernel "$k"; done
    for line in "${summaries[@]}"; do echo "run.sh: $line" >&2; done
fi
d=$((${EPOCHREALTIME/./} - t_all))
echo "run.sh: kernel scenarios took $(secs "$d")s" >&2
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" = 0 ]
