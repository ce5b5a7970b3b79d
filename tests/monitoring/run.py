#!/usr/bin/python3
"""spindle's alerts and Grafana dashboard, checked offline with promtool:

- the rules file (k8s/components/alerts/spindle-rules.yaml) passes `promtool check rules`, and
  the PrometheusRule of the alerts component is made from it (tools/gen-prometheusrule.py);
- each alert has its own `promtool test rules` file (rules/ALERT.test.yaml) in which it fires,
  and does not fire for the healthy series beside it and before the fault;
- the dashboard (k8s/components/dashboard/grafana-dashboard.json) is valid JSON, every
  panel's query parses (promtool check rules over a rules file with one recording rule per
  query, Grafana's variables filled in), and it plots every spindle metric an alert watches;
- every metric the rules and the dashboard name is one spindle exports (named in daemon/), or
  one of the few from elsewhere listed below.

    /usr/bin/python3 tests/monitoring/run.py

Prints PASS/FAIL/SKIP per test and ends with `monitoring: N passed, N failed, N skipped`;
exit code 1 if any failed. Needs promtool (Debian's prometheus) and tests/k8s/node_modules
(its YAML parser), both from make deps; no root, no build.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
RULES = os.path.join(ROOT, "k8s", "components", "alerts", "spindle-rules.yaml")
PROMETHEUSRULE = os.path.join(ROOT, "k8s", "components", "alerts", "prometheusrule.yaml")
DASHBOARD = os.path.join(ROOT, "k8s", "components", "dashboard", "grafana-dashboard.json")
RULE_TESTS = os.path.join(HERE, "rules")
TO_JSON = os.path.join(ROOT, "tests", "k8s", "to-json.mjs")
PROMTOOL = "promtool"

# Metrics the rules read that spindle does not export, and who does.
FOREIGN_METRICS = {
    "up": "Prometheus, per scrape target",
    "kube_pod_status_ready": "kube-state-metrics",
    "kube_pod_info": "kube-state-metrics",
}

PROMQL_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "offset", "bool", "inf", "nan",
}


def yaml_documents(path):
    """The YAML documents of a file, as Python objects (tests/k8s/to-json.mjs)."""
    p = subprocess.run(["node", TO_JSON, path], capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise AssertionError(f"to-json.mjs {path} failed (make deps?): {p.stderr.strip()}")
    return json.loads(p.stdout)


def promtool(*args):
    p = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60)
    return p.returncode, (p.stdout + p.stderr).strip()


def metric_names(expr):
    """The metric names a PromQL expression selects: identifiers that are not functions,
    keywords, label names (inside {} or after by/on/...) or durations."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    names = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", text):
        name, call = m.group(1), m.group(2)
        if call or name.lower() in PROMQL_KEYWORDS:
            continue
        names.add(re.sub(r"_(bucket|sum|count)$", "", name)
                  if name.startswith("spindle_request_duration_seconds") else name)
    return names


def exported_metrics():
    """Every quoted "spindle_..." or "process_..." name in the daemon's sources."""
    names = set()
    for d, _, files in os.walk(os.path.join(ROOT, "daemon")):
        for name in files:
            if name.endswith((".cc", ".h")):
                with open(os.path.join(d, name)) as f:
                    names |= set(re.findall(r'"((?:spindle|process)_[a-z0-9_]+)"', f.read()))
    return names


def rules():
    (doc,) = yaml_documents(RULES)
    return [r for g in doc["groups"] for r in g["rules"]]


def dashboard_queries(dash):
    """(panel title, refId, expr) of every panel's queries."""
    return [(p["title"], t["refId"], t["expr"])
            for p in dash["panels"] for t in p.get("targets", [])]


def grafana_to_promql(expr):
    """A dashboard query with Grafana's variables given values, as Prometheus would get it."""
    expr = expr.replace("$__rate_interval", "5m")
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def check_queries(queries):
    """promtool check rules over one recording rule per query: (exit code, output)."""
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for i, expr in enumerate(queries):
        lines += [f"      - record: dashboard:query_{i}", f"        expr: {json.dumps(expr)}"]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="spindle-dashboard-") as f:
        f.write("\n".join(lines) + "\n")
        f.flush()
        return promtool("check", "rules", f.name)


