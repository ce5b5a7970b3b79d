"""Per-service policies with real gRPC: how spindle balances, ejects failing endpoints,
retries what an endpoint never processed, and passes deadlines on.

The peers are tests/grpc/server.py in three backend Pods (b1-b3, 198.18.1.3-5) and
tests/grpc/client.py (one channel) in a client Pod; spindle balances every call over
`endpoints.static`. The servers log every call they see, so each test counts at the backends
what the client cannot see: which endpoint got a call, when, and how many. Each test starts
its own servers (flags: --delay-ms, --unavailable-file, --grace, --dispatch-delay-ms) and its
own spindle, with the service settings it is about.

Figures a reader wants to compare across runs are printed as `MEASURE name key=value ...`.

Run as a script, this file is also a one-call raw HTTP/2 gRPC client (python3-h2), for the
requests grpcio cannot be made to send (an exact grpc-timeout):

    test_policies.py h2-call HOST PORT --call-id ID [--grpc-timeout 1n]
"""

import argparse
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# tests/ and tests/grpc, also when this file runs as a script in a Pod.
for _path in (os.path.join(TESTS, "grpc"), TESTS):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import sim  # noqa: E402
from sim.prometheus import http_get  # noqa: E402
from support import SimTestCase, measure, metric  # noqa: E402
import echo_service as es  # noqa: E402  (tests/grpc)
import peers  # noqa: E402

VIP4 = "198.19.0.10"
PORT = 50051
ADMIN_PORT = 9901
TARGET = peers.target(VIP4, PORT)
BACKENDS = ("b1", "b2", "b3")  # Pods 198.18.1.3-5

# One slow backend among fast ones: every Unary call waits this long before it answers.
FAST_MS, SLOW_MS = 2, 20
SHARE_CALLS = 2000
SHARE_CONCURRENCY = 12
SLOW_SHARE_MAX = 0.20             # least_request, peak_ewma: the slow backend's share at most
THIRD_LOW, THIRD_HIGH = 0.28, 0.39  # round_robin, random: about a third

KILL_RATE = 500  # calls/s, paced by the client
RACE_WINDOW = 0.050  # s; see test_backend_killed_...


@functools.lru_cache(maxsize=None)
def peers_missing():
    p = subprocess.run([sim.PYTHON, "-c", "import grpc, h2"], capture_output=True, timeout=60)
    return p.returncode != 0


class PolicyTestCase(SimTestCase):
    """One node: client Pod 198.18.1.2, backend Pods b1-b3 (198.18.1.3-5), Service echo at
    VIP4:50051 to the three (the DNAT only matters without spindle), and a `blackhole` Pod
    (198.18.1.6) that drops every TCP segment to 50051: a connect there times out."""

    needs_spindle = True

    @classmethod
    def build(cls, stack):
        if peers_missing():
            cls._skip_reason = "python3-grpcio or python3-h2 is not installed (make deps)"
            return
        cls.node = stack.enter_context(sim.Node())
        cls.client = cls.node.add_pod("client", n=2)
        cls.pods = {name: cls.node.add_pod(name, n=3 + i) for i, name in enumerate(BACKENDS)}
        cls.blackhole = cls.node.add_pod("blackhole", n=6)
        cls.blackhole.netns.nft(
            "table inet blackhole {\n"
            "  chain input { type filter hook input priority 0; tcp dport %d drop; }\n"
            "}\n" % PORT)
        cls.echo = cls.node.add_service("echo", vip4=VIP4, ports=[PORT],
                                        backends=list(cls.pods.values()))

    def setUp(self):
        super().setUp()
        self.servers, self.logs = {}, {}
        self.spindle = None
        self._tag = f"{self._testMethodName[5:30]}-{time.monotonic_ns() % 10**6}"

    # --- peers -------------------------------------------------------------------------------

    def start_backends(self, flags=None):
        """server.py in b1-b3 with per-backend flags ({"b3": {"delay_ms": 20}}), each logging
        to a file of this test's own; killed (by PID) at the end of the test."""
        flags = flags or {}
        for name, pod in self.pods.items():
            log = os.path.join(self.node.logdir, f"grpc-{self._tag}-{name}.jsonl")
            proc, self.logs[name] = peers.start_server(pod, log=log, flags=flags.get(name),
                                                       wait=False)
            self.servers[name] = proc
            self.addCleanup(proc.kill)
        for proc in self.servers.values():
            peers.wait_serving(proc)

    def control_file(self, name):
        """A path for server.py's --unavailable-file, removed at the end of the test."""
        path = os.path.join(self.node.logdir, f"unavailable-{self._tag}-{name}")
        self.addCleanup(lambda: os.path.exists(path) and os.unlink(path))
        return path

    def start_spindle(self, *, balance=None, outlier=None, retries=None, endpoints=None):
        """spindle for this test only, endpoints.static = b1-b3 unless `endpoints`."""
        cfg = sim.spindle.config(self.node, [self.echo])
        svc = cfg["services"][0]
        svc["endpoints"] = {"static": endpoints or
                            [f"{p.ip4}:{PORT}" for p in self.pods.values()]}
        if balance:
            svc["balance"] = balance
        if outlier:
            svc["outlier"] = outlier
        if retries:
            svc["retries"] = retries
        cfg["admin"] = {"listen": f"{self.node.addr4}:{ADMIN_PORT}"}
        sp = sim.Spindle(self.node, cfg)
        self.addCleanup(sp.close)
        sp.start()
        self.spindle = sp
        return sp

    def metric(self, name, **labels):
        """The sum of spindle's series `name` with these labels, scraped now."""
        return metric(http_get(self.node, self.node.addr4, ADMIN_PORT, "/metrics").text, name,
                      **labels)

    def client_run(self, scenario, **opts):
        return peers.run_client(self.client, TARGET, scenario, **opts)

    # --- what the backends saw -----------------------------------------------------------------

    def served(self, run):
        return {name: len(log.starts(run=run, method="Unary")) for name, log in self.logs.items()}

    def tail(self):
        return self.spindle.tail() if self.spindle else ""

    def summary(self, res):
        return json.dumps({k: v for k, v in res.items() if k not in ("calls", "_stderr")},
                          sort_keys=True)[:3000] + "\n" + res.get("_stderr", "")[-600:] + \
            "\n" + self.tail()

    def assertClientOk(self, res):
        self.assertTrue(res.get("ok"), "client failures: " + self.summary(res))


