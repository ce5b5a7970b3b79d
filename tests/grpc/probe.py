#!/usr/bin/python3
"""Small protocol probes for the passthrough tests, run inside a client Pod; one JSON object
on stdout, "ok" false with "error" when the exchange failed.

    probe.py dribble HOST PORT --text T [--first N] [--gap-ms G]
        sends the first N bytes of T one byte per segment, G ms apart (TCP_NODELAY), then
        the rest; reads the answer until EOF. A proxy that sniffs the first bytes must wait
        for enough of them, and must replay what it held back.
    probe.py tls HOST PORT --ca PEM --name SNI [--alpn h2,http/1.1] [--send LINE]
        TLS handshake verifying the server against --ca for --name, then sends LINE and
        reads one line back; reports version, ALPN, the server certificate's sha256.
    probe.py handed-over HOST PORT
        a process connects and hands the connection to its child, then exits (and is
        reaped) before the child makes one unary gRPC call over it; reports the response's
        headers and trailers, merged. The process that made the connect is gone by the call.
    probe.py moved HOST PORT
        connects, moves itself to a new network namespace (unshare), then makes the call:
        the connecting process now leads to another namespace than the connect's.

HOST with a ':' is dialled with an AF_INET6 socket.
"""

import argparse
import hashlib
import json
import socket
import ssl
import sys
import time


def _connect(host, port, timeout):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect((host, port))
    return sock


def _read_until_eof(sock, limit=1 << 20):
    data = b""
    while len(data) < limit:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def dribble(args, out):
    text = args.text.encode().decode("unicode_escape").encode("latin-1")
    sock = _connect(args.host, args.port, args.timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        first = min(args.first, len(text))
        for i in range(first):
            sock.sendall(text[i:i + 1])
            time.sleep(args.gap_ms / 1000.0)
        sock.sendall(text[first:])
        data = _read_until_eof(sock)
    finally:
        sock.close()
    head = data.split(b"\r\n", 1)[0].decode("latin-1")
    out.update(sent=len(text), received=len(data), status_line=head,
               body=data.decode("latin-1")[:2000])


def tls(args, out):
    ctx = ssl.create_default_context(cafile=args.ca)
    if args.alpn:
        ctx.set_alpn_protocols(args.alpn.split(","))
    raw = _connect(args.host, args.port, args.timeout)
    with ctx.wrap_socket(raw, server_hostname=args.name) as sock:
        der = sock.getpeercert(binary_form=True)
        out.update(version=sock.version(), alpn=sock.selected_alpn_protocol(),
                   cert_sha256=hashlib.sha256(der).hexdigest())
        if args.send:
            sock.sendall(args.send.encode() + b"\n")
            line = b""
            while not line.endswith(b"\n") and len(line) < 65536:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                line += chunk
            out["reply"] = line.decode("utf-8", "replace")


def _grpc_unary(sock, host, port, timeout):
    import h2.config
    import h2.connection
    import h2.events
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                header_encoding="utf-8"))
    conn.initiate_connection()
    stream = conn.get_next_available_stream_id()
    conn.send_headers(stream, [(":method", "POST"), (":scheme", "http"),
                               (":path", "/spindle.test.Echo/Unary"),
                               (":authority", f"{host}:{port}"),
                               ("content-type", "application/grpc"), ("te", "trailers")])
    conn.send_data(stream, b"\x00\x00\x00\x00\x00", end_stream=True)
    sock.sendall(conn.data_to_send())
    headers, ended = {}, False
    deadline = time.monotonic() + timeout
    while not ended and time.monotonic() < deadline:
        data = sock.recv(65536)
        if not data:
            break
        for event in conn.receive_data(data):
            if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                headers.update(dict(event.headers))
            ended = ended or isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset))
        sock.sendall(conn.data_to_send())
    return headers


def handed_over(args, out):
    import os
    read_end, write_end = os.pipe()
    connector = os.fork()
    if connector == 0:  # connects, leaves the socket to its own child, and exits
        os.close(read_end)
        sock = _connect(args.host, args.port, args.timeout)
        me = os.getpid()
        if os.fork() == 0:
            # The call, once the connector is gone and reaped.
            deadline = time.monotonic() + args.timeout
            while os.path.exists(f"/proc/{me}") and time.monotonic() < deadline:
                time.sleep(0.01)
            report = {"connector_gone": not os.path.exists(f"/proc/{me}")}
            try:
                report["headers"] = _grpc_unary(sock, args.host, args.port, args.timeout)
            except Exception as e:
                report["error"] = f"{type(e).__name__}: {e}"
            os.write(write_end, json.dumps(report).encode())
            os._exit(0)
        os._exit(0)
    os.close(write_end)
    os.waitpid(connector, 0)
    data = b""
    while True:
        chunk = os.read(read_end, 65536)
        if not chunk:
            break
        data += chunk
    os.close(read_end)
    report = json.loads(data or b"{}")
    if "error" in report:
        raise RuntimeError(report["error"])
    out.update(report)


def moved(args, out):
    """Connects, then moves itself to a new network namespace before the call: the process
    the connect came from now leads to another namespace than the connect's."""
    import ctypes
    sock = _connect(args.host, args.port, args.timeout)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x40000000) != 0:  # CLONE_NEWNET
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
    out["headers"] = _grpc_unary(sock, args.host, args.port, args.timeout)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("op", choices=["dribble", "tls", "handed-over", "moved"])
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--text", default="")
    ap.add_argument("--first", type=int, default=8)
    ap.add_argument("--gap-ms", type=int, default=30)
    ap.add_argument("--ca")
    ap.add_argument("--name")
    ap.add_argument("--alpn", default="")
    ap.add_argument("--send", default="")
    ap.add_argument("--timeout", type=float, default=5.0)
    args = ap.parse_args(argv)
    out = {"ok": False, "op": args.op, "target": [args.host, args.port]}
    t0 = time.monotonic()
    try:
        {"dribble": dribble, "tls": tls, "handed-over": handed_over,
         "moved": moved}[args.op](args, out)
        out["ok"] = True
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"
    out["ms"] = round((time.monotonic() - t0) * 1000, 1)
    print(json.dumps(out, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
