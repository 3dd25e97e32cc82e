/*
 * api.c - order-service's REST handlers.
 *
 * POST validates the whole request before touching the database (domain.c), so a
 * bad request writes nothing; a good one is written with its outbox row in one
 * transaction (store.c) and answered 201 only after the commit. A database that is
 * down is 503, not 500: the request may be retried.
 *
 * With an Idempotency-Key (checked before the body), the key is written in the
 * order's transaction; a retry of the same request is answered 200 with the
 * order its key made and Idempotent-Replayed: true, another request under the
 * key 422 (docs/contracts.md, "Idempotency keys").
 */
#include "api.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "deta/log.h"
#include "domain.h"
#include "store.h"

struct order_api {
    deta_service_t *svc;
    deta_counter_t *created;
    deta_counter_t *replayed;
};

order_api_t *order_api_new(deta_service_t *svc) {
    order_api_t *api = calloc(1, sizeof *api);
    if (!api)
        return NULL;
    api->svc = svc;
    api->created = deta_counter(deta_service_metrics(svc), "orders_created_total",
                                "Orders accepted and written", NULL);
    api->replayed = deta_counter(deta_service_metrics(svc), "order_idempotent_replays_total",
                                 "Requests answered with the order their Idempotency-Key made",
                                 NULL);
    return api;
}

void order_api_free(order_api_t *api) { free(api); }

static void count_rejection(order_api_t *api, const char *reason) {
    char labels[96];
    snprintf(labels, sizeof labels, "reason=\"%s\"", reason);
    deta_counter_inc(deta_counter(deta_service_metrics(api->svc), "orders_rejected_total",
                                  "Order requests refused, by reason", labels));
}

/* Writes the order under its Idempotency-Key and answers: 201 (new), 200 with
 * Idempotent-Replayed (the same request again), 422 (another request); false
 * when nothing was answered yet because the order was created (the caller's 201). */
static bool create_keyed(order_api_t *api, deta_db_t *db, const order_t *o, const char *key,
                         deta_http_resp_t *resp) {
    char why[256] = "";
    char *canonical = order_request_canonical(o);
    if (!canonical) {
        deta_http_resp_error(resp, 500, NULL, "out of memory");
        return true;
    }
    order_keyed_outcome_t outcome = ORDER_KEYED_CREATED;
    json_t *existing = NULL;
    deta_err_t err =
        order_store_create_keyed(db, o, key, canonical, &outcome, &existing, why, sizeof why);
    free(canonical);
    if (err) {
        deta_http_resp_store_error(resp, err, "database", why);
        return true;
    }
    if (outcome == ORDER_KEYED_REPLAYED) {
        deta_counter_inc(api->replayed);
        deta_http_resp_json(resp, 200, existing);
        deta_http_resp_header(resp, "Idempotent-Replayed", "true");
        return true;
    }
    if (outcome == ORDER_KEYED_REUSED) {
        count_rejection(api, "idempotency_key_reused");
        deta_http_resp_error(resp, 422, ORDER_IDEMPOTENCY_HEADER,
                             "%s was already used with another request", ORDER_IDEMPOTENCY_HEADER);
        return true;
    }
    return false;
}

static void handle_create(const deta_http_req_t *req, deta_http_resp_t *resp, void *opaque) {
    order_api_t *api = opaque;
    order_violation_t v;
    /* The key is checked first: a request whose retries could not be recognized
     * is refused whatever its body. */
    const char *key = deta_http_header(req, ORDER_IDEMPOTENCY_HEADER);
    if (key && order_idempotency_key_check(key, &v) != DETA_OK) {
        count_rejection(api, v.reason);
        deta_http_resp_error(resp, 400, v.field, "%s %s", v.field, v.message);
        return;
    }
    order_t *o = malloc(sizeof *o);
    if (!o) {
        deta_http_resp_error(resp, 500, NULL, "out of memory");
        return;
    }
    if (order_from_request(req->json, o, &v) != DETA_OK) {
        count_rejection(api, v.reason);
        deta_http_resp_error(resp, 400, v.field, "%s %s", v.field, v.message);
        free(o);
        return;
    }
    order_assign_identity(o, NULL);

    char why[256] = "";
    deta_db_t *db = deta_db_pool_get(deta_service_db(api->svc));
    if (!db) {
        deta_http_resp_store_error(resp, DETA_ERR_INTERNAL, "database", "out of memory");
        free(o);
        return;
    }
    if (key) {
        if (create_keyed(api, db, o, key, resp)) {
            free(o);
            return;
        }
    } else {
        deta_err_t err = order_store_create(db, o, why, sizeof why);
        if (err) {
            deta_http_resp_store_error(resp, err, "database", why);
            free(o);
            return;
        }
    }
    deta_counter_inc(api->created);
    deta_log(DETA_LOG_INFO, o->order_id, o->correlation_id, "order created");

    char total[DETA_MONEY_STRLEN];
    deta_http_resp_json(resp, 201,
                        json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "orderId", o->order_id,
                                  "customerId", o->customer_id, "totalAmount",
                                  deta_money_format(o->total, total), "currency", o->currency,
                                  "status", ORDER_STATUS_CREATED, "createdAt", o->created_at,
                                  "correlationId", o->correlation_id));
    free(o);
}

static void handle_get(const deta_http_req_t *req, deta_http_resp_t *resp, void *opaque) {
    order_api_t *api = opaque;
    const char *id = deta_http_param(req, "orderId");
    if (!id || !deta_uuid_valid(id)) {
        deta_http_resp_error(resp, 400, "orderId", "orderId must be a UUID");
        return;
    }
    char why[256] = "";
    json_t *order = NULL;
    deta_db_t *db = deta_db_pool_get(deta_service_db(api->svc));
    deta_err_t err = db ? order_store_get(db, id, &order, why, sizeof why) : DETA_ERR_INTERNAL;
    if (err == DETA_ERR_NOT_FOUND)
        deta_http_resp_error(resp, 404, "orderId", "no order with id %s", id);
    else if (err)
        deta_http_resp_store_error(resp, err, "database", why);
    else
        deta_http_resp_json(resp, 200, order);
}

deta_err_t order_api_mount(order_api_t *api, char *errstr, size_t errsize) {
    deta_http_server_t *http = deta_service_http(api->svc);
    if (deta_http_route(http, "POST", "/api/orders", DETA_HTTP_JSON_BODY, handle_create, api) ||
        deta_http_route(http, "GET", "/api/orders/{orderId}", 0, handle_get, api))
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "cannot register routes");
    return DETA_OK;
}
