/*
 * test_http_server.c - the HTTP server (deta/http.h) on a real socket: each test
 * starts a server on a free port (port 0) and talks to it with libcurl. Covers
 * routing with path and query parameters, JSON bodies, the errors the server
 * answers itself (404, 405, 413 by Content-Length and by chunked upload, 415,
 * 400 "body"), metrics, concurrent clients, quiesce, and bad settings.
 * Needs no test stack and reads no environment variables.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <pthread.h>
#include <cmocka.h>
#include <curl/curl.h>

#include "deta/client.h"
#include "deta/http.h"
#include "deta/metrics.h"

#define BODY_LIMIT 1024
#define THREADS 4

/* ---- handlers ---- */

static void get_order(const deta_http_req_t *req, deta_http_resp_t *resp, void *opaque) {
    (void)opaque;
    const char *status = deta_http_query(req, "status");
    const char *flag = deta_http_query(req, "flag");
    deta_http_resp_json(resp, 200,
                        json_pack("{s:s,s:s*,s:s*,s:s}", "orderId",
                                  deta_http_param(req, "orderId"), "status", status, "flag",
                                  flag, "path", req->path));
}

static void get_stats(const deta_http_req_t *req, deta_http_resp_t *resp, void *opaque) {
    (void)req;
    (void)opaque;
    deta_http_resp_json(resp, 200, json_pack("{s:b}", "stats", 1));
}

static void post_order(const deta_http_req_t *req, deta_http_resp_t *resp, void *opaque) {
    (void)opaque;
    const char *customer = json_string_value(json_object_get(req->json, "customerId"));
    if (!customer) {
        deta_http_resp_error(resp, 400, "customerId", "customerId is required");
        return;
    }
    deta_http_resp_json(resp, 201,
                        json_pack("{s:s,s:i}", "customerId", customer, "bodyLength",
                                  (int)req->body_len));
}

static void post_raw(const deta_http_req_t *req, deta_http_resp_t *resp, void *opaque) {
    (void)opaque;
    deta_http_resp_json(resp, 200, json_pack("{s:i,s:s*}", "length", (int)req->body_len,
                                             "body", req->body));
}

/* A route whose JSON body is optional: says whether one came. */
static void post_optional(const deta_http_req_t *req, deta_http_resp_t *resp, void *opaque) {
    (void)opaque;
    deta_http_resp_json(resp, 200, json_pack("{s:b,s:i}", "hasBody", req->json != NULL,
                                             "bodyLength", (int)req->body_len));
}

static void get_hello(const deta_http_req_t *req, deta_http_resp_t *resp, void *opaque) {
    (void)req;
    (void)opaque;
    deta_http_resp_text(resp, 200, "text/plain", "hello");
}

static void forget_to_respond(const deta_http_req_t *req, deta_http_resp_t *resp,
                              void *opaque) {
    (void)req;
    (void)resp;
    (void)opaque;
}

/* ---- fixture: a server with the routes above, on a free port ---- */

typedef struct fixture {
    deta_metrics_t *metrics;
    deta_http_server_t *srv;
    int port;
} fixture_t;

static deta_http_server_t *server_with_routes(int port, int threads, deta_metrics_t *metrics) {
    char err[256] = "";
    deta_http_server_t *srv = deta_http_server_new(port, BODY_LIMIT, threads, err, sizeof err);
    assert_non_null(srv);
    /* the literal first, so that it wins over the parameter */
    assert_int_equal(deta_http_route(srv, "GET", "/api/orders/stats", 0, get_stats, NULL),
                     DETA_OK);
    assert_int_equal(deta_http_route(srv, "GET", "/api/orders/{orderId}", 0, get_order, NULL),
                     DETA_OK);
    assert_int_equal(deta_http_route(srv, "POST", "/api/orders", DETA_HTTP_JSON_BODY,
                                     post_order, NULL),
                     DETA_OK);
    assert_int_equal(deta_http_route(srv, "POST", "/api/raw", 0, post_raw, NULL), DETA_OK);
    assert_int_equal(deta_http_route(srv, "PUT", "/api/raw", 0, post_raw, NULL), DETA_OK);
    assert_int_equal(deta_http_route(srv, "GET", "/hello", 0, get_hello, NULL), DETA_OK);
    assert_int_equal(deta_http_route(srv, "GET", "/broken", 0, forget_to_respond, NULL),
                     DETA_OK);
    assert_int_equal(deta_http_route(srv, "POST", "/api/optional",
                                     DETA_HTTP_JSON_BODY | DETA_HTTP_EMPTY_BODY_OK,
                                     post_optional, NULL),
                     DETA_OK);
    deta_http_server_set_metrics(srv, metrics);
    return srv;
}

