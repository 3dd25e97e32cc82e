/*
 * test_payment_exactly_once.c - one gateway charge per order, whatever fails
 * after the charge: payment-service on the shared test stack, with the
 * simulated gateway's ledger (PAYMENT_GATEWAY_LEDGER, from stack.env) as the
 * bank's own count of charges.
 *
 *   postgres killed while gateway calls are in flight (a 2 s gateway, 40
 *             orders, at least 20 calls waiting): once Postgres is back every
 *             order is paid, with exactly one charge each in the ledger and as
 *             many calls in the service's counter as orders;
 *   payment-service killed (SIGKILL) after its charges and before their
 *             answers: the next instance finds the attempts, looks the charges
 *             up and records them, charging none again;
 *   the record refused after the charge, one order at a time, by a transient
 *             error (57014), by one that is not (23514), and by a unique
 *             violation that is not the payment's twin (23505), raised by a
 *             trigger for these orders'
 *             customers: the record is retried in place, nothing is
 *             dead-lettered, and once the trigger goes each order is paid with
 *             one charge; and a service stopped (SIGTERM) while it retries such
 *             a record leaves the attempt to the next instance, which records
 *             it without a second charge;
 *   a commit whose answer is lost (a relay to Postgres, tests/support/pgcut.c,
 *             closes the connection after the record's COMMIT went through): the
 *             retried record finds the payment it stored itself and counts it as
 *             recorded, not as a duplicate, with one charge.
 *
 * Every test's teardown brings the stack back whole and healthy, with the
 * stack's own payment settings.
 */
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/wait.h>

#include <jansson.h>

#include "deta/topics.h"
#include "pgcut.h"
#include "testsupport.h"

#define SLOW_ORDERS 40
#define WAIT_MS 180000
#define HEAL_MS 120000

/* ---- the orders and what became of them ---- */

/* A fresh order's inventory.reserved (malloc'd text). */
static char *reserved_event(char order[37], const char *customer) {
    char event_id[37];
    ts_uuid(order);
    json_t *payload = json_pack("{s:s, s:s, s:s, s:s, s:s, s:[{s:s, s:i}], s:s}", "orderId",
                                order, "reservationId", "res-fault", "customerId", customer,
                                "totalAmount", "7.00", "currency", "EUR", "items", "itemId",
                                "sku-1", "quantity", 1, "reservedAt", "2026-11-25T12:00:00.000Z");
    assert_non_null(payload);
    return ts_event(DETA_EVT_INVENTORY_RESERVED, order, NULL, payload, event_id);
}

/* The same, on raw.inventory-events. */
static void inject_reserved(char order[37], const char *customer) {
    char *text = reserved_event(order, customer);
    ts_kafka_produce(DETA_TOPIC_INVENTORY_EVENTS, order, text);
    free(text);
}

static long rows_of(const char *table, const char *order) {
    PGconn *db = ts_pg("delivery_eta");
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE order_id = $1", table);
    const char *params[] = {order};
    long n = ts_pg_long(db, sql, 1, params);
    PQfinish(db);
    return n;
}

/* Waits until every order has its payment row; fails naming the first without. */
static void await_paid(char (*orders)[37], int n) {
    for (int i = 0; i < n; i++)
        for (int waited = 0; rows_of("payments", orders[i]) != 1; waited += 250) {
            if (waited > WAIT_MS)
                fail_msg("order %s was never paid", orders[i]);
            ts_sleep_ms(250);
        }
}

/* An order whose payment event is on the topic `count` times: the relay publishes
 * at least once (docs/architecture.md), so a kill -9 between its send and its
 * confirmation sends that event again, with the same event id, which consumers take
 * once. Fails unless every copy carries one and the same event id. */
static void expect_one_event_id(const char *order, int count) {
    ts_kafka_msg_t msgs[8];
    int n = ts_kafka_collect(DETA_TOPIC_PAYMENT_EVENTS, order, count, 10000, msgs, 8);
    char first[64] = "";
    bool same = n == count && n > 0;
    for (int i = 0; i < n; i++) {
        json_t *v = json_loads(msgs[i].value, 0, NULL);
        const char *id = json_string_value(json_object_get(v, "eventId"));
        if (i == 0 && id)
            snprintf(first, sizeof first, "%s", id);
        same = same && id && strcmp(id, first) == 0;
        json_decref(v);
        ts_kafka_msg_free(&msgs[i]);
    }
    if (!same)
        fail_msg("order %s has %d payment events, not one event id", order, count);
    printf("# order %s: its payment event %s was published %d times (at least once)\n", order,
           first, count);
}

