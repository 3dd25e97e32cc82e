/*
 * test_http_cors.c - the CORS allow-list's rules (deta/http_cors.h): which strings are
 * origins, how HTTP_CORS_ORIGINS is parsed and refused, and exact matching.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "deta/http_cors.h"

static bool valid(const char *s) { return deta_cors_origin_valid(s, strlen(s), NULL); }

static void test_origins_accepted(void **state) {
    (void)state;
    const char *good[] = {"http://localhost:8080", "http://127.0.0.1:8080", "https://console.example",
                          "http://a", "https://a-b.c.example:8443", "http://[::1]:8080",
                          "http://[::1]", "http://localhost:65535", "http://localhost:1",
                          "https://localhost:80", "http://localhost:443"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        if (!valid(good[i]))
            fail_msg("%s refused", good[i]);
}

static void test_non_origins_refused(void **state) {
    (void)state;
    const char *bad[] = {"", "*", "null", "localhost:8080", "ftp://localhost",
                         "HTTP://localhost", "http://", "http://Localhost",
                         "http://localhost/", "http://localhost:8080/x", "http://localhost:",
                         "http://localhost:0", "http://localhost:65536", "http://localhost:08080",
                         "http://localhost:80", "https://localhost:443", "http://user@localhost",
                         "http://localhost?x", "http://localhost#x", "http://local host",
                         "http://-a", "http://a-", "http://.a", "http://[::1", "http://[]",
                         "http://[::g]", "http://localhost:8080,http://a", "http://a:b",
                         "http://*.example", " http://a"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        const char *why = NULL;
        if (deta_cors_origin_valid(bad[i], strlen(bad[i]), &why))
            fail_msg("\"%s\" accepted", bad[i]);
        assert_non_null(why);
    }
    /* a NUL inside, and a NULL pointer */
    assert_false(deta_cors_origin_valid("http://a\0b", 10, NULL));
    assert_false(deta_cors_origin_valid(NULL, 3, NULL));
    char huge[DETA_CORS_ORIGIN_MAX + 2];
    memset(huge, 'a', sizeof huge);
    memcpy(huge, "http://", 7);
    assert_false(deta_cors_origin_valid(huge, sizeof huge, NULL));
}

static void test_list_parsed(void **state) {
    (void)state;
    deta_cors_origins_t l;
    char err[256] = "";
    assert_int_equal(deta_cors_origins_parse(NULL, "V", &l, err, sizeof err), DETA_OK);
    assert_int_equal(l.n, 0);
    assert_int_equal(deta_cors_origins_parse("  ", "V", &l, err, sizeof err), DETA_OK);
    assert_int_equal(l.n, 0);
    assert_int_equal(deta_cors_origins_parse("http://localhost:8080 , http://127.0.0.1:8080",
                                             "V", &l, err, sizeof err),
                     DETA_OK);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.origin[0], "http://localhost:8080");
    assert_string_equal(l.origin[1], "http://127.0.0.1:8080");
}

static void parse_bad(const char *list, const char *says) {
    deta_cors_origins_t l;
    char err[256] = "";
    if (deta_cors_origins_parse(list, "HTTP_CORS_ORIGINS", &l, err, sizeof err) !=
        DETA_ERR_INVALID)
        fail_msg("\"%s\" accepted", list);
    assert_int_equal(l.n, 0);
    if (!strstr(err, "HTTP_CORS_ORIGINS") || !strstr(err, says))
        fail_msg("\"%s\": message \"%s\" lacks \"%s\"", list, err, says);
}

static void test_bad_lists_refused(void **state) {
    (void)state;
    parse_bad("*", "\"*\" is not allowed");
    parse_bad("http://a,*", "entry 2");
    parse_bad("http://a,", "entry 2");
    parse_bad(",http://a", "entry 1");
    parse_bad("http://a,,http://b", "entry 2");
    parse_bad("http://a/", "a path");
    parse_bad("http://a,http://a", "listed twice");
    char many[2048] = "";
    for (int i = 0; i <= DETA_CORS_MAX_ORIGINS; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "%shttp://h%d", i ? "," : "", i);
    parse_bad(many, "more than");
}

static void test_matching_is_exact(void **state) {
    (void)state;
    deta_cors_origins_t l;
    char err[256] = "";
    assert_int_equal(deta_cors_origins_parse("http://localhost:8080,http://127.0.0.1:8080", "V",
                                             &l, err, sizeof err),
                     DETA_OK);
    assert_string_equal(deta_cors_origins_match(&l, "http://127.0.0.1:8080"),
                        "http://127.0.0.1:8080");
    assert_non_null(deta_cors_origins_match(&l, "http://localhost:8080"));
    const char *no[] = {"http://localhost:8081", "http://localhost", "https://localhost:8080",
                        "http://localhost:8080/", "http://LOCALHOST:8080", "null", "",
                        "http://localhost:80800", "http://localhost:808"};
    for (size_t i = 0; i < sizeof no / sizeof *no; i++)
        if (deta_cors_origins_match(&l, no[i]))
            fail_msg("%s matched", no[i]);
    assert_null(deta_cors_origins_match(&l, NULL));
    deta_cors_origins_t empty = {0};
    assert_null(deta_cors_origins_match(&empty, "http://localhost:8080"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_origins_accepted), cmocka_unit_test(test_non_origins_refused),
        cmocka_unit_test(test_list_parsed),      cmocka_unit_test(test_bad_lists_refused),
        cmocka_unit_test(test_matching_is_exact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
