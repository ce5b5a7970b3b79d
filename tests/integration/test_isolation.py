"""Tenant isolation (issue 15, item 6): a Pod that holds server streams open and never grants
HTTP/2 flow-control window cannot slow another Pod's calls, whether spindle's upstream
connections are shared by the node's Pods (`upstream.source: node`) or made per Pod (`pod`).

One node: Pod A 198.18.1.2 (a real gRPC client, tests/grpc/client.py), Pod B 198.18.1.3
(tests/grpc/stall_client.py: python3-h2, 8 connections x 10 ServerStream calls asking for
64 MiB each, reading every frame and never sending a WINDOW_UPDATE), backend Pods b1-b3
(198.18.1.4-6, tests/grpc/server.py with enough handler threads that B's blocked handlers
leave A's calls threads to run on), Service echo at 198.19.0.10:50051.

For each of DIRECT (no spindle: the node's DNAT; proves the harness: B's stall alone does not
slow A at the backends), NODE and POD:

  1. Pod A makes 400 unary calls (4 at a time): the run without Pod B, its p99.
  2. Pod B opens its 80 streams; once all have their response headers, a second passes so
     that every window B's streams can fill is full.
  3. Pod A makes 400 calls again, while B still holds all 80 streams: every call succeeds.
     Then B closes its connections.
  Three rounds of 1-3; the median of the rounds' p99 ratios (with B / alone) is within 2x.
  The machine is shared: a single pair of runs can differ by 2x on noise alone.
  4. Through spindle: each stream of the last round's B, stalled for limits.send_timeout
     (10 s here), is reset with CANCEL both ways: B sees 80 RST_STREAM CANCEL, the backends
     see 80 calls cancelled, spindle_limit_resets_total{reason="send_timeout"} counts 80.

The p99 figures of every round are printed as MEASURE lines.

Run alone: /usr/bin/python3 tests/integration/run.py test_isolation
"""

import json
import math
import os
import sys

import sim
from sim.prometheus import http_get
from support import SimTestCase, grpcio_missing, measure, metric, spindle_missing

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TESTS, "grpc"))
import peers  # noqa: E402  (tests/grpc)

STALL_CLIENT = os.path.join(TESTS, "grpc", "stall_client.py")

PORT = 50051
ADMIN_PORT = 9901
VIP4 = "198.19.0.10"
TARGET = peers.target(VIP4, PORT)
BACKENDS = ("b1", "b2", "b3")  # Pods 198.18.1.4-6

CALLS = 400
CONCURRENCY = 4
CALL_TIMEOUT = 3.0          # s per call of Pod A: a call held behind B's stall fails
STALL_CONNECTIONS = 8
STALL_STREAMS = 10          # per connection: 80 in all
STALL_SIZE = 64 * 1024      # bytes per message asked for ...
STALL_MESSAGES = 1000       # ... so 64 MiB per stream: far beyond any window
SEND_TIMEOUT = 10           # s, limits.send_timeout: longer than steps 2 and 3 take
RESET_WITHIN = SEND_TIMEOUT + 3 + 5  # the timeout, a deadline tick (a quarter), slack
P99_RATIO = 2.0
ROUNDS = 3                  # of (A alone, A with B); the median ratio is judged
SERVER_WORKERS = 160        # handler threads per backend: B may put all 80 on one (direct)


def p99(res):
    """The 99th percentile of the run's call durations, in seconds."""
    durations = sorted(t1 - t0 for _, t0, t1, _, _ in res["calls"])
    return durations[max(0, math.ceil(0.99 * len(durations)) - 1)]


