/*
 * otlp.c - the span exporter: OTLP over HTTP with the JSON encoding, in batches
 * from a bounded queue, on one thread of its own (see deta/trace.h).
 *
 * The queue holds at most OTEL_BSP_MAX_QUEUE_SIZE ended spans. deta_span_end()
 * puts a span in under a mutex (a pointer store: nothing waits on I/O under that
 * mutex) or, when the queue is full, drops it and counts it in
 * deta_trace_spans_dropped_total{reason="queue_full"}: a slow or dead collector
 * costs spans, never a caller's time. The exporter's thread wakes when a batch
 * (OTEL_BSP_MAX_EXPORT_BATCH_SIZE) is queued or OTEL_BSP_SCHEDULE_DELAY after the
 * last export, takes up to a batch out, encodes it and POSTs it to the
 * endpoint within OTEL_EXPORTER_OTLP_TIMEOUT (otlp_http.c). A batch that fails
 * (no connection, no answer in time, a status other than 2xx) is dropped and
 * counted (reason="export_failed", and one WARN line per failure streak, not per
 * batch), and the next waits the schedule delay: no retry piles up behind a
 * collector that is down. Exported spans count in
 * deta_trace_spans_exported_total.
 *
 * Stopping (deta_otlp_stop, from the service's shutdown): the thread exports
 * what is queued, batch after batch, each POST bounded by what is left of
 * within_ms; what is still queued at the bound is dropped and counted. The
 * caller waits for the thread only until the bound (plus a little): a thread
 * stuck in name resolution is left behind, detached, and the process exits.
 *
 * Encoding (deta_otlp_encode): the protobuf-JSON mapping of
 * ExportTraceServiceRequest, as the OTLP specification gives it: ids as
 * lowercase hex strings (not base64), enum kinds and status codes as numbers,
 * 64-bit integers (timestamps in ns, intValue) as decimal strings, field names
 * in lowerCamelCase. One resourceSpans with service.name (OTEL_SERVICE_NAME or
 * the service's name) and service.instance.id, one scopeSpans ("deta").
 */
#include "trace_internal.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "clock.h"
#include "deta/log.h"
#include "deta/metrics.h"

#define STOP_JOIN_GRACE_MS 200

typedef struct exporter {
    otlp_url_t url;
    char endpoint[512];
    char service_name[128];
    char instance[128];
    int max_queue, max_batch, delay_ms, timeout_ms;

    pthread_mutex_t lock;
    pthread_cond_t wake;     /* a batch is ready, or stop */
    pthread_cond_t finished; /* the thread is done */
    deta_span_t **ring;
    size_t head, count;
    bool stopping, done;
    long stop_deadline_ms;
    pthread_t thread;

    bool failing; /* the last export failed: the streak is logged once */
    deta_counter_t *exported, *dropped_full, *dropped_failed;
} exporter_t;

static exporter_t *exp_global;

/* ---- encoding ---- */

static json_t *any_value(const span_attr_t *a) {
    if (a->is_int) {
        char n[24];
        snprintf(n, sizeof n, "%lld", a->ival);
        return json_pack("{s:s}", "intValue", n);
    }
    return json_pack("{s:s}", "stringValue", a->sval);
}

static json_t *key_value(const char *key, json_t *value) {
    return json_pack("{s:s,s:o}", "key", key, "value", value);
}

static json_t *ns_string(int64_t ns) {
    char n[24];
    snprintf(n, sizeof n, "%" PRId64, ns);
    return json_string(n);
}

/* Strings a span holds are cut to fit, perhaps inside a UTF-8 sequence, and may
 * come from outside (a route, an error): jansson refuses invalid UTF-8, so
 * json_string would give NULL. Bytes that are not ASCII are replaced first. */
static void ascii_clean(char *s) {
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80 || (unsigned char)*s < 0x20)
            *s = '?';
}

