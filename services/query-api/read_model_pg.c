/*
 * read_model_pg.c - the read model in Postgres (database delivery_query,
 * QUERY_STORE=postgres, the default): read_model.h's functions, as the table
 * read_model_pg_ops.
 *
 * Applying an event is one statement (one round trip) in the consumer's
 * transaction: the timeline row (inserted when no row has its event id, so a
 * duplicate stops there: applied false, and events.c makes nothing else of it;
 * that is why the consumer needs no processed_events claim with this store,
 * read_model_needs_claim; not ON CONFLICT DO NOTHING, whose speculative
 * insertion costs a WAL record per event: a delivery racing another of the same
 * event fails on the key once that one commits, which pg_apply reports as the
 * duplicate, rolled_back) and, fed by it, the view's row: an UPDATE when the
 * order has one, else an INSERT ... ON CONFLICT DO UPDATE, both doing
 * query_view_merge()'s fold in SQL under the row's lock: GREATEST for the rank and
 * updatedAt, COALESCE for fields, a strict comparison of calculatedAt for the ETA.
 * No read-modify-write in C, so two events of one order applied at once by two
 * consumers still fold correctly. status_event_id records which event set the
 * status; it is also how the statement tells whether this event moved it. The
 * last part is the event's row of the live streams' feed (stream/feed.h), from
 * the view after the event, which the consumer would otherwise write with a
 * statement of its own (outcome feed_written).
 *
 * That statement applies one event: a message consumed alone, and each message
 * of a batch that rolled back. A batch of several is applied by pg_apply_batch
 * (read_model_pg_batch.c) in two statements: its rows locked and read, then the
 * fold of query_view_merge done in C and written in one statement.
 *
 * The timeline is ordered by (occurred_at, event_id), like the Cassandra store's
 * clustering, so that ties do not depend on arrival order.
 *
 * The list is ordered by (first_seen_at DESC, order_id DESC): first_seen_at is
 * set when the row is created and never changes, so keyset pagination over it
 * never shows an order twice nor skips one while orders change state. Instants
 * leave Postgres as integer microseconds and are spelled by domain.c, so a cursor
 * round-trips exactly.
 */
#include "read_model.h"
#include "read_model_pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "query-api/stream/feed.h"

typedef struct pg_model {
    deta_service_t *svc;
} pg_model_t;

static const deta_migration_t read_model_migrations[] = {
    {1, "order_view and order_events",
     "CREATE TABLE order_view ("
     "  order_id uuid PRIMARY KEY,"
     "  customer_id text,"
     "  total_amount numeric(15,2),"
     "  currency text,"
     "  status text,"
     "  status_rank int NOT NULL DEFAULT 0,"
     "  status_event_id uuid,"
     "  created_at timestamptz,"
     "  updated_at timestamptz NOT NULL,"
     "  reservation_id text,"
     "  payment_id text,"
     "  delivery_id text,"
     "  driver_id text,"
     "  driver_name text,"
     "  estimated_delivery_at timestamptz,"
     "  eta_calculated_at timestamptz,"
     "  delivered_at timestamptz,"
     "  failure_reason text,"
     "  correlation_id text,"
     "  first_seen_at timestamptz NOT NULL DEFAULT now());"
     "CREATE INDEX order_view_list_idx ON order_view (first_seen_at DESC, order_id DESC);"
     "CREATE INDEX order_view_status_idx ON order_view"
     "  (status, first_seen_at DESC, order_id DESC);"
     "CREATE INDEX order_view_customer_idx ON order_view"
     "  (customer_id, first_seen_at DESC, order_id DESC);"
     "CREATE TABLE order_events ("
     "  event_id uuid PRIMARY KEY,"
     "  seq bigint GENERATED ALWAYS AS IDENTITY,"
     "  order_id uuid NOT NULL,"
     "  event_type text NOT NULL,"
     "  topic text NOT NULL,"
     "  occurred_at timestamptz NOT NULL,"
     "  payload jsonb NOT NULL,"
     "  applied_at timestamptz NOT NULL DEFAULT now());"
     "CREATE INDEX order_events_order_idx ON order_events (order_id, occurred_at, seq);"},
    {2, "DELIVERY_WAITING ranks 4: the states above it move up one",
     "UPDATE order_view SET status_rank = status_rank + 1 WHERE status_rank >= 4;"},
    {3, "the timeline orders ties by event_id, not by arrival",
     "CREATE INDEX order_events_order_event_idx ON order_events (order_id, occurred_at, event_id);"
     "DROP INDEX order_events_order_idx;"},
    {4, "the cancellation: cancelled_at and refunded_amount",
     "ALTER TABLE order_view ADD COLUMN cancelled_at timestamptz,"
     "  ADD COLUMN refunded_amount numeric(15,2);"},
};

