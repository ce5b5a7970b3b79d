"""Shared fixtures and assertions for the integration tests."""

import contextlib
import functools
import ipaddress
import json
import os
import subprocess
import sys
import traceback
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
if os.path.dirname(HERE) not in sys.path:
    sys.path.insert(0, os.path.dirname(HERE))

import sim  # noqa: E402

VIP4 = "198.19.0.10"
VIP6 = "2001:2:0:ff::10"
VIP4_MAPPED = "::ffff:" + VIP4
PORT = 7000            # declared to spindle
UNDECLARED_PORT = 7001  # DNAT'd by the node to the same backend, not declared to spindle


def norm_ip(ip):
    """198.18.1.2 for both "198.18.1.2" and "::ffff:198.18.1.2"; IPv6 in compressed form."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        return str(addr.ipv4_mapped)
    return str(addr)


def spindle_missing():
    return not os.access(sim.SPINDLE_BIN, os.X_OK)


@functools.lru_cache(maxsize=None)
def grpcio_missing():
    """True when Debian's interpreter cannot import grpc (python3-grpcio); asked once."""
    p = subprocess.run([sim.PYTHON, "-c", "import grpc"], capture_output=True, timeout=60)
    return p.returncode != 0


def expected_build():
    """(version, revision) that build/bin/spindle must report, found the way the Makefile
    finds them but on its own: VERSION and REVISION from the environment (`VERSION=1.2.3 make
    test`), else `git describe --tags --always --dirty` and the commit of the checkout. None
    outside a git checkout without VERSION and REVISION."""
    def git(*args):
        p = subprocess.run(["git", "-C", sim.REPO, *args], capture_output=True, text=True,
                           timeout=30)
        return p.stdout.strip() if p.returncode == 0 else ""
    in_git = os.path.exists(os.path.join(sim.REPO, ".git"))
    version = os.environ.get("VERSION") or \
        (git("describe", "--tags", "--always", "--dirty") if in_git else "")
    revision = os.environ.get("REVISION") or (git("rev-parse", "HEAD") if in_git else "")
    return (version, revision) if version and revision else None


def without_dirty(version):
    """The version without git's "-dirty": a binary built before a file was edited, or after,
    is still the build of that commit (a new commit changes the rest)."""
    return version.removesuffix("-dirty")


def measure(text, **figures):
    """A measurement line on stdout with the PASS/FAIL lines, greppable as MEASURE, never
    asserted: `MEASURE text`, then `key=value` for each of figures."""
    print(" ".join(["MEASURE", text] + [f"{k}={v}" for k, v in figures.items()]), flush=True)


def metric(text, name, **labels):
    """The sum of the series `name` in Prometheus text whose label text includes each of
    labels as `key="value"`."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")) and \
                all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def zombie(pid):
    """The process has exited (its files are closed) and is not reaped yet."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    return stat[stat.rindex(")") + 2] == "Z"


def bpftool_cgroup_progs(path):
    """Programs attached directly to the cgroup at path (bpftool cgroup show)."""
    p = subprocess.run(["bpftool", "-j", "cgroup", "show", path], capture_output=True,
                       text=True, timeout=30)
    if p.returncode != 0:
        raise AssertionError(f"bpftool cgroup show {path} failed: {p.stderr.strip()}")
    text = p.stdout.strip()
    return json.loads(text) if text else []