# =====================================================================================
# Balancing: the policies differ where it matters, with one slow backend
# =====================================================================================

class BalancePolicyTest(PolicyTestCase):

    def test_least_request_and_peak_ewma_keep_calls_off_a_slow_backend(self):
        """b3 answers every call after 20 ms, b1 and b2 after 2 ms; 12 calls in flight.
        round_robin and random give b3 a third of the calls whatever it costs; least_request
        sees b3's calls pile up and peak_ewma sees its latency, so both send it far fewer."""
        self.start_backends({name: {"delay_ms": SLOW_MS if name == "b3" else FAST_MS}
                             for name in BACKENDS})
        shares = {}
        for policy in ("round_robin", "random", "least_request", "peak_ewma"):
            sp = self.start_spindle(balance=policy)
            res = self.client_run("unary", count=SHARE_CALLS, concurrency=SHARE_CONCURRENCY,
                                  timeout=10)
            self.assertClientOk(res)
            served = self.served(res["run"])
            self.assertEqual(sum(served.values()), SHARE_CALLS,
                             f"{policy}: backends logged {served}, the client made "
                             f"{SHARE_CALLS} calls")
            self.assertEqual({k: v for k, v in served.items() if v}, res["pods"],
                             f"{policy}: the x-pod the client saw differs from the logs")
            shares[policy] = served["b3"] / SHARE_CALLS
            measure("slow_backend_share", policy=policy, slow_share=f"{shares[policy]:.3f}",
                    served=json.dumps(served, separators=(",", ":")),
                    elapsed_s=res["elapsed_s"], calls=SHARE_CALLS,
                    concurrency=SHARE_CONCURRENCY, slow_ms=SLOW_MS, fast_ms=FAST_MS)
            sp.stop()

        for policy in ("round_robin", "random"):
            self.assertTrue(THIRD_LOW <= shares[policy] <= THIRD_HIGH,
                            f"{policy} gave the slow backend {shares[policy]:.1%}, not about a "
                            f"third ({THIRD_LOW:.0%}..{THIRD_HIGH:.0%}): {shares}")
        for policy in ("least_request", "peak_ewma"):
            self.assertLessEqual(shares[policy], SLOW_SHARE_MAX,
                                 f"{policy} gave the slow backend {shares[policy]:.1%}, more "
                                 f"than {SLOW_SHARE_MAX:.0%}: {shares}")


# =====================================================================================
# Endpoints dying, failing, going away
# =====================================================================================

