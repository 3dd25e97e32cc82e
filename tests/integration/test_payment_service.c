/*
 * test_payment_service.c - payment-service against the real test stack: events
 * are injected on raw.inventory-events with fresh order ids, and the outcome is
 * read from raw.payment-events, the delivery_eta database, Redis, the REST API
 * and the service's metrics.
 *
 * Each idempotency layer has a test that fails without it:
 *   - the lock: a foreign token on payment-lock:order:X holds X's payment back
 *     (and is never deleted by the service: release is compare-and-delete);
 *   - the marker: payment:dedup:{eventId} set beforehand stops the payment;
 *   - the unique key: with the marker gone, a redelivery still pays once;
 *   - the claim in Postgres: another instance's claim holds the payment back
 *     even with Redis up; an expired one (a crashed holder's) is taken over;
 *   - Redis stopped (scripts/stack.sh stop redis): duplicates still pay once,
 *     health is DEGRADED, and all comes back when Redis does.
 * And a slow gateway's calls wait side by side on fewer Postgres connections.
 * An attempt that an instance left unfinished (its row in payment_attempts) is
 * resumed by a look-up in the gateway's ledger: charged once when the ledger
 * has nothing, recorded with the ledger's answer when it has; a reservation
 * whose hold expired is declined without a charge; the housekeeping deletes
 * expired claims and counts stale attempts.
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

/* A serialized inventory.reserved for order (event id into event_id). */
static char *reserved_event(const char *order, const char *customer, const char *amount,
                            const char *correlation, char event_id[37]) {
    json_t *payload = json_pack("{s:s, s:s, s:s, s:s, s:s, s:[{s:s, s:i}], s:s}", "orderId",
                                order, "reservationId", "res-test", "customerId", customer,
                                "totalAmount", amount, "currency", "EUR", "items", "itemId",
                                "sku-1", "quantity", 2, "reservedAt", "2026-11-25T12:00:00.000Z");
    assert_non_null(payload);
    return ts_event(DETA_EVT_INVENTORY_RESERVED, order, correlation, payload, event_id);
}

static void inject(const char *order, const char *text) {
    ts_kafka_produce(DETA_TOPIC_INVENTORY_EVENTS, order, text);
}

/* Injects a fresh reserved event; returns its event id in event_id. */
static void inject_reserved(const char *order, const char *customer, const char *amount,
                            char event_id[37]) {
    char *text = reserved_event(order, customer, amount, NULL, event_id);
    inject(order, text);
    free(text);
}

/* ---- the database ---- */

static long payments_of(const char *order) {
    PGconn *db = ts_pg("delivery_eta");
    const char *params[] = {order};
    long n = ts_pg_long(db, "SELECT count(*) FROM payments WHERE order_id = $1", 1, params);
    PQfinish(db);
    return n;
}

static void await_payments(const char *order, long want) {
    long n = 0;
    for (int waited = 0; waited < WAIT_MS; waited += 200, ts_sleep_ms(200))
        if ((n = payments_of(order)) >= want)
            break;
    if (n != want)
        fail_msg("order %s: %ld payments, expected %ld", order, n, want);
}