static int setup(void **state) {
    fixture_t *f = calloc(1, sizeof *f);
    f->metrics = deta_metrics_new();
    f->srv = server_with_routes(0, THREADS, f->metrics);
    char err[256] = "";
    if (deta_http_server_start(f->srv, err, sizeof err) != DETA_OK) {
        fprintf(stderr, "cannot start: %s\n", err);
        return -1;
    }
    f->port = deta_http_server_port(f->srv);
    *state = f;
    return f->port > 0 ? 0 : -1;
}

static int teardown(void **state) {
    fixture_t *f = *state;
    deta_http_server_free(f->srv);
    deta_metrics_free(f->metrics);
    free(f);
    return 0;
}

/* ---- a small libcurl client (chunked uploads, reused handles, raw headers),
 * writing the body through the clients' buffer (deta/client.h) ---- */

typedef struct call {
    const char *method;
    const char *path;
    const char *content_type; /* NULL sends none */
    const char *body;         /* with body_len, sent with Content-Length ... */
    size_t body_len;
    bool chunked;             /* ... or chunked, in pieces of 100 bytes */
    size_t endless;           /* chunked 'x' * endless instead of body */
    CURL *curl;               /* reuse this handle (and its connection) */
    long timeout_ms;
} call_t;

typedef struct reply {
    CURLcode rc;
    long status;
    char *body;
    size_t len;
    json_t *json;
    char content_type[128];
    char allow[128];
} reply_t;

typedef struct upload {
    const char *data;
    size_t len, pos;
} upload_t;

static void copy_header_value(char *dst, size_t dstsize, const char *v, size_t len) {
    while (len > 0 && (*v == ' ' || *v == '\t'))
        v++, len--;
    while (len > 0 && (v[len - 1] == '\r' || v[len - 1] == '\n'))
        len--;
    snprintf(dst, dstsize, "%.*s", (int)len, v);
}

static size_t on_header(char *line, size_t size, size_t n, void *userdata) {
    reply_t *r = userdata;
    size_t len = size * n;
    if (len > 13 && strncasecmp(line, "Content-Type:", 13) == 0)
        copy_header_value(r->content_type, sizeof r->content_type, line + 13, len - 13);
    else if (len > 6 && strncasecmp(line, "Allow:", 6) == 0)
        copy_header_value(r->allow, sizeof r->allow, line + 6, len - 6);
    return len;
}

static size_t on_read(char *buf, size_t size, size_t n, void *userdata) {
    upload_t *u = userdata;
    size_t want = size * n < 100 ? size * n : 100;
    size_t left = u->len - u->pos;
    size_t take = left < want ? left : want;
    if (u->data)
        memcpy(buf, u->data + u->pos, take);
    else
        memset(buf, 'x', take);
    u->pos += take;
    return take;
}

