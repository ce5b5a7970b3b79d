#!/usr/bin/python3
"""Writes k8s/components/alerts/prometheusrule.yaml from spindle-rules.yaml beside it.

The rules are written once, as a plain Prometheus rules file (spindle-rules.yaml); the
PrometheusRule of the alerts component is that file's text under `spec:`, which the Operator
takes as is (a PrometheusRule's spec is a rules file's groups). Run this after editing the
rules; `--check` exits 1 when prometheusrule.yaml is not what this would write (make test
runs it, in tests/monitoring).

    tools/gen-prometheusrule.py [--check]
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALERTS = os.path.join(ROOT, "k8s", "components", "alerts")
RULES = os.path.join(ALERTS, "spindle-rules.yaml")
OUTPUT = os.path.join(ALERTS, "prometheusrule.yaml")

HEADER = """\
# Written by tools/gen-prometheusrule.py from spindle-rules.yaml: edit that file, then run
# the tool (make test fails while the two differ). spindle's alerts for the Prometheus
# Operator; what each means: docs/deploy-kubernetes.md, "Alerts". The namespace and the
# part-of label are written out, as the base's are: they hold when an overlay of k8s/ adds
# this component without a namespace of its own.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: spindle
  namespace: spindle-system
  labels:
    app.kubernetes.io/name: spindle
    app.kubernetes.io/part-of: spindle
spec:
"""


def render():
    with open(RULES) as f:
        lines = f.read().splitlines()
    # The file's own header comment is about the file; the rest, from `groups:`, is the spec.
    start = lines.index("groups:")
    body = ["  " + line if line else "" for line in lines[start:]]
    return HEADER + "\n".join(body) + "\n"


def main(argv):
    text = render()
    if "--check" in argv:
        try:
            with open(OUTPUT) as f:
                current = f.read()
        except FileNotFoundError:
            current = None
        if current != text:
            print(f"{os.path.relpath(OUTPUT, ROOT)} is not made from spindle-rules.yaml: "
                  "run tools/gen-prometheusrule.py")
            return 1
        print(f"{os.path.relpath(OUTPUT, ROOT)} is made from spindle-rules.yaml")
        return 0
    with open(OUTPUT, "w") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
