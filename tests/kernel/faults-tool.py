#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""faults-tool.py — the traffic of tests/kernel/faults.sh (issue #17). Only
Python's standard library; single-threaded (the guest has 2 vCPUs shared with
the daemon and the kernel).

Servers (server namespace):

  faults-tool.py server SPEC...
      SPEC = ADDR:PORT[:quiet]. A scripted FTP-like server on each: it greets
      with "220 faults", then answers each line at once:
        PASV         "227 Entering Passive Mode (own address, port)" with a new
                     port on every reply (nobody listens there: an announcement
                     only; ports 20000 + 1000 * (connection % 40) + n)
        SAY HEX      the bytes HEX (hex-encoded) as they are, in one segment: a
                     hostile server reply chosen by the client
        BULK N       "150", then N raw bytes read and discarded, then "226"
        QUIT         "221" and close;  USER 331, PASS 230, NOOP/TYPE 200,
                     anything else "500 ?" (empty lines: nothing)
      ":quiet" sends nothing at all (a sink, e.g. for TCP 5060). Runs until
      killed; thousands of connections (nofile raised to the hard limit).

Clients (client namespace), driven line by line from stdin: each prints
"0 ok ..." (or "0 err ...") once set up, then answers command n with exactly
one line "n ok ..." or "n err ...":

  faults-tool.py probe HOST FILE SIZE
      One long-lived ftplib control session to a real FTP server (pyftpdlib).
        recover SECS   passive transfers of FILE (SIZE bytes) until one works:
                       PASV, connect to the announced port with a 0.1 s timeout
                       (a connection the firewall drops is given up at once),
                       RETR, read, 226. "ok ms=M attempts=A at=T done=D": M =
                       milliseconds from reading the command to the end of the
                       working one; T = when its data connection was
                       established, D = its end (Unix time). Failed attempts
                       are logged on stderr
        once SECS      one such attempt with a SECS connect timeout
        noop           NOOP; "ok ms=M"
  faults-tool.py idle ADDR PORT CONNS [WINDOW [SECS]]
      Opens CONNS connections (WINDOW, 256, connecting at a time), waits for
      each one's banner, one NOOP each, for at most SECS (300) seconds; "0 ok
      ready N failed F of CONNS seconds S" and how many failed why.
        ping SECS      a NOOP on every connection; "ok replies K of N seconds S"
  faults-tool.py burst ADDR PORT
        pasv COUNT     COUNT PASVs one after the other, each reply awaited (one
                       announcement per segment); "ok ports P1..Pn seconds S"
  faults-tool.py bulk ADDR PORT CONNS
        send BYTES SECS  "BULK BYTES" and then BYTES of text lines on every
                       connection at once (non-blocking), until every one got
                       its "226" or SECS passed; "ok bytes B seconds S"
        flow SECS      text lines on every connection for SECS seconds (after
                       "BULK" with a size it never reaches), then close them
                       all (the tool has no connections left); "ok bytes B"
  faults-tool.py trickle ADDR PORT
        segs N GAP     N segments "NOOP" (TCP_NODELAY), GAP seconds apart,
                       without waiting for replies; "ok sent N"
  (all: "quit" or the end of stdin closes the connections and exits)

One-shot (client namespace):

  faults-tool.py hostile ADDR PORT STEP...
      For each STEP one connection to ADDR:PORT (a "server" above), the hostile
      input STEP (see _steps below; "faults-tool.py steps" lists them) sent
      segment by segment (TCP_NODELAY, 0.2 s apart);
      prints what it sent and what came back. FTP steps start with a NOOP
      exchange, so that the first hostile segment starts at a line start the
      helper recorded; SIP steps send their first segment at once.
