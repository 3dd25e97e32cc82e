/*
 * test_inventory_cancel.c - inventory-service's part of the cancellation saga
 * (docs/contracts.md#cancellation) against the real test stack: the cancel
 * request decided by the order's reservation, and the compensation of a
 * cancel's verdict (payment.cancelled, delivery.cancelled).
 *
 * The test plays order-service, payment-service and delivery-service: it injects
 * their envelopes (ts_event) for fresh order ids and asserts on inventory_db,
 * GET /api/inventory/{itemId} and raw.inventory-events. payment-service is
 * stopped for the whole run (its teardown starts it again), so a hold stays HELD
 * until the test itself sends the payment outcome it wants, in the order it
 * wants: the interleavings named in the issue are forced, not hoped for. Every
 * test uses items of its own, created through PUT, so stock numbers are exact.
 *
 * Waiting: "this event was handled" is the service's deta_events_total, polled:
 * it claims no event ids (its README says why), and an event that finds nothing
 * to do is counted as a duplicate. The counts are the service's, so the waits and
 * checks on them are lower bounds (with payment-service stopped, hardly another
 * event comes meanwhile), and the order's rows and events decide; the inventory_*
 * counters checked exactly move only in the situation under test. Events of one
 * order on one topic share a key, hence a partition, and are handled in the order
 * they were produced.
 *
 * The second group restarts inventory-service with holds of 2 s and a grace of
 * 1 s, for a verdict that finds a hold the sweep released already.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deta/envelope.h"
#include "deta/states.h"
#include "deta/topics.h"
#include "testsupport.h"

#define SERVICE "inventory-service"
#define WAIT_MS 60000
#define CUSTOMER "cust-inv-cancel"
#define REQUESTED_AT "2026-11-25T12:40:00.000Z"

/* ---- the stack ---- */

static int payment_stopped(void **state) {
    (void)state;
    ts_stack_ok("stop payment-service");
    return 0;
}

static int payment_back(void **state) {
    (void)state;
    ts_stack_ok("start payment-service");
    return 0;
}

/* ---- stock ---- */

/* A fresh item id for this run ("ic-<tag>-<8 hex>") with available units. */
static void new_item(char out[64], const char *tag, long available) {
    char uuid[37], path[128], body[64];
    ts_uuid(uuid);
    snprintf(out, 64, "ic-%s-%.8s", tag, uuid);
    snprintf(path, sizeof path, "/api/inventory/%s", out);
    snprintf(body, sizeof body, "{\"available\":%ld}", available);
    ts_http_resp_t r;
    ts_http_operator("PUT", "INVENTORY_SERVICE_URL", path, "application/json", body, &r);
    if (r.status != 201)
        fail_msg("PUT %s: expected 201, got %ld %s", path, r.status, r.body);
    ts_http_resp_free(&r);
}

static long int_field(const json_t *o, const char *key, const char *body) {
    const json_t *v = json_object_get(o, key);
    if (!json_is_integer(v))
        fail_msg("no integer %s in %s", key, body);
    return (long)json_integer_value(v);
}

/* The item's stock as GET /api/inventory/{itemId} answers it. */
static void expect_stock(const char *item, long available, long held, long sold) {
    char path[128];
    snprintf(path, sizeof path, "/api/inventory/%s", item);
    ts_http_resp_t r;
    ts_http("GET", "INVENTORY_SERVICE_URL", path, NULL, NULL, &r);
    if (r.status != 200)
        fail_msg("GET %s: %ld %s", path, r.status, r.body);
    long a = int_field(r.json, "available", r.body), h = int_field(r.json, "held", r.body),
         s = int_field(r.json, "sold", r.body);
    ts_http_resp_free(&r);
    if (a != available || h != held || s != sold)
        fail_msg("%s: expected available/held/sold %ld/%ld/%ld, got %ld/%ld/%ld", item,
                 available, held, sold, a, h, s);
}

/* ---- events ---- */

static json_t *order_payload(const char *order_id, const char *item, int qty) {
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:[{s:s, s:i, s:s}]}", "orderId", order_id,
                     "customerId", CUSTOMER, "totalAmount", "4.50", "currency", "EUR", "status",
                     DETA_STATE_CREATED, "createdAt", "2026-11-25T12:38:05.123Z", "items",
                     "itemId", item, "quantity", qty, "unitPrice", "1.50");
}

/* order.cancel_requested's payload; reason NULL is null. */
static json_t *cancel_payload(const char *order_id, const char *reason) {
    return json_pack("{s:s, s:o, s:s}", "orderId", order_id, "reason",
                     reason ? json_string(reason) : json_null(), "requestedAt", REQUESTED_AT);
}

