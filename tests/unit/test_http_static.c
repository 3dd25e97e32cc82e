/*
 * test_http_static.c - the static files' rules (deta/http_static.h): which request
 * paths are looked up and as which file, the content types, and the bounded read
 * that never leaves its directory (on a scratch directory with links out of it).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "deta/http_static.h"

static const char *name_of(const char *path) { return deta_static_name(path, strlen(path)); }

static void test_paths_looked_up(void **state) {
    (void)state;
    assert_string_equal(name_of("/"), "index.html");
    assert_string_equal(name_of("/index.html"), "index.html");
    assert_string_equal(name_of("/js/app.js"), "js/app.js");
    assert_string_equal(name_of("/a-b_c.d/E9.min.css"), "a-b_c.d/E9.min.css");
    assert_string_equal(name_of("/1/2/3/4/5/6/7/8"), "1/2/3/4/5/6/7/8"); /* 8 segments */
    assert_string_equal(name_of("/a..b"), "a..b"); /* dots inside a name are fine */
}

static void test_paths_refused(void **state) {
    (void)state;
    const char *bad[] = {"", "index.html", "//", "/..", "/../etc/passwd", "/js/../index.html",
                         "/.", "/.env", "/js/.hidden.js", "/js/", "/js//app.js", "/a b",
                         "/a%2e", "/a\\b", "/a:b", "/a?b", "/~a", "/1/2/3/4/5/6/7/8/9",
                         "/\xc3\xa9.html", "/a\tb", "/./a"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (name_of(bad[i]))
            fail_msg("\"%s\" looked up", bad[i]);
    assert_null(deta_static_name("/a\0b.js", 7)); /* a NUL inside */
    assert_null(deta_static_name(NULL, 0));
    char longest[DETA_STATIC_MAX_PATH + 2];
    memset(longest, 'a', sizeof longest - 1);
    longest[0] = '/';
    longest[sizeof longest - 1] = '\0';
    assert_null(name_of(longest));
}

static void test_content_types(void **state) {
    (void)state;
    assert_string_equal(deta_static_content_type("index.html"), "text/html; charset=utf-8");
    assert_string_equal(deta_static_content_type("console.css"), "text/css; charset=utf-8");
    assert_string_equal(deta_static_content_type("js/app.js"),
                        "text/javascript; charset=utf-8");
    assert_string_equal(deta_static_content_type("a.json"), "application/json");
    assert_string_equal(deta_static_content_type("a.svg"), "image/svg+xml");
    assert_string_equal(deta_static_content_type("a.png"), "image/png");
    assert_string_equal(deta_static_content_type("favicon.ico"), "image/x-icon");
    assert_string_equal(deta_static_content_type("robots.txt"), "text/plain; charset=utf-8");
    const char *none[] = {"a", "a.htm", "a.HTML", "a.sh", "a.js.map", "a.mjs", "js.d/x",
                          "a.html.bak", "a."};
    for (size_t i = 0; i < sizeof none / sizeof *none; i++)
        if (deta_static_content_type(none[i]))
            fail_msg("%s has a type", none[i]);
    assert_null(deta_static_content_type(NULL));
}

/* ---- the read, on a scratch directory ---- */

typedef struct scratch {
    char top[64];  /* holds root/ and outside.txt */
    char root[96]; /* canonical */
} scratch_t;

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int setup(void **state) {
    scratch_t *s = calloc(1, sizeof *s);
    snprintf(s->top, sizeof s->top, "/tmp/deta-static-XXXXXX");
    if (!mkdtemp(s->top))
        return -1;
    char path[256];
    snprintf(path, sizeof path, "%s/root", s->top);
    mkdir(path, 0755);
    char *canon = realpath(path, NULL);
    snprintf(s->root, sizeof s->root, "%s", canon);
    free(canon);
    snprintf(path, sizeof path, "%s/outside.txt", s->top);
    write_file(path, "secret");
    snprintf(path, sizeof path, "%s/index.html", s->root);
    write_file(path, "<p>hi</p>");
    snprintf(path, sizeof path, "%s/js", s->root);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/js/app.js", s->root);
    write_file(path, "export {};");
    char target[256];
    snprintf(path, sizeof path, "%s/out.txt", s->root); /* a link out of the directory */
    snprintf(target, sizeof target, "%s/outside.txt", s->top);
    assert_int_equal(symlink(target, path), 0);
    snprintf(path, sizeof path, "%s/up.txt", s->root); /* relative, out */
    assert_int_equal(symlink("../outside.txt", path), 0);
    snprintf(path, sizeof path, "%s/in.js", s->root); /* a link inside: fine */
    assert_int_equal(symlink("js/app.js", path), 0);
    snprintf(path, sizeof path, "%s/big.txt", s->root);
    FILE *f = fopen(path, "w");
    for (int i = 0; i < 2000; i++)
        fputc('x', f);
    fclose(f);
    *state = s;
    return 0;
}

static int teardown(void **state) {
    scratch_t *s = *state;
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", s->top);
    if (system(cmd) != 0)
        return -1;
    free(s);
    return 0;
}

static deta_err_t read_name(const scratch_t *s, const char *name, long max, char **data,
                            size_t *len) {
    return deta_static_read(s->root, name, max, data, len);
}

static void test_read_inside(void **state) {
    scratch_t *s = *state;
    char *data;
    size_t len;
    assert_int_equal(read_name(s, "index.html", 4096, &data, &len), DETA_OK);
    assert_int_equal(len, 9);
    assert_memory_equal(data, "<p>hi</p>", 9);
    free(data);
    assert_int_equal(read_name(s, "in.js", 4096, &data, &len), DETA_OK);
    assert_string_equal(data, "export {};");
    free(data);
}

static void test_read_never_leaves_the_directory(void **state) {
    scratch_t *s = *state;
    char *data = (char *)1;
    size_t len = 1;
    const char *out[] = {"out.txt", "up.txt", "../outside.txt", "missing.js", "js", ""};
    for (size_t i = 0; i < sizeof out / sizeof *out; i++) {
        if (read_name(s, out[i], 4096, &data, &len) != DETA_ERR_NOT_FOUND)
            fail_msg("%s was read", out[i]);
        assert_null(data);
        assert_int_equal(len, 0);
    }
}

static void test_read_is_bounded(void **state) {
    scratch_t *s = *state;
    char *data;
    size_t len;
    assert_int_equal(read_name(s, "big.txt", 1999, &data, &len), DETA_ERR_INVALID);
    assert_null(data);
    assert_int_equal(read_name(s, "big.txt", 2000, &data, &len), DETA_OK);
    assert_int_equal(len, 2000);
    free(data);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_paths_looked_up),
        cmocka_unit_test(test_paths_refused),
        cmocka_unit_test(test_content_types),
        cmocka_unit_test(test_read_inside),
        cmocka_unit_test(test_read_never_leaves_the_directory),
        cmocka_unit_test(test_read_is_bounded),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
