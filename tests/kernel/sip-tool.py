#!/usr/bin/python3
"""Media and hand-made SIP for tests/kernel/sip.sh (only Python's standard library).

    sip-tool.py media GO OUT MIN SECS RECV...
        RECV = NS,ADDR,PORT,FROMNS: bind a UDP receiver in network namespace NS
        (ip netns name) on ADDR:PORT; after the file GO exists, send one datagram
        every 20 ms to it from an unbound socket in namespace FROMNS (a fresh
        source port: each receiver proves its own expectation, "any source port").
        Stops when every receiver got MIN datagrams or SECS seconds after GO.
        Writes "NS ADDR PORT got N from SRC" per receiver to OUT and exits 0 iff
        every receiver got at least MIN.
    sip-tool.py split-call DIR ADDR PORT LOCAL APORT VPORT
        (run in the client namespace) a SIP call over TCP to ADDR:PORT whose INVITE
        is sent in two segments (TCP_NODELAY, 0.5 s apart, split inside the
        headers); reads the 200, sends ACK, touches DIR/acked, waits for DIR/bye,
        sends BYE, reads its 200. Prints what it sent and got.
    sip-tool.py http ADDR PORT LOCAL APORT
        (client namespace) an HTTP POST to ADDR:PORT (the SIP port) whose body is a
        complete SIP INVITE offering LOCAL:APORT, the body in a segment of its own
        (the NAT Slipstreaming shape); reads whatever comes back for 1 s.
    sip-tool.py sink ADDR PORT
        (server namespace) accept TCP connections on ADDR:PORT and read them dry.
    sip-tool.py retransmit DIR SADDR CADDR APORT VPORT
        both ends of a UDP call in one process (sockets made in the namespaces
        "server" and "client"): the caller on CADDR sends an INVITE (audio APORT,
        video VPORT) to SADDR:5060, the callee answers 200 with audio and video on
        APORT+10000, VPORT+10000; then the caller sends the same INVITE again, as a
        caller does whose 200 is late (the router sees INVITE, 200, INVITE), and
        the callee stays silent; ACK; touches DIR/acked, waits for DIR/bye, BYE, 200.
"""
import ctypes
import os
import select
import socket
import sys
import time

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def netns(name):
    fd = os.open("/run/netns/" + name, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, "setns %s: %s" % (name, os.strerror(e)))
    finally:
        os.close(fd)


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def media(go, out, need, secs, specs):
    recv = []   # [ns, addr, port, fromns, sock, count, src]
    senders = {}
    for spec in specs:
        ns, addr, port, fromns = spec.split(",")
        netns(ns)
        s = socket.socket(family(addr), socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, int(port)))
        s.setblocking(False)
        recv.append([ns, addr, int(port), fromns, s, 0, "-"])
    for r in recv:
        key = (r[3], family(r[1]))
        if key not in senders:
            netns(r[3])
            senders[key] = socket.socket(key[1], socket.SOCK_DGRAM)
    print("media: %d receivers bound, waiting for %s" % (len(recv), go), flush=True)
    deadline = time.time() + 120
    while not os.path.exists(go):
        if time.time() > deadline:
            break
        time.sleep(0.05)
    t0 = time.time()
    end = t0 + secs
    seq = 0
    nxt = t0
    while time.time() < end and any(r[5] < need for r in recv):
        now = time.time()
        if now >= nxt:
            seq += 1
            for r in recv:
                if r[5] < need:
                    payload = b"rtp %s %d seq %d" % (r[1].encode(), r[2], seq)
                    try:
                        senders[(r[3], family(r[1]))].sendto(payload, (r[1], r[2]))
                    except OSError:
                        pass
            nxt = now + 0.02
        rl, _, _ = select.select([r[4] for r in recv], [], [], max(0.0, nxt - time.time()))
        for r in recv:
            if r[4] in rl:
                while True:
                    try:
                        _, src = r[4].recvfrom(2048)
                    except BlockingIOError:
                        break
                    r[5] += 1
                    r[6] = "%s:%d" % (src[0], src[1])
    ok = all(r[5] >= need for r in recv)
    with open(out, "w") as f:
        for r in recv:
            f.write("%s %s %d got %d from %s\n" % (r[0], r[1], r[2], r[5], r[6]))
        f.write("%s after %.2f s, %d rounds\n" % ("complete" if ok else "incomplete", time.time() - t0, seq))
    return 0 if ok else 1


