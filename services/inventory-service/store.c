/*
 * store.c - inventory-service's schema and queries (see store.h).
 *
 * The stock of an item is one row (available, held, sold), with CHECKs that none
 * goes below zero: whatever a bug or a race might try, Postgres refuses negative
 * stock. A reservation is one row per order (order_id is the key), so a redelivered
 * or re-sent order.created can never hold stock twice; its lines are kept in
 * reservation_items, which is what a release or a sale moves back.
 *
 * Deadlocks: every transaction that touches several stock rows first locks them
 * with SELECT ... ORDER BY item_id COLLATE "C" FOR UPDATE (LockRows runs above the
 * sort, so rows are locked in that order), the same order in every instance.
 * Settling locks its reservation row before the stock rows; reserving takes no
 * reservation lock it could wait on, so the two never wait on each other in a
 * cycle.
 *
 * Lines travel to Postgres as the JSON array of the payload ([{itemId, quantity}])
 * and are unpacked there, so an order costs a few round trips whatever its size.
 */
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const deta_migration_t inv_migrations[] = {
    {1, "stock, reservations and reservation_items",
     "CREATE TABLE stock ("
     "  item_id text PRIMARY KEY,"
     "  name text NOT NULL,"
     "  available bigint NOT NULL CHECK (available >= 0),"
     "  held bigint NOT NULL DEFAULT 0 CHECK (held >= 0),"
     "  sold bigint NOT NULL DEFAULT 0 CHECK (sold >= 0),"
     "  updated_at timestamptz NOT NULL DEFAULT now());"
     "CREATE TABLE reservations ("
     "  order_id text PRIMARY KEY,"
     "  reservation_id uuid NOT NULL UNIQUE,"
     "  status text NOT NULL CHECK (status IN ('HELD', 'SOLD', 'RELEASED', 'REJECTED')),"
     "  customer_id text NOT NULL,"
     "  total_amount numeric(15,2) NOT NULL CHECK (total_amount >= 0),"
     "  currency char(3) NOT NULL,"
     "  reason text,"
     "  created_at timestamptz NOT NULL,"
     "  updated_at timestamptz NOT NULL);"
     "CREATE TABLE reservation_items ("
     "  order_id text NOT NULL REFERENCES reservations (order_id) ON DELETE CASCADE,"
     "  item_id text NOT NULL,"
     "  quantity bigint NOT NULL CHECK (quantity > 0),"
     "  PRIMARY KEY (order_id, item_id));"},
};
const size_t inv_migrations_count = sizeof inv_migrations / sizeof *inv_migrations;

#define ITEM_JSON                                                                             \
    "json_build_object('itemId', item_id, 'name', name, 'available', available, 'held', held," \
    " 'sold', sold)"

/* The lines as the text of a JSON array, malloc'd. */
static char *lines_text(const inv_line_t *lines, size_t n) {
    json_t *a = inv_lines_json(lines, n);
    char *text = a ? json_dumps(a, JSON_COMPACT) : NULL;
    json_decref(a);
    return text;
}

/* Runs sql and returns how many rows it affected, or -1 with *err set. */
static long run_counted(deta_db_t *db, const char *sql, int nparams, const char *const *params,
                        deta_err_t *err, char *errstr, size_t errsize) {
    PGresult *res = deta_db_exec(db, sql, nparams, params, err, errstr, errsize);
    if (!res)
        return -1;
    long n = atol(PQcmdTuples(res));
    PQclear(res);
    return n;
}

/* ---- seeding and REST ---- */

static const char SEED_SQL[] =
    "INSERT INTO stock (item_id, name, available)"
    " SELECT e->>'itemId', e->>'itemId', (e->>'quantity')::bigint"
    " FROM jsonb_array_elements($1::jsonb) e"
    " ON CONFLICT (item_id) DO NOTHING";

deta_err_t inv_store_seed(deta_db_t *db, const inv_catalog_t *c, long *inserted, char *errstr,
                          size_t errsize) {
    char *items = lines_text(c->items, c->n);
    if (!items)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    const char *params[] = {items};
    deta_err_t err = DETA_OK;
    *inserted = run_counted(db, SEED_SQL, 1, params, &err, errstr, errsize);
    free(items);
    return err;
}

