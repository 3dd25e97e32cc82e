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
 * Round trips. A payment's four commands go in two pipelines of independent
 * single-key commands (deta_redis_pipeline): enter = GET marker + SET NX PX
 * lock, leave = SET PX marker + compare-and-delete of the lock. Taking the lock
 * before knowing whether the marker exists costs duplicates one more trip (to
 * give the lock back), and saves every new payment one. The commands of a
 * pipeline are not atomic together, and need not be: each is what it was as a
 * single command, in the same order. A multi-key script would do both in one
 * step too, but its keys (an event's and an order's) would sit in different
 * slots of a Redis Cluster.
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

/* Redis answered op: it ran, or it is a GET whose value was found (a marker
 * longer than our buffer is still a marker). */
static bool op_answered(const deta_redis_op_t *op) {
    return op->err == DETA_OK || (op->kind == DETA_REDIS_GET && op->found);
}

/* Notes whether Redis answered every op of a pipeline; true when it did. */
static bool note_answers(payment_guard_t *g, const deta_redis_op_t *ops, size_t n,
                         const char *why) {
    for (size_t i = 0; i < n; i++) {
        if (!op_answered(&ops[i])) {
            note_redis(g, false, why);
            return false;
        }
    }
    note_redis(g, true, NULL);
    return true;
}

/* The verdict of steps 1 and 2 from their two replies. A marker that was read
 * decides even when the lock's reply was lost. */
static guard_entry_t entry_of(const deta_redis_op_t *marker, const deta_redis_op_t *lock,
                              bool answered) {
    if (marker->found)
        return GUARD_DUPLICATE;
    if (!answered)
        return GUARD_DOWN;
    return lock->set ? GUARD_LOCKED : GUARD_BUSY;
}

guard_entry_t payment_guard_enter(payment_guard_t *g, const char *event_id, const char *order_id,
                                  const char *token) {
    deta_redis_t *r = redis_of_thread(g);
    if (!r)
        return GUARD_DOWN;
    char marker_key[PAYMENT_KEY_MAX], lock_key[PAYMENT_KEY_MAX], marker[128], why[256] = "";
    payment_dedup_key(marker_key, event_id);
    payment_lock_key(lock_key, order_id);
    deta_redis_op_t ops[2] = {
        {.kind = DETA_REDIS_GET, .key = marker_key, .buf = marker, .bufsize = sizeof marker},
        {.kind = DETA_REDIS_SET_NX, .key = lock_key, .value = token,
         .ttl_ms = PAYMENT_LOCK_TTL_MS},
    };
    deta_redis_pipeline(r, ops, 2, why, sizeof why);
    guard_entry_t entry = entry_of(&ops[0], &ops[1], note_answers(g, ops, 2, why));
    /* a lock taken for a payment that will not run is given back at once */
    if (ops[1].set && entry != GUARD_LOCKED)
        payment_guard_leave(g, event_id, order_id, token, false);
    return entry;
}

static void warn_if_lock_lost(const deta_redis_op_t *release, const char *order_id) {
    if (release->err == DETA_OK && !release->deleted)
        deta_log(DETA_LOG_WARN, order_id, NULL,
                 "payment lock had expired or changed owner before release; left alone");
}

void payment_guard_leave(payment_guard_t *g, const char *event_id, const char *order_id,
                         const char *token, bool mark) {
    deta_redis_t *r = redis_of_thread(g);
    if (!r)
        return;
    char marker_key[PAYMENT_KEY_MAX], lock_key[PAYMENT_KEY_MAX], why[256] = "";
    payment_dedup_key(marker_key, event_id);
    payment_lock_key(lock_key, order_id);
    deta_redis_op_t ops[2] = {
        {.kind = DETA_REDIS_SET, .key = marker_key, .value = order_id,
         .ttl_ms = PAYMENT_DEDUP_TTL_MS},
        {.kind = DETA_REDIS_DEL_IF_EQUAL, .key = lock_key, .value = token},
    };
    deta_redis_op_t *first = mark ? &ops[0] : &ops[1];
    size_t n = mark ? 2 : 1;
    deta_redis_pipeline(r, first, n, why, sizeof why);
    warn_if_lock_lost(&ops[1], order_id);
    note_answers(g, first, n, why);
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
