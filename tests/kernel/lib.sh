# shellcheck shell=bash
# tests/kernel/lib.sh — guest-side helpers shared by the kernel scenarios.
# Sourced INSIDE the run-in-kernel.sh guest (Debian 6.1 kernel, root, host
# filesystem under a tmpfs overlay). Nothing here touches anything but the
# namespaces it creates; all addresses are documentation prefixes.
#
# Environment (exported by tests/kernel/run.sh on the host):
#   REPO        repository root (default: two levels above this file)
#   CTHELPERD   daemon binary (default: $REPO/target/debug/cthelperd)
#   REFERENCE   "" (default: test cthelperd) or "conntrackd" (Debian's
#               conntrackd 1.4.7 in helper mode as the reference daemon)
#   RESULTS     directory for logs (default: $REPO/tests/kernel/results/<scenario>)
#   KCONFIG     the guest kernel's config file (informational)

KLIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=${REPO:-$(cd "$KLIB_DIR/../.." && pwd)}
CTHELPERD=${CTHELPERD:-$REPO/target/debug/cthelperd}
REFERENCE=${REFERENCE:-}
PY=/usr/bin/python3        # Debian's python3 (pyftpdlib); the PATH one may be pyenv

# ---------------------------------------------------------------- addresses
C4=192.0.2.2;       R4C=192.0.2.1;       R4S=198.51.100.1;   S4=198.51.100.2
C6=2001:db8:1::2;   R6C=2001:db8:1::1;   R6S=2001:db8:2::1;  S6=2001:db8:2::2

# ---------------------------------------------------------------- reporting
PASSES=0
FAILS=0
T0=${EPOCHREALTIME/./}
elapsed() { # seconds since start, as S.CC, without forking
    local d=$(( ${EPOCHREALTIME/./} - T0 ))
    printf '%d.%02d' $((d / 1000000)) $(( (d / 10000) % 100 ))
}
say() { printf '[%7s] %s\n' "$(elapsed)" "$*"; }
# check NAME want(pass|fail) rc — count a result; rc 0 means "pass"
check() {
    local name=$1 want=$2 rc=$3 got
    [ "$rc" = 0 ] && got=pass || got=fail
    if [ "$want" = "$got" ]; then
        PASSES=$((PASSES + 1)); say "ok   $name: $got (rc=$rc)"
    else
        FAILS=$((FAILS + 1)); say "FAIL $name: $got, expected $want (rc=$rc)"
    fi
}
# refnote TEXT: " [reference: TEXT, expected fail]" in reference mode, else nothing
refnote() { [ -z "$REFERENCE" ] || printf ' [%s: %s, expected fail]' "$REFERENCE" "$1"; }
# want CTHELPERD_WANT REFERENCE_WANT — pick the expected outcome for the mode
want() { if [ -n "$REFERENCE" ]; then echo "$2"; else echo "$1"; fi; }
summary() { # print the final line and return non-zero on failure
    say "done"
    echo "$PASSES passed, $FAILS failed"
    [ "$FAILS" = 0 ]
}
indent() { sed 's/^/    /'; }

# scenario_begin NAME [--reference DAEMON]: parse a scenario's arguments and set
# REFERENCE, MODE and RESULTS (the scenario's log directory, emptied except for
# the runner's own output.log).
scenario_begin() {
    local name=$1
    shift
    while [ $# -gt 0 ]; do
        case "$1" in
            --reference) REFERENCE=$2; shift 2 ;;
            --reference=*) REFERENCE=${1#*=}; shift ;;
            *) echo "usage: $0 [--reference conntrackd]" >&2; exit 2 ;;
        esac
    done
    RESULTS=${RESULTS:-$REPO/tests/kernel/results/$name${REFERENCE:+-$REFERENCE}}
    mkdir -p "$RESULTS" && find "$RESULTS" -mindepth 1 -maxdepth 1 ! -name output.log -exec rm -rf {} +
    MODE=${REFERENCE:-cthelperd}
}

rx() { ip netns exec router "$@"; }
cx() { ip netns exec client "$@"; }
sx() { ip netns exec server "$@"; }

# ---------------------------------------------------------------- kernel setup
# The kernel's own helpers must never be used: a test must not pass because
# nf_conntrack_ftp got auto-loaded (nft/xt request_module("nfct-helper-ftp")).
forbid_kernel_helpers() {
    mkdir -p /etc/modprobe.d
    local m
    for m in nf_conntrack_ftp nf_conntrack_tftp nf_conntrack_sip nf_nat_ftp nf_nat_tftp nf_nat_sip; do
        echo "install $m /bin/false"
    done >/etc/modprobe.d/cthelperd-test-no-kernel-helpers.conf
}

