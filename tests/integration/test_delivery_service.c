/*
 * test_delivery_service.c - delivery-service against the real test stack.
 *
 * The tests inject payment events themselves (fresh order ids, ts_event) and read
 * what comes out on raw.delivery-events, raw.eta-events, dlq.payment-events,
 * delivery_db and the REST API. They need the stack's delivery clock sped up
 * (scripts/test.sh exports DELIVERY_CLOCK_SPEED=600 for the services and the
 * tests alike), so that a delivery completes in a few real seconds; they poll
 * with generous timeouts and never assume timing.
 *
 * The order of an order's events matters here, so the tests read them with
 * ts_kafka_collect: every message of a key in partition order (one key lives on
 * one partition). Whether
 * an ignored event was consumed at all is read from the consumer group's
 * committed offset.
 */
#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "deta/envelope.h"
#include "deta/states.h"
#include "deta/topics.h"
#include "testsupport.h"

#define WAIT_MS 60000
#define MAX_MSGS 32
#define BURST 30
#define GROUP "delivery-service"

/* ---- reading Kafka ---- */

static long long mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static rd_kafka_t *kafka_client(const char *group) {
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", ts_env("KAFKA_BOOTSTRAP_SERVERS"), err,
                          sizeof err) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "group.id", group, err, sizeof err) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof err) !=
            RD_KAFKA_CONF_OK)
        fail_msg("kafka conf: %s", err);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    if (!rk)
        fail_msg("kafka consumer: %s", err);
    return rk;
}

static void free_messages(ts_kafka_msg_t *m, int n) {
    for (int i = 0; i < n; i++)
        ts_kafka_msg_free(&m[i]);
}

/* The offset delivery-service's group committed on a partition (-1 for none). */
static int64_t committed_offset(const char *topic, int32_t partition) {
    rd_kafka_t *rk = kafka_client(GROUP); /* never subscribes: only asks */
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(list, topic, partition);
    int64_t offset = -1;
    if (rd_kafka_committed(rk, list, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR && !list->elems[0].err)
        offset = list->elems[0].offset;
    rd_kafka_topic_partition_list_destroy(list);
    rd_kafka_destroy(rk);
    return offset;
}

/* Waits until the service's group has committed past the first message of key on
 * topic: the service has consumed it, whatever it did with it. */
static void await_consumed(const char *topic, const char *key) {
    ts_kafka_msg_t m;
    assert_true(ts_kafka_find(topic, key, WAIT_MS, &m));
    long long deadline = mono_ms() + WAIT_MS;
    int64_t committed = -1;
    while ((committed = committed_offset(topic, m.partition)) <= m.offset && mono_ms() < deadline)
        ts_sleep_ms(250);
    if (committed <= m.offset)
        fail_msg("%s was not consumed: committed %lld, message at %lld", key,
                 (long long)committed, (long long)m.offset);
    ts_kafka_msg_free(&m);
}

/* ---- events in ---- */

static json_t *authorized_payload(const char *order_id) {
    char payment_id[37];
    ts_uuid(payment_id);
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "orderId", order_id, "paymentId",
                     payment_id, "customerId", "cust-delivery", "amount", "42.10", "currency",
                     "USD", "authorizedAt", "2026-11-25T12:00:00.000Z");
}

/* Produces payment.authorized for a fresh order into id (37 bytes); returns the
 * serialized event (malloc'd) so that it can be produced again. */
static char *inject_authorized(char *order_id, char *correlation_id, char *event_id) {
    ts_uuid(order_id);
    ts_uuid(correlation_id);
    char *text = ts_event(DETA_EVT_PAYMENT_AUTHORIZED, order_id, correlation_id,
                          authorized_payload(order_id), event_id);
    ts_kafka_produce(DETA_TOPIC_PAYMENT_EVENTS, order_id, text);
    return text;
}

static long clock_speed(void) {
    const char *v = getenv("DELIVERY_CLOCK_SPEED");
    long speed = v ? atol(v) : 0;
    if (speed < 60)
        fail_msg("these tests need the stack's delivery clock sped up: export "
                 "DELIVERY_CLOCK_SPEED (600 in scripts/test.sh) before starting the stack");
    return speed;
}

/* ---- reading what came out ---- */

static long long instant_ms(const char *s) {
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    int ms = 0;
    if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                     &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms) != 7)
        fail_msg("not an instant with milliseconds: %s", s ? s : "(null)");
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (long long)timegm(&tm) * 1000 + ms;
}

static const char *field(const json_t *o, const char *key) {
    const char *s = json_string_value(json_object_get(o, key));
    if (!s)
        fail_msg("no string field %s", key);
    return s;
}

static long long field_ms(const json_t *o, const char *key) { return instant_ms(field(o, key)); }

static long sql_long(const char *sql, const char *order_id) {
    PGconn *db = ts_pg("delivery_db");
    const char *params[] = {order_id};
    long v = ts_pg_long(db, sql, order_id ? 1 : 0, order_id ? params : NULL);
    PQfinish(db);
    return v;
}

/* Polls until the query (one parameter: the order id) returns want. */
static void await_long(const char *sql, const char *order_id, long want) {
    long long deadline = mono_ms() + WAIT_MS;
    long v = sql_long(sql, order_id);
    while (v != want && mono_ms() < deadline) {
        ts_sleep_ms(200);
        v = sql_long(sql, order_id);
    }
    if (v != want)
        fail_msg("%s for %s: %ld, expected %ld", sql, order_id, v, want);
}

