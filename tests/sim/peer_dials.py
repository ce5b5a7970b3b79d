#!/usr/bin/python3
"""Fresh connections one after another, each asking tcp_backend who it sees (PEER), run
inside a Pod. Prints one JSON object: {"answered", "unanswered", "ips", "own_port"}: the
addresses the backend saw, and how many answers showed the app's own port (the connection
was not relayed).

    peer_dials.py HOST PORT COUNT [--timeout S]
"""

import argparse
import json
import socket


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("count", type=int)
    ap.add_argument("--timeout", type=float, default=5.0)
    args = ap.parse_args()
    answered, unanswered, ips, own_port = 0, 0, set(), 0
    for _ in range(args.count):
        try:
            with socket.create_connection((args.host, args.port), timeout=args.timeout) as s:
                s.sendall(b"PEER\n")
                reply = s.makefile().readline().split()
                local_port = s.getsockname()[1]
        except OSError:
            reply = []
        if len(reply) != 2:
            unanswered += 1
            continue
        answered += 1
        ips.add(reply[0])
        own_port += int(reply[1]) == local_port
    print(json.dumps({"answered": answered, "unanswered": unanswered, "ips": sorted(ips),
                      "own_port": own_port}))


if __name__ == "__main__":
    main()
