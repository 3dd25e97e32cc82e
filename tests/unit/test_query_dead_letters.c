/*
 * test_query_dead_letters.c - the pure rules of query-api's dead-letter
 * administration (services/query-api/deadletters/domain.c), no server: the
 * record made of a consumed dead letter (tolerant of anything), its JSON (text
 * or base64), the list's arguments and the record id, what a replay sends
 * (target topic, headers filtered and x-replayed-from added, what cannot be
 * sent), and the summary (the bearer token is libdeta's: test_auth.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "deta/topics.h"
#include "query-api/deadletters/domain.h"

#define KEY "0b7e8c1a-1111-4222-8333-444455556666"
#define VALUE "{\"eventType\":\"order.created\""

/* ---- helpers ---- */

static query_header_t text_header(const char *name, const char *value) {
    return (query_header_t){name, value, strlen(value)};
}

/* A dead letter as kafka_dlq.c publishes it, with one header of the producer's first. */
static void typical(query_dead_letter_t *d) {
    query_header_t h[] = {
        text_header("traceparent", "00-abc-01"),
        text_header("x-retry-count", "5"),
        text_header("x-original-topic", DETA_TOPIC_ORDER_EVENTS),
        text_header("x-original-partition", "3"),
        text_header("x-original-offset", "42"),
        text_header("x-error", "malformed JSON: '[' or '{' expected"),
        text_header("x-consumer-group", "inventory-service"),
    };
    assert_int_equal(query_dead_letter_from_message(DETA_TOPIC_DLQ_ORDER_EVENTS, 1, 7, KEY,
                                                    strlen(KEY), VALUE, strlen(VALUE), h,
                                                    sizeof h / sizeof *h, d),
                     DETA_OK);
}

static const char *str(const json_t *o, const char *key) {
    const json_t *v = json_object_get(o, key);
    if (!json_is_string(v))
        fail_msg("%s is not a string", key);
    return json_string_value(v);
}

static void expect_null(const json_t *o, const char *key) {
    if (!json_is_null(json_object_get(o, key)))
        fail_msg("%s is not null", key);
}

static const char *replay_header(const query_replay_t *r, const char *name) {
    for (size_t i = 0; i < r->nheaders; i++)
        if (strcmp(r->headers[i].name, name) == 0)
            return r->headers[i].value;
    return NULL;
}

/* ---- topics and our headers ---- */

static void test_topics(void **state) {
    (void)state;
    assert_int_equal(query_dlq_topic_index(DETA_TOPIC_DLQ_ORDER_EVENTS), 0);
    assert_int_equal(query_dlq_topic_index(DETA_TOPIC_DLQ_DELIVERY_EVENTS), 3);
    assert_int_equal(query_dlq_topic_index(DETA_TOPIC_DLQ_ETA_EVENTS), 4);
    assert_int_equal(query_dlq_topic_index(DETA_TOPIC_ORDER_EVENTS), -1);
    assert_int_equal(query_dlq_topic_index("dlq.other-events"), -1);
    assert_int_equal(query_dlq_topic_index(""), -1);
    assert_int_equal(query_dlq_topic_index(NULL), -1);
    assert_true(query_dlq_header_is_ours("x-error"));
    assert_true(query_dlq_header_is_ours("x-replayed-from"));
    assert_false(query_dlq_header_is_ours("x-custom"));
    assert_false(query_dlq_header_is_ours("X-Error")); /* Kafka header names are exact */
}

/* ---- the record ---- */

