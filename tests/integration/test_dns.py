"""DNS discovery: a service's endpoints are the A/AAAA records of a headless Service name, and
an intercept may be the ClusterIP's name; spindle (c-ares) follows both as they change.

The peers are real: tests/grpc/server.py in five backend Pods b1-b5 (198.18.1.3-7),
tests/grpc/client.py or this file's load driver (ONE channel each) in a client Pod, dnsmasq (Debian's dnsmasq-base) on
198.18.0.1:53 in the node netns for the normal life of a Service (scale up and down, an
outage), and tests/sim/dns_responder.py on 198.18.0.1:5353 for the faults a real server
cannot be made to show on demand (SERVFAIL, REFUSED, silence, truncation, empty answers).
Each spindle test starts its own spindle, so that no state carries over.

The tests assert what a user sees, at the gRPC level: which Pods serve the calls and how many
calls fail. The one log line they also read is the interface the DNS issue defines:

    spindle: info: service NAME: N endpoints: ip:port ip:port ...   (a long list may end
                                                                  "... and 284 more")

spindle runs with the resolver environment of a Kubernetes Pod (search list and ndots:5, set
through LOCALDOMAIN and RES_OPTIONS, which c-ares reads): a name sent without its final dot
would first be tried with the search suffixes, which the FQDN test catches.

Run alone: /usr/bin/python3 tests/integration/run.py test_dns
"""

import collections
import json
import os
import re
import signal
import statistics
import sys
import time

# tests/, for `import sim`, also when this file runs as the load driver in a Pod
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import sim  # noqa: E402
from sim import dns as simdns  # noqa: E402
from sim import prometheus as simprom  # noqa: E402
from support import (SimTestCase, grpcio_missing, measure, metric, norm_ip,  # noqa: E402
                     spindle_missing)

GRPC_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "grpc")
sys.path.insert(0, GRPC_DIR)
import peers  # noqa: E402  (tests/grpc)

PORT = 50051
VIP4, VIP6 = "198.19.0.10", "2001:2:0:ff::10"          # Service echo (ClusterIP)
NEW_VIP4, NEW_VIP6 = "198.19.0.11", "2001:2:0:ff::11"  # where the name moves to
TARGET4 = peers.target(VIP4, PORT)
BACKENDS = ("b1", "b2", "b3", "b4", "b5")              # Pods 198.18.1.3-7
FIRST3 = BACKENDS[:3]

HEADLESS = "echo-pods.demo.svc.cluster.local"          # endpoints.dns
CLUSTER_NAME = "echo.demo.svc.cluster.local"           # intercept by name
BIG = "big-pods.demo.svc.cluster.local"
BIG_COUNT = 300
TTL0_NAME = "ttl0-pods.demo.svc.cluster.local"
HUGE_NAME = "ttlhuge-pods.demo.svc.cluster.local"
RESPONDER_PORT = 5353
ADMIN_PORT = 9901
TTL = 1                                                 # dnsmasq --local-ttl
SETTLE = TTL + 2.0         # a DNS change is in force for new calls this long after it
SHARE_MIN = 0.15           # of calls, for each Pod that should take a share
OUTAGE_S = 30.0            # the outage; only one test pays it
RECOVERY_S = 12.0          # refresh.max (5 s) + a failed try (3 s) + slack

# What a Pod's /etc/resolv.conf says in Kubernetes (ClusterFirst), as c-ares reads it from
# the environment; the machine's resolv.conf is never involved (dns.servers is always set).
K8S_RESOLVER_ENV = ["LOCALDOMAIN=demo.svc.cluster.local svc.cluster.local cluster.local",
                    "RES_OPTIONS=ndots:5"]

ENDPOINTS_LINE = re.compile(r"spindle: info: service (?P<name>\S+): (?P<n>\d+) endpoints?\b:?"
                            r"(?P<list>.*)$")


def endpoint(pod):
    return f"{pod.ip4}:{PORT}"


def big_addresses():
    # 198.18.2.1 - 198.18.3.50: inside the node's namespaces, never dialled (no call is made)
    return [f"198.18.{2 + i // 250}.{1 + i % 250}" for i in range(BIG_COUNT)]


# =====================================================================================
# The infrastructure itself: what the spindle tests rely on the DNS servers to do
# =====================================================================================

