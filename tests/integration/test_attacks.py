"""HTTP/2 attacks on spindle from a client Pod, beside a steady victim load of real gRPC calls.

Each attack is crafted frame by frame (python3-hyperframe, python3-hpack) on its own
connection to a declared service; spindle must close that connection with the GOAWAY code
the rule calls for (ENHANCE_YOUR_CALM for abuse), count it in spindle_h2_violations_total,
and keep serving the victim: zero failed calls, resident memory within a bound derived from
the limits. Also: a peer that never reads (send_timeout), connections over
limits.max_connections, an idle connection (GOAWAY NO_ERROR), and a backend that floods
spindle's upstream connection with PINGs. MEASURE lines give spindle's memory growth and CPU
time per attack and the victim's p99 against a run without attack.
"""

import json
import os
import sys
import threading
import time

import sim
from sim import dns as simdns
from sim import prometheus as simprom
from support import SimTestCase, measure

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "grpc"))
import peers  # noqa: E402  (tests/grpc)

PORT = 50051
ADMIN_PORT = 9911
NO_ERROR, PROTOCOL_ERROR, ENHANCE_YOUR_CALM = 0, 1, 11
VICTIM_RATE = 100  # calls per second, on a connection of its own
LIMITS = {
    "max_connections": 20,  # per worker (2 workers)
    "idle_timeout": "3s",
    "header_timeout": "2s",
    "send_timeout": "2s",
    "max_premature_resets": 100,
    "max_glitches": 100,
    "max_control_frames": 1000,
}
MIB = 1024 * 1024
NEVER_READS_CALLS = 16
# What one attacking connection may make spindle hold, by the limits (docs/architecture.md):
# request bodies not passed on (the attacks send under 1 MiB), the outbound queue (256 KiB), a
# header block per stream up to the hard cap (100 x 64 KiB), and responses held for a peer
# that does not read, the upstream stream window (1 MiB) per call: never_reads makes 16.
# Attacks run one at a time; allocator caches and nghttp2's own state get the same again.
CONNECTION_BOUND = 1 * MIB + 256 * 1024 + 100 * 64 * 1024 + NEVER_READS_CALLS * MIB
RSS_BOUND = 2 * CONNECTION_BOUND

