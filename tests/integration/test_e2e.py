"""End to end: real gRPC clients of three stacks, each on ONE channel to the Service's
ClusterIP, balanced per call by spindle over Pods found by DNS, on the simulated node.

The stacks, each with the same scenarios, options and JSON result:

    python  tests/grpc/client.py          Debian's python3-grpcio (gRPC C-core)
    cpp     build/bin/e2e_client          C++ libgrpc++, grpc::GenericStub on raw bytes
    node    tests/e2e/node/client.js      npm @grpc/grpc-js on the machine's Node.js

C-core dials an IPv4 target from an AF_INET6 socket (v4-mapped, so spindle's connect6 program
sees it); grpc-js uses AF_INET (connect4): both paths are exercised, and the scale-away test
checks with `ss` in the client Pod that each stack's one connection took its path to spindle.

One node per stack (a class): client Pod 198.18.1.2, backend Pods b1-b3 (198.18.1.3-5) running
tests/grpc/server.py, Service echo at VIP4/VIP6:50051 (the node's DNAT, as kube-proxy), dnsmasq
on 198.18.0.1:53 serving the headless name with TTL 1 s, and spindle intercepting the VIPs with
endpoints.dns = the headless name and the default balance (least_request). For each stack:

  1. 3000 unary calls: each Pod serves an even share, |share - 1/3| <= 0.05;
  2. unary, client streaming, server streaming and bidi calls carry their content intact;
  3. ascii and -bin metadata come back in headers and trailers; errors keep code and message;
  4. a cancelled call ends CANCELLED at the client and is seen cancelled by its backend;
  5. an expired deadline ends DEADLINE_EXCEEDED at the client, promptly;
  6. a Pod scaled away under steady load (DNS first, then SIGTERM with a grace period, as
     Kubernetes does) costs no call, and takes no new call once spindle has dropped it.

Run alone: /usr/bin/python3 tests/integration/run.py test_e2e
"""

import collections
import json
import os
import re
import signal
import sys
import time

import sim
from sim import dns as simdns
from sim.prometheus import http_get
from support import SimTestCase, grpcio_missing, measure, metric, norm_ip

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TESTS, "grpc"))
import peers  # noqa: E402  (tests/grpc)

E2E_CLIENT = os.path.join(sim.REPO, "build", "bin", "e2e_client")
NODE = "/usr/bin/node"
NODE_DIR = os.path.join(TESTS, "e2e", "node")
NODE_CLIENT = os.path.join(NODE_DIR, "client.js")

PORT = 50051
ADMIN_PORT = 9901
VIP4, VIP6 = "198.19.0.10", "2001:2:0:ff::10"
TARGET4, TARGET6 = peers.target(VIP4, PORT), peers.target(VIP6, PORT)
BACKENDS = ("b1", "b2", "b3")                          # Pods 198.18.1.3-5
HEADLESS = "echo-pods.demo.svc.cluster.local"          # endpoints.dns
CLUSTER_NAME = "echo.demo.svc.cluster.local"
TTL = 1                                                # dnsmasq --local-ttl

CALLS = 3000
SHARE_TOLERANCE = 0.05       # |share - 1/3| for each Pod
CANCEL_SEEN_WITHIN = 0.100   # s from the client's cancel to the backend seeing it
DEADLINE_MS = 300
DEADLINE_LATE_MS = 500       # DEADLINE_EXCEEDED may come this much after the deadline
GRACE = 5.0                  # server.py --grace: the Pod's termination grace period
DROP_WITHIN = 8.0            # s for spindle to drop an endpoint DNS no longer lists
QUIET_HOLD = 1.0             # s the dropped Pod stays up, reachable, and must get no call
DROP_SETTLE = 0.1            # s from spindle's endpoints line to the quiet hold (test_6)

ENDPOINTS_LINE = re.compile(r"spindle: info: service (?P<name>\S+): (?P<n>\d+) endpoints?\b:?"
                            r"(?P<list>.*)$")


def _flags(opts):
    argv = []
    for k, v in opts.items():
        if v is not None:
            argv += ["--" + k.replace("_", "-"), str(v)]
    return argv


