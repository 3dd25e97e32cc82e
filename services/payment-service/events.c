/*
 * events.c - payment-service's consumers: raw.inventory-events (the charge of
 * inventory.reserved, the cancel's inventory.cancel_forwarded) and
 * raw.delivery-events (the refund of delivery.cancelled).
 *
 * Why not events.h's dispatcher: that opens the database transaction first and
 * claims the event in processed_events inside it. Payments follow the layers of
 * the README instead, and the gateway call must sit between two transactions,
 * never inside one. For each inventory.reserved (other types are ignored):
 *
 *   1. marker payment:dedup:{eventId} present -> a duplicate, done;
 *   2. lock payment-lock:order:{orderId} with a fresh random token (SET NX PX
 *      30000); held by another -> DETA_ERR_TRANSIENT, the consumer retries later;
 *   3. the attempt begins (store.c, one transaction): the order's claim in
 *      Postgres, then the payments table (paid already -> a duplicate) and the
 *      order's attempt: begun now, or found unfinished from an earlier attempt
 *      that may have charged; committed BEFORE the gateway is called;
 *   4. the decision: a new attempt charges under the order's key; a resumed one
 *      looks the key up and charges only when the gateway never took a charge
 *      under it; a hold that has expired is declined without a call;
 *   5. the record (store.c, one transaction): the payment, the end of the
 *      attempt and the claim, and payment.authorized / payment.failed in the
 *      outbox. Once the gateway has answered, the record is retried in place
 *      until it commits: every error, transient or not, for as long as the
 *      service runs (a stopping service tries for STOP_RECORD_MS more, then
 *      leaves the attempt for the next one to resume), renewing the claim on
 *      each try; a claim is never given back after a decision;
 *   6. after the commit, the marker is set for 24 h, and the lock is released
 *      by compare-and-delete, on every path once taken.
 *
 * Steps 1 and 2 go to Redis in one pipelined round trip (guard.c), and so do
 * the two of step 6.
 *
 * Exactly one charge per order. The claim keeps two attempts from charging at
 * once; the attempt row, committed before the call, makes every later attempt
 * (after a crash, an outage, a lost commit answer) a look-up instead of a second
 * charge. The one place where a claim could still be outlived is a long stall
 * between step 3 and the call (a process paused, a connection wait): the attempt
 * refuses to charge once its claim is older than CHARGE_DEADLINE_MS (half the
 * claim's life, measured from before step 3 began, on this process's monotonic
 * clock), gives the claim back and retries; and the gateway's key, the order,
 * makes a real gateway answer a second charge request with the first charge.
 * The claim is taken whether Redis is up or not, because "Redis is down" is
 * each instance's own view; with Redis unreachable steps 1, 2 and 6 are skipped
 * (guard.c says so once).
 *
 * Throughput with a slow gateway. The gateway call is a wait, not work: each
 * worker thread waits for its own call, so PAYMENT_WORKERS (default 32) calls
 * can be in flight. No Postgres connection is held during the wait: the workers
 * borrow one of PAYMENT_DB_CONNECTIONS (default 4) shared connections for step
 * 3, and again for step 5 (a borrower waits at most DB_TAKE_MS for one). The
 * simulated latency is at most 5 s, well within the claim's 30 s and a graceful
 * stop.
 *
 * Retries: a lock or claim held by another consumer is normally released within
 * a gateway call, but one left by a crashed consumer lives until its 30 s
 * expiry. The retry budget (PAYMENT_MAX_RETRIES 12 with the consumer's backoff
 * 0.2, 0.4, ... capped at 5 s: 41 s in all) outlasts that with room to spare.
 * An outage in between (the consumer's dependencies down: the retries wait, not
 * counted) only adds its time: the retries go on at the backoff they had reached.
 *
 * The cancellation saga (docs/contracts.md#cancellation). inventory.cancel_forwarded
 * takes the same Redis lock and Postgres claim as a charge, and decides in one
 * transaction (store.c): paid -> payment.cancel_forwarded, declined ->
 * payment.cancel_refused, no payment -> the fence (payment_cancellations) and
 * payment.cancelled; a charge attempt of the order that is unfinished makes it
 * wait (transient). The charge's step 3 reads the fence under its claim and
 * charges nothing for a cancelled order.
 *
 * Refunds (docs/contracts.md#refunds): delivery.cancelled goes through the same
 * six steps with refunds and refund_attempts in place of payments and
 * payment_attempts, and the gateway's refund under the order's key; a resumed
 * attempt looks the refund up first. An order without an authorized payment is
 * skipped (nothing to refund), not dead-lettered.
 *
 * Housekeeping: at most once per HOUSEKEEP_MS, the worker that passes deletes
 * expired claims and counts stale attempts (payment_attempts_stale).
 *
 * Thread safety: with deta_consumer_opts_t.workers > 1 several threads run this
 * handler at once (the messages of one order always on the same thread). The
 * handler keeps no state of its own between calls but the housekeeping's time
 * (atomic); each thread uses its own Redis connection, borrows a shared
 * Postgres one, and metrics are thread-safe.
 */
#include "events.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "deta/clock.h"
#include "deta/event_check.h"
#include "deta/log.h"
#include "deta/topics.h"
#include "deta/trace.h"
#include "store.h"

