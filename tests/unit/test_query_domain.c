/*
 * test_query_domain.c - query-api's rules, no server: state ranks and the
 * transition rule, what each event type contributes (and which payloads are
 * refused), the fold of events into a view in every order, instants, the ETA rule,
 * cursors and the list request's validation.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "deta/states.h"
#include "deta/topics.h"
#include "query-api/domain.h"

#define ORDER "0b7e8c1a-1111-4222-8333-444455556666"

/* ---- helpers ---- */

/* An event of type for ORDER that occurred at `at`, carrying payload (stolen). */
static deta_event_t event_at(const char *type, const char *at, json_t *payload) {
    deta_event_t ev;
    char err[256];
    if (deta_event_init(&ev, type, ORDER, "corr-1", "test", payload, err, sizeof err) != DETA_OK)
        fail_msg("event_init: %s", err);
    snprintf(ev.occurred_at, sizeof ev.occurred_at, "%s", at);
    return ev;
}

static void change_of(const char *type, const char *at, json_t *payload, query_change_t *c) {
    deta_event_t ev = event_at(type, at, payload);
    char err[256] = "";
    if (query_change_from_event(&ev, c, err, sizeof err) != DETA_OK)
        fail_msg("%s refused: %s", type, err);
    c->payload = NULL; /* the event (and its payload) goes away here */
    deta_event_clear(&ev);
}

/* Expects the event refused as invalid, with `needle` in the reason. */
static void expect_refused(const char *type, json_t *payload, const char *needle) {
    deta_event_t ev = event_at(type, "2026-11-25T12:00:00.000Z", payload);
    query_change_t c;
    char err[256] = "";
    assert_int_equal(query_change_from_event(&ev, &c, err, sizeof err), DETA_ERR_INVALID);
    if (!strstr(err, needle))
        fail_msg("%s: reason \"%s\" does not mention %s", type, err, needle);
    deta_event_clear(&ev);
}

static json_t *created_payload(void) {
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:[]}", "orderId", ORDER, "customerId",
                     "cust-7", "totalAmount", "20.48", "currency", "EUR", "status",
                     DETA_STATE_CREATED, "createdAt", "2026-11-25T12:00:00.000Z", "items");
}

/* ---- states: libdeta's, and the payloads of every type ---- */

#define REQ_AT "2026-11-25T12:30:00.000Z"
#define CANCEL_AT "2026-11-25T12:30:01.250Z"

/* A valid payload of each type query-api handles (docs/contracts.md#event-payloads). */
static json_t *payload_of(const char *type) {
    if (strcmp(type, DETA_EVT_ORDER_CREATED) == 0)
        return created_payload();
    if (strcmp(type, DETA_EVT_INVENTORY_RESERVED) == 0)
        return json_pack("{s:s}", "reservationId", "r-1");
    if (strcmp(type, DETA_EVT_INVENTORY_REJECTED) == 0)
        return json_pack("{s:s}", "reason", "INSUFFICIENT_STOCK");
    if (strcmp(type, DETA_EVT_INVENTORY_RELEASED) == 0)
        return json_pack("{s:s, s:s}", "reservationId", "r-1", "reason", "ORDER_CANCELLED");
    if (strcmp(type, DETA_EVT_PAYMENT_AUTHORIZED) == 0)
        return json_pack("{s:s}", "paymentId", "p-1");
    if (strcmp(type, DETA_EVT_PAYMENT_FAILED) == 0)
        return json_pack("{s:s, s:s}", "paymentId", "p-1", "reason", "DECLINED_RANDOM");
    if (strcmp(type, DETA_EVT_DELIVERY_WAITING) == 0)
        return json_pack("{s:s, s:i}", "paymentId", "p-1", "position", 1);
    if (strcmp(type, DETA_EVT_DELIVERY_ASSIGNED) == 0)
        return json_pack("{s:s, s:s, s:s}", "deliveryId", "d-1", "driverId", "drv-1",
                         "estimatedDeliveryAt", "2026-11-25T13:00:00Z");
    if (strcmp(type, DETA_EVT_DELIVERY_PICKED_UP) == 0)
        return json_pack("{s:s, s:s}", "deliveryId", "d-1", "pickedUpAt", "2026-11-25T12:40:00Z");
    if (strcmp(type, DETA_EVT_DELIVERY_DELIVERED) == 0)
        return json_pack("{s:s, s:s}", "deliveryId", "d-1", "deliveredAt",
                         "2026-11-25T12:50:00Z");
    if (strcmp(type, DETA_EVT_ETA_UPDATED) == 0)
        return json_pack("{s:s, s:s, s:s}", "deliveryId", "d-1", "estimatedDeliveryAt",
                         "2026-11-25T13:00:00Z", "calculatedAt", "2026-11-25T12:20:00Z");
    if (strcmp(type, DETA_EVT_ORDER_CANCEL_REQUESTED) == 0)
        return json_pack("{s:s, s:n, s:s}", "orderId", ORDER, "reason", "requestedAt", REQ_AT);
    if (strcmp(type, DETA_EVT_INVENTORY_CANCEL_FORWARDED) == 0)
        return json_pack("{s:s, s:s, s:s, s:s}", "reservationId", "r-1", "reason", "changed mind",
                         "requestedAt", REQ_AT, "forwardedAt", "2026-11-25T12:30:00.500Z");
    if (strcmp(type, DETA_EVT_PAYMENT_CANCEL_FORWARDED) == 0)
        return json_pack("{s:s, s:n, s:s, s:s}", "paymentId", "p-1", "reason", "requestedAt",
                         REQ_AT, "forwardedAt", "2026-11-25T12:30:00.700Z");
    if (strcmp(type, DETA_EVT_INVENTORY_CANCEL_REFUSED) == 0 ||
        strcmp(type, DETA_EVT_PAYMENT_CANCEL_REFUSED) == 0 ||
        strcmp(type, DETA_EVT_DELIVERY_CANCEL_REFUSED) == 0)
        return json_pack("{s:s, s:n, s:s, s:s}", "orderStatus", DETA_STATE_PICKED_UP, "reason",
                         "requestedAt", REQ_AT, "refusedAt", CANCEL_AT);
    if (strcmp(type, DETA_EVT_INVENTORY_CANCELLED) == 0)
        return json_pack("{s:s, s:n, s:s, s:s}", "stage", "NONE", "reason", "requestedAt",
                         REQ_AT, "cancelledAt", CANCEL_AT);
    if (strcmp(type, DETA_EVT_PAYMENT_CANCELLED) == 0)
        return json_pack("{s:s, s:s, s:n, s:s, s:s}", "stage", "NONE", "reservationId", "r-1",
                         "reason", "requestedAt", REQ_AT, "cancelledAt", CANCEL_AT);
    if (strcmp(type, DETA_EVT_DELIVERY_CANCELLED) == 0)
        return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "stage", "ASSIGNED",
                         "deliveryId", "d-1", "driverId", "drv-1", "paymentId", "p-1", "reason",
                         "too slow", "requestedAt", REQ_AT, "cancelledAt", CANCEL_AT);
    if (strcmp(type, DETA_EVT_PAYMENT_REFUNDED) == 0)
        return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "paymentId", "p-1", "refundId",
                         "rf-1", "amount", "20.48", "currency", "EUR", "reason",
                         DETA_REASON_ORDER_CANCELLED, "refundedAt", "2026-11-25T12:31:00Z");
    return NULL;
}

