/*
 * store.c - order-service's schema and queries (database order_db).
 *
 * Money is numeric(15,2) in Postgres (exact, and readable by people who query the
 * table) and crosses the boundary as decimal text, never as a float. Items are
 * inserted in one statement from parallel arrays, so an order costs the same few
 * round trips whatever its size.
 *
 * An Idempotency-Key is written in the order's own transaction, before the
 * order (so the key and the order exist together or not at all, and a second
 * request with the key waits on the first's row lock, whatever instance serves
 * it). Keys are purged after ORDER_IDEMPOTENCY_TTL_HOURS (main.c, deta/retention.h).
 */
#include "store.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "deta/outbox.h"
#include "deta/states.h"
#include "deta/topics.h"

const deta_migration_t order_migrations[] = {
    {1, "orders and order_items",
     "CREATE TABLE orders ("
     "  order_id uuid PRIMARY KEY,"
     "  customer_id text NOT NULL,"
     "  currency char(3) NOT NULL,"
     "  total_amount numeric(15,2) NOT NULL CHECK (total_amount >= 0),"
     "  status text NOT NULL,"
     "  correlation_id uuid NOT NULL,"
     "  created_at timestamptz NOT NULL,"
     "  updated_at timestamptz NOT NULL);"
     "CREATE INDEX orders_customer_idx ON orders (customer_id, created_at);"
     "CREATE TABLE order_items ("
     "  order_id uuid NOT NULL REFERENCES orders (order_id) ON DELETE CASCADE,"
     "  line_no int NOT NULL,"
     "  item_id text NOT NULL,"
     "  quantity int NOT NULL CHECK (quantity > 0),"
     "  unit_price numeric(15,2) NOT NULL CHECK (unit_price >= 0),"
     "  PRIMARY KEY (order_id, line_no));"},
    /* No foreign key to orders: the key is inserted first, so that a second
     * request with it waits on the key's row before doing anything else. */
    {2, "idempotency_keys",
     "CREATE TABLE idempotency_keys ("
     "  idempotency_key text PRIMARY KEY,"
     "  request_digest text NOT NULL,"
     "  order_id uuid NOT NULL,"
     "  created_at timestamptz NOT NULL);"
     "CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);"},
    /* The order's status as order-service follows it, and its cancel. status_rank
     * is the status's rank (deta/states.h), kept beside it so that the fold is one
     * conditional UPDATE; its default is CREATED's, the status every order is
     * inserted with, and the only one written before this migration. */
    {3, "orders follow their status and cancel",
     "ALTER TABLE orders"
     "  ADD COLUMN status_rank int NOT NULL DEFAULT 1,"
     "  ADD COLUMN cancel_status text"
     "    CHECK (cancel_status IN ('REQUESTED', 'CANCELLED', 'REFUSED')),"
     "  ADD COLUMN cancel_reason text,"
     "  ADD COLUMN cancel_requested_at timestamptz,"
     "  ADD COLUMN cancel_decided_at timestamptz,"
     "  ADD COLUMN cancel_refused_because text;"},
};
const size_t order_migrations_count = sizeof order_migrations / sizeof *order_migrations;

/* The order and its items in one statement: items travel as the JSON array of the
 * event payload (amounts already decimal text), unpacked by Postgres. */
static const char INSERT_ORDER_SQL[] =
    "WITH o AS ("
    "  INSERT INTO orders (order_id, customer_id, currency, total_amount, status,"
    "                      correlation_id, created_at, updated_at)"
    "  VALUES ($1, $2, $3, $4::numeric, $5, $6, $7, $7) RETURNING order_id)"
    "INSERT INTO order_items (order_id, line_no, item_id, quantity, unit_price)"
    "  SELECT o.order_id, e.n, e.v->>'itemId', (e.v->>'quantity')::int,"
    "         (e.v->>'unitPrice')::numeric"
    "  FROM o, jsonb_array_elements($8::jsonb) WITH ORDINALITY AS e(v, n)";

/* The order, its items and its order.created outbox row, inside the caller's
 * transaction. */
