/*
 * test_fields.c - deta_fields_read (lib/src/fields.c), the table-driven reader
 * of payload and request fields: each kind's valid values, each problem with its
 * one wording and path, optional fields, and the first bad field winning.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "deta/fields.h"
#include "deta/money.h"
#include "deta/timestamp.h"

typedef struct sample {
    char id[9]; /* up to 8 bytes */
    int64_t count;
    deta_money_t price;
    char currency[4];
    char at[DETA_TS_LEN];
    int64_t at_ms;
} sample_t;

static const deta_field_t FIELDS[] = {
    DETA_FIELD("id", DETA_FIELD_TEXT, true, 1, 0, sample_t, id),
    DETA_FIELD("count", DETA_FIELD_INT, true, 1, 100, sample_t, count),
    DETA_FIELD("price", DETA_FIELD_AMOUNT, true, 0, 0, sample_t, price),
    DETA_FIELD("currency", DETA_FIELD_CURRENCY, false, 0, 0, sample_t, currency),
    DETA_FIELD("at", DETA_FIELD_INSTANT, false, 0, 0, sample_t, at),
    DETA_FIELD("atMs", DETA_FIELD_INSTANT_MS, false, 0, 0, sample_t, at_ms),
};
#define NFIELDS (sizeof FIELDS / sizeof *FIELDS)

#define VALID "\"id\":\"abc\",\"count\":3,\"price\":\"9.99\""

/* Reads {text} with the prefix "payload."; e is filled on failure. */
static deta_err_t read(const char *text, sample_t *s, deta_field_error_t *e) {
    json_t *j = json_loads(text, JSON_ALLOW_NUL, NULL);
    assert_non_null(j);
    memset(s, 0, sizeof *s);
    memcpy(s->currency, "USD", 4);
    s->at_ms = -1;
    deta_err_t err = deta_fields_read(j, "payload.", FIELDS, NFIELDS, s, e);
    json_decref(j);
    return err;
}

static void expect_bad(const char *text, const char *field, deta_field_problem_t problem,
                       const char *message) {
    sample_t s;
    deta_field_error_t e;
    if (read(text, &s, &e) != DETA_ERR_INVALID)
        fail_msg("accepted %s", text);
    assert_string_equal(e.field, field);
    assert_int_equal(e.problem, problem);
    assert_string_equal(e.message, message);
}

static void valid_fields_are_copied(void **state) {
    (void)state;
    sample_t s;
    deta_field_error_t e;
    assert_int_equal(read("{" VALID ",\"currency\":\"EUR\",\"at\":\"2026-11-25T12:38:05.1+00:00\","
                          "\"atMs\":\"1970-01-01T00:00:01.5Z\"}",
                          &s, &e),
                     DETA_OK);
    assert_string_equal(s.id, "abc");
    assert_int_equal(s.count, 3);
    assert_int_equal(s.price, 999);
    assert_string_equal(s.currency, "EUR");
    assert_string_equal(s.at, "2026-11-25T12:38:05.1+00:00");
    assert_int_equal(s.at_ms, 1500);
}

static void absent_optional_fields_keep_the_default(void **state) {
    (void)state;
    sample_t s;
    deta_field_error_t e;
    assert_int_equal(read("{" VALID "}", &s, &e), DETA_OK);
    assert_string_equal(s.currency, "USD");
    assert_string_equal(s.at, "");
    assert_int_equal(s.at_ms, -1);
    assert_int_equal(read("{" VALID ",\"price\":0}", &s, &e), DETA_OK); /* zero, as a number */
    assert_int_equal(s.price, 0);
}

static void text_problems(void **state) {
    (void)state;
    expect_bad("{\"count\":3}", "payload.id", DETA_FIELD_MISSING, "is required");
    expect_bad("{\"id\":7}", "payload.id", DETA_FIELD_WRONG_TYPE, "must be a string");
    expect_bad("{\"id\":null}", "payload.id", DETA_FIELD_WRONG_TYPE, "must be a string");
    expect_bad("{\"id\":\"\"}", "payload.id", DETA_FIELD_EMPTY, "must not be empty");
    expect_bad("{\"id\":\"123456789\"}", "payload.id", DETA_FIELD_TOO_LONG,
               "must be at most 8 characters");
    expect_bad("{\"id\":\"a\\u0000b\"}", "payload.id", DETA_FIELD_BAD_VALUE,
               "must not contain NUL characters");
    sample_t s;
    deta_field_error_t e;
    assert_int_equal(read("{\"id\":\"12345678\",\"count\":1,\"price\":\"1\"}", &s, &e), DETA_OK);
    assert_string_equal(s.id, "12345678");
}