class RulesTest(unittest.TestCase):
    maxDiff = None

    def test_rules_file_passes_promtool_check(self):
        rc, out = promtool("check", "rules", RULES)
        self.assertEqual(rc, 0, out)
        self.assertIn(f"SUCCESS: {len(rules())} rules found", out)

    def test_prometheusrule_is_made_from_the_rules_file(self):
        p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gen-prometheusrule.py"),
                            "--check"], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        # And the Operator reads the same rules out of it.
        (rule,) = yaml_documents(PROMETHEUSRULE)
        (plain,) = yaml_documents(RULES)
        self.assertEqual(rule["kind"], "PrometheusRule")
        self.assertEqual(rule["spec"], plain)

    def test_every_alert_has_a_test_in_which_it_fires_and_does_not(self):
        alerts = [r["alert"] for r in rules() if "alert" in r]
        self.assertEqual(len(alerts), len(set(alerts)), "an alert name is used twice")
        files = sorted(f[: -len(".test.yaml")] for f in os.listdir(RULE_TESTS)
                       if f.endswith(".test.yaml"))
        self.assertEqual(files, sorted(alerts), "one rules/ALERT.test.yaml per alert")
        for alert in alerts:
            with self.subTest(alert=alert):
                (doc,) = yaml_documents(os.path.join(RULE_TESTS, f"{alert}.test.yaml"))
                cases = [c for t in doc["tests"] for c in t["alert_rule_test"]]
                self.assertEqual({c["alertname"] for c in cases}, {alert})
                self.assertTrue([c for c in cases if c.get("exp_alerts")], "never fires")
                self.assertTrue([c for c in cases if not c.get("exp_alerts")],
                                "never shows the healthy case not firing")
                # The healthy case is also in the data when it fires: some series it reads
                # stay out of every firing alert.
                fired = [a["exp_labels"] for c in cases for a in c.get("exp_alerts") or []]
                series = [s["series"] for t in doc["tests"] for s in t["input_series"]]
                self.assertTrue([s for s in series
                                 if not any(all(f'{k}="{v}"' in s for k, v in labels.items()
                                                if k != "severity") for labels in fired)],
                                "every series it reads is part of a firing alert")

    def test_rules_read_only_metrics_spindle_exports_or_listed_ones(self):
        exported = exported_metrics()
        for rule in rules():
            for name in sorted(metric_names(rule["expr"])):
                with self.subTest(rule=rule.get("alert") or rule.get("record"), metric=name):
                    self.assertTrue(name in exported or name in FOREIGN_METRICS,
                                    f"{name} is not a metric spindle exports")

    def test_metric_names_finds_the_names_in_an_expression(self):
        # The check above is only as good as this.
        self.assertEqual(
            metric_names('sum by (le, service) (rate(spindle_request_duration_seconds_bucket'
                         '{node=~".*", reason!="a b"}[5m])) > on (instance) group_left (node) '
                         'up offset 30m or max without (state) (x_total) * 1e3'),
            {"spindle_request_duration_seconds", "up", "x_total"})


def make_alert_test(alert):
    def test(self):
        rc, out = promtool("test", "rules", os.path.join(RULE_TESTS, f"{alert}.test.yaml"))
        self.assertEqual(rc, 0, out)
        self.assertIn("SUCCESS", out)
    test.__doc__ = f"promtool test rules: {alert}"
    return test


# One test per alert, named for it: tests/monitoring/rules/ALERT.test.yaml.
for _name in sorted(os.listdir(RULE_TESTS)):
    if _name.endswith(".test.yaml"):
        _alert = _name[: -len(".test.yaml")]
        setattr(RulesTest, f"test_alert_{_alert}", make_alert_test(_alert))


class DashboardTest(unittest.TestCase):
    maxDiff = None

    @classmethod
    def setUpClass(cls):
        with open(DASHBOARD) as f:
            cls.dash = json.load(f)  # the JSON test: a parse error fails every test here

    def test_panels_have_unique_ids_and_queries(self):
        ids = [p["id"] for p in self.dash["panels"]]
        self.assertEqual(len(ids), len(set(ids)))
        for p in self.dash["panels"]:
            if p["type"] == "row":
                continue
            with self.subTest(panel=p["title"]):
                refs = [t["refId"] for t in p["targets"]]
                self.assertTrue(refs)
                self.assertEqual(len(refs), len(set(refs)))
                self.assertTrue(all(t["expr"].strip() for t in p["targets"]))

    def test_every_query_parses(self):
        queries = dashboard_queries(self.dash)
        rc, out = check_queries([grafana_to_promql(e) for _, _, e in queries])
        self.assertEqual(rc, 0, out)
        self.assertIn(f"SUCCESS: {len(queries)} rules found", out)

    def test_the_query_check_rejects_a_query_that_does_not_parse(self):
        rc, out = check_queries(['sum by (service) (rate(spindle_requests_total[5m])'])
        self.assertNotEqual(rc, 0, out)
        rc, out = check_queries([grafana_to_promql('rate(spindle_requests_total[$node])')])
        self.assertNotEqual(rc, 0, out)

    def test_queries_name_only_metrics_spindle_exports(self):
        exported = exported_metrics()
        variables = [v["query"]["query"] for v in self.dash["templating"]["list"]
                     if isinstance(v.get("query"), dict)]
        exprs = [e for _, _, e in dashboard_queries(self.dash)]
        exprs += [re.fullmatch(r"label_values\((\w+), *\w+\)", q).group(1) for q in variables]
        for expr in exprs:
            for name in sorted(metric_names(grafana_to_promql(expr))):
                with self.subTest(metric=name):
                    self.assertTrue(name in exported, f"{name} is not a metric spindle exports")

    def test_it_plots_every_spindle_metric_an_alert_watches(self):
        plotted = set()
        for _, _, expr in dashboard_queries(self.dash):
            plotted |= metric_names(grafana_to_promql(expr))
        watched = set()
        for rule in rules():
            watched |= metric_names(rule["expr"]) - set(FOREIGN_METRICS)
        self.assertEqual(sorted(watched - plotted), [])
        # And what the issue asked it to show: connections both ways, pools, process CPU
        # and memory, DNS freshness, violations, limit closes, fail-open counters.
        for name in ("spindle_downstream_connections_active", "spindle_upstream_connections_active",
                     "spindle_active_streams", "process_cpu_seconds_total",
                     "process_resident_memory_bytes", "spindle_dns_staleness_seconds",
                     "spindle_h2_violations_total", "spindle_limit_closes_total",
                     "spindle_redirects_total"):
            self.assertIn(name, plotted)


class Result(unittest.TextTestResult):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.passed = 0

    def addSuccess(self, test):
        super().addSuccess(test)
        self.passed += 1


def main():
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules[__name__])
    runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=2, resultclass=Result)
    result = runner.run(suite)
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    print(f"monitoring: {result.passed} passed, {failed} failed, {len(result.skipped)} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
