"""The simulator itself, without spindle: Pods reach VIPs through the node's DNAT (as with
kube-proxy), the test peers move bytes faithfully, and clean-up leaves nothing behind. If
these fail, the spindle tests cannot be trusted."""

import os
import subprocess

import sim
from support import (PORT, UNDECLARED_PORT, VIP4, VIP4_MAPPED, VIP6, NodeTestCase,
                     SimTestCase, norm_ip)

MIB = 1024 * 1024


class SimulatorTest(NodeTestCase):

    @classmethod
    def build(cls, stack):
        super().build(stack)
        cls.server2 = cls.node.add_pod("server2", n=4)
        cls.backend2, cls.backend2_log = sim.start_backend(cls.server2, [PORT])
        cls.pair = cls.node.add_service("pair", ports=[PORT], backends=[cls.server, cls.server2])

    def test_pod_dials_ipv4_vip_through_dnat(self):
        res = self.dial("peer", VIP4)
        self.assertDirect(res)
        self.assertEqual(res["local"][0], self.client.ip4)
        self.assertEqual(res["peer"], [VIP4, PORT], "getpeername() must show the VIP")

    def test_pod_dials_v4_mapped_vip_from_ipv6_socket(self):
        res = self.dial("peer", VIP4_MAPPED)
        self.assertDirect(res)
        self.assertEqual(res["local"][0], "::ffff:" + self.client.ip4)
        self.assertEqual(res["peer"], [VIP4_MAPPED, PORT])

    def test_pod_dials_ipv6_vip_through_dnat(self):
        res = self.dial("peer", VIP6)
        self.assertDirect(res)
        self.assertEqual(res["local"][0], self.client.ip6)
        self.assertEqual(res["peer"], [VIP6, PORT])

    def test_second_vip_port_maps_to_backend_port(self):
        # Both VIP ports lead to the backend's one port. When the kernel gives this connect a
        # source port that a connection to the first VIP port still holds in conntrack, the
        # two DNAT'd tuples collide and the NAT remaps the source port, as kube-proxy's would:
        # the client's address, not its port, is what shows there is no proxy in between.
        res = self.dial("peer", VIP4, UNDECLARED_PORT)
        self.assertOk(res)
        self.assertEqual(norm_ip(res["seen"][0]), norm_ip(res["local"][0]), f"not direct: {res}")

    def test_node_process_dials_vip_through_output_dnat(self):
        for cgroup in (None, "host"):
            res = self.dial("peer", VIP4, place=self.node, run_kw={"cgroup": cgroup})
            self.assertDirect(res)
            self.assertEqual(res["local"][0], self.node.addr4)
        res = self.dial("peer", VIP6, place=self.node)
        self.assertDirect(res)
        self.assertEqual(res["local"][0], self.node.addr6)

    def test_vip_port_without_rule_is_refused(self):
        res = self.dial("peer", VIP4, 7999, timeout=2)
        self.assertFalse(res["ok"])
        self.assertIn("ConnectionRefused", res.get("connect_error", ""), res)

    def test_dnat_spreads_connections_and_follows_backend_changes(self):
        vip = self.pair.vip4
        marks = (self.backend_log.count(), self.backend2_log.count())
        for _ in range(24):
            self.assertDirect(self.dial("peer", vip))
        n1 = self.backend_log.count() - marks[0]
        n2 = self.backend2_log.count() - marks[1]
        # 24 PEER exchanges, each logged before the backend closes; random per connection,
        # so both get some (all on one: probability 2 * 2^-24).
        self.assertEqual(n1 + n2, 24)
        self.assertGreater(n1, 0)
        self.assertGreater(n2, 0)
        try:
            self.pair.set_backends([self.server2])
            mark = self.backend2_log.count()
            for _ in range(6):
                self.assertDirect(self.dial("peer", vip))
            self.assertEqual(self.backend2_log.count() - mark, 6)
            self.pair.set_backends([])
            res = self.dial("peer", vip, timeout=2)
            self.assertFalse(res["ok"], "a Service without backends must refuse")
        finally:
            self.pair.set_backends([self.server, self.server2])

    def test_8mib_each_way_byte_identical(self):
        res = self.dial("echo", VIP4, bytes=8 * MIB, timeout=30)
        self.assertOk(res)
        self.assertTrue(res["identical"], res)

    def test_half_close_from_client(self):
        res = self.dial("sink", VIP4, bytes=MIB)
        self.assertOk(res)
        self.assertTrue(res["match"], res)

    def test_half_close_from_server(self):
        mark = self.backend_log.count()
        res = self.dial("source", VIP6, bytes=MIB, after=100_000)
        self.assertOk(res)
        self.assertTrue(res["identical"], res)
        entry = self.backend_log.wait_for(lambda e: e["cmd"] == f"SOURCE {MIB}", 5, since=mark)
        self.assertEqual(entry["bytes_in"], 100_000)
        self.assertEqual(entry["sha256_in"], res["sha_after"])

    def test_pod_processes_run_in_pod_cgroup_and_netns(self):
        out = self.client.run(["cat", "/proc/self/cgroup"]).stdout
        rel = "/" + os.path.relpath(self.client.cgroup.path, sim.cgroup2_mount())
        self.assertIn(f"0::{rel}\n", out)
        addrs = self.client.run(["ip", "-o", "addr", "show", "dev", "eth0"]).stdout
        self.assertIn(f"{self.client.ip4}/32", addrs)
        self.assertIn(f"{self.client.ip6}/128", addrs)
        # spawned processes too, and their PIDs are recorded
        p = self.client.spawn(["sh", "-c", "cat /proc/self/cgroup; exec sleep 30"], name="sleeper")
        p.wait_for(lambda: "0::" in p.stdout(), 5, what="cgroup line")
        self.assertIn(f"0::{rel}\n", p.stdout())
        self.assertIn(p.pid, self.client.cgroup.procs())
        p.kill()
        self.assertFalse(p.alive())

    def test_io_uring_refusal_wrapper(self):
        probe = ("import ctypes; libc = ctypes.CDLL(None, use_errno=True); "
                 "buf = ctypes.create_string_buffer(120); fd = libc.syscall(425, 4, buf); "
                 "print(fd, ctypes.get_errno())")
        plain = subprocess.run([sim.PYTHON, "-c", probe], capture_output=True, text=True,
                               timeout=30)
        fd, _ = plain.stdout.split()
        self.assertGreaterEqual(int(fd), 0, "io_uring_setup should work without the wrapper")
        wrapped = subprocess.run([sim.PYTHON, sim.NO_IO_URING, sim.PYTHON, "-c", probe],
                                 capture_output=True, text=True, timeout=30)
        self.assertEqual(wrapped.stdout.split(), ["-1", "1"], "expected -1 EPERM")


class CleanupTest(SimTestCase):

    def test_node_close_removes_netns_cgroups_and_processes(self):
        node = sim.Node("scratch")
        try:
            pod = node.add_pod("p")
            node.add_service("s", ports=[PORT], backends=[pod])
            p1 = pod.spawn(["sleep", "60"], name="sleep-pod")
            p2 = node.spawn(["sleep", "60"], name="sleep-node", cgroup="host")
            names = [node.netns.name, pod.netns.name]
            cgroups = [node.cgroup.path, pod.cgroup.path]
            pids = [p1.pid, p2.pid]
            self.assertTrue(all(n in sim.netns.list_names() for n in names))
        finally:
            node.close()
        node.close()  # idempotent
        left = sim.netns.list_names()
        for n in names:
            self.assertNotIn(n, left)
        for c in cgroups:
            self.assertFalse(os.path.exists(c), c)
        for pid in pids:
            self.assertFalse(os.path.exists(f"/proc/{pid}"), f"pid {pid} still exists")
