#!/bin/bash
# tests/kernel/tftp.sh — TFTP through the user-space "tftp" helper, in a real
# kernel. Runs INSIDE the run-in-kernel.sh guest (tests/kernel/run.sh boots it).
#
#   tftp.sh [--reference conntrackd]        (or REFERENCE=conntrackd)
#
# Topology (lib.sh): client 192.0.2.2 / 2001:db8:1::2 -- router -- server
# 198.51.100.2 / 2001:db8:2::2 (+ 198.51.100.3 / 2001:db8:2::3 where nothing
# listens). Router nftables forward policy drop except established,related,
# new tcp/21 (lib.sh) and new udp/69 from the client (added here). tftpd-hpa
# (in.tftpd, foreground, secure mode, -c for uploads) on the server, curl's
# TFTP client (RFC 2347 options tsize/blksize) on the client; 256 KiB random
# files, SHA-256 verified after every get and put.
#
# Phases
#   A  no daemon, no helper: the request passes, the server's answer comes from
#      a new port and is dropped: get and put fail (IPv4 and IPv6)
#   B  daemon running + nft "ct helper" type "tftp" on udp dport 69: get and put
#      pass over IPv4 and IPv6, 8 transfers in parallel pass, the data flows
#      entered as RELATED + EXPECTED, a request to a silent address leaves a
#      listed expectation (v4 + v6), a malformed request passes without one,
#      the daemon logged "expecting" and counted the parse error, the kernel's
#      nf_conntrack_tftp is not loaded, SIGTERM exits 0
# Prints one line per check and finally "N passed, M failed"; exit 0 iff M = 0.
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"
scenario_begin tftp "$@"
say "tftp scenario, daemon: $MODE${REFERENCE:+ (reference)}${REFERENCE:-, $CTHELPERD}"
if [ "$REFERENCE" = conntrackd ]; then
    # lib.sh's conntrackd configuration has only the ftp helper.
    say "the conntrackd reference is not wired up for tftp"; echo "0 passed, 1 failed"; exit 1
fi

kernel_setup || exit 2
setup_topology || exit 2
# addresses on the server where nothing listens: requests there stay unanswered
# (ICMP port unreachable only), so their expectation stays pending
S4Q=198.51.100.3; S6Q=2001:db8:2::3
ip -n server addr add $S4Q/24 dev s0
ip -n server addr add $S6Q/64 dev s0 nodad

# ---------------------------------------------------------------- TFTP servers
TFTPD=$(command -v in.tftpd || echo /usr/sbin/in.tftpd)
[ -x "$TFTPD" ] || { say "no in.tftpd (tftpd-hpa)"; echo "0 passed, 1 failed"; exit 1; }
rm -rf /srv/tftp /tmp/tftp-client && mkdir -p /srv/tftp /tmp/tftp-client
chmod 1777 /srv/tftp        # in.tftpd drops to an unprivileged user; -c needs a writable dir
head -c 262144 /dev/urandom >/srv/tftp/blob.bin
chmod 644 /srv/tftp/blob.bin
SUM=$(sha256sum </srv/tftp/blob.bin | cut -d' ' -f1)
head -c 262144 /dev/urandom >/tmp/tftp-client/up.bin
UPSUM=$(sha256sum </tmp/tftp-client/up.bin | cut -d' ' -f1)
sx "$TFTPD" -L -4 -c -s -a "$S4:69" /srv/tftp >"$RESULTS/tftpd4.log" 2>&1 &
sx "$TFTPD" -L -6 -c -s -a "[$S6]:69" /srv/tftp >"$RESULTS/tftpd6.log" 2>&1 &
load_firewall || exit 2
rx nft insert rule inet filter forward iifname "r0" oifname "r1" udp dport 69 ct state new accept || exit 2
# count the data flows that enter as expected connections (no verdict: the
# established,related rule accepts them)
rx nft insert rule inet filter forward iifname "r1" oifname "r0" udp sport != 69 \
    ct state related ct status expected counter || exit 2
for ((i = 0; i < 150; i++)); do
    [ "$(sx ss -Hlun 'sport = :69' | wc -l)" -ge 2 ] && break
    sleep 0.2
done
say "in.tftpd listening on $S4:69 and [$S6]:69: $(sx ss -Hlun 'sport = :69' | awk '{print $4}' | tr '\n' ' ')"

