/*
 * test_http_console.c - what libdeta's HTTP server adds for the web console
 * (docs/console.md), on a real socket: a server on a free port (port 0) with a few
 * routes, CORS for two origins and static files from a scratch directory, talked to
 * with libcurl. Covers the security headers on every answer (the server's own 404,
 * 405, 413, 415, 400 included), the static files' rules (index, types, HEAD, refused
 * paths, links out of the directory, routes winning over files), CORS headers and
 * preflights, and a server configured with neither. Needs no test stack.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "deta/http.h"

#define CONSOLE_CSP                                                                      \
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "    \
    "connect-src 'self' http://localhost:8081; frame-ancestors 'none'; base-uri 'none'; " \
    "form-action 'self'"
#define ORIGINS "http://localhost:8080,http://127.0.0.1:8080"
#define LISTED "http://127.0.0.1:8080"

/* ---- handlers ---- */

static void list_orders(const deta_http_req_t *req, deta_http_resp_t *resp, void *opaque) {
    (void)req;
    (void)opaque;
    deta_http_resp_json(resp, 200, json_pack("{s:[]}", "items"));
}

static void create_order(const deta_http_req_t *req, deta_http_resp_t *resp, void *opaque) {
    (void)req;
    (void)opaque;
    deta_http_resp_json(resp, 201, json_pack("{s:s}", "orderId", "o-1"));
}

static void hello_route(const deta_http_req_t *req, deta_http_resp_t *resp, void *opaque) {
    (void)req;
    (void)opaque;
    deta_http_resp_text(resp, 200, "text/plain", "from the route");
}

/* ---- a scratch console directory ---- */

typedef struct fixture {
    char top[64]; /* holds console/ and secret.txt */
    char dir[96];
    deta_http_server_t *srv;   /* CORS and static files */
    deta_http_server_t *plain; /* neither */
    int port, plain_port;
} fixture_t;

static void write_file(const char *dir, const char *name, const char *text, size_t len) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    fclose(f);
}

static void make_console(fixture_t *f) {
    snprintf(f->top, sizeof f->top, "/tmp/deta-console-XXXXXX");
    assert_non_null(mkdtemp(f->top));
    snprintf(f->dir, sizeof f->dir, "%s/console", f->top);
    assert_int_equal(mkdir(f->dir, 0755), 0);
    char js[128];
    snprintf(js, sizeof js, "%s/js", f->dir);
    assert_int_equal(mkdir(js, 0755), 0);
    write_file(f->top, "secret.txt", "TOP-SECRET-BYTES", 16);
    write_file(f->dir, "index.html", "<!doctype html><p>console</p>", 29);
    write_file(f->dir, "console.css", "p{}", 3);
    write_file(f->dir, "js/app.js", "export {};", 10);
    write_file(f->dir, "logo.png", "\x89PNG\r\n\x1a\n\0\0", 10); /* NULs inside */
    write_file(f->dir, "run.sh", "echo", 4);                    /* no type: not served */
    write_file(f->dir, ".env", "X=1", 3);
    write_file(f->dir, "hello.txt", "from the file", 13);        /* a route has this path */
    char path[256], target[256];
    snprintf(path, sizeof path, "%s/leak.txt", f->dir);
    snprintf(target, sizeof target, "%s/secret.txt", f->top);
    assert_int_equal(symlink(target, path), 0);
    snprintf(path, sizeof path, "%s/up.txt", f->dir);
    assert_int_equal(symlink("../secret.txt", path), 0);
}

static deta_http_server_t *server(bool console, const char *dir) {
    char err[256] = "";
    deta_http_server_t *srv = deta_http_server_new(0, 1024, 2, err, sizeof err);
    assert_non_null(srv);
    assert_int_equal(deta_http_route(srv, "GET", "/api/orders", 0, list_orders, NULL), DETA_OK);
    assert_int_equal(deta_http_route(srv, "POST", "/api/orders", DETA_HTTP_JSON_BODY,
                                     create_order, NULL),
                     DETA_OK);
    assert_int_equal(deta_http_route(srv, "GET", "/hello.txt", 0, hello_route, NULL), DETA_OK);
    if (console) {
        assert_int_equal(deta_http_server_set_cors(srv, ORIGINS, err, sizeof err), DETA_OK);
        assert_int_equal(deta_http_static(srv, dir, CONSOLE_CSP, err, sizeof err), DETA_OK);
    }
    assert_int_equal(deta_http_server_start(srv, err, sizeof err), DETA_OK);
    return srv;
}

