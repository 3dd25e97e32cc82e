/*
 * store.h - payment-service's SQL (database delivery_eta): an order's claim and
 * attempt, the recording of a decided payment with its event, housekeeping, and
 * the payment of an order for the REST API (store.c says how they fit).
 */
#ifndef PAYMENT_STORE_H
#define PAYMENT_STORE_H

#include <stdbool.h>
#include <jansson.h>

#include "deta/db.h"
#include "domain.h"

extern const deta_migration_t payment_migrations[];
extern const size_t payment_migrations_count;

/* How long an attempt may stay without its outcome before it counts as stale
 * (payment_attempts_stale): well past a gateway call and its record's retries. */
#define PAYMENT_ATTEMPT_STALE_MS 120000L

typedef enum payment_attempt {
    PAYMENT_ATTEMPT_BUSY,    /* another holder's claim is alive: try later */
    PAYMENT_ATTEMPT_DONE,    /* the order (or the event) is paid already */
    PAYMENT_ATTEMPT_NEW,     /* claimed, and the attempt begun: charge */
    PAYMENT_ATTEMPT_RESUMED, /* claimed; an earlier attempt may have charged: look up */
    PAYMENT_ATTEMPT_FENCED,  /* the order was cancelled before any charge: never charge */
} payment_attempt_t;

/* One transaction: the order's claim for holder (PAYMENT_LOCK_TTL_MS), then
 * either the payment found (DONE, nothing kept), or the order's cancellation
 * found (FENCED, nothing kept), or the order's attempt begun
 * (NEW) or found unfinished (RESUMED), committed with the claim. payment_id
 * receives the payment's id (the found payment's, or the attempt's). */
deta_err_t payment_store_begin(deta_db_t *db, const payment_request_t *req, const char *holder,
                               payment_attempt_t *out, char payment_id[DETA_UUID_LEN + 1],
                               char *errstr, size_t errsize);

/* One transaction: the payment row, the end of its attempt and of the holder's
 * claim, and its event in the outbox. *recorded is true when the payment is
 * stored as this attempt's (now, or by an earlier commit whose answer was lost),
 * false when another payment of the order or event was (a duplicate); either
 * way the attempt is over. Errors are the database's: the caller retries. */
deta_err_t payment_store_record(deta_db_t *db, const payment_t *p, const deta_event_t *ev,
                                const char *holder, bool *recorded, char *errstr,
                                size_t errsize);

/* Renews the holder's claim for PAYMENT_LOCK_TTL_MS; *held false when it is not
 * the holder's any more. */
deta_err_t payment_store_extend(deta_db_t *db, const char *order_id, const char *holder,
                                bool *held, char *errstr, size_t errsize);
/* Best effort, and only before a charge: a claim left behind only delays a
 * retry until it expires. */
void payment_store_unclaim(deta_db_t *db, const char *order_id, const char *holder);

/* Deletes up to 1000 expired claims (*purged) and counts the attempts (charges
 * and refunds) older than PAYMENT_ATTEMPT_STALE_MS (*stale). */
deta_err_t payment_store_housekeep(deta_db_t *db, long *purged, long *stale, char *errstr,
                                   size_t errsize);

/* ---- the cancellation saga ---- */

typedef enum payment_cancel_step {
    PAYMENT_CANCEL_STEP_BUSY,     /* another holder's claim is alive: try later */
    PAYMENT_CANCEL_STEP_CHARGING, /* a charge attempt of the order is unfinished: try later */
    PAYMENT_CANCEL_STEP_DONE,     /* decided: *verdict says what (DECIDED: before, nothing now) */
} payment_cancel_step_t;

/* One transaction under the order's claim (taken and ended in it): the verdict
 * of domain.c's payment_cancel_decide from payment_cancellations and payments;
 * unless decided before, the verdict's row in payment_cancellations and its
 * event in the outbox, committed together. payment_id receives the payment's
 * id ("" when none). */
deta_err_t payment_store_cancel(deta_db_t *db, const payment_cancel_t *c, const char *holder,
                                payment_cancel_step_t *step, payment_cancel_verdict_t *verdict,
                                char payment_id[DETA_UUID_LEN + 1], char *errstr,
                                size_t errsize);

/* ---- refunds ---- */

typedef enum payment_refund_attempt {
    PAYMENT_REFUND_BUSY,    /* another holder's claim is alive: try later */
    PAYMENT_REFUND_DONE,    /* the order (or the event) is refunded already */
    PAYMENT_REFUND_NOTHING, /* no authorized payment: nothing to refund */
    PAYMENT_REFUND_NEW,     /* claimed, and the attempt begun: refund */
    PAYMENT_REFUND_RESUMED, /* claimed; an earlier attempt may have refunded: look up */
} payment_refund_attempt_t;

/* One transaction like payment_store_begin's, for req's refund: the claim,
 * refunds (DONE), payments (NOTHING unless AUTHORIZED), and refund_attempts
 * begun (NEW) or found (RESUMED), committed before the gateway is called. r
 * receives the request, the refund's id (the attempt's, or the found refund's),
 * the payment's id, amount (the whole charge) and currency. */
deta_err_t payment_store_refund_begin(deta_db_t *db, const payment_refund_request_t *req,
                                      const char *holder, payment_refund_attempt_t *out,
                                      payment_refund_t *r, char *errstr, size_t errsize);

/* One transaction: the refunds row (its amount and currency taken from the
 * AUTHORIZED payment, never from r), the end of the attempt and of the holder's
 * claim, and ev (payment.refunded) in the outbox. *recorded as for payments:
 * true when the refund stored is this attempt's. Errors: the caller retries. */
deta_err_t payment_store_refund_record(deta_db_t *db, const payment_refund_t *r,
                                       const deta_event_t *ev, const char *holder,
                                       bool *recorded, char *errstr, size_t errsize);

/* The order's payment as the REST API shows it, with its refund (null when
 * none), or DETA_ERR_NOT_FOUND. */
deta_err_t payment_store_get(deta_db_t *db, const char *order_id, json_t **out, char *errstr,
                             size_t errsize);

#endif
