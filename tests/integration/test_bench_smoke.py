"""A short run of `make bench`'s gRPC harness (bench/grpc_bench.py), so that it cannot rot:
one round, one second per run, against every system (direct, spindle on io_uring and on
epoll, HAProxy, nginx, nghttpx), and the pods workload of spindle in both upstream.source modes (node, pod) with
two new Pods. The figures mean nothing at this length; what is checked is that every system
was set up, answered real gRPC calls, and made it into the table, that spindle's balance was
counted at the backends, and that the pod-against-node rows are there, with the upstream
connections each mode's pools must hold. The figures themselves come from `make bench`."""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import sim
from support import SimTestCase

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HARNESS = os.path.join(REPO, "bench", "grpc_bench.py")
SYSTEMS = ("direct", "spindle", "spindle-epoll", "haproxy", "nginx", "nghttpx")
LABELS = ("direct", "spindle", "spindle (epoll)", "HAProxy", "nginx", "nghttpx")
TOOLS = {"h2load": "nghttp2-client", "nghttp": "nghttp2-client", "haproxy": "haproxy",
         "nginx": "nginx", "nghttpx": "nghttp2-proxy"}
RUN_TIMEOUT = 150  # s; the run takes about 60
POD_CLIENTS = 16   # the pods workload's client Pods (bench/grpc_bench.py)


class BenchSmokeTest(SimTestCase):
    needs_spindle = True

    @classmethod
    def build(cls, stack):
        missing = [pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None]
        if missing:
            cls._skip_reason = f"not installed: {' '.join(sorted(set(missing)))} (make deps)"
            return
        # The bench's backend is built by make on demand (make bench does it too).
        subprocess.run(["make", "-s", "build/bin/grpc_backend"], cwd=REPO, check=True,
                       capture_output=True, timeout=300)
        cls.out = stack.enter_context(tempfile.TemporaryDirectory(prefix="spindle-bench-"))
        cls.run_ = subprocess.run(
            [sim.PYTHON, HARNESS, "--rounds", "1", "--seconds", "1",
             "--workloads", "unary_c2,latency,rtt,idle,pods", "--idle-conns", "50",
             "--new-pods", "2", "--out", cls.out],
            capture_output=True, text=True, timeout=RUN_TIMEOUT)

    def setUp(self):
        super().setUp()
        self.assertEqual(self.run_.returncode, 0,
                         f"grpc_bench.py failed:\n{self.run_.stdout[-3000:]}\n"
                         f"{self.run_.stderr[-3000:]}")

    def table(self, section=None):
        """The columns and rows of the first table, or of the first one after the heading
        that starts with `section`."""
        with open(os.path.join(self.out, "latest.md")) as f:
            text = f.read()
        if section is not None:
            text = text[text.index("\n## " + section):]
        head = next(line for line in text.splitlines() if line.startswith("| figure |"))
        text = text[text.index(head):].split("\n\n")[0]
        rows = {}
        for line in text.splitlines():
            m = re.match(r"^\| ([^|]+) \| (.+) \|$", line)
            if m:
                rows[m.group(1).strip()] = [c.strip() for c in m.group(2).split("|")]
        return [c.strip() for c in head.strip("|").split("|")][1:], rows

    def test_every_system_answered_calls(self):
        columns, rows = self.table()
        self.assertEqual(columns, list(LABELS))
        calls = rows["unary 100 B, -c 2 -m 100: calls/s"]
        self.assertEqual(len(calls), len(SYSTEMS))
        for label, value in zip(LABELS, calls):
            self.assertGreater(float(value), 0, f"{label}: no calls/s in the table")
        cpu = rows["unary 100 B, -c 2 -m 100: CPU µs per call"]
        for label, value in zip(LABELS[1:], cpu[1:]):
            self.assertGreater(float(value), 0, f"{label}: no CPU per call in the table")
        for label, value in zip(LABELS, rows[next(k for k in rows if "idle HTTP/2" in k)]):
            self.assertNotEqual(value, "–", f"{label}: no idle-connection memory")
        for label, value in zip(LABELS[1:], rows[next(k for k in rows if "added p99" in k)][1:]):
            self.assertNotEqual(value, "–", f"{label}: no added latency")
        for label, value in zip(LABELS, rows["one call at a time, -c 1 -m 1: p50 µs"]):
            self.assertGreater(float(value), 0, f"{label}: no round trip")
        for label, value in zip(LABELS[1:],
                                rows["one call at a time, -c 1 -m 1: added p50 µs (− direct, "
                                     "per round)"][1:]):
            self.assertRegex(value, r"^[+-]\d+$", f"{label}: no added round trip")

    def test_spindle_balance_counted_at_the_backends(self):
        with open(os.path.join(self.out, "latest.json")) as f:
            results = json.load(f)["results"]
        per_backend = results["spindle"][0]["unary_c2"]["per_backend"]
        self.assertEqual(len(per_backend), 2)
        self.assertTrue(all(n > 0 for n in per_backend),
                        f"spindle sent calls to one backend only: {per_backend}")
        _, rows = self.table()
        share = rows["unary 100 B, -c 2 -m 100: calls per backend, all rounds"][1]
        self.assertRegex(share, r"^\d+\.\d% / \d+\.\d%$")
        self.assertIn("| backends within ±5% of an even share (-c 2) |",
                      open(os.path.join(self.out, "latest.md")).read())

    def test_pod_against_node_rows(self):
        columns, rows = self.table("upstream.source: pod against node")
        self.assertEqual(columns, ["node", "pod", "pod against node"])

        def row(start):
            return rows[next(k for k in rows if k.startswith(start))]
        for start in (f"{POD_CLIENTS} client Pods, -c 1 -m 16 each: calls/s",
                      f"{POD_CLIENTS} client Pods, -c 1 -m 16 each: CPU µs per call",
                      "first call from a new Pod"):
            node, pod, versus = row(start)
            self.assertGreater(float(node), 0, f"{start}: no node figure")
            self.assertGreater(float(pod), 0, f"{start}: no pod figure")
            self.assertNotEqual(versus, "–", f"{start}: no comparison")
        # One worker: node mode shares one connection per backend among the Pods, pod mode
        # has one per (Pod, backend).
        self.assertEqual(row("upstream connections open")[:2], ["2", str(2 * POD_CLIENTS)])
        node, pod, _ = row("memory per pooled upstream connection")
        self.assertEqual(node, "–", "node mode added upstream connections for the calling Pods")
        self.assertGreater(float(pod), 0, "no memory per pooled upstream connection")
        text = open(os.path.join(self.out, "latest.md")).read()
        self.assertRegex(text, r"\nGoal: pod costs at most 5% more CPU per call than node "
                               r"once pools are warm: (met|\*\*not met\*\*): [+-]\d+\.\d%")
        self.assertRegex(text, r"\| upstream\.source pod: CPU per call ≤ 1\.05× node [^|]*\| "
                               r"[\d.]+ µs vs node [\d.]+ µs \| [\d.]+× \| (yes|\*\*no\*\*) \|")


if __name__ == "__main__":
    sys.exit("run with tests/integration/run.py")
