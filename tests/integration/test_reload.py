"""Live config reload: SIGHUP or a change of the file (also the way a Kubernetes ConfigMap
volume updates it, by swapping a "..data" symlink) applies a new config without a restart;
a broken file changes nothing."""

import os
import signal
import time

import sim
from support import PORT, VIP4, NodeTestCase

RELOADED = r"spindle: info: config reloaded"
RELOAD_FAILED = r"spindle: error: config reload .*the running config stays"


class ReloadTest(NodeTestCase):
    needs_spindle = True

    def config_without_services(self):
        cfg = self.spindle_config()
        cfg["services"] = []
        return cfg

    def with_echo(self):
        return self.spindle_config()  # the echo service at VIP4:PORT

    def write(self, path, cfg):
        text = cfg if isinstance(cfg, str) else sim.spindle.to_yaml(cfg)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)  # what an editor or kubectl does: the file changes at once

    def wait_reloaded(self, sp, count):
        sim.wait_until(lambda: len([l for l in sp.stderr_lines() if "config reloaded" in l]) >= count,
                       5, what=f"{count} reloads", details=sp.tail)

    def test_sighup_adding_a_service_starts_redirecting_it(self):
        sp = self.start_spindle(self.config_without_services())
        self.assertDirect(self.dial("peer", VIP4))
        with open(sp.config_path, "w") as f:
            f.write(sim.spindle.to_yaml(self.with_echo()))
        sp.signal(signal.SIGHUP)
        self.wait_reloaded(sp, 1)
        self.assertVia(self.dial("peer", VIP4), self.node.addr4)

    def test_file_change_removing_a_service_stops_redirecting_it(self):
        sp = self.start_spindle(self.with_echo())
        self.assertVia(self.dial("peer", VIP4), self.node.addr4)
        self.write(sp.config_path, self.config_without_services())
        self.wait_reloaded(sp, 1)  # no signal: the file watch did it
        self.assertDirect(self.dial("peer", VIP4))

    def test_broken_file_keeps_everything_serving(self):
        sp = self.start_spindle(self.with_echo())
        self.write(sp.config_path, "proxy:\n  listen: [\n")  # not YAML
        sim.wait_until(lambda: any("the running config stays" in l for l in sp.stderr_lines()),
                       5, what="the reload to be refused", details=sp.tail)
        sp.signal(signal.SIGHUP)
        sim.wait_until(lambda: sum("the running config stays" in l for l in sp.stderr_lines()) >= 2,
                       5, what="the SIGHUP reload to be refused", details=sp.tail)
        self.assertTrue(sp.proc.alive(), sp.tail())
        self.assertVia(self.dial("peer", VIP4), self.node.addr4)

    def test_configmap_symlink_swap_is_followed(self):
        # A ConfigMap volume: dir/spindle.yaml -> ..data/spindle.yaml, ..data -> ..<stamp>;
        # an update writes a new ..<stamp>, points ..data_tmp at it and renames it over ..data.
        root = os.path.join(self.node.logdir, f"configmap-{time.monotonic_ns()}")
        os.makedirs(root)

        def publish(stamp, cfg):
            data = os.path.join(root, f"..{stamp}")
            os.makedirs(data)
            with open(os.path.join(data, "spindle.yaml"), "w") as f:
                f.write(sim.spindle.to_yaml(cfg))
            tmp = os.path.join(root, "..data_tmp")
            os.symlink(f"..{stamp}", tmp)
            os.replace(tmp, os.path.join(root, "..data"))

        publish("1", self.config_without_services())
        os.symlink("..data/spindle.yaml", os.path.join(root, "spindle.yaml"))
        sp = sim.Spindle(self.node, self.config_without_services())
        sp.config_path = os.path.join(root, "spindle.yaml")
        self.addCleanup(sp.close)
        sp.start()
        self.assertDirect(self.dial("peer", VIP4))
        publish("2", self.with_echo())
        self.wait_reloaded(sp, 1)
        self.assertVia(self.dial("peer", VIP4), self.node.addr4)

    def test_reload_keeps_open_connections_and_their_service(self):
        sp = self.start_spindle(self.with_echo())
        # A connection redirected before the reload, still open after it, keeps working.
        proc = self.client.spawn([sim.PYTHON, sim.TCP_CLIENT, "source", VIP4, str(PORT),
                                  "--bytes", str(4 << 20), "--after", "1024"], name="long")
        cfg = self.with_echo()
        cfg["services"].insert(0, {"name": "other", "intercept": ["198.19.0.99:7000"],
                                   "endpoints": {"static": ["198.18.1.3:7000"]}})
        self.write(sp.config_path, cfg)
        self.wait_reloaded(sp, 1)
        proc.wait(20)
        self.assertIn('"ok": true', proc.stdout(), proc.tail())
        self.assertVia(self.dial("peer", VIP4), self.node.addr4)
