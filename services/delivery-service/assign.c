/*
 * assign.c - a paid order gets a driver and its delivery (see assign.h).
 *
 * The choice is delivery_choose_driver's (domain.c) on rows the caller loaded;
 * the booking re-checks capacity on the driver's row and passes over a row that
 * another transaction holds (delivery_store_book_driver), so that the consumer
 * never waits for a driver's lock. A driver passed over, or found full on its
 * row, is left out and the choice is made again from the remaining rows: with n
 * drivers, at most n bookings are tried.
 */
#include "assign.h"

#include <stdlib.h>
#include <string.h>

#include "deta/log.h"
#include "settings.h"
#include "store.h"

/* Seconds (simulated): 10 to 120 minutes, the estimates a ride of the simulation gives. */
static const double ETA_BUCKETS_SECONDS[] = {600,  900,  1200, 1500, 1800, 2100, 2400,
                                             2700, 3000, 3600, 4500, 5400, 7200};

struct delivery_assigner {
    delivery_params_t params;
    deta_counter_t *assigned;
    deta_counter_t *eta_updates;
    deta_gauge_t *active;
    deta_histogram_t *eta_seconds;
};

delivery_assigner_t *delivery_assigner_new(deta_service_t *svc, const delivery_params_t *params) {
    delivery_assigner_t *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->params = *params;
    deta_metrics_t *m = deta_service_metrics(svc);
    a->assigned = deta_counter(m, "delivery_assigned_total", "Deliveries assigned to a driver",
                               NULL);
    a->eta_updates = deta_counter(m, "eta_updates_total", "ETAs published (eta.updated)", NULL);
    a->active = deta_gauge(m, "delivery_active", "Deliveries not yet delivered", NULL);
    a->eta_seconds = deta_histogram(
        m, "delivery_eta_seconds", "Estimated seconds to delivery at assignment (simulated)",
        NULL, ETA_BUCKETS_SECONDS, sizeof ETA_BUCKETS_SECONDS / sizeof *ETA_BUCKETS_SECONDS);
    if (!a->assigned || !a->eta_updates || !a->active || !a->eta_seconds) {
        free(a);
        return NULL;
    }
    return a;
}

void delivery_assigner_free(delivery_assigner_t *a) { free(a); }

/* Books a driver of rows for order_id and fills d; *booked false when none of
 * them can take it now. */
static deta_err_t book(delivery_assigner_t *a, deta_db_t *db, delivery_driver_t *rows, size_t n,
                       const char *order_id, delivery_t *d, bool *booked, char *errstr,
                       size_t errsize) {
    *booked = false;
    for (size_t tries = 0; tries < n; tries++) {
        int i = delivery_choose_driver(rows, n, a->params.capacity);
        if (i < 0)
            return DETA_OK;
        char name[DELIVERY_DRIVER_NAME_MAX + 1] = "";
        deta_err_t err = delivery_store_book_driver(db, rows[i].driver_id, a->params.capacity,
                                                    booked, name, sizeof name, errstr, errsize);
        if (err)
            return err;
        if (!*booked) {
            rows[i].available = false; /* full or held elsewhere: not for this order */
            continue;
        }
        rows[i].active++;
        char delivery_id[DETA_UUID_LEN + 1];
        deta_uuid_new(delivery_id);
        if (delivery_assign(&a->params, d, delivery_id, order_id, rows[i].driver_id, name,
                            delivery_now_ms()) != DETA_OK)
            return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                             "driver %s does not fit a delivery", rows[i].driver_id);
        return DETA_OK;
    }
    return DETA_OK;
}

deta_err_t delivery_assign_order(delivery_assigner_t *a, deta_db_t *db, delivery_driver_t *rows,
                                 size_t n, const char *order_id, const char *payment_id,
                                 const char *correlation_id, delivery_t *d, bool *assigned,
                                 char *errstr, size_t errsize) {
    deta_err_t err = book(a, db, rows, n, order_id, d, assigned, errstr, errsize);
    if (err || !*assigned)
        return err;
    bool inserted = false;
    if ((err = delivery_store_insert(db, d, payment_id, correlation_id, &inserted, errstr,
                                     errsize)))
        return err;
    if (!inserted)
        return deta_errf(DETA_ERR_TRANSIENT, errstr, errsize,
                         "another instance assigned order %s meanwhile", order_id);
    return delivery_store_announce(db, d, correlation_id, errstr, errsize);
}

/* Waiting orders, first paid first served, get the drivers that have room
 * (every driver's row is locked by the caller), up to max; *n how many. */
static deta_err_t assign_waiting(delivery_assigner_t *a, deta_db_t *db,
                                 delivery_assignment_t *out, int max, int *n, char *errstr,
                                 size_t errsize) {
    delivery_driver_t *rows = NULL;
    size_t nrows = 0;
    deta_err_t err = delivery_store_load_drivers(db, &rows, &nrows, errstr, errsize);
    while (!err && *n < max) {
        delivery_waiting_t w;
        bool found = false, assigned = false;
        delivery_assignment_t *s = &out[*n];
        err = delivery_store_next_waiting(db, &w, &found, errstr, errsize);
        if (!err && found && w.has_delivery) { /* nothing more to give it */
            err = delivery_store_unpark(db, w.order_id, errstr, errsize);
            continue;
        }
        if (!err && found)
            err = delivery_assign_order(a, db, rows, nrows, w.order_id, w.payment_id,
                                        w.correlation_id, &s->d, &assigned, errstr, errsize);
        if (err || !assigned)
            break;
        err = delivery_store_unpark(db, w.order_id, errstr, errsize);
        memcpy(s->correlation_id, w.correlation_id, sizeof s->correlation_id);
        (*n)++;
    }
    free(rows);
    return err;
}

deta_err_t delivery_release_and_serve(delivery_assigner_t *a, deta_db_t *db,
                                      const char *const *released, size_t nreleased,
                                      delivery_assignment_t *out, int max, int *assigned,
                                      char *errstr, size_t errsize) {
    *assigned = 0;
    bool waiting = false;
    deta_err_t err = delivery_store_anyone_waiting(db, &waiting, errstr, errsize);
    if (!err)
        err = delivery_store_lock_drivers(db, released, nreleased, waiting, errstr, errsize);
    if (!err)
        err = delivery_store_release_drivers(db, released, nreleased, errstr, errsize);
    if (!err && waiting)
        err = assign_waiting(a, db, out, max, assigned, errstr, errsize);
    return err;
}

void delivery_assigner_report(delivery_assigner_t *a, const delivery_t *d,
                              const char *correlation_id) {
    deta_counter_inc(a->assigned);
    deta_counter_inc(a->eta_updates);
    deta_gauge_add(a->active, 1);
    deta_histogram_observe(a->eta_seconds, delivery_estimated_seconds(&a->params, d));
    char eta[DETA_TS_LEN];
    deta_timestamp_from_ms(d->eta_ms, eta);
    deta_log(DETA_LOG_INFO, d->order_id, correlation_id,
             "delivery %s assigned to %s (%s), %d.%d km, ETA %s", d->delivery_id, d->driver_id,
             d->driver_name, d->distance_hm / 10, d->distance_hm % 10, eta);
}
