#!/usr/bin/env bash
# run.sh - the fuzz targets of tests/fuzz, each built with clang's libFuzzer under
# ASan and UBSan into build/fuzz, then run for FUZZ_SECONDS seconds (30 by default)
# from its seed corpus (tests/fuzz/corpus/<target>, only read) and the inputs
# earlier runs kept (build/fuzz/corpus for cql_frame, build/fuzz/corpus-<target>
# for the others). Any crash, overread, leak, undefined behaviour, or an allocation
# above FUZZ_MALLOC_MB (256) fails the run; the input that did it is left in
# build/fuzz/ as crash-*, leak-*, oom-* (replay: build/fuzz/fuzz_<target> FILE).
#
# FUZZ_TARGETS ("cql_frame http_rules stream_resume") picks the targets:
#   cql_frame      the CQL response frames (fuzz_cql_frame.c): the codec and the
#                  result getters
#   http_rules     the HTTP server's rules on outside bytes (fuzz_http_rules.c):
#                  static file paths, origins, the CORS allow-list
#   stream_resume  query-api's stream resume point (fuzz_stream_resume.c): the
#                  Last-Event-ID parse and where a stream starts from it
# Only those files and what they need from lib/src (and query-api's stream/ rules)
# are compiled: no service library, no server.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

FUZZ_SECONDS=${FUZZ_SECONDS:-30}
FUZZ_MALLOC_MB=${FUZZ_MALLOC_MB:-256}
FUZZ_TARGETS=${FUZZ_TARGETS:-cql_frame http_rules stream_resume}
CLANG=${CLANG:-clang}
OUT=build/fuzz

if ! command -v "$CLANG" >/dev/null 2>&1; then
  echo "run.sh: $CLANG not found: install clang and libclang-rt-14-dev (scripts/deps.sh)" >&2
  exit 1
fi

# The library sources each target is built with.
sources_of() {
  case "$1" in
    cql_frame) echo lib/src/cql_codec.c lib/src/cql_values.c lib/src/err.c ;;
    http_rules) echo lib/src/http_static.c lib/src/http_cors.c lib/src/err.c ;;
    stream_resume) echo services/query-api/stream/sse.c services/query-api/stream/rules.c -ljansson ;;
    *) echo "run.sh: no fuzz target $1 (cql_frame, http_rules, stream_resume)" >&2; return 1 ;;
  esac
}

fuzz() {
  local target=$1 sources corpus seeds=tests/fuzz/corpus/$1 status=0
  sources=$(sources_of "$target")
  if [ "$target" = cql_frame ]; then corpus=$OUT/corpus; else corpus=$OUT/corpus-$target; fi
  mkdir -p "$corpus"
  echo "run.sh: building $OUT/fuzz_$target"
  # shellcheck disable=SC2086 # the sources are words
  if ! "$CLANG" -std=c11 -D_GNU_SOURCE -g -O1 -Wall -Wextra -Werror \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -fno-omit-frame-pointer -Ilib/include -Ilib/src -Iservices \
    "tests/fuzz/fuzz_$target.c" $sources -o "$OUT/fuzz_$target"; then
    echo "run.sh: the fuzz target did not build (libFuzzer's runtime is in libclang-rt-14-dev)" >&2
    exit 1
  fi
  echo "run.sh: fuzzing $target for ${FUZZ_SECONDS}s from $seeds and $corpus"
  ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=0 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$OUT/fuzz_$target" -max_total_time="$FUZZ_SECONDS" -max_len=4096 \
    -malloc_limit_mb="$FUZZ_MALLOC_MB" -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$OUT/" "$corpus" "$seeds" || status=$?
  if [ "$status" -ne 0 ]; then
    echo "run.sh: FAILED: fuzz_$target stopped with status $status; the input is in $OUT/ (crash-*, leak-*, oom-*, timeout-*)" >&2
    exit 1
  fi
  echo "run.sh: $target: no crash in ${FUZZ_SECONDS}s"
}

mkdir -p "$OUT"
for target in $FUZZ_TARGETS; do
  sources_of "$target" >/dev/null || exit 1
  fuzz "$target"
done
