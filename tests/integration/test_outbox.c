/*
 * test_outbox.c - deta/outbox.h against the test stack's Postgres and broker.
 *
 * A scratch database (it_outbox_<pid>) holds the outbox; keys are fresh UUIDs
 * because the broker is shared. The relays run on their own threads as in a
 * service, and read the outbox's inserts from the write-ahead log through the
 * slot deta_outbox_<database>, whose confirmed position is their progress
 * (ts_outbox_relayed waits for it). What is checked:
 *   - deta_outbox_add needs a transaction and valid input;
 *   - deta_outbox_add_many writes one order's events in one statement, in
 *     order, and refuses no events, too many, or events of several orders;
 *   - deta_outbox_add_each writes several orders' events in one statement,
 *     each keyed by its own order and published in the order given per key and
 *     topic, and refuses no events, too many, or one without orderId or topic;
 *   - rows are published only after their transaction commits, in id order
 *     within an order, keyed by orderId; a rollback publishes nothing;
 *   - the relay spends no SQL transaction per row or per batch: over 200
 *     committed rows the scratch database's xact_commit grows by the test's
 *     own 200 and a small constant;
 *   - a walsender terminated: the relay streams again, publishes what was
 *     committed meanwhile, and sends nothing it had confirmed again;
 *   - two relays on one database: one streams (START_REPLICATION elsewhere is
 *     refused: the slot "is active for PID"), each row goes once, the standby
 *     holds no walsender; the leader stopping hands over to the standby, whose
 *     stop publishes what was committed before it;
 *   - the broker down: the row stays unconfirmed, unparked, the oldest pending
 *     age above 0 and the errors counted; the broker back: published, the
 *     gauges 0;
 *   - Postgres unreachable: the relay keeps trying, and stops at once;
 *   - stop is bounded: a healthy relay publishes what was committed and stops
 *     at once; one whose broker does not answer stops within its bound,
 *     reports rows left, and the next relay publishes them;
 *   - the purge (at a relay's start): rows older than OUTBOX_RETENTION_S go,
 *     recent and parked rows stay;
 *   - the slot metrics: deta_outbox_slot_retained_bytes and
 *     deta_outbox_slot_lost (0) for the slot;
 *   - deta_outbox_check_server: OK on the stack, DETA_ERR_INVALID naming
 *     REPLICATION for a role without it (wal_level = replica would need a
 *     restart of the stack's Postgres: not tested);
 *   - parking: a row refused with TOPIC_AUTHORIZATION_FAILED and one too large
 *     for the broker are parked, the rows of other orders go on, the later
 *     rows of the order are parked as held; the deta_outbox_parked gauge says
 *     how many; the cause fixed and parked_at cleared, the rows go out again
 *     in id order, the relay clears their parked_reason, and the order flows
 *     again;
 *   - the migration from the polled outbox: rows that committed before the
 *     slot existed and had no published_at are published once, in id order,
 *     marked, and legacy_drain is turned off; rows marked before are not sent;
 *   - the stream (lib/src/outbox_stream.h) read without waiting hands over
 *     everything already received, not one of libpq's 16 kB reads: a backlog
 *     of 120 rows (over 32 kB of messages, well inside a socket's buffers),
 *     already sent by the server, comes out whole from calls that do not
 *     wait. The relay publishes what it read when such a call returns nothing,
 *     so one read per batch capped a database's rows per second at one read
 *     per broker round trip.
 * CMOCKA_TEST_FILTER="test_x*" runs some of them.
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
#include "outbox_internal.h"
#include "outbox_stream.h"
#include "testsupport.h"

#define TOPIC DETA_TOPIC_ORDER_EVENTS
#define OTHER_TOPIC DETA_TOPIC_ETA_EVENTS
#define WAIT_MS 20000

static char dbname[64];
static char slot[96]; /* deta_outbox_<dbname> */
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

static void start_relay1(void) {
    char err[256];
    relay1 = deta_outbox_relay_new(&cfg, producer, metrics1, err, sizeof err);
    if (!relay1 || deta_outbox_relay_start(relay1, err, sizeof err) != DETA_OK)
        fail_msg("relay: %s", err);
}

