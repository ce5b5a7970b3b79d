"""DNS for the simulated node: what spindle's c-ares resolver queries from the node netns.

    from sim import dns
    server = dns.Dnsmasq(node, records={"echo-pods.demo.svc.cluster.local": [p.ip4 for p in pods],
                                        "echo.demo.svc.cluster.local": [vip4, vip6]}, ttl=1)
    server.set_records({...})        # rewrites the hosts file, SIGHUP, waits for the re-read
    server.stop(); server.start()    # an outage: queries are refused (ICMP port unreachable)
    dns.query(node, "echo.demo.svc.cluster.local", "A")   # {"rcode": "NOERROR", "answers": [...]}

    faults = dns.Responder(node, port=5353)                 # tests/sim/dns_responder.py
    faults.set_name("echo-pods.demo.svc.cluster.local", a=[...], ttl=1)
    faults.set_mode("echo-pods.demo.svc.cluster.local", "servfail")
    faults.queries(name=..., qtype="A")                     # what it was asked, when, how

Both run in the node's netns on the node address (198.18.0.1), port 53 by default, and
nowhere else: nothing of the machine's own DNS set-up is read or touched (dnsmasq gets
--conf-file=/dev/null, --no-resolv, --no-hosts, and logs to its stderr, not syslog).
Processes are node processes (killed by PID when the node closes) and every file lives in
the node's log folder.
"""

import ipaddress
import json
import os
import re
import signal
import time

from . import paths
from .jsonl import read_complete
from .wait import wait_until

DNSMASQ = "/usr/sbin/dnsmasq"
RESPONDER = os.path.join(paths.SIM_DIR, "dns_responder.py")
CLUSTER_DOMAIN = "cluster.local"


def available():
    """None when dnsmasq is installed, else why not (for a skip message)."""
    if not os.access(DNSMASQ, os.X_OK):
        return f"{DNSMASQ} not found (apt-get install dnsmasq-base)"
    return None