static deta_err_t insert_order(deta_db_t *db, const order_t *o, char *errstr, size_t errsize) {
    deta_event_t ev;
    json_t *payload = order_created_payload(o);
    deta_err_t err = deta_event_init(&ev, DETA_EVT_ORDER_CREATED, o->order_id, o->correlation_id,
                                     "order-service", payload, errstr, errsize);
    if (err)
        return err;
    snprintf(ev.occurred_at, sizeof ev.occurred_at, "%s", o->created_at);
    char *items = json_dumps(json_object_get(ev.payload, "items"), JSON_COMPACT);
    char total[DETA_MONEY_STRLEN];
    const char *params[] = {o->order_id,       o->customer_id, o->currency,
                            deta_money_format(o->total, total), ORDER_STATUS_CREATED,
                            o->correlation_id, o->created_at,  items};
    if (!items)
        err = deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    if (!err)
        err = deta_db_run(db, INSERT_ORDER_SQL, 8, params, errstr, errsize);
    if (!err)
        err = deta_outbox_add(db, DETA_TOPIC_ORDER_EVENTS, &ev, errstr, errsize);
    free(items);
    deta_event_clear(&ev);
    return err;
}

deta_err_t order_store_create(deta_db_t *db, const order_t *o, char *errstr, size_t errsize) {
    deta_err_t err = deta_db_begin(db, errstr, errsize);
    if (!err)
        err = insert_order(db, o, errstr, errsize);
    if (!err)
        err = deta_db_commit(db, errstr, errsize);
    else
        deta_db_rollback(db);
    return err;
}

/* The digest is computed by Postgres (sha256, no library of our own for it),
 * the same expression in both statements. A concurrent INSERT of the same key
 * waits for the transaction that holds it: after its commit DO NOTHING applies
 * (no row returned), after its rollback this one inserts. */
#define DIGEST_SQL "encode(sha256(convert_to($2::text, 'UTF8')), 'hex')"

static const char INSERT_KEY_SQL[] =
    "INSERT INTO idempotency_keys (idempotency_key, request_digest, order_id, created_at)"
    " VALUES ($1, " DIGEST_SQL ", $3, $4) ON CONFLICT (idempotency_key) DO NOTHING RETURNING 1";

/* The key's order in the 201's shape, and whether the request is the same. */
static const char SELECT_KEYED_SQL[] =
    "SELECT json_build_object("
    "  'orderId', o.order_id, 'customerId', o.customer_id,"
    "  'totalAmount', to_char(o.total_amount, 'FM9999999999999990.00'),"
    "  'currency', o.currency, 'status', o.status,"
    "  'createdAt', to_char(o.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),"
    "  'correlationId', o.correlation_id),"
    " k.request_digest = " DIGEST_SQL
    " FROM idempotency_keys k JOIN orders o ON o.order_id = k.order_id"
    " WHERE k.idempotency_key = $1";

/* Reads what the key's earlier request made: *found false when the key is gone
 * (purged since the conflict). */
static deta_err_t read_keyed(deta_db_t *db, const char *key, const char *canonical, bool *found,
                             order_keyed_outcome_t *outcome, json_t **existing, char *errstr,
                             size_t errsize) {
    const char *params[] = {key, canonical};
    deta_err_t err;
    PGresult *res = deta_db_exec(db, SELECT_KEYED_SQL, 2, params, &err, errstr, errsize);
    if (!res)
        return err;
    *found = PQntuples(res) == 1;
    if (*found && strcmp(PQgetvalue(res, 0, 1), "t") != 0) {
        *outcome = ORDER_KEYED_REUSED;
    } else if (*found) {
        json_error_t jerr;
        *existing = json_loads(PQgetvalue(res, 0, 0), 0, &jerr);
        *outcome = ORDER_KEYED_REPLAYED;
        if (!*existing)
            err = deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "the key's order: %s", jerr.text);
    }
    PQclear(res);
    return err;
}

/* A key purged between the conflict and the read is tried again (it then makes
 * a new order, as a key reused after its purge does); twice is more than the
 * purge can race. */
#define KEYED_ATTEMPTS 3

deta_err_t order_store_create_keyed(deta_db_t *db, const order_t *o, const char *key,
                                    const char *canonical, order_keyed_outcome_t *outcome,
                                    json_t **existing, char *errstr, size_t errsize) {
    *existing = NULL;
    const char *params[] = {key, canonical, o->order_id, o->created_at};
    for (int attempt = 0; attempt < KEYED_ATTEMPTS; attempt++) {
        deta_err_t err = deta_db_begin(db, errstr, errsize);
        if (err)
            return err;
        PGresult *res = deta_db_exec(db, INSERT_KEY_SQL, 4, params, &err, errstr, errsize);
        bool inserted = res && PQntuples(res) == 1;
        PQclear(res);
        if (!err && inserted) {
            *outcome = ORDER_KEYED_CREATED;
            err = insert_order(db, o, errstr, errsize);
            if (!err)
                return deta_db_commit(db, errstr, errsize);
            deta_db_rollback(db);
            return err;
        }
        bool found = false;
        if (!err)
            err = read_keyed(db, key, canonical, &found, outcome, existing, errstr, errsize);
        deta_db_rollback(db); /* nothing was written */
        if (err || found)
            return err;
    }
    return deta_errf(DETA_ERR_TRANSIENT, errstr, errsize,
                     "idempotency key %.64s: neither new nor found", key);
}