/* payment.cancelled's or delivery.cancelled's payload. */
static json_t *verdict_payload(const char *type, const char *order_id) {
    json_t *p = json_pack("{s:s, s:s, s:n, s:s, s:s}", "orderId", order_id, "stage", "NONE",
                          "reason", "requestedAt", REQUESTED_AT, "cancelledAt",
                          "2026-11-25T12:40:01.000Z");
    if (strcmp(type, DETA_EVT_DELIVERY_CANCELLED) == 0) {
        char payment_id[37];
        ts_uuid(payment_id);
        json_object_set_new(p, "deliveryId", json_null());
        json_object_set_new(p, "driverId", json_null());
        json_object_set_new(p, "paymentId", json_string(payment_id));
    }
    return p;
}

static json_t *payment_payload(const char *order_id) {
    char payment_id[37];
    ts_uuid(payment_id);
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "orderId", order_id, "paymentId",
                     payment_id, "customerId", CUSTOMER, "amount", "4.50", "currency", "EUR",
                     "authorizedAt", "2026-11-25T12:38:06.000Z");
}

/* The topic each injected type travels on. */
static const char *topic_of(const char *type) {
    if (strncmp(type, "order.", 6) == 0)
        return DETA_TOPIC_ORDER_EVENTS;
    if (strncmp(type, "payment.", 8) == 0)
        return DETA_TOPIC_PAYMENT_EVENTS;
    return DETA_TOPIC_DELIVERY_EVENTS;
}

/* Injects an event of type for order_id (payload stolen); its id in event_id. */
static void inject(const char *type, const char *order_id, json_t *payload, char event_id[37]) {
    char *text = ts_event(type, order_id, NULL, payload, event_id);
    ts_kafka_produce(topic_of(type), order_id, text);
    free(text);
}

/* The same, twice, as a redelivery brings it: one event id, one serialized text. */
static void inject_twice(const char *type, const char *order_id, json_t *payload,
                         char event_id[37]) {
    char *text = ts_event(type, order_id, NULL, payload, event_id);
    ts_kafka_produce(topic_of(type), order_id, text);
    ts_kafka_produce(topic_of(type), order_id, text);
    free(text);
}

static void inject_order(const char *order_id, const char *item, int qty, char event_id[37]) {
    inject(DETA_EVT_ORDER_CREATED, order_id, order_payload(order_id, item, qty), event_id);
}

static void inject_cancel(const char *order_id, const char *reason, char event_id[37]) {
    inject(DETA_EVT_ORDER_CANCEL_REQUESTED, order_id, cancel_payload(order_id, reason), event_id);
}

static void inject_verdict(const char *type, const char *order_id, char event_id[37]) {
    inject(type, order_id, verdict_payload(type, order_id), event_id);
}

static void inject_authorized(const char *order_id, char event_id[37]) {
    inject(DETA_EVT_PAYMENT_AUTHORIZED, order_id, payment_payload(order_id), event_id);
}

/* ---- inventory_db ---- */

