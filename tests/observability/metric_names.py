#!/usr/bin/env python3
"""metric_names.py - the metric names that Prometheus rules and Grafana dashboards use,
checked against the names a running stack exposes.

  metric_names.py used FILE...                 the names used, one "name<TAB>where" a line
  metric_names.py check EXPOSED FILE...        exit 1 when a used name is not exposed

FILE: a Prometheus rules file (.yml/.yaml: every rule's expr) or a Grafana dashboard
(.json: every panel's target expr, rows' panels included, and the query variables).
EXPOSED: lines "service name type" (scripts/metric-names.sh, run against the test
stack), type one of counter, gauge, histogram, summary, untyped.

A used name is found when
  - it is exposed as it is, or
  - it ends in _bucket, _sum or _count and its base is an exposed histogram (or, for
    _sum and _count, a summary): http_request_duration_seconds_bucket is fine when
    http_request_duration_seconds is a histogram, and only then;
  - it is one of Prometheus's own series (up, ALERTS, scrape_*), or the name of a
    recording rule of the files given (whose own expressions are checked instead).

PromQL is read loosely but correctly enough for this: a metric name is an identifier
that is not a function or aggregation (followed by "(" or by "by"/"without"), not a
keyword (by, without, on, ignoring, group_left, group_right, bool, offset, and, or,
unless), not a label (inside {...}, or in the parentheses after by/without/on/
ignoring/group_left/group_right), not in a range or subquery's brackets, not a number
(inf, nan), and not a Grafana variable ($service, ${x}, $__rate_interval). A matcher
{__name__="x"} names x. Grafana's label_values(selector, label) reads the selector.
"""

import json
import re
import sys

try:
    import yaml
except ImportError:  # pragma: no cover - scripts/deps.sh installs python3-yaml
    yaml = None

KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
            "offset", "and", "or", "unless", "atan2"}
LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count",
                "count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio"}
NUMBERS = {"inf", "nan"}
# Series that Prometheus makes itself, not a service.
SYNTHETIC = {"up", "ALERTS", "ALERTS_FOR_STATE", "scrape_duration_seconds",
             "scrape_samples_scraped", "scrape_samples_post_metric_relabeling",
             "scrape_series_added", "scrape_timeout_seconds"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

TOKEN = re.compile(r"""
    (?P<space>\s+|\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<var>\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*)
  | (?P<number>(?:\d+(?:ms|s|m|h|d|w|y))+\b|0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>=~|!~|==|!=|>=|<=|[-+*/%^=<>(){}\[\],@:])
""", re.X)


class PromQLError(ValueError):
    pass


def tokens(expr):
    """[(kind, text)] of a PromQL expression; PromQLError on a character it cannot read."""
    out, pos = [], 0
    while pos < len(expr):
        m = TOKEN.match(expr, pos)
        if not m:
            raise PromQLError("cannot read %r at offset %d of %r" % (expr[pos], pos, expr))
        pos = m.end()
        if m.lastgroup != "space":
            out.append((m.lastgroup, m.group()))
    return out


def _skip_group(toks, i, open_, close):
    """Index just past the bracket closing the one at toks[i] (which is `open_`)."""
    depth = 0
    while i < len(toks):
        if toks[i] == ("op", open_):
            depth += 1
        elif toks[i] == ("op", close):
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise PromQLError("unclosed %s" % open_)


def _matcher_names(toks, start, end):
    """Metric names given by {__name__="x"} matchers in toks[start:end]."""
    names = []
    for j in range(start, end - 2):
        if toks[j] == ("ident", "__name__") and toks[j + 1] == ("op", "=") \
                and toks[j + 2][0] == "string":
            names.append(toks[j + 2][1][1:-1])
    return names


def names_in_expr(expr):
    """The metric names a PromQL expression selects, in order, each once."""
    toks = tokens(grafana_selector(expr))
    depth = 0
    for t in toks:
        depth += {("op", "("): 1, ("op", ")"): -1}.get(t, 0)
        if depth < 0:
            break
    if depth:
        raise PromQLError("unbalanced parentheses in %r" % expr)
    found = []
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1] if i + 1 < len(toks) else (None, None)
        if (kind, text) == ("op", "{"):
            end = _skip_group(toks, i, "{", "}")
            found += _matcher_names(toks, i, end)
            i = end
            continue
        if (kind, text) == ("op", "["):
            i = _skip_group(toks, i, "[", "]")
            continue
        if kind != "ident":
            i += 1
            continue
        lower = text.lower()
        if lower in LABEL_LISTS and nxt == ("op", "("):
            i = _skip_group(toks, i + 1, "(", ")")
            continue
        if lower in KEYWORDS or lower in NUMBERS:
            i += 1
            continue
        if nxt == ("op", "(") or (text in AGGREGATIONS and nxt[1] in ("by", "without")):
            i += 1  # a function or an aggregation
            continue
        found.append(text)
        i += 1
    seen, out = set(), []
    for n in found:
        if n not in seen:
            seen.add(n)
            out.append(n)
    return out