/* An instant column as the API writes instants (milliseconds, Z); NULL stays NULL. */
#define INSTANT(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

static const char SELECT_ORDER_SQL[] =
    "SELECT json_build_object("
    "  'orderId', o.order_id, 'customerId', o.customer_id,"
    "  'totalAmount', to_char(o.total_amount, 'FM9999999999999990.00'),"
    "  'currency', o.currency, 'status', o.status, 'correlationId', o.correlation_id,"
    "  'createdAt', " INSTANT("o.created_at") ","
    "  'updatedAt', " INSTANT("o.updated_at") ","
    "  'items', (SELECT json_agg(json_build_object('itemId', i.item_id, 'quantity', i.quantity,"
    "            'unitPrice', to_char(i.unit_price, 'FM9999999999999990.00')) ORDER BY i.line_no)"
    "            FROM order_items i WHERE i.order_id = o.order_id),"
    "  'cancellation', CASE WHEN o.cancel_status IS NULL THEN NULL ELSE json_build_object("
    "    'status', o.cancel_status, 'reason', o.cancel_reason,"
    "    'requestedAt', " INSTANT("o.cancel_requested_at") ","
    "    'decidedAt', " INSTANT("o.cancel_decided_at") ","
    "    'refusedBecause', o.cancel_refused_because) END)"
    " FROM orders o WHERE o.order_id = $1";

deta_err_t order_store_get(deta_db_t *db, const char *order_id, json_t **out, char *errstr,
                           size_t errsize) {
    const char *params[] = {order_id};
    return deta_db_query_json(db, SELECT_ORDER_SQL, 1, params, out, errstr, errsize);
}

/* ---- the cancel request ---- */

/* The request is written only when none was and the order may still be
 * cancelled: two racing requests queue on the row's lock, and the second finds
 * cancel_status set and changes nothing. $4 lists the cancellable states. */
static const char REQUEST_CANCEL_SQL[] =
    "UPDATE orders SET cancel_status = 'REQUESTED', cancel_reason = $2,"
    "  cancel_requested_at = $3::timestamptz, updated_at = $3::timestamptz"
    " WHERE order_id = $1 AND cancel_status IS NULL AND status = ANY($4::text[])"
    " RETURNING correlation_id::text";

/* The states a cancel may be asked in (deta_state_cancellable), as an array
 * literal: "{CREATED,INVENTORY_RESERVED,...}". */
static void cancellable_states(char *out, size_t size) {
    size_t len = (size_t)snprintf(out, size, "{");
    for (int i = 0; i < DETA_STATES_COUNT && len < size; i++)
        if (deta_state_cancellable(deta_states[i]))
            len += (size_t)snprintf(out + len, size - len, "%s%s", len > 1 ? "," : "",
                                    deta_states[i]);
    if (len < size)
        snprintf(out + len, size - len, "}");
}

static deta_err_t add_cancel_requested(deta_db_t *db, const char *order_id,
                                       const char *correlation_id, const char *reason,
                                       const char *requested_at, char *errstr, size_t errsize) {
    deta_event_t ev;
    deta_err_t err = deta_event_init(&ev, DETA_EVT_ORDER_CANCEL_REQUESTED, order_id,
                                     correlation_id, "order-service",
                                     order_cancel_requested_payload(order_id, reason,
                                                                    requested_at),
                                     errstr, errsize);
    if (err)
        return err;
    snprintf(ev.occurred_at, sizeof ev.occurred_at, "%s", requested_at);
    err = deta_outbox_add(db, DETA_TOPIC_ORDER_EVENTS, &ev, errstr, errsize);
    deta_event_clear(&ev);
    return err;
}

