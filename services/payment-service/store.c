/*
 * store.c - payment-service's schema and queries (database delivery_eta).
 *
 * The database is the last and durable idempotency layer: idempotency_key (the
 * inventory.reserved event id) and order_id are both UNIQUE, so whatever Redis
 * remembers or forgets, an order is charged at most once. The insert says
 * ON CONFLICT DO NOTHING: a concurrent twin that committed first makes ours
 * insert nothing (Postgres waits for the twin's transaction, then skips), which
 * the caller treats as a duplicate; the transaction is then rolled back so its
 * outbox row is never written. Money is numeric(15,2) and crosses as decimal
 * text, never as a float.
 *
 * payment_claims is the database's lock on an order while its gateway call runs:
 * a row with a holder and an expiry, taken by an insert that may only replace an
 * expired row, and deleted by the holder in the transaction that records the
 * payment. Unlike a session advisory lock it needs no connection held across the
 * gateway call, so a few connections serve many calls in flight; unlike the
 * Redis lock it is seen by every instance whatever each thinks of Redis. A
 * holder that crashed leaves a row that the next attempt takes over once expired
 * (the expiry is the Redis lock's, PAYMENT_LOCK_TTL_MS, on the server's clock).
 */
#include "store.h"

#include <stdio.h>
#include <string.h>

#include "deta/outbox.h"
#include "deta/topics.h"

const deta_migration_t payment_migrations[] = {
    {1, "payments",
     "CREATE TABLE payments ("
     "  payment_id uuid PRIMARY KEY,"
     "  order_id uuid NOT NULL UNIQUE,"
     "  idempotency_key uuid NOT NULL UNIQUE,"
     "  customer_id text NOT NULL,"
     "  amount numeric(15,2) NOT NULL CHECK (amount >= 0),"
     "  currency char(3) NOT NULL,"
     "  status text NOT NULL CHECK (status IN ('AUTHORIZED', 'DECLINED')),"
     "  reason text,"
     "  created_at timestamptz NOT NULL);"
     "CREATE INDEX payments_customer_idx ON payments (customer_id, created_at);"},
    {2, "payment_claims",
     "CREATE TABLE payment_claims ("
     "  order_id uuid PRIMARY KEY,"
     "  holder uuid NOT NULL,"
     "  expires_at timestamptz NOT NULL);"},
};
const size_t payment_migrations_count = sizeof payment_migrations / sizeof *payment_migrations;

