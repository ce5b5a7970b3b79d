"""`make demo` run non-interactively, as CI runs it: demo/demo.py in its shortest mode
(--phase-seconds 10, the least it takes; about 35 s in all) with --record FILE.

The test reads the recorded run itself, rather than trusting the demo's own verdict: the
one-line-per-second view (calls/s per Pod, split per client) and the summary table (each
Pod's share of the steady part of each phase, and its call count). It asserts that the
Pods' shares went from pinned to even to shared with the new Pods, and that the run left
nothing behind. Everything the demo makes is named after its PID (tests/sim/paths.py:
netns spd<pid>-*, cgroups spindle-test-<pid>-*), so the test watches the run from outside
while it goes and compares only those objects: other runs on the machine are left alone.
"""

import json
import math
import os
import re
import signal
import subprocess
import tempfile
import threading
import time

import sim
from support import SimTestCase, grpcio_missing

DEMO = os.path.join(sim.REPO, "demo", "demo.py")
PHASE_SECONDS = 10       # the shortest the demo allows
DEMO_TIMEOUT = 100       # s; the run takes about 35
POLL = 0.25              # s between two looks at what the demo made

PINNED_MIN = 0.95        # phase 1: a client's calls on its one Pod
CLIENT_SPREAD_MAX = 0.5  # phase 2: no Pod takes half of one client's calls (pinned: 100%)
SIGMAS = 4               # phases 2 and 3: shares within 4 standard deviations of fair
CALLS_MIN = 500          # a judged phase holds at least this many calls
ERRORS_MAX = 0.01        # failed calls, of all calls of a phase (the demo's own limit)

TICK = re.compile(r"^\s+t=\s*(\d+)s\s+(.*?)\s+failed (\d+)$")
TICK_POD = re.compile(r"(echo-\d+)\s+(\d+) \(\s*(\d+)\+\s*(\d+)\)")
PHASE = re.compile(r"^== Phase (\d)")


def parse_record(text):
    """{"ticks": {phase: [(t, {pod: (client_a, client_b)}, failed)]}, "marks": {phase:
    [(line, tick index)]}, "summary": {"calls": [..], "failed": [..], pod: [share or None]}}"""
    ticks, marks, summary = {}, {}, {}
    phase, in_summary = 0, False
    for line in text.splitlines():
        m = PHASE.match(line)
        if m:
            phase = int(m.group(1))
            ticks.setdefault(phase, [])
            marks.setdefault(phase, [])
            continue
        if line.startswith("== "):
            in_summary = line.startswith("== Summary")
            phase = 0
            continue
        m = TICK.match(line)
        if m and phase:
            pods = {p: (int(a), int(b)) for p, _, a, b in TICK_POD.findall(m.group(2))}
            ticks[phase].append((int(m.group(1)), pods, int(m.group(3))))
            continue
        if phase:
            marks[phase].append((line.strip(), len(ticks[phase])))
        if in_summary:
            words = line.split()
            if words and words[0] in ("calls", "failed"):
                summary[words[0]] = [int(w) for w in words[1:]]
            elif words and re.fullmatch(r"echo-\d+", words[0]):
                summary[words[0]] = [None if w == "-" else float(w.rstrip("%")) / 100
                                     for w in words[1:]]
    return {"ticks": ticks, "marks": marks, "summary": summary}


def per_client(ticks):
    """{client index: {pod: calls/s summed over the ticks}}."""
    out = {0: {}, 1: {}}
    for _, pods, _ in ticks:
        for pod, rates in pods.items():
            for i in (0, 1):
                out[i][pod] = out[i].get(pod, 0) + rates[i]
    return out


# --- what the demo's run made, seen from outside -------------------------------------------

