/*
 * test_broker_failover.c - the system on a replicated cluster of three brokers
 * while partition leaders move and one broker is lost and comes back
 * (tools/local-broker: the mock's brokers, with this program's controller).
 *
 * It runs on a cluster of three brokers, every topic replicated on all three:
 * scripts/test.sh restarts the test stack's broker so (KAFKA_BROKERS=3) after
 * the other fault tests, whose environment would otherwise keep a dead
 * address, and runs this one alone (ctest label "cluster"). Run by hand on a
 * stack of one broker, it restarts the broker as three itself (stack.sh
 * restarts the services for the new address) and leaves it so.
 *
 * While a client places orders through order-service:
 *
 *   leaders   every partition's leadership moves to broker 2, then to broker 3,
 *             then back to the brokers the cluster first chose (the metadata
 *             says so after each move): producers (the outbox relays, the dead
 *             letters) and consumers follow each move;
 *   one down  broker 1, which leads a third of the partitions and coordinates
 *             the groups of order-service and delivery-service, goes down: the
 *             metadata names it leader of nothing, every service stays UP
 *             (kafka UP: the cluster still answers), and the orders placed so
 *             far, during the outage too, are DELIVERED before it comes back;
 *             then it takes its leaders back.
 *
 * After each, every order placed was accepted (201), reached DELIVERED with one
 * reservation, one payment and one delivery, its order.created is on
 * raw.order-events exactly once, and no dead letter names it: nothing lost,
 * nothing doubled.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "deta/states.h"
#include "deta/topics.h"
#include "testsupport.h"

#define N_ORDERS 24
#define PLACE_EVERY_MS 250
#define END_WAIT_MS 180000
#define HEAL_MS 120000

/* The orders a background client places, one every PLACE_EVERY_MS. One at a
 * time, static: a test that fails leaves it to the teardown to join. */
typedef struct placer {
    pthread_t thread;
    bool running;
    char item[64];
    char ids[N_ORDERS][37];
    long status[N_ORDERS];
    atomic_int placed;
} placer_t;

static placer_t placer;

static void *place(void *arg) {
    placer_t *p = arg;
    for (int i = 0; i < N_ORDERS; i++) {
        p->status[i] = ts_order_place("failover-customer", p->item, 1, p->ids[i]);
        atomic_store(&p->placed, i + 1);
        ts_sleep_ms(PLACE_EVERY_MS);
    }
    return NULL;
}

static placer_t *placer_start(const char *tag) {
    placer_t *p = &placer;
    assert_false(p->running);
    memset(p, 0, sizeof *p);
    ts_fresh_item(tag, p->item, sizeof p->item);
    assert_int_equal(pthread_create(&p->thread, NULL, place, p), 0);
    p->running = true;
    return p;
}

static void placer_join(placer_t *p) {
    if (p->running)
        pthread_join(p->thread, NULL);
    p->running = false;
}

/* Waits until the client has placed at least n orders. */
static void placer_reached(placer_t *p, int n) {
    for (int waited = 0; atomic_load(&p->placed) < n; waited += 50) {
        if (waited > 60000)
            fail_msg("the client placed %d orders in 60 s", atomic_load(&p->placed));
        ts_sleep_ms(50);
    }
}

/* Every order accepted, completed once, published once, never dead-lettered. */
static void placer_finish(placer_t *p) {
    placer_join(p);
    for (int i = 0; i < N_ORDERS; i++)
        if (p->status[i] != 201)
            fail_msg("order %d of %d: POST /api/orders answered %ld", i + 1, N_ORDERS,
                     p->status[i]);
    ts_assert_completed_once(p->ids, N_ORDERS, END_WAIT_MS);
    ts_assert_published_once(p->ids, N_ORDERS);
    ts_assert_no_dead_letters(p->ids, N_ORDERS);
}

/* The value of KEY in $STACK_DIR/stack.env (KEY=value, unquoted), into the
 * environment: the broker's new address, after its restart. */
static void reload_env(const char *key) {
    char path[1024], line[2048];
    snprintf(path, sizeof path, "%s/stack.env", ts_env("STACK_DIR"));
    FILE *f = fopen(path, "r");
    if (!f)
        fail_msg("cannot read %s", path);
    size_t klen = strlen(key);
    bool found = false;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, klen) != 0 || line[klen] != '=')
            continue;
        line[strcspn(line, "\n")] = '\0';
        setenv(key, line + klen + 1, 1);
        found = true;
    }
    fclose(f);
    if (!found)
        fail_msg("%s has no %s", path, key);
}

/* The broker restarted with n brokers, the services with it. */
static void restart_broker(const char *n) {
    setenv("KAFKA_BROKERS", n, 1);
    ts_stack_ok("stop broker");
    ts_stack_ok("start broker");
    reload_env("KAFKA_BOOTSTRAP_SERVERS");
}

/* How many brokers the cluster's metadata names, and the replicas of
 * raw.order-events' partition 0. */
static rd_kafka_t *metadata_client(void) {
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    assert_int_equal(rd_kafka_conf_set(conf, "bootstrap.servers",
                                       ts_env("KAFKA_BOOTSTRAP_SERVERS"), err, sizeof err),
                     RD_KAFKA_CONF_OK);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    assert_non_null(rk);
    return rk;
}

/* The leader of each partition of the system's topics, as the metadata says
 * (topic t's partition p at [t * MAX_PARTITIONS + p]; 0 when not named). */
#define MAX_PARTITIONS 16
typedef int32_t leaders_t[DETA_TOPICS_COUNT * MAX_PARTITIONS];
static leaders_t preferred; /* as the cluster first chose them */

