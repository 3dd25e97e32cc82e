/*
 * main.c - order-service: takes orders and cancel requests over REST and
 * announces them on raw.order-events through its outbox; follows its orders'
 * status and their cancel's verdicts on the other raw topics. This file only
 * wires.
 *
 * Its settings (ORDER_IDEMPOTENCY_TTL_HOURS) are read in settings.c; a bad value
 * stops the service at start (exit status 2). The purge of old idempotency keys
 * runs on the service's main loop (purger.c), which the service frees last.
 */
#include <stdio.h>

#include "api.h"
#include "deta/log.h"
#include "deta/service.h"
#include "deta_services.h"
#include "purger.h"
#include "settings.h"
#include "events.h"
#include "store.h"

static const deta_service_def_t self = DETA_SERVICE_ORDER_SERVICE;

static deta_err_t schedule_purge(deta_service_t *svc, order_purger_t *purger, char *errstr,
                                 size_t errsize) {
    if (deta_service_add_task(svc, order_purger_run, purger))
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "cannot schedule the key purge");
    return DETA_OK;
}

int main(void) {
    char err[512] = "";
    deta_service_t *svc = deta_service_new(&self, err, sizeof err);
    if (!svc) {
        fprintf(stderr, "order-service: %s\n", err);
        return 2;
    }
    order_settings_t settings;
    if (order_settings_load(&settings, err, sizeof err)) {
        DETA_ERROR("bad configuration: %s", err);
        deta_service_free(svc);
        return 2;
    }
    order_purger_t *purger = order_purger_new(svc, &settings);
    if (purger && deta_service_adopt(svc, purger, order_purger_free))
        purger = NULL; /* freed by the refusal */
    order_api_t *api = order_api_new(svc);
    order_events_t *events = order_events_new(svc);
    int status = 1;
    if (!api || !purger || !events)
        DETA_ERROR("out of memory");
    else if (deta_service_migrate(svc, "order-service", order_migrations, order_migrations_count,
                                  err, sizeof err) ||
             deta_service_use_outbox(svc, err, sizeof err) ||
             order_events_subscribe(events, err, sizeof err) ||
             order_api_mount(api, err, sizeof err) ||
             schedule_purge(svc, purger, err, sizeof err))
        DETA_ERROR("cannot start: %s", err);
    else
        status = deta_service_run(svc);
    deta_service_free(svc);
    order_events_free(events);
    order_api_free(api);
    return status;
}
