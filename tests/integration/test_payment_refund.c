/*
 * test_payment_refund.c - payment-service's part of the cancellation saga and
 * its refunds (docs/contracts.md "Cancellation", "Refunds"), against the real
 * test stack: inventory.reserved, inventory.cancel_forwarded and
 * delivery.cancelled are injected with fresh order ids, and the outcome is read
 * from raw.payment-events, delivery_eta, the gateway's ledger, the REST API and
 * the metrics.
 *
 *   - a forward after an authorization: payment.cancel_forwarded, once, however
 *     often the forward comes (redelivered, or again with a new eventId);
 *   - a forward after a decline: payment.cancel_refused (PAYMENT_FAILED);
 *   - a forward before any inventory.reserved: payment.cancelled, and the late
 *     reservation is not charged (no charge in the ledger, no payment event);
 *   - a forward while another instance's charge holds the order's claim (held
 *     from the test's own connection): it waits, and once the charge is recorded
 *     it forwards; the order is never both cancelled and charged;
 *   - delivery.cancelled: one refund of the whole charge in the ledger, one
 *     payment.refunded, the refund on GET /api/payments; redelivered, and again
 *     with a new eventId, still one; an order without an authorized payment is
 *     skipped, not dead-lettered;
 *   - all of that with Redis stopped (the service DEGRADED): still one refund;
 *   - malformed forwards and cancels are dead-lettered naming the field.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deta/envelope.h"
#include "deta/topics.h"
#include "testsupport.h"

#define WAIT_MS 60000

/* ---- events ---- */

static void inject_reserved(const char *order, const char *customer, const char *amount) {
    json_t *payload = json_pack("{s:s, s:s, s:s, s:s, s:s, s:[{s:s, s:i}], s:s}", "orderId",
                                order, "reservationId", "res-refund", "customerId", customer,
                                "totalAmount", amount, "currency", "EUR", "items", "itemId",
                                "sku-1", "quantity", 1, "reservedAt", "2026-11-25T12:00:00.000Z");
    assert_non_null(payload);
    char *text = ts_event(DETA_EVT_INVENTORY_RESERVED, order, NULL, payload, NULL);
    ts_kafka_produce(DETA_TOPIC_INVENTORY_EVENTS, order, text);
    free(text);
}

/* A serialized inventory.cancel_forwarded (malloc'd), as inventory-service sends it. */
static char *forward_event(const char *order) {
    json_t *payload = json_pack("{s:s, s:s, s:s, s:s, s:s}", "orderId", order, "reservationId",
                                "res-refund", "reason", "changed my mind", "requestedAt",
                                "2026-11-25T12:01:00.000Z", "forwardedAt",
                                "2026-11-25T12:01:01.000Z");
    assert_non_null(payload);
    return ts_event(DETA_EVT_INVENTORY_CANCEL_FORWARDED, order, NULL, payload, NULL);
}

/* A serialized delivery.cancelled (malloc'd), as delivery-service sends it. */
static char *delivery_cancelled_event(const char *order) {
    json_t *payload = json_pack("{s:s, s:s, s:n, s:n, s:s, s:s, s:s, s:s}", "orderId", order,
                                "stage", "WAITING", "deliveryId", "driverId", "paymentId",
                                "00000000-0000-4000-8000-000000000000", "reason",
                                "changed my mind", "requestedAt", "2026-11-25T12:01:00.000Z",
                                "cancelledAt", "2026-11-25T12:01:02.000Z");
    assert_non_null(payload);
    return ts_event(DETA_EVT_DELIVERY_CANCELLED, order, NULL, payload, NULL);
}

static void produce(const char *topic, const char *order, char *text) {
    ts_kafka_produce(topic, order, text);
    free(text);
}

/* ---- the database, the ledger, the metrics ---- */

static long rows_of(const char *table, const char *order) {
    PGconn *db = ts_pg("delivery_eta");
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE order_id = $1", table);
    const char *params[] = {order};
    long n = ts_pg_long(db, sql, 1, params);
    PQfinish(db);
    return n;
}

