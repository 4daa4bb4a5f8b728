#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# tests/kernel/faults.sh — reliability under faults (issue #17), in a real kernel.
# Runs INSIDE the run-in-kernel.sh guest: tests/kernel/run.sh faults
#
# Topology (lib.sh): client 192.0.2.2 -- router -- server 198.51.100.2 (pyftpdlib)
# and 198.51.100.3 (faults-tool.py server: a scripted FTP-like server on port 21,
# a silent sink on TCP 5060). Router forward policy drop except established,
# related and new TCP 21 / 5060 from the client. The daemon runs with its own
# firewall table (table inet cthelperd) and a UCI file per phase (ftp with
# expect_max 3, tftp, sip; status socket /tmp/faults.sock).
#
# Phases (one ok/FAIL line per check; "N passed, M failed" at the end)
#   R  respawn loop as procd's (respawn 3600 0 5: at once, no delay): the daemon
#      is killed with SIGKILL KILLS times (4) while a long-lived control session
#      transfers; per kill: the time from the kill to the first new helped data
#      connection established (ms; at most RECOVERY_MAX_MS = 3000 under TCG,
#      the goal on hardware being 1 s), the transfer under way completes, the
#      session answers; after the restart the table its predecessor loaded
#      kept (its comment names the configuration: no nft run), one table inet cthelperd, 8 helpers
#      each once and serving, the 3 queues bound once by one socket, one daemon
#      process; the session transfers again
#   F  queue full (queue_maxlen 8): the daemon stopped (SIGSTOP) with 8 packets
#      in its queue; new control connections, a NOOP on an established session,
#      a PASV data connection. fail_open 0: queue_dropped rises, everything
#      stalls until SIGCONT and then completes (TCP retransmits), the daemon logs
#      "the kernel could not queue". fail_open 1: control connections and the
#      NOOP pass unhelped while it is stopped, the PASV data connection does not
#      (no expectation: the firewall drops it), the kernel counts nothing
#   B  socket buffer overrun (queue_maxlen 100000), the daemon stopped: (1)
#      bulk data on 64 port 21 connections (what it queues is printed: TCP
#      windows, which overran the buffer once so far), then (2) a burst of
#      BURST_CONNS (4000) new
#      control connections: queue_user_dropped rises (the daemon sets
#      NETLINK_NO_ENOBUFS), the daemon survives, logs it, works afterwards
#      (how many of the burst's connections complete is printed)
#   M  10,000 concurrent helped control connections: the daemon's VmRSS/VmHWM
#      before and with them (grows < RSS_MAX_KB = 256), a PASV transfer works
#      meanwhile, every connection still answers
#   E  a burst of PASV replies beyond expect_max (3) on one control connection:
#      never more than 3 pending for it, every one created (the kernel evicts the
#      oldest), no expectation errors, a legitimate transfer works
#   H  hostile input: FTP/SIP text in HTTP bodies (inline, split, padded),
#      third-party addresses, a port below 1024 on a port forward, overlong
#      lines, non-ASCII, a truncated command: no expectation, counted as refused
#      or parse_errors, daemon alive. The shapes the helper cannot tell from FTP
#      (a PORT line alone in its segment, a PORT to the client's own port 23
#      without NAT) are printed as KNOWN, not counted.
# (conntrackd holding the helper name: ftp.sh phase Foreign.)
# Environment: KILLS, RECOVERY_MAX_MS, CONNS (10000), RSS_MAX_KB, BULK_CONNS,
# BURST_CONNS, FAULT_PHASES (default "R F B M E H": a subset runs only those;
# run.sh does not pass these, run-in-kernel.sh --env does).
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"
scenario_begin faults "$@"
if [ -n "$REFERENCE" ]; then
    say "the faults scenario tests cthelperd's own failure behaviour; no reference mode"
    echo "0 passed, 1 failed"; exit 1
fi
# The daemon runs from a copy in the guest's tmpfs, as from a router's flash
# (page-cached): executed from the 9p share (cache=none) every page it touches
# is fetched from the host, and its start-up took 200-700 ms instead of 40-190.
mkdir -p /tmp/faults-bin && cp "$CTHELPERD" /tmp/faults-bin/cthelperd || exit 2
say "faults scenario, daemon: $CTHELPERD (run from a copy in /tmp/faults-bin)"
CTHELPERD=/tmp/faults-bin/cthelperd
TOOL=$HERE/faults-tool.py
F4=198.51.100.3                      # the scripted server
CONF=/tmp/faults.conf
SOCK=/tmp/faults.sock
CTHELPERD_ARGS="--config $CONF --control-socket $SOCK"
KILLS=${KILLS:-4}
# the goal is 1 s; under TCG on a shared 2-core host everything is slower
# (measured 0.49-0.56 s idle, up to 2.1 s loaded; the daemon serving its queues
# 0.07-0.7 s after the kill)
RECOVERY_MAX_MS=${RECOVERY_MAX_MS:-3000}
CONNS=${CONNS:-10000}
RSS_MAX_KB=${RSS_MAX_KB:-256}
BULK_CONNS=${BULK_CONNS:-64}
BURST_CONNS=${BURST_CONNS:-4000}
PHASES=" ${FAULT_PHASES:-R F B M E H} "
EXPECT_MAX=3
Q=48000                              # the ftp helper's queue

ulimit -n 1048576 2>/dev/null || ulimit -n 65536
kernel_setup || exit 2
setup_topology || exit 2
ip -n server addr add $F4/24 dev s0
# room for phase M's connections and phase B's unconfirmed SYN conntracks
cmax=$(sysctl -n net.netfilter.nf_conntrack_max)
[ "$cmax" -lt $((CONNS * 3)) ] && sysctl -qw net.netfilter.nf_conntrack_max=$((CONNS * 3))
say "topology up; nofile $(ulimit -n); nf_conntrack_max $cmax -> $(sysctl -n net.netfilter.nf_conntrack_max)"

