/*
 * test_dlq_admin.c - query-api's dead-letter administration against the real
 * test stack (every service running): the token, the arguments, the capture of
 * dead letters from the five dlq topics, and replays.
 *
 *   - every admin route is an operator route: it answers 401 (with
 *     WWW-Authenticate: Bearer) without the operator token (OPERATOR_TOKEN), with a
 *     wrong one or another scheme, and 403 with the reader token (READER_TOKEN),
 *     before looking at its arguments, and a refused replay replays nothing;
 *   - bad arguments are 400 naming the field, an unknown topic or id 404 naming it;
 *   - a poison message produced on a raw topic is dead-lettered by its consumer,
 *     captured by query-api and listed under its dlq topic (found by its key) with
 *     the right original topic, partition, offset, consumer group and error; the
 *     record shows the exact value and headers, text or base64;
 *   - the replay test: a payment.authorized for an order inventory-service never
 *     reserved is dead-lettered by it at once; once the order is reserved, the
 *     replay through the API makes inventory settle it (SOLD), counts the replay,
 *     and puts the event back on raw.payment-events with x-replayed-from and
 *     without the dead-letter headers. Meanwhile the test holds payment-service's
 *     Redis lock of that order (payment-lock:order:{id}), so that payment-service
 *     cannot settle the reservation itself: SOLD can only come from the replay;
 *   - replay-all replays the pending records of a topic only (one replayed
 *     before stays at one replay), skips (and lists) one that cannot be sent (a
 *     NUL byte in its key: 422 on its own), and a replayed poison message comes
 *     back as a new dead letter naming where it was replayed from;
 *   - with the broker down a replay is 503 and marks nothing; it works once the
 *     broker is back;
 *   - the metrics.
 *
 * Poison messages go to raw.delivery-events, which four groups consume
 * (query-api, and order-, inventory- and payment-service for the cancel's
 * verdicts), so each makes one dead letter per group; the tests look at group
 * query-api's (x-consumer-group, stored as consumerGroup). Every message is keyed by
 * a fresh id and found through the list's key filter, so other tests' dead
 * letters never get in the way; replay-all of dlq.delivery-events replays theirs
 * too, which is harmless (they are poison and come back as dead letters).
 */
#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deta/config.h"
#include "deta/kafka.h"
#include "deta/redis.h"
#include "deta/topics.h"
#include "testsupport.h"

#define WAIT_MS 60000
#define POLL_MS 200
#define BASE "/api/admin/dead-letters"
#define CUSTOMER "cust-dlq-admin"

/* ---- requests ---- */

typedef enum auth { AUTH_TOKEN, AUTH_NONE, AUTH_WRONG, AUTH_BASIC, AUTH_READER } auth_t;

/* A request to query-api with the given credentials; *resp_headers as ts_http_headers. */
static void request(const char *method, const char *path, auth_t auth, ts_http_resp_t *r,
                    char **resp_headers) {
    char header[600];
    const char *token = ts_env("OPERATOR_TOKEN");
    switch (auth) {
    case AUTH_READER:
        snprintf(header, sizeof header, "Authorization: Bearer %s", ts_env("READER_TOKEN"));
        break;
    case AUTH_TOKEN:
        snprintf(header, sizeof header, "Authorization: Bearer %s", token);
        break;
    case AUTH_WRONG:
        snprintf(header, sizeof header, "Authorization: Bearer %sx", token);
        break;
    case AUTH_BASIC:
        snprintf(header, sizeof header, "Authorization: Basic %s", token);
        break;
    case AUTH_NONE:
        header[0] = '\0';
        break;
    }
    const char *headers[] = {header[0] ? header : NULL, NULL};
    ts_http_headers(method, "QUERY_API_URL", path, headers, r, resp_headers);
}

static void admin(const char *method, const char *path, ts_http_resp_t *r) {
    request(method, path, AUTH_TOKEN, r, NULL);
}

/* The answer must be status with "field" naming field (NULL: no field check). */
static void expect_error(const char *method, const char *path, long status, const char *field) {
    ts_http_resp_t r;
    admin(method, path, &r);
    if (r.status != status)
        fail_msg("%s %s: expected %ld, got %ld %s", method, path, status, r.status, r.body);
    assert_non_null(r.json);
    assert_int_equal(json_integer_value(json_object_get(r.json, "status")), status);
    if (field) {
        const char *got = json_string_value(json_object_get(r.json, "field"));
        if (!got || strcmp(got, field) != 0)
            fail_msg("%s %s: expected field %s in %s", method, path, field, r.body);
    }
    ts_http_resp_free(&r);
}

