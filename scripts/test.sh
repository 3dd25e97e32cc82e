#!/usr/bin/env bash
# test.sh - what `make test` (and CI) runs: every test, under the sanitizers.
#
#   1. dependencies (scripts/deps.sh: does nothing when all is installed);
#   2. configure and build with -DDETA_SANITIZE=ON (ASan + UBSan) in build/asan;
#   3. unit tests: ctest -L unit (no server needed; among them the alert rules'
#      promtool tests, tests/observability);
#   4. every fuzz target (tests/fuzz/run.sh: clang's libFuzzer, ASan, UBSan)
#      for FUZZ_SECONDS (5) seconds each, from the seeds in tests/fuzz/corpus;
#   5. a test stack of its own (.local/test, wiped first so that runs are
#      independent; ports 25432, 26379 and 28080..28084 preferred, so that a
#      developer's `make up` stack is left alone) built from build/asan, so the
#      services and the broker run instrumented too, with Postgres over TLS only
#      (PG_TLS=on, also for the chaos and images stacks), and Prometheus
#      (STACK_OBSERVE=on, port 29090: scripts/observe.sh); its stack.env is exported;
#   6. integration tests: ctest -L integration against that stack, then every
#      metric name of the alert rules and the dashboard checked against what the
#      stack's services expose, and Prometheus scraping them all with every rule
#      loaded (tests/observability/check_stack.py), then the
#      web console's browser tests (ctest -L browser: Debian's chromium driven
#      by puppeteer-core, the page served by the stack's query-api; one of them
#      restarts query-api), then the fault tests (ctest -L faults), which stop,
#      kill and restart its parts, and last the broker restarted as a cluster of
#      three brokers for the failover test (ctest -L cluster);
#   7. the stack is brought down (always, by trap, even on failure or ^C), and
#      its logs are searched for sanitizer reports: a service that leaked or
#      hit undefined behaviour fails the run even when every test passed;
#   8. the chaos test (scripts/chaos.sh) at CI size, CHAOS_ORDERS (600) orders
#      while services, Redis and Postgres are killed at random and one broker
#      of three is lost and comes back, on a stack of its own (.local/chaos),
#      whose logs it scans the same way;
#   9. the container images (tests/deploy/images.sh): the five built with
#      podman from infra/docker/Dockerfile as compose builds them, checked, and
#      run with a saga through them against a stack of their own
#      (.local/images); every container and image it made is removed;
#  10. no secret in a log (scripts/scan-secrets.sh): the passwords and tokens of
#      each of the three stacks (their secrets.env) are searched for in that
#      stack's logs, and the test stack's also in ctest's logs (build/asan/Testing).
# Every step runs even when an earlier test step failed (a build failure stops
# the run); the exit status is non-zero when anything failed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

JOBS=${JOBS:-2}
ASAN_BUILD=build/asan
export ASAN_OPTIONS=detect_leaks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export STACK_DIR=.local/test BUILD_DIR=$ASAN_BUILD
# The services of the test stack: the delivery clock runs 600x so that a delivery
# completes in seconds; the gateway declines customers named decline-*.
export DELIVERY_CLOCK_SPEED=${DELIVERY_CLOCK_SPEED:-600}
export PAYMENT_DECLINE_CUSTOMERS=${PAYMENT_DECLINE_CUSTOMERS:-decline-*}
# Postgres over TLS only (stack.sh's PG_TLS): every integration test proves that
# the services and the tests connect with verify-full against the stack's CA.
export PG_TLS=${PG_TLS:-on}
test_ports() {
  export PG_PORT=25432 REDIS_PORT=26379 QUERY_API_PORT=28080 ORDER_SERVICE_PORT=28081 \
    PAYMENT_SERVICE_PORT=28082 INVENTORY_SERVICE_PORT=28083 DELIVERY_SERVICE_PORT=28084
  export PROMETHEUS_PORT=29090
}
test_ports

FAILED=()
step() { printf '\n==> %s\n' "$*"; }
fail() { FAILED+=("$1"); printf '==> FAILED: %s\n' "$1" >&2; }

stack_down() {
  step "stopping the test stack"
  scripts/stack.sh down || fail "stopping the test stack"
}

