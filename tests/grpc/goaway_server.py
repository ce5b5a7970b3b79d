#!/usr/bin/python3
"""An HTTP/2 endpoint that refuses every call it is sent: on each connection it answers the
first request's HEADERS with GOAWAY(last-stream-id 0, NO_ERROR), so that stream and every
one after it were never processed. A proxy must send those calls to another endpoint.

    goaway_server.py --port 50051 --log FILE

python3-h2 speaks the protocol; every refused stream is appended to --log as a JSON line
({"ev": "refused", "stream": id, "path": ...}). Prints "goaway_server: listening" once it
serves.
"""

import argparse
import os
import socket
import sys
import threading

import h2.config
import h2.connection
import h2.events

# tests/sim's JSON-lines log, imported as a plain module: appended, so that none of sim's
# modules (dns, proc, ...) hides one of the same name.
sys.path.append(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sim"))
from jsonl import JsonLinesLog  # noqa: E402

MAX_CONNECTIONS = 10_000


def serve(conn, log):
    h2conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    h2conn.initiate_connection()
    conn.sendall(h2conn.data_to_send())
    sent_goaway = False
    with conn:
        while True:
            data = conn.recv(65536)
            if not data:
                return
            for event in h2conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    headers = dict(event.headers)
                    log.write({"ev": "refused", "stream": event.stream_id,
                               "path": headers.get(b":path", b"").decode()})
                    if not sent_goaway:
                        h2conn.close_connection(error_code=0, last_stream_id=0)
                        sent_goaway = True
            out = h2conn.data_to_send()
            if out:
                conn.sendall(out)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=50051)
    parser.add_argument("--log", required=True)
    args = parser.parse_args()
    listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    listener.bind(("::", args.port))
    listener.listen(128)
    print("goaway_server: listening", flush=True)
    log = JsonLinesLog(args.log)
    for _ in range(MAX_CONNECTIONS):
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn, log), daemon=True).start()


if __name__ == "__main__":
    main()