static json_t *get_json(const char *path) {
    ts_http_resp_t r;
    admin("GET", path, &r);
    if (r.status != 200 || !r.json)
        fail_msg("GET %s: %ld %s", path, r.status, r.body);
    json_t *j = json_incref(r.json);
    ts_http_resp_free(&r);
    return j;
}

static const char *str(const json_t *o, const char *key) {
    const char *s = json_string_value(json_object_get(o, key));
    if (!s)
        fail_msg("no string %s in the answer", key);
    return s;
}

static long num(const json_t *o, const char *key) {
    const json_t *v = json_object_get(o, key);
    if (!json_is_integer(v))
        fail_msg("no integer %s", key);
    return (long)json_integer_value(v);
}

/* ---- producing ---- */

static deta_producer_t *producer;

static int producer_up(void **state) {
    (void)state;
    deta_config_t cfg;
    char err[256];
    if (deta_config_load(&cfg, "test-dlq-admin", err, sizeof err) != DETA_OK)
        fail_msg("config: %s", err);
    producer = deta_producer_new(&cfg, err, sizeof err);
    if (!producer)
        fail_msg("producer: %s", err);
    return 0;
}

static int producer_down(void **state) {
    (void)state;
    deta_producer_free(producer);
    producer = NULL;
    return 0;
}

/* Produces one message carrying a header of its own (traceparent), acknowledged. */
static void produce(const char *topic, const char *key, const char *value, size_t len) {
    deta_kafka_header_t h[] = {{"traceparent", "00-dlq-admin-01"}};
    deta_kafka_out_t m = {.topic = topic, .key = key, .value = value, .len = len, .headers = h,
                          .nheaders = 1};
    char err[256];
    if (deta_producer_send(producer, &m, 15000, err, sizeof err) != DETA_OK)
        fail_msg("produce to %s: %s", topic, err);
}

/* A poison message (malformed JSON) on raw.delivery-events keyed by a fresh id. */
static void produce_poison(char key[37]) {
    ts_uuid(key);
    char value[96];
    int n = snprintf(value, sizeof value, "{\"eventType\": not json, key %s", key);
    produce(DETA_TOPIC_DELIVERY_EVENTS, key, value, (size_t)n);
}

/* A poison message whose key holds a NUL byte ("k\0<id>"), which libdeta's
 * producer cannot send (it takes keys as C strings): through librdkafka. Its
 * value names id, to find its record. */
static void produce_nul_key(char id[37], char value[64]) {
    ts_uuid(id);
    char key[40] = "k";
    memcpy(key + 2, id, 37);
    snprintf(value, 64, "not json %s", id);
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", ts_env("KAFKA_BOOTSTRAP_SERVERS"), err,
                          sizeof err) != RD_KAFKA_CONF_OK)
        fail_msg("conf: %s", err);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!rk)
        fail_msg("producer: %s", err);
    rd_kafka_resp_err_t e = rd_kafka_producev(
        rk, RD_KAFKA_V_TOPIC(DETA_TOPIC_DELIVERY_EVENTS), RD_KAFKA_V_KEY(key, 2 + 36),
        RD_KAFKA_V_VALUE(value, strlen(value)), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_END);
    if (e)
        fail_msg("produce: %s", rd_kafka_err2str(e));
    rd_kafka_flush(rk, 15000);
    int left = rd_kafka_outq_len(rk);
    rd_kafka_destroy(rk);
    assert_int_equal(left, 0);
}

/* The id of the dlq.delivery-events record whose value is value (waits for it). */
static long record_with_value(const char *value) {
    PGconn *db = ts_pg("delivery_query");
    const char *params[] = {value};
    long id = 0;
    for (int waited = 0; waited < WAIT_MS && !id; waited += POLL_MS) {
        id = ts_pg_long(db,
                        "SELECT COALESCE(max(id), 0) FROM dead_letters WHERE topic = "
                        "'dlq.delivery-events' AND value = convert_to($1, 'UTF8')"
                        " AND consumer_group = 'query-api'",
                        1, params);
        if (!id)
            ts_sleep_ms(POLL_MS);
    }
    PQfinish(db);
    if (!id)
        fail_msg("no dead letter with value %s", value);
    return id;
}

/* ---- finding dead letters ---- */

