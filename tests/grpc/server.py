#!/usr/bin/python3
"""A real gRPC server (python3-grpcio) for spindle's tests: one backend Pod of a Service.

    server.py --name b1 --log FILE [--port 50051] [--tls-cert C --tls-key K]
              [--delay-ms N] [--unavailable-file F] [--grace S]

Serves /spindle.test.Echo/{Unary,ClientStream,ServerStream,Bidi,Stats} with raw bytes (see
echo_service.py for the request metadata that steers it) on [::]:PORT, which takes IPv4 and
IPv6. Every call and every cancellation it observes is appended to --log as a JSON line,
written (and flushed to the kernel) when it happens, so the log survives a SIGKILL:

    {"ev": "start",  "t": unix_s, "id": x-call-id, "method": "Unary", "pod": name,
     "peer": "ipv4:198.18.0.1:40000", "timeout": seconds left or null, "req_bytes": n}
    {"ev": "end",    "t": ..., "id": ..., "method": ..., "pod": ..., "code": "OK"}
    {"ev": "cancel", "t": ..., "id": ..., "method": ..., "pod": ..., "how": "callback" or
     "is_active", "reason": "cancelled" or "deadline"}

"cancel" is the first moment the server saw the call end without its handler finishing:
the RPC-termination callback (context.add_callback) or a context.is_active() poll in a sleep.
Stats calls are not logged; they answer {"pod", "calls": {method: n}, "cancels": n} as JSON.
Prints "grpc_server: listening on [::]:PORT as NAME" on stdout once it serves.

Behaviour of the whole server, for the balancing and health tests:
  --delay-ms N          every Unary call waits N ms before it answers, headers included (so
                        that a proxy timing the response headers sees the delay too)
  --unavailable-file F  while F exists, every Unary call is answered UNAVAILABLE at once
                        (trailers-only, x-pod in the trailers; logged with "code":
                        "UNAVAILABLE"); checked per call, so a test switches it at run time
  --grace S             on SIGTERM ("grpc_server: stopping" on stdout), server.stop(S):
                        GOAWAY, no new connections, S seconds for the calls in flight
  --dispatch-delay-ms N the server takes N ms to hand each call to a handler (the lookup
                        runs on grpc's one serving thread): calls that arrive faster wait
                        inside grpc-core, as on a server short of CPU. grpc-core answers
                        those CANCELLED, never started, when the server begins to stop
"""

import argparse
import collections
import hashlib
import json
import os
import signal
import sys
import threading
import time
from concurrent import futures

import grpc

import echo_service as es

