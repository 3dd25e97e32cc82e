/*
 * deta/openapi.h - a service's OpenAPI document, and the rule that keeps it true.
 *
 * Each service's executable links its document, bundled at build time by
 * tools/openapi-bundle from services/<name>/openapi.json and libdeta's part,
 * lib/openapi/common.json, as deta_openapi_document (a NUL-terminated JSON text).
 * deta_service_openapi() (deta/service.h) serves it at GET /openapi.json and, when
 * the service starts, compares it with the routes the service registered
 * (deta_openapi_match_routes): a route missing from the document, or a documented
 * operation no route serves, stops the start with a message that names each, so
 * that the document and the service cannot drift apart. docs/api.md says more.
 */
#ifndef DETA_OPENAPI_H
#define DETA_OPENAPI_H

#include <stddef.h>

#include "deta/err.h"

extern const char deta_openapi_document[];

/* One registered route: its method (upper case, as registered) and its pattern
 * (the OpenAPI path template: /api/orders/{orderId}). */
typedef struct deta_openapi_route {
    const char *method;
    const char *pattern;
} deta_openapi_route_t;

/* DETA_OK when document (OpenAPI JSON text) has an operation for each of
 * routes[0..n) and no other; DETA_ERR_INVALID otherwise, with every difference
 * in errstr ("GET /x is not documented; POST /y is documented but not served"),
 * or when the document is not JSON with a "paths" object. Pure. */
deta_err_t deta_openapi_match_routes(const char *document, const deta_openapi_route_t *routes,
                                     size_t n, char *errstr, size_t errsize);

#endif