/* The records of topic with this key, oldest first (a new reference). */
static json_t *records_of(const char *topic, const char *key, const char *status) {
    char path[256];
    snprintf(path, sizeof path, BASE "/%s?key=%s&status=%s&limit=200", topic, key, status);
    /* The other groups' dead letters of the key may land between the page's
     * count and its items: ask again until the two agree. */
    for (int tries = 0;; tries++) {
        json_t *page = get_json(path);
        json_t *items = json_incref(json_object_get(page, "items"));
        long total = num(page, "total");
        json_decref(page);
        if (total == (long)json_array_size(items) || tries == 20) {
            assert_int_equal(total, json_array_size(items));
            return items;
        }
        json_decref(items);
        ts_sleep_ms(POLL_MS);
    }
}

/* Waits until topic has at least `want` records of key from group (NULL: any);
 * returns the want-th (a new reference). */
static json_t *await_record(const char *topic, const char *key, const char *group, size_t want) {
    for (int waited = 0; waited < WAIT_MS; waited += POLL_MS) {
        json_t *items = records_of(topic, key, "all");
        size_t seen = 0, i;
        json_t *item;
        json_array_foreach(items, i, item) {
            const char *g = json_string_value(json_object_get(item, "consumerGroup"));
            if ((!group || (g && strcmp(g, group) == 0)) && ++seen == want) {
                json_incref(item);
                json_decref(items);
                return item;
            }
        }
        json_decref(items);
        ts_sleep_ms(POLL_MS);
    }
    fail_msg("no dead letter #%zu of key %s from %s in %s after %d ms", want, key,
             group ? group : "any group", topic, WAIT_MS);
    return NULL;
}

static json_t *show(const char *topic, long id) {
    char path[256];
    snprintf(path, sizeof path, BASE "/%s/%ld", topic, id);
    return get_json(path);
}

/* POST .../{id}/replay; returns the answer's JSON (a new reference) after checking status. */
static json_t *replay(const char *topic, long id, long want_status) {
    char path[256];
    snprintf(path, sizeof path, BASE "/%s/%ld/replay", topic, id);
    ts_http_resp_t r;
    admin("POST", path, &r);
    if (r.status != want_status)
        fail_msg("POST %s: expected %ld, got %ld %s", path, want_status, r.status, r.body);
    json_t *j = json_incref(r.json);
    ts_http_resp_free(&r);
    return j;
}

static const char *header_of(const json_t *record, const char *name) {
    size_t i;
    json_t *h;
    json_array_foreach(json_object_get(record, "headers"), i, h) {
        const char *n = json_string_value(json_object_get(h, "name"));
        if (n && strcmp(n, name) == 0)
            return json_string_value(json_object_get(h, "value"));
    }
    return NULL;
}

/* ---- access ---- */

static void expect_refused(const char *method, const char *path, auth_t auth,
                           const char *challenge) {
    ts_http_resp_t r;
    char *headers = NULL;
    request(method, path, auth, &r, &headers);
    long want = auth == AUTH_READER ? 403 : 401;
    if (r.status != want)
        fail_msg("%s %s (auth %d): expected %ld, got %ld %s", method, path, (int)auth, want,
                 r.status, r.body);
    assert_non_null(r.json);
    assert_int_equal(json_integer_value(json_object_get(r.json, "status")), want);
    assert_non_null(json_object_get(r.json, "message"));
    if (!strcasestr(headers, challenge))
        fail_msg("%s %s: no \"%s\" in the response headers:\n%s", method, path, challenge,
                 headers);
    /* The token is never echoed. */
    assert_null(strstr(r.body, ts_env("OPERATOR_TOKEN")));
    assert_null(strstr(r.body, ts_env("READER_TOKEN")));
    assert_null(strstr(headers, ts_env("OPERATOR_TOKEN")));
    free(headers);
    ts_http_resp_free(&r);
}

static void every_route_needs_the_token(void **state) {
    (void)state;
    const char *routes[][2] = {
        {"GET", BASE},
        {"GET", BASE "/dlq.order-events"},
        {"GET", BASE "/dlq.order-events/1"},
        {"POST", BASE "/dlq.order-events/1/replay"},
        {"POST", BASE "/dlq.order-events/replay"},
        /* Unknown topics and ids are not revealed to a caller without the token. */
        {"GET", BASE "/dlq.nope?limit=0"},
        {"POST", BASE "/dlq.nope/x/replay"},
    };
    for (size_t i = 0; i < sizeof routes / sizeof *routes; i++) {
        expect_refused(routes[i][0], routes[i][1], AUTH_NONE, "WWW-Authenticate: Bearer");
        expect_refused(routes[i][0], routes[i][1], AUTH_BASIC, "WWW-Authenticate: Bearer");
        expect_refused(routes[i][0], routes[i][1], AUTH_WRONG, "error=\"invalid_token\"");
        expect_refused(routes[i][0], routes[i][1], AUTH_READER,
                       "error=\"insufficient_scope\"");
    }
}