/* The text of the first column of the first row, or "" when there is no row. */
static void pg_text(PGconn *db, const char *sql, const char *param, char *out, size_t outsize) {
    const char *params[] = {param};
    PGresult *r = PQexecParams(db, sql, 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("query failed: %s: %s", sql, PQerrorMessage(db));
    snprintf(out, outsize, "%s", PQntuples(r) ? PQgetvalue(r, 0, 0) : "");
    PQclear(r);
}

static void await_status(PGconn *db, const char *order_id, const char *want) {
    char status[16] = "";
    for (int waited = 0; waited < WAIT_MS; waited += 100) {
        pg_text(db, "SELECT status FROM reservations WHERE order_id = $1", order_id, status,
                sizeof status);
        if (strcmp(status, want) == 0)
            return;
        ts_sleep_ms(100);
    }
    fail_msg("order %s: reservation is \"%s\", expected %s", order_id, status, want);
}

/* ---- the service's counts ---- */

/* deta_events_total of type and outcome (NULL: handled), or another series. */
static double events_of(const char *type, const char *outcome) {
    return ts_events("INVENTORY_SERVICE_URL", type, outcome);
}

static double metric(const char *series) {
    double v = ts_metric("INVENTORY_SERVICE_URL", series);
    return v < 0 ? 0 : v;
}

/* Waits until the service counted n more events of type with outcome than before. */
static void await_events(const char *type, const char *outcome, double before, int n) {
    ts_events_await("INVENTORY_SERVICE_URL", type, outcome, before, n, WAIT_MS);
}

static void expect_reservation(PGconn *db, const char *order_id, const char *status,
                               const char *reason) {
    char got[16], why[32];
    pg_text(db, "SELECT status FROM reservations WHERE order_id = $1", order_id, got,
            sizeof got);
    pg_text(db, "SELECT coalesce(reason, '') FROM reservations WHERE order_id = $1", order_id,
            why, sizeof why);
    if (strcmp(got, status) != 0 || strcmp(why, reason) != 0)
        fail_msg("order %s: reservation %s/%s, expected %s/%s", order_id, got, why, status,
                 reason);
}

static long outbox_count(PGconn *db, const char *order_id, const char *type) {
    const char *params[] = {order_id, type};
    return ts_pg_long(db,
                      "SELECT count(*) FROM outbox WHERE msg_key = $1 AND"
                      " ($2 = '' OR payload::jsonb->>'eventType' = $2)",
                      2, params);
}

/* A hold of qty units of a fresh item with units in stock, awaited HELD (no
 * payment-service runs to settle it). */
static void held(PGconn *db, const char *tag, long units, int qty, char item[64],
                 char order[37]) {
    char ev[37];
    new_item(item, tag, units);
    ts_uuid(order);
    inject_order(order, item, qty, ev);
    await_status(db, order, "HELD");
    expect_stock(item, units - qty, qty, 0);
}

/* ---- raw.inventory-events ---- */

/* The order's first n messages on raw.inventory-events, in key order, parsed;
 * fails unless exactly n are there and their types are types[0..n). */
static void expect_published(const char *order_id, int n, const char *const *types,
                             deta_event_t *out) {
    ts_kafka_msg_t m[8];
    int got = ts_kafka_collect(DETA_TOPIC_INVENTORY_EVENTS, order_id, n, WAIT_MS, m, 8);
    if (got < n)
        fail_msg("order %s: %d of %d events on %s", order_id, got, n,
                 DETA_TOPIC_INVENTORY_EVENTS);
    for (int i = 0; i < got; i++) {
        char err[256];
        deta_event_t ev;
        if (deta_event_parse(m[i].value, strlen(m[i].value), &ev, err, sizeof err) != DETA_OK)
            fail_msg("published event does not parse: %s: %s", err, m[i].value);
        if (i < n && strcmp(ev.event_type, types[i]) != 0)
            fail_msg("order %s: event %d is %s, expected %s", order_id, i, ev.event_type,
                     types[i]);
        if (out && i < n)
            out[i] = ev;
        else
            deta_event_clear(&ev);
        ts_kafka_msg_free(&m[i]);
    }
    assert_int_equal(ts_kafka_count(DETA_TOPIC_INVENTORY_EVENTS, order_id, 30000), n);
}

static const char *pstr(const deta_event_t *ev, const char *key) {
    const char *s = json_string_value(json_object_get(ev->payload, key));
    if (!s)
        fail_msg("%s payload has no string %s", ev->event_type, key);
    return s;
}

static void clear_events(deta_event_t *evs, int n) {
    for (int i = 0; i < n; i++)
        deta_event_clear(&evs[i]);
}

/* The one inventory.released of the order (from the outbox), checked. */
static void expect_released(PGconn *db, const char *order_id, const char *item, long qty) {
    assert_int_equal(outbox_count(db, order_id, DETA_EVT_INVENTORY_RELEASED), 1);
    const char *params[] = {order_id};
    PGresult *r = PQexecParams(db,
                               "SELECT payload FROM outbox WHERE msg_key = $1 AND"
                               " payload::jsonb->>'eventType' = 'inventory.released'",
                               1, NULL, params, NULL, NULL, 0);
    assert_int_equal(PQntuples(r), 1);
    deta_event_t ev;
    char err[256];
    if (deta_event_parse(PQgetvalue(r, 0, 0), (size_t)PQgetlength(r, 0, 0), &ev, err,
                         sizeof err) != DETA_OK)
        fail_msg("outbox row does not parse: %s", err);
    PQclear(r);
    char reservation_id[64];
    pg_text(db, "SELECT reservation_id FROM reservations WHERE order_id = $1", order_id,
            reservation_id, sizeof reservation_id);
    assert_string_equal(pstr(&ev, "orderId"), order_id);
    assert_string_equal(pstr(&ev, "reservationId"), reservation_id);
    assert_string_equal(pstr(&ev, "reason"), DETA_REASON_ORDER_CANCELLED);
    assert_true(deta_timestamp_valid(pstr(&ev, "releasedAt")));
    json_t *items = json_object_get(ev.payload, "items");
    assert_int_equal(json_array_size(items), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(items, 0), "itemId")),
                        item);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(items, 0), "quantity")),
                     qty);
    deta_event_clear(&ev);
}

