/*
 * test_client_retry.c - the clients' retry decisions (lib/client/src/retry.c):
 * the backoff schedule, idempotency keys, what each answer means, the header
 * lookup, and the end states the clients wait for (orders.c). No server.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "deta/client_orders.h"
#include "deta/client_retry.h"

static void test_backoff_doubles_to_its_cap(void **state) {
    (void)state;
    deta_retry_policy_t p = deta_retry_policy_default();
    p.first_backoff_ms = 100;
    p.max_backoff_ms = 1000;
    /* random 0: no jitter taken off, the whole pause */
    assert_int_equal(deta_retry_backoff_ms(&p, 1, 0), 0);
    assert_int_equal(deta_retry_backoff_ms(&p, 2, 0), 100);
    assert_int_equal(deta_retry_backoff_ms(&p, 3, 0), 200);
    assert_int_equal(deta_retry_backoff_ms(&p, 4, 0), 400);
    assert_int_equal(deta_retry_backoff_ms(&p, 5, 0), 800);
    assert_int_equal(deta_retry_backoff_ms(&p, 6, 0), 1000);
    assert_int_equal(deta_retry_backoff_ms(&p, 1000000, 0), 1000); /* no overflow */
}

static void test_backoff_jitter_keeps_at_least_half(void **state) {
    (void)state;
    deta_retry_policy_t p = deta_retry_policy_default();
    p.first_backoff_ms = 100;
    p.max_backoff_ms = 2000;
    for (uint64_t r = 0; r < 5000; r += 7) {
        long w = deta_retry_backoff_ms(&p, 4, r * 0x9E3779B97F4A7C15ULL);
        assert_true(w >= 200 && w <= 400);
    }
    assert_int_equal(deta_retry_backoff_ms(&p, 4, 200), 200); /* 200 % 201: all of the half */
}

static void test_default_policy_is_bounded(void **state) {
    (void)state;
    deta_retry_policy_t p = deta_retry_policy_default();
    assert_true(p.max_attempts > 1);
    assert_true(p.deadline_ms > 0 && p.request_timeout_ms > 0);
    assert_true(p.first_backoff_ms > 0 && p.first_backoff_ms <= p.max_backoff_ms);
}

static void test_keys_are_version_4_uuids(void **state) {
    (void)state;
    uint8_t zero[16] = {0}, ones[16];
    memset(ones, 0xff, sizeof ones);
    char k[DETA_KEY_UUID_LEN + 1];
    deta_idempotency_key_format(zero, k);
    assert_string_equal(k, "00000000-0000-4000-8000-000000000000");
    deta_idempotency_key_format(ones, k);
    assert_string_equal(k, "ffffffff-ffff-4fff-bfff-ffffffffffff");
    char a[DETA_KEY_UUID_LEN + 1], b[DETA_KEY_UUID_LEN + 1];
    assert_true(deta_idempotency_key_new(a));
    assert_true(deta_idempotency_key_new(b));
    assert_int_equal(strlen(a), 36);
    assert_int_equal(a[14], '4');
    assert_string_not_equal(a, b);
    assert_true(deta_idempotency_key_valid(a));
}

static void test_key_validity_is_the_contracts(void **state) {
    (void)state;
    char longest[256], too_long[257];
    memset(longest, '~', 255);
    longest[255] = '\0';
    memset(too_long, '!', 256);
    too_long[256] = '\0';
    assert_true(deta_idempotency_key_valid("k"));
    assert_true(deta_idempotency_key_valid(longest));
    assert_false(deta_idempotency_key_valid(too_long));
    assert_false(deta_idempotency_key_valid(""));
    assert_false(deta_idempotency_key_valid(NULL));
    assert_false(deta_idempotency_key_valid("a b"));
    assert_false(deta_idempotency_key_valid("a\tb"));
    assert_false(deta_idempotency_key_valid("caf\xc3\xa9"));
    assert_false(deta_idempotency_key_valid("a\x7f"));
}

