/*
 * test_kafka.c - deta/kafka.h against the test stack's broker.
 *
 * The broker is shared and keeps earlier runs' messages, so every run uses keys
 * made of a fresh UUID and consumer groups of its own; the handlers below act on
 * this run's keys only and acknowledge everything else. Topics are the seed's
 * raw.* ones because only they have dead-letter twins.
 *
 * What is checked: a batch is acknowledged; a consumer group gets key, value and
 * headers intact; a transient failure is retried (attempt counter) and then
 * processed once; a poison message is dead-lettered with every x-* header and
 * does not block the message after it; retries run out into the dead-letter
 * topic; offsets are committed only after success (a consumer closed mid-retry
 * hands the message to the next member); a dead letter that cannot be published
 * is never skipped; bad arguments and an unreachable broker.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "deta/envelope.h"
#include "deta/kafka.h"
#include "deta/log.h"
#include "deta/metrics.h"
#include "deta/topics.h"
#include "testsupport.h"

#define TOPIC DETA_TOPIC_DELIVERY_EVENTS
#define DLQ DETA_TOPIC_DLQ_DELIVERY_EVENTS
#define WAIT_MS 45000

static deta_config_t cfg;
static deta_producer_t *producer;
static char run[DETA_UUID_LEN + 1];

static int setup(void **state) {
    (void)state;
    deta_log_init("it-kafka", DETA_LOG_WARN);
    char err[256];
    if (deta_config_load(&cfg, "it-kafka", err, sizeof err) != DETA_OK) {
        fprintf(stderr, "config: %s\n", err);
        return -1;
    }
    cfg.kafka_session_timeout_ms = 6000;
    deta_uuid_new(run);
    producer = deta_producer_new(&cfg, err, sizeof err);
    if (!producer)
        fprintf(stderr, "producer: %s\n", err);
    return producer ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    deta_producer_free(producer);
    return 0;
}

static long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* ---- a recording handler ---- */

typedef struct seen {
    char key[64];
    char value[32];
    int attempt;
    int32_t partition;
    int64_t offset;
    char h1[16];   /* header "h1", or "-" when absent */
    char h1_3[4];  /* the same into a 4-byte buffer: truncated */
    bool has_nope; /* a header that was never sent */
    bool len_ok;   /* value is a NUL-terminated copy of len bytes */
} seen_t;

typedef struct probe {
    pthread_mutex_t lock;
    char prefix[64]; /* keys this run's handler acts on */
    deta_err_t stuck_result;
    seen_t seen[64];
    int nseen;
} probe_t;

static void probe_init(probe_t *p, const char *prefix, deta_err_t stuck_result) {
    memset(p, 0, sizeof *p);
    pthread_mutex_init(&p->lock, NULL);
    snprintf(p->prefix, sizeof p->prefix, "%s", prefix);
    p->stuck_result = stuck_result;
}

static void record(probe_t *p, const deta_kafka_msg_t *msg) {
    pthread_mutex_lock(&p->lock);
    if (p->nseen < 64) {
        seen_t *s = &p->seen[p->nseen++];
        snprintf(s->key, sizeof s->key, "%.*s", (int)msg->key_len, msg->key);
        snprintf(s->value, sizeof s->value, "%s", msg->value);
        s->len_ok = strlen(msg->value) == msg->len && msg->value[msg->len] == '\0';
        s->attempt = msg->attempt;
        s->partition = msg->partition;
        s->offset = msg->offset;
        char buf[16];
        const char *h = deta_kafka_msg_header(msg, "h1", buf, sizeof buf);
        snprintf(s->h1, sizeof s->h1, "%s", h ? h : "-");
        deta_kafka_msg_header(msg, "h1", s->h1_3, sizeof s->h1_3);
        s->has_nope = deta_kafka_msg_header(msg, "nope", buf, sizeof buf) != NULL;
    }
    pthread_mutex_unlock(&p->lock);
}