# ---------------------------------------------------------------- servers, firewall
mkdir -p /srv/ftp
head -c 8388608 /dev/urandom >/srv/ftp/blob.bin   # 8 MiB: a transfer lasts long enough to kill during it
head -c 4096 /dev/urandom >/srv/ftp/small.bin
SUM=$(sha256sum </srv/ftp/blob.bin | cut -d' ' -f1)
sx $PY "$HERE/ftp-server.py" /srv/ftp $S4 $S6 >"$RESULTS/pyftpdlib.log" 2>&1 &
sx $PY "$TOOL" server $F4:21 $F4:5060:quiet >"$RESULTS/fake-server.log" 2>&1 &
rx nft -f - <<'EOF' || exit 2
table inet filter {
    chain forward {
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "r0" oifname "r1" tcp dport { 21, 5060 } ct state new accept
        limit rate 20/second log prefix "cthd-fwd-drop: " level warn
    }
}
EOF
for ((i = 0; i < 150; i++)); do
    [ "$(sx ss -Hltn 'sport = :21' | wc -l)" -ge 3 ] && break
    sleep 0.2
done
say "listening: $(sx ss -Hltn | awk '{print $4}' | tr '\n' ' ')"

# write_conf MAXLEN FAIL_OPEN: the daemon's UCI file
write_conf() {
    cat >"$CONF" <<EOF
config globals 'globals'
	option queue_maxlen '$1'
	option fail_open '$2'
config helper 'ftp'
	option name 'ftp'
	option expect_max '$EXPECT_MAX'
config helper 'tftp'
	option name 'tftp'
config helper 'sip'
	option name 'sip'
EOF
}
write_conf 1024 0

# ---------------------------------------------------------------- small tools
# qstat QUEUE FIELD: a kernel counter of QUEUE in the router's
# /proc/net/netfilter/nfnetlink_queue (3 total, 6 dropped, 7 user_dropped)
qstat() { rx awk -v q="$1" -v f="$2" '$1 == q { print $f }' /proc/net/netfilter/nfnetlink_queue; }
# counter HELPER NAME: one of the helper's counters from `cthelperd status`
counter() {
    "$CTHELPERD" status --control-socket $SOCK 2>/dev/null |
        sed -nE "s/^helper $1 .* $2 ([0-9]+)( .*|$)/\1/p"
}
# status_save NAME: `cthelperd status` into the results (and indented on stdout)
status_save() {
    "$CTHELPERD" status --control-socket $SOCK >"$RESULTS/status-$1.txt" 2>&1
    indent <"$RESULTS/status-$1.txt"
}
# sock_rmem: bytes waiting in the receive buffer of the socket bound to the ftp
# queue (/proc/net/netlink: Eth 12 = netfilter, Pid = the queue's portid)
sock_rmem() {
    local portid
    portid=$(qstat $Q 2)
    rx awk -v p="$portid" '$2 == 12 && $3 == p { print $5 }' /proc/net/netlink
}
mem() { awk '/^VmRSS|^VmHWM/ { printf "%s %s kB ", $1, $2 }' "/proc/$1/status" 2>/dev/null; }
rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status" 2>/dev/null; }
ms_since() { echo $(( (${EPOCHREALTIME/./} - $1) / 1000 )); }
# logged FILE TEXT SECS: wait until FILE contains TEXT
logged() {
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        grep -F "$2" "$1" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}
# xfer NAME: a new control connection and a PASV download of blob.bin from
# pyftpdlib, SHA-256 checked
xfer() {
    local rc
    rm -f /tmp/dl.bin
    cx curl -gsS --max-time "${XFER_MAX:-30}" --connect-timeout 15 --disable-epsv \
        -o /tmp/dl.bin "ftp://$S4/blob.bin" >"$RESULTS/curl-$1.log" 2>&1
    rc=$?
    if [ $rc = 0 ] && [ "$(sha256sum </tmp/dl.bin | cut -d' ' -f1)" != "$SUM" ]; then rc=99; fi
    return $rc
}
# ctrl_bg NAME: in the background, a control connection only (login, PWD,
# QUIT); writes "rc ms" to $RESULTS/ctrl-NAME.res when done
ctrl_bg() {
    (
        t=${EPOCHREALTIME/./}
        cx curl -gsS --max-time 60 --connect-timeout 50 -Q PWD -I "ftp://$S4/" >"$RESULTS/ctrl-$1.log" 2>&1
        echo "$? $(ms_since "$t")" >"$RESULTS/ctrl-$1.res"
    ) &
}
# ctrl_results NAME...: "rc ms" of each, after waiting for them
ctrl_results() {
    local n i
    for n in "$@"; do
        for ((i = 0; i < 900; i++)); do [ -s "$RESULTS/ctrl-$n.res" ] && break; sleep 0.1; done
        cat "$RESULTS/ctrl-$n.res" 2>/dev/null || echo "124 99999"
    done
}

