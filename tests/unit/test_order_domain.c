/*
 * test_order_domain.c - order-service's validation and payload rules, no server.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "deta/states.h"
#include "order-service/domain.h"

static deta_err_t validate(const char *json, order_t *o, order_violation_t *v) {
    json_error_t jerr;
    json_t *body = json_loads(json, 0, &jerr);
    assert_non_null(body);
    deta_err_t err = order_from_request(body, o, v);
    json_decref(body);
    return err;
}

static void expect_violation(const char *json, const char *field, const char *reason) {
    order_t o;
    order_violation_t v;
    memset(&v, 0, sizeof v);
    assert_int_equal(validate(json, &o, &v), DETA_ERR_INVALID);
    assert_string_equal(v.field, field);
    assert_non_null(v.reason);
    assert_string_equal(v.reason, reason);
    assert_true(strlen(v.message) > 0);
}

static void valid_order_totals_exactly(void **state) {
    (void)state;
    order_t o;
    order_violation_t v;
    assert_int_equal(validate("{\"customerId\":\"c-1\",\"currency\":\"EUR\",\"items\":["
                              "{\"itemId\":\"a\",\"quantity\":3,\"unitPrice\":\"0.10\"},"
                              "{\"itemId\":\"b\",\"quantity\":1,\"unitPrice\":19.99}]}",
                              &o, &v),
                     DETA_OK);
    assert_string_equal(o.customer_id, "c-1");
    assert_string_equal(o.currency, "EUR");
    assert_int_equal(o.nitems, 2);
    assert_int_equal(o.items[0].unit_price, 10);
    assert_int_equal(o.items[1].unit_price, 1999);
    assert_int_equal(o.total, 2029); /* 3 x 0.10 + 19.99, exactly */
}

static void currency_defaults_to_usd(void **state) {
    (void)state;
    order_t o;
    order_violation_t v;
    assert_int_equal(validate("{\"customerId\":\"c\",\"items\":[{\"itemId\":\"a\",\"quantity\":1,"
                              "\"unitPrice\":0}]}",
                              &o, &v),
                     DETA_OK);
    assert_string_equal(o.currency, "USD");
    assert_int_equal(o.total, 0);
}

static void each_bad_field_is_named(void **state) {
    (void)state;
    const char *item = "{\"itemId\":\"a\",\"quantity\":1,\"unitPrice\":\"1.00\"}";
    char buf[512];
    expect_violation("[1,2]", "body", "invalid_type");
    snprintf(buf, sizeof buf, "{\"items\":[%s]}", item);
    expect_violation(buf, "customerId", "missing_field");
    snprintf(buf, sizeof buf, "{\"customerId\":\"\",\"items\":[%s]}", item);
    expect_violation(buf, "customerId", "empty_field");
    snprintf(buf, sizeof buf, "{\"customerId\":7,\"items\":[%s]}", item);
    expect_violation(buf, "customerId", "invalid_type");
    expect_violation("{\"customerId\":\"c\"}", "items", "missing_field");
    expect_violation("{\"customerId\":\"c\",\"items\":[]}", "items", "empty_field");
    expect_violation("{\"customerId\":\"c\",\"items\":{}}", "items", "invalid_type");
    expect_violation("{\"customerId\":\"c\",\"items\":[1]}", "items[0]", "invalid_type");
    snprintf(buf, sizeof buf, "{\"customerId\":\"c\",\"currency\":\"usd\",\"items\":[%s]}", item);
    expect_violation(buf, "currency", "invalid_currency");
    snprintf(buf, sizeof buf, "{\"customerId\":\"c\",\"currency\":\"USDX\",\"items\":[%s]}", item);
    expect_violation(buf, "currency", "invalid_currency");
    snprintf(buf, sizeof buf, "{\"customerId\":\"c\",\"currency\":null,\"items\":[%s]}", item);
    expect_violation(buf, "currency", "invalid_currency");
    expect_violation("{\"customerId\":\"c\",\"items\":[" "{\"quantity\":1,\"unitPrice\":1}]}",
                     "items[0].itemId", "missing_field");
    expect_violation("{\"customerId\":\"c\",\"items\":[{\"itemId\":\"a\",\"quantity\":0,"
                     "\"unitPrice\":1}]}",
                     "items[0].quantity", "invalid_quantity");
    expect_violation("{\"customerId\":\"c\",\"items\":[{\"itemId\":\"a\",\"quantity\":1.5,"
                     "\"unitPrice\":1}]}",
                     "items[0].quantity", "invalid_quantity");
    expect_violation("{\"customerId\":\"c\",\"items\":[{\"itemId\":\"a\",\"quantity\":\"2\","
                     "\"unitPrice\":1}]}",
                     "items[0].quantity", "invalid_quantity");
    expect_violation("{\"customerId\":\"c\",\"items\":[{\"itemId\":\"a\",\"quantity\":1}]}",
                     "items[0].unitPrice", "missing_field");
    snprintf(buf, sizeof buf,
             "{\"customerId\":\"c\",\"items\":[%s,{\"itemId\":\"b\",\"quantity\":1,"
             "\"unitPrice\":\"-1.00\"}]}",
             item);
    expect_violation(buf, "items[1].unitPrice", "invalid_price");
    expect_violation("{\"customerId\":\"c\",\"items\":[{\"itemId\":\"a\",\"quantity\":1,"
                     "\"unitPrice\":\"1.001\"}]}",
                     "items[0].unitPrice", "invalid_price");
    expect_violation("{\"customerId\":\"c\",\"items\":[{\"itemId\":\"a\",\"quantity\":1,"
                     "\"unitPrice\":1.001}]}",
                     "items[0].unitPrice", "invalid_price");
}

