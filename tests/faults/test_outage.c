/*
 * test_outage.c - the services through outages of what they depend on, on the
 * shared test stack (scripts/stack.sh stops and starts its parts).
 *
 *   postgres  stopped for 20 s (three times the retry budget's backoff): every
 *             service stays alive, liveness 200, health and readiness 503 with
 *             components.db DOWN, POST /api/orders 503 with a JSON error; orders
 *             placed just before (inventory-service held back with SIGSTOP for
 *             the second it takes, so that their order.created messages are in
 *             its hands when Postgres goes) wait instead of being dead-lettered
 *             (deta_consumer_waiting_on_dependencies > 0 meanwhile) and, once
 *             Postgres is back, reach DELIVERED with exactly one reservation,
 *             payment and delivery each and no dead letter on any dlq.* topic;
 *   redis     stopped: payment-service DEGRADED with components.redis DOWN,
 *             orders still complete, charged once; started again: UP;
 *   broker    failing produce requests, then every broker down: kafka DOWN in
 *             every service's health, orders accepted meanwhile (their rows wait
 *             in order-service's outbox, whose relay fails and backs off), and
 *             after the brokers come back every order is published once and
 *             completes once, its delivery events in order;
 *   kill -9   of order-service while the broker is down and its outbox rows are
 *             pending: after the broker and the service are back, the rows are
 *             published (once) and the orders complete.
 *
 * Every test's teardown brings the stack back whole and healthy (ts_stack_heal),
 * pass or fail: Postgres, Redis, the brokers and every service.
 */
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

#include "deta/states.h"
#include "deta/topics.h"
#include "testsupport.h"

#define N_ORDERS 8
#define END_WAIT_MS 180000
#define HEAL_MS 120000

static const char *const dlq_topics[] = {"dlq.order-events", "dlq.inventory-events",
                                         "dlq.payment-events", "dlq.delivery-events"};

static long held_pid; /* a service this test SIGSTOPped: its teardown continues it */

static long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static int heal(void **state) {
    (void)state;
    if (held_pid > 0)
        kill((pid_t)held_pid, SIGCONT);
    held_pid = 0;
    return ts_stack_heal(HEAL_MS) ? 0 : -1;
}

/* A fresh item with plenty of stock, so that every order is reserved. */
static void fresh_item(const char *tag, char *item, size_t size) {
    char uuid[37];
    ts_uuid(uuid);
    snprintf(item, size, "%s-%.8s", tag, uuid);
    ts_stock_set(item, 1000);
}

static void place_orders(const char *item, char (*ids)[37], size_t n) {
    for (size_t i = 0; i < n; i++) {
        long status = ts_order_place("outage-customer", item, 1, ids[i]);
        if (status != 201)
            fail_msg("POST /api/orders: %ld", status);
    }
}

/* The orders ended DELIVERED with one reservation, payment and delivery each. */
static void assert_completed_once(char (*ids)[37], size_t n) {
    assert_true(ts_orders_await(ids, n, DETA_STATE_DELIVERED, END_WAIT_MS));
    assert_int_equal(ts_orders_rows_not("inventory_db", "reservations", ids, n, 1), 0);
    assert_int_equal(ts_orders_rows_not("delivery_eta", "payments", ids, n, 1), 0);
    assert_int_equal(ts_orders_rows_not("delivery_db", "deliveries", ids, n, 1), 0);
}

static void assert_no_dead_letters(char (*ids)[37], size_t n) {
    for (size_t t = 0; t < sizeof dlq_topics / sizeof *dlq_topics; t++) {
        int found = ts_kafka_count_keys(dlq_topics[t], ids, n, 30000);
        if (found != 0)
            fail_msg("%d dead letters of this test's orders on %s", found, dlq_topics[t]);
    }
}

/* Each order's order.created is on raw.order-events exactly once. */
static void assert_published_once(char (*ids)[37], size_t n) {
    int counts[N_ORDERS];
    assert_true(n <= N_ORDERS);
    ts_kafka_counts_by_key("raw.order-events", ids, n, counts, 30000);
    for (size_t i = 0; i < n; i++)
        if (counts[i] != 1)
            fail_msg("order %s is on raw.order-events %d times", ids[i], counts[i]);
}

/* GET path of the service; the status must be want and, when component is not
 * NULL, components.<component>.status must be comp_status. */