load_modules() {
    local m
    for m in nf_conntrack nf_conntrack_netlink nfnetlink_cthelper nfnetlink_queue \
        nf_tables nft_ct nf_log_syslog veth; do
        modprobe "$m" || { say "modprobe $m failed"; return 1; }
    done
    # no automatic helper assignment (the sysctl is gone in kernels >= 6.0)
    if sysctl -qw net.netfilter.nf_conntrack_helper=0 2>/dev/null; then
        say "net.netfilter.nf_conntrack_helper=0"
    else
        say "net.netfilter.nf_conntrack_helper: not present in this kernel (no automatic assignment)"
    fi
    sysctl -qw net.netfilter.nf_log_all_netns=1 2>/dev/null || true   # nft log inside netns
    if [ -n "${KCONFIG:-}" ] && [ -r "$KCONFIG" ]; then
        say "config: $(grep -E '^CONFIG_(NF_CT_NETLINK_HELPER|NETFILTER_NETLINK_GLUE_CT|NETFILTER_NETLINK_QUEUE)=' "$KCONFIG" | tr '\n' ' ')"
    fi
}

kernel_setup() {
    say "kernel $(uname -r)"
    forbid_kernel_helpers
    load_modules
}

# ---------------------------------------------------------------- topology
#   client c0 --- r0 router r1 --- s0 server
#   192.0.2.2/24      192.0.2.1/24 | 198.51.100.1/24     198.51.100.2/24
#   2001:db8:1::2/64  2001:db8:1::1/64 | 2001:db8:2::1/64  2001:db8:2::2/64
setup_topology() {
    local n
    for n in client router server; do
        ip netns add $n
        ip -n $n link set lo up
        ip netns exec $n sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
    done
    ip link add c0 netns client type veth peer name r0 netns router
    ip link add s0 netns server type veth peer name r1 netns router
    ip -n client addr add $C4/24 dev c0
    ip -n client addr add $C6/64 dev c0 nodad
    ip -n router addr add $R4C/24 dev r0
    ip -n router addr add $R6C/64 dev r0 nodad
    ip -n router addr add $R4S/24 dev r1
    ip -n router addr add $R6S/64 dev r1 nodad
    ip -n server addr add $S4/24 dev s0
    ip -n server addr add $S6/64 dev s0 nodad
    ip -n client link set c0 up
    ip -n router link set r0 up
    ip -n router link set r1 up
    ip -n server link set s0 up
    ip -n client route add default via $R4C
    ip -n client -6 route add default via $R6C
    ip -n server route add default via $R4S
    ip -n server -6 route add default via $R6S
    rx sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
}

# Router firewall (nftables, like OpenWrt's fw4): forward policy drop, only
# established/related and new control connections to tcp/21 from the client.
load_firewall() {
    rx nft -f - <<'EOF'
table inet filter {
    chain forward {
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "r0" oifname "r1" tcp dport 21 ct state new accept
        limit rate 20/second log prefix "cthd-fwd-drop: " level warn
    }
}
EOF
}

# Helper assignment. Must be loaded AFTER the helper is registered in the
# kernel: nft refuses an unknown helper name (ENOENT), and with the kernel's
# nf_conntrack_ftp forbidden nothing can be auto-loaded.
# HELPER_RULES=inet (default): one object with "l3proto inet" (resolves the
# IPv4 and the IPv6 helper at load time); HELPER_RULES=split: one object per family.
load_helper_rules() {
    local mode=${HELPER_RULES:-inet}
    rx nft delete table inet helpers 2>/dev/null
    if [ "$mode" = inet ]; then
        rx nft -f - <<'EOF'
table inet helpers {
    ct helper ftp-std {
        type "ftp" protocol tcp;
        l3proto inet;
    }
    chain pre {
        type filter hook prerouting priority filter;
        tcp dport 21 ct helper set "ftp-std"
    }
}
EOF
    else
        rx nft -f - <<'EOF'
table inet helpers {
    ct helper ftp-std4 {
        type "ftp" protocol tcp;
        l3proto ip;
    }
    ct helper ftp-std6 {
        type "ftp" protocol tcp;
        l3proto ip6;
    }
    chain pre {
        type filter hook prerouting priority filter;
        meta nfproto ipv4 tcp dport 21 ct helper set "ftp-std4"
        meta nfproto ipv6 tcp dport 21 ct helper set "ftp-std6"
    }
}
EOF
    fi
}