# The attacker, run inside the client Pod: one connection, one attack, one JSON line.
ATTACKER = r'''
import json, select, socket, sys, time
import hpack
from hyperframe import frame as hf

host, port, attack, opts = sys.argv[1], int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
enc = hpack.Encoder()
t0 = time.monotonic()
out = {"attack": attack, "goaway": None, "closed": False, "sent_frames": 0}

def request(path="/spindle.test.Echo/Unary", extra=()):
    return enc.encode([(":method", "POST"), (":scheme", "http"), (":path", path),
                       (":authority", "echo"), ("content-type", "application/grpc"),
                       ("te", "trailers")] + list(extra))

def headers(sid, block, flags=("END_HEADERS",)):
    f = hf.HeadersFrame(sid)
    f.data = block
    for flag in flags:
        f.flags.add(flag)
    return f.serialize()

buf = b""
def pump(wait):
    # Reads what arrived; records a GOAWAY and the end of the connection.
    global buf
    end = time.monotonic() + wait
    while True:
        left = max(0.0, end - time.monotonic())
        r, _, _ = select.select([s], [], [], left)
        if not r:
            return
        try:
            data = s.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            out["closed"] = True
            out["closed_after_s"] = round(time.monotonic() - t0, 3)
            return
        buf += data
        while len(buf) >= 9:
            f, length = hf.Frame.parse_frame_header(memoryview(buf[:9]))
            if len(buf) < 9 + length:
                break
            if isinstance(f, hf.GoAwayFrame):
                f.parse_body(memoryview(buf[9:9 + length]))
                if out["goaway"] is None:
                    out["goaway"] = f.error_code
                    out["goaway_after_s"] = round(time.monotonic() - t0, 3)
            buf = buf[9 + length:]

def send_all(frames, batch=100):
    # Sends in batches, reading between them; stops once the connection is done.
    for i in range(0, len(frames), batch):
        if out["goaway"] is not None or out["closed"] or out.get("send_failed"):
            return
        try:
            s.sendall(b"".join(frames[i:i + batch]))
        except (ConnectionResetError, BrokenPipeError):
            # spindle closed while frames were in flight: its GOAWAY may still be queued
            # here, ahead of the reset.
            out["send_failed"] = True
            return
        out["sent_frames"] += len(frames[i:i + batch])
        pump(0)

s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
if attack == "never_reads":
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect((host, port))
if attack == "max_connections":
    # Many connections, each with a preface: those over the limit are closed at once.
    conns = [s]
    for _ in range(opts["count"] - 1):
        c = socket.create_connection((host, port))
        conns.append(c)
    closed = 0
    for c in conns:
        c.sendall(PREFACE + hf.SettingsFrame(0).serialize())
    time.sleep(0.5)
    for c in conns:
        c.setblocking(False)
        try:
            while True:
                data = c.recv(65536)
                if not data:
                    closed += 1
                    break
        except BlockingIOError:
            pass
        except ConnectionResetError:
            closed += 1
    out["connections"] = len(conns)
    out["closed_at_once"] = closed
    for c in conns:
        c.close()
    print(json.dumps(out)); sys.exit(0)

hello = PREFACE
if attack != "preface_only":
    hello += hf.SettingsFrame(0).serialize()
if attack == "never_reads":
    # Every window wide open, so that only the socket holds spindle back.
    st = hf.SettingsFrame(0); st.settings = {hf.SettingsFrame.INITIAL_WINDOW_SIZE: 2**31 - 1}
    hello += st.serialize() + hf.WindowUpdateFrame(0, window_increment=2**31 - 65536).serialize()
s.sendall(hello)
pump(0.2)

n = opts.get("frames", 5000)
if attack == "rapid_reset":
    frames = []
    for i in range(n):
        sid = 1 + 2 * i
        frames.append(headers(sid, request()))
        frames.append(hf.RstStreamFrame(sid, error_code=8).serialize())
    send_all(frames)
elif attack == "glitch":
    # An uppercase header name is malformed: each such request is reset by spindle.
    send_all([headers(1 + 2 * i, request(extra=[("Bad-Name", "x")]), ("END_HEADERS", "END_STREAM"))
              for i in range(n)])
elif attack == "continuation":
    block = request()
    frames = [headers(1, block[:4], ())]
    for i in range(4, len(block)):
        c = hf.ContinuationFrame(1); c.data = block[i:i + 1]; frames.append(c.serialize())
    frames += [hf.ContinuationFrame(1).serialize() for _ in range(n)]
    send_all(frames)
elif attack == "settings":
    send_all([hf.SettingsFrame(0).serialize() for _ in range(n)])
elif attack == "ping":
    send_all([hf.PingFrame(0, opaque_data=i.to_bytes(8, "big")).serialize() for i in range(n)])
elif attack == "window_update":
    send_all([hf.WindowUpdateFrame(0, window_increment=1).serialize() for _ in range(n)])
elif attack == "priority":
    send_all([hf.PriorityFrame(1001 + 2 * i, depends_on=0, stream_weight=16).serialize()
              for i in range(n)])
elif attack == "empty_data":
    frames = [headers(1, request())] + [hf.DataFrame(1).serialize() for _ in range(n)]
    send_all(frames)
elif attack == "slow_headers":
    # A header block begun and never finished (slowloris).
    block = request()
    s.sendall(headers(1, block[:len(block) // 2], ()))
elif attack == "never_reads":
    # Calls whose responses are large, on a connection that never reads them.
    msg = b"\x00\x00\x00\x00\x00"
    for i in range(opts["calls"]):
        sid = 1 + 2 * i
        block = request(extra=[("x-respond-bytes", str(opts["bytes"]))])
        d = hf.DataFrame(sid); d.data = msg; d.flags.add("END_STREAM")
        s.sendall(headers(sid, block) + d.serialize())
    time.sleep(opts["wait"])
    # Now read: whatever spindle managed to send, then the end of the connection.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    deadline = time.monotonic() + 10
    while not out["closed"] and time.monotonic() < deadline:
        pump(1.0)
        buf = b""  # the responses themselves are not of interest
    out["sent_frames"] = 2 * opts["calls"]
if attack not in ("never_reads",):
    deadline = time.monotonic() + opts.get("wait", 5)
    while not out["closed"] and time.monotonic() < deadline:
        pump(deadline - time.monotonic())
out["elapsed_s"] = round(time.monotonic() - t0, 3)
print(json.dumps(out))
'''

