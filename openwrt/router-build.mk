# openwrt/router-build.mk — the router build of cthelperd, defined once.
#
# Read by openwrt/Makefile (the OpenWrt packages-feed build: what the SDK ships) and by
# cross/build.sh (which builds and measures the same thing), so that the size table
# is the size of what a router gets. Plain `NAME:=value` lines: cross/lib.sh reads
# them with make itself. tests/openwrt/test-makefile.sh checks that the Makefile's
# cargo invocation carries all of it.

# Cargo arguments: the offline `replay` subcommand (capture reader, a developer's
# tool) stays out of router builds.
CTHELPERD_CARGO_ARGS:=--no-default-features

# The release profile, as environment overrides of [profile.release] (the feed builds
# with `cargo install --profile release` and sets these variables itself in
# lang/rust/rust-values.mk, CARGO_PKG_CONFIG_VARS; openwrt/Makefile passes ours
# after the feed's, so ours win). They are the feed's values (openwrt-24.10 and main:
# opt-level z, LTO, one codegen unit, overflow checks on, no debug info or debug
# assertions) except two:
# - panic=abort instead of the feed's panic=unwind. Nothing in the daemon catches a
#   panic, so unwinding only costs size (58 KB on mipsel) and the end is the same (the
#   process dies, procd respawns it); abort also makes the package behave like the
#   static cross/ipk.sh build.
# - opt-level s instead of z: the packet path in user space takes 0.63x the time with
#   musl (0.87x with glibc) for 1.07x the size (static mipsel 387,200 B instead of
#   362,608 B, inside the 400 KB budget). Levels 2 and 3 are faster still but over
#   the budget (bench/opt-levels.sh, bench/results/opt-levels.md).
CTHELPERD_PROFILE:=release
CTHELPERD_PROFILE_VARS:= \
	CARGO_PROFILE_RELEASE_OPT_LEVEL=s \
	CARGO_PROFILE_RELEASE_LTO=true \
	CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 \
	CARGO_PROFILE_RELEASE_PANIC=abort \
	CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true \
	CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=false \
	CARGO_PROFILE_RELEASE_DEBUG=false
