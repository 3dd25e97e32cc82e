#!/usr/bin/env python3
"""test_metric_names.py - ctest unit.observability_metric_names: the metric-name
extractor of metric_names.py, and its check, without a stack.

  - names_in_expr on PromQL that holds functions, aggregations with by/without before
    and after their argument, label matchers and lists, vector matching, ranges and
    subqueries, offsets, numbers, strings, __name__ matchers and Grafana variables;
  - the repository's rules and dashboard: every name they use is a metric (no label,
    function or keyword slipped through), the ones the alerts need are there;
  - the check: passes when every name is exposed, fails naming the file and the rule
    when a rule uses a renamed metric, takes _bucket/_sum/_count only off a histogram;
  - the alerts' conventions: a severity label of critical|warning|info, a summary and a
    description, and a runbook link whose anchor is a heading of docs/observability.md.
"""

import json
import os
import re
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)

import metric_names as mn  # noqa: E402

RULES = os.path.join(ROOT, "infra", "observability", "prometheus", "rules.yml")
DASHBOARD = os.path.join(ROOT, "infra", "observability", "grafana", "dashboards",
                         "delivery-eta.json")
DOC = os.path.join(ROOT, "docs", "observability.md")


class Extract(unittest.TestCase):
    CASES = [
        ("up == 0", ["up"]),
        ('up{job=~"a|b"} == 0', ["up"]),
        ("sum by (job) (rate(http_requests_total[5m]))", ["http_requests_total"]),
        ("sum(rate(http_requests_total[5m])) by (job, le)", ["http_requests_total"]),
        ("sum without (instance) (x_total)", ["x_total"]),
        ('histogram_quantile(0.99, sum by (le, stage) '
         '(rate(query_saga_stage_duration_seconds_bucket{stage="assigned"}[10m])))',
         ["query_saga_stage_duration_seconds_bucket"]),
        ("a_total / on (job) group_left (team, owner) b_info", ["a_total", "b_info"]),
        ("a > bool 0 and ignoring (partition) b unless c or d",
         ["a", "b", "c", "d"]),
        ("max_over_time(deriv(x[5m])[30m:1m]) offset 1h", ["x"]),
        ('label_replace(up, "svc", "$1", "job", "(.*)")', ["up"]),
        ('{__name__="renamed_total", job="x"}', ["renamed_total"]),
        ('count_values("version", build_info)', ["build_info"]),
        ("topk(5, y) + Inf - NaN * 1e3 + 0x1f", ["y"]),
        ("job:http_requests:rate5m / job:http_requests:rate5m", ["job:http_requests:rate5m"]),
        ("rate(z_total{job=~\"$service\"}[$__rate_interval])", ["z_total"]),
        ("rate(z_total{job=~\"${service}\"}[${__range}])", ["z_total"]),
        ("time() - max by (g) (ts_seconds)", ["ts_seconds"]),
        ("absent(up{job=\"query-api\"}) or absent(up{job=\"order-service\"})", ["up"]),
        ("sum by (group, topic) (max by (group, topic, partition) (lag >= 0))", ["lag"]),
        ('label_values(up{job=~"a|b"}, job)', ["up"]),
        ("label_values(job)", []),
        ("query_result(topk(3, q_total))", ["q_total"]),
        ("count(a) by (on)", ["a"]),
    ]

    def test_cases(self):
        for expr, want in self.CASES:
            with self.subTest(expr=expr):
                self.assertEqual(mn.names_in_expr(expr), want)

    def test_unreadable(self):
        with self.assertRaises(mn.PromQLError):
            mn.names_in_expr("sum(rate(x[5m])")
        with self.assertRaises(mn.PromQLError):
            mn.names_in_expr("x ; y")


class RepositoryFiles(unittest.TestCase):
    def test_names_are_metrics(self):
        used, problems = mn.used_names([RULES, DASHBOARD])
        self.assertEqual(problems, [])
        names = {n for n, _ in used}
        not_metrics = {"rate", "sum", "max", "job", "le", "by", "group", "topic", "stage",
                       "partition", "instance", "route", "status", "histogram_quantile",
                       "increase", "time", "absent", "on", "and", "outcome", "reason"}
        self.assertEqual(names & not_metrics, set())
        for n in names:
            self.assertRegex(n, r"^[A-Za-z_][A-Za-z0-9_]*$", "a recording rule's name kept")
        for needed in ("up", "deta_consumer_lag_messages",
                       "deta_consumer_last_message_timestamp_seconds",
                       "deta_outbox_oldest_pending_age_seconds", "deta_outbox_parked",
                       "deta_consumer_messages_total", "query_saga_stage_duration_seconds_bucket",
                       "payment_redis_degraded", "http_requests_total",
                       "http_request_duration_seconds_bucket", "deta_trace_spans_dropped_total"):
            self.assertIn(needed, names)

    def test_dashboard_shape(self):
        with open(DASHBOARD, encoding="utf-8") as f:
            d = json.load(f)
        self.assertEqual(d["uid"], "delivery-eta")
        ids = [p["id"] for p in mn._panels(d["panels"])]
        self.assertEqual(len(ids), len(set(ids)), "panel ids repeat")
        for p in mn._panels(d["panels"]):
            if p["type"] != "row":
                self.assertTrue(p.get("targets"), p["title"])
                self.assertEqual(p["datasource"]["uid"], "${datasource}", p["title"])


