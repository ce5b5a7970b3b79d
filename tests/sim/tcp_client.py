#!/usr/bin/python3
"""A one-shot TCP client for tests, run inside a Pod (or the node). It does one exchange with
tcp_backend (or whatever listens) and prints one JSON object on stdout.

    tcp_client.py peer   HOST PORT                 PEER: who the backend sees
    tcp_client.py echo   HOST PORT --bytes N       ECHO: send and receive N bytes concurrently
    tcp_client.py sink   HOST PORT --bytes N       SINK: send N, shutdown(WR), read the answer
    tcp_client.py source HOST PORT --bytes N --after M
                                                   SOURCE: read N until the server's FIN, then
                                                   send M more bytes and shutdown(WR)
    tcp_client.py raw    HOST PORT [--send TEXT]   connect, maybe send, read until EOF/reset

HOST with a ':' is dialled with an AF_INET6 socket (so ::ffff:198.19.0.10 is a v4-mapped
dial, as gRPC C-core does). Every result has "ok", "op", "local" (getsockname), "peer"
(getpeername, what the app sees as its peer), "connect_ms"; "error" when not ok.
"""

import argparse
import hashlib
import json
import socket
import sys
import threading
import time

if __package__:
    from . import payload
else:  # run as a script: the sim folder is sys.path[0]
    import payload


def _recv_all(sock, sink=None):
    """Reads until EOF; returns (count, sha256hex). sink(data) sees every chunk."""
    h = hashlib.sha256()
    n = 0
    while True:
        data = sock.recv(262144)
        if not data:
            return n, h.hexdigest()
        n += len(data)
        h.update(data)
        if sink:
            sink(data)


def _send_stream(sock, n, seed):
    for chunk in payload.chunks(n, seed):
        sock.sendall(chunk)


def _addr(a):
    return [a[0], a[1]]


def _op_peer(sock, args, out):
    sock.sendall(b"PEER\n")
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > 4096:
            break
    reply = data.decode("ascii", "replace").strip()
    out["reply"] = reply
    words = reply.split()
    if len(words) != 2 or not words[1].isdigit():
        raise RuntimeError(f"bad PEER reply {reply!r}")
    out["seen"] = [words[0], int(words[1])]


def _op_echo(sock, args, out):
    n = args.bytes
    errors = []

    def sender():
        try:
            sock.sendall(b"ECHO\n")
            _send_stream(sock, n, payload.SEED_CLIENT)
            sock.shutdown(socket.SHUT_WR)
        except Exception as e:
            errors.append(f"send: {type(e).__name__}: {e}")

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    got, sha = _recv_all(sock)
    t.join(args.timeout)
    if t.is_alive():
        errors.append("send: still sending after the receive side ended")
    out.update(sent=n, received=got, sha_sent=payload.sha256(n, payload.SEED_CLIENT),
               sha_received=sha)
    out["identical"] = got == n and sha == out["sha_sent"]
    if errors:
        raise RuntimeError("; ".join(errors))


def _op_sink(sock, args, out):
    n = args.bytes
    sock.sendall(b"SINK\n")
    _send_stream(sock, n, payload.SEED_CLIENT)
    sock.shutdown(socket.SHUT_WR)
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    reply = data.decode("ascii", "replace").strip()
    out.update(sent=n, sha_sent=payload.sha256(n, payload.SEED_CLIENT), reply=reply)
    words = reply.split()
    if len(words) != 2 or not words[0].isdigit():
        raise RuntimeError(f"bad SINK reply {reply!r}")
    out["server_count"], out["server_sha"] = int(words[0]), words[1]
    out["match"] = out["server_count"] == n and out["server_sha"] == out["sha_sent"]


