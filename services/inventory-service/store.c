/*
 * store.c - inventory-service's schema and queries (see store.h).
 *
 * The stock of an item is one row (available, held, sold), with CHECKs that none
 * goes below zero: whatever a bug or a race might try, Postgres refuses negative
 * stock. A reservation is one row per order (order_id is the key), so a redelivered
 * or re-sent order.created can never hold stock twice; its lines are kept in
 * reservation_items, which is what a release or a sale moves back.
 *
 * Deadlocks: every transaction that touches several stock rows locks each one
 * before changing it, in item_id COLLATE "C" order: a SELECT ... ORDER BY item_id
 * COLLATE "C" FOR UPDATE (LockRows runs above the sort, so rows are locked in that
 * order), alone or as a CTE that the statement's UPDATE reads (settling), the
 * same order in every instance.
 * Settling locks its reservation row before the stock rows; reserving takes no
 * reservation lock it could wait on, so the two never wait on each other in a
 * cycle. A batch (several events in one transaction, events.c) takes every lock
 * its events will take first, in the same order: the reservation rows it acts
 * on, by order_id, then all its stock rows, by item_id (inv_store_lock_batch).
 * So batches, lone events and the sweeper never wait on one another in a cycle:
 * a batch queues behind whatever holds the rows it shares. (Not covered: a stock
 * row created by the admin API while the batch runs, which only its
 * order.created would then lock: a cycle there ends at the batch's lock timeout,
 * and its events go one at a time.)
 *
 * Lines travel to Postgres as the JSON array of the payload ([{itemId, quantity}])
 * and are unpacked there, so an order costs a few round trips whatever its size.
 *
 * Versions: every statement that changes a stock row sets version = version + 1
 * (holding, settling, retaking, the admin's change), so an admin's
 * compare-and-set fails whenever anything moved the item since it was read.
 *
 * Expired holds are found through a partial index of the HELD reservations by
 * hold_expires_at (few rows: holds normally live for milliseconds), and taken
 * with FOR UPDATE SKIP LOCKED, so several instances sweep side by side and a
 * payment outcome being applied to a reservation is never waited for.
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
    {2, "stock versions and stop-sales, hold expiry, UNFULFILLABLE",
     "ALTER TABLE stock ADD COLUMN version bigint NOT NULL DEFAULT 1 CHECK (version >= 1),"
     "  ADD COLUMN sellable boolean NOT NULL DEFAULT true;"
     "ALTER TABLE reservations ADD COLUMN correlation_id text,"
     "  ADD COLUMN hold_expires_at timestamptz;"
     /* holds made before expiry existed get the default TTL */
     "UPDATE reservations SET hold_expires_at = created_at + interval '900 seconds'"
     "  WHERE status = 'HELD';"
     "ALTER TABLE reservations DROP CONSTRAINT reservations_status_check;"
     "ALTER TABLE reservations ADD CONSTRAINT reservations_status_check"
     "  CHECK (status IN ('HELD', 'SOLD', 'RELEASED', 'REJECTED', 'UNFULFILLABLE'));"
     "CREATE INDEX reservations_held_by_expiry ON reservations (hold_expires_at)"
     "  WHERE status = 'HELD';"},
    /* A cancel that comes before its order.created (which was dead-lettered) is
     * recorded as a CANCELLED row with no items; nothing is known of the order
     * then, so its customer, amount and currency are NULL (and only then). The
     * cancel's outcome on any row makes the stage decide once. */
    {3, "cancellation: CANCELLED reservations, the cancel's outcome",
     "ALTER TABLE reservations ALTER COLUMN customer_id DROP NOT NULL,"
     "  ALTER COLUMN total_amount DROP NOT NULL,"
     "  ALTER COLUMN currency DROP NOT NULL,"
     "  ADD COLUMN cancel_outcome text"
     "    CHECK (cancel_outcome IN ('FORWARDED', 'REFUSED', 'CANCELLED')),"
     "  ADD COLUMN cancel_requested_at timestamptz;"
     "ALTER TABLE reservations DROP CONSTRAINT reservations_status_check;"
     "ALTER TABLE reservations ADD CONSTRAINT reservations_status_check"
     "  CHECK (status IN ('HELD', 'SOLD', 'RELEASED', 'REJECTED', 'UNFULFILLABLE',"
     "                    'CANCELLED'));"
     "ALTER TABLE reservations ADD CONSTRAINT reservations_order_known"
     "  CHECK (status = 'CANCELLED' OR (customer_id IS NOT NULL AND total_amount IS NOT NULL"
     "                                 AND currency IS NOT NULL));"
     "ALTER TABLE reservations ADD CONSTRAINT reservations_cancelled_recorded"
     "  CHECK (status <> 'CANCELLED' OR cancel_outcome = 'CANCELLED');"},
};
const size_t inv_migrations_count = sizeof inv_migrations / sizeof *inv_migrations;

