/*
 * read_model_pg_batch.c - the Postgres store's batch (read_model_apply_batch):
 * a consumer's batch of events applied in two statements, whatever its size
 * (one more for each redelivery found late, below), where read_model_pg.c's
 * pg_apply costs one statement per event.
 *
 * 1. LOCK_SQL locks the view rows of the batch's orders, in order_id order, and
 *    reads them.
 * 2. In C, each order's new events are folded over its row one after another
 *    with query_view_merge, the fold the store's single statement does in SQL
 *    (integration.test_query_view_fold holds the two to the same views and the
 *    same outcomes, event by event): the view after each event gives that
 *    event's outcome and its row of the live streams' feed, and the view after
 *    the last is what the order's row becomes. An event the timeline has, or one
 *    given earlier in the same batch, is the duplicate and changes nothing.
 * 3. WRITE_SQL inserts the new events into the timeline, writes each touched
 *    order's row once (an UPDATE of the rows locked in 1, an INSERT of the new
 *    ones, in order_id order too) and the feed's rows in the batch's order, with
 *    the feed's NOTIFY. An event the timeline has already (a redelivery) makes it
 *    write nothing and name the event: step 2 is done again without it, and 3
 *    once more.
 *
 * The locks of 1 keep every row read there as it was until the commit. What
 * they cannot keep is a row that did not exist: another transaction may insert
 * the same event into the timeline, or the first row of the same new order,
 * between 1 and 3. Step 3 then fails on that key once the other commits (no ON
 * CONFLICT: it would need the fold of step 2 in SQL again), and the batch is
 * reported rolled back, to be applied one event at a time, where pg_apply's
 * statement settles both races as it always has.
 *
 * Two batches take their rows in one order and only queue. A batch and a
 * single event's statement (pg_apply) can cross, though, when they carry the
 * same event (two instances in a rebalance): the batch holds the order's row
 * and inserts the event, the single statement inserted the event first and
 * updates the row. Postgres breaks that cycle after deadlock_timeout (1 s) by
 * failing one of them (transient): a batch then goes one at a time, a single
 * event is retried, and each event is still applied once.
 */
#include "read_model_pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "deta/timestamp.h"
#include "query-api/stream/feed.h"

/* The batch's order rows, locked in order_id order. */
static const char LOCK_SQL[] =
    "SELECT " PG_VIEW_COLUMNS ", status_event_id::text FROM order_view"
    " WHERE order_id = ANY ($1::uuid[]) ORDER BY order_view.order_id FOR UPDATE";

/* The view's columns written (all but order_id and first_seen_at), as one list
 * for the UPDATE's SET and the INSERT's columns. */
#define SET(col) " " col " = o." col
#define WRITTEN_SETS                                                                    \
    SET("customer_id") "," SET("total_amount") "," SET("currency") "," SET("status")    \
    "," SET("status_rank") "," SET("status_event_id") "," SET("created_at") ","        \
    SET("updated_at") "," SET("reservation_id") "," SET("payment_id") ","              \
    SET("delivery_id") "," SET("driver_id") "," SET("driver_name") ","                 \
    SET("estimated_delivery_at") "," SET("eta_calculated_at") "," SET("delivered_at")  \
    "," SET("failure_reason") "," SET("correlation_id") "," SET("cancelled_at") ","    \
    SET("refunded_amount")
#define WRITTEN_COLS                                                                    \
    "customer_id, total_amount, currency, status, status_rank, status_event_id,"       \
    " created_at, updated_at, reservation_id, payment_id, delivery_id, driver_id,"     \
    " driver_name, estimated_delivery_at, eta_calculated_at, delivered_at,"            \
    " failure_reason, correlation_id, cancelled_at, refunded_amount"

/* $1..$8: the new events (id, order, type, topic, occurredAt, payload, and the
 * view's status and customer after each, for its feed row), in the batch's
 * order; $9..$30: the orders' rows after them, and whether each existed. When
 * the timeline has one of the events already (k), it writes nothing and returns
 * their ids, for the fold to be done again without them; else NULL. */