static void leaders_now(leaders_t out) {
    memset(out, 0, sizeof(leaders_t));
    rd_kafka_t *rk = metadata_client();
    const struct rd_kafka_metadata *md = NULL;
    assert_int_equal(rd_kafka_metadata(rk, 1, NULL, &md, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
    for (int i = 0; i < md->topic_cnt; i++)
        for (int t = 0; t < DETA_TOPICS_COUNT; t++) {
            if (strcmp(md->topics[i].topic, deta_topics_all[t]) != 0)
                continue;
            for (int k = 0; k < md->topics[i].partition_cnt; k++) {
                int p = md->topics[i].partitions[k].id;
                if (p >= 0 && p < MAX_PARTITIONS)
                    out[t * MAX_PARTITIONS + p] = md->topics[i].partitions[k].leader;
            }
        }
    rd_kafka_metadata_destroy(md);
    rd_kafka_destroy(rk);
}

/* Waits up to 10 s until the metadata agrees with want (one broker for every
 * partition when only is > 0, else the table want); fails the test otherwise.
 * avoid > 0: no partition may be led by that broker. */
static void await_leaders(int32_t only, int32_t avoid, const leaders_t want, const char *what) {
    leaders_t now;
    for (int waited = 0;; waited += 200) {
        leaders_now(now);
        bool ok = true;
        for (int i = 0; i < DETA_TOPICS_COUNT * MAX_PARTITIONS && ok; i++) {
            if (want && !want[i])
                continue;
            if (!want && !now[i])
                continue;
            if (only > 0)
                ok = now[i] == only;
            else if (avoid > 0)
                ok = now[i] != avoid && now[i] != 0;
            else
                ok = now[i] == want[i];
        }
        if (ok)
            return;
        if (waited > 10000)
            fail_msg("the partitions' leaders are not %s after 10 s", what);
        ts_sleep_ms(200);
    }
}

static void cluster_shape(int *brokers, int *replicas) {
    rd_kafka_t *rk = metadata_client();
    const struct rd_kafka_metadata *md = NULL;
    assert_int_equal(rd_kafka_metadata(rk, 1, NULL, &md, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
    *brokers = md->broker_cnt;
    *replicas = -1;
    for (int i = 0; i < md->topic_cnt; i++)
        if (strcmp(md->topics[i].topic, DETA_TOPIC_ORDER_EVENTS) == 0 &&
            md->topics[i].partition_cnt > 0)
            *replicas = md->topics[i].partitions[0].replica_cnt;
    rd_kafka_metadata_destroy(md);
    rd_kafka_destroy(rk);
}

static int three_brokers(void **state) {
    (void)state;
    int brokers = 0, replicas = 0;
    cluster_shape(&brokers, &replicas);
    if (brokers != 3) {
        restart_broker("3");
        if (!ts_stack_heal(HEAL_MS))
            return -1;
        cluster_shape(&brokers, &replicas);
    }
    if (brokers != 3 || replicas != 3) {
        fprintf(stderr, "the cluster has %d brokers, %d replicas of a partition\n", brokers,
                replicas);
        return -1;
    }
    leaders_now(preferred);
    return 0;
}

/* Every test leaves every broker up and the leaders where the cluster put them. */
static int heal(void **state) {
    (void)state;
    placer_join(&placer);
    ts_stack("broker clear");
    ts_stack("broker preferred");
    return ts_stack_heal(HEAL_MS) ? 0 : -1;
}

/* GET /actuator/health of each service: 200, UP, components.kafka UP. */
static void every_service_up(void) {
    for (size_t i = 0; i < 5; i++) {
        ts_http_resp_t r;
        if (!ts_http_try("GET", ts_service_urls[i], "/actuator/health", NULL, NULL, 10000, &r))
            fail_msg("%s: no answer", ts_services[i]);
        json_t *kafka = json_object_get(json_object_get(r.json, "components"), "kafka");
        const char *status = json_string_value(json_object_get(r.json, "status"));
        const char *k = json_string_value(json_object_get(kafka, "status"));
        if (r.status != 200 || !status || strcmp(status, "UP") != 0 || !k ||
            strcmp(k, "UP") != 0)
            fail_msg("%s with one broker down: %ld %s", ts_services[i], r.status, r.body);
        ts_http_resp_free(&r);
    }
}

static void leaders_move_while_orders_flow(void **state) {
    (void)state;
    placer_t *p = placer_start("failover-leaders");
    placer_reached(p, 4);
    ts_stack_ok("broker leader all all 2");
    await_leaders(2, 0, NULL, "all on broker 2");
    placer_reached(p, 10);
    ts_stack_ok("broker leader all all 3");
    await_leaders(3, 0, NULL, "all on broker 3");
    placer_reached(p, 16);
    ts_stack_ok("broker preferred");
    await_leaders(0, 0, preferred, "back where the cluster first put them");
    placer_finish(p);
}

static void one_broker_down_and_back(void **state) {
    (void)state;
    placer_t *p = placer_start("failover-down");
    placer_reached(p, 4);
    ts_stack_ok("broker down 1");
    await_leaders(0, 1, NULL, "off broker 1");
    every_service_up();
    placer_reached(p, 16);
    every_service_up();
    /* The orders placed so far, some of them during the outage, complete
     * without broker 1. */
    int placed = atomic_load(&p->placed);
    if (!ts_orders_await(p->ids, (size_t)placed, DETA_STATE_DELIVERED, END_WAIT_MS))
        fail_msg("the orders placed with broker 1 down did not complete without it");
    every_service_up();
    ts_stack_ok("broker up 1");
    ts_stack_ok("broker preferred");
    await_leaders(0, 0, preferred, "back where the cluster first put them");
    placer_finish(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(leaders_move_while_orders_flow, heal),
        cmocka_unit_test_teardown(one_broker_down_and_back, heal),
    };
    return cmocka_run_group_tests(tests, three_brokers, NULL);
}
