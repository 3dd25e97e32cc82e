/*
 * events.c - inventory-service's event handlers (see events.h).
 *
 * Each handler runs inside the transaction the events.h dispatcher opened, and
 * writes its own event only through the outbox in that same transaction: the
 * stock move, the reservation and the outbox row commit together, or nothing
 * does and the message is retried.
 *
 * No claim of the event id (the dispatcher's own_key, for all three consumers):
 * every route is idempotent by the order's own reservation row, which nothing
 * deletes. A route acts only on states of the row that its action leaves and
 * that, once left, never come back (no route and no sweep leads back to them),
 * so the same event again, or another event id for the same step, finds nothing
 * to do, whenever it comes and whatever the order's other routes did meanwhile;
 * and an event that found nothing to do once finds nothing later either (but for
 * a verdict for an order with no row, which the saga never sends: compensate):
 *   order.created acts when the order has no row (its insert is the key), or
 *     on a CANCELLED row that no order.created reached (the first records the
 *     order's customer on it, counted once in inventory_orders_after_cancel_total);
 *   payment.authorized acts on HELD, or RELEASED with reason HOLD_EXPIRED, and
 *     leaves SOLD or UNFULFILLABLE; payment.failed acts on HELD and leaves
 *     RELEASED; HELD is only ever inserted, and HOLD_EXPIRED only set from HELD;
 *   order.cancel_requested acts while the row has no cancel_outcome (or there
 *     is no row) and records one;
 *   payment.cancelled and delivery.cancelled act on HELD, SOLD, or RELEASED
 *     with HOLD_EXPIRED, and leave RELEASED with ORDER_CANCELLED.
 * A route that finds nothing to do writes nothing, publishes nothing and counts
 * nothing, and answers a duplicate (deta_event_own_result): the dispatcher rolls
 * it back and counts it in deta_events_total{outcome="duplicate"}, whether it
 * is a redelivery, a re-send, or an outcome the row's state has made moot. Two
 * instances applying the same event at once (a rebalance) serialize on the
 * reservation row: its lock (FOR UPDATE), or for an insert the primary key, on
 * which the second waits and then finds the first's row. A unique violation of
 * any other key is a bug: deta_event_own_result dead-letters it, never takes it
 * for the duplicate. Unlike a claim, the rows are never purged, so a replay long
 * after INBOX_RETENTION_HOURS is still a duplicate.
 *
 * order.created: the order's stock rows are locked in a fixed order and read, the
 * domain decides all-or-nothing, and the order's single reservation row is
 * inserted (HELD or REJECTED); a HELD one's units move to held in the same
 * statement, only when the row is new. The reservation's key is the order id,
 * so an order.created delivered again or re-sent with a new event id finds the
 * row and changes nothing.
 *
 * Payment outcomes settle a HELD reservation: payment.authorized moves held to
 * sold (status SOLD; nothing is published, since no one waits for it: the order's
 * next step follows from payment.authorized itself), payment.failed moves held
 * back to available (status RELEASED, reason PAYMENT_FAILED) and publishes
 * inventory.released. An outcome for a reservation that is already settled or
 * was rejected is a no-op, with one exception: an authorization of a hold that
 * expired (released by the sweeper, reason HOLD_EXPIRED) takes the units from
 * available again when they are all there (SOLD), and otherwise takes nothing,
 * marks the reservation UNFULFILLABLE and publishes inventory.rejected with
 * reason HOLD_EXPIRED: the customer paid for goods that are gone, which the
 * read model shows as INVENTORY_REJECTED; the refund is issue #14's. An outcome
 * for an order with no reservation at all is dead-lettered at once: payment acts
 * only on inventory.reserved, which this service publishes (through its outbox)
 * after the reservation committed, so such an outcome can never be applied later,
 * and retrying it would only hold up the outcomes queued behind it.
 *
 * The cancellation saga (docs/contracts.md#cancellation). order.cancel_requested
 * comes on the order's own partition, so after its order.created: under the lock
 * of the order's reservation row, a REJECTED one refuses (inventory.cancel_refused),
 * any other forwards to payment (inventory.cancel_forwarded), and none at all
 * (order.created was dead-lettered) records a CANCELLED row without items and
 * publishes inventory.cancelled; a later order.created then finds the row and
 * reserves nothing. The outcome is kept on the row (cancel_outcome), so a cancel
 * delivered again or re-sent under a new event id decides nothing again. The
 * verdicts that end a cancel downstream, payment.cancelled and delivery.cancelled,
 * are compensated here: a HELD or SOLD reservation gives its units back to
 * available (RELEASED, reason ORDER_CANCELLED, inventory.released). A late
 * payment.authorized for it then takes nothing: only a hold released as
 * HOLD_EXPIRED is retaken, and a verdict finding such a hold marks it
 * ORDER_CANCELLED for that reason. Stock is conserved: these moves change where
 * units are, never how many.
 *
 * inventory.reserved carries holdExpiresAt, the reservation instant plus
 * INVENTORY_HOLD_TTL_S: payment-service charges no hold past it, and the sweeper
 * (sweeper.c) releases through inv_events_expire a hold still HELD a grace later.
 *
 * Batches. Each consumer applies the events a worker finds queued in one
 * transaction (deta_event_dispatch_batch_bounded, deta/batch.h): one commit
 * instead of one per event. A bad payload is refused before the transaction (the
 * routes' check, the step's own reading) and dead-lettered alone; a duplicate
 * writes nothing and leaves the batch going; an outcome with no reservation,
 * known only from the table, rolls the batch back and its events go one at a
 * time, where it is dead-lettered alone. The
 * stock rows are shared by every order of an item, and a batch holds the ones
 * it locked until it commits: two workers' batches that took two items in
 * opposite orders would wait on each other, which one at a time cannot (an
 * order's rows are locked in a fixed order). So a batch first takes every lock
 * its events' steps will take (batch_lock, the dispatch's
 * deta_event_dispatch_opts_t.batch_lock), in the order every transaction here
 * takes them (store.c, "Deadlocks"): reservation rows, then stock rows. Batches
 * then queue on the rows they share. Should a batch still wait long (a long
 * queue; a stock row created meanwhile, store.c), it must not wait for
 * Postgres's deadlock detection (deadlock_timeout, 1 s): its lock waits are
 * bounded by INV_BATCH_LOCK_TIMEOUT_MS, after which it is rolled back
 * (transient) and its events are applied one at a time, as without batches.
 * The payment outcomes'
 * consumer has INV_SETTLE_WORKERS workers, not INV_CONSUMER_WORKERS (each batches
 * only its own queue: fewer workers, fuller batches), and waits up to
 * INV_SETTLE_BATCH_WAIT_MS for more events when it finds fewer than a batch queued:
 * a settlement is on no step's path (an authorization of a live hold publishes
 * nothing, a late one's rare inventory.rejected only moves order-service's status
 * and the read model; no service acts on the inventory.released of a failure or a
 * cancel, which only the read model shows, that much later), and one commit then
 * carries several orders' at moderate rates, where most would otherwise commit
 * alone. order.created gets no wait: the saga waits for it.
 *
 * Metrics are counted when a handler has applied its effects, just before the
 * dispatcher commits; a commit that then fails (rare: the connection died), or
 * a batch rolled back after the event was applied in it, is retried and may
 * count twice.
 */
