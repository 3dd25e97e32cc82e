/*
 * test_order_idempotency.c - POST /api/orders with an Idempotency-Key against the
 * real test stack (docs/contracts.md, "Idempotency keys"):
 *   - a retry of the same request (the same after validation) answers the first's
 *     order: 200, the 201's body, Idempotent-Replayed: true; one order, one
 *     order.created;
 *   - another request under the key is 422 naming Idempotency-Key, nothing written;
 *   - a bad key is 400 naming Idempotency-Key, nothing written; no key, no change;
 *   - concurrency: N threads with one key make one order and all answer its id;
 *     two interleavings forced with a lock on outbox held by the test's own
 *     connection: a second request waits for the first in flight and replays its
 *     order after its commit, and creates the order when the first failed (its
 *     backend terminated);
 *   - across a restart of order-service, and with two instances of it;
 *   - the purge: a key backdated past any TTL goes within ~10 s (plus slack), a
 *     fresh one stays, and the purged key then makes a new order.
 * Each test has customers of its own ("idem-<uuid>"), so counts are its own.
 * Threads only collect answers; the assertions run on the test's thread.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "deta/client.h"
#include "deta/envelope.h"
#include "deta/states.h"
#include "deta/topics.h"
#include "testsupport.h"

#define THREADS 8
#define PURGE_WAIT_MS 40000 /* the purge runs every 10 s; a loaded machine is slow */
#define LOCK_WAIT_MS 8000   /* under order-service's PG_LOCK_TIMEOUT_MS (10 s) */

/* ---- requests ---- */

typedef struct answer {
    long status;
    char order_id[64];
    char field[64];
    bool replayed;
    json_t *json;
} answer_t;

static void answer_clear(answer_t *a) {
    json_decref(a->json);
    memset(a, 0, sizeof *a);
}

/* Is there a header line "name: value" (name in any case) in the answer's headers? */
static bool has_header(const char *headers, const char *name, const char *value) {
    size_t n = strlen(name);
    for (const char *line = headers; line && *line;) {
        if (strncasecmp(line, name, n) == 0 && line[n] == ':') {
            const char *v = line + n + 1;
            while (*v == ' ')
                v++;
            if (strncmp(v, value, strlen(value)) == 0)
                return true;
        }
        const char *next = strchr(line, '\n');
        line = next ? next + 1 : NULL;
    }
    return false;
}

/* POST /api/orders on the service at url_var with body and, unless key_line is
 * NULL, that header line as is ("Idempotency-Key: k"). No cmocka call: threads
 * use it. false when no answer came. */
static bool post_raw(const char *url_var, const char *key_line, const char *body, answer_t *a) {
    memset(a, 0, sizeof *a);
    const char *base = getenv(url_var);
    if (!base)
        return false;
    char url[256], err[256];
    snprintf(url, sizeof url, "%s/api/orders", base);
    const char *headers[] = {"Content-Type: application/json", key_line, NULL};
    deta_client_t *c = deta_client_new(60000, 5000);
    if (!c)
        return false;
    deta_client_req_t req = {.method = "POST", .url = url, .body = body, .headers = headers,
                             .keep_headers = true};
    deta_client_resp_t r;
    bool ok = deta_client_request(c, &req, &r, err, sizeof err) == 0;
    if (ok) {
        a->status = r.status;
        a->replayed = has_header(r.headers, "Idempotent-Replayed", "true");
        a->json = json_is_object(r.json) ? json_incref(r.json) : NULL;
        const char *id = json_string_value(json_object_get(a->json, "orderId"));
        const char *field = json_string_value(json_object_get(a->json, "field"));
        snprintf(a->order_id, sizeof a->order_id, "%s", id ? id : "");
        snprintf(a->field, sizeof a->field, "%s", field ? field : "");
    } else {
        fprintf(stderr, "POST %s: %s\n", url, err);
    }
    deta_client_resp_clear(&r);
    deta_client_free(c);
    return ok;
}