# xfer NAME get|put 4|6 [curl-args...]: one transfer with curl, verified.
# No --connect-timeout: curl derives its TFTP retransmission time (and the
# "timeout" option it requests) from it; 1 s under TCG with parallel transfers
# made curl repeat the request, the server started a second session for the
# duplicate (correctly expected by the helper) and curl mixed up the two.
# get: blob.bin -> client, compared with $SUM; put: up.bin -> server as NAME.bin,
# compared with $UPSUM.
xfer() {
    local name=$1 op=$2 fam=$3 host url rc log out
    shift 3
    [ "$fam" = 6 ] && host="[$S6]" || host=$S4
    log=$RESULTS/curl-$name.log
    if [ "$op" = get ]; then
        url="tftp://$host/blob.bin"; out=/tmp/tftp-client/$name.bin
        rm -f "$out"
        echo "=== $name: curl $* -o $out $url" >"$log"
        cx curl -gsSv --max-time "${XFER_MAX:-40}" "$@" -o "$out" "$url" >>"$log" 2>&1
        rc=$?
        if [ $rc = 0 ] && [ "$(sha256sum <"$out" | cut -d' ' -f1)" != "$SUM" ]; then rc=99; fi
    else
        url="tftp://$host/$name.bin"; out=/srv/tftp/$name.bin
        rm -f "$out"
        echo "=== $name: curl $* -T up.bin $url" >"$log"
        cx curl -gsSv --max-time "${XFER_MAX:-40}" "$@" \
            -T /tmp/tftp-client/up.bin "$url" >>"$log" 2>&1
        rc=$?
        if [ $rc = 0 ] && [ "$(sha256sum <"$out" 2>/dev/null | cut -d' ' -f1)" != "$UPSUM" ]; then rc=99; fi
    fi
    echo "$name rc=$rc" >>"$log"
    return $rc
}

# probe HOST HEXPAYLOAD: send one datagram from the client to HOST:69 and wait
# up to 3 s; prints "<client port> reply|refused|timeout". "refused" = the
# server's ICMP port unreachable came back, i.e. the request crossed the router.
probe() {
    cx $PY - "$1" "$2" <<'EOF'
import socket, sys
host, payload = sys.argv[1], bytes.fromhex(sys.argv[2])
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.connect((host, 69))
s.send(payload)
port = s.getsockname()[1]
try:
    s.recv(2048)
    r = "reply"
except ConnectionRefusedError:
    r = "refused"
except socket.timeout:
    r = "timeout"
print(port, r)
EOF
}
RRQ_HEX=$($PY -c 'print(b"\x00\x01pending.bin\x00octet\x00tsize\x000\x00".hex())')
BAD_HEX=00010000     # RRQ with an empty file name and an empty mode

