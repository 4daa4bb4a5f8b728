#!/bin/bash
# tests/kernel/run.sh — host entry for the real-kernel scenarios.
#
#   tests/kernel/run.sh [--reference conntrackd] [scenario...]
#
# Scenarios are the guest scripts tests/kernel/<name>.sh listed in SCENARIOS
# below (default: all). Each one runs in its own freshly booted VM
# (run-in-kernel.sh: Debian's 6.1 kernel under qemu, host filesystem).
# Builds nothing: the daemon is $CTHELPERD (default target/debug/cthelperd,
# relative to the repository root). --reference conntrackd (or
# REFERENCE=conntrackd) runs the scenarios against Debian's conntrackd instead.
# Installs the guest-side tools with apt-get if missing (a scenario may name
# extra Debian packages in a header line "# packages: a b c"). Prints the guest's
# per-check lines and finally "N passed, M failed"; exits non-zero on any
# failure (or if a VM could not run a scenario to its end).
# Logs: tests/kernel/results/<scenario>[-<reference>]/ (a private
# tests/kernel/results/<scenario>.XXXXXX/ if another run holds that one).
# Environment: KERNEL_TEST_TIMEOUT (per VM, default 600 s), and run-in-kernel.sh's RIK_*.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
SCENARIOS=(ftp tftp openwrt nat sip)
REFERENCE=${REFERENCE:-}

want=()
while [ $# -gt 0 ]; do
    case "$1" in
        --reference) REFERENCE=$2; shift 2 ;;
        --reference=*) REFERENCE=${1#*=}; shift ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        -*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
        *) want+=("$1"); shift ;;
    esac
done
[ ${#want[@]} -gt 0 ] || want=("${SCENARIOS[@]}")
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
"$HERE/run-in-kernel.sh" --setup-only || exit 2
CACHE=${RIK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cthelperd-kernel}
KCONFIG=$(ls "$CACHE/$(cat "$CACHE/kernel.pkg" 2>/dev/null)"/boot/config-* 2>/dev/null | head -n1)

# ---------------------------------------------------------------- run
cd "$REPO" || exit 2
total_pass=0; total_fail=0; t_all=${EPOCHREALTIME/./}
for s in "${want[@]}"; do
    results=$REPO/tests/kernel/results/$s${REFERENCE:+-$REFERENCE}
    mkdir -p "$REPO/tests/kernel/results"
    # Concurrent runs of the same scenario (several engineers, the demo, CI)
    # must not share a results directory: the first one gets the usual
    # directory, the others a private one.
    exec {lock_fd}>"$results.lock"
    if ! flock -n "$lock_fd"; then
        exec {lock_fd}>&-; lock_fd=
        results=$(mktemp -d "$results.XXXXXX")
        echo "run.sh: $REPO/tests/kernel/results/$s${REFERENCE:+-$REFERENCE} is in use by another run; results in $results" >&2
    fi
    mkdir -p "$results"
    echo "run.sh: === scenario $s (${REFERENCE:-cthelperd}) ===" >&2
    t0=${EPOCHREALTIME/./}
    envs=(--env "REPO=$REPO" --env "RESULTS=$results" --env "KCONFIG=$KCONFIG" --env "REFERENCE=$REFERENCE")
    [ -z "$REFERENCE" ] && envs+=(--env "CTHELPERD=$CTHELPERD")
    [ -n "${HELPER_RULES:-}" ] && envs+=(--env "HELPER_RULES=$HELPER_RULES")
    "$HERE/run-in-kernel.sh" --timeout "${KERNEL_TEST_TIMEOUT:-600}" "${envs[@]}" \
        bash "$HERE/$s.sh" | tee "$results/output.log"
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
    [ -n "${lock_fd:-}" ] && { exec {lock_fd}>&-; lock_fd=; }
    echo "run.sh: scenario $s: $p passed, $f failed, exit $rc, $((d / 1000000)).$(( (d / 100000) % 10 ))s" >&2
done
d=$((${EPOCHREALTIME/./} - t_all))
echo "run.sh: kernel scenarios took $((d / 1000000)).$(( (d / 100000) % 10 ))s" >&2
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" = 0 ]