/* One text column of the order's payment row. */
static char *payment_column(const char *order, const char *column) {
    PGconn *db = ts_pg("delivery_eta");
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT %s::text FROM payments WHERE order_id = $1", column);
    const char *params[] = {order};
    PGresult *res = PQexecParams(db, sql, 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
        fail_msg("no payment row for %s: %s", order, PQerrorMessage(db));
    char *v = strdup(PQgetisnull(res, 0, 0) ? "(null)" : PQgetvalue(res, 0, 0));
    PQclear(res);
    PQfinish(db);
    return v;
}

static void expect_column(const char *order, const char *column, const char *want) {
    char *v = payment_column(order, column);
    if (strcmp(v, want) != 0)
        fail_msg("order %s: %s is %s, expected %s", order, column, v, want);
    free(v);
}

/* ---- metrics and health ---- */

static double metric(const char *name) {
    ts_http_resp_t r;
    ts_http("GET", "PAYMENT_SERVICE_URL", "/actuator/prometheus", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    char needle[128];
    snprintf(needle, sizeof needle, "\n%s ", name);
    const char *line = strstr(r.body, needle);
    double v = line ? strtod(line + strlen(needle), NULL) : 0;
    if (!line && !strchr(name, '{')) /* a labelled series appears on first use */
        fail_msg("metric %s not exposed", name);
    ts_http_resp_free(&r);
    return v;
}

static void await_metric_above(const char *name, double before) {
    for (int waited = 0; waited < WAIT_MS; waited += 200, ts_sleep_ms(200))
        if (metric(name) > before)
            return;
    fail_msg("%s stayed at %g", name, before);
}

/* Waits for the health status (and the redis component's) to be as given. */
static void await_health(long http_status, const char *status, const char *redis_status) {
    char last[512] = "";
    for (int waited = 0; waited < WAIT_MS; waited += 250, ts_sleep_ms(250)) {
        ts_http_resp_t r;
        ts_http("GET", "PAYMENT_SERVICE_URL", "/actuator/health", NULL, NULL, &r);
        json_t *c = json_object_get(r.json, "components");
        const char *s = json_string_value(json_object_get(r.json, "status"));
        const char *rs = json_string_value(json_object_get(json_object_get(c, "redis"), "status"));
        const char *db = json_string_value(json_object_get(json_object_get(c, "db"), "status"));
        bool ok = r.status == http_status && s && strcmp(s, status) == 0 && rs &&
                  strcmp(rs, redis_status) == 0 && db && strcmp(db, "UP") == 0;
        snprintf(last, sizeof last, "%ld %s", r.status, r.body);
        ts_http_resp_free(&r);
        if (ok)
            return;
    }
    fail_msg("health never became %s with redis %s; last: %s", status, redis_status, last);
}

/* ---- Redis, seen from outside the service ---- */

static void await_key(const char *key, bool present) {
    for (int waited = 0; waited < WAIT_MS; waited += 200, ts_sleep_ms(200)) {
        char *v = ts_redis_get(key);
        free(v);
        if ((v != NULL) == present)
            return;
    }
    fail_msg("Redis key %s never became %s", key, present ? "present" : "absent");
}

static void marker_key(char *out, size_t size, const char *event_id) {
    snprintf(out, size, "payment:dedup:%s", event_id);
}

static void lock_key(char *out, size_t size, const char *order) {
    snprintf(out, size, "payment-lock:order:%s", order);
}

/* ---- the stack (there is no ts_ helper for it) ---- */

/* scripts/stack.sh of this repository, found from this file's own path. */
static void stack(const char *args) {
    const char *me = __FILE__;
    const char *tail = strstr(me, "tests/integration/");
    if (me[0] != '/' || !tail)
        fail_msg("cannot locate scripts/stack.sh from %s", me);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "STACK_DIR='%s' '%.*sscripts/stack.sh' %s >&2",
             ts_env("STACK_DIR"), (int)(tail - me), me, args);
    int rc = system(cmd);
    if (rc != 0)
        fail_msg("%s: exit status %d", cmd, rc);
}

/* ---- the payment event ---- */

/* Finds the order's payment event and checks the envelope and common fields. */
static json_t *payment_event(const char *order, const char *type, const char *customer,
                             const char *amount, const char *correlation) {
    ts_kafka_msg_t m;
    if (!ts_kafka_find(DETA_TOPIC_PAYMENT_EVENTS, order, WAIT_MS, &m))
        fail_msg("no payment event for %s", order);
    deta_event_t ev;
    char err[256];
    if (deta_event_parse(m.value, strlen(m.value), &ev, err, sizeof err) != DETA_OK)
        fail_msg("payment event does not validate: %s: %s", err, m.value);
    assert_string_equal(ev.event_type, type);
    assert_string_equal(ev.order_id, order);
    assert_string_equal(ev.producer, "payment-service");
    if (correlation)
        assert_string_equal(ev.correlation_id, correlation);
    json_t *p = json_incref(ev.payload);
    assert_string_equal(json_string_value(json_object_get(p, "orderId")), order);
    assert_true(deta_uuid_valid(json_string_value(json_object_get(p, "paymentId"))));
    assert_string_equal(json_string_value(json_object_get(p, "customerId")), customer);
    assert_string_equal(json_string_value(json_object_get(p, "amount")), amount);
    assert_string_equal(json_string_value(json_object_get(p, "currency")), "EUR");
    deta_event_clear(&ev);
    ts_kafka_msg_free(&m);
    return p;
}

/* ---- tests ---- */

static void authorized_payment_is_recorded_and_announced(void **state) {
    (void)state;
    char order[37], corr[37], eid[37];
    ts_uuid(order);
    ts_uuid(corr);
    double processed = metric("payment_processed_total");
    char *text = reserved_event(order, "cust-ok", "20.48", corr, eid);
    inject(order, text);
    free(text);

    json_t *p = payment_event(order, DETA_EVT_PAYMENT_AUTHORIZED, "cust-ok", "20.48", corr);
    assert_true(deta_timestamp_valid(json_string_value(json_object_get(p, "authorizedAt"))));
    assert_null(json_object_get(p, "reason"));
    char payment_id[37];
    snprintf(payment_id, sizeof payment_id, "%s",
             json_string_value(json_object_get(p, "paymentId")));
    json_decref(p);

    assert_int_equal(payments_of(order), 1);
    expect_column(order, "status", "AUTHORIZED");
    expect_column(order, "amount", "20.48");
    expect_column(order, "currency", "EUR");
    expect_column(order, "customer_id", "cust-ok");
    expect_column(order, "idempotency_key", eid);
    expect_column(order, "payment_id", payment_id);
    assert_true(metric("payment_processed_total") > processed);

    /* after the commit: the marker is set and the lock is gone */
    char key[96];
    marker_key(key, sizeof key, eid);
    await_key(key, true);
    lock_key(key, sizeof key, order);
    await_key(key, false);
    assert_int_equal(ts_kafka_count(DETA_TOPIC_PAYMENT_EVENTS, order, 10000), 1);
}

static void payment_reads_back_over_rest(void **state) {
    (void)state;
    char order[37], eid[37], path[128];
    ts_uuid(order);
    snprintf(path, sizeof path, "/api/payments/%s", order);
    ts_http_resp_t r;
    ts_http("GET", "PAYMENT_SERVICE_URL", path, NULL, NULL, &r);
    assert_int_equal(r.status, 404);
    assert_string_equal(json_string_value(json_object_get(r.json, "field")), "orderId");
    ts_http_resp_free(&r);

    inject_reserved(order, "decline-rest", "7.00", eid);
    await_payments(order, 1);
    ts_http("GET", "PAYMENT_SERVICE_URL", path, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "orderId")), order);
    assert_true(deta_uuid_valid(json_string_value(json_object_get(r.json, "paymentId"))));
    assert_string_equal(json_string_value(json_object_get(r.json, "customerId")), "decline-rest");
    assert_string_equal(json_string_value(json_object_get(r.json, "amount")), "7.00");
    assert_string_equal(json_string_value(json_object_get(r.json, "currency")), "EUR");
    assert_string_equal(json_string_value(json_object_get(r.json, "status")), "DECLINED");
    assert_string_equal(json_string_value(json_object_get(r.json, "reason")), "DECLINED_CUSTOMER");
    assert_string_equal(json_string_value(json_object_get(r.json, "idempotencyKey")), eid);
    assert_true(deta_timestamp_valid(json_string_value(json_object_get(r.json, "createdAt"))));
    ts_http_resp_free(&r);

    ts_http("GET", "PAYMENT_SERVICE_URL", "/api/payments/not-a-uuid", NULL, NULL, &r);
    assert_int_equal(r.status, 400);
    assert_string_equal(json_string_value(json_object_get(r.json, "field")), "orderId");
    ts_http_resp_free(&r);
}

