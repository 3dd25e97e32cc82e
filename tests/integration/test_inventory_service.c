/*
 * test_inventory_service.c - inventory-service against the real test stack.
 *
 * The test plays order-service and payment-service: it injects order.created and
 * payment.* envelopes (ts_event) for fresh order ids and asserts on the service's
 * database (inventory_db), its REST API and raw.inventory-events. Every test uses
 * items of its own, created through PUT /api/inventory/{itemId}, so the demo
 * catalog and other tests' stock are untouched and exact stock numbers hold.
 *
 * Waiting: a reservation is awaited by polling its row; "this event was handled"
 * (for events that must change nothing) is awaited on the service's
 * deta_events_total: it claims no event ids (its README says why), and an event
 * that finds nothing to do is counted as a duplicate. The counts are the
 * service's, so the waits are lower bounds (payment-service's own outcomes for
 * this run's orders count too); the order's rows and events decide. Events of one
 * order share a key, hence a partition, so they are handled in the order they
 * were produced: the wait for the last one covers those before it.
 *
 * The second group runs with payment-service stopped (no outcome ever comes on
 * its own) and inventory-service restarted with holds of 2 s and a grace of 1 s
 * (INVENTORY_HOLD_TTL_S, INVENTORY_HOLD_GRACE_S), so that expiry, late
 * authorizations and a release after a "stop sales" happen in a few seconds; its
 * teardown brings both back with the stack's settings.
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
/* In the full stack, payment-service answers every inventory.reserved: it
 * authorizes this customer and declines decline-* ones (PAYMENT_DECLINE_CUSTOMERS). */
#define CUSTOMER "cust-inv"

/* ---- helpers ---- */

/* A fresh item id for this run ("inv-<tag>-<8 hex>") with available units. */
static void new_item(char out[64], const char *tag, long available) {
    char uuid[37], path[128], body[64];
    ts_uuid(uuid);
    snprintf(out, 64, "inv-%s-%.8s", tag, uuid);
    snprintf(path, sizeof path, "/api/inventory/%s", out);
    snprintf(body, sizeof body, "{\"available\":%ld}", available);
    ts_http_resp_t r;
    ts_http_operator("PUT", "INVENTORY_SERVICE_URL", path, "application/json", body, &r);
    if (r.status != 201)
        fail_msg("PUT %s: expected 201, got %ld %s", path, r.status, r.body);
    ts_http_resp_free(&r);
}

typedef struct stock {
    long available, held, sold;
} stock_t;

static long int_field(const json_t *o, const char *key, const char *body) {
    const json_t *v = json_object_get(o, key);
    if (!json_is_integer(v))
        fail_msg("no integer %s in %s", key, body);
    return (long)json_integer_value(v);
}

static stock_t stock_of(const char *item) {
    char path[128];
    snprintf(path, sizeof path, "/api/inventory/%s", item);
    ts_http_resp_t r;
    ts_http("GET", "INVENTORY_SERVICE_URL", path, NULL, NULL, &r);
    if (r.status != 200)
        fail_msg("GET %s: %ld %s", path, r.status, r.body);
    stock_t s = {int_field(r.json, "available", r.body), int_field(r.json, "held", r.body),
                 int_field(r.json, "sold", r.body)};
    ts_http_resp_free(&r);
    return s;
}

static void expect_stock(const char *item, long available, long held, long sold) {
    stock_t s = stock_of(item);
    if (s.available != available || s.held != held || s.sold != sold)
        fail_msg("%s: expected available/held/sold %ld/%ld/%ld, got %ld/%ld/%ld", item,
                 available, held, sold, s.available, s.held, s.sold);
}

/* An order.created payload; lines are (itemId, quantity) pairs. */
static json_t *order_payload(const char *order_id, const char *customer, int nlines,
                             const char *const *ids, const int *qty) {
    json_t *items = json_array();
    for (int i = 0; i < nlines; i++)
        json_array_append_new(items, json_pack("{s:s, s:i, s:s}", "itemId", ids[i], "quantity",
                                               qty[i], "unitPrice", "1.50"));
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:o}", "orderId", order_id, "customerId",
                     customer, "totalAmount", "12.00", "currency", "EUR", "status",
                     DETA_STATE_CREATED, "createdAt", "2026-11-25T12:38:05.123Z", "items", items);
}

/* Injects an event on topic; returns its serialized text (to redeliver) when keep. */
static char *inject(const char *topic, const char *type, const char *order_id, json_t *payload,
                    char event_id[37], int keep) {
    char *text = ts_event(type, order_id, NULL, payload, event_id);
    ts_kafka_produce(topic, order_id, text);
    if (keep)
        return text;
    free(text);
    return NULL;
}

static void inject_order(const char *order_id, const char *customer, int nlines,
                         const char *const *ids, const int *qty) {
    inject(DETA_TOPIC_ORDER_EVENTS, DETA_EVT_ORDER_CREATED, order_id,
           order_payload(order_id, customer, nlines, ids, qty), NULL, 0);
}

/* A payment outcome for order_id, injected; its serialized text (to redeliver) when
 * keep. */
static char *inject_payment_kept(const char *type, const char *order_id, char event_id[37],
                                 int keep) {
    char payment_id[37];
    ts_uuid(payment_id);
    json_t *p = json_pack("{s:s, s:s, s:s, s:s, s:s}", "orderId", order_id, "paymentId",
                          payment_id, "customerId", "cust-inv", "amount", "12.00", "currency",
                          "EUR");
    if (strcmp(type, DETA_EVT_PAYMENT_FAILED) == 0) {
        json_object_set_new(p, "reason", json_string("DECLINED_RANDOM"));
        json_object_set_new(p, "failedAt", json_string("2026-11-25T12:38:06.000Z"));
    } else {
        json_object_set_new(p, "authorizedAt", json_string("2026-11-25T12:38:06.000Z"));
    }
    return inject(DETA_TOPIC_PAYMENT_EVENTS, type, order_id, p, event_id, keep);
}

static void inject_payment(const char *type, const char *order_id, char event_id[37]) {
    inject_payment_kept(type, order_id, event_id, 0);
}

