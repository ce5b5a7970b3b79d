"""spindle's redirect path: what a Pod dialling a declared VIP:port gets, and what is left
alone. The traffic here is not HTTP/2, so spindle passes it through at L4 to the original
destination (the VIP), which the node's DNAT sends to the backend Pod."""

import re

import sim
from support import (PORT, UNDECLARED_PORT, VIP4, VIP4_MAPPED, VIP6, NodeTestCase, norm_ip)

MIB = 1024 * 1024
PROXY_PORT = sim.spindle.PROXY_PORT


class RedirectTest(NodeTestCase):
    needs_spindle = True

    @classmethod
    def build(cls, stack):
        super().build(stack)
        cfg = sim.spindle.config(cls.node, heartbeat_timeout="1s",
                                 extra={"upstream": {"source": "node"}})  # see spindle_config
        cfg["services"] = [sim.spindle.service_config(cls.echo, port=PORT)]
        cls.spindle = stack.enter_context(sim.Spindle(cls.node, cfg))
        cls.spindle.start()

    def setUp(self):
        super().setUp()
        self.assertTrue(self.spindle.proc.alive(), "spindle died\n" + self.spindle.tail())

    # --- served through spindle ----------------------------------------------------------

    def test_ipv4_socket_to_vip_is_served_through_spindle(self):
        res = self.dial("peer", VIP4)
        self.assertVia(res, self.node.addr4)
        self.assertEqual(res["peer"], [VIP4, PORT], "the app's getpeername() must show the VIP")

    def test_ipv6_socket_to_v4_mapped_vip_is_served_through_spindle(self):
        # How gRPC C-core dials an IPv4 target: only connect6 sees it.
        res = self.dial("peer", VIP4_MAPPED)
        self.assertVia(res, self.node.addr4)
        self.assertEqual(res["local"][0], "::ffff:" + self.client.ip4)
        self.assertEqual(res["peer"], [VIP4_MAPPED, PORT],
                         "the app's getpeername() must show the v4-mapped VIP")

    def test_ipv6_vip_is_served_through_spindle(self):
        res = self.dial("peer", VIP6)
        self.assertVia(res, self.node.addr6)
        self.assertEqual(res["peer"], [VIP6, PORT], "the app's getpeername() must show the VIP")

    def test_8mib_each_way_byte_identical(self):
        mark = self.backend_log.count()
        res = self.dial("echo", VIP4, bytes=8 * MIB, timeout=30)
        self.assertOk(res)
        self.assertTrue(res["identical"], f"echo through spindle corrupted the stream: {res}")
        entry = self.backend_log.wait_for(lambda e: e["cmd"] == "ECHO", 5, since=mark)
        self.assertEqual(entry["peer"], self.node.addr4, "the echo did not go through spindle")
        self.assertEqual(entry["bytes_in"], 8 * MIB)

    def test_client_half_close_still_gets_the_answer(self):
        mark = self.backend_log.count()
        res = self.dial("sink", VIP6, bytes=MIB)
        self.assertOk(res)
        self.assertTrue(res["match"], f"SINK answer does not match what was sent: {res}")
        entry = self.backend_log.wait_for(lambda e: e["cmd"] == "SINK", 5, since=mark)
        self.assertEqual(entry["peer"], self.node.addr6, "the sink did not go through spindle")

    def test_server_half_close_reaches_client_which_can_still_send(self):
        mark = self.backend_log.count()
        after = 200_000
        res = self.dial("source", VIP4, bytes=MIB, after=after)
        self.assertOk(res)
        self.assertTrue(res["identical"], f"SOURCE bytes differ: {res}")
        entry = self.backend_log.wait_for(lambda e: e["cmd"] == f"SOURCE {MIB}", 5, since=mark,
                                          what="the SOURCE connection to end")
        self.assertEqual(entry["peer"], self.node.addr4, "the source did not go through spindle")
        self.assertIsNone(entry["error"], entry)
        self.assertEqual(entry["bytes_in"], after,
                         "bytes the client sent after the server's FIN did not all arrive")
        self.assertEqual(entry["sha256_in"], res["sha_after"])

    # --- left alone -----------------------------------------------------------------------

    def test_undeclared_port_is_not_redirected(self):
        for host in (VIP4, VIP6):
            with self.subTest(host=host):
                self.assertDirect(self.dial("peer", host, UNDECLARED_PORT))

    def test_process_in_node_netns_is_not_redirected(self):
        # In a cgroup under the test cgroup, so the programs do run for it: the
        # host_netns check is what leaves it alone.
        for host, addr in ((VIP4, self.node.addr4), (VIP6, self.node.addr6)):
            with self.subTest(host=host):
                res = self.dial("peer", host, place=self.node, run_kw={"cgroup": "host"})
                self.assertDirect(res, "a node-netns process must not be redirected by default")
                self.assertEqual(norm_ip(res["local"][0]), addr)

    def test_direct_connect_to_proxy_port_is_rejected(self):
        for proxy in (self.node.addr4, self.node.addr6):
            with self.subTest(proxy=proxy):
                self._check_rejected(proxy)

    def _check_rejected(self, proxy):
        # spindle logs at most one rejection per worker per interval, so keep dialling
        # (each dial must be refused) until a line names one of this family's dials.
        mark = self.backend_log.count()
        shown = set()

        def logged():
            for line in self.spindle.stderr_lines():
                m = re.search(sim.spindle.REJECTED, line)
                if m and m.group(1) in shown:
                    return line
            return None

        def dial_once():
            res = self.dial("raw", proxy, PROXY_PORT, send="PEER\n", timeout=5)
            self.assertTrue(res.get("local"), f"could not even connect: {res}")
            self.assertEqual(res["data_len"], 0, f"spindle answered a direct connect: {res}")
            self.assertTrue(res["eof"] or res["reset"],
                            f"spindle neither closed nor reset a direct connect: {res}")
            ip, port = res["local"]
            shown.add(f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}")
            return logged()

        line = sim.wait_until(dial_once, 5, interval=0.25,
                              what=f"a 'rejected connection' line for a dial to {proxy}",
                              details=self.spindle.tail)
        self.assertIn("not redirected", line)
        self.assertEqual(self.backend_log.count(), mark, "a rejected connection reached the backend")


