#!/bin/bash
# bench/ftp-bench-guest.sh — FTP helper benchmark, cthelperd vs conntrackd 1.4.7.
# A BENCHMARK, not a test: it prints numbers and asserts nothing about them
# (it only exits non-zero when a daemon or the workload could not run at all).
# Runs INSIDE the run-in-kernel.sh guest; bench/ftp-bench.sh boots it.
#
# For each daemon in turn (cthelperd, then Debian's conntrackd in helper mode
# with the configuration tests/kernel/lib.sh writes), on the same lib.sh
# topology, firewall and nft helper rules, with the conntrack table, the
# expectations and the user-space helpers reset in between:
#   startup   exec -> "helpers registered" / "initialization completed"
#             (median of 3, after one untimed run that warms the page cache)
#   packets   ftp-load.py client: NOOP_CONNS control connections to a fake FTP
#             server on tcp/21, NOOP_COUNT "NOOP" round trips each; packets
#             through the daemon = delta of id_sequence (column 8) summed over
#             the router's nfnetlink queues; daemon CPU = utime+stime delta
#   expect    PASV_CONNS connections, PASV_COUNT "PASV" round trips each, every
#             reply a valid 227 with a fresh port; expectations = delta of
#             expect_create in the router's /proc/net/stat/nf_conntrack
#   memory    VmRSS fresh, after the workloads, with IDLE_CONNS (list) open
#             helped control connections; VmHWM at the end
#   size      stripped cthelperd vs /usr/sbin/conntrackd + its shared libraries
# Sanity: an extra nft table counts forwarded tcp/21 packets; they must all
# have gone through the queue (else the measurement is wrong), and the queue
# drop counters must stay 0.
#
# Environment: CTHELPERD_BIN (default $REPO/target/release/cthelperd),
# CTHELPERD_STRIPPED (stripped copy for the size column), BENCH_OUT (where the
# table and logs go, default $REPO/bench/results), NOOP_CONNS NOOP_COUNT
# PASV_CONNS PASV_COUNT IDLE_CONNS, DAEMONS (default "cthelperd conntrackd").
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=${REPO:-$(cd "$HERE/.." && pwd)}
BIN=${CTHELPERD_BIN:-$REPO/target/release/cthelperd}
STRIPPED=${CTHELPERD_STRIPPED:-$REPO/target/release/cthelperd.stripped}
OUT=${BENCH_OUT:-$REPO/bench/results}
NOOP_CONNS=${NOOP_CONNS:-16}
NOOP_COUNT=${NOOP_COUNT:-300}
PASV_CONNS=${PASV_CONNS:-8}
PASV_COUNT=${PASV_COUNT:-150}
IDLE_CONNS=${IDLE_CONNS:-500}
DAEMONS=${DAEMONS:-cthelperd conntrackd}
LOAD=$HERE/ftp-load.py

# shellcheck source=../tests/kernel/lib.sh
. "$REPO/tests/kernel/lib.sh"
# Logs go to the guest's tmpfs while measuring (a daemon writing its log over
# 9p would be charged for it), and are copied to $OUT at the end.
RESULTS=/tmp/bench
mkdir -p "$RESULTS" "$OUT"

declare -A R   # results: R[daemon.metric]
BAD=0          # workloads or daemons that could not run

# ---------------------------------------------------------------- small tools
# A sleep that does not fork (forks are slow under TCG and would blur the
# startup measurement): read with a timeout on a fifo nobody writes to.
mkfifo /tmp/bench-sleep.fifo
exec {SLEEP_FD}<>/tmp/bench-sleep.fifo
nap() { read -r -t "$1" -u "$SLEEP_FD" _; }
now_us() { echo "${EPOCHREALTIME/./}"; }
# calc 'expr': float arithmetic (parenthesised: a bare ">" would redirect awk's output)
calc() { awk "BEGIN { printf \"%s\", ($*) }" </dev/null; }
fmt() { awk -v v="$1" -v f="$2" 'BEGIN { printf f, v }' </dev/null; }