/* The text of the first column of the first row, or "" when there is no row. */
static void pg_text(PGconn *db, const char *sql, const char *param, char *out, size_t outsize) {
    const char *params[] = {param};
    PGresult *r = PQexecParams(db, sql, 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("query failed: %s: %s", sql, PQerrorMessage(db));
    snprintf(out, outsize, "%s", PQntuples(r) ? PQgetvalue(r, 0, 0) : "");
    PQclear(r);
}

/* Waits for the order's reservation row and returns its status in out. */
static void await_reservation(PGconn *db, const char *order_id, char out[16]) {
    for (int waited = 0; waited < WAIT_MS; waited += 100) {
        pg_text(db, "SELECT status FROM reservations WHERE order_id = $1", order_id, out, 16);
        if (*out)
            return;
        ts_sleep_ms(100);
    }
    fail_msg("no reservation for order %s after %d ms", order_id, WAIT_MS);
}

/* Waits until the reservation has the wanted status. */
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

/* The service's deta_events_total of type and outcome (NULL: handled). */
static double events_of(const char *type, const char *outcome) {
    return ts_events("INVENTORY_SERVICE_URL", type, outcome);
}

/* Waits until the service counted n more events of type with outcome than before. */
static void await_events(const char *type, const char *outcome, double before, int n) {
    ts_events_await("INVENTORY_SERVICE_URL", type, outcome, before, n, WAIT_MS);
}

/* The service wrote no processed_events claim of these events. */
static void expect_no_claims(PGconn *db, const char *const *event_ids, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (ts_claims(db, SERVICE, event_ids[i]) != 0)
            fail_msg("inventory-service claimed event %s", event_ids[i]);
}

static long count_for(PGconn *db, const char *sql, const char *order_id) {
    const char *params[] = {order_id};
    return ts_pg_long(db, sql, 1, params);
}

/* The order's reservation status and the item's stock, read by one statement
 * (so from one snapshot: they agree with each other). */
typedef struct snap {
    char status[16];
    stock_t stock;
} snap_t;

static snap_t snapshot(PGconn *db, const char *order_id, const char *item) {
    const char *params[] = {order_id, item};
    PGresult *r = PQexecParams(db,
                               "SELECT r.status, s.available, s.held, s.sold FROM reservations r,"
                               " stock s WHERE r.order_id = $1 AND s.item_id = $2",
                               2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        fail_msg("no reservation %s or no item %s: %s", order_id, item, PQerrorMessage(db));
    snap_t s;
    snprintf(s.status, sizeof s.status, "%s", PQgetvalue(r, 0, 0));
    s.stock.available = atol(PQgetvalue(r, 0, 1));
    s.stock.held = atol(PQgetvalue(r, 0, 2));
    s.stock.sold = atol(PQgetvalue(r, 0, 3));
    PQclear(r);
    return s;
}

/* The item, which started with `start` units and which only this order (of qty
 * units) touches, has exactly the stock the order's status implies, and the
 * status is one of allowed (space-separated). In the full stack payment-service
 * settles a HELD reservation on its own, so a test that reserved may already see
 * it SOLD (or RELEASED for a decline-* customer); the numbers are exact either way. */
static void expect_consistent(PGconn *db, const char *order_id, const char *item, long start,
                              long qty, const char *allowed) {
    snap_t s = snapshot(db, order_id, item);
    char padded[80], word[20];
    snprintf(padded, sizeof padded, " %s ", allowed);
    snprintf(word, sizeof word, " %s ", s.status);
    if (!strstr(padded, word))
        fail_msg("order %s is %s, expected one of: %s", order_id, s.status, allowed);
    stock_t want = {start, 0, 0};
    if (strcmp(s.status, "HELD") == 0)
        want = (stock_t){start - qty, qty, 0};
    else if (strcmp(s.status, "SOLD") == 0)
        want = (stock_t){start - qty, 0, qty};
    if (s.stock.available != want.available || s.stock.held != want.held ||
        s.stock.sold != want.sold)
        fail_msg("%s with order %s %s: expected available/held/sold %ld/%ld/%ld, got "
                 "%ld/%ld/%ld",
                 item, order_id, s.status, want.available, want.held, want.sold,
                 s.stock.available, s.stock.held, s.stock.sold);
}

/* The order's inventory event of this type, parsed from the outbox. */
static void outbox_event(PGconn *db, const char *order_id, const char *type, deta_event_t *ev) {
    const char *params[] = {order_id, type};
    PGresult *r = PQexecParams(db,
                               "SELECT payload FROM outbox WHERE msg_key = $1 AND "
                               "payload::jsonb->>'eventType' = $2 ORDER BY id",
                               2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        fail_msg("order %s: expected one %s in the outbox, found %d", order_id, type,
                 PQresultStatus(r) == PGRES_TUPLES_OK ? PQntuples(r) : -1);
    char err[256];
    if (deta_event_parse(PQgetvalue(r, 0, 0), (size_t)PQgetlength(r, 0, 0), ev, err,
                         sizeof err) != DETA_OK)
        fail_msg("outbox row does not parse: %s", err);
    PQclear(r);
}

/* The first message of the order on raw.inventory-events, parsed. */
static void published_event(const char *order_id, deta_event_t *ev) {
    ts_kafka_msg_t m;
    if (!ts_kafka_find(DETA_TOPIC_INVENTORY_EVENTS, order_id, WAIT_MS, &m))
        fail_msg("nothing on %s for order %s", DETA_TOPIC_INVENTORY_EVENTS, order_id);
    char err[256];
    if (deta_event_parse(m.value, strlen(m.value), ev, err, sizeof err) != DETA_OK)
        fail_msg("published event does not parse: %s: %s", err, m.value);
    ts_kafka_msg_free(&m);
}

static const char *pstr(const deta_event_t *ev, const char *key) {
    const char *s = json_string_value(json_object_get(ev->payload, key));
    if (!s)
        fail_msg("%s payload has no string %s", ev->event_type, key);
    return s;
}

static long pint(const deta_event_t *ev, const char *key) {
    const json_t *j = json_object_get(ev->payload, key);
    if (!json_is_integer(j))
        fail_msg("%s payload has no integer %s", ev->event_type, key);
    return (long)json_integer_value(j);
}

/* ---- the admin's stock changes ---- */

/* method on /api/inventory/{item} with a JSON body; the answer in r. */
static void item_request(const char *method, const char *item, const char *body,
                         ts_http_resp_t *r) {
    char path[128];
    snprintf(path, sizeof path, "/api/inventory/%s", item);
    ts_http_operator(method, "INVENTORY_SERVICE_URL", path, "application/json", body, r);
}

/* The item's version as GET answers it. */
static long version_of(const char *item) {
    ts_http_resp_t r;
    item_request("GET", item, NULL, &r);
    if (r.status != 200)
        fail_msg("GET %s: %ld %s", item, r.status, r.body);
    long v = int_field(r.json, "version", r.body);
    ts_http_resp_free(&r);
    return v;
}

/* An error answer of this status naming field. */
static void expect_refusal(const ts_http_resp_t *r, long status, const char *field) {
    const char *f = json_string_value(json_object_get(r->json, "field"));
    if (r->status != status || !f || strcmp(f, field) != 0)
        fail_msg("expected %ld naming %s, got %ld %s", status, field, r->status, r->body);
}

/* The database's verdict on a comparison of instants, e.g. "$1::timestamptz +
 * interval '2 seconds' = $2::timestamptz" (clearer than parsing them here). */
static int pg_true(PGconn *db, const char *predicate, const char *a, const char *b) {
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT (%s)::int", predicate);
    const char *params[] = {a, b};
    return (int)ts_pg_long(db, sql, 2, params);
}

/* ---- reserving ---- */

static void order_holds_exact_stock_and_publishes_reserved(void **state) {
    (void)state;
    char a[64], b[64], order[37];
    new_item(a, "res-a", 10);
    new_item(b, "res-b", 5);
    ts_uuid(order);
    const char *ids[] = {a, b, a};
    const int qty[] = {3, 2, 1}; /* a twice: 4 in all */
    inject_order(order, CUSTOMER, 3, ids, qty);

    PGconn *db = ts_pg("inventory_db");
    char status[16];
    await_reservation(db, order, status);
    expect_consistent(db, order, a, 10, 4, "HELD SOLD");
    expect_consistent(db, order, b, 5, 2, "HELD SOLD");
    assert_int_equal(count_for(db, "SELECT count(*) FROM reservation_items WHERE order_id = $1",
                               order),
                     2);
    char reservation_id[64];
    pg_text(db, "SELECT reservation_id FROM reservations WHERE order_id = $1", order,
            reservation_id, sizeof reservation_id);

    deta_event_t ev;
    published_event(order, &ev);
    assert_string_equal(ev.event_type, DETA_EVT_INVENTORY_RESERVED);
    assert_string_equal(ev.producer, SERVICE);
    assert_string_equal(ev.order_id, order);
    assert_string_equal(ev.correlation_id, order); /* ts_event's correlation id, kept */
    assert_string_equal(pstr(&ev, "orderId"), order);
    assert_string_equal(pstr(&ev, "reservationId"), reservation_id);
    assert_string_equal(pstr(&ev, "customerId"), "cust-inv");
    assert_string_equal(pstr(&ev, "totalAmount"), "12.00");
    assert_string_equal(pstr(&ev, "currency"), "EUR");
    assert_true(deta_timestamp_valid(pstr(&ev, "reservedAt")));
    /* the stack's INVENTORY_HOLD_TTL_S is the default, 900 s */
    assert_true(pg_true(db, "$1::timestamptz + interval '900 seconds' = $2::timestamptz",
                        pstr(&ev, "reservedAt"), pstr(&ev, "holdExpiresAt")));
    json_t *items = json_object_get(ev.payload, "items");
    assert_int_equal(json_array_size(items), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(items, 0), "itemId")), a);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(items, 0), "quantity")), 4);
    assert_string_equal(json_string_value(json_object_get(json_array_get(items, 1), "itemId")), b);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(items, 1), "quantity")), 2);
    deta_event_clear(&ev);
    PQfinish(db);
}

