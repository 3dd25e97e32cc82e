/*
 * test_event_check.c - what a consumed message must be before a service acts
 * on it (lib/src/event_check.c): the producer rule (each raw topic's events
 * come from its owner, docs/contracts.md#topics-and-event-types) and the three
 * checks together on a message (envelope, key, producer), in that order.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "deta/event_check.h"
#include "deta/topics.h"
#include "deta_services.h"

#define ORDER "8d3c9a52-0c4e-4d0e-9b6f-2f0c7d3e5a10"

static void test_owner_passes(void **state) {
    (void)state;
    const char *const pairs[][2] = {
        {DETA_TOPIC_ORDER_EVENTS, "order-service"},
        {DETA_TOPIC_INVENTORY_EVENTS, "inventory-service"},
        {DETA_TOPIC_PAYMENT_EVENTS, "payment-service"},
        {DETA_TOPIC_DELIVERY_EVENTS, "delivery-service"},
        {DETA_TOPIC_ETA_EVENTS, "delivery-service"},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof *pairs; i++) {
        char why[256] = "";
        assert_int_equal(deta_event_producer_check(pairs[i][0], pairs[i][1], why, sizeof why),
                         DETA_OK);
        assert_string_equal(why, "");
    }
}

static void test_another_producer_is_refused(void **state) {
    (void)state;
    char why[256] = "";
    assert_int_equal(
        deta_event_producer_check(DETA_TOPIC_PAYMENT_EVENTS, "order-service", why, sizeof why),
        DETA_ERR_INVALID);
    assert_string_equal(why, "producer \"order-service\" does not own raw.payment-events (its "
                             "owner is payment-service)");
    /* Every other service, on every raw topic it does not own. */
    const char *const services[] = {"order-service", "inventory-service", "payment-service",
                                    "delivery-service", "query-api"};
    for (size_t t = 0; t < DETA_TOPICS_RAW_COUNT; t++) {
        const char *owner = deta_topic_owner(deta_topics_all[t]);
        for (size_t s = 0; s < sizeof services / sizeof *services; s++)
            if (strcmp(services[s], owner) != 0)
                assert_int_equal(deta_event_producer_check(deta_topics_all[t], services[s], NULL,
                                                           0),
                                 DETA_ERR_INVALID);
    }
}

/* Exact names: an instance id, another case, a prefix or an empty name is not
 * the owner. */
static void test_match_is_exact(void **state) {
    (void)state;
    const char *const near[] = {"payment-service-4242", "Payment-Service", "payment",
                                "payment-service ", "", NULL};
    for (size_t i = 0; i < sizeof near / sizeof *near; i++)
        assert_int_equal(
            deta_event_producer_check(DETA_TOPIC_PAYMENT_EVENTS, near[i], NULL, 0),
            DETA_ERR_INVALID);
}

/* Topics without an owner (dead-letter twins, a test's own topics): nothing to
 * compare with. */
static void test_topics_without_owner_pass(void **state) {
    (void)state;
    const char *const topics[] = {DETA_TOPIC_DLQ_PAYMENT_EVENTS, "raw.it-kafka-1234", "other",
                                  NULL};
    for (size_t i = 0; i < sizeof topics / sizeof *topics; i++)
        assert_int_equal(deta_event_producer_check(topics[i], "anyone", NULL, 0), DETA_OK);
}

/* The owners are services of services/services.tsv. */
static void test_owners_are_services(void **state) {
    (void)state;
    static const deta_service_def_t defs[] = DETA_SERVICES;
    for (size_t t = 0; t < DETA_TOPICS_RAW_COUNT; t++) {
        const char *owner = deta_topic_owner(deta_topics_all[t]);
        assert_non_null(owner);
        bool found = false;
        for (size_t i = 0; i < sizeof defs / sizeof *defs; i++)
            found = found || strcmp(defs[i].name, owner) == 0;
        if (!found)
            fail_msg("%s's owner %s is no service", deta_topics_all[t], owner);
    }
    for (size_t t = DETA_TOPICS_RAW_COUNT; t < DETA_TOPICS_COUNT; t++)
        assert_null(deta_topic_owner(deta_topics_all[t]));
}

/* A serialized event of type for ORDER written by producer, of schemaVersion version. */
static char *event_text(const char *type, const char *producer, int version) {
    deta_event_t ev;
    assert_int_equal(deta_event_init(&ev, type, ORDER, ORDER, producer, json_object(), NULL, 0),
                     DETA_OK);
    assert_int_equal(ev.schema_version, DETA_SCHEMA_VERSION);
    ev.schema_version = version;
    char *text = deta_event_serialize(&ev);
    deta_event_clear(&ev);
    assert_non_null(text);
    return text;
}

/* A serialized payment.authorized for ORDER written by producer. */
static char *authorized_by(const char *producer) {
    return event_text(DETA_EVT_PAYMENT_AUTHORIZED, producer, DETA_SCHEMA_VERSION);
}