#define PAYMENT_MAX_RETRIES 12
#define DB_TAKE_MS 5000L              /* the longest wait for a shared connection */
#define CHARGE_DEADLINE_MS (PAYMENT_LOCK_TTL_MS / 2) /* a claim older is not charged on */
#define RECORD_BACKOFF_MS 100L        /* doubling, capped: */
#define RECORD_BACKOFF_MAX_MS 2000L
#define STOP_RECORD_MS 3000L          /* a stopping service's last tries of a record */
#define HOUSEKEEP_MS 60000L

typedef enum outcome {
    OUTCOME_NEW,       /* a payment was decided and recorded */
    OUTCOME_DUP_REDIS, /* the marker said: done before */
    OUTCOME_DUP_DB,    /* the payments table said: done before */
    OUTCOME_FENCED,    /* the order was cancelled before any charge: nothing charged */
} outcome_t;

struct payment_events {
    deta_service_t *svc;
    payment_settings_t settings;
    payment_guard_t *guard;
    payment_gateway_t *gateway;
    deta_db_shared_t *db; /* settings.db_connections, shared by the workers */
    atomic_long next_housekeeping; /* deta_clock_ms() */
    deta_counter_t *processed;
    deta_counter_t *failed;
    deta_counter_t *duplicate;
    deta_counter_t *redis_hit;
    deta_counter_t *db_hit;
    deta_counter_t *lock_timeout;
    deta_histogram_t *duration;
    deta_counter_t *gateway_calls;
    deta_counter_t *gateway_lookups;
    deta_counter_t *resumed;
    deta_counter_t *record_retries;
    deta_counter_t *hold_expired;
    deta_counter_t *claims_purged;
    deta_gauge_t *stale_attempts;
    deta_gauge_t *in_flight;   /* gateway calls waiting now */
    deta_gauge_t *connections; /* shared Postgres connections opened */
    /* the cancellation saga and refunds */
    deta_counter_t *cancel_forwarded, *cancel_refused, *cancel_fenced;
    deta_counter_t *cancel_duplicate;
    deta_counter_t *cancelled_before_charge;
    deta_counter_t *refunded, *refund_duplicate, *refund_skipped;
    deta_counter_t *refund_calls, *refund_lookups;
};

payment_events_t *payment_events_new(deta_service_t *svc, const payment_settings_t *settings,
                                     payment_guard_t *guard, payment_gateway_t *gateway) {
    payment_events_t *pe = calloc(1, sizeof *pe);
    if (!pe)
        return NULL;
    deta_metrics_t *m = deta_service_metrics(svc);
    pe->svc = svc;
    pe->settings = *settings;
    pe->guard = guard;
    pe->gateway = gateway;
    pe->db = deta_db_shared_new(deta_service_config(svc), settings->db_connections);
    if (!pe->db) {
        free(pe);
        return NULL;
    }
    deta_db_shared_metrics(pe->db, m); /* waits for a shared connection */
    pe->processed = deta_counter(m, "payment_processed_total",
                                 "Payments decided and recorded (authorized or declined)", NULL);
    pe->failed = deta_counter(m, "payment_failed_total", "Payments declined", NULL);
    pe->duplicate = deta_counter(m, "payment_duplicate_total",
                                 "inventory.reserved events recognised as already paid", NULL);
    pe->redis_hit = deta_counter(m, "payment_dedup_redis_hit_total",
                                 "Duplicates caught by the Redis marker", NULL);
    pe->db_hit = deta_counter(m, "payment_dedup_db_hit_total",
                              "Duplicates caught by the payments table's unique keys", NULL);
    pe->lock_timeout = deta_counter(m, "payment_lock_timeout_total",
                                    "Attempts that found the order's payment lock or claim held", NULL);
    pe->duration = deta_histogram(m, "payment_processing_duration_seconds",
                                  "Time to handle one inventory.reserved event", NULL, NULL, 0);
    pe->gateway_calls = deta_counter(m, "payment_gateway_calls_total",
                                     "Charges asked of the payment gateway (one per order)", NULL);
    pe->gateway_lookups = deta_counter(m, "payment_gateway_lookups_total",
                                       "Look-ups of an earlier attempt's charge at the gateway",
                                       NULL);
    pe->resumed = deta_counter(m, "payment_attempts_resumed_total",
                               "Attempts that found an earlier one unfinished", NULL);
    pe->record_retries = deta_counter(m, "payment_record_retries_total",
                                      "Records of a decided payment tried again", NULL);
    pe->hold_expired = deta_counter(m, "payment_hold_expired_total",
                                    "Reservations declined uncharged: their hold had expired",
                                    NULL);
    pe->claims_purged = deta_counter(m, "payment_claims_purged_total",
                                     "Expired claims deleted by the housekeeping", NULL);
    pe->stale_attempts = deta_gauge(m, "payment_attempts_stale",
                                    "Attempts begun over 2 minutes ago without an outcome", NULL);
    pe->in_flight = deta_gauge(m, "payment_gateway_calls_in_flight",
                               "Gateway calls waiting for their answer now", NULL);
    pe->connections = deta_gauge(m, "payment_db_connections",
                                 "Postgres connections the consumer's workers share (opened)",
                                 NULL);
    static const char verdicts[] = "Cancels decided by payment-service, by verdict";
    pe->cancel_forwarded = deta_counter(m, "payment_cancel_verdicts_total", verdicts,
                                        "verdict=\"FORWARDED\"");
    pe->cancel_refused = deta_counter(m, "payment_cancel_verdicts_total", verdicts,
                                      "verdict=\"REFUSED\"");
    pe->cancel_fenced = deta_counter(m, "payment_cancel_verdicts_total", verdicts,
                                     "verdict=\"CANCELLED\"");
    pe->cancel_duplicate = deta_counter(m, "payment_cancel_duplicate_total",
                                        "inventory.cancel_forwarded events of a cancel decided "
                                        "before (nothing published)",
                                        NULL);
    pe->cancelled_before_charge =
        deta_counter(m, "payment_cancelled_before_charge_total",
                     "inventory.reserved events of orders cancelled before any charge "
                     "(not charged)",
                     NULL);
    pe->refunded = deta_counter(m, "payment_refunded_total", "Refunds made and recorded", NULL);
    pe->refund_duplicate = deta_counter(m, "payment_refund_duplicate_total",
                                        "delivery.cancelled events of orders refunded already",
                                        NULL);
    pe->refund_skipped = deta_counter(m, "payment_refund_skipped_total",
                                      "delivery.cancelled events without an authorized payment "
                                      "(nothing to refund)",
                                      NULL);
    pe->refund_calls = deta_counter(m, "payment_gateway_refund_calls_total",
                                    "Refunds asked of the payment gateway (one per order)", NULL);
    pe->refund_lookups = deta_counter(m, "payment_gateway_refund_lookups_total",
                                      "Look-ups of an earlier attempt's refund at the gateway",
                                      NULL);
    return pe;
}

