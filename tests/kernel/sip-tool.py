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
    sip-tool.py media-to GO OUT MIN SECS STREAM...
        (sip-nat.sh) like media, but each side sends where its SDP told it, which
        is not where the receiver is bound when a router translates:
        STREAM = NS,ADDR,PORT,FROMNS,SRC,DST,DPORT: a receiver in NS bound on
        ADDR:PORT, fed from a socket in FROMNS (bound to SRC, any port; "-":
        unbound) that sends to DST:DPORT (DST "none": nothing is sent). GO "-":
        start at once; else wait for the file GO, whose lines name what is not
        known before the call is up, in order:
          "wait FILE WORD": wait until a line of FILE ends in the word WORD;
          "KEY ADDR PORT";
          "KEY sdp PLUS LOG received|sent REGEX": KEY-a and KEY-v are the c=
          address and the m=audio / m=video port (+ PLUS) of the first complete
          message in the sipp -trace_msg log LOG that sipp received (sent) whose
          first line matches REGEX (Python re, the rest of the line).
        A field "=KEY" is then KEY's address (ADDR, DST) or port (PORT, DPORT;
        "=KEY+1": the next one); an unknown KEY is address "none" and port 0.
        The keys are written to OUT.keys. Receivers are bound, and sending
        starts, once all are known (at most 90 s). A datagram names the
        DST:DPORT it was sent to and the receiver it is meant for; a receiver
        counts its own ("got") and any others ("other": another stream
        translated to it). Writes "NS ADDR PORT got N other M from SRC via DST:DPORT" per
        receiver to OUT; exits 0 iff every receiver got at least MIN and no other.
    sip-tool.py stun-call DIR CADDR CPORT SADDR APORT
        (sip-nat.sh) both ends of a UDP call in one process, from a phone that
        does its own NAT traversal: the phone (namespace "client", bound to
        CADDR:CPORT) learns its public address:port from a STUN-like probe to
        SADDR:3478 (answered by this process in namespace "server"), then calls
        SADDR:5060 naming only that public address:port (Via, From, Contact, SDP
        o= and c=, m=audio APORT). The callee answers 200 (SDP on SADDR,
        APORT+10000). INVITE, 200, ACK, BYE and its 200 are each compared byte
        for byte between what one end sent and the other received; after the ACK
        it touches DIR/acked and waits for DIR/bye. Writes each message as sent
        and as received to DIR/<n>-<name>.sent / .got; prints one line per
        message ("identical" or "DIFFERENT"); exits 0 iff all are identical.
    sip-tool.py retransmit-nat DIR CALLERNS CADDR TARGET CALLEENS BADDR APORT
        (sip-nat.sh) both ends of a UDP call through the router, whose INVITE is
        sent again as when a 200 is slow: the caller (namespace CALLERNS, CADDR)
        sends an INVITE (audio APORT, video APORT+10) twice at once to
        TARGET:5060, which reaches the callee (namespace CALLEENS, bound to
        BADDR:5060); the caller sends it again 0.5 s later (T1); the callee
        answers 200 (SDP on BADDR); the caller sends the INVITE once more and
        the callee its 200 again. Compares the later INVITEs with the first as
        the callee received them and the two 200s as the caller received them
        (files DIR/invite-1..4, DIR/200-1, -2); then ACK, BYE, 200. Prints one
        line per comparison; exits 0 iff all are identical.
"""
import ctypes
import os
import re
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


def sipp_message(path, direction, regex):
    """The first complete message of a sipp -trace_msg log that sipp received (or
    sent) whose first line matches regex, as text without CRs; None if none yet."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    for entry in re.split(rb"^-{20,}[^\n]*\n", data, flags=re.M):
        head, _, msg = entry.partition(b"\n")
        if (b"message " + direction.encode()) not in head:
            continue
        msg = msg.lstrip(b"\r\n")
        if not re.search(regex.encode(), msg.split(b"\r\n", 1)[0].split(b"\n", 1)[0]):
            continue
        hdr, sep, body = msg.partition(b"\r\n\r\n")
        m = re.search(rb"^(?:Content-Length|l)\s*:\s*(\d+)", hdr, flags=re.M | re.I)
        if not sep or (m and len(body) < int(m.group(1))):
            return None     # still being written
        return msg.decode(errors="replace").replace("\r", "")
    return None