class IsolationTest(SimTestCase):

    @classmethod
    def build(cls, stack):
        if grpcio_missing():
            cls._skip_reason = "python3-grpcio is not installed (make deps)"
            return
        cls.node = stack.enter_context(sim.Node())
        cls.pod_a = cls.node.add_pod("a", n=2)
        cls.pod_b = cls.node.add_pod("b", n=3)
        cls.pods = {name: cls.node.add_pod(name, n=4 + i) for i, name in enumerate(BACKENDS)}
        cls.echo = cls.node.add_service("echo", vip4=VIP4, ports=[PORT],
                                        backends=list(cls.pods.values()))
        cls.servers, cls.logs = {}, {}
        for name, pod in cls.pods.items():
            cls.servers[name], cls.logs[name] = peers.start_server(
                pod, flags={"workers": SERVER_WORKERS}, wait=False)
        for proc in cls.servers.values():
            peers.wait_serving(proc, 20)

    def setUp(self):
        super().setUp()
        for name, proc in self.servers.items():
            self.assertTrue(proc.alive(), f"backend {name} died\n{proc.tail()}")

    # --- pieces ------------------------------------------------------------------------------

    def start_spindle(self, source):
        if spindle_missing():
            if os.environ.get("SPINDLE_REQUIRED") == "1":
                self.fail(f"{sim.SPINDLE_BIN} is missing (make build/bin/spindle)")
            self.skipTest(f"{sim.SPINDLE_BIN} not built")
        cfg = sim.spindle.config(self.node, [self.echo], extra={
            "upstream": {"source": source},
            "limits": {"send_timeout": f"{SEND_TIMEOUT}s"},
            "admin": {"listen": f"{self.node.addr4}:{ADMIN_PORT}"},
        })
        sp = sim.Spindle(self.node, cfg)
        self.addCleanup(sp.close)
        sp.start()
        return sp

    def metrics(self):
        return http_get(self.node, self.node.addr4, ADMIN_PORT, "/metrics").text

    def pod_a_calls(self, what, spindle):
        res = peers.run_client(self.pod_a, TARGET, "unary", count=CALLS, concurrency=CONCURRENCY,
                               record=True, timeout=CALL_TIMEOUT, max_seconds=60, run_timeout=90)
        tail = spindle.tail() if spindle else ""
        self.assertTrue(res.get("ok"), f"Pod A's calls {what} failed: " + json.dumps(
            {k: v for k, v in res.items() if k not in ("calls", "_stderr")}, sort_keys=True)[:3000]
            + "\n" + res.get("_stderr", "")[-800:] + "\n" + tail)
        self.assertEqual(len(res["calls"]), CALLS, f"Pod A {what}: calls missing")
        return res

    def stall_events(self, proc, ev):
        out = []
        for line in proc.stdout_lines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("ev") == ev:
                out.append(entry)
        return out

    def start_stall(self, run):
        proc = self.pod_b.spawn(
            [sim.PYTHON, STALL_CLIENT, TARGET, "--connections", str(STALL_CONNECTIONS),
             "--streams", str(STALL_STREAMS), "--size", str(STALL_SIZE),
             "--messages", str(STALL_MESSAGES), "--hold", "90", "--run", run],
            name="stall-client")
        self.addCleanup(proc.kill)
        return proc

    def stalled_calls_seen(self, run):
        return sum(len(log.starts(run=run, method="ServerStream")) for log in self.logs.values())

    def cancelled_calls_seen(self, run):
        return sum(len(log.events("cancel", run=run, method="ServerStream"))
                   for log in self.logs.values())

    # --- the scenario ------------------------------------------------------------------------

    def one_round(self, label, spindle, procs, keep_stall):
        """Pod A alone, then with Pod B stalling: (p99 alone, p99 with B, B's proc, its run)."""
        alone = self.pod_a_calls("without Pod B", spindle)
        run = peers.new_run("stall")
        want = STALL_CONNECTIONS * STALL_STREAMS
        stall = self.start_stall(run)
        stall.wait_for_line(r'"ev": "holding"', 30, stream="stdout")
        sim.wait_until(lambda: self.stalled_calls_seen(run) == want, 10,
                       what=f"the backends to start Pod B's {want} streams")
        sim.hold(1.0, stall, *procs)
        with_b = self.pod_a_calls("while Pod B stalls", spindle)
        self.assertTrue(stall.alive(), f"Pod B's client ended\n{stall.tail()}")
        # B held every stream for the whole run: nothing of it was reset yet.
        self.assertEqual(self.stall_events(stall, "reset"), [],
                         f"{label}: Pod B's streams were reset during Pod A's run")
        p_alone, p_with = p99(alone), p99(with_b)
        measure(f"isolation {label}", p99_alone_ms=round(p_alone * 1000, 2),
                p99_with_pod_b_ms=round(p_with * 1000, 2), ratio=round(p_with / p_alone, 2),
                elapsed_alone_s=alone["elapsed_s"], elapsed_with_pod_b_s=with_b["elapsed_s"])
        if not keep_stall:
            stall.stop()
        return p_alone, p_with, stall, run

    def scenario(self, source):
        """source: None (direct), "node" or "pod"."""
        label = source or "direct"
        spindle = self.start_spindle(source) if source else None
        procs = [spindle.proc] if spindle else []
        # Warm: channels, upstream connections and the backends' threads exist.
        peers.run_client(self.pod_a, TARGET, "unary", count=40, concurrency=CONCURRENCY)
        want = STALL_CONNECTIONS * STALL_STREAMS
        resets_before = metric(self.metrics(), "spindle_limit_resets_total") if spindle else 0

        # Each round compares runs a few seconds apart; the median of the rounds' ratios
        # keeps one round that the machine's other work slowed from deciding alone.
        ratios, stall, run = [], None, None
        for i in range(ROUNDS):
            p_alone, p_with, stall, run = self.one_round(label, spindle, procs,
                                                         keep_stall=i == ROUNDS - 1)
            ratios.append(p_with / p_alone)
        median = sorted(ratios)[len(ratios) // 2]
        measure(f"isolation {label} median", ratio=round(median, 2))
        self.assertLessEqual(
            median, P99_RATIO,
            f"{label}: Pod A's p99 with Pod B holding {want} streams without granting window, "
            f"over its p99 alone, was {[round(r, 2) for r in ratios]}")

        if spindle is not None:
            # The last B has held its streams since its round began: each is reset once its
            # app took nothing for send_timeout, CANCEL both ways. The earlier Bs closed their
            # connections before that, which reset nothing by a limit.
            stall.wait_for(lambda: len(self.stall_events(stall, "reset")) >= want, RESET_WITHIN,
                           what=f"{want} RST_STREAM on Pod B's streams")
            codes = {e["code"] for e in self.stall_events(stall, "reset")}
            self.assertEqual(codes, {8}, f"{label}: Pod B's streams reset with {codes}, not CANCEL")
            sim.wait_until(lambda: self.cancelled_calls_seen(run) == want, 10,
                           what=f"the backends to see Pod B's {want} calls cancelled")
            resets = metric(self.metrics(), "spindle_limit_resets_total", reason="send_timeout")
            self.assertEqual(resets - resets_before, want)
            self.assertTrue(spindle.proc.alive(), "spindle died\n" + spindle.tail())
        stall.stop()

    def test_1_direct(self):
        """Without spindle (the node's DNAT): Pod B's stall does not slow Pod A."""
        self.scenario(None)

    def test_2_node_source(self):
        """upstream.source node: Pods share spindle's upstream connections."""
        self.scenario("node")

    def test_3_pod_source(self):
        """upstream.source pod: pools per Pod; balancing and the workers are still shared."""
        self.scenario("pod")
