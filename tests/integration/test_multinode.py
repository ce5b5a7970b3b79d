"""Several nodes, each with its own spindle: what a cluster does with cross-node calls.

The cluster (sim.Cluster) is three nodes, 198.18.0.1-3, routed to each other through a fabric
netns, Pods of node K at 198.18.K.N / 2001:2::K:N. Service echo has the same ClusterIP on
every node (each node's own kube-proxy DNAT) and one Pod on each node: b1 on node 1, b2 on
node 2, b3 on node 3, each running tests/grpc/server.py. Each node runs its own spindle,
attached to its own node cgroup, with the three Pods as endpoints: node 1 and node 3 dial
them over IPv4, node 2 over IPv6, so both families cross the fabric.

A spindle redirects only the connects of its own node's Pods. The calls a node's spindle
sends to a Pod on another node arrive there as ordinary inbound connections: that node's
spindle must leave them alone (its Pods' servers see the calling Pod's address), and the
first node's spindle stopping must leave its Pods on the ClusterIP (fail open) while the
other nodes go on balancing.
"""

import os
import re
import sys

import sim
from sim import prometheus as simprom
from support import SimTestCase, grpcio_missing, norm_ip

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "grpc"))
import peers  # noqa: E402  (tests/grpc)

VIP4 = "198.19.0.10"
VIP6 = "2001:2:0:ff::10"
PORT = 50051
TCP_PORT = 7000
ADMIN_PORT = 9901
TARGET4 = peers.target(VIP4, PORT)
TARGET6 = peers.target(VIP6, PORT)

CALLS = 3000
SHARE_TOLERANCE = 0.05   # each of the 3 Pods serves CALLS/3 within +-5%
# least_request (the default) rightly sends more calls to a Pod that answers faster. Three
# Python servers on a shared 2-core machine differ by up to ~0.7 ms of handler overhead per
# call (measured: 5.3 vs 6.0 ms mean for a 5 ms hold, and that Pod took 6% more calls).
# Held 20 ms, the Pods' own equal service time dominates, as in a real service.
HOLD_MS = 20
FAIL_OPEN_RUNS = 8       # channels opened with node 1's spindle stopped


def metric(text, name, **labels):
    """The sum of the series `name` whose labels include `labels`, in Prometheus text."""
    total = 0.0
    rx = re.compile(r"^" + re.escape(name) + r"(\{(.*)\})? (\S+)$")
    for line in text.splitlines():
        m = rx.match(line)
        if not m:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


# =====================================================================================
# The cluster network itself, without spindle
# =====================================================================================