# A backend that attacks spindle's upstream connections: it answers each connection with its
# SETTINGS and a flood of PINGs, and prints what spindle did about it.
EVIL_SERVER = r'''
import json, select, socket, sys, time
from hyperframe import frame as hf

port, flood = int(sys.argv[1]), int(sys.argv[2])
ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("0.0.0.0", port))
ls.listen(16)
print("evil_server: listening", flush=True)
ls.settimeout(60)
for _ in range(3):
    try:
        c, _ = ls.accept()
    except socket.timeout:
        break
    out = {"goaway": None, "closed": False}
    t0 = time.monotonic()
    frames = [hf.SettingsFrame(0).serialize()]
    frames += [hf.PingFrame(0, opaque_data=i.to_bytes(8, "big")).serialize() for i in range(flood)]
    buf = b""
    sent = 0
    while time.monotonic() - t0 < 10 and not out["closed"]:
        if sent < len(frames) and out["goaway"] is None:
            try:
                c.sendall(b"".join(frames[sent:sent + 100]))
            except OSError:
                pass
            sent += 100
        r, _, _ = select.select([c], [], [], 0 if sent < len(frames) else 0.5)
        if not r:
            continue
        try:
            data = c.recv(65536)
        except OSError:
            data = b""
        if not data:
            out["closed"] = True
            break
        buf += data
        if buf.startswith(b"PRI * HTTP/2.0"):
            buf = buf[24:]
        while len(buf) >= 9:
            f, length = hf.Frame.parse_frame_header(memoryview(buf[:9]))
            if len(buf) < 9 + length:
                break
            if isinstance(f, hf.GoAwayFrame) and out["goaway"] is None:
                f.parse_body(memoryview(buf[9:9 + length]))
                out["goaway"] = f.error_code
            buf = buf[9 + length:]
    out["pings_sent"] = min(sent, len(frames)) - 1
    print("evil_server: " + json.dumps(out), flush=True)
    c.close()
'''

# name, options, the GOAWAY code expected, the reason counted in spindle_h2_violations_total
ATTACKS = [
    # More than spindle drains from a connection it closes (1 MiB) and the socket buffers
    # hold, so that being cut off shows in what the attacker could send.
    ("rapid_reset", {"frames": 20000}, ENHANCE_YOUR_CALM, "rapid_reset"),
    ("glitch", {"frames": 3000}, ENHANCE_YOUR_CALM, "glitch"),
    ("continuation", {"frames": 100}, ENHANCE_YOUR_CALM, "continuation_flood"),
    # Whichever trips first: our budget, or nghttp2's bound on the ACKs it owes (1000), when
    # a single read carries more frames than that.
    ("settings", {"frames": 5000}, ENHANCE_YOUR_CALM, ("settings_flood", "ack_flood")),
    ("ping", {"frames": 5000}, ENHANCE_YOUR_CALM, ("ping_flood", "ack_flood")),
    ("window_update", {"frames": 5000}, ENHANCE_YOUR_CALM, "window_update_flood"),
    ("priority", {"frames": 5000}, ENHANCE_YOUR_CALM, "priority_flood"),
    ("empty_data", {"frames": 5000}, ENHANCE_YOUR_CALM, "empty_frames"),
    ("slow_headers", {"wait": 5}, ENHANCE_YOUR_CALM, "header_timeout"),
    ("preface_only", {"wait": 5}, ENHANCE_YOUR_CALM, "header_timeout"),
]


def parse_metrics(text):
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            out[series] = float(value)
    return out


def p99(calls):
    """The 99th percentile latency (ms) of recorded calls [id, t0, t1, code, pod]."""
    lat = sorted((c[2] - c[1]) * 1000 for c in calls)
    return lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")


