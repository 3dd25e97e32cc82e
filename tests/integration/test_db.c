/*
 * test_db.c - deta/db.h and deta/inbox.h against the test stack's Postgres.
 *
 * Each run works in a scratch database of its own (it_db_<pid>), created through
 * the "postgres" database and dropped at the end, so runs never see each other's
 * tables. What is checked: parameters and NULLs, the SQLSTATE mapping, that
 * transactions commit and roll back, that a connection lost inside a transaction
 * is never silently replaced, migrations (once, recorded, rolled back on failure,
 * serialized between concurrent runners), reconnecting after our backend was
 * killed, the per-thread pool, and the inbox claim.
 *
 * Prepared statements (PG_PREPARED_STATEMENTS) are checked from inside the
 * session, through pg_prepared_statements queried on the same handle: each
 * statement prepared once, nothing with the setting off, recovery after
 * DEALLOCATE ALL, a killed backend and a changed result type (outside and inside
 * a transaction), errors reported exactly as without the cache, and the bound.
 * The other tests run with whatever the environment says, so a run with
 * PG_PREPARED_STATEMENTS=off checks the unnamed path the same way.
 *
 * Deferred BEGIN, SAVEPOINT and RELEASE (one round trip with the next
 * statement) are checked with libpq's protocol trace of the handle's own
 * connection (PQtrace: every Sync or Query sent is a round trip), both with
 * prepared statements and without: a transaction that runs nothing sends
 * nothing; savepoints roll back what they should, cut back without a round trip
 * when never sent; a queued command's error is the next statement's; bad names
 * are refused; the queue overflows safely; text BEGIN/SAVEPOINT still work;
 * a backend killed before or during a pipeline; never left in pipeline mode.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "deta/db.h"
#include "deta/inbox.h"
#include "deta/log.h"
#include "testsupport.h"

static char dbname[64];
static deta_config_t cfg;

static int setup_db(void **state) {
    (void)state;
    deta_log_init("it-db", DETA_LOG_WARN);
    char err[256];
    if (deta_config_load(&cfg, "it-db", err, sizeof err) != DETA_OK) {
        fprintf(stderr, "config: %s\n", err);
        return -1;
    }
    snprintf(dbname, sizeof dbname, "it_db_%d", (int)getpid());
    snprintf(cfg.pg_database, sizeof cfg.pg_database, "%s", dbname);
    snprintf(cfg.service, sizeof cfg.service, "it-db-%d", (int)getpid());
    PGconn *admin = ts_pg("postgres");
    char sql[128];
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", dbname);
    PGresult *r = PQexec(admin, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
        fprintf(stderr, "%s: %s\n", sql, PQerrorMessage(admin));
    PQclear(r);
    PQfinish(admin);
    return ok ? 0 : -1;
}

static int teardown_db(void **state) {
    (void)state;
    PGconn *admin = ts_pg("postgres");
    char sql[128];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", dbname);
    PQclear(PQexec(admin, sql));
    PQfinish(admin);
    return 0;
}

static deta_db_t *new_db(void) {
    deta_db_t *db = deta_db_new(&cfg);
    assert_non_null(db);
    return db;
}

static long query_long(deta_db_t *db, const char *sql) {
    deta_err_t err;
    char why[256] = "";
    PGresult *r = deta_db_exec(db, sql, 0, NULL, &err, why, sizeof why);
    if (!r)
        fail_msg("%s: %s", sql, why);
    assert_int_equal(err, DETA_OK);
    long v = atol(PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

/* ---- statements and errors ---- */

static void test_exec_with_params(void **state) {
    (void)state;
    deta_db_t *db = new_db();
    char why[256];
    assert_int_equal(deta_db_run(db, "CREATE TABLE people (id int PRIMARY KEY, name text)", 0,
                                 NULL, why, sizeof why),
                     DETA_OK);
    const char *p1[] = {"1", "ada"};
    const char *p2[] = {"2", NULL};
    assert_int_equal(deta_db_run(db, "INSERT INTO people VALUES ($1::int, $2)", 2, p1, why,
                                 sizeof why),
                     DETA_OK);
    assert_int_equal(deta_db_run(db, "INSERT INTO people VALUES ($1::int, $2)", 2, p2, why,
                                 sizeof why),
                     DETA_OK);

    deta_err_t err = DETA_ERR_INTERNAL;
    const char *q[] = {"1"};
    PGresult *r = deta_db_exec(db, "SELECT name FROM people WHERE id = $1::int", 1, q, &err, why,
                               sizeof why);
    assert_non_null(r);
    assert_int_equal(err, DETA_OK);
    assert_int_equal(PQntuples(r), 1);
    assert_string_equal(PQgetvalue(r, 0, 0), "ada");
    PQclear(r);

    /* A NULL parameter is SQL NULL, not an empty string. */
    assert_int_equal(query_long(db, "SELECT count(*) FROM people WHERE name IS NULL"), 1);
    /* A parameter is data, never SQL. */
    const char *inj[] = {"1; DROP TABLE people"};
    r = deta_db_exec(db, "SELECT count(*) FROM people WHERE name = $1", 1, inj, &err, why,
                     sizeof why);
    assert_non_null(r);
    assert_string_equal(PQgetvalue(r, 0, 0), "0");
    PQclear(r);
    assert_int_equal(query_long(db, "SELECT count(*) FROM people"), 2);
    deta_db_free(db);
}

/* deta_db_array's literal reaches the server as the very elements given, in
 * order, however much array syntax they hold, and a NULL item as NULL. */
static void test_array_parameter(void **state) {
    (void)state;
    deta_db_t *db = new_db();
    char why[256];
    const char *items[] = {"NULL", "a,b", "{x}", "say \"hi\"", "back\\slash", "", " sp ",
                           "0b6c1a52-8d1e-4c4e-9f38-2a3c3f4b5d6e"};
    enum { N = sizeof items / sizeof *items };
    char *array = deta_db_array(items, N);
    assert_non_null(array);
    const char *params[] = {array};
    deta_err_t err = DETA_ERR_INTERNAL;
    PGresult *r = deta_db_exec(db, "SELECT e IS NULL, e FROM unnest($1::text[]) e", 1, params,
                               &err, why, sizeof why);
    if (!r)
        fail_msg("unnest: %s", why);
    assert_int_equal(PQntuples(r), N);
    for (int i = 0; i < N; i++) {
        assert_string_equal(PQgetvalue(r, i, 0), "f");
        assert_string_equal(PQgetvalue(r, i, 1), items[i]);
    }
    PQclear(r);
    free(array);
    const char *holes[] = {NULL, "2026-12-07T10:00:00.123Z", NULL};
    array = deta_db_array(holes, 3);
    const char *hp[] = {array};
    r = deta_db_exec(db,
                     "SELECT e IS NULL, coalesce((extract(epoch FROM e) * 1000)::bigint, 0)"
                     " FROM unnest($1::timestamptz[]) WITH ORDINALITY u(e, n) ORDER BY n",
                     1, hp, &err, why, sizeof why);
    if (!r)
        fail_msg("unnest with NULLs: %s", why);
    assert_int_equal(PQntuples(r), 3);
    assert_string_equal(PQgetvalue(r, 0, 0), "t");
    assert_string_equal(PQgetvalue(r, 1, 0), "f");
    assert_string_equal(PQgetvalue(r, 1, 1), "1796637600123");
    assert_string_equal(PQgetvalue(r, 2, 0), "t");
    PQclear(r);
    free(array);
    array = deta_db_array(NULL, 0);
    const char *none[] = {array};
    r = deta_db_exec(db, "SELECT cardinality($1::int[])", 1, none, &err, why, sizeof why);
    if (!r)
        fail_msg("cardinality: %s", why);
    assert_string_equal(PQgetvalue(r, 0, 0), "0");
    PQclear(r);
    free(array);
    deta_db_free(db);
}

static void test_error_mapping(void **state) {
    (void)state;
    deta_db_t *db = new_db();
    char why[256] = "";
    assert_int_equal(deta_db_run(db, "CREATE TABLE uniq (k text PRIMARY KEY)", 0, NULL, why,
                                 sizeof why),
                     DETA_OK);
    const char *k[] = {"a"};
    assert_int_equal(deta_db_run(db, "INSERT INTO uniq VALUES ($1)", 1, k, why, sizeof why),
                     DETA_OK);
    assert_int_equal(deta_db_run(db, "INSERT INTO uniq VALUES ($1)", 1, k, why, sizeof why),
                     DETA_ERR_CONFLICT);
    assert_non_null(strstr(why, "23505"));
    assert_string_equal(deta_db_violated(db), "uniq_pkey"); /* which key */
    assert_int_equal(deta_db_run(db, "SELECT 1", 0, NULL, why, sizeof why), DETA_OK);
    assert_string_equal(deta_db_violated(db), ""); /* the last call's only */
    assert_int_equal(deta_db_run(db, "INSERT INTO uniq VALUES ($1)", 1, k, why, sizeof why),
                     DETA_ERR_CONFLICT);

    deta_err_t err = DETA_OK;
    why[0] = 0;
    PGresult *r = deta_db_exec(db, "SELEKT 1", 0, NULL, &err, why, sizeof why);
    assert_null(r);
    assert_int_equal(err, DETA_ERR_INTERNAL);
    assert_non_null(strstr(why, "42601"));
    assert_int_equal(deta_db_run(db, "SELECT * FROM no_such_table", 0, NULL, why, sizeof why),
                     DETA_ERR_INTERNAL);
    assert_string_equal(deta_db_violated(db), ""); /* not a unique violation */
    assert_string_equal(deta_db_violated(NULL), "");
    /* The connection is fine after errors. */
    assert_int_equal(query_long(db, "SELECT 41 + 1"), 42);

    /* Bad arguments are the caller's. */
    assert_null(deta_db_exec(db, NULL, 0, NULL, &err, why, sizeof why));
    assert_int_equal(err, DETA_ERR_INVALID);
    assert_null(deta_db_exec(db, "SELECT $1", 1, NULL, &err, why, sizeof why));
    assert_int_equal(err, DETA_ERR_INVALID);
    assert_null(deta_db_exec(NULL, "SELECT 1", 0, NULL, &err, why, sizeof why));
    assert_int_equal(err, DETA_ERR_INVALID);
    assert_int_equal(deta_db_run(db, "SELECT 1", -1, NULL, NULL, 0), DETA_ERR_INVALID);
    deta_db_free(db);
}

