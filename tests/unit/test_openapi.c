/*
 * test_openapi.c - a document's operations (as tools/openapi-bundle lists them)
 * against the routes a service registered (lib/src/openapi.c), and libdeta's part
 * of every document (lib/openapi/common.json) against the states and topics the
 * code knows.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "deta/openapi.h"
#include "deta/states.h"
#include "deta/topics.h"

/* As tools/openapi-bundle writes a document's operations. */
static const char DOC[] = "POST /api/orders\n"
                          "GET /api/orders/{orderId}\n"
                          "GET /health\n";

static void test_the_same_routes_match(void **state) {
    (void)state;
    const deta_openapi_route_t routes[] = {
        {"GET", "/health"}, {"POST", "/api/orders"}, {"GET", "/api/orders/{orderId}"}};
    char err[256] = "x";
    assert_int_equal(deta_openapi_match_routes(DOC, routes, 3, err, sizeof err), DETA_OK);
    assert_string_equal(err, "");
}

static void test_every_difference_is_named(void **state) {
    (void)state;
    /* One undocumented route, one documented operation not served. */
    const deta_openapi_route_t routes[] = {
        {"GET", "/health"}, {"POST", "/api/orders"}, {"DELETE", "/api/orders/{orderId}"}};
    char err[256];
    assert_int_equal(deta_openapi_match_routes(DOC, routes, 3, err, sizeof err),
                     DETA_ERR_INVALID);
    assert_string_equal(err, "DELETE /api/orders/{orderId} is not documented; "
                             "GET /api/orders/{orderId} is documented but not served");
    /* Another template spelling is another path. */
    const deta_openapi_route_t renamed[] = {
        {"GET", "/health"}, {"POST", "/api/orders"}, {"GET", "/api/orders/{id}"}};
    assert_int_equal(deta_openapi_match_routes(DOC, renamed, 3, err, sizeof err),
                     DETA_ERR_INVALID);
    assert_non_null(strstr(err, "GET /api/orders/{id} is not documented"));
    /* No buffer: still refused. A small one: cut, still refused. */
    assert_int_equal(deta_openapi_match_routes(DOC, renamed, 3, NULL, 0), DETA_ERR_INVALID);
    char small[8];
    assert_int_equal(deta_openapi_match_routes(DOC, renamed, 3, small, sizeof small),
                     DETA_ERR_INVALID);
    assert_true(strlen(small) < sizeof small);
}

static void test_operations_that_are_not_a_list_are_refused(void **state) {
    (void)state;
    const deta_openapi_route_t routes[] = {{"GET", "/health"}};
    char err[128];
    assert_int_equal(deta_openapi_match_routes("GET /health", routes, 1, err, sizeof err),
                     DETA_OK); /* the last newline may be missing */
    assert_int_equal(deta_openapi_match_routes("", routes, 1, err, sizeof err), DETA_ERR_INVALID);
    assert_string_equal(err, "GET /health is not documented");
    assert_int_equal(deta_openapi_match_routes("GET\n", routes, 1, err, sizeof err),
                     DETA_ERR_INVALID);
    assert_non_null(strstr(err, "not a method and a path"));
    assert_int_equal(deta_openapi_match_routes("GET health\n", routes, 1, err, sizeof err),
                     DETA_ERR_INVALID);
    assert_int_equal(deta_openapi_match_routes(NULL, routes, 1, err, sizeof err),
                     DETA_ERR_INVALID);
}

/* The enum of common.json's schema name. */
static json_t *common_enum(json_t *common, const char *name) {
    json_t *s = json_object_get(json_object_get(json_object_get(common, "components"), "schemas"),
                                name);
    assert_non_null(s);
    return json_object_get(s, "enum");
}

static bool listed(json_t *list, const char *value) {
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v) {
        if (strcmp(json_string_value(v), value) == 0)
            return true;
    }
    return false;
}

static void test_the_common_enums_are_the_codes(void **state) {
    (void)state;
    json_error_t e;
    json_t *common = json_load_file(DETA_OPENAPI_COMMON, 0, &e);
    assert_non_null(common);
    json_t *states = common_enum(common, "OrderState");
    assert_int_equal(json_array_size(states), DETA_STATES_COUNT);
    for (int i = 0; i < DETA_STATES_COUNT; i++)
        assert_true(listed(states, deta_states[i]));
    json_t *topics = common_enum(common, "RawTopic");
    assert_int_equal(json_array_size(topics), DETA_TOPICS_RAW_COUNT);
    for (int i = 0; i < DETA_TOPICS_RAW_COUNT; i++)
        assert_true(listed(topics, deta_topics_all[i]));
    /* The event types: the code's list (topics.c), no more, no less. */
    json_t *types = common_enum(common, "EventType");
    size_t n = 0;
    for (; deta_event_type_at(n); n++)
        assert_true(listed(types, deta_event_type_at(n)));
    assert_int_equal(json_array_size(types), n);
    json_decref(common);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_same_routes_match),
        cmocka_unit_test(test_every_difference_is_named),
        cmocka_unit_test(test_operations_that_are_not_a_list_are_refused),
        cmocka_unit_test(test_the_common_enums_are_the_codes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
