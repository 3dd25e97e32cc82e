/*
 * test_tracing.c - one order's saga is one trace across the five services, and
 * a collector that is dead or slow changes nothing in the saga (deta/trace.h,
 * docs/observability.md#traces).
 *
 * The test starts the OTLP/HTTP receiver of the test suite
 * (tests/support/otlp_receiver.py) on a free port, then restarts the stack's
 * five services (scripts/stack.sh stop/start, which pass the caller's
 * environment on) with OTEL_EXPORTER_OTLP_ENDPOINT pointing at it, a short
 * OTEL_BSP_SCHEDULE_DELAY and OTEL_EXPORTER_OTLP_TIMEOUT. It is a fault test
 * because it stops and starts the stack's services; its teardown starts them
 * again without tracing (ts_stack_heal).
 *
 *   one tree   an order placed through the API with the test's own traceparent
 *              (a client span the test makes up) reaches DELIVERED; the spans
 *              the receiver got for that trace id form one tree: every parent
 *              is a span of the trace, or the test's client span for exactly
 *              one span, order-service's server span "POST /api/orders"; the
 *              five services all took part; a db.transaction is the server
 *              span's child; every producer span ("publish <topic>") is a
 *              db.transaction's child and every consumer span ("process
 *              <topic>") a producer span's child, in a service whose name is
 *              its consumer group; payment-service's gateway call is a client
 *              span under its consumer span; the ticker's events (picked up,
 *              delivered: written outside any span) are in the trace. A declined order (customer
 *              decline-*, the stack's PAYMENT_DECLINE_CUSTOMERS) is one tree too,
 *              its compensation included (inventory-service consuming the
 *              payment's failure). A request with an invalid traceparent is
 *              served (201) in a new trace.
 *   batched    eight declined orders placed at once: inventory-service takes
 *              their payment failures in batches (its settle consumer waits
 *              200 ms to fill one) and writes their inventory.released there;
 *              every order is still one tree with both of its inventory events
 *              in it, and for some order the release was written in a batch:
 *              its publish is under a db.transaction of the message's own,
 *              under a consumer span with deta.batch.size >= 2.
 *   dead       the receiver stopped: an order still reaches DELIVERED, and the
 *              spans that could not go are counted in
 *              deta_trace_spans_dropped_total{reason="export_failed"}.
 *   slow       the receiver holding each request for 3 s, three times the
 *              exporter's timeout: the same.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "deta/client.h"
#include "deta/client_orders.h"
#include "deta/states.h"
#include "testsupport.h"

#define END_WAIT_MS 120000
#define SPANS_WAIT_MS 30000
#define HEAL_MS 120000
#define MAX_SPANS 512
#define EXPORT_TIMEOUT_MS "1000"
#define SLOW_RECEIVER_MS 3000

static const char *const services[] = {"order-service", "inventory-service", "payment-service",
                                       "delivery-service", "query-api"};
#define NSERVICES 5

static pid_t receiver = 0;
static char receiver_port[16];
static char spans_file[1024];

/* ---- the receiver ---- */

static void receiver_start(int delay_ms) {
    char delay[16];
    snprintf(delay, sizeof delay, "%d", delay_ms);
    char script[1024];
    snprintf(script, sizeof script, "%s/support/otlp_receiver.py", DETA_TESTS_SOURCE_DIR);
    fflush(NULL);
    receiver = fork();
    assert_true(receiver >= 0);
    if (receiver == 0) {
        setsid();
        char log[1024];
        snprintf(log, sizeof log, "%s/logs/otlp-receiver.log", getenv("STACK_DIR"));
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execl("/usr/bin/python3", "python3", script, "--port", receiver_port, "--out",
              spans_file, "--delay-ms", delay, (char *)NULL);
        _exit(127);
    }
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%s", receiver_port);
    setenv("TRACE_RECEIVER_URL", url, 1);
    for (int waited = 0; waited < 10000; waited += 100) {
        ts_http_resp_t r;
        int ok = ts_http_try("GET", "TRACE_RECEIVER_URL", "/health", NULL, NULL, 1000, &r) &&
                 r.status == 200;
        ts_http_resp_free(&r);
        if (ok)
            return;
        ts_sleep_ms(100);
    }
    fail_msg("the OTLP receiver did not start on port %s", receiver_port);
}