def sdp_of(msg):
    """(c= address, m=audio port, m=video port) of the first c= / m= lines."""
    c = re.search(r"^c=IN IP[46] (\S+)", msg, flags=re.M)
    a = re.search(r"^m=audio (\d+) ", msg, flags=re.M)
    v = re.search(r"^m=video (\d+) ", msg, flags=re.M)
    return (c.group(1) if c else "none", int(a.group(1)) if a else None, int(v.group(1)) if v else None)


def media_keys(go, deadline):
    """The destinations media-to learns from its GO file (see the docstring)."""
    known = {}
    with open(go) as f:
        lines = [line.split(None, 5) for line in f if line.strip()]
    for w in lines:
        if w[0] == "wait" and len(w) == 3:
            while time.time() < deadline:
                try:
                    with open(w[1]) as f:
                        if any(line.split()[-1:] == [w[2]] for line in f):
                            break
                except OSError:
                    pass
                time.sleep(0.02)
        elif len(w) == 3:
            known[w[0]] = (w[1], int(w[2]))
        elif len(w) == 6 and w[1] == "sdp":
            key, _, plus, log, direction, regex = w
            msg = None
            while msg is None and time.time() < deadline:
                msg = sipp_message(log, direction, regex.strip())
                if msg is None:
                    time.sleep(0.02)
            if msg is None:
                print("media-to: no %s message /%s/ in %s" % (direction, regex.strip(), log), flush=True)
                continue
            c, a, v = sdp_of(msg)
            if a is not None:
                known[key + "-a"] = (c, a + int(plus))
            if v is not None:
                known[key + "-v"] = (c, v + int(plus))
    return known


def media_to(go, out, need, secs, specs):
    """sip-nat.sh: receivers bound on one address, fed at another (see the docstring)."""
    deadline = time.time() + 120
    print("media-to: %d streams, waiting for %s" % (len(specs), go), flush=True)
    while go != "-" and not os.path.exists(go):
        if time.time() > deadline:
            break
        time.sleep(0.05)
    known = {}
    if go != "-" and os.path.exists(go):
        known = media_keys(go, time.time() + 90)
        with open(out + ".keys", "w") as f:
            for k in sorted(known):
                f.write("%s %s %d\n" % (k, known[k][0], known[k][1]))
    print("media-to: %d keys, starting" % len(known), flush=True)

    def addr_of(v):
        return known.get(v[1:], ("none", 0))[0] if v.startswith("=") else v

    def port_of(v):
        if not v.startswith("="):
            return int(v)
        name, _, plus = v[1:].partition("+")
        return known[name][1] + int(plus or 0) if name in known else 0

    recv = []   # [ns, addr, port, fromns, sock, got, src, dst, dport, other, sender-key]
    senders = {}
    for spec in specs:
        ns, addr, port, fromns, src, dst, dport = spec.split(",")
        addr, port, dst, dport = addr_of(addr), port_of(port), addr_of(dst), port_of(dport)
        netns(ns)
        s = socket.socket(family(addr), socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, port))
        s.setblocking(False)
        key = (fromns, src, family(addr))
        recv.append([ns, addr, s.getsockname()[1], fromns, s, 0, "-", dst, dport, 0, key])
    for r in recv:
        key = r[10]
        if key not in senders:
            netns(key[0])
            senders[key] = socket.socket(key[2], socket.SOCK_DGRAM)
            if key[1] != "-":
                senders[key].bind((key[1], 0))
    t0 = time.time()
    end = t0 + secs
    seq = 0
    nxt = t0
    while time.time() < end and any(r[5] < need for r in recv):
        now = time.time()
        if now >= nxt:
            seq += 1
            for r in recv:
                if r[5] < need and r[7] != "none" and r[8] > 0:
                    payload = b"rtp to %s:%d for %s:%d seq %d" % (r[7].encode(), r[8], r[1].encode(), r[2], seq)
                    try:
                        senders[r[10]].sendto(payload, (r[7], r[8]))
                    except OSError:
                        pass
            nxt = now + 0.02
        rl, _, _ = select.select([r[4] for r in recv], [], [], max(0.0, nxt - time.time()))
        for r in recv:
            if r[4] in rl:
                mine = b"rtp to %s:%d for %s:%d seq " % (r[7].encode(), r[8], r[1].encode(), r[2])
                while True:
                    try:
                        data, src = r[4].recvfrom(2048)
                    except BlockingIOError:
                        break
                    if data.startswith(mine):
                        r[5] += 1
                    else:
                        r[9] += 1
                    r[6] = "%s:%d" % (src[0], src[1])
    ok = all(r[5] >= need and r[9] == 0 for r in recv)
    with open(out, "w") as f:
        for r in recv:
            f.write("%s %s %d got %d other %d from %s via %s:%d\n"
                    % (r[0], r[1], r[2], r[5], r[9], r[6], r[7], r[8]))
        f.write("%s after %.2f s, %d rounds\n" % ("complete" if ok else "incomplete", time.time() - t0, seq))
    return 0 if ok else 1


