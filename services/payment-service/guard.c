/*
 * guard.c - the Redis layers of payment idempotency (see guard.h).
 *
 * Design. Redis here is an accelerator and a fence, never the source of truth:
 * the marker spares a duplicate the database round trips, and the lock keeps two
 * consumers from charging one order at the same moment. Both may be lost (Redis
 * down, restarted, evicted) without a payment being doubled, because the payments
 * table's unique keys decide in the end. So a Redis failure is never an error for
 * an event: the call reports GUARD_DOWN, the caller skips the layer, and the
 * service is "degraded" - said once per transition in the log (warn when it
 * starts, info when it ends), by the gauge payment_redis_degraded and by the
 * optional health component "redis".
 *
 * Each thread (consumer workers, HTTP handlers for health) has its own Redis
 * connection from a deta_redis_pool, as with Postgres. The degraded flag is an
 * atomic shared by all of them.
 */
#include "guard.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "deta/log.h"
#include "deta/redis.h"
#include "domain.h"

struct payment_guard {
    deta_redis_pool_t *pool;
    atomic_bool degraded;
    deta_gauge_t *degraded_gauge;
};

payment_guard_t *payment_guard_new(const deta_config_t *cfg, deta_metrics_t *metrics) {
    payment_guard_t *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    g->pool = deta_redis_pool_new(cfg);
    if (!g->pool) {
        free(g);
        return NULL;
    }
    atomic_init(&g->degraded, false);
    g->degraded_gauge = deta_gauge(metrics, "payment_redis_degraded",
                                   "1 while Redis is unreachable and payments rely on Postgres "
                                   "alone for idempotency",
                                   NULL);
    deta_gauge_set(g->degraded_gauge, 0);
    return g;
}

void payment_guard_free(payment_guard_t *g) {
    if (!g)
        return;
    deta_redis_pool_free(g->pool);
    free(g);
}

bool payment_guard_degraded(const payment_guard_t *g) { return atomic_load(&g->degraded); }

/* Records how Redis answered; logs only when that changes. */
static void note_redis(payment_guard_t *g, bool up, const char *why) {
    bool was_degraded = atomic_exchange(&g->degraded, !up);
    deta_gauge_set(g->degraded_gauge, up ? 0 : 1);
    if (!up && !was_degraded)
        DETA_WARN("Redis unavailable (%s): payments go on without lock and dedup marker; "
                  "Postgres's unique keys keep them exactly-once",
                  why);
    else if (up && was_degraded)
        DETA_INFO("Redis is back: payment lock and dedup marker in use again");
}

/* The calling thread's connection; NULL (and degraded) only when out of memory. */
static deta_redis_t *redis_of_thread(payment_guard_t *g) {
    deta_redis_t *r = deta_redis_pool_get(g->pool);
    if (!r)
        note_redis(g, false, "out of memory");
    return r;
}

static guard_result_t outcome(payment_guard_t *g, deta_err_t err, const char *why) {
    if (err == DETA_OK || err == DETA_ERR_NOT_FOUND) {
        note_redis(g, true, NULL);
        return GUARD_OK;
    }
    note_redis(g, false, why);
    return GUARD_DOWN;
}

guard_result_t payment_guard_seen(payment_guard_t *g, const char *event_id) {
    deta_redis_t *r = redis_of_thread(g);
    if (!r)
        return GUARD_DOWN;
    char key[PAYMENT_KEY_MAX], value[128], why[256] = "";
    payment_dedup_key(key, event_id);
    deta_err_t err = deta_redis_get(r, key, value, sizeof value, why, sizeof why);
    if (err == DETA_ERR_INVALID) /* a value longer than ours: still a marker */
        err = DETA_OK;
    guard_result_t res = outcome(g, err, why);
    return res == GUARD_OK && err == DETA_OK ? GUARD_HIT : res;
}

guard_result_t payment_guard_lock(payment_guard_t *g, const char *order_id, const char *token) {
    deta_redis_t *r = redis_of_thread(g);
    if (!r)
        return GUARD_DOWN;
    char key[PAYMENT_KEY_MAX], why[256] = "";
    payment_lock_key(key, order_id);
    bool taken = false;
    deta_err_t err = deta_redis_set_nx(r, key, token, PAYMENT_LOCK_TTL_MS, &taken, why, sizeof why);
    guard_result_t res = outcome(g, err, why);
    return res == GUARD_OK && !taken ? GUARD_HIT : res;
}

guard_result_t payment_guard_mark(payment_guard_t *g, const char *event_id, const char *value) {
    deta_redis_t *r = redis_of_thread(g);
    if (!r)
        return GUARD_DOWN;
    char key[PAYMENT_KEY_MAX], why[256] = "";
    payment_dedup_key(key, event_id);
    return outcome(g, deta_redis_set(r, key, value, PAYMENT_DEDUP_TTL_MS, why, sizeof why), why);
}

guard_result_t payment_guard_unlock(payment_guard_t *g, const char *order_id, const char *token) {
    deta_redis_t *r = redis_of_thread(g);
    if (!r)
        return GUARD_DOWN;
    char key[PAYMENT_KEY_MAX], why[256] = "";
    payment_lock_key(key, order_id);
    bool deleted = false;
    deta_err_t err = deta_redis_del_if_equal(r, key, token, &deleted, why, sizeof why);
    if (err == DETA_OK && !deleted)
        deta_log(DETA_LOG_WARN, order_id, NULL,
                 "payment lock had expired or changed owner before release; left alone");
    return outcome(g, err, why);
}

bool payment_guard_check(void *guard, char *detail, size_t detailsize) {
    payment_guard_t *g = guard;
    deta_redis_t *r = redis_of_thread(g);
    if (!r) {
        snprintf(detail, detailsize, "out of memory");
        return false;
    }
    bool up = deta_redis_ping(r, detail, detailsize);
    note_redis(g, up, detail);
    return up;
}
