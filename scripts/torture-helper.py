#!/usr/bin/env python3
"""Helpers for scripts/torture (Python 3 standard library only).

  torture-helper.py tree SRC SEED GEN     make (GEN 0) or change (GEN > 0) the
                                          source tree: deterministic from SEED
  torture-helper.py digest DIR [--ignore PREFIX]
                                          one line per item below DIR: name, type,
                                          mode, mtime, size, content hash or link
                                          (names starting with PREFIX left out)
  torture-helper.py proxy UPSTREAM PORTFILE LOG [FAULT...]
                                          an HTTP/1.1 proxy on 127.0.0.1 in front of
                                          UPSTREAM (host:port) that injects FAULTs

A FAULT is ACTION:CLASS:N (the Nth request of CLASS) or ACTION:CLASS:N+ (the
Nth and every later one). CLASS: put (PUT, POST), get (GET of an object),
list (GET of the bucket: ListObjects), head, delete (DELETE, POST ?delete),
any. ACTION:
  500, 503   answer with that status and an S3 error body; nothing forwarded
  reset      reset the connection (TCP RST) before forwarding the request
  lost       forward the request, then reset instead of answering (the
             server did it, the client is told nothing)
  cut        cut the transfer short: a PUT's body reaches the server half
             sent, then both connections close; a GET's answer reaches the
             client with half its body, then the connection closes
  stall      take the request, answer nothing for STALL seconds
             (env TORTURE_STALL, default 20), then close
The log gets one line per request: its number in its class, the class, the
method and path, and what was done.
"""

import hashlib
import os
import random
import socket
import stat
import sys
import threading
import time

# ---------------------------------------------------------------- source tree

BASE_MTIME = 1_704_164_645


def _write(path, data, mtime):
    with open(path, "wb") as f:
        f.write(data)
    os.utime(path, (mtime, mtime), follow_symlinks=False)


def _dirs_mtime(root, mtime):
    for d, _subdirs, _files in os.walk(root, topdown=False):
        os.utime(d, (mtime, mtime))


def tree(src, seed, gen):
    """GEN 0: a tree of about 4 MB (a 2.5 MB incompressible file, so several
    1 MiB volumes; medium files; many small ones; a symlink, an empty file,
    an empty directory, names with a space and non-ASCII). GEN n: that tree's
    nth round of changes (in place, in a big file, appends, new, deleted,
    replaced files; every third round a new 1.5 MB file, an old one gone)."""
    seed = int(seed)
    gen = int(gen)
    r = random.Random(seed * 1000 + gen)
    mt = BASE_MTIME + 1000 * gen
    if gen == 0:
        os.makedirs(src, exist_ok=True)
        for d in ("docs", "docs/deep/deeper", "media", "empty dir", "z\u00e9"):
            os.makedirs(os.path.join(src, d), exist_ok=True)
        _write(os.path.join(src, "big.bin"), r.randbytes(2_500_000), mt)
        for i in range(3):
            _write(os.path.join(src, "media", f"m{i}.bin"), r.randbytes(r.randint(40_000, 200_000)), mt)
        for i in range(60):
            d = ("docs", "docs/deep", "docs/deep/deeper", "z\u00e9")[i % 4]
            words = " ".join(str(r.randint(0, 10**6)) for _ in range(r.randint(1, 400)))
            _write(os.path.join(src, d, f"note {i:02}.txt"), (words + "\n").encode(), mt - i)
        _write(os.path.join(src, "empty"), b"", mt)
        os.symlink("docs/note 00.txt", os.path.join(src, "link"))
        os.chmod(os.path.join(src, "media", "m1.bin"), 0o600)
        _dirs_mtime(src, mt)
        return
    # Round gen: changes at mtime mt (a new whole second for each round).
    big = os.path.join(src, "big.bin")
    with open(big, "rb") as f:
        data = bytearray(f.read())
    at = r.randrange(0, len(data) - 5000)
    data[at:at + 4096] = r.randbytes(4096)
    if gen % 2:
        data += r.randbytes(r.randint(1, 30_000))
    _write(big, bytes(data), mt)
    m = os.path.join(src, "media", f"m{gen % 3}.bin")
    with open(m, "ab") as f:
        f.write(r.randbytes(r.randint(1, 20_000)))
    os.utime(m, (mt, mt))
    notes = sorted(os.path.join(d, n) for d, _s, fs in os.walk(src) for n in fs if n.endswith(".txt"))
    for p in r.sample(notes, min(5, len(notes))):
        _write(p, f"round {gen} {r.random()}\n".encode(), mt)
    if len(notes) > 30:
        os.remove(r.choice(notes))
    _write(os.path.join(src, "docs", f"new {gen}.txt"), f"new in round {gen}\n".encode(), mt)
    if gen % 3 == 0:
        for n in os.listdir(os.path.join(src, "media")):
            if n.startswith("round") and n != f"round{gen}.bin":
                os.remove(os.path.join(src, "media", n))
        _write(os.path.join(src, "media", f"round{gen}.bin"), r.randbytes(1_500_000), mt)
    if gen % 4 == 2:
        # A file replaced by a directory, and back.
        p = os.path.join(src, "swap")
        if os.path.isdir(p):
            os.remove(os.path.join(p, "inside"))
            os.rmdir(p)
            _write(p, b"a file again\n", mt)
        else:
            if os.path.exists(p):
                os.remove(p)
            os.mkdir(p)
            _write(os.path.join(p, "inside"), b"inside\n", mt)
    _dirs_mtime(src, mt)