deta_err_t inv_store_list(deta_db_t *db, json_t **out, char *errstr, size_t errsize) {
    return deta_db_query_json(db,
                              "SELECT coalesce(json_agg(" ITEM_JSON
                              " ORDER BY item_id COLLATE \"C\"), '[]'::json) FROM stock",
                              0, NULL, out, errstr, errsize);
}

deta_err_t inv_store_get(deta_db_t *db, const char *item_id, json_t **out, char *errstr,
                         size_t errsize) {
    const char *params[] = {item_id};
    return deta_db_query_json(db, "SELECT " ITEM_JSON " FROM stock WHERE item_id = $1", 1,
                              params, out, errstr, errsize);
}

static const char SET_AVAILABLE_SQL[] =
    "INSERT INTO stock (item_id, name, available)"
    " VALUES ($1, coalesce($2::text, $1), $3::bigint)"
    " ON CONFLICT (item_id) DO UPDATE SET available = EXCLUDED.available,"
    "   name = coalesce($2::text, stock.name), updated_at = now()"
    " RETURNING " ITEM_JSON ", (xmax = 0)";

deta_err_t inv_store_set_available(deta_db_t *db, const char *item_id,
                                   const inv_stock_update_t *u, bool *created, json_t **out,
                                   char *errstr, size_t errsize) {
    char available[24];
    snprintf(available, sizeof available, "%lld", (long long)u->available);
    const char *params[] = {item_id, u->has_name ? u->name : NULL, available};
    deta_err_t err;
    PGresult *res = deta_db_exec(db, SET_AVAILABLE_SQL, 3, params, &err, errstr, errsize);
    if (!res)
        return err;
    json_error_t jerr;
    *out = json_loads(PQgetvalue(res, 0, 0), 0, &jerr);
    *created = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
    PQclear(res);
    if (!*out)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "bad row JSON: %s", jerr.text);
    return DETA_OK;
}

/* ---- reserving ---- */

static const char LOCK_LEVELS_SQL[] =
    "SELECT item_id, available FROM stock"
    " WHERE item_id IN (SELECT e->>'itemId' FROM jsonb_array_elements($1::jsonb) e)"
    " ORDER BY item_id COLLATE \"C\" FOR UPDATE";

deta_err_t inv_store_lock_levels(deta_db_t *db, const inv_request_t *r, inv_level_t *levels,
                                 size_t *nlevels, char *errstr, size_t errsize) {
    char *items = lines_text(r->lines, r->nlines);
    if (!items)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    const char *params[] = {items};
    deta_err_t err;
    PGresult *res = deta_db_exec(db, LOCK_LEVELS_SQL, 1, params, &err, errstr, errsize);
    free(items);
    if (!res)
        return err;
    int n = PQntuples(res);
    *nlevels = 0;
    for (int i = 0; i < n && i < INV_MAX_LINES; i++) {
        inv_level_t *l = &levels[(*nlevels)++];
        snprintf(l->item_id, sizeof l->item_id, "%s", PQgetvalue(res, i, 0));
        l->available = strtoll(PQgetvalue(res, i, 1), NULL, 10);
    }
    PQclear(res);
    return DETA_OK;
}

static const char INSERT_RESERVATION_SQL[] =
    "WITH r AS ("
    "  INSERT INTO reservations (order_id, reservation_id, status, customer_id, total_amount,"
    "                            currency, reason, created_at, updated_at)"
    "  VALUES ($1, $2, $3, $4, $5::numeric, $6, $7, $8::timestamptz, $8::timestamptz)"
    "  ON CONFLICT (order_id) DO NOTHING RETURNING order_id)"
    "INSERT INTO reservation_items (order_id, item_id, quantity)"
    "  SELECT r.order_id, e->>'itemId', (e->>'quantity')::bigint"
    "  FROM r, jsonb_array_elements($9::jsonb) e";

deta_err_t inv_store_insert_reservation(deta_db_t *db, const inv_request_t *r,
                                        const char *reservation_id, const char *status,
                                        const char *reason, const char *at, bool *inserted,
                                        char *errstr, size_t errsize) {
    char *items = lines_text(r->lines, r->nlines);
    if (!items)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    char total[DETA_MONEY_STRLEN];
    const char *params[] = {r->order_id, reservation_id, status, r->customer_id,
                            deta_money_format(r->total, total), r->currency, reason, at, items};
    deta_err_t err = DETA_OK;
    long n = run_counted(db, INSERT_RESERVATION_SQL, 9, params, &err, errstr, errsize);
    free(items);
    *inserted = n > 0; /* a request has at least one line */
    return err;
}

