/*
 * settings.c - reads order-service's ORDER_* variables through deta_config (so
 * numbers are validated like the library's own).
 *
 * The TTL has no "for ever" (0): keys that were never purged would grow the
 * table without bound, and a client retries within minutes, not years.
 */
#include "settings.h"

#include <string.h>

#include "deta/config.h"
#include "deta/kafka.h"

deta_err_t order_settings_load(order_settings_t *s, char *errstr, size_t errsize) {
    memset(s, 0, sizeof *s);
    deta_err_t err = deta_config_int(ORDER_IDEMPOTENCY_TTL_VAR, ORDER_DEFAULT_IDEMPOTENCY_TTL_HOURS,
                                     1, ORDER_MAX_IDEMPOTENCY_TTL_HOURS,
                                     &s->idempotency_ttl_hours, errstr, errsize);
    if (err)
        return err;
    return deta_config_int(ORDER_BATCH_WAIT_VAR, ORDER_DEFAULT_BATCH_WAIT_MS, 0,
                           DETA_KAFKA_BATCH_WAIT_MAX_MS, &s->batch_wait_ms, errstr, errsize);
}