"""
import ftplib
import os
import resource
import selectors
import socket
import sys
import time


def raise_nofile():
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def fam(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def out(n, ok, detail):
    print("%d %s %s" % (n, "ok" if ok else "err", detail), flush=True)


# ---------------------------------------------------------------- server
def server(specs):
    raise_nofile()
    sel = selectors.DefaultSelector()
    for spec in specs:
        parts = spec.rsplit(":", 2) if spec.endswith(":quiet") else spec.rsplit(":", 1)
        addr, port = parts[0], int(parts[1])
        quiet = spec.endswith(":quiet")
        ls = socket.socket(fam(addr), socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((addr, port))
        ls.listen(4096)
        ls.setblocking(False)
        sel.register(ls, selectors.EVENT_READ, ("listen", quiet))
    nconn = 0
    while True:
        for key, _ in sel.select():
            kind = key.data
            if kind[0] == "listen":
                try:
                    s, _peer = key.fileobj.accept()
                except BlockingIOError:
                    continue
                s.setblocking(True)  # replies are a line: sending never blocks for long
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                own = s.getsockname()[0]
                st = {"buf": b"", "n": 0, "base": 20000 + (nconn % 40) * 1000,
                      "own": own, "bulk": 0, "quiet": kind[1]}
                nconn += 1
                if not st["quiet"]:
                    send(s, b"220 faults\r\n")
                sel.register(s, selectors.EVENT_READ, ("conn", st))
                continue
            s, st = key.fileobj, kind[1]
            try:
                data = s.recv(262144)
            except OSError:
                data = b""
            if not data:
                sel.unregister(s)
                s.close()
                continue
            if st["quiet"]:
                continue
            if st["bulk"]:
                take = min(len(data), st["bulk"])
                st["bulk"] -= take
                data = data[take:]
                if not st["bulk"]:
                    send(s, b"226 received\r\n")
            st["buf"] += data
            while b"\n" in st["buf"] and not st["bulk"]:
                line, st["buf"] = st["buf"].split(b"\n", 1)
                if not answer(s, st, line.strip()):
                    sel.unregister(s)
                    s.close()
                    break


def answer(s, st, line):
    """Answer one command line; False: close the connection."""
    words = line.split(None, 1)
    if not words:
        return True
    verb = words[0].upper()
    arg = words[1] if len(words) > 1 else b""
    if verb == b"PASV":
        p = st["base"] + st["n"] % 1000
        st["n"] += 1
        host = st["own"].replace(".", ",").encode()
        send(s, b"227 Entering Passive Mode (%s,%d,%d)\r\n" % (host, p >> 8, p & 255))
    elif verb == b"SAY":
        try:
            send(s, bytes.fromhex(arg.decode()))
        except ValueError:
            send(s, b"501 bad hex\r\n")
    elif verb == b"BULK":
        st["bulk"] = int(arg)
        send(s, b"150 send %d bytes\r\n" % st["bulk"])
        take = min(len(st["buf"]), st["bulk"])  # bytes that came with the command
        st["bulk"] -= take
        st["buf"] = st["buf"][take:]
        if not st["bulk"]:
            send(s, b"226 received\r\n")
    elif verb == b"QUIT":
        send(s, b"221 bye\r\n")
        return False
    elif verb == b"USER":
        send(s, b"331 any password\r\n")
    elif verb == b"PASS":
        send(s, b"230 in\r\n")
    elif verb in (b"NOOP", b"TYPE"):
        send(s, b"200 ok\r\n")
    else:
        send(s, b"500 ?\r\n")
    return True


def send(s, data):
    try:
        s.sendall(data)
    except OSError:
        pass


# ---------------------------------------------------------------- driven clients
def commands():
    """(n, words) for each non-empty stdin line, n = 1, 2, ..."""
    n = 0
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        n += 1
        if words[0] == "quit":
            out(n, True, "bye")
            return
        yield n, words


def read_line(s, buf):
    """One line from s; buf = [bytes read beyond it]."""
    while b"\n" not in buf[0]:
        d = s.recv(4096)
        if not d:
            raise OSError("connection closed by the server")
        buf[0] += d
    line, buf[0] = buf[0].split(b"\n", 1)
    return line


def probe(host, path, size):
    f = ftplib.FTP(timeout=30)
    try:
        f.connect(host, 21)
        f.login()
        f.voidcmd("TYPE I")
    except Exception as e:  # noqa: BLE001 - report anything
        out(0, False, "connect/login: %r" % e)
        return 1
    out(0, True, "connected %s -> %s" % (f.sock.getsockname()[:2], f.sock.getpeername()[:2]))

    def attempt(timeout):
        """One passive transfer; raises on failure. Returns when (Unix time) its
        data connection was established."""
        host_, port = f.makepasv()
        d = socket.create_connection((host_, port), timeout=timeout)
        connected = time.time()
        try:
            d.settimeout(10)
            f.sendcmd("RETR " + path)
            got = 0
            while True:
                b = d.recv(65536)
                if not b:
                    break
                got += len(b)
        finally:
            d.close()
        f.voidresp()
        if got != size:
            raise OSError("got %d bytes, not %d" % (got, size))
        return connected

    for n, words in commands():
        t0 = time.monotonic()
        cmd = words[0]
        try:
            if cmd == "recover":
                limit = t0 + float(words[1])
                tries = 0
                last = None
                connected = 0
                while time.monotonic() < limit:
                    tries += 1
                    try:
                        connected = attempt(0.1)
                        last = None
                        break
                    except (OSError, ftplib.Error) as e:
                        last = e
                        print("%s attempt %d failed after %d ms: %r"
                              % (words[0], tries, (time.monotonic() - t0) * 1000, e), file=sys.stderr, flush=True)
                if last is None:
                    out(n, True, "ms=%d attempts=%d at=%.6f done=%.6f"
                        % ((time.monotonic() - t0) * 1000, tries, connected, time.time()))
                else:
                    out(n, False, "no transfer in %s s, %d attempts, last: %r" % (words[1], tries, last))
            elif cmd == "once":
                attempt(float(words[1]))
                out(n, True, "ms=%d" % ((time.monotonic() - t0) * 1000))
            elif cmd == "noop":
                r = f.sendcmd("NOOP")
                out(n, True, "ms=%d %s" % ((time.monotonic() - t0) * 1000, r))
            else:
                out(n, False, "unknown command %s" % cmd)
        except Exception as e:  # noqa: BLE001 - report anything, keep the session
            out(n, False, "%s: %r after %d ms" % (cmd, e, (time.monotonic() - t0) * 1000))
    try:
        f.quit()
    except Exception:  # noqa: BLE001
        pass
    return 0


def idle(addr, port, conns, window=256, deadline=300):
    raise_nofile()
    t0 = time.monotonic()
    sel = selectors.DefaultSelector()
    state = {}  # socket -> [phase, buffer]; phase 0 connecting, 1 banner, 2 noop reply, 3 idle
    started = ready = failed = 0

    def start_more():
        nonlocal started
        while started < conns and started - ready - failed < window:
            s = socket.socket(fam(addr), socket.SOCK_STREAM)
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.connect_ex((addr, port))
            state[s] = [0, b""]
            sel.register(s, selectors.EVENT_WRITE)
            started += 1

    errors = {}

    def fail(s, why):
        nonlocal failed
        failed += 1
        errors[why] = errors.get(why, 0) + 1
        sel.unregister(s)
        s.close()
        del state[s]

    start_more()
    deadline += time.monotonic()
    while ready + failed < conns and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=5):
            s = key.fileobj
            st = state[s]
            if st[0] == 0:
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    fail(s, "connect: " + os.strerror(err))
                    continue
                st[0] = 1
                sel.modify(s, selectors.EVENT_READ)
                continue
            try:
                d = s.recv(4096)
            except OSError as e:
                fail(s, "phase %d: %s" % (st[0], e.strerror))
                continue
            if not d:
                fail(s, "phase %d: closed by the server" % st[0])
                continue
            st[1] += d
            if b"\n" not in st[1]:
                continue
            st[1] = st[1].rsplit(b"\n", 1)[1]
            if st[0] == 1:
                s.send(b"NOOP\r\n")
                st[0] = 2
            elif st[0] == 2:
                st[0] = 3
                sel.unregister(s)
                ready += 1
        start_more()
    socks = [s for s, st in state.items() if st[0] == 3]
    stuck = {}
    for st in state.values():
        if st[0] != 3:
            stuck[st[0]] = stuck.get(st[0], 0) + 1
    for phase, k in stuck.items():
        errors["phase %d: no answer" % phase] = k
    out(0, ready == conns, "ready %d failed %d of %d seconds %.1f%s"
        % (ready, conns - ready, conns, time.monotonic() - t0,
           "".join("; %s: %d" % (why, k) for why, k in sorted(errors.items()))))
    for n, words in commands():
        if words[0] != "ping":
            out(n, False, "unknown command %s" % words[0])
            continue
        t0 = time.monotonic()
        limit = t0 + float(words[1])
        pending = {}
        for s in socks:
            try:
                s.send(b"NOOP\r\n")
                sel.register(s, selectors.EVENT_READ)
                pending[s] = b""
            except OSError:
                pass
        replies = 0
        while pending and time.monotonic() < limit:
            for key, _ in sel.select(timeout=1):
                s = key.fileobj
                try:
                    d = s.recv(4096)
                except OSError:
                    d = b""
                pending[s] += d
                if not d or b"\n" in pending[s]:
                    if d:
                        replies += 1
                    sel.unregister(s)
                    del pending[s]
        for s in pending:
            sel.unregister(s)
        out(n, replies == len(socks), "replies %d of %d seconds %.1f"
            % (replies, len(socks), time.monotonic() - t0))
    for s in socks:
        s.close()
    return 0


def connect(addr, port, banner=True):
    s = socket.create_connection((addr, port), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = [b""]
    if banner:
        read_line(s, buf)
    return s, buf


def burst(addr, port):
    try:
        s, buf = connect(addr, port)
    except OSError as e:
        out(0, False, "connect: %r" % e)
        return 1
    out(0, True, "connected %s -> %s" % (s.getsockname()[:2], s.getpeername()[:2]))
    for n, words in commands():
        t0 = time.monotonic()
        try:
            ports = []
            for _ in range(int(words[1])):
                s.sendall(b"PASV\r\n")
                line = read_line(s, buf)
                nums = line[line.index(b"(") + 1:line.index(b")")].split(b",")
                ports.append(int(nums[4]) * 256 + int(nums[5]))
            out(n, True, "ports %d..%d count %d seconds %.2f"
                % (ports[0], ports[-1], len(ports), time.monotonic() - t0))
        except (OSError, ValueError, IndexError) as e:
            out(n, False, "%r" % e)
    s.close()
    return 0


def bulk(addr, port, conns):
    raise_nofile()
    try:
        socks = [connect(addr, port) for _ in range(conns)]
    except OSError as e:
        out(0, False, "connect: %r" % e)
        return 1
    out(0, True, "%d connections" % conns)
    chunk = (b"x" * 62 + b"\r\n") * 4096  # 256 KiB of 64-byte text lines
    for n, words in commands():
        if words[0] == "flow":
            out(n, True, "bytes %d" % flow(socks, chunk, float(words[1])))
            socks = []
            continue
        nbytes, secs = int(words[1]), float(words[2])
        t0 = time.monotonic()
        limit = t0 + secs
        sel = selectors.DefaultSelector()
        left = {}
        for s, buf in socks:
            s.setblocking(True)
            s.sendall(b"BULK %d\r\n" % nbytes)
            s.setblocking(False)
            left[s] = [nbytes, buf, 0]  # bytes to send, reply buffer, replies seen
            sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
        sent = 0
        done = 0
        while done < conns and time.monotonic() < limit:
            for key, ev in sel.select(timeout=1):
                s = key.fileobj
                st = left[s]
                if ev & selectors.EVENT_WRITE and st[0]:
                    try:
                        k = s.send(memoryview(chunk)[:min(st[0], len(chunk))])
                        st[0] -= k
                        sent += k
                    except BlockingIOError:
                        pass
                    if not st[0]:
                        sel.modify(s, selectors.EVENT_READ)
                if ev & selectors.EVENT_READ:
                    try:
                        d = s.recv(4096)
                    except BlockingIOError:
                        continue
                    st[1][0] += d
                    # "150 ..." then "226 ...": done at the second line
                    st[2] += d.count(b"\n")
                    if st[2] >= 2 or not d:
                        st[1][0] = b""
                        sel.unregister(s)
                        done += 1
        sel.close()
        dt = time.monotonic() - t0
        out(n, done == conns, "bytes %d of %d seconds %.2f 226 from %d of %d"
            % (sent, nbytes * conns, dt, done, conns))
    for s, _ in socks:
        s.close()
    return 0


def flow(socks, chunk, secs):
    """Send on every connection for secs seconds, then close them; bytes sent."""
    sel = selectors.DefaultSelector()
    for s, _buf in socks:
        s.setblocking(True)
        s.sendall(b"BULK %d\r\n" % (1 << 50))
        s.setblocking(False)
        sel.register(s, selectors.EVENT_WRITE)
    sent = 0
    limit = time.monotonic() + secs
    while time.monotonic() < limit:
        for key, _ in sel.select(timeout=0.2):
            try:
                sent += key.fileobj.send(chunk)
            except BlockingIOError:
                pass
    sel.close()
    for s, _buf in socks:
        s.close()
    return sent


def trickle(addr, port):
    try:
        s, _buf = connect(addr, port)
    except OSError as e:
        out(0, False, "connect: %r" % e)
        return 1
    out(0, True, "connected %s -> %s" % (s.getsockname()[:2], s.getpeername()[:2]))
    s.setblocking(False)
    for n, words in commands():
        count, gap = int(words[1]), float(words[2])
        for _ in range(count):
            s.send(b"NOOP\r\n")
            time.sleep(gap)
            try:
                while s.recv(4096):
                    pass
            except BlockingIOError:
                pass
        out(n, True, "sent %d" % count)
    s.close()
    return 0


# ---------------------------------------------------------------- hostile input
C4, C4_OTHER, F4 = "192.0.2.2", "192.0.2.3", "198.51.100.3"


def port_cmd(addr, port):
    return ("PORT %s,%d,%d\r\n" % (addr.replace(".", ","), port >> 8, port & 255)).encode()


def pasv_reply(addr, port):
    return ("227 Entering Passive Mode (%s,%d,%d)\r\n"
            % (addr.replace(".", ","), port >> 8, port & 255)).encode()


def say(data):
    return b"SAY " + data.hex().encode() + b"\r\n"


def invite(c_addr, aport, call):
    sdp = ("v=0\r\no=- 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\n"
           "m=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n" % (C4, c_addr, aport))
    return ("INVITE sip:bob@%s SIP/2.0\r\n"
            "Via: SIP/2.0/TCP %s:5060;branch=z9hG4bK-%s\r\n"
            "Max-Forwards: 70\r\n"
            "From: <sip:alice@%s>;tag=%s\r\n"
            "To: <sip:bob@%s>\r\n"
            "Call-ID: %s@faults\r\n"
            "CSeq: 1 INVITE\r\n"
            "Contact: <sip:alice@%s:5060;transport=tcp>\r\n"
            "Content-Type: application/sdp\r\n"
            "Content-Length: %d\r\n\r\n%s"
            % (F4, C4, call, C4, call, F4, call, C4, len(sdp), sdp)).encode()


def http_head(length):
    return ("POST /upload HTTP/1.1\r\nHost: %s\r\nContent-Type: text/plain\r\n"
            "Content-Length: %d\r\n\r\n" % (F4, length)).encode()


def _steps():
    inv = invite(C4, 2240, "http")
    head = http_head(len(inv))
    pad = b"a" * 1000
    return {
        # FTP, client direction (announced ports 2201..: grep-able in the expectation list)
        "post-inline": [http_head(24) + port_cmd(C4, 2201)],
        "post-split": [http_head(24) + b"PO", port_cmd(C4, 2202)[2:]],
        "post-padded": [http_head(1024) + pad, port_cmd(C4, 2203)],
        "post-aligned": [http_head(24), port_cmd(C4, 2204)],
        "port-third-party": [port_cmd(C4_OTHER, 2205)],
        "port-low": [port_cmd(C4, 23)],
        "port-overlong": [b"PORT 192,0,2,2," + b"0" * 1400, b"8,166\r\n"],
        "port-huge-number": [b"PORT 192,0,2,2,8,99999999999999999999\r\n"],
        "port-utf8": ["PORT １９２,０,２,２,８,１６７\r\n".encode()],
        "port-binary": [b"PORT \xff\xfe\x00192,0,2,2,8,168\r\n"],
        "port-truncated": [b"PORT 192,0,2,2,8,169"],
        # FTP, server direction: the scripted server sends what SAY names
        "227-third-party": [say(pasv_reply("203.0.113.5", 2210))],
        "227-other-server": [say(pasv_reply("198.51.100.2", 2211))],
        "227-utf8": [say("227 Entering Passive Mode (１９８,５１,１００,３,８,１７２)\r\n".encode())],
        "227-low-port": [say(pasv_reply(F4, 22))],
        # SIP over TCP 5060 (to a quiet sink)
        "sip-in-http": [head, inv[:200], inv[200:]],
        "sip-third-party": [invite(C4_OTHER, 2242, "third")],
        "sip-low-port": [invite(C4, 80, "low")],
    }


STEPS = _steps()


def hostile(addr, port, step):
    segs = STEPS[step]
    is_sip = step.startswith("sip-")
    s, buf = connect(addr, port, banner=not is_sip)
    got = []
    if not is_sip:
        s.sendall(b"NOOP\r\n")  # a line start the helper records, in both directions
        got.append(read_line(s, buf).strip())
    time.sleep(0.2)
    for seg in segs:
        s.send(seg)
        print("%s: sent %d bytes: %r" % (step, len(seg), seg[:70] + (b"..." if len(seg) > 70 else b"")),
              flush=True)
        time.sleep(0.2)
    s.settimeout(0.3)
    try:
        while True:
            d = s.recv(4096)
            if not d:
                break
            buf[0] += d
    except OSError:
        pass
    got += [g.strip() for g in buf[0].split(b"\n")]
    print("%s: got %r" % (step, [g for g in got if g][:6]), flush=True)
    s.close()
    return 0


def main():
    a = sys.argv[1:]
    if not a:
        print(__doc__)
        return 2
    cmd = a[0]
    if cmd == "server":
        return server(a[1:])
    if cmd == "probe":
        return probe(a[1], a[2], int(a[3]))
    if cmd == "idle":
        return idle(a[1], int(a[2]), int(a[3]), *[int(x) for x in a[4:6]])
    if cmd == "burst":
        return burst(a[1], int(a[2]))
    if cmd == "bulk":
        return bulk(a[1], int(a[2]), int(a[3]))
    if cmd == "trickle":
        return trickle(a[1], int(a[2]))
    if cmd == "steps":
        print(" ".join(STEPS))
        return 0
    if cmd == "hostile":
        for step in a[3:]:
            hostile(a[1], int(a[2]), step)
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
