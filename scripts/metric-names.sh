#!/usr/bin/env bash
# metric-names.sh - the metric names every service of a running stack exposes, one
# line per metric and service:
#
#   <service> <name> <type>        e.g. "query-api query_saga_stage_duration_seconds histogram"
#
# The name is the family's, as its "# TYPE" line gives it (so a histogram is
# listed once, without its _bucket, _sum and _count series; a family whose series
# are all unset right now, such as the lag of a consumer with no partition yet, is
# listed too); a sample without a TYPE line would be listed as "untyped".
# For checks that a name used by an alert rule or a dashboard exists (the issue
# #17 rules' test) and for a person who wants the list (docs/observability.md).
#
# Usage: scripts/metric-names.sh [stack.env]
#   The stack's ports come from stack.env (default: $STACK_DIR/stack.env, else
#   .local/stack.env), its <SERVICE>_URL lines; the services are those of
#   services/services.tsv. Exits 1 (after listing what answered) when a service has
#   no URL in stack.env or does not answer GET /metrics with 200 within 5 s; 2 on
#   bad usage.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/services.sh
. "$ROOT/scripts/services.sh"

if [ $# -gt 1 ]; then
  echo "usage: $0 [stack.env]" >&2
  exit 2
fi
env_file=${1:-${STACK_DIR:-$ROOT/.local}/stack.env}
if [ ! -r "$env_file" ]; then
  echo "metric-names: cannot read $env_file (is the stack up? scripts/stack.sh up)" >&2
  exit 1
fi

deta_services_load

# A variable of stack.env, read without sourcing it (it also holds secrets).
env_value() {
  sed -n "s/^$1=//p" "$env_file" | tail -n 1 | tr -d "'"
}

status=0
for service in "${SERVICES[@]}"; do
  var=$(tr 'a-z-' 'A-Z_' <<<"$service")_URL
  url=$(env_value "$var")
  if [ -z "$url" ]; then
    echo "metric-names: $service: no $var in $env_file (not running?)" >&2
    status=1
    continue
  fi
  if ! body=$(curl -fsS --max-time 5 "$url/metrics" 2>&1); then
    echo "metric-names: $service: GET $url/metrics failed: $body" >&2
    status=1
    continue
  fi
  awk -v service="$service" '
    $1 == "#" && $2 == "TYPE" { type[$3] = $4; if (!($3 in seen)) { seen[$3] = 1; order[++n] = $3 } next }
    /^#/ || NF == 0 { next }
    {
      name = $1; sub(/\{.*/, "", name)
      if (name in seen) next
      base = name; sub(/_(bucket|sum|count)$/, "", base)
      if (base in seen && type[base] == "histogram") next
      seen[name] = 1; order[++n] = name; type[name] = "untyped"
    }
    END { for (i = 1; i <= n; i++) print service, order[i], type[order[i]] }
  ' <<<"$body"
done
exit "$status"
