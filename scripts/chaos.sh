#!/usr/bin/env bash
# chaos.sh - the chaos test: orders under random kill -9, then the invariants.
#
#   scripts/chaos.sh                  # 600 orders in 100 s, ~20 faults: 2 to 3 minutes
#   CHAOS_ORDERS=20000 CHAOS_RATE=20 DELIVERY_DRIVERS=40 CHAOS_CONVERGE_S=1200 \
#     BUILD_DIR=build/release scripts/chaos.sh  # a long one (scripts/README.md)
#
# What it does:
#   1. a stack of its own in $STACK_DIR (default .local/chaos, wiped first so
#      that runs are independent) from $BUILD_DIR (default build/asan: the
#      services run under ASan/UBSan), on ports of its own (CHAOS_PORT_BASE,
#      default 29000: Postgres +432, Redis +379, services +80..+84, further
#      instances 10 above), with the services' test settings (delivery clock
#      600x, gateway declining customers decline-*); CHAOS_INSTANCES
#      ("payment-service=2 ...") runs several instances of services;
#   2. the chaos program ($BUILD_DIR/tests/chaos, tests/chaos/chaos.c) places the
#      orders while killing and restarting parts at random, waits for the
#      system to settle and checks every database; its report goes to the
#      terminal and to $STACK_DIR/chaos.out, what stack.sh said while it killed
#      and restarted parts to $STACK_DIR/chaos-stack.out;
#   3. the stack is brought down (always, by trap; CHAOS_KEEP=1 leaves it up
#      for a look) and its logs are searched for sanitizer reports, as
#      scripts/test.sh does: a leak or undefined behaviour fails the run.
# Exit status: non-zero when an invariant was violated, a sanitizer reported,
# or the stack could not be started.
#
# The program's settings pass through the environment (tests/chaos/chaos.c):
# CHAOS_ORDERS (600), CHAOS_THREADS (4), CHAOS_RATE (6 orders/s; 0 = as fast as
# answered), CHAOS_SEED (the time; printed, so a run's orders can be repeated),
# CHAOS_KILL_MIN_MS / CHAOS_KILL_MAX_MS (1000 / 4000 between kills),
# CHAOS_DOWN_MIN_MS / CHAOS_DOWN_MAX_MS (0 / 2000 before the restart),
# CHAOS_GRACEFUL (20: percent of the faults that are a SIGTERM stop instead),
# CHAOS_FAULT_S (0: faults go on at least this many seconds, even after the
# orders are placed), CHAOS_BROKERS (3: the local Kafka cluster's brokers, each
# partition replicated on three), CHAOS_TARGETS (default: postgres, redis, every
# running service instance and, with more than one broker, "one-broker": one
# broker lost and back, its partitions' leaders moving away and back; "broker"
# adds outages of every broker at once),
# CHAOS_CONVERGE_S (300: patience for the system to settle),
# CHAOS_CANCEL_SHARE (0.15: the share of orders also cancelled, at stages drawn
# from after create, reserved, paid, assigned and picked up),
# CHAOS_GATEWAY_LATENCY_MS (300: the simulated gateway's, so that faults hit
# calls in flight; every charge is counted in the stack's gateway ledger).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

export STACK_DIR=${STACK_DIR:-.local/chaos}
export BUILD_DIR=${BUILD_DIR:-build/asan}
BASE=${CHAOS_PORT_BASE:-29000}
export PG_PORT=$((BASE + 432)) REDIS_PORT=$((BASE + 379)) QUERY_API_PORT=$((BASE + 80)) \
  ORDER_SERVICE_PORT=$((BASE + 81)) PAYMENT_SERVICE_PORT=$((BASE + 82)) \
  INVENTORY_SERVICE_PORT=$((BASE + 83)) DELIVERY_SERVICE_PORT=$((BASE + 84))
