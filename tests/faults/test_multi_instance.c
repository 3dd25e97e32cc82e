/*
 * test_multi_instance.c - several instances of a service in one consumer group:
 * partitions shared, taken over when one dies, every order handled once.
 *
 * On the shared test stack (a fault test: run after the integration tests, one
 * at a time), the test starts a second instance of payment-service,
 * delivery-service and inventory-service (stack.sh start <service>.2: same
 * binary, same group, a port of its own), waits until the instances of each
 * group report partitions in deta_consumer_assigned_partitions{group,topic} and
 * together hold all of the topic's, then posts ORDERS orders (one customer in
 * ten named decline-*, so both end states occur). Midway it waits until both
 * payment and both delivery instances have handled orders, then kill -9s the
 * first instance of payment-service and of delivery-service, posts the rest, and
 * checks:
 *   - the survivors take over every partition (their gauge = the topic's count);
 *   - every order reaches its end state in the read model (DELIVERED, or
 *     PAYMENT_FAILED for decline-*), with exactly one reservation and one payment
 *     row, one delivery for an authorized order and none for a declined one;
 *   - on raw.payment-events one distinct payment event per order, and on
 *     raw.delivery-events one distinct assigned, picked_up and delivered each, in
 *     that order on the order's partition (a re-published event has the same id);
 *   - no dead letter for any of them.
 * "No order processed concurrently by two instances": while both instances run,
 * each partition has one owner, so no instance may see another's work. Before
 * the kill the test asserts that no instance has met a duplicate or a held
 * payment lock since the orders began (payment_duplicate_total,
 * payment_lock_timeout_total, and delivery's deta_events_total{outcome=
 * "duplicate"}): an order handled by both would show as one of them (the second
 * finds the Redis lock held, the Redis marker, the payments row, or the order's
 * delivery). After the kill duplicates are expected (the survivor re-reads what the
 * dead one had not committed) and the unique keys keep their effects single.
 * What this does not prove: that two instances never entered a handler for one
 * order at the same instant when the database and Redis guards would have hidden
 * it, nor anything about timings other than those this run happened to have.
 *
 * The stack is left as it was found, pass or fail: the teardown stops the second
 * instances, starts the killed ones again and waits until the stack is healthy.
 */
#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deta/states.h"
#include "deta/topics.h"
#include "testsupport.h"

#define ORDERS 300
#define KILL_AT (ORDERS / 2)
#define DECLINE_EVERY 10
#define ASSIGN_TIMEOUT_MS 60000
#define WORK_TIMEOUT_MS 60000
#define END_STATE_TIMEOUT_MS 240000
#define KAFKA_SCAN_MS 120000

typedef struct group_check {
    const char *group;
    const char *topic;
    const char *url_vars[2]; /* instance 1, instance 2 */
} group_check_t;

static const group_check_t GROUPS[] = {
    {"payment-service", DETA_TOPIC_INVENTORY_EVENTS, {"PAYMENT_SERVICE_URL", "PAYMENT_SERVICE_2_URL"}},
    {"delivery-service", DETA_TOPIC_PAYMENT_EVENTS,
     {"DELIVERY_SERVICE_URL", "DELIVERY_SERVICE_2_URL"}},
    {"inventory-service", DETA_TOPIC_ORDER_EVENTS,
     {"INVENTORY_SERVICE_URL", "INVENTORY_SERVICE_2_URL"}},
    {"inventory-service", DETA_TOPIC_PAYMENT_EVENTS,
     {"INVENTORY_SERVICE_URL", "INVENTORY_SERVICE_2_URL"}},
};
#define NGROUPS (sizeof GROUPS / sizeof *GROUPS)

static const char *const SECOND[] = {"payment-service.2", "delivery-service.2",
                                     "inventory-service.2"};
static const char *const SECOND_URLS[] = {"PAYMENT_SERVICE_2_URL", "DELIVERY_SERVICE_2_URL",
                                          "INVENTORY_SERVICE_2_URL"};
static const char *const KILLED[] = {"payment-service", "delivery-service"};

/* ---- the instances ---- */

/* Exports var as the URL of a running part, from $STACK_DIR/ports/<part>.port. */
static void export_url(const char *part, const char *var) {
    char path[1024], url[128];
    snprintf(path, sizeof path, "%s/ports/%s.port", ts_env("STACK_DIR"), part);
    FILE *f = fopen(path, "r");
    int port = 0;
    if (!f || fscanf(f, "%d", &port) != 1)
        fail_msg("no port file %s for %s", path, part);
    fclose(f);
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    setenv(var, url, 1);
}

