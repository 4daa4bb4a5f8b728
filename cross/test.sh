#!/usr/bin/env bash
# Build the unit and integration test binaries for router CPUs and run them under
# qemu-user (armv7 little-endian, mipsel little-endian, mips big-endian by default).
#
#   cross/test.sh [TARGET...]     default: armv7-unknown-linux-musleabihf
#                                          mipsel-unknown-linux-musl mips-unknown-linux-musl
#
# qemu-user refuses NETLINK_NETFILTER sockets (EPROTONOSUPPORT): tests/socket_refusal.rs
# checks that the socket code fails cleanly there; every other test is pure logic and
# must pass. Prints PASS/FAIL per target and exits non-zero on any failure.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
# shellcheck source=cross/lib.sh
. cross/lib.sh

TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(armv7-unknown-linux-musleabihf mipsel-unknown-linux-musl mips-unknown-linux-musl)
for t in "${TARGETS[@]}"; do openwrt_arch "$t" >/dev/null; done

ensure_tools

declare -A RESULT
failed=0
for t in "${TARGETS[@]}"; do
    start=$(date +%s)
    log "building tests for $t"
    json="$(mktemp)"
    if ! CARGO_TARGET_DIR="$CROSS_TARGET_DIR" RUSTFLAGS="$(cross_rustflags test)" \
        cargo "+$NIGHTLY" zigbuild --locked --tests --target "$t" \
        -Zbuild-std=std,test,panic_unwind --message-format=json-render-diagnostics \
        >"$json" 2> >(grep -v -e 'unable to open library directory' -e 'linker_messages' -e 'linker stderr' -e '^  |$' -e '^  = note' >&2); then
        RESULT[$t]="FAIL (build)"; failed=1; rm -f "$json"; continue
    fi
    mapfile -t exes < <(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") and m.get("executable"):
        print(m["executable"])
' "$json" | sort -u)
    rm -f "$json"
    [ ${#exes[@]} -gt 0 ] || { RESULT[$t]="FAIL (no test binaries)"; failed=1; continue; }
    qemu="$(qemu_for "$t")"
    passed=0 total=0 bad=()
    for exe in "${exes[@]}"; do
        total=$((total + 1))
        name="$(basename "$exe")"
        log "$t: $qemu $name"
        out="$(mktemp)"
        # Integration tests find tests/data through CARGO_MANIFEST_DIR, compiled in as
        # an absolute path: qemu-user sees the host file system, so run from the root.
        # Tests that run the cthelperd binary itself (tests/replay.rs) need the same
        # emulator: there is no binfmt registration here.
        if CTHELPERD_TEST_RUNNER="$qemu" "$qemu" "$exe" --test-threads=1 >"$out" 2>&1; then
            passed=$((passed + 1))
        else
            bad+=("$name")
        fi
        grep -E '^test result:|panicked|FAILED|netlink socket refused' "$out" | sed "s/^/    [$t $name] /" >&2 || true
        rm -f "$out"
    done
    secs=$(( $(date +%s) - start ))
    if [ ${#bad[@]} -eq 0 ]; then
        RESULT[$t]="PASS ($passed/$total test binaries, ${secs} s)"
    else
        RESULT[$t]="FAIL (${bad[*]}; $passed/$total test binaries passed, ${secs} s)"; failed=1
    fi
done

echo
echo "cross-test results (qemu-user):"
for t in "${TARGETS[@]}"; do printf '  %-32s %s\n' "$t" "${RESULT[$t]}"; done
exit $failed
