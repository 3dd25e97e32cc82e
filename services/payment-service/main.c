/*
 * main.c - payment-service: charges each order whose stock was reserved
 * (raw.inventory-events), exactly once, and announces the outcome on
 * raw.payment-events through its outbox. This file only wires.
 */
#include <stdio.h>

#include "api.h"
#include "deta/log.h"
#include "deta/openapi.h"
#include "deta/service.h"
#include "deta_services.h"
#include "events.h"
#include "guard.h"
#include "settings.h"
#include "store.h"

static deta_err_t wire(deta_service_t *svc, payment_guard_t *guard, payment_events_t *events,
                       payment_api_t *api, char *err, size_t errsize) {
    if (!guard || !events || !api)
        return deta_errf(DETA_ERR_INTERNAL, err, errsize, "out of memory");
    deta_health_add(deta_service_health(svc), "redis", false, payment_guard_check, guard);
    deta_err_t e;
    if ((e = deta_service_migrate(svc, "payment-service", payment_migrations,
                                  payment_migrations_count, err, errsize)) ||
        (e = deta_service_use_outbox(svc, err, errsize)) ||
        (e = deta_service_openapi(svc, &deta_openapi, err, errsize)) ||
        (e = payment_api_mount(api, err, errsize)))
        return e;
    return payment_events_subscribe(events, err, errsize);
}

static const deta_service_def_t self = DETA_SERVICE_PAYMENT_SERVICE;

int main(void) {
    char err[512] = "";
    payment_settings_t settings;
    if (payment_settings_load(&settings, err, sizeof err) != DETA_OK) {
        fprintf(stderr, "payment-service: %s\n", err);
        return 2;
    }
    deta_service_t *svc = deta_service_new(&self, err, sizeof err);
    if (!svc) {
        fprintf(stderr, "payment-service: %s\n", err);
        return 2;
    }
    payment_gateway_t *gateway =
        payment_gateway_new(&settings, deta_service_config(svc)->instance_id, err, sizeof err);
    if (!gateway) {
        fprintf(stderr, "payment-service: %s\n", err);
        deta_service_free(svc);
        return 2;
    }
    payment_guard_t *guard =
        payment_guard_new(deta_service_config(svc), deta_service_metrics(svc));
    payment_events_t *events = guard ? payment_events_new(svc, &settings, guard, gateway) : NULL;
    payment_api_t *api = payment_api_new(svc);
    int status = 1;
    if (wire(svc, guard, events, api, err, sizeof err) != DETA_OK)
        DETA_ERROR("cannot start: %s", err);
    else
        status = deta_service_run(svc);
    /* The service first: its threads use the guard's pool until they stop. */
    deta_service_free(svc);
    payment_events_free(events);
    payment_api_free(api);
    payment_guard_free(guard);
    payment_gateway_free(gateway);
    return status;
}
