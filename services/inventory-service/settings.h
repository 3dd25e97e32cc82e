/*
 * settings.h - inventory-service's own settings (env INVENTORY_*), read once at
 * start; their names, defaults and bounds are domain.h's:
 *
 *   INVENTORY_CATALOG       sku-1..sku-20 x 100000, sku-limited x 25: the stock
 *                           seeded at start, "itemId:units,..."
 *   INVENTORY_HOLD_TTL_S    900   held stock expires this long after its
 *                                 reservation (1..604800)
 *   INVENTORY_HOLD_GRACE_S  300   a hold still held this long after its expiry is
 *                                 released (0..86400)
 */
#ifndef INV_SETTINGS_H
#define INV_SETTINGS_H

#include <stddef.h>

#include "deta/err.h"
#include "domain.h"

/* Reads and validates the settings above into st and catalog. DETA_ERR_INVALID
 * with the variable's name in errstr when a value is malformed or out of range. */
deta_err_t inv_settings_load(inv_settings_t *st, inv_catalog_t *catalog, char *errstr,
                             size_t errsize);

#endif