# tests/sim's JSON-lines log, imported as a plain module: appended, so that none of sim's
# modules (dns, proc, ...) hides one of the same name.
sys.path.append(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sim"))
from jsonl import JsonLinesLog  # noqa: E402

SLEEP_STEP = 0.002   # how often a sleeping handler looks at is_active()
MAX_SLEEP_MS = 60_000
MAX_STREAM_MESSAGES = 10_000
INPUT_SETTLE = 0.100  # s; see Call.input_ended


def _status(value):
    """grpc.StatusCode from "NOT_FOUND" or "5"; None for an empty value."""
    if not value:
        return None
    if value.isdigit():
        for code in grpc.StatusCode:
            if code.value[0] == int(value):
                return code
        raise ValueError(f"no gRPC status {value}")
    return grpc.StatusCode[value.upper()]


def _message(call):
    """The status message asked for: x-message-bin (UTF-8, any text) or x-message."""
    raw = call.header("x-message-bin")
    return raw.decode("utf-8") if raw is not None else call.header("x-message", "")


class Call:
    """One RPC as the server sees it: logs its start, its end, and a cancellation once."""

    def __init__(self, server, method, context, **extra):
        self.server = server
        self.method = method
        self.context = context
        self.md = tuple(context.invocation_metadata())
        self.id = es.md_get(self.md, "x-call-id")
        self._lock = threading.Lock()
        self._finished = False
        self._cancel_seen = False
        server.count(method)
        server.log.write(dict(self._base("start"), peer=context.peer(),
                              timeout=context.time_remaining(), **extra))
        # Runs when the RPC terminates for any reason; before finish() that is a
        # cancellation (RST_STREAM from the peer, or the deadline).
        context.add_callback(lambda: self.cancelled("callback"))

    def _base(self, ev):
        return {"ev": ev, "t": time.time(), "id": self.id, "method": self.method,
                "pod": self.server.name}

    def finish(self, code="OK"):
        if not self.context.is_active():
            self.cancelled("is_active")
            return
        with self._lock:
            if self._finished or self._cancel_seen:
                return
            self._finished = True
        self.server.log.write(dict(self._base("end"), code=code))

    def cancelled(self, how):
        t = time.time()
        with self._lock:
            if self._finished or self._cancel_seen:
                return
            self._cancel_seen = True
        remaining = self.context.time_remaining()
        reason = "deadline" if remaining is not None and remaining <= 0 else "cancelled"
        self.server.cancels += 1
        entry = self._base("cancel")
        entry.update(t=t, how=how, reason=reason)
        self.server.log.write(entry)

    def input_ended(self):
        """After a request iterator ran out: True if the client half-closed, False if the
        call was cancelled. grpcio ends the iterator the same way for both, and learns of a
        cancellation a moment later (RECV_CLOSE_ON_SERVER); a call the client only
        half-closed stays active until this server answers, so a short settle tells them
        apart. The termination callback logs the cancel, with its own time, meanwhile."""
        deadline = time.monotonic() + INPUT_SETTLE
        for _ in range(int(INPUT_SETTLE / 0.001) + 2):
            if not self.context.is_active():
                self.cancelled("is_active")
                return False
            if time.monotonic() >= deadline:
                return True
            time.sleep(0.001)
        return True

    def sleep_ms(self, ms):
        """Sleeps ms, watching for cancellation; False if the call ended meanwhile."""
        deadline = time.monotonic() + min(ms, MAX_SLEEP_MS) / 1000.0
        for _ in range(int(MAX_SLEEP_MS / 1000.0 / SLEEP_STEP) + 2):
            if not self.context.is_active():
                self.cancelled("is_active")
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            time.sleep(min(SLEEP_STEP, left))
        return True

    def header(self, key, default=None):
        return es.md_get(self.md, key, default)

    def echoes(self):
        """x-echo-* request metadata: as is for the headers, renamed for the trailers."""
        headers, trailers = [], []
        for k, v in self.md:
            if k.startswith("x-echo-"):
                headers.append((k, v))
                trailers.append(("x-trail-" + k[len("x-echo-"):], v))
        return headers, trailers


class EchoServer:
    def __init__(self, name, log, *, delay_ms=0, unavailable_file=None):
        self.name = name
        self.log = log
        self.delay_ms = delay_ms
        self.unavailable_file = unavailable_file
        self.calls = collections.Counter()
        self.cancels = 0
        self._lock = threading.Lock()

    def count(self, method):
        with self._lock:
            self.calls[method] += 1

    # --- methods -------------------------------------------------------------------------

    def unary(self, request, context):
        call = Call(self, "Unary", context, req_bytes=len(request))
        if self.unavailable_file and os.path.exists(self.unavailable_file):
            context.set_trailing_metadata([("x-pod", self.name)])
            call.finish("UNAVAILABLE")
            context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.name} is unavailable")
        if self.delay_ms and not call.sleep_ms(self.delay_ms):
            return b""
        status = _status(call.header("x-status"))
        echo_h, echo_t = call.echoes()
        if status is None or call.header("x-headers-first"):
            context.send_initial_metadata([("x-pod", self.name)] + echo_h)
        context.set_trailing_metadata([("x-pod", self.name),
                                       ("x-req-bytes", str(len(request))),
                                       ("x-req-sha256", es.sha256(request))] + echo_t)
        sleep = int(call.header("x-sleep-ms", "0") or 0)
        if sleep and not call.sleep_ms(sleep):
            return b""
        if status is not None:
            call.finish(status.name)
            context.abort(status, _message(call))
        respond = call.header("x-respond-bytes")
        if respond is not None:
            seed = int(call.header("x-respond-seed", str(es.RESPONSE_SEED)))
            response = es.blob(min(int(respond), es.BIG), seed)
        else:
            response = request
        call.finish()
        return response

    def client_stream(self, request_iterator, context):
        call = Call(self, "ClientStream", context)
        echo_h, echo_t = call.echoes()
        context.send_initial_metadata([("x-pod", self.name)] + echo_h)
        h = hashlib.sha256()
        count = size = 0
        for message in request_iterator:
            count += 1
            size += len(message)
            h.update(message)
        if not call.input_ended():
            return b""
        context.set_trailing_metadata([("x-pod", self.name)] + echo_t)
        call.finish()
        return json.dumps({"count": count, "bytes": size, "sha256": h.hexdigest(),
                           "pod": self.name}).encode()

    def server_stream(self, request, context):
        call = Call(self, "ServerStream", context)
        spec = json.loads(request or b"{}")
        n = min(int(spec.get("n", 1)), MAX_STREAM_MESSAGES)
        size = min(int(spec.get("size", 16)), es.BIG)
        seed = int(spec.get("seed", 0))
        interval = int(call.header("x-sleep-ms", "0") or 0)
        echo_h, echo_t = call.echoes()
        context.send_initial_metadata([("x-pod", self.name)] + echo_h)
        context.set_trailing_metadata([("x-pod", self.name)] + echo_t)

        def messages():
            for i in range(n):
                if interval and i and not call.sleep_ms(interval):
                    return
                yield es.blob(size, seed + i)
            call.finish()
        return messages()

    def bidi(self, request_iterator, context):
        call = Call(self, "Bidi", context)
        echo_h, echo_t = call.echoes()
        context.send_initial_metadata([("x-pod", self.name)] + echo_h)
        context.set_trailing_metadata([("x-pod", self.name)] + echo_t)

        def messages():
            for message in request_iterator:
                yield message
            if call.input_ended():
                call.finish()
        return messages()

    def stats(self, request, context):
        with self._lock:
            calls = dict(self.calls)
        return json.dumps({"pod": self.name, "calls": calls, "cancels": self.cancels}).encode()

    def handler(self, dispatch_delay_ms=0):
        methods = grpc.method_handlers_generic_handler(es.SERVICE, {
            "Unary": grpc.unary_unary_rpc_method_handler(self.unary),
            "ClientStream": grpc.stream_unary_rpc_method_handler(self.client_stream),
            "ServerStream": grpc.unary_stream_rpc_method_handler(self.server_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(self.bidi),
            "Stats": grpc.unary_unary_rpc_method_handler(self.stats),
        })
        if not dispatch_delay_ms:
            return methods
        return _SlowDispatch(methods, dispatch_delay_ms / 1000)


class _SlowDispatch(grpc.GenericRpcHandler):
    """Looks each call's method up only after a sleep, on the thread that takes calls from
    grpc-core: one at a time, so the calls behind it stay queued in grpc-core."""

    def __init__(self, methods, delay_s):
        self.methods = methods
        self.delay_s = delay_s

    def service(self, handler_call_details):
        time.sleep(self.delay_s)
        return self.methods.service(handler_call_details)


def main(argv=None):
    ap = argparse.ArgumentParser(description="gRPC echo server for spindle's tests")
    ap.add_argument("--name", required=True, help="the Pod name, returned in x-pod")
    ap.add_argument("--port", type=int, default=es.DEFAULT_PORT)
    ap.add_argument("--log", required=True, help="JSON line per call event, appended")
    ap.add_argument("--workers", type=int, default=64, help="handler threads")
    ap.add_argument("--lifetime", type=float, default=1800, help="exit after this many s")
    ap.add_argument("--tls-cert", help="serve TLS with this PEM certificate ...")
    ap.add_argument("--tls-key", help="... and this PEM key")
    ap.add_argument("--delay-ms", type=int, default=0,
                    help="Unary: wait this long before answering every call")
    ap.add_argument("--unavailable-file",
                    help="Unary: while this file exists, answer every call UNAVAILABLE")
    ap.add_argument("--grace", type=float, default=1.0,
                    help="on SIGTERM: GOAWAY, then this long for the calls in flight")
    ap.add_argument("--dispatch-delay-ms", type=int, default=0,
                    help="take this long to hand each call to its handler")
    args = ap.parse_args(argv)

    echo = EchoServer(args.name, JsonLinesLog(args.log), delay_ms=max(0, args.delay_ms),
                      unavailable_file=args.unavailable_file)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.workers),
                         handlers=[echo.handler(max(0, args.dispatch_delay_ms))],
                         options=es.CHANNEL_OPTIONS + [("grpc.so_reuseport", 0)])
    address = f"[::]:{args.port}"
    if args.tls_cert:
        with open(args.tls_key, "rb") as k, open(args.tls_cert, "rb") as c:
            creds = grpc.ssl_server_credentials([(k.read(), c.read())])
        port = server.add_secure_port(address, creds)
    else:
        port = server.add_insecure_port(address)
    if not port:
        print(f"grpc_server: cannot listen on {address}", file=sys.stderr, flush=True)
        return 1
    server.start()

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"grpc_server: listening on {address} as {args.name} pid {os.getpid()}", flush=True)
    # Bounded like every loop in the tests: a server nobody stopped ends on its own.
    for _ in range(int(args.lifetime)):
        if stop.wait(1.0):
            print(f"grpc_server: stopping, grace {args.grace:g}s", flush=True)
            break
    server.stop(grace=args.grace).wait(args.grace + 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
