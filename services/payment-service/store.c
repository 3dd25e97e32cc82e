/*
 * store.c - payment-service's schema and queries (database delivery_eta).
 *
 * Three tables carry an order's charge from start to end:
 *
 *   payment_claims    who works on the order now: a holder and an expiry, taken
 *                     by an insert that may only replace an expired row. Unlike
 *                     a session advisory lock it needs no connection held across
 *                     the gateway call; unlike the Redis lock every instance sees
 *                     it, whatever each thinks of Redis.
 *   payment_attempts  that a charge has begun: written and committed together
 *                     with the claim BEFORE the gateway is called, so that
 *                     whatever is lost afterwards (the process, the record's
 *                     transaction, Postgres itself) the next attempt knows the
 *                     gateway may have charged, and asks it (a look-up under the
 *                     order's key) instead of charging again.
 *   payments          the outcome: written in the transaction that ends the
 *                     attempt and the claim and puts payment.authorized or
 *                     payment.failed in the outbox.
 *
 * payments.idempotency_key (the inventory.reserved event id) and order_id are
 * both UNIQUE, so whatever Redis remembers or forgets an order has one payment.
 * The payment's insert says ON CONFLICT DO NOTHING: finding its twin (and only
 * that, not a conflict elsewhere in the transaction) makes the record a
 * duplicate, unless the twin has this attempt's payment id: then an earlier
 * commit of this very record succeeded and only its answer was lost.
 *
 * Claims that expired are deleted by the housekeeping (an expired claim means
 * the same as none); attempts are never purged: one that stays is a charge
 * whose outcome is not recorded yet, counted by payment_attempts_stale.
 * Money is numeric(15,2) and crosses as decimal text, never as a float.
 */
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
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
    {3, "payment_attempts",
     "CREATE TABLE payment_attempts ("
     "  order_id uuid PRIMARY KEY,"
     "  payment_id uuid NOT NULL,"
     "  event_id uuid NOT NULL,"
     "  started_at timestamptz NOT NULL DEFAULT now());"
     "CREATE INDEX payment_attempts_started_idx ON payment_attempts (started_at);"
     "CREATE INDEX payment_claims_expiry_idx ON payment_claims (expires_at);"},
};
const size_t payment_migrations_count = sizeof payment_migrations / sizeof *payment_migrations;

/* ---- an attempt begins ---- */

static const char CLAIM_SQL[] =
    "INSERT INTO payment_claims (order_id, holder, expires_at)"
    " VALUES ($1, $2, now() + $3::bigint * interval '1 millisecond')"
    " ON CONFLICT (order_id) DO UPDATE SET holder = excluded.holder,"
    "                                      expires_at = excluded.expires_at"
    " WHERE payment_claims.expires_at < now()"
    " RETURNING 1";

/* The statement's first row's first column into out (size bytes); *got says
 * whether there was a row. */
static deta_err_t first_value(deta_db_t *db, const char *sql, int nparams,
                              const char *const *params, bool *got, char *out, size_t size,
                              char *errstr, size_t errsize) {
    deta_err_t err;
    PGresult *res = deta_db_exec(db, sql, nparams, params, &err, errstr, errsize);
    if (!res)
        return err;
    *got = PQntuples(res) > 0;
    if (*got && out)
        snprintf(out, size, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return DETA_OK;
}

/* Inside begin's transaction, after the claim: what the tables say of the order. */
static deta_err_t attempt_in_tx(deta_db_t *db, const payment_request_t *req,
                                payment_attempt_t *out, char payment_id[DETA_UUID_LEN + 1],
                                char *errstr, size_t errsize) {
    const char *find[] = {req->order_id, req->event_id};
    bool got = false;
    deta_err_t err = first_value(db,
                                 "SELECT payment_id FROM payments"
                                 " WHERE order_id = $1 OR idempotency_key = $2 LIMIT 1",
                                 2, find, &got, payment_id, DETA_UUID_LEN + 1, errstr, errsize);
    if (err || got) {
        *out = PAYMENT_ATTEMPT_DONE;
        return err;
    }
    char fresh[DETA_UUID_LEN + 1];
    deta_uuid_new(fresh);
    const char *add[] = {req->order_id, fresh, req->event_id};
    err = first_value(db,
                      "INSERT INTO payment_attempts (order_id, payment_id, event_id)"
                      " VALUES ($1, $2, $3) ON CONFLICT (order_id) DO NOTHING"
                      " RETURNING payment_id",
                      3, add, &got, payment_id, DETA_UUID_LEN + 1, errstr, errsize);
    if (err || got) {
        *out = PAYMENT_ATTEMPT_NEW;
        return err;
    }
    *out = PAYMENT_ATTEMPT_RESUMED;
    err = first_value(db, "SELECT payment_id FROM payment_attempts WHERE order_id = $1", 1,
                      find, &got, payment_id, DETA_UUID_LEN + 1, errstr, errsize);
    if (!err && !got) /* it was there a moment ago, in this transaction */
        err = deta_errf(DETA_ERR_TRANSIENT, errstr, errsize, "the order's attempt vanished");
    return err;
}

deta_err_t payment_store_begin(deta_db_t *db, const payment_request_t *req, const char *holder,
                               payment_attempt_t *out, char payment_id[DETA_UUID_LEN + 1],
                               char *errstr, size_t errsize) {
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%ld", PAYMENT_LOCK_TTL_MS);
    const char *claim[] = {req->order_id, holder, ttl};
    bool got = false;
    *out = PAYMENT_ATTEMPT_BUSY;
    deta_err_t err = deta_db_begin(db, errstr, errsize);
    if (!err)
        err = first_value(db, CLAIM_SQL, 3, claim, &got, NULL, 0, errstr, errsize);
    if (!err && got)
        err = attempt_in_tx(db, req, out, payment_id, errstr, errsize);
    if (err || !got || *out == PAYMENT_ATTEMPT_DONE) {
        deta_db_rollback(db); /* a claim taken for nothing goes with it */
        return err;
    }
    return deta_db_commit(db, errstr, errsize);
}

/* ---- an attempt ends ---- */

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
    return first_value(db, INSERT_PAYMENT_SQL, 9, params, inserted, NULL, 0, errstr, errsize);
}

