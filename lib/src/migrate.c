/*
 * migrate.c - versioned schema migrations (deta_db_migrate, declared in deta/db.h
 * beside the connections it runs on).
 *
 * A component ("order-service", "outbox", "inbox") names a set of migrations
 * whose versions ascend. They take a session advisory lock, so that instances
 * starting together apply each version once; each version runs in its own
 * transaction together with its schema_migrations row, through the simple-query
 * protocol (deta_db_run_script) so that one migration may hold several
 * statements. A version already recorded is skipped; a failed one is rolled
 * back with its row, and the error names it.
 */
#include <stdbool.h>
#include <stdio.h>

#include "db_internal.h"
#include "deta/db.h"

#define MIGRATION_LOCK "deta_migrations"

static const char migrations_table_sql[] =
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " component text NOT NULL,"
    " version int NOT NULL,"
    " name text NOT NULL,"
    " applied_at timestamptz NOT NULL DEFAULT now(),"
    " PRIMARY KEY (component, version))";

static deta_err_t check_migrations(const char *component, const deta_migration_t *m, size_t n,
                                   char *errstr, size_t errsize) {
    if (!component || !*component || (n > 0 && !m))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "bad arguments to deta_db_migrate");
    for (size_t i = 0; i < n; i++) {
        if (!m[i].sql || !m[i].name || m[i].version < 1)
            return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                             "%s migration #%zu lacks sql, name or a positive version",
                             component, i);
        if (i > 0 && m[i].version <= m[i - 1].version)
            return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                             "%s migration versions must ascend (%d after %d)", component,
                             m[i].version, m[i - 1].version);
    }
    return DETA_OK;
}

static deta_err_t is_applied(deta_db_t *db, const char *component, int version, bool *applied,
                             char *errstr, size_t errsize) {
    char vbuf[16];
    snprintf(vbuf, sizeof vbuf, "%d", version);
    const char *params[] = {component, vbuf};
    deta_err_t err;
    PGresult *res = deta_db_exec(db,
                                 "SELECT 1 FROM schema_migrations"
                                 " WHERE component = $1 AND version = $2::int",
                                 2, params, &err, errstr, errsize);
    if (res)
        *applied = PQntuples(res) > 0;
    PQclear(res);
    return err;
}

static deta_err_t apply_one(deta_db_t *db, const char *component, const deta_migration_t *m,
                            char *errstr, size_t errsize) {
    char why[512] = "";
    char vbuf[16];
    snprintf(vbuf, sizeof vbuf, "%d", m->version);
    const char *params[] = {component, vbuf, m->name};
    deta_err_t err = deta_db_begin(db, why, sizeof why);
    if (err == DETA_OK)
        err = deta_db_run_script(db, m->sql, why, sizeof why);
    if (err == DETA_OK)
        err = deta_db_run(db,
                          "INSERT INTO schema_migrations (component, version, name)"
                          " VALUES ($1, $2::int, $3)",
                          3, params, why, sizeof why);
    if (err == DETA_OK)
        err = deta_db_commit(db, why, sizeof why);
    else
        deta_db_rollback(db);
    if (err != DETA_OK)
        return deta_errf(err, errstr, errsize, "%s migration %d (%s) failed: %s", component,
                         m->version, m->name, why);
    return DETA_OK;
}

static deta_err_t apply_pending(deta_db_t *db, const char *component, const deta_migration_t *m,
                                size_t n, char *errstr, size_t errsize) {
    deta_err_t err = deta_db_run_script(db, migrations_table_sql, errstr, errsize);
    for (size_t i = 0; i < n && err == DETA_OK; i++) {
        bool applied = false;
        err = is_applied(db, component, m[i].version, &applied, errstr, errsize);
        if (err == DETA_OK && !applied)
            err = apply_one(db, component, &m[i], errstr, errsize);
    }
    return err;
}

deta_err_t deta_db_migrate(deta_db_t *db, const char *component, const deta_migration_t *m,
                           size_t n, char *errstr, size_t errsize) {
    if (!db)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "no database handle");
    deta_err_t err = check_migrations(component, m, n, errstr, errsize);
    if (err != DETA_OK)
        return err;
    if (deta_db_in_tx(db))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "migrations cannot run inside an open transaction");
    const char *lock[] = {MIGRATION_LOCK};
    err = deta_db_run(db, "SELECT pg_advisory_lock(hashtext($1))", 1, lock, errstr, errsize);
    if (err != DETA_OK)
        return err;
    err = apply_pending(db, component, m, n, errstr, errsize);
    /* If the connection is gone, so is the session lock. */
    deta_db_run(db, "SELECT pg_advisory_unlock(hashtext($1))", 1, lock, NULL, 0);
    return err;
}