static void receiver_stop(void) {
    if (receiver <= 0)
        return;
    kill(receiver, SIGKILL); /* dead at once, as a collector that crashed */
    waitpid(receiver, NULL, 0);
    receiver = 0;
}

/* The stack's five services again, with the environment as it is now. */
static bool restart_services(void) {
    for (int i = 0; i < NSERVICES; i++) {
        if (ts_stack("stop %s", services[i]) != 0 || ts_stack("start %s", services[i]) != 0) {
            fprintf(stderr, "cannot restart %s\n", services[i]);
            return false;
        }
    }
    return true;
}

static const char *const otel_vars[] = {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_BSP_SCHEDULE_DELAY",
                                        "OTEL_EXPORTER_OTLP_TIMEOUT"};

static void traced_order(const char *customer, const char *state, char trace_id[33],
                         char client_span[17]);

static int traced_setup(void **state) {
    (void)state;
    ts_free_port(receiver_port, sizeof receiver_port);
    snprintf(spans_file, sizeof spans_file, "%s/otlp-spans-%d.jsonl", ts_env("STACK_DIR"),
             (int)getpid());
    unlink(spans_file);
    receiver_start(0);
    char endpoint[64];
    snprintf(endpoint, sizeof endpoint, "http://127.0.0.1:%s", receiver_port);
    setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint, 1);
    setenv("OTEL_BSP_SCHEDULE_DELAY", "200", 1);
    setenv("OTEL_EXPORTER_OTLP_TIMEOUT", EXPORT_TIMEOUT_MS, 1);
    if (!restart_services())
        return -1;
    /* One order through the whole saga first, so that every consumer has
     * rejoined its group and caught up with what the restarts left before a
     * test's order comes. */
    char trace_id[33], client_span[17];
    traced_order("trace-settle", DETA_STATE_DELIVERED, trace_id, client_span);
    return 0;
}

static int traced_teardown(void **state) {
    (void)state;
    receiver_stop();
    for (size_t i = 0; i < sizeof otel_vars / sizeof *otel_vars; i++)
        unsetenv(otel_vars[i]);
    bool ok = restart_services();
    ok = ts_stack_heal(HEAL_MS) && ok;
    unlink(spans_file);
    return ok ? 0 : -1;
}

/* ---- what the receiver got ---- */

typedef struct span {
    char service[64];
    char trace_id[33], span_id[17], parent_id[17];
    char name[128];
    char group[64]; /* messaging.kafka.consumer.group, "" when none */
    int kind;
    long batch; /* deta.batch.size, 0 when none */
} span_t;

/* The value object of attribute key (OTLP/JSON), NULL when none. */
static json_t *attr_value(json_t *attrs, const char *key) {
    size_t i;
    json_t *a;
    json_array_foreach(attrs, i, a) {
        const char *k = json_string_value(json_object_get(a, "key"));
        if (k && strcmp(k, key) == 0)
            return json_object_get(a, "value");
    }
    return NULL;
}

static const char *attr_str(json_t *attrs, const char *key) {
    return json_string_value(json_object_get(attr_value(attrs, key), "stringValue"));
}

/* An integer attribute (OTLP/JSON spells intValue as a decimal string); 0 when none. */
static long attr_int(json_t *attrs, const char *key) {
    json_t *v = json_object_get(attr_value(attrs, key), "intValue");
    return json_is_string(v) ? strtol(json_string_value(v), NULL, 10) : (long)json_integer_value(v);
}

static void copy(char *dst, size_t size, const char *src) {
    snprintf(dst, size, "%s", src ? src : "");
}

