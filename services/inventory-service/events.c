/*
 * events.c - inventory-service's event handlers (see events.h).
 *
 * Each handler runs inside the transaction the events.h dispatcher opened after
 * claiming the event id, and writes its own event only through the outbox in that
 * same transaction: the stock move, the reservation, the claim and the outbox row
 * commit together, or nothing does and the message is retried.
 *
 * order.created: the order's stock rows are locked in a fixed order and read, the
 * domain decides all-or-nothing, and the order's single reservation row is
 * inserted (HELD or REJECTED) before any stock moves. The reservation's key is
 * the order id, so an order.created re-sent with a new event id (which the claim
 * does not catch) finds the row and changes nothing.
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
 * inventory.reserved carries holdExpiresAt, the reservation instant plus
 * INVENTORY_HOLD_TTL_S: payment-service charges no hold past it, and the sweeper
 * (sweeper.c) releases through inv_events_expire a hold still HELD a grace later.
 *
 * Metrics are counted when a handler has applied its effects, just before the
 * dispatcher commits; a commit that then fails (rare: the connection died) is
 * retried and may count twice.
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

struct inv_events {
    deta_service_t *svc;
    inv_settings_t settings;
    deta_counter_t *reserved;
    deta_counter_t *rejected;
    deta_counter_t *released;
    deta_counter_t *sold;
    deta_counter_t *late_sold;
    deta_counter_t *late_unfulfillable;
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
    deta_err_t err = inv_store_take(db, r->lines, r->nlines, INV_STATUS_HELD, errstr, errsize);
    if (!err)
        err = publish(e, db, DETA_EVT_INVENTORY_RESERVED, ev->order_id, ev->correlation_id,
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

static deta_err_t on_order_created(deta_db_t *db, const deta_event_t *ev, void *opaque,
                                   char *errstr, size_t errsize) {
    inv_events_t *e = opaque;
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
    if (!inserted) {
        deta_log(DETA_LOG_INFO, ev->order_id, ev->correlation_id,
                 "order.created %s: the order has a reservation already, nothing to do",
                 ev->event_id);
        return DETA_OK;
    }
    return d.reserve ? reserve(e, db, ev, &r, reservation_id, at, expires, errstr, errsize)
                     : reject(e, db, ev, &r, &d, at, errstr, errsize);
}

/* Returns a HELD reservation's units to available and announces it. */
static deta_err_t release(inv_events_t *e, deta_db_t *db, const inv_reservation_t *res,
                          const char *reason, const char *at, char *errstr, size_t errsize) {
    deta_err_t err = inv_store_settle(db, res, INV_STATUS_RELEASED, reason, at, errstr, errsize);
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
        err = inv_store_take(db, res->lines, res->nlines, INV_STATUS_SOLD, errstr, errsize);
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

static deta_err_t settle(inv_events_t *e, deta_db_t *db, const deta_event_t *ev, bool authorized,
                         char *errstr, size_t errsize) {
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
    return DETA_OK;
}

deta_err_t inv_events_expire(inv_events_t *e, deta_db_t *db, const inv_reservation_t *res,
                             char *errstr, size_t errsize) {
    char at[DETA_TS_LEN];
    deta_timestamp_now(at);
    return release(e, db, res, INV_REASON_HOLD_EXPIRED, at, errstr, errsize);
}

static deta_err_t on_payment_authorized(deta_db_t *db, const deta_event_t *ev, void *opaque,
                                        char *errstr, size_t errsize) {
    return settle(opaque, db, ev, true, errstr, errsize);
}

static deta_err_t on_payment_failed(deta_db_t *db, const deta_event_t *ev, void *opaque,
                                    char *errstr, size_t errsize) {
    return settle(opaque, db, ev, false, errstr, errsize);
}

/* Two consumers: orders, and payment outcomes. A payment outcome that has to wait
 * for its reservation (retried in place) then holds up only other outcomes, never
 * the order.created that would create the reservation it waits for. */
static const deta_event_route_t ORDER_ROUTES[] = {
    {DETA_EVT_ORDER_CREATED, on_order_created},
};
static const deta_event_route_t PAYMENT_ROUTES[] = {
    {DETA_EVT_PAYMENT_AUTHORIZED, on_payment_authorized},
    {DETA_EVT_PAYMENT_FAILED, on_payment_failed},
};

static const char *const ORDER_TOPICS[] = {DETA_TOPIC_ORDER_EVENTS};
static const char *const PAYMENT_TOPICS[] = {DETA_TOPIC_PAYMENT_EVENTS};

deta_err_t inv_events_subscribe(inv_events_t *e, char *errstr, size_t errsize) {
    deta_consumer_opts_t opts = {.workers = INV_CONSUMER_WORKERS};
    deta_err_t err = deta_service_on_events(e->svc, ORDER_TOPICS, 1, ORDER_ROUTES,
                                            sizeof ORDER_ROUTES / sizeof *ORDER_ROUTES, e, &opts,
                                            errstr, errsize);
    if (err)
        return err;
    return deta_service_on_events(e->svc, PAYMENT_TOPICS, 1, PAYMENT_ROUTES,
                                  sizeof PAYMENT_ROUTES / sizeof *PAYMENT_ROUTES, e, &opts, errstr,
                                  errsize);
}
