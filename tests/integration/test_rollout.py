"""Rollout on one node: the DaemonSet's maxSurge 1 starts the new spindle beside the old one,
then sends the old one SIGTERM. Both share the proxy port (SO_REUSEPORT) and, through maps
pinned on bpffs, the record of where each redirected connection was going. The old one stops
accepting, sends its clients GOAWAY, lets their calls finish, and exits; the clients reconnect
to the new one by themselves. No call may fail, from clients of three gRPC stacks
(python3-grpcio, C++ libgrpc++, @grpc/grpc-js), run with gRPC's default retries as apps are.
grpc-js reconnects within milliseconds of the GOAWAY and retries a refused call only once:
while one of the old spindle's listeners was still open, its new connection could land there,
be refused again, and fail (4 of 10 runs before the old spindle closed every listener first).
"""

import json
import os
import re
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "grpc"))
from support import SimTestCase, measure, metric, norm_ip, zombie  # noqa: E402
import sim  # noqa: E402
from sim.bpffs import Bpffs  # noqa: E402
from sim.prometheus import http_get  # noqa: E402
import peers  # noqa: E402  (tests/grpc)

PORT = 50051
VIP4 = "198.19.0.10"
PEER_VIP4 = "198.19.0.11"  # tcp_backend: says who it sees
PEER_PORT = 7000
PEER_DIALS = os.path.join(sim.REPO, "tests", "sim", "peer_dials.py")
TARGET = peers.target(VIP4, PORT)
ADMIN_PORT = 9901
E2E_CLIENT = os.path.join(sim.REPO, "build", "bin", "e2e_client")
NODE = "/usr/bin/node"
NODE_CLIENT = os.path.join(sim.REPO, "tests", "e2e", "node", "client.js")

# A TCP connect: "refused" or "accepted".
DIAL = r'''
import socket, sys
s = socket.socket()
s.settimeout(2)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print("accepted")
except ConnectionRefusedError:
    print("refused")
'''
# The proxy-port listener of a spindle of an older map ABI version: SO_REUSEPORT, as
# spindle's own; it says what it accepts.
OLD_VERSION_LISTENER = r'''
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(64)
print("listening", flush=True)
while True:
    c, peer = s.accept()
    print("accepted", peer, flush=True)
    c.close()
'''
RATE = 100          # calls per second, per client
SECONDS = 12        # of load per client
CONCURRENCY = 4
HEARTBEAT_TIMEOUT = 1.0  # sim.spindle.config's


