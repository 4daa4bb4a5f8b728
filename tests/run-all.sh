#!/bin/bash
# tests/run-all.sh — every test of cthelperd, in the order a reviewer wants them:
#   cargo fmt --check, cargo clippy --all-targets -D warnings, cargo test
#   (unit + integration), cargo +<rust-version> check (tests/msrv.sh), a short run of
#   every fuzz target (tests/fuzz-smoke.sh), the cross builds for router CPUs with their unit tests
#   under qemu-user and the .ipk packages (cross/), cargo build, then the real-kernel VM scenarios
#   (tests/kernel/run.sh, all scenarios, against target/debug/cthelperd), then ftp, nat and
#   sip on every pinned kernel (tests/kernel/run.sh --matrix, tests/kernel/kernels.txt).
# Runs every step even if an earlier one failed (except that the VM scenarios
# need a successful build), prints a summary, exits non-zero on any failure.
# Needs root for the VM part (apt-get, qemu 9p passthrough); .ci/run installs
# the system packages on a fresh machine. SKIP_KERNEL=1 skips the VM part, SKIP_MATRIX=1 only the kernel matrix, SKIP_CROSS=1 the cross builds, SKIP_FUZZ=1 the fuzz smoke run.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
failed=()
t_all=$SECONDS
step() { # step NAME CMD...
    local name=$1 t=$SECONDS rc
    shift
    echo "=== run-all: $name: $*" >&2
    "$@"; rc=$?
    echo "=== run-all: $name: $([ $rc = 0 ] && echo ok || echo "FAILED (exit $rc)") in $((SECONDS - t))s" >&2
    [ $rc = 0 ] || failed+=("$name")
    return $rc
}
step fmt cargo fmt --check
step clippy cargo clippy --all-targets -- -D warnings
step test cargo test
# Cargo.toml's rust-version builds (the toolchain the OpenWrt feed must at least have)
step msrv tests/msrv.sh
# OpenWrt service and feed Makefile (stand-ins for procd and the SDK includes)
step openwrt-init tests/openwrt/test-init.sh
step openwrt-makefile tests/openwrt/test-makefile.sh
# Every fuzz target builds and survives a short run (FUZZ_SMOKE_SECONDS each; the long
# runs are recorded in fuzz/README.md). SKIP_FUZZ=1 skips it.
if [ "${SKIP_FUZZ:-0}" = 1 ]; then
    echo "=== run-all: fuzz-smoke: skipped (SKIP_FUZZ=1)" >&2
else
    step fuzz-smoke tests/fuzz-smoke.sh
fi
# Router builds: static musl for armv7/aarch64/mipsel/mips (size budget checked),
# the unit tests under qemu-user (little- and big-endian), one .ipk per arch.
if [ "${SKIP_CROSS:-0}" = 1 ]; then
    echo "=== run-all: cross: skipped (SKIP_CROSS=1)" >&2
else
    step cross-build cross/build.sh
    step cross-test cross/test.sh
    step cross-ipk cross/ipk.sh
fi
if step build cargo build; then
    export CTHELPERD=$PWD/target/debug/cthelperd
    if [ "${SKIP_KERNEL:-0}" = 1 ]; then
        echo "=== run-all: kernel: skipped (SKIP_KERNEL=1)" >&2
    else
        step kernel tests/kernel/run.sh
        # ftp, nat and sip on every kernel pinned in tests/kernel/kernels.txt: inside
        # and after the helper-inheritance window, and the newest (issue #15)
        if [ "${SKIP_MATRIX:-0}" = 1 ]; then
            echo "=== run-all: kernel-matrix: skipped (SKIP_MATRIX=1)" >&2
        else
            step kernel-matrix tests/kernel/run.sh --matrix ftp nat sip
        fi
    fi
else
    failed+=("kernel (not run: no build)")
fi
echo "=== run-all: total $((SECONDS - t_all))s" >&2
if [ ${#failed[@]} -gt 0 ]; then
    echo "run-all: FAILED: ${failed[*]}"
    exit 1
fi
echo "run-all: all steps passed"