static void a_refused_replay_replays_nothing(void **state) {
    (void)state;
    char key[37];
    produce_poison(key);
    json_t *rec = await_record(DETA_TOPIC_DLQ_DELIVERY_EVENTS, key, "query-api", 1);
    char path[256];
    snprintf(path, sizeof path, BASE "/%s/%ld/replay", DETA_TOPIC_DLQ_DELIVERY_EVENTS,
             num(rec, "id"));
    expect_refused("POST", path, AUTH_WRONG, "invalid_token");
    expect_refused("POST", path, AUTH_READER, "insufficient_scope");
    expect_refused("POST", BASE "/" DETA_TOPIC_DLQ_DELIVERY_EVENTS "/replay", AUTH_NONE,
                   "Bearer");
    json_t *now = show(DETA_TOPIC_DLQ_DELIVERY_EVENTS, num(rec, "id"));
    assert_int_equal(num(now, "replayCount"), 0);
    assert_int_equal(ts_kafka_count(DETA_TOPIC_DELIVERY_EVENTS, key, 30000), 1);
    json_decref(now);
    json_decref(rec);
}

/* ---- arguments ---- */

static void bad_requests_name_the_field(void **state) {
    (void)state;
    expect_error("GET", BASE "/raw.order-events", 404, "topic");
    expect_error("GET", BASE "/dlq.nope", 404, "topic");
    expect_error("GET", BASE "/dlq.nope/1", 404, "topic");
    expect_error("POST", BASE "/dlq.nope/replay", 404, "topic");
    expect_error("POST", BASE "/dlq.nope/1/replay", 404, "topic");
    /* The 404 names the topics there are: every dead-letter twin. */
    ts_http_resp_t r;
    admin("GET", BASE "/dlq.nope", &r);
    const char *msg = r.json ? json_string_value(json_object_get(r.json, "message")) : NULL;
    assert_non_null(msg);
    for (int i = DETA_TOPICS_RAW_COUNT; i < DETA_TOPICS_COUNT; i++)
        if (!strstr(msg, deta_topics_all[i]))
            fail_msg("the 404 does not name %s: %s", deta_topics_all[i], msg);
    ts_http_resp_free(&r);
    expect_error("GET", BASE "/dlq.order-events?status=bogus", 400, "status");
    expect_error("GET", BASE "/dlq.order-events?limit=0", 400, "limit");
    expect_error("GET", BASE "/dlq.order-events?limit=201", 400, "limit");
    expect_error("GET", BASE "/dlq.order-events?limit=x", 400, "limit");
    expect_error("GET", BASE "/dlq.order-events?offset=-1", 400, "offset");
    expect_error("GET", BASE "/dlq.order-events?key=", 400, "key");
    expect_error("GET", BASE "/dlq.order-events/abc", 400, "id");
    expect_error("GET", BASE "/dlq.order-events/0", 400, "id");
    expect_error("GET", BASE "/dlq.order-events/-3", 400, "id");
    expect_error("POST", BASE "/dlq.order-events/abc/replay", 400, "id");
    expect_error("GET", BASE "/dlq.order-events/9007199254740000", 404, "id");
    expect_error("POST", BASE "/dlq.order-events/9007199254740000/replay", 404, "id");
    expect_error("DELETE", BASE "/dlq.order-events/1", 405, NULL);
}

/* ---- capture ---- */

