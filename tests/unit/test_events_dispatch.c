/*
 * test_events_dispatch.c - the idempotent dispatcher (deta/events.h,
 * lib/src/events.c) up to its transaction: a malformed envelope, a key that is
 * not the envelope's orderId and a producer that does not own the message's
 * topic (deta/event_check.h) are refused for good, a type without a route is
 * skipped, each counted by deta_events_total; a routed event goes no further
 * than its transaction, which fails TRANSIENT when Postgres cannot be reached,
 * handler not called. A batch reports each message's refusal and records no
 * metric unless it committed; a batch with nothing to apply (refused or ignored
 * messages only) needs no transaction, so it succeeds with Postgres unreachable.
 * All of it alike with and without the claim
 * (deta_event_dispatch_opts_t.own_key): the handler of a dispatch without claim
 * runs inside the transaction too, never before it. What own_key changes inside
 * the transaction (no claim; the handler's CONFLICT a duplicate, rolled back)
 * needs Postgres: integration.test_query_api checks it through query-api.
 *
 * No server: the service is made with addresses where nothing listens (Postgres
 * and the broker on port 1, refused at once; nothing is started), so the only
 * database step the dispatcher takes, BEGIN, fails as an outage does.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "deta/events.h"
#include "deta/topics.h"

#define ORDER "5b1e7c2a-0f3d-4c1e-9a7b-2d6e8f0a1b3c"

typedef struct fixture {
    deta_service_t *svc;
    deta_event_dispatch_t *d;
    int calls; /* of the route's handler */
} fixture_t;

static deta_err_t on_created(deta_db_t *db, const deta_event_t *ev, void *opaque, char *errstr,
                             size_t errsize) {
    (void)db, (void)ev, (void)errstr, (void)errsize;
    ((fixture_t *)opaque)->calls++;
    return DETA_OK;
}

/* The route's payload check: a payload with "refuse" is refused for good. */
static deta_err_t check_created(const deta_event_t *ev, char *errstr, size_t errsize) {
    if (json_object_get(ev->payload, "refuse"))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "refuse is not allowed");
    return DETA_OK;
}

static const deta_event_route_t routes[] = {
    {DETA_EVT_ORDER_CREATED, on_created, check_created}};

static const deta_service_def_t self = {"unit-events", 0, NULL};

static int setup_with(void **state, const deta_event_dispatch_opts_t *opts) {
    setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1", 1);
    setenv("PGHOST", "127.0.0.1", 1);
    setenv("PGPORT", "1", 1);
    setenv("LOG_LEVEL", "error", 1);
    fixture_t *f = calloc(1, sizeof *f);
    char why[256] = "";
    f->svc = deta_service_new(&self, why, sizeof why);
    if (!f->svc) {
        fprintf(stderr, "deta_service_new: %s\n", why);
        free(f);
        return -1;
    }
    f->d = deta_event_dispatch_new_opts(f->svc, routes, 1, f, opts);
    *state = f;
    return f->d ? 0 : -1;
}

static int setup(void **state) { return setup_with(state, NULL); }

/* A dispatch without the claim: every step before the transaction is the same. */
static int setup_own_key(void **state) {
    const deta_event_dispatch_opts_t opts = {.own_key = true};
    return setup_with(state, &opts);
}

static int teardown(void **state) {
    fixture_t *f = *state;
    deta_event_dispatch_free(f->d);
    deta_service_free(f->svc);
    free(f);
    return 0;
}

/* deta_events_total{type,outcome} now. */
static double counted(fixture_t *f, const char *type, const char *outcome) {
    char labels[160];
    snprintf(labels, sizeof labels, "type=\"%s\",outcome=\"%s\"", type, outcome);
    return deta_counter_value(deta_counter(deta_service_metrics(f->svc), "deta_events_total",
                                           "Events consumed, by type and outcome", labels));
}

/* A valid envelope of type for ORDER written by producer, with payload (taken;
 * NULL: an empty object), serialized (to free). */
static char *envelope_with(const char *type, const char *producer, json_t *payload) {
    deta_event_t ev;
    char why[256];
    assert_int_equal(deta_event_init(&ev, type, ORDER, ORDER, producer,
                                     payload ? payload : json_object(), why, sizeof why),
                     DETA_OK);
    char *text = deta_event_serialize(&ev);
    deta_event_clear(&ev);
    assert_non_null(text);
    return text;
}

static char *envelope_by(const char *type, const char *producer) {
    return envelope_with(type, producer, NULL);
}

/* An order.created whose payload the route's check refuses. */
static char *refused_envelope(void) {
    return envelope_with(DETA_EVT_ORDER_CREATED, "order-service", json_pack("{s:b}", "refuse", 1));
}

/* The same by the owner of the topic the tests' messages are on. */
static char *envelope(const char *type) { return envelope_by(type, "order-service"); }

static deta_kafka_msg_t message(const char *key, const char *value) {
    return (deta_kafka_msg_t){.topic = DETA_TOPIC_ORDER_EVENTS,
                              .key = key,
                              .key_len = key ? strlen(key) : 0,
                              .value = value,
                              .len = strlen(value)};
}