# Driven faults-tool.py clients (like lib.sh's sess_*): commands on a fifo,
# replies "n ok|err ..." in $RESULTS/drv-NAME.out.
declare -A DRV_FD DRV_N DRV_PID
DRV_REPLY=
DRV_SENT=0
drv_open() { # drv_open NAME NS ARGS...: waits (DRV_OPEN_WAIT s, 60) for its "0 ..." line
    local name=$1 ns=$2 fifo=/tmp/drv-$1.in fd
    shift 2
    rm -f "$fifo"; mkfifo "$fifo"
    ip netns exec "$ns" $PY "$TOOL" "$@" <"$fifo" >"$RESULTS/drv-$name.out" 2>"$RESULTS/drv-$name.err" &
    DRV_PID[$name]=$!
    exec {fd}>"$fifo"
    DRV_FD[$name]=$fd
    DRV_N[$name]=0
    [ "${DRV_OPEN_WAIT:-60}" = 0 ] && return 0
    drv_wait "$name" 0 "${DRV_OPEN_WAIT:-60}"
}
drv_wait() { # drv_wait NAME N SECS: 0 iff reply N is "ok"
    local name=$1 n=$2 i
    DRV_REPLY=
    for ((i = 0; i < $3 * 10; i++)); do
        DRV_REPLY=$(grep -m1 "^$n " "$RESULTS/drv-$name.out" 2>/dev/null)
        [ -n "$DRV_REPLY" ] && break
        kill -0 "${DRV_PID[$name]}" 2>/dev/null || break
        sleep 0.1
    done
    [ -n "$DRV_REPLY" ] || DRV_REPLY="$n err no reply within $3 s"
    echo "$name: $DRV_REPLY" >>"$RESULTS/drivers.log"
    [[ "$DRV_REPLY" == "$n ok"* ]]
}
drv_send() { # drv_send NAME CMD...: without waiting; the command's number in DRV_SENT
    local name=$1
    shift
    DRV_N[$name]=$((DRV_N[$name] + 1))
    DRV_SENT=${DRV_N[$name]}
    echo "$name> $*" >>"$RESULTS/drivers.log"
    echo "$*" >&"${DRV_FD[$name]}"
}
drv_start() { # drv_start NAME NS ARGS...: drv_open without waiting (drv_wait NAME 0 SECS later)
    DRV_OPEN_WAIT=0 drv_open "$@"
}
drv_cmd() { # drv_cmd NAME SECS CMD...
    local name=$1 secs=$2
    shift 2
    drv_send "$name" "$@"
    drv_wait "$name" "$DRV_SENT" "$secs"
}
drv_close() {
    local name=$1 i
    local fd=${DRV_FD[$name]}
    drv_send "$name" quit
    exec {fd}>&-
    for ((i = 0; i < 600; i++)); do kill -0 "${DRV_PID[$name]}" 2>/dev/null || break; sleep 0.1; done
    kill "${DRV_PID[$name]}" 2>/dev/null
    wait "${DRV_PID[$name]}" 2>/dev/null
}
field() { sed -nE "s/.* $1=([0-9.]+).*/\1/p" <<<"$DRV_REPLY"; }

# restart CONF_MAXLEN FAIL_OPEN NAME: (re)start the daemon with that file
restart() {
    [ -n "$DAEMON_PID" ] && stop_daemon TERM >/dev/null
    write_conf "$1" "$2"
    start_daemon "$RESULTS/daemon-$3.log"
}

# leftovers: 0 iff one table inet cthelperd, the 8 helpers (ftp, tftp: IPv4 +
# IPv6; sip: both families on TCP and UDP) each once and serving, the 3 queues
# each bound once and by one socket, one daemon process. LEFT says what was found.
LEFT=
leftovers() {
    local tables helpers nh dup off q nq uq np procs
    tables=$(rx nft list tables 2>/dev/null | grep -c '^table inet cthelperd$')
    helpers=$(nfct_helpers)
    nh=$(grep -c . <<<"$helpers")
    dup=$(awk '{ print $1, $2, $3 }' <<<"$helpers" | sort | uniq -d | grep -c .)
    off=$((nh - $(helpers_serving ftp) - $(helpers_serving tftp) - $(helpers_serving sip)))
    q=$(rx cat /proc/net/netfilter/nfnetlink_queue)
    nq=$(grep -c . <<<"$q")
    uq=$(awk '{ print $1 }' <<<"$q" | sort -u | grep -c .)
    np=$(awk '{ print $2 }' <<<"$q" | sort -u | grep -c .)
    procs=$(pgrep -x cthelperd | grep -c .)
    LEFT="tables $tables, helpers $nh ($dup twice, $off not serving), queue lines $nq ($uq queues, $np sockets), daemon processes $procs"
    [ "$tables" = 1 ] && [ "$nh" = 8 ] && [ "$dup" = 0 ] && [ "$off" = 0 ] &&
        [ "$nq" = 3 ] && [ "$uq" = 3 ] && [ "$np" = 1 ] && [ "$procs" = 1 ]
}