static void *pg_open(deta_service_t *svc, const query_settings_t *settings, char *errstr,
                     size_t errsize) {
    (void)settings;
    pg_model_t *rm = calloc(1, sizeof *rm);
    if (!rm) {
        deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
        return NULL;
    }
    rm->svc = svc;
    return rm;
}

static void pg_close(void *impl) { free(impl); }

static deta_err_t pg_prepare(void *impl, char *errstr, size_t errsize) {
    pg_model_t *rm = impl;
    return deta_service_migrate(rm->svc, "query-api", read_model_migrations,
                                sizeof read_model_migrations / sizeof *read_model_migrations,
                                errstr, errsize);
}

/* A read on the calling thread's connection of the service's pool. */
static PGresult *query(pg_model_t *rm, const char *sql, int nparams, const char *const *params,
                       deta_err_t *err, char *errstr, size_t errsize) {
    deta_db_t *db = deta_db_pool_get(deta_service_db(rm->svc));
    if (!db) {
        *err = deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
        return NULL;
    }
    return deta_db_exec(db, sql, nparams, params, err, errstr, errsize);
}

static void text_col(const PGresult *res, int row, int col, char *dst, size_t size);

/* ---- apply ---- */

/* One statement, one round trip per event: the timeline row, and only when it
 * is new (the event id is the timeline's key, so a redelivery inserts nothing)
 * the order's view row and, from the view after it, the event's row of the live
 * streams' feed with its NOTIFY (stream/feed.h's FEED_INSERT_FROM). Parameters:
 * $1..$6 the event, $7..$23 the view, $24 whether the event is order.created (its
 * identity fields overwrite, other events' fill gaps), $25..$26 the cancellation's
 * fields (cancelled_at keeps the earliest: LEAST ignores NULL, as the C fold
 * ignores ""). The answer is one row: whether the event was new, whether it set
 * the status, and the view's status, customer and createdAt (µs) after it.
 *
 * The view row is updated when it exists (up) and inserted only when it does not
 * (ins): an INSERT ... ON CONFLICT DO UPDATE of an existing row locks it first, a
 * WAL record more per event than the UPDATE. A row that another transaction
 * inserts at the same time is a conflict of the insert, which then updates it as
 * up would have: VIEW_SETS is the one fold, from the new values n (up's src, or
 * EXCLUDED) over the row v. */
#define IDENTITY(n, col)                                                               \
    " " col " = CASE WHEN $24::bool THEN COALESCE(" n "." col ", v." col ")"            \
    " ELSE COALESCE(v." col ", " n "." col ") END,"
#define COALESCED(n, col) " " col " = COALESCE(" n "." col ", v." col "),"
#define RANK_RISES(n) " " n ".status_rank > v.status_rank "
#define ETA_NEWER(n)                                                                   \
    " " n ".eta_calculated_at IS NOT NULL AND (v.eta_calculated_at IS NULL"            \
    " OR " n ".eta_calculated_at > v.eta_calculated_at) "
