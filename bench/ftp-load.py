#!/usr/bin/python3
"""ftp-load.py — load generator for bench/ftp-bench-guest.sh (not a test).

  ftp-load.py server ADDR PORT
      Fake FTP control server: sends a "220" banner, then answers every line at once; "PASV" gets a valid
      "227 Entering Passive Mode (a,b,c,d,p1,p2)" for its own address with a port
      that changes on every reply (unique per connection, so two connections
      never announce the same port and the kernel never sees clashing
      expectations); anything else gets "200 ok".
  ftp-load.py client ADDR PORT CONNS COUNT CMD
      CONNS parallel control connections, each sends CMD COUNT times and waits
      for the reply line before the next one (ping-pong: every segment carries
      one short line, as on a real control connection). TCP_NODELAY on.
      Prints "sent N replies N seconds S".
  ftp-load.py idle ADDR PORT CONNS
      Opens CONNS connections, one NOOP each, prints "ready N", then keeps them
      open until stdin closes.
Single-threaded (selectors): the guest has 2 vCPUs shared with the daemon.
"""
import os
import resource
import selectors
import socket
import sys
import time


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def server(addr, port):
    raise_nofile()
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    ls = socket.socket(fam, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((addr, port))
    ls.listen(4096)
    ls.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(ls, selectors.EVENT_READ, None)
    nconn = 0
    while True:
        for key, _ in sel.select():
            if key.data is None:
                try:
                    s, _peer = ls.accept()
                except BlockingIOError:
                    continue
                s.setblocking(True)  # replies are tiny: send never blocks for long
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                own = s.getsockname()[0]
                # 50 connections x 900 ports from 20000: no two live connections
                # announce the same port (each keeps at most 1 expectation).
                st = {"buf": b"", "n": 0, "base": 20000 + (nconn % 50) * 900,
                      "addr": own.replace(".", ",").encode()}
                nconn += 1
                # a banner first, as real servers do: the helpers (like the
                # kernel's) only parse lines that start after a seen newline,
                # so a 227 as the very first server line would be ignored
                s.sendall(b"220 bench\r\n")
                sel.register(s, selectors.EVENT_READ, st)
                continue
            s, st = key.fileobj, key.data
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if not data:
                sel.unregister(s)
                s.close()
                continue
            st["buf"] += data
            out = []
            while b"\n" in st["buf"]:
                line, st["buf"] = st["buf"].split(b"\n", 1)
                if line.strip().upper() == b"PASV":
                    p = st["base"] + st["n"] % 900
                    st["n"] += 1
                    out.append(b"227 Entering Passive Mode (%s,%d,%d)\r\n"
                               % (st["addr"], p >> 8, p & 255))
                else:
                    out.append(b"200 ok\r\n")
            if out:
                try:
                    s.sendall(b"".join(out))
                except OSError:
                    pass


def connect_all(addr, port, conns):
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    socks = []
    for _ in range(conns):
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.settimeout(30)
        s.connect((addr, port))
        socks.append(s)
    for s in socks:  # the 220 banner
        buf = b""
        while not buf.endswith(b"\n"):
            d = s.recv(100)
            if not d:
                raise SystemExit("server closed the connection before its banner")
            buf += d
    return socks


def client(addr, port, conns, count, cmd):
    raise_nofile()
    socks = connect_all(addr, port, conns)
    line = cmd.encode() + b"\r\n"
    sel = selectors.DefaultSelector()
    state = {}
    t0 = time.monotonic()
    sent = replies = 0
    for s in socks:
        s.setblocking(False)
        s.send(line)
        sent += 1
        state[s] = [b"", 1]  # receive buffer, lines sent on this connection
        sel.register(s, selectors.EVENT_READ)
    live = len(socks)
    while live:
        events = sel.select(timeout=30)
        if not events:
            print("client: no reply for 30 s, giving up", file=sys.stderr)
            break
        for key, _ in events:
            s = key.fileobj
            st = state[s]
            data = s.recv(4096)
            if not data:
                print("client: server closed a connection", file=sys.stderr)
                sel.unregister(s)
                live -= 1
                continue
            st[0] += data
            n = st[0].count(b"\n")
            if not n:
                continue
            st[0] = st[0].rsplit(b"\n", 1)[1]
            replies += n
            if st[1] < count:
                s.send(line)
                st[1] += 1
                sent += 1
            else:
                sel.unregister(s)
                live -= 1
    dt = time.monotonic() - t0
    for s in socks:
        s.close()
    print("sent %d replies %d seconds %.3f" % (sent, replies, dt))
    return 0 if replies == sent == conns * count else 1


def idle(addr, port, conns):
    raise_nofile()
    socks = connect_all(addr, port, conns)
    for s in socks:
        s.sendall(b"NOOP\r\n")
    for s in socks:
        buf = b""
        while b"\n" not in buf:
            d = s.recv(100)
            if not d:
                break
            buf += d
    print("ready %d" % len(socks), flush=True)
    sys.stdin.read()  # hold until the caller closes our stdin
    for s in socks:
        s.close()
    return 0


def main(argv):
    if len(argv) >= 4 and argv[1] == "server":
        return server(argv[2], int(argv[3]))
    if len(argv) == 7 and argv[1] == "client":
        return client(argv[2], int(argv[3]), int(argv[4]), int(argv[5]), argv[6])
    if len(argv) == 5 and argv[1] == "idle":
        return idle(argv[2], int(argv[3]), int(argv[4]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
