#!/usr/bin/env python3
"""check_stack.py - the rules and the dashboard against the running test stack.

  check_stack.py OUT_DIR        (stack.env exported, as scripts/test.sh does)

Run by scripts/test.sh after the integration tests, when every service has served
requests and consumed events:

  1. every metric name used by a rule expression (infra/observability/prometheus/
     rules.yml) or a dashboard panel (infra/observability/grafana/dashboards/*.json)
     is exposed by some service of the stack: scripts/metric-names.sh lists what they
     expose ("service name type" lines, kept in OUT_DIR/metric-names.txt) and
     metric_names.py compares. A renamed metric fails here.
  2. the stack's Prometheus (STACK_OBSERVE=on; stack.env's PROMETHEUS_URL) scrapes
     every service of services/services.tsv (up == 1 for each job, within 60 s),
     has loaded every rule of rules.yml, and has evaluated each without an error.
"""

import glob
import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)

import metric_names as mn  # noqa: E402

RULES = os.path.join(ROOT, "infra", "observability", "prometheus", "rules.yml")
DASHBOARDS = sorted(glob.glob(os.path.join(ROOT, "infra", "observability", "grafana",
                                           "dashboards", "*.json")))
WAIT_S = 60


def services():
    with open(os.path.join(ROOT, "services", "services.tsv"), encoding="utf-8") as f:
        rows = [line.split() for line in f if line.strip() and not line.startswith("#")]
    return [r[0] for r in rows]


def check_names(out_dir):
    script = os.path.join(ROOT, "scripts", "metric-names.sh")
    if not os.access(script, os.X_OK):
        return ["%s is missing: it lists the metrics the stack exposes" % script]
    names = os.path.join(out_dir, "metric-names.txt")
    with open(names, "w", encoding="utf-8") as f:
        r = subprocess.run([script], stdout=f, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    if r.returncode != 0:
        return ["scripts/metric-names.sh failed (%d): %s" % (r.returncode, r.stderr.strip())]
    exposed = mn.read_exposed(names)
    if not exposed:
        return ["scripts/metric-names.sh listed no metric"]
    problems = mn.check(exposed, [RULES] + DASHBOARDS)
    used, _ = mn.used_names([RULES] + DASHBOARDS)
    print("check_stack: %d metric names used by the rules and %d dashboard(s), %d exposed "
          "by the stack (%s)" % (len({n for n, _ in used}), len(DASHBOARDS), len(exposed), names))
    return problems


def api(url, path, **params):
    q = ("?" + urllib.parse.urlencode(params)) if params else ""
    with urllib.request.urlopen(url + path + q, timeout=5) as r:
        doc = json.load(r)
    if doc.get("status") != "success":
        raise RuntimeError("%s: %s" % (path, doc))
    return doc["data"]


def prometheus_state(url, wanted, nrules):
    """The problems now: jobs not up, rules missing, not evaluated or failing."""
    problems = []
    up = {}
    for s in api(url, "/api/v1/query", query="up")["result"]:
        job = s["metric"].get("job")
        up[job] = up.get(job, True) and s["value"][1] == "1"
    for job in wanted:
        if job not in up:
            problems.append("Prometheus has no target for %s" % job)
        elif not up[job]:
            problems.append("Prometheus cannot scrape %s (up == 0)" % job)
    rules = [r for g in api(url, "/api/v1/rules")["groups"] for r in g["rules"]]
    if len(rules) != nrules:
        problems.append("Prometheus loaded %d rules, rules.yml has %d" % (len(rules), nrules))
    for r in rules:
        if r.get("health") != "ok":
            problems.append("rule %s: health %s %s" % (r["name"], r.get("health"),
                                                       r.get("lastError", "")))
    return problems, sorted(up), len(rules)


def check_prometheus():
    url = os.environ.get("PROMETHEUS_URL")
    if not url:
        return ["no PROMETHEUS_URL in stack.env: the test stack runs without Prometheus "
                "(STACK_OBSERVE=on)"]
    exprs, records = mn.rules_exprs(RULES)
    nrules = len(exprs)
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            problems, jobs, loaded = prometheus_state(url, services(), nrules)
        except (OSError, RuntimeError, ValueError) as e:
            problems, jobs, loaded = ["Prometheus at %s: %s" % (url, e)], [], 0
        if not problems or time.monotonic() > deadline:
            break
        time.sleep(2)
    if not problems:
        print("check_stack: Prometheus at %s scrapes %s, %d rules loaded and evaluated "
              "(%d recording)" % (url, " ".join(jobs), loaded, len(records)))
    return problems


def main(argv):
    out_dir = argv[1] if len(argv) > 1 else "."
    os.makedirs(out_dir, exist_ok=True)
    problems = check_names(out_dir) + check_prometheus()
    for p in problems:
        print("check_stack: " + p, file=sys.stderr)
    print("check_stack: %s" % ("FAILED" if problems else "passed"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
