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
 *             published (once) and the orders complete;
 *   kill -9s  of order-service, several, at random moments while a client
 *             places orders through its API and cancels every other one at
 *             once (two events per order): the relay, reading the WAL, sends
 *             again what it had not confirmed (duplicates are counted), but
 *             every event of every accepted order is on raw.order-events, the
 *             first occurrences of an order's events in its outbox rows' order,
 *             and the sagas complete with no dead letter.
 *
 * Every test's teardown brings the stack back whole and healthy (ts_stack_heal),
 * pass or fail: Postgres, Redis, the brokers and every service.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "deta/states.h"
#include "deta/topics.h"
#include "testsupport.h"

#define N_ORDERS 8
#define END_WAIT_MS 180000
#define HEAL_MS 120000

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
static void place_orders(const char *item, char (*ids)[37], size_t n) {
    for (size_t i = 0; i < n; i++) {
        long status = ts_order_place("outage-customer", item, 1, ids[i]);
        if (status != 201)
            fail_msg("POST /api/orders: %ld", status);
    }
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
    ts_fresh_item("outage-pg", item, sizeof item);
    held_pid = ts_stack_pid("inventory-service");
    assert_true(held_pid > 0);
    assert_int_equal(kill((pid_t)held_pid, SIGSTOP), 0);
    place_orders(item, ids, N_ORDERS);
    PGconn *orders = ts_pg("order_db"); /* order-service's relay publishes them */
    assert_true(ts_outbox_relayed(orders, 30000));
    PQfinish(orders);
    /* Postgres's shutdown waits for each walsender's client to confirm what
     * it was sent: the stopped inventory-service's relay cannot, so the stop
     * may take until stack.sh's fallback (SIGKILL after 15 s). The outage is
     * timed from the moment Postgres is gone and inventory-service runs. */
    assert_int_equal(ts_stack("stop postgres"), 0);
    assert_int_equal(kill((pid_t)held_pid, SIGCONT), 0);
    held_pid = 0;
    long outage_began = now_ms();

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

    ts_assert_completed_once(ids, N_ORDERS, END_WAIT_MS);
    ts_assert_no_dead_letters(ids, N_ORDERS);
    assert_true(ts_metric("INVENTORY_SERVICE_URL", waiting) == 0);
    for (size_t i = 0; i < 5; i++)
        await_health(ts_service_urls[i], "UP", "db", "UP", 30000);
}

/* ---- Redis ---- */

static void redis_outage_degrades_payment(void **state) {
    (void)state;
    char item[64];
    char ids[N_ORDERS][37];
    ts_fresh_item("outage-redis", item, sizeof item);
    assert_int_equal(ts_stack("stop redis"), 0);
    await_health("PAYMENT_SERVICE_URL", "DEGRADED", "redis", "DOWN", 30000);
    expect_health("PAYMENT_SERVICE_URL", "/actuator/health", 200, "db", "UP");
    expect_health("PAYMENT_SERVICE_URL", "/actuator/health/readiness", 200, "redis", "DOWN");
    place_orders(item, ids, N_ORDERS);
    ts_assert_completed_once(ids, N_ORDERS, END_WAIT_MS);
    assert_int_equal(ts_stack("start redis"), 0);
    await_health("PAYMENT_SERVICE_URL", "UP", "redis", "UP", 30000);
    ts_assert_no_dead_letters(ids, N_ORDERS);
}

/* ---- the broker ---- */

/* How many of the orders' outbox rows in order_db are not out: none once the
 * relay's stream is past everything committed (lib/src/outbox_relay.c; waiting
 * up to wait_ms for it), else all of them: the relay confirms a batch as a
 * whole, and the broker may be down, so the topic is not read here. */
