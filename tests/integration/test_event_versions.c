/*
 * test_event_versions.c - every consumer of every raw topic dead-letters an
 * event of a newer schemaVersion than it reads, saying so, and goes on with the
 * next message (docs/events.md#versions, deta/event_check.h), against the real
 * services of the test stack.
 *
 * For each raw topic, onto one fresh key: an event of the topic's own type,
 * written by its owner, well formed in every way but its schemaVersion (2, one
 * more than this build reads), then behind it on the same partition an event
 * of version 1 written by a producer that does not own the topic. Each consumer
 * group of the topic (the table below, docs/contracts.md's "consumed by") must
 * dead-letter both into the topic's dlq. twin, in that order:
 *
 *   - the first with x-error "schemaVersion 2 of <type> is newer than this
 *     consumer reads (1)": read as version 1 it would have been misread;
 *   - the second with the producer's x-error: the consumer went past the first.
 *
 * Without the version check every group applies the first event (or skips it as
 * unknown to its handler) and no dead letter of it appears.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "deta/topics.h"
#include "testsupport.h"

#define WAIT_MS 30000
#define MAX_GROUPS 4

typedef struct consumed {
    const char *topic;
    const char *dlq;
    const char *type; /* an event type of the topic */
    const char *groups[MAX_GROUPS + 1];
} consumed_t;

static const consumed_t consumers[] = {
    {DETA_TOPIC_ORDER_EVENTS, DETA_TOPIC_DLQ_ORDER_EVENTS, DETA_EVT_ORDER_CREATED,
     {"inventory-service", "query-api", NULL}},
    {DETA_TOPIC_INVENTORY_EVENTS, DETA_TOPIC_DLQ_INVENTORY_EVENTS, DETA_EVT_INVENTORY_RESERVED,
     {"payment-service", "order-service", "query-api", NULL}},
    {DETA_TOPIC_PAYMENT_EVENTS, DETA_TOPIC_DLQ_PAYMENT_EVENTS, DETA_EVT_PAYMENT_AUTHORIZED,
     {"inventory-service", "delivery-service", "order-service", "query-api", NULL}},
    {DETA_TOPIC_DELIVERY_EVENTS, DETA_TOPIC_DLQ_DELIVERY_EVENTS, DETA_EVT_DELIVERY_ASSIGNED,
     {"inventory-service", "payment-service", "order-service", "query-api", NULL}},
    {DETA_TOPIC_ETA_EVENTS, DETA_TOPIC_DLQ_ETA_EVENTS, DETA_EVT_ETA_UPDATED,
     {"query-api", NULL}},
};

/* The serialized event of type for key by producer, its schemaVersion set. */
static char *event_of_version(const char *producer, const char *type, const char *key,
                              int version, char *event_id) {
    char *text = ts_event_by(producer, type, key, key, json_object(), event_id);
    json_error_t jerr;
    json_t *doc = json_loads(text, 0, &jerr);
    free(text);
    assert_non_null(doc);
    assert_int_equal(json_object_set_new(doc, "schemaVersion", json_integer(version)), 0);
    text = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(doc);
    assert_non_null(text);
    return text;
}

static size_t group_count(const consumed_t *c) {
    size_t n = 0;
    while (c->groups[n])
        n++;
    return n;
}

/* The dead letter of group among msgs whose x-error is want; NULL if none. */
static const ts_kafka_msg_t *letter_of(const ts_kafka_msg_t *msgs, int n, const char *group,
                                       const char *want) {
    for (int i = 0; i < n; i++) {
        const char *g = ts_kafka_header(&msgs[i], "x-consumer-group");
        const char *why = ts_kafka_header(&msgs[i], "x-error");
        if (g && why && strcmp(g, group) == 0 && strcmp(why, want) == 0)
            return &msgs[i];
    }
    return NULL;
}

static void newer_version_is_dead_lettered_everywhere(void **state) {
    (void)state;
    char keys[sizeof consumers / sizeof *consumers][37];
    char newer_ids[sizeof consumers / sizeof *consumers][37];
    for (size_t t = 0; t < sizeof consumers / sizeof *consumers; t++) {
        const consumed_t *c = &consumers[t];
        ts_uuid(keys[t]);
        char follower_id[37];
        char *newer = event_of_version(deta_topic_owner(c->topic), c->type, keys[t],
                                       DETA_SCHEMA_VERSION + 1, newer_ids[t]);
        char *follower = event_of_version("testsupport", c->type, keys[t], DETA_SCHEMA_VERSION,
                                          follower_id);
        const char *k[] = {keys[t], keys[t]};
        const char *v[] = {newer, follower};
        ts_kafka_produce_many(c->topic, k, v, 2);
        free(newer);
        free(follower);
    }

    for (size_t t = 0; t < sizeof consumers / sizeof *consumers; t++) {
        const consumed_t *c = &consumers[t];
        int want = 2 * (int)group_count(c);
        ts_kafka_msg_t msgs[2 * MAX_GROUPS + 2];
        int got = ts_kafka_collect(c->dlq, keys[t], want, WAIT_MS, msgs,
                                   (int)(sizeof msgs / sizeof *msgs));
        char version_error[160], producer_error[160];
        snprintf(version_error, sizeof version_error,
                 "schemaVersion %d of %s is newer than this consumer reads (%d)",
                 DETA_SCHEMA_VERSION + 1, c->type, DETA_SCHEMA_VERSION);
        snprintf(producer_error, sizeof producer_error,
                 "producer \"testsupport\" does not own %s (its owner is %s)", c->topic,
                 deta_topic_owner(c->topic));
        for (size_t g = 0; c->groups[g]; g++) {
            const ts_kafka_msg_t *first = letter_of(msgs, got, c->groups[g], version_error);
            const ts_kafka_msg_t *second = letter_of(msgs, got, c->groups[g], producer_error);
            if (!first)
                fail_msg("%s did not dead-letter the version %d %s on %s", c->groups[g],
                         DETA_SCHEMA_VERSION + 1, c->type, c->topic);
            if (!second)
                fail_msg("%s did not go on past the version %d %s on %s", c->groups[g],
                         DETA_SCHEMA_VERSION + 1, c->type, c->topic);
            assert_non_null(strstr(first->value, newer_ids[t]));
            assert_string_equal(ts_kafka_header(first, "x-original-topic"), c->topic);
            long long at_first = atoll(ts_kafka_header(first, "x-original-offset"));
            long long at_second = atoll(ts_kafka_header(second, "x-original-offset"));
            assert_true(at_first < at_second);
        }
        /* Nothing else of the key was dead-lettered: one pair per group. */
        assert_int_equal(got, want);
        for (int i = 0; i < got; i++)
            ts_kafka_msg_free(&msgs[i]);
        assert_int_equal(ts_kafka_count(c->dlq, keys[t], 5000), want);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(newer_version_is_dead_lettered_everywhere),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
