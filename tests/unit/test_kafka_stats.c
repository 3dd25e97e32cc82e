/*
 * test_kafka_stats.c - the consumer lag read from librdkafka's statistics
 * (lib/src/kafka_stats.c): the lag of assigned partitions, the partition "-1"
 * and partitions of other members skipped, the lag of a partition whose group
 * committed nothing, and text that is not statistics refused without a visit.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "kafka_stats.h"

#define MAX_SEEN 16

typedef struct seen {
    char topic[MAX_SEEN][64];
    int32_t partition[MAX_SEEN];
    int64_t lag[MAX_SEEN];
    int n;
} seen_t;

static void collect(const deta_kafka_lag_t *lag, void *arg) {
    seen_t *s = arg;
    assert_true(s->n < MAX_SEEN);
    snprintf(s->topic[s->n], sizeof s->topic[s->n], "%s", lag->topic);
    s->partition[s->n] = lag->partition;
    s->lag[s->n] = lag->lag;
    s->n++;
}

static int lags(const char *json, seen_t *s) {
    memset(s, 0, sizeof *s);
    return deta_kafka_stats_lags(json, strlen(json), collect, s);
}

/* The lag of partition p of topic t as visited, or -2 when it was not. */
static int64_t lag_of(const seen_t *s, const char *t, int32_t p) {
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->topic[i], t) == 0 && s->partition[i] == p)
            return s->lag[i];
    return -2;
}

/* A partition as librdkafka writes it (the fields the rule reads). */
#define PART(id, state, committed, lo, hi, ls, lag)                                          \
    "\"" id "\":{\"partition\":" id ",\"fetch_state\":\"" state "\",\"committed_offset\":"   \
    #committed ",\"lo_offset\":" #lo ",\"hi_offset\":" #hi ",\"ls_offset\":" #ls              \
    ",\"consumer_lag\":" #lag ",\"consumer_lag_stored\":-1}"

static void assigned_partitions_give_their_consumer_lag(void **state) {
    (void)state;
    seen_t s;
    const char *json =
        "{\"name\":\"query-api#consumer-1\",\"type\":\"consumer\",\"ts\":1,"
        "\"brokers\":{},\"topics\":{"
        "\"raw.order-events\":{\"topic\":\"raw.order-events\",\"partitions\":{"
        PART("0", "active", 40, 0, 42, 42, 2) ","
        PART("1", "active", 7, 0, 7, 7, 0) ","
        PART("2", "none", 10, 0, 30, 30, 20) ","          /* another member's */
        PART("-1", "none", -1001, -1001, -1001, -1001, -1) /* librdkafka's own */
        "}},"
        "\"raw.payment-events\":{\"partitions\":{"
        PART("3", "active", 5, 0, 9, 8, 3)
        "}}},\"cgrp\":{\"state\":\"up\"}}";
    assert_int_equal(lags(json, &s), 3);
    assert_int_equal(s.n, 3);
    assert_true(lag_of(&s, "raw.order-events", 0) == 2);
    assert_true(lag_of(&s, "raw.order-events", 1) == 0);
    assert_true(lag_of(&s, "raw.order-events", 2) == -2);
    assert_true(lag_of(&s, "raw.payment-events", 3) == 3);
}

/* Nothing committed yet: an assigned partition starts at its earliest offset, so
 * lo..end is the backlog (0 for a partition that never had a message); while its
 * offsets are still being looked up, or unknown, it is skipped. */
