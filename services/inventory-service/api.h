/*
 * api.h - inventory-service's REST handlers: GET /api/inventory,
 * GET /api/inventory/{itemId}, and the admin's PUT (versioned) and PATCH
 * (relative, stop sales) of /api/inventory/{itemId}.
 */
#ifndef INVENTORY_API_H
#define INVENTORY_API_H

#include "deta/service.h"

typedef struct inv_api inv_api_t;

inv_api_t *inv_api_new(deta_service_t *svc);
void inv_api_free(inv_api_t *api);
deta_err_t inv_api_mount(inv_api_t *api, char *errstr, size_t errsize);

#endif