class ClusterNetworkTest(SimTestCase):
    """Three nodes, a tcp_backend Pod on each (198.18.K.3), a client Pod on node 1, Service
    pair to the Pods of nodes 2 and 3. If these fail, the tests below cannot be trusted."""

    @classmethod
    def build(cls, stack):
        cls.cluster = stack.enter_context(sim.Cluster(nodes=3))
        cls.servers, cls.logs = {}, {}
        for k, node in enumerate(cls.cluster.nodes, 1):
            pod = node.add_pod(f"s{k}", n=3)
            cls.servers[k] = pod
            _, cls.logs[k] = sim.start_backend(pod, [TCP_PORT])
        cls.client = cls.cluster.node(1).add_pod("client", n=2)
        cls.pair = cls.cluster.add_service("pair", ports=[TCP_PORT],
                                           backends=[cls.servers[2], cls.servers[3]])

    def test_addresses_follow_node_number(self):
        for k, node in enumerate(self.cluster.nodes, 1):
            self.assertEqual((node.addr4, node.addr6), (f"198.18.0.{k}", f"2001:2::{k}"))
            self.assertEqual((self.servers[k].ip4, self.servers[k].ip6),
                             (f"198.18.{k}.3", f"2001:2::{k}:3"))

    def test_every_pod_reaches_every_pod_with_its_own_address(self):
        # Routed, no NAT: the server sees the caller's own address on every path.
        places = [self.client] + list(self.servers.values())
        for src in places:
            for dst in self.servers.values():
                for ip in (dst.ip4, dst.ip6):
                    with self.subTest(src=src.ip4, dst=ip):
                        res = sim.dial(src, "peer", ip, TCP_PORT, timeout=5)
                        self.assertOk(res)
                        self.assertEqual(norm_ip(res["seen"][0]),
                                         src.ip4 if "." in ip else src.ip6, res)

    def test_nodes_reach_other_nodes_pods_from_their_address(self):
        for k, node in enumerate(self.cluster.nodes, 1):
            dst = self.servers[k % 3 + 1]
            for ip, want in ((dst.ip4, node.addr4), (dst.ip6, node.addr6)):
                res = sim.dial(node, "peer", ip, TCP_PORT, timeout=5)
                self.assertOk(res)
                self.assertEqual(norm_ip(res["seen"][0]), want, res)

    def test_cluster_ip_on_every_node_reaches_pods_of_other_nodes(self):
        self.assertEqual({s.vip4 for s in self.pair.per_node}, {self.pair.vip4})
        # from a Pod of node 1 (neither backend is there), and from node 2 and 3's own netns
        for place in (self.client, self.cluster.node(2), self.cluster.node(3)):
            for vip in (self.pair.vip4, self.pair.vip6):
                with self.subTest(place=repr(place), vip=vip):
                    marks = {k: self.logs[k].count() for k in (2, 3)}
                    for _ in range(16):
                        res = sim.dial(place, "peer", vip, TCP_PORT, timeout=5)
                        self.assertOk(res)
                        self.assertEqual(res["seen"][0], res["local"][0], res)
                    got = {k: self.logs[k].count() - marks[k] for k in (2, 3)}
                    # random per connection: all 16 on one Pod has probability 2 * 2^-16
                    self.assertEqual(sum(got.values()), 16, got)
                    self.assertTrue(all(got.values()), f"DNAT did not spread: {got}")

    def test_close_removes_every_namespace_and_cgroup(self):
        with sim.Cluster(nodes=2) as c:
            names = [c.fabric.name] + [n.netns.name for n in c.nodes]
            server, client = c.node(1).add_pod("s", n=3), c.node(2).add_pod("c", n=2)
            names += [server.netns.name, client.netns.name]
            cgroups = [n.cgroup.path for n in c.nodes]
            backend, _ = sim.start_backend(server, [TCP_PORT])
            self.assertOk(sim.dial(client, "peer", server.ip6, TCP_PORT, timeout=5))
        self.assertFalse(backend.alive(), "the backend outlived its cluster")
        left = set(sim.netns.list_names())
        self.assertFalse([n for n in names if n in left], f"namespaces left: {left}")
        self.assertFalse([p for p in cgroups if os.path.exists(p)], "cgroups left")


# =====================================================================================
# gRPC across nodes, a spindle per node
# =====================================================================================

