#!/usr/bin/env bash
# bench.sh - the benchmark (`make bench`): the whole system on this machine,
# loaded until its latency breaks down, with the machine's own ceilings
# measured in the same run. bench/README.md says what each figure means.
#
#   scripts/bench.sh            about 8 to 12 minutes
#   BENCH_QUICK=1 scripts/bench.sh   a smoke run of about 3.5 minutes
#
# Phases, in this order (the progress goes to stderr):
#   1. release build in $BUILD_DIR (services, broker, bench/ programs);
#   2. a stack of its own in $BENCH_STACK_DIR, wiped first, Postgres with
#      pg_stat_statements loaded, on ports away from the other stacks;
#   3. startup: each service stopped and started again BENCH_STARTUP_REPEATS
#      times, launch-to-healthy measured by bench/healthtime; then a few
#      seconds of idle CPU;
#   4. ceilings: pgbench (one-row insert, BENCH_CONNECTIONS clients) on the
#      same Postgres, bench/brokerbench on the same broker;
#   5. the ramp: a warm-up, an idle baseline (BENCH_BASELINE_RATE orders/s)
#      that sets the breakdown bound, then bench/loadgen at each of
#      BENCH_RATES until a step breaks down, then BENCH_REFINE bisections
#      between the last sustained rate and the first broken one; the highest
#      sustained rate is the throughput;
#   6. the latency run at half that rate for BENCH_LATENCY_SECONDS, with CPU
#      per service, transactions per database and pg_stat_statements around it,
#      and the saga cut into hops from the read model's own instants;
#      then a profile at the highest sustained rate: perf samples every CPU
#      for BENCH_PROFILE_SECONDS, each sample charged to a part and to user or
#      kernel space (skipped when perf, package linux-perf, is missing);
#      Around the latency run are also read: Postgres's CPU per database (each
#      backend's ticks, by pg_stat_activity's datname), pg_stat_wal's wal_bytes,
#      and every topic's high watermarks (bench/topicstat marks; afterwards
#      topicstat count reads that window: messages and bytes per topic); and
#      once, which consumer group reads which topic (each service's
#      deta_consumer_assigned_partitions series): the scaling model's inputs;
#   7. peak RSS of every part (VmHWM: covers phases 5 and 6);
#   8. the scaling model's testable claim: BENCH_SCALE_INSTANCES (every service
#      at two instances, `stack.sh scale`), a warm-up, idle CPU again, and the
#      latency run again at the same rate with CPU per part (every instance
#      summed); then back to one instance each;
#   9. payment-service restarted with PAYMENT_GATEWAY_LATENCY_MS=100 (every
#      service started again, on a new broker, as the first ramp was), and the
#      ramp again, from the highest ramp rate below a quarter of the maximum;
#  10. the console's live streams (docs/console.md): query-api's memory per
#      idle stream (bench/streambench idle), the delay from a feed row to a
#      stream's client (bench/streambench delay) and to the timeline of an
#      order's page in chromium (bench/pagedelay.mjs; skipped when node,
#      chromium or the browser tests' npm install is missing);
#  11. bench/report.sh writes report.md and latency.png into
#      bench/results/<UTC time>/ and copies them to bench/results/latest/.
# The stack is stopped on every exit (trap) unless BENCH_KEEP=1.
#
# Settings (env): BENCH_RATES ("10 20 40 80 160 320 640 1280"),
# BENCH_STEP_SECONDS (10), BENCH_DRAIN_SECONDS (10), BENCH_P99_BOUND_MS (1000),
# BENCH_P99_FACTOR (3), BENCH_BASELINE_RATE (5),
# BENCH_REFINE (2), BENCH_LATENCY_SECONDS (30), BENCH_CONNECTIONS (8),
# BENCH_PGBENCH_SECONDS (10), BENCH_BROKER_MESSAGES (200000),
# BENCH_STARTUP_REPEATS (3), BENCH_GATEWAY_MS (100), BENCH_PROFILE_SECONDS (15),
# BENCH_STREAMS_IDLE (200), BENCH_STREAM_ORDERS (300), BENCH_STREAM_RATE (10),
# BENCH_PAGE_ORDERS (40), BENCH_PAGES (4), BENCH_QUICK (0),
# BENCH_KEEP (0), BENCH_FRESH_BROKER (0: one broker for the whole run; 1: every
# ramp step and measured run on a new local broker, see fresh_broker),
# BENCH_STACK_DIR (.local/bench), BUILD_DIR (build/release),
# BENCH_PG_PORT (19432), BENCH_REDIS_PORT (19379), BENCH_HTTP_PORT_BASE (19080:
# query-api 19080, order 19081, payment 19082, inventory 19083, delivery 19084),
# BENCH_LOG_LEVEL (info), BENCH_RESULTS (bench/results), JOBS (2).
# BENCH_TRACING (0): 1 runs the services with tracing on at 100% sampling
# (OTEL_TRACES_SAMPLER=always_on), exporting to the test suite's OTLP receiver
# (tests/support/otlp_receiver.py --discard, started here on BENCH_OTLP_PORT,
# 19418), or to BENCH_OTLP_ENDPOINT when that is set; compare "CPU s / 1000
# orders" of a run with and without it (docs/observability.md#traces).
# The scaling model and its check (bench/README.md, "The scaling model"):
# BENCH_SCALE_INSTANCES ("order-service=2 inventory-service=2 payment-service=2
# delivery-service=2 query-api=2", STACK_INSTANCES' form; "none" skips phase 8),
# BENCH_SCALE_MARGIN_PCT (15: the largest growth of CPU per order, system alone,
# the claim allows), BENCH_MODEL_RATES ("1000 10000" orders/s),
# BENCH_MODEL_HEADROOM (1.5: cores planned per core measured),
# BENCH_MODEL_INSTANCE_CORES (1: the cores one instance of a service is given).
# Nothing in `make test` runs this: the benchmark measures time, tests do not.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# ---- settings ---------------------------------------------------------------

QUICK=${BENCH_QUICK:-0}
if [ "$QUICK" = 1 ]; then
  RATES=${BENCH_RATES:-"10 20 40"}
  STEP_S=${BENCH_STEP_SECONDS:-3}
  DRAIN_S=${BENCH_DRAIN_SECONDS:-6}
  REFINE=${BENCH_REFINE:-0}
  LATENCY_S=${BENCH_LATENCY_SECONDS:-6}
  PGBENCH_S=${BENCH_PGBENCH_SECONDS:-3}
  BROKER_MSGS=${BENCH_BROKER_MESSAGES:-30000}
  STARTUP_REPEATS=${BENCH_STARTUP_REPEATS:-1}
  IDLE_S=3
  PROFILE_S=${BENCH_PROFILE_SECONDS:-4}
  STREAM_ORDERS=${BENCH_STREAM_ORDERS:-30}
  PAGE_ORDERS=${BENCH_PAGE_ORDERS:-8}
else
  RATES=${BENCH_RATES:-"10 20 40 80 160 320 640 1280"}
  STEP_S=${BENCH_STEP_SECONDS:-10}
  DRAIN_S=${BENCH_DRAIN_SECONDS:-10}
  REFINE=${BENCH_REFINE:-2}
  LATENCY_S=${BENCH_LATENCY_SECONDS:-30}
  PGBENCH_S=${BENCH_PGBENCH_SECONDS:-10}
  BROKER_MSGS=${BENCH_BROKER_MESSAGES:-200000}
  STARTUP_REPEATS=${BENCH_STARTUP_REPEATS:-3}
  IDLE_S=5
  PROFILE_S=${BENCH_PROFILE_SECONDS:-15}
  STREAM_ORDERS=${BENCH_STREAM_ORDERS:-300}
  PAGE_ORDERS=${BENCH_PAGE_ORDERS:-40}
