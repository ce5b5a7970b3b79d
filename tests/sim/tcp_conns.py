#!/usr/bin/python3
"""Many TCP connections from one place (a Pod), for tests of what a redirect leaves behind.
Prints JSON on stdout, one object per line.

    tcp_conns.py churn HOST PORT --count N [--seconds S]
        N connections one after the other, each reset (SO_LINGER 0) as soon as it is
        established, as clients that time out do; stops early after S seconds.
        {"made": n, "failed": n, "errors": {...}, "seconds": s}
    tcp_conns.py hold HOST PORT [--echo]
        one connection held open: {"local": [...], "peer": [...]} (getpeername, what the app
        sees) at once and again at each SIGUSR1; exits at SIGTERM. With --echo it opens with
        "ECHO\n" (tcp_backend) and each report adds "echoed": whether a line came back.
    tcp_conns.py dial HOST PORT [--ports P,P,...] [--count N] [--send TEXT] [--hold]
        one connection from each port (bound first), or N from ports the kernel picks; each
        sends TEXT and reads until EOF, reset or --timeout: {"dials": [{"local", "data",
        "eof", "reset", "timeout", "error"}, ...]}. With --hold: after sending, print
        {"local": [...]} per connection and keep them all open (reset when the process dies).

HOST with a ':' is dialled with an AF_INET6 socket.
"""

import argparse
import json
import signal
import socket
import struct
import sys
import time

if __package__:
    from .tcp_client import read_until_end
else:  # run as a script: the sim folder is sys.path[0]
    from tcp_client import read_until_end

LINGER_RESET = struct.pack("ii", 1, 0)


def _family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _print(obj):
    print(json.dumps(obj, sort_keys=True), flush=True)


def churn(args):
    family = _family(args.host)
    target = (args.host, args.port)
    made = failed = 0
    errors = {}
    t0 = time.monotonic()
    deadline = t0 + args.seconds
    for i in range(args.count):
        # The clock is read every 256 connects: a syscall per connect would slow the loop.
        if i % 256 == 0 and time.monotonic() > deadline:
            break
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        try:
            s.connect(target)
            made += 1
        except OSError as e:
            failed += 1
            errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
        s.close()
    _print({"made": made, "failed": failed, "errors": errors,
            "seconds": round(time.monotonic() - t0, 3)})


def hold(args):
    s = socket.socket(_family(args.host), socket.SOCK_STREAM)
    s.settimeout(args.timeout)
    s.connect((args.host, args.port))
    if args.echo:
        s.sendall(b"ECHO\n")

    def report(*_):
        try:
            out = {"local": list(s.getsockname()[:2]), "peer": list(s.getpeername()[:2])}
            if args.echo:
                s.sendall(b"ping\n")
                got = b""
                while len(got) < 5:
                    chunk = s.recv(5 - len(got))
                    if not chunk:
                        break
                    got += chunk
                out["echoed"] = got == b"ping\n"
            _print(out)
        except OSError as e:
            _print({"error": f"{type(e).__name__}: {e}"})

    signal.signal(signal.SIGUSR1, report)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    report()
    while True:
        signal.pause()


def dial(args):
    family = _family(args.host)
    ports = [int(p) for p in args.ports.split(",")] if args.ports else [0] * args.count
    socks, dials = [], []
    for port in ports:
        out = {"local": None}
        s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(args.timeout)
        try:
            if port:
                # The port may still be in TIME_WAIT toward another destination.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((args.bind, port))
            s.connect((args.host, args.port))
            out["local"] = list(s.getsockname()[:2])
            if args.send:
                s.sendall(args.send.encode())
            if args.hold:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
                socks.append(s)
            else:
                out["data"] = read_until_end(s, out, 4096).decode("latin-1")
        except OSError as e:
            out["error"] = f"{type(e).__name__}: {e}"
        if not args.hold:
            s.close()
        dials.append(out)
    _print({"dials": dials})
    if args.hold:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while True:
            signal.pause()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("op", choices=["churn", "hold", "dial"])
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--ports", default="", help="dial: local ports to bind, comma-separated")
    ap.add_argument("--bind", default="", help="dial: local address to bind with --ports")
    ap.add_argument("--send", default="", help="dial: text to send")
    ap.add_argument("--hold", action="store_true", help="dial: keep the connections open")
    ap.add_argument("--echo", action="store_true", help="hold: an echo round trip per report")
    ap.add_argument("--timeout", type=float, default=5.0)
    args = ap.parse_args()
    {"churn": churn, "hold": hold, "dial": dial}[args.op](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