static void kill_backend(long pid) {
    char p[24];
    snprintf(p, sizeof p, "%ld", pid);
    const char *params[] = {p};
    PGconn *admin = ts_pg("postgres");
    assert_int_equal(ts_pg_long(admin, "SELECT pg_terminate_backend($1::int)::int", 1, params), 1);
    /* Until the backend is gone, the victim may not have heard yet. */
    for (int i = 0; i < 100; i++) {
        if (ts_pg_long(admin, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1::int", 1,
                       params) == 0)
            break;
        ts_sleep_ms(50);
    }
    PQfinish(admin);
    /* Let the backend's farewell (FATAL 57P01) reach the victim's socket: the
     * behaviour under test is noticing it before sending, not racing it. */
    ts_sleep_ms(300);
}

/* Errors that pass by themselves are TRANSIENT (the caller waits and retries,
 * never dead-letters): each raised by the server itself with its SQLSTATE. */
static void test_transient_sqlstates(void **state) {
    (void)state;
    deta_db_t *db = new_db();
    static const char *const transient[] = {"08006", "57P01", "57P03", "57014", "55P03",
                                            "40001", "40P01", "25006", "53100", "53200",
                                            "53300", "58030"};
    static const char *const internal[] = {"42703", "22P02", "23502", "P0001", "25P02"};
    char sql[160], why[256];
    for (size_t i = 0; i < sizeof transient / sizeof *transient; i++) {
        snprintf(sql, sizeof sql,
                 "DO $$BEGIN RAISE EXCEPTION 'raised' USING ERRCODE = '%s'; END$$",
                 transient[i]);
        why[0] = 0;
        deta_err_t err = deta_db_run(db, sql, 0, NULL, why, sizeof why);
        if (err != DETA_ERR_TRANSIENT)
            fail_msg("SQLSTATE %s mapped to %s (%s)", transient[i], deta_err_name(err), why);
        assert_non_null(strstr(why, transient[i]));
    }
    for (size_t i = 0; i < sizeof internal / sizeof *internal; i++) {
        snprintf(sql, sizeof sql,
                 "DO $$BEGIN RAISE EXCEPTION 'raised' USING ERRCODE = '%s'; END$$",
                 internal[i]);
        deta_err_t err = deta_db_run(db, sql, 0, NULL, why, sizeof why);
        if (err != DETA_ERR_INTERNAL)
            fail_msg("SQLSTATE %s mapped to %s (%s)", internal[i], deta_err_name(err), why);
    }
    deta_db_free(db);
}

/* The session's bounds come from the settings; a statement past its timeout, a
 * lock wait past its bound and a write to a read-only session fail TRANSIENT for
 * real, and ping reports a read-only server. */
static void test_session_bounds(void **state) {
    (void)state;
    deta_config_t c = cfg;
    c.pg_statement_timeout_ms = 300;
    c.pg_lock_timeout_ms = 200;
    deta_db_t *db = deta_db_new(&c);
    assert_non_null(db);
    char why[256] = "";
    PGresult *r = deta_db_exec(db,
                               "SELECT current_setting('statement_timeout'),"
                               " current_setting('lock_timeout'),"
                               " current_setting('idle_in_transaction_session_timeout'),"
                               " current_setting('tcp_keepalives_idle'),"
                               " current_setting('tcp_user_timeout')",
                               0, NULL, &(deta_err_t){0}, why, sizeof why);
    assert_non_null(r);
    assert_string_equal(PQgetvalue(r, 0, 0), "300ms");
    assert_string_equal(PQgetvalue(r, 0, 1), "200ms");
    assert_string_equal(PQgetvalue(r, 0, 2), "1min");
    if (strcmp(PQgetvalue(r, 0, 3), "0") != 0) { /* over TCP: a vanished client is noticed */
        assert_string_equal(PQgetvalue(r, 0, 3), "10");
        assert_string_equal(PQgetvalue(r, 0, 4), "20000"); /* ms */
    } else if (strcmp(ts_env("PGHOST"), "127.0.0.1") == 0) {
        fail_msg("no server-side keepalives on a TCP connection");
    }
    PQclear(r);

    assert_int_equal(deta_db_run(db, "SELECT pg_sleep(2)", 0, NULL, why, sizeof why),
                     DETA_ERR_TRANSIENT);
    assert_non_null(strstr(why, "57014"));

    assert_int_equal(deta_db_run(db, "CREATE TABLE bounds (v int)", 0, NULL, why, sizeof why),
                     DETA_OK);
    PGconn *other = ts_pg(dbname);
    PQclear(PQexec(other, "BEGIN; LOCK TABLE bounds IN ACCESS EXCLUSIVE MODE"));
    assert_int_equal(deta_db_run(db, "INSERT INTO bounds VALUES (1)", 0, NULL, why, sizeof why),
                     DETA_ERR_TRANSIENT);
    assert_non_null(strstr(why, "55P03"));
    PQclear(PQexec(other, "ROLLBACK"));
    PQfinish(other);

    assert_true(deta_db_ping(db, why, sizeof why));
    assert_int_equal(deta_db_run(db, "SET default_transaction_read_only = on", 0, NULL, why,
                                 sizeof why),
                     DETA_OK);
    assert_int_equal(deta_db_run(db, "INSERT INTO bounds VALUES (2)", 0, NULL, why, sizeof why),
                     DETA_ERR_TRANSIENT);
    assert_non_null(strstr(why, "25006"));
    why[0] = 0;
    assert_false(deta_db_ping(db, why, sizeof why));
    assert_non_null(strstr(why, "read-only"));
    deta_db_free(db);
}

/* The session number changes exactly when the connection is replaced. */
static void test_session_number(void **state) {
    (void)state;
    deta_db_t *db = new_db();
    long pid = query_long(db, "SELECT pg_backend_pid()");
    unsigned long s1 = deta_db_session(db);
    assert_true(s1 > 0);
    query_long(db, "SELECT 1");
    assert_int_equal(deta_db_session(db), s1);
    kill_backend(pid);
    query_long(db, "SELECT 1");
    assert_true(deta_db_session(db) != s1);
    assert_int_equal(deta_db_session(NULL), 0);
    deta_db_free(db);
}

static void test_unreachable_server(void **state) {
    (void)state;
    deta_config_t bad = cfg;
    bad.pg_port = 1; /* nothing listens there */
    deta_db_t *db = deta_db_new(&bad);
    assert_non_null(db); /* never fails for an unreachable server */
    char why[256] = "";
    assert_int_equal(deta_db_run(db, "SELECT 1", 0, NULL, why, sizeof why), DETA_ERR_TRANSIENT);
    assert_non_null(strstr(why, "connect"));
    assert_false(deta_db_ping(db, why, sizeof why));
    assert_null(deta_db_conn(db, why, sizeof why));
    assert_int_equal(deta_db_begin(db, why, sizeof why), DETA_ERR_TRANSIENT);
    deta_db_free(db);
    assert_null(deta_db_new(NULL));
    deta_db_free(NULL);
}

static void test_ping_and_conn(void **state) {
    (void)state;
    deta_db_t *db = new_db();
    char why[256] = "";
    assert_true(deta_db_ping(db, why, sizeof why));
    PGconn *c = deta_db_conn(db, why, sizeof why);
    assert_non_null(c);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    assert_false(deta_db_ping(NULL, why, sizeof why));
    deta_db_free(db);
}

/* ---- transactions ---- */

static long count_in_other_session(const char *sql) {
    PGconn *other = ts_pg(dbname);
    long n = ts_pg_long(other, sql, 0, NULL);
    PQfinish(other);
    return n;
}

static void test_transactions(void **state) {
    (void)state;
    deta_db_t *db = new_db();
    char why[256] = "";
    assert_int_equal(deta_db_run(db, "CREATE TABLE txt (v int)", 0, NULL, why, sizeof why), DETA_OK);

    assert_int_equal(deta_db_begin(db, why, sizeof why), DETA_OK);
    assert_int_equal(deta_db_begin(db, why, sizeof why), DETA_ERR_INVALID); /* no nesting */
    assert_int_equal(deta_db_run(db, "INSERT INTO txt VALUES (1)", 0, NULL, why, sizeof why),
                     DETA_OK);
    assert_int_equal(count_in_other_session("SELECT count(*) FROM txt"), 0); /* not yet */
    assert_int_equal(deta_db_commit(db, why, sizeof why), DETA_OK);
    assert_int_equal(count_in_other_session("SELECT count(*) FROM txt"), 1);

    assert_int_equal(deta_db_begin(db, why, sizeof why), DETA_OK);
    assert_int_equal(deta_db_run(db, "INSERT INTO txt VALUES (2)", 0, NULL, why, sizeof why),
                     DETA_OK);
    deta_db_rollback(db);
    assert_int_equal(count_in_other_session("SELECT count(*) FROM txt"), 1);

    /* A statement failed inside: commit must not pretend it committed. */
    assert_int_equal(deta_db_begin(db, why, sizeof why), DETA_OK);
    assert_int_equal(deta_db_run(db, "INSERT INTO txt VALUES (3)", 0, NULL, why, sizeof why),
                     DETA_OK);
    assert_int_equal(deta_db_run(db, "INSERT INTO txt VALUES ('x')", 0, NULL, why, sizeof why),
                     DETA_ERR_INTERNAL);
    assert_int_not_equal(deta_db_commit(db, why, sizeof why), DETA_OK);
    assert_int_equal(count_in_other_session("SELECT count(*) FROM txt"), 1);

    assert_int_equal(deta_db_commit(db, why, sizeof why), DETA_ERR_INVALID); /* none open */
    deta_db_rollback(db); /* harmless without a transaction */
    deta_db_rollback(NULL);
    assert_int_equal(query_long(db, "SELECT count(*) FROM txt"), 1);
    deta_db_free(db);
}

