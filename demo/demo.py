#!/usr/bin/python3
"""make demo: why spindle exists, in about a minute, on a simulated Kubernetes node.

gRPC keeps one long-lived HTTP/2 connection per channel, and kube-proxy picks a Pod per
connection: each client sends every call to one Pod, and new Pods get nothing. The demo
shows that, then the same clients (same code, same config) balanced per call by spindle:

  setup    a node (network namespaces, cgroups, nftables): Service echo with a ClusterIP
           (kube-proxy-like DNAT, a random Pod per connection), 3 backend Pods running a real
           gRPC server that reports its Pod name (tests/grpc/server.py), dnsmasq serving the
           headless name echo-pods.demo.svc.cluster.local with TTL 1 s, and 2 client Pods
           each making steady calls on ONE channel to the ClusterIP (demo/demo_client.py);
  phase 1  without spindle: each client is pinned to one Pod;
  phase 2  spindle starts (endpoints from the headless name, intercepting the ClusterIP) and
           the client Pods are restarted as a rollout would: calls spread over the 3 Pods;
  phase 3  the Service scales to 5 Pods (DNS records updated): the new Pods take their share
           within seconds;
  then     a summary per phase, spindle's admin API (/endpoints fetched once), a verdict.

A live view redraws the calls per second per backend Pod; when stdout is not a terminal it
prints one line per second instead. Exit status 0 when every phase showed what it should, 1
(with what was not seen) otherwise, 2 when the demo could not run, 130 on Ctrl-C.

    /usr/bin/python3 demo/demo.py [--record FILE] [--phase-seconds 15] [--rate 80] [--hold S]

--record FILE writes the run as plain lines (the one-line-per-second view) to FILE too.
--hold S keeps the node up S seconds after the summary, to look at the admin API by hand.
Everything the demo creates is removed at the end, also on Ctrl-C. Root only.
"""

import argparse
import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.join(os.path.dirname(HERE), "tests")
sys.path.insert(0, TESTS)
sys.path.insert(0, os.path.join(TESTS, "grpc"))
import sim  # noqa: E402
from sim import dns as simdns  # noqa: E402
from sim import prometheus as simprom  # noqa: E402
import peers  # noqa: E402  (tests/grpc: starts server.py in a Pod, reads its call log)

DEMO_CLIENT = os.path.join(HERE, "demo_client.py")

PORT = 50051
VIP4, VIP6 = "198.19.0.10", "2001:2:0:ff::10"      # Service echo's ClusterIP
CLUSTER_NAME = "echo.demo.svc.cluster.local"        # its name (resolves to the ClusterIP)
HEADLESS = "echo-pods.demo.svc.cluster.local"       # the headless Service: one A per Pod
TTL = 1                                             # dnsmasq --local-ttl
ADMIN_PORT = 9901
CLIENTS = {"client-a": 2, "client-b": 3}            # Pod name -> 198.18.1.N
BACKENDS = {f"echo-{i}": 10 + i for i in range(1, 6)}  # echo-1 .. echo-5 at 198.18.1.11-15
FIRST = 3                                           # Pods before the scale-up

# What each phase must show, on its steady part (the seconds right after a change left out).
PINNED_MIN = 0.95          # phase 1: a client's calls on its one Pod
EVEN_TOLERANCE = 0.15      # phase 2: every Pod within +-15% of a fair share (of 1/3)
CLIENT_SPREAD_MIN = 0.20   # phase 2: every Pod takes this much of EACH client's calls
NEW_POD_MIN = 0.10         # phase 3: each new Pod's share of the calls
ERRORS_MAX = 0.01          # failed calls, of all calls, in any phase
CALLS_MIN = 0.5            # a steady part holds at least this much of the calls asked for
SETTLE_START = 2.0         # s after clients (re)start: grpcio loading, first connect
SETTLE_DNS = TTL + 2.0     # s after a DNS change: in force for new calls by then
STEADY_MIN = 7.0           # s: the shortest steady part a phase is judged on
STILL_PINNED_S = 3.0       # phase 2: spindle up, old clients still on their old connections

TICK = 1.0                 # the live view's period: calls per second
POLL = 0.1                 # how often waits look at what they wait for
CLIENT_LIFETIME = 115.0    # s; a client nobody stopped ends on its own (demo_client caps 120)
SERVER_LIFETIME = 300      # s; likewise for the gRPC servers


class DemoFailure(Exception):
    """The demo could not go on (a process died, a wait timed out)."""


# === output ====================================================================================

ANSI = re.compile(r"\033\[[0-9;?]*[A-Za-z]")


class Style:
    def __init__(self, color, unicode):
        self.color = color
        self.full, self.half = ("█", "▒") if unicode else ("#", "+")
        self.ok, self.bad = ("✓", "✗") if unicode else ("ok", "FAIL")
        self.arrow, self.dot, self.pm = ("→", "·", "±") if unicode else ("->", "-", "+-")

    def _sgr(self, code, text):
        return f"\033[{code}m{text}\033[0m" if self.color and text else text

    def bold(self, t): return self._sgr("1", t)
    def dim(self, t): return self._sgr("2", t)
    def green(self, t): return self._sgr("32", t)
    def red(self, t): return self._sgr("31", t)
    def client(self, i, t): return self._sgr("36" if i == 0 else "35", t)


