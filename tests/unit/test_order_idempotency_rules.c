/*
 * test_order_idempotency_rules.c - order-service's Idempotency-Key rules, no
 * server: the header's check (1..255 visible ASCII bytes, else the header is
 * named), the canonical form of a request that a replay is compared by (equal
 * after validation: amounts by value, the currency's default; different for a
 * different customer, currency, line, quantity, price or line order), and the
 * ORDER_IDEMPOTENCY_TTL_HOURS setting (services/order-service/settings.c), and
 * the other setting read there, ORDER_BATCH_WAIT_MS.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "order-service/domain.h"
#include "order-service/settings.h"

/* ---- the header ---- */

static void key_ok(const char *key) {
    order_violation_t v;
    if (order_idempotency_key_check(key, &v) != DETA_OK)
        fail_msg("key \"%s\" refused: %s", key, v.message);
}

static void key_refused(const char *key, const char *why) {
    order_violation_t v;
    memset(&v, 0, sizeof v);
    assert_int_equal(order_idempotency_key_check(key, &v), DETA_ERR_INVALID);
    assert_string_equal(v.field, "Idempotency-Key");
    assert_string_equal(v.reason, "invalid_idempotency_key");
    if (!strstr(v.message, why))
        fail_msg("key refused with \"%s\", expected \"%s\"", v.message, why);
}

static void keys_of_visible_ascii_up_to_255_pass(void **state) {
    (void)state;
    char key[ORDER_IDEMPOTENCY_KEY_MAX + 2];
    key_ok("a");
    key_ok("!");
    key_ok("~");
    key_ok("0b5c4a2e-9a41-4c1e-8f0e-3f7a1d2c9b10");
    key_ok("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~");
    memset(key, 'k', ORDER_IDEMPOTENCY_KEY_MAX);
    key[ORDER_IDEMPOTENCY_KEY_MAX] = 0;
    key_ok(key);
}

static void other_keys_are_refused_naming_the_header(void **state) {
    (void)state;
    char key[ORDER_IDEMPOTENCY_KEY_MAX + 2];
    memset(key, 'k', ORDER_IDEMPOTENCY_KEY_MAX + 1);
    key[ORDER_IDEMPOTENCY_KEY_MAX + 1] = 0;
    key_refused(key, "at most 255");
    key_refused("", "empty");
    key_refused(NULL, "empty");
    key_refused("a b", "visible ASCII");
    key_refused(" ", "visible ASCII");
    key_refused("a\tb", "visible ASCII");
    key_refused("a\x01", "visible ASCII");
    key_refused("\x7f", "visible ASCII");
    key_refused("caf\xc3\xa9", "visible ASCII"); /* UTF-8 é */
    key_refused("\xff", "visible ASCII");
}

/* ---- the canonical form ---- */

/* The canonical form of a request body (which must validate); malloc'd. */
static char *canonical(const char *json) {
    json_error_t jerr;
    json_t *body = json_loads(json, 0, &jerr);
    if (!body)
        fail_msg("bad test JSON: %s: %s", jerr.text, json);
    order_t *o = malloc(sizeof *o);
    assert_non_null(o);
    order_violation_t v;
    if (order_from_request(body, o, &v) != DETA_OK)
        fail_msg("does not validate: %s %s: %s", v.field, v.message, json);
    json_decref(body);
    order_assign_identity(o, NULL); /* ids and instant are not part of the form */
    char *text = order_request_canonical(o);
    assert_non_null(text);
    free(o);
    return text;
}

static void same(const char *a, const char *b) {
    char *ca = canonical(a), *cb = canonical(b);
    if (strcmp(ca, cb) != 0)
        fail_msg("expected the same form:\n  %s -> %s\n  %s -> %s", a, ca, b, cb);
    free(ca);
    free(cb);
}

static void differ(const char *a, const char *b) {
    char *ca = canonical(a), *cb = canonical(b);
    if (strcmp(ca, cb) == 0)
        fail_msg("expected different forms, both %s:\n  %s\n  %s", ca, a, b);
    free(ca);
    free(cb);
}

#define LINE(id, q, p) "{\"itemId\":\"" id "\",\"quantity\":" #q ",\"unitPrice\":" p "}"
#define ORDER(cust, cur, lines) "{\"customerId\":\"" cust "\"" cur ",\"items\":[" lines "]}"
#define EUR ",\"currency\":\"EUR\""
#define USD ",\"currency\":\"USD\""

static void the_form_is_written_out_exactly(void **state) {
    (void)state;
    char *c = canonical(ORDER("c-1", , LINE("sku-1", 2, "\"9.99\"") "," LINE("sku-2", 1, "0.5")));
    assert_string_equal(c, "[\"order-request/1\",\"c-1\",\"USD\",[[\"sku-1\",2,999],"
                           "[\"sku-2\",1,50]]]");
    free(c);
    /* Quotes and non-ASCII text are escaped, so no value can pass for structure. */
    c = canonical(ORDER("a\\\",\\\"b", , LINE("\\u00e9", 1, "1")));
    assert_string_equal(c, "[\"order-request/1\",\"a\\\",\\\"b\",\"USD\",[[\"\\u00E9\",1,100]]]");
    free(c);
}

