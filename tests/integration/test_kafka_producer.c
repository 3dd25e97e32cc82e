/*
 * test_kafka_producer.c - the producer of deta/kafka.h under broker faults that
 * the stack's local broker cannot inject: a produce answered late, and a fatal
 * idempotence error.
 *
 * Why a cluster of its own: the local broker's control channel can take brokers
 * down and fail requests of every client alike, but cannot delay an answer, and
 * the stack's services share it. This file starts librdkafka's mock cluster (the
 * very code the local broker hosts) in the test process, one broker, and injects
 * the faults with rd_kafka_mock_broker_set_rtt() and
 * rd_kafka_mock_push_request_errors(). KAFKA_BOOTSTRAP_SERVERS is pointed at it,
 * so that deta_config_load() and testsupport's Kafka reader both use it.
 *
 * What is checked (issue #22):
 *   - a produce whose answer takes longer than the old message timeout (10 s) is
 *     acknowledged, not failed, and the partition holds the messages once each,
 *     in order (finding 11: a message given up by librdkafka is a gap that the
 *     relay's resend turns into reordering);
 *   - a caller that stops waiting and sends again while its earlier messages are
 *     still in flight (as the relay does after its timeout) does not pile copies
 *     behind them: the resend waits for the earlier reports, and what the broker
 *     acknowledged meanwhile is not published a second time (finding 11);
 *   - after a fatal idempotent-producer error the producer replaces its
 *     librdkafka handle: a later send is acknowledged and ping is up (finding 13).
 */
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deta/envelope.h"
#include "deta/kafka.h"
#include "deta/log.h"
#include "testsupport.h"

#define WAIT_MS 60000
#define PRODUCE_API_KEY 0 /* Kafka's ApiKey of Produce */

static rd_kafka_t *mock_rk; /* the handle the mock cluster lives in */
static rd_kafka_mock_cluster_t *mock;
static deta_config_t cfg;
static char run[DETA_UUID_LEN + 1];

static int setup(void **state) {
    (void)state;
    deta_log_init("it-kafka-producer", DETA_LOG_WARN);
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "0", err, sizeof err); /* no bootstrap: no warning */
    mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!mock_rk || !(mock = rd_kafka_mock_cluster_new(mock_rk, 1))) {
        fprintf(stderr, "mock cluster: %s\n", err);
        return -1;
    }
    setenv("KAFKA_BOOTSTRAP_SERVERS", rd_kafka_mock_cluster_bootstraps(mock), 1);
    if (deta_config_load(&cfg, "it-kafka-producer", err, sizeof err) != DETA_OK) {
        fprintf(stderr, "config: %s\n", err);
        return -1;
    }
    deta_uuid_new(run);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    rd_kafka_mock_cluster_destroy(mock);
    rd_kafka_destroy(mock_rk);
    return 0;
}

