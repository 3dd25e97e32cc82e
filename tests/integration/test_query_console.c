/*
 * test_query_console.c - the web console's serving side on the test stack
 * (docs/console.md): query-api's /console-config.json and security headers, the
 * CORS that order-service and inventory-service give query-api's origin (as
 * scripts/stack.sh configures them), a query-api of the test's own serving a
 * console directory at "/", and bad console settings stopping query-api with
 * exit status 2.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "testsupport.h"

#define API_CSP "default-src 'none'; frame-ancestors 'none'"

/* The value of a response header in the text ts_http_headers gives, or NULL
 * (static buffer). */
static const char *header_in(const char *headers, const char *name) {
    static char value[1024];
    size_t n = strlen(name);
    for (const char *line = headers; line && *line;) {
        const char *eol = strchr(line, '\n');
        size_t len = eol ? (size_t)(eol - line) : strlen(line);
        if (len > n && strncasecmp(line, name, n) == 0 && line[n] == ':') {
            const char *v = line + n + 1;
            while (*v == ' ')
                v++;
            size_t vlen = len - (size_t)(v - line);
            while (vlen && (v[vlen - 1] == '\r' || v[vlen - 1] == ' '))
                vlen--;
            snprintf(value, sizeof value, "%.*s", (int)vlen, v);
            return value;
        }
        line = eol ? eol + 1 : line + len;
    }
    return NULL;
}

static void expect_header(const char *headers, const char *name, const char *want) {
    const char *v = header_in(headers, name);
    if (!v || strcmp(v, want) != 0)
        fail_msg("%s is \"%s\", want \"%s\"; headers:\n%s", name, v ? v : "(none)", want,
                 headers);
}

/* The port of a URL variable's value (http://127.0.0.1:PORT). */
static const char *port_of(const char *url_var) {
    const char *colon = strrchr(ts_env(url_var), ':');
    assert_non_null(colon);
    return colon + 1;
}

static void call(const char *method, const char *base_var, const char *path, const char *h1,
                 const char *h2, ts_http_resp_t *r, char **headers) {
    const char *list[] = {h1, h2, NULL};
    ts_http_headers(method, base_var, path, list, r, headers);
}

/* ---- the stack's services ---- */

static void console_config_names_the_two_services(void **state) {
    (void)state;
    ts_http_resp_t r;
    char *headers = NULL;
    call("GET", "QUERY_API_URL", "/console-config.json", NULL, NULL, &r, &headers);
    assert_int_equal(r.status, 200);
    assert_non_null(r.json);
    char want[128];
    snprintf(want, sizeof want, "http://localhost:%s", port_of("ORDER_SERVICE_URL"));
    assert_string_equal(json_string_value(json_object_get(r.json, "orderServiceUrl")), want);
    snprintf(want, sizeof want, "http://localhost:%s", port_of("INVENTORY_SERVICE_URL"));
    assert_string_equal(json_string_value(json_object_get(r.json, "inventoryServiceUrl")), want);
    expect_header(headers, "Content-Security-Policy", API_CSP);
    expect_header(headers, "X-Content-Type-Options", "nosniff");
    expect_header(headers, "X-Frame-Options", "DENY");
    expect_header(headers, "Referrer-Policy", "no-referrer");
    expect_header(headers, "Cache-Control", "no-store");
    free(headers);
    ts_http_resp_free(&r);
}

static void every_service_sends_the_security_headers(void **state) {
    (void)state;
    const char *urls[] = {"ORDER_SERVICE_URL", "INVENTORY_SERVICE_URL", "PAYMENT_SERVICE_URL",
                          "DELIVERY_SERVICE_URL", "QUERY_API_URL"};
    for (size_t i = 0; i < sizeof urls / sizeof *urls; i++) {
        ts_http_resp_t r;
        char *headers = NULL;
        call("GET", urls[i], "/no/such/path", NULL, NULL, &r, &headers);
        assert_int_equal(r.status, 404);
        expect_header(headers, "Content-Security-Policy", API_CSP);
        expect_header(headers, "X-Content-Type-Options", "nosniff");
        free(headers);
        ts_http_resp_free(&r);
    }
}

static void order_and_inventory_allow_query_apis_origin(void **state) {
    (void)state;
    char origins[2][160];
    snprintf(origins[0], sizeof origins[0], "Origin: http://localhost:%s", port_of("QUERY_API_URL"));
    snprintf(origins[1], sizeof origins[1], "Origin: http://127.0.0.1:%s", port_of("QUERY_API_URL"));
    for (int i = 0; i < 2; i++) {
        ts_http_resp_t r;
        char *headers = NULL;
        call("OPTIONS", "ORDER_SERVICE_URL", "/api/orders", origins[i],
             "Access-Control-Request-Method: POST", &r, &headers);
        assert_int_equal(r.status, 204);
        expect_header(headers, "Access-Control-Allow-Origin", origins[i] + 8);
        expect_header(headers, "Access-Control-Allow-Methods", "POST");
        free(headers);
        ts_http_resp_free(&r);
        call("GET", "INVENTORY_SERVICE_URL", "/api/inventory", origins[i], NULL, &r, &headers);
        assert_int_equal(r.status, 200);
        expect_header(headers, "Access-Control-Allow-Origin", origins[i] + 8);
        expect_header(headers, "Vary", "Origin");
        free(headers);
        ts_http_resp_free(&r);
    }
    ts_http_resp_t r;
    char *headers = NULL;
    call("OPTIONS", "ORDER_SERVICE_URL", "/api/orders", "Origin: http://evil.example",
         "Access-Control-Request-Method: POST", &r, &headers);
    assert_int_equal(r.status, 403);
    assert_string_equal(json_string_value(json_object_get(r.json, "field")), "Origin");
    assert_null(header_in(headers, "Access-Control-Allow-Origin"));
    free(headers);
    ts_http_resp_free(&r);
    /* payment-service has no CORS at all */
    call("GET", "PAYMENT_SERVICE_URL", "/actuator/health", origins[0], NULL, &r, &headers);
    assert_null(header_in(headers, "Access-Control-Allow-Origin"));
    free(headers);
    ts_http_resp_free(&r);
}

