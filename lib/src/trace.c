/*
 * trace.c - spans, the sampler, ids and the thread's current span (see
 * deta/trace.h; the export is otlp.c).
 *
 * Off is one flag. deta_trace_start() sets it only when an endpoint is
 * configured; until then (and for good when none is) deta_span_begin() returns
 * NULL at once and everything else takes NULL as "nothing to do": no id is
 * drawn, no clock read, nothing allocated.
 *
 * Ids. Trace and span ids must be unique and unpredictable enough that traces
 * do not collide; they are drawn from getrandom(2) (the kernel's CSPRNG),
 * through a per-thread buffer of 256 bytes refilled when used up, so that one
 * system call serves about ten spans. Should getrandom fail (a kernel without
 * it), the bytes come from a per-thread xorshift seeded by the clock, the
 * thread and the pid: worse, but still distinct.
 *
 * A span is one allocation, fixed in size (attributes and events bounded, texts
 * cut), owned by whoever began it until deta_span_end(), which hands it to the
 * exporter when sampled (the exporter frees it) or frees it. The current span is
 * a thread-local pointer; deta_span_enter() swaps it and remembers the previous
 * one in the span, and ending an entered span puts that one back.
 */
#include "trace_internal.h"
#include "deta/log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static atomic_bool tracing_on = false;
static deta_sampler_t sampler = {DETA_SAMPLER_PARENTBASED_ALWAYS_ON, 1.0};
static _Thread_local deta_span_t *current;

/* ---- ids ---- */

#define RANDOM_BUF 256

typedef struct random_pool {
    uint8_t buf[RANDOM_BUF];
    size_t used; /* RANDOM_BUF: empty */
    bool init;
    uint64_t fallback;
} random_pool_t;

static _Thread_local random_pool_t pool;

static uint64_t fallback_next(random_pool_t *p) {
    if (!p->fallback) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        p->fallback = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^
                      ((uint64_t)getpid() << 40) ^ (uint64_t)(uintptr_t)p;
        p->fallback |= 1;
    }
    p->fallback ^= p->fallback << 13;
    p->fallback ^= p->fallback >> 7;
    p->fallback ^= p->fallback << 17;
    return p->fallback;
}

