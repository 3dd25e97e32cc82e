#!/usr/bin/env bash
# run.sh - the fuzz targets of tests/fuzz, each built with clang's libFuzzer under
# ASan and UBSan into build/fuzz, then run for FUZZ_SECONDS seconds (30 by default)
# from its seed corpus (tests/fuzz/corpus/<target>, only read unless FUZZ_MERGE=1)
# and the inputs earlier runs kept (build/fuzz/corpus-<target>). Any crash,
# overread, leak, undefined behaviour, broken invariant (the target aborts), or
# an allocation above FUZZ_MALLOC_MB (256) fails the run; the input that did it
# is left in build/fuzz/ as crash-*, leak-*, oom-*, timeout-* (replay:
# build/fuzz/fuzz_<target> FILE). Every target runs even when an earlier one
# failed; the exit status is non-zero when any did.
#
# FUZZ_TARGETS (all of them by default) picks the targets:
#   cql_frame      the CQL response frames (fuzz_cql_frame.c): the codec and the
#                  result getters
#   http_rules     the HTTP server's rules on outside bytes (fuzz_http_rules.c):
#                  static file paths, origins, the CORS allow-list
#   http_route     the router's path matching and path parameters, and the
#                  handlers' checks of those (fuzz_http_route.c)
#   stream_resume  query-api's stream resume point (fuzz_stream_resume.c): the
#                  Last-Event-ID parse and where a stream starts from it
#   envelope       the event envelope and ISO-8601 instants (fuzz_envelope.c)
#   payloads       every service's readers of event payloads and of the
#                  inventory stock bodies (fuzz_payloads.c), table-driven
#   order_request  order-service's order and cancel bodies, Idempotency-Key
#                  (fuzz_order_request.c)
#   query_params   query-api's list parameters and cursor (fuzz_query_params.c)
#   dead_letter    query-api's dead letters: message and headers to record, JSON
#                  and replay; the admin list's arguments, ids, bearer token
#                  (fuzz_dead_letter.c)
#   settings       settings values: the library's variables and the services'
#                  own parsers (fuzz_settings.c)
#   money          money text, JSON amounts and checked arithmetic (fuzz_money.c)
#   trace_context  the W3C traceparent and tracestate headers, the OTLP exporter's
#                  endpoint URL and its collector's status line (fuzz_trace_context.c)
#   kafka_stats    the consumer lag read from librdkafka's statistics JSON
#                  (fuzz_kafka_stats.c)
#   pgoutput       the logical replication stream the outbox relay reads: its
#                  CopyData frames, pgoutput's messages, WAL positions as text
#                  (fuzz_pgoutput.c)
# Only those files and what they need from lib/src and the services' pure rules
# are compiled: no service library, no server, no I/O.
#
# The targets are built JOBS (2) at a time. FUZZ_TOTAL_SECONDS, when set, is
# shared out equally among the targets instead of FUZZ_SECONDS (what `make fuzz`
# does, 600 by default). FUZZ_MERGE=1 (also
# `make fuzz`) merges, after each run, the inputs that add coverage into the
# seed corpus tests/fuzz/corpus/<target> (libFuzzer's -merge=1), for a developer
# to look at and commit; CI never sets it, so it never writes to the repository.
# At the end, a table per target: executions, executions per second, coverage
# (cov: edges, ft: features) and corpus size (libFuzzer's, and seed files).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

ALL_TARGETS="cql_frame http_rules http_route stream_resume envelope payloads order_request query_params dead_letter settings money trace_context kafka_stats pgoutput"
FUZZ_TARGETS=${FUZZ_TARGETS:-$ALL_TARGETS}
FUZZ_MALLOC_MB=${FUZZ_MALLOC_MB:-256}
FUZZ_MERGE=${FUZZ_MERGE:-0}
CLANG=${CLANG:-clang}
OUT=build/fuzz

if ! command -v "$CLANG" >/dev/null 2>&1; then
  echo "run.sh: $CLANG not found: install clang and libclang-rt-14-dev (scripts/deps.sh)" >&2
  exit 1
fi

# The pure rules of the envelope and payload readers, shared by several targets.
EVENT_SOURCES="lib/src/envelope.c lib/src/fields.c lib/src/money.c lib/src/timestamp.c lib/src/states.c lib/src/topics.c lib/src/err.c -ljansson -luuid"

# The library and service sources each target is built with.
sources_of() {
  case "$1" in
    cql_frame) echo lib/src/cql_codec.c lib/src/cql_values.c lib/src/err.c ;;
    http_rules) echo lib/src/http_static.c lib/src/http_cors.c lib/src/err.c ;;
    http_route) echo lib/src/http_match.c services/inventory-service/domain.c \
      services/query-api/deadletters/domain.c "$EVENT_SOURCES" ;;
    stream_resume) echo services/query-api/stream/sse.c services/query-api/stream/rules.c -ljansson ;;
    envelope) echo "$EVENT_SOURCES" ;;
    payloads) echo services/order-service/domain.c services/payment-service/domain.c \
      services/inventory-service/domain.c services/delivery-service/domain.c \
      services/query-api/domain.c "$EVENT_SOURCES" ;;
    order_request) echo services/order-service/domain.c services/inventory-service/domain.c \
      services/query-api/domain.c "$EVENT_SOURCES" ;;
    query_params) echo services/query-api/domain.c services/query-api/deadletters/domain.c \
      "$EVENT_SOURCES" ;;
    dead_letter) echo services/query-api/deadletters/domain.c "$EVENT_SOURCES" ;;
    settings) echo lib/src/config.c lib/src/config_kafka.c lib/src/auth.c lib/src/http_cors.c \
      lib/src/log.c lib/src/cql_values.c lib/src/trace_config.c lib/src/otlp_http.c \
      lib/src/trace_context.c lib/src/clock.c \
      services/order-service/settings.c services/payment-service/settings.c \
      services/inventory-service/settings.c services/delivery-service/settings.c \
      services/query-api/settings.c services/payment-service/domain.c \
      services/inventory-service/domain.c services/delivery-service/domain.c "$EVENT_SOURCES" ;;
    money) echo lib/src/money.c lib/src/err.c -ljansson ;;
    trace_context) echo lib/src/trace_context.c lib/src/otlp_http.c lib/src/clock.c ;;
    kafka_stats) echo lib/src/kafka_stats.c -ljansson ;;
    pgoutput) echo lib/src/pgoutput.c ;;
    *) echo "run.sh: no fuzz target $1 ($ALL_TARGETS)" >&2; return 1 ;;
  esac
}