# ================================================================ phase R
if [[ $PHASES == *" R "* ]]; then
say "=== phase R: respawn loop (as procd's 'respawn 3600 0 5'), $KILLS x SIGKILL during transfers"
PIDFILE=/tmp/faults-daemon.pid
RLOG=$RESULTS/daemon-respawn.log
rm -f /tmp/faults-respawn.stop "$PIDFILE"
(
    n=0
    while [ ! -e /tmp/faults-respawn.stop ]; do
        n=$((n + 1))
        echo "=== respawn loop: start $n at $EPOCHREALTIME" >>"$RLOG"
        # shellcheck disable=SC2086 # CTHELPERD_ARGS is word-split, as in start_daemon
        ip netns exec router "$CTHELPERD" -v $CTHELPERD_ARGS >>"$RLOG" 2>&1 &
        echo $! >"$PIDFILE"
        wait $!
        echo "=== respawn loop: exit status $? at $EPOCHREALTIME" >>"$RLOG"
    done
) &
RESPAWN_PID=$!
ready_count() { grep -c 'helpers registered' "$RLOG" 2>/dev/null; }
# data_conn_watch: in the background, wait (at most 8 s) until the client has
# an established connection to one of pyftpdlib's passive ports 40000-40199
# (0x9C40-0x9D07); sets WATCH_PID, returns once the watcher is polling. One
# namespace entry, then only bash builtins: /proc/net/tcp read with `read`, 20
# ms pauses as read timeouts on a fifo nobody writes (a fork per poll costs
# tens to hundreds of ms under TCG, longer than a transfer).
data_conn_watch() {
    rm -f /tmp/faults-pause /tmp/faults-watching; mkfifo /tmp/faults-pause
    cx bash -c 'exec 3<>/tmp/faults-pause; end=$((EPOCHSECONDS + 8)); : >/tmp/faults-watching
    while [ "$EPOCHSECONDS" -lt "$end" ]; do
        while read -r _ _ rem st _; do
            case $rem:$st in *:9C[4-9A-F]?:01|*:9D0[0-7]:01) exit 0 ;; esac
        done </proc/net/tcp
        read -rt 0.02 -u 3
    done; exit 1' &
    WATCH_PID=$!
    for ((i = 0; i < 100; i++)); do [ -e /tmp/faults-watching ] && break; sleep 0.05; done
}
for ((i = 0; i < 300; i++)); do [ "$(ready_count)" -ge 1 ] && break; sleep 0.1; done
[ "$(ready_count)" -ge 1 ]; check "R the respawn loop started the daemon" pass $?
leftovers; check "R after the first start: $LEFT" pass $?
sess_open long $S4; check "R long-lived session opened (ftp-session.py)" pass $?
sess_cmd long retr; check "R the session transfers (PASV, 8 MiB) before the kills" pass $?
drv_open probe client probe $S4 small.bin 4096; check "R probe session opened (its control connection lives through all kills)" pass $?
drv_cmd probe 20 recover 15; check "R the probe session transfers before the kills ($DRV_REPLY)" pass $?
RECOVERY=()
SERVING=()
for ((k = 1; k <= KILLS; k++)); do
    old=$(cat "$PIDFILE")
    # an 8 MiB transfer under way on the long session when the kill comes: wait
    # for its data connection (pyftpdlib's passive ports 40000-40199)
    data_conn_watch
    SESS_N["long"]=$((SESS_N["long"] + 1))
    echo retr >&"${SESS_FD["long"]}"
    wait "$WATCH_PID" || say "note: no data connection seen before kill #$k"
    t_kill=${EPOCHREALTIME/./}
    kill -KILL "$old"
    # the old daemon must be gone before the probe starts (else it could answer)
    for ((i = 0; i < 500; i++)); do kill -0 "$old" 2>/dev/null || break; sleep 0.01; done
    drv_cmd probe 20 recover 15; rc=$?
    at=$(field at); done_at=$(field "done"); tries=$(field attempts)
    ms=; done_ms=
    [ -n "$at" ] && ms=$(( (${at/./} - t_kill) / 1000 ))
    [ -n "$done_at" ] && done_ms=$(( (${done_at/./} - t_kill) / 1000 ))
    RECOVERY+=("${ms:-?}")
    [ $rc = 0 ] && [ -n "$ms" ] && [ "$ms" -le "$RECOVERY_MAX_MS" ]
    check "R kill #$k: the first new helped data connection was established ${ms:-?} ms after the kill (attempt ${tries:-?}; its 4 KiB transfer done at ${done_ms:-?} ms; limit $RECOVERY_MAX_MS ms)" pass $?
    sess_wait long "${SESS_N["long"]}"; check "R kill #$k: the transfer under way at the kill completed ($SESS_REPLY)" pass $?
    for ((i = 0; i < 100; i++)); do [ "$(ready_count)" -ge $((k + 1)) ] && break; sleep 0.1; done
    new=$(cat "$PIDFILE")
    # when the new daemon served its queues, from the loop's start time and its log
    t_start=$(grep "respawn loop: start $((k + 1)) at" "$RLOG" | sed 's/.* at //')
    serving=$(grep 'serving the queues' "$RLOG" | sed -n "$((k + 1))p" | sed -nE 's/.*queues ([0-9]+) ms after start.*/\1/p')
    if [ -n "$t_start" ] && [ -n "$serving" ]; then
        SERVING+=("$(( (${t_start/./} - t_kill) / 1000 + serving ))")
    else
        SERVING+=("?")
    fi
    say "daemon $old killed, respawned as $new: $(grep -E 'serving the queues|helpers registered|taking it over' "$RLOG" | tail -n 3 | sed 's/^cthelperd: //' | tr '\n' ';')"
    # a respawn finds the table its predecessor loaded (its comment names this
    # configuration) and keeps it instead of running nft while packets wait
    [ "$(grep -c 'table inet cthelperd kept' "$RLOG")" -ge "$k" ]
    check "R kill #$k: the new daemon kept the table its predecessor loaded (no nft run)" pass $?
    leftovers; check "R kill #$k: nothing left behind: $LEFT" pass $?
    spid=$("$CTHELPERD" status --control-socket $SOCK 2>/dev/null | sed -n 's/^cthelperd .* pid \([0-9]*\)$/\1/p')
    [ "$spid" = "$new" ] && [ "$new" != "$old" ]
    check "R kill #$k: the status socket answers from the new daemon (pid ${spid:-none}, respawned $new)" pass $?
    sess_cmd long noop && sess_cmd long retr
    check "R kill #$k: the session from before the kills answers and transfers through the new daemon" pass $?
done
say "recovery after kill -9, ms from the kill: new daemon serving its queues ${SERVING[*]}; first helped data connection established ${RECOVERY[*]}"
drv_cmd probe 10 noop; check "R the probe's control connection still answers after $KILLS kills" pass $?
drv_close probe
sess_close long
touch /tmp/faults-respawn.stop
kill -TERM "$(cat "$PIDFILE")"
for ((i = 0; i < 150; i++)); do kill -0 "$RESPAWN_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$RESPAWN_PID" 2>/dev/null && { kill "$RESPAWN_PID"; say "respawn loop did not end"; }
wait "$RESPAWN_PID" 2>/dev/null
last=$(tail -n1 "$RLOG")
[[ $last == *"exit status 0 "* ]]
check "R the last daemon exits with status 0 on SIGTERM ($last)" pass $?
fi

