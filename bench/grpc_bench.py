#!/usr/bin/python3
"""make bench (gRPC path): spindle against no proxy and against the proxies users would pick
instead (HAProxy, nginx, nghttpx), the same workloads in one run, on a simulated node.

Systems, each with one worker thread, in front of the same two backend Pods:

  - direct:  no proxy. The client dials the Service VIP, DNAT'd per connection to a random
             Pod (kube-proxy): the limit of the machine, and the pinning spindle removes;
  - spindle: the client dials the VIP; spindle's BPF redirects the connect to spindle
             (proxy.workers 1, upstream.source node), which sends every call to one of the
             two Pods over connections made from the node;
  - spindle-epoll: spindle on its epoll engine (proxy.io_engine epoll), as where io_uring is
             refused; spindle itself runs io_uring (proxy.io_engine io_uring, so that it
             cannot fall back unnoticed). The pods workload runs on io_uring only;
  - spindle-pod: the same with upstream.source pod: every upstream connection is made in the
             calling Pod's network namespace, pooled per (Pod, endpoint). It runs the pods
             workload only: with one client Pod its pools are the node mode's (one connection
             per endpoint), so the other workloads would repeat spindle's figures;
  - haproxy: HAProxy, nbthread 1, `proto h2` on both sides, roundrobin;
  - nginx:   nginx, worker_processes 1, grpc_pass to an upstream with keepalive;
  - nghttpx: nghttpx --workers=1, h2c frontend, h2c backends (proto=h2).
  The three proxies listen on the node address (198.18.0.1); the client dials them directly,
  as a client configured with a proxy address would. Only spindle is reached by redirect.

Rounds are interleaved (direct, spindle, haproxy, nginx, nghttpx, then again) because the
machine is noisy; each system's round starts fresh backends and a fresh proxy. Figures are
medians over rounds, with the min–max of the per-round values.

Workloads (h2load in a client Pod, POSTs of gRPC-framed protobuf messages, `content-type:
application/grpc`, `te: trailers`; the backend bench/grpc_backend.cc answers each call with
headers, messages and the trailer `grpc-status: 0`):

  - unary_c2:  100-byte messages, `-c 2 -m 100` (few connections, many streams: the case
               spindle exists for), for --seconds;
  - unary_c16: 100-byte messages, `-c 16 -m 32`;
  - big_64k:   64 KiB request and answer, `-c 2 -m 16`;
  - stream:    server streaming: 100-byte request, 100 answers of 1 KiB each, `-c 2 -m 16`;
               counted in messages (from the backends' own counts);
  - latency:   unary_c2 open loop at a fixed rate (h2load --rps) of half the direct
               unary_c2 calls/s of the same round; p50/p99 from h2load's --log-file;
  - rtt:       one call at a time (h2load -c 1 -m 1) for --seconds: the round trip a hop
               adds without any queue; p50/p99 from h2load's --log-file. The open-loop figures
               above include h2load's own pacing of --rps (at 20,000 calls/s, direct's p50
               was 802 µs where one call's round trip is 46 µs), this one does not;
  - idle:      idle HTTP/2 connections (bench/idle_conns.py: preface and SETTINGS both
               ways), opened in two batches of --idle-conns (1000), kept open together.
               Memory per connection = VmRSS growth of the proxy's processes (for direct: of
               the backends) over the second batch, divided by its size: what one more
               connection costs. The first batch also pays one-time costs (spindle's receive
               buffers are touched the first time the kernel fills them: up to 1 MiB per
               worker); its figure is reported too. A third batch makes one call on each
               connection before it goes idle, as most idle gRPC channels have: its growth
               per connection is reported as "after one call";
  - connect:   connection set-up rate: h2load -c 500 -n 500 -m 1, each new connection makes
               one call; connections per second over h2load's run time;
  - pods:      upstream.source pod against node (spindle and spindle-pod only, each on a
               fresh spindle and fresh backends): 16 client Pods (each its own netns and
               cgroup) call at once, each over one connection, `-c 1 -m 16` (one busy gRPC
               channel per Pod); the two modes run one just after the other, in turns
               first. A warm-up of 1 s of calls from every Pod first fills the pools (in pod
               mode a connection per Pod and endpoint), then the measured run of
               --seconds: calls/s (sum over the Pods) and spindle's CPU per call. Upstream
               connections open = spindle_upstream_connections_active from spindle's
               /metrics, summed over endpoints, after the run. Then --new-pods (16) Pods made
               for the purpose call one at a time (bench/first_call.py): the time from
               connect() to the end of a new Pod's first call, then two calls at once (which
               least_request sends to both endpoints, so in pod mode the Pod ends with a
               connection of its own to each), then a call on a new connection (the pools
               warm). Memory per pooled upstream connection, measured before the warm-up:
               after 1000 calls from the first client Pod (spindle's one-time costs), the 15
               others run bench/first_call.py one at a time; spindle's RSS growth over them
               divided by the upstream connections they added (pod mode: 2 per Pod, per
               worker). Node mode adds none; its RSS growth per calling Pod is the control
               (what a Pod costs in both modes: its downstream connections, its metric
               series), and the report also gives pod's figure net of it.

Per system: calls/s = calls that succeeded / h2load's time; CPU µs per call = utime + stime of
every process of the proxy (/proc/PID/stat, the process and its children: nginx's and
nghttpx's workers) over the calls the backends answered in the run; calls per backend from the
backends' own counts (SIGUSR1). Outputs bench/results/latest.md (table, targets, versions),
latest.svg (chart) and latest.json (every round's figures); with --perf, one more spindle run
under `perf record` gives spindle-profile.txt (where its CPU goes), and with the pods
workload, one more pods run of each mode gives spindle-pods-node-profile.txt and
spindle-pods-pod-profile.txt.

    bench/grpc_bench.py [--rounds N] [--seconds S] [--systems a,b] [--workloads a,b]
                        [--idle-conns N] [--new-pods N] [--perf] [--out DIR]
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
import sim  # noqa: E402
from sim import prometheus as simprom  # noqa: E402
from sim import spindle as spindle_mod  # noqa: E402

BENCH_DIR = os.path.join(REPO, "bench")
BACKEND_BIN = os.path.join(REPO, "build", "bin", "grpc_backend")
IDLE_CONNS = os.path.join(BENCH_DIR, "idle_conns.py")
FIRST_CALL = os.path.join(BENCH_DIR, "first_call.py")
RESULTS_DIR = os.path.join(BENCH_DIR, "results")

PORT = 50051  # the Service port and the Pods' port
PROXY_PORTS = {"haproxy": 10001, "nginx": 10002, "nghttpx": 10003}
PATH = "/spindle.bench.Bench/Call"
SYSTEMS = ("direct", "spindle", "spindle-epoll", "spindle-pod", "haproxy", "nginx", "nghttpx")
LABELS = {"direct": "direct", "spindle": "spindle", "spindle-epoll": "spindle (epoll)",
          "spindle-pod": "spindle (pod)",
          "haproxy": "HAProxy", "nginx": "nginx", "nghttpx": "nghttpx"}
PROXIES = ("haproxy", "nginx", "nghttpx")  # the ones spindle's targets compare against
SOURCES = {"spindle": "node", "spindle-pod": "pod"}  # spindle's upstream.source per system
ENGINES = {"spindle": "io_uring", "spindle-epoll": "epoll", "spindle-pod": "io_uring"}
ADMIN_PORT = 9901  # spindle's admin.listen port on the node address: /metrics

# name: h2load clients, streams per client, request message bytes, answer message bytes,
# answer messages per call.
LOADS = {
    "unary_c2": dict(c=2, m=100, req=100, reply=100, messages=1,
                     title="unary 100 B, -c 2 -m 100"),
    "unary_c16": dict(c=16, m=32, req=100, reply=100, messages=1,
                      title="unary 100 B, -c 16 -m 32"),
    "big_64k": dict(c=2, m=16, req=65536, reply=65536, messages=1,
                    title="unary 64 KiB each way, -c 2 -m 16"),
    "stream": dict(c=2, m=16, req=100, reply=1024, messages=100,
                   title="server streaming, 100 × 1 KiB per call, -c 2 -m 16"),
}
WORKLOADS = (*LOADS, "latency", "rtt", "idle", "connect", "pods")
CONNECT_COUNT = 500
POD_CLIENTS = 16   # the pods workload: client Pods calling at once,
POD_STREAMS = 16   # each over one connection with this many streams (h2load -c 1 -m 16),
POD_WARMUP = 1     # after this many seconds of calls that fill the pools
POD_TITLE = f"{POD_CLIENTS} client Pods, -c 1 -m {POD_STREAMS} each"
LATENCY_WARMUP = 0.5  # s at the start of the open-loop run left out of the percentiles
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    pass


# --- processes -------------------------------------------------------------------------------

def process_tree(pid):
    """pid and all its descendants (nginx master → worker, nghttpx → worker)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except FileNotFoundError:
            pass
    return out


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        for p in process_tree(pid):
            try:
                with open(f"/proc/{p}/stat") as f:
                    data = f.read()
            except FileNotFoundError:
                continue
            fields = data[data.rindex(")") + 2:].split()
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def rss_kib(pids):
    total = 0
    for pid in pids:
        for p in process_tree(pid):
            try:
                with open(f"/proc/{p}/status") as f:
                    m = re.search(r"^VmRSS:\s+(\d+) kB", f.read(), re.M)
            except FileNotFoundError:
                continue
            total += int(m.group(1)) if m else 0
    return total