#include "events.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deta/envelope.h"
#include "deta/events.h"
#include "deta/log.h"
#include "deta/outbox.h"
#include "deta/topics.h"
#include "domain.h"
#include "store.h"

/* Worker threads of the consumer: orders are independent, and the stock locks
 * keep concurrent reservations of one item correct. */
#define INV_CONSUMER_WORKERS 4
/* Batches: the events a worker finds queued, up to INV_BATCH_MAX, in one
 * transaction; a batch waits at most INV_BATCH_LOCK_TIMEOUT_MS for a row lock
 * (see "Batches" above). A stock row is held for a few milliseconds by a batch
 * that commits; a wait as long as this is a long queue of batches or a cycle.
 * Unbounded waits were measured too: no fallbacks at 240 orders/s, but no more
 * orders ended. */
#define INV_BATCH_MAX 16
#define INV_BATCH_LOCK_TIMEOUT_MS 100
/* The payment outcomes' consumer: fewer workers, and a wait for a fuller batch
 * (see "Batches" above): nothing on the saga's path waits for a settlement. */
#define INV_SETTLE_WORKERS 2
#define INV_SETTLE_BATCH_WAIT_MS 200

struct inv_events {
    deta_service_t *svc;
    inv_settings_t settings;
    deta_counter_t *reserved;
    deta_counter_t *rejected;
    deta_counter_t *released;
    deta_counter_t *sold;
    deta_counter_t *late_sold;
    deta_counter_t *late_unfulfillable;
    /* the cancellation saga */
    deta_counter_t *cancel_forwarded;
    deta_counter_t *cancel_refused;
    deta_counter_t *cancel_cancelled;
    deta_counter_t *cancel_release_held;
    deta_counter_t *cancel_release_sold;
    deta_counter_t *created_after_cancel;
};