fi
STREAMS_IDLE=${BENCH_STREAMS_IDLE:-200}
STREAM_RATE=${BENCH_STREAM_RATE:-10}
PAGES=${BENCH_PAGES:-4}
P99_BOUND_MS=${BENCH_P99_BOUND_MS:-1000}
P99_FACTOR=${BENCH_P99_FACTOR:-3}
BASELINE_RATE=${BENCH_BASELINE_RATE:-5}
CONNECTIONS=${BENCH_CONNECTIONS:-8}
GATEWAY_MS=${BENCH_GATEWAY_MS:-100}
KEEP=${BENCH_KEEP:-0}
FRESH_BROKER=${BENCH_FRESH_BROKER:-0}
JOBS=${JOBS:-2}
QUIET_TIMEOUT_S=${BENCH_QUIET_TIMEOUT:-180}
RESULTS=${BENCH_RESULTS:-bench/results}
PG_BIN=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
SCALE_INSTANCES=${BENCH_SCALE_INSTANCES-"order-service=2 inventory-service=2 payment-service=2 delivery-service=2 query-api=2"}
SCALE_MARGIN_PCT=${BENCH_SCALE_MARGIN_PCT:-15}
MODEL_RATES=${BENCH_MODEL_RATES:-"1000 10000"}
MODEL_HEADROOM=${BENCH_MODEL_HEADROOM:-1.5}
MODEL_INSTANCE_CORES=${BENCH_MODEL_INSTANCE_CORES:-1}

export STACK_DIR=${BENCH_STACK_DIR:-.local/bench}
export BUILD_DIR=${BUILD_DIR:-build/release}
HTTP_BASE=${BENCH_HTTP_PORT_BASE:-19080}
export PG_PORT=${BENCH_PG_PORT:-19432} REDIS_PORT=${BENCH_REDIS_PORT:-19379}
export QUERY_API_PORT=$HTTP_BASE ORDER_SERVICE_PORT=$((HTTP_BASE + 1)) \
  PAYMENT_SERVICE_PORT=$((HTTP_BASE + 2)) INVENTORY_SERVICE_PORT=$((HTTP_BASE + 3)) \
  DELIVERY_SERVICE_PORT=$((HTTP_BASE + 4))

# The services' settings for the benchmark: every order must succeed (no
# declines, stock that never runs out), and the simulated fleet must never be
# what limits (20 drivers x 1000 deliveries each); the delivery clock runs 600x
# as in the demo, so each order's whole life (pick-up, delivery) happens within
# the run and its cost is counted.
export DELIVERY_CLOCK_SPEED=600 DELIVERY_DRIVERS=20 DELIVERY_DRIVER_CAPACITY=1000
export PAYMENT_DECLINE_CUSTOMERS=none PAYMENT_DECLINE_RATE=0 PAYMENT_GATEWAY_LATENCY_MS=0
INVENTORY_CATALOG=$(for i in $(seq 1 20); do printf 'sku-%d:1000000000,' "$i"; done)
export INVENTORY_CATALOG=${INVENTORY_CATALOG%,}
export LOG_LEVEL=${BENCH_LOG_LEVEL:-info}
TRACING=${BENCH_TRACING:-0}
OTLP_PORT=${BENCH_OTLP_PORT:-19418}
OTLP_PID=

. "$ROOT/scripts/services.sh"
deta_services_load
PARTS=("${SERVICES[@]}" broker redis postgres)
TARGETS=(local-broker loadgen brokerbench healthtime streambench topicstat "${SERVICES[@]}")
RUN_ID=$(date -u +%Y%m%dT%H%M%SZ)
RUN_DIR=$RESULTS/$RUN_ID
BIN=$BUILD_DIR/bench
T0=$SECONDS
ACCEPTED_TOTAL=0
STACK_STARTED=0
STEP_BOUND_MS=3600000 # the saga p99 above which a step has broken down; set by the baseline

# ---- output -------------------------------------------------------------------

phase() {
  if [ -t 2 ]; then
    printf '\n\033[1m==> [%s] %s\033[0m  (%ds)\n' "$1" "$2" "$((SECONDS - T0))" >&2
  else
    printf '\n==> [%s] %s  (%ds)\n' "$1" "$2" "$((SECONDS - T0))" >&2
  fi
}
note() { printf '    %s\n' "$*" >&2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }

# The value of key in a key=value file.
kv() { sed -n "s/^$2=//p" "$1" | head -n 1; }

# awk arithmetic on shell values: calc '<expression>' (numbers only).
calc() { awk "BEGIN { print ($1) }"; }

# The scaling model's settings, checked before anything runs.
validate_settings() {
  local entry svc n
  if [ "$SCALE_INSTANCES" != none ]; then
    [ -n "$SCALE_INSTANCES" ] || die "BENCH_SCALE_INSTANCES is empty: give service=N words, or none"
    for entry in $SCALE_INSTANCES; do
      svc=${entry%%=*}
      n=${entry#*=}
      if ! [[ "$entry" == *=* && "$n" =~ ^[1-9]$ ]] || ! printf '%s\n' "${SERVICES[@]}" | grep -qx -- "$svc"; then
        die "BENCH_SCALE_INSTANCES: \"$entry\" is not <service>=<1..9> (services: ${SERVICES[*]})"
      fi
    done
  fi
  [[ "$SCALE_MARGIN_PCT" =~ ^[0-9]+([.][0-9]+)?$ ]] ||
    die "BENCH_SCALE_MARGIN_PCT=$SCALE_MARGIN_PCT is not a percentage (a number >= 0)"
  [ -n "$MODEL_RATES" ] || die "BENCH_MODEL_RATES is empty: give orders/s, such as \"1000 10000\""
  for n in $MODEL_RATES; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "BENCH_MODEL_RATES: \"$n\" is not a whole number of orders/s > 0"
  done
  if ! [[ "$MODEL_HEADROOM" =~ ^[0-9]+([.][0-9]+)?$ ]] || [ "$(calc "$MODEL_HEADROOM >= 1")" != 1 ]; then
    die "BENCH_MODEL_HEADROOM=$MODEL_HEADROOM is not a number >= 1"
  fi
  if ! [[ "$MODEL_INSTANCE_CORES" =~ ^[0-9]+([.][0-9]+)?$ ]] ||
    [ "$(calc "$MODEL_INSTANCE_CORES > 0")" != 1 ]; then
    die "BENCH_MODEL_INSTANCE_CORES=$MODEL_INSTANCE_CORES is not a number > 0"
  fi
}

# ---- the stack ------------------------------------------------------------------

stack() { scripts/stack.sh "$@"; }

# Tracing for the run (BENCH_TRACING=1): the endpoint and the sampler in the
# services' environment, and a receiver that discards what it gets.
start_tracing() {
  echo "tracing=$TRACING" >>"$RUN_DIR/result.env"
  [ "$TRACING" = 1 ] || return 0
  local endpoint=${BENCH_OTLP_ENDPOINT:-}
  if [ -z "$endpoint" ]; then
    /usr/bin/python3 tests/support/otlp_receiver.py --port "$OTLP_PORT" --discard \
      --out /dev/null >"$RUN_DIR/otlp-receiver.log" 2>&1 &
    OTLP_PID=$!
    endpoint=http://127.0.0.1:$OTLP_PORT
  fi
  export OTEL_EXPORTER_OTLP_ENDPOINT=$endpoint OTEL_TRACES_SAMPLER=always_on
  note "tracing on at 100% sampling, spans to $endpoint"
}

finish() {
  local status=$?
  [ -z "$OTLP_PID" ] || kill "$OTLP_PID" 2>/dev/null || true
  if [ "$STACK_STARTED" = 1 ] && [ "$KEEP" != 1 ]; then
    phase end "stopping the benchmark stack"
    stack down >/dev/null 2>&1 || true
  elif [ "$STACK_STARTED" = 1 ]; then
    note "the stack keeps running (BENCH_KEEP=1): STACK_DIR=$STACK_DIR scripts/stack.sh down"
  fi
  [ "$status" = 0 ] || printf 'bench: failed (status %s); partial results in %s\n' \
    "$status" "$RUN_DIR" >&2
  exit "$status"
}

refuse_shared_stack_dir() {
  case "$(realpath -m "$STACK_DIR")" in
    "$ROOT/.local" | "$ROOT/.local/test")
      die "BENCH_STACK_DIR=$STACK_DIR is a stack of daily use; the benchmark wipes its own" ;;
  esac
}

