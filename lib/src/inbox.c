/*
 * inbox.c - idempotent consumption (see deta/inbox.h).
 *
 * The claim is an INSERT ... ON CONFLICT DO NOTHING RETURNING 1 in the caller's
 * transaction: a row back means this consumer sees the event for the first time.
 * Two handlers claiming the same event at once serialize on the primary key: the
 * second waits for the first to commit and then gets no row (or, if the first
 * rolled back, becomes the first itself).
 *
 * The purge deletes by ctid what a LIMITed SELECT on processed_at (indexed)
 * finds old, so each DELETE touches at most a batch of rows and holds their
 * locks briefly; several instances purging at once only skip each other's rows.
 */
#include "clock.h"
#include "deta/inbox.h"

#include <stdio.h>
#include <stdlib.h>

#include "deta/config.h"
#include "deta/envelope.h"
#include "deta/log.h"

const deta_migration_t deta_inbox_migrations[] = {
    {1, "create processed_events",
     "CREATE TABLE IF NOT EXISTS processed_events ("
     " consumer text NOT NULL,"
     " event_id uuid NOT NULL,"
     " processed_at timestamptz NOT NULL DEFAULT now(),"
     " PRIMARY KEY (consumer, event_id))"},
    {2, "index processed_events by age, for the purge",
     "CREATE INDEX IF NOT EXISTS processed_events_processed_at_idx"
     " ON processed_events (processed_at)"},
};
const size_t deta_inbox_migrations_count =
    sizeof deta_inbox_migrations / sizeof deta_inbox_migrations[0];

deta_err_t deta_inbox_claim(deta_db_t *db, const char *consumer, const char *event_id,
                            bool *first, char *errstr, size_t errsize) {
    if (!db || !consumer || !*consumer || !first)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "bad arguments to deta_inbox_claim");
    if (!event_id || !deta_uuid_valid(event_id))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "event id is not a UUID");
    const char *params[] = {consumer, event_id};
    deta_err_t err;
    PGresult *res = deta_db_exec(db,
                                 "INSERT INTO processed_events (consumer, event_id)"
                                 " VALUES ($1, $2::uuid) ON CONFLICT DO NOTHING RETURNING 1",
                                 2, params, &err, errstr, errsize);
    if (!res)
        return err;
    *first = PQntuples(res) == 1;
    PQclear(res);
    return DETA_OK;
}

deta_err_t deta_inbox_purge(deta_db_t *db, long retention_s, int max_rows, long *purged,
                            char *errstr, size_t errsize) {
    if (!db || retention_s < 0 || max_rows <= 0 || !purged)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "bad arguments to deta_inbox_purge");
    *purged = 0;
    char secs[24], limit[16];
    snprintf(secs, sizeof secs, "%ld", retention_s);
    snprintf(limit, sizeof limit, "%d", max_rows);
    const char *params[] = {secs, limit};
    deta_err_t err;
    PGresult *res = deta_db_exec(db,
                                 "DELETE FROM processed_events WHERE ctid = ANY (ARRAY ("
                                 "SELECT ctid FROM processed_events WHERE processed_at <"
                                 " now() - make_interval(secs => $1::bigint) LIMIT $2::int))",
                                 2, params, &err, errstr, errsize);
    if (!res)
        return err;
    *purged = atol(PQcmdTuples(res));
    PQclear(res);
    return DETA_OK;
}

struct deta_inbox_purger {
    long retention_s; /* 0: keep for ever */
    long next_ms;
    deta_counter_t *purged;
};

deta_inbox_purger_t *deta_inbox_purger_new(const deta_config_t *cfg, deta_metrics_t *metrics,
                                           char *errstr, size_t errsize) {
    if (!cfg) {
        deta_errf(DETA_ERR_INVALID, errstr, errsize, "the purger needs a configuration");
        return NULL;
    }
    deta_inbox_purger_t *p = calloc(1, sizeof *p);
    if (!p) {
        deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
        return NULL;
    }
    p->retention_s = cfg->inbox_retention_hours * 3600;
    p->next_ms = deta_clock_ms();
    if (metrics)
        p->purged = deta_counter(metrics, "deta_inbox_purged_total",
                                 "Processed-event claims deleted after INBOX_RETENTION_HOURS",
                                 NULL);
    return p;
}

void deta_inbox_purger_run(deta_inbox_purger_t *p, deta_db_t *db) {
    if (!p || !db || p->retention_s == 0 || deta_clock_ms() < p->next_ms)
        return;
    long total = 0, n = DETA_INBOX_PURGE_BATCH;
    char why[256];
    deta_err_t err = DETA_OK;
    for (int i = 0; i < DETA_INBOX_PURGE_BATCHES && n == DETA_INBOX_PURGE_BATCH && !err; i++) {
        err = deta_inbox_purge(db, p->retention_s, DETA_INBOX_PURGE_BATCH, &n, why, sizeof why);
        total += err ? 0 : n;
    }
    if (err)
        DETA_WARN("inbox purge failed (tried again in %d ms): %s", DETA_INBOX_PURGE_EVERY_MS,
                  why);
    if (total > 0) {
        if (p->purged)
            deta_counter_add(p->purged, (double)total);
        DETA_DEBUG("inbox purge: %ld claims older than %ld h deleted", total,
                   p->retention_s / 3600);
    }
    bool backlog = !err && n == DETA_INBOX_PURGE_BATCH;
    p->next_ms = deta_clock_ms() + (backlog ? 0 : DETA_INBOX_PURGE_EVERY_MS);
}

void deta_inbox_purger_free(deta_inbox_purger_t *p) { free(p); }