#define UNLESS_KNOWN " NOT EXISTS (SELECT 1 FROM k)"
static const char WRITE_SQL[] =
    "WITH k AS (SELECT event_id::text AS id FROM order_events"
    "  WHERE event_id = ANY ($1::uuid[])),"
    " e AS (SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[],"
    "  $5::timestamptz[], $6::jsonb[], $7::text[], $8::text[]) WITH ORDINALITY"
    "  AS e(event_id, order_id, event_type, topic, occurred_at, payload, status,"
    "  customer_id, n) WHERE" UNLESS_KNOWN "),"
    " tl AS (INSERT INTO order_events (event_id, order_id, event_type, topic, occurred_at,"
    "  payload) SELECT event_id, order_id, event_type, topic, occurred_at, payload"
    "  FROM e ORDER BY n),"
    " o AS (SELECT * FROM unnest($9::uuid[], $10::text[], $11::numeric[], $12::text[],"
    "  $13::text[], $14::int[], $15::uuid[], $16::timestamptz[], $17::timestamptz[],"
    "  $18::text[], $19::text[], $20::text[], $21::text[], $22::text[],"
    "  $23::timestamptz[], $24::timestamptz[], $25::timestamptz[], $26::text[],"
    "  $27::text[], $28::timestamptz[], $29::numeric[], $30::bool[])"
    "  AS o(order_id, " WRITTEN_COLS ", existed) WHERE" UNLESS_KNOWN "),"
    " up AS (UPDATE order_view v SET" WRITTEN_SETS
    "  FROM o WHERE v.order_id = o.order_id AND o.existed),"
    " ins AS (INSERT INTO order_view (order_id, " WRITTEN_COLS ")"
    "  SELECT order_id, " WRITTEN_COLS " FROM o WHERE NOT o.existed),"
    " fs AS (SELECT event_id, order_id::text AS order_id, event_type, topic, occurred_at,"
    "  status, customer_id FROM e ORDER BY n),"
    " fd AS (" FEED_INSERT_FROM("fs") ")"
    " SELECT (SELECT array_agg(id) FROM k), (SELECT " FEED_NOTIFY " FROM fd LIMIT 1)";

#undef UNLESS_KNOWN
#undef SET
#undef WRITTEN_SETS
#undef WRITTEN_COLS

enum { EVENT_ARRAYS = 8, ORDER_ARRAYS = 22 };

/* One order of the batch: its row as locked (or none), folded over. */
typedef struct batch_order {
    query_view_t view;
    char status_event_id[DETA_UUID_LEN + 1];
    bool existed; /* it had a row */
    bool touched; /* a new event of it was folded */
} batch_order_t;

/* Whether the text[] literal ids ({a,b,...}, UUIDs, never quoted) holds id. */
static bool listed(const char *ids, const char *id) {
    size_t len = strlen(id);
    for (const char *p = ids; p && *p;) {
        p += strspn(p, "{},");
        size_t n = strcspn(p, ",}");
        if (n == len && strncasecmp(p, id, len) == 0)
            return true;
        p += n;
    }
    return false;
}

/* The index of order_id in ids[0..nids), or nids. */
static size_t order_index(const char *const *ids, size_t nids, const char *order_id) {
    size_t k = 0;
    while (k < nids && strcasecmp(ids[k], order_id) != 0)
        k++;
    return k;
}

/* The batch's distinct orders into ids[0..*nids), in order_id order (so that
 * new orders' rows are inserted in the order the locks are taken: two batches
 * creating the same orders queue, never cross), and for each change the index
 * of its order in at[]. */
static void orders_of(const query_change_t *changes, size_t n, const char **ids, size_t *nids,
                      size_t *at) {
    *nids = 0;
    for (size_t i = 0; i < n; i++) {
        const char *id = changes[i].fields.order_id;
        if (order_index(ids, *nids, id) < *nids)
            continue;
        size_t k = (*nids)++;
        for (; k > 0 && strcasecmp(ids[k - 1], id) > 0; k--)
            ids[k] = ids[k - 1];
        ids[k] = id;
    }
    for (size_t i = 0; i < n; i++)
        at[i] = order_index(ids, *nids, changes[i].fields.order_id);
}

/* LOCK_SQL's list has at least this many ids, the first repeated (= ANY takes
 * each row once). The planner costs the generic plan of = ANY ($1) for ten
 * elements, and a custom plan for the array it is given: with fewer than ten it
 * found every custom plan cheaper and planned the statement anew on each call
 * (0.18 ms, more than running it). Padded, the generic plan wins after the
 * first five calls and is kept. */
#define LOCK_IDS_MIN 16

