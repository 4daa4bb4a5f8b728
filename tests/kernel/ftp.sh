#!/bin/bash
# tests/kernel/ftp.sh — FTP through a user-space conntrack helper, in a real
# kernel. Runs INSIDE the run-in-kernel.sh guest (tests/kernel/run.sh boots it).
#
#   ftp.sh [--reference conntrackd]        (or REFERENCE=conntrackd)
# packages: conntrackd
#
# Default: tests $CTHELPERD. With --reference conntrackd, Debian's conntrackd
# 1.4.7 in helper mode plays the daemon (its known bugs are expected failures
# in that mode only) — the benchmark reuses this.
#
# Topology (lib.sh): client 192.0.2.2 / 2001:db8:1::2 -- router -- server
# 198.51.100.2 / 2001:db8:2::2; router nftables forward policy drop except
# established,related and new tcp/21 from the client; pyftpdlib on the server,
# curl and ftp-session.py (ftplib) on the client; a 1 MiB random file whose
# SHA-256 is verified on every download.
#
# Phases
#   A      no daemon, no helper: control passes, PASV/PORT data connections fail
#   C      daemon running + nft ct helper rules: PASV, EPSV, PORT, EPRT (IPv4),
#          EPSV, EPRT (IPv6) pass; a pending expectation is listed (v4 + v6);
#          the kernel's nf_conntrack_ftp is not loaded; the helper analysed only
#          control packets (data packets a kernel queues: expected_passed)
#   Stop   SIGTERM: exit status 0; a control session opened before still works
#          (NOOP/PWD); new control connections still pass (helper disabled)
#   Crash  SIGKILL: new control connections pass while nobody serves the queue
#          (cthelperd: its table's queue rules let them by; conntrackd: they fail,
#          its helper's hook queues with bypass, which skips the confirmation of the
#          connection); restart, time until a PASV
#          transfer works again; a session opened before the kill transfers
#   Foreign (cthelperd only) conntrackd in helper mode holds the ftp helper:
#          cthelperd refuses to start and names it, conntrackd keeps its helper;
#          once conntrackd is gone cthelperd takes the orphaned helper over
# Prints one line per check and finally "N passed, M failed"; exit 0 iff M = 0.
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"
scenario_begin ftp "$@"
if [ -n "$REFERENCE" ]; then say "ftp scenario, daemon: $REFERENCE (reference)"; else say "ftp scenario, daemon: $CTHELPERD"; fi

kernel_setup || exit 2
setup_topology || exit 2
say "topology up"

# ---------------------------------------------------------------- FTP servers
mkdir -p /srv/ftp
head -c 1048576 /dev/urandom >/srv/ftp/blob.bin
SUM=$(sha256sum </srv/ftp/blob.bin | cut -d' ' -f1)
sx $PY "$HERE/ftp-server.py" /srv/ftp $S4 $S6 >"$RESULTS/pyftpdlib.log" 2>&1 &
load_firewall || exit 2
for ((i = 0; i < 150; i++)); do
    [ "$(sx ss -Hltn 'sport = :21' | wc -l)" -ge 2 ] && break
    sleep 0.2
done
say "pyftpdlib listening on $S4:21 and [$S6]:21"

# xfer NAME 4|6 curl-args... : download blob.bin with curl from the client, verify it.
# XFER_FORBID=CMD: fail if curl sent CMD (curl falls back from a failed EPSV
# data connection to PASV, which would hide a missing EPSV expectation).
xfer() {
    local name=$1 fam=$2 url rc log
    shift 2
    [ "$fam" = 6 ] && url="ftp://[$S6]/blob.bin" || url="ftp://$S4/blob.bin"
    log=$RESULTS/curl-$name.log
    rm -f /tmp/dl.bin
    echo "=== $name: curl $* $url" >"$log"
    cx curl -gsSv --max-time "${XFER_MAX:-8}" --connect-timeout "${XFER_CONNECT:-4}" "$@" \
        -o /tmp/dl.bin "$url" >>"$log" 2>&1
    rc=$?
    if [ $rc = 0 ] && [ "$(sha256sum </tmp/dl.bin | cut -d' ' -f1)" != "$SUM" ]; then rc=99; fi
    if [ -n "${XFER_FORBID:-}" ] && grep -q "^> $XFER_FORBID" "$log"; then
        say "$name: curl fell back to $XFER_FORBID"; rc=98
    fi
    echo "$name rc=$rc" >>"$log"
    grep -E '^(> |< [0-9]|curl: )' "$log" | sed "s/^/$name /" >>"$RESULTS/curl.log"
    return $rc
}
# ctrl NAME 4|6 : a control connection only (login, PWD, QUIT)
ctrl() {
    local name=$1 url
    [ "$2" = 6 ] && url="ftp://[$S6]/" || url="ftp://$S4/"
    echo "=== $name: control only $url" >>"$RESULTS/curl.log"
    cx curl -gsS --max-time 6 --connect-timeout 4 -Q PWD -I "$url" >>"$RESULTS/curl.log" 2>&1
}