class DnsInfraTest(SimTestCase):
    """dnsmasq and the scripted responder answer as the spindle tests assume, asked from the
    node netns (where spindle runs) and from a Pod, without spindle."""

    @classmethod
    def build(cls, stack):
        why = simdns.available()
        if why:
            cls._skip_reason = why
            return
        cls.node = stack.enter_context(sim.Node())
        cls.pod = cls.node.add_pod("client", n=2)
        cls.dnsmasq = simdns.Dnsmasq(cls.node, ttl=TTL, records={
            HEADLESS: ["198.18.1.3", "198.18.1.4", "198.18.1.5"],
            CLUSTER_NAME: [VIP4, VIP6]})
        stack.callback(cls.dnsmasq.close)
        cls.responder = simdns.Responder(cls.node, port=RESPONDER_PORT)
        stack.callback(cls.responder.close)

    def test_dnsmasq_answers_records_with_the_ttl_nodata_and_nxdomain(self):
        for place in (self.node, self.pod):
            with self.subTest(place=place):
                a = self.dnsmasq.query(HEADLESS, "A", place=place)
                self.assertEqual((a["rcode"], simdns.addresses(a)),
                                 ("NOERROR", ["198.18.1.3", "198.18.1.4", "198.18.1.5"]), a)
                self.assertEqual({r["ttl"] for r in a["answers"]}, {TTL}, a)
                aaaa = self.dnsmasq.query(HEADLESS, "AAAA", place=place)
                self.assertEqual((aaaa["rcode"], aaaa["answers"]), ("NOERROR", []), aaaa)
                vip6 = self.dnsmasq.query(CLUSTER_NAME, "AAAA", place=place)
                self.assertEqual(simdns.addresses(vip6), [VIP6], vip6)
                nx = self.dnsmasq.query("gone.demo.svc.cluster.local", "A", place=place)
                self.assertEqual(nx["rcode"], "NXDOMAIN", nx)
                # the FQDN form (trailing dot) is the same name on the wire
                dotted = self.dnsmasq.query(HEADLESS + ".", "A", place=place)
                self.assertEqual(simdns.addresses(dotted), simdns.addresses(a))

    def test_dnsmasq_set_records_is_served_at_once_and_stop_refuses(self):
        original = dict(self.dnsmasq.records)
        self.addCleanup(self.dnsmasq.set_records, original)
        five = [f"198.18.1.{n}" for n in range(3, 8)]
        self.dnsmasq.set_records({HEADLESS: five, CLUSTER_NAME: [NEW_VIP4, NEW_VIP6]})
        self.assertEqual(simdns.addresses(self.dnsmasq.query(HEADLESS)), sorted(five))
        self.assertEqual(simdns.addresses(self.dnsmasq.query(CLUSTER_NAME)), [NEW_VIP4])
        self.assertEqual(simdns.addresses(self.dnsmasq.query(HEADLESS, tcp=True)), sorted(five))
        self.dnsmasq.set_records({CLUSTER_NAME: [VIP4]})
        self.assertEqual(self.dnsmasq.query(HEADLESS)["rcode"], "NXDOMAIN")
        self.dnsmasq.stop()
        try:
            down = self.dnsmasq.query(CLUSTER_NAME, timeout=1)
            self.assertFalse(down["ok"], down)
            self.assertIn("refused", down["error"].lower(), down)
        finally:
            self.dnsmasq.start()
        self.assertEqual(simdns.addresses(self.dnsmasq.query(CLUSTER_NAME)), [VIP4])
        self.assertGreaterEqual(len(self.dnsmasq.queries(name=CLUSTER_NAME, qtype="A")), 2)

    def test_responder_modes(self):
        r = self.responder
        r.reset()
        name = "modes.demo.svc.cluster.local"
        r.set_name(name, a=["198.18.1.3", "198.18.1.4"], aaaa=["2001:2::1:3"], ttl=7)
        ok = r.query(name)
        self.assertEqual((ok["rcode"], simdns.addresses(ok)), ("NOERROR", ["198.18.1.3", "198.18.1.4"]))
        self.assertEqual({a["ttl"] for a in ok["answers"]}, {7})
        self.assertEqual(simdns.addresses(r.query(name, "AAAA")), ["2001:2::1:3"])
        self.assertEqual(r.query("unknown.demo.svc.cluster.local")["rcode"], "NXDOMAIN")
        for mode, rcode in (("empty", "NOERROR"), ("nxdomain", "NXDOMAIN"),
                            ("servfail", "SERVFAIL"), ("refused", "REFUSED")):
            with self.subTest(mode=mode):
                r.set_mode(name, mode)
                res = r.query(name)
                self.assertEqual((res["rcode"], res["answers"], res["tc"]), (rcode, [], False), res)
        r.set_mode(name, "drop")
        t0 = time.time()
        silent = r.query(name, timeout=0.5)
        self.assertIn("timed out", silent.get("error", ""), silent)
        dropped = r.queries(name=name, since=t0)
        self.assertEqual([(q["mode"], q["rcode"]) for q in dropped], [("drop", None)])
        r.set_mode(name, "broken")
        udp = r.query(name)
        self.assertTrue(udp["tc"], udp)
        tcp = r.query(name, tcp=True, timeout=1)
        self.assertIn("closed", tcp.get("error", ""), tcp)
        # a script: one mode per A query, then the name's mode again; AAAA is not counted
        t0 = r.set_mode(name, "answer", script=["empty", "nxdomain"])
        got = [r.query(name)["rcode"], r.query(name, "AAAA")["rcode"], r.query(name)["rcode"],
               r.query(name)["rcode"]]
        self.assertEqual(got, ["NOERROR", "NOERROR", "NXDOMAIN", "NOERROR"])
        log = r.queries(name=name, since=t0)
        self.assertEqual([(q["type"], q["mode"]) for q in log],
                         [("A", "empty"), ("AAAA", "answer"), ("A", "nxdomain"), ("A", "answer")])
        self.assertEqual({q["name"] for q in log}, {name + "."})
        self.assertEqual({q["transport"] for q in log}, {"udp"})
        # a script for both types: step k for A and for AAAA in round k
        r.set_mode(name, "servfail", script=["nxdomain", "empty"], script_qtype=("A", "AAAA"))
        got = [(t, r.query(name, t)["rcode"]) for t in ("A", "AAAA", "A", "AAAA", "A", "AAAA")]
        self.assertEqual(got, [("A", "NXDOMAIN"), ("AAAA", "NXDOMAIN"), ("A", "NOERROR"),
                               ("AAAA", "NOERROR"), ("A", "SERVFAIL"), ("AAAA", "SERVFAIL")])

    def test_responder_large_answer_sets_tc_over_udp_and_answers_fully_over_tcp(self):
        r = self.responder
        r.reset()
        r.set_name(BIG, a=big_addresses(), ttl=30)
        t0 = time.time()
        udp = r.query(BIG)
        self.assertTrue(udp["tc"], udp)
        self.assertLess(len(udp["answers"]), BIG_COUNT)
        self.assertLessEqual(udp["size"], 512)
        edns = r.query(BIG, edns=1232)
        self.assertTrue(edns["tc"] and edns["size"] <= 1232, edns)
        full = r.query(BIG, tcp_fallback=True)
        self.assertEqual((full["transport"], full["tc"]), ("tcp", False), full)
        self.assertEqual(simdns.addresses(full), sorted(big_addresses()))
        log = r.queries(name=BIG, since=t0)
        self.assertEqual([(q["transport"], q["tc"]) for q in log],
                         [("udp", True), ("udp", True), ("udp", True), ("tcp", False)])
        self.assertEqual(log[-1]["answers"], BIG_COUNT)
        self.assertEqual(log[-2]["id"], log[-1]["id"], "the TCP retry is the same query")


# =====================================================================================
# spindle following DNS
# =====================================================================================

class _Logs:
    """The backends' JSON logs read incrementally and indexed by run: the class's servers
    log every call of every test, so re-reading whole files on each poll would not scale."""

    def __init__(self, paths):
        self.paths = dict(paths)  # backend -> log path
        self._pos = {name: 0 for name in self.paths}
        self._by_run = {name: collections.defaultdict(list) for name in self.paths}

    def _read(self, name):
        try:
            with open(self.paths[name], "rb") as f:
                f.seek(self._pos[name])
                data = f.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1
        for line in data[:end].splitlines():
            e = json.loads(line)
            run = (e.get("id") or "").split("-", 1)[0]
            self._by_run[name][run].append(e)
        self._pos[name] += end

    def events(self, name, run, ev=None, *, method=None, since=None):
        self._read(name)
        return [e for e in self._by_run[name].get(run, ())
                if (ev is None or e["ev"] == ev) and (method is None or e["method"] == method)
                and (since is None or e["t"] >= since)]

    def served(self, run, method="Unary", since=None):
        """{backend: calls of run it started (since `since`)}."""
        return {name: len(self.events(name, run, "start", method=method, since=since))
                for name in self.paths}

    def by_id(self, name, run, call_id):
        return {e["ev"]: e for e in self.events(name, run) if e.get("id") == call_id}


