/*
 * inbox.c - idempotent consumption (see deta/inbox.h).
 *
 * The claim is an INSERT ... ON CONFLICT DO NOTHING RETURNING 1 in the caller's
 * transaction: a row back means this consumer sees the event for the first time.
 * Two handlers claiming the same event at once serialize on the primary key: the
 * second waits for the first to commit and then gets no row (or, if the first
 * rolled back, becomes the first itself).
 *
 * The purge is libdeta's retention purge (retention.c) on processed_at, which
 * the second migration indexes.
 */
#include "deta/inbox.h"

#include <stdlib.h>

#include "deta/config.h"
#include "deta/envelope.h"

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

/* The claims' retention: what the purge and the purger both delete. */
static deta_retention_spec_t claims_retention(long keep_s) {
    return (deta_retention_spec_t){
        .table = "processed_events",
        .column = "processed_at",
        .keep_s = keep_s,
        .what = "inbox claims",
        .metric = "deta_inbox_purged_total",
        .help = "Processed-event claims deleted after INBOX_RETENTION_HOURS",
    };
}

deta_err_t deta_inbox_purge(deta_db_t *db, long retention_s, int max_rows, long *purged,
                            char *errstr, size_t errsize) {
    const deta_retention_spec_t spec = claims_retention(retention_s);
    return deta_retention_purge(db, &spec, max_rows, purged, errstr, errsize);
}

deta_retention_t *deta_inbox_purger_new(const deta_config_t *cfg, deta_metrics_t *metrics,
                                        char *errstr, size_t errsize) {
    if (!cfg) {
        deta_errf(DETA_ERR_INVALID, errstr, errsize, "the purger needs a configuration");
        return NULL;
    }
    const deta_retention_spec_t spec = claims_retention(cfg->inbox_retention_hours * 3600);
    return deta_retention_new(&spec, metrics, errstr, errsize);
}
