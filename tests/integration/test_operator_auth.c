/*
 * test_operator_auth.c - operator actions are authenticated (docs/security.md),
 * against the real inventory-service and query-api of the test stack.
 *
 * The stack gives inventory-service and query-api the stack's OPERATOR_TOKEN and
 * every service its READER_TOKEN (scripts/stack.sh; both in stack.env).
 *   - PUT and PATCH /api/inventory/{itemId}: without a token, with another scheme,
 *     with a wrong token: 401 with WWW-Authenticate: Bearer, and the stock in
 *     Postgres (inventory_db.stock) is unchanged, a new item not created; with the
 *     reader token: 403 with the JSON error body, unchanged too; with the operator
 *     token: 201, then 200. Each refusal is counted in http_auth_total{role,outcome}.
 *   - reads are open by default: GET of the stock and of the read model without a
 *     token is 200.
 *   - reads closed: inventory-service and query-api restarted with
 *     HTTP_READS_NEED_AUTH=on (scripts/stack.sh stop/start with the setting in the
 *     environment, as the services inherit it): GET /api/... without a token or with
 *     a wrong one is 401, with the reader token or the operator token 200; health,
 *     metrics, the console's files and /console-config.json stay 200; placing an order
 *     (order-service) still needs no token; a reader still cannot PUT (403). The
 *     teardown restarts both with the stack's settings.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testsupport.h"

#define INV "INVENTORY_SERVICE_URL"
#define QUERY "QUERY_API_URL"

/* A request to base_var with "Authorization: <auth>" (NULL: none); the answer's
 * headers in *headers (malloc'd) when headers is not NULL. */
static void call(const char *method, const char *base_var, const char *path, const char *auth,
                 const char *body, ts_http_resp_t *r, char **headers) {
    char line[600] = "";
    if (auth)
        snprintf(line, sizeof line, "Authorization: %s", auth);
    if (!body) {
        const char *h[] = {auth ? line : NULL, NULL};
        ts_http_headers(method, base_var, path, h, r, headers);
        return;
    }
    assert_null(headers); /* not needed with a body */
    if (!auth) {
        ts_http(method, base_var, path, "application/json", body, r);
        return;
    }
    /* "Bearer <token>" or another scheme: ts_http_bearer sends Bearer only. */
    if (strncmp(auth, "Bearer ", 7) == 0)
        ts_http_bearer(method, base_var, path, auth + 7, "application/json", body, r);
    else
        ts_http_bearer(method, base_var, path, NULL, "application/json", body, r);
}

static char *bearer(const char *token_var) {
    char *s = NULL;
    assert_true(asprintf(&s, "Bearer %s", ts_env(token_var)) > 0);
    return s;
}

/* The item's available units in inventory_db, -1 when there is no such row. */
static long available_in_db(const char *item) {
    PGconn *db = ts_pg("inventory_db");
    const char *params[] = {item};
    long v = ts_pg_long(db, "SELECT coalesce(max(available), -1) FROM stock WHERE item_id = $1",
                        1, params);
    PQfinish(db);
    return v;
}

static double auth_metric(const char *base_var, const char *role, const char *outcome) {
    char series[160];
    snprintf(series, sizeof series, "http_auth_total{role=\"%s\",outcome=\"%s\"}", role, outcome);
    double v = ts_metric(base_var, series);
    return v < 0 ? 0 : v;
}

static void expect_status(const ts_http_resp_t *r, long want, const char *what) {
    if (r->status != want)
        fail_msg("%s: expected %ld, got %ld %s", what, want, r->status, r->body);
    assert_non_null(r->json);
    if (want >= 400) {
        assert_int_equal(json_integer_value(json_object_get(r->json, "status")), want);
        assert_non_null(json_string_value(json_object_get(r->json, "message")));
    }
}

/* ---- stock changes need the operator ---- */

