#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""ftp-load.py — load generator for bench/ftp-bench-guest.sh (not a test).

  ftp-load.py server ADDR PORT
      Fake FTP control server: sends a "220" banner, then answers every line at once; "PASV" gets a valid
      "227 Entering Passive Mode (a,b,c,d,p1,p2)" for its own address with a port
      that changes on every reply (unique per connection, so two connections
      never announce the same port and the kernel never sees clashing
      expectations); anything else gets "200 ok".
      A connection that has sent "TYPE I" (as real clients do before a
      transfer) is a real session: its "PASV" listens on a fresh port of the
      server's address BEFORE announcing it, "RETR N" answers "150", accepts
      the data connection there, sends N bytes on it, closes it and answers
      "226"; "QUIT" answers "221" and closes.
      "BULK N" answers "150", then reads N raw bytes and discards them, then
      answers "226" (one-way bulk transfer on the control connection).
  ftp-load.py client ADDR PORT CONNS COUNT CMD
      CONNS parallel control connections, each sends CMD COUNT times and waits
      for the reply line before the next one (ping-pong: every segment carries
      one short line, as on a real control connection). TCP_NODELAY on.
      Prints "sent N replies N seconds S".
  ftp-load.py idle ADDR PORT CONNS
      Opens CONNS connections, one NOOP each, prints "ready N", then keeps them
      open until stdin closes.
  ftp-load.py latency ADDR PORT COUNT [BLOCKS]
      One control connection, 50 untimed NOOP round trips, then BLOCKS (1)
      blocks of COUNT more one after the other, each timed. Prints the block
      with the lowest mean: "rounds N mean_us M median_us D p90_us P min_us L
      seconds S ... warmup 50 blocks B block_means_us M1,M2,...".
  (latency, bulk and sessions also print "vm_busy_s B vm_util U": the CPU time
  the whole machine was busy during the timed part, from /proc/stat, and the
  share of all CPUs that is)
  ftp-load.py bulk ADDR PORT BYTES
      One control connection: "BULK BYTES", then BYTES of text lines (62 "x"
      and CRLF each) as fast as TCP takes them, then waits for the "226".
      Prints "bytes N seconds S MBps R" (timed from the first byte to the 226;
      MB = 10^6 bytes).
  ftp-load.py sessions ADDR PORT SESSIONS PARALLEL SIZE
      SESSIONS complete FTP sessions, PARALLEL at a time (threads): connect,
      banner, TYPE I, PASV, connect the data connection to the announced
      address and port, RETR SIZE, read SIZE bytes to the end, 150 + 226,
      QUIT, 221. Prints "sessions N ok K failed F seconds S"; the first
      failure goes to stderr.
  ftp-load.py recover ADDR PORT SECS
      One real session (banner, TYPE I, one PASV + RETR 1024 that must work),
      then prints "ready" and waits for a line on stdin (the caller kills and
      restarts the daemon meanwhile). Then PASV + data connection (0.1 s to
      connect) until one connects, at most SECS seconds; that transfer runs to
      its 226. Prints "at T attempts N" (T: time.time() when the data
      connection was established) or "failed attempts N".
Single-threaded (selectors): the guest has 2 vCPUs shared with the daemon.
"""
import os
import resource
import selectors
import socket
import sys
import time


def vm_ticks():
    """(busy, total) clock ticks of the whole machine (/proc/stat "cpu" line;
    busy = all but idle and iowait)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4], sum(v)