static json_t *encode_span(deta_span_t *s) {
    char tid[33], sid[17], pid[17];
    deta_trace_hex(s->ctx.trace_id, 16, tid);
    deta_trace_hex(s->ctx.span_id, 8, sid);
    ascii_clean(s->name);
    ascii_clean(s->status_message);
    json_t *attrs = json_array(), *events = json_array();
    for (int i = 0; i < s->nattrs; i++) {
        ascii_clean(s->attrs[i].key);
        if (!s->attrs[i].is_int)
            ascii_clean(s->attrs[i].sval);
        json_array_append_new(attrs, key_value(s->attrs[i].key, any_value(&s->attrs[i])));
    }
    for (int i = 0; i < s->nevents; i++) {
        span_event_t *e = &s->events[i];
        ascii_clean(e->name);
        json_t *eattrs = json_array();
        if (e->attr.key[0]) {
            ascii_clean(e->attr.key);
            ascii_clean(e->attr.sval);
            json_array_append_new(eattrs, key_value(e->attr.key, any_value(&e->attr)));
        }
        json_array_append_new(events, json_pack("{s:o,s:s,s:o}", "timeUnixNano",
                                                ns_string(e->time_ns), "name", e->name,
                                                "attributes", eattrs));
    }
    json_t *status = json_pack("{s:i}", "code", (int)s->status);
    if (status && s->status_message[0])
        json_object_set_new(status, "message", json_string(s->status_message));
    json_t *span = json_pack("{s:s,s:s,s:s,s:i,s:o,s:o,s:o,s:o,s:o}", "traceId", tid, "spanId",
                             sid, "name", s->name, "kind", (int)s->kind, "startTimeUnixNano",
                             ns_string(s->start_ns), "endTimeUnixNano", ns_string(s->end_ns),
                             "attributes", attrs, "events", events, "status", status);
    if (!span)
        return NULL;
    if (s->has_parent) {
        deta_trace_hex(s->parent_id, 8, pid);
        json_object_set_new(span, "parentSpanId", json_string(pid));
    }
    if (s->ctx.state[0])
        json_object_set_new(span, "traceState", json_string(s->ctx.state));
    if (s->dropped_events)
        json_object_set_new(span, "droppedEventsCount", json_integer(s->dropped_events));
    return span;
}

char *deta_otlp_encode(deta_span_t *const *spans, size_t n, const char *service_name,
                       const char *instance) {
    json_t *list = json_array();
    for (size_t i = 0; i < n && list; i++) {
        json_t *span = encode_span(spans[i]);
        if (!span || json_array_append_new(list, span) != 0) {
            json_decref(list);
            list = NULL;
        }
    }
    if (!list)
        return NULL;
    json_t *rattrs = json_array();
    json_array_append_new(rattrs, key_value("service.name", json_pack("{s:s}", "stringValue",
                                                                      service_name)));
    if (instance && *instance)
        json_array_append_new(rattrs, key_value("service.instance.id",
                                                json_pack("{s:s}", "stringValue", instance)));
    json_t *req = json_pack("{s:[{s:{s:o},s:[{s:{s:s},s:o}]}]}", "resourceSpans", "resource",
                            "attributes", rattrs, "scopeSpans", "scope", "name", "deta", "spans",
                            list);
    char *text = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    return text;
}

/* ---- the queue ---- */

static void count(deta_counter_t *c, size_t n) {
    if (c && n)
        deta_counter_add(c, (double)n);
}

void deta_otlp_enqueue(deta_span_t *span) {
    exporter_t *e = exp_global;
    if (!e) {
        free(span);
        return;
    }
    pthread_mutex_lock(&e->lock);
    bool taken = !e->done && e->count < (size_t)e->max_queue;
    if (taken) {
        e->ring[(e->head + e->count) % (size_t)e->max_queue] = span;
        e->count++;
        if (e->count == (size_t)e->max_batch)
            pthread_cond_signal(&e->wake);
    }
    pthread_mutex_unlock(&e->lock);
    if (!taken) {
        free(span);
        count(e->dropped_full, 1);
    }
}

/* Up to max_batch spans out of the queue (lock held). */
static size_t take_batch(exporter_t *e, deta_span_t **batch) {
    size_t n = e->count < (size_t)e->max_batch ? e->count : (size_t)e->max_batch;
    for (size_t i = 0; i < n; i++) {
        batch[i] = e->ring[e->head];
        e->head = (e->head + 1) % (size_t)e->max_queue;
    }
    e->count -= n;
    return n;
}

static void export_batch(exporter_t *e, deta_span_t **batch, size_t n, int timeout_ms) {
    char why[256] = "out of memory";
    int code = 0;
    char *body = deta_otlp_encode(batch, n, e->service_name, e->instance);
    if (body && timeout_ms > 0)
        code = deta_otlp_post(&e->url, body, strlen(body), timeout_ms, why, sizeof why);
    else if (body)
        snprintf(why, sizeof why, "no time left");
    free(body);
    for (size_t i = 0; i < n; i++)
        free(batch[i]);
    if (code >= 200 && code < 300) {
        count(e->exported, n);
        if (e->failing)
            DETA_INFO("trace export: %s answers again", e->endpoint);
        e->failing = false;
        return;
    }
    if (code)
        snprintf(why, sizeof why, "the collector answered %d", code);
    count(e->dropped_failed, n);
    if (!e->failing)
        DETA_WARN("trace export to %s failed: %s; %zu spans dropped (counted in "
                  "deta_trace_spans_dropped_total; logged once until it works again)",
                  e->endpoint, why, n);
    e->failing = true;
}