static deta_err_t probe_handler(const deta_kafka_msg_t *msg, void *opaque, char *errstr,
                                size_t errsize) {
    probe_t *p = opaque;
    size_t plen = strlen(p->prefix);
    if (!msg->key || msg->key_len < plen || memcmp(msg->key, p->prefix, plen) != 0)
        return DETA_OK; /* another run's message */
    record(p, msg);
    if (strcmp(msg->value, "transient") == 0 && msg->attempt < 2)
        return deta_errf(DETA_ERR_TRANSIENT, errstr, errsize, "not yet");
    if (strcmp(msg->value, "poison") == 0)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "bad payload");
    if (strcmp(msg->value, "always-transient") == 0)
        return deta_errf(DETA_ERR_TRANSIENT, errstr, errsize, "still down");
    if (strcmp(msg->value, "stuck") == 0)
        return p->stuck_result;
    return DETA_OK;
}

/* How many times the handler saw value under key, and at which highest attempt. */
static int times_seen(probe_t *p, const char *key, const char *value, int *max_attempt) {
    int n = 0;
    pthread_mutex_lock(&p->lock);
    for (int i = 0; i < p->nseen; i++)
        if (strcmp(p->seen[i].key, key) == 0 && strcmp(p->seen[i].value, value) == 0) {
            n++;
            if (max_attempt)
                *max_attempt = p->seen[i].attempt;
        }
    pthread_mutex_unlock(&p->lock);
    return n;
}

static bool wait_seen(probe_t *p, const char *key, const char *value, int times, int timeout_ms) {
    long deadline = now_ms() + timeout_ms;
    while (now_ms() < deadline) {
        if (times_seen(p, key, value, NULL) >= times)
            return true;
        ts_sleep_ms(50);
    }
    return false;
}

/* ---- a consumer on its own thread ---- */

typedef struct runner {
    deta_consumer_t *consumer;
    atomic_bool stop;
    pthread_t thread;
} runner_t;

static void *run_consumer(void *arg) {
    runner_t *r = arg;
    deta_consumer_run(r->consumer, &r->stop);
    return NULL;
}

static void runner_start(runner_t *r, const char *group, probe_t *p, deta_producer_t *dlq,
                         const deta_consumer_opts_t *opts) {
    const char *topics[] = {TOPIC};
    char err[256] = "";
    atomic_init(&r->stop, false);
    r->consumer = deta_consumer_new(&cfg, group, topics, 1, probe_handler, p, dlq, opts, err,
                                    sizeof err);
    if (!r->consumer)
        fail_msg("consumer: %s", err);
    assert_int_equal(pthread_create(&r->thread, NULL, run_consumer, r), 0);
}

static void runner_stop(runner_t *r) {
    atomic_store(&r->stop, true);
    pthread_join(r->thread, NULL);
    deta_consumer_free(r->consumer);
}

static void send_values(const char *key, const char *const *values, size_t n) {
    deta_kafka_header_t hdrs[] = {{"h1", "value-1"}, {"eventType", "test.event"}};
    deta_kafka_out_t msgs[8];
    for (size_t i = 0; i < n; i++)
        msgs[i] = (deta_kafka_out_t){.topic = TOPIC,
                                     .key = key,
                                     .value = values[i],
                                     .len = strlen(values[i]),
                                     .headers = hdrs,
                                     .nheaders = 2};
    size_t nacked = 99;
    char err[256] = "";
    deta_err_t rc = deta_producer_send_batch(producer, msgs, n, 15000, &nacked, err, sizeof err);
    if (rc != DETA_OK)
        fail_msg("send_batch: %s", err);
    assert_int_equal(nacked, n);
}

static double counter_value(deta_metrics_t *m, const char *outcome) {
    char labels[128];
    snprintf(labels, sizeof labels, "topic=\"%s\",outcome=\"%s\"", TOPIC, outcome);
    return deta_counter_value(deta_counter(m, "deta_consumer_messages_total", "", labels));
}

/* ---- tests ---- */

static void test_send_batch_acks(void **state) {
    (void)state;
    char key[64];
    snprintf(key, sizeof key, "b-%s", run);
    const char *values[] = {"one", "two", "three"};
    send_values(key, values, 3);
    ts_kafka_msg_t m;
    assert_true(ts_kafka_find(TOPIC, key, 15000, &m));
    assert_string_equal(m.value, "one");
    assert_string_equal(ts_kafka_header(&m, "h1"), "value-1");
    ts_kafka_msg_free(&m);
    assert_int_equal(ts_kafka_count(TOPIC, key, 15000), 3);

    char err[256];
    assert_true(deta_producer_ping(producer, 5000, err, sizeof err));
    deta_kafka_out_t one = {.topic = TOPIC, .key = key, .value = "four", .len = 4};
    assert_int_equal(deta_producer_send(producer, &one, 15000, err, sizeof err), DETA_OK);
    size_t nacked = 7;
    assert_int_equal(deta_producer_send_batch(producer, NULL, 0, 1000, &nacked, err, sizeof err),
                     DETA_OK);
    assert_int_equal(nacked, 0);
}

