/*
 * test_query_cql_statements.c - query-api's Cassandra read model
 * (services/query-api/read_model_cql.c) against the model CQL server
 * (tests/support/cql_model_server.py), statement by statement.
 *
 *   the golden transcript: for a fixed sequence of events of two orders (ids,
 *   payloads and the store's clock fixed) and a fixed set of reads, the model's
 *   request log (the CQL, the bound values decoded by column type, the
 *   consistency and the serial consistency of every QUERY, EXECUTE and BATCH)
 *   equals tests/integration/golden/query_cql_statements.jsonl exactly. The
 *   client's own statements (its data-center check on connecting) and PREPAREs
 *   are left out: they are the client's, not the store's. UPDATE_GOLDEN=1
 *   rewrites the file instead (review the diff). It also prints the round trips
 *   and bytes of each event (deta_cql_get_stats), the figures of
 *   docs/read-model-cassandra.md;
 *   lost races: a row another writer inserted between the store's read and its
 *   INSERT IF NOT EXISTS, or changed before its UPDATE IF version = ..., is
 *   merged into and written again; ten lost races in a row are TRANSIENT;
 *   stale list keys (a status the view has left, a customer order.created
 *   replaced) are skipped and deleted; a key ahead of a view read behind it is
 *   skipped and kept; a list walks days newest first and its cursor resumes in
 *   the right day;
 *   errors: OVERLOADED and UNAVAILABLE while applying are TRANSIENT (and a retry
 *   then folds the event), a refused statement INTERNAL; creating the schema
 *   waits while the server is overloaded and fails at once when unauthorized or
 *   when its credentials are refused.
 *
 * Needs the test stack only for a service's Postgres settings (the schema's
 * waiting needs a deta_service_t); the model server is started here.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cql_model.h"
#include "deta/envelope.h"
#include "deta/log.h"
#include "deta/service.h"
#include "deta/topics.h"
#include "read_model.h"
#include "read_model_cql.h"
#include "testsupport.h"

#ifndef DETA_TESTS_SOURCE_DIR
#error "DETA_TESTS_SOURCE_DIR must name tests/"
#endif
#define GOLDEN DETA_TESTS_SOURCE_DIR "/integration/golden/query_cql_statements.jsonl"
#define ACTUAL "/tmp/query_cql_statements.actual.jsonl" /* kept when they differ */

static ts_cql_t server;
static char log_dir[64], log_path[300];

/* ---- the store's clock ---- */

static int64_t fixed_us;
static int64_t fixed_clock(void) { return fixed_us; }

static void set_clock(const char *instant) {
    assert_true(deta_timestamp_us(instant, &fixed_us));
    read_model_cql_set_clock(fixed_clock);
}

/* ---- the store ---- */

static read_model_t *open_store_as(const char *keyspace, deta_service_t *svc, const char *user,
                                   const char *password, deta_err_t want, char *err,
                                   size_t errsize) {
    ts_cql_setenv(&server, keyspace);
    if (user) {
        setenv("CASSANDRA_USERNAME", user, 1);
        setenv("CASSANDRA_PASSWORD", password, 1);
    } else {
        unsetenv("CASSANDRA_USERNAME");
        unsetenv("CASSANDRA_PASSWORD");
    }
    query_settings_t settings = {.store = QUERY_STORE_CASSANDRA};
    if (query_cassandra_settings_load(&settings.cassandra, err, errsize) != DETA_OK)
        fail_msg("settings: %s", err);
    read_model_t *rm = read_model_new(svc, &settings, err, errsize);
    assert_non_null(rm);
    deta_err_t got = read_model_prepare(rm, err, errsize);
    if (got != want)
        fail_msg("prepare of %s: %s (%s), expected %s", keyspace, deta_err_name(got), err,
                 deta_err_name(want));
    return rm;
}

static read_model_t *open_store(const char *keyspace) {
    char err[512] = "";
    return open_store_as(keyspace, NULL, NULL, NULL, DETA_OK, err, sizeof err);
}

/* ---- events ---- */

typedef struct event {
    deta_event_t ev;
    query_change_t change;
} event_t;

static void event_make(event_t *e, const char *type, const char *order_id, const char *event_id,
                       const char *at, const char *payload) {
    char err[256] = "";
    json_error_t jerr;
    json_t *p = json_loads(payload, 0, &jerr);
    if (!p)
        fail_msg("bad payload %s: %s", payload, jerr.text);
    if (deta_event_init(&e->ev, type, order_id, "corr-golden", "it-query-cql", p, err,
                        sizeof err) != DETA_OK)
        fail_msg("event_init: %s", err);
    if (event_id)
        snprintf(e->ev.event_id, sizeof e->ev.event_id, "%s", event_id);
    snprintf(e->ev.occurred_at, sizeof e->ev.occurred_at, "%s", at);
    if (query_change_from_event(&e->ev, &e->change, err, sizeof err) != DETA_OK)
        fail_msg("%s refused: %s", type, err);
}