inv_events_t *inv_events_new(deta_service_t *svc, const inv_settings_t *settings) {
    inv_events_t *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    deta_metrics_t *m = deta_service_metrics(svc);
    const char *help = "Orders decided by inventory, by outcome";
    const char *late = "Authorizations of holds that had expired and been released, by outcome";
    e->svc = svc;
    e->settings = *settings;
    e->late_sold = deta_counter(m, "inventory_late_authorizations_total", late,
                                "outcome=\"sold\"");
    e->late_unfulfillable = deta_counter(m, "inventory_late_authorizations_total", late,
                                         "outcome=\"unfulfillable\"");
    e->reserved = deta_counter(m, "inventory_reservations_total", help, "outcome=\"reserved\"");
    e->rejected = deta_counter(m, "inventory_reservations_total", help, "outcome=\"rejected\"");
    e->released = deta_counter(m, "inventory_released_total",
                               "Held reservations released after a failed payment", NULL);
    e->sold = deta_counter(m, "inventory_sold_total",
                           "Held reservations sold after an authorized payment", NULL);
    const char *cancels = "Cancel requests decided by inventory, by outcome";
    e->cancel_forwarded = deta_counter(m, "inventory_cancel_requests_total", cancels,
                                       "outcome=\"forwarded\"");
    e->cancel_refused = deta_counter(m, "inventory_cancel_requests_total", cancels,
                                     "outcome=\"refused\"");
    e->cancel_cancelled = deta_counter(m, "inventory_cancel_requests_total", cancels,
                                       "outcome=\"cancelled\"");
    const char *releases = "Reservations released because their order was cancelled, by what "
                           "the units were";
    e->cancel_release_held = deta_counter(m, "inventory_cancel_releases_total", releases,
                                          "from=\"HELD\"");
    e->cancel_release_sold = deta_counter(m, "inventory_cancel_releases_total", releases,
                                          "from=\"SOLD\"");
    e->created_after_cancel =
        deta_counter(m, "inventory_orders_after_cancel_total",
                     "order.created for an order cancelled before it: nothing reserved", NULL);
    return e;
}

void inv_events_free(inv_events_t *e) { free(e); }

/* Queues an inventory event about an order in the open transaction. */
static deta_err_t publish(inv_events_t *e, deta_db_t *db, const char *type, const char *order_id,
                          const char *correlation_id, json_t *payload, const char *at,
                          char *errstr, size_t errsize) {
    deta_event_t out;
    deta_err_t err = deta_event_init(&out, type, order_id, correlation_id,
                                     deta_service_config(e->svc)->service, payload, errstr,
                                     errsize);
    if (err)
        return err;
    snprintf(out.occurred_at, sizeof out.occurred_at, "%s", at);
    err = deta_outbox_add(db, DETA_TOPIC_INVENTORY_EVENTS, &out, errstr, errsize);
    deta_event_clear(&out);
    return err;
}

static deta_err_t reserve(inv_events_t *e, deta_db_t *db, const deta_event_t *ev,
                          const inv_request_t *r, const char *reservation_id, const char *at,
                          const char *expires, char *errstr, size_t errsize) {
    /* the units were moved to held with the reservation's row */
    deta_err_t err =
        publish(e, db, DETA_EVT_INVENTORY_RESERVED, ev->order_id, ev->correlation_id,
                inv_reserved_payload(r, reservation_id, at, expires), at, errstr, errsize);
    if (err)
        return err;
    deta_counter_inc(e->reserved);
    deta_log(DETA_LOG_INFO, ev->order_id, ev->correlation_id,
             "stock held for %zu item(s), reservation %s, until %s", r->nlines, reservation_id,
             expires);
    return DETA_OK;
}

static deta_err_t reject(inv_events_t *e, deta_db_t *db, const deta_event_t *ev,
                         const inv_request_t *r, const inv_decision_t *d, const char *at,
                         char *errstr, size_t errsize) {
    deta_err_t err = publish(e, db, DETA_EVT_INVENTORY_REJECTED, ev->order_id, ev->correlation_id,
                             inv_rejected_payload(r->order_id, r->customer_id, d, at), at, errstr,
                             errsize);
    if (err)
        return err;
    deta_counter_inc(e->rejected);
    deta_log(DETA_LOG_INFO, ev->order_id, ev->correlation_id,
             "order rejected: %s for item %s (requested %lld, available %lld)", d->reason,
             d->item_id, (long long)d->requested, (long long)d->available);
    return DETA_OK;
}

/* order.created for an order that has a row: the first one whose cancel came
 * first (a CANCELLED row, which is final: nothing is reserved for it), or a
 * duplicate: delivered again, re-sent, or after such a first. */
static deta_err_t already_there(inv_events_t *e, deta_db_t *db, const deta_event_t *ev,
                                const inv_request_t *r, const char *at, bool *duplicate,
                                char *errstr, size_t errsize) {
    char status[16];
    bool first_after_cancel = false;
    deta_err_t err = inv_store_created_again(db, r, at, status, &first_after_cancel, errstr,
                                             errsize);
    if (err)
        return err;
    if (first_after_cancel) {
        deta_counter_inc(e->created_after_cancel);
        deta_log(DETA_LOG_WARN, ev->order_id, ev->correlation_id,
                 "order.created %s for an order cancelled before it: nothing reserved",
                 ev->event_id);
        return DETA_OK;
    }
    deta_log(DETA_LOG_INFO, ev->order_id, ev->correlation_id,
             "order.created %s: the order has a %s reservation already, nothing to do",
             ev->event_id, status);
    *duplicate = true;
    return DETA_OK;
}

