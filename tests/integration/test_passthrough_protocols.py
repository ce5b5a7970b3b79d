"""What is not HTTP/2 keeps flowing through spindle at L4. spindle looks at the first bytes of
a redirected connection: only the HTTP/2 client preface is terminated; HTTP/1.1, TLS
(gRPC over TLS too) and anything else is forwarded byte for byte to the original destination,
the VIP, which the node's DNAT sends to the Pod.

Real peers on both ends: curl and `python3 -m http.server`, Python's ssl and
`openssl s_server`, grpcio over TLS. Each test runs its own spindle and checks, when it
stops, that the connections were indeed redirected; the servers also show that the request
reached them from the client Pod's own address: spindle's default upstream.source pod makes
the passthrough connection in the Pod's network namespace, as if the Pod had dialled."""

import hashlib
import json
import os
import shutil
import ssl
import subprocess
import sys

import sim
from support import SimTestCase, grpcio_missing, norm_ip

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "grpc"))
import peers  # noqa: E402  (tests/grpc)

WEB4, WEB6, WEB_PORT = "198.19.0.20", "2001:2:0:ff::20", 8080
TLS4, TLS6, TLS_PORT = "198.19.0.21", "2001:2:0:ff::21", 8443
GRPCS4, GRPCS6, GRPCS_PORT = "198.19.0.22", "2001:2:0:ff::22", 50443
TLS_NAME = "tls.test"
CURL = "curl"
OPENSSL = "openssl"


def url(host, port, path):
    return f"http://[{host}]:{port}{path}" if ":" in host else f"http://{host}:{port}{path}"