static void post_to(const char *url_var, const char *key, const char *body, answer_t *a) {
    char line[512];
    snprintf(line, sizeof line, "Idempotency-Key: %s", key);
    if (!post_raw(url_var, key ? line : NULL, body, a))
        fail_msg("POST /api/orders on %s: no answer", url_var);
}

static void post(const char *key, const char *body, answer_t *a) {
    post_to("ORDER_SERVICE_URL", key, body, a);
}

/* A POST that must create: 201, not marked replayed; its order id into id. */
static void post_created(const char *key, const char *body, char id[64]) {
    answer_t a;
    post(key, body, &a);
    if (a.status != 201 || a.replayed)
        fail_msg("expected 201 (not replayed), got %ld%s: %s", a.status,
                 a.replayed ? " replayed" : "", json_dumps(a.json, 0));
    assert_true(deta_uuid_valid(a.order_id));
    snprintf(id, 64, "%s", a.order_id);
    answer_clear(&a);
}

/* A POST that must replay the order id: 200 with Idempotent-Replayed: true. */
static void post_replayed(const char *url_var, const char *key, const char *body,
                          const char *id) {
    answer_t a;
    post_to(url_var, key, body, &a);
    if (a.status != 200 || !a.replayed || strcmp(a.order_id, id) != 0)
        fail_msg("expected 200 replayed of %s, got %ld%s for %s", id, a.status,
                 a.replayed ? " replayed" : "", a.order_id);
    answer_clear(&a);
}

/* ---- the stack's data ---- */

static void fresh(const char *prefix, char *out, size_t size) {
    char u[37];
    ts_uuid(u);
    snprintf(out, size, "%s-%s", prefix, u);
}

static char *order_body(const char *customer, const char *currency, const char *lines) {
    char *s = malloc(4096);
    assert_non_null(s);
    snprintf(s, 4096, "{\"customerId\":\"%s\"%s%s%s,\"items\":[%s]}", customer,
             currency ? ",\"currency\":\"" : "", currency ? currency : "", currency ? "\"" : "",
             lines);
    return s;
}

#define LINES_A                                                                            \
    "{\"itemId\":\"sku-1\",\"quantity\":2,\"unitPrice\":\"9.9\"},"                         \
    "{\"itemId\":\"sku-2\",\"quantity\":1,\"unitPrice\":0.5}"
/* The same as LINES_A after validation: amounts by value, keys in another order. */
#define LINES_A_AGAIN                                                                      \
    "{\"unitPrice\":9.90,\"quantity\":2,\"itemId\":\"sku-1\"},"                            \
    "{\"itemId\":\"sku-2\",\"quantity\":1,\"unitPrice\":\"0.50\",\"note\":\"ignored\"}"
#define LINES_A_SWAPPED                                                                    \
    "{\"itemId\":\"sku-2\",\"quantity\":1,\"unitPrice\":0.5},"                             \
    "{\"itemId\":\"sku-1\",\"quantity\":2,\"unitPrice\":\"9.9\"}"
#define LINES_A_MORE                                                                       \
    "{\"itemId\":\"sku-1\",\"quantity\":3,\"unitPrice\":\"9.9\"},"                         \
    "{\"itemId\":\"sku-2\",\"quantity\":1,\"unitPrice\":0.5}"

static long pg_count(const char *sql, const char *arg) {
    PGconn *db = ts_pg("order_db");
    const char *params[] = {arg};
    long n = ts_pg_long(db, sql, arg ? 1 : 0, arg ? params : NULL);
    PQfinish(db);
    return n;
}

static long orders_of(const char *customer) {
    return pg_count("SELECT count(*) FROM orders WHERE customer_id = $1", customer);
}

static long outbox_rows(void) { return pg_count("SELECT count(*) FROM outbox", NULL); }

static long key_rows(const char *key) {
    return pg_count("SELECT count(*) FROM idempotency_keys WHERE idempotency_key = $1", key);
}