static int partitions_of(const char *topic) {
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", ts_env("KAFKA_BOOTSTRAP_SERVERS"), err,
                          sizeof err) != RD_KAFKA_CONF_OK)
        fail_msg("kafka conf: %s", err);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    assert_non_null(rk);
    rd_kafka_topic_t *t = rd_kafka_topic_new(rk, topic, NULL);
    const rd_kafka_metadata_t *md = NULL;
    int n = 0;
    if (rd_kafka_metadata(rk, 0, t, &md, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        n = md->topic_cnt == 1 ? md->topics[0].partition_cnt : 0;
        rd_kafka_metadata_destroy(md);
    }
    rd_kafka_topic_destroy(t);
    rd_kafka_destroy(rk);
    assert_true(n > 0);
    return n;
}

/* A metric of one instance; an absent series (a counter never incremented)
 * is 0, an instance that does not answer -1. */
static double metric(const char *url_var, const char *series) {
    double v = ts_metric(url_var, series);
    return v < 0 ? 0 : v;
}

static double assigned(const char *url_var, const group_check_t *g) {
    char series[256];
    snprintf(series, sizeof series,
             "deta_consumer_assigned_partitions{group=\"%s\",topic=\"%s\"}", g->group, g->topic);
    return ts_metric(url_var, series);
}

/* Waits until the listed instances of g together hold all nparts partitions,
 * each at least one; false (said) after the timeout. */
static bool await_assignment(const group_check_t *g, const char *const *url_vars, size_t n,
                             int nparts) {
    double got[2] = {0, 0};
    for (int waited = 0; waited < ASSIGN_TIMEOUT_MS; waited += 500) {
        double sum = 0;
        bool each = true;
        for (size_t i = 0; i < n; i++) {
            got[i] = assigned(url_vars[i], g);
            sum += got[i] > 0 ? got[i] : 0;
            each = each && got[i] >= 1;
        }
        if (each && sum == nparts) {
            if (n > 1)
                fprintf(stderr, "%s on %s: %.0f + %.0f of %d partitions\n", g->group, g->topic,
                        got[0], got[1], nparts);
            else
                fprintf(stderr, "%s on %s: one instance holds all %d partitions\n", g->group,
                        g->topic, nparts);
            return true;
        }
        ts_sleep_ms(500);
    }
    fprintf(stderr, "%s on %s: instances hold %.0f and %.0f of %d partitions\n", g->group,
            g->topic, got[0], n > 1 ? got[1] : 0, nparts);
    return false;
}

/* ---- counters that show one order handled twice ---- */

typedef struct doubles {
    double payment_dup, payment_lock, delivery_dup;
} doubles_t;

static void read_doubles(doubles_t *d) {
    static const char DELIVERY_DUP[] =
        "deta_events_total{type=\"payment.authorized\",outcome=\"duplicate\"}";
    memset(d, 0, sizeof *d);
    for (int i = 0; i < 2; i++) {
        d->payment_dup += metric(GROUPS[0].url_vars[i], "payment_duplicate_total");
        d->payment_lock += metric(GROUPS[0].url_vars[i], "payment_lock_timeout_total");
        d->delivery_dup += metric(GROUPS[1].url_vars[i], DELIVERY_DUP);
    }
}

/* What each instance of payment and of delivery has handled so far. */
typedef struct work {
    double done[2][2]; /* [payment, delivery][instance] */
} work_t;

static const char *const WORK_SERIES[] = {"payment_processed_total", "delivery_assigned_total"};

static void read_work(work_t *w) {
    for (int s = 0; s < 2; s++)
        for (int i = 0; i < 2; i++)
            w->done[s][i] = metric(GROUPS[s].url_vars[i], WORK_SERIES[s]);
}

/* Waits until both instances of payment and of delivery have handled orders
 * since before. */
static void await_both_working(const work_t *before) {
    const char *const *series = WORK_SERIES;
    for (int s = 0; s < 2; s++)
        for (int i = 0; i < 2; i++) {
            int waited = 0;
            while (metric(GROUPS[s].url_vars[i], series[s]) <= before->done[s][i] &&
                   waited < WORK_TIMEOUT_MS) {
                ts_sleep_ms(250);
                waited += 250;
            }
            if (waited >= WORK_TIMEOUT_MS)
                fail_msg("%s (%s) handled nothing in %d ms: the partitions are not shared",
                         GROUPS[s].url_vars[i], series[s], WORK_TIMEOUT_MS);
        }
}

/* ---- the orders ---- */

typedef struct run {
    char tag[9];
    char item[64];
    char ids[ORDERS][37];
    bool decline[ORDERS];
} run_t;

