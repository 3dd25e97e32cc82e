/*
 * events.c - payment.authorized -> a driver, a delivery and its first ETA, or a
 * place in the queue of orders waiting for a driver.
 *
 * The steps of events.h's dispatcher (parse, apply, commit) are used as they
 * are, without the claim of the event id (own_key): every route is idempotent by
 * the order's own rows, so a claim would only cost a statement, a round trip and
 * a row per event. This file adds the handlers and a thin wrapper around the
 * dispatcher so that metrics and the log line are written only after the
 * transaction committed (a rolled-back or retried attempt counts nothing).
 *
 * One delivery per order, however often the event arrives: a payment.authorized
 * again (redelivered, or another event id) finds the order known here (a
 * delivery, a place in the queue, or a cancelled_orders row: none of them is
 * ever deleted without another taking its place in the same transaction) and
 * does nothing: the dispatcher counts a duplicate and rolls back. Two racing
 * instances both insert with ON CONFLICT DO NOTHING, and the loser rolls back
 * (its driver booking with it) and retries, which then finds the winner's
 * delivery. A payment.cancel_forwarded again finds its verdict given (a
 * cancelled_orders row or the refusal recorded): a duplicate too.
 *
 * Waiting for a driver is a state, not a failure. When other orders wait already
 * (they keep their turn: first paid, first served) or no driver has room, the
 * order joins the queue (waiting_orders) and delivery.waiting announces it, in
 * the same transaction, and the handler commits like any other: the consumer
 * moves on to the next message at once. The ticker (ticker.c) assigns waiting
 * orders, in paid order, as soon as drivers have room.
 *
 * Round trips: after the order's lock, one statement says whether
 * the order is known here, whether anyone waits, and, when neither, gives the
 * drivers' rows (delivery_store_intake); then the booking, the delivery, and its
 * two events in one statement (delivery_store_announce).
 *
 * payment.cancel_forwarded -> the cancel's verdict (docs/contracts.md
 * #cancellation), decided by delivery_cancel_decide on what the order is here:
 * an ASSIGNED delivery is CANCELLED and its driver's slot freed and given to the
 * first waiting order (assign.c, as at a delivery); an order in the queue leaves
 * it; an order never seen is fenced off; each of those joins cancelled_orders
 * and delivery.cancelled says so. A delivery picked up or delivered refuses
 * (delivery.cancel_refused). All in the event's one transaction.
 *
 * The cancel races the ticker, which may be picking the delivery up or
 * assigning the waiting order at that very moment. Each step the cancel takes
 * is conditional on the state it decided on (store.c); when it finds that state
 * gone (0 rows: the ticker committed first), it reads the order again and
 * decides anew, which then refuses a pick-up or cancels the fresh assignment.
 * Each order's consumer transactions also take the order's advisory lock, so a
 * cancel and a payment.authorized of the order never decide side by side.
 * A verdict is given once: a second forward (another event id) finds the order
 * cancelled, or the refusal recorded, and does nothing.
 */
#include "events.h"

#include <stdlib.h>
#include <string.h>

#include "assign.h"
#include "deta/events.h"
#include "deta/log.h"
#include "deta/topics.h"
#include "settings.h"
#include "store.h"

/* Retries are for Postgres and for a lost race with another instance; waiting
 * for a driver is not done by retrying. */
#define CONSUMER_MAX_RETRIES 20
#define CONSUMER_BACKOFF_MS 200
#define CONSUMER_BACKOFF_MAX_MS 5000
/* A cancel reads the order again after each race it lost; the ticker changes an
 * order at most twice (assigned, picked up) before a verdict must hold. */
#define CANCEL_REREADS 4
/* Waiting orders a cancel's freed slot may serve in its transaction (normally
 * one: the slot; the ticker serves the rest). */
#define CANCEL_SERVE_MAX 4

struct delivery_events {
    deta_service_t *svc;
    delivery_params_t params;
    deta_event_dispatch_t *dispatch;
    delivery_assigner_t *assigner;
    deta_counter_t *cancel_cancelled;
    deta_counter_t *cancel_refused;
    deta_gauge_t *active;
};

/* What the handler did, applied once the dispatcher committed. One per thread,
 * since the consumer may run handlers on several workers. */
