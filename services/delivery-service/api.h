/*
 * api.h - delivery-service's REST handlers: GET /api/deliveries/{orderId} and
 * GET /api/drivers.
 */
#ifndef DELIVERY_API_H
#define DELIVERY_API_H

#include "deta/service.h"
#include "domain.h"

typedef struct delivery_api delivery_api_t;

/* params is copied. */
delivery_api_t *delivery_api_new(deta_service_t *svc, const delivery_params_t *params);
void delivery_api_free(delivery_api_t *api);
deta_err_t delivery_api_mount(delivery_api_t *api, char *errstr, size_t errsize);

#endif