static deta_err_t request_cancel(deta_db_t *db, const char *order_id, const char *reason,
                                 const char *requested_at, bool *requested, json_t **order,
                                 char *errstr, size_t errsize) {
    char states[256];
    cancellable_states(states, sizeof states);
    const char *params[] = {order_id, reason, requested_at, states};
    deta_err_t err;
    PGresult *res = deta_db_exec(db, REQUEST_CANCEL_SQL, 4, params, &err, errstr, errsize);
    if (!res)
        return err;
    *requested = PQntuples(res) == 1;
    if (*requested)
        err = add_cancel_requested(db, order_id, PQgetvalue(res, 0, 0), reason, requested_at,
                                   errstr, errsize);
    PQclear(res);
    if (!err)
        err = order_store_get(db, order_id, order, errstr, errsize);
    return err;
}

deta_err_t order_store_request_cancel(deta_db_t *db, const char *order_id, const char *reason,
                                      const char *requested_at, bool *requested, json_t **order,
                                      char *errstr, size_t errsize) {
    *requested = false;
    *order = NULL;
    deta_err_t err = deta_db_begin(db, errstr, errsize);
    if (!err)
        err = request_cancel(db, order_id, reason, requested_at, requested, order, errstr,
                             errsize);
    if (!err)
        err = deta_db_commit(db, errstr, errsize);
    else
        deta_db_rollback(db);
    if (err) {
        json_decref(*order);
        *order = NULL;
        *requested = false;
    }
    return err;
}

/* ---- following the order's events ---- */

/* The status moves only to a strictly higher rank: a late or repeated event
 * matches no row. */
static const char FOLD_STATUS_SQL[] =
    "UPDATE orders SET status = $2, status_rank = $3::int, updated_at = now()"
    " WHERE order_id = $1 AND status_rank < $3::int";

/* A verdict is final: recorded over a request (or over nothing: a verdict
 * without a request of ours still says what became of the order), never over
 * another verdict. */
static const char RECORD_VERDICT_SQL[] =
    "UPDATE orders SET cancel_status = $2, cancel_decided_at = $3::timestamptz,"
    "  cancel_refused_because = $4, updated_at = now()"
    " WHERE order_id = $1 AND (cancel_status IS NULL OR cancel_status = 'REQUESTED')";

static const char ORDER_EXISTS_SQL[] = "SELECT 1 FROM orders WHERE order_id = $1";

static deta_err_t run_counted(deta_db_t *db, const char *sql, int n, const char *const *params,
                              long *rows, char *errstr, size_t errsize) {
    deta_err_t err;
    PGresult *res = deta_db_exec(db, sql, n, params, &err, errstr, errsize);
    if (!res)
        return err;
    *rows += strtol(PQcmdTuples(res), NULL, 10); /* rows changed, or selected */
    PQclear(res);
    return DETA_OK;
}

static deta_err_t apply_effect(deta_db_t *db, const order_event_effect_t *eff,
                               order_event_result_t *result, char *errstr, size_t errsize) {
    long changed = 0;
    deta_err_t err = DETA_OK;
    if (eff->state) {
        char rank[16];
        snprintf(rank, sizeof rank, "%d", eff->rank);
        const char *params[] = {eff->order_id, eff->state, rank};
        err = run_counted(db, FOLD_STATUS_SQL, 3, params, &changed, errstr, errsize);
    }
    if (!err && eff->verdict) {
        const char *params[] = {eff->order_id, eff->verdict, eff->decided_at,
                                eff->refused_because[0] ? eff->refused_because : NULL};
        err = run_counted(db, RECORD_VERDICT_SQL, 4, params, &changed, errstr, errsize);
    }
    if (err || changed > 0) {
        *result = ORDER_EVENT_APPLIED;
        return err;
    }
    long found = 0;
    const char *params[] = {eff->order_id};
    err = run_counted(db, ORDER_EXISTS_SQL, 1, params, &found, errstr, errsize);
    *result = found > 0 ? ORDER_EVENT_UNCHANGED : ORDER_EVENT_UNKNOWN_ORDER;
    return err;
}

deta_err_t order_store_apply_event_in(deta_db_t *db, const order_event_effect_t *eff,
                                      order_event_result_t *result, char *errstr,
                                      size_t errsize) {
    *result = ORDER_EVENT_UNCHANGED;
    return apply_effect(db, eff, result, errstr, errsize);
}

deta_err_t order_store_apply_event(deta_db_t *db, const order_event_effect_t *eff,
                                   order_event_result_t *result, char *errstr, size_t errsize) {
    *result = ORDER_EVENT_UNCHANGED;
    deta_err_t err = deta_db_begin(db, errstr, errsize);
    if (!err)
        err = apply_effect(db, eff, result, errstr, errsize);
    if (!err)
        err = deta_db_commit(db, errstr, errsize);
    else
        deta_db_rollback(db);
    return err;
}

