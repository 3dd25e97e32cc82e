/*
 * test_metrics.c - the metrics operators alert on (issue #17,
 * docs/observability.md#metrics), read from every service's /metrics on the test
 * stack after one order went through the whole saga:
 *
 *   - query_saga_stage_duration_seconds{stage} counts each of the four stages once
 *     for the order, with durations in order (reserved <= authorized <= assigned <=
 *     delivered), and the order's events delivered again, past the inbox, observe
 *     nothing more;
 *   - deta_consumer_lag_messages{group,topic,partition}: one series per partition
 *     assigned (deta_consumer_assigned_partitions), each partition once, all 0 once
 *     the saga is over;
 *   - deta_consumer_last_message_timestamp_seconds{group,topic}: recent for the
 *     topics the order went through;
 *   - deta_outbox_pending and deta_outbox_oldest_pending_age_seconds: 0 once drained;
 *   - no label holds an id (the order's, or a path's), routes are patterns, counters
 *     end in _total and no name is in minutes or milliseconds.
 *
 * The tests run in order and share the order of the first. They assume no other
 * order is in flight meanwhile (integration tests run one at a time).
 */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "deta/states.h"
#include "deta/topics.h"
#include "testsupport.h"

#define WAIT_MS 60000

static const char *const stages[] = {"reserved", "authorized", "assigned", "delivered"};
#define NSTAGES 4

static char order_id[37];
static double order_placed_at; /* Unix time, just before the POST */

static double unix_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* GET url_var's /metrics; the body, malloc'd. */
static char *scrape(const char *url_var) {
    ts_http_resp_t r;
    ts_http("GET", url_var, "/metrics", NULL, NULL, &r);
    if (r.status != 200)
        fail_msg("GET %s/metrics: %ld", url_var, r.status);
    char *body = strdup(r.body);
    ts_http_resp_free(&r);
    return body;
}

/* One sample line: name, labels (without braces, "" for none) and value. */
typedef struct sample {
    char name[128];
    char labels[512];
    double value;
} sample_t;

/* The next sample of text from *at (advancing it); false at the end. */
static bool next_sample(const char **at, sample_t *s) {
    while (**at) {
        const char *line = *at, *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        *at = end ? end + 1 : line + len;
        if (len == 0 || line[0] == '#')
            continue;
        const char *brace = memchr(line, '{', len), *space = memchr(line, ' ', len);
        if (!space)
            continue;
        const char *name_end = brace && brace < space ? brace : space;
        snprintf(s->name, sizeof s->name, "%.*s", (int)(name_end - line), line);
        s->labels[0] = '\0';
        if (brace && brace < space) {
            /* The last brace of the line: a value may hold one ("/api/orders/{orderId}"). */
            const char *close = memrchr(brace, '}', len - (size_t)(brace - line));
            assert_non_null(close);
            snprintf(s->labels, sizeof s->labels, "%.*s", (int)(close - brace - 1), brace + 1);
            space = close + 1;
        }
        s->value = strtod(space, NULL);
        return true;
    }
    return false;
}

/* The value of label key in labels into out ("" when absent). */
static void label(const char *labels, const char *key, char *out, size_t size) {
    char needle[64];
    snprintf(needle, sizeof needle, "%s=\"", key);
    out[0] = '\0';
    for (const char *p = labels; (p = strstr(p, needle)) != NULL; p++) {
        if (p != labels && p[-1] != ',')
            continue;
        p += strlen(needle);
        const char *q = strchr(p, '"');
        snprintf(out, size, "%.*s", (int)(q ? q - p : 0), p);
        return;
    }
}

/* The value of name{labels} exactly, or -1 when absent. */
static double value_of(const char *text, const char *name, const char *labels) {
    sample_t s;
    for (const char *at = text; next_sample(&at, &s);)
        if (strcmp(s.name, name) == 0 && strcmp(s.labels, labels ? labels : "") == 0)
            return s.value;
    return -1;
}