static void expect_health(const char *url_var, const char *path, long want,
                          const char *component, const char *comp_status) {
    ts_http_resp_t r;
    if (!ts_http_try("GET", url_var, path, NULL, NULL, 10000, &r))
        fail_msg("%s%s: no answer", url_var, path);
    if (r.status != want)
        fail_msg("%s%s: %ld, expected %ld: %s", url_var, path, r.status, want, r.body);
    if (component) {
        json_t *c = json_object_get(json_object_get(r.json, "components"), component);
        const char *s = json_string_value(json_object_get(c, "status"));
        if (!s || strcmp(s, comp_status) != 0)
            fail_msg("%s%s: components.%s is not %s: %s", url_var, path, component, comp_status,
                     r.body);
    }
    ts_http_resp_free(&r);
}

/* Polls the service's health until components.<component> is comp_status and the
 * overall status is status. */
static void await_health(const char *url_var, const char *status, const char *component,
                         const char *comp_status, int timeout_ms) {
    long deadline = now_ms() + timeout_ms;
    char last[512] = "";
    while (now_ms() < deadline) {
        ts_http_resp_t r;
        if (ts_http_try("GET", url_var, "/actuator/health", NULL, NULL, 5000, &r)) {
            const char *s = json_string_value(json_object_get(r.json, "status"));
            json_t *c = json_object_get(json_object_get(r.json, "components"), component);
            const char *cs = json_string_value(json_object_get(c, "status"));
            snprintf(last, sizeof last, "%s", r.body);
            bool ok = s && cs && strcmp(s, status) == 0 && strcmp(cs, comp_status) == 0;
            ts_http_resp_free(&r);
            if (ok)
                return;
        }
        ts_sleep_ms(200);
    }
    fail_msg("%s health never became %s with %s %s; last: %s", url_var, status, component,
             comp_status, last);
}

static void assert_alive(const char *part) {
    long pid = ts_stack_pid(part);
    if (pid <= 0 || kill((pid_t)pid, 0) != 0)
        fail_msg("%s (pid %ld) is not running", part, pid);
}

/* ---- Postgres ---- */

/* What every service must say while Postgres is down. */
static void check_services_during_db_outage(void) {
    for (size_t i = 0; i < 5; i++) {
        assert_alive(ts_services[i]);
        expect_health(ts_service_urls[i], "/actuator/health/liveness", 200, NULL, NULL);
        expect_health(ts_service_urls[i], "/actuator/health", 503, "db", "DOWN");
        expect_health(ts_service_urls[i], "/actuator/health/readiness", 503, "db", "DOWN");
    }
    ts_http_resp_t r;
    const char *body = "{\"customerId\":\"outage-customer\",\"currency\":\"USD\",\"items\":"
                       "[{\"itemId\":\"x\",\"quantity\":1,\"unitPrice\":\"2.50\"}]}";
    assert_true(ts_http_try("POST", "ORDER_SERVICE_URL", "/api/orders", "application/json", body,
                            10000, &r));
    if (r.status != 503 || !json_is_object(r.json) ||
        json_integer_value(json_object_get(r.json, "status")) != 503 ||
        !json_is_string(json_object_get(r.json, "error")))
        fail_msg("POST /api/orders during the outage: %ld %s", r.status, r.body);
    ts_http_resp_free(&r);
}

static void postgres_outage_waits_and_resumes(void **state) {
    (void)state;
    char item[64];
    char ids[N_ORDERS][37];
    fresh_item("outage-pg", item, sizeof item);
    held_pid = ts_stack_pid("inventory-service");
    assert_true(held_pid > 0);
    assert_int_equal(kill((pid_t)held_pid, SIGSTOP), 0);
    place_orders(item, ids, N_ORDERS);
    ts_sleep_ms(300); /* order-service's relay publishes them */
    long outage_began = now_ms();
    assert_int_equal(ts_stack("stop postgres"), 0);
    assert_int_equal(kill((pid_t)held_pid, SIGCONT), 0);
    held_pid = 0;

    check_services_during_db_outage();
    char waiting[160];
    snprintf(waiting, sizeof waiting,
             "deta_consumer_waiting_on_dependencies{group=\"inventory-service\"}");
    double most_waiting = 0;
    while (now_ms() - outage_began < 20000) { /* 3x the 6.2 s of a retry budget's backoff */
        double w = ts_metric("INVENTORY_SERVICE_URL", waiting);
        if (w > most_waiting)
            most_waiting = w;
        ts_sleep_ms(500);
    }
    if (most_waiting < 1)
        fail_msg("inventory-service never had a message waiting for Postgres");
    for (size_t i = 0; i < 5; i++)
        assert_alive(ts_services[i]);
    assert_int_equal(ts_stack("start postgres"), 0);

    assert_completed_once(ids, N_ORDERS);
    assert_no_dead_letters(ids, N_ORDERS);
    assert_true(ts_metric("INVENTORY_SERVICE_URL", waiting) == 0);
    for (size_t i = 0; i < 5; i++)
        await_health(ts_service_urls[i], "UP", "db", "UP", 30000);
}

