"""Fail open under load, with real gRPC, and least privilege.

spindle killed (SIGKILL) while a gRPC app calls through it: fresh connects go straight to the
ClusterIP within 1 s, and no more calls fail than were in flight. spindle hung (SIGSTOP): the
heartbeat goes stale and fresh connects go direct within redirect.heartbeat_timeout (2 s,
the default); after SIGCONT they are redirected again. And once its programs are attached,
spindle runs with CAP_NET_ADMIN only (upstream.source node here), in every thread, and can
gain nothing back, while balancing, counting by Pod, reload and a clean exit still work.

The apps are tests/grpc/client.py (python3-grpcio, with gRPC's default retries as apps have
them) in a client Pod, calling Service echo (VIP 198.19.0.10:50051, DNAT'd per connection to
one of three server.py Pods). Fresh connects are watched by a prober in the same Pod: one new
TCP connection to Service peer (198.19.0.11:7000, a tcp_backend answering who it sees) every
20 ms, each recorded with its start time and whether it went direct or through spindle.
"""

import json
import os
import re
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "grpc"))
import sim  # noqa: E402
from sim.bpffs import Bpffs  # noqa: E402
from sim.prometheus import http_get  # noqa: E402
from support import (SimTestCase, bpftool_cgroup_progs, measure, metric, norm_ip,  # noqa: E402
                     zombie)
import peers  # noqa: E402  (tests/grpc)

VIP4 = "198.19.0.10"
PORT = 50051
TARGET = peers.target(VIP4, PORT)
PEER_VIP4 = "198.19.0.11"
PEER_PORT = 7000
UNDECLARED_PORT = 7001  # DNAT'd to the same tcp_backend; declared only by a reload
ADMIN_PORT = 9901

HEARTBEAT_TIMEOUT = 2.0   # redirect.heartbeat_timeout: the default, written out
HEARTBEAT_INTERVAL = 0.5  # spindle beats four times per timeout
PROBE_EVERY = 0.02        # s between the prober's connects
PROBE_TIMEOUT = 0.15      # s for an answer: a connect queued on a stopped spindle gets none
# Past the heartbeat timeout, the prober sees the change one probe late at worst: the probe
# that was waiting on the stopped spindle (PROBE_TIMEOUT) and the pause before the next one.
PROBE_RESOLUTION = PROBE_TIMEOUT + PROBE_EVERY + 0.05

CAP_KILL = 5
CAP_NET_ADMIN = 12
CAP_BPF = 39

# One fresh TCP connection per round to host:port, bounded in count and time; one JSON line
# per connection: start time (unix s), whether the backend answered, and whom it saw.
PROBER = r"""
import json, socket, sys, time
host, port, every, timeout, seconds = sys.argv[1], int(sys.argv[2]), *map(float, sys.argv[3:6])
end = time.monotonic() + seconds
for _ in range(int(seconds / every) + 1):
    if time.monotonic() >= end:
        break
    t0 = time.time()
    out = {"t": t0, "ok": False}
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(b"PEER\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(256)
                if not chunk:
                    break
                data += chunk
            local = s.getsockname()
        seen = data.decode().split()
        out.update(ok=len(seen) == 2, seen=seen, local=[local[0], local[1]])
        # The backend saw the Pod itself (conntrack may have changed the port), not spindle.
        out["direct"] = out["ok"] and seen[0] == local[0]
    except OSError as e:
        out["error"] = type(e).__name__
    out["ms"] = round((time.time() - t0) * 1000, 1)
    print(json.dumps(out), flush=True)
    time.sleep(max(0.0, every - (time.time() - t0)))
"""


