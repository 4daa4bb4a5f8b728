#!/bin/bash
# tests/kernel/nat.sh — FTP and TFTP through a NATing router with the
# user-space helpers (issue "NAT: FTP and TFTP through a masquerading
# router"), in a real kernel. Runs INSIDE the run-in-kernel.sh guest
# (tests/kernel/run.sh boots it).
#
#   nat.sh            (no reference mode: lib.sh's conntrackd setup is ftp-only)
#
# Topology (lib.sh): client 192.0.2.2 / 2001:db8:1::2 -- r0 router r1 --
# server 198.51.100.2 / 2001:db8:2::2, made a NAT setup:
#   * the router masquerades IPv4 leaving r1 and source-NATs IPv6 leaving r1
#     to 2001:db8:2::100 (table inet nat), so the server sees every client
#     connection as coming from 198.51.100.1 / 2001:db8:2::100 (an address
#     whose text is longer than the client's, so an EPRT rewrite changes the
#     length: the IPv6 sequence adjustment the daemon sets over ctnetlink);
#   * the server has NO route back to the client networks (its default routes
#     are deleted): anything the router does not translate fails;
#   * forward policy drop except established,related and new tcp/21, udp/69
#     from r0 to r1 (lib.sh load_firewall + udp/69, like fw4).
# pyftpdlib (debug log: every command it received, every reply it sent) and
# tftpd-hpa on the server; curl and ftp-session.py on the client; 1 MiB / 256
# KiB random files whose SHA-256 is checked after every transfer.
#
# Helper assignment: our own nft "ct helper" objects (ftp, tftp, l3proto
# inet), loaded after the daemon registered them; the daemon runs with
# option firewall '0' so these are the only helper rules. The chain has
# priority mangle (-150), i.e. after conntrack (-200) and BEFORE dstnat
# (-100): nf_nat_setup_info() adds the sequence-adjustment extension to a
# connection only if it already has a helper when its address is changed.
# nft_ct_helper_obj_eval() adds it for an already NATed connection only since
# "netfilter: nft_ct: add seqadj extension for natted connections"
# (CVE-2025-68206, 6.1.167; the Debian 6.1.0-56 kernel used here has it).
# Without that fix a helper attached at priority filter (0) to a DNATed
# connection has no seqadj and a length-changing rewrite cannot be compensated;
# the end of phase D tries that order (informational: depends on the kernel).
#
# Phases
#   A     no daemon, no helper rules. Strict firewall: PASV, PORT and a TFTP get
#         fail. Forward policy opened: PASV passes (its data connection is
#         just one more masqueraded connection), PORT still fails (the server
#         received the client's private address and cannot reach it) and a TFTP
#         get still fails (the server's answer goes to the router's own address
#         and nothing maps it back): the failures are NAT's, not the firewall's.
#   B     daemon running, masquerade: PASV, EPSV, PORT, EPRT (IPv4) transfer;
#         the server received PORT/EPRT with the router's outside address;
#         their expectations point at 198.51.100.1; one control session does
#         three active transfers (each PORT rewrite is +3 bytes, so the
#         kernel's TCP sequence adjustment must carry the session) then a
#         passive one, PWD and NOOP; port search: a second inside host
#         announcing the same port while the first one's expectation is
#         pending gets the next port (EBUSY); TFTP get and put; IPv6 through
#         source NAT: EPSV, EPRT (+2 bytes) and one session with three
#         rewritten EPRTs, a passive transfer, PWD and NOOP; the kernel's own
#         ftp/tftp helpers are not loaded
#   D     port forward (DNAT) with the roles swapped: the client is an outside
#         host that can reach only 192.0.2.0/24, the router forwards
#         192.0.2.1:21 to the server, the server's 227 (198,51,100,2) must reach
#         the client as 192,0,2,1 (-3 bytes): PASV (curl told to use the
#         announced address), EPSV and PORT transfers, a pending expectation
#         listed, one session with a rewritten 227, two transfers, PWD, NOOP
#   E     issue #11, hostile input: a forwarded FTP server that echoes a line
#         feed ("550 foo\n227 ... (...,0,22)"): no expectation to its port 22
#         (or 2222), none from a multi-line reply's body line, a 227 naming
#         port 22 refused and counted, and the session's genuine PASV works
#   Stop  no seqadj warning in the kernel log; SIGTERM: exit status 0
#
# NAT_WIRING=table (the nat-table scenario, tests/kernel/nat-table.sh): the same
# phases with the daemon's own table instead of these rules, as shipped
# (firewall '1', ftp also on port 2121 for phase E): the table assigns the
# helpers and queues only the packets with payload, just before conntrack's
# confirmation, and the verdicts must leave the sequence adjustment of the
# length-changing rewrites to the kernel once. The informational priority-filter
# round at the end is about rules of one's own and is left out.
# Prints one line per check and finally "N passed, M failed"; exit 0 iff M = 0.
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"
WIRING=${NAT_WIRING:-rules}
if [ "$WIRING" = table ]; then scenario_begin nat-table "$@"; else scenario_begin nat "$@"; fi
if [ -n "$REFERENCE" ]; then
    say "the nat scenario is not wired up for a reference daemon"; echo "0 passed, 1 failed"; exit 1
