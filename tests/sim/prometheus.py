"""Prometheus for the simulated node, and plain HTTP/1.1 from inside a network namespace.

    from sim import prometheus as simprom
    prom = simprom.Prometheus(node, targets=["198.18.0.1:9901"]).start()   # scrapes every 1 s
    prom.wait_scrape_after(time.time())        # a scrape that began after now
    prom.query("spindle_requests_total")       # the API's result list
    r = simprom.http_get(node, "198.18.0.1", 9901, "/metrics")   # a Response
    r = simprom.exchange(node, "198.18.0.1", 9901, b"GET / HTTP/1.1\\r\\n...")  # raw bytes

Prometheus is Debian's `prometheus` binary run by PID in the node's netns, with its own
config file and TSDB folder in the node's log folder (never the system service, never
/var/lib/prometheus), listening on a node address. Nothing here opens a socket in the
runner's own netns: sockets are made by a short-lived thread that first enters the target
netns (setns(2) applies to the calling thread only, and a socket keeps the netns it was made
in), so a test talks to the node's addresses without spawning a process per request.
"""

import ctypes
import json
import os
import shutil
import socket
import threading
import time
import urllib.parse

from .wait import wait_until

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"
CLONE_NEWNET = 0x40000000
MAX_RESPONSE = 64 * 1024 * 1024

_libc = ctypes.CDLL(None, use_errno=True)


def available():
    """None when prometheus and promtool are installed, else why not (for a skip message)."""
    for path in (PROMETHEUS, PROMTOOL):
        if not os.access(path, os.X_OK):
            return f"{path} not found (apt-get install prometheus)"
    return None


# --- sockets in a netns --------------------------------------------------------------------

def netns_socket(place, family=socket.AF_INET, kind=socket.SOCK_STREAM):
    """A socket in the netns of `place` (a Node or a Pod)."""
    path = place.netns.path
    out = {}

    def make():
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({path}): {os.strerror(err)}")
            finally:
                os.close(fd)
            out["sock"] = socket.socket(family, kind)
        except BaseException as e:  # handed to the caller's thread
            out["error"] = e
    t = threading.Thread(target=make, name="netns-socket", daemon=True)
    t.start()
    t.join(10)
    if "error" in out:
        raise out["error"]
    if "sock" not in out:
        raise TimeoutError(f"could not make a socket in {path}")
    return out["sock"]


def connect(place, host, port, timeout=5.0):
    """A TCP connection from `place`'s netns to host:port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = netns_socket(place, family)
    sock.settimeout(timeout)
    try:
        sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


class Response:
    """One HTTP/1.1 response as received: status (0 if there was no status line), reason,
    headers (lower-case names; a repeated name keeps the last), body, raw bytes, whether the
    server closed the connection after it, and how long the exchange took."""

    def __init__(self, raw, closed, seconds):
        self.raw = raw
        self.closed = closed
        self.seconds = seconds
        self.status, self.reason, self.headers, self.body = 0, "", {}, b""
        head, sep, body = raw.partition(b"\r\n\r\n")
        if not sep:
            return
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            return
        self.status = int(parts[1])
        self.reason = parts[2] if len(parts) > 2 else ""
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self.body = body

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return (f"<Response {self.status} {self.reason!r} {len(self.body)} bytes, "
                f"{'closed' if self.closed else 'open'}: {self.raw[:200]!r}>")


def _complete(data, head_only):
    """True once data holds a whole response (by Content-Length)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    if head_only:
        return True
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return len(body) >= int(value.strip())
    return False


def exchange(place, host, port, request, *, timeout=5.0, until_close=False, head_only=False,
             shut_wr=False):
    """Sends `request` (bytes) on a new connection from `place` and reads one response: until
    its Content-Length is complete, or (until_close) until the server closes, at most
    `timeout` seconds. shut_wr half-closes after sending. Returns a Response."""
    t0 = time.perf_counter()
    deadline = time.monotonic() + timeout
    with connect(place, host, port, timeout) as sock:
        try:
            sock.sendall(request)
            if shut_wr:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before it read everything: read what it sent
        data, closed = b"", False
        for _ in range(100_000):
            if not until_close and _complete(data, head_only):
                break
            left = deadline - time.monotonic()
            if left <= 0 or len(data) > MAX_RESPONSE:
                break
            sock.settimeout(left)
            try:
                chunk = sock.recv(1 << 16)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            data += chunk
        if not closed and not until_close:
            # did the server close after the response? (a short look, for the tests that care)
            sock.settimeout(0.05)
            try:
                closed = sock.recv(1, socket.MSG_PEEK) == b""
            except (socket.timeout, BlockingIOError):
                closed = False
            except ConnectionResetError:
                closed = True
    return Response(data, closed, time.perf_counter() - t0)


