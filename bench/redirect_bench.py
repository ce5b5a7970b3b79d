#!/usr/bin/python3
"""make bench (redirect path): what the redirect costs, measured on a simulated node.

  - connect(): the time one connect() to the Service VIP takes, direct (kube-proxy-like DNAT)
    and redirected into spindle; 1000 connects per round.
  - throughput of one TCP connection (iperf3, 5 s), direct and through spindle's passthrough.

Rounds alternate (direct, spindle, direct, spindle, ...) because the machine is noisy; the
figures are medians over all rounds, with the spread of the per-round medians.
"""

import json
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests"))
import sim  # noqa: E402
from sim import spindle as spindle_mod  # noqa: E402

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
RESULTS_DIR = os.path.join(BENCH_DIR, "results")
ROUNDS = int(os.environ.get("SPINDLE_BENCH_ROUNDS", "3"))
CONNECTS = 1000
IPERF_SECONDS = 5
PORT = 7000
IPERF_PORT = 5201


def connect_round(app, vip):
    p = app.run([sim.PYTHON, os.path.join(BENCH_DIR, "connect_timer.py"), vip, str(PORT),
                 str(CONNECTS)], timeout=120)
    return json.loads(p.stdout)["samples_us"]


def iperf_round(app, vip):
    p = app.run(["iperf3", "--client", vip, "--port", str(IPERF_PORT), "--time",
                 str(IPERF_SECONDS), "--json"], timeout=IPERF_SECONDS + 30)
    result = json.loads(p.stdout)
    return result["end"]["sum_received"]["bits_per_second"] / 1e9


def spread(values):
    return f"{min(values):.2f}–{max(values):.2f}"


def main():
    if os.geteuid() != 0:
        print("make bench needs root", file=sys.stderr)
        return 1
    with sim.Node() as node:
        app = node.add_pod("app")
        server = node.add_pod("server")
        svc = node.add_service("bench", ports=[PORT, IPERF_PORT], backends=[server])
        sim.start_backend(server, [PORT])
        iperf = server.spawn(["iperf3", "--server", "--port", str(IPERF_PORT)], name="iperf3")
        sim.wait_until(lambda: server.run(["ss", "-Hltn", f"sport = :{IPERF_PORT}"]).stdout.strip(),
                       10, what="iperf3 listening")
        cfg = spindle_mod.config(node, [svc], workers=1)
        cfg["services"][0]["intercept"] = [svc.addr4(PORT), svc.addr4(IPERF_PORT)]

        connects = {"direct": [], "spindle": []}
        round_medians = {"direct": [], "spindle": []}
        throughput = {"direct": [], "spindle": []}
        for r in range(ROUNDS):
            for mode in ("direct", "spindle"):
                daemon = None
                if mode == "spindle":
                    daemon = sim.Spindle(node, cfg, name=f"spindle-{r}").start()
                samples = connect_round(app, svc.vip4)
                connects[mode] += samples
                round_medians[mode].append(statistics.median(samples))
                throughput[mode].append(iperf_round(app, svc.vip4))
                if daemon is not None:
                    counters = (daemon.stop(), daemon.counters())[1]
                    if not counters or counters.get("redirected", 0) < CONNECTS:
                        print(f"spindle did not redirect the round's connects: {counters}",
                              file=sys.stderr)
                        return 1
                print(f"round {r + 1}/{ROUNDS} {mode:8s} connect median "
                      f"{round_medians[mode][-1]:.1f} µs, iperf3 {throughput[mode][-1]:.2f} Gbit/s",
                      flush=True)
        iperf.stop()

    direct_c = statistics.median(connects["direct"])
    spindle_c = statistics.median(connects["spindle"])
    direct_t = statistics.median(throughput["direct"])
    spindle_t = statistics.median(throughput["spindle"])
    table = [
        f"| redirect path ({ROUNDS} interleaved rounds) | direct | spindle | spindle − direct "
        f"or ratio |",
        "|---|---|---|---|",
        f"| connect() median, µs ({CONNECTS} per round) | {direct_c:.1f} | {spindle_c:.1f} | "
        f"{spindle_c - direct_c:+.1f} µs |",
        f"| per-round medians, µs | {spread(round_medians['direct'])} | "
        f"{spread(round_medians['spindle'])} | |",
        f"| one TCP connection, Gbit/s (iperf3 {IPERF_SECONDS} s) | {direct_t:.2f} | "
        f"{spindle_t:.2f} | {spindle_t / direct_t:.2f}× |",
        f"| per-round, Gbit/s | {spread(throughput['direct'])} | {spread(throughput['spindle'])} "
        f"| |",
    ]
    text = "\n".join(table) + "\n"
    print("\n" + text)
    os.makedirs(RESULTS_DIR, exist_ok=True)
    with open(os.path.join(RESULTS_DIR, "redirect.md"), "w") as f:
        f.write(f"# What the redirect costs\n\n`make bench`, bench/redirect_bench.py\n\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