static void test_producer_bad_input(void **state) {
    (void)state;
    char err[256] = "";
    size_t nacked = 7;
    deta_kafka_out_t ok = {.topic = TOPIC, .key = "k", .value = "v", .len = 1};
    deta_kafka_out_t no_topic = {.topic = NULL, .value = "v", .len = 1};
    deta_kafka_out_t no_value = {.topic = TOPIC, .value = NULL, .len = 3};
    deta_kafka_header_t bad_hdr[] = {{NULL, "x"}};
    deta_kafka_out_t bad_header = {.topic = TOPIC, .value = "v", .len = 1, .headers = bad_hdr,
                                   .nheaders = 1};
    deta_kafka_out_t batch[] = {ok, no_topic};
    assert_int_equal(deta_producer_send_batch(producer, batch, 2, 1000, &nacked, err, sizeof err),
                     DETA_ERR_INVALID);
    assert_int_equal(nacked, 0); /* nothing is sent from a bad batch */
    assert_true(strlen(err) > 0);
    assert_int_equal(deta_producer_send(producer, &no_value, 1000, err, sizeof err),
                     DETA_ERR_INVALID);
    assert_int_equal(deta_producer_send(producer, &bad_header, 1000, err, sizeof err),
                     DETA_ERR_INVALID);
    assert_int_equal(deta_producer_send(NULL, &ok, 1000, err, sizeof err), DETA_ERR_INVALID);
    assert_int_equal(deta_producer_send(producer, NULL, 1000, err, sizeof err), DETA_ERR_INVALID);
    assert_false(deta_producer_ping(NULL, 100, err, sizeof err));

    deta_config_t empty = cfg;
    empty.kafka_bootstrap[0] = '\0';
    assert_null(deta_producer_new(&empty, err, sizeof err));
    assert_null(deta_producer_new(NULL, err, sizeof err));
    deta_producer_free(NULL);
}

static void test_unreachable_broker(void **state) {
    (void)state;
    deta_config_t dead = cfg;
    snprintf(dead.kafka_bootstrap, sizeof dead.kafka_bootstrap, "127.0.0.1:1");
    char err[256] = "";
    deta_producer_t *p = deta_producer_new(&dead, err, sizeof err);
    assert_non_null(p);
    long t0 = now_ms();
    assert_false(deta_producer_ping(p, 1000, err, sizeof err));
    assert_true(now_ms() - t0 < 3000);
    deta_kafka_out_t msgs[] = {{.topic = TOPIC, .key = "k", .value = "a", .len = 1},
                               {.topic = TOPIC, .key = "k", .value = "b", .len = 1}};
    size_t nacked = 7;
    t0 = now_ms();
    assert_int_equal(deta_producer_send_batch(p, msgs, 2, 1000, &nacked, err, sizeof err),
                     DETA_ERR_TRANSIENT);
    assert_int_equal(nacked, 0);
    assert_non_null(strstr(err, "timed out"));
    assert_true(now_ms() - t0 < 3000);
    deta_producer_free(p); /* purges what it could not deliver; no leak, no hang */
}

