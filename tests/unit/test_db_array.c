/*
 * test_db_array.c - the array literals of a statement's array parameters
 * (deta_db_array, lib/src/db_array.c): every element quoted, its quotes and
 * backslashes escaped, so that no text becomes NULL, a separator or two
 * elements; a NULL item is the element NULL. That Postgres reads them back as
 * given is checked against the real server by integration.test_db and the
 * services' integration tests.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "deta/db.h"

static void expect_literal(const char *const *items, size_t n, const char *want) {
    char *got = deta_db_array(items, n);
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

static void plain_elements_are_quoted(void **state) {
    (void)state;
    const char *ids[] = {"0b6c1a52-8d1e-4c4e-9f38-2a3c3f4b5d6e", "PICKED_UP", "7"};
    expect_literal(ids, 3, "{\"0b6c1a52-8d1e-4c4e-9f38-2a3c3f4b5d6e\",\"PICKED_UP\",\"7\"}");
    expect_literal(ids, 1, "{\"0b6c1a52-8d1e-4c4e-9f38-2a3c3f4b5d6e\"}");
}

static void none_is_the_empty_array(void **state) {
    (void)state;
    expect_literal(NULL, 0, "{}");
}

static void syntax_inside_an_element_stays_text(void **state) {
    (void)state;
    const char *tricky[] = {"NULL", "a,b", "{x}", "say \"hi\"", "back\\slash", "", " sp "};
    expect_literal(tricky, 7,
                   "{\"NULL\",\"a,b\",\"{x}\",\"say \\\"hi\\\"\",\"back\\\\slash\",\"\","
                   "\" sp \"}");
}

static void a_null_item_is_the_null_element(void **state) {
    (void)state;
    const char *items[] = {NULL, "NULL", NULL};
    expect_literal(items, 3, "{NULL,\"NULL\",NULL}");
    const char *only[] = {NULL};
    expect_literal(only, 1, "{NULL}");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(plain_elements_are_quoted),
        cmocka_unit_test(none_is_the_empty_array),
        cmocka_unit_test(syntax_inside_an_element_stays_text),
        cmocka_unit_test(a_null_item_is_the_null_element),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