# pending_expect NAME 4|6 hold-cmd...: hold an expectation open on a fresh
# session and list it with conntrack -L expect; passes iff an expectation for
# proto 6 and the announced port is listed.
pending_expect() {
    local name=$1 fam=$2 host port rc=1 f
    shift 2
    [ "$fam" = 6 ] && host=$S6 || host=$S4
    f=$RESULTS/expect-list-$name.txt
    sess_open "$name" "$host" || { say "session $name: $SESS_REPLY"; return 1; }
    if sess_cmd "$name" "$@"; then
        port=$(sed -n 's/.* port=\([0-9]*\) .*/\1/p' <<<"$SESS_REPLY")
        rx conntrack -L expect -f ipv$fam >"$f" 2>&1
        if grep -E "proto=6 .*dport=$port( |$)" "$f" >/dev/null; then
            rc=0
            grep -q 'helper=ftp' "$f" || say "note: expectation listed without helper=ftp"
        fi
        say "$name: $SESS_REPLY"
        indent <"$f"
    else
        say "$name: $SESS_REPLY"
    fi
    sess_close "$name"
    return $rc
}

# expect_seen NAME: the port announced in transfer NAME (curl-NAME.log; the
# command is the name's middle part) shows up as a NEW expectation event
expect_seen() {
    local name=$1 log=$RESULTS/curl-$1.log port=
    case $name in
        *-PASV*) port=$(sed -n 's/^< 227 .*[(]*[0-9]*,[0-9]*,[0-9]*,[0-9]*,\([0-9]*\),\([0-9]*\).*/\1 \2/p' "$log" | head -n1)
                 [ -n "$port" ] && port=$(( ${port% *} * 256 + ${port#* } )) ;;
        *-EPSV*) port=$(sed -n 's/^< 229 .*|||\([0-9]*\)|.*/\1/p' "$log" | head -n1) ;;
        *-PORT*) port=$(sed -n 's/^> PORT [0-9]*,[0-9]*,[0-9]*,[0-9]*,\([0-9]*\),\([0-9]*\).*/\1 \2/p' "$log" | head -n1)
                 [ -n "$port" ] && port=$(( ${port% *} * 256 + ${port#* } )) ;;
        *-EPRT*) port=$(sed -n 's/^> EPRT |[12]|[^|]*|\([0-9]*\)|.*/\1/p' "$log" | head -n1) ;;
    esac
    [ -n "$port" ] || { say "$name: no announced port in $log"; return 2; }
    grep -q "\[NEW\] .*proto=6 .* dport=$port mask-src" "$RESULTS/expect-events.txt"
}

# ================================================================ phase A
say "=== phase A: no daemon, no helper (forward allows only established,related + new tcp/21)"
ctrl "A-ctrl4" 4; check "A control connection (IPv4)" pass $?
ctrl "A-ctrl6" 6; check "A control connection (IPv6)" pass $?
xfer "A-PASV" 4 --disable-epsv; check "A passive PASV (IPv4) blocked" fail $?
xfer "A-PORT" 4 -P $C4 --disable-eprt; check "A active PORT (IPv4) blocked" fail $?
rx conntrack -F >/dev/null 2>&1

# ================================================================ phase C
say "=== phase C: $MODE running"
start_daemon "$RESULTS/daemon.log"; rc=$?
check "C daemon starts and registers ftp (IPv4 + IPv6)" pass $rc
if [ $rc != 0 ]; then
    say "cannot continue without a daemon"; indent <"$RESULTS/daemon.log"
    summary; exit
fi
nfct_helpers | indent
if load_helper_rules; then
    say "nft helper rules loaded (ct helper l3proto ${HELPER_RULES:-inet})"
else
    say "nft refused 'l3proto inet'; falling back to one ct helper object per family"
    HELPER_RULES=split; load_helper_rules
fi
check "C nft ct helper rules accepted" pass $?
rx nft list table inet helpers >"$RESULTS/nft-helpers.txt" 2>&1
# the kernel lists the families it resolved: "l3proto inet" = IPv4 and IPv6 helper found
if [ "${HELPER_RULES:-inet}" = inet ]; then
    grep -q 'l3proto inet' "$RESULTS/nft-helpers.txt"; rc=$?
    check "C nft ct helper object resolved both families (l3proto $(sed -n 's/^[[:space:]]*l3proto //p' "$RESULTS/nft-helpers.txt" | head -n1))" pass $rc
fi
# expectation events of both families (conntrack -E expect takes no -f)
ip netns exec router conntrack -E expect -o timestamp >"$RESULTS/expect-events.txt" 2>&1 &
EV_PID=$!
sleep 0.3
ctrl "C-ctrl4" 4; check "C control connection (IPv4)" pass $?
xfer "C-PASV4" 4 --disable-epsv; check "C passive PASV (IPv4)" pass $?
XFER_FORBID=PASV xfer "C-EPSV4" 4; rc=$?; check "C passive EPSV (IPv4)$(refnote 'conntrackd 1.4.7 bug')" "$(want pass fail)" $rc
xfer "C-PORT4" 4 -P $C4 --disable-eprt; check "C active PORT (IPv4)" pass $?
XFER_FORBID=PORT xfer "C-EPRT4" 4 -P $C4; check "C active EPRT (IPv4)" pass $?
ctrl "C-ctrl6" 6; check "C control connection (IPv6)" pass $?
xfer "C-EPSV6" 6; rc=$?; check "C passive EPSV (IPv6)$(refnote 'conntrackd 1.4.7 bug')" "$(want pass fail)" $rc
xfer "C-EPRT6" 6 -P "[$C6]"; rc=$?; check "C active EPRT (IPv6)$(refnote 'conntrackd 1.4.7 drops the EPRT packet')" "$(want pass fail)" $rc
pending_expect pend-pasv4 4 hold-passive; check "C pending PASV expectation listed (IPv4)" pass $?
pending_expect pend-epsv6 6 hold-passive; rc=$?
check "C pending EPSV expectation listed (IPv6)$(refnote 'conntrackd 1.4.7 bug')" "$(want pass fail)" $rc
# (an active-mode expectation cannot be held pending: pyftpdlib connects at
# once on PORT/EPRT; the event log below covers those.)
sleep 0.5
kill $EV_PID 2>/dev/null; wait $EV_PID 2>/dev/null
say "expectation events: $(grep -c '\[NEW\]' "$RESULTS/expect-events.txt") NEW (expect-events.txt)"
for n in C-PASV4 C-EPSV4 C-PORT4 C-EPRT4 C-EPSV6 C-EPRT6; do
    expect_seen "$n"; rc=$?
    case $n in
        C-EPSV*) check "C expectation event for the $n port$(refnote 'conntrackd 1.4.7 bug')" "$(want pass fail)" $rc ;;
        C-EPRT6) check "C expectation event for the $n port$(refnote 'conntrackd 1.4.7 drops the EPRT packet')" "$(want pass fail)" $rc ;;
        *) check "C expectation event for the $n port" pass $rc ;;
    esac