static void http_call(int port, const call_t *c, reply_t *r) {
    memset(r, 0, sizeof *r);
    CURL *curl = c->curl ? c->curl : curl_easy_init();
    assert_non_null(curl);
    char url[512];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, c->path);
    struct curl_slist *headers = curl_slist_append(NULL, "Expect:");
    char ct[160];
    snprintf(ct, sizeof ct, "Content-Type:%s%s", c->content_type ? " " : "",
             c->content_type ? c->content_type : "");
    headers = curl_slist_append(headers, ct);
    upload_t up = {c->body, c->endless ? c->endless : c->body_len, 0};
    deta_client_buf_t body = {0}; /* stays NULL when no byte of body came */
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, c->method);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, deta_client_buf_write);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, c->timeout_ms ? c->timeout_ms : 10000L);
    if (c->chunked || c->endless) {
        headers = curl_slist_append(headers, "Transfer-Encoding: chunked");
        curl_easy_setopt(curl, CURLOPT_POST, 1L);
        curl_easy_setopt(curl, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(curl, CURLOPT_READDATA, &up);
    } else if (c->body) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, c->body);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)c->body_len);
    } else {
        curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, c->method);
    }
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    r->rc = curl_easy_perform(curl);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r->status);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(headers);
    if (!c->curl)
        curl_easy_cleanup(curl);
    r->body = body.data;
    r->len = body.len;
    if (r->body)
        r->json = json_loads(r->body, 0, NULL);
}

static void reply_free(reply_t *r) {
    free(r->body);
    json_decref(r->json);
    memset(r, 0, sizeof *r);
}

static reply_t get(int port, const char *path) {
    reply_t r;
    http_call(port, &(call_t){.method = "GET", .path = path}, &r);
    assert_int_equal(r.rc, CURLE_OK);
    return r;
}

static reply_t post(int port, const char *path, const char *content_type, const char *body) {
    reply_t r;
    http_call(port,
              &(call_t){.method = "POST", .path = path, .content_type = content_type,
                        .body = body, .body_len = strlen(body)},
              &r);
    assert_int_equal(r.rc, CURLE_OK);
    return r;
}

static const char *field(const reply_t *r, const char *name) {
    assert_non_null(r->json);
    return json_string_value(json_object_get(r->json, name));
}

/* An error body of exactly {"status","error"[,"field"],"message"}. */
static void assert_error(const reply_t *r, int status, const char *error, const char *fld) {
    assert_int_equal(r->status, status);
    assert_string_equal(r->content_type, "application/json");
    assert_non_null(r->json);
    assert_int_equal(json_integer_value(json_object_get(r->json, "status")), status);
    assert_string_equal(field(r, "error"), error);
    assert_non_null(field(r, "message"));
    if (fld)
        assert_string_equal(field(r, "field"), fld);
    else
        assert_null(json_object_get(r->json, "field"));
    assert_int_equal(json_object_size(r->json), fld ? 4 : 3);
}

/* ---- tests ---- */

static void get_with_a_path_parameter_returns_json(void **state) {
    fixture_t *f = *state;
    reply_t r = get(f->port, "/api/orders/ord-1");
    assert_int_equal(r.status, 200);
    assert_string_equal(r.content_type, "application/json");
    assert_string_equal(field(&r, "orderId"), "ord-1");
    assert_string_equal(field(&r, "path"), "/api/orders/ord-1");
    reply_free(&r);
    r = get(f->port, "/api/orders/ord-2/"); /* trailing slash */
    assert_int_equal(r.status, 200);
    assert_string_equal(field(&r, "orderId"), "ord-2");
    reply_free(&r);
    r = get(f->port, "/api/orders/a%20b"); /* MHD decodes the path */
    assert_int_equal(r.status, 200);
    assert_string_equal(field(&r, "orderId"), "a b");
    reply_free(&r);
    r = get(f->port, "/api/orders/stats"); /* the literal registered first wins */
    assert_int_equal(r.status, 200);
    assert_true(json_is_true(json_object_get(r.json, "stats")));
    reply_free(&r);
}

static void query_string_parameters_are_readable(void **state) {
    fixture_t *f = *state;
    reply_t r = get(f->port, "/api/orders/o1?status=PAID%20LATE&flag&other=1");
    assert_int_equal(r.status, 200);
    assert_string_equal(field(&r, "orderId"), "o1");
    assert_string_equal(field(&r, "status"), "PAID LATE");
    assert_string_equal(field(&r, "flag"), ""); /* present without a value */
    assert_string_equal(field(&r, "path"), "/api/orders/o1");
    reply_free(&r);
    r = get(f->port, "/api/orders/o1");
    assert_null(json_object_get(r.json, "status"));
    assert_null(json_object_get(r.json, "flag"));
    reply_free(&r);
}

