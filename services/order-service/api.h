/*
 * api.h - order-service's REST handlers: POST /api/orders, GET /api/orders/{orderId}.
 */
#ifndef ORDER_API_H
#define ORDER_API_H

#include "deta/service.h"

typedef struct order_api order_api_t;

order_api_t *order_api_new(deta_service_t *svc);
void order_api_free(order_api_t *api);
deta_err_t order_api_mount(order_api_t *api, char *errstr, size_t errsize);

#endif