static deta_err_t order_created(inv_events_t *e, deta_db_t *db, const deta_event_t *ev,
                                bool *duplicate, char *errstr, size_t errsize) {
    inv_request_t r;
    inv_level_t levels[INV_MAX_LINES];
    size_t nlevels = 0;
    if (inv_request_from_order_created(ev->payload, ev->order_id, &r, errstr, errsize))
        return DETA_ERR_INVALID;
    deta_err_t err = inv_store_lock_levels(db, r.lines, r.nlines, levels, &nlevels, errstr,
                                           errsize);
    if (err)
        return err;
    inv_decision_t d;
    inv_decide(r.lines, r.nlines, levels, nlevels, &d);

    char reservation_id[DETA_UUID_LEN + 1], at[DETA_TS_LEN], expires[DETA_TS_LEN];
    deta_uuid_new(reservation_id);
    int64_t now = deta_wall_ms();
    deta_timestamp_from_ms(now, at);
    deta_timestamp_from_ms(now + (int64_t)e->settings.hold_ttl_s * 1000, expires);
    bool inserted = false;
    err = inv_store_insert_reservation(db, &r, reservation_id, ev->correlation_id,
                                       d.reserve ? INV_STATUS_HELD : INV_STATUS_REJECTED,
                                       d.reserve ? NULL : d.reason, at,
                                       d.reserve ? expires : NULL, &inserted, errstr, errsize);
    if (err)
        return err;
    if (!inserted)
        return already_there(e, db, ev, &r, at, duplicate, errstr, errsize);
    return d.reserve ? reserve(e, db, ev, &r, reservation_id, at, expires, errstr, errsize)
                     : reject(e, db, ev, &r, &d, at, errstr, errsize);
}

/* Returns a HELD reservation's units (or a SOLD one's, when its order was
 * cancelled) to available and announces it. */
static deta_err_t release(inv_events_t *e, deta_db_t *db, const inv_reservation_t *res,
                          const char *reason, const char *at, char *errstr, size_t errsize) {
    deta_err_t err = strcmp(res->status, INV_STATUS_SOLD) == 0
                         ? inv_store_unsell(db, res, reason, at, errstr, errsize)
                         : inv_store_settle(db, res, INV_STATUS_RELEASED, reason, at, errstr,
                                            errsize);
    if (!err)
        err = publish(e, db, DETA_EVT_INVENTORY_RELEASED, res->order_id, res->correlation_id,
                      inv_released_payload(res->order_id, res->reservation_id, reason, res->lines,
                                           res->nlines, at),
                      at, errstr, errsize);
    if (!err)
        deta_log(DETA_LOG_INFO, res->order_id, res->correlation_id,
                 "reservation %s released (%s)", res->reservation_id, reason);
    return err;
}

/* An authorization of a hold that expired: the units again, all or none. */
static deta_err_t retake(inv_events_t *e, deta_db_t *db, const inv_reservation_t *res,
                         const char *at, char *errstr, size_t errsize) {
    inv_level_t levels[INV_MAX_LINES];
    size_t nlevels = 0;
    deta_err_t err = inv_store_lock_levels(db, res->lines, res->nlines, levels, &nlevels, errstr,
                                           errsize);
    if (err)
        return err;
    inv_decision_t d;
    inv_decide(res->lines, res->nlines, levels, nlevels, &d);
    if (d.reserve) {
        err = inv_store_take(db, res->lines, res->nlines, errstr, errsize);
        if (!err)
            err = inv_store_set_status(db, res, INV_STATUS_SOLD, at, errstr, errsize);
        if (err)
            return err;
        deta_counter_inc(e->late_sold);
        deta_log(DETA_LOG_WARN, res->order_id, res->correlation_id,
                 "late authorization of expired reservation %s: the units were there, sold",
                 res->reservation_id);
        return DETA_OK;
    }
    const char *why = d.reason;
    d.reason = INV_REASON_HOLD_EXPIRED;
    err = inv_store_set_status(db, res, INV_STATUS_UNFULFILLABLE, at, errstr, errsize);
    if (!err)
        err = publish(e, db, DETA_EVT_INVENTORY_REJECTED, res->order_id, res->correlation_id,
                      inv_rejected_payload(res->order_id, res->customer_id, &d, at), at, errstr,
                      errsize);
    if (err)
        return err;
    deta_counter_inc(e->late_unfulfillable);
    deta_log(DETA_LOG_WARN, res->order_id, res->correlation_id,
             "late authorization of expired reservation %s cannot be fulfilled (%s for item %s: "
             "requested %lld, available %lld): paid for, nothing taken, refund needed (#14)",
             res->reservation_id, why, d.item_id, (long long)d.requested,
             (long long)d.available);
    return DETA_OK;
}

