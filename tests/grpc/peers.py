"""Starting the gRPC peers of tests/grpc in the simulated node and reading what they saw.

The integration tests put this folder on sys.path and `import peers`. (It has no
__init__.py on purpose: a package named `grpc` under tests/ would shadow grpcio.)

    server, log = peers.start_server(pod, name="b1")      # server.py on [::]:50051
    res = peers.run_client(client_pod, "198.19.0.10:50051", "unary", count=100)
    log.starts(run=res["run"])                              # the calls this server served
"""

import itertools
import json
import os
import time
import types
import urllib.parse

import sim
from sim import jsonl

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "server.py")
CLIENT = os.path.join(HERE, "client.py")
PROBE = os.path.join(HERE, "probe.py")
PORT = 50051

_runs = itertools.count(1)


def target(host, port=PORT):
    """"198.19.0.10:50051" or "[2001:2:0:ff::10]:50051"."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def new_run(label="t"):
    """A call-id prefix unique in this test run, so a test counts only its own calls."""
    return f"{label}{os.getpid()}x{next(_runs)}"


def peer_ip(peer):
    """The address in a gRPC peer string: "ipv4:198.18.0.1:4000" -> "198.18.0.1",
    "ipv6:[::ffff:198.18.0.1]:4000" -> "198.18.0.1", "ipv6:[2001:2::1]:4000" -> "2001:2::1"."""
    kind, _, rest = urllib.parse.unquote(peer).partition(":")  # grpcio writes %5B...%5D
    if kind == "ipv6":
        addr = rest[1:rest.index("]")]
        return addr[len("::ffff:"):] if addr.lower().startswith("::ffff:") else addr
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0]
    return peer


class ServerLog:
    """What one server.py saw: its JSON lines (start, end, cancel events)."""

    def __init__(self, path, name):
        self.path = path
        self.name = name

    def entries(self):
        return jsonl.read_complete(self.path)

    def events(self, ev=None, *, run=None, method=None):
        out = []
        for e in self.entries():
            if ev and e["ev"] != ev:
                continue
            if run and not (e.get("id") or "").startswith(run + "-"):
                continue
            if method and e["method"] != method:
                continue
            out.append(e)
        return out

    def starts(self, *, run=None, method=None):
        return self.events("start", run=run, method=method)

    def in_handler(self, run):
        """Ids of the run's calls the server has started and not ended."""
        return ({e["id"] for e in self.starts(run=run)}
                - {e["id"] for e in self.events("end", run=run)})

    def by_id(self, call_id):
        """{"start": entry, "end": entry, "cancel": entry} for one call id (what exists)."""
        return {e["ev"]: e for e in self.entries() if e.get("id") == call_id}

    def wait_for(self, predicate, timeout, *, what="a server log entry"):
        def find():
            for e in self.entries():
                if predicate(e):
                    return e
            return None
        return sim.wait_until(find, timeout, what=f"{what} in {self.name}'s log",
                              details=lambda: "\n".join(json.dumps(e) for e in self.entries()[-8:]))


def start_server(pod, *, name=None, port=PORT, log=None, tls=None, timeout=15.0, flags=None,
                 wait=True):
    """server.py in `pod` (named after it unless `name`), on [::]:port; waits until it
    serves (unless not `wait`: then wait_serving(proc) does). tls=(cert_path, key_path)
    serves TLS. flags: more server.py options, {"delay_ms": 20} for --delay-ms 20.
    Returns (Proc, ServerLog)."""
    name = name or pod.name
    log = log or os.path.join(pod.node.logdir, f"grpc-{name}-{port}.jsonl")
    argv = [sim.PYTHON, SERVER, "--name", name, "--port", str(port), "--log", log]
    if tls:
        argv += ["--tls-cert", tls[0], "--tls-key", tls[1]]
    argv += _flags(flags or {})
    proc = pod.spawn(argv, name=f"grpc-{name}")
    if wait:
        wait_serving(proc, timeout)
    return proc, ServerLog(log, name)


def wait_serving(proc, timeout=15.0):
    """Waits until a server.py started with wait=False serves."""
    proc.wait_for_line(r"^grpc_server: listening", timeout, stream="stdout")


def _flags(opts):
    argv = []
    for k, v in opts.items():
        flag = "--" + k.replace("_", "-")
        if v is True:
            argv.append(flag)
        elif v is not None and v is not False:
            argv += [flag, str(v)]
    return argv


def client_argv(tgt, scenario, **opts):
    return [sim.PYTHON, CLIENT, tgt, scenario] + _flags(opts)


def _parse(stdout, what):
    lines = stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        raise AssertionError(f"{what} gave no JSON result:\n{stdout[-2000:]}") from None


def run_client(pod, tgt, scenario, *, run_timeout=120, **opts):
    """client.py in `pod`, waited for; returns its JSON result (a dict)."""
    opts.setdefault("run", new_run(scenario[:2]))
    p = pod.run(client_argv(tgt, scenario, **opts), timeout=run_timeout, check=False)
    res = _parse(p.stdout, f"client.py {scenario} (rc {p.returncode}, stderr: {p.stderr[-1500:]})")
    res["_stderr"] = p.stderr[-1500:]
    return res


def spawn_client(pod, tgt, scenario, **opts):
    """client.py started in the background (a sim.Proc); result(proc) reads its answer."""
    opts.setdefault("run", new_run(scenario[:2]))
    return pod.spawn(client_argv(tgt, scenario, **opts), name=f"client-{scenario}"), opts["run"]


def result(proc, timeout):
    proc.wait(timeout)
    return _parse(proc.stdout(), f"client ({proc.tail()})")


def now():
    return time.time()


def kill_mid_run(server, log, client, run, *, result_timeout=30):
    """SIGKILLs `server` (a server.py Proc, `log` its ServerLog) while `client` (a
    spawn_client Proc of `run`) calls it, then waits for the client's result. Returns what
    the kill tests judge, as attributes: t_kill and t_dead (unix s: the signal; the server
    reaped, its sockets closed), res and calls (the client's result and its call records
    [id, t0, t1, code, pod]), in_handler (ids the server had started and not ended: they
    died with it), failed (calls not OK) and after (calls started once it was reaped)."""
    t_kill = now()
    server.kill()
    t_dead = now()
    res = result(client, result_timeout)
    calls = res["calls"]
    return types.SimpleNamespace(
        t_kill=t_kill, t_dead=t_dead, res=res, calls=calls, in_handler=log.in_handler(run),
        failed=[c for c in calls if c[3] != "OK"], after=[c for c in calls if c[1] > t_dead])