static void a_short_second_item_holds_nothing_of_the_first(void **state) {
    (void)state;
    char a[64], b[64], order[37];
    new_item(a, "aon-a", 10);
    new_item(b, "aon-b", 1);
    ts_uuid(order);
    const char *ids[] = {a, b};
    const int qty[] = {3, 2};
    inject_order(order, CUSTOMER, 2, ids, qty);

    PGconn *db = ts_pg("inventory_db");
    await_status(db, order, "REJECTED");
    expect_stock(a, 10, 0, 0);
    expect_stock(b, 1, 0, 0);
    char reason[64];
    pg_text(db, "SELECT reason FROM reservations WHERE order_id = $1", order, reason,
            sizeof reason);
    assert_string_equal(reason, "INSUFFICIENT_STOCK");

    deta_event_t ev;
    published_event(order, &ev);
    assert_string_equal(ev.event_type, DETA_EVT_INVENTORY_REJECTED);
    assert_string_equal(pstr(&ev, "orderId"), order);
    assert_string_equal(pstr(&ev, "customerId"), "cust-inv");
    assert_string_equal(pstr(&ev, "reason"), "INSUFFICIENT_STOCK");
    assert_string_equal(pstr(&ev, "itemId"), b);
    assert_int_equal(pint(&ev, "requested"), 2);
    assert_int_equal(pint(&ev, "available"), 1);
    assert_true(deta_timestamp_valid(pstr(&ev, "rejectedAt")));
    deta_event_clear(&ev);
    assert_int_equal(ts_kafka_count(DETA_TOPIC_INVENTORY_EVENTS, order, 30000), 1);

    /* Payment outcomes for a rejected order change nothing: duplicates, rolled back. */
    char e1[37], e2[37];
    double failed = events_of(DETA_EVT_PAYMENT_FAILED, "duplicate");
    double authorized = events_of(DETA_EVT_PAYMENT_AUTHORIZED, "duplicate");
    inject_payment(DETA_EVT_PAYMENT_FAILED, order, e1);
    inject_payment(DETA_EVT_PAYMENT_AUTHORIZED, order, e2);
    await_events(DETA_EVT_PAYMENT_FAILED, "duplicate", failed, 1);
    await_events(DETA_EVT_PAYMENT_AUTHORIZED, "duplicate", authorized, 1);
    const char *const handled[] = {e1, e2};
    expect_no_claims(db, handled, 2);
    await_status(db, order, "REJECTED");
    expect_stock(a, 10, 0, 0);
    assert_int_equal(ts_kafka_count(DETA_TOPIC_INVENTORY_EVENTS, order, 30000), 1);
    PQfinish(db);
}

static void an_unknown_item_is_rejected_with_its_reason(void **state) {
    (void)state;
    char a[64], ghost[64], uuid[37], order[37];
    new_item(a, "unk-a", 10);
    ts_uuid(uuid);
    snprintf(ghost, sizeof ghost, "inv-ghost-%.8s", uuid); /* never created */
    ts_uuid(order);
    const char *ids[] = {a, ghost};
    const int qty[] = {1, 1};
    inject_order(order, CUSTOMER, 2, ids, qty);

    PGconn *db = ts_pg("inventory_db");
    await_status(db, order, "REJECTED");
    expect_stock(a, 10, 0, 0);
    deta_event_t ev;
    published_event(order, &ev);
    assert_string_equal(ev.event_type, DETA_EVT_INVENTORY_REJECTED);
    assert_string_equal(pstr(&ev, "reason"), "UNKNOWN_ITEM");
    assert_string_equal(pstr(&ev, "itemId"), ghost);
    assert_int_equal(pint(&ev, "requested"), 1);
    assert_int_equal(pint(&ev, "available"), 0);
    deta_event_clear(&ev);
    PQfinish(db);
}