/* ---- the cancel request ---- */

static void a_cancel_after_a_hold_is_forwarded_once(void **state) {
    (void)state;
    PGconn *db = ts_pg("inventory_db");
    char a[64], order[37], ev[37], again[37];
    held(db, "fwd", 10, 3, a, order);
    static const char FORWARDED[] = "inventory_cancel_requests_total{outcome=\"forwarded\"}";
    double forwarded = metric(FORWARDED);
    double dup = events_of(DETA_EVT_ORDER_CANCEL_REQUESTED, "duplicate");
    /* delivered twice: the second finds the cancel decided, a duplicate */
    inject_twice(DETA_EVT_ORDER_CANCEL_REQUESTED, order,
                 cancel_payload(order, "changed my mind"), ev);

    deta_event_t evs[2];
    const char *types[] = {DETA_EVT_INVENTORY_RESERVED, DETA_EVT_INVENTORY_CANCEL_FORWARDED};
    expect_published(order, 2, types, evs);
    const deta_event_t *f = &evs[1];
    assert_string_equal(f->producer, SERVICE);
    assert_string_equal(f->correlation_id, order); /* ts_event's, carried forward */
    assert_string_equal(pstr(f, "orderId"), order);
    assert_string_equal(pstr(f, "reservationId"), pstr(&evs[0], "reservationId"));
    assert_string_equal(pstr(f, "reason"), "changed my mind");
    assert_string_equal(pstr(f, "requestedAt"), REQUESTED_AT);
    assert_true(deta_timestamp_valid(pstr(f, "forwardedAt")));
    assert_int_equal(json_object_size(f->payload), 5);
    clear_events(evs, 2);

    /* the hold is payment's to settle and the cancel's verdict's to release */
    expect_reservation(db, order, "HELD", "");
    expect_stock(a, 7, 3, 0);

    /* A cancel re-sent under a new event id: decided once, nothing more. */
    inject_cancel(order, "changed my mind", again);
    await_events(DETA_EVT_ORDER_CANCEL_REQUESTED, "duplicate", dup, 2);
    assert_true(events_of(DETA_EVT_ORDER_CANCEL_REQUESTED, "duplicate") >= dup + 2);
    assert_true(metric(FORWARDED) == forwarded + 1);
    assert_int_equal(ts_claims(db, SERVICE, ev), 0);
    assert_int_equal(ts_claims(db, SERVICE, again), 0);
    assert_int_equal(outbox_count(db, order, ""), 2);
    expect_stock(a, 7, 3, 0);
    PQfinish(db);
}

/* The cancel produced right behind its order.created, in one flush: same key,
 * same partition, so the reservation in flight is made first and the cancel
 * finds it. */
static void a_cancel_behind_its_order_in_flight_is_forwarded_after_the_reservation(void **state) {
    (void)state;
    PGconn *db = ts_pg("inventory_db");
    char a[64], order[37];
    new_item(a, "flight", 10);
    ts_uuid(order);
    char *values[2] = {
        ts_event(DETA_EVT_ORDER_CREATED, order, NULL, order_payload(order, a, 4), NULL),
        ts_event(DETA_EVT_ORDER_CANCEL_REQUESTED, order, NULL, cancel_payload(order, NULL),
                 NULL),
    };
    const char *keys[] = {order, order};
    ts_kafka_produce_many(DETA_TOPIC_ORDER_EVENTS, keys, (const char *const *)values, 2);
    free(values[0]);
    free(values[1]);

    deta_event_t evs[2];
    const char *types[] = {DETA_EVT_INVENTORY_RESERVED, DETA_EVT_INVENTORY_CANCEL_FORWARDED};
    expect_published(order, 2, types, evs);
    assert_string_equal(pstr(&evs[1], "reservationId"), pstr(&evs[0], "reservationId"));
    assert_true(json_is_null(json_object_get(evs[1].payload, "reason")));
    clear_events(evs, 2);
    expect_reservation(db, order, "HELD", "");
    expect_stock(a, 6, 4, 0);
    PQfinish(db);
}

