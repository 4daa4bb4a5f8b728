#!/bin/sh
# Seed the fuzz corpora from the FTP and SIP captures (bundled ones, plus the shared corpus if present)
# and the RFC 4475 SIP messages (shared corpus).
set -e
cd "$(dirname "$0")/.."
FUZZ_SEED_DIR="$PWD/fuzz/corpus" cargo test --test ftp_corpus dump_fuzz_seeds -- --ignored --nocapture
FUZZ_SEED_DIR="$PWD/fuzz/corpus" cargo test --test sip_corpus dump_fuzz_seeds -- --ignored --nocapture