# queue_stat: "packets drops" summed over the router's queues (id_sequence is
# column 8; queue_dropped + queue_user_dropped are 6 and 7)
queue_stat() { rx awk '{ p += $8; d += $6 + $7 } END { print p + 0, d + 0 }' /proc/net/netfilter/nfnetlink_queue; }
# ct_stat NAME: a /proc/net/stat/nf_conntrack column (hex, one row per CPU),
# summed over CPUs; the header line names the columns
ct_stat() {
    local want=$1 hdr row i idx=-1 sum=0
    {
        read -r -a hdr
        for i in "${!hdr[@]}"; do [ "${hdr[$i]}" = "$want" ] && idx=$i; done
        while read -r -a row; do sum=$((sum + 16#${row[$idx]})); done
    } < <(rx cat /proc/net/stat/nf_conntrack)
    [ "$idx" -ge 0 ] && echo "$sum" || echo "?"
}
# real_pid PID: the daemon's own pid. A shell function run in the background
# (`rx daemon &`) is a bash subshell that does not exec its last command, so $!
# is that subshell and the daemon its child (ip netns exec execs in place).
# lib.sh's start_daemon avoids rx for this reason; this also covers older
# lib.sh versions, whose DAEMON_PID was the subshell.
real_pid() {
    local p=$1 c i
    for ((i = 0; i < 50; i++)); do
        case "$(readlink "/proc/$p/exe")" in
            */bash) ;;   # still the subshell
            *) echo "$p"; return 0 ;;
        esac
        read -r c _ <"/proc/$p/task/$p/children" 2>/dev/null
        [ -n "${c:-}" ] && p=$c && continue
        nap 0.01
    done
    echo "$1"
}
# stop_pid REAL_PID JOB_PID: SIGTERM the daemon, return its exit status (the
# subshell's); SIGKILL after 15 s
stop_pid() {
    local real=$1 job=$2 i
    kill -TERM "$real" 2>/dev/null
    for ((i = 0; i < 1500; i++)); do kill -0 "$real" 2>/dev/null || break; nap 0.01; done
    kill -0 "$real" 2>/dev/null && { say "pid $real ignored SIGTERM for 15 s: SIGKILL"; kill -KILL "$real"; }
    wait "$job"
}
# cpu_ticks PID: utime + stime in clock ticks
cpu_ticks() { local s; read -r -a s <"/proc/$1/stat"; echo $((s[13] + s[14])); }
HZ=$(getconf CLK_TCK)
# status_kb PID FIELD: VmRSS / VmHWM in kB
status_kb() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }
# fwd_packets: tcp/21 packets forwarded by the router (bench counter table)
fwd_packets() { rx nft list table inet bench | awk '/counter packets/ { for (i = 1; i < NF; i++) if ($i == "packets") s += $(i + 1) } END { print s + 0 }'; }

# Counters only (policy accept, no verdicts): runs before the filter table's
# forward chain, so every forwarded control-connection packet is counted.
load_counters() {
    rx nft -f - <<'EOF'
table inet bench {
    chain counts {
        type filter hook forward priority filter - 10; policy accept;
        tcp dport 21 counter
        tcp sport 21 counter
    }
}
EOF
}

# Between daemons: forget everything the previous one left in the kernel.
# nft's ct helper object holds a reference to the helper, so it goes first;
# conntrackd cannot update a helper registered with another private-data size
# (EBUSY), so the user-space helpers are deleted too.
reset_kernel_state() {
    rx nft delete table inet helpers 2>/dev/null
    rx conntrack -F >/dev/null 2>&1
    rx conntrack -F expect >/dev/null 2>&1
    rx nfct flush helper 2>/dev/null || say "nfct flush helper failed: $(nfct_helpers | tr '\n' ';')"
}

