#!/usr/bin/env bash
# demo.sh - the system at work, end to end, on this machine (`make demo`).
#
# For now the first leg of the saga: build (release), bring the local stack
# up, post 20 orders to order-service, show the HTTP statuses, then read the
# events back from raw.order-events with kcat and count them. The stack is
# stopped at the end unless KEEP=1 or --keep is given (then explore it with
# scripts/stack.sh status / env, and stop it with make down).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

ORDERS=20
KEEP=${KEEP:-0}
JOBS=${JOBS:-2}
export BUILD_DIR=build/release
ORDER_BODY='{"customerId":"c-1","currency":"USD","items":[{"itemId":"sku-1","quantity":2,"unitPrice":"9.99"}]}'

step() { printf '\n==> %s\n' "$*"; }
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

stop_stack() {
  if [ "$KEEP" = 1 ]; then
    step "the stack keeps running (KEEP=1): scripts/stack.sh status; stop it with make down"
  else
    step "stopping the stack (KEEP=1 or --keep leaves it running)"
    scripts/stack.sh down
  fi
}

# Posts the orders; prints each status; sets CREATED to the number of 201s.
post_orders() {
  local i code body
  CREATED=0
  body=$(mktemp)
  for ((i = 1; i <= ORDERS; i++)); do
    code=$(curl -sS -o "$body" -w '%{http_code}' --max-time 10 \
      -H 'Content-Type: application/json' -d "$ORDER_BODY" "$ORDER_SERVICE_URL/api/orders") ||
      code=000
    if [ "$code" = 201 ]; then
      printf 'order %2d: HTTP %s %s\n' "$i" "$code" "$(grep -o '"orderId":"[^"]*"' "$body" | head -n 1)"
    else
      printf 'order %2d: HTTP %s %s\n' "$i" "$code" "$(head -c 300 "$body")"
    fi
    if [ "$code" = 201 ]; then CREATED=$((CREATED + 1)); fi
  done
  rm -f "$body"
}

# Messages on raw.order-events, from the beginning.
count_order_events() {
  kcat -C -b "$KAFKA_BOOTSTRAP_SERVERS" -t raw.order-events -o beginning -e -q 2>/dev/null | wc -l
}

# Waits (up to 20 s: events leave through the outbox) until at least $1 events
# are on the topic; prints the count seen last.
wait_for_events() {
  local want=$1 n=0 deadline=$((SECONDS + 20))
  while ((SECONDS < deadline)); do
    n=$(count_order_events)
    ((n >= want)) && break
    sleep 0.5
  done
  echo "$n"
}

main() {
  case "${1:-}" in
    --keep) KEEP=1 ;;
    "") ;;
    *) die "usage: scripts/demo.sh [--keep]   (or KEEP=1)" ;;
  esac

  step "dependencies"
  scripts/deps.sh
  step "release build in $BUILD_DIR"
  cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$BUILD_DIR" -j "$JOBS"
  [ -x "$BUILD_DIR/services/order-service" ] ||
    die "order-service was not built ($BUILD_DIR/services/order-service missing)"

  step "local stack"
  trap stop_stack EXIT
  scripts/stack.sh up || die "the stack did not come up (see the messages above)"
  set -a
  # shellcheck disable=SC1091
  . "${STACK_DIR:-.local}/stack.env"
  set +a
  [ -n "${ORDER_SERVICE_URL:-}" ] || die "order-service is not running"

  step "posting $ORDERS orders to $ORDER_SERVICE_URL/api/orders"
  post_orders
  echo "$CREATED of $ORDERS orders created (201)"

  step "reading raw.order-events back with kcat from $KAFKA_BOOTSTRAP_SERVERS"
  local events
  events=$(wait_for_events "$CREATED")
  kcat -C -b "$KAFKA_BOOTSTRAP_SERVERS" -t raw.order-events -o beginning -e -q -c 1 2>/dev/null |
    sed 's/^/first event: /' || true
  echo "$events events on raw.order-events"

  [ "$CREATED" -eq "$ORDERS" ] || die "only $CREATED of $ORDERS orders were created"
  ((events >= CREATED)) || die "$CREATED orders created but only $events events published"
  step "demo passed: $CREATED orders, $events events"
}

main "$@"