export DELIVERY_CLOCK_SPEED=${DELIVERY_CLOCK_SPEED:-600}
# Postgres is killed with SIGKILL again and again: frequent checkpoints keep its
# crash recovery short, and a loaded machine gets more patience for a restart.
export PG_CHECKPOINT_TIMEOUT=${PG_CHECKPOINT_TIMEOUT:-30s} STACK_TIMEOUT=${STACK_TIMEOUT:-90}
# A fleet too small for the load (10 slots for about 4 paid orders a second, each
# delivery 1-6 s): orders wait for a driver, and must all be delivered anyway.
export DELIVERY_DRIVERS=${DELIVERY_DRIVERS:-5} DELIVERY_DRIVER_CAPACITY=${DELIVERY_DRIVER_CAPACITY:-2}
export PAYMENT_DECLINE_CUSTOMERS='decline-*'
# A gateway slow enough that Postgres and payment-service are often killed while
# calls are in flight; its ledger is the count of charges the verification reads.
export PAYMENT_GATEWAY_LATENCY_MS=${CHAOS_GATEWAY_LATENCY_MS:-300}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export STACK_INSTANCES=${CHAOS_INSTANCES:-}
export KAFKA_BROKERS=${CHAOS_BROKERS:-3}
# Another stack's settings must not leak in from a sourced stack.env: only
# this stack's ports (instances' follow from the services').
unset STACK_SERVICES
for var in $(compgen -v | grep -E '^[A-Z_]+_[0-9]+_(PORT|URL)$' || true); do unset "$var"; done

STACK=scripts/stack.sh
PROGRAM=$BUILD_DIR/tests/chaos
case "$STACK_DIR" in
  /*) ABS_STACK_DIR=$STACK_DIR ;;
  *) ABS_STACK_DIR=$ROOT/$STACK_DIR ;;
esac
export PAYMENT_GATEWAY_LEDGER=$ABS_STACK_DIR/payment-gateway.ledger

say() { printf 'chaos.sh: %s\n' "$*"; }

# Lines of the stack's logs that report a sanitizer error.
scan_sanitizer_logs() {
  local logs=("$ABS_STACK_DIR"/logs/*.log)
  [ -e "${logs[0]}" ] || return 0
  if grep -n -E 'ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:' "${logs[@]}"; then
    say "sanitizer reports in $ABS_STACK_DIR/logs (lines above)"
    return 1
  fi
  say "no sanitizer reports in $ABS_STACK_DIR/logs"
}

stack_down() {
  if [ "${CHAOS_KEEP:-0}" = 1 ]; then
    say "CHAOS_KEEP=1: the stack stays up (STACK_DIR=$STACK_DIR $STACK down to stop it)"
  else
    "$STACK" down >/dev/null || say "stopping the stack failed"
  fi
}

# The parts the killer may choose: Postgres, Redis, every running service
# instance, and one broker of several (the broker process keeps its data only in
# memory: killing it is a different test).
default_targets() {
  "$STACK" status | awk 'NR > 1 && $4 == "running" && $1 != "broker" { print $1 }' |
    tr '\n' ' '
  if [ "$KAFKA_BROKERS" -gt 1 ]; then printf 'one-broker'; fi
}

main() {
  [ -x "$PROGRAM" ] || { say "no $PROGRAM: build first (cmake --build $BUILD_DIR)"; exit 2; }
  say "a stack of its own in $STACK_DIR from $BUILD_DIR (previous data removed)"
  "$STACK" down >/dev/null 2>&1 || true
  "$STACK" clean >/dev/null
  trap stack_down EXIT
  mkdir -p "$ABS_STACK_DIR"
  if ! "$STACK" up >"$ABS_STACK_DIR/chaos-stack.out" 2>&1; then
    cat "$ABS_STACK_DIR/chaos-stack.out" >&2
    say "the stack did not start"
    exit 2
  fi
  set -a
  # shellcheck disable=SC1091
  . "$ABS_STACK_DIR/stack.env"
  set +a
  export CHAOS_TARGETS=${CHAOS_TARGETS:-$(default_targets)}
  export CHAOS_STACK_SH=$ROOT/$STACK CHAOS_STACK_LOG=$ABS_STACK_DIR/chaos-stack.out
  local status=0
  "$PROGRAM" 2>&1 | tee "$ABS_STACK_DIR/chaos.out" || status=$?
  trap - EXIT
  stack_down
  if [ "${CHAOS_KEEP:-0}" != 1 ]; then scan_sanitizer_logs || status=1; fi
  if [ "$status" -eq 0 ]; then say "passed"; else say "FAILED (status $status)"; fi
  exit "$status"
}

main "$@"