# wait_log FILE PATTERN PID SECONDS: poll FILE (builtins only) until a line
# contains PATTERN; fails if PID dies or time runs out
wait_log() {
    local f=$1 pat=$2 pid=$3 deadline=$(($(now_us) + $4 * 1000000)) l
    while [ "$(now_us)" -lt "$deadline" ]; do
        if [ -s "$f" ]; then
            while IFS= read -r l; do [[ $l == *"$pat"* ]] && return 0; done <"$f"
        fi
        kill -0 "$pid" 2>/dev/null || return 1
        nap 0.002
    done
    return 1
}

# startup NAME: exec -> ready, 1 untimed + 3 timed runs; sets R[NAME.startup_ms]
startup() {
    local name=$1 i pid t0 t1 log=$RESULTS/startup-$1.log pat times=()
    [ "$name" = conntrackd ] && pat='initialization completed' || pat='helpers registered'
    for i in 0 1 2 3; do
        if [ "$name" = conntrackd ]; then
            write_conntrackd_conf
            nfct_helpers | grep -q '^ftp 2 ' || rx nfct add helper ftp inet tcp
            nfct_helpers | grep -q '^ftp 10 ' || rx nfct add helper ftp inet6 tcp
            rm -f /run/lock/conntrackd-helper.lock
        fi
        : >"$log.$i"
        t0=$(now_us)
        if [ "$name" = conntrackd ]; then
            ip netns exec router conntrackd -C /tmp/conntrackd-helper.conf >"$log.$i" 2>&1 &
        else
            ip netns exec router "$BIN" --log-level info >"$log.$i" 2>&1 &
        fi
        pid=$!
        if ! wait_log "$log.$i" "$pat" "$pid" 30; then
            say "$name: startup run $i: not ready"; indent <"$log.$i"
            stop_pid "$(real_pid "$pid")" "$pid"
            R[$name.startup_ms]="?"; return 1
        fi
        t1=$(now_us)
        stop_pid "$(real_pid "$pid")" "$pid"
        [ "$i" -gt 0 ] && times+=($(((t1 - t0) / 100)))   # tenths of ms
    done
    R[$name.startup_ms]=$(printf '%s\n' "${times[@]}" | sort -n | sed -n 2p | awk '{ printf "%.1f", $1 / 10 }')
    say "$name: startup exec -> ready: ${R[$name.startup_ms]} ms (runs: $(printf '%s ' "${times[@]}" | awk '{ for (i = 1; i <= NF; i++) printf "%.1f ", $i / 10 }')ms)"
}

# own_counters NAME: cthelperd's "packets expectations" for ftp (SIGUSR1 makes
# it log them); conntrackd has no helper counters
own_counters() {
    [ "$1" = cthelperd ] || { echo "- -"; return; }
    local before after i l
    before=$(grep -c '^cthelperd: info: ftp: packets' "$RESULTS/daemon-$1.log")
    kill -USR1 "$DAEMON_PID"
    for ((i = 0; i < 200; i++)); do
        after=$(grep -c '^cthelperd: info: ftp: packets' "$RESULTS/daemon-$1.log")
        [ "$after" -gt "$before" ] && break
        nap 0.02
    done
    l=$(grep '^cthelperd: info: ftp: packets' "$RESULTS/daemon-$1.log" | tail -n1)
    awk '{ print $5, $7 }' <<<"$l"
}

