#!/usr/bin/python3
"""libdedup real-programs test: a small RESP client for redis-server.

Usage: redis_client.py PORT fill|check DUP_KEYS DUP_KIB UNIQUE_KEYS UNIQUE_KIB

fill:  SET DUP_KEYS keys to one DUP_KIB value (pseudo-random bytes, so no
       zero pages) and UNIQUE_KEYS keys to distinct values, pipelined.
check: GET every key back and compare with what fill wrote; prints one
       summary line (the same with and without the shim) and exits 1 on any
       mismatch.
No third-party module: only the standard library.
"""
import hashlib
import random
import socket
import sys


class Resp:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.f = self.s.makefile("rb")

    def send(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if isinstance(a, str):
                a = a.encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.s.sendall(b"".join(out))

    def reply(self):
        line = self.f.readline()
        if not line:
            raise EOFError("connection closed by server")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RuntimeError("server error: " + rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            return data[:-2]
        raise RuntimeError("unexpected reply %r" % line)


def values(dup_keys, dup_kib, uniq_keys, uniq_kib):
    rnd = random.Random(20240611)
    dup = rnd.randbytes(dup_kib * 1024)
    for i in range(dup_keys):
        yield "dup:%05d" % i, dup
    for i in range(uniq_keys):
        yield "uniq:%05d" % i, rnd.randbytes(uniq_kib * 1024)


def main():
    port, mode = int(sys.argv[1]), sys.argv[2]
    dk, dkib, uk, ukib = map(int, sys.argv[3:7])
    r = Resp(port)
    batch = 50
    if mode == "fill":
        pending = 0
        n = 0
        for key, val in values(dk, dkib, uk, ukib):
            r.send("SET", key, val)
            pending += 1
            n += 1
            if pending == batch:
                for _ in range(pending):
                    if r.reply() != b"OK":
                        sys.exit("SET failed")
                pending = 0
        for _ in range(pending):
            if r.reply() != b"OK":
                sys.exit("SET failed")
        r.send("DBSIZE")
        print("redis fill: keys=%d dbsize=%d" % (n, r.reply()))
        return 0
    if mode == "check":
        bad = 0
        n = 0
        h = hashlib.sha256()
        items = list(values(dk, dkib, uk, ukib))
        for start in range(0, len(items), batch):
            chunk = items[start:start + batch]
            for key, _ in chunk:
                r.send("GET", key)
            for key, want in chunk:
                got = r.reply()
                n += 1
                if got is None:
                    got = b""
                h.update(got)
                if got != want:
                    bad += 1
                    if bad <= 5:
                        print("MISMATCH %s: got %d bytes, want %d" % (key, len(got), len(want)))
        r.send("DBSIZE")
        print("redis check: keys=%d dbsize=%d mismatches=%d sha256=%s"
              % (n, r.reply(), bad, h.hexdigest()))
        return 1 if bad else 0
    sys.exit("mode must be fill or check")


if __name__ == "__main__":
    sys.exit(main())
