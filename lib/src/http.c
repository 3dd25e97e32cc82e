/*
 * http.c - the JSON HTTP server on libmicrohttpd (see deta/http.h).
 *
 * Threads. libmicrohttpd runs its own polling threads, with poll(2), in a pool of
 * `threads`; the access handler, and so every route handler, runs in those threads.
 * Not epoll (what MHD_USE_AUTO picks on Linux): 0.9.75's epoll loop (MHD_epoll in
 * daemon.c) drains the events in rounds of 128 while a round comes back full, each
 * round with the loop's first timeout, so a worker that finds exactly 128 (or 256,
 * ...) events ready, and then nothing, sleeps with them unhandled until its next
 * event or its oldest connection's timeout (30 s): a request that arrives together
 * with 127 closing connections (the watchdog cutting idle ones, below) waits that
 * long for its answer. poll(2) is level-triggered and is asked once per round.
 * A round costs time linear in the connections its worker holds (MHD builds the
 * pollfd array and looks at every connection each round): nothing at the tens a
 * service has in use, and the 2,000 idle connections of the abuse test are served.
 * The route table is written only before deta_http_server_start (deta_http_route
 * refuses afterwards), so the pool reads it without a lock. MHD_USE_ITC is set
 * because MHD_quiesce_daemon needs it. Without an address option MHD binds
 * 0.0.0.0, which is what a service in a container wants; port 0 lets the kernel
 * pick and is read back from MHD.
 *
 * One request. MHD calls the access handler several times per request: once
 * with the headers (we allocate a request_t, match the route and decide the
 * early errors), then once per piece of body (we append it), then once with no
 * data (we parse and call the handler). Every request_t is freed in the
 * completion callback (MHD_OPTION_NOTIFY_COMPLETED), whatever happened.
 *
 * Errors the server answers itself, as {"status","error","field"?,"message"}
 * with "error" the reason phrase MHD puts on the status line:
 *   404 no pattern matches the path; 405 a pattern matches but not the method
 *   (with an Allow header); for DETA_HTTP_JSON_BODY routes 415 unless the media
 *   type is application/json (case-insensitive, parameters allowed) and 400 with
 *   field "body" for malformed JSON (jansson's message and position). A route
 *   that also has DETA_HTTP_EMPTY_BODY_OK takes an empty body (req->json NULL)
 *   whatever the media type, so its 415 waits until the body is in: whether it
 *   has bytes is known only then (a chunked upload has no Content-Length).
 *   413 when the body exceeds the limit, on every route (raw bodies are buffered
 *   too, so they need the same bound): decided up front from Content-Length, or
 *   while receiving (chunked uploads). An early error is queued with the headers,
 *   which makes MHD skip the body and close the connection. MHD 0.9.75 cannot
 *   queue a response in the middle of an upload, so a chunked body that crosses
 *   the limit is read on and dropped (nothing more is buffered) and answered 413
 *   at its end; a client that keeps sending DISCARD_SLACK bytes past the limit is
 *   disconnected instead.
 *
 * Matching. Patterns are matched in registration order and the first match
 * wins, so register a literal ("/api/orders/stats") before a parameter at the
 * same place ("/api/orders/{id}"). Methods compare exactly: HEAD is not GET. MHD percent-decodes the path before we see it
 * (its default unescaper), so parameters arrive decoded; an encoded slash
 * ("%2F") becomes a separator and such a value does not match one parameter.
 * deta_http_match copies parameter values and names (without braces) into buf:
 * strlen(path) + strlen(pattern) + 2 bytes always suffice; a pattern without
 * parameters needs none.
 *
 * Headers. A handler reads request headers with deta_http_header (MHD compares
 * names case-insensitively) and may add one response header of its own
 * (deta_http_resp_header: WWW-Authenticate on a 401 is what needs it).
 *
 * Bounds under abuse (http_guard.c has the design). Connections are counted at
 * accept (MHD_OPTION_NOTIFY_CONNECTION); one over HTTP_MAX_CONNECTIONS or its
 * address's HTTP_MAX_CONNECTIONS_PER_CLIENT gets 503 or 429 (JSON, Retry-After: 1,
 * Connection: close) once its headers are in, unless its route is DETA_HTTP_ALWAYS
 * (health and metrics: served, then closed). MHD's own connection and per-address
 * limits sit DETA_HTTP_RESERVED_* above ours, so those answers have room. Headers
 * larger than HTTP_HEADER_LIMIT are 431 (JSON; MHD's memory pool per connection is
 * 2 x HTTP_HEADER_LIMIT + 16 KiB, and headers that do not fit even there get MHD's
 * own 431 with its HTML body). The guard's watchdog cuts headers slower than
 * HTTP_HEADER_TIMEOUT_MS and bodies slower than HTTP_BODY_TIMEOUT_MS (408); the
 * phases it times are set here: headers in (begin_request), request in or answered
 * (finish_request, every queued answer), request done (on_completed).
 *
 * Tokens. After routing, a route's role (deta_auth_route_role: DETA_HTTP_OPERATOR,
 * or a read below /api/ while HTTP_READS_NEED_AUTH is on) is decided against the
 * Authorization header (deta_auth_decide) before anything else about the request:
 * a refusal is queued with the headers like the other early errors, so the body is
 * never read and no handler runs. Counted in http_auth_total{role,outcome}.
 *
 * Metrics. The duration (from the headers to the queued response) and the count
 * are recorded when the response is queued, labelled method (one of the
 * standard methods or OTHER, to bound cardinality), route (the pattern, or
 * "unmatched") and status. Series are looked up in the registry per request.
 */
#include "deta/http.h"

#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "deta/http_cors.h"
#include "deta/http_static.h"
#include "deta/log.h"
#include "deta/trace.h"
#include "http_guard.h"
#include "http_stream_internal.h"
#include "http_internal.h"
#include "hex.h"

