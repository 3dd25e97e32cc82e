/*
 * main.c - order-service: takes orders over REST and announces them on
 * raw.order-events through its outbox. This file only wires.
 */
#include <stdio.h>

#include "api.h"
#include "deta/log.h"
#include "deta/service.h"
#include "deta_services.h"
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
    int status = 1;
    if (!api)
        DETA_ERROR("out of memory");
    else if (deta_service_migrate(svc, "order-service", order_migrations, order_migrations_count,
                                  err, sizeof err) ||
             deta_service_use_outbox(svc, err, sizeof err) ||
             order_api_mount(api, err, sizeof err))
        DETA_ERROR("cannot start: %s", err);
    else
        status = deta_service_run(svc);
    deta_service_free(svc);
    order_api_free(api);
    return status;
}
