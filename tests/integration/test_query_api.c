/*
 * test_query_api.c - query-api against the real test stack. The test plays every
 * other service: it injects their events (valid envelopes, fresh order ids) on
 * the raw topics and watches the read model over REST, so it relies on no other
 * service running. Covered: the happy path state by state; every out-of-order
 * arrival that matters (a late order.created fills a partial row, a late
 * payment.authorized or an older ETA changes nothing back); failure ends and
 * inventory.released (timeline only); the same event delivered five times; old
 * events delivered again after later ones changing nothing at all (view, timeline,
 * feed, stored rows, metrics: with Postgres, by the timeline's key alone); a
 * malformed message and a contract-breaking payload going to their dead-letter
 * topic while the next event is applied; the same for a bad event among many
 * sent at once, which query-api applies in batches (one transaction; the bad
 * one refused before it); keyset pagination visiting every order
 * exactly once even while orders change state; filters; 400s naming the field,
 * 404s; stats, health and metrics; a cancelled order (CANCELLED, cancelledAt,
 * refundedAmount, every event of the saga in its timeline) from events shuffled
 * and duplicated, a malformed cancel event dead-lettered naming its field, the
 * CANCELLED filter and count.
 *
 * Events of one order on different topics are consumed independently, so to make
 * "B arrives after A" happen for real, the test waits until A's effect is visible
 * before it injects B, and waits for B's own visible effect before asserting
 * that B changed nothing else.
 *
 * The other services may be running and would react to what the test injects
 * (inventory to order.created, payment to inventory.reserved, delivery to
 * payment.authorized) with events of their own for the same order. So each of
 * those three payloads leaves out what its downstream consumer needs and the
 * query-api does not read (order.created has no items, inventory.reserved no
 * totalAmount, payment.authorized no amount): a running service dead-letters them
 * and adds nothing to the order. Dead-letter assertions on raw.delivery-events
 * (which four groups read) and raw.eta-events (query-api's alone) look for
 * query-api's own by their x-consumer-group.
 *
 * Two stores, one test: run as integration.test_query_api it reads the stack's
 * query-api (the Postgres store); run as integration.test_query_api_cassandra
 * (QUERY_API_TEST_STORE=cassandra) it stops the stack's query-api and starts one
 * of its own on the same port with QUERY_STORE=cassandra, against the model CQL
 * server (tests/support/cql_model_server.py) or a real Cassandra
 * (TEST_CASSANDRA_CONTACT_POINTS, make test-cassandra), and restarts the stack's
 * at the end. Every endpoint must answer alike; only the row counts checked in
 * the store itself differ in how they are read. With the model, a store that is
 * overloaded or unavailable while applying must be retried, never dead-lettered.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "deta/config.h"
#include "deta/envelope.h"
#include "deta/kafka.h"
#include "deta/states.h"
#include "deta/topics.h"
#include "cql_model.h"
#include "testsupport.h"

#define WAIT_MS 60000

/* ---- the store under test ---- */

static bool cassandra;   /* QUERY_API_TEST_STORE=cassandra */
static ts_cql_t cql;     /* its server */
static pid_t query_api;  /* the query-api this test started */
#define KEYSPACE "it_query_api"
#define POLL_MS 100

/* ---- injecting events ---- */

/* A serialized envelope that occurred at `at` (NULL: now); *event_id gets its id. */
static char *envelope(const char *type, const char *order_id, const char *at, json_t *payload,
                      char *event_id) {
    deta_event_t ev;
    char err[256];
    json_object_set_new(payload, "orderId", json_string(order_id));
    if (deta_event_init(&ev, type, order_id, order_id,
                        deta_topic_owner(deta_topic_for_event_type(type)), payload, err,
                        sizeof err) != DETA_OK)
        fail_msg("event_init: %s", err);
    if (at)
        snprintf(ev.occurred_at, sizeof ev.occurred_at, "%s", at);
    if (event_id)
        memcpy(event_id, ev.event_id, sizeof ev.event_id);
    char *text = deta_event_serialize(&ev);
    deta_event_clear(&ev);
    assert_non_null(text);
    return text;
}

/* Produces an event on its type's topic, keyed by the order. */
static void inject(const char *type, const char *order_id, const char *at, json_t *payload,
                   char *event_id) {
    char *text = envelope(type, order_id, at, payload, event_id);
    ts_kafka_produce(deta_topic_for_event_type(type), order_id, text);
    free(text);
}

static void inject_created(const char *order_id, const char *customer, const char *at) {
    inject(DETA_EVT_ORDER_CREATED, order_id, at,
           json_pack("{s:s, s:s, s:s, s:s, s:s, s:[]}", "customerId", customer, "totalAmount",
                     "20.48", "currency", "EUR", "status", DETA_STATE_CREATED, "createdAt",
                     at ? at : "2026-11-25T12:00:00.000Z", "items"),
           NULL);
}

/* No amount: a running delivery-service must not assign the test's orders. */
static json_t *payment_authorized(const char *payment_id) {
    return json_pack("{s:s, s:s, s:s, s:s}", "paymentId", payment_id, "customerId", "cust-q",
                     "currency", "EUR", "authorizedAt", "2026-11-25T12:00:02.000Z");
}

static json_t *delivery_assigned(const char *eta) {
    return json_pack("{s:s, s:s, s:s, s:s, s:s}", "deliveryId",
                     "d0d0d0d0-0000-4000-8000-000000000001", "driverId", "drv-7", "driverName",
                     "Ada Lovelace", "assignedAt", "2026-11-25T12:00:03.000Z",
                     "estimatedDeliveryAt", eta);
}

static json_t *eta_updated(const char *eta, const char *calculated_at) {
    return json_pack("{s:s, s:s, s:s, s:s}", "deliveryId",
                     "d0d0d0d0-0000-4000-8000-000000000001", "stage", "ASSIGNED",
                     "estimatedDeliveryAt", eta, "calculatedAt", calculated_at);
}

/* ---- reading the read model ---- */

static long get(const char *path, json_t **out) {
    ts_http_resp_t r;
    ts_http("GET", "QUERY_API_URL", path, NULL, NULL, &r);
    long status = r.status;
    *out = r.json ? json_incref(r.json) : NULL;
    ts_http_resp_free(&r);
    return status;
}

static const char *str(const json_t *o, const char *key) {
    return json_string_value(json_object_get(o, key));
}

/* Polls the order's view until field equals want; returns the view (caller frees). */
static json_t *await_field(const char *order_id, const char *field, const char *want) {
    char path[128];
    snprintf(path, sizeof path, "/api/orders/%s", order_id);
    char last[256] = "(order not in the read model)";
    for (int waited = 0; waited < WAIT_MS; waited += POLL_MS) {
        json_t *v = NULL;
        if (get(path, &v) == 200) {
            const char *s = str(v, field);
            snprintf(last, sizeof last, "%s", s ? s : "null");
            if (s && strcmp(s, want) == 0)
                return v;
        }
        json_decref(v);
        ts_sleep_ms(POLL_MS);
    }
    fail_msg("order %s: %s never became %s (last: %s)", order_id, field, want, last);
    return NULL;
}

static json_t *timeline(const char *order_id) {
    char path[128];
    snprintf(path, sizeof path, "/api/orders/%s/events", order_id);
    json_t *t = NULL;
    long status = get(path, &t);
    if (status != 200)
        fail_msg("GET %s: %ld", path, status);
    json_t *events = json_incref(json_object_get(t, "events"));
    assert_true(json_is_array(events));
    assert_string_equal(str(t, "orderId"), order_id);
    json_decref(t);
    return events;
}

/* Polls until the timeline holds the event; returns the timeline (caller frees). */
static json_t *await_event(const char *order_id, const char *event_id) {
    char path[128];
    snprintf(path, sizeof path, "/api/orders/%s/events", order_id);
    for (int waited = 0; waited < WAIT_MS; waited += POLL_MS) {
        json_t *t = NULL;
        if (get(path, &t) == 200) {
            size_t i;
            json_t *e;
            json_array_foreach(json_object_get(t, "events"), i, e) {
                if (strcmp(str(e, "eventId"), event_id) == 0) {
                    json_t *events = json_incref(json_object_get(t, "events"));
                    json_decref(t);
                    return events;
                }
            }
        }
        json_decref(t);
        ts_sleep_ms(POLL_MS);
    }
    fail_msg("order %s: event %s never reached the timeline", order_id, event_id);
    return NULL;
}

static size_t count_type(const json_t *events, const char *type) {
    size_t n = 0, i;
    json_t *e;
    json_array_foreach(events, i, e) n += strcmp(str(e, "eventType"), type) == 0;
    return n;
}