class RolloutTest(SimTestCase):
    needs_spindle = True

    @classmethod
    def build(cls, stack):
        if not os.access(E2E_CLIENT, os.X_OK):
            raise RuntimeError(f"{E2E_CLIENT} is missing (make build/bin/e2e_client)")
        cls.node = stack.enter_context(sim.Node())
        cls.py_client = cls.node.add_pod("client-py", n=2)
        cls.cpp_client = cls.node.add_pod("client-cpp", n=3)
        cls.node_client = cls.node.add_pod("client-node", n=4)
        cls.pods = [cls.node.add_pod(f"b{i}", n=10 + i) for i in range(3)]
        cls.echo = cls.node.add_service("echo", vip4=VIP4, ports=[PORT], backends=cls.pods)
        cls.peer = cls.node.add_service("peer", vip4=PEER_VIP4, ports=[PEER_PORT],
                                        backends=[cls.pods[0]])
        cls.logs = {}
        for pod in cls.pods:
            _proc, cls.logs[pod.name] = peers.start_server(pod)
        sim.start_backend(cls.pods[0], [PEER_PORT])
        cls.bpffs = Bpffs()
        stack.callback(cls.bpffs.close)

    def config(self, name):
        # Each spindle its own probe socket, as each Pod has its own volume for it.
        admin = {"listen": f"{self.node.addr4}:{ADMIN_PORT}",
                 "socket": os.path.join(self.node.logdir, f"{name}.sock")}
        cfg = sim.spindle.config(self.node, [self.echo], pin_path=f"{self.bpffs.path}/spindle",
                                 drain="10s", extra={"admin": admin})
        cfg["services"][0]["endpoints"] = {"static": [f"{p.ip4}:{PORT}" for p in self.pods]}
        cfg["services"].append({"name": "peer", "intercept": [f"{PEER_VIP4}:{PEER_PORT}"],
                                "endpoints": {"static": [f"{self.pods[0].ip4}:{PEER_PORT}"]}})
        # upstream.source node: the backends seeing the node's address is how these tests tell
        # spindle's path from a direct one (in pod mode both show the Pod's address).
        cfg["upstream"] = {"source": "node"}
        return cfg

    def start_old_and_new(self):
        """Two spindles of the node sharing their maps, as in a rollout: (old, new)."""
        out = []
        for name in ("old", "new"):
            sp = sim.Spindle(self.node, self.config(name), name=f"spindle-{name}")
            self.addCleanup(sp.close)
            sp.start()
            out.append(sp)
        return tuple(out)

    def dials(self, count, timeout):
        """count fresh connects to the peer Service from the Python client's Pod."""
        p = self.py_client.run([sim.PYTHON, PEER_DIALS, PEER_VIP4, str(PEER_PORT), str(count),
                                "--timeout", str(timeout)], timeout=count * timeout + 30)
        return json.loads(p.stdout)

    def accepted(self, spindle):
        """The passthrough connections this spindle accepted (its /metrics)."""
        code, out = self.probe(spindle, "/metrics")
        self.assertEqual(code, 0, out)
        return sum(float(m.group(1)) for m in re.finditer(
            r'^spindle_downstream_connections_total\{[^}]*protocol="passthrough"[^}]*\} (\S+)',
            out, re.M))

    def probe(self, spindle, path="/ready"):
        """kubelet's exec probe: `spindle --config FILE --probe PATH`; (exit code, output)."""
        p = self.node.run([sim.SPINDLE_BIN, "--config", spindle.config_path, "--probe", path],
                          check=False, timeout=10)
        return p.returncode, p.stdout + p.stderr

    def test_new_spindle_beside_the_old_then_sigterm_fails_no_call(self):
        old = sim.Spindle(self.node, self.config("old"), name="spindle-old")
        self.addCleanup(old.close)
        old.start()

        count = RATE * SECONDS
        py, py_run = peers.spawn_client(self.py_client, TARGET, "unary", count=count, rate=RATE,
                                        concurrency=CONCURRENCY, timeout=10,
                                        record=True, app_defaults=True)
        cpp_run = peers.new_run("cpp")
        # Steady calls (each held 10 ms by the Pod) for as long, every one recorded.
        cpp = self.cpp_client.spawn([E2E_CLIENT, TARGET, "during-kill", "--seconds", str(SECONDS),
                                     "--concurrency", "2", "--sleep-ms", "10", "--timeout", "10",
                                     "--run", cpp_run, "--app-defaults"], name="client-cpp")
        js_run = peers.new_run("js")
        js = self.node_client.spawn([NODE, NODE_CLIENT, TARGET, "during-kill", "--seconds",
                                     str(SECONDS), "--concurrency", "2", "--sleep-ms", "10",
                                     "--timeout", "10", "--run", js_run, "--app-defaults"],
                                    name="client-node")
        # Both clients are mid-run on a connection the old spindle holds.
        sim.wait_until(lambda: all(self.served(run) >= 100 for run in (py_run, cpp_run, js_run)),
                       15, what="every client's calls reaching the backends")

        new = sim.Spindle(self.node, self.config("new"), name="spindle-new")
        self.addCleanup(new.close)
        new.start()
        self.assertTrue(any("sharing its maps" in line for line in new.stderr_lines()),
                        "the new spindle did not join the old one's maps:\n" + new.tail())
        # Each one's probe reaches that one, though they share the admin port.
        for sp in (old, new):
            code, out = self.probe(sp)
            self.assertEqual(code, 0, f"{sp.name}: --probe /ready: {out}")
        time.sleep(1.0)

        t_term = time.monotonic()
        t_term_wall = time.time()
        old.signal(signal.SIGTERM)
        code = old.proc.wait(15)
        drain_s = time.monotonic() - t_term
        self.assertEqual(code, 0, "the old spindle did not exit cleanly:\n" + old.tail())
        drained = [line for line in old.stderr_lines() if re.search(r"drained in \d+ ms", line)]
        self.assertTrue(drained, "the old spindle did not finish its drain before exiting:\n"
                        + old.tail())
        code, out = self.probe(old)
        self.assertNotEqual(code, 0, f"the old spindle's probe still answers after it exited: {out}")
        self.assertEqual(self.probe(new), (0, "ready\n"), "the new spindle is not ready")

        py_res = peers.result(py, 60)
        cpp_res = peers.result(cpp, 60)
        js_res = peers.result(js, 60)
        py_failed = [[c[0], round(c[1] - t_term_wall, 4), round(c[2] - t_term_wall, 4), c[3]]
                     for c in py_res.get("calls") or [] if c[3] != "OK"]
        self.assertTrue(py_res.get("ok"), f"python client: {py_res.get('failures')}; failed "
                        f"calls [id, start, end] in s after SIGTERM: {py_failed}\n"
                        + old.tail() + new.tail())
        self.assertEqual(py_res.get("calls_ok"), count, f"python client: {py_res}")
        made_by = {py_run: count}
        for name, run, res in (("c++", cpp_run, cpp_res), ("grpc-js", js_run, js_res)):
            calls = res.get("calls") or []
            failed = [c for c in calls if c[3] != "OK"]
            self.assertGreater(len(calls), 300, f"{name} client made too few calls: {res}")
            self.assertEqual(failed, [], f"{name} client: {len(failed)} calls failed\n"
                             + new.tail())
            made_by[run] = len(calls)
        for run, made in made_by.items():
            self.assertEqual(self.served(run), made, f"run {run}: backends logged "
                             f"{self.served(run)} calls of {made}")
            seen = {norm_ip(peers.peer_ip(e["peer"])) for log in self.logs.values()
                    for e in log.starts(run=run)}
            self.assertEqual(seen, {self.node.addr4}, f"calls of {run} bypassed spindle: {seen}")

        # Both clients came back to the new spindle on their own, and its calls were balanced.
        metrics = http_get(self.node, self.node.addr4, ADMIN_PORT, "/metrics").text
        reconnected = metric(metrics, "spindle_downstream_connections_total", protocol="h2")
        self.assertGreaterEqual(reconnected, 3, "the clients did not reconnect to the new "
                                "spindle:\n" + metrics[:3000])
        per_pod = {p.ip4: metric(metrics, "spindle_requests_total", endpoint=f"{p.ip4}:{PORT}")
                   for p in self.pods}
        self.assertTrue(all(n > 0 for n in per_pod.values()),
                        f"the new spindle did not spread calls over every Pod: {per_pod}")
        measure(f"rollout: drain {drain_s:.2f} s ({drained[-1].split('drained in ')[1]}), "
                f"{sum(made_by.values())} calls from 3 stacks, 0 failed; new spindle calls per Pod {per_pod}")

        # The last spindle leaving removes the pins; the first one's are shared until then.
        self.assertTrue(self.bpffs.pins(), "no map was pinned while two spindles ran")
        self.assertEqual(new.stop(), 0, new.tail())
        self.assertEqual(self.bpffs.pins(), [], "the last spindle left its pins behind")

    def test_beside_a_stopped_spindle_fresh_connects_go_to_the_live_one(self):
        # Both share every proxy port (SO_REUSEPORT), and the live one keeps the shared
        # heartbeat fresh: left to the kernel's hash, half of the fresh connects would land on
        # the stopped one's listeners and wait there. Each spindle's own heartbeat decides
        # instead (spindle_select_listener).
        old, new = self.start_old_and_new()
        count = 40

        # Both live: the fresh connects are shared, none waits.
        res = self.dials(count, timeout=2)
        self.assertEqual((res["answered"], res["ips"]), (count, [self.node.addr4]), res)
        shares = self.accepted(old), self.accepted(new)
        self.assertEqual(sum(shares), count, shares)
        self.assertTrue(all(shares), f"one spindle got every connect: {shares}")

        pids = [old.proc.pid, old.proxy_pid()]
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        self.addCleanup(lambda: [os.kill(pid, signal.SIGCONT) for pid in pids
                                 if os.path.exists(f"/proc/{pid}")])
        time.sleep(HEARTBEAT_TIMEOUT + 0.5)
        before = self.accepted(new)
        res = self.dials(count, timeout=1)
        self.assertEqual(res["unanswered"], 0, f"fresh connects waited on the stopped spindle: {res}")
        self.assertEqual(res["ips"], [self.node.addr4], res)
        self.assertEqual(self.accepted(new) - before, count, "not all served by the live spindle")
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
        self.assertEqual(new.stop(), 0, new.tail())
        self.assertEqual(old.stop(), 0, old.tail())
        measure(f"rollout, old spindle SIGSTOPped: {count} of {count} fresh connects served by "
                f"the new one; before the stop {shares[0]:.0f} / {shares[1]:.0f}")

    def test_beside_a_spindle_whose_proxy_died_fresh_connects_go_to_the_live_one(self):
        # The old spindle's privileged part stopped (it cannot detach, and its heartbeat in
        # instances is still fresh), then its proxy killed: spindle_proxy_exit marks that
        # proxy, so its listeners are passed by, and leaves the shared heartbeat alone, as the
        # new spindle serves. Every fresh connect goes to the new one: none direct, none
        # refused by the dead one's listeners.
        old, new = self.start_old_and_new()
        proxy = old.proxy_pid()
        before = self.accepted(new)
        os.kill(old.proc.pid, signal.SIGSTOP)
        self.addCleanup(lambda: old.proc.alive() and os.kill(old.proc.pid, signal.SIGCONT))
        os.kill(proxy, signal.SIGKILL)
        sim.wait_until(lambda: zombie(proxy), 5, interval=0.001, what="the old proxy dead")
        count = 20
        res = self.dials(count, timeout=1)
        self.assertEqual((res["answered"], res["ips"]), (count, [self.node.addr4]), res)
        self.assertEqual(self.accepted(new) - before, count, "not all served by the live spindle")
        os.kill(old.proc.pid, signal.SIGCONT)
        self.assertEqual(new.stop(), 0, new.tail())

    def test_a_draining_spindle_has_no_listener_left(self):
        # The GOAWAY sends clients to reconnect at once; the draining spindle must hold no
        # listener by then, or the reconnect lands on it and is sent away again. Its listeners
        # stayed open through the whole drain once (a cancel that found nothing).
        sp = sim.Spindle(self.node, self.config("lone"), name="spindle-lone")
        self.addCleanup(sp.close)
        sp.start()
        # Calls held 3 s by the Pod keep the drain going while the port is probed.
        proc, run = peers.spawn_client(self.py_client, TARGET, "during-kill", seconds=1,
                                       concurrency=2, sleep_ms=3000, rate=4, timeout=10)
        sim.wait_until(lambda: self.served(run) >= 2, 10, what="calls held by the Pods")
        sp.signal(signal.SIGTERM)
        sim.wait_until(lambda: any("draining: up to" in line for line in sp.stderr_lines()), 5,
                       what="the drain to start")
        # From the node itself: not redirected, just a TCP connect to the proxy port.
        p = self.node.run([sim.PYTHON, "-c", DIAL, self.node.addr4, str(sim.spindle.PROXY_PORT)],
                          check=False, timeout=10)
        seen = p.stdout.strip()
        self.assertTrue(sp.proc.alive(), "the drain ended before the port was probed")
        self.assertEqual(seen, "refused", "the draining spindle still accepts:\n" + sp.tail())
        res = peers.result(proc, 30)
        self.assertTrue(res.get("ok"), f"calls held through the drain failed: {res}")
        self.assertEqual(sp.proc.wait(15), 0, sp.tail())

    def test_beside_a_spindle_of_another_abi_version_no_listener_is_shared(self):
        # An older spindle (another map ABI version: its records are in maps this one does
        # not see) listens on the proxy port. The new one must not listen there too: the
        # kernel would hand it some of the old one's connections, which it would reject.
        # Its own redirects go to the service ports, which the old one does not use.
        old = self.node.spawn([sim.PYTHON, "-c", OLD_VERSION_LISTENER, self.node.addr4,
                               str(sim.spindle.PROXY_PORT)], name="old-version")
        self.addCleanup(old.stop)
        old.wait_for_line("listening", 10, stream="stdout")
        bpffs = Bpffs("bpffs-versions")
        self.addCleanup(bpffs.close)
        cfg = self.config("newer-version")
        cfg["redirect"]["pin_path"] = f"{bpffs.path}/spindle"
        sp = sim.Spindle(self.node, cfg, name="spindle-newer-version")
        self.addCleanup(sp.close)
        sp.start()
        self.assertTrue(any("maps of another version" in line for line in sp.stderr_lines()),
                        sp.tail())
        out = self.node.run(["ss", "-tlnH", f"sport = :{sim.spindle.PROXY_PORT}"]).stdout
        self.assertEqual(len(out.strip().splitlines()), 1,
                         f"spindle listens on the old version's port too:\n{out}")
        res = peers.run_client(self.py_client, TARGET, "unary", count=60, concurrency=2,
                               timeout=10)
        self.assertTrue(res.get("ok"), f"{res}\n{sp.tail()}")
        text = http_get(self.node, self.node.addr4, ADMIN_PORT, "/metrics").text
        self.assertGreaterEqual(metric(text, "spindle_requests_total"), 60, sp.tail())
        self.assertNotIn("accepted", old.stdout(), "the old version's listener got a connection")

    def test_pin_path_off_bpffs_runs_unshared_and_refuses_a_second(self):
        # Without a bpf filesystem the maps cannot be shared: the first spindle says so and
        # serves; a second beside it would reject the first one's connections, so it refuses.
        cfg = self.config("unshared")
        cfg["redirect"]["pin_path"] = os.path.join(self.node.logdir, "not-bpffs")
        first = sim.Spindle(self.node, cfg, name="spindle-unshared")
        self.addCleanup(first.close)
        first.start()
        self.assertTrue(any("is not on a bpf filesystem" in line and "not shared" in line
                            for line in first.stderr_lines()), first.tail())
        cfg["admin"]["socket"] = os.path.join(self.node.logdir, "second.sock")
        second = sim.Spindle(self.node, cfg, name="spindle-second")
        self.addCleanup(second.close)
        second.start(wait_ready=False)
        self.assertEqual(second.proc.wait(10), 1, second.tail())
        self.assertTrue(any("is another spindle running on this node" in line
                            for line in second.error_lines()), second.tail())
        self.assertTrue(first.proc.alive(), "the first spindle died:\n" + first.tail())
        self.assertEqual(first.stop(), 0, first.tail())

    def served(self, run):
        return sum(len(log.starts(run=run)) for log in self.logs.values())