load_env() {
  set -a
  # shellcheck disable=SC1091
  . "$STACK_DIR/stack.env"
  set +a
}

psql_db() {
  local db=$1
  shift
  PGPASSWORD=postgres PGOPTIONS='-c client_min_messages=warning' \
    "$PG_BIN/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -d "$db" \
    -v ON_ERROR_STOP=1 -X -q "$@"
}

# Postgres first, alone, to load pg_stat_statements (a restart is needed),
# then everything.
start_stack() {
  refuse_shared_stack_dir
  stack down >/dev/null 2>&1 || true
  stack clean >/dev/null
  STACK_STARTED=1
  stack start postgres >/dev/null
  load_env
  psql_db postgres -c "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'"
  stack stop postgres >/dev/null
  stack up >"$RUN_DIR/stack-up.log" 2>&1 || { cat "$RUN_DIR/stack-up.log" >&2; die "stack up failed"; }
  load_env
  psql_db postgres -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" \
    -c "ALTER SYSTEM SET pg_stat_statements.track_planning = on" -c "SELECT pg_reload_conf()" \
    >/dev/null
  note "stack up in $STACK_DIR: order-service $ORDER_SERVICE_URL, query-api $QUERY_API_URL"
}

pid_of() { head -n 1 "$STACK_DIR/pids/$1.pid" 2>/dev/null || true; }

# The pids of every running instance of a service (<service>.pid, <service>.K.pid).
instance_pids() {
  local f
  for f in "$STACK_DIR/pids/$1.pid" "$STACK_DIR/pids/$1".[0-9]*.pid; do
    [ -r "$f" ] && head -n 1 "$f"
  done
  return 0
}

# ---- /proc: CPU and memory ---------------------------------------------------------

# utime+stime of a process in clock ticks (with its reaped children's when $2=1).
ticks_of() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
  awk -v with_children="${2:-0}" '{
    sub(/^.*\) /, "")
    t = $12 + $13
    if (with_children) t += $14 + $15
    print t
  }' <<<"$stat"
}

# Postgres is many processes: the postmaster (with the children it reaped)
# plus every live backend.
postgres_ticks() {
  local pm total child
  pm=$(pid_of postgres)
  [ -n "$pm" ] || { echo 0; return; }
  total=$(ticks_of "$pm" 1)
  for child in $(pgrep -P "$pm" || true); do
    total=$((total + $(ticks_of "$child")))
  done
  echo "$total"
}

# "part ticks" for every part (a service: all its instances together).
cpu_snapshot() {
  local part pid total
  for part in "${PARTS[@]}"; do
    if [ "$part" = postgres ]; then
      echo "postgres $(postgres_ticks)"
    else
      total=0
      for pid in $(instance_pids "$part"); do total=$((total + $(ticks_of "$pid"))); done
      echo "$part $total"
    fi
  done
}

# "pid database ticks type" for every Postgres backend that pg_stat_activity names
# a database of (the others, background processes, are in postgres_ticks only);
# type is its backend_type, spaces as underscores (client_backend, walsender).
pg_backend_snapshot() {
  local pid db type
  psql_db postgres -At -F' ' -c "SELECT pid, datname, replace(backend_type, ' ', '_')
    FROM pg_stat_activity WHERE datname IS NOT NULL AND pid <> pg_backend_pid()" |
    while read -r pid db type; do
      echo "$pid $db $(ticks_of "$pid") $type"
    done
}

# pg_stat_wal: "wal_bytes wal_records wal_fpi" of the whole cluster (empty when
# the server has no pg_stat_wal, before PostgreSQL 14).
wal_snapshot() {
  psql_db postgres -At -F' ' -c "SELECT wal_bytes, wal_records, wal_fpi FROM pg_stat_wal" \
    2>/dev/null || true
}

# Which consumer group reads which topic, "group,topic": the
# deta_consumer_assigned_partitions series every service exposes for each topic
# it subscribes to.
record_subscriptions() {
  local svc port
  echo "group,topic" >"$RUN_DIR/subscriptions.csv"
  for svc in "${SERVICES[@]}"; do
    port=$(cat "$STACK_DIR/ports/$svc.port" 2>/dev/null) || continue
    curl -fsS --max-time 5 "http://127.0.0.1:$port/metrics" 2>/dev/null |
      sed -n 's/^deta_consumer_assigned_partitions{group="\([^"]*\)",topic="\([^"]*\)".*/\1,\2/p'
  done | sort -u >>"$RUN_DIR/subscriptions.csv"
}

# VmHWM and VmRSS (kB) of one process.
memory_of() {
  awk '/^VmHWM:/ { h = $2 } /^VmRSS:/ { r = $2 } END { print (h ? h : 0), (r ? r : 0) }' \
    "/proc/$1/status" 2>/dev/null || echo "0 0"
}

# ---- phase 3: startup ---------------------------------------------------------------

# One stop and start of a service, timed by healthtime; prints its output.
time_one_start() {
  local svc=$1 since starter out
  stack stop "$svc" >/dev/null
  since=$(date +%s%6N)
  stack start "$svc" >>"$RUN_DIR/startup-stack.log" 2>&1 &
  starter=$!
  out=$("$BIN/healthtime" --pid-file "$STACK_DIR/pids/$svc.pid" \
    --port-file "$STACK_DIR/ports/$svc.port" --since-us "$since" --timeout 30) || out=""
  wait "$starter" || out=""
  [ -n "$out" ] && echo "$out"
}

# A start that fails is tried once more (a port in the ephemeral range can be
# held for a moment by some client's connection) before the run gives up.
measure_startup() {
  local svc k out
  echo "service,repeat,first_answer_ms,healthy_ms" >"$RUN_DIR/startup.csv"
  for svc in "${SERVICES[@]}"; do
    for ((k = 1; k <= STARTUP_REPEATS; k++)); do
      out=$(time_one_start "$svc") || {
        note "$svc did not start (see $STACK_DIR/logs/$svc.log); once more"
        sleep 1
        out=$(time_one_start "$svc") || die "$svc did not become healthy (see $STACK_DIR/logs/$svc.log)"
      }
      printf '%s,%s,%s,%s\n' "$svc" "$k" "$(kv <(echo "$out") first_answer_ms)" \
        "$(kv <(echo "$out") healthy_ms)" >>"$RUN_DIR/startup.csv"
      note "$(printf '%-18s #%d  healthy after %7s ms' "$svc" "$k" "$(kv <(echo "$out") healthy_ms)")"
    done
  done
  load_env
}

