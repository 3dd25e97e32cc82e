/*
 * http_guard.h - private to libdeta: the HTTP server's bounds under abuse (deta/http.h's
 * "Bounds under abuse"): which connections are admitted, per client address and in
 * all, and the watchdog that cuts a request whose headers or body take too long.
 * http.c calls it; the design is in http_guard.c.
 */
#ifndef DETA_HTTP_GUARD_H
#define DETA_HTTP_GUARD_H

#include <microhttpd.h>
#include <stdbool.h>

#include "deta/err.h"
#include "deta/http.h"
#include "deta/metrics.h"

typedef struct http_guard http_guard_t;
typedef struct http_conn http_conn_t; /* one connection's record (MHD's socket context) */

typedef enum http_admission {
    HTTP_ADMITTED = 0,
    HTTP_OVER_TOTAL,  /* accepted while max_connections were admitted: 503 */
    HTTP_OVER_CLIENT, /* its address had max_connections_per_client admitted: 429 */
} http_admission_t;

/* limits are copied; metrics may be NULL (nothing counted). NULL when out of memory. */
http_guard_t *http_guard_new(const deta_http_limits_t *limits, deta_metrics_t *metrics);
/* Starts the watchdog thread. */
deta_err_t http_guard_start(http_guard_t *g, char *errstr, size_t errsize);
/* Stops the watchdog (before MHD_stop_daemon); frees after it (no connection is left). */
void http_guard_stop(http_guard_t *g);
void http_guard_free(http_guard_t *g);

/* MHD_OPTION_NOTIFY_CONNECTION's callback, with the guard as its closure. */
void http_guard_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                       enum MHD_ConnectionNotificationCode code);

/* The record of conn (NULL when it could not be made: then nothing is bounded but
 * MHD's own limits, and the connection counts as admitted). */
http_conn_t *http_guard_conn(struct MHD_Connection *conn);
http_admission_t http_guard_admission(const http_conn_t *c);

/* The phases of a request, each from the connection's own thread: the headers are in
 * (the body's time starts), the whole request is in or was answered early (no time
 * bound: the handler runs, the answer goes out), the request is done and the
 * connection waits for the next one's headers (kept alive). c may be NULL. The first
 * two are false when the watchdog has cut the connection: what MHD still had buffered
 * of its request is then dropped, never served (its client was answered 408 or
 * nothing, so it must not be carried out). */
bool http_guard_headers_in(http_guard_t *g, http_conn_t *c);
bool http_guard_request_in(http_guard_t *g, http_conn_t *c);
void http_guard_request_done(http_guard_t *g, http_conn_t *c);

/* Counts one refusal in http_refused_total{reason}: "connections",
 * "connections_per_client", "header_too_large" (the watchdog counts "header_timeout" and
 * "body_timeout" itself). */
void http_guard_count(http_guard_t *g, const char *reason);

#endif