static void a_poison_message_is_listed_and_shown(void **state) {
    (void)state;
    char key[37];
    produce_poison(key);
    ts_kafka_msg_t raw;
    assert_true(ts_kafka_find(DETA_TOPIC_DELIVERY_EVENTS, key, WAIT_MS, &raw));

    json_t *rec = await_record(DETA_TOPIC_DLQ_DELIVERY_EVENTS, key, "query-api", 1);
    assert_string_equal(str(rec, "topic"), DETA_TOPIC_DLQ_DELIVERY_EVENTS);
    assert_string_equal(str(rec, "key"), key);
    assert_string_equal(str(rec, "keyEncoding"), "utf-8");
    assert_string_equal(str(rec, "originalTopic"), DETA_TOPIC_DELIVERY_EVENTS);
    assert_int_equal(num(rec, "originalPartition"), raw.partition);
    assert_int_equal(num(rec, "originalOffset"), raw.offset);
    assert_string_equal(str(rec, "consumerGroup"), "query-api");
    assert_true(strlen(str(rec, "error")) > 0);
    assert_int_equal(num(rec, "retryCount"), 0); /* malformed: dead-lettered at once */
    assert_int_equal(num(rec, "replayCount"), 0);
    assert_true(json_is_null(json_object_get(rec, "lastReplayedAt")));
    assert_null(json_object_get(rec, "value")); /* the list leaves value and headers out */

    /* The record whole: the exact value and every header. */
    json_t *full = show(DETA_TOPIC_DLQ_DELIVERY_EVENTS, num(rec, "id"));
    assert_string_equal(str(full, "value"), raw.value);
    assert_string_equal(str(full, "valueEncoding"), "utf-8");
    assert_string_equal(header_of(full, "traceparent"), "00-dlq-admin-01");
    assert_string_equal(header_of(full, "x-original-topic"), DETA_TOPIC_DELIVERY_EVENTS);
    assert_string_equal(header_of(full, "x-consumer-group"), "query-api");
    assert_int_equal(num(full, "partition"), num(rec, "partition"));
    assert_int_equal(num(full, "offset"), num(rec, "offset"));
    json_decref(full);

    /* Ids belong to their topic; the summary counts it. */
    char path[128];
    snprintf(path, sizeof path, BASE "/%s/%ld", DETA_TOPIC_DLQ_ORDER_EVENTS, num(rec, "id"));
    expect_error("GET", path, 404, "id");
    json_t *summary = get_json(BASE);
    const json_t *t = json_array_get(json_object_get(summary, "topics"), 3);
    assert_string_equal(str(t, "topic"), DETA_TOPIC_DLQ_DELIVERY_EVENTS);
    assert_true(num(t, "total") >= 1 && num(t, "pending") >= 1);
    assert_int_equal(num(t, "total"), num(t, "pending") + num(t, "replayed"));
    assert_true(num(summary, "total") >= num(t, "total"));
    json_decref(summary);

    /* Stored once, whatever the consumer saw. */
    PGconn *db = ts_pg("delivery_query");
    const char *params[] = {key};
    assert_int_equal(ts_pg_long(db,
                                "SELECT count(*) FROM dead_letters WHERE topic = "
                                "'dlq.delivery-events' AND msg_key = convert_to($1, 'UTF8')"
                                " AND consumer_group = 'query-api'",
                                1, params),
                     1);
    PQfinish(db);
    ts_kafka_msg_free(&raw);
    json_decref(rec);
}

static void a_binary_dead_letter_is_shown_in_base64(void **state) {
    (void)state;
    char key[37];
    ts_uuid(key);
    const char value[] = {'\xff', '\xfe', '{', '\0', '}'};
    produce(DETA_TOPIC_DELIVERY_EVENTS, key, value, sizeof value);
    json_t *rec = await_record(DETA_TOPIC_DLQ_DELIVERY_EVENTS, key, "query-api", 1);
    json_t *full = show(DETA_TOPIC_DLQ_DELIVERY_EVENTS, num(rec, "id"));
    assert_string_equal(str(full, "valueEncoding"), "base64");
    assert_string_equal(str(full, "value"), "//57AH0="); /* ff fe 7b 00 7d */
    json_decref(full);
    json_decref(rec);
}

/* ---- the replay test ---- */

static json_t *payment_payload(const char *order) {
    char payment[37];
    ts_uuid(payment);
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "orderId", order, "paymentId", payment,
                     "customerId", CUSTOMER, "amount", "9.99", "currency", "EUR",
                     "authorizedAt", "2026-11-25T12:38:06.000Z");
}

static json_t *order_payload(const char *order) {
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:[{s:s, s:i, s:s}]}", "orderId", order,
                     "customerId", CUSTOMER, "totalAmount", "9.99", "currency", "EUR", "status",
                     "CREATED", "createdAt", "2026-11-25T12:38:05.123Z", "items", "itemId",
                     "sku-1", "quantity", 1, "unitPrice", "9.99");
}