/* A topic of one partition for this test: the order checked is the log's. */
static const char *topic_for(const char *name, char *buf, size_t size) {
    snprintf(buf, size, "it-producer-%s-%.8s", name, run);
    assert_int_equal(rd_kafka_mock_topic_create(mock, buf, 1, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    return buf;
}

static deta_producer_t *producer_new(void) {
    char err[256];
    deta_producer_t *p = deta_producer_new(&cfg, err, sizeof err);
    if (!p)
        fail_msg("producer: %s", err);
    return p;
}

/* Sends values[0..n) with key "k" as one batch. */
static deta_err_t send_values(deta_producer_t *p, const char *topic, const char *const *values,
                              size_t n, int timeout_ms, size_t *nacked, char *err,
                              size_t errsize) {
    deta_kafka_out_t msgs[8];
    assert_true(n <= 8);
    for (size_t i = 0; i < n; i++)
        msgs[i] = (deta_kafka_out_t){
            .topic = topic, .key = "k", .value = values[i], .len = strlen(values[i])};
    return deta_producer_send_batch(p, msgs, n, timeout_ms, nacked, err, errsize);
}

static void send_ok(deta_producer_t *p, const char *topic, const char *value) {
    char err[256] = "";
    size_t nacked = 0;
    if (send_values(p, topic, &value, 1, WAIT_MS, &nacked, err, sizeof err) != DETA_OK)
        fail_msg("sending %s: %s", value, err);
}

/* The values of every message of topic, in log order, into got (at most max). */
static int log_values(const char *topic, char got[][16], int max) {
    ts_kafka_msg_t msgs[32];
    int want = ts_kafka_count(topic, "k", 15000);
    int n = ts_kafka_collect(topic, "k", want, 15000, msgs, 32);
    for (int i = 0; i < n; i++) {
        if (i < max)
            snprintf(got[i], sizeof got[i], "%s", msgs[i].value);
        ts_kafka_msg_free(&msgs[i]);
    }
    return n < max ? n : max;
}

/* Finding 11: the broker answers a produce after 12 s, more than the 10 s after
 * which librdkafka used to report the messages failed (while the broker may
 * well append them): now the send waits, and the log is 1..5 once, in order. */
static void test_late_answer_is_not_a_failure(void **state) {
    (void)state;
    char buf[96];
    const char *topic = topic_for("late", buf, sizeof buf);
    deta_producer_t *p = producer_new();
    send_ok(p, topic, "1");

    assert_int_equal(rd_kafka_mock_broker_set_rtt(mock, 1, 12000), RD_KAFKA_RESP_ERR_NO_ERROR);
    const char *values[] = {"2", "3", "4", "5"};
    char err[256] = "";
    size_t nacked = 0;
    deta_err_t rc = send_values(p, topic, values, 4, WAIT_MS, &nacked, err, sizeof err);
    rd_kafka_mock_broker_set_rtt(mock, 1, 0);
    if (rc != DETA_OK)
        fail_msg("a late answer failed the send: %s", err);
    assert_int_equal(nacked, 4);

    char got[16][16];
    int n = log_values(topic, got, 16);
    assert_int_equal(n, 5);
    for (int i = 0; i < 5; i++) {
        char want[4];
        snprintf(want, sizeof want, "%d", i + 1);
        assert_string_equal(got[i], want);
    }
    deta_producer_free(p);
}

/* Finding 11, the relay's side: it stops waiting after its timeout and sends the
 * same rows again. While the first copies are still in flight, a resend must not
 * queue more copies behind them (an outage would pile up one per retry); it waits
 * for their reports, and since the broker acknowledged them, the resend is
 * reported acknowledged without a second copy: each message is in the log once. */
static void test_resend_waits_for_messages_in_flight(void **state) {
    (void)state;
    char buf[96];
    const char *topic = topic_for("resend", buf, sizeof buf);
    deta_producer_t *p = producer_new();
    send_ok(p, topic, "0"); /* connected, producer id known */

    assert_int_equal(rd_kafka_mock_broker_set_rtt(mock, 1, 6000), RD_KAFKA_RESP_ERR_NO_ERROR);
    const char *values[] = {"a", "b", "c"};
    char err[256] = "";
    size_t nacked = 7;
    for (int i = 0; i < 4; i++) { /* the relay giving up after 500 ms, four times */
        assert_int_equal(send_values(p, topic, values, 3, 500, &nacked, err, sizeof err),
                         DETA_ERR_TRANSIENT);
        assert_int_equal(nacked, 0);
    }
    rd_kafka_mock_broker_set_rtt(mock, 1, 0);
    assert_int_equal(send_values(p, topic, values, 3, WAIT_MS, &nacked, err, sizeof err),
                     DETA_OK);
    assert_int_equal(nacked, 3);

    /* "0", a, b, c: once each. */
    char got[16][16];
    int n = log_values(topic, got, 16);
    if (n != 4)
        fail_msg("the log holds %d messages, not 4: resends were published again", n);
    assert_string_equal(got[0], "0");
    for (int i = 1; i < n; i++)
        assert_string_equal(got[i], values[i - 1]);
    deta_producer_free(p);
}

/* Finding 13: OUT_OF_ORDER_SEQUENCE_NUMBER on a produce is fatal to an
 * idempotent librdkafka producer: every later produce fails. The producer must
 * come back by itself (a new handle): a later send is acknowledged. */
static void test_fatal_error_replaces_the_handle(void **state) {
    (void)state;
    char buf[96];
    const char *topic = topic_for("fatal", buf, sizeof buf);
    deta_producer_t *p = producer_new();
    send_ok(p, topic, "before");

    rd_kafka_mock_push_request_errors(mock, PRODUCE_API_KEY, 1,
                                      RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER);
    const char *doomed = "doomed";
    char err[256] = "";
    size_t nacked = 7;
    assert_int_not_equal(send_values(p, topic, &doomed, 1, WAIT_MS, &nacked, err, sizeof err),
                         DETA_OK);
    assert_int_equal(nacked, 0);

    /* As the relay would: retry with a pause until it works. */
    const char *after = "after";
    deta_err_t rc = DETA_ERR_TRANSIENT;
    for (int i = 0; i < 30 && rc != DETA_OK; i++) {
        rc = send_values(p, topic, &after, 1, 5000, &nacked, err, sizeof err);
        if (rc != DETA_OK)
            ts_sleep_ms(500);
    }
    if (rc != DETA_OK)
        fail_msg("the producer did not recover from its fatal error: %s", err);
    assert_true(deta_producer_ping(p, 5000, err, sizeof err));

    char got[16][16];
    int n = log_values(topic, got, 16);
    assert_int_equal(n, 2);
    assert_string_equal(got[0], "before");
    assert_string_equal(got[1], "after");
    deta_producer_free(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_late_answer_is_not_a_failure),
        cmocka_unit_test(test_resend_waits_for_messages_in_flight),
        cmocka_unit_test(test_fatal_error_replaces_the_handle),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