static void expect_error(const char *path, long status, const char *field) {
    json_t *body = NULL;
    long got = get(path, &body);
    if (got != status)
        fail_msg("GET %s: %ld, expected %ld", path, got, status);
    assert_non_null(body);
    assert_int_equal(json_integer_value(json_object_get(body, "status")), status);
    if (field)
        assert_string_equal(str(body, "field"), field);
    assert_non_null(str(body, "message"));
    json_decref(body);
}

/* A metric's value from /actuator/prometheus (the line starting with series). */
static double metric(const char *series) {
    ts_http_resp_t r;
    ts_http("GET", "QUERY_API_URL", "/actuator/prometheus", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    double v = 0;
    size_t n = strlen(series);
    for (const char *line = r.body; line && *line; line = strchr(line, '\n'), line += !!line) {
        if (strncmp(line, series, n) == 0 && line[n] == ' ') {
            v = strtod(line + n + 1, NULL);
            break;
        }
    }
    ts_http_resp_free(&r);
    return v;
}

/* ---- tests ---- */

static void happy_path_moves_through_every_state(void **state) {
    (void)state;
    char order[37], ids[7][37];
    ts_uuid(order);
    double applied_before = metric("query_events_applied_total{type=\"order.created\"}");
    double changes_before = metric("query_view_status_changes_total");

    inject(DETA_EVT_ORDER_CREATED, order, "2026-11-25T12:00:00.000Z",
           json_pack("{s:s, s:s, s:s, s:s, s:s, s:[]}", "customerId", "cust-happy", "totalAmount",
                     "20.48", "currency", "EUR", "status", DETA_STATE_CREATED, "createdAt",
                     "2026-11-25T12:00:00.000Z", "items"),
           ids[0]);
    json_t *v = await_field(order, "status", DETA_STATE_CREATED);
    assert_string_equal(str(v, "orderId"), order);
    assert_string_equal(str(v, "customerId"), "cust-happy");
    assert_string_equal(str(v, "totalAmount"), "20.48");
    assert_string_equal(str(v, "currency"), "EUR");
    assert_string_equal(str(v, "createdAt"), "2026-11-25T12:00:00.000Z");
    assert_string_equal(str(v, "correlationId"), order);
    assert_true(json_is_null(json_object_get(v, "paymentId")));
    json_decref(v);

    inject(DETA_EVT_INVENTORY_RESERVED, order, "2026-11-25T12:00:01.000Z",
           json_pack("{s:s, s:s, s:s, s:[], s:s}", "reservationId",
                     "aaaaaaaa-0000-4000-8000-000000000001", "customerId", "cust-happy",
                     "currency", "EUR", "items", "reservedAt", "2026-11-25T12:00:01.000Z"),
           ids[1]);
    json_decref(await_field(order, "status", DETA_STATE_INVENTORY_RESERVED));

    inject(DETA_EVT_PAYMENT_AUTHORIZED, order, "2026-11-25T12:00:02.000Z",
           payment_authorized("bbbbbbbb-0000-4000-8000-000000000001"), ids[2]);
    v = await_field(order, "status", DETA_STATE_PAYMENT_AUTHORIZED);
    assert_string_equal(str(v, "paymentId"), "bbbbbbbb-0000-4000-8000-000000000001");
    json_decref(v);

    inject(DETA_EVT_DELIVERY_ASSIGNED, order, "2026-11-25T12:00:03.000Z",
           delivery_assigned("2026-11-25T12:40:00.000Z"), ids[3]);
    v = await_field(order, "status", DETA_STATE_DELIVERY_ASSIGNED);
    assert_string_equal(str(v, "driverName"), "Ada Lovelace");
    assert_string_equal(str(v, "deliveryId"), "d0d0d0d0-0000-4000-8000-000000000001");
    assert_string_equal(str(v, "estimatedDeliveryAt"), "2026-11-25T12:40:00.000Z");
    json_decref(v);

    inject(DETA_EVT_ETA_UPDATED, order, "2026-11-25T12:00:04.000Z",
           eta_updated("2026-11-25T12:45:00.000Z", "2026-11-25T12:00:04.000Z"), ids[4]);
    v = await_field(order, "estimatedDeliveryAt", "2026-11-25T12:45:00.000Z");
    assert_string_equal(str(v, "status"), DETA_STATE_DELIVERY_ASSIGNED); /* an ETA moves no state */
    json_decref(v);

    inject(DETA_EVT_DELIVERY_PICKED_UP, order, "2026-11-25T12:10:00.000Z",
           json_pack("{s:s, s:s, s:s, s:s}", "deliveryId", "d0d0d0d0-0000-4000-8000-000000000001",
                     "driverId", "drv-7", "pickedUpAt", "2026-11-25T12:10:00.000Z",
                     "estimatedDeliveryAt", "2026-11-25T12:38:00.000Z"),
           ids[5]);
    v = await_field(order, "status", DETA_STATE_PICKED_UP);
    assert_string_equal(str(v, "estimatedDeliveryAt"), "2026-11-25T12:38:00.000Z");
    json_decref(v);

    inject(DETA_EVT_DELIVERY_DELIVERED, order, "2026-11-25T12:36:00.000Z",
           json_pack("{s:s, s:s, s:s}", "deliveryId", "d0d0d0d0-0000-4000-8000-000000000001",
                     "driverId", "drv-7", "deliveredAt", "2026-11-25T12:35:59.000Z"),
           ids[6]);
    v = await_field(order, "status", DETA_STATE_DELIVERED);
    assert_string_equal(str(v, "deliveredAt"), "2026-11-25T12:35:59.000Z");
    assert_string_equal(str(v, "estimatedDeliveryAt"), "2026-11-25T12:35:59.000Z");
    assert_string_equal(str(v, "updatedAt"), "2026-11-25T12:36:00.000Z");
    assert_string_equal(str(v, "customerId"), "cust-happy");
    json_decref(v);

    /* the timeline: every event once, in occurredAt order, with its payload */
    json_t *events = timeline(order);
    assert_int_equal(json_array_size(events), 7);
    for (size_t i = 0; i < 7; i++) {
        json_t *e = json_array_get(events, i);
        assert_string_equal(str(e, "eventId"), ids[i]);
        assert_string_equal(str(json_object_get(e, "payload"), "orderId"), order);
        assert_true(deta_timestamp_valid(str(e, "occurredAt")));
    }
    assert_string_equal(str(json_array_get(events, 0), "eventType"), "order.created");
    assert_string_equal(str(json_array_get(events, 0), "topic"), "raw.order-events");
    assert_string_equal(str(json_array_get(events, 6), "eventType"), "delivery.delivered");
    assert_string_equal(
        str(json_object_get(json_array_get(events, 0), "payload"), "totalAmount"), "20.48");
    json_decref(events);

    assert_true(metric("query_events_applied_total{type=\"order.created\"}") >= applied_before + 1);
    assert_true(metric("query_view_status_changes_total") >= changes_before + 6);
    assert_true(metric("query_event_lag_seconds_count") >= 7);
}

static void late_order_created_fills_the_partial_row(void **state) {
    (void)state;
    char order[37];
    ts_uuid(order);
    inject(DETA_EVT_DELIVERY_ASSIGNED, order, "2026-11-25T12:00:03.000Z",
           delivery_assigned("2026-11-25T12:40:00.000Z"), NULL);
    json_t *v = await_field(order, "status", DETA_STATE_DELIVERY_ASSIGNED);
    assert_true(json_is_null(json_object_get(v, "customerId")));
    assert_true(json_is_null(json_object_get(v, "totalAmount")));
    assert_true(json_is_null(json_object_get(v, "createdAt")));
    assert_string_equal(str(v, "driverName"), "Ada Lovelace");
    json_decref(v);

    inject_created(order, "cust-late", "2026-11-25T12:00:00.000Z");
    v = await_field(order, "customerId", "cust-late");
    assert_string_equal(str(v, "status"), DETA_STATE_DELIVERY_ASSIGNED);
    assert_string_equal(str(v, "totalAmount"), "20.48");
    assert_string_equal(str(v, "currency"), "EUR");
    assert_string_equal(str(v, "createdAt"), "2026-11-25T12:00:00.000Z");
    assert_string_equal(str(v, "driverName"), "Ada Lovelace"); /* not erased */
    assert_string_equal(str(v, "estimatedDeliveryAt"), "2026-11-25T12:40:00.000Z");
    assert_string_equal(str(v, "updatedAt"), "2026-11-25T12:00:03.000Z");
    json_decref(v);

    /* the timeline orders by occurredAt, not by arrival */
    json_t *events = timeline(order);
    assert_int_equal(json_array_size(events), 2);
    assert_string_equal(str(json_array_get(events, 0), "eventType"), "order.created");
    assert_string_equal(str(json_array_get(events, 1), "eventType"), "delivery.assigned");
    json_decref(events);
}

static void late_payment_authorized_does_not_move_back(void **state) {
    (void)state;
    char order[37];
    ts_uuid(order);
    inject_created(order, "cust-back", "2026-11-25T12:00:00.000Z");
    json_decref(await_field(order, "status", DETA_STATE_CREATED));
    inject(DETA_EVT_DELIVERY_ASSIGNED, order, "2026-11-25T12:00:03.000Z",
           delivery_assigned("2026-11-25T12:40:00.000Z"), NULL);
    json_decref(await_field(order, "status", DETA_STATE_DELIVERY_ASSIGNED));

    inject(DETA_EVT_PAYMENT_AUTHORIZED, order, "2026-11-25T12:00:02.000Z",
           payment_authorized("bbbbbbbb-0000-4000-8000-000000000002"), NULL);
    json_t *v = await_field(order, "paymentId", "bbbbbbbb-0000-4000-8000-000000000002");
    assert_string_equal(str(v, "status"), DETA_STATE_DELIVERY_ASSIGNED);
    json_decref(v);

    /* an earlier state of the same topic family, arriving last, changes nothing either */
    char reserved_id[37];
    inject(DETA_EVT_INVENTORY_RESERVED, order, "2026-11-25T12:00:01.000Z",
           json_pack("{s:s}", "reservationId", "aaaaaaaa-0000-4000-8000-000000000002"),
           reserved_id);
    json_decref(await_event(order, reserved_id));
    v = await_field(order, "reservationId", "aaaaaaaa-0000-4000-8000-000000000002");
    assert_string_equal(str(v, "status"), DETA_STATE_DELIVERY_ASSIGNED);
    json_decref(v);
}

/* ETAs travel on raw.eta-events, their stage events on raw.delivery-events,
 * with no order between the two topics: here the ETAs come first, the stage
 * event last, and the newest calculation wins whatever arrived when. */
static void older_eta_does_not_overwrite_a_newer_one(void **state) {
    (void)state;
    char order[37], older_id[37];
    ts_uuid(order);
    inject(DETA_EVT_ETA_UPDATED, order, "2026-11-25T12:20:00.000Z",
           eta_updated("2026-11-25T12:50:00.000Z", "2026-11-25T12:20:00.000Z"), NULL);
    json_t *v = await_field(order, "estimatedDeliveryAt", "2026-11-25T12:50:00.000Z");
    assert_true(json_is_null(json_object_get(v, "status"))); /* an ETA gives no status */
    json_decref(v);

    /* occurred later, but calculated earlier: older */
    inject(DETA_EVT_ETA_UPDATED, order, "2026-11-25T12:25:00.000Z",
           eta_updated("2026-11-25T12:30:00.000Z", "2026-11-25T12:10:00.000Z"), older_id);
    json_t *events = await_event(order, older_id);
    assert_int_equal(count_type(events, "eta.updated"), 2);
    json_decref(events);
    /* the first ETA of delivery.assigned is older still */
    inject(DETA_EVT_DELIVERY_ASSIGNED, order, "2026-11-25T12:00:03.000Z",
           delivery_assigned("2026-11-25T12:40:00.000Z"), NULL);
    v = await_field(order, "status", DETA_STATE_DELIVERY_ASSIGNED);
    assert_string_equal(str(v, "estimatedDeliveryAt"), "2026-11-25T12:50:00.000Z");
    assert_string_equal(str(v, "etaCalculatedAt"), "2026-11-25T12:20:00.000Z");
    json_decref(v);
}

static void failure_ends_and_release_in_the_timeline(void **state) {
    (void)state;
    char rejected[37], failed[37], released_id[37];
    ts_uuid(rejected);
    inject_created(rejected, "cust-fail", "2026-11-25T12:00:00.000Z");
    inject(DETA_EVT_INVENTORY_REJECTED, rejected, "2026-11-25T12:00:01.000Z",
           json_pack("{s:s, s:s, s:s, s:i, s:i, s:s}", "customerId", "cust-fail", "reason",
                     "INSUFFICIENT_STOCK", "itemId", "sku-1", "requested", 2, "available", 1,
                     "rejectedAt", "2026-11-25T12:00:01.000Z"),
           NULL);
    json_t *v = await_field(rejected, "status", DETA_STATE_INVENTORY_REJECTED);
    assert_string_equal(str(v, "failureReason"), "INSUFFICIENT_STOCK");
    json_decref(v);
    json_decref(await_field(rejected, "customerId", "cust-fail"));

    ts_uuid(failed);
    inject_created(failed, "cust-fail", "2026-11-25T12:00:00.000Z");
    inject(DETA_EVT_INVENTORY_RESERVED, failed, "2026-11-25T12:00:01.000Z",
           json_pack("{s:s}", "reservationId", "aaaaaaaa-0000-4000-8000-000000000003"), NULL);
    json_decref(await_field(failed, "status", DETA_STATE_INVENTORY_RESERVED));
    inject(DETA_EVT_PAYMENT_FAILED, failed, "2026-11-25T12:00:02.000Z",
           json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "paymentId",
                     "bbbbbbbb-0000-4000-8000-000000000003", "customerId", "cust-fail",
                     "amount", "20.48", "currency", "EUR", "reason", "DECLINED_CUSTOMER",
                     "failedAt", "2026-11-25T12:00:02.000Z"),
           NULL);
    v = await_field(failed, "status", DETA_STATE_PAYMENT_FAILED);
    assert_string_equal(str(v, "failureReason"), "DECLINED_CUSTOMER");
    assert_string_equal(str(v, "paymentId"), "bbbbbbbb-0000-4000-8000-000000000003");
    json_decref(v);

    inject(DETA_EVT_INVENTORY_RELEASED, failed, "2026-11-25T12:00:03.000Z",
           json_pack("{s:s, s:s, s:[], s:s}", "reservationId",
                     "aaaaaaaa-0000-4000-8000-000000000003", "reason", "PAYMENT_FAILED", "items",
                     "releasedAt", "2026-11-25T12:00:03.000Z"),
           released_id);
    json_t *events = await_event(failed, released_id);
    assert_int_equal(json_array_size(events), 4);
    assert_string_equal(str(json_array_get(events, 3), "eventType"), "inventory.released");
    json_decref(events);
    v = await_field(failed, "status", DETA_STATE_PAYMENT_FAILED);
    assert_string_equal(str(v, "failureReason"), "DECLINED_CUSTOMER");
    json_decref(v);
}