class DnsTest(SimTestCase):
    """One node: client Pod 198.18.1.2, backend Pods b1-b5 (198.18.1.3-7) each running
    server.py on [::]:50051; Service echo at VIP4/VIP6:50051 and Service echo-new at
    NEW_VIP4/NEW_VIP6:50051, both DNAT'd by the node to b1-b3 (the ClusterIP path, for
    pass-through); dnsmasq on 198.18.0.1:53 (TTL 1 s) with echo-pods = b1-b3 and
    echo = VIP4/VIP6; the responder on 198.18.0.1:5353 with echo-pods = b1-b3 (TTL 1 s).
    Each test starts its own spindle, and setUp puts DNS and kube-proxy back as they were.

    Assumed beyond the issue's text: a failed lookup is retried within refresh.max (the
    fault tests use max 2 s, so that every fault phase sees a retry)."""

    needs_spindle = True

    @classmethod
    def build(cls, stack):
        why = simdns.available()
        if why:
            cls._skip_reason = why
            return
        if grpcio_missing():
            cls._skip_reason = "python3-grpcio is not installed (make deps)"
            return
        cls.node = stack.enter_context(sim.Node())
        cls.client = cls.node.add_pod("client", n=2)
        cls.pods = {name: cls.node.add_pod(name, n=3 + i) for i, name in enumerate(BACKENDS)}
        first3 = [cls.pods[n] for n in FIRST3]
        cls.echo = cls.node.add_service("echo", vip4=VIP4, vip6=VIP6, ports=[PORT],
                                        backends=first3)
        cls.echo_new = cls.node.add_service("echo-new", vip4=NEW_VIP4, vip6=NEW_VIP6,
                                            ports=[PORT], backends=first3)
        # the five servers start side by side (importing grpcio takes a while each)
        cls.servers, paths = {}, {}
        for name, pod in cls.pods.items():
            paths[name] = os.path.join(cls.node.logdir, f"grpc-{name}-{PORT}.jsonl")
            cls.servers[name] = pod.spawn([sim.PYTHON, peers.SERVER, "--name", name, "--port",
                                           str(PORT), "--log", paths[name]], name=f"grpc-{name}")
        for proc in cls.servers.values():
            proc.wait_for_line(r"^grpc_server: listening", 20, stream="stdout")
        cls.logs = _Logs(paths)
        cls.dnsmasq = simdns.Dnsmasq(cls.node, ttl=TTL, records=cls.records(FIRST3))
        stack.callback(cls.dnsmasq.close)
        cls.responder = simdns.Responder(cls.node, port=RESPONDER_PORT)
        stack.callback(cls.responder.close)

    def setUp(self):
        super().setUp()
        for name, proc in self.servers.items():
            self.assertTrue(proc.alive(), f"backend {name} died\n{proc.tail()}")
        if not self.dnsmasq.alive():
            self.dnsmasq.start()
        if self.dnsmasq.records != self.records(FIRST3):
            self.dnsmasq.set_records(self.records(FIRST3))
        self.responder.reset()
        self.responder.set_name(HEADLESS, a=[self.pods[n].ip4 for n in FIRST3], ttl=TTL)
        first3 = [self.pods[n] for n in FIRST3]
        if self.echo.backends != first3:
            self.echo.set_backends(first3)
        self._spindle = None

    # --- set-up helpers --------------------------------------------------------------------

    @classmethod
    def records(cls, pods, cluster_ips=(VIP4, VIP6)):
        return {HEADLESS: [cls.pods[n].ip4 for n in pods], CLUSTER_NAME: list(cluster_ips)}

    def endpoints_of(self, pods, port=PORT):
        return {f"{self.pods[n].ip4}:{port}" for n in pods}

    @staticmethod
    def service(name="echo", *, dns=HEADLESS, intercept=None, port=PORT):
        return {"name": name,
                "intercept": intercept or [f"{VIP4}:{PORT}", f"[{VIP6}]:{PORT}"],
                "endpoints": {"dns": dns},
                "port": port}

    def config(self, server, services=None, *, refresh=("1s", "30s"), empty_confirmations=3):
        cfg = sim.spindle.config(self.node)
        # upstream.source node: the backends seeing the node's address is how these tests tell
        # spindle's path from a direct one (in pod mode both show the Pod's address).
        cfg["upstream"] = {"source": "node"}
        cfg["dns"] = {"servers": [server],
                      "refresh": {"min": refresh[0], "max": refresh[1]},
                      "empty_confirmations": empty_confirmations}
        cfg["services"] = services or [self.service()]
        return cfg

    def responder_config(self, services=None, **kw):
        kw.setdefault("refresh", ("1s", "2s"))
        return self.config(self.responder.server, services, **kw)

    def start_spindle(self, cfg, *, wait_ready=True):
        """spindle for this test only, with a Kubernetes Pod's resolver environment."""
        if spindle_missing():
            self.skipTest(f"{sim.SPINDLE_BIN} not built")
        sp = sim.Spindle(self.node, cfg, wrapper=["env", *K8S_RESOLVER_ENV])
        self.addCleanup(sp.close)
        self._spindle = sp
        sp.start(wait_ready=wait_ready)
        return sp

    def spindle_tail(self):
        return self._spindle.tail(40) if self._spindle else ""

    # --- spindle's endpoints log line ----------------------------------------------------------

    def endpoint_lines(self, sp, service="echo"):
        """[(count, [ip:port, ...])] of every endpoints line spindle logged for service. A
        long list may be cut short ("... and 284 more"): then fewer are listed than counted."""
        out = []
        for line in sp.stderr_lines():
            m = ENDPOINTS_LINE.search(line)
            if m and m["name"] == service:
                listed = [w for w in m["list"].split() if ":" in w]
                out.append((int(m["n"]), listed))
        return out

    def wait_endpoints(self, sp, service="echo", *, addrs=None, count=None, timeout=10.0):
        """Waits until spindle's latest endpoints line for service counts len(addrs) and lists
        exactly addrs (a set of "ip:port"; a shortened list: only some of them), or counts
        `count`. Returns (count, [ip:port, ...])."""
        def matches(n, listed):
            if addrs is not None:
                if n != len(addrs) or not set(listed) <= set(addrs):
                    return False
                return len(listed) == n or 0 < len(listed) < n
            return n == count and (len(listed) == n or 0 < len(listed) < n)

        def current():
            lines = self.endpoint_lines(sp, service)
            return lines[-1] if lines and matches(*lines[-1]) else None
        want = sorted(addrs) if addrs is not None else f"{count} endpoints"
        return sp.proc.wait_for(current, timeout,
                                what=f"'service {service}: N endpoints: ...' listing {want}")

    # --- load and what it saw ------------------------------------------------------------------

    def start_driver(self, *, unary=4, unary_sleep_ms=5, streams=0, messages=6, interval_ms=500,
                     seconds=60, timeout=5, target=TARGET4):
        """This file's load driver in the client Pod: ONE channel, `unary` threads of unary
        calls and `streams` threads of server streams, until stop_driver() or `seconds`."""
        run = peers.new_run("dn")
        proc = self.client.spawn(
            [sim.PYTHON, os.path.abspath(__file__), "load-driver", target, "--run", run,
             "--seconds", seconds, "--unary", unary, "--unary-sleep-ms", unary_sleep_ms,
             "--streams", streams, "--messages", messages, "--interval-ms", interval_ms,
             "--timeout", timeout], name="load-driver")
        self.addCleanup(proc.kill)
        proc.wait_for_line(r"^load-driver: running", 20)
        return proc, run

    def stop_driver(self, proc, timeout=30):
        """SIGTERM: no new calls; the calls in flight finish; returns the driver's calls,
        each [id, t_start, t_end, code, pod, kind, messages] (client.py's five first)."""
        proc.signal(signal.SIGTERM)
        return peers.result(proc, timeout)["calls"]

    def served(self, run, method="Unary", since=None):
        return self.logs.served(run, method, since)

    def wait_served(self, run, n, timeout=10.0, method="Unary", since=None, pods=None):
        def enough():
            served = self.served(run, method, since)
            return sum(v for k, v in served.items() if pods is None or k in pods) >= n
        return sim.wait_until(enough, timeout, interval=0.05,
                              what=f"{n} calls of run {run} at {pods or 'the backends'}",
                              details=lambda: f"served {self.served(run, method, since)}\n"
                                              f"{self.spindle_tail()}")

    @staticmethod
    def shares(calls):
        ok = [c for c in calls if c[3] == "OK"]
        counts = collections.Counter(c[4] for c in ok)
        return {pod: counts[pod] / len(ok) for pod in counts} if ok else {}

    def summary(self, calls, t_ref, what):
        failed = [c for c in calls if c[3] != "OK"]
        return (f"{len(calls)} calls, {len(failed)} failed "
                f"{dict(collections.Counter(c[3] for c in failed))}; first failures "
                f"{[(c[0], round(c[1] - t_ref, 3), c[3], c[4]) for c in failed[:5]]} "
                f"(s from {what})\n{self.spindle_tail()}")

    def assertNoFailedCalls(self, calls, t_ref, what):
        failed = [c for c in calls if c[3] != "OK"]
        self.assertEqual(len(failed), 0, "calls failed: " + self.summary(calls, t_ref, what))

    def assertEachServes(self, calls, pods, what, minimum=SHARE_MIN, min_calls=100):
        ok = [c for c in calls if c[3] == "OK"]
        self.assertGreaterEqual(len(ok), min_calls, f"{what}: only {len(ok)} calls to judge")
        shares = self.shares(ok)
        for pod in pods:
            self.assertGreaterEqual(shares.get(pod, 0.0), minimum,
                                    f"{what}: {pod} served {shares.get(pod, 0.0):.1%} of "
                                    f"{len(ok)} calls, expected >= {minimum:.0%}; shares "
                                    f"{ {k: round(v, 3) for k, v in shares.items()} }\n"
                                    f"{self.spindle_tail()}")

    def seen_from(self, run):
        """The client addresses the backends saw for this run's calls."""
        return {norm_ip(peers.peer_ip(e["peer"])) for name in BACKENDS
                for e in self.logs.events(name, run, "start")}

    # === scaling (dnsmasq, TTL 1 s) =======================================================

    def test_scale_up_3_to_5_new_pods_take_their_share_within_ttl_plus_2s(self):
        sp = self.start_spindle(self.config(self.dnsmasq.server))
        self.wait_endpoints(sp, addrs=self.endpoints_of(FIRST3))
        # client.py: unary calls from 8 threads over ONE channel, 5 ms each at the Pod
        proc, run = peers.spawn_client(self.client, TARGET4, "during-kill", seconds=7,
                                       concurrency=8, sleep_ms=5, timeout=5)
        self.addCleanup(proc.kill)
        self.wait_served(run, 100)
        t_change = self.dnsmasq.set_records(self.records(BACKENDS))
        calls = peers.result(proc, 40)["calls"]
        self.assertNoFailedCalls(calls, t_change, "the scale-up")
        self.assertFalse([c for c in calls if c[1] < t_change and c[4] in ("b4", "b5")],
                         "b4/b5 served calls before DNS listed them")
        settled = [c for c in calls if c[1] >= t_change + SETTLE]
        self.assertEachServes(settled, ("b4", "b5"),
                              f"calls started {SETTLE:g}s or more after the scale-up")
        self.assertEqual(set(self.shares(settled)), set(BACKENDS),
                         "after the scale-up the calls do not spread over the five Pods")
        self.wait_endpoints(sp, addrs=self.endpoints_of(BACKENDS), timeout=1)

    def test_scale_down_5_to_2_open_streams_finish_and_no_call_fails(self):
        self.dnsmasq.set_records(self.records(BACKENDS))
        sp = self.start_spindle(self.config(self.dnsmasq.server))
        self.wait_endpoints(sp, addrs=self.endpoints_of(BACKENDS))
        # ten server streams back to back (6 messages 500 ms apart: 2.5 s each) and two
        # threads of unary calls, all over ONE channel
        proc, run = self.start_driver(unary=2, unary_sleep_ms=20, streams=10, messages=6,
                                      interval_ms=500, timeout=20)
        sim.wait_until(lambda: all(self.served(run, "ServerStream").values()), 10,
                       what="a stream open on each of the five Pods",
                       details=lambda: f"{self.served(run, 'ServerStream')}\n{self.spindle_tail()}")
        t_change = self.dnsmasq.set_records(self.records(("b1", "b2")))
        gone = {"b3", "b4", "b5"}
        # new streams and calls after the change has settled, long enough to judge
        # The backends count calls as they start; the driver reports them when they end: wait
        # for a few more than the 10 judged below, so the last ones have finished.
        self.wait_served(run, 16, timeout=SETTLE + 6, method=None, since=t_change + SETTLE)
        calls = self.stop_driver(proc)
        failed = [c for c in calls if c[3] != "OK"]
        self.assertEqual(failed, [], f"calls failed across the scale-down: "
                                     f"{self.summary(calls, t_change, 'the scale-down')}")
        open_on_gone = [c for c in calls if c[5] == "stream" and c[4] in gone
                        and c[1] < t_change < c[2]]
        self.assertGreaterEqual(len(open_on_gone), 2,
                                f"too few streams were open on b3-b5 at the scale-down to judge: "
                                f"{open_on_gone}")
        for c in open_on_gone:
            self.assertEqual(c[6], 6, f"stream {c[0]} on {c[4]} lost messages: {c}")
            events = self.logs.by_id(c[4], run, c[0])
            self.assertIn("end", events, f"{c[4]} did not finish stream {c[0]}: {events}")
            self.assertNotIn("cancel", events, f"stream {c[0]} on {c[4]} was cut off: {events}")
        late = [c for c in calls if c[1] >= t_change + SETTLE]
        self.assertGreaterEqual(len(late), 10, f"few calls after the scale-down settled: {len(late)}")
        self.assertFalse([c for c in late if c[4] in gone],
                         f"b3-b5 took new calls {SETTLE:g}s after DNS dropped them: "
                         f"{[c[:5] for c in late if c[4] in gone][:5]}")
        # Both b1 and b2 need not take late calls: least_request sends them to whichever has
        # fewer streams open, which may be the same one every time.
        self.assertLessEqual({c[4] for c in late}, {"b1", "b2"})
        self.wait_endpoints(sp, addrs=self.endpoints_of(("b1", "b2")), timeout=1)

    def test_intercept_name_follows_the_cluster_ip_to_a_new_vip(self):
        svc = self.service(intercept=[f"{CLUSTER_NAME}:{PORT}"])
        sp = self.start_spindle(self.config(self.dnsmasq.server, [svc]))
        self.wait_endpoints(sp, addrs=self.endpoints_of(FIRST3))
        node_addrs = {self.node.addr4, self.node.addr6}
        tried = []

        def seen(vip):
            """Who the backends saw calling for 4 calls to vip (None: the calls failed)."""
            res = peers.run_client(self.client, peers.target(vip, PORT), "unary", count=4,
                                   timeout=5)
            tried.append((vip, res["ok"], res["failures"][:1]))
            return self.seen_from(res["run"]) if res["ok"] else None

        def through_spindle(vip):
            s = seen(vip)
            return s is not None and s <= node_addrs

        def direct(vip, client_ip=self.client.ip4):
            return seen(vip) == {client_ip}

        def details():
            return f"tried: {tried[-6:]}\n{self.spindle_tail()}"

        sim.wait_until(lambda: through_spindle(VIP4), 10, interval=0.2, details=details,
                       what=f"connects to {VIP4} (the name's ClusterIP) to go through spindle")
        self.assertTrue(direct(NEW_VIP4), f"{NEW_VIP4} is redirected before DNS names it")
        t_change = self.dnsmasq.set_records(self.records(FIRST3, (NEW_VIP4, NEW_VIP6)))
        sim.wait_until(lambda: through_spindle(NEW_VIP4), SETTLE + 2, interval=0.2,
                       details=details,
                       what=f"connects to the new ClusterIP {NEW_VIP4} to go through spindle")
        measure(f"dns_intercept_moved_to_redirected_s={time.time() - t_change:.2f}")
        with self.subTest(vip=NEW_VIP6):
            self.assertTrue(through_spindle(NEW_VIP6),
                            f"the name's new AAAA {NEW_VIP6} is not redirected; {details()}")
        sim.wait_until(lambda: direct(VIP4), 3, interval=0.2, details=details,
                       what=f"the old ClusterIP {VIP4} to be left alone (no longer redirected)")
        with self.subTest(vip=VIP6):
            self.assertTrue(direct(VIP6, self.client.ip6), f"the old {VIP6} is still redirected")

    # === DNS failing: the last good endpoints stay ========================================

    def test_dns_server_down_30s_keeps_endpoints_and_no_call_fails(self):
        # The 30 s, paid by this test only: with TTL 1 s that is some thirty failed
        # lookups in a row, well past any count or backoff step a shorter outage would reach.
        sp = self.start_spindle(self.config(self.dnsmasq.server, refresh=("1s", "5s")))
        self.wait_endpoints(sp, addrs=self.endpoints_of(FIRST3))
        proc, run = self.start_driver(unary=2, unary_sleep_ms=20)
        self.wait_served(run, 30)
        lines_before = len(self.endpoint_lines(sp))
        t_down = time.time()
        self.dnsmasq.stop()
        sim.hold(OUTAGE_S, sp.proc, proc, interval=0.1)
        changed = self.endpoint_lines(sp)[lines_before:]
        # back, with a fourth Pod: spindle must still be resolving after the outage
        self.dnsmasq.set_records(self.records(FIRST3 + ("b4",)))
        self.dnsmasq.start()
        t_up = time.time()
        self.wait_endpoints(sp, addrs=self.endpoints_of(FIRST3 + ("b4",)), timeout=RECOVERY_S)
        t_back = time.time()
        self.wait_served(run, 10, timeout=5, since=t_back, pods={"b4"})
        calls = self.stop_driver(proc)
        self.assertEqual(changed, [], "spindle changed the endpoints while DNS was down")
        self.assertNoFailedCalls(calls, t_down, "the DNS server stopped")
        during = [c for c in calls if t_down + 5 <= c[1] < t_up]
        self.assertEachServes(during, FIRST3, "calls during the outage", min_calls=200)
        measure(f"dns_outage_recovery_s={t_back - t_up:.2f} (server back -> new endpoints)")

    def test_servfail_refused_silence_and_broken_tcp_keep_endpoints(self):
        sp = self.start_spindle(self.responder_config())
        self.wait_endpoints(sp, addrs=self.endpoints_of(FIRST3))
        proc, run = self.start_driver(unary=4, unary_sleep_ms=10)
        self.wait_served(run, 50)
        lines_before = len(self.endpoint_lines(sp))
        phases = (("servfail", 3.0), ("refused", 3.0), ("drop", 5.0), ("broken", 3.0))
        windows = []
        for mode, seconds in phases:
            t0 = self.responder.set_mode(HEADLESS, mode)
            sim.hold(seconds, sp.proc, proc, interval=0.1)
            windows.append((mode, t0, time.time()))
        changed = self.endpoint_lines(sp)[lines_before:]
        calls = self.stop_driver(proc)
        self.responder.set_name(HEADLESS, a=[self.pods[n].ip4 for n in FIRST3 + ("b4",)], ttl=TTL)
        self.assertEqual(changed, [], "spindle changed the endpoints on failed lookups")
        self.assertNoFailedCalls(calls, windows[0][1], "the first fault")
        for mode, t0, t1 in windows:
            with self.subTest(fault=mode):
                asked = self.responder.queries(name=HEADLESS, since=t0, until=t1)
                self.assertTrue([q for q in asked if q["mode"] == mode],
                                f"spindle did not query {HEADLESS} during the {mode} phase "
                                f"(retries stopped?): {[(q['type'], q['mode']) for q in asked]}")
                inside = [c for c in calls if t0 + 1.0 <= c[1] < t1]
                self.assertEachServes(inside, FIRST3, f"calls during {mode}", min_calls=50)
        # c-ares' own timeout policy, seen in the silent phase: a query (one DNS id) is sent
        # at most twice (2 tries), the retry 1 s after the first (1 s timeout)
        _, t0, t1 = windows[2]
        by_id = collections.defaultdict(list)
        for q in self.responder.queries(name=HEADLESS, since=t0, until=t1):
            if q["mode"] == "drop":
                by_id[(q["type"], q["id"])].append(round(q["t"] - t0, 3))
        self.assertTrue(by_id, "no query met the silence")
        self.assertLessEqual(max(len(ts) for ts in by_id.values()), 2,
                             f"a query was sent more than twice (tries > 2): {dict(by_id)}")
        retried = [ts for ts in by_id.values() if len(ts) == 2]
        self.assertTrue(retried, f"no query was retried (tries < 2?): {dict(by_id)}")
        measure(f"dns_timeout_retry_gaps_s={sorted(round(ts[1] - ts[0], 3) for ts in retried)}")
        for ts in retried:
            self.assertTrue(0.8 <= ts[1] - ts[0] <= 1.6,
                            f"retry {ts[1] - ts[0]:.2f}s after the first try, not ~1 s: {dict(by_id)}")
        # lookups succeed again, and the fourth Pod arrives
        self.wait_endpoints(sp, addrs=self.endpoints_of(FIRST3 + ("b4",)), timeout=RECOVERY_S)

    # === empty answers ====================================================================

    def test_one_empty_answer_keeps_the_endpoints(self):
        sp = self.start_spindle(self.responder_config(empty_confirmations=3))
        self.wait_endpoints(sp, addrs=self.endpoints_of(FIRST3))
        proc, run = self.start_driver(unary=4, unary_sleep_ms=5)
        self.wait_served(run, 50)
        lines_before = len(self.endpoint_lines(sp))
        t0 = self.responder.set_mode(HEADLESS, "answer", script=["empty"])
        asked = self.responder.wait_queries(3, 10, name=HEADLESS, qtype="A", since=t0)
        self.assertEqual([q["mode"] for q in asked[:3]], ["empty", "answer", "answer"])
        t_empty = asked[0]["t"]
        sim.hold(0.5, sp.proc, proc, interval=0.1)
        calls = self.stop_driver(proc)
        self.assertNoFailedCalls(calls, t_empty, "the empty answer")
        self.assertEachServes([c for c in calls if c[1] >= t_empty], FIRST3,
                              "calls after one empty answer", min_calls=100)
        self.assertEqual(self.endpoint_lines(sp)[lines_before:], [],
                         "one empty answer changed the endpoints")

    def test_three_empty_answers_drop_the_endpoints(self):
        sp = self.start_spindle(self.responder_config(empty_confirmations=3))
        self.wait_endpoints(sp, addrs=self.endpoints_of(FIRST3))
        proc, run = self.start_driver(unary=2, unary_sleep_ms=10, timeout=3)
        self.wait_served(run, 30)
        # The Service is scaled to zero: DNS has nothing, and kube-proxy no backend either.
        # The Pods still run (terminating), so a call reaches them only if spindle still
        # routes to them. NXDOMAIN and empty NOERROR both count (for A and AAAA alike, one
        # step per round). After the third, the server falls silent: a failure, which keeps
        # whatever the three answers left, so a spindle that waits for a fourth empty answer
        # keeps its endpoints and fails this test.
        self.addCleanup(self.echo.set_backends, [self.pods[n] for n in FIRST3])
        self.echo.set_backends([])
        t0 = self.responder.set_mode(HEADLESS, "drop", script=["nxdomain", "empty", "nxdomain"],
                                     script_qtype=("A", "AAAA"))
        asked = self.responder.wait_queries(3, 10, name=HEADLESS, qtype="A", since=t0)
        self.assertEqual([q["mode"] for q in asked[:3]], ["nxdomain", "empty", "nxdomain"])
        t_first, t_third = asked[0]["t"], asked[2]["t"]
        self.wait_endpoints(sp, count=0, timeout=3)
        sim.hold(2.5, sp.proc, proc, interval=0.1)
        calls = self.stop_driver(proc)
        early = [c for c in calls if c[1] < t_third - 0.05]
        self.assertNoFailedCalls(early, t_first, "the first empty answer")
        self.assertEachServes([c for c in early if c[1] >= t_first], FIRST3,
                              "calls between the first and the third empty answer", min_calls=20)
        late = [c for c in calls if c[1] >= t_third + 1.0]
        self.assertGreaterEqual(len(late), 5, f"few calls after the third empty answer: {len(late)}")
        self.assertEqual([c for c in late if c[3] == "OK"][:5], [],
                         "calls still answered after the endpoints were dropped")
        reached = {name: n for name, n in self.served(run, since=t_third + 1.0).items() if n}
        self.assertEqual(reached, {}, "calls reached the dropped Pods")
        measure(f"dns_dropped_endpoints_client_sees={dict(collections.Counter(c[3] for c in late))}")

    # === big answers, never resolved ======================================================

    def test_300_record_answer_comes_over_tcp_and_gives_300_endpoints(self):
        self.responder.set_name(BIG, a=big_addresses(), ttl=30)
        big = self.service("big", dns=BIG, intercept=["198.19.0.30:50051"])
        t0 = time.time()
        sp = self.start_spindle(self.responder_config([big]))
        _, listed = self.wait_endpoints(sp, "big", count=BIG_COUNT)
        self.assertLessEqual(set(listed), {f"{a}:{PORT}" for a in big_addresses()})
        asked = self.responder.queries(name=BIG, qtype="A", since=t0)
        self.assertTrue([q for q in asked if q["transport"] == "udp" and q["tc"]], asked[:4])
        self.assertTrue([q for q in asked if q["transport"] == "tcp" and q["answers"] == BIG_COUNT],
                        f"no TCP query got the whole answer: {asked[:4]}")

    def test_service_that_never_resolved_passes_through_to_the_cluster_ip(self):
        self.responder.set_mode(HEADLESS, "servfail")
        t0 = time.time()
        sp = self.start_spindle(self.responder_config(), wait_ready=False)
        # spindle asks, so its loop runs and its programs are attached
        self.responder.wait_queries(2, 10, name=HEADLESS, since=t0)
        res = peers.run_client(self.client, TARGET4, "unary", count=50, timeout=5)
        self.assertTrue(res["ok"], f"calls to a service without endpoints yet failed: {res}\n"
                                   f"{sp.tail()}")
        self.assertEqual(len(res["pods"]), 1,
                         f"one channel through an L4 pass-through stays on one Pod: {res['pods']}")
        seen = self.seen_from(res["run"])
        self.assertLessEqual(seen, {self.node.addr4, self.node.addr6},
                             f"the connection did not go through spindle (backends saw {seen})")
        self.responder.set_mode(HEADLESS, "answer")
        self.wait_endpoints(sp, addrs=self.endpoints_of(FIRST3), timeout=RECOVERY_S)
        res = peers.run_client(self.client, TARGET4, "unary", count=300, concurrency=4,
                               sleep_ms=2, timeout=5)
        self.assertTrue(res["ok"], res)
        for name in FIRST3:
            self.assertGreaterEqual(res["pods"].get(name, 0), 300 * SHARE_MIN,
                                    f"once resolved, calls do not spread: {res['pods']}")

    # === what and how often spindle asks ==================================================

    REFRESH_WINDOW = 18.0

    def test_refresh_follows_the_ttl_clamped_and_names_are_fqdn(self):
        r = self.responder
        pods3 = [self.pods[n].ip4 for n in FIRST3]
        r.set_name(HEADLESS, a=pods3, ttl=5)
        r.set_name(TTL0_NAME, a=pods3[:1], ttl=0)       # below refresh.min
        r.set_name(HUGE_NAME, a=pods3[:1], ttl=3600)    # above refresh.max
        services = [self.service(),
                    self.service("ttl0", dns=TTL0_NAME, intercept=["198.19.0.31:50051"]),
                    self.service("ttlhuge", dns=HUGE_NAME, intercept=["198.19.0.32:50051"])]
        t_start = time.time()
        cfg = self.config(r.server, services, refresh=("2s", "8s"))
        cfg["admin"] = {"listen": f"{self.node.addr4}:{ADMIN_PORT}"}
        sp = self.start_spindle(cfg)
        for name in ("echo", "ttl0", "ttlhuge"):
            self.wait_endpoints(sp, name, count=3 if name == "echo" else 1)
        sim.hold(self.REFRESH_WINDOW, sp.proc, interval=0.1)
        t1 = time.time()

        def intervals(name, qtype="A"):
            ts = [q["t"] for q in r.queries(name=name, qtype=qtype, since=t_start, until=t1)]
            return [round(b - a, 3) for a, b in zip(ts, ts[1:])]
        slack = 0.5  # timers and round trips
        iv = {"A": intervals(HEADLESS), "AAAA": intervals(HEADLESS, "AAAA")}
        rate = {k: 60.0 / statistics.mean(v) if v else 0.0 for k, v in iv.items()}
        measure(f"dns_queries_per_minute service=echo ttl=5s: A={rate['A']:.1f} "
                f"AAAA={rate['AAAA']:.1f} all={rate['A'] + rate['AAAA']:.1f} "
                f"(A every {statistics.mean(iv['A']) if iv['A'] else 0:.2f}s, "
                f"over {t1 - t_start:.1f}s)")
        # TTL 5 s: asked again within the TTL, not sooner than refresh.min
        self.assertGreaterEqual(len(iv["A"]), 3, f"{HEADLESS} (TTL 5 s) A intervals: {iv['A']}")
        self.assertLessEqual(max(iv["A"]), 5 + slack, f"{HEADLESS} (TTL 5 s) was not asked "
                                                      f"again within its TTL: {iv['A']}")
        self.assertGreaterEqual(min(iv["A"]), 2 - slack, f"{HEADLESS}: {iv['A']}")
        # TTL 0 is clamped up to refresh.min (2 s), TTL 3600 down to refresh.max (8 s)
        iv0 = intervals(TTL0_NAME)
        self.assertGreaterEqual(len(iv0), 3, f"TTL 0 was not asked again: {iv0}")
        self.assertGreaterEqual(min(iv0), 2 - slack, f"TTL 0: refresh.min not applied: {iv0}")
        self.assertLessEqual(max(iv0), 2 + slack, f"TTL 0: asked later than refresh.min: {iv0}")
        ivh = intervals(HUGE_NAME)
        self.assertGreaterEqual(len(ivh), 1, f"TTL 3600 was not asked again in {t1 - t_start:.0f}s: "
                                             "refresh.max not applied")
        self.assertLessEqual(max(ivh), 8 + slack, f"TTL 3600: refresh.max not applied: {ivh}")
        self.assertGreaterEqual(min(ivh), 2 - slack, f"TTL 3600: {ivh}")
        # the metrics say how long each answer holds, and that none is older than that
        text = simprom.http_get(self.node, self.node.addr4, ADMIN_PORT, "/metrics").text
        for name, holds in (("echo", 5), ("ttl0", 2), ("ttlhuge", 8)):
            self.assertEqual(metric(text, "spindle_dns_ttl_seconds", service=name), holds, name)
            self.assertLessEqual(metric(text, "spindle_dns_staleness_seconds", service=name),
                                 holds + 1, f"{name}: refreshed answers are never past their TTL")
        # every name goes out as the FQDN: no search-list suffix was ever tried
        asked = {q["name"] for q in r.queries(since=t_start)}
        self.assertLessEqual(asked, {HEADLESS + ".", TTL0_NAME + ".", HUGE_NAME + "."},
                             f"names spindle asked for: {sorted(asked)}")

    # === measurements (printed as MEASURE lines) ==========================================

    TRIALS = 10

    def test_measure_dns_change_to_first_call_on_a_new_pod(self):
        sp = self.start_spindle(self.config(self.dnsmasq.server))
        self.wait_endpoints(sp, addrs=self.endpoints_of(FIRST3))
        proc, run = self.start_driver(unary=4, unary_sleep_ms=5)
        self.wait_served(run, 50)
        delays = []
        for i in range(self.TRIALS):
            new = "b4" if i % 2 == 0 else "b5"
            pods = FIRST3 + (new,)
            t_change = self.dnsmasq.set_records(self.records(pods))
            first = sim.wait_until(
                lambda t=t_change, new=new: min((e["t"] for e in self.logs.events(
                    new, run, "start", since=t)), default=None),
                SETTLE + 2, interval=0.01, details=self.spindle_tail,
                what=f"trial {i}: a call on {new} after the DNS change")
            delays.append(first - t_change)
            # the other extra Pod is out of spindle's set before the next trial adds it back
            self.wait_endpoints(sp, addrs=self.endpoints_of(pods), timeout=3)
        calls = self.stop_driver(proc)
        ms = sorted(round(d * 1000) for d in delays)
        failed = sum(1 for c in calls if c[3] != "OK")
        measure(f"dns_change_to_first_call_ms ttl={TTL}s median={statistics.median(ms):.0f} "
                f"min={ms[0]} max={ms[-1]} trials={ms} (calls {len(calls)}, failed {failed})")
        self.assertLess(statistics.median(delays), SETTLE)