def vm_cpu(t0):
    """ "vm_busy_s B vm_util U" since vm_ticks() returned t0: the CPU the whole
    machine spent in the timed part only (not in starting Python)."""
    t1 = vm_ticks()
    busy, total = t1[0] - t0[0], t1[1] - t0[1]
    return "vm_busy_s %.2f vm_util %.2f" % (busy / os.sysconf("SC_CLK_TCK"), busy / total if total else 0)


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
                      "addr": own.replace(".", ",").encode(), "own": own,
                      "real": False, "data": None, "bulk": 0}
                nconn += 1
                # a banner first, as real servers do: the helpers (like the
                # kernel's) only parse lines that start after a seen newline,
                # so a 227 as the very first server line would be ignored
                s.sendall(b"220 bench\r\n")
                sel.register(s, selectors.EVENT_READ, st)
                continue
            s, st = key.fileobj, key.data
            try:
                data = s.recv(65536 if st["bulk"] else 4096)
            except OSError:
                data = b""
            if not data:
                drop(sel, s, st)
                continue
            out = []
            if st["bulk"]:
                take = min(len(data), st["bulk"])
                st["bulk"] -= take
                data = data[take:]
                if not st["bulk"]:
                    out.append(b"226 received\r\n")
            st["buf"] += data
            close = False
            while b"\n" in st["buf"] and not st["bulk"] and not close:
                line, st["buf"] = st["buf"].split(b"\n", 1)
                words = line.strip().split(None, 1)
                verb = words[0].upper() if words else b""
                arg = words[1] if len(words) > 1 else b""
                if verb == b"PASV" and st["real"]:
                    if st["data"] is not None:
                        st["data"].close()
                    ds = socket.socket(fam, socket.SOCK_STREAM)
                    ds.bind((st["own"], 0))
                    ds.listen(1)
                    st["data"] = ds
                    p = ds.getsockname()[1]
                    out.append(b"227 Entering Passive Mode (%s,%d,%d)\r\n"
                               % (st["addr"], p >> 8, p & 255))
                elif verb == b"PASV":
                    p = st["base"] + st["n"] % 900
                    st["n"] += 1
                    out.append(b"227 Entering Passive Mode (%s,%d,%d)\r\n"
                               % (st["addr"], p >> 8, p & 255))
                elif verb == b"TYPE":
                    st["real"] = True
                    out.append(b"200 binary\r\n")
                elif verb == b"RETR" and st["data"] is not None:
                    out.append(b"150 sending\r\n")
                    send(s, out)
                    out = [retr(st, int(arg or b"1024"))]
                elif verb == b"RETR":
                    out.append(b"425 use PASV first\r\n")
                elif verb == b"BULK":
                    st["bulk"] = int(arg)
                    out.append(b"150 send %d bytes\r\n" % st["bulk"])
                    # bytes that came with the command line are the first of the bulk
                    take = min(len(st["buf"]), st["bulk"])
                    st["bulk"] -= take
                    st["buf"] = st["buf"][take:]
                    if not st["bulk"]:
                        out.append(b"226 received\r\n")
                elif verb == b"QUIT":
                    out.append(b"221 bye\r\n")
                    close = True
                else:
                    out.append(b"200 ok\r\n")
            send(s, out)
            if close:
                drop(sel, s, st)


def send(s, out):
    if out:
        try:
            s.sendall(b"".join(out))
        except OSError:
            pass
        del out[:]


def drop(sel, s, st):
    sel.unregister(s)
    s.close()
    if st["data"] is not None:
        st["data"].close()
        st["data"] = None


def retr(st, size):
    """The data connection of a real session: the client connected before it
    sent RETR, so accept() finds it at once (or within the timeout)."""
    ds, st["data"] = st["data"], None
    ds.settimeout(10)
    try:
        d, _peer = ds.accept()
    except OSError:
        return b"425 no data connection\r\n"
    finally:
        ds.close()
    try:
        d.settimeout(10)
        d.sendall(b"x" * size)
        d.close()
    except OSError:
        return b"426 transfer aborted\r\n"
    return b"226 done\r\n"


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


def read_line(s, buf):
    """One reply line from s; buf is a one-element list holding what was read
    beyond it."""
    while b"\n" not in buf[0]:
        d = s.recv(4096)
        if not d:
            raise OSError("server closed the connection")
        buf[0] += d
    line, buf[0] = buf[0].split(b"\n", 1)
    return line


