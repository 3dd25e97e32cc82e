/*
 * test_delivery_cancel.c - delivery-service as the cancel's arbiter for paid
 * orders (docs/contracts.md#cancellation), against the real test stack.
 *
 * The tests inject payment.authorized and payment.cancel_forwarded themselves
 * (fresh order ids, ts_event) and read raw.delivery-events, dlq.payment-events,
 * delivery_db and the REST API. The stack's delivery clock must be sped up
 * (DELIVERY_CLOCK_SPEED=600: a pick-up is due a real second after assignment).
 *
 * Where a test needs a delivery to stay ASSIGNED, it moves the delivery's
 * next_transition_at an hour ahead from its own connection (conditional on
 * ASSIGNED, so a pick-up that came first is seen and the test takes a fresh
 * order). Where it needs a full fleet, it seeds the deliveries that fill every
 * available driver to capacity itself (payment_id 'cancel-test-filler'), and
 * cancels them through the service to empty the fleet again. The pick-up race
 * is forced by holding the delivery's row lock from the test's connection while
 * the pick-up is due and the cancel arrives, and sampled over many orders whose
 * cancel arrives just as their pick-up is due.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "deta/envelope.h"
#include "deta/topics.h"
#include "testsupport.h"

#define WAIT_MS 60000
#define DELIVERY "DELIVERY_SERVICE_URL"
#define MAX_MSGS 32
#define GROUP "delivery-service"
#define FILLER "cancel-test-filler"
#define RACERS 40

static long long mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void clock_speed(void) {
    const char *v = getenv("DELIVERY_CLOCK_SPEED");
    if (!v || atol(v) < 60)
        fail_msg("these tests need the stack's delivery clock sped up: export "
                 "DELIVERY_CLOCK_SPEED (600 in scripts/test.sh) before starting the stack");
}

/* ---- delivery_db ---- */

static long sql_long(const char *sql, const char *order_id) {
    PGconn *db = ts_pg("delivery_db");
    const char *params[] = {order_id};
    long v = ts_pg_long(db, sql, order_id ? 1 : 0, order_id ? params : NULL);
    PQfinish(db);
    return v;
}

static void await_long(const char *sql, const char *order_id, long want) {
    long long deadline = mono_ms() + WAIT_MS;
    long v = sql_long(sql, order_id);
    while (v != want && mono_ms() < deadline) {
        ts_sleep_ms(100);
        v = sql_long(sql, order_id);
    }
    if (v != want)
        fail_msg("%s for %s: %ld, expected %ld", sql, order_id ? order_id : "-", v, want);
}

static void run_sql(const char *sql) {
    PGconn *db = ts_pg("delivery_db");
    PGresult *res = PQexec(db, sql);
    if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(db));
    PQclear(res);
    PQfinish(db);
}

/* One text value of a one-parameter query ("" for NULL or no row), into out. */
static void sql_text(const char *sql, const char *order_id, char *out, size_t size) {
    PGconn *db = ts_pg("delivery_db");
    const char *params[] = {order_id};
    PGresult *res = PQexecParams(db, sql, 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(db));
    snprintf(out, size, "%s", PQntuples(res) ? PQgetvalue(res, 0, 0) : "");
    PQclear(res);
    PQfinish(db);
}

static const char COUNT_DELIVERIES[] = "SELECT count(*) FROM deliveries WHERE order_id = $1";
static const char ACTIVE_ALL[] =
    "SELECT count(*) FROM deliveries WHERE status IN ('ASSIGNED', 'PICKED_UP')";
static const char DECIDED[] =
    "SELECT (SELECT count(*) FROM cancelled_orders WHERE order_id = $1)"
    " + (SELECT count(*) FROM deliveries WHERE order_id = $1 AND cancel_refused_at IS NOT NULL)";

/* Everything delivery-service's outbox holds so far is out (the relay's
 * stream is past it). */
static void await_relayed(void) {
    PGconn *db = ts_pg("delivery_db");
    bool relayed = ts_outbox_relayed(db, WAIT_MS);
    PQfinish(db);
    if (!relayed)
        fail_msg("delivery-service's outbox relay did not catch up in %d ms", WAIT_MS);
}

/* No driver carries more, or less, than its deliveries not yet handed over. */
static void assert_driver_counts_right(void) {
    assert_int_equal(sql_long("SELECT count(*) FROM drivers r WHERE active_deliveries <>"
                              " (SELECT count(*) FROM deliveries d WHERE d.driver_id ="
                              " r.driver_id AND d.status IN ('ASSIGNED', 'PICKED_UP'))",
                              NULL),
                     0);
}

/* ---- events in ---- */

typedef struct order {
    char id[37];
    char corr[37];
    char payment[37];
} order_t;

static void order_new(order_t *o) {
    ts_uuid(o->id);
    ts_uuid(o->corr);
    ts_uuid(o->payment);
}

static char *authorized_event(const order_t *o, char *event_id) {
    json_t *payload = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "orderId", o->id, "paymentId",
                                o->payment, "customerId", "cust-cancel", "amount", "18.40",
                                "currency", "USD", "authorizedAt", "2026-11-25T12:00:00.000Z");
    return ts_event(DETA_EVT_PAYMENT_AUTHORIZED, o->id, o->corr, payload, event_id);
}

static json_t *forward_payload(const order_t *o, const char *reason) {
    return json_pack("{s:s, s:s, s:o, s:s, s:s}", "orderId", o->id, "paymentId", o->payment,
                     "reason", reason ? json_string(reason) : json_null(), "requestedAt",
                     "2026-11-25T12:00:05.000Z", "forwardedAt", "2026-11-25T12:00:06.000Z");
}

static char *forward_event(const order_t *o, const char *reason, char *event_id) {
    return ts_event(DETA_EVT_PAYMENT_CANCEL_FORWARDED, o->id, o->corr,
                    forward_payload(o, reason), event_id);
}

static void produce(const order_t *o, char *text) {
    ts_kafka_produce(DETA_TOPIC_PAYMENT_EVENTS, o->id, text);
    free(text);
}