# CPU of every part while no order moves: what the background work (relay and
# consumer polling, tickers, health of the stack) costs per second. It is in
# every CPU-per-order figure, and weighs more the lower the rate.
measure_idle() {
  sleep 2
  cpu_snapshot >"$RUN_DIR/idle-before.txt"
  sleep "$IDLE_S"
  cpu_snapshot >"$RUN_DIR/idle-after.txt"
  echo "idle_s=$IDLE_S" >>"$RUN_DIR/result.env"
}

# ---- phase 4: ceilings --------------------------------------------------------------

run_pgbench() {
  local script=$RUN_DIR/pgbench-insert.sql out tps
  psql_db postgres -c "DROP DATABASE IF EXISTS bench_scratch" -c "CREATE DATABASE bench_scratch"
  psql_db bench_scratch -c "CREATE TABLE one_row (id bigserial PRIMARY KEY, payload text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now())"
  echo "INSERT INTO one_row (payload) VALUES ('order');" >"$script"
  # Without group commit for its sessions (commit_delay, infra/README.md#group-commit):
  # the ceiling stays Postgres's best one-row insert rate here, which eight clients
  # of tiny transactions reach without the delay, comparable with earlier runs.
  out=$(PGPASSWORD=postgres PGOPTIONS='-c commit_delay=0' "$PG_BIN/pgbench" -h 127.0.0.1 -p "$PGPORT" -U postgres -n \
    -M prepared -c "$CONNECTIONS" -j "$((CONNECTIONS < 2 ? 1 : 2))" -T "$PGBENCH_S" -f "$script" bench_scratch 2>&1) ||
    { echo "$out" >&2; die "pgbench failed"; }
  echo "$out" >"$RUN_DIR/pgbench.log"
  tps=$(sed -n 's/^tps = \([0-9]*\).* (without initial connection time)/\1/p' <<<"$out")
  [ -n "$tps" ] || tps=$(sed -n 's/^tps = \([0-9]*\).*/\1/p' <<<"$out" | tail -n 1)
  {
    echo "pgbench_tps=$tps"
    echo "pgbench_clients=$CONNECTIONS"
    echo "pgbench_seconds=$PGBENCH_S"
  } >>"$RUN_DIR/ceilings.env"
  psql_db postgres -c "DROP DATABASE bench_scratch"
  note "pgbench one-row insert, $CONNECTIONS clients, ${PGBENCH_S}s: $tps TPS"
}

run_brokerbench() {
  local out_default out_short
  out_default=$("$BIN/brokerbench" --bootstrap "$KAFKA_BOOTSTRAP_SERVERS" \
    --messages "$BROKER_MSGS" 2>>"$RUN_DIR/brokerbench.log") || die "brokerbench failed"
  out_short=$("$BIN/brokerbench" --bootstrap "$KAFKA_BOOTSTRAP_SERVERS" \
    --messages "$BROKER_MSGS" --fetch-wait-ms 10 2>>"$RUN_DIR/brokerbench.log") ||
    die "brokerbench (fetch.wait.max.ms=10) failed"
  {
    sed 's/^/broker_/' <<<"$out_default"
    sed 's/^/broker_fast_/' <<<"$out_short"
  } >>"$RUN_DIR/ceilings.env"
  note "broker, consumers as the services': $(kv <(echo "$out_default") produce_to_consume_per_s) msg/s," \
    "one hop $(kv <(echo "$out_default") hop_p50_ms) ms (p50)"
  note "broker, fetch.wait.max.ms=10:        $(kv <(echo "$out_short") produce_to_consume_per_s) msg/s," \
    "one hop $(kv <(echo "$out_short") hop_p50_ms) ms (p50)"
}

# ---- phases 5, 6, 8: steps of load --------------------------------------------------

# Counts of the read model by status, as "STATUS=n" words.
read_model_counts() {
  curl -fsS --max-time 5 "$QUERY_API_URL/api/stats" 2>/dev/null |
    grep -o '"[A-Za-z_]*":[0-9]*' | tr -d '"' | tr ':' '=' | tr '\n' ' '
}

# The count of one key in read_model_counts' words; 0 when absent.
count_of() {
  local v
  v=$(tr ' ' '\n' <<<"$2" | sed -n "s/^$1=//p")
  echo "${v:-0}"
}

# Waits until the read model holds every order accepted so far and none is
# still in the saga or on its way to the door, so that a step starts on an
# idle system. False after QUIET_TIMEOUT_S.
wait_quiet() {
  local deadline=$((SECONDS + QUIET_TIMEOUT_S)) counts total busy
  while ((SECONDS < deadline)); do
    counts=$(read_model_counts)
    total=$(count_of total "$counts")
    busy=0
    for s in withoutStatus CREATED INVENTORY_RESERVED PAYMENT_AUTHORIZED DELIVERY_ASSIGNED \
      PICKED_UP; do
      busy=$((busy + $(count_of "$s" "$counts")))
    done
    if [ -n "$counts" ] && [ "$total" -ge "$ACCEPTED_TOTAL" ] && [ "$busy" = 0 ]; then
      if [ -t 2 ]; then printf '\r\033[K' >&2; fi
      return 0
    fi
    if [ -t 2 ]; then
      printf '\r\033[K    settling: %s of %s orders in the read model, %s still moving' \
        "${total:-?}" "$ACCEPTED_TOTAL" "$busy" >&2
    fi
    sleep 0.5
  done
  if [ -t 2 ]; then printf '\n' >&2; fi
  return 1
}