# ================================================================ phase F
# full_queue FAIL_OPEN: the daemon stopped with its ftp queue full
full_queue() {
    local fo=$1 d0 d1 tot t_stop i res n ok min max noop_n t_cont
    say "=== phase F$fo: queue_maxlen 8, fail_open $fo, the daemon stopped (SIGSTOP) with a full queue"
    restart 8 "$fo" "full$fo"; check "F$fo daemon started (queue_maxlen 8, fail_open $fo)" pass $?
    drv_open probe$fo client probe $S4 small.bin 4096; check "F$fo session opened before the stop" pass $?
    drv_open fill$fo client trickle $F4 21; check "F$fo filler connection opened" pass $?
    d0=$(qstat $Q 6)
    kill -STOP "$DAEMON_PID"; t_stop=${EPOCHREALTIME/./}
    drv_cmd "fill$fo" 10 segs 8 0.05
    sleep 0.3
    tot=$(qstat $Q 3)
    say "stopped; queue $Q holds ${tot:-?} packets (8 NOOP segments of a filler connection); queue_dropped ${d0:-?}"
    for ((i = 1; i <= 6; i++)); do ctrl_bg "F$fo-$i"; done
    drv_send "probe$fo" noop; noop_n=$DRV_SENT
    if [ "$fo" = 1 ]; then
        drv_wait "probe$fo" "$noop_n" 4
        check "F1 while stopped: NOOP on the established session answered, unhelped ($DRV_REPLY)" pass $?
        drv_cmd "probe$fo" 15 once 3
        check "F1 while stopped: a PASV data connection fails: the 227 passed unhelped, no expectation, the firewall drops it" fail $?
    fi
    while [ "$(ms_since "$t_stop")" -lt 5000 ]; do sleep 0.1; done
    d1=$(qstat $Q 6)
    if [ "$fo" = 1 ]; then
        # what finished while the daemon was still stopped
        n=0
        for ((i = 1; i <= 6; i++)); do [ -s "$RESULTS/ctrl-F1-$i.res" ] && n=$((n + 1)); done
    fi
    kill -CONT "$DAEMON_PID"; t_cont=${EPOCHREALTIME/./}
    say "SIGCONT after $(( (t_cont - t_stop) / 1000 )) ms; queue_dropped ${d0:-?} -> ${d1:-?}"
    res=$(ctrl_results "F$fo-1" "F$fo-2" "F$fo-3" "F$fo-4" "F$fo-5" "F$fo-6")
    ok=$(awk '$1 == 0' <<<"$res" | grep -c .)
    min=$(awk '{ print $2 }' <<<"$res" | sort -n | head -n1)
    max=$(awk '{ print $2 }' <<<"$res" | sort -n | tail -n1)
    say "6 new control connections started while stopped: $ok completed; took $min..$max ms ($(awk '{ print $2 }' <<<"$res" | tr '\n' ' '))"
    if [ "$fo" = 0 ]; then
        [ -n "$d1" ] && [ "${d1:-0}" -gt "${d0:-0}" ]
        check "F0 the kernel dropped what did not fit: queue_dropped ${d0:-?} -> ${d1:-?}" pass $?
        [ "$ok" = 6 ] && [ "$min" -ge 3500 ]
        check "F0 new control connections stalled while stopped and completed after SIGCONT (TCP retransmits): 6 of 6 in $min..$max ms" pass $?
        drv_wait "probe$fo" "$noop_n" 30; rc=$?
        ms=$(field ms)
        [ $rc = 0 ] && [ "${ms:-0}" -ge 3500 ]
        check "F0 a NOOP sent on the established session while stopped was answered only after SIGCONT (${ms:-?} ms)" pass $?
        logged "$DAEMON_LOG" "the kernel could not queue" 5
        check "F0 after SIGCONT the daemon logs the losses" pass $?
        grep -F "the kernel could not queue" "$DAEMON_LOG" | head -n 2 | indent
    else
        [ "${d1:-x}" = "${d0:-y}" ]
        check "F1 the kernel counted nothing (queue_dropped ${d0:-?} -> ${d1:-?}): fail_open accepts what does not fit" pass $?
        [ "$ok" = 6 ] && [ "$n" = 6 ]
        check "F1 new control connections completed while the daemon was still stopped, unhelped: $n of 6 before SIGCONT, $min..$max ms" pass $?
        sleep 2
        ! grep -F "the kernel could not queue" "$DAEMON_LOG" >/dev/null
        check "F1 no loss logged after SIGCONT (with fail_open the kernel counts none)" pass $?
    fi
    drv_cmd "probe$fo" 20 recover 15
    check "F$fo after SIGCONT a PASV transfer on the same session works ($DRV_REPLY)" pass $?
    kill -0 "$DAEMON_PID"; check "F$fo daemon alive" pass $?
    drv_close "fill$fo"
    drv_close "probe$fo"
    status_save "F$fo"
}
if [[ $PHASES == *" F "* ]]; then
    full_queue 0
    full_queue 1
fi

