#!/bin/bash
# tests/kernel/openwrt.sh — the OpenWrt integration in a real kernel: UCI
# configuration file, the daemon's own firewall wiring (table inet cthelperd)
# next to a stand-in for fw4's table, SIGHUP reloads, status, clean stop.
# Runs INSIDE the run-in-kernel.sh guest (tests/kernel/run.sh boots it).
#
# Unlike ftp.sh this scenario loads NO helper rules of its own: the daemon
# (config /tmp/cthelperd.conf, status socket /tmp/cthelperd.sock) installs
# them. The forward policy lives in `table inet fw4`, loaded the way fw4 loads
# it (`nft -f` of "table inet fw4; flush table inet fw4; table inet fw4 {...}").
#
# Checks
#   check-config: shipped file valid, output round-trips; a bad file -> exit 2
#     with file:line: option; the daemon refuses to start on it
#   start: table inet cthelperd with ct helper ftp, tftp, sip-tcp, sip-udp
#     (l3proto inet); the helpers on the shipped queues 48000 / 48001 / 48002
#   PASV (IPv4), EPSV (IPv6) transfers
#   fw4 flush + reload during a slow transfer: it completes, a new one works,
#     table inet cthelperd untouched
#   SIGHUP expect_timeout 300 -> 120: kernel policy updated, transfer works
#   SIGHUP broken file: refused (logged with file:line), still serving
#   SIGHUP tftp enabled '0': tftp serves no more (disabled in the kernel, no rule in the table)
#   status: counters with packets > 0 and the kernel's queue line
#   SIGTERM: exit 0, table inet cthelperd gone, socket removed
# Prints one line per check and finally "N passed, M failed"; exit 0 iff M = 0.
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"
scenario_begin openwrt "$@"
if [ -n "$REFERENCE" ]; then
    say "the openwrt scenario tests cthelperd's own integration; no reference mode"
    echo "0 passed, 1 failed"; exit 1
fi
say "openwrt scenario, daemon: $CTHELPERD"
SHIPPED=$REPO/init.d/cthelperd.config
CONF=/tmp/cthelperd.conf
SOCK=/tmp/cthelperd.sock
CTHELPERD_ARGS="--config $CONF --control-socket $SOCK"

# ---------------------------------------------------------------- check-config (no kernel needed)
"$CTHELPERD" check-config "$SHIPPED" >"$RESULTS/check-config.txt" 2>&1; rc=$?
check "check-config accepts the shipped file" pass $rc
"$CTHELPERD" check-config "$RESULTS/check-config.txt" >"$RESULTS/check-config-2.txt" 2>&1 &&
    cmp -s "$RESULTS/check-config.txt" "$RESULTS/check-config-2.txt"
check "check-config output is itself a valid file that prints the same" pass $?
sed 's/option family .any./option family '"'"'ipv5'"'"'/' "$SHIPPED" >/tmp/bad.conf
badline=$(grep -n "ipv5" /tmp/bad.conf | head -n1 | cut -d: -f1)
"$CTHELPERD" check-config /tmp/bad.conf >"$RESULTS/check-config-bad.txt" 2>&1; rc=$?
say "check-config /tmp/bad.conf: rc=$rc: $(cat "$RESULTS/check-config-bad.txt")"
[ $rc = 2 ] && grep -q "^cthelperd: error: /tmp/bad.conf:$badline: family: " "$RESULTS/check-config-bad.txt"
check "check-config refuses family 'ipv5' with exit 2 and file:line: option" pass $?

kernel_setup || exit 2
setup_topology || exit 2
say "topology up"

ip netns exec router "$CTHELPERD" --config /tmp/bad.conf --control-socket $SOCK >"$RESULTS/daemon-bad.log" 2>&1; rc=$?
say "daemon on the bad file: rc=$rc: $(cat "$RESULTS/daemon-bad.log")"
[ $rc != 0 ] && [ "$(nfct_helpers | wc -l)" = 0 ]
check "daemon refuses to start on a bad file (non-zero exit, nothing registered)" pass $?