static const char COUNT_DELIVERIES[] = "SELECT count(*) FROM deliveries WHERE order_id = $1";

/* The six events of a completed delivery, parsed, in the order they happened:
 * each stage's event (raw.delivery-events) followed by its eta.updated
 * (raw.eta-events); msg[i] is ev[i]'s message. */
typedef struct journey {
    ts_kafka_msg_t stages[MAX_MSGS], etas[MAX_MSGS];
    int nstages, netas;
    const ts_kafka_msg_t *msg[6];
    deta_event_t ev[6];
} journey_t;

static void read_journey(const char *order_id, journey_t *j) {
    memset(j, 0, sizeof *j);
    j->nstages = ts_kafka_collect(DETA_TOPIC_DELIVERY_EVENTS, order_id, 3, WAIT_MS, j->stages,
                                  MAX_MSGS);
    j->netas = ts_kafka_collect(DETA_TOPIC_ETA_EVENTS, order_id, 3, WAIT_MS, j->etas, MAX_MSGS);
    if (j->nstages != 3 || j->netas != 3)
        fail_msg("order %s: %d events on %s and %d on %s, expected 3 and 3", order_id,
                 j->nstages, DETA_TOPIC_DELIVERY_EVENTS, j->netas, DETA_TOPIC_ETA_EVENTS);
    for (int i = 0; i < 6; i++) {
        char why[256];
        j->msg[i] = i % 2 ? &j->etas[i / 2] : &j->stages[i / 2];
        if (deta_event_parse(j->msg[i]->value, strlen(j->msg[i]->value), &j->ev[i], why,
                             sizeof why) != DETA_OK)
            fail_msg("event %d does not validate: %s: %s", i, why, j->msg[i]->value);
    }
}

static void free_journey(journey_t *j) {
    for (int i = 0; i < 6 && j->msg[i]; i++)
        deta_event_clear(&j->ev[i]);
    free_messages(j->stages, j->nstages);
    free_messages(j->etas, j->netas);
}

/* ---- tests ---- */