static void stock_changes_need_the_operator_token(void **state) {
    (void)state;
    char uuid[37], item[64], path[128];
    ts_uuid(uuid);
    snprintf(item, sizeof item, "auth-%.8s", uuid);
    snprintf(path, sizeof path, "/api/inventory/%s", item);
    char *reader = bearer("READER_TOKEN"), *op = bearer("OPERATOR_TOKEN");
    double unauthorized = auth_metric(INV, "operator", "unauthorized");
    double forbidden = auth_metric(INV, "operator", "forbidden");
    ts_http_resp_t r;

    /* A new item: refused without the operator, and not created. */
    const char *refused[] = {NULL, "Bearer wrong-token-0123456789abcdef", reader};
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        call("PUT", INV, path, refused[i], "{\"available\":7}", &r, NULL);
        expect_status(&r, refused[i] == reader ? 403 : 401, "PUT of a new item");
        ts_http_resp_free(&r);
    }
    assert_int_equal(available_in_db(item), -1);

    call("PUT", INV, path, op, "{\"available\":7}", &r, NULL);
    expect_status(&r, 201, "PUT as the operator");
    ts_http_resp_free(&r);
    assert_int_equal(available_in_db(item), 7);

    /* An existing item: PUT and PATCH refused, nothing changed. */
    const char *bodies[][2] = {{"PUT", "{\"available\":1,\"expectedVersion\":1}"},
                               {"PATCH", "{\"delta\":100}"},
                               {"PATCH", "{\"sellable\":false}"}};
    for (size_t b = 0; b < sizeof bodies / sizeof *bodies; b++)
        for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
            call(bodies[b][0], INV, path, refused[i], bodies[b][1], &r, NULL);
            expect_status(&r, refused[i] == reader ? 403 : 401, bodies[b][0]);
            ts_http_resp_free(&r);
        }
    assert_int_equal(available_in_db(item), 7);

    /* The challenge; a wrong token says invalid_token; the reader insufficient_scope;
     * another scheme is no token at all; no answer echoes a token. */
    const struct {
        const char *auth, *header;
        long status;
    } challenges[] = {
        {NULL, "WWW-Authenticate: Bearer realm=\"delivery-eta\"", 401},
        {"Basic dXNlcjpwYXNz", "WWW-Authenticate: Bearer realm=\"delivery-eta\"", 401},
        {"Bearer wrong-token-0123456789abcdef", "error=\"invalid_token\"", 401},
        {reader, "error=\"insufficient_scope\"", 403},
    };
    for (size_t i = 0; i < sizeof challenges / sizeof *challenges; i++) {
        char *headers = NULL;
        call("PATCH", INV, path, challenges[i].auth, NULL, &r, &headers);
        expect_status(&r, challenges[i].status, "PATCH without a body");
        if (!strcasestr(headers, challenges[i].header))
            fail_msg("no \"%s\" in:\n%s", challenges[i].header, headers);
        assert_null(strstr(r.body, ts_env("READER_TOKEN")));
        assert_null(strstr(r.body, ts_env("OPERATOR_TOKEN")));
        assert_null(strstr(headers, ts_env("READER_TOKEN")));
        free(headers);
        ts_http_resp_free(&r);
    }

    /* The operator changes it. */
    call("PATCH", INV, path, op, "{\"delta\":3}", &r, NULL);
    expect_status(&r, 200, "PATCH as the operator");
    ts_http_resp_free(&r);
    assert_int_equal(available_in_db(item), 10);

    /* Counted. */
    assert_true(auth_metric(INV, "operator", "unauthorized") >= unauthorized + 10);
    assert_true(auth_metric(INV, "operator", "forbidden") >= forbidden + 5);
    assert_true(auth_metric(INV, "operator", "allowed") >= 2);
    free(reader);
    free(op);
}

static void reads_are_open_by_default(void **state) {
    (void)state;
    const char *reads[][2] = {{INV, "/api/inventory"},
                              {INV, "/api/inventory/sku-1"},
                              {QUERY, "/api/orders?limit=1"},
                              {QUERY, "/api/stats"},
                              {"ORDER_SERVICE_URL", "/actuator/health"}};
    for (size_t i = 0; i < sizeof reads / sizeof *reads; i++) {
        ts_http_resp_t r;
        call("GET", reads[i][0], reads[i][1], NULL, NULL, &r, NULL);
        if (r.status != 200)
            fail_msg("GET %s: %ld %s", reads[i][1], r.status, r.body);
        ts_http_resp_free(&r);
    }
}

