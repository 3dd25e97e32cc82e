/*
 * test_order_service.c - order-service against the real test stack: an order
 * posted over HTTP comes out on raw.order-events with a full envelope and the
 * right key; every kind of bad request is refused and writes nothing; the outbox
 * holds an order through a broker outage and publishes it once the broker is back.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deta/envelope.h"
#include "deta/states.h"
#include "deta/topics.h"
#include "testsupport.h"

static const char VALID[] =
    "{\"customerId\":\"cust-42\",\"currency\":\"EUR\",\"items\":["
    "{\"itemId\":\"sku-1\",\"quantity\":2,\"unitPrice\":\"9.99\"},"
    "{\"itemId\":\"sku-2\",\"quantity\":1,\"unitPrice\":0.5}]}";

static char *post_valid_order(void) {
    ts_http_resp_t r;
    ts_http("POST", "ORDER_SERVICE_URL", "/api/orders", "application/json", VALID, &r);
    if (r.status != 201)
        fail_msg("POST /api/orders: %ld %s", r.status, r.body);
    assert_non_null(r.json);
    char *id = strdup(json_string_value(json_object_get(r.json, "orderId")));
    ts_http_resp_free(&r);
    return id;
}

/* Waits (10 s at most) until the relay has confirmed its stream past the
 * order's outbox row (lib/src/outbox_relay.c): the row is out, and there is one. */
static void await_marked_published(PGconn *db, const char *order_id) {
    const char *params[] = {order_id};
    assert_int_equal(ts_pg_long(db, "SELECT count(*) FROM outbox WHERE msg_key = $1", 1, params),
                     1);
    assert_true(ts_outbox_relayed(db, 10000));
}

static void order_reaches_the_topic_with_its_envelope(void **state) {
    (void)state;
    ts_http_resp_t r;
    ts_http("POST", "ORDER_SERVICE_URL", "/api/orders", "application/json; charset=utf-8", VALID,
            &r);
    assert_int_equal(r.status, 201);
    assert_non_null(r.json);
    const char *id = json_string_value(json_object_get(r.json, "orderId"));
    assert_true(deta_uuid_valid(id));
    assert_string_equal(json_string_value(json_object_get(r.json, "customerId")), "cust-42");
    assert_string_equal(json_string_value(json_object_get(r.json, "totalAmount")), "20.48");
    assert_string_equal(json_string_value(json_object_get(r.json, "currency")), "EUR");
    assert_string_equal(json_string_value(json_object_get(r.json, "status")), DETA_STATE_CREATED);
    assert_true(deta_timestamp_valid(json_string_value(json_object_get(r.json, "createdAt"))));
    char order_id[64];
    snprintf(order_id, sizeof order_id, "%s", id);
    ts_http_resp_free(&r);

    ts_kafka_msg_t m;
    assert_true(ts_kafka_find(DETA_TOPIC_ORDER_EVENTS, order_id, 30000, &m));
    assert_string_equal(m.key, order_id);
    deta_event_t ev;
    char err[256];
    if (deta_event_parse(m.value, strlen(m.value), &ev, err, sizeof err) != DETA_OK)
        fail_msg("envelope does not validate: %s: %s", err, m.value);
    assert_true(deta_uuid_valid(ev.event_id));
    assert_string_equal(ev.event_type, DETA_EVT_ORDER_CREATED);
    assert_int_equal(ev.schema_version, 1);
    assert_true(deta_timestamp_valid(ev.occurred_at));
    assert_true(deta_timestamp_valid(ev.produced_at));
    assert_string_equal(ev.order_id, order_id);
    assert_true(deta_uuid_valid(ev.correlation_id));
    assert_string_equal(ev.producer, "order-service");
    json_t *p = ev.payload;
    assert_string_equal(json_string_value(json_object_get(p, "customerId")), "cust-42");
    assert_string_equal(json_string_value(json_object_get(p, "totalAmount")), "20.48");
    assert_string_equal(json_string_value(json_object_get(p, "currency")), "EUR");
    json_t *items = json_object_get(p, "items");
    assert_int_equal(json_array_size(items), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(items, 1), "unitPrice")),
                        "0.50");
    deta_event_clear(&ev);
    ts_kafka_msg_free(&m);

    /* Published exactly once, and the outbox row says so. */
    assert_int_equal(ts_kafka_count(DETA_TOPIC_ORDER_EVENTS, order_id, 30000), 1);
    PGconn *db = ts_pg("order_db");
    await_marked_published(db, order_id);
    PQfinish(db);
}

