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
 * The cancellation saga and refunds use the same claim:
 *
 *   payment_cancellations  one row per order whose cancel payment-service has
 *                     decided, with its verdict: FORWARDED (paid: delivery
 *                     decides), REFUSED (declined) or CANCELLED (no payment:
 *                     the fence, cancelled_at set). A second forward of the
 *                     cancel finds its row and publishes nothing; a charge
 *                     finds a CANCELLED row in its claim's transaction and
 *                     charges nothing.
 *   refund_attempts   like payment_attempts, for the refund of the order.
 *   refunds           the refund, unique on order_id, payment_id and
 *                     idempotency_key (the delivery.cancelled event id); its
 *                     insert takes amount and currency from the AUTHORIZED
 *                     payment (INSERT ... SELECT), so a refund never exceeds
 *                     the charge and an order is refunded at most once.
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
#include "deta/states.h"
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
    {4, "payment_cancellations",
     "CREATE TABLE payment_cancellations ("
     "  order_id uuid PRIMARY KEY,"
     "  verdict text NOT NULL CHECK (verdict IN ('FORWARDED', 'REFUSED', 'CANCELLED')),"
     "  reason text,"
     "  event_id uuid NOT NULL,"
     "  decided_at timestamptz NOT NULL,"
     "  cancelled_at timestamptz,"
     "  CHECK ((verdict = 'CANCELLED') = (cancelled_at IS NOT NULL)));"},
    {5, "refunds",
     "CREATE TABLE refunds ("
     "  refund_id uuid PRIMARY KEY,"
     "  order_id uuid NOT NULL UNIQUE,"
     "  payment_id uuid NOT NULL UNIQUE REFERENCES payments (payment_id),"
     "  amount numeric(15,2) NOT NULL CHECK (amount >= 0),"
     "  currency char(3) NOT NULL,"
     "  idempotency_key text NOT NULL UNIQUE,"
     "  reason text NOT NULL,"
     "  created_at timestamptz NOT NULL);"
     "CREATE TABLE refund_attempts ("
     "  order_id uuid PRIMARY KEY,"
     "  refund_id uuid NOT NULL,"
     "  event_id uuid NOT NULL,"
     "  started_at timestamptz NOT NULL DEFAULT now());"
     "CREATE INDEX refund_attempts_started_idx ON refund_attempts (started_at);"},
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

/* Inside begin's transaction, after the claim (a statement of its own, so that
 * this one's snapshot is taken under it): what the tables say of the order, in
 * one statement. Its payment when it is paid already (done); else whether a
 * cancel fenced it (a cancel that won before any charge, read under the claim,
 * which the cancel's own transaction takes too, so the two never overlap);
 * else the attempt: begun by this statement with the fresh payment id $3
 * (added), or begun earlier (the last column: the statement does not see its
 * own insert). $1 the order, $2 the event (the idempotency key). */
static const char ATTEMPT_SQL[] =
    "WITH done AS (SELECT payment_id FROM payments"
    "  WHERE order_id = $1::uuid OR idempotency_key = $2::uuid LIMIT 1),"
    " fenced AS (SELECT 1 FROM payment_cancellations WHERE order_id = $1::uuid"
    "  AND verdict = 'CANCELLED' AND NOT EXISTS (SELECT 1 FROM done)),"
    " added AS (INSERT INTO payment_attempts (order_id, payment_id, event_id)"
    "  SELECT $1::uuid, $3::uuid, $2::uuid"
    "  WHERE NOT EXISTS (SELECT 1 FROM done) AND NOT EXISTS (SELECT 1 FROM fenced)"
    "  ON CONFLICT (order_id) DO NOTHING RETURNING payment_id)"
    " SELECT (SELECT payment_id::text FROM done), EXISTS (SELECT 1 FROM fenced),"
    "  (SELECT payment_id::text FROM added),"
    "  (SELECT payment_id::text FROM payment_attempts WHERE order_id = $1::uuid)";

