#!/usr/bin/env python3
"""Run one CQL statement against a Cassandra node using only the Python standard library.

Used by scripts/services.sh as the Cassandra readiness probe (a real query, not just an open
port) and as a tiny `cqlsh -e` stand-in, because cqlsh is not installable here and the
cassandra-driver package would be a pip install on every fresh machine.

It speaks native protocol v4 (STARTUP, QUERY, no auth, no paging) and prints the result rows
tab-separated. Text, integer, boolean, uuid and timestamp columns are decoded; anything else
is printed as hex. Exit codes: 0 ok, 1 server error, 2 connection/protocol failure.

    python3 cql.py [--host 127.0.0.1] [--port 9042] [--timeout 10] "SELECT ..."
"""

import argparse
import datetime
import socket
import struct
import sys
import uuid

VERSION = 0x04
OP_ERROR, OP_STARTUP, OP_READY, OP_AUTHENTICATE, OP_QUERY, OP_RESULT = 0x00, 0x01, 0x02, 0x03, 0x07, 0x08
CONSISTENCY_ONE = 0x0001


def _string(s):
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def _long_string(s):
    b = s.encode()
    return struct.pack(">i", len(b)) + b


class Conn:
    def __init__(self, host, port, timeout):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)

    def _recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("connection closed by server")
            buf += chunk
        return buf

    def request(self, opcode, body):
        self.sock.sendall(struct.pack(">BBhBi", VERSION, 0, 0, opcode, len(body)) + body)
        _ver, _flags, _stream, op, length = struct.unpack(">BBhBi", self._recv_exact(9))
        return op, self._recv_exact(length)


class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, n):
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def int(self):
        return struct.unpack(">i", self.take(4))[0]

    def short(self):
        return struct.unpack(">H", self.take(2))[0]

    def string(self):
        return self.take(self.short()).decode()

    def bytes(self):
        n = self.int()
        return None if n < 0 else self.take(n)

    def option(self):
        # Only the type id matters for decoding; skip the parameters of parameterised types.
        tid = self.short()
        if tid == 0x0000:
            self.string()
        elif tid in (0x0020, 0x0022):  # list, set
            self.option()
        elif tid == 0x0021:  # map
            self.option()
            self.option()
        elif tid == 0x0030:  # UDT
            self.string()
            self.string()
            for _ in range(self.short()):
                self.string()
                self.option()
        elif tid == 0x0031:  # tuple
            for _ in range(self.short()):
                self.option()
        return tid


def decode(tid, raw):
    if raw is None:
        return "null"
    if tid in (0x0001, 0x000A, 0x000D):  # ascii, text, varchar
        return raw.decode()
    if tid == 0x0009:
        return str(struct.unpack(">i", raw)[0])
    if tid in (0x0002, 0x0005):  # bigint, counter
        return str(struct.unpack(">q", raw)[0])
    if tid == 0x0004:
        return "true" if raw != b"\x00" else "false"
    if tid in (0x000C, 0x000F):  # uuid, timeuuid
        return str(uuid.UUID(bytes=raw))
    if tid == 0x000B:  # timestamp, ms since epoch
        ms = struct.unpack(">q", raw)[0]
        return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).isoformat()
    if tid == 0x0010:  # inet
        return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)
    return "0x" + raw.hex()


def error_text(body):
    r = Reader(body)
    code = r.int()
    return "server error 0x%04x: %s" % (code, r.string())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9042)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("query")
    args = ap.parse_args()

    try:
        conn = Conn(args.host, args.port, args.timeout)
        op, body = conn.request(OP_STARTUP, struct.pack(">H", 1) + _string("CQL_VERSION") + _string("3.0.0"))
        if op == OP_ERROR:
            print(error_text(body), file=sys.stderr)
            return 1
        if op != OP_READY:
            print("unexpected STARTUP reply opcode %d (authentication is not supported)" % op, file=sys.stderr)
            return 2
        op, body = conn.request(OP_QUERY, _long_string(args.query) + struct.pack(">HB", CONSISTENCY_ONE, 0))
    except (OSError, ConnectionError, struct.error) as e:
        print("cql: %s:%d: %s" % (args.host, args.port, e), file=sys.stderr)
        return 2

    if op == OP_ERROR:
        print(error_text(body), file=sys.stderr)
        return 1
    if op != OP_RESULT:
        print("unexpected QUERY reply opcode %d" % op, file=sys.stderr)
        return 2
    r = Reader(body)
    kind = r.int()
    if kind != 0x0002:  # Void, Set_keyspace, Schema_change: nothing to print
        return 0
    flags, ncols = r.int(), r.int()
    if flags & 0x0002:  # has_more_pages: paging state follows
        r.bytes()
    if flags & 0x0001:  # global_tables_spec
        r.string()
        r.string()
    types = []
    for _ in range(ncols):
        if not flags & 0x0001:
            r.string()
            r.string()
        r.string()
        types.append(r.option())
    for _ in range(r.int()):
        print("\t".join(decode(t, r.bytes()) for t in types))
    return 0


if __name__ == "__main__":
    sys.exit(main())