static void inject_authorized(const order_t *o) { produce(o, authorized_event(o, NULL)); }
static void inject_forward(const order_t *o, const char *reason) {
    produce(o, forward_event(o, reason, NULL));
}

/* A fresh order assigned a driver and held ASSIGNED: its pick-up moved an hour
 * ahead (taking a fresh order when the ticker picked one up first). */
static void assigned_and_held(order_t *o) {
    for (int tries = 0; tries < 10; tries++) {
        order_new(o);
        inject_authorized(o);
        await_long(COUNT_DELIVERIES, o->id, 1);
        if (sql_long("WITH h AS (UPDATE deliveries SET next_transition_at = now() + interval"
                     " '1 hour' WHERE order_id = $1 AND status = 'ASSIGNED' RETURNING 1)"
                     " SELECT count(*) FROM h",
                     o->id) == 1)
            return;
        await_long("SELECT count(*) FROM deliveries WHERE order_id = $1 AND status ="
                   " 'DELIVERED'",
                   o->id, 1);
    }
    fail_msg("every delivery was picked up before the test could hold it");
}

/* A fresh order picked up and held PICKED_UP (its hand-over an hour ahead). */
static void picked_up_and_held(order_t *o) {
    for (int tries = 0; tries < 10; tries++) {
        order_new(o);
        inject_authorized(o);
        await_long("SELECT count(*) FROM deliveries WHERE order_id = $1 AND status <>"
                   " 'ASSIGNED'",
                   o->id, 1);
        if (sql_long("WITH h AS (UPDATE deliveries SET next_transition_at = now() + interval"
                     " '1 hour' WHERE order_id = $1 AND status = 'PICKED_UP' RETURNING 1)"
                     " SELECT count(*) FROM h",
                     o->id) == 1)
            return;
    }
    fail_msg("every delivery was handed over before the test could hold it");
}

/* Lets a held delivery go on (due now). */
static void release_hold(const order_t *o) {
    PGconn *db = ts_pg("delivery_db");
    const char *params[] = {o->id};
    PQclear(PQexecParams(db,
                         "UPDATE deliveries SET next_transition_at = now() WHERE order_id = $1"
                         " AND status IN ('ASSIGNED', 'PICKED_UP')",
                         1, NULL, params, NULL, NULL, 0));
    PQfinish(db);
}

/* ---- events out ---- */

typedef struct outcome {
    ts_kafka_msg_t raw[MAX_MSGS];
    deta_event_t ev[MAX_MSGS];
    int n;
} outcome_t;

/* Every event of the order on raw.delivery-events (its stages and verdicts; its
 * ETAs are on raw.eta-events), once its outbox is empty and at least want of
 * them are there. */
static void read_events(const char *order_id, int want, outcome_t *out) {
    await_relayed();
    memset(out, 0, sizeof *out);
    out->n = ts_kafka_collect(DETA_TOPIC_DELIVERY_EVENTS, order_id, want, WAIT_MS, out->raw,
                              MAX_MSGS);
    if (out->n < want)
        fail_msg("order %s: %d delivery events, expected %d at least", order_id, out->n, want);
    /* read to the end, so that nothing published is left out */
    int total = ts_kafka_count(DETA_TOPIC_DELIVERY_EVENTS, order_id, 30000);
    if (total > out->n) {
        for (int i = 0; i < out->n; i++)
            ts_kafka_msg_free(&out->raw[i]);
        out->n = ts_kafka_collect(DETA_TOPIC_DELIVERY_EVENTS, order_id, total, WAIT_MS,
                                  out->raw, MAX_MSGS);
    }
    for (int i = 0; i < out->n; i++) {
        char why[256];
        if (deta_event_parse(out->raw[i].value, strlen(out->raw[i].value), &out->ev[i], why,
                             sizeof why) != DETA_OK)
            fail_msg("event %d does not validate: %s: %s", i, why, out->raw[i].value);
    }
}

static void free_events(outcome_t *o) {
    for (int i = 0; i < o->n; i++) {
        deta_event_clear(&o->ev[i]);
        ts_kafka_msg_free(&o->raw[i]);
    }
    o->n = 0;
}

static int count_type(const outcome_t *o, const char *type) {
    int n = 0;
    for (int i = 0; i < o->n; i++)
        n += strcmp(o->ev[i].event_type, type) == 0;
    return n;
}

static int index_of(const outcome_t *o, const char *type) {
    for (int i = 0; i < o->n; i++)
        if (strcmp(o->ev[i].event_type, type) == 0)
            return i;
    return -1;
}

static const char *field(const json_t *o, const char *key) {
    const char *s = json_string_value(json_object_get(o, key));
    if (!s)
        fail_msg("no string field %s", key);
    return s;
}

static bool is_null(const json_t *o, const char *key) {
    const json_t *v = json_object_get(o, key);
    return v && json_is_null(v);
}

/* ---- REST and metrics ---- */

static void get_delivery(const char *order_id, ts_http_resp_t *r) {
    char path[128];
    snprintf(path, sizeof path, "/api/deliveries/%s", order_id);
    ts_http("GET", "DELIVERY_SERVICE_URL", path, NULL, NULL, r);
    assert_int_equal(r->status, 200);
}

