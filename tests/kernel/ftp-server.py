#!/usr/bin/python3
"""One pyftpdlib process serving anonymous FTP on several addresses.

    ftp-server.py ROOT ADDR...

Used by tests/kernel/ftp.sh on the server namespace (IPv4 and IPv6 in one
process: each Python start-up costs seconds under TCG). Passive ports
40000-40199. Logs to stderr.
"""
import logging
import sys

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer

logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s")
authorizer = DummyAuthorizer()
authorizer.add_anonymous(sys.argv[1])
FTPHandler.authorizer = authorizer
FTPHandler.passive_ports = range(40000, 40200)
# all servers share pyftpdlib's default IOLoop; serving one serves them all
servers = [FTPServer((addr, 21), FTPHandler) for addr in sys.argv[2:]]
servers[0].serve_forever()