/* ---- a batch's status changes in one statement ---- */

/* The effects as rows (order, state, rank, place in the batch); each order
 * raised to its highest rank when that is above its own, the first of the batch
 * among states of one rank (two failures), as one by one; the ranks the orders
 * had, read in the same snapshot as the update's (a concurrent instance's
 * change in between moves only the outcomes counted, never the status, which
 * the update's own rank condition decides).
 *
 * The rows are a VALUES list of n rows, one statement text per n (at most
 * ORDER_STORE_FOLD_ROWS_MAX, each prepared once per connection), not arrays:
 * the planner knows the row count of a VALUES list in the generic plan, which
 * it then keeps; with unnest over an array parameter it guessed 10 rows, found each
 * custom plan cheaper, and planned the statement again on every call (0.36 ms,
 * more than the round trips the fold saves, in the first bench of it). */
static const char FOLD_HEAD_SQL[] = "WITH e (order_id, state, rank, i) AS (VALUES ";
static const char FOLD_TAIL_SQL[] =
    "), top AS (SELECT DISTINCT ON (order_id) order_id, state, rank FROM e"
    "    ORDER BY order_id, rank DESC, i),"
    " was AS (SELECT o.order_id, o.status_rank FROM orders o JOIN top USING (order_id)),"
    " raised AS (UPDATE orders o SET status = top.state, status_rank = top.rank,"
    "    updated_at = now() FROM top"
    "    WHERE o.order_id = top.order_id AND o.status_rank < top.rank)"
    " SELECT order_id::text, status_rank FROM was";

/* The statement for n rows (1..ORDER_STORE_FOLD_ROWS_MAX) into sql. */
static void fold_sql(size_t n, char *sql, size_t size) {
    size_t len = (size_t)snprintf(sql, size, "%s", FOLD_HEAD_SQL);
    for (size_t i = 0; i < n && len < size; i++)
        len += (size_t)snprintf(sql + len, size - len,
                                "%s($%zu::uuid, $%zu::text, $%zu::int, %zu)", i ? ", " : "",
                                3 * i + 1, 3 * i + 2, 3 * i + 3, i + 1);
    if (len < size)
        snprintf(sql + len, size - len, "%s", FOLD_TAIL_SQL);
}

/* One statement for effs[0..n), n <= ORDER_STORE_FOLD_ROWS_MAX. */
static deta_err_t fold_some(deta_db_t *db, const order_event_effect_t *const *effs, size_t n,
                            int *before, char *errstr, size_t errsize) {
    char sql[sizeof FOLD_HEAD_SQL + sizeof FOLD_TAIL_SQL + ORDER_STORE_FOLD_ROWS_MAX * 64];
    fold_sql(n, sql, sizeof sql);
    const char *params[3 * ORDER_STORE_FOLD_ROWS_MAX];
    char ranks[ORDER_STORE_FOLD_ROWS_MAX][16];
    for (size_t i = 0; i < n; i++) {
        snprintf(ranks[i], sizeof ranks[i], "%d", effs[i]->rank);
        params[3 * i] = effs[i]->order_id;
        params[3 * i + 1] = effs[i]->state;
        params[3 * i + 2] = ranks[i];
        before[i] = -1;
    }
    deta_err_t err;
    PGresult *res = deta_db_exec(db, sql, (int)(3 * n), params, &err, errstr, errsize);
    if (!res)
        return err;
    for (int r = 0; r < PQntuples(res); r++)
        for (size_t i = 0; i < n; i++)
            if (strcasecmp(PQgetvalue(res, r, 0), effs[i]->order_id) == 0)
                before[i] = (int)strtol(PQgetvalue(res, r, 1), NULL, 10);
    PQclear(res);
    return DETA_OK;
}

deta_err_t order_store_fold_status(deta_db_t *db, const order_event_effect_t *const *effs,
                                   size_t n, int *before, char *errstr, size_t errsize) {
    deta_err_t err = DETA_OK;
    for (size_t at = 0; at < n && !err; at += ORDER_STORE_FOLD_ROWS_MAX) {
        size_t k = n - at < ORDER_STORE_FOLD_ROWS_MAX ? n - at : ORDER_STORE_FOLD_ROWS_MAX;
        err = fold_some(db, effs + at, k, before + at, errstr, errsize);
    }
    return err;
}
