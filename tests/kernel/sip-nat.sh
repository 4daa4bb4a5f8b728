#!/bin/bash
# tests/kernel/sip-nat.sh — SIP through NAT (issue #14) with the user-space
# "sip" helper, in a real kernel. Runs INSIDE the run-in-kernel.sh guest
# (tests/kernel/run.sh boots it).
# packages: sip-tester
#
#   sip-nat.sh        (no reference mode: conntrackd has no SIP helper)
#
# Topology (lib.sh, laid out as nat.sh): phones 192.0.2.2 and 192.0.2.3 in
# the client namespace -- r0 router r1 -- the provider / outside phone
# 198.51.100.2 in the server namespace. The router masquerades IPv4 leaving
# r1 (its outside address 198.51.100.1) and the server has NO route back to
# 192.0.2.0/24: whatever the router does not translate cannot arrive. Forward
# policy drop except established,related, new SIP signalling from the inside
# (udp and tcp 5060), a STUN-like probe (udp 3478) and, in phase F, what the
# port forward admits (ct status dnat). The daemon runs the shipped
# configuration (SIP on by default) with its own firewall table.
#
# Signalling: sipp (Debian's sip-tester) with sip.sh's scenarios (sip-uac.xml
# offers audio + video on the ports of its -inf line, named by the call's
# Request-URI user; sip-uas.xml answers 5xxxx for an offered 4xxxx;
# sip-register.xml / sip-registrar.xml). Each side's media goes where the SDP
# it RECEIVED says (read from sipp's message logs), as a phone's would:
# sip-tool.py media-to binds a receiver on every RTP and RTCP port a side
# announced and feeds it from the other namespace (a fresh source port) at the
# address:port the other side was told; each datagram names where it was sent
# and which receiver it is meant for, so a phone fed another phone's stream
# notices. media-to starts before the call and reads the logs itself once the
# call is up (processes are slow to start under TCG). A UDP call
# (sip-nat-uac.xml) lasts until the scenario sends its phone a NOTIFY, a TCP
# call SIP_PAUSE ms (8000) after its ACK. sip-tool.py stun-call is a phone that
# already names its public address (byte-for-byte comparison at both ends),
# retransmit-nat an INVITE sent twice through the port forward.
#
# Phases
#   A  no daemon: a UDP call's signalling passes the masquerade, the server
#      received the phone's inside address in the SDP, no media either way
#   B  daemon: a UDP call: the server received the router's outside address and
#      mapped port (Via, From, Contact, SDP o=/c=) and nothing naming the inside
#      address, the 200 reached the phone with its own Via again, the phone's
#      media expectations are on the outside address, media both ways, nothing
#      left after the BYE; an INVITE sent again (twice at once, 0.5 s later,
#      after its 200) arrives as it did the first time; a TCP call: SDP
#      rewritten, media both ways
#   C  REGISTER from behind the NAT: the registrar got the outside address and
#      mapped port as Contact, the 200 came back mapped to the inside, the
#      signalling expectation is on the outside address; a call from the
#      registrar's side to the registered contact reaches the phone, its answer
#      names the outside address, media both ways
#   D  a phone that already advertises its public address (learned with a
#      STUN-like probe): INVITE, 200, ACK, BYE, 200 pass byte-identical, no
#      expectation and no refusal for its media
#   E  two inside phones (192.0.2.2, 192.0.2.3), each INVITE the first packet
#      of its signalling connection, offer the same ports to the same server
#      at the same time: the second gets other (even) ports on the outside
#      address, each phone receives its own streams, the server both phones'
#   F  port forward (DNAT udp/tcp 5060 on 198.51.100.1 to a PBX at 192.0.2.2):
#      the outside phone calls the public address over UDP and TCP, the PBX's
#      answer names the public address, media both ways; an INVITE and its 200
#      sent again (a late 200) arrive as they did the first time
#   Stop  status: rewrites counted, no expectation or rewrite errors; the
#      kernel's nf_nat_sip not loaded; SIGTERM: exit status 0
# Prints one line per check and finally "N passed, M failed"; exit 0 iff M = 0.
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh disable=SC1091
. "$HERE/lib.sh"
scenario_begin sip-nat "$@"
if [ -n "$REFERENCE" ]; then
    say "conntrackd has no SIP helper: no reference mode"; echo "0 passed, 1 failed"; exit 1
fi
say "sip-nat scenario, daemon: $CTHELPERD"
command -v sipp >/dev/null || { say "no sipp (Debian package sip-tester)"; echo "0 passed, 1 failed"; exit 1; }
CONF=/tmp/sip-nat-cthelperd.conf
SOCK=/tmp/sip-nat-cthelperd.sock
export CTHELPERD_ARGS="--config $CONF --control-socket $SOCK"   # read by lib.sh start_daemon
TOOL=$HERE/sip-tool.py
PUB=$R4S                    # the router's outside address (masquerade)
C4B=192.0.2.3               # a second inside phone
# ms a TCP call stays up after its ACK (a UDP call until the scenario ends it):
# the media must flow in that time (a second or two; more under TCG on a busy host)
PAUSE=${SIP_PAUSE:-8000}
MIN=3                       # datagrams each receiver must get

kernel_setup || exit 2
# NAT: the nat chain type, masquerade, dnat (nf_nat also registers the
# "nat-follow-master" expectation function)
for m in nf_nat nft_chain_nat nft_nat nft_masq; do
    modprobe "$m" || { say "modprobe $m failed"; exit 2; }
