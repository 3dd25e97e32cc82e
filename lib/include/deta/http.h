/*
 * http.h - a small JSON HTTP server on libmicrohttpd.
 *
 * Routes are (method, pattern) pairs; a pattern's segments are literals or
 * "{name}" parameters ("/api/orders/{orderId}"). Requests are served by a pool of
 * threads (handlers must be thread-safe). The server, not the handler, enforces:
 *   - 404 {"status":404,"error":"Not Found",...} for an unknown path,
 *     405 for a known path with another method;
 *   - with DETA_HTTP_JSON_BODY: 415 unless Content-Type is application/json
 *     (parameters such as charset allowed), 413 when the body exceeds the limit
 *     (checked on Content-Length first, then on the bytes received), and 400 with
 *     field "body" for malformed JSON; the handler then gets the parsed body;
 *   - with DETA_HTTP_EMPTY_BODY_OK as well: an empty body (no bytes) is let
 *     through whatever the Content-Type, with req->json NULL (an optional body,
 *     such as a cancel's); a body that has bytes follows the rules above.
 * Error bodies always have the shape
 *   {"status":400,"error":"Bad Request","field":"items[0].quantity","message":"..."}
 * with "field" present only when a field is to blame.
 *
 * Every answer, the server's own errors included, carries the security headers of
 * docs/console.md: X-Content-Type-Options: nosniff, Referrer-Policy: no-referrer,
 * X-Frame-Options: DENY, and on API answers Cache-Control: no-store and the
 * Content-Security-Policy DETA_HTTP_API_CSP (static files: the policy given to
 * deta_http_static, and Cache-Control: no-cache).
 *
 * CORS (deta_http_server_set_cors; the setting HTTP_CORS_ORIGINS, deta/http_cors.h):
 * a request whose Origin is on the list gets Access-Control-Allow-Origin: <origin>,
 * Vary: Origin and Access-Control-Expose-Headers: Location, Idempotent-Replayed; a
 * preflight (OPTIONS with Access-Control-Request-Method) is answered by the server:
 * 404 when no route has the path, 403 naming "Origin" when the origin is not listed
 * (or the list is empty), else 204 with Access-Control-Allow-Methods (the path's),
 * Access-Control-Allow-Headers: Content-Type, Idempotency-Key, Authorization and
 * Access-Control-Max-Age: 600. Credentials are never allowed.
 *
 * Tokens (deta_http_server_set_auth; deta/auth.h): a route registered with
 * DETA_HTTP_OPERATOR needs the operator token, and with HTTP_READS_NEED_AUTH on
 * every GET and HEAD route below /api/ needs the reader or the operator token. The
 * server decides right after routing, before the body is read and before any
 * handler runs: 503 when no token that could open the route is configured (naming
 * the setting), 401 with WWW-Authenticate: Bearer realm="delivery-eta" without a
 * bearer token (error="invalid_token" added for a wrong one), 403 with
 * error="insufficient_scope" for the reader token on an operator route. Every
 * decision is counted in http_auth_total{role,outcome} (outcome allowed,
 * unauthorized, forbidden or disabled); a refusal is logged as a WARN naming the
 * method, path and reason, never the token.
 *
 * Static files (deta_http_static): a GET or HEAD whose path no route has is looked up
 * below the directory by the rules of deta/http_static.h; the JSON 404 otherwise.
 *
 * Bounds under abuse (deta_http_server_set_limits; the HTTP_MAX_* settings, deta/config.h):
 * a connection accepted while HTTP_MAX_CONNECTIONS connections are admitted is answered
 * 503, one from an address that has HTTP_MAX_CONNECTIONS_PER_CLIENT admitted is answered
 * 429 (both with Retry-After: 1, Connection: close and the JSON error body naming the
 * setting), except on DETA_HTTP_ALWAYS routes (health, metrics), which a reserve of
 * DETA_HTTP_RESERVED_CONNECTIONS connections above the bound keeps answerable. Request
 * headers larger than HTTP_HEADER_LIMIT are 431. Headers that take longer than
 * HTTP_HEADER_TIMEOUT_MS (from the accept, or from the previous answer on a kept-alive
 * connection) close the connection; a body that takes longer than HTTP_BODY_TIMEOUT_MS
 * (from the end of the headers) is answered 408 and closed. Each refusal is counted in
 * http_refused_total{reason}; http_connections is the number of open connections.
 * How: lib/src/http_guard.c.
 */