def digest(root, ignore=None):
    out = []

    def walk(d, rel):
        for e in sorted(os.scandir(d), key=lambda e: os.fsencode(e.name)):
            p = os.path.join(d, e.name)
            r = os.path.join(rel, e.name) if rel else e.name
            if ignore and e.name.startswith(ignore):
                continue
            st = os.lstat(p)
            mode = stat.S_IMODE(st.st_mode)
            name = os.fsencode(r).decode("utf-8", "backslashreplace")
            if stat.S_ISLNK(st.st_mode):
                out.append(f"{name}\tl\t{os.readlink(p)}")
            elif stat.S_ISDIR(st.st_mode):
                out.append(f"{name}\td\t{mode:o}\t{int(st.st_mtime)}")
                walk(p, r)
            elif stat.S_ISREG(st.st_mode):
                h = hashlib.sha256()
                with open(p, "rb") as f:
                    for b in iter(lambda: f.read(1 << 20), b""):
                        h.update(b)
                out.append(f"{name}\tf\t{mode:o}\t{int(st.st_mtime)}\t{st.st_size}\t{h.hexdigest()}")
            else:
                out.append(f"{name}\t?\t{st.st_mode:o}")

    walk(root, "")
    sys.stdout.write("".join(line + "\n" for line in out))


# ---------------------------------------------------------------- fault proxy

class Faults:
    def __init__(self, specs, log):
        self.rules = []
        for s in specs:
            action, cls, n = s.split(":")
            every = n.endswith("+")
            self.rules.append((action, cls, int(n.rstrip("+")), every))
        self.counts = {}
        self.lock = threading.Lock()
        self.log = open(log, "a", buffering=1)

    def decide(self, cls, method, path):
        with self.lock:
            n = self.counts[cls] = self.counts.get(cls, 0) + 1
            na = self.counts["any"] = self.counts.get("any", 0) + 1
            act = "forward"
            for action, rc, k, every in self.rules:
                i = na if rc == "any" else n
                if (rc == cls or rc == "any") and (i == k or (every and i > k)):
                    act = action
                    break
            self.log.write(f"{n}\t{cls}\t{method} {path}\t{act}\n")
            return act


def classify(method, target):
    path, _, query = target.partition("?")
    parts = [p for p in path.split("/") if p]
    if method == "DELETE" or (method == "POST" and "delete" in query.split("&")):
        return "delete"
    if method in ("PUT", "POST"):
        return "put"
    if method == "HEAD":
        return "head"
    if method == "GET":
        if len(parts) <= 1 or "list-type" in query or "prefix=" in query:
            return "list"
        return "get"
    return "other"


