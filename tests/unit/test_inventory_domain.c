/*
 * test_inventory_domain.c - inventory-service's rules, no server: reading
 * order.created (and refusing malformed ones), the all-or-nothing decision,
 * settling after payments (a late authorization of an expired hold included),
 * item ids, the catalog, the admin's versioned and relative stock changes, the
 * cancellation saga's rules (a cancel request by reservation status, the
 * compensation of a verdict, reading their events) and the payloads of
 * docs/contracts.md.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "inventory-service/domain.h"

#define ORDER "3f1c2b7e-0000-4000-8000-000000000001"

/* ---- order.created ---- */

static deta_err_t parse(const char *json, inv_request_t *r, char *why, size_t whysize) {
    json_error_t jerr;
    json_t *payload = json_loads(json, JSON_DECODE_ANY, &jerr);
    if (!payload)
        fail_msg("test JSON does not parse: %s: %s", jerr.text, json);
    deta_err_t err = inv_request_from_order_created(payload, ORDER, r, why, whysize);
    json_decref(payload);
    return err;
}

/* A payload with the given items array text and the usual other fields. */
static char *payload_with_items(const char *items) {
    size_t n = strlen(items) + 256;
    char *s = malloc(n);
    assert_non_null(s);
    snprintf(s, n,
             "{\"orderId\":\"" ORDER "\",\"customerId\":\"c-1\",\"totalAmount\":\"20.48\","
             "\"currency\":\"EUR\",\"status\":\"CREATED\",\"items\":%s}",
             items);
    return s;
}

static void expect_malformed(const char *json, const char *mention) {
    inv_request_t r;
    char why[256] = "";
    if (parse(json, &r, why, sizeof why) != DETA_ERR_INVALID)
        fail_msg("accepted a malformed payload: %s", json);
    if (!strstr(why, mention))
        fail_msg("error \"%s\" does not mention %s (payload %s)", why, mention, json);
}

static void expect_malformed_items(const char *items, const char *mention) {
    char *json = payload_with_items(items);
    expect_malformed(json, mention);
    free(json);
}

static void order_created_is_read_with_duplicates_added(void **state) {
    (void)state;
    inv_request_t r;
    char why[256] = "";
    char *json = payload_with_items("[{\"itemId\":\"b\",\"quantity\":2,\"unitPrice\":\"1.00\"},"
                                    "{\"itemId\":\"a\",\"quantity\":1,\"unitPrice\":\"1.00\"},"
                                    "{\"itemId\":\"b\",\"quantity\":5,\"unitPrice\":\"2.00\"}]");
    assert_int_equal(parse(json, &r, why, sizeof why), DETA_OK);
    free(json);
    assert_string_equal(r.order_id, ORDER);
    assert_string_equal(r.customer_id, "c-1");
    assert_string_equal(r.currency, "EUR");
    assert_int_equal(r.total, 2048);
    assert_int_equal(r.nlines, 2); /* b twice became one line, first-appearance order */
    assert_string_equal(r.lines[0].item_id, "b");
    assert_int_equal(r.lines[0].quantity, 7);
    assert_string_equal(r.lines[1].item_id, "a");
    assert_int_equal(r.lines[1].quantity, 1);
}

static void order_created_accepts_limits_and_numeric_amounts(void **state) {
    (void)state;
    inv_request_t r;
    char why[256] = "";
    /* Two full lines of one item add up beyond a single line's limit: allowed. */
    assert_int_equal(parse("{\"orderId\":\"" ORDER "\",\"customerId\":\"c\",\"totalAmount\":0,"
                           "\"currency\":\"USD\",\"items\":["
                           "{\"itemId\":\"x\",\"quantity\":100000},"
                           "{\"itemId\":\"x\",\"quantity\":100000}]}",
                           &r, why, sizeof why),
                     DETA_OK);
    assert_int_equal(r.total, 0);
    assert_int_equal(r.nlines, 1);
    assert_int_equal(r.lines[0].quantity, 200000);

    /* 100 lines is the most, with a 64-character item id. */
    char items[100 * 100] = "[";
    char id64[65];
    memset(id64, 'z', 64);
    id64[64] = 0;
    for (int i = 0; i < 100; i++) {
        char id[72], line[128];
        snprintf(id, sizeof id, "%s", id64);
        if (i > 0)
            snprintf(id, sizeof id, "i%d", i);
        snprintf(line, sizeof line, "%s{\"itemId\":\"%s\",\"quantity\":1}", i ? "," : "", id);
        strcat(items, line);
    }
    strcat(items, "]");
    char *json = payload_with_items(items);
    assert_int_equal(parse(json, &r, why, sizeof why), DETA_OK);
    free(json);
    assert_int_equal(r.nlines, 100);
    assert_string_equal(r.lines[0].item_id, id64);

    strcpy(items + strlen(items) - 1, ",{\"itemId\":\"one-more\",\"quantity\":1}]");
    expect_malformed_items(items, "items");
}