static double stage_value(const char *text, const char *suffix, const char *stage) {
    char name[96], labels[64];
    snprintf(name, sizeof name, "query_saga_stage_duration_seconds_%s", suffix);
    snprintf(labels, sizeof labels, "stage=\"%s\"", stage);
    double v = value_of(text, name, labels);
    if (v < 0)
        fail_msg("query-api has no %s{%s}", name, labels);
    return v;
}

static void stage_snapshot(double count[NSTAGES], double sum[NSTAGES]) {
    char *text = scrape("QUERY_API_URL");
    for (int i = 0; i < NSTAGES; i++) {
        count[i] = stage_value(text, "count", stages[i]);
        sum[i] = stage_value(text, "sum", stages[i]);
    }
    free(text);
}

/* Takes the stages' snapshot once no stage moved for a second (up to WAIT_MS):
 * the orders of the tests before (their deliveries at the test clock) are then
 * out of the way, and what moves after is this test's order. */
static void stage_snapshot_quiet(double count[NSTAGES], double sum[NSTAGES]) {
    double again[NSTAGES], again_sum[NSTAGES];
    stage_snapshot(count, sum);
    for (long deadline = now_ms() + WAIT_MS; now_ms() < deadline;) {
        ts_sleep_ms(1000);
        stage_snapshot(again, again_sum);
        bool moved = false;
        for (int i = 0; i < NSTAGES; i++)
            moved = moved || again[i] != count[i];
        memcpy(count, again, sizeof again);
        memcpy(sum, again_sum, sizeof again_sum);
        if (!moved)
            return;
    }
    fail_msg("the saga's stages kept moving for %d ms before the test's order", WAIT_MS);
}

/* True when s (a label value) looks like a UUID, or holds one. */
static bool holds_uuid(const char *s) {
    for (size_t n = strlen(s), i = 0; i + 36 <= n; i++) {
        bool uuid = true;
        for (size_t k = 0; uuid && k < 36; k++)
            uuid = (k == 8 || k == 13 || k == 18 || k == 23) ? s[i + k] == '-'
                                                                : isxdigit((unsigned char)s[i + k]);
        if (uuid)
            return true;
    }
    return false;
}

/* ---- the saga's stages ---- */

static void one_order_observes_each_stage_once(void **state) {
    (void)state;
    double count0[NSTAGES], sum0[NSTAGES], count[NSTAGES], sum[NSTAGES];
    stage_snapshot_quiet(count0, sum0);

    char item[64], uuid[37];
    ts_uuid(uuid);
    snprintf(item, sizeof item, "metrics-%.8s", uuid);
    ts_stock_set(item, 5);
    order_placed_at = unix_now();
    assert_int_equal(ts_order_place("metrics-customer", item, 1, order_id), 201);
    char ids[1][37];
    memcpy(ids[0], order_id, sizeof ids[0]);
    assert_true(ts_orders_await(ids, 1, DETA_STATE_DELIVERED, WAIT_MS));

    /* The observations are recorded once the read model's transaction commits. */
    long deadline = now_ms() + WAIT_MS;
    bool all;
    do {
        stage_snapshot(count, sum);
        all = true;
        for (int i = 0; i < NSTAGES; i++)
            all = all && count[i] > count0[i];
        if (!all)
            ts_sleep_ms(200);
    } while (!all && now_ms() < deadline);
    double took[NSTAGES];
    for (int i = 0; i < NSTAGES; i++) {
        if (count[i] - count0[i] != 1)
            fail_msg("stage %s observed %g times for one order", stages[i], count[i] - count0[i]);
        took[i] = sum[i] - sum0[i];
        printf("stage %-10s %.3f s after the order's creation\n", stages[i], took[i]);
        assert_true(took[i] >= 0 && took[i] < 3600);
    }
    for (int i = 1; i < NSTAGES; i++)
        assert_true(took[i - 1] <= took[i] + 1e-6);

    /* The order's stage events once more, as a redelivery would bring them, and
     * query-api's inbox claims of them forgotten (as after INBOX_RETENTION_HOURS), so
     * that they reach the read model again: it has them already (applied false), so
     * nothing more is observed. */
    PGconn *query_db = ts_pg("delivery_query");
    const char *topics[] = {DETA_TOPIC_INVENTORY_EVENTS, DETA_TOPIC_PAYMENT_EVENTS,
                            DETA_TOPIC_DELIVERY_EVENTS, DETA_TOPIC_ETA_EVENTS};
    const char *last = topics[sizeof topics / sizeof *topics - 1];
    char processed[128];
    snprintf(processed, sizeof processed, "topic=\"%s\",outcome=\"processed\"", last);
    char *text = scrape("QUERY_API_URL");
    double before = value_of(text, "deta_consumer_messages_total", processed);
    free(text);
    for (size_t t = 0; t < sizeof topics / sizeof *topics; t++) {
        ts_kafka_msg_t all_of[16];
        int n = ts_kafka_collect(topics[t], order_id, 16, 2000, all_of, 16);
        assert_true(n >= 1);
        for (int k = 0; k < n; k++) {
            json_t *ev = json_loads(all_of[k].value, 0, NULL);
            const char *params[] = {json_string_value(json_object_get(ev, "eventId"))};
            assert_non_null(params[0]);
            PGresult *res = PQexecParams(query_db,
                                         "DELETE FROM processed_events WHERE event_id = $1::uuid",
                                         1, NULL, params, NULL, NULL, 0);
            assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
            PQclear(res);
            json_decref(ev);
            ts_kafka_produce(topics[t], order_id, all_of[k].value);
            ts_kafka_msg_free(&all_of[k]);
        }
    }
    PQfinish(query_db);
    /* The last topic's copies went through query-api's consumer. */
    deadline = now_ms() + WAIT_MS;
    double after = before;
    while (after < before + 1 && now_ms() < deadline) {
        ts_sleep_ms(200);
        text = scrape("QUERY_API_URL");
        after = value_of(text, "deta_consumer_messages_total", processed);
        free(text);
    }
    assert_true(after >= before + 1);
    ts_sleep_ms(500); /* the other topics' copies, handled by other workers */
    double count2[NSTAGES], sum2[NSTAGES];
    stage_snapshot(count2, sum2);
    for (int i = 0; i < NSTAGES; i++)
        if (count2[i] != count[i])
            fail_msg("stage %s observed again for a redelivered event", stages[i]);
}

