/*
 * api.c - payment-service's REST handler: the payment of an order.
 *
 * A malformed order id is 400 naming orderId, an order without a payment 404 (it
 * may not have reached payment yet), a database that is down 503 (retry later).
 * The body is the stored payment: paymentId, orderId, customerId, amount (decimal
 * text), currency, status (AUTHORIZED or DECLINED), reason (declines only),
 * idempotencyKey (the inventory.reserved event id) and createdAt.
 */
#include "api.h"

#include <stdlib.h>

#include "deta/envelope.h"
#include "deta/log.h"
#include "store.h"

struct payment_api {
    deta_service_t *svc;
};

payment_api_t *payment_api_new(deta_service_t *svc) {
    payment_api_t *api = calloc(1, sizeof *api);
    if (api)
        api->svc = svc;
    return api;
}

void payment_api_free(payment_api_t *api) { free(api); }

static void handle_get(const deta_http_req_t *req, deta_http_resp_t *resp, void *opaque) {
    payment_api_t *api = opaque;
    const char *id = deta_http_param(req, "orderId");
    if (!id || !deta_uuid_valid(id)) {
        deta_http_resp_error(resp, 400, "orderId", "orderId must be a UUID");
        return;
    }
    char why[256] = "";
    json_t *payment = NULL;
    deta_db_t *db = deta_db_pool_get(deta_service_db(api->svc));
    deta_err_t err = db ? payment_store_get(db, id, &payment, why, sizeof why) : DETA_ERR_INTERNAL;
    if (err == DETA_OK) {
        deta_http_resp_json(resp, 200, payment);
    } else if (err == DETA_ERR_NOT_FOUND) {
        deta_http_resp_error(resp, 404, "orderId", "no payment for order %s", id);
    } else {
        deta_log(DETA_LOG_ERROR, id, NULL, "payment store: %s: %s", deta_err_name(err), why);
        if (err == DETA_ERR_TRANSIENT)
            deta_http_resp_error(resp, 503, NULL, "database unavailable, retry later");
        else
            deta_http_resp_error(resp, 500, NULL, "internal error");
    }
}

deta_err_t payment_api_mount(payment_api_t *api, char *errstr, size_t errsize) {
    if (deta_http_route(deta_service_http(api->svc), "GET", "/api/payments/{orderId}", 0,
                        handle_get, api))
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "cannot register routes");
    return DETA_OK;
}