# workload NAME KIND CONNS COUNT: one client run with the daemon's counters
# sampled around it; sets R[NAME.KIND_*]
workload() {
    local name=$1 kind=$2 conns=$3 count=$4 pid=$DAEMON_PID
    local q0 q1 f0 f1 c0 c1 e0 e1 n0 n1 t0 t1 out rc o0 o1
    read -r -a o0 < <(own_counters "$name")
    read -r -a q0 < <(queue_stat); f0=$(fwd_packets); c0=$(cpu_ticks "$pid")
    e0=$(ct_stat expect_create); n0=$(ct_stat expect_new)
    t0=$(now_us)
    out=$(cx $PY "$LOAD" client $S4 21 "$conns" "$count" "$kind" 2>&1); rc=$?
    t1=$(now_us)
    read -r -a q1 < <(queue_stat); f1=$(fwd_packets); c1=$(cpu_ticks "$pid")
    e1=$(ct_stat expect_create); n1=$(ct_stat expect_new)
    read -r -a o1 < <(own_counters "$name")
    echo "$out" >>"$RESULTS/client-$name.log"
    local k=$name.$kind
    R[$k.rc]=$rc
    R[$k.client]=$out
    # wall time as the client measured it (connections already open), else ours
    R[$k.secs]=$(awk '{ for (i = 1; i < NF; i++) if ($i == "seconds") print $(i + 1) }' <<<"$out")
    [ -n "${R[$k.secs]}" ] || R[$k.secs]=$(calc "($t1 - $t0) / 1e6")
    R[$k.rounds]=$((conns * count))
    R[$k.queued]=$((q1[0] - q0[0]))
    R[$k.drops]=$((q1[1] - q0[1]))
    R[$k.fwd]=$((f1 - f0))
    R[$k.cpu_s]=$(calc "($c1 - $c0) / $HZ")
    R[$k.exp]=$((e1 - e0))
    R[$k.exp_new]=$((n1 - n0))
    if [ "${o0[0]}" = - ]; then
        R[$k.own]="no counters"
    else
        R[$k.own]="packets $((o1[0] - o0[0])), expectations $((o1[1] - o0[1]))"
    fi
    R[$k.pps]=$(calc "${R[$k.queued]} / ${R[$k.secs]}")
    R[$k.us_per_pkt]=$(calc "${R[$k.cpu_s]} * 1e6 / (${R[$k.queued]} > 0 ? ${R[$k.queued]} : 1)")
    R[$k.cap]=$(calc "${R[$k.cpu_s]} > 0 ? ${R[$k.queued]} / ${R[$k.cpu_s]} : 0")
    R[$k.eps]=$(calc "${R[$k.exp]} / ${R[$k.secs]}")
    R[$k.us_per_exp]=$(calc "${R[$k.cpu_s]} * 1e6 / (${R[$k.exp]} > 0 ? ${R[$k.exp]} : 1)")
    say "$name $kind: $out (rc $rc); queued ${R[$k.queued]} (forwarded ${R[$k.fwd]}, queue drops ${R[$k.drops]}), $(fmt "${R[$k.pps]}" %.0f) pkt/s; daemon CPU ${R[$k.cpu_s]} s = $(fmt "${R[$k.us_per_pkt]}" %.1f) us/pkt; expect_create ${R[$k.exp]} ($(fmt "${R[$k.eps]}" %.0f)/s), expect_new ${R[$k.exp_new]}; daemon's own counters: ${R[$k.own]}"
    [ "$rc" = 0 ] || { say "$name $kind: the client did not complete its round trips"; BAD=1; }
    [ "${R[$k.fwd]}" = "${R[$k.queued]}" ] ||
        say "$name $kind: WARNING forwarded ${R[$k.fwd]} != queued ${R[$k.queued]} (packets bypassed the queue, or other traffic was queued)"
}

# idle_rss NAME N: RSS with N open (idle, helped) control connections
idle_rss() {
    local name=$1 n=$2 fifo=/tmp/bench-idle.fifo fd pid out=$RESULTS/idle-$1-$2.out i t0 q0 q1
    rm -f "$fifo"; mkfifo "$fifo"
    read -r -a q0 < <(queue_stat)
    t0=$(now_us)
    cx $PY "$LOAD" idle $S4 21 "$n" <"$fifo" >"$out" 2>&1 &
    pid=$!
    exec {fd}>"$fifo"
    for ((i = 0; i < 3000; i++)); do
        grep -q '^ready' "$out" 2>/dev/null && break
        kill -0 "$pid" 2>/dev/null || break
        nap 0.1
    done
    if grep -q '^ready' "$out"; then
        nap 1   # let the last verdicts settle
        R[$name.rss_$n]=$(status_kb "$DAEMON_PID" VmRSS)
        R[$name.anon_$n]=$(status_kb "$DAEMON_PID" RssAnon)
        R[$name.open_s_$n]=$(calc "($(now_us) - $t0) / 1e6 - 1")
        read -r -a q1 < <(queue_stat)
        R[$name.open_drops_$n]=$((q1[1] - q0[1]))
        say "$name: $n open control connections (opened in ${R[$name.open_s_$n]}s): VmRSS ${R[$name.rss_$n]} kB, RssAnon ${R[$name.anon_$n]} kB; conntracks in router: $(rx conntrack -C 2>/dev/null); queue drops while opening: ${R[$name.open_drops_$n]}"
    else
        R[$name.rss_$n]="?"
        say "$name: could not open $n connections: $(tail -n 3 "$out" | tr '\n' ' ')"; BAD=1
    fi
    exec {fd}>&-
    wait "$pid" 2>/dev/null
}