def sdp(local, aport, vport):
    ip = "IP6" if ":" in local else "IP4"
    return ("v=0\r\no=tool 1 1 IN %s %s\r\ns=-\r\nc=IN %s %s\r\nt=0 0\r\n"
            "m=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\nm=video %d RTP/AVP 31\r\n"
            % (ip, local, ip, local, aport, vport))


def request(method, addr, port, local, lport, cseq, call_id, body="", to_tag="", transport="TCP"):
    host = "[%s]" % addr if ":" in addr else addr
    me = "[%s]" % local if ":" in local else local
    return ("%s sip:service@%s:%d SIP/2.0\r\n"
            "Via: SIP/2.0/%s %s:%d;branch=z9hG4bK-tool-%d-%s\r\n"
            "From: tool <sip:tool@%s:%d>;tag=tool1\r\n"
            "To: service <sip:service@%s:%d>%s\r\n"
            "Call-ID: %s\r\nCSeq: %d %s\r\nContact: <sip:tool@%s:%d;transport=%s>\r\n"
            "Max-Forwards: 70\r\n%sContent-Length: %d\r\n\r\n%s"
            % (method, host, port, transport, me, lport, cseq, method.lower(), me, lport, host, port,
               (";tag=" + to_tag) if to_tag else "", call_id, cseq,
               method, me, lport, transport.lower(),
               "Content-Type: application/sdp\r\n" if body else "", len(body), body)).encode()


class Reader:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def message(self, timeout=10):
        end = time.time() + timeout
        while True:
            head, sep, rest = self.buf.partition(b"\r\n\r\n")
            if sep:
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() in (b"content-length", b"l"):
                        length = int(value.strip())
                if len(rest) >= length:
                    self.buf = rest[length:]
                    return head + sep + rest[:length]
            left = end - time.time()
            if left <= 0:
                raise TimeoutError("no complete message; have %r" % self.buf[:200])
            self.sock.settimeout(left)
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("connection closed; have %r" % self.buf[:200])
            self.buf += data

    def response(self, want):
        """Skip provisional responses; return the final one (must be `want`)."""
        while True:
            m = self.message()
            first = m.split(b"\r\n", 1)[0].decode(errors="replace")
            print("got: %s" % first, flush=True)
            code = int(first.split()[1])
            if code >= 200:
                if code != want:
                    raise RuntimeError("wanted %d, got %s" % (want, first))
                return m


def to_tag(msg):
    for line in msg.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() in (b"to", b"t"):
            _, _, tag = value.partition(b";tag=")
            return tag.split(b";")[0].strip().decode()
    return ""


