"""The spindle daemon as a process in the simulated node: config file, start, ready, signals,
the final counters line."""

import itertools
import json
import os
import re
import signal as _signal

from . import paths
from .wait import wait_until

READY = r'spindle: info: ready|"level":"info","msg":"ready'  # log.format text or json
COUNTERS = re.compile(r"spindle: info: redirect counters: (.*)$")
ERROR = re.compile(r"^spindle: error: (.*)$")
REJECTED = r"spindle: warn: rejected connection from (\S+): not redirected"
PROXY_PORT = 15001
# Where redirected connects land: each service its own port after PROXY_PORT (proxy.service_ports,
# 64 by default); PROXY_PORT itself names no service.
SERVICE_PORTS = range(PROXY_PORT + 1, PROXY_PORT + 65)

_seq = itertools.count(1)


def to_yaml(obj, indent=0):
    """Block-style YAML for dicts, lists and scalars; strings double-quoted (JSON escapes
    are valid YAML double-quoted escapes)."""
    pad = "  " * indent
    if isinstance(obj, dict):
        if not obj:
            return pad + "{}\n"
        out = []
        for k, v in obj.items():
            if isinstance(v, (dict, list)) and v:
                out.append(f"{pad}{k}:\n{to_yaml(v, indent + 1)}")
            else:
                out.append(f"{pad}{k}: {_scalar(v)}\n")
        return "".join(out)
    if isinstance(obj, list):
        if not obj:
            return pad + "[]\n"
        out = []
        for v in obj:
            if isinstance(v, dict) and v:
                body = to_yaml(v, indent + 1)
                out.append(f"{pad}- {body.lstrip()}")
            elif isinstance(v, list) and v:
                out.append(f"{pad}-\n{to_yaml(v, indent + 1)}")
            else:
                out.append(f"{pad}- {_scalar(v)}\n")
        return "".join(out)
    return pad + _scalar(obj) + "\n"


def _scalar(v):
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, dict):
        return "{}"
    if isinstance(v, list):
        return "[]"
    return json.dumps(str(v))


def service_config(svc, *, port=None, endpoints=None):
    """One services[] entry: intercept both VIPs at the port, static endpoints = backends."""
    port = port or next(iter(svc.ports))
    pod_port = svc.ports.get(port, port)
    intercept = []
    if svc.vip4:
        intercept.append(svc.addr4(port))
    if svc.vip6:
        intercept.append(svc.addr6(port))
    static = endpoints if endpoints is not None else [f"{b.ip4}:{pod_port}" for b in svc.backends]
    return {"name": svc.name, "intercept": intercept, "endpoints": {"static": static}}


def config(node, services=(), *, listen=None, workers=2, heartbeat_timeout="1s", cgroup=None,
           pin_path="", drain="1s", extra=None):
    """A config dict for spindle in `node`: proxy on the node addresses, programs attached to
    the node's test cgroup, every given Service intercepted at its first port. Maps are not
    pinned (pin_path ""), unless a test gives a directory of its own (sim.Bpffs): the
    default /sys/fs/bpf/spindle would be shared by every test running on the machine. A
    short drain keeps stopping quick."""
    cfg = {
        "proxy": {
            "listen": listen if listen is not None else [f"{node.addr4}:{PROXY_PORT}",
                                                         f"[{node.addr6}]:{PROXY_PORT}"],
            "workers": workers,
        },
        "redirect": {
            "cgroup": cgroup if cgroup is not None else node.cgroup.path,
            "heartbeat_timeout": heartbeat_timeout,
            "pin_path": pin_path,
        },
        "shutdown": {"drain": drain},
        "services": [service_config(s) for s in services],
    }
    # The suites run once more on the epoll engine with SPINDLE_IO_ENGINE=epoll.
    if os.environ.get("SPINDLE_IO_ENGINE"):
        cfg["proxy"]["io_engine"] = os.environ["SPINDLE_IO_ENGINE"]
    for section, values in (extra or {}).items():
        if isinstance(values, dict):
            cfg.setdefault(section, {}).update(values)
        else:
            cfg[section] = values
    return cfg


def write_config(cfg, directory, name="spindle.yaml"):
    """Writes a dict (as YAML) or a string to directory/NNN-name; returns the path."""
    path = os.path.join(directory, f"{next(_seq):03d}-{name}")
    with open(path, "w") as f:
        f.write(cfg if isinstance(cfg, str) else to_yaml(cfg))
    os.chmod(path, 0o644)
    return path


def parse_counters(line):
    m = COUNTERS.search(line)
    if not m:
        return None
    out = {}
    for word in m.group(1).split():
        k, sep, v = word.partition("=")
        if sep and v.isdigit():
            out[k] = int(v)
    return out


class Spindle:
    """spindle --config FILE in the node's netns: outside the test cgroup, or in its child
    cgroup `cgroup` (then spindle's programs see spindle's own sockets too)."""

    def __init__(self, node, cfg, *, binary=None, name="spindle", args=(), wrapper=(),
                 cgroup=None):
        self.node = node
        self.binary = binary or paths.SPINDLE_BIN
        self.name = name
        self.config_path = write_config(cfg, node.logdir, f"{name}.yaml")
        self.args = list(args)
        self.wrapper = list(wrapper)
        self.cgroup = cgroup
        self.proc = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    @property
    def argv(self):
        return [*self.wrapper, self.binary, "--config", self.config_path, *self.args]

    def start(self, *, wait_ready=True, timeout=10.0):
        self.proc = self.node.spawn(self.argv, name=self.name, cgroup=self.cgroup)
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=10.0):
        return self.proc.wait_for_line(READY, timeout)

    def stderr_lines(self):
        return self.proc.stderr_lines() if self.proc else []

    def error_lines(self):
        return [line for line in self.stderr_lines() if ERROR.match(line)]

    def counters(self):
        """The last counters line, parsed ({"redirected": 3, ...}), or None."""
        for line in reversed(self.stderr_lines()):
            c = parse_counters(line)
            if c is not None:
                return c
        return None

    def proxy_pid(self, timeout=5.0):
        """The pid of the proxy process (the child that the privileged part, proc.pid, runs:
        it parses the Pods' HTTP/2 and holds the workers' threads)."""
        def child():
            try:
                with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                    pids = [int(p) for p in f.read().split()]
            except FileNotFoundError:
                return None
            return pids[0] if pids else None
        return wait_until(child, timeout, what=f"the proxy process of {self.name}")

    def signal(self, sig):
        self.proc.signal(sig)

    def stop(self, timeout=10.0, sig=_signal.SIGTERM):
        """SIGTERM (by default) and wait; SIGKILL after timeout. Returns the exit code."""
        return self.proc.stop(timeout, sig) if self.proc else None

    def close(self):
        if self.proc is not None:
            self.proc.kill()

    def tail(self, n=30):
        return self.proc.tail(n) if self.proc else "(not started)"