static void amounts_compare_by_value(void **state) {
    (void)state;
    same(ORDER("c", , LINE("a", 1, "\"9.9\"")), ORDER("c", , LINE("a", 1, "9.90")));
    same(ORDER("c", , LINE("a", 1, "\"9.90\"")), ORDER("c", , LINE("a", 1, "9.9")));
    same(ORDER("c", , LINE("a", 1, "\"10\"")), ORDER("c", , LINE("a", 1, "10.00")));
    same(ORDER("c", , LINE("a", 1, "0")), ORDER("c", , LINE("a", 1, "\"0.00\"")));
    differ(ORDER("c", , LINE("a", 1, "\"9.9\"")), ORDER("c", , LINE("a", 1, "\"9.09\"")));
}

static void currency_compares_after_its_default(void **state) {
    (void)state;
    same(ORDER("c", , LINE("a", 1, "1")), ORDER("c", USD, LINE("a", 1, "1")));
    differ(ORDER("c", , LINE("a", 1, "1")), ORDER("c", EUR, LINE("a", 1, "1")));
    differ(ORDER("c", USD, LINE("a", 1, "1")), ORDER("c", EUR, LINE("a", 1, "1")));
}

static void lines_compare_in_order(void **state) {
    (void)state;
    const char *ab = ORDER("c", , LINE("a", 1, "1") "," LINE("b", 2, "3"));
    const char *ba = ORDER("c", , LINE("b", 2, "3") "," LINE("a", 1, "1"));
    same(ab, ab);
    differ(ab, ba);
    /* Lines are kept as sent: one line of 2 is not two lines of 1. */
    differ(ORDER("c", , LINE("a", 2, "1")), ORDER("c", , LINE("a", 1, "1") "," LINE("a", 1, "1")));
}

static void every_other_difference_counts(void **state) {
    (void)state;
    const char *base = ORDER("c", , LINE("a", 1, "1"));
    differ(base, ORDER("d", , LINE("a", 1, "1")));
    differ(base, ORDER("c", , LINE("b", 1, "1")));
    differ(base, ORDER("c", , LINE("a", 2, "1")));
    differ(base, ORDER("c", , LINE("a", 1, "2")));
    differ(base, ORDER("c", , LINE("a", 1, "1") "," LINE("a", 1, "1")));
    /* What validation ignores, the form ignores: unknown fields, the key order. */
    same(base, "{\"items\":[{\"unitPrice\":1,\"quantity\":1,\"itemId\":\"a\",\"note\":\"x\"}],"
               "\"customerId\":\"c\",\"extra\":true}");
}

/* ---- the settings ---- */

static int clear_env(void **state) {
    (void)state;
    unsetenv(ORDER_IDEMPOTENCY_TTL_VAR);
    unsetenv(ORDER_BATCH_WAIT_VAR);
    return 0;
}

static void ttl_defaults_and_bounds(void **state) {
    (void)state;
    order_settings_t s;
    char err[256] = "";
    assert_int_equal(order_settings_load(&s, err, sizeof err), DETA_OK);
    assert_int_equal(s.idempotency_ttl_hours, 24);
    const char *good[] = {"1", "8760", "48"};
    const long want[] = {1, 8760, 48};
    for (size_t i = 0; i < 3; i++) {
        setenv(ORDER_IDEMPOTENCY_TTL_VAR, good[i], 1);
        assert_int_equal(order_settings_load(&s, err, sizeof err), DETA_OK);
        assert_int_equal(s.idempotency_ttl_hours, want[i]);
    }
    const char *bad[] = {"0", "8761", "-1", "24h", "abc", " 24"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        setenv(ORDER_IDEMPOTENCY_TTL_VAR, bad[i], 1);
        err[0] = 0;
        if (order_settings_load(&s, err, sizeof err) != DETA_ERR_INVALID)
            fail_msg("%s=\"%s\" accepted", ORDER_IDEMPOTENCY_TTL_VAR, bad[i]);
        assert_non_null(strstr(err, "ORDER_IDEMPOTENCY_TTL_HOURS"));
    }
}

static void batch_wait_defaults_and_bounds(void **state) {
    (void)state;
    order_settings_t s;
    char err[256] = "";
    assert_int_equal(order_settings_load(&s, err, sizeof err), DETA_OK);
    assert_int_equal(s.batch_wait_ms, 200);
    const char *good[] = {"0", "1000", "5"};
    const long want[] = {0, 1000, 5};
    for (size_t i = 0; i < 3; i++) {
        setenv(ORDER_BATCH_WAIT_VAR, good[i], 1);
        assert_int_equal(order_settings_load(&s, err, sizeof err), DETA_OK);
        assert_int_equal(s.batch_wait_ms, want[i]);
    }
    const char *bad[] = {"1001", "-1", "20ms", "x"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        setenv(ORDER_BATCH_WAIT_VAR, bad[i], 1);
        err[0] = 0;
        if (order_settings_load(&s, err, sizeof err) != DETA_ERR_INVALID)
            fail_msg("%s=\"%s\" accepted", ORDER_BATCH_WAIT_VAR, bad[i]);
        assert_non_null(strstr(err, "ORDER_BATCH_WAIT_MS"));
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(keys_of_visible_ascii_up_to_255_pass),
        cmocka_unit_test(other_keys_are_refused_naming_the_header),
        cmocka_unit_test(the_form_is_written_out_exactly),
        cmocka_unit_test(amounts_compare_by_value),
        cmocka_unit_test(currency_compares_after_its_default),
        cmocka_unit_test(lines_compare_in_order),
        cmocka_unit_test(every_other_difference_counts),
        cmocka_unit_test_setup_teardown(ttl_defaults_and_bounds, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(batch_wait_defaults_and_bounds, clear_env, clear_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
