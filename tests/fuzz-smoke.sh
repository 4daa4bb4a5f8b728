#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# tests/fuzz-smoke.sh — a short run of every fuzz target (fuzz/fuzz_targets/), so that a
# target that no longer builds, or an input that now panics within seconds, fails CI.
# The long runs (>= 10^7 each) are recorded in fuzz/README.md; this is not one.
#
#   tests/fuzz-smoke.sh [TARGET...]      default: every target of `cargo fuzz list`
#
# Installs what it lacks: rustup's nightly (as cross/ builds use, CROSS_TOOLCHAIN) and
# cargo-fuzz (`cargo install --locked`). Each target runs FUZZ_SMOKE_SECONDS (default
# 15) from a scratch corpus seeded with fuzz/corpus/<target> when there is one (it is
# not in git; ./fuzz/seed.sh makes it); a crash fails the run, prints the end of the
# log (libFuzzer's reproduction line) and leaves the input in fuzz/artifacts/<target>/.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../fuzz" || exit 2
NIGHTLY=${CROSS_TOOLCHAIN:-nightly}
SECONDS_EACH=${FUZZ_SMOKE_SECONDS:-15}

command -v rustup >/dev/null || { echo "fuzz-smoke: rustup is needed" >&2; exit 2; }
if ! rustup run "$NIGHTLY" rustc --version >/dev/null 2>&1; then
    echo "fuzz-smoke: rustup toolchain install $NIGHTLY" >&2
    rustup toolchain install "$NIGHTLY" --profile minimal || exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: cargo install cargo-fuzz" >&2
    cargo install --locked cargo-fuzz || exit 2
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo "+$NIGHTLY" fuzz list)
fi
[ ${#targets[@]} -gt 0 ] || { echo "fuzz-smoke: no fuzz targets" >&2; exit 2; }

echo "fuzz-smoke: building ${#targets[@]} targets" >&2
cargo "+$NIGHTLY" fuzz build || { echo "fuzz-smoke: build failed" >&2; exit 1; }

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=()
for t in "${targets[@]}"; do
    mkdir -p "$scratch/$t"
    seeds=()
    [ -d "corpus/$t" ] && seeds=("corpus/$t")
    log=$scratch/$t.log
    # -max_len as the recorded runs (fuzz/README.md); new inputs go to the scratch
    # directory, never into the seeds.
    if cargo "+$NIGHTLY" fuzz run "$t" "$scratch/$t" "${seeds[@]}" -- \
        -max_len=8192 -max_total_time="$SECONDS_EACH" >"$log" 2>&1; then
        runs=$(grep -Eo '^Done [0-9]+ runs' "$log" | tail -1)
        echo "fuzz-smoke: $t: ok (${runs:-no count})" >&2
    else
        echo "fuzz-smoke: $t: FAILED; the end of its log:" >&2
        tail -40 "$log" >&2
        failed+=("$t")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz-smoke: FAILED: ${failed[*]}"
    exit 1
fi
echo "fuzz-smoke: ${#targets[@]} targets, ${SECONDS_EACH} s each, no failure"