static long driver_active(const char *driver_id) {
    ts_http_resp_t r;
    ts_http("GET", "DELIVERY_SERVICE_URL", "/api/drivers", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    json_t *drivers = json_object_get(r.json, "drivers");
    long active = -1;
    for (size_t i = 0; i < json_array_size(drivers); i++) {
        const json_t *d = json_array_get(drivers, i);
        if (strcmp(field(d, "driverId"), driver_id) == 0)
            active = (long)json_integer_value(json_object_get(d, "activeDeliveries"));
    }
    ts_http_resp_free(&r);
    if (active < 0)
        fail_msg("no driver %s in GET /api/drivers", driver_id);
    return active;
}

static double cancel_metric(const char *outcome) {
    char series[96];
    snprintf(series, sizeof series, "delivery_cancel_requests_total{outcome=\"%s\"}", outcome);
    double v = ts_metric("DELIVERY_SERVICE_URL", series);
    return v < 0 ? 0 : v;
}

static void cancel_fillers(void);

/* Waits until nothing is on the way (deliveries of earlier tests handed over),
 * so that a driver's count moves only with this test's orders. What an earlier
 * run that failed left held is let go first. */
static void fleet_idle(void) {
    cancel_fillers();
    run_sql("UPDATE deliveries SET next_transition_at = now() WHERE status IN ('ASSIGNED',"
            " 'PICKED_UP') AND next_transition_at > now() + interval '10 minutes'");
    await_long(ACTIVE_ALL, NULL, 0);
}

/* ---- tests ---- */

/* ASSIGNED -> CANCELLED: delivery.cancelled after delivery.assigned, the driver's
 * slot back, never picked up, shown CANCELLED, counted. */
static void assigned_delivery_is_cancelled_and_its_driver_freed(void **state) {
    (void)state;
    clock_speed();
    fleet_idle();
    double before = cancel_metric("cancelled");
    order_t o;
    assigned_and_held(&o);
    char driver[64];
    sql_text("SELECT driver_id FROM deliveries WHERE order_id = $1", o.id, driver,
             sizeof driver);
    assert_int_equal(driver_active(driver), 1);

    inject_forward(&o, "changed my mind");
    outcome_t ev;
    read_events(o.id, 2, &ev);
    assert_int_equal(ev.n, 2);
    assert_string_equal(ev.ev[0].event_type, DETA_EVT_DELIVERY_ASSIGNED);
    assert_string_equal(ev.ev[1].event_type, DETA_EVT_DELIVERY_CANCELLED);
    const json_t *c = ev.ev[1].payload;
    assert_int_equal(json_object_size(c), 8);
    assert_string_equal(field(c, "orderId"), o.id);
    assert_string_equal(field(c, "stage"), "ASSIGNED");
    assert_string_equal(field(c, "deliveryId"), field(ev.ev[0].payload, "deliveryId"));
    assert_string_equal(field(c, "driverId"), driver);
    assert_string_equal(field(c, "paymentId"), o.payment);
    assert_string_equal(field(c, "reason"), "changed my mind");
    assert_string_equal(field(c, "requestedAt"), "2026-11-25T12:00:05.000Z");
    assert_true(deta_timestamp_valid(field(c, "cancelledAt")));
    assert_string_equal(ev.ev[1].correlation_id, o.corr);
    assert_string_equal(ev.ev[1].producer, "delivery-service");
    assert_string_equal(ev.raw[1].key, o.id);

    assert_int_equal(sql_long("SELECT count(*) FROM deliveries WHERE order_id = $1 AND status ="
                              " 'CANCELLED' AND cancelled_at IS NOT NULL AND next_transition_at"
                              " IS NULL",
                              o.id),
                     1);
    assert_int_equal(sql_long("SELECT count(*) FROM cancelled_orders c JOIN deliveries d USING"
                              " (order_id) WHERE c.order_id = $1 AND c.stage = 'ASSIGNED' AND"
                              " c.delivery_id = d.delivery_id",
                              o.id),
                     1);
    assert_int_equal(driver_active(driver), 0);
    assert_driver_counts_right();

    ts_http_resp_t r;
    get_delivery(o.id, &r);
    assert_string_equal(field(r.json, "status"), "CANCELLED");
    assert_string_equal(field(r.json, "cancelledAt"), field(c, "cancelledAt"));
    assert_string_equal(field(r.json, "driverId"), driver);
    assert_true(is_null(r.json, "pickedUpAt"));
    ts_http_resp_free(&r);
    assert_true(cancel_metric("cancelled") >= before + 1);

    /* a cancelled delivery is never due again: the hour it was held for is
     * gone, and still no pick-up */
    ts_sleep_ms(1500);
    assert_int_equal(ts_kafka_count(DETA_TOPIC_DELIVERY_EVENTS, o.id, 10000), 2);
    assert_int_equal(ts_kafka_count(DETA_TOPIC_ETA_EVENTS, o.id, 10000), 1); /* the assignment's */
    free_events(&ev);
}

/* payment.authorized and payment.cancel_forwarded back to back: the assignment
 * in flight finishes first, and the verdict follows it (never NONE). */
static void assignment_in_flight_finishes_before_the_cancel(void **state) {
    (void)state;
    clock_speed();
    order_t o;
    order_new(&o);
    char *texts[2] = {authorized_event(&o, NULL), forward_event(&o, NULL, NULL)};
    const char *keys[2] = {o.id, o.id};
    ts_kafka_produce_many(DETA_TOPIC_PAYMENT_EVENTS, keys, (const char *const *)texts, 2);
    free(texts[0]);
    free(texts[1]);

    await_long(DECIDED, o.id, 1);
    outcome_t ev;
    read_events(o.id, 2, &ev);
    assert_string_equal(ev.ev[0].event_type, DETA_EVT_DELIVERY_ASSIGNED);
    int cancelled = index_of(&ev, DETA_EVT_DELIVERY_CANCELLED);
    if (cancelled >= 0) {
        assert_string_equal(field(ev.ev[cancelled].payload, "stage"), "ASSIGNED");
        assert_string_equal(field(ev.ev[cancelled].payload, "deliveryId"),
                            field(ev.ev[0].payload, "deliveryId"));
        assert_true(is_null(ev.ev[cancelled].payload, "reason"));
        assert_int_equal(count_type(&ev, DETA_EVT_DELIVERY_PICKED_UP), 0);
    } else { /* only if the machine was so slow that the pick-up came first */
        fprintf(stderr, "note: the pick-up came before the cancel; it was refused\n");
        assert_true(index_of(&ev, DETA_EVT_DELIVERY_PICKED_UP) <
                    index_of(&ev, DETA_EVT_DELIVERY_CANCEL_REFUSED));
    }
    assert_int_equal(count_type(&ev, DETA_EVT_DELIVERY_CANCELLED) +
                         count_type(&ev, DETA_EVT_DELIVERY_CANCEL_REFUSED),
                     1);
    assert_int_equal(sql_long("SELECT count(*) FROM cancelled_orders WHERE order_id = $1 AND"
                              " stage = 'NONE'",
                              o.id),
                     0);
    free_events(&ev);
}

/* Every available driver filled to capacity by seeded deliveries (held an hour
 * ahead); returns how many were seeded. */
static long fill_the_fleet(void) {
    fleet_idle();
    ts_http_resp_t r;
    ts_http("GET", "DELIVERY_SERVICE_URL", "/api/drivers", NULL, NULL, &r);
    long cap = (long)json_integer_value(json_object_get(r.json, "capacity"));
    ts_http_resp_free(&r);
    assert_true(cap >= 1);
    char sql[2048];
    snprintf(sql, sizeof sql,
             "BEGIN;"
             "INSERT INTO deliveries (delivery_id, order_id, driver_id, payment_id,"
             "  correlation_id, status, distance_km, assigned_at, estimated_delivery_at,"
             "  next_transition_at, updated_at)"
             " SELECT gen_random_uuid(), gen_random_uuid(), r.driver_id, '" FILLER "',"
             "  gen_random_uuid()::text, 'ASSIGNED', 1.0, now(), now() + interval '1 hour',"
             "  now() + interval '1 hour', now()"
             " FROM drivers r, generate_series(1, %ld) k"
             " WHERE r.available AND k > r.active_deliveries;"
             "UPDATE drivers SET active_deliveries = %ld WHERE available;"
             "COMMIT",
             cap, cap);
    run_sql(sql);
    return sql_long("SELECT count(*) FROM deliveries WHERE payment_id = '" FILLER "'"
                    " AND status = 'ASSIGNED'",
                    NULL);
}

/* The seeded deliveries still ASSIGNED, cancelled through the service. */
static void cancel_fillers(void) {
    PGconn *db = ts_pg("delivery_db");
    PGresult *res = PQexec(db, "SELECT order_id, correlation_id FROM deliveries WHERE"
                               " payment_id = '" FILLER "' AND status = 'ASSIGNED'");
    int n = PQntuples(res);
    char **texts = calloc((size_t)n + 1, sizeof *texts);
    char (*ids)[37] = calloc((size_t)n + 1, sizeof *ids);
    const char **keys = calloc((size_t)n + 1, sizeof *keys);
    for (int i = 0; i < n; i++) {
        order_t o;
        snprintf(o.id, sizeof o.id, "%s", PQgetvalue(res, i, 0));
        snprintf(o.corr, sizeof o.corr, "%s", PQgetvalue(res, i, 1));
        snprintf(o.payment, sizeof o.payment, "%s", FILLER);
        texts[i] = forward_event(&o, "test cleanup", NULL);
        memcpy(ids[i], o.id, sizeof ids[i]);
        keys[i] = ids[i];
    }
    PQclear(res);
    PQfinish(db);
    if (n > 0)
        ts_kafka_produce_many(DETA_TOPIC_PAYMENT_EVENTS, keys, (const char *const *)texts,
                              (size_t)n);
    for (int i = 0; i < n; i++)
        free(texts[i]);
    free(texts);
    free(ids);
    free(keys);
    await_long("SELECT count(*) FROM deliveries WHERE payment_id = '" FILLER "'"
               " AND status = 'ASSIGNED'",
               NULL, 0);
}

static int fleet_emptied(void **state) {
    (void)state;
    cancel_fillers();
    return 0;
}

/* A full fleet: A and B wait. A's cancel takes it out of the queue
 * (delivery.cancelled, stage WAITING); then a seeded delivery's cancel frees a
 * slot, which goes to B, the first waiting order, in that very transaction; A
 * is never assigned. */
static void waiting_order_cancelled_leaves_the_queue(void **state) {
    (void)state;
    clock_speed();
    long seeded = fill_the_fleet();
    assert_true(seeded >= 1);
    order_t a, b;
    order_new(&a);
    order_new(&b);
    inject_authorized(&a);
    await_long("SELECT count(*) FROM waiting_orders WHERE order_id = $1", a.id, 1);
    inject_authorized(&b);
    await_long("SELECT count(*) FROM waiting_orders WHERE order_id = $1", b.id, 1);

    inject_forward(&a, "too slow");
    await_long("SELECT count(*) FROM cancelled_orders WHERE order_id = $1 AND stage ="
               " 'WAITING' AND delivery_id IS NULL",
               a.id, 1);
    assert_int_equal(sql_long("SELECT count(*) FROM waiting_orders WHERE order_id = $1", a.id),
                     0);
    outcome_t ev;
    read_events(a.id, 2, &ev);
    assert_int_equal(ev.n, 2);
    assert_string_equal(ev.ev[0].event_type, DETA_EVT_DELIVERY_WAITING);
    assert_string_equal(ev.ev[1].event_type, DETA_EVT_DELIVERY_CANCELLED);
    const json_t *c = ev.ev[1].payload;
    assert_string_equal(field(c, "stage"), "WAITING");
    assert_true(is_null(c, "deliveryId"));
    assert_true(is_null(c, "driverId"));
    assert_string_equal(field(c, "paymentId"), a.payment);
    assert_string_equal(field(c, "reason"), "too slow");
    ts_http_resp_t r;
    get_delivery(a.id, &r);
    assert_string_equal(field(r.json, "orderId"), a.id);
    assert_string_equal(field(r.json, "status"), "CANCELLED");
    assert_string_equal(field(r.json, "stage"), "WAITING");
    assert_true(is_null(r.json, "deliveryId"));
    assert_string_equal(field(r.json, "paymentId"), a.payment);
    assert_string_equal(field(r.json, "cancelledAt"), field(c, "cancelledAt"));
    ts_http_resp_free(&r);
    free_events(&ev);
    /* B, behind A, is first now */
    get_delivery(b.id, &r);
    assert_string_equal(field(r.json, "status"), "WAITING");
    assert_int_equal(json_integer_value(json_object_get(r.json, "position")), 1);
    ts_http_resp_free(&r);

    /* one seeded delivery cancelled: its slot goes to B in the same transaction */
    order_t f;
    sql_text("SELECT order_id FROM deliveries WHERE payment_id = '" FILLER "' AND status ="
             " 'ASSIGNED' ORDER BY driver_id LIMIT $1::int",
             "1", f.id, sizeof f.id);
    ts_uuid(f.corr);
    snprintf(f.payment, sizeof f.payment, "%s", FILLER);
    char driver[64];
    sql_text("SELECT driver_id FROM deliveries WHERE order_id = $1", f.id, driver,
             sizeof driver);
    inject_forward(&f, NULL);
    await_long("SELECT count(*) FROM deliveries WHERE order_id = $1 AND status = 'CANCELLED'",
               f.id, 1);
    /* one snapshot: the filler cancelled, B assigned to its driver, B out of the queue */
    PGconn *db = ts_pg("delivery_db");
    const char *ids[] = {f.id, b.id, driver};
    assert_int_equal(ts_pg_long(db,
                                "SELECT count(*) FROM deliveries f, deliveries b"
                                " WHERE f.order_id = $1 AND f.status = 'CANCELLED'"
                                " AND b.order_id = $2 AND b.driver_id = $3"
                                " AND NOT EXISTS (SELECT 1 FROM waiting_orders w"
                                "   WHERE w.order_id = $2)",
                                3, ids),
                     1);
    PQfinish(db);
    outcome_t fe;
    read_events(f.id, 1, &fe);
    assert_int_equal(fe.n, 1);
    assert_string_equal(field(fe.ev[0].payload, "stage"), "ASSIGNED");
    assert_string_equal(field(fe.ev[0].payload, "driverId"), driver);
    free_events(&fe);

    /* the fleet empties; A is never assigned, nor announced again */
    cancel_fillers();
    await_long("SELECT count(*) FROM deliveries WHERE order_id = $1 AND status = 'DELIVERED'",
               b.id, 1);
    assert_int_equal(sql_long(COUNT_DELIVERIES, a.id), 0);
    assert_int_equal(sql_long("SELECT count(*) FROM waiting_orders WHERE order_id = $1", a.id),
                     0);
    assert_int_equal(ts_kafka_count(DETA_TOPIC_DELIVERY_EVENTS, a.id, 10000), 2);
    assert_int_equal(ts_kafka_count(DETA_TOPIC_ETA_EVENTS, a.id, 10000), 0);
    assert_driver_counts_right();
}

/* A delivery picked up (or handed over) refuses: delivery.cancel_refused with
 * the order's state, nothing cancelled, counted. */
static void picked_up_or_delivered_refuses(void **state) {
    (void)state;
    clock_speed();
    double before = cancel_metric("refused");
    order_t p;
    picked_up_and_held(&p);
    inject_forward(&p, "late");
    await_long(DECIDED, p.id, 1);
    outcome_t ev;
    read_events(p.id, 3, &ev);
    assert_int_equal(ev.n, 3);
    assert_string_equal(ev.ev[1].event_type, DETA_EVT_DELIVERY_PICKED_UP);
    assert_string_equal(ev.ev[2].event_type, DETA_EVT_DELIVERY_CANCEL_REFUSED);
    const json_t *x = ev.ev[2].payload;
    assert_int_equal(json_object_size(x), 5);
    assert_string_equal(field(x, "orderId"), p.id);
    assert_string_equal(field(x, "orderStatus"), "PICKED_UP");
    assert_string_equal(field(x, "reason"), "late");
    assert_string_equal(field(x, "requestedAt"), "2026-11-25T12:00:05.000Z");
    assert_true(deta_timestamp_valid(field(x, "refusedAt")));
    assert_int_equal(count_type(&ev, DETA_EVT_DELIVERY_CANCELLED), 0);
    assert_int_equal(ts_kafka_count(DETA_TOPIC_ETA_EVENTS, p.id, 10000), 2); /* no third */
    assert_int_equal(sql_long("SELECT count(*) FROM cancelled_orders WHERE order_id = $1", p.id),
                     0);
    free_events(&ev);
    release_hold(&p); /* and it is delivered as if nothing was asked */
    await_long("SELECT count(*) FROM deliveries WHERE order_id = $1 AND status = 'DELIVERED'",
               p.id, 1);

    order_t d;
    order_new(&d);
    inject_authorized(&d);
    await_long("SELECT count(*) FROM deliveries WHERE order_id = $1 AND status = 'DELIVERED'",
               d.id, 1);
    inject_forward(&d, NULL);
    await_long(DECIDED, d.id, 1);
    read_events(d.id, 4, &ev);
    assert_int_equal(ev.n, 4);
    assert_string_equal(ev.ev[3].event_type, DETA_EVT_DELIVERY_CANCEL_REFUSED);
    assert_string_equal(field(ev.ev[3].payload, "orderStatus"), "DELIVERED");
    assert_true(is_null(ev.ev[3].payload, "reason"));
    free_events(&ev);
    assert_int_equal(ts_kafka_count(DETA_TOPIC_ETA_EVENTS, d.id, 10000), 3);
    ts_http_resp_t r;
    get_delivery(d.id, &r);
    assert_string_equal(field(r.json, "status"), "DELIVERED");
    assert_true(is_null(r.json, "cancelledAt"));
    ts_http_resp_free(&r);
    assert_true(cancel_metric("refused") >= before + 2);
}

/* An order never seen is fenced: delivery.cancelled stage NONE, and a later
 * payment.authorized assigns nothing and publishes nothing. */
static void unknown_order_is_fenced(void **state) {
    (void)state;
    clock_speed();
    order_t o;
    order_new(&o);
    inject_forward(&o, NULL);
    await_long("SELECT count(*) FROM cancelled_orders WHERE order_id = $1 AND stage = 'NONE'"
               " AND delivery_id IS NULL",
               o.id, 1);
    outcome_t ev;
    read_events(o.id, 1, &ev);
    assert_int_equal(ev.n, 1);
    assert_string_equal(ev.ev[0].event_type, DETA_EVT_DELIVERY_CANCELLED);
    assert_string_equal(field(ev.ev[0].payload, "stage"), "NONE");
    assert_true(is_null(ev.ev[0].payload, "deliveryId"));
    assert_true(is_null(ev.ev[0].payload, "driverId"));
    free_events(&ev);
    ts_http_resp_t r;
    get_delivery(o.id, &r);
    assert_string_equal(field(r.json, "status"), "CANCELLED");
    assert_string_equal(field(r.json, "stage"), "NONE");
    ts_http_resp_free(&r);

    double dup = ts_events(DELIVERY, DETA_EVT_PAYMENT_AUTHORIZED, "duplicate");
    double seen = ts_events(DELIVERY, DETA_EVT_PAYMENT_AUTHORIZED, NULL);
    produce(&o, authorized_event(&o, NULL));
    ts_events_await(DELIVERY, DETA_EVT_PAYMENT_AUTHORIZED, NULL, seen, 1, WAIT_MS);
    assert_true(ts_events(DELIVERY, DETA_EVT_PAYMENT_AUTHORIZED, "duplicate") >= dup + 1);
    assert_int_equal(sql_long(COUNT_DELIVERIES, o.id), 0);
    assert_int_equal(sql_long("SELECT count(*) FROM waiting_orders WHERE order_id = $1", o.id),
                     0);
    assert_int_equal(ts_kafka_count(DETA_TOPIC_DELIVERY_EVENTS, o.id, 10000), 1);
    assert_int_equal(ts_kafka_count(DETA_TOPIC_ETA_EVENTS, o.id, 10000), 0);
}

/* A forward sent twice (another event id each time) gets one verdict, for a
 * cancel that won and for one refused. */
static void a_second_forward_changes_nothing(void **state) {
    (void)state;
    clock_speed();
    order_t o;
    assigned_and_held(&o);
    double dup = ts_events(DELIVERY, DETA_EVT_PAYMENT_CANCEL_FORWARDED, "duplicate");
    double seen = ts_events(DELIVERY, DETA_EVT_PAYMENT_CANCEL_FORWARDED, NULL);
    char *texts[2] = {forward_event(&o, NULL, NULL), forward_event(&o, NULL, NULL)};
    const char *keys[2] = {o.id, o.id};
    ts_kafka_produce_many(DETA_TOPIC_PAYMENT_EVENTS, keys, (const char *const *)texts, 2);
    free(texts[0]);
    free(texts[1]);
    ts_events_await(DELIVERY, DETA_EVT_PAYMENT_CANCEL_FORWARDED, NULL, seen, 2, WAIT_MS);
    assert_true(ts_events(DELIVERY, DETA_EVT_PAYMENT_CANCEL_FORWARDED, "duplicate") >= dup + 1);
    outcome_t ev;
    read_events(o.id, 2, &ev);
    assert_int_equal(ev.n, 2);
    assert_int_equal(count_type(&ev, DETA_EVT_DELIVERY_CANCELLED), 1);
    free_events(&ev);
    assert_int_equal(ts_kafka_count(DETA_TOPIC_ETA_EVENTS, o.id, 10000), 1);
    assert_driver_counts_right();

    order_t p;
    picked_up_and_held(&p);
    dup = ts_events(DELIVERY, DETA_EVT_PAYMENT_CANCEL_FORWARDED, "duplicate");
    seen = ts_events(DELIVERY, DETA_EVT_PAYMENT_CANCEL_FORWARDED, NULL);
    texts[0] = forward_event(&p, NULL, NULL);
    texts[1] = forward_event(&p, NULL, NULL);
    keys[0] = keys[1] = p.id;
    ts_kafka_produce_many(DETA_TOPIC_PAYMENT_EVENTS, keys, (const char *const *)texts, 2);
    free(texts[0]);
    free(texts[1]);
    ts_events_await(DELIVERY, DETA_EVT_PAYMENT_CANCEL_FORWARDED, NULL, seen, 2, WAIT_MS);
    assert_true(ts_events(DELIVERY, DETA_EVT_PAYMENT_CANCEL_FORWARDED, "duplicate") >= dup + 1);
    read_events(p.id, 3, &ev);
    assert_int_equal(ev.n, 3);
    assert_int_equal(count_type(&ev, DETA_EVT_DELIVERY_CANCEL_REFUSED), 1);
    free_events(&ev);
    assert_int_equal(ts_kafka_count(DETA_TOPIC_ETA_EVENTS, p.id, 10000), 2);
    release_hold(&p);
}

/* A malformed forward is dead-lettered naming the field; the order's next
 * event is handled. */
static void malformed_forward_is_dead_lettered(void **state) {
    (void)state;
    clock_speed();
    const struct {
        const char *drop, *key, *raw; /* a field removed, or key set to raw JSON */
        const char *phrase;
    } cases[] = {
        {"paymentId", NULL, NULL, "payload.paymentId is required"},
        {"requestedAt", NULL, NULL, "payload.requestedAt is required"},
        {NULL, "reason", "42", "payload.reason"},
        {NULL, "orderId", "\"5b0f6c4e-0000-4000-8000-000000000000\"", "differs from the envelope"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        order_t o;
        order_new(&o);
        json_t *payload = forward_payload(&o, NULL);
        if (cases[i].drop)
            json_object_del(payload, cases[i].drop);
        else
            json_object_set_new(payload, cases[i].key,
                                json_loads(cases[i].raw, JSON_DECODE_ANY, NULL));
        char *bad = ts_event(DETA_EVT_PAYMENT_CANCEL_FORWARDED, o.id, o.corr, payload, NULL);
        ts_kafka_produce(DETA_TOPIC_PAYMENT_EVENTS, o.id, bad);
        inject_forward(&o, NULL);

        ts_kafka_msg_t m;
        if (!ts_kafka_find_where(DETA_TOPIC_DLQ_PAYMENT_EVENTS, o.id, "x-consumer-group", GROUP,
                                 WAIT_MS, &m))
            fail_msg("case %zu: no dead letter of %s for %s", i, GROUP, o.id);
        const char *why = ts_kafka_header(&m, "x-error");
        if (!why || !strstr(why, cases[i].phrase))
            fail_msg("case %zu: x-error \"%s\" does not say \"%s\"", i, why ? why : "",
                     cases[i].phrase);
        assert_string_equal(m.value, bad);
        assert_string_equal(ts_kafka_header(&m, "x-retry-count"), "0");
        ts_kafka_msg_free(&m);
        free(bad);
        await_long("SELECT count(*) FROM cancelled_orders WHERE order_id = $1 AND stage ="
                   " 'NONE'",
                   o.id, 1);
    }
}

/* The pick-up race, forced: the test holds the delivery's row while its pick-up
 * is due and the cancel arrives (the cancel waits for the row, the ticker passes
 * it over), then lets go. Exactly one wins: CANCELLED without a pick-up, or
 * picked up and the cancel refused. */
static void pick_up_race_held_on_the_row_has_one_winner(void **state) {
    (void)state;
    clock_speed();
    order_t o;
    PGconn *hold = ts_pg("delivery_db");
    bool held = false;
    for (int tries = 0; tries < 10 && !held; tries++) {
        order_new(&o);
        inject_authorized(&o);
        await_long(COUNT_DELIVERIES, o.id, 1);
        PQclear(PQexec(hold, "BEGIN"));
        const char *params[] = {o.id};
        held = ts_pg_long(hold,
                          "SELECT count(*) FROM (SELECT 1 FROM deliveries WHERE order_id = $1"
                          " AND status = 'ASSIGNED' FOR UPDATE) x",
                          1, params) == 1;
        if (!held)
            PQclear(PQexec(hold, "ROLLBACK"));
    }
    if (!held)
        fail_msg("every delivery was picked up before the test could hold it");
    /* due now, while held */
    const char *params[] = {o.id};
    long long deadline = mono_ms() + WAIT_MS;
    while (ts_pg_long(hold,
                      "SELECT count(*) FROM deliveries WHERE order_id = $1 AND"
                      " next_transition_at <= clock_timestamp()",
                      1, params) != 1 &&
           mono_ms() < deadline)
        ts_sleep_ms(50);
    ts_sleep_ms(600); /* a few ticker turns pass it over */
    inject_forward(&o, NULL);
    /* the cancel now waits for the row */
    await_long("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND"
               " wait_event_type = 'Lock' AND query LIKE '%CANCELLED%'",
               NULL, 1);
    assert_int_equal(sql_long(DECIDED, o.id), 0);
    PQclear(PQexec(hold, "COMMIT"));
    PQfinish(hold);

    await_long(DECIDED, o.id, 1);
    ts_sleep_ms(1500); /* anything a loser might still publish */
    outcome_t ev;
    read_events(o.id, 2, &ev);
    int picked = count_type(&ev, DETA_EVT_DELIVERY_PICKED_UP);
    int cancelled = count_type(&ev, DETA_EVT_DELIVERY_CANCELLED);
    int refused = count_type(&ev, DETA_EVT_DELIVERY_CANCEL_REFUSED);
    char status[32];
    sql_text("SELECT status FROM deliveries WHERE order_id = $1", o.id, status, sizeof status);
    bool cancel_won = strcmp(status, "CANCELLED") == 0 && cancelled == 1 && picked == 0 &&
                      refused == 0;
    bool pick_up_won = strcmp(status, "CANCELLED") != 0 && picked == 1 && refused == 1 &&
                       cancelled == 0;
    if (cancel_won == pick_up_won)
        fail_msg("order %s: status %s, %d picked up, %d cancelled, %d refused", o.id, status,
                 picked, cancelled, refused);
    fprintf(stderr, "held race: the %s won\n", cancel_won ? "cancel" : "pick-up");
    free_events(&ev);
    assert_driver_counts_right();
}

/* The other interleaving, forced: the pick-up commits while the cancel waits
 * for the row. The test's own transaction takes the ticker's part (it holds
 * the row and moves it ASSIGNED -> PICKED_UP as the ticker's save does); the
 * cancel, which decided on ASSIGNED, updates no row once the lock is granted,
 * reads the order again and refuses. */
static void pick_up_committed_while_the_cancel_waits_is_refused(void **state) {
    (void)state;
    clock_speed();
    order_t o;
    assigned_and_held(&o);
    PGconn *hold = ts_pg("delivery_db");
    PQclear(PQexec(hold, "BEGIN"));
    const char *params[] = {o.id};
    assert_int_equal(ts_pg_long(hold,
                                "SELECT count(*) FROM (SELECT 1 FROM deliveries WHERE"
                                " order_id = $1 AND status = 'ASSIGNED' FOR UPDATE) x",
                                1, params),
                     1);
    inject_forward(&o, NULL);
    await_long("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND"
               " wait_event_type = 'Lock' AND query LIKE '%CANCELLED%'",
               NULL, 1);
    assert_int_equal(ts_pg_long(hold,
                                "WITH p AS (UPDATE deliveries SET status = 'PICKED_UP',"
                                " picked_up_at = clock_timestamp(), next_transition_at ="
                                " clock_timestamp() + interval '1 hour' WHERE order_id = $1"
                                " AND status = 'ASSIGNED' RETURNING 1) SELECT count(*) FROM p",
                                1, params),
                     1);
    PQclear(PQexec(hold, "COMMIT"));
    PQfinish(hold);

    await_long(DECIDED, o.id, 1);
    outcome_t ev;
    read_events(o.id, 2, &ev); /* the pick-up above was the test's own: no event */
    assert_int_equal(ev.n, 2);
    assert_string_equal(ev.ev[1].event_type, DETA_EVT_DELIVERY_CANCEL_REFUSED);
    assert_string_equal(field(ev.ev[1].payload, "orderStatus"), "PICKED_UP");
    free_events(&ev);
    char status[32];
    sql_text("SELECT status FROM deliveries WHERE order_id = $1", o.id, status, sizeof status);
    assert_string_equal(status, "PICKED_UP");
    assert_int_equal(sql_long("SELECT count(*) FROM cancelled_orders WHERE order_id = $1", o.id),
                     0);
    assert_driver_counts_right();
    release_hold(&o);
    await_long("SELECT count(*) FROM deliveries WHERE order_id = $1 AND status = 'DELIVERED'",
               o.id, 1);
}

/* The pick-up race, sampled: many orders whose cancel arrives around the very
 * instant their pick-up is due. Each gets one verdict; none is both picked up
 * and cancelled. */
typedef struct tally {
    char (*ids)[37];
    int n;
    int picked[RACERS], cancelled[RACERS], refused[RACERS];
} tally_t;

static void visit_tally(const ts_kafka_msg_t *m, void *opaque) {
    tally_t *t = opaque;
    if (!m->key)
        return;
    for (int i = 0; i < t->n; i++)
        if (strcmp(m->key, t->ids[i]) == 0) {
            t->picked[i] += strstr(m->value, "\"" DETA_EVT_DELIVERY_PICKED_UP "\"") != NULL;
            t->cancelled[i] += strstr(m->value, "\"" DETA_EVT_DELIVERY_CANCELLED "\"") != NULL;
            t->refused[i] += strstr(m->value, "\"" DETA_EVT_DELIVERY_CANCEL_REFUSED "\"") != NULL;
            return;
        }
}

static void pick_up_race_sampled_never_gives_two_verdicts(void **state) {
    (void)state;
    clock_speed();
    fleet_idle();
    static order_t o[RACERS];
    static char ids[RACERS][37];
    char *texts[RACERS];
    const char *keys[RACERS];
    for (int i = 0; i < RACERS; i++) {
        order_new(&o[i]);
        memcpy(ids[i], o[i].id, sizeof ids[i]);
        keys[i] = o[i].id;
        texts[i] = authorized_event(&o[i], NULL);
    }
    ts_kafka_produce_many(DETA_TOPIC_PAYMENT_EVENTS, keys, (const char *const *)texts, RACERS);
    for (int i = 0; i < RACERS; i++)
        free(texts[i]);

    /* each cancel is sent when its pick-up is due within an offset spread from
     * 100 ms overdue to 600 ms ahead (a tick is 200 ms, and the cancel takes a
     * trip through Kafka first) */
    bool sent[RACERS] = {false};
    int nsent = 0;
    PGconn *db = ts_pg("delivery_db");
    long long deadline = mono_ms() + WAIT_MS;
    while (nsent < RACERS && mono_ms() < deadline) {
        int nbatch = 0;
        for (int i = 0; i < RACERS; i++) {
            if (sent[i])
                continue;
            const char *params[] = {o[i].id};
            /* ms until the pick-up is due; no delivery yet: wait; picked up
             * already: send now */
            long until = ts_pg_long(db,
                                    "SELECT coalesce((SELECT CASE WHEN status = 'ASSIGNED'"
                                    " THEN (extract(epoch FROM next_transition_at -"
                                    " clock_timestamp()) * 1000)::bigint ELSE -1000000 END"
                                    " FROM deliveries WHERE order_id = $1), 1000000)",
                                    1, params);
            long offset = -100 + (700 * i) / (RACERS - 1);
            if (until <= offset) {
                texts[nbatch] = forward_event(&o[i], NULL, NULL);
                keys[nbatch++] = o[i].id;
                sent[i] = true;
            }
        }
        /* one producer for those whose time came: a producer of its own each
         * would take longer than the window */
        if (nbatch > 0)
            ts_kafka_produce_many(DETA_TOPIC_PAYMENT_EVENTS, keys, (const char *const *)texts,
                                  (size_t)nbatch);
        for (int k = 0; k < nbatch; k++)
            free(texts[k]);
        nsent += nbatch;
        ts_sleep_ms(10);
    }
    PQfinish(db);
    assert_int_equal(nsent, RACERS);
    for (int i = 0; i < RACERS; i++) {
        await_long(DECIDED, o[i].id, 1);
    }
    await_relayed();
    ts_sleep_ms(2000); /* anything a loser might still publish */
    tally_t t = {ids, RACERS, {0}, {0}, {0}};
    ts_kafka_scan_all(DETA_TOPIC_DELIVERY_EVENTS, WAIT_MS, visit_tally, &t);
    int won = 0, lost = 0;
    for (int i = 0; i < RACERS; i++) {
        bool cancel_won = t.cancelled[i] == 1 && t.picked[i] == 0 && t.refused[i] == 0;
        bool pick_up_won = t.picked[i] == 1 && t.refused[i] == 1 && t.cancelled[i] == 0;
        if (cancel_won == pick_up_won)
            fail_msg("order %s: %d picked up, %d cancelled, %d refused", o[i].id, t.picked[i],
                     t.cancelled[i], t.refused[i]);
        won += cancel_won;
        lost += pick_up_won;
    }
    fprintf(stderr, "sampled race: %d cancels won, %d refused after the pick-up\n", won, lost);
    for (int i = 0; i < RACERS; i++)
        assert_int_equal(sql_long("SELECT count(*) FROM deliveries WHERE order_id = $1 AND"
                                  " status = 'CANCELLED' AND picked_up_at IS NOT NULL",
                                  o[i].id),
                         0);
    await_long(ACTIVE_ALL, NULL, 0);
    assert_driver_counts_right();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(assigned_delivery_is_cancelled_and_its_driver_freed),
        cmocka_unit_test(assignment_in_flight_finishes_before_the_cancel),
        cmocka_unit_test_teardown(waiting_order_cancelled_leaves_the_queue, fleet_emptied),
        cmocka_unit_test(picked_up_or_delivered_refuses),
        cmocka_unit_test(unknown_order_is_fenced),
        cmocka_unit_test(a_second_forward_changes_nothing),
        cmocka_unit_test(malformed_forward_is_dead_lettered),
        cmocka_unit_test(pick_up_race_held_on_the_row_has_one_winner),
        cmocka_unit_test(pick_up_committed_while_the_cancel_waits_is_refused),
        cmocka_unit_test(pick_up_race_sampled_never_gives_two_verdicts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
