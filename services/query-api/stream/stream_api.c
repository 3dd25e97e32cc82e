/*
 * stream_api.c - the stream routes (stream_api.h): input checked whole, then the
 * hub opens the stream.
 */
#include "query-api/stream/stream_api.h"

#include "deta/envelope.h"
#include "query-api/stream/sse.h"

/* The resume point, if any; false after answering 400. */
static bool resume_of(const deta_http_req_t *req, deta_http_resp_t *resp, stream_start_t *st) {
    const char *header = deta_http_header(req, "Last-Event-ID");
    const char *query = deta_http_query(req, "lastEventId");
    int64_t v;
    if (header && !sse_parse_event_id(header, &v)) {
        deta_http_resp_error(resp, 400, "Last-Event-ID",
                             "Last-Event-ID must be a feed sequence number (decimal digits)");
        return false;
    }
    if (query && !sse_parse_event_id(query, &v)) {
        deta_http_resp_error(resp, 400, "lastEventId",
                             "lastEventId must be a feed sequence number (decimal digits)");
        return false;
    }
    const char *text = header ? header : query;
    st->has_resume = text != NULL;
    if (text)
        sse_parse_event_id(text, &st->resume);
    return true;
}

static void handle_board(const deta_http_req_t *req, deta_http_resp_t *resp, void *opaque) {
    stream_start_t st = {.order_stream = false};
    if (resume_of(req, resp, &st))
        hub_open(opaque, resp, NULL, &st);
}

static void handle_order(const deta_http_req_t *req, deta_http_resp_t *resp, void *opaque) {
    const char *id = deta_http_param(req, "orderId");
    if (!id || !deta_uuid_valid(id)) {
        deta_http_resp_error(resp, 400, "orderId", "orderId must be a UUID");
        return;
    }
    stream_start_t st = {.order_stream = true};
    if (resume_of(req, resp, &st))
        hub_open(opaque, resp, id, &st);
}

deta_err_t stream_api_mount(deta_service_t *svc, hub_t *hub, char *errstr, size_t errsize) {
    deta_http_server_t *http = deta_service_http(svc);
    if (deta_http_route(http, "GET", "/api/stream", 0, handle_board, hub) ||
        deta_http_route(http, "GET", "/api/orders/{orderId}/stream", 0, handle_order, hub))
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "cannot register routes");
    return DETA_OK;
}
