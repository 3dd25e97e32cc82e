/*
 * guard.h - payment-service's Redis layers of idempotency: the marker of
 * processed events (payment:dedup:{eventId}, 24 h) and the per-order lock
 * (payment-lock:order:{orderId}, 30 s, released by its owner only), plus the
 * degraded mode the service runs in while Redis is unreachable.
 *
 * Every call answers GUARD_OK, GUARD_HIT (the marker exists / the lock is someone
 * else's) or GUARD_DOWN (Redis did not answer: the caller goes on without this
 * layer; Postgres's unique key still keeps payments exactly-once).
 */
#ifndef PAYMENT_GUARD_H
#define PAYMENT_GUARD_H

#include <stdbool.h>
#include <stddef.h>

#include "deta/config.h"
#include "deta/metrics.h"

typedef struct payment_guard payment_guard_t;

typedef enum guard_result {
    GUARD_OK,
    GUARD_HIT,
    GUARD_DOWN,
} guard_result_t;

/* metrics: the gauge payment_redis_degraded (1 while Redis is unreachable). */
payment_guard_t *payment_guard_new(const deta_config_t *cfg, deta_metrics_t *metrics);
void payment_guard_free(payment_guard_t *g);

/* GUARD_HIT when the event's marker exists. */
guard_result_t payment_guard_seen(payment_guard_t *g, const char *event_id);
/* Takes the order's lock with token (OK), or finds it held by another (HIT). */
guard_result_t payment_guard_lock(payment_guard_t *g, const char *order_id, const char *token);
/* After the commit: remembers the event for 24 h. */
guard_result_t payment_guard_mark(payment_guard_t *g, const char *event_id, const char *value);
/* Releases the lock if token still owns it (compare-and-delete). */
guard_result_t payment_guard_unlock(payment_guard_t *g, const char *order_id, const char *token);

/* Health check (deta_health_check_fn): PING; also updates the degraded state. */
bool payment_guard_check(void *guard, char *detail, size_t detailsize);
bool payment_guard_degraded(const payment_guard_t *g);

#endif
