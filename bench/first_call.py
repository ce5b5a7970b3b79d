#!/usr/bin/python3
"""Times a new Pod's first gRPC call to HOST:PORT: from the start of connect() to the end of
the call's response, the preface, SETTINGS and the call sent at once as a gRPC client does.
Then, on the same connection, two calls at once (untimed: with least_request they go to two
different endpoints, so a Pod ends with a connection of its own to each), and last one call
on a new connection, timed the same way: the Pod's next channel, once spindle's pools for it
are warm. Prints one JSON line {"first_us": ..., "again_us": ...}. A call counts when a DATA
frame came before its stream ended (spindle's own failures are trailers-only). Run in a fresh
Pod by grpc_bench.py.

    first_call.py HOST PORT AUTHORITY PATH"""

import json
import socket
import sys
import time

from idle_conns import (ACK, DATA, END_STREAM, HEADERS, PING, PREFACE, SETTINGS, call_frames,
                        frame)

TIMEOUT = 10.0  # s for each connection's calls, all together


class Calls:
    """One client connection: sends calls, reads frames until every stream it sent ended."""

    def __init__(self, host, port):
        # Not create_connection(): its getaddrinfo() reads the resolver's files the first
        # time, which took milliseconds of the first call. A literal address needs none.
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect((host, port))
        self.connected = time.perf_counter_ns()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.next_id = 1

    def call(self, authority, path, count=1, preface=False):
        ids = list(range(self.next_id, self.next_id + 2 * count, 2))
        self.next_id += 2 * count
        out = (PREFACE + frame(SETTINGS, 0, 0)) if preface else b""
        self.sock.sendall(out + b"".join(call_frames(authority, path, i) for i in ids))
        pending, answered = set(ids), set()
        deadline = time.monotonic() + TIMEOUT
        while pending:
            if time.monotonic() > deadline:
                raise RuntimeError(f"streams {sorted(pending)} did not end in {TIMEOUT} s")
            kind, flags, stream_id, payload = self.read_frame()
            if kind == SETTINGS and not flags & ACK:
                self.sock.sendall(frame(SETTINGS, ACK, 0))
            elif kind == PING and not flags & ACK:
                self.sock.sendall(frame(PING, ACK, 0, payload))
            elif stream_id in pending:
                if kind == DATA and payload:
                    answered.add(stream_id)
                if kind in (HEADERS, DATA) and flags & END_STREAM:
                    pending.discard(stream_id)
                    if stream_id not in answered:
                        raise RuntimeError(f"stream {stream_id} ended without an answer")

    def read_frame(self):
        while True:
            if len(self.buf) >= 9:
                length = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) >= 9 + length:
                    kind, flags = self.buf[3], self.buf[4]
                    stream_id = int.from_bytes(self.buf[5:9], "big") & 0x7fffffff
                    payload, self.buf = self.buf[9:9 + length], self.buf[9 + length:]
                    return kind, flags, stream_id, payload
            data = self.sock.recv(65536)
            if not data:
                raise RuntimeError("the connection closed")
            self.buf += data

    def close(self):
        self.sock.close()


def timed_call(host, port, authority, path):
    """A new connection and one call on it: µs from connect() to the answer's end, µs of
    that in connect(), and the connection."""
    t0 = time.perf_counter_ns()
    conn = Calls(host, port)
    conn.call(authority, path, preface=True)
    return (time.perf_counter_ns() - t0) / 1000, (conn.connected - t0) / 1000, conn


def main():
    if len(sys.argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    host, port, authority, path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    try:
        first_us, first_connect_us, conn = timed_call(host, port, authority, path)
        conn.call(authority, path, count=2)
        again_us, again_connect_us, again = timed_call(host, port, authority, path)
        conn.close()
        again.close()
    except (OSError, RuntimeError) as e:
        print(f"first_call: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"first_us": first_us, "first_connect_us": first_connect_us,
                      "again_us": again_us, "again_connect_us": again_connect_us}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