/* ---- consumers ---- */

/* Every (group, topic) a service consumes, by its assigned-partitions gauge, has
 * one lag series per assigned partition, each partition once; once nothing is in
 * flight, all are 0. Returns the number of lag series that are not 0 yet, -1 when
 * the series do not match the assignment (yet: the statistics come every
 * KAFKA_STATISTICS_INTERVAL_MS), with why. */
static int lag_check(const char *text, char *why, size_t whysize) {
    sample_t a, l;
    int not_zero = 0;
    for (const char *at = text; next_sample(&at, &a);) {
        if (strcmp(a.name, "deta_consumer_assigned_partitions") != 0)
            continue;
        char group[64], topic[128];
        label(a.labels, "group", group, sizeof group);
        label(a.labels, "topic", topic, sizeof topic);
        int n = 0;
        bool seen[256] = {false};
        for (const char *at2 = text; next_sample(&at2, &l);) {
            char g[64], t[128], p[16];
            label(l.labels, "group", g, sizeof g);
            label(l.labels, "topic", t, sizeof t);
            label(l.labels, "partition", p, sizeof p);
            if (strcmp(l.name, "deta_consumer_lag_messages") != 0 || strcmp(g, group) ||
                strcmp(t, topic))
                continue;
            int part = atoi(p);
            if (part < 0 || part >= 256 || seen[part] || !(l.value >= 0)) {
                snprintf(why, whysize, "%s: lag series %.150s = %g", group, l.labels, l.value);
                return -1;
            }
            seen[part] = true;
            n++;
            not_zero += l.value != 0;
        }
        if (n != (int)a.value) {
            snprintf(why, whysize, "%s %s: %d lag series for %g partitions assigned", group,
                     topic, n, a.value);
            return -1;
        }
    }
    if (not_zero)
        snprintf(why, whysize, "%d partitions still lag after the saga", not_zero);
    return not_zero;
}

