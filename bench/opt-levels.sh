#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# bench/opt-levels.sh — the size/speed trade-off of the router build's opt-level
# (a benchmark: it prints a table and asserts nothing).
#
#   bench/opt-levels.sh [LEVEL...]        default: z s 2 3
#
# For each opt-level, with the rest of the router build's profile
# (openwrt/router-build.mk: LTO, one codegen unit, panic=abort, overflow checks):
#   size   the static mipsel router binary, stripped (cross/build.sh with
#          CROSS_OPT_LEVEL, into cross/out/opt-L/; the shipped binaries are untouched)
#   speed  bench/packet_path.rs: the user-space packet path over the recorded kernel
#          queue messages, best round in ns per packet, built for the host (x86_64
#          glibc, and x86_64 musl when rustup has that target: musl's memcpy is the
#          router's), ROUNDS rounds (default 3000)
# Writes bench/results/opt-levels.md. The host is not a router: compare the levels
# with each other, not the nanoseconds with a MIPS CPU's.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
cd "$REPO" || exit 2
LEVELS=("$@")
[ ${#LEVELS[@]} -gt 0 ] || LEVELS=(z s 2 3)
ROUNDS=${ROUNDS:-3000}
OUT=$HERE/results/opt-levels.md
mkdir -p "$HERE/results"

# The router profile's variables, with the opt-level replaced.
read -ra PROFILE_VARS < <(make -s -f - print <<'EOF'
include openwrt/router-build.mk
print: ; @echo $(CTHELPERD_PROFILE_VARS)
EOF
)
[ ${#PROFILE_VARS[@]} -gt 0 ] || { echo "opt-levels.sh: cannot read openwrt/router-build.mk" >&2; exit 2; }

MUSL=
rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl && MUSL=x86_64-unknown-linux-musl

# speed LEVEL [TARGET]: best ns per packet of the packet-path benchmark
speed() {
    local level=$1 target=${2:-} args=()
    [ -n "$target" ] && args=(--target "$target")
    env "${PROFILE_VARS[@]}" CARGO_PROFILE_RELEASE_OPT_LEVEL="$level" \
        CARGO_TARGET_DIR="$REPO/target/opt-$level" \
        cargo run -q --release --example packet-path "${args[@]}" -- "$ROUNDS" 2>/dev/null |
        awk '/^best round:/ { print $3 }'
}

declare -A SIZE NS NSMUSL
for l in "${LEVELS[@]}"; do
    echo "opt-levels.sh: opt-level $l" >&2
    CROSS_OPT_LEVEL=$l cross/build.sh mipsel-unknown-linux-musl >&2 || { echo "opt-levels.sh: build failed at $l" >&2; exit 2; }
    SIZE[$l]=$(stat -c %s "cross/out/opt-$l/mipsel-unknown-linux-musl/cthelperd")
    NS[$l]=$(speed "$l")
    NSMUSL[$l]=-
    [ -n "$MUSL" ] && NSMUSL[$l]=$(speed "$l" "$MUSL")
done

base=${LEVELS[0]}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2fx", a / b; else print "-" }'; }
{
    echo "## Router build opt-level: size and packet-path speed"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), cthelperd $(git rev-parse --short HEAD)$(git diff --quiet || echo -dirty)," \
        "host $(uname -m), load $(cut -d' ' -f1-3 /proc/loadavg); $ROUNDS rounds of the recorded queue messages."
    echo
    echo "| opt-level | mipsel static, stripped | size vs $base | ns/packet (glibc) | time vs $base | ns/packet (musl) | time vs $base |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    for l in "${LEVELS[@]}"; do
        printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$l" "${SIZE[$l]}" "$(ratio "${SIZE[$l]}" "${SIZE[$base]}")" \
            "${NS[$l]}" "$(ratio "${NS[$l]}" "${NS[$base]}")" "${NSMUSL[$l]}" "$(ratio "${NSMUSL[$l]}" "${NSMUSL[$base]}")"
    done
} | tee "$OUT"