static const char HOLD_SQL[] =
    "UPDATE stock s SET available = s.available - l.q, held = s.held + l.q, updated_at = now()"
    " FROM (SELECT e->>'itemId' AS item_id, (e->>'quantity')::bigint AS q"
    "       FROM jsonb_array_elements($1::jsonb) e) l"
    " WHERE s.item_id = l.item_id";

deta_err_t inv_store_hold(deta_db_t *db, const inv_request_t *r, char *errstr, size_t errsize) {
    char *items = lines_text(r->lines, r->nlines);
    if (!items)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    const char *params[] = {items};
    deta_err_t err = DETA_OK;
    long n = run_counted(db, HOLD_SQL, 1, params, &err, errstr, errsize);
    free(items);
    if (!err && n != (long)r->nlines)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize,
                         "held %ld stock rows for %zu lines", n, r->nlines);
    return err;
}

/* ---- settling ---- */

deta_err_t inv_store_lock_reservation(deta_db_t *db, const char *order_id, inv_reservation_t *res,
                                      char *errstr, size_t errsize) {
    memset(res, 0, sizeof *res);
    const char *params[] = {order_id};
    deta_err_t err;
    PGresult *r = deta_db_exec(db,
                               "SELECT reservation_id, status FROM reservations"
                               " WHERE order_id = $1 FOR UPDATE",
                               1, params, &err, errstr, errsize);
    if (!r)
        return err;
    if (PQntuples(r) == 0) {
        PQclear(r);
        return deta_errf(DETA_ERR_NOT_FOUND, errstr, errsize, "no reservation for order %s",
                         order_id);
    }
    snprintf(res->order_id, sizeof res->order_id, "%s", order_id);
    snprintf(res->reservation_id, sizeof res->reservation_id, "%s", PQgetvalue(r, 0, 0));
    snprintf(res->status, sizeof res->status, "%s", PQgetvalue(r, 0, 1));
    PQclear(r);

    r = deta_db_exec(db,
                     "SELECT item_id, quantity FROM reservation_items WHERE order_id = $1"
                     " ORDER BY item_id COLLATE \"C\"",
                     1, params, &err, errstr, errsize);
    if (!r)
        return err;
    for (int i = 0; i < PQntuples(r) && i < INV_MAX_LINES; i++) {
        inv_line_t *l = &res->lines[res->nlines++];
        snprintf(l->item_id, sizeof l->item_id, "%s", PQgetvalue(r, i, 0));
        l->quantity = strtoll(PQgetvalue(r, i, 1), NULL, 10);
    }
    PQclear(r);
    return DETA_OK;
}

static const char LOCK_RESERVED_STOCK_SQL[] =
    "SELECT s.item_id FROM stock s"
    " JOIN reservation_items ri ON ri.item_id = s.item_id AND ri.order_id = $1"
    " ORDER BY s.item_id COLLATE \"C\" FOR UPDATE OF s";

static const char SETTLE_STOCK_SQL[] =
    "UPDATE stock s SET held = s.held - ri.quantity,"
    "  available = s.available + CASE WHEN $2::text = 'RELEASED' THEN ri.quantity ELSE 0 END,"
    "  sold = s.sold + CASE WHEN $2::text = 'SOLD' THEN ri.quantity ELSE 0 END,"
    "  updated_at = now()"
    " FROM reservation_items ri WHERE ri.order_id = $1 AND ri.item_id = s.item_id";

deta_err_t inv_store_settle(deta_db_t *db, const inv_reservation_t *res, const char *status,
                            const char *at, char *errstr, size_t errsize) {
    const char *params[] = {res->order_id, status, at};
    deta_err_t err = deta_db_run(db, LOCK_RESERVED_STOCK_SQL, 1, params, errstr, errsize);
    if (!err)
        err = deta_db_run(db, SETTLE_STOCK_SQL, 2, params, errstr, errsize);
    if (!err)
        err = deta_db_run(db,
                          "UPDATE reservations SET status = $2, updated_at = $3::timestamptz"
                          " WHERE order_id = $1",
                          3, params, errstr, errsize);
    return err;
}