#define VIEW_SETS(n)                                                                   \
    IDENTITY(n, "customer_id") IDENTITY(n, "total_amount") IDENTITY(n, "currency")     \
    IDENTITY(n, "created_at")                                                          \
    " status = CASE WHEN" RANK_RISES(n) "THEN " n ".status ELSE v.status END,"         \
    " status_event_id = CASE WHEN" RANK_RISES(n)                                       \
    "   THEN " n ".status_event_id ELSE v.status_event_id END,"                        \
    " status_rank = GREATEST(v.status_rank, " n ".status_rank),"                       \
    " updated_at = GREATEST(v.updated_at, " n ".updated_at),"                          \
    COALESCED(n, "reservation_id") COALESCED(n, "payment_id")                          \
    COALESCED(n, "delivery_id") COALESCED(n, "driver_id") COALESCED(n, "driver_name")  \
    COALESCED(n, "delivered_at") COALESCED(n, "failure_reason")                        \
    COALESCED(n, "refunded_amount")                                                    \
    " cancelled_at = LEAST(v.cancelled_at, " n ".cancelled_at),"                       \
    " estimated_delivery_at = CASE WHEN" ETA_NEWER(n)                                  \
    "   THEN " n ".estimated_delivery_at ELSE v.estimated_delivery_at END,"            \
    " eta_calculated_at = CASE WHEN" ETA_NEWER(n)                                      \
    "   THEN " n ".eta_calculated_at ELSE v.eta_calculated_at END,"                    \
    " correlation_id = COALESCE(v.correlation_id, " n ".correlation_id)"
#define VIEW_COLS                                                                      \
    "order_id, customer_id, total_amount, currency, status, status_rank,"              \
    " status_event_id, created_at, updated_at, reservation_id, payment_id, delivery_id," \
    " driver_id, driver_name, estimated_delivery_at, eta_calculated_at, delivered_at,"  \
    " failure_reason, correlation_id, cancelled_at, refunded_amount"
#define VIEW_RETURNING                                                                 \
    " RETURNING COALESCE(v.status_event_id = $1::uuid, false) AS status_changed,"      \
    "  v.status, v.customer_id,"                                                       \
    "  (EXTRACT(EPOCH FROM v.created_at) * 1000000)::bigint AS created_us"

static const char APPLY_SQL[] =
    "WITH ev AS ("
    " INSERT INTO order_events (event_id, order_id, event_type, topic, occurred_at, payload)"
    " SELECT $1::uuid, $2::uuid, $3, $4, $5::timestamptz, $6::jsonb"
    " WHERE NOT EXISTS (SELECT 1 FROM order_events WHERE event_id = $1::uuid) RETURNING seq),"
    " src AS (SELECT $2::uuid AS order_id, $7::text AS customer_id,"
    "  $8::numeric AS total_amount, $9::text AS currency, $10::text AS status,"
    "  $11::int AS status_rank, CASE WHEN $11::int > 0 THEN $1::uuid END AS status_event_id,"
    "  $12::timestamptz AS created_at, $13::timestamptz AS updated_at,"
    "  $14::text AS reservation_id, $15::text AS payment_id, $16::text AS delivery_id,"
    "  $17::text AS driver_id, $18::text AS driver_name,"
    "  $19::timestamptz AS estimated_delivery_at, $20::timestamptz AS eta_calculated_at,"
    "  $21::timestamptz AS delivered_at, $22::text AS failure_reason,"
    "  $23::text AS correlation_id, $25::timestamptz AS cancelled_at,"
    "  $26::numeric AS refunded_amount FROM ev),"
    " up AS (UPDATE order_view AS v SET" VIEW_SETS("n") " FROM src n"
    "  WHERE v.order_id = n.order_id" VIEW_RETURNING "),"
    " ins AS (INSERT INTO order_view AS v (" VIEW_COLS ")"
    "  SELECT " VIEW_COLS " FROM src WHERE NOT EXISTS (SELECT 1 FROM up)"
    "  ON CONFLICT (order_id) DO UPDATE SET" VIEW_SETS("EXCLUDED") VIEW_RETURNING "),"
    " vw AS (SELECT * FROM up UNION ALL SELECT * FROM ins),"
    " fs AS (SELECT $1::uuid AS event_id, $2::uuid::text AS order_id, $3::text AS event_type,"
    "  $4::text AS topic, $5::timestamptz AS occurred_at, status, customer_id FROM vw),"
    " fd AS (" FEED_INSERT_FROM("fs") ")"
    " SELECT EXISTS (SELECT 1 FROM ev), COALESCE((SELECT status_changed FROM vw), false),"
    "  (SELECT status FROM vw), (SELECT customer_id FROM vw), (SELECT created_us FROM vw),"
    "  (SELECT " FEED_NOTIFY " FROM fd)";