static void post_json_reaches_the_handler_parsed(void **state) {
    fixture_t *f = *state;
    const char *body = "{\"customerId\":\"c-1\",\"items\":[]}";
    reply_t r = post(f->port, "/api/orders", "application/json", body);
    assert_int_equal(r.status, 201);
    assert_string_equal(field(&r, "customerId"), "c-1");
    assert_int_equal(json_integer_value(json_object_get(r.json, "bodyLength")), strlen(body));
    reply_free(&r);
    /* media type is case-insensitive and may carry parameters */
    r = post(f->port, "/api/orders", "Application/JSON ; charset=utf-8", body);
    assert_int_equal(r.status, 201);
    reply_free(&r);
    /* the handler's own validation error keeps the shape */
    r = post(f->port, "/api/orders", "application/json", "{\"customerId\":7}");
    assert_error(&r, 400, "Bad Request", "customerId");
    assert_string_equal(r.body, "{\"status\":400,\"error\":\"Bad Request\",\"field\":"
                                "\"customerId\",\"message\":\"customerId is required\"}");
    reply_free(&r);
}

static void raw_routes_get_the_bytes(void **state) {
    fixture_t *f = *state;
    reply_t r = post(f->port, "/api/raw", "text/plain", "not json at all");
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "length")), 15);
    assert_string_equal(field(&r, "body"), "not json at all");
    reply_free(&r);
    http_call(f->port, &(call_t){.method = "PUT", .path = "/api/raw"}, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "length")), 0);
    assert_null(json_object_get(r.json, "body")); /* no body: NULL */
    reply_free(&r);
    r = get(f->port, "/hello");
    assert_int_equal(r.status, 200);
    assert_string_equal(r.content_type, "text/plain");
    assert_string_equal(r.body, "hello");
    reply_free(&r);
}

static void unknown_path_is_404(void **state) {
    fixture_t *f = *state;
    reply_t r = get(f->port, "/nope");
    assert_error(&r, 404, "Not Found", NULL);
    assert_string_equal(r.body, "{\"status\":404,\"error\":\"Not Found\","
                                "\"message\":\"no route for /nope\"}");
    reply_free(&r);
    r = get(f->port, "/api/orders/o1/items");
    assert_error(&r, 404, "Not Found", NULL);
    reply_free(&r);
    r = post(f->port, "/api/nothing", "application/json", "{}");
    assert_error(&r, 404, "Not Found", NULL);
    reply_free(&r);
}

static void wrong_method_is_405(void **state) {
    fixture_t *f = *state;
    reply_t r;
    http_call(f->port, &(call_t){.method = "DELETE", .path = "/api/orders"}, &r);
    assert_error(&r, 405, "Method Not Allowed", NULL);
    assert_string_equal(r.allow, "POST");
    reply_free(&r);
    r = get(f->port, "/api/raw");
    assert_error(&r, 405, "Method Not Allowed", NULL);
    assert_string_equal(r.allow, "POST, PUT");
    reply_free(&r);
    r = post(f->port, "/api/orders/o1", "application/json", "{}");
    assert_error(&r, 405, "Method Not Allowed", NULL);
    assert_string_equal(r.allow, "GET");
    reply_free(&r);
}

static void json_route_without_json_is_415(void **state) {
    fixture_t *f = *state;
    const char *types[] = {"text/plain", "application/jsonx", "application/json-patch+json",
                           "application/x-www-form-urlencoded"};
    for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
        reply_t r = post(f->port, "/api/orders", types[i], "{\"customerId\":\"c\"}");
        assert_error(&r, 415, "Unsupported Media Type", NULL);
        reply_free(&r);
    }
    reply_t r = post(f->port, "/api/orders", NULL, "{\"customerId\":\"c\"}");
    assert_error(&r, 415, "Unsupported Media Type", NULL);
    assert_non_null(strstr(field(&r, "message"), "absent"));
    reply_free(&r);
}