# Lines of the test stack's logs that report a sanitizer error.
scan_sanitizer_logs() {
  local logs=("$STACK_DIR"/logs/*.log)
  [ -e "${logs[0]}" ] || return 0
  if grep -n -E 'ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:' "${logs[@]}"; then
    fail "sanitizer reports in $STACK_DIR/logs (lines above)"
  else
    echo "no sanitizer reports in $STACK_DIR/logs"
  fi
}

main() {
  step "dependencies"
  scripts/deps.sh

  step "build with sanitizers in $ASAN_BUILD"
  cmake -S . -B "$ASAN_BUILD" -DDETA_SANITIZE=ON
  cmake --build "$ASAN_BUILD" -j "$JOBS"

  step "unit tests"
  ctest --test-dir "$ASAN_BUILD" -L unit --output-on-failure || fail "unit tests"

  step "fuzzing every parser of outside bytes (tests/fuzz/run.sh, ${FUZZ_SECONDS:-5}s per target)"
  FUZZ_SECONDS=${FUZZ_SECONDS:-5} tests/fuzz/run.sh || fail "fuzzing (tests/fuzz/run.sh)"

  step "test stack in $STACK_DIR (previous data removed)"
  scripts/stack.sh down >/dev/null 2>&1 || true
  scripts/stack.sh clean
  trap stack_down EXIT
  if STACK_OBSERVE=on scripts/stack.sh up; then
    STACK_VARS=$(sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/\1/p' "$STACK_DIR/stack.env")
    set -a
    # shellcheck disable=SC1091
    . "$STACK_DIR/stack.env"
    set +a
    step "integration tests"
    ctest --test-dir "$ASAN_BUILD" -L integration --output-on-failure || fail "integration tests"
    step "metrics of the alert rules and the dashboard on the stack (tests/observability/check_stack.py)"
    python3 tests/observability/check_stack.py "$ASAN_BUILD/observability" \
      || fail "rules' and dashboard's metrics on the stack"
    step "browser tests (screenshots in $ASAN_BUILD/browser-shots)"
    ctest --test-dir "$ASAN_BUILD" -L browser --output-on-failure || fail "browser tests"
    step "fault tests"
    ctest --test-dir "$ASAN_BUILD" -L faults --output-on-failure --no-tests=ignore \
      || fail "fault tests"
    step "fault tests on a cluster of three brokers (the broker restarted with KAFKA_BROKERS=3)"
    # Last: the broker's restart gives it a new address, which the tests before
    # would not know; the services are restarted by stack.sh for it.
    { KAFKA_BROKERS=3 scripts/stack.sh stop broker && KAFKA_BROKERS=3 scripts/stack.sh start broker; } \
      || fail "restarting the broker as three brokers"
    set -a
    # shellcheck disable=SC1091
    . "$STACK_DIR/stack.env"
    set +a
    ctest --test-dir "$ASAN_BUILD" -L cluster --output-on-failure || fail "fault tests on three brokers"
  else
    fail "starting the test stack"
  fi
  trap - EXIT
  stack_down
  # The stacks below are others: none of this one's addresses, passwords, tokens
  # or CA (PGSSLROOTCERT) may leak into them.
  local v
  for v in ${STACK_VARS:-}; do unset "$v"; done
  export STACK_DIR=.local/test BUILD_DIR=$ASAN_BUILD
  test_ports

  step "sanitizer reports in the stack's logs"
  scan_sanitizer_logs

  step "chaos test (scripts/chaos.sh, ${CHAOS_ORDERS:-600} orders)"
  STACK_DIR=.local/chaos BUILD_DIR=$ASAN_BUILD CHAOS_ORDERS=${CHAOS_ORDERS:-600} \
    scripts/chaos.sh || fail "chaos test"

  step "container images (tests/deploy/images.sh)"
  BUILD_DIR=$ASAN_BUILD tests/deploy/images.sh || fail "container images"

  step "no secret in the logs (scripts/scan-secrets.sh)"
  scripts/scan-secrets.sh .local/test "$ASAN_BUILD/Testing" || fail "secrets in the test stack's logs"
  scripts/scan-secrets.sh .local/chaos || fail "secrets in the chaos stack's logs"
  if [ -e .local/images/secrets.env ]; then
    scripts/scan-secrets.sh .local/images || fail "secrets in the images stack's logs"
  fi

  if [ "${#FAILED[@]}" -gt 0 ]; then
    printf '\n==> test.sh: FAILED: %s\n' "$(IFS=';'; echo "${FAILED[*]}")" >&2
    exit 1
  fi
  printf '\n==> test.sh: all passed\n'
}

main "$@"