/* *duplicate when the reservation's status leaves the outcome nothing to do. */
static deta_err_t settle(inv_events_t *e, deta_db_t *db, const deta_event_t *ev, bool authorized,
                         bool *duplicate, char *errstr, size_t errsize) {
    inv_reservation_t res;
    deta_err_t err = inv_store_lock_reservation(db, ev->order_id, &res, errstr, errsize);
    if (err == DETA_ERR_NOT_FOUND)
        return deta_errf(DETA_ERR_NOT_FOUND, errstr, errsize,
                         "%s for order %s, which has no reservation: nothing to settle",
                         ev->event_type, ev->order_id);
    if (err)
        return err;
    char at[DETA_TS_LEN];
    deta_timestamp_now(at);
    switch (inv_settlement_after_payment(res.status, res.reason, authorized)) {
    case INV_SETTLE_SELL:
        err = inv_store_settle(db, &res, INV_STATUS_SOLD, NULL, at, errstr, errsize);
        if (err)
            return err;
        deta_counter_inc(e->sold);
        deta_log(DETA_LOG_INFO, ev->order_id, ev->correlation_id, "reservation %s sold",
                 res.reservation_id);
        return DETA_OK;
    case INV_SETTLE_RELEASE:
        err = release(e, db, &res, INV_REASON_PAYMENT_FAILED, at, errstr, errsize);
        if (!err)
            deta_counter_inc(e->released);
        return err;
    case INV_SETTLE_RETAKE:
        return retake(e, db, &res, at, errstr, errsize);
    case INV_SETTLE_NOTHING:
        break;
    }
    deta_log(DETA_LOG_INFO, ev->order_id, ev->correlation_id,
             "%s for a %s reservation: nothing to do", ev->event_type, res.status);
    *duplicate = true;
    return DETA_OK;
}

deta_err_t inv_events_expire(inv_events_t *e, deta_db_t *db, const inv_reservation_t *res,
                             char *errstr, size_t errsize) {
    char at[DETA_TS_LEN];
    deta_timestamp_now(at);
    return release(e, db, res, INV_REASON_HOLD_EXPIRED, at, errstr, errsize);
}

static deta_err_t payment_authorized(inv_events_t *e, deta_db_t *db, const deta_event_t *ev,
                                     bool *duplicate, char *errstr, size_t errsize) {
    return settle(e, db, ev, true, duplicate, errstr, errsize);
}

static deta_err_t payment_failed(inv_events_t *e, deta_db_t *db, const deta_event_t *ev,
                                 bool *duplicate, char *errstr, size_t errsize) {
    return settle(e, db, ev, false, duplicate, errstr, errsize);
}

/* ---- the cancellation saga ---- */

/* Queues the cancel's verdict or forward of this step, and records it;
 * *duplicate when the cancel was decided before. */
static deta_err_t decide_cancel(inv_events_t *e, deta_db_t *db, const deta_event_t *ev,
                                const inv_cancel_request_t *c, const inv_reservation_t *res,
                                inv_cancel_step_t step, bool *duplicate, char *errstr,
                                size_t errsize) {
    char at[DETA_TS_LEN];
    deta_timestamp_now(at);
    deta_err_t err = DETA_OK;
    switch (step) {
    case INV_CANCEL_STEP_FORWARD:
        err = inv_store_record_cancel(db, c->order_id, INV_CANCEL_FORWARDED, c->requested_at,
                                      errstr, errsize);
        if (!err)
            err = publish(e, db, DETA_EVT_INVENTORY_CANCEL_FORWARDED, ev->order_id,
                          ev->correlation_id,
                          inv_cancel_forwarded_payload(c, res->reservation_id, at), at, errstr,
                          errsize);
        if (!err) {
            deta_counter_inc(e->cancel_forwarded);
            deta_log(DETA_LOG_INFO, ev->order_id, ev->correlation_id,
                     "cancel forwarded to payment: reservation %s is %s", res->reservation_id,
                     res->status);
        }
        return err;
    case INV_CANCEL_STEP_REFUSE:
        err = inv_store_record_cancel(db, c->order_id, INV_CANCEL_REFUSED, c->requested_at,
                                      errstr, errsize);
        if (!err)
            err = publish(e, db, DETA_EVT_INVENTORY_CANCEL_REFUSED, ev->order_id,
                          ev->correlation_id, inv_cancel_refused_payload(c, at), at, errstr,
                          errsize);
        if (!err) {
            deta_counter_inc(e->cancel_refused);
            deta_log(DETA_LOG_INFO, ev->order_id, ev->correlation_id,
                     "cancel refused: the order was rejected (%s)", res->reason);
        }
        return err;
    case INV_CANCEL_STEP_RECORD: {
        char reservation_id[DETA_UUID_LEN + 1];
        bool inserted = false;
        deta_uuid_new(reservation_id);
        err = inv_store_insert_cancelled(db, c->order_id, reservation_id, ev->correlation_id,
                                         c->requested_at, at, &inserted, errstr, errsize);
        /* its order.created, or this cancel on another instance, committed
         * meanwhile (a rebalance): decided again on that row */
        if (!err && !inserted)
            return deta_errf(DETA_ERR_TRANSIENT, errstr, errsize,
                             "order %s got a reservation while its cancel was decided",
                             c->order_id);
        if (!err)
            err = publish(e, db, DETA_EVT_INVENTORY_CANCELLED, ev->order_id, ev->correlation_id,
                          inv_cancelled_payload(c, at), at, errstr, errsize);
        if (!err) {
            deta_counter_inc(e->cancel_cancelled);
            deta_log(DETA_LOG_INFO, ev->order_id, ev->correlation_id,
                     "cancelled before anything was reserved: a later order.created reserves "
                     "nothing");
        }
        return err;
    }
    case INV_CANCEL_STEP_NOTHING:
        break;
    }
    deta_log(DETA_LOG_INFO, ev->order_id, ev->correlation_id,
             "order.cancel_requested %s: the cancel was decided already (%s), nothing to do",
             ev->event_id, res->cancel_outcome);
    *duplicate = true;
    return DETA_OK;
}