/* A JSON object of exactly len bytes. */
static char *json_of_length(size_t len) {
    const char *head = "{\"customerId\":\"c\",\"pad\":\"";
    char *s = malloc(len + 1);
    size_t head_len = strlen(head);
    memcpy(s, head, head_len);
    memset(s + head_len, 'p', len - head_len - 2);
    memcpy(s + len - 2, "\"}", 3);
    return s;
}

static void body_over_the_limit_is_413_by_content_length(void **state) {
    fixture_t *f = *state;
    char *exact = json_of_length(BODY_LIMIT);
    reply_t r = post(f->port, "/api/orders", "application/json", exact);
    assert_int_equal(r.status, 201); /* the limit itself is allowed */
    assert_int_equal(json_integer_value(json_object_get(r.json, "bodyLength")), BODY_LIMIT);
    reply_free(&r);
    char *over = json_of_length(BODY_LIMIT + 1);
    r = post(f->port, "/api/orders", "application/json", over);
    assert_error(&r, 413, "Content Too Large", NULL);
    reply_free(&r);
    r = post(f->port, "/api/raw", "text/plain", over); /* raw routes are bounded too */
    assert_error(&r, 413, "Content Too Large", NULL);
    reply_free(&r);
    char *big = json_of_length(200 * 1024);
    r = post(f->port, "/api/orders", "application/json", big);
    assert_error(&r, 413, "Content Too Large", NULL);
    reply_free(&r);
    free(exact);
    free(over);
    free(big);
}

static void body_over_the_limit_is_413_when_chunked(void **state) {
    fixture_t *f = *state;
    /* accumulated across many pieces, up to the limit */
    char *exact = json_of_length(BODY_LIMIT);
    reply_t r;
    http_call(f->port,
              &(call_t){.method = "POST", .path = "/api/orders",
                        .content_type = "application/json", .body = exact,
                        .body_len = BODY_LIMIT, .chunked = true},
              &r);
    assert_int_equal(r.rc, CURLE_OK);
    assert_int_equal(r.status, 201);
    assert_int_equal(json_integer_value(json_object_get(r.json, "bodyLength")), BODY_LIMIT);
    reply_free(&r);
    char *over = json_of_length(4 * BODY_LIMIT);
    http_call(f->port,
              &(call_t){.method = "POST", .path = "/api/orders",
                        .content_type = "application/json", .body = over,
                        .body_len = 4 * BODY_LIMIT, .chunked = true},
              &r);
    assert_int_equal(r.rc, CURLE_OK);
    assert_error(&r, 413, "Content Too Large", NULL);
    reply_free(&r);
    free(exact);
    free(over);
}

static void endless_upload_is_cut_off(void **state) {
    fixture_t *f = *state;
    reply_t r;
    http_call(f->port,
              &(call_t){.method = "POST", .path = "/api/raw", .content_type = "text/plain",
                        .endless = 8 * 1024 * 1024},
              &r);
    assert_int_not_equal(r.rc, CURLE_OK); /* hung up on, no answer */
    assert_int_not_equal(r.status, 200);
    reply_free(&r);
    r = get(f->port, "/hello"); /* and the server is fine */
    assert_int_equal(r.status, 200);
    reply_free(&r);
}

static void malformed_json_is_400_on_body(void **state) {
    fixture_t *f = *state;
    const char *bad[] = {"{\"customerId\":", "not json", "{\"a\":1}}", "\"just a string\""};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        reply_t r = post(f->port, "/api/orders", "application/json", bad[i]);
        assert_error(&r, 400, "Bad Request", "body");
        assert_non_null(strstr(field(&r, "message"), "malformed JSON: "));
        assert_non_null(strstr(field(&r, "message"), "line 1, column "));
        reply_free(&r);
    }
    reply_t r;
    http_call(f->port,
              &(call_t){.method = "POST", .path = "/api/orders",
                        .content_type = "application/json"},
              &r);
    assert_error(&r, 400, "Bad Request", "body"); /* no body at all */
    reply_free(&r);
}

