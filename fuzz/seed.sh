#!/bin/sh
# Seed the fuzz corpora from the FTP and SIP captures (bundled ones, plus the shared corpus if present)
# and the RFC 4475 SIP messages (shared corpus).
set -e
cd "$(dirname "$0")/.."
FUZZ_SEED_DIR="$PWD/fuzz/corpus" cargo test --test ftp_corpus dump_fuzz_seeds -- --ignored --nocapture
FUZZ_SEED_DIR="$PWD/fuzz/corpus" cargo test --test sip_corpus dump_fuzz_seeds -- --ignored --nocapture

# sip_nat: each sip_helper seed of the dump (named s<n>: the corpus SIP connections, the RFC 4475
# messages) as a masqueraded connection (its first sender inside, seen as 203.0.113.1:61000 /
# [2001:db8:ffff::1]:61000) and as a port forward (its second sender the inside PBX behind that
# public address, the first an outside phone on port 5060): `[flags][A][B]` becomes
# `[flags][A][B][public][mapped u16 BE]`, the packets follow unchanged.
mkdir -p fuzz/corpus/sip_nat
n=0
for f in fuzz/corpus/sip_helper/s[0-9]*; do
    [ -f "$f" ] || continue
    flags=$(od -An -tu1 -N1 "$f" | tr -d ' ')
    if [ $((flags & 1)) -eq 0 ]; then
        alen=8
        public='\313\000\161\001'
    else
        alen=32
        public='\040\001\015\270\377\377\000\000\000\000\000\000\000\000\000\001'
    fi
    for mode in masq fwd; do
        if [ $mode = masq ]; then
            bits=0 mapped='\356\110'   # 61000
        else
            bits=32 mapped='\023\304'  # 5060
        fi
        out="fuzz/corpus/sip_nat/$(basename "$f")-$mode"
        {
            printf "\\$(printf %03o $(((flags & 31) | bits)))"
            tail -c +2 "$f" | head -c $alen
            printf "$public$mapped"
            tail -c +$((2 + alen)) "$f"
        } >"$out"
        n=$((n + 1))
    done
done
echo "wrote $n sip_nat seeds to fuzz/corpus/sip_nat"