def fit(line, width):
    """line cut to `width` visible characters, its ANSI sequences kept: a frame line must
    never wrap, or the redraw would miscount the lines to go back up."""
    out, seen, pos = [], 0, 0
    for m in ANSI.finditer(line):
        text = line[pos:m.start()]
        out.append(text[:max(0, width - seen)])
        seen += len(text)
        out.append(m.group(0))
        pos = m.end()
    out.append(line[pos:][:max(0, width - seen)])
    return "".join(out)


class Display:
    """Permanent lines, and one live frame under them that is redrawn in place (a terminal)
    or replaced by one plain line per update (anything else). --record gets the plain form
    of everything."""

    def __init__(self, live, record=None):
        self.live = live
        self.record = record
        self.frame = []      # the lines of the frame now on screen
        self.out = sys.stdout

    def _write(self, text):
        self.out.write(text)
        self.out.flush()

    def _rec(self, text):
        if self.record:
            self.record.write(ANSI.sub("", text) + "\n")
            self.record.flush()

    def _erase(self):
        if self.frame:
            self._write(f"\r\033[{len(self.frame)}A\033[J")

    def _draw(self):
        if self.frame:
            self._write("\n".join(self.frame) + "\n")

    def log(self, text=""):
        """Lines that stay (above the live frame, if one is shown)."""
        if self.live:
            self._erase()
            self._write(text + "\n")
            self._draw()
        else:
            self._write(ANSI.sub("", text) + "\n")
        self._rec(text)

    def update(self, frame, plain):
        if self.live:
            self._erase()
            self.frame = list(frame)
            self._draw()
        else:
            self._write(plain + "\n")
        self._rec(plain)

    def plain_only(self, text):
        """A line for the one-line-per-second form only (the live frame explains itself)."""
        if not self.live:
            self._write(text + "\n")
        self._rec(text)

    def redraw(self, frame):
        """The frame again with what changed since the last update (live form only)."""
        if self.live and self.frame:
            self._erase()
            self.frame = list(frame)
            self._draw()

    def freeze(self):
        """The frame on screen stays as it is; later output goes below it."""
        self.frame = []

    def close(self):
        self.freeze()
        if self.live:
            self._write("\033[?25h")  # the cursor, hidden while the frame redraws


# === the client processes ======================================================================