static void a_cancel_of_a_rejected_order_is_refused(void **state) {
    (void)state;
    PGconn *db = ts_pg("inventory_db");
    char a[64], order[37], ev[37];
    new_item(a, "refuse", 1);
    ts_uuid(order);
    inject_order(order, a, 5, ev);
    await_status(db, order, "REJECTED");
    inject_cancel(order, NULL, ev);

    deta_event_t evs[2];
    const char *types[] = {DETA_EVT_INVENTORY_REJECTED, DETA_EVT_INVENTORY_CANCEL_REFUSED};
    expect_published(order, 2, types, evs);
    const deta_event_t *r = &evs[1];
    assert_string_equal(pstr(r, "orderId"), order);
    assert_string_equal(pstr(r, "orderStatus"), DETA_STATE_INVENTORY_REJECTED);
    assert_true(json_is_null(json_object_get(r->payload, "reason")));
    assert_string_equal(pstr(r, "requestedAt"), REQUESTED_AT);
    assert_true(deta_timestamp_valid(pstr(r, "refusedAt")));
    clear_events(evs, 2);
    expect_reservation(db, order, "REJECTED", "INSUFFICIENT_STOCK");
    expect_stock(a, 1, 0, 0);
    PQfinish(db);
}

/* order.created never came (dead-lettered): the cancel records the order as
 * cancelled, and when order.created comes after all it reserves nothing. */
static void a_cancel_before_any_order_cancels_and_the_late_order_reserves_nothing(void **state) {
    (void)state;
    PGconn *db = ts_pg("inventory_db");
    char a[64], order[37], ev[37], created[37], resent[37], again[37], paid[37];
    new_item(a, "none", 10);
    ts_uuid(order);
    inject_cancel(order, "never mind", ev);
    await_status(db, order, "CANCELLED");

    deta_event_t evs[1];
    const char *types[] = {DETA_EVT_INVENTORY_CANCELLED};
    expect_published(order, 1, types, evs);
    assert_string_equal(pstr(&evs[0], "orderId"), order);
    assert_string_equal(pstr(&evs[0], "stage"), "NONE");
    assert_string_equal(pstr(&evs[0], "reason"), "never mind");
    assert_string_equal(pstr(&evs[0], "requestedAt"), REQUESTED_AT);
    assert_true(deta_timestamp_valid(pstr(&evs[0], "cancelledAt")));
    clear_events(evs, 1);
    const char *params[] = {order};
    assert_int_equal(ts_pg_long(db, "SELECT count(*) FROM reservation_items WHERE order_id = $1",
                                1, params),
                     0);

    /* order.created after all, delivered twice, and re-sent under a new event id:
     * the first records the order's customer on the row and is counted once; the
     * other two find it recorded, duplicates */
    static const char AFTER_CANCEL[] = "inventory_orders_after_cancel_total";
    double after_cancel = metric(AFTER_CANCEL);
    double applied = events_of(DETA_EVT_ORDER_CREATED, "applied");
    double dup = events_of(DETA_EVT_ORDER_CREATED, "duplicate");
    inject_twice(DETA_EVT_ORDER_CREATED, order, order_payload(order, a, 2), created);
    inject_order(order, a, 2, resent);
    await_events(DETA_EVT_ORDER_CREATED, "duplicate", dup, 2);
    assert_true(events_of(DETA_EVT_ORDER_CREATED, "applied") >= applied + 1);
    assert_true(events_of(DETA_EVT_ORDER_CREATED, "duplicate") >= dup + 2);
    assert_true(metric(AFTER_CANCEL) == after_cancel + 1);
    char customer[64];
    pg_text(db, "SELECT customer_id FROM reservations WHERE order_id = $1", order, customer,
            sizeof customer);
    assert_string_equal(customer, CUSTOMER);
    expect_stock(a, 10, 0, 0);
    expect_reservation(db, order, "CANCELLED", DETA_REASON_ORDER_CANCELLED);
    assert_int_equal(ts_pg_long(db, "SELECT count(*) FROM reservation_items WHERE order_id = $1",
                                1, params),
                     0);
    /* a second cancel and a payment outcome for a cancelled row: nothing */
    double cancels = events_of(DETA_EVT_ORDER_CANCEL_REQUESTED, "duplicate");
    double payments = events_of(DETA_EVT_PAYMENT_AUTHORIZED, "duplicate");
    inject_cancel(order, NULL, again);
    inject_authorized(order, paid);
    await_events(DETA_EVT_ORDER_CANCEL_REQUESTED, "duplicate", cancels, 1);
    await_events(DETA_EVT_PAYMENT_AUTHORIZED, "duplicate", payments, 1);
    const char *const handled[] = {ev, created, resent, again, paid};
    for (size_t i = 0; i < sizeof handled / sizeof *handled; i++)
        assert_int_equal(ts_claims(db, SERVICE, handled[i]), 0);
    expect_stock(a, 10, 0, 0);
    expect_reservation(db, order, "CANCELLED", DETA_REASON_ORDER_CANCELLED);
    assert_int_equal(outbox_count(db, order, ""), 1);
    assert_int_equal(ts_kafka_count(DETA_TOPIC_INVENTORY_EVENTS, order, 30000), 1);
    PQfinish(db);
}