static deta_err_t attempt_in_tx(deta_db_t *db, const payment_request_t *req,
                                payment_attempt_t *out, char payment_id[DETA_UUID_LEN + 1],
                                char *errstr, size_t errsize) {
    char fresh[DETA_UUID_LEN + 1];
    deta_uuid_new(fresh);
    const char *params[] = {req->order_id, req->event_id, fresh};
    deta_err_t err;
    PGresult *res = deta_db_exec(db, ATTEMPT_SQL, 3, params, &err, errstr, errsize);
    if (!res)
        return err;
    int col = !PQgetisnull(res, 0, 0)                   ? 0  /* done */
              : strcmp(PQgetvalue(res, 0, 1), "t") == 0 ? 1  /* fenced */
              : !PQgetisnull(res, 0, 2)                 ? 2  /* added */
              : !PQgetisnull(res, 0, 3)                 ? 3  /* resumed */
                                                        : -1;
    static const payment_attempt_t outcome[] = {PAYMENT_ATTEMPT_DONE, PAYMENT_ATTEMPT_FENCED,
                                                PAYMENT_ATTEMPT_NEW, PAYMENT_ATTEMPT_RESUMED};
    if (col >= 0)
        *out = outcome[col];
    if (col >= 0 && col != 1)
        snprintf(payment_id, DETA_UUID_LEN + 1, "%s", PQgetvalue(res, 0, col));
    PQclear(res);
    if (col < 0) /* the insert met an attempt this snapshot does not show */
        return deta_errf(DETA_ERR_TRANSIENT, errstr, errsize, "the order's attempt vanished");
    return DETA_OK;
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
    if (err || !got || *out == PAYMENT_ATTEMPT_DONE || *out == PAYMENT_ATTEMPT_FENCED) {
        deta_db_rollback(db); /* a claim taken for nothing goes with it */
        return err;
    }
    return deta_db_commit(db, errstr, errsize);
}

/* ---- an attempt ends ---- */

/* The attempt and the holder's claim end together (both statements run whatever
 * the other finds: a claim taken over by another attempt is left to it). */
#define END_ATTEMPT(order, holder)                                                     \
    " a AS (DELETE FROM payment_attempts WHERE order_id = " order "),"                 \
    " c AS (DELETE FROM payment_claims WHERE order_id = " order " AND holder = " holder ")"

static const char END_ATTEMPT_SQL[] = "WITH" END_ATTEMPT("$1", "$2") " SELECT 1";

/* The payment, and only when it is new (its row is returned) the attempt's end,
 * in one statement: a twin (ON CONFLICT) ends nothing. */
static const char RECORD_SQL[] =
    "WITH p AS (INSERT INTO payments (payment_id, order_id, idempotency_key, customer_id,"
    "  amount, currency, status, reason, created_at)"
    "  VALUES ($1, $2, $3, $4, $5::numeric, $6, $7, $8, $9)"
    "  ON CONFLICT DO NOTHING RETURNING order_id),"
    END_ATTEMPT("(SELECT order_id FROM p)", "$10::uuid") " SELECT 1 FROM p";

#undef END_ATTEMPT

/* Inside the open transaction: *inserted is false when a twin exists (and
 * then nothing was written). */
static deta_err_t insert_payment(deta_db_t *db, const payment_t *p, const char *holder,
                                 bool *inserted, char *errstr, size_t errsize) {
    char amount[DETA_MONEY_STRLEN];
    const char *params[] = {p->payment_id,     p->req.order_id,
                            p->req.event_id,   p->req.customer_id,
                            deta_money_format(p->req.amount, amount), p->req.currency,
                            payment_status(p), p->decision.reason,
                            p->decided_at,     holder};
    return first_value(db, RECORD_SQL, 10, params, inserted, NULL, 0, errstr, errsize);
}

