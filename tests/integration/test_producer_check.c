/*
 * test_producer_check.c - a forged payment.authorized does not pay an order
 * (deta/event_check.h, docs/security.md#the-producer-of-an-event-is-the-owner-
 * of-its-topic), against the real services of the test stack.
 *
 * A real order waits for its payment: it is placed through order-service while
 * payment-service is stopped, and reaches INVENTORY_RESERVED (its stock held).
 * Onto raw.payment-events goes a well-formed payment.authorized for it whose
 * envelope says producer "order-service" (what a service that can write a topic
 * it does not own, or a person with its credentials, would publish), then, on
 * the same partition (same key), a valid payment.failed of payment-service's.
 *
 *   - each of the four consumer groups of raw.payment-events (inventory-,
 *     delivery-, order-service, query-api) dead-letters the forgery into
 *     dlq.payment-events with x-error naming the producer, the topic and its
 *     owner;
 *   - the order is not paid: delivery-service made no delivery for it and
 *     published nothing of it, query-api's read model never shows it authorized;
 *   - the valid event behind it on the same partition is processed (the read
 *     model shows PAYMENT_FAILED): the forgery blocked nothing.
 *
 * The customer is one the test stack's gateway declines (decline-*), so that
 * payment-service, started again at the end, declines the order too: its own
 * payment.failed agrees with the one published here.
 *
 * Without the check the forged event pays the order: delivery-service makes a
 * delivery and the read model moves on to PAYMENT_AUTHORIZED or further.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "deta/envelope.h"
#include "deta/states.h"
#include "deta/timestamp.h"
#include "deta/topics.h"
#include "testsupport.h"

#define WAIT_MS 30000

static const char *const payment_groups[] = {"inventory-service", "delivery-service",
                                             "order-service", "query-api"};

static void stack(const char *args) {
    if (ts_stack("%s", args) != 0)
        fail_msg("scripts/stack.sh %s failed", args);
}

static int teardown(void **state) {
    (void)state;
    ts_stack_heal(60000);
    return 0;
}

/* A serialized event of payment's for order, written by producer. */
static char *payment_event(const char *type, const char *producer, const char *order,
                           const char *customer, char *event_id) {
    char now[DETA_TS_LEN], payment_id[37];
    deta_timestamp_now(now);
    ts_uuid(payment_id);
    json_t *payload = json_pack("{s:s, s:s, s:s, s:s, s:s}", "orderId", order, "paymentId",
                                payment_id, "customerId", customer, "amount", "2.50",
                                "currency", "USD");
    if (strcmp(type, DETA_EVT_PAYMENT_AUTHORIZED) == 0) {
        json_object_set_new(payload, "authorizedAt", json_string(now));
    } else {
        json_object_set_new(payload, "reason", json_string("DECLINED_CUSTOMER"));
        json_object_set_new(payload, "failedAt", json_string(now));
    }
    return ts_event_by(producer, type, order, order, payload, event_id);
}

/* The order's read-model document, as text (to free). */
static char *read_model(const char *order) {
    char path[128];
    snprintf(path, sizeof path, "/api/orders/%s", order);
    ts_http_resp_t r;
    ts_http("GET", "QUERY_API_URL", path, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    char *body = strdup(r.body ? r.body : "");
    ts_http_resp_free(&r);
    return body;
}

static void forged_payment_authorized_is_dead_lettered(void **state) {
    (void)state;
    stack("stop payment-service");

    char customer[64], suffix[37], order[37];
    ts_uuid(suffix);
    snprintf(customer, sizeof customer, "decline-pcheck-%.8s", suffix);
    assert_int_equal(ts_order_place(customer, "sku-1", 1, order), 201);
    char (*ids)[37] = &order;
    assert_true(ts_orders_await(ids, 1, DETA_STATE_INVENTORY_RESERVED, WAIT_MS));

    /* The forgery, then a valid event behind it on the same partition. */
    char forged_id[37], valid_id[37];
    char *forged = payment_event(DETA_EVT_PAYMENT_AUTHORIZED, "order-service", order, customer,
                                 forged_id);
    char *valid = payment_event(DETA_EVT_PAYMENT_FAILED, "payment-service", order, customer,
                                valid_id);
    const char *keys[] = {order, order};
    const char *values[] = {forged, valid};
    ts_kafka_produce_many(DETA_TOPIC_PAYMENT_EVENTS, keys, values, 2);
    free(forged);
    free(valid);

    /* The valid one is processed: the forgery ahead of it held nothing up. */
    assert_true(ts_orders_await(ids, 1, DETA_STATE_PAYMENT_FAILED, WAIT_MS));

    /* Not paid: no delivery, the read model never authorized. */
    assert_int_equal(
        ts_db_long("delivery_db", "SELECT count(*) FROM deliveries WHERE order_id = $1", order), 0);
    char *doc = read_model(order);
    assert_null(strstr(doc, DETA_EVT_PAYMENT_AUTHORIZED));
    assert_null(strstr(doc, DETA_STATE_PAYMENT_AUTHORIZED));
    assert_null(strstr(doc, forged_id));
    free(doc);
    assert_int_equal(ts_kafka_count(DETA_TOPIC_DELIVERY_EVENTS, order, 5000), 0);
    assert_int_equal(ts_kafka_count(DETA_TOPIC_ETA_EVENTS, order, 5000), 0);


    /* Every consumer group of the topic dead-lettered the forgery, saying why. */
    const char *want = "producer \"order-service\" does not own raw.payment-events (its owner "
                       "is payment-service)";
    for (size_t i = 0; i < sizeof payment_groups / sizeof *payment_groups; i++) {
        ts_kafka_msg_t m;
        if (!ts_kafka_find_where(DETA_TOPIC_DLQ_PAYMENT_EVENTS, order, "x-consumer-group",
                                 payment_groups[i], WAIT_MS, &m))
            fail_msg("%s did not dead-letter the forged event of %s", payment_groups[i], order);
        const char *why = ts_kafka_header(&m, "x-error");
        assert_non_null(why);
        assert_string_equal(why, want);
        assert_string_equal(ts_kafka_header(&m, "x-original-topic"), DETA_TOPIC_PAYMENT_EVENTS);
        assert_non_null(strstr(m.value, forged_id));
        ts_kafka_msg_free(&m);
    }
    /* Only the forgery was dead-lettered, once per group. */
    assert_int_equal(ts_kafka_count(DETA_TOPIC_DLQ_PAYMENT_EVENTS, order, 5000), 4);

    stack("start payment-service");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(forged_payment_authorized_is_dead_lettered, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