static int setup(void **state) {
    fixture_t *f = calloc(1, sizeof *f);
    make_console(f);
    f->srv = server(true, f->dir);
    f->plain = server(false, NULL);
    f->port = deta_http_server_port(f->srv);
    f->plain_port = deta_http_server_port(f->plain);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture_t *f = *state;
    deta_http_server_free(f->srv);
    deta_http_server_free(f->plain);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->top);
    int rc = system(cmd);
    free(f);
    return rc == 0 ? 0 : -1;
}

/* ---- a libcurl client keeping every response header ---- */

typedef struct reply {
    long status;
    char *body;
    size_t len;
    char headers[4096]; /* "name: value\n" lines, as received */
    json_t *json;
} reply_t;

static size_t on_body(char *data, size_t size, size_t n, void *userdata) {
    reply_t *r = userdata;
    char *grown = realloc(r->body, r->len + size * n + 1);
    assert_non_null(grown);
    r->body = grown;
    memcpy(r->body + r->len, data, size * n);
    r->len += size * n;
    r->body[r->len] = '\0';
    return size * n;
}

static size_t on_header(char *line, size_t size, size_t n, void *userdata) {
    reply_t *r = userdata;
    size_t len = size * n, used = strlen(r->headers);
    if (len < sizeof r->headers - used)
        memcpy(r->headers + used, line, len);
    return len;
}

/* method path [body] with extra request headers (NULL-terminated). */
static reply_t call(int port, const char *method, const char *path, const char *body, ...) {
    reply_t r = {0};
    CURL *curl = curl_easy_init();
    assert_non_null(curl);
    char url[512];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    struct curl_slist *headers = curl_slist_append(NULL, "Expect:");
    va_list ap;
    va_start(ap, body);
    for (const char *h; (h = va_arg(ap, const char *));)
        headers = curl_slist_append(headers, h);
    va_end(ap);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_PATH_AS_IS, 1L); /* send "..": the server must refuse it */
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    else
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &r);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 10000L);
    assert_int_equal(curl_easy_perform(curl), CURLE_OK);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r.status);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    if (r.body)
        r.json = json_loads(r.body, 0, NULL);
    return r;
}

static void reply_free(reply_t *r) {
    free(r->body);
    json_decref(r->json);
}

/* The value of the response header name (its one occurrence), or NULL; static buffer. */
static const char *header(const reply_t *r, const char *name) {
    static char value[1024];
    const char *found = NULL;
    size_t n = strlen(name);
    for (const char *line = r->headers; *line;) {
        const char *eol = strchr(line, '\n');
        size_t len = eol ? (size_t)(eol - line) : strlen(line);
        if (len > n && strncasecmp(line, name, n) == 0 && line[n] == ':') {
            if (found)
                fail_msg("header %s twice", name);
            found = line + n + 1;
            while (*found == ' ')
                found++;
            size_t vlen = len - (size_t)(found - line);
            while (vlen && (found[vlen - 1] == '\r' || found[vlen - 1] == ' '))
                vlen--;
            snprintf(value, sizeof value, "%.*s", (int)vlen, found);
        }
        line = eol ? eol + 1 : line + len;
    }
    return found ? value : NULL;
}

static void assert_header(const reply_t *r, const char *name, const char *want) {
    const char *v = header(r, name);
    if (!v)
        fail_msg("%ld answer without %s; headers:\n%s", r->status, name, r->headers);
    if (strcmp(v, want) != 0)
        fail_msg("%s is \"%s\", want \"%s\"", name, v, want);
}

/* The headers docs/console.md puts on every answer; api: an API answer's policy. */
static void assert_security_headers(const reply_t *r, bool api) {
    assert_header(r, "X-Content-Type-Options", "nosniff");
    assert_header(r, "Referrer-Policy", "no-referrer");
    assert_header(r, "X-Frame-Options", "DENY");
    if (api) {
        assert_header(r, "Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'");
        assert_header(r, "Cache-Control", "no-store");
    } else {
        assert_header(r, "Content-Security-Policy", CONSOLE_CSP);
    }
    assert_null(header(r, "Access-Control-Allow-Credentials"));
}

static void assert_json_404(const reply_t *r) {
    if (r->status != 404)
        fail_msg("status %ld, want 404; body %s", r->status, r->body ? r->body : "");
    assert_header(r, "Content-Type", "application/json");
    assert_non_null(r->json);
    assert_int_equal(json_integer_value(json_object_get(r->json, "status")), 404);
    assert_security_headers(r, true);
}

/* ---- tests ---- */

