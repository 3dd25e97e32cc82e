/*
 * test_money.c - exact money: parsing, formatting, checked arithmetic, JSON input
 * and currency codes (lib/src/money.c).
 *
 * Decisions pinned here: ".5" and "1." are rejected (the text form needs digits
 * on both sides of the point); leading zeros are accepted; "-0" is zero.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "deta/money.h"

/* Parses s, asserting success, and returns the minor units. */
static deta_money_t parse_ok(const char *s) {
    deta_money_t m = -1;
    char err[128] = "";
    deta_err_t rc = deta_money_parse(s, &m, err, sizeof err);
    if (rc != DETA_OK)
        fail_msg("\"%s\" rejected: %s", s, err);
    return m;
}

/* Asserts that s is rejected with a message containing `why`, leaving *out alone. */
static void parse_bad(const char *s, const char *why) {
    deta_money_t m = 4242;
    char err[128] = "";
    deta_err_t rc = deta_money_parse(s, &m, err, sizeof err);
    if (rc != DETA_ERR_INVALID)
        fail_msg("\"%s\" accepted as %lld", s ? s : "(null)", (long long)m);
    assert_int_equal(m, 4242);
    if (!strstr(err, why))
        fail_msg("\"%s\": errstr \"%s\" lacks \"%s\"", s ? s : "(null)", err, why);
}

static void test_parse_accepts_text_form(void **state) {
    (void)state;
    assert_int_equal(parse_ok("0"), 0);
    assert_int_equal(parse_ok("12"), 1200);
    assert_int_equal(parse_ok("12.3"), 1230);
    assert_int_equal(parse_ok("12.34"), 1234);
    assert_int_equal(parse_ok("12.30"), 1230);
    assert_int_equal(parse_ok("-0.05"), -5);
    assert_int_equal(parse_ok("-12.34"), -1234);
    assert_int_equal(parse_ok("007.10"), 710);
    assert_int_equal(parse_ok("0.01"), 1);
    assert_int_equal(parse_ok("-0"), 0);
    assert_int_equal(parse_ok("0.00"), 0);
}

static void test_parse_accepts_limits(void **state) {
    (void)state;
    assert_int_equal(parse_ok("9999999999999.99"), DETA_MONEY_MAX);
    assert_int_equal(parse_ok("-9999999999999.99"), -DETA_MONEY_MAX);
    assert_int_equal(parse_ok("0000000000000000000000001.00"), 100);
}

static void test_parse_rejects_malformed(void **state) {
    (void)state;
    parse_bad("", "empty");
    parse_bad(NULL, "empty");
    const char *malformed[] = {"1e3",  "+1",   " 1",  "1 ",    "abc",  "--1", "-",
                               "1.",   ".5",   "-.5", "1..2",  "1.2.3", "0x10", "1,5",
                               "12.3a", "\xd9\xa1\xd9\xa2",  "1.-1", "- 1",  "\t1",  "inf", "nan"};
    for (size_t i = 0; i < sizeof malformed / sizeof malformed[0]; i++)
        parse_bad(malformed[i], "is not a decimal number");
}

static void test_parse_rejects_more_than_two_decimals(void **state) {
    (void)state;
    parse_bad("12.345", "has more than two decimals");
    parse_bad("12.340", "has more than two decimals");
    parse_bad("-0.001", "has more than two decimals");
}

static void test_parse_rejects_out_of_range(void **state) {
    (void)state;
    parse_bad("10000000000000.00", "is out of range");
    parse_bad("-10000000000000", "is out of range");
    parse_bad("99999999999999999999999999999", "is out of range");
}

static void test_parse_without_errstr(void **state) {
    (void)state;
    deta_money_t m;
    assert_int_equal(deta_money_parse("x", &m, NULL, 0), DETA_ERR_INVALID);
    assert_int_equal(deta_money_parse("1.5", &m, NULL, 0), DETA_OK);
    assert_int_equal(m, 150);
}