static void duplicate_deliveries_reserve_once(void **state) {
    (void)state;
    char a[64], order[37], first_id[37], second_id[37];
    new_item(a, "dup", 10);
    ts_uuid(order);
    const char *ids[] = {a};
    const int qty[] = {2};
    static const char RESERVED[] = "inventory_reservations_total{outcome=\"reserved\"}";
    double reserved = ts_metric("INVENTORY_SERVICE_URL", RESERVED);
    double applied = events_of(DETA_EVT_ORDER_CREATED, "applied");
    double duplicates = events_of(DETA_EVT_ORDER_CREATED, "duplicate");
    char *text = inject(DETA_TOPIC_ORDER_EVENTS, DETA_EVT_ORDER_CREATED, order,
                        order_payload(order, CUSTOMER, 1, ids, qty), first_id, 1);
    for (int i = 0; i < 4; i++) /* the same serialized event, 5 times in all */
        ts_kafka_produce(DETA_TOPIC_ORDER_EVENTS, order, text);
    free(text);
    /* The same order again under a new event id. Same key, same partition:
     * handled last. No claim: each of the five after the first finds the
     * reservation (its key is the order id) and is a duplicate, rolled back. */
    inject(DETA_TOPIC_ORDER_EVENTS, DETA_EVT_ORDER_CREATED, order,
           order_payload(order, CUSTOMER, 1, ids, qty), second_id, 0);

    PGconn *db = ts_pg("inventory_db");
    await_events(DETA_EVT_ORDER_CREATED, "duplicate", duplicates, 5);
    /* reserved once: no other order is reserved meanwhile */
    assert_true(events_of(DETA_EVT_ORDER_CREATED, "applied") >= applied + 1);
    assert_true(events_of(DETA_EVT_ORDER_CREATED, "duplicate") >= duplicates + 5);
    assert_true(ts_metric("INVENTORY_SERVICE_URL", RESERVED) == reserved + 1);
    const char *const handled[] = {first_id, second_id};
    expect_no_claims(db, handled, 2);
    assert_int_equal(count_for(db, "SELECT count(*) FROM reservations WHERE order_id = $1", order),
                     1);
    expect_consistent(db, order, a, 10, 2, "HELD SOLD"); /* moved once */
    assert_int_equal(count_for(db, "SELECT count(*) FROM outbox WHERE msg_key = $1", order), 1);
    assert_int_equal(ts_kafka_count(DETA_TOPIC_INVENTORY_EVENTS, order, 30000), 1);
    PQfinish(db);
}

/* ---- settling ---- */

/* An order of qty units of a fresh item with `units` in stock, awaited reserved
 * (and maybe already settled by payment-service, as its customer implies). */
static void held_order(PGconn *db, const char *tag, long units, int qty, const char *customer,
                       const char *settled, char item[64], char order[37]) {
    new_item(item, tag, units);
    ts_uuid(order);
    const char *ids[] = {item};
    inject_order(order, customer, 1, ids, &qty);
    char status[16], allowed[32];
    await_reservation(db, order, status);
    snprintf(allowed, sizeof allowed, "HELD %s", settled);
    expect_consistent(db, order, item, units, qty, allowed);
}

static void payment_failed_releases_the_stock(void **state) {
    (void)state;
    PGconn *db = ts_pg("inventory_db");
    char a[64], order[37], ev1[37], ev2[37], ev3[37];
    char customer[64], uuid[37];
    ts_uuid(uuid);
    snprintf(customer, sizeof customer, "decline-inv-%.8s", uuid);
    held_order(db, "rel", 10, 4, customer, "RELEASED", a, order);

    inject_payment(DETA_EVT_PAYMENT_FAILED, order, ev1);
    await_status(db, order, "RELEASED");
    expect_stock(a, 10, 0, 0);

    deta_event_t ev;
    outbox_event(db, order, DETA_EVT_INVENTORY_RELEASED, &ev);
    char reservation_id[64];
    pg_text(db, "SELECT reservation_id FROM reservations WHERE order_id = $1", order,
            reservation_id, sizeof reservation_id);
    assert_string_equal(ev.producer, SERVICE);
    assert_string_equal(pstr(&ev, "orderId"), order);
    assert_string_equal(pstr(&ev, "reservationId"), reservation_id);
    assert_string_equal(pstr(&ev, "reason"), "PAYMENT_FAILED");
    assert_true(deta_timestamp_valid(pstr(&ev, "releasedAt")));
    json_t *items = json_object_get(ev.payload, "items");
    assert_int_equal(json_array_size(items), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(items, 0), "itemId")), a);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(items, 0), "quantity")), 4);
    deta_event_clear(&ev);
    /* reserved, then released: both published */
    for (int i = 0; i < 100 && ts_kafka_count(DETA_TOPIC_INVENTORY_EVENTS, order, 10000) < 2; i++)
        ts_sleep_ms(200);
    assert_int_equal(ts_kafka_count(DETA_TOPIC_INVENTORY_EVENTS, order, 30000), 2);

    /* Another failure or a late authorization of a released reservation: no-op,
     * a duplicate. ev3 comes after ev2 on the order's partition: once it is
     * counted, ev2 was handled. */
    double failed = events_of(DETA_EVT_PAYMENT_FAILED, "duplicate");
    double authorized = events_of(DETA_EVT_PAYMENT_AUTHORIZED, "duplicate");
    inject_payment(DETA_EVT_PAYMENT_FAILED, order, ev2);
    inject_payment(DETA_EVT_PAYMENT_AUTHORIZED, order, ev3);
    await_events(DETA_EVT_PAYMENT_AUTHORIZED, "duplicate", authorized, 1);
    assert_true(events_of(DETA_EVT_PAYMENT_FAILED, "duplicate") >= failed + 1);
    const char *const handled[] = {ev1, ev2, ev3};
    expect_no_claims(db, handled, 3);
    await_status(db, order, "RELEASED");
    expect_stock(a, 10, 0, 0);
    assert_int_equal(count_for(db, "SELECT count(*) FROM outbox WHERE msg_key = $1", order), 2);
    PQfinish(db);
}

static void payment_authorized_sells_the_stock(void **state) {
    (void)state;
    PGconn *db = ts_pg("inventory_db");
    char a[64], order[37], ev1[37], ev2[37];
    held_order(db, "sold", 10, 3, CUSTOMER, "SOLD", a, order);

    char *text = inject_payment_kept(DETA_EVT_PAYMENT_AUTHORIZED, order, ev1, 1);
    await_status(db, order, "SOLD");
    expect_stock(a, 7, 0, 3);

    /* The same authorization delivered again, then a failure after the sale: both
     * find the reservation SOLD, change nothing and are duplicates; no event either
     * way. The failure comes last on the order's partition. */
    double authorized = events_of(DETA_EVT_PAYMENT_AUTHORIZED, "duplicate");
    double failed = events_of(DETA_EVT_PAYMENT_FAILED, "duplicate");
    ts_kafka_produce(DETA_TOPIC_PAYMENT_EVENTS, order, text);
    free(text);
    inject_payment(DETA_EVT_PAYMENT_FAILED, order, ev2);
    await_events(DETA_EVT_PAYMENT_FAILED, "duplicate", failed, 1);
    assert_true(events_of(DETA_EVT_PAYMENT_AUTHORIZED, "duplicate") >= authorized + 1);
    const char *const handled[] = {ev1, ev2};
    expect_no_claims(db, handled, 2);
    await_status(db, order, "SOLD");
    expect_stock(a, 7, 0, 3);
    assert_int_equal(count_for(db, "SELECT count(*) FROM outbox WHERE msg_key = $1", order), 1);
    assert_int_equal(ts_kafka_count(DETA_TOPIC_INVENTORY_EVENTS, order, 30000), 1);
    PQfinish(db);
}