class EndpointFailurePolicyTest(PolicyTestCase):

    def test_backend_killed_under_500_calls_per_second_only_its_in_flight_calls_fail(self):
        """500 calls/s paced, 20 ms each at the backend, for 4 s; b3 is SIGKILLed once it
        served 150 and holds a call in its handler. Judged as test_grpc's kill test: a call may fail only if b3's handler had
        it (it died with b3, and spindle must not retry a call an endpoint may have done), or
        if it started from RACE_WINDOW before the kill until b3 was reaped (written to b3's
        socket as it died). Everything else, the connects b3 refuses from then on included,
        must succeed elsewhere."""
        self.start_backends()
        self.start_spindle()
        victim = "b3"
        proc, run = peers.spawn_client(self.client, TARGET, "during-kill", seconds=4,
                                       concurrency=32, sleep_ms=20, rate=KILL_RATE, timeout=5)
        self.addCleanup(proc.kill)
        log = self.logs[victim]
        # Killed with a call in its handler: at 500 calls/s of 20 ms over three backends b3
        # holds 3.3 on average (with 10 ms, 1.7, and none about a fifth of the time).
        sim.wait_until(lambda: len(log.starts(run=run)) >= 150 and log.in_handler(run), 5,
                       interval=0.002,
                       what=f"{victim} to serve 150 calls", details=self.tail)
        kill = peers.kill_mid_run(self.servers[victim], log, proc, run)
        res, calls, failed, after = kill.res, kill.calls, kill.failed, kill.after
        in_race = [c for c in failed if c[0] not in kill.in_handler]
        rate = len(calls) / res["elapsed_s"]
        summary = (f"{len(calls)} calls ({rate:.0f}/s), {len(failed)} failed, "
                   f"{len(kill.in_handler)} in {victim}'s handler at the kill, {len(after)} "
                   f"started after it; errors {res['errors']} {res['error_details']}\n{self.tail()}")
        measure("kill", calls=len(calls), rate_per_s=f"{rate:.0f}", failed=len(failed),
                in_flight_at_victim=len(kill.in_handler),
                failed_in_flight=len(failed) - len(in_race), failed_in_race_window=len(in_race),
                failed_after_reaped=len([c for c in after if c[3] != "OK"]))

        self.assertGreaterEqual(len(calls), 0.8 * KILL_RATE * 4, f"the load fell short: {summary}")
        self.assertOnlyInFlightCallsFailed(kill, victim, RACE_WINDOW, summary,
                                           each_unavailable=True)
        self.assertEqual({c[4] for c in after}, {"b1", "b2"}, summary)

    def test_graceful_shutdown_goaway_loses_no_call(self):
        """500 calls/s, 20 ms each, b3's 500 ms more so that it drains for a while; b3 gets
        SIGTERM: server.stop(grace) sends GOAWAY, stops listening, lets its calls in flight
        finish and exits. Not one call may fail: the calls b3 had finish there, the streams
        above GOAWAY's last-stream-id and the connects it refuses go elsewhere."""
        self.start_backends({"b3": {"grace": 3, "delay_ms": 500}})
        self.start_spindle()
        victim = "b3"
        proc, run = peers.spawn_client(self.client, TARGET, "during-kill", seconds=4,
                                       concurrency=24, sleep_ms=20, rate=KILL_RATE, timeout=5)
        self.addCleanup(proc.kill)
        log = self.logs[victim]
        sim.wait_until(lambda: len(log.events("end", run=run)) >= 10, 5, interval=0.01,
                       what=f"{victim} to serve 10 calls", details=self.tail)
        t_term = peers.now()
        self.servers[victim].signal(signal.SIGTERM)
        rc = self.servers[victim].wait(6)
        t_gone = peers.now()
        res = peers.result(proc, 30)
        calls = res["calls"]

        events = {}
        for e in log.events(run=run):
            events.setdefault(e["id"], {})[e["ev"]] = e
        in_flight = [i for i, ev in events.items()
                     if ev["start"]["t"] <= t_term and ev.get("end", {"t": 1e18})["t"] > t_term]
        after_term = [i for i, ev in events.items() if ev["start"]["t"] > t_term]
        unfinished = {i: ev for i, ev in events.items()
                      if "cancel" in ev or ev.get("end", {}).get("code") != "OK"}
        failed = [c for c in calls if c[3] != "OK"]
        rate = len(calls) / res["elapsed_s"]
        summary = (f"{len(calls)} calls ({rate:.0f}/s), {len(failed)} failed "
                   f"{res['errors']} {res['error_details']}; {victim}: {len(events)} calls, "
                   f"{len(in_flight)} in flight at SIGTERM, {len(after_term)} started after it, "
                   f"exit {rc} after {t_gone - t_term:.2f}s\n{self.servers[victim].tail(5)}\n"
                   f"{self.tail()}")
        drained = max((events[i].get("end", {}).get("t", t_term) for i in in_flight),
                      default=t_term) - t_term
        measure("goaway", calls=len(calls), rate_per_s=f"{rate:.0f}", failed=len(failed),
                in_flight_at_victim=len(in_flight), victim_calls_after_sigterm=len(after_term),
                victim_last_call_end_s=f"{drained:.2f}", victim_exit_s=f"{t_gone - t_term:.2f}")

        self.assertEqual(rc, 0, summary)
        self.assertGreaterEqual(len(calls), 0.8 * KILL_RATE * 4, f"the load fell short: {summary}")
        self.assertGreater(len(in_flight), 0, f"{victim} had no call in flight: {summary}")
        self.assertEqual(unfinished, {}, f"{victim} did not finish every call it took: {summary}")
        self.assertEqual(failed, [], f"calls failed: {summary}")
        self.assertEqual(res["mismatches"], [], summary)
        late = [c for c in calls if c[1] > t_gone]
        self.assertGreater(len(late), 100, summary)
        self.assertEqual({c[4] for c in late}, {"b1", "b2"}, summary)

    def test_calls_a_stopping_grpc_server_had_queued_are_answered_elsewhere(self):
        """b3 hands a call to a handler only every 30 ms (--dispatch-delay-ms), so of its
        third of 300 calls/s about half wait inside grpc-core. Once it started 5 it gets
        SIGTERM: grpc-core sends GOAWAY and answers every call it had queued (about 10)
        CANCELLED, never started. spindle sends those to b1 and b2
        (spindle_retries_total{reason="endpoint_draining"}); not one call may fail, and every
        call b3 started ends there. Budget 100%: these retries count in the retry budget
        like any other, and 0.2 s into the load it has seen too few calls for the default
        20% (with b3's refused connects after it, it runs out: a few calls fail)."""
        self.start_backends({"b3": {"grace": 3, "dispatch_delay_ms": 30}})
        self.start_spindle(balance="round_robin", retries={"max": 3, "budget_percent": 100})
        victim = "b3"
        proc, run = peers.spawn_client(self.client, TARGET, "during-kill", seconds=3,
                                       concurrency=48, sleep_ms=5, rate=300, timeout=5)
        self.addCleanup(proc.kill)
        log = self.logs[victim]
        sim.wait_until(lambda: len(log.starts(run=run)) >= 5, 5, interval=0.005,
                       what=f"{victim} to start 5 calls", details=self.tail)
        self.servers[victim].signal(signal.SIGTERM)
        rc = self.servers[victim].wait(6)
        res = peers.result(proc, 30)
        calls = res["calls"]
        failed = [c for c in calls if c[3] != "OK"]
        started = {e["id"] for e in log.starts(run=run)}
        unfinished = [e["id"] for e in log.events(run=run) if e["ev"] == "cancel" or
                      (e["ev"] == "end" and e.get("code") != "OK")]
        retried = self.metric("spindle_retries_total", reason="endpoint_draining")
        summary = (f"{len(calls)} calls, {len(failed)} failed {res['errors']} "
                   f"{res['error_details']}; {victim} started {len(started)}, "
                   f"{retried:.0f} retried as it drained\n{self.tail()}")
        measure("queued_at_drain", calls=len(calls), failed=len(failed),
                victim_started=len(started), retried_endpoint_draining=f"{retried:.0f}")

        self.assertEqual(rc, 0, summary)
        self.assertGreater(retried, 0, f"b3 had no call queued when it stopped: {summary}")
        self.assertEqual(failed, [], summary)
        self.assertEqual(unfinished, [], summary)
        self.assertEqual(res["mismatches"], [], summary)


