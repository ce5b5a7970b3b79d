#!/usr/bin/python3
"""make bench (HTTP/2 path): gRPC unary calls per second, and spindle's CPU per call.

On a simulated node (tests/sim), a client Pod sends unary gRPC calls with h2load to a
Service VIP:

  - direct:  no spindle; the VIP is DNAT'd (kube-proxy-like) to ONE backend Pod;
  - spindle: spindle intercepts the VIP, terminates HTTP/2 and sends each call to one of
             endpoints.static = the TWO backend Pods (the VIP still DNATs to the first one
             only, so calls that reach the second Pod went through spindle's balancer).

Each round is one h2load run, `-c 16 -m 32 -t 1 -n CALLS -N 10s`: 16 connections, 32 streams
each, a connection silent for 10 s counts as a stall; POSTs of one gRPC frame (5-byte header
+ a 100-byte protobuf message, `-d FILE`) with `content-type: application/grpc` and `te:
trailers`. Rounds alternate (direct, spindle, direct, spindle, ...) because the machine is
noisy; figures are medians over the rounds, with the spread of the per-round values.

  - calls/s:         succeeded calls / h2load's run time (connection set-up included);
  - spindle CPU/call: spindle's utime + stime (/proc/PID/stat, all threads), read just before
                     and just after the h2load run, over the calls completed in it;
  - backend CPU/call: the same for the backend Pods together: if the one direct backend came
                     close to a full core, the direct figure would be the backend's limit and
                     the script says so.

Every round must succeed in full: h2load reports no failed, errored or timed-out call, every
answer is 2xx, the backends counted as many calls as h2load completed, and (spindle) both
backends got calls and one call checked with nghttp comes back as a valid gRPC response
(`:status 200`, a DATA frame, trailer `grpc-status: 0`). Otherwise the script stops with the
reason. Until spindle's HTTP/2 path exists, spindle passes h2c through to the VIP (so only
the first Pod answers) and the spindle rounds fail on that check: use --direct-only.

The backend is bench/grpc_backend.cc, a single-threaded epoll + nghttp2 h2c server that
answers every call with a real gRPC response (headers, one framed message, trailers). Chosen
over:
  - nghttpd: cannot send trailers, so no `grpc-status` and not a valid gRPC response (and one
    more package);
  - a libgrpc++ server: Debian's libgrpc++-dev + protobuf-compiler-grpc would do, but it costs
    several times the CPU per call of plain nghttp2 (thread pools, completion queues), so on
    2 cores the backend, not the path measured, would set the pace.
It costs ~2 µs CPU per call; grpcio's client accepts its responses. The script builds it into
build/bin/grpc_backend when missing or older than its source, with:
  g++ -std=c++20 -O2 -Wall -Wextra -Werror bench/grpc_backend.cc -lnghttp2 -o build/bin/grpc_backend

Debian packages: nghttp2-client (h2load, nghttp), libnghttp2-dev and g++ (the backend), and
what the simulator needs (iproute2, nftables, util-linux, python3).

Traffic stays inside the namespaces the simulator makes (198.18.0.0/15); every process the
script starts is stopped by PID, and the simulator removes what it made.

    bench/h2_bench.py [--direct-only] [--rounds N] [--calls N] [--workers N]
"""

import argparse
import os
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
from sim import spindle as spindle_mod  # noqa: E402

BACKEND_SRC = os.path.join(REPO, "bench", "grpc_backend.cc")
BACKEND_BIN = os.path.join(REPO, "build", "bin", "grpc_backend")
BACKEND_BUILD = ["g++", "-std=c++20", "-O2", "-Wall", "-Wextra", "-Werror", BACKEND_SRC,
                 "-lnghttp2", "-o", BACKEND_BIN]

PORT = 50051
PATH = "/spindle.bench.Bench/Unary"
CLIENTS = 16
STREAMS = 32
MESSAGE_BYTES = 100
H2LOAD_IDLE = "10s"  # a connection silent this long is a stall: h2load gives up and counts it
H2LOAD_TIMEOUT = 180  # s, per run: the outer bound, far above a healthy run
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    pass


# --- pieces --------------------------------------------------------------------------------

def grpc_frame(size):
    """A gRPC length-prefixed message of `size` bytes: a protobuf with field 1 (bytes)."""
    payload = size - 2  # tag byte + one-byte length (size <= 129)
    msg = bytes([0x0A, payload]) + b"q" * payload
    return b"\x00" + struct.pack(">I", len(msg)) + msg