static void test_record_reads_the_dead_letter_headers(void **state) {
    (void)state;
    query_dead_letter_t d;
    typical(&d);
    assert_string_equal(d.topic, DETA_TOPIC_DLQ_ORDER_EVENTS);
    assert_int_equal(d.partition, 1);
    assert_int_equal(d.offset, 7);
    assert_true(d.has_key);
    assert_int_equal(d.key_len, strlen(KEY));
    assert_memory_equal(d.key, KEY, strlen(KEY));
    assert_true(d.has_value);
    assert_int_equal(d.value_len, strlen(VALUE));
    assert_string_equal(d.original_topic, DETA_TOPIC_ORDER_EVENTS);
    assert_int_equal(d.original_partition, 3);
    assert_int_equal(d.original_offset, 42);
    assert_int_equal(d.retry_count, 5);
    assert_string_equal(d.consumer_group, "inventory-service");
    assert_string_equal(d.error, "malformed JSON: '[' or '{' expected");
    assert_string_equal(d.replayed_from, "");
    /* Every header kept, in order. */
    assert_int_equal(json_array_size(d.headers), 7);
    assert_string_equal(str(json_array_get(d.headers, 0), "name"), "traceparent");
    assert_string_equal(str(json_array_get(d.headers, 0), "value"), "00-abc-01");
    assert_string_equal(str(json_array_get(d.headers, 6), "name"), "x-consumer-group");
    query_dead_letter_clear(&d);
}

static void test_record_of_a_bare_message_leaves_fields_unknown(void **state) {
    (void)state;
    query_dead_letter_t d;
    assert_int_equal(query_dead_letter_from_message(DETA_TOPIC_DLQ_PAYMENT_EVENTS, 0, 0, NULL, 0,
                                                    NULL, 0, NULL, 0, &d),
                     DETA_OK);
    assert_false(d.has_key);
    assert_false(d.has_value);
    assert_int_equal(d.original_partition, -1);
    assert_int_equal(d.original_offset, -1);
    assert_int_equal(d.retry_count, -1);
    assert_string_equal(d.original_topic, "");
    assert_string_equal(d.error, "");
    assert_int_equal(json_array_size(d.headers), 0);
    json_t *j = query_dead_letter_to_json(&d, true);
    expect_null(j, "key");
    expect_null(j, "keyEncoding");
    expect_null(j, "value");
    expect_null(j, "originalTopic");
    expect_null(j, "originalPartition");
    expect_null(j, "originalOffset");
    expect_null(j, "retryCount");
    expect_null(j, "error");
    expect_null(j, "lastReplayedAt");
    json_decref(j);
    query_dead_letter_clear(&d);
}

static void test_record_tolerates_malformed_headers(void **state) {
    (void)state;
    const char bad_error[] = {'b', 'a', 'd', '\xff', ' ', '\xc3', '\xa9', '\0', 'x'};
    const unsigned char binary[] = {0x00, 0xff, 0x10};
    query_header_t h[] = {
        text_header("x-original-partition", "-1"),
        text_header("x-original-offset", "12abc"),
        text_header("x-retry-count", ""),
        {"x-error", bad_error, sizeof bad_error},
        {"x-binary", binary, sizeof binary},
        {"x-none", NULL, 0},
    };
    query_dead_letter_t d;
    assert_int_equal(query_dead_letter_from_message(DETA_TOPIC_DLQ_ORDER_EVENTS, 0, 1, "k", 1,
                                                    "v", 1, h, sizeof h / sizeof *h, &d),
                     DETA_OK);
    assert_int_equal(d.original_partition, -1);
    assert_int_equal(d.original_offset, -1);
    assert_int_equal(d.retry_count, -1);
    /* Invalid UTF-8 and NUL become '?'; a valid é stays. */
    assert_string_equal(d.error, "bad? \xc3\xa9?x");
    /* The header keeps the exact bytes, in base64. */
    const json_t *err = json_array_get(d.headers, 3);
    assert_string_equal(str(err, "base64"), "YmFk/yDDqQB4");
    assert_null(json_object_get(err, "value"));
    assert_string_equal(str(json_array_get(d.headers, 4), "base64"), "AP8Q");
    assert_true(json_is_null(json_object_get(json_array_get(d.headers, 5), "value")));
    query_dead_letter_clear(&d);
}

