#!/usr/bin/env bash
# test-cassandra.sh - what `make test-cassandra` runs: query-api's Cassandra read
# model against a real Cassandra (or ScyllaDB) at CASSANDRA_CONTACT_POINTS, the
# checks that `make test` runs against the model CQL server only
# (tests/support/cql_model_server.py):
#
#   integration.test_query_view_fold        every order of arrival of six sets of
#                                            events, folded by the C fold, Postgres
#                                            and the real Cassandra, must agree
#   integration.test_query_api_cassandra    query-api on QUERY_STORE=cassandra, end
#                                            to end through Kafka and REST
#
# With no CASSANDRA_CONTACT_POINTS, or none that accepts a TCP connection, it says
# so and exits 77 ("skipped"): it never reports a pass it did not earn.
#
# Settings passed on to the tests and to the query-api they start:
# CASSANDRA_CONTACT_POINTS (host[:port],...), CASSANDRA_PORT (9042),
# CASSANDRA_USERNAME / CASSANDRA_PASSWORD, CASSANDRA_LOCAL_DC (dc1), and the
# consistency levels (services/query-api/settings.h). The tests create keyspaces
# it_query_api and it_query_fold_<pid> (SimpleStrategy, replication 1 unless
# CASSANDRA_REPLICATION_* say otherwise) and leave them: drop them with cqlsh.
#
# It builds build/asan and runs a test stack of its own (.local/test-cassandra,
# ports 45432, 46379, 48080..48084) for Postgres and Kafka, brought down at the
# end whatever happens.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

SKIP=77
if [ -z "${CASSANDRA_CONTACT_POINTS:-}" ]; then
  echo "test-cassandra: CASSANDRA_CONTACT_POINTS is not set: no Cassandra to test against." >&2
  echo "test-cassandra: NOT RUN (exit $SKIP). Set it to host[:port],... of a running node." >&2
  exit "$SKIP"
fi

# The first contact point that accepts a connection, or none.
reachable() {
  local point host port
  IFS=',' read -r -a points <<<"$CASSANDRA_CONTACT_POINTS"
  for point in "${points[@]}"; do
    host=${point%:*}
    port=${CASSANDRA_PORT:-9042}
    [ "$host" != "$point" ] && port=${point##*:}
    if timeout 3 bash -c ": >/dev/tcp/$host/$port" 2>/dev/null; then
      echo "$host:$port"
      return 0
    fi
  done
  return 1
}

if ! node=$(reachable); then
  echo "test-cassandra: no contact point of CASSANDRA_CONTACT_POINTS=$CASSANDRA_CONTACT_POINTS" \
       "accepts a connection (CASSANDRA_PORT=${CASSANDRA_PORT:-9042})." >&2
  echo "test-cassandra: NOT RUN (exit $SKIP)." >&2
  exit "$SKIP"
fi
echo "test-cassandra: Cassandra answers at $node"

JOBS=${JOBS:-2}
ASAN_BUILD=build/asan
export ASAN_OPTIONS=detect_leaks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export STACK_DIR=.local/test-cassandra BUILD_DIR=$ASAN_BUILD
export DELIVERY_CLOCK_SPEED=${DELIVERY_CLOCK_SPEED:-600}
export PG_PORT=45432 REDIS_PORT=46379 QUERY_API_PORT=48080 ORDER_SERVICE_PORT=48081 \
  PAYMENT_SERVICE_PORT=48082 INVENTORY_SERVICE_PORT=48083 DELIVERY_SERVICE_PORT=48084
# The tests take the real Cassandra instead of starting the model server.
export TEST_CASSANDRA_CONTACT_POINTS=$CASSANDRA_CONTACT_POINTS

cmake -S . -B "$ASAN_BUILD" -DDETA_SANITIZE=ON
cmake --build "$ASAN_BUILD" -j "$JOBS"

scripts/stack.sh down >/dev/null 2>&1 || true
scripts/stack.sh clean
trap 'scripts/stack.sh down' EXIT
scripts/stack.sh up
set -a
# shellcheck disable=SC1091
. "$STACK_DIR/stack.env"
set +a
status=0
ctest --test-dir "$ASAN_BUILD" --output-on-failure --timeout 1800 \
  -R '^integration\.(test_query_view_fold|test_query_api_cassandra)$' || status=$?
if grep -n -E 'ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:' \
     "$STACK_DIR"/logs/*.log; then
  echo "test-cassandra: sanitizer reports in $STACK_DIR/logs (lines above)" >&2
  status=1
fi
if [ "$status" -eq 0 ]; then
  echo "test-cassandra: passed against $node"
else
  echo "test-cassandra: FAILED against $node" >&2
fi
exit "$status"