/* ---- Redis ---- */

static void redis_outage_degrades_payment(void **state) {
    (void)state;
    char item[64];
    char ids[N_ORDERS][37];
    fresh_item("outage-redis", item, sizeof item);
    assert_int_equal(ts_stack("stop redis"), 0);
    await_health("PAYMENT_SERVICE_URL", "DEGRADED", "redis", "DOWN", 30000);
    expect_health("PAYMENT_SERVICE_URL", "/actuator/health", 200, "db", "UP");
    expect_health("PAYMENT_SERVICE_URL", "/actuator/health/readiness", 200, "redis", "DOWN");
    place_orders(item, ids, N_ORDERS);
    assert_completed_once(ids, N_ORDERS);
    assert_int_equal(ts_stack("start redis"), 0);
    await_health("PAYMENT_SERVICE_URL", "UP", "redis", "UP", 30000);
    assert_no_dead_letters(ids, N_ORDERS);
}

/* ---- the broker ---- */

/* How many of the orders' outbox rows in order_db are still unpublished. */
/* How many of the orders' outbox rows in order_db are not out: none once the
 * relay's stream is past everything committed (lib/src/outbox_relay.c), else
 * the rows whose order has no message on the topic yet. */
static long outbox_unpublished(char (*ids)[37], size_t n) {
    PGconn *c = ts_pg("order_db");
    bool relayed = ts_outbox_relayed(c, 2000);
    long total = 0;
    for (size_t i = 0; !relayed && i < n; i++) {
        const char *params[] = {ids[i]};
        if (ts_kafka_count(DETA_TOPIC_ORDER_EVENTS, ids[i], 200) == 0)
            total += ts_pg_long(c, "SELECT count(*) FROM outbox WHERE msg_key = $1", 1, params);
    }
    PQfinish(c);
    return total;
}

typedef struct delivery_order {
    char (*ids)[37];
    size_t n;
    char seen[N_ORDERS][64]; /* the delivery event types of each order, in order: a b c */
} delivery_order_t;

static void visit_delivery(const ts_kafka_msg_t *m, void *opaque) {
    delivery_order_t *d = opaque;
    json_t *ev = json_loads(m->value, 0, NULL);
    const char *type = json_string_value(json_object_get(ev, "eventType"));
    char letter = !type                                     ? 0
                  : strcmp(type, "delivery.assigned") == 0  ? 'a'
                  : strcmp(type, "delivery.picked_up") == 0 ? 'p'
                  : strcmp(type, "delivery.delivered") == 0 ? 'd'
                                                            : 0;
    for (size_t i = 0; letter && m->key && i < d->n; i++) {
        size_t len = strlen(d->seen[i]);
        if (strcmp(m->key, d->ids[i]) == 0 && len + 1 < sizeof d->seen[i]) {
            d->seen[i][len] = letter;
            d->seen[i][len + 1] = '\0';
        }
    }
    json_decref(ev);
}

/* Each order's delivery milestones are on raw.delivery-events once, in order. */
static void assert_delivery_events_in_order(char (*ids)[37], size_t n) {
    delivery_order_t d = {.ids = ids, .n = n};
    ts_kafka_scan_all("raw.delivery-events", 30000, visit_delivery, &d);
    for (size_t i = 0; i < n; i++)
        if (strcmp(d.seen[i], "apd") != 0)
            fail_msg("order %s: delivery events %s, expected assigned, picked_up, delivered",
                     ids[i], d.seen[i]);
}

