"""The record of a redirected connection (where the app meant to go, and who called) lives
exactly as long as that connection: a record no accept() took must not outlive its client,
serve a later connection from the same address and port, or be pushed out by newer ones.
spindle's maps are pinned on a private bpffs here and read with bpftool.

The churn loops reset each connection as soon as it is established, as clients that time out
do: many are reset before spindle accepts them, which is what used to leave records behind."""

import json
import os
import signal
import socket
import subprocess

import sim
from sim.bpffs import Bpffs
from sim.prometheus import http_get
from support import SimTestCase, measure, metric

VIP4 = "198.19.0.10"        # service echo
OTHER_VIP4 = "198.19.0.11"  # service other
PORT = 7000
PROXY_PORT = sim.spindle.PROXY_PORT
ADMIN_PORT = 9901
CHURN_SECONDS = 40  # a bound, never reached: about 20,000 connections a second here


class RecordsTest(SimTestCase):
    needs_spindle = True

    @classmethod
    def build(cls, stack):
        cls.node = stack.enter_context(sim.Node())
        cls.client = cls.node.add_pod("client", n=2)
        cls.server = cls.node.add_pod("server", n=3)
        cls.server2 = cls.node.add_pod("server2", n=4)
        cls.echo = cls.node.add_service("echo", vip4=VIP4, ports={PORT: PORT},
                                        backends=[cls.server])
        cls.other = cls.node.add_service("other", vip4=OTHER_VIP4, ports={PORT: PORT},
                                         backends=[cls.server2])
        _proc, cls.echo_log = sim.start_backend(cls.server, [PORT])
        _proc, cls.other_log = sim.start_backend(cls.server2, [PORT])
        cls.bpffs = Bpffs()
        stack.callback(cls.bpffs.close)

    def start_spindle(self, source="node"):
        """spindle for both services, maps pinned on the test's bpffs. A heartbeat timeout
        long enough that a spindle stopped by a test still gets the connects redirected.
        upstream.source node unless asked: what a stale record would serve then reaches the
        backend, whoever made the record."""
        cfg = sim.spindle.config(self.node, [self.echo, self.other], heartbeat_timeout="30s",
                                 pin_path=f"{self.bpffs.path}/spindle",
                                 extra={"admin": {"listen": f"{self.node.addr4}:{ADMIN_PORT}"},
                                        "upstream": {"source": source}})
        sp = sim.Spindle(self.node, cfg)
        self.addCleanup(sp.close)
        sp.start()
        self.spindle = sp
        return sp

    # --- what spindle holds --------------------------------------------------------------

    def maps_dir(self):
        found = [os.path.join(root, "") for root, _dirs, files in
                 os.walk(os.path.join(self.bpffs.path, "spindle")) if "orig_by_peer" in files]
        self.assertEqual(len(found), 1, f"orig_by_peer pinned in {found}")
        return found[0]

    def dump(self, name):
        """The entries of a pinned map ('formatted' by its BTF), or None when bpftool cannot
        list them (socket storage has no keys to walk)."""
        p = subprocess.run(["bpftool", "-j", "map", "dump", "pinned", self.maps_dir() + name],
                           capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            return None
        return json.loads(p.stdout)

    def peer_records(self):
        """The client port of each record under a client's address and port."""
        return sorted(socket.ntohs(entry["formatted"]["key"]["port"])
                      for entry in self.dump("orig_by_peer"))

    def assertNoPeerRecords(self, msg, timeout=2):
        """orig_by_peer empties within timeout (a client's close removes its record at once;
        the accept of what spindle had queued takes a moment)."""
        sim.wait_until(lambda: not self.peer_records(), timeout, what=msg,
                       details=lambda: (f"{len(self.peer_records())} records, client ports "
                                        f"{self.peer_records()[:10]}..."))

    def record_counts(self):
        """Entries of every record map, for the MEASURE lines ("n/a": not listable)."""
        counts = {}
        for name in sorted(os.listdir(self.maps_dir())):
            if name.startswith("orig_by") or name == "peer_count":
                entries = self.dump(name)
                if name == "peer_count" and entries:
                    counts[name] = entries[0]["formatted"]["value"]
                else:
                    counts[name] = "n/a" if entries is None else len(entries)
        return counts

    def metrics(self):
        return http_get(self.node, self.node.addr4, ADMIN_PORT, "/metrics").text

    def counter(self, name, **labels):
        return metric(self.metrics(), name, **labels)

    def settled(self, name, **labels):
        """A counter once it stopped moving: spindle has dealt with what was queued."""
        last = [None]

        def still():
            value = self.counter(name, **labels)
            done = value == last[0]
            last[0] = value
            return done
        sim.wait_until(still, 10, interval=0.3, what=f"{name} {labels} to settle")
        return last[0]

    # --- what a Pod does -----------------------------------------------------------------

    def churn(self, count):
        """count connections to echo from the client Pod, each reset once established;
        checks that spindle redirected every one."""
        before = self.counter("spindle_redirects_total", reason="redirected")
        p = self.client.run([sim.PYTHON, sim.TCP_CONNS, "churn", VIP4, str(PORT), "--count",
                             str(count), "--seconds", str(CHURN_SECONDS)],
                            timeout=CHURN_SECONDS + 30)
        res = json.loads(p.stdout.strip().splitlines()[-1])
        self.assertEqual(res["made"], count, f"the churn fell short: {res}")
        redirected = self.counter("spindle_redirects_total", reason="redirected") - before
        self.assertEqual(redirected, count, "the churn's connects were not all redirected")
        return res

    def dial(self, place, host, port, **opts):
        argv = [sim.PYTHON, sim.TCP_CONNS, "dial", host, str(port)]
        for k, v in opts.items():
            argv += [f"--{k}"] if v is True else [f"--{k}", str(v)]
        p = place.run(argv, timeout=60)
        return json.loads(p.stdout.strip().splitlines()[-1])["dials"]

    def hold(self):
        """One connection to echo, held open; returns (proc, first report)."""
        proc = self.client.spawn([sim.PYTHON, sim.TCP_CONNS, "hold", VIP4, str(PORT), "--echo"],
                                 name="hold")
        self.addCleanup(proc.kill)
        return proc, self.report(proc, 1)

    def report(self, proc, n):
        """The hold process's n-th report (asked for with SIGUSR1 after the first)."""
        if n > 1:
            proc.signal(signal.SIGUSR1)
        proc.wait_for(lambda: len(proc.stdout_lines()) >= n, 10, what=f"report {n}")
        return json.loads(proc.stdout_lines()[n - 1])

    def assertKeepsItsAddress(self, report, when):
        self.assertEqual(report.get("peer"), [VIP4, PORT],
                         f"{when}: getpeername() no longer shows the dialled address: {report}")
        self.assertTrue(report.get("echoed"), f"{when}: the connection stopped working: {report}")

    # --- the tests -----------------------------------------------------------------------

    def test_70000_reset_connections_leave_no_record_for_a_direct_connect(self):
        # A direct connect to the proxy port is no redirected connection: it must be refused,
        # even from an address and port whose earlier connections were redirected and reset.
        self.start_spindle()
        res = self.churn(70_000)
        counts = self.record_counts()
        measure("records after 70,000 reset connections", **counts, seconds=res["seconds"])
        rejected = self.settled("spindle_downstream_connections_total", protocol="rejected")
        dials = self.dial(self.client, self.node.addr4, PROXY_PORT, count=20, send="PEER\n")
        served = [d for d in dials if d.get("data") or d.get("timeout")]
        self.assertEqual(len(served), 0, f"direct connects to the proxy port were served: "
                                         f"{served[:3]}...")
        self.assertTrue(all(d["local"] for d in dials), dials)
        self.assertEqual(self.settled("spindle_downstream_connections_total",
                                      protocol="rejected") - rejected, 20,
                         "not every direct connect was rejected as not redirected")
        self.assertNoPeerRecords("the records of the reset connections to go")

    def test_a_connection_reset_before_spindle_accepts_it_leaves_no_record(self):
        sp = self.start_spindle()
        sp.signal(signal.SIGSTOP)  # accepts nothing until SIGCONT; the kernel still connects
        self.addCleanup(sp.signal, signal.SIGCONT)
        proc = self.client.spawn([sim.PYTHON, sim.TCP_CONNS, "dial", VIP4, str(PORT), "--hold",
                                  "--count", "1"], name="held")
        self.addCleanup(proc.kill)
        proc.wait_for(lambda: proc.stdout_lines(), 10, what="the connection")
        local = json.loads(proc.stdout_lines()[0])["dials"][0]["local"]
        self.assertIsNotNone(local, proc.stdout())
        self.assertIn(local[1], self.peer_records(),
                      "the connection waiting for spindle has no record")
        proc.kill()  # SO_LINGER 0: the connection is reset, still in spindle's queue
        self.assertNoPeerRecords("the reset connection's record to go")
        self.assertEqual(self.record_counts()["peer_count"], 0)
        sp.signal(signal.SIGCONT)
        # spindle finds the reset connection without a record, and serves new ones.
        dials = self.dial(self.client, VIP4, PORT, count=1, send="PEER\n")
        self.assertTrue(dials[0].get("data", "").startswith(self.node.addr4 + " "), dials)

    def test_a_long_lived_connection_keeps_its_address_through_100000_others(self):
        self.start_spindle()
        proc, first = self.hold()
        self.assertKeepsItsAddress(first, "at once")
        res = self.churn(100_000)
        self.assertKeepsItsAddress(self.report(proc, 2), "after 100,000 newer connections")
        metrics = self.metrics()
        self.assertGreaterEqual(metric(metrics, "spindle_downstream_connections_active",
                                       protocol="passthrough"), 1,
                                "the long-lived connection does not go through spindle")
        self.assertEqual(metric(metrics, "spindle_redirects_total", reason="map_full"), 0)
        measure("records after 100,000 reset connections, one held", **self.record_counts(),
                seconds=res["seconds"])

    def test_a_new_pod_given_a_dead_pods_address_is_served_by_its_own_records_only(self):
        # Pod mode: a connection is served from its caller's own network namespace, found
        # through its record, so a served connection was attributed to that caller.
        sp = self.start_spindle(source="pod")
        n = 20
        gone = self.node.add_pod("gone", n=n)
        sp.signal(signal.SIGSTOP)
        self.addCleanup(sp.signal, signal.SIGCONT)
        held = gone.spawn([sim.PYTHON, sim.TCP_CONNS, "dial", VIP4, str(PORT), "--hold",
                           "--count", "8", "--send", "PEER\n"], name="gone-conns")
        held.wait_for(lambda: held.stdout_lines(), 10, what="the dead Pod's connections")
        ports = [d["local"][1] for d in json.loads(held.stdout_lines()[0])["dials"]]
        self.assertTrue(set(ports) <= set(self.peer_records()),
                        "the waiting connections have no records")
        gone.close()  # the Pod dies: its processes are killed, their connections reset
        self.assertNoPeerRecords("the dead Pod's records to go")
        sp.signal(signal.SIGCONT)
        rejected = self.settled("spindle_downstream_connections_total", protocol="rejected")

        new = self.node.add_pod("new", n=n)
        self.assertEqual(new.ip4, gone.ip4)
        ports_arg = ",".join(map(str, ports))
        # Straight to the proxy port from the dead Pod's address and ports: no record serves it.
        dials = self.dial(new, self.node.addr4, PROXY_PORT, ports=ports_arg, send="PEER\n")
        self.assertEqual([d for d in dials if d.get("data") or d.get("timeout")], [], dials)
        self.assertEqual(self.settled("spindle_downstream_connections_total",
                                      protocol="rejected") - rejected, 8,
                         "a direct connect was taken for a redirected one")
        # Its own connections from the same ports, to either service: served by that service,
        # from the new Pod's own namespace.
        for vip, log in ((OTHER_VIP4, self.other_log), (VIP4, self.echo_log)):
            mark = log.count()
            dials = self.dial(new, vip, PORT, ports=ports_arg, send="PEER\n")
            for d in dials:
                self.assertTrue(d.get("data", "").startswith(new.ip4 + " "),
                                f"{vip}: not served from the new Pod: {d}")
            peers = [e["peer"] for e in log.since(mark) if e["cmd"] == "PEER"]
            self.assertEqual(peers, [new.ip4] * len(ports), f"{vip}: served by another service")
        self.assertEqual(self.counter("spindle_upstream_socket_failures_total"), 0,
                         "a connection was served with a gone Pod's record")

    def test_after_100000_connections_a_new_one_keeps_its_address_and_no_map_filled(self):
        self.start_spindle()
        res = self.churn(100_000)
        counts = self.record_counts()
        measure("records after 100,000 reset connections", **counts, seconds=res["seconds"])
        self.assertNoPeerRecords("the records of the reset connections to go")
        self.assertEqual(self.record_counts()["peer_count"], 0)
        proc, first = self.hold()
        self.assertKeepsItsAddress(first, "a connection after 100,000 others")
        metrics = self.metrics()
        self.assertGreaterEqual(metric(metrics, "spindle_downstream_connections_active",
                                       protocol="passthrough"), 1,
                                "the new connection does not go through spindle")
        self.assertEqual(metric(metrics, "spindle_redirects_total", reason="map_full"), 0,
                         "a record could not be stored")
