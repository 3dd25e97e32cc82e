/*
 * test_consumer_batches.c - order-service's and inventory-service's consumers
 * apply the events a worker finds queued in one transaction (deta/batch.h),
 * against the real test stack.
 *
 * Each test sends its events in one producer batch, so that they reach the
 * consumer together and queue up behind one another on its workers (every
 * event of an order goes to one worker), with a bad event between two good ones
 * of one order. It then checks that every good event was applied, that the bad
 * one was dead-lettered alone (once, by this service's group), and that the
 * service handed its topic's events to the batch handler several at once: a
 * batch committed (deta_consumer_batches_total{outcome="committed"}) and the
 * topic's deta_consumer_batch_size holds more messages than handings. Which
 * events share a batch depends on timing, so the test asserts only that some
 * did; with batching off both metrics stand still and the test fails.
 *
 * order-service: inventory-service is stopped meanwhile, so that the orders the
 * test places stay CREATED until its inventory.reserved events move them.
 * inventory-service: payment-service is stopped meanwhile, so that nothing else
 * consumes or settles the holds; the test plays order-service, then
 * payment-service (every hold authorized at once: those batches lock the
 * reservations and the stock of their items first, and none falls back).
 */
#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <libpq-fe.h>

#include "deta/config.h"
#include "deta/kafka.h"
#include "deta/states.h"
#include "deta/topics.h"
#include "testsupport.h"

#define ORDERS 8
#define MAX_MSGS (3 * ORDERS + 2)

/* The events to send: texts owned here, keys borrowed. */
typedef struct outbox {
    deta_kafka_out_t msgs[MAX_MSGS];
    char *texts[MAX_MSGS];
    size_t n;
} outbox_t;

static void add(outbox_t *o, const char *topic, const char *key, char *text) {
    assert_true(o->n < MAX_MSGS);
    o->texts[o->n] = text;
    o->msgs[o->n] = (deta_kafka_out_t){
        .topic = topic, .key = key, .value = text, .len = strlen(text)};
    o->n++;
}

static void send_and_free(outbox_t *o) {
    ts_kafka_send_together("it-consumer-batches", o->msgs, o->n);
    for (size_t i = 0; i < o->n; i++)
        free(o->texts[i]);
}

/* What the service's metrics say about its batches of topic. */
typedef struct batch_figures {
    double committed;   /* batches committed in one transaction */
    double one_by_one;  /* batches that fell back to one at a time */
    double extra;       /* messages handed in batches beyond one per handing */
} batch_figures_t;

static double metric_or_zero(const char *url_var, const char *series) {
    double v = ts_metric(url_var, series);
    return v < 0 ? 0 : v;
}

static batch_figures_t batch_figures(const char *url_var, const char *group, const char *topic) {
    char sum[256], count[256];
    snprintf(sum, sizeof sum, "deta_consumer_batch_size_sum{group=\"%s\",topic=\"%s\"}", group,
             topic);
    snprintf(count, sizeof count, "deta_consumer_batch_size_count{group=\"%s\",topic=\"%s\"}",
             group, topic);
    batch_figures_t f = {
        metric_or_zero(url_var, "deta_consumer_batches_total{outcome=\"committed\"}"),
        metric_or_zero(url_var, "deta_consumer_batches_total{outcome=\"one_at_a_time\"}"),
        metric_or_zero(url_var, sum) - metric_or_zero(url_var, count)};
    return f;
}

static void expect_batched(const batch_figures_t *before, const batch_figures_t *after) {
    if (!(after->committed > before->committed))
        fail_msg("no batch committed (deta_consumer_batches_total{outcome=\"committed\"} "
                 "%.0f -> %.0f)",
                 before->committed, after->committed);
    if (!(after->extra > before->extra))
        fail_msg("no handing of several messages at once (batch size sum - count %.0f -> %.0f)",
                 before->extra, after->extra);
}

/* The dead letter of key on dlq_topic by group, once, its x-error naming why. */
static void expect_dead_letter_alone(const char *dlq_topic, const char *key, const char *group,
                                     const char *why) {
    ts_kafka_msg_t m;
    if (!ts_kafka_find_where(dlq_topic, key, "x-consumer-group", group, 20000, &m))
        fail_msg("no dead letter of %s on %s by %s", key, dlq_topic, group);
    const char *error = ts_kafka_header(&m, "x-error");
    if (!error || !strstr(error, why))
        fail_msg("dead letter's x-error %s does not name %s", error ? error : "(none)", why);
    ts_kafka_msg_free(&m);
    assert_int_equal(ts_kafka_count_where(dlq_topic, key, "x-consumer-group", group, 5000), 1);
}