/* The order's events on raw.order-events: exactly one, its order.created. */
static void one_order_created(const char *order_id) {
    ts_kafka_msg_t m;
    if (!ts_kafka_find(DETA_TOPIC_ORDER_EVENTS, order_id, 30000, &m))
        fail_msg("no event for %s on %s", order_id, DETA_TOPIC_ORDER_EVENTS);
    json_t *ev = json_loads(m.value, 0, NULL);
    assert_non_null(ev);
    assert_string_equal(json_string_value(json_object_get(ev, "eventType")),
                        DETA_EVT_ORDER_CREATED);
    json_decref(ev);
    ts_kafka_msg_free(&m);
    assert_int_equal(ts_kafka_count(DETA_TOPIC_ORDER_EVENTS, order_id, 30000), 1);
}

/* ---- replays and refusals ---- */

static void a_retry_replays_the_first_order(void **state) {
    (void)state;
    char customer[64], key[64], id[64];
    fresh("idem", customer, sizeof customer);
    fresh("key", key, sizeof key);
    char *body = order_body(customer, NULL, LINES_A);
    answer_t first;
    post(key, body, &first);
    assert_int_equal(first.status, 201);
    assert_false(first.replayed);
    snprintf(id, sizeof id, "%s", first.order_id);

    /* The same body, and bodies the same after validation. */
    char *again = order_body(customer, "USD", LINES_A_AGAIN);
    const char *bodies[] = {body, again, body};
    for (size_t i = 0; i < 3; i++) {
        answer_t a;
        post(key, bodies[i], &a);
        if (a.status != 200 || !a.replayed)
            fail_msg("retry %zu: %ld%s: %s", i, a.status, a.replayed ? " replayed" : "",
                     json_dumps(a.json, 0));
        /* The 201's body: the same fields with the same values, status as it is now. */
        assert_int_equal(json_object_size(a.json), json_object_size(first.json));
        const char *same[] = {"orderId", "customerId", "totalAmount", "currency",
                              "createdAt", "correlationId"};
        for (size_t f = 0; f < sizeof same / sizeof *same; f++) {
            const char *want = json_string_value(json_object_get(first.json, same[f]));
            const char *got = json_string_value(json_object_get(a.json, same[f]));
            if (!want || !got || strcmp(want, got) != 0)
                fail_msg("retry %zu: %s is %s, the 201 said %s", i, same[f], got, want);
        }
        assert_non_null(json_string_value(json_object_get(a.json, "status")));
        answer_clear(&a);
    }
    assert_string_equal(json_string_value(json_object_get(first.json, "totalAmount")), "20.30");
    answer_clear(&first);
    assert_int_equal(orders_of(customer), 1);
    assert_int_equal(key_rows(key), 1);
    one_order_created(id);
    free(body);
    free(again);
}

static void another_request_under_the_key_is_422(void **state) {
    (void)state;
    char customer[64], other[64], key[64], id[64];
    fresh("idem", customer, sizeof customer);
    fresh("idem", other, sizeof other);
    fresh("key", key, sizeof key);
    char *body = order_body(customer, NULL, LINES_A);
    post_created(key, body, id);
    one_order_created(id); /* published: the outbox count below is settled */
    long outbox = outbox_rows();
    char *different[] = {
        order_body(customer, NULL, LINES_A_MORE),    /* a quantity */
        order_body(customer, NULL, LINES_A_SWAPPED), /* the line order */
        order_body(customer, "EUR", LINES_A),        /* the currency */
        order_body(other, NULL, LINES_A),            /* the customer: keys are global */
    };
    for (size_t i = 0; i < sizeof different / sizeof *different; i++) {
        answer_t a;
        post(key, different[i], &a);
        if (a.status != 422 || strcmp(a.field, "Idempotency-Key") != 0 || a.replayed)
            fail_msg("case %zu: expected 422 naming Idempotency-Key, got %ld: %s", i, a.status,
                     json_dumps(a.json, 0));
        assert_int_equal(json_integer_value(json_object_get(a.json, "status")), 422);
        answer_clear(&a);
        free(different[i]);
    }
    assert_int_equal(orders_of(customer), 1);
    assert_int_equal(orders_of(other), 0);
    assert_int_equal(outbox_rows(), outbox);
    assert_int_equal(ts_kafka_count(DETA_TOPIC_ORDER_EVENTS, id, 30000), 1);
    /* The first request still replays. */
    post_replayed("ORDER_SERVICE_URL", key, body, id);
    free(body);
}