def query(place, name, qtype="A", *, server=None, port=53, tcp=False, tcp_fallback=False,
          edns=0, timeout=2.0):
    """One question asked from `place` (the node, or a Pod) with dns_responder.py's client;
    returns its JSON answer: {"ok", "rcode", "tc", "answers": [{"type", "ttl", "data"}]...}."""
    server = server or place.node.addr4
    argv = [paths.PYTHON, RESPONDER, "query", name, qtype, "--server", server,
            "--port", str(port), "--timeout", str(timeout)]
    if tcp:
        argv.append("--tcp")
    if tcp_fallback:
        argv.append("--tcp-fallback")
    if edns:
        argv += ["--edns", str(edns)]
    p = place.run(argv, timeout=timeout * 2 + 10, check=False)
    try:
        return json.loads(p.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise AssertionError(f"dns query {name} {qtype} gave no answer (rc {p.returncode}):\n"
                             f"{p.stdout[-1000:]}\n{p.stderr[-1000:]}") from None


def addresses(answer, qtype=None):
    """The A/AAAA data of a query() answer, sorted."""
    return sorted(a["data"] for a in answer.get("answers", [])
                  if qtype is None or a["type"] == qtype)


class Dnsmasq:
    """dnsmasq in the node netns, answering from a hosts file it re-reads on SIGHUP.

    records: {name: [ip, ...]} (IPv4 and IPv6 mixed as needed). Names under `local`
    (default cluster.local) that are not in the file get NXDOMAIN; a listed name asked for a
    type it has no address of gets NOERROR with no answer (NODATA), as CoreDNS answers."""

    def __init__(self, node, *, records=None, ttl=1, address=None, port=53, local=CLUSTER_DOMAIN,
                 name="dnsmasq", log_queries=True, start=True):
        why = available()
        if why:
            raise RuntimeError(why)
        self.node = node
        self.ttl = int(ttl)
        self.address = address or node.addr4
        self.port = int(port)
        self.local = local
        self.name = name
        self.log_queries = log_queries
        self.dir = os.path.join(node.logdir, f"{name}-{self.port}")
        os.makedirs(self.dir, mode=0o755, exist_ok=True)
        self.hosts_path = os.path.join(self.dir, "hosts")
        self.records = {}
        self.proc = None
        self.procs = []  # every dnsmasq process of this object, for the logs
        self._write_hosts(records or {})
        if start:
            self.start()

    def __repr__(self):
        return f"<Dnsmasq {self.address}:{self.port} pid={self.proc.pid if self.proc else None}>"

    @property
    def server(self):
        """"198.18.0.1:53": as spindle's dns.servers takes it."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"

    @property
    def argv(self):
        argv = [DNSMASQ,
                "--no-daemon",                   # foreground, one process (TCP too), our PID
                "--conf-file=/dev/null",         # never /etc/dnsmasq.conf nor /etc/dnsmasq.d
                "--log-facility=-",              # stderr, not syslog
                "--pid-file=",                   # no pid file
                "--no-resolv", "--no-poll",      # no upstream: /etc/resolv.conf is not read
                "--no-hosts",                    # not /etc/hosts ...
                f"--addn-hosts={self.hosts_path}",  # ... only ours
                f"--local-ttl={self.ttl}",
                f"--listen-address={self.address}",
                "--bind-interfaces",             # bind exactly that address, in this netns
                f"--port={self.port}",
                "--cache-size=0"]                # nothing remembered across a SIGHUP
        if self.local:
            argv.append(f"--local=/{self.local}/")  # unknown names there: NXDOMAIN
        if self.log_queries:
            argv.append("--log-queries")
        return argv

    # --- process ------------------------------------------------------------------------

    def start(self, timeout=10.0):
        """Starts dnsmasq and waits until it has read its hosts file (it binds before)."""
        if self.proc is not None and self.proc.alive():
            raise RuntimeError(f"{self} is already running")
        self.proc = self.node.spawn(self.argv, name=self.name)
        self.procs.append(self.proc)
        self.proc.wait_for(lambda: self._reads() >= 1, timeout,
                           what=f"dnsmasq to read {self.hosts_path}")
        return self

    def stop(self, timeout=5.0):
        """SIGTERM and wait (SIGKILL after timeout): the port is closed, so queries are
        answered by ICMP port unreachable, as when a DNS Pod is gone."""
        if self.proc is not None:
            self.proc.stop(timeout)

    def alive(self):
        return self.proc is not None and self.proc.alive()

    def close(self):
        if self.proc is not None:
            self.proc.kill()

    def tail(self, n=20):
        return self.proc.tail(n) if self.proc else "(dnsmasq not started)"

    def queries(self, *, name=None, qtype=None):
        """[(name, type, client)] that dnsmasq logged (--log-queries), every run of it, oldest
        first. Its log has one-second timestamps, so time-based counts use the responder."""
        rx = re.compile(r"dnsmasq(?:\[\d+\])?: query\[(\w+)\] (\S+) from (\S+)")
        out = []
        for proc in self.procs:
            for line in proc.stderr_lines():
                m = rx.search(line)
                if not m:
                    continue
                q = (m.group(2).rstrip(".").lower(), m.group(1), m.group(3))
                if name and q[0] != name.rstrip(".").lower():
                    continue
                if qtype and q[1] != qtype:
                    continue
                out.append(q)
        return out

    def _reads(self):
        """How often the running dnsmasq has (re-)read the hosts file."""
        if self.proc is None:
            return 0
        rx = re.compile(r"dnsmasq(?:\[\d+\])?: read " + re.escape(self.hosts_path) + " ")
        return sum(1 for line in self.proc.stderr_lines() if rx.search(line))

    # --- records ------------------------------------------------------------------------

    def _write_hosts(self, records):
        by_ip = {}
        for name, ips in records.items():
            for ip in ips:
                by_ip.setdefault(str(ipaddress.ip_address(ip)), []).append(name.rstrip("."))
        lines = [f"{ip} {' '.join(names)}" for ip, names in by_ip.items()]
        tmp = self.hosts_path + ".tmp"
        with open(tmp, "w") as f:
            f.write("\n".join(lines) + ("\n" if lines else ""))
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.hosts_path)
        self.records = {k.rstrip("."): list(v) for k, v in records.items()}

    def set_records(self, records, timeout=5.0):
        """Replaces every record (a name missing from `records` disappears: NXDOMAIN) and
        makes dnsmasq re-read them; returns once it has (its log says so). Returns the time
        (time.time()) at which the new records were being served."""
        before = self._reads()
        self._write_hosts(records)
        if self.alive():
            self.proc.signal(signal.SIGHUP)
            self.proc.wait_for(lambda: self._reads() > before, timeout,
                               what="dnsmasq to re-read its hosts file after SIGHUP")
        return time.time()

    def query(self, name, qtype="A", *, place=None, **kw):
        return query(place or self.node, name, qtype, server=self.address, port=self.port, **kw)


class Responder:
    """tests/sim/dns_responder.py serving in the node netns; the test steers it by rewriting
    its control file (atomically) and reads its JSON query log."""

    def __init__(self, node, *, address=None, port=53, ttl=5, unknown="nxdomain",
                 name="dns-responder", start=True):
        self.node = node
        self.address = address or node.addr4
        self.port = int(port)
        self.name = name
        self.dir = os.path.join(node.logdir, f"{name}-{self.port}")
        os.makedirs(self.dir, mode=0o755, exist_ok=True)
        self.control_path = os.path.join(self.dir, "control.json")
        self.log_path = os.path.join(self.dir, "queries.jsonl")
        self.control = {"version": 0, "ttl": int(ttl), "unknown": unknown, "names": {}}
        self.proc = None
        self._write()
        if start:
            self.start()

    def __repr__(self):
        return f"<Responder {self.address}:{self.port}>"

    @property
    def server(self):
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"

    def start(self, timeout=10.0):
        argv = [paths.PYTHON, RESPONDER, "serve", "--listen", self.address, "--port",
                str(self.port), "--control", self.control_path, "--log", self.log_path]
        self.proc = self.node.spawn(argv, name=self.name)
        self.proc.wait_for_line(r"^dns_responder: listening", timeout, stream="stdout")
        return self

    def stop(self, timeout=5.0):
        if self.proc is not None:
            self.proc.stop(timeout)

    def close(self):
        if self.proc is not None:
            self.proc.kill()

    def tail(self, n=20):
        return self.proc.tail(n) if self.proc else "(responder not started)"

    # --- control ------------------------------------------------------------------------

    def _write(self):
        self.control["version"] += 1
        tmp = self.control_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.control, f, sort_keys=True, indent=1)
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.control_path)
        return time.time()

    def reset(self, *, ttl=5, unknown="nxdomain"):
        """Forgets every name. Returns the time of the change."""
        self.control.update(ttl=int(ttl), unknown=unknown, names={})
        return self._write()

    def set_name(self, name, *, a=None, aaaa=None, ttl=None, mode="answer", script=None,
                 script_qtype="A", truncate="auto", delay_ms=0):
        """Defines (replaces) one name. a / aaaa: address lists. mode: answer | empty |
        nxdomain | servfail | refused | drop | broken. script: modes for the next queries of
        each type in script_qtype ("A", ("A", "AAAA"), "ANY"), one per query, counted per type,
        before `mode` applies again. Returns the time (unix s) from which queries see it."""
        entry = {"a": list(a or []), "aaaa": list(aaaa or []), "mode": mode,
                 "truncate": truncate}
        if ttl is not None:
            entry["ttl"] = int(ttl)
        if script:
            entry["script"] = list(script)
            entry["script_qtype"] = script_qtype if isinstance(script_qtype, str) \
                else list(script_qtype)
        if delay_ms:
            entry["delay_ms"] = int(delay_ms)
        self.control["names"][name.rstrip(".")] = entry
        return self._write()

    def set_mode(self, name, mode, *, script=None, script_qtype="A"):
        """Changes the mode (and script) of a defined name, keeping its records."""
        entry = self.control["names"][name.rstrip(".")]
        entry["mode"] = mode
        entry.pop("script", None)
        if script:
            entry["script"] = list(script)
            entry["script_qtype"] = script_qtype if isinstance(script_qtype, str) \
                else list(script_qtype)
        return self._write()

    def entry(self, name):
        return self.control["names"][name.rstrip(".")]

    # --- the log ------------------------------------------------------------------------

    def queries(self, *, name=None, qtype=None, transport=None, since=None, until=None):
        """Logged queries (dicts), oldest first, filtered. name matches with or without the
        final dot, case-insensitively."""
        want = name.rstrip(".").lower() + "." if name else None
        out = []
        for q in read_complete(self.log_path):
            if want and (q.get("name") or "").lower() != want:
                continue
            if qtype and q.get("type") != qtype:
                continue
            if transport and q.get("transport") != transport:
                continue
            if since is not None and q["t"] < since:
                continue
            if until is not None and q["t"] > until:
                continue
            out.append(q)
        return out

    def wait_queries(self, n, timeout, **filters):
        """Waits until at least n queries match filters (see queries()); returns them."""
        return wait_until(lambda: (lambda qs: qs if len(qs) >= n else None)(self.queries(**filters)),
                          timeout, interval=0.05,
                          what=f"{n} DNS queries {filters} at {self.server}",
                          details=lambda: "\n".join(json.dumps(q) for q in self.queries()[-10:]))

    def query(self, name, qtype="A", *, place=None, **kw):
        return query(place or self.node, name, qtype, server=self.address, port=self.port, **kw)