/* Dispatches a valid envelope of type for ORDER under key. */
static deta_err_t dispatch_envelope(fixture_t *f, const char *type, const char *key, char *why,
                                    size_t whysize) {
    char *value = envelope(type);
    deta_kafka_msg_t m = message(key, value);
    deta_err_t err = deta_event_dispatch(&m, f->d, why, whysize);
    free(value);
    return err;
}

static void test_malformed_is_refused(void **state) {
    fixture_t *f = *state;
    deta_kafka_msg_t m = message(ORDER, "{\"eventType\":");
    char why[256] = "";
    assert_int_equal(deta_event_dispatch(&m, f->d, why, sizeof why), DETA_ERR_INVALID);
    assert_memory_equal(why, "malformed event: ", strlen("malformed event: "));
    assert_int_equal(f->calls, 0);
    assert_true(counted(f, "unparsable", "failed") == 1);
}

static void test_key_must_be_the_order_id(void **state) {
    fixture_t *f = *state;
    const char *keys[] = {"another-order", NULL, ORDER "x"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        char why[256] = "";
        assert_int_equal(dispatch_envelope(f, DETA_EVT_ORDER_CREATED, keys[i], why, sizeof why),
                         DETA_ERR_INVALID);
        assert_string_equal(why, "message key does not match orderId " ORDER);
    }
    assert_int_equal(f->calls, 0);
    assert_true(counted(f, DETA_EVT_ORDER_CREATED, "failed") == 3);
}

/* An event on raw.order-events that order-service did not write: refused
 * before any route or transaction, even for a type the service handles. */
static void test_producer_must_own_the_topic(void **state) {
    fixture_t *f = *state;
    const char *others[] = {"payment-service", "testsupport", "order-service-1234"};
    for (size_t i = 0; i < sizeof others / sizeof *others; i++) {
        char *value = envelope_by(DETA_EVT_ORDER_CREATED, others[i]);
        deta_kafka_msg_t m = message(ORDER, value);
        char why[256] = "", want[256];
        assert_int_equal(deta_event_dispatch(&m, f->d, why, sizeof why), DETA_ERR_INVALID);
        snprintf(want, sizeof want,
                 "producer \"%s\" does not own raw.order-events (its owner is order-service)",
                 others[i]);
        assert_string_equal(why, want);
        free(value);
    }
    assert_int_equal(f->calls, 0);
    assert_true(counted(f, DETA_EVT_ORDER_CREATED, "failed") == 3);
}

static void test_type_without_route_is_skipped(void **state) {
    fixture_t *f = *state;
    char why[256] = "";
    assert_int_equal(dispatch_envelope(f, DETA_EVT_INVENTORY_RELEASED, ORDER, why, sizeof why),
                     DETA_OK);
    assert_int_equal(f->calls, 0);
    assert_true(counted(f, DETA_EVT_INVENTORY_RELEASED, "ignored") == 1);
}

static void test_routed_event_waits_for_its_transaction(void **state) {
    fixture_t *f = *state;
    char why[256] = "";
    assert_int_equal(dispatch_envelope(f, DETA_EVT_ORDER_CREATED, ORDER, why, sizeof why),
                     DETA_ERR_TRANSIENT);
    assert_int_equal(f->calls, 0); /* no claim, no effects */
    assert_true(counted(f, DETA_EVT_ORDER_CREATED, "failed") == 1);
    assert_true(counted(f, DETA_EVT_ORDER_CREATED, "applied") == 0);
}

/* The route's check refuses the payload before any transaction: for good
 * (INVALID, not the TRANSIENT of the transaction Postgres would refuse), the
 * handler not called. */
static void test_route_check_refuses_before_the_transaction(void **state) {
    fixture_t *f = *state;
    char *value = refused_envelope();
    deta_kafka_msg_t m = message(ORDER, value);
    char why[256] = "";
    assert_int_equal(deta_event_dispatch(&m, f->d, why, sizeof why), DETA_ERR_INVALID);
    assert_string_equal(why, "refuse is not allowed");
    free(value);
    assert_int_equal(f->calls, 0);
    assert_true(counted(f, DETA_EVT_ORDER_CREATED, "failed") == 1);
}