# bench_daemon NAME: the whole sequence for one daemon
bench_daemon() {
    local name=$1 n
    say "=================== $name"
    reset_kernel_state
    if [ "$name" = conntrackd ]; then
        REFERENCE=conntrackd
    else
        # lib.sh starts "$CTHELPERD -v"; a wrapper that keeps the pid (exec)
        # turns the per-expectation debug lines off: conntrackd logs nothing
        # either (LogFile off), and logging is not what we measure.
        REFERENCE=
        printf '#!/bin/sh\nexec %q --log-level info "$@"\n' "$BIN" >/tmp/cthelperd-bench
        chmod +x /tmp/cthelperd-bench
        CTHELPERD=/tmp/cthelperd-bench
    fi
    startup "$name" || { BAD=1; return 1; }
    [ "$name" = conntrackd ] || reset_kernel_state
    start_daemon "$RESULTS/daemon-$name.log" || { BAD=1; return 1; }
    JOB_PID=$DAEMON_PID
    DAEMON_PID=$(real_pid "$JOB_PID")
    say "$name: daemon pid $DAEMON_PID (job $JOB_PID), /proc/$DAEMON_PID/exe -> $(readlink "/proc/$DAEMON_PID/exe")"
    if ! load_helper_rules; then
        say "nft refused 'l3proto inet'; one ct helper object per family"
        HELPER_RULES=split load_helper_rules || { say "cannot load helper rules"; BAD=1; return 1; }
    fi
    nap 0.5
    R[$name.rss_fresh]=$(status_kb "$DAEMON_PID" VmRSS)
    R[$name.anon_fresh]=$(status_kb "$DAEMON_PID" RssAnon)
    say "$name: fresh VmRSS ${R[$name.rss_fresh]} kB, RssAnon ${R[$name.anon_fresh]} kB"
    # a short warm-up (first packets fault pages in, python compiles)
    cx $PY "$LOAD" client $S4 21 4 20 NOOP >/dev/null 2>&1
    workload "$name" NOOP "$NOOP_CONNS" "$NOOP_COUNT"
    workload "$name" PASV "$PASV_CONNS" "$PASV_COUNT"
    R[$name.rss_after]=$(status_kb "$DAEMON_PID" VmRSS)
    R[$name.anon_after]=$(status_kb "$DAEMON_PID" RssAnon)
    for n in $IDLE_CONNS; do idle_rss "$name" "$n"; done
    R[$name.hwm]=$(status_kb "$DAEMON_PID" VmHWM)
    say "$name: VmRSS after workloads ${R[$name.rss_after]} kB (RssAnon ${R[$name.anon_after]} kB), VmHWM ${R[$name.hwm]} kB"
    # not lib.sh's stop_daemon: it signals the subshell (see real_pid)
    stop_pid "$DAEMON_PID" "$JOB_PID"
    R[$name.stop_rc]=$?
    DAEMON_PID=
    say "$name: stopped, exit status ${R[$name.stop_rc]}"
    [ "$name" = cthelperd ] && say "$name: at exit: $(grep '^cthelperd: info: ftp: packets' "$RESULTS/daemon-$name.log" | tail -n1)"
    return 0
}