static void test_json_shows_text_or_base64(void **state) {
    (void)state;
    const unsigned char value[] = {'{', 0x00, 0xc3, 0x28}; /* NUL, invalid UTF-8 */
    query_dead_letter_t d;
    assert_int_equal(query_dead_letter_from_message(DETA_TOPIC_DLQ_ORDER_EVENTS, 2, 9, "k\xc3\xa9",
                                                    3, value, sizeof value, NULL, 0, &d),
                     DETA_OK);
    d.id = 12;
    d.replay_count = 1;
    snprintf(d.last_replayed_at, sizeof d.last_replayed_at, "2026-11-25T12:38:05.123000Z");
    json_t *full = query_dead_letter_to_json(&d, true);
    assert_int_equal(json_integer_value(json_object_get(full, "id")), 12);
    assert_int_equal(json_integer_value(json_object_get(full, "partition")), 2);
    assert_int_equal(json_integer_value(json_object_get(full, "offset")), 9);
    assert_string_equal(str(full, "key"), "k\xc3\xa9");
    assert_string_equal(str(full, "keyEncoding"), "utf-8");
    assert_string_equal(str(full, "value"), "ewDDKA==");
    assert_string_equal(str(full, "valueEncoding"), "base64");
    assert_true(json_is_array(json_object_get(full, "headers")));
    assert_int_equal(json_integer_value(json_object_get(full, "replayCount")), 1);
    assert_string_equal(str(full, "lastReplayedAt"), "2026-11-25T12:38:05.123000Z");
    json_decref(full);
    /* The list's form has neither value nor headers. */
    json_t *brief = query_dead_letter_to_json(&d, false);
    assert_null(json_object_get(brief, "value"));
    assert_null(json_object_get(brief, "headers"));
    assert_string_equal(str(brief, "key"), "k\xc3\xa9");
    json_decref(brief);
    query_dead_letter_clear(&d);
}

static void test_summary_adds_up(void **state) {
    (void)state;
    query_dlq_counts_t c[QUERY_DLQ_TOPIC_COUNT] = {{5, 2}, {0, 0}, {3, 3}, {1, 0}, {2, 1}};
    json_t *j = query_dlq_summary_to_json(c);
    assert_int_equal(json_integer_value(json_object_get(j, "total")), 11);
    assert_int_equal(json_integer_value(json_object_get(j, "pending")), 6);
    assert_int_equal(json_integer_value(json_object_get(j, "replayed")), 5);
    const json_t *topics = json_object_get(j, "topics");
    assert_int_equal(json_array_size(topics), 5);
    const json_t *first = json_array_get(topics, 0);
    assert_string_equal(str(first, "topic"), DETA_TOPIC_DLQ_ORDER_EVENTS);
    assert_string_equal(str(first, "originalTopic"), DETA_TOPIC_ORDER_EVENTS);
    assert_int_equal(json_integer_value(json_object_get(first, "replayed")), 3);
    assert_string_equal(str(json_array_get(topics, 3), "originalTopic"),
                        DETA_TOPIC_DELIVERY_EVENTS);
    assert_string_equal(str(json_array_get(topics, 4), "originalTopic"), DETA_TOPIC_ETA_EVENTS);
    json_decref(j);
}

/* ---- arguments ---- */

static void expect_bad_params(const char *status, const char *limit, const char *offset,
                              const char *key, const char *field) {
    query_dlq_list_params_t p;
    query_violation_t v;
    if (query_dlq_list_params_parse(status, limit, offset, key, &p, &v) != DETA_ERR_INVALID)
        fail_msg("accepted status=%s limit=%s offset=%s", status ? status : "-",
                 limit ? limit : "-", offset ? offset : "-");
    assert_string_equal(v.field, field);
    assert_non_null(strstr(v.message, field));
}