static read_model_outcome_t apply(read_model_t *rm, const event_t *e) {
    char err[512] = "";
    read_model_outcome_t out;
    deta_err_t got = read_model_apply(rm, NULL, &e->change, &out, err, sizeof err);
    if (got != DETA_OK)
        fail_msg("apply %s: %s: %s", e->change.event_type, deta_err_name(got), err);
    return out;
}

static deta_err_t apply_err(read_model_t *rm, const event_t *e, char *err, size_t errsize) {
    read_model_outcome_t out;
    return read_model_apply(rm, NULL, &e->change, &out, err, errsize);
}

static void view_of(read_model_t *rm, const char *order_id, query_view_t *v) {
    char err[256] = "";
    if (read_model_get(rm, order_id, v, err, sizeof err) != DETA_OK)
        fail_msg("get %s: %s", order_id, err);
}

/* The view's fields as the API shows them, compared. */
static void assert_views_equal(const query_view_t *want, const query_view_t *got) {
    json_t *a = query_view_to_json(want), *b = query_view_to_json(got);
    char *sa = json_dumps(a, JSON_SORT_KEYS), *sb = json_dumps(b, JSON_SORT_KEYS);
    if (strcmp(sa, sb) != 0)
        fail_msg("views differ:\n  want %s\n  got  %s", sa, sb);
    assert_int_equal(want->status_rank, got->status_rank);
    free(sa);
    free(sb);
    json_decref(a);
    json_decref(b);
}