deta_err_t payment_store_record(deta_db_t *db, const payment_t *p, const deta_event_t *ev,
                                const char *holder, bool *recorded, char *errstr,
                                size_t errsize) {
    const char *end[] = {p->req.order_id, holder};
    bool inserted = false;
    *recorded = false;
    deta_err_t err = deta_db_begin(db, errstr, errsize);
    if (!err)
        err = insert_payment(db, p, holder, &inserted, errstr, errsize);
    if (!err && inserted)
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

#define TS_TEXT(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

/* The payment without its null fields (reason), then refund: null or the
 * order's refund (a jsonb merge, since json_strip_nulls would drop a null
 * refund too). */
static const char SELECT_PAYMENT_SQL[] =
    "SELECT json_strip_nulls(json_build_object("
    "  'paymentId', p.payment_id, 'orderId', p.order_id, 'customerId', p.customer_id,"
    "  'amount', to_char(p.amount, 'FM9999999999999990.00'), 'currency', p.currency,"
    "  'status', p.status, 'reason', p.reason, 'idempotencyKey', p.idempotency_key,"
    "  'createdAt', " TS_TEXT("p.created_at") "))::jsonb"
    " || jsonb_build_object('refund', (SELECT jsonb_build_object("
    "  'refundId', r.refund_id, 'amount', to_char(r.amount, 'FM9999999999999990.00'),"
    "  'currency', r.currency, 'reason', r.reason,"
    "  'refundedAt', " TS_TEXT("r.created_at") ")"
    "  FROM refunds r WHERE r.order_id = p.order_id))"
    " FROM payments p WHERE p.order_id = $1";

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
                      "SELECT (SELECT count(*) FROM payment_attempts"
                      "  WHERE started_at < now() - $1::bigint * interval '1 millisecond')"
                      " + (SELECT count(*) FROM refund_attempts"
                      "  WHERE started_at < now() - $1::bigint * interval '1 millisecond')",
                      1, params, &got, n, sizeof n, errstr, errsize);
    if (!err)
        *stale = atol(n);
    return err;
}

/* ---- the cancellation saga ---- */

static const char CLAIM_END_SQL[] = "DELETE FROM payment_claims WHERE order_id = $1 AND holder = $2";

/* Inside cancel's transaction, after the claim: the verdict, and unless it was
 * decided before, its row and its event. */
static deta_err_t cancel_in_tx(deta_db_t *db, const payment_cancel_t *c,
                               payment_cancel_step_t *step, payment_cancel_verdict_t *verdict,
                               char payment_id[DETA_UUID_LEN + 1], char *errstr,
                               size_t errsize) {
    const char *order[] = {c->order_id};
    bool decided = false, charging = false, paid = false;
    char status[16] = "";
    deta_err_t err = first_value(db, "SELECT 1 FROM payment_cancellations WHERE order_id = $1",
                                 1, order, &decided, NULL, 0, errstr, errsize);
    if (!err && !decided)
        err = first_value(db, "SELECT 1 FROM payment_attempts WHERE order_id = $1", 1, order,
                          &charging, NULL, 0, errstr, errsize);
    if (err)
        return err;
    if (charging) { /* an attempt left by an instance that died: its resumption decides */
        *step = PAYMENT_CANCEL_STEP_CHARGING;
        return DETA_OK;
    }
    *step = PAYMENT_CANCEL_STEP_DONE;
    PGresult *res = NULL;
    if (!decided) {
        res = deta_db_exec(db, "SELECT payment_id, status FROM payments WHERE order_id = $1", 1,
                           order, &err, errstr, errsize);
        if (!res)
            return err;
        if ((paid = PQntuples(res) > 0)) {
            snprintf(payment_id, DETA_UUID_LEN + 1, "%s", PQgetvalue(res, 0, 0));
            snprintf(status, sizeof status, "%s", PQgetvalue(res, 0, 1));
        }
        PQclear(res);
    }
    *verdict = payment_cancel_decide(decided, paid ? status : NULL);
    if (*verdict == PAYMENT_CANCEL_DECIDED)
        return DETA_OK;
    char at[DETA_TS_LEN];
    deta_timestamp_now(at);
    deta_event_t ev;
    err = payment_cancel_event_build(c, *verdict, paid ? payment_id : NULL, at, &ev, errstr,
                                     errsize);
    if (err)
        return err;
    const char *row[] = {c->order_id, payment_cancel_verdict_name(*verdict),
                         c->has_reason ? c->reason : NULL, c->event_id, at};
    err = deta_db_run(db,
                      "INSERT INTO payment_cancellations"
                      " (order_id, verdict, reason, event_id, decided_at, cancelled_at)"
                      " VALUES ($1, $2, $3, $4, $5::timestamptz,"
                      "  CASE WHEN $2 = 'CANCELLED' THEN $5::timestamptz END)",
                      5, row, errstr, errsize);
    if (!err)
        err = deta_outbox_add(db, DETA_TOPIC_PAYMENT_EVENTS, &ev, errstr, errsize);
    deta_event_clear(&ev);
    return err;
}