/* Exactly one charge each, no attempt left, one payment event (id) each, and nothing
 * dead-lettered. */
static void expect_charged_once(char (*orders)[37], int n) {
    for (int i = 0; i < n; i++) {
        int charges = ts_ledger_charges(orders[i]);
        if (charges != 1)
            fail_msg("order %s was charged %d times", orders[i], charges);
        assert_int_equal(rows_of("payment_attempts", orders[i]), 0);
    }
    int *events = calloc((size_t)n, sizeof *events);
    assert_non_null(events);
    ts_kafka_counts_by_key(DETA_TOPIC_PAYMENT_EVENTS, orders, (size_t)n, events, 10000);
    for (int i = 0; i < n; i++)
        if (events[i] != 1)
            expect_one_event_id(orders[i], events[i]);
    free(events);
    assert_int_equal(ts_kafka_count_keys(DETA_TOPIC_DLQ_INVENTORY_EVENTS, orders, (size_t)n, 5000),
                     0);
}

static double payment_metric(const char *series) {
    return ts_metric("PAYMENT_SERVICE_URL", series);
}

/* payment-service again, with the gateway latency given (NULL: the stack's). */
static void restart_payment(const char *latency_ms) {
    assert_int_equal(ts_stack("stop payment-service"), 0);
    if (latency_ms) {
        setenv("PAYMENT_GATEWAY_LATENCY_MS", latency_ms, 1);
        setenv("PAYMENT_WORKERS", "40", 1);
    } else {
        unsetenv("PAYMENT_GATEWAY_LATENCY_MS");
        unsetenv("PAYMENT_WORKERS");
    }
    assert_int_equal(ts_stack("start payment-service"), 0);
}

static pid_t child;   /* a payment-service of the test's own */
static pgcut_t *cut; /* its way to Postgres */

static int heal(void **state) {
    (void)state;
    if (child > 0) {
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
        child = 0;
    }
    pgcut_stop(cut);
    cut = NULL;
    unsetenv("PAYMENT_GATEWAY_LATENCY_MS");
    unsetenv("PAYMENT_WORKERS");
    PGconn *db = ts_pg("delivery_eta");
    PQclear(PQexec(db, "DROP TRIGGER IF EXISTS refuse_record ON payments"));
    PQfinish(db);
    ts_stack("stop payment-service");
    return ts_stack_heal(HEAL_MS) ? 0 : -1;
}

/* ---- Postgres killed while calls are in flight ---- */

static void postgres_killed_during_calls_charges_each_order_once(void **state) {
    (void)state;
    restart_payment("2000");
    double calls = payment_metric("payment_gateway_calls_total");
    char orders[SLOW_ORDERS][37];
    const char *keys[SLOW_ORDERS], *texts[SLOW_ORDERS];
    for (int i = 0; i < SLOW_ORDERS; i++) {
        texts[i] = reserved_event(orders[i], "cust-pgkill");
        keys[i] = orders[i];
    }
    ts_kafka_produce_many(DETA_TOPIC_INVENTORY_EVENTS, keys, texts, SLOW_ORDERS);
    for (int i = 0; i < SLOW_ORDERS; i++)
        free((char *)texts[i]);
    double in_flight = 0, most = 0;
    for (int waited = 0; waited < 60000 && in_flight < SLOW_ORDERS / 2; waited += 20) {
        in_flight = payment_metric("payment_gateway_calls_in_flight");
        most = in_flight > most ? in_flight : most;
        ts_sleep_ms(20);
    }
    if (in_flight < SLOW_ORDERS / 2)
        fail_msg("at most %g gateway calls were in flight at once", most);
    assert_int_equal(ts_stack("kill postgres"), 0);
    ts_sleep_ms(5000);
    assert_int_equal(ts_stack("start postgres"), 0);

    await_paid(orders, SLOW_ORDERS);
    double made = payment_metric("payment_gateway_calls_total") - calls;
    if (made != SLOW_ORDERS)
        fail_msg("%d orders took %g gateway calls", SLOW_ORDERS, made);
    expect_charged_once(orders, SLOW_ORDERS);
}

/* ---- payment-service killed between its charges and their answers ---- */

