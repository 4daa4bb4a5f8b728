#!/usr/bin/env bash
# Build static musl release binaries of cthelperd for router CPUs, strip them and
# print their sizes; measure the OpenWrt feed package's binary the same way.
#
#   cross/build.sh [TARGET...]      default: all four targets below
#
# Route (see DESIGN.md §6): rustup's nightly with rust-src builds std itself
# (-Zbuild-std), zig (PyPI ziglang) links against its own musl through
# cargo-zigbuild (PyPI), `-C link-self-contained=no` keeps rustc's musl objects out.
# Installs what it lacks (rustup nightly + rust-src + llvm-tools, pip ziglang
# cargo-zigbuild, apt qemu-user-static xz-utils make); idempotent; caches in target/cross.
#
# What is built is the router build of openwrt/router-build.mk (cargo arguments and
# release profile), the definition the feed Makefile builds with, twice per target:
#   static  the .ipk of cross/ipk.sh: static, non-PIE, no unwind tables, std with
#           optimize_for_size -> cross/out/bin/<target>/cthelperd (stripped),
#           cross/out/sym/<target>/cthelperd (with symbols, for cross/bloat.sh)
#   feed    what openwrt/Makefile ships: linked like the SDK links it (dynamically
#           against musl's libc.so, PIE), std rebuilt with the same profile (the
#           SDK's is prebuilt by rust/host) -> cross/out/feed/<target>/cthelperd
# and cross/results/sizes.md (the table printed) has both.
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
mkdir -p "$OUT/bin" "$OUT/sym" "$OUT/feed" cross/results

