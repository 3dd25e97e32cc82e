#!/usr/bin/env bash
# check_prometheus.sh - ctest unit.prometheus_rules: the Prometheus files of
# infra/observability checked with Debian's promtool (package prometheus; scripts/
# deps.sh installs it), no server needed:
#   - rules.yml: `promtool check rules` (syntax, PromQL, templates), then
#     `promtool test rules rules_test.yml` (every alert fired and not fired);
#   - compose's prometheus.yml: `promtool check config` (its rule file included);
#   - the Kubernetes scrape config (prometheus-k8s.yml): Debian's build has no
#     Kubernetes discovery, so it is checked with its kubernetes_sd_configs replaced
#     by a static target (the relabelling, the rest of the file);
#   - the local stack's config, as scripts/observe.sh writes it;
#   - prometheus.yml scrapes every service of services/services.tsv on its port;
#   - the files infra/observability/kustomization.yaml puts in ConfigMaps exist, and
#     `kubectl kustomize` makes its three ConfigMaps (when kubectl is installed).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PROM=$ROOT/infra/observability/prometheus

if ! command -v promtool >/dev/null 2>&1; then
  echo "check_prometheus.sh: promtool not found (package prometheus): run scripts/deps.sh" >&2
  exit 1
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

echo "== promtool check rules"
promtool check rules "$PROM/rules.yml"
echo "== promtool test rules"
(cd "$PROM" && promtool test rules rules_test.yml)
echo "== promtool check config (compose)"
promtool check config "$PROM/prometheus.yml"

echo "== promtool check config (Kubernetes, discovery replaced by a static target)"
cp "$PROM/rules.yml" "$TMP/rules.yml"
python3 - "$PROM/prometheus-k8s.yml" "$TMP/k8s.yml" "$TMP/rules.yml" <<'PY'
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
doc["rule_files"] = [sys.argv[3]]
jobs = doc["scrape_configs"]
assert jobs and all("kubernetes_sd_configs" in j for j in jobs), "no kubernetes_sd_configs"
for j in jobs:
    del j["kubernetes_sd_configs"]
    j["static_configs"] = [{"targets": ["10.0.0.1:8081"]}]
yaml.safe_dump(doc, open(sys.argv[2], "w"))
PY
promtool check config "$TMP/k8s.yml"

echo "== promtool check config (the local stack's, scripts/observe.sh)"
(
  # What observe.sh takes from stack.sh.
  # shellcheck disable=SC2317,SC2034
  die() { echo "observe.sh: $*" >&2; exit 1; }
  # shellcheck disable=SC2034
  STACK_DIR=$TMP
  # shellcheck source=/dev/null
  . "$ROOT/scripts/observe.sh"
  observe_config "$TMP/local.yml" "$TMP/rules.yml" "$TMP/targets.json"
)
echo '[{"targets": ["127.0.0.1:8081"], "labels": {"service": "order-service"}}]' >"$TMP/targets.json"
promtool check config "$TMP/local.yml"

echo "== compose's prometheus service and prometheus.yml agree with services.tsv"
python3 - "$ROOT" <<'PY'
import sys, yaml
root = sys.argv[1]
cfg = yaml.safe_load(open(root + "/infra/observability/prometheus/prometheus.yml"))
rows = [l.split() for l in open(root + "/services/services.tsv") if l.strip() and not l.startswith("#")]
jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
problems = []
for name, port, _ in rows:
    j = jobs.get(name)
    targets = [t for sc in (j or {}).get("static_configs", []) for t in sc["targets"]]
    if targets != ["%s:%s" % (name, port)]:
        problems.append("prometheus.yml: job %s scrapes %r, want %s:%s" % (name, targets, name, port))
    elif j.get("metrics_path", "/metrics") not in ("/metrics", "/actuator/prometheus"):
        problems.append("prometheus.yml: job %s: metrics_path %r" % (name, j["metrics_path"]))
for extra in sorted(set(jobs) - {r[0] for r in rows}):
    problems.append("prometheus.yml: job %s is not a service of services.tsv" % extra)
for p in problems:
    print(p, file=sys.stderr)
sys.exit(1 if problems else 0)
PY
echo "== infra/observability/kustomization.yaml: every file it puts in a ConfigMap exists"
python3 - "$ROOT/infra/observability" <<'PY'
import os, sys, yaml
base = sys.argv[1]
k = yaml.safe_load(open(os.path.join(base, "kustomization.yaml")))
missing = [f.split("=", 1)[-1] for g in k.get("configMapGenerator") or [] for f in g.get("files") or []
           if not os.path.isfile(os.path.join(base, f.split("=", 1)[-1]))]
for f in missing:
    print("kustomization.yaml: no file %s" % f, file=sys.stderr)
sys.exit(1 if missing or not k.get("configMapGenerator") else 0)
PY
if command -v kubectl >/dev/null 2>&1; then
  echo "== kubectl kustomize infra/observability"
  n=$(kubectl kustomize "$ROOT/infra/observability" | grep -c '^kind: ConfigMap$')
  [ "$n" = 3 ] || { echo "kubectl kustomize: $n ConfigMaps, want 3" >&2; exit 1; }
  echo "3 ConfigMaps"
fi
echo "check_prometheus.sh: all passed"