# ---------------------------------------------------------------- ftplib sessions
# Long-lived FTP control sessions (ftp-session.py) driven command by command;
# they download blob.bin and compare it with $SUM; logs go to $RESULTS.
declare -A SESS_FD SESS_N SESS_PID
SESS_REPLY=
sess_open() { # sess_open NAME HOST [SOURCE]: a long-lived ftplib session in the client namespace
    local name=$1 host=$2 fifo=/tmp/sess-$1.in fd
    rm -f "$fifo"; mkfifo "$fifo"
    ip netns exec client env FTP_SOURCE="${3:-}" $PY "$KLIB_DIR/ftp-session.py" "$host" blob.bin "$SUM" <"$fifo" \
        >"$RESULTS/sess-$name.out" 2>"$RESULTS/sess-$name.err" &
    SESS_PID[$name]=$!
    exec {fd}>"$fifo"
    SESS_FD[$name]=$fd
    SESS_N[$name]=0
    sess_wait "$name" 0
}
sess_wait() { # sess_wait NAME N: wait for reply N (at most 40 s)
    local name=$1 n=$2 i
    for ((i = 0; i < 400; i++)); do
        SESS_REPLY=$(grep -m1 "^$n " "$RESULTS/sess-$name.out" 2>/dev/null)
        [ -n "$SESS_REPLY" ] && break
        kill -0 "${SESS_PID[$name]}" 2>/dev/null || break
        sleep 0.1
    done
    echo "$SESS_REPLY" >>"$RESULTS/sessions.log"
    [ -n "$SESS_REPLY" ] || SESS_REPLY="$n err no reply"
    [[ "$SESS_REPLY" == "$n ok "* ]]
}
sess_cmd() { # sess_cmd NAME CMD...: 0 iff the session answered ok
    local name=$1
    shift
    SESS_N[$name]=$((SESS_N[$name] + 1))
    echo "$name> $*" >>"$RESULTS/sessions.log"
    echo "$*" >&"${SESS_FD[$name]}"
    sess_wait "$name" "${SESS_N[$name]}"
}
sess_close() {
    local name=$1
    sess_cmd "$name" quit
    exec {SESS_FD[$name]}>&-
    wait "${SESS_PID[$name]}" 2>/dev/null
}

# ---------------------------------------------------------------- helpers in the kernel
# nfct_helpers: "name l3protonum l4protonum queuenum status" per user-space helper
nfct_helpers() {
    rx nfct list helper 2>/dev/null | awk '
        /\.name =/       { n=$3 }   /\.l3protonum =/ { l3=$3 }
        /\.l4protonum =/ { l4=$3 }  /\.queuenum =/   { q=$3 }
        /\.status =/     { s=$3; gsub(/[,;]/, "", n); gsub(/[,;]/, "", l3); gsub(/[,;]/, "", l4)
                           gsub(/[,;]/, "", q); gsub(/[,;]/, "", s); print n, l3, l4, q, s }'
}
# helpers_serving NAME: how many registrations (family, protocol) of helper NAME get
# packets: registered enabled (the helper hook queues: conntrackd, or cthelperd with
# firewall '0'), or registered disabled with a rule of table inet cthelperd that queues
# that protocol and family to its queue (cthelperd's table queues the packets with
# payload).
helpers_serving() {
    local rules
    rules=$(rx nft list chain inet cthelperd queue_postrouting 2>/dev/null |
        grep " queue .*to [0-9]" | tr '\n' '|')
    nfct_helpers | awk -v n="$1" -v rules="$rules" '
        $1 != n { next }
        $5 == "enabled" { c++; next }
        {
            k = split(rules, r, "|")
            for (i = 1; i <= k; i++) {
                if (r[i] !~ (" to " $4 "$")) continue
                fam = r[i] ~ /nfproto ipv4/ ? 2 : (r[i] ~ /nfproto ipv6/ ? 10 : $2)
                l4 = r[i] ~ /l4proto tcp/ ? 6 : (r[i] ~ /l4proto udp/ ? 17 : 0)
                if (fam == $2 && l4 == $3) { c++; break }
            }
        }
        END { print c + 0 }'
}

