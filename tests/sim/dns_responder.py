#!/usr/bin/python3
"""A scripted DNS server for the fault cases of spindle's DNS discovery, and a small DNS
client to check any server from inside a namespace. Stdlib only.

    dns_responder.py serve --listen 198.18.0.1 --port 5353 --control FILE --log FILE
    dns_responder.py query --server 198.18.0.1 --port 53 NAME [A|AAAA|...] [--tcp] [--edns N]

serve: UDP and TCP on the same address and port. What it answers is read from --control, a
JSON file the test rewrites atomically (write + rename); it is looked at again before every
query, so a change applies from the next query on:

    {"version": 3,                 # bump on every write: a new version restarts the scripts
     "ttl": 5,                     # default TTL of the records
     "unknown": "nxdomain",        # mode for a name that is not listed
     "names": {
       "echo-pods.demo.svc.cluster.local": {
          "a": ["198.18.1.3", ...], "aaaa": ["2001:2::1:3", ...], "ttl": 1,
          "mode": "answer",        # answer | empty | nxdomain | servfail | refused | drop | broken
          "script": ["empty", "nxdomain"],   # modes for the next queries of each type in
          "script_qtype": "A",               # script_qtype ("A", ["A", "AAAA"], "ANY"), one
                                             # per query, before `mode` applies again
          "truncate": "auto",      # UDP: auto (TC when the answer does not fit) | always | never
          "delay_ms": 0}}}         # answer this much later (UDP and TCP)

Modes: `answer` the records (NOERROR, NODATA for a type without records), `empty` NOERROR
with no answer, `nxdomain`, `servfail`, `refused`, `drop` (silence), `broken` (UDP answers
with TC set and no records; a TCP connection is closed as soon as the query arrived, so the
resolver's TCP fallback breaks). Names match case-insensitively, with or without the final
dot. A UDP answer larger than 512 bytes (or the EDNS size the query advertised, at most
4096) carries the records that fit and TC set; over TCP the whole answer goes.

Every query is appended to --log as one JSON line, flushed at once:

    {"t": unix_s, "transport": "udp"|"tcp", "client": "ip:port", "id": dns_id,
     "name": "echo-pods.demo.svc.cluster.local." (as on the wire, with the root dot),
     "type": "A", "mode": "answer", "rcode": "NOERROR" or null (no answer sent),
     "answers": n, "tc": bool, "size": bytes sent, "version": control version}

Prints "dns_responder: listening on ADDR port PORT" on stdout once both sockets are bound.
Bounded like every loop of the tests: it exits after --lifetime seconds, and on SIGTERM.

query: one question, one JSON object on stdout: {"ok", "rcode", "tc", "aa", "id",
"answers": [{"name", "type", "ttl", "data"}], "transport", "ms"} or "error". Over UDP a TC
answer is reported as it came (no TCP retry) unless --tcp-fallback.
"""

import argparse
import ipaddress
import json
import os
import random
import selectors
import signal
import socket
import struct
import sys
import threading
import time

if __package__:
    from .jsonl import JsonLinesLog
else:  # run as a script: the sim folder is sys.path[0]
    from jsonl import JsonLinesLog

TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28,
         "SRV": 33, "OPT": 41, "ANY": 255}
TYPE_NAMES = {v: k for k, v in TYPES.items()}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
RCODE_OF_MODE = {"answer": 0, "empty": 0, "nxdomain": 3, "servfail": 2, "refused": 5,
                 "broken": 0}
MODES = set(RCODE_OF_MODE) | {"drop"}
CLASS_IN = 1
UDP_PLAIN_MAX = 512
UDP_EDNS_CAP = 4096
MAX_TCP_CONNECTIONS = 64
TCP_IDLE = 10.0
MAX_DELAY_MS = 30_000


class FormatError(ValueError):
    pass


# --- wire format ---------------------------------------------------------------------------

def encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        if not label:
            continue
        raw = label.encode("idna") if not label.isascii() else label.encode()
        if len(raw) > 63:
            raise ValueError(f"label too long in {name}")
        out += bytes([len(raw)]) + raw
    return out + b"\0"


def decode_name(msg, off):
    """(name with the final dot, offset after the name); follows compression pointers."""
    labels = []
    end = None
    for _ in range(128):  # bounded: a pointer loop is a format error
        if off >= len(msg):
            raise FormatError("name runs past the message")
        n = msg[off]
        if n == 0:
            off += 1
            break
        if n & 0xC0 == 0xC0:
            if off + 1 >= len(msg):
                raise FormatError("truncated pointer")
            if end is None:
                end = off + 2
            off = ((n & 0x3F) << 8) | msg[off + 1]
            continue
        if n & 0xC0:
            raise FormatError("bad label type")
        labels.append(msg[off + 1:off + 1 + n].decode("ascii", "replace"))
        off += 1 + n
    else:
        raise FormatError("too many labels or a pointer loop")
    return ".".join(labels) + ".", (end if end is not None else off)


def parse_query(msg):
    """{"id", "flags", "name", "qtype", "qclass", "question": raw bytes, "edns": size or None}"""
    if len(msg) < 12:
        raise FormatError("short header")
    qid, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", msg[:12])
    if qd != 1:
        raise FormatError(f"{qd} questions")
    name, off = decode_name(msg, 12)
    if off + 4 > len(msg):
        raise FormatError("short question")
    qtype, qclass = struct.unpack("!HH", msg[off:off + 4])
    question = msg[12:off + 4]
    off += 4
    edns = None
    # skip answer and authority records, look for OPT among the additional ones
    for i in range(an + ns + ar):
        _, off = decode_name(msg, off)
        if off + 10 > len(msg):
            break
        rtype, rclass, _, rdlen = struct.unpack("!HHIH", msg[off:off + 10])
        if i >= an + ns and rtype == TYPES["OPT"]:
            edns = max(UDP_PLAIN_MAX, rclass)
        off += 10 + rdlen
    return {"id": qid, "flags": flags, "name": name, "qtype": qtype, "qclass": qclass,
            "question": question, "edns": edns}


def rr(rtype, ttl, rdata):
    """An answer record whose owner is the question name (pointer to offset 12)."""
    return struct.pack("!HHHIH", 0xC00C, rtype, CLASS_IN, ttl, len(rdata)) + rdata


def build_response(query, rcode, answers, *, tc=False, edns=False):
    flags = 0x8000 | (query["flags"] & 0x7800) | 0x0400 | (query["flags"] & 0x0100) | 0x0080
    if tc:
        flags |= 0x0200
    flags |= rcode & 0xF
    opt = struct.pack("!BHHIH", 0, TYPES["OPT"], 1232, 0, 0) if edns else b""
    header = struct.pack("!HHHHHH", query["id"], flags, 1, len(answers), 0, 1 if edns else 0)
    return header + query["question"] + b"".join(answers) + opt


def build_query(name, qtype, *, qid=None, edns=None, rd=True):
    qid = random.randrange(65536) if qid is None else qid
    flags = 0x0100 if rd else 0
    header = struct.pack("!HHHHHH", qid, flags, 1, 0, 0, 1 if edns else 0)
    opt = struct.pack("!BHHIH", 0, TYPES["OPT"], edns, 0, 0) if edns else b""
    return qid, header + encode_name(name) + struct.pack("!HH", qtype, CLASS_IN) + opt