# With BENCH_FRESH_BROKER=1, a new local broker, empty, for the step or run
# that follows (bench/README.md, "A new broker for each step"). librdkafka
# 2.0.2's mock finds the message set a fetch asks for by walking the
# partition's log from its start (rd_kafka_mock_msgset_find, "FIXME: Maintain
# an index"), up to 5 MB of it per partition, so what it spends per message
# grows with every message it took before: measured on a stack at 60 orders/s,
# 1.3 CPU-s per 1000 orders on a new broker and 3.0 four runs (3600 orders)
# later. A real broker indexes its log. Not the default: the README says what
# it changed and what it did not. The services are stopped, the broker started
# again (topics, offsets and address new; Postgres and Redis stay up, and
# nothing is in flight: it waits for quiet first), the services started
# against it, and a warm-up runs. Each part's peak RSS so far is kept first
# (keep_memory_peaks): a new process starts its own.
fresh_broker() {
  [ "$FRESH_BROKER" = 1 ] || return 0
  # A step that broke down may have left orders moving: let them end first.
  wait_quiet || note "the system did not settle within ${QUIET_TIMEOUT_S}s; a new broker anyway"
  keep_memory_peaks
  local i
  for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do
    stack stop "${SERVICES[i]}" >>"$RUN_DIR/fresh-broker.log" 2>&1 ||
      die "stack.sh stop ${SERVICES[i]} failed (fresh-broker.log)"
  done
  { stack stop broker && stack start broker; } >>"$RUN_DIR/fresh-broker.log" 2>&1 ||
    die "the broker did not start again (fresh-broker.log)"
  for ((i = 0; i < ${#SERVICES[@]}; i++)); do
    stack start "${SERVICES[i]}" >>"$RUN_DIR/fresh-broker.log" 2>&1 ||
      die "stack.sh start ${SERVICES[i]} failed (fresh-broker.log)"
  done
  load_env
  run_step warmup 10 3 "[warm-up, new broker]" || true
}

STEP_CSV_HEADER="phase,rate,sustained,orders,accepted,errors,ended_ok,ended_failed,incomplete,\
intake_p50_ms,intake_p95_ms,intake_p99_ms,intake_max_ms,saga_p50_ms,saga_p95_ms,saga_p99_ms,\
saga_max_ms,completed_per_s,poll_requests,send_late_max_ms,reason"

# One loadgen run: run_step <phase> <rate> <seconds> <label>. Sets STEP_SUMMARY.
run_step() {
  local phase=$1 rate=$2 seconds=$3 label=$4 name bound=$STEP_BOUND_MS
  name=$phase-$(printf '%08.1f' "$rate")
  case "$phase" in warmup | baseline) bound=3600000 ;; esac
  STEP_SUMMARY=$RUN_DIR/steps/$name.summary
  mkdir -p "$RUN_DIR/steps"
  "$BIN/loadgen" --rate "$rate" --duration "$seconds" --drain "$DRAIN_S" \
    --connections "$CONNECTIONS" --p99-bound-ms "$bound" --prefix "b$RUN_ID-$name" \
    --csv "$RUN_DIR/steps/$name.csv" --label "    $label" >"$STEP_SUMMARY" ||
    die "loadgen failed at $rate/s"
  ACCEPTED_TOTAL=$((ACCEPTED_TOTAL + $(kv "$STEP_SUMMARY" accepted)))
  [ "$phase" = warmup ] || step_csv_row "$phase" "$STEP_SUMMARY" >>"$RUN_DIR/steps.csv"
  local verdict="sustained"
  [ "$(kv "$STEP_SUMMARY" sustained)" = 1 ] || verdict="BROKE DOWN: $(kv "$STEP_SUMMARY" reason)"
  case "$phase" in warmup | baseline) verdict=$phase ;; esac
  note "$(printf '%7s/s  intake p99 %7s ms  saga p50 %7s p99 %7s ms  -> %s' "$rate" \
    "$(kv "$STEP_SUMMARY" intake_p99_ms)" "$(kv "$STEP_SUMMARY" saga_p50_ms)" \
    "$(kv "$STEP_SUMMARY" saga_p99_ms)" "$verdict")"
  wait_quiet || { note "the system did not settle within ${QUIET_TIMEOUT_S}s"; return 2; }
}

step_csv_row() {
  local f=$2 k row=$1
  for k in rate sustained orders accepted; do row+=",$(kv "$f" "$k")"; done
  row+=",$(($(kv "$f" refused) + $(kv "$f" dropped)))"
  for k in ended_ok ended_failed incomplete intake_p50_ms intake_p95_ms intake_p99_ms \
    intake_max_ms saga_p50_ms saga_p95_ms saga_p99_ms saga_max_ms completed_per_s \
    poll_requests send_late_max_ms; do
    row+=",$(kv "$f" "$k")"
  done
  echo "$row,\"$(kv "$f" reason | tr '"' "'")\""
}

sustained() { [ "$(kv "$STEP_SUMMARY" sustained)" = 1 ]; }

# The gateway ramp's rates: the question is only whether the gateway caps the
# throughput, so it starts at the highest of BENCH_RATES below a quarter of the
# maximum (at the first rate when none is), not at the bottom.
gateway_rates() {
  local start
  start=$(tr ' ' '\n' <<<"$RATES" | awk -v q="$(calc "$1 / 4")" 'NF && $1 < q { s = $1 } END { print s }')
  tr ' ' '\n' <<<"$RATES" | awk -v s="${start:-0}" 'NF && $1 >= s' | tr '\n' ' '
}

# The ramp: rising rates until a breakdown, then bisection. Sets RAMP_BEST,
# the highest sustained rate (0 when none). ramp <phase> <label> [rates]
ramp() {
  local phase=$1 label=$2 rates=${3:-$RATES} best=0 bad="" rate n=0 total k
  total=$(wc -w <<<"$rates")
  for rate in $rates; do
    n=$((n + 1))
    fresh_broker
    run_step "$phase" "$rate" "$STEP_S" "[$label $n/$total]" || { bad=$rate; break; }
    if sustained; then best=$rate; else bad=$rate; break; fi
  done
  # Nothing sustained: halve the first rate, at most three times.
  for k in 1 2 3; do
    [ "$best" = 0 ] && [ -n "$bad" ] || break
    rate=$(calc "$bad / 2")
    fresh_broker
    run_step "$phase" "$rate" "$STEP_S" "[$label lower $k/3]" || break
    if sustained; then best=$rate; else bad=$rate; fi
  done
  for ((k = 1; k <= REFINE; k++)); do
    [ "$best" != 0 ] && [ -n "$bad" ] || break
    rate=$(calc "int(($best + $bad) / 2)")
    [ "$(calc "($rate > $best) && ($rate < $bad)")" = 1 ] || break
    fresh_broker
    run_step "$phase" "$rate" "$STEP_S" "[$label refine $k/$REFINE]" || { bad=$rate; break; }
    if sustained; then best=$rate; else bad=$rate; fi
  done
  RAMP_BEST=$best
}

# The saga's latency on an idle system (BASELINE_RATE orders/s, far below any
# capacity), and from it the bound above which a step has broken down: the
# larger of BENCH_P99_BOUND_MS and BENCH_P99_FACTOR times the idle p99. A
# fixed bound alone would call a system with a slow idle path broken at any
# rate; a relative one alone would let a fast system queue for seconds.
measure_baseline() {
  run_step baseline "$BASELINE_RATE" "$((STEP_S < 4 ? 4 : STEP_S))" "[idle baseline]" || true
  local p99
  p99=$(kv "$STEP_SUMMARY" saga_p99_ms)
  STEP_BOUND_MS=$(calc "${p99:-0} * $P99_FACTOR > $P99_BOUND_MS ? int(${p99:-0} * $P99_FACTOR + 0.5) : $P99_BOUND_MS")
  {
    echo "baseline_rate=$BASELINE_RATE"
    echo "baseline_saga_p50_ms=$(kv "$STEP_SUMMARY" saga_p50_ms)"
    echo "baseline_saga_p99_ms=$p99"
    echo "baseline_intake_p50_ms=$(kv "$STEP_SUMMARY" intake_p50_ms)"
    echo "bound_ms=$STEP_BOUND_MS"
  } >>"$RUN_DIR/result.env"
  note "idle saga p99 ${p99} ms: a step breaks down above a saga p99 of $STEP_BOUND_MS ms"
}

# ---- phase 6: the latency run, and what it costs ---------------------------------------

db_commits() {
  local dbs
  dbs=$(printf "'%s'," "${DATABASES[@]}")
  psql_db postgres -At -F, -c "SELECT datname, xact_commit FROM pg_stat_database
    WHERE datname IN (${dbs%,})
    ORDER BY datname"
}

# The topics' high watermarks into <file> (bench/topicstat marks); on failure
# the file is removed, and the report says the broker's figures are missing.
topic_marks() {
  "$BIN/topicstat" --bootstrap "$KAFKA_BOOTSTRAP_SERVERS" marks >"$1" 2>>"$RUN_DIR/topicstat.log" ||
    { note "topicstat marks failed (topicstat.log)"; rm -f "$1"; }
}

# Maintenance that earlier phases left owing (autovacuum of the ramp's or the
# profile's dead rows, a checkpoint falling due) would land in whichever
# measured window comes next, and so in one of the two runs the scaling claim
# compares and not the other: each of them (and the two-instance run's idle
# reading) starts after VACUUM (ANALYZE) of every database and a CHECKPOINT.
# What the run's own orders cause (autovacuum, checkpoints) stays in its figures.
settle_postgres() {
  local db
  for db in $(psql_db postgres -At -c "SELECT datname FROM pg_database WHERE datallowconn AND datname <> 'template1'"); do
    psql_db "$db" -c "VACUUM (ANALYZE)" >/dev/null 2>>"$RUN_DIR/settle.log" ||
      note "VACUUM of $db failed (settle.log): measuring anyway"
  done
  psql_db postgres -c "CHECKPOINT" >/dev/null 2>>"$RUN_DIR/settle.log" ||
    note "CHECKPOINT failed (settle.log): measuring anyway"
}

# latency_run <rate> [scaled]: the latency run, with everything read around it.
# The scaled run (phase 8) writes scaled-*.txt and scaled.summary and reads only
# the CPU and the commits.
latency_run() {
  local rate=$1 p="" phase=latency before after
  if [ "${2:-}" = scaled ]; then p=scaled- phase=scaled; fi
  [ -n "$p" ] || psql_db postgres -c "SELECT pg_stat_statements_reset()" >/dev/null
  db_commits >"$RUN_DIR/${p}commits-before.csv"
  if [ -z "$p" ]; then
    wal_snapshot >"$RUN_DIR/wal-before.txt"
    topic_marks "$RUN_DIR/topics-before.txt"
    pg_backend_snapshot >"$RUN_DIR/pg-backends-before.txt"
  fi
  cpu_snapshot >"$RUN_DIR/${p}cpu-before.txt"
  before=$(date +%s%N)
  run_step "$phase" "$rate" "$LATENCY_S" "[${p:+two instances: }latency run]" || true
  after=$(date +%s%N)
  cpu_snapshot >"$RUN_DIR/${p}cpu-after.txt"
  if [ -z "$p" ]; then
    pg_backend_snapshot >"$RUN_DIR/pg-backends-after.txt"
    topic_marks "$RUN_DIR/topics-after.txt"
    wal_snapshot >"$RUN_DIR/wal-after.txt"
  fi
  db_commits >"$RUN_DIR/${p}commits-after.csv"
  if [ -n "$p" ]; then
    cp "$STEP_SUMMARY" "$RUN_DIR/scaled.summary"
    echo "wall_s=$(calc "($after - $before) / 1e9")" >>"$RUN_DIR/scaled.summary"
    return 0
  fi
  cp "$STEP_SUMMARY" "$RUN_DIR/latency.summary"
  cp "${STEP_SUMMARY%.summary}.csv" "$RUN_DIR/latency-orders.csv"
  echo "wall_s=$(calc "($after - $before) / 1e9")" >>"$RUN_DIR/latency.summary"
  pg_top_statements
  saga_hops
  if [ -s "$RUN_DIR/topics-before.txt" ] && [ -s "$RUN_DIR/topics-after.txt" ]; then
    "$BIN/topicstat" --bootstrap "$KAFKA_BOOTSTRAP_SERVERS" count --from "$RUN_DIR/topics-before.txt" \
      --to "$RUN_DIR/topics-after.txt" >"$RUN_DIR/topics.csv" 2>>"$RUN_DIR/topicstat.log" ||
      { note "topicstat count failed (topicstat.log)"; rm -f "$RUN_DIR/topics.csv"; }
  fi
  record_subscriptions
}

# Phase 8: the scaling model's claim, that CPU per order does not grow with more
# instances. Every service of BENCH_SCALE_INSTANCES is brought to its count
# (`stack.sh scale`, the instances STACK_INSTANCES starts), the groups settle, a
# warm-up runs, idle CPU is read again (once the warm-up's orders are delivered),
# then the latency run at the same rate; then every service back to one instance.
scaled_run() {
  local rate=$1 entry
  fresh_broker
  for entry in $SCALE_INSTANCES; do
    stack scale "${entry%%=*}" "${entry#*=}" >>"$RUN_DIR/scale-stack.log" 2>&1 ||
      { note "stack.sh scale $entry failed (scale-stack.log): the two-instance run is skipped"; scale_back; return 0; }
  done
  load_env
  echo "scale_instances=$SCALE_INSTANCES" >>"$RUN_DIR/result.env"
  wait_groups_settled || note "the consumer groups did not settle within 60 s; measuring anyway"
  run_step warmup 10 3 "[two instances: warm-up]" || true
  settle_postgres
  sleep 2
  cpu_snapshot >"$RUN_DIR/scaled-idle-before.txt"
  sleep "$IDLE_S"
  cpu_snapshot >"$RUN_DIR/scaled-idle-after.txt"
  latency_run "$rate" scaled
  scale_back
}

# Waits (up to 60 s) until every consumer group's instances together hold every
# partition of each topic they read, each running instance holding some: the
# rebalance after the new instances joined is over. The partition counts are the
# latency run's topic marks; the assignments, each instance's
# deta_consumer_assigned_partitions series.
wait_groups_settled() {
  local deadline=$((SECONDS + 60)) f series
  [ -s "$RUN_DIR/topics-after.txt" ] || { sleep 10; return 0; }
  while ((SECONDS < deadline)); do
    series=""
    for f in "$STACK_DIR"/ports/*.port; do
      case "${f##*/}" in postgres.port | redis.port | broker.port | prometheus.port) continue ;; esac
      series+=$(curl -fsS --max-time 2 "http://127.0.0.1:$(cat "$f")/metrics" 2>/dev/null |
        sed -n "s|^deta_consumer_assigned_partitions{group=\"\([^\"]*\)\",topic=\"\([^\"]*\)\".*} \([0-9.]*\)$|${f##*/} \1 \2 \3|p")
      series+=$'\n'
    done
    if awk 'NR == FNR { parts[$1]++; next }
      NF == 4 { held[$2 " " $3] += $4; inst[$1] += $4; want[$2 " " $3] = parts[$3] }
      END {
        for (k in want) if (held[k] != want[k]) exit 1
        for (i in inst) if (inst[i] == 0) exit 1
        exit !length(want)
      }' "$RUN_DIR/topics-after.txt" - <<<"$series"; then
      return 0
    fi
    sleep 1
  done
  return 1
}