/* The spans of trace_id received so far, into out; returns how many. */
static int spans_of(const char *trace_id, span_t *out, int max) {
    FILE *f = fopen(spans_file, "r");
    if (!f)
        return 0;
    int n = 0;
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        json_t *doc = json_loads(line, 0, NULL);
        size_t i, j, k;
        json_t *rs, *ss, *sp;
        json_array_foreach(json_object_get(doc, "resourceSpans"), i, rs) {
            const char *service = attr_str(
                json_object_get(json_object_get(rs, "resource"), "attributes"), "service.name");
            json_array_foreach(json_object_get(rs, "scopeSpans"), j, ss) {
                json_array_foreach(json_object_get(ss, "spans"), k, sp) {
                    const char *tid = json_string_value(json_object_get(sp, "traceId"));
                    if (!tid || strcmp(tid, trace_id) != 0 || n == max)
                        continue;
                    span_t *s = &out[n++];
                    copy(s->service, sizeof s->service, service);
                    copy(s->trace_id, sizeof s->trace_id, tid);
                    copy(s->span_id, sizeof s->span_id,
                         json_string_value(json_object_get(sp, "spanId")));
                    copy(s->parent_id, sizeof s->parent_id,
                         json_string_value(json_object_get(sp, "parentSpanId")));
                    copy(s->name, sizeof s->name, json_string_value(json_object_get(sp, "name")));
                    copy(s->group, sizeof s->group,
                         attr_str(json_object_get(sp, "attributes"),
                                  "messaging.kafka.consumer.group"));
                    s->kind = (int)json_integer_value(json_object_get(sp, "kind"));
                    s->batch = attr_int(json_object_get(sp, "attributes"), "deta.batch.size");
                }
            }
        }
        json_decref(doc);
    }
    free(line);
    fclose(f);
    return n;
}

static const span_t *by_id(const span_t *s, int n, const char *id) {
    for (int i = 0; i < n; i++)
        if (strcmp(s[i].span_id, id) == 0)
            return &s[i];
    return NULL;
}

static bool has_service(const span_t *s, int n, const char *service) {
    for (int i = 0; i < n; i++)
        if (strcmp(s[i].service, service) == 0)
            return true;
    return false;
}

/* Waits until the trace's spans stop coming (2 s without a new one) and every
 * service of want has some; returns how many. */
static int await_spans(const char *trace_id, span_t *s, int max, const char *const *want,
                       int nwant) {
    int n = 0, last = -1;
    long stable_since = 0;
    for (int waited = 0; waited < SPANS_WAIT_MS; waited += 250) {
        n = spans_of(trace_id, s, max);
        bool all = true;
        for (int i = 0; i < nwant; i++)
            all = all && has_service(s, n, want[i]);
        if (n != last) {
            last = n;
            stable_since = waited;
        } else if (all && waited - stable_since >= 2000) {
            return n;
        }
        ts_sleep_ms(250);
    }
    return n;
}

static void print_tree(const span_t *s, int n, const char *parent, int depth) {
    for (int i = 0; i < n; i++) {
        if (strcmp(s[i].parent_id, parent) != 0)
            continue;
        printf("%*s%s  [%s, kind %d, span %s]\n", depth * 2, "", s[i].name, s[i].service,
               s[i].kind, s[i].span_id);
        print_tree(s, n, s[i].span_id, depth + 1);
    }
}

enum { KIND_INTERNAL = 1, KIND_SERVER, KIND_CLIENT, KIND_PRODUCER, KIND_CONSUMER };

/* The checks of "one tree" (see the top); client_span is the test's made-up
 * parent of the server span. */