# ---------------------------------------------------------------- servers, fw4 stand-in
mkdir -p /srv/ftp
head -c 1048576 /dev/urandom >/srv/ftp/blob.bin
SUM=$(sha256sum </srv/ftp/blob.bin | cut -d' ' -f1)
sx $PY "$HERE/ftp-server.py" /srv/ftp $S4 $S6 >"$RESULTS/pyftpdlib.log" 2>&1 &
# what fw4 writes: declare, flush and define its own table in one transaction
cat >/tmp/fw4.nft <<'NFT'
table inet fw4
flush table inet fw4
table inet fw4 {
    chain forward {
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "r0" oifname "r1" tcp dport 21 ct state new accept
        iifname "r0" oifname "r1" udp dport 69 ct state new accept
        limit rate 20/second log prefix "cthd-fwd-drop: " level warn
    }
}
NFT
rx nft -f /tmp/fw4.nft || exit 2
for ((i = 0; i < 150; i++)); do
    [ "$(sx ss -Hltn 'sport = :21' | wc -l)" -ge 2 ] && break
    sleep 0.2
done
say "pyftpdlib listening on $S4:21 and [$S6]:21"

# xfer NAME 4|6 curl-args...: download blob.bin, verify it
xfer() {
    local name=$1 fam=$2 url rc log
    shift 2
    [ "$fam" = 6 ] && url="ftp://[$S6]/blob.bin" || url="ftp://$S4/blob.bin"
    log=$RESULTS/curl-$name.log
    echo "=== $name: curl $* $url" >"$log"
    cx curl -gsSv --max-time "${XFER_MAX:-10}" --connect-timeout 4 "$@" \
        -o "/tmp/dl-$name.bin" "$url" >>"$log" 2>&1
    rc=$?
    if [ $rc = 0 ] && [ "$(sha256sum <"/tmp/dl-$name.bin" | cut -d' ' -f1)" != "$SUM" ]; then rc=99; fi
    echo "$name rc=$rc" >>"$log"
    return $rc
}
# log_wait PATTERN [SECONDS]: wait for PATTERN in the daemon log
log_wait() {
    local i
    for ((i = 0; i < ${2:-10} * 10; i++)); do
        grep -q -- "$1" "$DAEMON_LOG" && return 0
        sleep 0.1
    done
    return 1
}

# ---------------------------------------------------------------- start
cp "$SHIPPED" "$CONF"
start_daemon "$RESULTS/daemon.log"; rc=$?
check "daemon starts with $CONF (ftp, tftp registered)" pass $rc
[ $rc = 0 ] || { summary; exit; }
rx nft list table inet cthelperd >"$RESULTS/nft-cthelperd-1.txt" 2>&1
indent <"$RESULTS/nft-cthelperd-1.txt"
grep -q 'ct helper ftp' "$RESULTS/nft-cthelperd-1.txt" && grep -q 'ct helper tftp' "$RESULTS/nft-cthelperd-1.txt" &&
    grep -q 'ct helper sip-tcp' "$RESULTS/nft-cthelperd-1.txt" && grep -q 'ct helper sip-udp' "$RESULTS/nft-cthelperd-1.txt" &&
    [ "$(grep -c 'l3proto inet' "$RESULTS/nft-cthelperd-1.txt")" = 4 ] &&
    grep -q 'tcp dport 21 ct helper set "ftp"' "$RESULTS/nft-cthelperd-1.txt" &&
    grep -q 'udp dport 5060 ct helper set "sip-udp"' "$RESULTS/nft-cthelperd-1.txt"
check "daemon installed table inet cthelperd (ct helper ftp, tftp, sip-tcp, sip-udp, l3proto inet, port rules)" pass $?
! rx nft list table inet helpers >/dev/null 2>&1
check "no helper rules other than the daemon's (no table inet helpers)" pass $?
# the shipped queue_base: ftp on queue 48000, tftp on 48001, sip on 48002, both
# families (sip on TCP and UDP)
nfct_helpers >"$RESULTS/helpers-1.txt"
[ "$(awk '$1 == "ftp" && $4 == 48000' "$RESULTS/helpers-1.txt" | wc -l)" = 2 ] &&
    [ "$(awk '$1 == "tftp" && $4 == 48001' "$RESULTS/helpers-1.txt" | wc -l)" = 2 ] &&
    [ "$(awk '$1 == "sip" && $4 == 48002' "$RESULTS/helpers-1.txt" | wc -l)" = 4 ]