#undef IDENTITY
#undef COALESCED
#undef RANK_RISES
#undef ETA_NEWER
#undef VIEW_SETS
#undef VIEW_COLS
#undef VIEW_RETURNING

static deta_err_t pg_apply(void *impl, deta_db_t *tx, const query_change_t *c,
                           read_model_outcome_t *out, char *errstr, size_t errsize) {
    (void)impl;
    memset(out, 0, sizeof *out);
    char *payload = json_dumps(c->payload, JSON_COMPACT);
    if (!payload)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "cannot serialize the payload");
    const query_view_t *f = &c->fields;
    char rank[16];
    snprintf(rank, sizeof rank, "%d", f->status_rank);
    const char *params[] = {
        c->event_id,
        f->order_id,
        c->event_type,
        c->topic,
        c->occurred_at,
        payload,
        pg_nullable(f->customer_id),
        pg_nullable(f->total_amount),
        pg_nullable(f->currency),
        pg_nullable(f->status),
        rank,
        pg_nullable(f->created_at),
        f->updated_at,
        pg_nullable(f->reservation_id),
        pg_nullable(f->payment_id),
        pg_nullable(f->delivery_id),
        pg_nullable(f->driver_id),
        pg_nullable(f->driver_name),
        pg_nullable(f->estimated_delivery_at),
        pg_nullable(f->eta_calculated_at),
        pg_nullable(f->delivered_at),
        pg_nullable(f->failure_reason),
        pg_nullable(f->correlation_id),
        c->authoritative ? "true" : "false",
        pg_nullable(f->cancelled_at),
        pg_nullable(f->refunded_amount),
    };
    deta_err_t err;
    int nparams = (int)(sizeof params / sizeof *params);
    PGresult *res = deta_db_exec(tx, APPLY_SQL, nparams, params, &err, errstr, errsize);
    free(payload);
    if (!res && err == DETA_ERR_CONFLICT && strcmp(deta_db_violated(tx), PG_TIMELINE_KEY) == 0) {
        out->rolled_back = true; /* another transaction inserted the event first */
        return DETA_OK;
    }
    if (!res)
        return err;
    out->applied = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    out->feed_written = out->applied;
    out->status_changed = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 1), "t") == 0;
    if (PQntuples(res) == 1) { /* the view after the event, for the feed */
        text_col(res, 0, 2, out->status, sizeof out->status);
        text_col(res, 0, 3, out->customer_id, sizeof out->customer_id);
        if (!PQgetisnull(res, 0, 4))
            out->created_us = strtoll(PQgetvalue(res, 0, 4), NULL, 10);
    }
    PQclear(res);
    return DETA_OK;
}

/* ---- reading rows ---- */

static void text_col(const PGresult *res, int row, int col, char *dst, size_t size) {
    snprintf(dst, size, "%s", PQgetisnull(res, row, col) ? "" : PQgetvalue(res, row, col));
}

static void instant_col(const PGresult *res, int row, int col, char dst[DETA_TS_LEN]) {
    dst[0] = '\0';
    if (!PQgetisnull(res, row, col))
        deta_timestamp_from_us(strtoll(PQgetvalue(res, row, col), NULL, 10), dst);
}

#define TEXT(member) text_col(res, row, col++, v->member, sizeof v->member)
#define INSTANT(member) instant_col(res, row, col++, v->member)

