#!/usr/bin/python3
"""Opens COUNT idle HTTP/2 connections to HOST:PORT and holds them: each sends the client
preface and an empty SETTINGS frame, waits for the server's SETTINGS (so the other side has
set up its HTTP/2 session) and acknowledges it. With --call AUTHORITY PATH, each connection
then makes one unary gRPC call and waits for its end before it goes idle: a connection that
has carried a call, as most idle gRPC channels have. Prints "idle: ready N" once every
connection is up, then holds them for HOLD seconds or until SIGTERM. Run in a Pod by
grpc_bench.py, which reads the server's memory meanwhile.

    idle_conns.py HOST PORT COUNT HOLD [--call AUTHORITY PATH]"""

import resource
import select
import socket
import struct
import sys
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, SETTINGS, PING = 0, 1, 4, 6
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
SETUP_TIMEOUT = 20.0


def frame(kind, flags, stream_id, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + \
        struct.pack(">I", stream_id) + payload


def literal(name, value):
    """An HPACK literal field without indexing, new name, no Huffman (RFC 7541 6.2.2): the
    server's decoder table stays as it was. Names and values here are under 127 bytes."""
    name, value = name.encode(), value.encode()
    return bytes([0, len(name)]) + name + bytes([len(value)]) + value


def call_frames(authority, path, stream_id=1):
    block = b"".join(literal(n, v) for n, v in (
        (":method", "POST"), (":scheme", "http"), (":path", path), (":authority", authority),
        ("content-type", "application/grpc"), ("te", "trailers")))
    message = b"\x00" + struct.pack(">I", 100) + b"x" * 100  # one 100-byte gRPC message
    return (frame(HEADERS, END_HEADERS, stream_id, block)
            + frame(DATA, END_STREAM, stream_id, message))


class Conn:
    """One connection's frames as they arrive; done once it is as idle as asked."""

    def __init__(self, sock, call):
        self.sock, self.call, self.buf = sock, call, b""
        self.got_settings = self.call_ended = False

    def done(self):
        return self.got_settings and (self.call is None or self.call_ended)

    def feed(self, data):
        self.buf += data
        while len(self.buf) >= 9:
            length = int.from_bytes(self.buf[:3], "big")
            if len(self.buf) < 9 + length:
                return
            kind, flags = self.buf[3], self.buf[4]
            stream_id = int.from_bytes(self.buf[5:9], "big") & 0x7fffffff
            payload, self.buf = self.buf[9:9 + length], self.buf[9 + length:]
            if not self.got_settings and kind != SETTINGS:
                raise RuntimeError(f"first frame type {kind}, not SETTINGS")
            if kind == SETTINGS and not flags & ACK:
                self.sock.sendall(frame(SETTINGS, ACK, 0))
                if not self.got_settings and self.call is not None:
                    self.sock.sendall(self.call)
                self.got_settings = True
            elif kind == PING and not flags & ACK:
                self.sock.sendall(frame(PING, ACK, 0, payload))
            elif kind in (HEADERS, DATA) and stream_id == 1 and flags & END_STREAM:
                self.call_ended = True


def main():
    args = sys.argv[1:]
    call = None
    if len(args) == 7 and args[4] == "--call":
        call = call_frames(args[5], args[6])
        args = args[:4]
    if len(args) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    host, port, count, hold = args[0], int(args[1]), int(args[2]), float(args[3])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 64), hard))
    socks = []
    for _ in range(count):
        s = socket.create_connection((host, port), timeout=5)
        s.sendall(PREFACE + frame(SETTINGS, 0, 0))
        s.setblocking(False)
        socks.append(s)
    pending = {s.fileno(): Conn(s, call) for s in socks}
    deadline = time.monotonic() + SETUP_TIMEOUT
    poller = select.poll()
    for fd in pending:
        poller.register(fd, select.POLLIN)
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            print(f"idle: only {count - len(pending)} of {count} connections set up", flush=True)
            return 1
        for fd, _ in poller.poll(left * 1000):
            conn = pending[fd]
            data = conn.sock.recv(65536)
            if not data:
                print("idle: a connection closed during set-up", flush=True)
                return 1
            try:
                conn.feed(data)
            except RuntimeError as e:
                print(f"idle: {e}", flush=True)
                return 1
            if conn.done():
                poller.unregister(fd)
                del pending[fd]
    print(f"idle: ready {count}", flush=True)
    time.sleep(hold)
    for s in socks:
        s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