static void place(run_t *r, int i) {
    char customer[96];
    r->decline[i] = i % DECLINE_EVERY == 0;
    snprintf(customer, sizeof customer, "%smulti-%s-%d", r->decline[i] ? "decline-" : "", r->tag,
             i);
    long status = ts_order_place(customer, r->item, 1, r->ids[i]);
    if (status != 201)
        fail_msg("order %d: HTTP %ld", i, status);
}

/* The orders that end one way, as a list for ts_orders_await / rows checks. */
static size_t select_orders(const run_t *r, bool declined, char (*out)[37]) {
    size_t n = 0;
    for (int i = 0; i < ORDERS; i++)
        if (r->decline[i] == declined)
            memcpy(out[n++], r->ids[i], 37);
    return n;
}

/* ---- the topics ---- */

typedef struct seen {
    char ids[4][37]; /* distinct event ids of one kind */
    int n;
    int64_t first_offset;
} seen_t;

typedef struct per_order {
    seen_t payment, assigned, picked_up, delivered;
    int dead_letters;
} per_order_t;

typedef struct scan {
    const run_t *run;
    per_order_t *orders;
} scan_t;

static int order_index(const run_t *r, const char *key) {
    for (int i = 0; key && i < ORDERS; i++)
        if (strcmp(r->ids[i], key) == 0)
            return i;
    return -1;
}

static void note(seen_t *s, const char *event_id, int64_t offset) {
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->ids[i], event_id) == 0)
            return;
    if (s->n == 0)
        s->first_offset = offset;
    if (s->n < 4)
        snprintf(s->ids[s->n], 37, "%s", event_id);
    s->n++;
}

static void visit_event(const ts_kafka_msg_t *m, void *opaque) {
    scan_t *sc = opaque;
    int i = order_index(sc->run, m->key);
    if (i < 0)
        return;
    json_t *ev = json_loads(m->value, 0, NULL);
    const char *type = json_string_value(json_object_get(ev, "eventType"));
    const char *id = json_string_value(json_object_get(ev, "eventId"));
    per_order_t *o = &sc->orders[i];
    seen_t *s = !type                                                ? NULL
                : strncmp(type, "payment.", 8) == 0                  ? &o->payment
                : strcmp(type, DETA_EVT_DELIVERY_ASSIGNED) == 0      ? &o->assigned
                : strcmp(type, DETA_EVT_DELIVERY_PICKED_UP) == 0     ? &o->picked_up
                : strcmp(type, DETA_EVT_DELIVERY_DELIVERED) == 0     ? &o->delivered
                                                                     : NULL;
    if (s && id)
        note(s, id, m->offset);
    json_decref(ev);
}

static void visit_dead_letter(const ts_kafka_msg_t *m, void *opaque) {
    scan_t *sc = opaque;
    int i = order_index(sc->run, m->key);
    if (i >= 0) {
        sc->orders[i].dead_letters++;
        fprintf(stderr, "dead letter for order %s: %s\n", m->key,
                ts_kafka_header(m, "x-error") ? ts_kafka_header(m, "x-error") : "?");
    }
}

/* How many orders break the per-order event rules (each printed). */
static int check_events(const run_t *r, const per_order_t *orders) {
    int bad = 0;
    for (int i = 0; i < ORDERS; i++) {
        const per_order_t *o = &orders[i];
        int want = r->decline[i] ? 0 : 1;
        bool ok = o->payment.n == 1 && o->assigned.n == want && o->picked_up.n == want &&
                  o->delivered.n == want && o->dead_letters == 0;
        if (ok && want)
            ok = o->assigned.first_offset < o->picked_up.first_offset &&
                 o->picked_up.first_offset < o->delivered.first_offset;
        if (!ok) {
            bad++;
            fprintf(stderr,
                    "order %s: %d payment event(s); assigned %d at %lld, picked_up %d at %lld, "
                    "delivered %d at %lld; %d dead letter(s)\n",
                    r->ids[i], o->payment.n, o->assigned.n, (long long)o->assigned.first_offset,
                    o->picked_up.n, (long long)o->picked_up.first_offset, o->delivered.n,
                    (long long)o->delivered.first_offset, o->dead_letters);
        }
    }
    return bad;
}

static void check_topics(const run_t *r) {
    scan_t sc = {r, calloc(ORDERS, sizeof(per_order_t))};
    assert_non_null(sc.orders);
    ts_kafka_scan_all(DETA_TOPIC_PAYMENT_EVENTS, KAFKA_SCAN_MS, visit_event, &sc);
    ts_kafka_scan_all(DETA_TOPIC_DELIVERY_EVENTS, KAFKA_SCAN_MS, visit_event, &sc);
    for (size_t t = DETA_TOPICS_RAW_COUNT; t < DETA_TOPICS_COUNT; t++) /* the dlq. twins */
        ts_kafka_scan_all(deta_topics_all[t], KAFKA_SCAN_MS, visit_dead_letter, &sc);
    int bad = check_events(r, sc.orders);
    free(sc.orders);
    assert_int_equal(bad, 0);
}