static void consumer_lag_follows_the_assignment_and_drains(void **state) {
    (void)state;
    for (size_t s = 0; s < 5; s++) {
        char why[256] = "";
        int r = 0;
        long deadline = now_ms() + WAIT_MS;
        do {
            char *text = scrape(ts_service_urls[s]);
            assert_non_null(strstr(text, "# TYPE deta_consumer_lag_messages gauge"));
            r = lag_check(text, why, sizeof why);
            free(text);
            if (r != 0)
                ts_sleep_ms(500);
        } while (r != 0 && now_ms() < deadline);
        if (r != 0)
            fail_msg("%s: %s", ts_services[s], why);
    }
}

static void last_message_time_is_recent(void **state) {
    (void)state;
    assert_true(order_id[0]); /* the first test placed the order */
    double now = unix_now();
    for (size_t s = 0; s < 5; s++) {
        char *text = scrape(ts_service_urls[s]);
        sample_t x;
        for (const char *at = text; next_sample(&at, &x);) {
            if (strcmp(x.name, "deta_consumer_last_message_timestamp_seconds") != 0)
                continue;
            if (!(x.value <= now + 5 && x.value > now - 7 * 86400))
                fail_msg("%s: %s{%s} = %f, now %f", ts_services[s], x.name, x.labels, x.value,
                         now);
        }
        free(text);
    }
    /* The topics the order went through, in the consumers that read them: a message
     * came after the order was placed (1 s for the clocks; the eta.updated of the
     * assignment may trail its delivery.assigned, on a topic of its own). */
    const struct {
        const char *url, *group, *topic;
    } passed[] = {
        {"INVENTORY_SERVICE_URL", "inventory-service", DETA_TOPIC_ORDER_EVENTS},
        {"PAYMENT_SERVICE_URL", "payment-service", DETA_TOPIC_INVENTORY_EVENTS},
        {"DELIVERY_SERVICE_URL", "delivery-service", DETA_TOPIC_PAYMENT_EVENTS},
        {"QUERY_API_URL", "query-api", DETA_TOPIC_ORDER_EVENTS},
        {"QUERY_API_URL", "query-api", DETA_TOPIC_DELIVERY_EVENTS},
        {"QUERY_API_URL", "query-api", DETA_TOPIC_ETA_EVENTS},
    };
    for (size_t i = 0; i < sizeof passed / sizeof *passed; i++) {
        char labels[256];
        snprintf(labels, sizeof labels, "group=\"%s\",topic=\"%s\"", passed[i].group,
                 passed[i].topic);
        double at = -1;
        for (long deadline = now_ms() + WAIT_MS; !(at >= order_placed_at - 1) &&
                                                 now_ms() < deadline;
             ts_sleep_ms(100)) {
            char *text = scrape(passed[i].url);
            at = value_of(text, "deta_consumer_last_message_timestamp_seconds", labels);
            free(text);
        }
        if (!(at >= order_placed_at - 1))
            fail_msg("%s{%s} = %f, before the order (%f)",
                     "deta_consumer_last_message_timestamp_seconds", labels, at, order_placed_at);
    }
    /* raw.eta-events is the read model's alone: the sagas' consumers of
     * raw.delivery-events do not subscribe to it, so none of them has a series
     * of it (query-api's, above, shows that its messages flowed). */
    const char *sagas[] = {"ORDER_SERVICE_URL", "INVENTORY_SERVICE_URL", "PAYMENT_SERVICE_URL",
                           "DELIVERY_SERVICE_URL"};
    for (size_t s = 0; s < sizeof sagas / sizeof *sagas; s++) {
        char *text = scrape(sagas[s]);
        sample_t x;
        for (const char *at = text; next_sample(&at, &x);)
            if (strncmp(x.name, "deta_consumer_", 14) == 0 &&
                strstr(x.labels, "topic=\"" DETA_TOPIC_ETA_EVENTS "\""))
                fail_msg("%s reads %s: %s{%s}", sagas[s], DETA_TOPIC_ETA_EVENTS, x.name,
                         x.labels);
        free(text);
    }
}

/* ---- the outbox ---- */