static void the_same_event_five_times_is_applied_once(void **state) {
    (void)state;
    char order[37], event_id[37], marker_id[37];
    ts_uuid(order);
    double dups_before =
        metric("deta_events_total{type=\"order.created\",outcome=\"duplicate\"}");
    char *text =
        envelope(DETA_EVT_ORDER_CREATED, order, "2026-11-25T12:00:00.000Z",
                 json_pack("{s:s, s:s, s:s, s:s, s:s, s:[]}", "customerId", "cust-dup",
                           "totalAmount", "5.00", "currency", "USD", "status", DETA_STATE_CREATED,
                           "createdAt", "2026-11-25T12:00:00.000Z", "items"),
                 event_id);
    for (int i = 0; i < 5; i++)
        ts_kafka_produce(DETA_TOPIC_ORDER_EVENTS, order, text);
    free(text);
    /* a later event on the same topic and key: once it is applied, so are the five */
    char *marker =
        envelope(DETA_EVT_ORDER_CREATED, order, "2026-11-25T12:00:00.000Z",
                 json_pack("{s:s, s:s, s:s, s:s, s:s, s:[]}", "customerId", "cust-dup",
                           "totalAmount", "5.00", "currency", "USD", "status", DETA_STATE_CREATED,
                           "createdAt", "2026-11-25T12:00:00.000Z", "items"),
                 marker_id);
    ts_kafka_produce(DETA_TOPIC_ORDER_EVENTS, order, marker);
    free(marker);
    json_t *events = await_event(order, marker_id);
    size_t copies = 0, i;
    json_t *e;
    json_array_foreach(events, i, e) copies += strcmp(str(e, "eventId"), event_id) == 0;
    assert_int_equal(copies, 1);
    assert_int_equal(json_array_size(events), 2);
    json_decref(events);

    PGconn *db = ts_pg("delivery_query");
    const char *params[] = {event_id};
    /* the inbox's claims are in Postgres, and only the Cassandra store needs them:
     * with Postgres the timeline's key is the claim (read_model_needs_claim) */
    assert_int_equal(ts_pg_long(db, "SELECT count(*) FROM processed_events WHERE event_id::text"
                                    " = $1",
                                1, params),
                     cassandra ? 1 : 0);
    const char *order_param[] = {order};
    if (!cassandra) {
        assert_int_equal(ts_pg_long(db, "SELECT count(*) FROM order_events WHERE event_id = "
                                        "$1::uuid",
                                    1, params),
                         1);
        assert_int_equal(ts_pg_long(db, "SELECT count(*) FROM order_view WHERE order_id = "
                                        "$1::uuid",
                                    1, order_param),
                         1);
    } else if (!cql.real) {
        char filter[160];
        snprintf(filter, sizeof filter, KEYSPACE ".order_events event_id=%s", event_id);
        assert_int_equal(ts_cql_count(&cql, filter), 1);
        snprintf(filter, sizeof filter, KEYSPACE ".order_view order_id=%s", order);
        assert_int_equal(ts_cql_count(&cql, filter), 1);
        /* and nothing of it reached the Postgres store's tables */
        assert_int_equal(ts_pg_long(db, "SELECT count(*) FROM order_view WHERE order_id = "
                                        "$1::uuid",
                                    1, order_param),
                         0);
    }
    PQfinish(db);
    assert_true(metric("deta_events_total{type=\"order.created\",outcome=\"duplicate\"}") >=
                dups_before + 4);
}