static void malformed_order_created_is_refused_naming_the_field(void **state) {
    (void)state;
    expect_malformed("[]", "payload");
    expect_malformed("{\"customerId\":\"c\",\"totalAmount\":\"1.00\",\"currency\":\"USD\","
                     "\"items\":[{\"itemId\":\"a\",\"quantity\":1}]}",
                     "orderId");
    expect_malformed("{\"orderId\":\"another\",\"customerId\":\"c\",\"totalAmount\":\"1.00\","
                     "\"currency\":\"USD\",\"items\":[{\"itemId\":\"a\",\"quantity\":1}]}",
                     "orderId");
    expect_malformed("{\"orderId\":\"" ORDER "\",\"totalAmount\":\"1.00\",\"currency\":\"USD\","
                     "\"items\":[{\"itemId\":\"a\",\"quantity\":1}]}",
                     "customerId");
    expect_malformed("{\"orderId\":\"" ORDER "\",\"customerId\":\"\",\"totalAmount\":\"1.00\","
                     "\"currency\":\"USD\",\"items\":[{\"itemId\":\"a\",\"quantity\":1}]}",
                     "customerId");
    expect_malformed("{\"orderId\":\"" ORDER "\",\"customerId\":7,\"totalAmount\":\"1.00\","
                     "\"currency\":\"USD\",\"items\":[{\"itemId\":\"a\",\"quantity\":1}]}",
                     "customerId");
    expect_malformed("{\"orderId\":\"" ORDER "\",\"customerId\":\"c\",\"currency\":\"USD\","
                     "\"items\":[{\"itemId\":\"a\",\"quantity\":1}]}",
                     "totalAmount");
    expect_malformed("{\"orderId\":\"" ORDER "\",\"customerId\":\"c\",\"totalAmount\":\"1.005\","
                     "\"currency\":\"USD\",\"items\":[{\"itemId\":\"a\",\"quantity\":1}]}",
                     "totalAmount");
    expect_malformed("{\"orderId\":\"" ORDER "\",\"customerId\":\"c\",\"totalAmount\":\"-1.00\","
                     "\"currency\":\"USD\",\"items\":[{\"itemId\":\"a\",\"quantity\":1}]}",
                     "totalAmount");
    expect_malformed("{\"orderId\":\"" ORDER "\",\"customerId\":\"c\",\"totalAmount\":\"1.00\","
                     "\"items\":[{\"itemId\":\"a\",\"quantity\":1}]}",
                     "currency");
    expect_malformed("{\"orderId\":\"" ORDER "\",\"customerId\":\"c\",\"totalAmount\":\"1.00\","
                     "\"currency\":\"usd\",\"items\":[{\"itemId\":\"a\",\"quantity\":1}]}",
                     "currency");
    expect_malformed("{\"orderId\":\"" ORDER "\",\"customerId\":\"c\",\"totalAmount\":\"1.00\","
                     "\"currency\":\"USD\"}",
                     "items");
}

static void malformed_items_are_refused_naming_the_line(void **state) {
    (void)state;
    char long_id[128];
    snprintf(long_id, sizeof long_id, "[{\"itemId\":\"%065d\",\"quantity\":1}]", 0);
    expect_malformed_items("{}", "items");
    expect_malformed_items("[]", "items");
    expect_malformed_items("[7]", "items[0]");
    expect_malformed_items("[{\"itemId\":\"a\",\"quantity\":1},{\"quantity\":1}]",
                           "items[1].itemId");
    expect_malformed_items("[{\"itemId\":\"\",\"quantity\":1}]", "items[0].itemId");
    expect_malformed_items("[{\"itemId\":5,\"quantity\":1}]", "items[0].itemId");
    expect_malformed_items(long_id, "items[0].itemId");
    expect_malformed_items("[{\"itemId\":\"a\"}]", "items[0].quantity");
    expect_malformed_items("[{\"itemId\":\"a\",\"quantity\":0}]", "items[0].quantity");
    expect_malformed_items("[{\"itemId\":\"a\",\"quantity\":-3}]", "items[0].quantity");
    expect_malformed_items("[{\"itemId\":\"a\",\"quantity\":100001}]", "items[0].quantity");
    expect_malformed_items("[{\"itemId\":\"a\",\"quantity\":2.5}]", "items[0].quantity");
    expect_malformed_items("[{\"itemId\":\"a\",\"quantity\":\"3\"}]", "items[0].quantity");
    expect_malformed_items("[{\"itemId\":\"a\",\"quantity\":null}]", "items[0].quantity");
}

/* ---- the decision ---- */

static inv_request_t request_of(const char *const *ids, const int64_t *qty, size_t n) {
    inv_request_t r;
    memset(&r, 0, sizeof r);
    snprintf(r.order_id, sizeof r.order_id, "%s", ORDER);
    snprintf(r.customer_id, sizeof r.customer_id, "c-1");
    for (size_t i = 0; i < n; i++) {
        snprintf(r.lines[i].item_id, sizeof r.lines[i].item_id, "%s", ids[i]);
        r.lines[i].quantity = qty[i];
    }
    r.nlines = n;
    return r;
}

/* The decision on an order of these lines against these stock levels. */
static inv_decision_t decision_of(const char *const *ids, const int64_t *qty, size_t n,
                                  const inv_level_t *levels, size_t nlevels) {
    inv_request_t r = request_of(ids, qty, n);
    inv_decision_t d;
    inv_decide(r.lines, r.nlines, levels, nlevels, &d);
    return d;
}

static void enough_stock_everywhere_reserves(void **state) {
    (void)state;
    const char *ids[] = {"a", "b"};
    const int64_t qty[] = {3, 10};
    const inv_level_t levels[] = {{"b", 10, true}, {"a", 4, true}, {"other", 0, true}};
    inv_decision_t d = decision_of(ids, qty, 2, levels, 3);
    assert_true(d.reserve); /* b exactly drained is enough */
    assert_null(d.reason);
}

static void one_short_line_rejects_the_whole_order(void **state) {
    (void)state;
    const char *ids[] = {"a", "b", "c"};
    const int64_t qty[] = {1, 5, 1};
    const inv_level_t levels[] = {{"a", 100, true}, {"b", 4, true}}; /* c unknown, b first */
    inv_decision_t d = decision_of(ids, qty, 3, levels, 2);
    assert_false(d.reserve);
    assert_string_equal(d.reason, INV_REASON_INSUFFICIENT_STOCK);
    assert_string_equal(d.item_id, "b");
    assert_int_equal(d.requested, 5);
    assert_int_equal(d.available, 4);
}