static void assert_one_tree(const span_t *s, int n, const char *client_span,
                            const char *const *want, int nwant) {
    printf("trace %s: %d spans\n", s[0].trace_id, n);
    print_tree(s, n, client_span, 1);
    fflush(stdout);
    for (int i = 0; i < nwant; i++)
        if (!has_service(s, n, want[i]))
            fail_msg("no span of %s in the trace", want[i]);
    int roots = 0, producers = 0, consumers = 0;
    for (int i = 0; i < n; i++) {
        const span_t *p = by_id(s, n, s[i].parent_id);
        if (strcmp(s[i].parent_id, client_span) == 0) {
            roots++;
            if (s[i].kind != KIND_SERVER || strcmp(s[i].name, "POST /api/orders") != 0 ||
                strcmp(s[i].service, "order-service") != 0)
                fail_msg("the client's child is %s (%s, kind %d), not order-service's server "
                         "span",
                         s[i].name, s[i].service, s[i].kind);
            continue;
        }
        if (!p)
            fail_msg("span %s (%s of %s) has parent %s, which is not in the trace", s[i].span_id,
                     s[i].name, s[i].service, s[i].parent_id[0] ? s[i].parent_id : "(none)");
        switch (s[i].kind) {
        case KIND_PRODUCER:
            producers++;
            if (strcmp(p->name, "db.transaction") != 0 || strcmp(p->service, s[i].service) != 0)
                fail_msg("%s of %s is under %s of %s, not a db.transaction of its own",
                         s[i].name, s[i].service, p->name, p->service);
            break;
        case KIND_CONSUMER:
            consumers++;
            if (p->kind != KIND_PRODUCER)
                fail_msg("%s of %s is under %s (kind %d), not a producer span", s[i].name,
                         s[i].service, p->name, p->kind);
            if (strcmp(s[i].group, s[i].service) != 0)
                fail_msg("%s: consumer group %s in service %s", s[i].name, s[i].group,
                         s[i].service);
            if (strncmp(s[i].name, "process ", 8) != 0 ||
                strcmp(s[i].name + 8, p->name + 8) != 0)
                fail_msg("%s is under %s: another topic", s[i].name, p->name);
            break;
        case KIND_CLIENT:
            if (p->kind != KIND_CONSUMER || strcmp(s[i].service, "payment-service") != 0)
                fail_msg("client span %s of %s under %s", s[i].name, s[i].service, p->name);
            break;
        default:
            if (strcmp(s[i].name, "db.transaction") == 0 &&
                strcmp(p->service, s[i].service) != 0)
                fail_msg("a db.transaction of %s under a span of %s", s[i].service, p->service);
            break;
        }
    }
    assert_int_equal(roots, 1);
    assert_true(producers > 0);
    assert_true(consumers > 0);
}

/* ---- placing an order with a traceparent of the test's ---- */

/* n (up to 32) random lowercase hex digits, from a fresh UUID's. */
static void hex(char *out, int n) {
    char uuid[37];
    ts_uuid(uuid);
    int k = 0;
    for (int i = 0; uuid[i] && k < n; i++)
        if (uuid[i] != '-')
            out[k++] = uuid[i];
    out[n] = '\0';
}

static long place(const char *customer, const char *item, const char *traceparent, char id[37]) {
    char body[512], url[512], header[128], err[512];
    snprintf(body, sizeof body,
             "{\"customerId\":\"%s\",\"currency\":\"USD\",\"items\":[{\"itemId\":\"%s\","
             "\"quantity\":1,\"unitPrice\":\"2.50\"}]}",
             customer, item);
    snprintf(url, sizeof url, "%s/api/orders", ts_env("ORDER_SERVICE_URL"));
    snprintf(header, sizeof header, "traceparent: %s", traceparent);
    const char *headers[] = {"Content-Type: application/json", header,
                             "tracestate: deta-test=1", NULL};
    deta_client_t *c = deta_client_new(10000, 0);
    assert_non_null(c);
    deta_client_req_t req = {.method = "POST", .url = url, .body = body, .headers = headers};
    deta_client_resp_t r;
    deta_client_request(c, &req, &r, err, sizeof err);
    long status = r.status;
    id[0] = '\0';
    if (status == 201 && !deta_order_id_of(r.json, id, 37))
        id[0] = '\0';
    deta_client_resp_clear(&r);
    deta_client_free(c);
    return status;
}