def worker_thread(pid, index):
    """The tid of spindle's worker `index` (its threads are named spindle-w<index>)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            if f.read().strip() == f"spindle-w{index}":
                return int(tid)
    raise AssertionError(f"spindle {pid} has no thread spindle-w{index}")


class ThreadStop:
    """Stops one thread of another process and no other: ptrace(PTRACE_SEIZE), then
    PTRACE_INTERRUPT. resume() (idempotent) detaches, and the thread runs on."""
    PTRACE_DETACH, PTRACE_SEIZE, PTRACE_INTERRUPT = 17, 0x4206, 0x4207

    def __init__(self, tid):
        import ctypes
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p,
                                      ctypes.c_void_p]
        self.tid = tid
        for request in (self.PTRACE_SEIZE, self.PTRACE_INTERRUPT):
            if self._libc.ptrace(request, tid, None, None) != 0:
                raise OSError(ctypes.get_errno(), f"ptrace({request:#x}, {tid})")
        self._stopped = True

    def resume(self):
        if self._stopped:
            self._stopped = False
            # The thread is in a ptrace stop after the interrupt: detaching lets it run.
            os.waitpid(self.tid, os.WNOHANG | 0x40000000)  # __WALL: reap the stop report
            self._libc.ptrace(self.PTRACE_DETACH, self.tid, None, None)


def capability_sets(status_text):
    """{"CapEff": int, ..., "NoNewPrivs": int} from a /proc/<pid>/status text."""
    out = {}
    for line in status_text.splitlines():
        key, _, value = line.partition(":")
        if key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            out[key] = int(value.strip(), 16)
        elif key == "NoNewPrivs":
            out[key] = int(value.strip())
    return out


def children(pid):
    """The pids of a process's children (of its main thread), oldest first."""
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def io_worker(pid, tid):
    """True for the kernel's io_uring threads (PF_IO_WORKER), which are not spindle's code."""
    with open(f"/proc/{pid}/task/{tid}/stat") as f:
        stat = f.read()
    return (int(stat[stat.rindex(")") + 1:].split()[6]) & 0x10) != 0