def parse_response(msg):
    if len(msg) < 12:
        raise FormatError("short header")
    qid, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", msg[:12])
    off = 12
    question = None
    for _ in range(qd):
        question, off = decode_name(msg, off)
        off += 4
    answers = []
    for _ in range(an):
        name, off = decode_name(msg, off)
        rtype, _, ttl, rdlen = struct.unpack("!HHIH", msg[off:off + 10])
        off += 10
        rdata = msg[off:off + rdlen]
        off += rdlen
        if rtype == TYPES["A"] and rdlen == 4:
            data = str(ipaddress.IPv4Address(rdata))
        elif rtype == TYPES["AAAA"] and rdlen == 16:
            data = str(ipaddress.IPv6Address(rdata))
        elif rtype in (TYPES["CNAME"], TYPES["PTR"], TYPES["NS"]):
            data = decode_name(msg, off - rdlen)[0]
        else:
            data = rdata.hex()
        answers.append({"name": name, "type": TYPE_NAMES.get(rtype, str(rtype)), "ttl": ttl,
                        "data": data})
    return {"id": qid, "rcode": RCODES.get(flags & 0xF, str(flags & 0xF)),
            "tc": bool(flags & 0x0200), "aa": bool(flags & 0x0400), "qr": bool(flags & 0x8000),
            "question": question, "answers": answers}


# --- the server -----------------------------------------------------------------------------

def norm(name):
    return name.rstrip(".").lower()


class Control:
    """The control file, re-read when it changed (inode, size or mtime), and the script
    positions of the current version."""

    def __init__(self, path):
        self.path = path
        self._stamp = None
        self.data = {"version": 0, "ttl": 5, "unknown": "nxdomain", "names": {}}
        self.names = {}
        self.version = 0
        self._script_pos = {}
        self._lock = threading.Lock()

    def _reload(self):
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp == self._stamp:
            return
        try:
            with open(self.path) as f:
                data = json.load(f)
        except (OSError, ValueError) as e:
            sys.stderr.write(f"dns_responder: control file unreadable, kept the old one: {e}\n")
            return
        self._stamp = stamp
        self.data = data
        self.names = {norm(k): v for k, v in (data.get("names") or {}).items()}
        if data.get("version") != self.version:
            self._script_pos = {}
        self.version = data.get("version", 0)

    def decide(self, name, qtype):
        """(mode, entry or None, ttl, version) for one query; consumes a script step."""
        with self._lock:
            self._reload()
            key = norm(name)
            entry = self.names.get(key)
            ttl = int(self.data.get("ttl", 5))
            if entry is None:
                return self.data.get("unknown", "nxdomain"), None, ttl, self.version
            ttl = int(entry.get("ttl", ttl))
            mode = entry.get("mode", "answer")
            script = entry.get("script") or []
            types = entry.get("script_qtype", "A")
            types = [types] if isinstance(types, str) else list(types)
            if script and any(t == "ANY" or TYPES.get(t) == qtype for t in types):
                # one position per type: with ["A", "AAAA"], a resolver that asks both
                # types each round gets step k for both in round k
                pos_key = (key, qtype)
                pos = self._script_pos.get(pos_key, 0)
                if pos < len(script):
                    mode = script[pos]
                    self._script_pos[pos_key] = pos + 1
            return mode, entry, ttl, self.version