/* order.cancel_requested: decided under the lock of the order's reservation row,
 * after its order.created (same key, same partition, same consumer). */
static deta_err_t cancel_requested(inv_events_t *e, deta_db_t *db, const deta_event_t *ev,
                                   bool *duplicate, char *errstr, size_t errsize) {
    inv_cancel_request_t c;
    if (inv_cancel_request_read(ev->payload, ev->order_id, &c, errstr, errsize))
        return DETA_ERR_INVALID;
    inv_reservation_t res;
    deta_err_t err = inv_store_lock_reservation(db, ev->order_id, &res, errstr, errsize);
    if (err && err != DETA_ERR_NOT_FOUND)
        return err;
    bool found = err == DETA_OK;
    inv_cancel_step_t step = inv_cancel_step(found ? res.status : NULL,
                                             found && res.cancel_outcome[0] != '\0');
    return decide_cancel(e, db, ev, &c, &res, step, duplicate, errstr, errsize);
}

/* payment.cancelled, delivery.cancelled: the cancel won, so whatever this order
 * holds or bought goes back to available. A verdict for an order with no
 * reservation is skipped, not dead-lettered: every verdict follows this
 * service's inventory.cancel_forwarded, so it cannot happen in the saga, and
 * there is nothing to give back (a retry or a dead letter would help no one);
 * it is applied (nothing written), not a duplicate: nothing was done before.
 * *duplicate when the reservation has nothing (more) to give back. */
static deta_err_t compensate(inv_events_t *e, deta_db_t *db, const deta_event_t *ev,
                             bool *duplicate, char *errstr, size_t errsize) {
    if (inv_cancel_verdict_read(ev->payload, ev->order_id, errstr, errsize))
        return DETA_ERR_INVALID;
    inv_reservation_t res;
    deta_err_t err = inv_store_lock_reservation(db, ev->order_id, &res, errstr, errsize);
    if (err == DETA_ERR_NOT_FOUND) {
        deta_log(DETA_LOG_WARN, ev->order_id, ev->correlation_id,
                 "%s %s for an order with no reservation: nothing to give back", ev->event_type,
                 ev->event_id);
        return DETA_OK;
    }
    if (err)
        return err;
    char at[DETA_TS_LEN];
    deta_timestamp_now(at);
    switch (inv_compensation(res.status, res.reason)) {
    case INV_COMPENSATE_RELEASE_HELD:
    case INV_COMPENSATE_RELEASE_SOLD: {
        bool sold = strcmp(res.status, INV_STATUS_SOLD) == 0;
        err = release(e, db, &res, INV_REASON_ORDER_CANCELLED, at, errstr, errsize);
        if (!err)
            deta_counter_inc(sold ? e->cancel_release_sold : e->cancel_release_held);
        return err;
    }
    case INV_COMPENSATE_FENCE:
        err = inv_store_set_reason(db, &res, INV_REASON_ORDER_CANCELLED, at, errstr, errsize);
        if (!err)
            deta_log(DETA_LOG_INFO, ev->order_id, ev->correlation_id,
                     "%s: reservation %s was released already (hold expired); marked cancelled "
                     "so that a late authorization takes nothing",
                     ev->event_type, res.reservation_id);
        return err;
    case INV_COMPENSATE_NOTHING:
        break;
    }
    deta_log(DETA_LOG_INFO, ev->order_id, ev->correlation_id,
             "%s for a %s reservation: nothing to give back", ev->event_type, res.status);
    *duplicate = true;
    return DETA_OK;
}

/* ---- the routes ---- */

/* A route's step: its effects, or *duplicate when it finds nothing to do. */
typedef deta_err_t (*inv_step_fn)(inv_events_t *e, deta_db_t *db, const deta_event_t *ev,
                                  bool *duplicate, char *errstr, size_t errsize);

/* Which rows a step locks: a batch locks them first (batch_lock). */
typedef enum inv_step_locks {
    INV_LOCKS_ORDERED,     /* the stock of the items ordered (it inserts the reservation) */
    INV_LOCKS_RESERVATION, /* the order's reservation (a cancel request only decides) */
    INV_LOCKS_SETTLED,     /* the reservation, then the stock of its items */
} inv_step_locks_t;