static int setup(void **state) {
    (void)state;
    deta_log_init("it-outbox", DETA_LOG_WARN);
    char err[256];
    if (ts_scratch_db_create("it-outbox", "outbox", &cfg) != 0)
        return -1;
    snprintf(dbname, sizeof dbname, "%s", cfg.pg_database);
    snprintf(slot, sizeof slot, "deta_outbox_%s", dbname);
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
    /* The first leader of a database publishes, from the table, the rows that
     * committed before its slot existed (legacy_drain, on after the migration);
     * rows that commit meanwhile may go twice. The tests start after it. */
    PGconn *c = ts_pg(dbname);
    long draining = 1;
    for (long end = now_ms() + WAIT_MS; draining && now_ms() < end; ts_sleep_ms(50))
        draining = ts_pg_long(c, "SELECT count(*) FROM outbox_relay_state WHERE legacy_drain",
                              0, NULL);
    PQfinish(c);
    if (draining) {
        fprintf(stderr, "the relay did not start\n");
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

/* Adds an event for order key inside the open transaction; its id in event_id. */
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

static void commit_event(const char *key, const char *type, char event_id[DETA_UUID_LEN + 1]) {
    char err[256];
    assert_int_equal(deta_db_begin(db, err, sizeof err), DETA_OK);
    add_event(key, type, event_id);
    assert_int_equal(deta_db_commit(db, err, sizeof err), DETA_OK);
}

static void commit_one(const char *key) { commit_event(key, DETA_EVT_ORDER_CREATED, NULL); }

/* Runs sql (several statements: one implicit transaction) on the scratch database. */
static void scratch_sql(const char *sql) {
    PGconn *c = ts_pg(dbname);
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
}

/* A count on the scratch database with up to three text parameters. */
static long scratch_long(const char *sql, int n, const char *a, const char *b, const char *c3) {
    const char *params[] = {a, b, c3};
    PGconn *c = ts_pg(dbname);
    long v = ts_pg_long(c, sql, n, params);
    PQfinish(c);
    return v;
}

static long rows(const char *key) {
    return scratch_long("SELECT count(*) FROM outbox WHERE msg_key = $1", 1, key, NULL, NULL);
}

/* The server's flushed WAL position now, as text: after a commit, at or past
 * its end. */
static void wal_flushed(char out[32]) {
    PGconn *c = ts_pg("postgres");
    PGresult *r = PQexec(c, "SELECT pg_current_wal_flush_lsn()::text");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    snprintf(out, 32, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(c);
}

/* Whether the slot's confirmed position is at or past lsn. */
static bool slot_past(const char *lsn) {
    const char *params[] = {slot, lsn};
    PGconn *c = ts_pg("postgres");
    long n = ts_pg_long(c,
                        "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1"
                        " AND confirmed_flush_lsn >= $2::pg_lsn",
                        2, params);
    PQfinish(c);
    return n == 1;
}

/* Whether the relay has confirmed its stream past everything committed so far. */
static bool relayed(long timeout_ms) {
    PGconn *c = ts_pg(dbname);
    bool done = ts_outbox_relayed(c, timeout_ms);
    PQfinish(c);
    return done;
}

/* The walsender of slot name (0: nobody streams it), asked from another database. */
static long slot_pid_of(const char *name) {
    const char *params[] = {name};
    PGconn *c = ts_pg("postgres");
    long pid = ts_pg_long(c,
                          "SELECT coalesce(max(active_pid), 0) FROM pg_replication_slots"
                          " WHERE slot_name = $1",
                          1, params);
    PQfinish(c);
    return pid;
}

/* The suite's slot's walsender (0: nobody streams it). */
static long slot_pid(void) { return slot_pid_of(slot); }

/* Waits until a walsender other than not_pid streams the slot; its pid. */
static long await_streamer(long not_pid, int timeout_ms) {
    long pid = 0;
    for (long end = now_ms() + timeout_ms; now_ms() < end; ts_sleep_ms(20))
        if ((pid = slot_pid()) != 0 && pid != not_pid)
            return pid;
    return 0;
}

static void terminate(long pid) {
    char p[24];
    snprintf(p, sizeof p, "%ld", pid);
    const char *params[] = {p};
    PGconn *admin = ts_pg("postgres");
    assert_int_equal(ts_pg_long(admin, "SELECT pg_terminate_backend($1::int)::int", 1, params), 1);
    PQfinish(admin);
}

static double counter(deta_metrics_t *m, const char *name, const char *labels) {
    return deta_counter_value(deta_counter(m, name, "", labels));
}

static double gauge(deta_metrics_t *m, const char *name) {
    return deta_gauge_value(deta_gauge(m, name, "", NULL));
}

static double published_by(deta_metrics_t *m) {
    return counter(m, "deta_outbox_published_total", NULL);
}

/* Every value with this key on topic, in partition order (one key, one
 * partition); reads until want values arrived or the timeout. */
static int read_values(const char *topic, const char *key, int want, int timeout_ms, char **out) {
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", ts_env("KAFKA_BOOTSTRAP_SERVERS"), err, sizeof err);
    rd_kafka_conf_set(conf, "group.id", "it-outbox-reader", err, sizeof err);
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof err);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    assert_non_null(rk);
    rd_kafka_topic_t *t = rd_kafka_topic_new(rk, topic, NULL);
    const rd_kafka_metadata_t *md = NULL;
    assert_int_equal(rd_kafka_metadata(rk, 0, t, &md, 5000), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(8);
    for (int p = 0; p < md->topics[0].partition_cnt; p++)
        rd_kafka_topic_partition_list_add(parts, topic, md->topics[0].partitions[p].id)->offset =
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

/* The values of key on topic are exactly want[0..n), in that order. */
static void assert_values(const char *topic, const char *key, const char *const *want, int n) {
    char *got[16] = {0};
    assert_true(n <= 16);
    int have = read_values(topic, key, n, WAIT_MS, got);
    for (int i = 0; i < have; i++) {
        if (i < n && strcmp(got[i], want[i]) != 0)
            fail_msg("%s: value %d is %s, not %s", key, i, got[i], want[i]);
        free(got[i]);
    }
    assert_int_equal(have, n);
    assert_int_equal(ts_kafka_count(topic, key, 10000), n);
}

/* ---- writing, and publishing after the commit ---- */

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
    assert_int_equal(rows("o-1"), 0);

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
    char ids[5][DETA_UUID_LEN + 1];
    const char *types[] = {DETA_EVT_ORDER_CREATED, DETA_EVT_INVENTORY_RESERVED,
                           DETA_EVT_PAYMENT_AUTHORIZED, DETA_EVT_ORDER_CREATED,
                           DETA_EVT_INVENTORY_RESERVED};
    new_key(key, sizeof key, "order");
    assert_int_equal(deta_db_begin(db, err, sizeof err), DETA_OK);
    for (int i = 0; i < 3; i++)
        add_event(key, types[i], ids[i]);
    /* Uncommitted: the relay streams past the other databases' traffic and
     * its keepalives, and sends nothing of it. */
    ts_sleep_ms(DETA_OUTBOX_POLL_MS + 500);
    assert_int_equal(ts_kafka_count(TOPIC, key, 10000), 0);
    assert_int_equal(rows(key), 0); /* invisible outside the transaction */
    assert_int_equal(deta_db_commit(db, err, sizeof err), DETA_OK);
    /* Two more transactions of the same order. */
    commit_event(key, types[3], ids[3]);
    commit_event(key, types[4], ids[4]);
    assert_true(relayed(WAIT_MS));

    char *values[5] = {0};
    assert_int_equal(read_values(TOPIC, key, 5, WAIT_MS, values), 5);
    for (int i = 0; i < 5; i++) {
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
    assert_int_equal(rows(key), 5);
    assert_int_equal(ts_kafka_count(TOPIC, key, 10000), 5);
}

/* deta_outbox_add_many: the events of one order in one statement (their rows
 * share the inserting command's id, cmin), each on its own topic, published in
 * the order given, before a row added after them; bad input is refused and
 * writes nothing. */
static void test_many_in_one_statement_in_order(void **state) {
    (void)state;
    char key[64], other[64], err[256];
    new_key(key, sizeof key, "many");
    new_key(other, sizeof other, "many-other");
    const char *types[] = {DETA_EVT_DELIVERY_ASSIGNED, DETA_EVT_ETA_UPDATED,
                           DETA_EVT_DELIVERY_PICKED_UP};
    deta_event_t evs[3], stray;
    const deta_event_t *many[DETA_OUTBOX_ADD_MAX + 1];
    for (int i = 0; i < 3; i++) {
        assert_int_equal(deta_event_init(&evs[i], types[i], key, "corr-m", "delivery-service",
                                         json_pack("{s:i}", "n", i), err, sizeof err),
                         DETA_OK);
        many[i] = &evs[i];
    }
    assert_int_equal(deta_event_init(&stray, types[0], other, "corr-m", "delivery-service",
                                     json_object(), err, sizeof err),
                     DETA_OK);
    /* the second on a topic of its own, as delivery-service's eta.updated */
    const char *topics[DETA_OUTBOX_ADD_MAX + 1] = {TOPIC, OTHER_TOPIC, TOPIC};
    assert_int_equal(deta_db_begin(db, err, sizeof err), DETA_OK);
    assert_int_equal(deta_outbox_add_many(db, topics, many, 0, err, sizeof err),
                     DETA_ERR_INVALID);
    for (int i = 3; i <= DETA_OUTBOX_ADD_MAX; i++) {
        many[i] = &evs[0];
        topics[i] = TOPIC;
    }
    assert_int_equal(deta_outbox_add_many(db, topics, many, DETA_OUTBOX_ADD_MAX + 1, err,
                                          sizeof err),
                     DETA_ERR_INVALID);
    many[3] = &stray; /* another order's: another key */
    assert_int_equal(deta_outbox_add_many(db, topics, many, 4, err, sizeof err),
                     DETA_ERR_INVALID);
    assert_non_null(strstr(err, "orderId"));
    topics[1] = ""; /* a row without a topic */
    assert_int_equal(deta_outbox_add_many(db, topics, many, 3, err, sizeof err),
                     DETA_ERR_INVALID);
    assert_non_null(strstr(err, "topic"));
    topics[1] = OTHER_TOPIC;
    assert_int_equal(deta_outbox_add_many(db, NULL, many, 3, err, sizeof err), DETA_ERR_INVALID);
    assert_int_equal(deta_outbox_add_many(db, topics, many, 3, err, sizeof err), DETA_OK);
    char last_id[DETA_UUID_LEN + 1];
    add_event(key, DETA_EVT_DELIVERY_DELIVERED, last_id);
    assert_int_equal(deta_db_commit(db, err, sizeof err), DETA_OK);
    assert_int_equal(rows(other), 0);
    assert_int_equal(scratch_long("SELECT count(DISTINCT cmin::text) FROM outbox WHERE msg_key = $1"
                                  " AND payload NOT LIKE '%' || $2 || '%'",
                                  2, key, last_id, NULL),
                     1);
    assert_int_equal(scratch_long("SELECT count(DISTINCT cmin::text) FROM outbox WHERE msg_key = $1",
                                  1, key, NULL, NULL),
                     2);
    assert_true(relayed(WAIT_MS));
    /* TOPIC has the first, the third and the row added after them, in that
     * order; OTHER_TOPIC the second */
    char *values[4] = {0};
    assert_int_equal(read_values(TOPIC, key, 3, WAIT_MS, values), 3);
    assert_int_equal(read_values(OTHER_TOPIC, key, 1, WAIT_MS, values + 3), 1);
    const int from[4] = {0, 2, 3, 1}; /* values[i] is the from[i]-th row written */
    for (int i = 0; i < 4; i++) {
        deta_event_t ev;
        assert_int_equal(deta_event_parse(values[i], strlen(values[i]), &ev, err, sizeof err),
                         DETA_OK);
        assert_string_equal(ev.event_id, from[i] < 3 ? evs[from[i]].event_id : last_id);
        assert_string_equal(ev.order_id, key);
        if (from[i] < 3)
            assert_int_equal(json_integer_value(json_object_get(ev.payload, "n")), from[i]);
        deta_event_clear(&ev);
        free(values[i]);
    }
    for (int i = 0; i < 3; i++)
        deta_event_clear(&evs[i]);
    deta_event_clear(&stray);
}

/* deta_outbox_add_each: three orders' events interleaved, on two topics, in
 * one statement (one cmin); each order's rows are published under its own key,
 * in the order given; bad input is refused and writes nothing. */
static void test_each_in_one_statement_in_order(void **state) {
    (void)state;
    char keys[3][64], err[256];
    for (int k = 0; k < 3; k++)
        new_key(keys[k], sizeof keys[k], "each");
    enum { N = 7 };
    /* the i-th event is of order of[i], on topic on[i] */
    const int of[N] = {0, 1, 0, 2, 1, 0, 2};
    const char *on[N] = {TOPIC, TOPIC, OTHER_TOPIC, TOPIC, TOPIC, TOPIC, OTHER_TOPIC};
    deta_event_t evs[N], nokey;
    const deta_event_t *each[N];
    for (int i = 0; i < N; i++) {
        assert_int_equal(deta_event_init(&evs[i], DETA_EVT_DELIVERY_PICKED_UP, keys[of[i]],
                                         "corr-e", "delivery-service",
                                         json_pack("{s:i}", "n", i), err, sizeof err),
                         DETA_OK);
        each[i] = &evs[i];
    }
    assert_int_equal(deta_event_init(&nokey, DETA_EVT_DELIVERY_PICKED_UP, keys[0], "corr-e",
                                     "delivery-service", json_object(), err, sizeof err),
                     DETA_OK);
    nokey.order_id[0] = '\0';
    /* outside a transaction */
    assert_int_equal(deta_outbox_add_each(db, on, each, N, err, sizeof err), DETA_ERR_INVALID);
    assert_int_equal(deta_db_begin(db, err, sizeof err), DETA_OK);
    assert_int_equal(deta_outbox_add_each(db, on, each, 0, err, sizeof err), DETA_ERR_INVALID);
    assert_int_equal(deta_outbox_add_each(db, on, each, DETA_OUTBOX_EACH_MAX + 1, err,
                                          sizeof err),
                     DETA_ERR_INVALID);
    assert_int_equal(deta_outbox_add_each(db, NULL, each, N, err, sizeof err), DETA_ERR_INVALID);
    const deta_event_t *bad[2] = {each[0], &nokey};
    assert_int_equal(deta_outbox_add_each(db, on, bad, 2, err, sizeof err), DETA_ERR_INVALID);
    assert_non_null(strstr(err, "orderId"));
    const char *untopiced[2] = {TOPIC, ""};
    assert_int_equal(deta_outbox_add_each(db, untopiced, each, 2, err, sizeof err),
                     DETA_ERR_INVALID);
    assert_non_null(strstr(err, "topic"));
    assert_int_equal(deta_outbox_add_each(db, on, each, N, err, sizeof err), DETA_OK);
    assert_int_equal(deta_db_commit(db, err, sizeof err), DETA_OK);
    assert_int_equal(scratch_long("SELECT count(DISTINCT cmin::text) FROM outbox"
                                  " WHERE msg_key IN ($1, $2, $3)",
                                  3, keys[0], keys[1], keys[2]),
                     1);
    assert_int_equal(scratch_long("SELECT count(*) FROM outbox WHERE msg_key IN ($1, $2, $3)", 3,
                                  keys[0], keys[1], keys[2]),
                     N);
    assert_true(relayed(WAIT_MS));
    const char *topics[2] = {TOPIC, OTHER_TOPIC};
    for (int k = 0; k < 3; k++)
        for (int t = 0; t < 2; t++) {
            int want[N], nwant = 0;
            for (int i = 0; i < N; i++)
                if (of[i] == k && strcmp(on[i], topics[t]) == 0)
                    want[nwant++] = i;
            char *values[N] = {0};
            assert_int_equal(read_values(topics[t], keys[k], nwant, WAIT_MS, values), nwant);
            for (int j = 0; j < nwant; j++) {
                deta_event_t ev;
                assert_int_equal(
                    deta_event_parse(values[j], strlen(values[j]), &ev, err, sizeof err), DETA_OK);
                assert_string_equal(ev.event_id, evs[want[j]].event_id);
                assert_string_equal(ev.order_id, keys[k]);
                assert_int_equal(json_integer_value(json_object_get(ev.payload, "n")), want[j]);
                deta_event_clear(&ev);
                free(values[j]);
            }
        }
    for (int i = 0; i < N; i++)
        deta_event_clear(&evs[i]);
    deta_event_clear(&nokey);
}

static void test_rollback_publishes_nothing(void **state) {
    (void)state;
    char key[64], marker[64], err[256];
    new_key(key, sizeof key, "rolled-back");
    new_key(marker, sizeof marker, "marker");
    assert_int_equal(deta_db_begin(db, err, sizeof err), DETA_OK);
    add_event(key, DETA_EVT_ORDER_CREATED, NULL);
    deta_db_rollback(db);
    commit_one(marker); /* written after: once the relay is past it, it is past key */
    assert_true(relayed(WAIT_MS));
    assert_int_equal(rows(key), 0);
    assert_int_equal(ts_kafka_count(TOPIC, marker, 10000), 1);
    assert_int_equal(ts_kafka_count(TOPIC, key, 10000), 0);
}

/* ---- no transaction per row (#18) ---- */

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

/* ts_outbox_relayed, asked from another database (no transaction in the
 * scratch one). */
static bool relayed_quietly(long timeout_ms) {
    PGconn *c = ts_pg("postgres");
    PGresult *r = PQexec(c, "SELECT pg_current_wal_flush_lsn()::text");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    char target[32];
    snprintf(target, sizeof target, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    const char *params[] = {slot, target};
    bool done = false;
    for (long end = now_ms() + timeout_ms; !done && now_ms() < end; ts_sleep_ms(50))
        done = ts_pg_long(c,
                          "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1"
                          " AND confirmed_flush_lsn >= $2::pg_lsn",
                          2, params) == 1;
    PQfinish(c);
    return done;
}

#define XACT_ROWS 200
/* The relay's own transactions over the run: its start (the slot's name and
 * creation check, the parked rows' orders, the legacy drain's flag, the first
 * purge, the first slot metrics), one slot-metrics query per 10 s and a purge
 * per minute of a run of a few seconds, its stop (the flushed WAL position),
 * and its two sessions' own: 17 measured. One more per batch (rows committed
 * 5 ms apart go one or two a batch) made 130, one per row would make 200. */
#define XACT_RELAY_MAX 30

/* Rows committed one at a time, XACT_ROWS of them, with one relay publishing:
 * the scratch database's xact_commit grows by those XACT_ROWS and a few of the
 * relay's own (the old relay marked rows published: a transaction per turn). */
static void test_no_transaction_per_row(void **state) {
    (void)state;
    char err[256], key[64], sql[512];
    deta_outbox_relay_free(relay1);
    relay1 = NULL;
    deta_db_free(db);
    db = NULL;
    await_no_backends();
    long before = scratch_commits();

    deta_metrics_t *m = deta_metrics_new();
    deta_outbox_relay_t *r = deta_outbox_relay_new(&cfg, producer, m, err, sizeof err);
    assert_non_null(r);
    assert_int_equal(deta_outbox_relay_start(r, err, sizeof err), DETA_OK);
    assert_true(await_streamer(0, WAIT_MS) > 0);
    new_key(key, sizeof key, "xacts");
    snprintf(sql, sizeof sql,
             "INSERT INTO outbox (topic, msg_key, payload) VALUES ('" TOPIC "', '%s', '{}')", key);
    PGconn *c = ts_pg(dbname);
    for (int i = 0; i < XACT_ROWS; i++) {
        PGresult *res = PQexec(c, sql); /* one transaction */
        assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
        PQclear(res);
        ts_sleep_ms(5);
    }
    PQfinish(c);
    assert_true(relayed_quietly(WAIT_MS));
    double published = published_by(m);
    deta_outbox_relay_free(r);
    deta_metrics_free(m);
    await_no_backends();
    long relay_commits = scratch_commits() - before - XACT_ROWS;
    print_message("%d rows committed one at a time: %ld transactions of the relay (at most %d)\n",
                  XACT_ROWS, relay_commits, XACT_RELAY_MAX);
    assert_int_equal((long)published, XACT_ROWS);
    assert_true(relay_commits >= 0 && relay_commits <= XACT_RELAY_MAX);

    db = deta_db_new(&cfg);
    assert_non_null(db);
    start_relay1();
    assert_int_equal(ts_kafka_count(TOPIC, key, 10000), XACT_ROWS);
}

/* ---- the stream lost, two relays ---- */

static void test_streams_again_after_its_walsender_ends(void **state) {
    (void)state;
    char done_key[64], key[64];
    new_key(done_key, sizeof done_key, "confirmed-before");
    new_key(key, sizeof key, "committed-meanwhile");
    commit_one(done_key);
    assert_true(relayed(WAIT_MS)); /* idle: everything sent is confirmed */
    long pid = slot_pid();
    assert_true(pid > 0);
    double before = published_by(metrics1);
    terminate(pid);
    for (int i = 0; i < 5; i++)
        commit_one(key);
    assert_true(await_streamer(pid, WAIT_MS) > 0);
    assert_true(relayed(WAIT_MS));
    assert_int_equal(ts_kafka_count(TOPIC, key, 10000), 5);
    /* What it had confirmed was not streamed, nor sent, again. */
    assert_int_equal(ts_kafka_count(TOPIC, done_key, 10000), 1);
    assert_true(published_by(metrics1) - before == 5);
}

/* START_REPLICATION of the slot on a connection of the test's own: the
 * server's error ("" when it streamed). */
static void try_streaming(char *why, size_t size) {
    const char *keys[] = {"host", "port", "user", "password", "dbname", "replication", NULL};
    const char *vals[] = {ts_env("PGHOST"), ts_env("PGPORT"), ts_env("PGUSER"),
                          ts_env("PGPASSWORD"), dbname, "database", NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 0);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    char sql[256];
    snprintf(sql, sizeof sql,
             "START_REPLICATION SLOT \"%s\" LOGICAL 0/0 (proto_version '1',"
             " publication_names '\"deta_outbox\"')",
             slot);
    PGresult *r = PQexec(c, sql);
    snprintf(why, size, "%s", PQresultStatus(r) == PGRES_COPY_BOTH ? "" : PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
}

static void test_two_relays_publish_each_row_once(void **state) {
    (void)state;
    char err[256], key[64], why[512];
    assert_true(relayed(WAIT_MS));
    long leader = slot_pid();
    assert_true(leader > 0);
    deta_metrics_t *metrics2 = deta_metrics_new();
    deta_outbox_relay_t *relay2 = deta_outbox_relay_new(&cfg, producer, metrics2, err, sizeof err);
    assert_non_null(relay2);
    assert_int_equal(deta_outbox_relay_start(relay2, err, sizeof err), DETA_OK);
    double one_before = published_by(metrics1);

    new_key(key, sizeof key, "two-relays");
    for (int i = 0; i < 20; i++)
        commit_one(key);
    assert_true(relayed(WAIT_MS));
    assert_int_equal(ts_kafka_count(TOPIC, key, 10000), 20);
    /* relay1 leads, with the same walsender; the standby published nothing. */
    assert_int_equal(slot_pid(), leader);
    assert_true(published_by(metrics1) - one_before == 20);
    assert_true(published_by(metrics2) == 0);
    /* The standby looks with SQL and holds no replication connection: one
     * walsender in the database, the leader's, across two of its turns. */
    for (int turn = 0; turn < 2; turn++) {
        ts_sleep_ms(DETA_OUTBOX_POLL_MS + 200);
        assert_int_equal(scratch_long("SELECT count(*) FROM pg_stat_activity WHERE backend_type"
                                      " = 'walsender' AND datname = current_database()",
                                      0, NULL, NULL, NULL),
                         1);
    }
    /* Only one session streams the slot. */
    try_streaming(why, sizeof why);
    if (!strstr(why, "is active for PID"))
        fail_msg("START_REPLICATION of a streamed slot: \"%s\"", why);

    /* The leader stops: the standby takes over within a few of its tries. */
    assert_int_equal(deta_outbox_relay_stop(relay1, 5000), DETA_OK);
    long t0 = now_ms();
    new_key(key, sizeof key, "handover");
    commit_one(key);
    assert_true(relayed(10000));
    print_message("handed over and published %ld ms after the leader's stop\n", now_ms() - t0);
    deta_outbox_relay_free(relay1);
    relay1 = NULL;
    assert_true(published_by(metrics2) == 1);
    assert_int_equal(ts_kafka_count(TOPIC, key, 10000), 1);

    /* Stopping publishes what was committed before. */
    new_key(key, sizeof key, "flushed-on-stop");
    commit_one(key);
    char lsn[32];
    wal_flushed(lsn);
    assert_int_equal(deta_outbox_relay_stop(relay2, 5000), DETA_OK);
    assert_true(slot_past(lsn));
    deta_outbox_relay_free(relay2);
    assert_int_equal(ts_kafka_count(TOPIC, key, 10000), 1);
    deta_metrics_free(metrics2);
    start_relay1();
}

/* ---- failures ---- */

static void test_broker_down_keeps_the_rows(void **state) {
    (void)state;
    char key[64];
    const char *errors = "deta_outbox_publish_errors_total";
    assert_true(relayed(WAIT_MS));
    double errors_before = counter(metrics1, errors, NULL);
    new_key(key, sizeof key, "broker-down");
    ts_broker("down all");
    commit_one(key);
    char lsn[32];
    wal_flushed(lsn);
    /* The send fails (after its 12 s), and is counted; the row's age shows. */
    long deadline = now_ms() + 40000;
    while ((counter(metrics1, errors, NULL) <= errors_before ||
            gauge(metrics1, "deta_outbox_oldest_pending_age_seconds") <= 0) &&
           now_ms() < deadline)
        ts_sleep_ms(100);
    double age = gauge(metrics1, "deta_outbox_oldest_pending_age_seconds");
    bool failed = counter(metrics1, errors, NULL) > errors_before;
    /* Not confirmed: the row is streamed again; nor parked. */
    bool kept = !slot_past(lsn);
    long parked = scratch_long("SELECT count(*) FROM outbox WHERE msg_key = $1"
                               " AND parked_reason IS NOT NULL",
                               1, key, NULL, NULL);
    ts_broker("up all");
    assert_true(failed);
    assert_true(age > 0 && age < 3600);
    assert_true(kept);
    assert_int_equal(parked, 0);
    assert_int_equal(rows(key), 1);

    /* The broker back: the row goes out and the gauges go to 0. */
    assert_true(relayed(30000));
    assert_true(ts_kafka_count(TOPIC, key, 10000) >= 1); /* at least once */
    deadline = now_ms() + WAIT_MS;
    while ((gauge(metrics1, "deta_outbox_pending") != 0 ||
            gauge(metrics1, "deta_outbox_oldest_pending_age_seconds") != 0) &&
           now_ms() < deadline)
        ts_sleep_ms(50);
    assert_true(gauge(metrics1, "deta_outbox_pending") == 0);
    assert_true(gauge(metrics1, "deta_outbox_oldest_pending_age_seconds") == 0);
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
    assert_int_equal(deta_outbox_relay_stop(r, 5000), DETA_ERR_TRANSIENT); /* never streamed */
    assert_true(now_ms() - t0 < 2000); /* the stop interrupts the backoff */
    deta_outbox_relay_free(r);
    deta_metrics_free(m);
}

static void test_stop_is_bounded(void **state) {
    (void)state;
    char err[256], key[64];
    /* Healthy: what was committed goes out, and the stop is quick. */
    char lsn[32];
    new_key(key, sizeof key, "stop-flush");
    commit_one(key);
    wal_flushed(lsn);
    long t0 = now_ms();
    assert_int_equal(deta_outbox_relay_stop(relay1, 5000), DETA_OK);
    assert_true(now_ms() - t0 < 3000);
    assert_true(slot_past(lsn)); /* confirmed: not sent again */
    assert_int_equal(ts_kafka_count(TOPIC, key, 10000), 1);
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
    assert_true(await_streamer(0, WAIT_MS) > 0);
    new_key(key, sizeof key, "stop-abandoned");
    commit_one(key);
    wal_flushed(lsn);
    ts_sleep_ms(1000); /* the relay is in a send that cannot finish */
    t0 = now_ms();
    assert_int_equal(deta_outbox_relay_stop(r, 1500), DETA_ERR_TRANSIENT);
    long took = now_ms() - t0;
    if (took < 1400 || took > 3000)
        fail_msg("a relay stop bounded by 1500 ms took %ld ms", took);
    deta_outbox_relay_free(r);
    deta_producer_purge(dead_producer);
    deta_producer_free(dead_producer);
    assert_false(slot_past(lsn)); /* not confirmed: streamed again */
    assert_int_equal(rows(key), 1);

    /* The next relay publishes it. */
    start_relay1();
    assert_true(relayed(WAIT_MS));
    assert_int_equal(ts_kafka_count(TOPIC, key, 10000), 1);
}

/* ---- housekeeping ---- */

/* The purge runs at a relay's start (and once a minute): with a retention of
 * a minute, rows made two hours old go, a recent one and a parked old one stay.
 * Ids and ages ascend together (the purge takes the oldest by id), so every row
 * up to the old one is made old, not that row alone. */
static void test_purges_old_rows_not_parked_ones(void **state) {
    (void)state;
    char err[256], old_key[64], recent_key[64], parked_key[64];
    new_key(old_key, sizeof old_key, "purge-old");
    new_key(recent_key, sizeof recent_key, "purge-recent");
    new_key(parked_key, sizeof parked_key, "purge-parked");
    commit_one(old_key);
    commit_one(recent_key);
    commit_one(parked_key);
    assert_true(relayed(WAIT_MS));
    deta_outbox_relay_free(relay1);
    relay1 = NULL;
    char sql[512];
    snprintf(sql, sizeof sql,
             "UPDATE outbox SET created_at = now() - interval '2 hours' WHERE id <= (SELECT id"
             " FROM outbox WHERE msg_key = '%s') OR msg_key = '%s';"
             " UPDATE outbox SET parked_at = now(), parked_reason = 'it: parked by hand'"
             " WHERE msg_key = '%s'",
             old_key, parked_key, parked_key);
    scratch_sql(sql);

    deta_config_t brief = cfg;
    brief.outbox_retention_s = 60;
    deta_metrics_t *m = deta_metrics_new();
    deta_outbox_relay_t *r = deta_outbox_relay_new(&brief, producer, m, err, sizeof err);
    assert_non_null(r);
    assert_int_equal(deta_outbox_relay_start(r, err, sizeof err), DETA_OK);
    long deadline = now_ms() + WAIT_MS;
    while (rows(old_key) > 0 && now_ms() < deadline)
        ts_sleep_ms(50);
    assert_int_equal(rows(old_key), 0);    /* older than the minute of retention */
    assert_int_equal(rows(recent_key), 1); /* within it */
    assert_int_equal(rows(parked_key), 1); /* parked: kept until handled */
    assert_true(gauge(m, "deta_outbox_parked") == 1);
    deta_outbox_relay_free(r);
    deta_metrics_free(m);
    snprintf(sql, sizeof sql, "DELETE FROM outbox WHERE msg_key = '%s'", parked_key);
    scratch_sql(sql); /* handled */
    start_relay1();
}

/* The relay reports every logical slot of the server (10 s apart, the first at
 * its start): its own is there, not lost. */
static void test_slot_metrics(void **state) {
    (void)state;
    char retained[160], lost[160];
    snprintf(retained, sizeof retained, "deta_outbox_slot_retained_bytes{slot=\"%s\"} ", slot);
    snprintf(lost, sizeof lost, "deta_outbox_slot_lost{slot=\"%s\"} 0\n", slot);
    bool seen = false;
    for (long end = now_ms() + 15000; !seen && now_ms() < end; ts_sleep_ms(200)) {
        char *text = deta_metrics_render(metrics1);
        assert_non_null(text);
        const char *at = strstr(text, retained);
        seen = at && strstr(text, lost);
        if (seen)
            assert_true(atof(at + strlen(retained)) >= 0);
        free(text);
    }
    assert_true(seen);
}

static void test_check_server(void **state) {
    (void)state;
    char err[256] = "", role[64], sql[256];
    assert_int_equal(deta_outbox_check_server(db, err, sizeof err), DETA_OK);

    /* A role without REPLICATION cannot stream: refused, and said why. */
    snprintf(role, sizeof role, "it_norepl_%d", (int)getpid());
    snprintf(sql, sizeof sql, "CREATE ROLE %s LOGIN NOREPLICATION PASSWORD 'it-norepl'", role);
    ts_pg_admin(sql);
    deta_config_t plain = cfg;
    snprintf(plain.pg_user, sizeof plain.pg_user, "%s", role);
    snprintf(plain.pg_password, sizeof plain.pg_password, "it-norepl");
    deta_db_t *d = deta_db_new(&plain);
    assert_non_null(d);
    deta_err_t rc = deta_outbox_check_server(d, err, sizeof err);
    deta_db_free(d);
    snprintf(sql, sizeof sql, "DROP ROLE %s", role);
    ts_pg_admin(sql);
    assert_int_equal(rc, DETA_ERR_INVALID);
    if (!strstr(err, "REPLICATION"))
        fail_msg("the refusal does not name REPLICATION: %s", err);
}

/* ---- a row the broker refuses (#22 finding 13), and its way back ---- */

static long parked_rows(void) {
    return scratch_long("SELECT count(*) FROM outbox WHERE parked_at IS NOT NULL", 0, NULL, NULL,
                        NULL);
}

/* Whether one row of order key with a payload LIKE payload_like is parked for a
 * reason LIKE reason_like. */
static bool parked_like(const char *key, const char *payload_like, const char *reason_like) {
    return scratch_long("SELECT count(*) FROM outbox WHERE msg_key = $1 AND payload LIKE $2"
                        " AND parked_at IS NOT NULL AND parked_reason LIKE $3",
                        3, key, payload_like, reason_like) == 1;
}

/* Waits until the relay's deta_outbox_parked gauge says want. */
static bool parked_gauge_is(double want) {
    for (long end = now_ms() + WAIT_MS; now_ms() < end; ts_sleep_ms(50))
        if (gauge(metrics1, "deta_outbox_parked") == want)
            return true;
    return false;
}

/* Clears parked_at of order key's rows (an operator who fixed the cause) and
 * waits until the relay has published them again and cleared their reasons. */
static void clear_parked(const char *key) {
    char sql[256];
    snprintf(sql, sizeof sql, "UPDATE outbox SET parked_at = NULL WHERE msg_key = '%s'", key);
    scratch_sql(sql);
    long left = -1;
    for (long end = now_ms() + WAIT_MS; left != 0 && now_ms() < end; ts_sleep_ms(50))
        left = scratch_long("SELECT count(*) FROM outbox WHERE msg_key = $1"
                            " AND parked_reason IS NOT NULL",
                            1, key, NULL, NULL);
    assert_int_equal(left, 0);
}

/* The broker refuses a Produce request for good (TOPIC_AUTHORIZATION_FAILED,
 * injected): the row is parked, the rows behind it go. An injected error is the
 * cluster's, taken by whichever client produces next (the stack's services
 * dead-letter the test's events): a row that went out because another client
 * took the error is tried again with a fresh one. Then a row too large for the
 * broker (message.max.bytes, 1 MB): parked, its order's later rows held behind
 * it, other orders flowing. Once the causes are gone (the ACL back, the row
 * made smaller) and parked_at cleared, the rows go out in id order. */
#define REFUSED_TOPIC "it-outbox-refused"

static void test_refused_rows_are_parked_and_come_back(void **state) {
    (void)state;
    char refused[64], key[64], other[64], later[64], sql[1024];
    const char *parked_total = "deta_outbox_parked_total";
    assert_true(relayed(WAIT_MS));
    assert_int_equal(parked_rows(), 0);
    double parked_before = counter(metrics1, parked_total, NULL);

    bool parked = false;
    for (int attempt = 0; attempt < 5 && !parked; attempt++) {
        new_key(refused, sizeof refused, "unauthorized");
        ts_broker("errors 0 29 1");
        snprintf(sql, sizeof sql,
                 "INSERT INTO outbox (topic, msg_key, payload) VALUES"
                 " ('" REFUSED_TOPIC "', '%s', '{\"n\":1}')",
                 refused);
        scratch_sql(sql);
        assert_true(relayed(WAIT_MS));
        parked = parked_like(refused, "%", "%");
    }
    ts_broker("clear"); /* the ACL back */
    assert_true(parked_like(refused, "%", "refused by the broker:%uthoriz%"));
    assert_int_equal(ts_kafka_count(REFUSED_TOPIC, refused, 10000), 0);

    new_key(key, sizeof key, "too-large");
    new_key(other, sizeof other, "behind-too-large");
    /* In one transaction: the order's first event, one larger than the broker
     * takes, the order's next event; then another order's event, behind them. */
    snprintf(sql, sizeof sql,
             "INSERT INTO outbox (topic, msg_key, payload) VALUES"
             " ('" TOPIC "', '%s', '{\"n\":1}'), ('" TOPIC "', '%s', '{\"n\":2,' || repeat('x', 1100000)),"
             " ('" TOPIC "', '%s', '{\"n\":3}'), ('" TOPIC "', '%s', '{\"n\":1}')",
             key, key, key, other);
    scratch_sql(sql);
    assert_true(relayed(WAIT_MS));
    assert_int_equal(ts_kafka_count(TOPIC, other, 10000), 1); /* behind it, it went */
    /* The refused row is parked with the broker's reason, and the order's next
     * row is held behind it: one order's events stay in order. */
    assert_true(parked_like(key, "{\"n\":2,%", "refused by the broker:%too large%"));
    assert_true(parked_like(key, "{\"n\":3}", "held:%"));
    assert_int_equal(ts_kafka_count(TOPIC, key, 10000), 1);

    /* A later event of the held order is held too; other orders flow. */
    new_key(later, sizeof later, "after-parked");
    snprintf(sql, sizeof sql,
             "INSERT INTO outbox (topic, msg_key, payload) VALUES ('" TOPIC "', '%s', '{\"n\":4}');"
             " INSERT INTO outbox (topic, msg_key, payload) VALUES ('" TOPIC "', '%s', '{\"n\":1}')",
             key, later);
    scratch_sql(sql);
    assert_true(relayed(WAIT_MS));
    assert_int_equal(ts_kafka_count(TOPIC, later, 10000), 1);
    assert_true(parked_like(key, "{\"n\":4}", "held:%"));
    assert_int_equal(ts_kafka_count(TOPIC, key, 10000), 1);
    assert_true(counter(metrics1, parked_total, NULL) == parked_before + 4);
    assert_int_equal(parked_rows(), 4);
    assert_true(parked_gauge_is(4));
    /* Parked rows are not pending: they wait for an operator, not for the relay. */
    assert_true(gauge(metrics1, "deta_outbox_pending") == 0);

    /* The causes fixed, parked_at cleared: out again in id order, and the
     * reasons cleared by the relay. */
    clear_parked(refused);
    const char *refused_values[] = {"{\"n\":1}"};
    assert_values(REFUSED_TOPIC, refused, refused_values, 1);
    assert_true(parked_gauge_is(3));
    snprintf(sql, sizeof sql, "UPDATE outbox SET payload = '{\"n\":2}' WHERE msg_key = '%s'"
                              " AND payload LIKE '{\"n\":2,%%'", key);
    scratch_sql(sql);
    clear_parked(key);
    assert_true(parked_gauge_is(0));
    /* The order is no longer held: its next event goes at once. */
    snprintf(sql, sizeof sql,
             "INSERT INTO outbox (topic, msg_key, payload) VALUES ('" TOPIC "', '%s', '{\"n\":5}')",
             key);
    scratch_sql(sql);
    assert_true(relayed(WAIT_MS));
    const char *values[] = {"{\"n\":1}", "{\"n\":2}", "{\"n\":3}", "{\"n\":4}", "{\"n\":5}"};
    assert_values(TOPIC, key, values, 5);
    assert_int_equal(parked_rows(), 0);
}

/* ---- the migration from the polled outbox ---- */

/* Rows that an older relay, polling the table, had not marked published when
 * this version started: they committed before the slot existed, so the stream
 * does not bring them; the new leader publishes them from the table, once, in
 * id order, marks them and turns legacy_drain off. Simulated: no slot, rows
 * written, the flag on. */
static void test_legacy_rows_are_published_once(void **state) {
    (void)state;
    char a[64], b[64], marked[64], after[64], sql[1024];
    assert_true(relayed(WAIT_MS));
    deta_outbox_relay_free(relay1);
    relay1 = NULL;
    const char *params[] = {slot};
    PGconn *admin = ts_pg("postgres");
    long dropped = 0;
    for (long end = now_ms() + WAIT_MS; dropped == 0 && now_ms() < end; ts_sleep_ms(100)) {
        PGresult *r = PQexecParams(admin, "SELECT pg_drop_replication_slot($1)", 1, NULL, params,
                                   NULL, NULL, 0);
        dropped = PQresultStatus(r) == PGRES_TUPLES_OK;
        PQclear(r);
    }
    PQfinish(admin);
    assert_true(dropped);

    new_key(a, sizeof a, "legacy-a");
    new_key(b, sizeof b, "legacy-b");
    new_key(marked, sizeof marked, "legacy-marked");
    /* The rows before: the old relay had published (and marked) them. */
    snprintf(sql, sizeof sql,
             "UPDATE outbox SET published_at = now() WHERE published_at IS NULL;"
             " INSERT INTO outbox (topic, msg_key, payload, published_at) VALUES"
             " ('" TOPIC "', '%s', '{\"n\":0}', now());"
             " INSERT INTO outbox (topic, msg_key, payload) VALUES"
             " ('" TOPIC "', '%s', '{\"n\":1}'), ('" TOPIC "', '%s', '{\"n\":1}'),"
             " ('" TOPIC "', '%s', '{\"n\":2}'), ('" TOPIC "', '%s', '{\"n\":3}');"
             " UPDATE outbox_relay_state SET legacy_drain = true",
             marked, a, b, a, a);
    scratch_sql(sql);

    start_relay1();
    long draining = 1;
    for (long end = now_ms() + WAIT_MS; draining && now_ms() < end; ts_sleep_ms(50))
        draining = scratch_long("SELECT count(*) FROM outbox_relay_state WHERE legacy_drain", 0,
                                NULL, NULL, NULL);
    assert_int_equal(draining, 0);
    const char *a_values[] = {"{\"n\":1}", "{\"n\":2}", "{\"n\":3}"};
    assert_values(TOPIC, a, a_values, 3);
    const char *b_values[] = {"{\"n\":1}"};
    assert_values(TOPIC, b, b_values, 1);
    assert_int_equal(ts_kafka_count(TOPIC, marked, 10000), 0);
    assert_int_equal(scratch_long("SELECT count(*) FROM outbox WHERE msg_key IN ($1, $2)"
                                  " AND published_at IS NOT NULL",
                                  2, a, b, NULL),
                     4);

    /* The new slot streams what is committed now. */
    new_key(after, sizeof after, "after-legacy");
    commit_one(after);
    assert_true(relayed(WAIT_MS));
    assert_int_equal(ts_kafka_count(TOPIC, after, 10000), 1);
    assert_int_equal(ts_kafka_count(TOPIC, a, 10000), 3);
}

/* The stream's calls that do not wait: everything already sent, not one read. */
static void test_stream_hands_over_all_that_is_there(void **state) {
    (void)state;
    char own_slot[128], sql[512], err[256];
    snprintf(own_slot, sizeof own_slot, "%s_drain", slot);
    snprintf(sql, sizeof sql, "SELECT pg_create_logical_replication_slot('%s', 'pgoutput')",
             own_slot);
    scratch_sql(sql);
    enum { NROWS = 120 };
    char key[96];
    new_key(key, sizeof key, "drain");
    char nrows[16];
    snprintf(nrows, sizeof nrows, "%d", NROWS);
    const char *params[] = {key, nrows};
    PGconn *c = ts_pg(dbname);
    PGresult *r = PQexecParams(c,
                               "INSERT INTO outbox (topic, msg_key, payload)"
                               " SELECT 'it.drain', $1, json_build_object('n', n, 'pad',"
                               " repeat('x', 150))::text FROM generate_series(1, $2::int) AS n",
                               2, NULL, params, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    PQfinish(c);
    char target[32];
    wal_flushed(target);

    outbox_stream_t *stream = outbox_stream_new(&cfg);
    assert_non_null(stream);
    if (outbox_stream_start(stream, own_slot, OUTBOX_PUBLICATION, err, sizeof err) != DETA_OK)
        fail_msg("stream: %s", err);
    /* The walsender has sent the whole transaction: it is in the socket. */
    const char *lsn_params[] = {own_slot, target};
    PGconn *pg = ts_pg("postgres");
    long sent = 0;
    for (long end = now_ms() + WAIT_MS; !sent && now_ms() < end; ts_sleep_ms(20))
        sent = ts_pg_long(pg,
                          "SELECT count(*) FROM pg_stat_replication r JOIN pg_replication_slots s"
                          " ON s.active_pid = r.pid WHERE s.slot_name = $1"
                          " AND r.sent_lsn >= $2::pg_lsn",
                          2, lsn_params);
    assert_int_equal(sent, 1);

    /* The first frame may wait; the rest come from calls that do not. */
    int inserts = 0, commits = 0, got;
    size_t bytes = 0;
    const uint8_t *buf;
    size_t len;
    for (int timeout = 5000;
         (got = outbox_stream_next(stream, timeout, -1, &buf, &len, err, sizeof err)) > 0;
         timeout = 0) {
        deta_repl_frame_t f;
        assert_int_equal(deta_repl_frame_parse(buf, len, &f), 0);
        bytes += len;
        if (f.kind != 'w')
            continue;
        deta_pgo_msg_t m;
        assert_int_equal(deta_pgo_parse(f.data, f.len, &m), 0);
        inserts += m.kind == 'I';
        commits += m.kind == 'C';
    }
    if (got < 0)
        fail_msg("stream: %s", err);
    assert_int_equal(inserts, NROWS);
    assert_int_equal(commits, 1);
    /* More than two of libpq's reads: one read's worth would not pass. */
    assert_true(bytes > 2 * 16384);

    outbox_stream_free(stream);
    PQfinish(pg);
    /* The walsender goes with the connection; then the slot can be dropped. */
    long active = 1;
    for (long end = now_ms() + WAIT_MS; active && now_ms() < end; ts_sleep_ms(20))
        active = slot_pid_of(own_slot);
    assert_int_equal(active, 0);
    snprintf(sql, sizeof sql, "SELECT pg_drop_replication_slot('%s')", own_slot);
    scratch_sql(sql);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_needs_a_transaction_and_valid_input),
        cmocka_unit_test(test_published_after_commit_in_order),
        cmocka_unit_test(test_many_in_one_statement_in_order),
        cmocka_unit_test(test_each_in_one_statement_in_order),
        cmocka_unit_test(test_rollback_publishes_nothing),
        cmocka_unit_test(test_no_transaction_per_row),
        cmocka_unit_test(test_streams_again_after_its_walsender_ends),
        cmocka_unit_test(test_two_relays_publish_each_row_once),
        cmocka_unit_test(test_broker_down_keeps_the_rows),
        cmocka_unit_test(test_database_down),
        cmocka_unit_test(test_stop_is_bounded),
        cmocka_unit_test(test_purges_old_rows_not_parked_ones),
        cmocka_unit_test(test_slot_metrics),
        cmocka_unit_test(test_check_server),
        cmocka_unit_test(test_refused_rows_are_parked_and_come_back),
        cmocka_unit_test(test_legacy_rows_are_published_once),
        cmocka_unit_test(test_stream_hands_over_all_that_is_there),
    };
    if (getenv("CMOCKA_TEST_FILTER"))
        cmocka_set_test_filter(getenv("CMOCKA_TEST_FILTER"));
    return cmocka_run_group_tests(tests, setup, teardown);
}