static void a_payment_outcome_for_no_reservation_is_dead_lettered_at_once(void **state) {
    (void)state;
    char order[37], ev1[37];
    ts_uuid(order); /* no order.created for it, ever */
    inject_payment(DETA_EVT_PAYMENT_FAILED, order, ev1);
    /* Other consumers of raw.payment-events may dead-letter it too: pick ours. */
    ts_kafka_msg_t m;
    if (!ts_kafka_find_where(DETA_TOPIC_DLQ_PAYMENT_EVENTS, order, "x-consumer-group",
                             "inventory-service", 60000, &m))
        fail_msg("payment.failed for unknown order %s never reached %s", order,
                 DETA_TOPIC_DLQ_PAYMENT_EVENTS);
    const char *retries = ts_kafka_header(&m, "x-retry-count");
    assert_non_null(retries);
    assert_string_equal(retries, "0"); /* terminal: not retried, nothing held up */
    assert_non_null(strstr(ts_kafka_header(&m, "x-error"), "no reservation"));
    assert_string_equal(ts_kafka_header(&m, "x-original-topic"), DETA_TOPIC_PAYMENT_EVENTS);
    ts_kafka_msg_free(&m);
    PGconn *db = ts_pg("inventory_db");
    assert_int_equal(count_for(db, "SELECT count(*) FROM reservations WHERE order_id = $1", order),
                     0);
    PQfinish(db);
}

/* ---- bad input ---- */

static void malformed_order_created_is_dead_lettered_and_the_next_is_processed(void **state) {
    (void)state;
    char a[64], bad1[37], bad2[37], good[37];
    new_item(a, "dlq", 10);
    ts_uuid(bad1);
    ts_uuid(bad2);
    ts_uuid(good);
    json_t *no_items = order_payload(bad1, CUSTOMER, 0, NULL, NULL);
    json_object_del(no_items, "items");
    inject(DETA_TOPIC_ORDER_EVENTS, DETA_EVT_ORDER_CREATED, bad1, no_items, NULL, 0);
    const char *ids[] = {a};
    const int zero[] = {0};
    inject_order(bad2, CUSTOMER, 1, ids, zero);
    const int one[] = {1};
    inject_order(good, CUSTOMER, 1, ids, one);

    const char *bad[] = {bad1, bad2};
    for (int i = 0; i < 2; i++) {
        ts_kafka_msg_t m;
        if (!ts_kafka_find_where(DETA_TOPIC_DLQ_ORDER_EVENTS, bad[i], "x-consumer-group",
                                 "inventory-service", WAIT_MS, &m))
            fail_msg("malformed order.created %s never reached %s", bad[i],
                     DETA_TOPIC_DLQ_ORDER_EVENTS);
        assert_string_equal(ts_kafka_header(&m, "x-original-topic"), DETA_TOPIC_ORDER_EVENTS);
        assert_non_null(ts_kafka_header(&m, "x-error"));
        ts_kafka_msg_free(&m);
    }
    PGconn *db = ts_pg("inventory_db");
    char status[16];
    await_reservation(db, good, status);
    expect_consistent(db, good, a, 10, 1, "HELD SOLD");
    for (int i = 0; i < 2; i++)
        assert_int_equal(
            count_for(db, "SELECT count(*) FROM reservations WHERE order_id = $1", bad[i]), 0);
    PQfinish(db);
}

/* ---- concurrency ---- */

static void twenty_orders_for_ten_units_reserve_exactly_ten(void **state) {
    (void)state;
    char a[64], orders[20][37];
    new_item(a, "race", 10);
    const char *ids[] = {a};
    const int one[] = {1};
    for (int i = 0; i < 20; i++) {
        ts_uuid(orders[i]);
        inject_order(orders[i], CUSTOMER, 1, ids, one);
    }
    PGconn *db = ts_pg("inventory_db");
    int held = 0, rejected = 0;
    for (int i = 0; i < 20; i++) {
        char status[16];
        await_reservation(db, orders[i], status);
        if (strcmp(status, "HELD") == 0 || strcmp(status, "SOLD") == 0)
            held++; /* SOLD: payment-service authorized it, in the full stack */
        else if (strcmp(status, "REJECTED") == 0)
            rejected++;
        else
            fail_msg("order %s: unexpected status %s", orders[i], status);
    }
    assert_int_equal(held, 10);
    assert_int_equal(rejected, 10);
    const char *params[] = {a};
    assert_int_equal(ts_pg_long(db, "SELECT available FROM stock WHERE item_id = $1", 1, params),
                     0);
    assert_int_equal(ts_pg_long(db, "SELECT held + sold FROM stock WHERE item_id = $1", 1, params),
                     10);
    assert_int_equal(ts_pg_long(db,
                                "SELECT coalesce(sum(quantity), 0) FROM reservation_items ri "
                                "JOIN reservations r USING (order_id) WHERE ri.item_id = $1 AND "
                                "r.status IN ('HELD', 'SOLD')",
                                1, params),
                     10);
    PQfinish(db);
}

/* ---- REST ---- */

