#!/usr/bin/env bash
# Build static musl release binaries of cthelperd for router CPUs, strip them and
# print their sizes.
#
#   cross/build.sh [TARGET...]      default: all four targets below
#
# Route (see DESIGN.md §6): rustup's nightly with rust-src builds std itself
# (-Zbuild-std, optimize_for_size), zig (PyPI ziglang) links against its own musl through
# cargo-zigbuild (PyPI), `-C link-self-contained=no` keeps rustc's musl objects out.
# Installs what it lacks (rustup nightly + rust-src + llvm-tools, pip ziglang
# cargo-zigbuild, apt qemu-user-static xz-utils); idempotent; caches in target/cross.
#
# Output: cross/out/bin/<target>/cthelperd (stripped), cross/out/sym/<target>/cthelperd
# (with symbols, for size analysis), cross/results/sizes.md (the table printed).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
# shellcheck source=cross/lib.sh
. cross/lib.sh

TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL_TARGETS[@]}")
for t in "${TARGETS[@]}"; do openwrt_arch "$t" >/dev/null; done

ensure_tools

OUT="$ROOT/cross/out"
mkdir -p "$OUT/bin" "$OUT/sym" cross/results

for t in "${TARGETS[@]}"; do
    log "building $t (release-small, build-std)"
    start=$(date +%s)
    # Keep symbols in the build output (cross/out/sym) for size analysis; strip below.
    CARGO_PROFILE_RELEASE_SMALL_STRIP=false \
    CARGO_TARGET_DIR="$CROSS_TARGET_DIR" \
    RUSTFLAGS="$(cross_rustflags release)" \
        cargo "+$NIGHTLY" zigbuild --locked --profile release-small --no-default-features --target "$t" \
        -Zbuild-std=std,panic_abort -Zbuild-std-features=optimize_for_size \
        2> >(grep -v -e 'unable to open library directory' -e 'linker_messages' -e 'linker stderr' -e '^  |$' -e '^  = note' >&2)
    mkdir -p "$OUT/bin/$t" "$OUT/sym/$t"
    cp "$CROSS_TARGET_DIR/$t/release-small/cthelperd" "$OUT/sym/$t/cthelperd"
    "$STRIP" --strip-all -R .comment -R .pdr -R .mdebug.abi32 -R .gnu.attributes \
        "$OUT/sym/$t/cthelperd" -o "$OUT/bin/$t/cthelperd"
    log "$t built in $(( $(date +%s) - start )) s"
done

# Size table over every router target that has a binary (so a partial rebuild keeps
# the rest); a build of extra targets only (the benchmark's x86_64) leaves it alone.
router_build=0
for t in "${TARGETS[@]}"; do
    for a in "${ALL_TARGETS[@]}"; do [ "$t" = "$a" ] && router_build=1; done
done
[ "$router_build" = 1 ] || exit 0
{
    echo "| target | OpenWrt arch | stripped bytes | xz -9e bytes |"
    echo "| --- | --- | ---: | ---: |"
    for t in "${ALL_TARGETS[@]}"; do
        b="$OUT/bin/$t/cthelperd"
        [ -f "$b" ] || continue
        s=$(stat -c %s "$b")
        x=$(xz -9e -c "$b" | wc -c)
        printf '| %s | %s | %d (%d KiB) | %d (%d KiB) |\n' "$t" "$(openwrt_arch "$t")" \
            "$s" $(( (s + 1023) / 1024 )) "$x" $(( (x + 1023) / 1024 ))
    done
    echo
    echo "Built with $(rustc "+$NIGHTLY" --version), zig $(python3 -m ziglang version),"
    echo "profile release-small (opt-level z, fat LTO, 1 codegen unit, panic=abort), std built with"
    echo "optimize_for_size, static non-PIE, no unwind tables; stripped with llvm-strip."
} > cross/results/sizes.md
echo
cat cross/results/sizes.md

# Budget: mipsel stripped <= 400 KB (400 * 1024 bytes).
b="$OUT/bin/mipsel-unknown-linux-musl/cthelperd"
if [ -f "$b" ] && [ "$(stat -c %s "$b")" -gt $((400 * 1024)) ]; then
    echo "cross/build.sh: mipsel binary is over the 400 KiB budget; see cross/bloat.sh" >&2
    exit 1
fi