static void assert_formats(deta_money_t m, const char *want) {
    char buf[DETA_MONEY_STRLEN];
    assert_string_equal(deta_money_format(m, buf), want);
}

static void test_format(void **state) {
    (void)state;
    assert_formats(0, "0.00");
    assert_formats(1, "0.01");
    assert_formats(-5, "-0.05");
    assert_formats(1230, "12.30");
    assert_formats(-1234, "-12.34");
    assert_formats(DETA_MONEY_MAX, "9999999999999.99");
    assert_formats(-DETA_MONEY_MAX, "-9999999999999.99");
    assert_formats(INT64_MIN, "-92233720368547758.08");
    assert_formats(INT64_MAX, "92233720368547758.07");
}

static void test_format_parse_round_trip(void **state) {
    (void)state;
    const deta_money_t values[] = {0, 1, -1, 9, 10, 99, 100, 101, 123456, -98765,
                                   DETA_MONEY_MAX, -DETA_MONEY_MAX};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        char buf[DETA_MONEY_STRLEN];
        assert_int_equal(parse_ok(deta_money_format(values[i], buf)), values[i]);
    }
}

static void test_add(void **state) {
    (void)state;
    deta_money_t r = 7;
    assert_true(deta_money_add(1234, 66, &r));
    assert_int_equal(r, 1300);
    assert_true(deta_money_add(-5, 5, &r));
    assert_int_equal(r, 0);
    assert_true(deta_money_add(DETA_MONEY_MAX - 1, 1, &r));
    assert_int_equal(r, DETA_MONEY_MAX);

    r = 7;
    assert_false(deta_money_add(DETA_MONEY_MAX, 1, &r));
    assert_false(deta_money_add(-DETA_MONEY_MAX, -1, &r));
    assert_false(deta_money_add(INT64_MAX, 1, &r));
    assert_false(deta_money_add(INT64_MIN, -1, &r));
    assert_int_equal(r, 7);
}

static void test_mul(void **state) {
    (void)state;
    deta_money_t r = 7;
    assert_true(deta_money_mul(1234, 3, &r));
    assert_int_equal(r, 3702);
    assert_true(deta_money_mul(1234, 0, &r));
    assert_int_equal(r, 0);
    assert_true(deta_money_mul(-5, 2, &r));
    assert_int_equal(r, -10);
    assert_true(deta_money_mul(DETA_MONEY_MAX, 1, &r));
    assert_int_equal(r, DETA_MONEY_MAX);

    r = 7;
    assert_false(deta_money_mul(DETA_MONEY_MAX, 2, &r));
    assert_false(deta_money_mul(100000000, 100000000, &r)); /* 10^16: above the max */
    assert_false(deta_money_mul(INT64_MAX, 2, &r));          /* int64 overflow */
    assert_false(deta_money_mul(INT64_MIN, -1, &r));
    assert_int_equal(r, 7);
}

/* deta_money_from_json on a value built by decoding `text`. */
static deta_err_t from_json_text(const char *text, deta_money_t *m, char *err, size_t errsize) {
    json_error_t jerr;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &jerr);
    if (!v)
        fail_msg("test JSON \"%s\" does not decode: %s", text, jerr.text);
    deta_err_t rc = deta_money_from_json(v, m, err, errsize);
    json_decref(v);
    return rc;
}

static void json_ok(const char *text, deta_money_t want) {
    deta_money_t m = -1;
    char err[128] = "";
    if (from_json_text(text, &m, err, sizeof err) != DETA_OK)
        fail_msg("JSON %s rejected: %s", text, err);
    assert_int_equal(m, want);
}

static void json_bad(const char *text, const char *why) {
    deta_money_t m = 4242;
    char err[128] = "";
    if (from_json_text(text, &m, err, sizeof err) != DETA_ERR_INVALID)
        fail_msg("JSON %s accepted as %lld", text, (long long)m);
    assert_int_equal(m, 4242);
    if (!strstr(err, why))
        fail_msg("JSON %s: errstr \"%s\" lacks \"%s\"", text, err, why);
}

