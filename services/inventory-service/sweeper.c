/*
 * sweeper.c - releases expired holds (see sweeper.h).
 *
 * Why a sweep: a hold leaves HELD when its payment outcome arrives, and when the
 * outcome never comes (inventory.reserved or the outcome dead-lettered, a payment
 * lost) nothing else would ever return the units. payment-service charges no
 * hold past its holdExpiresAt, so once that instant and a grace (the outcome of
 * a decision made just before it may still be on its way) have passed, releasing
 * cannot undo a sale; should an authorization arrive after all (after a long
 * outage), events.c takes the units again or, when they are gone, marks the
 * order unfulfillable instead of overselling.
 *
 * Every SWEEP_INTERVAL_MS the thread refreshes the oldest-hold gauge and then
 * releases what is due, one transaction per hold: lock the most overdue HELD
 * reservation with SKIP LOCKED (several instances sweep side by side; a payment
 * outcome being applied to it is never waited for), release it and queue
 * inventory.released through the outbox, commit. One hold per transaction keeps
 * the stock rows of different holds from being locked out of item order (which
 * could deadlock with a reservation). A full batch starts the next turn at once;
 * a failure (Postgres down) backs off up to BACKOFF_MAX_MS, logged once per run
 * of failures.
 */
#include "sweeper.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "deta/log.h"
#include "store.h"

#define SWEEP_INTERVAL_MS 1000
#define SWEEP_BATCH 100
#define BACKOFF_MAX_MS 10000
#define NAP_SLICE_MS 50

struct inv_sweeper {
    deta_service_t *svc;
    inv_events_t *events;
    inv_settings_t settings;
    pthread_t thread;
    atomic_bool started;
    atomic_bool stop;
    deta_counter_t *expired;
    deta_gauge_t *oldest;
    bool failing; /* the thread's own: the last turn failed */
};

static bool stopping(inv_sweeper_t *s) {
    return atomic_load(&s->stop) || atomic_load(deta_service_stopping(s->svc));
}

/* Sleeps ms, waking early when asked to stop. */
static void nap(inv_sweeper_t *s, long ms) {
    while (ms > 0 && !stopping(s)) {
        long slice = ms < NAP_SLICE_MS ? ms : NAP_SLICE_MS;
        struct timespec ts = {0, slice * 1000000L};
        nanosleep(&ts, NULL);
        ms -= slice;
    }
}

/* Releases the most overdue hold; *released false when none is due. */
static deta_err_t expire_one(inv_sweeper_t *s, deta_db_t *db, bool *released, char *errstr,
                             size_t errsize) {
    inv_reservation_t res;
    *released = false;
    deta_err_t err = deta_db_begin(db, errstr, errsize);
    if (!err)
        err = inv_store_lock_expired(db, s->settings.hold_grace_s, &res, released, errstr,
                                     errsize);
    if (!err && *released)
        err = inv_events_expire(s->events, db, &res, errstr, errsize);
    if (!err && *released)
        err = deta_db_commit(db, errstr, errsize);
    if (err || !*released) {
        deta_db_rollback(db);
        *released = false;
        return err;
    }
    deta_counter_inc(s->expired);
    deta_log(DETA_LOG_WARN, res.order_id, res.correlation_id,
             "hold of reservation %s expired without a payment outcome: %zu line(s) back in "
             "stock",
             res.reservation_id, res.nlines);
    return DETA_OK;
}

/* One turn: the gauge, then up to SWEEP_BATCH releases; how many, or -1 after a
 * failure. */
static int sweep(inv_sweeper_t *s, deta_db_t *db) {
    char why[512] = "";
    double age = 0;
    deta_err_t err = inv_store_oldest_hold_age(db, &age, why, sizeof why);
    if (!err)
        deta_gauge_set(s->oldest, age);
    int n = 0;
    while (!err && n < SWEEP_BATCH && !stopping(s)) {
        bool released = false;
        err = expire_one(s, db, &released, why, sizeof why);
        if (!released)
            break;
        n++;
    }
    if (err && !s->failing)
        DETA_WARN("sweeper: cannot release expired holds (%s): %s; retrying", deta_err_name(err),
                  why);
    else if (!err && s->failing)
        DETA_INFO("sweeper: releasing expired holds again");
    s->failing = err != DETA_OK;
    return err ? -1 : n;
}

static void *sweeper_main(void *arg) {
    inv_sweeper_t *s = arg;
    deta_db_t *db = deta_db_pool_get(deta_service_db(s->svc));
    if (!db) {
        DETA_ERROR("sweeper: out of memory, expired holds will not be released");
        return NULL;
    }
    long backoff = SWEEP_INTERVAL_MS;
    while (!stopping(s)) {
        int n = sweep(s, db);
        if (n == SWEEP_BATCH)
            continue;
        if (n < 0) {
            nap(s, backoff);
            backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
        } else {
            backoff = SWEEP_INTERVAL_MS;
            nap(s, SWEEP_INTERVAL_MS);
        }
    }
    return NULL;
}

inv_sweeper_t *inv_sweeper_new(deta_service_t *svc, inv_events_t *events,
                               const inv_settings_t *settings) {
    inv_sweeper_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->svc = svc;
    s->events = events;
    s->settings = *settings;
    atomic_init(&s->started, false);
    atomic_init(&s->stop, false);
    deta_metrics_t *m = deta_service_metrics(svc);
    s->expired = deta_counter(m, "inventory_holds_expired_total",
                              "Holds released because their payment outcome never came", NULL);
    s->oldest = deta_gauge(m, "inventory_holds_oldest_age_seconds",
                           "Age of the oldest reservation still HELD (0 when none)", NULL);
    if (!s->expired || !s->oldest) {
        free(s);
        return NULL;
    }
    return s;
}

deta_err_t inv_sweeper_start(inv_sweeper_t *s, char *errstr, size_t errsize) {
    if (pthread_create(&s->thread, NULL, sweeper_main, s) != 0)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "cannot start the sweeper thread");
    atomic_store(&s->started, true);
    return DETA_OK;
}

void inv_sweeper_stop(inv_sweeper_t *s) {
    if (!s || !atomic_load(&s->started))
        return;
    atomic_store(&s->stop, true);
    pthread_join(s->thread, NULL);
    atomic_store(&s->started, false);
}

void inv_sweeper_free(inv_sweeper_t *s) {
    inv_sweeper_stop(s);
    free(s);
}
