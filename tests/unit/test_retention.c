/*
 * test_retention.c - the retention purge's own logic (deta/retention.h,
 * lib/src/retention.c), short of its SQL: a spec whose table or column is not a
 * plain identifier is refused before any SQL is written, and so is a bad
 * argument to the purge (without touching the connection). The inbox's purger
 * (deta/inbox.h) is one: it needs the configuration (where
 * INBOX_RETENTION_HOURS is read and bounded: tests/unit/test_config.c), the purge
 * counter is registered at 0, and a purger given nothing to purge with, or
 * told to keep claims for ever, does nothing. The claim and the purge
 * themselves are SQL: tests/integration/test_db.c and test_inbox.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "deta/inbox.h"
#include "deta/retention.h"

static double purged(deta_metrics_t *m) {
    return deta_counter_value(deta_counter(
        m, "deta_inbox_purged_total", "Processed-event claims deleted after INBOX_RETENTION_HOURS",
        NULL));
}

static void test_needs_the_configuration(void **state) {
    (void)state;
    char why[256] = "";
    assert_null(deta_inbox_purger_new(NULL, NULL, why, sizeof why));
    assert_true(why[0] != '\0');
    const long kept[] = {0, 1, 168, 87600};
    for (size_t i = 0; i < sizeof kept / sizeof *kept; i++) {
        deta_config_t cfg = {.inbox_retention_hours = kept[i]};
        deta_retention_t *p = deta_inbox_purger_new(&cfg, NULL, why, sizeof why);
        assert_non_null(p);
        deta_retention_free(p);
    }
    deta_retention_free(NULL);
}

static void test_counter_registered_at_zero(void **state) {
    (void)state;
    deta_config_t cfg = {.inbox_retention_hours = 168};
    deta_metrics_t *m = deta_metrics_new();
    deta_retention_t *p = deta_inbox_purger_new(&cfg, m, NULL, 0);
    assert_non_null(p);
    char *text = deta_metrics_render(m);
    assert_non_null(strstr(text, "deta_inbox_purged_total 0"));
    free(text);
    deta_retention_run(p, NULL); /* no connection: nothing to do */
    deta_retention_run(NULL, NULL);
    assert_true(purged(m) == 0);
    deta_retention_free(p);
    deta_metrics_free(m);
}

static void test_kept_for_ever_touches_nothing(void **state) {
    (void)state;
    deta_config_t cfg = {.pg_port = 1, .inbox_retention_hours = 0};
    deta_metrics_t *m = deta_metrics_new();
    deta_retention_t *p = deta_inbox_purger_new(&cfg, m, NULL, 0);
    /* A handle to nowhere: with retention 0 the purger must not even try it. */
    strcpy(cfg.pg_host, "127.0.0.1");
    deta_db_t *db = deta_db_new(&cfg);
    deta_retention_run(p, db);
    assert_int_equal(deta_db_session(db), 0); /* never connected */
    assert_true(purged(m) == 0);
    deta_db_free(db);
    deta_retention_free(p);
    deta_metrics_free(m);
}

static void test_spec_is_checked(void **state) {
    (void)state;
    char why[256] = "";
    assert_null(deta_retention_new(NULL, NULL, why, sizeof why));
    assert_true(why[0] != '\0');
    const char *bad[] = {NULL, "", "Orders", "orders; DROP TABLE x", "9rows", "a-b", "t\"",
                         "a234567890123456789012345678901234567890123456789012345678901234"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        deta_retention_spec_t t = {.table = bad[i], .column = "created_at", .keep_s = 60};
        deta_retention_spec_t c = {.table = "keys", .column = bad[i], .keep_s = 60};
        why[0] = '\0';
        assert_null(deta_retention_new(&t, NULL, why, sizeof why));
        assert_true(why[0] != '\0');
        assert_null(deta_retention_new(&c, NULL, why, sizeof why));
    }
    deta_retention_spec_t negative = {.table = "keys", .column = "created_at", .keep_s = -1};
    assert_null(deta_retention_new(&negative, NULL, why, sizeof why));
    deta_retention_spec_t good = {.table = "idempotency_keys", .column = "created_at2",
                                  .keep_s = 0, .metric = "keys_purged_total", .help = "h"};
    deta_metrics_t *m = deta_metrics_new();
    deta_retention_t *r = deta_retention_new(&good, m, why, sizeof why);
    assert_non_null(r);
    char *text = deta_metrics_render(m);
    assert_non_null(strstr(text, "keys_purged_total 0"));
    free(text);
    deta_retention_free(r);
    deta_retention_free(NULL);
    deta_metrics_free(m);
}

static void test_purge_refuses_bad_arguments_before_sql(void **state) {
    (void)state;
    deta_config_t cfg = {.pg_port = 1};
    strcpy(cfg.pg_host, "127.0.0.1");
    deta_db_t *db = deta_db_new(&cfg);
    char why[256];
    long n = 7;
    deta_retention_spec_t ok = {.table = "keys", .column = "created_at", .keep_s = 60};
    deta_retention_spec_t bad[] = {ok, ok, ok, ok, ok};
    bad[0].table = "keys x";
    bad[1].column = "at;";
    bad[2].keep_s = -1;
    bad[3].key = "id desc";
    bad[4].only = "true OR true OR true OR true OR true OR true OR true OR true OR true OR true"
                  " OR true OR true OR true OR true OR true OR true OR true OR true OR true OR"
                  " true OR true OR true OR true OR true OR true OR true OR true OR true OR true"
                  " OR true OR true OR true OR true OR true OR true OR true OR true OR true";
    assert_int_equal(deta_retention_purge(NULL, &ok, 10, &n, why, sizeof why), DETA_ERR_INVALID);
    assert_int_equal(deta_retention_purge(db, NULL, 10, &n, why, sizeof why), DETA_ERR_INVALID);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(deta_retention_purge(db, &bad[i], 10, &n, why, sizeof why),
                         DETA_ERR_INVALID);
        assert_null(deta_retention_new(&bad[i], NULL, why, sizeof why));
    }
    assert_int_equal(deta_retention_purge(db, &ok, 0, &n, why, sizeof why), DETA_ERR_INVALID);
    assert_int_equal(deta_retention_purge(db, &ok, 10, NULL, why, sizeof why), DETA_ERR_INVALID);
    bool backlog = true;
    assert_int_equal(deta_retention_sweep(db, &bad[0], &n, &backlog, why, sizeof why),
                     DETA_ERR_INVALID);
    assert_false(backlog);
    assert_int_equal(deta_retention_sweep(db, &ok, NULL, NULL, why, sizeof why),
                     DETA_ERR_INVALID);
    assert_int_equal(deta_db_session(db), 0); /* never connected */
    deta_db_free(db);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_needs_the_configuration),
        cmocka_unit_test(test_counter_registered_at_zero),
        cmocka_unit_test(test_kept_for_ever_touches_nothing),
        cmocka_unit_test(test_spec_is_checked),
        cmocka_unit_test(test_purge_refuses_bad_arguments_before_sql),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
