#!/usr/bin/python3
"""A long-lived FTP control session driven line by line from stdin.

    ftp-session.py HOST FILE SHA256

Connects to HOST:21 (IPv4 or IPv6; from the address in $FTP_SOURCE if set), logs
in anonymously and prints "0 ok ...".
Then reads one command per line and answers each with exactly one line
"<n> ok <detail>" or "<n> err <detail>" (n = 1, 2, ...):

    noop | pwd          send the command
    retr                download FILE in passive mode (PASV on IPv4, EPSV on
                        IPv6, like ftplib does) and compare its SHA-256
    retr-active         the same in active mode (PORT on IPv4, EPRT on IPv6)
    hold-passive        send PASV (IPv4) or EPSV (IPv6) and print the announced
                        port; the expectation stays pending (no data connection)
    hold-active ADDR P  send PORT (IPv4) or EPRT (IPv6) for ADDR:P (nobody listens)
    raw CMD...          send an arbitrary command
    quit                QUIT and exit
Used by tests/kernel/ftp.sh for sessions that must survive a daemon stop/crash and
to list an expectation while it is pending. Only Python's standard library.
"""
import ftplib
import hashlib
import os
import re
import socket
import sys

TIMEOUT = 8


def main():
    host, path, want = sys.argv[1], sys.argv[2], sys.argv[3]
    n = 0

    def out(ok, detail):
        print(f"{n} {'ok' if ok else 'err'} {detail}", flush=True)

    f = ftplib.FTP(timeout=TIMEOUT)
    try:
        source = os.environ.get("FTP_SOURCE")
        f.connect(host, 21, source_address=(source, 0) if source else None)
        f.login()
    except Exception as e:  # noqa: BLE001 - report anything
        out(False, f"connect/login: {e!r}")
        return 1
    v6 = f.af == socket.AF_INET6
    out(True, f"connected {f.sock.getsockname()[:2]} -> {f.sock.getpeername()[:2]}")
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        n += 1
        cmd = words[0]
        try:
            if cmd in ("noop", "pwd"):
                out(True, f.sendcmd(cmd.upper()))
            elif cmd in ("retr", "retr-active"):
                f.set_pasv(cmd == "retr")
                h = hashlib.sha256()
                size = 0

                def feed(b):
                    nonlocal size
                    h.update(b)
                    size += len(b)

                f.retrbinary(f"RETR {path}", feed)
                f.set_pasv(True)
                if h.hexdigest() == want:
                    out(True, f"{size} bytes, sha256 ok")
                else:
                    out(False, f"{size} bytes, sha256 MISMATCH")
            elif cmd == "hold-passive":
                if v6:
                    r = f.sendcmd("EPSV")
                    port = int(re.search(r"\(\|\|\|(\d+)\|\)", r).group(1))
                else:
                    r = f.sendcmd("PASV")
                    nums = re.search(r"(\d+),(\d+),(\d+),(\d+),(\d+),(\d+)", r).groups()
                    port = int(nums[4]) * 256 + int(nums[5])
                out(True, f"port={port} {r}")
            elif cmd == "hold-active":
                addr, port = words[1], int(words[2])
                if v6:
                    r = f.sendcmd(f"EPRT |2|{addr}|{port}|")
                else:
                    r = f.sendcmd("PORT " + ",".join(addr.split(".") + [str(port >> 8), str(port & 255)]))
                out(True, f"port={port} {r}")
            elif cmd == "raw":
                out(True, f.sendcmd(" ".join(words[1:])))
            elif cmd == "quit":
                try:
                    out(True, f.quit())
                except Exception as e:  # noqa: BLE001
                    out(False, repr(e))
                return 0
            else:
                out(False, f"unknown command {cmd}")
        except Exception as e:  # noqa: BLE001 - report anything, keep the session
            f.set_pasv(True)
            out(False, f"{cmd}: {e!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