def stun_call(d, caddr, cport, saddr, aport):
    """A phone that already names its public address (see the docstring)."""
    netns("server")
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind((saddr, 5060))
    srv.settimeout(15)
    stun = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stun.bind((saddr, 3478))
    stun.settimeout(15)
    netns("client")
    cli = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    cli.bind((caddr, cport))
    cli.settimeout(15)
    cli.sendto(b"binding request", (saddr, 3478))
    _, seen = stun.recvfrom(2048)
    stun.sendto(("%s %d" % seen).encode(), seen)
    pub, pport = cli.recv(2048).decode().split()
    pport = int(pport)
    print("phone %s:%d learned its public address %s:%d" % (caddr, cport, pub, pport), flush=True)
    call_id = "stun-%d@phone" % os.getpid()
    same = []

    def hop(n, name, data, sender, receiver, to):
        sender.sendto(data, to)
        got, src = receiver.recvfrom(65536)
        for ext, what in (("sent", data), ("got", got)):
            with open(os.path.join(d, "%d-%s.%s" % (n, name, ext)), "wb") as f:
                f.write(what)
        ok = got == data
        same.append(ok)
        print("%s: %s (sent %d bytes, received %d from %s:%d)"
              % (name, "identical" if ok else "DIFFERENT", len(data), len(got), src[0], src[1]), flush=True)
        return got, src

    def req(method, cseq, body="", tag=""):
        return ("%s sip:service@%s:5060 SIP/2.0\r\n"
                "Via: SIP/2.0/UDP %s:%d;rport;branch=z9hG4bK-stun-%d-%s\r\n"
                "From: <sip:phone@%s:%d>;tag=stun1\r\n"
                "To: <sip:service@%s:5060>%s\r\n"
                "Call-ID: %s\r\nCSeq: %d %s\r\nContact: <sip:phone@%s:%d>\r\nMax-Forwards: 70\r\n"
                "%sContent-Length: %d\r\n\r\n%s"
                % (method, saddr, pub, pport, cseq, method.lower(), pub, pport, saddr,
                   (";tag=" + tag) if tag else "", call_id, cseq, method, pub, pport,
                   "Content-Type: application/sdp\r\n" if body else "", len(body), body)).encode()

    def resp(got, body=""):
        head = got.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
        keep = [h for h in head[1:] if h.split(":", 1)[0].lower() in ("via", "from", "to", "call-id", "cseq")]
        keep = [h + ";tag=callee1" if h.lower().startswith("to:") and ";tag=" not in h else h for h in keep]
        return ("SIP/2.0 200 OK\r\n%s\r\nContact: <sip:service@%s:5060>\r\n%sContent-Length: %d\r\n\r\n%s"
                % ("\r\n".join(keep), saddr, "Content-Type: application/sdp\r\n" if body else "",
                   len(body), body)).encode()

    offer = ("v=0\r\no=phone 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\n"
             "m=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n" % (pub, pub, aport))
    answer = ("v=0\r\no=service 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\n"
              "m=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n" % (saddr, saddr, aport + 10000))
    got, src = hop(1, "INVITE", req("INVITE", 1, offer), cli, srv, (saddr, 5060))
    print("the server received the INVITE from %s:%d; the phone names %s:%d" % (src[0], src[1], pub, pport),
          flush=True)
    hop(2, "200-INVITE", resp(got, answer), srv, cli, src)
    hop(3, "ACK", req("ACK", 1, tag="callee1"), cli, srv, (saddr, 5060))
    open(os.path.join(d, "acked"), "w").close()
    end = time.time() + 60
    while not os.path.exists(os.path.join(d, "bye")) and time.time() < end:
        time.sleep(0.05)
    got, src = hop(4, "BYE", req("BYE", 2, tag="callee1"), cli, srv, (saddr, 5060))
    hop(5, "200-BYE", resp(got), srv, cli, src)
    return 0 if all(same) else 1