static void rest_lists_gets_and_refuses_bad_input(void **state) {
    (void)state;
    char a[64], path[128];
    new_item(a, "rest", 7);
    snprintf(path, sizeof path, "/api/inventory/%s", a);

    ts_http_resp_t r;
    ts_http("GET", "INVENTORY_SERVICE_URL", "/api/inventory", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_true(json_is_array(r.json));
    int seen_item = 0, seen_limited = 0, seen_sku20 = 0;
    for (size_t i = 0; i < json_array_size(r.json); i++) {
        const json_t *it = json_array_get(r.json, i);
        const char *id = json_string_value(json_object_get(it, "itemId"));
        assert_non_null(id);
        if (strcmp(id, a) == 0) {
            seen_item = 1;
            assert_string_equal(json_string_value(json_object_get(it, "name")), a);
            assert_int_equal(int_field(it, "available", r.body), 7);
            assert_int_equal(int_field(it, "held", r.body), 0);
            assert_int_equal(int_field(it, "sold", r.body), 0);
        }
        seen_limited |= strcmp(id, "sku-limited") == 0;
        seen_sku20 |= strcmp(id, "sku-20") == 0;
    }
    ts_http_resp_free(&r);
    assert_true(seen_item);
    assert_true(seen_limited); /* the seeded demo catalog */
    assert_true(seen_sku20);

    ts_http("GET", "INVENTORY_SERVICE_URL", path, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "itemId")), a);
    ts_http_resp_free(&r);

    ts_http("GET", "INVENTORY_SERVICE_URL", "/api/inventory/inv-no-such-item-ever", NULL, NULL,
            &r);
    assert_int_equal(r.status, 404);
    assert_string_equal(json_string_value(json_object_get(r.json, "field")), "itemId");
    ts_http_resp_free(&r);

    ts_http("GET", "INVENTORY_SERVICE_URL", "/api/inventory/bad%20id", NULL, NULL, &r);
    assert_int_equal(r.status, 400);
    assert_string_equal(json_string_value(json_object_get(r.json, "field")), "itemId");
    ts_http_resp_free(&r);

    /* An update (of the version read) keeps held and sold, may rename, and answers 200. */
    char body[96];
    snprintf(body, sizeof body, "{\"available\":3,\"name\":\"Blue mug\",\"expectedVersion\":%ld}",
             version_of(a));
    ts_http_operator("PUT", "INVENTORY_SERVICE_URL", path, "application/json", body, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "name")), "Blue mug");
    assert_int_equal(int_field(r.json, "available", r.body), 3);
    ts_http_resp_free(&r);
    expect_stock(a, 3, 0, 0);

    const struct {
        const char *method, *content_type, *body;
        long status;
        const char *field;
    } cases[] = {
        {"PUT", "application/json", "{}", 400, "available"},
        {"PUT", "application/json", "{\"available\":-1}", 400, "available"},
        {"PUT", "application/json", "{\"available\":\"5\"}", 400, "available"},
        {"PUT", "application/json", "{\"available\":2.5}", 400, "available"},
        {"PUT", "application/json", "{\"available\":1000000001}", 400, "available"},
        {"PUT", "application/json", "{\"available\":1,\"name\":\"\"}", 400, "name"},
        {"PUT", "application/json", "{\"available\":", 400, "body"},
        {"PUT", "text/plain", "{\"available\":1}", 415, NULL},
        {"PUT", "application/json", "{\"available\":1,\"expectedVersion\":-1}", 400,
         "expectedVersion"},
        {"PUT", "application/json", "{\"available\":1,\"expectedVersion\":\"1\"}", 400,
         "expectedVersion"},
        {"PUT", "application/json", "{\"available\":1,\"sellable\":\"no\"}", 400, "sellable"},
        {"PUT", "application/json", "{\"available\":1,\"expectedVersion\":999999}", 409,
         "expectedVersion"},
        {"PATCH", "application/json", "{}", 400, "delta"},
        {"PATCH", "application/json", "{\"delta\":\"5\"}", 400, "delta"},
        {"PATCH", "application/json", "{\"delta\":1000000001}", 400, "delta"},
        {"PATCH", "application/json", "{\"available\":5}", 400, "available"},
        {"PATCH", "application/json", "{\"delta\":1,\"expectedVersion\":0}", 400,
         "expectedVersion"},
        {"PATCH", "application/json", "{\"delta\":1,\"expectedVersion\":999999}", 409,
         "expectedVersion"},
        {"PATCH", "text/plain", "{\"delta\":1}", 415, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        ts_http_operator(cases[i].method, "INVENTORY_SERVICE_URL", path, cases[i].content_type,
                         cases[i].body, &r);
        if (r.status != cases[i].status)
            fail_msg("case %zu: expected %ld, got %ld %s", i, cases[i].status, r.status, r.body);
        assert_non_null(r.json);
        if (cases[i].field) {
            const char *field = json_string_value(json_object_get(r.json, "field"));
            if (!field || strcmp(field, cases[i].field) != 0)
                fail_msg("case %zu: expected field %s: %s", i, cases[i].field, r.body);
        }
        ts_http_resp_free(&r);
    }
    ts_http_operator("PUT", "INVENTORY_SERVICE_URL", "/api/inventory/bad%20id",
                     "application/json", "{\"available\":1}", &r);
    assert_int_equal(r.status, 400);
    assert_string_equal(json_string_value(json_object_get(r.json, "field")), "itemId");
    ts_http_resp_free(&r);
    expect_stock(a, 3, 0, 0); /* nothing above changed it */
}

static double metric_value(const char *text, const char *series) {
    const char *p = text;
    size_t n = strlen(series);
    while ((p = strstr(p, series)) != NULL) {
        if ((p == text || p[-1] == '\n') && p[n] == ' ')
            return atof(p + n + 1);
        p += n;
    }
    fail_msg("no series %s in the metrics", series);
    return 0;
}

static void health_and_metrics_are_served(void **state) {
    (void)state;
    ts_http_resp_t r;
    ts_http("GET", "INVENTORY_SERVICE_URL", "/actuator/health", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "status")), "UP");
    ts_http_resp_free(&r);

    /* The tests above reserved, rejected, sold and released at least once each. */
    ts_http("GET", "INVENTORY_SERVICE_URL", "/actuator/prometheus", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "# TYPE inventory_reservations_total counter"));
    assert_true(metric_value(r.body, "inventory_reservations_total{outcome=\"reserved\"}") >= 10);
    assert_true(metric_value(r.body, "inventory_reservations_total{outcome=\"rejected\"}") >= 10);
    assert_true(metric_value(r.body, "inventory_released_total") >= 1);
    assert_true(metric_value(r.body, "inventory_sold_total") >= 1);
    ts_http_resp_free(&r);
}

/* ---- races with the admin (#22 finding 8) ---- */

/* The operator reads 10, an order holds 4, the operator puts 15 "to add 5":
 * with the version read before the order, the put is refused (409, with the
 * current state), so 19 units never become sellable; a relative change adds
 * exactly 5 to whatever is there. */
