"""kube-proxy for the simulated node: ClusterIP-like VIPs as nftables DNAT rules.

One `table inet spindle_sim` in the node netns. Its nat chains hook prerouting (connections
from Pods) and output (from processes in the node netns, spindle's upstream connections
among them) and DNAT VIP:port to a backend Pod picked at random per connection, as
kube-proxy does. A VIP:port with no rule, or no backend, is refused with a TCP reset (as
kube-proxy rejects a Service without endpoints) instead of vanishing into the VIP route.
"""

TABLE = "spindle_sim"


def _norm_ports(ports):
    if isinstance(ports, int):
        return {ports: ports}
    if isinstance(ports, dict):
        return {int(k): int(v) for k, v in ports.items()}
    return {int(p): int(p) for p in ports}


class Service:
    """A VIP pair (IPv4 and IPv6) with ports and a set of backend Pods. Made by
    Node.add_service; set_backends() changes the set atomically (scale up/down)."""

    def __init__(self, node, name, *, vip4, vip6, ports, backends):
        self.node = node
        self.name = name
        self.vip4 = vip4
        self.vip6 = vip6
        self.ports = _norm_ports(ports)
        self.backends = list(backends)

    def __repr__(self):
        return f"<Service {self.name} {self.vip4} {self.vip6} {self.ports} x{len(self.backends)}>"

    def addr4(self, port=None):
        """"198.19.0.10:7000" (the first port by default)."""
        return f"{self.vip4}:{port or next(iter(self.ports))}"

    def addr6(self, port=None):
        """"[2001:2:0:ff::10]:7000"."""
        return f"[{self.vip6}]:{port or next(iter(self.ports))}"

    def set_backends(self, backends):
        self.backends = list(backends)
        self.node._sync_services()

    def add_backend(self, pod):
        self.set_backends(self.backends + [pod])

    def remove_backend(self, pod):
        self.set_backends([b for b in self.backends if b is not pod])

    def remove(self):
        self.node._remove_service(self)


def _dnat(family, vip, vip_port, addrs, pod_port):
    if family == "ip":
        daddr, targets = f"ip daddr {vip}", [f"{a} . {pod_port}" for a in addrs]
    else:
        daddr, targets = f"ip6 daddr {vip}", [f"{a} . {pod_port}" for a in addrs]
    mapping = ", ".join(f"{i} : {t}" for i, t in enumerate(targets))
    return (f"{daddr} tcp dport {vip_port} counter "
            f"dnat {family} to numgen random mod {len(targets)} map {{ {mapping} }}")


def ruleset(node):
    """The whole table as one nft script: made if missing, deleted, made anew, atomically."""
    rules = []
    for svc in node.services.values():
        for vip_port, pod_port in svc.ports.items():
            if not svc.backends:
                continue  # refused by the filter chains below
            if svc.vip4:
                rules.append(_dnat("ip", svc.vip4, vip_port, [b.ip4 for b in svc.backends], pod_port))
            if svc.vip6:
                rules.append(_dnat("ip6", svc.vip6, vip_port, [b.ip6 for b in svc.backends], pod_port))
    reject = (f"ip daddr {node.vip_net4} meta l4proto tcp reject with tcp reset\n"
              f"    ip6 daddr {node.vip_net6} meta l4proto tcp reject with tcp reset\n"
              f"    ip daddr {node.vip_net4} reject\n"
              f"    ip6 daddr {node.vip_net6} reject")
    body = "\n    ".join(rules)
    return f"""table inet {TABLE}
delete table inet {TABLE}
table inet {TABLE} {{
  chain services {{
    {body}
  }}
  chain nat_prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    jump services
  }}
  chain nat_output {{
    type nat hook output priority -100; policy accept;
    jump services
  }}
  chain filter_forward {{
    type filter hook forward priority filter; policy accept;
    {reject}
  }}
  chain filter_output {{
    type filter hook output priority filter; policy accept;
    {reject}
  }}
}}
"""