/* The attempt and the holder's claim end together (both statements run whatever
 * the other finds: a claim taken over by another attempt is left to it). */
static const char END_ATTEMPT_SQL[] =
    "WITH a AS (DELETE FROM payment_attempts WHERE order_id = $1),"
    "     c AS (DELETE FROM payment_claims WHERE order_id = $1 AND holder = $2)"
    " SELECT 1";

deta_err_t payment_store_record(deta_db_t *db, const payment_t *p, const deta_event_t *ev,
                                const char *holder, bool *recorded, char *errstr,
                                size_t errsize) {
    const char *end[] = {p->req.order_id, holder};
    bool inserted = false;
    *recorded = false;
    deta_err_t err = deta_db_begin(db, errstr, errsize);
    if (!err)
        err = insert_payment(db, p, &inserted, errstr, errsize);
    if (!err && inserted &&
        !(err = deta_db_run(db, END_ATTEMPT_SQL, 2, end, errstr, errsize)))
        err = deta_outbox_add(db, DETA_TOPIC_PAYMENT_EVENTS, ev, errstr, errsize);
    if (!err && inserted) {
        err = deta_db_commit(db, errstr, errsize);
        *recorded = err == DETA_OK;
        return err;
    }
    deta_db_rollback(db);
    if (err)
        return err; /* a conflict here is not the payment's twin: an error like any */
    /* The twin: this attempt's own payment when an earlier commit of it succeeded
     * and its answer was lost (or another instance resumed the same attempt), or
     * another's. Either way the attempt and the claim are over. */
    char twin[DETA_UUID_LEN + 1] = "";
    const char *find[] = {p->req.order_id, p->req.event_id};
    bool got = false;
    err = first_value(db,
                      "SELECT payment_id FROM payments"
                      " WHERE order_id = $1 OR idempotency_key = $2 LIMIT 1",
                      2, find, &got, twin, sizeof twin, errstr, errsize);
    if (err)
        return err;
    if (!got) /* a conflict, but no payment of the order or event: not a twin */
        return deta_errf(DETA_ERR_TRANSIENT, errstr, errsize,
                         "the payment's insert conflicted, yet no payment of the order exists");
    *recorded = strcmp(twin, p->payment_id) == 0;
    return deta_db_run(db, END_ATTEMPT_SQL, 2, end, errstr, errsize);
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

deta_err_t payment_store_extend(deta_db_t *db, const char *order_id, const char *holder,
                                bool *held, char *errstr, size_t errsize) {
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%ld", PAYMENT_LOCK_TTL_MS);
    const char *params[] = {order_id, holder, ttl};
    return first_value(db,
                       "UPDATE payment_claims"
                       " SET expires_at = now() + $3::bigint * interval '1 millisecond'"
                       " WHERE order_id = $1 AND holder = $2 RETURNING 1",
                       3, params, held, NULL, 0, errstr, errsize);
}

void payment_store_unclaim(deta_db_t *db, const char *order_id, const char *holder) {
    const char *params[] = {order_id, holder};
    deta_db_run(db, "DELETE FROM payment_claims WHERE order_id = $1 AND holder = $2", 2, params,
                NULL, 0);
}

deta_err_t payment_store_housekeep(deta_db_t *db, long *purged, long *stale, char *errstr,
                                   size_t errsize) {
    char n[24];
    bool got = false;
    deta_err_t err = first_value(db,
                                 "WITH d AS (DELETE FROM payment_claims WHERE order_id IN ("
                                 "  SELECT order_id FROM payment_claims WHERE expires_at < now()"
                                 "  LIMIT 1000) RETURNING 1) SELECT count(*) FROM d",
                                 0, NULL, &got, n, sizeof n, errstr, errsize);
    if (err)
        return err;
    *purged = atol(n);
    char age[24];
    snprintf(age, sizeof age, "%ld", PAYMENT_ATTEMPT_STALE_MS);
    const char *params[] = {age};
    err = first_value(db,
                      "SELECT count(*) FROM payment_attempts"
                      " WHERE started_at < now() - $1::bigint * interval '1 millisecond'",
                      1, params, &got, n, sizeof n, errstr, errsize);
    if (!err)
        *stale = atol(n);
    return err;
}