static void int_problems(void **state) {
    (void)state;
    expect_bad("{\"id\":\"a\",\"price\":\"1\"}", "payload.count", DETA_FIELD_MISSING,
               "is required");
    expect_bad("{\"id\":\"a\",\"count\":\"3\"}", "payload.count", DETA_FIELD_WRONG_TYPE,
               "must be an integer");
    expect_bad("{\"id\":\"a\",\"count\":2.0}", "payload.count", DETA_FIELD_WRONG_TYPE,
               "must be an integer");
    expect_bad("{\"id\":\"a\",\"count\":0}", "payload.count", DETA_FIELD_BAD_VALUE,
               "must be between 1 and 100");
    expect_bad("{\"id\":\"a\",\"count\":101}", "payload.count", DETA_FIELD_BAD_VALUE,
               "must be between 1 and 100");
}

static void amount_problems(void **state) {
    (void)state;
    expect_bad("{\"id\":\"a\",\"count\":1}", "payload.price", DETA_FIELD_MISSING, "is required");
    expect_bad("{\"id\":\"a\",\"count\":1,\"price\":\"-1.00\"}", "payload.price",
               DETA_FIELD_BAD_VALUE, "must not be negative");
    char why[128];
    deta_money_t m;
    json_t *bad = json_string("1.005");
    assert_int_equal(deta_money_from_json(bad, &m, why, sizeof why), DETA_ERR_INVALID);
    json_decref(bad);
    expect_bad("{\"id\":\"a\",\"count\":1,\"price\":\"1.005\"}", "payload.price",
               DETA_FIELD_BAD_VALUE, why); /* the money parser's words */
}

static void currency_and_instant_problems(void **state) {
    (void)state;
    const char *iso4217 = "must be an ISO 4217 code: three capital letters";
    expect_bad("{" VALID ",\"currency\":null}", "payload.currency", DETA_FIELD_WRONG_TYPE,
               iso4217);
    expect_bad("{" VALID ",\"currency\":\"eur\"}", "payload.currency", DETA_FIELD_BAD_VALUE,
               iso4217);
    expect_bad("{" VALID ",\"currency\":\"\"}", "payload.currency", DETA_FIELD_BAD_VALUE,
               iso4217);
    const char *iso8601 = "must be an ISO-8601 UTC instant";
    expect_bad("{" VALID ",\"at\":5}", "payload.at", DETA_FIELD_WRONG_TYPE, iso8601);
    expect_bad("{" VALID ",\"at\":\"2025-02-30T00:00:00Z\"}", "payload.at", DETA_FIELD_BAD_VALUE,
               iso8601);
    /* valid, but longer than the destination: refused, never cut */
    expect_bad("{" VALID ",\"at\":\"2026-11-25T12:38:05.123456789+00:00\"}", "payload.at",
               DETA_FIELD_BAD_VALUE, iso8601);
    expect_bad("{" VALID ",\"atMs\":\"tomorrow\"}", "payload.atMs", DETA_FIELD_BAD_VALUE,
               iso8601);
    /* below the row's min (0): before the epoch */
    expect_bad("{" VALID ",\"atMs\":\"1969-12-31T23:59:59Z\"}", "payload.atMs",
               DETA_FIELD_BAD_VALUE, iso8601);
}

static void the_first_bad_field_in_table_order_wins(void **state) {
    (void)state;
    expect_bad("{\"id\":\"\",\"count\":0,\"price\":\"-1\"}", "payload.id", DETA_FIELD_EMPTY,
               "must not be empty");
    expect_bad("{\"currency\":\"x\",\"id\":\"a\",\"count\":0}", "payload.count",
               DETA_FIELD_BAD_VALUE, "must be between 1 and 100");
}

static void no_prefix_and_error_text(void **state) {
    (void)state;
    json_t *j = json_loads("{\"count\":1}", 0, NULL);
    sample_t s;
    deta_field_error_t e;
    assert_int_equal(deta_fields_read(j, NULL, FIELDS, NFIELDS, &s, &e), DETA_ERR_INVALID);
    json_decref(j);
    assert_string_equal(e.field, "id");
    char errstr[128];
    assert_int_equal(deta_field_error_text(&e, errstr, sizeof errstr), DETA_ERR_INVALID);
    assert_string_equal(errstr, "id is required");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(valid_fields_are_copied),
        cmocka_unit_test(absent_optional_fields_keep_the_default),
        cmocka_unit_test(text_problems),
        cmocka_unit_test(int_problems),
        cmocka_unit_test(amount_problems),
        cmocka_unit_test(currency_and_instant_problems),
        cmocka_unit_test(the_first_bad_field_in_table_order_wins),
        cmocka_unit_test(no_prefix_and_error_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
