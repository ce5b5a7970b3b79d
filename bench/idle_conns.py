#!/usr/bin/python3
"""Opens COUNT idle HTTP/2 connections to HOST:PORT and holds them: each sends the client
preface and an empty SETTINGS frame, waits for the server's SETTINGS (so the other side has
set up its HTTP/2 session) and acknowledges it. Prints "idle: ready N" once every connection
is up, then holds them for HOLD seconds or until SIGTERM. Run in a Pod by grpc_bench.py,
which reads the server's memory meanwhile."""

import resource
import select
import socket
import sys
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"      # empty SETTINGS
SETTINGS_ACK = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"  # its ACK
SETUP_TIMEOUT = 20.0


def main():
    host, port, count, hold = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 64), hard))
    socks = []
    for _ in range(count):
        s = socket.create_connection((host, port), timeout=5)
        s.sendall(PREFACE + SETTINGS)
        s.setblocking(False)
        socks.append(s)
    # The server's first frame must be its SETTINGS (RFC 9113 3.4); a connection is up once
    # those 9 header bytes arrived.
    pending = {s.fileno(): [s, b""] for s in socks}
    deadline = time.monotonic() + SETUP_TIMEOUT
    poller = select.poll()
    for fd in pending:
        poller.register(fd, select.POLLIN)
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            print(f"idle: only {count - len(pending)} of {count} connections got SETTINGS",
                  flush=True)
            return 1
        for fd, _ in poller.poll(left * 1000):
            s, got = pending[fd]
            data = s.recv(4096)
            if not data:
                print("idle: a connection closed during set-up", flush=True)
                return 1
            got += data
            if len(got) >= 9:
                if got[3] != 4:
                    print(f"idle: first frame type {got[3]}, not SETTINGS", flush=True)
                    return 1
                s.sendall(SETTINGS_ACK)
                poller.unregister(fd)
                del pending[fd]
            else:
                pending[fd][1] = got
    print(f"idle: ready {count}", flush=True)
    time.sleep(hold)
    for s in socks:
        s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
