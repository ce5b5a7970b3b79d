#!/usr/bin/python3
"""A gRPC test driver (python3-grpcio) run inside a client Pod: ONE channel to TARGET, one
named scenario, bounded in count and time, one JSON object on stdout.

    client.py TARGET unary       [--count N] [--concurrency C] [--sleep-ms S] [--rate R]
    client.py TARGET streams     all four kinds of call, with content checks
    client.py TARGET big         16 MiB request, 16 MiB response, 16 MiB echo
    client.py TARGET cancel      cancel a unary, a server stream and a bidi call mid-way
    client.py TARGET deadline    [--deadline-ms D] [--sleep-ms S]: must be DEADLINE_EXCEEDED
    client.py TARGET metadata    ascii and -bin metadata both ways, trailers, errors
    client.py TARGET during-kill [--seconds T] [--concurrency C] [--sleep-ms S] [--rate R]
    client.py TARGET stats       the server's Stats answer

Every result has "ok" (the scenario's own checks held), "scenario", "target", "failures"
(what did not hold), "elapsed_s". "pods" counts the x-pod the calls were answered with and
"errors" counts failed calls by status code name. Call ids (x-call-id) start with --run, so
that a test can find its calls in the servers' logs. Client-side retries are off
(grpc.enable_retries=0): what the test sees is what the path under test did; --app-defaults
keeps gRPC's defaults instead (transparent retries of calls never sent), as apps run. --rate paces
unary and during-kill: call i starts no earlier than i/R s after the first; a call that
falls behind that schedule starts as soon as a thread is free.
"""

import argparse
import collections
import hashlib
import itertools
import json
import os
import queue
import sys
import threading
import time

import grpc

import echo_service as es

MAX_COUNT = 100_000
MAX_CONCURRENCY = 64
MAX_SECONDS = 120.0


def now():
    return time.time()


class Result(dict):
    def __init__(self, scenario, target):
        super().__init__(ok=False, scenario=scenario, target=target, failures=[],
                         pods={}, errors={})

    def check(self, cond, what):
        if not cond:
            self["failures"].append(what)
        return bool(cond)


def _code(err):
    code = err.code() if hasattr(err, "code") else None
    return code.name if code is not None else type(err).__name__


def _details(err):
    return err.details() if hasattr(err, "details") else str(err)