#define ITEM_JSON                                                                             \
    "json_build_object('itemId', item_id, 'name', name, 'available', available, 'held', held," \
    " 'sold', sold, 'sellable', sellable, 'version', version)"

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

/* ---- the admin's change ---- */

static const char LOCK_ITEM_SQL[] =
    "SELECT available, version, sellable, name FROM stock WHERE item_id = $1 FOR UPDATE";
static const char CREATE_ITEM_SQL[] =
    "INSERT INTO stock (item_id, name, available, sellable) VALUES ($1, $2, $3::bigint, $4)"
    " RETURNING " ITEM_JSON;
static const char UPDATE_ITEM_SQL[] =
    "UPDATE stock SET available = $3::bigint, name = $2, sellable = $4,"
    "  version = version + 1, updated_at = now()"
    " WHERE item_id = $1 RETURNING " ITEM_JSON;

/* Locks the item's row and reads it; *found false when there is none. */
static deta_err_t lock_item(deta_db_t *db, const char *item_id, inv_stock_row_t *row,
                            bool *found, char *errstr, size_t errsize) {
    const char *params[] = {item_id};
    deta_err_t err;
    PGresult *res = deta_db_exec(db, LOCK_ITEM_SQL, 1, params, &err, errstr, errsize);
    if (!res)
        return err;
    *found = PQntuples(res) == 1;
    if (*found) {
        row->available = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        row->version = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
        row->sellable = strcmp(PQgetvalue(res, 0, 2), "t") == 0;
        snprintf(row->name, sizeof row->name, "%s", PQgetvalue(res, 0, 3));
    }
    PQclear(res);
    return DETA_OK;
}

/* Writes next as decided (CREATE or UPDATE) and reads the item back into *item. */
static deta_err_t write_item(deta_db_t *db, const char *item_id, const inv_stock_row_t *next,
                             bool create, json_t **item, char *errstr, size_t errsize) {
    char available[24];
    snprintf(available, sizeof available, "%lld", (long long)next->available);
    const char *params[] = {item_id, next->name[0] ? next->name : item_id, available,
                            next->sellable ? "true" : "false"};
    return deta_db_query_json(db, create ? CREATE_ITEM_SQL : UPDATE_ITEM_SQL, 4, params, item,
                              errstr, errsize);
}

/* One attempt, inside an open transaction. */
static deta_err_t change_once(deta_db_t *db, const char *item_id, const inv_stock_change_t *c,
                              inv_change_outcome_t *outcome, inv_violation_t *v, json_t **item,
                              char *errstr, size_t errsize) {
    inv_stock_row_t cur, next;
    bool found = false;
    deta_err_t err = lock_item(db, item_id, &cur, &found, errstr, errsize);
    if (err)
        return err;
    *outcome = inv_stock_apply(found ? &cur : NULL, c, &next, v);
    if (*outcome == INV_CHANGE_CREATE || *outcome == INV_CHANGE_UPDATE)
        return write_item(db, item_id, &next, *outcome == INV_CHANGE_CREATE, item, errstr,
                          errsize);
    return found ? inv_store_get(db, item_id, item, errstr, errsize) : DETA_OK;
}

deta_err_t inv_store_change(deta_db_t *db, const char *item_id, const inv_stock_change_t *c,
                            inv_change_outcome_t *outcome, inv_violation_t *v, json_t **item,
                            char *errstr, size_t errsize) {
    deta_err_t err = DETA_OK;
    /* A second attempt only after a create lost a race (CONFLICT): it then finds the row. */
    for (int attempt = 0; attempt < 2; attempt++) {
        *item = NULL;
        err = deta_db_begin(db, errstr, errsize);
        if (!err)
            err = change_once(db, item_id, c, outcome, v, item, errstr, errsize);
        if (!err)
            err = deta_db_commit(db, errstr, errsize);
        if (!err)
            return DETA_OK;
        deta_db_rollback(db);
        json_decref(*item);
        *item = NULL;
        if (err != DETA_ERR_CONFLICT)
            break;
    }
    return err;
}