static void test_json_strings(void **state) {
    (void)state;
    json_ok("\"12.30\"", 1230);
    json_ok("\"-0.05\"", -5);
    json_bad("\"12.345\"", "has more than two decimals");
    json_bad("\"\"", "empty");
    json_bad("\"1e3\"", "is not a decimal number");

    /* A string with an embedded NUL must not be read as its prefix "1". */
    json_t *v = json_stringn("1\0" "2", 3);
    assert_non_null(v);
    deta_money_t m = 4242;
    char err[128] = "";
    assert_int_equal(deta_money_from_json(v, &m, err, sizeof err), DETA_ERR_INVALID);
    assert_int_equal(m, 4242);
    assert_non_null(strstr(err, "is not a decimal number"));
    json_decref(v);
}

static void test_json_numbers(void **state) {
    (void)state;
    json_ok("12.34", 1234);
    json_ok("0.1", 10);
    json_ok("0.29", 29); /* 0.29 * 100 is 28.999999999999996 as a double */
    json_ok("1.005e1", 1005);
    json_ok("-0.05", -5);
    json_ok("12.0", 1200);
    json_ok("9999999999999.99", DETA_MONEY_MAX);
    json_ok("5", 500);
    json_ok("-7", -700);
    json_ok("9999999999999", 999999999999900);
    json_bad("12.345", "has more than two decimals");
    json_bad("0.001", "has more than two decimals");
    json_bad("1e20", "is out of range");
    json_bad("-1e20", "is out of range");
    json_bad("1e300", "is out of range");
    json_bad("10000000000000", "is out of range");
    json_bad("10000000000000.0", "is out of range");
    json_bad("9223372036854775807", "is out of range");
}

static void test_json_other_types(void **state) {
    (void)state;
    json_bad("true", "must be a decimal string");
    json_bad("false", "must be a decimal string");
    json_bad("null", "must be a decimal string");
    json_bad("[1]", "must be a decimal string");
    json_bad("{\"amount\":\"1.00\"}", "must be a decimal string");
    deta_money_t m = 4242;
    assert_int_equal(deta_money_from_json(NULL, &m, NULL, 0), DETA_ERR_INVALID);
    assert_int_equal(m, 4242);
}

static void test_json_non_finite_real(void **state) {
    (void)state;
    /* jansson refuses to build NaN or infinity, so test the nearest: huge. */
    json_t *v = json_real(1.7e308);
    deta_money_t m = 4242;
    assert_int_equal(deta_money_from_json(v, &m, NULL, 0), DETA_ERR_INVALID);
    assert_int_equal(m, 4242);
    json_decref(v);
}

static void test_currency(void **state) {
    (void)state;
    assert_true(deta_currency_valid("USD"));
    assert_true(deta_currency_valid("EUR"));
    assert_false(deta_currency_valid("usd"));
    assert_false(deta_currency_valid("US"));
    assert_false(deta_currency_valid("USDX"));
    assert_false(deta_currency_valid(""));
    assert_false(deta_currency_valid("U1D"));
    assert_false(deta_currency_valid("US "));
    assert_false(deta_currency_valid("\xc3\x9cSD"));
    assert_false(deta_currency_valid(NULL));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_accepts_text_form),
        cmocka_unit_test(test_parse_accepts_limits),
        cmocka_unit_test(test_parse_rejects_malformed),
        cmocka_unit_test(test_parse_rejects_more_than_two_decimals),
        cmocka_unit_test(test_parse_rejects_out_of_range),
        cmocka_unit_test(test_parse_without_errstr),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_format_parse_round_trip),
        cmocka_unit_test(test_add),
        cmocka_unit_test(test_mul),
        cmocka_unit_test(test_json_strings),
        cmocka_unit_test(test_json_numbers),
        cmocka_unit_test(test_json_other_types),
        cmocka_unit_test(test_json_non_finite_real),
        cmocka_unit_test(test_currency),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
