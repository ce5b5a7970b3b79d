"""Calls an endpoint never processed are sent to another one, and the app never notices.

One backend Pod is a real gRPC server; the other answers every connection with GOAWAY
(last-stream-id 0): each call sent there is refused unprocessed, and spindle must send it
to the gRPC backend. With round_robin every other call goes to the refusing endpoint first,
so half the calls exercise the retry.
"""

import json
import os
import sys

import sim
from support import SimTestCase

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "grpc"))
import peers  # noqa: E402  (tests/grpc)

PORT = 50051
CALLS = 200
GOAWAY_SERVER = os.path.join(os.path.dirname(peers.SERVER), "goaway_server.py")


class GoawayRetryTest(SimTestCase):
    needs_spindle = True

    @classmethod
    def build(cls, stack):
        cls.node = stack.enter_context(sim.Node())
        cls.client = cls.node.add_pod("client", n=2)
        cls.good = cls.node.add_pod("good", n=3)
        cls.refusing = cls.node.add_pod("refusing", n=4)
        cls.echo = cls.node.add_service("echo", ports=[PORT], backends=[cls.good])
        cls.server, cls.good_log = peers.start_server(cls.good)
        cls.refused_log = os.path.join(cls.node.logdir, "refused.jsonl")
        proc = cls.refusing.spawn([sim.PYTHON, GOAWAY_SERVER, "--port", str(PORT),
                                   "--log", cls.refused_log], name="goaway-server")
        proc.wait_for_line(r"^goaway_server: listening", 15, stream="stdout")
        cfg = sim.spindle.config(cls.node, [cls.echo])
        cfg["services"][0]["endpoints"] = {
            "static": [f"{cls.good.ip4}:{PORT}", f"{cls.refusing.ip4}:{PORT}"]}
        cfg["services"][0]["balance"] = "round_robin"
        cls.spindle = stack.enter_context(sim.Spindle(cls.node, cfg))
        cls.spindle.start()

    def refused(self):
        return sim.jsonl.read_complete(self.refused_log)

    def test_calls_refused_by_goaway_succeed_on_another_endpoint(self):
        res = peers.run_client(self.client, peers.target(self.echo.vip4, PORT), "unary",
                               count=CALLS)
        self.assertEqual(res.get("errors"), {}, json.dumps(res)[:2000])
        self.assertEqual(res.get("calls_ok"), CALLS, json.dumps(res)[:2000])
        self.assertEqual(res.get("pods"), {"good": CALLS})
        # The refusing endpoint did see calls: they were retried, not merely never sent.
        self.assertGreater(len(self.refused()), 0, self.spindle.tail())
        self.assertTrue(self.spindle.proc.alive(), self.spindle.tail())
