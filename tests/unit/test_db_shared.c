/*
 * test_db_shared.c - the bounded set of shared Postgres connections (deta/db.h,
 * lib/src/db_shared.c): at most `size` are opened, on first need; they are lent
 * last-in first-out; a take finds none free waits until one is given back or its
 * timeout passes; with metrics, every take's wait is observed and a take that
 * timed out is counted. No server: a deta_db_t connects only on first use, and these
 * tests never use one, they only lend it around.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <time.h>
#include <cmocka.h>

#include "deta/clock.h"
#include "deta/db.h"

static deta_db_shared_t *shared(int size) {
    static deta_config_t cfg; /* zeroed: never connected anyway */
    deta_db_shared_t *s = deta_db_shared_new(&cfg, size);
    assert_non_null(s);
    return s;
}

static void test_opens_on_need_up_to_size(void **state) {
    (void)state;
    deta_db_shared_t *s = shared(2);
    assert_int_equal(deta_db_shared_opened(s), 0);
    deta_db_t *a = deta_db_shared_take(s, 1000);
    assert_non_null(a);
    assert_int_equal(deta_db_shared_opened(s), 1);
    deta_db_shared_give(s, a);
    assert_ptr_equal(deta_db_shared_take(s, 1000), a); /* a free one: nothing opened */
    assert_int_equal(deta_db_shared_opened(s), 1);
    deta_db_t *b = deta_db_shared_take(s, 1000);
    assert_non_null(b);
    assert_ptr_not_equal(a, b);
    assert_int_equal(deta_db_shared_opened(s), 2);
    deta_db_shared_give(s, a);
    deta_db_shared_give(s, b);
    deta_db_shared_free(s);
}

static void test_lent_last_in_first_out(void **state) {
    (void)state;
    deta_db_shared_t *s = shared(3);
    deta_db_t *a = deta_db_shared_take(s, 1000);
    deta_db_t *b = deta_db_shared_take(s, 1000);
    deta_db_shared_give(s, a);
    deta_db_shared_give(s, b);
    assert_ptr_equal(deta_db_shared_take(s, 1000), b);
    assert_ptr_equal(deta_db_shared_take(s, 1000), a);
    assert_int_equal(deta_db_shared_opened(s), 2);
    deta_db_shared_give(s, a);
    deta_db_shared_give(s, b);
    deta_db_shared_free(s);
}

static void test_take_times_out_when_all_are_lent(void **state) {
    (void)state;
    deta_db_shared_t *s = shared(1);
    deta_db_t *a = deta_db_shared_take(s, 1000);
    assert_non_null(a);
    long t0 = deta_clock_ms();
    assert_null(deta_db_shared_take(s, 100));
    long waited = deta_clock_ms() - t0;
    assert_true(waited >= 90);
    assert_true(waited < 2000);
    assert_int_equal(deta_db_shared_opened(s), 1);
    deta_db_shared_give(s, a);
    deta_db_shared_free(s);
}

typedef struct lender {
    deta_db_shared_t *s;
    deta_db_t *db;
} lender_t;

static void *give_later(void *arg) {
    lender_t *l = arg;
    struct timespec ts = {0, 100 * 1000000L};
    nanosleep(&ts, NULL);
    deta_db_shared_give(l->s, l->db);
    return NULL;
}

static void test_waiting_take_gets_the_one_given_back(void **state) {
    (void)state;
    deta_db_shared_t *s = shared(1);
    lender_t l = {.s = s, .db = deta_db_shared_take(s, 1000)};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, give_later, &l), 0);
    long t0 = deta_clock_ms();
    deta_db_t *got = deta_db_shared_take(s, 10000);
    long waited = deta_clock_ms() - t0;
    pthread_join(t, NULL);
    assert_ptr_equal(got, l.db);
    assert_true(waited < 5000); /* woken by the give, not by the timeout */
    assert_int_equal(deta_db_shared_opened(s), 1);
    deta_db_shared_give(s, got);
    deta_db_shared_free(s);
}

static void test_bad_arguments(void **state) {
    (void)state;
    deta_config_t cfg = {0};
    assert_null(deta_db_shared_new(NULL, 1));
    assert_null(deta_db_shared_new(&cfg, 0));
    deta_db_shared_t *s = shared(1);
    deta_db_shared_give(s, NULL); /* nothing */
    assert_non_null(deta_db_shared_take(s, 0));
    assert_null(deta_db_shared_take(s, 0)); /* NULL was not taken in as a connection */
    deta_db_shared_free(s);
    deta_db_shared_free(NULL);
}

static void test_waits_are_measured(void **state) {
    (void)state;
    deta_db_shared_t *s = shared(1);
    deta_metrics_t *m = deta_metrics_new();
    deta_db_shared_metrics(s, m);
    deta_histogram_t *wait = deta_histogram(m, "deta_db_shared_wait_seconds", "", NULL, NULL, 0);
    deta_counter_t *timeouts = deta_counter(m, "deta_db_shared_timeouts_total", "", NULL);
    deta_db_t *a = deta_db_shared_take(s, 1000);
    assert_non_null(a);
    assert_int_equal(deta_histogram_count(wait), 1);
    assert_null(deta_db_shared_take(s, 50)); /* the only one is lent: waits 50 ms */
    assert_int_equal(deta_histogram_count(wait), 2);
    assert_true(deta_counter_value(timeouts) == 1.0);
    char *text = deta_metrics_render(m);
    const char *sum = strstr(text, "\ndeta_db_shared_wait_seconds_sum ");
    assert_non_null(sum);
    assert_true(strtod(sum + strlen("\ndeta_db_shared_wait_seconds_sum "), NULL) >= 0.04);
    assert_non_null(strstr(text, "deta_db_shared_wait_seconds_bucket{le=\"0.0001\"}"));
    free(text);
    deta_db_shared_give(s, a);
    deta_db_shared_free(s);
    deta_metrics_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_opens_on_need_up_to_size),
        cmocka_unit_test(test_lent_last_in_first_out),
        cmocka_unit_test(test_take_times_out_when_all_are_lent),
        cmocka_unit_test(test_waiting_take_gets_the_one_given_back),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_waits_are_measured),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
