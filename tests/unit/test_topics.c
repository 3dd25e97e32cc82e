/*
 * test_topics.c - event type to topic mapping, dead-letter twins and each raw
 * topic's owner (lib/src/topics.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "deta/topics.h"

static void test_all_topics_raw_then_dlq(void **state) {
    (void)state;
    const char *want[DETA_TOPICS_COUNT] = {
        "raw.order-events", "raw.inventory-events", "raw.payment-events", "raw.delivery-events",
        "raw.eta-events",   "dlq.order-events",     "dlq.inventory-events", "dlq.payment-events",
        "dlq.delivery-events", "dlq.eta-events",
    };
    assert_int_equal(sizeof deta_topics_all / sizeof deta_topics_all[0], DETA_TOPICS_COUNT);
    for (size_t i = 0; i < DETA_TOPICS_COUNT; i++)
        assert_string_equal(deta_topics_all[i], want[i]);
}

static void assert_topic(const char *type, const char *want) {
    const char *got = deta_topic_for_event_type(type);
    if (!got)
        fail_msg("%s maps to no topic", type);
    assert_string_equal(got, want);
}

static void test_known_types_map_to_their_topic(void **state) {
    (void)state;
    assert_topic("order.created", "raw.order-events");
    assert_topic("inventory.reserved", "raw.inventory-events");
    assert_topic("inventory.rejected", "raw.inventory-events");
    assert_topic("inventory.released", "raw.inventory-events");
    assert_topic("payment.authorized", "raw.payment-events");
    assert_topic("payment.failed", "raw.payment-events");
    assert_topic("delivery.assigned", "raw.delivery-events");
    assert_topic("eta.updated", "raw.eta-events");
    assert_topic("delivery.picked_up", "raw.delivery-events");
    assert_topic("delivery.delivered", "raw.delivery-events");
    assert_topic("delivery.waiting", "raw.delivery-events");
    assert_topic("order.cancel_requested", "raw.order-events");
    assert_topic("inventory.cancel_forwarded", "raw.inventory-events");
    assert_topic("inventory.cancel_refused", "raw.inventory-events");
    assert_topic("inventory.cancelled", "raw.inventory-events");
    assert_topic("payment.cancel_forwarded", "raw.payment-events");
    assert_topic("payment.cancel_refused", "raw.payment-events");
    assert_topic("payment.cancelled", "raw.payment-events");
    assert_topic("payment.refunded", "raw.payment-events");
    assert_topic("delivery.cancelled", "raw.delivery-events");
    assert_topic("delivery.cancel_refused", "raw.delivery-events");
}

static void test_unknown_types_map_to_null(void **state) {
    (void)state;
    const char *unknown[] = {"order.craeted", "order.", "order", "ORDER.CREATED", "",
                             "order.created ", "order.cancelled", "payment.refund", "eta.updated.v2",
                             "raw.order-events"};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++)
        if (deta_topic_for_event_type(unknown[i]))
            fail_msg("\"%s\" maps to %s", unknown[i], deta_topic_for_event_type(unknown[i]));
    assert_null(deta_topic_for_event_type(NULL));
}

static void test_dlq_twins(void **state) {
    (void)state;
    for (size_t i = 0; i < DETA_TOPICS_RAW_COUNT; i++) {
        char buf[DETA_TOPIC_MAX + 1];
        const char *dlq = deta_topic_dlq_for(deta_topics_all[i], buf, sizeof buf);
        assert_non_null(dlq);
        assert_string_equal(dlq, deta_topics_all[i + DETA_TOPICS_RAW_COUNT]);
        assert_int_equal(strncmp(dlq, "dlq.", 4), 0);
        assert_string_equal(dlq + 4, deta_topics_all[i] + 4);
    }
}

static void test_dlq_of_non_raw_topics_is_null(void **state) {
    (void)state;
    char buf[DETA_TOPIC_MAX + 1];
    assert_null(deta_topic_dlq_for("dlq.order-events", buf, sizeof buf));
    assert_null(deta_topic_dlq_for("order-events", buf, sizeof buf));
    assert_null(deta_topic_dlq_for("raw.", buf, sizeof buf));
    assert_null(deta_topic_dlq_for("", buf, sizeof buf));
    assert_null(deta_topic_dlq_for(NULL, buf, sizeof buf));
    assert_null(deta_topic_dlq_for("raw.order-events", NULL, 0));
    char tiny[8];
    assert_null(deta_topic_dlq_for("raw.order-events", tiny, sizeof tiny));
}

/* The rule holds for any raw.* topic, not only the seed's (tests use their own). */
static void test_dlq_of_any_raw_topic(void **state) {
    (void)state;
    char buf[DETA_TOPIC_MAX + 1];
    assert_string_equal(deta_topic_dlq_for("raw.other-events", buf, sizeof buf),
                        "dlq.other-events");
    char fit[sizeof "dlq.x"];
    assert_string_equal(deta_topic_dlq_for("raw.x", fit, sizeof fit), "dlq.x");
}

/* Every event type's topic has a dead-letter twin. */
static void test_every_type_has_a_dlq(void **state) {
    (void)state;
    const char *types[] = {DETA_EVT_ORDER_CREATED,     DETA_EVT_INVENTORY_RESERVED,
                           DETA_EVT_INVENTORY_REJECTED, DETA_EVT_INVENTORY_RELEASED,
                           DETA_EVT_PAYMENT_AUTHORIZED, DETA_EVT_PAYMENT_FAILED,
                           DETA_EVT_DELIVERY_ASSIGNED,  DETA_EVT_ETA_UPDATED,
                           DETA_EVT_DELIVERY_PICKED_UP, DETA_EVT_DELIVERY_DELIVERED,
                           DETA_EVT_DELIVERY_WAITING};
    char buf[DETA_TOPIC_MAX + 1];
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        assert_non_null(deta_topic_dlq_for(deta_topic_for_event_type(types[i]), buf, sizeof buf));
}

/* Each raw topic's owner, as docs/contracts.md's table has it; no other topic
 * has one. */
static void test_owners(void **state) {
    (void)state;
    assert_string_equal(deta_topic_owner("raw.order-events"), "order-service");
    assert_string_equal(deta_topic_owner("raw.inventory-events"), "inventory-service");
    assert_string_equal(deta_topic_owner("raw.payment-events"), "payment-service");
    assert_string_equal(deta_topic_owner("raw.delivery-events"), "delivery-service");
    assert_string_equal(deta_topic_owner("raw.eta-events"), "delivery-service");
    assert_null(deta_topic_owner("dlq.payment-events"));
    assert_null(deta_topic_owner("dlq.eta-events"));
    assert_null(deta_topic_owner("raw.other-events"));
    assert_null(deta_topic_owner(NULL));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all_topics_raw_then_dlq),
        cmocka_unit_test(test_known_types_map_to_their_topic),
        cmocka_unit_test(test_unknown_types_map_to_null),
        cmocka_unit_test(test_dlq_twins),
        cmocka_unit_test(test_dlq_of_non_raw_topics_is_null),
        cmocka_unit_test(test_dlq_of_any_raw_topic),
        cmocka_unit_test(test_every_type_has_a_dlq),
        cmocka_unit_test(test_owners),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