/* DETA_HTTP_EMPTY_BODY_OK: no body passes whatever the Content-Type; a body
 * with bytes is held to the JSON route's rules (415, 400 on body). */
static void optional_json_body_may_be_empty(void **state) {
    fixture_t *f = *state;
    const char *types[] = {NULL, "text/plain", "application/json"};
    for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
        reply_t r;
        http_call(f->port, &(call_t){.method = "POST", .path = "/api/optional",
                                     .content_type = types[i]},
                  &r);
        assert_int_equal(r.status, 200);
        assert_false(json_is_true(json_object_get(r.json, "hasBody")));
        reply_free(&r);
    }
    reply_t r = post(f->port, "/api/optional", "application/json", "{\"reason\":\"x\"}");
    assert_int_equal(r.status, 200);
    assert_true(json_is_true(json_object_get(r.json, "hasBody")));
    reply_free(&r);
    r = post(f->port, "/api/optional", "text/plain", "{}");
    assert_error(&r, 415, "Unsupported Media Type", NULL);
    reply_free(&r);
    r = post(f->port, "/api/optional", NULL, "{}");
    assert_error(&r, 415, "Unsupported Media Type", NULL);
    reply_free(&r);
    r = post(f->port, "/api/optional", "application/json", "{\"reason\":");
    assert_error(&r, 400, "Bad Request", "body");
    reply_free(&r);
}

static void a_handler_that_sets_nothing_is_500(void **state) {
    fixture_t *f = *state;
    reply_t r = get(f->port, "/broken");
    assert_error(&r, 500, "Internal Server Error", NULL);
    reply_free(&r);
}

static void assert_rendered(deta_metrics_t *m, const char *line) {
    char *text = deta_metrics_render(m);
    assert_non_null(text);
    if (!strstr(text, line))
        fail_msg("missing \"%s\" in:\n%s", line, text);
    free(text);
}

static void requests_are_measured(void **state) {
    fixture_t *f = *state;
    reply_t r = get(f->port, "/api/orders/m1");
    reply_free(&r);
    r = get(f->port, "/api/orders/m2?x=1");
    reply_free(&r);
    r = get(f->port, "/missing");
    reply_free(&r);
    r = post(f->port, "/api/orders", "application/json", "{\"customerId\":\"c\"}");
    reply_free(&r);
    r = post(f->port, "/api/orders", "text/plain", "{}");
    reply_free(&r);
    http_call(f->port, &(call_t){.method = "DELETE", .path = "/api/orders/m1"}, &r);
    reply_free(&r);
    http_call(f->port, &(call_t){.method = "BREW", .path = "/coffee"}, &r);
    reply_free(&r);
    assert_rendered(f->metrics, "\nhttp_requests_total{method=\"GET\",route=\"/api/orders/"
                                "{orderId}\",status=\"200\"} 2\n");
    assert_rendered(f->metrics, "\nhttp_requests_total{method=\"GET\",route=\"unmatched\","
                                "status=\"404\"} 1\n");
    assert_rendered(f->metrics, "\nhttp_requests_total{method=\"POST\",route=\"/api/orders\","
                                "status=\"201\"} 1\n");
    assert_rendered(f->metrics, "\nhttp_requests_total{method=\"POST\",route=\"/api/orders\","
                                "status=\"415\"} 1\n");
    assert_rendered(f->metrics, "\nhttp_requests_total{method=\"DELETE\",route=\"/api/orders/"
                                "{orderId}\",status=\"405\"} 1\n");
    assert_rendered(f->metrics, "\nhttp_requests_total{method=\"OTHER\",route=\"unmatched\","
                                "status=\"404\"} 1\n");
    assert_rendered(f->metrics, "\nhttp_request_duration_seconds_count{method=\"GET\",route=\""
                                "/api/orders/{orderId}\",status=\"200\"} 2\n");
    assert_rendered(f->metrics, "\nhttp_request_duration_seconds_bucket{method=\"POST\",route="
                                "\"/api/orders\",status=\"201\",le=\"+Inf\"} 1\n");
    assert_rendered(f->metrics, "# TYPE http_request_duration_seconds histogram\n");
    assert_rendered(f->metrics, "# TYPE http_requests_total counter\n");
}

