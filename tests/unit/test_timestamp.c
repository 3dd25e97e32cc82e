/*
 * test_timestamp.c - ISO-8601 UTC instants (lib/src/timestamp.c): what is valid,
 * reading to milliseconds and microseconds, writing back exactly.
 *
 * The one implementation replaced four (the envelope's, delivery-service's
 * writer, query-api's microsecond reader and writer, deta-cli's reader); each of
 * their checks lives here, and the edge cases between them (negative instants,
 * leap seconds, the clamp to years 0000-9999) are pinned down.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "deta/timestamp.h"

static void test_timestamp_now_format(void **state) {
    (void)state;
    char ts[DETA_TS_LEN];
    deta_timestamp_now(ts);
    assert_int_equal(strlen(ts), 24);
    assert_true(deta_timestamp_valid(ts));
    assert_int_equal(ts[19], '.');
    assert_int_equal(ts[23], 'Z');
    assert_int_equal(strncmp(ts, "20", 2), 0);
}

static void test_timestamp_from_ms(void **state) {
    (void)state;
    char ts[DETA_TS_LEN];
    deta_timestamp_from_ms(INT64_C(1795610285123), ts);
    assert_string_equal(ts, "2026-11-25T12:38:05.123Z");
    deta_timestamp_from_ms(INT64_C(1795610285123) + 900000, ts); /* + 15 minutes */
    assert_string_equal(ts, "2026-11-25T12:53:05.123Z");
    deta_timestamp_from_ms(0, ts);
    assert_string_equal(ts, "1970-01-01T00:00:00.000Z");
    deta_timestamp_from_ms(-1, ts);
    assert_string_equal(ts, "1969-12-31T23:59:59.999Z");
    int64_t before = deta_wall_ms();
    deta_timestamp_now(ts);
    char floor[DETA_TS_LEN];
    deta_timestamp_from_ms(before, floor);
    assert_true(strcmp(ts, floor) >= 0); /* same format, so text order is time order */
}

