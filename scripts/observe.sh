# shellcheck shell=bash
# observe.sh - sourced by scripts/stack.sh: the local stack's Prometheus
# (STACK_OBSERVE=on), Debian's `prometheus` scraping every service of the stack with
# the repository's rules (infra/observability/prometheus/rules.yml) loaded.
#
# Layout: $STACK_DIR/prometheus/ holds prometheus.yml (written on every start),
# targets.json (the services' /metrics, rewritten by stack.sh's write_env after
# every start, stop, kill or scale, which Prometheus re-reads by itself) and data/
# (its database, kept until `stack.sh clean`). It is the part `prometheus` of
# stack.sh: pid, port and log files as the others'; port PROMETHEUS_PORT (9090, or
# the next free one), listening on 127.0.0.1 only; stack.env says PROMETHEUS_PORT
# and PROMETHEUS_URL. Scrapes and rule evaluations every OBSERVE_INTERVAL (5s).
#
# Each service is the scrape job of its name (every instance of it a target), as in
# compose and Kubernetes, so that the rules and the dashboard's queries read the
# same. /metrics needs no token (docs/security.md: it stays open when
# HTTP_READS_NEED_AUTH closes the reads).
#
# Traces: the services export spans when OTEL_EXPORTER_OTLP_ENDPOINT is set in the
# caller's environment (stack.sh passes it on, like every setting): start the test
# suite's OTLP receiver (tests/support/otlp_receiver.py) before `up` to read them
# (docs/observability.md, "Looking at one order's trace locally").

OBSERVE_DIR=$STACK_DIR/prometheus
OBSERVE_RULES=$ROOT/infra/observability/prometheus/rules.yml

# True when STACK_OBSERVE asks for Prometheus; a value neither on nor off stops.
observe_wanted() {
  case "${STACK_OBSERVE:-off}" in
    on | true | yes | 1) return 0 ;;
    off | false | no | 0 | "") return 1 ;;
    *) die "STACK_OBSERVE: \"$STACK_OBSERVE\" is not on or off" ;;
  esac
}

# The interval of scrapes and evaluations: a Prometheus duration.
observe_interval() {
  local v=${OBSERVE_INTERVAL:-5s}
  [[ "$v" =~ ^[1-9][0-9]*(ms|s|m)$ ]] || die "OBSERVE_INTERVAL: \"$v\" is not a duration such as 5s"
  echo "$v"
}

# prometheus.yml for this stack: $1 the file, $2 the rules file, $3 the targets file.
observe_config() {
  local interval
  interval=$(observe_interval)
  cat >"$1" <<EOF
# Written by scripts/stack.sh (STACK_OBSERVE=on) at every start of Prometheus.
global:
  scrape_interval: $interval
  scrape_timeout: $interval
  evaluation_interval: $interval
  external_labels:
    system: delivery-eta-local
rule_files:
  - $2
scrape_configs:
  - job_name: delivery-eta
    metrics_path: /metrics
    file_sd_configs:
      - files: ["$3"]
        refresh_interval: $interval
    relabel_configs:
      # the target's service label becomes its job (order-service, query-api, ...)
      - source_labels: [service]
        target_label: job
      - regex: service
        action: labeldrop
EOF
}

# targets.json: every running service part, as a file_sd target group.
observe_targets() {
  [ -d "$OBSERVE_DIR" ] || return 0
  local s sep="" tmp=$OBSERVE_DIR/targets.json.tmp
  {
    printf '['
    for s in $(all_service_parts); do
      part_running "$s" || continue
      printf '%s\n  {"targets": ["127.0.0.1:%s"], "labels": {"service": "%s"}}' \
        "$sep" "$(part_port "$s")" "$(part_service "$s")"
      sep=,
    done
    printf '\n]\n'
  } >"$tmp"
  mv "$tmp" "$OBSERVE_DIR/targets.json"
}

start_prometheus() {
  need_command prometheus prometheus
  [ -r "$OBSERVE_RULES" ] || die "prometheus: no rules at $OBSERVE_RULES"
  mkdir -p "$OBSERVE_DIR/data"
  observe_config "$OBSERVE_DIR/prometheus.yml" "$OBSERVE_RULES" "$OBSERVE_DIR/targets.json"
  observe_targets
  choose_port prometheus
  launch prometheus "$OBSERVE_DIR" prometheus --config.file="$OBSERVE_DIR/prometheus.yml" \
    --storage.tsdb.path="$OBSERVE_DIR/data" --storage.tsdb.retention.time=2d \
    --web.listen-address="127.0.0.1:$CHOSEN_PORT" --log.format=json
  wait_healthy prometheus "$LAUNCHED_PID" "$CHOSEN_PORT" || exit 1
}

