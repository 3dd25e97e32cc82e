/*
 * guard.h - payment-service's Redis layers of idempotency: the marker of
 * processed events (payment:dedup:{eventId}, 24 h) and the per-order lock
 * (payment-lock:order:{orderId}, 30 s, released by its owner only), plus the
 * degraded mode the service runs in while Redis is unreachable.
 *
 * Two calls per payment, one Redis round trip each (hiredis pipelining): enter
 * looks for the marker and takes the lock together (steps 1 and 2 of
 * events.c); leave sets the marker and releases the lock together (steps 4
 * and 5). A Redis that does not answer is never an error: the answer is
 * GUARD_DOWN and the caller goes on without these layers (Postgres's unique
 * keys still keep payments exactly-once).
 */
#ifndef PAYMENT_GUARD_H
#define PAYMENT_GUARD_H

#include <stdbool.h>
#include <stddef.h>

#include "deta/config.h"
#include "deta/metrics.h"

typedef struct payment_guard payment_guard_t;

typedef enum guard_entry {
    GUARD_LOCKED,    /* no marker, and the order's lock is now ours: leave() later */
    GUARD_DUPLICATE, /* the event's marker exists: processed before (no lock kept) */
    GUARD_BUSY,      /* no marker, and another holds the order's lock */
    GUARD_DOWN,      /* Redis did not answer: go on without lock and marker */
} guard_entry_t;

/* metrics: the gauge payment_redis_degraded (1 while Redis is unreachable). */
payment_guard_t *payment_guard_new(const deta_config_t *cfg, deta_metrics_t *metrics);
void payment_guard_free(payment_guard_t *g);

/* Steps 1 and 2 in one round trip: GET the event's marker and SET NX PX the
 * order's lock with token. When the marker is there and the lock was taken in
 * the same trip, the lock is released (a second trip, for duplicates only)
 * before answering GUARD_DUPLICATE. */
guard_entry_t payment_guard_enter(payment_guard_t *g, const char *event_id, const char *order_id,
                                  const char *token);
/* Steps 4 and 5 in one round trip, after GUARD_LOCKED: when mark (the payment
 * is committed, or was found already recorded), remembers the event for 24 h
 * (the marker holds order_id); always releases the lock if token still owns it
 * (compare-and-delete), warning when it had expired or changed owner. */
void payment_guard_leave(payment_guard_t *g, const char *event_id, const char *order_id,
                         const char *token, bool mark);

/* Health check (deta_health_check_fn): PING; also updates the degraded state. */
bool payment_guard_check(void *guard, char *detail, size_t detailsize);
bool payment_guard_degraded(const payment_guard_t *g);

#endif