#define ROUTE_UNMATCHED "unmatched"
#define DISCARD_SLACK (1024L * 1024L)
#define CONNECTION_TIMEOUT_SECONDS 30u
#define JSON_MEDIA_TYPE "application/json"
#define ROUTE_STATIC "static"
#define CORS_ALLOW_HEADERS "Content-Type, Idempotency-Key, Authorization"
#define CORS_EXPOSE_HEADERS "Location, Idempotent-Replayed"
#define CORS_MAX_AGE "600"
#define BEARER_CHALLENGE "Bearer realm=\"delivery-eta\""
#define BEARER_INVALID BEARER_CHALLENGE ", error=\"invalid_token\""
#define BEARER_SCOPE BEARER_CHALLENGE ", error=\"insufficient_scope\""

typedef struct route {
    char *method;
    char *pattern;
    int flags;
    deta_http_handler_fn fn;
    void *opaque;
} route_t;

struct deta_http_server {
    int port; /* as asked; the bound port once started */
    long body_limit;
    int threads;
    route_t *routes;
    size_t nroutes, cap;
    size_t longest_pattern;
    deta_metrics_t *metrics;
    struct MHD_Daemon *daemon;
    MHD_socket quiesced_fd; /* the listen socket MHD hands back on quiesce */
    deta_cors_origins_t cors; /* HTTP_CORS_ORIGINS; empty: no CORS header at all */
    char *static_root;        /* canonical directory of the static files; NULL: none */
    char *static_csp;         /* their Content-Security-Policy */
    deta_http_limits_t limits; /* HTTP_MAX_CONNECTIONS and the other bounds */
    http_guard_t *guard;       /* those bounds at work, while started */
    deta_auth_t auth;         /* the tokens; "" when not set */
};

typedef struct request {
    deta_http_server_t *srv;
    struct MHD_Connection *conn;
    const route_t *route;      /* NULL unless path and method matched */
    const char *route_label;   /* the pattern, or ROUTE_UNMATCHED */
    struct timespec started;
    char *match_buf;           /* parameter values and names */
    size_t match_size;
    char *body;
    size_t body_len, body_cap;
    size_t received;           /* body bytes seen, kept or dropped */
    bool too_large;
    http_conn_t *conn_rec;     /* the guard's record of the connection */
    bool close_after;          /* answer with Connection: close (over a connection bound) */
    bool refused;              /* the answer is a 429 or 503 of a bound: Retry-After */
    int status;                /* of the answer queued */
    deta_http_req_t req;
} request_t;

/* ---- responses ---- */

static void resp_reset(deta_http_resp_t *resp) {
    free(resp->body);
    resp->body = NULL;
}

static const char *reason_phrase(int status) {
    const char *reason = MHD_get_reason_phrase_for((unsigned)status);
    return reason ? reason : "Unknown";
}

static void resp_verror(deta_http_resp_t *resp, int status, const char *field, const char *fmt,
                        va_list ap) {
    resp_reset(resp);
    resp->status = status;
    resp->content_type = "application/json";
    char *message = NULL;
    if (vasprintf(&message, fmt, ap) < 0)
        message = NULL;
    json_t *body = json_pack("{s:i,s:s}", "status", status, "error", reason_phrase(status));
    if (body && field)
        json_object_set_new(body, "field", json_string(field));
    if (body)
        json_object_set_new(body, "message", json_string(message ? message : ""));
    free(message);
    resp->body = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
}

void deta_http_resp_error(deta_http_resp_t *resp, int status, const char *field,
                          const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    resp_verror(resp, status, field, fmt, ap);
    va_end(ap);
}

void deta_http_resp_store_error(deta_http_resp_t *resp, deta_err_t err, const char *store,
                                const char *why) {
    if (err == DETA_ERR_TRANSIENT)
        deta_http_resp_error(resp, 503, NULL, "%s unavailable, retry later", store);
    else
        deta_http_resp_error(resp, 500, NULL, "internal error");
    DETA_ERROR("%s: %s: %s", store, deta_err_name(err), why);
}

void deta_http_resp_json(deta_http_resp_t *resp, int status, json_t *body) {
    if (!body) {
        deta_http_resp_error(resp, 500, NULL, "the handler built no response body");
        return;
    }
    char *text = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(body);
    if (!text) {
        deta_http_resp_error(resp, 500, NULL, "cannot encode the response body");
        return;
    }
    resp_reset(resp);
    resp->status = status;
    resp->body = text;
    resp->content_type = "application/json";
}

void deta_http_resp_text(deta_http_resp_t *resp, int status, const char *content_type,
                         const char *text) {
    resp_reset(resp);
    resp->status = status;
    resp->content_type = content_type;
    resp->body = text ? strdup(text) : NULL;
    if (text && !resp->body)
        deta_http_resp_error(resp, 500, NULL, "out of memory");
}

void deta_http_resp_header(deta_http_resp_t *resp, const char *name, const char *value) {
    resp->header_name = name;
    resp->header_value = value;
}

/* ---- request accessors ---- */