/* ---- reconnecting ---- */


static void test_reconnect_after_backend_killed(void **state) {
    (void)state;
    deta_db_t *db = new_db();
    long pid = query_long(db, "SELECT pg_backend_pid()");
    kill_backend(pid);
    /* The next call notices the dead session before sending, and reconnects. */
    long pid2 = query_long(db, "SELECT pg_backend_pid()");
    assert_true(pid2 != pid);

    /* Inside a transaction the loss is reported, never papered over. */
    char why[256] = "";
    assert_int_equal(deta_db_run(db, "CREATE TABLE rc (v int)", 0, NULL, why, sizeof why), DETA_OK);
    assert_int_equal(deta_db_begin(db, why, sizeof why), DETA_OK);
    assert_int_equal(deta_db_run(db, "INSERT INTO rc VALUES (1)", 0, NULL, why, sizeof why),
                     DETA_OK);
    kill_backend(pid2);
    assert_int_equal(deta_db_run(db, "INSERT INTO rc VALUES (2)", 0, NULL, why, sizeof why),
                     DETA_ERR_TRANSIENT);
    assert_int_equal(deta_db_run(db, "INSERT INTO rc VALUES (3)", 0, NULL, why, sizeof why),
                     DETA_ERR_TRANSIENT); /* still: no autocommit behind our back */
    assert_int_equal(deta_db_commit(db, why, sizeof why), DETA_ERR_TRANSIENT);
    assert_int_equal(query_long(db, "SELECT count(*) FROM rc"), 0);

    /* The same, with the caller rolling back instead of committing. */
    long pid3 = query_long(db, "SELECT pg_backend_pid()");
    assert_int_equal(deta_db_begin(db, why, sizeof why), DETA_OK);
    kill_backend(pid3);
    assert_int_equal(deta_db_run(db, "INSERT INTO rc VALUES (4)", 0, NULL, why, sizeof why),
                     DETA_ERR_TRANSIENT);
    deta_db_rollback(db);
    assert_int_equal(deta_db_run(db, "INSERT INTO rc VALUES (5)", 0, NULL, why, sizeof why),
                     DETA_OK);
    assert_int_equal(query_long(db, "SELECT count(*) FROM rc"), 1);
    deta_db_free(db);
}

/* ---- prepared statements ---- */

#define PREPARED_MAX 128 /* db.h: at most 128 distinct statements per connection */

static deta_db_t *new_db_prepared(bool on) {
    deta_config_t c = cfg;
    c.pg_prepared_statements = on;
    deta_db_t *db = deta_db_new(&c);
    assert_non_null(db);
    return db;
}

/* How many statements of this session pg_prepared_statements shows with this
 * text (NULL: all of ours), asked through the same handle. */
static long prepared_count(deta_db_t *db, const char *sql) {
    const char *params[] = {sql};
    deta_err_t err;
    char why[256] = "";
    PGresult *r = deta_db_exec(db,
                               "SELECT count(*) FROM pg_prepared_statements"
                               " WHERE starts_with(name, 'deta_s')"
                               " AND ($1::text IS NULL OR statement = $1)",
                               1, params, &err, why, sizeof why);
    if (!r)
        fail_msg("pg_prepared_statements: %s", why);
    long n = atol(PQgetvalue(r, 0, 0));
    PQclear(r);
    return n;
}

/* $1 + 1 through deta_db_exec. */
static long plus_one(deta_db_t *db, const char *sql, long v) {
    char p[24];
    snprintf(p, sizeof p, "%ld", v);
    const char *params[] = {p};
    deta_err_t err;
    char why[256] = "";
    PGresult *r = deta_db_exec(db, sql, 1, params, &err, why, sizeof why);
    if (!r)
        fail_msg("%s: %s", sql, why);
    assert_int_equal(err, DETA_OK);
    long got = atol(PQgetvalue(r, 0, 0));
    PQclear(r);
    return got;
}

static const char plus_one_sql[] = "SELECT $1::int + 1";

static void test_prepared_once_per_session(void **state) {
    (void)state;
    deta_db_t *db = new_db_prepared(true);
    assert_int_equal(plus_one(db, plus_one_sql, 1), 2);
    assert_int_equal(plus_one(db, plus_one_sql, 41), 42);
    assert_int_equal(prepared_count(db, plus_one_sql), 1);
    /* Keyed by text, not pointer: the same text in another buffer is the same. */
    char copy[64];
    snprintf(copy, sizeof copy, "%s", plus_one_sql);
    assert_int_equal(plus_one(db, copy, 99), 100);
    assert_int_equal(prepared_count(db, plus_one_sql), 1);

    /* Any case, leading blanks, and WITH count; other kinds run unnamed. */
    const char *with = "  \n with x AS (SELECT 5 AS v) select v FROM x";
    assert_int_equal(query_long(db, with), 5);
    assert_int_equal(query_long(db, with), 5);
    assert_int_equal(prepared_count(db, with), 1);
    assert_int_equal(query_long(db, "VALUES (7)"), 7);
    assert_int_equal(prepared_count(db, "VALUES (7)"), 0);
    char why[256] = "";
    assert_int_equal(deta_db_run(db, "CREATE TABLE prep_kinds (v int)", 0, NULL, why, sizeof why),
                     DETA_OK);
    const char *ins = "INSERT INTO prep_kinds VALUES ($1::int)";
    const char *one[] = {"1"};
    for (int i = 0; i < 3; i++)
        assert_int_equal(deta_db_run(db, ins, 1, one, why, sizeof why), DETA_OK);
    assert_int_equal(prepared_count(db, ins), 1);
    assert_int_equal(query_long(db, "SELECT count(*) FROM prep_kinds"), 3);
    /* (the counting query, plus_one, WITH, INSERT and the count: five) */
    assert_int_equal(prepared_count(db, NULL), 5);
    assert_int_equal(prepared_count(db, "CREATE TABLE prep_kinds (v int)"), 0);
    deta_db_free(db);
}

static void test_prepared_off(void **state) {
    (void)state;
    deta_db_t *db = new_db_prepared(false);
    assert_int_equal(plus_one(db, plus_one_sql, 1), 2);
    assert_int_equal(plus_one(db, plus_one_sql, 2), 3);
    assert_int_equal(query_long(db, "SELECT count(*) FROM pg_prepared_statements"), 0);
    deta_db_free(db);
}

static void test_prepared_after_deallocate_all(void **state) {
    (void)state;
    deta_db_t *db = new_db_prepared(true);
    char why[256] = "";
    const char *other = "SELECT $1::int + 2";
    assert_int_equal(plus_one(db, plus_one_sql, 1), 2);
    assert_int_equal(plus_one(db, other, 1), 3);
    /* Not a kind that is prepared: it runs as such, and drops them all. */
    assert_int_equal(deta_db_run(db, "DEALLOCATE ALL", 0, NULL, why, sizeof why), DETA_OK);
    assert_int_equal(plus_one(db, plus_one_sql, 10), 11); /* prepared again, run once more */
    assert_int_equal(prepared_count(db, plus_one_sql), 1);

    /* Inside a transaction the statement cannot run again: TRANSIENT, and the
     * retried transaction works, for every statement lost (not one per try). */
    assert_int_equal(deta_db_run(db, "DEALLOCATE ALL", 0, NULL, why, sizeof why), DETA_OK);
    assert_int_equal(deta_db_begin(db, why, sizeof why), DETA_OK);
    const char *p[] = {"1"};
    deta_err_t err = DETA_OK;
    assert_null(deta_db_exec(db, plus_one_sql, 1, p, &err, why, sizeof why));
    assert_int_equal(err, DETA_ERR_TRANSIENT);
    assert_non_null(strstr(why, "26000"));
    deta_db_rollback(db);
    assert_int_equal(deta_db_begin(db, why, sizeof why), DETA_OK);
    assert_int_equal(plus_one(db, plus_one_sql, 20), 21);
    assert_int_equal(plus_one(db, other, 20), 22);
    assert_int_equal(deta_db_commit(db, why, sizeof why), DETA_OK);
    assert_int_equal(prepared_count(db, plus_one_sql), 1);
    assert_int_equal(prepared_count(db, other), 1);
    deta_db_free(db);
}

