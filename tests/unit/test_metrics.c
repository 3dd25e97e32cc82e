/*
 * test_metrics.c - the metrics registry: counter, gauge and histogram values,
 * the exact Prometheus text of a small registry, handle identity, type clashes,
 * bad names and buckets, exact totals under concurrent increments, and a gauge
 * left out of the rendering while unset.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <cmocka.h>

#include "deta/metrics.h"

static int setup(void **state) {
    *state = deta_metrics_new();
    return *state ? 0 : -1;
}

static int teardown(void **state) {
    deta_metrics_free(*state);
    return 0;
}

static void counters_only_go_up(void **state) {
    deta_metrics_t *m = *state;
    deta_counter_t *c = deta_counter(m, "orders_total", "Orders", NULL);
    assert_non_null(c);
    assert_true(deta_counter_value(c) == 0.0);
    deta_counter_inc(c);
    deta_counter_add(c, 2.5);
    assert_true(deta_counter_value(c) == 3.5);
    deta_counter_add(c, -10); /* ignored */
    assert_true(deta_counter_value(c) == 3.5);
}

static void gauges_go_both_ways(void **state) {
    deta_metrics_t *m = *state;
    deta_gauge_t *g = deta_gauge(m, "queue_depth", "Depth", "queue=\"a\"");
    assert_non_null(g);
    deta_gauge_set(g, 10);
    deta_gauge_add(g, -3.5);
    assert_true(deta_gauge_value(g) == 6.5);
    deta_gauge_set(g, -1);
    assert_true(deta_gauge_value(g) == -1.0);
}

/* An unset gauge is left out of the text (its family's HELP and TYPE stay), and
 * comes back with its next update; the other series of the family are untouched. */
static void an_unset_gauge_is_not_rendered_until_set_again(void **state) {
    deta_metrics_t *m = *state;
    deta_gauge_t *p0 = deta_gauge(m, "lag_messages", "Lag", "partition=\"0\"");
    deta_gauge_t *p1 = deta_gauge(m, "lag_messages", "Lag", "partition=\"1\"");
    deta_gauge_set(p0, 5);
    deta_gauge_set(p1, 7);
    deta_gauge_unset(p1);
    char *text = deta_metrics_render(m);
    assert_string_equal(text, "# HELP lag_messages Lag\n"
                              "# TYPE lag_messages gauge\n"
                              "lag_messages{partition=\"0\"} 5\n");
    free(text);
    deta_gauge_unset(p0);
    text = deta_metrics_render(m);
    assert_string_equal(text, "# HELP lag_messages Lag\n# TYPE lag_messages gauge\n");
    free(text);
    deta_gauge_add(p1, 1); /* an update brings it back, with its value */
    deta_gauge_set(p0, 0);
    text = deta_metrics_render(m);
    assert_string_equal(text, "# HELP lag_messages Lag\n"
                              "# TYPE lag_messages gauge\n"
                              "lag_messages{partition=\"0\"} 0\n"
                              "lag_messages{partition=\"1\"} 8\n");
    free(text);
    deta_gauge_unset(NULL);
}

static void histograms_count_observations(void **state) {
    deta_metrics_t *m = *state;
    deta_histogram_t *h = deta_histogram(m, "latency_seconds", "Latency", NULL, NULL, 0);
    assert_non_null(h);
    assert_int_equal(deta_histogram_count(h), 0);
    deta_histogram_observe(h, 0.2);
    deta_histogram_observe(h, 20);
    assert_int_equal(deta_histogram_count(h), 2);
}

static void same_name_and_labels_give_the_same_handle(void **state) {
    deta_metrics_t *m = *state;
    deta_counter_t *a = deta_counter(m, "events_total", "Events", "kind=\"x\"");
    deta_counter_t *b = deta_counter(m, "events_total", "ignored help", "kind=\"x\"");
    deta_counter_t *other = deta_counter(m, "events_total", "Events", "kind=\"y\"");
    assert_non_null(a);
    assert_ptr_equal(a, b);
    assert_ptr_not_equal(a, other);
    /* NULL and "" both mean no labels */
    assert_ptr_equal(deta_gauge(m, "up", "Up", NULL), deta_gauge(m, "up", "Up", ""));
    deta_histogram_t *h = deta_histogram(m, "h_seconds", "H", "a=\"1\"", NULL, 0);
    assert_ptr_equal(h, deta_histogram(m, "h_seconds", "H", "a=\"1\"", NULL, 0));
}