class _E2ETest:
    """Mixed into SimTestCase; `stack` names the client. One node and one spindle for the
    class; the scale-away test puts DNS and its Pod back as they were."""

    stack = None
    v4_mapped = True    # gRPC C-core dials IPv4 from AF_INET6 sockets; grpc-js does not
    needs_spindle = True
    upstream_source = "node"  # spindle's upstream.source
    families = ("ip4",)       # the headless name's records per Pod: A, or A and AAAA

    # --- the client of this stack ----------------------------------------------------------------

    @classmethod
    def client_missing(cls):
        """Why this stack's client cannot run here, or None."""
        if cls.stack == "python":
            return "python3-grpcio is not installed (make deps)" if grpcio_missing() else None
        if cls.stack == "cpp":
            return None if os.access(E2E_CLIENT, os.X_OK) else \
                f"{E2E_CLIENT} not built (make build/bin/e2e_client)"
        if not os.access(NODE, os.X_OK):
            return f"{NODE} not found (make deps)"
        if not os.path.isdir(os.path.join(NODE_DIR, "node_modules", "@grpc", "grpc-js")):
            return f"@grpc/grpc-js not installed in {NODE_DIR} (make deps runs npm ci)"
        return None

    @classmethod
    def client_argv(cls, target, scenario, opts):
        if cls.stack == "python":
            head = [sim.PYTHON, peers.CLIENT]
        elif cls.stack == "cpp":
            head = [E2E_CLIENT]
        else:
            head = [NODE, NODE_CLIENT]
        return head + [target, scenario] + _flags(opts)

    def client_run(self, scenario, target=TARGET4, *, run_timeout=120, **opts):
        """The scenario in the client Pod, waited for; its JSON result."""
        opts.setdefault("run", peers.new_run(self.stack[:2]))
        argv = self.client_argv(target, scenario, opts)
        calls_before = self.spindle_calls()
        p = self.client.run(argv, timeout=run_timeout, check=False)
        self._spindle_calls[opts["run"]] = self.spindle_calls() - calls_before
        lines = p.stdout.strip().splitlines()
        try:
            res = json.loads(lines[-1])
        except (IndexError, ValueError):
            self.fail(f"{self.stack} client {scenario} gave no JSON result (rc {p.returncode}):\n"
                      f"{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
        res["_stderr"] = p.stderr[-1500:]
        return res

    def client_spawn(self, scenario, target=TARGET4, **opts):
        """The scenario started in the background: (Proc, run id)."""
        opts.setdefault("run", peers.new_run(self.stack[:2]))
        proc = self.client.spawn(self.client_argv(target, scenario, opts),
                                 name=f"{self.stack}-{scenario}")
        self.addCleanup(proc.kill)
        return proc, opts["run"]

    # --- the node --------------------------------------------------------------------------------

    @classmethod
    def build(cls, stack):
        why = simdns.available() or cls.client_missing()
        if why:
            if os.environ.get("SPINDLE_REQUIRED") == "1":
                raise RuntimeError(why)
            cls._skip_reason = why
            return
        cls.node = stack.enter_context(sim.Node())
        cls.client = cls.node.add_pod("client", n=2)
        cls.pods = {name: cls.node.add_pod(name, n=3 + i) for i, name in enumerate(BACKENDS)}
        cls.echo = cls.node.add_service("echo", vip4=VIP4, vip6=VIP6, ports=[PORT],
                                        backends=list(cls.pods.values()))
        # the servers start side by side (importing grpcio takes a while each)
        cls.servers, cls.logs = {}, {}
        for name, pod in cls.pods.items():
            cls.servers[name], cls.logs[name] = peers.start_server(
                pod, flags={"grace": GRACE}, wait=False)
        for proc in cls.servers.values():
            peers.wait_serving(proc, 20)
        cls.dnsmasq = simdns.Dnsmasq(cls.node, ttl=TTL, records=cls.records(BACKENDS))
        stack.callback(cls.dnsmasq.close)
        cfg = sim.spindle.config(cls.node)
        cfg["dns"] = {"servers": [cls.dnsmasq.server], "refresh": {"min": "1s", "max": "5s"}}
        cfg["services"] = [{"name": "echo", "intercept": [TARGET4, TARGET6],
                            "endpoints": {"dns": HEADLESS}, "port": PORT}]
        cfg["upstream"] = {"source": cls.upstream_source}
        cfg["admin"] = {"listen": f"{cls.node.addr4}:{ADMIN_PORT}"}
        cls._spindle_calls = {}
        cls.spindle = stack.enter_context(sim.Spindle(cls.node, cfg))
        cls.spindle.start()
        cls.wait_endpoints(BACKENDS)

    @classmethod
    def records(cls, names):
        return {HEADLESS: [getattr(cls.pods[n], f) for n in names for f in cls.families],
                CLUSTER_NAME: [VIP4, VIP6]}

    @classmethod
    def wait_endpoints(cls, names, timeout=DROP_WITHIN):
        """Waits until spindle's latest endpoints line for echo lists exactly these Pods."""
        want = {f"{cls.pods[n].ip4}:{PORT}" for n in names}
        if "ip6" in cls.families:
            want |= {f"[{cls.pods[n].ip6}]:{PORT}" for n in names}

        def current():
            for line in reversed(cls.spindle.stderr_lines()):
                m = ENDPOINTS_LINE.search(line)
                if m and m["name"] == "echo":
                    listed = {w for w in m["list"].split() if ":" in w}
                    return listed if int(m["n"]) == len(want) and listed == want else None
            return None
        return cls.spindle.proc.wait_for(current, timeout,
                                         what=f"spindle to list the endpoints {sorted(want)}")

    def setUp(self):
        super().setUp()
        self.assertTrue(self.spindle.proc.alive(), "spindle died\n" + self.spindle.tail())
        for name, proc in self.servers.items():
            self.assertTrue(proc.alive(), f"backend {name} died\n{proc.tail()}")

    # --- what the backends saw ---------------------------------------------------------------------

    def served(self, run, method="Unary"):
        """{backend: calls of this run it started} (method None: of any method)."""
        return {name: len(log.starts(run=run, method=method)) for name, log in self.logs.items()}

    def find_call(self, call_id):
        """(backend, {"start": ..., "end": ..., "cancel": ...}) of one call, or (None, {})."""
        for name, log in self.logs.items():
            events = log.by_id(call_id)
            if events:
                return name, events
        return None, {}

    def spindle_calls(self):
        """Calls spindle has ended so far (spindle_requests_total, every series)."""
        text = http_get(self.node, self.node.addr4, ADMIN_PORT, "/metrics").text
        return metric(text, "spindle_requests_total")

    def assertThroughSpindle(self, run, *, every_family=False):
        """The backends saw this run's calls come from where spindle's upstream.source says:
        the node, or the client Pod itself, from its address of each endpoint's family
        (every_family: both were seen); and spindle ended at least as many calls during
        the run as the backends saw: not straight from the client Pod through the DNAT."""
        starts = [e for log in self.logs.values() for e in log.starts(run=run)]
        seen = {norm_ip(peers.peer_ip(e["peer"])) for e in starts}
        self.assertTrue(seen, f"no backend logged any call of run {run}")
        if self.upstream_source == "pod":
            expected = {getattr(self.client, f) for f in self.families}
        else:
            expected = {self.node.addr4}
        if every_family:
            self.assertEqual(seen, expected, f"calls reached the backends from {seen}")
        self.assertLessEqual(seen, expected, f"calls reached the backends from {seen}")
        if run in self._spindle_calls:
            self.assertGreaterEqual(self._spindle_calls[run], len(starts),
                                    "the backends saw calls that did not go through spindle")

    def assertClientOk(self, res):
        self.assertTrue(res.get("ok"), f"{self.stack} client failures: " + json.dumps(
            {k: v for k, v in res.items() if k not in ("calls", "_stderr")}, sort_keys=True)[:4000]
            + "\n" + res.get("_stderr", "")[-800:] + "\n" + self.spindle.tail())

    # --- 1. balance ----------------------------------------------------------------------------------

    def test_1_balance_over_3_pods_on_one_channel(self):
        # Eight calls in flight on the one channel, each held 5 ms at its Pod, so that the
        # picker balances on real load.
        res = self.client_run("unary", count=CALLS, concurrency=8, sleep_ms=5, timeout=10)
        self.assertClientOk(res)
        self.assertThroughSpindle(res["run"], every_family=True)
        served = self.served(res["run"])
        self.assertEqual(sum(served.values()), CALLS,
                         f"the backends logged {served}, the client made {CALLS} calls")
        self.assertEqual({k: v for k, v in served.items() if v}, res["pods"],
                         "the x-pod the client saw differs from what the backends logged")
        shares = {name: n / CALLS for name, n in served.items()}
        measure(f"e2e {self.stack} balance: {CALLS} calls on one channel in "
                f"{res['elapsed_s']:.2f}s, shares " +
                " ".join(f"{k}={v:.1%}" for k, v in sorted(shares.items())))
        for name, share in shares.items():
            self.assertLessEqual(abs(share - 1 / 3), SHARE_TOLERANCE,
                                 f"{name} served {share:.1%} of {CALLS} calls, not 33.3% +-"
                                 f"{SHARE_TOLERANCE:.0%}: {served}")

    # --- 2. the four kinds -----------------------------------------------------------------------------

    def test_2_every_call_kind_carries_content_intact(self):
        res = self.client_run("streams")
        self.assertClientOk(res)
        self.assertEqual(set(res["kinds"]), {"unary", "client_stream", "server_stream",
                                             "server_stream_16mib", "bidi_ping_pong",
                                             "bidi_bulk_16mib"})
        for name, kind in res["kinds"].items():
            self.assertTrue(kind["ok"] and kind.get("pod") in BACKENDS, f"{name}: {kind}")
        self.assertThroughSpindle(res["run"])
        # each call is one stream the backends saw, of the right kind
        for method, n in (("Unary", 1), ("ClientStream", 1), ("ServerStream", 2), ("Bidi", 2)):
            self.assertEqual(sum(self.served(res["run"], method).values()), n, method)

    # --- 3. metadata and trailers --------------------------------------------------------------------

    def test_3_metadata_trailers_and_errors_round_trip(self):
        for target in (TARGET4, TARGET6):
            with self.subTest(target=target):
                res = self.client_run("metadata", target=target)
                self.assertClientOk(res)
                cases = res["cases"]
                self.assertEqual(set(cases), {"ok_call", "trailers_only_error",
                                              "error_after_headers"})
                self.assertEqual(cases["ok_call"]["code"], "OK")
                self.assertEqual(cases["trailers_only_error"]["code"], "NOT_FOUND")
                self.assertEqual(cases["error_after_headers"]["code"], "PERMISSION_DENIED")
                message = "no such key: k\u00e9y \u2603 100% done, \r\n and a newline"
                for name in ("trailers_only_error", "error_after_headers"):
                    self.assertEqual(cases[name]["details"], message, name)
                    self.assertIn(cases[name]["pod"], BACKENDS, f"{name}: x-pod trailer lost")
                self.assertThroughSpindle(res["run"])

    # --- 4. cancellation -------------------------------------------------------------------------------

    def test_4_cancelled_call_ends_cancelled_and_the_backend_sees_it(self):
        res = self.client_run("cancel", sleep_ms=10_000, timeout=20)
        self.assertClientOk(res)  # every call ended CANCELLED at the client
        self.assertEqual(set(res["cancelled"]), {"unary", "server_stream", "bidi"})
        self.assertThroughSpindle(res["run"])
        for kind, c in res["cancelled"].items():
            with self.subTest(kind=kind):
                self.assertEqual(c["code"], "CANCELLED", c)

                def cancel_logged(cid=c["id"]):
                    name, events = self.find_call(cid)
                    return (name, events) if "cancel" in events else None
                name, events = sim.wait_until(
                    cancel_logged, 3, what=f"the backend to log the cancel of {c['id']}",
                    details=lambda: f"{self.find_call(c['id'])}\n{self.spindle.tail()}")
                self.assertNotIn("end", events, f"the backend finished a cancelled call: {events}")
                self.assertEqual(events["cancel"]["reason"], "cancelled", events["cancel"])
                delay = events["cancel"]["t"] - c["t_cancel"]
                measure(f"e2e {self.stack} cancel {kind}: backend saw it {delay * 1000:.1f} ms "
                        f"after the client's cancel")
                self.assertLess(delay, CANCEL_SEEN_WITHIN,
                                f"{kind}: backend {name} saw the cancel {delay * 1000:.1f} ms after "
                                f"the client cancelled: {events['cancel']}")

    # --- 5. deadlines ----------------------------------------------------------------------------------

    def test_5_expired_deadline_is_deadline_exceeded_promptly(self):
        res = self.client_run("deadline", deadline_ms=DEADLINE_MS, sleep_ms=5000)
        self.assertClientOk(res)  # DEADLINE_EXCEEDED at the client
        self.assertEqual(res["code"], "DEADLINE_EXCEEDED")
        measure(f"e2e {self.stack} deadline {DEADLINE_MS} ms: DEADLINE_EXCEEDED after "
                f"{res['elapsed_ms']:.1f} ms")
        self.assertGreaterEqual(res["elapsed_ms"], DEADLINE_MS - 5, res)
        self.assertLess(res["elapsed_ms"], DEADLINE_MS + DEADLINE_LATE_MS,
                        f"DEADLINE_EXCEEDED came late: {res}")
        # the deadline travelled with the call (grpc-timeout) and the backend gave up on it
        name, events = self.find_call(res["id"])
        self.assertIn("start", events, f"no backend saw the call {res['id']}")
        timeout = events["start"]["timeout"]
        self.assertIsNotNone(timeout, "the backend's call had no deadline: grpc-timeout lost")
        self.assertLessEqual(timeout, DEADLINE_MS / 1000.0 + 0.050, events["start"])
        cancel = sim.wait_until(lambda: self.find_call(res["id"])[1].get("cancel"), 3,
                                what="the backend to see the call end at its deadline")
        self.assertNotIn("end", self.find_call(res["id"])[1])
        late = cancel["t"] - (res["t_start"] + DEADLINE_MS / 1000.0)
        self.assertLess(late, CANCEL_SEEN_WITHIN,
                        f"the backend saw the expired call end {late * 1000:.0f} ms after the "
                        f"deadline")

    # --- 6. a Pod scaled away ----------------------------------------------------------------------------

    def test_6_pod_scaled_away_mid_run_costs_no_call(self):
        """Steady load on one channel (8 calls in flight, 20 ms each at the Pods) for 8 s:
        one connection, redirected, from the socket family the stack uses.
        b3 leaves as Kubernetes takes a Pod away: out of the DNS records first; once spindle
        has dropped it, b3 is still up and reachable for QUIET_HOLD s and must get no call;
        then SIGTERM, and server.py stops gracefully (GOAWAY, GRACE s for calls in flight).
        Every call of the run must succeed, before, during and after."""
        victim, stay = "b3", ("b1", "b2")
        self.addCleanup(self._bring_back, victim)
        proc, run = self.client_spawn("during-kill", seconds=8, concurrency=8, sleep_ms=20,
                                      timeout=5)
        log = self.logs[victim]
        sim.wait_until(lambda: len(log.starts(run=run)) >= 30, 10, interval=0.05,
                       what=f"{victim} to serve 30 calls of the load",
                       details=lambda: f"served: {self.served(run)}\n{proc.tail()}")
        self.assertOneRedirectedConnection()
        t_dns = self.dnsmasq.set_records(self.records(stay))
        self.wait_endpoints(stay)
        # The log line comes as the main thread hands the workers the new table; they take it
        # at their next turn of the loop, and b3's handler logs the start of a call spindle
        # sent just before a few ms later still (a Python server under load): DROP_SETTLE.
        time.sleep(DROP_SETTLE)
        t_dropped = time.time()
        events = log.events(run=run)
        done = {e["id"] for e in events if e["ev"] in ("end", "cancel")}
        in_flight = [e for e in events if e["ev"] == "start" and e["id"] not in done]
        sim.hold(QUIET_HOLD, proc, self.spindle.proc, self.servers[victim])
        quiet = [e for e in log.starts(run=run) if e["t"] > t_dropped]
        t_term = time.time()
        self.servers[victim].signal(signal.SIGTERM)
        rc = self.servers[victim].wait(GRACE + 5)
        t_exit = time.time()
        res = peers.result(proc, 40)
        calls = res["calls"]

        failed = [c for c in calls if c[3] != "OK"]
        after_exit = [c for c in calls if c[1] > t_exit]
        summary = (f"{len(calls)} calls, {len(failed)} failed "
                   f"{dict(collections.Counter(c[3] for c in failed))} {res.get('error_details')};"
                   f" first failures {[(c[0], round(c[1] - t_dns, 3), c[3], c[4]) for c in failed[:5]]}"
                   f" (s from the DNS change); dropped by spindle {t_dropped - t_dns:.2f}s after it,"
                   f" SIGTERM at +{t_term - t_dns:.2f}s, {victim} gone at +{t_exit - t_dns:.2f}s;"
                   f" {len(after_exit)} calls after\n{self.spindle.tail()}")
        measure(f"e2e {self.stack} scale-away: {len(calls)} calls, {len(failed)} failed; spindle "
                f"dropped {victim} {t_dropped - t_dns:.2f}s after DNS; {len(in_flight)} calls in "
                f"flight on it then; it exited {t_exit - t_term:.2f}s after SIGTERM")
        self.assertEqual(rc, 0, f"{victim} did not stop cleanly\n{self.servers[victim].tail()}")
        self.assertTrue(any(line.startswith("grpc_server: stopping")
                            for line in self.servers[victim].stdout_lines()),
                        f"{victim} did not stop on SIGTERM\n{self.servers[victim].tail()}")
        self.assertEqual(failed, [], f"calls failed across the scale-away: {summary}")
        self.assertEqual(res.get("mismatches", []), [], summary)
        self.assertFalse(quiet, f"{victim} took {len(quiet)} new calls after spindle had dropped "
                                f"it: {[e['id'] for e in quiet[:5]]}. {summary}")
        self.assertFalse([c for c in calls if c[1] > t_dropped and c[4] == victim],
                         f"calls started after the drop were answered by {victim}. {summary}")
        self.assertGreaterEqual(len(after_exit), 50, f"few calls after {victim} exited. {summary}")
        self.assertEqual({c[4] for c in after_exit}, set(stay),
                         f"after {victim} left the calls do not spread over {stay}. {summary}")

    def assertOneRedirectedConnection(self):
        """The client Pod has ONE TCP connection (its channel), which the kernel shows going
        to spindle's proxy, from an AF_INET6 socket (v4-mapped) for C-core, AF_INET for
        grpc-js: the connect6 and the connect4 path. With upstream.source pod, spindle's own
        connections to the backends live in the Pod's namespace too: they are not the app's."""
        out = self.client.run(["ss", "-tnH", "state", "established"], timeout=10).stdout
        conns = [line.split()[-2:] for line in out.splitlines() if line.strip()]
        if self.upstream_source == "pod":
            backends = {f"{pod.ip4}:{PORT}" for pod in self.pods.values()}
            backends |= {f"[{pod.ip6}]:{PORT}" for pod in self.pods.values()}
            conns = [c for c in conns if c[1] not in backends]
        self.assertEqual(len(conns), 1, f"the client Pod has not one connection: {out}")
        (local, peer), = conns
        host, _, port = peer.rpartition(":")
        self.assertEqual(norm_ip(host.strip("[]")), self.node.addr4,
                         f"the channel's connection does not go to spindle: {out}")
        self.assertIn(int(port), sim.spindle.SERVICE_PORTS,
                      f"the channel's connection does not go to a service port of spindle: {out}")
        self.assertEqual(local.startswith("[::ffff:"), self.v4_mapped,
                         f"{self.stack}: local address {local}, expected "
                         f"{'a v4-mapped AF_INET6' if self.v4_mapped else 'an AF_INET'} socket")

    def _bring_back(self, name):
        """The Pod back in service and in DNS, for the tests that follow."""
        if not self.servers[name].alive():
            self.servers[name], self.logs[name] = peers.start_server(
                self.pods[name], flags={"grace": GRACE})
        if self.dnsmasq.records != self.records(BACKENDS):
            self.dnsmasq.set_records(self.records(BACKENDS))
        self.wait_endpoints(BACKENDS)


class E2EPythonTest(_E2ETest, SimTestCase):
    """python3-grpcio: gRPC C-core, IPv4 dialled from AF_INET6 sockets."""
    stack = "python"


class E2ECppTest(_E2ETest, SimTestCase):
    """C++ libgrpc++: gRPC C-core too, through the C++ API (GenericStub)."""
    stack = "cpp"


class E2ENodeTest(_E2ETest, SimTestCase):
    """@grpc/grpc-js on Node.js: its own HTTP/2 (Node's nghttp2), AF_INET sockets."""
    stack = "node"
    v4_mapped = False


class E2EPythonPodTest(E2EPythonTest):
    """The same with upstream.source: pod (the default): every call leaves from the client
    Pod. The Pods are dual-stack endpoints (A and AAAA), so the calls leave from the Pod's
    IPv4 and IPv6 addresses both."""
    upstream_source = "pod"
    families = ("ip4", "ip6")


class E2ECppPodTest(E2ECppTest):
    """The same with upstream.source: pod, dual-stack endpoints."""
    upstream_source = "pod"
    families = ("ip4", "ip6")


class E2ENodePodTest(E2ENodeTest):
    """The same with upstream.source: pod, dual-stack endpoints."""
    upstream_source = "pod"
    families = ("ip4", "ip6")