class Check(unittest.TestCase):
    def exposed(self, drop=()):
        used, _ = mn.used_names([RULES, DASHBOARD])
        out = {}
        for n, _ in used:
            for suffix in mn.HISTOGRAM_SUFFIXES:
                if n.endswith(suffix):
                    out[n[:-len(suffix)]] = "histogram"
                    break
            else:
                out[n] = "counter" if n.endswith("_total") else "gauge"
        for n in drop:
            out.pop(n, None)
        return out

    def test_all_exposed(self):
        self.assertEqual(mn.check(self.exposed(), [RULES, DASHBOARD]), [])

    def test_missing_metric_is_named(self):
        problems = mn.check(self.exposed(drop=["payment_redis_degraded"]), [RULES, DASHBOARD])
        self.assertTrue(problems)
        self.assertTrue(any("alert DetaPaymentRedisLost: payment_redis_degraded" in p
                            for p in problems), problems)
        self.assertTrue(any("panel 'payment-service without Redis'" in p for p in problems),
                        problems)

    def test_renamed_metric_in_a_rule_fails(self):
        with open(RULES, encoding="utf-8") as f:
            text = f.read()
        self.assertIn("deta_outbox_parked)", text)
        bad = text.replace("deta_outbox_parked)", "deta_outbox_parked_rows)")
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "rules.yml")
            with open(path, "w", encoding="utf-8") as f:
                f.write(bad)
            problems = mn.check(self.exposed(), [path])
            self.assertEqual(len(problems), 1, problems)
            self.assertIn("alert DetaOutboxParked: deta_outbox_parked_rows is not exposed",
                          problems[0])
            # The command line too: exit 1, through the "service name type" file.
            names = os.path.join(d, "names.txt")
            with open(names, "w", encoding="utf-8") as f:
                for n, t in self.exposed().items():
                    f.write("svc %s %s\n" % (n, t))
            self.assertEqual(mn.main(["x", "check", names, RULES, DASHBOARD]), 0)
            self.assertEqual(mn.main(["x", "check", names, path]), 1)

    def test_histogram_suffixes_only_off_histograms(self):
        exposed = {"h_seconds": "histogram", "g": "gauge", "s_seconds": "summary"}
        self.assertTrue(mn.is_exposed("h_seconds_bucket", exposed))
        self.assertTrue(mn.is_exposed("h_seconds_count", exposed))
        self.assertTrue(mn.is_exposed("s_seconds_sum", exposed))
        self.assertFalse(mn.is_exposed("s_seconds_bucket", exposed))
        self.assertFalse(mn.is_exposed("g_count", exposed))
        self.assertFalse(mn.is_exposed("h_seconds_total", exposed))
        self.assertTrue(mn.is_exposed("up", {}))


class AlertConventions(unittest.TestCase):
    def test_every_alert(self):
        import yaml
        with open(RULES, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
        with open(DOC, encoding="utf-8") as f:
            headings = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
                        for h in re.findall(r"^#+ (.*)$", f.read(), re.M)}
        alerts = [r for g in doc["groups"] for r in g["rules"] if "alert" in r]
        self.assertGreaterEqual(len(alerts), 7)
        for r in alerts:
            with self.subTest(alert=r["alert"]):
                self.assertIn(r.get("labels", {}).get("severity"), ("critical", "warning", "info"))
                ann = r.get("annotations", {})
                self.assertTrue(ann.get("summary"))
                m = re.search(r"Runbook: docs/observability\.md#([a-z0-9-]+)",
                              ann.get("description", ""))
                self.assertTrue(m, "no runbook link")
                self.assertIn(m.group(1), headings, "no such heading in docs/observability.md")


if __name__ == "__main__":
    unittest.main(verbosity=1)
