"""spindle's admin interface as its users meet it: a real Prometheus scraping /metrics during
gRPC load, a readiness probe during a DNS outage, hostile or broken HTTP clients, and a person
reading /endpoints, /config and the status page.

The node: client Pod 198.18.1.2, backend Pods b1-b3 (198.18.1.3-5) running tests/grpc/server.py
on [::]:50051, Service echo at 198.19.0.10:50051; spindle intercepts it with static endpoints
= the three Pods and serves its admin API on 198.18.0.1:9901 (node netns). Debian's
`prometheus` binary runs by PID in the node netns (its own config, TSDB in the run's log
folder, API on 198.18.0.1:9090) and scrapes spindle every second from the start.

The spindles that do not carry traffic (the DNS readiness one, the 50 x 20 endpoints one)
attach to an empty child cgroup and listen on their own proxy and admin ports, so that they
cannot take a connect or a call from the class's spindle.

Admin requests are made from the node netns with sockets made there (sim/prometheus.py), raw
bytes where the request is meant to be broken. Counts are compared as differences across a
test, so the tests do not depend on their order. Figures for a reader are printed as
`MEASURE name key=value ...`; they are not asserted.

Run alone: /usr/bin/python3 tests/integration/run.py test_admin
"""

import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time

# tests/, for `import sim`, also when this file runs as the latency client in a Pod
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import sim  # noqa: E402
from sim import dns as simdns  # noqa: E402
from sim import prometheus as simprom  # noqa: E402
from support import (SimTestCase, expected_build, grpcio_missing, measure, metric,  # noqa: E402
                     without_dirty)

GRPC_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "grpc")
sys.path.insert(0, GRPC_DIR)
import peers  # noqa: E402  (tests/grpc)

PORT = 50051
VIP4, VIP6 = "198.19.0.10", "2001:2:0:ff::10"
TARGET4 = peers.target(VIP4, PORT)
BACKENDS = ("b1", "b2", "b3")          # Pods 198.18.1.3-5
SERVICE = "echo"
ADMIN_PORT = 9901                      # the class's spindle
DNS_ADMIN_PORT, DNS_PROXY_PORT = 9902, 16001   # clear of the class spindle's service ports
SCALE_ADMIN_PORT, SCALE_PROXY_PORT = 9903, 17001
PROM_PORT = 9090

LOAD_CALLS = 3000
COUNT_TOLERANCE = 0.01                 # Prometheus' counts vs the backends' logs
HEADLESS = "admin-pods.demo.svc.cluster.local"
SCALE_SERVICES, SCALE_ENDPOINTS = 50, 20