static void killed_after_charging_resumes_without_charging_again(void **state) {
    (void)state;
    enum { N = 6 };
    restart_payment("4000"); /* charged at 2 s, answered at 4 s */
    char orders[N][37];
    for (int i = 0; i < N; i++)
        inject_reserved(orders[i], "cust-kill9");
    for (int i = 0; i < N; i++)
        for (int waited = 0; ts_ledger_charges(orders[i]) == 0; waited += 20) {
            if (waited > 60000)
                fail_msg("order %s was never charged", orders[i]);
            ts_sleep_ms(20);
        }
    assert_int_equal(ts_stack("kill payment-service"), 0);
    int unanswered = 0; /* charged, but killed before the answer was recorded */
    for (int i = 0; i < N; i++)
        unanswered += rows_of("payments", orders[i]) == 0;
    if (unanswered == 0)
        fail_msg("every charge was recorded before the kill: nothing was left to resume");
    restart_payment(NULL);

    await_paid(orders, N);
    expect_charged_once(orders, N);
    if (payment_metric("payment_gateway_lookups_total") < unanswered)
        fail_msg("the new instance looked up %g charges, %d were left unrecorded",
                 payment_metric("payment_gateway_lookups_total"), unanswered);
    assert_true(payment_metric("payment_gateway_calls_total") == 0);
}

/* ---- the record refused after the charge ---- */

/* A trigger that refuses the payments of customers cust-refuse-<SQLSTATE> with
 * that SQLSTATE. */
static void refuse_records(void) {
    PGconn *db = ts_pg("delivery_eta");
    PGresult *r = PQexec(db,
                         "CREATE OR REPLACE FUNCTION refuse_record() RETURNS trigger AS $$"
                         "BEGIN"
                         "  IF NEW.customer_id LIKE 'cust-refuse-%' THEN"
                         "    RAISE EXCEPTION 'refused for the test'"
                         "      USING ERRCODE = substr(NEW.customer_id, 13, 5);"
                         "  END IF;"
                         "  RETURN NEW;"
                         "END $$ LANGUAGE plpgsql;"
                         "DROP TRIGGER IF EXISTS refuse_record ON payments;"
                         "CREATE TRIGGER refuse_record BEFORE INSERT ON payments"
                         "  FOR EACH ROW EXECUTE FUNCTION refuse_record()");
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("trigger: %s", PQerrorMessage(db));
    PQclear(r);
    PQfinish(db);
}

static void accept_records(void) {
    PGconn *db = ts_pg("delivery_eta");
    PQclear(PQexec(db, "DROP TRIGGER IF EXISTS refuse_record ON payments"));
    PQfinish(db);
}

/* One order of the customer given, refused by the trigger: its attempt begun,
 * its record retried in place (three tries at least) with one charge and no
 * second call, then, once the trigger goes, paid with that one charge. */
static void refused_then_recorded(const char *customer) {
    refuse_records();
    double calls = payment_metric("payment_gateway_calls_total");
    double retries = payment_metric("payment_record_retries_total");
    char order[1][37];
    inject_reserved(order[0], customer);
    for (int waited = 0; payment_metric("payment_record_retries_total") < retries + 3 ||
                         rows_of("payment_attempts", order[0]) == 0;
         waited += 100) {
        if (waited > 60000)
            fail_msg("%s: the refused record was not retried (%g tries again, attempt rows %ld)",
                     customer, payment_metric("payment_record_retries_total") - retries,
                     rows_of("payment_attempts", order[0]));
        ts_sleep_ms(100);
    }
    ts_sleep_ms(2000);
    assert_int_equal(rows_of("payments", order[0]), 0);
    assert_int_equal(rows_of("payment_attempts", order[0]), 1);
    assert_int_equal(ts_ledger_charges(order[0]), 1);
    assert_true(payment_metric("payment_gateway_calls_total") == calls + 1);
    accept_records();
    await_paid(order, 1);
    expect_charged_once(order, 1);
    assert_true(payment_metric("payment_gateway_calls_total") == calls + 1);
}

/* One order at a time: a record retried in place holds up its consumer worker
 * (hash(key) % PAYMENT_WORKERS), and so every later order of that worker, until
 * it commits. Two of three orders at once shared a worker about one run in
 * eleven (32 workers), and the second never began while the trigger stood. */