static void reservation_status(PGconn *db, const char *order, char out[16]) {
    const char *params[] = {order};
    PGresult *r = PQexecParams(db, "SELECT status FROM reservations WHERE order_id = $1", 1, NULL,
                               params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("reservations: %s", PQerrorMessage(db));
    snprintf(out, 16, "%s", PQntuples(r) ? PQgetvalue(r, 0, 0) : "");
    PQclear(r);
}

static void await_reservation(PGconn *db, const char *order, const char *want) {
    char status[16] = "";
    for (int waited = 0; waited < WAIT_MS; waited += POLL_MS) {
        reservation_status(db, order, status);
        if (strcmp(status, want) == 0)
            return;
        ts_sleep_ms(POLL_MS);
    }
    fail_msg("order %s: reservation is \"%s\", expected %s", order, status, want);
}

/* payment-service's lock of the order, held by the test (see the top). */
typedef struct payment_lock {
    deta_redis_t *redis;
    char key[96];
    char token[37];
} payment_lock_t;

static void hold_payment_lock(payment_lock_t *l, const char *order) {
    deta_config_t cfg;
    char err[256];
    if (deta_config_load(&cfg, "test-dlq-admin", err, sizeof err) != DETA_OK)
        fail_msg("config: %s", err);
    l->redis = deta_redis_new(&cfg);
    assert_non_null(l->redis);
    snprintf(l->key, sizeof l->key, "payment-lock:order:%s", order);
    ts_uuid(l->token);
    bool set = false;
    if (deta_redis_set_nx(l->redis, l->key, l->token, 120000, &set, err, sizeof err) != DETA_OK ||
        !set)
        fail_msg("cannot take %s: %s", l->key, err);
}

static void release_payment_lock(payment_lock_t *l) {
    bool deleted = false;
    char err[256];
    deta_redis_del_if_equal(l->redis, l->key, l->token, &deleted, err, sizeof err);
    deta_redis_free(l->redis);
}

/* The message of order on raw.payment-events that carries x-replayed-from. */
static void expect_replayed_message(const char *order, const char *from) {
    ts_kafka_msg_t m[4];
    int n = ts_kafka_collect(DETA_TOPIC_PAYMENT_EVENTS, order, 2, 30000, m, 4);
    int found = 0;
    for (int i = 0; i < n; i++) {
        const char *h = ts_kafka_header(&m[i], "x-replayed-from");
        if (h) {
            found++;
            assert_string_equal(h, from);
            assert_null(ts_kafka_header(&m[i], "x-error"));
            assert_null(ts_kafka_header(&m[i], "x-consumer-group"));
            assert_null(ts_kafka_header(&m[i], "x-original-topic"));
            assert_string_equal(ts_kafka_header(&m[i], "traceparent"), "00-dlq-admin-01");
            assert_string_equal(m[i].value, m[0].value); /* the same event, byte for byte */
        }
    }
    for (int i = 0; i < n; i++)
        ts_kafka_msg_free(&m[i]);
    if (found != 1)
        fail_msg("order %s: %d replayed message(s) on %s among %d, expected 1", order, found,
                 DETA_TOPIC_PAYMENT_EVENTS, n);
}

static void replaying_a_dead_letter_that_became_applicable(void **state) {
    (void)state;
    char order[37];
    ts_uuid(order);
    payment_lock_t lock;
    hold_payment_lock(&lock, order);

    /* 1. The payment outcome comes first: inventory has no reservation to settle. */
    char *text = ts_event(DETA_EVT_PAYMENT_AUTHORIZED, order, NULL, payment_payload(order), NULL);
    produce(DETA_TOPIC_PAYMENT_EVENTS, order, text, strlen(text));
    free(text);
    json_t *rec = await_record(DETA_TOPIC_DLQ_PAYMENT_EVENTS, order, "inventory-service", 1);
    long id = num(rec, "id");
    assert_non_null(strstr(str(rec, "error"), "no reservation"));
    assert_string_equal(str(rec, "originalTopic"), DETA_TOPIC_PAYMENT_EVENTS);
    assert_int_equal(num(rec, "replayCount"), 0);
    char from[128];
    snprintf(from, sizeof from, "%s/%ld/%ld", DETA_TOPIC_DLQ_PAYMENT_EVENTS,
             num(rec, "partition"), num(rec, "offset"));

    /* 2. The order arrives: inventory holds stock for it (and payment cannot act). */
    text = ts_event(DETA_EVT_ORDER_CREATED, order, NULL, order_payload(order), NULL);
    produce(DETA_TOPIC_ORDER_EVENTS, order, text, strlen(text));
    free(text);
    PGconn *db = ts_pg("inventory_db");
    await_reservation(db, order, "HELD");

    /* 3. The replay settles it. */
    json_t *after = replay(DETA_TOPIC_DLQ_PAYMENT_EVENTS, id, 200);
    assert_int_equal(num(after, "id"), id);
    assert_int_equal(num(after, "replayCount"), 1);
    assert_string_equal(str(after, "replayedTo"), DETA_TOPIC_PAYMENT_EVENTS);
    assert_non_null(str(after, "lastReplayedAt"));
    json_decref(after);
    await_reservation(db, order, "SOLD");
    expect_replayed_message(order, from);

    /* 4. Recorded: shown as replayed once, listed as replayed, not as pending. */
    json_t *now = show(DETA_TOPIC_DLQ_PAYMENT_EVENTS, id);
    assert_int_equal(num(now, "replayCount"), 1);
    json_decref(now);
    json_t *pending = records_of(DETA_TOPIC_DLQ_PAYMENT_EVENTS, order, "pending");
    size_t i;
    json_t *item;
    json_array_foreach(pending, i, item) assert_int_not_equal(num(item, "id"), id);
    json_decref(pending);
    json_t *replayed = records_of(DETA_TOPIC_DLQ_PAYMENT_EVENTS, order, "replayed");
    assert_int_equal(json_array_size(replayed), 1);
    assert_int_equal(num(json_array_get(replayed, 0), "id"), id);
    json_decref(replayed);

    release_payment_lock(&lock);
    PQfinish(db);
    json_decref(rec);
}

/* ---- replay-all ---- */

static void replay_all_replays_only_pending_ones(void **state) {
    (void)state;
    char keys[3][37];
    long ids[3];
    for (int k = 0; k < 3; k++)
        produce_poison(keys[k]);
    for (int k = 0; k < 3; k++) {
        json_t *rec = await_record(DETA_TOPIC_DLQ_DELIVERY_EVENTS, keys[k], "query-api", 1);
        ids[k] = num(rec, "id");
        json_decref(rec);
    }
    json_t *one = replay(DETA_TOPIC_DLQ_DELIVERY_EVENTS, ids[0], 200);
    assert_int_equal(num(one, "replayCount"), 1);
    json_decref(one);
    /* A record that cannot be sent as stored: 422 alone, skipped by replay-all. */
    char nul_id[37], nul_value[64];
    produce_nul_key(nul_id, nul_value);
    long unsendable = record_with_value(nul_value);
    json_t *shown = show(DETA_TOPIC_DLQ_DELIVERY_EVENTS, unsendable);
    assert_string_equal(str(shown, "keyEncoding"), "base64");
    json_decref(shown);
    json_t *refused = replay(DETA_TOPIC_DLQ_DELIVERY_EVENTS, unsendable, 422);
    assert_string_equal(str(refused, "field"), "key");
    json_decref(refused);

    ts_http_resp_t r;
    admin("POST", BASE "/" DETA_TOPIC_DLQ_DELIVERY_EVENTS "/replay", &r);
    if (r.status != 200)
        fail_msg("replay-all: %ld %s", r.status, r.body);
    assert_string_equal(str(r.json, "topic"), DETA_TOPIC_DLQ_DELIVERY_EVENTS);
    assert_true(num(r.json, "replayed") >= 2);
    bool skipped = false;
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(r.json, "skipped"), i, s) {
        if (num(s, "id") == unsendable) {
            skipped = true;
            assert_string_equal(str(s, "field"), "key");
        }
    }
    if (!skipped)
        fail_msg("record %ld (a NUL in its key) is not among the skipped: %s", unsendable, r.body);
    ts_http_resp_free(&r);
    json_t *still = show(DETA_TOPIC_DLQ_DELIVERY_EVENTS, unsendable);
    assert_int_equal(num(still, "replayCount"), 0);
    json_decref(still);

    /* The one replayed before was not replayed again; the two pending ones were. */
    for (int k = 0; k < 3; k++) {
        json_t *now = show(DETA_TOPIC_DLQ_DELIVERY_EVENTS, ids[k]);
        if (num(now, "replayCount") != 1)
            fail_msg("record %ld (key %d): replayCount %ld, expected 1", ids[k], k,
                     num(now, "replayCount"));
        json_decref(now);
    }
    /* Still poison: each comes back as a new dead letter naming its origin. */
    for (int k = 0; k < 3; k++) {
        json_t *orig = show(DETA_TOPIC_DLQ_DELIVERY_EVENTS, ids[k]);
        char from[128];
        snprintf(from, sizeof from, "%s/%ld/%ld", DETA_TOPIC_DLQ_DELIVERY_EVENTS,
                 num(orig, "partition"), num(orig, "offset"));
        /* The other groups' dead letters of the key were pending too and were
         * replayed as well, so query-api has several new ones: one names this. */
        bool found = false;
        for (int waited = 0; waited < WAIT_MS && !found; waited += POLL_MS) {
            json_t *items = records_of(DETA_TOPIC_DLQ_DELIVERY_EVENTS, keys[k], "all");
            size_t i;
            json_t *item;
            json_array_foreach(items, i, item) {
                const char *g = json_string_value(json_object_get(item, "consumerGroup"));
                const char *rf = json_string_value(json_object_get(item, "replayedFrom"));
                if (g && strcmp(g, "query-api") == 0 && rf && strcmp(rf, from) == 0) {
                    assert_true(num(item, "id") > ids[k]);
                    found = true;
                }
            }
            json_decref(items);
            if (!found)
                ts_sleep_ms(POLL_MS);
        }
        if (!found)
            fail_msg("no dead letter of key %d from query-api replayed from %s", k, from);
        json_decref(orig);
    }
}