/* One text of Postgres's answer (caller frees): what the read model holds
 * beyond the REST answers. */
static char *pg_text(PGconn *db, const char *sql, const char *param) {
    const char *params[] = {param};
    PGresult *res = PQexecParams(db, sql, 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
        fail_msg("%s: %s", sql, PQerrorMessage(db));
    char *text = strdup(PQgetisnull(res, 0, 0) ? "" : PQgetvalue(res, 0, 0));
    PQclear(res);
    assert_non_null(text);
    return text;
}

/* What an order is in the read model: its view and timeline over REST, its feed
 * rows (what its live streams send), the timeline rows as stored (with Postgres:
 * applied_at is rewritten by an insert that does not stop at the event id), and
 * the claims of its events. */
typedef struct order_state {
    char *view, *timeline, *feed, *stored;
    long claims;
} order_state_t;

static order_state_t order_state(const char *order_id) {
    order_state_t st;
    char path[128];
    snprintf(path, sizeof path, "/api/orders/%s", order_id);
    json_t *v = NULL;
    assert_int_equal(get(path, &v), 200);
    st.view = json_dumps(v, JSON_SORT_KEYS | JSON_COMPACT);
    json_decref(v);
    json_t *t = timeline(order_id);
    st.timeline = json_dumps(t, JSON_SORT_KEYS | JSON_COMPACT);
    json_decref(t);
    PGconn *db = ts_pg("delivery_query");
    st.feed = pg_text(db,
                      "SELECT string_agg(seq || ' ' || event_id || ' ' || coalesce(status, '-'),"
                      " ',' ORDER BY seq) FROM stream_feed WHERE order_id = $1",
                      order_id);
    st.stored = cassandra ? strdup("")
                          : pg_text(db,
                                    "SELECT string_agg(event_id || ' ' || seq || ' ' ||"
                                    " applied_at, ',' ORDER BY event_id) FROM order_events"
                                    " WHERE order_id = $1::uuid",
                                    order_id);
    const char *params[] = {order_id};
    st.claims = ts_pg_long(db,
                           "SELECT count(*) FROM processed_events WHERE event_id IN"
                           " (SELECT event_id FROM stream_feed WHERE order_id = $1)",
                           1, params);
    PQfinish(db);
    return st;
}

static void order_state_free(order_state_t *st) {
    free(st->view);
    free(st->timeline);
    free(st->feed);
    free(st->stored);
}

/* The same event delivered again, and old events delivered again after later ones,
 * change nothing: not the view, the timeline, the feed (the live streams) nor
 * the stored rows, and no metric but the dispatcher's duplicates. With the
 * Postgres store there is no claim: the timeline's key on the event id is all
 * that stops them (remove its ON CONFLICT ... DO NOTHING, or let it return the
 * row, and this fails). */
static void events_delivered_again_change_nothing(void **state) {
    (void)state;
    enum { CREATED, AUTHORIZED, ASSIGNED, ETA, N };
    static const char *const types[N] = {DETA_EVT_ORDER_CREATED, DETA_EVT_PAYMENT_AUTHORIZED,
                                         DETA_EVT_DELIVERY_ASSIGNED, DETA_EVT_ETA_UPDATED};
    char order[37], ids[N][37];
    char *text[N];
    ts_uuid(order);
    text[CREATED] = envelope(DETA_EVT_ORDER_CREATED, order, "2026-11-25T12:00:00.000Z",
                             json_pack("{s:s, s:s, s:s, s:s, s:s, s:[]}", "customerId",
                                       "cust-again", "totalAmount", "7.50", "currency", "EUR",
                                       "status", DETA_STATE_CREATED, "createdAt",
                                       "2026-11-25T12:00:00.000Z", "items"),
                             ids[CREATED]);
    text[AUTHORIZED] = envelope(DETA_EVT_PAYMENT_AUTHORIZED, order, "2026-11-25T12:00:02.000Z",
                                payment_authorized("bbbbbbbb-0000-4000-8000-000000000009"),
                                ids[AUTHORIZED]);
    text[ASSIGNED] = envelope(DETA_EVT_DELIVERY_ASSIGNED, order, "2026-11-25T12:00:03.000Z",
                              delivery_assigned("2026-11-25T12:40:00.000Z"), ids[ASSIGNED]);
    text[ETA] = envelope(DETA_EVT_ETA_UPDATED, order, "2026-11-25T12:00:04.000Z",
                         eta_updated("2026-11-25T12:45:00.000Z", "2026-11-25T12:00:04.000Z"),
                         ids[ETA]);
    /* first, in order, each seen applied before the next */
    static const char *const field[N] = {"status", "status", "status", "estimatedDeliveryAt"};
    const char *want[N] = {DETA_STATE_CREATED, DETA_STATE_PAYMENT_AUTHORIZED,
                           DETA_STATE_DELIVERY_ASSIGNED, "2026-11-25T12:45:00.000Z"};
    for (int i = 0; i < N; i++) {
        ts_kafka_produce(deta_topic_for_event_type(types[i]), order, text[i]);
        json_decref(await_field(order, field[i], want[i]));
    }
    json_decref(await_event(order, ids[ETA]));
    order_state_t before = order_state(order);
    assert_int_equal(before.claims, cassandra ? N : 0);
    double applied[N], dups[N], changes = metric("query_view_status_changes_total");
    for (int i = 0; i < N; i++) {
        char series[160];
        snprintf(series, sizeof series, "query_events_applied_total{type=\"%s\"}", types[i]);
        applied[i] = metric(series);
        snprintf(series, sizeof series, "deta_events_total{type=\"%s\",outcome=\"duplicate\"}",
                 types[i]);
        dups[i] = metric(series);
    }

    /* again: the newest first, the oldest last (and twice), the one that set the
     * status among them */
    for (int i = N - 1; i >= 0; i--)
        ts_kafka_produce(deta_topic_for_event_type(types[i]), order, text[i]);
    ts_kafka_produce(DETA_TOPIC_ORDER_EVENTS, order, text[CREATED]);
    for (int i = 0; i < N; i++) {
        char series[160];
        snprintf(series, sizeof series, "deta_events_total{type=\"%s\",outcome=\"duplicate\"}",
                 types[i]);
        double expected = dups[i] + (i == CREATED ? 2 : 1), got = dups[i];
        for (int waited = 0; waited < WAIT_MS && got < expected; waited += POLL_MS) {
            ts_sleep_ms(POLL_MS);
            got = metric(series);
        }
        if (got < expected)
            fail_msg("%s delivered again: %g duplicates counted, expected %g", types[i],
                     got - dups[i], expected - dups[i]);
        free(text[i]);
    }

    order_state_t after = order_state(order);
    assert_string_equal(after.view, before.view);
    assert_string_equal(after.timeline, before.timeline);
    assert_string_equal(after.feed, before.feed);
    assert_string_equal(after.stored, before.stored);
    assert_int_equal(after.claims, before.claims);
    for (int i = 0; i < N; i++) {
        char series[160];
        snprintf(series, sizeof series, "query_events_applied_total{type=\"%s\"}", types[i]);
        if (metric(series) != applied[i])
            fail_msg("%s delivered again was applied again", types[i]);
    }
    assert_true(metric("query_view_status_changes_total") == changes);
    order_state_free(&before);
    order_state_free(&after);
}

/* query-api's first dead letter of the order from raw_topic (on its dlq. twin),
 * checked. */
static void expect_dead_letter_of(const char *raw_topic, const char *order_id, const char *value,
                                  const char *error_part) {
    char dlq[DETA_TOPIC_MAX + 1];
    assert_non_null(deta_topic_dlq_for(raw_topic, dlq, sizeof dlq));
    ts_kafka_msg_t m;
    assert_true(ts_kafka_find_where(dlq, order_id, "x-consumer-group", "query-api", WAIT_MS, &m));
    if (value)
        assert_string_equal(m.value, value);
    assert_string_equal(ts_kafka_header(&m, "x-original-topic"), raw_topic);
    const char *why = ts_kafka_header(&m, "x-error");
    assert_non_null(why);
    if (!strstr(why, error_part))
        fail_msg("x-error does not say why (%s): %s", error_part, why);
    ts_kafka_msg_free(&m);
}

static void expect_dead_letter(const char *order_id, const char *value, const char *error_part) {
    expect_dead_letter_of(DETA_TOPIC_DELIVERY_EVENTS, order_id, value, error_part);
}

static void bad_messages_go_to_the_dead_letter_topic(void **state) {
    (void)state;
    char order[37], other[37];
    ts_uuid(order);
    ts_uuid(other);

    /* not JSON at all, then a valid event of the same order on the same topic */
    ts_kafka_produce(DETA_TOPIC_DELIVERY_EVENTS, order, "{\"eventId\": oops");
    inject(DETA_EVT_DELIVERY_ASSIGNED, order, "2026-11-25T12:00:03.000Z",
           delivery_assigned("2026-11-25T12:40:00.000Z"), NULL);
    json_decref(await_field(order, "status", DETA_STATE_DELIVERY_ASSIGNED));
    expect_dead_letter(order, "{\"eventId\": oops", "malformed");

    /* a valid envelope whose payload breaks the contract, then a good one */
    inject(DETA_EVT_DELIVERY_ASSIGNED, other, "2026-11-25T12:00:03.000Z",
           delivery_assigned("in half an hour"), NULL);
    inject(DETA_EVT_DELIVERY_PICKED_UP, other, "2026-11-25T12:10:00.000Z",
           json_pack("{s:s, s:s}", "deliveryId", "d0d0d0d0-0000-4000-8000-000000000001",
                     "pickedUpAt", "2026-11-25T12:10:00.000Z"),
           NULL);
    json_t *v = await_field(other, "status", DETA_STATE_PICKED_UP);
    assert_true(json_is_null(json_object_get(v, "driverName"))); /* the bad one left nothing */
    json_decref(v);
    expect_dead_letter(other, NULL, "estimatedDeliveryAt");
    json_t *events = timeline(other);
    assert_int_equal(json_array_size(events), 1);
    assert_int_equal(count_type(events, "delivery.assigned"), 0);
    json_decref(events);

    /* on raw.eta-events alike: an ETA without its calculatedAt goes to
     * dlq.eta-events, and the good one after it is applied */
    char eta[37], good_id[37];
    ts_uuid(eta);
    inject(DETA_EVT_ETA_UPDATED, eta, "2026-11-25T12:00:04.000Z",
           json_pack("{s:s, s:s, s:s}", "deliveryId", "d0d0d0d0-0000-4000-8000-000000000001",
                     "stage", "ASSIGNED", "estimatedDeliveryAt", "2026-11-25T12:45:00.000Z"),
           NULL);
    inject(DETA_EVT_ETA_UPDATED, eta, "2026-11-25T12:00:05.000Z",
           eta_updated("2026-11-25T12:46:00.000Z", "2026-11-25T12:00:05.000Z"), good_id);
    json_decref(await_field(eta, "estimatedDeliveryAt", "2026-11-25T12:46:00.000Z"));
    expect_dead_letter_of(DETA_TOPIC_ETA_EVENTS, eta, NULL, "calculatedAt");
    /* and the dead-letter administration keeps it, under its topic */
    PGconn *db = ts_pg("delivery_query");
    const char *params[] = {eta};
    long kept = 0;
    for (int waited = 0; kept == 0 && waited < WAIT_MS; waited += POLL_MS) {
        kept = ts_pg_long(db, "SELECT count(*) FROM dead_letters WHERE topic = 'dlq.eta-events'"
                              " AND msg_key = convert_to($1, 'UTF8')", 1, params);
        if (kept == 0)
            ts_sleep_ms(POLL_MS);
    }
    PQfinish(db);
    assert_int_equal(kept, 1);
    events = timeline(eta);
    assert_int_equal(json_array_size(events), 1);
    assert_string_equal(str(json_array_get(events, 0), "eventId"), good_id);
    json_decref(events);
}

#define BATCH_ORDERS 6

static void a_bad_event_in_a_batch_is_dead_lettered_alone(void **state) {
    (void)state;
    const char *series = "deta_consumer_batches_total{outcome=\"committed\"}";
    double batches_before = metric(series);
    char orders[BATCH_ORDERS][37], eta_ids[BATCH_ORDERS][37], bad_id[37];
    deta_kafka_out_t msgs[2 * BATCH_ORDERS + 1];
    char *texts[2 * BATCH_ORDERS + 1];
    size_t n = 0;
    for (int k = 0; k < BATCH_ORDERS; k++) {
        ts_uuid(orders[k]);
        texts[n] = envelope(DETA_EVT_DELIVERY_ASSIGNED, orders[k], "2026-11-25T12:00:03.000Z",
                            delivery_assigned("2026-11-25T12:40:00.000Z"), NULL);
        msgs[n] = (deta_kafka_out_t){.topic = DETA_TOPIC_DELIVERY_EVENTS, .key = orders[k]};
        n++;
        if (k == 0) { /* between two good events of its order: refused alone */
            texts[n] = envelope(DETA_EVT_DELIVERY_ASSIGNED, orders[k],
                                "2026-11-25T12:00:04.000Z", delivery_assigned("in an hour"),
                                bad_id);
            msgs[n] = (deta_kafka_out_t){.topic = DETA_TOPIC_DELIVERY_EVENTS, .key = orders[k]};
            n++;
        }
        /* on raw.delivery-events, where a delivery-service before raw.eta-events
         * wrote it: query-api applies an event by its type, whatever its topic */
        texts[n] = envelope(DETA_EVT_ETA_UPDATED, orders[k], "2026-11-25T12:05:00.000Z",
                            eta_updated("2026-11-25T12:45:00.000Z", "2026-11-25T12:05:00.000Z"),
                            eta_ids[k]);
        msgs[n] = (deta_kafka_out_t){.topic = DETA_TOPIC_DELIVERY_EVENTS, .key = orders[k]};
        n++;
    }
    for (size_t i = 0; i < n; i++) {
        msgs[i].value = texts[i];
        msgs[i].len = strlen(texts[i]);
    }
    ts_kafka_send_together("it-query-api", msgs, n);
    for (size_t i = 0; i < n; i++)
        free(texts[i]);

    for (int k = 0; k < BATCH_ORDERS; k++) {
        json_t *events = await_event(orders[k], eta_ids[k]);
        assert_int_equal(json_array_size(events), 2); /* assigned and the ETA, once each */
        assert_int_equal(count_type(events, "delivery.assigned"), 1);
        size_t i;
        json_t *e;
        json_array_foreach(events, i, e) assert_string_not_equal(str(e, "eventId"), bad_id);
        json_decref(events);
    }
    expect_dead_letter(orders[0], NULL, "estimatedDeliveryAt");
    assert_int_equal(ts_kafka_count_where(DETA_TOPIC_DLQ_DELIVERY_EVENTS, orders[0],
                                          "x-consumer-group", "query-api", 5000),
                     1);
    assert_true(metric(series) > batches_before);
}

#define PAGE_ORDERS 7

/* Walks customer's orders with limit 3, marking each id seen; returns the pages. */
static int walk(const char *customer, const char *extra, char ids[PAGE_ORDERS][37],
                int seen[PAGE_ORDERS], const char *mutate_after_first_page) {
    char cursor[256] = "";
    int pages = 0;
    do {
        char path[512];
        snprintf(path, sizeof path, "/api/orders?limit=3&customerId=%s%s%s%s", customer, extra,
                 cursor[0] ? "&cursor=" : "", cursor);
        json_t *page = NULL;
        assert_int_equal(get(path, &page), 200);
        json_t *items = json_object_get(page, "items");
        assert_true(json_array_size(items) <= 3);
        size_t i;
        json_t *item;
        json_array_foreach(items, i, item) {
            int k = 0;
            while (k < PAGE_ORDERS && strcmp(ids[k], str(item, "orderId")) != 0)
                k++;
            if (k == PAGE_ORDERS)
                fail_msg("page holds an order of someone else: %s", str(item, "orderId"));
            seen[k]++;
            assert_string_equal(str(item, "customerId"), customer);
        }
        json_t *next = json_object_get(page, "nextCursor");
        assert_true(json_is_null(next) || json_is_string(next));
        snprintf(cursor, sizeof cursor, "%s", json_is_string(next) ? json_string_value(next) : "");
        if (cursor[0])
            assert_int_equal(json_array_size(items), 3);
        json_decref(page);
        if (pages++ == 0 && mutate_after_first_page) {
            inject(DETA_EVT_PAYMENT_FAILED, mutate_after_first_page, "2026-11-25T12:00:02.000Z",
                   json_pack("{s:s}", "reason", "DECLINED_RANDOM"), NULL);
            json_decref(await_field(mutate_after_first_page, "status", DETA_STATE_PAYMENT_FAILED));
        }
    } while (cursor[0] && pages < 20);
    return pages;
}

static void pagination_visits_every_order_once(void **state) {
    (void)state;
    char customer[64], uuid[37], ids[PAGE_ORDERS][37];
    ts_uuid(uuid);
    snprintf(customer, sizeof customer, "page-%.8s", uuid);
    for (int i = 0; i < PAGE_ORDERS; i++) {
        ts_uuid(ids[i]);
        inject_created(ids[i], customer, "2026-11-25T12:00:00.000Z");
    }
    for (int i = 0; i < PAGE_ORDERS; i++)
        json_decref(await_field(ids[i], "customerId", customer));

    int seen[PAGE_ORDERS] = {0};
    assert_int_equal(walk(customer, "", ids, seen, NULL), 3);
    for (int i = 0; i < PAGE_ORDERS; i++)
        assert_int_equal(seen[i], 1);

    /* an order that changes state during the walk is still seen once */
    memset(seen, 0, sizeof seen);
    assert_int_equal(walk(customer, "", ids, seen, ids[0]), 3);
    for (int i = 0; i < PAGE_ORDERS; i++)
        assert_int_equal(seen[i], 1);

    /* filters: status narrows the customer's orders */
    inject(DETA_EVT_PAYMENT_FAILED, ids[1], "2026-11-25T12:00:02.000Z",
           json_pack("{s:s}", "reason", "DECLINED_RANDOM"), NULL);
    json_decref(await_field(ids[1], "status", DETA_STATE_PAYMENT_FAILED));
    memset(seen, 0, sizeof seen);
    assert_int_equal(walk(customer, "&status=PAYMENT_FAILED", ids, seen, NULL), 1);
    for (int i = 0; i < PAGE_ORDERS; i++)
        assert_int_equal(seen[i], i < 2 ? 1 : 0);
    memset(seen, 0, sizeof seen);
    assert_int_equal(walk(customer, "&status=CREATED", ids, seen, NULL), 2);
    for (int i = 0; i < PAGE_ORDERS; i++)
        assert_int_equal(seen[i], i < 2 ? 0 : 1);

    /* without the customer filter the list still works and is bounded by limit */
    json_t *page = NULL;
    assert_int_equal(get("/api/orders?limit=2", &page), 200);
    assert_int_equal(json_array_size(json_object_get(page, "items")), 2);
    assert_true(json_is_string(json_object_get(page, "nextCursor")));
    json_decref(page);
    assert_int_equal(get("/api/orders?customerId=nobody-has-this-id", &page), 200);
    assert_int_equal(json_array_size(json_object_get(page, "items")), 0);
    assert_true(json_is_null(json_object_get(page, "nextCursor")));
    json_decref(page);
}

/* ---- the cancellation saga (docs/contracts.md#cancellation) ---- */

#define CANCEL_REQ_AT "2026-11-25T12:05:00.000Z"
#define CANCEL_AT "2026-11-25T12:05:03.000Z"

/* One event of a cancelled order, by type (payloads as the contract has them). */
static json_t *cancel_payload(const char *type) {
    if (strcmp(type, DETA_EVT_ORDER_CANCEL_REQUESTED) == 0)
        return json_pack("{s:s, s:s}", "reason", "changed my mind", "requestedAt", CANCEL_REQ_AT);
    if (strcmp(type, DETA_EVT_INVENTORY_CANCEL_FORWARDED) == 0)
        return json_pack("{s:s, s:s, s:s, s:s}", "reservationId",
                         "aaaaaaaa-0000-4000-8000-00000000000c", "reason", "changed my mind",
                         "requestedAt", CANCEL_REQ_AT, "forwardedAt", "2026-11-25T12:05:01.000Z");
    if (strcmp(type, DETA_EVT_PAYMENT_CANCEL_FORWARDED) == 0)
        return json_pack("{s:s, s:s, s:s, s:s}", "paymentId",
                         "bbbbbbbb-0000-4000-8000-00000000000c", "reason", "changed my mind",
                         "requestedAt", CANCEL_REQ_AT, "forwardedAt", "2026-11-25T12:05:02.000Z");
    if (strcmp(type, DETA_EVT_DELIVERY_CANCELLED) == 0)
        return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "stage", "ASSIGNED",
                         "deliveryId", "d0d0d0d0-0000-4000-8000-000000000001", "driverId",
                         "drv-7", "paymentId", "bbbbbbbb-0000-4000-8000-00000000000c", "reason",
                         "changed my mind", "requestedAt", CANCEL_REQ_AT, "cancelledAt",
                         CANCEL_AT);
    if (strcmp(type, DETA_EVT_PAYMENT_REFUNDED) == 0)
        return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "paymentId",
                         "bbbbbbbb-0000-4000-8000-00000000000c", "refundId",
                         "cccccccc-0000-4000-8000-00000000000c", "amount", "20.48", "currency",
                         "EUR", "reason", DETA_REASON_ORDER_CANCELLED, "refundedAt",
                         "2026-11-25T12:05:04.000Z");
    if (strcmp(type, DETA_EVT_INVENTORY_RELEASED) == 0)
        return json_pack("{s:s, s:s, s:[], s:s}", "reservationId",
                         "aaaaaaaa-0000-4000-8000-00000000000c", "reason",
                         DETA_REASON_ORDER_CANCELLED, "items", "releasedAt",
                         "2026-11-25T12:05:05.000Z");
    return NULL;
}

