/*
 * test_inbox.c - the inbox's retention and its failures, against the test
 * stack's Postgres and services (the claim itself: test_db.c).
 *
 * processed_events would grow for ever: claims older than INBOX_RETENTION_HOURS
 * (a week by default) are purged in batches, by deta_inbox_purge on a scratch
 * database (it_inbox_<pid>) and by the running services themselves (query-api
 * and delivery-service keep claims); recent claims stay. A claim that waits
 * past the lock timeout for another transaction's claim of the same event is
 * DETA_ERR_TRANSIENT, which the consumer waits out instead of dead-lettering.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "deta/envelope.h"
#include "deta/inbox.h"
#include "deta/log.h"
#include "testsupport.h"

#define WEEK_S (7L * 24 * 3600)
#define SERVICE_PURGE_WAIT_MS (3 * DETA_RETENTION_EVERY_MS)

static char dbname[64];
static deta_config_t cfg;
static deta_db_t *db;

static int setup(void **state) {
    (void)state;
    deta_log_init("it-inbox", DETA_LOG_WARN);
    char err[256];
    if (ts_scratch_db_create("it-inbox", "inbox", &cfg) != 0)
        return -1;
    snprintf(dbname, sizeof dbname, "%s", cfg.pg_database);
    db = deta_db_new(&cfg);
    if (deta_db_migrate(db, "inbox", deta_inbox_migrations, deta_inbox_migrations_count, err,
                        sizeof err) != DETA_OK) {
        fprintf(stderr, "migrate: %s\n", err);
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    deta_db_free(db);
    ts_scratch_db_drop(&cfg);
    return 0;
}

/* Inserts n claims of consumer, processed age_s seconds ago. */
static void add_claims(PGconn *c, const char *consumer, int n, long age_s) {
    char count[16], age[24];
    snprintf(count, sizeof count, "%d", n);
    snprintf(age, sizeof age, "%ld", age_s);
    const char *params[] = {consumer, count, age};
    PGresult *r = PQexecParams(c,
                               "INSERT INTO processed_events (consumer, event_id, processed_at)"
                               " SELECT $1, gen_random_uuid(),"
                               " now() - make_interval(secs => $3::bigint)"
                               " FROM generate_series(1, $2::int)",
                               3, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("insert claims: %s", PQerrorMessage(c));
    PQclear(r);
}

static long claims(PGconn *c, const char *consumer) {
    const char *params[] = {consumer};
    return ts_pg_long(c, "SELECT count(*) FROM processed_events WHERE consumer = $1", 1, params);
}

static void test_purge_deletes_old_claims_in_batches(void **state) {
    (void)state;
    char why[256] = "";
    PGconn *c = ts_pg(dbname);
    add_claims(c, "it-old", 2500, WEEK_S + 3600);
    add_claims(c, "it-recent", 3, WEEK_S - 3600);
    long n = -1;
    long batches[4];
    for (int i = 0; i < 4; i++) {
        assert_int_equal(deta_inbox_purge(db, WEEK_S, 1000, &n, why, sizeof why), DETA_OK);
        batches[i] = n;
    }
    assert_int_equal(batches[0], 1000);
    assert_int_equal(batches[1], 1000);
    assert_int_equal(batches[2], 500);
    assert_int_equal(batches[3], 0);
    assert_int_equal(claims(c, "it-old"), 0);
    assert_int_equal(claims(c, "it-recent"), 3);

    /* A claim that was purged is forgotten: the event would count as new. */
    char ev[DETA_UUID_LEN + 1];
    deta_uuid_new(ev);
    bool first = false;
    assert_int_equal(deta_inbox_claim(db, "it-again", ev, &first, why, sizeof why), DETA_OK);
    assert_true(first);
    assert_int_equal(ts_pg_long(c,
                                "UPDATE processed_events SET processed_at = now() - interval"
                                " '8 days' WHERE consumer = 'it-again' RETURNING 1",
                                0, NULL),
                     1);
    assert_int_equal(deta_inbox_purge(db, WEEK_S, 1000, &n, why, sizeof why), DETA_OK);
    assert_int_equal(n, 1);
    assert_int_equal(deta_inbox_claim(db, "it-again", ev, &first, why, sizeof why), DETA_OK);
    assert_true(first);

    assert_int_equal(deta_inbox_purge(NULL, WEEK_S, 1000, &n, why, sizeof why),
                     DETA_ERR_INVALID);
    assert_int_equal(deta_inbox_purge(db, WEEK_S, 0, &n, why, sizeof why), DETA_ERR_INVALID);
    PQfinish(c);

    setenv("INBOX_RETENTION_HOURS", "a week", 1); /* read with the configuration (config.c) */
    deta_config_t week;
    assert_int_equal(deta_config_load(&week, "it-inbox", why, sizeof why), DETA_ERR_INVALID);
    assert_non_null(strstr(why, "INBOX_RETENTION_HOURS"));
    unsetenv("INBOX_RETENTION_HOURS");
    assert_null(deta_inbox_purger_new(NULL, NULL, why, sizeof why));
    deta_retention_free(NULL);
    deta_retention_run(NULL, db);
}

/* The purger, as a service's main loop runs it: due at once, then after its
 * interval; INBOX_RETENTION_HOURS=0 keeps everything. */
static void test_purger_runs_when_due(void **state) {
    (void)state;
    char why[256] = "";
    PGconn *c = ts_pg(dbname);
    deta_metrics_t *m = deta_metrics_new();
    deta_config_t forever = cfg;
    forever.inbox_retention_hours = 0;
    deta_retention_t *keep = deta_inbox_purger_new(&forever, m, why, sizeof why);
    deta_retention_t *p = deta_inbox_purger_new(&cfg, m, why, sizeof why);
    assert_non_null(keep);
    assert_non_null(p);
    add_claims(c, "it-due", 1500, WEEK_S + 60);
    deta_retention_run(keep, db);
    assert_int_equal(claims(c, "it-due"), 1500);
    deta_retention_run(p, db);
    assert_int_equal(claims(c, "it-due"), 0);
    deta_counter_t *purged = deta_counter(m, "deta_inbox_purged_total", "", NULL);
    assert_true(deta_counter_value(purged) == 1500);
    add_claims(c, "it-due", 10, WEEK_S + 60);
    deta_retention_run(p, db); /* not due again before its interval */
    assert_int_equal(claims(c, "it-due"), 10);
    deta_retention_free(keep);
    deta_retention_free(p);
    deta_metrics_free(m);
    PQfinish(c);
}

/* The running services purge their own claims. */
static void test_services_purge_old_claims(void **state) {
    (void)state;
    const char *dbs[] = {"delivery_query", "delivery_db"};
    char old[64], recent[64];
    snprintf(old, sizeof old, "it-inbox-old-%d", (int)getpid());
    snprintf(recent, sizeof recent, "it-inbox-recent-%d", (int)getpid());
    for (size_t i = 0; i < 2; i++) {
        PGconn *c = ts_pg(dbs[i]);
        add_claims(c, old, 5, WEEK_S + 3600);
        add_claims(c, recent, 5, 60);
        PQfinish(c);
    }
    for (size_t i = 0; i < 2; i++) {
        PGconn *c = ts_pg(dbs[i]);
        long left = claims(c, old);
        for (int waited = 0; left > 0 && waited < SERVICE_PURGE_WAIT_MS; waited += 200) {
            ts_sleep_ms(200);
            left = claims(c, old);
        }
        if (left > 0)
            fail_msg("%s: %ld claims older than the retention are still there", dbs[i], left);
        assert_int_equal(claims(c, recent), 5);
        PQfinish(c);
    }
    assert_true(ts_metric("QUERY_API_URL", "deta_inbox_purged_total") >= 5);
}

/* A claim that waits for another transaction's claim of the same event past
 * PG_LOCK_TIMEOUT_MS is transient (55P03): the consumer retries it. */
static void test_claim_past_the_lock_timeout_is_transient(void **state) {
    (void)state;
    char why[256] = "", ev[DETA_UUID_LEN + 1];
    deta_uuid_new(ev);
    PGconn *other = ts_pg(dbname);
    const char *params[] = {ev};
    PGresult *r = PQexec(other, "BEGIN");
    PQclear(r);
    r = PQexecParams(other,
                     "INSERT INTO processed_events (consumer, event_id) VALUES ('it-locked', $1)",
                     1, NULL, params, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);

    deta_config_t quick = cfg;
    quick.pg_lock_timeout_ms = 200;
    deta_db_t *mine = deta_db_new(&quick);
    bool first = true;
    assert_int_equal(deta_db_begin(mine, why, sizeof why), DETA_OK);
    assert_int_equal(deta_inbox_claim(mine, "it-locked", ev, &first, why, sizeof why),
                     DETA_ERR_TRANSIENT);
    assert_non_null(strstr(why, "55P03"));
    deta_db_rollback(mine);

    r = PQexec(other, "ROLLBACK");
    PQclear(r);
    assert_int_equal(deta_db_begin(mine, why, sizeof why), DETA_OK);
    assert_int_equal(deta_inbox_claim(mine, "it-locked", ev, &first, why, sizeof why), DETA_OK);
    assert_true(first);
    deta_db_rollback(mine);
    deta_db_free(mine);
    PQfinish(other);
}

/* libdeta's purge with a condition, without and with a key (deta/retention.h),
 * on a table of the scratch database whose ids and ages ascend together: five
 * old rows, then three young ones. The old ones go in batches, the young ones
 * stay: the condition is kept whole (an OR in it cannot let a young row go). */
static void test_purge_by_key_keeps_its_condition_whole(void **state) {
    (void)state;
    char why[256] = "";
    PGconn *c = ts_pg(dbname);
    for (int keyed = 0; keyed < 2; keyed++) {
        assert_int_equal(deta_db_run(db,
                                     "CREATE TABLE aged (id bigserial PRIMARY KEY,"
                                     " at timestamptz, k text)",
                                     0, NULL, why, sizeof why),
                         DETA_OK);
        assert_int_equal(deta_db_run(db,
                                     "INSERT INTO aged (at, k) SELECT CASE WHEN g <= 5 THEN"
                                     " now() - interval '2 hours' ELSE now() END, CASE WHEN"
                                     " g <= 5 THEN 'a' ELSE 'b' END"
                                     " FROM generate_series(1, 8) g ORDER BY g",
                                     0, NULL, why, sizeof why),
                         DETA_OK);
        deta_retention_spec_t spec = {.table = "aged",
                                      .column = "at",
                                      .key = keyed ? "id" : NULL,
                                      .only = "k = 'a' OR k = 'b'",
                                      .keep_s = 3600};
        long n = -1;
        assert_int_equal(deta_retention_purge(db, &spec, 2, &n, why, sizeof why), DETA_OK);
        assert_int_equal(n, 2);
        assert_int_equal(ts_pg_long(c, "SELECT count(*) FROM aged WHERE id <= 2", 0, NULL), 0);
        bool backlog = true;
        assert_int_equal(deta_retention_sweep(db, &spec, &n, &backlog, why, sizeof why),
                         DETA_OK);
        assert_int_equal(n, 3);
        assert_false(backlog);
        assert_int_equal(ts_pg_long(c, "SELECT count(*) FROM aged WHERE k = 'a'", 0, NULL), 0);
        assert_int_equal(ts_pg_long(c, "SELECT count(*) FROM aged WHERE k = 'b'", 0, NULL), 3);
        assert_int_equal(deta_db_run(db, "DROP TABLE aged", 0, NULL, why, sizeof why), DETA_OK);
    }
    PQfinish(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_purge_deletes_old_claims_in_batches),
        cmocka_unit_test(test_purge_by_key_keeps_its_condition_whole),
        cmocka_unit_test(test_purger_runs_when_due),
        cmocka_unit_test(test_services_purge_old_claims),
        cmocka_unit_test(test_claim_past_the_lock_timeout_is_transient),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
