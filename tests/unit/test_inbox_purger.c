/*
 * test_inbox_purger.c - the inbox purger's own logic (deta/inbox.h,
 * lib/src/inbox.c), short of its SQL: it needs the configuration (where
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
        deta_inbox_purger_t *p = deta_inbox_purger_new(&cfg, NULL, why, sizeof why);
        assert_non_null(p);
        deta_inbox_purger_free(p);
    }
    deta_inbox_purger_free(NULL);
}

static void test_counter_registered_at_zero(void **state) {
    (void)state;
    deta_config_t cfg = {.inbox_retention_hours = 168};
    deta_metrics_t *m = deta_metrics_new();
    deta_inbox_purger_t *p = deta_inbox_purger_new(&cfg, m, NULL, 0);
    assert_non_null(p);
    char *text = deta_metrics_render(m);
    assert_non_null(strstr(text, "deta_inbox_purged_total 0"));
    free(text);
    deta_inbox_purger_run(p, NULL); /* no connection: nothing to do */
    deta_inbox_purger_run(NULL, NULL);
    assert_true(purged(m) == 0);
    deta_inbox_purger_free(p);
    deta_metrics_free(m);
}

static void test_kept_for_ever_touches_nothing(void **state) {
    (void)state;
    deta_config_t cfg = {.pg_port = 1, .inbox_retention_hours = 0};
    deta_metrics_t *m = deta_metrics_new();
    deta_inbox_purger_t *p = deta_inbox_purger_new(&cfg, m, NULL, 0);
    /* A handle to nowhere: with retention 0 the purger must not even try it. */
    strcpy(cfg.pg_host, "127.0.0.1");
    deta_db_t *db = deta_db_new(&cfg);
    deta_inbox_purger_run(p, db);
    assert_int_equal(deta_db_session(db), 0); /* never connected */
    assert_true(purged(m) == 0);
    deta_db_free(db);
    deta_inbox_purger_free(p);
    deta_metrics_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_needs_the_configuration),
        cmocka_unit_test(test_counter_registered_at_zero),
        cmocka_unit_test(test_kept_for_ever_touches_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