# ================================================================ phase B
if [[ $PHASES == *" B "* ]]; then
say "=== phase B: socket buffer overrun (queue_maxlen 100000, the daemon stopped during bulk data)"
restart 100000 0 overrun; check "B daemon started (queue_maxlen 100000, fail_open 0)" pass $?
# (1) What TCP flows do: bulk data on port 21 connections, the daemon stopped
# in the middle of the flow. Each connection has its congestion window in
# flight and sends nothing more until it is acknowledged; the kernel queues GSO
# packets whole and charges the socket little for their payload (it is
# referenced, not copied): in the runs so far this never filled the buffer.
# Printed, not checked.
drv_open bulk client bulk $F4 21 "$BULK_CONNS"; check "B1 $BULK_CONNS bulk connections to port 21 opened" pass $?
u0=$(qstat $Q 7)
drv_send bulk flow 7; bulk_n=$DRV_SENT
sleep 1
kill -STOP "$DAEMON_PID"; t_stop=${EPOCHREALTIME/./}
sleep 3
u1=$(qstat $Q 7); tot=$(qstat $Q 3)
rmem=$(sock_rmem)
inflight=$(cx ss -tin dst $F4 | grep -o 'unacked:[0-9]*' | awk -F: '{ s += $2 } END { print s + 0 }')
kill -CONT "$DAEMON_PID"; t_cont=${EPOCHREALTIME/./}
say "B1 stopped $(( (t_cont - t_stop) / 1000 )) ms in the middle of the flow: queue $Q held ${tot:-?} packets, ${inflight:-?} segments unacknowledged at the senders, the daemon's socket held ${rmem:-?} bytes (of 8 MiB: 4 MiB asked, doubled by the kernel); queue_user_dropped ${u0:-?} -> ${u1:-?}"
drv_wait bulk "$bulk_n" 60; rc=$?
say "B1 bulk: $DRV_REPLY in 7 s, of which the daemon was stopped $(( (t_cont - t_stop) / 1000 )) ms"
check "B1 the bulk flows went on after SIGCONT" pass $rc
drv_close bulk

# (2) What overruns it: many packets at once. A burst of new control
# connections while the daemon is stopped: every SYN (and every retransmitted
# SYN: the first one's conntrack is not confirmed yet) is queued.
u0=$(qstat $Q 7); d0=$(qstat $Q 6)
kill -STOP "$DAEMON_PID"; t_stop=${EPOCHREALTIME/./}
drv_start burst client idle $F4 21 "$BURST_CONNS" "$BURST_CONNS" 45
# until the kernel drops (every connection's SYN at 0, 1, 3, 7 s), at most 15 s
for ((i = 0; i < 30; i++)); do
    sleep 0.5
    u1=$(qstat $Q 7)
    [ "${u1:-0}" -gt "${u0:-0}" ] && [ "$(ms_since "$t_stop")" -ge 3000 ] && break
done
u1=$(qstat $Q 7); d1=$(qstat $Q 6); tot=$(qstat $Q 3)
rmem=$(sock_rmem)
rx cat /proc/net/netfilter/nfnetlink_queue >"$RESULTS/proc-queue-B.txt"
kill -CONT "$DAEMON_PID"; t_cont=${EPOCHREALTIME/./}
say "B2 $BURST_CONNS new connections while stopped $(( (t_cont - t_stop) / 1000 )) ms: queue $Q held ${tot:-?} packets, the daemon's socket ${rmem:-?} bytes; queue_user_dropped ${u0:-?} -> ${u1:-?}, queue_dropped ${d0:-?} -> ${d1:-?}"
[ -n "$u1" ] && [ "${u1:-0}" -gt "${u0:-0}" ]
check "B2 the socket buffer overran: queue_user_dropped ${u0:-?} -> ${u1:-?} (/proc column 7)" pass $?
# How many of them complete is printed, not checked: on an idle host all 4000,
# on a loaded one (load 4-6) 72-92 % (the others connected but got no greeting
# within 45 s, or a reset; the server sent no SYN cookies and its listen queue
# never overflowed), while there the same burst with the daemon running
# completed all 4000. Not investigated further.
drv_wait burst 0 120
say "B2 connections after SIGCONT: $DRV_REPLY"
say "B2 the server's TCP: $(sx nstat -az TcpExtSyncookiesSent TcpExtSyncookiesRecv TcpExtSyncookiesFailed TcpExtListenOverflows TcpExtListenDrops 2>/dev/null | awk 'NR > 1 && $1 ~ /^Tcp/ { printf "%s %s ", $1, $2 }')"
drv_close burst
kill -0 "$DAEMON_PID"; check "B daemon alive" pass $?
logged "$DAEMON_LOG" "with the socket buffer full" 10
check "B the daemon logs the losses (socket buffer full)" pass $?
grep -F "the kernel could not queue" "$DAEMON_LOG" | head -n 3 | cut -c1-200 | indent
! grep -E 'queue socket failed' "$DAEMON_LOG" >/dev/null
check "B no queue socket error (NETLINK_NO_ENOBUFS: an overrun is not an error on the socket)" pass $?
xfer B-after; check "B a new helped session works afterwards (PASV download)" pass $?
status_save B
fi