static deta_err_t from_msg(const char *topic, const char *key, const char *value, bool *parsed,
                           char *why, size_t whysize) {
    deta_kafka_msg_t m = {.topic = topic,
                          .key = key,
                          .key_len = key ? strlen(key) : 0,
                          .value = value,
                          .len = strlen(value)};
    deta_event_t ev;
    deta_err_t err = deta_event_from_msg(&m, &ev, parsed, why, whysize);
    if (*parsed)
        deta_event_clear(&ev);
    return err;
}

static void test_message_checks_in_order(void **state) {
    (void)state;
    char why[256] = "";
    bool parsed = true;
    assert_int_equal(from_msg(DETA_TOPIC_PAYMENT_EVENTS, ORDER, "{", &parsed, why, sizeof why),
                     DETA_ERR_INVALID);
    assert_false(parsed);
    assert_memory_equal(why, "malformed event: ", strlen("malformed event: "));

    char *forged = authorized_by("order-service");
    /* A wrong key is named before the producer. */
    assert_int_equal(from_msg(DETA_TOPIC_PAYMENT_EVENTS, "other", forged, &parsed, why, sizeof why),
                     DETA_ERR_INVALID);
    assert_true(parsed);
    assert_string_equal(why, "message key does not match orderId " ORDER);
    assert_int_equal(from_msg(DETA_TOPIC_PAYMENT_EVENTS, ORDER, forged, &parsed, why, sizeof why),
                     DETA_ERR_INVALID);
    assert_true(parsed);
    assert_string_equal(why, "producer \"order-service\" does not own raw.payment-events (its "
                             "owner is payment-service)");
    free(forged);

    char *real = authorized_by("payment-service");
    why[0] = '\0';
    assert_int_equal(from_msg(DETA_TOPIC_PAYMENT_EVENTS, ORDER, real, &parsed, why, sizeof why),
                     DETA_OK);
    assert_true(parsed);
    assert_string_equal(why, "");
    free(real);
}

/* Every type the system knows is read up to the version its producers write;
 * an unknown type has none. */
static void test_versions_known(void **state) {
    (void)state;
    size_t n = 0;
    for (const char *t; (t = deta_event_type_at(n)) != NULL; n++)
        assert_int_equal(deta_event_type_version(t), DETA_SCHEMA_VERSION);
    assert_true(n > 20);
    assert_int_equal(deta_event_type_version("order.craeted"), 0);
    assert_int_equal(deta_event_type_version(NULL), 0);
}

/* Step 4: a newer version than this build reads is refused, named; the version
 * it reads and older ones pass; a type it does not know is not judged. */
static void test_newer_version_is_refused(void **state) {
    (void)state;
    char why[256] = "";
    bool parsed = false;
    const int newer[] = {DETA_SCHEMA_VERSION + 1, 7, 1000, 2147483647};
    for (size_t i = 0; i < sizeof newer / sizeof *newer; i++) {
        char *v = event_text(DETA_EVT_PAYMENT_AUTHORIZED, "payment-service", newer[i]);
        assert_int_equal(from_msg(DETA_TOPIC_PAYMENT_EVENTS, ORDER, v, &parsed, why, sizeof why),
                         DETA_ERR_INVALID);
        assert_true(parsed);
        char want[160];
        snprintf(want, sizeof want,
                 "schemaVersion %d of payment.authorized is newer than this consumer reads (%d)",
                 newer[i], DETA_SCHEMA_VERSION);
        assert_string_equal(why, want);
        free(v);
    }
    /* The producer is judged first: a forged event of a newer version says so. */
    char *forged = event_text(DETA_EVT_PAYMENT_AUTHORIZED, "order-service", 2);
    assert_int_equal(from_msg(DETA_TOPIC_PAYMENT_EVENTS, ORDER, forged, &parsed, why, sizeof why),
                     DETA_ERR_INVALID);
    assert_non_null(strstr(why, "does not own"));
    free(forged);

    char *unknown = event_text("payment.invented", "payment-service", 9);
    why[0] = '\0';
    assert_int_equal(from_msg(DETA_TOPIC_PAYMENT_EVENTS, ORDER, unknown, &parsed, why, sizeof why),
                     DETA_OK);
    assert_string_equal(why, "");
    free(unknown);

    deta_event_t ev = {.schema_version = DETA_SCHEMA_VERSION};
    snprintf(ev.event_type, sizeof ev.event_type, "%s", DETA_EVT_ORDER_CREATED);
    assert_int_equal(deta_event_version_check(&ev, why, sizeof why), DETA_OK);
    ev.schema_version = DETA_SCHEMA_VERSION + 1;
    assert_int_equal(deta_event_version_check(&ev, why, sizeof why), DETA_ERR_INVALID);
    assert_non_null(strstr(why, "of order.created is newer"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_owner_passes),
        cmocka_unit_test(test_another_producer_is_refused),
        cmocka_unit_test(test_match_is_exact),
        cmocka_unit_test(test_topics_without_owner_pass),
        cmocka_unit_test(test_owners_are_services),
        cmocka_unit_test(test_message_checks_in_order),
        cmocka_unit_test(test_versions_known),
        cmocka_unit_test(test_newer_version_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
