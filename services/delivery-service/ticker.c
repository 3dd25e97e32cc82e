/*
 * ticker.c - the thread that advances due deliveries on the simulated clock.
 *
 * Every DELIVERY_TICK_MS it takes the due deliveries (next_transition_at <= now)
 * in one transaction per turn: lock up to TICK_BATCH of them, most overdue
 * first, in one statement (FOR UPDATE SKIP LOCKED), advance each (domain.c),
 * save them all in one statement, and write each one's stage event and
 * eta.updated to the outbox in one more. SKIP LOCKED lets several instances
 * tick side by side without waiting for or repeating each other's work. A full
 * batch starts the next turn at once. (A turn took one claim and one save per
 * delivery until 12-07: two statements per stage, four per order; and an
 * outbox write per delivery until 12-07's afternoon, two per order.)
 *
 * Drivers last, in the same transaction, and in a fixed order: once the turn's
 * deliveries are moved, it locks the drivers it touches in one statement, in
 * driver_id order (store.c), releases those whose delivery was handed over, and
 * then, when orders wait, assigns them in paid order (first paid, first served)
 * as long as a driver has room, up to TICK_BATCH per turn, each with its
 * delivery.assigned and eta.updated. With orders waiting it locks every driver,
 * which also makes the instances serve the queue one at a time, strictly in
 * order. A slot freed is thus given to the first waiting order in the very
 * transaction that frees it. Two tickers whose deliveries meet the drivers in
 * crossing orders wait for each other at most, never deadlock (they did when
 * each delivery released its driver as the turn went). That part is assign.c's
 * delivery_release_and_serve, which a cancelled delivery goes through too.
 *
 * The pick-up races the cancel (events.c) for an ASSIGNED delivery: the claim
 * locks the row, and the save is conditional on the stage it was claimed at, so
 * a pick-up never overwrites a cancel; a row the cancel holds is skipped (SKIP
 * LOCKED), and once the cancel committed it is no longer due.
 *
 * One transaction per turn rather than per delivery: a turn under load moves
 * tens of deliveries, and each commit is a WAL flush and two round trips. Nothing
 * is lost by it: a delivery the domain refuses to advance (nothing is written
 * for it or the ones claimed after it, which stay due) ends the turn, the ones
 * before it commit, and the turn backs off as
 * before; a failing statement aborts the transaction, so the whole turn rolls
 * back, nothing of it was announced, and the next turn does it again. Logs and
 * metrics follow the commit.
 *
 * The thread has its own connection from the service's pool and stops when the
 * service is stopping (or when delivery_ticker_stop asks). Its heartbeat feeds the
 * "ticker" health check, and once a second it recounts the active deliveries for
 * the delivery_active gauge (a count from the database is right even when another
 * instance assigned or delivered them).
 */
#include "ticker.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "assign.h"
#include "deta/log.h"
#include "deta/outbox.h"
#include "settings.h"
#include "store.h"

#define TICK_BATCH 100
_Static_assert(2 * TICK_BATCH <= DETA_OUTBOX_EACH_MAX, "a turn's events fit one outbox write");
#define GAUGE_REFRESH_MS 1000
#define BACKOFF_MAX_MS 5000
#define STALE_MIN_MS 10000 /* the health check's patience, at least */
#define NAP_SLICE_MS 50

struct delivery_ticker {
    deta_service_t *svc;
    delivery_params_t params;
    pthread_t thread;
    atomic_bool started; /* read by the health check on HTTP threads */
    atomic_bool stop;
    atomic_llong last_beat_ms;
    int64_t gauge_refreshed_ms; /* the thread's own */
    deta_counter_t *picked_up;
    deta_counter_t *delivered;
    deta_counter_t *eta_updates;
    deta_gauge_t *active;
    deta_gauge_t *waiting;
    delivery_assigner_t *assigner;
    /* the thread's own: what one turn did */
    delivery_due_t turn[TICK_BATCH];
    delivery_assignment_t assigned[TICK_BATCH];
};

static bool stopping(delivery_ticker_t *t) {
    return atomic_load(&t->stop) || atomic_load(deta_service_stopping(t->svc));
}

/* Sleeps ms, waking early when asked to stop. */
static void nap(delivery_ticker_t *t, long ms) {
    while (ms > 0 && !stopping(t)) {
        long slice = ms < NAP_SLICE_MS ? ms : NAP_SLICE_MS;
        struct timespec ts = {0, slice * 1000000L};
        nanosleep(&ts, NULL);
        ms -= slice;
    }
}

