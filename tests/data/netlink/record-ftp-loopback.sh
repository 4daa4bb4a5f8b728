#!/bin/bash
echo "install nf_conntrack_ftp /bin/false" > /etc/modprobe.d/noftp.conf
for m in nf_conntrack nf_conntrack_netlink nfnetlink_cthelper nfnetlink_queue nft_ct; do modprobe $m; done
sysctl -qw net.netfilter.nf_conntrack_helper=0
B=/work/main/target/debug/cthelperd
mkdir -p /srv/ftp; echo hello > /srv/ftp/f.txt
$B -v --record-queue /tmp/smoke/queue-ftp.bin > /tmp/smoke/d.log 2>&1 &
P=$!
sleep 1
nft -f - <<'NFT'
table inet h {
  ct helper ftp-std { type "ftp" protocol tcp; l3proto inet; }
  chain out { type filter hook output priority filter; tcp dport 21 ct helper set "ftp-std"; }
}
NFT
echo "nft rc $?"
/usr/bin/python3 -m pyftpdlib -i :: -p 21 -d /srv/ftp >/tmp/smoke/ftpd.log 2>&1 &
sleep 3
curl -sS --max-time 10 --disable-epsv ftp://127.0.0.1/f.txt; echo "pasv rc $?"
curl -sS --max-time 10 ftp://127.0.0.1/f.txt; echo "epsv rc $?"
curl -sS --max-time 10 -P 127.0.0.1 --disable-eprt ftp://127.0.0.1/f.txt; echo "port rc $?"
curl -sS --max-time 10 -g ftp://[::1]/f.txt; echo "epsv6 rc $?"
curl -sS --max-time 10 -g -P ::1 ftp://[::1]/f.txt; echo "eprt6 rc $?"
conntrack -L expect 2>&1 | tail -3
kill -USR1 $P; sleep 0.5
kill -TERM $P; wait $P; echo "daemon exit $?"
cat /tmp/smoke/d.log