done
! lsmod | grep -q '^nf_conntrack_ftp '; check "C kernel nf_conntrack_ftp not loaded" pass $?
# Data connections cost no analysis: whatever the kernel queues of them (kernels that
# give expected connections their master's helper queue every data packet) is passed
# unparsed as expected_passed; the helper's own packets are the control connections'.
# Six 1 MiB transfers are some 4,000 data segments; the control sessions a few hundred.
if [ -z "$REFERENCE" ]; then
    n0=$(grep -c ': ftp: packets' "$DAEMON_LOG")
    kill -USR1 "$DAEMON_PID"
    for ((i = 0; i < 50; i++)); do
        [ "$(grep -c ': ftp: packets' "$DAEMON_LOG")" -gt "$n0" ] && break; sleep 0.1
    done
    line=$(grep -E ': ftp: packets [0-9]+' "$DAEMON_LOG" | tail -n1)
    n=$(sed -nE 's/.*: ftp: packets ([0-9]+) .*/\1/p' <<<"$line")
    e=$(sed -nE 's/.* expected_passed ([0-9]+).*/\1/p' <<<"$line")
    say "ftp counters after phase C: packets ${n:-?}, expected_passed ${e:-?}"
    [ -n "$n" ] && [ "$n" -gt 0 ] && [ "$n" -lt 1000 ]
    check "C data connections cost no analysis: ${n:-?} packets analysed (control connections), ${e:-?} data packets passed unparsed" pass $?
fi

# ================================================================ phase Stop
say "=== phase Stop: clean stop (SIGTERM) with a control session open"
sess_open stop4 $S4; check "Stop session opened before the stop" pass $?
sess_cmd stop4 retr; check "Stop transfer on that session while running" pass $?
stop_daemon TERM; rc=$?
check "Stop daemon exits with status 0 on SIGTERM" pass $rc
say "helpers after stop: $(nfct_helpers | tr '\n' ';')"
sess_cmd stop4 noop; check "Stop old session NOOP after the stop" pass $?
sess_cmd stop4 pwd; check "Stop old session PWD after the stop" pass $?
ctrl "Stop-ctrl4" 4; rc=$?
check "Stop new control connection after the stop (IPv4)$(refnote 'conntrackd leaves its helpers enabled')" "$(want pass fail)" $rc
ctrl "Stop-ctrl6" 6; rc=$?
check "Stop new control connection after the stop (IPv6)$(refnote 'conntrackd leaves its helpers enabled')" "$(want pass fail)" $rc
# no helper is running, so no expectation: the data connection is blocked
sess_cmd stop4 retr; check "Stop old session transfer without a helper blocked" fail $?
sess_close stop4
rx conntrack -F >/dev/null 2>&1