static void delivery_goes_from_assigned_to_delivered_with_etas(void **state) {
    (void)state;
    long speed = clock_speed();
    char order[37], corr[37], event_id[37];
    free(inject_authorized(order, corr, event_id));

    journey_t j;
    read_journey(order, &j);
    const char *types[] = {DETA_EVT_DELIVERY_ASSIGNED, DETA_EVT_ETA_UPDATED,
                           DETA_EVT_DELIVERY_PICKED_UP, DETA_EVT_ETA_UPDATED,
                           DETA_EVT_DELIVERY_DELIVERED, DETA_EVT_ETA_UPDATED};
    const char *stages[] = {NULL, "ASSIGNED", NULL, "PICKED_UP", NULL, "DELIVERED"};
    const char *delivery_id = field(j.ev[0].payload, "deliveryId");
    for (int i = 0; i < 6; i++) {
        const deta_event_t *e = &j.ev[i];
        assert_string_equal(e->event_type, types[i]);
        assert_string_equal(e->order_id, order);
        assert_string_equal(e->correlation_id, corr);
        assert_string_equal(e->producer, "delivery-service");
        assert_string_equal(j.msg[i]->key, order);
        assert_string_equal(field(e->payload, "orderId"), order);
        assert_string_equal(field(e->payload, "deliveryId"), delivery_id);
        if (stages[i])
            assert_string_equal(field(e->payload, "stage"), stages[i]);
    }
    const json_t *assigned = j.ev[0].payload, *picked = j.ev[2].payload,
                 *delivered = j.ev[4].payload;
    const char *driver = field(assigned, "driverId");
    assert_string_equal(field(picked, "driverId"), driver);
    assert_string_equal(field(delivered, "driverId"), driver);

    long long t_assigned = field_ms(assigned, "assignedAt");
    long long t_picked = field_ms(picked, "pickedUpAt");
    long long t_delivered = field_ms(delivered, "deliveredAt");
    long long eta_first = field_ms(assigned, "estimatedDeliveryAt");
    long long eta_pickup = field_ms(picked, "estimatedDeliveryAt");
    /* stages in order, each no earlier than it was due on the simulated clock */
    assert_true(t_picked >= t_assigned + 600000 / speed - 1);
    assert_true(eta_first > t_assigned);
    assert_true(eta_pickup >= t_picked);
    assert_true(t_delivered >= eta_pickup);
    /* each eta.updated repeats its stage's ETA, calculated at the stage's instant */
    assert_int_equal(field_ms(j.ev[1].payload, "estimatedDeliveryAt"), eta_first);
    assert_int_equal(field_ms(j.ev[1].payload, "calculatedAt"), t_assigned);
    assert_int_equal(field_ms(j.ev[3].payload, "estimatedDeliveryAt"), eta_pickup);
    assert_int_equal(field_ms(j.ev[3].payload, "calculatedAt"), t_picked);
    assert_int_equal(field_ms(j.ev[5].payload, "estimatedDeliveryAt"), t_delivered);
    assert_int_equal(field_ms(j.ev[5].payload, "calculatedAt"), t_delivered);

    /* the database and the REST API tell the same story */
    char path[128];
    snprintf(path, sizeof path, "/api/deliveries/%s", order);
    ts_http_resp_t r;
    ts_http("GET", "DELIVERY_SERVICE_URL", path, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(field(r.json, "status"), "DELIVERED");
    assert_string_equal(field(r.json, "deliveryId"), delivery_id);
    assert_string_equal(field(r.json, "driverId"), driver);
    assert_string_equal(field(r.json, "driverName"), field(assigned, "driverName"));
    assert_int_equal(field_ms(r.json, "assignedAt"), t_assigned);
    assert_int_equal(field_ms(r.json, "pickedUpAt"), t_picked);
    assert_int_equal(field_ms(r.json, "deliveredAt"), t_delivered);
    assert_int_equal(field_ms(r.json, "estimatedDeliveryAt"), t_delivered);
    double km = json_number_value(json_object_get(r.json, "distanceKm"));
    assert_true(km >= 1.0 && km <= 15.0);
    ts_http_resp_free(&r);
    assert_int_equal(sql_long("SELECT count(*) FROM deliveries WHERE order_id = $1 AND status = "
                              "'DELIVERED' AND next_transition_at IS NULL AND "
                              "delivered_at = estimated_delivery_at",
                              order),
                     1);
    free_journey(&j);
}

static void duplicate_deliveries_make_one_delivery(void **state) {
    (void)state;
    clock_speed();
    double dup = ts_events("DELIVERY_SERVICE_URL", DETA_EVT_PAYMENT_AUTHORIZED, "duplicate");
    char order[37], corr[37], event_id[37];
    char *text = inject_authorized(order, corr, event_id);
    for (int i = 0; i < 4; i++)
        ts_kafka_produce(DETA_TOPIC_PAYMENT_EVENTS, order, text);
    /* and a second payment.authorized for the order, with an event id of its own */
    char second_id[37];
    char *second = ts_event(DETA_EVT_PAYMENT_AUTHORIZED, order, corr, authorized_payload(order),
                            second_id);
    ts_kafka_produce(DETA_TOPIC_PAYMENT_EVENTS, order, second);

    journey_t j;
    read_journey(order, &j);
    free_journey(&j);
    /* No claims (the consumer's README): the four copies of the first event and
     * the second event find the order known here, each a duplicate that changes
     * nothing. The count is the service's (a lower bound: another order's
     * duplicate counts too); the order's own rows and events below decide. */
    ts_events_await("DELIVERY_SERVICE_URL", DETA_EVT_PAYMENT_AUTHORIZED, "duplicate", dup, 5,
                    WAIT_MS);
    assert_int_equal(sql_long("SELECT count(*) FROM processed_events WHERE event_id = $1::uuid",
                              event_id),
                     0);

    assert_int_equal(sql_long(COUNT_DELIVERIES, order), 1);
    PGconn *relayed = ts_pg("delivery_db");
    assert_true(ts_outbox_relayed(relayed, 30000));
    PQfinish(relayed);
    assert_int_equal(sql_long("SELECT count(*) FROM outbox WHERE msg_key = $1", order), 6);
    assert_int_equal(ts_kafka_count(DETA_TOPIC_DELIVERY_EVENTS, order, 30000), 3);
    assert_int_equal(ts_kafka_count(DETA_TOPIC_ETA_EVENTS, order, 30000), 3);
    free(text);
    free(second);
}

static void payment_failed_delivers_nothing(void **state) {
    (void)state;
    char order[37], payment_id[37];
    ts_uuid(order);
    ts_uuid(payment_id);
    json_t *payload = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "orderId", order,
                                "paymentId", payment_id, "customerId", "decline-me", "amount",
                                "12.00", "currency", "USD", "reason", "DECLINED_CUSTOMER",
                                "failedAt", "2026-11-25T12:00:00.000Z");
    char *text = ts_event(DETA_EVT_PAYMENT_FAILED, order, NULL, payload, NULL);
    ts_kafka_produce(DETA_TOPIC_PAYMENT_EVENTS, order, text);
    free(text);

    await_consumed(DETA_TOPIC_PAYMENT_EVENTS, order);
    assert_int_equal(sql_long(COUNT_DELIVERIES, order), 0);
    assert_int_equal(sql_long("SELECT count(*) FROM outbox WHERE msg_key = $1", order), 0);
    assert_int_equal(ts_kafka_count(DETA_TOPIC_DELIVERY_EVENTS, order, 10000), 0);
    assert_int_equal(ts_kafka_count(DETA_TOPIC_ETA_EVENTS, order, 10000), 0);
}

/* A dead letter of ours for key on dlq.payment-events whose x-error mentions
 * phrase (other consumers of raw.payment-events may dead-letter it too). */
static void expect_dead_letter(const char *key, const char *original, const char *phrase) {
    ts_kafka_msg_t m[8];
    long long deadline = mono_ms() + WAIT_MS;
    const ts_kafka_msg_t *ours = NULL;
    int n = 0;
    while (!ours && mono_ms() < deadline) {
        free_messages(m, n);
        n = ts_kafka_collect(DETA_TOPIC_DLQ_PAYMENT_EVENTS, key, 8, 3000, m, 8);
        for (int i = 0; i < n && !ours; i++) {
            const char *e = ts_kafka_header(&m[i], "x-error");
            if (e && strstr(e, phrase))
                ours = &m[i];
        }
    }
    if (!ours)
        fail_msg("no dead letter for %s mentioning \"%s\" (%d on the topic)", key, phrase, n);
    assert_string_equal(ours->value, original);
    assert_string_equal(ts_kafka_header(ours, "x-original-topic"), DETA_TOPIC_PAYMENT_EVENTS);
    assert_string_equal(ts_kafka_header(ours, "x-retry-count"), "0"); /* invalid: no retries */
    free_messages(m, n);
}