# ================================================================ phase M
if [[ $PHASES == *" M "* ]]; then
say "=== phase M: $CONNS concurrent helped control connections"
restart 1024 0 conns; check "M daemon started (shipped queue settings: queue_maxlen 1024, fail_open 0)" pass $?
xfer M-warm; check "M a PASV transfer before (warms the daemon up)" pass $?
DRV_OPEN_WAIT=20 drv_open warm client idle $F4 21 200; drv_close warm
m0=$(mem "$DAEMON_PID"); r0=$(rss_kb "$DAEMON_PID")
say "daemon before: $m0"
DRV_OPEN_WAIT=900 drv_open idle client idle $F4 21 "$CONNS"; rc=$?
say "$CONNS connections: $DRV_REPLY; $(rx conntrack -C) conntracks in the router"
check "M $CONNS control connections opened through the helper and answered a NOOP" pass $rc
m1=$(mem "$DAEMON_PID"); r1=$(rss_kb "$DAEMON_PID")
say "daemon with $CONNS connections open: $m1"
xfer M-legit; check "M a PASV transfer works with $CONNS connections open" pass $?
drv_cmd idle 600 ping 500; check "M every connection still answers a NOOP ($DRV_REPLY)" pass $?
m2=$(mem "$DAEMON_PID"); r2=$(rss_kb "$DAEMON_PID")
say "daemon after a NOOP on each: $m2"
[ -n "$r0" ] && [ -n "$r2" ] && [ $((r2 - r0)) -lt "$RSS_MAX_KB" ] && [ $((r1 - r0)) -lt "$RSS_MAX_KB" ]
check "M VmRSS grew by less than $RSS_MAX_KB KiB: ${r0:-?} -> ${r1:-?} -> ${r2:-?} kB" pass $?
kill -0 "$DAEMON_PID"; check "M daemon alive" pass $?
status_save M
say "queue $Q: total $(qstat $Q 3), dropped $(qstat $Q 6), user_dropped $(qstat $Q 7)"
drv_close idle
dmesg | grep -E 'table full|nf_conntrack: ' | tail -n 3 | indent
fi

# ================================================================ phase E
if [[ $PHASES == *" E "* ]]; then
say "=== phase E: a burst of announcements beyond expect_max ($EXPECT_MAX) on one control connection"
[ -n "$DAEMON_PID" ] || { restart 1024 0 burst; check "E daemon started" pass $?; }
BURST=100
drv_open burst client burst $F4 21; check "E control connection opened" pass $?
bport=$(sed -nE "s/.*connected \('[0-9.]+', ([0-9]+)\).*/\1/p" <<<"$DRV_REPLY")
e0=$(counter ftp expectations); x0=$(counter ftp expectation_errors)
rm -f /tmp/faults-sample.stop
(
    while [ ! -e /tmp/faults-sample.stop ]; do
        rx conntrack -L expect 2>/dev/null | grep -c "master-src=$C4 master-dst=$F4 sport=$bport dport=21 "
    done >"$RESULTS/burst-samples.txt"
) &
sampler=$!
drv_cmd burst 300 pasv $BURST; rc=$?
BURST_REPLY=$DRV_REPLY
check "E $BURST PASV replies on one connection, each in its own segment ($DRV_REPLY)" pass $rc
touch /tmp/faults-sample.stop; wait $sampler
rx conntrack -L expect >"$RESULTS/expect-burst.txt" 2>&1
final=$(grep -c "master-src=$C4 master-dst=$F4 sport=$bport dport=21 " "$RESULTS/expect-burst.txt")
maxs=$(sort -n "$RESULTS/burst-samples.txt" | tail -n1)
say "pending for that connection: at most ${maxs:-?} in $(grep -c . "$RESULTS/burst-samples.txt") samples of conntrack -L expect during the burst, $final after it"
grep "sport=$bport dport=21 " "$RESULTS/expect-burst.txt" | indent
[ -n "$maxs" ] && [ "$maxs" -le $EXPECT_MAX ] && [ "$final" = $EXPECT_MAX ]
check "E never more than expect_max $EXPECT_MAX pending for that connection (most seen ${maxs:-?}, $final after)" pass $?
e1=$(counter ftp expectations); x1=$(counter ftp expectation_errors)
[ -n "$e1" ] && [ $((e1 - e0)) -ge $BURST ] && [ "$x1" = "$x0" ]
check "E status: expectations ${e0:-?} -> ${e1:-?} (each announcement honoured, the kernel evicted the oldest), expectation_errors ${x0:-?} -> ${x1:-?}" pass $?
latest=$(sed -nE 's/.*ports ([0-9]+)\.\.([0-9]+) .*/\2/p' <<<"$BURST_REPLY")
[ -n "$latest" ] && grep "dport=$latest mask" "$RESULTS/expect-burst.txt" >/dev/null
check "E the newest announcement (port ${latest:-?}) is among those pending" pass $?
kill -0 "$DAEMON_PID"; check "E daemon alive" pass $?
xfer E-legit; check "E a legitimate PASV session on another connection works" pass $?
drv_close burst
status_save E
fi

# ================================================================ phase H
if [[ $PHASES == *" H "* ]]; then
say "=== phase H: hostile input on helped ports"
[ -n "$DAEMON_PID" ] || { restart 1024 0 hostile; check "H daemon started" pass $?; }
# a port forward 192.0.2.1:21 -> the scripted server (for the low-port rule)
rx nft -f - <<EOF
table ip portfwd {
    chain pre {
        type nat hook prerouting priority dstnat; policy accept;
        ip daddr $R4C tcp dport 21 dnat to $F4
    }
}
EOF
check "H port forward $R4C:21 -> $F4:21 loaded" pass $?
ip netns exec router conntrack -E expect -o timestamp >"$RESULTS/expect-events-H.txt" 2>&1 &
ev=$!
sleep 0.3
rx conntrack -L expect >"$RESULTS/expect-list-H0.txt" 2>&1
r0=$(counter ftp refused); p0=$(counter ftp parse_errors); s0=$(counter sip refused); sp0=$(counter sip parse_errors)
FTP_STEPS="post-inline post-split post-padded post-aligned port-third-party port-low port-overlong
 port-huge-number port-utf8 port-binary port-truncated 227-third-party 227-other-server 227-utf8"
