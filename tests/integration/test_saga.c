/*
 * test_saga.c - every path of the state machine end to end, through the real
 * services of the test stack: an order posted to order-service is followed in the
 * query-api's read model until its end state, and each service's own database is
 * checked for what it should hold.
 *
 *   happy:    CREATED → INVENTORY_RESERVED → PAYMENT_AUTHORIZED → DELIVERY_ASSIGNED
 *             → PICKED_UP → DELIVERED (the test stack's delivery clock is sped up)
 *   rejected: an item with too little stock → INVENTORY_REJECTED, nothing charged
 *   declined: a customer the gateway declines → PAYMENT_FAILED, stock released
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deta/states.h"
#include "testsupport.h"

/* Posts an order for qty units of item at 2.50 each; returns its id (malloc'd). */
static char *place_order(const char *customer, const char *item, int qty) {
    char id[37];
    long status = ts_order_place(customer, item, qty, id);
    if (status != 201 || !id[0])
        fail_msg("POST /api/orders: %ld, order id \"%s\"", status, id);
    return strdup(id);
}

static long stock_field(const char *item, const char *field) {
    char path[128];
    snprintf(path, sizeof path, "/api/inventory/%s", item);
    ts_http_resp_t r;
    ts_http("GET", "INVENTORY_SERVICE_URL", path, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    json_t *v = json_object_get(r.json, field);
    if (!json_is_integer(v))
        fail_msg("inventory %s has no integer %s: %s", item, field, r.body);
    long n = (long)json_integer_value(v);
    ts_http_resp_free(&r);
    return n;
}

/* Polls the read model until the order's status is want (or 90 s pass). */
static void await_status(const char *order_id, const char *want) {
    char ids[1][37];
    snprintf(ids[0], sizeof ids[0], "%s", order_id);
    if (!ts_orders_await(ids, 1, want, 90000))
        fail_msg("order %s did not reach %s (its last status is above)", order_id, want);
}

/* How many timeline events of this type the query-api shows for the order. */
static int timeline_count(const char *order_id, const char *type) {
    char path[128];
    snprintf(path, sizeof path, "/api/orders/%s/events", order_id);
    ts_http_resp_t r;
    ts_http("GET", "QUERY_API_URL", path, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    json_t *list = json_is_array(r.json) ? r.json : json_object_get(r.json, "events");
    if (!json_is_array(list))
        fail_msg("timeline is not a list: %s", r.body);
    int n = 0;
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e) {
        const char *t = json_string_value(json_object_get(e, "eventType"));
        if (t && strcmp(t, type) == 0)
            n++;
    }
    ts_http_resp_free(&r);
    return n;
}

/* Each service settles on its own schedule (inventory learns of the payment from
 * another topic than the read model does): poll a service's database, 60 s at most. */
static void await_ts_db_long(const char *db, const char *sql, const char *order_id, long want) {
    long n = -1;
    for (int i = 0; i < 300 && (n = ts_db_long(db, sql, order_id)) != want; i++)
        ts_sleep_ms(200);
    if (n != want)
        fail_msg("%s: %s for %s gave %ld, expected %ld", db, sql, order_id, n, want);
}

static void await_stock(const char *item, const char *field, long want) {
    long n = -1;
    for (int i = 0; i < 300 && (n = stock_field(item, field)) != want; i++)
        ts_sleep_ms(200);
    if (n != want)
        fail_msg("stock of %s: %s is %ld, expected %ld", item, field, n, want);
}

static void happy_path_reaches_delivered(void **state) {
    (void)state;
    char item[64], uuid[37];
    ts_uuid(uuid);
    snprintf(item, sizeof item, "saga-%.8s", uuid);
    ts_stock_set(item, 10);
    char *id = place_order("saga-customer", item, 3);
    await_status(id, DETA_STATE_DELIVERED);

    const char *chain[] = {"order.created",      "inventory.reserved", "payment.authorized",
                           "delivery.assigned",  "delivery.picked_up", "delivery.delivered"};
    for (size_t i = 0; i < sizeof chain / sizeof *chain; i++)
        if (timeline_count(id, chain[i]) != 1)
            fail_msg("order %s: expected one %s in the timeline", id, chain[i]);
    assert_int_equal(timeline_count(id, "eta.updated"), 3);

    await_ts_db_long("inventory_db", "SELECT count(*) FROM reservations WHERE order_id = "
                                              "$1 AND status = 'SOLD'", id, 1);
    await_ts_db_long("delivery_eta", "SELECT count(*) FROM payments WHERE order_id = $1 "
                                              "AND status = 'AUTHORIZED'", id, 1);
    await_ts_db_long("delivery_db", "SELECT count(*) FROM deliveries WHERE order_id = $1 "
                                             "AND status = 'DELIVERED'", id, 1);
    await_stock(item, "available", 7);
    await_stock(item, "held", 0);
    await_stock(item, "sold", 3);
    free(id);
}

static void short_stock_is_rejected_and_never_charged(void **state) {
    (void)state;
    char item[64], uuid[37];
    ts_uuid(uuid);
    snprintf(item, sizeof item, "saga-short-%.8s", uuid);
    ts_stock_set(item, 1);
    char *id = place_order("saga-customer", item, 2);
    await_status(id, DETA_STATE_INVENTORY_REJECTED);
    assert_int_equal(timeline_count(id, "inventory.rejected"), 1);
    assert_int_equal(timeline_count(id, "inventory.reserved"), 0);
    await_ts_db_long("delivery_eta", "SELECT count(*) FROM payments WHERE order_id = $1", id, 0);
    await_ts_db_long("delivery_db", "SELECT count(*) FROM deliveries WHERE order_id = $1", id, 0);
    await_stock(item, "available", 1);
    await_stock(item, "held", 0);
    free(id);
}

static void declined_payment_releases_the_stock(void **state) {
    (void)state;
    char item[64], customer[64], uuid[37];
    ts_uuid(uuid);
    snprintf(item, sizeof item, "saga-decl-%.8s", uuid);
    snprintf(customer, sizeof customer, "decline-%.8s", uuid);
    ts_stock_set(item, 5);
    char *id = place_order(customer, item, 4);
    await_status(id, DETA_STATE_PAYMENT_FAILED);
    /* The release follows the decline on another topic: wait for it. */
    for (int i = 0; i < 300 && timeline_count(id, "inventory.released") == 0; i++)
        ts_sleep_ms(200);
    assert_int_equal(timeline_count(id, "inventory.released"), 1);
    await_ts_db_long("delivery_eta", "SELECT count(*) FROM payments WHERE order_id = $1 "
                                              "AND status = 'DECLINED'", id, 1);
    await_ts_db_long("inventory_db", "SELECT count(*) FROM reservations WHERE order_id = "
                                              "$1 AND status = 'RELEASED'", id, 1);
    await_ts_db_long("delivery_db", "SELECT count(*) FROM deliveries WHERE order_id = $1", id, 0);
    await_stock(item, "available", 5);
    await_stock(item, "held", 0);
    await_stock(item, "sold", 0);
    free(id);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(happy_path_reaches_delivered),
        cmocka_unit_test(short_stock_is_rejected_and_never_charged),
        cmocka_unit_test(declined_payment_releases_the_stock),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