const char *deta_http_header(const deta_http_req_t *req, const char *name) {
    if (!req || !req->impl || !name)
        return NULL;
    const request_t *r = req->impl;
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

const char *deta_http_param(const deta_http_req_t *req, const char *name) {
    if (!req || !name)
        return NULL;
    for (int i = 0; i < req->nparams; i++) {
        if (strcmp(req->param_names[i], name) == 0)
            return req->param_values[i];
    }
    return NULL;
}

/* "?flag" (no '=') is present with an empty value. */
const char *deta_http_query(const deta_http_req_t *req, const char *name) {
    if (!req || !req->impl || !name)
        return NULL;
    const request_t *r = req->impl;
    const char *value = NULL;
    size_t len = 0;
    if (MHD_lookup_connection_value_n(r->conn, MHD_GET_ARGUMENT_KIND, name, strlen(name),
                                      &value, &len) != MHD_YES)
        return NULL;
    return value ? value : "";
}

/* ---- server lifecycle and routes ---- */

deta_http_server_t *deta_http_server_new(int port, long body_limit, int threads, char *errstr,
                                         size_t errsize) {
    if (port < 0 || port > 65535 || body_limit <= 0 || threads < 1) {
        deta_errf(DETA_ERR_INVALID, errstr, errsize,
                  "bad HTTP settings: port %d (0..65535), body limit %ld (> 0), threads %d (>= 1)",
                  port, body_limit, threads);
        return NULL;
    }
    deta_http_server_t *srv = calloc(1, sizeof *srv);
    if (!srv) {
        deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
        return NULL;
    }
    srv->port = port;
    srv->body_limit = body_limit;
    srv->threads = threads;
    srv->quiesced_fd = MHD_INVALID_SOCKET;
    srv->limits = (deta_http_limits_t)DETA_HTTP_LIMITS_DEFAULT;
    return srv;
}

deta_err_t deta_http_server_set_limits(deta_http_server_t *srv, const deta_http_limits_t *limits,
                                       char *errstr, size_t errsize) {
    if (!srv || srv->daemon || !limits)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "HTTP server missing or started");
    if (limits->max_connections < 1 || limits->max_connections_per_client < 1 ||
        limits->max_connections_per_client > limits->max_connections ||
        limits->header_timeout_ms < 1 || limits->body_timeout_ms < 1 ||
        limits->header_limit < 1024 || limits->header_limit > (1L << 24))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "bad HTTP bounds: %d connections, %d per client (1..connections), "
                         "timeouts %d and %d ms (>= 1), header limit %ld (1024..16777216)",
                         limits->max_connections, limits->max_connections_per_client,
                         limits->header_timeout_ms, limits->body_timeout_ms,
                         limits->header_limit);
    srv->limits = *limits;
    return DETA_OK;
}

static bool valid_method(const char *method) {
    if (!method || !*method)
        return false;
    for (const char *p = method; *p; p++) {
        if (*p < 'A' || *p > 'Z')
            return false;
    }
    return true;
}

static const route_t *find_exact_route(const deta_http_server_t *srv, const char *method,
                                       const char *pattern) {
    for (size_t i = 0; i < srv->nroutes; i++) {
        if (strcmp(srv->routes[i].method, method) == 0 &&
            strcmp(srv->routes[i].pattern, pattern) == 0)
            return &srv->routes[i];
    }
    return NULL;
}

static bool grow_routes(deta_http_server_t *srv) {
    if (srv->nroutes < srv->cap)
        return true;
    size_t cap = srv->cap ? srv->cap * 2 : 8;
    route_t *routes = realloc(srv->routes, cap * sizeof *routes);
    if (!routes)
        return false;
    srv->routes = routes;
    srv->cap = cap;
    return true;
}

deta_err_t deta_http_route(deta_http_server_t *srv, const char *method, const char *pattern,
                           int flags, deta_http_handler_fn fn, void *opaque) {
    if (!srv || !fn || srv->daemon || !valid_method(method))
        return DETA_ERR_INVALID;
    int nparams = deta_http_pattern_params(pattern);
    if (nparams < 0 || nparams > DETA_HTTP_MAX_PARAMS)
        return DETA_ERR_INVALID;
    if (find_exact_route(srv, method, pattern))
        return DETA_ERR_CONFLICT;
    if (!grow_routes(srv))
        return DETA_ERR_INTERNAL;
    route_t r = {strdup(method), strdup(pattern), flags, fn, opaque};
    if (!r.method || !r.pattern) {
        free(r.method);
        free(r.pattern);
        return DETA_ERR_INTERNAL;
    }
    srv->routes[srv->nroutes++] = r;
    if (strlen(pattern) > srv->longest_pattern)
        srv->longest_pattern = strlen(pattern);
    return DETA_OK;
}

bool deta_http_route_at(const deta_http_server_t *srv, size_t i, const char **method,
                        const char **pattern) {
    if (!srv || i >= srv->nroutes)
        return false;
    *method = srv->routes[i].method;
    *pattern = srv->routes[i].pattern;
    return true;
}

void deta_http_server_set_metrics(deta_http_server_t *srv, deta_metrics_t *metrics) {
    if (srv && !srv->daemon)
        srv->metrics = metrics;
}

deta_err_t deta_http_server_set_cors(deta_http_server_t *srv, const char *origins,
                                     char *errstr, size_t errsize) {
    if (!srv || srv->daemon)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "HTTP server missing or started");
    return deta_cors_origins_parse(origins, "HTTP_CORS_ORIGINS", &srv->cors, errstr, errsize);
}

deta_err_t deta_http_static(deta_http_server_t *srv, const char *dir, const char *csp,
                            char *errstr, size_t errsize) {
    if (!srv || srv->daemon || !dir || !csp || strpbrk(csp, "\r\n"))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "static files: server missing or started, or no directory or policy");
    char *root = realpath(dir, NULL);
    struct stat st;
    if (!root || stat(root, &st) != 0 || !S_ISDIR(st.st_mode)) {
        free(root);
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "%.200s is not a directory", dir);
    }
    char *policy = strdup(csp);
    if (!policy) {
        free(root);
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    }
    free(srv->static_root);
    free(srv->static_csp);
    srv->static_root = root;
    srv->static_csp = policy;
    return DETA_OK;
}

void deta_http_server_set_auth(deta_http_server_t *srv, const deta_auth_t *auth) {
    if (!srv || srv->daemon)
        return;
    if (auth)
        srv->auth = *auth;
    else
        deta_auth_wipe(&srv->auth);
}