typedef struct pending {
    bool assigned;
    bool parked;
    char order_id[DETA_UUID_LEN + 1];
    delivery_t delivery;
    char correlation_id[DETA_ID_MAX + 1];
    bool cancel; /* the cancel's handler ran: its verdict */
    delivery_cancel_verdict_t verdict;
    delivery_stage_t refused_at; /* REFUSE: the delivery's stage */
    char delivery_id[DETA_UUID_LEN + 1];
    char driver_id[DELIVERY_DRIVER_ID_MAX + 1];
    int served; /* waiting orders given the freed slot */
    delivery_assignment_t serve[CANCEL_SERVE_MAX];
} pending_t;
static _Thread_local pending_t pending;

/* *duplicate when the order is known here already: the event then does nothing. */
static deta_err_t authorized(delivery_events_t *e, deta_db_t *db, const deta_event_t *ev,
                             bool *duplicate, char *errstr, size_t errsize) {
    payment_authorized_t pa;
    deta_err_t err = delivery_parse_payment_authorized(ev, &pa, errstr, errsize);
    if (err)
        return err;
    if ((err = delivery_store_lock_order(db, pa.order_id, errstr, errsize)))
        return err;
    bool known = false, others_waiting = false;
    delivery_driver_t *rows = NULL;
    size_t n = 0;
    if ((err = delivery_store_intake(db, pa.order_id, &known, &others_waiting, &rows, &n, errstr,
                                     errsize))) {
        free(rows);
        return err;
    }
    if (known) {
        free(rows);
        deta_log(DETA_LOG_INFO, ev->order_id, ev->correlation_id,
                 "payment.authorized %s: the order has a delivery, waits or was cancelled",
                 ev->event_id);
        *duplicate = true;
        return DETA_OK;
    }
    bool assigned = false;
    if (!others_waiting) /* else they keep their turn */
        err = delivery_assign_order(e->assigner, db, rows, n, pa.order_id, pa.payment_id,
                                    ev->correlation_id, &pending.delivery, &assigned, errstr,
                                    errsize);
    free(rows);
    if (err)
        return err;
    if (!assigned) {
        delivery_waiting_t w;
        memcpy(w.order_id, pa.order_id, sizeof w.order_id);
        memcpy(w.payment_id, pa.payment_id, sizeof w.payment_id);
        snprintf(w.correlation_id, sizeof w.correlation_id, "%s", ev->correlation_id);
        if ((err = delivery_store_park(db, &w, pa.authorized_at, delivery_now_ms(),
                                       &pending.parked, errstr, errsize)))
            return err;
    }
    pending.assigned = assigned;
    memcpy(pending.order_id, pa.order_id, sizeof pending.order_id);
    snprintf(pending.correlation_id, sizeof pending.correlation_id, "%s", ev->correlation_id);
    return DETA_OK;
}

static deta_err_t on_payment_authorized(deta_db_t *db, const deta_event_t *ev, void *opaque,
                                        char *errstr, size_t errsize) {
    bool duplicate = false;
    deta_err_t err = authorized(opaque, db, ev, &duplicate, errstr, errsize);
    return deta_event_own_result(err, duplicate);
}

/* ---- the cancel ---- */

/* delivery.cancelled for a verdict that cancels, and the order's row in
 * cancelled_orders; *recorded false when the order was there already. */
static deta_err_t announce_cancelled(deta_db_t *db, const deta_event_t *ev,
                                     const payment_cancel_forwarded_t *cf,
                                     delivery_cancel_verdict_t v, int64_t now, bool *recorded,
                                     char *errstr, size_t errsize) {
    bool assigned = v == DELIVERY_CANCEL_ASSIGNED;
    const char *delivery_id = assigned ? pending.delivery_id : NULL;
    deta_err_t err =
        delivery_store_record_cancelled(db, cf->order_id, delivery_cancel_stage(v), delivery_id,
                                        cf->payment_id, now, recorded, errstr, errsize);
    if (err || !*recorded)
        return err;
    json_t *payload = delivery_cancelled_payload(
        v, cf->order_id, delivery_id, assigned ? pending.driver_id : NULL, cf->payment_id,
        cf->has_reason ? cf->reason : NULL, cf->requested_at, now);
    return delivery_store_add_event(db, DETA_EVT_DELIVERY_CANCELLED, cf->order_id,
                                    ev->correlation_id, payload, now, errstr, errsize);
}

/* Carries out verdict v, conditional on the state it was decided on; *done
 * false (nothing written) when that state was gone. */
