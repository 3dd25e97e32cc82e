/*
 * test_outbox.c - deta/outbox.h against the test stack's Postgres and broker.
 *
 * A scratch database (it_outbox_<pid>) holds the outbox; keys are fresh UUIDs
 * because the broker is shared. The relays run on their own threads as in a
 * service. What is checked: rows are published only after their transaction
 * commits, in id order, keyed by orderId, and marked; a rollback publishes
 * nothing; notifications (not the fallback poll) wake the relay, also after its
 * connection was killed; two relays on one database publish each row once and the
 * standby takes over; a relay stopping flushes; a failed publish leaves the row
 * for later (counted pending, with the oldest row's age in seconds, both 0 once
 * drained); published rows are purged after the retention; bad input.
 * deta_outbox_relay_stop: a healthy relay publishes what was committed and stops
 * at once; one whose broker does not answer stops within its bound (not the 12 s
 * of a send), reports rows left, and leaves the row for the next relay.
 * Issue #22: a leader whose backend is terminated while a batch is in its hands
 * publishes nothing after that while the standby holds the lock, and stands by
 * until the lock is free again; a row too large for the broker, or refused with
 * TOPIC_AUTHORIZATION_FAILED, is parked and the rows behind it go, the later rows
 * of its order parked behind it; a read-only server gets nothing published until
 * it takes writes again, and then the row goes once.
 */
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "deta/envelope.h"
#include "deta/log.h"
#include "deta/metrics.h"
#include "deta/outbox.h"
#include "deta/topics.h"
#include "testsupport.h"

#define TOPIC DETA_TOPIC_ORDER_EVENTS
#define WAIT_MS 20000

static char dbname[64];
static deta_config_t cfg;
static deta_producer_t *producer;
static deta_db_t *db;
static deta_metrics_t *metrics1;
static deta_outbox_relay_t *relay1;