static void order_reads_back(void **state) {
    (void)state;
    char *id = post_valid_order();
    char path[128];
    snprintf(path, sizeof path, "/api/orders/%s", id);
    ts_http_resp_t r;
    ts_http("GET", "ORDER_SERVICE_URL", path, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "orderId")), id);
    assert_string_equal(json_string_value(json_object_get(r.json, "totalAmount")), "20.48");
    /* order-service follows the order's saga: the status may have moved on from
     * CREATED already (test_order_cancel checks how); no cancel was asked */
    assert_true(deta_state_rank(json_string_value(json_object_get(r.json, "status"))) > 0);
    assert_true(json_is_null(json_object_get(r.json, "cancellation")));
    json_t *items = json_object_get(r.json, "items");
    assert_int_equal(json_array_size(items), 2);
    json_t *first = json_array_get(items, 0);
    assert_string_equal(json_string_value(json_object_get(first, "itemId")), "sku-1");
    assert_int_equal(json_integer_value(json_object_get(first, "quantity")), 2);
    assert_string_equal(json_string_value(json_object_get(first, "unitPrice")), "9.99");
    ts_http_resp_free(&r);
    free(id);

    ts_http("GET", "ORDER_SERVICE_URL", "/api/orders/00000000-0000-4000-8000-000000000000", NULL,
            NULL, &r);
    assert_int_equal(r.status, 404);
    assert_non_null(r.json);
    assert_string_equal(json_string_value(json_object_get(r.json, "field")), "orderId");
    ts_http_resp_free(&r);

    ts_http("GET", "ORDER_SERVICE_URL", "/api/orders/not-a-uuid", NULL, NULL, &r);
    assert_int_equal(r.status, 400);
    assert_string_equal(json_string_value(json_object_get(r.json, "field")), "orderId");
    ts_http_resp_free(&r);
}

typedef struct bad_case {
    const char *content_type;
    const char *body;
    long status;
    const char *field; /* NULL: no field expected */
} bad_case_t;

static long count_rows(PGconn *db) {
    return ts_pg_long(db, "SELECT (SELECT count(*) FROM orders) + (SELECT count(*) FROM "
                          "order_items) + (SELECT count(*) FROM outbox)",
                      0, NULL);
}

static void bad_requests_are_refused_and_write_nothing(void **state) {
    (void)state;
    const char *J = "application/json";
    char *big = malloc(200000);
    assert_non_null(big);
    int n = snprintf(big, 200000, "{\"customerId\":\"");
    memset(big + n, 'x', 150000);
    snprintf(big + n + 150000, 200000 - (size_t)n - 150000, "\",\"items\":[]}");
    const bad_case_t cases[] = {
        {J, "{\"items\":[{\"itemId\":\"a\",\"quantity\":1,\"unitPrice\":1}]}", 400,
         "customerId"},
        {J, "{\"customerId\":\"\",\"items\":[{\"itemId\":\"a\",\"quantity\":1,\"unitPrice\":1}]}",
         400, "customerId"},
        {J, "{\"customerId\":\"c\"}", 400, "items"},
        {J, "{\"customerId\":\"c\",\"items\":[]}", 400, "items"},
        {J, "{\"customerId\":\"c\",\"items\":[{\"itemId\":\"a\",\"quantity\":0,\"unitPrice\":1}]}",
         400, "items[0].quantity"},
        {J, "{\"customerId\":\"c\",\"items\":[{\"itemId\":\"a\",\"quantity\":2.5,\"unitPrice\":1}]}",
         400, "items[0].quantity"},
        {J, "{\"customerId\":\"c\",\"items\":[{\"itemId\":\"a\",\"quantity\":1,"
            "\"unitPrice\":\"-0.01\"}]}",
         400, "items[0].unitPrice"},
        {J, "{\"customerId\":\"c\",\"items\":[{\"itemId\":\"a\",\"quantity\":1,"
            "\"unitPrice\":\"1.005\"}]}",
         400, "items[0].unitPrice"},
        {J, "{\"customerId\":\"c\",\"currency\":\"eur\",\"items\":[{\"itemId\":\"a\","
            "\"quantity\":1,\"unitPrice\":1}]}",
         400, "currency"},
        {J, "{\"customerId\":\"c\",\"items\":[{\"itemId\":\"a\",", 400, "body"},
        {J, "", 400, "body"},
        {"text/plain", VALID, 415, NULL},
        {NULL, VALID, 415, NULL},
        {J, big, 413, NULL},
    };
    PGconn *db = ts_pg("order_db");
    long before = count_rows(db);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        ts_http_resp_t r;
        ts_http("POST", "ORDER_SERVICE_URL", "/api/orders", cases[i].content_type, cases[i].body,
                &r);
        if (r.status != cases[i].status)
            fail_msg("case %zu: expected %ld, got %ld: %s", i, cases[i].status, r.status, r.body);
        if (!r.json)
            fail_msg("case %zu: error body is not JSON: %s", i, r.body);
        assert_int_equal(json_integer_value(json_object_get(r.json, "status")), r.status);
        assert_non_null(json_string_value(json_object_get(r.json, "message")));
        if (cases[i].field) {
            const char *field = json_string_value(json_object_get(r.json, "field"));
            if (!field || strcmp(field, cases[i].field) != 0)
                fail_msg("case %zu: expected field %s: %s", i, cases[i].field, r.body);
        }
        ts_http_resp_free(&r);
    }
    assert_int_equal(count_rows(db), before);
    PQfinish(db);
    free(big);
}