static deta_err_t carry_out(delivery_events_t *e, deta_db_t *db, const deta_event_t *ev,
                            const payment_cancel_forwarded_t *cf, delivery_cancel_verdict_t v,
                            bool *done, char *errstr, size_t errsize) {
    int64_t now = delivery_now_ms();
    deta_err_t err = DETA_OK;
    *done = false;
    switch (v) {
    case DELIVERY_CANCEL_DECIDED:
        *done = true;
        return DETA_OK;
    case DELIVERY_CANCEL_REFUSE:
        err = delivery_store_refuse_cancel(db, cf->order_id, now, done, &pending.refused_at,
                                           errstr, errsize);
        if (!err && *done)
            err = delivery_store_add_event(
                db, DETA_EVT_DELIVERY_CANCEL_REFUSED, cf->order_id, ev->correlation_id,
                delivery_cancel_refused_payload(cf->order_id, pending.refused_at,
                                                cf->has_reason ? cf->reason : NULL,
                                                cf->requested_at, now),
                now, errstr, errsize);
        return err;
    case DELIVERY_CANCEL_ASSIGNED:
        err = delivery_store_cancel_delivery(db, cf->order_id, now, done, pending.delivery_id,
                                             pending.driver_id, errstr, errsize);
        if (err || !*done)
            return err;
        const char *released[] = {pending.driver_id};
        err = delivery_release_and_serve(e->assigner, db, released, 1, pending.serve,
                                         CANCEL_SERVE_MAX, &pending.served, errstr, errsize);
        break;
    case DELIVERY_CANCEL_WAITING:
        err = delivery_store_leave_queue(db, cf->order_id, done, errstr, errsize);
        break;
    case DELIVERY_CANCEL_NONE:
        *done = true; /* the fence below is the condition: no one else recorded it */
        break;
    }
    bool recorded = false;
    if (!err && *done)
        err = announce_cancelled(db, ev, cf, v, now, &recorded, errstr, errsize);
    if (!err && *done && !recorded) {
        if (v != DELIVERY_CANCEL_NONE) /* its delivery or queue place was ours to change */
            return deta_errf(DETA_ERR_TRANSIENT, errstr, errsize,
                             "order %s was cancelled meanwhile", cf->order_id);
        *done = false; /* read again: decided */
    }
    return err;
}

/* *duplicate when the verdict was given already (a cancelled_orders row, or the
 * refusal recorded): the event then does nothing. */
static deta_err_t cancel_forwarded(delivery_events_t *e, deta_db_t *db, const deta_event_t *ev,
                                   bool *duplicate, char *errstr, size_t errsize) {
    payment_cancel_forwarded_t cf;
    deta_err_t err = delivery_parse_cancel_forwarded(ev, &cf, errstr, errsize);
    if (err)
        return err;
    if ((err = delivery_store_lock_order(db, cf.order_id, errstr, errsize)))
        return err;
    memcpy(pending.order_id, cf.order_id, sizeof pending.order_id);
    snprintf(pending.correlation_id, sizeof pending.correlation_id, "%s", ev->correlation_id);
    for (int i = 0; i < CANCEL_REREADS; i++) {
        delivery_cancel_facts_t facts;
        if ((err = delivery_store_cancel_facts(db, cf.order_id, &facts, errstr, errsize)))
            return err;
        delivery_cancel_verdict_t v = delivery_cancel_decide(&facts);
        bool done = false;
        if ((err = carry_out(e, db, ev, &cf, v, &done, errstr, errsize)))
            return err;
        if (done && v == DELIVERY_CANCEL_DECIDED) {
            deta_log(DETA_LOG_INFO, ev->order_id, ev->correlation_id,
                     "payment.cancel_forwarded %s: the verdict was given already",
                     ev->event_id);
            *duplicate = true;
            return DETA_OK;
        }
        if (done) {
            pending.verdict = v;
            pending.cancel = true;
            return DETA_OK;
        }
    }
    return deta_errf(DETA_ERR_TRANSIENT, errstr, errsize,
                     "order %s kept changing under the cancel", cf.order_id);
}

static deta_err_t on_cancel_forwarded(deta_db_t *db, const deta_event_t *ev, void *opaque,
                                      char *errstr, size_t errsize) {
    bool duplicate = false;
    deta_err_t err = cancel_forwarded(opaque, db, ev, &duplicate, errstr, errsize);
    return deta_event_own_result(err, duplicate);
}

/* After the commit: the verdict's metrics and log line, and the assignments of
 * the waiting orders that got the freed slot. */