static void a_stale_put_is_refused_and_a_delta_adds_to_what_is_there(void **state) {
    (void)state;
    PGconn *db = ts_pg("inventory_db");
    char a[64], order[37], body[128];
    new_item(a, "cas", 10);
    long read_version = version_of(a);
    ts_uuid(order);
    const char *ids[] = {a};
    const int four[] = {4};
    inject_order(order, CUSTOMER, 1, ids, four);
    /* payment-service authorizes this customer: once sold, nothing else moves the item */
    await_status(db, order, "SOLD");
    expect_stock(a, 6, 0, 4);

    ts_http_resp_t r;
    snprintf(body, sizeof body, "{\"available\":15,\"expectedVersion\":%ld}", read_version);
    item_request("PUT", a, body, &r);
    expect_refusal(&r, 409, "expectedVersion");
    const json_t *current = json_object_get(r.json, "current");
    assert_int_equal(int_field(current, "available", r.body), 6);
    assert_true(int_field(current, "version", r.body) > read_version);
    ts_http_resp_free(&r);
    expect_stock(a, 6, 0, 4); /* nothing changed */

    /* A put without a version cannot change an existing item either. */
    item_request("PUT", a, "{\"available\":15}", &r);
    expect_refusal(&r, 428, "expectedVersion");
    assert_int_equal(int_field(json_object_get(r.json, "current"), "available", r.body), 6);
    ts_http_resp_free(&r);

    item_request("PATCH", a, "{\"delta\":5}", &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(int_field(r.json, "available", r.body), 11);
    ts_http_resp_free(&r);
    stock_t s = stock_of(a);
    assert_int_equal(s.available + s.held + s.sold, 15); /* 10 + 5, not 19 */
    assert_int_equal(s.available, 11);

    /* A put with the current version sets the count; a delta below zero is refused. */
    snprintf(body, sizeof body, "{\"available\":20,\"expectedVersion\":%ld}", version_of(a));
    item_request("PUT", a, body, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(int_field(r.json, "available", r.body), 20);
    ts_http_resp_free(&r);
    item_request("PATCH", a, "{\"delta\":-21}", &r);
    expect_refusal(&r, 409, "delta");
    assert_int_equal(int_field(json_object_get(r.json, "current"), "available", r.body), 20);
    ts_http_resp_free(&r);
    assert_int_equal(stock_of(a).available, 20);
    PQfinish(db);
}

/* An unknown item: PATCH is 404; PUT creates it without a version (or with 0,
 * "it must not exist yet"), and the same PUT again changes nothing (200). */
static void a_put_creates_and_a_patch_needs_an_item(void **state) {
    (void)state;
    char ghost[64], uuid[37];
    ts_uuid(uuid);
    snprintf(ghost, sizeof ghost, "inv-new-%.8s", uuid);
    ts_http_resp_t r;
    item_request("PATCH", ghost, "{\"delta\":1}", &r);
    expect_refusal(&r, 404, "itemId");
    ts_http_resp_free(&r);
    /* Creating an item takes no version (or 0: "it must not exist yet"). */
    item_request("PUT", ghost, "{\"available\":2,\"expectedVersion\":0}", &r);
    assert_int_equal(r.status, 201);
    assert_true(json_is_true(json_object_get(r.json, "sellable")));
    ts_http_resp_free(&r);
    /* The same put again (a retry after a lost answer) changes nothing: 200. */
    item_request("PUT", ghost, "{\"available\":2}", &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(int_field(r.json, "version", r.body), 1);
    ts_http_resp_free(&r);
    expect_stock(ghost, 2, 0, 0);
}

/* ---- short holds: payment-service stopped, holds of 2 s (#22 finding 7) ---- */

#define HOLD_TTL "2"
#define HOLD_GRACE "1"

static int short_holds(void **state) {
    (void)state;
    ts_stack_ok("stop payment-service");
    ts_stack_ok("stop inventory-service");
    setenv("INVENTORY_HOLD_TTL_S", HOLD_TTL, 1);
    setenv("INVENTORY_HOLD_GRACE_S", HOLD_GRACE, 1);
    ts_stack_ok("start inventory-service");
    return 0;
}

static int stack_settings_back(void **state) {
    (void)state;
    unsetenv("INVENTORY_HOLD_TTL_S");
    unsetenv("INVENTORY_HOLD_GRACE_S");
    ts_stack_ok("stop inventory-service");
    ts_stack_ok("start inventory-service");
    ts_stack_ok("start payment-service");
    return 0;
}

/* An order of qty units of item, awaited reserved: HELD, since no payment-service
 * runs (or RELEASED already, should this poll come more than TTL + grace late). */
static void hold(PGconn *db, const char *item, int qty, char order[37]) {
    ts_uuid(order);
    const char *ids[] = {item};
    inject_order(order, CUSTOMER, 1, ids, &qty);
    char status[16];
    await_reservation(db, order, status);
    if (strcmp(status, "HELD") != 0 && strcmp(status, "RELEASED") != 0)
        fail_msg("order %s: reservation is %s, expected HELD", order, status);
}

static void a_hold_whose_payment_never_comes_is_released_after_ttl_and_grace(void **state) {
    (void)state;
    PGconn *db = ts_pg("inventory_db");
    char a[64], order[37];
    new_item(a, "exp", 10);
    hold(db, a, 4, order);

    deta_event_t reserved;
    outbox_event(db, order, DETA_EVT_INVENTORY_RESERVED, &reserved);
    char expires[DETA_TS_LEN];
    snprintf(expires, sizeof expires, "%s", pstr(&reserved, "holdExpiresAt"));
    assert_true(pg_true(db, "$1::timestamptz + interval '" HOLD_TTL " seconds' = $2::timestamptz",
                        pstr(&reserved, "reservedAt"), expires));
    deta_event_clear(&reserved);

    await_status(db, order, "RELEASED");
    expect_stock(a, 10, 0, 0);
    char reason[32];
    pg_text(db, "SELECT reason FROM reservations WHERE order_id = $1", order, reason,
            sizeof reason);
    assert_string_equal(reason, "HOLD_EXPIRED");

    deta_event_t released;
    outbox_event(db, order, DETA_EVT_INVENTORY_RELEASED, &released);
    assert_string_equal(released.correlation_id, order); /* the saga's, kept */
    assert_string_equal(pstr(&released, "reason"), "HOLD_EXPIRED");
    json_t *items = json_object_get(released.payload, "items");
    assert_int_equal(json_array_size(items), 1);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(items, 0), "quantity")), 4);
    /* not before the expiry and the grace */
    assert_true(pg_true(db,
                        "$2::timestamptz >= $1::timestamptz + interval '" HOLD_GRACE " seconds'",
                        expires, pstr(&released, "releasedAt")));
    deta_event_clear(&released);
    for (int i = 0; i < 100 && ts_kafka_count(DETA_TOPIC_INVENTORY_EVENTS, order, 10000) < 2; i++)
        ts_sleep_ms(200);
    assert_int_equal(ts_kafka_count(DETA_TOPIC_INVENTORY_EVENTS, order, 30000), 2);

    /* payment-service's "hold expired" failure, coming after the release: nothing,
     * a duplicate (payment-service is stopped: no other outcome comes). */
    char ev[37];
    double failed = events_of(DETA_EVT_PAYMENT_FAILED, "duplicate");
    inject_payment(DETA_EVT_PAYMENT_FAILED, order, ev);
    await_events(DETA_EVT_PAYMENT_FAILED, "duplicate", failed, 1);
    const char *const handled[] = {ev};
    expect_no_claims(db, handled, 1);
    await_status(db, order, "RELEASED");
    expect_stock(a, 10, 0, 0);
    assert_int_equal(count_for(db, "SELECT count(*) FROM outbox WHERE msg_key = $1", order), 2);
    PQfinish(db);
}