static const char *const handled_types[] = {
    DETA_EVT_ORDER_CREATED,           DETA_EVT_INVENTORY_RESERVED,
    DETA_EVT_INVENTORY_REJECTED,      DETA_EVT_INVENTORY_RELEASED,
    DETA_EVT_PAYMENT_AUTHORIZED,      DETA_EVT_PAYMENT_FAILED,
    DETA_EVT_DELIVERY_WAITING,        DETA_EVT_DELIVERY_ASSIGNED,
    DETA_EVT_DELIVERY_PICKED_UP,      DETA_EVT_DELIVERY_DELIVERED,
    DETA_EVT_ETA_UPDATED,             DETA_EVT_ORDER_CANCEL_REQUESTED,
    DETA_EVT_INVENTORY_CANCEL_FORWARDED, DETA_EVT_INVENTORY_CANCEL_REFUSED,
    DETA_EVT_INVENTORY_CANCELLED,     DETA_EVT_PAYMENT_CANCEL_FORWARDED,
    DETA_EVT_PAYMENT_CANCEL_REFUSED,  DETA_EVT_PAYMENT_CANCELLED,
    DETA_EVT_PAYMENT_REFUNDED,        DETA_EVT_DELIVERY_CANCELLED,
    DETA_EVT_DELIVERY_CANCEL_REFUSED,
};
#define HANDLED_TYPES (sizeof handled_types / sizeof *handled_types)

/* Every type of the contract is handled, and the state each sets is libdeta's
 * (deta_state_for_event): the read model has no rank table of its own. */
static void every_type_sets_libdetas_state(void **state) {
    (void)state;
    assert_int_equal(HANDLED_TYPES, 21);
    for (size_t i = 0; i < HANDLED_TYPES; i++) {
        const char *type = handled_types[i];
        assert_true(query_handles_event(type));
        query_change_t c;
        change_of(type, "2026-11-25T12:00:00.000Z", payload_of(type), &c);
        const char *want = deta_state_for_event(type);
        if (strcmp(c.fields.status, want ? want : "") != 0)
            fail_msg("%s sets \"%s\", libdeta says \"%s\"", type, c.fields.status,
                     want ? want : "");
        assert_int_equal(c.fields.status_rank, deta_state_rank(want));
        assert_string_equal(c.topic, deta_topic_for_event_type(type));
    }
    assert_false(query_handles_event("order.cancelled"));
    assert_false(query_handles_event(NULL));
}

static void cancelled_ranks_above_everything(void **state) {
    (void)state;
    query_change_t c;
    const char *verdicts[] = {DETA_EVT_INVENTORY_CANCELLED, DETA_EVT_PAYMENT_CANCELLED,
                              DETA_EVT_DELIVERY_CANCELLED};
    for (size_t i = 0; i < 3; i++) {
        change_of(verdicts[i], "2026-11-25T12:30:02.000Z", payload_of(verdicts[i]), &c);
        assert_string_equal(c.fields.status, DETA_STATE_CANCELLED);
        assert_int_equal(c.fields.status_rank, 9);
        assert_string_equal(c.fields.cancelled_at, CANCEL_AT);
    }
    /* no state, whatever came before, outranks it */
    for (int i = 0; i < DETA_STATES_COUNT; i++) {
        query_view_t v;
        memset(&v, 0, sizeof v);
        snprintf(v.status, sizeof v.status, "%s", deta_states[i]);
        v.status_rank = deta_state_rank(deta_states[i]);
        bool moved = query_view_merge(&v, &c);
        assert_int_equal(moved, i != DETA_STATES_COUNT - 1);
        assert_string_equal(v.status, DETA_STATE_CANCELLED);
    }
    assert_string_equal(deta_states[DETA_STATES_COUNT - 1], DETA_STATE_CANCELLED);
}

/* What the cancel events give the view, and what they are refused for. */
static void cancel_events_give_their_fields(void **state) {
    (void)state;
    query_change_t c;
    change_of(DETA_EVT_PAYMENT_REFUNDED, "2026-11-25T12:31:00.000Z",
              payload_of(DETA_EVT_PAYMENT_REFUNDED), &c);
    assert_string_equal(c.fields.refunded_amount, "20.48");
    assert_string_equal(c.fields.payment_id, "p-1");
    assert_string_equal(c.fields.status, "");
    assert_string_equal(c.fields.currency, ""); /* checked, not taken: order.created's */
    assert_string_equal(c.topic, DETA_TOPIC_PAYMENT_EVENTS);

    change_of(DETA_EVT_DELIVERY_CANCELLED, "2026-11-25T12:31:00.000Z",
              payload_of(DETA_EVT_DELIVERY_CANCELLED), &c);
    assert_string_equal(c.fields.delivery_id, "d-1");
    assert_string_equal(c.fields.driver_id, "drv-1");
    assert_string_equal(c.fields.payment_id, ""); /* paymentId: payment.* and waiting */
    assert_string_equal(c.fields.cancelled_at, CANCEL_AT);

    /* the timeline-only types give nothing but updatedAt */
    const char *quiet[] = {DETA_EVT_ORDER_CANCEL_REQUESTED, DETA_EVT_INVENTORY_CANCEL_FORWARDED,
                           DETA_EVT_INVENTORY_CANCEL_REFUSED, DETA_EVT_PAYMENT_CANCEL_REFUSED,
                           DETA_EVT_DELIVERY_CANCEL_REFUSED};
    for (size_t i = 0; i < 5; i++) {
        change_of(quiet[i], "2026-11-25T12:30:00.900Z", payload_of(quiet[i]), &c);
        query_view_t empty;
        memset(&empty, 0, sizeof empty);
        memcpy(empty.order_id, c.fields.order_id, sizeof empty.order_id);
        memcpy(empty.correlation_id, c.fields.correlation_id, sizeof empty.correlation_id);
        memcpy(empty.updated_at, c.fields.updated_at, sizeof empty.updated_at);
        assert_memory_equal(&empty, &c.fields, sizeof empty);
    }

    /* a reason is the client's: up to 200 bytes, or null */
    char reason[202];
    memset(reason, 'r', 200);
    reason[200] = '\0';
    json_t *p = payload_of(DETA_EVT_ORDER_CANCEL_REQUESTED);
    json_object_set_new(p, "reason", json_string(reason));
    change_of(DETA_EVT_ORDER_CANCEL_REQUESTED, REQ_AT, p, &c);
    reason[200] = 'r';
    reason[201] = '\0';
    p = payload_of(DETA_EVT_ORDER_CANCEL_REQUESTED);
    json_object_set_new(p, "reason", json_string(reason));
    expect_refused(DETA_EVT_ORDER_CANCEL_REQUESTED, p, "payload.reason is too long");
}

