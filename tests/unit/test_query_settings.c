/*
 * test_query_settings.c - query-api's own settings (services/query-api/settings.c):
 * QUERY_API_CONSUMER_WORKERS within its bounds, and QUERY_API_ADMIN_TOKEN: no
 * default, checked for length and characters, never echoed in an error, and
 * query-api's alone (the library loads it for no service).
 *
 * Every test starts with neither variable set (setup clears them).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "deta/config.h"
#include "deta_services.h"
#include "query-api/settings.h"

#define GOOD_TOKEN "0123456789abcdef0123456789abcdef0123456789abcdef"

static int clear_env(void **state) {
    (void)state;
    unsetenv("QUERY_API_ADMIN_TOKEN");
    unsetenv("QUERY_API_CONSUMER_WORKERS");
    return 0;
}

static void load_ok(query_settings_t *s) {
    char err[256] = "";
    if (query_settings_load(s, err, sizeof err) != DETA_OK)
        fail_msg("load failed: %s", err);
}

static void test_defaults(void **state) {
    (void)state;
    query_settings_t s;
    load_ok(&s);
    assert_int_equal(s.consumer_workers, 4);
    assert_string_equal(s.admin_token, "");
}

static void test_consumer_workers(void **state) {
    (void)state;
    query_settings_t s;
    setenv("QUERY_API_CONSUMER_WORKERS", "32", 1);
    load_ok(&s);
    assert_int_equal(s.consumer_workers, 32);
    const char *bad[] = {"0", "33", "4x", "-1"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char err[256] = "";
        setenv("QUERY_API_CONSUMER_WORKERS", bad[i], 1);
        assert_int_equal(query_settings_load(&s, err, sizeof err), DETA_ERR_INVALID);
        assert_non_null(strstr(err, "QUERY_API_CONSUMER_WORKERS"));
    }
}

static void test_admin_token_has_no_default(void **state) {
    (void)state;
    query_settings_t s;
    load_ok(&s);
    assert_string_equal(s.admin_token, "");
    setenv("QUERY_API_ADMIN_TOKEN", "", 1);
    load_ok(&s);
    assert_string_equal(s.admin_token, "");
}

/* The library reads no service's token: a bad one stops no other service. */
static void test_admin_token_is_query_apis_alone(void **state) {
    (void)state;
    query_settings_t s;
    setenv("QUERY_API_ADMIN_TOKEN", GOOD_TOKEN, 1);
    load_ok(&s);
    assert_string_equal(s.admin_token, GOOD_TOKEN);
    setenv("QUERY_API_ADMIN_TOKEN", "short", 1);
    static const deta_service_def_t defs[] = DETA_SERVICES;
    for (size_t i = 0; i < sizeof defs / sizeof *defs; i++) {
        deta_config_t cfg;
        char err[256] = "";
        if (deta_config_load_service(&cfg, &defs[i], err, sizeof err) != DETA_OK)
            fail_msg("%s: %s", defs[i].name, err);
    }
}

static void test_admin_token_bounds_and_characters(void **state) {
    (void)state;
    query_settings_t s;
    char token[QUERY_ADMIN_TOKEN_MAX + 2];
    memset(token, 'a', sizeof token - 1);
    token[QUERY_ADMIN_TOKEN_MAX] = '\0'; /* exactly the longest */
    setenv("QUERY_API_ADMIN_TOKEN", token, 1);
    load_ok(&s);
    assert_string_equal(s.admin_token, token);
    setenv("QUERY_API_ADMIN_TOKEN", "Az09-._~+/=Az09-._~+/=", 1);
    load_ok(&s);
    token[QUERY_ADMIN_TOKEN_MIN] = '\0'; /* exactly the shortest */
    setenv("QUERY_API_ADMIN_TOKEN", token, 1);
    load_ok(&s);
}

/* Refused naming the variable, without echoing the would-be secret, and wiped. */
static void admin_token_bad(const char *value) {
    clear_env(NULL);
    setenv("QUERY_API_ADMIN_TOKEN", value, 1);
    query_settings_t s;
    char err[256] = "";
    deta_err_t rc = query_settings_load(&s, err, sizeof err);
    if (rc != DETA_ERR_INVALID)
        fail_msg("token \"%s\" accepted", value);
    assert_non_null(strstr(err, "QUERY_API_ADMIN_TOKEN"));
    if (strlen(value) >= 8 && strstr(err, value))
        fail_msg("the error \"%s\" shows the token", err);
    assert_string_equal(s.admin_token, "");
}

static void test_admin_token_rejected(void **state) {
    (void)state;
    admin_token_bad("x");
    admin_token_bad("0123456789abcde"); /* 15 */
    admin_token_bad("0123456789abcdef 0123456789abcdef");
    admin_token_bad("0123456789abcdef\t");
    admin_token_bad("0123456789abcdef\"quoted\"");
    admin_token_bad("0123456789abcdef\xc3\xa9");
    char token[QUERY_ADMIN_TOKEN_MAX + 2];
    memset(token, 'a', sizeof token - 1);
    token[sizeof token - 1] = '\0'; /* one too long */
    admin_token_bad(token);
}

#define T(f) cmocka_unit_test_setup(f, clear_env)

int main(void) {
    const struct CMUnitTest tests[] = {
        T(test_defaults),
        T(test_consumer_workers),
        T(test_admin_token_has_no_default),
        T(test_admin_token_is_query_apis_alone),
        T(test_admin_token_bounds_and_characters),
        T(test_admin_token_rejected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
