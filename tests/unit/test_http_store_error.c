/*
 * test_http_store_error.c - deta_http_resp_store_error, the one answer every
 * service gives when its store fails: 503 with "<store> unavailable, retry
 * later" for a transient failure, 500 "internal error" for anything else, in
 * the shape of every error body. No server: the response struct is filled and
 * read back.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "deta/http.h"

/* The body of what deta_http_resp_store_error answered for err. */
static json_t *answer(deta_err_t err, const char *store, int *status) {
    deta_http_resp_t resp = {0};
    deta_http_resp_store_error(&resp, err, store, "connection refused");
    *status = resp.status;
    assert_string_equal(resp.content_type, "application/json");
    json_t *body = json_loads(resp.body, 0, NULL);
    free(resp.body);
    assert_non_null(body);
    return body;
}

static void transient_is_503_naming_the_store(void **state) {
    (void)state;
    int status;
    json_t *body = answer(DETA_ERR_TRANSIENT, "read model", &status);
    assert_int_equal(status, 503);
    assert_int_equal(json_integer_value(json_object_get(body, "status")), 503);
    assert_string_equal(json_string_value(json_object_get(body, "error")), "Service Unavailable");
    assert_string_equal(json_string_value(json_object_get(body, "message")),
                        "read model unavailable, retry later");
    assert_null(json_object_get(body, "field"));
    json_decref(body);
}

static void anything_else_is_500(void **state) {
    (void)state;
    deta_err_t errs[] = {DETA_ERR_INTERNAL, DETA_ERR_INVALID, DETA_ERR_CONFLICT};
    for (size_t i = 0; i < sizeof errs / sizeof *errs; i++) {
        int status;
        json_t *body = answer(errs[i], "database", &status);
        assert_int_equal(status, 500);
        assert_string_equal(json_string_value(json_object_get(body, "message")), "internal error");
        assert_null(json_object_get(body, "field"));
        json_decref(body);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(transient_is_503_naming_the_store),
        cmocka_unit_test(anything_else_is_500),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