def http_get(place, host, port, path, *, method="GET", timeout=5.0):
    """A well-formed HTTP/1.1 request with Connection: close; returns a Response."""
    hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    request = (f"{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nUser-Agent: spindle-tests\r\n"
               f"Accept: */*\r\nConnection: close\r\n\r\n").encode()
    return exchange(place, host, port, request, timeout=timeout, head_only=method == "HEAD")


# --- Prometheus ----------------------------------------------------------------------------

class Prometheus:
    """`prometheus` in the node netns scraping `targets` ("ip:port") every `interval`, its
    API on listen ("198.18.0.1:9090"); config and TSDB in the node's log folder."""

    def __init__(self, node, targets, *, listen=None, interval="1s", job="spindle",
                 name="prometheus"):
        why = available()
        if why:
            raise RuntimeError(why)
        self.node = node
        self.targets = list(targets)
        self.listen = listen or f"{node.addr4}:9090"
        self.host, _, port = self.listen.rpartition(":")
        self.port = int(port)
        self.job = job
        self.name = name
        self.dir = os.path.join(node.logdir, name)
        self.data = os.path.join(self.dir, "data")
        os.makedirs(self.data, mode=0o755, exist_ok=True)
        self.config_path = os.path.join(self.dir, "prometheus.yml")
        with open(self.config_path, "w") as f:
            f.write(
                "global:\n"
                f"  scrape_interval: {interval}\n"
                f"  scrape_timeout: {interval}\n"
                f"  evaluation_interval: {interval}\n"
                "scrape_configs:\n"
                f"  - job_name: {json.dumps(job)}\n"
                "    static_configs:\n"
                f"      - targets: {json.dumps(self.targets)}\n")
        self.proc = None

    @property
    def argv(self):
        return [PROMETHEUS,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.data}",
                f"--web.listen-address={self.listen}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=info"]

    def start(self, timeout=30.0):
        self.proc = self.node.spawn(self.argv, name=self.name)
        self.proc.wait_for_line(r"Server is ready to receive web requests", timeout)
        return self

    def close(self):
        if self.proc is not None:
            self.proc.kill()
        shutil.rmtree(self.data, ignore_errors=True)

    def tail(self, n=20):
        return self.proc.tail(n) if self.proc else "(prometheus not started)"

    def api(self, path, params=None, timeout=5.0):
        """GET /api/v1/<path>; returns the "data" of a successful answer."""
        url = f"/api/v1/{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
        r = http_get(self.node, self.host, self.port, url, timeout=timeout)
        try:
            doc = r.json()
        except ValueError:
            raise AssertionError(f"prometheus {url}: {r!r}") from None
        if r.status != 200 or doc.get("status") != "success":
            raise AssertionError(f"prometheus {url}: {r.status} {doc}")
        return doc["data"]

    def query(self, promql, at=None):
        """An instant query (now, or at unix time `at`): the result list,
        [{"metric": {...}, "value": [t, "v"]}, ...]."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return self.api("query", params)["result"]

    def targets_up(self):
        """{scrape url: health} of the active targets."""
        return {t["scrapeUrl"]: t["health"] for t in self.api("targets")["activeTargets"]}

    def last_scrape(self):
        """Unix time of the newest scrape of the job that succeeded, or None."""
        # timestamp() of a plain selector is the sample's (scrape start) time; of any other
        # expression ("up == 1") it would be the evaluation time
        up = {r["metric"].get("instance"): float(r["value"][1])
              for r in self.query(f'up{{job="{self.job}"}}')}
        res = self.query(f'timestamp(up{{job="{self.job}"}})')
        return max((float(r["value"][1]) for r in res if up.get(r["metric"].get("instance")) == 1),
                   default=None)

    def wait_scrape_after(self, t, timeout=10.0):
        """Waits for a successful scrape that began after unix time t; returns its time."""
        def newer():
            last = self.last_scrape()
            return last if last is not None and last > t else None
        return wait_until(newer, timeout, interval=0.1,
                          what=f"a scrape by prometheus after {t:.3f}",
                          details=lambda: f"targets {self.targets_up()}\n{self.tail()}")
