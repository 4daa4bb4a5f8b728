#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# bench/sip-bench-guest.sh — SIP helper benchmark: cthelperd's user-space "sip"
# helper vs the kernel's own nf_conntrack_sip (conntrackd has no SIP helper).
# A BENCHMARK, not a test: it prints numbers and asserts nothing about them (it
# exits non-zero only when a helper or the workload could not run at all).
# Runs INSIDE the run-in-kernel.sh guest; bench/sip-bench.sh boots it.
#
# Topology and firewall as tests/kernel/sip.sh: client 192.0.2.2 -- router --
# server 198.51.100.2; the router's forward policy drops all but new SIP
# signalling from the client side (udp/tcp dport 5060) and ct state
# established,related, so a helper is in the path of every call.
#
# Calls: sipp (Debian's sip-tester) UAC in the client namespace runs
# bench/sip-bench-uac.xml (INVITE with an SDP offering audio + video, 100, 200
# with the answer's SDP, ACK, BYE, 200: six datagrams through the router, eight
# media expectations, RTP + RTCP of two streams each way, created and removed
# again by the BYE); bench/sip-bench-uas.xml answers in the server namespace
# (the benchmark has its own scenarios, so that its workload stays put when
# tests/kernel's change).
# `-t un`: every call from a socket (a source port, a master conntrack) of its
# own, as distinct phones would. Two loads: CALLS_SEQ calls one at a time
# (-l 1) and CALLS_CONC calls with CONC at a time (-l CONC); sipp's -r is far
# above what it reaches, so the rate is what the path allows. Rounds alternate
# between the helpers (ROUNDS x MODES, each load after an untimed warm-up):
#   cthelperd  the daemon (shipped configuration + `config helper` sip, its own
#              table inet cthelperd); nf_conntrack_sip is not loaded (modprobe
#              refuses it, /sys/module checked)
#   kernel     nf_conntrack_sip loaded for the round only, assigned by
#              `table inet kernelsip { ct helper sip { type "sip" protocol udp;
#              l3proto inet; } ... udp dport 5060 ct helper set "sip" }` at the
#              daemon's priority (mangle); no daemon running, no user-space
#              helper registered (checked); unloaded again after the round
# Per load: calls/s = sipp's successful calls / (its CurrentTime - StartTime);
# media expectations = delta of expect_create in the router's
# /proc/net/stat/nf_conntrack (both helpers create through the same kernel
# function) and what is left afterwards; the daemon's CPU (schedstat); the
# whole VM's busy CPU (/proc/stat: sipp on both ends, the router's forwarding,
# the kernel helper's work in softirq, the daemon); packets queued to the
# daemon vs forwarded on 5060 (a counters-only table); cthelperd's status.
#
# Phones: a fresh daemon; the router's UDP conntrack timeouts raised to 3600 s
# (as nf_conntrack_sip's sip_timeout keeps a SIP connection) so that no phone's
# connection, and with it its registration, expires during the phase; a sipp
# registrar (bench/sip-bench-registrar.xml) in the server namespace; phones
# register (bench/sip-bench-register.xml, `-t un`: own source port, Contact on
# that port) until PHONES (cumulative: 1 10 100 1000) are registered, each
# sipp call then pausing with its socket open so that no later phone reuses its
# port. After each step: registration expectations created (expect_create) and
# listed (/proc/net/nf_conntrack_expect), the daemon's VmRSS, RssAnon, VmHWM.
# Then CALLS_CONC calls as in the rounds with the phones still registered.
# The client's ephemeral ports (phones, callers) are 50000-60999, apart from
# the media ports the calls announce on the same address (40000-49999): a
# registration and a media expectation to the same port would be one tuple.
#
# Environment: CTHELPERD_BIN (default $REPO/target/release/cthelperd),
# BENCH_OUT (default $REPO/bench/results), ROUNDS (3), MODES ("cthelperd
# kernel"), CALLS_SEQ (200), CALLS_CONC (1000), CONC (10), WARMUP (20),
# PHONES ("1 10 100 1000"), PHONE_RATE (registrations/s offered, 100).
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=${REPO:-$(cd "$HERE/.." && pwd)}
BIN=${CTHELPERD_BIN:-$REPO/target/release/cthelperd}
OUT=${BENCH_OUT:-$REPO/bench/results}
ROUNDS=${ROUNDS:-3}
MODES=${MODES:-cthelperd kernel}
CALLS_SEQ=${CALLS_SEQ:-200}
CALLS_CONC=${CALLS_CONC:-1000}
CONC=${CONC:-10}
WARMUP=${WARMUP:-20}
PHONES=${PHONES:-1 10 100 1000}
PHONE_RATE=${PHONE_RATE:-100}
UAC_XML=$HERE/sip-bench-uac.xml
REG_XML=$HERE/sip-bench-register.xml
UAS_XML=$HERE/sip-bench-uas.xml
REGISTRAR_XML=$HERE/sip-bench-registrar.xml

# shellcheck source=../tests/kernel/lib.sh
. "$REPO/tests/kernel/lib.sh"
# Logs go to the guest's tmpfs while measuring and are copied to $OUT at the end.
RESULTS=/tmp/sipbench
mkdir -p "$RESULTS" "$OUT"
CONF=/tmp/sipbench-cthelperd.conf
SOCK=/tmp/sipbench-cthelperd.sock
MODPROBE_CONF=/etc/modprobe.d/sipbench-helpers.conf

declare -A R   # results: R[mode.round.kind.metric], R[phones.N.metric], ...
BAD=0          # loads or helpers that could not run
DAEMON_PID=
UAS_PID=

