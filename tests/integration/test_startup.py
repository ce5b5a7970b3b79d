"""spindle refuses to start, with one clear line and exit code 1, when it cannot do its job:
a bad config, an address it cannot bind, no cgroup v2, no privilege, io_uring refused.
And whatever it got as far as attaching is gone when it exits."""

import os
import re
import subprocess
import tempfile

import sim
from sim.bpffs import Bpffs
from support import VIP4, NodeTestCase, bpftool_cgroup_progs

START_TIMEOUT = 15  # seconds for spindle to give up


class StartupTest(NodeTestCase):
    needs_spindle = True

    def run_spindle(self, cfg, *, wrapper=(), config_name="spindle.yaml"):
        """Runs spindle in the node netns until it exits; returns (Spindle, rc, stderr lines)."""
        self.attached_before = self.attached()
        sp = sim.Spindle(self.node, cfg, wrapper=wrapper, name=config_name.split(".")[0])
        self.addCleanup(sp.close)
        sp.start(wait_ready=False)
        # Exited, or ready (and so not going to exit: fail now rather than at the deadline).
        sim.wait_until(lambda: not sp.proc.alive() or any(
            "spindle: info: ready" in line for line in sp.stderr_lines()),
            START_TIMEOUT, what="spindle to exit", details=sp.tail)
        if sp.proc.alive():
            self.running = sp
            self.fail(f"spindle started although it should have refused to\n{sp.tail()}")
        return sp, sp.proc.returncode, sp.stderr_lines()

    def attached(self):
        return sorted(p["id"] for p in bpftool_cgroup_progs(self.node.cgroup.path))

    def assertStartupError(self, sp, rc, lines, *patterns):
        """Exit 1, exactly one `spindle: error:` line matching every pattern (case-insensitive),
        never ready, nothing of its own left attached to the test cgroup."""
        tail = sp.tail()
        self.assertEqual(rc, 1, f"exit code {rc}, expected 1\n{tail}")
        errors = [line for line in lines if line.startswith("spindle: error: ")]
        self.assertEqual(len(errors), 1, f"expected exactly one error line\n{tail}")
        for p in patterns:
            self.assertRegex(errors[0], re.compile(p, re.I), tail)
        self.assertFalse(any("spindle: info: ready" in line for line in lines), tail)
        self.assertEqual(self.attached(), self.attached_before,
                         f"programs left attached after a failed start\n{tail}")
        return errors[0]

    def test_unknown_config_key_names_file_line_and_key(self):
        cfg = sim.spindle.to_yaml(self.spindle_config()).splitlines()
        # an unknown key inside proxy:, on line 2 of the file
        self.assertEqual(cfg[0], "proxy:")
        cfg.insert(1, "  bogus_knob: 3")
        sp, rc, lines = self.run_spindle("\n".join(cfg) + "\n", config_name="unknown-key.yaml")
        err = self.assertStartupError(sp, rc, lines, r"bogus_knob")
        self.assertIn(f"{sp.config_path}:2:", err)

    def test_unbindable_proxy_address_is_named(self):
        cfg = self.spindle_config(listen=["198.18.99.99:15001"])
        sp, rc, lines = self.run_spindle(cfg, config_name="unbindable.yaml")
        self.assertStartupError(sp, rc, lines, re.escape("198.18.99.99:15001"))

    def test_cgroup_that_is_not_cgroup_v2_is_refused(self):
        with tempfile.TemporaryDirectory(prefix=sim.paths.NETNS_PREFIX) as not_a_cgroup:
            cfg = self.spindle_config(cgroup=not_a_cgroup)
            sp, rc, lines = self.run_spindle(cfg, config_name="not-cgroup2.yaml")
            self.assertStartupError(sp, rc, lines, r"cgroup ?v?2", re.escape(not_a_cgroup))

    def test_missing_privilege_is_named(self):
        wrapper = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                   "--inh-caps=-all"]
        sp, rc, lines = self.run_spindle(self.spindle_config(), wrapper=wrapper,
                                         config_name="unprivileged.yaml")
        self.assertStartupError(sp, rc, lines, r"privilege|capabilit|CAP_")

    def test_io_uring_asked_for_and_refused_is_named(self):
        # proxy.io_engine auto would run on epoll (test_grpc); io_uring asked for is kept to.
        cfg = self.spindle_config()
        cfg["proxy"]["io_engine"] = "io_uring"
        wrapper = [sim.PYTHON, sim.NO_IO_URING]
        sp, rc, lines = self.run_spindle(cfg, wrapper=wrapper, config_name="no-io-uring.yaml")
        self.assertStartupError(sp, rc, lines, re.escape(
            "proxy.io_engine is io_uring, which cannot run here: io_uring_setup: Operation not "
            "permitted (seccomp or kernel.io_uring_disabled)"))

    def test_a_good_config_does_start(self):
        # The control for the tests above: the same config without the fault starts.
        sp = self.start_spindle()
        self.assertEqual(sp.proc.stop(5), 0, sp.tail())

    def test_second_instance_on_the_same_node_refuses_to_start(self):
        # Two spindles on one node (a DaemonSet update with surge, a manual run next to the
        # DaemonSet) would each attach programs and share the proxy port through
        # SO_REUSEPORT: a redirect recorded by one and accepted by the other is rejected, and
        # the Pod's call fails. The second one must refuse, and the first keep serving.
        first = self.start_spindle()
        self.assertVia(self.dial("peer", VIP4), self.node.addr4)
        self.running = None
        try:
            sp, rc, lines = self.run_spindle(self.spindle_config(), config_name="second.yaml")
        except AssertionError as e:
            if self.running is None:
                raise
            # Show what the Pods get while both run.
            results = [self.dial("peer", VIP4, timeout=1) for _ in range(6)]
            failed = [r.get("error") for r in results if not r.get("ok")]
            raise AssertionError(f"{e}\nwhile both run, {len(failed)} of 6 Pod connects "
                                 f"failed: {failed}") from None
        self.assertStartupError(sp, rc, lines, r"15001|already|another|in use")
        for _ in range(6):
            self.assertVia(self.dial("peer", VIP4, timeout=2), self.node.addr4,
                           "the first spindle must keep serving")
        self.assertTrue(first.proc.alive(), first.tail())