/* ---- the test ---- */

static void start_second_instances(void) {
    for (size_t i = 0; i < sizeof SECOND / sizeof *SECOND; i++) {
        assert_int_equal(ts_stack("start %s", SECOND[i]), 0);
        export_url(SECOND[i], SECOND_URLS[i]);
    }
}

static void await_shared(void) {
    for (size_t g = 0; g < NGROUPS; g++)
        if (!await_assignment(&GROUPS[g], GROUPS[g].url_vars, 2, partitions_of(GROUPS[g].topic)))
            fail_msg("%s's instances do not share %s", GROUPS[g].group, GROUPS[g].topic);
}

static void await_taken_over(void) {
    for (size_t g = 0; g < 2; g++)
        if (!await_assignment(&GROUPS[g], &GROUPS[g].url_vars[1], 1,
                              partitions_of(GROUPS[g].topic)))
            fail_msg("%s's survivor did not take over %s", GROUPS[g].group, GROUPS[g].topic);
}

static void check_rows(const run_t *r) {
    static char authorized[ORDERS][37], declined[ORDERS][37];
    size_t na = select_orders(r, false, authorized), nd = select_orders(r, true, declined);
    assert_true(ts_orders_await(authorized, na, DETA_STATE_DELIVERED, END_STATE_TIMEOUT_MS));
    assert_true(ts_orders_await(declined, nd, DETA_STATE_PAYMENT_FAILED, END_STATE_TIMEOUT_MS));
    char (*all)[37] = (char (*)[37])r->ids;
    assert_int_equal(ts_orders_rows_not("inventory_db", "reservations", all, ORDERS, 1), 0);
    assert_int_equal(ts_orders_rows_not("delivery_eta", "payments", all, ORDERS, 1), 0);
    assert_int_equal(ts_orders_rows_not("delivery_db", "deliveries", authorized, na, 1), 0);
    assert_int_equal(ts_orders_rows_not("delivery_db", "deliveries", declined, nd, 0), 0);
}

static void test_instances_share_and_take_over(void **state) {
    (void)state;
    static run_t r;
    memset(&r, 0, sizeof r);
    char uuid[37];
    ts_uuid(uuid);
    snprintf(r.tag, sizeof r.tag, "%.8s", uuid);
    snprintf(r.item, sizeof r.item, "multi-%s", r.tag);
    ts_stock_set(r.item, 100000);

    start_second_instances();
    await_shared();
    doubles_t before, at_kill;
    work_t work;
    read_doubles(&before);
    read_work(&work);
    for (int i = 0; i < KILL_AT; i++)
        place(&r, i);
    await_both_working(&work);
    read_doubles(&at_kill);
    fprintf(stderr, "before the kill: payment duplicates %.0f, lock waits %.0f, delivery "
            "duplicates %.0f (since the orders began)\n", at_kill.payment_dup - before.payment_dup,
            at_kill.payment_lock - before.payment_lock, at_kill.delivery_dup - before.delivery_dup);
    assert_true(at_kill.payment_dup == before.payment_dup);
    assert_true(at_kill.payment_lock == before.payment_lock);
    assert_true(at_kill.delivery_dup == before.delivery_dup);

    for (size_t k = 0; k < sizeof KILLED / sizeof *KILLED; k++)
        assert_int_equal(ts_stack("kill %s", KILLED[k]), 0);
    for (int i = KILL_AT; i < ORDERS; i++)
        place(&r, i);
    await_taken_over();
    check_rows(&r);
    check_topics(&r);
}

/* Pass or fail: the second instances go, the killed ones come back, and the
 * stack is healthy again with the first instances holding every partition. */
static int restore_stack(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof SECOND / sizeof *SECOND; i++)
        ts_stack("stop %s", SECOND[i]);
    for (size_t k = 0; k < sizeof KILLED / sizeof *KILLED; k++)
        ts_stack("start %s", KILLED[k]);
    int healthy = ts_stack_heal(120000);
    for (size_t g = 0; g < NGROUPS && healthy; g++)
        if (!await_assignment(&GROUPS[g], GROUPS[g].url_vars, 1, partitions_of(GROUPS[g].topic)))
            fprintf(stderr, "restore: %s does not hold all of %s yet\n", GROUPS[g].group,
                    GROUPS[g].topic);
    return healthy ? 0 : -1;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_instances_share_and_take_over, restore_stack),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