def last_report(path):
    """The last complete JSON line demo_client.py wrote (its running totals), or None."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 8192))
            data = f.read()
    except FileNotFoundError:
        return None
    for line in reversed(data.split(b"\n")[:-1]):  # the last piece may be half written
        try:
            return json.loads(line)
        except ValueError:
            continue
    return None


class Client:
    """One run of demo_client.py in a client Pod, and what of its totals was counted."""

    def __init__(self, pod, generation, target, rate):
        self.pod = pod
        self.name = pod.name
        argv = [sim.PYTHON, DEMO_CLIENT, target, "--rate", f"{rate:g}",
                "--seconds", f"{CLIENT_LIFETIME:g}"]
        self.proc = pod.spawn(argv, name=f"{pod.name}-run{generation}")
        self.seen_pods = collections.Counter()
        self.seen_errors = 0
        self.finished = False

    def take(self):
        """Calls per Pod and failed calls since the last take()."""
        rep = last_report(self.proc.stdout_path)
        if rep is None:
            return collections.Counter(), 0
        pods = collections.Counter(rep.get("pods", {}))
        errors = sum(rep.get("errors", {}).values())
        delta = pods - self.seen_pods
        new_errors = max(0, errors - self.seen_errors)
        self.seen_pods, self.seen_errors = pods, errors
        self.finished = bool(rep.get("done"))
        return delta, new_errors

    def stop(self):
        """SIGTERM, by PID: the client ends its last call and prints its final totals."""
        self.proc.stop(timeout=5)

    def totals(self):
        rep = last_report(self.proc.stdout_path) or {}
        return sum(rep.get("pods", {}).values()), sum(rep.get("errors", {}).values())


# === the demo ==================================================================================

class Demo:
    def __init__(self, args, display, style):
        self.args = args
        self.d = display
        self.s = style
        self.phase_s = args.phase_seconds
        self.rate = args.rate
        self.node = None
        self.pods = {}          # name -> Pod (backends)
        self.state = {name: "absent" for name in BACKENDS}  # absent|starting|serving|in DNS
        self.servers = {}       # name -> (Proc, peers.ServerLog)
        self.client_pods = {}
        self.clients = []       # every Client started, running or not
        self.spindle = None
        self.dnsmasq = None
        self.echo = None
        self.phase = 0
        self.phase_title = ""
        self.ticks = []         # {"t0", "t1", "phase", "calls": {client: Counter}, "errors": {...}}
        self.t_origin = None
        self.next_tick = None
        self.marks = {}         # label -> monotonic time
        self.results = {}       # phase -> {"total": Counter, "calls", "errors", "label", "ok"}
        self.failures = []

    # --- time and the live view ----------------------------------------------------------------

    def now(self):
        return time.monotonic() - self.t_origin

    def pump(self, until):
        """Sleeps until `until` (monotonic) or the next tick, whichever comes first, and
        draws a tick when one is due."""
        target = until if self.next_tick is None else min(until, self.next_tick)
        left = target - time.monotonic()
        if left > 0:
            time.sleep(left)
        if self.next_tick is not None and time.monotonic() >= self.next_tick:
            self.tick()
            self.next_tick += TICK
            if self.next_tick < time.monotonic():  # a blocking step ran long: no catch-up burst
                self.next_tick = time.monotonic() + TICK

    def run_for(self, seconds):
        end = time.monotonic() + seconds
        for _ in range(int(seconds / TICK) * 2 + 4):
            if time.monotonic() >= end:
                return
            self.pump(end)

    def run_until_phase_time(self, seconds):
        """Runs the live view until the current phase is `seconds` old."""
        self.run_for(self.marks[f"phase{self.phase}"] + seconds - time.monotonic())

    def wait(self, predicate, timeout, what, details=None):
        """Waits for predicate() with a deadline, the live view going on meanwhile."""
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / POLL) + 2):
            value = predicate()
            if value:
                return value
            self.check_alive()
            if time.monotonic() >= deadline:
                break
            self.pump(min(deadline, time.monotonic() + POLL))
        value = predicate()
        if value:
            return value
        raise DemoFailure(f"timed out after {timeout:g} s waiting for {what}"
                          + (f"\n{details()}" if details else ""))

    def check_alive(self):
        procs = [(f"gRPC server {n}", p) for n, (p, _) in self.servers.items()]
        if self.spindle is not None:
            procs.append(("spindle", self.spindle.proc))
        if self.dnsmasq is not None:
            procs.append(("dnsmasq", self.dnsmasq.proc))
        for what, proc in procs:
            if proc is not None and not proc.alive():
                raise DemoFailure(f"{what} exited unexpectedly\n{proc.tail(15)}")

    def tick(self):
        t1 = self.now()
        t0 = self.ticks[-1]["t1"] if self.ticks else self.marks_rel("phase1")
        calls, errors = {}, {}
        for c in self.clients:
            if c.finished:
                continue
            delta, err = c.take()
            calls.setdefault(c.name, collections.Counter()).update(delta)
            errors[c.name] = errors.get(c.name, 0) + err
        entry = {"t0": t0, "t1": t1, "phase": self.phase, "calls": calls, "errors": errors}
        self.ticks.append(entry)
        self.check_alive()
        self.d.update(self.frame(entry), self.plain(entry))

    def redraw(self):
        """Shows a change of the Pods' states at once, not at the next tick."""
        if self.ticks:
            self.d.redraw(self.frame(self.ticks[-1]))

    def marks_rel(self, label):
        return self.marks[label] - self.t_origin

    def frame(self, entry):
        """The live view: calls/s per backend Pod and per client, and a bar per Pod whose
        length is the Pod's share of all the calls."""
        s = self.s
        dt = max(entry["t1"] - entry["t0"], 0.2)
        names = list(CLIENTS)
        cols = shutil.get_terminal_size((100, 24)).columns
        bar_w = max(8, min(40, cols - 54))
        full_scale = self.rate * len(CLIENTS)  # every call of both clients on one Pod
        t_text = f"t={entry['t1']:.0f}s"
        legend = f"{s.full} {names[0]}  {s.half} {names[1]}"
        lines = [f"  {s.bold(f'phase {self.phase} of 3')} {s.dot} {self.phase_title}    "
                 f"{s.dim(t_text)}",
                 s.dim(f"  {'calls/s':<10}{names[0]:>9}{names[1]:>9}   {legend:<{bar_w}} total")]
        for pod in BACKENDS:
            state = self.state[pod]
            if state != "in DNS":
                why = {"absent": "not created yet", "starting": "starting",
                       "serving": "serving, not in DNS yet"}[state]
                lines.append(s.dim(f"  {pod:<10}({why})"))
                continue
            per = [entry["calls"].get(c, {}).get(pod, 0) / dt for c in names]
            cells = [int(round(v / full_scale * bar_w)) for v in per]
            bar = s.client(0, s.full * cells[0]) + s.client(1, s.half * cells[1])
            pad = " " * max(0, bar_w - sum(cells))
            lines.append(f"  {pod:<10}{per[0]:>9.0f}{per[1]:>9.0f}   {bar}{pad} {sum(per):>5.0f}")
        err = sum(entry["errors"].values()) / dt
        total = sum(sum(c.values()) for c in entry["calls"].values()) / dt
        err_text = s.red(f"failed {err:.0f}/s") if err else s.dim("failed 0/s")
        lines.append(s.dim(f"  {'all Pods':<28}   {'':<{bar_w}} {total:>5.0f}") + "   " + err_text)
        return [fit(line, cols - 1) for line in lines]

    def plain(self, entry):
        dt = max(entry["t1"] - entry["t0"], 0.2)
        parts = []
        for pod in BACKENDS:
            if self.state[pod] != "in DNS":
                continue
            per = [entry["calls"].get(c, {}).get(pod, 0) / dt for c in CLIENTS]
            parts.append(f"{pod} {sum(per):3.0f} ({per[0]:2.0f}+{per[1]:2.0f})")
        err = sum(entry["errors"].values()) / dt
        return f"  t={entry['t1']:3.0f}s  " + "  ".join(parts) + f"  failed {err:.0f}"

    # --- pieces of the node ----------------------------------------------------------------------

    def start_servers(self, names):
        for name in names:
            self.pods[name] = self.node.add_pod(name, n=BACKENDS[name])
            self.servers[name] = peers.start_server(self.pods[name], wait=False,
                                                    flags={"lifetime": SERVER_LIFETIME})
            self.state[name] = "starting"
        self.redraw()

        def serving():
            for name in names:
                proc = self.servers[name][0]
                if not proc.alive():
                    raise DemoFailure(f"gRPC server {name} exited\n{proc.tail(15)}")
                if not any(line.startswith("grpc_server: listening")
                           for line in proc.stdout_lines()):
                    return False
                if self.state[name] != "serving":
                    self.state[name] = "serving"
                    self.redraw()
            return True
        self.wait(serving, 30, f"the gRPC servers of {', '.join(names)} to serve")

    def in_dns(self):
        return [n for n in BACKENDS if self.state[n] in ("serving", "in DNS")]

    def publish(self):
        """The Service's Pods as kubelet and the endpoints controller would: DNS records of
        the headless name (dnsmasq re-reads them) and kube-proxy's DNAT set."""
        names = self.in_dns()
        self.dnsmasq.set_records({HEADLESS: [self.pods[n].ip4 for n in names],
                                  CLUSTER_NAME: [VIP4, VIP6]})
        self.echo.set_backends([self.pods[n] for n in names])
        for n in names:
            self.state[n] = "in DNS"
        self.redraw()

    def start_clients(self, generation):
        target = peers.target(VIP4, PORT)
        for pod in self.client_pods.values():
            self.clients.append(Client(pod, generation, target, self.rate))

    def running_clients(self):
        return [c for c in self.clients if c.proc.alive()]

    def admin(self, path):
        return simprom.http_get(self.node, self.node.addr4, ADMIN_PORT, path, timeout=3.0)

    def spindle_endpoints(self):
        """{address: entry} of service echo in spindle's /endpoints, or None."""
        try:
            r = self.admin("/endpoints")
            if r.status != 200:
                return None
            for svc in r.json().get("services", []):
                if svc.get("name") == "echo":
                    return {e["address"]: e for e in svc.get("endpoints", [])}
        except (OSError, ValueError):
            return None
        return None

    def wait_spindle_endpoints(self, names, timeout):
        want = {f"{self.pods[n].ip4}:{PORT}" for n in names}
        return self.wait(lambda: (self.spindle_endpoints() or {}).keys() == want, timeout,
                         f"spindle's /endpoints to list {', '.join(names)}",
                         details=lambda: self.spindle.tail(20))

    # --- measuring -------------------------------------------------------------------------------

    def window(self, phase, since_label, settle):
        """Calls and failures of the ticks of `phase` that began `settle` s or more after
        the mark `since_label`: the steady part of the phase."""
        start = self.marks_rel(since_label) + settle - 0.05
        per_client = {c: collections.Counter() for c in CLIENTS}
        errors = 0
        seconds = 0.0
        for e in self.ticks:
            if e["phase"] != phase or e["t0"] < start:
                continue
            seconds += e["t1"] - e["t0"]
            for c, counts in e["calls"].items():
                per_client[c].update(counts)
            errors += sum(e["errors"].values())
        total = collections.Counter()
        for counts in per_client.values():
            total.update(counts)
        return {"clients": per_client, "total": total, "errors": errors, "seconds": seconds,
                "calls": sum(total.values())}

    def enough_calls(self, w, phase):
        want = CALLS_MIN * self.rate * len(CLIENTS) * w["seconds"]
        if w["seconds"] < STEADY_MIN - 1.5:
            self.fail(phase, f"its steady part lasted only {w['seconds']:.1f} s: "
                             f"the machine may be too busy")
            return False
        if w["calls"] < want:
            tails = "\n".join(c.proc.tail(8) for c in self.clients[-len(CLIENTS):])
            self.fail(phase, f"only {w['calls']} calls in {w['seconds']:.0f} s "
                             f"(want {want:.0f} or more)\n{tails}")
            return False
        if w["errors"] > ERRORS_MAX * (w["calls"] + w["errors"]):
            self.fail(phase, f"{w['errors']} failed calls of {w['calls'] + w['errors']}")
            return False
        return True

    def fail(self, phase, message):
        self.failures.append(f"phase {phase}: {message}")
        self.d.log(f"  {self.s.red(self.s.bad)} {self.s.red(message)}")

    def passed(self, message):
        self.d.log(f"  {self.s.green(self.s.ok)} {message}")

    @staticmethod
    def pct(part, whole):
        return 100.0 * part / whole if whole else 0.0

    def record_result(self, phase, w, label):
        self.results[phase] = {"total": w["total"], "calls": w["calls"], "errors": w["errors"],
                               "label": label, "ok": not any(f.startswith(f"phase {phase}:")
                                                             for f in self.failures)}

    # --- the story -------------------------------------------------------------------------------

    def header(self, text):
        self.d.log("")
        self.d.log(self.s.bold(f"== {text}"))

    def setup(self):
        s = self.s
        self.header("A simulated Kubernetes node")
        self.node = sim.Node()
        self.client_pods = {name: self.node.add_pod(name, n=n) for name, n in CLIENTS.items()}
        self.echo = self.node.add_service("echo", vip4=VIP4, vip6=VIP6, ports=[PORT])
        self.dnsmasq = simdns.Dnsmasq(self.node, ttl=TTL, records={CLUSTER_NAME: [VIP4, VIP6]})
        first = list(BACKENDS)[:FIRST]
        self.start_servers(first)
        self.publish()
        d = self.d.log
        d(f"  node        {self.node.netns.name} (network namespaces, cgroups, nftables), "
          f"{self.node.addr4}")
        d(f"  Service     echo, ClusterIP {VIP4}:{PORT}, kube-proxy-like DNAT:")
        d("              a random Pod per connection")
        d(f"  DNS         dnsmasq on {self.dnsmasq.server}, TTL {TTL} s:")
        d(f"              {CLUSTER_NAME:<33}{s.arrow} {VIP4} (the ClusterIP)")
        d(f"              {HEADLESS:<33}{s.arrow} one address per Pod (headless)")
        d(f"  backends    {', '.join(f'{n} {self.pods[n].ip4}' for n in first)}")
        d("              tests/grpc/server.py (real gRPC), answers with x-pod: <Pod name>")
        d(f"  clients     {', '.join(f'{n} {p.ip4}' for n, p in self.client_pods.items())}: "
          f"demo/demo_client.py,")
        d(f"              ONE gRPC channel each to {VIP4}:{PORT}, {self.rate:g} calls/s,")
        d("              counting which Pod answered (x-pod)")

    def phase1(self):
        s = self.s
        self.phase, self.phase_title = 1, "without spindle: kube-proxy only"
        self.header("Phase 1: without spindle")
        self.d.log("  kube-proxy picks a Pod per CONNECTION, and a gRPC channel keeps its")
        self.d.log("  connection: watch each client stay on the Pod it got.")
        self.t_origin = time.monotonic()
        self.marks["phase1"] = self.t_origin
        self.d.plain_only(f"  one line per second: calls/s per backend Pod "
                          f"({' + '.join(CLIENTS)})")
        self.start_clients(1)
        self.marks["clients1"] = time.monotonic()
        self.next_tick = time.monotonic() + TICK
        self.d._write("\033[?25l" if self.d.live else "")
        self.run_until_phase_time(self.phase_s)
        self.d.freeze()

        w = self.window(1, "clients1", SETTLE_START)
        if self.enough_calls(w, 1):
            pinned, spread = [], []
            for c, counts in w["clients"].items():
                total = sum(counts.values())
                pod, n = counts.most_common(1)[0] if counts else ("none", 0)
                share = n / total if total else 0.0
                (pinned if share >= PINNED_MIN else spread).append((c, pod, share, counts))
            if spread:
                c, _, _, counts = spread[0]
                split = ", ".join(f"{p} {self.pct(n, sum(counts.values())):.0f}%"
                                  for p, n in counts.most_common())
                self.fail(1, f"pinning not seen: {c} spread its calls ({split}); want one Pod "
                             f"with {PINNED_MIN:.0%} or more")
            else:
                self.passed("each client is pinned: " + ", ".join(
                    f"{c} {s.arrow} {pod} ({share:.0%})" for c, pod, share, _ in pinned))
                busy = sorted({pod for _, pod, _, _ in pinned})
                idle = [p for p in self.in_dns() if p not in busy]
                verb = "gets" if len(idle) == 1 else "get"
                if len(busy) == 1:
                    self.d.log(f"    both drew {busy[0]} this time: {', '.join(idle)} {verb} "
                               f"nothing, however busy it is.")
                elif idle:
                    self.d.log(f"    {', '.join(idle)} {verb} nothing, however busy the "
                               f"others are.")
        self.record_result(1, w, "1 no spindle")

    def spindle_config(self):
        # Every admin page on the node address, to look at by hand (by default that port
        # serves only /metrics, /ready and /healthz: every Pod of the node reaches it).
        cfg = sim.spindle.config(self.node, extra={"admin": {
            "listen": f"{self.node.addr4}:{ADMIN_PORT}",
            "pages": ["endpoints", "config", "status"]}})
        cfg["dns"] = {"servers": [self.dnsmasq.server], "refresh": {"min": "1s", "max": "5s"}}
        cfg["services"] = [{"name": "echo",
                            "intercept": [f"{VIP4}:{PORT}", f"[{VIP6}]:{PORT}"],
                            "endpoints": {"dns": HEADLESS},
                            "port": PORT}]
        return cfg

    def phase2(self):
        s = self.s
        self.phase, self.phase_title = 2, "spindle on"
        self.marks["phase2"] = time.monotonic()
        self.header("Phase 2: spindle starts on the node")
        cfg = self.spindle_config()
        self.d.log(s.dim("  spindle.yaml, the parts that matter:"))
        shown = sim.spindle.to_yaml({"services": cfg["services"], "admin": cfg["admin"],
                                     "dns": {"servers": cfg["dns"]["servers"]}})
        for line in shown.rstrip().splitlines():
            self.d.log(s.dim("    " + line))
        t0 = time.monotonic()
        self.spindle = sim.Spindle(self.node, cfg).start(wait_ready=False)
        self.wait(lambda: any(re.search(sim.spindle.READY, line)
                              for line in self.spindle.stderr_lines()), 15,
                  "spindle to be ready", details=lambda: self.spindle.tail(20))
        first = list(BACKENDS)[:FIRST]
        self.wait_spindle_endpoints(first, 10)
        self.d.log(f"  spindle ready in {(time.monotonic() - t0) * 1000:.0f} ms; its endpoints "
                   f"from DNS: {', '.join(first)}")
        self.d.log("  The running clients still call one Pod each: their connections were made")
        self.d.log("  before spindle, and the kernel only redirects new connects.")
        self.run_for(STILL_PINNED_S)
        self.d.log("  Now the client Pods restart, as a rollout would: same code, same config.")
        for c in self.running_clients():
            c.stop()
        self.start_clients(2)
        self.marks["clients2"] = time.monotonic()
        self.phase_title = "spindle on, clients restarted"
        self.run_for(max(self.marks["phase2"] + self.phase_s,
                         self.marks["clients2"] + SETTLE_START + STEADY_MIN) - time.monotonic())
        self.d.freeze()

        w = self.window(2, "clients2", SETTLE_START)
        if self.enough_calls(w, 2):
            fair = 1.0 / FIRST
            lo, hi = fair * (1 - EVEN_TOLERANCE), fair * (1 + EVEN_TOLERANCE)
            shares = {p: w["total"].get(p, 0) / w["calls"] for p in first}
            uneven = {p: v for p, v in shares.items() if not lo <= v <= hi}
            text = ", ".join(f"{p} {v:.1%}" for p, v in shares.items())
            narrow = []
            for c, counts in w["clients"].items():
                n = sum(counts.values())
                low = [p for p in first if n == 0 or counts.get(p, 0) / n < CLIENT_SPREAD_MIN]
                if low:
                    split = ", ".join(f"{p} {self.pct(counts.get(p, 0), n):.0f}%" for p in first)
                    narrow.append(f"{c} ({split})")
            if uneven:
                self.fail(2, f"spread not even: {text}; want each within {lo:.1%}-{hi:.1%} "
                             f"(fair share {s.pm}{EVEN_TOLERANCE:.0%})")
            elif narrow:
                self.fail(2, f"a client does not reach every Pod: {'; '.join(narrow)}")
            else:
                self.passed(f"calls spread evenly: {text}")
                self.d.log(f"    (each within {lo:.1%}-{hi:.1%}, fair share {s.pm}"
                           f"{EVEN_TOLERANCE:.0%}); each client reaches all {FIRST} Pods")
        self.record_result(2, w, "2 spindle")

    def phase3(self):
        self.phase, self.phase_title = 3, "scaling echo from 3 to 5 Pods"
        self.marks["phase3"] = time.monotonic()
        self.header("Phase 3: the Service scales from 3 to 5 Pods")
        new = list(BACKENDS)[FIRST:]
        self.start_servers(new)
        self.publish()
        t_dns = time.time()
        self.marks["dns3"] = time.monotonic()
        self.d.log(f"  {', '.join(new)} serve and join the Service: DNS now lists "
                   f"{len(BACKENDS)} Pods.")
        self.wait_spindle_endpoints(list(BACKENDS), 10)
        self.d.log(f"  spindle's endpoints follow in "
                   f"{time.monotonic() - self.marks['dns3']:.1f} s, no restart, no app change")
        self.phase_title = "5 Pods in DNS"
        # the steady part must be long enough to judge, whatever the servers' start took
        self.run_for(max(self.marks["phase3"] + self.phase_s,
                         self.marks["dns3"] + SETTLE_DNS + STEADY_MIN) - time.monotonic())
        self.d.freeze()

        firsts = {}
        for n in new:
            starts = [e["t"] for e in self.servers[n][1].starts(method="Unary") if e["t"] >= t_dns]
            firsts[n] = min(starts) - t_dns if starts else None
        self.d.log("  first call on " + ", ".join(
            f"{n} {t:.1f} s" if t is not None else f"{n} never" for n, t in firsts.items())
            + " after the DNS change")
        w = self.window(3, "dns3", SETTLE_DNS)
        if self.enough_calls(w, 3):
            shares = {p: w["total"].get(p, 0) / w["calls"] for p in BACKENDS}
            text = ", ".join(f"{p} {v:.1%}" for p, v in shares.items())
            low = [p for p in new if shares[p] < NEW_POD_MIN]
            if low:
                self.fail(3, f"new Pods below {NEW_POD_MIN:.0%} of the calls: {text}")
            else:
                self.passed("the new Pods take their share:")
                self.d.log(f"    {text}")
        self.record_result(3, w, "3 five Pods")

    def finish(self):
        s = self.s
        for c in self.running_clients():
            c.stop()
        self.header("Summary: share of the calls per backend Pod (steady part of each phase)")
        phases = [p for p in (1, 2, 3) if p in self.results]
        width = 16
        self.d.log("  " + f"{'':<10}" + "".join(f"{self.results[p]['label']:>{width}}"
                                                for p in phases))
        for pod in BACKENDS:
            cells = []
            for p in phases:
                r = self.results[p]
                served = pod in list(BACKENDS)[:FIRST] or p == 3  # the Pod was in the Service
                cells.append(f"{self.pct(r['total'].get(pod, 0), r['calls']):.1f}%"
                             if served and pod in self.pods else "-")
            self.d.log("  " + f"{pod:<10}" + "".join(f"{c:>{width}}" for c in cells))
        self.d.log("  " + f"{'calls':<10}" + "".join(f"{self.results[p]['calls']:>{width}}"
                                                    for p in phases))
        self.d.log("  " + f"{'failed':<10}" + "".join(f"{self.results[p]['errors']:>{width}}"
                                                     for p in phases))
        verdicts = {1: "pinned", 2: "even", 3: "new Pods"}
        self.d.log("  " + f"{'shows':<10}" + "".join(
            f"{(verdicts[p] + ' ' + (s.ok if self.results[p]['ok'] else s.bad)):>{width}}"
            for p in phases))

        if self.spindle is not None:
            self.header("spindle's admin API")
            self.show_endpoints()
            base = f"http://{self.node.addr4}:{ADMIN_PORT}"
            self.d.log("  Where to look, on admin.listen in the node:")
            self.d.log(f"    {base}/           status page (HTML)")
            self.d.log(f"    {base}/endpoints  endpoints as JSON, as above")
            self.d.log(f"    {base}/metrics    Prometheus metrics")
            self.d.log(s.dim("  They live in the node's netns: run with --hold 120 and meanwhile"))
            self.d.log(s.dim(f"    ip netns exec {self.node.netns.name} curl -s {base}/metrics"))

    def show_endpoints(self):
        s = self.s
        try:
            r = self.admin("/endpoints")
            doc = r.json()
        except (OSError, ValueError) as e:
            self.fail(0, f"GET /endpoints failed: {e}")
            return
        by_ip = {f"{p.ip4}:{PORT}": n for n, p in self.pods.items()}
        counted = 0
        for svc in doc.get("services", []):
            eps = svc.get("endpoints", [])
            self.d.log(f"  GET /endpoints {s.arrow} {r.status}: service {svc.get('name')}, "
                       f"balance {svc.get('balance')}, {len(eps)} endpoints")
            self.d.log(s.dim(f"    {'address':<19}{'Pod':<8}{'state':<9}{'calls':>6}"
                             f"{'active':>8}{'latency':>10}{'conns':>7}"))
            for e in eps:
                counted += int(e.get("calls", 0))
                latency = f"{float(e.get('latency_ewma_ms', 0)):.1f} ms"
                self.d.log(f"    {e.get('address', '?'):<19}{by_ip.get(e.get('address'), '?'):<8}"
                           f"{e.get('state', '?'):<9}{e.get('calls', 0):>6}"
                           f"{e.get('active_streams', 0):>8}{latency:>10}"
                           f"{e.get('upstream_connections', 0):>7}")
        through = sum(c.totals()[0] for c in self.clients[len(CLIENTS):])
        self.d.log(s.dim(f"    spindle counted {counted} calls; the restarted clients got "
                         f"{through} answers"))
        try:
            r = self.admin("/metrics")
        except OSError as e:
            self.fail(0, f"GET /metrics failed: {e}")
            return
        series = [line for line in r.text.splitlines() if line and not line.startswith("#")]
        requests = 0.0
        for line in series:
            if line.startswith("spindle_requests_total{") and 'service="echo"' in line:
                try:
                    requests += float(line.rsplit(" ", 1)[1])
                except ValueError:
                    pass
        self.d.log(f"  GET /metrics {s.arrow} {r.status}: {len(series)} series; "
                   f"spindle_requests_total{{service=\"echo\"}} = {requests:.0f}")

    def hold(self, seconds):
        if seconds <= 0 or self.spindle is None:
            return
        self.d.log("")
        self.d.log(f"Holding the node for {seconds:g} s (Ctrl-C ends it sooner); try:")
        self.d.log(f"  ip netns exec {self.node.netns.name} curl -s "
                   f"http://{self.node.addr4}:{ADMIN_PORT}/")
        end = time.monotonic() + seconds
        try:
            for _ in range(int(seconds) + 2):
                left = end - time.monotonic()
                if left <= 0:
                    break
                time.sleep(min(1.0, left))
        except KeyboardInterrupt:  # the documented way to end the hold: not a failure
            self.d.log("")