#ifndef DETA_HTTP_H
#define DETA_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <jansson.h>
#include "deta/auth.h"
#include "deta/err.h"
#include "deta/metrics.h"

#define DETA_HTTP_MAX_PARAMS 4

typedef struct deta_http_server deta_http_server_t;

typedef struct deta_http_req {
    const char *method;
    const char *path; /* without the query string */
    const char *content_type; /* NULL when absent */
    const char *body; /* raw bytes received, NUL-terminated; NULL when none */
    size_t body_len;
    json_t *json; /* parsed body (borrowed) when the route takes a JSON body */
    const char *param_names[DETA_HTTP_MAX_PARAMS];
    const char *param_values[DETA_HTTP_MAX_PARAMS];
    int nparams;
    void *impl; /* the server's own; used by deta_http_query */
} deta_http_req_t;

typedef struct deta_http_resp {
    int status;
    char *body;               /* malloc'd, freed by the server */
    const char *content_type; /* static string */
    /* One optional extra response header (such as WWW-Authenticate), set with
     * deta_http_resp_header; static strings. */
    const char *header_name;
    const char *header_value;
    /* A streamed answer instead of body (deta_http_resp_stream, deta/http_stream.h). */
    struct deta_http_stream *stream;
} deta_http_resp_t;

typedef void (*deta_http_handler_fn)(const deta_http_req_t *req, deta_http_resp_t *resp,
                                     void *opaque);

/* Route flags. */
#define DETA_HTTP_JSON_BODY 0x1
#define DETA_HTTP_EMPTY_BODY_OK 0x2 /* with DETA_HTTP_JSON_BODY: the body is optional */
/* Served on every connection, also on one over a connection bound (health, metrics). */
#define DETA_HTTP_ALWAYS 0x4

/* The bounds of deta_http_server_set_limits (the settings of the same names). */
typedef struct deta_http_limits {
    int max_connections;            /* HTTP_MAX_CONNECTIONS: admitted at once */
    int max_connections_per_client; /* HTTP_MAX_CONNECTIONS_PER_CLIENT: from one address */
    int header_timeout_ms;          /* HTTP_HEADER_TIMEOUT_MS: request line and headers */
    int body_timeout_ms;            /* HTTP_BODY_TIMEOUT_MS: the body, after the headers */
    long header_limit;              /* HTTP_HEADER_LIMIT: request line and headers, bytes */
} deta_http_limits_t;
#define DETA_HTTP_LIMITS_DEFAULT {4096, 512, 10000, 30000, 8192}
/* Connections libmicrohttpd takes beyond max_connections (its own limit is the sum):
 * the over-the-bound ones that get their 503 or 429, and those of DETA_HTTP_ALWAYS
 * routes. Per address, DETA_HTTP_RESERVED_PER_CLIENT beyond max_connections_per_client. */
#define DETA_HTTP_RESERVED_CONNECTIONS 64
#define DETA_HTTP_RESERVED_PER_CLIENT 16
#define DETA_HTTP_OPERATOR 0x8      /* needs the operator token (deta/auth.h) */

/* port 0 picks a free port (see deta_http_server_port). */
deta_http_server_t *deta_http_server_new(int port, long body_limit, int threads, char *errstr,
                                         size_t errsize);
deta_err_t deta_http_route(deta_http_server_t *srv, const char *method, const char *pattern,
                           int flags, deta_http_handler_fn fn, void *opaque);
/* Route i of those registered, in registration order (its method and pattern,
 * owned by the server); false past the last. */
bool deta_http_route_at(const deta_http_server_t *srv, size_t i, const char **method,
                        const char **pattern);
/* Optional: observe every request in http_request_duration_seconds{method,route,status}
 * (route = the pattern, or "unmatched") and count http_requests_total likewise. */
void deta_http_server_set_metrics(deta_http_server_t *srv, deta_metrics_t *metrics);
/* The tokens the server checks (copied; the copy is wiped when the server is freed);
 * NULL or never called: none, so operator routes answer 503. Before
 * deta_http_server_start. The service skeleton sets its configuration's
 * (deta_config_t.auth). */
