#!/usr/bin/env bash
# tests/openwrt/test-init.sh — the procd init script init.d/cthelperd
# (installed as /etc/init.d/cthelperd), off the router:
#   1. syntax: sh -n, busybox ash -n (OpenWrt's shell), dash -n;
#   2. behaviour: the script sourced under busybox ash with recorded stand-ins for
#      rc.common / procd.sh / functions.sh (tests/openwrt/procd-standins.sh), run
#      against UCI files; the recorded procd calls (instance, command line,
#      respawn, stdout/stderr, reload trigger, validation schema, HUP on reload)
#      are compared with the expected ones.
# Installs busybox with apt-get if it is missing. Prints "N passed, M failed";
# exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

INIT=init.d/cthelperd
SHIPPED=init.d/cthelperd.config
STANDINS=tests/openwrt/procd-standins.sh

if ! command -v busybox >/dev/null; then
    echo "test-init: installing busybox" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox >/dev/null 2>&1 ||
        { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox >/dev/null 2>&1; }
fi
ASH=(busybox ash)
busybox ash -c true 2>/dev/null || { echo "test-init: busybox ash unavailable" >&2; exit 1; }

pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; [ $# -gt 1 ] && printf '%s\n' "$2" | sed 's/^/     /'; }

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
# the shipped capabilities file, where the script looks for it
export FAKE_CAPS=$PWD/init.d/cthelperd.capabilities.json

# --- 1. syntax -----------------------------------------------------------------
for sh in "sh" "busybox ash" "dash"; do
    if ! command -v "${sh%% *}" >/dev/null; then continue; fi
    if out=$($sh -n "$INIT" 2>&1); then ok "syntax: $sh -n"; else bad "syntax: $sh -n" "$out"; fi
done
if head -1 "$INIT" | grep -qx '#!/bin/sh /etc/rc.common'; then ok "shebang: /bin/sh /etc/rc.common"; else bad "shebang" "$(head -1 "$INIT")"; fi
# OpenWrt installs it with the mode bits of the source (ipk.sh uses 0755 anyway).

# --- 2. behaviour --------------------------------------------------------------
# run NAME ACTION CONF EXPECTED [STDERR-REGEX]   (FAKE_RUNNING from the environment)
run() {
    local name=$1 action=$2 conf=$3 expected=$4 errpat=${5:-} out err rc
    out=$("${ASH[@]}" "$STANDINS" "$INIT" "$conf" "$action" 2>"$TMP/err")
    rc=$?
    err=$(cat "$TMP/err")
    if [ $rc -ne 0 ]; then
        bad "$name (exit $rc)" "$err"
        return
    fi
    if [ "$out" != "$expected" ]; then
        bad "$name" "$(diff <(printf '%s\n' "$expected") <(printf '%s\n' "$out") | sed -n '2,$p')"
        return
    fi
    if [ -n "$errpat" ]; then
        grep -Eq "$errpat" <<<"$err" || { bad "$name: stderr lacks /$errpat/" "$err"; return; }
    elif [ -n "$err" ]; then
        bad "$name: unexpected stderr" "$err"
        return
    fi
    ok "$name"
}

# write a UCI file: the shipped one with sed edits applied
variant() { # variant FILE SED-SCRIPT
    sed "$2" "$SHIPPED" >"$TMP/$1"
    echo "$TMP/$1"
}

TRIGGERS='reload_trigger [cthelperd]
validation_begin
schema [cthelperd] [globals] [enabled:bool:1] [log_level:or("error","warn","info","debug"):info] [syslog:bool:0] [queue_base:range(0,65535):48000] [queue_maxlen:uinteger:1024] [fail_open:bool:0] [firewall:bool:1]
schema [cthelperd] [helper] [name:string] [enabled:bool:1] [family:or("ipv4","ipv6","any"):any] [proto:or("tcp","udp","any")] [port:list(port)] [expect_max:uinteger] [expect_timeout:uinteger] [expect_max_signalling:uinteger] [expect_timeout_signalling:uinteger] [expect_max_audio:uinteger] [expect_timeout_audio:uinteger] [expect_max_video:uinteger] [expect_timeout_video:uinteger] [expect_max_image:uinteger] [expect_timeout_image:uinteger] [allow_low_ports:bool:0] [sip_direct_media:bool:1] [sip_direct_signalling:bool:1] [sip_timeout:uinteger:3600]
validation_end'

instance() { # instance [CONF]: the expected instance lines
    echo 'open_instance'
    echo 'set_param [command] [/usr/sbin/cthelperd] [--syslog]'
    [ -n "${1:-}" ] && echo "append_param [command] [--config] [$1]"
    echo 'set_param [respawn] [3600] [0] [5]'
    echo 'set_param [stdout] [1]'
    echo 'set_param [stderr] [1]'
    if [ -e "$FAKE_CAPS" ]; then
        echo 'add_jail [cthelperd]'
        echo "set_param [capabilities] [$FAKE_CAPS]"
        echo 'set_param [no_new_privs] [1]'
    fi
    echo 'close_instance'
}

started() { # started START_SERVICE_RC [INSTANCE-LINES]
    echo 'open_service [cthelperd]'
    [ -n "${2:-}" ] && printf '%s\n' "$2"
    printf '%s\n' "$TRIGGERS"
    echo "close_service [start_service=$1]"
}

run "defaults: START=20 after fw4 (S19), STOP=80, procd, /usr/sbin/cthelperd, /etc/config/cthelperd" \
    vars - 'vars [START=20] [STOP=80] [USE_PROCD=1] [PROG=/usr/sbin/cthelperd] [CONF=/etc/config/cthelperd]'

run "service_triggers: reload trigger on package cthelperd, validation of globals and helper sections" \
    triggers "$SHIPPED" "$TRIGGERS"

# The shipped file (at a test path: the command line names the file it was given).
cp "$SHIPPED" "$TMP/cthelperd"
run "start, shipped file: one instance, --syslog --config FILE, respawn 3600 0 5, stdout+stderr to logd, CAP_NET_ADMIN only (ujail)" \
    start "$TMP/cthelperd" "$(started 0 "$(instance "$TMP/cthelperd")")"
FAKE_CAPS=$TMP/no-caps.json run "start, no capabilities file: instance without the jail" \
    start "$TMP/cthelperd" "$(FAKE_CAPS=$TMP/no-caps.json; started 0 "$(instance "$TMP/cthelperd")")"
# the capabilities file: CAP_NET_ADMIN in every set (ambient, so that nft gets it too), nothing else
if out=$(python3 -c '
import json, sys
caps = json.load(open(sys.argv[1]))
sets = ["bounding", "effective", "ambient", "permitted", "inheritable"]
assert sorted(caps) == sorted(sets), sorted(caps)
for k in sets:
    assert caps[k] == ["CAP_NET_ADMIN"], (k, caps[k])
' init.d/cthelperd.capabilities.json 2>&1); then
    ok "capabilities file: CAP_NET_ADMIN only, in all five sets"
else
    bad "capabilities file" "$out"
fi

# only the first 'enabled' line (globals) is changed:
sed "0,/option enabled '1'/s//option enabled '0'/" "$SHIPPED" >"$TMP/disabled"
run "start, globals.enabled '0': no instance" start "$TMP/disabled" "$(started 0)"

sed "0,/option enabled '1'/s//option enabled 'no'/" "$SHIPPED" >"$TMP/disabled-no"
run "start, globals.enabled 'no' (UCI bool spelling): no instance" start "$TMP/disabled-no" "$(started 0)"

sed "0,/option enabled '1'/s//option enabled \"off\"/" "$SHIPPED" >"$TMP/disabled-dq"
run "start, globals.enabled \"off\" (double quotes): no instance" start "$TMP/disabled-dq" "$(started 0)"

f=$(variant helper-off "/config helper 'ftp'/,/^$/s/option enabled '1'/option enabled '0'/")
run "start, a helper disabled, globals enabled: instance (helpers are the daemon's business)" \
    start "$f" "$(started 0 "$(instance "$f")")"

# globals found by type, as the daemon finds it: anonymous or any name
sed "s/^config globals 'globals'/config globals/; 0,/option enabled '1'/s//option enabled '0'/" "$SHIPPED" >"$TMP/anon-off"
run "start, anonymous 'config globals' with enabled '0': no instance (the daemon reads it too)" \
    start "$TMP/anon-off" "$(started 0)"
sed "s/^config globals 'globals'/config globals 'main'/; 0,/option enabled '1'/s//option enabled '0'/" "$SHIPPED" >"$TMP/named-off"
run "start, 'config globals 'main'' with enabled '0': no instance" start "$TMP/named-off" "$(started 0)"
sed "s/^config globals 'globals'/config globals/; s/option log_level 'info'/option log_level 'loud'/" "$SHIPPED" >"$TMP/anon-bad"
run "start, anonymous globals with an invalid value: refused" \
    start "$TMP/anon-bad" "$(started 1)" "invalid configuration"
{ cat "$SHIPPED"; printf "\nconfig globals\n\toption syslog '1'\n"; } >"$TMP/two-globals"
run "start, two globals sections (the daemon refuses that): refused, message" \
    start "$TMP/two-globals" "$(started 1)" "2 globals sections"
sed -n "/^config helper/,\$p" "$SHIPPED" >"$TMP/globals-after-helpers"
printf "\nconfig globals\n\toption enabled 'off'\n" >>"$TMP/globals-after-helpers"
run "start, anonymous globals after the helper sections, enabled 'off': no instance" \
    start "$TMP/globals-after-helpers" "$(started 0)"

printf "config helper 'ftp'\n\toption name 'ftp'\n\toption proto 'tcp'\n\tlist port '21'\n\tlist port '2121'\n" >"$TMP/no-globals"
run "start, no globals section: defaults (enabled), instance" \
    start "$TMP/no-globals" "$(started 0 "$(instance "$TMP/no-globals")")"

run "start, no file at all: instance without --config (built-in defaults)" \
    start "$TMP/does-not-exist" "$(started 0 "$(instance)")"

f=$(variant bad-level "s/option log_level 'info'/option log_level 'verbose'/")
run "start, invalid globals.log_level: refused, no instance, message" \
    start "$f" "$(started 1)" "invalid configuration, not started"

f=$(variant bad-queue "s/option queue_base '48000'/option queue_base '70000'/")
run "start, globals.queue_base out of range: refused" \
    start "$f" "$(started 1)" "invalid configuration"

f=$(variant port-words "s/list port '21'/option port '21 2121'/")
run "start, option port '21 2121' (the daemon's other list spelling): accepted" \
    start "$f" "$(started 0 "$(instance "$f")")"

f=$(variant bad-port "s/list port '21'/list port 'ftp'/")
run "start, invalid helper port: refused, message names the section" \
    start "$f" "$(started 1)" "helper section 'ftp' has an invalid value"

f=$(variant low-ports "/config helper 'ftp'/a\\	option allow_low_ports '1'")
run "start, helper allow_low_ports '1' (a port forward to a server's low data ports): accepted" \
    start "$f" "$(started 0 "$(instance "$f")")"
f=$(variant bad-low-ports "/config helper 'ftp'/a\\	option allow_low_ports 'maybe'")
run "start, helper allow_low_ports 'maybe': refused, message names the section" \
    start "$f" "$(started 1)" "helper section 'ftp' has an invalid value"

f=$(variant proto-any "/config helper 'tftp'/,/^\$/s/option proto 'udp'/option proto 'any'/")
run "start, helper proto 'any' (all of the helper's protocols): accepted" \
    start "$f" "$(started 0 "$(instance "$f")")"
f=$(variant bad-proto "/config helper 'tftp'/,/^\$/s/option proto 'udp'/option proto 'sctp'/")
run "start, invalid helper proto: refused, message names the section" \
    start "$f" "$(started 1)" "helper section 'tftp' has an invalid value"
f=$(variant class-option "/config helper 'tftp'/a\\	option expect_max_audio '4'")
run "start, a per-class option (expect_max_<class>): left to the daemon, instance" \
    start "$f" "$(started 0 "$(instance "$f")")"

f=$(variant bad-family "/config helper 'tftp'/,/^\$/s/option family 'any'/option family 'inet'/")
run "start, invalid helper family: refused" \
    start "$f" "$(started 1)" "helper section 'tftp'"

sed "0,/option enabled '1'/s//option enabled '0'/; s/list port '21'/list port 'ftp'/" "$SHIPPED" >"$TMP/off-bad"
run "start, disabled and an invalid helper: no instance, no complaint" start "$TMP/off-bad" "$(started 0)"

# The kernel's own helper of the same name loaded: the daemon's registration would
# fail (EEXIST) and procd respawn it in a loop; the script names the fix instead.
mkdir -p "$TMP/mod-ftp/nf_conntrack_ftp" "$TMP/mod-tftp/nf_conntrack_tftp" "$TMP/mod-other/nf_conntrack_irc"
kmsg() { # kmsg HELPER PACKAGE: the message for a loaded nf_conntrack_HELPER
    echo "kernel module nf_conntrack_$1 is loaded and owns the helper name '$1': cthelperd not started (its registration would fail). Fix: rmmod nf_nat_$1 nf_conntrack_$1, and remove what loads it at boot: opkg remove $2"
}
FAKE_MODULES=$TMP/mod-ftp run "start, nf_conntrack_ftp loaded: no instance, logged and on stderr with rmmod + opkg remove" \
    start "$TMP/cthelperd" "$(started 1 "logger [-t] [cthelperd] [-p] [daemon.err] [$(kmsg ftp kmod-nf-nathelper)]")" \
    "nf_conntrack_ftp is loaded.*rmmod nf_nat_ftp nf_conntrack_ftp.*opkg remove kmod-nf-nathelper\$"
FAKE_MODULES=$TMP/mod-tftp run "start, no file, nf_conntrack_tftp loaded: no instance (the defaults include tftp)" \
    start "$TMP/does-not-exist" "$(started 1 "logger [-t] [cthelperd] [-p] [daemon.err] [$(kmsg tftp "kmod-nf-nathelper-extra (kmod-nf-nathelper-tftp from 25.x)")]")" \
    "nf_conntrack_tftp is loaded"
f=$(variant tftp-off "/config helper 'tftp'/,/^\$/s/option enabled '1'/option enabled '0'/")
FAKE_MODULES=$TMP/mod-tftp run "start, nf_conntrack_tftp loaded but cthelperd's tftp disabled: instance" \
    start "$f" "$(started 0 "$(instance "$f")")"
FAKE_MODULES=$TMP/mod-other run "start, another kernel helper (nf_conntrack_irc) loaded: instance" \
    start "$TMP/cthelperd" "$(started 0 "$(instance "$TMP/cthelperd")")"

# reload: HUP to a running daemon; otherwise (re)evaluate via start.
FAKE_RUNNING=1 run "reload, running: SIGHUP to the instance, nothing restarted" \
    reload "$TMP/cthelperd" 'running [cthelperd]
send_signal [cthelperd] [*] [HUP]'

FAKE_RUNNING=1 run "reload, running, new file has a bad value: still only SIGHUP (the daemon keeps its configuration)" \
    reload "$TMP/bad-level" 'running [cthelperd]
send_signal [cthelperd] [*] [HUP]'

FAKE_RUNNING=0 run "reload, not running (was disabled or gave up): started" \
    reload "$TMP/cthelperd" "running [cthelperd]
$(started 0 "$(instance "$TMP/cthelperd")")"

FAKE_RUNNING=1 run "reload, running, enabled set to '0': no instance (procd stops it), no signal" \
    reload "$TMP/disabled" "$(started 0)"

FAKE_RUNNING=1 run "reload, running, anonymous globals with enabled '0': no instance, no signal" \
    reload "$TMP/anon-off" "$(started 0)"

FAKE_RUNNING=1 run "reload, running, file removed: SIGHUP (daemon falls back to defaults)" \
    reload "$TMP/does-not-exist" 'running [cthelperd]
send_signal [cthelperd] [*] [HUP]'

# The validation schema names every option of the shipped file (the UCI schema),
# per section type, so that the two cannot drift apart.
schema_opts() { # schema_opts TYPE: option names in the init script's schema
    grep "^schema \[cthelperd\] \[$1\]" <<<"$TRIGGERS" | grep -o '\[[a-z_]*:' | tr -d '[:' | sort -u
}
file_opts() { # file_opts TYPE: option and list names of that section type in the shipped file
    awk -v t="$1" '$1 == "config" { cur = $2 } ($1 == "option" || $1 == "list") && cur == t { print $2 }' "$SHIPPED" | sort -u
}
for t in globals helper; do
    missing=$(comm -13 <(schema_opts "$t") <(file_opts "$t"))
    if [ -z "$missing" ] && [ -n "$(file_opts "$t")" ]; then
        ok "schema covers every '$t' option of the shipped file"
    else
        bad "schema lacks '$t' options of the shipped file" "$missing"
    fi
done

# The schema's defaults are the shipped file's values (which are the daemon's defaults,
# a Rust unit test checks that), so that validation and the daemon agree on a missing option.
schema_defaults() { # "option value" per schema entry with a default, of section type $1
    grep "^schema \[cthelperd\] \[$1\]" <<<"$TRIGGERS" | grep -o '\[[a-z_]*:[^]]*\]' |
        sed -n 's/^\[\([a-z_]*\):.*:\([^:"]*\)\]$/\1 \2/p' | sort
}
shipped_globals=$(awk '$1 == "config" { cur = $2 } $1 == "option" && cur == "globals" { gsub("\047", "", $3); print $2, $3 }' "$SHIPPED" | sort)
missing=$(comm -23 <(schema_defaults globals) <(printf '%s\n' "$shipped_globals"))
if [ -z "$missing" ] && [ -n "$(schema_defaults globals)" ]; then
    ok "schema defaults of globals equal the shipped file's values (queue_base $(sed -n 's/^queue_base //p' <<<"$shipped_globals"))"
else
    bad "schema defaults differ from the shipped file" "$missing"
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