static void fresh_item(char *item, size_t size) {
    char uuid[37];
    ts_uuid(uuid);
    snprintf(item, size, "trace-%.8s", uuid);
    ts_stock_set(item, 100);
}

/* ---- the tests ---- */

/* Places an order for customer under a trace of the test's own (trace_id, and
 * client_span as the caller's span) and waits for it to reach state. */
static void traced_order(const char *customer, const char *state, char trace_id[33],
                         char client_span[17]) {
    char item[64], traceparent[64], id[1][37];
    fresh_item(item, sizeof item);
    hex(trace_id, 32);
    hex(client_span, 16);
    snprintf(traceparent, sizeof traceparent, "00-%s-%s-01", trace_id, client_span);
    assert_int_equal(place(customer, item, traceparent, id[0]), 201);
    assert_true(ts_orders_await(id, 1, state, END_WAIT_MS));
}

static void one_tree(void **state) {
    (void)state;
    char trace_id[33], client_span[17];
    traced_order("trace-customer", DETA_STATE_DELIVERED, trace_id, client_span);
    static span_t spans[MAX_SPANS];
    int n = await_spans(trace_id, spans, MAX_SPANS, services, NSERVICES);
    assert_true(n > 0);
    assert_one_tree(spans, n, client_span, services, NSERVICES);
    bool gateway = false, tx_under_server = false;
    for (int i = 0; i < n; i++) {
        const span_t *p = by_id(spans, n, spans[i].parent_id);
        gateway = gateway || (spans[i].kind == KIND_CLIENT &&
                              strcmp(spans[i].name, "payment.gateway charge") == 0);
        tx_under_server = tx_under_server || (p && p->kind == KIND_SERVER &&
                                              strcmp(spans[i].name, "db.transaction") == 0);
    }
    assert_true(gateway);
    assert_true(tx_under_server);
    /* the ticker's events (picked up, delivered: written outside any span) are in
     * the order's trace too: query-api read at least assigned, picked up and
     * delivered, and their eta.updated on a topic of their own */
    int delivery_events = 0, eta_events = 0;
    for (int i = 0; i < n; i++) {
        bool ours = strcmp(spans[i].service, "query-api") == 0;
        delivery_events += ours && strcmp(spans[i].name, "process raw.delivery-events") == 0;
        eta_events += ours && strcmp(spans[i].name, "process raw.eta-events") == 0;
    }
    printf("query-api consumed %d delivery and %d ETA events of the order in its trace\n",
           delivery_events, eta_events);
    assert_true(delivery_events >= 3);
    assert_true(eta_events >= 3);
}

static void declined_one_tree(void **state) {
    (void)state;
    char trace_id[33], client_span[17];
    traced_order("decline-trace", DETA_STATE_PAYMENT_FAILED, trace_id, client_span);
    static span_t spans[MAX_SPANS];
    const char *const want[] = {"order-service", "inventory-service", "payment-service",
                                "query-api"};
    int n = await_spans(trace_id, spans, MAX_SPANS, want, 4);
    assert_true(n > 0);
    assert_one_tree(spans, n, client_span, want, 4);
    bool compensated = false; /* inventory-service took the payment's failure */
    for (int i = 0; i < n; i++)
        compensated = compensated || (strcmp(spans[i].service, "inventory-service") == 0 &&
                                      strcmp(spans[i].name, "process raw.payment-events") == 0);
    assert_true(compensated);
}

#define BATCHED_ORDERS 8

static int count_spans(const span_t *s, int n, const char *service, const char *name) {
    int k = 0;
    for (int i = 0; i < n; i++)
        k += strcmp(s[i].service, service) == 0 && strcmp(s[i].name, name) == 0;
    return k;
}