static void overlong_ids_and_too_many_items_are_refused(void **state) {
    (void)state;
    char id[80], buf[8192];
    memset(id, 'x', 65);
    id[65] = 0;
    snprintf(buf, sizeof buf,
             "{\"customerId\":\"%s\",\"items\":[{\"itemId\":\"a\",\"quantity\":1,"
             "\"unitPrice\":1}]}",
             id);
    expect_violation(buf, "customerId", "too_long");
    size_t len = (size_t)snprintf(buf, sizeof buf, "{\"customerId\":\"c\",\"items\":[");
    for (int i = 0; i <= ORDER_MAX_ITEMS; i++)
        len += (size_t)snprintf(buf + len, sizeof buf - len,
                                "%s{\"itemId\":\"a\",\"quantity\":1,\"unitPrice\":1}",
                                i ? "," : "");
    snprintf(buf + len, sizeof buf - len, "]}");
    expect_violation(buf, "items", "too_many_items");
}

static void total_overflow_is_refused(void **state) {
    (void)state;
    expect_violation("{\"customerId\":\"c\",\"items\":[{\"itemId\":\"a\",\"quantity\":100000,"
                     "\"unitPrice\":\"9999999999999.99\"}]}",
                     "items", "amount_out_of_range");
}

static void payload_carries_the_order(void **state) {
    (void)state;
    order_t o;
    order_violation_t v;
    assert_int_equal(validate("{\"customerId\":\"c-9\",\"items\":[{\"itemId\":\"sku\","
                              "\"quantity\":2,\"unitPrice\":\"4.50\"}]}",
                              &o, &v),
                     DETA_OK);
    order_assign_identity(&o, NULL);
    assert_true(deta_uuid_valid(o.order_id));
    assert_true(deta_uuid_valid(o.correlation_id));
    assert_true(deta_timestamp_valid(o.created_at));
    json_t *p = order_created_payload(&o);
    assert_non_null(p);
    assert_string_equal(json_string_value(json_object_get(p, "orderId")), o.order_id);
    assert_string_equal(json_string_value(json_object_get(p, "customerId")), "c-9");
    assert_string_equal(json_string_value(json_object_get(p, "totalAmount")), "9.00");
    assert_string_equal(json_string_value(json_object_get(p, "currency")), "USD");
    assert_string_equal(json_string_value(json_object_get(p, "status")), DETA_STATE_CREATED);
    json_t *items = json_object_get(p, "items");
    assert_int_equal(json_array_size(items), 1);
    json_t *it = json_array_get(items, 0);
    assert_string_equal(json_string_value(json_object_get(it, "itemId")), "sku");
    assert_int_equal(json_integer_value(json_object_get(it, "quantity")), 2);
    assert_string_equal(json_string_value(json_object_get(it, "unitPrice")), "4.50");
    json_decref(p);

    order_assign_identity(&o, "11111111-2222-4333-8444-555555555555");
    assert_string_equal(o.correlation_id, "11111111-2222-4333-8444-555555555555");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(valid_order_totals_exactly),
        cmocka_unit_test(currency_defaults_to_usd),
        cmocka_unit_test(each_bad_field_is_named),
        cmocka_unit_test(overlong_ids_and_too_many_items_are_refused),
        cmocka_unit_test(total_overflow_is_refused),
        cmocka_unit_test(payload_carries_the_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