void pg_view_from_row(const PGresult *res, int row, query_view_t *v) {
    memset(v, 0, sizeof *v);
    int col = 0;
    TEXT(order_id);
    TEXT(customer_id);
    TEXT(total_amount);
    TEXT(currency);
    TEXT(status);
    v->status_rank = atoi(PQgetvalue(res, row, col++));
    INSTANT(created_at);
    INSTANT(updated_at);
    TEXT(reservation_id);
    TEXT(payment_id);
    TEXT(delivery_id);
    TEXT(driver_id);
    TEXT(driver_name);
    INSTANT(estimated_delivery_at);
    INSTANT(eta_calculated_at);
    INSTANT(delivered_at);
    TEXT(failure_reason);
    TEXT(correlation_id);
    INSTANT(cancelled_at);
    TEXT(refunded_amount);
    INSTANT(first_seen_at);
}

#undef TEXT
#undef INSTANT

/* ---- get and list ---- */

static deta_err_t pg_get(void *impl, const char *order_id, query_view_t *out, char *errstr,
                         size_t errsize) {
    pg_model_t *rm = impl;
    char sql[2048];
    snprintf(sql, sizeof sql, "SELECT %s FROM order_view WHERE order_id = $1::uuid",
             PG_VIEW_COLUMNS);
    const char *params[] = {order_id};
    deta_err_t err;
    PGresult *res = query(rm, sql, 1, params, &err, errstr, errsize);
    if (!res)
        return err;
    if (PQntuples(res) == 0)
        err = deta_errf(DETA_ERR_NOT_FOUND, errstr, errsize, "no order %s", order_id);
    else
        pg_view_from_row(res, 0, out);
    PQclear(res);
    return err;
}

/* A statement of its own for each combination of filters present (eight texts at
 * most), each with only its own conditions: prepared once per connection, its
 * plan is made for what it filters on, and the server may keep it (a generic
 * plan) instead of planning each call as one text with every filter optional
 * ("$1 IS NULL OR ...") made it do. One row more than asked tells whether
 * another page follows. */
static void list_sql(const query_list_params_t *p, char *sql, size_t size) {
    int n = snprintf(sql, size, "SELECT %s FROM order_view WHERE true", PG_VIEW_COLUMNS);
    int k = 0;
    if (p->status[0])
        n += snprintf(sql + n, size - (size_t)n, " AND status = $%d", ++k);
    if (p->customer_id[0])
        n += snprintf(sql + n, size - (size_t)n, " AND customer_id = $%d", ++k);
    if (p->has_cursor) {
        n += snprintf(sql + n, size - (size_t)n,
                      " AND (first_seen_at, order_id) < ($%d::timestamptz, $%d::uuid)", k + 1,
                      k + 2);
        k += 2;
    }
    snprintf(sql + n, size - (size_t)n,
             " ORDER BY first_seen_at DESC, order_id DESC LIMIT $%d::int", k + 1);
}

static deta_err_t pg_list(void *impl, const query_list_params_t *p, query_page_t *out,
                          char *errstr, size_t errsize) {
    pg_model_t *rm = impl;
    memset(out, 0, sizeof *out);
    char sql[4096], limit[16];
    list_sql(p, sql, sizeof sql);
    snprintf(limit, sizeof limit, "%d", p->limit + 1);
    const char *params[5];
    int np = 0;
    if (p->status[0])
        params[np++] = p->status;
    if (p->customer_id[0])
        params[np++] = p->customer_id;
    if (p->has_cursor) {
        params[np++] = p->after.at;
        params[np++] = p->after.order_id;
    }
    params[np++] = limit;
    deta_err_t err;
    PGresult *res = query(rm, sql, np, params, &err, errstr, errsize);
    if (!res)
        return err;
    int rows = PQntuples(res);
    size_t n = rows > p->limit ? (size_t)p->limit : (size_t)rows;
    out->items = calloc(n ? n : 1, sizeof *out->items);
    if (!out->items) {
        PQclear(res);
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    }
    for (size_t i = 0; i < n; i++)
        pg_view_from_row(res, (int)i, &out->items[i]);
    out->n = n;
    out->more = rows > p->limit;
    PQclear(res);
    return DETA_OK;
}