static void test_list_params(void **state) {
    (void)state;
    query_dlq_list_params_t p;
    query_violation_t v;
    assert_int_equal(query_dlq_list_params_parse(NULL, NULL, NULL, NULL, &p, &v), DETA_OK);
    assert_int_equal(p.status, QUERY_DLQ_ALL);
    assert_int_equal(p.limit, 50);
    assert_int_equal(p.offset, 0);
    assert_false(p.has_key);
    assert_int_equal(query_dlq_list_params_parse("pending", "200", "1000000000", KEY, &p, &v),
                     DETA_OK);
    assert_int_equal(p.status, QUERY_DLQ_PENDING);
    assert_string_equal(query_dlq_status_name(p.status), "pending");
    assert_int_equal(p.limit, 200);
    assert_int_equal(p.offset, 1000000000L);
    assert_true(p.has_key);
    assert_string_equal(p.key, KEY);
    assert_int_equal(query_dlq_list_params_parse("replayed", "1", "0", NULL, &p, &v), DETA_OK);
    assert_int_equal(p.status, QUERY_DLQ_REPLAYED);

    expect_bad_params("PENDING", NULL, NULL, NULL, "status");
    expect_bad_params("", NULL, NULL, NULL, "status");
    expect_bad_params(NULL, "0", NULL, NULL, "limit");
    expect_bad_params(NULL, "201", NULL, NULL, "limit");
    expect_bad_params(NULL, "ten", NULL, NULL, "limit");
    expect_bad_params(NULL, "-1", NULL, NULL, "limit");
    expect_bad_params(NULL, "", NULL, NULL, "limit");
    expect_bad_params(NULL, NULL, "-1", NULL, "offset");
    expect_bad_params(NULL, NULL, "1000000001", NULL, "offset");
    expect_bad_params(NULL, NULL, "1e3", NULL, "offset");
    expect_bad_params(NULL, NULL, NULL, "", "key");
    char long_key[QUERY_DLQ_KEY_MAX + 2];
    memset(long_key, 'k', sizeof long_key - 1);
    long_key[sizeof long_key - 1] = '\0';
    expect_bad_params(NULL, NULL, NULL, long_key, "key");
}