/* The last message is routed, so the batch needs its transaction, which fails. */
static void test_batch_reports_each_refusal(void **state) {
    fixture_t *f = *state;
    char *created = envelope(DETA_EVT_ORDER_CREATED);
    char *released = envelope(DETA_EVT_INVENTORY_RELEASED);
    char *forged = envelope_by(DETA_EVT_ORDER_CREATED, "inventory-service");
    deta_kafka_msg_t msgs[] = {message(ORDER, "[]"), message("another-order", created),
                               message(ORDER, released), message(ORDER, forged),
                               message(ORDER, created)};
    deta_err_t results[5];
    char why[5][DETA_KAFKA_WHY_MAX];
    assert_int_equal(deta_event_dispatch_batch(msgs, 5, f->d, results, why), DETA_ERR_TRANSIENT);
    assert_int_equal(results[0], DETA_ERR_INVALID);
    assert_memory_equal(why[0], "malformed event: ", strlen("malformed event: "));
    assert_int_equal(results[1], DETA_ERR_INVALID);
    assert_string_equal(why[1], "message key does not match orderId " ORDER);
    assert_int_equal(results[2], DETA_OK);
    assert_string_equal(why[2], "");
    assert_int_equal(results[3], DETA_ERR_INVALID);
    assert_string_equal(why[3], "producer \"inventory-service\" does not own raw.order-events "
                                "(its owner is order-service)");
    assert_int_equal(results[4], DETA_OK); /* not refused: it waited for the transaction */
    free(forged);
    free(created);
    free(released);
    assert_int_equal(f->calls, 0);
    /* Not committed: nothing recorded (the messages go one at a time next). */
    assert_true(counted(f, "unparsable", "failed") == 0);
    assert_true(counted(f, DETA_EVT_ORDER_CREATED, "failed") == 0);
    assert_true(counted(f, DETA_EVT_INVENTORY_RELEASED, "ignored") == 0);
}

/* Nothing routed: no transaction is opened (none is needed; with a lock
 * timeout its SET LOCAL alone would be a round trip and a read-only
 * transaction), so Postgres being unreachable does not matter, and the batch's
 * outcomes are recorded as after a commit. */
static void test_batch_without_work_needs_no_transaction(void **state) {
    fixture_t *f = *state;
    char *released = envelope(DETA_EVT_INVENTORY_RELEASED);
    char *forged = envelope_by(DETA_EVT_ORDER_CREATED, "inventory-service");
    char *refused = refused_envelope();
    deta_kafka_msg_t msgs[] = {message(ORDER, "[]"), message(ORDER, released),
                               message(ORDER, forged), message(ORDER, released),
                               message(ORDER, refused)};
    deta_err_t results[5];
    char why[5][DETA_KAFKA_WHY_MAX];
    assert_int_equal(deta_event_dispatch_batch(msgs, 5, f->d, results, why), DETA_OK);
    assert_int_equal(results[0], DETA_ERR_INVALID);
    assert_int_equal(results[1], DETA_OK);
    assert_int_equal(results[2], DETA_ERR_INVALID);
    assert_int_equal(results[3], DETA_OK);
    assert_int_equal(results[4], DETA_ERR_INVALID); /* the route's check */
    assert_string_equal(why[4], "refuse is not allowed");
    assert_string_equal(why[1], "");
    free(refused);
    free(forged);
    free(released);
    assert_int_equal(f->calls, 0);
    assert_true(counted(f, "unparsable", "failed") == 1);
    assert_true(counted(f, DETA_EVT_ORDER_CREATED, "failed") == 2);
    assert_true(counted(f, DETA_EVT_INVENTORY_RELEASED, "ignored") == 2);
}

/* What an own_key handler returns (deta_event_own_result): its duplicate as
 * CONFLICT, a unique violation of its statements as INTERNAL (dead-lettered,
 * never taken for the duplicate), every other code as it was. */
static void test_own_result(void **state) {
    (void)state;
    assert_int_equal(deta_event_own_result(DETA_OK, false), DETA_OK);
    assert_int_equal(deta_event_own_result(DETA_OK, true), DETA_ERR_CONFLICT);
    assert_int_equal(deta_event_own_result(DETA_ERR_CONFLICT, false), DETA_ERR_INTERNAL);
    assert_int_equal(deta_event_own_result(DETA_ERR_CONFLICT, true), DETA_ERR_INTERNAL);
    assert_int_equal(deta_event_own_result(DETA_ERR_TRANSIENT, true), DETA_ERR_TRANSIENT);
    assert_int_equal(deta_event_own_result(DETA_ERR_INVALID, false), DETA_ERR_INVALID);
    assert_int_equal(deta_event_own_result(DETA_ERR_NOT_FOUND, false), DETA_ERR_NOT_FOUND);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_own_result),
        cmocka_unit_test_setup_teardown(test_malformed_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_must_be_the_order_id, setup, teardown),
        cmocka_unit_test_setup_teardown(test_producer_must_own_the_topic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_type_without_route_is_skipped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_routed_event_waits_for_its_transaction, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_route_check_refuses_before_the_transaction, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_batch_reports_each_refusal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_without_work_needs_no_transaction, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_malformed_is_refused, setup_own_key, teardown),
        cmocka_unit_test_setup_teardown(test_key_must_be_the_order_id, setup_own_key,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_producer_must_own_the_topic, setup_own_key,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_type_without_route_is_skipped, setup_own_key,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_routed_event_waits_for_its_transaction,
                                        setup_own_key, teardown),
        cmocka_unit_test_setup_teardown(test_route_check_refuses_before_the_transaction,
                                        setup_own_key, teardown),
        cmocka_unit_test_setup_teardown(test_batch_reports_each_refusal, setup_own_key,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_batch_without_work_needs_no_transaction,
                                        setup_own_key, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
