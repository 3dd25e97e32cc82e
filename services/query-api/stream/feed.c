/*
 * feed.c - the feed's table and statements (feed.h).
 *
 * created_at is the insert's clock_timestamp(), not now(): now() is the start of
 * the consumer's transaction, and the delay histogram measures from the row to
 * the client. The contract's DEFAULT now() stays for rows written by others.
 */
#include "query-api/stream/feed.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deta/retention.h"

static const deta_migration_t feed_migrations[] = {
    {1, "stream_feed: the applied events, in order, for the live streams",
     "CREATE TABLE stream_feed ("
     "  seq bigserial PRIMARY KEY,"
     "  event_id uuid UNIQUE NOT NULL,"
     "  order_id text NOT NULL,"
     "  event_type text NOT NULL,"
     "  topic text NOT NULL,"
     "  occurred_at timestamptz NOT NULL,"
     "  status text NULL,"
     "  customer_id text NULL,"
     "  created_at timestamptz NOT NULL DEFAULT now());"
     "CREATE INDEX stream_feed_order_idx ON stream_feed (order_id, seq);"
     "CREATE INDEX stream_feed_created_idx ON stream_feed (created_at);"},
    {2, "stream_feed: purged by seq, no index on created_at",
     /* The purge takes the oldest rows by seq (retention.h); an instance of the
      * previous version purges by created_at without the index, a scan each
      * time, until it is replaced. */
     "DROP INDEX IF EXISTS stream_feed_created_idx;"},
};

deta_err_t feed_prepare(deta_service_t *svc, char *errstr, size_t errsize) {
    return deta_service_migrate(svc, "query-feed", feed_migrations,
                                sizeof feed_migrations / sizeof *feed_migrations, errstr,
                                errsize);
}

/* The event's row alone (FEED_INSERT_FROM), and the NOTIFY when it is new. */
static const char APPEND_SQL[] =
    "WITH e AS (SELECT $1::uuid AS event_id, $2::text AS order_id, $3::text AS event_type,"
    "  $4::text AS topic, $5::timestamptz AS occurred_at, $6::text AS status,"
    "  $7::text AS customer_id),"
    " f AS (" FEED_INSERT_FROM("e") ")"
    " SELECT " FEED_NOTIFY " FROM f";

static const char *nullable(const char *s) { return s && s[0] ? s : NULL; }

deta_err_t feed_append(deta_db_t *tx, const feed_entry_t *e, char *errstr, size_t errsize) {
    const char *params[] = {e->event_id,   e->order_id,         e->event_type,
                            e->topic,      e->occurred_at,      nullable(e->status),
                            nullable(e->customer_id)};
    return deta_db_run(tx, APPEND_SQL, 7, params, errstr, errsize);
}

/* Whether the statement's snapshot shows every holder in the list p ended
 * (false for NULL): an uncorrelated subquery, so computed once, in the
 * statement's snapshot. A holder is ended in it when pg_visible_in_snapshot()
 * says so (older than the snapshot's xmin, or below its xmax and not in
 * progress; committed or aborted alike). */
#define HOLDERS_ENDED(p)                                                                  \
    "(SELECT " p "::xid8[] IS NOT NULL AND COALESCE(bool_and(pg_visible_in_snapshot(h, s)),"  \
    "  true) FROM unnest(" p "::xid8[]) h, pg_current_snapshot() s)"

/* The settled column is computed in the same snapshot as the rows. */
static const char READ_SQL[] =
    "SELECT seq, order_id, event_id::text, event_type, topic,"
    " (extract(epoch FROM occurred_at) * 1000000)::bigint, status, customer_id,"
    " (extract(epoch FROM created_at) * 1000000)::bigint, " HOLDERS_ENDED("$5")
    " FROM stream_feed WHERE seq > $1::bigint AND ($2::bigint < 0 OR seq <= $2::bigint)"
    " AND ($3::text IS NULL OR order_id = $3) ORDER BY seq LIMIT $4::int";

static void text_col(const PGresult *res, int row, int col, char *dst, size_t size) {
    snprintf(dst, size, "%s", PQgetisnull(res, row, col) ? "" : PQgetvalue(res, row, col));
}

deta_err_t feed_read(deta_db_t *db, int64_t after, int64_t upto, const char *order_id,
                     const char *holders, feed_row_t *rows, size_t max, size_t *n,
                     bool *settled, char *errstr, size_t errsize) {
    char a[24], u[24], lim[24];
    snprintf(a, sizeof a, "%" PRId64, after);
    snprintf(u, sizeof u, "%" PRId64, upto);
    snprintf(lim, sizeof lim, "%zu", max);
    const char *params[] = {a, u, order_id, lim, holders};
    deta_err_t err;
    *n = 0;
    *settled = false;
    PGresult *res = deta_db_exec(db, READ_SQL, 5, params, &err, errstr, errsize);
    if (!res)
        return err;
    int k = PQntuples(res);
    for (int i = 0; i < k && (size_t)i < max; i++) {
        feed_row_t *r = &rows[i];
        memset(r, 0, sizeof *r);
        r->seq = strtoll(PQgetvalue(res, i, 0), NULL, 10);
        text_col(res, i, 1, r->order_id, sizeof r->order_id);
        text_col(res, i, 2, r->event_id, sizeof r->event_id);
        text_col(res, i, 3, r->event_type, sizeof r->event_type);
        text_col(res, i, 4, r->topic, sizeof r->topic);
        deta_timestamp_from_us(strtoll(PQgetvalue(res, i, 5), NULL, 10), r->occurred_at);
        text_col(res, i, 6, r->status, sizeof r->status);
        text_col(res, i, 7, r->customer_id, sizeof r->customer_id);
        r->created_us = strtoll(PQgetvalue(res, i, 8), NULL, 10);
        *n = (size_t)i + 1;
    }
    if (k > 0)
        *settled = strcmp(PQgetvalue(res, 0, 9), "t") == 0;
    PQclear(res);
    return DETA_OK;
}