/* The turn's moves, in the open transaction: claims up to TICK_BATCH due
 * deliveries, advances them in order up to the first one the domain refuses
 * (*refused; it and those after it are left as they were), saves the moved in
 * one statement and announces those saved in one more. One not saved was
 * changed by a cancel first (the save is conditional on the stage it was
 * claimed at; the claim locks the rows, so that cannot happen today, but the
 * pick-up's one-winner rule holds whatever locking the claim does): nothing is
 * written nor announced for it. t->turn[0..*n) the deliveries moved. */
static deta_err_t move_due(delivery_ticker_t *t, deta_db_t *db, int *n, bool *refused,
                           char *errstr, size_t errsize) {
    int64_t now = delivery_now_ms();
    size_t claimed = 0, moved = 0;
    *n = 0;
    *refused = false;
    deta_err_t err =
        delivery_store_claim_due(db, now, TICK_BATCH, t->turn, &claimed, errstr, errsize);
    delivery_stage_t from[TICK_BATCH];
    for (; !err && moved < claimed; moved++) {
        from[moved] = t->turn[moved].d.status;
        if (delivery_advance(&t->params, &t->turn[moved].d, now) != DETA_OK) {
            *refused = true;
            DETA_WARN("ticker: delivery %s cannot advance", t->turn[moved].d.delivery_id);
            break;
        }
    }
    bool saved[TICK_BATCH];
    if (!err)
        err = delivery_store_save_stages(db, t->turn, from, moved, saved, errstr, errsize);
    for (size_t i = 0; !err && i < moved; i++) {
        if (!saved[i])
            continue;
        if ((size_t)*n != i)
            t->turn[*n] = t->turn[i];
        (*n)++;
    }
    if (!err)
        err = delivery_store_announce_all(db, t->turn, (size_t)*n, errstr, errsize);
    if (err)
        *n = 0;
    return err;
}

static void report_step(delivery_ticker_t *t, const delivery_t *d, const char *correlation_id) {
    char eta[DETA_TS_LEN];
    deta_timestamp_from_ms(d->eta_ms, eta);
    deta_counter_inc(t->eta_updates);
    if (d->status == DELIVERY_PICKED_UP) {
        deta_counter_inc(t->picked_up);
        deta_log(DETA_LOG_INFO, d->order_id, correlation_id,
                 "delivery %s picked up by %s, ETA %s", d->delivery_id, d->driver_id, eta);
    } else {
        deta_counter_inc(t->delivered);
        deta_gauge_add(t->active, -1);
        deta_log(DETA_LOG_INFO, d->order_id, correlation_id, "delivery %s delivered by %s at %s",
                 d->delivery_id, d->driver_id, eta);
    }
}

/* The drivers' part of a turn, after its n moves: the drivers of the delivered
 * are released and waiting orders assigned (assign.c); *assigned how many were. */
static deta_err_t settle_drivers(delivery_ticker_t *t, deta_db_t *db, int n, int *assigned,
                                 char *errstr, size_t errsize) {
    const char *released[TICK_BATCH];
    size_t nreleased = 0;
    for (int i = 0; i < n; i++)
        if (t->turn[i].d.status == DELIVERY_DELIVERED)
            released[nreleased++] = t->turn[i].d.driver_id;
    return delivery_release_and_serve(t->assigner, db, released, nreleased, t->assigned,
                                      TICK_BATCH, assigned, errstr, errsize);
}

/* One turn: up to TICK_BATCH due deliveries, their drivers and the waiting
 * orders that get a driver, in one transaction; returns how many moved or were
 * assigned, -1 after a failure (what moved before a refused delivery still
 * commits). */
static int advance_due(delivery_ticker_t *t, deta_db_t *db) {
    char why[512] = "";
    deta_err_t err = deta_db_begin(db, why, sizeof why);
    int n = 0, assigned = 0;
    bool refused = false;
    if (!err && !stopping(t))
        err = move_due(t, db, &n, &refused, why, sizeof why);
    if (!err)
        err = settle_drivers(t, db, n, &assigned, why, sizeof why);
    if (!err)
        err = n + assigned > 0 ? deta_db_commit(db, why, sizeof why) : DETA_OK;
    if (err || n + assigned == 0)
        deta_db_rollback(db);
    if (err) {
        DETA_WARN("ticker: cannot advance deliveries (%s): %s", deta_err_name(err), why);
        return -1;
    }
    for (int i = 0; i < n; i++)
        report_step(t, &t->turn[i].d, t->turn[i].correlation_id);
    for (int i = 0; i < assigned; i++)
        delivery_assigner_report(t->assigner, &t->assigned[i].d, t->assigned[i].correlation_id);
    return refused ? -1 : n > assigned ? n : assigned;
}

