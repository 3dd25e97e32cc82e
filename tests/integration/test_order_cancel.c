/*
 * test_order_cancel.c - order-service's cancel requests and its following of the
 * order's events, against the real test stack.
 *
 * Most orders here are written straight into order_db by the test (new_order):
 * no order.created goes out for them, so no other service starts their saga,
 * and the test drives their events itself (injected on the raw topics with
 * full payloads, as the services would write them). A cancel request that the
 * test wants kept from the saga is marked in the row directly (mark_requested),
 * so that no order.cancel_requested goes out either; the tests that do publish
 * one accept a verdict that the other services may send back on a branch where
 * they implement the saga (202 REQUESTED, or 200 once CANCELLED), and check
 * what order-service itself writes: exactly one request.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deta/envelope.h"
#include "deta/states.h"
#include "deta/topics.h"
#include "testsupport.h"

#define AWAIT_MS 60000

static PGconn *db; /* order_db, the test's own connection */

static int group_setup(void **state) {
    (void)state;
    db = ts_pg("order_db");
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    PQfinish(db);
    return 0;
}

static void pg_run(const char *sql, int n, const char *const *params) {
    PGresult *res = PQexecParams(db, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(db));
    PQclear(res);
}

/* A column of the order's row as text ("" for NULL). */
static void order_column(const char *id, const char *column, char *out, size_t size) {
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT %s FROM orders WHERE order_id = $1", column);
    const char *params[] = {id};
    PGresult *res = PQexecParams(db, sql, 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
        fail_msg("%s: %s", sql, PQerrorMessage(db));
    snprintf(out, size, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
}

/* An order as order-service would have written it, status CREATED. */
static void new_order(char id[37]) {
    char corr[37];
    ts_uuid(id);
    ts_uuid(corr);
    const char *params[] = {id, corr};
    pg_run("INSERT INTO orders (order_id, customer_id, currency, total_amount, status,"
           " correlation_id, created_at, updated_at)"
           " VALUES ($1, 'cust-cancel', 'USD', 5.00, 'CREATED', $2, now(), now())",
           2, params);
    pg_run("INSERT INTO order_items (order_id, line_no, item_id, quantity, unit_price)"
           " VALUES ($1, 1, 'sku-cancel', 2, 2.50)",
           1, params);
}

/* A cancel request whose event the test keeps from the saga. */
static void mark_requested(const char *id) {
    const char *params[] = {id};
    pg_run("UPDATE orders SET cancel_status = 'REQUESTED', cancel_reason = 'test',"
           " cancel_requested_at = now() WHERE order_id = $1",
           1, params);
}

static long outbox_requests(const char *id) {
    const char *params[] = {id};
    return ts_pg_long(db,
                      "SELECT count(*) FROM outbox WHERE msg_key = $1"
                      " AND payload::jsonb->>'eventType' = 'order.cancel_requested'",
                      1, params);
}

static void cancel(const char *id, const char *content_type, const char *body,
                   ts_http_resp_t *r) {
    char path[128];
    snprintf(path, sizeof path, "/api/orders/%s/cancel", id);
    ts_http("POST", "ORDER_SERVICE_URL", path, content_type, body, r);
}

static void get_order(const char *id, ts_http_resp_t *r) {
    char path[128];
    snprintf(path, sizeof path, "/api/orders/%s", id);
    ts_http("GET", "ORDER_SERVICE_URL", path, NULL, NULL, r);
    if (r->status != 200 || !r->json)
        fail_msg("GET %s: %ld %s", path, r->status, r->body);
}

static const char *str(const json_t *obj, const char *key) {
    return json_string_value(json_object_get(obj, key));
}

static const char *cancellation_status(const json_t *order) {
    return str(json_object_get(order, "cancellation"), "status");
}

/* Polls GET until the order's status is want_status (when not NULL) and its
 * cancellation's status is want_cancel (when not NULL). */
static void await_order(const char *id, const char *want_status, const char *want_cancel) {
    for (int waited = 0;; waited += 100) {
        ts_http_resp_t r;
        get_order(id, &r);
        const char *s = str(r.json, "status"), *c = cancellation_status(r.json);
        bool ok = (!want_status || (s && strcmp(s, want_status) == 0)) &&
                  (!want_cancel || (c && strcmp(c, want_cancel) == 0));
        if (ok) {
            ts_http_resp_free(&r);
            return;
        }
        if (waited >= AWAIT_MS)
            fail_msg("order %s: status %s, cancellation %s after %d ms; wanted %s, %s", id, s,
                     c ? c : "null", waited, want_status ? want_status : "any",
                     want_cancel ? want_cancel : "any");
        ts_http_resp_free(&r);
        ts_sleep_ms(100);
    }
}

/* ---- injected events, with the payloads of docs/contracts.md ---- */

static void inject(const char *topic, const char *type, const char *id, json_t *payload) {
    char *text = ts_event(type, id, NULL, payload, NULL);
    ts_kafka_produce(topic, id, text);
    free(text);
}

static json_t *picked_up(const char *id) {
    char now[DETA_TS_LEN], delivery[37];
    deta_timestamp_now(now);
    ts_uuid(delivery);
    return json_pack("{s:s, s:s, s:s, s:s, s:s}", "orderId", id, "deliveryId", delivery,
                     "driverId", "driver-01", "pickedUpAt", now, "estimatedDeliveryAt", now);
}

static json_t *assigned(const char *id) {
    char now[DETA_TS_LEN], delivery[37];
    deta_timestamp_now(now);
    ts_uuid(delivery);
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "orderId", id, "deliveryId", delivery,
                     "driverId", "driver-01", "driverName", "Driver 01", "assignedAt", now,
                     "estimatedDeliveryAt", now);
}

static json_t *delivered(const char *id) {
    char now[DETA_TS_LEN], delivery[37];
    deta_timestamp_now(now);
    ts_uuid(delivery);
    return json_pack("{s:s, s:s, s:s, s:s}", "orderId", id, "deliveryId", delivery, "driverId",
                     "driver-01", "deliveredAt", now);
}

/* delivery.cancelled of an order that was waiting (nothing to free, no refund
 * to look for beyond the payment's, which the test's orders do not have). */
static json_t *delivery_cancelled(const char *id, const char *cancelled_at) {
    char payment[37];
    ts_uuid(payment);
    return json_pack("{s:s, s:s, s:n, s:n, s:s, s:s, s:s, s:s}", "orderId", id, "stage",
                     "WAITING", "deliveryId", "driverId", "paymentId", payment, "reason",
                     "test", "requestedAt", cancelled_at, "cancelledAt", cancelled_at);
}

static json_t *inventory_cancelled(const char *id, const char *cancelled_at) {
    return json_pack("{s:s, s:s, s:n, s:s, s:s}", "orderId", id, "stage", "NONE", "reason",
                     "requestedAt", cancelled_at, "cancelledAt", cancelled_at);
}

static json_t *cancel_refused(const char *id, const char *order_status, const char *refused_at) {
    return json_pack("{s:s, s:s, s:s, s:s, s:s}", "orderId", id, "orderStatus", order_status,
                     "reason", "test", "requestedAt", refused_at, "refusedAt", refused_at);
}

/* deta_events_total of order-service for one type and outcome (0 when absent). */
static double events_counted(const char *type, const char *outcome) {
    char series[200];
    snprintf(series, sizeof series, "deta_events_total{type=\"%s\",outcome=\"%s\"}", type,
             outcome);
    double v = ts_metric("ORDER_SERVICE_URL", series);
    return v < 0 ? 0 : v;
}

static void await_counted(const char *type, const char *outcome, double above) {
    for (int waited = 0; events_counted(type, outcome) <= above; waited += 100) {
        if (waited >= AWAIT_MS)
            fail_msg("deta_events_total{%s,%s} stayed at %.0f", type, outcome, above);
        ts_sleep_ms(100);
    }
}

/* A repeated cancel's answer: 202 with the request still undecided, or (where
 * the other services run the saga) 200 once it was cancelled. */
static void assert_still_accepted(const ts_http_resp_t *r) {
    const char *c = cancellation_status(r->json);
    if (!((r->status == 202 && c && strcmp(c, "REQUESTED") == 0) ||
          (r->status == 200 && c && strcmp(c, "CANCELLED") == 0)))
        fail_msg("repeated cancel: %ld %s", r->status, r->body);
}

/* 409 with the error body plus orderStatus. */
static void assert_conflict(const ts_http_resp_t *r, const char *order_status) {
    if (r->status != 409)
        fail_msg("expected 409, got %ld %s", r->status, r->body);
    assert_non_null(r->json);
    assert_int_equal(json_integer_value(json_object_get(r->json, "status")), 409);
    assert_string_equal(str(r->json, "error"), "Conflict");
    assert_non_null(str(r->json, "message"));
    assert_string_equal(str(r->json, "orderStatus"), order_status);
}

/* ---- tests ---- */

/* 202 with the order and its cancellation, one request written and published;
 * the same cancel again writes nothing. */
static void cancel_is_asked_once(void **state) {
    (void)state;
    char id[37];
    new_order(id);
    ts_http_resp_t r;
    cancel(id, "application/json", "{\"reason\":\"changed my mind\",\"other\":1}", &r);
    if (r.status != 202)
        fail_msg("cancel: %ld %s", r.status, r.body);
    assert_string_equal(str(r.json, "orderId"), id);
    assert_string_equal(str(r.json, "status"), DETA_STATE_CREATED);
    assert_string_equal(str(r.json, "customerId"), "cust-cancel");
    assert_int_equal(json_array_size(json_object_get(r.json, "items")), 1);
    json_t *c = json_object_get(r.json, "cancellation");
    assert_true(json_is_object(c));
    assert_string_equal(str(c, "status"), "REQUESTED");
    assert_string_equal(str(c, "reason"), "changed my mind");
    assert_true(deta_timestamp_valid(str(c, "requestedAt")));
    assert_true(json_is_null(json_object_get(c, "decidedAt")));
    assert_true(json_is_null(json_object_get(c, "refusedBecause")));
    char requested_at[DETA_TS_LEN], corr[64];
    snprintf(requested_at, sizeof requested_at, "%s", str(c, "requestedAt"));
    snprintf(corr, sizeof corr, "%s", str(r.json, "correlationId"));
    ts_http_resp_free(&r);
    assert_int_equal(outbox_requests(id), 1);

    /* GET shows the same cancellation */
    get_order(id, &r);
    c = json_object_get(r.json, "cancellation");
    assert_string_equal(str(c, "reason"), "changed my mind");
    assert_string_equal(str(c, "requestedAt"), requested_at);
    ts_http_resp_free(&r);

    cancel(id, NULL, NULL, &r); /* again, without a body */
    assert_still_accepted(&r);
    ts_http_resp_free(&r);
    cancel(id, "application/json", "{\"reason\":\"another\"}", &r);
    assert_still_accepted(&r);
    assert_string_equal(str(json_object_get(r.json, "cancellation"), "reason"),
                        "changed my mind");
    ts_http_resp_free(&r);
    assert_int_equal(outbox_requests(id), 1);

    /* the event, as the saga reads it */
    ts_kafka_msg_t m;
    assert_true(ts_kafka_find(DETA_TOPIC_ORDER_EVENTS, id, 30000, &m));
    deta_event_t ev;
    char err[256];
    if (deta_event_parse(m.value, strlen(m.value), &ev, err, sizeof err) != DETA_OK)
        fail_msg("envelope does not validate: %s: %s", err, m.value);
    assert_string_equal(ev.event_type, DETA_EVT_ORDER_CANCEL_REQUESTED);
    assert_string_equal(ev.producer, "order-service");
    assert_string_equal(ev.correlation_id, corr);
    assert_string_equal(ev.occurred_at, requested_at);
    assert_string_equal(str(ev.payload, "orderId"), id);
    assert_string_equal(str(ev.payload, "reason"), "changed my mind");
    assert_string_equal(str(ev.payload, "requestedAt"), requested_at);
    deta_event_clear(&ev);
    ts_kafka_msg_free(&m);
    assert_int_equal(ts_kafka_count(DETA_TOPIC_ORDER_EVENTS, id, 30000), 1);
    assert_true(ts_metric("ORDER_SERVICE_URL",
                          "orders_cancel_requests_total{outcome=\"requested\"}") >= 1);
}

/* The body is optional: none, an empty one with or without a JSON type, or a
 * null reason all ask without a reason. */
static void cancel_without_a_reason(void **state) {
    (void)state;
    struct {
        const char *type, *body;
    } cases[] = {{NULL, NULL}, {"application/json", NULL}, {"text/plain", ""},
                 {"application/json", "{}"}, {"application/json; charset=utf-8",
                                              "{\"reason\":null}"}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char id[37];
        new_order(id);
        ts_http_resp_t r;
        cancel(id, cases[i].type, cases[i].body, &r);
        if (r.status != 202)
            fail_msg("case %zu: %ld %s", i, r.status, r.body);
        json_t *c = json_object_get(r.json, "cancellation");
        assert_string_equal(str(c, "status"), "REQUESTED");
        assert_true(json_is_null(json_object_get(c, "reason")));
        ts_http_resp_free(&r);
        assert_int_equal(outbox_requests(id), 1);
    }
}

/* Refusals write nothing. */
static double cancels_counted(const char *outcome) {
    char series[96];
    snprintf(series, sizeof series, "orders_cancel_requests_total{outcome=\"%s\"}", outcome);
    double v = ts_metric("ORDER_SERVICE_URL", series);
    return v < 0 ? 0 : v;
}

static void bad_cancels_are_refused(void **state) {
    (void)state;
    double invalid = cancels_counted("invalid"), not_found = cancels_counted("not_found");
    char id[37];
    new_order(id);
    char r201[260];
    memset(r201, 'r', 201);
    r201[201] = '\0';
    char long_reason[300];
    snprintf(long_reason, sizeof long_reason, "{\"reason\":\"%s\"}", r201);
    struct {
        const char *type, *body;
        long status;
        const char *field;
    } cases[] = {
        {"application/json", "{\"reason\":\"\"}", 400, "reason"},
        {"application/json", "{\"reason\":7}", 400, "reason"},
        {"application/json", long_reason, 400, "reason"},
        {"application/json", "[\"reason\"]", 400, "body"},
        {"application/json", "{\"reason\":", 400, "body"},
        {"text/plain", "{\"reason\":\"x\"}", 415, NULL},
        {NULL, "{\"reason\":\"x\"}", 415, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        ts_http_resp_t r;
        cancel(id, cases[i].type, cases[i].body, &r);
        if (r.status != cases[i].status)
            fail_msg("case %zu: expected %ld, got %ld %s", i, cases[i].status, r.status, r.body);
        assert_non_null(r.json);
        if (cases[i].field)
            assert_string_equal(str(r.json, "field"), cases[i].field);
        ts_http_resp_free(&r);
    }
    ts_http_resp_t r;
    cancel("00000000-0000-4000-8000-000000000000", NULL, NULL, &r);
    assert_int_equal(r.status, 404);
    assert_string_equal(str(r.json, "field"), "orderId");
    ts_http_resp_free(&r);
    cancel("not-a-uuid", NULL, NULL, &r);
    assert_int_equal(r.status, 400);
    assert_string_equal(str(r.json, "field"), "orderId");
    ts_http_resp_free(&r);

    assert_int_equal(outbox_requests(id), 0);
    char cancel_status[32];
    order_column(id, "cancel_status", cancel_status, sizeof cancel_status);
    assert_string_equal(cancel_status, "");
    get_order(id, &r);
    assert_true(json_is_null(json_object_get(r.json, "cancellation")));
    ts_http_resp_free(&r);
    /* the handler's refusals (the server answers 415 and malformed JSON itself) */
    assert_int_equal(cancels_counted("invalid") - invalid, 5);
    assert_int_equal(cancels_counted("not_found") - not_found, 1);
}

/* The status moves up by rank only; a picked-up order cannot be cancelled; a
 * refusal (even without a request here) is recorded and answered 409. */
static void status_follows_the_events_and_a_refusal_is_kept(void **state) {
    (void)state;
    char id[37];
    new_order(id);
    inject(DETA_TOPIC_DELIVERY_EVENTS, DETA_EVT_DELIVERY_PICKED_UP, id, picked_up(id));
    await_order(id, DETA_STATE_PICKED_UP, NULL);
    char rank[16];
    order_column(id, "status_rank", rank, sizeof rank);
    assert_int_equal(atoi(rank), deta_state_rank(DETA_STATE_PICKED_UP));

    ts_http_resp_t r;
    cancel(id, NULL, NULL, &r);
    assert_conflict(&r, DETA_STATE_PICKED_UP);
    ts_http_resp_free(&r);
    assert_int_equal(outbox_requests(id), 0);

    /* a lower state after it changes nothing; the refusal behind it on the same
     * partition tells when it was handled */
    char refused_at[DETA_TS_LEN];
    deta_timestamp_now(refused_at);
    inject(DETA_TOPIC_DELIVERY_EVENTS, DETA_EVT_DELIVERY_ASSIGNED, id, assigned(id));
    inject(DETA_TOPIC_DELIVERY_EVENTS, DETA_EVT_DELIVERY_CANCEL_REFUSED, id,
           cancel_refused(id, DETA_STATE_PICKED_UP, refused_at));
    await_order(id, NULL, "REFUSED");
    get_order(id, &r);
    assert_string_equal(str(r.json, "status"), DETA_STATE_PICKED_UP);
    json_t *c = json_object_get(r.json, "cancellation");
    assert_string_equal(str(c, "refusedBecause"), DETA_STATE_PICKED_UP);
    assert_string_equal(str(c, "decidedAt"), refused_at);
    assert_true(json_is_null(json_object_get(c, "requestedAt"))); /* none asked here */
    ts_http_resp_free(&r);

    cancel(id, "application/json", "{\"reason\":\"late\"}", &r);
    assert_conflict(&r, DETA_STATE_PICKED_UP);
    ts_http_resp_free(&r);
    assert_int_equal(outbox_requests(id), 0);
}

/* A real order whose item is unknown: inventory-service rejects it, and
 * order-service follows the real inventory.rejected. */
static void a_rejected_order_is_not_cancellable(void **state) {
    (void)state;
    char item[64], body[256], id[64];
    char u[37];
    ts_uuid(u);
    snprintf(item, sizeof item, "no-such-item-%.8s", u);
    snprintf(body, sizeof body,
             "{\"customerId\":\"c-cancel\",\"items\":[{\"itemId\":\"%s\",\"quantity\":1,"
             "\"unitPrice\":\"1.00\"}]}",
             item);
    ts_http_resp_t r;
    ts_http("POST", "ORDER_SERVICE_URL", "/api/orders", "application/json", body, &r);
    assert_int_equal(r.status, 201);
    snprintf(id, sizeof id, "%s", str(r.json, "orderId"));
    ts_http_resp_free(&r);
    await_order(id, DETA_STATE_INVENTORY_REJECTED, NULL);
    cancel(id, NULL, NULL, &r);
    assert_conflict(&r, DETA_STATE_INVENTORY_REJECTED);
    ts_http_resp_free(&r);
    assert_int_equal(outbox_requests(id), 0);
    assert_true(ts_metric("ORDER_SERVICE_URL",
                          "orders_cancel_requests_total{outcome=\"not_cancellable\"}") >= 1);
}

/* A pending request answers 202 and writes nothing; delivery.cancelled decides
 * it: 200, status CANCELLED for good. */
static void a_cancelled_verdict_is_final(void **state) {
    (void)state;
    char id[37];
    new_order(id);
    mark_requested(id);
    ts_http_resp_t r;
    cancel(id, NULL, NULL, &r);
    assert_int_equal(r.status, 202);
    assert_string_equal(cancellation_status(r.json), "REQUESTED");
    ts_http_resp_free(&r);
    assert_int_equal(outbox_requests(id), 0);

    char cancelled_at[DETA_TS_LEN];
    deta_timestamp_now(cancelled_at);
    inject(DETA_TOPIC_DELIVERY_EVENTS, DETA_EVT_DELIVERY_CANCELLED, id,
           delivery_cancelled(id, cancelled_at));
    await_order(id, DETA_STATE_CANCELLED, "CANCELLED");
    char status[32], cancel_status[32];
    order_column(id, "status", status, sizeof status);
    order_column(id, "cancel_status", cancel_status, sizeof cancel_status);
    assert_string_equal(status, DETA_STATE_CANCELLED);
    assert_string_equal(cancel_status, "CANCELLED");

    cancel(id, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(str(r.json, "status"), DETA_STATE_CANCELLED);
    json_t *c = json_object_get(r.json, "cancellation");
    assert_string_equal(str(c, "status"), "CANCELLED");
    assert_string_equal(str(c, "reason"), "test");
    assert_string_equal(str(c, "decidedAt"), cancelled_at);
    assert_true(json_is_null(json_object_get(c, "refusedBecause")));
    ts_http_resp_free(&r);
    assert_int_equal(outbox_requests(id), 0);

    /* nothing moves a cancelled order: a later state, a second verdict */
    double unchanged = events_counted(DETA_EVT_DELIVERY_CANCEL_REFUSED, "unchanged");
    inject(DETA_TOPIC_DELIVERY_EVENTS, DETA_EVT_DELIVERY_DELIVERED, id, delivered(id));
    inject(DETA_TOPIC_DELIVERY_EVENTS, DETA_EVT_DELIVERY_CANCEL_REFUSED, id,
           cancel_refused(id, DETA_STATE_DELIVERED, cancelled_at));
    await_counted(DETA_EVT_DELIVERY_CANCEL_REFUSED, "unchanged", unchanged);
    get_order(id, &r);
    assert_string_equal(str(r.json, "status"), DETA_STATE_CANCELLED);
    c = json_object_get(r.json, "cancellation");
    assert_string_equal(str(c, "status"), "CANCELLED");
    assert_string_equal(str(c, "decidedAt"), cancelled_at);
    ts_http_resp_free(&r);
}

/* A verdict for an order that had no request here is still recorded. */
static void a_verdict_without_a_request_is_recorded(void **state) {
    (void)state;
    char id[37];
    new_order(id);
    char cancelled_at[DETA_TS_LEN];
    deta_timestamp_now(cancelled_at);
    inject(DETA_TOPIC_INVENTORY_EVENTS, DETA_EVT_INVENTORY_CANCELLED, id,
           inventory_cancelled(id, cancelled_at));
    await_order(id, DETA_STATE_CANCELLED, "CANCELLED");
    ts_http_resp_t r;
    get_order(id, &r);
    json_t *c = json_object_get(r.json, "cancellation");
    assert_true(json_is_null(json_object_get(c, "requestedAt")));
    assert_true(json_is_null(json_object_get(c, "reason")));
    assert_string_equal(str(c, "decidedAt"), cancelled_at);
    ts_http_resp_free(&r);
    cancel(id, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    ts_http_resp_free(&r);
    assert_int_equal(outbox_requests(id), 0);
}

/* An event of an order order-service does not have is skipped; a verdict
 * without its cancelledAt is dead-lettered naming it, and the order's next
 * event is applied after it. */
static void unknown_orders_are_skipped_and_bad_payloads_dead_lettered(void **state) {
    (void)state;
    char stranger[37];
    ts_uuid(stranger);
    double before = events_counted(DETA_EVT_DELIVERY_PICKED_UP, "unknown_order");
    inject(DETA_TOPIC_DELIVERY_EVENTS, DETA_EVT_DELIVERY_PICKED_UP, stranger,
           picked_up(stranger));
    await_counted(DETA_EVT_DELIVERY_PICKED_UP, "unknown_order", before);

    char id[37];
    new_order(id);
    mark_requested(id);
    json_t *bad = delivery_cancelled(id, "2026-11-25T12:38:05.123Z");
    json_object_del(bad, "cancelledAt");
    inject(DETA_TOPIC_DELIVERY_EVENTS, DETA_EVT_DELIVERY_CANCELLED, id, bad);
    ts_kafka_msg_t m;
    if (!ts_kafka_find_where(DETA_TOPIC_DLQ_DELIVERY_EVENTS, id, "x-consumer-group",
                             "order-service", AWAIT_MS, &m))
        fail_msg("no dead letter of order-service for %s", id);
    const char *why = ts_kafka_header(&m, "x-error");
    assert_non_null(why);
    if (!strstr(why, "payload.cancelledAt"))
        fail_msg("x-error does not name payload.cancelledAt: %s", why);
    ts_kafka_msg_free(&m);

    inject(DETA_TOPIC_DELIVERY_EVENTS, DETA_EVT_DELIVERY_ASSIGNED, id, assigned(id));
    await_order(id, DETA_STATE_DELIVERY_ASSIGNED, "REQUESTED");
}

/* ---- two cancels at once ---- */

typedef struct racer {
    const char *id;
    ts_http_resp_t resp;
    int answered;
} racer_t;

static void *race(void *arg) {
    racer_t *r = arg;
    char path[128];
    snprintf(path, sizeof path, "/api/orders/%s/cancel", r->id);
    r->answered = ts_http_try("POST", "ORDER_SERVICE_URL", path, NULL, NULL, 60000, &r->resp);
    return NULL;
}

/* How many statements wait for a lock on order_db's orders right now. */
static long cancels_waiting(void) {
    return ts_pg_long(db,
                      "SELECT count(*) FROM pg_stat_activity WHERE datname = 'order_db'"
                      " AND wait_event_type = 'Lock' AND query LIKE '%cancel_status = ''REQUESTED''%'",
                      0, NULL);
}

/* What order_db's sessions do, for a failure's message. */
static void print_activity(void) {
    PGresult *res = PQexec(db, "SELECT pid, state, wait_event_type, left(query, 100)"
                               " FROM pg_stat_activity WHERE datname = 'order_db'");
    for (int i = 0; PQresultStatus(res) == PGRES_TUPLES_OK && i < PQntuples(res); i++)
        fprintf(stderr, "  %s %s %s %s\n", PQgetvalue(res, i, 0), PQgetvalue(res, i, 1),
                PQgetvalue(res, i, 2), PQgetvalue(res, i, 3));
    PQclear(res);
}

static void hold_run(PGconn *c, const char *sql, int n, const char *const *params) {
    PGresult *res = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    PQclear(res);
}

/* Waits until `want` cancels wait on the held row. *waited counts the
 * milliseconds since the first request, and all of them must be waiting within
 * order-service's lock timeout (10 s); if they are not by 8 s, lets go of the
 * row, prints what the `started` requests answered and what order_db's sessions
 * did, and fails. */
static void await_cancels_waiting(long want, int *waited, PGconn *holder, pthread_t *threads,
                                  racer_t *racers, int started) {
    for (; cancels_waiting() < want; *waited += 50) {
        if (*waited >= 8000) {
            print_activity();
            PQfinish(holder);
            for (int i = 0; i < started; i++) {
                pthread_join(threads[i], NULL);
                fprintf(stderr, "  answer %d: %ld %s\n", i, racers[i].resp.status,
                        racers[i].resp.body ? racers[i].resp.body : "");
                ts_http_resp_free(&racers[i].resp);
            }
            fail_msg("the cancels never waited on the row together (%ld wanted)", want);
        }
        ts_sleep_ms(50);
    }
}

/* The test holds the order's row (on a connection of its own: pg_stat_activity
 * is read once per transaction), so both requests are in their UPDATE, waiting,
 * before either can write: the first to get the row asks, the other finds the
 * request and writes nothing. The second request is sent once the first waits:
 * sent together, both connections can be accepted by the same one of
 * libmicrohttpd's threads, which serves the second only after the first. */
static void two_cancels_at_once_ask_once(void **state) {
    (void)state;
    char id[37];
    new_order(id);
    const char *params[] = {id};
    PGconn *holder = ts_pg("order_db");
    hold_run(holder, "BEGIN", 0, NULL);
    hold_run(holder, "SELECT 1 FROM orders WHERE order_id = $1 FOR UPDATE", 1, params);
    racer_t racers[2] = {{.id = id}, {.id = id}};
    pthread_t threads[2];
    int waited = 0;
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pthread_create(&threads[i], NULL, race, &racers[i]), 0);
        await_cancels_waiting(i + 1, &waited, holder, threads, racers, i + 1);
    }
    hold_run(holder, "COMMIT", 0, NULL);
    PQfinish(holder);
    for (int i = 0; i < 2; i++)
        pthread_join(threads[i], NULL);
    for (int i = 0; i < 2; i++) {
        assert_true(racers[i].answered);
        assert_still_accepted(&racers[i].resp);
        ts_http_resp_free(&racers[i].resp);
    }
    assert_int_equal(outbox_requests(id), 1);
    ts_kafka_msg_t m;
    assert_true(ts_kafka_find(DETA_TOPIC_ORDER_EVENTS, id, 30000, &m));
    ts_kafka_msg_free(&m);
    if (!ts_outbox_relayed(db, AWAIT_MS))
        fail_msg("the request of %s was never published", id);
    assert_int_equal(ts_kafka_count(DETA_TOPIC_ORDER_EVENTS, id, 30000), 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cancel_is_asked_once),
        cmocka_unit_test(cancel_without_a_reason),
        cmocka_unit_test(bad_cancels_are_refused),
        cmocka_unit_test(status_follows_the_events_and_a_refusal_is_kept),
        cmocka_unit_test(a_rejected_order_is_not_cancellable),
        cmocka_unit_test(a_cancelled_verdict_is_final),
        cmocka_unit_test(a_verdict_without_a_request_is_recorded),
        cmocka_unit_test(unknown_orders_are_skipped_and_bad_payloads_dead_lettered),
        cmocka_unit_test(two_cancels_at_once_ask_once),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
