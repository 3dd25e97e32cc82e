/*
 * api.c - inventory-service's REST handlers.
 *
 * Reading the stock is for everyone; PUT is the operators' (and the tests') way to
 * set an item's available count, creating the item when it is new (201) or
 * updating it (200). PUT never touches held or sold: those belong to
 * reservations, and a reservation's release or sale must find its units where it
 * left them. A malformed itemId in a path is 400 naming itemId; a well-formed
 * unknown one is 404. A database that is down is 503: the request may be retried.
 */
#include "api.h"

#include <stdlib.h>

#include "deta/log.h"
#include "domain.h"
#include "store.h"

struct inv_api {
    deta_service_t *svc;
};

inv_api_t *inv_api_new(deta_service_t *svc) {
    inv_api_t *api = calloc(1, sizeof *api);
    if (api)
        api->svc = svc;
    return api;
}

void inv_api_free(inv_api_t *api) { free(api); }

static void answer_store_error(deta_http_resp_t *resp, deta_err_t err, const char *why) {
    if (err == DETA_ERR_TRANSIENT)
        deta_http_resp_error(resp, 503, NULL, "database unavailable, retry later");
    else
        deta_http_resp_error(resp, 500, NULL, "internal error");
    DETA_ERROR("inventory store: %s: %s", deta_err_name(err), why);
}

static deta_db_t *db_of(inv_api_t *api) { return deta_db_pool_get(deta_service_db(api->svc)); }

/* The path's itemId, or NULL after answering 400. */
static const char *item_id_of(const deta_http_req_t *req, deta_http_resp_t *resp) {
    const char *id = deta_http_param(req, "itemId");
    if (inv_item_id_valid(id))
        return id;
    deta_http_resp_error(resp, 400, "itemId",
                         "itemId must be 1 to 64 of A-Z a-z 0-9 . _ ~ -");
    return NULL;
}

static void handle_list(const deta_http_req_t *req, deta_http_resp_t *resp, void *opaque) {
    (void)req;
    inv_api_t *api = opaque;
    char why[256] = "";
    json_t *items = NULL;
    deta_db_t *db = db_of(api);
    deta_err_t err = db ? inv_store_list(db, &items, why, sizeof why) : DETA_ERR_INTERNAL;
    if (err)
        answer_store_error(resp, err, why);
    else
        deta_http_resp_json(resp, 200, items);
}

static void handle_get(const deta_http_req_t *req, deta_http_resp_t *resp, void *opaque) {
    inv_api_t *api = opaque;
    const char *id = item_id_of(req, resp);
    if (!id)
        return;
    char why[256] = "";
    json_t *item = NULL;
    deta_db_t *db = db_of(api);
    deta_err_t err = db ? inv_store_get(db, id, &item, why, sizeof why) : DETA_ERR_INTERNAL;
    if (err == DETA_ERR_NOT_FOUND)
        deta_http_resp_error(resp, 404, "itemId", "no item with id %s", id);
    else if (err)
        answer_store_error(resp, err, why);
    else
        deta_http_resp_json(resp, 200, item);
}

static void handle_put(const deta_http_req_t *req, deta_http_resp_t *resp, void *opaque) {
    inv_api_t *api = opaque;
    const char *id = item_id_of(req, resp);
    if (!id)
        return;
    inv_stock_update_t u;
    inv_violation_t v;
    if (inv_stock_update_from_request(req->json, &u, &v) != DETA_OK) {
        deta_http_resp_error(resp, 400, v.field, "%s %s", v.field, v.message);
        return;
    }
    char why[256] = "";
    json_t *item = NULL;
    bool created = false;
    deta_db_t *db = db_of(api);
    deta_err_t err = db ? inv_store_set_available(db, id, &u, &created, &item, why, sizeof why)
                        : DETA_ERR_INTERNAL;
    if (err) {
        answer_store_error(resp, err, why);
        return;
    }
    DETA_INFO("stock of %s set to %lld available%s", id, (long long)u.available,
              created ? " (new item)" : "");
    deta_http_resp_json(resp, created ? 201 : 200, item);
}

deta_err_t inv_api_mount(inv_api_t *api, char *errstr, size_t errsize) {
    deta_http_server_t *http = deta_service_http(api->svc);
    if (deta_http_route(http, "GET", "/api/inventory", 0, handle_list, api) ||
        deta_http_route(http, "GET", "/api/inventory/{itemId}", 0, handle_get, api) ||
        deta_http_route(http, "PUT", "/api/inventory/{itemId}", DETA_HTTP_JSON_BODY, handle_put,
                        api))
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "cannot register routes");
    return DETA_OK;
}