scale_back() {
  local entry
  for entry in $SCALE_INSTANCES; do
    stack scale "${entry%%=*}" 1 >>"$RUN_DIR/scale-stack.log" 2>&1 || die "stack.sh scale ${entry%%=*} 1 failed"
  done
  load_env
}

# ---- phase 6, continued: where the CPU goes at the highest sustained rate --------

# "tid part" for every live thread of every part (Postgres: the postmaster and
# every backend).
thread_parts() {
  local part pid task
  for part in "${PARTS[@]}"; do
    if [ "$part" = postgres ]; then
      pid=$(pid_of postgres)
      [ -n "$pid" ] || continue
      for task in $pid $(pgrep -P "$pid" || true); do echo "$task postgres"; done
    else
      pid=$(pid_of "$part")
      [ -n "$pid" ] || continue
      for task in /proc/"$pid"/task/*; do echo "${task##*/} $part"; done
    fi
  done
}

# perf samples all CPUs (no call graphs: only who and which side of the system
# call boundary) while loadgen offers the rate; profile.csv gets
# "part,user_pct,kernel_pct" of all samples, idle included.
profile_run() {
  local rate=$1 data=$RUN_DIR/perf.data prof
  if ! command -v perf >/dev/null 2>&1; then
    note "no perf (package linux-perf): the profile is skipped"
    return 0
  fi
  (sleep 3 && perf record -a -F 499 -o "$data" -- sleep "$PROFILE_S") \
    >"$RUN_DIR/perf-record.log" 2>&1 &
  prof=$!
  run_step profile "$rate" "$((PROFILE_S + 5))" "[profile]" || true
  if ! wait "$prof"; then
    note "perf record failed (see $RUN_DIR/perf-record.log): the profile is skipped"
    return 0
  fi
  thread_parts >"$RUN_DIR/profile-threads.txt"
  perf report -i "$data" --stdio --no-children --sort pid,dso 2>/dev/null |
    awk -v map="$RUN_DIR/profile-threads.txt" '
      BEGIN { while ((getline line < map) > 0) { split(line, f, " "); part[f[1]] = f[2] } }
      /^#/ || NF < 3 { next }
      {
        pct = $1; sub(/%/, "", pct)
        split($2, t, ":"); tid = t[1]; comm = substr($2, length(tid) + 2)
        p = part[tid]
        if (p == "") p = (comm == "swapper") ? "idle" : (comm == "postgres") ? "postgres" : \
                         (comm == "loadgen") ? "loadgen" : "other"
        side = ($3 == "[kernel.kallsyms]") ? "kernel" : "user"
        share[p, side] += pct; seen[p] = 1
      }
      END {
        print "part,user_pct,kernel_pct"
        for (p in seen) printf "%s,%.1f,%.1f\n", p, share[p, "user"], share[p, "kernel"]
      }' >"$RUN_DIR/profile.csv"
  rm -f "$data"
  note "profile: $(sort -t, -k2 -rn "$RUN_DIR/profile.csv" | awk -F, 'NR > 1 && NR < 5 { printf "%s %s+%s%%  ", $1, $2, $3 }')"
}