static void expect_declined(const char *customer, const char *amount, const char *reason) {
    char order[37], eid[37];
    ts_uuid(order);
    inject_reserved(order, customer, amount, eid);
    json_t *p = payment_event(order, DETA_EVT_PAYMENT_FAILED, customer, amount, order);
    const char *got = json_string_value(json_object_get(p, "reason"));
    if (!got || strcmp(got, reason) != 0)
        fail_msg("%s %s: reason %s, expected %s", customer, amount, got ? got : "(none)", reason);
    assert_true(deta_timestamp_valid(json_string_value(json_object_get(p, "failedAt"))));
    assert_null(json_object_get(p, "authorizedAt"));
    json_decref(p);
    expect_column(order, "status", "DECLINED");
    expect_column(order, "reason", reason);
}

static void decline_rules_produce_payment_failed(void **state) {
    (void)state;
    double failed = metric("payment_failed_total");
    char customer[64], id[37];
    ts_uuid(id);
    snprintf(customer, sizeof customer, "decline-%.8s", id);
    expect_declined(customer, "5.00", "DECLINED_CUSTOMER");
    expect_declined("cust-big", "10000.01", "DECLINED_AMOUNT_LIMIT");
    assert_true(metric("payment_failed_total") >= failed + 2);

    /* the limit itself is still authorized */
    char order[37], eid[37];
    ts_uuid(order);
    inject_reserved(order, "cust-big", "10000.00", eid);
    json_decref(payment_event(order, DETA_EVT_PAYMENT_AUTHORIZED, "cust-big", "10000.00", NULL));
}

