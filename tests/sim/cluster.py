"""Several simulated nodes joined into one cluster network, Calico-style routed.

    with Cluster(nodes=2) as cluster:
        n1, n2 = cluster.nodes
        client = n1.add_pod("client")                   # 198.18.1.2
        server = n2.add_pod("server", n=3)              # 198.18.2.3, 2001:2::2:3
        echo = cluster.add_service("echo", ports=[7000], backends=[server])
        sim.dial(client, "peer", echo.vip4, 7000)       # node 1's DNAT, then across the fabric

Node K is a sim.Node at 198.18.0.K / 2001:2::K with Pods at 198.18.K.N / 2001:2::K:N. A
"fabric" netns stands for the network between the nodes: one veth to each node (`nK` in the
fabric, `fab0` in the node), 198.18.0.254 / 2001:2::fe on its side. Each node routes the
other nodes' addresses and Pod prefixes to the fabric, and the fabric routes each prefix to
its node, so a packet between Pods of two nodes goes Pod, node, fabric, node, Pod, with no
NAT on the way: the receiving Pod sees the sender's own address, and the reply goes back
through the node that did a DNAT (the client's node), whose conntrack undoes it.

A cluster Service exists on every node with the same ClusterIP, each node's own kube-proxy
table DNATing it to backends on any node, as kube-proxy does on every node of a cluster.
"""

import itertools
import threading

from . import cleanup, paths
from .netns import Netns
from .node import Node

FABRIC4 = "198.18.0.254"
FABRIC6 = "2001:2::fe"
MAX_NODES = 200  # node K's Pods are 198.18.K.0/24; the fabric takes .254 of 198.18.0.0/24

_seq = itertools.count(1)
_seq_lock = threading.Lock()


def node_addresses(k):
    """Node K's addresses and Pod prefixes, as Node() takes them."""
    # K written the same in both families, as Pod numbers are (2001:2::12 is node 12)
    return {"addr4": f"198.18.0.{k}", "addr6": f"2001:2::{k}",
            "pod_prefix4": f"198.18.{k}.", "pod_prefix6": f"2001:2::{k}:"}


class ClusterService:
    """One ClusterIP Service present on every node: a sim.Service per node, the same VIPs
    and ports everywhere, the same backend Pods (of any node). Quacks like a Service for
    sim.spindle.config/service_config."""

    def __init__(self, cluster, name, per_node):
        self.cluster = cluster
        self.name = name
        self.per_node = per_node  # [Service], in node order
        first = per_node[0]
        self.vip4, self.vip6, self.ports = first.vip4, first.vip6, first.ports

    def __repr__(self):
        return (f"<ClusterService {self.name} {self.vip4} {self.vip6} {self.ports} "
                f"x{len(self.backends)}>")

    @property
    def backends(self):
        return self.per_node[0].backends

    def on(self, node):
        """This Service's sim.Service in `node`'s kube-proxy table."""
        return self.per_node[self.cluster.nodes.index(node)]

    def addr4(self, port=None):
        return self.per_node[0].addr4(port)

    def addr6(self, port=None):
        return self.per_node[0].addr6(port)

    def set_backends(self, backends):
        for svc in self.per_node:
            svc.set_backends(backends)

    def add_backend(self, pod):
        self.set_backends(self.backends + [pod])

    def remove_backend(self, pod):
        self.set_backends([b for b in self.backends if b is not pod])

    def remove(self):
        for svc in self.per_node:
            svc.remove()
        if self.cluster.services.get(self.name) is self:
            del self.cluster.services[self.name]