static void report_cancel(delivery_events_t *e) {
    const pending_t *p = &pending;
    switch (p->verdict) {
    case DELIVERY_CANCEL_DECIDED: /* a duplicate, logged by the handler: never pending */
        return;
    case DELIVERY_CANCEL_REFUSE:
        deta_counter_inc(e->cancel_refused);
        deta_log(DETA_LOG_INFO, p->order_id, p->correlation_id,
                 "cancel refused: the delivery is %s", delivery_stage_name(p->refused_at));
        return;
    case DELIVERY_CANCEL_ASSIGNED:
        deta_gauge_add(e->active, -1);
        deta_log(DETA_LOG_INFO, p->order_id, p->correlation_id,
                 "cancelled: delivery %s, %s has a slot free again", p->delivery_id,
                 p->driver_id);
        for (int i = 0; i < p->served; i++)
            delivery_assigner_report(e->assigner, &p->serve[i].d, p->serve[i].correlation_id);
        break;
    case DELIVERY_CANCEL_WAITING:
    case DELIVERY_CANCEL_NONE:
        deta_log(DETA_LOG_INFO, p->order_id, p->correlation_id, "cancelled at stage %s",
                 delivery_cancel_stage(p->verdict));
        break;
    }
    deta_counter_inc(e->cancel_cancelled);
}

/* payment.failed and any other type have no route: nothing to deliver. */
static const deta_event_route_t ROUTES[] = {
    {DETA_EVT_PAYMENT_AUTHORIZED, on_payment_authorized, NULL},
    {DETA_EVT_PAYMENT_CANCEL_FORWARDED, on_cancel_forwarded, NULL},
};

static deta_err_t consume(const deta_kafka_msg_t *msg, void *opaque, char *errstr,
                          size_t errsize) {
    delivery_events_t *e = opaque;
    pending.assigned = pending.parked = false;
    pending.cancel = false;
    pending.served = 0;
    deta_err_t err = deta_event_dispatch(msg, e->dispatch, errstr, errsize);
    if (!err && pending.cancel)
        report_cancel(e);
    pending.cancel = false;
    if (!err && pending.assigned)
        delivery_assigner_report(e->assigner, &pending.delivery, pending.correlation_id);
    if (!err && pending.parked)
        deta_log(DETA_LOG_INFO, pending.order_id, pending.correlation_id,
                 "no driver has room: the order waits for one");
    pending.assigned = pending.parked = false;
    return err;
}

delivery_events_t *delivery_events_new(deta_service_t *svc, const delivery_params_t *params) {
    delivery_events_t *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->svc = svc;
    e->params = *params;
    /* No claim: both routes are idempotent by the order's own rows (above). */
    static const deta_event_dispatch_opts_t own = {.own_key = true};
    e->dispatch =
        deta_event_dispatch_new_opts(svc, ROUTES, sizeof ROUTES / sizeof *ROUTES, e, &own);
    e->assigner = delivery_assigner_new(svc, params);
    deta_metrics_t *m = deta_service_metrics(svc);
    const char *help = "Cancels of paid orders decided here, by verdict";
    e->cancel_cancelled =
        deta_counter(m, "delivery_cancel_requests_total", help, "outcome=\"cancelled\"");
    e->cancel_refused =
        deta_counter(m, "delivery_cancel_requests_total", help, "outcome=\"refused\"");
    e->active = deta_gauge(m, "delivery_active", "Deliveries not yet delivered", NULL);
    if (!e->dispatch || !e->assigner || !e->cancel_cancelled || !e->cancel_refused ||
        !e->active) {
        delivery_events_free(e);
        return NULL;
    }
    return e;
}

void delivery_events_free(delivery_events_t *e) {
    if (!e)
        return;
    deta_event_dispatch_free(e->dispatch);
    delivery_assigner_free(e->assigner);
    free(e);
}

deta_err_t delivery_events_subscribe(delivery_events_t *e, char *errstr, size_t errsize) {
    static const char *const topics[] = {DETA_TOPIC_PAYMENT_EVENTS};
    deta_consumer_opts_t opts = {.max_retries = CONSUMER_MAX_RETRIES,
                                 .backoff_ms = CONSUMER_BACKOFF_MS,
                                 .backoff_max_ms = CONSUMER_BACKOFF_MAX_MS};
    deta_err_t err = deta_service_use_inbox(e->svc, errstr, errsize);
    if (!err)
        err = deta_service_consume(e->svc, topics, 1, consume, e, &opts, errstr, errsize);
    return err;
}
