#!/usr/bin/python3
"""Writes the seed corpora in fuzz/corpus/: a few real conversations and inputs per target,
so that each fuzzer starts from valid traffic instead of learning HPACK or YAML from nothing.
The seeds are committed; rerun this only to change them: /usr/bin/python3 fuzz/make_corpus.py
"""
import os
import struct
import sys

import h2.config
import h2.connection
import h2.events
from hyperframe.frame import (ContinuationFrame, DataFrame, GoAwayFrame, HeadersFrame,
                              PingFrame, PriorityFrame, PushPromiseFrame, RstStreamFrame,
                              SettingsFrame, WindowUpdateFrame)
import hpack

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")

# The first byte of an h2 seed (fuzz/h2_peer.h): bit 0 prepends a valid preface, bits 1-3
# pick the read size (0 = all at once, 1 = 1 byte, 4 = 7 bytes, 7 = 100 bytes), bit 4 sends
# our GOAWAY halfway, bit 5 gives window back only at the end.
RAW, PREFACE = 0x00, 0x01
BYTE_AT_A_TIME, SEVEN_AT_A_TIME, HUNDRED_AT_A_TIME = 1 << 1, 4 << 1, 7 << 1
GOAWAY, LATE_CONSUME = 0x10, 0x20

GRPC_REQUEST = [(":method", "POST"), (":scheme", "http"), (":path", "/echo.Echo/Say"),
                (":authority", "echo.default.svc:50051"), ("content-type", "application/grpc"),
                ("te", "trailers"), ("grpc-timeout", "1S")]
GRPC_RESPONSE = [(":status", "200"), ("content-type", "application/grpc")]
GRPC_TRAILERS = [("grpc-status", "0"), ("grpc-message", "ok")]


def grpc_message(payload):
    return b"\x00" + struct.pack(">I", len(payload)) + payload


def write(target, name, data):
    folder = os.path.join(ROOT, target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def client():
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                header_encoding="utf-8"))
    conn.initiate_connection()
    return conn


def server():
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False,
                                                                header_encoding="utf-8"))
    conn.initiate_connection()
    return conn


def frames(*fs):
    return b"".join(f.serialize() for f in fs)