def percentile(values, p):
    """Nearest-rank percentile of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100.0 * len(ordered)) - 1)]


def parse_metrics(text):
    """{(name, frozenset of (label, value)): float} from Prometheus text format (no escapes
    inside label values are needed for what the tests read)."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        name, brace, rest = series.partition("{")
        labels = []
        if brace:
            for item in rest.rstrip("}").split('",'):
                if item:
                    k, _, v = item.partition("=")
                    labels.append((k, v.strip('"')))
        out[(name, frozenset(labels))] = float(value)
    return out


class AdminTest(SimTestCase):
    """One node, three gRPC backends, one spindle with its admin API on 198.18.0.1:9901 and
    a Prometheus scraping it every second for the whole class (see the module docstring)."""

    needs_spindle = True

    @classmethod
    def build(cls, stack):
        if grpcio_missing():
            cls._skip_reason = "python3-grpcio is not installed (make deps)"
            return
        why = simprom.available() or simdns.available()
        if why:
            cls._skip_reason = why
            return
        cls.node = stack.enter_context(sim.Node())
        cls.client = cls.node.add_pod("client", n=2)
        cls.pods = {name: cls.node.add_pod(name, n=3 + i) for i, name in enumerate(BACKENDS)}
        cls.echo = cls.node.add_service(SERVICE, vip4=VIP4, vip6=VIP6, ports=[PORT],
                                        backends=list(cls.pods.values()))
        # the three servers start side by side (importing grpcio takes a while each)
        cls.servers, cls.logs = {}, {}
        for name, pod in cls.pods.items():
            cls.servers[name], cls.logs[name] = peers.start_server(pod, wait=False)
        for proc in cls.servers.values():
            peers.wait_serving(proc, 20)
        cls.endpoint_of = {f"{pod.ip4}:{PORT}": name for name, pod in cls.pods.items()}
        # Every page on the network and calls counted by Pod: this class reads them all.
        cfg = sim.spindle.config(cls.node, [cls.echo], extra={
            "admin": {"listen": f"{cls.node.addr4}:{ADMIN_PORT}",
                      "pages": ["endpoints", "config", "status"]},
            "metrics": {"by_source": True}})
        cfg["services"][0]["endpoints"] = {"static": list(cls.endpoint_of)}
        cls.spindle = stack.enter_context(sim.Spindle(cls.node, cfg))
        cls.spindle.start()
        cls.prom = simprom.Prometheus(cls.node, [f"{cls.node.addr4}:{ADMIN_PORT}"],
                                      listen=f"{cls.node.addr4}:{PROM_PORT}")
        stack.callback(cls.prom.close)
        cls.prom.start()

    def setUp(self):
        super().setUp()
        for name, proc in self.servers.items():
            self.assertTrue(proc.alive(), f"backend {name} died\n{proc.tail()}")
        self.assertTrue(self.spindle.proc.alive(), "spindle died\n" + self.spindle.tail())

    # --- helpers -------------------------------------------------------------------------------

    def admin(self, path, *, port=ADMIN_PORT, method="GET", timeout=5.0):
        return simprom.http_get(self.node, self.node.addr4, port, path, method=method,
                                timeout=timeout)

    def raw(self, request, *, port=ADMIN_PORT, **kw):
        return simprom.exchange(self.node, self.node.addr4, port, request, **kw)

    def served(self, run):
        """{backend: Unary calls of this run it started}."""
        return {name: len(log.starts(run=run, method="Unary")) for name, log in self.logs.items()}

    def endpoint_calls(self):
        """{backend: calls} from /endpoints, and the whole document."""
        r = self.admin("/endpoints")
        self.assertEqual(r.status, 200, r)
        doc = r.json()
        service = [s for s in doc["services"] if s["name"] == SERVICE]
        self.assertEqual(len(service), 1, doc)
        return {self.endpoint_of.get(e["address"], e["address"]): e["calls"]
                for e in service[0]["endpoints"]}, doc

    def prom_requests(self):
        """{(endpoint label, grpc_status): value} of spindle_requests_total for the service,
        as Prometheus' HTTP API answers now."""
        out = {}
        for r in self.prom.query(f'spindle_requests_total{{service="{SERVICE}"}}'):
            key = (r["metric"].get("endpoint"), r["metric"].get("grpc_status"))
            out[key] = out.get(key, 0.0) + float(r["value"][1])
        return out

    def prom_scalar(self, promql, at=None):
        res = self.prom.query(promql, at)
        return sum(float(r["value"][1]) for r in res)

    def spindle_tail(self):
        return self.spindle.tail(40)

    # === 1. Prometheus during load ============================================================

    def test_prometheus_scrapes_per_endpoint_counts_matching_the_backends(self):
        # A baseline that holds every call made before: a scrape that began after now.
        self.prom.wait_scrape_after(time.time())
        before = self.prom_requests()
        hist_before = self.prom_scalar(
            f'spindle_request_duration_seconds_count{{service="{SERVICE}"}}')
        t_load = time.time()
        # 5 ms per call at the backend: the load lasts a few scrape intervals
        res = peers.run_client(self.client, TARGET4, "unary", count=LOAD_CALLS, concurrency=8,
                               sleep_ms=5, timeout=10, run_timeout=120)
        t_done = time.time()
        self.assertTrue(res.get("ok"), json.dumps({k: v for k, v in res.items()
                                                   if k != "calls"})[:3000] + self.spindle_tail())
        served = self.served(res["run"])
        self.assertEqual(sum(served.values()), LOAD_CALLS, f"backends logged {served}")

        # Prometheus scraped while the load ran, and again after it.
        self.prom.wait_scrape_after(t_done + 0.2)
        window_ms = int((t_done - t_load) * 1000)
        during = self.prom_scalar(f'sum_over_time(up{{job="spindle"}}[{window_ms}ms])', at=t_done)
        self.assertGreaterEqual(during, 1, "no successful scrape while the load ran")
        after = self.prom_requests()
        per_endpoint, codes = {}, set()
        for (endpoint, code), value in after.items():
            delta = value - before.get((endpoint, code), 0.0)
            name = self.endpoint_of.get(endpoint, endpoint)
            per_endpoint[name] = per_endpoint.get(name, 0.0) + delta
            if delta:
                codes.add(code)
        summary = (f"prometheus per endpoint {per_endpoint}, backends {served}; "
                   f"series {sorted(after)}")
        self.assertEqual(set(per_endpoint), set(BACKENDS),
                         f"spindle_requests_total endpoint labels are not the three Pods' "
                         f"ip:port: {summary}")
        self.assertEqual(codes, {"0"}, f"the calls all ended OK (grpc_status 0): {summary}")
        for name in BACKENDS:
            self.assertAlmostEqual(per_endpoint[name], served[name],
                                   delta=max(1.0, COUNT_TOLERANCE * served[name]), msg=summary)
        hist = self.prom_scalar(f'spindle_request_duration_seconds_count{{service="{SERVICE}"}}')
        self.assertAlmostEqual(hist - hist_before, LOAD_CALLS,
                               delta=COUNT_TOLERANCE * LOAD_CALLS,
                               msg="spindle_request_duration_seconds_count does not count the calls")
        measure("admin_prometheus_load", calls=LOAD_CALLS, seconds=round(t_done - t_load, 2),
                scrapes_during_load=int(during))

    def test_metrics_body_passes_promtool_check_metrics(self):
        # after some calls, so that every family has series
        res = peers.run_client(self.client, TARGET4, "unary", count=30)
        self.assertTrue(res.get("ok"), json.dumps(res)[:2000])
        r = self.admin("/metrics")
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.headers.get("content-type", "").startswith("text/plain; version=0.0.4"),
                        f"Content-Type {r.headers.get('content-type')!r}")
        p = subprocess.run([simprom.PROMTOOL, "check", "metrics"], input=r.body,
                           capture_output=True, timeout=30)
        self.assertEqual((p.returncode, p.stdout + p.stderr), (0, b""),
                         "promtool check metrics found problems in /metrics")
        for family in ("spindle_requests_total", "spindle_request_duration_seconds",
                       "spindle_downstream_connections_total",
                       "spindle_downstream_connections_active", "spindle_redirects_total",
                       "spindle_active_streams", "spindle_upstream_connections_active",
                       "spindle_endpoints", "spindle_build_info"):
            self.assertIn(f"# TYPE {family} ", r.text, f"/metrics has no {family}")
        # the version and commit --version prints (test_cli checks them against the checkout)
        build = [line for line in r.text.splitlines() if line.startswith("spindle_build_info{")]
        self.assertEqual(len(build), 1, build)
        expected = expected_build()
        if expected is not None:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', build[0]))
            self.assertEqual((without_dirty(labels.get("version", "")), labels.get("revision")),
                             (without_dirty(expected[0]), expected[1]), build[0])
            self.assertTrue(build[0].endswith("} 1"), build[0])

    # === 2. readiness waits for DNS ===========================================================

    def test_ready_is_503_naming_the_dns_name_until_dns_answers_then_200(self):
        dnsmasq = simdns.Dnsmasq(self.node, ttl=1, start=False,
                                 records={HEADLESS: [p.ip4 for p in self.pods.values()]})
        self.addCleanup(dnsmasq.close)
        cfg = sim.spindle.config(
            self.node, listen=[f"{self.node.addr4}:{DNS_PROXY_PORT}"],
            cgroup=self.node.cgroup_for("admin-idle").path,
            extra={"admin": {"listen": f"{self.node.addr4}:{DNS_ADMIN_PORT}"},
                   "dns": {"servers": [dnsmasq.server], "refresh": {"min": "1s", "max": "2s"}}})
        cfg["services"] = [{"name": "dnsecho", "intercept": [f"198.19.0.20:{PORT}"],
                            "endpoints": {"dns": HEADLESS}, "port": PORT}]
        sp = sim.Spindle(self.node, cfg, name="spindle-dns")
        self.addCleanup(sp.close)
        sp.start()
        # The DNS server is down (its port refuses): not ready, and the reason says for what.
        for _ in range(2):
            r = self.admin("/ready", port=DNS_ADMIN_PORT)
            self.assertEqual(r.status, 503, f"{r!r}\n{sp.tail()}")
            self.assertIn(HEADLESS, r.text, f"the 503 does not name the DNS name: {r.text!r}")
            time.sleep(0.3)
        head = self.admin("/ready", port=DNS_ADMIN_PORT, method="HEAD")
        self.assertEqual((head.status, head.body), (503, b""), head)
        health = self.admin("/healthz", port=DNS_ADMIN_PORT)
        self.assertEqual(health.status, 200, f"not ready must not mean unhealthy: {health!r}")
        m = parse_metrics(self.admin("/metrics", port=DNS_ADMIN_PORT).text)
        self.assertEqual(m.get(("spindle_ready", frozenset())), 0.0, "spindle_ready before DNS")
        # Counters of a fixed set of reasons exist at 0 from the start: their first increase
        # is one that rate() and the alerts see.
        for name, label, values in (
                ("spindle_config_reloads_total", "result", ("ok", "failed")),
                ("spindle_upstream_socket_failures_total", "reason",
                 ("local", "caller_namespace", "max_connections"))):
            for value in values:
                self.assertEqual(m.get((name, frozenset({(label, value)}))), 0.0,
                                 f'{name}{{{label}="{value}"}} at start')
        self.assertNotIn(("spindle_dns_ttl_seconds", frozenset({("service", "dnsecho")})), m,
                         "a TTL exported before any answer")

        t_start = time.monotonic()
        dnsmasq.start()
        ready = sim.wait_until(
            lambda: (lambda r: r if r.status == 200 else None)(
                self.admin("/ready", port=DNS_ADMIN_PORT)),
            10, interval=0.1, what="/ready to answer 200 once DNS answers",
            details=lambda: f"{self.admin('/ready', port=DNS_ADMIN_PORT)!r}\n{sp.tail()}")
        measure("admin_ready_after_dns", seconds=round(time.monotonic() - t_start, 2))
        self.assertEqual(ready.text.strip(), "ready")
        self.assertTrue(dnsmasq.queries(name=HEADLESS), "spindle never asked dnsmasq")
        m = parse_metrics(self.admin("/metrics", port=DNS_ADMIN_PORT).text)
        results = {dict(k[1]).get("result"): v for k, v in m.items()
                   if k[0] == "spindle_dns_resolutions_total" and ("service", "dnsecho") in k[1]}
        self.assertGreaterEqual(results.get("records", 0), 1, f"resolutions: {results}")
        self.assertGreaterEqual(results.get("failure", 0), 1,
                                f"the lookups that failed while DNS was down are not counted: "
                                f"{results}")
        healthy = m.get(("spindle_endpoints", frozenset({("service", "dnsecho"),
                                                         ("state", "healthy")})))
        self.assertEqual(healthy, 3.0, "spindle_endpoints{state=healthy} after DNS answered")
        self.assertEqual(m.get(("spindle_ready", frozenset())), 1.0, "spindle_ready after DNS")
        # dnsmasq's TTL 1 s, raised to dns.refresh.min
        self.assertEqual(m.get(("spindle_dns_ttl_seconds", frozenset({("service", "dnsecho")}))),
                         1.0)

    # === 3. broken and hostile HTTP ===========================================================

    def test_malformed_and_oversized_requests_get_their_status_and_the_listener_lives_on(self):
        host = f"Host: {self.node.addr4}:{ADMIN_PORT}\r\n".encode()
        cases = [
            ("garbage", b"this is not http at all\r\n\r\n", 400),
            ("binary garbage", bytes(range(1, 256)) * 4 + b"\r\n\r\n", 400),
            ("TLS ClientHello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\xab" * 600, 400),
            ("20 KiB header", b"GET /metrics HTTP/1.1\r\n" + host + b"X-Big: "
             + b"a" * (20 * 1024) + b"\r\n\r\n", 431),
            ("20 KiB request target", b"GET /" + b"a" * (20 * 1024) + b" HTTP/1.1\r\n" + host
             + b"\r\n", 414),
            ("POST with a body", b"POST /metrics HTTP/1.1\r\n" + host
             + b"Content-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world", 405),
            ("GET with a body", b"GET /metrics HTTP/1.1\r\n" + host
             + b"Content-Length: 11\r\n\r\nhello world", 413),
            ("chunked body", b"GET /metrics HTTP/1.1\r\n" + host
             + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400),
            ("bare LF", b"GET /healthz HTTP/1.1\nHost: x\n\n", 400),
            ("HTTP/2.0", b"GET /healthz HTTP/2.0\r\n" + host + b"\r\n", 505),
            ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
            ("HTTP/3.0", b"GET /healthz HTTP/3.0\r\n" + host + b"\r\n", 505),
            ("100 headers", b"GET /healthz HTTP/1.1\r\n" + host
             + b"".join(b"X-H%d: v\r\n" % i for i in range(100)) + b"\r\n", 431),
            ("NUL in the target", b"GET /heal\x00thz HTTP/1.1\r\n" + host + b"\r\n", 400),
            ("NUL in a header", b"GET /healthz HTTP/1.1\r\n" + host + b"X-A: b\x00c\r\n\r\n", 400),
            ("no Host", b"GET /healthz HTTP/1.1\r\n\r\n", 400),
            ("two Hosts", b"GET /healthz HTTP/1.1\r\n" + host + host + b"\r\n", 400),
            ("obs-fold", b"GET /healthz HTTP/1.1\r\n" + host + b"X-A: b\r\n c\r\n\r\n", 400),
            ("space before colon", b"GET /healthz HTTP/1.1\r\n" + host + b"X-A : b\r\n\r\n", 400),
            ("DELETE", b"DELETE /config HTTP/1.1\r\n" + host + b"\r\n", 405),
            ("unknown path", b"GET /nope HTTP/1.1\r\n" + host + b"Connection: close\r\n\r\n", 404),
            ("unknown path below /", b"GET /metrics/x HTTP/1.1\r\n" + host
             + b"Connection: close\r\n\r\n", 404),
        ]
        # the limits' edges: 64 fields and an 8 KiB head are served, one more is refused
        fields = [host] + [b"X-H%d: v\r\n" % i for i in range(62)] + [b"Connection: close\r\n"]
        at_limit = b"GET /healthz HTTP/1.1\r\n" + b"".join(fields) + b"\r\n"
        pad = b"GET /healthz HTTP/1.1\r\n" + host + b"Connection: close\r\nX-Pad: "
        head_8k = pad + b"a" * (8192 - len(pad) - 4) + b"\r\n\r\n"
        self.assertEqual((len(fields), len(head_8k)), (64, 8192))
        cases += [("64 fields", at_limit, 200),
                  ("65 fields", at_limit.replace(b"X-H0:", b"X-A: a\r\nX-H0:"), 431),
                  ("8 KiB head", head_8k, 200),
                  ("8 KiB head + 1", head_8k.replace(b"X-Pad: ", b"X-Pad: a"), 431)]
        problems = []
        for what, request, want in cases:
            with self.subTest(case=what):
                r = self.raw(request, until_close=want not in (200, 404), timeout=4)
                if r.status != want:
                    problems.append(f"{what}: got {r!r}, want {want}")
                if want == 405 and r.status == 405:
                    self.assertIn("GET", r.headers.get("allow", ""), f"{what}: 405 without Allow")
                if want >= 400 and want != 404:
                    self.assertTrue(r.closed, f"{what}: the connection stayed open after {r!r}")
                health = self.admin("/healthz", timeout=3)
                self.assertEqual(health.status, 200,
                                 f"after {what}, /healthz: {health!r}\n{self.spindle_tail()}")
        self.assertEqual(problems, [], "\n".join(problems))
        # a request sent one byte at a time still works (the head is parsed incrementally)
        one = b"GET /healthz HTTP/1.1\r\n" + host + b"Connection: close\r\n\r\n"
        with simprom.connect(self.node, self.node.addr4, ADMIN_PORT) as sock:
            for i in range(len(one)):
                sock.sendall(one[i:i + 1])
            data = b""
            for _ in range(100):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        self.assertTrue(data.startswith(b"HTTP/1.1 200 "), data[:200])
        # what a lenient but correct client may send is answered
        for what, request in (
                ("HTTP/1.0 without Host", b"GET /healthz HTTP/1.0\r\n\r\n"),
                ("absolute-form target", b"GET http://198.18.0.1:9901/healthz HTTP/1.1\r\n" + host
                 + b"Connection: close\r\n\r\n"),
                ("query string", b"GET /healthz?verbose=1 HTTP/1.1\r\n" + host
                 + b"Connection: close\r\n\r\n"),
                ("empty line first", b"\r\nGET /healthz HTTP/1.1\r\n" + host
                 + b"Connection: close\r\n\r\n")):
            r = self.raw(request, until_close=True, timeout=4)
            self.assertEqual((r.status, r.text), (200, "ok\n"), f"{what}: {r!r}")
        # keep-alive: three requests on one connection, pipelined
        three = (b"GET /healthz HTTP/1.1\r\n" + host + b"\r\n") * 2 + \
            b"GET /ready HTTP/1.1\r\n" + host + b"Connection: close\r\n\r\n"
        r = self.raw(three, until_close=True)
        self.assertEqual(r.raw.count(b"HTTP/1.1 200 "), 3, r.raw[:600])
        self.assertTrue(self.spindle.proc.alive(), self.spindle_tail())

    def test_64_idle_connections_do_not_lock_out_a_probe(self):
        # 64 connections that send nothing fill the admin's table; a probe made then is
        # answered at once (the oldest idle connection makes room for it), and the idle ones
        # are dropped at the 5 s request deadline.
        socks = []
        try:
            for _ in range(64):
                socks.append(simprom.connect(self.node, self.node.addr4, ADMIN_PORT))
            time.sleep(0.2)
            t0 = time.monotonic()
            ok = self._healthz_ok()
            measure("admin_probe_with_64_idle_connections",
                    wait_s=round(time.monotonic() - t0, 2))
            self.assertTrue(ok, "a probe was locked out by 64 idle admin connections")
            # every idle connection is closed by spindle: one to make room, the rest at 5 s
            closed = 0
            deadline = time.monotonic() + 8
            for s in socks:
                s.settimeout(max(0.1, deadline - time.monotonic()))
                try:
                    closed += s.recv(1) == b""
                except (TimeoutError, OSError):
                    pass
            self.assertEqual(closed, 64, "idle admin connections were not closed at 5 s")
        finally:
            for s in socks:
                s.close()

    def _healthz_ok(self):
        try:
            return self.admin("/healthz", timeout=1).status == 200
        except OSError:
            return False

    # === 4. /endpoints, /config, / ============================================================

    def test_endpoints_counts_sum_to_the_calls_config_names_the_service_index_is_html(self):
        before, _ = self.endpoint_calls()
        count = 300
        res = peers.run_client(self.client, TARGET4, "unary", count=count, concurrency=4)
        self.assertTrue(res.get("ok"), json.dumps(res)[:2000])
        after, doc = self.endpoint_calls()
        self.assertEqual(set(after), set(BACKENDS),
                         f"/endpoints does not list the three Pods: {json.dumps(doc)}")
        delta = {name: after[name] - before.get(name, 0) for name in BACKENDS}
        self.assertEqual(sum(delta.values()), count, f"/endpoints calls went {before} -> {after}")
        self.assertEqual(delta, self.served(res["run"]),
                         "/endpoints' per-endpoint calls differ from what the backends served")
        service = [s for s in doc["services"] if s["name"] == SERVICE][0]
        for e in service["endpoints"]:
            self.assertEqual(e["state"], "healthy", e)
            self.assertEqual(e["active_streams"], 0, e)

        r = self.admin("/config")
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.headers.get("content-type", "").startswith("application/json"), r)
        cfg = r.json()
        names = [s["name"] for s in cfg["services"]]
        self.assertEqual(names, [SERVICE], cfg)
        self.assertEqual(sorted(cfg["services"][0]["endpoints"]["static"]),
                         sorted(self.endpoint_of), cfg)
        self.assertEqual(cfg["admin"]["listen"], f"{self.node.addr4}:{ADMIN_PORT}", cfg)
        self.assertEqual(cfg["proxy"]["io_engine"], "auto", cfg)

        r = self.admin("/")
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.headers.get("content-type", "").startswith("text/html"), r)
        self.assertIn("<html", r.text.lower())
        self.assertIn(f"<h2>{SERVICE}</h2>", r.text)
        self.assertIn("<p>I/O engine: io_uring</p>", r.text)  # auto, on this kernel
        for endpoint in self.endpoint_of:
            self.assertIn(endpoint, r.text)

        head = self.admin("/endpoints", method="HEAD")
        self.assertEqual((head.status, head.body), (200, b""), head)
        self.assertGreater(int(head.headers.get("content-length", "0")), 0, head)

    def test_by_default_the_network_gets_metrics_ready_healthz_and_no_pod_names(self):
        # Defaults: admin.listen is reachable by every Pod of the node, so it serves no page
        # that names services, endpoints or settings, and calls are not counted by Pod; the
        # Unix socket (the spindle Pod's own) serves every page.
        socket = os.path.join(self.node.logdir, "admin-defaults.sock")
        cfg = sim.spindle.config(
            self.node, [self.echo], listen=[f"{self.node.addr4}:{DNS_PROXY_PORT}"],
            cgroup=self.node.cgroup_for("admin-defaults").path,
            extra={"admin": {"listen": f"{self.node.addr4}:{DNS_ADMIN_PORT}", "socket": socket},
                   "redirect": {"host_netns": True}})
        cfg["services"][0]["endpoints"] = {"static": list(self.endpoint_of)}
        sp = sim.Spindle(self.node, cfg, name="spindle-defaults")
        self.addCleanup(sp.close)
        sp.start()
        for path in ("/metrics", "/ready", "/healthz"):
            self.assertEqual(self.admin(path, port=DNS_ADMIN_PORT).status, 200, path)
        for path in ("/endpoints", "/config", "/"):
            self.assertEqual(self.admin(path, port=DNS_ADMIN_PORT).status, 404,
                             f"{path} is served to every Pod of the node")
            p = self.node.run([sim.SPINDLE_BIN, "--config", sp.config_path, "--probe", path],
                              check=False, timeout=10)
            self.assertEqual(p.returncode, 0, f"{path} on admin.socket: {p.stdout} {p.stderr}")
        # Calls through this spindle (a client in its cgroup, in the node's namespace) are
        # counted, but not by Pod.
        p = self.node.run(peers.client_argv(TARGET4, "unary", count=20, run=peers.new_run("df")),
                          cgroup="admin-defaults", timeout=60, check=False)
        res = json.loads(p.stdout.strip().splitlines()[-1]) if p.stdout.strip() else {}
        self.assertTrue(res.get("ok"), p.stdout[-1500:] + p.stderr[-1500:] + sp.tail())
        text = self.admin("/metrics", port=DNS_ADMIN_PORT).text
        self.assertEqual(metric(text, "spindle_requests_total"), 20, sp.tail())
        self.assertIn("# TYPE spindle_source_requests_total counter", text)
        self.assertNotIn("spindle_source_requests_total{", text)

    def test_calls_are_counted_by_calling_pod(self):
        # The source label is the calling Pod's cgroup (its UID on a kubelet node; here the
        # simulator's cgroup path, which ends in the Pod's name).
        source = os.path.relpath(self.client.cgroup.path, sim.cgroup2_mount())

        def by_source():
            m = parse_metrics(self.admin("/metrics").text)
            return m.get(("spindle_source_requests_total",
                          frozenset({("source", source), ("service", SERVICE)})), 0)

        before = by_source()
        count = 120
        res = peers.run_client(self.client, TARGET4, "unary", count=count)
        self.assertTrue(res.get("ok"), json.dumps(res)[:2000])
        self.assertEqual(by_source() - before, count,
                         self.admin("/metrics").text[-3000:])

    # === 5. measurements =======================================================================

    def test_measure_p99_with_and_without_100ms_scrapes(self):
        rounds, calls, concurrency = 3, 2000, 4
        lat = {"none": [], "scrape100ms": []}
        scrape_times = []
        errors = 0
        for _ in range(rounds):
            for mode in ("none", "scrape100ms"):
                stop = threading.Event()
                scraper = None
                if mode != "none":
                    scraper = threading.Thread(target=self._scrape_loop,
                                               args=(stop, scrape_times), daemon=True)
                    scraper.start()
                try:
                    out = self.latency_client(calls, concurrency)
                finally:
                    stop.set()
                    if scraper is not None:
                        scraper.join(10)
                lat[mode] += out["lat_ms"]
                errors += sum(out["errors"].values())
        self.assertEqual(errors, 0, "calls failed during the latency runs")
        self.assertGreater(len(scrape_times), 10, "the scraper did not run")
        for mode, values in lat.items():
            measure(f"admin_latency_{mode}", calls=len(values),
                    p50_ms=round(percentile(values, 50), 3), p99_ms=round(percentile(values, 99), 3),
                    max_ms=round(max(values), 3))
        measure("admin_scrape_during_load", scrapes=len(scrape_times),
                median_ms=round(percentile(scrape_times, 50) * 1000, 3),
                max_ms=round(max(scrape_times) * 1000, 3))

    def _scrape_loop(self, stop, times):
        """GET /metrics every 100 ms until stop (at most 60 s)."""
        t_next = time.monotonic()
        for _ in range(600):
            if stop.is_set():
                return
            r = self.admin("/metrics")
            if r.status == 200:
                times.append(r.seconds)
            t_next += 0.1
            stop.wait(max(0.0, t_next - time.monotonic()))

    def latency_client(self, calls, concurrency):
        p = self.client.run([sim.PYTHON, os.path.abspath(__file__), "latency-client", TARGET4,
                             "--count", str(calls), "--concurrency", str(concurrency)],
                            timeout=120, check=False)
        try:
            return json.loads(p.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            raise AssertionError(f"latency client gave no result (rc {p.returncode}):\n"
                                 f"{p.stdout[-1000:]}\n{p.stderr[-2000:]}") from None

    def test_measure_scrape_time_with_50_services_of_20_endpoints(self):
        services = []
        for s in range(SCALE_SERVICES):
            # Pod addresses inside the node's range that nothing serves: only listed
            endpoints = [f"198.18.{10 + s}.{e + 1}:{PORT}" for e in range(SCALE_ENDPOINTS)]
            services.append({"name": f"svc{s:02d}", "intercept": [f"198.19.1.{s + 1}:{PORT}"],
                             "endpoints": {"static": endpoints}})
        cfg = sim.spindle.config(
            self.node, listen=[f"{self.node.addr4}:{SCALE_PROXY_PORT}"],
            cgroup=self.node.cgroup_for("admin-idle").path,
            extra={"admin": {"listen": f"{self.node.addr4}:{SCALE_ADMIN_PORT}"}})
        cfg["services"] = services
        sp = sim.Spindle(self.node, cfg, name="spindle-scale")
        self.addCleanup(sp.close)
        sp.start()
        times, sizes = [], set()
        r = None
        for _ in range(20):
            r = self.admin("/metrics", port=SCALE_ADMIN_PORT)
            self.assertEqual(r.status, 200, r)
            times.append(r.seconds)
            sizes.add(len(r.body))
        lines = [line for line in r.text.splitlines() if line and not line.startswith("#")]
        active = [line for line in lines if line.startswith("spindle_active_streams{")]
        self.assertEqual(len(active), SCALE_SERVICES * SCALE_ENDPOINTS,
                         "spindle_active_streams does not have one series per endpoint")
        p = subprocess.run([simprom.PROMTOOL, "check", "metrics"], input=r.body,
                           capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 0, (p.stdout + p.stderr)[:2000])
        small = [self.admin("/metrics").seconds for _ in range(20)]
        measure("admin_scrape_50x20", median_ms=round(percentile(times, 50) * 1000, 3),
                p90_ms=round(percentile(times, 90) * 1000, 3),
                max_ms=round(max(times) * 1000, 3), bytes=max(sizes), series=len(lines))
        measure("admin_scrape_1x3", median_ms=round(percentile(small, 50) * 1000, 3),
                max_ms=round(max(small) * 1000, 3))
        self.assertTrue(sp.proc.alive(), sp.tail())


# =====================================================================================
# Run as a script inside the client Pod: the latency client
# =====================================================================================

def latency_client(argv):
    """latency-client TARGET [--count N] [--concurrency C] [--timeout T]

    Over ONE channel, C threads make N unary calls in all (after 50 unrecorded warm-up
    calls) and time each one at the client; prints one JSON object on stdout:
    {"lat_ms": [...], "errors": {code: n}, "pods": {pod: n}, "elapsed_s": s}."""
    import argparse
    import collections
    import itertools

    import grpc
    import echo_service as es

    ap = argparse.ArgumentParser()
    ap.add_argument("target")
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--max-seconds", type=float, default=90.0)
    args = ap.parse_args(argv)
    count = min(args.count, 100_000)
    signal.alarm(int(args.max_seconds) + 30)  # a hung run ends on its own
    channel = grpc.insecure_channel(args.target,
                                    options=es.CHANNEL_OPTIONS + [("grpc.enable_retries", 0)])
    unary = channel.unary_unary(es.UNARY)
    for k in range(50):
        unary(b"warm-up", metadata=[("x-call-id", f"lw-{k}")], timeout=args.timeout)
    lock = threading.Lock()
    tickets = itertools.count()
    lat, errors, pods = [], collections.Counter(), collections.Counter()
    t_end = time.monotonic() + args.max_seconds

    def worker():
        for _ in range(count):
            if next(tickets) >= count or time.monotonic() > t_end:
                return
            t0 = time.perf_counter()
            try:
                _, call = unary.with_call(b"latency", timeout=args.timeout)
                ms = (time.perf_counter() - t0) * 1000.0
                pod = es.md_get(call.trailing_metadata(), "x-pod")
                with lock:
                    lat.append(round(ms, 4))
                    pods[pod] += 1
            except grpc.RpcError as e:
                with lock:
                    errors[e.code().name if e.code() else "UNKNOWN"] += 1

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(min(args.concurrency, 64))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.1, t_end + args.timeout - time.monotonic()))
    with lock:
        out = {"lat_ms": list(lat), "errors": dict(errors), "pods": dict(pods),
               "elapsed_s": round(time.monotonic() - t0, 3)}
    print(json.dumps(out), flush=True)
    channel.close()
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "latency-client":
        sys.exit(latency_client(sys.argv[2:]))
    sys.exit("usage: test_admin.py latency-client TARGET ...  (the tests run through run.py)")
