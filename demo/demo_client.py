#!/usr/bin/python3
"""The app of `make demo`: an ordinary gRPC client (python3-grpcio) that knows nothing of
spindle. It opens ONE channel to TARGET, as real apps do, and makes steady unary calls on it,
RATE a second, for at most SECONDS or until SIGTERM.

    demo_client.py TARGET [--rate 80] [--seconds 60] [--report 0.2]

Every --report seconds it prints one JSON line on stdout with its running totals: the calls
answered per backend Pod (the x-pod header the server sets) and the failed calls per status:

    {"t": unix_s, "pods": {"echo-1": 120, ...}, "errors": {"UNAVAILABLE": 1}, "done": false}

The last line, after SIGTERM or the time limit, has "done": true. "demo_client: started" goes
to stderr once grpcio is loaded and the channel made.
"""

import argparse
import collections
import json
import os
import signal
import sys
import threading
import time

import grpc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests", "grpc"))
import echo_service as es  # noqa: E402  (tests/grpc: the method path the servers serve)

MAX_SECONDS = 120.0
MAX_RATE = 1000.0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("target", help="host:port the app dials (the Service's ClusterIP)")
    ap.add_argument("--rate", type=float, default=80.0, help="calls per second")
    ap.add_argument("--seconds", type=float, default=60.0, help="stop after this long")
    ap.add_argument("--report", type=float, default=0.2, help="seconds between report lines")
    ap.add_argument("--timeout", type=float, default=2.0, help="deadline of each call (s)")
    args = ap.parse_args(argv)
    rate = min(max(args.rate, 1.0), MAX_RATE)
    seconds = min(max(args.seconds, 0.0), MAX_SECONDS)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    pods, errors = collections.Counter(), collections.Counter()
    lock = threading.Lock()

    def report(done=False):
        with lock:
            line = {"t": round(time.time(), 3), "pods": dict(pods), "errors": dict(errors),
                    "done": done}
        print(json.dumps(line, sort_keys=True), flush=True)

    # No client-side retries: what the demo shows is what the path did.
    channel = grpc.insecure_channel(args.target, options=[("grpc.enable_retries", 0)])
    unary = channel.unary_unary(es.UNARY)
    print("demo_client: started", file=sys.stderr, flush=True)

    def reporter():
        for _ in range(int(seconds / args.report) + 2):
            if stop.wait(args.report):
                return
            report()
    threading.Thread(target=reporter, daemon=True).start()

    t0 = time.monotonic()
    t_end = t0 + seconds
    for i in range(int(rate * seconds) + 1):
        # The schedule, not the previous call, says when call i starts.
        wait = t0 + i / rate - time.monotonic()
        if wait > 0 and stop.wait(wait):
            break
        if stop.is_set() or time.monotonic() >= t_end:
            break
        try:
            _, call = unary.with_call(b"hello", timeout=args.timeout)
            pod = es.md_get(call.initial_metadata(), "x-pod") or "?"
            with lock:
                pods[pod] += 1
        except grpc.RpcError as e:
            code = e.code().name if hasattr(e, "code") and e.code() else type(e).__name__
            with lock:
                errors[code] += 1
    stop.set()
    channel.close()
    report(done=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