/* Polls until the text of sql's first cell for param is want. */
static void await_text(PGconn *db, const char *sql, const char *param, const char *want) {
    char got[64] = "";
    for (int i = 0; i < 300; i++) {
        const char *params[] = {param};
        PGresult *r = PQexecParams(db, sql, 1, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK)
            fail_msg("%s: %s", sql, PQerrorMessage(db));
        snprintf(got, sizeof got, "%s", PQntuples(r) ? PQgetvalue(r, 0, 0) : "");
        PQclear(r);
        if (strcmp(got, want) == 0)
            return;
        ts_sleep_ms(100);
    }
    fail_msg("%s for %s: %s, expected %s", sql, param, got, want);
}

/* The orders each test sets going, which go on once the stopped service is
 * back: the group's teardown waits for them to end, so that no later test sees
 * their events. */
static char order_test_orders[ORDERS][37], inventory_test_orders[ORDERS][37];

static void await_ended(char (*ids)[37]) {
    if (ids[0][0] && !ts_orders_await(ids, ORDERS, NULL, 60000))
        fail_msg("the test's orders did not reach an end state once the service was back");
}

/* ---- order-service ---- */

static int inventory_stopped(void **state) {
    (void)state;
    ts_stack_ok("stop inventory-service");
    return 0;
}

static int inventory_back(void **state) {
    (void)state;
    ts_stack_ok("start inventory-service");
    await_ended(order_test_orders);
    return 0;
}

static char *reserved(const char *order, const char *payload_order) {
    return ts_event_by("inventory-service", DETA_EVT_INVENTORY_RESERVED, order, NULL,
                       json_pack("{s:s}", "orderId", payload_order), NULL);
}

/* order-service's count of inventory.reserved events with outcome. */
static double reserved_outcome(const char *outcome) {
    char series[160];
    snprintf(series, sizeof series, "deta_events_total{type=\"%s\",outcome=\"%s\"}",
             DETA_EVT_INVENTORY_RESERVED, outcome);
    return metric_or_zero("ORDER_SERVICE_URL", series);
}

/* Polls until order-service counted want more inventory.reserved events with
 * outcome than was. */
static void await_outcomes(const char *outcome, double was, double want) {
    double got = 0;
    for (int i = 0; i < 200; i++) {
        got = reserved_outcome(outcome) - was;
        if (got >= want)
            break;
        ts_sleep_ms(100);
    }
    if (got != want)
        fail_msg("inventory.reserved outcome %s: %g more, expected %g", outcome, got, want);
}

static void order_service_applies_a_batch_and_dead_letters_its_bad_event_alone(void **state) {
    (void)state;
    const char *url = "ORDER_SERVICE_URL", *topic = DETA_TOPIC_INVENTORY_EVENTS;
    char orders[ORDERS][37], stranger[37], unknown[37];
    for (int k = 0; k < ORDERS; k++)
        assert_int_equal(ts_order_place("cust-batch", "sku-batch", 1, orders[k]), 201);
    ts_uuid(stranger);
    ts_uuid(unknown);
    memcpy(order_test_orders, orders, sizeof orders);
    batch_figures_t before = batch_figures(url, "order-service", topic);
    double applied = reserved_outcome("applied"), unchanged = reserved_outcome("unchanged"),
           unknown_order = reserved_outcome("unknown_order");

    /* Each order's inventory.reserved twice (the second changes nothing); order
     * 0's pair has a bad one between them: its payload names another order; and
     * one of an order order-service does not know. The status changes of a
     * batch go in one statement (order_store_fold_status): each event's outcome
     * is still the one it would have had alone. */
    outbox_t o = {.n = 0};
    for (int k = 0; k < ORDERS; k++) {
        add(&o, topic, orders[k], reserved(orders[k], orders[k]));
        if (k == 0)
            add(&o, topic, orders[k], reserved(orders[k], stranger));
        add(&o, topic, orders[k], reserved(orders[k], orders[k]));
        if (k == ORDERS / 2)
            add(&o, topic, unknown, reserved(unknown, unknown));
    }
    send_and_free(&o);

    PGconn *db = ts_pg("order_db");
    for (int k = 0; k < ORDERS; k++)
        await_text(db, "SELECT status FROM orders WHERE order_id = $1", orders[k],
                   DETA_STATE_INVENTORY_RESERVED);
    PQfinish(db);
    expect_dead_letter_alone(DETA_TOPIC_DLQ_INVENTORY_EVENTS, orders[0], "order-service",
                             "orderId");
    await_outcomes("applied", applied, ORDERS);
    await_outcomes("unchanged", unchanged, ORDERS);
    await_outcomes("unknown_order", unknown_order, 1);
    batch_figures_t after = batch_figures(url, "order-service", topic);
    expect_batched(&before, &after);
    /* the bad event was refused inside its batch, not by a fallback */
    assert_true(after.one_by_one == before.one_by_one);
}

/* ---- inventory-service ---- */

static int payment_stopped(void **state) {
    (void)state;
    ts_stack_ok("stop payment-service");
    return 0;
}

