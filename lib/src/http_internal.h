/*
 * http_internal.h - what http.c lends the library's other HTTP files (an answer that
 * http.c does not build itself, such as a stream's, still carries the same headers).
 */
#ifndef DETA_HTTP_INTERNAL_H
#define DETA_HTTP_INTERNAL_H

#include <microhttpd.h>

#include "deta/http.h"

/* Adds to mr the headers every answer carries (docs/console.md): X-Content-Type-Options,
 * Referrer-Policy, X-Frame-Options, Content-Security-Policy (csp, or the API's when
 * NULL, which also gets Cache-Control: no-store), and, when the request on conn has an
 * Origin on the server's HTTP_CORS_ORIGINS, Access-Control-Allow-Origin, Vary: Origin and
 * Access-Control-Expose-Headers. */
void http_add_answer_headers(struct MHD_Response *mr, const deta_http_server_t *srv,
                             struct MHD_Connection *conn, const char *csp);

#endif
