"""A Kubernetes node on one machine: the node's network namespace and test cgroup, Pods as
network namespaces on veth pairs (Calico-style routed, no bridge) each with its own child
cgroup, and kube-proxy-like ClusterIP Services made of nftables DNAT rules.

    with Node() as node:
        client = node.add_pod("client")
        server = node.add_pod("server")
        svc = node.add_service("echo", ports=[7000], backends=[server])
        server.spawn([PYTHON, TCP_BACKEND, "--port", "7000", "--log", path])
        client.run([...])

Addressing (all inside namespaces this run made): node 198.18.0.1 / 2001:2::1, Pod N
198.18.1.N / 2001:2::1:N, VIPs 198.19.0.N / 2001:2:0:ff::N.
"""

import ipaddress
import itertools
import os
import subprocess
import threading

from . import cleanup, paths
from .cgroup import Cgroup, cgroup2_mount
from .netns import Netns, enter_argv
from .proc import Proc
from .service import Service, ruleset

_node_seq = itertools.count(1)
_node_seq_lock = threading.Lock()


def _into_cgroup(cgroup_path):
    """preexec_fn: the child moves itself into the cgroup before it execs anything, so every
    socket it makes is charged to (and seen by BPF programs on) that cgroup."""
    procs = os.path.join(cgroup_path, "cgroup.procs")

    def preexec():
        with open(procs, "w") as f:
            f.write("0")
    return preexec


class _Place:
    """Something processes can run in: a netns plus, optionally, a cgroup."""

    netns = None  # Netns
    node = None   # the Node that owns the processes

    def _argv_and_preexec(self, argv, cgroup):
        return enter_argv(self.netns.name, argv), (_into_cgroup(cgroup.path) if cgroup else None)

    def _spawn(self, argv, *, name, cgroup, env=None, cwd=None, logdir=None):
        full, preexec = self._argv_and_preexec(argv, cgroup)
        proc = Proc(full, logdir=logdir or self.node.logdir, name=name or os.path.basename(str(argv[0])),
                    env=env, preexec_fn=preexec, cwd=cwd)
        self.node._procs.append(proc)
        return proc

    def _run(self, argv, *, cgroup, timeout=30, check=True, input=None, env=None):
        full, preexec = self._argv_and_preexec(argv, cgroup)
        p = subprocess.run(full, input=input, capture_output=True, text=True, timeout=timeout,
                           preexec_fn=preexec, env=env)
        if check and p.returncode != 0:
            raise subprocess.CalledProcessError(p.returncode, full, p.stdout, p.stderr)
        return p


class Pod(_Place):
    """A Pod: own netns with eth0 (a veth to the node), /32 and /128 addresses, default routes
    via the node's address onlink, and its own child cgroup of the node's test cgroup."""

    def __init__(self, node, name, n):
        self.node = node
        self.name = name
        self.n = n
        self.ip4 = f"{node.pod_prefix4}{n}"
        self.ip6 = f"{node.pod_prefix6}{n}"
        self.veth = f"vp{n}"  # node side; Pod side is eth0. Names only need to be unique per netns.
        self.netns = None
        self.cgroup = None
        try:
            self._create()
        except BaseException:
            self.close()
            raise

    def __repr__(self):
        return f"<Pod {self.name} {self.ip4} {self.ip6}>"

    def _create(self):
        node = self.node
        self.cgroup = node.cgroup.child(f"pod-{self.name}")
        self.netns = Netns(f"{node.netns.name}-{self.name}")
        self.netns.sysctl({"net.ipv6.conf.all.accept_dad": 0, "net.ipv6.conf.default.accept_dad": 0})
        # Made in the node netns with its peer straight in the Pod's: nothing ever appears in
        # the root namespace.
        node.netns.ip("link", "add", self.veth, "type", "veth", "peer", "name", "eth0",
                      "netns", self.netns.name)
        node.netns.ip_batch([
            f"link set {self.veth} up",
            f"addr add {node.addr4}/32 dev {self.veth}",
            f"addr add {node.addr6}/128 dev {self.veth} nodad",
            f"route add {self.ip4}/32 dev {self.veth} src {node.addr4}",
            f"route add {self.ip6}/128 dev {self.veth} src {node.addr6}",
        ])
        self.netns.ip_batch([
            "link set lo up",
            "link set eth0 up",
            f"addr add {self.ip4}/32 dev eth0",
            f"addr add {self.ip6}/128 dev eth0 nodad",
            f"route add default via {node.addr4} dev eth0 onlink",
            f"route add ::/0 via {node.addr6} dev eth0 onlink",
        ])

    def spawn(self, argv, *, name=None, env=None, cwd=None):
        """Starts argv in this Pod: cgroup first, then the netns."""
        return self._spawn(argv, name=name, cgroup=self.cgroup, env=env, cwd=cwd)

    def run(self, argv, *, timeout=30, check=True, input=None, env=None):
        """Runs a short command in this Pod; returns a CompletedProcess (text)."""
        return self._run(argv, cgroup=self.cgroup, timeout=timeout, check=check, input=input, env=env)

    def close(self):
        """Idempotent. Stops the Pod's processes, deletes its netns (and so the veth pair) and
        its cgroup."""
        if self.cgroup is not None:
            self.cgroup.kill_procs()
        if self.netns is not None:
            self.netns.close()
        if self.cgroup is not None:
            self.cgroup.close()
            if self.cgroup in self.node.cgroup.children:
                self.node.cgroup.children.remove(self.cgroup)
        self.node.pods.pop(self.name, None)