static void test_consume_retry_and_dead_letter(void **state) {
    (void)state;
    char prefix[48], key[64], key2[64], group[64];
    snprintf(prefix, sizeof prefix, "k-%s", run);
    snprintf(key, sizeof key, "%s-a", prefix);
    snprintf(key2, sizeof key2, "%s-b", prefix);
    snprintf(group, sizeof group, "it-kafka-%s", run);
    const char *values[] = {"ok", "transient", "poison", "after"};
    send_values(key, values, 4);
    const char *values2[] = {"always-transient"};
    send_values(key2, values2, 1);

    deta_metrics_t *metrics = deta_metrics_new();
    probe_t probe;
    probe_init(&probe, prefix, DETA_OK);
    deta_consumer_opts_t opts = {.max_retries = 2, .backoff_ms = 50, .backoff_max_ms = 200,
                                 .metrics = metrics};
    runner_t r;
    runner_start(&r, group, &probe, producer, &opts);
    assert_true(wait_seen(&probe, key, "after", 1, WAIT_MS));
    assert_true(wait_seen(&probe, key2, "always-transient", 3, WAIT_MS));
    ts_kafka_msg_t dl, dl2;
    assert_true(ts_kafka_find(DLQ, key, 20000, &dl));
    assert_true(ts_kafka_find(DLQ, key2, 20000, &dl2));
    ts_sleep_ms(300); /* would a fourth attempt come? */
    runner_stop(&r);

    /* In partition order, each retry with its attempt number, each message once. */
    static const struct {
        const char *value;
        int attempt;
    } want[] = {{"ok", 0}, {"transient", 0}, {"transient", 1}, {"transient", 2},
                {"poison", 0}, {"after", 0}};
    int j = 0;
    int64_t poison_offset = -1;
    int32_t poison_partition = -1;
    for (int i = 0; i < probe.nseen; i++) {
        seen_t *s = &probe.seen[i];
        if (strcmp(s->key, key) != 0)
            continue;
        assert_true(j < 6);
        assert_string_equal(s->value, want[j].value);
        assert_int_equal(s->attempt, want[j].attempt);
        assert_string_equal(s->h1, "value-1");
        assert_string_equal(s->h1_3, "val");
        assert_true(s->len_ok);
        assert_false(s->has_nope);
        if (strcmp(s->value, "poison") == 0) {
            poison_offset = s->offset;
            poison_partition = s->partition;
        }
        j++;
    }
    assert_int_equal(j, 6);
    assert_int_equal(times_seen(&probe, key2, "always-transient", NULL), 3);

    /* The dead letter: original key, value and headers plus the x-* facts. */
    char partition[16], offset[24];
    snprintf(partition, sizeof partition, "%d", (int)poison_partition);
    snprintf(offset, sizeof offset, "%lld", (long long)poison_offset);
    assert_string_equal(dl.key, key);
    assert_string_equal(dl.value, "poison");
    assert_string_equal(ts_kafka_header(&dl, "h1"), "value-1");
    assert_string_equal(ts_kafka_header(&dl, "eventType"), "test.event");
    assert_string_equal(ts_kafka_header(&dl, "x-retry-count"), "0");
    assert_string_equal(ts_kafka_header(&dl, "x-original-topic"), TOPIC);
    assert_string_equal(ts_kafka_header(&dl, "x-original-partition"), partition);
    assert_string_equal(ts_kafka_header(&dl, "x-original-offset"), offset);
    assert_string_equal(ts_kafka_header(&dl, "x-error"), "bad payload");
    assert_string_equal(dl2.value, "always-transient");
    assert_string_equal(ts_kafka_header(&dl2, "x-retry-count"), "2");
    assert_string_equal(ts_kafka_header(&dl2, "x-error"), "still down");
    assert_int_equal(ts_kafka_count(DLQ, key, 15000), 1);
    ts_kafka_msg_free(&dl);
    ts_kafka_msg_free(&dl2);

    /* Other runs' messages only add to "processed". */
    assert_true(counter_value(metrics, "processed") >= 3);
    assert_true(counter_value(metrics, "retried") == 4);
    assert_true(counter_value(metrics, "dead_lettered") == 2);
    deta_metrics_free(metrics);
}

static void test_offsets_committed_only_after_success(void **state) {
    (void)state;
    char key[64], group[64];
    snprintf(key, sizeof key, "c-%s", run);
    snprintf(group, sizeof group, "it-kafka-commit-%s", run);
    const char *values[] = {"first", "stuck"};
    send_values(key, values, 2);
    deta_consumer_opts_t opts = {.max_retries = 1000, .backoff_ms = 100, .backoff_max_ms = 100};

    probe_t a;
    probe_init(&a, key, DETA_ERR_TRANSIENT);
    runner_t ra;
    runner_start(&ra, group, &a, producer, &opts);
    assert_true(wait_seen(&a, key, "stuck", 3, WAIT_MS)); /* mid-retry */
    runner_stop(&ra); /* commits what finished: "first", not "stuck" */
    assert_int_equal(times_seen(&a, key, "first", NULL), 1);

    probe_t b;
    probe_init(&b, key, DETA_OK);
    runner_t rb;
    runner_start(&rb, group, &b, producer, &opts);
    assert_true(wait_seen(&b, key, "stuck", 1, WAIT_MS));
    runner_stop(&rb);
    int attempt = -1;
    assert_int_equal(times_seen(&b, key, "stuck", &attempt), 1);
    assert_int_equal(attempt, 0);
    /* "first" precedes "stuck" in the partition: had it not been committed, the
     * second member would have been handed it before "stuck". */
    assert_int_equal(times_seen(&b, key, "first", NULL), 0);
}