static void held_lock_defers_the_payment_until_released(void **state) {
    (void)state;
    char order[37], eid[37], key[96], foreign[37];
    ts_uuid(order);
    ts_uuid(foreign);
    lock_key(key, sizeof key, order);
    ts_redis_run("SET %s %s PX 60000", key, foreign);
    double timeouts = metric("payment_lock_timeout_total");
    inject_reserved(order, "cust-lock", "3.00", eid);

    /* the service tried, found the lock, and paid nothing */
    await_metric_above("payment_lock_timeout_total", timeouts);
    assert_int_equal(payments_of(order), 0);
    /* it retries, and still never removes a lock that is not its own */
    double first = metric("payment_lock_timeout_total");
    await_metric_above("payment_lock_timeout_total", first);
    assert_int_equal(payments_of(order), 0);
    char *held = ts_redis_get(key);
    assert_non_null(held);
    assert_string_equal(held, foreign);
    free(held);

    ts_redis_run("DEL %s", key, NULL);
    await_payments(order, 1);
    json_decref(payment_event(order, DETA_EVT_PAYMENT_AUTHORIZED, "cust-lock", "3.00", NULL));
    await_key(key, false); /* its own lock, released after the commit */
    assert_int_equal(ts_kafka_count(DETA_TOPIC_PAYMENT_EVENTS, order, 10000), 1);
}

/* The order's claim in payment_claims, as another instance would hold it:
 * expiring `seconds` from now (negative: expired, as a crashed holder leaves it). */
static void claim_as_another(PGconn *db, const char *order, int seconds) {
    char holder[37], secs[16];
    ts_uuid(holder);
    snprintf(secs, sizeof secs, "%d", seconds);
    const char *params[] = {order, holder, secs};
    assert_int_equal(ts_pg_long(db,
                                "WITH c AS (INSERT INTO payment_claims (order_id, holder,"
                                " expires_at) VALUES ($1, $2, now() + $3::int * interval"
                                " '1 second') RETURNING 1) SELECT count(*) FROM c",
                                3, params),
                     1);
}

static long claims_of(PGconn *db, const char *order) {
    const char *params[] = {order};
    return ts_pg_long(db, "SELECT count(*) FROM payment_claims WHERE order_id = $1", 1, params);
}

/* Another instance that cannot reach Redis holds the order's claim in Postgres
 * (its only lock then) while this one reaches Redis: this one must not call the
 * gateway until that claim ends, Redis lock or not. */
static void postgres_claim_defers_the_payment_with_redis_up(void **state) {
    (void)state;
    char order[37], eid[37], key[96];
    ts_uuid(order);
    lock_key(key, sizeof key, order);
    PGconn *other = ts_pg("delivery_eta");
    claim_as_another(other, order, 600);
    double timeouts = metric("payment_lock_timeout_total");
    inject_reserved(order, "cust-pglock", "4.00", eid);

    await_metric_above("payment_lock_timeout_total", timeouts);
    double first = metric("payment_lock_timeout_total");
    await_metric_above("payment_lock_timeout_total", first);
    assert_int_equal(payments_of(order), 0);
    await_key(key, false); /* it gave its Redis lock back while waiting */
    assert_int_equal(claims_of(other, order), 1); /* and left the other's claim alone */

    const char *params[] = {order};
    assert_int_equal(ts_pg_long(other,
                                "WITH d AS (DELETE FROM payment_claims WHERE order_id = $1"
                                " RETURNING 1) SELECT count(*) FROM d",
                                1, params),
                     1);
    await_payments(order, 1);
    json_decref(payment_event(order, DETA_EVT_PAYMENT_AUTHORIZED, "cust-pglock", "4.00", NULL));
    assert_int_equal(ts_kafka_count(DETA_TOPIC_PAYMENT_EVENTS, order, 10000), 1);
    assert_int_equal(claims_of(other, order), 0); /* its own claim ended with the record */
    PQfinish(other);
}

