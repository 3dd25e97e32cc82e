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

static const char SELECT_ORDER_SQL[] =
    "SELECT json_build_object("
    "  'orderId', o.order_id, 'customerId', o.customer_id,"
    "  'totalAmount', to_char(o.total_amount, 'FM9999999999999990.00'),"
    "  'currency', o.currency, 'status', o.status, 'correlationId', o.correlation_id,"
    "  'createdAt', to_char(o.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),"
    "  'updatedAt', to_char(o.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),"
    "  'items', (SELECT json_agg(json_build_object('itemId', i.item_id, 'quantity', i.quantity,"
    "            'unitPrice', to_char(i.unit_price, 'FM9999999999999990.00')) ORDER BY i.line_no)"
    "            FROM order_items i WHERE i.order_id = o.order_id))"
    " FROM orders o WHERE o.order_id = $1";

deta_err_t order_store_get(deta_db_t *db, const char *order_id, json_t **out, char *errstr,
                           size_t errsize) {
    const char *params[] = {order_id};
    return deta_db_query_json(db, SELECT_ORDER_SQL, 1, params, out, errstr, errsize);
}