void payment_events_free(payment_events_t *pe) {
    if (!pe)
        return;
    deta_db_shared_free(pe->db);
    free(pe);
}

/* ---- the steps ---- */

static bool stopping(const payment_events_t *pe) {
    return atomic_load(deta_service_stopping(pe->svc));
}

static deta_db_t *take_db(payment_events_t *pe, char *errstr, size_t errsize) {
    deta_db_t *db = deta_db_shared_take(pe->db, DB_TAKE_MS);
    deta_gauge_set(pe->connections, deta_db_shared_opened(pe->db));
    if (!db)
        deta_errf(DETA_ERR_TRANSIENT, errstr, errsize,
                  "no shared Postgres connection came free within %ld ms", DB_TAKE_MS);
    return db;
}

/* Deletes expired claims and counts stale attempts, at most once per
 * HOUSEKEEP_MS over all workers (the one that wins the exchange does it). */
static void housekeep(payment_events_t *pe, deta_db_t *db) {
    long now = deta_clock_ms(), due = atomic_load(&pe->next_housekeeping);
    if (now < due ||
        !atomic_compare_exchange_strong(&pe->next_housekeeping, &due, now + HOUSEKEEP_MS))
        return;
    long purged = 0, stale = 0;
    char why[256] = "";
    if (payment_store_housekeep(db, &purged, &stale, why, sizeof why) != DETA_OK) {
        DETA_WARN("payment housekeeping failed: %s", why);
        return;
    }
    deta_counter_add(pe->claims_purged, (double)purged);
    deta_gauge_set(pe->stale_attempts, (double)stale);
    if (stale > 0)
        DETA_WARN("%ld payment attempts have no outcome after %ld s", stale,
                  PAYMENT_ATTEMPT_STALE_MS / 1000);
}

/* Step 3 on a borrowed connection. */
static deta_err_t begin_attempt(payment_events_t *pe, const payment_request_t *req,
                                const char *holder, payment_attempt_t *attempt,
                                char payment_id[DETA_UUID_LEN + 1], char *errstr,
                                size_t errsize) {
    deta_db_t *db = take_db(pe, errstr, errsize);
    if (!db)
        return DETA_ERR_TRANSIENT;
    deta_err_t err = payment_store_begin(db, req, holder, attempt, payment_id, errstr, errsize);
    if (!err)
        housekeep(pe, db);
    deta_db_shared_give(pe->db, db);
    return err;
}

/* Before any charge: the claim goes back (a retry may then begin at once). */
static deta_err_t give_back(payment_events_t *pe, const char *order_id, const char *holder,
                            deta_err_t err, char *errstr, size_t errsize, const char *why) {
    char reason[256];
    snprintf(reason, sizeof reason, "%s", why ? why : ""); /* why may be errstr itself */
    deta_db_t *db = deta_db_shared_take(pe->db, DB_TAKE_MS);
    if (db) {
        payment_store_unclaim(db, order_id, holder);
        deta_db_shared_give(pe->db, db);
    }
    return deta_errf(err, errstr, errsize, "%s", reason);
}

/* A client span around a gateway call (deta/trace.h), child of the consumer's. */
static deta_span_t *gateway_span(const char *operation, const char *order_id) {
    char name[64];
    snprintf(name, sizeof name, "payment.gateway %s", operation);
    deta_span_t *span = deta_span_begin(name, DETA_SPAN_CLIENT, NULL);
    deta_span_attr(span, "deta.gateway.operation", operation);
    deta_span_attr(span, "deta.order_id", order_id);
    return span;
}

static void gateway_span_end(deta_span_t *span, deta_err_t err, const char *why) {
    if (err)
        deta_span_set_error(span, why);
    deta_span_end(span);
}