static void malformed_payment_authorized_is_dead_lettered(void **state) {
    (void)state;
    clock_speed();
    const struct {
        const char *drop;    /* a payload field to remove, or NULL */
        bool other_order;    /* payload.orderId differs from the envelope's */
        const char *phrase;  /* what x-error must say */
    } cases[] = {
        {"paymentId", false, "payload.paymentId is required"},
        {"authorizedAt", false, "payload.authorizedAt is required"},
        {NULL, true, "differs from the envelope"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char order[37], other[37];
        ts_uuid(order);
        ts_uuid(other);
        json_t *payload = authorized_payload(cases[i].other_order ? other : order);
        if (cases[i].drop)
            json_object_del(payload, cases[i].drop);
        char *bad = ts_event(DETA_EVT_PAYMENT_AUTHORIZED, order, NULL, payload, NULL);
        ts_kafka_produce(DETA_TOPIC_PAYMENT_EVENTS, order, bad);
        /* the next event of the same order, a valid one, is processed */
        char *good = ts_event(DETA_EVT_PAYMENT_AUTHORIZED, order, NULL, authorized_payload(order),
                              NULL);
        ts_kafka_produce(DETA_TOPIC_PAYMENT_EVENTS, order, good);

        expect_dead_letter(order, bad, cases[i].phrase);
        await_long(COUNT_DELIVERIES, order, 1);
        assert_int_equal(sql_long(COUNT_DELIVERIES, other), 0);
        free(bad);
        free(good);
    }
}

static long driver_capacity(void) {
    ts_http_resp_t r;
    ts_http("GET", "DELIVERY_SERVICE_URL", "/api/drivers", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    long cap = (long)json_integer_value(json_object_get(r.json, "capacity"));
    ts_http_resp_free(&r);
    assert_true(cap >= 1);
    return cap;
}

/* Snapshot checks, true at every instant: no driver above capacity, and every
 * driver's count equal to its deliveries not yet delivered. */
static void assert_driver_counts_consistent(PGconn *db, long cap) {
    char capacity[24];
    snprintf(capacity, sizeof capacity, "%ld", cap);
    const char *params[] = {capacity};
    assert_int_equal(ts_pg_long(db,
                                "SELECT count(*) FROM drivers WHERE active_deliveries > $1::int",
                                1, params),
                     0);
    assert_int_equal(ts_pg_long(db,
                                "SELECT count(*) FROM drivers r WHERE active_deliveries <> "
                                "(SELECT count(*) FROM deliveries d WHERE d.driver_id = "
                                "r.driver_id AND d.status IN ('ASSIGNED', 'PICKED_UP'))",
                                0, NULL),
                     0);
}

/* For each delivery of the burst, the load of every available driver at the
 * instant it was assigned, rebuilt from all deliveries (a cancelled one was
 * active until its cancel). The chosen driver must
 * have been below capacity and among the least busy (one of slack for a delivery
 * that completed in the same few milliseconds as the assignment read the rows). */
static const char LOAD_SQL[] =
    "WITH mine AS (SELECT delivery_id, driver_id, assigned_at FROM deliveries"
    "              WHERE order_id = ANY($1::uuid[])),"
    " load AS (SELECT m.delivery_id, r.driver_id,"
    "            (SELECT count(*) FROM deliveries x WHERE x.driver_id = r.driver_id"
    "               AND x.assigned_at < m.assigned_at"
    "               AND (x.delivered_at IS NULL OR x.delivered_at > m.assigned_at)"
    "               AND (x.cancelled_at IS NULL OR x.cancelled_at > m.assigned_at)) AS active"
    "          FROM mine m CROSS JOIN drivers r WHERE r.available)"
    " SELECT count(*) FROM mine m"
    "  JOIN load c ON c.delivery_id = m.delivery_id AND c.driver_id = m.driver_id"
    "  WHERE c.active >= $2::int"
    "     OR c.active > (SELECT min(l.active) FROM load l WHERE l.delivery_id = m.delivery_id) + 1";

static void burst_spreads_over_drivers_within_capacity(void **state) {
    (void)state;
    clock_speed();
    long cap = driver_capacity();
    char orders[BURST][37];
    char array[BURST * 38 + 3] = "{";
    for (int i = 0; i < BURST; i++) {
        char corr[37], event_id[37];
        free(inject_authorized(orders[i], corr, event_id));
        strcat(array, orders[i]);
        strcat(array, i + 1 < BURST ? "," : "}");
    }
    PGconn *db = ts_pg("delivery_db");
    const char *arr[] = {array};
    long long deadline = mono_ms() + WAIT_MS;
    long done = 0;
    while (done < BURST && mono_ms() < deadline) {
        assert_driver_counts_consistent(db, cap);
        done = ts_pg_long(db, "SELECT count(*) FROM deliveries WHERE order_id = ANY($1::uuid[])",
                          1, arr);
        ts_sleep_ms(50);
    }
    assert_int_equal(done, BURST);
    char capacity[24];
    snprintf(capacity, sizeof capacity, "%ld", cap);
    const char *params[] = {array, capacity};
    assert_int_equal(ts_pg_long(db, LOAD_SQL, 2, params), 0);
    assert_true(ts_pg_long(db,
                           "SELECT count(DISTINCT driver_id) FROM deliveries"
                           " WHERE order_id = ANY($1::uuid[])",
                           1, arr) > 1);
    deadline = mono_ms() + WAIT_MS;
    while (ts_pg_long(db,
                      "SELECT count(*) FROM deliveries WHERE order_id = ANY($1::uuid[])"
                      " AND status = 'DELIVERED'",
                      1, arr) < BURST &&
           mono_ms() < deadline) {
        assert_driver_counts_consistent(db, cap);
        ts_sleep_ms(100);
    }
    assert_int_equal(ts_pg_long(db,
                                "SELECT count(*) FROM deliveries WHERE order_id = ANY($1::uuid[])"
                                " AND status = 'DELIVERED'",
                                1, arr),
                     BURST);
    assert_driver_counts_consistent(db, cap);
    PQfinish(db);
}

/* The value of a series (name with its labels) in exposition text; -1 when absent. */
static double metric_value(const char *text, const char *name) {
    char needle[256];
    snprintf(needle, sizeof needle, "\n%s ", name);
    const char *at = strstr(text, needle);
    return at ? atof(at + strlen(needle)) : -1;
}

static void set_drivers_available(bool available) {
    PGconn *db = ts_pg("delivery_db");
    PGresult *res = PQexec(db, available ? "UPDATE drivers SET available = true"
                                         : "UPDATE drivers SET available = false");
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        fail_msg("cannot change drivers: %s", PQerrorMessage(db));
    PQclear(res);
    PQfinish(db);
}

static int drivers_back_on_duty(void **state) {
    (void)state;
    set_drivers_available(true);
    return 0;
}

/* With every driver off duty the order waits (delivery.waiting, no retry of the
 * event), and is assigned as soon as a driver is back. */
static void no_driver_available_parks_the_order_until_one_is(void **state) {
    (void)state;
    clock_speed();
    set_drivers_available(false);
    char order[37], corr[37], event_id[37];
    free(inject_authorized(order, corr, event_id));
    await_long("SELECT count(*) FROM waiting_orders WHERE order_id = $1", order, 1);
    assert_int_equal(sql_long(COUNT_DELIVERIES, order), 0);
    ts_kafka_msg_t m;
    assert_true(ts_kafka_find(DETA_TOPIC_DELIVERY_EVENTS, order, WAIT_MS, &m));
    assert_non_null(strstr(m.value, "\"" DETA_EVT_DELIVERY_WAITING "\""));
    ts_kafka_msg_free(&m);

    set_drivers_available(true);
    await_long(COUNT_DELIVERIES, order, 1);
    await_long("SELECT count(*) FROM deliveries WHERE order_id = $1 AND status = 'DELIVERED'",
               order, 1);
    assert_int_equal(sql_long("SELECT count(*) FROM waiting_orders WHERE order_id = $1", order),
                     0);
    /* Not dead-lettered by delivery-service (inventory-service, which never
     * reserved this injected order, dead-letters its copy: not ours to count). */
    assert_int_equal(ts_kafka_count_where(DETA_TOPIC_DLQ_PAYMENT_EVENTS, order, "x-consumer-group",
                                          "delivery-service", 5000),
                     0);
}

/* ---- waiting for a driver (issue #22, finding 6) ---- */

/* payment.authorized for order_id (a fresh one when *order_id is "") paid at
 * authorized_at. */
static void inject_paid_at(char order_id[37], const char *authorized_at) {
    if (!order_id[0])
        ts_uuid(order_id);
    json_t *payload = authorized_payload(order_id);
    json_object_set_new(payload, "authorizedAt", json_string(authorized_at));
    char *text = ts_event(DETA_EVT_PAYMENT_AUTHORIZED, order_id, NULL, payload, NULL);
    ts_kafka_produce(DETA_TOPIC_PAYMENT_EVENTS, order_id, text);
    free(text);
}

static void run_sql(const char *sql) {
    PGconn *db = ts_pg("delivery_db");
    PGresult *res = PQexec(db, sql);
    if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(db));
    PQclear(res);
    PQfinish(db);
}

/* Restarts delivery-service (one instance) with the capacity per driver given,
 * or the stack's own setting for NULL; 0 when it came up. */
static int restart_with_capacity(const char *capacity) {
    if (capacity)
        setenv("DELIVERY_DRIVER_CAPACITY", capacity, 1);
    else
        unsetenv("DELIVERY_DRIVER_CAPACITY");
    int status = ts_stack("scale delivery-service 0");
    return ts_stack("scale delivery-service 1") || status;
}

/* Whatever the test did or where it failed: every driver on duty, the stack's
 * own capacity. */
static int fleet_restored(void **state) {
    (void)state;
    set_drivers_available(true);
    return restart_with_capacity(NULL);
}

/* The first event of type for key on raw.delivery-events, parsed into ev. */
static void first_event_of(const char *key, const char *type, deta_event_t *ev) {
    ts_kafka_msg_t m[MAX_MSGS];
    int n = ts_kafka_collect(DETA_TOPIC_DELIVERY_EVENTS, key, MAX_MSGS, 3000, m, MAX_MSGS);
    long long deadline = mono_ms() + WAIT_MS;
    int found = -1;
    for (;;) {
        for (int i = 0; i < n && found < 0; i++)
            if (strstr(m[i].value, type)) {
                char why[256];
                if (deta_event_parse(m[i].value, strlen(m[i].value), ev, why, sizeof why) ==
                        DETA_OK &&
                    strcmp(ev->event_type, type) == 0)
                    found = i;
                else if (found < 0)
                    deta_event_clear(ev);
            }
        if (found >= 0 || mono_ms() >= deadline)
            break;
        free_messages(m, n);
        n = ts_kafka_collect(DETA_TOPIC_DELIVERY_EVENTS, key, MAX_MSGS, 3000, m, MAX_MSGS);
    }
    if (found < 0)
        fail_msg("no %s for %s on %s (%d events)", type, key, DETA_TOPIC_DELIVERY_EVENTS, n);
    /* and it came before any assignment of the order */
    for (int i = 0; i < found; i++)
        if (strstr(m[i].value, DETA_EVT_DELIVERY_ASSIGNED) && strcmp(type, DETA_EVT_DELIVERY_ASSIGNED))
            fail_msg("%s: delivery.assigned before %s", key, type);
    free_messages(m, n);
}

static void await_view_status(const char *order_id, const char *want) {
    char status[32] = "";
    long long deadline = mono_ms() + WAIT_MS;
    ts_order_status(order_id, status, sizeof status);
    while (strcmp(status, want) != 0 && mono_ms() < deadline) {
        ts_sleep_ms(200);
        ts_order_status(order_id, status, sizeof status);
    }
    assert_string_equal(status, want);
}

/* The queue as it is now, for a failure's message: "order paid_at seq; ...". */
static void queue_text(char *out, size_t size) {
    PGconn *db = ts_pg("delivery_db");
    PGresult *res = PQexec(db, "SELECT coalesce(string_agg(order_id || ' ' || paid_at"
                               "  || ' ' || seq, '; ' ORDER BY paid_at, seq), 'empty')"
                               " FROM waiting_orders");
    bool ok = PQresultStatus(res) == PGRES_TUPLES_OK;
    snprintf(out, size, "%s", ok ? PQgetvalue(res, 0, 0) : PQerrorMessage(db));
    PQclear(res);
    PQfinish(db);
}

/* delivery.waiting ev announced position want; otherwise fails showing the queue. */
static void assert_position(const deta_event_t *ev, json_int_t want) {
    json_int_t got = json_integer_value(json_object_get(ev->payload, "position"));
    if (got != want) {
        char queue[2048];
        queue_text(queue, sizeof queue);
        fail_msg("delivery.waiting for %s: position %lld, expected %lld; waiting now: %s",
                 ev->order_id, (long long)got, (long long)want, queue);
    }
}

/* One driver with room for one delivery. A is assigned at once; B and C, paid
 * while the driver is busy (and while it is off duty), are not retried nor
 * dead-lettered but wait, each announced by delivery.waiting, shown as
 * DELIVERY_WAITING by the query-api and by GET /api/deliveries; C, paid before
 * B but arriving after it (once B waits), is served first once the driver is
 * back. They were paid long before any other test's orders (2001), so that an
 * order another test left waiting, or one that arrives meanwhile, is behind
 * them and changes none of their positions. */
static void paid_orders_wait_for_a_driver_first_paid_first_served(void **state) {
    (void)state;
    clock_speed();
    assert_int_equal(restart_with_capacity("1"), 0);
    run_sql("UPDATE drivers SET available = (driver_id = 'driver-01')");
    await_long("SELECT active_deliveries FROM drivers WHERE driver_id = 'driver-01'", NULL, 0);
    char a[37] = "", b[37] = "", c[37] = "";
    inject_paid_at(a, "2001-01-01T00:00:01.000Z");
    await_long(COUNT_DELIVERIES, a, 1);
    /* off duty: nobody is assigned, whatever frees up, until it is back */
    run_sql("UPDATE drivers SET available = false");
    inject_paid_at(b, "2001-01-01T00:00:03.000Z");
    await_long("SELECT count(*) FROM waiting_orders WHERE order_id = $1", b, 1);
    inject_paid_at(c, "2001-01-01T00:00:02.000Z");

    deta_event_t wb, wc;
    first_event_of(b, DETA_EVT_DELIVERY_WAITING, &wb);
    first_event_of(c, DETA_EVT_DELIVERY_WAITING, &wc);
    assert_position(&wb, 1);
    assert_position(&wc, 1); /* paid before B: ahead of it */
    /* No order waits that has a delivery. Any order waiting beside B and C
     * (another test's, left or late) is named, for a later failure's reader. */
    assert_int_equal(sql_long("SELECT count(*) FROM waiting_orders w"
                              " WHERE EXISTS (SELECT 1 FROM deliveries d"
                              "               WHERE d.order_id = w.order_id)",
                              NULL),
                     0);
    if (sql_long("SELECT count(*) FROM waiting_orders", NULL) != 2) {
        char queue[2048];
        queue_text(queue, sizeof queue);
        print_message("waiting beside B and C: %s\n", queue);
    }
    assert_true(deta_timestamp_valid(field(wc.payload, "waitingSince")));
    assert_non_null(json_object_get(wc.payload, "paymentId"));
    deta_event_clear(&wb);
    deta_event_clear(&wc);
    await_view_status(b, DETA_STATE_DELIVERY_WAITING);
    await_view_status(c, DETA_STATE_DELIVERY_WAITING);
    char path[128];
    snprintf(path, sizeof path, "/api/deliveries/%s", b);
    ts_http_resp_t r;
    ts_http("GET", "DELIVERY_SERVICE_URL", path, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(field(r.json, "status"), "WAITING");
    assert_int_equal(json_integer_value(json_object_get(r.json, "position")), 2);
    ts_http_resp_free(&r);
    assert_int_equal(sql_long(COUNT_DELIVERIES, b), 0);
    assert_int_equal(sql_long(COUNT_DELIVERIES, c), 0);

    run_sql("UPDATE drivers SET available = (driver_id = 'driver-01')");
    const char *done = "SELECT count(*) FROM deliveries WHERE order_id = $1"
                       " AND status = 'DELIVERED'";
    await_long(done, a, 1);
    await_long(done, c, 1);
    await_long(done, b, 1);
    PGconn *db = ts_pg("delivery_db");
    const char *ids[] = {a, b, c};
    /* one at a time on the one driver, C (paid first) before B */
    assert_int_equal(ts_pg_long(db,
                                "SELECT count(*) FROM deliveries a, deliveries b, deliveries c"
                                " WHERE a.order_id = $1 AND b.order_id = $2 AND c.order_id = $3"
                                " AND c.assigned_at >= a.delivered_at"
                                " AND b.assigned_at >= c.delivered_at"
                                " AND a.driver_id = 'driver-01' AND b.driver_id = 'driver-01'"
                                " AND c.driver_id = 'driver-01'",
                                3, ids),
                     1);
    assert_int_equal(ts_pg_long(db,
                                "SELECT count(*) FROM waiting_orders WHERE order_id IN"
                                " ($1::uuid, $2::uuid, $3::uuid)",
                                3, ids),
                     0);
    PQfinish(db);
    await_view_status(b, DETA_STATE_DELIVERED);
    await_view_status(c, DETA_STATE_DELIVERED);
    for (int i = 0; i < 3; i++)
        assert_int_equal(ts_kafka_count_where(DETA_TOPIC_DLQ_PAYMENT_EVENTS, ids[i],
                                              "x-consumer-group", "delivery-service", 5000),
                         0);
}

/* ---- two tickers (issue #22, finding 9) ---- */

#define CROSSING_DRIVERS 4
#define CROSSING_PER_DRIVER 400

static long deadlocks(void) {
    return sql_long("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()",
                    NULL);
}

static int one_instance_again(void **state) {
    (void)state;
    ts_stack("scale delivery-service 1");
    run_sql("DELETE FROM deliveries WHERE payment_id = 'crossing-test';"
            "DELETE FROM drivers WHERE driver_id LIKE 'crossing-%'");
    return 0;
}

/* Two instances' tickers deliver many due deliveries whose drivers alternate in
 * due order, so that their turns take the drivers in crossing orders: no turn
 * may deadlock (pg_stat_database.deadlocks stays put) and every driver ends
 * with nothing active. */
static void tickers_of_two_instances_never_deadlock(void **state) {
    (void)state;
    clock_speed();
    long before = deadlocks();
    assert_int_equal(ts_stack("scale delivery-service 2"), 0);
    char sql[2048];
    snprintf(sql, sizeof sql,
             "INSERT INTO drivers (driver_id, name, active_deliveries, available)"
             " SELECT 'crossing-' || k, 'Crossing ' || k, %d, false"
             " FROM generate_series(1, %d) k;"
             "INSERT INTO deliveries (delivery_id, order_id, driver_id, payment_id,"
             "  correlation_id, status, distance_km, assigned_at, picked_up_at,"
             "  estimated_delivery_at, next_transition_at, updated_at)"
             " SELECT gen_random_uuid(), gen_random_uuid(),"
             "  'crossing-' || (1 + i %% %d), 'crossing-test', gen_random_uuid()::text,"
             "  'PICKED_UP', 1.0, now() - interval '1 hour', now() - interval '1 hour',"
             "  now() + interval '2 seconds' + i * interval '1 microsecond',"
             "  now() + interval '2 seconds' + i * interval '1 microsecond', now()"
             " FROM generate_series(0, %d) i",
             CROSSING_PER_DRIVER, CROSSING_DRIVERS, CROSSING_DRIVERS,
             CROSSING_DRIVERS * CROSSING_PER_DRIVER - 1);
    run_sql(sql);
    await_long("SELECT count(*) FROM deliveries WHERE payment_id = 'crossing-test'"
               " AND status <> 'DELIVERED'",
               NULL, 0);
    assert_int_equal(sql_long("SELECT coalesce(sum(active_deliveries), -1) FROM drivers"
                              " WHERE driver_id LIKE 'crossing-%'",
                              NULL),
                     0);
    /* a backend reports its deadlocks to pg_stat_database once idle, within
     * about ten seconds (PGSTAT_IDLE_INTERVAL) */
    ts_sleep_ms(12000);
    assert_int_equal(deadlocks(), before);
}

static void rest_answers_deliveries_and_drivers(void **state) {
    (void)state;
    clock_speed();
    ts_http_resp_t r;
    ts_http("GET", "DELIVERY_SERVICE_URL", "/api/drivers", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    long cap = (long)json_integer_value(json_object_get(r.json, "capacity"));
    json_t *drivers = json_object_get(r.json, "drivers");
    assert_true(json_array_size(drivers) >= 1);
    const json_t *first = json_array_get(drivers, 0);
    assert_string_equal(field(first, "driverId"), "driver-01");
    assert_string_equal(field(first, "name"), "Driver 01");
    const char *previous = "";
    for (size_t i = 0; i < json_array_size(drivers); i++) {
        const json_t *d = json_array_get(drivers, i);
        assert_true(strcmp(previous, field(d, "driverId")) < 0);
        previous = field(d, "driverId");
        assert_true(json_is_integer(json_object_get(d, "activeDeliveries")));
        json_int_t active = json_integer_value(json_object_get(d, "activeDeliveries"));
        assert_true(active >= 0 && active <= cap);
        assert_true(json_is_boolean(json_object_get(d, "available")));
    }
    ts_http_resp_free(&r);

    ts_http("GET", "DELIVERY_SERVICE_URL", "/api/deliveries/not-a-uuid", NULL, NULL, &r);
    assert_int_equal(r.status, 400);
    assert_string_equal(field(r.json, "field"), "orderId");
    ts_http_resp_free(&r);
    char unknown[37], path[128];
    ts_uuid(unknown);
    snprintf(path, sizeof path, "/api/deliveries/%s", unknown);
    ts_http("GET", "DELIVERY_SERVICE_URL", path, NULL, NULL, &r);
    assert_int_equal(r.status, 404);
    assert_string_equal(field(r.json, "field"), "orderId");
    ts_http_resp_free(&r);
    ts_http("POST", "DELIVERY_SERVICE_URL", "/api/drivers", "application/json", "{}", &r);
    assert_int_equal(r.status, 405);
    ts_http_resp_free(&r);

    char order[37], corr[37], event_id[37];
    free(inject_authorized(order, corr, event_id));
    await_long(COUNT_DELIVERIES, order, 1);
    snprintf(path, sizeof path, "/api/deliveries/%s", order);
    ts_http("GET", "DELIVERY_SERVICE_URL", path, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(field(r.json, "orderId"), order);
    assert_true(deta_uuid_valid(field(r.json, "deliveryId")));
    const char *status = field(r.json, "status");
    assert_true(strcmp(status, "ASSIGNED") == 0 || strcmp(status, "PICKED_UP") == 0 ||
                strcmp(status, "DELIVERED") == 0);
    assert_true(deta_timestamp_valid(field(r.json, "estimatedDeliveryAt")));
    assert_true(deta_timestamp_valid(field(r.json, "assignedAt")));
    assert_true(strncmp(field(r.json, "driverName"), "Driver ", 7) == 0);
    assert_true(strncmp(field(r.json, "driverId"), "driver-", 7) == 0);
    assert_true(field(r.json, "driverName")[7] == field(r.json, "driverId")[7]);
    ts_http_resp_free(&r);
}

static void metrics_and_health_report_the_deliveries(void **state) {
    (void)state;
    clock_speed();
    char order[37], corr[37], event_id[37];
    free(inject_authorized(order, corr, event_id));
    journey_t j;
    read_journey(order, &j); /* so every counter has moved at least once */
    free_journey(&j);

    ts_http_resp_t r;
    ts_http("GET", "DELIVERY_SERVICE_URL", "/actuator/prometheus", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_true(metric_value(r.body, "delivery_assigned_total") >= 1);
    assert_true(metric_value(r.body, "delivery_picked_up_total") >= 1);
    assert_true(metric_value(r.body, "delivery_delivered_total") >= 1);
    assert_true(metric_value(r.body, "eta_updates_total") >= 3);
    assert_true(metric_value(r.body, "delivery_active") >= 0);
    assert_true(metric_value(r.body, "delivery_waiting") >= 0);
    double n = metric_value(r.body, "delivery_eta_seconds_count");
    assert_true(n >= 1);
    assert_non_null(strstr(r.body, "# TYPE delivery_eta_seconds histogram"));
    assert_non_null(strstr(r.body, "delivery_eta_seconds_bucket{le=\"3600\"}"));
    /* In seconds: every estimate holds the 10 simulated minutes of the pickup. */
    assert_true(metric_value(r.body, "delivery_eta_seconds_sum") / n >= 600);
    assert_null(strstr(r.body, "delivery_eta_minutes"));
    ts_http_resp_free(&r);

    ts_http("GET", "DELIVERY_SERVICE_URL", "/actuator/health", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    json_t *c = json_object_get(r.json, "components");
    assert_string_equal(field(json_object_get(c, "ticker"), "status"), "UP");
    assert_string_equal(field(json_object_get(c, "db"), "status"), "UP");
    ts_http_resp_free(&r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(delivery_goes_from_assigned_to_delivered_with_etas),
        cmocka_unit_test(duplicate_deliveries_make_one_delivery),
        cmocka_unit_test(payment_failed_delivers_nothing),
        cmocka_unit_test(malformed_payment_authorized_is_dead_lettered),
        cmocka_unit_test(burst_spreads_over_drivers_within_capacity),
        cmocka_unit_test_teardown(no_driver_available_parks_the_order_until_one_is,
                                  drivers_back_on_duty),
        cmocka_unit_test(rest_answers_deliveries_and_drivers),
        cmocka_unit_test(metrics_and_health_report_the_deliveries),
        cmocka_unit_test_teardown(paid_orders_wait_for_a_driver_first_paid_first_served,
                                  fleet_restored),
        cmocka_unit_test_teardown(tickers_of_two_instances_never_deadlock, one_instance_again),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
