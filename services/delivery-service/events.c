/*
 * events.c - payment.authorized -> a driver, a delivery and its first ETA, or a
 * place in the queue of orders waiting for a driver.
 *
 * The steps of events.h's dispatcher (parse, claim the event id, apply, commit)
 * are used as they are; this file adds the handler and a thin wrapper around the
 * dispatcher so that metrics and the log line are written only after the
 * transaction committed (a rolled-back or retried attempt counts nothing).
 *
 * One delivery per order, however often the event arrives: a redelivered event
 * finds its claim; a second payment.authorized for the order (another event id)
 * finds the delivery, or the order waiting, and does nothing; two racing
 * instances both insert with ON CONFLICT DO NOTHING, and the loser rolls back
 * (its driver booking with it) and retries, which then finds the winner's
 * delivery.
 *
 * Waiting for a driver is a state, not a failure. When other orders wait already
 * (they keep their turn: first paid, first served) or no driver has room, the
 * order joins the queue (waiting_orders) and delivery.waiting announces it, in
 * the same transaction, and the handler commits like any other: the consumer
 * moves on to the next message at once. The ticker (ticker.c) assigns waiting
 * orders, in paid order, as soon as drivers have room.
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

struct delivery_events {
    deta_service_t *svc;
    delivery_params_t params;
    deta_event_dispatch_t *dispatch;
    delivery_assigner_t *assigner;
};

/* What the handler did, applied once the dispatcher committed. One per thread,
 * since the consumer may run handlers on several workers. */
typedef struct pending {
    bool assigned;
    bool parked;
    char order_id[DETA_UUID_LEN + 1];
    delivery_t delivery;
    char correlation_id[DETA_ID_MAX + 1];
} pending_t;
static _Thread_local pending_t pending;

/* A driver for the order now, unless it must wait: *assigned says which. */
static deta_err_t try_assign(delivery_events_t *e, deta_db_t *db, const payment_authorized_t *pa,
                             const char *correlation_id, bool *assigned, char *errstr,
                             size_t errsize) {
    *assigned = false;
    bool others_waiting = false;
    deta_err_t err = delivery_store_anyone_waiting(db, &others_waiting, errstr, errsize);
    if (err || others_waiting) /* they keep their turn */
        return err;
    delivery_driver_t *rows = NULL;
    size_t n = 0;
    if ((err = delivery_store_load_drivers(db, &rows, &n, errstr, errsize)))
        return err;
    err = delivery_assign_order(e->assigner, db, rows, n, pa->order_id, pa->payment_id,
                                correlation_id, &pending.delivery, assigned, errstr, errsize);
    free(rows);
    return err;
}

static deta_err_t on_payment_authorized(deta_db_t *db, const deta_event_t *ev, void *opaque,
                                        char *errstr, size_t errsize) {
    delivery_events_t *e = opaque;
    payment_authorized_t pa;
    deta_err_t err = delivery_parse_payment_authorized(ev, &pa, errstr, errsize);
    if (err)
        return err;
    bool known = false;
    if ((err = delivery_store_order_known(db, pa.order_id, &known, errstr, errsize)))
        return err;
    if (known) {
        deta_log(DETA_LOG_INFO, ev->order_id, ev->correlation_id,
                 "payment.authorized %s: the order has a delivery already", ev->event_id);
        return DETA_OK;
    }
    bool assigned = false;
    if ((err = try_assign(e, db, &pa, ev->correlation_id, &assigned, errstr, errsize)))
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

/* payment.failed and any other type have no route: nothing to deliver. */
static const deta_event_route_t ROUTES[] = {
    {DETA_EVT_PAYMENT_AUTHORIZED, on_payment_authorized},
};

static deta_err_t consume(const deta_kafka_msg_t *msg, void *opaque, char *errstr,
                          size_t errsize) {
    delivery_events_t *e = opaque;
    pending.assigned = pending.parked = false;
    deta_err_t err = deta_event_dispatch(msg, e->dispatch, errstr, errsize);
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
    e->dispatch = deta_event_dispatch_new(svc, ROUTES, sizeof ROUTES / sizeof *ROUTES, e);
    e->assigner = delivery_assigner_new(svc, params);
    if (!e->dispatch || !e->assigner) {
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