int deta_http_server_port(const deta_http_server_t *srv) { return srv ? srv->port : 0; }

/* MHD stops accepting but hands the listen socket back, still listening: new
 * clients would complete the handshake and then hang in the backlog. A shutdown
 * of the socket makes Linux refuse them at once (a load balancer moves on), while
 * the descriptor stays open, as MHD requires, until MHD_stop_daemon has run.
 * Connections already accepted keep being served. */
void deta_http_server_quiesce(deta_http_server_t *srv) {
    if (!srv || !srv->daemon || srv->quiesced_fd != MHD_INVALID_SOCKET)
        return;
    srv->quiesced_fd = MHD_quiesce_daemon(srv->daemon);
    deta_http_streams_stop(srv);
    if (srv->quiesced_fd != MHD_INVALID_SOCKET)
        shutdown(srv->quiesced_fd, SHUT_RDWR);
}

void deta_http_server_free(deta_http_server_t *srv) {
    if (!srv)
        return;
    if (srv->daemon) {
        deta_http_streams_stop(srv); /* none may stay suspended */
        http_guard_stop(srv->guard);
        MHD_stop_daemon(srv->daemon);
        deta_http_streams_forget(srv);
    }
    http_guard_free(srv->guard); /* every connection is closed */
    if (srv->quiesced_fd != MHD_INVALID_SOCKET)
        close(srv->quiesced_fd);
    for (size_t i = 0; i < srv->nroutes; i++) {
        free(srv->routes[i].method);
        free(srv->routes[i].pattern);
    }
    free(srv->routes);
    free(srv->static_root);
    free(srv->static_csp);
    deta_auth_wipe(&srv->auth);
    free(srv);
}

/* ---- one request ---- */

static double seconds_since(const struct timespec *start) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

static const char *method_label(const char *method) {
    static const char *const known[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH",
                                        "OPTIONS"};
    for (size_t i = 0; i < sizeof known / sizeof *known; i++) {
        if (strcmp(method, known[i]) == 0)
            return known[i];
    }
    return "OTHER";
}

static void record_metrics(const request_t *r, int status) {
    deta_metrics_t *m = r->srv->metrics;
    if (!m)
        return;
    char *labels = NULL;
    if (asprintf(&labels, "method=\"%s\",route=\"%s\",status=\"%d\"",
                 method_label(r->req.method), r->route_label, status) < 0)
        return;
    deta_histogram_observe(deta_histogram(m, "http_request_duration_seconds",
                                          "HTTP request duration in seconds", labels, NULL, 0),
                           seconds_since(&r->started));
    deta_counter_inc(deta_counter(m, "http_requests_total", "HTTP requests served", labels));
    free(labels);
}

/* Requests the server refuses before any handler sees them, by reason, so that a
 * service's "rejected requests" include the ones its handlers never saw. */
static void count_rejection(const request_t *r, const char *reason) {
    deta_metrics_t *m = r->srv->metrics;
    char *labels = NULL;
    if (!m || asprintf(&labels, "route=\"%s\",reason=\"%s\"", r->route_label, reason) < 0)
        return;
    deta_counter_inc(deta_counter(m, "http_requests_rejected_total",
                                  "Requests refused by the HTTP layer, by reason", labels));
    free(labels);
}

/* Every token decision, by the role the route needs and its outcome. */
static void count_auth(const request_t *r, deta_auth_role_t role, deta_auth_outcome_t o) {
    deta_metrics_t *m = r->srv->metrics;
    char labels[96];
    if (!m)
        return;
    snprintf(labels, sizeof labels, "role=\"%s\",outcome=\"%s\"", deta_auth_role_name(role),
             deta_auth_outcome_label(o));
    deta_counter_inc(deta_counter(m, "http_auth_total",
                                  "Token checks of operator and reader routes, by outcome",
                                  labels));
}

/* ---- the headers of every answer ---- */