pg_top_statements() {
  psql_db postgres -At -F '|' -c "
    SELECT d.datname, s.calls, round(s.total_exec_time::numeric, 0),
           round(s.mean_exec_time::numeric, 3), round(s.total_plan_time::numeric, 0),
           replace(left(regexp_replace(s.query, '\s+', ' ', 'g'), 110), '|', '/')
    FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
    WHERE d.datname <> 'postgres'
    ORDER BY s.total_exec_time + s.total_plan_time DESC LIMIT 15" >"$RUN_DIR/pg-top.txt"
}

# The saga cut at the instants the services themselves recorded (occurredAt of
# each event, applied_at in the read model), for the latency run's orders.
saga_hops() {
  psql_db delivery_query -At -F, >"$RUN_DIR/hops.csv" <<SQL
CREATE TEMP TABLE lg (seq int, intended_us bigint, sent_us bigint, answered_us bigint,
  http_status int, order_id text, saga_us bigint, end_status text);
\copy lg FROM '$RUN_DIR/latency-orders.csv' CSV HEADER
WITH ev AS (
  SELECT e.order_id, e.event_type,
         (extract(epoch FROM e.occurred_at) * 1e6)::bigint AS occ,
         (extract(epoch FROM e.applied_at) * 1e6)::bigint AS app
  FROM order_events e
  WHERE e.order_id IN (SELECT order_id::uuid FROM lg WHERE order_id <> '')
), per AS (
  SELECT lg.intended_us, lg.answered_us, lg.saga_us,
    max(occ) FILTER (WHERE event_type = 'order.created') AS c,
    max(occ) FILTER (WHERE event_type = 'inventory.reserved') AS r,
    max(occ) FILTER (WHERE event_type = 'payment.authorized') AS a,
    max(occ) FILTER (WHERE event_type = 'delivery.assigned') AS d,
    max(app) FILTER (WHERE event_type = 'delivery.assigned') AS dv
  FROM lg JOIN ev ON ev.order_id = lg.order_id::uuid
  GROUP BY lg.seq, lg.intended_us, lg.answered_us, lg.saga_us
), hops AS (
  SELECT 1 AS k, 'POST (intended) -> order.created committed' AS hop, c - intended_us AS us FROM per
  UNION ALL SELECT 2, 'order.created -> inventory.reserved', r - c FROM per
  UNION ALL SELECT 3, 'inventory.reserved -> payment.authorized', a - r FROM per
  UNION ALL SELECT 4, 'payment.authorized -> delivery.assigned', d - a FROM per
  UNION ALL SELECT 5, 'delivery.assigned -> applied in the read model', dv - d FROM per
  UNION ALL SELECT 6, 'applied in the read model -> seen by the poller', saga_us - dv FROM per
  UNION ALL SELECT 7, 'saga as applied in the read model (exact)', dv - intended_us FROM per
  UNION ALL SELECT 8, 'saga as seen by the poller (reported)', saga_us - intended_us FROM per
)
SELECT k, hop, count(us),
       round((percentile_cont(0.5) WITHIN GROUP (ORDER BY us) / 1000)::numeric, 1),
       round((percentile_cont(0.95) WITHIN GROUP (ORDER BY us) / 1000)::numeric, 1),
       round((percentile_cont(0.99) WITHIN GROUP (ORDER BY us) / 1000)::numeric, 1),
       round((max(us) / 1000.0)::numeric, 1)
FROM hops WHERE us IS NOT NULL GROUP BY k, hop ORDER BY k;
\o '$RUN_DIR/events-per-order.txt'
SELECT round(count(*)::numeric / greatest(count(DISTINCT order_id), 1), 2) FROM order_events
WHERE order_id IN (SELECT order_id::uuid FROM lg WHERE order_id <> '');
SQL
}

# ---- phase 7: memory ---------------------------------------------------------------------

# "part peak_kb" of every running part into memory-peaks.txt, before
# fresh_broker replaces the processes: record_memory takes the largest.
keep_memory_peaks() {
  local part pid
  for part in "${SERVICES[@]}" broker; do
    pid=$(pid_of "$part")
    [ -n "$pid" ] || continue
    echo "$part $(memory_of "$pid" | cut -d' ' -f1)" >>"$RUN_DIR/memory-peaks.txt"
  done
}

record_memory() {
  local part pid peak rss kept
  echo "part,peak_rss_kb,rss_kb" >"$RUN_DIR/memory.csv"
  for part in "${SERVICES[@]}" broker redis; do
    pid=$(pid_of "$part")
    [ -n "$pid" ] || continue
    read -r peak rss <<<"$(memory_of "$pid")"
    kept=0
    if [ -s "$RUN_DIR/memory-peaks.txt" ]; then
      kept=$(awk -v p="$part" '$1 == p && $2 > m { m = $2 } END { print m + 0 }' \
        "$RUN_DIR/memory-peaks.txt")
    fi
    echo "$part,$((kept > peak ? kept : peak)),$rss" >>"$RUN_DIR/memory.csv"
  done
}

# ---- the run --------------------------------------------------------------------------------

# The command that made this run: make bench, with the settings it was given.
the_command() {
  local settings
  settings=$(env | grep -E '^BENCH_[A-Z_]+=' | sort | tr '\n' ' ')
  if [ "$BUILD_DIR" != build/release ]; then settings+="BUILD_DIR=$BUILD_DIR "; fi
  echo "${settings}make bench"
}

record_meta() {
  {
    echo "run_id=$RUN_ID"
    echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "dirty=$(git status --porcelain 2>/dev/null | grep -qv '^??' && echo yes || echo no)"
    echo "cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
    echo "cores=$(nproc)"
    echo "memory_mb=$(awk '/^MemTotal:/ { print int($2 / 1024) }' /proc/meminfo)"
    echo "load_before=$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "quick=$QUICK"
    echo "fresh_broker=$FRESH_BROKER"
    echo "rates=$RATES"
    echo "step_s=$STEP_S"
    echo "drain_s=$DRAIN_S"
    echo "p99_bound_ms=$P99_BOUND_MS"
    echo "p99_factor=$P99_FACTOR"
    echo "refine=$REFINE"
    echo "latency_s=$LATENCY_S"
    echo "connections=$CONNECTIONS"
    echo "gateway_ms=$GATEWAY_MS"
    echo "profile_s=$PROFILE_S"
    echo "log_level=$LOG_LEVEL"
    echo "scale_margin_pct=$SCALE_MARGIN_PCT"
    echo "model_rates=$MODEL_RATES"
    echo "model_headroom=$MODEL_HEADROOM"
    echo "model_instance_cores=$MODEL_INSTANCE_CORES"
    echo "kafka_partitions=${KAFKA_PARTITIONS:-6}"
    echo "command=$(the_command)"
  } >"$RUN_DIR/meta.env"
}