fi
say "nat scenario, daemon: $CTHELPERD"

kernel_setup || exit 2
# NAT itself: the nat chain type, masquerade, dnat (nf_nat also registers the
# "nat-follow-master" expectation function the helpers' expectations name).
for m in nf_nat nft_chain_nat nft_nat nft_masq; do
    modprobe "$m" || { say "modprobe $m failed"; exit 2; }
done
setup_topology || exit 2
ip -n server route del default
ip -n server -6 route del default
# the router's IPv6 outside address for source NAT (longer text than $C6)
R6X=2001:db8:2::100
ip -n router addr add $R6X/64 dev r1 nodad
# a second inside host (for the port search)
C4B=192.0.2.3
ip -n client addr add $C4B/24 dev c0

# The router's NAT: masquerade IPv4 and source-NAT IPv6 leaving r1.
nat_masquerade() {
    rx nft delete table inet nat 2>/dev/null
    rx nft -f - <<'EOF'
table inet nat {
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "r1" meta nfproto ipv6 snat ip6 to 2001:db8:2::100
        oifname "r1" masquerade
    }
}
EOF
}
# Strict forward policy (lib.sh, as fw4 does it) plus new TFTP requests.
firewall_strict() {
    rx nft delete table inet filter 2>/dev/null
    load_firewall &&
        rx nft insert rule inet filter forward iifname "r0" oifname "r1" udp dport 69 ct state new accept
}
nat_masquerade || exit 2
firewall_strict || exit 2
say "topology up: masquerade on r1, server without a default route"

# ---------------------------------------------------------------- servers
mkdir -p /srv/ftp
head -c 1048576 /dev/urandom >/srv/ftp/blob.bin
SUM=$(sha256sum </srv/ftp/blob.bin | cut -d' ' -f1)
SRVLOG=$RESULTS/pyftpdlib.log
# ftp-server.py at debug level (its own basicConfig is then a no-op): pyftpdlib
# logs "<- CMD" for every command received and "-> reply" for every reply
# sent, which is what the server saw after the router's rewriting.
sx $PY -c 'import logging, runpy, sys
logging.basicConfig(level=logging.DEBUG, format="[%(asctime)s] %(message)s")
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")' "$HERE/ftp-server.py" /srv/ftp $S4 $S6 >"$SRVLOG" 2>&1 &

TFTPD=$(command -v in.tftpd || echo /usr/sbin/in.tftpd)
[ -x "$TFTPD" ] || { say "no in.tftpd (tftpd-hpa)"; echo "0 passed, 1 failed"; exit 1; }
rm -rf /srv/tftp /tmp/tftp-client && mkdir -p /srv/tftp /tmp/tftp-client
chmod 1777 /srv/tftp        # in.tftpd drops to an unprivileged user; -c needs a writable dir
head -c 262144 /dev/urandom >/srv/tftp/blob.bin
chmod 644 /srv/tftp/blob.bin
TSUM=$(sha256sum </srv/tftp/blob.bin | cut -d' ' -f1)
head -c 262144 /dev/urandom >/tmp/tftp-client/up.bin
UPSUM=$(sha256sum </tmp/tftp-client/up.bin | cut -d' ' -f1)
sx "$TFTPD" -L -4 -c -s -a "$S4:69" /srv/tftp >"$RESULTS/tftpd.log" 2>&1 &

for ((i = 0; i < 150; i++)); do
    [ "$(sx ss -Hltn 'sport = :21' | wc -l)" -ge 2 ] && [ "$(sx ss -Hlun 'sport = :69' | wc -l)" -ge 1 ] && break
    sleep 0.2
done
say "pyftpdlib on $S4:21 and [$S6]:21, in.tftpd on $S4:69"

# ---------------------------------------------------------------- helpers
# srv_since MARK: the server log after line MARK; srv_mark: its current length
srv_mark() { wc -l <"$SRVLOG"; }
srv_since() { tail -n +"$(($1 + 1))" "$SRVLOG"; }

