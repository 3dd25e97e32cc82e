/*
 * test_auth.c - the operator and reader tokens' rules (lib/src/auth.c, deta/auth.h),
 * no server: which role a route needs, the decision for every kind of
 * Authorization header and configuration (503, 401 missing or wrong, 403, allowed),
 * the constant-time comparison, and the token settings' shape.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "deta/auth.h"

#define OP "0123456789abcdef0123456789abcdef"
#define RD "readerreaderreader-0123456789"

static deta_auth_t tokens(const char *op, const char *rd, bool reads) {
    deta_auth_t a;
    memset(&a, 0, sizeof a);
    snprintf(a.operator_token, sizeof a.operator_token, "%s", op);
    snprintf(a.reader_token, sizeof a.reader_token, "%s", rd);
    a.reads_need_token = reads;
    return a;
}

static void test_route_role(void **state) {
    (void)state;
    /* An operator route needs the operator whatever else. */
    assert_int_equal(deta_auth_route_role(true, "PUT", "/api/inventory/{itemId}", false),
                     DETA_ROLE_OPERATOR);
    assert_int_equal(deta_auth_route_role(true, "GET", "/api/admin/dead-letters", true),
                     DETA_ROLE_OPERATOR);
    /* Reads are open unless closed. */
    assert_int_equal(deta_auth_route_role(false, "GET", "/api/inventory", false), DETA_ROLE_NONE);
    assert_int_equal(deta_auth_route_role(false, "GET", "/api/inventory", true), DETA_ROLE_READER);
    assert_int_equal(deta_auth_route_role(false, "HEAD", "/api/orders/{orderId}", true),
                     DETA_ROLE_READER);
    /* Placing and cancelling orders, health, metrics, the console: never a token. */
    assert_int_equal(deta_auth_route_role(false, "POST", "/api/orders", true), DETA_ROLE_NONE);
    assert_int_equal(deta_auth_route_role(false, "POST", "/api/orders/{orderId}/cancel", true),
                     DETA_ROLE_NONE);
    const char *open[] = {"/health", "/actuator/health", "/actuator/health/readiness",
                          "/actuator/prometheus", "/metrics", "/console-config.json", "/api",
                          "/apix/y"};
    for (size_t i = 0; i < sizeof open / sizeof *open; i++)
        if (deta_auth_route_role(false, "GET", open[i], true) != DETA_ROLE_NONE)
            fail_msg("%s needs a token with reads closed", open[i]);
}

static void test_disabled_without_tokens(void **state) {
    (void)state;
    deta_auth_t none = tokens("", "", true);
    assert_int_equal(deta_auth_decide(&none, DETA_ROLE_OPERATOR, "Bearer " OP), DETA_AUTH_DISABLED);
    assert_int_equal(deta_auth_decide(NULL, DETA_ROLE_OPERATOR, "Bearer " OP), DETA_AUTH_DISABLED);
    assert_int_equal(deta_auth_decide(&none, DETA_ROLE_READER, NULL), DETA_AUTH_DISABLED);
    /* A reader token opens no operator route, even configured. */
    deta_auth_t reader_only = tokens("", RD, true);
    assert_int_equal(deta_auth_decide(&reader_only, DETA_ROLE_OPERATOR, "Bearer " RD),
                     DETA_AUTH_DISABLED);
    assert_int_equal(deta_auth_decide(&reader_only, DETA_ROLE_READER, "Bearer " RD),
                     DETA_AUTH_ALLOWED);
    /* An open route is open whatever is configured. */
    assert_int_equal(deta_auth_decide(&none, DETA_ROLE_NONE, NULL), DETA_AUTH_ALLOWED);
}

static void test_operator_route(void **state) {
    (void)state;
    deta_auth_t a = tokens(OP, RD, false);
    assert_int_equal(deta_auth_decide(&a, DETA_ROLE_OPERATOR, "Bearer " OP), DETA_AUTH_ALLOWED);
    assert_int_equal(deta_auth_decide(&a, DETA_ROLE_OPERATOR, "bearer " OP), DETA_AUTH_ALLOWED);
    assert_int_equal(deta_auth_decide(&a, DETA_ROLE_OPERATOR, "BEARER   " OP), DETA_AUTH_ALLOWED);
    assert_int_equal(deta_auth_decide(&a, DETA_ROLE_OPERATOR, "Bearer " RD), DETA_AUTH_FORBIDDEN);
    const char *missing[] = {NULL, "", "Bearer", "Bearer ", "Bearer    ", "Basic " OP,
                             "Bearer" OP, OP, "Token " OP};
    for (size_t i = 0; i < sizeof missing / sizeof *missing; i++)
        if (deta_auth_decide(&a, DETA_ROLE_OPERATOR, missing[i]) != DETA_AUTH_MISSING)
            fail_msg("\"%s\" is not a missing token", missing[i] ? missing[i] : "(null)");
    const char *wrong[] = {"Bearer x", "Bearer " OP "0", "Bearer 0123456789abcdef",
                           "Bearer 0123456789ABCDEF0123456789ABCDEF", "Bearer " OP " extra",
                           "Bearer " RD "x"};
    for (size_t i = 0; i < sizeof wrong / sizeof *wrong; i++)
        if (deta_auth_decide(&a, DETA_ROLE_OPERATOR, wrong[i]) != DETA_AUTH_WRONG)
            fail_msg("\"%s\" is not a wrong token", wrong[i]);
}

