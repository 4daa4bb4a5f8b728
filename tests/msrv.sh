#!/usr/bin/env bash
# tests/msrv.sh — Cargo.toml's rust-version is true: the crate and all its targets
# build with exactly that toolchain (rustup, minimal profile, installed if missing),
# with and without the default features (router builds leave `replay` out).
# The number matters for OpenWrt: the packages feed builds with its own Rust
# (lang/rust, see openwrt/README.md), which must not be older than this.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

v=$(sed -n '/^\[package\]/,/^\[/s/^rust-version *= *"\(.*\)"/\1/p' Cargo.toml | head -1)
[ -n "$v" ] || { echo "msrv: no rust-version in Cargo.toml" >&2; exit 1; }
if ! rustup run "$v" rustc --version >/dev/null 2>&1; then
    echo "msrv: rustup toolchain install $v" >&2
    rustup toolchain install "$v" --profile minimal >&2
fi
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/msrv}
pass=0
fail=0
for args in "--all-targets" "--no-default-features"; do
    # shellcheck disable=SC2086
    if cargo "+$v" check --locked --quiet $args; then
        echo "ok   cargo +$v check $args"
        pass=$((pass + 1))
    else
        echo "FAIL cargo +$v check $args"
        fail=$((fail + 1))
    fi
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