/* A paid, assigned order cancelled before its pick-up: every event of the saga
 * (and a pick-up that lost the race) arrives shuffled, some twice. The view ends
 * CANCELLED with cancelledAt and refundedAmount, and the timeline holds each
 * event once, in occurredAt order. (The payloads that would set a running
 * service to work leave out what it needs, as above; a running saga may still
 * answer the cancel events with verdicts of its own, at today's instants, so the
 * timeline is checked for the test's events, not counted.) */
static void a_cancelled_order_shows_its_verdict_and_refund(void **state) {
    (void)state;
    char order[37], customer[64];
    ts_uuid(order);
    snprintf(customer, sizeof customer, "cancel-%.8s", order);
    struct {
        const char *type, *at;
        json_t *payload;
        char id[37];
        char *text;
    } ev[] = {
        {DETA_EVT_ORDER_CREATED, "2026-11-25T12:00:00.000Z",
         json_pack("{s:s, s:s, s:s, s:s, s:s, s:[]}", "customerId", customer, "totalAmount",
                   "20.48", "currency", "EUR", "status", DETA_STATE_CREATED, "createdAt",
                   "2026-11-25T12:00:00.000Z", "items"),
         "", NULL},
        {DETA_EVT_INVENTORY_RESERVED, "2026-11-25T12:00:01.000Z",
         json_pack("{s:s}", "reservationId", "aaaaaaaa-0000-4000-8000-00000000000c"), "", NULL},
        {DETA_EVT_PAYMENT_AUTHORIZED, "2026-11-25T12:00:02.000Z",
         payment_authorized("bbbbbbbb-0000-4000-8000-00000000000c"), "", NULL},
        {DETA_EVT_DELIVERY_ASSIGNED, "2026-11-25T12:00:03.000Z",
         delivery_assigned("2026-11-25T12:40:00.000Z"), "", NULL},
        {DETA_EVT_ORDER_CANCEL_REQUESTED, CANCEL_REQ_AT,
         cancel_payload(DETA_EVT_ORDER_CANCEL_REQUESTED), "", NULL},
        {DETA_EVT_INVENTORY_CANCEL_FORWARDED, "2026-11-25T12:05:01.000Z",
         cancel_payload(DETA_EVT_INVENTORY_CANCEL_FORWARDED), "", NULL},
        {DETA_EVT_PAYMENT_CANCEL_FORWARDED, "2026-11-25T12:05:02.000Z",
         cancel_payload(DETA_EVT_PAYMENT_CANCEL_FORWARDED), "", NULL},
        {DETA_EVT_DELIVERY_CANCELLED, CANCEL_AT, cancel_payload(DETA_EVT_DELIVERY_CANCELLED), "",
         NULL},
        {DETA_EVT_PAYMENT_REFUNDED, "2026-11-25T12:05:04.000Z",
         cancel_payload(DETA_EVT_PAYMENT_REFUNDED), "", NULL},
        {DETA_EVT_INVENTORY_RELEASED, "2026-11-25T12:05:05.000Z",
         cancel_payload(DETA_EVT_INVENTORY_RELEASED), "", NULL},
        /* the pick-up that lost the race in delivery-service's row never happens;
         * one that did would still not move a cancelled order */
        {DETA_EVT_DELIVERY_PICKED_UP, "2026-11-25T12:06:00.000Z",
         json_pack("{s:s, s:s}", "deliveryId", "d0d0d0d0-0000-4000-8000-000000000001",
                   "pickedUpAt", "2026-11-25T12:06:00.000Z"),
         "", NULL},
    };
    enum { N = sizeof ev / sizeof *ev };
    for (int i = 0; i < N; i++)
        ev[i].text = envelope(ev[i].type, order, ev[i].at, ev[i].payload, ev[i].id);
    /* shuffled (the verdict and the refund before the order exists), with duplicates */
    static const int arrival[] = {8, 7, 10, 4, 8, 9, 0, 7, 3, 6, 5, 1, 2, 10, 4};
    for (size_t k = 0; k < sizeof arrival / sizeof *arrival; k++) {
        int i = arrival[k];
        ts_kafka_produce(deta_topic_for_event_type(ev[i].type), order, ev[i].text);
    }
    for (int i = 0; i < N; i++)
        json_decref(await_event(order, ev[i].id));

    json_t *v = await_field(order, "status", DETA_STATE_CANCELLED);
    json_decref(v);
    v = await_field(order, "customerId", customer); /* order.created applied too */
    assert_string_equal(str(v, "status"), DETA_STATE_CANCELLED);
    assert_string_equal(str(v, "cancelledAt"), CANCEL_AT);
    assert_string_equal(str(v, "refundedAmount"), "20.48");
    assert_string_equal(str(v, "totalAmount"), "20.48");
    assert_string_equal(str(v, "paymentId"), "bbbbbbbb-0000-4000-8000-00000000000c");
    assert_string_equal(str(v, "deliveryId"), "d0d0d0d0-0000-4000-8000-000000000001");
    assert_true(json_is_null(json_object_get(v, "deliveredAt")));
    json_decref(v);

    json_t *events = timeline(order);
    for (int i = 0; i < N; i++) {
        size_t copies = 0, k;
        json_t *e;
        json_array_foreach(events, k, e) copies += strcmp(str(e, "eventId"), ev[i].id) == 0;
        if (copies != 1)
            fail_msg("%s is %zu times in the timeline", ev[i].type, copies);
    }
    const char *prev = "";
    size_t k;
    json_t *e;
    json_array_foreach(events, k, e) {
        assert_true(strcmp(prev, str(e, "occurredAt")) <= 0);
        prev = str(e, "occurredAt");
        if (strcmp(str(e, "eventId"), ev[9].id) == 0)
            assert_string_equal(str(json_object_get(e, "payload"), "reason"),
                                DETA_REASON_ORDER_CANCELLED);
        if (strcmp(str(e, "eventId"), ev[8].id) == 0) {
            assert_string_equal(str(e, "topic"), DETA_TOPIC_PAYMENT_EVENTS);
            assert_string_equal(str(json_object_get(e, "payload"), "amount"), "20.48");
        }
    }
    json_decref(events);
    for (int i = 0; i < N; i++)
        free(ev[i].text);

    /* the list's CANCELLED filter finds it */
    char path[160];
    snprintf(path, sizeof path, "/api/orders?status=CANCELLED&customerId=%s", customer);
    json_t *page = NULL;
    assert_int_equal(get(path, &page), 200);
    json_t *items = json_object_get(page, "items");
    assert_int_equal(json_array_size(items), 1);
    assert_string_equal(str(json_array_get(items, 0), "orderId"), order);
    assert_string_equal(str(json_array_get(items, 0), "refundedAmount"), "20.48");
    json_decref(page);
    snprintf(path, sizeof path, "/api/orders?status=DELIVERY_ASSIGNED&customerId=%s", customer);
    assert_int_equal(get(path, &page), 200);
    assert_int_equal(json_array_size(json_object_get(page, "items")), 0);
    json_decref(page);
}

