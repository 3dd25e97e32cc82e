/*
 * api.c - delivery-service's REST handlers.
 *
 *   GET /api/deliveries/{orderId}  the order's delivery: driver (id and name),
 *                                  status, distance, instants and current ETA;
 *                                  400 naming orderId when it is not a UUID, 404
 *                                  when the order has no delivery (yet).
 *   GET /api/drivers               {"capacity":N,"drivers":[{driverId, name,
 *                                  activeDeliveries, available}]} by driverId.
 *
 * Postgres builds the JSON (store.c), which is passed through as it is. A
 * database that is down is 503: the request may be retried.
 */
#include "api.h"

#include <stdlib.h>

#include "deta/envelope.h"
#include "deta/log.h"
#include "store.h"

#define JSON_TYPE "application/json"

struct delivery_api {
    deta_service_t *svc;
    delivery_params_t params;
};

delivery_api_t *delivery_api_new(deta_service_t *svc, const delivery_params_t *params) {
    delivery_api_t *api = calloc(1, sizeof *api);
    if (!api)
        return NULL;
    api->svc = svc;
    api->params = *params;
    return api;
}

void delivery_api_free(delivery_api_t *api) { free(api); }

static void answer_json_text(deta_http_resp_t *resp, char *text) {
    deta_http_resp_text(resp, 200, JSON_TYPE, text);
    free(text);
}

static void handle_get_delivery(const deta_http_req_t *req, deta_http_resp_t *resp,
                                void *opaque) {
    delivery_api_t *api = opaque;
    const char *id = deta_http_param(req, "orderId");
    if (!id || !deta_uuid_valid(id)) {
        deta_http_resp_error(resp, 400, "orderId", "orderId must be a UUID");
        return;
    }
    char why[256] = "";
    char *json = NULL;
    deta_db_t *db = deta_db_pool_get(deta_service_db(api->svc));
    deta_err_t err = db ? delivery_store_get_json(db, id, &json, why, sizeof why)
                        : DETA_ERR_INTERNAL;
    if (err == DETA_ERR_NOT_FOUND)
        deta_http_resp_error(resp, 404, "orderId", "no delivery for order %s", id);
    else if (err)
        deta_http_resp_store_error(resp, err, "database", why);
    else
        answer_json_text(resp, json);
}

static void handle_list_drivers(const deta_http_req_t *req, deta_http_resp_t *resp,
                                void *opaque) {
    (void)req;
    delivery_api_t *api = opaque;
    char why[256] = "";
    char *json = NULL;
    deta_db_t *db = deta_db_pool_get(deta_service_db(api->svc));
    deta_err_t err = db ? delivery_store_drivers_json(db, api->params.capacity, &json, why,
                                                      sizeof why)
                        : DETA_ERR_INTERNAL;
    if (err)
        deta_http_resp_store_error(resp, err, "database", why);
    else
        answer_json_text(resp, json);
}

deta_err_t delivery_api_mount(delivery_api_t *api, char *errstr, size_t errsize) {
    deta_http_server_t *http = deta_service_http(api->svc);
    if (deta_http_route(http, "GET", "/api/deliveries/{orderId}", 0, handle_get_delivery, api) ||
        deta_http_route(http, "GET", "/api/drivers", 0, handle_list_drivers, api))
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "cannot register routes");
    return DETA_OK;
}
