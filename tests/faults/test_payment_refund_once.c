/*
 * test_payment_refund_once.c - one refund per cancelled order, whatever fails
 * after the gateway refunded: payment-service on the shared test stack, with
 * the simulated gateway's ledger (PAYMENT_GATEWAY_LEDGER) as the bank's count.
 *
 *   payment-service killed (SIGKILL) after the gateway wrote its refunds and
 *             before their records committed (a 4 s gateway: the ledger line
 *             at 2 s, the answer at 4 s): the next instance finds the
 *             refund_attempts rows, looks the refunds up, and records each once
 *             with one payment.refunded, refunding none again.
 *
 * The teardown brings the stack back whole, with the stack's own settings.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deta/topics.h"
#include "testsupport.h"

#define WAIT_MS 180000
#define HEAL_MS 120000
#define N 4

static long rows_of(const char *table, const char *order) {
    PGconn *db = ts_pg("delivery_eta");
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE order_id = $1", table);
    const char *params[] = {order};
    long n = ts_pg_long(db, sql, 1, params);
    PQfinish(db);
    return n;
}

static void await_rows(const char *table, char (*orders)[37], int n) {
    for (int i = 0; i < n; i++)
        for (int waited = 0; rows_of(table, orders[i]) != 1; waited += 250) {
            if (waited > WAIT_MS)
                fail_msg("order %s has no row in %s", orders[i], table);
            ts_sleep_ms(250);
        }
}

/* Refund lines of the ledger for the order (ts_ledger_charges counts charges). */
static int ledger_refunds(const char *order) {
    FILE *f = fopen(ts_env("PAYMENT_GATEWAY_LEDGER"), "r");
    if (!f)
        return 0;
    char line[512], want[64];
    snprintf(want, sizeof want, "refund %s ", order);
    int n = 0;
    while (fgets(line, sizeof line, f))
        n += strncmp(line, want, strlen(want)) == 0;
    fclose(f);
    return n;
}

static double payment_metric(const char *series) {
    return ts_metric("PAYMENT_SERVICE_URL", series);
}

static void restart_payment(const char *latency_ms) {
    assert_int_equal(ts_stack("stop payment-service"), 0);
    if (latency_ms)
        setenv("PAYMENT_GATEWAY_LATENCY_MS", latency_ms, 1);
    else
        unsetenv("PAYMENT_GATEWAY_LATENCY_MS");
    assert_int_equal(ts_stack("start payment-service"), 0);
}

static int heal(void **state) {
    (void)state;
    unsetenv("PAYMENT_GATEWAY_LATENCY_MS");
    ts_stack("stop payment-service");
    return ts_stack_heal(HEAL_MS) ? 0 : -1;
}

static void produce_event(const char *topic, const char *type, const char *order,
                          json_t *payload) {
    assert_non_null(payload);
    char *text = ts_event(type, order, NULL, payload, NULL);
    ts_kafka_produce(topic, order, text);
    free(text);
}

static void killed_after_refunding_resumes_without_refunding_again(void **state) {
    (void)state;
    char orders[N][37];
    restart_payment(NULL);
    for (int i = 0; i < N; i++) {
        ts_uuid(orders[i]);
        produce_event(DETA_TOPIC_INVENTORY_EVENTS, DETA_EVT_INVENTORY_RESERVED, orders[i],
                      json_pack("{s:s, s:s, s:s, s:s, s:s, s:[], s:s}", "orderId", orders[i],
                                "reservationId", "res-kill", "customerId", "cust-refund-kill",
                                "totalAmount", "9.10", "currency", "EUR", "items",
                                "reservedAt", "2026-11-25T12:00:00.000Z"));
    }
    await_rows("payments", orders, N);

    restart_payment("4000"); /* refunded at 2 s, answered at 4 s */
    for (int i = 0; i < N; i++)
        produce_event(DETA_TOPIC_DELIVERY_EVENTS, DETA_EVT_DELIVERY_CANCELLED, orders[i],
                      json_pack("{s:s, s:s, s:n, s:n, s:n, s:s, s:s, s:s}", "orderId", orders[i],
                                "stage", "NONE", "deliveryId", "driverId", "reason",
                                "paymentId", "unused", "requestedAt",
                                "2026-11-25T12:01:00.000Z", "cancelledAt",
                                "2026-11-25T12:01:02.000Z"));
    for (int i = 0; i < N; i++)
        for (int waited = 0; ledger_refunds(orders[i]) == 0; waited += 20) {
            if (waited > 60000)
                fail_msg("order %s was never refunded", orders[i]);
            ts_sleep_ms(20);
        }
    assert_int_equal(ts_stack("kill payment-service"), 0);
    int unanswered = 0; /* refunded, but killed before the record */
    for (int i = 0; i < N; i++)
        unanswered += rows_of("refunds", orders[i]) == 0;
    if (unanswered == 0)
        fail_msg("every refund was recorded before the kill: nothing was left to resume");
    restart_payment(NULL);

    await_rows("refunds", orders, N);
    int *events = calloc(N, sizeof *events);
    assert_non_null(events);
    for (int i = 0; i < N; i++) {
        int refunds = ledger_refunds(orders[i]);
        if (refunds != 1)
            fail_msg("order %s was refunded %d times", orders[i], refunds);
        assert_int_equal(ts_ledger_charges(orders[i]), 1);
        assert_int_equal(rows_of("refund_attempts", orders[i]), 0);
    }
    /* one payment.authorized and one payment.refunded each */
    ts_kafka_counts_by_key(DETA_TOPIC_PAYMENT_EVENTS, orders, N, events, 10000);
    for (int i = 0; i < N; i++)
        if (events[i] != 2)
            fail_msg("order %s has %d payment events, expected 2", orders[i], events[i]);
    free(events);
    if (payment_metric("payment_gateway_refund_lookups_total") < unanswered)
        fail_msg("the new instance looked up %g refunds, %d were left unrecorded",
                 payment_metric("payment_gateway_refund_lookups_total"), unanswered);
    assert_true(payment_metric("payment_gateway_refund_calls_total") == 0);
    assert_int_equal(ts_kafka_count_keys(DETA_TOPIC_DLQ_DELIVERY_EVENTS, orders, N, 5000), 0);
}

int main(void) {
    if (getenv("TEST_FILTER"))
        cmocka_set_test_filter(getenv("TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(killed_after_refunding_resumes_without_refunding_again, heal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