def latency(addr, port, count, blocks=1):
    s = connect_all(addr, port, 1)[0]
    buf = [b""]
    warmup = 50   # untimed: the first round trips fault pages in along the path
    for _ in range(warmup):
        s.sendall(b"NOOP\r\n")
        read_line(s, buf)
    runs = []
    for _ in range(blocks):
        times = []
        v0 = vm_ticks()
        t0 = time.monotonic()
        for _ in range(count):
            t = time.perf_counter_ns()
            s.sendall(b"NOOP\r\n")
            read_line(s, buf)
            times.append(time.perf_counter_ns() - t)
        dt = time.monotonic() - t0
        runs.append((sum(times) / len(times) / 1000, sorted(times), dt, vm_cpu(v0)))
    s.close()
    # the block with the lowest mean: load elsewhere on the host only ever
    # lengthens round trips
    mean, times, dt, vm = min(runs, key=lambda r: r[0])
    us = [t / 1000 for t in times]
    print("rounds %d mean_us %.1f median_us %.1f p90_us %.1f min_us %.1f seconds %.3f %s warmup %d blocks %d block_means_us %s"
          % (len(us), mean, us[len(us) // 2], us[len(us) * 9 // 10], us[0], dt, vm, warmup, blocks,
             ",".join("%.0f" % r[0] for r in runs)))
    return 0


def expect(s, buf, code):
    line = read_line(s, buf)
    if not line.startswith(code):
        raise OSError("expected %s, got %r" % (code.decode(), line[:80]))
    return line


def bulk(addr, port, nbytes):
    s = connect_all(addr, port, 1)[0]
    s.settimeout(300)
    buf = [b""]
    s.sendall(b"BULK %d\r\n" % nbytes)
    expect(s, buf, b"150")
    chunk = (b"x" * 62 + b"\r\n") * 1024   # 64 KiB of 64-byte text lines
    view = memoryview(chunk)
    v0 = vm_ticks()
    t0 = time.monotonic()
    left = nbytes
    while left:
        n = min(left, len(chunk))
        s.sendall(view[:n])
        left -= n
    expect(s, buf, b"226")
    dt = time.monotonic() - t0
    vm = vm_cpu(v0)
    s.close()
    print("bytes %d seconds %.3f MBps %.2f %s" % (nbytes, dt, nbytes / 1e6 / dt, vm))
    return 0


def pasv_transfer(c, buf, fam, connect_timeout, size=1024, step=None):
    """PASV, then the data connection to the announced port within
    connect_timeout s (OSError if its SYN is dropped: no expectation), then RETR
    SIZE to the 226. Returns time.time() when the data connection was up. The
    step under way is kept in step[0] for the caller's error message."""
    step = step if step is not None else [""]
    step[0] = "PASV"
    c.sendall(b"PASV\r\n")
    line = expect(c, buf, b"227")
    nums = line[line.index(b"(") + 1:line.index(b")")].split(b",")
    host = ".".join(n.decode() for n in nums[:4])
    dport = int(nums[4]) * 256 + int(nums[5])
    d = socket.socket(fam, socket.SOCK_STREAM)
    try:
        step[0] = "data connection to port %d" % dport
        d.settimeout(connect_timeout)
        d.connect((host, dport))
        up = time.time()
        d.settimeout(10)
        step[0] = "RETR"
        c.sendall(b"RETR %d\r\n" % size)
        expect(c, buf, b"150")
        step[0] = "data"
        got = 0
        while True:
            x = d.recv(65536)
            if not x:
                break
            got += len(x)
    finally:
        d.close()
    step[0] = "226"
    expect(c, buf, b"226")
    if got != size:
        raise OSError("data connection carried %d bytes, not %d" % (got, size))
    return up


def one_session(addr, port, size):
    """One complete session; raises OSError naming the step that failed. A data
    connection that cannot be opened within 5 s (its SYN dropped: no
    expectation) fails the session; TCP retries its SYN after 1 and 3 s."""
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    c = socket.socket(fam, socket.SOCK_STREAM)
    step = ["connect"]
    try:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.settimeout(10)
        c.connect((addr, port))
        buf = [b""]
        step[0] = "banner"
        expect(c, buf, b"220")
        step[0] = "TYPE I"
        c.sendall(b"TYPE I\r\n")
        expect(c, buf, b"200")
        pasv_transfer(c, buf, fam, 5, size, step)
        step[0] = "QUIT"
        c.sendall(b"QUIT\r\n")
        expect(c, buf, b"221")
    except OSError as e:
        raise OSError("%s: %s" % (step[0], e)) from e
    finally:
        c.close()


def sessions(addr, port, total, parallel, size):
    import threading
    lock = threading.Lock()
    res = {"next": 0, "ok": 0, "failed": 0, "first": None}

    def worker():
        while True:
            with lock:
                if res["next"] >= total:
                    return
                res["next"] += 1
            try:
                one_session(addr, port, size)
                ok = True
            except Exception as e:  # noqa: BLE001 (any failure is a failed session)
                ok = False
                err = e
            with lock:
                if ok:
                    res["ok"] += 1
                else:
                    res["failed"] += 1
                    if res["first"] is None:
                        res["first"] = err

    raise_nofile()
    threads = [threading.Thread(target=worker) for _ in range(parallel)]
    v0 = vm_ticks()
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    dt = time.monotonic() - t0
    vm = vm_cpu(v0)
    if res["first"] is not None:
        print("sessions: first failure: %s" % res["first"], file=sys.stderr)
    print("sessions %d ok %d failed %d seconds %.3f %s" % (total, res["ok"], res["failed"], dt, vm))
    return 0 if res["ok"] == total else 1


def recover(addr, port, secs):
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    c = socket.create_connection((addr, port), timeout=10)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = [b""]
    expect(c, buf, b"220")
    c.sendall(b"TYPE I\r\n")
    expect(c, buf, b"200")
    pasv_transfer(c, buf, fam, 5)
    print("ready", flush=True)
    sys.stdin.readline()
    t0 = time.monotonic()
    limit = t0 + secs
    tries = 0
    while time.monotonic() < limit:
        tries += 1
        start = time.monotonic()
        try:
            up = pasv_transfer(c, buf, fam, 0.1)
        except socket.timeout:
            # the timeline of each try, for the caller's log
            print("try %d from %.0f ms: no data connection (%.0f ms)"
                  % (tries, (start - t0) * 1000, (time.monotonic() - start) * 1000), file=sys.stderr, flush=True)
            continue
        print("try %d from %.0f ms: data connection after %.0f ms"
              % (tries, (start - t0) * 1000, (up - time.time() + time.monotonic() - start) * 1000),
              file=sys.stderr, flush=True)
        print("at %.6f attempts %d" % (up, tries), flush=True)
        c.close()
        return 0
    print("failed attempts %d" % tries, flush=True)
    return 1


def main(argv):
    if len(argv) >= 4 and argv[1] == "server":
        return server(argv[2], int(argv[3]))
    if len(argv) == 7 and argv[1] == "client":
        return client(argv[2], int(argv[3]), int(argv[4]), int(argv[5]), argv[6])
    if len(argv) == 5 and argv[1] == "idle":
        return idle(argv[2], int(argv[3]), int(argv[4]))
    if len(argv) in (5, 6) and argv[1] == "latency":
        return latency(argv[2], int(argv[3]), int(argv[4]), int(argv[5]) if len(argv) == 6 else 1)
    if len(argv) == 5 and argv[1] == "bulk":
        return bulk(argv[2], int(argv[3]), int(argv[4]))
    if len(argv) == 7 and argv[1] == "sessions":
        return sessions(argv[2], int(argv[3]), int(argv[4]), int(argv[5]), int(argv[6]))
    if len(argv) == 5 and argv[1] == "recover":
        return recover(argv[2], int(argv[3]), float(argv[4]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