static deta_err_t charge(payment_events_t *pe, const payment_request_t *req,
                         payment_decision_t *decision, char *errstr, size_t errsize) {
    deta_counter_inc(pe->gateway_calls);
    deta_gauge_add(pe->in_flight, 1);
    deta_span_t *span = gateway_span("charge", req->order_id);
    deta_err_t err =
        payment_gateway_charge(pe->gateway, req->order_id, req, decision, errstr, errsize);
    if (!err)
        deta_span_attr(span, "deta.payment.authorized", decision->authorized ? "true" : "false");
    gateway_span_end(span, err, errstr);
    deta_gauge_add(pe->in_flight, -1);
    return err;
}

/* Step 4. *decided false (with an error) when nothing was charged and the claim
 * went back; from a charge or a found one on, the decision stands. */
static deta_err_t decide(payment_events_t *pe, const payment_request_t *req, const char *holder,
                         payment_attempt_t attempt, long claimed_at,
                         payment_decision_t *decision, char *errstr, size_t errsize) {
    if (attempt == PAYMENT_ATTEMPT_RESUMED) {
        bool found = false;
        deta_counter_inc(pe->resumed);
        deta_counter_inc(pe->gateway_lookups);
        deta_span_t *span = gateway_span("lookup", req->order_id);
        deta_err_t err = payment_gateway_lookup(pe->gateway, req->order_id, req, &found,
                                                decision, errstr, errsize);
        gateway_span_end(span, err, errstr);
        if (err)
            return give_back(pe, req->order_id, holder, err, errstr, errsize,
                             errstr ? errstr : "");
        if (found)
            return DETA_OK;
    }
    if (payment_hold_expired(req, deta_wall_ms())) {
        deta_counter_inc(pe->hold_expired);
        *decision = (payment_decision_t){false, PAYMENT_DECLINED_HOLD_EXPIRED};
        return DETA_OK;
    }
    if (stopping(pe))
        return give_back(pe, req->order_id, holder, DETA_ERR_TRANSIENT, errstr, errsize,
                         "stopping: the gateway is not called, the event comes again");
    if (deta_clock_ms() - claimed_at > CHARGE_DEADLINE_MS)
        return give_back(pe, req->order_id, holder, DETA_ERR_TRANSIENT, errstr, errsize,
                         "the claim is too old to charge on: it could expire during the call");
    deta_err_t err = charge(pe, req, decision, errstr, errsize);
    if (err) /* the gateway took no charge */
        return give_back(pe, req->order_id, holder, err, errstr, errsize,
                             errstr ? errstr : "");
    return DETA_OK;
}

/* A record of step 5 (a payment or a refund): one transaction, store.c's. */
typedef deta_err_t (*record_fn)(deta_db_t *db, const void *item, const deta_event_t *ev,
                                const char *holder, bool *recorded, char *errstr,
                                size_t errsize);

static deta_err_t record_payment(deta_db_t *db, const void *item, const deta_event_t *ev,
                                 const char *holder, bool *recorded, char *errstr,
                                 size_t errsize) {
    return payment_store_record(db, item, ev, holder, recorded, errstr, errsize);
}

static deta_err_t record_refund(deta_db_t *db, const void *item, const deta_event_t *ev,
                                const char *holder, bool *recorded, char *errstr,
                                size_t errsize) {
    return payment_store_refund_record(db, item, ev, holder, recorded, errstr, errsize);
}

/* One try of step 5; the claim renewed first on a retry. */
static deta_err_t record_try(payment_events_t *pe, record_fn fn, const void *item,
                             const char *order_id, const deta_event_t *ev, const char *holder,
                             int attempt, bool *recorded, char *errstr, size_t errsize) {
    deta_db_t *db = take_db(pe, errstr, errsize);
    if (!db)
        return DETA_ERR_TRANSIENT;
    bool held = true;
    deta_err_t err = DETA_OK;
    if (attempt > 1)
        err = payment_store_extend(db, order_id, holder, &held, errstr, errsize);
    if (!err)
        err = fn(db, item, ev, holder, recorded, errstr, errsize);
    deta_db_shared_give(pe->db, db);
    return err;
}

/* Step 5, retried in place until it commits (see the top of this file). what
 * names the record in the log ("payment <id>", "refund <id>"). */
static deta_err_t record_retried(payment_events_t *pe, record_fn fn, const void *item,
                                 const char *order_id, const char *what,
                                 const deta_event_t *ev, const char *holder, bool *recorded,
                                 char *errstr, size_t errsize) {
    deta_err_t err;
    long stop_deadline = 0, backoff = RECORD_BACKOFF_MS;
    for (int attempt = 1;; attempt++) {
        err = record_try(pe, fn, item, order_id, ev, holder, attempt, recorded, errstr,
                         errsize);
        if (!err)
            break;
        if (stopping(pe) && !stop_deadline)
            stop_deadline = deta_clock_ms() + STOP_RECORD_MS;
        if (stop_deadline && deta_clock_ms() >= stop_deadline)
            break; /* the attempt stays: the next one resumes it by a look-up */
        deta_counter_inc(pe->record_retries);
        if (attempt == 1 || attempt % 10 == 0)
            DETA_WARN("%s of order %s decided but not recorded (try %d, %s): %s", what,
                      order_id, attempt, deta_err_name(err), errstr ? errstr : "");
        deta_sleep_ms(backoff);
        backoff = backoff * 2 > RECORD_BACKOFF_MAX_MS ? RECORD_BACKOFF_MAX_MS : backoff * 2;
    }
    return err == DETA_OK ? DETA_OK : DETA_ERR_TRANSIENT;
}

