/*
 * main.c - order-service: takes orders and cancel requests over REST and
 * announces them on raw.order-events through its outbox; follows its orders'
 * status and their cancel's verdicts on the other raw topics. This file only
 * wires.
 */
#include <stdio.h>

#include "api.h"
#include "deta/log.h"
#include "deta/service.h"
#include "deta_services.h"
#include "events.h"
#include "store.h"

static const deta_service_def_t self = DETA_SERVICE_ORDER_SERVICE;

int main(void) {
    char err[512] = "";
    deta_service_t *svc = deta_service_new(&self, err, sizeof err);
    if (!svc) {
        fprintf(stderr, "order-service: %s\n", err);
        return 2;
    }
    order_api_t *api = order_api_new(svc);
    order_events_t *events = order_events_new(svc);
    int status = 1;
    if (!api || !events)
        DETA_ERROR("out of memory");
    else if (deta_service_migrate(svc, "order-service", order_migrations, order_migrations_count,
                                  err, sizeof err) ||
             deta_service_use_outbox(svc, err, sizeof err) ||
             order_events_subscribe(events, err, sizeof err) ||
             order_api_mount(api, err, sizeof err))
        DETA_ERROR("cannot start: %s", err);
    else
        status = deta_service_run(svc);
    deta_service_free(svc);
    order_events_free(events);
    order_api_free(api);
    return status;
}