static void test_id(void **state) {
    (void)state;
    int64_t id = 0;
    assert_true(query_dlq_id_parse("1", &id));
    assert_int_equal(id, 1);
    assert_true(query_dlq_id_parse("9007199254740992", &id));
    assert_int_equal(id, 9007199254740992LL);
    const char *bad[] = {NULL, "", "0", "01", "-1", "+1", " 1", "1 ", "abc", "1.5",
                         "9007199254740993", "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (query_dlq_id_parse(bad[i], &id))
            fail_msg("id \"%s\" accepted", bad[i] ? bad[i] : "(null)");
}

/* ---- replays ---- */

static void test_replay_goes_to_the_original_topic_with_its_headers(void **state) {
    (void)state;
    query_dead_letter_t d;
    typical(&d);
    query_replay_t r;
    query_violation_t v;
    assert_int_equal(query_replay_prepare(&d, &r, &v), DETA_OK);
    assert_string_equal(r.topic, DETA_TOPIC_ORDER_EVENTS);
    assert_string_equal(r.key, KEY);
    /* The producer's header stays, ours go, x-replayed-from names the dead letter. */
    assert_int_equal(r.nheaders, 2);
    assert_string_equal(r.headers[0].name, "traceparent");
    assert_string_equal(r.headers[0].value, "00-abc-01");
    assert_string_equal(replay_header(&r, "x-replayed-from"), "dlq.order-events/1/7");
    assert_null(replay_header(&r, "x-error"));
    assert_null(replay_header(&r, "x-original-topic"));
    assert_null(replay_header(&r, "x-consumer-group"));
    query_replay_clear(&r);
    query_dead_letter_clear(&d);
}

static void test_replay_of_a_replay_names_only_the_latest(void **state) {
    (void)state;
    query_header_t h[] = {text_header("x-replayed-from", "dlq.payment-events/0/1"),
                          text_header("x-consumer-group", "query-api")};
    query_dead_letter_t d;
    assert_int_equal(query_dead_letter_from_message(DETA_TOPIC_DLQ_PAYMENT_EVENTS, 4, 99, NULL, 0,
                                                    "v", 1, h, 2, &d),
                     DETA_OK);
    assert_string_equal(d.replayed_from, "dlq.payment-events/0/1");
    query_replay_t r;
    query_violation_t v;
    assert_int_equal(query_replay_prepare(&d, &r, &v), DETA_OK);
    /* No x-original-topic: the raw twin. No key: none sent. */
    assert_string_equal(r.topic, DETA_TOPIC_PAYMENT_EVENTS);
    assert_null(r.key);
    assert_int_equal(r.nheaders, 1);
    assert_string_equal(r.headers[0].value, "dlq.payment-events/4/99");
    query_replay_clear(&r);
    query_dead_letter_clear(&d);
}

static void test_replay_sends_binary_header_bytes_back(void **state) {
    (void)state;
    const unsigned char binary[] = {0xff, 0xfe, 0x41};
    query_header_t h[] = {{"x-binary", binary, sizeof binary}};
    query_dead_letter_t d;
    assert_int_equal(query_dead_letter_from_message(DETA_TOPIC_DLQ_ORDER_EVENTS, 0, 1, "k", 1,
                                                    "v", 1, h, 1, &d),
                     DETA_OK);
    query_replay_t r;
    query_violation_t v;
    assert_int_equal(query_replay_prepare(&d, &r, &v), DETA_OK);
    assert_string_equal(r.headers[0].name, "x-binary");
    assert_memory_equal(r.headers[0].value, "\xff\xfe\x41", 4);
    query_replay_clear(&r);
    query_dead_letter_clear(&d);
}

static void expect_refused(const query_dead_letter_t *d, const char *field) {
    query_replay_t r;
    query_violation_t v;
    if (query_replay_prepare(d, &r, &v) != DETA_ERR_INVALID)
        fail_msg("replay accepted, expected a refusal naming %s", field);
    assert_string_equal(v.field, field);
    assert_null(r.headers);
    assert_null(r.key);
}

static void test_replay_refuses_what_cannot_be_sent(void **state) {
    (void)state;
    query_dead_letter_t d;
    typical(&d);
    /* A dead letter of dlq.order-events that claims another origin. */
    snprintf(d.original_topic, sizeof d.original_topic, "%s", DETA_TOPIC_PAYMENT_EVENTS);
    expect_refused(&d, "originalTopic");
    snprintf(d.original_topic, sizeof d.original_topic, "%s", DETA_TOPIC_DLQ_ORDER_EVENTS);
    expect_refused(&d, "originalTopic");
    snprintf(d.original_topic, sizeof d.original_topic, "%s", DETA_TOPIC_ORDER_EVENTS);
    /* A key with a NUL byte. */
    assert_true(query_dead_letter_set_bytes(&d.key, &d.key_len, &d.has_key, "a\0b", 3));
    expect_refused(&d, "key");
    query_dead_letter_clear(&d);
    /* A header value with a NUL byte. */
    const unsigned char nul[] = {'a', 0x00};
    query_header_t h[] = {{"h", nul, sizeof nul}};
    assert_int_equal(query_dead_letter_from_message(DETA_TOPIC_DLQ_ORDER_EVENTS, 0, 1, "k", 1,
                                                    "v", 1, h, 1, &d),
                     DETA_OK);
    expect_refused(&d, "headers");
    query_dead_letter_clear(&d);
    /* Not one of the five dlq topics. */
    assert_int_equal(query_dead_letter_from_message("dlq.other", 0, 1, "k", 1, "v", 1, NULL, 0,
                                                    &d),
                     DETA_OK);
    expect_refused(&d, "topic");
    query_dead_letter_clear(&d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_topics),
        cmocka_unit_test(test_record_reads_the_dead_letter_headers),
        cmocka_unit_test(test_record_of_a_bare_message_leaves_fields_unknown),
        cmocka_unit_test(test_record_tolerates_malformed_headers),
        cmocka_unit_test(test_json_shows_text_or_base64),
        cmocka_unit_test(test_summary_adds_up),
        cmocka_unit_test(test_list_params),
        cmocka_unit_test(test_id),
        cmocka_unit_test(test_replay_goes_to_the_original_topic_with_its_headers),
        cmocka_unit_test(test_replay_of_a_replay_names_only_the_latest),
        cmocka_unit_test(test_replay_sends_binary_header_bytes_back),
        cmocka_unit_test(test_replay_refuses_what_cannot_be_sent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