# ---------------------------------------------------------------- sizes
# Measured on the host by ftp-bench.sh (ldd under TCG takes ~20 s): SIZE_* in
# $OUT/sizes.log
sizes() {
    local f=$OUT/sizes.log
    if [ -r "$f" ]; then
        # shellcheck disable=SC1090
        . "$f"
    else
        say "no $f (run bench/ftp-bench.sh on the host): size rows will be empty"
    fi
    R[cthelperd.bin]=${SIZE_CTHELPERD:-0}
    R[cthelperd.bin_unstripped]=${SIZE_CTHELPERD_UNSTRIPPED:-0}
    R[cthelperd.nlibs]=${SIZE_CTHELPERD_NLIBS:-0}; R[cthelperd.libs]=${SIZE_CTHELPERD_LIBS:-0}
    R[cthelperd.libnames]=${SIZE_CTHELPERD_LIBNAMES:-}
    R[conntrackd.bin]=${SIZE_CONNTRACKD:-0}
    R[conntrackd.plugin]=${SIZE_CONNTRACKD_PLUGIN:-0}
    R[conntrackd.nlibs]=${SIZE_CONNTRACKD_NLIBS:-0}; R[conntrackd.libs]=${SIZE_CONNTRACKD_LIBS:-0}
    R[conntrackd.libnames]=${SIZE_CONNTRACKD_LIBNAMES:-}
    say "sizes: cthelperd ${R[cthelperd.bin]} B stripped (${R[cthelperd.bin_unstripped]} B as built) + ${R[cthelperd.nlibs]} libs ${R[cthelperd.libs]} B (${R[cthelperd.libnames]})"
    say "sizes: conntrackd ${R[conntrackd.bin]} B + ct_helper_ftp.so ${R[conntrackd.plugin]} B + ${R[conntrackd.nlibs]} libs ${R[conntrackd.libs]} B (${R[conntrackd.libnames]})"
}

# ---------------------------------------------------------------- table
kb() { [[ $1 =~ ^[0-9]+$ ]] && fmt "$(calc "$1 / 1024")" '%.1f MiB' || echo "$1"; }
# kib: kB (from /proc) as KiB; kibb: bytes as KiB
kib() { [[ $1 =~ ^[0-9]+$ ]] && fmt "$1" '%.0f KiB' || echo "$1"; }
kibb() { [[ $1 =~ ^[0-9]+$ ]] && fmt "$(calc "$1 / 1024")" '%.0f KiB' || echo "$1"; }
num() { [[ $1 =~ ^[0-9.e+-]+$ ]] && fmt "$1" "$2" || echo "${1:-?}"; }
# ratio A B: A/B as "N.NNx"
ratio() { if [[ ${1:-} =~ ^[0-9.e+-]+$ && ${2:-} =~ ^[0-9.e+-]+$ ]] && [ "$(calc "$2 != 0")" = 1 ]; then fmt "$(calc "$1 / $2")" '%.2fx'; else echo "n/a"; fi; }
row() { printf '| %s | %s | %s | %s |\n' "$@"; }

