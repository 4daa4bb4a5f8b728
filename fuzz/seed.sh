#!/bin/sh
# Seed the fuzz corpora from the FTP captures (bundled ones, plus the shared corpus if present).
set -e
cd "$(dirname "$0")/.."
FUZZ_SEED_DIR="$PWD/fuzz/corpus" cargo test --test ftp_corpus dump_fuzz_seeds -- --ignored --nocapture
