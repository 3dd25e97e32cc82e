/*
 * events.c - payment.authorized -> a driver, a delivery and its first ETA.
 *
 * The steps of events.h's dispatcher (parse, claim the event id, apply, commit)
 * are used as they are; this file adds the handler and a thin wrapper around the
 * dispatcher so that metrics and the log line are written only after the
 * transaction committed (a rolled-back or retried attempt counts nothing).
 *
 * One delivery per order, however often the event arrives: a redelivered event
 * finds its claim; a second payment.authorized for the order (another event id)
 * finds the delivery and does nothing; two racing instances both insert with
 * ON CONFLICT DO NOTHING, and the loser rolls back (its driver booking with it)
 * and retries, which then finds the winner's delivery.
 *
 * The driver: delivery_choose_driver (domain.c) picks from the current rows, and
 * the booking re-checks capacity on the locked row; if another instance filled
 * that driver in between, the choice is made again on fresh rows. With no driver
 * free at all the event is TRANSIENT: retried with backoff until one frees up.
 */
#include "events.h"

#include <stdlib.h>
#include <string.h>

#include "deta/events.h"
#include "deta/log.h"
#include "deta/topics.h"
#include "settings.h"
#include "store.h"

#define BOOKING_ATTEMPTS 3
/* Retries are how an event waits for a free driver (or for Postgres): about a
 * minute and a half of backoff before the event is dead-lettered. */
#define CONSUMER_MAX_RETRIES 20
#define CONSUMER_BACKOFF_MS 200
#define CONSUMER_BACKOFF_MAX_MS 5000

static const double ETA_MINUTE_BUCKETS[] = {10, 15, 20, 25, 30, 35, 40, 45, 50, 60, 75, 90, 120};

struct delivery_events {
    deta_service_t *svc;
    delivery_params_t params;
    deta_event_dispatch_t *dispatch;
    deta_counter_t *assigned;
    deta_counter_t *eta_updates;
    deta_gauge_t *active;
    deta_histogram_t *eta_minutes;
};

/* What the handler did, applied once the dispatcher committed. One per thread,
 * since the consumer may run handlers on several workers. */
typedef struct pending {
    bool assigned;
    double eta_minutes;
    delivery_t delivery;
    char correlation_id[DETA_ID_MAX + 1];
} pending_t;
static _Thread_local pending_t pending;

/* Books the least busy driver and fills d. */
static deta_err_t assign_driver(delivery_events_t *e, deta_db_t *db, const char *order_id,
                                delivery_t *d, char *errstr, size_t errsize) {
    for (int attempt = 0; attempt < BOOKING_ATTEMPTS; attempt++) {
        delivery_driver_t *rows = NULL;
        size_t n = 0;
        deta_err_t err = delivery_store_load_drivers(db, &rows, &n, errstr, errsize);
        if (err)
            return err;
        int i = delivery_choose_driver(rows, n, e->params.capacity);
        if (i < 0) {
            free(rows);
            return deta_errf(DETA_ERR_TRANSIENT, errstr, errsize,
                             "no driver available: all %zu at capacity %ld or unavailable", n,
                             e->params.capacity);
        }
        bool booked = false;
        char name[DELIVERY_DRIVER_NAME_MAX + 1] = "";
        err = delivery_store_book_driver(db, rows[i].driver_id, e->params.capacity, &booked, name,
                                         sizeof name, errstr, errsize);
        if (!err && booked) {
            char delivery_id[DETA_UUID_LEN + 1];
            deta_uuid_new(delivery_id);
            err = delivery_assign(&e->params, d, delivery_id, order_id, rows[i].driver_id, name,
                                  delivery_now_ms());
            if (err)
                deta_errf(err, errstr, errsize, "driver %s does not fit a delivery",
                          rows[i].driver_id);
        }
        free(rows);
        if (err || booked)
            return err;
    }
    return deta_errf(DETA_ERR_TRANSIENT, errstr, errsize,
                     "drivers kept being taken by concurrent assignments");
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
    delivery_t *d = &pending.delivery;
    if ((err = assign_driver(e, db, pa.order_id, d, errstr, errsize)))
        return err;
    bool inserted = false;
    if ((err = delivery_store_insert(db, d, pa.payment_id, ev->correlation_id, &inserted, errstr,
                                     errsize)))
        return err;
    if (!inserted)
        return deta_errf(DETA_ERR_TRANSIENT, errstr, errsize,
                         "another instance assigned order %s meanwhile", pa.order_id);
    if ((err = delivery_store_announce(db, d, ev->correlation_id, errstr, errsize)))
        return err;
    pending.assigned = true;
    pending.eta_minutes = delivery_estimated_minutes(&e->params, d);
    memcpy(pending.correlation_id, ev->correlation_id, sizeof pending.correlation_id);
    return DETA_OK;
}

/* payment.failed and any other type have no route: nothing to deliver. */
static const deta_event_route_t ROUTES[] = {
    {DETA_EVT_PAYMENT_AUTHORIZED, on_payment_authorized},
};

static void report_assignment(delivery_events_t *e) {
    const delivery_t *d = &pending.delivery;
    deta_counter_inc(e->assigned);
    deta_counter_inc(e->eta_updates);
    deta_gauge_add(e->active, 1);
    deta_histogram_observe(e->eta_minutes, pending.eta_minutes);
    char eta[DETA_TS_LEN];
    delivery_format_instant(d->eta_ms, eta);
    deta_log(DETA_LOG_INFO, d->order_id, pending.correlation_id,
             "delivery %s assigned to %s (%s), %d.%d km, ETA %s", d->delivery_id, d->driver_id,
             d->driver_name, d->distance_hm / 10, d->distance_hm % 10, eta);
}

static deta_err_t consume(const deta_kafka_msg_t *msg, void *opaque, char *errstr,
                          size_t errsize) {
    delivery_events_t *e = opaque;
    pending.assigned = false;
    deta_err_t err = deta_event_dispatch(msg, e->dispatch, errstr, errsize);
    if (!err && pending.assigned)
        report_assignment(e);
    pending.assigned = false;
    return err;
}

delivery_events_t *delivery_events_new(deta_service_t *svc, const delivery_params_t *params) {
    delivery_events_t *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->svc = svc;
    e->params = *params;
    e->dispatch = deta_event_dispatch_new(svc, ROUTES, sizeof ROUTES / sizeof *ROUTES, e);
    deta_metrics_t *m = deta_service_metrics(svc);
    e->assigned = deta_counter(m, "delivery_assigned_total", "Deliveries assigned to a driver",
                               NULL);
    e->eta_updates = deta_counter(m, "eta_updates_total", "ETAs published (eta.updated)", NULL);
    e->active = deta_gauge(m, "delivery_active", "Deliveries not yet delivered", NULL);
    e->eta_minutes = deta_histogram(
        m, "delivery_eta_minutes", "Estimated minutes to delivery at assignment (simulated)", NULL,
        ETA_MINUTE_BUCKETS, sizeof ETA_MINUTE_BUCKETS / sizeof *ETA_MINUTE_BUCKETS);
    if (!e->dispatch || !e->assigned || !e->eta_updates || !e->active || !e->eta_minutes) {
        delivery_events_free(e);
        return NULL;
    }
    return e;
}

void delivery_events_free(delivery_events_t *e) {
    if (!e)
        return;
    deta_event_dispatch_free(e->dispatch);
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