class AttacksTest(SimTestCase):
    needs_spindle = True

    @classmethod
    def build(cls, stack):
        cls.node = stack.enter_context(sim.Node())
        cls.attacker = cls.node.add_pod("attacker", n=2)
        cls.victim = cls.node.add_pod("victim", n=3)
        cls.backend = cls.node.add_pod("backend", n=4)
        cls.evil = cls.node.add_pod("evil", n=5)
        cls.echo = cls.node.add_service("echo", ports=[PORT], backends=[cls.backend])
        cls.evil_svc = cls.node.add_service("evil", ports=[PORT], backends=[cls.evil])
        # A Service whose name DNS does not know: spindle has no endpoints for it and passes
        # its connections through to the ClusterIP (here the echo backend).
        cls.unresolved = cls.node.add_service("unresolved", ports=[PORT], backends=[cls.backend])
        cls.dnsmasq = simdns.Dnsmasq(cls.node, records={})
        cls.server, _ = peers.start_server(cls.backend)
        cfg = sim.spindle.config(cls.node, [cls.echo, cls.evil_svc], extra={
            "admin": {"listen": f"{cls.node.addr4}:{ADMIN_PORT}", "pages": ["config"]},
            "limits": LIMITS,
            "dns": {"servers": [cls.dnsmasq.server]}})
        cfg["services"].append({
            "name": "unresolved", "intercept": [cls.unresolved.addr4(PORT)],
            "endpoints": {"dns": f"unresolved.{simdns.CLUSTER_DOMAIN}"}})
        cls.spindle = stack.enter_context(sim.Spindle(cls.node, cfg))
        cls.spindle.start()
        cls.baseline_p99 = None

    # --- measuring ---------------------------------------------------------------------------

    def metrics(self):
        r = simprom.http_get(self.node, self.node.addr4, ADMIN_PORT, "/metrics")
        self.assertEqual(r.status, 200, r)
        return parse_metrics(r.text)

    def violations(self, reasons, side="downstream"):
        """The count of one reason, or the sum over a tuple of them."""
        m = self.metrics()
        return sum(m.get(f'spindle_h2_violations_total{{side="{side}",reason="{reason}"}}', 0)
                   for reason in ((reasons,) if isinstance(reasons, str) else reasons))

    def proc_status(self):
        pid = self.spindle.proxy_pid()  # the process that parses the attacker's bytes
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return rss, cpu

    def under_victim_load(self, seconds, action):
        """Runs action() beside a steady victim load; returns (action's result, victim
        result, peak RSS growth, CPU seconds, rss before)."""
        rss0, cpu0 = self.proc_status()
        peak = [rss0]
        stop = threading.Event()

        def sample():
            while not stop.wait(0.05):
                peak[0] = max(peak[0], self.proc_status()[0])

        victim, _ = peers.spawn_client(self.victim, peers.target(self.echo.vip4, PORT),
                                       "during-kill", seconds=seconds, rate=VICTIM_RATE,
                                       concurrency=4, max_seconds=seconds + 20)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            time.sleep(1.0)  # the victim is connected and calling
            result = action()
            res = peers.result(victim, seconds + 30)
        finally:
            stop.set()
            sampler.join(5)
        rss1, cpu1 = self.proc_status()
        return result, res, max(peak[0], rss1) - rss0, cpu1 - cpu0, rss0

    def attack(self, name, opts, timeout=40, vip=None):
        p = self.attacker.run([sim.PYTHON, "-c", ATTACKER, vip or self.echo.vip4, str(PORT), name,
                               json.dumps(opts)], timeout=timeout, check=False)
        lines = p.stdout.strip().splitlines()
        self.assertTrue(lines, f"attacker {name} gave nothing: rc {p.returncode} {p.stderr[-2000:]}")
        return json.loads(lines[-1])

    def assertVictimUnharmed(self, res, what):
        calls = res.get("calls") or []
        self.assertGreater(len(calls), VICTIM_RATE, f"{what}: victim made too few calls")
        self.assertEqual(res.get("errors"), {}, f"{what}: victim saw errors: "
                         f"{res.get('error_details')} {self.spindle.tail()}")

    def baseline(self):
        if AttacksTest.baseline_p99 is None:
            _, res, growth, cpu, _ = self.under_victim_load(3, lambda: None)
            self.assertVictimUnharmed(res, "baseline")
            AttacksTest.baseline_p99 = p99(res["calls"])
            measure(f"attack=none victim_p99_ms={AttacksTest.baseline_p99:.1f} "
                    f"rss_growth_kib={growth // 1024} cpu_s={cpu:.2f}")
        return AttacksTest.baseline_p99

    # --- the attacks -------------------------------------------------------------------------

    def test_1_each_frame_attack_closes_only_its_connection(self):
        base = self.baseline()
        for name, opts, code, reason in ATTACKS:
            with self.subTest(attack=name):
                before = self.violations(reason)
                seconds = 3 + opts.get("wait", 0) // 2
                out, res, growth, cpu, rss0 = self.under_victim_load(
                    seconds, lambda: self.attack(name, opts))
                after = self.violations(reason)
                measure(f"attack={name} goaway={out['goaway']} "
                        f"goaway_after_s={out.get('goaway_after_s')} frames_sent={out['sent_frames']} "
                        f"rss_growth_kib={growth // 1024} cpu_s={cpu:.2f} "
                        f"victim_p99_ms={p99(res.get('calls') or []):.1f} baseline_p99_ms={base:.1f}")
                self.assertEqual(out["goaway"], code, f"{name}: {out} {self.spindle.tail()}")
                self.assertTrue(out["closed"], f"{name}: connection still open: {out}")
                self.assertEqual(after - before, 1, f"{name}: {reason} counted {after - before}")
                self.assertVictimUnharmed(res, name)
                self.assertLess(growth, RSS_BOUND, f"{name}: RSS grew {growth} from {rss0}")
                if reason == "header_timeout":
                    # Closed after header_timeout (2 s), well before the attacker gave up.
                    self.assertGreaterEqual(out["goaway_after_s"], 1.8, out)
                    self.assertLess(out["goaway_after_s"], 3.5, out)
                else:
                    self.assertLess(out["sent_frames"], opts["frames"] * 2, out)
        self.assertTrue(self.spindle.proc.alive(), self.spindle.tail())

    def test_2_peer_that_never_reads_is_cut_off_after_send_timeout(self):
        base = self.baseline()
        before = self.violations("send_timeout")
        opts = {"calls": NEVER_READS_CALLS, "bytes": 2 * MIB, "wait": 6}
        seen = {}

        def attack_and_watch():
            # The attacker never reads for `wait` s: spindle's counter says when it gave up.
            t = threading.Thread(target=lambda: seen.update(self.attack("never_reads", opts)))
            t0 = time.monotonic()
            t.start()
            while time.monotonic() - t0 < opts["wait"] and t.is_alive():
                if self.violations("send_timeout") > before:
                    seen["cut_after_s"] = round(time.monotonic() - t0, 2)
                    break
                time.sleep(0.1)
            t.join(60)
            return dict(seen)

        out, res, growth, cpu, rss0 = self.under_victim_load(10, attack_and_watch)
        after = self.violations("send_timeout")
        measure(f"attack=never_reads cut_after_s={out.get('cut_after_s')} "
                f"rss_growth_kib={growth // 1024} cpu_s={cpu:.2f} "
                f"victim_p99_ms={p99(res.get('calls') or []):.1f} baseline_p99_ms={base:.1f}")
        self.assertTrue(out["closed"], f"never_reads: still open: {out} {self.spindle.tail()}")
        self.assertEqual(after - before, 1, "send_timeout not counted once")
        # send_timeout (2 s) after the socket filled up, checked on a 0.5 s tick: well before
        # the attacker read again.
        self.assertIsNotNone(out.get("cut_after_s"), out)
        self.assertLess(out["cut_after_s"], opts["wait"] - 1, out)
        self.assertVictimUnharmed(res, "never_reads")
        self.assertLess(growth, RSS_BOUND, f"never_reads: RSS grew {growth} from {rss0}")

    def test_3_connections_over_the_limit_are_closed_at_once(self):
        base = self.baseline()
        key = 'spindle_limit_closes_total{reason="max_connections"}'
        before = self.metrics().get(key, 0)
        count = 100  # 2 workers x 20 allowed: most are over
        out, res, growth, cpu, rss0 = self.under_victim_load(
            3, lambda: self.attack("max_connections", {"count": count}))
        after = self.metrics().get(key, 0)
        measure(f"attack=max_connections connections={out['connections']} "
                f"closed_at_once={out['closed_at_once']} rss_growth_kib={growth // 1024} "
                f"cpu_s={cpu:.2f} victim_p99_ms={p99(res.get('calls') or []):.1f} "
                f"baseline_p99_ms={base:.1f}")
        # At most 2 x 20 stay open (the victim holds one of them).
        self.assertGreaterEqual(out["closed_at_once"], count - 2 * LIMITS["max_connections"], out)
        self.assertEqual(after - before, out["closed_at_once"], out)
        self.assertVictimUnharmed(res, "max_connections")
        self.assertLess(growth, RSS_BOUND, f"max_connections: RSS grew {growth} from {rss0}")

    def test_3_passthrough_connections_count_against_the_limit_too(self):
        # Connections to a Service without endpoints are passed through at L4; they hold
        # sockets and buffers as well, so the limit closes those over it at once too.
        key = 'spindle_limit_closes_total{reason="max_connections"}'
        before = self.metrics().get(key, 0)
        count = 100
        out = self.attack("max_connections", {"count": count}, vip=self.unresolved.vip4)
        after = self.metrics()
        measure(f"attack=max_connections_passthrough connections={out['connections']} "
                f"closed_at_once={out['closed_at_once']}")
        self.assertGreater(after.get('spindle_downstream_connections_total{protocol="passthrough"}', 0), 0,
                           "the connections were not passed through")
        self.assertGreaterEqual(out["closed_at_once"], count - 2 * LIMITS["max_connections"], out)
        self.assertEqual(after.get(key, 0) - before, out["closed_at_once"], out)

    def test_4_idle_connection_gets_goaway_then_close(self):
        key = 'spindle_limit_closes_total{reason="idle"}'
        before = self.metrics().get(key, 0)
        # A preface and SETTINGS, then nothing: no stream ever opens. The attacker's
        # "window_update" run with no frames is exactly that.
        out = self.attack("window_update", {"frames": 0, "wait": 6})
        after = self.metrics().get(key, 0)
        measure(f"attack=idle goaway={out['goaway']} goaway_after_s={out.get('goaway_after_s')}")
        self.assertEqual(out["goaway"], NO_ERROR, out)
        self.assertTrue(out["closed"], out)
        self.assertGreaterEqual(out["goaway_after_s"], 2.8, out)
        self.assertLess(out["goaway_after_s"], 4.5, out)
        self.assertGreaterEqual(after - before, 1)

    def test_5_misbehaving_upstream_is_treated_like_a_downstream(self):
        base = self.baseline()
        before = self.violations("ping_flood", side="upstream")
        evil = self.evil.spawn([sim.PYTHON, "-c", EVIL_SERVER, str(PORT), "5000"],
                               name="evil-server")
        evil.wait_for_line(r"^evil_server: listening", 15, stream="stdout")

        def call_evil():
            # A call that makes spindle open its upstream connection to the evil endpoint;
            # the call itself cannot succeed.
            return peers.run_client(self.attacker, peers.target(self.evil_svc.vip4, PORT),
                                    "unary", count=1, timeout=5, run_timeout=30)

        evil_res, res, growth, cpu, rss0 = self.under_victim_load(4, call_evil)
        line = evil.wait_for_line(r"^evil_server: \{", 15, stream="stdout").string
        seen = json.loads(line.split(": ", 1)[1])
        after = self.violations("ping_flood", side="upstream")
        measure(f"attack=upstream_ping_flood goaway={seen['goaway']} "
                f"pings_sent={seen['pings_sent']} rss_growth_kib={growth // 1024} cpu_s={cpu:.2f} "
                f"victim_p99_ms={p99(res.get('calls') or []):.1f} baseline_p99_ms={base:.1f}")
        self.assertEqual(seen["goaway"], ENHANCE_YOUR_CALM, f"{seen} {self.spindle.tail()}")
        self.assertTrue(seen["closed"], seen)
        self.assertGreaterEqual(after - before, 1)
        self.assertNotEqual(evil_res.get("calls_ok"), 1, evil_res)
        self.assertVictimUnharmed(res, "upstream_ping_flood")
        self.assertLess(growth, RSS_BOUND, f"upstream: RSS grew {growth} from {rss0}")

    def test_0_config_page_shows_the_limits(self):
        r = simprom.http_get(self.node, self.node.addr4, ADMIN_PORT, "/config")
        self.assertEqual(r.status, 200, r)
        limits = json.loads(r.text)["limits"]
        self.assertEqual(limits, {
            "max_connections": 20, "idle_timeout": "3s", "header_timeout": "2s",
            "send_timeout": "2s", "max_premature_resets": 100, "max_glitches": 100,
            "max_control_frames": 1000})