/* ---- reads closed ---- */

static int reads_closed(void **state) {
    (void)state;
    ts_stack_ok("stop inventory-service");
    ts_stack_ok("stop query-api");
    setenv("HTTP_READS_NEED_AUTH", "on", 1);
    ts_stack_ok("start inventory-service");
    ts_stack_ok("start query-api");
    return 0;
}

static int reads_open_again(void **state) {
    (void)state;
    unsetenv("HTTP_READS_NEED_AUTH");
    ts_stack_ok("stop inventory-service");
    ts_stack_ok("stop query-api");
    ts_stack_ok("start inventory-service");
    ts_stack_ok("start query-api");
    return 0;
}

static void closed_reads_need_a_token(void **state) {
    (void)state;
    char *reader = bearer("READER_TOKEN"), *op = bearer("OPERATOR_TOKEN");
    const char *reads[][2] = {{INV, "/api/inventory"},
                              {INV, "/api/inventory/sku-1"},
                              {QUERY, "/api/orders?limit=1"},
                              {QUERY, "/api/stats"}};
    for (size_t i = 0; i < sizeof reads / sizeof *reads; i++) {
        ts_http_resp_t r;
        char *headers = NULL;
        call("GET", reads[i][0], reads[i][1], NULL, NULL, &r, &headers);
        expect_status(&r, 401, reads[i][1]);
        if (!strcasestr(headers, "WWW-Authenticate: Bearer"))
            fail_msg("GET %s: no challenge in:\n%s", reads[i][1], headers);
        free(headers);
        ts_http_resp_free(&r);
        call("GET", reads[i][0], reads[i][1], "Bearer wrong-token-0123456789abcdef", NULL, &r,
             NULL);
        expect_status(&r, 401, reads[i][1]);
        ts_http_resp_free(&r);
        call("GET", reads[i][0], reads[i][1], reader, NULL, &r, NULL);
        if (r.status != 200)
            fail_msg("GET %s with the reader token: %ld %s", reads[i][1], r.status, r.body);
        ts_http_resp_free(&r);
        call("GET", reads[i][0], reads[i][1], op, NULL, &r, NULL);
        if (r.status != 200)
            fail_msg("GET %s with the operator token: %ld %s", reads[i][1], r.status, r.body);
        ts_http_resp_free(&r);
    }
    assert_true(auth_metric(INV, "reader", "unauthorized") >= 4);
    assert_true(auth_metric(INV, "reader", "allowed") >= 4);
    /* Never closed: health, metrics, the console's files and its configuration. */
    const char *open[][2] = {{INV, "/health"},
                             {INV, "/actuator/health/readiness"},
                             {INV, "/actuator/prometheus"},
                             {QUERY, "/health"},
                             {QUERY, "/metrics"},
                             {QUERY, "/console-config.json"},
                             {QUERY, "/"}};
    for (size_t i = 0; i < sizeof open / sizeof *open; i++) {
        ts_http_resp_t r;
        call("GET", open[i][0], open[i][1], NULL, NULL, &r, NULL);
        if (r.status != 200)
            fail_msg("GET %s without a token: %ld %s", open[i][1], r.status, r.body);
        ts_http_resp_free(&r);
    }
    /* The reader reads; it still changes nothing. */
    ts_http_resp_t r;
    call("PATCH", INV, "/api/inventory/sku-1", reader, "{\"delta\":1}", &r, NULL);
    expect_status(&r, 403, "PATCH with the reader token");
    ts_http_resp_free(&r);
    /* Placing an order needs no token. */
    char id[37];
    assert_int_equal(ts_order_place("cust-auth", "sku-1", 1, id), 201);
    free(reader);
    free(op);
}

int main(void) {
    const struct CMUnitTest open_tests[] = {
        cmocka_unit_test(stock_changes_need_the_operator_token),
        cmocka_unit_test(reads_are_open_by_default),
    };
    const struct CMUnitTest closed_tests[] = {
        cmocka_unit_test(closed_reads_need_a_token),
    };
    int failed = cmocka_run_group_tests(open_tests, NULL, NULL);
    return failed + cmocka_run_group_tests(closed_tests, reads_closed, reads_open_again);
}