class MultiNodeGrpcTest(SimTestCase):
    needs_spindle = True

    @classmethod
    def build(cls, stack):
        if grpcio_missing():
            cls._skip_reason = "python3-grpcio is not installed (make deps)"
            return
        cls.cluster = stack.enter_context(sim.Cluster(nodes=3))
        n1, n2, n3 = cls.cluster.nodes
        cls.client1 = n1.add_pod("client", n=2)
        cls.client2 = n2.add_pod("client", n=2)
        cls.pods = {"b1": n1.add_pod("b1", n=3), "b2": n2.add_pod("b2", n=3),
                    "b3": n3.add_pod("b3", n=3)}
        cls.echo = cls.cluster.add_service("echo", vip4=VIP4, vip6=VIP6, ports=[PORT],
                                           backends=list(cls.pods.values()))
        cls.servers, cls.logs = {}, {}
        for name, pod in cls.pods.items():
            cls.servers[name], cls.logs[name] = peers.start_server(pod)
        cls.spindles = {}
        stack.callback(lambda: [sp.close() for sp in cls.spindles.values()])
        for k in (1, 2, 3):
            cls.start_spindle(k)

    @classmethod
    def start_spindle(cls, k):
        node = cls.cluster.node(k)
        ipv6 = k == 2
        endpoints = [f"[{p.ip6}]:{PORT}" if ipv6 else f"{p.ip4}:{PORT}" for p in cls.pods.values()]
        cfg = sim.spindle.config(node, [cls.echo],
                                 extra={"admin": {"listen": f"{node.addr4}:{ADMIN_PORT}"}})
        cfg["services"][0]["endpoints"] = {"static": endpoints}
        sp = sim.Spindle(node, cfg, name=f"spindle-node{k}")
        cls.spindles[k] = sp
        sp.start()
        return sp

    def setUp(self):
        super().setUp()
        for name, proc in self.servers.items():
            self.assertTrue(proc.alive(), f"backend {name} died\n{proc.tail()}")
        for k, sp in self.spindles.items():
            self.assertTrue(sp.proc.alive(), f"node {k}'s spindle died\n{sp.tail()}")

    # --- helpers ---------------------------------------------------------------------------

    def metrics(self, k):
        node = self.cluster.node(k)
        r = simprom.http_get(node, node.addr4, ADMIN_PORT, "/metrics", timeout=5)
        self.assertEqual(r.status, 200, r.text[:500])
        text = r.text
        return {
            "redirected": metric(text, "spindle_redirects_total", reason="redirected"),
            "downstream": metric(text, "spindle_downstream_connections_total"),
            "requests": metric(text, "spindle_requests_total"),
        }

    def all_metrics(self):
        return {k: self.metrics(k) for k in (1, 2, 3) if self.spindles[k].proc.alive()}

    def served(self, run):
        return {name: len(log.starts(run=run, method="Unary")) for name, log in self.logs.items()}

    def seen_from(self, run):
        return {norm_ip(peers.peer_ip(e["peer"])) for log in self.logs.values()
                for e in log.starts(run=run)}

    def tails(self):
        return "\n".join(sp.tail(15) for sp in self.spindles.values())

    def balanced_run(self, client, target):
        """CALLS unary calls on one channel, eight in flight, each held HOLD_MS at the Pod
        (the picker balances on real load); returns (result, {Pod: calls served})."""
        res = peers.run_client(client, target, "unary", count=CALLS, concurrency=8,
                               sleep_ms=HOLD_MS, timeout=10)
        self.assertTrue(res.get("ok"), f"client failed: {res.get('failures')} "
                                       f"{res.get('errors')}\n{res.get('_stderr')}\n{self.tails()}")
        served = self.served(res["run"])
        self.assertEqual(sum(served.values()), CALLS, f"backends logged {served}")
        return res, served

    def assertEvenShares(self, served):
        fair = CALLS / len(self.pods)
        low, high = fair * (1 - SHARE_TOLERANCE), fair * (1 + SHARE_TOLERANCE)
        for name, n in served.items():
            self.assertTrue(low <= n <= high,
                            f"{name} served {n} of {CALLS} calls, expected {fair:.0f} +-"
                            f"{SHARE_TOLERANCE:.0%} ({low:.0f}..{high:.0f}); all: {served}")

    # --- tests -----------------------------------------------------------------------------

    def test_client_on_node1_is_balanced_over_pods_of_every_node(self):
        for target in (TARGET4, TARGET6):
            with self.subTest(target=target):
                before = self.all_metrics()
                res, served = self.balanced_run(self.client1, target)
                after = self.all_metrics()
                self.assertEvenShares(served)
                # Every Pod, on every node, saw the calls come from the client Pod itself:
                # node 1's spindle made them in its namespace (upstream.source pod). That
                # they went through that spindle, its counters below show.
                self.assertEqual(self.seen_from(res["run"]), {self.client1.ip4},
                                 "calls did not all come from the client Pod")
                self.assertGreaterEqual(after[1]["redirected"] - before[1]["redirected"], 1)
                self.assertGreaterEqual(after[1]["requests"] - before[1]["requests"], CALLS)
                # Nodes 2 and 3 only received connections: their spindles redirected and
                # proxied nothing of it.
                for k in (2, 3):
                    for key in ("redirected", "downstream", "requests"):
                        self.assertEqual(after[k][key], before[k][key],
                                         f"node {k}'s spindle {key} went from "
                                         f"{before[k][key]:g} to {after[k][key]:g} while only "
                                         f"node 1's client called")

    def test_client_on_node2_is_balanced_by_node2s_spindle(self):
        before = self.all_metrics()
        res, served = self.balanced_run(self.client2, TARGET4)
        after = self.all_metrics()
        self.assertEvenShares(served)
        # node 2's spindle dials the Pods over IPv6 from the client Pod's namespace: an IPv4
        # channel, IPv6 across the fabric, from the Pod's IPv6 address
        self.assertEqual(self.seen_from(res["run"]), {self.client2.ip6},
                         "calls did not all come from the client Pod's IPv6 address")
        self.assertGreaterEqual(after[2]["redirected"] - before[2]["redirected"], 1)
        for k in (1, 3):
            self.assertEqual(after[k]["redirected"], before[k]["redirected"], f"node {k}")
            self.assertEqual(after[k]["requests"], before[k]["requests"], f"node {k}")

    def test_node1_spindle_stopped_fails_open_and_node2_keeps_balancing(self):
        self.addCleanup(self.restart_spindle, 1)
        sp1 = self.spindles[1]
        # First through node 1's spindle, to see the contrast.
        res = peers.run_client(self.client1, TARGET4, "unary", count=20, timeout=10)
        self.assertTrue(res.get("ok"), f"{res.get('failures')}\n{sp1.tail()}")
        self.assertEqual(self.seen_from(res["run"]), {self.client1.ip4})
        served = {n: c for n, c in self.served(res["run"]).items() if c}
        self.assertGreater(len(served), 1, f"one channel stayed on one Pod: {served}")
        self.assertEqual(sp1.stop(timeout=10), 0, sp1.tail())
        counters = sp1.counters()
        self.assertIsNotNone(counters, f"no counters line at exit\n{sp1.tail()}")
        self.assertGreaterEqual(counters.get("redirected", 0), 1, counters)

        # Node 1's Pods: every new channel goes straight to the ClusterIP, pinned to the
        # one Pod the DNAT picked, on whichever node it is.
        nodes_hit = set()
        for i in range(FAIL_OPEN_RUNS):
            target, own = (TARGET4, self.client1.ip4) if i % 2 == 0 else (TARGET6,
                                                                         self.client1.ip6)
            res = peers.run_client(self.client1, target, "unary", count=20, timeout=10)
            self.assertTrue(res.get("ok"), f"{target} with node 1's spindle stopped: "
                                           f"{res.get('failures')}\n{res.get('_stderr')}")
            self.assertEqual(self.seen_from(res["run"]), {own},
                             "a call did not go straight from the client Pod to the Pod")
            served = {n: c for n, c in self.served(res["run"]).items() if c}
            self.assertEqual(len(served), 1, f"one channel spread without spindle: {served}")
            nodes_hit.add(next(iter(served)))
        # Random per connection: all 8 on node 1's own Pod has probability 3^-8.
        self.assertTrue(nodes_hit - {"b1"}, "no channel reached a Pod on another node")

        # Node 2 is untouched: its spindle still balances its client over all three nodes.
        res, served = self.balanced_run(self.client2, TARGET6)
        self.assertEvenShares(served)
        self.assertEqual(self.seen_from(res["run"]), {self.client2.ip6})

    def restart_spindle(self, k):
        sp = self.spindles[k]
        if sp.proc is None or not sp.proc.alive():
            sp.close()
            self.start_spindle(k)