static void malformed_cancel_events_are_refused_naming_the_field(void **state) {
    (void)state;
    static const struct {
        const char *type, *field;
        int value; /* 0: removed, 1: a number, 2: a bad string */
        const char *needle;
    } cases[] = {
        {DETA_EVT_ORDER_CANCEL_REQUESTED, "requestedAt", 0, "payload.requestedAt is required"},
        {DETA_EVT_ORDER_CANCEL_REQUESTED, "requestedAt", 2, "payload.requestedAt"},
        {DETA_EVT_ORDER_CANCEL_REQUESTED, "reason", 1, "payload.reason"},
        {DETA_EVT_INVENTORY_CANCEL_FORWARDED, "forwardedAt", 0, "payload.forwardedAt"},
        {DETA_EVT_INVENTORY_CANCEL_FORWARDED, "reservationId", 1, "payload.reservationId"},
        {DETA_EVT_PAYMENT_CANCEL_FORWARDED, "paymentId", 0, "payload.paymentId is required"},
        {DETA_EVT_INVENTORY_CANCEL_REFUSED, "orderStatus", 0, "payload.orderStatus"},
        {DETA_EVT_PAYMENT_CANCEL_REFUSED, "orderStatus", 2, "payload.orderStatus must be an order state"},
        {DETA_EVT_DELIVERY_CANCEL_REFUSED, "refusedAt", 2, "payload.refusedAt"},
        {DETA_EVT_INVENTORY_CANCELLED, "cancelledAt", 0, "payload.cancelledAt is required"},
        {DETA_EVT_INVENTORY_CANCELLED, "stage", 0, "payload.stage is required"},
        {DETA_EVT_PAYMENT_CANCELLED, "cancelledAt", 2, "payload.cancelledAt"},
        {DETA_EVT_PAYMENT_CANCELLED, "reservationId", 1, "payload.reservationId"},
        {DETA_EVT_DELIVERY_CANCELLED, "requestedAt", 0, "payload.requestedAt"},
        {DETA_EVT_DELIVERY_CANCELLED, "driverId", 1, "payload.driverId"},
        {DETA_EVT_PAYMENT_REFUNDED, "amount", 0, "payload.amount is required"},
        {DETA_EVT_PAYMENT_REFUNDED, "amount", 2, "payload.amount"},
        {DETA_EVT_PAYMENT_REFUNDED, "currency", 2, "payload.currency"},
        {DETA_EVT_PAYMENT_REFUNDED, "refundId", 0, "payload.refundId"},
        {DETA_EVT_PAYMENT_REFUNDED, "refundedAt", 0, "payload.refundedAt"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        json_t *p = payload_of(cases[i].type);
        if (cases[i].value == 0)
            json_object_del(p, cases[i].field);
        else if (cases[i].value == 1)
            json_object_set_new(p, cases[i].field, json_integer(7));
        else
            json_object_set_new(p, cases[i].field, json_string("bogus"));
        expect_refused(cases[i].type, p, cases[i].needle);
    }
    json_t *p = payload_of(DETA_EVT_DELIVERY_CANCELLED);
    json_object_set_new(p, "orderId", json_string("11111111-1111-4111-8111-111111111111"));
    expect_refused(DETA_EVT_DELIVERY_CANCELLED, p, "payload.orderId");
}

/* ---- instants and the ETA rule ---- */

static void eta_newer_means_strictly_later_calculation(void **state) {
    (void)state;
    assert_true(query_eta_is_newer("2026-11-25T12:00:00.000Z", ""));
    assert_true(query_eta_is_newer("2026-11-25T12:00:00.000Z", NULL));
    assert_true(query_eta_is_newer("2026-11-25T12:00:00.001Z", "2026-11-25T12:00:00.000Z"));
    assert_false(query_eta_is_newer("2026-11-25T12:00:00.000Z", "2026-11-25T12:00:00.000Z"));
    assert_false(query_eta_is_newer("2026-11-25T11:59:59.999Z", "2026-11-25T12:00:00.000Z"));
    /* the same instant spelled two ways is not newer */
    assert_false(query_eta_is_newer("2026-11-25T12:00:00+00:00", "2026-11-25T12:00:00.000Z"));
    /* a day boundary compares by time, not by text */
    assert_true(query_eta_is_newer("2026-11-26T00:00:00Z", "2026-11-25T23:59:59.999999Z"));
    assert_false(query_eta_is_newer("garbage", ""));
    assert_false(query_eta_is_newer(NULL, "2026-11-25T12:00:00.000Z"));
}

/* ---- what events contribute ---- */

static void order_created_gives_the_identity(void **state) {
    (void)state;
    query_change_t c;
    change_of(DETA_EVT_ORDER_CREATED, "2026-11-25T12:00:00.000Z", created_payload(), &c);
    assert_string_equal(c.event_type, DETA_EVT_ORDER_CREATED);
    assert_string_equal(c.topic, DETA_TOPIC_ORDER_EVENTS);
    assert_true(c.authoritative);
    assert_string_equal(c.fields.order_id, ORDER);
    assert_string_equal(c.fields.customer_id, "cust-7");
    assert_string_equal(c.fields.total_amount, "20.48");
    assert_string_equal(c.fields.currency, "EUR");
    assert_string_equal(c.fields.created_at, "2026-11-25T12:00:00.000Z");
    assert_string_equal(c.fields.status, DETA_STATE_CREATED);
    assert_int_equal(c.fields.status_rank, 1);
    assert_string_equal(c.fields.updated_at, "2026-11-25T12:00:00.000Z");
    assert_string_equal(c.fields.correlation_id, "corr-1");
    assert_string_equal(c.fields.payment_id, "");
    assert_string_equal(c.fields.estimated_delivery_at, "");

    /* a JSON number amount is accepted when exact, and kept in canonical text */
    json_t *p = created_payload();
    json_object_set_new(p, "totalAmount", json_real(20.5));
    change_of(DETA_EVT_ORDER_CREATED, "2026-11-25T12:00:00.000Z", p, &c);
    assert_string_equal(c.fields.total_amount, "20.50");
}

static void bad_payloads_are_refused_naming_the_field(void **state) {
    (void)state;
    json_t *p = created_payload();
    json_object_del(p, "customerId");
    expect_refused(DETA_EVT_ORDER_CREATED, p, "payload.customerId is required");
    p = created_payload();
    json_object_set_new(p, "totalAmount", json_string("1.234"));
    expect_refused(DETA_EVT_ORDER_CREATED, p, "payload.totalAmount");
    p = created_payload();
    json_object_set_new(p, "totalAmount", json_string("-1.00"));
    expect_refused(DETA_EVT_ORDER_CREATED, p, "payload.totalAmount");
    p = created_payload();
    json_object_set_new(p, "currency", json_string("eur"));
    expect_refused(DETA_EVT_ORDER_CREATED, p, "payload.currency");
    p = created_payload();
    json_object_set_new(p, "createdAt", json_string("yesterday"));
    expect_refused(DETA_EVT_ORDER_CREATED, p, "payload.createdAt");
    p = created_payload();
    json_object_set_new(p, "customerId", json_integer(7));
    expect_refused(DETA_EVT_ORDER_CREATED, p, "payload.customerId");
    p = created_payload();
    json_object_set_new(p, "orderId", json_string("11111111-1111-4111-8111-111111111111"));
    expect_refused(DETA_EVT_ORDER_CREATED, p, "payload.orderId");

    expect_refused(DETA_EVT_PAYMENT_AUTHORIZED, json_pack("{s:s}", "orderId", ORDER),
                   "payload.paymentId");
    expect_refused(DETA_EVT_DELIVERY_ASSIGNED,
                   json_pack("{s:s, s:s}", "deliveryId", "d-1", "estimatedDeliveryAt", "soon"),
                   "payload.estimatedDeliveryAt");
    expect_refused(DETA_EVT_ETA_UPDATED,
                   json_pack("{s:s}", "estimatedDeliveryAt", "2026-11-25T13:00:00Z"),
                   "payload.calculatedAt");
    expect_refused(DETA_EVT_DELIVERY_DELIVERED, json_pack("{s:s}", "deliveryId", "d-1"),
                   "payload.deliveredAt");
    char name[200];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    expect_refused(DETA_EVT_DELIVERY_ASSIGNED,
                   json_pack("{s:s, s:s, s:s}", "deliveryId", "d-1", "driverName", name,
                             "estimatedDeliveryAt", "2026-11-25T13:00:00Z"),
                   "payload.driverName is too long");
    expect_refused("order.cancelled", json_object(), "unknown event type");

    /* an order id that is not a UUID cannot be keyed in the read model */
    deta_event_t ev;
    char err[256] = "";
    assert_int_equal(deta_event_init(&ev, DETA_EVT_ORDER_CREATED, "order-1", "c", "test",
                                     created_payload(), err, sizeof err),
                     DETA_OK);
    query_change_t c;
    assert_int_equal(query_change_from_event(&ev, &c, err, sizeof err), DETA_ERR_INVALID);
    assert_non_null(strstr(err, "not a UUID"));
    deta_event_clear(&ev);
}

static void optional_fields_may_be_absent_or_null(void **state) {
    (void)state;
    query_change_t c;
    change_of(DETA_EVT_PAYMENT_FAILED, "2026-11-25T12:00:01.000Z",
              json_pack("{s:n, s:s}", "paymentId", "reason", "DECLINED_RANDOM"), &c);
    assert_string_equal(c.fields.payment_id, "");
    assert_string_equal(c.fields.failure_reason, "DECLINED_RANDOM");
    assert_string_equal(c.fields.status, DETA_STATE_PAYMENT_FAILED);
    assert_int_equal(c.fields.status_rank, DETA_STATE_RANK_FAILED);

    change_of(DETA_EVT_INVENTORY_RELEASED, "2026-11-25T12:00:02.000Z",
              json_pack("{s:s, s:s, s:s, s:[]}", "orderId", ORDER, "reservationId", "r-1",
                        "reason", "PAYMENT_FAILED", "items"),
              &c);
    assert_string_equal(c.topic, DETA_TOPIC_INVENTORY_EVENTS);
    assert_int_equal(c.fields.status_rank, 0);
    assert_string_equal(c.fields.status, "");
    assert_string_equal(c.fields.reservation_id, "");
    assert_string_equal(c.fields.failure_reason, "");
    assert_string_equal(c.fields.updated_at, "2026-11-25T12:00:02.000Z");
}

static void delivery_events_carry_their_eta(void **state) {
    (void)state;
    query_change_t c;
    change_of(DETA_EVT_DELIVERY_ASSIGNED, "2026-11-25T12:10:00.000Z",
              json_pack("{s:s, s:s, s:s, s:s, s:s}", "deliveryId", "d-1", "driverId", "drv-9",
                        "driverName", "Ada", "assignedAt", "2026-11-25T12:09:59.500Z",
                        "estimatedDeliveryAt", "2026-11-25T12:40:00Z"),
              &c);
    assert_string_equal(c.topic, DETA_TOPIC_DELIVERY_EVENTS);
    assert_string_equal(c.fields.driver_name, "Ada");
    assert_string_equal(c.fields.driver_id, "drv-9");
    assert_string_equal(c.fields.estimated_delivery_at, "2026-11-25T12:40:00.000Z");
    assert_string_equal(c.fields.eta_calculated_at, "2026-11-25T12:09:59.500Z");

    /* no assignedAt: the event's occurredAt says when the estimate was made */
    change_of(DETA_EVT_DELIVERY_ASSIGNED, "2026-11-25T12:10:00.000Z",
              json_pack("{s:s, s:s}", "deliveryId", "d-1", "estimatedDeliveryAt",
                        "2026-11-25T12:40:00Z"),
              &c);
    assert_string_equal(c.fields.eta_calculated_at, "2026-11-25T12:10:00.000Z");

    /* picked up without an estimate: pickedUpAt alone is no ETA */
    change_of(DETA_EVT_DELIVERY_PICKED_UP, "2026-11-25T12:20:00.000Z",
              json_pack("{s:s, s:s}", "deliveryId", "d-1", "pickedUpAt",
                        "2026-11-25T12:20:00Z"),
              &c);
    assert_string_equal(c.fields.estimated_delivery_at, "");
    assert_string_equal(c.fields.eta_calculated_at, "");
    assert_string_equal(c.fields.status, DETA_STATE_PICKED_UP);

    /* delivered: the estimate becomes the actual instant */
    change_of(DETA_EVT_DELIVERY_DELIVERED, "2026-11-25T12:35:00.000Z",
              json_pack("{s:s, s:s}", "deliveryId", "d-1", "deliveredAt",
                        "2026-11-25T12:34:56.789Z"),
              &c);
    assert_string_equal(c.fields.delivered_at, "2026-11-25T12:34:56.789Z");
    assert_string_equal(c.fields.estimated_delivery_at, "2026-11-25T12:34:56.789Z");
    assert_string_equal(c.fields.eta_calculated_at, "2026-11-25T12:34:56.789Z");
}

/* ---- the fold ---- */

#define HAPPY_EVENTS 8

/* One order's whole happy path, with two ETA recalculations. */
static void happy_changes(query_change_t c[HAPPY_EVENTS]) {
    change_of(DETA_EVT_ORDER_CREATED, "2026-11-25T12:00:00.000Z", created_payload(), &c[0]);
    change_of(DETA_EVT_INVENTORY_RESERVED, "2026-11-25T12:00:01.000Z",
              json_pack("{s:s, s:s, s:s, s:s}", "reservationId", "r-1", "customerId", "cust-7",
                        "totalAmount", "20.48", "currency", "EUR"),
              &c[1]);
    change_of(DETA_EVT_PAYMENT_AUTHORIZED, "2026-11-25T12:00:02.000Z",
              json_pack("{s:s, s:s}", "paymentId", "p-1", "customerId", "cust-7"), &c[2]);
    change_of(DETA_EVT_DELIVERY_ASSIGNED, "2026-11-25T12:00:03.000Z",
              json_pack("{s:s, s:s, s:s, s:s}", "deliveryId", "d-1", "driverName", "Ada",
                        "assignedAt", "2026-11-25T12:00:03Z", "estimatedDeliveryAt",
                        "2026-11-25T12:30:00Z"),
              &c[3]);
    change_of(DETA_EVT_ETA_UPDATED, "2026-11-25T12:05:00.000Z",
              json_pack("{s:s, s:s, s:s}", "deliveryId", "d-1", "estimatedDeliveryAt",
                        "2026-11-25T12:35:00Z", "calculatedAt", "2026-11-25T12:05:00Z"),
              &c[4]);
    change_of(DETA_EVT_DELIVERY_PICKED_UP, "2026-11-25T12:10:00.000Z",
              json_pack("{s:s, s:s, s:s}", "deliveryId", "d-1", "pickedUpAt",
                        "2026-11-25T12:10:00Z", "estimatedDeliveryAt", "2026-11-25T12:33:00Z"),
              &c[5]);
    change_of(DETA_EVT_ETA_UPDATED, "2026-11-25T12:20:00.000Z",
              json_pack("{s:s, s:s, s:s}", "deliveryId", "d-1", "estimatedDeliveryAt",
                        "2026-11-25T12:31:00Z", "calculatedAt", "2026-11-25T12:20:00Z"),
              &c[6]);
    change_of(DETA_EVT_INVENTORY_RELEASED, "2026-11-25T12:00:04.000Z",
              json_pack("{s:s, s:s}", "reservationId", "r-1", "reason", "PAYMENT_FAILED"),
              &c[7]);
}

static void expect_views_equal(const query_view_t *a, const query_view_t *b) {
    json_t *ja = query_view_to_json(a), *jb = query_view_to_json(b);
    if (!json_equal(ja, jb) || a->status_rank != b->status_rank) {
        char *sa = json_dumps(ja, JSON_SORT_KEYS), *sb = json_dumps(jb, JSON_SORT_KEYS);
        fail_msg("views differ:\n%s\n%s", sa, sb);
    }
    json_decref(ja);
    json_decref(jb);
}

static bool next_permutation(int *a, int n) {
    int i = n - 2;
    while (i >= 0 && a[i] >= a[i + 1])
        i--;
    if (i < 0)
        return false;
    int j = n - 1;
    while (a[j] <= a[i])
        j--;
    int t = a[i];
    a[i] = a[j];
    a[j] = t;
    for (int l = i + 1, r = n - 1; l < r; l++, r--) {
        t = a[l];
        a[l] = a[r];
        a[r] = t;
    }
    return true;
}

static void every_order_of_arrival_folds_to_the_same_view(void **state) {
    (void)state;
    query_change_t c[HAPPY_EVENTS];
    happy_changes(c);
    query_view_t want;
    memset(&want, 0, sizeof want);
    for (int i = 0; i < HAPPY_EVENTS; i++)
        query_view_merge(&want, &c[i]);
    assert_string_equal(want.status, DETA_STATE_PICKED_UP);
    assert_string_equal(want.customer_id, "cust-7");
    assert_string_equal(want.total_amount, "20.48");
    assert_string_equal(want.payment_id, "p-1");
    assert_string_equal(want.driver_name, "Ada");
    assert_string_equal(want.reservation_id, "r-1");
    assert_string_equal(want.estimated_delivery_at, "2026-11-25T12:31:00.000Z");
    assert_string_equal(want.eta_calculated_at, "2026-11-25T12:20:00.000Z");
    assert_string_equal(want.updated_at, "2026-11-25T12:20:00.000Z");
    assert_string_equal(want.created_at, "2026-11-25T12:00:00.000Z");

    int perm[HAPPY_EVENTS];
    for (int i = 0; i < HAPPY_EVENTS; i++)
        perm[i] = i;
    long n = 0;
    do {
        query_view_t v;
        memset(&v, 0, sizeof v);
        int changes = 0;
        for (int i = 0; i < HAPPY_EVENTS; i++)
            changes += query_view_merge(&v, &c[perm[i]]);
        expect_views_equal(&v, &want);
        assert_true(changes >= 1 && changes <= 5);
        n++;
    } while (next_permutation(perm, HAPPY_EVENTS));
    assert_int_equal(n, 40320);
}

static void applying_twice_changes_nothing(void **state) {
    (void)state;
    query_change_t c[HAPPY_EVENTS];
    happy_changes(c);
    query_view_t once, twice;
    memset(&once, 0, sizeof once);
    memset(&twice, 0, sizeof twice);
    for (int i = 0; i < HAPPY_EVENTS; i++) {
        query_view_merge(&once, &c[i]);
        query_view_merge(&twice, &c[i]);
        assert_false(query_view_merge(&twice, &c[i]));
    }
    expect_views_equal(&once, &twice);
}

static void late_order_created_fills_the_partial_row(void **state) {
    (void)state;
    query_change_t c[HAPPY_EVENTS];
    happy_changes(c);
    query_view_t v;
    memset(&v, 0, sizeof v);
    assert_true(query_view_merge(&v, &c[3])); /* delivery.assigned first */
    assert_string_equal(v.status, DETA_STATE_DELIVERY_ASSIGNED);
    assert_string_equal(v.customer_id, "");
    assert_string_equal(v.total_amount, "");
    assert_string_equal(v.created_at, "");
    assert_false(query_view_merge(&v, &c[2])); /* payment.authorized: no step back */
    assert_string_equal(v.status, DETA_STATE_DELIVERY_ASSIGNED);
    assert_string_equal(v.payment_id, "p-1"); /* but its field lands */
    assert_false(query_view_merge(&v, &c[0])); /* order.created */
    assert_string_equal(v.status, DETA_STATE_DELIVERY_ASSIGNED);
    assert_int_equal(v.status_rank, 5);
    assert_string_equal(v.customer_id, "cust-7");
    assert_string_equal(v.total_amount, "20.48");
    assert_string_equal(v.currency, "EUR");
    assert_string_equal(v.created_at, "2026-11-25T12:00:00.000Z");
    assert_string_equal(v.updated_at, "2026-11-25T12:00:03.000Z");
    assert_string_equal(v.driver_name, "Ada");
}

static void order_created_outranks_copies_of_its_identity(void **state) {
    (void)state;
    query_change_t created, reserved;
    change_of(DETA_EVT_ORDER_CREATED, "2026-11-25T12:00:00.000Z", created_payload(), &created);
    change_of(DETA_EVT_INVENTORY_RESERVED, "2026-11-25T12:00:01.000Z",
              json_pack("{s:s, s:s, s:s}", "customerId", "someone-else", "totalAmount", "1.00",
                        "currency", "USD"),
              &reserved);
    query_view_t a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    query_view_merge(&a, &reserved);
    assert_string_equal(a.customer_id, "someone-else"); /* fills the gap meanwhile */
    query_view_merge(&a, &created);
    query_view_merge(&b, &created);
    query_view_merge(&b, &reserved);
    assert_string_equal(a.customer_id, "cust-7");
    assert_string_equal(a.total_amount, "20.48");
    assert_string_equal(a.currency, "EUR");
    expect_views_equal(&a, &b);
}

static void an_older_eta_never_overwrites_a_newer_one(void **state) {
    (void)state;
    query_change_t newer, older, assigned;
    change_of(DETA_EVT_ETA_UPDATED, "2026-11-25T12:20:00.000Z",
              json_pack("{s:s, s:s}", "estimatedDeliveryAt", "2026-11-25T12:45:00Z",
                        "calculatedAt", "2026-11-25T12:20:00Z"),
              &newer);
    change_of(DETA_EVT_ETA_UPDATED, "2026-11-25T12:25:00.000Z", /* occurred later, */
              json_pack("{s:s, s:s}", "estimatedDeliveryAt", "2026-11-25T12:30:00Z",
                        "calculatedAt", "2026-11-25T12:10:00Z"), /* calculated earlier */
              &older);
    change_of(DETA_EVT_DELIVERY_ASSIGNED, "2026-11-25T12:00:00.000Z",
              json_pack("{s:s, s:s}", "deliveryId", "d-1", "estimatedDeliveryAt",
                        "2026-11-25T12:50:00Z"),
              &assigned);
    query_view_t v;
    memset(&v, 0, sizeof v);
    query_view_merge(&v, &newer);
    assert_string_equal(v.status, ""); /* an ETA alone gives no status */
    query_view_merge(&v, &older);
    query_view_merge(&v, &assigned);
    assert_string_equal(v.estimated_delivery_at, "2026-11-25T12:45:00.000Z");
    assert_string_equal(v.eta_calculated_at, "2026-11-25T12:20:00.000Z");
    assert_string_equal(v.status, DETA_STATE_DELIVERY_ASSIGNED);
    assert_string_equal(v.updated_at, "2026-11-25T12:25:00.000Z");
}

static void failure_ends_hold(void **state) {
    (void)state;
    query_change_t created, rejected, reserved;
    change_of(DETA_EVT_ORDER_CREATED, "2026-11-25T12:00:00.000Z", created_payload(), &created);
    change_of(DETA_EVT_INVENTORY_REJECTED, "2026-11-25T12:00:01.000Z",
              json_pack("{s:s, s:s, s:i, s:i}", "reason", "INSUFFICIENT_STOCK", "itemId", "sku",
                        "requested", 3, "available", 1),
              &rejected);
    change_of(DETA_EVT_INVENTORY_RESERVED, "2026-11-25T12:00:02.000Z", json_object(), &reserved);
    query_view_t v;
    memset(&v, 0, sizeof v);
    assert_true(query_view_merge(&v, &rejected));
    assert_false(query_view_merge(&v, &created));
    assert_false(query_view_merge(&v, &reserved));
    assert_string_equal(v.status, DETA_STATE_INVENTORY_REJECTED);
    assert_string_equal(v.failure_reason, "INSUFFICIENT_STOCK");
    assert_string_equal(v.customer_id, "cust-7");
}

/* A cancelled order's events in every order of arrival: a pick-up that lost the
 * race (or arrives late), the refund before or after its verdict, all fold to
 * CANCELLED with cancelledAt and refundedAmount. */
static void a_cancel_folds_alike_in_every_order(void **state) {
    (void)state;
    const char *types[] = {DETA_EVT_ORDER_CREATED,      DETA_EVT_INVENTORY_RESERVED,
                           DETA_EVT_PAYMENT_AUTHORIZED, DETA_EVT_DELIVERY_ASSIGNED,
                           DETA_EVT_DELIVERY_PICKED_UP, DETA_EVT_DELIVERY_CANCELLED,
                           DETA_EVT_PAYMENT_REFUNDED,   DETA_EVT_ORDER_CANCEL_REQUESTED};
    enum { N = sizeof types / sizeof *types };
    query_change_t c[N];
    for (int i = 0; i < N; i++) {
        char at[DETA_TS_LEN];
        snprintf(at, sizeof at, "2026-11-25T12:0%d:00.000Z", i);
        change_of(types[i], at, payload_of(types[i]), &c[i]);
    }
    query_view_t want;
    memset(&want, 0, sizeof want);
    for (int i = 0; i < N; i++)
        query_view_merge(&want, &c[i]);
    assert_string_equal(want.status, DETA_STATE_CANCELLED);
    assert_int_equal(want.status_rank, DETA_STATE_RANK_CANCELLED);
    assert_string_equal(want.cancelled_at, CANCEL_AT);
    assert_string_equal(want.refunded_amount, "20.48");
    json_t *j = query_view_to_json(&want);
    assert_string_equal(json_string_value(json_object_get(j, "cancelledAt")), CANCEL_AT);
    assert_string_equal(json_string_value(json_object_get(j, "refundedAmount")), "20.48");
    json_decref(j);
    int perm[N];
    for (int i = 0; i < N; i++)
        perm[i] = i;
    long n = 0;
    do {
        query_view_t v;
        memset(&v, 0, sizeof v);
        for (int i = 0; i < N; i++)
            query_view_merge(&v, &c[perm[i]]);
        expect_views_equal(&v, &want);
        n++;
    } while (next_permutation(perm, N));
    assert_int_equal(n, 40320);

    /* payment.failed after payment.cancelled stays CANCELLED, and of two
     * verdicts' instants (one per order in the contract) the earliest stays */
    query_change_t d[3];
    change_of(DETA_EVT_PAYMENT_CANCELLED, "2026-11-25T12:30:02.000Z",
              payload_of(DETA_EVT_PAYMENT_CANCELLED), &d[0]);
    change_of(DETA_EVT_PAYMENT_FAILED, "2026-11-25T12:30:03.000Z",
              payload_of(DETA_EVT_PAYMENT_FAILED), &d[1]);
    json_t *p = payload_of(DETA_EVT_INVENTORY_CANCELLED);
    json_object_set_new(p, "cancelledAt", json_string("2026-11-25T12:29:00Z"));
    change_of(DETA_EVT_INVENTORY_CANCELLED, "2026-11-25T12:29:00.000Z", p, &d[2]);
    int q[3] = {0, 1, 2};
    do {
        query_view_t v;
        memset(&v, 0, sizeof v);
        for (int i = 0; i < 3; i++)
            query_view_merge(&v, &d[q[i]]);
        assert_string_equal(v.status, DETA_STATE_CANCELLED);
        assert_string_equal(v.cancelled_at, "2026-11-25T12:29:00.000Z");
        assert_string_equal(v.failure_reason, "DECLINED_RANDOM");
    } while (next_permutation(q, 3));
}

/* ---- cursors ---- */

static const char CURSOR_TEXT[] =
    "MjAyNi0xMS0yNVQxMjozODowNS4xMjNafDBiN2U4YzFhLTExMTEtNDIyMi04MzMzLTQ0NDQ1NTU1NjY2Ng";

static void cursors_round_trip(void **state) {
    (void)state;
    query_cursor_t c = {"2026-11-25T12:38:05.123Z", ORDER}, d;
    char text[QUERY_CURSOR_MAX];
    assert_true(query_cursor_encode(&c, text, sizeof text));
    assert_string_equal(text, CURSOR_TEXT); /* base64url of "<at>|<orderId>", unpadded */
    assert_true(query_cursor_decode(text, &d));
    assert_string_equal(d.at, c.at);
    assert_string_equal(d.order_id, c.order_id);

    query_cursor_t micro = {"1999-01-02T03:04:05.000006Z", ORDER};
    assert_true(query_cursor_encode(&micro, text, sizeof text));
    assert_null(strpbrk(text, "+/="));
    assert_true(query_cursor_decode(text, &d));
    assert_string_equal(d.at, micro.at);
    assert_false(query_cursor_encode(&c, text, 20)); /* does not fit */
}

static void undecodable_cursors_are_refused(void **state) {
    (void)state;
    query_cursor_t d;
    char padded[sizeof CURSOR_TEXT + 2], odd[sizeof CURSOR_TEXT], long_one[300];
    snprintf(padded, sizeof padded, "%s==", CURSOR_TEXT);
    snprintf(odd, sizeof odd, "%s", CURSOR_TEXT);
    odd[sizeof odd - 2] = 'h'; /* "...Ng" -> "...Nh": stray bits after the last byte */
    memset(long_one, 'A', sizeof long_one - 1);
    long_one[sizeof long_one - 1] = '\0';
    const char *bad[] = {
        "",
        "!!!!",
        "abc",
        "A",
        padded,
        odd,
        long_one,
        "MjAyNi0xMS0yNVQxMjozODowNS4xMjNafDBiN2U4YzFhLTExMTEtNDIyMi04MzMzLTQ0NDQ1NTU1NjY2Ng+",
        /* well-formed base64url of texts that are not "<instant>|<uuid>": */
        "MjAyNi0xMS0yNVQxMjozODowNVp8MGI3ZThjMWEtMTExMS00MjIyLTgzMzMtNDQ0NDU1NTU2NjY2",
        "MjAyNi0xMS0yNVQxMjozODowNS4xMjNafG5vdC1hLXV1aWQ",
        "MjAyNi0xMS0yNVQxMjozODowNS4xMjNaMGI3ZThjMWEtMTExMS00MjIyLTgzMzMtNDQ0NDU1NTU2NjY2",
        "MjAyNi0xMS0yNVQxMjozODowNS4xMjNafDBiN2U4YzFhLTExMTEtNDIyMi04MzMzLTQ0NDQ1NTU1NjY2Nnx4",
        "AAAA", /* three NUL bytes */
        /* "<at>|<ORDER in upper case>": the encoder writes lower case only (fuzz_query_params) */
        "MjAyNi0xMS0yNVQxMjozODowNS4xMjNafDBCN0U4QzFBLTExMTEtNDIyMi04MzMzLTQ0NDQ1NTU1NjY2Ng",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (query_cursor_decode(bad[i], &d))
            fail_msg("accepted cursor #%zu \"%s\"", i, bad[i]);
    assert_false(query_cursor_decode(NULL, &d));
}

/* ---- list requests ---- */

static void expect_param_refused(const char *limit, const char *cursor, const char *status,
                                 const char *customer, const char *field) {
    query_list_params_t p;
    query_violation_t v;
    memset(&v, 0, sizeof v);
    assert_int_equal(query_list_params_parse(limit, cursor, status, customer, &p, &v),
                     DETA_ERR_INVALID);
    assert_string_equal(v.field, field);
    assert_non_null(strstr(v.message, field));
}

static void list_params_default_and_validate(void **state) {
    (void)state;
    query_list_params_t p;
    query_violation_t v;
    assert_int_equal(query_list_params_parse(NULL, NULL, NULL, NULL, &p, &v), DETA_OK);
    assert_int_equal(p.limit, 50);
    assert_false(p.has_cursor);
    assert_string_equal(p.status, "");
    assert_string_equal(p.customer_id, "");

    assert_int_equal(
        query_list_params_parse("200", CURSOR_TEXT, DETA_STATE_DELIVERED, "cust-7", &p, &v),
        DETA_OK);
    assert_int_equal(p.limit, 200);
    assert_true(p.has_cursor);
    assert_string_equal(p.after.at, "2026-11-25T12:38:05.123Z");
    assert_string_equal(p.after.order_id, ORDER);
    assert_string_equal(p.status, DETA_STATE_DELIVERED);
    assert_string_equal(p.customer_id, "cust-7");
    assert_int_equal(query_list_params_parse("1", NULL, NULL, NULL, &p, &v), DETA_OK);
    assert_int_equal(p.limit, 1);

    const char *bad_limits[] = {"0", "201", "-1", "abc", "", "1.5", " 5", "+5", "5 ",
                                "99999999999", "0x10"};
    for (size_t i = 0; i < sizeof bad_limits / sizeof *bad_limits; i++)
        expect_param_refused(bad_limits[i], NULL, NULL, NULL, "limit");
    expect_param_refused(NULL, "not-a-cursor", NULL, NULL, "cursor");
    expect_param_refused(NULL, "", NULL, NULL, "cursor");
    expect_param_refused(NULL, NULL, "created", NULL, "status");
    expect_param_refused(NULL, NULL, "SHIPPED", NULL, "status");
    expect_param_refused(NULL, NULL, "cancelled", NULL, "status");
    assert_int_equal(query_list_params_parse(NULL, NULL, DETA_STATE_CANCELLED, NULL, &p, &v),
                     DETA_OK);
    assert_string_equal(p.status, DETA_STATE_CANCELLED);
    expect_param_refused(NULL, NULL, "", NULL, "status");
    expect_param_refused(NULL, NULL, NULL, "", "customerId");
    char long_customer[80];
    memset(long_customer, 'c', 65);
    long_customer[65] = '\0';
    expect_param_refused(NULL, NULL, NULL, long_customer, "customerId");
}

/* ---- rendering ---- */

static void views_render_unknown_fields_as_null(void **state) {
    (void)state;
    query_change_t c;
    change_of(DETA_EVT_PAYMENT_AUTHORIZED, "2026-11-25T12:00:02.000Z",
              json_pack("{s:s}", "paymentId", "p-1"), &c);
    query_view_t v;
    memset(&v, 0, sizeof v);
    query_view_merge(&v, &c);
    json_t *j = query_view_to_json(&v);
    assert_string_equal(json_string_value(json_object_get(j, "orderId")), ORDER);
    assert_string_equal(json_string_value(json_object_get(j, "status")),
                        DETA_STATE_PAYMENT_AUTHORIZED);
    assert_string_equal(json_string_value(json_object_get(j, "paymentId")), "p-1");
    assert_true(json_is_null(json_object_get(j, "customerId")));
    assert_true(json_is_null(json_object_get(j, "totalAmount")));
    assert_true(json_is_null(json_object_get(j, "createdAt")));
    assert_true(json_is_null(json_object_get(j, "estimatedDeliveryAt")));
    assert_string_equal(json_string_value(json_object_get(j, "updatedAt")),
                        "2026-11-25T12:00:02.000Z");
    json_decref(j);

    query_timeline_entry_t e = {"e-1", "payment.authorized", "raw.payment-events",
                                "2026-11-25T12:00:02.000Z", json_pack("{s:i}", "a", 1)};
    j = query_timeline_entry_to_json(&e);
    assert_string_equal(json_string_value(json_object_get(j, "eventType")), "payment.authorized");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "payload"), "a")), 1);
    json_decref(j);
    json_decref(e.payload);

    query_stats_t s;
    memset(&s, 0, sizeof s);
    s.by_status[0] = 3;
    s.by_status[DETA_STATES_COUNT - 2] = 2; /* PAYMENT_FAILED */
    s.by_status[DETA_STATES_COUNT - 1] = 4; /* CANCELLED, the last */
    s.without_status = 1;
    j = query_stats_to_json(&s);
    assert_int_equal(json_integer_value(json_object_get(j, "total")), 10);
    json_t *by = json_object_get(j, "byStatus");
    assert_int_equal(json_object_size(by), 10);
    assert_int_equal(json_integer_value(json_object_get(by, DETA_STATE_CANCELLED)), 4);
    assert_int_equal(json_integer_value(json_object_get(by, DETA_STATE_CREATED)), 3);
    assert_int_equal(json_integer_value(json_object_get(by, DETA_STATE_PAYMENT_FAILED)), 2);
    assert_int_equal(json_integer_value(json_object_get(by, DETA_STATE_DELIVERED)), 0);
    assert_int_equal(json_integer_value(json_object_get(j, "withoutStatus")), 1);
    json_decref(j);
}