# ---------------------------------------------------------------- daemon control
# start_daemon [LOGFILE]: starts $CTHELPERD -v (or the reference daemon) in the
# router namespace, in the background; sets DAEMON_PID. Waits until the daemon logs
# that it is ready, then checks that the "ftp" helper serves IPv4 and IPv6.
# Returns non-zero if it died or did not get ready within DAEMON_WAIT seconds.
DAEMON_PID=
DAEMON_LOG=
DAEMON_READY_S=
start_daemon() {
    DAEMON_LOG=${1:-$RESULTS/daemon.log}
    local t0=${EPOCHREALTIME/./} i
    case "$REFERENCE" in
        "")
            [ -x "$CTHELPERD" ] || { say "no daemon binary at $CTHELPERD"; return 1; }
            # not via the rx function: $! must be the daemon (ip netns exec execs it)
            # CTHELPERD_ARGS: extra daemon arguments (e.g. --config FILE), word-split
            # shellcheck disable=SC2086
            ip netns exec router "$CTHELPERD" -v ${CTHELPERD_ARGS:-} >>"$DAEMON_LOG" 2>&1 &
            DAEMON_PID=$! ;;
        conntrackd)
            write_conntrackd_conf
            # conntrackd configures (updates) helpers that nfct created
            nfct_helpers | grep -q '^ftp 2 ' || rx nfct add helper ftp inet tcp
            nfct_helpers | grep -q '^ftp 10 ' || rx nfct add helper ftp inet6 tcp
            rm -f /run/lock/conntrackd-helper.lock
            # foreground (no -d), so that we own its pid and exit status
            ip netns exec router conntrackd -C /tmp/conntrackd-helper.conf >>"$DAEMON_LOG" 2>&1 &
            DAEMON_PID=$! ;;
        *) say "unknown reference daemon '$REFERENCE'"; return 1 ;;
    esac
    local ready='helpers registered'
    [ "$REFERENCE" = conntrackd ] && ready='initialization completed'
    for ((i = 0; i < ${DAEMON_WAIT:-30} * 10; i++)); do
        if ! kill -0 "$DAEMON_PID" 2>/dev/null; then
            wait "$DAEMON_PID"; say "daemon exited early (rc=$?); log:"; indent <"$DAEMON_LOG"
            DAEMON_PID=; return 1
        fi
        if grep -q "$ready" "$DAEMON_LOG" 2>/dev/null; then
            local d=$(( ${EPOCHREALTIME/./} - t0 ))
            DAEMON_READY_S=$(printf '%d.%02d' $((d / 1000000)) $(( (d / 10000) % 100 )))
            say "daemon pid $DAEMON_PID ($(cat /proc/$DAEMON_PID/comm 2>/dev/null)) ready after ${DAEMON_READY_S}s; helpers: $(nfct_helpers | tr '\n' ';')"
            [ "$(helpers_serving ftp)" -ge 2 ] || { say "ftp helper not serving both families"; return 1; }
            return 0
        fi
        sleep 0.1
    done
    say "daemon not ready after ${DAEMON_WAIT:-30}s; helpers: $(nfct_helpers | tr '\n' ';'); log:"
    indent <"$DAEMON_LOG"
    return 1
}

# stop_daemon [SIGNAL]: default TERM; waits (at most 15 s, then KILL) and
# returns the daemon's exit status (137 for SIGKILL).
stop_daemon() {
    local sig=${1:-TERM} rc wd
    [ -n "$DAEMON_PID" ] || return 125
    kill -"$sig" "$DAEMON_PID"
    ( sleep 15; kill -KILL "$DAEMON_PID" 2>/dev/null ) &
    wd=$!
    wait "$DAEMON_PID" 2>/dev/null; rc=$?   # (no "Killed" job notice)
    kill "$wd" 2>/dev/null; wait "$wd" 2>/dev/null
    DAEMON_PID=
    say "daemon stopped with SIG$sig: exit status $rc; queues: '$(rx cat /proc/net/netfilter/nfnetlink_queue | tr '\n' ';')'"
    return $rc
}

write_conntrackd_conf() {
    cat >/tmp/conntrackd-helper.conf <<EOF
General {
	HashSize 8192
	HashLimit 65535
	NetlinkBufferSize 2097152
	NetlinkBufferSizeMaxGrowth 8388608
	LockFile /run/lock/conntrackd-helper.lock
	UNIX {
		Path /run/conntrackd-helper.ctl
	}
	LogFile off
	Syslog off
	Systemd off
}
Helper {
	Type ftp inet tcp {
		QueueNum 0
		QueueLen 10240
		Policy ftp {
			ExpectMax 1
			ExpectTimeout 300
		}
	}
	Type ftp inet6 tcp {
		QueueNum 1
		QueueLen 10240
		Policy ftp {
			ExpectMax 1
			ExpectTimeout 300
		}
	}
}
EOF
}