static void control(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void control(const char *fmt, ...) {
    char line[2048], reply[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    ts_cql_control(&server, line, reply, sizeof reply);
}

#define CREATED_PAYLOAD(customer)                                                            \
    "{\"customerId\":\"" customer "\",\"totalAmount\":\"20.48\",\"currency\":\"EUR\","      \
    "\"createdAt\":\"2026-11-25T12:00:00.000Z\",\"items\":[]}"

/* ---- the golden transcript ---- */

/* The store's statements of the log: QUERY, EXECUTE and BATCH lines, without the
 * client's data-center check. malloc'd. */
static char *store_lines(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f)
        fail_msg("no request log at %s", path);
    size_t cap = 1 << 16, used = 0;
    char *out = malloc(cap), line[65536];
    assert_non_null(out);
    out[0] = '\0';
    while (fgets(line, sizeof line, f)) {
        if (strstr(line, "\"op\": \"PREPARE\"") ||
            strstr(line, "SELECT data_center FROM system.local"))
            continue;
        size_t n = strlen(line);
        while (used + n + 1 > cap) {
            cap *= 2;
            out = realloc(out, cap);
            assert_non_null(out);
        }
        memcpy(out + used, line, n + 1);
        used += n;
    }
    fclose(f);
    return out;
}

static char *read_all(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    assert_non_null(s);
    size_t got = fread(s, 1, (size_t)n, f);
    s[got] = '\0';
    fclose(f);
    return s;
}

/* The first line where a and b differ, for the failure message. */
static void first_difference(const char *a, const char *b, char *out, size_t size) {
    int line = 1;
    const char *la = a, *lb = b;
    while (*a && *a == *b) {
        if (*a == '\n') {
            line++;
            la = a + 1;
            lb = b + 1;
        }
        a++;
        b++;
    }
    const char *ea = strchr(la, '\n'), *eb = strchr(lb, '\n');
    snprintf(out, size, "line %d:\n  golden: %.*s\n  actual: %.*s", line,
             (int)(ea ? ea - la : (long)strlen(la)), la, (int)(eb ? eb - lb : (long)strlen(lb)),
             lb);
}

typedef struct cost {
    unsigned long requests, bytes_out, bytes_in;
} cost_t;

static cost_t measure(read_model_t *rm, const event_t *e) {
    deta_cql_stats_t before, after;
    assert_true(read_model_cql_client_stats(rm, &before));
    apply(rm, e);
    assert_true(read_model_cql_client_stats(rm, &after));
    return (cost_t){after.requests - before.requests, after.bytes_out - before.bytes_out,
                    after.bytes_in - before.bytes_in};
}

/* One order's five events: a partial row first, its identity, a redelivery, two
 * status moves. ids[0] is the order, ids[1..4] the events'. */
static void order_events(event_t *e, const char *const ids[5]) {
    event_make(&e[0], DETA_EVT_INVENTORY_RESERVED, ids[0], ids[1], "2026-11-25T12:00:01.000Z",
               "{\"reservationId\":\"r-1\",\"customerId\":\"c-first\"}");
    event_make(&e[1], DETA_EVT_ORDER_CREATED, ids[0], ids[2], "2026-11-25T12:00:00.000Z",
               CREATED_PAYLOAD("c-golden"));
    event_make(&e[2], DETA_EVT_ORDER_CREATED, ids[0], ids[2], "2026-11-25T12:00:00.000Z",
               CREATED_PAYLOAD("c-golden"));
    event_make(&e[3], DETA_EVT_PAYMENT_AUTHORIZED, ids[0], ids[3], "2026-11-25T12:00:02.000Z",
               "{\"paymentId\":\"p-1\"}");
    event_make(&e[4], DETA_EVT_DELIVERY_ASSIGNED, ids[0], ids[4], "2026-11-25T12:00:03.000Z",
               "{\"deliveryId\":\"d-1\",\"driverId\":\"drv-1\",\"driverName\":\"Ada\","
               "\"estimatedDeliveryAt\":\"2026-11-25T12:40:00.000Z\","
               "\"assignedAt\":\"2026-11-25T12:00:03.000Z\"}");
}

static void list(read_model_t *rm, int limit, const char *cursor, const char *status,
                 const char *customer, query_page_t *page) {
    char n[16], err[256] = "";
    snprintf(n, sizeof n, "%d", limit);
    query_list_params_t p;
    query_violation_t v;
    if (query_list_params_parse(n, cursor, status, customer, &p, &v) != DETA_OK)
        fail_msg("list params: %s", v.message);
    if (read_model_list(rm, &p, page, err, sizeof err) != DETA_OK)
        fail_msg("list: %s", err);
}

static void cursor_of(const query_page_t *page, char *out, size_t size) {
    query_cursor_t c;
    memcpy(c.at, page->items[page->n - 1].first_seen_at, sizeof c.at);
    memcpy(c.order_id, page->items[page->n - 1].order_id, sizeof c.order_id);
    assert_true(query_cursor_encode(&c, out, size));
}

static void statements_match_the_golden_transcript(void **state) {
    (void)state;
    control("log %s", log_path);
    set_clock("2026-11-25T12:00:00.500001Z");
    read_model_t *rm = open_store("golden");
    static const char *const a[5] = {
        "5b6962dd-3f90-4c93-8f61-eabfa4a803e2", "0e9b5e2a-0000-4000-8000-000000000001",
        "0e9b5e2a-0000-4000-8000-000000000002", "0e9b5e2a-0000-4000-8000-000000000003",
        "0e9b5e2a-0000-4000-8000-000000000004"};
    static const char *const b[5] = {
        "6c7a73ee-4f01-4d04-9072-fbc0b5b914f3", "1f0c6f3b-0000-4000-8000-000000000001",
        "1f0c6f3b-0000-4000-8000-000000000002", "1f0c6f3b-0000-4000-8000-000000000003",
        "1f0c6f3b-0000-4000-8000-000000000004"};
    event_t ea[5], eb[5];
    order_events(ea, a);
    order_events(eb, b);
    static const char *const what[5] = {"a new order (partial row)", "its order.created",
                                        "a redelivery of it", "a status move",
                                        "another status move"};
    cost_t first[5], steady[5];
    for (int i = 0; i < 5; i++)
        first[i] = measure(rm, &ea[i]);
    for (int i = 0; i < 5; i++)
        steady[i] = measure(rm, &eb[i]);
    printf("round trips and bytes per event (prepared statements cached; the first order's "
           "first uses also prepare):\n");
    unsigned long total_req = 0, total_out = 0, total_in = 0;
    for (int i = 0; i < 5; i++) {
        printf("  %-28s %lu round trips, %lu bytes out, %lu bytes in (first use: %lu, %lu, "
               "%lu)\n",
               what[i], steady[i].requests, steady[i].bytes_out, steady[i].bytes_in,
               first[i].requests, first[i].bytes_out, first[i].bytes_in);
        if (i != 2) {
            total_req += steady[i].requests;
            total_out += steady[i].bytes_out;
            total_in += steady[i].bytes_in;
        }
    }
    printf("  mean of the four new events: %.1f round trips, %.0f bytes out, %.0f bytes in\n",
           total_req / 4.0, total_out / 4.0, total_in / 4.0);

    /* the reads */
    query_view_t v;
    view_of(rm, a[0], &v);
    assert_string_equal(v.status, "DELIVERY_ASSIGNED");
    assert_string_equal(v.customer_id, "c-golden");
    char err[256] = "";
    query_timeline_t t;
    assert_int_equal(read_model_timeline(rm, a[0], &t, err, sizeof err), DETA_OK);
    assert_int_equal(t.n, 4); /* the redelivery overwrote itself */
    assert_string_equal(t.entries[0].event_type, "order.created");
    query_timeline_clear(&t);
    query_page_t page;
    list(rm, 1, NULL, NULL, NULL, &page);
    assert_int_equal(page.n, 1);
    assert_true(page.more);
    assert_string_equal(page.items[0].order_id, b[0]); /* same instant: the greater id */
    char cursor[QUERY_CURSOR_MAX];
    cursor_of(&page, cursor, sizeof cursor);
    query_page_clear(&page);
    list(rm, 1, cursor, NULL, NULL, &page);
    assert_int_equal(page.n, 1);
    assert_false(page.more);
    assert_string_equal(page.items[0].order_id, a[0]);
    query_page_clear(&page);
    list(rm, 10, NULL, "DELIVERY_ASSIGNED", NULL, &page);
    assert_int_equal(page.n, 2);
    query_page_clear(&page);
    list(rm, 10, NULL, "CREATED", NULL, &page);
    assert_int_equal(page.n, 0);
    query_page_clear(&page);
    list(rm, 10, NULL, "DELIVERY_ASSIGNED", "c-golden", &page);
    assert_int_equal(page.n, 2);
    query_page_clear(&page);
    list(rm, 10, NULL, NULL, "c-first", &page);
    assert_int_equal(page.n, 0);
    query_page_clear(&page);
    query_stats_t stats;
    assert_int_equal(read_model_stats(rm, &stats, err, sizeof err), DETA_OK);
    assert_int_equal(stats.by_status[4], 2); /* DELIVERY_ASSIGNED */
    char detail[256] = "";
    if (!read_model_ping(rm, detail, sizeof detail))
        fail_msg("ping: %s", detail);
    read_model_free(rm);
    read_model_cql_set_clock(NULL);
    control("log off");
    for (int i = 0; i < 5; i++) {
        deta_event_clear(&ea[i].ev);
        deta_event_clear(&eb[i].ev);
    }

    char *actual = store_lines(log_path);
    const char *update = getenv("UPDATE_GOLDEN");
    if (update && strcmp(update, "1") == 0) {
        FILE *f = fopen(GOLDEN, "w");
        assert_non_null(f);
        fputs(actual, f);
        fclose(f);
        printf("wrote %s\n", GOLDEN);
    }
    char *golden = read_all(GOLDEN);
    if (!golden)
        fail_msg("no golden transcript at %s (UPDATE_GOLDEN=1 writes it)", GOLDEN);
    if (strcmp(golden, actual) != 0) {
        char diff[8192];
        first_difference(golden, actual, diff, sizeof diff);
        FILE *f = fopen(ACTUAL, "w");
        if (f) {
            fputs(actual, f);
            fclose(f);
        }
        fail_msg("the store's statements differ from %s at %s\n(all of them: %s)", GOLDEN,
                 diff, ACTUAL);
    }
    free(golden);
    free(actual);
}

/* ---- lost races ---- */

static const char *const race_order = "7d0c3a8e-2b1f-4c55-9e61-3a2b4c5d6e7f";

static void a_lost_insert_race_merges_the_winner(void **state) {
    (void)state;
    read_model_t *rm = open_store("races_insert");
    set_clock("2026-11-25T12:00:00.000000Z");
    /* another writer's row, between this store's read and its INSERT */
    control("race 1 EXISTS INSERT INTO races_insert.order_view (order_id, "
            "customer_id, status, status_rank, updated_at, first_seen_at, correlation_id, "
            "version) VALUES (%s, 'c-other', 'PAYMENT_FAILED', 8, 1764072000000000, "
            "1764071999000000, 'corr-other', 1)",
            race_order);
    event_t e;
    event_make(&e, DETA_EVT_ORDER_CREATED, race_order, NULL, "2026-11-25T12:00:00.000Z",
               CREATED_PAYLOAD("c-1"));
    read_model_outcome_t out = apply(rm, &e);
    assert_false(out.status_changed); /* CREATED is below the winner's PAYMENT_FAILED */
    query_view_t want = {0}, got;
    snprintf(want.order_id, sizeof want.order_id, "%s", race_order);
    snprintf(want.customer_id, sizeof want.customer_id, "c-other");
    snprintf(want.status, sizeof want.status, "PAYMENT_FAILED");
    want.status_rank = 8;
    deta_timestamp_from_us(1764072000000000, want.updated_at);
    snprintf(want.correlation_id, sizeof want.correlation_id, "corr-other");
    query_view_merge(&want, &e.change);
    view_of(rm, race_order, &got);
    assert_views_equal(&want, &got);
    char filter[128];
    snprintf(filter, sizeof filter, "races_insert.order_view order_id=%s version=2", race_order);
    assert_int_equal(ts_cql_count(&server, filter), 1);
    deta_event_clear(&e.ev);
    read_model_free(rm);
    read_model_cql_set_clock(NULL);
}

static void a_lost_update_race_reads_again_and_merges(void **state) {
    (void)state;
    read_model_t *rm = open_store("races_update");
    event_t created, reserved;
    event_make(&created, DETA_EVT_ORDER_CREATED, race_order, NULL, "2026-11-25T12:00:00.000Z",
               CREATED_PAYLOAD("c-1"));
    event_make(&reserved, DETA_EVT_INVENTORY_RESERVED, race_order, NULL,
               "2026-11-25T12:00:01.000Z", "{\"reservationId\":\"r-9\"}");
    apply(rm, &created);
    control("race 1 UPDATE UPDATE races_update.order_view SET payment_id = 'p-race', "
            "status = 'PAYMENT_AUTHORIZED', status_rank = 3, version = 7 WHERE order_id = %s",
            race_order);
    read_model_outcome_t out = apply(rm, &reserved);
    assert_false(out.status_changed);
    query_view_t want, got;
    view_of(rm, race_order, &want); /* for first_seen_at; every other field is checked */
    memset(&want, 0, offsetof(query_view_t, first_seen_at));
    query_view_merge(&want, &created.change);
    snprintf(want.payment_id, sizeof want.payment_id, "p-race");
    snprintf(want.status, sizeof want.status, "PAYMENT_AUTHORIZED");
    want.status_rank = 3;
    query_view_merge(&want, &reserved.change);
    view_of(rm, race_order, &got);
    assert_views_equal(&want, &got);
    assert_string_equal(got.reservation_id, "r-9");
    char filter[128];
    snprintf(filter, sizeof filter, "races_update.order_view order_id=%s version=8", race_order);
    assert_int_equal(ts_cql_count(&server, filter), 1);
    /* ten races lost in a row: TRANSIENT, for the consumer to retry */
    for (int i = 0; i < 10; i++)
        control("race 1 UPDATE UPDATE races_update.order_view SET version = %d WHERE "
                "order_id = %s",
                100 + i, race_order);
    event_t eta;
    event_make(&eta, DETA_EVT_ETA_UPDATED, race_order, NULL, "2026-11-25T12:00:05.000Z",
               "{\"estimatedDeliveryAt\":\"2026-11-25T12:40:00.000Z\","
               "\"calculatedAt\":\"2026-11-25T12:00:05.000Z\"}");
    char err[256] = "";
    assert_int_equal(apply_err(rm, &eta, err, sizeof err), DETA_ERR_TRANSIENT);
    assert_non_null(strstr(err, "races"));
    apply(rm, &eta); /* the races are over */
    view_of(rm, race_order, &got);
    assert_string_equal(got.estimated_delivery_at, "2026-11-25T12:40:00.000Z");
    deta_event_clear(&created.ev);
    deta_event_clear(&reserved.ev);
    deta_event_clear(&eta.ev);
    read_model_free(rm);
}

/* ---- the lists ---- */

static void stale_keys_are_skipped_and_dropped(void **state) {
    (void)state;
    read_model_t *rm = open_store("stale");
    set_clock("2026-11-25T10:00:00.000000Z");
    static const char *const id = "8e1d4b9f-3c2a-4d66-8f72-4b3c5d6e7f80";
    event_t created, authorized;
    event_make(&created, DETA_EVT_ORDER_CREATED, id, NULL, "2026-11-25T12:00:00.000Z",
               CREATED_PAYLOAD("c-1"));
    event_make(&authorized, DETA_EVT_PAYMENT_AUTHORIZED, id, NULL, "2026-11-25T12:00:02.000Z",
               "{\"paymentId\":\"p-1\"}");
    apply(rm, &created);
    apply(rm, &authorized);
    int64_t at;
    assert_true(deta_timestamp_us("2026-11-25T10:00:00.000000Z", &at));
    int bucket = (int)(at / 86400000000LL);
    /* keys a crash would have left: a status and a customer the view has left, and
     * a status it has not reached (a read behind the key's write would see that) */
    const char *scopes[] = {"status:CREATED", "customer:c-gone", "status:DELIVERED"};
    for (int i = 0; i < 3; i++) {
        control("exec INSERT INTO stale.order_list (scope, bucket, first_seen_at, order_id) "
                "VALUES ('%s', %d, %lld, %s)",
                scopes[i], bucket, (long long)at, id);
        control("exec INSERT INTO stale.order_list_buckets (scope, bucket) VALUES ('%s', %d)",
                scopes[i], bucket);
    }
    query_page_t page;
    list(rm, 10, NULL, "CREATED", NULL, &page);
    assert_int_equal(page.n, 0);
    query_page_clear(&page);
    list(rm, 10, NULL, NULL, "c-gone", &page);
    assert_int_equal(page.n, 0);
    query_page_clear(&page);
    list(rm, 10, NULL, "DELIVERED", NULL, &page);
    assert_int_equal(page.n, 0);
    query_page_clear(&page);
    list(rm, 10, NULL, "PAYMENT_AUTHORIZED", NULL, &page);
    assert_int_equal(page.n, 1);
    query_page_clear(&page);
    char filter[160];
    snprintf(filter, sizeof filter, "stale.order_list scope=status:CREATED order_id=%s", id);
    assert_int_equal(ts_cql_count(&server, filter), 0);
    snprintf(filter, sizeof filter, "stale.order_list scope=customer:c-gone order_id=%s", id);
    assert_int_equal(ts_cql_count(&server, filter), 0);
    snprintf(filter, sizeof filter, "stale.order_list scope=status:DELIVERED order_id=%s", id);
    assert_int_equal(ts_cql_count(&server, filter), 1); /* kept: not proven stale */
    snprintf(filter, sizeof filter, "stale.order_list scope=status:PAYMENT_AUTHORIZED");
    assert_int_equal(ts_cql_count(&server, filter), 1);
    deta_event_clear(&created.ev);
    deta_event_clear(&authorized.ev);
    read_model_free(rm);
    read_model_cql_set_clock(NULL);
}

static void a_list_walks_days_newest_first(void **state) {
    (void)state;
    read_model_t *rm = open_store("days");
    static const char *const ids[] = {"11111111-1111-4111-8111-111111111111",
                                      "22222222-2222-4222-8222-222222222222",
                                      "33333333-3333-4333-8333-333333333333",
                                      "44444444-4444-4444-8444-444444444444"};
    static const char *const seen[] = {"2026-11-20T08:00:00.000000Z", "2026-11-25T23:59:59.999999Z",
                                       "2026-11-25T00:00:00.000000Z", "2026-11-23T12:00:00.000000Z"};
    event_t e[4];
    for (int i = 0; i < 4; i++) {
        set_clock(seen[i]);
        event_make(&e[i], DETA_EVT_ORDER_CREATED, ids[i], NULL, "2026-11-25T12:00:00.000Z",
                   CREATED_PAYLOAD("c-days"));
        apply(rm, &e[i]);
        deta_event_clear(&e[i].ev);
    }
    read_model_cql_set_clock(NULL);
    static const int order[] = {1, 2, 3, 0}; /* newest first */
    for (int f = 0; f < 2; f++) {
        char cursor[QUERY_CURSOR_MAX] = "";
        int k = 0;
        for (int pages = 0; pages < 4; pages++) {
            query_page_t page;
            list(rm, 1, cursor[0] ? cursor : NULL, NULL, f ? "c-days" : NULL, &page);
            if (page.n == 0) {
                query_page_clear(&page);
                break;
            }
            assert_int_equal(page.n, 1);
            assert_string_equal(page.items[0].order_id, ids[order[k]]);
            int64_t us;
            char want[DETA_TS_LEN];
            assert_true(deta_timestamp_us(seen[order[k]], &us));
            deta_timestamp_from_us(us, want);
            assert_string_equal(page.items[0].first_seen_at, want);
            k++;
            assert_true(page.more == (k < 4));
            cursor_of(&page, cursor, sizeof cursor);
            query_page_clear(&page);
            if (k == 4)
                break;
        }
        assert_int_equal(k, 4);
    }
    read_model_free(rm);
}

/* The stats scan follows the paging state page after page. */
static void stats_follow_the_paging_state(void **state) {
    (void)state;
    read_model_t *rm = open_store("pages");
    static const char *const types[] = {DETA_EVT_ORDER_CREATED, DETA_EVT_ORDER_CREATED,
                                        DETA_EVT_INVENTORY_RESERVED, DETA_EVT_PAYMENT_FAILED,
                                        DETA_EVT_ORDER_CREATED, DETA_EVT_INVENTORY_RELEASED,
                                        DETA_EVT_ORDER_CREATED};
    static const char *const payloads[] = {CREATED_PAYLOAD("c-1"), CREATED_PAYLOAD("c-2"),
                                           "{}", "{}", CREATED_PAYLOAD("c-3"), "{}",
                                           CREATED_PAYLOAD("c-4")};
    for (size_t i = 0; i < 7; i++) {
        char id[37];
        ts_uuid(id);
        event_t e;
        event_make(&e, types[i], id, NULL, "2026-11-25T12:00:00.000Z", payloads[i]);
        apply(rm, &e);
        deta_event_clear(&e.ev);
    }
    control("log %s.pages", log_path);
    read_model_cql_set_stats_page(2);
    query_stats_t s;
    char err[256] = "";
    deta_err_t got = read_model_stats(rm, &s, err, sizeof err);
    read_model_cql_set_stats_page(0);
    control("log off");
    assert_int_equal(got, DETA_OK);
    assert_int_equal(s.by_status[0], 4); /* CREATED */
    assert_int_equal(s.by_status[1], 1); /* INVENTORY_RESERVED */
    assert_int_equal(s.by_status[8], 1); /* PAYMENT_FAILED */
    assert_int_equal(s.without_status, 1);
    char path[600];
    snprintf(path, sizeof path, "%s.pages", log_path);
    char *log = read_all(path);
    assert_non_null(log);
    int pages = 0, with_state = 0;
    static const char scan[] = "\"op\": \"EXECUTE\", \"cql\": \"SELECT status FROM "
                               "pages.order_view\"";
    for (const char *p = log; (p = strstr(p, scan)); p++) {
        pages++;
        const char *end = strchr(p, '\n');
        const char *st = strstr(p, "\"paging_state\": true");
        with_state += st && (!end || st < end);
    }
    assert_int_equal(pages, 4); /* 7 rows, 2 a page */
    assert_int_equal(with_state, 3);
    free(log);
    read_model_free(rm);
}

/* ---- errors ---- */

static void overloaded_and_unavailable_are_transient(void **state) {
    (void)state;
    read_model_t *rm = open_store("errors");
    static const char *const id = "9f2e5c0a-4d3b-4e77-8083-5c4d6e7f8091";
    event_t created;
    event_make(&created, DETA_EVT_ORDER_CREATED, id, NULL, "2026-11-25T12:00:00.000Z",
               CREATED_PAYLOAD("c-1"));
    char err[256] = "";
    control("fail OVERLOADED 1 IF NOT EXISTS");
    assert_int_equal(apply_err(rm, &created, err, sizeof err), DETA_ERR_TRANSIENT);
    control("fail UNAVAILABLE 1 order_list_buckets");
    assert_int_equal(apply_err(rm, &created, err, sizeof err), DETA_ERR_TRANSIENT);
    control("fail READ_TIMEOUT 1 WHERE order_id = ?");
    assert_int_equal(apply_err(rm, &created, err, sizeof err), DETA_ERR_TRANSIENT);
    apply(rm, &created); /* then it folds, once */
    query_view_t want = {0}, got;
    view_of(rm, id, &got);
    memcpy(want.first_seen_at, got.first_seen_at, sizeof want.first_seen_at);
    query_view_merge(&want, &created.change);
    assert_views_equal(&want, &got);
    char filter[128];
    snprintf(filter, sizeof filter, "errors.order_events order_id=%s", id);
    assert_int_equal(ts_cql_count(&server, filter), 1);
    event_t reserved;
    event_make(&reserved, DETA_EVT_INVENTORY_RESERVED, id, NULL, "2026-11-25T12:00:01.000Z",
               "{\"reservationId\":\"r-1\"}");
    control("fail WRITE_TIMEOUT 1 IF version =");
    assert_int_equal(apply_err(rm, &reserved, err, sizeof err), DETA_ERR_TRANSIENT);
    apply(rm, &reserved);
    view_of(rm, id, &got);
    assert_string_equal(got.status, "INVENTORY_RESERVED");
    control("fail INVALID 1 order_events");
    assert_int_equal(apply_err(rm, &created, err, sizeof err), DETA_ERR_INTERNAL);
    char reply[64];
    ts_cql_control(&server, "faults", reply, sizeof reply);
    assert_string_equal(reply, "0");
    deta_event_clear(&reserved.ev);
    deta_event_clear(&created.ev);
    read_model_free(rm);
}

static void the_schema_waits_for_an_overloaded_server_not_for_a_refusal(void **state) {
    (void)state;
    static const deta_service_def_t self = {"it-query-cql", 0, "postgres"};
    char err[512] = "";
    deta_service_t *svc = deta_service_new(&self, err, sizeof err);
    if (!svc)
        fail_msg("service: %s", err);
    deta_log_init("it-query-cql", DETA_LOG_ERROR);
    control("fail OVERLOADED 3 CREATE KEYSPACE");
    read_model_t *rm = open_store_as("waits", svc, NULL, NULL, DETA_OK, err, sizeof err);
    read_model_free(rm);
    control("fail UNAUTHORIZED 1 CREATE KEYSPACE");
    rm = open_store_as("refused", svc, NULL, NULL, DETA_ERR_INTERNAL, err, sizeof err);
    if (!strstr(err, "CREATE permission"))
        fail_msg("the error does not say why: %s", err);
    read_model_free(rm);
    char reply[64];
    ts_cql_control(&server, "faults", reply, sizeof reply);
    assert_string_equal(reply, "0");
    deta_service_free(svc);
}

/* A keyspace made by schema 1 (before the cancellation) gets order_view's new
 * columns: its rows keep their fields and read the new ones as null, and a
 * verdict then writes them. A keyspace made now has them already: the ALTERs'
 * "already exists" is taken as done (the golden transcript shows them), any other
 * refusal of an ALTER is not. */
static void a_schema_1_keyspace_is_upgraded(void **state) {
    (void)state;
    control("exec CREATE KEYSPACE upgrade WITH replication = "
            "{'class': 'SimpleStrategy', 'replication_factor': 1}");
    control("exec CREATE TABLE upgrade.order_view (order_id uuid PRIMARY KEY, "
            "customer_id text, total_amount text, currency text, status text, status_rank int, "
            "created_at bigint, updated_at bigint, reservation_id text, payment_id text, "
            "delivery_id text, driver_id text, driver_name text, estimated_delivery_at bigint, "
            "eta_calculated_at bigint, delivered_at bigint, failure_reason text, "
            "correlation_id text, first_seen_at bigint, version bigint)");
    control("exec CREATE TABLE upgrade.schema_meta (name text PRIMARY KEY, version int)");
    control("exec INSERT INTO upgrade.schema_meta (name, version) VALUES ('read_model', 1)");
    static const char order_id[] = "7d8b84ff-5012-4e15-8183-0cd1c6ca0a04";
    control("exec INSERT INTO upgrade.order_view (order_id, customer_id, status, status_rank, "
            "updated_at, payment_id, first_seen_at, version) VALUES (%s, 'c-old', "
            "'PAYMENT_AUTHORIZED', 3, 1795608002000000, 'p-1', 1795608000000000, 1)",
            order_id);
    read_model_t *rm = open_store("upgrade");
    char detail[256] = "";
    assert_true(read_model_ping(rm, detail, sizeof detail));
    query_view_t v;
    view_of(rm, order_id, &v);
    assert_string_equal(v.customer_id, "c-old");
    assert_string_equal(v.cancelled_at, "");
    assert_string_equal(v.refunded_amount, "");
    event_t e;
    event_make(&e, DETA_EVT_DELIVERY_CANCELLED, order_id, NULL, "2026-11-25T12:30:00.000Z",
               "{\"stage\":\"NONE\",\"deliveryId\":null,\"driverId\":null,"
               "\"paymentId\":\"p-1\",\"reason\":null,"
               "\"requestedAt\":\"2026-11-25T12:29:00Z\","
               "\"cancelledAt\":\"2026-11-25T12:30:00Z\"}");
    assert_true(apply(rm, &e).status_changed);
    deta_event_clear(&e.ev);
    event_make(&e, DETA_EVT_PAYMENT_REFUNDED, order_id, NULL, "2026-11-25T12:31:00.000Z",
               "{\"paymentId\":\"p-1\",\"refundId\":\"rf-1\",\"amount\":\"20.48\","
               "\"currency\":\"EUR\",\"reason\":\"ORDER_CANCELLED\","
               "\"refundedAt\":\"2026-11-25T12:31:00Z\"}");
    assert_false(apply(rm, &e).status_changed);
    deta_event_clear(&e.ev);
    view_of(rm, order_id, &v);
    assert_string_equal(v.status, DETA_STATE_CANCELLED);
    assert_int_equal(v.status_rank, DETA_STATE_RANK_CANCELLED);
    assert_string_equal(v.cancelled_at, "2026-11-25T12:30:00.000Z");
    assert_string_equal(v.refunded_amount, "20.48");
    assert_string_equal(v.customer_id, "c-old");
    read_model_free(rm);
    /* again on the upgraded keyspace: both columns exist, nothing fails */
    rm = open_store("upgrade");
    read_model_free(rm);
    /* an ALTER refused for another reason stops the start */
    char err[512] = "";
    control("fail INVALID 1 ALTER TABLE");
    rm = open_store_as("upgrade", NULL, NULL, NULL, DETA_ERR_INTERNAL, err, sizeof err);
    if (!strstr(err, "injected"))
        fail_msg("the error does not say why: %s", err);
    read_model_free(rm);
}

static void credentials_are_offered_and_checked(void **state) {
    (void)state;
    ts_cql_t main_server = server;
    static const char *const auth[] = {"--user", "query", "--password", "s3cret-pw", NULL};
    ts_cql_start(&server, NULL, auth);
    char err[512] = "";
    read_model_t *rm = open_store_as("authed", NULL, "query", "s3cret-pw", DETA_OK, err,
                                     sizeof err);
    read_model_free(rm);
    rm = open_store_as("authed", NULL, "query", "wrong-pw", DETA_ERR_INTERNAL, err, sizeof err);
    if (strstr(err, "wrong-pw"))
        fail_msg("the error shows the password: %s", err);
    read_model_free(rm);
    ts_cql_stop(&server);
    server = main_server;
    unsetenv("CASSANDRA_USERNAME");
    unsetenv("CASSANDRA_PASSWORD");
}

/* ---- setup ---- */

static int setup(void **state) {
    (void)state;
    deta_log_init("it-query-cql", DETA_LOG_ERROR);
    snprintf(log_dir, sizeof log_dir, "/tmp/it-query-cql-XXXXXX");
    if (!mkdtemp(log_dir))
        return -1;
    snprintf(log_path, sizeof log_path, "%s/requests.log", log_dir);
    ts_cql_start(&server, NULL, NULL);
    return 0;
}

/* The request logs go with the model (a golden transcript that differs is kept
 * apart, see ACTUAL). */
static int teardown(void **state) {
    (void)state;
    ts_cql_stop(&server);
    char path[400];
    snprintf(path, sizeof path, "%s.pages", log_path);
    unlink(path);
    unlink(log_path);
    rmdir(log_dir);
    return 0;
}

int main(void) {
    if (ts_cql_real()) {
        printf("these checks need the model CQL server's control and log: skipped with a real "
               "Cassandra (TEST_CASSANDRA_CONTACT_POINTS)\n");
        return 77; /* SKIP_RETURN_CODE */
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(statements_match_the_golden_transcript),
        cmocka_unit_test(a_lost_insert_race_merges_the_winner),
        cmocka_unit_test(a_lost_update_race_reads_again_and_merges),
        cmocka_unit_test(stale_keys_are_skipped_and_dropped),
        cmocka_unit_test(a_list_walks_days_newest_first),
        cmocka_unit_test(stats_follow_the_paging_state),
        cmocka_unit_test(overloaded_and_unavailable_are_transient),
        cmocka_unit_test(the_schema_waits_for_an_overloaded_server_not_for_a_refusal),
        cmocka_unit_test(a_schema_1_keyspace_is_upgraded),
        cmocka_unit_test(credentials_are_offered_and_checked),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