/* ---- timeline and stats ---- */

static const char TIMELINE_SQL[] =
    "SELECT event_id::text, event_type, topic, " PG_MICROS("occurred_at") ", payload::text"
    " FROM order_events WHERE order_id = $1::uuid ORDER BY occurred_at, event_id LIMIT $2::int";

static deta_err_t entry_from_row(const PGresult *res, int row, query_timeline_entry_t *e,
                                 char *errstr, size_t errsize) {
    text_col(res, row, 0, e->event_id, sizeof e->event_id);
    text_col(res, row, 1, e->event_type, sizeof e->event_type);
    text_col(res, row, 2, e->topic, sizeof e->topic);
    instant_col(res, row, 3, e->occurred_at);
    json_error_t jerr;
    e->payload = json_loads(PQgetvalue(res, row, 4), JSON_DECODE_ANY, &jerr);
    if (!e->payload)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "bad payload JSON: %s", jerr.text);
    return DETA_OK;
}

static deta_err_t pg_timeline(void *impl, const char *order_id, query_timeline_t *out,
                              char *errstr, size_t errsize) {
    pg_model_t *rm = impl;
    memset(out, 0, sizeof *out);
    char max[16];
    snprintf(max, sizeof max, "%d", QUERY_TIMELINE_MAX);
    const char *params[] = {order_id, max};
    deta_err_t err;
    PGresult *res = query(rm, TIMELINE_SQL, 2, params, &err, errstr, errsize);
    if (!res)
        return err;
    int rows = PQntuples(res);
    if (rows == 0) {
        PQclear(res);
        return deta_errf(DETA_ERR_NOT_FOUND, errstr, errsize, "no events for order %s",
                         order_id);
    }
    out->entries = calloc((size_t)rows, sizeof *out->entries);
    if (!out->entries) {
        PQclear(res);
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    }
    for (int i = 0; i < rows && !err; i++) {
        err = entry_from_row(res, i, &out->entries[i], errstr, errsize);
        if (!err)
            out->n = (size_t)i + 1;
    }
    PQclear(res);
    if (err)
        query_timeline_clear(out);
    return err;
}

static deta_err_t pg_stats(void *impl, query_stats_t *out, char *errstr, size_t errsize) {
    pg_model_t *rm = impl;
    memset(out, 0, sizeof *out);
    deta_err_t err;
    PGresult *res = query(rm, "SELECT status, count(*) FROM order_view GROUP BY status", 0, NULL,
                          &err, errstr, errsize);
    if (!res)
        return err;
    for (int row = 0; row < PQntuples(res); row++) {
        long n = strtol(PQgetvalue(res, row, 1), NULL, 10);
        const char *status = PQgetisnull(res, row, 0) ? NULL : PQgetvalue(res, row, 0);
        int i = 0;
        while (status && i < DETA_STATES_COUNT && strcmp(deta_states[i], status) != 0)
            i++;
        if (status && i < DETA_STATES_COUNT)
            out->by_status[i] += n;
        else
            out->without_status += n;
    }
    PQclear(res);
    return DETA_OK;
}

static bool pg_ping(void *impl, char *detail, size_t detailsize) {
    pg_model_t *rm = impl;
    deta_err_t err;
    PGresult *res = query(rm, "SELECT 1 FROM order_view LIMIT 1", 0, NULL,
                                 &err, detail, detailsize);
    PQclear(res);
    return res != NULL;
}


const read_model_ops_t read_model_pg_ops = {
    .name = "postgres",
    .needs_claim = false, /* the timeline's key on the event id is the claim */
    .open = pg_open,
    .close = pg_close,
    .prepare = pg_prepare,
    .apply = pg_apply,
    .apply_batch = pg_apply_batch,
    .get = pg_get,
    .list = pg_list,
    .timeline = pg_timeline,
    .stats = pg_stats,
    .ping = pg_ping,
};