def grafana_selector(expr):
    """Grafana's variable queries: label_values(selector, label) -> selector;
    label_values(label) and label_names() -> nothing; query_result(q) -> q."""
    s = expr.strip()
    m = re.match(r"^label_values\s*\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)$", s, re.S)
    if m:
        return m.group(1)
    if re.match(r"^(label_values\s*\(\s*[A-Za-z_][A-Za-z0-9_]*\s*\)|label_names\s*\(\s*\))$", s):
        return ""
    m = re.match(r"^query_result\s*\((.*)\)$", s, re.S)
    return m.group(1) if m else expr


# ---- the files -------------------------------------------------------------------

def rules_exprs(path):
    """[(where, expr)] and the recording rules' names of a rules file."""
    if yaml is None:
        raise SystemExit("metric_names.py: python3-yaml is needed (scripts/deps.sh)")
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f) or {}
    out, records = [], set()
    for group in doc.get("groups") or []:
        for rule in group.get("rules") or []:
            name = rule.get("alert") or rule.get("record") or "?"
            if rule.get("record"):
                records.add(rule["record"])
            out.append(("%s: %s %s" % (path, "alert" if rule.get("alert") else "record", name),
                        str(rule.get("expr", ""))))
    return out, records


def _panels(panels):
    for p in panels or []:
        yield p
        yield from _panels(p.get("panels"))


def dashboard_exprs(path):
    """[(where, expr)] of a Grafana dashboard: panel targets and query variables."""
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    out = []
    for p in _panels(doc.get("panels")):
        for t in p.get("targets") or []:
            if t.get("expr"):
                out.append(("%s: panel %r" % (path, p.get("title")), t["expr"]))
    for v in (doc.get("templating") or {}).get("list") or []:
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        if q:
            out.append(("%s: variable %r" % (path, v.get("name")), q))
    return out


def used_names(files):
    """[(name, where)] used by the files (recording rules' names left out), and problems."""
    exprs, records, problems = [], set(), []
    for path in files:
        if path.endswith(".json"):
            exprs += dashboard_exprs(path)
        else:
            e, r = rules_exprs(path)
            exprs += e
            records |= r
    used = []
    for where, expr in exprs:
        try:
            names = names_in_expr(expr)
        except PromQLError as e:
            problems.append("%s: %s" % (where, e))
            continue
        if not names:
            problems.append("%s: no metric name in %r" % (where, expr))
        used += [(n, where) for n in names if n not in records]
    return used, problems


def read_exposed(path):
    """{name: type} from "service name type" lines."""
    exposed = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2:
                exposed[parts[1]] = parts[2] if len(parts) > 2 else "untyped"
    return exposed


def is_exposed(name, exposed):
    if name in exposed or name in SYNTHETIC:
        return True
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix):
            base = exposed.get(name[:-len(suffix)])
            if base == "histogram" or (base == "summary" and suffix != "_bucket"):
                return True
    return False


def check(exposed, files):
    """The problems: names used but not exposed, and expressions not understood."""
    used, problems = used_names(files)
    for name, where in used:
        if not is_exposed(name, exposed):
            problems.append("%s: %s is not exposed by any service of the stack" % (where, name))
    return problems


def main(argv):
    if len(argv) >= 3 and argv[1] == "used":
        used, problems = used_names(argv[2:])
        for name, where in used:
            print("%s\t%s" % (name, where))
        for p in problems:
            print("metric_names.py: " + p, file=sys.stderr)
        return 1 if problems else 0
    if len(argv) >= 4 and argv[1] == "check":
        exposed = read_exposed(argv[2])
        if not exposed:
            print("metric_names.py: %s lists no metric (is the stack up?)" % argv[2], file=sys.stderr)
            return 1
        problems = check(exposed, argv[3:])
        for p in problems:
            print("metric_names.py: " + p, file=sys.stderr)
        used, _ = used_names(argv[3:])
        print("metric_names.py: %d distinct metric names used by %d files, %d exposed: %s"
              % (len({n for n, _ in used}), len(argv) - 3, len(exposed),
                 "%d problem(s)" % len(problems) if problems else "all found"))
        return 1 if problems else 0
    print(__doc__.split("\n\n")[0], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
