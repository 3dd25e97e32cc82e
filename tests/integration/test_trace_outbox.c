/*
 * test_trace_outbox.c - the trace context through a transaction, the outbox row
 * and the relay onto the Kafka message (deta/trace.h, lib/src/outbox.c), against
 * the test stack's Postgres and broker, with tracing started in this process
 * towards a port where nothing listens (the spans' export is not what is tested
 * here: faults.test_tracing does that with the suite's receiver).
 *
 *   - a row written inside a span carries the context of its transaction's span
 *     (the same trace, another span than the caller's, sampled) and the
 *     caller's tracestate; its message carries the relay's producer span: the
 *     same trace, yet another span;
 *   - rows written outside any span continue their order's trace (the context of
 *     the order's latest traced row), also two rows of two topics written in one
 *     statement (deta_outbox_add_many, as delivery-service's stage and ETA);
 *   - a row of an order with no traced row, outside any span, has no context,
 *     and its message starts a new trace (the producer span is its root);
 *   - rows of several orders in one statement (deta_outbox_add_each, as
 *     delivery-service's ticker): outside any span each continues its own
 *     order's trace, or has none; inside a span all carry the span's.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "deta/envelope.h"
#include "deta/log.h"
#include "deta/outbox.h"
#include "deta/topics.h"
#include "deta/trace.h"
#include "testsupport.h"

#define TOPIC DETA_TOPIC_ORDER_EVENTS
#define OTHER_TOPIC DETA_TOPIC_ETA_EVENTS
#define WAIT_MS 20000

static deta_config_t cfg;
static deta_producer_t *producer;
static deta_db_t *db;
static deta_outbox_relay_t *relay;

static int setup(void **state) {
    (void)state;
    deta_log_init("it-trace-outbox", DETA_LOG_WARN);
    char err[256];
    if (ts_scratch_db_create("it-trace-outbox", "traceoutbox", &cfg) != 0)
        return -1;
    db = deta_db_new(&cfg);
    if (deta_db_migrate(db, "outbox", deta_outbox_migrations, deta_outbox_migrations_count, err,
                        sizeof err) != DETA_OK) {
        fprintf(stderr, "migrate: %s\n", err);
        return -1;
    }
    char port[16];
    ts_free_port(port, sizeof port);
    deta_trace_config_t tc = {.enabled = true, .service_name = "it-trace-outbox",
                              .max_queue = 64, .max_batch = 16, .schedule_delay_ms = 100,
                              .export_timeout_ms = 200,
                              .sampler = {DETA_SAMPLER_PARENTBASED_ALWAYS_ON, 1.0}};
    snprintf(tc.endpoint, sizeof tc.endpoint, "http://127.0.0.1:%s/v1/traces", port);
    if (deta_trace_start(&tc, "it-1", NULL, err, sizeof err) != DETA_OK) {
        fprintf(stderr, "tracing: %s\n", err);
        return -1;
    }
    producer = deta_producer_new(&cfg, err, sizeof err);
    relay = producer ? deta_outbox_relay_new(&cfg, producer, NULL, err, sizeof err) : NULL;
    if (!relay || deta_outbox_relay_start(relay, err, sizeof err) != DETA_OK) {
        fprintf(stderr, "relay: %s\n", err);
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    deta_outbox_relay_free(relay);
    deta_producer_free(producer);
    deta_trace_stop(500);
    deta_db_free(db);
    ts_scratch_db_drop(&cfg);
    return 0;
}

/* n (1 or 2) events of order key in a transaction of its own, in one
 * statement: the first on TOPIC, the second on OTHER_TOPIC. */
static void write_rows(const char *key, size_t n) {
    deta_event_t ev[2];
    const deta_event_t *evs[2] = {&ev[0], &ev[1]};
    const char *topics[2] = {TOPIC, OTHER_TOPIC};
    char err[256];
    assert_int_equal(deta_db_begin(db, err, sizeof err), DETA_OK);
    for (size_t i = 0; i < n; i++)
        if (deta_event_init(&ev[i], DETA_EVT_ORDER_CREATED, key, "corr-1", "order-service",
                            json_pack("{s:s, s:i}", "k", key, "i", (int)i), err,
                            sizeof err) != DETA_OK)
            fail_msg("event: %s", err);
    deta_err_t rc = deta_outbox_add_many(db, topics, evs, n, err, sizeof err);
    for (size_t i = 0; i < n; i++)
        deta_event_clear(&ev[i]);
    if (rc != DETA_OK)
        fail_msg("outbox add: %s", err);
    assert_int_equal(deta_db_commit(db, err, sizeof err), DETA_OK);
}

