#!/usr/bin/env bash
# Where the bytes of a cross-built binary go: symbol sizes grouped by crate, and the
# largest symbols. Reads cross/out/sym/<target>/cthelperd (written by cross/build.sh).
#
#   cross/bloat.sh [TARGET] [N]     default mipsel-unknown-linux-musl, top 25 symbols
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
t="${1:-mipsel-unknown-linux-musl}"
n="${2:-25}"
f="$ROOT/cross/out/sym/$t/cthelperd"
[ -f "$f" ] || { echo "cross/bloat.sh: $f missing: run cross/build.sh $t" >&2; exit 1; }
nm -S --radix=d "$f" | awk 'NF==4' | python3 -c '
import collections, re, subprocess, sys
top = int(sys.argv[1])
rows = [l.split(None, 3) for l in sys.stdin]
rows = [(int(r[1]), r[2].lower(), r[3].strip()) for r in rows if r[2].lower() in "trd"]
dem = subprocess.run(["c++filt"], input="\n".join(r[2] for r in rows),
                     capture_output=True, text=True).stdout.split("\n")
agg = collections.Counter()
named = []
for (sz, kind, raw), d in zip(rows, dem):
    d = re.sub(r"\[[0-9a-f]+\]", "", d)
    named.append((sz, d))
    m = re.search(r"([a-z_][a-z_0-9]*)::", d)
    if "libunwind" in d[:40] or raw.startswith(("_Unwind", "__unw")):
        k = "libunwind (C++)"
    elif m:
        k = m.group(1)
    elif "." in raw and not raw.startswith("."):
        k = "zig libc runtime"
    else:
        k = "musl libc / C"
    agg[k] += sz
print("| bytes | crate (generic code counts where its first path is) |")
print("| ---: | --- |")
for k, v in agg.most_common(14):
    print(f"| {v} | {k} |")
print(f"| {sum(agg.values())} | all symbols |")
print()
print(f"largest {top} symbols:")
for sz, d in sorted(named, reverse=True)[:top]:
    print(f"{sz:7d} {d[:120]}")
' "$n"