# =====================================================================================
# Run as a script inside the client Pod: the load driver
# =====================================================================================

def load_driver(argv):
    """load-driver TARGET --run R [--seconds S] [--unary U --unary-sleep-ms MS]
    [--streams N --messages M --interval-ms I] [--timeout T]

    Over ONE channel: U threads of unary calls (the Pod sleeps MS each) and N threads each
    opening server streams back to back (M messages, I ms apart), until SIGTERM or S seconds;
    then the calls in flight finish. Prints "load-driver: running" on stderr once the signal
    handler is in place, and at the end one JSON object on stdout:
    {"calls": [[id, t_start, t_end, code, pod, kind, messages], ...]} (unix seconds; the
    first five as client.py's during-kill records)."""
    import argparse
    import itertools
    import threading

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    import grpc
    import echo_service as es

    ap = argparse.ArgumentParser()
    ap.add_argument("target")
    ap.add_argument("--run", required=True)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--unary", type=int, default=4)
    ap.add_argument("--unary-sleep-ms", type=int, default=5)
    ap.add_argument("--streams", type=int, default=0)
    ap.add_argument("--messages", type=int, default=6)
    ap.add_argument("--interval-ms", type=int, default=500)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--timeout", type=float, default=5.0)
    args = ap.parse_args(argv)
    seconds = min(args.seconds, 120.0)
    channel = grpc.insecure_channel(args.target,
                                    options=es.CHANNEL_OPTIONS + [("grpc.enable_retries", 0)])
    server_stream = channel.unary_stream(es.SERVER_STREAM)
    unary = channel.unary_unary(es.UNARY)
    lock = threading.Lock()
    calls = []
    t_end = time.monotonic() + seconds

    def going():
        return not stop.is_set() and time.monotonic() < t_end

    def code_of(err):
        code = err.code() if hasattr(err, "code") else None
        return code.name if code is not None else type(err).__name__

    def streams(w):
        for k in range(10_000):
            if not going():
                return
            cid, seed = f"{args.run}-s{w}x{k}", w * 1_000_000 + k * 1000
            t0, pod, got, bad, code = time.time(), None, 0, 0, "OK"
            try:
                call = server_stream(
                    json.dumps({"n": args.messages, "size": args.size, "seed": seed}).encode(),
                    metadata=[("x-call-id", cid), ("x-sleep-ms", str(args.interval_ms))],
                    timeout=args.timeout)
                pod = es.md_get(call.initial_metadata(), "x-pod")
                for i, m in enumerate(itertools.islice(call, args.messages + 1)):
                    got += 1
                    bad += m != es.blob(args.size, seed + i)
                code = call.code().name
            except grpc.RpcError as e:
                code = code_of(e)
            if code == "OK" and (got != args.messages or bad):
                code = "INCOMPLETE"
            with lock:
                calls.append([cid, t0, time.time(), code, pod, "stream", got])

    def unaries(w):
        md = [("x-sleep-ms", str(args.unary_sleep_ms))] if args.unary_sleep_ms else []
        for k in range(1_000_000):
            if not going():
                return
            cid = f"{args.run}-u{w}x{k}"
            t0, pod, code = time.time(), None, "OK"
            request = b"ping %d" % k
            try:
                response, call = unary.with_call(request, metadata=[("x-call-id", cid)] + md,
                                                 timeout=args.timeout)
                pod = es.md_get(call.initial_metadata(), "x-pod")
                if response != request:
                    code = "MISMATCH"
            except grpc.RpcError as e:
                code = code_of(e)
            with lock:
                calls.append([cid, t0, time.time(), code, pod, "unary", 1])
            if code != "OK":
                stop.wait(0.002)  # a call that fails at once does not turn into a busy loop

    threads = [threading.Thread(target=streams, args=(w,), daemon=True)
               for w in range(min(args.streams, 32))]
    threads += [threading.Thread(target=unaries, args=(w,), daemon=True)
                for w in range(min(args.unary, 16))]
    for t in threads:
        t.start()
    print("load-driver: running", file=sys.stderr, flush=True)
    deadline = time.monotonic() + seconds + args.timeout + 10
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic()))
    left = sum(t.is_alive() for t in threads)
    with lock:
        out = sorted(calls, key=lambda c: c[1])
    print(json.dumps({"ok": left == 0 and all(c[3] == "OK" for c in out), "run": args.run,
                      "calls": out, "threads_left": left}), flush=True)
    channel.close()
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "load-driver":
        sys.exit(load_driver(sys.argv[2:]))
    sys.exit("usage: test_dns.py load-driver TARGET ...  (the tests run through run.py)")
