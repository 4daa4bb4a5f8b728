# Shared by cross/build.sh, cross/test.sh and cross/ipk.sh (sourced, not run).

ALL_TARGETS=(armv7-unknown-linux-musleabihf aarch64-unknown-linux-musl mipsel-unknown-linux-musl mips-unknown-linux-musl)
NIGHTLY="${CROSS_TOOLCHAIN:-nightly}"
CROSS_TARGET_DIR="${CROSS_TARGET_DIR:-$ROOT/target/cross}"

log() { echo "cross: $*" >&2; }
die() { echo "cross: error: $*" >&2; exit 1; }

# OpenWrt's package architecture for a Rust target (the common SoC families).
openwrt_arch() {
    case "$1" in
        armv7-unknown-linux-musleabihf) echo arm_cortex-a7_neon-vfpv4 ;;
        aarch64-unknown-linux-musl) echo aarch64_cortex-a53 ;;
        mipsel-unknown-linux-musl) echo mipsel_24kc ;;
        mips-unknown-linux-musl) echo mips_24kc ;;
        # Not in ALL_TARGETS: built on request (the benchmark runs the static
        # binary as shipped; OpenWrt's x86/64 target uses this arch name).
        x86_64-unknown-linux-musl) echo x86_64 ;;
        *) die "unknown target $1 (known: ${ALL_TARGETS[*]})" ;;
    esac
}

# The qemu-user binary that runs a target's executables.
qemu_for() {
    case "$1" in
        armv7-*) echo qemu-arm-static ;;
        aarch64-*) echo qemu-aarch64-static ;;
        mipsel-*) echo qemu-mipsel-static ;;
        mips-*) echo qemu-mips-static ;;
        x86_64-*) echo env ;;
        *) die "no qemu for $1" ;;
    esac
}

# RUSTFLAGS for the target artifacts (not build scripts: --target is always given).
# release: static non-PIE (MIPS PIC code and the relocation table cost ~45 KB), no
# unwind tables (panic=abort). test: keep unwinding, the test harness needs it.
# feed: linked as OpenWrt's SDK links a Rust package (rust/host sets crt-static=false
# for the target): dynamically against musl's libc.so, position-independent (PIE).
cross_rustflags() {
    if [ "$1" = feed ]; then
        echo "-C link-self-contained=no -C target-feature=-crt-static -C link-arg=-dynamic"
        return
    fi
    local f="-C link-self-contained=no -C relocation-model=static"
    # The static .ipk: a panic aborts at once, without formatting a message or walking
    # the stack (no libunwind, no backtrace printer: ~40 KB on mipsel). The daemon never
    # catches a panic and procd respawns it; the feed build keeps its messages.
    [ "$1" = release ] && f="$f -C force-unwind-tables=no -Zunstable-options -C panic=immediate-abort"
    echo "$f"
}

# The router build, defined once in openwrt/router-build.mk (the feed Makefile
# includes it): router_build VAR prints one of its variables, evaluated by make.
router_build() {
    make --no-print-directory -s -f "$ROOT/openwrt/router-build.mk" --eval 'print: ; @echo $('"$1"')' print
}

APT_UPDATED=
apt_install() {
    local missing=()
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "apt-get install ${missing[*]}"
    if [ -z "$APT_UPDATED" ]; then apt-get update -qq; APT_UPDATED=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

ensure_tools() {
    command -v rustup >/dev/null || die "rustup is needed (this machine kind has it)"
    if ! rustup run "$NIGHTLY" rustc --version >/dev/null 2>&1; then
        log "rustup toolchain install $NIGHTLY"
        rustup toolchain install "$NIGHTLY" --profile minimal
    fi
    local have
    have="$(rustup "+$NIGHTLY" component list --installed 2>/dev/null)"
    for c in rust-src llvm-tools; do
        if ! grep -q "^$c" <<<"$have"; then
            log "rustup +$NIGHTLY component add $c"
            rustup "+$NIGHTLY" component add "$c"
        fi
    done
    if ! command -v cargo-zigbuild >/dev/null || ! python3 -m ziglang version >/dev/null 2>&1; then
        log "pip install ziglang cargo-zigbuild"
        python3 -m pip install -q --root-user-action=ignore ziglang cargo-zigbuild
        hash -r
    fi
    command -v cargo-zigbuild >/dev/null || die "cargo-zigbuild not on PATH after pip install"
    apt_install qemu-user-static xz-utils binutils make
    local sysroot
    sysroot="$(rustc "+$NIGHTLY" --print sysroot)"
    STRIP="$(ls "$sysroot"/lib/rustlib/*/bin/llvm-strip 2>/dev/null | head -1)"
    [ -x "$STRIP" ] || STRIP="$(command -v llvm-strip || true)"
    [ -x "$STRIP" ] || die "no llvm-strip (rustup component llvm-tools)"
}
