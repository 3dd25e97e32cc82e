/*
 * api.c - query-api's REST handlers: the read model, read only.
 *
 *   GET /api/orders/{orderId}          the order's view; 400 naming orderId when it
 *                                      is not a UUID, 404 when never heard of
 *   GET /api/orders?limit=&cursor=&status=&customerId=
 *                                      {"items":[...],"nextCursor":"..."|null}
 *   GET /api/orders/{orderId}/events   {"orderId":...,"events":[{eventId,
 *                                      eventType,topic,occurredAt,payload}]}
 *   GET /api/stats                     {"total":N,"byStatus":{...},"withoutStatus":n}
 *
 * The list is newest first by the instant the read model first heard of an order
 * (for an order that starts with order.created, its arrival), ties broken by
 * orderId; the order never changes once an order is listed, so following
 * nextCursor visits every order that existed when the walk began exactly once,
 * whatever state changes happen meanwhile. The cursor is opaque to clients
 * (base64url); a cursor from elsewhere is 400 naming "cursor". Input is checked
 * whole (domain.c) before the store is asked; a store that is away is 503.
 */
#include "api.h"

#include <stdlib.h>
#include <string.h>

#include "deta/log.h"

struct query_api {
    deta_service_t *svc;
    read_model_t *rm;
};

query_api_t *query_api_new(deta_service_t *svc, read_model_t *rm) {
    query_api_t *api = calloc(1, sizeof *api);
    if (!api)
        return NULL;
    api->svc = svc;
    api->rm = rm;
    return api;
}

void query_api_free(query_api_t *api) { free(api); }

/* The path's orderId, or NULL after answering 400. */
static const char *order_id_of(const deta_http_req_t *req, deta_http_resp_t *resp) {
    const char *id = deta_http_param(req, "orderId");
    if (!id || !deta_uuid_valid(id)) {
        deta_http_resp_error(resp, 400, "orderId", "orderId must be a UUID");
        return NULL;
    }
    return id;
}

static void handle_get(const deta_http_req_t *req, deta_http_resp_t *resp, void *opaque) {
    query_api_t *api = opaque;
    const char *id = order_id_of(req, resp);
    if (!id)
        return;
    char why[256] = "";
    query_view_t v;
    deta_err_t err = read_model_get(api->rm, id, &v, why, sizeof why);
    if (err == DETA_ERR_NOT_FOUND)
        deta_http_resp_error(resp, 404, "orderId", "no order with id %s", id);
    else if (err)
        deta_http_resp_store_error(resp, err, "read model", why);
    else
        deta_http_resp_json(resp, 200, query_view_to_json(&v));
}

static json_t *page_to_json(const query_page_t *page) {
    json_t *items = json_array();
    for (size_t i = 0; i < page->n; i++)
        json_array_append_new(items, query_view_to_json(&page->items[i]));
    json_t *next = json_null();
    if (page->more && page->n > 0) {
        const query_view_t *last = &page->items[page->n - 1];
        query_cursor_t c;
        char text[QUERY_CURSOR_MAX];
        memcpy(c.at, last->first_seen_at, sizeof c.at);
        memcpy(c.order_id, last->order_id, sizeof c.order_id);
        if (query_cursor_encode(&c, text, sizeof text)) {
            json_decref(next);
            next = json_string(text);
        }
    }
    return json_pack("{s:o, s:o}", "items", items, "nextCursor", next);
}

static void handle_list(const deta_http_req_t *req, deta_http_resp_t *resp, void *opaque) {
    query_api_t *api = opaque;
    query_list_params_t p;
    query_violation_t v;
    if (query_list_params_parse(deta_http_query(req, "limit"), deta_http_query(req, "cursor"),
                                deta_http_query(req, "status"),
                                deta_http_query(req, "customerId"), &p, &v) != DETA_OK) {
        deta_http_resp_error(resp, 400, v.field, "%s", v.message);
        return;
    }
    char why[256] = "";
    query_page_t page;
    deta_err_t err = read_model_list(api->rm, &p, &page, why, sizeof why);
    if (err) {
        deta_http_resp_store_error(resp, err, "read model", why);
        return;
    }
    deta_http_resp_json(resp, 200, page_to_json(&page));
    query_page_clear(&page);
}

static void handle_timeline(const deta_http_req_t *req, deta_http_resp_t *resp, void *opaque) {
    query_api_t *api = opaque;
    const char *id = order_id_of(req, resp);
    if (!id)
        return;
    char why[256] = "";
    query_timeline_t t;
    deta_err_t err = read_model_timeline(api->rm, id, &t, why, sizeof why);
    if (err == DETA_ERR_NOT_FOUND) {
        deta_http_resp_error(resp, 404, "orderId", "no order with id %s", id);
        return;
    }
    if (err) {
        deta_http_resp_store_error(resp, err, "read model", why);
        return;
    }
    json_t *events = json_array();
    for (size_t i = 0; i < t.n; i++)
        json_array_append_new(events, query_timeline_entry_to_json(&t.entries[i]));
    deta_http_resp_json(resp, 200,
                        json_pack("{s:s, s:o}", "orderId", id, "events", events));
    query_timeline_clear(&t);
}

static void handle_stats(const deta_http_req_t *req, deta_http_resp_t *resp, void *opaque) {
    (void)req;
    query_api_t *api = opaque;
    char why[256] = "";
    query_stats_t s;
    deta_err_t err = read_model_stats(api->rm, &s, why, sizeof why);
    if (err)
        deta_http_resp_store_error(resp, err, "read model", why);
    else
        deta_http_resp_json(resp, 200, query_stats_to_json(&s));
}

static bool check_read_model(void *opaque, char *detail, size_t detailsize) {
    query_api_t *api = opaque;
    return read_model_ping(api->rm, detail, detailsize);
}

deta_err_t query_api_mount(query_api_t *api, char *errstr, size_t errsize) {
    deta_http_server_t *http = deta_service_http(api->svc);
    if (deta_http_route(http, "GET", "/api/orders", 0, handle_list, api) ||
        deta_http_route(http, "GET", "/api/orders/{orderId}", 0, handle_get, api) ||
        deta_http_route(http, "GET", "/api/orders/{orderId}/events", 0, handle_timeline, api) ||
        deta_http_route(http, "GET", "/api/stats", 0, handle_stats, api))
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "cannot register routes");
    deta_health_add(deta_service_health(api->svc), "readModel", true, check_read_model, api);
    return DETA_OK;
}
