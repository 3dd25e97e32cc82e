/*
 * db_shared.c - a bounded set of Postgres connections that threads borrow for one
 * unit of work (see deta/db.h, "Shared connections").
 *
 * Why, beside the per-thread pool: a thread that spends most of its time waiting
 * on something else (payment-service's gateway call) would keep a connection
 * idle for the whole wait, so the number of connections would grow with the
 * number of waits in flight. Here the connections are at most `size`, opened on
 * first need, and a borrower that finds none free waits on a condition variable
 * until one is given back: the database sees `size` sessions however many
 * threads wait on the gateway.
 *
 * Connections are handed out last-in first-out, so under a light load the same
 * few stay warm (their prepared statements with them) and the others are never
 * opened. A wait is bounded by the borrower's timeout: a borrower whose work has a
 * deadline (a claim that expires) must not sit behind a stalled one for longer.
 * A borrower gives its connection back outside any transaction; session
 * state (advisory locks, SET) must not outlive the loan.
 *
 * With metrics (deta_db_shared_metrics), every take observes how long it waited
 * (0 when a connection was free: one clock read each side, cheap beside the
 * unit of work) and a take that timed out is counted: waits on this dependency
 * are visible, not only its failures.
 */
#include "clock.h"
#include "deta/db.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

struct deta_db_shared {
    deta_config_t cfg;
    pthread_mutex_t lock;
    pthread_cond_t given_back;
    int size;     /* connections at most */
    int opened;   /* connections made so far */
    int nfree;    /* entries of idle[] in use */
    deta_db_t **idle;
    deta_db_t **all; /* every connection made, to free them */
    deta_histogram_t *wait;   /* NULL without metrics */
    deta_counter_t *timeouts; /* NULL without metrics */
};

/* Seconds: a free connection is taken in microseconds; a wait lasts as long as a
 * borrower's unit of work, up to the take's timeout (payment-service: 5 s). */
static const double wait_buckets[] = {0.0001, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1,
                                      0.25,   0.5,   1,     2.5,  5,     10};

void deta_db_shared_metrics(deta_db_shared_t *s, deta_metrics_t *m) {
    if (!s || !m)
        return;
    s->wait = deta_histogram(m, "deta_db_shared_wait_seconds",
                             "Time a borrower waited for a shared Postgres connection", NULL,
                             wait_buckets, sizeof wait_buckets / sizeof *wait_buckets);
    s->timeouts = deta_counter(m, "deta_db_shared_timeouts_total",
                               "Borrowers that got no shared Postgres connection in time", NULL);
}

static double seconds_since(const struct timespec *t0) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t0->tv_sec) + (double)(now.tv_nsec - t0->tv_nsec) / 1e9;
}

deta_db_shared_t *deta_db_shared_new(const deta_config_t *cfg, int size) {
    if (!cfg || size < 1)
        return NULL;
    deta_db_shared_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->idle = calloc((size_t)size, sizeof *s->idle);
    s->all = calloc((size_t)size, sizeof *s->all);
    if (!s->idle || !s->all) {
        free(s->idle);
        free(s->all);
        free(s);
        return NULL;
    }
    s->cfg = *cfg;
    s->size = size;
    pthread_mutex_init(&s->lock, NULL);
    deta_cond_init_monotonic(&s->given_back);
    return s;
}

/* Under s->lock: a new connection when the bound allows one, else NULL. */
static deta_db_t *open_one(deta_db_shared_t *s) {
    if (s->opened == s->size)
        return NULL;
    deta_db_t *db = deta_db_new(&s->cfg);
    if (db)
        s->all[s->opened++] = db;
    return db;
}

deta_db_t *deta_db_shared_take(deta_db_shared_t *s, long timeout_ms) {
    struct timespec deadline = deta_clock_after(timeout_ms), t0;
    if (s->wait)
        clock_gettime(CLOCK_MONOTONIC, &t0);
    pthread_mutex_lock(&s->lock);
    deta_db_t *db = NULL;
    bool timed_out = false;
    while (!db) {
        if (s->nfree > 0)
            db = s->idle[--s->nfree];
        else if (s->opened < s->size) {
            db = open_one(s);
            if (!db)
                break; /* out of memory */
        } else if (pthread_cond_timedwait(&s->given_back, &s->lock, &deadline) == ETIMEDOUT) {
            timed_out = true;
            break;
        }
    }
    pthread_mutex_unlock(&s->lock);
    if (s->wait)
        deta_histogram_observe(s->wait, seconds_since(&t0));
    if (timed_out && s->timeouts)
        deta_counter_inc(s->timeouts);
    return db;
}

void deta_db_shared_give(deta_db_shared_t *s, deta_db_t *db) {
    if (!db)
        return;
    pthread_mutex_lock(&s->lock);
    s->idle[s->nfree++] = db;
    pthread_cond_signal(&s->given_back);
    pthread_mutex_unlock(&s->lock);
}

int deta_db_shared_opened(deta_db_shared_t *s) {
    pthread_mutex_lock(&s->lock);
    int n = s->opened;
    pthread_mutex_unlock(&s->lock);
    return n;
}

void deta_db_shared_free(deta_db_shared_t *s) {
    if (!s)
        return;
    for (int i = 0; i < s->opened; i++)
        deta_db_free(s->all[i]);
    pthread_cond_destroy(&s->given_back);
    pthread_mutex_destroy(&s->lock);
    free(s->idle);
    free(s->all);
    free(s);
}