deta_err_t payment_store_find(deta_db_t *db, const char *event_id, const char *order_id,
                              bool *found, char *payment_id, char *errstr, size_t errsize) {
    const char *params[] = {event_id, order_id};
    deta_err_t err;
    PGresult *res = deta_db_exec(db,
                                 "SELECT payment_id FROM payments"
                                 " WHERE idempotency_key = $1 OR order_id = $2 LIMIT 1",
                                 2, params, &err, errstr, errsize);
    if (!res)
        return err;
    *found = PQntuples(res) > 0;
    if (*found && payment_id)
        snprintf(payment_id, DETA_UUID_LEN + 1, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return DETA_OK;
}

static const char INSERT_PAYMENT_SQL[] =
    "INSERT INTO payments (payment_id, order_id, idempotency_key, customer_id, amount,"
    "                      currency, status, reason, created_at)"
    " VALUES ($1, $2, $3, $4, $5::numeric, $6, $7, $8, $9)"
    " ON CONFLICT DO NOTHING RETURNING 1";

/* Inside the open transaction: *inserted is false when a twin exists. */
static deta_err_t insert_payment(deta_db_t *db, const payment_t *p, bool *inserted,
                                 char *errstr, size_t errsize) {
    char amount[DETA_MONEY_STRLEN];
    const char *params[] = {p->payment_id,     p->req.order_id,
                            p->req.event_id,   p->req.customer_id,
                            deta_money_format(p->req.amount, amount), p->req.currency,
                            payment_status(p), p->decision.reason,
                            p->decided_at};
    deta_err_t err;
    PGresult *res = deta_db_exec(db, INSERT_PAYMENT_SQL, 9, params, &err, errstr, errsize);
    if (!res)
        return err;
    *inserted = PQntuples(res) == 1;
    PQclear(res);
    return DETA_OK;
}

/* Inside the open transaction: the holder's claim is deleted, or *held is false
 * (it expired and another attempt took it over). */
static deta_err_t end_claim(deta_db_t *db, const char *order_id, const char *holder, bool *held,
                            char *errstr, size_t errsize) {
    const char *params[] = {order_id, holder};
    deta_err_t err;
    PGresult *res = deta_db_exec(db,
                                 "DELETE FROM payment_claims WHERE order_id = $1 AND holder = $2"
                                 " RETURNING 1",
                                 2, params, &err, errstr, errsize);
    if (!res)
        return err;
    *held = PQntuples(res) == 1;
    PQclear(res);
    return DETA_OK;
}

deta_err_t payment_store_record(deta_db_t *db, const payment_t *p, const deta_event_t *ev,
                                const char *holder, bool *recorded, char *errstr,
                                size_t errsize) {
    bool inserted = false, held = false;
    *recorded = false;
    deta_err_t err = deta_db_begin(db, errstr, errsize);
    if (err)
        return err;
    err = end_claim(db, p->req.order_id, holder, &held, errstr, errsize);
    if (!err && !held)
        err = deta_errf(DETA_ERR_TRANSIENT, errstr, errsize,
                        "the order's payment claim expired during the gateway call");
    if (!err)
        err = insert_payment(db, p, &inserted, errstr, errsize);
    if (!err && inserted)
        err = deta_outbox_add(db, DETA_TOPIC_PAYMENT_EVENTS, ev, errstr, errsize);
    if (err || !inserted) {
        deta_db_rollback(db);
        return err == DETA_ERR_CONFLICT ? DETA_OK : err;
    }
    err = deta_db_commit(db, errstr, errsize);
    if (err == DETA_ERR_CONFLICT)
        return DETA_OK;
    *recorded = err == DETA_OK;
    return err;
}

static const char SELECT_PAYMENT_SQL[] =
    "SELECT json_strip_nulls(json_build_object("
    "  'paymentId', payment_id, 'orderId', order_id, 'customerId', customer_id,"
    "  'amount', to_char(amount, 'FM9999999999999990.00'), 'currency', currency,"
    "  'status', status, 'reason', reason, 'idempotencyKey', idempotency_key,"
    "  'createdAt', to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')))"
    " FROM payments WHERE order_id = $1";

deta_err_t payment_store_get(deta_db_t *db, const char *order_id, json_t **out, char *errstr,
                             size_t errsize) {
    const char *params[] = {order_id};
    return deta_db_query_json(db, SELECT_PAYMENT_SQL, 1, params, out, errstr, errsize);
}

static const char CLAIM_SQL[] =
    "INSERT INTO payment_claims (order_id, holder, expires_at)"
    " VALUES ($1, $2, now() + $3::bigint * interval '1 millisecond')"
    " ON CONFLICT (order_id) DO UPDATE SET holder = excluded.holder,"
    "                                      expires_at = excluded.expires_at"
    " WHERE payment_claims.expires_at < now()"
    " RETURNING 1";

deta_err_t payment_store_claim(deta_db_t *db, const char *order_id, const char *holder,
                               bool *got, char *errstr, size_t errsize) {
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%ld", PAYMENT_LOCK_TTL_MS);
    const char *params[] = {order_id, holder, ttl};
    deta_err_t err;
    PGresult *res = deta_db_exec(db, CLAIM_SQL, 3, params, &err, errstr, errsize);
    if (!res)
        return err;
    *got = PQntuples(res) == 1;
    PQclear(res);
    return DETA_OK;
}

void payment_store_unclaim(deta_db_t *db, const char *order_id, const char *holder) {
    const char *params[] = {order_id, holder};
    deta_db_run(db, "DELETE FROM payment_claims WHERE order_id = $1 AND holder = $2", 2, params,
                NULL, 0);
}