static void test_reader_route(void **state) {
    (void)state;
    deta_auth_t a = tokens(OP, RD, true);
    assert_int_equal(deta_auth_decide(&a, DETA_ROLE_READER, "Bearer " RD), DETA_AUTH_ALLOWED);
    /* The operator may also read. */
    assert_int_equal(deta_auth_decide(&a, DETA_ROLE_READER, "Bearer " OP), DETA_AUTH_ALLOWED);
    assert_int_equal(deta_auth_decide(&a, DETA_ROLE_READER, NULL), DETA_AUTH_MISSING);
    assert_int_equal(deta_auth_decide(&a, DETA_ROLE_READER, "Bearer nope-nope-nope-nope"),
                     DETA_AUTH_WRONG);
    /* Reads closed with the operator token alone: it reads, nothing else does. */
    deta_auth_t op_only = tokens(OP, "", true);
    assert_int_equal(deta_auth_decide(&op_only, DETA_ROLE_READER, "Bearer " OP),
                     DETA_AUTH_ALLOWED);
    assert_int_equal(deta_auth_decide(&op_only, DETA_ROLE_READER, "Bearer " RD),
                     DETA_AUTH_WRONG);
}

static void test_labels(void **state) {
    (void)state;
    assert_string_equal(deta_auth_outcome_label(DETA_AUTH_ALLOWED), "allowed");
    assert_string_equal(deta_auth_outcome_label(DETA_AUTH_MISSING), "unauthorized");
    assert_string_equal(deta_auth_outcome_label(DETA_AUTH_WRONG), "unauthorized");
    assert_string_equal(deta_auth_outcome_label(DETA_AUTH_FORBIDDEN), "forbidden");
    assert_string_equal(deta_auth_outcome_label(DETA_AUTH_DISABLED), "disabled");
    assert_string_equal(deta_auth_role_name(DETA_ROLE_OPERATOR), "operator");
    assert_string_equal(deta_auth_role_name(DETA_ROLE_READER), "reader");
}

static void test_secret_equal(void **state) {
    (void)state;
    assert_true(deta_secret_equal("abc", "abc"));
    assert_true(deta_secret_equal("", ""));
    assert_false(deta_secret_equal("abc", "abd"));
    assert_false(deta_secret_equal("abc", "ab"));
    assert_false(deta_secret_equal("abc", "abcabc")); /* the wrap-around must not match */
    assert_false(deta_secret_equal("abcabc", "abc"));
    assert_false(deta_secret_equal("abc", ""));
    assert_false(deta_secret_equal("", "a"));
}

static void test_check_token(void **state) {
    (void)state;
    char err[256];
    assert_int_equal(deta_auth_check_token("OPERATOR_TOKEN", "", err, sizeof err), DETA_OK);
    assert_int_equal(deta_auth_check_token("OPERATOR_TOKEN", "Az09-._~+/=Az09-._~+/=", err,
                                           sizeof err),
                     DETA_OK);
    char token[DETA_AUTH_TOKEN_MAX + 2];
    memset(token, 'a', sizeof token - 1);
    token[DETA_AUTH_TOKEN_MAX] = '\0'; /* exactly the longest */
    assert_int_equal(deta_auth_check_token("T", token, err, sizeof err), DETA_OK);
    token[DETA_AUTH_TOKEN_MIN] = '\0'; /* exactly the shortest */
    assert_int_equal(deta_auth_check_token("T", token, err, sizeof err), DETA_OK);
    memset(token, 'a', sizeof token - 1);
    token[sizeof token - 1] = '\0'; /* one too long */
    const char *bad[] = {"x", "0123456789abcde", "0123456789abcdef 0123456789abcdef",
                         "0123456789abcdef\t", "0123456789abcdef\"quoted\"",
                         "0123456789abcdef\xc3\xa9", token};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err[0] = '\0';
        if (deta_auth_check_token("READER_TOKEN", bad[i], err, sizeof err) != DETA_ERR_INVALID)
            fail_msg("token \"%s\" accepted", bad[i]);
        assert_non_null(strstr(err, "READER_TOKEN"));
        if (strlen(bad[i]) >= 8 && strstr(err, bad[i]))
            fail_msg("the error \"%s\" shows the token", err);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_route_role),  cmocka_unit_test(test_disabled_without_tokens),
        cmocka_unit_test(test_operator_route), cmocka_unit_test(test_reader_route),
        cmocka_unit_test(test_labels),      cmocka_unit_test(test_secret_equal),
        cmocka_unit_test(test_check_token),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