/* A claim whose holder crashed expires and is taken over: the order is paid once. */
static void expired_claim_is_taken_over(void **state) {
    (void)state;
    char order[37], eid[37];
    ts_uuid(order);
    PGconn *other = ts_pg("delivery_eta");
    claim_as_another(other, order, -1);
    double timeouts = metric("payment_lock_timeout_total");
    inject_reserved(order, "cust-expired", "5.00", eid);
    await_payments(order, 1);
    json_decref(payment_event(order, DETA_EVT_PAYMENT_AUTHORIZED, "cust-expired", "5.00", NULL));
    assert_true(metric("payment_lock_timeout_total") == timeouts);
    assert_int_equal(claims_of(other, order), 0);
    PQfinish(other);
}

/* With a slow gateway the calls wait side by side, more of them than the
 * Postgres connections the workers share: a waiting call holds no connection. */
static void slow_gateway_calls_wait_side_by_side_on_few_connections(void **state) {
    (void)state;
    enum { ORDERS = 10, CONNECTIONS = 2 };
    stack("stop payment-service");
    setenv("PAYMENT_GATEWAY_LATENCY_MS", "2000", 1);
    setenv("PAYMENT_WORKERS", "40", 1);
    setenv("PAYMENT_DB_CONNECTIONS", "2", 1);
    stack("start payment-service");
    await_health(200, "UP", "UP");

    double calls = metric("payment_gateway_calls_total");
    char orders[ORDERS][37], eid[37];
    for (int i = 0; i < ORDERS; i++) {
        ts_uuid(orders[i]);
        inject_reserved(orders[i], "cust-slow", "6.00", eid);
    }
    double most = 0;
    for (int waited = 0; waited < WAIT_MS && most <= CONNECTIONS; waited += 50) {
        double now = metric("payment_gateway_calls_in_flight");
        most = now > most ? now : most;
        ts_sleep_ms(50);
    }
    if (most <= CONNECTIONS)
        fail_msg("at most %g gateway calls were in flight at once", most);
    for (int i = 0; i < ORDERS; i++)
        await_payments(orders[i], 1);
    double opened = metric("payment_db_connections");
    if (opened < 1 || opened > CONNECTIONS)
        fail_msg("the workers opened %g shared connections, at most %d allowed", opened,
                 CONNECTIONS);
    assert_true(metric("payment_gateway_calls_in_flight") == 0);
    assert_true(metric("payment_gateway_calls_total") == calls + ORDERS); /* once each */
}

/* ---- attempts resumed, holds expired, housekeeping ---- */

/* An attempt left by an instance that crashed before its charge: the order's
 * attempt row exists, the gateway's ledger has nothing under the order. */
static void begin_attempt_as_a_crashed_instance(const char *order, const char *payment_id,
                                                const char *minutes_ago) {
    char event_id[37];
    ts_uuid(event_id);
    PGconn *db = ts_pg("delivery_eta");
    const char *params[] = {order, payment_id, event_id, minutes_ago};
    assert_int_equal(ts_pg_long(db,
                                "WITH a AS (INSERT INTO payment_attempts (order_id, payment_id,"
                                " event_id, started_at) VALUES ($1, $2, $3,"
                                " now() - $4::int * interval '1 minute') RETURNING 1)"
                                " SELECT count(*) FROM a",
                                4, params),
                     1);
    PQfinish(db);
}

/* The resumed attempt looks the charge up, finds none, charges once and records
 * the payment under the attempt's own id. */