static void test_dead_letter_never_skipped(void **state) {
    (void)state;
    char key[64], group[64];
    snprintf(key, sizeof key, "d-%s", run);
    snprintf(group, sizeof group, "it-kafka-dlq-%s", run);
    const char *values[] = {"poison"};
    send_values(key, values, 1);
    deta_consumer_opts_t opts = {.max_retries = 1, .backoff_ms = 100, .backoff_max_ms = 200};

    /* The first member's dead letters cannot be published. */
    deta_config_t dead = cfg;
    snprintf(dead.kafka_bootstrap, sizeof dead.kafka_bootstrap, "127.0.0.1:1");
    char err[256];
    deta_producer_t *dead_producer = deta_producer_new(&dead, err, sizeof err);
    assert_non_null(dead_producer);
    probe_t a;
    probe_init(&a, key, DETA_OK);
    runner_t ra;
    runner_start(&ra, group, &a, dead_producer, &opts);
    assert_true(wait_seen(&a, key, "poison", 1, WAIT_MS));
    ts_sleep_ms(500);
    runner_stop(&ra); /* gives up on the dead letter without storing the offset */
    deta_producer_free(dead_producer);
    assert_int_equal(ts_kafka_count(DLQ, key, 10000), 0);

    probe_t b;
    probe_init(&b, key, DETA_OK);
    runner_t rb;
    runner_start(&rb, group, &b, producer, &opts);
    assert_true(wait_seen(&b, key, "poison", 1, WAIT_MS));
    ts_kafka_msg_t dl;
    assert_true(ts_kafka_find(DLQ, key, 20000, &dl));
    runner_stop(&rb);
    assert_string_equal(ts_kafka_header(&dl, "x-retry-count"), "0");
    assert_string_equal(ts_kafka_header(&dl, "x-error"), "bad payload");
    ts_kafka_msg_free(&dl);
}

static void test_consumer_bad_input(void **state) {
    (void)state;
    const char *topics[] = {TOPIC};
    const char *empty_topic[] = {""};
    char err[256];
    probe_t p;
    probe_init(&p, "x", DETA_OK);
    deta_consumer_opts_t negative = {.max_retries = -1};
    err[0] = 0;
    assert_null(deta_consumer_new(&cfg, NULL, topics, 1, probe_handler, &p, producer, NULL, err,
                                  sizeof err));
    assert_true(strlen(err) > 0);
    assert_null(deta_consumer_new(&cfg, "g", NULL, 0, probe_handler, &p, producer, NULL, err,
                                  sizeof err));
    assert_null(deta_consumer_new(&cfg, "g", empty_topic, 1, probe_handler, &p, producer, NULL,
                                  err, sizeof err));
    assert_null(deta_consumer_new(&cfg, "g", topics, 1, NULL, &p, producer, NULL, err, sizeof err));
    assert_null(deta_consumer_new(&cfg, "g", topics, 1, probe_handler, &p, NULL, NULL, err,
                                  sizeof err));
    assert_null(deta_consumer_new(&cfg, "g", topics, 1, probe_handler, &p, producer, &negative,
                                  err, sizeof err));
    assert_int_equal(deta_consumer_run(NULL, NULL), DETA_ERR_INVALID);
    deta_consumer_free(NULL);
    char buf[8];
    assert_null(deta_kafka_msg_header(NULL, "h", buf, sizeof buf));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_send_batch_acks),
        cmocka_unit_test(test_producer_bad_input),
        cmocka_unit_test(test_unreachable_broker),
        cmocka_unit_test(test_consume_retry_and_dead_letter),
        cmocka_unit_test(test_offsets_committed_only_after_success),
        cmocka_unit_test(test_dead_letter_never_skipped),
        cmocka_unit_test(test_consumer_bad_input),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
