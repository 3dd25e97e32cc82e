/*
 * settings.c - reads inventory-service's INVENTORY_* variables through
 * deta_config (so numbers are validated like the library's own); the catalog's
 * text is parsed by domain.c, which reads no environment.
 */
#include "settings.h"

#include "deta/config.h"

deta_err_t inv_settings_load(inv_settings_t *st, inv_catalog_t *catalog, char *errstr,
                             size_t errsize) {
    deta_err_t err = deta_config_int(INV_HOLD_TTL_VAR, INV_DEFAULT_HOLD_TTL_S, 1,
                                     INV_MAX_HOLD_TTL_S, &st->hold_ttl_s, errstr, errsize);
    if (!err)
        err = deta_config_int(INV_HOLD_GRACE_VAR, INV_DEFAULT_HOLD_GRACE_S, 0,
                              INV_MAX_HOLD_GRACE_S, &st->hold_grace_s, errstr, errsize);
    if (!err)
        err = inv_catalog_parse(deta_config_str(INV_CATALOG_VAR, INV_DEFAULT_CATALOG), catalog,
                                errstr, errsize);
    return err;
}