/* A step's payload check (a deta_event_check_fn), before any transaction: the
 * same reading the step does first, so that a payload it would refuse is refused
 * without SQL (a dead letter that leaves its batch going). */
static deta_err_t check_order_created(const deta_event_t *ev, char *errstr, size_t errsize) {
    inv_request_t r;
    return inv_request_from_order_created(ev->payload, ev->order_id, &r, errstr, errsize)
               ? DETA_ERR_INVALID
               : DETA_OK;
}

static deta_err_t check_cancel_request(const deta_event_t *ev, char *errstr, size_t errsize) {
    inv_cancel_request_t c;
    return inv_cancel_request_read(ev->payload, ev->order_id, &c, errstr, errsize)
               ? DETA_ERR_INVALID
               : DETA_OK;
}

static deta_err_t check_cancel_verdict(const deta_event_t *ev, char *errstr, size_t errsize) {
    return inv_cancel_verdict_read(ev->payload, ev->order_id, errstr, errsize)
               ? DETA_ERR_INVALID
               : DETA_OK;
}

typedef struct inv_route_step {
    const char *event_type;
    inv_step_fn step;
    inv_step_locks_t locks;
    deta_event_check_fn check; /* NULL: the step reads nothing of the payload */
} inv_route_step_t;

static const inv_route_step_t STEPS[] = {
    {DETA_EVT_ORDER_CREATED, order_created, INV_LOCKS_ORDERED, check_order_created},
    {DETA_EVT_ORDER_CANCEL_REQUESTED, cancel_requested, INV_LOCKS_RESERVATION,
     check_cancel_request},
    {DETA_EVT_PAYMENT_AUTHORIZED, payment_authorized, INV_LOCKS_SETTLED, NULL},
    {DETA_EVT_PAYMENT_FAILED, payment_failed, INV_LOCKS_SETTLED, NULL},
    {DETA_EVT_PAYMENT_CANCELLED, compensate, INV_LOCKS_SETTLED, check_cancel_verdict},
    {DETA_EVT_DELIVERY_CANCELLED, compensate, INV_LOCKS_SETTLED, check_cancel_verdict},
};

/* The step of an event type, or NULL (no route leads a type without one here). */
static const inv_route_step_t *step_of(const char *event_type) {
    for (size_t i = 0; i < sizeof STEPS / sizeof *STEPS; i++)
        if (strcmp(STEPS[i].event_type, event_type) == 0)
            return &STEPS[i];
    return NULL;
}

/* What a batch locks first: JSON arrays, NULL while empty. */
typedef struct batch_locks {
    json_t *held;    /* order ids whose reservation rows its steps lock */
    json_t *lines;   /* the lines of the orders it reserves */
    json_t *settled; /* order ids whose reservations' stock it moves */
} batch_locks_t;

/* Appends item (a new reference) to *array, made on first use. */
static bool append(json_t **array, json_t *item) {
    if (!*array)
        *array = json_array();
    return *array && json_array_append_new(*array, item) == 0;
}

/* Adds what ev's step locks to l. A payload that does not parse adds nothing:
 * its step refuses it. */
static bool add_locks(const deta_event_t *ev, batch_locks_t *l) {
    const inv_route_step_t *s = step_of(ev->event_type);
    if (!s)
        return true; /* on_event refuses it */
    if (s->locks == INV_LOCKS_ORDERED) {
        inv_request_t r;
        char ignored[DETA_KAFKA_WHY_MAX];
        if (inv_request_from_order_created(ev->payload, ev->order_id, &r, ignored,
                                           sizeof ignored))
            return true;
        bool ok = true;
        for (size_t i = 0; ok && i < r.nlines; i++)
            ok = append(&l->lines, json_pack("{s:s}", "itemId", r.lines[i].item_id));
        return ok;
    }
    if (!append(&l->held, json_string(ev->order_id)))
        return false;
    return s->locks != INV_LOCKS_SETTLED || append(&l->settled, json_string(ev->order_id));
}

/* An array's text, or NULL for none; *ok false when it could not be made. */
static char *array_text(const json_t *array, bool *ok) {
    char *text = array ? json_dumps(array, JSON_COMPACT) : NULL;
    if (array && !text)
        *ok = false;
    return text;
}

/* The batch's locks (deta_event_dispatch_opts_t.batch_lock): every lock its
 * events' steps will take, taken before any event is applied and in the order
 * of store.c's "Deadlocks", so that a batch queues behind whatever holds the
 * rows it shares instead of waiting in a cycle (see "Batches" above). */
static deta_err_t batch_lock(deta_db_t *db, const deta_event_t *const *events, size_t n,
                             void *opaque, char *errstr, size_t errsize) {
    (void)opaque;
    batch_locks_t l = {NULL, NULL, NULL};
    bool ok = true;
    for (size_t i = 0; ok && i < n; i++)
        ok = add_locks(events[i], &l);
    char *held = array_text(l.held, &ok), *lines = array_text(l.lines, &ok),
         *settled = array_text(l.settled, &ok);
    json_decref(l.held);
    json_decref(l.lines);
    json_decref(l.settled);
    deta_err_t err = ok ? inv_store_lock_batch(db, held, lines, settled, errstr, errsize)
                        : deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    free(held);
    free(lines);
    free(settled);
    return err;
}