static long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static int setup(void **state) {
    (void)state;
    deta_log_init("it-outbox", DETA_LOG_WARN);
    char err[256];
    if (ts_scratch_db_create("it-outbox", "outbox", &cfg) != 0)
        return -1;
    snprintf(dbname, sizeof dbname, "%s", cfg.pg_database);
    db = deta_db_new(&cfg);
    if (deta_db_migrate(db, "outbox", deta_outbox_migrations, deta_outbox_migrations_count, err,
                        sizeof err) != DETA_OK) {
        fprintf(stderr, "migrate: %s\n", err);
        return -1;
    }
    producer = deta_producer_new(&cfg, err, sizeof err);
    metrics1 = deta_metrics_new();
    relay1 = producer ? deta_outbox_relay_new(&cfg, producer, metrics1, err, sizeof err) : NULL;
    if (!relay1 || deta_outbox_relay_start(relay1, err, sizeof err) != DETA_OK) {
        fprintf(stderr, "relay: %s\n", err);
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    deta_outbox_relay_free(relay1);
    deta_metrics_free(metrics1);
    deta_producer_free(producer);
    deta_db_free(db);
    ts_scratch_db_drop(&cfg);
    return 0;
}

/* ---- helpers ---- */

static void new_key(char *out, size_t size, const char *prefix) {
    char uuid[DETA_UUID_LEN + 1];
    deta_uuid_new(uuid);
    snprintf(out, size, "%s-%s", prefix, uuid);
}

/* Adds an event for order key inside the open transaction; returns its id. */
static void add_event(const char *key, const char *type, char event_id[DETA_UUID_LEN + 1]) {
    deta_event_t ev;
    char err[256];
    if (deta_event_init(&ev, type, key, "corr-1", "order-service", json_pack("{s:s}", "k", key), err,
                        sizeof err) != DETA_OK)
        fail_msg("event: %s", err);
    if (event_id)
        memcpy(event_id, ev.event_id, DETA_UUID_LEN + 1);
    deta_err_t rc = deta_outbox_add(db, TOPIC, &ev, err, sizeof err);
    deta_event_clear(&ev);
    if (rc != DETA_OK)
        fail_msg("outbox add: %s", err);
}

static void commit_one(const char *key) {
    char err[256];
    assert_int_equal(deta_db_begin(db, err, sizeof err), DETA_OK);
    add_event(key, DETA_EVT_ORDER_CREATED, NULL);
    assert_int_equal(deta_db_commit(db, err, sizeof err), DETA_OK);
}

static long rows(const char *key, bool published) {
    const char *params[] = {key};
    PGconn *c = ts_pg(dbname);
    long n = ts_pg_long(c,
                        published ? "SELECT count(*) FROM outbox WHERE msg_key = $1"
                                    " AND published_at IS NOT NULL"
                                  : "SELECT count(*) FROM outbox WHERE msg_key = $1",
                        1, params);
    PQfinish(c);
    return n;
}

static bool wait_published(const char *key, long want, int timeout_ms) {
    long deadline = now_ms() + timeout_ms;
    while (now_ms() < deadline) {
        if (rows(key, true) >= want)
            return true;
        ts_sleep_ms(50);
    }
    return false;
}

static double counter(deta_metrics_t *m, const char *name, const char *labels) {
    return deta_counter_value(deta_counter(m, name, "", labels));
}

static double published_by(deta_metrics_t *m) {
    return counter(m, "deta_outbox_published_total", NULL);
}

/* Every value with this key on the topic, in partition order (one key, one
 * partition); reads until want values arrived or the timeout. */
static int read_values(const char *key, int want, int timeout_ms, char **out) {
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", ts_env("KAFKA_BOOTSTRAP_SERVERS"), err, sizeof err);
    rd_kafka_conf_set(conf, "group.id", "it-outbox-reader", err, sizeof err);
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof err);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    assert_non_null(rk);
    rd_kafka_topic_t *t = rd_kafka_topic_new(rk, TOPIC, NULL);
    const rd_kafka_metadata_t *md = NULL;
    assert_int_equal(rd_kafka_metadata(rk, 0, t, &md, 5000), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(8);
    for (int p = 0; p < md->topics[0].partition_cnt; p++)
        rd_kafka_topic_partition_list_add(parts, TOPIC, md->topics[0].partitions[p].id)->offset =
            RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(t);
    rd_kafka_assign(rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    int n = 0;
    size_t klen = strlen(key);
    long deadline = now_ms() + timeout_ms;
    while (n < want && now_ms() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m)
            continue;
        if (!m->err && m->key_len == klen && memcmp(m->key, key, klen) == 0)
            out[n++] = strndup(m->payload, m->len);
        rd_kafka_message_destroy(m);
    }
    rd_kafka_assign(rk, NULL);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return n;
}

/* ---- tests ---- */

static void test_add_needs_a_transaction_and_valid_input(void **state) {
    (void)state;
    deta_event_t ev;
    char err[256] = "";
    assert_int_equal(deta_event_init(&ev, "order.created", "o-1", "c-1", "it", json_object(), err,
                                     sizeof err),
                     DETA_OK);
    assert_int_equal(deta_outbox_add(db, TOPIC, &ev, err, sizeof err), DETA_ERR_INVALID);
    assert_non_null(strstr(err, "transaction"));
    assert_int_equal(deta_db_begin(db, err, sizeof err), DETA_OK);
    assert_int_equal(deta_outbox_add(db, NULL, &ev, err, sizeof err), DETA_ERR_INVALID);
    assert_int_equal(deta_outbox_add(db, "", &ev, err, sizeof err), DETA_ERR_INVALID);
    assert_int_equal(deta_outbox_add(db, TOPIC, NULL, err, sizeof err), DETA_ERR_INVALID);
    assert_int_equal(deta_outbox_add(NULL, TOPIC, &ev, err, sizeof err), DETA_ERR_INVALID);
    deta_db_rollback(db);
    deta_event_clear(&ev);
    assert_int_equal(rows("o-1", false), 0);

    setenv("OUTBOX_RETENTION_S", "soon", 1); /* read with the configuration (config.c) */
    err[0] = 0;
    deta_config_t soon;
    assert_int_equal(deta_config_load(&soon, "it-outbox", err, sizeof err), DETA_ERR_INVALID);
    assert_non_null(strstr(err, "OUTBOX_RETENTION_S"));
    unsetenv("OUTBOX_RETENTION_S");
    assert_null(deta_outbox_relay_new(NULL, producer, NULL, err, sizeof err));
    assert_null(deta_outbox_relay_new(&cfg, NULL, NULL, err, sizeof err));
    assert_int_equal(deta_outbox_relay_start(NULL, err, sizeof err), DETA_ERR_INVALID);
    assert_int_equal(deta_outbox_relay_start(relay1, err, sizeof err), DETA_ERR_INVALID);
    deta_outbox_relay_free(NULL);
}

static void test_published_after_commit_in_order(void **state) {
    (void)state;
    char key[64], err[256];
    char ids[3][DETA_UUID_LEN + 1];
    const char *types[] = {DETA_EVT_ORDER_CREATED, DETA_EVT_INVENTORY_RESERVED,
                           DETA_EVT_PAYMENT_AUTHORIZED};
    new_key(key, sizeof key, "order");
    assert_int_equal(deta_db_begin(db, err, sizeof err), DETA_OK);
    for (int i = 0; i < 3; i++)
        add_event(key, types[i], ids[i]);
    /* Longer than the fallback poll: the relay looked, and saw nothing. */
    ts_sleep_ms(DETA_OUTBOX_POLL_MS + 500);
    assert_int_equal(ts_kafka_count(TOPIC, key, 10000), 0);
    assert_int_equal(rows(key, false), 0); /* invisible outside the transaction */
    assert_int_equal(deta_db_commit(db, err, sizeof err), DETA_OK);

    char *values[3] = {0};
    assert_int_equal(read_values(key, 3, WAIT_MS, values), 3);
    for (int i = 0; i < 3; i++) {
        deta_event_t ev;
        assert_int_equal(deta_event_parse(values[i], strlen(values[i]), &ev, err, sizeof err),
                         DETA_OK);
        assert_string_equal(ev.event_id, ids[i]);
        assert_string_equal(ev.event_type, types[i]);
        assert_string_equal(ev.order_id, key);
        assert_string_equal(json_string_value(json_object_get(ev.payload, "k")), key);
        deta_event_clear(&ev);
        free(values[i]);
    }
    assert_true(wait_published(key, 3, WAIT_MS));
    assert_int_equal(rows(key, false), 3);
    assert_int_equal(ts_kafka_count(TOPIC, key, 10000), 3);
}

static void test_rollback_publishes_nothing(void **state) {
    (void)state;
    char key[64], marker[64], err[256];
    new_key(key, sizeof key, "rolled-back");
    new_key(marker, sizeof marker, "marker");
    assert_int_equal(deta_db_begin(db, err, sizeof err), DETA_OK);
    add_event(key, DETA_EVT_ORDER_CREATED, NULL);
    deta_db_rollback(db);
    commit_one(marker); /* written after: once it is out, the relay has seen past key */
    assert_true(wait_published(marker, 1, WAIT_MS));
    assert_int_equal(rows(key, false), 0);
    assert_int_equal(ts_kafka_count(TOPIC, marker, 10000), 1);
    assert_int_equal(ts_kafka_count(TOPIC, key, 10000), 0);
}

static void test_woken_by_notify(void **state) {
    (void)state;
    char key[64];
    const char *notify = "reason=\"notify\"";
    ts_sleep_ms(300); /* let the relay settle into its wait */
    double before = counter(metrics1, "deta_outbox_wakeups_total", notify);
    double published_before = published_by(metrics1);
    new_key(key, sizeof key, "notified");
    long t0 = now_ms();
    commit_one(key);
    assert_true(wait_published(key, 1, WAIT_MS));
    long took = now_ms() - t0;
    assert_true(counter(metrics1, "deta_outbox_wakeups_total", notify) > before);
    assert_true(published_by(metrics1) >= published_before + 1);
    print_message("published %ld ms after commit (fallback poll: %d ms)\n", took,
                  DETA_OUTBOX_POLL_MS);
}

/* The relay's session: the one holding the relay's advisory lock. */
static long relay_backend(void) {
    PGconn *c = ts_pg(dbname);
    long pid = ts_pg_long(c,
                          "SELECT coalesce(max(pid), 0) FROM pg_locks WHERE locktype = 'advisory'"
                          " AND granted AND objid = hashtext('deta_outbox_relay')::oid"
                          /* every service's relay holds this key in its own database */
                          " AND database = (SELECT oid FROM pg_database"
                          "                 WHERE datname = current_database())",
                          0, NULL);
    PQfinish(c);
    return pid;
}

static void terminate(long pid) {
    char p[24];
    snprintf(p, sizeof p, "%ld", pid);
    const char *params[] = {p};
    PGconn *admin = ts_pg("postgres");
    assert_int_equal(ts_pg_long(admin, "SELECT pg_terminate_backend($1::int)::int", 1, params), 1);
    PQfinish(admin);
}

static void test_reconnects_and_listens_again(void **state) {
    (void)state;
    long pid = relay_backend();
    assert_true(pid > 0);
    terminate(pid);

    /* It comes back with a new session that holds the lock again... */
    long pid2 = 0;
    for (int i = 0; i < 100 && ((pid2 = relay_backend()) == 0 || pid2 == pid); i++)
        ts_sleep_ms(50);
    assert_true(pid2 > 0 && pid2 != pid);
    /* ...and listens again: a commit wakes it by notification. */
    ts_sleep_ms(300);
    const char *notify = "reason=\"notify\"";
    double before = counter(metrics1, "deta_outbox_wakeups_total", notify);
    char key[64];
    new_key(key, sizeof key, "after-reconnect");
    commit_one(key);
    assert_true(wait_published(key, 1, WAIT_MS));
    /* The row may go out in a turn that a backoff ended, the notification being
     * taken from the socket just after: wait for it (a relay that did not LISTEN
     * again never counts one). */
    bool notified = false;
    for (long end = now_ms() + WAIT_MS; !notified && now_ms() < end; ts_sleep_ms(50))
        notified = counter(metrics1, "deta_outbox_wakeups_total", notify) > before;
    assert_true(notified);
}

static void test_two_relays_publish_each_row_once(void **state) {
    (void)state;
    char err[256], key[64];
    deta_metrics_t *metrics2 = deta_metrics_new();
    deta_outbox_relay_t *relay2 = deta_outbox_relay_new(&cfg, producer, metrics2, err, sizeof err);
    assert_non_null(relay2);
    assert_int_equal(deta_outbox_relay_start(relay2, err, sizeof err), DETA_OK);
    double one_before = published_by(metrics1);

    new_key(key, sizeof key, "two-relays");
    for (int i = 0; i < 20; i++)
        commit_one(key);
    assert_true(wait_published(key, 20, WAIT_MS));
    assert_int_equal(ts_kafka_count(TOPIC, key, 10000), 20);
    /* relay1 leads; the standby published nothing. */
    assert_true(published_by(metrics1) - one_before >= 20);
    assert_true(published_by(metrics2) == 0);

    /* The leader goes away: the standby takes over. */
    deta_outbox_relay_free(relay1);
    relay1 = NULL;
    new_key(key, sizeof key, "handover");
    commit_one(key);
    assert_true(wait_published(key, 1, WAIT_MS));
    assert_true(published_by(metrics2) >= 1);
    assert_int_equal(ts_kafka_count(TOPIC, key, 10000), 1);

    /* Stopping publishes what was committed before. */
    new_key(key, sizeof key, "flushed-on-stop");
    commit_one(key);
    deta_outbox_relay_free(relay2);
    assert_int_equal(rows(key, true), 1);
    assert_int_equal(ts_kafka_count(TOPIC, key, 10000), 1);
    deta_metrics_free(metrics2);
}

static void test_failed_publish_keeps_the_row(void **state) {
    (void)state;
    char err[256], key[64];
    deta_config_t dead = cfg;
    snprintf(dead.kafka_bootstrap, sizeof dead.kafka_bootstrap, "127.0.0.1:1");
    deta_producer_t *dead_producer = deta_producer_new(&dead, err, sizeof err);
    assert_non_null(dead_producer);
    deta_metrics_t *m = deta_metrics_new();
    deta_outbox_relay_t *r = deta_outbox_relay_new(&cfg, dead_producer, m, err, sizeof err);
    assert_non_null(r);
    assert_int_equal(deta_outbox_relay_start(r, err, sizeof err), DETA_OK);
    new_key(key, sizeof key, "kafka-down");
    commit_one(key);
    long deadline = now_ms() + 30000;
    while (counter(m, "deta_outbox_publish_errors_total", NULL) < 1 && now_ms() < deadline)
        ts_sleep_ms(100);
    assert_true(counter(m, "deta_outbox_publish_errors_total", NULL) >= 1);
    /* The failed turn counts what is left right after the error is counted. */
    deta_gauge_t *left = deta_gauge(m, "deta_outbox_pending", "", NULL);
    deta_gauge_t *oldest_left = deta_gauge(m, "deta_outbox_oldest_pending_age_seconds", "", NULL);
    deadline = now_ms() + 10000;
    while ((deta_gauge_value(left) < 1 || deta_gauge_value(oldest_left) <= 0) &&
           now_ms() < deadline)
        ts_sleep_ms(20);
    assert_true(deta_gauge_value(left) >= 1);
    /* The row waited at least the failed send's 12 s: its age says so, in seconds. */
    double age = deta_gauge_value(oldest_left);
    assert_true(age >= 1 && age < 3600);
    assert_true(published_by(m) == 0);
    long t0 = now_ms();
    deta_outbox_relay_free(r);
    assert_true(now_ms() - t0 < 10000); /* a bounded final attempt */
    deta_producer_free(dead_producer);
    deta_metrics_free(m);
    assert_int_equal(rows(key, true), 0);
    assert_int_equal(rows(key, false), 1);

    /* A working relay publishes it later. */
    relay1 = deta_outbox_relay_new(&cfg, producer, metrics1, err, sizeof err);
    assert_non_null(relay1);
    assert_int_equal(deta_outbox_relay_start(relay1, err, sizeof err), DETA_OK);
    assert_true(wait_published(key, 1, WAIT_MS));
    assert_true(ts_kafka_count(TOPIC, key, 10000) >= 1); /* at least once */
    deta_gauge_t *pending = deta_gauge(metrics1, "deta_outbox_pending", "", NULL);
    deta_gauge_t *oldest = deta_gauge(metrics1, "deta_outbox_oldest_pending_age_seconds", "", NULL);
    deadline = now_ms() + WAIT_MS;
    while ((deta_gauge_value(pending) != 0 || deta_gauge_value(oldest) != 0) &&
           now_ms() < deadline)
        ts_sleep_ms(50);
    assert_true(deta_gauge_value(pending) == 0);
    assert_true(deta_gauge_value(oldest) == 0);
}

static void test_database_down(void **state) {
    (void)state;
    char err[256];
    deta_config_t bad = cfg;
    bad.pg_port = 1;
    deta_metrics_t *m = deta_metrics_new();
    deta_outbox_relay_t *r = deta_outbox_relay_new(&bad, producer, m, err, sizeof err);
    assert_non_null(r);
    assert_int_equal(deta_outbox_relay_start(r, err, sizeof err), DETA_OK);
    long deadline = now_ms() + 10000;
    while (counter(m, "deta_outbox_publish_errors_total", NULL) < 2 && now_ms() < deadline)
        ts_sleep_ms(50);
    assert_true(counter(m, "deta_outbox_publish_errors_total", NULL) >= 2); /* keeps trying */
    long t0 = now_ms();
    deta_outbox_relay_free(r); /* stop interrupts the backoff */
    assert_true(now_ms() - t0 < 2000);
    deta_metrics_free(m);
}

static void test_purges_old_published_rows(void **state) {
    (void)state;
    char err[256], old_key[64], recent_key[64], unsent_key[64];
    new_key(old_key, sizeof old_key, "purge-old");
    new_key(recent_key, sizeof recent_key, "purge-recent");
    new_key(unsent_key, sizeof unsent_key, "purge-unsent");
    /* The relay of the previous test leads; a new one purges on its first turn. */
    deta_outbox_relay_free(relay1);
    relay1 = NULL;
    const char *params[] = {old_key, recent_key};
    PGconn *c = ts_pg(dbname);
    PGresult *r = PQexecParams(c,
                               "INSERT INTO outbox (topic, msg_key, payload, published_at) VALUES"
                               " ('" TOPIC "', $1, '{}', now() - interval '2 hours'),"
                               " ('" TOPIC "', $2, '{}', now() - interval '10 minutes')",
                               2, NULL, params, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    PQfinish(c);
    commit_one(unsent_key);

    relay1 = deta_outbox_relay_new(&cfg, producer, metrics1, err, sizeof err);
    assert_non_null(relay1);
    assert_int_equal(deta_outbox_relay_start(relay1, err, sizeof err), DETA_OK);
    assert_true(wait_published(unsent_key, 1, WAIT_MS));
    long deadline = now_ms() + WAIT_MS;
    while (rows(old_key, false) > 0 && now_ms() < deadline)
        ts_sleep_ms(50);
    assert_int_equal(rows(old_key, false), 0);    /* older than the hour of retention */
    assert_int_equal(rows(recent_key, false), 1); /* within it */
    assert_int_equal(rows(unsent_key, false), 1);
}

static void test_stop_is_bounded(void **state) {
    (void)state;
    char err[256], key[64];
    /* Healthy: what was committed goes out, and the stop is quick. */
    new_key(key, sizeof key, "stop-flush");
    commit_one(key);
    long t0 = now_ms();
    assert_int_equal(deta_outbox_relay_stop(relay1, 5000), DETA_OK);
    assert_true(now_ms() - t0 < 3000);
    assert_int_equal(rows(key, true), 1);
    assert_int_equal(deta_outbox_relay_stop(relay1, 5000), DETA_OK); /* once */
    deta_outbox_relay_free(relay1);
    relay1 = NULL;
    assert_int_equal(deta_outbox_relay_stop(NULL, 10), DETA_ERR_INVALID);

    /* The broker does not answer: the send in hand is abandoned at the bound. */
    deta_config_t dead = cfg;
    snprintf(dead.kafka_bootstrap, sizeof dead.kafka_bootstrap, "127.0.0.1:1");
    deta_producer_t *dead_producer = deta_producer_new(&dead, err, sizeof err);
    assert_non_null(dead_producer);
    deta_outbox_relay_t *r = deta_outbox_relay_new(&cfg, dead_producer, NULL, err, sizeof err);
    assert_non_null(r);
    assert_int_equal(deta_outbox_relay_stop(r, 10), DETA_OK); /* never started */
    deta_outbox_relay_free(r);
    r = deta_outbox_relay_new(&cfg, dead_producer, NULL, err, sizeof err);
    assert_non_null(r);
    assert_int_equal(deta_outbox_relay_start(r, err, sizeof err), DETA_OK);
    new_key(key, sizeof key, "stop-abandoned");
    commit_one(key);
    ts_sleep_ms(1000); /* the relay is in a send that cannot finish */
    t0 = now_ms();
    assert_int_equal(deta_outbox_relay_stop(r, 1500), DETA_ERR_TRANSIENT);
    long took = now_ms() - t0;
    if (took < 1400 || took > 3000)
        fail_msg("a relay stop bounded by 1500 ms took %ld ms", took);
    deta_outbox_relay_free(r);
    deta_producer_purge(dead_producer);
    deta_producer_free(dead_producer);
    assert_int_equal(rows(key, true), 0);
    assert_int_equal(rows(key, false), 1);

    /* The next relay publishes it. */
    relay1 = deta_outbox_relay_new(&cfg, producer, metrics1, err, sizeof err);
    assert_non_null(relay1);
    assert_int_equal(deta_outbox_relay_start(relay1, err, sizeof err), DETA_OK);
    assert_true(wait_published(key, 1, WAIT_MS));
    assert_int_equal(ts_kafka_count(TOPIC, key, 10000), 1);
}

/* ---- a relay that lost its lock (#22 finding 12) ---- */

/* Runs sql (several statements: one implicit transaction) on the scratch database. */
static void scratch_sql(const char *sql) {
    PGconn *c = ts_pg(dbname);
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
}

/* Commits n rows of order key at once (one transaction, one notification), each
 * with the payload payload_sql (an SQL expression). */
static void commit_rows(const char *key, int n, const char *payload_sql) {
    char sql[1024];
    snprintf(sql, sizeof sql,
             "INSERT INTO outbox (topic, msg_key, payload) SELECT '" TOPIC "', '%s', %s"
             " FROM generate_series(1, %d); SELECT pg_notify('deta_outbox', '')",
             key, payload_sql, n);
    scratch_sql(sql);
}

/* Whether session pid's last statement was the relay's SELECT of rows and it
 * went idle: it holds a batch and waits for the broker. */
static bool wait_batch_in_hand(long pid, int timeout_ms) {
    char p[24];
    snprintf(p, sizeof p, "%ld", pid);
    const char *params[] = {p};
    PGconn *c = ts_pg("postgres");
    bool seen = false;
    for (long end = now_ms() + timeout_ms; !seen && now_ms() < end; ts_sleep_ms(10))
        seen = ts_pg_long(c,
                          "SELECT count(*) FROM pg_stat_activity WHERE pid = $1::int"
                          " AND state = 'idle' AND query LIKE 'SELECT %FROM outbox%ORDER BY%'",
                          1, params) == 1;
    PQfinish(c);
    return seen;
}


static long unpublished(const char *key) { return rows(key, false) - rows(key, true); }

#define LOST_ROWS 5000 /* ten batches: B is still at it when A's batch in hand is done */

static void test_a_relay_that_lost_its_lock_stops(void **state) {
    (void)state;
    char err[256], key[64];
    /* Relay A leads alone; relay B (another instance: its own producer) stands by. */
    deta_outbox_relay_free(relay1);
    relay1 = NULL;
    deta_metrics_t *ma = deta_metrics_new(), *mb = deta_metrics_new();
    deta_producer_t *pb = deta_producer_new(&cfg, err, sizeof err);
    deta_outbox_relay_t *a = deta_outbox_relay_new(&cfg, producer, ma, err, sizeof err);
    assert_non_null(a);
    assert_int_equal(deta_outbox_relay_start(a, err, sizeof err), DETA_OK);
    long pid_a = 0;
    for (long end = now_ms() + WAIT_MS; (pid_a = relay_backend()) == 0 && now_ms() < end;)
        ts_sleep_ms(50);
    assert_true(pid_a > 0);
    deta_outbox_relay_t *b = deta_outbox_relay_new(&cfg, pb, mb, err, sizeof err);
    assert_non_null(b);
    assert_int_equal(deta_outbox_relay_start(b, err, sizeof err), DETA_OK);

    /* The broker answers Produce requests slowly for a while (each refused with
     * REQUEST_TIMED_OUT, retried by the producer): A's first batch stays
     * in its hands while its backend is terminated. */
    ts_broker("errors 0 7 30");
    new_key(key, sizeof key, "lost-lock");
    commit_rows(key, LOST_ROWS, "'{}'");
    assert_true(wait_batch_in_hand(pid_a, WAIT_MS));
    terminate(pid_a);
    long pid_b = 0;
    for (long end = now_ms() + WAIT_MS; ((pid_b = relay_backend()) == 0 || pid_b == pid_a) &&
                                        now_ms() < end;)
        ts_sleep_ms(20);
    assert_true(pid_b > 0 && pid_b != pid_a); /* B holds the lock now */

    long deadline = now_ms() + 60000;
    while (unpublished(key) > 0 && now_ms() < deadline)
        ts_sleep_ms(100);
    assert_int_equal(unpublished(key), 0);
    ts_sleep_ms(500); /* what A might still send is sent by now */
    double by_a = published_by(ma), by_b = published_by(mb);
    print_message("published by A %.0f (its batch in hand: 500), by B %.0f\n", by_a, by_b);
    /* A published only the batch it had read under the lock; every later row
     * went out by B alone, once. */
    assert_true(by_a <= 500);
    assert_true(by_b >= LOST_ROWS - 500);
    int on_kafka = ts_kafka_count(TOPIC, key, 20000);
    assert_true(on_kafka >= LOST_ROWS && on_kafka <= LOST_ROWS + 500);

    /* A took the lock again first thing, found it taken, and stands by: when B
     * goes, A publishes again. */
    deta_outbox_relay_free(b);
    deta_producer_free(pb);
    double a_before = published_by(ma);
    new_key(key, sizeof key, "lost-lock-after");
    commit_one(key);
    assert_true(wait_published(key, 1, WAIT_MS));
    assert_true(published_by(ma) >= a_before + 1);
    deta_outbox_relay_free(a);
    deta_metrics_free(ma);
    deta_metrics_free(mb);
    ts_broker("clear");

    relay1 = deta_outbox_relay_new(&cfg, producer, metrics1, err, sizeof err);
    assert_non_null(relay1);
    assert_int_equal(deta_outbox_relay_start(relay1, err, sizeof err), DETA_OK);
}

/* ---- a row the broker refuses (#22 finding 13) ---- */

/* Whether one row of order key with a payload LIKE payload_like is parked (and
 * unpublished) for a reason LIKE reason_like. */
static bool parked_like(const char *key, const char *payload_like, const char *reason_like) {
    const char *params[] = {key, payload_like, reason_like};
    PGconn *c = ts_pg(dbname);
    long n = ts_pg_long(c,
                        "SELECT count(*) FROM outbox WHERE msg_key = $1 AND payload LIKE $2"
                        " AND parked_at IS NOT NULL AND published_at IS NULL"
                        " AND parked_reason LIKE $3",
                        3, params);
    PQfinish(c);
    return n == 1;
}

static void test_a_refused_row_is_parked(void **state) {
    (void)state;
    char key[64], other[64], later[64], sql[1024];
    const char *parked = "deta_outbox_parked_total";
    double parked_before = counter(metrics1, parked, NULL);
    new_key(key, sizeof key, "refused");
    new_key(other, sizeof other, "behind-refused");
    /* In one transaction: the order's first event, one larger than the broker
     * takes (message.max.bytes, 1 MB), the order's next event; then another
     * order's event, behind them all. */
    snprintf(sql, sizeof sql,
             "INSERT INTO outbox (topic, msg_key, payload) VALUES"
             " ('" TOPIC "', '%s', '{\"n\":1}'), ('" TOPIC "', '%s', '{\"n\":2,' || repeat('x', 1100000)),"
             " ('" TOPIC "', '%s', '{\"n\":3}'), ('" TOPIC "', '%s', '{\"n\":1}');"
             " SELECT pg_notify('deta_outbox', '')",
             key, key, key, other);
    scratch_sql(sql);

    /* The rows behind the refused one go. */
    assert_true(wait_published(other, 1, WAIT_MS));
    assert_int_equal(ts_kafka_count(TOPIC, other, 10000), 1);
    /* The refused row is parked with the broker's reason, and the order's next
     * row is held behind it: one order's events stay in order. */
    assert_int_equal(rows(key, true), 1);
    assert_true(parked_like(key, "{\"n\":2,%", "refused by the broker:%too large%"));
    assert_true(parked_like(key, "{\"n\":3}", "held:%"));
    assert_int_equal(ts_kafka_count(TOPIC, key, 10000), 1);
    assert_true(counter(metrics1, parked, NULL) >= parked_before + 2);
    assert_true(deta_gauge_value(deta_gauge(metrics1, "deta_outbox_parked", "", NULL)) >= 2);

    /* A later event of the held order is held too; other orders flow. */
    new_key(later, sizeof later, "after-parked");
    commit_one(key);
    commit_one(later);
    assert_true(wait_published(later, 1, WAIT_MS));
    assert_int_equal(rows(key, false), 4);
    assert_int_equal(rows(key, true), 1);
    assert_int_equal(ts_kafka_count(TOPIC, key, 10000), 1);
    assert_true(counter(metrics1, parked, NULL) >= parked_before + 3);

    /* Parked rows are not pending: they wait for an operator, not for the relay. */
    deta_gauge_t *pending = deta_gauge(metrics1, "deta_outbox_pending", "", NULL);
    deta_outbox_relay_free(relay1); /* a new relay counts what is left */
    relay1 = NULL;
    char err[256];
    relay1 = deta_outbox_relay_new(&cfg, producer, metrics1, err, sizeof err);
    assert_non_null(relay1);
    assert_int_equal(deta_outbox_relay_start(relay1, err, sizeof err), DETA_OK);
    new_key(later, sizeof later, "after-restart");
    commit_one(later);
    assert_true(wait_published(later, 1, WAIT_MS));
    assert_true(deta_gauge_value(pending) == 0);
    assert_int_equal(rows(key, false), 4);
}

/* The broker refuses a Produce request for good (TOPIC_AUTHORIZATION_FAILED,
 * injected): the row is parked, the rows behind it (for another topic: the
 * producer fails the refused topic's next messages at once) go. An injected
 * error is the cluster's, taken by whichever client produces next (the stack's
 * services dead-letter the test's events): a row that went out because another
 * client took the error is tried again with a fresh one. */
#define REFUSED_TOPIC "it-outbox-refused"

static void test_a_topic_refused_row_is_parked(void **state) {
    (void)state;
    char key[64], other[64], sql[512];
    bool parked = false;
    for (int attempt = 0; attempt < 5 && !parked; attempt++) {
        new_key(key, sizeof key, "unauthorized");
        ts_broker("errors 0 29 1");
        snprintf(sql, sizeof sql,
                 "INSERT INTO outbox (topic, msg_key, payload) VALUES"
                 " ('" REFUSED_TOPIC "', '%s', '{}'); SELECT pg_notify('deta_outbox', '')",
                 key);
        scratch_sql(sql);
        long deadline = now_ms() + WAIT_MS;
        while (!(parked = parked_like(key, "%", "%")) && rows(key, true) == 0 &&
               now_ms() < deadline)
            ts_sleep_ms(50);
    }
    ts_broker("clear");
    assert_true(parked_like(key, "%", "refused by the broker:%uthoriz%"));
    new_key(other, sizeof other, "behind-unauthorized");
    commit_one(other);
    assert_true(wait_published(other, 1, WAIT_MS));
    assert_int_equal(rows(key, true), 0);
    assert_int_equal(ts_kafka_count(TOPIC, other, 10000), 1);
    assert_int_equal(ts_kafka_count(REFUSED_TOPIC, key, 10000), 0);
}

/* ---- a read-only server (#22 finding 12) ---- */

static void set_read_only(bool on) {
    char sql[160];
    snprintf(sql, sizeof sql, "ALTER DATABASE %s %s", dbname,
             on ? "SET default_transaction_read_only = on" : "RESET default_transaction_read_only");
    ts_pg_admin(sql);
    terminate(relay_backend()); /* the relay's next session has the new default */
}

/* A server that answers but takes no writes (a standby, a demoted primary): the
 * relay cannot mark what it publishes, so it must not publish (it would send the
 * same rows again every turn); once the server is writable, the row goes once. */
static void test_a_read_only_server_gets_nothing_published(void **state) {
    (void)state;
    char key[64], sql[512];
    const char *errors = "deta_outbox_publish_errors_total";
    set_read_only(true);
    new_key(key, sizeof key, "read-only");
    PGconn *c = ts_pg(dbname);
    PGresult *r = PQexec(c, "SET default_transaction_read_only = off");
    PQclear(r);
    snprintf(sql, sizeof sql,
             "INSERT INTO outbox (topic, msg_key, payload) VALUES ('" TOPIC "', '%s', '{}');"
             " SELECT pg_notify('deta_outbox', '')",
             key);
    r = PQexec(c, sql);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    PQclear(r);
    PQfinish(c);
    double before = counter(metrics1, errors, NULL);
    long deadline = now_ms() + WAIT_MS;
    while (counter(metrics1, errors, NULL) < before + 4 && now_ms() < deadline)
        ts_sleep_ms(50);
    assert_true(counter(metrics1, errors, NULL) >= before + 4); /* turns failed */
    assert_int_equal(ts_kafka_count(TOPIC, key, 10000), 0);

    set_read_only(false);
    assert_true(wait_published(key, 1, WAIT_MS));
    assert_int_equal(ts_kafka_count(TOPIC, key, 10000), 1);
}

/* ---- one transaction per turn (#18) ---- */

/* Committed transactions of the scratch database, read from another database
 * (reading them here would add one); a backend's counts reach the statistics at
 * the latest when it exits. */
static long scratch_commits(void) {
    const char *params[] = {dbname};
    PGconn *c = ts_pg("postgres");
    long n = ts_pg_long(c, "SELECT xact_commit FROM pg_stat_database WHERE datname = $1", 1,
                        params);
    PQfinish(c);
    return n;
}

/* Waits until no backend is connected to the scratch database: each has
 * flushed its statistics. */
static void await_no_backends(void) {
    const char *params[] = {dbname};
    PGconn *c = ts_pg("postgres");
    for (long end = now_ms() + WAIT_MS; now_ms() < end; ts_sleep_ms(50))
        if (ts_pg_long(c, "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", 1,
                       params) == 0)
            break;
    PQfinish(c);
    ts_sleep_ms(300);
}

#define TURN_ROWS 60

/* Commits TURN_ROWS rows of order key, one transaction each, 15 ms apart, on a
 * connection of its own (ended when done: its statistics are flushed). */
static void commit_apart(const char *key) {
    PGconn *c = ts_pg(dbname);
    char sql[512];
    snprintf(sql, sizeof sql,
             "INSERT INTO outbox (topic, msg_key, payload) VALUES ('" TOPIC "', '%s', '{}');"
             " SELECT pg_notify('deta_outbox', '')",
             key);
    for (int i = 0; i < TURN_ROWS; i++) {
        PGresult *res = PQexec(c, sql); /* one implicit transaction */
        assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
        PQclear(res);
        ts_sleep_ms(15);
    }
    PQfinish(c);
}

/* Rows committed one at a time, each waking the relay: a turn marks what the
 * previous one sent in the statement that selects its rows, so the relay's
 * transactions are about one per turn (plus its setup and the marks written
 * alone when no turn follows soon), not two (a SELECT, then an UPDATE). The
 * committer's own transactions are counted first, with no relay running. */
static void test_a_turn_is_one_transaction(void **state) {
    (void)state;
    char err[256], key[64];
    deta_outbox_relay_free(relay1);
    relay1 = NULL;
    deta_db_free(db);
    db = NULL;
    await_no_backends();
    long before = scratch_commits();
    new_key(key, sizeof key, "turns-unsent");
    commit_apart(key); /* the relay sends them in its first turn */
    await_no_backends();
    long committer = scratch_commits() - before;

    before = scratch_commits();
    deta_metrics_t *m = deta_metrics_new();
    deta_outbox_relay_t *r = deta_outbox_relay_new(&cfg, producer, m, err, sizeof err);
    assert_non_null(r);
    assert_int_equal(deta_outbox_relay_start(r, err, sizeof err), DETA_OK);
    for (long end = now_ms() + WAIT_MS; published_by(m) < TURN_ROWS && now_ms() < end;)
        ts_sleep_ms(20);
    assert_int_equal((long)published_by(m), TURN_ROWS);
    new_key(key, sizeof key, "turns");
    commit_apart(key);
    for (long end = now_ms() + WAIT_MS; published_by(m) < 2 * TURN_ROWS && now_ms() < end;)
        ts_sleep_ms(20);
    assert_int_equal((long)published_by(m), 2 * TURN_ROWS);
    double turns = counter(m, "deta_outbox_wakeups_total", "reason=\"notify\"") +
                   counter(m, "deta_outbox_wakeups_total", "reason=\"poll\"") + 1;
    deta_outbox_relay_free(r);
    deta_metrics_free(m);
    await_no_backends();
    long relay_commits = scratch_commits() - before - committer;
    print_message("%d rows, %.0f turns: %ld transactions of the relay (the committer's: %ld)\n",
                  TURN_ROWS, turns, relay_commits, committer);
    /* Besides its statements, the relay's session spends a transaction on each
     * notification Postgres delivers to it while idle (at most one per commit).
     * Two statements a turn would make that about TURN_ROWS + 2 * turns. The
     * slack: the setup (connection, LISTEN, the lock, the parked count, the
     * ping, the purge), the stop, and the marks written alone after each pause
     * (two). */
    assert_true(relay_commits <= TURN_ROWS + (long)turns + 14);
    assert_true(rows(key, true) == TURN_ROWS);

    db = deta_db_new(&cfg);
    assert_non_null(db);
    relay1 = deta_outbox_relay_new(&cfg, producer, metrics1, err, sizeof err);
    assert_non_null(relay1);
    assert_int_equal(deta_outbox_relay_start(relay1, err, sizeof err), DETA_OK);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_needs_a_transaction_and_valid_input),
        cmocka_unit_test(test_published_after_commit_in_order),
        cmocka_unit_test(test_rollback_publishes_nothing),
        cmocka_unit_test(test_woken_by_notify),
        cmocka_unit_test(test_a_topic_refused_row_is_parked),
        cmocka_unit_test(test_reconnects_and_listens_again),
        cmocka_unit_test(test_two_relays_publish_each_row_once),
        cmocka_unit_test(test_failed_publish_keeps_the_row),
        cmocka_unit_test(test_database_down),
        cmocka_unit_test(test_purges_old_published_rows),
        cmocka_unit_test(test_stop_is_bounded),
        cmocka_unit_test(test_a_relay_that_lost_its_lock_stops),
        cmocka_unit_test(test_a_refused_row_is_parked),
        cmocka_unit_test(test_a_read_only_server_gets_nothing_published),
        cmocka_unit_test(test_a_turn_is_one_transaction),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
