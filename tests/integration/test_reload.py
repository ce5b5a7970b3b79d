"""Live config reload: SIGHUP or a change of the file (also the way a Kubernetes ConfigMap
volume updates it, by swapping a "..data" symlink) applies a new config without a restart;
a broken file changes nothing."""

import json
import os
import signal
import subprocess
import time

import sim
from sim.bpffs import Bpffs
from support import PORT, VIP4, NodeTestCase

H2_PREFACE = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
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

    def test_json_logs_from_both_processes_then_text_again_on_reload(self):
        # log.format json: every line either process writes is one JSON object a log pipeline
        # indexes (time, level, msg, and fields where the event has them); a reload to text
        # takes effect at once.
        cfg = self.with_echo()
        cfg["log"] = {"format": "json"}
        sp = sim.Spindle(self.node, cfg)
        self.addCleanup(sp.close)
        sp.start(wait_ready=False)

        def records():
            return [json.loads(line) for line in sp.stderr_lines()]
        sim.wait_until(lambda: any(r["msg"].startswith("ready:") for r in records()), 10,
                       what="a JSON 'ready' line", details=sp.tail)
        for r in records():
            self.assertEqual(set(r) & {"time", "level", "msg"}, {"time", "level", "msg"}, r)
            self.assertRegex(r["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        msgs = [r["msg"] for r in records()]
        self.assertTrue(any(m.startswith("proxy process started") for m in msgs), msgs)  # privileged
        self.assertTrue(any(m.startswith("proxy: running as uid") for m in msgs), msgs)  # proxy
        # An event with a field: a connect straight to the proxy port is rejected.

        def rejected():
            self.dial("raw", self.node.addr4, sim.spindle.PROXY_PORT, send="x\n", timeout=5)
            return next((r for r in records() if r["msg"].startswith("rejected connection")),
                        None)
        record = sim.wait_until(rejected, 5, interval=0.25, what="a JSON rejection line",
                                details=sp.tail)
        self.assertEqual((record["level"], record["reason"]), ("warn", "not redirected"), record)
        # An event about a calling Pod names it in `source`: the client Pod's connection to
        # the service starts HTTP/2, then sends a frame over the size limit.
        source = os.path.relpath(self.client.cgroup.path, sim.cgroup2_mount())

        def violation():
            self.dial("raw", VIP4, send=H2_PREFACE + "\x01\x01\x01\x01\x01\x01\x01\x01\x01",
                      timeout=5)
            return next((r for r in records() if "closing HTTP/2 connection" in r["msg"]), None)
        record = sim.wait_until(violation, 5, interval=0.25, what="a JSON violation line",
                                details=sp.tail)
        self.assertEqual((record["level"], record.get("source")), ("warn", source), record)
        self.assertNotIn("endpoint", record)  # the client's side: no endpoint involved
        print(f"MEASURE json_log {json.dumps(record)}")
        # An error with its reason: a file that does not parse.
        self.write(sp.config_path, "proxy:\n  listen: [\n")
        failed = sim.wait_until(lambda: next((r for r in records() if r["level"] == "error"), None),
                                5, what="a JSON reload error", details=sp.tail)
        self.assertEqual(failed["reason"], "file changed", failed)
        for level in ("info", "warn", "error"):
            first = next(r for r in records() if r["level"] == level)
            print(f"MEASURE json_log {json.dumps(first)}")

        lines = len(sp.stderr_lines())
        self.write(sp.config_path, self.with_echo())
        sim.wait_until(lambda: any(line.startswith("spindle: info: config reloaded")
                                   for line in sp.stderr_lines()[lines:]), 5,
                       what="a text 'config reloaded' line", details=sp.tail)

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

    def test_a_services_map_update_that_fails_midway_leaves_nothing_behind(self):
        # A reload declares more intercept addresses than the kernel's services map holds
        # (4096): the update fails partway, and is reported. What did go in must not stay
        # there for good: the next reload, back to the one service, leaves its two addresses
        # and nothing else.
        bpffs = Bpffs("bpffs-reload")
        self.addCleanup(bpffs.close)
        cfg = self.with_echo()
        cfg["redirect"]["pin_path"] = f"{bpffs.path}/spindle"
        sp = self.start_spindle(cfg)

        def service_entries():
            maps = [os.path.join(root, "services") for root, _, files in os.walk(bpffs.path)
                    if "services" in files]
            self.assertEqual(len(maps), 1, maps)
            out = subprocess.run(["bpftool", "-j", "map", "dump", "pinned", maps[0]],
                                 capture_output=True, text=True, timeout=60, check=True).stdout
            return len(json.loads(out))

        self.assertEqual(service_entries(), 2)  # VIP4 and VIP6 of echo
        big = self.with_echo()
        big["redirect"]["pin_path"] = cfg["redirect"]["pin_path"]
        big["services"][0]["intercept"] = [f"198.19.{100 + i // 250}.{1 + i % 250}:{PORT}"
                                           for i in range(4200)]
        self.write(sp.config_path, big)
        sim.wait_until(lambda: any("adding" in l and "services map" in l
                                   for l in sp.stderr_lines()),
                       10, what="the failed services map update", details=sp.tail)
        self.assertGreater(service_entries(), 2)
        self.write(sp.config_path, cfg)
        self.wait_reloaded(sp, 2)
        self.assertEqual(service_entries(), 2, "addresses of the failed update stayed behind")
        self.assertVia(self.dial("peer", VIP4), self.node.addr4)