static int payment_back(void **state) {
    (void)state;
    ts_stack_ok("start payment-service");
    await_ended(inventory_test_orders);
    return 0;
}

static char *order_created(const char *order, const char *item, int qty) {
    json_t *items = json_pack("[{s:s, s:i, s:s}]", "itemId", item, "quantity", qty,
                              "unitPrice", "1.50");
    json_t *p = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:o}", "orderId", order,
                          "customerId", "cust-batch", "totalAmount", "1.50", "currency", "EUR",
                          "status", DETA_STATE_CREATED, "createdAt", "2026-11-25T12:38:05.123Z",
                          "items", items);
    return ts_event_by("order-service", DETA_EVT_ORDER_CREATED, order, NULL, p, NULL);
}

static char *authorized(const char *order) {
    char payment[37];
    ts_uuid(payment);
    json_t *p = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "orderId", order, "paymentId",
                          payment, "customerId", "cust-batch", "amount", "1.50", "currency",
                          "EUR", "authorizedAt", "2026-11-25T12:38:06.123Z");
    return ts_event(DETA_EVT_PAYMENT_AUTHORIZED, order, NULL, p, NULL);
}

/* The test playing payment-service: every order's hold authorized at once. Their
 * batches lock the reservations and then the stock of their items first
 * (events.c, batch_lock), so none falls back to one at a time. */
static void settle_in_batches(char (*orders)[37], const char *item) {
    const char *url = "INVENTORY_SERVICE_URL", *topic = DETA_TOPIC_PAYMENT_EVENTS;
    batch_figures_t before = batch_figures(url, "inventory-service", topic);
    outbox_t o = {.n = 0};
    for (int k = 0; k < ORDERS; k++)
        add(&o, topic, orders[k], authorized(orders[k]));
    send_and_free(&o);
    PGconn *db = ts_pg("inventory_db");
    for (int k = 0; k < ORDERS; k++)
        await_text(db, "SELECT status FROM reservations WHERE order_id = $1", orders[k], "SOLD");
    char sold[16];
    snprintf(sold, sizeof sold, "%d", ORDERS);
    await_text(db, "SELECT sold FROM stock WHERE item_id = $1", item, sold);
    await_text(db, "SELECT held FROM stock WHERE item_id = $1", item, "0");
    PQfinish(db);
    batch_figures_t after = batch_figures(url, "inventory-service", topic);
    expect_batched(&before, &after);
    assert_true(after.one_by_one == before.one_by_one);
}

static void inventory_applies_a_batch_and_dead_letters_its_bad_event_alone(void **state) {
    (void)state;
    const char *url = "INVENTORY_SERVICE_URL", *topic = DETA_TOPIC_ORDER_EVENTS;
    char item[48], uuid[37], orders[ORDERS][37];
    ts_uuid(uuid);
    snprintf(item, sizeof item, "inv-batch-%.8s", uuid);
    ts_stock_set(item, 100);
    batch_figures_t before = batch_figures(url, "inventory-service", topic);

    /* Each order's order.created twice (another event id: the second finds the
     * reservation); order 0's pair has a bad one between them: quantity 0. */
    outbox_t o = {.n = 0};
    for (int k = 0; k < ORDERS; k++) {
        ts_uuid(orders[k]);
        add(&o, topic, orders[k], order_created(orders[k], item, 1));
        if (k == 0)
            add(&o, topic, orders[k], order_created(orders[k], item, 0));
        add(&o, topic, orders[k], order_created(orders[k], item, 1));
    }
    memcpy(inventory_test_orders, orders, sizeof orders);
    send_and_free(&o);

    PGconn *db = ts_pg("inventory_db");
    for (int k = 0; k < ORDERS; k++)
        await_text(db, "SELECT status FROM reservations WHERE order_id = $1", orders[k],
                   "HELD");
    /* one unit held per order, however often its order.created came */
    char held[16];
    snprintf(held, sizeof held, "%d", ORDERS);
    await_text(db, "SELECT held FROM stock WHERE item_id = $1", item, held);
    PQfinish(db);
    expect_dead_letter_alone(DETA_TOPIC_DLQ_ORDER_EVENTS, orders[0], "inventory-service",
                             "quantity");
    batch_figures_t after = batch_figures(url, "inventory-service", topic);
    expect_batched(&before, &after);
    assert_true(after.one_by_one == before.one_by_one);
    settle_in_batches(orders, item);
}

int main(void) {
    const struct CMUnitTest order_tests[] = {
        cmocka_unit_test(order_service_applies_a_batch_and_dead_letters_its_bad_event_alone),
    };
    const struct CMUnitTest inventory_tests[] = {
        cmocka_unit_test(inventory_applies_a_batch_and_dead_letters_its_bad_event_alone),
    };
    int failed = cmocka_run_group_tests(order_tests, inventory_stopped, inventory_back);
    return failed + cmocka_run_group_tests(inventory_tests, payment_stopped, payment_back);
}
