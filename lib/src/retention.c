/*
 * retention.c - the batched purge of rows past their retention (deta/retention.h).
 */
#include "deta/retention.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libpq-fe.h>

#include "deta/clock.h"
#include "deta/log.h"

#define IDENT_MAX 63 /* Postgres's NAMEDATALEN - 1 */

struct deta_retention {
    char table[IDENT_MAX + 1];
    char column[IDENT_MAX + 1];
    char what[64];
    long keep_s;
    long next_ms;
    deta_counter_t *purged;
};

/* Identifiers go into the SQL text, so only plain lower-case names pass. */
static bool plain_identifier(const char *s) {
    if (!s || !*s || strlen(s) > IDENT_MAX || !((*s >= 'a' && *s <= 'z') || *s == '_'))
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return false;
    return true;
}

deta_err_t deta_retention_purge(deta_db_t *db, const char *table, const char *column,
                                long keep_s, int max_rows, long *purged, char *errstr,
                                size_t errsize) {
    if (!db || keep_s < 0 || max_rows <= 0 || !purged || !plain_identifier(table) ||
        !plain_identifier(column))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "bad arguments to the purge");
    *purged = 0;
    char sql[512], secs[24], limit[16];
    snprintf(sql, sizeof sql,
             "DELETE FROM %s WHERE ctid = ANY (ARRAY (SELECT ctid FROM %s WHERE %s <"
             " now() - make_interval(secs => $1::bigint) LIMIT $2::int))",
             table, table, column);
    snprintf(secs, sizeof secs, "%ld", keep_s);
    snprintf(limit, sizeof limit, "%d", max_rows);
    const char *params[] = {secs, limit};
    deta_err_t err;
    PGresult *res = deta_db_exec(db, sql, 2, params, &err, errstr, errsize);
    if (!res)
        return err;
    *purged = atol(PQcmdTuples(res));
    PQclear(res);
    return DETA_OK;
}

deta_retention_t *deta_retention_new(const deta_retention_spec_t *spec,
                                     deta_metrics_t *metrics, char *errstr, size_t errsize) {
    if (!spec || !plain_identifier(spec->table) || !plain_identifier(spec->column) ||
        spec->keep_s < 0) {
        deta_errf(DETA_ERR_INVALID, errstr, errsize,
                  "a retention needs a table, its age column and a retention >= 0");
        return NULL;
    }
    deta_retention_t *r = calloc(1, sizeof *r);
    if (!r) {
        deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
        return NULL;
    }
    snprintf(r->table, sizeof r->table, "%s", spec->table);
    snprintf(r->column, sizeof r->column, "%s", spec->column);
    snprintf(r->what, sizeof r->what, "%s", spec->what ? spec->what : spec->table);
    r->keep_s = spec->keep_s;
    r->next_ms = deta_clock_ms();
    if (metrics && spec->metric)
        r->purged = deta_counter(metrics, spec->metric, spec->help ? spec->help : "", NULL);
    return r;
}

void deta_retention_run(void *retention, deta_db_t *db) {
    deta_retention_t *r = retention;
    if (!r || !db || r->keep_s == 0 || deta_clock_ms() < r->next_ms)
        return;
    long total = 0, n = DETA_RETENTION_BATCH;
    char why[256] = "";
    deta_err_t err = DETA_OK;
    for (int i = 0; i < DETA_RETENTION_BATCHES && n == DETA_RETENTION_BATCH && !err; i++) {
        err = deta_retention_purge(db, r->table, r->column, r->keep_s, DETA_RETENTION_BATCH, &n,
                                   why, sizeof why);
        total += err ? 0 : n;
    }
    if (err)
        DETA_WARN("purge of %s failed (tried again in %d ms): %s", r->what,
                  DETA_RETENTION_EVERY_MS, why);
    if (total > 0) {
        if (r->purged)
            deta_counter_add(r->purged, (double)total);
        DETA_DEBUG("purge: %ld %s older than %ld h deleted", total, r->what, r->keep_s / 3600);
    }
    bool backlog = !err && n == DETA_RETENTION_BATCH;
    r->next_ms = deta_clock_ms() + (backlog ? 0 : DETA_RETENTION_EVERY_MS);
}

void deta_retention_free(void *retention) { free(retention); }
