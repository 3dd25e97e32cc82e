/*
 * main.c - inventory-service: holds stock for orders (raw.order-events), settles
 * it when their payments succeed or fail (raw.payment-events), releases holds
 * whose payment never came, and announces the outcome on raw.inventory-events
 * through its outbox. This file only wires; the sweeper thread is started here
 * and stopped before the service is freed, since it uses the service's pool.
 *
 * The catalog (INVENTORY_CATALOG, "itemId:units,...") is seeded at every start
 * with items that do not exist yet, so a restart never resets stock. It and the
 * holds' INVENTORY_HOLD_TTL_S and INVENTORY_HOLD_GRACE_S are read in settings.c;
 * a bad value of any of them stops the service at start (exit status 2).
 */
#include <stdatomic.h>
#include <stdio.h>

#include "api.h"
#include "deta/log.h"
#include "deta/openapi.h"
#include "deta/service.h"
#include "deta_services.h"
#include "domain.h"
#include "events.h"
#include "settings.h"
#include "store.h"
#include "sweeper.h"

static deta_err_t seed_catalog(deta_service_t *svc, const inv_catalog_t *catalog, char *errstr,
                               size_t errsize) {
    long inserted = 0;
    deta_db_t *db = deta_db_pool_get(deta_service_db(svc));
    deta_err_t err =
        db ? inv_store_seed(db, catalog, &inserted, errstr, errsize) : DETA_ERR_INTERNAL;
    if (!err)
        DETA_INFO("catalog of %zu item(s) seeded: %ld new", catalog->n, inserted);
    return err;
}

static const deta_service_def_t self = DETA_SERVICE_INVENTORY_SERVICE;

int main(void) {
    char err[512] = "";
    deta_service_t *svc = deta_service_new(&self, err, sizeof err);
    if (!svc) {
        fprintf(stderr, "inventory-service: %s\n", err);
        return 2;
    }
    inv_catalog_t catalog = {0};
    inv_settings_t settings;
    if (inv_settings_load(&settings, &catalog, err, sizeof err)) {
        DETA_ERROR("bad configuration: %s", err);
        deta_service_free(svc);
        return 2;
    }
    inv_api_t *api = inv_api_new(svc);
    inv_events_t *events = inv_events_new(svc, &settings);
    inv_sweeper_t *sweeper = events ? inv_sweeper_new(svc, events, &settings) : NULL;
    int status = 1;
    if (!api || !events || !sweeper)
        DETA_ERROR("out of memory");
    else if (deta_service_migrate(svc, "inventory-service", inv_migrations,
                                  inv_migrations_count, err, sizeof err) ||
             seed_catalog(svc, &catalog, err, sizeof err) ||
             deta_service_use_outbox(svc, err, sizeof err) ||
             deta_service_openapi(svc, &deta_openapi, err, sizeof err) ||
             inv_api_mount(api, err, sizeof err) ||
             inv_events_subscribe(events, err, sizeof err) ||
             inv_sweeper_start(sweeper, err, sizeof err))
        DETA_ERROR("cannot start: %s", err);
    else
        status = deta_service_run(svc);
    atomic_store(deta_service_stopping(svc), true);
    inv_sweeper_stop(sweeper);
    inv_catalog_clear(&catalog);
    deta_service_free(svc);
    inv_sweeper_free(sweeper);
    inv_events_free(events);
    inv_api_free(api);
    return status;
}
