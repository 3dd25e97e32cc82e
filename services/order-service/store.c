/*
 * store.c - order-service's schema and queries (database order_db).
 *
 * Money is numeric(15,2) in Postgres (exact, and readable by people who query the
 * table) and crosses the boundary as decimal text, never as a float. Items are
 * inserted in one statement from parallel arrays, so an order costs the same few
 * round trips whatever its size.
 */
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    /* 2 is idempotency_keys (another branch); versions need only ascend. */
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

deta_err_t order_store_create(deta_db_t *db, const order_t *o, char *errstr, size_t errsize) {
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
    if (!items) {
        deta_event_clear(&ev);
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    }
    err = deta_db_begin(db, errstr, errsize);
    if (!err)
        err = deta_db_run(db, INSERT_ORDER_SQL, 8, params, errstr, errsize);
    if (!err)
        err = deta_outbox_add(db, DETA_TOPIC_ORDER_EVENTS, &ev, errstr, errsize);
    if (!err)
        err = deta_db_commit(db, errstr, errsize);
    else
        deta_db_rollback(db);
    free(items);
    deta_event_clear(&ev);
    return err;
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