table() {
    local a=cthelperd b=conntrackd n c
    echo "## FTP helper benchmark: cthelperd vs conntrackd 1.4.7 (helper mode)"
    echo
    echo "Kernel $(uname -r) under qemu ${BENCH_ACCEL:-?} ($(nproc) vCPUs, $(awk '/MemTotal/ { printf "%d MiB", $2 / 1024 }' /proc/meminfo)); $(date -u '+%Y-%m-%d %H:%M UTC'); cthelperd ${BENCH_REV:-?}, ${BENCH_BINARY_KIND:-release build}."
    echo "Workloads (bench/ftp-load.py, IPv4, client -> router (daemon) -> server): packets = $NOOP_CONNS connections x $NOOP_COUNT NOOP round trips;"
    echo "expectations = $PASV_CONNS connections x $PASV_COUNT PASV round trips, each answered by a 227 with a new port."
    echo
    row "metric" "cthelperd" "conntrackd" "cthelperd / conntrackd"
    row "---" "---:" "---:" "---:"
    row "helped packets/s achieved (NOOP load)" "$(num "${R[$a.NOOP.pps]:-}" %.0f)" "$(num "${R[$b.NOOP.pps]:-}" %.0f)" "$(ratio "${R[$a.NOOP.pps]:-}" "${R[$b.NOOP.pps]:-}")"
    row "daemon CPU per helped packet (µs)" "$(num "${R[$a.NOOP.us_per_pkt]:-}" %.1f)" "$(num "${R[$b.NOOP.us_per_pkt]:-}" %.1f)" "$(ratio "${R[$a.NOOP.us_per_pkt]:-}" "${R[$b.NOOP.us_per_pkt]:-}")"
    row "capacity: helped packets per daemon CPU-second" "$(num "${R[$a.NOOP.cap]:-}" %.0f)" "$(num "${R[$b.NOOP.cap]:-}" %.0f)" "$(ratio "${R[$a.NOOP.cap]:-}" "${R[$b.NOOP.cap]:-}")"
    row "expectations/s achieved (PASV load)" "$(num "${R[$a.PASV.eps]:-}" %.0f)" "$(num "${R[$b.PASV.eps]:-}" %.0f)" "$(ratio "${R[$a.PASV.eps]:-}" "${R[$b.PASV.eps]:-}")"
    row "daemon CPU per expectation incl. its packets (µs)" "$(num "${R[$a.PASV.us_per_exp]:-}" %.1f)" "$(num "${R[$b.PASV.us_per_exp]:-}" %.1f)" "$(ratio "${R[$a.PASV.us_per_exp]:-}" "${R[$b.PASV.us_per_exp]:-}")"
    row "peak RSS (VmHWM, end of run)" "$(kb "${R[$a.hwm]:-?}")" "$(kb "${R[$b.hwm]:-?}")" "$(ratio "${R[$a.hwm]:-}" "${R[$b.hwm]:-}")"
    row "RSS fresh, 0 connections" "$(kb "${R[$a.rss_fresh]:-?}")" "$(kb "${R[$b.rss_fresh]:-?}")" "$(ratio "${R[$a.rss_fresh]:-}" "${R[$b.rss_fresh]:-}")"
    row "RSS after the workloads, 0 open" "$(kb "${R[$a.rss_after]:-?}")" "$(kb "${R[$b.rss_after]:-?}")" "$(ratio "${R[$a.rss_after]:-}" "${R[$b.rss_after]:-}")"
    for n in $IDLE_CONNS; do
        row "RSS with $n open helped connections" "$(kb "${R[$a.rss_$n]:-?}")" "$(kb "${R[$b.rss_$n]:-?}")" "$(ratio "${R[$a.rss_$n]:-}" "${R[$b.rss_$n]:-}")"
    done
    row "private RSS (RssAnon): fresh / after workloads" "$(kib "${R[$a.anon_fresh]:-?}") / $(kib "${R[$a.anon_after]:-?}")" "$(kib "${R[$b.anon_fresh]:-?}") / $(kib "${R[$b.anon_after]:-?}")" "$(ratio "${R[$a.anon_after]:-}" "${R[$b.anon_after]:-}")"
    for n in $IDLE_CONNS; do
        row "private RSS (RssAnon) with $n open connections" "$(kib "${R[$a.anon_$n]:-?}")" "$(kib "${R[$b.anon_$n]:-?}")" "$(ratio "${R[$a.anon_$n]:-}" "${R[$b.anon_$n]:-}")"
        row "time to open $n helped connections (s)" "$(num "${R[$a.open_s_$n]:-}" %.1f)" "$(num "${R[$b.open_s_$n]:-}" %.1f)" "$(ratio "${R[$a.open_s_$n]:-}" "${R[$b.open_s_$n]:-}")"
    done
    row "binary (stripped)" "$(kibb "${R[$a.bin]}")" "$(kibb "${R[$b.bin]}") + $(kibb "${R[$b.plugin]}") ct_helper_ftp.so" "$(ratio "${R[$a.bin]}" "$((R[$b.bin] + R[$b.plugin]))")"
    row "shared libraries besides libc" "${R[$a.nlibs]}: $(kibb "${R[$a.libs]}")" "${R[$b.nlibs]}: $(kibb "${R[$b.libs]}")" "$(ratio "$((R[$a.bin] + R[$a.libs]))" "$((R[$b.bin] + R[$b.plugin] + R[$b.libs]))") (with binaries)"
    row "startup, exec -> ready (ms, median of 3)" "${R[$a.startup_ms]:-?}" "${R[$b.startup_ms]:-?}" "$(ratio "${R[$a.startup_ms]:-}" "${R[$b.startup_ms]:-}")"
    echo
    echo "Targets: helped packets/s >= 2x conntrackd's (capacity ratio above; achieved rates are bounded by the load generator, see sanity);"
    echo "memory <= 1/4 of conntrackd's (peak RSS ratio above); memory flat in the number of connections (RSS rows above)."
    echo
    echo "### Sanity"
    echo
    for n in $a $b; do
        echo "- $n NOOP: client \`${R[$n.NOOP.client]:-?}\`; queued ${R[$n.NOOP.queued]:-?} packets, forwarded ${R[$n.NOOP.fwd]:-?}, queue drops ${R[$n.NOOP.drops]:-?}, daemon CPU ${R[$n.NOOP.cpu_s]:-?} s, $(num "$(calc "${R[$n.NOOP.queued]:-0} / (${R[$n.NOOP.rounds]:-0} > 0 ? ${R[$n.NOOP.rounds]:-1} : 1)")" %.2f) packets per round trip"
        echo "- $n PASV: client \`${R[$n.PASV.client]:-?}\`; expect_create ${R[$n.PASV.exp]:-?} for ${R[$n.PASV.rounds]:-?} PASV, expect_new ${R[$n.PASV.exp_new]:-?}; queued ${R[$n.PASV.queued]:-?}, forwarded ${R[$n.PASV.fwd]:-?}, queue drops ${R[$n.PASV.drops]:-?}, daemon CPU ${R[$n.PASV.cpu_s]:-?} s"
        for c in $IDLE_CONNS; do
            echo "- $n opening $c connections at once: ${R[$n.open_drops_$c]:-?} packets dropped by the queue (netlink socket overrun; TCP retransmits them)"
        done
        echo "- $n own counters during NOOP: ${R[$n.NOOP.own]:-?}; during PASV: ${R[$n.PASV.own]:-?}; exit status on SIGTERM ${R[$n.stop_rc]:-?}"
    done
    echo "- shared libraries: cthelperd: ${R[$a.libnames]:-none}; conntrackd: ${R[$b.libnames]:-none}"
}