static void test_prepared_after_backend_killed(void **state) {
    (void)state;
    deta_db_t *db = new_db_prepared(true);
    assert_int_equal(plus_one(db, plus_one_sql, 1), 2);
    long pid = query_long(db, "SELECT pg_backend_pid()");
    kill_backend(pid);
    /* A new session: the cache was emptied with the old one, so it is prepared again. */
    assert_int_equal(plus_one(db, plus_one_sql, 2), 3);
    assert_true(query_long(db, "SELECT pg_backend_pid()") != pid);
    assert_int_equal(prepared_count(db, plus_one_sql), 1);
    assert_int_equal(plus_one(db, plus_one_sql, 3), 4);

    /* The reconnect empties the cache before anything runs: a cached statement
     * first used inside the new session's transaction works (were it still
     * cached, the server would not know it: TRANSIENT). */
    kill_backend(query_long(db, "SELECT pg_backend_pid()"));
    char why[256] = "";
    assert_int_equal(deta_db_begin(db, why, sizeof why), DETA_OK);
    assert_int_equal(plus_one(db, plus_one_sql, 4), 5);
    assert_int_equal(deta_db_commit(db, why, sizeof why), DETA_OK);
    deta_db_free(db);
}

static void alter_elsewhere(const char *sql) {
    PGconn *other = ts_pg(dbname);
    PGresult *r = PQexec(other, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(other));
    PQclear(r);
    PQfinish(other);
}

/* The columns of SELECT * FROM prep_sc, or -1 with *err set. */
static int select_star_columns(deta_db_t *db, deta_err_t *err, char *why, size_t whysize) {
    PGresult *r = deta_db_exec(db, "SELECT * FROM prep_sc", 0, NULL, err, why, whysize);
    int n = r ? PQnfields(r) : -1;
    PQclear(r);
    return n;
}

static void test_prepared_after_schema_change(void **state) {
    (void)state;
    deta_db_t *db = new_db_prepared(true);
    char why[256] = "";
    deta_err_t err;
    assert_int_equal(deta_db_run(db, "CREATE TABLE prep_sc (a int)", 0, NULL, why, sizeof why),
                     DETA_OK);
    assert_int_equal(deta_db_run(db, "INSERT INTO prep_sc VALUES (1)", 0, NULL, why, sizeof why),
                     DETA_OK);
    assert_int_equal(select_star_columns(db, &err, why, sizeof why), 1);

    /* Outside a transaction: prepared again, run again, the old one deallocated. */
    alter_elsewhere("ALTER TABLE prep_sc ADD COLUMN b int");
    assert_int_equal(select_star_columns(db, &err, why, sizeof why), 2);
    assert_int_equal(err, DETA_OK);
    assert_int_equal(prepared_count(db, "SELECT * FROM prep_sc"), 1);

    /* Inside one: TRANSIENT, and after the rollback the retry works. */
    alter_elsewhere("ALTER TABLE prep_sc ADD COLUMN c int");
    assert_int_equal(deta_db_begin(db, why, sizeof why), DETA_OK);
    assert_int_equal(select_star_columns(db, &err, why, sizeof why), -1);
    assert_int_equal(err, DETA_ERR_TRANSIENT);
    assert_non_null(strstr(why, "0A000"));
    deta_db_rollback(db);
    assert_int_equal(deta_db_begin(db, why, sizeof why), DETA_OK);
    assert_int_equal(select_star_columns(db, &err, why, sizeof why), 3);
    assert_int_equal(deta_db_commit(db, why, sizeof why), DETA_OK);
    assert_int_equal(select_star_columns(db, &err, why, sizeof why), 3);
    /* The first stale one was deallocated (outside a transaction); the second
     * could not be, inside the aborted transaction: it stays, unused, until the
     * session ends. So two, not three. */
    assert_int_equal(prepared_count(db, "SELECT * FROM prep_sc"), 2);
    deta_db_free(db);
}

/* Runs sql on a handle with prepared statements and on one without: the same
 * outcome, error code and errstr. */
static void same_error_both_ways(deta_db_t *on, deta_db_t *off, const char *sql, int nparams,
                                 const char *const *params, deta_err_t want) {
    char why_on[256] = "", why_off[256] = "";
    deta_err_t err_on = DETA_OK, err_off = DETA_OK;
    assert_null(deta_db_exec(on, sql, nparams, params, &err_on, why_on, sizeof why_on));
    assert_null(deta_db_exec(off, sql, nparams, params, &err_off, why_off, sizeof why_off));
    assert_int_equal(err_on, want);
    assert_int_equal(err_off, want);
    assert_string_equal(why_on, why_off);
}

static void test_prepared_errors_as_before(void **state) {
    (void)state;
    deta_db_t *on = new_db_prepared(true);
    deta_db_t *off = new_db_prepared(false);
    const char *bad = "SELECT 1 +";
    same_error_both_ways(on, off, bad, 0, NULL, DETA_ERR_INTERNAL);
    same_error_both_ways(on, off, bad, 0, NULL, DETA_ERR_INTERNAL); /* again: not cached */
    char why[256] = "";
    deta_err_t err;
    assert_null(deta_db_exec(on, bad, 0, NULL, &err, why, sizeof why));
    assert_non_null(strstr(why, "syntax error"));
    assert_non_null(strstr(why, "42601"));
    assert_int_equal(prepared_count(on, bad), 0);
    /* Nothing poisoned: a good statement is prepared and runs. */
    assert_int_equal(plus_one(on, plus_one_sql, 1), 2);
    assert_int_equal(prepared_count(on, plus_one_sql), 1);
    same_error_both_ways(on, off, "SELECT * FROM prep_no_such_table", 0, NULL,
                         DETA_ERR_INTERNAL);

    /* In an aborted transaction a new statement cannot be prepared: 25P02, as
     * before, and it is prepared once the transaction is over. */
    const char *fresh = "SELECT $1::int + 3";
    const char *p[] = {"1"};
    assert_int_equal(deta_db_begin(on, why, sizeof why), DETA_OK);
    assert_int_equal(deta_db_begin(off, why, sizeof why), DETA_OK);
    same_error_both_ways(on, off, bad, 0, NULL, DETA_ERR_INTERNAL);
    same_error_both_ways(on, off, fresh, 1, p, DETA_ERR_INTERNAL);
    assert_null(deta_db_exec(on, fresh, 1, p, &err, why, sizeof why));
    assert_non_null(strstr(why, "25P02"));
    deta_db_rollback(on);
    deta_db_rollback(off);
    assert_int_equal(plus_one(on, fresh, 1), 4);
    assert_int_equal(prepared_count(on, fresh), 1);
    /* A cached statement run with the wrong number of parameters fails as before. */
    const char *two[] = {"1", "2"};
    deta_err_t want = deta_db_run(off, fresh, 2, two, NULL, 0);
    assert_int_not_equal(want, DETA_OK);
    same_error_both_ways(on, off, fresh, 2, two, want);
    assert_int_equal(plus_one(on, fresh, 2), 5);
    deta_db_free(on);
    deta_db_free(off);
}

static void test_prepared_more_than_the_cache_holds(void **state) {
    (void)state;
    deta_db_t *db = new_db_prepared(true);
    enum { N = PREPARED_MAX + 72 };
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < N; i++) {
            char sql[64];
            snprintf(sql, sizeof sql, "SELECT $1::int + %d", i);
            assert_int_equal(plus_one(db, sql, round), round + i);
        }
    }
    /* The first PREPARED_MAX were prepared (this count is past the bound: unnamed). */
    assert_int_equal(prepared_count(db, NULL), PREPARED_MAX);
    assert_int_equal(prepared_count(db, "SELECT $1::int + 0"), 1);
    char last[64];
    snprintf(last, sizeof last, "SELECT $1::int + %d", N - 1);
    assert_int_equal(prepared_count(db, last), 0);
    deta_db_free(db);
}

/* ---- round trips: BEGIN, SAVEPOINT and RELEASE go with the next statement ---- */

/* Each of these runs twice: with prepared statements and without. */
typedef struct pl_ctx {
    deta_db_t *db;
    char why[256];
} pl_ctx_t;

static const char pl_insert_sql[] = "INSERT INTO pl VALUES ($1::int)";

static deta_err_t pl_insert(pl_ctx_t *c, const char *v) {
    const char *params[] = {v};
    c->why[0] = '\0';
    return deta_db_run(c->db, pl_insert_sql, 1, params, c->why, sizeof c->why);
}

/* A fresh table pl, on a handle with prepared statements on or off. */
static pl_ctx_t pl_setup(bool prepare) {
    pl_ctx_t c = {.db = new_db_prepared(prepare)};
    assert_int_equal(deta_db_run(c.db, "DROP TABLE IF EXISTS pl", 0, NULL, c.why, sizeof c.why),
                     DETA_OK);
    assert_int_equal(deta_db_run(c.db, "CREATE TABLE pl (v int)", 0, NULL, c.why, sizeof c.why),
                     DETA_OK);
    return c;
}