# A CNI's socket load balancer, as far as spindle can tell: another program on connect4 of
# the cgroup, attached before spindle's. This one lets every connect be.
OTHER_CONNECT4 = """
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("cgroup/connect4")
int cni_connect4(struct bpf_sock_addr *ctx) { return 1; }
char LICENSE[] SEC("license") = "GPL";
"""


class StartupWarningTest(NodeTestCase):
    needs_spindle = True

    def test_a_connect_program_that_runs_before_spindles_is_named(self):
        workdir = tempfile.mkdtemp(dir=self.node.logdir)
        source, obj = os.path.join(workdir, "other.bpf.c"), os.path.join(workdir, "other.bpf.o")
        with open(source, "w") as f:
            f.write(OTHER_CONNECT4)
        subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-idirafter",
                        "/usr/include/x86_64-linux-gnu", "-c", source, "-o", obj],
                       check=True, capture_output=True, timeout=60)
        bpffs = Bpffs("bpffs-other")
        self.addCleanup(bpffs.close)
        pinned = os.path.join(bpffs.path, "cni_connect4")
        subprocess.run(["bpftool", "prog", "load", obj, pinned, "type", "cgroup/connect4"],
                       check=True, capture_output=True, timeout=30)
        cgroup = self.node.cgroup.path
        subprocess.run(["bpftool", "cgroup", "attach", cgroup, "connect4", "pinned", pinned,
                        "multi"], check=True, capture_output=True, timeout=30)
        self.addCleanup(subprocess.run, ["bpftool", "cgroup", "detach", cgroup, "connect4",
                                         "pinned", pinned], capture_output=True, timeout=30)
        sp = self.start_spindle()
        warnings = [line for line in sp.stderr_lines()
                    if "runs before spindle's on connect()" in line]
        self.assertEqual(len(warnings), 1, sp.tail())
        self.assertIn("cni_connect4 (connect4, id ", warnings[0])
        # It is a warning, not a refusal: spindle serves (here the other program lets the
        # connect be, so spindle's rewrite still happens).
        self.assertVia(self.dial("peer", VIP4), self.node.addr4)

    def test_no_warning_when_spindles_programs_run_first(self):
        sp = self.start_spindle()
        self.assertFalse([line for line in sp.stderr_lines()
                          if "runs before spindle's on connect()" in line], sp.tail())
