#!/usr/bin/python3
"""A Pod that holds server streams open and never grants HTTP/2 flow-control window: the
noisy neighbour of the isolation tests. Written with python3-h2 so that what it does on the
wire is exactly this (a gRPC library would grant window as the app reads).

    stall_client.py TARGET [--connections 8] [--streams 10] [--size 65536] [--messages 1000]
                    [--hold 60] [--run ID]

Opens --connections HTTP/2 connections to TARGET and on each --streams calls of
/spindle.test.Echo/ServerStream, each asking for --messages messages of --size bytes (far more
than any window). It reads every frame (SETTINGS and PINGs are answered) but never sends a
WINDOW_UPDATE, so each connection takes the peer's first 65,535 bytes and then nothing.

Stdout, one JSON object per line, flushed as it happens:
    {"ev": "holding", "streams": N, "bytes": B}   every stream has its response headers
    {"ev": "reset", "conn": K, "stream": ID, "code": C, "t": unix_s}   a RST_STREAM came
    {"ev": "summary", "headers": N, "resets": {code: n}, "ended": n, "closed": n, "bytes": B}
The summary is written when --hold seconds have passed or on SIGTERM.
"""

import argparse
import json
import selectors
import signal
import socket
import struct
import sys
import time

import h2.config
import h2.connection
import h2.events

SERVER_STREAM = "/spindle.test.Echo/ServerStream"
MAX_CONNECTIONS = 64
MAX_STREAMS = 100
MAX_HOLD = 300.0


def emit(obj):
    print(json.dumps(obj, sort_keys=True), flush=True)


def split_target(target):
    if target.startswith("["):
        host, _, port = target[1:].partition("]:")
    else:
        host, _, port = target.rpartition(":")
    return host, int(port)


class Conn:
    def __init__(self, index, target, args):
        host, port = split_target(target)
        self.index = index
        self.sock = socket.create_connection((host, port), timeout=5)
        self.sock.setblocking(False)
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8"))
        self.h2.initiate_connection()
        self.streams = []
        body = json.dumps({"n": args.messages, "size": args.size, "seed": index}).encode()
        message = struct.pack(">BI", 0, len(body)) + body
        for i in range(args.streams):
            sid = self.h2.get_next_available_stream_id()
            self.h2.send_headers(sid, [
                (":method", "POST"), (":scheme", "http"), (":path", SERVER_STREAM),
                (":authority", target), ("content-type", "application/grpc"), ("te", "trailers"),
                ("x-call-id", f"{args.run}-s-{index}-{i}")])
            self.h2.send_data(sid, message, end_stream=True)
            self.streams.append(sid)
        self.open = True
        self.pending = b""
        self.flush()

    def flush(self):
        self.pending += self.h2.data_to_send()
        while self.pending:
            try:
                n = self.sock.send(self.pending)
            except BlockingIOError:
                return
            self.pending = self.pending[n:]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("target", help="host:port or [v6]:port")
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--streams", type=int, default=10, help="per connection")
    ap.add_argument("--size", type=int, default=65536, help="bytes per message asked for")
    ap.add_argument("--messages", type=int, default=1000, help="messages per stream asked for")
    ap.add_argument("--hold", type=float, default=60.0, help="s to hold, then summary and exit")
    ap.add_argument("--run", default="stall", help="prefix of the call ids")
    args = ap.parse_args(argv)
    args.connections = max(1, min(args.connections, MAX_CONNECTIONS))
    args.streams = max(1, min(args.streams, MAX_STREAMS))

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    conns = [Conn(i, args.target, args) for i in range(args.connections)]
    sel = selectors.DefaultSelector()
    for c in conns:
        sel.register(c.sock, selectors.EVENT_READ, c)
    want = args.connections * args.streams
    headers, ended, closed, received = set(), set(), 0, 0
    resets = {}
    holding_told = False
    t_end = time.monotonic() + min(args.hold, MAX_HOLD)
    # Bounded: one round per 50 ms at most for --hold seconds, and a cap on rounds.
    for _ in range(int(MAX_HOLD / 0.001)):
        if stop or time.monotonic() >= t_end:
            break
        for key, _ in sel.select(timeout=0.05):
            c = key.data
            try:
                data = c.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                sel.unregister(c.sock)
                c.open = False
                closed += 1
                continue
            for ev in c.h2.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    headers.add((c.index, ev.stream_id))
                elif isinstance(ev, h2.events.DataReceived):
                    received += len(ev.data)  # and never acknowledged: no WINDOW_UPDATE
                elif isinstance(ev, h2.events.StreamReset):
                    resets[ev.error_code] = resets.get(ev.error_code, 0) + 1
                    emit({"ev": "reset", "conn": c.index, "stream": ev.stream_id,
                          "code": int(ev.error_code), "t": time.time()})
                elif isinstance(ev, h2.events.StreamEnded):
                    ended.add((c.index, ev.stream_id))
            c.flush()
        if not holding_told and len(headers) == want:
            holding_told = True
            emit({"ev": "holding", "streams": len(headers), "bytes": received})
    emit({"ev": "summary", "headers": len(headers), "ended": len(ended), "closed": closed,
          "bytes": received, "resets": {str(int(k)): v for k, v in resets.items()}})
    for c in conns:
        c.sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