def split_call(d, addr, port, local, aport, vport):
    s = socket.socket(family(addr), socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.bind((local, 0))
    s.connect((addr, port))
    lport = s.getsockname()[1]
    call_id = "split-%d@tool" % os.getpid()
    inv = request("INVITE", addr, port, local, lport, 1, call_id, sdp(local, aport, vport))
    cut = inv.index(b"Call-ID")    # inside the headers: neither half is a message
    s.send(inv[:cut])
    print("sent INVITE part 1: %d bytes (up to Call-ID)" % cut, flush=True)
    time.sleep(0.5)
    s.send(inv[cut:])
    print("sent INVITE part 2: %d bytes" % (len(inv) - cut), flush=True)
    r = Reader(s)
    ok = r.response(200)
    tag = to_tag(ok)
    body = ok.split(b"\r\n\r\n", 1)[1]
    print("200 SDP: %s" % body.decode(errors="replace").replace("\r\n", " | "), flush=True)
    s.send(request("ACK", addr, port, local, lport, 1, call_id, to_tag=tag))
    print("sent ACK", flush=True)
    open(os.path.join(d, "acked"), "w").close()
    end = time.time() + 60
    while not os.path.exists(os.path.join(d, "bye")) and time.time() < end:
        time.sleep(0.05)
    s.send(request("BYE", addr, port, local, lport, 2, call_id, to_tag=tag))
    print("sent BYE", flush=True)
    r.response(200)
    s.close()
    return 0


def http(addr, port, local, aport):
    s = socket.socket(family(addr), socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.bind((local, 0))
    s.connect((addr, port))
    lport = s.getsockname()[1]
    body = request("INVITE", addr, port, local, lport, 1, "slip@tool", sdp(local, aport, aport + 2))
    host = "[%s]" % addr if ":" in addr else addr
    head = ("POST /upload HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: text/plain\r\n"
            "Content-Length: %d\r\n\r\n" % (host, port, len(body))).encode()
    s.send(head)
    print("sent HTTP head: %d bytes" % len(head), flush=True)
    time.sleep(0.5)
    s.send(body)
    print("sent HTTP body (a SIP INVITE offering %s:%d) in its own segment: %d bytes"
          % (local, aport, len(body)), flush=True)
    s.settimeout(1)
    try:
        print("got: %r" % s.recv(200), flush=True)
    except OSError as e:
        print("got nothing (%s)" % e, flush=True)
    s.close()
    return 0


def sink(addr, port):
    ls = socket.socket(family(addr), socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((addr, port))
    ls.listen(8)
    conns = [ls]
    while True:
        rl, _, _ = select.select(conns, [], [])
        for c in rl:
            if c is ls:
                conns.append(ls.accept()[0])
                continue
            try:
                data = c.recv(65536)
            except OSError:
                data = b""
            if not data:
                conns.remove(c)
                c.close()


def retransmit(d, saddr, caddr, aport, vport):
    fam = family(saddr)
    netns("server")
    srv = socket.socket(fam, socket.SOCK_DGRAM)
    srv.bind((saddr, 5060))
    srv.settimeout(10)
    netns("client")
    cli = socket.socket(fam, socket.SOCK_DGRAM)
    cli.bind((caddr, 0))
    cli.settimeout(10)
    lport = cli.getsockname()[1]
    call_id = "retransmit-%d@tool" % os.getpid()
    inv = request("INVITE", saddr, 5060, caddr, lport, 1, call_id, sdp(caddr, aport, vport), transport="UDP")
    cli.sendto(inv, (saddr, 5060))
    got, src = srv.recvfrom(65536)
    print("callee got: %s" % got.split(b"\r\n", 1)[0].decode(), flush=True)
    body = sdp(saddr, aport + 10000, vport + 10000)
    head = got.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
    keep = [h for h in head[1:] if h.split(":", 1)[0].lower() in ("via", "from", "call-id", "cseq")]
    to = [h for h in head[1:] if h.lower().startswith("to:")][0] + ";tag=callee1"
    ok = ("SIP/2.0 200 OK\r\n%s\r\n%s\r\nContact: <sip:callee@%s:5060>\r\n"
          "Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s"
          % ("\r\n".join(keep), to, "[%s]" % saddr if fam == socket.AF_INET6 else saddr,
             len(body), body)).encode()
    srv.sendto(ok, src)
    got = cli.recv(65536)
    print("caller got: %s" % got.split(b"\r\n", 1)[0].decode(), flush=True)
    cli.sendto(inv, (saddr, 5060))
    got, _ = srv.recvfrom(65536)
    print("callee got the INVITE again (%s), does not answer" % got.split(b"\r\n", 1)[0].decode(), flush=True)
    cli.sendto(request("ACK", saddr, 5060, caddr, lport, 1, call_id, to_tag="callee1", transport="UDP"), (saddr, 5060))
    srv.recvfrom(65536)
    print("callee got ACK", flush=True)
    open(os.path.join(d, "acked"), "w").close()
    end = time.time() + 60
    while not os.path.exists(os.path.join(d, "bye")) and time.time() < end:
        time.sleep(0.05)
    cli.sendto(request("BYE", saddr, 5060, caddr, lport, 2, call_id, to_tag="callee1", transport="UDP"), (saddr, 5060))
    got, src = srv.recvfrom(65536)
    head = got.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
    keep = [h for h in head[1:] if h.split(":", 1)[0].lower() in ("via", "from", "to", "call-id", "cseq")]
    srv.sendto(("SIP/2.0 200 OK\r\n%s\r\nContent-Length: 0\r\n\r\n" % "\r\n".join(keep)).encode(), src)
    print("caller got: %s" % cli.recv(65536).split(b"\r\n", 1)[0].decode(), flush=True)
    return 0


def main(argv):
    cmd = argv[1]
    if cmd == "media":
        return media(argv[2], argv[3], int(argv[4]), float(argv[5]), argv[6:])
    if cmd == "split-call":
        return split_call(argv[2], argv[3], int(argv[4]), argv[5], int(argv[6]), int(argv[7]))
    if cmd == "http":
        return http(argv[2], int(argv[3]), argv[4], int(argv[5]))
    if cmd == "sink":
        return sink(argv[2], int(argv[3]))
    if cmd == "retransmit":
        return retransmit(argv[2], argv[3], argv[4], int(argv[5]), int(argv[6]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