/* Step 1: the rows into orders[] (existed). */
static deta_err_t lock_rows(deta_db_t *tx, const char **ids, size_t nids, batch_order_t *orders,
                            char *errstr, size_t errsize) {
    const char *padded[LOCK_IDS_MIN];
    char *order_list;
    if (nids < LOCK_IDS_MIN) {
        for (size_t i = 0; i < LOCK_IDS_MIN; i++)
            padded[i] = ids[i < nids ? i : 0];
        order_list = deta_db_array(padded, LOCK_IDS_MIN);
    } else {
        order_list = deta_db_array(ids, nids);
    }
    if (!order_list)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    const char *params[] = {order_list};
    deta_err_t err;
    PGresult *res = deta_db_exec(tx, LOCK_SQL, 1, params, &err, errstr, errsize);
    free(order_list);
    if (!res)
        return err;
    for (int r = 0; r < PQntuples(res); r++) {
        query_view_t v;
        pg_view_from_row(res, r, &v);
        for (size_t k = 0; k < nids; k++)
            if (strcasecmp(ids[k], v.order_id) == 0) {
                orders[k].view = v;
                orders[k].existed = true;
                snprintf(orders[k].status_event_id, sizeof orders[k].status_event_id, "%s",
                         PQgetisnull(res, r, PG_VIEW_NCOLUMNS)
                             ? ""
                             : PQgetvalue(res, r, PG_VIEW_NCOLUMNS));
            }
    }
    PQclear(res);
    return DETA_OK;
}

/* Step 2 for change i: its outcome, and its order's view after it. */
static void fold_one(const query_change_t *changes, size_t i, batch_order_t *o,
                     const char *known, read_model_outcome_t *out) {
    memset(out, 0, sizeof *out);
    const query_change_t *c = &changes[i];
    bool twice = listed(known, c->event_id);
    for (size_t j = 0; j < i && !twice; j++)
        twice = strcasecmp(changes[j].event_id, c->event_id) == 0;
    if (twice)
        return; /* the duplicate: applied false */
    if (!o->existed && !o->touched)
        snprintf(o->view.order_id, sizeof o->view.order_id, "%s", c->fields.order_id);
    o->touched = true;
    out->applied = true;
    out->feed_written = true;
    out->status_changed = query_view_merge(&o->view, c);
    if (out->status_changed)
        snprintf(o->status_event_id, sizeof o->status_event_id, "%s", c->event_id);
    snprintf(out->status, sizeof out->status, "%s", o->view.status);
    snprintf(out->customer_id, sizeof out->customer_id, "%s", o->view.customer_id);
    int64_t us = 0;
    if (o->view.created_at[0] && deta_timestamp_us(o->view.created_at, &us))
        out->created_us = us;
}

/* Frees the n arrays of cols. */
static void free_arrays(char **cols, size_t n) {
    for (size_t i = 0; i < n; i++)
        free(cols[i]);
}

/* Step 3's parameters: the new events' arrays into cols[0..EVENT_ARRAYS), the
 * touched orders' into cols[EVENT_ARRAYS..]. False when out of memory. */
static bool write_arrays(const query_change_t *changes, size_t n,
                         const read_model_outcome_t *outs, const char *const *payloads,
                         const batch_order_t *orders, size_t nids, char **cols) {
    const char **items = calloc(n > nids ? n : nids, sizeof *items);
    char(*ranks)[16] = calloc(nids, sizeof *ranks);
    if (!items || !ranks) {
        free(items);
        free(ranks);
        return false;
    }
    for (size_t j = 0; j < nids; j++)
        snprintf(ranks[j], sizeof ranks[j], "%d", orders[j].view.status_rank);
    bool ok = true;
    for (size_t c = 0; c < EVENT_ARRAYS && ok; c++) {
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            if (!outs[i].applied)
                continue;
            const query_change_t *ch = &changes[i];
            const char *const col[EVENT_ARRAYS] = {
                ch->event_id,    ch->fields.order_id, ch->event_type,
                ch->topic,       ch->occurred_at,     payloads[i],
                outs[i].status,  outs[i].customer_id,
            };
            items[k++] = c >= 6 ? pg_nullable(col[c]) : col[c];
        }
        ok = (cols[c] = deta_db_array(items, k)) != NULL;
    }
    for (size_t c = 0; c < ORDER_ARRAYS && ok; c++) {
        size_t k = 0;
        for (size_t j = 0; j < nids; j++) {
            const batch_order_t *o = &orders[j];
            if (!o->touched)
                continue;
            const query_view_t *v = &o->view;
            const char *const col[ORDER_ARRAYS] = {
                v->order_id,
                v->customer_id,
                v->total_amount,
                v->currency,
                v->status,
                ranks[j],
                o->status_event_id,
                v->created_at,
                v->updated_at,
                v->reservation_id,
                v->payment_id,
                v->delivery_id,
                v->driver_id,
                v->driver_name,
                v->estimated_delivery_at,
                v->eta_calculated_at,
                v->delivered_at,
                v->failure_reason,
                v->correlation_id,
                v->cancelled_at,
                v->refunded_amount,
                o->existed ? "true" : "false",
            };
            items[k++] = pg_nullable(col[c]);
        }
        ok = (cols[EVENT_ARRAYS + c] = deta_db_array(items, k)) != NULL;
    }
    free(items);
    free(ranks);
    return ok;
}