static void attempt_without_a_charge_is_charged_once(void **state) {
    (void)state;
    char order[37], pid[37], eid[37];
    ts_uuid(order);
    ts_uuid(pid);
    begin_attempt_as_a_crashed_instance(order, pid, "0");
    double calls = metric("payment_gateway_calls_total");
    double lookups = metric("payment_gateway_lookups_total");
    inject_reserved(order, "cust-resume", "8.00", eid);
    await_payments(order, 1);
    json_decref(payment_event(order, DETA_EVT_PAYMENT_AUTHORIZED, "cust-resume", "8.00", NULL));
    expect_column(order, "payment_id", pid);
    assert_int_equal(ts_ledger_charges(order), 1);
    assert_true(metric("payment_gateway_calls_total") == calls + 1);
    assert_true(metric("payment_gateway_lookups_total") == lookups + 1);
}

/* The resumed attempt finds the charge in the gateway's ledger and records the
 * gateway's answer, not its own rule's (which would authorize this customer),
 * without a second charge. */
static void attempt_with_a_charge_records_the_gateways_answer(void **state) {
    (void)state;
    char order[37], pid[37], eid[37], line[160];
    ts_uuid(order);
    ts_uuid(pid);
    begin_attempt_as_a_crashed_instance(order, pid, "0");
    snprintf(line, sizeof line, "charge %s DECLINED DECLINED_RANDOM crashed-instance\n", order);
    ts_ledger_append(line);
    double calls = metric("payment_gateway_calls_total");
    inject_reserved(order, "cust-charged", "9.00", eid);
    await_payments(order, 1);
    json_t *p = payment_event(order, DETA_EVT_PAYMENT_FAILED, "cust-charged", "9.00", NULL);
    assert_string_equal(json_string_value(json_object_get(p, "reason")), "DECLINED_RANDOM");
    assert_string_equal(json_string_value(json_object_get(p, "paymentId")), pid);
    json_decref(p);
    assert_int_equal(ts_ledger_charges(order), 1);
    assert_true(metric("payment_gateway_calls_total") == calls);
}

/* A reservation whose hold expired is declined without a call to the gateway. */
static void expired_hold_is_declined_uncharged(void **state) {
    (void)state;
    char order[37], eid[37];
    ts_uuid(order);
    json_t *payload = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "orderId", order, "customerId",
                                "cust-late", "totalAmount", "3.00", "currency", "EUR",
                                "reservedAt", "2026-11-25T12:00:00.000Z", "holdExpiresAt",
                                "2026-11-25T12:15:00.000Z");
    char *text = ts_event(DETA_EVT_INVENTORY_RESERVED, order, NULL, payload, eid);
    double calls = metric("payment_gateway_calls_total");
    inject(order, text);
    free(text);
    await_payments(order, 1);
    json_t *p = payment_event(order, DETA_EVT_PAYMENT_FAILED, "cust-late", "3.00", NULL);
    assert_string_equal(json_string_value(json_object_get(p, "reason")),
                        "DECLINED_HOLD_EXPIRED");
    json_decref(p);
    expect_column(order, "status", "DECLINED");
    assert_int_equal(ts_ledger_charges(order), 0);
    assert_true(metric("payment_gateway_calls_total") == calls);
}

/* Expired claims are deleted, and attempts left without an outcome counted, by
 * the housekeeping that the first event after a start runs. */
static void housekeeping_purges_claims_and_counts_stale_attempts(void **state) {
    (void)state;
    char expired[37], live[37], stale[37], stale_pid[37], order[37], eid[37];
    ts_uuid(expired);
    ts_uuid(live);
    ts_uuid(stale);
    ts_uuid(stale_pid);
    PGconn *db = ts_pg("delivery_eta");
    claim_as_another(db, expired, -3600);
    claim_as_another(db, live, 600);
    begin_attempt_as_a_crashed_instance(stale, stale_pid, "10");
    stack("stop payment-service");
    stack("start payment-service");
    ts_uuid(order);
    inject_reserved(order, "cust-housekeeping", "1.00", eid);
    await_payments(order, 1);
    assert_int_equal(claims_of(db, expired), 0);
    assert_int_equal(claims_of(db, live), 1); /* alive: left alone */
    if (metric("payment_claims_purged_total") < 1)
        fail_msg("no claim was purged");
    if (metric("payment_attempts_stale") < 1)
        fail_msg("the stale attempt was not counted");
    const char *params[] = {stale, live};
    ts_pg_long(db,
               "WITH a AS (DELETE FROM payment_attempts WHERE order_id = $1),"
               " c AS (DELETE FROM payment_claims WHERE order_id = $2) SELECT 0",
               2, params);
    PQfinish(db);
}