static void broker_failures_hold_orders_in_the_outbox(void **state) {
    (void)state;
    char item[64];
    char ids[2 * N_ORDERS][37];
    fresh_item("outage-broker", item, sizeof item);

    /* Produce requests failing (REQUEST_TIMED_OUT): retried, never doubled. */
    assert_int_equal(ts_stack("broker errors 0 7 6"), 0);
    place_orders(item, ids, N_ORDERS);

    /* Every broker down: kafka DOWN everywhere, orders still accepted. */
    const char *errors_series = "deta_outbox_publish_errors_total";
    double errors_before = ts_metric("ORDER_SERVICE_URL", errors_series);
    assert_int_equal(ts_stack("broker down all"), 0);
    long down_at = now_ms();
    for (size_t i = 0; i < 5; i++)
        await_health(ts_service_urls[i], "DOWN", "kafka", "DOWN", 30000);
    expect_health("ORDER_SERVICE_URL", "/actuator/health/readiness", 503, "kafka", "DOWN");
    expect_health("ORDER_SERVICE_URL", "/actuator/health/liveness", 200, NULL, NULL);
    place_orders(item, ids + N_ORDERS, N_ORDERS);
    assert_int_equal(outbox_unpublished(ids + N_ORDERS, N_ORDERS), N_ORDERS);
    /* The relay's send fails after its timeout (10 s), backs off and retries:
     * wait for that failure (at least 15 s of outage, at most 60 s, since a
     * loaded machine starts the first send late), orders still unpublished. */
    while (now_ms() - down_at < 15000 ||
           (ts_metric("ORDER_SERVICE_URL", errors_series) <= errors_before &&
            now_ms() - down_at < 60000))
        ts_sleep_ms(500);
    assert_true(ts_metric("ORDER_SERVICE_URL", errors_series) > errors_before);
    assert_int_equal(outbox_unpublished(ids + N_ORDERS, N_ORDERS), N_ORDERS);
    for (size_t i = 0; i < 5; i++)
        assert_alive(ts_services[i]);
    assert_int_equal(ts_stack("broker up all"), 0);

    assert_completed_once(ids, 2 * N_ORDERS);
    assert_int_equal(outbox_unpublished(ids, 2 * N_ORDERS), 0);
    assert_published_once(ids, N_ORDERS);
    assert_published_once(ids + N_ORDERS, N_ORDERS);
    assert_delivery_events_in_order(ids, N_ORDERS);
    assert_delivery_events_in_order(ids + N_ORDERS, N_ORDERS);
    assert_no_dead_letters(ids, 2 * N_ORDERS);
    for (size_t i = 0; i < 5; i++)
        await_health(ts_service_urls[i], "UP", "kafka", "UP", 60000);
}

static void killed_relay_publishes_after_restart(void **state) {
    (void)state;
    char item[64];
    char ids[N_ORDERS][37];
    fresh_item("outage-kill", item, sizeof item);
    assert_int_equal(ts_stack("broker down all"), 0);
    await_health("ORDER_SERVICE_URL", "DOWN", "kafka", "DOWN", 30000);
    place_orders(item, ids, N_ORDERS);
    ts_sleep_ms(1000); /* the relay has them in a send that cannot finish */
    assert_int_equal(outbox_unpublished(ids, N_ORDERS), N_ORDERS);

    long pid = ts_stack_pid("order-service");
    assert_true(pid > 0);
    assert_int_equal(kill((pid_t)pid, SIGKILL), 0);
    for (int i = 0; i < 100 && kill((pid_t)pid, 0) == 0; i++)
        ts_sleep_ms(100);
    assert_int_equal(outbox_unpublished(ids, N_ORDERS), N_ORDERS);
    assert_int_equal(ts_stack("broker up all"), 0);
    assert_int_equal(ts_stack("start order-service"), 0);

    assert_completed_once(ids, N_ORDERS);
    assert_int_equal(outbox_unpublished(ids, N_ORDERS), 0);
    assert_published_once(ids, N_ORDERS);
    assert_no_dead_letters(ids, N_ORDERS);
}

static int setup(void **state) {
    (void)state;
    return ts_stack_heal(HEAL_MS) ? 0 : -1;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(postgres_outage_waits_and_resumes, heal),
        cmocka_unit_test_teardown(redis_outage_degrades_payment, heal),
        cmocka_unit_test_teardown(broker_failures_hold_orders_in_the_outbox, heal),
        cmocka_unit_test_teardown(killed_relay_publishes_after_restart, heal),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