deta_err_t payment_store_cancel(deta_db_t *db, const payment_cancel_t *c, const char *holder,
                                payment_cancel_step_t *step, payment_cancel_verdict_t *verdict,
                                char payment_id[DETA_UUID_LEN + 1], char *errstr,
                                size_t errsize) {
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%ld", PAYMENT_LOCK_TTL_MS);
    const char *claim[] = {c->order_id, holder, ttl};
    bool got = false;
    *step = PAYMENT_CANCEL_STEP_BUSY;
    *verdict = PAYMENT_CANCEL_DECIDED;
    payment_id[0] = '\0';
    deta_err_t err = deta_db_begin(db, errstr, errsize);
    if (!err)
        err = first_value(db, CLAIM_SQL, 3, claim, &got, NULL, 0, errstr, errsize);
    if (!err && got)
        err = cancel_in_tx(db, c, step, verdict, payment_id, errstr, errsize);
    if (err || !got || *step != PAYMENT_CANCEL_STEP_DONE || *verdict == PAYMENT_CANCEL_DECIDED) {
        deta_db_rollback(db); /* nothing to keep: the claim goes with it */
        return err;
    }
    const char *end[] = {c->order_id, holder};
    if (!(err = deta_db_run(db, CLAIM_END_SQL, 2, end, errstr, errsize)))
        err = deta_db_commit(db, errstr, errsize);
    else
        deta_db_rollback(db);
    return err;
}

/* ---- refunds ---- */

/* Inside refund_begin's transaction, after the claim. */
static deta_err_t refund_in_tx(deta_db_t *db, const payment_refund_request_t *req,
                               payment_refund_attempt_t *out, payment_refund_t *r,
                               char *errstr, size_t errsize) {
    const char *find[] = {req->order_id, req->event_id};
    bool got = false;
    deta_err_t err = first_value(db,
                                 "SELECT refund_id FROM refunds"
                                 " WHERE order_id = $1 OR idempotency_key = $2 LIMIT 1",
                                 2, find, &got, r->refund_id, sizeof r->refund_id, errstr,
                                 errsize);
    if (err || got) {
        *out = PAYMENT_REFUND_DONE;
        return err;
    }
    PGresult *res = deta_db_exec(db,
                                 "SELECT payment_id, status, amount::text, currency"
                                 " FROM payments WHERE order_id = $1",
                                 1, find, &err, errstr, errsize);
    if (!res)
        return err;
    deta_money_t charged = 0;
    bool refundable = false;
    if (PQntuples(res) > 0 &&
        deta_money_parse(PQgetvalue(res, 0, 2), &charged, NULL, 0) == DETA_OK) {
        refundable = payment_refund_amount(PQgetvalue(res, 0, 1), charged, &r->amount);
        snprintf(r->payment_id, sizeof r->payment_id, "%s", PQgetvalue(res, 0, 0));
        snprintf(r->currency, sizeof r->currency, "%s", PQgetvalue(res, 0, 3));
    }
    PQclear(res);
    if (!refundable) {
        *out = PAYMENT_REFUND_NOTHING;
        return DETA_OK;
    }
    char fresh[DETA_UUID_LEN + 1];
    deta_uuid_new(fresh);
    const char *add[] = {req->order_id, fresh, req->event_id};
    err = first_value(db,
                      "INSERT INTO refund_attempts (order_id, refund_id, event_id)"
                      " VALUES ($1, $2, $3) ON CONFLICT (order_id) DO NOTHING"
                      " RETURNING refund_id",
                      3, add, &got, r->refund_id, sizeof r->refund_id, errstr, errsize);
    if (err || got) {
        *out = PAYMENT_REFUND_NEW;
        return err;
    }
    *out = PAYMENT_REFUND_RESUMED;
    err = first_value(db, "SELECT refund_id FROM refund_attempts WHERE order_id = $1", 1, find,
                      &got, r->refund_id, sizeof r->refund_id, errstr, errsize);
    if (!err && !got)
        err = deta_errf(DETA_ERR_TRANSIENT, errstr, errsize, "the order's refund attempt vanished");
    return err;
}