/* ---- reserving ---- */

static const char LOCK_BATCH_RESERVATIONS_SQL[] =
    "SELECT order_id FROM reservations"
    " WHERE order_id = ANY (ARRAY(SELECT jsonb_array_elements_text($1::jsonb)))"
    " ORDER BY order_id COLLATE \"C\" FOR UPDATE";

static const char LOCK_BATCH_STOCK_SQL[] =
    "SELECT item_id FROM stock WHERE item_id = ANY (ARRAY("
    "  SELECT e->>'itemId' FROM jsonb_array_elements($1::jsonb) e"
    "  UNION SELECT ri.item_id FROM reservation_items ri"
    "  WHERE ri.order_id = ANY (ARRAY(SELECT jsonb_array_elements_text($2::jsonb)))))"
    " ORDER BY item_id COLLATE \"C\" FOR UPDATE";

deta_err_t inv_store_lock_batch(deta_db_t *db, const char *held, const char *lines,
                                const char *settled, char *errstr, size_t errsize) {
    deta_err_t err = DETA_OK;
    if (held) {
        const char *params[] = {held};
        err = deta_db_run(db, LOCK_BATCH_RESERVATIONS_SQL, 1, params, errstr, errsize);
    }
    if (!err && (lines || settled)) {
        const char *params[] = {lines ? lines : "[]", settled ? settled : "[]"};
        err = deta_db_run(db, LOCK_BATCH_STOCK_SQL, 2, params, errstr, errsize);
    }
    return err;
}

static const char LOCK_LEVELS_SQL[] =
    "SELECT item_id, available, sellable FROM stock"
    " WHERE item_id = ANY (ARRAY(SELECT e->>'itemId' FROM jsonb_array_elements($1::jsonb) e))"
    " ORDER BY item_id COLLATE \"C\" FOR UPDATE";

deta_err_t inv_store_lock_levels(deta_db_t *db, const inv_line_t *lines, size_t nlines,
                                 inv_level_t *levels, size_t *nlevels, char *errstr,
                                 size_t errsize) {
    char *items = lines_text(lines, nlines);
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
        l->sellable = strcmp(PQgetvalue(res, i, 2), "t") == 0;
    }
    PQclear(res);
    return DETA_OK;
}

/* The reservation row and its lines, and for a HELD one its units moved from
 * available to held, in one statement; only when the row is new (r), so a
 * duplicate order.created writes nothing. The stock rows are locked already
 * (inv_store_lock_levels). The answer: the lines inserted, the stock rows moved. */
static const char INSERT_RESERVATION_SQL[] =
    "WITH r AS ("
    "  INSERT INTO reservations (order_id, reservation_id, status, customer_id, total_amount,"
    "                            currency, reason, created_at, updated_at, correlation_id,"
    "                            hold_expires_at)"
    "  VALUES ($1, $2, $3, $4, $5::numeric, $6, $7, $8::timestamptz, $8::timestamptz, $10,"
    "          $11::timestamptz)"
    "  ON CONFLICT (order_id) DO NOTHING RETURNING order_id),"
    " i AS (INSERT INTO reservation_items (order_id, item_id, quantity)"
    "  SELECT r.order_id, e->>'itemId', (e->>'quantity')::bigint"
    "  FROM r, jsonb_array_elements($9::jsonb) e RETURNING 1),"
    " t AS (UPDATE stock s SET available = s.available - l.q, held = s.held + l.q,"
    "  version = s.version + 1, updated_at = now()"
    "  FROM (SELECT e->>'itemId' AS item_id, (e->>'quantity')::bigint AS q"
    "        FROM jsonb_array_elements($9::jsonb) e) l"
    "  WHERE s.item_id = l.item_id AND $3::text = 'HELD' AND EXISTS (SELECT 1 FROM r)"
    "  RETURNING 1)"
    " SELECT (SELECT count(*) FROM i), (SELECT count(*) FROM t)";