class Driver:
    def __init__(self, args):
        self.args = args
        options = list(es.CHANNEL_OPTIONS)
        if not args.app_defaults:
            options.append(("grpc.enable_retries", 0))
        if args.tls_ca:
            with open(args.tls_ca, "rb") as f:
                creds = grpc.ssl_channel_credentials(root_certificates=f.read())
            if args.authority:
                options.append(("grpc.ssl_target_name_override", args.authority))
            self.channel = grpc.secure_channel(args.target, creds, options=options)
        else:
            self.channel = grpc.insecure_channel(args.target, options=options)
        self.unary_call = self.channel.unary_unary(es.UNARY)
        self.client_stream_call = self.channel.stream_unary(es.CLIENT_STREAM)
        self.server_stream_call = self.channel.unary_stream(es.SERVER_STREAM)
        self.bidi_call = self.channel.stream_stream(es.BIDI)
        self.stats_call = self.channel.unary_unary(es.STATS)
        # The same Unary method seen as a stream of (one) response: the wire is identical,
        # but initial_metadata() returns when the headers arrive, not with the response.
        self.unary_as_stream_call = self.channel.unary_stream(es.UNARY)
        self._ids = itertools.count(1)
        self._id_lock = threading.Lock()
        self.t_end = time.monotonic() + min(args.max_seconds, MAX_SECONDS)

    def call_id(self, kind):
        with self._id_lock:
            return f"{self.args.run}-{kind}-{next(self._ids)}"

    def left(self):
        return max(0.1, self.t_end - time.monotonic())

    def timeout(self):
        return min(self.args.timeout, self.left())

    def close(self):
        self.channel.close()

    # --- unary load ----------------------------------------------------------------------

    def _load(self, res, *, count, seconds, records):
        """count calls (or as many as fit in `seconds`) from --concurrency threads."""
        args = self.args
        lock = threading.Lock()
        pods, errors, details = collections.Counter(), collections.Counter(), {}
        mismatches = []
        calls = []
        numbers = iter(range(count))
        stop_at = time.monotonic() + seconds if seconds else None
        extra = [("x-sleep-ms", str(args.sleep_ms))] if args.sleep_ms else []
        rate = args.rate if args.rate and args.rate > 0 else None
        t_first = time.monotonic()

        def worker():
            for _ in range(count):
                if time.monotonic() >= self.t_end or (stop_at and time.monotonic() >= stop_at):
                    return
                with lock:
                    i = next(numbers, None)
                if i is None:
                    return
                if rate:
                    # The schedule, not the previous call, says when this one starts.
                    end = min(self.t_end, stop_at or self.t_end)
                    wait = min(t_first + i / rate, end) - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    if time.monotonic() >= end:
                        return
                cid = self.call_id("u")
                request = b"ping %d" % i
                t0 = now()
                pod, code = None, "OK"
                try:
                    response, call = self.unary_call.with_call(
                        request, metadata=[("x-call-id", cid)] + extra, timeout=self.timeout())
                    pod = es.md_get(call.initial_metadata(), "x-pod")
                    if response != request:
                        code = "MISMATCH"
                except grpc.RpcError as e:
                    code = _code(e)
                    with lock:
                        details.setdefault(code, _details(e))
                t1 = now()
                with lock:
                    if code == "OK":
                        pods[pod] += 1
                    elif code == "MISMATCH":
                        mismatches.append(cid)
                    else:
                        errors[code] += 1
                    if records:
                        calls.append([cid, round(t0, 6), round(t1, 6), code, pod])

        threads = [threading.Thread(target=worker, daemon=True)
                   for _ in range(max(1, min(args.concurrency, MAX_CONCURRENCY)))]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(self.left() + 5)
        res["elapsed_s"] = round(time.monotonic() - t0, 3)
        res["pods"], res["errors"], res["error_details"] = dict(pods), dict(errors), details
        res["calls_ok"] = sum(pods.values())
        res["calls_done"] = sum(pods.values()) + sum(errors.values()) + len(mismatches)
        res["mismatches"] = mismatches[:10]
        res.check(not any(t.is_alive() for t in threads), "call threads still running at the end")
        if records:
            res["calls"] = sorted(calls, key=lambda c: c[1])
        return res

    def unary(self, res):
        self._load(res, count=min(self.args.count, MAX_COUNT), seconds=None,
                   records=self.args.record)
        res.check(not res["errors"], f"calls failed: {res['errors']} {res['error_details']}")
        res.check(not res["mismatches"], f"responses differ from requests: {res['mismatches']}")
        res.check(res["calls_done"] == self.args.count,
                  f"only {res['calls_done']} of {self.args.count} calls done in time")

    def during_kill(self, res):
        """Steady calls for --seconds while the test kills a backend; every call recorded
        as [id, t_start, t_end, code, pod] (unix seconds) for the test to judge."""
        self._load(res, count=MAX_COUNT, seconds=self.args.seconds, records=True)

    # --- the four kinds, with content checks -----------------------------------------------

    def streams(self, res):
        kinds = {}
        for name, fn in (("unary", self._s_unary), ("client_stream", self._s_client_stream),
                         ("server_stream", self._s_server_stream),
                         ("server_stream_16mib", self._s_server_stream_big),
                         ("bidi_ping_pong", self._s_bidi_ping_pong),
                         ("bidi_bulk_16mib", self._s_bidi_bulk)):
            t0 = time.monotonic()
            out = {"ok": False}
            try:
                fn(out)
            except grpc.RpcError as e:
                out["error"] = f"{_code(e)}: {_details(e)}"
            except Exception as e:  # a content check or a local error: report, go on
                out["error"] = f"{type(e).__name__}: {e}"
            out["ms"] = round((time.monotonic() - t0) * 1000, 1)
            kinds[name] = out
            res.check(out["ok"], f"{name}: {out.get('error', out)}")
            if out.get("pod"):
                res["pods"][out["pod"]] = res["pods"].get(out["pod"], 0) + 1
        res["kinds"] = kinds

    def _s_unary(self, out):
        request = es.blob(100_000, 11)
        response, call = self.unary_call.with_call(
            request, metadata=[("x-call-id", self.call_id("su"))], timeout=self.timeout())
        out["pod"] = es.md_get(call.initial_metadata(), "x-pod")
        out["ok"] = response == request and \
            es.md_get(call.trailing_metadata(), "x-req-sha256") == es.sha256(request)

    def _s_client_stream(self, out):
        sizes = [(i * 7919) % 30_000 + 1 for i in range(50)] + [0, 1, 65_536, 1_000_000]
        messages = [es.blob(n, 1000 + i) for i, n in enumerate(sizes)]
        h = hashlib.sha256()
        for m in messages:
            h.update(m)
        response, call = self.client_stream_call.with_call(
            iter(messages), metadata=[("x-call-id", self.call_id("cs"))], timeout=self.timeout())
        got = json.loads(response)
        out.update(pod=es.md_get(call.initial_metadata(), "x-pod"), sent=len(messages),
                   server=got)
        out["ok"] = (got["count"] == len(messages) and got["bytes"] == sum(sizes)
                     and got["sha256"] == h.hexdigest())

    def _server_stream(self, out, n, size, seed):
        stream = self.server_stream_call(
            json.dumps({"n": n, "size": size, "seed": seed}).encode(),
            metadata=[("x-call-id", self.call_id("ss"))], timeout=self.timeout())
        out["pod"] = es.md_get(stream.initial_metadata(), "x-pod")
        bad, got = [], 0
        for i, message in enumerate(itertools.islice(stream, n + 1)):
            got += 1
            if message != es.blob(size, seed + i):
                bad.append(i)
        out.update(expected=n, received=got, bad=bad[:10], code=_code(stream))
        out["ok"] = got == n and not bad and stream.code() == grpc.StatusCode.OK and \
            es.md_get(stream.trailing_metadata(), "x-pod") == out["pod"]

    def _s_server_stream(self, out):
        self._server_stream(out, 50, 10_000, 2000)

    def _s_server_stream_big(self, out):
        # 64 x 256 KiB: many times any stream window, so flow control must move it along.
        self._server_stream(out, 64, 256 * 1024, 3000)

    def _s_bidi_ping_pong(self, out):
        # The next message is sent only once the previous echo came back: a proxy that
        # waits for the whole request before it forwards anything stalls here.
        n = 40
        messages = [es.blob(1 + i * 331, 4000 + i) for i in range(n)]
        acks = queue.Queue()

        def requests():
            for i, m in enumerate(messages):
                yield m
                try:
                    acks.get(timeout=self.timeout())
                except queue.Empty:
                    return
        stream = self.bidi_call(requests(), metadata=[("x-call-id", self.call_id("bp"))],
                                timeout=self.timeout())
        out["pod"] = es.md_get(stream.initial_metadata(), "x-pod")
        bad, got = [], 0
        for i, echo in enumerate(itertools.islice(stream, n + 1)):
            got += 1
            if i >= n or echo != messages[i]:
                bad.append(i)
            acks.put(i)
        out.update(expected=n, received=got, bad=bad[:10])
        out["ok"] = got == n and not bad and stream.code() == grpc.StatusCode.OK

    def _s_bidi_bulk(self, out):
        n, size = 64, 256 * 1024
        stream = self.bidi_call((es.blob(size, 5000 + i) for i in range(n)),
                                metadata=[("x-call-id", self.call_id("bb"))],
                                timeout=self.timeout())
        out["pod"] = es.md_get(stream.initial_metadata(), "x-pod")
        bad, got = [], 0
        for i, echo in enumerate(itertools.islice(stream, n + 1)):
            got += 1
            if echo != es.blob(size, 5000 + i):
                bad.append(i)
        out.update(expected=n, received=got, bad=bad[:10])
        out["ok"] = got == n and not bad and stream.code() == grpc.StatusCode.OK

    # --- 16 MiB each way -----------------------------------------------------------------

    def big(self, res):
        request = es.blob(es.BIG, 21)
        req_sha = es.sha256(request)
        cases = {}

        def case(name, fn):
            t0 = time.monotonic()
            out = {"ok": False}
            try:
                fn(out)
            except grpc.RpcError as e:
                out["error"] = f"{_code(e)}: {_details(e)}"
            out["ms"] = round((time.monotonic() - t0) * 1000, 1)
            cases[name] = out
            res.check(out["ok"], f"{name}: {out}")
            if out.get("pod"):
                res["pods"][out["pod"]] = res["pods"].get(out["pod"], 0) + 1

        def request_16mib(out):
            response, call = self.unary_call.with_call(
                request, metadata=[("x-call-id", self.call_id("bq")), ("x-respond-bytes", "1")],
                timeout=self.timeout())
            md = call.trailing_metadata()
            out.update(pod=es.md_get(call.initial_metadata(), "x-pod"),
                       server_bytes=es.md_get(md, "x-req-bytes"))
            out["ok"] = es.md_get(md, "x-req-sha256") == req_sha and \
                out["server_bytes"] == str(es.BIG) and response == es.blob(1, es.RESPONSE_SEED)

        def response_16mib(out):
            response, call = self.unary_call.with_call(
                b"small", metadata=[("x-call-id", self.call_id("bs")),
                                    ("x-respond-bytes", str(es.BIG))], timeout=self.timeout())
            out.update(pod=es.md_get(call.initial_metadata(), "x-pod"), received=len(response))
            out["ok"] = len(response) == es.BIG and \
                es.sha256(response) == es.sha256(es.blob(es.BIG, es.RESPONSE_SEED))

        def echo_16mib(out):
            response, call = self.unary_call.with_call(
                request, metadata=[("x-call-id", self.call_id("be"))], timeout=self.timeout())
            out.update(pod=es.md_get(call.initial_metadata(), "x-pod"), received=len(response))
            out["ok"] = len(response) == es.BIG and es.sha256(response) == req_sha

        case("request_16mib", request_16mib)
        case("response_16mib", response_16mib)
        case("echo_16mib", echo_16mib)
        res["cases"] = cases

    # --- cancellation and deadlines ----------------------------------------------------------

    def cancel(self, res):
        """Cancels three calls once the server is known to be working on them (its headers
        arrived, or a message came back); reports the unix time of each cancel()."""
        out = {}

        def record(kind, cid, call, t_cancel, extra=None):
            entry = {"id": cid, "t_cancel": t_cancel,
                     "pod": es.md_get(call.initial_metadata(), "x-pod"), "code": _code(call)}
            entry.update(extra or {})
            out[kind] = entry
            res.check(entry["code"] == "CANCELLED", f"{kind}: ended {entry['code']}, not CANCELLED")
            if entry["pod"]:
                res["pods"][entry["pod"]] = res["pods"].get(entry["pod"], 0) + 1

        sleep = str(self.args.sleep_ms or 10_000)
        # unary: the server sends headers, then sleeps
        cid = self.call_id("cu")
        call = self.unary_as_stream_call(b"wait", metadata=[("x-call-id", cid), ("x-sleep-ms", sleep)],
                                         timeout=self.timeout())
        call.initial_metadata()  # headers came: the handler runs
        t_cancel = now()
        call.cancel()
        record("unary", cid, call, t_cancel)

        # server stream: one message came, the server sleeps before the next
        cid = self.call_id("cs")
        stream = self.server_stream_call(json.dumps({"n": 100, "size": 100, "seed": 0}).encode(),
                                         metadata=[("x-call-id", cid), ("x-sleep-ms", sleep)],
                                         timeout=self.timeout())
        first = next(stream)
        t_cancel = now()
        stream.cancel()
        record("server_stream", cid, stream, t_cancel, {"first_ok": first == es.blob(100, 0)})

        # bidi: one echo came, the client holds its side open
        cid = self.call_id("cb")
        hold = threading.Event()

        def requests():
            yield b"one"
            hold.wait(self.timeout())
        stream = self.bidi_call(requests(), metadata=[("x-call-id", cid)], timeout=self.timeout())
        first = next(stream)
        t_cancel = now()
        stream.cancel()
        hold.set()
        record("bidi", cid, stream, t_cancel, {"first_ok": first == b"one"})
        res["cancelled"] = out

    def deadline(self, res):
        cid = self.call_id("dl")
        deadline = self.args.deadline_ms / 1000.0
        t0 = time.monotonic()
        t_start = now()
        code, details = "OK", ""
        try:
            self.unary_call.with_call(b"slow", timeout=deadline, metadata=[
                ("x-call-id", cid), ("x-sleep-ms", str(self.args.sleep_ms or 2000))])
        except grpc.RpcError as e:
            code, details = _code(e), _details(e)
        elapsed = time.monotonic() - t0
        res.update(id=cid, code=code, details=details, t_start=t_start,
                   elapsed_ms=round(elapsed * 1000, 1), deadline_ms=self.args.deadline_ms)
        res.check(code == "DEADLINE_EXCEEDED", f"ended {code} ({details}), not DEADLINE_EXCEEDED")

    # --- metadata, trailers, errors ------------------------------------------------------------

    def metadata(self, res):
        binary = bytes(range(256)) * 2
        sent = [("x-echo-color", "blue"), ("x-echo-blob-bin", binary),
                ("x-echo-empty-bin", b""), ("x-echo-long", "v" * 4000),
                ("x-echo-spaces", "a b  c")]
        sent_h = {k: v for k, v in sent}
        sent_t = {"x-trail-" + k[len("x-echo-"):]: v for k, v in sent}
        cases = {}

        def got(md):
            return {k: v for k, v in md or ()}

        def check_echo(name, initial, trailing, want_initial=True):
            ok = True
            for k, v in sent_h.items():
                if want_initial:
                    ok &= res.check(initial.get(k) == v, f"{name}: initial {k} = {initial.get(k)!r:.60}")
            for k, v in sent_t.items():
                ok &= res.check(trailing.get(k) == v, f"{name}: trailer {k} = {trailing.get(k)!r:.60}")
            ok &= res.check(trailing.get("x-pod"), f"{name}: no x-pod trailer")
            return ok

        # OK call: echoes in headers and trailers, x-pod in both
        cid = self.call_id("md")
        response, call = self.unary_call.with_call(b"md", metadata=[("x-call-id", cid)] + sent,
                                                   timeout=self.timeout())
        ini, tr = got(call.initial_metadata()), got(call.trailing_metadata())
        ok = check_echo("ok_call", ini, tr)
        ok &= res.check(ini.get("x-pod") and ini.get("x-pod") == tr.get("x-pod"),
                        f"ok_call: x-pod header {ini.get('x-pod')} vs trailer {tr.get('x-pod')}")
        ok &= res.check(response == b"md", "ok_call: response differs")
        cases["ok_call"] = {"ok": ok, "pod": ini.get("x-pod"), "code": _code(call)}

        # errors: trailers-only, and after headers
        message = "no such key: k\u00e9y \u2603 100% done, \r\n and a newline"
        for name, status, first in (("trailers_only_error", "NOT_FOUND", False),
                                    ("error_after_headers", "PERMISSION_DENIED", True)):
            cid = self.call_id("me")
            md = [("x-call-id", cid), ("x-status", status),
                  ("x-message-bin", message.encode())] + sent
            if first:
                md.append(("x-headers-first", "1"))
            try:
                self.unary_call.with_call(b"err", metadata=md, timeout=self.timeout())
                res.check(False, f"{name}: the call succeeded")
                cases[name] = {"ok": False}
                continue
            except grpc.RpcError as e:
                err = e
            ini, tr = got(err.initial_metadata()), got(err.trailing_metadata())
            ok = res.check(_code(err) == status, f"{name}: code {_code(err)}, not {status}")
            ok &= res.check(_details(err) == message,
                            f"{name}: message {_details(err)!r}, not {message!r}")
            ok &= check_echo(name, ini, tr, want_initial=first)
            if first:
                ok &= res.check(ini.get("x-pod"), f"{name}: no x-pod in the headers")
            else:
                # The server sent no headers at all: nothing may appear as initial metadata.
                ok &= res.check("x-pod" not in ini and "x-echo-color" not in ini,
                                f"{name}: initial metadata in a trailers-only answer: {sorted(ini)}")
            cases[name] = {"ok": ok, "pod": tr.get("x-pod"), "code": _code(err),
                           "details": _details(err), "initial_keys": sorted(ini)}
        for c in cases.values():
            if c.get("pod"):
                res["pods"][c["pod"]] = res["pods"].get(c["pod"], 0) + 1
        res["cases"] = cases

    def stats(self, res):
        response = self.stats_call(b"", timeout=self.timeout())
        res["stats"] = json.loads(response)