static deta_err_t record_decided(payment_events_t *pe, const payment_t *p, const char *holder,
                                 bool *recorded, char *errstr, size_t errsize) {
    deta_event_t ev;
    deta_err_t err = payment_event_build(p, &ev, errstr, errsize);
    if (err) /* out of memory, after the charge: the next attempt resumes by a look-up */
        return DETA_ERR_TRANSIENT;
    char what[64];
    snprintf(what, sizeof what, "payment %.36s", p->payment_id);
    err = record_retried(pe, record_payment, p, p->req.order_id, what, &ev, holder, recorded,
                         errstr, errsize);
    deta_event_clear(&ev);
    return err;
}

/* What runs under the order's Redis lock: holder is the lock's token, which
 * also holds the order's claim in Postgres. */
typedef deta_err_t (*locked_fn)(payment_events_t *pe, void *work, const char *holder,
                                char *errstr, size_t errsize);

/* Steps 1, 2 and 6 around fn (a charge's, a cancel's, a refund's steps 3 to 5):
 * the event's Redis marker and the order's lock in one round trip, then the
 * marker set and the lock released in another. *duplicate when the marker says
 * the event was handled: fn does not run. Without Redis fn runs unguarded, and
 * Postgres's claim and unique keys decide alone. */
static deta_err_t under_guard(payment_events_t *pe, const char *event_id, const char *order_id,
                              locked_fn fn, void *work, bool *duplicate, char *errstr,
                              size_t errsize) {
    char token[DETA_UUID_LEN + 1];
    deta_uuid_new(token);
    *duplicate = false;
    guard_entry_t entry = payment_guard_enter(pe->guard, event_id, order_id, token);
    if (entry == GUARD_DUPLICATE) {
        *duplicate = true;
        return DETA_OK;
    }
    if (entry == GUARD_BUSY) {
        deta_counter_inc(pe->lock_timeout);
        return deta_errf(DETA_ERR_TRANSIENT, errstr, errsize,
                         "the order's payment lock is held by another consumer");
    }
    deta_err_t err = fn(pe, work, token, errstr, errsize);
    if (entry == GUARD_LOCKED)
        payment_guard_leave(pe->guard, event_id, order_id, token, err == DETA_OK);
    return err;
}

/* Steps 3 to 5. */
static deta_err_t record_once(payment_events_t *pe, const payment_request_t *req,
                              const char *holder, payment_t *p, outcome_t *out, char *errstr,
                              size_t errsize) {
    *out = OUTCOME_DUP_DB;
    char payment_id[DETA_UUID_LEN + 1] = "";
    payment_attempt_t attempt = PAYMENT_ATTEMPT_BUSY;
    long claimed_at = deta_clock_ms(); /* before the claim: on the safe side */
    deta_err_t err = begin_attempt(pe, req, holder, &attempt, payment_id, errstr, errsize);
    if (err || attempt == PAYMENT_ATTEMPT_DONE)
        return err;
    if (attempt == PAYMENT_ATTEMPT_FENCED) {
        *out = OUTCOME_FENCED;
        return DETA_OK;
    }
    if (attempt == PAYMENT_ATTEMPT_BUSY) {
        deta_counter_inc(pe->lock_timeout);
        return deta_errf(DETA_ERR_TRANSIENT, errstr, errsize,
                         "the order's payment claim in Postgres is held by another consumer");
    }
    payment_decision_t decision;
    if ((err = decide(pe, req, holder, attempt, claimed_at, &decision, errstr, errsize)))
        return err;
    payment_init(p, payment_id, req, decision);
    bool recorded = false;
    err = record_decided(pe, p, holder, &recorded, errstr, errsize);
    *out = recorded ? OUTCOME_NEW : OUTCOME_DUP_DB;
    return err;
}

typedef struct {
    const payment_request_t *req;
    payment_t *p;
    outcome_t *out;
} charge_work_t;

static deta_err_t charge_locked(payment_events_t *pe, void *work, const char *holder,
                                char *errstr, size_t errsize) {
    charge_work_t *w = work;
    return record_once(pe, w->req, holder, w->p, w->out, errstr, errsize);
}

/* Steps 1 to 6. */
static deta_err_t charge_once(payment_events_t *pe, const payment_request_t *req, payment_t *p,
                              outcome_t *out, char *errstr, size_t errsize) {
    charge_work_t w = {req, p, out};
    bool duplicate;
    deta_err_t err = under_guard(pe, req->event_id, req->order_id, charge_locked, &w,
                                 &duplicate, errstr, errsize);
    if (duplicate)
        *out = OUTCOME_DUP_REDIS;
    return err;
}

/* ---- the cancellation saga: inventory.cancel_forwarded ---- */

/* Under the order's Redis lock (steps 1 and 2 as for a charge) and its claim:
 * store.c's one transaction decides and publishes; then the marker (step 6).
 * A charge in flight holds the claim (on another instance) or runs before this
 * on the same worker (one order's messages in order): the cancel waits for it.
 * A redelivered forward stops at its marker, or, without Redis, at the row of
 * payment_cancellations its first delivery committed. */