def _op_source(sock, args, out):
    n, m = args.bytes, args.after
    sock.sendall(f"SOURCE {n}\n".encode())
    got, sha = _recv_all(sock)  # returns at the server's FIN
    out.update(expected=n, received=got, sha_received=sha)
    out["identical"] = got == n and sha == payload.sha256(n, payload.SEED_SOURCE)
    # The write side is still open: what goes now must still reach the server.
    _send_stream(sock, m, payload.SEED_AFTER_FIN)
    sock.shutdown(socket.SHUT_WR)
    out.update(sent_after=m, sha_after=payload.sha256(m, payload.SEED_AFTER_FIN))
    extra, _ = _recv_all(sock)
    out["received_after_fin"] = extra


def read_until_end(sock, out, limit):
    """Reads up to `limit` bytes, until EOF, a reset or the socket's timeout; says which in
    out (eof, reset, timeout) and returns the bytes."""
    data = b""
    out.update(eof=False, reset=False, timeout=False)
    try:
        while len(data) < limit:
            chunk = sock.recv(4096)
            if not chunk:
                out["eof"] = True
                break
            data += chunk
    except ConnectionResetError:
        out["reset"] = True
    except socket.timeout:
        out["timeout"] = True
    return data


def _op_raw(sock, args, out):
    """Reports what the other end does with the connection: data, EOF, reset, silence."""
    if args.send:
        try:
            sock.sendall(args.send.encode())
        except OSError as e:
            out["send_error"] = f"{type(e).__name__}: {e}"
    data = read_until_end(sock, out, 65536)
    out["data_len"] = len(data)
    out["data"] = data[:256].decode("latin-1")


OPS = {"peer": _op_peer, "echo": _op_echo, "sink": _op_sink, "source": _op_source, "raw": _op_raw}


def run(args):
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    out = {"ok": False, "op": args.op, "target": [args.host, args.port]}
    t0 = time.monotonic()
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(args.timeout)
        if args.bind:
            sock.bind((args.bind, 0))
        try:
            sock.connect((args.host, args.port))
        except OSError as e:
            out["connect_error"] = f"{type(e).__name__}: {e}"
            raise
        out["connect_ms"] = round((time.monotonic() - t0) * 1000, 3)
        out["local"] = _addr(sock.getsockname())
        out["peer"] = _addr(sock.getpeername())
        if args.read_timeout is not None:
            sock.settimeout(args.read_timeout)
        OPS[args.op](sock, args, out)
        out["ok"] = True
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"
    finally:
        sock.close()
        out["total_ms"] = round((time.monotonic() - t0) * 1000, 3)
    return out


def parser():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("op", choices=sorted(OPS))
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--bytes", type=int, default=0)
    ap.add_argument("--after", type=int, default=0, help="source: bytes to send after the FIN")
    ap.add_argument("--send", default="", help="raw: text to send first")
    ap.add_argument("--bind", default="", help="local address to bind before connecting")
    ap.add_argument("--timeout", type=float, default=10.0, help="connect and I/O timeout (s)")
    ap.add_argument("--read-timeout", type=float, default=None,
                    help="I/O timeout after the connect (default: --timeout)")
    return ap


def argv(op, host, port, **opts):
    """The argument list after the script path: argv("peer", "198.19.0.10", 7000, timeout=2)."""
    out = [op, str(host), str(port)]
    for k, v in opts.items():
        if v is not None:
            out += ["--" + k.replace("_", "-"), str(v)]
    return out


def dial(place, op, host, port, *, run_timeout=None, run_kw=None, **opts):
    """Runs one exchange from `place` (a Pod, or the Node with run_kw={"cgroup": ...}) and
    returns the client's JSON result as a dict."""
    import os
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tcp_client.py")
    budget = run_timeout or (float(opts.get("timeout") or 10.0) * 3 + 10)
    p = place.run(["/usr/bin/python3", script, *argv(op, host, port, **opts)],
                  timeout=budget, check=False, **(run_kw or {}))
    try:
        return json.loads(p.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise RuntimeError(f"tcp_client gave no result (rc {p.returncode})\n"
                           f"stdout: {p.stdout}\nstderr: {p.stderr}") from None


def main():
    print(json.dumps(run(parser().parse_args()), sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