/* The service runs again with the stack's own settings. */
static int default_settings_back(void **state) {
    (void)state;
    unsetenv("PAYMENT_GATEWAY_LATENCY_MS");
    unsetenv("PAYMENT_WORKERS");
    unsetenv("PAYMENT_DB_CONNECTIONS");
    stack("stop payment-service");
    stack("start payment-service");
    await_health(200, "UP", "UP");
    return 0;
}

static void marker_stops_a_processed_event(void **state) {
    (void)state;
    char order[37], eid[37], key[96];
    ts_uuid(order);
    char *text = reserved_event(order, "cust-marker", "4.00", NULL, eid);
    marker_key(key, sizeof key, eid);
    ts_redis_run("SET %s %s PX 600000", key, order);
    double hits = metric("payment_dedup_redis_hit_total");
    double dups = metric("payment_duplicate_total");
    inject(order, text);
    free(text);

    await_metric_above("payment_dedup_redis_hit_total", hits);
    assert_true(metric("payment_duplicate_total") > dups);
    assert_int_equal(payments_of(order), 0);
    assert_int_equal(ts_kafka_count(DETA_TOPIC_PAYMENT_EVENTS, order, 5000), 0);
    ts_redis_run("DEL %s", key, NULL);
}

static void unique_key_catches_what_redis_forgot(void **state) {
    (void)state;
    char order[37], eid[37], key[96];
    ts_uuid(order);
    char *text = reserved_event(order, "cust-unique", "6.00", NULL, eid);
    inject(order, text);
    await_payments(order, 1);
    marker_key(key, sizeof key, eid);
    await_key(key, true);

    /* Redis forgets (eviction, restart without persistence): the same event again */
    ts_redis_run("DEL %s", key, NULL);
    double hits = metric("payment_dedup_db_hit_total");
    inject(order, text);
    await_metric_above("payment_dedup_db_hit_total", hits);
    await_key(key, true); /* the marker is written again for later duplicates */

    /* a second reservation event for the same order is no second charge either */
    char eid2[37];
    hits = metric("payment_dedup_db_hit_total");
    inject_reserved(order, "cust-unique", "6.00", eid2);
    await_metric_above("payment_dedup_db_hit_total", hits);

    assert_int_equal(payments_of(order), 1);
    expect_column(order, "idempotency_key", eid);
    json_decref(payment_event(order, DETA_EVT_PAYMENT_AUTHORIZED, "cust-unique", "6.00", NULL));
    assert_int_equal(ts_kafka_count(DETA_TOPIC_PAYMENT_EVENTS, order, 10000), 1);
    free(text);
}

#define DEAD_LETTERS \
    "deta_consumer_messages_total{topic=\"raw.inventory-events\",outcome=\"dead_lettered\"}"