/* ---- compensations ---- */

static void payment_cancelled_releases_a_hold(void **state) {
    (void)state;
    PGconn *db = ts_pg("inventory_db");
    char a[64], order[37], fwd[37], ev[37];
    held(db, "pc", 10, 3, a, order);
    double cancels = events_of(DETA_EVT_ORDER_CANCEL_REQUESTED, "applied");
    inject_cancel(order, NULL, fwd);
    await_events(DETA_EVT_ORDER_CANCEL_REQUESTED, "applied", cancels, 1);
    inject_verdict(DETA_EVT_PAYMENT_CANCELLED, order, ev);
    await_status(db, order, "RELEASED");
    expect_reservation(db, order, "RELEASED", DETA_REASON_ORDER_CANCELLED);
    expect_stock(a, 10, 0, 0);
    expect_released(db, order, a, 3);
    const char *types[] = {DETA_EVT_INVENTORY_RESERVED, DETA_EVT_INVENTORY_CANCEL_FORWARDED,
                           DETA_EVT_INVENTORY_RELEASED};
    expect_published(order, 3, types, NULL);
    PQfinish(db);
}

static void delivery_cancelled_releases_a_sale(void **state) {
    (void)state;
    PGconn *db = ts_pg("inventory_db");
    char a[64], order[37], paid[37], ev[37];
    held(db, "dc", 10, 3, a, order);
    inject_authorized(order, paid);
    await_status(db, order, "SOLD");
    expect_stock(a, 7, 0, 3);
    inject_verdict(DETA_EVT_DELIVERY_CANCELLED, order, ev);
    await_status(db, order, "RELEASED");
    expect_reservation(db, order, "RELEASED", DETA_REASON_ORDER_CANCELLED);
    expect_stock(a, 10, 0, 0);
    expect_released(db, order, a, 3);
    PQfinish(db);
}

/* delivery.cancelled and payment.authorized come on two topics, read by two
 * consumers: the verdict may be applied first. The authorization that follows
 * takes nothing back (only a hold released as HOLD_EXPIRED is retaken). */
static void an_authorization_after_the_cancels_release_takes_nothing(void **state) {
    (void)state;
    PGconn *db = ts_pg("inventory_db");
    char a[64], order[37], ev[37], paid[37];
    held(db, "late", 10, 3, a, order);
    inject_verdict(DETA_EVT_DELIVERY_CANCELLED, order, ev);
    await_status(db, order, "RELEASED");
    expect_stock(a, 10, 0, 0);

    double dup = events_of(DETA_EVT_PAYMENT_AUTHORIZED, "duplicate");
    inject_authorized(order, paid);
    await_events(DETA_EVT_PAYMENT_AUTHORIZED, "duplicate", dup, 1);
    expect_reservation(db, order, "RELEASED", DETA_REASON_ORDER_CANCELLED);
    expect_stock(a, 10, 0, 0); /* available + held + sold still 10, and all available */
    assert_int_equal(outbox_count(db, order, ""), 2); /* reserved, released */
    PQfinish(db);
}

static void duplicate_verdicts_release_once(void **state) {
    (void)state;
    PGconn *db = ts_pg("inventory_db");
    char a[64], order[37], ev1[37], ev2[37], ev3[37];
    held(db, "dup", 10, 3, a, order);
    static const char RELEASES[] = "inventory_cancel_releases_total{from=\"HELD\"}";
    double releases = metric(RELEASES);
    double delivery = events_of(DETA_EVT_DELIVERY_CANCELLED, NULL);
    double payment = events_of(DETA_EVT_PAYMENT_CANCELLED, NULL);
    double dups = events_of(DETA_EVT_DELIVERY_CANCELLED, "duplicate") +
                  events_of(DETA_EVT_PAYMENT_CANCELLED, "duplicate");
    /* two verdicts of delivery-service under different event ids, the first also
     * redelivered as it was, and payment-service's: whichever comes first (two
     * consumers) releases, the three others are duplicates */
    inject_twice(DETA_EVT_DELIVERY_CANCELLED, order,
                 verdict_payload(DETA_EVT_DELIVERY_CANCELLED, order), ev1);
    inject_verdict(DETA_EVT_DELIVERY_CANCELLED, order, ev2);
    inject_verdict(DETA_EVT_PAYMENT_CANCELLED, order, ev3);
    await_events(DETA_EVT_DELIVERY_CANCELLED, NULL, delivery, 3);
    await_events(DETA_EVT_PAYMENT_CANCELLED, NULL, payment, 1);
    assert_true(events_of(DETA_EVT_DELIVERY_CANCELLED, "duplicate") +
                    events_of(DETA_EVT_PAYMENT_CANCELLED, "duplicate") >=
                dups + 3);
    assert_true(metric(RELEASES) == releases + 1);
    assert_int_equal(ts_claims(db, SERVICE, ev1), 0);
    assert_int_equal(ts_claims(db, SERVICE, ev2), 0);
    assert_int_equal(ts_claims(db, SERVICE, ev3), 0);
    expect_reservation(db, order, "RELEASED", DETA_REASON_ORDER_CANCELLED);
    expect_stock(a, 10, 0, 0); /* not 13: released once */
    expect_released(db, order, a, 3);
    PQfinish(db);
}