class PassthroughProtocolsTest(SimTestCase):
    """Client Pod 198.18.1.2; `web` Pod (198.18.1.3) with http.server on 8080; `tls` Pod
    (198.18.1.4) with openssl s_server on 8443 and a TLS gRPC server on 50443. A Service for
    each, all three declared to spindle."""

    needs_spindle = True

    @classmethod
    def build(cls, stack):
        missing = [tool for tool in (CURL, OPENSSL) if shutil.which(tool) is None]
        if missing:
            cls._skip_reason = f"{' and '.join(missing)} not installed (make deps)"
            return
        node = cls.node = stack.enter_context(sim.Node())
        cls.client = node.add_pod("client", n=2)
        cls.web = node.add_pod("web", n=3)
        cls.tls = node.add_pod("tls", n=4)
        cls.services = [
            node.add_service("web", vip4=WEB4, vip6=WEB6, ports=[WEB_PORT], backends=[cls.web]),
            node.add_service("tls", vip4=TLS4, vip6=TLS6, ports=[TLS_PORT], backends=[cls.tls]),
            node.add_service("grpcs", vip4=GRPCS4, vip6=GRPCS6, ports=[GRPCS_PORT],
                             backends=[cls.tls]),
        ]

        # HTTP/1.1: a document worth comparing, served by Python's http.server
        cls.docroot = os.path.join(node.logdir, "www")
        os.makedirs(cls.docroot)
        cls.document = "".join(f"line {i}: through spindle, byte for byte\n" for i in range(2000))
        with open(os.path.join(cls.docroot, "hello.txt"), "w") as f:
            f.write(cls.document)
        cls.http = cls.web.spawn([sim.PYTHON, "-u", "-m", "http.server", str(WEB_PORT),
                                  "--bind", "::", "--directory", cls.docroot], name="http-server")
        cls.http.wait_for_line(r"^Serving HTTP", 10, stream="stdout")

        # TLS: a throwaway self-signed certificate, in the run's folder (removed at exit)
        tlsdir = os.path.join(node.logdir, "tls")
        os.makedirs(tlsdir)
        cls.cert, cls.key = os.path.join(tlsdir, "cert.pem"), os.path.join(tlsdir, "key.pem")
        subprocess.run([OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", cls.key,
                        "-out", cls.cert, "-days", "1", "-subj", f"/CN={TLS_NAME}",
                        "-addext", f"subjectAltName=DNS:{TLS_NAME}"],
                       check=True, capture_output=True, timeout=30)
        with open(cls.cert) as f:
            cls.cert_sha256 = hashlib.sha256(ssl.PEM_cert_to_DER_cert(f.read())).hexdigest()
        # -rev: every line comes back reversed; -alpn h2: it agrees to "h2" over TLS, which
        # must not make anything in between treat the bytes as cleartext HTTP/2.
        cls.s_server = cls.tls.spawn([OPENSSL, "s_server", "-accept", str(TLS_PORT),
                                      "-cert", cls.cert, "-key", cls.key, "-rev",
                                      "-alpn", "h2"], name="s_server")
        cls.s_server.wait_for_line(r"^ACCEPT", 10, stream="stdout")

        cls.grpcs_log = None
        if not grpcio_missing():
            _, cls.grpcs_log = peers.start_server(cls.tls, name="tls", port=GRPCS_PORT,
                                                  tls=(cls.cert, cls.key))

    # --- helpers ---------------------------------------------------------------------------

    def start_spindle(self):
        cfg = sim.spindle.config(self.node, self.services)
        sp = sim.Spindle(self.node, cfg)
        self.addCleanup(sp.close)
        sp.start()
        return sp

    def assertRedirected(self, sp, dials):
        """Stops spindle; its counters must show at least `dials` redirected connects."""
        self.assertEqual(sp.stop(5), 0, sp.tail())
        counters = sp.counters()
        self.assertIsNotNone(counters, sp.tail())
        self.assertGreaterEqual(counters.get("redirected", 0), dials,
                                f"the connections were not redirected to spindle: {counters}")

    def curl(self, *args):
        """curl in the client Pod; returns (body, status, http_version)."""
        p = self.client.run([CURL, "-sS", "--max-time", "5", "-w", "\n%{http_code} %{http_version}",
                             *args], timeout=20, check=False)
        self.assertEqual(p.returncode, 0, f"curl {' '.join(args)} failed: {p.stderr}")
        body, _, tail = p.stdout.rpartition("\n")
        status, version = tail.split()
        return body, int(status), version

    def access_log_line(self, needle):
        """The http.server access-log line (stderr) that contains needle."""
        return sim.wait_until(lambda: next((line for line in self.http.stderr_lines()
                                            if needle in line), None),
                              3, what=f"an access-log line with {needle!r}",
                              details=lambda: self.http.tail(10))

    def assertFromClientPod(self, line):
        client = norm_ip(line.split(" ", 1)[0])
        self.assertIn(client, (self.client.ip4, self.client.ip6),
                      f"the web server saw {client}, not the client Pod's address: {line}")

    # --- HTTP/1.1 ------------------------------------------------------------------------------

    def test_http11_get_passes_through(self):
        sp = self.start_spindle()
        for host in (WEB4, WEB6):
            with self.subTest(host=host):
                path = f"/hello.txt?via={host}"
                body, status, version = self.curl("--http1.1", url(host, WEB_PORT, path))
                self.assertEqual(status, 200)
                self.assertEqual(body, self.document, "the document differs")
                self.assertFromClientPod(self.access_log_line(f'"GET {path} HTTP/1.1" 200'))
        self.assertRedirected(sp, 2)

    def test_http11_methods_that_start_like_the_preface_pass_through(self):
        # The HTTP/2 preface starts "PRI * HTTP/2.0": "PUT" shares one byte with it, "PRI /"
        # four. The sniffer must look far enough, and pass on what it has already read.
        sp = self.start_spindle()
        for method in ("PUT", "PRI", "POST"):
            with self.subTest(method=method):
                path = f"/{method.lower()}-probe"
                body, status, _ = self.curl("--http1.1", "-X", method, "--data", "x=1",
                                            url(WEB4, WEB_PORT, path))
                # http.server has no handler for these: its own 501 proves the request
                # line reached it intact
                self.assertEqual(status, 501, body)
                self.assertIn(f"Unsupported method ('{method}')", body)
                self.assertFromClientPod(self.access_log_line(f'"{method} {path} HTTP/1.1" 501'))
        self.assertRedirected(sp, 3)

    def test_http11_upgrade_to_h2c_request_passes_through(self):
        # curl --http2 on http:// sends an HTTP/1.1 request with "Upgrade: h2c": not the
        # preface, so it passes through; http.server ignores the upgrade and answers 1.0.
        sp = self.start_spindle()
        path = "/hello.txt?upgrade=h2c"
        body, status, version = self.curl("--http2", url(WEB4, WEB_PORT, path))
        self.assertEqual((status, version), (200, "1"), "expected the server's HTTP/1.0 200")
        self.assertEqual(body, self.document)
        self.assertFromClientPod(self.access_log_line(f'"GET {path} HTTP/1.1" 200'))
        self.assertRedirected(sp, 1)

    def test_request_dribbled_in_one_byte_segments_passes_through(self):
        # "PRI * HTTP/1.1": the same first 11 bytes as the preface, each in its own segment,
        # 20 ms apart. The sniffer must keep reading, then replay all 11 upstream.
        sp = self.start_spindle()
        text = "PRI * HTTP/1.1\\r\\nHost: web\\r\\nConnection: close\\r\\n\\r\\n"
        p = self.client.run([sim.PYTHON, peers.PROBE, "dribble", WEB6, str(WEB_PORT),
                             "--text", text, "--first", "16", "--gap-ms", "20"],
                            timeout=30, check=False)
        res = json.loads(p.stdout.strip().splitlines()[-1])
        self.assertTrue(res["ok"], res)
        self.assertRegex(res["status_line"], r"^HTTP/1\.\d 501 ", res)
        self.assertIn("Unsupported method ('PRI')", res["body"])
        self.assertFromClientPod(self.access_log_line('"PRI * HTTP/1.1" 501'))
        self.assertRedirected(sp, 1)

    # --- TLS ----------------------------------------------------------------------------------

    def test_tls_handshake_completes_and_carries_data(self):
        sp = self.start_spindle()
        for host in (TLS4, TLS6):
            with self.subTest(host=host):
                line = f"hello spindle over tls via {host}"
                p = self.client.run([sim.PYTHON, peers.PROBE, "tls", host, str(TLS_PORT),
                                     "--ca", self.cert, "--name", TLS_NAME,
                                     "--alpn", "h2,http/1.1", "--send", line],
                                    timeout=30, check=False)
                res = json.loads(p.stdout.strip().splitlines()[-1])
                self.assertTrue(res["ok"], f"{res}\n{self.s_server.tail(10)}")
                self.assertEqual(res["cert_sha256"], self.cert_sha256,
                                 "the TLS server is not ours: something terminated TLS")
                self.assertEqual(res["alpn"], "h2", res)
                self.assertEqual(res["reply"], line[::-1] + "\n", res)
        self.assertRedirected(sp, 2)

    def test_grpc_over_tls_passes_through(self):
        if self.grpcs_log is None:
            self.skipTest("python3-grpcio is not installed (make deps)")
        sp = self.start_spindle()
        for host in (GRPCS4, GRPCS6):
            with self.subTest(host=host):
                res = peers.run_client(self.client, peers.target(host, GRPCS_PORT), "unary",
                                       count=20, concurrency=2, tls_ca=self.cert,
                                       authority=TLS_NAME, timeout=10)
                self.assertTrue(res["ok"], res)
                self.assertEqual(res["pods"], {"tls": 20}, res)
                seen = {norm_ip(peers.peer_ip(e["peer"])) for e in self.grpcs_log.starts(run=res["run"])}
                self.assertEqual(len(self.grpcs_log.starts(run=res["run"])), 20)
                self.assertLessEqual(seen, {self.client.ip4, self.client.ip6},
                                     f"the TLS gRPC server saw {seen}, not the client Pod")
        self.assertRedirected(sp, 2)
