/*
 * test_service.c - the service skeleton's bookkeeping (deta/service.h,
 * lib/src/service.c), short of running it: the configuration it reads (a bad
 * setting fails deta_service_new, naming it), the bounds on consumers and
 * topics, the objects it adopts (at most DETA_SERVICE_MAX_ADOPTED; one more is
 * freed at once; the rest freed by deta_service_free, last adopted first), and a
 * stop signal ending a migration that waits for Postgres and marking the service
 * as stopping, and an OpenAPI document that leaves out a route stopping the start.
 *
 * No server: Postgres and the broker are given addresses where nothing listens
 * (port 1, refused at once) and nothing is started.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "deta/service.h"

/* A program of its own: no default port (an ephemeral one), database "postgres". */
static const deta_service_def_t self = {"unit-service", 0, NULL};

static void unreachable_env(void) {
    setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1", 1);
    setenv("PGHOST", "127.0.0.1", 1);
    setenv("PGPORT", "1", 1);
    setenv("LOG_LEVEL", "error", 1);
    unsetenv("HTTP_THREADS");
}

static int setup(void **state) {
    unreachable_env();
    char why[256] = "";
    *state = deta_service_new(&self, why, sizeof why);
    if (!*state)
        fprintf(stderr, "deta_service_new: %s\n", why);
    return *state ? 0 : -1;
}

static int teardown(void **state) {
    deta_service_free(*state);
    return 0;
}

static void test_reads_its_configuration(void **state) {
    deta_service_t *s = *state;
    assert_string_equal(deta_service_config(s)->service, "unit-service");
    assert_string_equal(deta_service_config(s)->pg_host, "127.0.0.1");
    assert_false(atomic_load(deta_service_stopping(s)));
    assert_non_null(deta_service_http(s));
    assert_non_null(deta_service_metrics(s));
    assert_non_null(deta_service_health(s));
    assert_non_null(deta_service_db(s));
    assert_non_null(deta_service_producer(s));
}

static void test_bad_setting_fails_new(void **state) {
    (void)state;
    unreachable_env();
    setenv("HTTP_THREADS", "many", 1);
    char why[256] = "";
    assert_null(deta_service_new(&self, why, sizeof why));
    unsetenv("HTTP_THREADS");
    assert_non_null(strstr(why, "HTTP_THREADS"));
}

static deta_err_t never(const deta_kafka_msg_t *msg, void *opaque, char *errstr,
                        size_t errsize) {
    (void)msg, (void)opaque, (void)errstr, (void)errsize;
    return DETA_OK;
}

static void test_consumer_and_topic_bounds(void **state) {
    deta_service_t *s = *state;
    const char *topics[9] = {"t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8", "t9"};
    char why[128] = "";
    assert_int_equal(deta_service_consume(s, topics, 0, never, NULL, NULL, why, sizeof why),
                     DETA_ERR_INVALID);
    assert_int_equal(deta_service_consume(s, topics, 9, never, NULL, NULL, why, sizeof why),
                     DETA_ERR_INVALID);
    assert_string_equal(why, "too many consumers or topics");
    /* Each consumer begins with a topic of its own (a static member's id is made
     * of it: kafka_conf.c). */
    for (int i = 0; i < 8; i++)
        assert_int_equal(deta_service_consume(s, topics + i, 1, never, NULL, NULL, why, sizeof why),
                         DETA_OK);
    assert_int_equal(deta_service_consume(s, topics + 8, 1, never, NULL, NULL, why, sizeof why),
                     DETA_ERR_INVALID);
    assert_string_equal(why, "too many consumers or topics");
}

static void test_consumers_begin_with_their_own_topic(void **state) {
    deta_service_t *s = *state;
    const char *first[] = {"raw.inventory-events", "raw.payment-events"};
    const char *again[] = {"raw.inventory-events"};
    char why[128] = "";
    assert_int_equal(deta_service_consume(s, first, 2, never, NULL, NULL, why, sizeof why),
                     DETA_OK);
    assert_int_equal(deta_service_consume(s, again, 1, never, NULL, NULL, why, sizeof why),
                     DETA_ERR_INVALID);
    assert_string_equal(why, "two consumers of the service begin with topic raw.inventory-events");
    assert_int_equal(deta_service_consume(s, first + 1, 1, never, NULL, NULL, why, sizeof why),
                     DETA_OK);
}

static int freed[DETA_SERVICE_MAX_ADOPTED + 1];
static int nfreed;

static void record_free(void *obj) { freed[nfreed++] = *(int *)obj; }

