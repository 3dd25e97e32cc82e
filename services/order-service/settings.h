/*
 * settings.h - order-service's own settings (env ORDER_*), read once at start:
 *
 *   ORDER_IDEMPOTENCY_TTL_HOURS  24   an Idempotency-Key is kept this long after
 *                                     its order was created, then purged (1..8760)
 *   ORDER_BATCH_WAIT_MS         200   how long a consumer worker with fewer than a
 *                                     batch of events queued waits for more before it
 *                                     applies them in one transaction (0..1000; 0: never)
 */
#ifndef ORDER_SETTINGS_H
#define ORDER_SETTINGS_H

#include <stddef.h>

#include "deta/err.h"

#define ORDER_IDEMPOTENCY_TTL_VAR "ORDER_IDEMPOTENCY_TTL_HOURS"
#define ORDER_DEFAULT_IDEMPOTENCY_TTL_HOURS 24
#define ORDER_MAX_IDEMPOTENCY_TTL_HOURS 8760 /* a year */
#define ORDER_BATCH_WAIT_VAR "ORDER_BATCH_WAIT_MS"
#define ORDER_DEFAULT_BATCH_WAIT_MS 200

typedef struct order_settings {
    long idempotency_ttl_hours;
    long batch_wait_ms;
} order_settings_t;

/* Reads and validates the settings above into s. DETA_ERR_INVALID with the
 * variable's name in errstr when a value is malformed or out of range. */
deta_err_t order_settings_load(order_settings_t *s, char *errstr, size_t errsize);

#endif