/* ---- a query-api of the test's own ---- */

static void stop(pid_t pid) {
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
}

static void own_query_api_serves_the_console(void **state) {
    (void)state;
    char dir[] = "/tmp/deta-console-XXXXXX", path[128], port[16], url[64];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/index.html", dir);
    FILE *f = fopen(path, "w");
    fputs("<!doctype html><title>console</title>", f);
    fclose(f);
    ts_free_port(port, sizeof port);
    setenv("CONSOLE_TEST_PORT", port, 1);
    snprintf(url, sizeof url, "http://127.0.0.1:%s", port);
    setenv("CONSOLE_TEST_URL", url, 1);
    static char dir_var[160];
    snprintf(dir_var, sizeof dir_var, "QUERY_CONSOLE_DIR=%s", dir);
    const char *extra[] = {dir_var, "QUERY_CONSOLE_ORDER_URL=https://orders.example",
                           "QUERY_CONSOLE_INVENTORY_URL=http://[::1]:9", "INSTANCE_ID=query-api-console",
                           NULL};
    pid_t pid = ts_service_spawn("query-api", "CONSOLE_TEST_PORT", extra);
    assert_int_equal(ts_service_await_healthy(pid, "CONSOLE_TEST_URL", 60000), 1);
    ts_http_resp_t r;
    char *headers = NULL;
    call("GET", "CONSOLE_TEST_URL", "/", NULL, NULL, &r, &headers);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "<!doctype html><title>console</title>");
    expect_header(headers, "Content-Type", "text/html; charset=utf-8");
    expect_header(headers, "Content-Security-Policy",
                  "default-src 'self'; script-src 'self'; style-src 'self'; "
                  "img-src 'self' data:; connect-src 'self' https://orders.example "
                  "http://[::1]:9; frame-ancestors 'none'; base-uri 'none'; form-action 'self'");
    expect_header(headers, "X-Frame-Options", "DENY");
    free(headers);
    ts_http_resp_free(&r);
    call("GET", "CONSOLE_TEST_URL", "/console-config.json", NULL, NULL, &r, &headers);
    assert_string_equal(json_string_value(json_object_get(r.json, "orderServiceUrl")),
                        "https://orders.example");
    expect_header(headers, "Content-Security-Policy", API_CSP);
    free(headers);
    ts_http_resp_free(&r);
    call("GET", "CONSOLE_TEST_URL", "/missing.js", NULL, NULL, &r, &headers);
    assert_int_equal(r.status, 404);
    assert_non_null(r.json);
    free(headers);
    ts_http_resp_free(&r);
    call("GET", "CONSOLE_TEST_URL", "/api/stats", NULL, NULL, &r, &headers); /* the API still */
    assert_int_equal(r.status, 200);
    expect_header(headers, "Content-Security-Policy", API_CSP);
    free(headers);
    ts_http_resp_free(&r);
    stop(pid);
    unlink(path);
    rmdir(dir);
}

/* query-api with one bad setting exits 2 before it serves anything. */
static void exits_2_with(const char *setting) {
    char port[16];
    ts_free_port(port, sizeof port);
    setenv("CONSOLE_TEST_PORT", port, 1);
    const char *extra[] = {setting, NULL};
    pid_t pid = ts_service_spawn("query-api", "CONSOLE_TEST_PORT", extra);
    int status = 0;
    for (int waited = 0; waitpid(pid, &status, WNOHANG) == 0; waited += 100) {
        if (waited > 60000) {
            stop(pid);
            fail_msg("query-api with %s still runs", setting);
        }
        ts_sleep_ms(100);
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 2)
        fail_msg("query-api with %s: status %d, want exit 2", setting, status);
}

static void bad_console_settings_stop_query_api(void **state) {
    (void)state;
    exits_2_with("QUERY_CONSOLE_ORDER_URL=http://localhost:8081/");
    exits_2_with("QUERY_CONSOLE_INVENTORY_URL=*");
    exits_2_with("QUERY_CONSOLE_DIR=/nonexistent/console");
    exits_2_with("HTTP_CORS_ORIGINS=*");
    exits_2_with("HTTP_CORS_ORIGINS=http://localhost:8080/console");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(console_config_names_the_two_services),
        cmocka_unit_test(every_service_sends_the_security_headers),
        cmocka_unit_test(order_and_inventory_allow_query_apis_origin),
        cmocka_unit_test(own_query_api_serves_the_console),
        cmocka_unit_test(bad_console_settings_stop_query_api),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