deta_err_t inv_store_insert_reservation(deta_db_t *db, const inv_request_t *r,
                                        const char *reservation_id, const char *correlation_id,
                                        const char *status, const char *reason, const char *at,
                                        const char *hold_expires_at, bool *inserted,
                                        char *errstr, size_t errsize) {
    char *items = lines_text(r->lines, r->nlines);
    if (!items)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    char total[DETA_MONEY_STRLEN];
    const char *params[] = {r->order_id,    reservation_id,
                            status,         r->customer_id,
                            deta_money_format(r->total, total),
                            r->currency,    reason,
                            at,             items,
                            correlation_id, hold_expires_at};
    deta_err_t err;
    PGresult *res = deta_db_exec(db, INSERT_RESERVATION_SQL, 11, params, &err, errstr, errsize);
    free(items);
    if (!res)
        return err;
    long lines = atol(PQgetvalue(res, 0, 0)), moved = atol(PQgetvalue(res, 0, 1));
    PQclear(res);
    *inserted = lines > 0; /* a request has at least one line */
    bool held = strcmp(status, INV_STATUS_HELD) == 0;
    if (*inserted && held && moved != (long)r->nlines)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize,
                         "moved %ld stock rows for %zu lines", moved, r->nlines);
    return DETA_OK;
}

static const char TAKE_SQL[] =
    "UPDATE stock s SET available = s.available - l.q, sold = s.sold + l.q,"
    "  version = s.version + 1, updated_at = now()"
    " FROM (SELECT e->>'itemId' AS item_id, (e->>'quantity')::bigint AS q"
    "       FROM jsonb_array_elements($1::jsonb) e) l"
    " WHERE s.item_id = l.item_id";

deta_err_t inv_store_take(deta_db_t *db, const inv_line_t *lines, size_t nlines, char *errstr,
                          size_t errsize) {
    char *items = lines_text(lines, nlines);
    if (!items)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    const char *params[] = {items};
    deta_err_t err = DETA_OK;
    long n = run_counted(db, TAKE_SQL, 1, params, &err, errstr, errsize);
    free(items);
    if (!err && n != (long)nlines)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize,
                         "moved %ld stock rows for %zu lines", n, nlines);
    return err;
}

/* ---- settling ---- */

/* The reservation row, locked, with its lines in one round trip: a row per line
 * (one row with NULL line columns for a reservation without lines), in the
 * order every lock of stock rows takes them. Only the reservation row is
 * locked (FOR UPDATE OF r), and it is locked once however many lines join it. */
static const char LOCK_RESERVATION_SQL[] =
    "SELECT r.reservation_id, r.status, coalesce(r.reason, ''), coalesce(r.customer_id, ''),"
    "  coalesce(r.correlation_id, r.order_id), coalesce(r.cancel_outcome, ''),"
    "  ri.item_id, ri.quantity"
    " FROM reservations r LEFT JOIN reservation_items ri ON ri.order_id = r.order_id"
    " WHERE r.order_id = $1 ORDER BY ri.item_id COLLATE \"C\" FOR UPDATE OF r";

deta_err_t inv_store_lock_reservation(deta_db_t *db, const char *order_id, inv_reservation_t *res,
                                      char *errstr, size_t errsize) {
    memset(res, 0, sizeof *res);
    const char *params[] = {order_id};
    deta_err_t err;
    PGresult *r = deta_db_exec(db, LOCK_RESERVATION_SQL, 1, params, &err, errstr, errsize);
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
    snprintf(res->reason, sizeof res->reason, "%s", PQgetvalue(r, 0, 2));
    snprintf(res->customer_id, sizeof res->customer_id, "%s", PQgetvalue(r, 0, 3));
    snprintf(res->correlation_id, sizeof res->correlation_id, "%s", PQgetvalue(r, 0, 4));
    snprintf(res->cancel_outcome, sizeof res->cancel_outcome, "%s", PQgetvalue(r, 0, 5));
    for (int i = 0; i < PQntuples(r) && res->nlines < INV_MAX_LINES; i++) {
        if (PQgetisnull(r, i, 6))
            continue; /* the one row of a reservation without lines */
        inv_line_t *l = &res->lines[res->nlines++];
        snprintf(l->item_id, sizeof l->item_id, "%s", PQgetvalue(r, i, 6));
        l->quantity = strtoll(PQgetvalue(r, i, 7), NULL, 10);
    }
    PQclear(r);
    return DETA_OK;
}

