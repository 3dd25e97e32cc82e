/*
 * deta/openapi.h - a service's OpenAPI document, and the rule that keeps it true.
 *
 * Each service's executable links its document, bundled at build time by
 * tools/openapi-bundle from services/<name>/openapi.json and libdeta's part,
 * lib/openapi/common.json, as deta_openapi: the JSON text and its operations,
 * "METHOD /path" a line each, in the document's order. deta_service_openapi() (deta/service.h) serves the document
 * at GET /openapi.json and, when the service starts, compares the operations with
 * the routes the service registered (deta_openapi_match_routes): a route missing
 * from the document, or a documented operation no route serves, stops the start
 * with a message that names each, so that the document and the service cannot
 * drift apart. The start never parses the document: the operations are the
 * bundler's reading of it, made from the same JSON at the same build. docs/api.md
 * says more.
 */
#ifndef DETA_OPENAPI_H
#define DETA_OPENAPI_H

#include <stddef.h>

#include "deta/err.h"

typedef struct deta_openapi {
    const char *document;   /* the JSON text */
    const char *operations; /* "METHOD /path\n" for each operation */
} deta_openapi_t;

/* The service's own, in the C file the bundler wrote for its executable. */
extern const deta_openapi_t deta_openapi;

/* One registered route: its method (upper case, as registered) and its pattern
 * (the OpenAPI path template: /api/orders/{orderId}). */
typedef struct deta_openapi_route {
    const char *method;
    const char *pattern;
} deta_openapi_route_t;

/* DETA_OK when operations ("METHOD /path" lines, as deta_openapi_t's)
 * are exactly routes[0..n); DETA_ERR_INVALID otherwise, with every difference in
 * errstr ("GET /x is not documented; POST /y is documented but not served"), or
 * when a line is not a method, one space and a path. Pure. */
deta_err_t deta_openapi_match_routes(const char *operations, const deta_openapi_route_t *routes,
                                     size_t n, char *errstr, size_t errsize);

#endif