static void refresh_gauge(delivery_ticker_t *t, deta_db_t *db) {
    int64_t now = delivery_now_ms();
    if (now - t->gauge_refreshed_ms < GAUGE_REFRESH_MS)
        return;
    long n = 0, waiting = 0;
    char why[256];
    if (delivery_store_count_active(db, &n, &waiting, why, sizeof why) == DETA_OK) {
        deta_gauge_set(t->active, (double)n);
        deta_gauge_set(t->waiting, (double)waiting);
        t->gauge_refreshed_ms = now;
    }
}

static void *ticker_main(void *arg) {
    delivery_ticker_t *t = arg;
    deta_db_t *db = deta_db_pool_get(deta_service_db(t->svc));
    if (!db) {
        DETA_ERROR("ticker: out of memory, deliveries will not advance");
        return NULL;
    }
    long backoff = t->params.tick_ms;
    while (!stopping(t)) {
        int moved = advance_due(t, db);
        if (moved >= 0)
            refresh_gauge(t, db);
        atomic_store(&t->last_beat_ms, delivery_now_ms());
        if (moved == TICK_BATCH)
            continue;
        if (moved < 0) {
            nap(t, backoff);
            backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
        } else {
            backoff = t->params.tick_ms;
            nap(t, t->params.tick_ms);
        }
    }
    return NULL;
}

/* UP while the thread keeps turning (a database outage shows in "db"). */
static bool check_ticker(void *opaque, char *detail, size_t detailsize) {
    delivery_ticker_t *t = opaque;
    if (!atomic_load(&t->started)) {
        deta_errf(DETA_ERR_INTERNAL, detail, detailsize, "not running");
        return false;
    }
    long long age = delivery_now_ms() - atomic_load(&t->last_beat_ms);
    long long patience = t->params.tick_ms * 20 + BACKOFF_MAX_MS;
    if (patience < STALE_MIN_MS)
        patience = STALE_MIN_MS;
    if (age <= patience)
        return true;
    deta_errf(DETA_ERR_INTERNAL, detail, detailsize, "no tick for %lld ms", age);
    return false;
}

delivery_ticker_t *delivery_ticker_new(deta_service_t *svc, const delivery_params_t *params) {
    delivery_ticker_t *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->svc = svc;
    t->params = *params;
    atomic_init(&t->stop, false);
    atomic_init(&t->started, false);
    atomic_init(&t->last_beat_ms, 0);
    deta_metrics_t *m = deta_service_metrics(svc);
    t->picked_up = deta_counter(m, "delivery_picked_up_total", "Deliveries picked up", NULL);
    t->delivered = deta_counter(m, "delivery_delivered_total", "Deliveries handed over", NULL);
    t->eta_updates = deta_counter(m, "eta_updates_total", "ETAs published (eta.updated)", NULL);
    t->active = deta_gauge(m, "delivery_active", "Deliveries not yet delivered", NULL);
    t->waiting = deta_gauge(m, "delivery_waiting", "Paid orders waiting for a driver", NULL);
    t->assigner = delivery_assigner_new(svc, params);
    if (!t->picked_up || !t->delivered || !t->eta_updates || !t->active || !t->waiting ||
        !t->assigner) {
        delivery_assigner_free(t->assigner);
        free(t);
        return NULL;
    }
    deta_health_add(deta_service_health(svc), "ticker", true, check_ticker, t);
    return t;
}

deta_err_t delivery_ticker_start(delivery_ticker_t *t, char *errstr, size_t errsize) {
    atomic_store(&t->last_beat_ms, delivery_now_ms());
    if (pthread_create(&t->thread, NULL, ticker_main, t) != 0)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "cannot start the ticker thread");
    atomic_store(&t->started, true);
    return DETA_OK;
}

void delivery_ticker_stop(delivery_ticker_t *t) {
    if (!t || !atomic_load(&t->started))
        return;
    atomic_store(&t->stop, true);
    pthread_join(t->thread, NULL);
    atomic_store(&t->started, false);
}

void delivery_ticker_free(delivery_ticker_t *t) {
    delivery_ticker_stop(t);
    if (t)
        delivery_assigner_free(t->assigner);
    free(t);
}