class Responder:
    def __init__(self, args):
        self.args = args
        self.control = Control(args.control)
        self.log = JsonLinesLog(args.log).write
        self.stop = threading.Event()
        self.tcp_count = 0
        self.tcp_lock = threading.Lock()

    def answer(self, raw, transport, client):
        """(response bytes or None, close_connection) for one query message."""
        t = time.time()
        entry = {"t": t, "transport": transport, "client": client}
        try:
            q = parse_query(raw)
        except (FormatError, struct.error) as e:
            entry.update(error=str(e), rcode=None, mode="unparsable")
            self.log(entry)
            return None, transport == "tcp"
        mode, rec, ttl, version = self.control.decide(q["name"], q["qtype"])
        if mode not in MODES:
            mode = "servfail"
        entry.update(id=q["id"], name=q["name"], type=TYPE_NAMES.get(q["qtype"], str(q["qtype"])),
                     mode=mode, version=version, edns=q["edns"])
        if mode == "drop":
            entry.update(rcode=None, answers=0, tc=False, size=0)
            self.log(entry)
            return None, False
        if mode == "broken" and transport == "tcp":
            entry.update(rcode=None, answers=0, tc=False, size=0, closed=True)
            self.log(entry)
            return None, True
        answers = []
        if mode == "answer" and rec is not None and q["qclass"] == CLASS_IN:
            if q["qtype"] in (TYPES["A"], TYPES["ANY"]):
                answers += [rr(TYPES["A"], ttl, ipaddress.IPv4Address(a).packed)
                            for a in rec.get("a", [])]
            if q["qtype"] in (TYPES["AAAA"], TYPES["ANY"]):
                answers += [rr(TYPES["AAAA"], ttl, ipaddress.IPv6Address(a).packed)
                            for a in rec.get("aaaa", [])]
        rcode = RCODE_OF_MODE[mode]
        edns = q["edns"] is not None
        tc = False
        if transport == "udp":
            limit = min(q["edns"], UDP_EDNS_CAP) if edns else UDP_PLAIN_MAX
            truncate = (rec or {}).get("truncate", "auto")
            full = build_response(q, rcode, answers, edns=edns)
            if mode == "broken" or truncate == "always":
                tc, answers = True, []
            elif truncate == "auto" and len(full) > limit:
                # as real servers do: the records that fit, and TC so the resolver asks
                # again over TCP instead of taking a partial set for the whole
                tc = True
                room = limit - (len(full) - sum(map(len, answers)))
                kept = []
                for a in answers:
                    if len(a) > room:
                        break
                    kept.append(a)
                    room -= len(a)
                answers = kept
        response = build_response(q, rcode, answers, tc=tc, edns=edns)
        entry.update(rcode=RCODES[rcode], answers=len(answers), tc=tc, size=len(response))
        delay = min(int((rec or {}).get("delay_ms", 0) or 0), MAX_DELAY_MS)
        if delay:
            entry["delay_ms"] = delay
            time.sleep(delay / 1000.0)
        self.log(entry)
        return response, False

    # UDP: one thread; a delayed answer gets a short-lived thread of its own.
    def serve_udp(self, sock):
        sel = selectors.DefaultSelector()
        sel.register(sock, selectors.EVENT_READ)
        while not self.stop.is_set():
            if not sel.select(timeout=0.2):
                continue
            try:
                raw, addr = sock.recvfrom(65535)
            except OSError:
                continue
            client = f"{addr[0]}:{addr[1]}"
            rec_delay = self._delay_for(raw)
            if rec_delay:
                threading.Thread(target=self._udp_reply, args=(sock, raw, addr, client),
                                 daemon=True).start()
            else:
                self._udp_reply(sock, raw, addr, client)

    def _delay_for(self, raw):
        try:
            q = parse_query(raw)
        except (FormatError, struct.error):
            return 0
        entry = self.control.names.get(norm(q["name"])) or {}
        return int(entry.get("delay_ms", 0) or 0)

    def _udp_reply(self, sock, raw, addr, client):
        response, _ = self.answer(raw, "udp", client)
        if response is not None:
            try:
                sock.sendto(response, addr)
            except OSError:
                pass

    def serve_tcp(self, lsock):
        sel = selectors.DefaultSelector()
        sel.register(lsock, selectors.EVENT_READ)
        while not self.stop.is_set():
            if not sel.select(timeout=0.2):
                continue
            try:
                conn, addr = lsock.accept()
            except OSError:
                continue
            with self.tcp_lock:
                if self.tcp_count >= MAX_TCP_CONNECTIONS:
                    conn.close()
                    continue
                self.tcp_count += 1
            threading.Thread(target=self._tcp_conn, args=(conn, addr), daemon=True).start()

    @staticmethod
    def _recv_exact(conn, n):
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def _tcp_conn(self, conn, addr):
        client = f"{addr[0]}:{addr[1]}"
        try:
            conn.settimeout(TCP_IDLE)
            for _ in range(1000):  # queries per connection, bounded
                head = self._recv_exact(conn, 2)
                if head is None:
                    return
                raw = self._recv_exact(conn, struct.unpack("!H", head)[0])
                if raw is None:
                    return
                response, close = self.answer(raw, "tcp", client)
                if close:
                    return
                if response is not None:
                    conn.sendall(struct.pack("!H", len(response)) + response)
        except OSError:
            pass
        finally:
            conn.close()
            with self.tcp_lock:
                self.tcp_count -= 1