# The router build (openwrt/router-build.mk).
read -ra CARGO_ARGS <<<"$(router_build CTHELPERD_CARGO_ARGS)"
read -ra PROFILE_VARS <<<"$(router_build CTHELPERD_PROFILE_VARS)"
PROFILE="$(router_build CTHELPERD_PROFILE)"
[ "$PROFILE" = release ] && [ ${#PROFILE_VARS[@]} -gt 0 ] ||
    die "openwrt/router-build.mk: profile '$PROFILE', vars '${PROFILE_VARS[*]}'"
# CROSS_OPT_LEVEL=L (bench/opt-levels.sh): the static build at opt-level L instead,
# into cross/out/opt-L/<target>/cthelperd, in a target directory of its own; no feed
# build, no size table, no budget check.
OPT_TRIAL=${CROSS_OPT_LEVEL:-}
if [ -n "$OPT_TRIAL" ]; then
    PROFILE_VARS+=("CARGO_PROFILE_RELEASE_OPT_LEVEL=$OPT_TRIAL")
    CROSS_TARGET_DIR=$CROSS_TARGET_DIR-opt-$OPT_TRIAL
fi
STD=std,panic_unwind
[[ " ${PROFILE_VARS[*]} " == *" CARGO_PROFILE_RELEASE_PANIC=abort "* ]] && STD=std,panic_abort
log "router build: --profile $PROFILE ${CARGO_ARGS[*]} ${PROFILE_VARS[*]}"

is_router_target() { local a; for a in "${ALL_TARGETS[@]}"; do [ "$1" = "$a" ] && return 0; done; return 1; }

# zigbuild KIND TARGET: one cargo build of the router build; prints nothing on success.
zigbuild() {
    local kind=$1 t=$2 dir=$CROSS_TARGET_DIR std_features=()
    [ "$kind" = feed ] && dir=$CROSS_TARGET_DIR-feed
    [ "$kind" = release ] && std_features=(-Zbuild-std-features=optimize_for_size)
    # Keep symbols in the build output (cross/out/sym) for size analysis; strip below.
    env "${PROFILE_VARS[@]}" CARGO_PROFILE_RELEASE_STRIP=false \
        CARGO_TARGET_DIR="$dir" RUSTFLAGS="$(cross_rustflags "$kind")" \
        cargo "+$NIGHTLY" zigbuild --locked --profile "$PROFILE" "${CARGO_ARGS[@]}" --target "$t" \
        -Zbuild-std="$STD" "${std_features[@]}" \
        2> >(grep -v -e 'unable to open library directory' -e 'linker_messages' -e 'linker stderr' -e '^  |$' -e '^  = note' >&2)
}
strip_to() { "$STRIP" --strip-all -R .comment -R .pdr -R .mdebug.abi32 -R .gnu.attributes "$1" -o "$2"; }

for t in "${TARGETS[@]}"; do
    log "building $t (static, build-std)"
    start=$(date +%s)
    zigbuild release "$t"
    if [ -n "$OPT_TRIAL" ]; then
        mkdir -p "$OUT/opt-$OPT_TRIAL/$t"
        strip_to "$CROSS_TARGET_DIR/$t/$PROFILE/cthelperd" "$OUT/opt-$OPT_TRIAL/$t/cthelperd"
        log "$t at opt-level $OPT_TRIAL built in $(( $(date +%s) - start )) s"
        continue
    fi
    mkdir -p "$OUT/bin/$t" "$OUT/sym/$t"
    cp "$CROSS_TARGET_DIR/$t/$PROFILE/cthelperd" "$OUT/sym/$t/cthelperd"
    strip_to "$OUT/sym/$t/cthelperd" "$OUT/bin/$t/cthelperd"
    log "$t built in $(( $(date +%s) - start )) s"
    is_router_target "$t" || continue
    log "building $t (as the OpenWrt feed package: dynamic, PIE)"
    start=$(date +%s)
    zigbuild feed "$t"
    mkdir -p "$OUT/feed/$t"
    strip_to "$CROSS_TARGET_DIR-feed/$t/$PROFILE/cthelperd" "$OUT/feed/$t/cthelperd"
    log "$t (feed) built in $(( $(date +%s) - start )) s"
done

[ -z "$OPT_TRIAL" ] || exit 0

# Size table over every router target that has a binary (so a partial rebuild keeps
# the rest); a build of extra targets only (the benchmark's x86_64) leaves it alone.
table=0
for t in "${TARGETS[@]}"; do
    for a in "${ALL_TARGETS[@]}"; do [ "$t" = "$a" ] && table=1; done
done
[ "$table" = 1 ] || exit 0
{
    size_cells() { # size_cells FILE: "stripped | xz" cells, or "- | -"
        [ -f "$1" ] || { printf -- '- | -'; return; }
        local s x
        s=$(stat -c %s "$1")
        x=$(xz -9e -c "$1" | wc -c)
        printf '%d (%d KiB) | %d (%d KiB)' "$s" $(( (s + 1023) / 1024 )) "$x" $(( (x + 1023) / 1024 ))
    }
    echo "| target | OpenWrt arch | feed package (openwrt/Makefile): stripped bytes | xz -9e | static .ipk (cross/ipk.sh): stripped bytes | xz -9e |"
    echo "| --- | --- | ---: | ---: | ---: | ---: |"
    for t in "${ALL_TARGETS[@]}"; do
        [ -f "$OUT/bin/$t/cthelperd" ] || [ -f "$OUT/feed/$t/cthelperd" ] || continue
        printf '| %s | %s | %s | %s |\n' "$t" "$(openwrt_arch "$t")" \
            "$(size_cells "$OUT/feed/$t/cthelperd")" "$(size_cells "$OUT/bin/$t/cthelperd")"
    done
    echo
    echo "Built with $(rustc "+$NIGHTLY" --version), zig $(python3 -m ziglang version), the router build"
    echo "of openwrt/router-build.mk: \`cargo --profile $PROFILE ${CARGO_ARGS[*]}\` with"
    echo "$(printf '%s\n' "${PROFILE_VARS[@]}" | sed 's/^CARGO_PROFILE_RELEASE_//' | tr 'A-Z_' 'a-z-' | paste -sd, - | sed 's/,/, /g'),"
    echo "std rebuilt with the same profile; stripped with llvm-strip. Feed package: linked as the"
    echo "OpenWrt SDK links it, dynamically against musl's libc.so (not counted), PIE. Static .ipk:"
    echo "static non-PIE with zig's musl, no unwind tables, std built with optimize_for_size."
} > cross/results/sizes.md
echo
cat cross/results/sizes.md

# Budget: mipsel stripped <= 400 KB (400 * 1024 bytes), for the static .ipk build.
b="$OUT/bin/mipsel-unknown-linux-musl/cthelperd"
if [ -f "$b" ] && [ "$(stat -c %s "$b")" -gt $((400 * 1024)) ]; then
    echo "cross/build.sh: mipsel binary is over the 400 KiB budget; see cross/bloat.sh" >&2
    exit 1
fi