COUNT_LINE = re.compile(r"^grpc_backend: calls (\d+) messages (\d+)$")


def backend_counts(proc, timeout=5.0):
    """(calls, messages) the backend has answered so far: SIGUSR1 prints a new count line."""
    def lines():
        return [m.groups() for m in map(COUNT_LINE.match, proc.stdout_lines()) if m]
    before = len(lines())
    proc.signal(signal.SIGUSR1)
    proc.wait_for(lambda: len(lines()) > before, timeout, what="a count line")
    calls, messages = lines()[-1]
    return int(calls), int(messages)


def wait_listening(place, proc, port, timeout=10.0):
    def up():
        if not proc.alive:
            raise BenchError(f"{proc.name} exited before it listened:\n{proc.tail()}")
        return place.run(["ss", "-Hltn", f"sport = :{port}"]).stdout.strip()
    sim.wait_until(up, timeout, what=f"a listener on port {port}")


# --- h2load ----------------------------------------------------------------------------------

def grpc_frame(size):
    """A gRPC length-prefixed protobuf message of about `size` bytes (field 1, bytes)."""
    payload = size - 2
    while True:
        length = bytearray()
        v = payload
        while True:
            length.append((v & 0x7F) | (0x80 if v >= 0x80 else 0))
            v >>= 7
            if not v:
                break
        if 1 + len(length) + payload <= size:
            break
        payload -= 1
    msg = b"\x0a" + bytes(length) + b"q" * payload
    return b"\x00" + struct.pack(">I", len(msg)) + msg