/* A verdict for an order this service never saw: skipped (applied, nothing
 * written: it is no duplicate of anything), neither retried nor dead-lettered. */
static void a_verdict_for_an_unknown_order_is_skipped(void **state) {
    (void)state;
    PGconn *db = ts_pg("inventory_db");
    char order[37], ev1[37], ev2[37];
    ts_uuid(order);
    double delivery = events_of(DETA_EVT_DELIVERY_CANCELLED, "applied");
    double payment = events_of(DETA_EVT_PAYMENT_CANCELLED, "applied");
    inject_verdict(DETA_EVT_DELIVERY_CANCELLED, order, ev1);
    inject_verdict(DETA_EVT_PAYMENT_CANCELLED, order, ev2);
    await_events(DETA_EVT_DELIVERY_CANCELLED, "applied", delivery, 1);
    await_events(DETA_EVT_PAYMENT_CANCELLED, "applied", payment, 1);
    const char *params[] = {order};
    assert_int_equal(
        ts_pg_long(db, "SELECT count(*) FROM reservations WHERE order_id = $1", 1, params), 0);
    assert_int_equal(outbox_count(db, order, ""), 0);
    PQfinish(db);
}

/* ---- malformed ---- */

/* The dead letter inventory-service made of order_id's message on dlq names field. */
static void expect_dead_letter(const char *dlq, const char *order_id, const char *field) {
    ts_kafka_msg_t m;
    if (!ts_kafka_find_where(dlq, order_id, "x-consumer-group", SERVICE, WAIT_MS, &m))
        fail_msg("no dead letter of %s on %s", order_id, dlq);
    const char *why = ts_kafka_header(&m, "x-error");
    if (!why || !strstr(why, field))
        fail_msg("dead letter of %s on %s: x-error \"%s\" does not name %s", order_id, dlq,
                 why ? why : "(none)", field);
    ts_kafka_msg_free(&m);
}

static void malformed_cancel_events_are_dead_lettered_naming_the_field(void **state) {
    (void)state;
    PGconn *db = ts_pg("inventory_db");
    char a[64], o1[37], o2[37], o3[37], o4[37], ev[37], next[37];
    new_item(a, "bad", 10);
    ts_uuid(o1);
    ts_uuid(o2);
    ts_uuid(o3);
    ts_uuid(o4);

    json_t *no_at = cancel_payload(o1, NULL);
    json_object_del(no_at, "requestedAt");
    inject(DETA_EVT_ORDER_CANCEL_REQUESTED, o1, no_at, ev);
    json_t *bad_reason = cancel_payload(o2, NULL);
    json_object_set_new(bad_reason, "reason", json_integer(5));
    inject(DETA_EVT_ORDER_CANCEL_REQUESTED, o2, bad_reason, ev);
    json_t *other = verdict_payload(DETA_EVT_DELIVERY_CANCELLED, o3);
    json_object_set_new(other, "orderId", json_string(o1));
    inject(DETA_EVT_DELIVERY_CANCELLED, o3, other, ev);
    json_t *no_order = verdict_payload(DETA_EVT_PAYMENT_CANCELLED, o4);
    json_object_del(no_order, "orderId");
    inject(DETA_EVT_PAYMENT_CANCELLED, o4, no_order, ev);

    expect_dead_letter(DETA_TOPIC_DLQ_ORDER_EVENTS, o1, "requestedAt");
    expect_dead_letter(DETA_TOPIC_DLQ_ORDER_EVENTS, o2, "reason");
    expect_dead_letter(DETA_TOPIC_DLQ_DELIVERY_EVENTS, o3, "orderId");
    expect_dead_letter(DETA_TOPIC_DLQ_PAYMENT_EVENTS, o4, "orderId");

    /* nothing was recorded for them, and the next event of the same key is handled */
    const char *params[] = {o1};
    assert_int_equal(
        ts_pg_long(db, "SELECT count(*) FROM reservations WHERE order_id = $1", 1, params), 0);
    inject_order(o1, a, 1, next);
    await_status(db, o1, "HELD");
    expect_stock(a, 9, 1, 0);
    PQfinish(db);
}