#define CLIENTS 4
#define REQUESTS_EACH 25

typedef struct client {
    int port;
    int id;
    int failures;
} client_t;

/* No cmocka assertions here: they must not fire off the main thread. */
static void *client_loop(void *arg) {
    client_t *c = arg;
    CURL *curl = curl_easy_init();
    for (int i = 0; i < REQUESTS_EACH; i++) {
        char path[64], id[32];
        snprintf(id, sizeof id, "c%d-%d", c->id, i);
        snprintf(path, sizeof path, "/api/orders/%s", id);
        reply_t r;
        http_call(c->port, &(call_t){.method = "GET", .path = path, .curl = curl}, &r);
        const char *got = r.json ? json_string_value(json_object_get(r.json, "orderId")) : NULL;
        if (r.rc != CURLE_OK || r.status != 200 || !got || strcmp(got, id) != 0)
            c->failures++;
        reply_free(&r);
    }
    curl_easy_cleanup(curl);
    return NULL;
}

static void concurrent_clients_are_all_served(void **state) {
    fixture_t *f = *state;
    pthread_t threads[CLIENTS];
    client_t clients[CLIENTS];
    for (int i = 0; i < CLIENTS; i++) {
        clients[i] = (client_t){f->port, i, 0};
        assert_int_equal(pthread_create(&threads[i], NULL, client_loop, &clients[i]), 0);
    }
    for (int i = 0; i < CLIENTS; i++) {
        pthread_join(threads[i], NULL);
        assert_int_equal(clients[i].failures, 0);
    }
    char line[160];
    snprintf(line, sizeof line,
             "\nhttp_requests_total{method=\"GET\",route=\"/api/orders/{orderId}\","
             "status=\"200\"} %d\n",
             CLIENTS * REQUESTS_EACH);
    assert_rendered(f->metrics, line);
}

static void quiesce_refuses_new_clients_and_free_stops(void **state) {
    (void)state;
    deta_http_server_t *srv = server_with_routes(0, 1, NULL); /* one thread: no pool */
    char err[256] = "";
    assert_int_equal(deta_http_server_start(srv, err, sizeof err), DETA_OK);
    int port = deta_http_server_port(srv);
    CURL *kept = curl_easy_init();
    reply_t r;
    http_call(port, &(call_t){.method = "GET", .path = "/hello", .curl = kept}, &r);
    assert_int_equal(r.status, 200);
    reply_free(&r);

    deta_http_server_quiesce(srv);
    deta_http_server_quiesce(srv); /* twice is harmless */
    /* the connection accepted before goes on being served */
    http_call(port, &(call_t){.method = "GET", .path = "/hello", .curl = kept}, &r);
    assert_int_equal(r.rc, CURLE_OK);
    assert_int_equal(r.status, 200);
    reply_free(&r);
    /* a new one is refused at once */
    http_call(port, &(call_t){.method = "GET", .path = "/hello", .timeout_ms = 2000}, &r);
    assert_int_equal(r.rc, CURLE_COULDNT_CONNECT);
    reply_free(&r);
    curl_easy_cleanup(kept);
    deta_http_server_free(srv);
}

