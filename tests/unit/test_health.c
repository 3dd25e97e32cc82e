/*
 * test_health.c - the health roll-up: all UP is 200 UP, an optional check DOWN
 * is 200 DEGRADED, a required one DOWN is 503 DOWN; components keep registration
 * order and DOWN ones carry details.error. No server: the checks are stubs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "deta/health.h"

typedef struct stub {
    bool up;
    const char *why; /* written into detail when DOWN; NULL writes nothing */
    int calls;
} stub_t;

static bool stub_check(void *opaque, char *detail, size_t detailsize) {
    stub_t *s = opaque;
    s->calls++;
    if (!s->up && s->why)
        snprintf(detail, detailsize, "%s", s->why);
    return s->up;
}

static int setup(void **state) {
    *state = deta_health_new();
    return *state ? 0 : -1;
}

static int teardown(void **state) {
    deta_health_free(*state);
    return 0;
}

static char *report_text(deta_health_t *h, int *status) {
    *status = -1;
    json_t *report = deta_health_report(h, status);
    assert_non_null(report);
    char *text = json_dumps(report, JSON_COMPACT);
    json_decref(report);
    assert_non_null(text);
    return text;
}

static void all_up_is_200_up(void **state) {
    deta_health_t *h = *state;
    stub_t db = {true, NULL, 0}, kafka = {true, NULL, 0};
    deta_health_add(h, "db", true, stub_check, &db);
    deta_health_add(h, "kafka", true, stub_check, &kafka);
    int status;
    char *text = report_text(h, &status);
    assert_int_equal(status, 200);
    assert_string_equal(text, "{\"status\":\"UP\",\"components\":{\"db\":{\"status\":\"UP\"},"
                              "\"kafka\":{\"status\":\"UP\"}}}");
    free(text);
    assert_int_equal(db.calls, 1);
    assert_int_equal(kafka.calls, 1);
}

static void optional_down_is_200_degraded(void **state) {
    deta_health_t *h = *state;
    stub_t db = {true, NULL, 0}, redis = {false, "connection refused", 0};
    deta_health_add(h, "db", true, stub_check, &db);
    deta_health_add(h, "redis", false, stub_check, &redis);
    int status;
    char *text = report_text(h, &status);
    assert_int_equal(status, 200);
    assert_string_equal(text, "{\"status\":\"DEGRADED\",\"components\":{\"db\":{\"status\":\"UP\"},"
                              "\"redis\":{\"status\":\"DOWN\",\"details\":{\"error\":"
                              "\"connection refused\"}}}}");
    free(text);
}

static void required_down_is_503_down(void **state) {
    deta_health_t *h = *state;
    stub_t db = {false, "timeout", 0}, redis = {false, NULL, 0}, kafka = {true, NULL, 0};
    deta_health_add(h, "db", true, stub_check, &db);
    deta_health_add(h, "redis", false, stub_check, &redis);
    deta_health_add(h, "kafka", true, stub_check, &kafka);
    int status;
    char *text = report_text(h, &status);
    assert_int_equal(status, 503);
    /* a DOWN check that wrote no detail still gets an error text */
    assert_string_equal(text,
                        "{\"status\":\"DOWN\",\"components\":{\"db\":{\"status\":\"DOWN\","
                        "\"details\":{\"error\":\"timeout\"}},\"redis\":{\"status\":\"DOWN\","
                        "\"details\":{\"error\":\"check failed\"}},"
                        "\"kafka\":{\"status\":\"UP\"}}}");
    free(text);
}

static void checks_run_on_every_report(void **state) {
    deta_health_t *h = *state;
    stub_t db = {true, NULL, 0};
    deta_health_add(h, "db", true, stub_check, &db);
    int status;
    free(report_text(h, &status));
    assert_int_equal(status, 200);
    db.up = false;
    db.why = "gone";
    char *text = report_text(h, &status);
    assert_int_equal(status, 503);
    assert_non_null(strstr(text, "\"error\":\"gone\""));
    free(text);
    assert_int_equal(db.calls, 2);
}

static void no_checks_is_up(void **state) {
    deta_health_t *h = *state;
    int status;
    char *text = report_text(h, &status);
    assert_int_equal(status, 200);
    assert_string_equal(text, "{\"status\":\"UP\",\"components\":{}}");
    free(text);
    /* incomplete registrations are ignored, not crashed on */
    deta_health_add(h, NULL, true, stub_check, NULL);
    deta_health_add(h, "x", true, NULL, NULL);
    text = report_text(h, &status);
    assert_string_equal(text, "{\"status\":\"UP\",\"components\":{}}");
    free(text);
    deta_health_free(NULL);
}

/* The consumer loop's question: are the required dependencies up? Optional
 * checks are not asked; the first required DOWN one answers, with its detail. */
static void required_up_ignores_optional_checks(void **state) {
    deta_health_t *h = *state;
    stub_t db = {true, NULL, 0}, redis = {false, "refused", 0}, kafka = {true, NULL, 0};
    deta_health_add(h, "db", true, stub_check, &db);
    deta_health_add(h, "redis", false, stub_check, &redis);
    deta_health_add(h, "kafka", true, stub_check, &kafka);
    char detail[128] = "stale";
    assert_true(deta_health_required_up(h, detail, sizeof detail));
    assert_string_equal(detail, "");
    assert_int_equal(redis.calls, 0);
    assert_int_equal(db.calls, 1);
    assert_int_equal(kafka.calls, 1);
}

static void required_down_stops_at_the_first(void **state) {
    deta_health_t *h = *state;
    stub_t db = {false, "timeout", 0}, kafka = {false, "no brokers", 0};
    deta_health_add(h, "db", true, stub_check, &db);
    deta_health_add(h, "kafka", true, stub_check, &kafka);
    char detail[128] = "";
    assert_false(deta_health_required_up(h, detail, sizeof detail));
    assert_non_null(strstr(detail, "timeout"));
    assert_int_equal(kafka.calls, 0);
    db.up = true;
    assert_false(deta_health_required_up(h, detail, sizeof detail));
    assert_non_null(strstr(detail, "no brokers"));
    kafka.up = true;
    assert_true(deta_health_required_up(h, NULL, 0));
    assert_false(deta_health_required_up(NULL, NULL, 0));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(all_up_is_200_up, setup, teardown),
        cmocka_unit_test_setup_teardown(optional_down_is_200_degraded, setup, teardown),
        cmocka_unit_test_setup_teardown(required_down_is_503_down, setup, teardown),
        cmocka_unit_test_setup_teardown(checks_run_on_every_report, setup, teardown),
        cmocka_unit_test_setup_teardown(no_checks_is_up, setup, teardown),
        cmocka_unit_test_setup_teardown(required_up_ignores_optional_checks, setup, teardown),
        cmocka_unit_test_setup_teardown(required_down_stops_at_the_first, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