static void test_adopted_objects_freed_last_first(void **state) {
    (void)state;
    unreachable_env();
    char why[128] = "";
    deta_service_t *s = deta_service_new(&self, why, sizeof why);
    assert_non_null(s);
    static int objs[DETA_SERVICE_MAX_ADOPTED + 1];
    nfreed = 0;
    for (int i = 0; i < DETA_SERVICE_MAX_ADOPTED; i++) {
        objs[i] = i;
        assert_int_equal(deta_service_adopt(s, &objs[i], record_free), DETA_OK);
    }
    objs[DETA_SERVICE_MAX_ADOPTED] = DETA_SERVICE_MAX_ADOPTED;
    assert_int_equal(deta_service_adopt(s, &objs[DETA_SERVICE_MAX_ADOPTED], record_free),
                     DETA_ERR_INTERNAL);
    assert_int_equal(nfreed, 1); /* the one too many, at once */
    assert_int_equal(freed[0], DETA_SERVICE_MAX_ADOPTED);
    deta_service_free(s);
    assert_int_equal(nfreed, DETA_SERVICE_MAX_ADOPTED + 1);
    for (int i = 0; i < DETA_SERVICE_MAX_ADOPTED; i++)
        assert_int_equal(freed[1 + i], DETA_SERVICE_MAX_ADOPTED - 1 - i);
}

/* SIGTERM is blocked by deta_service_new (the service waits for it): raised on
 * this thread it stays pending until the migration's wait takes it. */
static void test_stop_signal_ends_a_waiting_migration(void **state) {
    deta_service_t *s = *state;
    static const deta_migration_t m[] = {{1, "unit", "SELECT 1"}};
    raise(SIGTERM);
    char why[128] = "";
    assert_int_equal(deta_service_migrate(s, "unit", m, 1, why, sizeof why), DETA_ERR_TRANSIENT);
    assert_string_equal(why, "stopped while waiting for Postgres");
    assert_true(atomic_load(deta_service_stopping(s)));
}

/* Periodic tasks: at most DETA_SERVICE_MAX_TASKS; run() calls each, in order,
 * about once a second until a stop signal (raised by the second task on its
 * second round: run's own thread, where SIGTERM stays pending until run's wait). */
static int task_calls[2];
static int task_order[8];
static int ntask_order;

static void counting_task(void *opaque, deta_db_t *db) {
    int which = *(int *)opaque;
    assert_non_null(db);
    task_calls[which]++;
    if (ntask_order < 8)
        task_order[ntask_order++] = which;
    if (which == 1 && task_calls[1] == 2)
        raise(SIGTERM);
}

static void test_tasks_run_until_stopped(void **state) {
    deta_service_t *s = *state;
    static int ids[2] = {0, 1};
    assert_int_equal(deta_service_add_task(s, counting_task, &ids[0]), DETA_OK);
    assert_int_equal(deta_service_add_task(s, counting_task, &ids[1]), DETA_OK);
    assert_int_equal(deta_service_add_task(s, NULL, NULL), DETA_ERR_INVALID);
    for (int i = 2; i < DETA_SERVICE_MAX_TASKS; i++)
        assert_int_equal(deta_service_add_task(s, counting_task, &ids[0]), DETA_OK);
    assert_int_equal(deta_service_add_task(s, counting_task, &ids[0]), DETA_ERR_INVALID);
    deta_service_run(s); /* its status depends on the unreachable broker: not checked */
    assert_int_equal(task_calls[1], 2);
    assert_int_equal(task_calls[0], 2 * (DETA_SERVICE_MAX_TASKS - 1));
    assert_int_equal(task_order[0], 0);
    assert_int_equal(task_order[1], 1);
    assert_int_equal(task_order[2], 0);
    assert_true(atomic_load(deta_service_stopping(s)));
}

/* A service whose OpenAPI document leaves out one of its routes (here libdeta's
 * /metrics) refuses to run, before it starts anything; a document is set once. */
static void test_a_document_without_a_route_stops_the_start(void **state) {
    deta_service_t *s = *state;
    static const deta_openapi_t doc = {
        "{}", "GET /openapi.json\nGET /actuator/health\nGET /health\n"
              "GET /actuator/health/readiness\nGET /actuator/health/liveness\n"
              "GET /actuator/prometheus\n"};
    char why[256] = "";
    assert_int_equal(deta_service_openapi(s, &doc, why, sizeof why), DETA_OK);
    assert_int_equal(deta_service_openapi(s, &doc, why, sizeof why), DETA_ERR_INVALID);
    assert_int_equal(deta_service_run(s), 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_reads_its_configuration, setup, teardown),
        cmocka_unit_test(test_bad_setting_fails_new),
        cmocka_unit_test_setup_teardown(test_consumer_and_topic_bounds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_consumers_begin_with_their_own_topic, setup,
                                        teardown),
        cmocka_unit_test(test_adopted_objects_freed_last_first),
        cmocka_unit_test_setup_teardown(test_stop_signal_ends_a_waiting_migration, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_tasks_run_until_stopped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_document_without_a_route_stops_the_start, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