/* What another session sees in pl: the values in order, comma-separated. */
static void pl_committed(char *out, size_t size) {
    PGconn *other = ts_pg(dbname);
    PGresult *r =
        PQexec(other, "SELECT coalesce(string_agg(v::text, ',' ORDER BY v), '') FROM pl");
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("reading pl: %s", PQerrorMessage(other));
    snprintf(out, size, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(other);
}

static void assert_committed(const char *want) {
    char got[256];
    pl_committed(got, sizeof got);
    assert_string_equal(got, want);
}

/* Whatever happened, the handle's connection is not left in pipeline mode.
 * (deta_db_conn sends what is queued: call it with nothing queued.) */
static void assert_not_pipelined(deta_db_t *db) {
    char why[256] = "";
    PGconn *conn = deta_db_conn(db, why, sizeof why);
    if (!conn)
        fail_msg("no connection: %s", why);
    assert_int_equal(PQpipelineStatus(conn), PQ_PIPELINE_OFF);
    assert_int_equal(PQisBusy(conn), 0);
}

/* libpq's protocol trace of the handle's connection: what really goes to the
 * server. A round trip is a Sync (extended protocol) or a Query (simple). */
typedef struct trace {
    PGconn *conn;
    FILE *f;
} trace_t;

static trace_t trace_begin(deta_db_t *db) {
    trace_t t = {deta_db_conn(db, NULL, 0), tmpfile()};
    assert_non_null(t.conn);
    assert_non_null(t.f);
    PQtrace(t.conn, t.f);
    PQsetTraceFlags(t.conn, PQTRACE_SUPPRESS_TIMESTAMPS);
    return t;
}

/* Stops the trace; the round trips made, and in *messages (if not NULL) every
 * message sent. The connection must still be the traced one. */
static int trace_end(trace_t *t, int *messages) {
    PQuntrace(t->conn);
    rewind(t->f);
    char line[512];
    int trips = 0, sent = 0;
    while (fgets(line, sizeof line, t->f)) {
        if (strncmp(line, "F\t", 2) != 0)
            continue;
        sent++;
        if (strstr(line, "\tSync") || strstr(line, "\tQuery"))
            trips++;
    }
    fclose(t->f);
    if (messages)
        *messages = sent;
    return trips;
}

static void check_round_trips(void **state) {
    bool prepare = *(const bool *)*state;
    pl_ctx_t c = pl_setup(prepare);
    char *why = c.why;
    assert_int_equal(pl_insert(&c, "0"), DETA_OK); /* prepared now, if it is to be */

    /* A transaction that runs nothing sends nothing. */
    trace_t t = trace_begin(c.db);
    assert_int_equal(deta_db_begin(c.db, why, 256), DETA_OK);
    assert_int_equal(deta_db_commit(c.db, why, 256), DETA_OK);
    assert_int_equal(deta_db_begin(c.db, why, 256), DETA_OK);
    assert_int_equal(deta_db_savepoint(c.db, "a", why, 256), DETA_OK);
    assert_int_equal(deta_db_release(c.db, "a", why, 256), DETA_OK);
    assert_int_equal(deta_db_savepoint(c.db, "b", why, 256), DETA_OK);
    assert_int_equal(deta_db_commit(c.db, why, 256), DETA_OK);
    assert_int_equal(deta_db_begin(c.db, why, 256), DETA_OK);
    assert_int_equal(deta_db_savepoint(c.db, "s", why, 256), DETA_OK);
    assert_int_equal(deta_db_rollback_to(c.db, "s", why, 256), DETA_OK);
    deta_db_rollback(c.db);
    int messages = -1;
    assert_int_equal(trace_end(&t, &messages), 0);
    assert_int_equal(messages, 0);
    /* and leaves nothing behind: the next statement runs outside any transaction. */
    assert_int_equal(pl_insert(&c, "-1"), DETA_OK);
    assert_int_equal(PQtransactionStatus(deta_db_conn(c.db, why, 256)), PQTRANS_IDLE);
    assert_committed("-1,0");
    assert_int_equal(deta_db_begin(c.db, why, 256), DETA_OK);
    assert_int_equal(deta_db_savepoint(c.db, "a", why, 256), DETA_OK);
    assert_int_equal(deta_db_commit(c.db, why, 256), DETA_OK);
    assert_int_equal(query_long(c.db, "SELECT 1"), 1);
    assert_int_equal(PQtransactionStatus(deta_db_conn(c.db, why, 256)), PQTRANS_IDLE);

    /* Each statement carries what was queued before it: one round trip each,
     * and one for COMMIT. */
    t = trace_begin(c.db);
    assert_int_equal(deta_db_begin(c.db, why, 256), DETA_OK);
    assert_int_equal(deta_db_savepoint(c.db, "a", why, 256), DETA_OK);
    assert_int_equal(pl_insert(&c, "1"), DETA_OK);
    assert_int_equal(deta_db_release(c.db, "a", why, 256), DETA_OK);
    assert_int_equal(deta_db_savepoint(c.db, "b", why, 256), DETA_OK);
    assert_int_equal(pl_insert(&c, "2"), DETA_OK);
    assert_int_equal(deta_db_release(c.db, "b", why, 256), DETA_OK);
    assert_committed("-1,0"); /* not yet */
    assert_int_equal(deta_db_commit(c.db, why, 256), DETA_OK);
    assert_int_equal(trace_end(&t, NULL), 3);
    assert_committed("-1,0,1,2");

    /* And a rollback of a transaction that ran something is sent. */
    t = trace_begin(c.db);
    assert_int_equal(deta_db_begin(c.db, why, 256), DETA_OK);
    assert_int_equal(pl_insert(&c, "3"), DETA_OK);
    deta_db_rollback(c.db);
    assert_int_equal(trace_end(&t, NULL), 2);
    assert_committed("-1,0,1,2");
    assert_not_pipelined(c.db);
    deta_db_free(c.db);
}

/* The deferred BEGIN does open the transaction the statements run in. */
static void test_deferred_begin_opens_the_transaction(void **state) {
    (void)state;
    deta_db_t *db = new_db();
    char why[256] = "";
    assert_int_equal(deta_db_begin(db, why, sizeof why), DETA_OK);
    long xid = query_long(db, "SELECT txid_current()");
    assert_int_equal(query_long(db, "SELECT txid_current()"), xid); /* autocommit: another */
    assert_int_equal(PQtransactionStatus(deta_db_conn(db, why, sizeof why)), PQTRANS_INTRANS);
    assert_int_equal(deta_db_commit(db, why, sizeof why), DETA_OK);
    assert_true(query_long(db, "SELECT txid_current()") != xid);

    /* deta_db_conn sends the queue first: the raw connection shows the
     * transaction the caller opened (deta_outbox_add relies on it). */
    assert_int_equal(deta_db_begin(db, why, sizeof why), DETA_OK);
    PGconn *conn = deta_db_conn(db, why, sizeof why);
    assert_non_null(conn);
    assert_int_equal(PQtransactionStatus(conn), PQTRANS_INTRANS);
    assert_int_equal(PQpipelineStatus(conn), PQ_PIPELINE_OFF);
    deta_db_rollback(db);
    assert_int_equal(PQtransactionStatus(deta_db_conn(db, why, sizeof why)), PQTRANS_IDLE);
    deta_db_free(db);
}

static void check_savepoints(void **state) {
    bool prepare = *(const bool *)*state;
    pl_ctx_t c = pl_setup(prepare);
    char *why = c.why;

    /* Work before the savepoint and after the rollback to it is kept. */
    assert_int_equal(deta_db_begin(c.db, why, 256), DETA_OK);
    assert_int_equal(pl_insert(&c, "1"), DETA_OK);
    assert_int_equal(deta_db_savepoint(c.db, "s", why, 256), DETA_OK);
    assert_int_equal(pl_insert(&c, "10"), DETA_OK);
    assert_int_equal(pl_insert(&c, "x"), DETA_ERR_INTERNAL);
    assert_non_null(strstr(why, "22P02"));
    assert_not_pipelined(c.db);
    assert_int_equal(deta_db_rollback_to(c.db, "s", why, 256), DETA_OK);
    assert_int_equal(pl_insert(&c, "2"), DETA_OK);
    assert_int_equal(deta_db_commit(c.db, why, 256), DETA_OK);
    assert_committed("1,2");

    /* Rolling back to a savepoint never sent sends nothing, and drops the
     * savepoints queued after it with it. */
    assert_int_equal(deta_db_begin(c.db, why, 256), DETA_OK);
    assert_int_equal(pl_insert(&c, "3"), DETA_OK);
    trace_t t = trace_begin(c.db);
    assert_int_equal(deta_db_savepoint(c.db, "s2", why, 256), DETA_OK);
    assert_int_equal(deta_db_savepoint(c.db, "s3", why, 256), DETA_OK);
    assert_int_equal(deta_db_rollback_to(c.db, "s2", why, 256), DETA_OK);
    int messages = -1;
    assert_int_equal(trace_end(&t, &messages), 0);
    assert_int_equal(messages, 0);
    assert_int_equal(pl_insert(&c, "4"), DETA_OK);
    assert_int_equal(deta_db_commit(c.db, why, 256), DETA_OK);
    assert_committed("1,2,3,4");
    assert_int_equal(deta_db_begin(c.db, why, 256), DETA_OK);
    assert_int_equal(deta_db_savepoint(c.db, "s2", why, 256), DETA_OK);
    assert_int_equal(deta_db_savepoint(c.db, "s3", why, 256), DETA_OK);
    assert_int_equal(deta_db_rollback_to(c.db, "s2", why, 256), DETA_OK);
    assert_int_equal(deta_db_rollback_to(c.db, "s3", why, 256), DETA_ERR_INTERNAL);
    assert_non_null(strstr(why, "3B001")); /* s3 went with s2: none exists */
    deta_db_rollback(c.db);

    /* A savepoint sent with a statement, a later one still queued: both go,
     * with the ROLLBACK TO, in one round trip. */
    assert_int_equal(deta_db_begin(c.db, why, 256), DETA_OK);
    assert_int_equal(deta_db_savepoint(c.db, "a", why, 256), DETA_OK);
    assert_int_equal(pl_insert(&c, "5"), DETA_OK);
    assert_int_equal(deta_db_savepoint(c.db, "b", why, 256), DETA_OK);
    t = trace_begin(c.db);
    assert_int_equal(deta_db_rollback_to(c.db, "a", why, 256), DETA_OK);
    assert_int_equal(trace_end(&t, NULL), 1);
    assert_int_equal(pl_insert(&c, "6"), DETA_OK);
    assert_int_equal(deta_db_rollback_to(c.db, "b", why, 256), DETA_ERR_INTERNAL);
    assert_non_null(strstr(why, "3B001")); /* b was inside a */
    deta_db_rollback(c.db);
    assert_committed("1,2,3,4");

    /* A savepoint queued after a RELEASE of an inner one is still cut back
     * without a round trip; after a RELEASE of an outer one (which destroys it
     * too), the ROLLBACK TO is sent and fails as Postgres says. */
    assert_int_equal(deta_db_begin(c.db, why, 256), DETA_OK);
    assert_int_equal(deta_db_savepoint(c.db, "a", why, 256), DETA_OK);
    assert_int_equal(pl_insert(&c, "20"), DETA_OK);
    t = trace_begin(c.db);
    assert_int_equal(deta_db_savepoint(c.db, "b", why, 256), DETA_OK);
    assert_int_equal(deta_db_savepoint(c.db, "c", why, 256), DETA_OK);
    assert_int_equal(deta_db_release(c.db, "c", why, 256), DETA_OK);
    assert_int_equal(deta_db_rollback_to(c.db, "b", why, 256), DETA_OK);
    assert_int_equal(trace_end(&t, &messages), 0);
    assert_int_equal(messages, 0);
    assert_int_equal(deta_db_savepoint(c.db, "b", why, 256), DETA_OK);
    assert_int_equal(deta_db_release(c.db, "a", why, 256), DETA_OK);
    assert_int_equal(deta_db_rollback_to(c.db, "b", why, 256), DETA_ERR_INTERNAL);
    assert_non_null(strstr(why, "3B001"));
    deta_db_rollback(c.db);

    /* A RELEASE queued after the savepoint: rolling back to it is sent, and
     * fails as Postgres says. */
    assert_int_equal(deta_db_begin(c.db, why, 256), DETA_OK);
    assert_int_equal(deta_db_savepoint(c.db, "a", why, 256), DETA_OK);
    assert_int_equal(pl_insert(&c, "7"), DETA_OK);
    assert_int_equal(deta_db_release(c.db, "a", why, 256), DETA_OK);
    assert_int_equal(deta_db_rollback_to(c.db, "a", why, 256), DETA_ERR_INTERNAL);
    assert_non_null(strstr(why, "3B001"));
    assert_not_pipelined(c.db);
    assert_int_not_equal(deta_db_commit(c.db, why, 256), DETA_OK); /* aborted */
    assert_committed("1,2,3,4");

    /* Release, then commit. */
    assert_int_equal(deta_db_begin(c.db, why, 256), DETA_OK);
    assert_int_equal(deta_db_savepoint(c.db, "a", why, 256), DETA_OK);
    assert_int_equal(pl_insert(&c, "8"), DETA_OK);
    assert_int_equal(deta_db_release(c.db, "a", why, 256), DETA_OK);
    assert_int_equal(deta_db_savepoint(c.db, "a", why, 256), DETA_OK);
    assert_int_equal(pl_insert(&c, "9"), DETA_OK);
    assert_int_equal(deta_db_release(c.db, "a", why, 256), DETA_OK);
    assert_int_equal(deta_db_commit(c.db, why, 256), DETA_OK);
    assert_committed("1,2,3,4,8,9");
    assert_not_pipelined(c.db);
    deta_db_free(c.db);
}

static void check_queued_errors(void **state) {
    bool prepare = *(const bool *)*state;
    pl_ctx_t c = pl_setup(prepare);
    char *why = c.why;
    deta_err_t err = DETA_OK;

    /* Outside a transaction a SAVEPOINT is queued all the same; Postgres's
     * refusal is the next statement's error, and that statement did not run. */
    assert_int_equal(deta_db_savepoint(c.db, "s", why, 256), DETA_OK);
    assert_int_equal(pl_insert(&c, "1"), DETA_ERR_INTERNAL);
    assert_non_null(strstr(why, "SAVEPOINT can only be used in transaction blocks"));
    assert_non_null(strstr(why, "25P01"));
    assert_not_pipelined(c.db);
    assert_committed("");
    assert_int_equal(query_long(c.db, "SELECT 2"), 2); /* consumed: the next one runs */
    assert_int_equal(deta_db_release(c.db, "s", why, 256), DETA_OK);
    assert_null(deta_db_exec(c.db, "SELECT 3", 0, NULL, &err, why, 256));
    assert_int_equal(err, DETA_ERR_INTERNAL);
    assert_non_null(strstr(why, "RELEASE SAVEPOINT can only be used in transaction blocks"));
    assert_int_equal(deta_db_rollback_to(c.db, "s", why, 256), DETA_ERR_INTERNAL);
    assert_non_null(strstr(why, "ROLLBACK TO SAVEPOINT can only be used in transaction blocks"));
    /* Nor is a queued one cut back outside a transaction: Postgres says no. */
    assert_int_equal(deta_db_savepoint(c.db, "s", why, 256), DETA_OK);
    assert_int_equal(deta_db_rollback_to(c.db, "s", why, 256), DETA_ERR_INTERNAL);
    assert_non_null(strstr(why, "25P01"));
    assert_int_equal(deta_db_savepoint(c.db, "s", why, 256), DETA_OK);
    assert_int_equal(deta_db_release(c.db, "s", why, 256), DETA_OK);
    assert_null(deta_db_exec(c.db, "SELECT 4", 0, NULL, &err, why, 256));
    assert_non_null(strstr(why, "25P01"));

    /* Inside one: the first failure is reported, not the aborted statement's. */
    assert_int_equal(deta_db_begin(c.db, why, 256), DETA_OK);
    assert_int_equal(pl_insert(&c, "2"), DETA_OK);
    assert_int_equal(deta_db_release(c.db, "nope", why, 256), DETA_OK);
    assert_int_equal(deta_db_savepoint(c.db, "s", why, 256), DETA_OK);
    assert_int_equal(pl_insert(&c, "3"), DETA_ERR_INTERNAL);
    assert_non_null(strstr(why, "\"nope\""));
    assert_non_null(strstr(why, "3B001"));
    assert_not_pipelined(c.db);
    assert_int_equal(deta_db_commit(c.db, why, 256), DETA_ERR_INTERNAL);
    assert_non_null(strstr(why, "rolled back"));
    assert_committed("");

    /* A SAVEPOINT queued outside a transaction, then begin: its error comes
     * with the first statement, which did not run; rollback cleans up. */
    assert_int_equal(deta_db_savepoint(c.db, "s", why, 256), DETA_OK);
    assert_int_equal(deta_db_begin(c.db, why, 256), DETA_OK);
    assert_int_equal(pl_insert(&c, "4"), DETA_ERR_INTERNAL);
    assert_non_null(strstr(why, "25P01"));
    deta_db_rollback(c.db);
    assert_int_equal(deta_db_begin(c.db, why, 256), DETA_OK);
    assert_int_equal(pl_insert(&c, "5"), DETA_OK);
    assert_int_equal(deta_db_commit(c.db, why, 256), DETA_OK);
    assert_committed("5");
    deta_db_free(c.db);
}

static void test_savepoint_names(void **state) {
    (void)state;
    deta_db_t *db = new_db();
    char why[256] = "";
    char longest[64], too_long[65];
    memset(longest, 'a', 63);
    longest[63] = '\0';
    memset(too_long, 'b', 64);
    too_long[64] = '\0';
    const char *bad[] = {NULL, "", "A", "sP", "9a", "a-b", "a b", "a;drop table pl",
                         "\"q\"", "\xc3\xa9", too_long};
    deta_err_t (*const fns[])(deta_db_t *, const char *, char *, size_t) = {
        deta_db_savepoint, deta_db_release, deta_db_rollback_to};
    assert_int_equal(deta_db_begin(db, why, sizeof why), DETA_OK);
    trace_t t = trace_begin(db);
    for (size_t f = 0; f < 3; f++) {
        for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
            why[0] = '\0';
            assert_int_equal(fns[f](db, bad[i], why, sizeof why), DETA_ERR_INVALID);
            assert_non_null(strstr(why, "[a-z_][a-z0-9_]*"));
        }
        assert_int_equal(fns[f](NULL, "a", why, sizeof why), DETA_ERR_INVALID);
    }
    int messages = -1;
    assert_int_equal(trace_end(&t, &messages), 0);
    assert_int_equal(messages, 0); /* refused before anything was queued or sent */
    /* The longest name and the other characters allowed. */
    assert_int_equal(deta_db_savepoint(db, longest, why, sizeof why), DETA_OK);
    assert_int_equal(deta_db_savepoint(db, "_x9_", why, sizeof why), DETA_OK);
    assert_int_equal(query_long(db, "SELECT 1"), 1);
    assert_int_equal(deta_db_rollback_to(db, "_x9_", why, sizeof why), DETA_OK);
    assert_int_equal(deta_db_release(db, longest, why, sizeof why), DETA_OK);
    assert_int_equal(query_long(db, "SELECT 2"), 2);
    assert_int_equal(deta_db_commit(db, why, sizeof why), DETA_OK);
    deta_db_free(db);
}