void deta_http_server_set_auth(deta_http_server_t *srv, const deta_auth_t *auth);
/* The Content-Security-Policy of every API answer. */
#define DETA_HTTP_API_CSP "default-src 'none'; frame-ancestors 'none'"

/* CORS from the allow-list origins (HTTP_CORS_ORIGINS' syntax, deta/http_cors.h; NULL or
 * empty: none). DETA_ERR_INVALID naming the bad entry. Before deta_http_server_start. */
deta_err_t deta_http_server_set_cors(deta_http_server_t *srv, const char *origins,
                                     char *errstr, size_t errsize);
/* Serves the files below dir (made canonical now; it must be a directory) to GET and
 * HEAD requests whose path no route has, with csp as their Content-Security-Policy (one
 * line). Files are read per request, at most DETA_STATIC_MAX_FILE bytes (a larger one
 * is a 500, logged). DETA_ERR_INVALID when dir is no directory. Before
 * deta_http_server_start. */
deta_err_t deta_http_static(deta_http_server_t *srv, const char *dir, const char *csp,
                            char *errstr, size_t errsize);
/* The bounds under abuse (the defaults: DETA_HTTP_LIMITS_DEFAULT); DETA_ERR_INVALID when
 * one is out of range (max_connections >= 1, 1 <= per client <= max_connections,
 * timeouts >= 1 ms, header_limit >= 1024). Before deta_http_server_start. */
deta_err_t deta_http_server_set_limits(deta_http_server_t *srv, const deta_http_limits_t *limits,
                                       char *errstr, size_t errsize);
/* Binds and starts serving; DETA_ERR_TRANSIENT when the port is taken. */
deta_err_t deta_http_server_start(deta_http_server_t *srv, char *errstr, size_t errsize);
int deta_http_server_port(const deta_http_server_t *srv);
/* Stop accepting new connections (the first step of a graceful shutdown). */
void deta_http_server_quiesce(deta_http_server_t *srv);
/* Stops (waits for handlers in flight) and frees. NULL is fine. */
void deta_http_server_free(deta_http_server_t *srv);

/* A path parameter or a query-string argument by name; NULL when absent. */
const char *deta_http_param(const deta_http_req_t *req, const char *name);
const char *deta_http_query(const deta_http_req_t *req, const char *name);
/* A request header by name (case-insensitive); NULL when absent. */
const char *deta_http_header(const deta_http_req_t *req, const char *name);

/* Responses. deta_http_resp_json takes ownership of body (a reference is stolen). */
void deta_http_resp_json(deta_http_resp_t *resp, int status, json_t *body);
void deta_http_resp_text(deta_http_resp_t *resp, int status, const char *content_type,
                         const char *text);
void deta_http_resp_error(deta_http_resp_t *resp, int status, const char *field,
                          const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* The answer to a store call that failed with err (never DETA_OK): 503 "<store>
 * unavailable, retry later" for DETA_ERR_TRANSIENT (the client may retry), 500
 * "internal error" otherwise; logged as an ERROR "<store>: <ERR>: <why>". store
 * names what failed for the client ("database", "read model"). */
void deta_http_resp_store_error(deta_http_resp_t *resp, deta_err_t err, const char *store,
                                const char *why);
/* Adds one header to the response (name and value must be static strings; a
 * second call replaces the first). Call it after the body is set. */
void deta_http_resp_header(deta_http_resp_t *resp, const char *name, const char *value);

/* Pure: does path match pattern? Fills names/values (values point into a copy
 * kept in buf, buflen bytes) and returns the number of parameters, or -1.
 * The names (without braces) are copied into buf too; strlen(path) +
 * strlen(pattern) + 2 bytes always suffice. */
int deta_http_match(const char *pattern, const char *path, char *buf, size_t buflen,
                    const char **names, const char **values, int max);
/* Pure: the number of parameters of a route pattern deta_http_route takes (it
 * starts with '/', holds none of "\"\\?# \t\r\n", and every brace belongs to a
 * whole-segment "{name}"), or -1 for one it refuses. */
int deta_http_pattern_params(const char *pattern);

#endif