/* Appends the text[] literal more ({a,b}) to *known (the same, or NULL). */
static bool add_known(char **known, const char *more) {
    size_t had = *known ? strlen(*known) : 0;
    char *next = malloc(had + strlen(more) + 2);
    if (!next)
        return false;
    if (*known) /* "{a}" + "{b}" -> "{a,{b}": listed() skips braces */
        snprintf(next, had + strlen(more) + 2, "%.*s,%s", (int)(had - 1), *known, more);
    else
        snprintf(next, strlen(more) + 1, "%s", more);
    free(*known);
    *known = next;
    return true;
}

/* Steps 2 and 3 once: outs[] and the rows from locked[] (the rows as step 1 read
 * them) without the events in known; *more the ids step 3 found in the
 * timeline after all (malloc'd), when it wrote nothing for that reason. */
static deta_err_t fold_and_write(deta_db_t *tx, const query_change_t *changes, size_t n,
                                 const size_t *at, const batch_order_t *locked,
                                 batch_order_t *orders, size_t nids, const char *known,
                                 char *const *payloads, read_model_outcome_t *outs,
                                 char **more, char *errstr, size_t errsize) {
    *more = NULL;
    memcpy(orders, locked, nids * sizeof *orders);
    size_t fresh = 0;
    for (size_t i = 0; i < n; i++) {
        fold_one(changes, i, &orders[at[i]], known, &outs[i]);
        fresh += outs[i].applied;
    }
    if (fresh == 0)
        return DETA_OK; /* duplicates only: nothing to write */
    char *cols[EVENT_ARRAYS + ORDER_ARRAYS] = {0};
    if (!write_arrays(changes, n, outs, (const char *const *)payloads, orders, nids, cols)) {
        free_arrays(cols, EVENT_ARRAYS + ORDER_ARRAYS);
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    }
    deta_err_t err;
    PGresult *res = deta_db_exec(tx, WRITE_SQL, EVENT_ARRAYS + ORDER_ARRAYS,
                                 (const char *const *)cols, &err, errstr, errsize);
    free_arrays(cols, EVENT_ARRAYS + ORDER_ARRAYS);
    if (!res)
        return err;
    if (PQntuples(res) == 1 && !PQgetisnull(res, 0, 0) &&
        !(*more = strdup(PQgetvalue(res, 0, 0))))
        err = deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    PQclear(res);
    return err;
}

deta_err_t pg_apply_batch(void *impl, deta_db_t *tx, const query_change_t *changes, size_t n,
                          read_model_outcome_t *outs, bool *rolled_back, char *errstr,
                          size_t errsize) {
    (void)impl;
    *rolled_back = false;
    if (n == 0)
        return DETA_OK;
    const char **ids = calloc(n, sizeof *ids);
    size_t *at = calloc(n, sizeof *at);
    batch_order_t *locked = calloc(n, sizeof *locked);
    batch_order_t *orders = calloc(n, sizeof *orders);
    char **payloads = calloc(n, sizeof *payloads);
    char *known = NULL;
    deta_err_t err = DETA_OK;
    if (!ids || !at || !locked || !orders || !payloads) {
        err = deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++)
        if (!(payloads[i] = json_dumps(changes[i].payload, JSON_COMPACT))) {
            err = deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "cannot serialize the payload");
            goto done;
        }
    size_t nids;
    orders_of(changes, n, ids, &nids, at);
    if ((err = lock_rows(tx, ids, nids, locked, errstr, errsize)))
        goto done;
    /* Each round that finds events in the timeline after all leaves them out of
     * the next (redeliveries: rare, and a round each at most once). */
    for (size_t round = 0; round <= n && !err; round++) {
        char *more = NULL;
        err = fold_and_write(tx, changes, n, at, locked, orders, nids, known, payloads, outs,
                             &more, errstr, errsize);
        if (err || !more)
            break;
        if (!add_known(&known, more))
            err = deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
        free(more);
    }
    if (err == DETA_ERR_CONFLICT) {
        /* a racing transaction's timeline row or new order row (above) */
        *rolled_back = true;
        err = DETA_OK;
    }
done:
    for (size_t i = 0; payloads && i < n; i++)
        free(payloads[i]);
    free(payloads);
    free(known);
    free(orders);
    free(locked);
    free(at);
    free(ids);
    return err;
}