def h2_server_seeds():
    """What a Pod's client sends to spindle's downstream side."""
    # One unary call, whole conversation (preface included).
    c = client()
    c.send_headers(1, GRPC_REQUEST)
    c.send_data(1, grpc_message(b"hello"), end_stream=True)
    unary = c.data_to_send()
    write("h2_server", "unary", bytes([RAW]) + unary)
    write("h2_server", "unary_bytewise", bytes([RAW | BYTE_AT_A_TIME]) + unary)
    write("h2_server", "unary_goaway", bytes([RAW | SEVEN_AT_A_TIME | GOAWAY]) + unary)

    # After the preface: several streams, request trailers, a cancel, flow control, a PING.
    c = client()
    c.data_to_send()  # the preface and SETTINGS: the fuzz target prepends its own
    for stream in (1, 3, 5, 7):
        c.send_headers(stream, GRPC_REQUEST)
    c.send_data(1, grpc_message(b"x" * 300))
    c.send_headers(1, [("x-trailer", "1")], end_stream=True)
    c.send_data(3, grpc_message(b"y"), end_stream=True)
    c.reset_stream(5)
    c.increment_flow_control_window(65535)
    c.increment_flow_control_window(1000, stream_id=7)
    c.ping(b"12345678")
    c.send_data(7, b"", end_stream=True)
    c.close_connection()
    streams = c.data_to_send()
    write("h2_server", "streams", bytes([PREFACE]) + streams)
    write("h2_server", "streams_late", bytes([PREFACE | HUNDRED_AT_A_TIME | LATE_CONSUME]) +
          streams)

    # Frames no polite client sends: CONTINUATION, PRIORITY, padding, SETTINGS changes,
    # oversized windows, a big header block, an unknown frame type.
    enc = hpack.Encoder()
    block = enc.encode(GRPC_REQUEST + [("x-big", "v" * 3000)] + [(f"x-{i}", str(i)) for i in range(40)])
    headers = HeadersFrame(1, data=block[:100])
    cont1 = ContinuationFrame(1, data=block[100:1000])
    cont2 = ContinuationFrame(1, data=block[1000:])
    cont2.flags.add("END_HEADERS")
    data = DataFrame(1, data=grpc_message(b"z" * 10), pad_length=20)
    data.flags.add("END_STREAM")
    prio = PriorityFrame(3, depends_on=1, stream_weight=200)
    settings = SettingsFrame(settings={SettingsFrame.INITIAL_WINDOW_SIZE: 1 << 20,
                                       SettingsFrame.MAX_FRAME_SIZE: 1 << 16,
                                       SettingsFrame.HEADER_TABLE_SIZE: 0,
                                       SettingsFrame.ENABLE_PUSH: 0})
    window = WindowUpdateFrame(0, window_increment=0x7fffffff - 65535)
    unknown = struct.pack(">I", 4)[1:] + b"\xfa\x00" + struct.pack(">I", 0) + b"abcd"
    write("h2_server", "continuation", bytes([PREFACE]) +
          frames(settings, headers, cont1, cont2, data, prio, window) + unknown)

    # A second request on the HPACK dynamic table, then a padded HEADERS with priority.
    block2 = enc.encode(GRPC_REQUEST)
    padded = HeadersFrame(3, data=block2, pad_length=8, depends_on=1, stream_weight=16)
    for flag in ("END_HEADERS", "END_STREAM", "PRIORITY", "PADDED"):
        padded.flags.add(flag)
    write("h2_server", "padded_headers", bytes([PREFACE | SEVEN_AT_A_TIME]) + frames(padded))

    # Rapid reset: open and cancel streams in a row.
    c = client()
    c.data_to_send()
    for stream in range(1, 41, 2):
        c.send_headers(stream, GRPC_REQUEST)
        c.reset_stream(stream)
    write("h2_server", "rapid_reset", bytes([PREFACE]) + c.data_to_send())

    # Something that is not HTTP/2 at all, and a preface cut short.
    write("h2_server", "http1", bytes([RAW]) + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    write("h2_server", "short_preface", bytes([RAW | BYTE_AT_A_TIME]) + b"PRI * HTTP/2.0\r\n\r\nS")


def h2_client_seeds():
    """What an endpoint Pod's server sends to spindle's upstream side, which has sent three
    requests (streams 1 and 5 with a body, 3 without) when the bytes arrive."""
    c = client()
    s = server()
    c.send_headers(1, GRPC_REQUEST)
    c.send_data(1, grpc_message(b"a" * 95), end_stream=True)
    c.send_headers(3, GRPC_REQUEST, end_stream=True)
    c.send_headers(5, GRPC_REQUEST)
    c.send_data(5, grpc_message(b"b" * 95), end_stream=True)
    s.receive_data(c.data_to_send())
    s.data_to_send()
    # The server's own preface is its SETTINGS: drop it from `first` when the target adds one.
    s2 = server()
    preface = s2.data_to_send()

    s.send_headers(1, GRPC_RESPONSE)
    s.send_data(1, grpc_message(b"reply"))
    s.send_headers(1, GRPC_TRAILERS, end_stream=True)
    s.send_headers(3, GRPC_RESPONSE + [("grpc-status", "14")], end_stream=True)  # trailers-only
    s.reset_stream(5, error_code=7)  # REFUSED_STREAM
    s.increment_flow_control_window(1 << 20)
    s.ping(b"abcdefgh")
    answers = s.data_to_send()
    write("h2_client", "answers", bytes([RAW]) + preface + answers)
    write("h2_client", "answers_bytewise", bytes([RAW | BYTE_AT_A_TIME]) + preface + answers)
    write("h2_client", "answers_preface", bytes([PREFACE | SEVEN_AT_A_TIME]) + answers)

    # A 100 Continue before the response, then GOAWAY naming stream 1 as the last.
    enc = hpack.Encoder()
    info = HeadersFrame(1, data=enc.encode([(":status", "100")]))
    info.flags.add("END_HEADERS")
    resp = HeadersFrame(1, data=enc.encode(GRPC_RESPONSE))
    resp.flags.add("END_HEADERS")
    body = DataFrame(1, data=grpc_message(b"r" * 50))
    trailers = HeadersFrame(1, data=enc.encode(GRPC_TRAILERS))
    trailers.flags.add("END_HEADERS")
    trailers.flags.add("END_STREAM")
    goaway = GoAwayFrame(0, last_stream_id=1, error_code=0, additional_data=b"bye")
    write("h2_client", "informational_goaway", bytes([PREFACE | GOAWAY]) +
          frames(info, resp, body, trailers, goaway))

    # SETTINGS that shrink what we may send, a push we never allowed, oversized frames.
    settings = SettingsFrame(settings={SettingsFrame.MAX_CONCURRENT_STREAMS: 1,
                                       SettingsFrame.INITIAL_WINDOW_SIZE: 10,
                                       SettingsFrame.MAX_HEADER_LIST_SIZE: 100})
    ack = SettingsFrame(flags=["ACK"])
    push = PushPromiseFrame(1, promised_stream_id=2, data=enc.encode(GRPC_REQUEST))
    push.flags.add("END_HEADERS")
    cont_resp = HeadersFrame(3, data=enc.encode(GRPC_RESPONSE + [("x-big", "q" * 2000)])[:50])
    cont = ContinuationFrame(3, data=enc.encode([("x-more", "m" * 500)]))
    cont.flags.add("END_HEADERS")
    rst = RstStreamFrame(5, error_code=8)
    write("h2_client", "settings_push", bytes([PREFACE | LATE_CONSUME]) +
          frames(settings, ack, cont_resp, cont, push, rst))
    write("h2_client", "ping_flood", bytes([PREFACE]) +
          frames(*[PingFrame(0, opaque_data=bytes([i]) * 8) for i in range(20)]))


def config_seeds():
    write("config", "full.yaml", b"""\
proxy:
  listen: ["${NODE_IP}:15001", "[${NODE_IP6}]:15001"]
  workers: 2
admin:
  listen: "127.0.0.1:9901"
redirect:
  cgroup: "/sys/fs/cgroup/unified/kubepods"
  host_netns: false
  heartbeat_timeout: 2s
dns:
  servers: ["127.0.0.1:53", "[::1]:5353"]
  refresh: {min: 500ms, max: 1m}
  empty_confirmations: 3
services:
  - name: echo
    intercept:
      - "echo.demo.svc.cluster.local:50051"
      - "198.19.0.10:50051"
    endpoints:
      dns: "echo-pods.demo.svc.cluster.local"
    port: 50051
    balance: peak_ewma
    outlier: {consecutive_failures: 5, base_ejection: 1s, max_ejection: 60s, max_ejected_percent: 50}
    retries: {max: 3, budget_percent: 20}
    peak_ewma: {decay: 10s}
    slow_start: 30s
  - name: static-one
    intercept: "[2001:2::10]:8080"
    endpoints:
      static: ["198.18.1.2:8080", "[2001:2::2]:8080"]
    balance: round_robin
""")
    write("config", "minimal.yaml", b"""\
proxy:
  listen: "${NODE_IP}:15001"
services:
  - name: a
    intercept: ["a:1"]
    endpoints: {static: ["198.18.1.2:1"]}
""")
    write("config", "errors.yaml", b"""\
proxy:
  listen: ["${NODE_IP}:15001", "198.18.0.2:15001"]
  workers: 9999
redirect: {heartbeat_timeout: 10}
dns: {refresh: {min: 2m, max: 1s}}
services:
  - name: Bad_Name
    intercept: ["10.0.0.300:80", "${UNSET}:1"]
    endpoints: {dns: "x", static: []}
    balance: fastest
""")
    write("config", "documents.yaml", b"proxy: &p {listen: '[::1]:1'}\n---\ncopy: *p\n...\n")


def dns_message(qtype, answers, rcode=0, name=b"\x04pods\x04demo\x00"):
    """A response to one question; answers: (type, ttl, rdata) with a compressed owner name."""
    header = struct.pack(">HHHHHH", 0x1234, 0x8180 | rcode, 1, len(answers), 0, 0)
    question = name + struct.pack(">HH", qtype, 1)
    records = b""
    for rtype, ttl, rdata in answers:
        records += b"\xc0\x0c" + struct.pack(">HHIH", rtype, 1, ttl, len(rdata)) + rdata
    return header + question + records


def dns_seeds():
    A, AAAA, CNAME = 1, 28, 5

    def msg(aaaa, status, seconds, body):
        control = (1 if aaaa else 0) | (status << 1) | (seconds << 4)
        return bytes([control]) + struct.pack(">H", len(body)) + body

    v4 = dns_message(A, [(A, 30, bytes([198, 18, 1, i])) for i in range(2, 6)])
    v6 = dns_message(AAAA, [(AAAA, 10, bytes.fromhex("20010002000000000000000000000002"))])
    empty = dns_message(A, [])
    cname = dns_message(A, [(CNAME, 5, b"\x05other\xc0\x11"), (A, 0, bytes([198, 18, 1, 9]))])
    dup = dns_message(A, [(A, 30, bytes([198, 18, 1, 2]))] * 3)
    mapped = dns_message(AAAA, [(AAAA, 30, bytes(10) + b"\xff\xff" + bytes([198, 18, 1, 2]))])
    settings = bytes([0x21, 0x02])  # refresh min 251 ms, max x21; two empty answers confirm
    # status index: 0-3 success, 4 NXDOMAIN, 5 no data, 6 timeout, 7 SERVFAIL
    write("dns_answer", "records", settings + msg(0, 0, 1, v4) + msg(1, 0, 0, v6))
    write("dns_answer", "failure_then_empty", settings + msg(0, 0, 0, v4) + msg(1, 0, 1, v6) +
          msg(0, 6, 3, b"") + msg(1, 7, 0, b"") + msg(0, 0, 5, empty) + msg(1, 5, 0, b"") +
          msg(0, 4, 5, b"") + msg(1, 4, 0, b""))
    write("dns_answer", "cname", settings + msg(0, 0, 2, cname) + msg(1, 5, 0, b""))
    write("dns_answer", "duplicates", settings + msg(0, 0, 2, dup) + msg(1, 0, 0, mapped))
    write("dns_answer", "truncated", settings + msg(0, 0, 2, v4[:40]) + msg(1, 0, 0, v6[:-3]))


def admin_seeds():
    # First byte: read size index (0 = 1 byte at a time ... 7 = all at once).
    write("admin_http", "get", b"\x07GET /metrics HTTP/1.1\r\nHost: node:9901\r\n\r\n")
    write("admin_http", "pipelined", b"\x03GET /ready HTTP/1.1\r\nHost: a\r\nUser-Agent: kubelet\r\n\r\n"
          b"HEAD /endpoints?service=echo HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\n\r\n"
          b"GET http://node:9901/config HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
          b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    write("admin_http", "errors", b"\x00\r\n\r\nPOST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n")
    write("admin_http", "bad_framing", b"\x05GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
          b" folded\r\nX: \x01\r\n\r\n")
    write("admin_http", "bare_lf", b"\x06GET / HTTP/1.1\nHost: a\n\n")
    write("admin_http", "version", b"\x07GET /healthz HTTP/2.0\r\nHost: a\r\n\r\n")


def main():
    h2_server_seeds()
    h2_client_seeds()
    config_seeds()
    dns_seeds()
    admin_seeds()
    return 0


if __name__ == "__main__":
    sys.exit(main())