SCENARIOS = {"unary": Driver.unary, "streams": Driver.streams, "big": Driver.big,
             "cancel": Driver.cancel, "deadline": Driver.deadline, "metadata": Driver.metadata,
             "during-kill": Driver.during_kill, "stats": Driver.stats}


def parser():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("target", help="host:port, [v6]:port")
    ap.add_argument("scenario", choices=sorted(SCENARIOS))
    ap.add_argument("--count", type=int, default=100, help="unary: calls to make")
    ap.add_argument("--concurrency", type=int, default=1, help="unary, during-kill: threads")
    ap.add_argument("--record", action="store_true",
                    help="unary: list every call as [id, t_start, t_end, code, pod]")
    ap.add_argument("--sleep-ms", type=int, default=0, help="server sleep per call (x-sleep-ms)")
    ap.add_argument("--rate", type=float, default=0,
                    help="unary, during-kill: calls per second, paced (0: as fast as they go)")
    ap.add_argument("--seconds", type=float, default=4.0, help="during-kill: how long")
    ap.add_argument("--deadline-ms", type=int, default=200, help="deadline: the call's deadline")
    ap.add_argument("--timeout", type=float, default=30.0, help="per-call deadline (s)")
    ap.add_argument("--max-seconds", type=float, default=90.0, help="bound for the whole run")
    ap.add_argument("--run", default=f"r{os.getpid()}", help="prefix of the call ids")
    ap.add_argument("--app-defaults", action="store_true",
                    help="keep gRPC's default retries (transparent ones) as apps have them")
    ap.add_argument("--tls-ca", help="TLS: trust this PEM certificate")
    ap.add_argument("--authority", help="TLS: the name to verify in the certificate")
    return ap


def main(argv=None):
    args = parser().parse_args(argv)
    res = Result(args.scenario, args.target)
    res["run"] = args.run
    t0 = time.monotonic()
    driver = None
    try:
        driver = Driver(args)
        SCENARIOS[args.scenario](driver, res)
    except grpc.RpcError as e:
        res["failures"].append(f"{_code(e)}: {_details(e)}")
    except Exception as e:
        res["failures"].append(f"{type(e).__name__}: {e}")
    finally:
        if driver is not None:
            driver.close()
    res.setdefault("elapsed_s", round(time.monotonic() - t0, 3))
    res["ok"] = not res["failures"]
    print(json.dumps(res, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
