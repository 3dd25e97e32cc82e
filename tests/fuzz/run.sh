#!/usr/bin/env bash
# run.sh - the CQL frame fuzz target (tests/fuzz/fuzz_cql_frame.c): built with
# clang's libFuzzer under ASan and UBSan into build/fuzz, then run for
# FUZZ_SECONDS seconds (30 by default) from the seed corpus
# (tests/fuzz/corpus/cql_frame, only read) and the inputs earlier runs kept
# (build/fuzz/corpus). Any crash, overread, leak, undefined behaviour, or an
# allocation above FUZZ_MALLOC_MB (256) fails the run; the input that did it is
# left in build/fuzz/ as crash-*, leak-*, oom-* (replay: build/fuzz/fuzz_cql_frame FILE).
#
# Only the codec, the result getters and what they need from lib/src are
# compiled: no service library, no server.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

FUZZ_SECONDS=${FUZZ_SECONDS:-30}
FUZZ_MALLOC_MB=${FUZZ_MALLOC_MB:-256}
CLANG=${CLANG:-clang}
OUT=build/fuzz
SEEDS=tests/fuzz/corpus/cql_frame

if ! command -v "$CLANG" >/dev/null 2>&1; then
  echo "run.sh: $CLANG not found: install clang and libclang-rt-14-dev (scripts/deps.sh)" >&2
  exit 1
fi

mkdir -p "$OUT/corpus"
echo "run.sh: building $OUT/fuzz_cql_frame"
if ! "$CLANG" -std=c11 -D_GNU_SOURCE -g -O1 -Wall -Wextra -Werror \
  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -fno-omit-frame-pointer -Ilib/include -Ilib/src \
  tests/fuzz/fuzz_cql_frame.c lib/src/cql_codec.c lib/src/cql_values.c lib/src/err.c \
  -o "$OUT/fuzz_cql_frame"; then
  echo "run.sh: the fuzz target did not build (libFuzzer's runtime is in libclang-rt-14-dev)" >&2
  exit 1
fi

echo "run.sh: fuzzing for ${FUZZ_SECONDS}s from $SEEDS and $OUT/corpus"
status=0
ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=0 \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  "$OUT/fuzz_cql_frame" -max_total_time="$FUZZ_SECONDS" -max_len=4096 \
  -malloc_limit_mb="$FUZZ_MALLOC_MB" -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$OUT/" "$OUT/corpus" "$SEEDS" || status=$?
if [ "$status" -ne 0 ]; then
  echo "run.sh: FAILED: the fuzzer stopped with status $status; the input is in $OUT/ (crash-*, leak-*, oom-*, timeout-*)" >&2
  exit 1
fi
echo "run.sh: no crash in ${FUZZ_SECONDS}s"