static void refill(random_pool_t *p) {
    size_t got = 0;
    while (got < RANDOM_BUF) {
        ssize_t n = getrandom(p->buf + got, RANDOM_BUF - got, 0);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    for (; got < RANDOM_BUF; got += 8) {
        uint64_t v = fallback_next(p);
        memcpy(p->buf + got, &v, RANDOM_BUF - got < 8 ? RANDOM_BUF - got : 8);
    }
    p->used = 0;
}

static bool all_zero(const uint8_t *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return false;
    return true;
}

/* n random bytes, never all zero (an all-zero id is invalid). */
static void random_id(uint8_t *out, size_t n) {
    random_pool_t *p = &pool;
    if (!p->init) {
        p->used = RANDOM_BUF;
        p->init = true;
    }
    do {
        if (p->used + n > RANDOM_BUF)
            refill(p);
        memcpy(out, p->buf + p->used, n);
        p->used += n;
    } while (all_zero(out, n));
}

int64_t deta_trace_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* ---- the sampler ---- */

/* The ratio decision: the trace id's last 8 bytes (the random part, W3C level
 * 2) as a number below ratio * 2^64. */
static bool ratio_says(double ratio, const uint8_t trace_id[16]) {
    if (ratio >= 1.0)
        return true;
    if (ratio <= 0.0)
        return false;
    uint64_t v = 0;
    for (int i = 8; i < 16; i++)
        v = v << 8 | trace_id[i];
    return (double)v < ratio * 18446744073709551616.0;
}

bool deta_sampler_decide(const deta_sampler_t *s, const deta_trace_ctx_t *parent,
                         const uint8_t trace_id[16]) {
    bool has_parent = parent && parent->valid;
    switch (s->kind) {
    case DETA_SAMPLER_ALWAYS_ON:
        return true;
    case DETA_SAMPLER_ALWAYS_OFF:
        return false;
    case DETA_SAMPLER_TRACEIDRATIO:
        return ratio_says(s->ratio, trace_id);
    case DETA_SAMPLER_PARENTBASED_ALWAYS_ON:
        return has_parent ? (parent->flags & DETA_TRACE_FLAG_SAMPLED) != 0 : true;
    case DETA_SAMPLER_PARENTBASED_ALWAYS_OFF:
        return has_parent ? (parent->flags & DETA_TRACE_FLAG_SAMPLED) != 0 : false;
    case DETA_SAMPLER_PARENTBASED_TRACEIDRATIO:
        return has_parent ? (parent->flags & DETA_TRACE_FLAG_SAMPLED) != 0
                          : ratio_says(s->ratio, trace_id);
    }
    return false;
}

/* ---- the process's tracing ---- */

deta_err_t deta_trace_start(const deta_trace_config_t *cfg, const char *instance,
                            struct deta_metrics *metrics, char *errstr, size_t errsize) {
    if (!cfg || !cfg->enabled) {
        if (metrics) { /* the families at 0: the alerts and the dashboard read them */
            struct deta_counter *exported, *full, *failed;
            deta_otlp_counters(metrics, &exported, &full, &failed);
        }
        return DETA_OK;
    }
    sampler = cfg->sampler;
    deta_err_t err = deta_otlp_start(cfg, instance, metrics, errstr, errsize);
    if (err == DETA_OK) {
        deta_log_set_trace_ids(deta_span_current_ids);
        atomic_store(&tracing_on, true);
    }
    return err;
}

int deta_trace_stop(int within_ms) {
    if (!atomic_exchange(&tracing_on, false))
        return 0;
    return deta_otlp_stop(within_ms);
}

bool deta_trace_enabled(void) { return atomic_load_explicit(&tracing_on, memory_order_relaxed); }

/* ---- spans ---- */

static void copy_text(char *dst, size_t size, const char *src) {
    snprintf(dst, size, "%s", src ? src : "");
}

deta_span_t *deta_span_begin_at(const char *name, deta_span_kind_t kind,
                                const deta_trace_ctx_t *parent, int64_t start_ns) {
    if (!deta_trace_enabled())
        return NULL;
    if (!parent && current)
        parent = &current->ctx;
    if (parent && !parent->valid)
        parent = NULL;
    deta_span_t *s = malloc(sizeof *s);
    if (!s)
        return NULL;
    s->kind = kind;
    copy_text(s->name, sizeof s->name, name);
    s->start_ns = start_ns;
    s->end_ns = 0;
    s->status = SPAN_STATUS_UNSET;
    s->status_message[0] = '\0';
    s->nattrs = s->nevents = s->dropped_events = 0;
    s->prev_current = NULL;
    s->entered = false;
    s->entered_on = NULL;
    s->ctx.valid = true;
    if (parent) {
        memcpy(s->ctx.trace_id, parent->trace_id, 16);
        memcpy(s->parent_id, parent->span_id, 8);
        memcpy(s->ctx.state, parent->state, strlen(parent->state) + 1);
        s->has_parent = true;
    } else {
        random_id(s->ctx.trace_id, 16);
        memset(s->parent_id, 0, 8);
        s->ctx.state[0] = '\0';
        s->has_parent = false;
    }
    random_id(s->ctx.span_id, 8);
    s->sampled = deta_sampler_decide(&sampler, parent, s->ctx.trace_id);
    s->ctx.flags = s->sampled ? DETA_TRACE_FLAG_SAMPLED : 0;
    return s;
}

deta_span_t *deta_span_begin(const char *name, deta_span_kind_t kind,
                             const deta_trace_ctx_t *parent) {
    if (!deta_trace_enabled())
        return NULL;
    return deta_span_begin_at(name, kind, parent, deta_trace_now_ns());
}

static span_attr_t *next_attr(deta_span_t *s, const char *key) {
    if (!s || !s->sampled || !key)
        return NULL;
    for (int i = 0; i < s->nattrs; i++) /* set again: replaced */
        if (strcmp(s->attrs[i].key, key) == 0)
            return &s->attrs[i];
    if (s->nattrs == DETA_SPAN_MAX_ATTRS)
        return NULL;
    span_attr_t *a = &s->attrs[s->nattrs++];
    copy_text(a->key, sizeof a->key, key);
    a->sval[0] = '\0';
    return a;
}

void deta_span_attr(deta_span_t *span, const char *key, const char *value) {
    span_attr_t *a = next_attr(span, key);
    if (!a)
        return;
    a->is_int = false;
    copy_text(a->sval, sizeof a->sval, value);
}

void deta_span_attr_int(deta_span_t *span, const char *key, long long value) {
    span_attr_t *a = next_attr(span, key);
    if (!a)
        return;
    a->is_int = true;
    a->ival = value;
}

void deta_span_event(deta_span_t *span, const char *name, const char *key, const char *value) {
    if (!span || !span->sampled)
        return;
    if (span->nevents == DETA_SPAN_MAX_EVENTS) {
        span->dropped_events++;
        return;
    }
    span_event_t *e = &span->events[span->nevents++];
    copy_text(e->name, sizeof e->name, name);
    e->time_ns = deta_trace_now_ns();
    e->attr.key[0] = '\0';
    e->attr.sval[0] = '\0';
    e->attr.is_int = false;
    if (key) {
        copy_text(e->attr.key, sizeof e->attr.key, key);
        e->attr.is_int = false;
        copy_text(e->attr.sval, sizeof e->attr.sval, value);
    }
}

void deta_span_set_error(deta_span_t *span, const char *message) {
    if (!span)
        return;
    span->status = SPAN_STATUS_ERROR;
    copy_text(span->status_message, sizeof span->status_message, message);
}

void deta_span_set_ok(deta_span_t *span) {
    if (!span)
        return;
    span->status = SPAN_STATUS_OK;
    span->status_message[0] = '\0';
}

void deta_span_end(deta_span_t *span) {
    if (!span)
        return;
    /* Ending a span that is in this thread's chain of current spans makes the
     * one current before it current again, whatever was entered after it and
     * not ended (a transaction its code left open): nothing stale stays current.
     * Every span in the chain is alive: one that ends leaves the chain, with
     * those above it. */
    if (span->entered && span->entered_on == &current)
        for (deta_span_t *c = current; c; c = c->prev_current)
            if (c == span) {
                current = span->prev_current;
                break;
            }
    span->end_ns = deta_trace_now_ns();
    if (span->end_ns < span->start_ns)
        span->end_ns = span->start_ns;
    if (span->sampled && deta_trace_enabled())
        deta_otlp_enqueue(span);
    else
        free(span);
}

const deta_trace_ctx_t *deta_span_ctx(const deta_span_t *span) {
    return span ? &span->ctx : NULL;
}

deta_span_t *deta_span_enter(deta_span_t *span) {
    deta_span_t *was = current;
    if (span) {
        span->prev_current = was;
        span->entered = true;
        span->entered_on = &current;
    }
    current = span;
    return was;
}

deta_span_t *deta_span_current(void) { return current; }

bool deta_span_current_ids(char trace_id[33], char span_id[17]) {
    deta_span_t *s = current;
    if (!s)
        return false;
    deta_trace_hex(s->ctx.trace_id, 16, trace_id);
    deta_trace_hex(s->ctx.span_id, 8, span_id);
    return true;
}

bool deta_span_current_headers(char *traceparent, char *tracestate) {
    deta_span_t *s = current;
    if (!s)
        return false;
    deta_traceparent_format(&s->ctx, traceparent);
    memcpy(tracestate, s->ctx.state, strlen(s->ctx.state) + 1);
    return true;
}