void http_add_answer_headers(struct MHD_Response *mr, const deta_http_server_t *srv,
                             struct MHD_Connection *conn, const char *csp) {
    MHD_add_response_header(mr, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(mr, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(mr, "X-Frame-Options", "DENY");
    MHD_add_response_header(mr, "Content-Security-Policy", csp ? csp : DETA_HTTP_API_CSP);
    if (!csp)
        MHD_add_response_header(mr, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    const char *origin = deta_cors_origins_match(
        &srv->cors, MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Origin"));
    if (origin) {
        MHD_add_response_header(mr, "Access-Control-Allow-Origin", origin);
        MHD_add_response_header(mr, MHD_HTTP_HEADER_VARY, "Origin");
        MHD_add_response_header(mr, "Access-Control-Expose-Headers", CORS_EXPOSE_HEADERS);
    }
}

/* Hands resp (and its body) to MHD. */
static enum MHD_Result queue_response(request_t *r, deta_http_resp_t *resp, const char *allow) {
    struct MHD_Response *mr;
    if (resp->stream) /* http_stream.c */
        mr = deta_http_stream_response(resp->stream, r->conn, r->srv);
    else if (resp->body)
        mr = MHD_create_response_from_buffer(strlen(resp->body), resp->body,
                                             MHD_RESPMEM_MUST_FREE);
    else
        mr = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!mr) {
        resp_reset(resp);
        return MHD_NO;
    }
    resp->body = NULL; /* MHD frees it with the response */
    resp->stream = NULL;
    if (resp->content_type)
        MHD_add_response_header(mr, MHD_HTTP_HEADER_CONTENT_TYPE, resp->content_type);
    if (allow)
        MHD_add_response_header(mr, MHD_HTTP_HEADER_ALLOW, allow);
    if (resp->header_name && resp->header_value)
        MHD_add_response_header(mr, resp->header_name, resp->header_value);
    if (r->refused)
        MHD_add_response_header(mr, "Retry-After", "1");
    if (r->close_after && !resp->stream)
        MHD_add_response_header(mr, MHD_HTTP_HEADER_CONNECTION, "close");
    http_add_answer_headers(mr, r->srv, r->conn, NULL);
    http_guard_request_in(r->srv->guard, r->conn_rec);
    record_metrics(r, resp->status);
    r->status = resp->status;
    enum MHD_Result ok = MHD_queue_response(r->conn, (unsigned)resp->status, mr);
    MHD_destroy_response(mr);
    return ok;
}

static enum MHD_Result respond_error(request_t *r, int status, const char *field,
                                     const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static enum MHD_Result respond_error(request_t *r, int status, const char *field,
                                     const char *fmt, ...) {
    deta_http_resp_t resp = {0};
    va_list ap;
    va_start(ap, fmt);
    resp_verror(&resp, status, field, fmt, ap);
    va_end(ap);
    return queue_response(r, &resp, NULL);
}

/* The answer to a request the tokens refuse (o is not DETA_AUTH_ALLOWED). */
static enum MHD_Result respond_auth_refusal(request_t *r, deta_auth_role_t role,
                                            deta_auth_outcome_t o) {
    bool operator_route = role == DETA_ROLE_OPERATOR;
    deta_http_resp_t resp = {0};
    switch (o) {
    case DETA_AUTH_DISABLED:
        if (operator_route)
            deta_http_resp_error(&resp, 503, NULL,
                                 "operator actions are disabled: OPERATOR_TOKEN is not set");
        else
            deta_http_resp_error(&resp, 503, NULL,
                                 "reads need a token (HTTP_READS_NEED_AUTH) but neither "
                                 "READER_TOKEN nor OPERATOR_TOKEN is set");
        break;
    case DETA_AUTH_FORBIDDEN:
        deta_http_resp_error(&resp, 403, NULL,
                             "this route needs the operator token; the reader token may only read");
        deta_http_resp_header(&resp, "WWW-Authenticate", BEARER_SCOPE);
        break;
    case DETA_AUTH_WRONG:
        deta_http_resp_error(&resp, 401, NULL, "the bearer token is not valid");
        deta_http_resp_header(&resp, "WWW-Authenticate", BEARER_INVALID);
        break;
    default:
        deta_http_resp_error(&resp, 401, NULL, "this route needs Authorization: Bearer <%s>",
                             operator_route ? "operator token" : "reader or operator token");
        deta_http_resp_header(&resp, "WWW-Authenticate", BEARER_CHALLENGE);
        break;
    }
    DETA_WARN("refused %s %.200s (%s route): %s", r->req.method, r->req.path,
              deta_auth_role_name(role),
              o == DETA_AUTH_DISABLED    ? "no token is configured"
              : o == DETA_AUTH_FORBIDDEN ? "the reader token on an operator route"
              : o == DETA_AUTH_WRONG     ? "wrong bearer token"
                                         : "no bearer token");
    return queue_response(r, &resp, NULL);
}

/* "GET, POST": the methods of every route whose pattern matches path. */
static char *allowed_methods(const request_t *r) {
    char *list = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&list, &len);
    if (!out)
        return NULL;
    const deta_http_server_t *srv = r->srv;
    const char *names[DETA_HTTP_MAX_PARAMS], *values[DETA_HTTP_MAX_PARAMS];
    bool first = true;
    for (size_t i = 0; i < srv->nroutes; i++) {
        if (deta_http_match(srv->routes[i].pattern, r->req.path, r->match_buf, r->match_size,
                            names, values, DETA_HTTP_MAX_PARAMS) < 0)
            continue;
        fprintf(out, "%s%s", first ? "" : ", ", srv->routes[i].method);
        first = false;
    }
    fclose(out);
    return list;
}

static enum MHD_Result respond_405(request_t *r) {
    deta_http_resp_t resp = {0};
    deta_http_resp_error(&resp, 405, NULL, "%s is not allowed on %s", r->req.method,
                         r->req.path);
    char *allow = allowed_methods(r);
    enum MHD_Result ok = queue_response(r, &resp, allow);
    free(allow);
    return ok;
}

/* First route matching path and method; on failure 404 or 405. */
static int match_route(request_t *r) {
    const deta_http_server_t *srv = r->srv;
    deta_http_req_t *req = &r->req;
    bool path_known = false;
    for (size_t i = 0; i < srv->nroutes; i++) {
        const route_t *rt = &srv->routes[i];
        int n = deta_http_match(rt->pattern, req->path, r->match_buf, r->match_size,
                                req->param_names, req->param_values, DETA_HTTP_MAX_PARAMS);
        if (n < 0)
            continue;
        if (!path_known)
            r->route_label = rt->pattern;
        path_known = true;
        if (strcmp(rt->method, req->method) == 0) {
            r->route = rt;
            r->route_label = rt->pattern;
            req->nparams = n;
            return 0;
        }
    }
    req->nparams = 0;
    return path_known ? 405 : 404;
}

static bool is_json_media_type(const char *content_type) {
    if (!content_type)
        return false;
    const char *p = content_type + strspn(content_type, " \t");
    if (strncasecmp(p, JSON_MEDIA_TYPE, strlen(JSON_MEDIA_TYPE)) != 0)
        return false;
    p += strlen(JSON_MEDIA_TYPE);
    p += strspn(p, " \t");
    return *p == '\0' || *p == ';';
}

/* Content-Length above the limit; MHD has already rejected malformed values. */
static bool declared_too_large(const request_t *r) {
    const char *cl =
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (!cl)
        return false;
    errno = 0;
    unsigned long long n = strtoull(cl, NULL, 10);
    return errno == ERANGE || n > (unsigned long long)r->srv->body_limit;
}

static void request_free(request_t *r) {
    if (!r)
        return;
    free(r->match_buf);
    free(r->body);
    free(r);
}

static request_t *request_new(deta_http_server_t *srv, struct MHD_Connection *conn,
                              const char *url, const char *method) {
    request_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    clock_gettime(CLOCK_MONOTONIC, &r->started);
    r->srv = srv;
    r->conn = conn;
    r->route_label = ROUTE_UNMATCHED;
    r->match_size = strlen(url) + srv->longest_pattern + 2;
    r->match_buf = malloc(r->match_size);
    if (!r->match_buf) {
        free(r);
        return NULL;
    }
    r->req.method = method;
    r->req.path = url;
    r->req.content_type =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    r->req.impl = r;
    return r;
}

/* ---- static files (deta_http_static) ---- */

/* GET or HEAD of a path no route has: the file, or the usual 404. MHD leaves the
 * body out of a HEAD answer itself. */
static enum MHD_Result serve_static(request_t *r) {
    const deta_http_server_t *srv = r->srv;
    const char *name = deta_static_name(r->req.path, strlen(r->req.path));
    const char *type = deta_static_content_type(name);
    char *data = NULL;
    size_t len = 0;
    deta_err_t err = type ? deta_static_read(srv->static_root, name, DETA_STATIC_MAX_FILE,
                                             &data, &len)
                          : DETA_ERR_NOT_FOUND;
    if (err == DETA_ERR_NOT_FOUND)
        return respond_error(r, 404, NULL, "no route for %s", r->req.path);
    r->route_label = ROUTE_STATIC;
    if (err == DETA_ERR_INVALID) {
        DETA_ERROR("static file %s is larger than %ld bytes: not served", name,
                   DETA_STATIC_MAX_FILE);
        return respond_error(r, 500, NULL, "internal error");
    }
    if (err != DETA_OK) {
        DETA_ERROR("static file %s: cannot read it", name);
        return respond_error(r, 500, NULL, "internal error");
    }
    struct MHD_Response *mr = MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);
    if (!mr) {
        free(data);
        return MHD_NO;
    }
    MHD_add_response_header(mr, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    http_add_answer_headers(mr, srv, r->conn, srv->static_csp);
    /* Revalidated on every load, so a new deployment's files show at once. */
    MHD_add_response_header(mr, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    http_guard_request_in(srv->guard, r->conn_rec);
    record_metrics(r, 200);
    enum MHD_Result ok = MHD_queue_response(r->conn, 200, mr);
    MHD_destroy_response(mr);
    return ok;
}

/* ---- CORS preflight ---- */

/* OPTIONS with Access-Control-Request-Method: 404 for a path no route has, 403 for an
 * origin not on the list (CORS off included), else 204 with the path's methods. */
static enum MHD_Result respond_preflight(request_t *r) {
    char *methods = allowed_methods(r);
    if (!methods || !*methods) {
        free(methods);
        return respond_error(r, 404, NULL, "no route for %s", r->req.path);
    }
    const char *origin = deta_http_header(&r->req, "Origin");
    if (!deta_cors_origins_match(&r->srv->cors, origin)) {
        free(methods);
        count_rejection(r, "cors_origin");
        return respond_error(r, 403, "Origin", "origin %.100s is not allowed",
                             origin ? origin : "(none)");
    }
    struct MHD_Response *mr = MHD_create_response_from_buffer(0, (void *)"",
                                                              MHD_RESPMEM_PERSISTENT);
    if (!mr) {
        free(methods);
        return MHD_NO;
    }
    MHD_add_response_header(mr, "Access-Control-Allow-Methods", methods);
    MHD_add_response_header(mr, "Access-Control-Allow-Headers", CORS_ALLOW_HEADERS);
    MHD_add_response_header(mr, "Access-Control-Max-Age", CORS_MAX_AGE);
    http_add_answer_headers(mr, r->srv, r->conn, NULL);
    free(methods);
    http_guard_request_in(r->srv->guard, r->conn_rec);
    record_metrics(r, 204);
    enum MHD_Result ok = MHD_queue_response(r->conn, 204, mr);
    MHD_destroy_response(mr);
    return ok;
}

static bool is_preflight(const request_t *r) {
    return strcmp(r->req.method, "OPTIONS") == 0 &&
           deta_http_header(&r->req, "Access-Control-Request-Method") != NULL;
}

/* Request line and headers, in bytes, as MHD counted them. */
static size_t header_size(struct MHD_Connection *conn) {
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE);
    return info ? info->header_size : 0;
}

/* A request on a connection over a connection bound: 503 or 429, unless its route is
 * DETA_HTTP_ALWAYS (then served as usual, and the connection closed after). Returns
 * true when it answered. */
static bool refuse_over_bound(request_t *r, enum MHD_Result *ok) {
    http_admission_t admission = http_guard_admission(r->conn_rec);
    if (admission == HTTP_ADMITTED)
        return false;
    r->close_after = true;
    if (match_route(r) == 0 && (r->route->flags & DETA_HTTP_ALWAYS))
        return false;
    r->refused = true;
    const deta_http_limits_t *l = &r->srv->limits;
    if (admission == HTTP_OVER_CLIENT) {
        http_guard_count(r->srv->guard, "connections_per_client");
        *ok = respond_error(r, 429, NULL,
                            "this client address has HTTP_MAX_CONNECTIONS_PER_CLIENT (%d) "
                            "connections open; retry later",
                            l->max_connections_per_client);
    } else {
        http_guard_count(r->srv->guard, "connections");
        *ok = respond_error(r, 503, NULL,
                            "the server has HTTP_MAX_CONNECTIONS (%d) connections open; "
                            "retry later",
                            l->max_connections);
    }
    return true;
}

/* The headers are in: route, and answer at once what can be answered. */
static enum MHD_Result begin_request(deta_http_server_t *srv, struct MHD_Connection *conn,
                                     const char *url, const char *method, void **con_cls) {
    request_t *r = request_new(srv, conn, url, method);
    if (!r)
        return MHD_NO;
    *con_cls = r;
    r->conn_rec = http_guard_conn(conn);
    if (!http_guard_headers_in(srv->guard, r->conn_rec))
        return MHD_NO; /* cut by the watchdog while MHD still held the headers */
    if (header_size(conn) > (size_t)srv->limits.header_limit) {
        http_guard_count(srv->guard, "header_too_large");
        return respond_error(r, 431, NULL, "request headers exceed HTTP_HEADER_LIMIT (%ld bytes)",
                             srv->limits.header_limit);
    }
    enum MHD_Result refused;
    if (refuse_over_bound(r, &refused))
        return refused;
    if (is_preflight(r))
        return respond_preflight(r);
    int status = match_route(r);
    if (status == 404 && srv->static_root &&
        (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0))
        return serve_static(r);
    if (status == 404)
        return respond_error(r, 404, NULL, "no route for %s", url);
    if (status == 405)
        return respond_405(r);
    deta_auth_role_t role = deta_auth_route_role((r->route->flags & DETA_HTTP_OPERATOR) != 0,
                                                 method, r->route->pattern,
                                                 srv->auth.reads_need_token);
    if (role != DETA_ROLE_NONE) {
        deta_auth_outcome_t o =
            deta_auth_decide(&srv->auth, role, deta_http_header(&r->req, "Authorization"));
        count_auth(r, role, o);
        if (o != DETA_AUTH_ALLOWED)
            return respond_auth_refusal(r, role, o);
    }
    bool json = (r->route->flags & DETA_HTTP_JSON_BODY) != 0;
    bool may_be_empty = (r->route->flags & DETA_HTTP_EMPTY_BODY_OK) != 0;
    if (json && !may_be_empty && !is_json_media_type(r->req.content_type)) {
        count_rejection(r, "unsupported_media_type");
        return respond_error(r, 415, NULL, "Content-Type must be application/json, not %s",
                             r->req.content_type ? r->req.content_type : "absent");
    }
    if (declared_too_large(r)) {
        count_rejection(r, "body_too_large");
        return respond_error(r, 413, NULL, "request body exceeds %ld bytes",
                             srv->body_limit);
    }
    return MHD_YES;
}

static bool append_body(request_t *r, const char *data, size_t n) {
    if (r->body_len + n + 1 > r->body_cap) {
        size_t cap = r->body_cap ? r->body_cap : 1024;
        while (cap < r->body_len + n + 1)
            cap *= 2;
        char *body = realloc(r->body, cap);
        if (!body)
            return false;
        r->body = body;
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, data, n);
    r->body_len += n;
    r->body[r->body_len] = '\0';
    return true;
}

/* A piece of body: keep it while under the limit, drop it (and what was kept)
 * past it, and hang up on a client that goes on and on. */
static enum MHD_Result receive_body(request_t *r, const char *data, size_t *size) {
    size_t n = *size;
    *size = 0;
    r->received += n;
    size_t limit = (size_t)r->srv->body_limit;
    if (r->received > limit) {
        r->too_large = true;
        free(r->body);
        r->body = NULL;
        r->body_len = r->body_cap = 0;
        return r->received - limit > (size_t)DISCARD_SLACK ? MHD_NO : MHD_YES;
    }
    return append_body(r, data, n) ? MHD_YES : MHD_NO;
}

/* The whole body is in: parse, run the handler, answer. */
static enum MHD_Result answer_request(request_t *r) {
    if (!http_guard_request_in(r->srv->guard, r->conn_rec))
        return MHD_NO; /* answered 408 and cut: the rest of the body came too late */
    if (r->too_large) {
        count_rejection(r, "body_too_large");
        return respond_error(r, 413, NULL, "request body exceeds %ld bytes", r->srv->body_limit);
    }
    const route_t *route = r->route;
    deta_http_req_t *req = &r->req;
    req->body = r->body;
    req->body_len = r->body_len;
    bool empty_ok = (route->flags & DETA_HTTP_EMPTY_BODY_OK) != 0;
    if ((route->flags & DETA_HTTP_JSON_BODY) && !(empty_ok && r->body_len == 0)) {
        if (empty_ok && !is_json_media_type(req->content_type)) {
            count_rejection(r, "unsupported_media_type");
            return respond_error(r, 415, NULL, "Content-Type must be application/json, not %s",
                                 req->content_type ? req->content_type : "absent");
        }
        json_error_t jerr;
        req->json = json_loadb(r->body ? r->body : "", r->body_len, 0, &jerr);
        if (!req->json) {
            count_rejection(r, "malformed_json");
            return respond_error(r, 400, "body", "malformed JSON: %s (line %d, column %d)",
                                 jerr.text, jerr.line, jerr.column);
        }
    }
    deta_http_resp_t resp = {0};
    route->fn(req, &resp, route->opaque);
    json_decref(req->json);
    req->json = NULL;
    if (resp.status < 100 || resp.status > 999) {
        DETA_ERROR("handler for %s %s set no valid status (%d)", route->method, route->pattern,
                   resp.status);
        deta_http_resp_error(&resp, 500, NULL, "the handler produced no response");
    }
    return queue_response(r, &resp, NULL);
}

/* ---- the request's server span (deta/trace.h) ---- */

/* The server span of a request that reached its route, child of the caller's
 * traceparent (and tracestate) when those parse; an invalid one is ignored (a
 * new trace begins), never refused. Health and metrics (DETA_HTTP_ALWAYS) are
 * not traced. It starts when the request's headers came in. */
static deta_span_t *begin_server_span(const request_t *r) {
    deta_trace_ctx_t parent;
    bool has_parent = deta_trace_ctx_from_headers(
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "traceparent"),
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "tracestate"), &parent);
    int64_t start_ns = deta_trace_now_ns() - (int64_t)(seconds_since(&r->started) * 1e9);
    char name[DETA_SPAN_NAME_MAX];
    snprintf(name, sizeof name, "%s %s", method_label(r->req.method), r->route_label);
    deta_span_t *span =
        deta_span_begin_at(name, DETA_SPAN_SERVER, has_parent ? &parent : NULL, start_ns);
    deta_span_attr(span, "http.request.method", method_label(r->req.method));
    deta_span_attr(span, "http.route", r->route_label);
    deta_span_attr(span, "url.path", r->req.path);
    return span;
}

static enum MHD_Result finish_request(request_t *r) {
    deta_span_t *span = NULL;
    if (deta_trace_enabled() && r->route && !(r->route->flags & DETA_HTTP_ALWAYS))
        span = begin_server_span(r);
    deta_span_enter(span);
    enum MHD_Result ok = answer_request(r);
    if (span) {
        deta_span_attr_int(span, "http.response.status_code", r->status);
        if (r->status >= 500)
            deta_span_set_error(span, NULL);
        deta_span_end(span); /* no longer current */
    }
    return ok;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
    (void)version;
    request_t *r = *con_cls;
    if (!r)
        return begin_request(cls, conn, url, method, con_cls);
    if (*upload_data_size > 0)
        return receive_body(r, upload_data, upload_data_size);
    return finish_request(r);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    deta_http_server_t *srv = cls;
    (void)toe;
    /* A kept-alive connection waits for the next request's headers from now. */
    http_guard_request_done(srv->guard, http_guard_conn(conn));
    request_free(*con_cls);
    *con_cls = NULL;
}

/* MHD's own unescaper, but "%00" (and a malformed escape) is left as it is: a decoded
 * NUL would cut the C string MHD hands us, so "/index.html%00.png" would be looked up
 * as "/index.html"; kept, its '%' makes it match nothing. */
static size_t unescape(void *cls, struct MHD_Connection *conn, char *s) {
    (void)cls;
    (void)conn;
    char *out = s;
    for (const char *in = s; *in;) {
        int hi, lo;
        if (in[0] == '%' && (hi = deta_hex_digit(in[1])) >= 0 && (lo = deta_hex_digit(in[2])) >= 0 &&
            (hi | lo) != 0) {
            *out++ = (char)(hi * 16 + lo);
            in += 3;
        } else {
            *out++ = *in++;
        }
    }
    *out = '\0';
    return (size_t)(out - s);
}

static void log_mhd(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    line[strcspn(line, "\r\n")] = '\0';
    DETA_WARN("libmicrohttpd: %s", line);
}

/* After MHD failed to start: is the port held by someone else? */
static bool port_in_use(int port) {
    if (port == 0)
        return false;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                               .sin_addr.s_addr = htonl(INADDR_ANY)};
    bool in_use = bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 && errno == EADDRINUSE;
    close(fd);
    return in_use;
}