class SimTestCase(unittest.TestCase):
    """A test class with one fixture for all its tests, built in build(stack) by subclasses.

    Not root, or spindle not built (for needs_spindle classes), skips every test of the
    class; a fixture that fails to build fails every test of the class with its traceback
    (rather than one anonymous setUpClass error)."""

    needs_spindle = False
    maxDiff = None

    @classmethod
    def setUpClass(cls):
        cls._skip_reason = None
        cls._fixture_error = None
        cls._stack = contextlib.ExitStack()
        if os.geteuid() != 0:
            cls._skip_reason = "needs root"
            return
        if cls.needs_spindle and spindle_missing():
            if os.environ.get("SPINDLE_REQUIRED") == "1":
                cls._fixture_error = f"{sim.SPINDLE_BIN} is missing (make build/bin/spindle)"
            else:
                cls._skip_reason = f"{sim.SPINDLE_BIN} not built"
            return
        try:
            cls.build(cls._stack)
        except BaseException:
            cls._fixture_error = traceback.format_exc()
            try:
                cls._stack.close()
            except Exception:
                cls._fixture_error += "\nand its clean-up failed:\n" + traceback.format_exc()
            if not isinstance(sys.exc_info()[1], Exception):
                raise  # KeyboardInterrupt: stop the run

    @classmethod
    def tearDownClass(cls):
        cls._stack.close()

    @classmethod
    def build(cls, stack):
        """Subclasses: make the class fixture, registering undo actions on stack."""

    def setUp(self):
        if self._skip_reason:
            self.skipTest(self._skip_reason)
        if self._fixture_error:
            self.fail("class fixture failed:\n" + self._fixture_error)

    # --- assertions ----------------------------------------------------------------------

    def assertOk(self, res, what="client"):
        self.assertTrue(res.get("ok"), f"{what} failed: {json.dumps(res, sort_keys=True)}")

    def assertDirect(self, res, msg=""):
        """The backend saw the client's own address and port: no proxy in between."""
        self.assertOk(res)
        seen = (norm_ip(res["seen"][0]), res["seen"][1])
        local = (norm_ip(res["local"][0]), res["local"][1])
        self.assertEqual(seen, local, f"not direct: backend saw {seen}, client is {local}. "
                                      f"{msg}\n{json.dumps(res, sort_keys=True)}")

    def assertOnlyInFlightCallsFailed(self, kill, victim, race_window, summary, *,
                                      each_unavailable=False):
        """After peers.kill_mid_run of the backend `victim`: it had calls in flight, and a
        call failed only if the victim's handler had it (spindle must not retry what an
        endpoint may have done) or if it started from race_window s before the kill until
        the victim was reaped (written to its socket as it died); each failed at once, after
        the kill, and UNAVAILABLE when each_unavailable. No call that started after the
        victim was gone failed or was answered by it."""
        self.assertGreater(len(kill.in_handler), 0, f"{victim} had no call in flight: {summary}")
        self.assertEqual(kill.res["mismatches"], [], summary)
        for cid, t0, t1, code, pod in kill.failed:
            what = (f"call {cid} [{t0 - kill.t_kill:+.3f}s..{t1 - kill.t_kill:+.3f}s from the "
                    f"kill] {code}")
            self.assertTrue(cid in kill.in_handler
                            or (kill.t_kill - race_window <= t0 <= kill.t_dead),
                            f"{what} failed but was not in flight on {victim}. {summary}")
            self.assertGreaterEqual(t1, kill.t_kill, f"{what} failed before the kill. {summary}")
            self.assertLess(t1 - kill.t_kill, 1.0, f"{what}: took long to fail. {summary}")
            if each_unavailable:
                self.assertEqual(code, "UNAVAILABLE", f"{what}: not UNAVAILABLE. {summary}")
        self.assertEqual([c for c in kill.after if c[3] != "OK"], [],
                         f"calls that started after {victim} was gone failed. {summary}")
        self.assertFalse([c for c in kill.after if c[4] == victim],
                         f"calls answered by {victim} after it was killed. {summary}")

    def assertVia(self, res, proxy_ip, msg=""):
        """The backend saw proxy_ip, not the client: the connection went through the proxy."""
        self.assertOk(res)
        seen = (norm_ip(res["seen"][0]), res["seen"][1])
        local = (norm_ip(res["local"][0]), res["local"][1])
        self.assertNotEqual(seen, local, f"not redirected: backend saw the client itself. {msg}")
        self.assertEqual(seen[0], norm_ip(proxy_ip), f"backend saw {seen}, not the proxy "
                                                     f"{proxy_ip}. {msg}")


class NodeTestCase(SimTestCase):
    """One node with a client Pod (198.18.1.2), a backend Pod (198.18.1.3) running
    tcp_backend on PORT, and Service echo: VIP4/VIP6 at PORT and UNDECLARED_PORT, both to
    the backend's PORT."""

    @classmethod
    def build(cls, stack):
        cls.node = stack.enter_context(sim.Node())
        cls.client = cls.node.add_pod("client", n=2)
        cls.server = cls.node.add_pod("server", n=3)
        cls.echo = cls.node.add_service("echo", vip4=VIP4, vip6=VIP6,
                                        ports={PORT: PORT, UNDECLARED_PORT: PORT},
                                        backends=[cls.server])
        cls.backend, cls.backend_log = sim.start_backend(cls.server, [PORT])

    def spindle_config(self, **kw):
        """upstream.source node: these suites test the redirect itself, and a connection
        spindle made is told from the client's own by the address the backend saw (the
        node's). In pod mode both would show the Pod's address, and even the port may be the
        same (another 4-tuple). Pod mode's path is proved by the gRPC suites."""
        cfg = sim.spindle.config(self.node, **kw)
        if "services" not in kw or not cfg["services"]:
            cfg["services"] = [sim.spindle.service_config(self.echo, port=PORT)]
        cfg.setdefault("upstream", {}).setdefault("source", "node")
        return cfg

    def start_spindle(self, cfg=None, **kw):
        """Starts spindle with cfg (default: spindle_config()) and waits until ready; it is
        killed at the end of the test if still running."""
        sp = sim.Spindle(self.node, cfg or self.spindle_config(), **kw)
        self.addCleanup(sp.close)
        sp.start()
        return sp

    def dial(self, op, host, port=PORT, *, place=None, **opts):
        opts.setdefault("timeout", 5)
        return sim.dial(place or self.client, op, host, port, **opts)