deta_err_t payment_store_refund_begin(deta_db_t *db, const payment_refund_request_t *req,
                                      const char *holder, payment_refund_attempt_t *out,
                                      payment_refund_t *r, char *errstr, size_t errsize) {
    memset(r, 0, sizeof *r);
    r->req = *req;
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%ld", PAYMENT_LOCK_TTL_MS);
    const char *claim[] = {req->order_id, holder, ttl};
    bool got = false;
    *out = PAYMENT_REFUND_BUSY;
    deta_err_t err = deta_db_begin(db, errstr, errsize);
    if (!err)
        err = first_value(db, CLAIM_SQL, 3, claim, &got, NULL, 0, errstr, errsize);
    if (!err && got)
        err = refund_in_tx(db, req, out, r, errstr, errsize);
    if (err || !got || (*out != PAYMENT_REFUND_NEW && *out != PAYMENT_REFUND_RESUMED)) {
        deta_db_rollback(db);
        return err;
    }
    return deta_db_commit(db, errstr, errsize);
}

/* The amount and currency are the payment's, whatever the caller holds. */
static const char INSERT_REFUND_SQL[] =
    "INSERT INTO refunds (refund_id, order_id, payment_id, amount, currency, idempotency_key,"
    "                     reason, created_at)"
    " SELECT $1, order_id, payment_id, amount, currency, $3, $4, $5::timestamptz"
    " FROM payments WHERE order_id = $2 AND status = 'AUTHORIZED'"
    " ON CONFLICT DO NOTHING RETURNING 1";

static const char END_REFUND_SQL[] =
    "WITH a AS (DELETE FROM refund_attempts WHERE order_id = $1),"
    "     c AS (DELETE FROM payment_claims WHERE order_id = $1 AND holder = $2)"
    " SELECT 1";

deta_err_t payment_store_refund_record(deta_db_t *db, const payment_refund_t *r,
                                       const deta_event_t *ev, const char *holder,
                                       bool *recorded, char *errstr, size_t errsize) {
    const char *row[] = {r->refund_id, r->req.order_id, r->req.event_id,
                         DETA_REASON_ORDER_CANCELLED, r->refunded_at};
    const char *end[] = {r->req.order_id, holder};
    bool inserted = false;
    *recorded = false;
    deta_err_t err = deta_db_begin(db, errstr, errsize);
    if (!err)
        err = first_value(db, INSERT_REFUND_SQL, 5, row, &inserted, NULL, 0, errstr, errsize);
    if (!err && inserted && !(err = deta_db_run(db, END_REFUND_SQL, 2, end, errstr, errsize)))
        err = deta_outbox_add(db, DETA_TOPIC_PAYMENT_EVENTS, ev, errstr, errsize);
    if (!err && inserted) {
        err = deta_db_commit(db, errstr, errsize);
        *recorded = err == DETA_OK;
        return err;
    }
    deta_db_rollback(db);
    if (err)
        return err;
    /* Not inserted: the twin (this attempt's own refund from a commit whose
     * answer was lost, or another's), or no AUTHORIZED payment any more. */
    char twin[DETA_UUID_LEN + 1] = "";
    const char *find[] = {r->req.order_id, r->req.event_id};
    bool got = false;
    err = first_value(db,
                      "SELECT refund_id FROM refunds"
                      " WHERE order_id = $1 OR idempotency_key = $2 LIMIT 1",
                      2, find, &got, twin, sizeof twin, errstr, errsize);
    if (err)
        return err;
    if (!got)
        return deta_errf(DETA_ERR_TRANSIENT, errstr, errsize,
                         "the refund was not stored, yet the order has no refund");
    *recorded = strcmp(twin, r->refund_id) == 0;
    return deta_db_run(db, END_REFUND_SQL, 2, end, errstr, errsize);
}
