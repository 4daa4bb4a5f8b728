#!/usr/bin/env bash
# tests/openwrt/test-makefile.sh — openwrt/Makefile under GNU make with stand-in
# OpenWrt include files (no SDK here): it parses, PKG_VERSION equals Cargo.toml's,
# the package metadata (section, depends, conffiles) is what the SDK will see,
# Build/Prepare copies the crate, and Package/cthelperd/install lays out
# /usr/sbin/cthelperd, /etc/init.d/cthelperd, /etc/config/cthelperd with OpenWrt's
# modes. The stand-ins define only what the Makefile uses, with the meaning of
# OpenWrt's rules.mk / package.mk and the packages feed's lang/rust/rust-package.mk
# (RUST_ARCH_DEPENDS, RustBinPackage: default install unless one is defined).
# Prints "N passed, M failed"; exits non-zero on failure.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD

pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; [ $# -gt 1 ] && printf '%s\n' "$2" | sed 's/^/     /'; }
check() { # check NAME ACTUAL EXPECTED
    if [ "$2" = "$3" ]; then ok "$1"; else bad "$1" "expected: $3
actual:   $2"; fi
}

T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
mkdir -p "$T/top/include" "$T/top/feeds/packages/lang/rust" "$T/build" "$T/dest"

cat >"$T/top/rules.mk" <<'EOF'
INCLUDE_DIR:=$(TOPDIR)/include
BUILD_DIR:=$(TOPDIR)/build_dir
INSTALL_DIR:=install -d -m0755
INSTALL_BIN:=install -m0755
INSTALL_DATA:=install -m0644
INSTALL_CONF:=install -m0600
CP:=cp -fpR
EOF
cat >"$T/top/include/package.mk" <<'EOF'
PKG_BUILD_DIR ?= $(BUILD_DIR)/$(PKG_NAME)-$(PKG_VERSION)
PKG_INSTALL_DIR ?= $(PKG_BUILD_DIR)/ipkg-install
define BuildPackage
$(eval $(Package/$(1)))
dump:
	@echo 'name=$(PKG_NAME) version=$(PKG_VERSION) release=$(PKG_RELEASE)'
	@echo 'license=$(PKG_LICENSE) license_files=$(PKG_LICENSE_FILES)'
	@echo 'maintainer=$(PKG_MAINTAINER)'
	@echo 'build_depends=$(PKG_BUILD_DEPENDS)'
	@echo 'section=$(SECTION) category=$(CATEGORY)'
	@echo 'depends=$(strip $(DEPENDS))'
	@echo 'conflicts=$(strip $(CONFLICTS))'
	@echo 'conffiles=$(strip $(Package/$(1)/conffiles))'
	@echo 'title=$(TITLE)'
	@echo 'src=$(CTHELPERD_SRC)'
prepare:
	$(Build/Prepare)
compile:
	$(Build/Compile)
install:
	$(call Package/$(1)/install,$(DESTDIR))
endef
EOF
cat >"$T/top/feeds/packages/lang/rust/rust-package.mk" <<'EOF'
RUST_ARCH_DEPENDS:=@(aarch64||arm||mips||mipsel||x86_64)
# rust-values.mk (openwrt-24.10): the profile the feed forces on every package
CARGO_PKG_CONFIG_VARS= \
	CARGO_BUILD_TARGET=mipsel-unknown-linux-musl \
	CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 \
	CARGO_PROFILE_RELEASE_DEBUG=false \
	CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=false \
	CARGO_PROFILE_RELEASE_LTO=true \
	CARGO_PROFILE_RELEASE_OPT_LEVEL=z \
	CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true \
	CARGO_PROFILE_RELEASE_PANIC=unwind \
	CARGO_PROFILE_RELEASE_RPATH=false
CARGO_PKG_PROFILE:=$(if $(CONFIG_DEBUG),dev,release)
# rust-package.mk
RUST_PKG_LOCKED ?= 1
CARGO_PKG_VARS= \
	$(CARGO_PKG_CONFIG_VARS) \
	CC=cc
CARGO_PKG_ARGS=
ifeq ($(strip $(RUST_PKG_LOCKED)),1)
  CARGO_PKG_ARGS+= --locked
endif
define Build/Compile/Cargo
	+$(CARGO_PKG_VARS) \
	cargo install -v \
		--profile $(CARGO_PKG_PROFILE) \
		$(if $(strip $(RUST_PKG_FEATURES)),--features "$(strip $(RUST_PKG_FEATURES))") \
		--root $(PKG_INSTALL_DIR) \
		--path "$(PKG_BUILD_DIR)/$(if $(strip $(1)),$(strip $(1)),$(strip $(MAKE_PATH)))" \
		$(CARGO_PKG_ARGS) \
		$(2)
endef
Build/Compile=$(call Build/Compile/Cargo)
define RustBinPackage
  ifndef Package/$(1)/install
    define Package/$(1)/install
	$$(INSTALL_DIR) $$(1)/usr/bin/
	$$(INSTALL_BIN) $$(PKG_INSTALL_DIR)/bin/* $$(1)/usr/bin/
    endef
  endif
endef
EOF

MK=(make --no-print-directory -r -C openwrt TOPDIR="$T/top" BUILD_DIR="$T/build"
    PKG_BUILD_DIR="$T/build/cthelperd" PKG_INSTALL_DIR="$T/build/cthelperd/ipkg-install")

if out=$("${MK[@]}" dump 2>&1); then ok "make parses openwrt/Makefile"; else bad "make dump" "$out"; fi
field() { sed -n "s/^$1=//p" <<<"$out"; }

cargo_version=$(sed -n '/^\[package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -1)
check "PKG_VERSION = Cargo.toml version ($cargo_version)" \
    "$(sed -n 's/^name=cthelperd version=\([^ ]*\) release=1$/\1/p' <<<"$out")" "$cargo_version"
cargo_license=$(sed -n '/^\[package\]/,/^\[/s/^license *= *"\(.*\)"/\1/p' Cargo.toml | head -1)
check "Cargo.toml license is GPL-2.0-or-later" "$cargo_license" "GPL-2.0-or-later"
check "PKG_LICENSE = Cargo.toml license, PKG_LICENSE_FILES = LICENSE" "$(field license)" "$cargo_license license_files=LICENSE"
grep -q "GNU GENERAL PUBLIC LICENSE" LICENSE 2>/dev/null && grep -q "Version 2, June 1991" LICENSE &&
    ok "LICENSE is the GPL version 2 text" || bad "LICENSE is missing or not the GPL-2.0 text"
[[ "$(field maintainer)" =~ ^[^\<]+\ \<[^@\>]+@[^\>]+\>$ ]] && ok "PKG_MAINTAINER is 'Name <address>'" ||
    bad "PKG_MAINTAINER" "$(field maintainer)"
check "PKG_BUILD_DEPENDS" "$(field build_depends)" "rust/host"
check "section/category" "$(field section)" "net category=Network"
check "DEPENDS" "$(field depends)" \
    "@(aarch64||arm||mips||mipsel||x86_64) +kmod-nfnetlink-cthelper +kmod-nfnetlink-queue +kmod-nf-conntrack-netlink +kmod-nft-core +kmod-nft-queue +nftables"
check "CONFLICTS: the packages that autoload nf_conntrack_ftp / _tftp / _sip" "$(field conflicts)" \
    "kmod-nf-nathelper kmod-nf-nathelper-extra kmod-nf-nathelper-tftp kmod-nf-nathelper-sip"
check "conffiles" "$(field conffiles)" "/etc/config/cthelperd"
check "CTHELPERD_SRC defaults to the tree around openwrt/" "$(field src)" "$ROOT"

# In a feed the package directory is a symlink to <tree>/openwrt: make's CURDIR is
# the physical directory, so the tree is still found.
mkdir -p "$T/feed"
ln -s "$ROOT/openwrt" "$T/feed/cthelperd"
out=$(make --no-print-directory -r -C "$T/feed/cthelperd" TOPDIR="$T/top" dump 2>&1)
check "through a feed symlink, CTHELPERD_SRC is still the tree" "$(field src)" "$ROOT"

# Build/Prepare copies the crate
if out=$("${MK[@]}" prepare 2>&1) && [ -f "$T/build/cthelperd/Cargo.toml" ] &&
    [ -f "$T/build/cthelperd/Cargo.lock" ] && [ -f "$T/build/cthelperd/src/main.rs" ] &&
    [ -f "$T/build/cthelperd/LICENSE" ]; then
    ok "Build/Prepare: Cargo.toml, Cargo.lock, LICENSE, src/ in PKG_BUILD_DIR"
else
    bad "Build/Prepare" "$out"
fi
if out=$("${MK[@]}" prepare CTHELPERD_SRC="$T/nowhere" 2>&1); then
    bad "Build/Prepare with a wrong CTHELPERD_SRC must fail"
else
    grep -q "no Cargo.toml in CTHELPERD_SRC" <<<"$out" && ok "Build/Prepare: clear error for a wrong CTHELPERD_SRC" ||
        bad "Build/Prepare error message" "$out"
fi

# Build/Compile: the router build of openwrt/router-build.mk (the one cross/build.sh
# measures) reaches cargo, its profile variables over the feed's (a stand-in cargo
# records its arguments and CARGO_PROFILE_* environment).
mkdir -p "$T/bin"
printf '#!/bin/sh\n{ echo "args: $*"; env | grep "^CARGO_PROFILE_" | sort; } >"$CARGO_RECORD"\n' >"$T/bin/cargo"
chmod +x "$T/bin/cargo"
rb() { make --no-print-directory -s -f openwrt/router-build.mk --eval 'print: ; @echo $('"$1"')' print; }
if out=$(PATH="$T/bin:$PATH" CARGO_RECORD="$T/cargo.txt" "${MK[@]}" compile 2>&1) && [ -f "$T/cargo.txt" ]; then
    ok "Build/Compile runs cargo"
    args=" $(sed -n 's/^args: //p' "$T/cargo.txt") "
    for a in install "--profile $(rb CTHELPERD_PROFILE)" --locked $(rb CTHELPERD_CARGO_ARGS); do
        [[ "$args" == *" $a "* ]] && ok "cargo gets '$a' (router-build.mk)" || bad "cargo lacks '$a'" "$args"
    done
    for v in $(rb CTHELPERD_PROFILE_VARS); do
        grep -qx "$v" "$T/cargo.txt" && ok "cargo runs with $v (router-build.mk, over the feed's)" ||
            bad "cargo environment lacks $v" "$(cat "$T/cargo.txt")"
    done
else
    bad "Build/Compile" "$out"
fi
[ "$(rb CTHELPERD_CARGO_ARGS)" = --no-default-features ] && [[ " $(rb CTHELPERD_PROFILE_VARS) " == *" CARGO_PROFILE_RELEASE_PANIC=abort "* ]] &&
    ok "router-build.mk: --no-default-features, panic=abort" || bad "router-build.mk content"

# Package/cthelperd/install (with a stand-in for cargo install's binary)
mkdir -p "$T/build/cthelperd/ipkg-install/bin"
printf '#!/bin/sh\n' >"$T/build/cthelperd/ipkg-install/bin/cthelperd"
if out=$("${MK[@]}" install DESTDIR="$T/dest" 2>&1); then ok "Package/cthelperd/install runs"; else bad "install" "$out"; fi
layout=$(cd "$T/dest" && find . -type f -printf '%m %p\n' | sort)
check "installed files and modes" "$layout" "600 ./etc/config/cthelperd
644 ./etc/capabilities/cthelperd.json
755 ./etc/init.d/cthelperd
755 ./usr/sbin/cthelperd"
cmp -s "$T/dest/etc/config/cthelperd" init.d/cthelperd.config &&
    cmp -s "$T/dest/etc/init.d/cthelperd" init.d/cthelperd &&
    cmp -s "$T/dest/etc/capabilities/cthelperd.json" init.d/cthelperd.capabilities.json &&
    ok "installed config, init script and capabilities are the files in init.d/" ||
    bad "installed config/init/capabilities differ from init.d/"
grep -q "^CAPS=/etc/capabilities/cthelperd.json$" init.d/cthelperd &&
    ok "the init script reads the capabilities where the package puts them" ||
    bad "init script CAPS path"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
