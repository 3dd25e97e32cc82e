/*
 * main.c - order-service: takes orders and cancel requests over REST and
 * announces them on raw.order-events through its outbox; follows its orders'
 * status and their cancel's verdicts on the other raw topics. This file only
 * wires.
 *
 * Its settings (ORDER_IDEMPOTENCY_TTL_HOURS) are read in settings.c; a bad value
 * stops the service at start (exit status 2). Idempotency keys older than the TTL
 * are purged by libdeta's retention purge (deta/retention.h) on the service's
 * main loop, which the service frees last.
 */
#include <stdio.h>

#include "api.h"
#include "deta/log.h"
#include "deta/retention.h"
#include "deta/openapi.h"
#include "deta/service.h"
#include "deta_services.h"
#include "settings.h"
#include "events.h"
#include "store.h"

static const deta_service_def_t self = DETA_SERVICE_ORDER_SERVICE;

/* The keys table's created_at is indexed (store.c's migrations). */
static deta_retention_t *key_purger(deta_service_t *svc, const order_settings_t *settings,
                                    char *errstr, size_t errsize) {
    const deta_retention_spec_t spec = {
        .table = "idempotency_keys",
        .column = "created_at",
        .keep_s = settings->idempotency_ttl_hours * 3600,
        .what = "idempotency keys",
        .metric = "order_idempotency_keys_purged_total",
        .help = "Idempotency keys deleted after ORDER_IDEMPOTENCY_TTL_HOURS",
    };
    return deta_retention_new(&spec, deta_service_metrics(svc), errstr, errsize);
}

static deta_err_t schedule_purge(deta_service_t *svc, deta_retention_t *purger, char *errstr,
                                 size_t errsize) {
    if (deta_service_add_task(svc, deta_retention_run, purger))
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
    deta_retention_t *purger = key_purger(svc, &settings, err, sizeof err);
    if (purger && deta_service_adopt(svc, purger, deta_retention_free))
        purger = NULL; /* freed by the refusal */
    order_api_t *api = order_api_new(svc);
    order_events_t *events = order_events_new(svc);
    int status = 1;
    if (!api || !purger || !events)
        DETA_ERROR("out of memory");
    else if (deta_service_migrate(svc, "order-service", order_migrations, order_migrations_count,
                                  err, sizeof err) ||
             deta_service_use_outbox(svc, err, sizeof err) ||
             order_events_subscribe(events, (int)settings.batch_wait_ms, err, sizeof err) ||
             deta_service_openapi(svc, &deta_openapi, err, sizeof err) ||
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