check "helpers on the shipped queues: ftp 48000, tftp 48001, sip 48002 (IPv4 and IPv6)" pass $?

xfer PASV4 4 --disable-epsv; check "PASV transfer (IPv4)" pass $?
xfer EPSV6 6; check "EPSV transfer (IPv6)" pass $?

# ---------------------------------------------------------------- fw4 reload
say "=== fw4 reload during a slow transfer"
rm -f /tmp/dl-slow4.bin
XFER_MAX=30 xfer slow4 4 --disable-epsv --limit-rate 250k &
slow=$!
# Flush only once data flows: a data connection whose SYN met the flushed
# table would be dropped and its expectation used up (a loaded host once took
# longer than the fixed 1.5 s this waited before).
for ((i = 0; i < 150; i++)); do
    [ -s /tmp/dl-slow4.bin ] && break
    kill -0 $slow 2>/dev/null || break
    sleep 0.1
done
sleep 0.5
rx nft flush table inet fw4; rc1=$?
rx nft -f /tmp/fw4.nft; rc2=$?
say "fw4 stand-in flushed (rc=$rc1) and reloaded (rc=$rc2)"
wait $slow; check "transfer running across the fw4 flush + reload completes" pass $?
rx nft list table inet cthelperd >"$RESULTS/nft-cthelperd-2.txt" 2>&1
cmp -s "$RESULTS/nft-cthelperd-1.txt" "$RESULTS/nft-cthelperd-2.txt"
check "table inet cthelperd unchanged by the fw4 reload" pass $?
xfer PASV4-after-fw4 4 --disable-epsv; check "new PASV transfer after the fw4 reload (IPv4)" pass $?
xfer EPSV6-after-fw4 6; check "new EPSV transfer after the fw4 reload (IPv6)" pass $?

# ---------------------------------------------------------------- reloads
say "=== SIGHUP: ftp expect_timeout 300 -> 120"
sed -i '/option name .ftp./,/^config/ s/option expect_timeout .300./option expect_timeout '"'"'120'"'"'/' "$CONF"
kill -HUP "$DAEMON_PID"
log_wait "configuration reloaded"; check "reload logged" pass $?
grep -E 'reload: helper ftp \(ipv[46]\) updated' "$DAEMON_LOG" | indent
[ "$(grep -cE 'reload: helper ftp \(ipv[46]\) updated: .* expect_timeout 120' "$DAEMON_LOG")" = 2 ] &&
    ! grep -q 'reload: helper tftp' "$DAEMON_LOG"
check "reload updated ftp (both families) and left tftp alone" pass $?
# nfct does not print policies; the proof is a pending expectation's timeout
# (first column of conntrack -L expect), which comes from the helper's policy
{ echo hold-passive; sleep 2; echo quit; } |
    ip netns exec client $PY "$HERE/ftp-session.py" $S4 blob.bin "$SUM" >"$RESULTS/sess-hold.out" 2>&1
port=$(sed -n 's/.*port=\([0-9]*\) .*/\1/p' "$RESULTS/sess-hold.out" | head -n1)
rx conntrack -L expect >"$RESULTS/expect-after-hup.txt" 2>&1
indent <"$RESULTS/expect-after-hup.txt"
t=$(awk -v p="dport=${port:-none}" '$0 ~ p" " && /proto=6/ { print $1; exit }' "$RESULTS/expect-after-hup.txt")
say "pending PASV expectation for port ${port:-?}: timeout ${t:-none} s"
[ -n "$t" ] && [ "$t" -le 120 ] && [ "$t" -gt 100 ]
check "kernel policy updated: a new ftp expectation times out after <= 120 s (was 300)" pass $?
xfer PASV4-after-hup 4 --disable-epsv; check "PASV transfer after the reload" pass $?