# fxfer NAME HOST curl-args...: download blob.bin over FTP from HOST (an IPv4
# address or [IPv6]) with curl in the client namespace and verify it. Writes
# curl-NAME.log (curl -v: what the client sent and received) and server-NAME.log
# (what the server received and sent). XFER_FORBID=CMD: fail if curl sent CMD
# (curl falls back from a failed EPSV/EPRT to PASV/PORT).
fxfer() {
    local name=$1 host=$2 rc log mark
    shift 2
    log=$RESULTS/curl-$name.log
    mark=$(srv_mark)
    rm -f /tmp/dl.bin
    echo "=== $name: curl $* ftp://$host/blob.bin" >"$log"
    cx curl -gsSv --max-time "${XFER_MAX:-8}" --connect-timeout "${XFER_CONNECT:-4}" "$@" \
        -o /tmp/dl.bin "ftp://$host/blob.bin" >>"$log" 2>&1
    rc=$?
    if [ $rc = 0 ] && [ "$(sha256sum </tmp/dl.bin | cut -d' ' -f1)" != "$SUM" ]; then rc=99; fi
    if [ -n "${XFER_FORBID:-}" ] && grep -q "^> $XFER_FORBID" "$log"; then
        say "$name: curl fell back to $XFER_FORBID"; rc=98
    fi
    echo "$name rc=$rc" >>"$log"
    sleep 0.2   # let pyftpdlib log the end of the session
    srv_since "$mark" >"$RESULTS/server-$name.log"
    return $rc
}
# ctrl NAME HOST: a control connection only (login, PWD, QUIT)
ctrl() {
    local mark
    mark=$(srv_mark)
    echo "=== $1: control only ftp://$2/" >"$RESULTS/curl-$1.log"
    cx curl -gsSv --max-time 6 --connect-timeout 4 -Q PWD -I "ftp://$2/" >>"$RESULTS/curl-$1.log" 2>&1
    local rc=$?
    sleep 0.2
    srv_since "$mark" >"$RESULTS/server-$1.log"
    return $rc
}
# port_of TEXT: the port of the first "a,b,c,d,p1,p2" (PORT, 227) or
# "|1|addr|p|" / "|||p|" (EPRT, 229) in TEXT
port_of() {
    local p
    p=$(sed -n 's/.*[^0-9]\([0-9]\{1,3\},\)\{3\}[0-9]\{1,3\},\([0-9]\{1,3\}\),\([0-9]\{1,3\}\).*/\2 \3/p' <<<"$1" | head -n1)
    if [ -n "$p" ]; then echo $(( ${p% *} * 256 + ${p#* } )); return; fi
    sed -n 's/.*|\([0-9][0-9]*\)|.*/\1/p' <<<"$1" | head -n1
}

# txfer NAME get|put: one TFTP transfer with curl, verified (as tftp.sh).
# get: blob.bin -> client, compared with $TSUM; put: up.bin -> server as
# NAME.bin, compared with $UPSUM. No --connect-timeout (curl derives its TFTP
# retransmission time from it, see tftp.sh).
txfer() {
    local name=$1 op=$2 rc log out
    log=$RESULTS/curl-$name.log
    if [ "$op" = get ]; then
        out=/tmp/tftp-client/$name.bin; rm -f "$out"
        echo "=== $name: curl -o $out tftp://$S4/blob.bin" >"$log"
        cx curl -gsSv --max-time "${XFER_MAX:-20}" -o "$out" "tftp://$S4/blob.bin" >>"$log" 2>&1
        rc=$?
        if [ $rc = 0 ] && [ "$(sha256sum <"$out" | cut -d' ' -f1)" != "$TSUM" ]; then rc=99; fi
    else
        out=/srv/tftp/$name.bin; rm -f "$out"
        echo "=== $name: curl -T up.bin tftp://$S4/$name.bin" >"$log"
        cx curl -gsSv --max-time "${XFER_MAX:-20}" -T /tmp/tftp-client/up.bin "tftp://$S4/$name.bin" >>"$log" 2>&1
        rc=$?
        if [ $rc = 0 ] && [ "$(sha256sum <"$out" 2>/dev/null | cut -d' ' -f1)" != "$UPSUM" ]; then rc=99; fi
    fi
    echo "$name rc=$rc" >>"$log"
    return $rc
}


# expect_event PROTO SRC DST PORT: a NEW expectation event from SRC (any
# source port) to DST:PORT was seen — i.e. the expected connection's tuple as
# the router sees it before NAT.
expect_event() {
    [ -n "$4" ] || return 2
    grep -qE "\[NEW\] .*proto=$1 src=$2 dst=$3 sport=0 dport=$4 " "$RESULTS/expect-events.txt"
}

# ================================================================ phase A
say "=== phase A: no daemon, no helper rules"
ctrl A-ctrl $S4; check "A control connection through the masquerade" pass $?
grep -q "^\[.*\] $R4S:[0-9]*-" "$RESULTS/server-A-ctrl.log"
check "A the server sees the client as the router's outside address $R4S (masquerade in effect)" pass $?
sx ip route get $C4 >/dev/null 2>&1
check "A the server has no route to the client $C4" fail $?
sx ip -6 route get $C6 >/dev/null 2>&1
check "A the server has no route to the client $C6" fail $?

fxfer A-PASV $S4 --disable-epsv --no-ftp-skip-pasv-ip
check "A passive PASV blocked (forward drops the data connection)" fail $?
fxfer A-PORT $S4 -P $C4 --disable-eprt; check "A active PORT fails (untranslated address, no expectation)" fail $?
XFER_MAX=6 txfer A-tget get; check "A TFTP get blocked" fail $?

# Open the forward path completely: what still fails is NAT's doing.
say "forward policy opened (accept everything)"
rx nft flush chain inet filter forward
rx nft add chain inet filter forward '{ policy accept; }'
rx conntrack -F >/dev/null 2>&1
fxfer A-open-PASV $S4 --disable-epsv --no-ftp-skip-pasv-ip
check "A passive PASV with the forward policy open (data connection is just masqueraded)" pass $?
fxfer A-open-PORT $S4 -P $C4 --disable-eprt
check "A active PORT with the forward policy open still fails" fail $?
grep -q "<- PORT 192,0,2,2," "$RESULTS/server-A-open-PORT.log"
check "A without a helper the server received the client's private address (PORT 192,0,2,2,...)" pass $?
XFER_MAX=6 txfer A-open-tget get
check "A TFTP get with the forward policy open still fails (answer to the router's own address)" fail $?
firewall_strict || exit 2
rx conntrack -F >/dev/null 2>&1

# ================================================================ phase B
say "=== phase B: daemon running, masquerade"
# the shipped configuration (ftp + tftp, IPv4 + IPv6) without its own firewall table
# (table wiring: with it, and ftp on port 2121 too)
CONF=/tmp/nat-cthelperd.conf
if [ "$WIRING" = table ]; then
    sed "s/\tlist port '21'/\tlist port '21'\n\tlist port '2121'/" "$REPO/init.d/cthelperd.config" >"$CONF"
else
    sed "s/option firewall '1'/option firewall '0'/" "$REPO/init.d/cthelperd.config" >"$CONF"
fi
CTHELPERD_ARGS="--config $CONF --control-socket /tmp/nat-cthelperd.sock"
start_daemon "$RESULTS/daemon.log"; rc=$?
check "B daemon starts and registers ftp (IPv4 + IPv6)" pass $rc
if [ $rc != 0 ]; then
    say "cannot continue without a daemon"; summary; exit
fi
[ "$(helpers_serving tftp)" -ge 2 ]; check "B tftp helper serving IPv4 and IPv6" pass $?
nfct_helpers | indent
[ "$WIRING" = table ] ||
    { rx nft list table inet cthelperd >/dev/null 2>&1 && say "note: the daemon installed table inet cthelperd despite firewall '0'"; }

load_nat_helpers() { # load_nat_helpers PRIORITY
    if [ "$WIRING" = table ]; then
        # the daemon's table: assignment at priority mangle, queueing before confirmation
        rx nft list table inet cthelperd | grep -q "tcp dport { 21, 2121 } ct helper set \"ftp\"" &&
            rx nft list chain inet cthelperd queue_postrouting | grep -q "queue .*to 48000"
        return
    fi
    rx nft delete table inet nathelpers 2>/dev/null
    rx nft -f - <<EOF
table inet nathelpers {
    ct helper ftp-std {
        type "ftp" protocol tcp;
        l3proto inet;
    }
    ct helper tftp-std {
        type "tftp" protocol udp;
        l3proto inet;
    }
    chain pre {
        type filter hook prerouting priority $1; policy accept;
        tcp dport 21 ct helper set "ftp-std"
        udp dport 69 ct helper set "tftp-std"
    }
}
EOF
}
load_nat_helpers mangle; check "B nft ct helper rules (ftp, tftp; prerouting priority mangle) $WIRING: in place" pass $?
rx nft list table inet nathelpers >"$RESULTS/nft-helpers.txt" 2>&1
[ "$WIRING" = table ] && rx nft list table inet cthelperd >"$RESULTS/nft-helpers.txt" 2>&1
ip netns exec router conntrack -E expect -o timestamp >"$RESULTS/expect-events.txt" 2>&1 &
EV_PID=$!
sleep 0.3

ctrl B-ctrl $S4; check "B control connection" pass $?

# Passive: the server announces its own (reachable) address; nothing to
# rewrite, only the expectation is needed. curl is told to use the announced
# address (by default it ignores it), so a wrong rewrite would show.
fxfer B-PASV $S4 --disable-epsv --no-ftp-skip-pasv-ip; check "B passive PASV" pass $?
r227=$(grep -m1 '^< 227 ' "$RESULTS/curl-B-PASV.log")
say "B-PASV: client received: ${r227:-none}"
[[ "$r227" == *"(198,51,100,2,"* ]]
check "B PASV: the client received the server's own address (nothing rewritten)" pass $?
expect_event 6 $C4 $S4 "$(port_of "$r227")"
check "B PASV expectation: from $C4 to $S4:port (before NAT)" pass $?
XFER_FORBID=PASV fxfer B-EPSV $S4; check "B passive EPSV" pass $?

# Active: curl announces 192.0.2.2 (its own address); the helper must rewrite
# it to the router's outside address and expect the server there.
fxfer B-PORT $S4 -P $C4 --disable-eprt; check "B active PORT" pass $?
rport=$(grep -m1 '<- PORT ' "$RESULTS/server-B-PORT.log")
say "B-PORT: client sent: $(grep -m1 '^> PORT ' "$RESULTS/curl-B-PORT.log"); server received: ${rport:-none}"
[[ "$rport" == *"<- PORT 198,51,100,1,"* ]]
check "B PORT: the server received the router's outside address (PORT 198,51,100,1,...)" pass $?
expect_event 6 $S4 $R4S "$(port_of "${rport#*<- }")"
check "B PORT expectation: from $S4 to the router's outside address $R4S" pass $?

XFER_FORBID=PORT fxfer B-EPRT $S4 -P $C4; check "B active EPRT (IPv4)" pass $?
rport=$(grep -m1 '<- EPRT ' "$RESULTS/server-B-EPRT.log")
say "B-EPRT: client sent: $(grep -m1 '^> EPRT ' "$RESULTS/curl-B-EPRT.log"); server received: ${rport:-none}"
[[ "$rport" == *"<- EPRT |1|198.51.100.1|"* ]]
check "B EPRT: the server received the router's outside address (EPRT |1|198.51.100.1|...)" pass $?
expect_event 6 $S4 $R4S "$(port_of "${rport#*<- }")"
check "B EPRT expectation: from $S4 to the router's outside address $R4S" pass $?

# One control connection, several commands after length-changing rewrites:
# "PORT 192,0,2,2,..." -> "PORT 198,51,100,1,..." is 3 bytes longer each time,
# so after three of them the server's sequence numbers are 9 bytes ahead of
# the client's view; only the kernel's sequence adjustment (set by the verdict
# that carried the mangled payload) keeps the later commands flowing.
say "B session: 3 x active (+3 bytes each), passive, PWD, NOOP on one control connection"
mark=$(srv_mark)
sess_open B-sess $S4; check "B session: login" pass $?
for n in 1 2 3; do
    sess_cmd B-sess retr-active; check "B session: active transfer $n (after $(( (n - 1) * 3 )) bytes of rewrites)" pass $?
done
sess_cmd B-sess retr; check "B session: passive transfer after the rewrites" pass $?
sess_cmd B-sess pwd; check "B session: PWD" pass $?
sess_cmd B-sess noop; check "B session: NOOP" pass $?
sess_close B-sess
srv_since "$mark" >"$RESULTS/server-B-sess.log"
say "B session: the server received $(grep -c '<- PORT 198,51,100,1,' "$RESULTS/server-B-sess.log") rewritten and $(grep -c '<- PORT 192,0,2,2,' "$RESULTS/server-B-sess.log") untranslated PORT commands"
rx conntrack -L -p tcp --orig-port-dst 21 >"$RESULTS/conntrack-ftp-ctrl.txt" 2>&1

# a pending passive expectation on the masqueraded control connection
sess_open B-hold $S4
if sess_cmd B-hold hold-passive; then
    port=$(sed -n 's/.* port=\([0-9]*\) .*/\1/p' <<<"$SESS_REPLY")
    rx conntrack -L expect -f ipv4 >"$RESULTS/expect-list-B.txt" 2>&1
    say "B-hold: $SESS_REPLY"; indent <"$RESULTS/expect-list-B.txt"
    grep -qE "proto=6 src=$C4 dst=$S4 sport=0 dport=$port " "$RESULTS/expect-list-B.txt"
    check "B pending PASV expectation listed (conntrack -L expect)" pass $?
else
    say "B-hold: $SESS_REPLY"; check "B pending PASV expectation listed (conntrack -L expect)" pass 1
fi
sess_close B-hold

# Port search: two inside hosts announce the same port. Both announcements
# become the router's outside address and that port, so the second
# expectation clashes with the first while the first is pending; the daemon
# must take the next port and announce that. The first host announcing its
# port again keeps it (its own expectation is refreshed, as the kernel does).
# The server's connection attempts are rejected on its way out (TCP reset, so
# it answers at once) and never reach the router: the expectations stay pending.
BUSY=45000
sx nft -f - <<EOF
table inet hold {
    chain out {
        type filter hook output priority filter; policy accept;
        ip daddr $R4S tcp dport { $BUSY, $((BUSY + 1)) } reject with tcp reset
    }
}
EOF
mark=$(srv_mark)
sess_open B-busy1 $S4 $C4; rc1=$?
sess_open B-busy2 $S4 $C4B; rc2=$?
[ $rc1 = 0 ] && [ $rc2 = 0 ]; check "B port search: two control sessions from $C4 and $C4B" pass $?
# the answers are "425 can't connect": only what the server was told matters
sess_cmd B-busy1 hold-active $C4 $BUSY
sess_cmd B-busy1 hold-active $C4 $BUSY
sess_cmd B-busy2 hold-active $C4B $BUSY
rx conntrack -L expect -f ipv4 >"$RESULTS/expect-list-busy.txt" 2>&1
srv_since "$mark" >"$RESULTS/server-B-busy.log"
indent <"$RESULTS/expect-list-busy.txt"
grep '<- PORT ' "$RESULTS/server-B-busy.log" | indent
grep -qE "proto=6 src=$S4 dst=$R4S sport=0 dport=$BUSY .* master-src=$C4 " "$RESULTS/expect-list-busy.txt" &&
    grep -qE "proto=6 src=$S4 dst=$R4S sport=0 dport=$((BUSY + 1)) .* master-src=$C4B " "$RESULTS/expect-list-busy.txt"
check "B port search: expectations pending for $C4 on port $BUSY and $C4B on $((BUSY + 1)) of $R4S" pass $?
p1="PORT 198,51,100,1,$((BUSY / 256)),$((BUSY % 256))"
p2="PORT 198,51,100,1,$((BUSY / 256)),$((BUSY % 256 + 1))"
[ "$(grep -c -- "<- $p1\$" "$RESULTS/server-B-busy.log")" = 2 ] && grep -q -- "<- $p2\$" "$RESULTS/server-B-busy.log"
check "B port search: the server was told port $BUSY twice by the first host and $((BUSY + 1)) by the second" pass $?
for n in B-busy1 B-busy2; do
    kill "${SESS_PID[$n]}" 2>/dev/null; exec {SESS_FD[$n]}>&-; wait "${SESS_PID[$n]}" 2>/dev/null
done
sx nft delete table inet hold
rx conntrack -D expect -f ipv4 >/dev/null 2>&1

# TFTP: the server answers from a new port to the router's outside address;
# the expectation must map that back to the client (NAT follow-master).
txfer B-tget get; check "B TFTP get through the masquerade" pass $?
txfer B-tput put; check "B TFTP put through the masquerade" pass $?
grep -qE "\[NEW\] .*proto=17 src=$S4 dst=$R4S sport=0 " "$RESULTS/expect-events.txt"
check "B TFTP expectation: from $S4 to the router's outside address $R4S" pass $?

# IPv6 through source NAT to $R6X. EPSV carries no address. EPRT from
# 2001:db8:1::2 becomes 2001:db8:2::100, 2 bytes longer: the kernel (6.1)
# records the sequence adjustment of a verdict correctly only for IPv4
# (nf_ct_tcp_seqadj_set reads the TCP header at ip_hdrlen()), so the daemon
# sets it over ctnetlink for IPv6 — the session below depends on it.
XFER_FORBID=PASV fxfer B-EPSV6 "[$S6]"; check "B passive EPSV through IPv6 source NAT" pass $?
XFER_FORBID=PORT fxfer B-EPRT6 "[$S6]" -P "[$C6]"; check "B active EPRT through IPv6 source NAT" pass $?
rport=$(grep -m1 '<- EPRT ' "$RESULTS/server-B-EPRT6.log")
say "B-EPRT6: client sent: $(grep -m1 '^> EPRT ' "$RESULTS/curl-B-EPRT6.log"); server received: ${rport:-none}"
[[ "$rport" == *"<- EPRT |2|$R6X|"* ]]
check "B EPRT6: the server received the router's outside address (EPRT |2|$R6X|...)" pass $?
say "B session (IPv6): 3 x active (EPRT, +2 bytes each), passive, PWD, NOOP on one control connection"
mark=$(srv_mark)
sess_open B-sess6 $S6; check "B session (IPv6): login" pass $?
for n in 1 2 3; do
    sess_cmd B-sess6 retr-active; check "B session (IPv6): active transfer $n (after $(( (n - 1) * 2 )) bytes of rewrites)" pass $?
done
sess_cmd B-sess6 retr; check "B session (IPv6): passive transfer after the rewrites" pass $?
sess_cmd B-sess6 pwd; check "B session (IPv6): PWD" pass $?
sess_cmd B-sess6 noop; check "B session (IPv6): NOOP" pass $?
sess_close B-sess6
srv_since "$mark" >"$RESULTS/server-B-sess6.log"
grep -q 'sequence adjustment' "$RESULTS/daemon.log"
check "B session (IPv6): the daemon set the sequence adjustment over ctnetlink" pass $?

# what an operator sees: rewrites counted, none failed, the port search's
# EEXIST not counted as an expectation error
"$CTHELPERD" status --control-socket /tmp/nat-cthelperd.sock >"$RESULTS/status-B.txt" 2>&1; rc=$?
indent <"$RESULTS/status-B.txt"
[ $rc = 0 ] && grep -qE '^helper ftp .* expectation_errors 0 .* rewritten [1-9][0-9]* rewrite_errors 0 withdrawn 0 expected_passed [0-9]+$' "$RESULTS/status-B.txt"
check "B status: ftp rewrites counted, no rewrite or expectation errors" pass $?

for m in nf_conntrack_ftp nf_nat_ftp nf_conntrack_tftp nf_nat_tftp; do
    ! lsmod | grep -q "^$m "; check "B kernel $m not loaded" pass $?
done

# ================================================================ phase D
say "=== phase D: port forward (DNAT) 192.0.2.1:21 -> $S4:21; the client is an outside host"
# The client can reach only its own subnet, i.e. the router's address there.
ip -n client route del default
ip -n client -6 route del default
# The server is an inside host again: default route via the router.
ip -n server route add default via $R4S
# DNAT only: no masquerade towards the client either (that would also
# translate an active-mode data connection whose expectation lacks NAT and
# hide the missing NAT section). The forwarded control connection passes
# lib.sh's "iifname r0 oifname r1 tcp dport 21 ct state new accept": the
# forward hook sees it after DNAT.
rx nft delete table inet nat
rx nft -f - <<EOF
table inet nat {
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        iifname "r0" ip daddr $R4C tcp dport 21 dnat ip to $S4:21
    }
}
EOF
check "D DNAT rule loaded" pass $?
rx conntrack -F >/dev/null 2>&1
rx conntrack -F expect >/dev/null 2>&1

ctrl D-ctrl $R4C; check "D control connection to $R4C (forwarded to the server)" pass $?
say "D-ctrl: the server sees the client as $(grep -m1 -o '^\[[^]]*\] [0-9.]*:' "$RESULTS/server-D-ctrl.log" | sed 's/^\[[^]]*\] //; s/:$//')"

fxfer D-PASV $R4C --disable-epsv --no-ftp-skip-pasv-ip
check "D passive PASV through the port forward (client uses the announced address)" pass $?
r227=$(grep -m1 '^< 227 ' "$RESULTS/curl-D-PASV.log")
s227=$(grep -m1 -- '-> 227 ' "$RESULTS/server-D-PASV.log")
say "D-PASV: server sent: ${s227:-none}; client received: ${r227:-none}"
[[ "$s227" == *"(198,51,100,2,"* ]]
check "D PASV: the server announced its own address 198,51,100,2" pass $?
[[ "$r227" == *"(192,0,2,1,"* ]]
check "D PASV: the client received the router's address 192,0,2,1" pass $?
expect_event 6 $C4 $R4C "$(port_of "$r227")"
check "D PASV expectation: from $C4 to the router's address $R4C" pass $?
XFER_FORBID=PASV fxfer D-EPSV $R4C; check "D passive EPSV through the port forward" pass $?
# Active through the port forward: the server sees the client's real address,
# so PORT needs no rewrite, but the data connection must leave the router
# from 192.0.2.1 (the client has no route to the server): NAT on the expectation.
fxfer D-PORT $R4C -P $C4 --disable-eprt; check "D active PORT through the port forward" pass $?
grep -q '<- PORT 192,0,2,2,' "$RESULTS/server-D-PORT.log"
check "D PORT: the server received the client's own address unchanged (nothing to translate)" pass $?

say "D session: 227 rewritten (-3 bytes), 2 x passive, PWD, NOOP on one control connection"
sess_open D-sess $R4C; check "D session: login" pass $?
if sess_cmd D-sess hold-passive; then
    port=$(sed -n 's/.* port=\([0-9]*\) .*/\1/p' <<<"$SESS_REPLY")
    rx conntrack -L expect -f ipv4 >"$RESULTS/expect-list-D.txt" 2>&1
    say "D-sess: $SESS_REPLY"; indent <"$RESULTS/expect-list-D.txt"
    [[ "$SESS_REPLY" == *"(192,0,2,1,"* ]]
    check "D session: PASV reply carries the router's address" pass $?
    grep -qE "proto=6 src=$C4 dst=$R4C sport=0 dport=$port " "$RESULTS/expect-list-D.txt"
    check "D pending PASV expectation to the router's address listed (conntrack -L expect)" pass $?
else
    say "D-sess: $SESS_REPLY"
    check "D session: PASV reply carries the router's address" pass 1
    check "D pending PASV expectation to the router's address listed (conntrack -L expect)" pass 1
fi
for n in 1 2; do
    sess_cmd D-sess retr; check "D session: passive transfer $n after a -3 byte rewrite" pass $?
done
sess_cmd D-sess pwd; check "D session: PWD" pass $?
sess_cmd D-sess noop; check "D session: NOOP" pass $?
sess_close D-sess

# ================================================================ phase E
# Issue #11, hostile input through the port forward: a second forwarded FTP
# server (192.0.2.1:2121 -> $E4:21, ftp-echo.py) echoes a client-chosen line
# feed, so its reply segment is "550 foo\n227 Entering Passive Mode (...)". The
# kernel's nf_conntrack_ftp parses only the first line of a segment; so must we,
# or the outside client opens any port of the server (22, or 2222: above the
# low-port limit, so only the first-line rule stops it). A 227 body line of a
# multi-line reply that arrives in its own segment is not a reply either. A 227
# naming port 22 as the whole reply is refused on a port forward
# (allow_low_ports '0', the default). The session itself keeps working.
say "=== phase E: hostile FTP server behind the port forward (issue #11)"
E4=198.51.100.3
ip -n server addr add $E4/24 dev s0
sx $PY "$HERE/ftp-echo.py" server $E4 >"$RESULTS/echo-server.log" 2>&1 &
ECHO_PID=$!
rx nft add rule inet nat prerouting iifname "r0" ip daddr $R4C tcp dport 2121 dnat ip to $E4:21 &&
    { [ "$WIRING" = table ] || rx nft add rule inet nathelpers pre tcp dport 2121 ct helper set '"ftp-std"'; }
check "E forward 192.0.2.1:2121 to the echoing server $E4:21, ftp helper on it" pass $?
for ((i = 0; i < 100; i++)); do
    [ "$(sx ss -Hltn "src $E4" | wc -l)" -ge 3 ] && break
    sleep 0.2
done
rx conntrack -F expect >/dev/null 2>&1
refused0=$("$CTHELPERD" status --control-socket /tmp/nat-cthelperd.sock 2>/dev/null |
    sed -n 's/^helper ftp .* refused \([0-9]*\) .*/\1/p')
cx $PY "$HERE/ftp-echo.py" client $R4C 2121 "$RESULTS" >"$RESULTS/echo-client.log" 2>&1
indent <"$RESULTS/echo-client.log"
grep -q "^PASS: '230" "$RESULTS/echo-client.log"
check "E login to the echoing server through the port forward" pass $?
for step in echo22 echo2222; do
    port=${step#echo}
    grep -qF "$step: '550 foo\n227 Entering Passive Mode (" "$RESULTS/echo-client.log"
    check "E $step: the client received the forged 227 on the reply's second line" pass $?
    ! grep -q "dport=$port " "$RESULTS/expect-E-$step.txt"
    check "E $step: no expectation to port $port (conntrack -L expect)" pass $?
    grep -q "^$step connect $port: failed" "$RESULTS/echo-client.log"
    check "E $step: the client cannot reach $R4C:$port" pass $?
done
! grep -q "dport=2223 " "$RESULTS/expect-E-multiline.txt"
check "E multiline: a 227 body line in its own segment creates no expectation (port 2223)" pass $?
! grep -q "dport=22 " "$RESULTS/expect-E-low.txt" && grep -q "^low connect 22: failed" "$RESULTS/echo-client.log"
check "E low: a 227 naming port 22 creates no expectation, $R4C:22 unreachable" pass $?
grep -q "refused 227 announcing $E4 port 22 .*LowPort" "$RESULTS/daemon.log"
check "E low: the daemon logged the refusal (LowPort)" pass $?
refused1=$("$CTHELPERD" status --control-socket /tmp/nat-cthelperd.sock 2>/dev/null |
    sed -n 's/^helper ftp .* refused \([0-9]*\) .*/\1/p')
say "E status: ftp refused ${refused0:-?} before, ${refused1:-?} after"
[ -n "$refused1" ] && [ "$refused1" -gt "${refused0:-0}" ]
check "E low: counted as refused (cthelperd status)" pass $?
dport=$(sed -n 's/^pasv data \([0-9]*\): .*/\1/p' "$RESULTS/echo-client.log")
grep -qE "proto=6 src=$C4 dst=$R4C sport=0 dport=${dport:-none} " "$RESULTS/expect-E-pasv.txt"
check "E the session goes on: a genuine PASV's expectation is listed" pass $?
grep -q "^pasv data $dport: hello from the data port" "$RESULTS/echo-client.log"
check "E the session goes on: its data connection works" pass $?
kill $ECHO_PID 2>/dev/null; wait $ECHO_PID 2>/dev/null

kill $EV_PID 2>/dev/null; wait $EV_PID 2>/dev/null
say "expectation events: $(grep -c '\[NEW\]' "$RESULTS/expect-events.txt") NEW (expect-events.txt)"

# ================================================================ stop
# A length-changing rewrite on a connection without the seqadj extension makes
# nf_ct_seqadj_set() warn (once per boot) and the offset is lost.
dmesg >"$RESULTS/dmesg-all.txt"
! grep -q 'nfct_seqadj_ext_add' "$RESULTS/dmesg-all.txt"
check "Stop no 'Missing nfct_seqadj_ext_add() setup call' warning in the kernel log" pass $?

# Informational (own rules only): the helper attached after DNAT (priority filter, as a rule in
# a filter chain usually is). With the nft_ct seqadj fix (6.1.167+) this works
# like priority mangle; without it the forwarded connection has no seqadj
# extension: a kernel warning, and the session breaks after the -3 byte rewrite.
if [ "$WIRING" != table ]; then
    load_nat_helpers filter
    rx conntrack -F >/dev/null 2>&1
    sess_open D-late $R4C; info="login: $SESS_REPLY"
    sess_cmd D-late hold-passive; info="$info | hold-passive: $SESS_REPLY"
    sess_cmd D-late retr; info="$info | retr: $SESS_REPLY"
    sess_cmd D-late noop; info="$info | noop: $SESS_REPLY"
    sess_close D-late
    say "informational, helper attached at priority filter (after dstnat): $info"
    say "informational: kernel log: $(dmesg | grep -m1 -o 'Missing nfct_seqadj_ext_add() setup call' || echo 'no seqadj warning')"
fi

stop_daemon TERM; check "Stop daemon exits with status 0 on SIGTERM" pass $?
rx nft list ruleset >"$RESULTS/nft-ruleset.txt" 2>&1
dmesg | grep -E 'cthd-fwd-drop|nf_conntrack|nfnetlink|cthelper|seqadj|WARNING|Call Trace' >"$RESULTS/dmesg.txt"
say "forward drops logged: $(grep -c cthd-fwd-drop "$RESULTS/dmesg.txt")"
summary
