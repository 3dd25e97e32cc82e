#!/usr/bin/env bash
# demo.sh - the system at work, end to end, on this machine (`make demo`).
#
#   scripts/demo.sh [--keep]        ORDERS=300 CONCURRENCY=8 KEEP=0 JOBS=2
#                                   DEMO_CANCELS=ORDERS/20 (orders the demo cancels)
#
# 1. dependencies (scripts/deps.sh), 2. a release build in build/release,
# 3. the local stack (.local) with every service, 4. `deta-cli demo`: ORDERS
# orders through the whole saga, then a report of end states, stock, latencies
# and where to look next, 5. the stack is stopped unless KEEP=1 or --keep.
# The web console's address (http://localhost:<query-api's port>/, stack.env's
# CONSOLE_URL) is printed once the stack is up, and again at the end with KEEP=1,
# when the stack, and so the console, stays up.
#
# Design. The work is in deta-cli (tools/deta-cli): this script only prepares
# the ground. The services get the demo's settings unless the caller set them:
# a delivery clock 600 times faster (a 30-minute delivery takes 3 s) and a
# payment gateway that declines customers named decline-* and amounts above
# 10000.00, and never at random, so that the report's numbers can be checked.
# When .local's stack is already running (make up), the demo uses it as it is
# and leaves it running: it is the developer's, not ours. A stack this script
# started is stopped on every exit, failure and ^C included (trap), unless
# KEEP=1. The exit status is deta-cli's: 0 only when every order reached an
# end state and the numbers add up.
# DEMO_STACK_DIR and DEMO_BUILD_DIR move the stack and the build elsewhere
# (with the *_PORT variables), to try this script without touching .local.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

ORDERS=${ORDERS:-300}
CONCURRENCY=${CONCURRENCY:-8}
DEMO_CANCELS=${DEMO_CANCELS:-$((ORDERS / 20))}
KEEP=${KEEP:-0}
JOBS=${JOBS:-2}
export STACK_DIR=${DEMO_STACK_DIR:-.local}
export BUILD_DIR=${DEMO_BUILD_DIR:-build/release}
export DELIVERY_CLOCK_SPEED=${DELIVERY_CLOCK_SPEED:-600}
# 10 drivers with room for 2 deliveries each: a burst of orders waits for drivers
# (DELIVERY_WAITING in the read model) and is served first paid, first served.
export DELIVERY_DRIVERS=${DELIVERY_DRIVERS:-10} DELIVERY_DRIVER_CAPACITY=${DELIVERY_DRIVER_CAPACITY:-2}
export PAYMENT_DECLINE_CUSTOMERS=${PAYMENT_DECLINE_CUSTOMERS:-decline-*}
export PAYMENT_DECLINE_ABOVE=${PAYMENT_DECLINE_ABOVE:-10000.00}
export PAYMENT_DECLINE_RATE=${PAYMENT_DECLINE_RATE:-0}
. "$ROOT/scripts/services.sh"
deta_services_load
TARGETS=(local-broker deta-cli "${SERVICES[@]}")
STARTED_STACK=0

step() { printf '\n==> %s\n' "$*"; }
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

# On every exit: stop the stack if we started it and KEEP is not set.
finish() {
  local status=$?
  if [ "$STARTED_STACK" != 1 ]; then
    exit "$status"
  fi
  if [ "$KEEP" = 1 ]; then
    step "the stack keeps running (KEEP=1): scripts/stack.sh status; stop it with make down"
    if [ -n "${CONSOLE_URL:-}" ]; then echo "the web console stays at $CONSOLE_URL"; fi
  else
    step "stopping the stack (KEEP=1 or --keep leaves it running)"
    scripts/stack.sh down || true
  fi
  exit "$status"
}

# True when STACK_DIR's stack runs already: its settings exist and its
# order-service answers its health check.
stack_running() {
  local env=$STACK_DIR/stack.env url
  [ -r "$env" ] || return 1
  url=$(sed -n "s/^ORDER_SERVICE_URL='\{0,1\}\([^']*\)'\{0,1\}$/\1/p" "$env")
  [ -n "$url" ] && curl -fsS -o /dev/null --max-time 2 "$url/actuator/health" 2>/dev/null
}

load_stack_env() {
  set -a
  # shellcheck disable=SC1091
  . "$STACK_DIR/stack.env"
  set +a
}

# Every service must run, or the saga stops halfway: say which does not.
check_services() {
  local s var missing=()
  for s in "${SERVICES[@]}"; do
    var=${s//-/_}
    var=${var^^}_URL
    [ -n "${!var:-}" ] || missing+=("$s")
  done
  [ "${#missing[@]}" -eq 0 ] ||
    die "not running: ${missing[*]} (see $STACK_DIR/logs/; scripts/stack.sh status)"
}

main() {
  case "${1:-}" in
    --keep) KEEP=1 ;;
    "") ;;
    *) printf 'usage: scripts/demo.sh [--keep]   (or KEEP=1; ORDERS=N)\n' >&2; exit 2 ;;
  esac

  step "dependencies"
  scripts/deps.sh
  step "release build in $BUILD_DIR"
  cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDETA_SANITIZE=OFF >/dev/null
  cmake --build "$BUILD_DIR" -j "$JOBS" --target "${TARGETS[@]}"

  step "local stack in $STACK_DIR"
  trap finish EXIT
  if stack_running; then
    echo "the stack in $STACK_DIR is running already: using it as it is (and leaving it up)"
  else
    STARTED_STACK=1
    echo "delivery clock x$DELIVERY_CLOCK_SPEED, $DELIVERY_DRIVERS drivers x $DELIVERY_DRIVER_CAPACITY; the gateway declines '$PAYMENT_DECLINE_CUSTOMERS'" \
      "and amounts above $PAYMENT_DECLINE_ABOVE"
    scripts/stack.sh up || die "the stack did not come up (see the messages above)"
  fi
  load_stack_env
  check_services
  # The console (docs/console.md), worth opening while the orders go through.
  echo "the web console: ${CONSOLE_URL:-http://localhost:${QUERY_API_PORT:-8080}/}"

  step "deta-cli demo: $ORDERS orders, $DEMO_CANCELS of them cancelled"
  "$BUILD_DIR/tools/deta-cli" demo --orders "$ORDERS" --concurrency "$CONCURRENCY" \
    --cancels "$DEMO_CANCELS"
}

main "$@"