class RedirectVariantsTest(NodeTestCase):
    """Configurations and failures beyond the happy path; each test starts its own spindle."""
    needs_spindle = True

    def test_ipv4_only_proxy_takes_v4_mapped_dials_and_leaves_ipv6_alone(self):
        # Without an IPv6 proxy address, v4-mapped connects go to the v4-mapped
        # IPv4 proxy; IPv6 destinations are left alone and counted (no_proxy_family).
        sp = self.start_spindle(self.spindle_config(listen=[f"{self.node.addr4}:{PROXY_PORT}"]))
        self.assertVia(self.dial("peer", VIP4), self.node.addr4)
        self.assertVia(self.dial("peer", VIP4_MAPPED), self.node.addr4)
        self.assertDirect(self.dial("peer", VIP6), "IPv6 VIP without an IPv6 proxy: left alone")
        self.assertEqual(sp.stop(5), 0, sp.tail())
        counters = sp.counters()
        self.assertIsNotNone(counters, sp.tail())
        self.assertGreaterEqual(counters["redirected"], 2, counters)
        self.assertGreaterEqual(counters["no_proxy_family"], 1, counters)

    def test_upstream_refused_closes_the_pod_connection_promptly(self):
        # The Service has no backend: the node refuses the VIP, spindle's upstream connect
        # fails, and the Pod must see its connection end at once (no data), not hang.
        sp = self.start_spindle()
        self.echo.set_backends([])
        self.addCleanup(self.echo.set_backends, [self.server])
        res = self.dial("raw", VIP4, send="PEER\n", timeout=3)
        self.assertTrue(res.get("local"), f"connect failed outright: {res}")
        self.assertEqual(res["data_len"], 0, res)
        self.assertTrue(res["eof"] or res["reset"], f"the Pod's connection hung: {res}")
        self.assertLess(res["total_ms"], 2000, res)
        self.assertTrue(sp.proc.alive(), sp.tail())

    def test_own_upstream_connects_are_never_redirected(self):
        # spindle inside the attached cgroup with host_netns on, as a DaemonSet Pod under a
        # cgroup-root attach would be: its upstream connect to the VIP passes through its own
        # connect4 and must be left alone (own_socket), or it would loop into itself.
        cfg = self.spindle_config(extra={"redirect": {"host_netns": True}})
        sp = self.start_spindle(cfg, cgroup="spindle")
        self.assertVia(self.dial("peer", VIP4), self.node.addr4)
        self.assertVia(self.dial("peer", VIP6), self.node.addr6)
        # and with host_netns on, a node-netns process is redirected after all
        res = self.dial("peer", VIP4, place=self.node, run_kw={"cgroup": "host"})
        self.assertVia(res, self.node.addr4)
        self.assertEqual(sp.stop(5), 0, sp.tail())
        counters = sp.counters()
        self.assertIsNotNone(counters, sp.tail())
        self.assertGreaterEqual(counters["own_socket"], 3, counters)
        self.assertGreaterEqual(counters["redirected"], 3, counters)