static void batched(void **state) {
    (void)state;
    char trace_id[BATCHED_ORDERS][33], client_span[BATCHED_ORDERS][17], id[BATCHED_ORDERS][37];
    for (int i = 0; i < BATCHED_ORDERS; i++) {
        char item[64], traceparent[512]; /* room for what gcc reckons the rows could hold */
        fresh_item(item, sizeof item);
        hex(trace_id[i], 32);
        hex(client_span[i], 16);
        snprintf(traceparent, sizeof traceparent, "00-%s-%s-01", trace_id[i], client_span[i]);
        assert_int_equal(place("decline-batch", item, traceparent, id[i]), 201);
    }
    assert_true(ts_orders_await(id, BATCHED_ORDERS, DETA_STATE_PAYMENT_FAILED, END_WAIT_MS));
    const char *const want[] = {"order-service", "inventory-service", "payment-service",
                                "query-api"};
    static span_t spans[MAX_SPANS];
    int in_batch = 0; /* orders whose release was written in a batch */
    for (int i = 0; i < BATCHED_ORDERS; i++) {
        int n = await_spans(trace_id[i], spans, MAX_SPANS, want, 4);
        assert_true(n > 0);
        assert_one_tree(spans, n, client_span[i], want, 4);
        /* inventory.reserved and inventory.released both in the trace, and read
         * by query-api there */
        assert_true(count_spans(spans, n, "inventory-service", "publish raw.inventory-events") >=
                    2);
        assert_true(count_spans(spans, n, "query-api", "process raw.inventory-events") >= 2);
        for (int j = 0; j < n; j++) {
            const span_t *p = by_id(spans, n, spans[j].parent_id);
            const span_t *pp = p ? by_id(spans, n, p->parent_id) : NULL;
            if (spans[j].kind == KIND_PRODUCER && strcmp(spans[j].service, "inventory-service") == 0 &&
                pp && strcmp(pp->name, "process raw.payment-events") == 0 && pp->batch >= 2) {
                assert_int_equal(p->batch, pp->batch);
                in_batch++;
            }
        }
    }
    printf("%d of %d releases were written in a batch, in their order's trace\n", in_batch,
           BATCHED_ORDERS);
    assert_true(in_batch > 0);
}

static void invalid_traceparent(void **state) {
    (void)state;
    char item[64], id[37];
    fresh_item(item, sizeof item);
    /* an all-zero trace id: ignored, the request served in a new trace */
    assert_int_equal(place("trace-customer", item,
                           "00-00000000000000000000000000000000-00f067aa0ba902b7-01", id),
                     201);
    span_t spans[4];
    assert_int_equal(spans_of("00000000000000000000000000000000", spans, 4), 0);
}

static double dropped(const char *url_var) {
    return ts_metric(url_var,
                     "deta_trace_spans_dropped_total{reason=\"export_failed\"}");
}

/* An order reaches DELIVERED while the receiver is as it is; drops grow. */
static void saga_unharmed(const char *what) {
    double before = dropped("ORDER_SERVICE_URL");
    char item[64], id[1][37];
    fresh_item(item, sizeof item);
    assert_int_equal(ts_order_place("trace-customer", item, 1, id[0]), 201);
    assert_true(ts_orders_await(id, 1, DETA_STATE_DELIVERED, END_WAIT_MS));
    double after = before;
    for (int waited = 0; waited < 15000 && after <= before; waited += 250) {
        ts_sleep_ms(250);
        after = dropped("ORDER_SERVICE_URL");
    }
    printf("%s receiver: order-service dropped %.0f -> %.0f spans (export_failed)\n", what,
           before < 0 ? 0 : before, after);
    assert_true(after > (before < 0 ? 0 : before));
}

static void dead_receiver(void **state) {
    (void)state;
    receiver_stop();
    saga_unharmed("dead");
}

static void slow_receiver(void **state) {
    (void)state;
    receiver_stop();
    receiver_start(SLOW_RECEIVER_MS);
    saga_unharmed("slow");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(one_tree),       cmocka_unit_test(declined_one_tree),
        cmocka_unit_test(batched),        cmocka_unit_test(invalid_traceparent),
        cmocka_unit_test(dead_receiver),
        cmocka_unit_test(slow_receiver),
    };
    return cmocka_run_group_tests_name("traces", tests, traced_setup, traced_teardown);
}