class Cluster:
    """`nodes` sim.Nodes (node K at 198.18.0.K) routed to each other through a fabric netns.
    A context manager; close() is idempotent and also runs at exit through sim.cleanup."""

    def __init__(self, nodes=2, *, name="node"):
        if not 2 <= nodes <= MAX_NODES:
            raise ValueError(f"a cluster has 2 to {MAX_NODES} nodes, not {nodes}")
        with _seq_lock:
            self.index = next(_seq)
        self.nodes = []
        self.services = {}
        self.fabric = None
        self._closed = False
        self._token = cleanup.register(self.close, f"cluster {self.index}")
        try:
            self.fabric = Netns(f"{paths.NETNS_PREFIX}fabric{self.index}")
            self.fabric.sysctl({
                "net.ipv4.ip_forward": 1,
                "net.ipv6.conf.all.forwarding": 1,
                "net.ipv6.conf.all.accept_dad": 0,
                "net.ipv6.conf.default.accept_dad": 0,
            })
            self.fabric.ip("link", "set", "lo", "up")
            for k in range(1, nodes + 1):
                self.nodes.append(Node(name, **node_addresses(k)))
            for k, node in enumerate(self.nodes, 1):
                self._join(k, node)
        except BaseException:
            self.close()
            raise

    def __repr__(self):
        return f"<Cluster {self.index}: {len(self.nodes)} nodes>"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def node(self, k):
        """Node K (1-based, as in its address 198.18.0.K)."""
        return self.nodes[k - 1]

    def _join(self, k, node):
        link = f"n{k}"
        # Made in the fabric with its peer straight in the node's netns: nothing in the root
        # namespace. Both ends carry their side's address (/32, /128) like the Pod veths do.
        self.fabric.ip("link", "add", link, "type", "veth", "peer", "name", "fab0",
                       "netns", node.netns.name)
        self.fabric.ip_batch([
            f"link set {link} up",
            f"addr add {FABRIC4}/32 dev {link}",
            f"addr add {FABRIC6}/128 dev {link} nodad",
            f"route add {node.addr4}/32 dev {link} src {FABRIC4}",
            f"route add {node.addr6}/128 dev {link} src {FABRIC6}",
            f"route add {node.pod_prefix4}0/24 via {node.addr4} dev {link} onlink",
            f"route add {node.pod_prefix6}0/112 via {node.addr6} dev {link} onlink",
        ])
        cmds = [
            "link set fab0 up",
            f"addr add {node.addr4}/32 dev fab0",
            f"addr add {node.addr6}/128 dev fab0 nodad",
            f"route add {FABRIC4}/32 dev fab0 src {node.addr4}",
            f"route add {FABRIC6}/128 dev fab0 src {node.addr6}",
        ]
        # Only the other nodes' prefixes: a packet for a missing local Pod must not loop
        # between this node and the fabric.
        for other in self.nodes:
            if other is node:
                continue
            cmds += [
                f"route add {other.addr4}/32 via {FABRIC4} dev fab0 onlink src {node.addr4}",
                f"route add {other.addr6}/128 via {FABRIC6} dev fab0 onlink src {node.addr6}",
                f"route add {other.pod_prefix4}0/24 via {FABRIC4} dev fab0 onlink "
                f"src {node.addr4}",
                f"route add {other.pod_prefix6}0/112 via {FABRIC6} dev fab0 onlink "
                f"src {node.addr6}",
            ]
        node.netns.ip_batch(cmds)

    def add_service(self, name, *, ports=(7000,), backends=(), vip4=None, vip6=None):
        """A Service on every node: the first node picks the VIPs (unless given), the others
        take the same. Returns a ClusterService."""
        if name in self.services:
            raise ValueError(f"service {name} exists")
        first = self.nodes[0].add_service(name, ports=ports, backends=backends, vip4=vip4,
                                          vip6=vip6)
        per_node = [first] + [n.add_service(name, ports=ports, backends=backends,
                                            vip4=first.vip4, vip6=first.vip6)
                              for n in self.nodes[1:]]
        svc = ClusterService(self, name, per_node)
        self.services[name] = svc
        return svc

    def close(self):
        """Idempotent: every node (processes, Pods, netns, cgroup), then the fabric."""
        if self._closed:
            return
        errors = []
        for node in reversed(self.nodes):
            try:
                node.close()
            except Exception as e:
                errors.append(e)
        if self.fabric is not None:
            try:
                self.fabric.close()
            except Exception as e:
                errors.append(e)
        if errors:
            raise errors[0]
        self._closed = True
        cleanup.unregister(self._token)