# ================================================================ phase Crash
say "=== phase Crash: SIGKILL, then restart"
start_daemon "$RESULTS/daemon-2.log"; check "Crash daemon (re)starts" pass $?
sess_open crash4 $S4; check "Crash session opened before the kill" pass $?
sess_cmd crash4 retr; check "Crash transfer on that session before the kill" pass $?
stop_daemon KILL; say "daemon killed (rc=$?); helpers: $(nfct_helpers | tr '\n' ';')"
ctrl "Crash-ctrl4" 4
check "Crash new control connection while the daemon is dead (no listener)$(refnote 'its helper hook bypasses the confirmation')" "$(want pass fail)" $?
sess_cmd crash4 noop; check "Crash old session NOOP while the daemon is dead" pass $?
t_start=${EPOCHREALTIME/./}
start_daemon "$RESULTS/daemon-3.log"; check "Crash daemon restarts" pass $?
ok=1
for ((try = 1; try <= 8; try++)); do
    t_try=${EPOCHREALTIME/./}
    if XFER_CONNECT=3 xfer "Crash-retry$try" 4 --disable-epsv; then ok=0; break; fi
done
t_end=${EPOCHREALTIME/./}
secs() { printf '%d.%02d' $(($1 / 1000000)) $(( ($1 / 10000) % 100 )); }
say "recovery: restart -> daemon ready $DAEMON_READY_S s; restart -> start of the first working PASV transfer $(secs $((t_try - t_start))) s (attempt $try); that transfer took $(secs $((t_end - t_try))) s"
check "Crash new PASV transfer works after the restart" pass $ok
sess_cmd crash4 retr; check "Crash session from before the kill transfers after the restart" pass $?
sess_close crash4
stop_daemon TERM; check "Crash restarted daemon exits with status 0 on SIGTERM" pass $?

# ================================================================ phase Foreign
if [ -z "$REFERENCE" ]; then
    say "=== phase Foreign: conntrackd in helper mode holds the ftp helper"
    write_conntrackd_conf
    rm -f /run/lock/conntrackd-helper.lock
    # It updates the ftp helpers our stop left registered (disabled) to its queue 0.
    ip netns exec router conntrackd -C /tmp/conntrackd-helper.conf >"$RESULTS/conntrackd-foreign.log" 2>&1 &
    ctd=$!
    for ((i = 0; i < 100; i++)); do
        grep -q 'initialization completed' "$RESULTS/conntrackd-foreign.log" 2>/dev/null && break
        sleep 0.1
    done
    say "helpers with conntrackd running: $(nfct_helpers | tr '\n' ';')"
    # shellcheck disable=SC2086 # word-split extra arguments, as start_daemon does
    timeout 30 ip netns exec router "$CTHELPERD" -v ${CTHELPERD_ARGS:-} >"$RESULTS/daemon-4.log" 2>&1
    rc=$?
    indent <"$RESULTS/daemon-4.log" | grep -E 'another process|error' | head -n 3
    [ $rc = 1 ] && grep -q 'registered by another process that listens on queue 0' "$RESULTS/daemon-4.log"
    check "Foreign cthelperd refuses to take the ftp helper from a running conntrackd (exit $rc) and names it" pass $?
    [ "$(nfct_helpers | awk '$1 == "ftp" && $4 == 0' | grep -c .)" -ge 1 ]
    check "Foreign conntrackd keeps its helper (ftp still on its queue 0)" pass $?
    kill "$ctd" 2>/dev/null; wait "$ctd" 2>/dev/null
    start_daemon "$RESULTS/daemon-5.log"; check "Foreign once conntrackd is gone cthelperd starts" pass $?
    grep -q 'no longer listens there; taking it over' "$RESULTS/daemon-5.log"
    check "Foreign it says it took the orphaned helper over" pass $?
    xfer Foreign-pasv 4 --disable-epsv; check "Foreign a PASV transfer works through it" pass $?
    stop_daemon TERM; check "Foreign daemon exits with status 0 on SIGTERM" pass $?
fi

dmesg | grep -E 'cthd-fwd-drop|nf_conntrack|nfnetlink|cthelper' >"$RESULTS/dmesg.txt"
say "forward drops logged: $(grep -c cthd-fwd-drop "$RESULTS/dmesg.txt")"
summary
