/*
 * test_trace.c - the pure parts of tracing: traceparent parse and format,
 * tracestate cleaning, the sampler's decisions, the settings, the OTLP/HTTP
 * JSON encoding, the exporter's URL and status-line parsers (lib/src/trace*.c,
 * otlp*.c), and the span API's parents and current span with tracing started
 * towards a port where nothing listens (no server: its exports fail and count).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "deta/config.h"
#include "deta/log.h"
#include "deta/metrics.h"
#include "deta/trace.h"
#include "trace_internal.h"

#define TP "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static bool parses(const char *s) {
    deta_trace_ctx_t c;
    return deta_traceparent_parse(s, strlen(s), &c);
}

static void traceparent_valid(void **state) {
    (void)state;
    deta_trace_ctx_t c;
    assert_true(deta_traceparent_parse(TP, strlen(TP), &c));
    assert_true(c.valid);
    assert_int_equal(c.flags, DETA_TRACE_FLAG_SAMPLED);
    assert_int_equal(c.trace_id[0], 0x4b);
    assert_int_equal(c.trace_id[15], 0x36);
    assert_int_equal(c.span_id[7], 0xb7);
    char out[DETA_TRACEPARENT_LEN + 1];
    deta_traceparent_format(&c, out);
    assert_string_equal(out, TP);
    /* not sampled; unknown flags are dropped, sampled kept */
    assert_true(parses("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"));
    assert_true(deta_traceparent_parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff",
                                       55, &c));
    assert_int_equal(c.flags, DETA_TRACE_FLAG_SAMPLED);
    deta_traceparent_format(&c, out);
    assert_string_equal(out + 53, "01");
    /* a later version: the first 55 read as 00's, more after a '-' allowed */
    assert_true(parses("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
    assert_true(parses("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future"));
}

static void traceparent_invalid(void **state) {
    (void)state;
    const char *bad[] = {
        "",
        "00",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",     /* short */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",   /* 00 is exactly 55 */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",    /* version ff */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",    /* zero trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",    /* zero parent id */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",    /* uppercase */
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",    /* not hex */
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",    /* separator */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
        "00-4bf92f3577b34da6a3ce929d0e0e47-3600f067aa0ba902b7-01",    /* misplaced '-' */
        "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",    /* version not hex */
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",   /* later: '-' after 55 */
        " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",    /* flags not hex */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        deta_trace_ctx_t c;
        c.valid = true;
        if (deta_traceparent_parse(bad[i], strlen(bad[i]), &c))
            fail_msg("accepted \"%s\"", bad[i]);
        assert_false(c.valid);
    }
    deta_trace_ctx_t c;
    assert_false(deta_trace_ctx_from_headers(NULL, "a=b", &c));
    assert_false(deta_trace_ctx_from_headers("nonsense", "a=b", &c));
}

static const char *clean(const char *in) {
    static char out[DETA_TRACESTATE_MAX + 1];
    return deta_tracestate_clean(in, strlen(in), out, sizeof out) ? out : NULL;
}

static void tracestate(void **state) {
    (void)state;
    assert_string_equal(clean("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
                        "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
    assert_string_equal(clean(" rojo=1 ,\t, congo=2 "), "rojo=1,congo=2");
    assert_string_equal(clean("tenant1@vendor=x"), "tenant1@vendor=x");
    assert_string_equal(clean("a/b*c_d-e=v a l"), "a/b*c_d-e=v a l");
    assert_null(clean(""));
    assert_null(clean(" , "));
    assert_null(clean("Rojo=1"));            /* uppercase key */
    assert_null(clean("1abc=1"));            /* a simple key starts with a letter */
    assert_null(clean("rojo"));              /* no '=' */
    assert_null(clean("rojo="));             /* empty value */
    assert_null(clean("rojo=a=b"));          /* '=' in the value */
    assert_null(clean("rojo=1,rojo=2"));     /* a key twice */
    assert_null(clean("t@Vendor=1"));        /* system starts with a letter */
    assert_null(clean("t@vendor12345678901=1")); /* system up to 14 */
    assert_null(clean("rojo=\x01"));
    assert_null(clean("rojo=caf\xc3\xa9"));
    /* 32 members are fine, 33 are not */
    char many[33 * 8 + 1] = "";
    for (int i = 0; i < 32; i++)
        sprintf(many + strlen(many), "%sk%02d=v", i ? "," : "", i);
    assert_non_null(clean(many));
    strcat(many, ",k32=v");
    assert_null(clean(many));
    /* longer than DETA_TRACESTATE_MAX once cleaned: dropped whole */
    char big[700];
    snprintf(big, sizeof big, "a=%0250d,b=%0250d,c=%0100d", 0, 0, 0);
    assert_null(clean(big));
    /* with a traceparent: kept; invalid: the context stands without it */
    deta_trace_ctx_t c;
    assert_true(deta_trace_ctx_from_headers(TP, "congo=t61", &c));
    assert_string_equal(c.state, "congo=t61");
    assert_true(deta_trace_ctx_from_headers(TP, "BAD", &c));
    assert_string_equal(c.state, "");
}

static void sampler(void **state) {
    (void)state;
    uint8_t low[16] = {1}, high[16];
    memset(high, 0xff, sizeof high); /* last 8 bytes: the largest value */
    deta_trace_ctx_t sampled = {.valid = true, .flags = DETA_TRACE_FLAG_SAMPLED};
    deta_trace_ctx_t unsampled = {.valid = true, .flags = 0};
    deta_sampler_t s = {DETA_SAMPLER_PARENTBASED_ALWAYS_ON, 1.0};
    assert_true(deta_sampler_decide(&s, NULL, low));
    assert_true(deta_sampler_decide(&s, &sampled, low));
    assert_false(deta_sampler_decide(&s, &unsampled, low));
    s.kind = DETA_SAMPLER_PARENTBASED_ALWAYS_OFF;
    assert_false(deta_sampler_decide(&s, NULL, low));
    assert_true(deta_sampler_decide(&s, &sampled, low));
    s.kind = DETA_SAMPLER_ALWAYS_ON;
    assert_true(deta_sampler_decide(&s, &unsampled, low));
    s.kind = DETA_SAMPLER_ALWAYS_OFF;
    assert_false(deta_sampler_decide(&s, &sampled, low));
    s = (deta_sampler_t){DETA_SAMPLER_TRACEIDRATIO, 0.5};
    assert_true(deta_sampler_decide(&s, &unsampled, low));  /* ignores the parent */
    assert_false(deta_sampler_decide(&s, &sampled, high));
    s.ratio = 0.0;
    assert_false(deta_sampler_decide(&s, NULL, low));
    s.ratio = 1.0;
    assert_true(deta_sampler_decide(&s, NULL, high));
    s = (deta_sampler_t){DETA_SAMPLER_PARENTBASED_TRACEIDRATIO, 0.5};
    assert_false(deta_sampler_decide(&s, NULL, high));
    assert_true(deta_sampler_decide(&s, NULL, low));
    assert_true(deta_sampler_decide(&s, &sampled, high));
    assert_false(deta_sampler_decide(&s, &unsampled, low));
    /* the ratio samples about that share of random ids */
    s = (deta_sampler_t){DETA_SAMPLER_TRACEIDRATIO, 0.25};
    int yes = 0;
    srand(7);
    for (int i = 0; i < 4000; i++) {
        uint8_t id[16];
        for (int k = 0; k < 16; k++)
            id[k] = (uint8_t)rand();
        yes += deta_sampler_decide(&s, NULL, id);
    }
    assert_in_range(yes, 850, 1150);
    deta_sampler_kind_t k;
    assert_true(deta_sampler_parse("parentbased_traceidratio", &k));
    assert_int_equal(k, DETA_SAMPLER_PARENTBASED_TRACEIDRATIO);
    assert_false(deta_sampler_parse("AlwaysOn", &k));
}

static void clear_otel(void) {
    const char *vars[] = {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                          "OTEL_SERVICE_NAME", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
                          "OTEL_SDK_DISABLED", "OTEL_BSP_MAX_QUEUE_SIZE",
                          "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "OTEL_BSP_SCHEDULE_DELAY",
                          "OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
                          "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_TRACES_EXPORTER"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
        unsetenv(vars[i]);
}

static void refused(const char *var, const char *value) {
    clear_otel();
    setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318", 1);
    setenv(var, value, 1);
    deta_trace_config_t c;
    char err[512] = "";
    if (deta_trace_config_load(&c, "svc", err, sizeof err) == DETA_OK)
        fail_msg("%s=%s was accepted", var, value);
    if (!strstr(err, var))
        fail_msg("the error does not name %s: %s", var, err);
}

static void settings(void **state) {
    (void)state;
    deta_trace_config_t c;
    char err[512];
    clear_otel();
    assert_int_equal(deta_trace_config_load(&c, "order-service", err, sizeof err), DETA_OK);
    assert_false(c.enabled); /* no endpoint: off */
    assert_string_equal(c.service_name, "order-service");
    assert_int_equal(c.sampler.kind, DETA_SAMPLER_PARENTBASED_ALWAYS_ON);
    assert_int_equal(c.max_queue, 2048);
    assert_int_equal(c.max_batch, 512);
    assert_int_equal(c.schedule_delay_ms, 5000);
    assert_int_equal(c.export_timeout_ms, 10000);
    setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/", 1);
    setenv("OTEL_SERVICE_NAME", "orders", 1);
    setenv("OTEL_TRACES_SAMPLER", "traceidratio", 1);
    setenv("OTEL_TRACES_SAMPLER_ARG", "0.1", 1);
    assert_int_equal(deta_trace_config_load(&c, "order-service", err, sizeof err), DETA_OK);
    assert_true(c.enabled);
    assert_string_equal(c.endpoint, "http://collector:4318/v1/traces");
    assert_string_equal(c.service_name, "orders");
    assert_true(c.sampler.ratio > 0.09 && c.sampler.ratio < 0.11);
    setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://other:9/custom", 1);
    assert_int_equal(deta_trace_config_load(&c, "x", err, sizeof err), DETA_OK);
    assert_string_equal(c.endpoint, "http://other:9/custom");
    setenv("OTEL_SDK_DISABLED", "TRUE", 1);
    assert_int_equal(deta_trace_config_load(&c, "x", err, sizeof err), DETA_OK);
    assert_false(c.enabled);
    refused("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318");
    refused("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318");
    refused("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:99999");
    refused("OTEL_TRACES_SAMPLER", "sometimes");
    refused("OTEL_TRACES_SAMPLER_ARG", "1.5");
    refused("OTEL_TRACES_SAMPLER_ARG", "half");
    refused("OTEL_BSP_MAX_QUEUE_SIZE", "0");
    refused("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4096"); /* above the queue's 2048 */
    refused("OTEL_BSP_SCHEDULE_DELAY", "-1");
    refused("OTEL_EXPORTER_OTLP_TIMEOUT", "ten");
    refused("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf");
    refused("OTEL_TRACES_EXPORTER", "jaeger");
    refused("OTEL_SDK_DISABLED", "yes");
    clear_otel();
}

static void url_and_status(void **state) {
    (void)state;
    otlp_url_t u;
    char why[256];
    assert_true(deta_otlp_url_parse("http://127.0.0.1:4318/v1/traces", &u, why, sizeof why));
    assert_string_equal(u.host, "127.0.0.1");
    assert_string_equal(u.port, "4318");
    assert_string_equal(u.path, "/v1/traces");
    assert_true(deta_otlp_url_parse("http://collector", &u, why, sizeof why));
    assert_string_equal(u.port, "80");
    assert_string_equal(u.path, "/");
    assert_true(deta_otlp_url_parse("http://[::1]:4318/x", &u, why, sizeof why));
    assert_string_equal(u.host, "::1");
    assert_false(deta_otlp_url_parse("http://user@host/x", &u, why, sizeof why));
    assert_false(deta_otlp_url_parse("http://host:/x", &u, why, sizeof why));
    assert_false(deta_otlp_url_parse("http://:80/x", &u, why, sizeof why));
    assert_false(deta_otlp_url_parse("http://host/a b", &u, why, sizeof why));
    assert_int_equal(deta_otlp_status_code("HTTP/1.1 200 OK\r\n", 17), 200);
    assert_int_equal(deta_otlp_status_code("HTTP/1.0 503\r\n", 14), 503);
    assert_int_equal(deta_otlp_status_code("HTTP/1.1 200 OK", 15), 0); /* not complete */
    assert_int_equal(deta_otlp_status_code("HTTP/1.1 20x OK\r\n", 17), 0);
    assert_int_equal(deta_otlp_status_code("HTTP/1.1 2000 OK\r\n", 18), 0);
    assert_int_equal(deta_otlp_status_code("HTTP/2 200 OK\r\n", 15), 0);
}

/* One span, filled by hand as trace.c would. */
static deta_span_t *made_span(void) {
    deta_span_t *s = calloc(1, sizeof *s);
    deta_trace_ctx_t c;
    assert_true(deta_traceparent_parse(TP, 55, &c));
    s->ctx = c;
    snprintf(s->ctx.state, sizeof s->ctx.state, "congo=t61");
    memset(s->ctx.span_id, 0x11, 8);
    memcpy(s->parent_id, c.span_id, 8);
    s->has_parent = true;
    s->sampled = true;
    s->kind = DETA_SPAN_CONSUMER;
    snprintf(s->name, sizeof s->name, "process orders.created");
    s->start_ns = 1700000000123456789LL;
    s->end_ns = 1700000000223456789LL;
    s->status = SPAN_STATUS_ERROR;
    snprintf(s->status_message, sizeof s->status_message, "caf\xc3\xa9 down");
    snprintf(s->attrs[0].key, sizeof s->attrs[0].key, "messaging.destination.name");
    snprintf(s->attrs[0].sval, sizeof s->attrs[0].sval, "orders.created");
    snprintf(s->attrs[1].key, sizeof s->attrs[1].key, "messaging.kafka.message.offset");
    s->attrs[1].is_int = true;
    s->attrs[1].ival = 9007199254740993LL; /* beyond a double's integers */
    s->nattrs = 2;
    snprintf(s->events[0].name, sizeof s->events[0].name, "retry");
    s->events[0].time_ns = 1700000000173456789LL;
    snprintf(s->events[0].attr.key, sizeof s->events[0].attr.key, "error");
    snprintf(s->events[0].attr.sval, sizeof s->events[0].attr.sval, "postgres away");
    s->nevents = 1;
    return s;
}

static const char *attr_value(json_t *attrs, const char *key, const char *type) {
    size_t i;
    json_t *a;
    json_array_foreach(attrs, i, a) {
        if (strcmp(json_string_value(json_object_get(a, "key")), key) == 0)
            return json_string_value(json_object_get(json_object_get(a, "value"), type));
    }
    return NULL;
}

static void otlp_json(void **state) {
    (void)state;
    deta_span_t *spans[2] = {made_span(), made_span()};
    spans[1]->has_parent = false;
    spans[1]->ctx.state[0] = '\0';
    spans[1]->kind = DETA_SPAN_SERVER;
    spans[1]->status = SPAN_STATUS_UNSET;
    char *text = deta_otlp_encode(spans, 2, "payment-service", "payment-service-1");
    assert_non_null(text);
    json_error_t jerr;
    json_t *req = json_loads(text, 0, &jerr);
    assert_non_null(req);
    json_t *rs = json_array_get(json_object_get(req, "resourceSpans"), 0);
    json_t *rattrs = json_object_get(json_object_get(rs, "resource"), "attributes");
    assert_string_equal(attr_value(rattrs, "service.name", "stringValue"), "payment-service");
    assert_string_equal(attr_value(rattrs, "service.instance.id", "stringValue"),
                        "payment-service-1");
    json_t *list =
        json_object_get(json_array_get(json_object_get(rs, "scopeSpans"), 0), "spans");
    assert_int_equal(json_array_size(list), 2);
    json_t *s = json_array_get(list, 0);
    assert_string_equal(json_string_value(json_object_get(s, "traceId")),
                        "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_string_equal(json_string_value(json_object_get(s, "spanId")), "1111111111111111");
    assert_string_equal(json_string_value(json_object_get(s, "parentSpanId")),
                        "00f067aa0ba902b7");
    assert_string_equal(json_string_value(json_object_get(s, "traceState")), "congo=t61");
    assert_int_equal(json_integer_value(json_object_get(s, "kind")), 5);
    /* 64-bit integers are decimal strings */
    assert_string_equal(json_string_value(json_object_get(s, "startTimeUnixNano")),
                        "1700000000123456789");
    assert_string_equal(json_string_value(json_object_get(s, "endTimeUnixNano")),
                        "1700000000223456789");
    json_t *attrs = json_object_get(s, "attributes");
    assert_string_equal(attr_value(attrs, "messaging.destination.name", "stringValue"),
                        "orders.created");
    assert_string_equal(attr_value(attrs, "messaging.kafka.message.offset", "intValue"),
                        "9007199254740993");
    json_t *ev = json_array_get(json_object_get(s, "events"), 0);
    assert_string_equal(json_string_value(json_object_get(ev, "name")), "retry");
    assert_string_equal(json_string_value(json_object_get(ev, "timeUnixNano")),
                        "1700000000173456789");
    assert_string_equal(attr_value(json_object_get(ev, "attributes"), "error", "stringValue"),
                        "postgres away");
    json_t *status = json_object_get(s, "status");
    assert_int_equal(json_integer_value(json_object_get(status, "code")), 2);
    /* not ASCII: replaced, the JSON stays valid */
    assert_string_equal(json_string_value(json_object_get(status, "message")), "caf?? down");
    json_t *root = json_array_get(list, 1);
    assert_null(json_object_get(root, "parentSpanId"));
    assert_null(json_object_get(root, "traceState"));
    assert_int_equal(json_integer_value(json_object_get(root, "kind")), 2);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(root, "status"), "code")),
                     0);
    json_decref(req);
    free(text);
    free(spans[0]);
    free(spans[1]);
}

/* Tracing off: no spans, but the exporter's counters exist at 0 (the alerts and
 * the dashboard read them on every service). */
static void off_exposes_counters(void **state) {
    (void)state;
    deta_trace_config_t cfg = {.enabled = false};
    char err[256];
    deta_metrics_t *metrics = deta_metrics_new();
    assert_int_equal(deta_trace_start(&cfg, "unit-1", metrics, err, sizeof err), DETA_OK);
    assert_false(deta_trace_enabled());
    assert_null(deta_span_begin("off", DETA_SPAN_INTERNAL, NULL));
    char *text = deta_metrics_render(metrics);
    assert_non_null(text);
    assert_non_null(strstr(text, "deta_trace_spans_exported_total 0"));
    assert_non_null(strstr(text, "deta_trace_spans_dropped_total{reason=\"queue_full\"} 0"));
    assert_non_null(strstr(text, "deta_trace_spans_dropped_total{reason=\"export_failed\"} 0"));
    free(text);
    deta_metrics_free(metrics);
}

/* Spans with tracing started (towards a port nothing listens on). */
static void spans_and_current(void **state) {
    (void)state;
    assert_null(deta_span_begin("off", DETA_SPAN_INTERNAL, NULL)); /* not started: off */
    assert_null(deta_span_current());
    deta_trace_config_t cfg = {.enabled = true, .service_name = "unit", .max_queue = 4,
                               .max_batch = 2, .schedule_delay_ms = 50,
                               .export_timeout_ms = 200,
                               .sampler = {DETA_SAMPLER_PARENTBASED_ALWAYS_ON, 1}};
    snprintf(cfg.endpoint, sizeof cfg.endpoint, "http://127.0.0.1:1/v1/traces");
    char err[256];
    deta_metrics_t *metrics = deta_metrics_new();
    assert_int_equal(deta_trace_start(&cfg, "unit-1", metrics, err, sizeof err), DETA_OK);
    deta_span_t *root = deta_span_begin("root", DETA_SPAN_SERVER, NULL);
    assert_non_null(root);
    assert_false(root->has_parent);
    assert_true(root->sampled);
    assert_null(deta_span_enter(root));
    deta_span_t *child = deta_span_begin("child", DETA_SPAN_INTERNAL, NULL);
    assert_memory_equal(child->ctx.trace_id, root->ctx.trace_id, 16);
    assert_memory_equal(child->parent_id, root->ctx.span_id, 8);
    assert_memory_not_equal(child->ctx.span_id, root->ctx.span_id, 8);
    assert_ptr_equal(deta_span_enter(child), root);
    char tp[DETA_TRACEPARENT_LEN + 1], ts[DETA_TRACESTATE_MAX + 1];
    assert_true(deta_span_current_headers(tp, ts));
    /* a span made by the API encodes (its int and text attributes, its events) */
    deta_span_attr_int(child, "n", 5);
    deta_span_attr(child, "s", "x");
    deta_span_attr_int(child, "n", 6); /* set again: replaced */
    deta_span_event(child, "plain", NULL, NULL);
    deta_span_event(child, "with", "k", "v");
    char *json = deta_otlp_encode(&child, 1, "unit", NULL);
    assert_non_null(json);
    assert_non_null(strstr(json, "{\"key\":\"n\",\"value\":{\"intValue\":\"6\"}}"));
    assert_non_null(strstr(json, "{\"key\":\"s\",\"value\":{\"stringValue\":\"x\"}}"));
    assert_int_equal(child->nattrs, 2);
    free(json);
    deta_trace_ctx_t back;
    assert_true(deta_traceparent_parse(tp, strlen(tp), &back));
    assert_memory_equal(back.span_id, child->ctx.span_id, 8);
    /* a span entered after child and left open: ending child unwinds it too */
    deta_span_t *left_open = deta_span_begin("left open", DETA_SPAN_INTERNAL, NULL);
    deta_span_enter(left_open);
    deta_span_end(child);
    assert_ptr_equal(deta_span_current(), root);
    deta_span_end(left_open); /* not in the chain any more: current stays */
    assert_ptr_equal(deta_span_current(), root);
    /* an explicit parent wins over the current span; an unsampled one is followed */
    deta_trace_ctx_t remote;
    assert_true(deta_traceparent_parse(
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00", 55, &remote));
    deta_span_t *r = deta_span_begin("remote", DETA_SPAN_CONSUMER, &remote);
    assert_memory_equal(r->ctx.trace_id, remote.trace_id, 16);
    assert_false(r->sampled);
    deta_span_end(r);
    deta_span_end(root);
    assert_null(deta_span_current());
    /* a full queue drops (counted), never blocks */
    for (int i = 0; i < 100; i++)
        deta_span_end(deta_span_begin("many", DETA_SPAN_INTERNAL, NULL));
    assert_true(deta_trace_stop(500) >= 0);
    char *text = deta_metrics_render(metrics);
    const char *full = strstr(text, "deta_trace_spans_dropped_total{reason=\"queue_full\"} ");
    assert_non_null(full);
    assert_true(atof(strchr(full, ' ') + 1) >= 50);
    assert_non_null(strstr(text, "deta_trace_spans_dropped_total{reason=\"export_failed\"} "));
    free(text);
    deta_metrics_free(metrics);
    assert_false(deta_trace_enabled());
    assert_null(deta_span_begin("after", DETA_SPAN_INTERNAL, NULL));
}

/* Log lines inside a span carry its ids. */
static void log_ids(void **state) {
    (void)state;
    fflush(stdout);
    FILE *f = tmpfile();
    int saved = dup(STDOUT_FILENO);
    dup2(fileno(f), STDOUT_FILENO);
    deta_trace_config_t cfg = {.enabled = true, .service_name = "unit", .max_queue = 4,
                               .max_batch = 2, .schedule_delay_ms = 50,
                               .export_timeout_ms = 100,
                               .sampler = {DETA_SAMPLER_ALWAYS_ON, 1}};
    snprintf(cfg.endpoint, sizeof cfg.endpoint, "http://127.0.0.1:1/v1/traces");
    char err[256];
    deta_err_t started = deta_trace_start(&cfg, "unit-1", NULL, err, sizeof err);
    deta_log_init("unit", DETA_LOG_INFO);
    DETA_INFO("outside");
    deta_span_t *s = deta_span_begin("s", DETA_SPAN_INTERNAL, NULL);
    deta_span_enter(s);
    DETA_INFO("inside");
    char tid[33], sid[17];
    bool have = deta_span_current_ids(tid, sid);
    deta_span_end(s);
    deta_trace_stop(300);
    fflush(stdout);
    dup2(saved, STDOUT_FILENO);
    close(saved);
    assert_int_equal(started, DETA_OK);
    assert_true(have);
    rewind(f);
    char line[2048];
    int seen = 0;
    while (fgets(line, sizeof line, f)) {
        json_t *j = json_loads(line, 0, NULL);
        assert_non_null(j);
        const char *msg = json_string_value(json_object_get(j, "message"));
        if (msg && strcmp(msg, "outside") == 0) {
            assert_null(json_object_get(j, "trace_id"));
            seen++;
        } else if (msg && strcmp(msg, "inside") == 0) {
            assert_string_equal(json_string_value(json_object_get(j, "trace_id")), tid);
            assert_string_equal(json_string_value(json_object_get(j, "span_id")), sid);
            seen++;
        }
        json_decref(j);
    }
    fclose(f);
    assert_int_equal(seen, 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(traceparent_valid), cmocka_unit_test(traceparent_invalid),
        cmocka_unit_test(tracestate),        cmocka_unit_test(sampler),
        cmocka_unit_test(settings),          cmocka_unit_test(url_and_status),
        cmocka_unit_test(otlp_json),         cmocka_unit_test(spans_and_current),
        cmocka_unit_test(log_ids),           cmocka_unit_test(off_exposes_counters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