static void bad_settings_and_routes_are_refused(void **state) {
    (void)state;
    char err[256] = "";
    assert_null(deta_http_server_new(-1, 1024, 1, err, sizeof err));
    assert_true(strlen(err) > 0);
    assert_null(deta_http_server_new(65536, 1024, 1, NULL, 0));
    assert_null(deta_http_server_new(0, 0, 1, NULL, 0));
    assert_null(deta_http_server_new(0, 1024, 0, NULL, 0));

    deta_http_server_t *srv = deta_http_server_new(0, 1024, 2, err, sizeof err);
    assert_non_null(srv);
    assert_int_equal(deta_http_route(srv, "GET", "no-slash", 0, get_hello, NULL),
                     DETA_ERR_INVALID);
    assert_int_equal(deta_http_route(srv, "GET", "/a/{unclosed", 0, get_hello, NULL),
                     DETA_ERR_INVALID);
    assert_int_equal(deta_http_route(srv, "GET", "/a/x{id}", 0, get_hello, NULL),
                     DETA_ERR_INVALID);
    assert_int_equal(deta_http_route(srv, "GET", "/a/{}", 0, get_hello, NULL), DETA_ERR_INVALID);
    assert_int_equal(deta_http_route(srv, "GET", "/a/\"q\"", 0, get_hello, NULL),
                     DETA_ERR_INVALID);
    assert_int_equal(deta_http_route(srv, "GET", "/{a}/{b}/{c}/{d}/{e}", 0, get_hello, NULL),
                     DETA_ERR_INVALID);
    assert_int_equal(deta_http_route(srv, "get", "/a", 0, get_hello, NULL), DETA_ERR_INVALID);
    assert_int_equal(deta_http_route(srv, "GET", "/a", 0, NULL, NULL), DETA_ERR_INVALID);
    assert_int_equal(deta_http_route(srv, "GET", "/{a}/{b}/{c}/{d}", 0, get_hello, NULL),
                     DETA_OK);
    assert_int_equal(deta_http_route(srv, "GET", "/a", 0, get_hello, NULL), DETA_OK);
    assert_int_equal(deta_http_route(srv, "GET", "/a", 0, get_hello, NULL), DETA_ERR_CONFLICT);
    assert_int_equal(deta_http_route(srv, "POST", "/a", 0, get_hello, NULL), DETA_OK);

    assert_int_equal(deta_http_server_start(srv, err, sizeof err), DETA_OK);
    int port = deta_http_server_port(srv);
    assert_true(port > 0);
    assert_int_equal(deta_http_server_start(srv, err, sizeof err), DETA_ERR_INVALID);
    assert_int_equal(deta_http_route(srv, "GET", "/late", 0, get_hello, NULL),
                     DETA_ERR_INVALID);

    /* the port is taken now */
    deta_http_server_t *second = deta_http_server_new(port, 1024, 1, err, sizeof err);
    assert_non_null(second);
    err[0] = '\0';
    assert_int_equal(deta_http_server_start(second, err, sizeof err), DETA_ERR_TRANSIENT);
    assert_non_null(strstr(err, "in use"));
    deta_http_server_free(second);

    reply_t r = get(port, "/1/2/3/4");
    assert_int_equal(r.status, 200);
    reply_free(&r);
    deta_http_server_free(srv);
    deta_http_server_free(NULL);
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(get_with_a_path_parameter_returns_json, setup, teardown),
        cmocka_unit_test_setup_teardown(query_string_parameters_are_readable, setup, teardown),
        cmocka_unit_test_setup_teardown(post_json_reaches_the_handler_parsed, setup, teardown),
        cmocka_unit_test_setup_teardown(raw_routes_get_the_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(unknown_path_is_404, setup, teardown),
        cmocka_unit_test_setup_teardown(wrong_method_is_405, setup, teardown),
        cmocka_unit_test_setup_teardown(json_route_without_json_is_415, setup, teardown),
        cmocka_unit_test_setup_teardown(optional_json_body_may_be_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(body_over_the_limit_is_413_by_content_length, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(body_over_the_limit_is_413_when_chunked, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(endless_upload_is_cut_off, setup, teardown),
        cmocka_unit_test_setup_teardown(malformed_json_is_400_on_body, setup, teardown),
        cmocka_unit_test_setup_teardown(a_handler_that_sets_nothing_is_500, setup, teardown),
        cmocka_unit_test_setup_teardown(requests_are_measured, setup, teardown),
        cmocka_unit_test_setup_teardown(concurrent_clients_are_all_served, setup, teardown),
        cmocka_unit_test(quiesce_refuses_new_clients_and_free_stops),
        cmocka_unit_test(bad_settings_and_routes_are_refused),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return failed;
}