deta_err_t deta_http_server_start(deta_http_server_t *srv, char *errstr, size_t errsize) {
    if (!srv || srv->daemon)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "HTTP server missing or started");
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ITC |
                         MHD_USE_ERROR_LOG | MHD_ALLOW_SUSPEND_RESUME; /* http_stream.c */
    /* MHD warns about a pool of one: one thread is simply no pool option. */
    struct MHD_OptionItem pool[] = {
        {srv->threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END,
         (intptr_t)srv->threads, NULL},
        {MHD_OPTION_END, 0, NULL},
    };
    srv->guard = http_guard_new(&srv->limits, srv->metrics);
    if (!srv->guard)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    const deta_http_limits_t *l = &srv->limits;
    srv->daemon = MHD_start_daemon(
        flags, (uint16_t)srv->port, NULL, NULL, on_request, srv, MHD_OPTION_EXTERNAL_LOGGER,
        log_mhd, (void *)NULL, MHD_OPTION_NOTIFY_COMPLETED, on_completed, (void *)srv,
        MHD_OPTION_CONNECTION_TIMEOUT, CONNECTION_TIMEOUT_SECONDS, MHD_OPTION_UNESCAPE_CALLBACK,
        unescape, (void *)NULL, MHD_OPTION_NOTIFY_CONNECTION, http_guard_notify,
        (void *)srv->guard, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned int)(l->max_connections + DETA_HTTP_RESERVED_CONNECTIONS),
        MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        (unsigned int)(l->max_connections_per_client + DETA_HTTP_RESERVED_PER_CLIENT),
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(2 * l->header_limit + 16384),
        MHD_OPTION_ARRAY, pool, MHD_OPTION_END);
    if (srv->daemon && http_guard_start(srv->guard, errstr, errsize) != DETA_OK) {
        MHD_stop_daemon(srv->daemon);
        srv->daemon = NULL;
        http_guard_free(srv->guard);
        srv->guard = NULL;
        return DETA_ERR_INTERNAL;
    }
    if (!srv->daemon) {
        http_guard_free(srv->guard);
        srv->guard = NULL;
        if (port_in_use(srv->port))
            return deta_errf(DETA_ERR_TRANSIENT, errstr, errsize, "port %d is in use",
                             srv->port);
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize,
                         "libmicrohttpd could not start on port %d", srv->port);
    }
    bool operator_routes = false;
    for (size_t i = 0; i < srv->nroutes; i++)
        operator_routes |= (srv->routes[i].flags & DETA_HTTP_OPERATOR) != 0;
    if (operator_routes && !srv->auth.operator_token[0])
        DETA_WARN("OPERATOR_TOKEN is not set: the operator routes (stock changes, the "
                  "dead-letter administration) answer 503");
    const union MHD_DaemonInfo *info =
        MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
    if (info && info->port)
        srv->port = info->port;
    return DETA_OK;
}
