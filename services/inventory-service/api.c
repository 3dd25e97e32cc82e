/*
 * api.c - inventory-service's REST handlers.
 *
 * Reading the stock is for everyone (unless HTTP_READS_NEED_AUTH closes the reads);
 * PUT and PATCH are the operators' way to change it: operator routes
 * (DETA_HTTP_OPERATOR), which libdeta's HTTP server lets through only with the
 * operator token (deta/auth.h), so no handler here runs without it (rules in domain.h, inv_stock_apply). PUT sets an
 * item's available count, creating the item when it is new (201) or, with the
 * version the client read (expectedVersion), updating it (200): reservations
 * move available all the time, so a count computed from an older read must not
 * overwrite them (409 with the current state; 428 without a version). PATCH
 * adds a delta to whatever is there, and sets sellable (stop or resume sales)
 * or the name. Neither touches held or sold: those belong to reservations, and
 * a reservation's release or sale must find its units where it left them. A
 * malformed itemId in a path is 400 naming itemId; a well-formed unknown one is
 * 404. A database that is down is 503: the request may be retried.
 */
#include "api.h"

#include <stdio.h>
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
        deta_http_resp_store_error(resp, err, "database", why);
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
        deta_http_resp_store_error(resp, err, "database", why);
    else
        deta_http_resp_json(resp, 200, item);
}

/* A refused change: the usual error body plus the item as it is now. */
static void answer_refusal(deta_http_resp_t *resp, int status, const char *error,
                           const inv_violation_t *v, json_t *current) {
    char message[sizeof v->field + sizeof v->message + 2];
    snprintf(message, sizeof message, "%s %s", v->field, v->message);
    deta_http_resp_json(resp, status,
                        json_pack("{s:i, s:s, s:s, s:s, s:o}", "status", status, "error", error,
                                  "field", v->field, "message", message, "current",
                                  current ? current : json_null()));
}

static void change(inv_api_t *api, const char *id, const inv_stock_change_t *c,
                   deta_http_resp_t *resp) {
    char why[256] = "";
    json_t *item = NULL;
    inv_change_outcome_t outcome = INV_CHANGE_SAME;
    inv_violation_t v = {{0}, {0}};
    deta_db_t *db = db_of(api);
    deta_err_t err = db ? inv_store_change(db, id, c, &outcome, &v, &item, why, sizeof why)
                        : DETA_ERR_INTERNAL;
    if (err) {
        deta_http_resp_store_error(resp, err, "database", why);
        return;
    }
    switch (outcome) {
    case INV_CHANGE_CREATE:
    case INV_CHANGE_UPDATE:
        DETA_INFO("stock of %s %s: available %lld, sellable %s, version %lld", id,
                  outcome == INV_CHANGE_CREATE ? "created" : "changed",
                  (long long)json_integer_value(json_object_get(item, "available")),
                  json_is_true(json_object_get(item, "sellable")) ? "yes" : "no",
                  (long long)json_integer_value(json_object_get(item, "version")));
        deta_http_resp_json(resp, outcome == INV_CHANGE_CREATE ? 201 : 200, item);
        return;
    case INV_CHANGE_SAME:
        deta_http_resp_json(resp, 200, item);
        return;
    case INV_CHANGE_NOT_FOUND:
        json_decref(item);
        deta_http_resp_error(resp, 404, "itemId", "no item with id %s", id);
        return;
    case INV_CHANGE_VERSION_REQUIRED:
        answer_refusal(resp, 428, "Precondition Required", &v, item);
        return;
    case INV_CHANGE_STALE:
    case INV_CHANGE_OUT_OF_RANGE:
        answer_refusal(resp, 409, "Conflict", &v, item);
        return;
    }
}

static void handle_change(const deta_http_req_t *req, deta_http_resp_t *resp, void *opaque,
                          bool relative) {
    const char *id = item_id_of(req, resp);
    if (!id)
        return;
    inv_stock_change_t c;
    inv_violation_t v;
    deta_err_t err = relative ? inv_stock_patch_from_request(req->json, &c, &v)
                              : inv_stock_put_from_request(req->json, &c, &v);
    if (err != DETA_OK) {
        deta_http_resp_error(resp, 400, v.field, "%s %s", v.field, v.message);
        return;
    }
    change(opaque, id, &c, resp);
}

static void handle_put(const deta_http_req_t *req, deta_http_resp_t *resp, void *opaque) {
    handle_change(req, resp, opaque, false);
}

static void handle_patch(const deta_http_req_t *req, deta_http_resp_t *resp, void *opaque) {
    handle_change(req, resp, opaque, true);
}

deta_err_t inv_api_mount(inv_api_t *api, char *errstr, size_t errsize) {
    deta_http_server_t *http = deta_service_http(api->svc);
    if (deta_http_route(http, "GET", "/api/inventory", 0, handle_list, api) ||
        deta_http_route(http, "GET", "/api/inventory/{itemId}", 0, handle_get, api) ||
        deta_http_route(http, "PUT", "/api/inventory/{itemId}",
                        DETA_HTTP_JSON_BODY | DETA_HTTP_OPERATOR, handle_put, api) ||
        deta_http_route(http, "PATCH", "/api/inventory/{itemId}",
                        DETA_HTTP_JSON_BODY | DETA_HTTP_OPERATOR, handle_patch, api))
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "cannot register routes");
    return DETA_OK;
}