static long outbox_unpublished(char (*ids)[37], size_t n, long wait_ms) {
    PGconn *c = ts_pg("order_db");
    bool relayed = ts_outbox_relayed(c, wait_ms);
    long total = 0;
    for (size_t i = 0; !relayed && i < n; i++) {
        const char *params[] = {ids[i]};
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
    ts_fresh_item("outage-broker", item, sizeof item);

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
    assert_int_equal(outbox_unpublished(ids + N_ORDERS, N_ORDERS, 0), N_ORDERS);
    /* The relay's send fails after its timeout (10 s), backs off and retries:
     * wait for that failure (at least 15 s of outage, at most 60 s, since a
     * loaded machine starts the first send late), orders still unpublished. */
    while (now_ms() - down_at < 15000 ||
           (ts_metric("ORDER_SERVICE_URL", errors_series) <= errors_before &&
            now_ms() - down_at < 60000))
        ts_sleep_ms(500);
    assert_true(ts_metric("ORDER_SERVICE_URL", errors_series) > errors_before);
    assert_int_equal(outbox_unpublished(ids + N_ORDERS, N_ORDERS, 0), N_ORDERS);
    for (size_t i = 0; i < 5; i++)
        assert_alive(ts_services[i]);
    assert_int_equal(ts_stack("broker up all"), 0);

    ts_assert_completed_once(ids, 2 * N_ORDERS, END_WAIT_MS);
    assert_int_equal(outbox_unpublished(ids, 2 * N_ORDERS, 30000), 0);
    ts_assert_published_once(ids, N_ORDERS);
    ts_assert_published_once(ids + N_ORDERS, N_ORDERS);
    assert_delivery_events_in_order(ids, N_ORDERS);
    assert_delivery_events_in_order(ids + N_ORDERS, N_ORDERS);
    ts_assert_no_dead_letters(ids, 2 * N_ORDERS);
    for (size_t i = 0; i < 5; i++)
        await_health(ts_service_urls[i], "UP", "kafka", "UP", 60000);
}

static void killed_relay_publishes_after_restart(void **state) {
    (void)state;
    char item[64];
    char ids[N_ORDERS][37];
    ts_fresh_item("outage-kill", item, sizeof item);
    assert_int_equal(ts_stack("broker down all"), 0);
    await_health("ORDER_SERVICE_URL", "DOWN", "kafka", "DOWN", 30000);
    place_orders(item, ids, N_ORDERS);
    ts_sleep_ms(1000); /* the relay has them in a send that cannot finish */
    assert_int_equal(outbox_unpublished(ids, N_ORDERS, 0), N_ORDERS);

    long pid = ts_stack_pid("order-service");
    assert_true(pid > 0);
    assert_int_equal(kill((pid_t)pid, SIGKILL), 0);
    for (int i = 0; i < 100 && kill((pid_t)pid, 0) == 0; i++)
        ts_sleep_ms(100);
    assert_int_equal(outbox_unpublished(ids, N_ORDERS, 0), N_ORDERS);
    assert_int_equal(ts_stack("broker up all"), 0);
    assert_int_equal(ts_stack("start order-service"), 0);

    ts_assert_completed_once(ids, N_ORDERS, END_WAIT_MS);
    assert_int_equal(outbox_unpublished(ids, N_ORDERS, 30000), 0);
    ts_assert_published_once(ids, N_ORDERS);
    ts_assert_no_dead_letters(ids, N_ORDERS);
}

/* ---- kill -9 of the relay, again and again, while orders flow ---- */

#define KILLS 4
#define KILL_DELAY_MAX_MS 1500
#define KILL_ROUND_ORDERS 25 /* orders per round, KILL_PACE_MS apart: they span the delay */
#define KILL_ORDERS_MAX ((KILLS + 1) * KILL_ROUND_ORDERS)
#define KILL_PACE_MS 60
#define KILL_MSGS_MAX 48 /* messages of one order on the topic, duplicates included */

typedef struct kill_order {
    char id[37];
    bool cancel;        /* a cancel is asked right after the 201 */
    long cancel_status; /* the answer to the cancel; 0 while none came */
} kill_order_t;

/* The client: places orders through the REST API, and cancels every other one
 * at once, while the test kills order-service; a request that gets no answer
 * (the service is down) is not an order, a cancel without one is asked again.
 * Each round of the test allows KILL_ROUND_ORDERS more orders, so that the
 * orders flow while the kill comes. */
typedef struct order_flow {
    const char *item;
    kill_order_t orders[KILL_ORDERS_MAX];
    size_t n;              /* accepted (201) */
    atomic_size_t allowed; /* orders the test allows so far */
    int unanswered;        /* POSTs without a 201 (no answer, or a 5xx while it starts) */
    atomic_bool stop;      /* no more rounds: place what is allowed and end */
} order_flow_t;

static long cancel_order(const char *id) {
    char path[128];
    snprintf(path, sizeof path, "/api/orders/%s/cancel", id);
    ts_http_resp_t r;
    long status = ts_http_try("POST", "ORDER_SERVICE_URL", path, NULL, NULL, 5000, &r) ? r.status
                                                                                       : 0;
    ts_http_resp_free(&r);
    return status >= 500 ? 0 : status;
}

static void cancels_pending(order_flow_t *f) {
    for (size_t i = 0; i < f->n; i++)
        if (f->orders[i].cancel && f->orders[i].cancel_status == 0)
            f->orders[i].cancel_status = cancel_order(f->orders[i].id);
}

static void *order_flow_main(void *arg) {
    order_flow_t *f = arg;
    while (!atomic_load(&f->stop) || f->n < atomic_load(&f->allowed)) {
        if (f->n >= atomic_load(&f->allowed) || f->n >= KILL_ORDERS_MAX) {
            ts_sleep_ms(10);
            continue;
        }
        kill_order_t *o = &f->orders[f->n];
        if (ts_order_place("kill-customer", f->item, 1, o->id) == 201 && o->id[0]) {
            o->cancel = f->n % 2 == 1;
            o->cancel_status = o->cancel ? cancel_order(o->id) : 0;
            f->n++;
        } else {
            f->unanswered++;
        }
        cancels_pending(f);
        ts_sleep_ms(KILL_PACE_MS);
    }
    return NULL;
}

/* The order's outbox rows in id order: their eventIds into ids (at most max),
 * and how many of them are order.created and order.cancel_requested. */
static int outbox_events(PGconn *c, const char *order, char (*ids)[37], int max, int *created,
                         int *cancels) {
    const char *params[] = {order};
    PGresult *res = PQexecParams(c,
                                 "SELECT payload::jsonb->>'eventId', payload::jsonb->>'eventType'"
                                 " FROM outbox WHERE msg_key = $1 ORDER BY id",
                                 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        fail_msg("order_db outbox: %s", PQerrorMessage(c));
    int n = PQntuples(res);
    *created = *cancels = 0;
    for (int i = 0; i < n; i++) {
        const char *type = PQgetvalue(res, i, 1);
        if (strcmp(type, DETA_EVT_ORDER_CREATED) == 0)
            (*created)++;
        else if (strcmp(type, DETA_EVT_ORDER_CANCEL_REQUESTED) == 0)
            (*cancels)++;
        else
            fail_msg("order %s: an outbox row of type %s", order, type);
        if (i < max)
            snprintf(ids[i], 37, "%s", PQgetvalue(res, i, 0));
    }
    PQclear(res);
    return n;
}

/* Every message of the test's orders on raw.order-events: their eventIds per
 * order, in the order the topic holds them (one key, one partition). */
typedef struct topic_events {
    kill_order_t *orders;
    size_t n;
    char (*ids)[KILL_MSGS_MAX][37];
    int *count;
} topic_events_t;

static void visit_order_event(const ts_kafka_msg_t *m, void *opaque) {
    topic_events_t *t = opaque;
    for (size_t i = 0; m->key && i < t->n; i++) {
        if (strcmp(m->key, t->orders[i].id) != 0)
            continue;
        json_t *ev = json_loads(m->value, 0, NULL);
        const char *id = json_string_value(json_object_get(ev, "eventId"));
        if (t->count[i] < KILL_MSGS_MAX)
            snprintf(t->ids[i][t->count[i]], 37, "%s", id ? id : "?");
        t->count[i]++;
        json_decref(ev);
        return;
    }
}

/* What the SIGKILLs may do to the relay: send again (duplicates), never lose a
 * row nor reorder an order's events. Returns how many duplicates it counted. */
static int assert_relayed_in_order(kill_order_t *orders, size_t n) {
    PGconn *c = ts_pg("order_db");
    if (!ts_outbox_relayed(c, 60000))
        fail_msg("order-service's relay has not confirmed its slot past the orders after 60 s");
    static char ids[KILL_ORDERS_MAX][KILL_MSGS_MAX][37]; /* static: a failure frees nothing */
    static int counts[KILL_ORDERS_MAX];
    assert_true(n <= KILL_ORDERS_MAX);
    memset(counts, 0, sizeof counts);
    topic_events_t t = {orders, n, ids, counts};
    ts_kafka_scan_all(DETA_TOPIC_ORDER_EVENTS, 60000, visit_order_event, &t);
    int duplicates = 0, lost = 0, misordered = 0, several = 0;
    for (size_t i = 0; i < n; i++) {
        char rows[4][37];
        int created, cancels;
        int nrows = outbox_events(c, orders[i].id, rows, 4, &created, &cancels);
        /* What the API's answers promised is in the outbox. */
        if (created != 1)
            fail_msg("order %s: %d order.created rows in the outbox", orders[i].id, created);
        long cs = orders[i].cancel_status;
        if (cancels > 1 || ((cs == 202 || cs == 200) && cancels != 1))
            fail_msg("order %s: cancel answered %ld, %d order.cancel_requested rows",
                     orders[i].id, cs, cancels);
        if (t.count[i] > KILL_MSGS_MAX)
            fail_msg("order %s: %d messages on the topic", orders[i].id, t.count[i]);
        several += nrows > 1;
        /* Every row is on the topic at least once (at-least-once), and the
         * first occurrences of the rows, in the topic's order, are in id order
         * (per-key order); a later occurrence is a duplicate. */
        int first[4] = {-1, -1, -1, -1}; /* each row's first message */
        for (int m = 0; m < t.count[i]; m++) {
            int row = -1;
            for (int k = 0; k < nrows && k < 4 && row < 0; k++)
                if (strcmp(t.ids[i][m], rows[k]) == 0)
                    row = k;
            if (row < 0)
                fail_msg("order %s: event %s on the topic is no outbox row of it", orders[i].id,
                         t.ids[i][m]);
            if (first[row] < 0)
                first[row] = m;
            else
                duplicates++;
        }
        bool order_lost = false, order_misordered = false;
        for (int k = 0; k < nrows && k < 4; k++) {
            if (first[k] < 0) {
                fprintf(stderr, "order %s: outbox row %d of %d (event %s) is not on %s\n",
                        orders[i].id, k + 1, nrows, rows[k], DETA_TOPIC_ORDER_EVENTS);
                order_lost = true;
            } else if (k > 0 && first[k - 1] >= 0 && first[k] < first[k - 1]) {
                fprintf(stderr, "order %s: outbox row %d (event %s) is on the topic before row %d\n",
                        orders[i].id, k + 1, rows[k], k);
                order_misordered = true;
            }
        }
        lost += order_lost;
        misordered += order_misordered;
    }
    PQfinish(c);
    fprintf(stderr, "kill -9: %zu orders (%d with two events), %d duplicate messages, %d orders"
                    " with messages lost, %d out of order\n",
            n, several, duplicates, lost, misordered);
    if (lost || misordered)
        fail_msg("%d orders lost messages, %d have them out of order", lost, misordered);
    if (several == 0)
        fail_msg("no order has two events: the order check checked nothing");
    return duplicates;
}

/* The orders whose cancel was written ended with its verdict: CANCELLED in the
 * read model iff order_db says so (a refused one was delivered), charged at most
 * once; the others were delivered, each with one reservation, payment and
 * delivery. */
static void assert_sagas_completed(kill_order_t *orders, size_t n) {
    static char plain[KILL_ORDERS_MAX][37], cancelled[KILL_ORDERS_MAX][37];
    assert_true(n <= KILL_ORDERS_MAX);
    PGconn *c = ts_pg("order_db"), *pay = ts_pg("delivery_eta");
    size_t nplain = 0, ncancelled = 0;
    for (size_t i = 0; i < n; i++) {
        const char *params[] = {orders[i].id};
        long asked = ts_pg_long(c,
                                "SELECT count(*) FROM orders WHERE order_id = $1"
                                " AND cancel_status IS NOT NULL",
                                1, params);
        memcpy(asked ? cancelled[ncancelled++] : plain[nplain++], orders[i].id, 37);
    }
    fprintf(stderr, "kill -9: %zu orders to deliver, %zu with a cancel\n", nplain, ncancelled);
    ts_assert_completed_once(plain, nplain, END_WAIT_MS);
    assert_true(ts_orders_await(cancelled, ncancelled, NULL, END_WAIT_MS));
    for (size_t i = 0; i < ncancelled; i++) {
        const char *params[] = {cancelled[i]};
        const char *verdict_sql = "SELECT count(*) FROM orders WHERE order_id = $1"
                                  " AND cancel_status IN ('CANCELLED', 'REFUSED')";
        for (int waited = 0; ts_pg_long(c, verdict_sql, 1, params) == 0; waited += 200) {
            if (waited >= 60000)
                fail_msg("order %s: no verdict for its cancel in order_db", cancelled[i]);
            ts_sleep_ms(200);
        }
        bool was_cancelled = ts_pg_long(c,
                                        "SELECT count(*) FROM orders WHERE order_id = $1"
                                        " AND cancel_status = 'CANCELLED'",
                                        1, params) == 1;
        char status[64];
        ts_order_status(cancelled[i], status, sizeof status);
        if (was_cancelled != (strcmp(status, DETA_STATE_CANCELLED) == 0))
            fail_msg("order %s: read model %s, cancel %s in order_db", cancelled[i], status,
                     was_cancelled ? "CANCELLED" : "REFUSED");
        if (ts_pg_long(pay, "SELECT count(*) FROM payments WHERE order_id = $1", 1, params) > 1 ||
            ts_ledger_charges(cancelled[i]) > 1)
            fail_msg("order %s charged more than once", cancelled[i]);
    }
    PQfinish(c);
    PQfinish(pay);
}

static void relay_killed_again_and_again(void **state) {
    (void)state;
    char item[64];
    ts_fresh_item("outage-kills", item, sizeof item);
    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    fprintf(stderr, "kill -9: seed %u\n", seed);
    static order_flow_t flow_state; /* static: a failure frees nothing */
    order_flow_t *f = &flow_state;
    memset(f, 0, sizeof *f);
    f->item = item;
    atomic_init(&f->allowed, KILL_ROUND_ORDERS);
    atomic_init(&f->stop, false);
    pthread_t flow;
    assert_int_equal(pthread_create(&flow, NULL, order_flow_main, f), 0);
    for (int k = 0; k < KILLS; k++) {
        /* At a random moment of the flow: before, during or after a send, its
         * acknowledgement or the confirmation of the slot, or the relay's
         * start (the delay begins once the restarted service is healthy). */
        ts_sleep_ms(rand_r(&seed) % (KILL_DELAY_MAX_MS + 1));
        long pid = ts_stack_pid("order-service");
        assert_true(pid > 0);
        assert_int_equal(kill((pid_t)pid, SIGKILL), 0);
        for (int i = 0; i < 100 && kill((pid_t)pid, 0) == 0; i++)
            ts_sleep_ms(20);
        assert_int_equal(ts_stack("start order-service"), 0);
        atomic_fetch_add(&f->allowed, KILL_ROUND_ORDERS);
    }
    atomic_store(&f->stop, true);
    pthread_join(flow, NULL);
    size_t n = f->n;
    fprintf(stderr, "kill -9: %d kills, %zu orders accepted, %d requests unanswered\n", KILLS, n,
            f->unanswered);
    assert_int_equal(n, KILL_ORDERS_MAX);
    for (int waited = 0;; waited += 200) { /* cancels that got no answer: asked again */
        cancels_pending(f);
        bool pending = false;
        for (size_t i = 0; i < n; i++)
            pending = pending || (f->orders[i].cancel && f->orders[i].cancel_status == 0);
        if (!pending)
            break;
        if (waited >= 30000)
            fail_msg("order-service does not answer cancels");
        ts_sleep_ms(200);
    }

    long began = now_ms();
    assert_relayed_in_order(f->orders, n);
    fprintf(stderr, "kill -9: relayed checked after %ld ms\n", now_ms() - began);
    assert_sagas_completed(f->orders, n);
    fprintf(stderr, "kill -9: sagas checked after %ld ms\n", now_ms() - began);
    static char ids[KILL_ORDERS_MAX][37];
    for (size_t i = 0; i < n; i++)
        memcpy(ids[i], f->orders[i].id, 37);
    ts_assert_no_dead_letters(ids, n);
}

static int setup(void **state) {
    (void)state;
    return ts_stack_heal(HEAL_MS) ? 0 : -1;
}

int main(void) {
    /* TEST_FILTER runs only the tests whose names match (cmocka's pattern). */
    if (getenv("TEST_FILTER"))
        cmocka_set_test_filter(getenv("TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(postgres_outage_waits_and_resumes, heal),
        cmocka_unit_test_teardown(redis_outage_degrades_payment, heal),
        cmocka_unit_test_teardown(broker_failures_hold_orders_in_the_outbox, heal),
        cmocka_unit_test_teardown(killed_relay_publishes_after_restart, heal),
        cmocka_unit_test_teardown(relay_killed_again_and_again, heal),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