/* More savepoints than the queue holds: the full queue is sent on its own. */
static void test_savepoint_queue_overflow(void **state) {
    (void)state;
    pl_ctx_t c = pl_setup(true);
    char *why = c.why;
    assert_int_equal(deta_db_begin(c.db, why, 256), DETA_OK);
    for (int i = 0; i < 40; i++) {
        char name[16];
        snprintf(name, sizeof name, "s%d", i);
        assert_int_equal(deta_db_savepoint(c.db, name, why, 256), DETA_OK);
    }
    assert_int_equal(pl_insert(&c, "1"), DETA_OK);
    assert_int_equal(deta_db_rollback_to(c.db, "s39", why, 256), DETA_OK);
    assert_int_equal(pl_insert(&c, "2"), DETA_OK);
    assert_int_equal(deta_db_rollback_to(c.db, "s0", why, 256), DETA_OK);
    assert_int_equal(pl_insert(&c, "3"), DETA_OK);
    assert_int_equal(deta_db_rollback_to(c.db, "s1", why, 256), DETA_ERR_INTERNAL);
    deta_db_rollback(c.db);
    assert_committed("");
    assert_int_equal(deta_db_begin(c.db, why, 256), DETA_OK);
    for (int i = 0; i < 40; i++) {
        char name[16];
        snprintf(name, sizeof name, "s%d", i);
        assert_int_equal(deta_db_savepoint(c.db, name, why, 256), DETA_OK);
    }
    assert_int_equal(pl_insert(&c, "1"), DETA_OK);
    assert_int_equal(deta_db_rollback_to(c.db, "s0", why, 256), DETA_OK);
    assert_int_equal(pl_insert(&c, "2"), DETA_OK);
    assert_int_equal(deta_db_commit(c.db, why, 256), DETA_OK);
    assert_committed("2");
    assert_not_pipelined(c.db);
    deta_db_free(c.db);
}