# pending NAME 4|6: an RRQ to the silent address; passes iff an expectation
# from that address to the client's port is listed.
pending() {
    local name=$1 fam=$2 host out port res f=$RESULTS/expect-list-$1.txt
    [ "$fam" = 6 ] && host=$S6Q || host=$S4Q
    out=$(probe "$host" "$RRQ_HEX"); port=${out%% *}; res=${out#* }
    rx conntrack -L expect -f ipv$fam >"$f" 2>&1
    say "$name: client port $port, $res; expectations:"; indent <"$f"
    [ "$res" = refused ] || return 1
    grep -E "proto=17 src=$host dst=.* dport=$port( |$)" "$f" >/dev/null
}

# ================================================================ phase A
say "=== phase A: no daemon, no helper (forward allows only established,related + new udp/69)"
XFER_MAX=6 xfer A-get4 get 4; check "A get (IPv4) blocked" fail $?
XFER_MAX=6 xfer A-put4 put 4; check "A put (IPv4) blocked" fail $?
XFER_MAX=6 xfer A-get6 get 6; check "A get (IPv6) blocked" fail $?
XFER_MAX=6 xfer A-put6 put 6; check "A put (IPv6) blocked" fail $?
rx conntrack -F >/dev/null 2>&1

# ================================================================ phase B
say "=== phase B: $MODE running"
start_daemon "$RESULTS/daemon.log"; rc=$?
check "B daemon starts" pass $rc
if [ $rc != 0 ]; then
    say "cannot continue without a daemon"; indent <"$RESULTS/daemon.log"
    summary; exit
fi
[ "$(helpers_serving tftp)" -ge 2 ]; check "B tftp helper serving IPv4 and IPv6" pass $?
nfct_helpers | indent
rx nft delete table inet tftphelpers 2>/dev/null
if ! rx nft -f - <<'EOF'
table inet tftphelpers {
    ct helper tftp-std {
        type "tftp" protocol udp;
        l3proto inet;
    }
    chain pre {
        type filter hook prerouting priority filter;
        udp dport 69 ct helper set "tftp-std"
    }
}
EOF
then
    say "nft refused 'l3proto inet'; one ct helper object per family"
    rx nft -f - <<'EOF'
table inet tftphelpers {
    ct helper tftp-std4 {
        type "tftp" protocol udp;
        l3proto ip;
    }
    ct helper tftp-std6 {
        type "tftp" protocol udp;
        l3proto ip6;
    }
    chain pre {
        type filter hook prerouting priority filter;
        meta nfproto ipv4 udp dport 69 ct helper set "tftp-std4"
        meta nfproto ipv6 udp dport 69 ct helper set "tftp-std6"
    }
}
EOF
fi
check "B nft ct helper rules (type \"tftp\" protocol udp) accepted" pass $?
rx nft list table inet tftphelpers >"$RESULTS/nft-helpers.txt" 2>&1

xfer B-get4 get 4; check "B get (IPv4), sha256 verified" pass $?
xfer B-put4 put 4; check "B put (IPv4), sha256 verified" pass $?
xfer B-get6 get 6; check "B get (IPv6), sha256 verified" pass $?
xfer B-put6 put 6; check "B put (IPv6), sha256 verified" pass $?
xfer B-get4-blk get 4 --tftp-blksize 1468; check "B get with blksize 1468 (IPv4)" pass $?

pids=(); names=()
for n in 1 2; do
    for f in 4 6; do
        # lock-step 512-byte blocks, 8 at once, under TCG: give them time
        XFER_MAX=120 xfer "B-par-get$f-$n" get $f & pids+=($!); names+=("get$f-$n")
        XFER_MAX=120 xfer "B-par-put$f-$n" put $f & pids+=($!); names+=("put$f-$n")
    done
done
bad=0
for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || { bad=$((bad + 1)); say "parallel ${names[$i]} failed"; }
done
check "B ${#pids[@]} transfers in parallel (get+put, IPv4+IPv6), all verified" pass $bad

related=$(rx nft list chain inet filter forward | sed -n 's/.*ct status expected counter packets \([0-9]*\) .*/\1/p')
say "data flows entering as related+expected: ${related:-?}"
[ "${related:-0}" -ge 13 ]; check "B every transfer's data flow entered as an expected connection (13+)" pass $?
rx conntrack -L -p udp >"$RESULTS/conntrack-udp.txt" 2>&1
say "udp conntracks: $(grep -c . "$RESULTS/conntrack-udp.txt") (conntrack-udp.txt)"

pending B-pending4 4; check "B pending expectation listed (IPv4)" pass $?
pending B-pending6 6; check "B pending expectation listed (IPv6)" pass $?

out=$(probe $S4Q $BAD_HEX); port=${out%% *}
rx conntrack -L expect -f ipv4 >"$RESULTS/expect-list-malformed.txt" 2>&1
say "malformed request: client port $port, ${out#* }"
[ "${out#* }" = refused ]; check "B malformed request still passes the router" pass $?
! grep -qE "dport=$port( |$)" "$RESULTS/expect-list-malformed.txt"
check "B malformed request creates no expectation" pass $?

! lsmod | grep -q '^nf_conntrack_tftp '; check "B kernel nf_conntrack_tftp not loaded" pass $?
grep -q 'tftp: expecting 17' "$RESULTS/daemon.log"; check "B daemon logged 'tftp: expecting'" pass $?
stop_daemon TERM; check "B daemon exits with status 0 on SIGTERM" pass $?
stats=$(grep -E 'tftp: packets [0-9]+' "$RESULTS/daemon.log" | tail -n1)
say "daemon stats: ${stats:-none}"
[[ "$stats" =~ parse_errors\ ([0-9]+) ]] && [ "${BASH_REMATCH[1]}" -ge 1 ]
check "B daemon counted the malformed request as a parse error" pass $?
# Data flows cost no user-space round trips beyond their requests, on every kernel:
# the helper analyses the requests (13 transfers and a few probes); the data blocks of
# the transfers (thousands) are either not queued at all or, on kernels that give
# expected connections their master's helper, passed unparsed as expected_passed.
analysed=; passed=
[[ "$stats" =~ tftp:\ packets\ ([0-9]+) ]] && analysed=${BASH_REMATCH[1]}
[[ "$stats" =~ expected_passed\ ([0-9]+) ]] && passed=${BASH_REMATCH[1]}
[ -n "$analysed" ] && [ "$analysed" -gt 0 ] && [ "$analysed" -lt 100 ]
check "B data flows cost no analysis: ${analysed:-?} packets analysed for 13 transfers and the probes, ${passed:-?} data packets passed unparsed" pass $?

dmesg | grep -E 'cthd-fwd-drop|nf_conntrack|nfnetlink|cthelper' >"$RESULTS/dmesg.txt"
say "forward drops logged: $(grep -c cthd-fwd-drop "$RESULTS/dmesg.txt")"
summary
