"""spindle dying, hanging and stopping: the Pods' connections fail open to the ClusterIP, and
a clean stop leaves nothing attached. Each test starts its own spindle on a shared node."""

import signal
import time

import sim
from support import PORT, UNDECLARED_PORT, VIP4, VIP6, NodeTestCase, bpftool_cgroup_progs

HEARTBEAT_TIMEOUT = 1.0  # redirect.heartbeat_timeout in these tests


class LifecycleTest(NodeTestCase):
    needs_spindle = True

    def start(self):
        sp = self.start_spindle(self.spindle_config(heartbeat_timeout="1s"))
        self.assertVia(self.dial("peer", VIP4), self.node.addr4, "spindle is not redirecting")
        return sp

    def test_sigkill_next_connect_goes_direct_within_1s(self):
        sp = self.start()
        sp.signal(signal.SIGKILL)
        t0 = time.monotonic()
        sp.proc.wait(5)
        # The very next connect: the links died with the process, nothing is left to redirect
        # to a proxy that is gone.
        res = self.dial("peer", VIP4, timeout=1)
        elapsed = time.monotonic() - t0
        self.assertDirect(res, "after SIGKILL the Pod must reach the VIP directly")
        self.assertLess(elapsed, 1.0, f"direct connect succeeded only {elapsed:.2f}s after SIGKILL")
        self.assertEqual(bpftool_cgroup_progs(self.node.cgroup.path), [],
                         "programs still attached after spindle was killed")

    def test_sigstop_fails_open_after_heartbeat_timeout_and_sigcont_restores(self):
        sp = self.start()
        self.addCleanup(sp.signal, signal.SIGCONT)
        sp.signal(signal.SIGSTOP)

        def dial_direct():
            # A redirected connect now lands in the stopped proxy's backlog and gets no
            # answer: a short read timeout turns that into "not yet".
            res = self.dial("peer", VIP4, timeout=0.3)
            return res if res.get("ok") and res["seen"][1] == res["local"][1] else None

        res = sim.wait_until(dial_direct, HEARTBEAT_TIMEOUT + 3, interval=0.05,
                             what="a direct connect while spindle is stopped")
        self.assertDirect(res)
        self.assertDirect(self.dial("peer", VIP6, timeout=1), "IPv6 must fail open as well")

        sp.signal(signal.SIGCONT)

        def dial_redirected():
            res = self.dial("peer", VIP4, timeout=1)
            return res if res.get("ok") and res["seen"][0] == self.node.addr4 else None

        res = sim.wait_until(dial_redirected, HEARTBEAT_TIMEOUT + 3, interval=0.05,
                             what="a redirected connect after SIGCONT", details=sp.tail)
        self.assertVia(res, self.node.addr4)
        self.assertTrue(sp.proc.alive(), sp.tail())

    def test_sigterm_exits_0_prints_counters_and_detaches(self):
        sp = self.start()  # one redirected connect
        redirected = 1
        for host in (VIP4, VIP6, "::ffff:" + VIP4):
            self.assertVia(self.dial("peer", host), self.node.addr6 if host == VIP6 else self.node.addr4)
            redirected += 1
        # and one of each kind it leaves alone, to see them counted
        self.assertDirect(self.dial("peer", VIP4, UNDECLARED_PORT))
        self.assertDirect(self.dial("peer", VIP4, place=self.node, run_kw={"cgroup": "host"}))
        self.assertGreater(len(bpftool_cgroup_progs(self.node.cgroup.path)), 0,
                           "spindle runs but nothing is attached to the test cgroup")

        sp.signal(signal.SIGTERM)
        rc = sp.proc.wait(5)
        lines = sp.stderr_lines()
        self.assertEqual(rc, 0, sp.tail())
        self.assertTrue(lines, "no stderr at all")
        counters = sim.spindle.parse_counters(lines[-1])
        self.assertIsNotNone(counters, f"last stderr line is not the counters line: {lines[-1]!r}")
        for key in ("redirected", "not_service", "host_netns", "own_socket", "proxy_not_alive",
                    "map_full", "no_proxy_family", "relayed"):
            self.assertIn(key, counters, lines[-1])
        self.assertGreaterEqual(counters["redirected"], redirected, lines[-1])
        self.assertGreaterEqual(counters["not_service"], 1, lines[-1])
        self.assertGreaterEqual(counters["host_netns"], 1, lines[-1])

        self.assertEqual(bpftool_cgroup_progs(self.node.cgroup.path), [],
                         "programs still attached after SIGTERM")
        self.assertDirect(self.dial("peer", VIP4, timeout=2), "after SIGTERM connects go direct")
        self.assertDirect(self.dial("peer", VIP6, timeout=2))

    def test_sigint_also_exits_0(self):
        sp = self.start()
        sp.signal(signal.SIGINT)
        self.assertEqual(sp.proc.wait(5), 0, sp.tail())
        self.assertIsNotNone(sim.spindle.parse_counters(sp.stderr_lines()[-1]), sp.tail())
        self.assertDirect(self.dial("peer", VIP4, PORT, timeout=2))