typedef struct {
    const payment_cancel_t *c;
    payment_cancel_verdict_t *verdict;
} cancel_work_t;

static deta_err_t cancel_locked(payment_events_t *pe, void *work, const char *holder,
                                char *errstr, size_t errsize) {
    cancel_work_t *w = work;
    char payment_id[DETA_UUID_LEN + 1];
    payment_cancel_step_t step = PAYMENT_CANCEL_STEP_BUSY;
    deta_err_t err = DETA_ERR_TRANSIENT;
    deta_db_t *db = take_db(pe, errstr, errsize);
    if (db) {
        err = payment_store_cancel(db, w->c, holder, &step, w->verdict, payment_id, errstr,
                                   errsize);
        deta_db_shared_give(pe->db, db);
    }
    if (!err && step == PAYMENT_CANCEL_STEP_BUSY) {
        deta_counter_inc(pe->lock_timeout);
        err = deta_errf(DETA_ERR_TRANSIENT, errstr, errsize,
                        "the order's payment claim in Postgres is held by another consumer");
    } else if (!err && step == PAYMENT_CANCEL_STEP_CHARGING) {
        err = deta_errf(DETA_ERR_TRANSIENT, errstr, errsize,
                        "a charge of the order is unfinished: the cancel waits for it");
    }
    return err;
}

static deta_err_t cancel_once(payment_events_t *pe, const payment_cancel_t *c,
                              payment_cancel_verdict_t *verdict, char *errstr,
                              size_t errsize) {
    *verdict = PAYMENT_CANCEL_DECIDED;
    cancel_work_t w = {c, verdict};
    bool duplicate;
    return under_guard(pe, c->event_id, c->order_id, cancel_locked, &w, &duplicate, errstr,
                       errsize);
}

static deta_err_t handle_cancel_forwarded(payment_events_t *pe, const deta_kafka_msg_t *msg,
                                          const deta_event_t *ev, char *errstr,
                                          size_t errsize) {
    char why[512] = "";
    payment_cancel_t c;
    payment_cancel_verdict_t verdict = PAYMENT_CANCEL_DECIDED;
    deta_err_t err = payment_cancel_from_event(ev, &c, why, sizeof why);
    if (!err)
        err = cancel_once(pe, &c, &verdict, why, sizeof why);
    if (err) {
        deta_log(err == DETA_ERR_TRANSIENT ? DETA_LOG_WARN : DETA_LOG_ERROR, ev->order_id,
                 ev->correlation_id, "%s %s not processed (%s, attempt %d): %s", ev->event_type,
                 ev->event_id, deta_err_name(err), msg->attempt + 1, why);
        return deta_errf(err, errstr, errsize, "%s", why);
    }
    switch (verdict) {
    case PAYMENT_CANCEL_FORWARD:
        deta_counter_inc(pe->cancel_forwarded);
        break;
    case PAYMENT_CANCEL_REFUSE:
        deta_counter_inc(pe->cancel_refused);
        break;
    case PAYMENT_CANCEL_FENCE:
        deta_counter_inc(pe->cancel_fenced);
        break;
    case PAYMENT_CANCEL_DECIDED:
        deta_counter_inc(pe->cancel_duplicate);
        break;
    }
    const char *name = payment_cancel_verdict_name(verdict);
    deta_log(DETA_LOG_INFO, ev->order_id, ev->correlation_id, "%s %s: %s", ev->event_type,
             ev->event_id, name ? name : "decided before, nothing published");
    return DETA_OK;
}

/* ---- refunds: delivery.cancelled ---- */

typedef enum refund_outcome {
    REFUND_NEW,       /* refunded and recorded */
    REFUND_DUPLICATE, /* refunded before (the marker or the refunds table said) */
    REFUND_SKIPPED,   /* no authorized payment: nothing to refund */
} refund_outcome_t;

/* Step 4 for a refund: a resumed attempt looks the refund up first. */
static deta_err_t decide_refund(payment_events_t *pe, const payment_refund_t *r,
                                const char *holder, payment_refund_attempt_t attempt,
                                long claimed_at, char *errstr, size_t errsize) {
    const char *order = r->req.order_id;
    if (attempt == PAYMENT_REFUND_RESUMED) {
        bool found = false;
        deta_money_t amount = 0;
        deta_counter_inc(pe->resumed);
        deta_counter_inc(pe->refund_lookups);
        deta_err_t err =
            payment_gateway_refund_lookup(pe->gateway, order, &found, &amount, errstr, errsize);
        if (err)
            return give_back(pe, order, holder, err, errstr, errsize, errstr ? errstr : "");
        if (found)
            return DETA_OK;
    }
    if (stopping(pe))
        return give_back(pe, order, holder, DETA_ERR_TRANSIENT, errstr, errsize,
                         "stopping: the gateway is not called, the event comes again");
    if (deta_clock_ms() - claimed_at > CHARGE_DEADLINE_MS)
        return give_back(pe, order, holder, DETA_ERR_TRANSIENT, errstr, errsize,
                         "the claim is too old to refund on: it could expire during the call");
    deta_counter_inc(pe->refund_calls);
    deta_gauge_add(pe->in_flight, 1);
    deta_span_t *span = gateway_span("refund", order);
    deta_err_t err = payment_gateway_refund(pe->gateway, order, r->amount, errstr, errsize);
    gateway_span_end(span, err, errstr);
    deta_gauge_add(pe->in_flight, -1);
    if (err) /* the gateway refunded nothing */
        return give_back(pe, order, holder, err, errstr, errsize, errstr ? errstr : "");
    return DETA_OK;
}