static void a_partition_without_a_commit_counts_from_its_earliest_offset(void **state) {
    (void)state;
    seen_t s;
    const char *json = "{\"topics\":{\"t\":{\"partitions\":{"
                       PART("0", "active", -1001, 0, 0, 0, -1) ","
                       PART("1", "active", -1001, 10, 25, 25, -1) ","
                       PART("2", "active", -1001, 0, 9, -1, -1) ","   /* no LSO: hi */
                       PART("3", "offset-query", -1001, 0, 5, 5, -1) ","
                       PART("4", "active", -1001, -1001, 5, 5, -1) ","
                       PART("5", "active", 3, 0, -1001, -1001, -1) ","  /* committed, no end */
                       PART("6", "active", -1001, 9, 5, 5, -1)          /* end before start */
                       "}}}}";
    assert_int_equal(lags(json, &s), 3);
    assert_true(lag_of(&s, "t", 0) == 0);
    assert_true(lag_of(&s, "t", 1) == 15);
    assert_true(lag_of(&s, "t", 2) == 9);
    assert_true(lag_of(&s, "t", 3) == -2);
    assert_true(lag_of(&s, "t", 4) == -2);
    assert_true(lag_of(&s, "t", 5) == -2);
    assert_true(lag_of(&s, "t", 6) == -2);
}

static void odd_shapes_are_skipped(void **state) {
    (void)state;
    seen_t s;
    /* Partition keys that are not plain decimals, lags of the wrong type, topics and
     * partitions that are not objects, a missing fetch_state. */
    const char *json =
        "{\"topics\":{\"a\":[],\"b\":{\"partitions\":[]},\"c\":{\"partitions\":{"
        "\"+1\":{\"fetch_state\":\"active\",\"consumer_lag\":1},"
        "\"01\":{\"fetch_state\":\"active\",\"consumer_lag\":1},"
        "\"2147483648\":{\"fetch_state\":\"active\",\"consumer_lag\":1},"
        "\"2147483647\":{\"fetch_state\":\"active\",\"consumer_lag\":4},"
        "\"\":{\"fetch_state\":\"active\",\"consumer_lag\":1},"
        "\"5\":{\"fetch_state\":\"active\",\"consumer_lag\":1.5},"
        "\"6\":{\"fetch_state\":\"active\",\"consumer_lag\":\"7\"},"
        "\"7\":{\"consumer_lag\":7},"
        "\"8\":{\"fetch_state\":7,\"consumer_lag\":7},"
        "\"9\":3,"
        "\"10\":{\"fetch_state\":\"stopped\",\"consumer_lag\":7}}}}}";
    assert_int_equal(lags(json, &s), 1);
    assert_true(lag_of(&s, "c", 2147483647) == 4);
}

static void text_that_is_not_statistics_is_refused(void **state) {
    (void)state;
    seen_t s;
    assert_int_equal(lags("", &s), -1);
    assert_int_equal(lags("[]", &s), -1);
    assert_int_equal(lags("{\"topics\":[]}", &s), -1);
    assert_int_equal(lags("{\"topics\":{\"t\":{\"partitions\":{" PART("0", "active", 1, 0, 3, 3, 2)
                          "}}}", &s), -1); /* cut short */
    assert_int_equal(s.n, 0);
    assert_int_equal(deta_kafka_stats_lags(NULL, 0, collect, &s), -1);
    /* No topics yet: nothing to say, not an error. */
    assert_int_equal(lags("{\"name\":\"c\",\"type\":\"consumer\"}", &s), 0);
    /* The length is what counts, not a NUL. */
    const char *two = "{\"topics\":{}}{\"x\":1}";
    assert_int_equal(deta_kafka_stats_lags(two, strlen("{\"topics\":{}}"), collect, &s), 0);
    assert_int_equal(deta_kafka_stats_lags(two, strlen(two), collect, &s), -1);
    /* No visitor: only the count. */
    assert_int_equal(deta_kafka_stats_lags("{\"topics\":{\"t\":{\"partitions\":{"
                                           PART("0", "active", 1, 0, 3, 3, 2) "}}}}",
                                           strlen("{\"topics\":{\"t\":{\"partitions\":{"
                                                  PART("0", "active", 1, 0, 3, 3, 2) "}}}}"),
                                           NULL, NULL),
                     1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(assigned_partitions_give_their_consumer_lag),
        cmocka_unit_test(a_partition_without_a_commit_counts_from_its_earliest_offset),
        cmocka_unit_test(odd_shapes_are_skipped),
        cmocka_unit_test(text_that_is_not_statistics_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