static void bad_keys_are_400_naming_the_header(void **state) {
    (void)state;
    char customer[64], long_key[300], line[400];
    fresh("idem", customer, sizeof customer);
    char *body = order_body(customer, NULL, LINES_A);
    memset(long_key, 'k', 256);
    long_key[256] = 0;
    snprintf(line, sizeof line, "Idempotency-Key: %s", long_key);
    const char *lines[] = {
        "Idempotency-Key;",          /* present and empty (curl's way to send one) */
        line,                        /* 256 characters */
        "Idempotency-Key: a b",      /* a space */
        "Idempotency-Key: a\tb",     /* a tab */
        "Idempotency-Key: caf\xc3\xa9", /* non-ASCII */
        "Idempotency-Key: a\x7f",    /* DEL */
    };
    long outbox = outbox_rows();
    for (size_t i = 0; i < sizeof lines / sizeof *lines; i++) {
        answer_t a;
        if (!post_raw("ORDER_SERVICE_URL", lines[i], body, &a))
            fail_msg("case %zu: no answer", i);
        if (a.status != 400 || strcmp(a.field, "Idempotency-Key") != 0)
            fail_msg("case %zu: expected 400 naming Idempotency-Key, got %ld: %s", i, a.status,
                     json_dumps(a.json, 0));
        answer_clear(&a);
    }
    /* The key is checked before the body. */
    answer_t a;
    post_raw("ORDER_SERVICE_URL", "Idempotency-Key: a b", "{\"customerId\":\"\"}", &a);
    assert_int_equal(a.status, 400);
    assert_string_equal(a.field, "Idempotency-Key");
    answer_clear(&a);
    /* 255 visible characters are a key (a fresh one: the stack outlives a run). */
    fresh("key", long_key, sizeof long_key);
    memset(long_key + strlen(long_key), '~', 255 - strlen(long_key));
    long_key[255] = 0;
    char id[64];
    post_created(long_key, body, id);
    assert_int_equal(orders_of(customer), 1);
    assert_int_equal(outbox_rows(), outbox + 1);
    free(body);
}

static void without_a_key_every_post_creates(void **state) {
    (void)state;
    char customer[64], a_id[64], b_id[64];
    fresh("idem", customer, sizeof customer);
    char *body = order_body(customer, NULL, LINES_A);
    post_created(NULL, body, a_id);
    post_created(NULL, body, b_id);
    assert_string_not_equal(a_id, b_id);
    assert_int_equal(orders_of(customer), 2);
    free(body);
}

/* ---- concurrency ---- */

typedef struct racer {
    const char *url_var;
    const char *key;
    const char *body;
    pthread_barrier_t *start;
    bool answered;
    answer_t a;
} racer_t;

static void *race(void *arg) {
    racer_t *r = arg;
    if (r->start)
        pthread_barrier_wait(r->start);
    char line[512];
    snprintf(line, sizeof line, "Idempotency-Key: %s", r->key);
    r->answered = post_raw(r->url_var, line, r->body, &r->a);
    return NULL;
}

/* THREADS POSTs at once with one key, alternating over the url_vars; exactly one
 * is 201, the others 200 replayed, all with one order id, into id. */