/* ---- metrics ---- */

static void the_cancels_are_counted(void **state) {
    (void)state;
    const char *series[] = {
        "inventory_cancel_requests_total{outcome=\"forwarded\"}",
        "inventory_cancel_requests_total{outcome=\"refused\"}",
        "inventory_cancel_requests_total{outcome=\"cancelled\"}",
        "inventory_cancel_releases_total{from=\"HELD\"}",
        "inventory_cancel_releases_total{from=\"SOLD\"}",
        "inventory_orders_after_cancel_total",
    };
    for (size_t i = 0; i < sizeof series / sizeof *series; i++) {
        double v = ts_metric("INVENTORY_SERVICE_URL", series[i]);
        if (v < 1)
            fail_msg("%s is %g, expected at least 1 after the tests above", series[i], v);
    }
}

/* ---- a verdict after the sweep released the hold (holds of 2 s) ---- */

static int short_holds(void **state) {
    (void)state;
    ts_stack_ok("stop inventory-service");
    setenv("INVENTORY_HOLD_TTL_S", "2", 1);
    setenv("INVENTORY_HOLD_GRACE_S", "1", 1);
    ts_stack_ok("start inventory-service");
    return 0;
}

/* inventory-service with the stack's settings, and payment-service, back. */
static int stack_settings_back(void **state) {
    unsetenv("INVENTORY_HOLD_TTL_S");
    unsetenv("INVENTORY_HOLD_GRACE_S");
    ts_stack_ok("stop inventory-service");
    ts_stack_ok("start inventory-service");
    return payment_back(state);
}

/* The hold expired and was swept (RELEASED, HOLD_EXPIRED): the verdict has
 * nothing to give back, but a late authorization must not take the units of a
 * cancelled order again. */
static void a_verdict_after_the_sweep_stops_a_late_retake(void **state) {
    (void)state;
    PGconn *db = ts_pg("inventory_db");
    char a[64], order[37], created[37], ev[37], paid[37];
    new_item(a, "swept", 10);
    ts_uuid(order);
    inject_order(order, a, 3, created);
    await_status(db, order, "RELEASED");
    expect_reservation(db, order, "RELEASED", "HOLD_EXPIRED");
    expect_stock(a, 10, 0, 0);

    double verdicts = events_of(DETA_EVT_DELIVERY_CANCELLED, "applied");
    inject_verdict(DETA_EVT_DELIVERY_CANCELLED, order, ev);
    await_events(DETA_EVT_DELIVERY_CANCELLED, "applied", verdicts, 1);
    expect_reservation(db, order, "RELEASED", DETA_REASON_ORDER_CANCELLED);
    double dup = events_of(DETA_EVT_PAYMENT_AUTHORIZED, "duplicate");
    inject_authorized(order, paid);
    await_events(DETA_EVT_PAYMENT_AUTHORIZED, "duplicate", dup, 1);
    expect_reservation(db, order, "RELEASED", DETA_REASON_ORDER_CANCELLED);
    expect_stock(a, 10, 0, 0);
    /* reserved and the sweep's released; the verdict published nothing */
    assert_int_equal(outbox_count(db, order, ""), 2);
    PQfinish(db);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_cancel_after_a_hold_is_forwarded_once),
        cmocka_unit_test(a_cancel_behind_its_order_in_flight_is_forwarded_after_the_reservation),
        cmocka_unit_test(a_cancel_of_a_rejected_order_is_refused),
        cmocka_unit_test(a_cancel_before_any_order_cancels_and_the_late_order_reserves_nothing),
        cmocka_unit_test(payment_cancelled_releases_a_hold),
        cmocka_unit_test(delivery_cancelled_releases_a_sale),
        cmocka_unit_test(an_authorization_after_the_cancels_release_takes_nothing),
        cmocka_unit_test(duplicate_verdicts_release_once),
        cmocka_unit_test(a_verdict_for_an_unknown_order_is_skipped),
        cmocka_unit_test(malformed_cancel_events_are_dead_lettered_naming_the_field),
        cmocka_unit_test(the_cancels_are_counted),
    };
    const struct CMUnitTest short_hold_tests[] = {
        cmocka_unit_test(a_verdict_after_the_sweep_stops_a_late_retake),
    };
    int failed = cmocka_run_group_tests(tests, payment_stopped, NULL);
    return failed + cmocka_run_group_tests(short_hold_tests, short_holds, stack_settings_back);
}
