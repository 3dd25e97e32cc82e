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

deta_err_t order_settings_load(order_settings_t *s, char *errstr, size_t errsize) {
    memset(s, 0, sizeof *s);
    return deta_config_int(ORDER_IDEMPOTENCY_TTL_VAR, ORDER_DEFAULT_IDEMPOTENCY_TTL_HOURS, 1,
                           ORDER_MAX_IDEMPOTENCY_TTL_HOURS, &s->idempotency_ttl_hours, errstr,
                           errsize);
}