/* ---- the broker away ---- */

static void a_replay_while_the_broker_is_down_marks_nothing(void **state) {
    (void)state;
    char key[37];
    produce_poison(key);
    json_t *rec = await_record(DETA_TOPIC_DLQ_DELIVERY_EVENTS, key, "query-api", 1);
    long id = num(rec, "id");
    json_decref(rec);

    ts_broker("down all");
    json_t *refused = replay(DETA_TOPIC_DLQ_DELIVERY_EVENTS, id, 503);
    assert_non_null(strstr(str(refused, "message"), "nothing was marked"));
    json_decref(refused);
    json_t *now = show(DETA_TOPIC_DLQ_DELIVERY_EVENTS, id);
    assert_int_equal(num(now, "replayCount"), 0);
    assert_true(json_is_null(json_object_get(now, "lastReplayedAt")));
    json_decref(now);
    ts_broker("up all");

    /* Once the broker is back (the producer reconnects within seconds), it works. */
    char path[128];
    snprintf(path, sizeof path, BASE "/%s/%ld/replay", DETA_TOPIC_DLQ_DELIVERY_EVENTS, id);
    long status = 0;
    for (int waited = 0; waited < WAIT_MS && status != 200; waited += 1000) {
        ts_http_resp_t r;
        admin("POST", path, &r);
        status = r.status;
        if (status == 200)
            assert_int_equal(num(r.json, "replayCount"), 1);
        else if (status != 503)
            fail_msg("POST %s: %ld %s", path, r.status, r.body);
        ts_http_resp_free(&r);
        if (status != 200)
            ts_sleep_ms(1000);
    }
    assert_int_equal(status, 200);
}