def retransmit_nat(d, callerns, caddr, target, calleens, baddr, aport):
    """sip-nat.sh: an INVITE sent again through the router (see the docstring)."""
    netns(calleens)
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind((baddr, 5060))
    srv.settimeout(15)
    netns(callerns)
    cli = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    cli.bind((caddr, 0))
    cli.settimeout(15)
    lport = cli.getsockname()[1]
    call_id = "retransmit-nat-%d@tool" % os.getpid()
    same = []

    def keep(name, data):
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)

    def compare(name, first, again):
        ok = first == again
        same.append(ok)
        print("%s: %s (%d and %d bytes)" % (name, "identical" if ok else "DIFFERENT", len(first), len(again)),
              flush=True)

    inv = request("INVITE", target, 5060, caddr, lport, 1, call_id, sdp(caddr, aport, aport + 10), transport="UDP")
    # twice at once: the second copy reaches the router while the first may
    # still wait for the helper's verdict (a phone whose router is slower than
    # its retransmission timer, or a duplicated datagram)
    cli.sendto(inv, (target, 5060))
    cli.sendto(inv, (target, 5060))
    got1, src = srv.recvfrom(65536)
    keep("invite-1", got1)
    print("the callee got: %s" % got1.split(b"\r\n", 1)[0].decode(), flush=True)
    got2, src = srv.recvfrom(65536)
    keep("invite-2", got2)
    compare("INVITE sent twice at once, the second as the callee received it", got1, got2)
    time.sleep(0.5)     # SIP's T1: when a UDP client first sends a request again
    cli.sendto(inv, (target, 5060))
    got3, src = srv.recvfrom(65536)
    keep("invite-3", got3)
    compare("INVITE sent again 0.5 s later, before the 200, as the callee received it", got1, got3)
    body = sdp(baddr, aport + 10000, aport + 10010)
    head = got1.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
    hdrs = [h for h in head[1:] if h.split(":", 1)[0].lower() in ("via", "from", "call-id", "cseq")]
    to = [h for h in head[1:] if h.lower().startswith("to:")][0] + ";tag=callee1"
    ok = ("SIP/2.0 200 OK\r\n%s\r\n%s\r\nContact: <sip:callee@%s:5060>\r\n"
          "Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s"
          % ("\r\n".join(hdrs), to, baddr, len(body), body)).encode()
    srv.sendto(ok, src)
    ok1 = cli.recv(65536)
    keep("200-1", ok1)
    print("the caller got: %s, sends the same INVITE again" % ok1.split(b"\r\n", 1)[0].decode(), flush=True)
    cli.sendto(inv, (target, 5060))
    got4, src = srv.recvfrom(65536)
    keep("invite-4", got4)
    compare("INVITE sent again after the 200, as the callee received it", got1, got4)
    srv.sendto(ok, src)     # a UAS answers a retransmitted INVITE with its 200 again
    ok2 = cli.recv(65536)
    keep("200-2", ok2)
    compare("the 200 sent again, as the caller received it", ok1, ok2)
    cli.sendto(request("ACK", target, 5060, caddr, lport, 1, call_id, to_tag="callee1", transport="UDP"),
               (target, 5060))
    srv.recvfrom(65536)
    cli.sendto(request("BYE", target, 5060, caddr, lport, 2, call_id, to_tag="callee1", transport="UDP"),
               (target, 5060))
    got, src = srv.recvfrom(65536)
    head = got.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
    hdrs = [h for h in head[1:] if h.split(":", 1)[0].lower() in ("via", "from", "to", "call-id", "cseq")]
    srv.sendto(("SIP/2.0 200 OK\r\n%s\r\nContent-Length: 0\r\n\r\n" % "\r\n".join(hdrs)).encode(), src)
    print("BYE: the caller got %s" % cli.recv(65536).split(b"\r\n", 1)[0].decode(), flush=True)
    return 0 if all(same) else 1

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
    if cmd == "media-to":
        return media_to(argv[2], argv[3], int(argv[4]), float(argv[5]), argv[6:])
    if cmd == "stun-call":
        return stun_call(argv[2], argv[3], int(argv[4]), argv[5], int(argv[6]))
    if cmd == "retransmit-nat":
        return retransmit_nat(argv[2], argv[3], argv[4], argv[5], argv[6], argv[7], int(argv[8]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
