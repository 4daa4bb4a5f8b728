#!/usr/bin/env bash
# Package the stripped router binaries from cross/build.sh as OpenWrt .ipk files.
#
#   cross/ipk.sh [TARGET...]     default: every target with a binary in cross/out/bin
#
# Layout as OpenWrt's scripts/ipkg-build (24.10) writes it and opkg reads it: a gzipped
# GNU tar holding ./debian-binary ("2.0"), ./data.tar.gz and ./control.tar.gz, each tar
# with numeric owner 0/0, sorted names, a fixed mtime; Installed-Size is the size of
# the uncompressed data tar. Output: cross/out/cthelperd_<version>_<arch>.ipk, then
# cross/verify-ipk.py reads every package back and runs its binary under qemu-user.
#
# Package members that come from issue #5 are picked up when they exist:
#   init script  init.d/cthelperd          -> /etc/init.d/cthelperd
#   UCI config   init.d/cthelperd.config   -> /etc/config/cthelperd
#   capabilities init.d/cthelperd.capabilities.json -> /etc/capabilities/cthelperd.json
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
# shellcheck source=cross/lib.sh
. cross/lib.sh

OUT="$ROOT/cross/out"
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
    for t in "${ALL_TARGETS[@]}"; do [ -f "$OUT/bin/$t/cthelperd" ] && TARGETS+=("$t"); done
fi
[ ${#TARGETS[@]} -gt 0 ] || die "no binaries in cross/out/bin: run cross/build.sh first"

RELEASE="${PKG_RELEASE:-1}"
VERSION="$(sed -n '/^\[package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -1)"
[ -n "$VERSION" ] || die "no version in Cargo.toml"
PKG_VERSION="$VERSION-r$RELEASE"
# Reproducible: the last commit's time (as ipkg-build uses SOURCE_DATE_EPOCH).
EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}"

first_of() { for f in "$@"; do [ -f "$f" ] && { echo "$f"; return; }; done; true; }
INIT="$(first_of init.d/cthelperd)"
CONF="$(first_of init.d/cthelperd.config)"
CAPS="$(first_of init.d/cthelperd.capabilities.json)"
[ -n "$INIT" ] || log "note: no init script yet (init.d/cthelperd): /etc/init.d/cthelperd left out"
[ -n "$CONF" ] || log "note: no UCI config yet (init.d/cthelperd.config): /etc/config/cthelperd left out"

IPKS=()
TAR=(tar --format=gnu --numeric-owner --owner=0 --group=0 --sort=name --mtime="@$EPOCH")

for t in "${TARGETS[@]}"; do
    arch="$(openwrt_arch "$t")"
    bin="$OUT/bin/$t/cthelperd"
    [ -f "$bin" ] || die "$bin missing: run cross/build.sh $t"
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    mkdir -p "$work/data/usr/sbin" "$work/control" "$work/pkg"
    install -m 0755 "$bin" "$work/data/usr/sbin/cthelperd"
    if [ -n "$INIT" ]; then
        mkdir -p "$work/data/etc/init.d"
        install -m 0755 "$INIT" "$work/data/etc/init.d/cthelperd"
    fi
    if [ -n "$CAPS" ]; then
        # procd's ujail: CAP_NET_ADMIN only (init.d/cthelperd)
        mkdir -p "$work/data/etc/capabilities"
        install -m 0644 "$CAPS" "$work/data/etc/capabilities/cthelperd.json"
    fi
    if [ -n "$CONF" ]; then
        mkdir -p "$work/data/etc/config"
        install -m 0644 "$CONF" "$work/data/etc/config/cthelperd"
        echo /etc/config/cthelperd > "$work/control/conffiles"
    fi
    find "$work/data" -type d -exec chmod 0755 {} +
    (cd "$work/data" && "${TAR[@]}" -cf - .) | gzip -9n > "$work/pkg/data.tar.gz"
    installed_size=$(gzip -dc "$work/pkg/data.tar.gz" | wc -c)

    cat > "$work/control/control" <<CONTROL
Package: cthelperd
Version: $PKG_VERSION
Depends: libc, kmod-nfnetlink-cthelper, kmod-nfnetlink-queue, kmod-nf-conntrack-netlink, kmod-nft-core, kmod-nft-queue, nftables
Conflicts: kmod-nf-nathelper, kmod-nf-nathelper-extra, kmod-nf-nathelper-tftp
Source: cthelperd
SourceName: cthelperd
Section: net
SourceDateEpoch: $EPOCH
Architecture: $arch
Installed-Size: $installed_size
Description:  User-space netfilter conntrack helper daemon (FTP and other ALGs): registers its
 helpers through nfnetlink_cthelper, parses the queued packets of helped connections
 and creates expectations over ctnetlink. Static musl binary.
CONTROL
    # The maintainer scripts OpenWrt's package-pack.mk generates for every package:
    # default_postinst enables and starts the package's init scripts, runs uci-defaults.
    cat > "$work/control/postinst" <<'SCRIPT'
#!/bin/sh
[ "${IPKG_NO_SCRIPT}" = "1" ] && exit 0
[ -s ${IPKG_INSTROOT}/lib/functions.sh ] || exit 0
. ${IPKG_INSTROOT}/lib/functions.sh
default_postinst $0 $@
SCRIPT
    cat > "$work/control/prerm" <<'SCRIPT'
#!/bin/sh
[ -s ${IPKG_INSTROOT}/lib/functions.sh ] || exit 0
. ${IPKG_INSTROOT}/lib/functions.sh
default_prerm $0 $@
SCRIPT
    chmod 0755 "$work/control/postinst" "$work/control/prerm"
    chmod 0644 "$work/control/control"
    [ -f "$work/control/conffiles" ] && chmod 0644 "$work/control/conffiles"
    (cd "$work/control" && "${TAR[@]}" -cf - .) | gzip -9n > "$work/pkg/control.tar.gz"
    echo "2.0" > "$work/pkg/debian-binary"
    ipk="$OUT/cthelperd_${PKG_VERSION}_${arch}.ipk"
    (cd "$work/pkg" && "${TAR[@]}" -cf - ./debian-binary ./data.tar.gz ./control.tar.gz) | gzip -9n > "$ipk"
    rm -rf "$work"
    trap - EXIT
    log "$ipk ($(stat -c %s "$ipk") bytes)"
    IPKS+=("$ipk")
done

python3 cross/verify-ipk.py "${IPKS[@]}"