static void refused_records_are_retried_not_charged_again(void **state) {
    (void)state;
    restart_payment(NULL);
    refused_then_recorded("cust-refuse-57014"); /* a statement timeout */
    refused_then_recorded("cust-refuse-23514"); /* a check violation */
    refused_then_recorded("cust-refuse-23505"); /* a unique violation, not the twin's */
}

static void stopped_while_retrying_a_record_leaves_it_to_the_next(void **state) {
    (void)state;
    restart_payment(NULL);
    refuse_records();
    double retries = payment_metric("payment_record_retries_total");
    char order[1][37];
    inject_reserved(order[0], "cust-refuse-57014");
    for (int waited = 0; payment_metric("payment_record_retries_total") < retries + 2;
         waited += 100) {
        if (waited > 60000)
            fail_msg("the refused record was not retried");
        ts_sleep_ms(100);
    }
    assert_int_equal(ts_stack("stop payment-service"), 0); /* SIGTERM, a graceful stop */
    assert_int_equal(rows_of("payments", order[0]), 0);
    assert_int_equal(rows_of("payment_attempts", order[0]), 1);
    accept_records();
    assert_int_equal(ts_stack("start payment-service"), 0);
    await_paid(order, 1);
    expect_charged_once(order, 1);
    assert_true(payment_metric("payment_gateway_calls_total") == 0);
    assert_true(payment_metric("payment_gateway_lookups_total") >= 1);
}

/* ---- a commit whose answer is lost ---- */

static void await_child_healthy(void) {
    int got = ts_service_await_healthy(child, "PAYMENT_SERVICE_URL", 30000);
    if (got == 0) {
        child = 0;
        fail_msg("payment-service exited during startup");
    }
    if (got < 0)
        fail_msg("payment-service was not healthy in 30 s");
}

static void lost_commit_answer_is_recorded_not_a_duplicate(void **state) {
    (void)state;
    assert_int_equal(ts_stack("stop payment-service"), 0);
    int port = 0;
    char pg_socket[256];
    snprintf(pg_socket, sizeof pg_socket, "%s/run/.s.PGSQL.%s", ts_env("STACK_DIR"),
             ts_env("PGPORT"));
    cut = pgcut_start(pg_socket, &port);
    assert_non_null(cut);
    static char pgport[32];
    snprintf(pgport, sizeof pgport, "PGPORT=%d", port);
    /* Plain to the relay (it reads the statements), which is plain to the socket. */
    const char *extra[] = {pgport, "PGHOST=127.0.0.1", "PGSSLMODE=disable",
                           "PAYMENT_DB_CONNECTIONS=1", NULL};
    child = ts_service_spawn("payment-service", "PAYMENT_SERVICE_PORT", extra);
    await_child_healthy();

    double processed = payment_metric("payment_processed_total");
    double duplicates = payment_metric("payment_duplicate_total");
    /* The record's transaction is the one whose statements carry its event. */
    pgcut_arm(cut, "payment.authorized");
    char order[1][37];
    inject_reserved(order[0], "cust-lost-commit");
    await_paid(order, 1);
    for (int waited = 0; !pgcut_done(cut); waited += 100) {
        if (waited > 30000)
            fail_msg("no COMMIT answer was cut");
        ts_sleep_ms(100);
    }
    for (int waited = 0; payment_metric("payment_processed_total") == processed &&
                         payment_metric("payment_duplicate_total") == duplicates;
         waited += 100) {
        if (waited > 90000)
            fail_msg("the payment was never counted");
        ts_sleep_ms(100);
    }
    assert_true(payment_metric("payment_processed_total") == processed + 1);
    assert_true(payment_metric("payment_duplicate_total") == duplicates);
    expect_charged_once(order, 1);
}

int main(void) {
    /* TEST_FILTER runs only the tests whose names match (cmocka's pattern). */
    if (getenv("TEST_FILTER"))
        cmocka_set_test_filter(getenv("TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(postgres_killed_during_calls_charges_each_order_once, heal),
        cmocka_unit_test_teardown(killed_after_charging_resumes_without_charging_again, heal),
        cmocka_unit_test_teardown(refused_records_are_retried_not_charged_again, heal),
        cmocka_unit_test_teardown(stopped_while_retrying_a_record_leaves_it_to_the_next, heal),
        cmocka_unit_test_teardown(lost_commit_answer_is_recorded_not_a_duplicate, heal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