# ---------------------------------------------------------------- small tools
mkfifo /tmp/sipbench-sleep.fifo
exec {SLEEP_FD}<>/tmp/sipbench-sleep.fifo
nap() { read -r -t "$1" -u "$SLEEP_FD" _; }
now_us() { echo "${EPOCHREALTIME/./}"; }
calc() { awk "BEGIN { printf \"%s\", ($*) }" </dev/null; }
# fmt VALUE FORMAT: bash's own printf (no fork: forks are slow under TCG)
fmt() { printf "$2" "$1" 2>/dev/null; }
HZ=$(getconf CLK_TCK)
cpu_ticks() { local s; read -r -a s <"/proc/$1/stat"; echo $((s[13] + s[14])); }
# cpu_ns PID: time on a CPU in ns (schedstat: not sampled at ticks; the daemon
# has one thread), else utime + stime
cpu_ns() {
    local ns
    if read -r ns _ <"/proc/$1/schedstat" 2>/dev/null && [[ $ns =~ ^[0-9]+$ ]]; then echo "$ns"
    else echo $(($(cpu_ticks "$1") * 1000000000 / HZ)); fi
}
status_kb() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }
# vm_cpu: "busy total" ticks summed over the VM's CPUs (busy = all but idle and iowait)
vm_cpu() { awk '$1 == "cpu" { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat; }
# queue_stat: "packets drops" summed over the router's queues (id_sequence is
# column 8; queue_dropped + queue_user_dropped are 6 and 7)
queue_stat() { rx awk '{ p += $8; d += $6 + $7 } END { print p + 0, d + 0 }' /proc/net/netfilter/nfnetlink_queue; }
# ct_stat NAME: a /proc/net/stat/nf_conntrack column of the router (hex per CPU), summed
ct_stat() {
    local want=$1 hdr row i idx=-1 sum=0
    {
        read -r -a hdr
        for i in "${!hdr[@]}"; do [ "${hdr[$i]}" = "$want" ] && idx=$i; done
        while read -r -a row; do sum=$((sum + 16#${row[$idx]})); done
    } < <(rx cat /proc/net/stat/nf_conntrack)
    [ "$idx" -ge 0 ] && echo "$sum" || echo "?"
}
# expect_listed: expectations in the router's table now
expect_listed() {
    if rx test -r /proc/net/nf_conntrack_expect; then
        rx cat /proc/net/nf_conntrack_expect | wc -l
    else
        rx conntrack -L expect 2>/dev/null | wc -l
    fi
}
# fwd_packets: "udp5060 icmp" packets forwarded by the router (counters table;
# ICMP errors, e.g. port unreachable for a 200 retransmitted to a caller that
# has hung up, are RELATED to a helped connection and queued too)
fwd_packets() {
    rx nft list table inet sipbench | awk '/counter packets/ { for (i = 1; i < NF; i++) if ($i == "packets") n = $(i + 1); if (/icmp/) c += n; else u += n }
        END { print u + 0, c + 0 }'
}
# sip_status: cthelperd's sip counters as "name value" lines ("-" without daemon)
sip_status() {
    [ -n "$DAEMON_PID" ] || return 0
    "$BIN" status --control-socket "$SOCK" 2>/dev/null |
        awk '$1 == "helper" && $2 == "sip" { sub(/.*: /, ""); for (i = 1; i < NF; i += 2) print $i, $(i + 1) }'
}
# stat_field FILE NAME: a column of the last line of a sipp -trace_stat file
stat_field() {
    awk -F';' -v want="$2" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == want) c = i; next } { last = $0 }
        END { if (!c || last == "") { print "?"; exit } split(last, f, ";"); print f[c] }' "$1" 2>/dev/null
}
# stat_secs FILE: CurrentTime - StartTime of the last line (each "date<TAB>time<TAB>epoch")
stat_secs() {
    awk -F';' 'END { split($1, a, "\t"); split($3, b, "\t"); if (a[3] != "" && b[3] != "") printf "%.3f", b[3] - a[3]; else print "?" }' "$1" 2>/dev/null
}
# daemon_pids: pids whose executable is the daemon binary (one ls, not a
# readlink per process: forks are slow under TCG); nothing is killed by name
daemon_pids() {
    local want
    want=$(readlink -f "$BIN")
    ls -l /proc/[0-9]*/exe 2>/dev/null | awk -v w="$want" '$NF == w { split($(NF - 2), p, "/"); print p[3] }'
}
kmod_loaded() { [ -d "/sys/module/$1" ]; }

# ---------------------------------------------------------------- kernel setup
# lib.sh's forbid_kernel_helpers, but nf_conntrack_sip may be allowed (kernel rounds)
forbid_helpers() { # forbid_helpers all|allow-sip
    local m mods=(nf_conntrack_ftp nf_conntrack_tftp nf_nat_ftp nf_nat_tftp nf_nat_sip)
    [ "$1" = all ] && mods+=(nf_conntrack_sip)
    mkdir -p /etc/modprobe.d
    for m in "${mods[@]}"; do echo "install $m /bin/false"; done >"$MODPROBE_CONF"
}

reset_kernel_state() {
    rx nft delete table inet kernelsip 2>/dev/null
    rx nft delete table inet cthelperd 2>/dev/null
    rx conntrack -F >/dev/null 2>&1
    rx conntrack -F expect >/dev/null 2>&1
}

firewall() {
    rx nft -f - <<'EOF'
table inet filter {
    chain forward {
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "r0" oifname "r1" udp dport 5060 ct state new accept
        iifname "r0" oifname "r1" tcp dport 5060 ct state new accept
        limit rate 20/second log prefix "cthd-fwd-drop: " level warn
    }
}
table inet sipbench {
    chain counts {
        type filter hook forward priority filter - 10; policy accept;
        udp dport 5060 counter
        udp sport 5060 counter
        meta l4proto icmp counter
    }
}
EOF
}

# ---------------------------------------------------------------- the helpers
# the shipped configuration; plus a `config helper` section for sip where it
# has none (SIP was not on by default before issue #13)
write_conf() {
    cp "$REPO/init.d/cthelperd.config" "$CONF"
    grep -q "option name 'sip'" "$CONF" || printf "\nconfig helper 'sip'\n\toption name 'sip'\n" >>"$CONF"
}

# start_cthelperd LOG: the daemon in the router namespace (ip netns exec execs
# it, so $! is the daemon); waits for "helpers registered" (logged after its
# firewall table is loaded) and sip serving both families and protocols
start_cthelperd() {
    local log=$1 i
    kmod_loaded nf_conntrack_sip && { say "nf_conntrack_sip is loaded: not starting cthelperd"; return 1; }
    write_conf
    : >"$log"
    ip netns exec router "$BIN" --config "$CONF" --control-socket "$SOCK" --log-level info >>"$log" 2>&1 &
    DAEMON_PID=$!
    for ((i = 0; i < 300; i++)); do
        kill -0 "$DAEMON_PID" 2>/dev/null || { wait "$DAEMON_PID"; say "cthelperd exited early ($?):"; indent <"$log"; DAEMON_PID=; return 1; }
        grep -q 'helpers registered' "$log" && break
        nap 0.1
    done
    grep -q 'helpers registered' "$log" || { say "cthelperd not ready after 30 s"; indent <"$log"; return 1; }
    [ "$(helpers_serving sip)" = 4 ] || { say "sip not serving 4 times: $(nfct_helpers | tr '\n' ';')"; return 1; }
    say "cthelperd pid $DAEMON_PID ready: $(grep -m1 'helpers registered' "$log")"
}

# stop_cthelperd: SIGTERM, exit status; then delete its (disabled) user-space
# helpers, so that nf_conntrack_sip can register the name "sip" again
stop_cthelperd() {
    local i rc
    [ -n "$DAEMON_PID" ] || return 0
    kill -TERM "$DAEMON_PID"
    for ((i = 0; i < 1500; i++)); do kill -0 "$DAEMON_PID" 2>/dev/null || break; nap 0.01; done
    kill -0 "$DAEMON_PID" 2>/dev/null && { say "cthelperd ignored SIGTERM for 15 s: SIGKILL"; kill -KILL "$DAEMON_PID"; }
    wait "$DAEMON_PID"; rc=$?
    DAEMON_PID=
    reset_kernel_state
    rx nfct flush helper 2>/dev/null || say "nfct flush helper failed: $(nfct_helpers | tr '\n' ';')"
    return $rc
}

start_kernel_helper() {
    local others
    others=$(daemon_pids)
    [ -z "$others" ] || { say "cthelperd still running ($others): no kernel round"; return 1; }
    [ -z "$(nfct_helpers)" ] || { say "user-space helpers still registered: $(nfct_helpers | tr '\n' ';')"; return 1; }
    forbid_helpers allow-sip
    modprobe nf_conntrack_sip || { say "modprobe nf_conntrack_sip failed"; return 1; }
    rx nft -f - <<'EOF' || { say "cannot load table inet kernelsip"; return 1; }
table inet kernelsip {
    ct helper sip {
        type "sip" protocol udp;
        l3proto inet;
    }
    chain prerouting {
        type filter hook prerouting priority mangle; policy accept;
        udp dport 5060 ct helper set "sip"
    }
}
EOF
    say "kernel: nf_conntrack_sip loaded (params: $(grep -H . /sys/module/nf_conntrack_sip/parameters/* 2>/dev/null | sed 's#.*/##; s#:#=#' | tr '\n' ' ')), table inet kernelsip loaded; user-space helpers: '$(nfct_helpers | tr '\n' ';')'; queues: '$(rx cat /proc/net/netfilter/nfnetlink_queue | tr '\n' ';')'"
}

stop_kernel_helper() {
    reset_kernel_state
    forbid_helpers all
    rmmod nf_conntrack_sip 2>/dev/null
    if kmod_loaded nf_conntrack_sip; then
        say "nf_conntrack_sip could not be unloaded (refcnt $(cat /sys/module/nf_conntrack_sip/refcnt 2>/dev/null))"
        return 1
    fi
}

# ---------------------------------------------------------------- sipp
# The -inf file: 2500 calls' audio/video ports (RTP even, RTCP next), 40000-49999
# as sip-uas.xml wants them; calls reuse a line only 2500 calls later.
{
    echo SEQUENTIAL
    for ((k = 0; k < 2500; k++)); do a=$((40000 + 4 * k)); echo "$a;$((a + 2))"; done
} >/tmp/sipbench-calls.csv

# sipp_bg NS NAME ARGS...: a long-running sipp in NS, its pid in SIPP_BG
sipp_bg() {
    local ns=$1 name=$2
    shift 2
    ip netns exec "$ns" sipp "$@" -nostdin -trace_err -error_file "$RESULTS/sip-$name.err.log" >"$RESULTS/sip-$name.out.log" 2>&1 &
    SIPP_BG=$!
}
# wait_udp NS ADDR PORT PID: until something listens there (10 s)
wait_udp() {
    local i
    for ((i = 0; i < 100; i++)); do
        ip netns exec "$1" ss -Hlnu "sport = :$3" | grep -qF "$2" && return 0
        kill -0 "$4" 2>/dev/null || break
        nap 0.1
    done
    return 1
}
stop_pid() { [ -n "${1:-}" ] || return 0; kill -TERM "$1" 2>/dev/null; wait "$1" 2>/dev/null; }

start_uas() {
    sipp_bg server uas -sf "$UAS_XML" -t u1 -i "$S4" -p 5060 -bind_local -key cnet "IP4 $S4" -max_socket 4096
    UAS_PID=$SIPP_BG
    wait_udp server "$S4" 5060 "$UAS_PID" || { say "UAS did not come up:"; indent <"$RESULTS/sip-uas.out.log"; return 1; }
}

# uac NAME CALLS LIMIT: one sipp UAC run (foreground); its stats in sip-NAME.csv
uac() {
    local name=$1 calls=$2 limit=$3
    rm -f "$RESULTS/sip-$name.csv.log"
    ip netns exec client sipp "$S4:5060" -sf "$UAC_XML" -inf /tmp/sipbench-calls.csv -t un -i "$C4" -bind_local \
        -key cnet "IP4 $C4" -m "$calls" -l "$limit" -r 10000 -rp 1000 -max_socket 4096 \
        -recv_timeout 20000 -timeout 600 -timeout_error -nostdin \
        -trace_stat -stf "$RESULTS/sip-$name.csv.log" -fd 3600 -trace_err -error_file "$RESULTS/sip-$name.err.log" \
        >"$RESULTS/sip-$name.out.log" 2>&1
}

# ---------------------------------------------------------------- one load
# load MODE ROUND KIND CALLS LIMIT: sets R[MODE.ROUND.KIND.*]
load() {
    local mode=$1 round=$2 kind=$3 calls=$4 limit=$5 k=$1.$2.$3 name=uac-$1-$2-$3
    local q0 q1 f0 f1 c0=0 c1=0 v0 v1 e0 e1 d0 d1 t0 t1 rc s0 s1 n v
    declare -A st0=() st1=()
    while read -r n v; do st0[$n]=$v; done < <(sip_status)
    read -r -a q0 < <(queue_stat); read -r -a f0 < <(fwd_packets)
    [ -n "$DAEMON_PID" ] && c0=$(cpu_ns "$DAEMON_PID")
    e0=$(ct_stat expect_create); d0=$(ct_stat expect_delete)
    s0=$(cpu_ticks "$UAS_PID")
    read -r -a v0 < <(vm_cpu)
    t0=$(now_us)
    uac "$name" "$calls" "$limit"; rc=$?
    t1=$(now_us)
    read -r -a v1 < <(vm_cpu)
    s1=$(cpu_ticks "$UAS_PID")
    [ -n "$DAEMON_PID" ] && c1=$(cpu_ns "$DAEMON_PID")
    e1=$(ct_stat expect_create); d1=$(ct_stat expect_delete)
    read -r -a q1 < <(queue_stat); read -r -a f1 < <(fwd_packets)
    while read -r n v; do st1[$n]=$v; done < <(sip_status)
    local csv=$RESULTS/sip-$name.csv.log ok
    R[$k.rc]=$rc
    ok=$(stat_field "$csv" 'SuccessfulCall(C)')
    R[$k.ok]=$ok
    R[$k.failed]=$(stat_field "$csv" 'FailedCall(C)')
    R[$k.retrans]=$(stat_field "$csv" 'Retransmissions(C)')
    R[$k.secs]=$(stat_secs "$csv")
    R[$k.wall]=$(calc "($t1 - $t0) / 1e6")
    [[ ${R[$k.secs]} =~ ^[0-9.]+$ ]] || R[$k.secs]=${R[$k.wall]}
    [[ $ok =~ ^[0-9]+$ ]] || ok=0
    R[$k.cps]=$(calc "${R[$k.secs]} > 0 ? $ok / ${R[$k.secs]} : 0")
    R[$k.exp]=$((e1 - e0))
    R[$k.exp_del]=$((d1 - d0))
    R[$k.left]=$(expect_listed)
    R[$k.queued]=$((q1[0] - q0[0]))
    R[$k.drops]=$((q1[1] - q0[1]))
    R[$k.fwd]=$((f1[0] - f0[0]))
    R[$k.icmp]=$((f1[1] - f0[1]))
    R[$k.daemon_s]=$(calc "($c1 - $c0) / 1e9")
    R[$k.vm_s]=$(calc "(${v1[0]} - ${v0[0]}) / $HZ")
    R[$k.vm_util]=$(calc "(${v1[1]} - ${v0[1]}) > 0 ? (${v1[0]} - ${v0[0]}) / (${v1[1]} - ${v0[1]}) : 0")
    R[$k.uas_s]=$(calc "($s1 - $s0) / $HZ")
    local n1=$((ok > 0 ? ok : 1))
    R[$k.daemon_ms]=$(calc "${R[$k.daemon_s]} * 1000 / $n1")
    R[$k.vm_ms]=$(calc "${R[$k.vm_s]} * 1000 / $n1")
    R[$k.exp_per_call]=$(calc "${R[$k.exp]} / $n1")
    if [ -n "$DAEMON_PID" ]; then
        local m out=
        for m in packets expectations deleted expectation_errors refused parse_errors store_evictions; do
            out+="$m $((${st1[$m]:-0} - ${st0[$m]:-0})), "
        done
        R[$k.own]=${out%, }
    else
        R[$k.own]="no daemon"
    fi
    say "$mode round $round $kind: $ok calls ok, ${R[$k.failed]} failed, ${R[$k.retrans]} retransmissions (sipp rc $rc) in ${R[$k.secs]} s (wall ${R[$k.wall]} s): $(fmt "${R[$k.cps]}" %.1f) calls/s; expect_create ${R[$k.exp]} ($(fmt "${R[$k.exp_per_call]}" %.2f)/call), expect_delete ${R[$k.exp_del]}, listed after ${R[$k.left]}; queued ${R[$k.queued]} (drops ${R[$k.drops]}), forwarded on 5060 ${R[$k.fwd]} + icmp ${R[$k.icmp]}; daemon CPU ${R[$k.daemon_s]} s ($(fmt "${R[$k.daemon_ms]}" %.2f) ms/call); VM busy ${R[$k.vm_s]} CPU-s ($(fmt "${R[$k.vm_ms]}" %.2f) ms/call, $(fmt "$(calc "${R[$k.vm_util]} * 100")" %.0f)% of the vCPUs), UAS CPU ${R[$k.uas_s]} s; daemon status: ${R[$k.own]}"
    if [ "$rc" != 0 ] || [ "${R[$k.failed]}" != 0 ]; then
        say "$mode round $round $kind: sipp reported failures:"; sed 's/\(20[0-9][0-9]-[0-9][0-9]-[0-9][0-9]\t\)/\n\1/g' "$RESULTS/sip-$name.err.log" 2>/dev/null | grep -v '^$' | tail -n 6 | cut -c1-400 | indent
    fi
    if [ "$mode" != kernel ] && [ "${R[$k.queued]}" != "$((R[$k.fwd] + R[$k.icmp]))" ]; then
        say "$mode round $round $kind: WARNING queued ${R[$k.queued]} != forwarded ${R[$k.fwd]} + ${R[$k.icmp]}"
    fi
}

# round MODE N: helper up, warm-up, the two loads, helper down
round() {
    local mode=$1 r=$2 rc
    say "=================== round $r: $mode"
    reset_kernel_state
    if [ "$mode" = cthelperd ]; then
        kmod_loaded nf_conntrack_sip && { stop_kernel_helper || return 1; }
        start_cthelperd "$RESULTS/sip-daemon-$r.log" || return 1
        R[$mode.$r.rss_fresh]=$(status_kb "$DAEMON_PID" VmRSS)
    else
        start_kernel_helper || return 1
    fi
    R[$mode.$r.sip_loaded]=$(kmod_loaded nf_conntrack_sip && echo yes || echo no)
    R[$mode.$r.daemons]=$(daemon_pids | wc -l)
    R[$mode.$r.uhelpers]=$(nfct_helpers | awk '$1 == "sip"' | wc -l)
    say "$mode round $r: nf_conntrack_sip loaded: ${R[$mode.$r.sip_loaded]}; cthelperd processes: ${R[$mode.$r.daemons]}; user-space sip helpers registered: ${R[$mode.$r.uhelpers]}"
    uac "warmup-$mode-$r" "$WARMUP" 5 || say "$mode round $r: warm-up calls failed (rc $?)"
    load "$mode" "$r" seq "$CALLS_SEQ" 1
    load "$mode" "$r" conc "$CALLS_CONC" "$CONC"
    if [ "$mode" = cthelperd ]; then
        R[$mode.$r.hwm]=$(status_kb "$DAEMON_PID" VmHWM)
        R[$mode.$r.rss_after]=$(status_kb "$DAEMON_PID" VmRSS)
        "$BIN" status --control-socket "$SOCK" >"$RESULTS/sip-status-$r.log" 2>&1
        stop_cthelperd; rc=$?
        R[$mode.$r.stop_rc]=$rc
        say "cthelperd round $r: VmRSS fresh ${R[$mode.$r.rss_fresh]} kB, after ${R[$mode.$r.rss_after]} kB, VmHWM ${R[$mode.$r.hwm]} kB; SIGTERM exit status $rc"
    else
        stop_kernel_helper || return 1
    fi
}

# ---------------------------------------------------------------- phones
phones() {
    local n prev=0 e0 i reg_pids=() step e t0
    say "=================== registered phones (cthelperd)"
    reset_kernel_state
    kmod_loaded nf_conntrack_sip && { stop_kernel_helper || return 1; }
    # a registration lives as long as its connection: keep them all (see header)
    rx sysctl -qw net.netfilter.nf_conntrack_udp_timeout=3600 net.netfilter.nf_conntrack_udp_timeout_stream=3600
    start_cthelperd "$RESULTS/sip-daemon-phones.log" || return 1
    sipp_bg server registrar -sf "$REGISTRAR_XML" -t u1 -i "$S4" -p 5060 -bind_local -max_socket 4096
    local registrar=$SIPP_BG
    wait_udp server "$S4" 5060 "$registrar" || { say "registrar did not come up"; indent <"$RESULTS/sip-registrar.out.log"; return 1; }
    # the phones wait with their sockets open after the 200 (see the header)
    sed 's#<recv response="200"/>#<recv response="200"/>\n  <pause milliseconds="3600000"/>#' "$REG_XML" >/tmp/sipbench-register-hold.xml
    nap 0.5
    R[phones.0.rss]=$(status_kb "$DAEMON_PID" VmRSS)
    R[phones.0.anon]=$(status_kb "$DAEMON_PID" RssAnon)
    R[phones.0.hwm]=$(status_kb "$DAEMON_PID" VmHWM)
    R[phones.0.listed]=$(expect_listed)
    say "phones 0: VmRSS ${R[phones.0.rss]} kB, RssAnon ${R[phones.0.anon]} kB, VmHWM ${R[phones.0.hwm]} kB"
    e0=$(ct_stat expect_create)
    t0=$(now_us)
    for n in $PHONES; do
        step=$((n - prev))
        [ "$step" -gt 0 ] || continue
        ip netns exec client sipp "$S4:5060" -sf /tmp/sipbench-register-hold.xml -t un -i "$C4" -bind_local \
            -m "$step" -l "$step" -r "$PHONE_RATE" -max_socket 4096 -recv_timeout 30000 -nostdin \
            -trace_stat -stf "$RESULTS/sip-phones-$n.csv.log" -fd 5 -trace_err -error_file "$RESULTS/sip-phones-$n.err.log" \
            >"$RESULTS/sip-phones-$n.out.log" 2>&1 &
        reg_pids+=($!)
        # registered = its signalling expectation listed; give up after 30 s
        # without progress
        local last=-1 since
        since=$(now_us)
        while :; do
            e=$(expect_listed)
            [ "$e" -ge "$n" ] && break
            kill -0 "${reg_pids[-1]}" 2>/dev/null || break
            if [ "$e" != "$last" ]; then last=$e; since=$(now_us)
            elif [ $(($(now_us) - since)) -gt 30000000 ]; then say "phones $n: stuck at $e listed"; break
            fi
            nap 0.5
        done
        R[phones.$n.secs]=$(calc "($(now_us) - $t0) / 1e6")
        nap 1   # let the last verdicts settle
        R[phones.$n.created]=$(($(ct_stat expect_create) - e0))
        R[phones.$n.listed]=$(expect_listed)
        R[phones.$n.rss]=$(status_kb "$DAEMON_PID" VmRSS)
        R[phones.$n.anon]=$(status_kb "$DAEMON_PID" RssAnon)
        R[phones.$n.hwm]=$(status_kb "$DAEMON_PID" VmHWM)
        R[phones.$n.conntracks]=$(rx conntrack -C 2>/dev/null)
        say "phones $n: registrations created ${R[phones.$n.created]}, expectations listed ${R[phones.$n.listed]}, conntracks ${R[phones.$n.conntracks]} (${R[phones.$n.secs]} s since the first); VmRSS ${R[phones.$n.rss]} kB, RssAnon ${R[phones.$n.anon]} kB, VmHWM ${R[phones.$n.hwm]} kB"
        [ "${R[phones.$n.listed]}" -ge "$n" ] || { say "phones $n: only ${R[phones.$n.listed]} registrations listed"; BAD=1; }
        prev=$n
    done
    rx conntrack -L expect >"$RESULTS/sip-phones-expect.log" 2>/dev/null
    R[phones.sig]=$(grep -c "src=$S4 dst=$C4 .*helper=sip" "$RESULTS/sip-phones-expect.log")
    say "phones: conntrack -L expect lists ${R[phones.sig]} registrations ($S4 -> $C4, helper sip)"
    # calls with the phones registered: the same concurrent load as the rounds
    # (the UAS takes the registrar's port)
    stop_pid "$registrar"
    if start_uas; then
        load phones 1 conc "$CALLS_CONC" "$CONC"
        stop_pid "$UAS_PID"; UAS_PID=
    else
        BAD=1
    fi
    R[phones.calls.rss]=$(status_kb "$DAEMON_PID" VmRSS)
    R[phones.calls.anon]=$(status_kb "$DAEMON_PID" RssAnon)
    R[phones.calls.hwm]=$(status_kb "$DAEMON_PID" VmHWM)
    R[phones.calls.listed]=$(expect_listed)
    say "phones: after $CALLS_CONC calls with the phones registered: expectations listed ${R[phones.calls.listed]}; VmRSS ${R[phones.calls.rss]} kB, RssAnon ${R[phones.calls.anon]} kB, VmHWM ${R[phones.calls.hwm]} kB"
    "$BIN" status --control-socket "$SOCK" >"$RESULTS/sip-status-phones.log" 2>&1
    indent <"$RESULTS/sip-status-phones.log"
    for i in "${reg_pids[@]}"; do stop_pid "$i"; done
    stop_cthelperd; R[phones.stop_rc]=$?
    rx sysctl -qw net.netfilter.nf_conntrack_udp_timeout=30 net.netfilter.nf_conntrack_udp_timeout_stream=120
}

# ---------------------------------------------------------------- table
num() { [[ ${1:-} =~ ^[0-9.e+-]+$ ]] && fmt "$1" "$2" || echo "${1:-?}"; }
ratio() { if [[ ${1:-} =~ ^[0-9.e+-]+$ && ${2:-} =~ ^[0-9.e+-]+$ ]] && [ "$(calc "$2 != 0")" = 1 ]; then fmt "$(calc "$1 / $2")" '%.2fx'; else echo "n/a"; fi; }
mib() { [[ ${1:-} =~ ^[0-9]+$ ]] && fmt "$(calc "$1 / 1024")" '%.2f MiB' || echo "${1:-?}"; }
kib() { [[ ${1:-} =~ ^[0-9]+$ ]] && fmt "$1" '%.0f KiB' || echo "${1:-?}"; }
row() { printf '| %s | %s | %s | %s |\n' "$@"; }
# best MODE KIND METRIC max|min: the best round (a busy host only ever slows
# a round down: the least disturbed one is the estimate)
best() {
    local r v
    for ((r = 1; r <= ROUNDS; r++)); do
        v=${R[$1.$r.$2.$3]:-}
        [[ $v =~ ^[0-9.e+-]+$ ]] && echo "$v"
    done | sort -g | { [ "$4" = max ] && tail -n1 || head -n1; }
}
# each MODE KIND METRIC FMT: the rounds' values, "a, b, c"
each() {
    local r out=
    for ((r = 1; r <= ROUNDS; r++)); do out+="$(num "${R[$1.$r.$2.$3]:-}" "$4"), "; done
    echo "${out%, }"
}
# cell MODE KIND METRIC max|min FMT: "best (every round)"
cell() { echo "$(num "$(best "$1" "$2" "$3" "$4")" "$5") ($(each "$1" "$2" "$3" "$5"))"; }
sumk() { # sumk MODE KIND METRIC: summed over the rounds
    local r s=0 v
    for ((r = 1; r <= ROUNDS; r++)); do v=${R[$1.$r.$2.$3]:-0}; [[ $v =~ ^[0-9]+$ ]] && s=$((s + v)); done
    echo "$s"
}

table() {
    local a=cthelperd b=kernel kind lbl n m r k
    echo "## SIP helper benchmark: cthelperd vs the kernel's nf_conntrack_sip"
    echo
    echo "Kernel $(uname -r) under qemu ${BENCH_ACCEL:-?} ($(nproc) vCPUs, $(awk '/MemTotal/ { printf "%d MiB", $2 / 1024 }' /proc/meminfo)); $(date -u '+%Y-%m-%d %H:%M UTC'); cthelperd ${BENCH_REV:-?}, ${BENCH_BINARY_KIND:-?}; sipp $(sipp -v 2>&1 | grep -m1 -o 'v[0-9][^ ]*' | sed 's/\.$//')."
    echo "Calls: sipp UAC (client) -> router (helper) -> sipp UAS (server), UDP, IPv4, every call from its own source port:"
    echo "INVITE with an audio + video offer, 100, 200 with the answer, ACK, BYE, 200 (6 datagrams through the router; 8 media expectations per call, removed by the BYE)."
    echo "$ROUNDS rounds alternating cthelperd / in-kernel, each: $CALLS_SEQ calls one at a time (-l 1), then $CALLS_CONC calls $CONC at a time (-l $CONC)."
    echo "Cells: the best round, then every round in order in parentheses (the host is shared: load only ever slows a round down)."
    echo
    row "metric" "cthelperd" "in-kernel nf_conntrack_sip" "cthelperd / kernel (best rounds)"
    row "---" "---:" "---:" "---:"
    for kind in seq conc; do
        [ $kind = seq ] && lbl="one call at a time" || lbl="$CONC calls at a time"
        row "call setups/s, $lbl" "$(cell $a $kind cps max %.1f)" "$(cell $b $kind cps max %.1f)" "**$(ratio "$(best $a $kind cps max)" "$(best $b $kind cps max)")**"
    done
    for kind in seq conc; do
        [ $kind = seq ] && lbl="one at a time" || lbl="$CONC at a time"
        row "media expectations created per call, $lbl" "$(cell $a $kind exp_per_call min %.2f)" "$(cell $b $kind exp_per_call min %.2f)" ""
    done
    for kind in seq conc; do
        [ $kind = seq ] && lbl="one at a time" || lbl="$CONC at a time"
        row "daemon CPU per call, $lbl (ms)" "$(cell $a $kind daemon_ms min %.2f)" "— (in the packet path)" ""
    done
    for kind in seq conc; do
        [ $kind = seq ] && lbl="one at a time" || lbl="$CONC at a time"
        row "whole-VM CPU per call, $lbl (ms: both sipps, forwarding, helper)" "$(cell $a $kind vm_ms min %.2f)" "$(cell $b $kind vm_ms min %.2f)" "$(ratio "$(best $a $kind vm_ms min)" "$(best $b $kind vm_ms min)")"
    done
    row "call setups/s, $CONC at a time, with ${PHONES##* } phones registered" "$(num "${R[phones.1.conc.cps]:-}" %.1f)" "—" ""
    row "daemon RSS (VmRSS), fresh, no phone" "$(mib "${R[phones.0.rss]:-?}")" "—" ""
    for n in $PHONES; do
        row "daemon RSS (VmRSS), $n registered phone$([ "$n" = 1 ] || echo s)" "$(mib "${R[phones.$n.rss]:-?}")" "—" ""
    done
    row "daemon RSS (VmRSS), ${PHONES##* } phones + $CALLS_CONC calls" "$(mib "${R[phones.calls.rss]:-?}")" "—" ""
    row "private RSS (RssAnon): no phone / $(echo "$PHONES" | sed 's/ / \/ /g') phones / + calls" "$(kib "${R[phones.0.anon]:-?}")$(for n in $PHONES; do printf ' / %s' "$(kib "${R[phones.$n.anon]:-?}")"; done) / $(kib "${R[phones.calls.anon]:-?}")" "—" ""
    row "daemon peak RSS (VmHWM): phones phase / call rounds (highest)" "$(mib "${R[phones.calls.hwm]:-${R[phones.${PHONES##* }.hwm]:-?}}") / $(mib "$(for ((r = 1; r <= ROUNDS; r++)); do echo "${R[$a.$r.hwm]:-0}"; done | sort -n | tail -n1)")" "—" ""
    echo
    echo "Goal (issue #13): call setups/s >= 0.9x the kernel's; RSS flat from 1 to 1,000 registered phones."
    echo "The rates are what sipp on both ends, the router and the helper achieve together on the same 2 vCPUs (sipp's"
    echo "millisecond timer steps also bound the one-at-a-time rate); whole-VM CPU per call includes the kernel helper's work,"
    echo "which has no process of its own. The daemon's CPU is its schedstat run time."
    echo
    echo "### Sanity"
    echo
    for ((r = 1; r <= ROUNDS; r++)); do
        for m in $MODES; do
            echo "- round $r, $m: nf_conntrack_sip loaded ${R[$m.$r.sip_loaded]:-?}, cthelperd processes ${R[$m.$r.daemons]:-?}, user-space sip helpers ${R[$m.$r.uhelpers]:-?}${R[$m.$r.stop_rc]:+, daemon exit status on SIGTERM ${R[$m.$r.stop_rc]}}${R[$m.$r.hwm]:+, VmRSS fresh ${R[$m.$r.rss_fresh]} kB, after ${R[$m.$r.rss_after]} kB, VmHWM ${R[$m.$r.hwm]} kB}"
            for kind in seq conc; do
                k=$m.$r.$kind
                echo "  - $kind: ${R[$k.ok]:-?} calls ok, ${R[$k.failed]:-?} failed, ${R[$k.retrans]:-?} retransmissions, sipp rc ${R[$k.rc]:-?}; $(num "${R[$k.cps]:-}" %.1f) calls/s over ${R[$k.secs]:-?} s; expect_create ${R[$k.exp]:-?}, expect_delete ${R[$k.exp_del]:-?}, listed afterwards ${R[$k.left]:-?}; forwarded 5060 datagrams ${R[$k.fwd]:-?} + ICMP errors ${R[$k.icmp]:-?}, queued to the daemon ${R[$k.queued]:-?} (queue drops ${R[$k.drops]:-?}); daemon CPU ${R[$k.daemon_s]:-?} s; VM busy ${R[$k.vm_s]:-?} CPU-s ($(num "$(calc "${R[$k.vm_util]:-0} * 100")" %.0f)% of the vCPUs), UAS ${R[$k.uas_s]:-?} s; cthelperd status: ${R[$k.own]:-?}"
            done
        done
    done
    echo "- calls: cthelperd $(($(sumk $a seq ok) + $(sumk $a conc ok))) ok, $(($(sumk $a seq failed) + $(sumk $a conc failed))) failed; kernel $(($(sumk $b seq ok) + $(sumk $b conc ok))) ok, $(($(sumk $b seq failed) + $(sumk $b conc failed))) failed"
    for n in $PHONES; do
        echo "- $n phones: ${R[phones.$n.created]:-?} registrations created (expect_create), ${R[phones.$n.listed]:-?} expectations listed, ${R[phones.$n.conntracks]:-?} conntracks, ${R[phones.$n.secs]:-?} s after the first REGISTER; VmRSS ${R[phones.$n.rss]:-?} kB, RssAnon ${R[phones.$n.anon]:-?} kB, VmHWM ${R[phones.$n.hwm]:-?} kB"
    done
    echo "- after the phones: conntrack -L expect lists ${R[phones.sig]:-?} registrations (198.51.100.2 -> 192.0.2.2, helper sip)"
    k=phones.1.conc
    echo "- $CALLS_CONC calls with the phones registered: ${R[$k.ok]:-?} ok, ${R[$k.failed]:-?} failed, ${R[$k.retrans]:-?} retransmissions; $(num "${R[$k.cps]:-}" %.1f) calls/s; expect_create ${R[$k.exp]:-?}, expect_delete ${R[$k.exp_del]:-?}; expectations listed afterwards ${R[phones.calls.listed]:-?}; daemon CPU ${R[$k.daemon_s]:-?} s; VmRSS ${R[phones.calls.rss]:-?} kB, VmHWM ${R[phones.calls.hwm]:-?} kB; daemon exit status on SIGTERM ${R[phones.stop_rc]:-?}"
}

# ================================================================ main
say "SIP helper benchmark: modes $MODES, $ROUNDS rounds; binary $BIN ($(stat -c %s "$BIN" 2>/dev/null) bytes)"
command -v sipp >/dev/null || { say "no sipp (Debian package sip-tester)"; exit 2; }
[ -x "$BIN" ] || { say "no daemon binary $BIN"; exit 2; }
ulimit -n 65536 2>/dev/null || ulimit -n 8192
say "kernel $(uname -r)"
forbid_helpers all
load_modules || exit 2
setup_topology || exit 2
# The calls announce media ports 40000-49999 on the client's address, and a
# phone's registration expects its contact port there too: an ephemeral port
# in that range would make the two the same expectation tuple. Keep the
# client's sockets out of it.
cx sysctl -qw net.ipv4.ip_local_port_range="50000 60999"
# 1000 registrations + the calls' pending expectations; a conntrack per call
say "nf_conntrack_expect_max $(sysctl -n net.netfilter.nf_conntrack_expect_max) -> 16384, nf_conntrack_max $(sysctl -n net.netfilter.nf_conntrack_max) -> 262144"
sysctl -qw net.netfilter.nf_conntrack_expect_max=16384 net.netfilter.nf_conntrack_max=262144
firewall || exit 2
say "topology and firewall ready; $(sipp -v 2>&1 | grep -m1 -o 'SIPp v[^ ]*')"
start_uas || exit 2
for ((r = 1; r <= ROUNDS; r++)); do
    for m in $MODES; do
        round "$m" "$r" || { say "round $r $m incomplete"; BAD=1; stop_cthelperd; }
    done
done
stop_pid "$UAS_PID"
phones || { say "phones incomplete"; BAD=1; }
kmod_loaded nf_conntrack_sip && rmmod nf_conntrack_sip
dmesg | grep -E 'cthd-fwd-drop|nf_conntrack|nfnetlink|cthelper' >"$RESULTS/sip-dmesg.log"
say "forward drops logged: $(grep -c cthd-fwd-drop "$RESULTS/sip-dmesg.log"); 'expectation table full': $(grep -c 'expectation table full' "$RESULTS/sip-dmesg.log")"

table >"$RESULTS/sip-bench.md"
echo
cat "$RESULTS/sip-bench.md"
echo
cp "$RESULTS/sip-bench.md" "$OUT/sip-bench.md"
# raw logs as bench/results/sip-*.log (gitignored)
cp "$RESULTS"/sip-*.log "$OUT"/
say "done; table in $OUT/sip-bench.md"
exit $BAD
