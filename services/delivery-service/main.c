/*
 * main.c - delivery-service: assigns a driver when a payment is authorized, keeps
 * the ETA current while the delivery moves on (ASSIGNED -> PICKED_UP ->
 * DELIVERED) and announces every step on raw.delivery-events, and each new ETA
 * on raw.eta-events, through its outbox.
 * This file only wires; the ticker thread is started here and stopped before the
 * service is freed, since it uses the service's connection pool.
 */
#include <stdatomic.h>
#include <stdio.h>

#include "api.h"
#include "deta/log.h"
#include "deta/openapi.h"
#include "deta/service.h"
#include "deta_services.h"
#include "events.h"
#include "settings.h"
#include "store.h"
#include "ticker.h"

static deta_err_t prepare_database(deta_service_t *svc, const delivery_params_t *params,
                                   char *err, size_t errsize) {
    deta_err_t e = deta_service_migrate(svc, "delivery-service", delivery_migrations,
                                        delivery_migrations_count, err, errsize);
    if (!e)
        e = deta_service_use_outbox(svc, err, errsize);
    if (!e) {
        deta_db_t *db = deta_db_pool_get(deta_service_db(svc));
        e = db ? delivery_store_seed_drivers(db, params->drivers, err, errsize)
               : DETA_ERR_INTERNAL;
    }
    return e;
}

static const deta_service_def_t self = DETA_SERVICE_DELIVERY_SERVICE;

int main(void) {
    char err[512] = "";
    deta_service_t *svc = deta_service_new(&self, err, sizeof err);
    if (!svc) {
        fprintf(stderr, "delivery-service: %s\n", err);
        return 2;
    }
    delivery_params_t params;
    if (delivery_settings_load(&params, err, sizeof err) != DETA_OK) {
        DETA_ERROR("bad configuration: %s", err);
        deta_service_free(svc);
        return 2;
    }
    delivery_api_t *api = delivery_api_new(svc, &params);
    delivery_events_t *events = delivery_events_new(svc, &params);
    delivery_ticker_t *ticker = delivery_ticker_new(svc, &params);
    int status = 1;
    if (!api || !events || !ticker)
        DETA_ERROR("out of memory");
    else if (prepare_database(svc, &params, err, sizeof err) ||
             delivery_events_subscribe(events, err, sizeof err) ||
             deta_service_openapi(svc, &deta_openapi, err, sizeof err) ||
             delivery_api_mount(api, err, sizeof err) ||
             delivery_ticker_start(ticker, err, sizeof err))
        DETA_ERROR("cannot start: %s", err);
    else
        status = deta_service_run(svc);
    atomic_store(deta_service_stopping(svc), true);
    delivery_ticker_stop(ticker);
    deta_service_free(svc);
    delivery_ticker_free(ticker);
    delivery_events_free(events);
    delivery_api_free(api);
    return status;
}