class Node(_Place):
    """The node: its netns (forwarding on, node addresses on lo and on every Pod veth), its
    test cgroup (parent of the Pod cgroups), its Pods and Services. A context manager;
    close() is idempotent and also runs at exit or on SIGTERM/SIGINT through sim.cleanup."""

    def __init__(self, name="node", *, addr4="198.18.0.1", addr6="2001:2::1",
                 pod_prefix4="198.18.1.", pod_prefix6="2001:2::1:",
                 vip_net4="198.19.0.0/16", vip_net6="2001:2:0:ff::/64"):
        with _node_seq_lock:
            self.index = next(_node_seq)
        self.node = self
        self.name = name
        self.addr4, self.addr6 = addr4, addr6
        self.pod_prefix4, self.pod_prefix6 = pod_prefix4, pod_prefix6
        self.vip_net4 = ipaddress.ip_network(vip_net4)
        self.vip_net6 = ipaddress.ip_network(vip_net6)
        self.pods = {}
        self.services = {}
        self._procs = []
        self._cgroups = {}
        self._next_pod = 2
        self._next_vip = 10
        self.netns = None
        self.cgroup = None
        self.logdir = paths.subdir(f"{name}{self.index}")
        self._closed = False
        self._token = cleanup.register(self.close, f"node {name}{self.index}")
        try:
            self._create()
        except BaseException:
            self.close()
            raise

    def __repr__(self):
        return f"<Node {self.netns.name if self.netns else self.name}>"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _create(self):
        mount = cgroup2_mount()
        if mount is None:
            raise RuntimeError("no cgroup2 mount in /proc/self/mountinfo")
        self.cgroup = Cgroup(os.path.join(mount, f"{paths.CGROUP_PREFIX}{self.index}"))
        self.netns = Netns(f"{paths.NETNS_PREFIX}{self.name}{self.index}")
        self.netns.sysctl({
            "net.ipv4.ip_forward": 1,
            "net.ipv6.conf.all.forwarding": 1,
            "net.ipv6.conf.all.accept_dad": 0,
            "net.ipv6.conf.default.accept_dad": 0,
        })
        # vip0/vip0p: a veth pair that only carries the VIP routes, so that connect() to a
        # VIP from the node's own netns finds a route (as via kube-ipvs0); the output DNAT
        # then re-routes it to a Pod. IPv6 refuses routes via lo, and dummy may be missing.
        self.netns.ip("link", "add", "vip0", "type", "veth", "peer", "name", "vip0p")
        self.netns.ip_batch([
            "link set lo up",
            "link set vip0 up",
            "link set vip0p up",
            f"addr add {self.addr4}/32 dev lo",
            f"addr add {self.addr6}/128 dev lo",
            f"route add {self.vip_net4} dev vip0 src {self.addr4}",
            f"route add {self.vip_net6} dev vip0",  # IPv6 takes no src off its device
        ])
        self._sync_services()

    # --- Pods and processes --------------------------------------------------------------

    def add_pod(self, name, n=None):
        """A new Pod; n picks its addresses (198.18.1.n), default the next free one from 2."""
        if name in self.pods:
            raise ValueError(f"pod {name} exists")
        if n is None:
            used = {p.n for p in self.pods.values()}
            while self._next_pod in used:
                self._next_pod += 1
            n = self._next_pod
            self._next_pod += 1
        if not 2 <= n <= 254 or any(p.n == n for p in self.pods.values()):
            raise ValueError(f"pod number {n} is taken or out of range")
        pod = Pod(self, name, n)
        self.pods[name] = pod
        return pod

    def cgroup_for(self, name):
        """A child cgroup of the test cgroup for node processes (made on first use): a
        process there is under spindle's BPF programs although it is in the node's netns."""
        if name not in self._cgroups:
            self._cgroups[name] = self.cgroup.child(name)
        return self._cgroups[name]

    def spawn(self, argv, *, name=None, cgroup=None, env=None, cwd=None):
        """Starts argv in the node's netns; cgroup=None leaves it in the runner's cgroup
        (outside the test cgroup), a name puts it in cgroup_for(name)."""
        cg = self.cgroup_for(cgroup) if cgroup else None
        return self._spawn(argv, name=name, cgroup=cg, env=env, cwd=cwd)

    def run(self, argv, *, cgroup=None, timeout=30, check=True, input=None, env=None):
        cg = self.cgroup_for(cgroup) if cgroup else None
        return self._run(argv, cgroup=cg, timeout=timeout, check=check, input=input, env=env)

    # --- Services ------------------------------------------------------------------------

    def add_service(self, name, *, ports=(7000,), backends=(), vip4=None, vip6=None):
        """A ClusterIP-like Service: DNAT from vip:port to a random backend Pod per
        connection. ports: a list (same port on the Pod) or {vip_port: pod_port}."""
        if name in self.services:
            raise ValueError(f"service {name} exists")
        used = {ipaddress.ip_address(a) for s in self.services.values() for a in (s.vip4, s.vip6) if a}
        for addr in (vip4, vip6):
            if addr and ipaddress.ip_address(addr) in used:
                raise ValueError(f"VIP {addr} is taken")
        while vip4 is None or vip6 is None:
            n = self._next_vip
            self._next_vip += 1
            if n > 0x999:
                raise ValueError("no free VIP")
            # 198.19.0.N and 2001:2:0:ff::N, N written the same in both
            cand4 = self.vip_net4.network_address + n
            cand6 = self.vip_net6.network_address + int(str(n), 16)
            if cand4 in used or cand6 in used:
                continue
            vip4 = vip4 or str(cand4)
            vip6 = vip6 or str(cand6)
        svc = Service(self, name, vip4=vip4, vip6=vip6, ports=ports, backends=backends)
        self.services[name] = svc
        self._sync_services()
        return svc

    def _remove_service(self, svc):
        if self.services.get(svc.name) is svc:
            del self.services[svc.name]
            self._sync_services()

    def _sync_services(self):
        """Replaces the whole kube-proxy table in one nft transaction: existing connections
        keep their conntrack NAT binding, new ones see the new rules."""
        self.netns.nft(ruleset(self))

    # --- teardown -----------------------------------------------------------------------

    def close(self):
        """Idempotent: processes (by PID), Pods, the node netns, the test cgroup."""
        if self._closed:
            return
        errors = []
        for proc in reversed(self._procs):
            try:
                proc.kill()
            except Exception as e:
                errors.append(e)
        for pod in list(self.pods.values()):
            try:
                pod.close()
            except Exception as e:
                errors.append(e)
        for step in (lambda: self.cgroup and self.cgroup.kill_procs(),
                     lambda: self.netns and self.netns.close(),
                     lambda: self.cgroup and self.cgroup.close()):
            try:
                step()
            except Exception as e:
                errors.append(e)
        if errors:
            raise errors[0]
        self._closed = True
        cleanup.unregister(self._token)


def leftovers():
    """Namespaces and cgroups of this run that still exist (should be none after close)."""
    from .netns import list_names
    left = [f"netns {n}" for n in list_names() if n.startswith(paths.NETNS_PREFIX)]
    mount = cgroup2_mount()
    if mount and os.path.isdir(mount):
        left += [f"cgroup {os.path.join(mount, d)}" for d in sorted(os.listdir(mount))
                 if d.startswith(paths.CGROUP_PREFIX)]
    return left

