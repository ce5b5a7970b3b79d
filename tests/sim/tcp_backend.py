#!/usr/bin/python3
"""A TCP backend for tests: listens on IPv4 and IPv6 at the given port(s); the first line a
client sends chooses what it does with the connection:

    PEER\\n       replies "<peer-ip> <peer-port>\\n" (who it sees as the client) and closes
    ECHO\\n       echoes every byte until EOF, then shutdown(WR) and closes
    SINK\\n       reads until EOF, replies "<count> <sha256hex>\\n" of what it read, closes
    SOURCE <n>\\n sends n bytes of payload.chunks(n, SEED_SOURCE), shutdown(WR), then reads
                 until EOF (what the client sends after the FIN) and closes

For every connection it appends one JSON line to --log when the connection ends, written
before the socket is closed:
    {"peer": ip, "peer_port": p, "local": ip, "local_port": p, "cmd": "SINK",
     "bytes_in": n, "sha256_in": hex, "bytes_out": n, "error": null, "t_open": s, "t_close": s}
bytes_in/sha256_in cover what the client sent after the command line.

Usage: tcp_backend.py --port 7000 [--port 7001] --log FILE
Prints "tcp_backend: listening ..." on stdout once every socket listens.
"""

import argparse
import hashlib
import json
import socket
import sys
import threading
import time

if __package__:
    from . import payload
    from .jsonl import JsonLinesLog, read_complete
    from .wait import wait_until
else:  # run as a script: the sim folder is sys.path[0]
    import payload
    from jsonl import JsonLinesLog, read_complete
    wait_until = None

MAX_LINE = 256
IDLE_TIMEOUT = 60.0   # a stuck peer cannot hold a thread forever
MAX_CONNECTIONS = 1024


def _read_line(conn):
    """Reads the command line; returns (line, bytes after it)."""
    buf = b""
    while b"\n" not in buf:
        if len(buf) > MAX_LINE:
            raise ValueError("command line too long")
        data = conn.recv(4096)
        if not data:
            raise EOFError("EOF before the command line")
        buf += data
    line, _, rest = buf.partition(b"\n")
    return line.decode("ascii", "replace").strip(), rest


def _send_all(conn, data, entry):
    conn.sendall(data)
    entry["bytes_out"] += len(data)


def _handle(conn, peer, local, log, slots):
    entry = {"peer": peer[0], "peer_port": peer[1], "local": local[0], "local_port": local[1],
             "cmd": None, "bytes_in": 0, "sha256_in": None, "bytes_out": 0, "error": None,
             "t_open": time.time()}
    h = hashlib.sha256()

    def take(data):
        entry["bytes_in"] += len(data)
        h.update(data)

    try:
        conn.settimeout(IDLE_TIMEOUT)
        line, rest = _read_line(conn)
        entry["cmd"] = line
        words = line.split()
        cmd = words[0] if words else ""
        if cmd == "PEER":
            _send_all(conn, f"{peer[0]} {peer[1]}\n".encode(), entry)
        elif cmd == "ECHO":
            data = rest
            while True:
                if data:
                    take(data)
                    _send_all(conn, data, entry)
                data = conn.recv(65536)
                if not data:
                    break
            conn.shutdown(socket.SHUT_WR)
        elif cmd == "SINK":
            take(rest)
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                take(data)
            _send_all(conn, f"{entry['bytes_in']} {h.hexdigest()}\n".encode(), entry)
        elif cmd == "SOURCE" and len(words) == 2 and words[1].isdigit():
            take(rest)
            for chunk in payload.chunks(int(words[1]), payload.SEED_SOURCE):
                _send_all(conn, chunk, entry)
            conn.shutdown(socket.SHUT_WR)
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                take(data)
        else:
            _send_all(conn, b"ERR unknown command\n", entry)
    except Exception as e:  # peers misbehave on purpose in tests: record it, never crash
        entry["error"] = f"{type(e).__name__}: {e}"
    finally:
        entry["sha256_in"] = h.hexdigest()
        entry["t_close"] = time.time()
        try:
            log.write(entry)
        finally:
            conn.close()
            slots.release()


def _fmt(addr):
    return f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"


def _accept_loop(lsock, log, slots):
    while True:
        slots.acquire()
        try:
            conn, peer = lsock.accept()
        except OSError:
            slots.release()
            return
        local = conn.getsockname()
        threading.Thread(target=_handle, args=(conn, peer[:2], local[:2], log, slots),
                         daemon=True).start()


def _listen(family, host, port):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((host, port))
    s.listen(512)
    return s


def main(argv=None):
    ap = argparse.ArgumentParser(description="test TCP backend (PEER/ECHO/SINK/SOURCE)")
    ap.add_argument("--port", type=int, action="append", required=True)
    ap.add_argument("--log", required=True, help="JSON line per connection, appended")
    ap.add_argument("--bind4", default="0.0.0.0")
    ap.add_argument("--bind6", default="::")
    args = ap.parse_args(argv)

    log = JsonLinesLog(args.log)
    slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
    socks = []
    for port in args.port:
        if args.bind4:
            socks.append(_listen(socket.AF_INET, args.bind4, port))
        if args.bind6:
            socks.append(_listen(socket.AF_INET6, args.bind6, port))
    threads = [threading.Thread(target=_accept_loop, args=(s, log, slots), daemon=True)
               for s in socks]
    for t in threads:
        t.start()
    print("tcp_backend: listening on " + " ".join(_fmt(s.getsockname()) for s in socks),
          flush=True)
    for t in threads:
        t.join()
    return 0


class BackendLog:
    """Reads a tcp_backend log: what the backend saw, one dict per finished connection."""

    def __init__(self, path):
        self.path = path

    def entries(self):
        return read_complete(self.path)

    def count(self):
        return len(self.entries())

    def since(self, mark):
        return self.entries()[mark:]

    def wait_for(self, predicate, timeout, *, since=0, what="a backend log entry"):
        """Waits for the first entry after index `since` matching predicate; returns it."""
        def find():
            for e in self.entries()[since:]:
                if predicate(e):
                    return e
            return None
        return wait_until(find, timeout, what=what,
                          details=lambda: f"{self.path}:\n" + "\n".join(
                              json.dumps(e) for e in self.entries()[since:][-10:]))


if __name__ == "__main__":
    sys.exit(main())