static void test_timestamps_valid(void **state) {
    (void)state;
    const char *good[] = {
        "2026-11-25T12:38:05Z",         "2026-11-25T12:38:05.123Z",
        "2026-11-25T12:38:05.1Z",       "2026-11-25T12:38:05.123456789Z",
        "2026-11-25T12:38:05+00:00",    "2026-11-25T12:38:05.5+00:00",
        "2024-02-29T00:00:00Z",         "2000-02-29T23:59:59Z",
        "2016-12-31T23:59:60Z",         "2026-01-31T00:00:00Z",
        "2026-12-31T00:00:00Z",         "2026-04-30T00:00:00Z",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (!deta_timestamp_valid(good[i]))
            fail_msg("%s rejected", good[i]);
}

/* Instants as milliseconds since the epoch: both suffixes, any fraction (cut to
 * milliseconds), a leap day; -1 for what is not valid. */
static void test_timestamp_ms(void **state) {
    (void)state;
    assert_true(deta_timestamp_ms("1970-01-01T00:00:00Z") == 0);
    assert_true(deta_timestamp_ms("1970-01-01T00:00:01.5Z") == 1500);
    assert_true(deta_timestamp_ms("2026-11-25T12:38:05.123Z") == INT64_C(1795610285123));
    assert_true(deta_timestamp_ms("2024-02-29T23:59:59.999999999+00:00") ==
                deta_timestamp_ms("2024-03-01T00:00:00Z") - 1);
    assert_true(deta_timestamp_ms("2026-11-25T12:38:06Z") -
                    deta_timestamp_ms("2026-11-25T12:38:05.250Z") ==
                750);
    assert_true(deta_timestamp_ms("2000-01-01T00:00:00Z") == INT64_C(946684800000));
    char now[DETA_TS_LEN];
    deta_timestamp_now(now);
    int64_t ms = deta_timestamp_ms(now);
    assert_true(ms > INT64_C(946684800000));
    assert_true(deta_timestamp_ms("2026-02-30T00:00:00Z") == -1);
    assert_true(deta_timestamp_ms("soon") == -1);
    assert_true(deta_timestamp_ms(NULL) == -1);
}

static void test_timestamps_invalid(void **state) {
    (void)state;
    const char *bad[] = {
        "2026-02-30T00:00:00Z",  "2025-02-29T00:00:00Z",  "1900-02-29T00:00:00Z",
        "2026-04-31T00:00:00Z",  "2026-13-01T00:00:00Z",  "2026-00-10T00:00:00Z",
        "2026-11-00T00:00:00Z",  "2026-11-25T25:00:00Z",  "2026-11-25T24:00:00Z",
        "2026-11-25T12:60:00Z",  "2026-11-25T12:00:61Z",  "2026-11-25T12:38:05",
        "2026-11-25T12:38:05+01:00", "2026-11-25T12:38:05-00:00", "2026-11-25T12:38:05z",
        "2026-11-25 12:38:05Z",  "2026-11-25t12:38:05Z",  "2026-11-25",
        "26-11-25T12:38:05Z",    "2026-1-25T12:38:05Z",   "2026-11-25T12:38:05.Z",
        "2026-11-25T12:38:05.1234567890Z", "2026-11-25T12:38:05ZZ", "2026-11-25T12:38:05Z ",
        " 2026-11-25T12:38:05Z", "2026-11-25T1a:38:05Z",  "2026-11-25T12:38:05+00:0",
        "2026/11/25T12:38:05Z",  "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (deta_timestamp_valid(bad[i]))
            fail_msg("%s accepted", bad[i]);
    assert_false(deta_timestamp_valid(NULL));
}

/* The read model's use (query-api): microseconds, exact both ways. */
static void test_microseconds_parse_and_format_exactly(void **state) {
    (void)state;
    int64_t us;
    char out[DETA_TS_LEN];
    assert_true(deta_timestamp_us("1970-01-01T00:00:00Z", &us));
    assert_int_equal(us, 0);
    assert_true(deta_timestamp_us("2026-11-25T12:38:05.123Z", &us));
    assert_int_equal(us, INT64_C(1795610285123000));
    deta_timestamp_from_us(us, out);
    assert_string_equal(out, "2026-11-25T12:38:05.123Z");
    assert_true(deta_timestamp_us("2026-11-25T12:38:05.123456789+00:00", &us));
    assert_int_equal(us, INT64_C(1795610285123456));
    deta_timestamp_from_us(us, out);
    assert_string_equal(out, "2026-11-25T12:38:05.123456Z");
    assert_true(deta_timestamp_us("2024-02-29T23:59:59.5Z", &us));
    deta_timestamp_from_us(us, out);
    assert_string_equal(out, "2024-02-29T23:59:59.500Z");
    assert_true(deta_timestamp_us("1969-12-31T23:59:59.999999Z", &us));
    assert_int_equal(us, -1);
    deta_timestamp_from_us(us, out);
    assert_string_equal(out, "1969-12-31T23:59:59.999999Z");
    deta_timestamp_from_us(0, out);
    assert_string_equal(out, "1970-01-01T00:00:00.000Z");

    const char *bad[] = {"", "2026-11-25", "2026-11-25 12:38:05Z", "2026-02-30T00:00:00Z",
                         "2026-11-25T24:00:00Z", "2026-11-25T12:38:05+01:00",
                         "2026-11-25T12:38:05.Z", "tomorrow"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (deta_timestamp_us(bad[i], &us))
            fail_msg("accepted %s", bad[i]);
    assert_false(deta_timestamp_us(NULL, &us));
}

/* What delivery-service writes (its ETA, pick-up and delivery instants). */
static void test_milliseconds_format_exactly(void **state) {
    (void)state;
    char ts[DETA_TS_LEN];
    deta_timestamp_from_ms(INT64_C(1764074285123), ts);
    assert_string_equal(ts, "2025-11-25T12:38:05.123Z");
    assert_true(deta_timestamp_valid(ts));
    deta_timestamp_from_ms(INT64_C(-86400000), ts);
    assert_string_equal(ts, "1969-12-31T00:00:00.000Z");
    deta_timestamp_from_ms(INT64_C(951868799999), ts);
    assert_string_equal(ts, "2000-02-29T23:59:59.999Z");
}

/* Writing what was read gives the same instant back: text -> us -> text -> us. */
static void test_round_trips(void **state) {
    (void)state;
    const char *in[] = {"2026-11-25T12:38:05Z", "2026-11-25T12:38:05.1Z",
                        "2026-11-25T12:38:05.000001+00:00", "1969-12-31T23:59:59.5Z",
                        "0000-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z"};
    for (size_t i = 0; i < sizeof in / sizeof *in; i++) {
        int64_t us, again;
        char out[DETA_TS_LEN];
        assert_true(deta_timestamp_us(in[i], &us));
        deta_timestamp_from_us(us, out);
        assert_true(deta_timestamp_us(out, &again));
        assert_int_equal(us, again);
        assert_true(deta_timestamp_ms(out) == deta_timestamp_ms(in[i]));
    }
}

/* Negative instants round towards the past, in both units. */
static void test_before_the_epoch(void **state) {
    (void)state;
    assert_true(deta_timestamp_ms("1969-12-31T23:59:59.999999Z") == -1);
    assert_true(deta_timestamp_ms("1969-12-31T23:59:59.0005Z") == -1000);
    assert_true(deta_timestamp_ms("1969-12-31T23:59:59Z") == -1000);
    int64_t us;
    assert_true(deta_timestamp_us("1969-12-31T23:59:59.0005Z", &us));
    assert_int_equal(us, -999500);
}

/* Second 60 counts as the next minute's first. */
static void test_leap_second(void **state) {
    (void)state;
    int64_t a, b;
    assert_true(deta_timestamp_us("2016-12-31T23:59:60Z", &a));
    assert_true(deta_timestamp_us("2017-01-01T00:00:00Z", &b));
    assert_int_equal(a, b);
}

/* Instants no parse yields are written as the nearest one that it does. */
static void test_writing_clamps_to_four_digit_years(void **state) {
    (void)state;
    char ts[DETA_TS_LEN];
    deta_timestamp_from_us(INT64_MIN, ts);
    assert_string_equal(ts, "0000-01-01T00:00:00.000Z");
    deta_timestamp_from_us(INT64_MAX, ts);
    assert_string_equal(ts, "9999-12-31T23:59:59.999999Z");
    deta_timestamp_from_ms(INT64_MAX, ts);
    assert_string_equal(ts, "9999-12-31T23:59:59.999Z");
    deta_timestamp_from_ms(INT64_MIN, ts);
    assert_string_equal(ts, "0000-01-01T00:00:00.000Z");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_timestamp_now_format),
        cmocka_unit_test(test_timestamp_from_ms),
        cmocka_unit_test(test_milliseconds_format_exactly),
        cmocka_unit_test(test_timestamps_valid),
        cmocka_unit_test(test_timestamps_invalid),
        cmocka_unit_test(test_timestamp_ms),
        cmocka_unit_test(test_microseconds_parse_and_format_exactly),
        cmocka_unit_test(test_round_trips),
        cmocka_unit_test(test_before_the_epoch),
        cmocka_unit_test(test_leap_second),
        cmocka_unit_test(test_writing_clamps_to_four_digit_years),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