static bool is_query_apis(const ts_kafka_msg_t *m) {
    const char *group = ts_kafka_header(m, "x-consumer-group");
    return group && strcmp(group, "query-api") == 0;
}

/* A cancel event that breaks the contract is dead-lettered naming the field, and
 * the next event of the order on its topic is applied. */
static void a_malformed_cancel_event_is_dead_lettered(void **state) {
    (void)state;
    char order[37], good[37];
    ts_uuid(order);
    inject(DETA_EVT_DELIVERY_CANCEL_REFUSED, order, "2026-11-25T12:05:01.000Z",
           json_pack("{s:s, s:n, s:s, s:s}", "orderStatus", "SHIPPED", "reason", "requestedAt",
                     CANCEL_REQ_AT, "refusedAt", "2026-11-25T12:05:01.000Z"),
           NULL);
    inject(DETA_EVT_DELIVERY_CANCELLED, order, CANCEL_AT,
           json_pack("{s:s, s:n, s:n, s:s, s:n, s:s}", "stage", "NONE", "deliveryId", "driverId",
                     "paymentId", "bbbbbbbb-0000-4000-8000-00000000000d", "reason",
                     "requestedAt", CANCEL_REQ_AT),
           NULL); /* no cancelledAt */
    inject(DETA_EVT_DELIVERY_CANCEL_REFUSED, order, "2026-11-25T12:05:06.000Z",
           json_pack("{s:s, s:n, s:s, s:s}", "orderStatus", DETA_STATE_PICKED_UP, "reason",
                     "requestedAt", CANCEL_REQ_AT, "refusedAt", "2026-11-25T12:05:06.000Z"),
           good);
    json_t *events = await_event(order, good);
    assert_int_equal(count_type(events, DETA_EVT_DELIVERY_CANCELLED), 0);
    json_decref(events);
    json_t *v = await_field(order, "updatedAt", "2026-11-25T12:05:06.000Z");
    assert_true(json_is_null(json_object_get(v, "status"))); /* a refusal sets none */
    assert_true(json_is_null(json_object_get(v, "cancelledAt")));
    json_decref(v);
    /* both dead letters are query-api's, each naming its field (other services
     * that consume these types may dead-letter them too, under their groups) */
    ts_kafka_msg_t m[8];
    int n = 0, mine = 0;
    for (int waited = 0; waited < WAIT_MS && mine < 2; waited += 500) {
        for (int i = 0; i < n; i++)
            ts_kafka_msg_free(&m[i]);
        n = ts_kafka_collect(DETA_TOPIC_DLQ_DELIVERY_EVENTS, order, 8, 500, m, 8);
        mine = 0;
        for (int i = 0; i < n; i++)
            mine += is_query_apis(&m[i]);
    }
    bool status_named = false, cancelled_at_named = false;
    for (int i = 0; i < n; i++) {
        const char *why = ts_kafka_header(&m[i], "x-error");
        if (is_query_apis(&m[i]) && why) {
            status_named |= strstr(why, "payload.orderStatus must be an order state") != NULL;
            cancelled_at_named |= strstr(why, "payload.cancelledAt is required") != NULL;
        }
        ts_kafka_msg_free(&m[i]);
    }
    assert_true(status_named);
    assert_true(cancelled_at_named);
}