static void the_outbox_backlog_is_zero_once_drained(void **state) {
    (void)state;
    int with_outbox = 0;
    for (size_t s = 0; s < 5; s++) {
        double pending = -1, age = -1;
        long deadline = now_ms() + WAIT_MS;
        do {
            char *text = scrape(ts_service_urls[s]);
            pending = value_of(text, "deta_outbox_pending", NULL);
            age = value_of(text, "deta_outbox_oldest_pending_age_seconds", NULL);
            free(text);
            if ((pending < 0) != (age < 0))
                fail_msg("%s: deta_outbox_pending %g but oldest age %g", ts_services[s],
                         pending, age);
            if (pending > 0 || age > 0)
                ts_sleep_ms(200);
        } while ((pending > 0 || age > 0) && now_ms() < deadline);
        if (pending < 0)
            continue; /* no outbox (query-api) */
        with_outbox++;
        if (pending != 0 || age != 0)
            fail_msg("%s: outbox pending %g, oldest %g s after the saga", ts_services[s],
                     pending, age);
    }
    assert_int_equal(with_outbox, 4);
}

/* ---- names and labels ---- */

static void labels_hold_no_ids_and_names_their_units(void **state) {
    (void)state;
    assert_true(order_id[0]);
    char path[128], stranger[37];
    ts_uuid(stranger);
    ts_http_resp_t r;
    snprintf(path, sizeof path, "/api/orders/%s", order_id);
    ts_http("GET", "QUERY_API_URL", path, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    ts_http_resp_free(&r);
    snprintf(path, sizeof path, "/api/orders/%s/events", order_id);
    ts_http("GET", "QUERY_API_URL", path, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    ts_http_resp_free(&r);
    snprintf(path, sizeof path, "/no/such/%s", stranger);
    for (size_t s = 0; s < 5; s++) {
        ts_http("GET", ts_service_urls[s], path, NULL, NULL, &r);
        assert_int_equal(r.status, 404);
        ts_http_resp_free(&r);
    }

    for (size_t s = 0; s < 5; s++) {
        char *text = scrape(ts_service_urls[s]);
        if (strstr(text, order_id) || strstr(text, stranger))
            fail_msg("%s's /metrics holds an id", ts_services[s]);
        sample_t x;
        for (const char *at = text; next_sample(&at, &x);) {
            if (holds_uuid(x.labels))
                fail_msg("%s: %s{%s}: an id in a label", ts_services[s], x.name, x.labels);
            char route[256];
            label(x.labels, "route", route, sizeof route);
            if (route[0] && route[0] != '/' && strcmp(route, "unmatched") != 0 &&
                strcmp(route, "static") != 0)
                fail_msg("%s: %s{%s}: a route that is not a pattern", ts_services[s], x.name,
                         x.labels);
        }
        /* Counters end in _total; durations and ages are in seconds. */
        for (const char *t = text; (t = strstr(t, "# TYPE ")) != NULL; t++) {
            char name[128], type[32];
            assert_int_equal(sscanf(t, "# TYPE %127s %31s", name, type), 2);
            size_t n = strlen(name);
            if (strcmp(type, "counter") == 0 && (n < 6 || strcmp(name + n - 6, "_total") != 0))
                fail_msg("%s: counter %s does not end in _total", ts_services[s], name);
            if (strstr(name, "_minutes") || strstr(name, "_milliseconds") ||
                (n > 3 && strcmp(name + n - 3, "_ms") == 0))
                fail_msg("%s: %s is not in seconds", ts_services[s], name);
        }
        /* The unknown path was counted, as unmatched. */
        assert_true(value_of(text, "http_requests_total",
                             "method=\"GET\",route=\"unmatched\",status=\"404\"") >= 1);
        if (strcmp(ts_services[s], "query-api") == 0)
            assert_true(value_of(text, "http_requests_total",
                                 "method=\"GET\",route=\"/api/orders/{orderId}\",status=\"200\"") >=
                        1);
        free(text);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(one_order_observes_each_stage_once),
        cmocka_unit_test(consumer_lag_follows_the_assignment_and_drains),
        cmocka_unit_test(last_message_time_is_recent),
        cmocka_unit_test(the_outbox_backlog_is_zero_once_drained),
        cmocka_unit_test(labels_hold_no_ids_and_names_their_units),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