def preflight():
    """Why the demo cannot run here, or None."""
    if os.geteuid() != 0:
        return "make demo needs root (network namespaces, cgroups, BPF): run it with sudo"
    if not os.access(sim.SPINDLE_BIN, os.X_OK):
        return f"{sim.SPINDLE_BIN} is missing: run make first"
    why = simdns.available()
    if why:
        return why + " (make deps)"
    p = subprocess.run([sim.PYTHON, "-c", "import grpc"], capture_output=True, timeout=60)
    if p.returncode != 0:
        return "python3-grpcio is not installed for /usr/bin/python3 (make deps)"
    if sim.cgroup2_mount() is None:
        return "no cgroup2 mount found in /proc/self/mountinfo"
    return None


def main(argv=None):
    ap = argparse.ArgumentParser(description="spindle's demo: per-call gRPC balancing on a "
                                             "simulated node, with no app change")
    ap.add_argument("--record", metavar="FILE", help="also write the run, as plain lines, to FILE")
    ap.add_argument("--phase-seconds", type=float, default=15.0,
                    help="length of each phase (10-60, default 15)")
    ap.add_argument("--rate", type=float, default=80.0,
                    help="calls per second of each client (20-200, default 80)")
    ap.add_argument("--hold", type=float, default=0.0, metavar="S",
                    help="keep the node up S seconds after the summary (at most 600)")
    args = ap.parse_args(argv)
    args.phase_seconds = min(max(args.phase_seconds, 10.0), 60.0)
    args.rate = min(max(args.rate, 20.0), 200.0)
    args.hold = min(max(args.hold, 0.0), 600.0)

    why = preflight()
    if why:
        print(f"demo: {why}", file=sys.stderr)
        return 2
    record = None
    if args.record:
        try:
            record = open(args.record, "w", encoding="utf-8")
        except OSError as e:
            print(f"demo: cannot write --record file: {e}", file=sys.stderr)
            return 2

    tty = sys.stdout.isatty() and os.environ.get("TERM", "dumb") != "dumb" \
        and shutil.get_terminal_size((80, 24)).columns >= 70
    encoding = (sys.stdout.encoding or "").lower().replace("-", "")
    style = Style(color=tty and not os.environ.get("NO_COLOR"), unicode=encoding == "utf8")
    display = Display(live=tty, record=record)
    demo = Demo(args, display, style)
    t_start = time.monotonic()
    code = 0
    try:
        try:
            demo.setup()
            demo.phase1()
            demo.phase2()
            demo.phase3()
            demo.finish()
        except DemoFailure as e:
            demo.failures.append(str(e))
            display.freeze()
            display.log(style.red(f"demo: {e}"))
        except Exception as e:  # a failure of the set-up itself: say what, then clean up
            demo.failures.append(f"{type(e).__name__}: {e}")
            display.freeze()
            display.log(style.red("demo: " + traceback.format_exc().rstrip()))
        if demo.failures:
            sim.paths.keep_logs()
        ok = not demo.failures
        display.log("")
        if ok:
            display.log(style.green(style.bold(
                "demo ok: every call balanced over all the Pods, new ones too, no app "
                "change")))
        else:
            display.log(style.red(style.bold("demo FAILED: " + demo.failures[0].splitlines()[0])))
            for f in demo.failures[1:]:
                display.log(style.red("  also: " + f.splitlines()[0]))
            display.log(f"  logs kept in {sim.paths.current_workdir()}")
        code = 0 if ok else 1
        demo.hold(args.hold if ok else 0)
    except KeyboardInterrupt:
        display.freeze()
        display.log("")
        display.log("demo: interrupted, cleaning up")
        code = 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up
        display.close()
        try:
            if demo.node is not None:
                demo.node.close()
        except Exception as e:  # reported below with whatever it left
            display.log(f"demo: clean-up: {type(e).__name__}: {e}")
        left = sim.leftovers() + [f"process {p.name} (pid {p.pid})" for p in sim.proc.live()]
        if left:
            display.log(f"demo: left behind: {', '.join(left)}")
            code = code or 1
        else:
            display.log(style.dim(f"cleaned up: no namespaces, cgroups or processes left "
                                  f"({time.monotonic() - t_start:.0f} s in all)"))
        if record:
            record.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