class OutlierEjectionTest(PolicyTestCase):
    """A backend that answers UNAVAILABLE to everything. Calls are sequential (one client
    thread), so the failures at the backend come one by one and its count is exact: the
    5th ejects it, and nothing more reaches it while the ejection lasts."""

    def ejection_run(self, res, name):
        """(the calls of `res` the backend `name` saw, in order, with their end codes)."""
        out = []
        for e in self.logs[name].starts(run=res["run"], method="Unary"):
            end = self.logs[name].by_id(e["id"]).get("end", {})
            out.append((e["id"], e["t"], end.get("code"), end.get("t")))
        return sorted(out, key=lambda c: c[1])

    def test_unavailable_backend_is_ejected_after_5_failures_and_gets_no_more_calls(self):
        """base_ejection 30 s: b3 sees exactly 5 calls, the client gets exactly those 5
        UNAVAILABLE (answered by b3, so not retried), and then 3 s of calls pass b3 by."""
        dead = self.control_file("b3")
        open(dead, "w").close()
        self.start_backends({"b3": {"unavailable_file": dead}})
        self.start_spindle(outlier={"consecutive_failures": 5, "base_ejection": "30s",
                                    "max_ejection": "60s", "max_ejected_percent": 50})
        # 3 s of calls at 200/s, all well inside the 30 s ejection.
        res = self.client_run("unary", count=600, rate=200, record=True, timeout=5)
        seen = self.ejection_run(res, "b3")
        calls = res["calls"]
        last = seen[-1][3] if seen else None
        later = [c for c in calls if last is not None and c[1] > last]
        summary = (f"b3 saw {len(seen)} calls: {seen}; client: {res['errors']} "
                   f"{res['error_details']}, pods {res['pods']}\n{self.tail()}")
        measure("ejection", failures_seen_by_b3=len(seen),
                calls_after_its_last=len(later),
                window_s=f"{later[-1][2] - later[0][1]:.2f}" if later else 0)

        self.assertEqual(len(seen), 5, f"not ejected after exactly 5 failures: {summary}")
        self.assertEqual({s[2] for s in seen}, {"UNAVAILABLE"}, summary)
        # Answered by the endpoint, so processed: passed to the app, not retried.
        self.assertEqual(res["errors"], {"UNAVAILABLE": 5}, summary)
        self.assertEqual({c[0] for c in calls if c[3] != "OK"}, {s[0] for s in seen}, summary)
        self.assertGreaterEqual(len(later), 500, summary)
        self.assertGreater(later[-1][2] - later[0][1], 2.0, f"window too short: {summary}")
        self.assertEqual(set(res["pods"]), {"b1", "b2"}, summary)

    def test_recovered_backend_gets_calls_again_once_its_ejection_expires(self):
        """Ejected for base_ejection = 1 s after 5 failures; it recovers meanwhile. It gets no
        call for that second, then calls again, and they succeed."""
        dead = self.control_file("b3")
        open(dead, "w").close()
        self.start_backends({"b3": {"unavailable_file": dead}})
        self.start_spindle(outlier={"consecutive_failures": 5, "base_ejection": "1s",
                                    "max_ejection": "10s", "max_ejected_percent": 50})
        first = self.client_run("unary", count=30, record=True, timeout=5)
        ejected = self.ejection_run(first, "b3")
        self.assertEqual(len(ejected), 5, f"b3 saw {ejected}\n{self.tail()}")
        t_ejected = ejected[-1][3]  # its 5th UNAVAILABLE: the ejection starts about now
        os.unlink(dead)
        res = self.client_run("unary", count=600, rate=200, record=True, timeout=5)
        self.assertClientOk(res)
        back = self.ejection_run(res, "b3")
        calls = res["calls"]
        self.assertTrue(back, f"b3 got no call in 3 s after a 1 s ejection\n{self.tail()}")
        t_back = back[0][1]
        before = [c for c in calls if t_ejected < c[1] < t_back]
        since = [c for c in calls if c[1] >= t_back]
        share = sum(1 for c in since if c[4] == "b3") / len(since)
        # The last second's share: long after the return, the three should be even again.
        last_s = [c for c in calls if c[1] >= calls[-1][1] - 1.0]
        share_last = sum(1 for c in last_s if c[4] == "b3") / len(last_s)
        measure("return_after_ejection", out_for_s=f"{t_back - t_ejected:.3f}",
                calls_while_out=len(before), b3_share_since_return=f"{share:.3f}",
                b3_share_last_second=f"{share_last:.3f}", calls_since_return=len(since))
        summary = f"out for {t_back - t_ejected:.3f}s, share since {share:.2f}\n{self.tail()}"
        self.assertGreaterEqual(t_back - t_ejected, 0.95, f"came back early: {summary}")
        self.assertLess(t_back - t_ejected, 1.6, f"came back late: {summary}")
        self.assertEqual({b[2] for b in back}, {"OK"}, summary)
        self.assertGreater(share, 0.2, f"b3 hardly used after its return: {summary}")

    def test_max_ejected_percent_keeps_one_of_two_failing_backends_in_service(self):
        """b2 and b3 fail; 50% of 3 endpoints is 1: only one may be ejected, and the other
        keeps its share of the calls (still failing: better than overloading b1)."""
        files = {n: self.control_file(n) for n in ("b2", "b3")}
        for path in files.values():
            open(path, "w").close()
        self.start_backends({n: {"unavailable_file": p} for n, p in files.items()})
        self.start_spindle(outlier={"consecutive_failures": 5, "base_ejection": "30s",
                                    "max_ejection": "60s", "max_ejected_percent": 50})
        res = self.client_run("unary", count=300, record=True, timeout=5)
        seen = {n: len(self.ejection_run(res, n)) for n in ("b2", "b3")}
        measure("ejection_cap", calls=300, seen=json.dumps(seen, separators=(",", ":")),
                b1_ok=res["pods"].get("b1", 0), errors=res["errors"].get("UNAVAILABLE", 0))
        summary = f"{seen}, client {res['pods']} {res['errors']}\n{self.tail()}"
        self.assertEqual(sorted(seen.values())[0], 5, f"neither was ejected at 5: {summary}")
        self.assertGreater(sorted(seen.values())[1], 50, f"both were ejected: {summary}")
        self.assertEqual(res["errors"].get("UNAVAILABLE", 0), sum(seen.values()), summary)

    def test_every_backend_ejected_means_every_backend_used(self):
        """max_ejected_percent 100. b2 and b3 fail and are ejected (5 calls each, then b1
        takes every call); then b1 fails too and is ejected: with every endpoint out, calls
        go to all of them again (panic) instead of failing in spindle for want of one."""
        files = {n: self.control_file(n) for n in BACKENDS}
        for name in ("b2", "b3"):
            open(files[name], "w").close()
        self.start_backends({n: {"unavailable_file": p} for n, p in files.items()})
        self.start_spindle(outlier={"consecutive_failures": 5, "base_ejection": "30s",
                                    "max_ejection": "60s", "max_ejected_percent": 100})
        two = self.client_run("unary", count=40, record=True, timeout=5)
        seen_two = {n: len(self.ejection_run(two, n)) for n in BACKENDS}
        summary = f"{seen_two}, client {two['pods']} {two['errors']}\n{self.tail()}"
        self.assertEqual(seen_two, {"b1": 30, "b2": 5, "b3": 5}, summary)

        open(files["b1"], "w").close()
        res = self.client_run("unary", count=60, record=True, timeout=5)
        seen = {n: len(self.ejection_run(res, n)) for n in BACKENDS}
        measure("panic", ejected_first=json.dumps(seen_two, separators=(",", ":")),
                then_all_failing=json.dumps(seen, separators=(",", ":")),
                errors=json.dumps(res["errors"], separators=(",", ":")))
        summary = f"{seen}, client {res['errors']} {res['error_details']}\n{self.tail()}"
        self.assertEqual(sum(seen.values()), 60, f"calls did not reach the backends: {summary}")
        self.assertEqual(res["errors"], {"UNAVAILABLE": 60}, summary)
        self.assertIn("is unavailable", res["error_details"]["UNAVAILABLE"], summary)
        for name in ("b2", "b3"):
            self.assertGreater(seen[name], 5, f"{name}, ejected for 30 s, got no call once "
                                              f"every endpoint was out: {summary}")