static void an_unknown_item_rejects_with_zero_available(void **state) {
    (void)state;
    const char *ids[] = {"a", "ghost", "b"};
    const int64_t qty[] = {1, 2, 50};
    const inv_level_t levels[] = {{"a", 100, true}, {"b", 1, true}};
    inv_decision_t d = decision_of(ids, qty, 3, levels, 2);
    assert_false(d.reserve);
    assert_string_equal(d.reason, INV_REASON_UNKNOWN_ITEM);
    assert_string_equal(d.item_id, "ghost");
    assert_int_equal(d.requested, 2);
    assert_int_equal(d.available, 0);

    d = decision_of(ids, qty, 3, NULL, 0); /* no stock rows at all */
    assert_false(d.reserve);
    assert_string_equal(d.item_id, "a");
    assert_string_equal(d.reason, INV_REASON_UNKNOWN_ITEM);
}

static void zero_available_is_short_not_unknown(void **state) {
    (void)state;
    const char *ids[] = {"a"};
    const int64_t qty[] = {1};
    const inv_level_t levels[] = {{"a", 0, true}};
    inv_decision_t d = decision_of(ids, qty, 1, levels, 1);
    assert_false(d.reserve);
    assert_string_equal(d.reason, INV_REASON_INSUFFICIENT_STOCK);
    assert_int_equal(d.available, 0);
}

static void stopped_sales_reject_whatever_is_available(void **state) {
    (void)state;
    const char *ids[] = {"a", "b"};
    const int64_t qty[] = {1, 1};
    const inv_level_t levels[] = {{"a", 100, true}, {"b", 100, false}};
    inv_decision_t d = decision_of(ids, qty, 2, levels, 2);
    assert_false(d.reserve);
    assert_string_equal(d.reason, INV_REASON_NOT_SELLABLE);
    assert_string_equal(d.item_id, "b");
    assert_int_equal(d.available, 100);
}

static void payment_outcomes_settle_held_and_retake_expired(void **state) {
    (void)state;
    assert_int_equal(inv_settlement_after_payment(INV_STATUS_HELD, "", true), INV_SETTLE_SELL);
    assert_int_equal(inv_settlement_after_payment(INV_STATUS_HELD, "", false),
                     INV_SETTLE_RELEASE);
    /* released because the hold expired, then authorized after all */
    assert_int_equal(
        inv_settlement_after_payment(INV_STATUS_RELEASED, INV_REASON_HOLD_EXPIRED, true),
        INV_SETTLE_RETAKE);
    const struct {
        const char *status, *reason;
        bool authorized;
    } nothing[] = {
        {INV_STATUS_RELEASED, INV_REASON_HOLD_EXPIRED, false}, /* "hold expired" failure */
        {INV_STATUS_RELEASED, INV_REASON_PAYMENT_FAILED, true}, /* a contradiction */
        {INV_STATUS_RELEASED, INV_REASON_PAYMENT_FAILED, false},
        {INV_STATUS_RELEASED, "", true},
        {INV_STATUS_SOLD, INV_REASON_HOLD_EXPIRED, true},
        {INV_STATUS_SOLD, "", false},
        {INV_STATUS_UNFULFILLABLE, INV_REASON_HOLD_EXPIRED, true},
        {INV_STATUS_REJECTED, INV_REASON_INSUFFICIENT_STOCK, true},
        {"", "", true},
        {NULL, NULL, true},
    };
    for (size_t i = 0; i < sizeof nothing / sizeof *nothing; i++)
        if (inv_settlement_after_payment(nothing[i].status, nothing[i].reason,
                                         nothing[i].authorized) != INV_SETTLE_NOTHING)
            fail_msg("case %zu settles", i);
}

