/*
 * test_http_match.c - deta_http_match, the pure path matcher behind the HTTP
 * router: literals, "{name}" parameters, trailing slashes, segment counts, empty
 * segments and the buffer and parameter-count limits. No server.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "deta/http.h"

#define MAX DETA_HTTP_MAX_PARAMS

typedef struct match {
    char buf[256];
    const char *names[MAX];
    const char *values[MAX];
} match_t;

static int match(match_t *m, const char *pattern, const char *path) {
    memset(m, 0, sizeof *m);
    return deta_http_match(pattern, path, m->buf, sizeof m->buf, m->names, m->values, MAX);
}

static void literal_paths_match_exactly(void **state) {
    (void)state;
    match_t m;
    assert_int_equal(match(&m, "/api/orders", "/api/orders"), 0);
    assert_int_equal(match(&m, "/", "/"), 0);
    assert_int_equal(match(&m, "/api/orders", "/api/order"), -1);
    assert_int_equal(match(&m, "/api/orders", "/api/ordersx"), -1);
    assert_int_equal(match(&m, "/api/orders", "/API/orders"), -1);
    assert_int_equal(match(&m, "/api/orders", "/"), -1);
}

static void a_parameter_captures_its_segment(void **state) {
    (void)state;
    match_t m;
    assert_int_equal(match(&m, "/api/orders/{orderId}", "/api/orders/ord-42"), 1);
    assert_string_equal(m.names[0], "orderId");
    assert_string_equal(m.values[0], "ord-42");
    /* the values live in buf, not in the caller's path */
    assert_true(m.values[0] >= m.buf && m.values[0] < m.buf + sizeof m.buf);
    assert_int_equal(match(&m, "/{id}", "/x"), 1);
    assert_string_equal(m.values[0], "x");
}

static void several_parameters_keep_their_order(void **state) {
    (void)state;
    match_t m;
    assert_int_equal(match(&m, "/api/{kind}/orders/{orderId}/items/{n}",
                           "/api/food/orders/o1/items/3"),
                     3);
    assert_string_equal(m.names[0], "kind");
    assert_string_equal(m.values[0], "food");
    assert_string_equal(m.names[1], "orderId");
    assert_string_equal(m.values[1], "o1");
    assert_string_equal(m.names[2], "n");
    assert_string_equal(m.values[2], "3");
    /* a literal between parameters must still match */
    assert_int_equal(match(&m, "/api/{kind}/orders/{orderId}", "/api/food/order/o1"), -1);
}

static void one_trailing_slash_is_tolerated(void **state) {
    (void)state;
    match_t m;
    assert_int_equal(match(&m, "/api/orders", "/api/orders/"), 0);
    assert_int_equal(match(&m, "/api/orders/", "/api/orders"), 0);
    assert_int_equal(match(&m, "/api/orders/{id}", "/api/orders/o7/"), 1);
    assert_string_equal(m.values[0], "o7");
    /* but not two */
    assert_int_equal(match(&m, "/api/orders", "/api/orders//"), -1);
}

static void segment_counts_must_agree(void **state) {
    (void)state;
    match_t m;
    assert_int_equal(match(&m, "/api/orders/{id}", "/api/orders"), -1);
    assert_int_equal(match(&m, "/api/orders/{id}", "/api/orders/o1/items"), -1);
    assert_int_equal(match(&m, "/api/orders", "/api/orders/o1"), -1);
    assert_int_equal(match(&m, "/api", "/api/orders"), -1);
}

static void empty_segments_match_nothing(void **state) {
    (void)state;
    match_t m;
    /* a parameter never captures an empty segment */
    assert_int_equal(match(&m, "/api/orders/{id}", "/api/orders/"), -1);
    assert_int_equal(match(&m, "/api/orders/{id}", "/api/orders//"), -1);
    assert_int_equal(match(&m, "/api/{kind}/orders", "/api//orders"), -1);
    /* a doubled slash is an extra segment, not a separator */
    assert_int_equal(match(&m, "/api/orders", "/api//orders"), -1);
    assert_int_equal(match(&m, "/", "//"), -1);
}

static void bad_input_does_not_match(void **state) {
    (void)state;
    match_t m;
    assert_int_equal(match(&m, "/api", ""), -1);
    assert_int_equal(match(&m, "/api", "api"), -1);
    assert_int_equal(match(&m, "api", "/api"), -1);
    assert_int_equal(deta_http_match(NULL, "/api", m.buf, sizeof m.buf, m.names, m.values, MAX),
                     -1);
    assert_int_equal(deta_http_match("/api", NULL, m.buf, sizeof m.buf, m.names, m.values, MAX),
                     -1);
}

static void a_buffer_too_small_fails(void **state) {
    (void)state;
    const char *names[MAX], *values[MAX];
    char buf[32];
    /* "ord-42\0" + "orderId\0" = 15 bytes */
    assert_int_equal(
        deta_http_match("/api/orders/{orderId}", "/api/orders/ord-42", buf, 15, names, values, MAX),
        1);
    assert_string_equal(values[0], "ord-42");
    assert_string_equal(names[0], "orderId");
    assert_int_equal(
        deta_http_match("/api/orders/{orderId}", "/api/orders/ord-42", buf, 14, names, values, MAX),
        -1);
    assert_int_equal(
        deta_http_match("/api/orders/{orderId}", "/api/orders/ord-42", buf, 3, names, values, MAX),
        -1);
    assert_int_equal(
        deta_http_match("/api/orders/{orderId}", "/api/orders/ord-42", NULL, 0, names, values, MAX),
        -1);
    /* literal patterns need no buffer at all */
    assert_int_equal(deta_http_match("/api/orders", "/api/orders", NULL, 0, NULL, NULL, 0), 0);
}

static void too_many_parameters_fail(void **state) {
    (void)state;
    const char *names[2], *values[2];
    char buf[128];
    assert_int_equal(deta_http_match("/{a}/{b}", "/1/2", buf, sizeof buf, names, values, 2), 2);
    assert_int_equal(deta_http_match("/{a}/{b}/{c}", "/1/2/3", buf, sizeof buf, names, values, 2),
                     -1);
    assert_int_equal(deta_http_match("/{a}", "/1", buf, sizeof buf, names, values, 0), -1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(literal_paths_match_exactly),
        cmocka_unit_test(a_parameter_captures_its_segment),
        cmocka_unit_test(several_parameters_keep_their_order),
        cmocka_unit_test(one_trailing_slash_is_tolerated),
        cmocka_unit_test(segment_counts_must_agree),
        cmocka_unit_test(empty_segments_match_nothing),
        cmocka_unit_test(bad_input_does_not_match),
        cmocka_unit_test(a_buffer_too_small_fails),
        cmocka_unit_test(too_many_parameters_fail),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