def _duration_s(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise BenchError(f"unreadable h2load duration {text!r}")
    return float(m.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1}[m.group(2)]


def parse_h2load(out):
    fin = re.search(r"^finished in (\S+), ([\d.]+) req/s", out, re.M)
    req = re.search(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                    r"(\d+) failed, (\d+) errored, (\d+) timeout", out, re.M)
    codes = re.search(r"^status codes: (\d+) 2xx", out, re.M)
    if not (fin and req and codes):
        raise BenchError(f"unreadable h2load output:\n{out}")
    total, started, done, ok, failed, errored, timeouts = map(int, req.groups())
    return {"seconds": _duration_s(fin.group(1)), "succeeded": min(ok, int(codes.group(1))),
            "failed": failed + errored + timeouts + (ok - min(ok, int(codes.group(1))))}


def h2load_argv(url, body, headers, *, c, m, extra):
    argv = ["h2load", "-c", str(c), "-m", str(m), "-t", "1", "-N", "10s", *extra, "-d", body,
            "-H", "content-type: application/grpc", "-H", "te: trailers"]
    for h in headers:
        argv += ["-H", h]
    return argv + [url]


def h2load_result(returncode, stdout, stderr):
    if returncode != 0 and "finished in" not in stdout:
        raise BenchError(f"h2load exited {returncode}:\n{stdout[-2000:]}\n{stderr[-2000:]}")
    return parse_h2load(stdout)


def h2load(client, url, body, headers, *, c, m, extra, timeout):
    try:
        p = client.run(h2load_argv(url, body, headers, c=c, m=m, extra=extra), timeout=timeout,
                       check=False)
    except subprocess.TimeoutExpired:
        raise BenchError(f"h2load did not finish within {timeout} s") from None
    return h2load_result(p.returncode, p.stdout, p.stderr)


def h2load_in_pods(pods, url, body, headers, *, m, seconds, name):
    """h2load -c 1 -m M -D SECONDS in every Pod at once: one result per Pod."""
    argv = h2load_argv(url, body, headers, c=1, m=m, extra=["-D", str(seconds)])
    procs = [pod.spawn(argv, name=f"{name}-{pod.name}") for pod in pods]
    deadline = time.monotonic() + seconds + 60
    try:
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except sim.WaitTimeout:
                raise BenchError(f"h2load in {proc.name} did not finish within "
                                 f"{seconds + 60} s") from None
        return [h2load_result(p.returncode, p.stdout(), p.stderr()) for p in procs]
    finally:
        for proc in procs:
            proc.kill()


def grpc_check(client, url, body):
    """One call with nghttp -v: None when it came back as a valid gRPC response, else why."""
    argv = ["nghttp", "-v", "-n", "-t", "5", "-d", body, "-H", "content-type: application/grpc",
            "-H", "te: trailers", url]
    try:
        p = client.run(argv, timeout=15, check=False)
    except subprocess.TimeoutExpired:
        return "nghttp timed out"
    missing = [what for what, pattern in (
        (":status 200", r"recv \(stream_id=\d+\) :status: 200$"),
        ("a DATA frame", r"recv DATA frame <length=[1-9]"),
        ("trailer grpc-status 0", r"recv \(stream_id=\d+\) grpc-status: 0$"),
    ) if not re.search(pattern, p.stdout, re.M)]
    if p.returncode != 0 or missing:
        return f"nghttp exited {p.returncode}, missing {', '.join(missing) or 'nothing'}"
    return None


# --- the systems -----------------------------------------------------------------------------

HAPROXY_CFG = """global
    nbthread 1
    maxconn 8000
defaults
    mode http
    timeout connect 2s
    timeout client 120s
    timeout server 120s
frontend grpc
    bind {listen} proto h2
    default_backend pods
backend pods
    balance roundrobin
    http-reuse always
{servers}
"""

NGINX_CFG = """daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 20000;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 10000; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    client_max_body_size 0;
    client_body_buffer_size 128k;
    keepalive_requests 100000000;
    upstream pods {{
{servers}
        keepalive 1024;
        keepalive_requests 100000000;
    }}
    server {{
        listen {listen} http2 backlog=4096;
        location / {{ grpc_pass grpc://pods; }}
    }}
}}
"""


class System:
    """One system's instance for one round: start(), .pids (whose CPU and memory count),
    .url, stop()."""

    def __init__(self, name, node, pods, svc, r):
        self.name, self.node, self.pods, self.svc, self.r = name, node, pods, svc, r
        self.proc = None
        self.daemon = None
        self.pids = []
        host, port = ((svc.vip4, PORT) if name == "direct" or name in ENGINES
                      else (node.addr4, PROXY_PORTS[name]))
        self.host, self.port = host, port
        self.url = f"http://{host}:{port}{PATH}"
        self.dir = os.path.join(node.logdir, f"{name}-{r}")
        os.makedirs(self.dir, exist_ok=True)

    def start(self):
        endpoints = [(p.ip4, PORT) for p in self.pods]
        if self.name in ENGINES:
            cfg = spindle_mod.config(self.node, [self.svc], workers=1, extra={
                "admin": {"listen": f"{self.node.addr4}:{ADMIN_PORT}"},
                "upstream": {"source": SOURCES.get(self.name, "node")}})
            cfg["proxy"]["io_engine"] = ENGINES[self.name]
            cfg["services"] = [spindle_mod.service_config(
                self.svc, endpoints=[f"{a}:{p}" for a, p in endpoints])]
            self.daemon = sim.Spindle(self.node, cfg, name=f"spindle-{self.r}").start()
            self.proc = self.daemon.proc
        elif self.name == "haproxy":
            path = os.path.join(self.dir, "haproxy.cfg")
            servers = "\n".join(f"    server pod{i} {a}:{p} proto h2"
                                for i, (a, p) in enumerate(endpoints))
            with open(path, "w") as f:
                f.write(HAPROXY_CFG.format(listen=f"{self.host}:{self.port}", servers=servers))
            self.proc = self.node.spawn(["haproxy", "-db", "-f", path], name=f"haproxy-{self.r}")
        elif self.name == "nginx":
            path = os.path.join(self.dir, "nginx.conf")
            servers = "\n".join(f"        server {a}:{p};" for a, p in endpoints)
            with open(path, "w") as f:
                f.write(NGINX_CFG.format(dir=self.dir, listen=f"{self.host}:{self.port}",
                                         servers=servers))
            self.proc = self.node.spawn(["nginx", "-c", path, "-p", self.dir,
                                         "-e", os.path.join(self.dir, "error.log")],
                                        name=f"nginx-{self.r}")
        elif self.name == "nghttpx":
            argv = ["nghttpx", "--conf=/dev/null", "--workers=1", "--no-via",
                    f"--frontend={self.host},{self.port};no-tls",
                    f"--errorlog-file={os.path.join(self.dir, 'error.log')}"]
            argv += [f"--backend={a},{p};;proto=h2" for a, p in endpoints]
            self.proc = self.node.spawn(argv, name=f"nghttpx-{self.r}")
        if self.proc is not None:
            if self.daemon is None:
                wait_listening(self.node, self.proc, self.port)
            self.pids = [self.proc.pid]
        return self

    def check_after(self, clients):
        """spindle: its counters must show the client's connections redirected."""
        if self.daemon is None:
            return
        self.daemon.stop()
        counters = self.daemon.counters() or {}
        if counters.get("redirected", 0) < clients:
            raise BenchError(f"spindle: redirect counters {counters}: the client's "
                             "connections were not redirected")

    def upstream_connections(self):
        """spindle's upstream connections open, all endpoints and workers, from /metrics."""
        r = simprom.http_get(self.node, self.node.addr4, ADMIN_PORT, "/metrics")
        if r.status != 200:
            raise BenchError(f"{self.name}: /metrics answered {r.status}")
        series = re.findall(r"^spindle_upstream_connections_active\{[^}]*\} (\S+)$", r.text,
                            re.M)
        if not series:
            raise BenchError(f"{self.name}: no spindle_upstream_connections_active in /metrics")
        return round(sum(float(v) for v in series))

    def stop(self):
        if self.daemon is not None:
            self.daemon.close()
        elif self.proc is not None:
            self.proc.stop()

    def tail(self):
        return self.proc.tail() if self.proc else ""


# --- one system, one round -------------------------------------------------------------------

class Bench:
    def __init__(self, args, node, client, pods, svc, load_pods=()):
        self.args, self.node, self.client, self.pods, self.svc = args, node, client, pods, svc
        self.load_pods = list(load_pods)  # the pods workload's client Pods
        # The pods workload's new Pods get numbers of their own after every other Pod's, a
        # fresh range each time (wrapping at the end), so that none reuses the veth name of
        # a Pod whose namespace the kernel may still be tearing down.
        self.first_new_pod = max(p.n for p in node.pods.values()) + 1
        self.next_new_pod = self.first_new_pod
        self.bodies = {}
        for size in sorted({w["req"] for w in LOADS.values()}):
            path = os.path.join(node.logdir, f"request-{size}.grpc")
            with open(path, "wb") as f:
                f.write(grpc_frame(size))
            os.chmod(path, 0o644)
            self.bodies[size] = path
        self.results = {s: [] for s in args.systems}
        self.profiles = {}  # file name: text
        self.profiling = False

    def start_backends(self, r):
        procs = []
        for pod in self.pods:
            proc = pod.spawn([BACKEND_BIN, "--port", str(PORT)], name=f"backend-{pod.name}-{r}")
            proc.wait_for_line(r"^grpc_backend: listening", 10, stream="stdout")
            procs.append(proc)
        return procs

    def load(self, system, backends, name, extra=None):
        """One h2load run of a LOADS workload: figures, with the backends' and proxy's view."""
        w = LOADS[name]
        headers = [f"bench-reply-bytes: {w['reply']}", f"bench-reply-messages: {w['messages']}"]
        before = [backend_counts(b) for b in backends]
        cpu0 = cpu_seconds(system.pids)
        bcpu0 = cpu_seconds([b.pid for b in backends])
        extra = extra or ["-D", str(self.args.seconds)]
        perf = self.start_perf(system, name) if extra[0] == "-D" else None
        res = h2load(self.client, system.url, self.bodies[w["req"]], headers, c=w["c"],
                     m=w["m"], extra=extra, timeout=self.args.seconds + 60)
        cpu = cpu_seconds(system.pids) - cpu0
        if perf is not None:
            self.finish_perf(perf, system, name)
        bcpu = cpu_seconds([b.pid for b in backends]) - bcpu0
        after = [backend_counts(b) for b in backends]
        calls = [a[0] - b[0] for a, b in zip(after, before)]
        messages = sum(a[1] - b[1] for a, b in zip(after, before))
        if res["succeeded"] == 0 or sum(calls) == 0:
            raise BenchError(f"{system.name} {name}: no call succeeded")
        if sum(calls) < res["succeeded"]:
            raise BenchError(f"{system.name} {name}: h2load saw {res['succeeded']} calls "
                             f"succeed, the backends answered {sum(calls)}")
        out = {
            "calls_per_s": res["succeeded"] / res["seconds"],
            "messages_per_s": messages / res["seconds"],
            "errors": res["failed"],
            "per_backend": calls,
            "backend_us_per_call": bcpu * 1e6 / sum(calls),
        }
        if system.pids:
            out["cpu_us_per_call"] = cpu * 1e6 / sum(calls)
            out["cpu_us_per_message"] = cpu * 1e6 / max(messages, 1)
        return out

    def start_perf(self, system, name):
        """The profiling runs: perf record of spindle during unary_c2, or a pods run."""
        if not self.profiling:
            return None
        data = os.path.join(system.dir, "perf.data")
        return sim.Proc(["perf", "record", "-q", "-F", "999", "-p", str(system.pids[0]),
                         "-o", data, "--", "sleep", str(self.args.seconds)],
                        logdir=system.dir, name="perf"), data

    def finish_perf(self, perf, system, name, out="spindle-profile.txt"):
        proc, data = perf
        rc = proc.wait(30)

        def report(sort, limit):
            p = subprocess.run(["perf", "report", "--stdio", "-i", data, "--no-children",
                                "--sort", sort, "--percent-limit", limit],
                               capture_output=True, text=True, timeout=120)
            rows = [re.sub(r"[\s-]+$", "", line) for line in p.stdout.splitlines()
                    if line.strip() and not line.startswith("#")]
            return rows if p.returncode == 0 else []
        by_dso, by_symbol = report("dso", "1"), report("dso,symbol", "0.7")
        if rc != 0 or not by_dso or not by_symbol:
            # A profile is a help for reading the figures, not one of them: say why, go on.
            self.profiles[out] = f"perf failed (record exit {rc}):\n{proc.tail()}"
            return
        self.profiles[out] = (
            f"perf record -F 999 of spindle (proxy.workers 1, upstream.source "
            f"{SOURCES[system.name]}, every thread) in a {name} run ({self.args.seconds} s) "
            "after the measured rounds.\n\n"
            "Self time by object:\n\n" + "\n".join(by_dso)
            + "\n\nSelf time by symbol (≥ 0.7%):\n\n" + "\n".join(by_symbol[:40]))

    def latency(self, system, backends, rate):
        log = os.path.join(system.dir, "latency.log")
        w = LOADS["unary_c2"]
        per_client = max(1, round(rate / w["c"]))
        res = self.load(system, backends, "unary_c2",
                        extra=["-D", str(self.args.seconds), "--rps", str(per_client),
                               "--log-file", log])
        return {"rate": per_client * w["c"], "achieved": res["calls_per_s"],
                "errors": res["errors"], **percentiles(log, f"{system.name} latency")}

    def rtt(self, system):
        log = os.path.join(system.dir, "rtt.log")
        w = LOADS["unary_c2"]
        headers = [f"bench-reply-bytes: {w['reply']}", f"bench-reply-messages: {w['messages']}"]
        res = h2load(self.client, system.url, self.bodies[w["req"]], headers, c=1, m=1,
                     extra=["-D", str(self.args.seconds), "--log-file", log],
                     timeout=self.args.seconds + 60)
        return {"calls_per_s": res["succeeded"] / res["seconds"], "errors": res["failed"],
                **percentiles(log, f"{system.name} rtt")}

    def idle(self, system, backends):
        # Memory of the process that holds the client's connections: the proxy, or for
        # direct the backends themselves.
        pids = system.pids or [b.pid for b in backends]
        n = self.args.idle_conns
        rss = [rss_kib(pids)]
        batches = []
        call = ["--call", f"{system.host}:{system.port}", PATH]
        try:
            for batch, extra in enumerate(([], [], call)):
                proc = self.client.spawn([sim.PYTHON, IDLE_CONNS, system.host, str(system.port),
                                          str(n), "120", *extra],
                                         name=f"idle-{system.name}-{system.r}-{batch}")
                batches.append(proc)
                proc.wait_for_line(r"^idle: ready", 60, stream="stdout")
                time.sleep(0.5)  # let the other side finish whatever the last ACKs started
                rss.append(rss_kib(pids))
        except Exception as e:
            raise BenchError(f"{system.name} idle: {e}\n{batches[-1].tail()}") from None
        finally:
            for proc in batches:
                proc.stop()
        return {"kib_per_conn": (rss[2] - rss[1]) / n,
                "first_kib_per_conn": (rss[1] - rss[0]) / n,
                "used_kib_per_conn": (rss[3] - rss[2]) / n, "rss_kib": rss}

    def connect(self, system, backends):
        w = LOADS["unary_c2"]
        res = h2load(self.client, system.url, self.bodies[w["req"]], [], c=CONNECT_COUNT, m=1,
                     extra=["-n", str(CONNECT_COUNT)], timeout=60)
        return {"conns_per_s": res["succeeded"] / res["seconds"], "errors": res["failed"]}

    def new_pods(self, count):
        """`count` Pods that have never called: each its own netns and cgroup."""
        if self.next_new_pod + count > 255:
            self.next_new_pod = self.first_new_pod
        pods = []
        try:
            for _ in range(count):
                n = self.next_new_pod
                self.next_new_pod += 1
                pods.append(self.node.add_pod(f"new{n}", n=n))
        except BaseException:
            for pod in pods:
                pod.close()
            raise
        return pods

    def pods_round(self, name, r):
        """The pods workload on a fresh spindle (upstream.source as the system says) and
        fresh backends: memory per pooled upstream connection, warm-up, measured run,
        upstream connections, then new Pods one at a time (first call)."""
        backends = self.start_backends(f"{r}-pods")
        system = System(name, self.node, self.pods, self.svc, f"{r}-pods")
        fresh = []
        w = LOADS["unary_c2"]
        headers = [f"bench-reply-bytes: {w['reply']}", f"bench-reply-messages: {w['messages']}"]
        body = self.bodies[w["req"]]
        try:
            system.start()
            # From one of the client Pods, whose pools the warm-up makes anyway.
            why = grpc_check(self.load_pods[0], system.url, body)
            if why:
                raise BenchError(f"{name}: a call is not answered as a valid gRPC response: "
                                 f"{why}")
            memory = None if self.profiling else self.pooled_memory(system, backends, body,
                                                                    headers)
            h2load_in_pods(self.load_pods, system.url, body, headers, m=POD_STREAMS,
                           seconds=POD_WARMUP, name=f"warm-{name}-{r}")
            before = [backend_counts(b) for b in backends]
            cpu0 = cpu_seconds(system.pids)
            bcpu0 = cpu_seconds([b.pid for b in backends])
            perf = self.start_perf(system, "pods")
            runs = h2load_in_pods(self.load_pods, system.url, body, headers, m=POD_STREAMS,
                                  seconds=self.args.seconds, name=f"pods-{name}-{r}")
            cpu = cpu_seconds(system.pids) - cpu0
            if perf is not None:
                self.finish_perf(perf, system, f"pods ({POD_TITLE})",
                                 f"spindle-pods-{SOURCES[name]}-profile.txt")
            bcpu = cpu_seconds([b.pid for b in backends]) - bcpu0
            after = [backend_counts(b) for b in backends]
            calls = [a[0] - b[0] for a, b in zip(after, before)]
            succeeded = sum(res["succeeded"] for res in runs)
            if succeeded == 0 or sum(calls) < succeeded:
                raise BenchError(f"{name} pods: h2load saw {succeeded} calls succeed, the "
                                 f"backends answered {sum(calls)}")
            out = {
                "calls_per_s": sum(res["succeeded"] / res["seconds"] for res in runs),
                "cpu_us_per_call": cpu * 1e6 / sum(calls),
                "backend_us_per_call": bcpu * 1e6 / sum(calls),
                "errors": sum(res["failed"] for res in runs),
                "per_backend": calls,
                "upstream_connections": system.upstream_connections(),
            }
            if not self.profiling:
                out.update(memory)
                out.update(self.first_calls(system, fresh))
            system.check_after(len(self.load_pods))
        except BaseException:
            print(system.tail(), file=sys.stderr)
            raise
        finally:
            system.stop()
            for b in backends:
                b.stop()
            # After spindle: in pod mode it holds the Pods' namespaces while it runs.
            for pod in fresh:
                pod.close()
        return out

    def first_call(self, system, pods):
        """bench/first_call.py in each of `pods`, one at a time: its figures, per Pod."""
        out = []
        for pod in pods:
            p = pod.run([sim.PYTHON, FIRST_CALL, system.host, str(system.port),
                         f"{system.host}:{system.port}", PATH], timeout=60, check=False)
            if p.returncode != 0:
                raise BenchError(f"{system.name}: first_call.py in Pod {pod.name} failed:\n"
                                 f"{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
            out.append(json.loads(p.stdout))
        return out

    def pooled_memory(self, system, backends, body, headers):
        """spindle's RSS growth while the client Pods but the first open their pools (in
        pod mode 2 connections each, one per endpoint), one Pod at a time, over the upstream
        connections added. Before the load, so that memory the load frees does not hide
        it; after 1000 calls from the first Pod, so that it leaves out spindle's one-time
        costs (the receive buffers are touched the first time the kernel fills them)."""
        h2load(self.load_pods[0], system.url, body, headers, c=1, m=1, extra=["-n", "1000"],
               timeout=60)
        callers = self.load_pods[1:]
        time.sleep(0.5)  # let spindle finish whatever the last calls started
        rss0, conns0 = rss_kib(system.pids), system.upstream_connections()
        calls0 = sum(backend_counts(b)[0] for b in backends)
        self.first_call(system, callers)
        time.sleep(0.5)
        rss1, conns1 = rss_kib(system.pids), system.upstream_connections()
        calls = sum(backend_counts(b)[0] for b in backends) - calls0
        if calls < 4 * len(callers):  # first_call.py makes 4 calls
            raise BenchError(f"{system.name}: {len(callers)} Pods made {4 * len(callers)} "
                             f"calls, the backends answered {calls}")
        added = conns1 - conns0
        return {"memory_callers": len(callers), "memory_rss_kib": [rss0, rss1],
                "upstream_added": added, "kib_per_caller": (rss1 - rss0) / len(callers),
                "kib_per_upstream": (rss1 - rss0) / added if added > 0 else None}

    def first_calls(self, system, fresh):
        """Pods made now, one at a time: the time to their first call (spindle's pools warm
        with the other Pods' calls). `fresh` gets the Pods, for the caller to close."""
        fresh += self.new_pods(self.args.new_pods)
        res = self.first_call(system, fresh)
        out = {"first_calls": res}
        out.update({f"{key}_p50": statistics.median(x[key] for x in res)
                    for key in ("first_us", "first_connect_us", "again_us")})
        return out

    def round(self, name, r, rate, workloads=None):
        workloads = workloads or self.args.workloads
        backends = self.start_backends(r)
        system = System(name, self.node, self.pods, self.svc, r)
        out = {}
        try:
            system.start()
            why = grpc_check(self.client, system.url, self.bodies[100])
            if why:
                raise BenchError(f"{name}: a call is not answered as a valid gRPC response: "
                                 f"{why}")
            # Idle connections first, on a fresh process, so that memory freed by the load
            # runs does not hide what new connections take.
            if "idle" in workloads:
                out["idle"] = self.idle(system, backends)
            for w in LOADS:
                if w in workloads:
                    out[w] = self.load(system, backends, w)
            if name == "direct" and "unary_c2" in out:
                rate = out["unary_c2"]["calls_per_s"] / 2  # the round's fixed rate
            if "latency" in workloads and rate:
                out["latency"] = self.latency(system, backends, rate)
            if "rtt" in workloads:
                out["rtt"] = self.rtt(system)
            if "connect" in workloads:
                out["connect"] = self.connect(system, backends)
            system.check_after(2)
        except BaseException:
            print(system.tail(), file=sys.stderr)
            raise
        finally:
            system.stop()
            for b in backends:
                b.stop()
        return out

    def run(self):
        # The pods workload's two modes run one just after the other, in turns first, so
        # that their ratio in a round leaves out what the machine does between rounds.
        modes = [s for s in SOURCES if "pods" in system_workloads(s, self.args.workloads)
                 and s in self.args.systems]
        for r in range(self.args.rounds):
            rate = None
            pods, pods_seconds = {}, {}
            for name in self.args.systems:
                t0 = time.monotonic()
                out = {}
                workloads = system_workloads(name, self.args.workloads)
                if any(w != "pods" for w in workloads):
                    out = self.round(name, r, rate, [w for w in workloads if w != "pods"])
                seconds = time.monotonic() - t0
                if name in modes and not pods:
                    for mode in (modes if r % 2 == 0 else modes[::-1]):
                        t1 = time.monotonic()
                        pods[mode] = self.pods_round(mode, r)
                        pods_seconds[mode] = time.monotonic() - t1
                if name in pods:
                    out["pods"] = pods[name]
                    seconds += pods_seconds[name]
                if "latency" in out and name == "direct":
                    rate = out["latency"]["rate"]
                self.results[name].append(out)
                print(f"round {r + 1}/{self.args.rounds} {name:11s} {summary(out)} "
                      f"({seconds:.0f} s)", flush=True)
        if self.args.perf:
            # Their own runs, so that the profiler's overhead stays out of the figures.
            self.profiling = True
            if "spindle" in self.args.systems and "unary_c2" in self.args.workloads:
                self.round("spindle", self.args.rounds, None, ["unary_c2"])
            for name in SOURCES:
                if name in self.args.systems and "pods" in self.args.workloads:
                    self.pods_round(name, self.args.rounds)
        return self.results


def system_workloads(system, workloads):
    """What `system` runs of the workloads asked for: pods only on spindle's two systems,
    and spindle-pod runs nothing else."""
    if system == "spindle-pod":
        return [w for w in workloads if w == "pods"]
    return [w for w in workloads if w != "pods" or system in SOURCES]


def percentiles(log, what):
    """p50 and p99 in µs of the calls h2load logged as 200, after the warm-up."""
    with open(log) as f:
        rows = [line.split("\t") for line in f if line.strip()]
    rows = [(int(t), int(s), int(d)) for t, s, d, *_ in rows]
    if not rows:
        raise BenchError(f"{what}: h2load logged no call")
    t0 = min(t for t, _, _ in rows)
    kept = sorted(d for t, s, d in rows if s == 200 and t >= t0 + LATENCY_WARMUP * 1e6)
    if not kept:
        raise BenchError(f"{what}: no successful call after the warm-up")

    def pct(q):
        return kept[min(len(kept) - 1, int(q * len(kept)))]
    return {"p50_us": pct(0.50), "p99_us": pct(0.99)}


def summary(out):
    parts = []
    for w in LOADS:
        if w in out:
            cpu = out[w].get("cpu_us_per_call")
            parts.append(f"{w} {out[w]['calls_per_s']:.0f}/s"
                         + (f" {cpu:.1f}µs" if cpu is not None else ""))
    if "latency" in out:
        parts.append(f"p99 {out['latency']['p99_us']}µs")
    if "idle" in out:
        parts.append(f"idle {out['idle']['kib_per_conn']:.1f}KiB")
    if "connect" in out:
        parts.append(f"connect {out['connect']['conns_per_s']:.0f}/s")
    if "pods" in out:
        p = out["pods"]
        parts.append(f"pods {p['calls_per_s']:.0f}/s {p['cpu_us_per_call']:.2f}µs, "
                     f"{p['upstream_connections']} upstream")
        if "first_us_p50" in p:
            parts.append(f"first call {p['first_us_p50']:.0f}µs")
        if p.get("kib_per_upstream") is not None:
            parts.append(f"{p['kib_per_upstream']:.1f}KiB per upstream")
    return ", ".join(parts)


# --- report ----------------------------------------------------------------------------------

def values(results, system, *path):
    out = []
    for rnd in results.get(system, []):
        v = rnd
        for k in path:
            v = v.get(k) if isinstance(v, dict) else None
            if v is None:
                break
        if v is not None:
            out.append(v)
    return out


def med(results, system, *path):
    v = values(results, system, *path)
    return statistics.median(v) if v else None


def share_deviation(results, system, workload):
    """Worst backend's distance from an even share, over the calls of every round (0.03 = 3%)."""
    totals = None
    for per in values(results, system, workload, "per_backend"):
        totals = per if totals is None else [a + b for a, b in zip(totals, per)]
    if not totals or not sum(totals):
        return None, None
    even = sum(totals) / len(totals)
    return max(abs(t - even) for t in totals) / even, totals


def cell(results, system, path, fmt, scale=1.0):
    v = [x * scale for x in values(results, system, *path)]
    if not v:
        return "–"
    m = format(statistics.median(v), fmt)
    return m if len(v) == 1 else f"{m} ({format(min(v), fmt)}–{format(max(v), fmt)})"


def added_latency(results, system, key, workload="latency"):
    """Per round: system's percentile minus direct's in the same round."""
    return [s[key] - d[key] for s, d in zip(values(results, system, workload),
                                             values(results, "direct", workload))]


def targets(results, systems):
    """(target, measured, ratio text, met) rows; None where a figure is missing."""
    rows = []
    others = [p for p in PROXIES if p in systems]

    def best(path, pick):
        vals = [(med(results, p, *path), p) for p in others]
        vals = [v for v in vals if v[0] is not None]
        return pick(vals) if vals else (None, None)

    for w in ("unary_c2", "unary_c16"):
        if w not in LOADS or not values(results, "spindle", w):
            continue
        s = med(results, "spindle", w, "cpu_us_per_call")
        b, who = best((w, "cpu_us_per_call"), min)
        if s is not None and b:
            rows.append((f"CPU per call ≤ 0.7× best proxy ({w})", f"{s:.2f} µs vs {LABELS[who]} "
                         f"{b:.2f} µs", f"{s / b:.2f}×", s / b <= 0.7))
        s = med(results, "spindle", w, "calls_per_s")
        b, who = best((w, "calls_per_s"), max)
        if s is not None and b:
            rows.append((f"throughput ≥ 1.2× best proxy ({w})", f"{s:.0f}/s vs {LABELS[who]} "
                         f"{b:.0f}/s", f"{s / b:.2f}×", s / b >= 1.2))
        d = med(results, "direct", w, "calls_per_s")
        if s is not None and d:
            rows.append((f"throughput ≥ 0.65× direct ({w})", f"{s:.0f}/s vs direct {d:.0f}/s",
                         f"{s / d:.2f}×", s / d >= 0.65))
    if values(results, "spindle", "latency") and values(results, "direct", "latency"):
        s = statistics.median(added_latency(results, "spindle", "p99_us"))
        vals = [(statistics.median(added_latency(results, p, "p99_us")), p) for p in others
                if values(results, p, "latency")]
        if vals:
            b, who = min(vals)
            rows.append(("added p99 latency at half load ≤ best proxy",
                         f"{s:+.0f} µs vs {LABELS[who]} {b:+.0f} µs",
                         f"{s / b:.2f}×" if b > 0 else f"{s - b:+.0f} µs", s <= b))
    if values(results, "spindle", "idle"):
        s = med(results, "spindle", "idle", "kib_per_conn")
        b, who = best(("idle", "kib_per_conn"), min)
        if b:
            rows.append(("memory per idle connection ≤ 0.5× best proxy",
                         f"{s:.1f} KiB vs {LABELS[who]} {b:.1f} KiB", f"{s / b:.2f}×",
                         s / b <= 0.5))
    dev, totals = share_deviation(results, "spindle", "unary_c2")
    if dev is not None:
        rows.append(("backends within ±5% of an even share (-c 2)",
                     "calls per backend " + " / ".join(map(str, totals)), f"±{dev * 100:.1f}%",
                     dev <= 0.05))
    for w, spec in LOADS.items():
        unit = "message" if spec["messages"] > 1 else "call"
        cpu = f"cpu_us_per_{unit}"
        u, e = med(results, "spindle", w, cpu), med(results, "spindle-epoll", w, cpu)
        if u and e:
            rows.append((f"epoll: CPU per {unit} ≤ 1.1× io_uring ({w})",
                         f"{e:.2f} µs vs {u:.2f} µs", f"{e / u:.2f}×", e / u <= 1.1))
        rate = f"{unit}s_per_s"
        u, e = med(results, "spindle", w, rate), med(results, "spindle-epoll", w, rate)
        if u and e:
            rows.append((f"epoll: {unit}s/s ≥ 0.9× io_uring ({w})", f"{e:.0f}/s vs {u:.0f}/s",
                         f"{e / u:.2f}×", e / u >= 0.9))
        n = med(results, "nghttpx", w, cpu)
        for name in ("spindle", "spindle-epoll"):
            s = med(results, name, w, cpu)
            if s and n:
                rows.append((f"{LABELS[name]}: CPU per {unit} < nghttpx ({w})",
                             f"{s:.2f} µs vs {n:.2f} µs", f"{s / n:.2f}×", s < n))
    goal = pod_cpu_goal(results)
    if goal:
        node, pod, ratio, met = goal
        rows.append((f"upstream.source pod: CPU per call ≤ 1.05× node ({POD_TITLE}, pools "
                     "warm)", f"{pod:.2f} µs vs node {node:.2f} µs", f"{ratio:.3f}×", met))
    return rows


def tool_versions():
    def first_line(argv):
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return "not found"
        return ((p.stdout or p.stderr).strip().splitlines() or ["?"])[0]
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        m = re.search(r"^model name\s*:\s*(.*)$", f.read(), re.M)
        cpu = m.group(1) if m else cpu
    return {
        # the binary's own version and commit, not the checkout's: it may be older
        "spindle": first_line([sim.SPINDLE_BIN, "--version"]),
        "HAProxy": first_line(["haproxy", "-v"]),
        "nginx": first_line(["nginx", "-v"]),
        "nghttpx": first_line(["nghttpx", "--version"]),
        "h2load": first_line(["h2load", "--version"]),
        "backend": "bench/grpc_backend.cc on " + first_line(["dpkg-query", "-W", "-f",
                                                             "libnghttp2 ${Version}",
                                                             "libnghttp2-14"]),
        "kernel": platform.release(),
        "CPU": f"{os.cpu_count()} × {cpu}",
    }


def report(results, args, versions, started, profiles=()):
    # spindle-pod has only the pods workload's rows, in a section of their own.
    systems = [s for s in args.systems if s != "spindle-pod"]
    cols = [LABELS[s] for s in systems]
    lines = [
        "# spindle against direct, HAProxy, nginx and nghttpx",
        "",
        f"`make bench` on {started:%Y-%m-%d %H:%M} UTC: {args.rounds} interleaved rounds "
        f"({' → '.join(LABELS[s] for s in args.systems)}), {args.seconds} s per run, medians "
        "with (min–max) over rounds.",
    ]
    if any(w != "pods" for w in args.workloads):
        lines += main_table(results, args, systems, cols)
    lines += pods_section(results, args)
    rows = targets(results, systems)
    if rows:
        lines += ["", "## Targets (spindle, ratios from this run)", "",
                  "| target | measured | ratio | met |", "|---|---|---|---|"]
    for target, measured, ratio, met in rows:
        lines.append(f"| {target} | {measured} | {ratio} | {'yes' if met else '**no**'} |")
    hops = {s: added_latency(results, s, "p50_us", "rtt") for s in systems if s != "direct"}
    hops = {s: statistics.median(d) for s, d in hops.items() if d}
    if "spindle" in hops:
        lines += ["", "Round trip a hop adds, one call at a time (p50 − direct's, median over "
                  "rounds): " + ", ".join(f"{LABELS[s]} {d:+.0f} µs" for s, d in hops.items())
                  + "."]
    if "spindle-profile.txt" in profiles:
        lines += ["", "Where spindle's CPU goes: [spindle-profile.txt](spindle-profile.txt) "
                  "(perf, a separate run after the rounds)."]
    pods_profiles = [p for p in profiles if p.startswith("spindle-pods-")]
    if pods_profiles:
        lines += ["", "Where spindle's CPU goes in the pods workload, each mode: "
                  + ", ".join(f"[{p}]({p})" for p in sorted(pods_profiles))
                  + " (perf, separate runs after the rounds)."]
    if os.path.exists(os.path.join(args.out, "redirect.md")):
        lines += ["", "The redirect's own cost (connect time, one TCP stream): "
                  "[redirect.md](redirect.md)."]
    lines += ["", "## Versions", ""]
    lines += [f"- {k}: {v}" for k, v in versions.items()]
    if args.note:
        lines += ["", f"Note: {args.note}"]
    return "\n".join(lines) + "\n", rows


def main_table(results, args, systems, cols):
    """Every system side by side, every workload but pods."""
    lines = [
        "Every system has one worker thread and the same two backend Pods. The client dials the "
        "Service VIP for direct (kube-proxy-like DNAT, a random Pod per connection) and for "
        "spindle (its BPF redirects the connect to spindle); it dials HAProxy, nginx and "
        "nghttpx directly on the node address. CPU per call is the proxy's utime + stime "
        "(every process of it) over the calls the backends answered. Latency is measured open "
        "loop at half of direct's unary -c 2 calls/s of the same round: a system that cannot "
        "keep up with that rate queues, and its latency is mostly that queue (see its achieved "
        "calls/s); it also carries h2load's own pacing of --rps. One call at a time (-c 1 -m 1) "
        "shows what a hop adds without either. Memory per idle connection is the RSS growth "
        f"while a second batch of {args.idle_conns} connections opens, the first batch still "
        "open: what one more connection costs, without the one-time costs the first batch pays "
        "(spindle's receive buffers, touched the first time the kernel fills them). A third "
        "batch makes one call per connection before it goes idle, as most idle gRPC channels "
        "have.",
        "",
        "| figure | " + " | ".join(cols) + " |",
        "|---" * (len(cols) + 1) + "|",
    ]

    def added_rows(workload, title):
        for key in ("p50_us", "p99_us"):
            cells = []
            for s in systems:
                d = added_latency(results, s, key, workload) if s != "direct" else []
                cells.append("–" if not d else
                             f"{statistics.median(d):+.0f}" + ("" if len(d) == 1 else
                                                                f" ({min(d):+.0f}–{max(d):+.0f})"))
            lines.append(f"| {title}: added {key[:3]} µs (− direct, per round) | "
                         + " | ".join(cells) + " |")

    def row(label, path, fmt, scale=1.0, only=None):
        cells = [cell(results, s, path, fmt, scale) if (only is None or s in only) else "–"
                 for s in systems]
        if any(c != "–" for c in cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")

    proxied = [s for s in systems if s != "direct"]
    for w, spec in LOADS.items():
        if not any(values(results, s, w) for s in systems):
            continue
        t = spec["title"]
        if spec["messages"] > 1:
            row(f"{t}: messages/s", (w, "messages_per_s"), ".0f")
            row(f"{t}: CPU µs per message", (w, "cpu_us_per_message"), ".2f", only=proxied)
        else:
            row(f"{t}: calls/s", (w, "calls_per_s"), ".0f")
            row(f"{t}: CPU µs per call", (w, "cpu_us_per_call"), ".2f", only=proxied)
        row(f"{t}: backend CPU µs per call", (w, "backend_us_per_call"), ".2f")
        shares = []
        for s in systems:
            dev, totals = share_deviation(results, s, w)
            shares.append("–" if dev is None else
                          " / ".join(f"{t_ * 100 / sum(totals):.1f}%" for t_ in totals))
        lines.append(f"| {t}: calls per backend, all rounds | " + " | ".join(shares) + " |")
        errs = [sum(values(results, s, w, "errors")) for s in systems]
        if any(errs):
            lines.append(f"| {t}: failed calls, all rounds | " + " | ".join(map(str, errs)) + " |")
    if any(values(results, s, "latency") for s in systems):
        rates = values(results, "direct", "latency", "rate")
        rate = f"{statistics.median(rates):.0f}" if rates else "?"
        t = f"open loop at ~{rate} calls/s (½ direct), -c 2"
        row(f"{t}: achieved calls/s", ("latency", "achieved"), ".0f")
        row(f"{t}: p50 µs", ("latency", "p50_us"), ".0f")
        row(f"{t}: p99 µs", ("latency", "p99_us"), ".0f")
        added_rows("latency", t)
    if any(values(results, s, "rtt") for s in systems):
        t = "one call at a time, -c 1 -m 1"
        row(f"{t}: calls/s", ("rtt", "calls_per_s"), ".0f")
        row(f"{t}: p50 µs", ("rtt", "p50_us"), ".0f")
        row(f"{t}: p99 µs", ("rtt", "p99_us"), ".0f")
        added_rows("rtt", t)
    if any(values(results, s, "idle") for s in systems):
        row(f"idle HTTP/2 connections: KiB RSS per connection, {args.idle_conns} more "
            "(direct: the backends')", ("idle", "kib_per_conn"), ".1f")
        row(f"idle HTTP/2 connections: KiB RSS per connection, the first {args.idle_conns} "
            "(with one-time costs)", ("idle", "first_kib_per_conn"), ".1f")
        row(f"idle HTTP/2 connections: KiB RSS per connection, {args.idle_conns} more after "
            "one call each", ("idle", "used_kib_per_conn"), ".1f")
    if any(values(results, s, "connect") for s in systems):
        row(f"connection set-up, {CONNECT_COUNT} new connections × 1 call: connections/s",
            ("connect", "conns_per_s"), ".0f")

    lines += ["", "![calls/s and proxy CPU per call, unary workloads](latest.svg)"]
    return lines


def pods_section(results, args):
    """upstream.source pod against node: the pods workload's rows, one column per mode."""
    if not any(values(results, s, "pods") for s in SOURCES):
        return []
    lines = [
        "", f"## upstream.source: pod against node ({POD_TITLE}, 2 backends)", "",
        "spindle (proxy.workers 1) with upstream.source node (system spindle) and pod "
        "(system spindle-pod), each on a fresh spindle and fresh backends, one just after the "
        "other in each round, in turns first. "
        f"{POD_CLIENTS} client Pods, each its own network namespace and cgroup, call the "
        f"Service VIP at once, each over one connection with {POD_STREAMS} streams (h2load "
        f"-c 1 -m {POD_STREAMS}, one busy gRPC channel per Pod): {POD_WARMUP} s of calls "
        f"first fill the pools, then {args.seconds} s are measured. CPU per call is spindle's "
        "utime + stime over the measured run divided by the calls the backends answered. "
        "Upstream connections open: spindle_upstream_connections_active from spindle's "
        f"/metrics, summed over the endpoints, after the run. Then {args.new_pods} new Pods, "
        "made for the purpose, call one at a time (bench/first_call.py): a first call timed "
        "from connect() to the end of its answer (the median over the new Pods, per round), "
        "two calls at once (least_request sends them to the two endpoints), then one call on "
        "a new connection, timed the same way (the Pod's pools warm). Memory per pooled "
        "upstream connection: before the load, after 1000 calls from the first client Pod "
        "(spindle's one-time costs), the other client Pods make those same calls one Pod at "
        "a time; spindle's RSS growth over them divided by the upstream connections they "
        "added, in pod mode 2 per Pod (one per endpoint, one worker). Node mode adds none: "
        "its RSS growth per calling Pod is the part that both modes pay (the Pod's "
        "downstream connections, its metric series).",
        "",
        "The last column compares the two modes of the same round (one just after the other) "
        "and gives the median over rounds: pod/node − 1 for rates and CPU, pod − node for "
        "times and memory.",
        "",
        "| figure | node | pod | pod against node |",
        "|---|---|---|---|",
    ]

    def paired(how):
        """how(node's round, pod's round) per round, median: text, or "–"."""
        pairs = zip(values(results, "spindle", "pods"), values(results, "spindle-pod", "pods"))
        got = []
        for node, pod in pairs:
            try:
                got.append(how(node, pod))
            except (KeyError, TypeError, ZeroDivisionError):
                pass  # a figure missing in one of the two
        return statistics.median(got) if got else None

    def percent(key):
        v = paired(lambda n, p: p[key] / n[key] - 1)
        return "–" if v is None else f"{v * 100:+.1f}%"

    def minus(key, unit, fmt):
        v = paired(lambda n, p: p[key] - n[key])
        return "–" if v is None else f"{format(v, fmt)} {unit}"

    def row(label, key, fmt, compared):
        cells = [cell(results, s, ("pods", key), fmt) for s in SOURCES]
        if any(c != "–" for c in cells):
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {compared} |")

    row(f"{POD_TITLE}: calls/s", "calls_per_s", ".0f", percent("calls_per_s"))
    row(f"{POD_TITLE}: CPU µs per call, pools warm", "cpu_us_per_call", ".2f",
        percent("cpu_us_per_call"))
    row(f"{POD_TITLE}: backend CPU µs per call", "backend_us_per_call", ".2f",
        percent("backend_us_per_call"))
    shares = []
    for s in SOURCES:
        dev, totals = share_deviation(results, s, "pods")
        shares.append("–" if dev is None else
                      " / ".join(f"{t * 100 / sum(totals):.1f}%" for t in totals))
    lines.append(f"| {POD_TITLE}: calls per backend, all rounds | " + " | ".join(shares)
                 + " | – |")
    errs = [sum(values(results, s, "pods", "errors")) for s in SOURCES]
    if any(errs):
        lines.append(f"| {POD_TITLE}: failed calls, all rounds | "
                     + " | ".join(map(str, errs)) + " | – |")
    times = paired(lambda n, p: p["upstream_connections"] / n["upstream_connections"])
    row("upstream connections open after the run", "upstream_connections", ".0f",
        "–" if times is None else f"{times:.0f}×")
    row(f"first call from a new Pod, connect() to answer: µs (median of {args.new_pods} new "
        "Pods)", "first_us_p50", ".0f", minus("first_us_p50", "µs", "+.0f"))
    row("… of which connect(): µs", "first_connect_us_p50", ".0f",
        minus("first_connect_us_p50", "µs", "+.0f"))
    row("the new Pod's next connection and call, its pools warm: µs", "again_us_p50", ".0f",
        minus("again_us_p50", "µs", "+.0f"))
    callers = max(values(results, "spindle-pod", "pods", "memory_callers")
                  + values(results, "spindle", "pods", "memory_callers"), default=0)
    row(f"spindle's RSS growth per calling Pod, {callers} Pods: KiB", "kib_per_caller", ".1f",
        minus("kib_per_caller", "KiB", "+.1f"))
    # Net of what a calling Pod costs in both modes: pod's growth minus node's, over the
    # connections pod's added.
    net = paired(lambda n, p: (p["memory_rss_kib"][1] - p["memory_rss_kib"][0]
                               - (n["memory_rss_kib"][1] - n["memory_rss_kib"][0]))
                 / (p["upstream_added"] - n["upstream_added"]))
    row("memory per pooled upstream connection: KiB RSS", "kib_per_upstream", ".1f",
        "–" if net is None else f"{net:.1f} KiB net of node's growth")

    goal = pod_cpu_goal(results)
    if goal:
        node, pod, ratio, met = goal
        lines += ["", f"Goal: pod costs at most 5% more CPU per call than node once pools are "
                  f"warm: {'met' if met else '**not met**'}: {(ratio - 1) * 100:+.1f}% (pod "
                  f"against node in the same round, median over rounds; medians pod {pod:.2f} "
                  f"µs, node {node:.2f} µs per call)."]
    return lines


def pod_ratios(results, key):
    """Per round: spindle-pod's figure over spindle's, in the pods workload."""
    return [p / n for n, p in zip(values(results, "spindle", "pods", key),
                                  values(results, "spindle-pod", "pods", key)) if n]


def pod_cpu_goal(results):
    """(node, pod, ratio, met) for the pods workload's CPU per call, or None: the ratio is
    the median over rounds of pod's over node's of the same round, the two measured one
    just after the other, which leaves out most of what a noisy machine does between
    rounds."""
    ratios = pod_ratios(results, "cpu_us_per_call")
    if not ratios:
        return None
    ratio = statistics.median(ratios)
    node, pod = (med(results, s, "pods", "cpu_us_per_call") for s in SOURCES)
    return node, pod, ratio, ratio <= 1.05


def svg_chart(results, systems):
    """Two bar charts side by side: calls/s and proxy CPU µs per call for the unary
    workloads, medians with min–max whiskers. Plain SVG, no library."""
    loads = [w for w in ("unary_c2", "unary_c16") if any(values(results, s, w) for s in systems)]
    colours = {"unary_c2": "#3b6ea5", "unary_c16": "#e08a2c"}
    W, H, top, bottom, left = 460, 300, 40, 50, 70
    panels = [("calls/s", "calls_per_s", systems),
              ("proxy CPU µs per call", "cpu_us_per_call", [s for s in systems if s != "direct"])]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W * 2}" height="{H + 30}" '
             'font-family="sans-serif" font-size="12">',
             f'<rect width="{W * 2}" height="{H + 30}" fill="white"/>']
    for i, (title, key, syss) in enumerate(panels):
        x0 = i * W
        vals = [v for s in syss for w in loads for v in values(results, s, w, key)]
        vmax = max(vals) * 1.1 if vals else 1
        plot_w, plot_h = W - left - 20, H - top - bottom
        parts.append(f'<text x="{x0 + W / 2}" y="20" text-anchor="middle" font-size="14">'
                     f'{title}</text>')
        for k in range(5):  # gridlines and axis labels
            v = vmax * k / 4
            y = top + plot_h - plot_h * k / 4
            parts.append(f'<line x1="{x0 + left}" x2="{x0 + left + plot_w}" y1="{y:.1f}" '
                         f'y2="{y:.1f}" stroke="#ddd"/>')
            parts.append(f'<text x="{x0 + left - 5}" y="{y + 4:.1f}" text-anchor="end">'
                         f'{v:,.0f}</text>' if vmax > 20 else
                         f'<text x="{x0 + left - 5}" y="{y + 4:.1f}" text-anchor="end">'
                         f'{v:.1f}</text>')
        group = plot_w / max(len(syss), 1)
        bar = group * 0.8 / max(len(loads), 1)
        for j, s in enumerate(syss):
            gx = x0 + left + j * group + group * 0.1
            parts.append(f'<text x="{gx + group * 0.4:.1f}" y="{top + plot_h + 18}" '
                         f'text-anchor="middle">{LABELS[s]}</text>')
            for k, w in enumerate(loads):
                v = values(results, s, w, key)
                if not v:
                    continue
                m = statistics.median(v)
                bx = gx + k * bar
                h = plot_h * m / vmax
                parts.append(f'<rect x="{bx:.1f}" y="{top + plot_h - h:.1f}" width="{bar - 2:.1f}" '
                             f'height="{h:.1f}" fill="{colours[w]}"/>')
                ylo, yhi = (top + plot_h - plot_h * min(v) / vmax,
                            top + plot_h - plot_h * max(v) / vmax)
                cx = bx + (bar - 2) / 2
                parts.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{ylo:.1f}" y2="{yhi:.1f}" '
                             'stroke="black"/>')
    for k, w in enumerate(loads):  # legend
        lx = 20 + k * 260
        parts.append(f'<rect x="{lx}" y="{H + 8}" width="12" height="12" fill="{colours[w]}"/>')
        parts.append(f'<text x="{lx + 18}" y="{H + 18}">{LOADS[w]["title"]}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


# --- main ------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("SPINDLE_BENCH_ROUNDS", "3")))
    ap.add_argument("--seconds", type=int, default=int(os.environ.get("SPINDLE_BENCH_SECONDS",
                                                                      "4")),
                    help="length of each h2load run (default 4)")
    ap.add_argument("--systems", help="default: every system that runs one of the workloads")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--idle-conns", type=int, default=1000)
    ap.add_argument("--new-pods", type=int, default=16,
                    help="pods workload: new Pods timed at their first call (default 16)")
    ap.add_argument("--out", default=RESULTS_DIR, help="where latest.{md,svg,json} go")
    ap.add_argument("--perf", action="store_true",
                    default=os.environ.get("SPINDLE_BENCH_PERF") == "1",
                    help="then profile spindle (perf record) in one more unary_c2 run; "
                         "writes spindle-profile.txt")
    ap.add_argument("--note", default=os.environ.get("SPINDLE_BENCH_NOTE", ""),
                    help="a line added to the results, e.g. about the machine")
    args = ap.parse_args()
    args.workloads = [w for w in args.workloads.split(",") if w]
    if args.systems is None:
        args.systems = [s for s in SYSTEMS if system_workloads(s, args.workloads)]
    else:
        args.systems = [s for s in args.systems.split(",") if s]
    bad = [s for s in args.systems if s not in SYSTEMS] + [w for w in args.workloads
                                                            if w not in WORKLOADS]
    if bad:
        ap.error(f"unknown: {', '.join(bad)}")
    if "latency" in args.workloads and (args.systems[0] != "direct"
                                        or "unary_c2" not in args.workloads):
        ap.error("latency needs direct first and unary_c2 (its rate is half of direct's)")
    idle = [s for s in args.systems if not system_workloads(s, args.workloads)]
    if idle:
        ap.error(f"{', '.join(idle)}: none of these workloads runs there (spindle-pod runs "
                 "pods only, pods runs on spindle and spindle-pod only)")
    if not (1 <= args.rounds <= 20 and 1 <= args.seconds <= 60
            and 10 <= args.idle_conns <= 4000 and 1 <= args.new_pods <= 64):
        ap.error("--rounds in 1..20, --seconds in 1..60, --idle-conns in 10..4000, "
                 "--new-pods in 1..64")
    if os.geteuid() != 0:
        print("make bench needs root", file=sys.stderr)
        return 1
    packages = {"h2load": "nghttp2-client", "nghttp": "nghttp2-client", "haproxy": "haproxy",
                "nginx": "nginx", "nghttpx": "nghttp2-proxy"}
    for tool, pkg in packages.items():
        if (tool not in PROXIES or tool in args.systems) and shutil.which(tool) is None:
            print(f"{tool} not found: apt-get install {pkg} (make deps)", file=sys.stderr)
            return 1
    for path, how in ((sim.SPINDLE_BIN, "make"), (BACKEND_BIN, "make build/bin/grpc_backend")):
        if not os.access(path, os.X_OK):
            print(f"{path} missing: run {how}", file=sys.stderr)
            return 1

    started = datetime.datetime.now(datetime.timezone.utc)
    try:
        with sim.Node() as node:
            client = node.add_pod("client")
            pods = [node.add_pod("grpc1"), node.add_pod("grpc2")]
            svc = node.add_service("grpc", ports=[PORT], backends=pods)
            load_pods = []
            if any("pods" in system_workloads(s, args.workloads) for s in args.systems):
                load_pods = [node.add_pod(f"caller{i + 1}") for i in range(POD_CLIENTS)]
            bench = Bench(args, node, client, pods, svc, load_pods)
            results = bench.run()
    except BenchError as e:
        print(f"grpc_bench: {e}", file=sys.stderr)
        return 1

    versions = tool_versions()
    text, rows = report(results, args, versions, started, bench.profiles)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "latest.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "latest.svg"), "w") as f:
        f.write(svg_chart(results, [s for s in args.systems if s != "spindle-pod"]))
    with open(os.path.join(args.out, "latest.json"), "w") as f:
        json.dump({"started": started.isoformat(), "rounds": args.rounds,
                   "seconds": args.seconds, "versions": versions, "results": results}, f,
                  indent=1)
    for name, profile in bench.profiles.items():
        with open(os.path.join(args.out, name), "w") as f:
            f.write(profile + "\n")
    print()
    print(text)
    print(f"written: {os.path.join(args.out, 'latest.md')}, latest.svg, latest.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