class FailOpenTest(SimTestCase):
    needs_spindle = True

    @classmethod
    def build(cls, stack):
        cls.node = stack.enter_context(sim.Node())
        cls.client = cls.node.add_pod("client", n=2)
        cls.pods = [cls.node.add_pod(f"b{i}", n=10 + i) for i in range(3)]
        cls.echo = cls.node.add_service("echo", vip4=VIP4, ports=[PORT], backends=cls.pods)
        cls.peer = cls.node.add_service("peer", vip4=PEER_VIP4,
                                        ports={PEER_PORT: PEER_PORT, UNDECLARED_PORT: PEER_PORT},
                                        backends=[cls.pods[0]])
        cls.logs = {}
        for pod in cls.pods:
            _proc, cls.logs[pod.name] = peers.start_server(pod)
        sim.start_backend(cls.pods[0], [PEER_PORT])

    # --- helpers -------------------------------------------------------------------------

    def config(self, *, endpoints=None, declare_undeclared=False, extra=None):
        cfg = sim.spindle.config(self.node, [self.echo], heartbeat_timeout="2s", extra=extra)
        # upstream.source node: the backends seeing the node's address is how these tests tell
        # spindle's path from a direct one (in pod mode both show the Pod's address).
        cfg.setdefault("upstream", {}).setdefault("source", "node")
        cfg["services"][0]["endpoints"] = {
            "static": [f"{p.ip4}:{PORT}" for p in (endpoints or self.pods)]}
        ports = [PEER_PORT] + ([UNDECLARED_PORT] if declare_undeclared else [])
        cfg["services"].append({"name": "peer",
                                "intercept": [f"{PEER_VIP4}:{p}" for p in ports],
                                "endpoints": {"static": [f"{self.pods[0].ip4}:{PEER_PORT}"]}})
        return cfg

    def start_spindle(self, cfg=None):
        sp = sim.Spindle(self.node, cfg or self.config())
        self.addCleanup(sp.close)
        sp.start()
        return sp

    def start_prober(self, seconds):
        proc = self.client.spawn([sim.PYTHON, "-c", PROBER, PEER_VIP4, str(PEER_PORT),
                                  str(PROBE_EVERY), str(PROBE_TIMEOUT), str(seconds)],
                                 name="prober")
        self.addCleanup(proc.kill)
        return proc

    @staticmethod
    def probes(prober):
        return [json.loads(line) for line in prober.stdout().splitlines(keepends=True)
                if line.endswith("\n")]

    def via_spindle(self, probe):
        return probe["ok"] and norm_ip(probe["seen"][0]) == self.node.addr4

    def first_probe(self, prober, after, predicate, timeout, what):
        """The first probe that started after `after` (unix s) and satisfies predicate."""
        def find():
            return next((p for p in self.probes(prober) if p["t"] > after and predicate(p)),
                        None)
        return sim.wait_until(find, timeout, what=what,
                              details=lambda: "\n".join(map(json.dumps, self.probes(prober)[-12:])))

    def start_load(self, seconds, run):
        """Steady unary calls, each held 20 ms by the Pod, every one recorded."""
        proc, _ = peers.spawn_client(self.client, TARGET, "during-kill", seconds=seconds,
                                     concurrency=4, rate=150, sleep_ms=20, timeout=10,
                                     app_defaults=True, run=run)
        self.addCleanup(proc.kill)
        return proc

    def served(self, run, since=0.0):
        return [e for log in self.logs.values() for e in log.starts(run=run) if e["t"] >= since]

    def wait_flowing(self, run, prober):
        sim.wait_until(lambda: len(self.served(run)) >= 100, 20,
                       what="the app's calls reaching the Pods")
        sim.wait_until(lambda: sum(self.via_spindle(p) for p in self.probes(prober)) >= 5, 10,
                       what="fresh connects redirected to spindle")

    # --- SIGKILL -------------------------------------------------------------------------

    def test_sigkill_under_load_fresh_connects_direct_within_1s_calls_lost_only_in_flight(self):
        self.check_sigkill_under_load("privileged part")

    def test_sigkill_of_the_proxy_process_under_load_fails_open_the_same(self):
        # The proxy dies (a memory bug in the HTTP/2 path, the OOM killer): the privileged part
        # sees its channel close, destroys the links and exits.
        self.check_sigkill_under_load("proxy")

    def check_sigkill_under_load(self, victim):
        """SIGKILL of one process of spindle (the privileged part, or the proxy): the links
        go (with the privileged part, or destroyed by it), fresh connects go direct within
        1 s, and only calls in flight on spindle's connection are lost."""
        sp = self.start_spindle()
        prober = self.start_prober(seconds=12)
        run = peers.new_run("kill")
        load = self.start_load(seconds=7, run=run)
        self.wait_flowing(run, prober)
        self.assertEqual({norm_ip(peers.peer_ip(e["peer"])) for e in self.served(run)},
                         {self.node.addr4}, "the app's calls did not go through spindle")

        pid = sp.proc.pid if victim == "privileged part" else sp.proxy_pid()
        t_before = time.time()
        os.kill(pid, signal.SIGKILL)
        t_kill = time.time()
        # Dying takes a while (the rings are torn down): the kill ends when the privileged
        # part is a zombie, its links gone (killed, or exited after its proxy died; the proxy
        # dies with it). A call sent before then went to a spindle about to die.
        t_dead = sim.wait_until(lambda: zombie(sp.proc.pid) and time.time(), 5, interval=0.001,
                                what=f"spindle gone after SIGKILL of its {victim}")
        self.assertNotEqual(sp.proc.wait(5), 0, sp.tail())
        # The links went with the process: nothing of spindle's stays on the Pods' cgroup.
        self.assertEqual(bpftool_cgroup_progs(self.node.cgroup.path), [],
                         "programs still attached after spindle was killed")

        first = self.first_probe(prober, t_kill, lambda p: p.get("direct"), 5,
                                 "a fresh connect going direct after SIGKILL")
        to_direct = first["t"] - t_before
        res = peers.result(load, 40)
        prober.kill()
        later = [p for p in self.probes(prober) if p["t"] >= first["t"]]
        self.assertTrue(later and all(p.get("direct") for p in later),
                        "after the first direct connect, some were not direct and answered: "
                        + json.dumps([p for p in later if not p.get("direct")][:5]))
        self.assertLessEqual(to_direct, 1.0, f"first direct connect {to_direct:.3f} s after "
                             f"SIGKILL: {json.dumps(first)}")

        calls = res.get("calls") or []
        failed = [c for c in calls if c[3] != "OK"]
        settled = [c for c in calls if c[1] >= t_kill + 1.0]
        self.assertGreater(len(settled), 100, f"too few calls after the kill: {len(calls)} in all")
        self.assertEqual([c for c in settled if c[3] != "OK"], [],
                         "calls started 1 s after the kill failed")
        # The calls lost are those on the connection to spindle when it died: unfinished at
        # the kill, or sent on it before the client saw it close (the kernel closes a dead
        # process's sockets at once; the client reads that a few ms later). They all fail in
        # that one teardown; a failure after it would be a fresh connect that did not fail
        # open.
        at_kill = [c for c in calls if c[1] <= t_dead and c[2] >= t_before]
        if failed:
            t_seen = max(c[2] for c in failed)
            self.assertLessEqual(t_seen - t_before, 0.5,
                                 f"calls still failed {t_seen - t_before:.3f} s after the kill: "
                                 f"{failed[:10]}")
            self.assertLessEqual(t_seen - min(c[2] for c in failed), 0.1,
                                 f"failures not in one teardown: {failed[:10]}")
        else:
            t_seen = t_dead
        in_flight = [c for c in calls if c[1] <= t_seen and c[2] >= t_before]
        self.assertLessEqual(len(failed), len(in_flight),
                             f"{len(failed)} calls failed, {len(in_flight)} were in flight "
                             f"on spindle's connection: {failed[:10]}")
        # The calls after the kill reached the Pods directly, from the app's own address.
        after = {norm_ip(peers.peer_ip(e["peer"])) for e in self.served(run, since=t_kill + 1.0)}
        self.assertEqual(after, {self.client.ip4}, "calls after the kill did not go direct")
        measure(f"failopen SIGKILL of the {victim}: first fresh connect direct {to_direct * 1000:.0f} ms "
                f"after the kill (prober every {PROBE_EVERY * 1000:.0f} ms); spindle gone "
                f"{(t_dead - t_before) * 1000:.0f} ms after the signal; gRPC calls {len(calls)} "
                f"({len(calls) / max(res.get('elapsed_s') or 1, 1):.0f}/s), {len(at_kill)} "
                f"unfinished at the kill, {len(in_flight)} sent before the client saw the "
                f"connection close {(t_seen - t_before) * 1000:.0f} ms after the kill, "
                f"{len(failed)} failed {sorted({c[3] for c in failed})}")

    def test_a_dying_proxy_fails_open_before_anything_else_notices(self):
        """The privileged part stopped (it cannot hear of the death or detach; its heartbeat
        holds for 2 s more), then the proxy killed: the kernel program that watches the
        proxy's exit (spindle_proxy_exit) turns fresh connects direct at once, before the
        kernel has closed the dead proxy's listeners, and not one is sent to them."""
        self.check_proxy_death_fails_open(own_pid_namespace=False)

    def test_a_dying_proxy_fails_open_at_once_also_in_a_pid_namespace_of_its_own(self):
        """The same with spindle in a PID namespace of its own, as a container without the
        host's (upstream.source node): the program finds the proxy by its pid there."""
        self.check_proxy_death_fails_open(own_pid_namespace=True)

    def check_proxy_death_fails_open(self, own_pid_namespace):
        wrapper = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
        sp = sim.Spindle(self.node, self.config(), wrapper=wrapper if own_pid_namespace else [])
        self.addCleanup(sp.close)
        sp.start()
        # With the wrapper, sp.proc is unshare and the privileged part its child.
        privileged = children(sp.proc.pid)[0] if own_pid_namespace else sp.proc.pid
        proxy = children(privileged)[0]
        self.addCleanup(lambda: sp.proc.alive() and os.kill(privileged, signal.SIGCONT))
        prober = self.start_prober(seconds=8)
        sim.wait_until(lambda: sum(self.via_spindle(p) for p in self.probes(prober)) >= 5, 10,
                       what="fresh connects redirected to spindle")

        os.kill(privileged, signal.SIGSTOP)
        t_kill = time.time()
        os.kill(proxy, signal.SIGKILL)
        # Its parent stopped, the proxy stays a zombie: dead, its files closed.
        t_dead = sim.wait_until(lambda: zombie(proxy) and time.time(), 5, interval=0.001,
                                what="the proxy dead")
        first = self.first_probe(prober, t_kill, lambda p: p.get("direct"), 3,
                                 "a fresh connect going direct after the proxy died")
        sim.wait_until(lambda: len([p for p in self.probes(prober) if p["t"] > t_dead]) >= 10, 5,
                       what="10 probes after the proxy died")
        os.kill(privileged, signal.SIGCONT)
        self.assertNotEqual(sp.proc.wait(5), 0, sp.tail())
        prober.kill()

        to_direct = first["t"] - t_kill
        after = [p for p in self.probes(prober) if p["t"] > t_dead]
        measure("failopen proxy exit", own_pid_namespace=own_pid_namespace,
                first_direct_ms=f"{to_direct * 1000:.0f}",
                dead_ms=f"{(t_dead - t_kill) * 1000:.0f}", probes_after=len(after),
                heartbeat_timeout_s=HEARTBEAT_TIMEOUT)
        # Far sooner than the heartbeat could have gone stale (the last beat was at most
        # HEARTBEAT_INTERVAL before the stop).
        self.assertLessEqual(to_direct, PROBE_RESOLUTION, json.dumps(first))
        self.assertTrue(all(p.get("direct") for p in after),
                        "a connect after the proxy died was not direct: "
                        + json.dumps([p for p in after if not p.get("direct")][:5]))
        counters = sp.counters()
        self.assertIsNotNone(counters, sp.tail())
        self.assertGreater(counters.get("proxy_not_alive", 0), 0, counters)

    # --- SIGSTOP -------------------------------------------------------------------------

    def test_sigstop_direct_within_heartbeat_timeout_and_sigcont_redirects_again(self):
        sp = self.start_spindle()
        self.addCleanup(lambda: sp.proc.alive() and sp.signal(signal.SIGCONT))
        prober = self.start_prober(seconds=20)
        run = peers.new_run("stop")
        load = self.start_load(seconds=9, run=run)
        self.wait_flowing(run, prober)

        t_stop = time.time()
        sp.signal(signal.SIGSTOP)
        first_direct = self.first_probe(prober, t_stop, lambda p: p.get("direct"),
                                        HEARTBEAT_TIMEOUT + 3,
                                        "a fresh connect going direct while spindle is stopped")
        to_direct = first_direct["t"] - t_stop
        # Stopped a little longer, so that the app's calls on spindle's connections wait.
        time.sleep(0.5)
        t_cont = time.time()
        sp.signal(signal.SIGCONT)
        first_back = self.first_probe(prober, t_cont, self.via_spindle, 3,
                                      "a fresh connect redirected again after SIGCONT")
        to_back = first_back["t"] - t_cont
        res = peers.result(load, 40)
        prober.kill()

        probes = self.probes(prober)
        early = [p for p in probes if t_stop < p["t"] < first_direct["t"] and p.get("direct")]
        self.assertEqual(early, [])
        self.assertLessEqual(to_direct, HEARTBEAT_TIMEOUT + PROBE_RESOLUTION,
                             f"first direct connect {to_direct:.3f} s after SIGSTOP")
        # The heartbeat is what went stale: the last beat was at most one interval before
        # the stop, so nothing goes direct much earlier than timeout - interval.
        self.assertGreaterEqual(to_direct, HEARTBEAT_TIMEOUT - HEARTBEAT_INTERVAL - 0.05,
                                f"direct already {to_direct:.3f} s after SIGSTOP")
        stopped = [p for p in probes if first_direct["t"] <= p["t"] < t_cont]
        self.assertTrue(all(p.get("direct") for p in stopped),
                        "while stopped and stale, a connect was not direct: "
                        + json.dumps([p for p in stopped if not p.get("direct")][:5]))
        self.assertLessEqual(to_back, HEARTBEAT_INTERVAL + PROBE_RESOLUTION,
                             f"redirected again only {to_back:.3f} s after SIGCONT")
        self.assertTrue(sp.proc.alive(), sp.tail())

        # The app's channel stays on its connection to spindle: its calls wait while spindle
        # is stopped and go on after SIGCONT (10 s deadlines, longer than the stop).
        calls = res.get("calls") or []
        failed = [c for c in calls if c[3] != "OK"]
        held = [c for c in calls if c[1] < t_cont and c[2] > t_stop + 0.5]
        slowest = max((c[2] - c[1] for c in held), default=0.0)
        settled = [c for c in calls if c[1] >= t_cont + 1.0]
        self.assertGreater(len(settled), 50, f"too few calls after SIGCONT: {len(calls)} in all")
        self.assertEqual([c for c in settled if c[3] != "OK"], [],
                         "calls started 1 s after SIGCONT failed")
        measure(f"failopen SIGSTOP: first fresh connect direct {to_direct * 1000:.0f} ms "
                f"after the stop (heartbeat_timeout {HEARTBEAT_TIMEOUT:.0f} s, beat every "
                f"{HEARTBEAT_INTERVAL * 1000:.0f} ms, prober every {PROBE_EVERY * 1000:.0f} ms, "
                f"answer timeout {PROBE_TIMEOUT * 1000:.0f} ms); redirected again "
                f"{to_back * 1000:.0f} ms after SIGCONT; stopped {t_cont - t_stop:.2f} s; gRPC "
                f"calls on spindle's connection: {len(calls)}, {len(held)} held by the stop "
                f"(slowest {slowest:.2f} s), {len(failed)} failed {sorted({c[3] for c in failed})}")

    def test_one_worker_hung_fresh_connects_direct_within_heartbeat_timeout(self):
        # One worker thread stops (ptrace-interrupted: only that thread) while the main thread
        # and the other worker run on. Its listeners would still take their share of new
        # connects and serve none; the heartbeat must go stale for it, so that fresh connects
        # go direct, and come back when the worker does.
        sp = self.start_spindle()
        tid = worker_thread(sp.proxy_pid(), 0)
        prober = self.start_prober(seconds=12)
        sim.wait_until(lambda: sum(self.via_spindle(p) for p in self.probes(prober)) >= 5, 10,
                       what="fresh connects redirected to spindle")
        t_stop = time.time()
        tracer = ThreadStop(tid)
        self.addCleanup(tracer.resume)
        first_direct = self.first_probe(prober, t_stop, lambda p: p.get("direct"),
                                        HEARTBEAT_TIMEOUT + 3,
                                        "a fresh connect going direct while a worker hangs")
        to_direct = first_direct["t"] - t_stop
        time.sleep(1.0)
        t_resume = time.time()
        tracer.resume()
        first_back = self.first_probe(prober, t_resume, self.via_spindle, 3,
                                      "a fresh connect redirected again after the worker resumed")
        to_back = first_back["t"] - t_resume
        prober.kill()
        probes = self.probes(prober)
        # The beat after the stop may still find the worker's last round recent: one interval
        # more than a stopped process.
        self.assertLessEqual(to_direct, HEARTBEAT_TIMEOUT + HEARTBEAT_INTERVAL + PROBE_RESOLUTION,
                             f"first direct connect {to_direct:.3f} s after the worker hung")
        hung = [p for p in probes if first_direct["t"] <= p["t"] < t_resume]
        self.assertTrue(hung and all(p.get("direct") for p in hung),
                        "while the worker hung, a fresh connect was not direct: "
                        + json.dumps([p for p in hung if not p.get("direct")][:5]))
        resets = [p for p in probes if p.get("error") == "ConnectionResetError"]
        self.assertEqual(resets, [], "fresh connects were reset")
        self.assertLessEqual(to_back, 2 * HEARTBEAT_INTERVAL + PROBE_RESOLUTION,
                             f"redirected again only {to_back:.3f} s after the worker resumed")
        self.assertTrue(any("workers did not go round their loops" in line
                            for line in sp.stderr_lines()), sp.tail())
        measure(f"failopen one worker hung: first fresh connect direct {to_direct * 1000:.0f} ms "
                f"after it stopped; redirected again {to_back * 1000:.0f} ms after it resumed")

    # --- least privilege -----------------------------------------------------------------

    def test_sockets_made_in_pod_namespaces_by_the_privileged_part(self):
        # upstream.source pod: the proxy cannot enter a namespace; each of its sockets in the
        # calling Pod's namespace comes from the privileged part over the channel. 1,000
        # passthrough connections, one socket each, timed by the proxy (debug log).
        cfg = self.config()
        cfg["upstream"]["source"] = "pod"
        sp = sim.Spindle(self.node, cfg, args=["--log-level", "debug"])
        self.addCleanup(sp.close)
        sp.start()
        count = 1000
        res = self.client.run([sim.PYTHON, os.path.join(sim.REPO, "tests", "sim", "peer_dials.py"),
                               PEER_VIP4, str(PEER_PORT), str(count)], timeout=120)
        seen = json.loads(res.stdout)
        self.assertEqual(seen["answered"], count, res.stdout)
        # From the Pod's own address, on a socket spindle made (not the app's own port).
        self.assertEqual(seen["ips"], [self.client.ip4], res.stdout)
        # (spindle's socket may draw the app's ephemeral port by chance: another 4-tuple)
        self.assertLess(seen["own_port"], count // 100, "answered on the app's own "
                        "connection: not through spindle")
        times = sorted(int(m.group(1)) for line in sp.stderr_lines()
                       if (m := re.search(r"upstream socket from the privileged part in (\d+) us",
                                          line)))
        self.assertGreaterEqual(len(times), count, sp.tail())
        self.assertProxyUnprivileged(sp.proxy_pid())
        measure(f"privileged socket in a Pod namespace: {len(times)} sockets, median "
                f"{times[len(times) // 2]} us, p90 {times[len(times) * 9 // 10]} us, max "
                f"{times[-1]} us (request to fd in the proxy)")


    def assertThreadsHold(self, pid, held, *, bounding, min_threads=1):
        """Every thread of the process (not the kernel's io_uring workers) holds `held` in
        its permitted and effective sets and nothing else, `bounding` as its bounding set,
        and cannot gain privileges."""
        tasks = sorted(os.listdir(f"/proc/{pid}/task"), key=int)
        ours = [t for t in tasks if not io_worker(pid, t)]
        self.assertGreaterEqual(len(ours), min_threads, f"threads of {pid}: {tasks}")
        for tid in ours:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                sets = capability_sets(f.read())
            self.assertEqual(sets, {"CapInh": 0, "CapPrm": held, "CapEff": held,
                                    "CapBnd": bounding, "CapAmb": 0, "NoNewPrivs": 1},
                             f"thread {tid} of {pid}: " + ", ".join(
                                 f"{k} {v:#x}" for k, v in sets.items()))

    def assertProxyUnprivileged(self, pid):
        """The proxy process: every thread another user than root, no capability in any set,
        no new privileges, under a seccomp filter."""
        self.assertThreadsHold(pid, 0, bounding=0, min_threads=3)
        for tid in os.listdir(f"/proc/{pid}/task"):
            if io_worker(pid, tid):
                continue
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                status = dict(line.split(":", 1) for line in f.read().splitlines())
            self.assertEqual(status["Uid"].split(), ["65534"] * 4, f"thread {tid}: {status['Uid']}")
            self.assertEqual(status["Gid"].split(), ["65534"] * 4, f"thread {tid}: {status['Gid']}")
            self.assertEqual(status["Groups"].split(), [], f"thread {tid}: {status['Groups']}")
            self.assertEqual(status["Seccomp"].strip(), "2", f"thread {tid}: not under seccomp")

    def test_without_the_capabilities_to_run_the_proxy_unprivileged_it_refuses_to_start(self):
        # As a container granted CAP_BPF and CAP_NET_ADMIN only: the proxy could not become
        # another user and shed its bounding set, so spindle says what is missing and stops.
        sp = sim.Spindle(self.node, self.config(), wrapper=[
            "setpriv", "--inh-caps=-all", "--bounding-set=-all,+bpf,+net_admin"])
        self.addCleanup(sp.close)
        sp.start(wait_ready=False)
        self.assertEqual(sp.proc.wait(10), 1, sp.tail())
        self.assertTrue(any("missing privilege" in line and "CAP_SETUID, CAP_SETGID, "
                            "CAP_SETPCAP, CAP_KILL" in line for line in sp.stderr_lines()),
                        sp.tail())
        self.assertEqual(bpftool_cgroup_progs(self.node.cgroup.path), [],
                         "programs attached by a spindle that did not start")

    def test_proxy_holds_no_privilege_and_still_balances_counts_by_pod_reloads_exits(self):
        bpffs = Bpffs()
        self.addCleanup(bpffs.close)
        admin = {"listen": f"{self.node.addr4}:{ADMIN_PORT}"}
        cfg = self.config(extra={"admin": admin, "metrics": {"by_source": True}})
        cfg["redirect"]["pin_path"] = f"{bpffs.path}/spindle"
        sp = self.start_spindle(cfg)
        t_ready = time.monotonic()

        # The privileged part keeps what it still uses; the proxy nothing at all.
        privileged = (1 << CAP_NET_ADMIN) | (1 << CAP_KILL) | (1 << CAP_BPF)  # node mode
        self.assertThreadsHold(sp.proc.pid, privileged, bounding=privileged)
        proxy = sp.proxy_pid()
        self.assertProxyUnprivileged(proxy)

        # Balancing: upstream sockets, marked by the privileged part, reach the Pods.
        res = peers.run_client(self.client, TARGET, "unary", count=300, concurrency=4)
        self.assertTrue(res.get("ok"), json.dumps(res)[:2000])
        self.assertEqual(set(res["pods"]), {p.name for p in self.pods}, res["pods"])
        # Per-Pod counts: the workers name Pods by walking the cgroup tree, no capability.
        self.assertProxyUnprivileged(proxy)  # while it serves
        source = os.path.relpath(self.client.cgroup.path, sim.cgroup2_mount())
        metrics = http_get(self.node, self.node.addr4, ADMIN_PORT, "/metrics").text
        self.assertEqual(metric(metrics, "spindle_source_requests_total", source=source),
                         300, "calls not counted by calling Pod after the drop")
        # The unprivileged proxy still reports its privileged parent's CPU and memory (its
        # /proc/<pid>/stat, as this test reads it).
        with open(f"/proc/{sp.proc.pid}/statm") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        reported = metric(metrics, "spindle_privileged_resident_memory_bytes")
        self.assertLess(abs(reported - rss), rss / 2, f"reported {reported}, /proc says {rss}")
        self.assertGreater(metric(metrics, "spindle_privileged_cpu_seconds_total"), 0)
        # Heartbeat writes to the control map still work: redirected past the timeout.
        time.sleep(max(0.0, HEARTBEAT_TIMEOUT + 0.5 - (time.monotonic() - t_ready)))
        res = sim.dial(self.client, "peer", PEER_VIP4, PEER_PORT, timeout=2)
        self.assertEqual(norm_ip(res["seen"][0]), self.node.addr4, f"not redirected: {res}")

        # Reload rewrites the services map through its fd: a newly declared port is
        # redirected, and endpoints change.
        res = sim.dial(self.client, "peer", PEER_VIP4, UNDECLARED_PORT, timeout=2)
        self.assertEqual(res["seen"][0], self.client.ip4, f"redirected before the reload: {res}")
        new_cfg = self.config(endpoints=self.pods[:1], declare_undeclared=True,
                              extra={"admin": admin, "metrics": {"by_source": True}})
        new_cfg["redirect"]["pin_path"] = cfg["redirect"]["pin_path"]
        with open(sp.config_path + ".new", "w") as f:  # swapped in whole, as kubelet does
            f.write(sim.spindle.to_yaml(new_cfg))
        os.rename(sp.config_path + ".new", sp.config_path)
        sp.signal(signal.SIGHUP)
        sp.proc.wait_for_line(r"config reloaded", 10)
        res = sim.dial(self.client, "peer", PEER_VIP4, UNDECLARED_PORT, timeout=2)
        self.assertEqual(norm_ip(res["seen"][0]), self.node.addr4,
                         f"the reloaded intercept is not redirected: {res}")
        res = peers.run_client(self.client, TARGET, "unary", count=60, concurrency=2)
        self.assertTrue(res.get("ok"), json.dumps(res)[:2000])
        self.assertEqual(set(res["pods"]), {self.pods[0].name}, res["pods"])
        self.assertEqual([line for line in sp.stderr_lines()
                          if re.search(r"error|heartbeat", line)], [], sp.tail())

        # A clean exit after the drop: links detached, pins removed from bpffs.
        self.assertTrue(bpffs.pins(), "no map pinned while spindle ran")
        self.assertEqual(sp.stop(), 0, sp.tail())
        self.assertEqual(bpftool_cgroup_progs(self.node.cgroup.path), [],
                         "programs still attached after SIGTERM")
        self.assertEqual(bpffs.pins(), [], "spindle left its pins behind")
        res = sim.dial(self.client, "peer", PEER_VIP4, PEER_PORT, timeout=2)
        self.assertEqual(res["seen"][0], self.client.ip4, f"not direct after exit: {res}")
