/*
 * test_shutdown.c - SIGTERM to a service under load, on the shared test stack.
 *
 * The service under test is started by this test as its own child (the stack's
 * instance is stopped first and started again at the end), so that the test
 * sees the real exit status and how long the process took to exit. Its output
 * goes to the stack's log of that service, where scripts/test.sh looks for
 * sanitizer reports.
 *
 *   order-service, orders posted without pause: it exits 0 within the bound
 *   (DETA_SHUTDOWN_TIMEOUT_MS, 10 s); new connections are refused while it is
 *   still finishing (intake stops first); every order that got 201 is on
 *   raw.order-events exactly once (its row was published before the exit, or by
 *   the next instance, never twice).
 *
 *   inventory-service, consuming the orders posted without pause: it exits 0
 *   within the bound; the stack's instance, started after it, reprocesses none of
 *   what it had finished: deta_events_total{outcome="duplicate"} of the new
 *   process stays 0 once every order is reserved. Had the stopping consumer not
 *   committed its offsets, the messages handled since the last auto-commit (up to
 *   5 s of them, under load always some) would come again and be counted as
 *   duplicates: it claims no event ids, and each would find its reservation (or
 *   its sale) on the order's own row.
 *
 *   out of time: order-service with DETA_SHUTDOWN_TIMEOUT_MS=3000, the brokers
 *   down and an order in its outbox: it exits with status 1 (not 0, and not
 *   hanging) within the bound, and the order is published once after the
 *   brokers and the stack's instance are back.
 *
 * Each test's teardown kills a child still running and heals the stack.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testsupport.h"

#define BOUND_MS 10000
#define HEAL_MS 120000
#define MAX_ORDERS 4000

static pid_t child;          /* the service this test started, while it runs */
static void (*load_cleanup)(void); /* frees a load a failed test left behind */

static long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static int heal(void **state) {
    (void)state;
    if (child > 0) {
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
        child = 0;
    }
    if (load_cleanup)
        load_cleanup();
    load_cleanup = NULL;
    return ts_stack_heal(HEAL_MS) ? 0 : -1;
}

/* ---- a service of our own ---- */

/* Waits until the child answers /actuator/health with 200. */
static void await_healthy(pid_t pid, const char *url_var, int timeout_ms) {
    int got = ts_service_await_healthy(pid, url_var, timeout_ms);
    if (got == 0) {
        child = 0; /* it exited: nothing left for the teardown to stop */
        fail_msg("the service exited during startup");
    }
    if (got < 0)
        fail_msg("the service was not healthy after %d ms", timeout_ms);
}

/* SIGTERM, then waits for the exit; returns the milliseconds it took and the
 * wait status in *status. Fails (the teardown kills it) after limit_ms. */
static long terminate(pid_t pid, int *status, int limit_ms) {
    long t0 = now_ms();
    assert_int_equal(kill(pid, SIGTERM), 0);
    while (now_ms() - t0 < limit_ms) {
        pid_t got = waitpid(pid, status, WNOHANG);
        if (got == pid) {
            child = 0;
            return now_ms() - t0;
        }
        ts_sleep_ms(10);
    }
    fail_msg("still running %d ms after SIGTERM", limit_ms);
    return -1;
}