/* BEGIN, SAVEPOINT ... sent as text through deta_db_run still work, alone and
 * mixed with the queued ones. */
static void test_transaction_commands_as_text(void **state) {
    (void)state;
    pl_ctx_t c = pl_setup(true);
    char *why = c.why;
    assert_int_equal(deta_db_run(c.db, "BEGIN", 0, NULL, why, 256), DETA_OK);
    assert_int_equal(pl_insert(&c, "1"), DETA_OK);
    assert_int_equal(deta_db_run(c.db, "SAVEPOINT t", 0, NULL, why, 256), DETA_OK);
    assert_int_equal(pl_insert(&c, "x"), DETA_ERR_INTERNAL);
    assert_int_equal(deta_db_run(c.db, "ROLLBACK TO SAVEPOINT t", 0, NULL, why, 256), DETA_OK);
    assert_int_equal(pl_insert(&c, "2"), DETA_OK);
    assert_int_equal(deta_db_run(c.db, "COMMIT", 0, NULL, why, 256), DETA_OK);
    assert_committed("1,2");

    assert_int_equal(deta_db_begin(c.db, why, 256), DETA_OK);
    assert_int_equal(deta_db_run(c.db, "SAVEPOINT t", 0, NULL, why, 256), DETA_OK);
    assert_int_equal(pl_insert(&c, "3"), DETA_OK);
    assert_int_equal(deta_db_rollback_to(c.db, "t", why, 256), DETA_OK);
    assert_int_equal(deta_db_savepoint(c.db, "u", why, 256), DETA_OK);
    assert_int_equal(deta_db_run(c.db, "ROLLBACK TO SAVEPOINT u", 0, NULL, why, 256), DETA_OK);
    assert_int_equal(pl_insert(&c, "4"), DETA_OK);
    assert_int_equal(deta_db_commit(c.db, why, 256), DETA_OK);
    assert_committed("1,2,4");
    assert_not_pipelined(c.db);
    deta_db_free(c.db);
}

/* A statement first used after queued commands is prepared (once), and not
 * when a queued command failed. */
static void test_prepared_after_queued_commands(void **state) {
    (void)state;
    deta_db_t *db = new_db_prepared(true);
    char why[256] = "";
    const char *fresh = "SELECT $1::int + 7";
    assert_int_equal(deta_db_savepoint(db, "s", why, sizeof why), DETA_OK); /* fails: no tx */
    const char *p[] = {"1"};
    deta_err_t err = DETA_OK;
    assert_null(deta_db_exec(db, fresh, 1, p, &err, why, sizeof why));
    assert_int_equal(err, DETA_ERR_INTERNAL);
    assert_non_null(strstr(why, "25P01"));
    assert_int_equal(prepared_count(db, fresh), 0);
    assert_int_equal(deta_db_begin(db, why, sizeof why), DETA_OK);
    assert_int_equal(deta_db_savepoint(db, "s", why, sizeof why), DETA_OK);
    assert_int_equal(plus_one(db, fresh, 1), 8);
    assert_int_equal(deta_db_release(db, "s", why, sizeof why), DETA_OK);
    assert_int_equal(plus_one(db, fresh, 2), 9);
    assert_int_equal(deta_db_commit(db, why, sizeof why), DETA_OK);
    assert_int_equal(prepared_count(db, fresh), 1);
    assert_not_pipelined(db);
    deta_db_free(db);
}

static void check_backend_killed_in_transaction(void **state) {
    bool prepare = *(const bool *)*state;
    pl_ctx_t c = pl_setup(prepare);
    char *why = c.why;
    /* Between begin and the first statement: nothing was sent, but the
     * transaction is the caller's, so the loss is reported all the same. */
    long pid = query_long(c.db, "SELECT pg_backend_pid()");
    assert_int_equal(deta_db_begin(c.db, why, 256), DETA_OK);
    assert_int_equal(deta_db_savepoint(c.db, "s", why, 256), DETA_OK);
    kill_backend(pid);
    assert_int_equal(pl_insert(&c, "1"), DETA_ERR_TRANSIENT);
    assert_int_equal(pl_insert(&c, "2"), DETA_ERR_TRANSIENT);
    assert_int_equal(deta_db_savepoint(c.db, "t", why, 256), DETA_ERR_TRANSIENT);
    assert_int_equal(deta_db_release(c.db, "s", why, 256), DETA_ERR_TRANSIENT);
    assert_int_equal(deta_db_rollback_to(c.db, "s", why, 256), DETA_ERR_TRANSIENT);
    deta_db_rollback(c.db);
    assert_int_equal(deta_db_begin(c.db, why, 256), DETA_OK);
    assert_int_equal(pl_insert(&c, "3"), DETA_OK);
    assert_int_equal(deta_db_commit(c.db, why, 256), DETA_OK);
    assert_committed("3");
    assert_true(query_long(c.db, "SELECT pg_backend_pid()") != pid);

    /* In the middle of a pipeline: the backend dies while the queue and the
     * statement are in flight. */
    assert_int_equal(deta_db_begin(c.db, why, 256), DETA_OK);
    assert_int_equal(deta_db_savepoint(c.db, "s", why, 256), DETA_OK);
    assert_int_equal(deta_db_run(c.db, "SELECT pg_terminate_backend(pg_backend_pid())", 0, NULL,
                                 why, 256),
                     DETA_ERR_TRANSIENT);
    assert_int_equal(pl_insert(&c, "4"), DETA_ERR_TRANSIENT);
    assert_int_equal(deta_db_commit(c.db, why, 256), DETA_ERR_TRANSIENT);
    assert_not_pipelined(c.db);
    assert_int_equal(deta_db_begin(c.db, why, 256), DETA_OK);
    assert_int_equal(pl_insert(&c, "5"), DETA_OK);
    assert_int_equal(deta_db_commit(c.db, why, 256), DETA_OK);
    assert_committed("3,5");
    deta_db_free(c.db);
}

/* ---- migrations ---- */

static long migrations_recorded(deta_db_t *db, const char *component) {
    const char *params[] = {component};
    deta_err_t err;
    PGresult *r = deta_db_exec(db, "SELECT count(*) FROM schema_migrations WHERE component = $1",
                               1, params, &err, NULL, 0);
    assert_non_null(r);
    long n = atol(PQgetvalue(r, 0, 0));
    PQclear(r);
    return n;
}

static void test_migrations(void **state) {
    (void)state;
    deta_db_t *db = new_db();
    char why[512] = "";
    /* Not idempotent on purpose: running v1 twice would fail. */
    deta_migration_t m[] = {
        {1, "create m1", "CREATE TABLE m1 (a int); INSERT INTO m1 VALUES (1)"},
        {2, "create m2", "CREATE TABLE m2 (b int)"},
        {3, "add column", "ALTER TABLE m1 ADD COLUMN c text"},
        {4, "broken", "CREATE TABLE m4 (a int); SELECT no_such_function()"},
    };
    assert_int_equal(deta_db_migrate(db, "comp-a", m, 2, why, sizeof why), DETA_OK);
    assert_int_equal(migrations_recorded(db, "comp-a"), 2);
    assert_int_equal(query_long(db, "SELECT count(*) FROM m1"), 1);
    assert_int_equal(query_long(db, "SELECT count(*) FROM schema_migrations"
                                    " WHERE component = 'comp-a' AND version = 2"
                                    " AND name = 'create m2' AND applied_at <= now()"),
                     1);

    /* Second run: nothing to do. */
    assert_int_equal(deta_db_migrate(db, "comp-a", m, 2, why, sizeof why), DETA_OK);
    assert_int_equal(query_long(db, "SELECT count(*) FROM m1"), 1);
    /* A new version applies alone. */
    assert_int_equal(deta_db_migrate(db, "comp-a", m, 3, why, sizeof why), DETA_OK);
    assert_int_equal(migrations_recorded(db, "comp-a"), 3);
    assert_int_equal(query_long(db, "SELECT count(*) FROM information_schema.columns"
                                    " WHERE table_name = 'm1' AND column_name = 'c'"),
                     1);

    /* A failing one rolls back entirely, is not recorded, and is reported. */
    why[0] = 0;
    assert_int_equal(deta_db_migrate(db, "comp-a", m, 4, why, sizeof why), DETA_ERR_INTERNAL);
    assert_non_null(strstr(why, "comp-a migration 4 (broken)"));
    assert_non_null(strstr(why, "no_such_function"));
    assert_int_equal(migrations_recorded(db, "comp-a"), 3);
    assert_int_equal(query_long(db, "SELECT count(*) FROM pg_tables WHERE tablename = 'm4'"), 0);
    /* and the connection is usable, outside any transaction */
    assert_int_equal(deta_db_begin(db, why, sizeof why), DETA_OK);
    deta_db_rollback(db);

    /* Components are independent sets of versions. */
    deta_migration_t other[] = {{1, "other m1", "CREATE TABLE other_m1 (a int)"}};
    assert_int_equal(deta_db_migrate(db, "comp-b", other, 1, why, sizeof why), DETA_OK);
    assert_int_equal(migrations_recorded(db, "comp-b"), 1);

    /* Bad sets are refused before anything runs. */
    deta_migration_t desc[] = {{2, "two", "CREATE TABLE d2 (a int)"},
                               {1, "one", "CREATE TABLE d1 (a int)"}};
    assert_int_equal(deta_db_migrate(db, "comp-c", desc, 2, why, sizeof why), DETA_ERR_INVALID);
    assert_int_equal(query_long(db, "SELECT count(*) FROM pg_tables WHERE tablename = 'd2'"), 0);
    deta_migration_t dup[] = {{1, "one", "SELECT 1"}, {1, "again", "SELECT 1"}};
    assert_int_equal(deta_db_migrate(db, "comp-c", dup, 2, why, sizeof why), DETA_ERR_INVALID);
    deta_migration_t nosql[] = {{1, "one", NULL}};
    assert_int_equal(deta_db_migrate(db, "comp-c", nosql, 1, why, sizeof why), DETA_ERR_INVALID);
    assert_int_equal(deta_db_migrate(db, "", other, 1, why, sizeof why), DETA_ERR_INVALID);
    assert_int_equal(deta_db_migrate(db, "comp-c", NULL, 1, why, sizeof why), DETA_ERR_INVALID);
    /* Not inside a caller's transaction. */
    assert_int_equal(deta_db_begin(db, why, sizeof why), DETA_OK);
    assert_int_equal(deta_db_migrate(db, "comp-d", other, 1, why, sizeof why), DETA_ERR_INVALID);
    deta_db_rollback(db);
    deta_db_free(db);
}