/* Steps 3 to 5 of a refund. */
static deta_err_t refund_record_once(payment_events_t *pe, const payment_refund_request_t *req,
                                     const char *holder, payment_refund_t *r,
                                     refund_outcome_t *out, char *errstr, size_t errsize) {
    *out = REFUND_DUPLICATE;
    payment_refund_attempt_t attempt = PAYMENT_REFUND_BUSY;
    long claimed_at = deta_clock_ms();
    deta_db_t *db = take_db(pe, errstr, errsize);
    if (!db)
        return DETA_ERR_TRANSIENT;
    deta_err_t err = payment_store_refund_begin(db, req, holder, &attempt, r, errstr, errsize);
    deta_db_shared_give(pe->db, db);
    if (err || attempt == PAYMENT_REFUND_DONE)
        return err;
    if (attempt == PAYMENT_REFUND_NOTHING) {
        *out = REFUND_SKIPPED;
        return DETA_OK;
    }
    if (attempt == PAYMENT_REFUND_BUSY) {
        deta_counter_inc(pe->lock_timeout);
        return deta_errf(DETA_ERR_TRANSIENT, errstr, errsize,
                         "the order's payment claim in Postgres is held by another consumer");
    }
    if ((err = decide_refund(pe, r, holder, attempt, claimed_at, errstr, errsize)))
        return err;
    deta_timestamp_now(r->refunded_at);
    deta_event_t ev;
    if (payment_refund_event_build(r, &ev, errstr, errsize)) /* out of memory */
        return DETA_ERR_TRANSIENT;
    char what[64];
    snprintf(what, sizeof what, "refund %.36s", r->refund_id);
    bool recorded = false;
    err = record_retried(pe, record_refund, r, req->order_id, what, &ev, holder, &recorded,
                         errstr, errsize);
    deta_event_clear(&ev);
    *out = recorded ? REFUND_NEW : REFUND_DUPLICATE;
    return err;
}

typedef struct {
    const payment_refund_request_t *req;
    payment_refund_t *r;
    refund_outcome_t *out;
} refund_work_t;

static deta_err_t refund_locked(payment_events_t *pe, void *work, const char *holder,
                                char *errstr, size_t errsize) {
    refund_work_t *w = work;
    return refund_record_once(pe, w->req, holder, w->r, w->out, errstr, errsize);
}

/* Steps 1 to 6 of a refund. */
static deta_err_t refund_once(payment_events_t *pe, const payment_refund_request_t *req,
                              payment_refund_t *r, refund_outcome_t *out, char *errstr,
                              size_t errsize) {
    refund_work_t w = {req, r, out};
    bool duplicate;
    deta_err_t err = under_guard(pe, req->event_id, req->order_id, refund_locked, &w,
                                 &duplicate, errstr, errsize);
    if (duplicate)
        *out = REFUND_DUPLICATE;
    return err;
}

static deta_err_t handle_delivery_cancelled(payment_events_t *pe, const deta_kafka_msg_t *msg,
                                            const deta_event_t *ev, char *errstr,
                                            size_t errsize) {
    char why[512] = "";
    payment_refund_request_t req;
    payment_refund_t r;
    refund_outcome_t out = REFUND_DUPLICATE;
    memset(&r, 0, sizeof r);
    deta_err_t err = payment_refund_request_from_event(ev, &req, why, sizeof why);
    if (!err)
        err = refund_once(pe, &req, &r, &out, why, sizeof why);
    if (err) {
        deta_log(err == DETA_ERR_TRANSIENT ? DETA_LOG_WARN : DETA_LOG_ERROR, ev->order_id,
                 ev->correlation_id, "%s %s not processed (%s, attempt %d): %s", ev->event_type,
                 ev->event_id, deta_err_name(err), msg->attempt + 1, why);
        return deta_errf(err, errstr, errsize, "%s", why);
    }
    char amount[DETA_MONEY_STRLEN];
    switch (out) {
    case REFUND_NEW:
        deta_counter_inc(pe->refunded);
        deta_log(DETA_LOG_INFO, ev->order_id, ev->correlation_id,
                 "refund %s of payment %s: %s %s", r.refund_id, r.payment_id,
                 deta_money_format(r.amount, amount), r.currency);
        break;
    case REFUND_DUPLICATE:
        deta_counter_inc(pe->refund_duplicate);
        deta_log(DETA_LOG_INFO, ev->order_id, ev->correlation_id,
                 "delivery.cancelled %s: the order is refunded already", ev->event_id);
        break;
    case REFUND_SKIPPED:
        deta_counter_inc(pe->refund_skipped);
        deta_log(DETA_LOG_INFO, ev->order_id, ev->correlation_id,
                 "delivery.cancelled %s: no authorized payment, nothing to refund",
                 ev->event_id);
        break;
    }
    return DETA_OK;
}

/* ---- reporting ---- */

static double seconds_since(const struct timespec *t0) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t0->tv_sec) + (double)(now.tv_nsec - t0->tv_nsec) / 1e9;
}