class Conn:
    """A buffered socket reader."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def fill(self):
        d = self.sock.recv(65536)
        if not d:
            raise EOFError
        self.buf += d

    def head(self):
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > 1 << 20:
                raise EOFError
            self.fill()
        h, self.buf = self.buf.split(b"\r\n\r\n", 1)
        return h + b"\r\n\r\n"

    def take(self, n):
        while len(self.buf) < n:
            self.fill()
        d, self.buf = self.buf[:n], self.buf[n:]
        return d

    def line(self):
        while b"\r\n" not in self.buf:
            self.fill()
        i = self.buf.index(b"\r\n") + 2
        d, self.buf = self.buf[:i], self.buf[i:]
        return d

    def rest(self):
        out = self.buf
        self.buf = b""
        try:
            while True:
                d = self.sock.recv(65536)
                if not d:
                    return out
                out += d
        except OSError:
            return out


def headers(h):
    lines = h.decode("latin-1").split("\r\n")
    first = lines[0]
    hs = {}
    for l in lines[1:]:
        if ":" in l:
            k, v = l.split(":", 1)
            hs[k.strip().lower()] = v.strip()
    return first, hs


def body(conn, hs, no_body=False, until_close=False):
    """The raw bytes of a message body as framed by its headers."""
    if no_body:
        return b""
    if "chunked" in hs.get("transfer-encoding", "").lower():
        out = b""
        while True:
            line = conn.line()
            out += line
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                while True:
                    t = conn.line()
                    out += t
                    if t == b"\r\n":
                        return out
            out += conn.take(size + 2)
    if "content-length" in hs:
        return conn.take(int(hs["content-length"]))
    return conn.rest() if until_close else b""


def rst(sock):
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    except OSError:
        pass
    sock.close()


def error_reply(code):
    reason = {500: "Internal Server Error", 503: "Service Unavailable"}[code]
    s3 = {500: "InternalError", 503: "SlowDown"}[code]
    b = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{s3}</Code><Message>injected by torture</Message></Error>'.encode()
    return (f"HTTP/1.1 {code} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {len(b)}\r\n\r\n").encode() + b


def serve(client, upstream, faults):
    c = Conn(client)
    up = None
    try:
        while True:
            h = c.head()
            first, hs = headers(h)
            if hs.get("expect", "").lower() == "100-continue":
                # Answered here (the header is not signed); the body follows.
                client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                h = b"\r\n".join(l for l in h.split(b"\r\n") if not l.lower().startswith(b"expect:"))
            method, target = first.split(" ")[:2]
            cls = classify(method, target)
            act = faults.decide(cls, method, target)
            if act == "reset":
                rst(client)
                return
            if act in ("500", "503"):
                body(c, hs)
                client.sendall(error_reply(int(act)))
                continue
            if act == "stall":
                body(c, hs)
                time.sleep(float(os.environ.get("TORTURE_STALL", "20")))
                client.close()
                return
            if up is None:
                up = Conn(socket.create_connection(upstream))
            if act == "cut" and method in ("PUT", "POST"):
                b = body(c, hs)
                up.sock.sendall(h + b[: len(b) // 2])
                up.sock.close()
                rst(client)
                return
            up.sock.sendall(h + body(c, hs))
            while True:
                rh = up.head()
                rfirst, rhs = headers(rh)
                status = int(rfirst.split(" ")[1])
                if status >= 200:
                    break
            rb = body(up, rhs, no_body=method == "HEAD" or status in (204, 304) or status < 200,
                      until_close="content-length" not in rhs)
            if act == "lost":
                up.sock.close()
                rst(client)
                return
            if act == "cut":
                client.sendall(rh + rb[: len(rb) // 2])
                up.sock.close()
                client.shutdown(socket.SHUT_RDWR)
                client.close()
                return
            client.sendall(rh + rb)
            if "content-length" not in rhs and "chunked" not in rhs.get("transfer-encoding", ""):
                client.close()
                return
    except (EOFError, OSError, ValueError, IndexError):
        pass
    finally:
        for s in (client, up.sock if up else None):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass


def proxy(upstream, portfile, log, specs):
    host, port = upstream.rsplit(":", 1)
    faults = Faults(specs, log)
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(64)
    tmp = portfile + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{ls.getsockname()[1]}\n")
    os.rename(tmp, portfile)
    while True:
        s, _ = ls.accept()
        threading.Thread(target=serve, args=(s, (host, int(port)), faults), daemon=True).start()


def main():
    a = sys.argv[1:]
    if len(a) == 4 and a[0] == "tree":
        tree(a[1], a[2], a[3])
    elif len(a) == 2 and a[0] == "digest":
        digest(a[1])
    elif len(a) == 4 and a[0] == "digest" and a[2] == "--ignore":
        digest(a[1], a[3])
    elif len(a) >= 4 and a[0] == "proxy":
        proxy(a[1], a[2], a[3], a[4:])
    else:
        sys.stderr.write(__doc__)
        sys.exit(2)


if __name__ == "__main__":
    main()