# =====================================================================================
# Retries: only of calls never processed, at most retries.max tries, within the budget
# =====================================================================================

GOAWAY_SERVER = os.path.join(os.path.dirname(peers.SERVER), "goaway_server.py")
NEVER_EJECT = {"consecutive_failures": 1000}  # so that the refusing endpoint stays in play


class RetryTest(PolicyTestCase):
    """Endpoints: `refuser` (198.18.1.7), which answers the first call of every connection
    with GOAWAY(last-stream-id 0), so the call was never processed, and logs each one; and
    b1. round_robin over the two: a call that starts at the refuser and is retried on b1
    leaves the counter at the refuser again, so every call starts there and needs exactly
    one retry. The refuser's log counts the tries there; the client sees the rest."""

    @classmethod
    def build(cls, stack):
        super().build(stack)
        if cls._skip_reason is None:
            cls.refuser = cls.node.add_pod("refuser", n=7)

    def setUp(self):
        super().setUp()
        self.refused_log = os.path.join(self.node.logdir, f"refused-{self._tag}.jsonl")
        proc = self.refuser.spawn([sim.PYTHON, GOAWAY_SERVER, "--port", str(PORT),
                                   "--log", self.refused_log], name="goaway-server")
        self.addCleanup(proc.kill)
        proc.wait_for_line(r"^goaway_server: listening", 15, stream="stdout")
        self.start_backends()

    def refused(self):
        """Tries the refuser has seen (each a call it refused) in this test."""
        if not os.path.exists(self.refused_log):
            return 0
        with open(self.refused_log) as f:
            return sum(1 for line in f if line.strip())

    def retry_run(self, retries, **opts):
        """(client result, tries refused, calls failed) of one run with these retries."""
        self.start_spindle(balance="round_robin", outlier=NEVER_EJECT, retries=retries,
                           endpoints=[f"{self.refuser.ip4}:{PORT}",
                                      f"{self.pods['b1'].ip4}:{PORT}"])
        before = self.refused()
        res = self.client_run("unary", record=True, timeout=5, **opts)
        self.spindle.stop()
        return res, self.refused() - before, sum(res["errors"].values())

    def test_a_refused_call_is_retried_but_never_past_retries_max(self):
        calls = 40
        # max 2: one retry each; every call ends on b1.
        res, refused, failed = self.retry_run({"max": 2, "budget_percent": 100}, count=calls)
        measure("retries_max", max=2, calls=calls, tries_refused=refused, failed=failed,
                ok_on_b1=res["pods"].get("b1", 0))
        summary = f"refused {refused}, client {res['pods']} {res['errors']} " \
                  f"{res['error_details']}\n{self.tail()}"
        self.assertEqual(res["errors"], {}, summary)
        self.assertEqual(res["pods"], {"b1": calls}, summary)
        self.assertGreaterEqual(refused, calls - 1, f"calls did not start at the refuser: {summary}")
        self.assertLessEqual(refused, calls, f"a call was tried twice at the refuser: {summary}")

        # max 1: no retry at all. A call that starts at the refuser fails there, after that
        # one try; the counter then points at b1, so the calls alternate.
        res, refused, failed = self.retry_run({"max": 1, "budget_percent": 100}, count=calls)
        measure("retries_max", max=1, calls=calls, tries_refused=refused, failed=failed,
                ok_on_b1=res["pods"].get("b1", 0))
        summary = f"refused {refused}, client {res['pods']} {res['errors']} " \
                  f"{res['error_details']}\n{self.tail()}"
        self.assertEqual(failed, refused, f"a refused call was retried with max 1: {summary}")
        self.assertGreaterEqual(failed, calls // 2 - 1, summary)
        self.assertEqual(set(res["errors"]), {"UNAVAILABLE"}, summary)
        self.assertEqual(res["pods"].get("b1", 0) + failed, calls, summary)

    def test_retries_stop_at_the_budget(self):
        """budget_percent 0 leaves the floor: 10 retries in any second. 150 calls in 1.5 s,
        each needing one retry: about 10 per second get it, the others fail."""
        calls = 150
        res, refused, failed = self.retry_run({"max": 3, "budget_percent": 0}, count=calls,
                                              rate=100)
        retried = refused - failed
        span = res["calls"][-1][1] - res["calls"][0][1]
        measure("retry_budget", budget_percent=0, calls=calls, span_s=f"{span:.2f}",
                tries_refused=refused, retried=retried, failed=failed)
        summary = f"{retried} retried, {failed} failed over {span:.2f}s; client " \
                  f"{res['pods']} {res['errors']} {res['error_details']}\n{self.tail()}"
        # 10 per sliding second: over a run of `span` seconds, at most 10 * (span + 1).
        self.assertLessEqual(retried, 10 * (span + 1), f"retries past the budget: {summary}")
        self.assertGreaterEqual(retried, 10, f"not even the floor was retried: {summary}")
        self.assertGreater(failed, calls // 4, summary)
        self.assertEqual(set(res["errors"]), {"UNAVAILABLE"}, summary)


# =====================================================================================
# Deadlines
# =====================================================================================

class DeadlineTest(PolicyTestCase):

    def test_backend_gets_the_time_left_after_a_connect_timeout(self):
        """Endpoints: the blackhole (its connect times out after 1 s, then spindle retries)
        and b1; round_robin, so one of two sequential calls goes to the blackhole first. A
        3 s call retried after 1 s has 2 s left, and that is what b1 must be told: the time
        the backend gets plus the time already gone is the client's deadline, not more."""
        deadline = 3.0
        self.start_backends()
        self.start_spindle(balance="round_robin", endpoints=[f"{self.blackhole.ip4}:{PORT}",
                                                             f"{self.pods['b1'].ip4}:{PORT}"])
        res = self.client_run("unary", count=2, record=True, timeout=deadline)
        self.assertClientOk(res)
        rows = []
        for cid, t0, t1, code, pod in res["calls"]:
            start = self.logs["b1"].by_id(cid).get("start")
            self.assertIsNotNone(start, f"b1 did not log {cid}")
            self.assertIsNotNone(start["timeout"], f"{cid}: the backend got no deadline: {start}")
            waited = start["t"] - t0
            rows.append((cid, waited, start["timeout"]))
            measure("deadline_passed_on", call=cid, waited_s=f"{waited:.3f}",
                    backend_left_s=f"{start['timeout']:.3f}",
                    total_s=f"{waited + start['timeout']:.3f}", client_deadline_s=deadline)
        summary = f"(id, waited, backend's time left): {rows}\n{self.tail()}"
        self.assertTrue(any(w >= 0.9 for _, w, _ in rows),
                        f"no call went to the blackhole first: {summary}")
        for cid, waited, left in rows:
            # grpc rounds the client's grpc-timeout up a little: 50 ms of slack.
            self.assertLessEqual(waited + left, deadline + 0.050,
                                 f"{cid}: the backend got more time than the call had: {summary}")
            self.assertGreater(left, deadline - waited - 0.2,
                               f"{cid}: the backend got much less time than was left: {summary}")

    def test_call_past_its_deadline_when_dispatched_is_answered_unsent(self):
        """grpc-timeout: 1n has run out by the time spindle picks an endpoint: the call is
        answered DEADLINE_EXCEEDED (4) and no backend sees it. The same call with 10S is the
        control: it reaches a backend and succeeds."""
        self.start_backends()
        self.start_spindle()
        out = {}
        for label, timeout in (("expired", "1n"), ("control", "10S")):
            cid = peers.new_run("dl") + "-" + label
            p = self.client.run([sim.PYTHON, os.path.abspath(__file__), "h2-call", VIP4,
                                 str(PORT), "--call-id", cid, "--grpc-timeout", timeout],
                                timeout=20, check=False)
            lines = p.stdout.strip().splitlines()
            self.assertTrue(lines, f"h2-call gave nothing: {p.stderr[-1500:]}")
            out[label] = json.loads(lines[-1])
            out[label]["seen_by"] = [n for n, log in self.logs.items() if log.by_id(cid)]
            measure("deadline_at_dispatch", case=label, grpc_timeout=timeout,
                    status=out[label].get("status"), seen_by=out[label]["seen_by"] or "none",
                    message=json.dumps(out[label].get("message")))
        summary = json.dumps(out, sort_keys=True) + "\n" + self.tail()
        self.assertEqual(out["control"].get("status"), "0", summary)
        self.assertEqual(len(out["control"]["seen_by"]), 1, summary)
        self.assertEqual(out["expired"].get("status"), "4", summary)
        # A backend sent 1n may answer 4 before its handler runs (and logs): the answer must
        # be spindle's own.
        self.assertTrue((out["expired"].get("message") or "").startswith("spindle:"),
                        f"DEADLINE_EXCEEDED did not come from spindle: {summary}")
        self.assertEqual(out["expired"]["seen_by"], [], f"an expired call was sent: {summary}")


# =====================================================================================
# Raw HTTP/2 gRPC client (run in the client Pod by the deadline test)
# =====================================================================================

def h2_call(host, port, call_id, grpc_timeout, limit=10.0):
    """One Unary call over a fresh connection, headers chosen exactly; returns a dict."""
    import h2.config
    import h2.connection
    import h2.events

    out = {"ok": False}
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                header_encoding="utf-8"))
    sock = socket.create_connection((host, port), timeout=limit)
    deadline = time.monotonic() + limit
    with sock:
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        headers = [(":method", "POST"), (":scheme", "http"), (":path", es.UNARY),
                   (":authority", f"{host}:{port}"), ("content-type", "application/grpc"),
                   ("te", "trailers"), ("x-call-id", call_id)]
        if grpc_timeout:
            headers.append(("grpc-timeout", grpc_timeout))
        message = b"ping"
        conn.send_headers(sid, headers)
        conn.send_data(sid, b"\x00" + len(message).to_bytes(4, "big") + message, end_stream=True)
        sock.sendall(conn.data_to_send())
        blocks = []
        for _ in range(10_000):
            if time.monotonic() >= deadline:
                out["error"] = "no answer in time"
                break
            data = sock.recv(65536)
            if not data:
                out["error"] = "connection closed"
                break
            done = False
            for event in conn.receive_data(data):
                if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)) \
                        and event.stream_id == sid:
                    blocks.append(dict(event.headers))
                elif isinstance(event, h2.events.DataReceived):
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamReset) and event.stream_id == sid:
                    out["reset"] = int(event.error_code)
                    done = True
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == sid:
                    done = True
            pending = conn.data_to_send()
            if pending:
                sock.sendall(pending)
            if done:
                out["ok"] = True
                break
    out["blocks"] = blocks
    last = blocks[-1] if blocks else {}
    out["status"] = last.get("grpc-status")
    out["message"] = last.get("grpc-message")
    return out


def main(argv):
    ap = argparse.ArgumentParser(description="one raw HTTP/2 gRPC call, JSON on stdout")
    ap.add_argument("op", choices=["h2-call"])
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--call-id", required=True)
    ap.add_argument("--grpc-timeout", default="")
    args = ap.parse_args(argv)
    try:
        out = h2_call(args.host, args.port, args.call_id, args.grpc_timeout)
    except Exception as e:
        out = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    print(json.dumps(out, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