build() {
  local target=$1 sources
  sources=$(sources_of "$target")
  echo "run.sh: building $OUT/fuzz_$target"
  # shellcheck disable=SC2086 # the sources are words
  if ! "$CLANG" -std=c11 -D_GNU_SOURCE -g -O1 -Wall -Wextra -Werror \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -fno-omit-frame-pointer -Ilib/include -Ilib/src -Iservices \
    "tests/fuzz/fuzz_$target.c" $sources -o "$OUT/fuzz_$target"; then
    echo "run.sh: fuzz_$target did not build (libFuzzer's runtime is in libclang-rt-14-dev)" >&2
    exit 1
  fi
}

count_files() { find "$1" -maxdepth 1 -type f | wc -l; }

# fuzz TARGET SECONDS: runs it; 1 when it found something.
fuzz() {
  local target=$1 seconds=$2 seeds=tests/fuzz/corpus/$1 corpus=$OUT/corpus-$1 status=0
  local log=$OUT/fuzz_$1.log dict=()
  mkdir -p "$corpus" "$seeds"
  case "$target" in
    envelope | payloads | order_request | kafka_stats) dict=("-dict=tests/fuzz/json.dict") ;;
  esac
  echo "run.sh: fuzzing $target for ${seconds}s from $seeds and $corpus"
  ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=0 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$OUT/fuzz_$target" -max_total_time="$seconds" -max_len=4096 \
    -malloc_limit_mb="$FUZZ_MALLOC_MB" -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$OUT/" "${dict[@]}" "$corpus" "$seeds" >"$log" 2>&1 || status=$?
  if [ "$status" -ne 0 ]; then
    tail -n 60 "$log" >&2
    echo "run.sh: FAILED: fuzz_$target stopped with status $status (log $log); the input is in $OUT/ (crash-*, leak-*, oom-*, timeout-*)" >&2
    return 1
  fi
  if [ "$FUZZ_MERGE" = 1 ]; then
    local before after
    before=$(count_files "$seeds")
    ASAN_OPTIONS=detect_leaks=1 "$OUT/fuzz_$target" -merge=1 -max_len=4096 \
      "$seeds" "$corpus" >"$OUT/fuzz_$target.merge.log" 2>&1 ||
      { echo "run.sh: merging $target's corpus failed ($OUT/fuzz_$target.merge.log)" >&2; return 1; }
    after=$(count_files "$seeds")
    echo "run.sh: $target: $((after - before)) new inputs merged into $seeds"
  fi
  echo "run.sh: $target: nothing found in ${seconds}s"
}

# One line of the table from a target's log.
stats() {
  local target=$1 log=$OUT/fuzz_$1.log execs rate done_line cov ft corp
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  done_line=$(grep -E '^#[0-9]+[[:space:]]+(DONE|pulse|NEW|REDUCE|INITED)' "$log" | tail -n 1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$done_line")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$done_line")
  corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p' <<<"$done_line")
  printf '%-14s %12s %9s %7s %7s %14s %6s\n' "$target" "${execs:--}" "${rate:--}" "${cov:--}" \
    "${ft:--}" "${corp:--}" "$(count_files "tests/fuzz/corpus/$target")"
}

mkdir -p "$OUT"
set -f
# shellcheck disable=SC2206 # the targets are words
targets=($FUZZ_TARGETS)
set +f
for target in "${targets[@]}"; do
  sources_of "$target" >/dev/null || exit 1
done
seconds=${FUZZ_SECONDS:-30}
if [ -n "${FUZZ_TOTAL_SECONDS:-}" ]; then
  seconds=$((FUZZ_TOTAL_SECONDS / ${#targets[@]}))
  [ "$seconds" -ge 1 ] || seconds=1
fi
# The builds, JOBS (2) at a time; the first that fails stops the run.
running=0
for target in "${targets[@]}"; do
  if [ "$running" -ge "${JOBS:-2}" ]; then
    wait -n || exit 1
    running=$((running - 1))
  fi
  build "$target" &
  running=$((running + 1))
done
while [ "$running" -gt 0 ]; do
  wait -n || exit 1
  running=$((running - 1))
done
failed=()
for target in "${targets[@]}"; do
  fuzz "$target" "$seconds" || failed+=("$target")
done
echo
printf '%-14s %12s %9s %7s %7s %14s %6s\n' target executions exec/s cov ft corp/bytes seeds
for target in "${targets[@]}"; do
  stats "$target"
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "run.sh: FAILED: ${failed[*]} (inputs in $OUT/: crash-*, leak-*, oom-*, timeout-*)" >&2
  exit 1
fi