static void race_one_key(const char *const *url_vars, size_t nurls, const char *customer,
                         char id[64]) {
    char key[64];
    fresh("key", key, sizeof key);
    char *body = order_body(customer, NULL, LINES_A);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, THREADS);
    racer_t r[THREADS];
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) {
        r[i] = (racer_t){url_vars[i % nurls], key, body, &start, false, {0}};
        assert_int_equal(pthread_create(&t[i], NULL, race, &r[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&start);
    int created = 0;
    for (int i = 0; i < THREADS; i++) {
        if (!r[i].answered)
            fail_msg("racer %d (%s): no answer", i, r[i].url_var);
        fprintf(stderr, "racer %d (%s): %ld%s %s\n", i, r[i].url_var, r[i].a.status,
                r[i].a.replayed ? " replayed" : "", r[i].a.order_id);
        if (r[i].a.status == 201 && !r[i].a.replayed)
            created++;
        else if (r[i].a.status != 200 || !r[i].a.replayed)
            fail_msg("racer %d: %ld: %s", i, r[i].a.status, json_dumps(r[i].a.json, 0));
        if (strcmp(r[i].a.order_id, r[0].a.order_id) != 0)
            fail_msg("racer %d answered %s, racer 0 %s", i, r[i].a.order_id, r[0].a.order_id);
    }
    assert_int_equal(created, 1);
    snprintf(id, 64, "%s", r[0].a.order_id);
    for (int i = 0; i < THREADS; i++)
        answer_clear(&r[i].a);
    assert_int_equal(orders_of(customer), 1);
    assert_int_equal(key_rows(key), 1);
    one_order_created(id);
    free(body);
}

static void concurrent_posts_with_one_key_make_one_order(void **state) {
    (void)state;
    static const char *const one[] = {"ORDER_SERVICE_URL"};
    char customer[64], id[64];
    fresh("idem", customer, sizeof customer);
    race_one_key(one, 1, customer, id);
}

/* Polls until count_sql (one text parameter) counts at least one row; false after
 * LOCK_WAIT_MS. */
static bool await_count(PGconn *db, const char *count_sql, const char *arg) {
    const char *params[] = {arg};
    for (int waited = 0; waited < LOCK_WAIT_MS; waited += 20) {
        if (ts_pg_long(db, count_sql, arg ? 1 : 0, arg ? params : NULL) > 0)
            return true;
        ts_sleep_ms(20);
    }
    return false;
}

/* Backends of order_db waiting for a lock, by what they wait on and run. */
#define WAITING_ON_OUTBOX                                                                  \
    "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"             \
    " WHERE NOT l.granted AND l.relation = 'outbox'::regclass"                             \
    " AND a.query ILIKE '%INSERT INTO outbox%'"
#define WAITING_ON_KEY                                                                     \
    "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"             \
    " WHERE NOT l.granted AND l.locktype = 'transactionid'"                                \
    " AND a.query ILIKE '%INSERT INTO idempotency_keys%'"

static void pg_ok(PGconn *db, const char *sql) {
    PGresult *res = PQexec(db, sql);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(db));
    PQclear(res);
}

/* The test holds outbox so that a first request stops after writing its key and
 * order (its outbox INSERT waits); a second request with the key then waits on
 * the first's key row. */
typedef struct held {
    PGconn *db;
    racer_t first, second;
    pthread_t t1, t2;
    bool started1, started2, joined1, joined2;
    char key[64];
    char *body;
} held_t;

/* The test's hold, static so that the teardown releases it when an assertion
 * left the test early: a lock on outbox left held would stall every later order. */
static held_t held;

static int release_held(void **state) {
    (void)state;
    if (held.db)
        PQfinish(held.db); /* ends the transaction and its lock */
    if (held.started1 && !held.joined1)
        pthread_join(held.t1, NULL);
    if (held.started2 && !held.joined2)
        pthread_join(held.t2, NULL);
    answer_clear(&held.first.a);
    answer_clear(&held.second.a);
    free(held.body);
    memset(&held, 0, sizeof held);
    return 0;
}

static void hold_two_requests(held_t *h, const char *customer) {
    memset(h, 0, sizeof *h);
    fresh("key", h->key, sizeof h->key);
    h->body = order_body(customer, NULL, LINES_A);
    h->db = ts_pg("order_db");
    pg_ok(h->db, "BEGIN");
    pg_ok(h->db, "LOCK TABLE outbox IN SHARE ROW EXCLUSIVE MODE");
    PGconn *watch = ts_pg("order_db");
    h->first = (racer_t){"ORDER_SERVICE_URL", h->key, h->body, NULL, false, {0}};
    assert_int_equal(pthread_create(&h->t1, NULL, race, &h->first), 0);
    h->started1 = true;
    if (!await_count(watch, WAITING_ON_OUTBOX, NULL))
        fail_msg("the first request does not wait on outbox");
    h->second = (racer_t){"ORDER_SERVICE_URL", h->key, h->body, NULL, false, {0}};
    assert_int_equal(pthread_create(&h->t2, NULL, race, &h->second), 0);
    h->started2 = true;
    if (!await_count(watch, WAITING_ON_KEY, NULL))
        fail_msg("the second request does not wait on the first's key");
    PQfinish(watch);
}

static void a_waiting_request_replays_after_the_first_commits(void **state) {
    (void)state;
    char customer[64];
    fresh("idem", customer, sizeof customer);
    held_t *h = &held;
    hold_two_requests(h, customer);
    assert_int_equal(orders_of(customer), 0); /* neither has committed */
    pg_ok(h->db, "COMMIT");
    pthread_join(h->t1, NULL);
    h->joined1 = true;
    pthread_join(h->t2, NULL);
    h->joined2 = true;
    assert_true(h->first.answered && h->second.answered);
    assert_int_equal(h->first.a.status, 201);
    assert_false(h->first.a.replayed);
    assert_int_equal(h->second.a.status, 200);
    assert_true(h->second.a.replayed);
    assert_string_equal(h->second.a.order_id, h->first.a.order_id);
    assert_int_equal(orders_of(customer), 1);
    one_order_created(h->first.a.order_id);
}

static void a_waiting_request_creates_when_the_first_failed(void **state) {
    (void)state;
    char customer[64];
    fresh("idem", customer, sizeof customer);
    held_t *h = &held;
    hold_two_requests(h, customer);
    /* The first request's session ends: its transaction (key, order) rolls back,
     * and the second, no longer blocked by the key, goes on to wait on outbox. */
    PGconn *watch = ts_pg("order_db");
    assert_int_equal(ts_pg_long(watch,
                                "SELECT count(pg_terminate_backend(l.pid)) FROM pg_locks l"
                                " JOIN pg_stat_activity a ON a.pid = l.pid"
                                " WHERE NOT l.granted AND l.relation = 'outbox'::regclass"
                                " AND a.query ILIKE '%INSERT INTO outbox%'",
                                0, NULL),
                     1);
    pthread_join(h->t1, NULL);
    h->joined1 = true;
    if (!await_count(watch, WAITING_ON_OUTBOX, NULL))
        fail_msg("the second request does not go on to write its order");
    PQfinish(watch);
    pg_ok(h->db, "COMMIT");
    pthread_join(h->t2, NULL);
    h->joined2 = true;
    assert_true(h->first.answered && h->second.answered);
    assert_int_equal(h->first.a.status, 503); /* the database failed it: retry */
    assert_int_equal(h->second.a.status, 201);
    assert_false(h->second.a.replayed);
    assert_int_equal(orders_of(customer), 1);
    one_order_created(h->second.a.order_id);
    /* The key is the second's now. */
    post_replayed("ORDER_SERVICE_URL", h->key, h->body, h->second.a.order_id);
}

/* ---- restarts and instances ---- */

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

static void keys_outlive_a_restart(void **state) {
    (void)state;
    char customer[64], key[64], id[64];
    fresh("idem", customer, sizeof customer);
    fresh("key", key, sizeof key);
    char *body = order_body(customer, NULL, LINES_A);
    post_created(key, body, id);
    assert_int_equal(ts_stack("stop order-service"), 0);
    assert_int_equal(ts_stack("start order-service"), 0);
    export_url("order-service", "ORDER_SERVICE_URL");
    post_replayed("ORDER_SERVICE_URL", key, body, id);
    char *more = order_body(customer, NULL, LINES_A_MORE);
    answer_t a;
    post(key, more, &a);
    assert_int_equal(a.status, 422);
    answer_clear(&a);
    assert_int_equal(orders_of(customer), 1);
    one_order_created(id);
    free(body);
    free(more);
}

static void two_instances_make_one_order(void **state) {
    (void)state;
    assert_int_equal(ts_stack("scale order-service 2"), 0);
    export_url("order-service.2", "ORDER_SERVICE_2_URL");
    static const char *const both[] = {"ORDER_SERVICE_URL", "ORDER_SERVICE_2_URL"};
    char customer[64], id[64];
    fresh("idem", customer, sizeof customer);
    race_one_key(both, 2, customer, id);
    /* One after the other: the second instance replays the first's order. */
    char key[64], first[64];
    fresh("idem", customer, sizeof customer);
    fresh("key", key, sizeof key);
    char *body = order_body(customer, NULL, LINES_A);
    post_created(key, body, first);
    post_replayed("ORDER_SERVICE_2_URL", key, body, first);
    assert_int_equal(orders_of(customer), 1);
    free(body);
}

/* The teardowns leave order-service as the tests found it, pass or fail: one
 * instance, running (a start of a running part does nothing). */
static int back_to_one_instance(void **state) {
    (void)state;
    ts_stack("scale order-service 1");
    export_url("order-service", "ORDER_SERVICE_URL");
    return 0;
}

static int order_service_running(void **state) {
    (void)state;
    ts_stack("start order-service");
    export_url("order-service", "ORDER_SERVICE_URL");
    return 0;
}

/* ---- the purge ---- */

static void old_keys_are_purged_fresh_ones_stay(void **state) {
    (void)state;
    char customer[64], old_key[64], new_key[64], old_id[64], new_id[64], again_id[64];
    fresh("idem", customer, sizeof customer);
    fresh("key", old_key, sizeof old_key);
    fresh("key", new_key, sizeof new_key);
    char *body = order_body(customer, NULL, LINES_A);
    post_created(old_key, body, old_id);
    post_created(new_key, body, new_id);
    double before = ts_metric("ORDER_SERVICE_URL", "order_idempotency_keys_purged_total");
    /* Older than the longest TTL there is (8760 h), whatever the stack's setting. */
    PGconn *db = ts_pg("order_db");
    const char *params[] = {old_key};
    assert_int_equal(ts_pg_long(db,
                                "WITH u AS (UPDATE idempotency_keys SET created_at = now() -"
                                " interval '8761 hours' WHERE idempotency_key = $1 RETURNING 1)"
                                " SELECT count(*) FROM u",
                                1, params),
                     1);
    PQfinish(db);
    int waited = 0;
    while (key_rows(old_key) > 0 && waited < PURGE_WAIT_MS) {
        ts_sleep_ms(500);
        waited += 500;
    }
    if (key_rows(old_key) > 0)
        fail_msg("the backdated key is still there after %d ms", waited);
    fprintf(stderr, "purged after about %d ms\n", waited);
    assert_int_equal(key_rows(new_key), 1);
    double after = ts_metric("ORDER_SERVICE_URL", "order_idempotency_keys_purged_total");
    assert_true(after >= (before < 0 ? 0 : before) + 1);
    /* The order stays; its key, reused, makes a new order. */
    assert_int_equal(pg_count("SELECT count(*) FROM orders WHERE order_id = $1::uuid", old_id), 1);
    post_created(old_key, body, again_id);
    assert_string_not_equal(again_id, old_id);
    post_replayed("ORDER_SERVICE_URL", new_key, body, new_id);
    assert_int_equal(orders_of(customer), 3);
    free(body);
}

int main(void) {
    deta_client_global_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_retry_replays_the_first_order),
        cmocka_unit_test(another_request_under_the_key_is_422),
        cmocka_unit_test(bad_keys_are_400_naming_the_header),
        cmocka_unit_test(without_a_key_every_post_creates),
        cmocka_unit_test(concurrent_posts_with_one_key_make_one_order),
        cmocka_unit_test_teardown(a_waiting_request_replays_after_the_first_commits,
                                  release_held),
        cmocka_unit_test_teardown(a_waiting_request_creates_when_the_first_failed, release_held),
        cmocka_unit_test(old_keys_are_purged_fresh_ones_stay),
        cmocka_unit_test_teardown(keys_outlive_a_restart, order_service_running),
        cmocka_unit_test_teardown(two_instances_make_one_order, back_to_one_instance),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    deta_client_global_cleanup();
    return failed;
}