static void test_create_outcomes(void **state) {
    (void)state;
    assert_int_equal(deta_outcome_of_create(true, 201), DETA_OUTCOME_CREATED);
    assert_int_equal(deta_outcome_of_create(true, 200), DETA_OUTCOME_REPLAYED);
    assert_int_equal(deta_outcome_of_create(true, 422), DETA_OUTCOME_KEY_REUSED);
    assert_int_equal(deta_outcome_of_create(true, 400), DETA_OUTCOME_INVALID);
    assert_int_equal(deta_outcome_of_create(true, 415), DETA_OUTCOME_INVALID);
    assert_int_equal(deta_outcome_of_create(true, 404), DETA_OUTCOME_NOT_FOUND);
    assert_int_equal(deta_outcome_of_create(true, 500), DETA_OUTCOME_TRANSIENT);
    assert_int_equal(deta_outcome_of_create(true, 503), DETA_OUTCOME_TRANSIENT);
    assert_int_equal(deta_outcome_of_create(true, 429), DETA_OUTCOME_TRANSIENT);
    assert_int_equal(deta_outcome_of_create(true, 408), DETA_OUTCOME_TRANSIENT);
    assert_int_equal(deta_outcome_of_create(false, 0), DETA_OUTCOME_TRANSIENT);
    assert_false(deta_outcome_final(DETA_OUTCOME_TRANSIENT));
    assert_true(deta_outcome_final(DETA_OUTCOME_REPLAYED));
    assert_true(deta_outcome_final(DETA_OUTCOME_INVALID));
}

static void test_cancel_outcomes(void **state) {
    (void)state;
    assert_int_equal(deta_outcome_of_cancel(true, 202), DETA_OUTCOME_REQUESTED);
    assert_int_equal(deta_outcome_of_cancel(true, 200), DETA_OUTCOME_CANCELLED);
    assert_int_equal(deta_outcome_of_cancel(true, 409), DETA_OUTCOME_REFUSED);
    assert_int_equal(deta_outcome_of_cancel(true, 404), DETA_OUTCOME_NOT_FOUND);
    assert_int_equal(deta_outcome_of_cancel(true, 400), DETA_OUTCOME_INVALID);
    assert_int_equal(deta_outcome_of_cancel(true, 502), DETA_OUTCOME_TRANSIENT);
    assert_int_equal(deta_outcome_of_cancel(false, 0), DETA_OUTCOME_TRANSIENT);
    assert_string_equal(deta_outcome_name(DETA_OUTCOME_REFUSED), "refused");
    assert_string_equal(deta_outcome_name(DETA_OUTCOME_COUNT), "?");
}

static void test_header_lookup(void **state) {
    (void)state;
    const char *h = "HTTP/1.1 100 Continue\r\n\r\n"
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    "idempotent-replayed:   true \r\nX-Other: 1\r\n\r\n";
    char v[32];
    assert_true(deta_client_header(h, "Idempotent-Replayed", v, sizeof v));
    assert_string_equal(v, "true");
    assert_true(deta_client_header(h, "content-type", v, sizeof v));
    assert_string_equal(v, "application/json");
    assert_false(deta_client_header(h, "Idempotent", v, sizeof v));
    assert_false(deta_client_header(NULL, "X-Other", v, sizeof v));
    assert_false(deta_client_header("", "X-Other", v, sizeof v));
}

static void test_cancelled_is_an_end_state_not_a_failure(void **state) {
    (void)state;
    assert_true(deta_order_is_end_state("CANCELLED"));
    assert_true(deta_order_is_end_state("DELIVERED"));
    assert_false(deta_order_is_end_state("PICKED_UP"));
    assert_false(deta_order_is_failed("CANCELLED"));
    assert_true(deta_order_is_failed("PAYMENT_FAILED"));
    assert_true(deta_order_is_failed("INVENTORY_REJECTED"));
    assert_false(deta_order_reached("CANCELLED", "CREATED"));
    assert_string_equal(deta_order_end_states[DETA_ORDER_END_STATES - 1], "CANCELLED");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backoff_doubles_to_its_cap),
        cmocka_unit_test(test_backoff_jitter_keeps_at_least_half),
        cmocka_unit_test(test_default_policy_is_bounded),
        cmocka_unit_test(test_keys_are_version_4_uuids),
        cmocka_unit_test(test_key_validity_is_the_contracts),
        cmocka_unit_test(test_create_outcomes),
        cmocka_unit_test(test_cancel_outcomes),
        cmocka_unit_test(test_header_lookup),
        cmocka_unit_test(test_cancelled_is_an_end_state_not_a_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