static void *exporter_main(void *arg) {
    exporter_t *e = arg;
    deta_span_t **batch = malloc((size_t)e->max_batch * sizeof *batch);
    pthread_mutex_lock(&e->lock);
    for (;;) {
        if (!e->stopping && e->count < (size_t)e->max_batch) {
            struct timespec until = deta_clock_at(deta_clock_ms() + e->delay_ms);
            while (!e->stopping && e->count < (size_t)e->max_batch)
                if (pthread_cond_timedwait(&e->wake, &e->lock, &until) != 0)
                    break;
        }
        if (e->stopping && (e->count == 0 || deta_clock_ms() >= e->stop_deadline_ms))
            break;
        if (e->count == 0 || !batch)
            continue;
        size_t n = take_batch(e, batch);
        int timeout = e->timeout_ms;
        if (e->stopping) {
            long left = e->stop_deadline_ms - deta_clock_ms();
            timeout = left < timeout ? (int)left : timeout;
        }
        pthread_mutex_unlock(&e->lock);
        export_batch(e, batch, n, timeout);
        pthread_mutex_lock(&e->lock);
    }
    /* What is left at the bound is dropped. */
    size_t left = e->count;
    while (e->count > 0) {
        free(e->ring[e->head]);
        e->head = (e->head + 1) % (size_t)e->max_queue;
        e->count--;
    }
    e->done = true;
    pthread_cond_broadcast(&e->finished);
    pthread_mutex_unlock(&e->lock);
    count(e->dropped_failed, left);
    free(batch);
    return NULL;
}

void deta_otlp_counters(struct deta_metrics *metrics, struct deta_counter **exported,
                        struct deta_counter **dropped_full, struct deta_counter **dropped_failed) {
    const char *help = "Spans dropped before export, by reason";
    *exported = deta_counter(metrics, "deta_trace_spans_exported_total",
                             "Spans the collector accepted", NULL);
    *dropped_full = deta_counter(metrics, "deta_trace_spans_dropped_total", help,
                                 "reason=\"queue_full\"");
    *dropped_failed = deta_counter(metrics, "deta_trace_spans_dropped_total", help,
                                   "reason=\"export_failed\"");
}

deta_err_t deta_otlp_start(const deta_trace_config_t *cfg, const char *instance,
                           struct deta_metrics *metrics, char *errstr, size_t errsize) {
    if (exp_global)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "tracing is started already");
    exporter_t *e = calloc(1, sizeof *e);
    char why[256];
    if (!e)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    if (!deta_otlp_url_parse(cfg->endpoint, &e->url, why, sizeof why)) {
        free(e);
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "OTEL_EXPORTER_OTLP_ENDPOINT: %s", why);
    }
    snprintf(e->endpoint, sizeof e->endpoint, "%s", cfg->endpoint);
    snprintf(e->service_name, sizeof e->service_name, "%s", cfg->service_name);
    snprintf(e->instance, sizeof e->instance, "%s", instance ? instance : "");
    e->max_queue = cfg->max_queue;
    e->max_batch = cfg->max_batch;
    e->delay_ms = cfg->schedule_delay_ms;
    e->timeout_ms = cfg->export_timeout_ms;
    e->ring = calloc((size_t)e->max_queue, sizeof *e->ring);
    if (!e->ring) {
        free(e);
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    }
    pthread_mutex_init(&e->lock, NULL);
    deta_cond_init_monotonic(&e->wake);
    deta_cond_init_monotonic(&e->finished);
    if (metrics)
        deta_otlp_counters(metrics, &e->exported, &e->dropped_full, &e->dropped_failed);
    if (pthread_create(&e->thread, NULL, exporter_main, e) != 0) {
        free(e->ring);
        free(e);
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "cannot start the trace exporter");
    }
    exp_global = e;
    DETA_INFO("tracing: spans go to %s as %s (queue %d, batch %d, every %d ms, timeout %d ms)",
              e->endpoint, e->service_name, e->max_queue, e->max_batch, e->delay_ms,
              e->timeout_ms);
    return DETA_OK;
}

int deta_otlp_stop(int within_ms) {
    exporter_t *e = exp_global;
    if (!e)
        return 0;
    long deadline = deta_clock_ms() + (within_ms > 0 ? within_ms : 0);
    pthread_mutex_lock(&e->lock);
    int queued = (int)e->count;
    e->stopping = true;
    e->stop_deadline_ms = deadline;
    pthread_cond_signal(&e->wake);
    struct timespec until = deta_clock_at(deadline + STOP_JOIN_GRACE_MS);
    while (!e->done)
        if (pthread_cond_timedwait(&e->finished, &e->lock, &until) != 0)
            break;
    bool done = e->done;
    int left = (int)e->count;
    pthread_mutex_unlock(&e->lock);
    if (!done) {
        /* Stuck past its bound (a resolver that hangs): left behind; the
         * process is about to exit. */
        DETA_WARN("trace export: still busy at the shutdown's bound; %d spans left", left);
        pthread_detach(e->thread);
        return left ? left : queued;
    }
    pthread_join(e->thread, NULL);
    exp_global = NULL;
    pthread_cond_destroy(&e->wake);
    pthread_cond_destroy(&e->finished);
    pthread_mutex_destroy(&e->lock);
    free(e->ring);
    free(e);
    return 0;
}