say "=== SIGHUP: broken file"
cp "$CONF" /tmp/good.conf
sed -i 's/option queue_maxlen .1024./option queue_maxlen '"'"'lots'"'"'/' "$CONF"
badline=$(grep -n "lots" "$CONF" | cut -d: -f1)
kill -HUP "$DAEMON_PID"
log_wait "reload refused"; rc=$?
grep "reload refused" "$DAEMON_LOG" | indent
[ $rc = 0 ] && grep -q "reload refused: $CONF:$badline: queue_maxlen: " "$DAEMON_LOG"
check "broken file refused with file:line: option" pass $?
kill -0 "$DAEMON_PID" 2>/dev/null && [ "$(helpers_serving ftp)" = 2 ] && [ "$(helpers_serving tftp)" = 2 ]
check "daemon still running with its helpers serving" pass $?
xfer PASV4-after-bad 4 --disable-epsv; check "PASV transfer after the refused reload" pass $?

say "=== SIGHUP: tftp enabled '0'"
sed '/option name .tftp./,/^config/ s/option enabled .1./option enabled '"'"'0'"'"'/' /tmp/good.conf >"$CONF"
n0=$(grep -c "configuration reloaded" "$DAEMON_LOG")
kill -HUP "$DAEMON_PID"
for ((i = 0; i < 100; i++)); do
    [ "$(grep -c "configuration reloaded" "$DAEMON_LOG")" -gt "$n0" ] && break; sleep 0.1
done
grep -E "reload: (helper|queue|table)" "$DAEMON_LOG" | tail -n 4 | indent
say "helpers: $(nfct_helpers | tr '\n' ';')"
[ "$(helpers_serving tftp)" = 0 ] && [ "$(nfct_helpers | awk '$1 == "tftp"' | wc -l)" = 2 ]
check "tftp disabled in the kernel (still registered, status disabled)" pass $?
rx nft list table inet cthelperd >"$RESULTS/nft-cthelperd-3.txt" 2>&1
! grep -q tftp "$RESULTS/nft-cthelperd-3.txt" && grep -q 'ct helper set "ftp"' "$RESULTS/nft-cthelperd-3.txt"
check "tftp gone from table inet cthelperd, ftp still there" pass $?
[ "$(helpers_serving ftp)" = 2 ]; check "ftp still serving" pass $?
xfer PASV4-after-tftp-off 4 --disable-epsv; check "PASV transfer after disabling tftp" pass $?

# ---------------------------------------------------------------- status
"$CTHELPERD" status --control-socket $SOCK >"$RESULTS/status.txt" 2>&1; rc=$?
indent <"$RESULTS/status.txt"
[ $rc = 0 ] && grep -qE '^helper ftp .* packets [1-9][0-9]* expectations [1-9]' "$RESULTS/status.txt" &&
    grep -qE '^queue 48000: queue_total [0-9]+ queue_dropped [0-9]+ queue_user_dropped [0-9]+ id_sequence [1-9]' "$RESULTS/status.txt" &&
    grep -q '^global: verdict_errors 0 ' "$RESULTS/status.txt"
check "status: ftp packets and expectations > 0, queue 48000 kernel counters, no verdict errors" pass $?

# ---------------------------------------------------------------- stop
stop_daemon TERM; check "SIGTERM: exit status 0" pass $?
! rx nft list table inet cthelperd >/dev/null 2>&1; check "table inet cthelperd removed on stop" pass $?
[ ! -e $SOCK ]; check "status socket removed on stop" pass $?
"$CTHELPERD" status --control-socket $SOCK >"$RESULTS/status-stopped.txt" 2>&1; rc=$?
say "status after stop: rc=$rc: $(cat "$RESULTS/status-stopped.txt")"
[ $rc = 1 ]; check "status exits 1 when the daemon is not running" pass $?
rx nft list table inet fw4 >/dev/null 2>&1; check "fw4 stand-in untouched by the daemon" pass $?

dmesg | grep -E 'cthd-fwd-drop|nf_conntrack|nfnetlink|cthelper' >"$RESULTS/dmesg.txt"
say "forward drops logged: $(grep -c cthd-fwd-drop "$RESULTS/dmesg.txt")"
summary