def _stat_fields(pid):
    """(ppid, starttime) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(")") + 2:].split()  # the name may hold spaces and parentheses
    return int(rest[1]), int(rest[19])


def _processes():
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat_fields(int(name))
            if fields:
                out[int(name)] = fields
    return out


def _net_ns_inode(pid):
    try:
        link = os.readlink(f"/proc/{pid}/ns/net")  # "net:[4026532xxx]"
    except OSError:
        return None
    return int(link[link.index("[") + 1:-1])


def cgroup_links():
    """[{"id", "cgroup_id", "attach_type", ...}] of every cgroup BPF link on the machine."""
    p = subprocess.run(["bpftool", "link", "list", "-j"], capture_output=True, text=True,
                       timeout=30)
    if p.returncode != 0:
        raise AssertionError(f"bpftool link list failed: {p.stderr.strip()}")
    return [link for link in json.loads(p.stdout or "[]") if link.get("type") == "cgroup"]


class RunWatcher:
    """Polls, while the demo runs, what belongs to its PID: network namespaces (name and
    inode), cgroups (path and id), descendant processes (PID and start time), and the BPF
    links on those cgroups. Bounded by the demo's own deadline."""

    def __init__(self, pid, deadline):
        self.pid = pid
        self.deadline = deadline
        self.netns_prefix = f"spd{pid}-"
        self.cgroup_prefix = f"spindle-test-{pid}-"
        self.mount = sim.cgroup2_mount()
        self.netns = {}      # name -> inode
        self.cgroups = {}    # path -> id
        self.procs = {}      # pid -> starttime
        self.links = {}      # link id -> link
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-watcher", daemon=True)
        self._last_links = 0.0

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(10)

    def _run(self):
        for _ in range(int(DEMO_TIMEOUT / POLL) + 2):
            if self._stop.is_set() or time.monotonic() > self.deadline:
                return
            self.look()
            self._stop.wait(POLL)

    def look(self):
        for name in self.netns_names():
            if name not in self.netns:
                try:
                    self.netns[name] = os.stat(os.path.join("/run/netns", name)).st_ino
                except OSError:
                    pass
        for path in self.cgroup_paths():
            if path not in self.cgroups:
                try:
                    self.cgroups[path] = os.stat(path).st_ino
                except OSError:
                    pass
        procs = _processes()
        children = {}
        for pid, (ppid, _) in procs.items():
            children.setdefault(ppid, []).append(pid)
        todo = list(children.get(self.pid, []))
        for _ in range(len(procs)):
            if not todo:
                break
            pid = todo.pop()
            self.procs.setdefault(pid, procs[pid][1])
            todo.extend(children.get(pid, []))
        # bpftool is a process of its own: once a second is enough to see the links
        if time.monotonic() - self._last_links >= 1.0:
            self._last_links = time.monotonic()
            ids = set(self.cgroups.values())
            for link in cgroup_links():
                if link.get("cgroup_id") in ids:
                    self.links[link["id"]] = link

    def netns_names(self):
        return [n for n in sim.netns.list_names() if n.startswith(self.netns_prefix)]

    def cgroup_paths(self):
        out = []
        if self.mount and os.path.isdir(self.mount):
            for d in os.listdir(self.mount):
                if d.startswith(self.cgroup_prefix):
                    for root, _, _ in os.walk(os.path.join(self.mount, d)):
                        out.append(root)
        return out

    def left_behind(self):
        """What of the run still exists, as readable strings."""
        left = [f"netns {n}" for n in self.netns_names()]
        left += [f"cgroup {p}" for p in self.cgroup_paths()]
        for pid, start in sorted(self.procs.items()):
            fields = _stat_fields(pid)
            if fields and fields[1] == start:
                left.append(f"process {pid}")
        # a process the polls missed still shows by being in one of the run's namespaces
        inodes = set(self.netns.values())
        for pid in _processes():
            if _net_ns_inode(pid) in inodes:
                left.append(f"process {pid} in one of the run's namespaces")
        ids = set(self.cgroups.values())
        left += [f"BPF link {link['id']} ({link.get('attach_type')}) on cgroup id "
                 f"{link['cgroup_id']}" for link in cgroup_links() if link.get("cgroup_id") in ids]
        return left