static void bad_requests_name_the_field(void **state) {
    (void)state;
    expect_error("/api/orders?limit=0", 400, "limit");
    expect_error("/api/orders?limit=201", 400, "limit");
    expect_error("/api/orders?limit=abc", 400, "limit");
    expect_error("/api/orders?limit=", 400, "limit");
    expect_error("/api/orders?cursor=garbage!", 400, "cursor");
    expect_error("/api/orders?cursor=MjAyNi0xMS0yNVQxMjozODowNVp8eA", 400, "cursor");
    expect_error("/api/orders?status=SHIPPED", 400, "status");
    expect_error("/api/orders?status=created", 400, "status");
    expect_error("/api/orders?status=cancelled", 400, "status");
    expect_error("/api/orders?customerId=", 400, "customerId");
    expect_error("/api/orders/not-a-uuid", 400, "orderId");
    expect_error("/api/orders/not-a-uuid/events", 400, "orderId");
    char order[37], path[128];
    ts_uuid(order);
    snprintf(path, sizeof path, "/api/orders/%s", order);
    expect_error(path, 404, "orderId");
    snprintf(path, sizeof path, "/api/orders/%s/events", order);
    expect_error(path, 404, "orderId");
    expect_error("/api/nothing-here", 404, NULL);
}

static void stats_and_health(void **state) {
    (void)state;
    json_t *before = NULL, *after = NULL;
    assert_int_equal(get("/api/stats", &before), 200);
    json_t *by = json_object_get(before, "byStatus");
    assert_int_equal(json_object_size(by), 10); /* docs/contracts.md: the ten states */
    assert_true(json_is_integer(json_object_get(by, DETA_STATE_PAYMENT_FAILED)));
    assert_true(json_is_integer(json_object_get(by, DETA_STATE_DELIVERY_WAITING)));
    assert_true(json_is_integer(json_object_get(by, DETA_STATE_CANCELLED)));
    char order[37], cancelled[37];
    ts_uuid(order);
    inject_created(order, "cust-stats", "2026-11-25T12:00:00.000Z");
    json_decref(await_field(order, "status", DETA_STATE_CREATED));
    /* an order cancelled before anything was reserved counts as CANCELLED */
    ts_uuid(cancelled);
    inject(DETA_EVT_INVENTORY_CANCELLED, cancelled, CANCEL_AT,
           json_pack("{s:s, s:n, s:s, s:s}", "stage", "NONE", "reason", "requestedAt",
                     CANCEL_REQ_AT, "cancelledAt", CANCEL_AT),
           NULL);
    json_decref(await_field(cancelled, "status", DETA_STATE_CANCELLED));
    assert_int_equal(get("/api/stats", &after), 200);
    /* rows are never deleted: the total grows by at least our orders */
    assert_true(json_integer_value(json_object_get(after, "total")) >=
                json_integer_value(json_object_get(before, "total")) + 2);
    json_t *by_after = json_object_get(after, "byStatus");
    assert_true(json_integer_value(json_object_get(by_after, DETA_STATE_CANCELLED)) >=
                json_integer_value(json_object_get(by, DETA_STATE_CANCELLED)) + 1);
    json_decref(before);
    json_decref(after);

    json_t *health = NULL;
    assert_int_equal(get("/actuator/health", &health), 200);
    assert_string_equal(str(health, "status"), "UP");
    assert_string_equal(str(json_object_get(json_object_get(health, "components"), "readModel"),
                            "status"),
                        "UP");
    json_decref(health);
}