# The console's live streams, after the ramps (payment's gateway still slow, which
# moves the saga but not a feed row's way to its clients). Each figure is a
# key=value line of the programs' output, copied to result.env; streams.txt keeps
# the whole output.
measure_streams() {
  local out=$RUN_DIR/streams.txt conn
  conn="host=$PGHOST port=$PGPORT user=$PGUSER password=$PGPASSWORD dbname=delivery_query"
  echo "stream_limit=${QUERY_STREAM_MAX:-256}" >>"$out" # query-api's setting (its default)
  "$BIN/streambench" idle "$QUERY_API_URL" "$(pid_of query-api)" "$STREAMS_IDLE" >>"$out" ||
    note "streambench idle failed"
  "$BIN/streambench" delay "$QUERY_API_URL" "$ORDER_SERVICE_URL" sku-1 "$STREAM_ORDERS" \
    "$STREAM_RATE" "$conn" >>"$out" || note "streambench delay failed"
  if command -v node >/dev/null && [ -x "${CHROMIUM:-/usr/bin/chromium}" ] &&
    [ -d tests/browser/node_modules/puppeteer-core ]; then
    node bench/pagedelay.mjs sku-2 "$PAGE_ORDERS" "$PAGES" >>"$out" 2>>"$RUN_DIR/pagedelay.err" ||
      note "pagedelay failed (pagedelay.err)"
  else
    note "no page delay: node, chromium or tests/browser's npm install is missing (scripts/deps.sh)"
  fi
  grep -v '=' "$out" | sed 's/^/    /' >&2 || true
  grep -E '^[a-z0-9_]+=' "$out" >>"$RUN_DIR/result.env" || true
}

build() {
  cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDETA_SANITIZE=OFF >/dev/null
  cmake --build "$BUILD_DIR" -j "$JOBS" --target "${TARGETS[@]}" >"$RUN_DIR/build.log" 2>&1 ||
    { tail -n 30 "$RUN_DIR/build.log" >&2; die "build failed"; }
}

main() {
  mkdir -p "$RUN_DIR"
  : >"$RUN_DIR/result.env"
  trap finish EXIT
  record_meta
  validate_settings
  phase 1/11 "release build in $BUILD_DIR"
  build
  phase 2/11 "stack in $STACK_DIR (wiped), pg_stat_statements loaded"
  start_tracing
  start_stack
  phase 3/11 "time from launch to healthy, each service x$STARTUP_REPEATS"
  measure_startup
  measure_idle
  phase 4/11 "the machine's ceilings: pgbench and the broker"
  run_pgbench
  run_brokerbench
  echo "$STEP_CSV_HEADER" >"$RUN_DIR/steps.csv"
  phase 5/11 "rate ramp: $RATES orders/s, ${STEP_S}s each (+ warm-up)"
  run_step warmup 10 3 "[warm-up]" || true
  measure_baseline
  local max half gmax
  ramp ramp ramp
  max=$RAMP_BEST
  echo "max_sustained=$max" >>"$RUN_DIR/result.env"
  note "highest sustained rate: $max orders/s"
  half=$(calc "$max / 2")
  if [ "$(calc "$half >= 0.5")" = 1 ]; then
    phase 6/11 "latency run at half the maximum: $half orders/s for ${LATENCY_S}s"
    fresh_broker
    settle_postgres
    latency_run "$half"
    note "profile at $max orders/s for ${PROFILE_S}s"
    fresh_broker
    profile_run "$max"
  else
    phase 6/11 "latency run skipped: no rate was sustained"
  fi
  echo "latency_rate=$half" >>"$RUN_DIR/result.env"
  phase 7/11 "peak memory of every part"
  record_memory
  column -t -s, "$RUN_DIR/memory.csv" | sed 's/^/    /' >&2
  if [ "$SCALE_INSTANCES" = none ] || [ "$(calc "$half >= 0.5")" != 1 ]; then
    phase 8/11 "two instances: skipped (BENCH_SCALE_INSTANCES=none, or no rate sustained)"
  else
    phase 8/11 "the scaling model's claim: $SCALE_INSTANCES, latency run at $half orders/s again"
    scaled_run "$half"
  fi
  phase 9/11 "payment-service with a ${GATEWAY_MS} ms gateway: the ramp again"
  # payment-service starts again with the gateway, and this ramp is weighed
  # against the first, which started on a new broker: so does this one, with
  # every service started again (whatever BENCH_FRESH_BROKER says), rather than
  # on a broker whose every fetch walks the whole run's log (fresh_broker).
  export PAYMENT_GATEWAY_LATENCY_MS=$GATEWAY_MS
  [ "$FRESH_BROKER" = 1 ] || FRESH_BROKER=1 fresh_broker # with 1, ramp makes its own
  ramp gateway "gateway ${GATEWAY_MS}ms" "$(gateway_rates "$max")"
  export PAYMENT_GATEWAY_LATENCY_MS=0
  gmax=$RAMP_BEST
  echo "gateway_max_sustained=$gmax" >>"$RUN_DIR/result.env"
  note "highest sustained rate with the ${GATEWAY_MS} ms gateway: $gmax orders/s"
  phase 10/11 "the console's live streams: memory per stream, delay to a client and to a page"
  measure_streams
  echo "load_after=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$RUN_DIR/meta.env"
  echo "duration_s=$((SECONDS - T0))" >>"$RUN_DIR/meta.env"
  phase 11/11 "report"
  bench/report.sh "$RUN_DIR"
  publish_latest
}

# bench/results/latest/ gets the newest report and plot; every README with a
# bench:latest block gets the summary (only when the results are the project's
# own folder, not a BENCH_RESULTS elsewhere).
publish_latest() {
  rm -rf "$RESULTS/latest"
  mkdir -p "$RESULTS/latest"
  cp "$RUN_DIR/report.md" "$RUN_DIR/latency.png" "$RESULTS/latest/" 2>/dev/null || true
  note "report: $RUN_DIR/report.md (copied to $RESULTS/latest/)"
  [ "$(realpath -m "$RESULTS")" = "$ROOT/bench/results" ] || return 0
  local readme
  for readme in README.md bench/README.md; do
    grep -q '^<!-- bench:latest -->$' "$readme" 2>/dev/null || continue
    if [ "$readme" = bench/README.md ]; then
      sed 's|(bench/results/|(results/|g' "$RUN_DIR/latest-block.md" >"$RUN_DIR/latest-block-bench.md"
      replace_block "$readme" "$RUN_DIR/latest-block-bench.md"
    else
      replace_block "$readme" "$RUN_DIR/latest-block.md"
    fi
    note "$readme: latest figures updated"
  done
}

# Replaces the lines between <!-- bench:latest --> and <!-- /bench:latest -->.
replace_block() {
  local file=$1 block=$2 tmp
  tmp=$(mktemp "$file.XXXXXX")
  awk -v block="$block" '
    /^<!-- \/bench:latest -->$/ { skipping = 0 }
    !skipping { print }
    /^<!-- bench:latest -->$/ {
      while ((getline line < block) > 0) print line
      skipping = 1
    }' "$file" >"$tmp" && cat "$tmp" >"$file"
  rm -f "$tmp"
}

main "$@"