class DemoTest(SimTestCase):
    needs_spindle = True

    @classmethod
    def build(cls, stack):
        from sim import dns as simdns
        why = simdns.available()
        if why:
            cls._skip_reason = why
            return
        if grpcio_missing():
            cls._skip_reason = "python3-grpcio is not installed (make deps)"

    def run_demo(self):
        record = os.path.join(sim.paths.workdir(), "demo-record.txt")
        out_path = os.path.join(sim.paths.workdir(), "demo-stdout.txt")
        with open(out_path, "wb") as out:
            proc = subprocess.Popen(
                [sim.PYTHON, DEMO, "--phase-seconds", str(PHASE_SECONDS), "--record", record],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, env={**os.environ, "NO_COLOR": "1"})
        watcher = RunWatcher(proc.pid, time.monotonic() + DEMO_TIMEOUT).start()
        try:
            rc = proc.wait(DEMO_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)  # the demo cleans up on SIGTERM, by PID
            rc = proc.wait(30)
            self.fail(f"the demo ran longer than {DEMO_TIMEOUT} s (rc {rc} after SIGTERM)")
        except BaseException:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            raise
        finally:
            watcher.stop()
        with open(out_path, encoding="utf-8", errors="replace") as f:
            stdout = f.read()
        try:
            with open(record, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            text = ""
        return rc, text, stdout, watcher

    def test_demo_shows_pinned_then_even_then_new_pods_and_leaves_nothing(self):
        rc, text, stdout, watcher = self.run_demo()
        tail = "\n".join(stdout.splitlines()[-40:])
        self.assertEqual(rc, 0, f"the demo exited {rc}:\n{tail}")
        self.assertTrue(text.strip(), "--record wrote nothing")
        self.assertIn("demo ok", text, tail)

        # Nothing of the run is left; and the watcher saw the run's objects while it went,
        # so this is a comparison, not a look at an empty list.
        self.assertGreaterEqual(len(watcher.netns), 6, f"watcher saw {watcher.netns}")
        self.assertGreaterEqual(len(watcher.cgroups), 6, f"watcher saw {watcher.cgroups}")
        self.assertGreaterEqual(len(watcher.procs), 8, f"watcher saw {watcher.procs}")
        self.assertGreaterEqual(len(watcher.links), 1, "watcher saw no BPF link of spindle")
        self.assertEqual(watcher.left_behind(), [], "the demo left these behind")
        self.assertFalse([d for d in os.listdir(tempfile.gettempdir())
                          if d.startswith(watcher.netns_prefix)],
                         "the demo's log folder is left (kept: it thought it failed?)")

        rec = parse_record(text)
        ticks, summary = rec["ticks"], rec["summary"]
        self.assertEqual(sorted(ticks), [1, 2, 3], f"phases recorded: {sorted(ticks)}")
        self.assertEqual(len(summary.get("calls", [])), 3, f"summary: {summary}")

        # Phase 1, without spindle: each client's calls on one Pod.
        for i, counts in per_client(ticks[1]).items():
            total = sum(counts.values())
            self.assertGreater(total, 100, f"client {i} made few calls in phase 1: {counts}")
            top = max(counts, key=counts.get)
            self.assertGreaterEqual(counts[top] / total, PINNED_MIN,
                                    f"phase 1: client {i} was not pinned: {counts}")

        # Phase 2, spindle on, clients restarted: the three Pods' shares are even. Each call
        # is a separate pick, at least as even as independent uniform picks (least_request
        # breaks ties at random and steers away from busier Pods), so a Pod's count of N
        # calls spreads at most like Binomial(N, 1/3): within SIGMAS standard deviations
        # sqrt(p(1-p)/N) of 1/3. With about 950 calls that is +-6 points (a pinned Pod is
        # 67 points off); a false failure has odds below 1e-4.
        self.assertEvenShares(summary, 1, ["echo-1", "echo-2", "echo-3"])
        restart = next((i for line, i in rec["marks"][2] if "client Pods restart" in line), None)
        self.assertIsNotNone(restart, "phase 2 does not say the clients restarted")
        after = ticks[2][restart + 2:]  # the clients' first seconds: loading grpcio, connecting
        self.assertGreaterEqual(len(after), 5, f"phase 2 after the restart: {after}")
        for i, counts in per_client(after).items():
            total = sum(counts.values())
            for pod in ("echo-1", "echo-2", "echo-3"):
                self.assertGreater(counts.get(pod, 0), 0, f"phase 2: client {i} never reached "
                                                          f"{pod}: {counts}")
            self.assertLess(max(counts.values()) / total, CLIENT_SPREAD_MAX,
                            f"phase 2: client {i} still mostly on one Pod: {counts}")

        # Phase 3, five Pods: the two new ones take their share (1/5 of the calls, less at
        # most SIGMAS standard deviations), although no client reconnected.
        n = summary["calls"][2]
        self.assertGreaterEqual(n, CALLS_MIN, f"phase 3 judged on {n} calls only")
        low = 0.2 - SIGMAS * math.sqrt(0.2 * 0.8 / n)
        for pod in ("echo-4", "echo-5"):
            self.assertIsNone(summary[pod][1], f"{pod} had a share before it existed")
            self.assertGreaterEqual(summary[pod][2], low,
                                    f"phase 3: {pod} took {summary[pod][2]:.1%}, under "
                                    f"{low:.1%} of {n} calls; summary {summary}")
        for phase in (0, 1, 2):
            calls, failed = summary["calls"][phase], summary["failed"][phase]
            self.assertLessEqual(failed, ERRORS_MAX * (calls + failed),
                                 f"phase {phase + 1}: {failed} of {calls + failed} calls failed")

    def assertEvenShares(self, summary, column, pods):
        n = summary["calls"][column]
        self.assertGreaterEqual(n, CALLS_MIN, f"phase {column + 1} judged on {n} calls only")
        fair = 1.0 / len(pods)
        tol = SIGMAS * math.sqrt(fair * (1 - fair) / n)
        shares = {p: summary[p][column] for p in pods}
        for pod, share in shares.items():
            self.assertLessEqual(abs(share - fair), tol,
                                 f"phase {column + 1}: {pod} took {share:.1%} of {n} calls, "
                                 f"want {fair:.1%} +-{tol:.1%}; all {shares}")
