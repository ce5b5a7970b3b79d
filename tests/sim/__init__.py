"""spindle's node simulator: a Kubernetes node on one machine, made of network namespaces,
cgroups and nftables, for the integration tests, the demo, multi-node tests and benchmarks.
sim.Cluster joins several nodes into one routed cluster network.

    import sys; sys.path.insert(0, "<repo>/tests")
    import sim

    with sim.Node() as node:
        server = node.add_pod("server")
        client = node.add_pod("client")
        echo = node.add_service("echo", ports=[7000], backends=[server])
        backend = sim.start_backend(server, [7000])
        print(sim.dial(client, "peer", echo.vip4, 7000))

Everything it makes registers its undo with sim.cleanup, so it is removed at exit and on
SIGINT/SIGTERM/SIGHUP even when a Node is not closed explicitly. Root only.
"""

import os

from . import cleanup, jsonl, netns, paths, proc, sidecar, spindle
from .cgroup import Cgroup, cgroup2_mount, is_cgroup2
from .cluster import Cluster, ClusterService
from .netns import CommandError, Netns
from .node import Node, Pod, leftovers
from .paths import PYTHON, REPO, SPINDLE_BIN, TCP_BACKEND, TCP_CLIENT, TCP_CONNS, NO_IO_URING
from .proc import Proc, ProcessExited
from .service import Service
from .spindle import Spindle
from .tcp_backend import BackendLog
from .tcp_client import dial
from .wait import WaitTimeout, hold, wait_until

__all__ = [
    "cleanup", "jsonl", "netns", "paths", "proc", "sidecar", "spindle",
    "BackendLog", "Cgroup", "Cluster", "ClusterService", "CommandError", "Netns", "Node", "Pod",
    "Proc", "ProcessExited",
    "Service", "Spindle", "WaitTimeout", "cgroup2_mount", "dial", "hold", "is_cgroup2",
    "leftovers", "start_backend", "wait_until", "PYTHON", "REPO", "SPINDLE_BIN",
    "TCP_BACKEND", "TCP_CLIENT", "TCP_CONNS", "NO_IO_URING",
]


def start_backend(place, ports, *, name=None, timeout=10.0):
    """Starts tcp_backend in a Pod (or the node) on ports; waits until it listens.
    Returns (Proc, BackendLog)."""
    ports = [ports] if isinstance(ports, int) else list(ports)
    label = name or f"backend-{getattr(place, 'name', 'node')}"
    log_path = os.path.join(place.node.logdir, f"{label}.jsonl")
    argv = [PYTHON, TCP_BACKEND, "--log", log_path]
    for p in ports:
        argv += ["--port", str(p)]
    backend = place.spawn(argv, name=label)
    backend.wait_for_line(r"^tcp_backend: listening", timeout, stream="stdout")
    return backend, BackendLog(log_path)