static void bad_events_are_dead_lettered_and_others_ignored(void **state) {
    (void)state;
    char order[37], eid[37];
    ts_uuid(order);
    /* a customerId that is no string cannot be charged: dead letter. The rest of the
     * payload is complete, so any consumer that refuses it names customerId. */
    json_t *payload = json_pack("{s:s, s:s, s:i, s:s, s:s, s:[], s:s}", "orderId", order,
                                "reservationId", "res-bad", "customerId", 42, "totalAmount",
                                "1.00", "currency", "EUR", "items", "reservedAt",
                                "2026-11-25T12:00:00.000Z");
    char *bad = ts_event(DETA_EVT_INVENTORY_RESERVED, order, NULL, payload, eid);
    double dead = metric(DEAD_LETTERS);
    inject(order, bad);
    free(bad);
    await_metric_above(DEAD_LETTERS, dead);
    ts_kafka_msg_t m;
    if (!ts_kafka_find_where(DETA_TOPIC_DLQ_INVENTORY_EVENTS, order, "x-consumer-group",
                             "payment-service", WAIT_MS, &m))
        fail_msg("the malformed event was not dead-lettered");
    const char *why = ts_kafka_header(&m, "x-error");
    assert_non_null(why);
    assert_non_null(strstr(why, "customerId"));
    ts_kafka_msg_free(&m);
    assert_int_equal(payments_of(order), 0);

    /* inventory.rejected is not for payment: skipped, not dead-lettered. The
     * reservation after it, same order and partition, shows it was passed. */
    char other[37];
    ts_uuid(other);
    json_t *rejected = json_pack("{s:s, s:s, s:s, s:s, s:i, s:i, s:s}", "orderId", other,
                                 "customerId", "cust-r", "reason", "INSUFFICIENT_STOCK", "itemId",
                                 "sku-1", "requested", 5, "available", 1, "rejectedAt",
                                 "2026-11-25T12:00:00.000Z");
    char *text = ts_event(DETA_EVT_INVENTORY_REJECTED, other, NULL, rejected, NULL);
    inject(other, text);
    free(text);
    inject_reserved(other, "cust-r", "2.00", eid);
    await_payments(other, 1);
    assert_int_equal(ts_kafka_count_where(DETA_TOPIC_DLQ_INVENTORY_EVENTS, other, "x-consumer-group",
                                          "payment-service", 5000),
                     0);
}

static void without_redis_payments_stay_exactly_once(void **state) {
    (void)state;
    await_health(200, "UP", "UP");
    assert_true(metric("payment_redis_degraded") == 0);
    stack("stop redis");
    await_health(200, "DEGRADED", "DOWN");
    assert_true(metric("payment_redis_degraded") == 1);

    char order[37], eid[37];
    ts_uuid(order);
    char *text = reserved_event(order, "cust-noredis", "8.00", NULL, eid);
    double hits = metric("payment_dedup_db_hit_total");
    for (int i = 0; i < 3; i++)
        inject(order, text); /* duplicate delivery */
    free(text);
    await_payments(order, 1);
    for (int waited = 0; waited < WAIT_MS && metric("payment_dedup_db_hit_total") < hits + 2;
         waited += 200)
        ts_sleep_ms(200);
    assert_true(metric("payment_dedup_db_hit_total") >= hits + 2);
    assert_int_equal(payments_of(order), 1);
    json_decref(payment_event(order, DETA_EVT_PAYMENT_AUTHORIZED, "cust-noredis", "8.00", NULL));
    assert_int_equal(ts_kafka_count(DETA_TOPIC_PAYMENT_EVENTS, order, 10000), 1);

    stack("start redis");
    await_health(200, "UP", "UP");
    assert_true(metric("payment_redis_degraded") == 0);
    /* the Redis layers are in use again: a new payment leaves its marker */
    char again[37], eid2[37], key[96];
    ts_uuid(again);
    inject_reserved(again, "cust-noredis", "9.00", eid2);
    await_payments(again, 1);
    marker_key(key, sizeof key, eid2);
    await_key(key, true);
}

/* Whatever happened, Redis runs again for the tests that follow. */
static int redis_back_up(void **state) {
    (void)state;
    stack("start redis");
    return 0;
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(authorized_payment_is_recorded_and_announced),
        cmocka_unit_test(payment_reads_back_over_rest),
        cmocka_unit_test(decline_rules_produce_payment_failed),
        cmocka_unit_test(held_lock_defers_the_payment_until_released),
        cmocka_unit_test(postgres_claim_defers_the_payment_with_redis_up),
        cmocka_unit_test(expired_claim_is_taken_over),
        cmocka_unit_test_teardown(slow_gateway_calls_wait_side_by_side_on_few_connections,
                                  default_settings_back),
        cmocka_unit_test(attempt_without_a_charge_is_charged_once),
        cmocka_unit_test(attempt_with_a_charge_records_the_gateways_answer),
        cmocka_unit_test(expired_hold_is_declined_uncharged),
        cmocka_unit_test(housekeeping_purges_claims_and_counts_stale_attempts),
        cmocka_unit_test(marker_stops_a_processed_event),
        cmocka_unit_test(unique_key_catches_what_redis_forgot),
        cmocka_unit_test(bad_events_are_dead_lettered_and_others_ignored),
        cmocka_unit_test_teardown(without_redis_payments_stay_exactly_once, redis_back_up),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
