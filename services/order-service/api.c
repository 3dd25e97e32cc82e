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
 *
 * POST .../cancel writes the request only when there is none and the order may
 * still be cancelled (one conditional UPDATE, with its outbox row); otherwise it
 * reads what the order is and answers by order_cancel_decide (domain.c). Both
 * answers show the order as GET does, cancellation included.
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

/* orders_cancel_requests_total{outcome}: order_cancel_outcome's labels, and
 * invalid (400), not_found (404), error (500, 503). */
static void count_cancel(order_api_t *api, const char *outcome) {
    char labels[64];
    snprintf(labels, sizeof labels, "outcome=\"%s\"", outcome);
    deta_counter_inc(deta_counter(deta_service_metrics(api->svc), "orders_cancel_requests_total",
                                  "Cancel requests, by answer", labels));
}

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

/* The path's orderId, or false once 400 naming it is answered. */
static bool valid_order_id(const deta_http_req_t *req, deta_http_resp_t *resp, const char **id) {
    *id = deta_http_param(req, "orderId");
    if (*id && deta_uuid_valid(*id))
        return true;
    deta_http_resp_error(resp, 400, "orderId", "orderId must be a UUID");
    return false;
}

static void handle_get(const deta_http_req_t *req, deta_http_resp_t *resp, void *opaque) {
    order_api_t *api = opaque;
    const char *id;
    if (!valid_order_id(req, resp, &id))
        return;
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

/* 409: the error body plus the order's status now. */
static void answer_conflict(deta_http_resp_t *resp, const char *id, const char *status,
                            order_cancel_answer_t a) {
    char message[200];
    if (a == ORDER_CANCEL_WAS_REFUSED)
        snprintf(message, sizeof message, "the cancel of order %s was refused (order is %s)", id,
                 status);
    else
        snprintf(message, sizeof message, "order %s cannot be cancelled: it is %s", id, status);
    deta_http_resp_json(resp, 409, json_pack("{s:i, s:s, s:s, s:s}", "status", 409, "error",
                                             "Conflict", "message", message, "orderStatus",
                                             status));
}

static void handle_cancel(const deta_http_req_t *req, deta_http_resp_t *resp, void *opaque) {
    order_api_t *api = opaque;
    const char *id;
    order_cancel_request_t c;
    order_violation_t v;
    if (!valid_order_id(req, resp, &id)) {
        count_cancel(api, "invalid");
        return;
    }
    if (order_cancel_from_request(req->json, &c, &v) != DETA_OK) {
        count_cancel(api, "invalid");
        deta_http_resp_error(resp, 400, v.field, "%s %s", v.field, v.message);
        return;
    }
    char requested_at[DETA_TS_LEN], why[256] = "";
    deta_timestamp_now(requested_at);
    bool requested = false;
    json_t *order = NULL;
    deta_db_t *db = deta_db_pool_get(deta_service_db(api->svc));
    deta_err_t err = db ? order_store_request_cancel(db, id, c.has_reason ? c.reason : NULL,
                                                     requested_at, &requested, &order, why,
                                                     sizeof why)
                        : DETA_ERR_INTERNAL;
    if (err == DETA_ERR_NOT_FOUND) {
        count_cancel(api, "not_found");
        deta_http_resp_error(resp, 404, "orderId", "no order with id %s", id);
        return;
    }
    if (err) {
        count_cancel(api, "error");
        deta_http_resp_store_error(resp, err, "database", why);
        return;
    }
    const char *status = json_string_value(json_object_get(order, "status"));
    const char *cancel_status =
        json_string_value(json_object_get(json_object_get(order, "cancellation"), "status"));
    order_cancel_answer_t a =
        requested ? ORDER_CANCEL_ASK : order_cancel_decide(status, cancel_status);
    if (!requested && a == ORDER_CANCEL_ASK) {
        /* Cancellable, yet the conditional UPDATE matched nothing: a status this
         * build does not know. */
        count_cancel(api, "error");
        json_decref(order);
        deta_http_resp_store_error(resp, DETA_ERR_INTERNAL, "database",
                                   "a cancellable order the request did not match");
        return;
    }
    count_cancel(api, order_cancel_outcome(a));
    if (requested)
        deta_log(DETA_LOG_INFO, id, json_string_value(json_object_get(order, "correlationId")),
                 "cancel requested");
    if (order_cancel_http_status(a) == 409) {
        answer_conflict(resp, id, status ? status : "", a);
        json_decref(order);
        return;
    }
    deta_http_resp_json(resp, order_cancel_http_status(a), order);
}

deta_err_t order_api_mount(order_api_t *api, char *errstr, size_t errsize) {
    deta_http_server_t *http = deta_service_http(api->svc);
    if (deta_http_route(http, "POST", "/api/orders", DETA_HTTP_JSON_BODY, handle_create, api) ||
        deta_http_route(http, "GET", "/api/orders/{orderId}", 0, handle_get, api) ||
        deta_http_route(http, "POST", "/api/orders/{orderId}/cancel",
                        DETA_HTTP_JSON_BODY | DETA_HTTP_EMPTY_BODY_OK, handle_cancel, api))
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "cannot register routes");
    return DETA_OK;
}