/* Two instances migrating at once: each version runs once. */
static const deta_migration_t slow_set[] = {
    {1, "slow create", "SELECT pg_sleep(0.3); CREATE TABLE slow_t (a int)"},
    {2, "slow insert", "INSERT INTO slow_t VALUES (1)"},
};

static void *migrate_thread(void *arg) {
    deta_err_t *out = arg;
    deta_db_t *db = deta_db_new(&cfg);
    char why[256];
    *out = deta_db_migrate(db, "slow", slow_set, 2, why, sizeof why);
    deta_db_free(db);
    return NULL;
}

static void test_concurrent_migrations(void **state) {
    (void)state;
    pthread_t t[3];
    deta_err_t res[3];
    for (int i = 0; i < 3; i++)
        assert_int_equal(pthread_create(&t[i], NULL, migrate_thread, &res[i]), 0);
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(res[i], DETA_OK);
    }
    deta_db_t *db = new_db();
    assert_int_equal(migrations_recorded(db, "slow"), 2);
    assert_int_equal(query_long(db, "SELECT count(*) FROM slow_t"), 1);
    deta_db_free(db);
}

/* ---- pool ---- */

typedef struct pool_probe {
    deta_db_pool_t *pool;
    deta_db_t *db;
    long pid;
    bool same_twice;
    pthread_barrier_t *hold; /* keeps the threads alive together */
} pool_probe_t;

static void *pool_thread(void *arg) {
    pool_probe_t *p = arg;
    p->db = deta_db_pool_get(p->pool);
    p->same_twice = p->db && deta_db_pool_get(p->pool) == p->db;
    p->pid = p->db ? query_long(p->db, "SELECT pg_backend_pid()") : -1;
    pthread_barrier_wait(p->hold);
    return NULL;
}

static long sessions_of_service(void) {
    const char *params[] = {cfg.service};
    PGconn *admin = ts_pg("postgres");
    long n = ts_pg_long(admin, "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                        1, params);
    PQfinish(admin);
    return n;
}

static void test_pool(void **state) {
    (void)state;
    deta_db_pool_t *pool = deta_db_pool_new(&cfg);
    assert_non_null(pool);
    deta_db_t *mine = deta_db_pool_get(pool);
    assert_non_null(mine);
    long my_pid = query_long(mine, "SELECT pg_backend_pid()");

    pthread_barrier_t hold;
    pthread_barrier_init(&hold, NULL, 3);
    pool_probe_t probes[2] = {{.pool = pool, .hold = &hold}, {.pool = pool, .hold = &hold}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, pool_thread, &probes[i]), 0);
    pthread_barrier_wait(&hold);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&hold);

    for (int i = 0; i < 2; i++) {
        assert_true(probes[i].same_twice);
        assert_true(probes[i].db != mine);
        assert_true(probes[i].pid > 0 && probes[i].pid != my_pid);
    }
    assert_true(probes[0].db != probes[1].db);
    assert_true(probes[0].pid != probes[1].pid);

    /* The threads' connections closed as they exited; ours is still open. */
    long n = 0;
    for (int i = 0; i < 50 && (n = sessions_of_service()) != 1; i++)
        ts_sleep_ms(50);
    assert_int_equal(n, 1);
    assert_true(deta_db_pool_get(pool) == mine);
    deta_db_pool_free(pool);
    for (int i = 0; i < 50 && (n = sessions_of_service()) != 0; i++)
        ts_sleep_ms(50);
    assert_int_equal(n, 0);

    assert_null(deta_db_pool_new(NULL));
    assert_null(deta_db_pool_get(NULL));
    deta_db_pool_free(NULL);
}

/* ---- inbox ---- */

static void test_inbox_claim(void **state) {
    (void)state;
    deta_db_t *db = new_db();
    char why[256] = "";
    assert_int_equal(deta_db_migrate(db, "inbox", deta_inbox_migrations,
                                     deta_inbox_migrations_count, why, sizeof why),
                     DETA_OK);
    const char *ev = "3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f";
    bool first = false;

    assert_int_equal(deta_db_begin(db, why, sizeof why), DETA_OK);
    assert_int_equal(deta_inbox_claim(db, "svc-a", ev, &first, why, sizeof why), DETA_OK);
    assert_true(first);
    deta_db_rollback(db); /* the claim goes with the rollback */

    assert_int_equal(deta_db_begin(db, why, sizeof why), DETA_OK);
    assert_int_equal(deta_inbox_claim(db, "svc-a", ev, &first, why, sizeof why), DETA_OK);
    assert_true(first);
    assert_int_equal(deta_inbox_claim(db, "svc-a", ev, &first, why, sizeof why), DETA_OK);
    assert_false(first);
    assert_int_equal(deta_db_commit(db, why, sizeof why), DETA_OK);

    assert_int_equal(deta_inbox_claim(db, "svc-a", ev, &first, why, sizeof why), DETA_OK);
    assert_false(first);
    /* Another consumer has its own record of the same event. */
    assert_int_equal(deta_inbox_claim(db, "svc-b", ev, &first, why, sizeof why), DETA_OK);
    assert_true(first);

    assert_int_equal(deta_inbox_claim(db, "svc-a", "not-a-uuid", &first, why, sizeof why),
                     DETA_ERR_INVALID);
    assert_int_equal(deta_inbox_claim(db, "", ev, &first, why, sizeof why), DETA_ERR_INVALID);
    assert_int_equal(deta_inbox_claim(db, "svc-a", NULL, &first, why, sizeof why),
                     DETA_ERR_INVALID);
    assert_int_equal(query_long(db, "SELECT count(*) FROM processed_events"), 2);
    deta_db_free(db);
}

/* A check run twice: with the statement cache and without it (its state says which). */
static const bool PREPARED = true, UNNAMED = false;
#define BOTH_WAYS(f)                                                                   \
    {#f " (prepared)", f, NULL, NULL, (void *)&PREPARED},                             \
    {                                                                                  \
        #f " (unnamed)", f, NULL, NULL, (void *)&UNNAMED                               \
    }

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exec_with_params),
        cmocka_unit_test(test_array_parameter),
        cmocka_unit_test(test_error_mapping),
        cmocka_unit_test(test_transient_sqlstates),
        cmocka_unit_test(test_session_bounds),
        cmocka_unit_test(test_session_number),
        cmocka_unit_test(test_unreachable_server),
        cmocka_unit_test(test_ping_and_conn),
        cmocka_unit_test(test_transactions),
        cmocka_unit_test(test_reconnect_after_backend_killed),
        cmocka_unit_test(test_prepared_once_per_session),
        cmocka_unit_test(test_prepared_off),
        cmocka_unit_test(test_prepared_after_deallocate_all),
        cmocka_unit_test(test_prepared_after_backend_killed),
        cmocka_unit_test(test_prepared_after_schema_change),
        cmocka_unit_test(test_prepared_errors_as_before),
        cmocka_unit_test(test_prepared_more_than_the_cache_holds),
        BOTH_WAYS(check_round_trips),
        cmocka_unit_test(test_deferred_begin_opens_the_transaction),
        BOTH_WAYS(check_savepoints),
        BOTH_WAYS(check_queued_errors),
        cmocka_unit_test(test_savepoint_names),
        cmocka_unit_test(test_savepoint_queue_overflow),
        cmocka_unit_test(test_transaction_commands_as_text),
        cmocka_unit_test(test_prepared_after_queued_commands),
        BOTH_WAYS(check_backend_killed_in_transaction),
        cmocka_unit_test(test_migrations),
        cmocka_unit_test(test_concurrent_migrations),
        cmocka_unit_test(test_pool),
        cmocka_unit_test(test_inbox_claim),
    };
    return cmocka_run_group_tests(tests, setup_db, teardown_db);
}