done
setup_topology || exit 2
ip -n server route del default
ip -n server -6 route del default
ip -n client addr add $C4B/24 dev c0
rx nft -f - <<'EOF' || exit 2
table inet filter {
    chain forward {
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "r0" oifname "r1" udp dport { 3478, 5060 } ct state new accept
        iifname "r0" oifname "r1" tcp dport 5060 ct state new accept
        limit rate 20/second log prefix "cthd-fwd-drop: " level warn
    }
}
table inet nat {
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "r1" meta nfproto ipv4 masquerade
    }
}
EOF
say "topology up: masquerade on r1 ($PUB), the server has no route to the inside; $(sipp -v 2>&1 | grep -m1 -o 'SIPp v[^ ]*')"

# ---------------------------------------------------------------- tools
# uas NAME NS ADDR TRANSPORT [-sf XML] [sipp args...]: a sipp UAS (sip-uas.xml,
# answering with c= ADDR) on ADDR:${UAS_PORT:-5060} in NS, in the background
declare -A UAS_PID
uas() {
    local name=$1 ns=$2 addr=$3 t=$4 i proto=u
    shift 4
    local sf=(-sf "$HERE/sip-uas.xml")
    [ "${1:-}" = -sf ] && { sf=(-sf "$2"); shift 2; }
    ip netns exec "$ns" sipp "${sf[@]}" -t "$t" -i "$addr" -p "${UAS_PORT:-5060}" -bind_local \
        -key cnet "IP4 $addr" -nostdin -trace_err -error_file "$RESULTS/sipp-$name.err" \
        -trace_msg -message_file "$RESULTS/sipp-$name.msg" "$@" >"$RESULTS/sipp-$name.out" 2>&1 &
    UAS_PID[$name]=$!
    [ "$t" = t1 ] && proto=t
    for ((i = 0; i < 100; i++)); do
        ip netns exec "$ns" ss -Hln"$proto" "sport = :${UAS_PORT:-5060}" | grep -qF "$addr" && return 0
        kill -0 "${UAS_PID[$name]}" 2>/dev/null || break
        sleep 0.1
    done
    say "UAS $name did not come up:"; indent <"$RESULTS/sipp-$name.out"
    return 1
}
uas_stop() { kill "${UAS_PID[$1]}" 2>/dev/null; wait "${UAS_PID[$1]}" 2>/dev/null; unset "UAS_PID[$1]"; }

# uac NAME NS TARGET LOCAL TRANSPORT "A;V" [-- sipp args]: a sipp UAC in NS
# calling sip:NAME@TARGET:${UAC_DPORT:-5060} from LOCAL, offering c= LOCAL,
# audio A and video V; in the background. /tmp/flag-NAME gets "1 acked", then
# the call lasts until hangup NAME (UDP: sip-nat-uac.xml) or $PAUSE ms (TCP:
# sip-uac.xml; sipp as a TCP client takes no request from elsewhere), then
# "1 bye".
declare -A UAC_PID
uac() {
    local name=$1 ns=$2 target=$3 local=$4 t=$5 ports=$6 xml=sip-nat-uac.xml
    shift 6
    [ "${1:-}" = -- ] && shift
    [ "$t" = u1 ] || xml=sip-uac.xml
    printf 'SEQUENTIAL\n%s\n' "$ports" >"/tmp/calls-$name.csv"
    : >"/tmp/flag-$name"
    ip netns exec "$ns" sipp "$target:${UAC_DPORT:-5060}" -sf "$HERE/$xml" -inf "/tmp/calls-$name.csv" \
        -s "$name" -t "$t" -i "$local" -bind_local -key cnet "IP4 $local" -key flag "/tmp/flag-$name" \
        -m 1 -d "$PAUSE" -recv_timeout 15000 -timeout 60 -timeout_error -nostdin \
        -trace_err -error_file "$RESULTS/sipp-$name.err" -trace_msg -message_file "$RESULTS/sipp-$name.msg" \
        "$@" >"$RESULTS/sipp-$name.out" 2>&1 &
    UAC_PID[$name]=$!
}
# hangup NAME NS ADDR PORT: end the UDP call of UAC NAME: a NOTIFY with its
# Call-ID sent to its own socket ADDR:PORT from inside NS (not through the
# router: this is the scenario talking to its phone, not SIP under test)
hangup() {
    local line cid=''
    while IFS= read -r line; do
        case $line in "Call-ID: "*) cid=${line#Call-ID: }; cid=${cid%$'\r'}; break ;; esac
    done <"$RESULTS/sipp-$1.msg"
    printf 'NOTIFY sip:sipp@%s:%s SIP/2.0\r\nVia: SIP/2.0/UDP %s:9;branch=z9hG4bK-hangup\r\nFrom: <sip:scenario@%s>;tag=hangup\r\nTo: <sip:sipp@%s>\r\nCall-ID: %s\r\nCSeq: 1 NOTIFY\r\nEvent: hangup\r\nContent-Length: 0\r\n\r\n' \
        "$3" "$4" "$3" "$3" "$3" "$cid" >"/tmp/hangup-$1"
    # one write(2), one datagram (bash's printf would send it line by line)
    # shellcheck disable=SC2016
    ip netns exec "$2" bash -c 'cat "$1" >"/dev/udp/$2/$3"' _ "/tmp/hangup-$1" "$3" "$4"
}
# uac_wait NAME: the UAC's exit status (0: the call completed, BYE answered)
uac_wait() { local rc; wait "${UAC_PID[$1]}"; rc=$?; unset "UAC_PID[$1]"; return $rc; }
# flag_wait NAME WORD: wait (at most 30 s) until call NAME logged WORD
flag_wait() {
    local i
    for ((i = 0; i < 300; i++)); do
        grep -q " $2\$" "/tmp/flag-$1" 2>/dev/null && return 0
        [ -n "${UAC_PID[$1]:-}" ] && ! kill -0 "${UAC_PID[$1]}" 2>/dev/null && break
        sleep 0.1
    done
    say "$1: no '$2'; flag: $(tr '\n' ' ' <"/tmp/flag-$1")"
    return 1
}

