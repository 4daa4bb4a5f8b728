#!/bin/bash
# demo.sh — shows cthelperd doing its job.
#
# On a router whose kernel has CONFIG_NF_CT_NETLINK_HELPER and
# CONFIG_NETFILTER_NETLINK_GLUE_CT you would simply run `cthelperd`. This
# development machine's kernel lacks both, so the demo builds the daemon and
# runs the FTP scenario in a VM booted with Debian's 6.1 kernel: a client, a
# firewalled router running cthelperd and an FTP server, each in its own
# network namespace; passive and active transfers over IPv4 and IPv6 that
# only work because cthelperd creates the expectations.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
cargo build --release
rc=0
CTHELPERD="$PWD/target/release/cthelperd" tests/kernel/run.sh ftp || rc=$?
log=tests/kernel/results/ftp/daemon.log
if [ -f "$log" ]; then
    echo "--- what cthelperd logged in the router (tests/kernel/results/ftp/daemon.log):"
    cat "$log"
fi
exit $rc