/* The saga's stages: one event type each, and the seconds from the creation. */
static void saga_stages_are_named_and_timed(void **state) {
    (void)state;
    assert_int_equal(query_saga_stage_of("inventory.reserved"), QUERY_STAGE_RESERVED);
    assert_int_equal(query_saga_stage_of("payment.authorized"), QUERY_STAGE_AUTHORIZED);
    assert_int_equal(query_saga_stage_of("delivery.assigned"), QUERY_STAGE_ASSIGNED);
    assert_int_equal(query_saga_stage_of("delivery.delivered"), QUERY_STAGE_DELIVERED);
    const char *none[] = {"order.created", "payment.failed", "delivery.picked_up",
                          "eta.updated", "inventory.rejected", "", NULL};
    for (size_t i = 0; i < sizeof none / sizeof *none; i++)
        assert_int_equal(query_saga_stage_of(none[i]), -1);
    assert_string_equal(query_saga_stage_name(QUERY_STAGE_RESERVED), "reserved");
    assert_string_equal(query_saga_stage_name(QUERY_STAGE_AUTHORIZED), "authorized");
    assert_string_equal(query_saga_stage_name(QUERY_STAGE_ASSIGNED), "assigned");
    assert_string_equal(query_saga_stage_name(QUERY_STAGE_DELIVERED), "delivered");
    assert_null(query_saga_stage_name(-1));
    assert_null(query_saga_stage_name(QUERY_STAGE_COUNT));
    int64_t t0 = 1764600000000000; /* µs */
    assert_true(query_saga_stage_seconds(t0, t0 + 1500000) == 1.5);
    assert_true(query_saga_stage_seconds(t0, t0 + 2700000000LL) == 2700.0);
    assert_true(query_saga_stage_seconds(t0, t0) == 0.0);
    assert_true(query_saga_stage_seconds(t0, t0 - 3000) == 0.0); /* clocks a little apart */
    assert_true(query_saga_stage_seconds(0, t0) == -1.0);        /* no order.created yet */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_type_sets_libdetas_state),
        cmocka_unit_test(cancelled_ranks_above_everything),
        cmocka_unit_test(cancel_events_give_their_fields),
        cmocka_unit_test(malformed_cancel_events_are_refused_naming_the_field),
        cmocka_unit_test(eta_newer_means_strictly_later_calculation),
        cmocka_unit_test(order_created_gives_the_identity),
        cmocka_unit_test(bad_payloads_are_refused_naming_the_field),
        cmocka_unit_test(optional_fields_may_be_absent_or_null),
        cmocka_unit_test(delivery_events_carry_their_eta),
        cmocka_unit_test(every_order_of_arrival_folds_to_the_same_view),
        cmocka_unit_test(applying_twice_changes_nothing),
        cmocka_unit_test(late_order_created_fills_the_partial_row),
        cmocka_unit_test(order_created_outranks_copies_of_its_identity),
        cmocka_unit_test(an_older_eta_never_overwrites_a_newer_one),
        cmocka_unit_test(failure_ends_hold),
        cmocka_unit_test(a_cancel_folds_alike_in_every_order),
        cmocka_unit_test(cursors_round_trip),
        cmocka_unit_test(undecodable_cursors_are_refused),
        cmocka_unit_test(list_params_default_and_validate),
        cmocka_unit_test(views_render_unknown_fields_as_null),
        cmocka_unit_test(saga_stages_are_named_and_timed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