/* The handler of every route below: the step of the event's type, and what the
 * dispatcher (own_key) gets of it: its duplicate as DETA_ERR_CONFLICT, a unique
 * violation of its statements as a failure (deta_event_own_result). */
static deta_err_t on_event(deta_db_t *db, const deta_event_t *ev, void *opaque, char *errstr,
                           size_t errsize) {
    const inv_route_step_t *s = step_of(ev->event_type);
    if (!s)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "no step for %s", ev->event_type);
    bool duplicate = false;
    deta_err_t err = s->step(opaque, db, ev, &duplicate, errstr, errsize);
    return deta_event_own_result(err, duplicate);
}

/* Every route's check (deta_event_route_t.check): its step's. */
static deta_err_t check_event(const deta_event_t *ev, char *errstr, size_t errsize) {
    const inv_route_step_t *s = step_of(ev->event_type);
    return s && s->check ? s->check(ev, errstr, errsize) : DETA_OK;
}

/* Three consumers: orders (and their cancel requests), payment outcomes (and
 * payment.cancelled), delivery verdicts. A payment outcome that has to wait for
 * its reservation (retried in place) then holds up only other outcomes, never
 * the order.created that would create the reservation it waits for; and the
 * delivery verdicts, which only this service's third consumer reads, wait for
 * nothing of the busy order and payment topics. */
static const deta_event_route_t ORDER_ROUTES[] = {
    {DETA_EVT_ORDER_CREATED, on_event, check_event},
    {DETA_EVT_ORDER_CANCEL_REQUESTED, on_event, check_event},
};
static const deta_event_route_t PAYMENT_ROUTES[] = {
    {DETA_EVT_PAYMENT_AUTHORIZED, on_event, check_event},
    {DETA_EVT_PAYMENT_FAILED, on_event, check_event},
    {DETA_EVT_PAYMENT_CANCELLED, on_event, check_event},
};
static const deta_event_route_t DELIVERY_ROUTES[] = {
    {DETA_EVT_DELIVERY_CANCELLED, on_event, check_event},
};

static const char *const ORDER_TOPICS[] = {DETA_TOPIC_ORDER_EVENTS};
static const char *const PAYMENT_TOPICS[] = {DETA_TOPIC_PAYMENT_EVENTS};
static const char *const DELIVERY_TOPICS[] = {DETA_TOPIC_DELIVERY_EVENTS};

#define NROUTES(r) (sizeof r / sizeof *r)

/* The batch handler: opaque is the dispatch deta_service_on_events_opts made. */
static deta_err_t consume_batch(const deta_kafka_msg_t *msgs, size_t n, void *dispatch,
                                deta_err_t *results, char (*why)[DETA_KAFKA_WHY_MAX]) {
    return deta_event_dispatch_batch_bounded(msgs, n, dispatch, INV_BATCH_LOCK_TIMEOUT_MS,
                                             results, why);
}

deta_err_t inv_events_subscribe(inv_events_t *e, char *errstr, size_t errsize) {
    deta_consumer_opts_t opts = {.workers = INV_CONSUMER_WORKERS,
                                 .batch_fn = consume_batch,
                                 .batch_max = INV_BATCH_MAX};
    /* No claim: every route is idempotent by the order's reservation row (above). */
    static const deta_event_dispatch_opts_t own_key = {.own_key = true,
                                                       .batch_lock = batch_lock};
    deta_err_t err = deta_service_on_events_opts(e->svc, ORDER_TOPICS, 1, ORDER_ROUTES,
                                                 NROUTES(ORDER_ROUTES), e, &opts, &own_key,
                                                 errstr, errsize);
    /* The payment outcomes and the delivery verdicts are off the saga's
     * critical path: their consumers ask the broker less often. */
    deta_consumer_opts_t settle = opts;
    settle.workers = INV_SETTLE_WORKERS;
    settle.batch_wait_ms = INV_SETTLE_BATCH_WAIT_MS;
    settle.fetch_wait_min_ms = DETA_KAFKA_FETCH_WAIT_RELAXED_MS;
    deta_consumer_opts_t verdicts = opts;
    verdicts.fetch_wait_min_ms = DETA_KAFKA_FETCH_WAIT_RELAXED_MS;
    if (!err)
        err = deta_service_on_events_opts(e->svc, PAYMENT_TOPICS, 1, PAYMENT_ROUTES,
                                          NROUTES(PAYMENT_ROUTES), e, &settle, &own_key, errstr,
                                          errsize);
    if (!err)
        err = deta_service_on_events_opts(e->svc, DELIVERY_TOPICS, 1, DELIVERY_ROUTES,
                                          NROUTES(DELIVERY_ROUTES), e, &verdicts, &own_key,
                                          errstr, errsize);
    return err;
}