# sipmsg LOG received|sent REGEX: the first message sipp received (sent) whose
# first line matches REGEX (awk ERE), from its -trace_msg log LOG, without CRs
sipmsg() {
    awk -v dir="message $2" -v re="$3" '
        /^--------------------/ { if (keep) exit; hdr = 1; started = 0; next }
        hdr { ok = index($0, dir) > 0; hdr = 0; next }
        !started && /^\r?$/ { next }
        !started { started = 1; keep = ok && $0 ~ re }
        keep { print }
    ' "$1" 2>/dev/null | tr -d '\r'
}
# sdp_vars FILE: SDP_O, SDP_C (first o= / c= address), SDP_A, SDP_V (m=audio,
# m=video port) of a message in FILE (pure bash: under TCG every process counts)
sdp_vars() {
    local line
    SDP_O='' SDP_C='' SDP_A='' SDP_V=''
    while IFS= read -r line; do
        case $line in
            "o="*" IN IP4 "*) [ -n "$SDP_O" ] || SDP_O=${line##* } ;;
            "c=IN IP4 "*) [ -n "$SDP_C" ] || SDP_C=${line#c=IN IP4 } ;;
            "m=audio "*) [ -n "$SDP_A" ] || { SDP_A=${line#m=audio }; SDP_A=${SDP_A%% *}; } ;;
            "m=video "*) [ -n "$SDP_V" ] || { SDP_V=${line#m=video }; SDP_V=${SDP_V%% *}; } ;;
        esac
    done <"$1"
}
# hostport FILE HEADER: host:port of the first HEADER's sent-by (Via) or URI
hostport() {
    local line v=''
    while IFS= read -r line; do
        case ${line,,} in "${2,,}:"*) v=$line; break ;; esac
    done <"$1"
    [ -n "$v" ] || return 0
    if [ "$2" = Via ]; then
        v=${v#*SIP/2.0/}; v=${v#* }; v=${v%%;*}
    else
        v=${v#*<sip:}; v=${v%%[;>]*}; v=${v#*@}
    fi
    echo "${v// /}"
}
# names_inside FILE ADDR: a line of the message other than Call-ID names ADDR
names_inside() { grep -v '^Call-ID:' "$1" | grep -qE "(^|[^0-9.])${2//./\\.}([^0-9]|$)"; }
# show_msg FILE: the lines of a message that matter here, for the log
show_msg() { grep -E '^(INVITE|REGISTER|SIP/2.0|Via|From|To|Contact|o=|c=|m=)' "$1" 2>/dev/null | indent; }

# mapped PROTO SRC SPORT DST DPORT: the port the router gave SRC:SPORT towards DST:DPORT
mapped() {
    rx conntrack -L -p "$1" -s "$2" --sport "$3" -d "$4" --dport "$5" 2>/dev/null |
        awk '{ n = 0; for (i = 1; i <= NF; i++) if ($i ~ /^dport=/ && ++n == 2) { sub(/dport=/, "", $i); print $i; exit } }'
}

# Media. Where a side sends is known only once the call is up (the SDP the
# other side received), and under TCG every process the scenario starts costs
# a fraction of a second; so the sender (sip-tool.py media-to) starts before
# the call and reads the SDPs from sipp's message logs itself as soon as the
# call is up: media_start NAME SECS STREAM..., then the call, then media_go NAME
# with the lines of its go file (which call to wait for, which messages to read;
# see sip-tool.py), then media_wait NAME.
# streams NS ADDR PORT FROMNS SRC KEY: RTP and RTCP: receivers on ADDR:PORT and
# PORT+1 in NS (PORT may be =KEY2: KEY2's port), fed from FROMNS (source
# address SRC, "-": any) at KEY's address, port and port+1
streams() {
    local rtcp
    case "$3" in =*) rtcp="$3+1" ;; *) rtcp=$(($3 + 1)) ;; esac
    printf '%s,%s,%s,%s,%s,=%s,=%s ' "$1" "$2" "$3" "$4" "$5" "$6" "$6"
    printf '%s,%s,%s,%s,%s,=%s,=%s+1 ' "$1" "$2" "$rtcp" "$4" "$5" "$6" "$6"
}
declare -A MEDIA_PID
media_start() {
    local name=$1 secs=$2
    shift 2
    rm -f "/tmp/go-$name" "/tmp/go-$name.tmp"
    $PY "$TOOL" media-to "/tmp/go-$name" "$RESULTS/media-$name.txt" $MIN "$secs" "$@" >"$RESULTS/media-$name.log" 2>&1 &
    MEDIA_PID[$name]=$!
}
media_go() { cat >"/tmp/go-$1.tmp" && cp "/tmp/go-$1.tmp" "$RESULTS/media-$1.go" && mv "/tmp/go-$1.tmp" "/tmp/go-$1"; }
# media_wait NAME: 0 iff every receiver got $MIN datagrams of its own stream and
# none of another; MEDIA_GOT = datagrams received in all
media_wait() {
    local rc
    wait "${MEDIA_PID[$1]}"; rc=$?
    unset "MEDIA_PID[$1]"
    MEDIA_GOT=$(awk '$4 == "got" { n += $5 + $7 } END { print n + 0 }' "$RESULTS/media-$1.txt" 2>/dev/null)
    say "media $1: $(awk '$4 == "got" { printf "%s->%s:%s=%s%s ", $11, $2, $3, $5, ($7 ? "+" $7 "other" : "") }' \
        "$RESULTS/media-$1.txt" 2>/dev/null)$(tail -n1 "$RESULTS/media-$1.txt" 2>/dev/null)"
    return $rc
}

# expect_event SRC DST PORT...: the daemon created an expectation SRC -> DST:PORT
# for every PORT (a NEW event in conntrack -E expect's log, running from phase B)
expect_event() {
    local src=$1 dst=$2 p
    shift 2
    [ $# -gt 0 ] || return 1
    for p in "$@"; do
        [ -n "$p" ] && grep -qE "\[NEW\] .*proto=17 src=$src dst=$dst sport=0 dport=$p " "$RESULTS/expect-events.txt" ||
            return 1
    done
}
# expect_list NAME: conntrack -L expect (IPv4) into expect-NAME.txt
expect_list() { rx conntrack -L expect -f ipv4 >"$RESULTS/expect-$1.txt" 2>"$RESULTS/expect-$1.err"; return 0; }
# listed_ports NAME PORT...: how many expectations in expect-NAME.txt go to one of the PORTs
listed_ports() {
    local f=$RESULTS/expect-$1.txt p n=0
    shift
    for p in "$@"; do n=$((n + $(grep -cE "dport=$p " "$f"))); done
    echo $n
}
status_field() { # status_field FIELD: the sip helper's counter from cthelperd status
    "$CTHELPERD" status --control-socket "$SOCK" 2>/dev/null | sed -n "s/^helper sip .* $1 \([0-9]*\).*/\1/p"
}

# ================================================================ phase A
say "=== phase A: no daemon: a UDP call from the phone behind the masquerade"
uas u4-A server "$S4" u1 || exit 2
# shellcheck disable=SC2046
media_start A 2 $(streams client "$C4" 40000 server - tp-a) $(streams client "$C4" 40010 server - tp-v) \
    $(streams server "$S4" =rs-a client "$C4" ts-a) $(streams server "$S4" =rs-v client "$C4" ts-v)
uac A client "$S4" "$C4" u1 "40000;40010"
media_go A <<EOF
wait /tmp/flag-A acked
tp sdp 0 $RESULTS/sipp-u4-A.msg received ^INVITE sip:A@
ts sdp 0 $RESULTS/sipp-A.msg received ^SIP/2.0 200
rs sdp 10000 $RESULTS/sipp-u4-A.msg received ^INVITE sip:A@
EOF
flag_wait A acked; check "A UDP call through the masquerade set up without a helper" pass $?
sipmsg "$RESULTS/sipp-u4-A.msg" received '^INVITE sip:A@' >"$RESULTS/srv-got-A.txt"
sipmsg "$RESULTS/sipp-A.msg" received '^SIP/2.0 200' >"$RESULTS/phone-got-A.txt"
show_msg "$RESULTS/srv-got-A.txt"
sdp_vars "$RESULTS/srv-got-A.txt"
[ "$SDP_C" = "$C4" ]; check "A without a helper the server received the phone's inside address (c=IN IP4 ${SDP_C:-none})" pass $?
media_wait A
[ "$MEDIA_GOT" = 0 ]
check "A media blocked both ways ($MEDIA_GOT datagrams): the server's to $C4 has no route, the phone's are dropped" pass $?
hangup A client "$C4" 5060
uac_wait A; check "A call completed (BYE, 200)" pass $?
uas_stop u4-A
rx conntrack -F >/dev/null 2>&1

# ================================================================ phase B
say "=== phase B: daemon running (shipped configuration, SIP on)"
cp "$REPO/init.d/cthelperd.config" "$CONF"
start_daemon "$RESULTS/daemon.log"; rc=$?
check "B daemon starts" pass $rc
if [ $rc != 0 ]; then summary; exit; fi
[ "$(helpers_serving sip)" = 4 ]
check "B sip registered and serving IPv4 + IPv6, UDP + TCP" pass $?
ip netns exec router conntrack -E expect -o timestamp >"$RESULTS/expect-events.txt" 2>&1 &
EV_PID=$!

# out_call NAME LABEL UAS TRANSPORT A V: the phone at $C4 calls the server
# (sipp UAS named UAS, already running) offering A and V; checks as described
# in the header. Keys for the media: tp (where the server sends to reach the
# phone), ts (where the phone sends to reach the server), rs (the server's
# receiving ports: what it was offered + 10000, as sip-uas.xml answers).
out_call() {
    local name=$1 label=$2 uasname=$3 t=$4 a=$5 v=$6 rc sgot pgot n mp sa sv
    sgot=$RESULTS/srv-got-$name.txt pgot=$RESULTS/phone-got-$name.txt
    # shellcheck disable=SC2046
    media_start "$name" 4 $(streams client "$C4" "$a" server - tp-a) $(streams client "$C4" "$v" server - tp-v) \
        $(streams server "$S4" =rs-a client "$C4" ts-a) $(streams server "$S4" =rs-v client "$C4" ts-v)
    uac "$name" client "$S4" "$C4" "$t" "$a;$v"
    media_go "$name" <<EOF
wait /tmp/flag-$name acked
tp sdp 0 $RESULTS/sipp-$uasname.msg received ^INVITE sip:$name@
ts sdp 0 $RESULTS/sipp-$name.msg received ^SIP/2.0 200
rs sdp 10000 $RESULTS/sipp-$uasname.msg received ^INVITE sip:$name@
EOF
    flag_wait "$name" acked; rc=$?
    check "$label: call set up through the masquerade (INVITE, 200, ACK)" pass $rc
    sipmsg "$RESULTS/sipp-$uasname.msg" received "^INVITE sip:$name@" >"$sgot"
    sipmsg "$RESULTS/sipp-$name.msg" received '^SIP/2.0 200' >"$pgot"
    say "$label: the INVITE as the server received it:"; show_msg "$sgot"
    sdp_vars "$sgot"
    sa=$SDP_A sv=$SDP_V
    if [ "$t" = u1 ]; then
        mp=$(mapped udp "$C4" 5060 "$S4" 5060)
        say "$label: the masquerade maps $C4:5060 to $PUB:${mp:-?}"
        [ -n "$mp" ] && [ "$(hostport "$sgot" Via)" = "$PUB:$mp" ] &&
            [ "$(hostport "$sgot" From)" = "$PUB:$mp" ] && [ "$(hostport "$sgot" Contact)" = "$PUB:$mp" ] &&
            [ "$SDP_O" = "$PUB" ] && [ "$SDP_C" = "$PUB" ]
        check "$label: the server received Via, From, Contact $PUB:${mp:-?} and SDP o=, c= $PUB" pass $?
        [ -s "$sgot" ] && ! names_inside "$sgot" "$C4"
        check "$label: nothing the server received names the inside address $C4 (Call-ID aside)" pass $?
        say "$label: the 200 as the phone received it:"; show_msg "$pgot"
        [ "$(hostport "$pgot" Via)" = "$C4:5060" ]
        check "$label: the 200 reached the phone with its own Via $C4:5060 again" pass $?
    else
        say "$label: over TCP sipp's Via and Contact name port 5060, not its connection's: SDP only"
        [ "$SDP_O" = "$PUB" ] && [ "$SDP_C" = "$PUB" ]
        check "$label: the server received SDP o=, c= $PUB (o=${SDP_O:-none} c=${SDP_C:-none})" pass $?
    fi
    expect_event "$S4" "$PUB" "$sa" $((${sa:-0} + 1)) "$sv" $((${sv:-0} + 1))
    check "$label: the phone's media expectations are on $PUB (from $S4 to ports ${sa:-?}, ${sv:-?} and RTCP)" pass $?
    ! grep -qE "\[NEW\] .*src=$S4 dst=$C4 sport=0 dport=($a|$((a + 1))|$v|$((v + 1))) " "$RESULTS/expect-events.txt"
    check "$label: no expectation from $S4 to the inside address $C4" pass $?
    media_wait "$name"
    check "$label: media flows both ways (audio + video, RTP + RTCP, each side sends where its SDP says)" pass $?
    [ "$t" = u1 ] && hangup "$name" client "$C4" 5060
    uac_wait "$name"; check "$label: call completed (BYE, 200)" pass $?
    expect_list "$name-after"
    n=$(listed_ports "$name-after" "${sa:-0}" $((${sa:-0} + 1)) "${sv:-0}" $((${sv:-0} + 1)) \
        $((a + 10000)) $((a + 10001)) $((v + 10000)) $((v + 10001)))
    [ "$n" = 0 ]; check "$label: no expectation of the call left after the BYE ($n)" pass $?
}

# retransmitted NAME LABEL CALLERNS CADDR TARGET CALLEENS BADDR APORT: a
# caller whose 200 is slow sends its INVITE again (sip-tool.py retransmit-nat):
# the callee must get the same bytes each time, and the caller the same 200 (a
# UAS may recognise a retransmission by its bytes; sipp does, and aborts a
# call whose INVITE comes again in another form)
retransmitted() {
    local name=$1 label=$2 rc
    shift 2
    rm -rf "/tmp/retrans-$name"; mkdir -p "/tmp/retrans-$name"
    $PY "$TOOL" retransmit-nat "/tmp/retrans-$name" "$@" >"$RESULTS/retransmit-$name.log" 2>&1
    rc=$?
    indent <"$RESULTS/retransmit-$name.log"
    mkdir -p "$RESULTS/retransmit-$name" && cp "/tmp/retrans-$name"/* "$RESULTS/retransmit-$name/" 2>/dev/null
    grep -q '^INVITE sent twice at once, the second as the callee received it: identical' "$RESULTS/retransmit-$name.log"
    check "$label: an INVITE sent twice at once (the second while the first may wait for its verdict) reaches the callee byte-identical both times (exit $rc)" pass $?
    grep -q '^INVITE sent again 0.5 s later, before the 200, as the callee received it: identical' "$RESULTS/retransmit-$name.log" &&
        grep -q '^INVITE sent again after the 200, as the callee received it: identical' "$RESULTS/retransmit-$name.log"
    check "$label: an INVITE sent again 0.5 s later and after its 200 reaches the callee byte-identical to the first" pass $?
    grep -q '^the 200 sent again, as the caller received it: identical' "$RESULTS/retransmit-$name.log"
    check "$label: the 200 sent again reaches the caller byte-identical to the first" pass $?
}

uas u4 server "$S4" u1 || say "no UDP UAS"
out_call B-udp "B UDP" u4 u1 40100 40110
uas_stop u4
retransmitted B "B UDP" client "$C4" "$S4" server "$S4" 40300
uas t4 server "$S4" t1 || say "no TCP UAS"
out_call B-tcp "B TCP" t4 t1 40200 40210
uas_stop t4
rx conntrack -F >/dev/null 2>&1

# ================================================================ phase C
say "=== phase C: REGISTER from behind the NAT, then a call from the registrar's side"
uas reg server "$S4" u1 -sf "$HERE/sip-registrar.xml" -m 1 || say "no registrar"
ip netns exec client sipp "$S4:5060" -sf "$HERE/sip-register.xml" -t u1 -i "$C4" -p 5060 -bind_local \
    -key contact_port 5060 -m 1 -recv_timeout 10000 -timeout 30 -timeout_error -nostdin \
    -trace_msg -message_file "$RESULTS/sipp-register.msg" >"$RESULTS/sipp-register.out" 2>&1
check "C REGISTER from $C4:5060 answered 200" pass $?
uas_stop reg
MAPPED=$(mapped udp "$C4" 5060 "$S4" 5060)
sipmsg "$RESULTS/sipp-reg.msg" received '^REGISTER' >"$RESULTS/srv-got-C-register.txt"
sipmsg "$RESULTS/sipp-register.msg" received '^SIP/2.0 200' >"$RESULTS/phone-got-C-register.txt"
say "C the REGISTER as the registrar received it (masquerade: $C4:5060 -> $PUB:${MAPPED:-?}):"
show_msg "$RESULTS/srv-got-C-register.txt"
contact=$(hostport "$RESULTS/srv-got-C-register.txt" Contact)
[ -n "$MAPPED" ] && [ "$contact" = "$PUB:$MAPPED" ] &&
    [ "$(hostport "$RESULTS/srv-got-C-register.txt" Via)" = "$PUB:$MAPPED" ]
check "C the registrar received Via and Contact $PUB:${MAPPED:-?} (Contact ${contact:-none})" pass $?
say "C the registrar's 200 as the phone received it:"; show_msg "$RESULTS/phone-got-C-register.txt"
[ "$(hostport "$RESULTS/phone-got-C-register.txt" Via)" = "$C4:5060" ] &&
    [ "$(hostport "$RESULTS/phone-got-C-register.txt" Contact)" = "$C4:5060" ]
check "C the 200 reached the phone with its own Via and Contact $C4:5060 again" pass $?
expect_list C-reg
indent <"$RESULTS/expect-C-reg.txt"
grep -qE "proto=17 src=$S4 dst=$PUB sport=0 dport=${MAPPED:-none} .*helper=sip" "$RESULTS/expect-C-reg.txt"
check "C the registration's signalling expectation $S4 -> $PUB:${MAPPED:-?} is listed" pass $?

# in_call NAME LABEL PHONE TRANSPORT A V [TARGET [UAC args]]: the outside
# phone ($S4) calls TARGET (default $PUB:5060) offering A and V; the inside
# phone or PBX (a sipp UAS named PHONE at $C4, already running) answers with
# its offer + 10000. Keys: tp (where the outside phone sends: the answer as it
# received it), ts (where the inside side sends), rp (the inside side's ports).
in_call() {
    local name=$1 label=$2 phone=$3 t=$4 a=$5 v=$6 target=${7:-$PUB:5060} sgot pgot pa pv lport=5060
    shift 6
    [ $# -gt 0 ] && shift
    [ "${1:-}" = -p ] && lport=$2
    sgot=$RESULTS/srv-got-$name.txt pgot=$RESULTS/phone-got-$name.txt
    # shellcheck disable=SC2046
    media_start "$name" 4 $(streams client "$C4" =rp-a server - tp-a) $(streams client "$C4" =rp-v server - tp-v) \
        $(streams server "$S4" "$a" client "$C4" ts-a) $(streams server "$S4" "$v" client "$C4" ts-v)
    UAC_DPORT=${target##*:} uac "$name" server "${target%:*}" "$S4" "$t" "$a;$v" -- "$@"
    media_go "$name" <<EOF
wait /tmp/flag-$name acked
tp sdp 0 $RESULTS/sipp-$name.msg received ^SIP/2.0 200
ts sdp 0 $RESULTS/sipp-$phone.msg received ^INVITE sip:$name@
rp sdp 10000 $RESULTS/sipp-$phone.msg received ^INVITE sip:$name@
EOF
    flag_wait "$name" acked
    check "$label: the call to $target reaches the inside side at $C4 (INVITE, 200, ACK)" pass $?
    sipmsg "$RESULTS/sipp-$name.msg" received '^SIP/2.0 200' >"$sgot"
    sipmsg "$RESULTS/sipp-$phone.msg" received "^INVITE sip:$name@" >"$pgot"
    say "$label: the INVITE as the inside side received it:"; show_msg "$pgot"
    say "$label: the 200 as the outside phone received it:"; show_msg "$sgot"
    sdp_vars "$sgot"
    pa=$SDP_A pv=$SDP_V
    [ "$SDP_O" = "$PUB" ] && [ "$SDP_C" = "$PUB" ] && [ "$(hostport "$sgot" Contact)" = "$target" ] &&
        ! names_inside "$sgot" "$C4"
    check "$label: the answer reached the outside phone naming $PUB (Contact $target, SDP o=, c=), nothing naming $C4" pass $?
    expect_event "$S4" "$PUB" "$pa" $((${pa:-0} + 1)) "$pv" $((${pv:-0} + 1))
    check "$label: the inside side's media expectations are on $PUB (from $S4 to ports ${pa:-?}, ${pv:-?} and RTCP)" pass $?
    media_wait "$name"; check "$label: media flows both ways" pass $?
    [ "$t" = u1 ] && hangup "$name" server "$S4" "$lport"
    uac_wait "$name"; check "$label: call completed (BYE, 200)" pass $?
}
# the phone answers calls on its contact; the call comes from the registrar's
# address (another port) to the contact the registrar knows
uas phone client "$C4" u1 || say "no phone UAS"
in_call C-call "C call from $S4:5070 to the registered contact" phone u1 42000 42010 "${contact:-none:5060}" -p 5070
uas_stop phone
rx conntrack -F >/dev/null 2>&1

# ================================================================ phase D
say "=== phase D: a phone that already advertises its public address (STUN)"
refused0=$(status_field refused)
rm -rf /tmp/stun; mkdir -p /tmp/stun
$PY "$TOOL" stun-call /tmp/stun "$C4" 5064 "$S4" 46000 >"$RESULTS/stun-call.log" 2>&1 &
stun_pid=$!
for ((i = 0; i < 300; i++)); do [ -e /tmp/stun/acked ] && break; kill -0 $stun_pid 2>/dev/null || break; sleep 0.1; done
touch /tmp/stun/bye
wait $stun_pid; rc=$?
indent <"$RESULTS/stun-call.log"
mkdir -p "$RESULTS/stun" && cp /tmp/stun/*.sent /tmp/stun/*.got "$RESULTS/stun/" 2>/dev/null
pub=$(sed -n 's/.*learned its public address \([^ ]*\)$/\1/p' "$RESULTS/stun-call.log")
grep -q '^INVITE: identical' "$RESULTS/stun-call.log"
check "D the INVITE naming ${pub:-the public address} (Via, From, Contact, SDP o=, c=) reached the server byte-identical" pass $?
grep -q '^200-INVITE: identical' "$RESULTS/stun-call.log"
check "D the server's 200 reached the phone byte-identical" pass $?
grep -q '^ACK: identical' "$RESULTS/stun-call.log" && grep -q '^BYE: identical' "$RESULTS/stun-call.log" &&
    grep -q '^200-BYE: identical' "$RESULTS/stun-call.log"
check "D ACK, BYE and its 200 passed byte-identical (tool exit $rc)" pass $?
n=$(grep -cE '\[NEW\] .* dport=4600[01] ' "$RESULTS/expect-events.txt")
refused1=$(status_field refused)
say "D expectations created to port 46000/46001: $n; sip refused ${refused0:-?} before, ${refused1:-?} after"
[ "$n" = 0 ] && [ -n "$refused1" ] && [ "$refused1" = "${refused0:-x}" ]
check "D no expectation and no refusal for the phone's media (it named $PUB port 46000 itself)" pass $?
rx conntrack -F >/dev/null 2>&1

# ================================================================ phase E
say "=== phase E: two inside phones offer the same ports to the same server at the same time"
uas u4-E server "$S4" u1 || say "no UDP UAS"
# shellcheck disable=SC2046
media_start E 5 $(streams client "$C4" 44000 server - a-tp-a) $(streams client "$C4" 44010 server - a-tp-v) \
    $(streams client "$C4B" 44000 server - b-tp-a) $(streams client "$C4B" 44010 server - b-tp-v) \
    $(streams server "$S4" =a-rs-a client "$C4" a-ts-a) $(streams server "$S4" =a-rs-v client "$C4" a-ts-v) \
    $(streams server "$S4" =b-rs-a client "$C4B" b-ts-a) $(streams server "$S4" =b-rs-v client "$C4B" b-ts-v)
# each INVITE is the first packet of its signalling connection (conntrack flushed, no REGISTER)
uac E-alice client "$S4" "$C4" u1 "44000;44010" -- -p 5060
u=$RESULTS/sipp-u4-E.msg
media_go E <<EOF
wait /tmp/flag-E-alice acked
wait /tmp/flag-E-bob acked
a-tp sdp 0 $u received ^INVITE sip:E-alice@
a-ts sdp 0 $RESULTS/sipp-E-alice.msg received ^SIP/2.0 200
a-rs sdp 10000 $u received ^INVITE sip:E-alice@
b-tp sdp 0 $u received ^INVITE sip:E-bob@
b-ts sdp 0 $RESULTS/sipp-E-bob.msg received ^SIP/2.0 200
b-rs sdp 10000 $u received ^INVITE sip:E-bob@
EOF
flag_wait E-alice acked; rc1=$?
uac E-bob client "$S4" "$C4B" u1 "44000;44010" -- -p 5060
flag_wait E-bob acked; rc2=$?
grep -q ' bye$' /tmp/flag-E-alice && rc1=1
for p in alice bob; do
    sipmsg "$RESULTS/sipp-u4-E.msg" received "^INVITE sip:E-$p@" >"$RESULTS/srv-got-E-$p.txt"
    sipmsg "$RESULTS/sipp-E-$p.msg" received '^SIP/2.0 200' >"$RESULTS/phone-got-E-$p.txt"
done
[ $rc1 = 0 ] && [ $rc2 = 0 ]
check "E both calls up at the same time (alice from $C4, bob from $C4B, both offering 44000 / 44010)" pass $?
for p in alice bob; do say "E the INVITE of $p as the server received it:"; show_msg "$RESULTS/srv-got-E-$p.txt"; done
say "E masquerade: alice $C4:5060 -> $PUB:$(mapped udp "$C4" 5060 "$S4" 5060), bob $C4B:5060 -> $PUB:$(mapped udp "$C4B" 5060 "$S4" 5060)"
sdp_vars "$RESULTS/srv-got-E-alice.txt"; ac=$SDP_C aa=$SDP_A av=$SDP_V
sdp_vars "$RESULTS/srv-got-E-bob.txt"; bc=$SDP_C ba=$SDP_A bv=$SDP_V
[ "$ac" = "$PUB" ] && [ "$bc" = "$PUB" ]
check "E the server was told $PUB for both phones (alice c=${ac:-none}, bob c=${bc:-none})" pass $?
[ "${aa:-}" = 44000 ] && [ "${av:-}" = 44010 ] && [ -n "$ba" ] && [ -n "$bv" ] &&
    [ "$ba" != 44000 ] && [ "$bv" != 44010 ] && [ "$ba" != "$bv" ] && [ $((ba % 2)) = 0 ] && [ $((bv % 2)) = 0 ]
check "E alice keeps 44000 / 44010, bob's RTP/RTCP pairs moved to even ports (audio ${ba:-none}, video ${bv:-none})" pass $?
expect_event "$S4" "$PUB" "$aa" $((${aa:-0} + 1)) "$av" $((${av:-0} + 1)) "$ba" $((${ba:-0} + 1)) "$bv" $((${bv:-0} + 1))
check "E both phones' media expectations were created on $PUB (alice ${aa:-?}, ${av:-?}; bob ${ba:-?}, ${bv:-?}; + RTCP)" pass $?
media_wait E
check "E each phone receives its own streams (none of the other's) and the server both phones' (16 receivers)" pass $?
hangup E-alice client "$C4" 5060
hangup E-bob client "$C4B" 5060
uac_wait E-alice; rc1=$?
uac_wait E-bob; rc2=$?
[ $rc1 = 0 ] && [ $rc2 = 0 ]; check "E both calls completed (BYE, 200)" pass $?
uas_stop u4-E
rx conntrack -F >/dev/null 2>&1

# ================================================================ phase F
say "=== phase F: a PBX behind a port forward ($PUB:5060 udp/tcp -> $C4:5060), called from outside"
rx nft -f - <<NFT
table ip portfwd {
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        iifname "r1" ip daddr $PUB udp dport 5060 dnat to $C4:5060
        iifname "r1" ip daddr $PUB tcp dport 5060 dnat to $C4:5060
    }
}
NFT
rc=$?
rx nft insert rule inet filter forward iifname "r1" oifname "r0" ct status dnat accept || rc=1
check "F port forward and its forward rule loaded" pass $rc
uas pbx-u client "$C4" u1 || say "no PBX (UDP)"
in_call F-udp "F UDP" pbx-u u1 45000 45010
uas_stop pbx-u
retransmitted F "F UDP" server "$S4" "$PUB" client "$C4" 45200
uas pbx-t client "$C4" t1 || say "no PBX (TCP)"
in_call F-tcp "F TCP" pbx-t t1 45100 45110
uas_stop pbx-t

# ================================================================ stop
kill $EV_PID 2>/dev/null; wait $EV_PID 2>/dev/null
say "expectation events: $(grep -c '\[NEW\]' "$RESULTS/expect-events.txt") NEW, $(grep -c '\[DESTROY\]' "$RESULTS/expect-events.txt") DESTROY (expect-events.txt)"
"$CTHELPERD" status --control-socket "$SOCK" >"$RESULTS/status.txt" 2>&1
indent <"$RESULTS/status.txt"
rewritten=$(status_field rewritten)
errors=$(status_field expectation_errors)
rerrors=$(status_field rewrite_errors)
[ "${rewritten:-0}" -gt 0 ] && [ "$errors" = 0 ] && [ "$rerrors" = 0 ]
check "Stop status: sip rewritten ${rewritten:-?} > 0, expectation_errors ${errors:-?} = 0, rewrite_errors ${rerrors:-?} = 0" pass $?
grep -E 'sip: .*(refused|error|failed|cannot)' "$DAEMON_LOG" | tail -n 20 | indent
! lsmod | grep -qE '^nf_(conntrack|nat)_sip '; check "Stop kernel nf_conntrack_sip / nf_nat_sip not loaded" pass $?
stop_daemon TERM; check "Stop daemon exits with status 0 on SIGTERM" pass $?
rx nft list ruleset >"$RESULTS/nft-ruleset.txt" 2>&1
dmesg | grep -E 'cthd-fwd-drop|nf_conntrack|nfnetlink|cthelper|WARNING|Call Trace' >"$RESULTS/dmesg.txt"
say "forward drops logged: $(grep -c cthd-fwd-drop "$RESULTS/dmesg.txt")"
summary
