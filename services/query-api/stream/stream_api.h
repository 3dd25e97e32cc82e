/*
 * stream_api.h - query-api's stream routes (docs/console.md, "Live updates"):
 *   GET /api/stream                     every order's events (the board)
 *   GET /api/orders/{orderId}/stream    one order's (400 naming orderId unless a UUID)
 * A resume point comes as the Last-Event-ID header or ?lastEventId= (the header
 * wins); either, when present, must be a decimal seq (sse_parse_event_id), else
 * 400 naming it.
 */
#ifndef QUERY_STREAM_API_H
#define QUERY_STREAM_API_H

#include "deta/service.h"
#include "query-api/stream/hub.h"

deta_err_t stream_api_mount(deta_service_t *svc, hub_t *hub, char *errstr, size_t errsize);

#endif