# shellcheck disable=SC2086 # the step lists are word-split on purpose
{
    cx $PY "$TOOL" hostile $F4 21 $FTP_STEPS
    cx $PY "$TOOL" hostile $R4C 21 227-low-port
    cx $PY "$TOOL" hostile $F4 5060 sip-in-http sip-third-party sip-low-port
} >"$RESULTS/hostile.txt" 2>&1
grep -E ': (sent|got) ' "$RESULTS/hostile.txt" | cut -c1-150 | indent
sleep 1
xfer H-legit; check "H a legitimate PASV transfer works after the hostile input" pass $?
sleep 0.5
kill "$ev" 2>/dev/null; wait "$ev" 2>/dev/null
# expected PORT: an expectation to PORT was created during the phase: a NEW
# event, still pending (nobody connects to these ports), or the daemon's debug
# line (netlink events can be lost under load; the three together cannot miss)
# (what was pending before, e.g. phase E's burst, left out)
rx conntrack -L expect >"$RESULTS/expect-list-H.txt" 2>&1
comm -13 <(sed -E 's/^[0-9]+ //' "$RESULTS/expect-list-H0.txt" | sort) \
    <(sed -E 's/^[0-9]+ //' "$RESULTS/expect-list-H.txt" | sort) >"$RESULTS/expect-list-H-new.txt"
expected() {
    grep -E "\[NEW\] .* dport=$1 mask" "$RESULTS/expect-events-H.txt" >/dev/null ||
        grep -E " dport=$1 mask" "$RESULTS/expect-list-H-new.txt" >/dev/null ||
        grep -E "expecting [0-9]+ [^ ]+ -> [^ ]+:$1\$" "$DAEMON_LOG" >/dev/null
}
# no_expect STEP PORT...: no expectation to any of the ports
no_expect() {
    local step=$1 p found=
    shift
    for p in "$@"; do expected "$p" && found="$found $p"; done
    [ -z "$found" ]
    check "H $step: no expectation${found:+ (found for port$found)}" pass $?
}
no_expect "FTP PORT inside an HTTP body, in the headers' segment (port 2201)" 2201
no_expect "FTP PORT inside an HTTP body, split inside the word PORT (2202)" 2202
no_expect "FTP PORT inside an HTTP body, starting a segment after padding (2203)" 2203
no_expect "PORT naming another inside host 192.0.2.3 (2205)" 2205
no_expect "PORT line longer than a segment (2214)" 2214
no_expect "PORT with full-width (UTF-8) digits" 2215
no_expect "PORT with binary bytes (0xff 0xfe 0x00)" 2216
no_expect "PORT truncated, connection closed (2217)" 2217
no_expect "227 naming a third party 203.0.113.5 (2210)" 2210
no_expect "227 naming another server behind the router 198.51.100.2 (2211)" 2211
no_expect "227 with full-width (UTF-8) digits" 2220
no_expect "227 naming port 22 through the port forward" 22
no_expect "PORT naming the client's own port 23 (no NAT)" 23
no_expect "SIP INVITE with SDP inside an HTTP body on TCP 5060, split across segments (2240/2241)" 2240 2241
no_expect "SIP INVITE whose SDP names another host 192.0.2.3 (2242/2243)" 2242 2243
no_expect "SIP INVITE with media port 80" 80 81
# anything at all for the hostile connections (masters to the scripted server
# or the port forward), the two shapes below apart
others=$({ grep -F '[NEW]' "$RESULTS/expect-events-H.txt"; cat "$RESULTS/expect-list-H-new.txt"; } | grep -E "master-dst=($F4|$R4C) " |
    grep -vE " dport=2204 mask")
[ -z "$others" ]
check "H no other expectation for any hostile connection${others:+ (${others//$'\n'/; })}" pass $?
grep -E " dport=2204 mask" "$RESULTS/expect-list-H-new.txt" | indent
if expected 2204; then
    say "KNOWN H a PORT line alone in its segment after an HTTP head that ends in CRLF: expected from the server to $C4:2204, as FTP (and the kernel's helper) would"
else
    say "note H a PORT line alone in its segment after an HTTP head that ends in CRLF: no expectation"
fi
r1=$(counter ftp refused); p1=$(counter ftp parse_errors); s1=$(counter sip refused); sp1=$(counter sip parse_errors)
say "ftp refused ${r0:-?} -> ${r1:-?}, parse_errors ${p0:-?} -> ${p1:-?}; sip refused ${s0:-?} -> ${s1:-?}, parse_errors ${sp0:-?} -> ${sp1:-?}"
[ -n "$r1" ] && [ $((r1 - r0)) -ge 5 ]
check "H ftp refused rose by at least 5 (third-party PORT, two third-party 227s, low port through the forward, client's own low port): +$(( ${r1:-0} - ${r0:-0} ))" pass $?
[ -n "$p1" ] && [ $((p1 - p0)) -ge 4 ]
check "H ftp parse_errors rose by at least 4 (overlong, 20-digit, UTF-8, binary, truncated): +$(( ${p1:-0} - ${p0:-0} ))" pass $?
[ -n "$s1" ] && [ $((s1 - s0)) -ge 2 ]
check "H sip refused rose by at least 2 (third-party c=, media port 80): +$(( ${s1:-0} - ${s0:-0} ))" pass $?
grep -E 'refus|LowPort|ThirdParty|parse' "$DAEMON_LOG" | tail -n 8 | cut -c1-200 | indent
kill -0 "$DAEMON_PID"; check "H daemon alive" pass $?
status_save H
fi

# ================================================================ end
if [ -n "$DAEMON_PID" ]; then
    stop_daemon TERM; check "daemon exits with status 0 on SIGTERM" pass $?
fi
! grep -E 'panicked|RUST_BACKTRACE' "$RESULTS"/daemon-*.log >/dev/null
check "no panic in any daemon log" pass $?
dmesg | grep -E 'cthd-fwd-drop|nf_conntrack|nfnetlink|cthelper|nf_queue' >"$RESULTS/dmesg.txt"
say "forward drops logged: $(grep -c cthd-fwd-drop "$RESULTS/dmesg.txt"); nf_queue lines: $(grep -c nf_queue "$RESULTS/dmesg.txt")"
summary