static void item_ids_are_url_safe(void **state) {
    (void)state;
    char id64[66];
    memset(id64, 'a', 65);
    id64[65] = 0;
    assert_false(inv_item_id_valid(id64));
    id64[64] = 0;
    assert_true(inv_item_id_valid(id64));
    assert_true(inv_item_id_valid("sku-limited"));
    assert_true(inv_item_id_valid("A.b_c~d-9"));
    const char *bad[] = {NULL, "", "a b", "a/b", "a:b", "a,b", "a?b", "a%20", "caf\xc3\xa9"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (inv_item_id_valid(bad[i]))
            fail_msg("accepted item id %s", bad[i] ? bad[i] : "(null)");
}

static void default_catalog_has_the_demo_items(void **state) {
    (void)state;
    inv_catalog_t c;
    char why[256] = "";
    assert_int_equal(inv_catalog_parse(INV_DEFAULT_CATALOG, &c, why, sizeof why), DETA_OK);
    assert_int_equal(c.n, 21);
    for (size_t i = 0; i < 20; i++) {
        char id[16];
        snprintf(id, sizeof id, "sku-%zu", i + 1);
        assert_string_equal(c.items[i].item_id, id);
        assert_int_equal(c.items[i].quantity, 100000);
    }
    assert_string_equal(c.items[20].item_id, "sku-limited");
    assert_int_equal(c.items[20].quantity, 25);
    inv_catalog_clear(&c);
    assert_int_equal(c.n, 0);
    assert_null(c.items);
}

static void catalog_allows_blanks_zero_and_the_maximum(void **state) {
    (void)state;
    inv_catalog_t c;
    char why[256] = "";
    assert_int_equal(inv_catalog_parse(" a:1 ,\tb:0,c:1000000000 ", &c, why, sizeof why), DETA_OK);
    assert_int_equal(c.n, 3);
    assert_string_equal(c.items[0].item_id, "a");
    assert_int_equal(c.items[0].quantity, 1);
    assert_int_equal(c.items[1].quantity, 0);
    assert_int_equal(c.items[2].quantity, INV_MAX_UNITS);
    inv_catalog_clear(&c);
}

static void bad_catalogs_name_the_variable_and_entry(void **state) {
    (void)state;
    char id65[80];
    snprintf(id65, sizeof id65, "%065d:1", 0);
    const struct {
        const char *spec;
        const char *mention;
    } cases[] = {
        {"", "entry 1"},         {"a", "entry 1"},          {"a:", "entry 1"},
        {"a:x", "entry 1"},      {"a:-1", "entry 1"},       {":5", "entry 1"},
        {"a:1,,b:2", "entry 2"}, {"a:1,", "entry 2"},       {"a:1,a:2", "twice"},
        {"a:1000000001", "units"}, {"a:99999999999", "units"}, {"a b:1", "itemId"},
        {"a:1:2", "units"},      {id65, "itemId"},          {"a:1.5", "units"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        inv_catalog_t c;
        char why[256] = "";
        if (inv_catalog_parse(cases[i].spec, &c, why, sizeof why) != DETA_ERR_INVALID)
            fail_msg("accepted catalog \"%s\"", cases[i].spec);
        if (strncmp(why, INV_CATALOG_VAR, strlen(INV_CATALOG_VAR)) != 0 ||
            !strstr(why, cases[i].mention))
            fail_msg("catalog \"%s\": error \"%s\" should name %s and %s", cases[i].spec, why,
                     INV_CATALOG_VAR, cases[i].mention);
        assert_int_equal(c.n, 0);
        assert_null(c.items);
    }
}

/* ---- the admin's stock changes ---- */

static deta_err_t change_from(const char *json, bool relative, inv_stock_change_t *c,
                              inv_violation_t *v) {
    json_t *body = json_loads(json, JSON_DECODE_ANY, NULL);
    assert_non_null(body);
    deta_err_t err = relative ? inv_stock_patch_from_request(body, c, v)
                              : inv_stock_put_from_request(body, c, v);
    json_decref(body);
    return err;
}

static void stock_put_reads_available_name_sellable_and_version(void **state) {
    (void)state;
    inv_stock_change_t c;
    inv_violation_t v;
    assert_int_equal(change_from("{\"available\":0}", false, &c, &v), DETA_OK);
    assert_int_equal(c.available, 0);
    assert_false(c.relative);
    assert_false(c.has_name);
    assert_false(c.has_sellable);
    assert_false(c.has_expected_version);
    assert_int_equal(change_from("{\"available\":1000000000,\"name\":\"Blue mug\",\"x\":1,"
                                 "\"sellable\":false,\"expectedVersion\":0}",
                                 false, &c, &v),
                     DETA_OK);
    assert_int_equal(c.available, INV_MAX_UNITS);
    assert_true(c.has_name);
    assert_string_equal(c.name, "Blue mug");
    assert_true(c.has_sellable);
    assert_false(c.sellable);
    assert_true(c.has_expected_version);
    assert_int_equal(c.expected_version, 0);
}

static void stock_patch_reads_delta_and_sellable(void **state) {
    (void)state;
    inv_stock_change_t c;
    inv_violation_t v;
    assert_int_equal(change_from("{\"delta\":-5}", true, &c, &v), DETA_OK);
    assert_true(c.relative);
    assert_true(c.has_delta);
    assert_int_equal(c.delta, -5);
    assert_int_equal(change_from("{\"sellable\":true,\"expectedVersion\":7}", true, &c, &v),
                     DETA_OK);
    assert_false(c.has_delta);
    assert_true(c.sellable);
    assert_int_equal(c.expected_version, 7);
}

static void bad_stock_changes_name_the_field(void **state) {
    (void)state;
    char long_name[200];
    snprintf(long_name, sizeof long_name, "{\"available\":1,\"name\":\"%0129d\"}", 0);
    const struct {
        const char *json;
        bool relative;
        const char *field;
    } cases[] = {
        {"{}", false, "available"},
        {"{\"available\":-1}", false, "available"},
        {"{\"available\":1.5}", false, "available"},
        {"{\"available\":\"5\"}", false, "available"},
        {"{\"available\":null}", false, "available"},
        {"{\"available\":1000000001}", false, "available"},
        {"{\"available\":true}", false, "available"},
        {"[1]", false, "body"},
        {"{\"available\":1,\"name\":\"\"}", false, "name"},
        {"{\"available\":1,\"name\":5}", false, "name"},
        {long_name, false, "name"},
        {"{\"available\":1,\"sellable\":1}", false, "sellable"},
        {"{\"available\":1,\"expectedVersion\":-1}", false, "expectedVersion"},
        {"{\"available\":1,\"expectedVersion\":1.0}", false, "expectedVersion"},
        {"[1]", true, "body"},
        {"{}", true, "delta"},
        {"{\"delta\":null}", true, "delta"},
        {"{\"delta\":\"1\"}", true, "delta"},
        {"{\"delta\":-1000000001}", true, "delta"},
        {"{\"available\":3}", true, "available"},
        {"{\"delta\":1,\"expectedVersion\":0}", true, "expectedVersion"},
        {"{\"sellable\":\"false\"}", true, "sellable"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        inv_stock_change_t c;
        inv_violation_t v;
        memset(&v, 0, sizeof v);
        if (change_from(cases[i].json, cases[i].relative, &c, &v) != DETA_ERR_INVALID)
            fail_msg("accepted %s", cases[i].json);
        if (strcmp(v.field, cases[i].field) != 0)
            fail_msg("case %zu: blamed %s, expected %s", i, v.field, cases[i].field);
        assert_true(strlen(v.message) > 0);
    }
}

static inv_change_outcome_t apply(const inv_stock_row_t *cur, const char *json, bool relative,
                                  inv_stock_row_t *next, inv_violation_t *v) {
    inv_stock_change_t c;
    assert_int_equal(change_from(json, relative, &c, v), DETA_OK);
    memset(v, 0, sizeof *v);
    return inv_stock_apply(cur, &c, next, v);
}

/* Stock 10 read at version 3; an order then held 4 (version 4). */
static void a_put_must_name_the_version_it_read(void **state) {
    (void)state;
    const inv_stock_row_t now = {6, 4, true, "Blue mug"};
    inv_stock_row_t next;
    inv_violation_t v;
    assert_int_equal(apply(&now, "{\"available\":15,\"expectedVersion\":3}", false, &next, &v),
                     INV_CHANGE_STALE);
    assert_string_equal(v.field, "expectedVersion");
    assert_int_equal(apply(&now, "{\"available\":15}", false, &next, &v),
                     INV_CHANGE_VERSION_REQUIRED);
    assert_string_equal(v.field, "expectedVersion");
    assert_int_equal(apply(&now, "{\"available\":15,\"expectedVersion\":0}", false, &next, &v),
                     INV_CHANGE_STALE); /* "create" of an item that exists */
    assert_int_equal(apply(&now, "{\"available\":15,\"expectedVersion\":4}", false, &next, &v),
                     INV_CHANGE_UPDATE);
    assert_int_equal(next.available, 15);
    assert_int_equal(next.version, 5);
    assert_true(next.sellable);
    assert_string_equal(next.name, "Blue mug");
    /* an unversioned put that changes nothing (a retried create) */
    assert_int_equal(apply(&now, "{\"available\":6}", false, &next, &v), INV_CHANGE_SAME);
    assert_int_equal(apply(&now, "{\"available\":6,\"sellable\":true,\"name\":\"Blue mug\"}",
                           false, &next, &v),
                     INV_CHANGE_SAME);
    assert_int_equal(apply(&now, "{\"available\":6,\"sellable\":false}", false, &next, &v),
                     INV_CHANGE_VERSION_REQUIRED);
}

static void a_put_creates_an_item_that_does_not_exist(void **state) {
    (void)state;
    inv_stock_row_t next;
    inv_violation_t v;
    assert_int_equal(apply(NULL, "{\"available\":5}", false, &next, &v), INV_CHANGE_CREATE);
    assert_int_equal(next.available, 5);
    assert_int_equal(next.version, 1);
    assert_true(next.sellable);
    assert_string_equal(next.name, ""); /* the store names it by its id */
    assert_int_equal(apply(NULL, "{\"available\":5,\"expectedVersion\":0,\"sellable\":false}",
                           false, &next, &v),
                     INV_CHANGE_CREATE);
    assert_false(next.sellable);
    assert_int_equal(apply(NULL, "{\"available\":5,\"expectedVersion\":2}", false, &next, &v),
                     INV_CHANGE_STALE);
    assert_int_equal(apply(NULL, "{\"delta\":5}", true, &next, &v), INV_CHANGE_NOT_FOUND);
    assert_string_equal(v.field, "itemId");
}

static void a_delta_adds_to_what_is_there(void **state) {
    (void)state;
    const inv_stock_row_t now = {6, 4, true, "mug"};
    inv_stock_row_t next;
    inv_violation_t v;
    assert_int_equal(apply(&now, "{\"delta\":5}", true, &next, &v), INV_CHANGE_UPDATE);
    assert_int_equal(next.available, 11);
    assert_int_equal(next.version, 5);
    assert_int_equal(apply(&now, "{\"delta\":-6}", true, &next, &v), INV_CHANGE_UPDATE);
    assert_int_equal(next.available, 0);
    assert_int_equal(apply(&now, "{\"delta\":-7}", true, &next, &v), INV_CHANGE_OUT_OF_RANGE);
    assert_string_equal(v.field, "delta");
    assert_int_equal(apply(&now, "{\"delta\":1000000000}", true, &next, &v),
                     INV_CHANGE_OUT_OF_RANGE);
    assert_int_equal(apply(&now, "{\"delta\":1,\"expectedVersion\":3}", true, &next, &v),
                     INV_CHANGE_STALE);
    /* stop sales: only the flag changes */
    assert_int_equal(apply(&now, "{\"sellable\":false}", true, &next, &v), INV_CHANGE_UPDATE);
    assert_int_equal(next.available, 6);
    assert_false(next.sellable);
    assert_string_equal(next.name, "mug");
}

/* ---- payloads ---- */

static const char *str_of(const json_t *o, const char *key) {
    const char *s = json_string_value(json_object_get(o, key));
    if (!s)
        fail_msg("payload has no string %s", key);
    return s;
}

static json_int_t int_of(const json_t *o, const char *key) {
    const json_t *j = json_object_get(o, key);
    if (!json_is_integer(j))
        fail_msg("payload has no integer %s", key);
    return json_integer_value(j);
}

static void reserved_payload_carries_the_order_forward(void **state) {
    (void)state;
    const char *ids[] = {"a", "b"};
    const int64_t qty[] = {2, 7};
    inv_request_t r = request_of(ids, qty, 2);
    r.total = 2048;
    memcpy(r.currency, "EUR", 4);
    json_t *p = inv_reserved_payload(&r, "11111111-2222-4333-8444-555555555555",
                                     "2026-11-25T12:38:05.123Z", "2026-11-25T12:53:05.123Z");
    assert_non_null(p);
    assert_int_equal(json_object_size(p), 8);
    assert_string_equal(str_of(p, "holdExpiresAt"), "2026-11-25T12:53:05.123Z");
    assert_string_equal(str_of(p, "orderId"), ORDER);
    assert_string_equal(str_of(p, "reservationId"), "11111111-2222-4333-8444-555555555555");
    assert_string_equal(str_of(p, "customerId"), "c-1");
    assert_string_equal(str_of(p, "totalAmount"), "20.48");
    assert_string_equal(str_of(p, "currency"), "EUR");
    assert_string_equal(str_of(p, "reservedAt"), "2026-11-25T12:38:05.123Z");
    json_t *items = json_object_get(p, "items");
    assert_int_equal(json_array_size(items), 2);
    assert_string_equal(str_of(json_array_get(items, 1), "itemId"), "b");
    assert_int_equal(int_of(json_array_get(items, 1), "quantity"), 7);
    assert_int_equal(json_object_size(json_array_get(items, 1)), 2);
    json_decref(p);
}

static void rejected_payload_names_the_item_at_fault(void **state) {
    (void)state;
    const char *ids[] = {"a"};
    const int64_t qty[] = {30};
    const inv_level_t levels[] = {{"a", 25, true}};
    inv_decision_t d = decision_of(ids, qty, 1, levels, 1);
    json_t *p = inv_rejected_payload(ORDER, "c-1", &d, "2026-11-25T12:38:05.123Z");
    assert_non_null(p);
    assert_int_equal(json_object_size(p), 7);
    assert_string_equal(str_of(p, "orderId"), ORDER);
    assert_string_equal(str_of(p, "customerId"), "c-1");
    assert_string_equal(str_of(p, "reason"), "INSUFFICIENT_STOCK");
    assert_string_equal(str_of(p, "itemId"), "a");
    assert_int_equal(int_of(p, "requested"), 30);
    assert_int_equal(int_of(p, "available"), 25);
    assert_string_equal(str_of(p, "rejectedAt"), "2026-11-25T12:38:05.123Z");
    json_decref(p);
}

static void released_payload_lists_what_went_back(void **state) {
    (void)state;
    const inv_line_t lines[] = {{"a", 2}, {"b", 1}};
    json_t *p = inv_released_payload(ORDER, "11111111-2222-4333-8444-555555555555",
                                     INV_REASON_PAYMENT_FAILED, lines, 2,
                                     "2026-11-25T12:38:05.123Z");
    assert_non_null(p);
    assert_int_equal(json_object_size(p), 5);
    assert_string_equal(str_of(p, "orderId"), ORDER);
    assert_string_equal(str_of(p, "reservationId"), "11111111-2222-4333-8444-555555555555");
    assert_string_equal(str_of(p, "reason"), "PAYMENT_FAILED");
    assert_string_equal(str_of(p, "releasedAt"), "2026-11-25T12:38:05.123Z");
    json_t *items = json_object_get(p, "items");
    assert_int_equal(json_array_size(items), 2);
    assert_string_equal(str_of(json_array_get(items, 0), "itemId"), "a");
    assert_int_equal(int_of(json_array_get(items, 0), "quantity"), 2);
    json_decref(p);
    p = inv_released_payload(ORDER, "11111111-2222-4333-8444-555555555555",
                             INV_REASON_HOLD_EXPIRED, lines, 1, "2026-11-25T12:38:05.123Z");
    assert_string_equal(str_of(p, "reason"), "HOLD_EXPIRED");
    json_decref(p);

    json_t *none = inv_lines_json(NULL, 0);
    assert_true(json_is_array(none));
    assert_int_equal(json_array_size(none), 0);
    json_decref(none);
}

/* ---- the cancellation saga ---- */

static deta_err_t read_cancel(const char *json, inv_cancel_request_t *c, char *why,
                              size_t whysize) {
    json_error_t jerr;
    json_t *payload = json_loads(json, JSON_DECODE_ANY, &jerr);
    if (!payload)
        fail_msg("test JSON does not parse: %s: %s", jerr.text, json);
    deta_err_t err = inv_cancel_request_read(payload, ORDER, c, why, whysize);
    json_decref(payload);
    return err;
}

static void a_cancel_request_is_read_with_or_without_a_reason(void **state) {
    (void)state;
    inv_cancel_request_t c;
    char why[256] = "";
    assert_int_equal(read_cancel("{\"orderId\":\"" ORDER "\",\"reason\":\"changed my mind\","
                                 "\"requestedAt\":\"2026-11-25T12:38:05.123Z\"}",
                                 &c, why, sizeof why),
                     DETA_OK);
    assert_string_equal(c.order_id, ORDER);
    assert_true(c.has_reason);
    assert_string_equal(c.reason, "changed my mind");
    assert_string_equal(c.requested_at, "2026-11-25T12:38:05.123Z");
    const char *no_reason[] = {
        "{\"orderId\":\"" ORDER "\",\"reason\":null,\"requestedAt\":\"2026-11-25T12:38:05Z\"}",
        "{\"orderId\":\"" ORDER "\",\"requestedAt\":\"2026-11-25T12:38:05Z\"}",
    };
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(read_cancel(no_reason[i], &c, why, sizeof why), DETA_OK);
        assert_false(c.has_reason);
    }
    char long_reason[512];
    snprintf(long_reason, sizeof long_reason,
             "{\"orderId\":\"" ORDER "\",\"reason\":\"%0200d\",\"requestedAt\":\"2026-11-25T12:38:05Z\"}",
             0);
    assert_int_equal(read_cancel(long_reason, &c, why, sizeof why), DETA_OK);
    assert_int_equal(strlen(c.reason), 200);
}

static void malformed_cancel_requests_name_the_field(void **state) {
    (void)state;
    const struct {
        const char *json, *field;
    } cases[] = {
        {"[]", "payload"},
        {"{\"reason\":null,\"requestedAt\":\"2026-11-25T12:38:05Z\"}", "orderId"},
        {"{\"orderId\":7,\"reason\":null,\"requestedAt\":\"2026-11-25T12:38:05Z\"}", "orderId"},
        {"{\"orderId\":\"3f1c2b7e-0000-4000-8000-000000000002\",\"reason\":null,"
         "\"requestedAt\":\"2026-11-25T12:38:05Z\"}",
         "orderId"},
        {"{\"orderId\":\"" ORDER "\",\"reason\":null}", "requestedAt"},
        {"{\"orderId\":\"" ORDER "\",\"reason\":null,\"requestedAt\":\"yesterday\"}",
         "requestedAt"},
        {"{\"orderId\":\"" ORDER "\",\"reason\":\"\",\"requestedAt\":\"2026-11-25T12:38:05Z\"}",
         "reason"},
        {"{\"orderId\":\"" ORDER "\",\"reason\":5,\"requestedAt\":\"2026-11-25T12:38:05Z\"}",
         "reason"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        inv_cancel_request_t c;
        char why[256] = "";
        if (read_cancel(cases[i].json, &c, why, sizeof why) != DETA_ERR_INVALID)
            fail_msg("case %zu accepted: %s", i, cases[i].json);
        if (strncmp(why, cases[i].field, strlen(cases[i].field)) != 0)
            fail_msg("case %zu: \"%s\" does not start with %s", i, why, cases[i].field);
    }
    char too_long[512];
    snprintf(too_long, sizeof too_long,
             "{\"orderId\":\"" ORDER "\",\"reason\":\"%0201d\",\"requestedAt\":\"2026-11-25T12:38:05Z\"}",
             0);
    inv_cancel_request_t c;
    char why[256] = "";
    assert_int_equal(read_cancel(too_long, &c, why, sizeof why), DETA_ERR_INVALID);
    assert_non_null(strstr(why, "reason"));
}

static void a_verdict_must_name_the_envelopes_order(void **state) {
    (void)state;
    char why[256] = "";
    json_t *ok = json_pack("{s:s, s:s}", "orderId", ORDER, "stage", "NONE");
    assert_int_equal(inv_cancel_verdict_read(ok, ORDER, why, sizeof why), DETA_OK);
    json_decref(ok);
    json_t *other = json_pack("{s:s}", "orderId", "3f1c2b7e-0000-4000-8000-000000000002");
    assert_int_equal(inv_cancel_verdict_read(other, ORDER, why, sizeof why), DETA_ERR_INVALID);
    assert_non_null(strstr(why, "orderId"));
    json_decref(other);
    json_t *none = json_pack("{s:s}", "stage", "NONE");
    assert_int_equal(inv_cancel_verdict_read(none, ORDER, why, sizeof why), DETA_ERR_INVALID);
    assert_string_equal(why, "orderId is required");
    json_decref(none);
}

static void a_cancel_request_is_decided_by_the_reservation(void **state) {
    (void)state;
    assert_int_equal(inv_cancel_step(NULL, false), INV_CANCEL_STEP_RECORD);
    assert_int_equal(inv_cancel_step("", false), INV_CANCEL_STEP_RECORD);
    assert_int_equal(inv_cancel_step(INV_STATUS_REJECTED, false), INV_CANCEL_STEP_REFUSE);
    const char *forward[] = {INV_STATUS_HELD, INV_STATUS_SOLD, INV_STATUS_RELEASED,
                             INV_STATUS_UNFULFILLABLE};
    for (size_t i = 0; i < 4; i++) {
        if (inv_cancel_step(forward[i], false) != INV_CANCEL_STEP_FORWARD)
            fail_msg("%s does not forward", forward[i]);
        /* decided once: a re-sent request (new event id) does nothing */
        if (inv_cancel_step(forward[i], true) != INV_CANCEL_STEP_NOTHING)
            fail_msg("%s decides twice", forward[i]);
    }
    assert_int_equal(inv_cancel_step(INV_STATUS_REJECTED, true), INV_CANCEL_STEP_NOTHING);
    assert_int_equal(inv_cancel_step(INV_STATUS_CANCELLED, true), INV_CANCEL_STEP_NOTHING);
    assert_int_equal(inv_cancel_step(INV_STATUS_CANCELLED, false), INV_CANCEL_STEP_NOTHING);
}

static void a_verdict_gives_back_what_is_held_or_sold(void **state) {
    (void)state;
    assert_int_equal(inv_compensation(INV_STATUS_HELD, ""), INV_COMPENSATE_RELEASE_HELD);
    assert_int_equal(inv_compensation(INV_STATUS_SOLD, ""), INV_COMPENSATE_RELEASE_SOLD);
    /* sold by a late authorization of an expired hold: sold all the same */
    assert_int_equal(inv_compensation(INV_STATUS_SOLD, INV_REASON_HOLD_EXPIRED),
                     INV_COMPENSATE_RELEASE_SOLD);
    /* released by the sweep: nothing to give back, but no late retake either */
    assert_int_equal(inv_compensation(INV_STATUS_RELEASED, INV_REASON_HOLD_EXPIRED),
                     INV_COMPENSATE_FENCE);
    const struct {
        const char *status, *reason;
    } nothing[] = {
        {INV_STATUS_RELEASED, INV_REASON_ORDER_CANCELLED}, /* a second verdict */
        {INV_STATUS_RELEASED, INV_REASON_PAYMENT_FAILED},
        {INV_STATUS_REJECTED, INV_REASON_INSUFFICIENT_STOCK},
        {INV_STATUS_UNFULFILLABLE, INV_REASON_HOLD_EXPIRED},
        {INV_STATUS_CANCELLED, INV_REASON_ORDER_CANCELLED},
        {"", ""},
        {NULL, NULL},
    };
    for (size_t i = 0; i < sizeof nothing / sizeof *nothing; i++)
        if (inv_compensation(nothing[i].status, nothing[i].reason) != INV_COMPENSATE_NOTHING)
            fail_msg("case %zu gives something back", i);
}

/* After a cancel's release, or for a cancelled row, a payment outcome moves nothing. */
static void a_payment_outcome_after_a_cancel_changes_nothing(void **state) {
    (void)state;
    for (int authorized = 0; authorized < 2; authorized++) {
        assert_int_equal(inv_settlement_after_payment(INV_STATUS_RELEASED,
                                                      INV_REASON_ORDER_CANCELLED, authorized),
                         INV_SETTLE_NOTHING);
        assert_int_equal(inv_settlement_after_payment(INV_STATUS_CANCELLED,
                                                      INV_REASON_ORDER_CANCELLED, authorized),
                         INV_SETTLE_NOTHING);
    }
}

static void cancel_payloads_copy_the_request_forward(void **state) {
    (void)state;
    inv_cancel_request_t c = {.order_id = ORDER, .has_reason = true, .reason = "too slow",
                              .requested_at = "2026-11-25T12:38:05.123Z"};
    const char *at = "2026-11-25T12:38:06.000Z";
    json_t *p = inv_cancel_forwarded_payload(&c, "11111111-2222-4333-8444-555555555555", at);
    assert_int_equal(json_object_size(p), 5);
    assert_string_equal(str_of(p, "orderId"), ORDER);
    assert_string_equal(str_of(p, "reservationId"), "11111111-2222-4333-8444-555555555555");
    assert_string_equal(str_of(p, "reason"), "too slow");
    assert_string_equal(str_of(p, "requestedAt"), "2026-11-25T12:38:05.123Z");
    assert_string_equal(str_of(p, "forwardedAt"), at);
    json_decref(p);

    c.has_reason = false;
    p = inv_cancel_refused_payload(&c, at);
    assert_int_equal(json_object_size(p), 5);
    assert_string_equal(str_of(p, "orderStatus"), "INVENTORY_REJECTED");
    assert_true(json_is_null(json_object_get(p, "reason")));
    assert_string_equal(str_of(p, "requestedAt"), "2026-11-25T12:38:05.123Z");
    assert_string_equal(str_of(p, "refusedAt"), at);
    json_decref(p);

    p = inv_cancelled_payload(&c, at);
    assert_int_equal(json_object_size(p), 5);
    assert_string_equal(str_of(p, "orderId"), ORDER);
    assert_string_equal(str_of(p, "stage"), "NONE");
    assert_true(json_is_null(json_object_get(p, "reason")));
    assert_string_equal(str_of(p, "cancelledAt"), at);
    json_decref(p);

    const inv_line_t lines[] = {{"a", 2}};
    p = inv_released_payload(ORDER, "11111111-2222-4333-8444-555555555555",
                             INV_REASON_ORDER_CANCELLED, lines, 1, at);
    assert_string_equal(str_of(p, "reason"), "ORDER_CANCELLED");
    json_decref(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(order_created_is_read_with_duplicates_added),
        cmocka_unit_test(order_created_accepts_limits_and_numeric_amounts),
        cmocka_unit_test(malformed_order_created_is_refused_naming_the_field),
        cmocka_unit_test(malformed_items_are_refused_naming_the_line),
        cmocka_unit_test(enough_stock_everywhere_reserves),
        cmocka_unit_test(one_short_line_rejects_the_whole_order),
        cmocka_unit_test(an_unknown_item_rejects_with_zero_available),
        cmocka_unit_test(zero_available_is_short_not_unknown),
        cmocka_unit_test(stopped_sales_reject_whatever_is_available),
        cmocka_unit_test(payment_outcomes_settle_held_and_retake_expired),
        cmocka_unit_test(item_ids_are_url_safe),
        cmocka_unit_test(default_catalog_has_the_demo_items),
        cmocka_unit_test(catalog_allows_blanks_zero_and_the_maximum),
        cmocka_unit_test(bad_catalogs_name_the_variable_and_entry),
        cmocka_unit_test(stock_put_reads_available_name_sellable_and_version),
        cmocka_unit_test(stock_patch_reads_delta_and_sellable),
        cmocka_unit_test(bad_stock_changes_name_the_field),
        cmocka_unit_test(a_put_must_name_the_version_it_read),
        cmocka_unit_test(a_put_creates_an_item_that_does_not_exist),
        cmocka_unit_test(a_delta_adds_to_what_is_there),
        cmocka_unit_test(reserved_payload_carries_the_order_forward),
        cmocka_unit_test(rejected_payload_names_the_item_at_fault),
        cmocka_unit_test(released_payload_lists_what_went_back),
        cmocka_unit_test(a_cancel_request_is_read_with_or_without_a_reason),
        cmocka_unit_test(malformed_cancel_requests_name_the_field),
        cmocka_unit_test(a_verdict_must_name_the_envelopes_order),
        cmocka_unit_test(a_cancel_request_is_decided_by_the_reservation),
        cmocka_unit_test(a_verdict_gives_back_what_is_held_or_sold),
        cmocka_unit_test(a_payment_outcome_after_a_cancel_changes_nothing),
        cmocka_unit_test(cancel_payloads_copy_the_request_forward),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