/* With the model server: each error, answered to the writes of a new order's
 * event, makes the consumer retry (TRANSIENT); the event ends applied, once,
 * and nothing reaches the dead-letter topic. */
static void an_overloaded_store_is_retried_not_dead_lettered(void **state) {
    (void)state;
    if (!cassandra || cql.real) {
        printf("(only with QUERY_STORE=cassandra on the model server)\n");
        return;
    }
    /* more errors in a row than the consumer's retry budget (5) for one of them */
    static const struct {
        const char *error, *statement;
        int times;
    } faults[] = {
        {"OVERLOADED", "IF NOT EXISTS", 7},              /* the view's lightweight transaction */
        {"UNAVAILABLE", "order_list_buckets (scope", 3}, /* the timeline and list batch */
        {"WRITE_TIMEOUT", "IF NOT EXISTS", 2},
    };
    for (size_t i = 0; i < sizeof faults / sizeof *faults; i++) {
        char order[37], event_id[37], line[160], reply[64];
        ts_uuid(order);
        snprintf(line, sizeof line, "fail %s %d %s", faults[i].error, faults[i].times,
                 faults[i].statement);
        ts_cql_control(&cql, line, reply, sizeof reply);
        inject(DETA_EVT_DELIVERY_ASSIGNED, order, "2026-11-25T12:00:03.000Z",
               delivery_assigned("2026-11-25T12:40:00.000Z"), event_id);
        json_decref(await_field(order, "status", DETA_STATE_DELIVERY_ASSIGNED));
        /* the batch comes after the view: its event is in the timeline last */
        json_t *events = await_event(order, event_id);
        assert_int_equal(json_array_size(events), 1);
        json_decref(events);
        ts_cql_control(&cql, "faults", reply, sizeof reply);
        assert_string_equal(reply, "0"); /* every error was answered, then retried */
        assert_int_equal(ts_kafka_count_where(DETA_TOPIC_DLQ_DELIVERY_EVENTS, order,
                                              "x-consumer-group", "query-api", 3000),
                         0);
    }
}

/* ---- the store's setup ---- */

static int start_cassandra_query_api(void **state) {
    (void)state;
    const char *store = getenv("QUERY_API_TEST_STORE");
    cassandra = store && strcmp(store, "cassandra") == 0;
    if (!cassandra)
        return 0;
    ts_cql_start(&cql, NULL, NULL);
    /* a real Cassandra's other settings (port, credentials) are the environment's */
    static char points[300], port[32];
    snprintf(points, sizeof points, "CASSANDRA_CONTACT_POINTS=%s", cql.contact_points);
    snprintf(port, sizeof port, "CASSANDRA_PORT=%d", cql.port);
    static const char *extra[] = {"QUERY_STORE=cassandra", points,
                                  "CASSANDRA_KEYSPACE=" KEYSPACE, NULL, NULL};
    if (!cql.real)
        extra[3] = port;
    if (ts_stack("stop query-api") != 0) {
        fprintf(stderr, "cannot stop the stack's query-api\n");
        return -1;
    }
    query_api = ts_service_spawn("query-api", "QUERY_API_PORT", extra);
    if (ts_service_await_healthy(query_api, "QUERY_API_URL", 60000) != 1) {
        fprintf(stderr, "query-api on cassandra (%s) is not healthy: see %s/logs/query-api.log\n",
                cql.contact_points, getenv("STACK_DIR"));
        return -1;
    }
    return 0;
}

static int stop_cassandra_query_api(void **state) {
    (void)state;
    if (!cassandra)
        return 0;
    int status = 0;
    if (query_api > 0) {
        kill(query_api, SIGTERM);
        waitpid(query_api, &status, 0);
    }
    ts_cql_stop(&cql);
    int healed = ts_stack("start query-api") == 0;
    if (query_api > 0 && (!WIFEXITED(status) || WEXITSTATUS(status) != 0)) {
        fprintf(stderr, "query-api on cassandra exited with status %d\n", status);
        return -1;
    }
    return healed ? 0 : -1;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(happy_path_moves_through_every_state),
        cmocka_unit_test(late_order_created_fills_the_partial_row),
        cmocka_unit_test(late_payment_authorized_does_not_move_back),
        cmocka_unit_test(older_eta_does_not_overwrite_a_newer_one),
        cmocka_unit_test(failure_ends_and_release_in_the_timeline),
        cmocka_unit_test(the_same_event_five_times_is_applied_once),
        cmocka_unit_test(events_delivered_again_change_nothing),
        cmocka_unit_test(bad_messages_go_to_the_dead_letter_topic),
        cmocka_unit_test(a_bad_event_in_a_batch_is_dead_lettered_alone),
        cmocka_unit_test(pagination_visits_every_order_once),
        cmocka_unit_test(a_cancelled_order_shows_its_verdict_and_refund),
        cmocka_unit_test(a_malformed_cancel_event_is_dead_lettered),
        cmocka_unit_test(bad_requests_name_the_field),
        cmocka_unit_test(stats_and_health),
        cmocka_unit_test(an_overloaded_store_is_retried_not_dead_lettered),
    };
    return cmocka_run_group_tests(tests, start_cassandra_query_api, stop_cassandra_query_api);
}