# ================================================================ main
say "FTP helper benchmark: daemons $DAEMONS; binary $BIN"
kernel_setup || exit 2
setup_topology || exit 2
load_firewall || exit 2
load_counters || exit 2
say "topology and firewall ready"
sx $PY "$LOAD" server $S4 21 >"$RESULTS/server.log" 2>&1 &
SERVER_JOB=$!
for ((i = 0; i < 300; i++)); do
    [ "$(sx ss -Hltn 'sport = :21' | wc -l)" -ge 1 ] && break
    nap 0.1
done
say "fake FTP server listening on $S4:21"
sizes
for d in $DAEMONS; do
    bench_daemon "$d" || say "$d: benchmark incomplete"
done
kill "$(real_pid "$SERVER_JOB")" 2>/dev/null
wait "$SERVER_JOB" 2>/dev/null

table >"$RESULTS/ftp-bench.md"
echo
cat "$RESULTS/ftp-bench.md"
echo
# the table is the committed result; raw logs are .log (gitignored)
cp "$RESULTS/ftp-bench.md" "$OUT/ftp-bench.md"
for f in "$RESULTS"/*; do
    case "$f" in *.md|*.fifo) ;; *) cp "$f" "$OUT/$(basename "$f" .log).log" ;; esac
done
say "done; table in $OUT/ftp-bench.md"
exit $BAD