static void write_row(const char *key) { write_rows(key, 1); }

/* The traceparent column of the order's n-th row (0 first), "" when NULL. */
static void row_context(const char *key, int n, char *out, size_t size) {
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT coalesce(traceparent, '') || '|' || coalesce(tracestate, '') FROM outbox"
             " WHERE msg_key = $1 ORDER BY id OFFSET %d LIMIT 1",
             n);
    PGconn *c = ts_pg(cfg.pg_database);
    const char *params[] = {key};
    PGresult *r = PQexecParams(c, sql, 1, NULL, params, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_int_equal(PQntuples(r), 1);
    snprintf(out, size, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(c);
}

static void parse(const char *traceparent, deta_trace_ctx_t *c) {
    if (!deta_traceparent_parse(traceparent, strlen(traceparent), c))
        fail_msg("not a valid traceparent: \"%s\"", traceparent);
}

static void row_inside_a_span(void **state) {
    (void)state;
    char key[64], uuid[37];
    ts_uuid(uuid);
    snprintf(key, sizeof key, "trace-%s", uuid);
    deta_trace_ctx_t caller;
    assert_true(deta_trace_ctx_from_headers(
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "congo=t61", &caller));
    deta_span_t *server = deta_span_begin("POST /test", DETA_SPAN_SERVER, &caller);
    assert_non_null(server);
    deta_span_enter(server);
    write_row(key);
    uint8_t server_span[8];
    memcpy(server_span, deta_span_ctx(server)->span_id, 8);
    deta_span_end(server);
    assert_null(deta_span_current());

    char col[700];
    row_context(key, 0, col, sizeof col);
    char *bar = strchr(col, '|');
    assert_non_null(bar);
    *bar = '\0';
    assert_string_equal(bar + 1, "congo=t61");
    deta_trace_ctx_t row;
    parse(col, &row);
    assert_memory_equal(row.trace_id, caller.trace_id, 16);
    assert_memory_not_equal(row.span_id, caller.span_id, 8);
    assert_memory_not_equal(row.span_id, server_span, 8); /* the transaction's span */
    assert_int_equal(row.flags, DETA_TRACE_FLAG_SAMPLED);

    ts_kafka_msg_t m;
    assert_true(ts_kafka_find(TOPIC, key, WAIT_MS, &m));
    const char *tp = ts_kafka_header(&m, "traceparent");
    assert_non_null(tp);
    assert_string_equal(ts_kafka_header(&m, "tracestate"), "congo=t61");
    deta_trace_ctx_t msg;
    parse(tp, &msg);
    assert_memory_equal(msg.trace_id, caller.trace_id, 16);
    assert_memory_not_equal(msg.span_id, row.span_id, 8); /* the producer span's */
    ts_kafka_msg_free(&m);

    /* the next rows of the order, outside any span, two topics in one statement:
     * the same context as the first, and the second's message in its trace */
    write_rows(key, 2);
    for (int n = 1; n <= 2; n++) {
        char col2[700];
        row_context(key, n, col2, sizeof col2);
        *strchr(col2, '|') = '\0';
        assert_string_equal(col2, col);
    }
    assert_true(ts_kafka_find(OTHER_TOPIC, key, WAIT_MS, &m));
    tp = ts_kafka_header(&m, "traceparent");
    assert_non_null(tp);
    parse(tp, &msg);
    assert_memory_equal(msg.trace_id, caller.trace_id, 16);
    ts_kafka_msg_free(&m);
}

static void row_outside_any_trace(void **state) {
    (void)state;
    char key[64], uuid[37];
    ts_uuid(uuid);
    snprintf(key, sizeof key, "untraced-%s", uuid);
    write_row(key);
    char col[700];
    row_context(key, 0, col, sizeof col);
    assert_string_equal(col, "|");
    ts_kafka_msg_t m;
    assert_true(ts_kafka_find(TOPIC, key, WAIT_MS, &m));
    const char *tp = ts_kafka_header(&m, "traceparent");
    assert_non_null(tp); /* the relay's producer span, a new trace's root */
    deta_trace_ctx_t msg;
    parse(tp, &msg);
    assert_null(ts_kafka_header(&m, "tracestate"));
    ts_kafka_msg_free(&m);
}

/* Events of the orders keys[i] (one each), in one deta_outbox_add_each, the
 * i-th on topics[i], in a transaction of their own. */
static void write_each(const char *const *keys, const char *const *topics, size_t n) {
    deta_event_t ev[4];
    const deta_event_t *evs[4];
    char err[256];
    assert_true(n <= 4);
    assert_int_equal(deta_db_begin(db, err, sizeof err), DETA_OK);
    for (size_t i = 0; i < n; i++) {
        if (deta_event_init(&ev[i], DETA_EVT_DELIVERY_PICKED_UP, keys[i], "corr-e",
                            "delivery-service", json_pack("{s:i}", "i", (int)i), err,
                            sizeof err) != DETA_OK)
            fail_msg("event: %s", err);
        evs[i] = &ev[i];
    }
    deta_err_t rc = deta_outbox_add_each(db, topics, evs, n, err, sizeof err);
    for (size_t i = 0; i < n; i++)
        deta_event_clear(&ev[i]);
    if (rc != DETA_OK)
        fail_msg("outbox add_each: %s", err);
    assert_int_equal(deta_db_commit(db, err, sizeof err), DETA_OK);
}

/* The traceparent of the order's n-th row ("" when none). */
static void row_traceparent(const char *key, int n, char *out, size_t size) {
    row_context(key, n, out, size);
    *strchr(out, '|') = '\0';
}

static void rows_of_several_orders(void **state) {
    (void)state;
    char traced[64], untraced[64], uuid[37];
    ts_uuid(uuid);
    snprintf(traced, sizeof traced, "each-traced-%s", uuid);
    snprintf(untraced, sizeof untraced, "each-untraced-%s", uuid);
    deta_trace_ctx_t caller;
    assert_true(deta_trace_ctx_from_headers(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", NULL, &caller));
    deta_span_t *server = deta_span_begin("POST /each", DETA_SPAN_SERVER, &caller);
    assert_non_null(server);
    deta_span_enter(server);
    write_row(traced);
    deta_span_end(server);
    assert_null(deta_span_current());
    char first[700];
    row_traceparent(traced, 0, first, sizeof first);
    assert_true(first[0] != '\0');

    /* outside any span: the traced order's rows take its latest row's context,
     * the other order's row none */
    const char *keys[] = {traced, untraced, traced};
    const char *topics[] = {TOPIC, TOPIC, OTHER_TOPIC};
    write_each(keys, topics, 3);
    char col[700];
    for (int n = 1; n <= 2; n++) {
        row_traceparent(traced, n, col, sizeof col);
        assert_string_equal(col, first);
    }
    row_context(untraced, 0, col, sizeof col);
    assert_string_equal(col, "|");
    ts_kafka_msg_t m;
    assert_true(ts_kafka_find(OTHER_TOPIC, traced, WAIT_MS, &m));
    const char *tp = ts_kafka_header(&m, "traceparent");
    assert_non_null(tp);
    deta_trace_ctx_t msg;
    parse(tp, &msg);
    assert_memory_equal(msg.trace_id, caller.trace_id, 16);
    ts_kafka_msg_free(&m);

    /* inside a span: every row, of either order, carries the span's context */
    deta_trace_ctx_t other;
    assert_true(deta_trace_ctx_from_headers(
        "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01", "k=v", &other));
    server = deta_span_begin("POST /each-2", DETA_SPAN_SERVER, &other);
    assert_non_null(server);
    deta_span_enter(server);
    const char *keys2[] = {untraced, traced};
    write_each(keys2, topics, 2);
    deta_span_end(server);
    char a[700], b[700];
    row_context(untraced, 1, a, sizeof a);
    row_context(traced, 3, b, sizeof b);
    assert_string_equal(a, b);
    assert_non_null(strstr(a, "|k=v"));
    *strchr(a, '|') = '\0';
    deta_trace_ctx_t row;
    parse(a, &row);
    assert_memory_equal(row.trace_id, other.trace_id, 16);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(row_inside_a_span),
        cmocka_unit_test(row_outside_any_trace),
        cmocka_unit_test(rows_of_several_orders),
    };
    return cmocka_run_group_tests_name("trace outbox", tests, setup, teardown);
}