static void every_api_answer_has_the_security_headers(void **state) {
    fixture_t *f = *state;
    char big[2048];
    memset(big, ' ', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    struct {
        const char *method, *path, *body, *content_type;
        long status;
    } cases[] = {
        {"GET", "/api/orders", NULL, NULL, 200},
        {"POST", "/api/orders", "{}", "Content-Type: application/json", 201},
        {"GET", "/api/nothing", NULL, NULL, 404},
        {"DELETE", "/api/orders", NULL, NULL, 405},
        {"POST", "/api/orders", big, "Content-Type: application/json", 413},
        {"POST", "/api/orders", "{}", "Content-Type: text/plain", 415},
        {"POST", "/api/orders", "{", "Content-Type: application/json", 400},
        {"OPTIONS", "/api/orders", NULL, NULL, 405}, /* no preflight: routed as usual */
    };
    int ports[] = {f->port, f->plain_port};
    for (size_t p = 0; p < 2; p++) {
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
            reply_t r = call(ports[p], cases[i].method, cases[i].path, cases[i].body,
                             cases[i].content_type, NULL);
            if (r.status != cases[i].status)
                fail_msg("%s %s: %ld, want %ld", cases[i].method, cases[i].path, r.status,
                         cases[i].status);
            assert_security_headers(&r, true);
            reply_free(&r);
        }
    }
}

static void console_files_are_served(void **state) {
    fixture_t *f = *state;
    reply_t r = call(f->port, "GET", "/", NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_header(&r, "Content-Type", "text/html; charset=utf-8");
    assert_string_equal(r.body, "<!doctype html><p>console</p>");
    assert_security_headers(&r, false);
    assert_header(&r, "Cache-Control", "no-cache");
    reply_free(&r);
    struct {
        const char *path, *type;
        size_t len;
    } files[] = {{"/index.html", "text/html; charset=utf-8", 29},
                 {"/console.css", "text/css; charset=utf-8", 3},
                 {"/js/app.js", "text/javascript; charset=utf-8", 10},
                 {"/logo.png", "image/png", 10}};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        r = call(f->port, "GET", files[i].path, NULL, NULL);
        assert_int_equal(r.status, 200);
        assert_header(&r, "Content-Type", files[i].type);
        assert_int_equal(r.len, files[i].len);
        assert_security_headers(&r, false);
        reply_free(&r);
    }
    r = call(f->port, "HEAD", "/js/app.js", NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_header(&r, "Content-Length", "10");
    assert_int_equal(r.len, 0);
    assert_security_headers(&r, false);
    reply_free(&r);
}

static void refused_paths_are_the_json_404(void **state) {
    fixture_t *f = *state;
    const char *paths[] = {"/run.sh", "/.env", "/missing.js", "/js", "/js/", "/leak.txt",
                           "/up.txt", "/../secret.txt", "/js/../index.html",
                           "/%2e%2e/secret.txt", "/index.html%00.png", "/index.html%2F",
                           "/a/b/c/d/e/f/g/h/i.js", "/index.html?x=1/../../secret.txt#"};
    for (size_t i = 0; i < sizeof paths / sizeof *paths; i++) {
        reply_t r = call(f->port, "GET", paths[i], NULL, NULL);
        if (i == sizeof paths / sizeof *paths - 1) { /* the query is not part of the path */
            assert_int_equal(r.status, 200);
            reply_free(&r);
            continue;
        }
        if (r.status != 404)
            fail_msg("GET %s: %ld, want 404", paths[i], r.status);
        assert_json_404(&r);
        assert_null(strstr(r.body, "TOP-SECRET-BYTES"));
        reply_free(&r);
    }
    reply_t r = call(f->port, "POST", "/index.html", "x", "Content-Type: text/plain", NULL);
    assert_json_404(&r); /* files are GET and HEAD only */
    reply_free(&r);
    r = call(f->plain_port, "GET", "/", NULL, NULL); /* no console configured */
    assert_json_404(&r);
    reply_free(&r);
}

static void routes_win_over_files(void **state) {
    fixture_t *f = *state;
    reply_t r = call(f->port, "GET", "/hello.txt", NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "from the route");
    assert_security_headers(&r, true);
    reply_free(&r);
    r = call(f->port, "HEAD", "/hello.txt", NULL, NULL); /* HEAD is not GET: 405 */
    assert_int_equal(r.status, 405);
    reply_free(&r);
}

static void listed_origins_get_cors_headers(void **state) {
    fixture_t *f = *state;
    reply_t r = call(f->port, "GET", "/api/orders", NULL, "Origin: " LISTED, NULL);
    assert_int_equal(r.status, 200);
    assert_header(&r, "Access-Control-Allow-Origin", LISTED);
    assert_header(&r, "Vary", "Origin");
    assert_header(&r, "Access-Control-Expose-Headers", "Location, Idempotent-Replayed");
    assert_security_headers(&r, true);
    reply_free(&r);
    r = call(f->port, "POST", "/api/orders", "{", "Origin: http://localhost:8080",
             "Content-Type: application/json", NULL); /* the error is readable too */
    assert_int_equal(r.status, 400);
    assert_header(&r, "Access-Control-Allow-Origin", "http://localhost:8080");
    reply_free(&r);
    const char *others[] = {"Origin: http://localhost:8081", "Origin: http://evil.example",
                            "Origin: null", "Origin: http://127.0.0.1:8080/", NULL};
    for (size_t i = 0; i < sizeof others / sizeof *others; i++) {
        r = call(f->port, "GET", "/api/orders", NULL, others[i], NULL);
        assert_int_equal(r.status, 200);
        assert_null(header(&r, "Access-Control-Allow-Origin"));
        assert_null(header(&r, "Vary"));
        assert_null(header(&r, "Access-Control-Expose-Headers"));
        reply_free(&r);
    }
    r = call(f->plain_port, "GET", "/api/orders", NULL, "Origin: " LISTED, NULL);
    assert_null(header(&r, "Access-Control-Allow-Origin")); /* CORS off */
    reply_free(&r);
}

static void preflights(void **state) {
    fixture_t *f = *state;
    reply_t r = call(f->port, "OPTIONS", "/api/orders", NULL, "Origin: " LISTED,
                     "Access-Control-Request-Method: POST",
                     "Access-Control-Request-Headers: content-type, idempotency-key", NULL);
    assert_int_equal(r.status, 204);
    assert_header(&r, "Access-Control-Allow-Origin", LISTED);
    assert_header(&r, "Access-Control-Allow-Methods", "GET, POST");
    assert_header(&r, "Access-Control-Allow-Headers",
                  "Content-Type, Idempotency-Key, Authorization");
    assert_header(&r, "Access-Control-Max-Age", "600");
    assert_header(&r, "Vary", "Origin");
    assert_security_headers(&r, true);
    assert_int_equal(r.len, 0);
    reply_free(&r);
    /* an origin not on the list, none at all, and a server without CORS: 403 naming Origin */
    struct {
        int port;
        const char *origin;
    } refused[] = {{f->port, "Origin: http://evil.example"}, {f->port, NULL},
                   {f->plain_port, "Origin: " LISTED}};
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        r = refused[i].origin
                ? call(refused[i].port, "OPTIONS", "/api/orders", NULL, refused[i].origin,
                       "Access-Control-Request-Method: POST", NULL)
                : call(refused[i].port, "OPTIONS", "/api/orders", NULL,
                       "Access-Control-Request-Method: POST", NULL);
        assert_int_equal(r.status, 403);
        assert_non_null(r.json);
        assert_string_equal(json_string_value(json_object_get(r.json, "field")), "Origin");
        assert_null(header(&r, "Access-Control-Allow-Origin"));
        assert_null(header(&r, "Access-Control-Allow-Methods"));
        assert_security_headers(&r, true);
        reply_free(&r);
    }
    r = call(f->port, "OPTIONS", "/api/unknown", NULL, "Origin: " LISTED,
             "Access-Control-Request-Method: GET", NULL);
    assert_json_404(&r);
    assert_null(header(&r, "Access-Control-Allow-Methods"));
    reply_free(&r);
}

