/*
 * api.h - payment-service's REST handler: GET /api/payments/{orderId}.
 */
#ifndef PAYMENT_API_H
#define PAYMENT_API_H

#include "deta/service.h"

typedef struct payment_api payment_api_t;

payment_api_t *payment_api_new(deta_service_t *svc);
void payment_api_free(payment_api_t *api);
deta_err_t payment_api_mount(payment_api_t *api, char *errstr, size_t errsize);

#endif