static const char LOCK_EXPIRED_SQL[] =
    "SELECT order_id FROM reservations"
    " WHERE status = 'HELD' AND hold_expires_at < now() - make_interval(secs => $1::bigint)"
    " ORDER BY hold_expires_at LIMIT 1 FOR UPDATE SKIP LOCKED";

deta_err_t inv_store_lock_expired(deta_db_t *db, long grace_s, inv_reservation_t *res,
                                  bool *found, char *errstr, size_t errsize) {
    char grace[24], order_id[INV_ID_MAX + 1];
    snprintf(grace, sizeof grace, "%ld", grace_s);
    const char *params[] = {grace};
    deta_err_t err;
    PGresult *r = deta_db_exec(db, LOCK_EXPIRED_SQL, 1, params, &err, errstr, errsize);
    if (!r)
        return err;
    *found = PQntuples(r) == 1;
    if (*found)
        snprintf(order_id, sizeof order_id, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    /* already locked by this transaction: this only reads it with its lines */
    return *found ? inv_store_lock_reservation(db, order_id, res, errstr, errsize) : DETA_OK;
}

deta_err_t inv_store_oldest_hold_age(deta_db_t *db, double *seconds, char *errstr,
                                     size_t errsize) {
    deta_err_t err;
    PGresult *r = deta_db_exec(db,
                               "SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0)"
                               " FROM reservations WHERE status = 'HELD'",
                               0, NULL, &err, errstr, errsize);
    if (!r)
        return err;
    *seconds = atof(PQgetvalue(r, 0, 0));
    PQclear(r);
    return DETA_OK;
}

static const char SET_STATUS_SQL[] =
    "UPDATE reservations SET status = $2, updated_at = $3::timestamptz,"
    "  reason = coalesce($4, reason) WHERE order_id = $1";

/* Moving a reservation's stock and setting its status, in one statement: l locks
 * the stock rows of its lines in the order of "Deadlocks" (LockRows above the
 * sort); m moves only rows l returned (the IN), so each row it updates is one l
 * locked first, whatever plan joins them; the reservation's UPDATE is the
 * statement's own. Parameters: $1 the order, $2 the new status, $3 the instant,
 * $4 the reason (NULL keeps it). A stock row changed by another transaction
 * after the statement's snapshot is locked at its newest version by l, and m
 * moves that version (READ COMMITTED rechecks an updated row). */
#define MOVE_STOCK_SQL(set)                                                            \
    "WITH l AS (SELECT s.item_id FROM stock s"                                         \
    "  JOIN reservation_items ri ON ri.item_id = s.item_id AND ri.order_id = $1"       \
    "  ORDER BY s.item_id COLLATE \"C\" FOR UPDATE OF s),"                             \
    " m AS (UPDATE stock s SET " set ", version = s.version + 1, updated_at = now()"   \
    "  FROM reservation_items ri WHERE ri.order_id = $1 AND ri.item_id = s.item_id"     \
    "  AND s.item_id IN (SELECT item_id FROM l))"                                      \
    " UPDATE reservations SET status = $2::text, updated_at = $3::timestamptz,"        \
    "  reason = coalesce($4, reason) WHERE order_id = $1"

/* Held stock to sold (SOLD) or back to available (RELEASED). */
static const char SETTLE_SQL[] = MOVE_STOCK_SQL(
    "held = s.held - ri.quantity,"
    "  available = s.available + CASE WHEN $2::text = 'RELEASED' THEN ri.quantity ELSE 0 END,"
    "  sold = s.sold + CASE WHEN $2::text = 'SOLD' THEN ri.quantity ELSE 0 END");

/* Sold stock back to available. */
static const char UNSELL_SQL[] =
    MOVE_STOCK_SQL("sold = s.sold - ri.quantity, available = s.available + ri.quantity");

#undef MOVE_STOCK_SQL

deta_err_t inv_store_settle(deta_db_t *db, const inv_reservation_t *res, const char *status,
                            const char *reason, const char *at, char *errstr, size_t errsize) {
    const char *params[] = {res->order_id, status, at, reason};
    return deta_db_run(db, SETTLE_SQL, 4, params, errstr, errsize);
}

deta_err_t inv_store_set_status(deta_db_t *db, const inv_reservation_t *res, const char *status,
                                const char *at, char *errstr, size_t errsize) {
    const char *params[] = {res->order_id, status, at, NULL};
    return deta_db_run(db, SET_STATUS_SQL, 4, params, errstr, errsize);
}

/* ---- cancelling ---- */

/* The row was there (the caller's insert found it). A CANCELLED row that no
 * order.created reached yet has no customer: the first to reach it records the
 * order's customer, amount and currency, and the statement says whether it did.
 * Its status is read from the statement's snapshot: a CANCELLED row stays so. */
static const char CREATED_AGAIN_SQL[] =
    "WITH seen AS ("
    "  UPDATE reservations SET customer_id = $2, total_amount = $3::numeric, currency = $4,"
    "    updated_at = $5::timestamptz"
    "  WHERE order_id = $1 AND status = 'CANCELLED' AND customer_id IS NULL"
    "  RETURNING order_id)"
    "SELECT status, EXISTS (SELECT 1 FROM seen) FROM reservations WHERE order_id = $1";

deta_err_t inv_store_created_again(deta_db_t *db, const inv_request_t *r, const char *at,
                                   char status[16], bool *first_after_cancel, char *errstr,
                                   size_t errsize) {
    char total[DETA_MONEY_STRLEN];
    const char *params[] = {r->order_id, r->customer_id, deta_money_format(r->total, total),
                            r->currency, at};
    deta_err_t err;
    PGresult *res = deta_db_exec(db, CREATED_AGAIN_SQL, 5, params, &err, errstr, errsize);
    if (!res)
        return err;
    bool found = PQntuples(res) == 1;
    snprintf(status, 16, "%s", found ? PQgetvalue(res, 0, 0) : "");
    *first_after_cancel = found && strcmp(PQgetvalue(res, 0, 1), "t") == 0;
    PQclear(res);
    return DETA_OK;
}

static const char INSERT_CANCELLED_SQL[] =
    "INSERT INTO reservations (order_id, reservation_id, status, reason, created_at, updated_at,"
    "                          correlation_id, cancel_outcome, cancel_requested_at)"
    " VALUES ($1, $2, 'CANCELLED', $3, $4::timestamptz, $4::timestamptz, $5, 'CANCELLED',"
    "         $6::timestamptz)"
    " ON CONFLICT (order_id) DO NOTHING";

deta_err_t inv_store_insert_cancelled(deta_db_t *db, const char *order_id,
                                      const char *reservation_id, const char *correlation_id,
                                      const char *requested_at, const char *at, bool *inserted,
                                      char *errstr, size_t errsize) {
    const char *params[] = {order_id, reservation_id, INV_REASON_ORDER_CANCELLED, at,
                            correlation_id, requested_at};
    deta_err_t err = DETA_OK;
    *inserted = run_counted(db, INSERT_CANCELLED_SQL, 6, params, &err, errstr, errsize) == 1;
    return err;
}

deta_err_t inv_store_record_cancel(deta_db_t *db, const char *order_id, const char *outcome,
                                   const char *requested_at, char *errstr, size_t errsize) {
    const char *params[] = {order_id, outcome, requested_at};
    return deta_db_run(db,
                       "UPDATE reservations SET cancel_outcome = $2,"
                       "  cancel_requested_at = $3::timestamptz WHERE order_id = $1",
                       3, params, errstr, errsize);
}

deta_err_t inv_store_unsell(deta_db_t *db, const inv_reservation_t *res, const char *reason,
                            const char *at, char *errstr, size_t errsize) {
    const char *params[] = {res->order_id, INV_STATUS_RELEASED, at, reason};
    return deta_db_run(db, UNSELL_SQL, 4, params, errstr, errsize);
}

deta_err_t inv_store_set_reason(deta_db_t *db, const inv_reservation_t *res, const char *reason,
                                const char *at, char *errstr, size_t errsize) {
    const char *params[] = {res->order_id, res->status, at, reason};
    return deta_db_run(db, SET_STATUS_SQL, 4, params, errstr, errsize);
}