static void a_late_authorization_with_stock_there_keeps_the_sale(void **state) {
    (void)state;
    PGconn *db = ts_pg("inventory_db");
    char a[64], order[37], ev[37];
    new_item(a, "late-ok", 10);
    hold(db, a, 4, order);
    await_status(db, order, "RELEASED");
    expect_stock(a, 10, 0, 0);

    inject_payment(DETA_EVT_PAYMENT_AUTHORIZED, order, ev);
    await_status(db, order, "SOLD");
    expect_stock(a, 6, 0, 4);
    /* reserved, released: nothing more is published (a sale never is) */
    assert_int_equal(count_for(db, "SELECT count(*) FROM outbox WHERE msg_key = $1", order), 2);
    PQfinish(db);
}

static void a_late_authorization_without_stock_does_not_oversell(void **state) {
    (void)state;
    PGconn *db = ts_pg("inventory_db");
    char a[64], late[37], other[37], ev1[37], ev2[37];
    new_item(a, "late-short", 5);
    hold(db, a, 4, late);
    await_status(db, late, "RELEASED");
    /* Another order takes 3 of the 5 units back and is paid for. */
    hold(db, a, 3, other);
    inject_payment(DETA_EVT_PAYMENT_AUTHORIZED, other, ev1);
    await_status(db, other, "SOLD");
    expect_stock(a, 2, 0, 3);

    inject_payment(DETA_EVT_PAYMENT_AUTHORIZED, late, ev2);
    await_status(db, late, "UNFULFILLABLE");
    expect_stock(a, 2, 0, 3); /* 4 were paid for, 2 are there: none taken */
    deta_event_t ev;
    outbox_event(db, late, DETA_EVT_INVENTORY_REJECTED, &ev);
    assert_string_equal(pstr(&ev, "reason"), "HOLD_EXPIRED");
    assert_string_equal(pstr(&ev, "itemId"), a);
    assert_int_equal(pint(&ev, "requested"), 4);
    assert_int_equal(pint(&ev, "available"), 2);
    deta_event_clear(&ev);
    for (int i = 0; i < 100 && ts_kafka_count(DETA_TOPIC_INVENTORY_EVENTS, late, 10000) < 3; i++)
        ts_sleep_ms(200);
    assert_int_equal(ts_kafka_count(DETA_TOPIC_INVENTORY_EVENTS, late, 30000), 3);
    PQfinish(db);
}

/* Stop sales while an order holds units: the release that follows returns the
 * units to available, and none of them is sold until sales resume. */
static void stopped_sales_stay_stopped_after_a_release(void **state) {
    (void)state;
    PGconn *db = ts_pg("inventory_db");
    char a[64], held[37], next[37], ev[37];
    new_item(a, "stop", 10);
    hold(db, a, 4, held);

    ts_http_resp_t r;
    item_request("PATCH", a, "{\"sellable\":false}", &r);
    assert_int_equal(r.status, 200);
    assert_true(json_is_false(json_object_get(r.json, "sellable")));
    ts_http_resp_free(&r);
    inject_payment(DETA_EVT_PAYMENT_FAILED, held, ev); /* or the hold expired first */
    await_status(db, held, "RELEASED");
    expect_stock(a, 10, 0, 0);

    ts_uuid(next);
    const char *ids[] = {a};
    const int one[] = {1};
    inject_order(next, CUSTOMER, 1, ids, one);
    await_status(db, next, "REJECTED");
    char reason[32];
    pg_text(db, "SELECT reason FROM reservations WHERE order_id = $1", next, reason,
            sizeof reason);
    assert_string_equal(reason, "NOT_SELLABLE");
    expect_stock(a, 10, 0, 0);

    item_request("PATCH", a, "{\"sellable\":true}", &r);
    assert_int_equal(r.status, 200);
    ts_http_resp_free(&r);
    char again[37];
    hold(db, a, 1, again);
    PQfinish(db);
}

static void old_holds_are_measured(void **state) {
    (void)state;
    ts_http_resp_t r;
    ts_http("GET", "INVENTORY_SERVICE_URL", "/actuator/prometheus", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "# TYPE inventory_holds_oldest_age_seconds gauge"));
    assert_true(metric_value(r.body, "inventory_holds_oldest_age_seconds") >= 0);
    /* since the restart: each test above let one hold expire at least */
    assert_true(metric_value(r.body, "inventory_holds_expired_total") >= 3);
    assert_true(metric_value(r.body, "inventory_late_authorizations_total{outcome=\"sold\"}") >=
                1);
    assert_true(
        metric_value(r.body, "inventory_late_authorizations_total{outcome=\"unfulfillable\"}") >=
        1);
    ts_http_resp_free(&r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(order_holds_exact_stock_and_publishes_reserved),
        cmocka_unit_test(a_short_second_item_holds_nothing_of_the_first),
        cmocka_unit_test(an_unknown_item_is_rejected_with_its_reason),
        cmocka_unit_test(duplicate_deliveries_reserve_once),
        cmocka_unit_test(payment_failed_releases_the_stock),
        cmocka_unit_test(payment_authorized_sells_the_stock),
        cmocka_unit_test(malformed_order_created_is_dead_lettered_and_the_next_is_processed),
        cmocka_unit_test(twenty_orders_for_ten_units_reserve_exactly_ten),
        cmocka_unit_test(a_payment_outcome_for_no_reservation_is_dead_lettered_at_once),
        cmocka_unit_test(rest_lists_gets_and_refuses_bad_input),
        cmocka_unit_test(a_stale_put_is_refused_and_a_delta_adds_to_what_is_there),
        cmocka_unit_test(a_put_creates_and_a_patch_needs_an_item),
        cmocka_unit_test(health_and_metrics_are_served),
    };
    const struct CMUnitTest short_hold_tests[] = {
        cmocka_unit_test(a_hold_whose_payment_never_comes_is_released_after_ttl_and_grace),
        cmocka_unit_test(a_late_authorization_with_stock_there_keeps_the_sale),
        cmocka_unit_test(a_late_authorization_without_stock_does_not_oversell),
        cmocka_unit_test(stopped_sales_stay_stopped_after_a_release),
        cmocka_unit_test(old_holds_are_measured),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    return failed + cmocka_run_group_tests(short_hold_tests, short_holds, stack_settings_back);
}
