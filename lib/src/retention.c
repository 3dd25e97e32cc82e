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

#define ONLY_MAX 255

struct deta_retention {
    deta_retention_spec_t spec; /* its strings are the copies below */
    char table[IDENT_MAX + 1];
    char column[IDENT_MAX + 1];
    char key[IDENT_MAX + 1];
    char only[ONLY_MAX + 1];
    char what[64];
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

static bool spec_ok(const deta_retention_spec_t *s) {
    return s && plain_identifier(s->table) && plain_identifier(s->column) &&
           (!s->key || plain_identifier(s->key)) && (!s->only || strlen(s->only) <= ONLY_MAX) &&
           s->keep_s >= 0;
}

/* The DELETE of one batch: $1 the retention in seconds, $2 the batch. */
static void purge_sql(const deta_retention_spec_t *s, char *sql, size_t size) {
    const char *only = s->only ? s->only : "true";
    if (s->key)
        snprintf(sql, size,
                 "DELETE FROM %s WHERE ctid = ANY (ARRAY (SELECT ctid FROM (SELECT ctid, %s"
                 " FROM %s WHERE (%s) ORDER BY %s LIMIT $2::int) b WHERE %s <"
                 " now() - make_interval(secs => $1::bigint)))",
                 s->table, s->column, s->table, only, s->key, s->column);
    else
        snprintf(sql, size,
                 "DELETE FROM %s WHERE ctid = ANY (ARRAY (SELECT ctid FROM %s WHERE %s <"
                 " now() - make_interval(secs => $1::bigint) AND (%s) LIMIT $2::int))",
                 s->table, s->table, s->column, only);
}

deta_err_t deta_retention_purge(deta_db_t *db, const deta_retention_spec_t *spec, int max_rows,
                                long *purged, char *errstr, size_t errsize) {
    if (!db || !spec_ok(spec) || max_rows <= 0 || !purged)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "bad arguments to the purge");
    *purged = 0;
    char sql[4 * IDENT_MAX + ONLY_MAX + 256], secs[24], limit[16];
    purge_sql(spec, sql, sizeof sql);
    snprintf(secs, sizeof secs, "%ld", spec->keep_s);
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

deta_err_t deta_retention_sweep(deta_db_t *db, const deta_retention_spec_t *spec, long *purged,
                                bool *backlog, char *errstr, size_t errsize) {
    if (backlog)
        *backlog = false;
    if (!purged)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "bad arguments to the purge");
    *purged = 0;
    long n = DETA_RETENTION_BATCH;
    deta_err_t err = DETA_OK;
    for (int i = 0; i < DETA_RETENTION_BATCHES && n == DETA_RETENTION_BATCH && !err; i++) {
        err = deta_retention_purge(db, spec, DETA_RETENTION_BATCH, &n, errstr, errsize);
        *purged += err ? 0 : n;
    }
    if (backlog)
        *backlog = !err && n == DETA_RETENTION_BATCH;
    return err;
}

deta_retention_t *deta_retention_new(const deta_retention_spec_t *spec,
                                     deta_metrics_t *metrics, char *errstr, size_t errsize) {
    if (!spec_ok(spec)) {
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
    snprintf(r->key, sizeof r->key, "%s", spec->key ? spec->key : "");
    snprintf(r->only, sizeof r->only, "%s", spec->only ? spec->only : "");
    snprintf(r->what, sizeof r->what, "%s", spec->what ? spec->what : spec->table);
    r->spec = (deta_retention_spec_t){.table = r->table,
                                      .column = r->column,
                                      .key = spec->key ? r->key : NULL,
                                      .only = spec->only ? r->only : NULL,
                                      .keep_s = spec->keep_s,
                                      .what = r->what};
    r->next_ms = deta_clock_ms();
    if (metrics && spec->metric)
        r->purged = deta_counter(metrics, spec->metric, spec->help ? spec->help : "", NULL);
    return r;
}

void deta_retention_run(void *retention, deta_db_t *db) {
    deta_retention_t *r = retention;
    if (!r || !db || r->spec.keep_s == 0 || deta_clock_ms() < r->next_ms)
        return;
    long total = 0;
    bool backlog;
    char why[256] = "";
    deta_err_t err = deta_retention_sweep(db, &r->spec, &total, &backlog, why, sizeof why);
    if (err)
        DETA_WARN("purge of %s failed (tried again in %d ms): %s", r->what,
                  DETA_RETENTION_EVERY_MS, why);
    if (total > 0) {
        if (r->purged)
            deta_counter_add(r->purged, (double)total);
        DETA_DEBUG("purge: %ld %s older than %ld s deleted", total, r->what, r->spec.keep_s);
    }
    r->next_ms = deta_clock_ms() + (backlog ? 0 : DETA_RETENTION_EVERY_MS);
}

void deta_retention_free(void *retention) { free(retention); }