static int broker_back_up(void **state) {
    (void)state;
    ts_broker("up all");
    return 0;
}

/* ---- metrics ---- */

static void metrics_count_access_and_replays(void **state) {
    (void)state;
    ts_http_resp_t r;
    ts_http("GET", "QUERY_API_URL", "/actuator/prometheus", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    const char *want[] = {
        "http_auth_total{role=\"operator\",outcome=\"unauthorized\"}",
        "http_auth_total{role=\"operator\",outcome=\"forbidden\"}",
        "http_auth_total{role=\"operator\",outcome=\"allowed\"}",
        "query_api_dead_letters_total{topic=\"dlq.delivery-events\"}",
        "query_api_dead_letter_replays_total{topic=\"dlq.payment-events\",outcome=\"replayed\"}",
        "query_api_dead_letter_replays_total{topic=\"dlq.delivery-events\","
        "outcome=\"broker_unavailable\"}",
        "query_api_dead_letter_replays_total{topic=\"dlq.delivery-events\",outcome=\"refused\"}",
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        const char *line = strstr(r.body, want[i]);
        if (!line)
            fail_msg("no %s in the metrics", want[i]);
        double v = strtod(line + strlen(want[i]), NULL);
        if (v < 1)
            fail_msg("%s is %g, expected at least 1", want[i], v);
    }
    ts_http_resp_free(&r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_route_needs_the_token),
        cmocka_unit_test(bad_requests_name_the_field),
        cmocka_unit_test(a_refused_replay_replays_nothing),
        cmocka_unit_test(a_poison_message_is_listed_and_shown),
        cmocka_unit_test(a_binary_dead_letter_is_shown_in_base64),
        cmocka_unit_test(replaying_a_dead_letter_that_became_applicable),
        cmocka_unit_test(replay_all_replays_only_pending_ones),
        cmocka_unit_test_teardown(a_replay_while_the_broker_is_down_marks_nothing,
                                  broker_back_up),
        cmocka_unit_test(metrics_count_access_and_replays),
    };
    return cmocka_run_group_tests(tests, producer_up, producer_down);
}