static void report_success(payment_events_t *pe, const deta_event_t *ev, outcome_t out,
                           const payment_t *p) {
    if (out == OUTCOME_FENCED) {
        deta_counter_inc(pe->cancelled_before_charge);
        deta_log(DETA_LOG_INFO, ev->order_id, ev->correlation_id,
                 "inventory.reserved %s: the order was cancelled before any charge: "
                 "nothing charged, nothing published",
                 ev->event_id);
        return;
    }
    if (out != OUTCOME_NEW) {
        bool redis = out == OUTCOME_DUP_REDIS;
        deta_counter_inc(pe->duplicate);
        deta_counter_inc(redis ? pe->redis_hit : pe->db_hit);
        deta_log(DETA_LOG_INFO, ev->order_id, ev->correlation_id,
                 "inventory.reserved %s is a duplicate (caught by %s): nothing charged",
                 ev->event_id, redis ? "the Redis marker" : "the payments table");
        return;
    }
    deta_counter_inc(pe->processed);
    char amount[DETA_MONEY_STRLEN];
    deta_money_format(p->req.amount, amount);
    if (p->decision.authorized) {
        deta_log(DETA_LOG_INFO, ev->order_id, ev->correlation_id,
                 "payment %s authorized: %s %s", p->payment_id, amount, p->req.currency);
    } else {
        deta_counter_inc(pe->failed);
        deta_log(DETA_LOG_INFO, ev->order_id, ev->correlation_id,
                 "payment %s declined (%s): %s %s", p->payment_id, p->decision.reason, amount,
                 p->req.currency);
    }
}

static void report_failure(const deta_event_t *ev, const deta_kafka_msg_t *msg, deta_err_t err,
                           const char *why) {
    deta_log(err == DETA_ERR_TRANSIENT ? DETA_LOG_WARN : DETA_LOG_ERROR, ev->order_id,
             ev->correlation_id, "inventory.reserved %s not processed (%s, attempt %d): %s",
             ev->event_id, deta_err_name(err), msg->attempt + 1, why);
}

/* ---- the handler ---- */

static deta_err_t handle_reserved(payment_events_t *pe, const deta_kafka_msg_t *msg,
                                  const deta_event_t *ev, char *errstr, size_t errsize) {
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    char why[512] = "";
    payment_request_t req;
    payment_t p;
    outcome_t out = OUTCOME_DUP_DB;
    deta_err_t err = payment_request_from_event(ev, &req, why, sizeof why);
    if (err == DETA_OK)
        err = charge_once(pe, &req, &p, &out, why, sizeof why);
    if (err) {
        report_failure(ev, msg, err, why);
        return deta_errf(err, errstr, errsize, "%s", why);
    }
    report_success(pe, ev, out, &p);
    deta_histogram_observe(pe->duration, seconds_since(&t0));
    return DETA_OK;
}

deta_err_t payment_events_handle(const deta_kafka_msg_t *msg, void *opaque, char *errstr,
                                 size_t errsize) {
    payment_events_t *pe = opaque;
    deta_event_t ev;
    bool parsed = false;
    deta_err_t err = deta_event_from_msg(msg, &ev, &parsed, errstr, errsize);
    if (err && !parsed) {
        DETA_ERROR("refused %s [%d] at %lld: %s", msg->topic, (int)msg->partition,
                   (long long)msg->offset, errstr ? errstr : "malformed event");
        return err;
    }
    if (err) {
        deta_log(DETA_LOG_ERROR, ev.order_id, ev.correlation_id, "%s %s: %s", ev.event_type,
                 ev.event_id, errstr ? errstr : "refused");
    } else if (strcmp(ev.event_type, DETA_EVT_INVENTORY_RESERVED) == 0) {
        err = handle_reserved(pe, msg, &ev, errstr, errsize);
    } else if (strcmp(ev.event_type, DETA_EVT_INVENTORY_CANCEL_FORWARDED) == 0) {
        err = handle_cancel_forwarded(pe, msg, &ev, errstr, errsize);
    } else if (strcmp(ev.event_type, DETA_EVT_DELIVERY_CANCELLED) == 0) {
        err = handle_delivery_cancelled(pe, msg, &ev, errstr, errsize);
    }
    deta_event_clear(&ev);
    return err;
}

/* Two consumers in the group: the inventory events (charges and the cancel's
 * forward) and the delivery events (refunds), each with its own workers, so a
 * refund never waits behind a charge of another order. Refunds are off the
 * saga's critical path: their consumer asks the broker less often. */
deta_err_t payment_events_subscribe(payment_events_t *pe, char *errstr, size_t errsize) {
    static const char *const inventory[] = {DETA_TOPIC_INVENTORY_EVENTS};
    static const char *const delivery[] = {DETA_TOPIC_DELIVERY_EVENTS};
    deta_consumer_opts_t opts = {.max_retries = PAYMENT_MAX_RETRIES,
                                 .workers = pe->settings.workers};
    deta_err_t err = deta_service_consume(pe->svc, inventory, 1, payment_events_handle, pe,
                                          &opts, errstr, errsize);
    deta_consumer_opts_t refunds = opts;
    refunds.fetch_wait_min_ms = DETA_KAFKA_FETCH_WAIT_RELAXED_MS;
    if (!err)
        err = deta_service_consume(pe->svc, delivery, 1, payment_events_handle, pe, &refunds,
                                   errstr, errsize);
    return err;
}