static void another_type_under_a_taken_name_is_refused(void **state) {
    deta_metrics_t *m = *state;
    assert_non_null(deta_counter(m, "jobs_total", "Jobs", NULL));
    assert_null(deta_gauge(m, "jobs_total", "Jobs", NULL));
    assert_null(deta_histogram(m, "jobs_total", "Jobs", "x=\"1\"", NULL, 0));
    assert_non_null(deta_gauge(m, "temperature", "T", NULL));
    assert_null(deta_counter(m, "temperature", "T", "room=\"b\""));
    /* the refused registrations left no trace in the text */
    char *text = deta_metrics_render(m);
    assert_non_null(text);
    assert_string_equal(text, "# HELP jobs_total Jobs\n"
                              "# TYPE jobs_total counter\n"
                              "jobs_total 0\n"
                              "# HELP temperature T\n"
                              "# TYPE temperature gauge\n"
                              "temperature 0\n");
    free(text);
}

static void bad_names_and_buckets_are_refused(void **state) {
    deta_metrics_t *m = *state;
    assert_null(deta_counter(m, "", "x", NULL));
    assert_null(deta_counter(m, NULL, "x", NULL));
    assert_null(deta_counter(m, "9lives", "x", NULL));
    assert_null(deta_counter(m, "with space", "x", NULL));
    assert_null(deta_counter(NULL, "fine_name", "x", NULL));
    const double descending[] = {1, 0.5};
    const double repeated[] = {1, 1};
    assert_null(deta_histogram(m, "h1", "x", NULL, descending, 2));
    assert_null(deta_histogram(m, "h2", "x", NULL, repeated, 2));
    char *text = deta_metrics_render(m);
    assert_string_equal(text, "");
    free(text);
}

static void render_is_prometheus_text(void **state) {
    deta_metrics_t *m = *state;
    deta_counter_t *created = deta_counter(m, "orders_created_total", "Orders created", NULL);
    deta_counter_t *rejected = deta_counter(m, "orders_rejected_total", "Orders rejected",
                                            "reason=\"missing_field\"");
    deta_counter_t *rejected2 = deta_counter(m, "orders_rejected_total", "Orders rejected",
                                             "reason=\"bad_amount\"");
    deta_gauge_t *lag = deta_gauge(m, "consumer_lag", "Lag\\with \"quotes\"\nand a newline",
                                   NULL);
    const double buckets[] = {0.1, 0.5, 1};
    deta_histogram_t *h = deta_histogram(m, "req_seconds", "Request time",
                                         "route=\"/api/orders\"", buckets, 3);
    deta_histogram_t *h_bare = deta_histogram(m, "req_seconds", "Request time", NULL, NULL, 0);
    assert_non_null(created);
    assert_non_null(rejected);
    assert_non_null(rejected2);
    assert_non_null(lag);
    assert_non_null(h);
    assert_non_null(h_bare);
    deta_counter_add(created, 3);
    deta_counter_inc(rejected);
    deta_counter_add(rejected2, 400000);
    deta_gauge_set(lag, 0.25);
    deta_histogram_observe(h, 0.05); /* le 0.1 */
    deta_histogram_observe(h, 0.1);  /* le 0.1: bounds are inclusive */
    deta_histogram_observe(h, 0.7);  /* le 1 */
    deta_histogram_observe(h, 3);    /* +Inf only */
    deta_histogram_observe(h_bare, 0.5);

    char *text = deta_metrics_render(m);
    assert_non_null(text);
    assert_string_equal(text,
                        "# HELP orders_created_total Orders created\n"
                        "# TYPE orders_created_total counter\n"
                        "orders_created_total 3\n"
                        "# HELP orders_rejected_total Orders rejected\n"
                        "# TYPE orders_rejected_total counter\n"
                        "orders_rejected_total{reason=\"missing_field\"} 1\n"
                        "orders_rejected_total{reason=\"bad_amount\"} 400000\n"
                        "# HELP consumer_lag Lag\\\\with \"quotes\"\\nand a newline\n"
                        "# TYPE consumer_lag gauge\n"
                        "consumer_lag 0.25\n"
                        "# HELP req_seconds Request time\n"
                        "# TYPE req_seconds histogram\n"
                        "req_seconds_bucket{route=\"/api/orders\",le=\"0.1\"} 2\n"
                        "req_seconds_bucket{route=\"/api/orders\",le=\"0.5\"} 2\n"
                        "req_seconds_bucket{route=\"/api/orders\",le=\"1\"} 3\n"
                        "req_seconds_bucket{route=\"/api/orders\",le=\"+Inf\"} 4\n"
                        "req_seconds_sum{route=\"/api/orders\"} 3.85\n"
                        "req_seconds_count{route=\"/api/orders\"} 4\n"
                        /* the family's buckets, not the defaults asked for */
                        "req_seconds_bucket{le=\"0.1\"} 0\n"
                        "req_seconds_bucket{le=\"0.5\"} 1\n"
                        "req_seconds_bucket{le=\"1\"} 1\n"
                        "req_seconds_bucket{le=\"+Inf\"} 1\n"
                        "req_seconds_sum 0.5\n"
                        "req_seconds_count 1\n");
    free(text);
}