static void health_and_metrics_are_served(void **state) {
    (void)state;
    ts_http_resp_t r;
    const char *paths[] = {"/actuator/health", "/health", "/actuator/health/readiness"};
    for (size_t i = 0; i < 3; i++) {
        ts_http("GET", "ORDER_SERVICE_URL", paths[i], NULL, NULL, &r);
        assert_int_equal(r.status, 200);
        assert_string_equal(json_string_value(json_object_get(r.json, "status")), "UP");
        json_t *c = json_object_get(r.json, "components");
        assert_string_equal(json_string_value(json_object_get(json_object_get(c, "db"), "status")),
                            "UP");
        assert_string_equal(
            json_string_value(json_object_get(json_object_get(c, "kafka"), "status")), "UP");
        ts_http_resp_free(&r);
    }
    free(post_valid_order());
    ts_http("POST", "ORDER_SERVICE_URL", "/api/orders", "application/json", "{\"customerId\":\"c\"}",
            &r);
    ts_http_resp_free(&r);
    const char *mpaths[] = {"/actuator/prometheus", "/metrics"};
    for (size_t i = 0; i < 2; i++) {
        ts_http("GET", "ORDER_SERVICE_URL", mpaths[i], NULL, NULL, &r);
        assert_int_equal(r.status, 200);
        assert_non_null(strstr(r.body, "# TYPE orders_created_total counter"));
        assert_non_null(strstr(r.body, "orders_rejected_total{reason=\"missing_field\"}"));
        assert_non_null(strstr(r.body, "# TYPE http_request_duration_seconds histogram"));
        assert_non_null(strstr(r.body, "route=\"/api/orders\""));
        /* Refusals made by the HTTP layer itself, from the bad-request test. */
        assert_non_null(strstr(r.body, "http_requests_rejected_total{route=\"/api/orders\","
                                       "reason=\"unsupported_media_type\"}"));
        assert_non_null(strstr(r.body, "http_requests_rejected_total{route=\"/api/orders\","
                                       "reason=\"body_too_large\"}"));
        assert_non_null(strstr(r.body, "http_requests_rejected_total{route=\"/api/orders\","
                                       "reason=\"malformed_json\"}"));
        ts_http_resp_free(&r);
    }
}

static void outbox_holds_orders_through_a_broker_outage(void **state) {
    (void)state;
    ts_broker("down all");
    char *id = post_valid_order(); /* accepted: Postgres is up, Kafka is not needed */

    /* While the broker is down, the row waits and health says Kafka is DOWN. */
    ts_sleep_ms(2000);
    PGconn *db = ts_pg("order_db");
    const char *params[] = {id};
    assert_int_equal(ts_pg_long(db, "SELECT count(*) FROM outbox WHERE msg_key = $1", 1, params),
                     1);
    assert_false(ts_outbox_relayed(db, 1500)); /* the relay's stream stays before it */
    ts_http_resp_t r;
    ts_http("GET", "ORDER_SERVICE_URL", "/actuator/health", NULL, NULL, &r);
    assert_int_equal(r.status, 503);
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_object_get(r.json, "components"), "kafka"),
                            "status")),
                        "DOWN");
    ts_http_resp_free(&r);

    ts_broker("up all");
    ts_kafka_msg_t m;
    assert_true(ts_kafka_find(DETA_TOPIC_ORDER_EVENTS, id, 60000, &m));
    ts_kafka_msg_free(&m);
    assert_int_equal(ts_kafka_count(DETA_TOPIC_ORDER_EVENTS, id, 30000), 1);
    await_marked_published(db, id);
    PQfinish(db);
    free(id);
}

static int broker_back_up(void **state) {
    (void)state;
    ts_broker("up all");
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(order_reaches_the_topic_with_its_envelope),
        cmocka_unit_test(order_reads_back),
        cmocka_unit_test(bad_requests_are_refused_and_write_nothing),
        cmocka_unit_test(health_and_metrics_are_served),
        cmocka_unit_test_teardown(outbox_holds_orders_through_a_broker_outage, broker_back_up),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