/* pg_stat_activity's backend_xid (a 32-bit xid; shown for every backend, whatever
 * its role) of this database's backends, widened to xid8 by its signed distance
 * from the snapshot's xmax (open transactions are within 2^31 of it). Not
 * pg_snapshot_xip(): a snapshot leaves out the transactions at or above its xmax
 * (one past the newest that ended), and a holder can be such a transaction (its
 * id older than its number's, a younger id's commit not yet seen). The CTE
 * `open` is used twice, so it is computed once. */
static const char HOLDERS_SQL[] =
    "WITH m AS (SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS m),"
    " open AS (SELECT (m + ((backend_xid::text::bigint - m % 4294967296 + 6442450944)"
    "   % 4294967296 - 2147483648))::text::xid8 AS x"
    "  FROM m, pg_stat_activity"
    "  WHERE datname = current_database() AND backend_xid IS NOT NULL)"
    " SELECT COALESCE((SELECT array_agg(x)::text FROM open"
    "   WHERE x <> ALL (COALESCE($1::xid8[], '{}'))), '{}'),"
    "  COALESCE((SELECT array_agg(x)::text FROM open"
    "   WHERE x = ANY (COALESCE($1::xid8[], '{}'))), '{}')";

deta_err_t feed_holders(deta_db_t *db, const char *given_up, char **holders,
                        char **still_given_up, char *errstr, size_t errsize) {
    deta_err_t err;
    *holders = *still_given_up = NULL;
    const char *params[] = {given_up};
    PGresult *res = deta_db_exec(db, HOLDERS_SQL, 1, params, &err, errstr, errsize);
    if (!res)
        return err;
    *holders = strdup(PQgetvalue(res, 0, 0));
    *still_given_up = strdup(PQgetvalue(res, 0, 1));
    PQclear(res);
    if (*holders && *still_given_up)
        return DETA_OK;
    free(*holders);
    free(*still_given_up);
    *holders = *still_given_up = NULL;
    return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
}

deta_err_t feed_ended(deta_db_t *db, const char *holders, bool *ended, char *errstr,
                      size_t errsize) {
    deta_err_t err;
    const char *params[] = {holders};
    *ended = false;
    PGresult *res = deta_db_exec(db, "SELECT " HOLDERS_ENDED("$1"), 1, params, &err, errstr,
                                 errsize);
    if (!res)
        return err;
    *ended = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    return DETA_OK;
}

deta_err_t feed_bounds(deta_db_t *db, int64_t *oldest, int64_t *newest, char *errstr,
                       size_t errsize) {
    deta_err_t err;
    PGresult *res = deta_db_exec(
        db, "SELECT COALESCE(min(seq), 0), COALESCE(max(seq), 0) FROM stream_feed", 0, NULL,
        &err, errstr, errsize);
    if (!res)
        return err;
    *oldest = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    *newest = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    PQclear(res);
    return DETA_OK;
}

deta_err_t feed_count(deta_db_t *db, int64_t after, int64_t upto, const char *order_id,
                      long limit, long *n, char *errstr, size_t errsize) {
    char a[24], u[24], lim[24];
    snprintf(a, sizeof a, "%" PRId64, after);
    snprintf(u, sizeof u, "%" PRId64, upto);
    snprintf(lim, sizeof lim, "%ld", limit);
    const char *params[] = {a, u, order_id, lim};
    deta_err_t err;
    PGresult *res = deta_db_exec(
        db,
        "SELECT count(*) FROM (SELECT 1 FROM stream_feed WHERE seq > $1::bigint"
        " AND seq <= $2::bigint AND ($3::text IS NULL OR order_id = $3) LIMIT $4::int) x",
        4, params, &err, errstr, errsize);
    if (!res)
        return err;
    *n = strtol(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return DETA_OK;
}

deta_err_t feed_retain(deta_service_t *svc, long hours, char *errstr, size_t errsize) {
    deta_retention_spec_t spec = {.table = "stream_feed",
                                  .column = "created_at",
                                  .key = "seq",
                                  .keep_s = hours * 3600,
                                  .what = "stream feed rows",
                                  .metric = "query_stream_feed_purged_total",
                                  .help = "Feed rows deleted after QUERY_STREAM_RETENTION_HOURS"};
    deta_retention_t *r = deta_retention_new(&spec, deta_service_metrics(svc), errstr, errsize);
    if (!r)
        return DETA_ERR_INTERNAL;
    if (deta_service_adopt(svc, r, deta_retention_free) != DETA_OK) {
        deta_retention_free(r);
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "cannot adopt the feed's purge");
    }
    if (deta_service_add_task(svc, deta_retention_run, r) != DETA_OK)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "too many periodic tasks");
    return DETA_OK;
}
