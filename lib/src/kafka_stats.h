/*
 * kafka_stats.h - the consumer lag in librdkafka's statistics (private to
 * libdeta; kafka_consumer.c feeds deta_consumer_lag_messages with it).
 *
 * librdkafka hands its statistics (statistics.interval.ms) to a callback as JSON
 * text (its STATISTICS.md): topics.<topic>.partitions.<partition> holds, per
 * partition the handle knows of, consumer_lag (the end offset, ls_offset under
 * isolation.level=read_committed, minus the group's committed offset) and the
 * offsets it is computed from. That text is bytes the library did not write, so
 * it is read here by a plain function, fuzzed (tests/fuzz/fuzz_kafka_stats.c) and
 * unit-tested (tests/unit/test_kafka_stats.c), trusting nothing of its shape.
 *
 * The rule, per partition:
 *   - the partition is its key, a decimal 0..2147483647 (librdkafka's internal
 *     "-1", the unassigned-partition queue, and any other key are skipped);
 *   - only a partition this handle fetches counts: fetch_state is a string and
 *     not "none", "stopping" or "stopped" (a partition of the topic assigned to
 *     another member, or revoked from this one, may keep old offsets and so an
 *     old consumer_lag);
 *   - consumer_lag, an integer >= 0, is the lag;
 *   - else (consumer_lag -1: nothing committed yet, or not fetched here) the lag
 *     is known only for a partition being fetched (fetch_state "active") whose
 *     group has committed nothing (committed_offset < 0): the consumer
 *     starts such a partition at its earliest offset (auto.offset.reset), so
 *     everything from lo_offset to the end (ls_offset when >= 0, else hi_offset)
 *     is still to be handled. That makes an assigned partition that never
 *     received a message show 0, and a consumer stuck on its very first message
 *     show its backlog, instead of showing nothing;
 *   - anything else (not assigned here, offsets unknown, wrong types) is
 *     skipped: no value is better than a wrong one.
 */
#ifndef DETA_KAFKA_STATS_H
#define DETA_KAFKA_STATS_H

#include <stddef.h>
#include <stdint.h>

/* One partition's lag; topic is borrowed, valid during the visit only. */
typedef struct deta_kafka_lag {
    const char *topic;
    int32_t partition;
    int64_t lag; /* messages, >= 0 */
} deta_kafka_lag_t;

typedef void (*deta_kafka_lag_fn)(const deta_kafka_lag_t *lag, void *arg);

/* Calls visit for each partition of json (len bytes, no NUL needed) whose lag
 * the rule above gives. Returns how many were visited, or -1 (nothing visited)
 * when the text is not statistics: not a JSON object, or a "topics" that is not
 * an object. A statistics object without "topics" (a handle with no topic yet)
 * gives 0. */
int deta_kafka_stats_lags(const char *json, size_t len, deta_kafka_lag_fn visit, void *arg);

#endif
