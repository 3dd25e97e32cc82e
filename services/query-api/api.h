/*
 * api.h - query-api's REST handlers: GET /api/orders/{orderId}, GET /api/orders,
 * GET /api/orders/{orderId}/events and GET /api/stats.
 */
#ifndef QUERY_API_H
#define QUERY_API_H

#include "deta/service.h"
#include "read_model.h"

typedef struct query_api query_api_t;

query_api_t *query_api_new(deta_service_t *svc, read_model_t *rm);
void query_api_free(query_api_t *api);
/* Adds the routes, and the readModel check to the health report. */
deta_err_t query_api_mount(query_api_t *api, char *errstr, size_t errsize);

#endif