def ensure_backend():
    if (os.path.exists(BACKEND_BIN)
            and os.path.getmtime(BACKEND_BIN) >= os.path.getmtime(BACKEND_SRC)):
        return
    os.makedirs(os.path.dirname(BACKEND_BIN), exist_ok=True)
    print("building", os.path.relpath(BACKEND_BIN, REPO), flush=True)
    p = subprocess.run(BACKEND_BUILD, capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise BenchError(f"building the backend failed:\n{p.stderr}")


def cpu_seconds(pid):
    """utime + stime of the whole process (every thread), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    fields = data[data.rindex(")") + 2:].split()  # field 3 (state) onward
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def process_name(pid):
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


CALLS_LINE = re.compile(r"^grpc_backend: calls (\d+)$")


def backend_calls(proc, timeout=5.0):
    """Calls the backend has answered so far: SIGUSR1 makes it print a new count line."""
    def lines():
        return [int(m.group(1)) for m in map(CALLS_LINE.match, proc.stdout_lines()) if m]
    before = len(lines())
    proc.signal(signal.SIGUSR1)
    proc.wait_for(lambda: len(lines()) > before, timeout, what="a calls line")
    return lines()[-1]


def _duration_us(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise BenchError(f"unreadable h2load duration {text!r}")
    return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)]


def parse_h2load(out):
    fin = re.search(r"^finished in (\S+), ([\d.]+) req/s", out, re.M)
    req = re.search(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                    r"(\d+) failed, (\d+) errored, (\d+) timeout", out, re.M)
    codes = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out, re.M)
    lat = re.search(r"^time for request:\s+(\S+)\s+(\S+)\s+(\S+)", out, re.M)
    if not (fin and req and codes and lat):
        raise BenchError(f"unreadable h2load output:\n{out}")
    total, started, done, ok, failed, errored, timeouts = map(int, req.groups())
    return {
        "seconds": _duration_us(fin.group(1)) / 1e6,
        "req_per_s": float(fin.group(2)),  # done / run time, unrounded
        "total": total, "done": done, "succeeded": ok, "failed": failed, "errored": errored,
        "timeout": timeouts, "2xx": int(codes.group(1)),
        "latency_mean_us": _duration_us(lat.group(3)),
    }


def h2load(client, url, body_path, calls):
    argv = ["h2load", "-c", str(CLIENTS), "-m", str(STREAMS), "-t", "1", "-n", str(calls),
            "-N", H2LOAD_IDLE,
            "-d", body_path, "-H", "content-type: application/grpc", "-H", "te: trailers", url]
    try:
        p = client.run(argv, timeout=H2LOAD_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise BenchError(f"h2load did not finish within {H2LOAD_TIMEOUT} s") from None
    if p.returncode != 0:
        raise BenchError(f"h2load exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return parse_h2load(p.stdout)


def grpc_check(client, url, body_path):
    """One call with nghttp -v: None when it came back as a valid gRPC response, else why."""
    argv = ["nghttp", "-v", "-n", "-t", "5", "-d", body_path, "-H",
            "content-type: application/grpc", "-H", "te: trailers", url]
    try:
        p = client.run(argv, timeout=15, check=False)
    except subprocess.TimeoutExpired:
        return "nghttp timed out"
    out = p.stdout
    missing = [what for what, pattern in (
        (":status 200", r"recv \(stream_id=\d+\) :status: 200$"),
        ("content-type application/grpc", r"recv \(stream_id=\d+\) content-type: application/grpc"),
        ("a DATA frame", r"recv DATA frame <length=[1-9]"),
        ("trailer grpc-status 0", r"recv \(stream_id=\d+\) grpc-status: 0$"),
    ) if not re.search(pattern, out, re.M)]
    if p.returncode != 0 or missing:
        return (f"nghttp exited {p.returncode}, missing {', '.join(missing) or 'nothing'}\n"
                f"{out[-2000:]}{p.stderr[-1000:]}")
    return None


# --- one round -----------------------------------------------------------------------------

def run_round(mode, *, node, client, backends, url, body_path, calls, cfg, r):
    daemon = None
    try:
        if mode == "spindle":
            daemon = sim.Spindle(node, cfg, name=f"spindle-{r}").start()
            if process_name(daemon.proc.pid) != "spindle":
                raise BenchError(f"PID {daemon.proc.pid} is {process_name(daemon.proc.pid)!r}, "
                                 "not spindle: its CPU time would be someone else's")
        calls_before = [backend_calls(b) for b in backends]
        backend_cpu0 = sum(cpu_seconds(b.pid) for b in backends)
        spindle_cpu0 = cpu_seconds(daemon.proc.pid) if daemon else 0.0
        t0 = time.monotonic()
        res = h2load(client, url, body_path, calls)
        wall = time.monotonic() - t0
        spindle_cpu = (cpu_seconds(daemon.proc.pid) - spindle_cpu0) if daemon else None
        backend_cpu = sum(cpu_seconds(b.pid) for b in backends) - backend_cpu0
        served = [after - before for before, after in zip(calls_before,
                                                          [backend_calls(b) for b in backends])]

        bad = {k: res[k] for k in ("failed", "errored", "timeout") if res[k]}
        if bad or res["succeeded"] != calls or res["2xx"] != calls:
            raise BenchError(f"{mode}: h2load did not complete every call: {calls} asked, "
                             f"{res['succeeded']} succeeded, {res['2xx']} answered 2xx, {bad}")
        if sum(served) != calls:
            raise BenchError(f"{mode}: the backends answered {served} calls, h2load completed "
                             f"{calls}")
        if mode == "spindle":
            if min(served) == 0:
                raise BenchError(
                    f"spindle: calls per backend Pod {served}: one Pod got none, so spindle did "
                    "not balance the calls (its HTTP/2 path is not there yet, and h2c went "
                    "through as passthrough to the VIP?). Use --direct-only until it is.")
            why = grpc_check(client, url, body_path)
            if why:
                raise BenchError(f"spindle: a call through spindle is not a valid gRPC "
                                 f"response: {why}")
            daemon.stop()
            counters = daemon.counters() or {}
            if counters.get("redirected", 0) < CLIENTS:
                raise BenchError(f"spindle: redirect counters {counters}: the h2load "
                                 "connections were not redirected")
        return {
            "calls_per_s": res["req_per_s"],  # every call done succeeded (checked above)
            "latency_mean_us": res["latency_mean_us"],
            "spindle_us_per_call": spindle_cpu * 1e6 / calls if spindle_cpu is not None else None,
            "backend_us_per_call": backend_cpu * 1e6 / calls,
            "backend_core_share": backend_cpu / wall,
            "served": served,
        }
    except BaseException:
        if daemon is not None:
            print(daemon.tail(), file=sys.stderr)
        raise
    finally:
        if daemon is not None:
            daemon.close()


# --- report --------------------------------------------------------------------------------

def spread(values, fmt):
    return f"{format(min(values), fmt)}–{format(max(values), fmt)}"


def report(results, modes, rounds, calls):
    def med(mode, key):
        return statistics.median(r[key] for r in results[mode])

    def per_round(mode, key, fmt):
        return spread([r[key] for r in results[mode]], fmt)

    head = {"direct": "direct (VIP → 1 Pod)", "spindle": "spindle (2 Pods)"}
    cols = [head[m] for m in modes]
    both = len(modes) == 2
    print()
    print(f"| HTTP/2 unary gRPC ({rounds} interleaved rounds, h2load -c {CLIENTS} -m {STREAMS}, "
          f"{calls} calls each, {os.cpu_count()} CPUs) | " + " | ".join(cols)
          + (" | spindle ÷ direct |" if both else " |"))
    print("|---" * (1 + len(modes) + (1 if both else 0)) + "|")

    def row(label, key, fmt, ratio=False, modes_=modes):
        cells = [format(med(m, key), fmt) if m in modes_ else "–" for m in modes]
        extra = ""
        if both:
            extra = (f" | {med('spindle', key) / med('direct', key):.2f}×" if ratio
                     else " |")
        print(f"| {label} | " + " | ".join(cells) + extra + " |")
        spreads = [per_round(m, key, fmt) if m in modes_ else "" for m in modes]
        print("| per round | " + " | ".join(spreads) + (" |" if both else "") + " |")

    row("calls/s, median", "calls_per_s", ".0f", ratio=True)
    row("mean call latency (h2load), µs, median", "latency_mean_us", ".0f", ratio=True)
    if "spindle" in modes:
        row("spindle CPU per call, µs (utime+stime), median", "spindle_us_per_call", ".2f",
            modes_=("spindle",))
    row("backend CPU per call, µs, all Pods, median", "backend_us_per_call", ".2f")
    last = [" / ".join(str(n) for n in results[m][-1]["served"]) for m in modes]
    print("| calls per Pod, last round | " + " | ".join(last) + (" |" if both else "") + " |")


# --- main ----------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--direct-only", action="store_true",
                    help="only the direct rounds (validates the bench without spindle's h2 path)")
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("SPINDLE_BENCH_ROUNDS", "3")))
    ap.add_argument("--calls", type=int, default=int(os.environ.get("SPINDLE_BENCH_CALLS",
                                                                    "500000")),
                    help="calls per h2load run (default 500000: a few seconds, and enough "
                         "CPU ticks for a per-call figure good to about 1%%)")
    ap.add_argument("--workers", type=int, default=1,
                    help="spindle workers (default 1: 2 CPUs are shared with h2load and the "
                         "backends)")
    args = ap.parse_args()
    if not 1 <= args.rounds <= 20 or not CLIENTS * STREAMS <= args.calls <= 10_000_000:
        ap.error("--rounds in 1..20, --calls in 512..10000000")
    if os.geteuid() != 0:
        print("make bench needs root", file=sys.stderr)
        return 1
    for tool in ("h2load", "nghttp"):
        if shutil.which(tool) is None:
            print(f"{tool} not found: apt-get install nghttp2-client", file=sys.stderr)
            return 1
    modes = ("direct",) if args.direct_only else ("direct", "spindle")
    if "spindle" in modes and not os.access(sim.SPINDLE_BIN, os.X_OK):
        print(f"{sim.SPINDLE_BIN} missing: run make first", file=sys.stderr)
        return 1

    try:
        ensure_backend()
        with sim.Node() as node:
            client = node.add_pod("client")
            pods = [node.add_pod("grpc1"), node.add_pod("grpc2")]
            svc = node.add_service("grpc", ports=[PORT], backends=pods[:1])
            backends = []
            for pod in pods:
                proc = pod.spawn([BACKEND_BIN, "--port", str(PORT),
                                  "--reply-bytes", str(MESSAGE_BYTES)],
                                 name=f"grpc_backend-{pod.name}")
                proc.wait_for_line(r"^grpc_backend: listening", 10, stream="stdout")
                backends.append(proc)
            body_path = os.path.join(node.logdir, "request.grpc")
            with open(body_path, "wb") as f:
                f.write(grpc_frame(MESSAGE_BYTES))
            os.chmod(body_path, 0o644)
            url = f"http://{svc.vip4}:{PORT}{PATH}"

            why = grpc_check(client, url, body_path)
            if why:
                raise BenchError(f"the backend's answer (direct) is not a valid gRPC "
                                 f"response: {why}")

            cfg = spindle_mod.config(node, [svc], workers=args.workers)
            cfg["services"] = [spindle_mod.service_config(
                svc, endpoints=[f"{p.ip4}:{PORT}" for p in pods])]

            results = {m: [] for m in modes}
            for r in range(args.rounds):
                for mode in modes:
                    res = run_round(mode, node=node, client=client, backends=backends, url=url,
                                    body_path=body_path, calls=args.calls, cfg=cfg, r=r)
                    results[mode].append(res)
                    cpu = (f", spindle {res['spindle_us_per_call']:.2f} µs CPU/call"
                           if res["spindle_us_per_call"] is not None else "")
                    print(f"round {r + 1}/{args.rounds} {mode:8s} {res['calls_per_s']:9.0f} "
                          f"calls/s{cpu}, backend {res['backend_us_per_call']:.2f} µs CPU/call "
                          f"({res['backend_core_share'] * 100:.0f}% of a core), per Pod "
                          f"{res['served']}", flush=True)
            for proc in backends:
                proc.stop()
    except BenchError as e:
        print(f"h2_bench: {e}", file=sys.stderr)
        return 1

    report(results, modes, args.rounds, args.calls)
    busy = max(r["backend_core_share"] for r in results["direct"])
    if busy > 0.9:
        print(f"\nnote: the direct backend used up to {busy * 100:.0f}% of a core: the direct "
              "figure may be the backend's limit, not the path's.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