static void await_rows(const char *table, const char *order, long want) {
    long n = 0;
    for (int waited = 0; waited < WAIT_MS; waited += 200, ts_sleep_ms(200))
        if ((n = rows_of(table, order)) >= want)
            break;
    if (n != want)
        fail_msg("order %s: %ld rows in %s, expected %ld", order, n, table, want);
}

/* One text column of the order's row in table (malloc'd). */
static char *column_of(const char *table, const char *column, const char *order) {
    PGconn *db = ts_pg("delivery_eta");
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT %s::text FROM %s WHERE order_id = $1", column, table);
    const char *params[] = {order};
    PGresult *r = PQexecParams(db, sql, 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        fail_msg("%s of %s: %s", column, order, PQerrorMessage(db));
    char *v = strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(db);
    return v;
}

/* The refund lines of the gateway's ledger for the order (ts_ledger_charges
 * counts charge lines only). */
static int ledger_refunds(const char *order) {
    FILE *f = fopen(ts_env("PAYMENT_GATEWAY_LEDGER"), "r");
    if (!f)
        return 0;
    char line[512], want[64];
    snprintf(want, sizeof want, "refund %s ", order);
    int n = 0;
    while (fgets(line, sizeof line, f))
        n += strncmp(line, want, strlen(want)) == 0;
    fclose(f);
    return n;
}

static double metric(const char *series) {
    double v = ts_metric("PAYMENT_SERVICE_URL", series);
    return v < 0 ? 0 : v;
}

static void await_metric_at_least(const char *series, double want) {
    for (int waited = 0; waited < WAIT_MS; waited += 200, ts_sleep_ms(200))
        if (metric(series) >= want)
            return;
    fail_msg("%s stayed at %g, below %g", series, metric(series), want);
}

/* ---- raw.payment-events ---- */

/* How many of the order's payment events are of type (reads the topic to its end). */
static int events_of_type(const char *order, const char *type) {
    int n = ts_kafka_count(DETA_TOPIC_PAYMENT_EVENTS, order, 10000);
    if (n == 0)
        return 0;
    ts_kafka_msg_t *msgs = calloc((size_t)n, sizeof *msgs);
    assert_non_null(msgs);
    int got = ts_kafka_collect(DETA_TOPIC_PAYMENT_EVENTS, order, n, 10000, msgs, n);
    int count = 0;
    for (int i = 0; i < got; i++) {
        json_t *v = json_loads(msgs[i].value, 0, NULL);
        const char *t = json_string_value(json_object_get(v, "eventType"));
        count += t && strcmp(t, type) == 0;
        json_decref(v);
        ts_kafka_msg_free(&msgs[i]);
    }
    free(msgs);
    return count;
}

/* The payload of the order's first event of type, waiting for it; validated. */
static json_t *await_event(const char *order, const char *type) {
    for (int waited = 0; waited < WAIT_MS; waited += 500, ts_sleep_ms(500)) {
        int n = ts_kafka_count(DETA_TOPIC_PAYMENT_EVENTS, order, 5000);
        ts_kafka_msg_t msgs[16];
        int got = n ? ts_kafka_collect(DETA_TOPIC_PAYMENT_EVENTS, order, n, 5000, msgs, 16) : 0;
        json_t *found = NULL;
        for (int i = 0; i < got; i++) {
            deta_event_t ev;
            char err[256];
            if (deta_event_parse(msgs[i].value, strlen(msgs[i].value), &ev, err, sizeof err))
                fail_msg("payment event does not validate: %s: %s", err, msgs[i].value);
            if (!found && strcmp(ev.event_type, type) == 0) {
                assert_string_equal(ev.producer, "payment-service");
                found = json_incref(ev.payload);
            }
            deta_event_clear(&ev);
            ts_kafka_msg_free(&msgs[i]);
        }
        if (found)
            return found;
    }
    fail_msg("no %s for order %s", type, order);
    return NULL;
}

static void expect_str(const json_t *o, const char *key, const char *want) {
    const char *v = json_string_value(json_object_get(o, key));
    if (!v || strcmp(v, want) != 0)
        fail_msg("%s is %s, expected %s", key, v ? v : "(absent)", want);
}

/* An authorized payment of amount for a fresh order. */
static void paid_order(char order[37], const char *amount) {
    ts_uuid(order);
    inject_reserved(order, "cust-refund", amount);
    await_rows("payments", order, 1);
    char *status = column_of("payments", "status", order);
    assert_string_equal(status, "AUTHORIZED");
    free(status);
}

#define CANCEL_DUPLICATES "payment_cancel_duplicate_total"
#define REFUND_DUPLICATES "payment_refund_duplicate_total"

/* ---- the cancel's forward ---- */

static void forward_after_authorization_is_forwarded_once(void **state) {
    (void)state;
    char order[37];
    paid_order(order, "7.00");
    char *text = forward_event(order);
    double dups = metric(CANCEL_DUPLICATES);
    ts_kafka_produce(DETA_TOPIC_INVENTORY_EVENTS, order, text);
    json_t *p = await_event(order, DETA_EVT_PAYMENT_CANCEL_FORWARDED);
    char *payment_id = column_of("payments", "payment_id", order);
    expect_str(p, "orderId", order);
    expect_str(p, "paymentId", payment_id);
    expect_str(p, "reason", "changed my mind");
    expect_str(p, "requestedAt", "2026-11-25T12:01:00.000Z");
    assert_non_null(json_string_value(json_object_get(p, "forwardedAt")));
    assert_int_equal(json_object_size(p), 5);
    json_decref(p);
    free(payment_id);
    char *verdict = column_of("payment_cancellations", "verdict", order);
    assert_string_equal(verdict, "FORWARDED");
    free(verdict);

    /* redelivered, and once more with a new eventId: nothing more */
    ts_kafka_produce(DETA_TOPIC_INVENTORY_EVENTS, order, text);
    free(text);
    produce(DETA_TOPIC_INVENTORY_EVENTS, order, forward_event(order));
    await_metric_at_least(CANCEL_DUPLICATES, dups + 2);
    assert_int_equal(events_of_type(order, DETA_EVT_PAYMENT_CANCEL_FORWARDED), 1);
    assert_int_equal(events_of_type(order, DETA_EVT_PAYMENT_CANCELLED), 0);
    assert_int_equal(ts_ledger_charges(order), 1);
}

static void forward_after_decline_is_refused(void **state) {
    (void)state;
    char order[37];
    ts_uuid(order);
    inject_reserved(order, "decline-refund", "3.00");
    await_rows("payments", order, 1);
    produce(DETA_TOPIC_INVENTORY_EVENTS, order, forward_event(order));
    json_t *p = await_event(order, DETA_EVT_PAYMENT_CANCEL_REFUSED);
    expect_str(p, "orderId", order);
    expect_str(p, "orderStatus", "PAYMENT_FAILED");
    expect_str(p, "reason", "changed my mind");
    expect_str(p, "requestedAt", "2026-11-25T12:01:00.000Z");
    assert_non_null(json_string_value(json_object_get(p, "refusedAt")));
    json_decref(p);
    assert_int_equal(events_of_type(order, DETA_EVT_PAYMENT_CANCEL_FORWARDED), 0);
    assert_int_equal(events_of_type(order, DETA_EVT_PAYMENT_CANCELLED), 0);
}

/* The forward overtook the reservation (inventory-service recorded it before
 * payment-service saw inventory.reserved, or that was dead-lettered): the cancel
 * wins, and the late reservation is never charged. */
static void forward_before_reservation_fences_the_charge(void **state) {
    (void)state;
    char order[37];
    ts_uuid(order);
    produce(DETA_TOPIC_INVENTORY_EVENTS, order, forward_event(order));
    json_t *p = await_event(order, DETA_EVT_PAYMENT_CANCELLED);
    expect_str(p, "orderId", order);
    expect_str(p, "stage", "NONE");
    expect_str(p, "reservationId", "res-refund");
    expect_str(p, "reason", "changed my mind");
    assert_non_null(json_string_value(json_object_get(p, "cancelledAt")));
    json_decref(p);
    assert_int_equal(rows_of("payment_cancellations", order), 1);

    double fenced = metric("payment_cancelled_before_charge_total");
    inject_reserved(order, "cust-fenced", "4.00");
    await_metric_at_least("payment_cancelled_before_charge_total", fenced + 1);
    assert_int_equal(rows_of("payments", order), 0);
    assert_int_equal(rows_of("payment_attempts", order), 0);
    assert_int_equal(ts_ledger_charges(order), 0);
    assert_int_equal(ts_kafka_count(DETA_TOPIC_PAYMENT_EVENTS, order, 10000), 1);
}

/* Another instance's charge of the order is in flight: it holds the order's
 * claim (here, from the test's own connection). The forward must wait for it,
 * not fence the order; once the charge is recorded (by the "other instance",
 * in one transaction with the end of its claim), the forward goes on. */
static void forward_waits_for_a_charge_in_flight(void **state) {
    (void)state;
    char order[37], holder[37], payment_id[37], event_id[37];
    ts_uuid(order);
    ts_uuid(holder);
    ts_uuid(payment_id);
    ts_uuid(event_id);
    PGconn *other = ts_pg("delivery_eta");
    const char *claim[] = {order, holder};
    assert_int_equal(ts_pg_long(other,
                                "WITH c AS (INSERT INTO payment_claims (order_id, holder,"
                                " expires_at) VALUES ($1, $2, now() + interval '10 minutes')"
                                " RETURNING 1) SELECT count(*) FROM c",
                                2, claim),
                     1);
    double timeouts = metric("payment_lock_timeout_total");
    produce(DETA_TOPIC_INVENTORY_EVENTS, order, forward_event(order));
    await_metric_at_least("payment_lock_timeout_total", timeouts + 2);
    assert_int_equal(rows_of("payment_cancellations", order), 0);
    assert_int_equal(ts_kafka_count(DETA_TOPIC_PAYMENT_EVENTS, order, 5000), 0);

    const char *record[] = {payment_id, order, event_id, holder};
    assert_int_equal(ts_pg_long(other,
                                "WITH p AS (INSERT INTO payments (payment_id, order_id,"
                                " idempotency_key, customer_id, amount, currency, status,"
                                " created_at) VALUES ($1, $2, $3, 'cust-inflight', 6.00, 'EUR',"
                                " 'AUTHORIZED', now()) RETURNING 1),"
                                " c AS (DELETE FROM payment_claims WHERE order_id = $2"
                                " AND holder = $4 RETURNING 1)"
                                " SELECT (SELECT count(*) FROM p) + (SELECT count(*) FROM c)",
                                4, record),
                     2);
    PQfinish(other);
    json_t *p = await_event(order, DETA_EVT_PAYMENT_CANCEL_FORWARDED);
    expect_str(p, "paymentId", payment_id);
    json_decref(p);
    assert_int_equal(events_of_type(order, DETA_EVT_PAYMENT_CANCELLED), 0);
    char *verdict = column_of("payment_cancellations", "verdict", order);
    assert_string_equal(verdict, "FORWARDED");
    free(verdict);
}

/* ---- refunds ---- */

static json_t *payment_over_rest(const char *order) {
    char path[96];
    snprintf(path, sizeof path, "/api/payments/%s", order);
    ts_http_resp_t r;
    ts_http("GET", "PAYMENT_SERVICE_URL", path, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    json_t *body = json_incref(r.json);
    ts_http_resp_free(&r);
    return body;
}

/* One refund of the whole charge, one payment.refunded, the refund over REST;
 * again and again, still one. */
static void expect_refunded_once(const char *order, const char *amount, double dups,
                                 int more) {
    json_t *p = await_event(order, DETA_EVT_PAYMENT_REFUNDED);
    char *payment_id = column_of("payments", "payment_id", order);
    char *refund_id = column_of("refunds", "refund_id", order);
    char *refunded = column_of("refunds", "amount", order);
    expect_str(p, "orderId", order);
    expect_str(p, "paymentId", payment_id);
    expect_str(p, "refundId", refund_id);
    expect_str(p, "amount", amount);
    expect_str(p, "currency", "EUR");
    expect_str(p, "reason", "ORDER_CANCELLED");
    assert_non_null(json_string_value(json_object_get(p, "refundedAt")));
    assert_string_equal(refunded, amount);
    json_decref(p);

    json_t *body = payment_over_rest(order);
    json_t *refund = json_object_get(body, "refund");
    expect_str(refund, "refundId", refund_id);
    expect_str(refund, "amount", amount);
    expect_str(refund, "currency", "EUR");
    expect_str(refund, "reason", "ORDER_CANCELLED");
    assert_non_null(json_string_value(json_object_get(refund, "refundedAt")));
    json_decref(body);
    free(payment_id);
    free(refund_id);
    free(refunded);

    await_metric_at_least(REFUND_DUPLICATES, dups + more);
    assert_int_equal(ledger_refunds(order), 1);
    assert_int_equal(ts_ledger_charges(order), 1);
    assert_int_equal(rows_of("refunds", order), 1);
    assert_int_equal(rows_of("refund_attempts", order), 0);
    assert_int_equal(events_of_type(order, DETA_EVT_PAYMENT_REFUNDED), 1);
}

static void delivery_cancelled_is_refunded_once(void **state) {
    (void)state;
    char order[37];
    paid_order(order, "12.34");
    json_t *before = payment_over_rest(order);
    assert_true(json_is_null(json_object_get(before, "refund")));
    json_decref(before);

    double refunded = metric("payment_refunded_total"), dups = metric(REFUND_DUPLICATES);
    char *text = delivery_cancelled_event(order);
    ts_kafka_produce(DETA_TOPIC_DELIVERY_EVENTS, order, text);
    await_rows("refunds", order, 1);
    /* redelivered, and a second delivery.cancelled with a new eventId */
    ts_kafka_produce(DETA_TOPIC_DELIVERY_EVENTS, order, text);
    free(text);
    produce(DETA_TOPIC_DELIVERY_EVENTS, order, delivery_cancelled_event(order));
    expect_refunded_once(order, "12.34", dups, 2);
    assert_true(metric("payment_refunded_total") >= refunded + 1);
}

static void order_without_authorized_payment_is_not_refunded(void **state) {
    (void)state;
    char declined[37], unknown[37];
    ts_uuid(declined);
    ts_uuid(unknown);
    inject_reserved(declined, "decline-norefund", "2.00");
    await_rows("payments", declined, 1);
    double skipped = metric("payment_refund_skipped_total");
    produce(DETA_TOPIC_DELIVERY_EVENTS, declined, delivery_cancelled_event(declined));
    produce(DETA_TOPIC_DELIVERY_EVENTS, unknown, delivery_cancelled_event(unknown));
    await_metric_at_least("payment_refund_skipped_total", skipped + 2);
    assert_int_equal(rows_of("refunds", declined) + rows_of("refunds", unknown), 0);
    assert_int_equal(ledger_refunds(declined) + ledger_refunds(unknown), 0);
    assert_int_equal(events_of_type(declined, DETA_EVT_PAYMENT_REFUNDED), 0);
    assert_int_equal(ts_kafka_count_where(DETA_TOPIC_DLQ_DELIVERY_EVENTS, unknown,
                                          "x-consumer-group", "payment-service", 3000),
                     0);
}

static void malformed_cancel_events_are_dead_lettered(void **state) {
    (void)state;
    char order[37], other[37];
    ts_uuid(order);
    ts_uuid(other);
    json_t *payload = json_pack("{s:s, s:s, s:n}", "orderId", order, "reservationId", "r",
                                "reason"); /* no requestedAt */
    produce(DETA_TOPIC_INVENTORY_EVENTS, order,
            ts_event(DETA_EVT_INVENTORY_CANCEL_FORWARDED, order, NULL, payload, NULL));
    payload = json_pack("{s:s, s:s}", "orderId", order, "stage", "NONE"); /* another order's */
    produce(DETA_TOPIC_DELIVERY_EVENTS, other,
            ts_event(DETA_EVT_DELIVERY_CANCELLED, other, NULL, payload, NULL));
    ts_kafka_msg_t m;
    if (!ts_kafka_find_where(DETA_TOPIC_DLQ_INVENTORY_EVENTS, order, "x-consumer-group",
                             "payment-service", WAIT_MS, &m))
        fail_msg("the malformed forward was not dead-lettered");
    assert_non_null(strstr(ts_kafka_header(&m, "x-error"), "requestedAt"));
    ts_kafka_msg_free(&m);
    if (!ts_kafka_find_where(DETA_TOPIC_DLQ_DELIVERY_EVENTS, other, "x-consumer-group",
                             "payment-service", WAIT_MS, &m))
        fail_msg("the malformed delivery.cancelled was not dead-lettered");
    assert_non_null(strstr(ts_kafka_header(&m, "x-error"), "payload.orderId"));
    ts_kafka_msg_free(&m);
}

/* ---- without Redis ---- */

static void await_health(const char *status) {
    for (int waited = 0; waited < WAIT_MS; waited += 250, ts_sleep_ms(250)) {
        ts_http_resp_t r;
        ts_http("GET", "PAYMENT_SERVICE_URL", "/actuator/health", NULL, NULL, &r);
        const char *s = json_string_value(json_object_get(r.json, "status"));
        bool ok = s && strcmp(s, status) == 0;
        ts_http_resp_free(&r);
        if (ok)
            return;
    }
    fail_msg("payment-service's health never became %s", status);
}

static void without_redis_refunds_stay_exactly_once(void **state) {
    (void)state;
    assert_int_equal(ts_stack("stop redis"), 0);
    await_health("DEGRADED");
    char order[37];
    paid_order(order, "5.55");
    double dups = metric(REFUND_DUPLICATES);
    char *text = delivery_cancelled_event(order);
    for (int i = 0; i < 3; i++)
        ts_kafka_produce(DETA_TOPIC_DELIVERY_EVENTS, order, text);
    free(text);
    produce(DETA_TOPIC_DELIVERY_EVENTS, order, delivery_cancelled_event(order));
    expect_refunded_once(order, "5.55", dups, 3);

    /* and the forward: redelivered without its marker, still one verdict */
    double cdups = metric(CANCEL_DUPLICATES);
    text = forward_event(order);
    ts_kafka_produce(DETA_TOPIC_INVENTORY_EVENTS, order, text);
    ts_kafka_produce(DETA_TOPIC_INVENTORY_EVENTS, order, text);
    free(text);
    await_metric_at_least(CANCEL_DUPLICATES, cdups + 1);
    assert_int_equal(events_of_type(order, DETA_EVT_PAYMENT_CANCEL_FORWARDED), 1);
}

static int redis_back_up(void **state) {
    (void)state;
    ts_stack("start redis");
    await_health("UP");
    return 0;
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    if (getenv("TEST_FILTER"))
        cmocka_set_test_filter(getenv("TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(forward_after_authorization_is_forwarded_once),
        cmocka_unit_test(forward_after_decline_is_refused),
        cmocka_unit_test(forward_before_reservation_fences_the_charge),
        cmocka_unit_test(forward_waits_for_a_charge_in_flight),
        cmocka_unit_test(delivery_cancelled_is_refunded_once),
        cmocka_unit_test(order_without_authorized_payment_is_not_refunded),
        cmocka_unit_test(malformed_cancel_events_are_dead_lettered),
        cmocka_unit_test_teardown(without_redis_refunds_stay_exactly_once, redis_back_up),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
