#!/usr/bin/python3
"""Times connect() to HOST:PORT COUNT times, one socket at a time; prints one JSON line with
every sample in microseconds. Run inside a Pod by redirect_bench.py."""

import json
import socket
import sys
import time


def main():
    host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    samples = []
    for _ in range(count):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(5)
        t0 = time.perf_counter_ns()
        sock.connect((host, port))
        samples.append((time.perf_counter_ns() - t0) / 1000)
        sock.close()
    print(json.dumps({"samples_us": samples}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
