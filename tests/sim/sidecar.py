"""A mesh sidecar's outbound capture inside one Pod, as Istio's and Linkerd's do it: an
nftables redirect in the Pod's netns sends every outbound TCP connection to a relay in the
Pod, which dials the connection's original destination (SO_ORIGINAL_DST, what conntrack saw
before the redirect) from a new port, as Envoy's passthrough does. The relay marks its own
sockets, and the rule leaves marked ones alone (Istio: its proxy's uid or mark 0x539).

    car = sidecar.Sidecar(pod)          # rule in place, relay running in the Pod's cgroup
    ... pod's clients dial as usual ...
    car.relayed()                       # [{"from": ..., "to": ...}] one per relayed connection
    car.close()

Run as a program, it is the relay:  sidecar.py --port 15101 --mark 0x539 --log FILE
"""

import argparse
import os
import socket
import struct
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from jsonl import JsonLinesLog, read_complete  # noqa: E402  (also run as a script)

RELAY_PORT = 15101
MARK = 0x539
SO_ORIGINAL_DST = 80       # linux/netfilter_ipv4.h
IP6T_SO_ORIGINAL_DST = 80  # linux/netfilter_ipv6/ip6_tables.h


class Sidecar:
    """The capture rule and the relay in `pod`; close() removes both."""

    def __init__(self, pod, *, port=RELAY_PORT, mark=MARK):
        from .paths import PYTHON
        self.pod = pod
        self.log_path = os.path.join(pod.node.logdir, f"sidecar-{pod.name}.jsonl")
        if os.path.exists(self.log_path):  # a Pod of this name had a sidecar before
            os.unlink(self.log_path)
        self.proc = pod.spawn([PYTHON, os.path.abspath(__file__), "--port", str(port),
                               "--mark", hex(mark), "--log", self.log_path],
                              name=f"sidecar-{pod.name}")
        self._wait_listening(port)
        pod.netns.nft(f"""
table inet spindle_test_sidecar {{
  chain output {{
    type nat hook output priority -100; policy accept;
    meta mark {mark:#x} return
    ip daddr 127.0.0.0/8 return
    ip6 daddr ::1 return
    meta l4proto tcp redirect to :{port}
  }}
}}
""")

    def _wait_listening(self, port):
        from .wait import wait_until

        def listening():
            out = self.pod.netns.exec(["ss", "-tlnH", f"sport = :{port}"], check=False).stdout
            return out.strip() != "" or None
        wait_until(listening, 10, what=f"the sidecar relay listening on :{port}",
                   details=self.proc.tail)

    def relayed(self):
        """One entry per connection the relay took: where it was going ("to"), whether the
        relay's own connect there worked, and the peer its socket then showed ("peer")."""
        return read_complete(self.log_path)

    def close(self):
        self.pod.netns.exec(["nft", "delete", "table", "inet", "spindle_test_sidecar"],
                            check=False)
        self.proc.stop()


# --- the relay ----------------------------------------------------------------------------

def original_dst(conn):
    """Where the captured connection was going, from conntrack."""
    if conn.family == socket.AF_INET6:
        raw = conn.getsockopt(socket.SOL_IPV6, IP6T_SO_ORIGINAL_DST, 28)
        port = struct.unpack("!H", raw[2:4])[0]
        host = socket.inet_ntop(socket.AF_INET6, raw[8:24])
        return socket.AF_INET6, (host, port)
    raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port = struct.unpack("!H", raw[2:4])[0]
    return socket.AF_INET, (socket.inet_ntoa(raw[4:8]), port)


def pump(src, dst):
    """src to dst until src's EOF, then half-close dst; an error closes both."""
    try:
        while True:
            data = src.recv(65536)
            if not data:
                dst.shutdown(socket.SHUT_WR)
                return
            dst.sendall(data)
    except OSError:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def relay(conn, mark, log):
    family, dest = original_dst(conn)
    out = socket.socket(family, socket.SOCK_STREAM)
    out.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
    entry = {"from": list(conn.getpeername()[:2]), "to": [dest[0], dest[1]]}
    try:
        out.connect(dest)
        entry["connected"] = True
        entry["peer"] = list(out.getpeername()[:2])
    except OSError as e:
        entry["connected"] = False
        entry["error"] = str(e)
    log.write(entry)
    if not entry["connected"]:
        conn.close()
        out.close()
        return
    back = threading.Thread(target=pump, args=(out, conn), daemon=True)
    back.start()
    pump(conn, out)
    back.join()
    conn.close()
    out.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=RELAY_PORT)
    ap.add_argument("--mark", type=lambda s: int(s, 0), default=MARK)
    ap.add_argument("--log", required=True)
    args = ap.parse_args()
    log = JsonLinesLog(args.log)
    listeners = []
    for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((host, args.port))
        s.listen(128)
        listeners.append(s)

    def accept_loop(listener):
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=relay, args=(conn, args.mark, log), daemon=True).start()

    threads = [threading.Thread(target=accept_loop, args=(s,), daemon=True) for s in listeners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()  # until the test stops the relay


if __name__ == "__main__":
    sys.exit(main())