static void default_buckets_are_the_latency_ones(void **state) {
    deta_metrics_t *m = *state;
    deta_histogram_t *h = deta_histogram(m, "d_seconds", "D", NULL, NULL, 0);
    deta_histogram_observe(h, 0.003);
    deta_histogram_observe(h, 11);
    char *text = deta_metrics_render(m);
    assert_non_null(text);
    assert_string_equal(text, "# HELP d_seconds D\n"
                              "# TYPE d_seconds histogram\n"
                              "d_seconds_bucket{le=\"0.001\"} 0\n"
                              "d_seconds_bucket{le=\"0.0025\"} 0\n"
                              "d_seconds_bucket{le=\"0.005\"} 1\n"
                              "d_seconds_bucket{le=\"0.01\"} 1\n"
                              "d_seconds_bucket{le=\"0.025\"} 1\n"
                              "d_seconds_bucket{le=\"0.05\"} 1\n"
                              "d_seconds_bucket{le=\"0.1\"} 1\n"
                              "d_seconds_bucket{le=\"0.25\"} 1\n"
                              "d_seconds_bucket{le=\"0.5\"} 1\n"
                              "d_seconds_bucket{le=\"1\"} 1\n"
                              "d_seconds_bucket{le=\"2.5\"} 1\n"
                              "d_seconds_bucket{le=\"5\"} 1\n"
                              "d_seconds_bucket{le=\"10\"} 1\n"
                              "d_seconds_bucket{le=\"+Inf\"} 2\n"
                              "d_seconds_sum 11.003\n"
                              "d_seconds_count 2\n");
    free(text);
}

#define THREADS 4
#define INCREMENTS 100000

typedef struct worker {
    deta_metrics_t *m;
    int id;
} worker_t;

/* Half the updates go through a handle looked up once, half look the series up
 * each time, so both the atomics and the registry lock are exercised. */
static void *hammer(void *arg) {
    worker_t *w = arg;
    deta_counter_t *c = deta_counter(w->m, "hits_total", "Hits", NULL);
    deta_gauge_t *g = deta_gauge(w->m, "balance", "Balance", NULL);
    deta_histogram_t *h = deta_histogram(w->m, "work_seconds", "Work", NULL, NULL, 0);
    for (int i = 0; i < INCREMENTS; i++) {
        if (i % 2)
            deta_counter_inc(c);
        else
            deta_counter_inc(deta_counter(w->m, "hits_total", "Hits", NULL));
        deta_gauge_add(g, w->id % 2 ? 1.0 : -1.0);
        deta_histogram_observe(h, 0.01);
    }
    return NULL;
}

static void concurrent_updates_lose_nothing(void **state) {
    deta_metrics_t *m = *state;
    pthread_t threads[THREADS];
    worker_t workers[THREADS];
    for (int i = 0; i < THREADS; i++) {
        workers[i] = (worker_t){m, i};
        assert_int_equal(pthread_create(&threads[i], NULL, hammer, &workers[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(threads[i], NULL);
    assert_true(deta_counter_value(deta_counter(m, "hits_total", "Hits", NULL)) ==
                (double)THREADS * INCREMENTS);
    assert_true(deta_gauge_value(deta_gauge(m, "balance", "Balance", NULL)) == 0.0);
    assert_int_equal(deta_histogram_count(deta_histogram(m, "work_seconds", "Work", NULL, NULL, 0)),
                     THREADS * INCREMENTS);
    char *text = deta_metrics_render(m);
    assert_non_null(strstr(text, "\nhits_total 400000\n"));
    assert_non_null(strstr(text, "\nwork_seconds_bucket{le=\"+Inf\"} 400000\n"));
    free(text);
}

static void null_handles_are_harmless(void **state) {
    (void)state;
    deta_counter_inc(NULL);
    deta_gauge_set(NULL, 1);
    deta_histogram_observe(NULL, 1);
    assert_true(deta_counter_value(NULL) == 0.0);
    assert_int_equal(deta_histogram_count(NULL), 0);
    assert_null(deta_metrics_render(NULL));
    deta_metrics_free(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(counters_only_go_up, setup, teardown),
        cmocka_unit_test_setup_teardown(gauges_go_both_ways, setup, teardown),
        cmocka_unit_test_setup_teardown(an_unset_gauge_is_not_rendered_until_set_again, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(histograms_count_observations, setup, teardown),
        cmocka_unit_test_setup_teardown(same_name_and_labels_give_the_same_handle, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(another_type_under_a_taken_name_is_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(bad_names_and_buckets_are_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(render_is_prometheus_text, setup, teardown),
        cmocka_unit_test_setup_teardown(default_buckets_are_the_latency_ones, setup, teardown),
        cmocka_unit_test_setup_teardown(concurrent_updates_lose_nothing, setup, teardown),
        cmocka_unit_test(null_handles_are_harmless),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