def serve(args):
    family = socket.AF_INET6 if ":" in args.listen else socket.AF_INET
    udp = socket.socket(family, socket.SOCK_DGRAM)
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    udp.bind((args.listen, args.port))
    tcp = socket.socket(family, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((args.listen, args.port))
    tcp.listen(64)
    responder = Responder(args)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: responder.stop.set())
    threads = [threading.Thread(target=responder.serve_udp, args=(udp,), daemon=True),
               threading.Thread(target=responder.serve_tcp, args=(tcp,), daemon=True)]
    for t in threads:
        t.start()
    print(f"dns_responder: listening on {args.listen} port {args.port} pid {os.getpid()}",
          flush=True)
    responder.stop.wait(args.lifetime)
    responder.stop.set()
    for t in threads:
        t.join(2)
    udp.close()
    tcp.close()
    return 0


# --- the client -----------------------------------------------------------------------------

def _exchange(server, port, payload, tcp, timeout):
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    if tcp:
        with socket.create_connection((server, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(struct.pack("!H", len(payload)) + payload)
            head = Responder._recv_exact(s, 2)
            if head is None:
                raise ConnectionError("the server closed the TCP connection without answering")
            body = Responder._recv_exact(s, struct.unpack("!H", head)[0])
            if body is None:
                raise ConnectionError("the TCP answer was cut short")
            return body
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.connect((server, port))
        s.send(payload)
        return s.recv(65535)


def query(args):
    qtype = TYPES.get(args.type.upper()) or int(args.type)
    out = {"ok": False, "server": f"{args.server}:{args.port}", "name": args.name,
           "type": args.type.upper()}
    t0 = time.monotonic()
    try:
        qid, payload = build_query(args.name, qtype, edns=args.edns or None)
        raw = _exchange(args.server, args.port, payload, args.tcp, args.timeout)
        out["transport"] = "tcp" if args.tcp else "udp"
        res = parse_response(raw)
        if res["tc"] and not args.tcp and args.tcp_fallback:
            out["udp_tc"] = True
            raw = _exchange(args.server, args.port, payload, True, args.timeout)
            out["transport"] = "tcp"
            res = parse_response(raw)
        if res["id"] != qid:
            raise FormatError(f"answer id {res['id']} for query id {qid}")
        out.update(res)
        out["size"] = len(raw)
        out["ok"] = True
    except (OSError, FormatError, struct.error) as e:
        out["error"] = f"{type(e).__name__}: {e}"
    out["ms"] = round((time.monotonic() - t0) * 1000, 1)
    print(json.dumps(out, sort_keys=True), flush=True)
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--listen", default="198.18.0.1")
    s.add_argument("--port", type=int, default=53)
    s.add_argument("--control", required=True)
    s.add_argument("--log", required=True)
    s.add_argument("--lifetime", type=float, default=1800.0)
    q = sub.add_parser("query")
    q.add_argument("name")
    q.add_argument("type", nargs="?", default="A")
    q.add_argument("--server", default="198.18.0.1")
    q.add_argument("--port", type=int, default=53)
    q.add_argument("--tcp", action="store_true")
    q.add_argument("--tcp-fallback", action="store_true")
    q.add_argument("--edns", type=int, default=0, help="advertise this EDNS UDP size")
    q.add_argument("--timeout", type=float, default=2.0)
    args = ap.parse_args(argv)
    return serve(args) if args.cmd == "serve" else query(args)


if __name__ == "__main__":
    sys.exit(main())