static void bad_settings_are_refused(void **state) {
    (void)state;
    char err[256] = "";
    deta_http_server_t *srv = deta_http_server_new(0, 1024, 1, err, sizeof err);
    assert_int_equal(deta_http_server_set_cors(srv, "*", err, sizeof err), DETA_ERR_INVALID);
    assert_non_null(strstr(err, "HTTP_CORS_ORIGINS"));
    assert_int_equal(deta_http_static(srv, "/nonexistent/console", CONSOLE_CSP, err, sizeof err),
                     DETA_ERR_INVALID);
    assert_int_equal(deta_http_static(srv, "/etc/hostname", CONSOLE_CSP, err, sizeof err),
                     DETA_ERR_INVALID); /* a file, not a directory */
    assert_int_equal(deta_http_static(srv, "/tmp", "a\r\nX-Injected: 1", err, sizeof err),
                     DETA_ERR_INVALID);
    deta_http_server_free(srv);
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_api_answer_has_the_security_headers),
        cmocka_unit_test(console_files_are_served),
        cmocka_unit_test(refused_paths_are_the_json_404),
        cmocka_unit_test(routes_win_over_files),
        cmocka_unit_test(listed_origins_get_cors_headers),
        cmocka_unit_test(preflights),
        cmocka_unit_test(bad_settings_are_refused),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    curl_global_cleanup();
    return rc;
}