static void assert_exit_status(int status, int want) {
    if (!WIFEXITED(status))
        fail_msg("the service did not exit normally (wait status %d, signal %d)", status,
                 WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    if (WEXITSTATUS(status) != want)
        fail_msg("exit status %d, expected %d", WEXITSTATUS(status), want);
}

/* ---- load: orders posted one after the other on a thread ---- */

typedef struct load {
    char item[64];
    int pace_ms; /* pause between orders: the consumers downstream keep up */
    pthread_t thread;
    bool running;
    atomic_bool stop;
    atomic_bool target_gone; /* set once the service under test has exited */
    atomic_long since_ms;    /* set when the service gets its SIGTERM */
    pthread_mutex_t lock;
    char (*ids)[37]; /* orders that got 201 */
    size_t n;
    int refused_while_alive; /* no answer after the SIGTERM, the process still there */
    int server_errors;       /* 5xx */
} load_t;

static void *load_main(void *arg) {
    load_t *l = arg;
    while (!atomic_load(&l->stop)) {
        char id[37];
        long status = ts_order_place("shutdown-customer", l->item, 1, id);
        pthread_mutex_lock(&l->lock);
        if (status == 201 && l->n < MAX_ORDERS)
            snprintf(l->ids[l->n++], 37, "%s", id);
        else if (status == 0 && atomic_load(&l->since_ms) && !atomic_load(&l->target_gone))
            l->refused_while_alive++;
        else if (status >= 500)
            l->server_errors++;
        pthread_mutex_unlock(&l->lock);
        ts_sleep_ms(status == 0 && l->pace_ms < 20 ? 20 : l->pace_ms);
    }
    return NULL;
}

static load_t the_load; /* one at a time */

static void load_stop(load_t *l);
static void load_free(load_t *l);

static void cleanup_the_load(void) {
    load_stop(&the_load);
    load_free(&the_load);
}

static void load_start(load_t *l, const char *tag, int pace_ms) {
    memset(l, 0, sizeof *l);
    l->pace_ms = pace_ms;
    char uuid[37];
    ts_uuid(uuid);
    snprintf(l->item, sizeof l->item, "%s-%.8s", tag, uuid);
    ts_stock_set(l->item, 1000000);
    l->ids = calloc(MAX_ORDERS, sizeof *l->ids);
    assert_non_null(l->ids);
    pthread_mutex_init(&l->lock, NULL);
    atomic_init(&l->stop, false);
    atomic_init(&l->target_gone, false);
    atomic_init(&l->since_ms, 0);
    assert_int_equal(pthread_create(&l->thread, NULL, load_main, l), 0);
    l->running = true;
    load_cleanup = cleanup_the_load;
}

static void load_stop(load_t *l) {
    if (!l->running)
        return;
    atomic_store(&l->stop, true);
    pthread_join(l->thread, NULL);
    l->running = false;
}

static void load_free(load_t *l) {
    if (!l->ids)
        return;
    pthread_mutex_destroy(&l->lock);
    free(l->ids);
    l->ids = NULL;
    load_cleanup = NULL;
}

/* Waits until every order of ids has count rows in db.table (by order_id). */
static void await_rows(const char *db, const char *table, char (*ids)[37], size_t n,
                       int timeout_ms) {
    long deadline = now_ms() + timeout_ms;
    PGconn *c = ts_pg(db);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE order_id = $1", table);
    for (size_t i = 0; i < n; i++) {
        const char *params[] = {ids[i]};
        while (ts_pg_long(c, sql, 1, params) != 1) {
            if (now_ms() > deadline) {
                PQfinish(c);
                fail_msg("order %s has no row in %s.%s after %d ms", ids[i], db, table,
                         timeout_ms);
            }
            ts_sleep_ms(200);
        }
    }
    PQfinish(c);
}

/* ---- tests ---- */

static void order_service_drains_and_exits_zero(void **state) {
    (void)state;
    assert_int_equal(ts_stack("stop order-service"), 0);
    child = ts_service_spawn("order-service", "ORDER_SERVICE_PORT", NULL);
    await_healthy(child, "ORDER_SERVICE_URL", 30000);

    load_start(&the_load, "shutdown-orders", 5);
    ts_sleep_ms(3000);
    atomic_store(&the_load.since_ms, now_ms());
    int status = 0;
    long took = terminate(child, &status, BOUND_MS + 5000);
    atomic_store(&the_load.target_gone, true);
    load_stop(&the_load);
    fprintf(stderr, "order-service: exited %ld ms after SIGTERM (status %d); %zu orders got "
                    "201, %d requests refused while it finished, %d 5xx\n",
            took, WIFEXITED(status) ? WEXITSTATUS(status) : -1, the_load.n,
            the_load.refused_while_alive, the_load.server_errors);
    assert_exit_status(status, 0);
    assert_true(took < BOUND_MS);
    assert_true(the_load.n >= 10);
    assert_true(the_load.refused_while_alive >= 1);
    assert_int_equal(the_load.server_errors, 0);

    assert_int_equal(ts_stack("start order-service"), 0);
    int *counts = calloc(the_load.n, sizeof *counts);
    assert_non_null(counts);
    ts_kafka_counts_by_key("raw.order-events", the_load.ids, the_load.n, counts, 60000);
    int wrong = 0;
    for (size_t i = 0; i < the_load.n; i++)
        if (counts[i] != 1 && wrong++ < 5)
            fprintf(stderr, "order %s is on raw.order-events %d times\n", the_load.ids[i],
                    counts[i]);
    free(counts);
    load_free(&the_load);
    assert_int_equal(wrong, 0);
}

static double duplicates_of(const char *type) {
    char series[160];
    snprintf(series, sizeof series, "deta_events_total{type=\"%s\",outcome=\"duplicate\"}", type);
    return ts_metric("INVENTORY_SERVICE_URL", series);
}

static void inventory_commits_on_shutdown(void **state) {
    (void)state;
    assert_int_equal(ts_stack("stop inventory-service"), 0);
    child = ts_service_spawn("inventory-service", "INVENTORY_SERVICE_PORT", NULL);
    await_healthy(child, "INVENTORY_SERVICE_URL", 30000);
    /* Its consumers of orders and of payments (one group, a topic each) have
     * their partitions. */
#define ASSIGNED(topic) \
    "deta_consumer_assigned_partitions{group=\"inventory-service\",topic=\"" topic "\"}"
    static const char *const assigned[] = {ASSIGNED("raw.order-events"),
                                           ASSIGNED("raw.payment-events")};
#undef ASSIGNED
    for (size_t t = 0; t < 2; t++) {
        for (int i = 0; i < 300 && ts_metric("INVENTORY_SERVICE_URL", assigned[t]) <= 0; i++)
            ts_sleep_ms(200);
        assert_true(ts_metric("INVENTORY_SERVICE_URL", assigned[t]) > 0);
    }

    load_start(&the_load, "shutdown-inventory", 20);
    ts_sleep_ms(4000); /* it handles them as they come */
    int status = 0;
    long took = terminate(child, &status, BOUND_MS + 5000);
    ts_sleep_ms(1000);
    load_stop(&the_load);
    fprintf(stderr, "inventory-service: exited %ld ms after SIGTERM (status %d); %zu orders\n",
            took, WIFEXITED(status) ? WEXITSTATUS(status) : -1, the_load.n);
    assert_exit_status(status, 0);
    assert_true(took < BOUND_MS);
    assert_true(the_load.n >= 10);

    assert_int_equal(ts_stack("start inventory-service"), 0);
    await_rows("inventory_db", "reservations", the_load.ids, the_load.n, 120000);
    ts_sleep_ms(1000);
    double dup_orders = duplicates_of("order.created");
    double dup_payments = duplicates_of("payment.authorized");
    fprintf(stderr, "inventory-service after the restart: duplicates order.created %g, "
                    "payment.authorized %g (-1: none counted)\n",
            dup_orders, dup_payments);
    assert_true(dup_orders <= 0);
    assert_true(dup_payments <= 0);
    assert_int_equal(
        ts_orders_rows_not("inventory_db", "reservations", the_load.ids, the_load.n, 1), 0);
    load_free(&the_load);
}

static void out_of_time_exits_nonzero(void **state) {
    (void)state;
    assert_int_equal(ts_stack("stop order-service"), 0);
    static const char *const extra[] = {"DETA_SHUTDOWN_TIMEOUT_MS=3000", NULL};
    child = ts_service_spawn("order-service", "ORDER_SERVICE_PORT", extra);
    await_healthy(child, "ORDER_SERVICE_URL", 30000);
    char uuid[37], item[64];
    ts_uuid(uuid);
    snprintf(item, sizeof item, "shutdown-late-%.8s", uuid);
    ts_stock_set(item, 10);

    assert_int_equal(ts_stack("broker down all"), 0);
    ts_sleep_ms(2000);
    char ids[1][37];
    assert_int_equal(ts_order_place("shutdown-customer", item, 1, ids[0]), 201);
    ts_sleep_ms(500); /* the relay is in a send that cannot finish */
    int status = 0;
    long took = terminate(child, &status, 3000 + 5000);
    fprintf(stderr, "order-service with the brokers down: exited %ld ms after SIGTERM "
                    "(status %d)\n",
            took, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    assert_exit_status(status, 1);
    assert_true(took < 3000 + 500);

    assert_int_equal(ts_stack("broker up all"), 0);
    assert_int_equal(ts_stack("start order-service"), 0);
    int counts[1] = {0};
    for (int i = 0; i < 30 && counts[0] == 0; i++) {
        ts_sleep_ms(500);
        ts_kafka_counts_by_key("raw.order-events", ids, 1, counts, 60000);
    }
    assert_int_equal(counts[0], 1);
}

static int setup(void **state) {
    (void)state;
    return ts_stack_heal(HEAL_MS) ? 0 : -1;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(order_service_drains_and_exits_zero, heal),
        cmocka_unit_test_teardown(inventory_commits_on_shutdown, heal),
        cmocka_unit_test_teardown(out_of_time_exits_nonzero, heal),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
