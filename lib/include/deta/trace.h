/*
 * trace.h - distributed tracing: W3C Trace Context and spans, exported with OTLP.
 *
 * One order's saga is one trace. The context travels as the W3C headers
 * `traceparent` and `tracestate` (https://www.w3.org/TR/trace-context/): from an
 * HTTP request into a server span, from the current span into the outbox row,
 * from the row onto the Kafka message (the relay's producer span), from the
 * message into the consumer's span, which is current while the handler runs, so
 * that the rows it writes carry it on (docs/observability.md#traces).
 *
 * Context (trace_context.c, pure): deta_traceparent_parse() takes a header as
 * the specification says (version 00 exactly 55 characters; a later version at
 * least that, its first four fields read as 00's; lowercase hex only; version
 * ff, an all-zero trace or parent id refused) and deta_tracestate_clean() keeps
 * a valid `tracestate` (at most 32 members, each key=value by the grammar, no
 * key twice, DETA_TRACESTATE_MAX bytes in all; an invalid one is dropped whole,
 * as the specification asks). Both take bytes from outside: fuzzed by
 * tests/fuzz/fuzz_trace_context.c.
 *
 * Spans (trace.c). deta_span_begin() starts a span as a child of the given
 * context, or else of the thread's current span, or else as the root of a new
 * trace; the sampler decides (OTEL_TRACES_SAMPLER) whether it is recorded. A
 * span that is not sampled still has ids and passes its context on (flags 00).
 * deta_span_enter() makes a span the thread's current one; deta_log lines written
 * meanwhile carry "trace_id" and "span_id". deta_span_end() hands a sampled span
 * to the exporter's queue (otlp.c) and frees it; it never blocks.
 *
 * Off. Without OTEL_EXPORTER_OTLP_ENDPOINT (nor ..._TRACES_ENDPOINT), or with
 * OTEL_SDK_DISABLED=true, tracing is off: deta_span_begin() returns NULL after
 * one load of a flag, every function here accepts NULL and does nothing, no
 * thread runs, no header or column is written. A service with tracing off
 * therefore also cuts the traces that pass through it: turn it on for all the
 * services of a deployment, or for none.
 */
#ifndef DETA_TRACE_H
#define DETA_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "deta/err.h"

struct deta_metrics;

#define DETA_TRACEPARENT_LEN 55 /* "00-" 32 hex "-" 16 hex "-" 2 hex */
#define DETA_TRACESTATE_MAX 512 /* bytes of tracestate kept (the specification's minimum) */
#define DETA_TRACE_FLAG_SAMPLED 0x01

typedef struct deta_trace_ctx {
    bool valid;
    uint8_t trace_id[16];
    uint8_t span_id[8];
    uint8_t flags;                         /* DETA_TRACE_FLAG_SAMPLED or 0 */
    char state[DETA_TRACESTATE_MAX + 1];   /* tracestate, "" when none */
} deta_trace_ctx_t;

/* ---- the W3C headers (trace_context.c; pure) ---- */

/* Parses a traceparent of len bytes (not NUL-terminated); false, out invalid,
 * when it breaks the specification's rules (see the top). */
bool deta_traceparent_parse(const char *s, size_t len, deta_trace_ctx_t *out);
/* "00-<trace id>-<span id>-<flags>" of a valid ctx, NUL-terminated. */
void deta_traceparent_format(const deta_trace_ctx_t *ctx, char out[DETA_TRACEPARENT_LEN + 1]);
/* A tracestate of len bytes, cleaned (blanks around members and empty members
 * dropped) into out (outsize > DETA_TRACESTATE_MAX); false, out "", when it is
 * invalid or longer than DETA_TRACESTATE_MAX once cleaned. */
bool deta_tracestate_clean(const char *s, size_t len, char *out, size_t outsize);
/* Both headers (NUL-terminated; either may be NULL) into ctx; a tracestate
 * without a valid traceparent is ignored. False when there is no valid context. */
bool deta_trace_ctx_from_headers(const char *traceparent, const char *tracestate,
                                 deta_trace_ctx_t *ctx);
/* Lowercase hex of n bytes into out (2n + 1). */
void deta_trace_hex(const uint8_t *bytes, size_t n, char *out);

/* ---- sampling (trace.c; pure) ---- */

typedef enum deta_sampler_kind {
    DETA_SAMPLER_ALWAYS_ON,
    DETA_SAMPLER_ALWAYS_OFF,
    DETA_SAMPLER_TRACEIDRATIO,
    DETA_SAMPLER_PARENTBASED_ALWAYS_ON,
    DETA_SAMPLER_PARENTBASED_ALWAYS_OFF,
    DETA_SAMPLER_PARENTBASED_TRACEIDRATIO,
} deta_sampler_kind_t;

typedef struct deta_sampler {
    deta_sampler_kind_t kind;
    double ratio; /* 0..1, for the traceidratio kinds */
} deta_sampler_t;

/* OTEL_TRACES_SAMPLER's names; false when name is none of them. */
bool deta_sampler_parse(const char *name, deta_sampler_kind_t *out);
/* Whether a span of trace trace_id with that parent (NULL or invalid: a root) is
 * sampled. Parent-based kinds follow the parent's sampled flag; ratio decides by
 * the trace id alone (its last 8 bytes), so every service decides alike. */
bool deta_sampler_decide(const deta_sampler_t *s, const deta_trace_ctx_t *parent,
                         const uint8_t trace_id[16]);

/* ---- settings (trace_config.c) ---- */

typedef struct deta_trace_config {
    bool enabled;             /* an endpoint is set and OTEL_SDK_DISABLED is not true */
    char endpoint[512];       /* the full URL spans are POSTed to */
    char service_name[128];   /* OTEL_SERVICE_NAME, or the service's own */
    deta_sampler_t sampler;
    int max_queue;            /* OTEL_BSP_MAX_QUEUE_SIZE */
    int max_batch;            /* OTEL_BSP_MAX_EXPORT_BATCH_SIZE */
    int schedule_delay_ms;    /* OTEL_BSP_SCHEDULE_DELAY */
    int export_timeout_ms;    /* OTEL_EXPORTER_OTLP_TIMEOUT (and _TRACES_TIMEOUT) */
} deta_trace_config_t;

/* Reads the OTEL_* settings (docs/observability.md#traces, config.h's table);
 * service is the default service.name. DETA_ERR_INVALID naming the variable. */
deta_err_t deta_trace_config_load(deta_trace_config_t *cfg, const char *service, char *errstr,
                                  size_t errsize);

/* ---- the process's tracing (trace.c, otlp.c) ---- */

/* Starts tracing as cfg says (nothing when !cfg->enabled): the exporter's thread
 * and its metrics (deta_trace_spans_exported_total,
 * deta_trace_spans_dropped_total{reason}) in metrics (may be NULL); instance is
 * the resource's service.instance.id. Once per process, before any span. */
deta_err_t deta_trace_start(const deta_trace_config_t *cfg, const char *instance,
                            struct deta_metrics *metrics, char *errstr, size_t errsize);
/* Exports what is queued within within_ms, then stops the thread: spans ended
 * afterwards are dropped. Returns the number of spans left unexported. */
int deta_trace_stop(int within_ms);
/* Whether tracing is on. */
bool deta_trace_enabled(void);

/* ---- spans (trace.c) ---- */

typedef enum deta_span_kind {
    DETA_SPAN_INTERNAL = 1,
    DETA_SPAN_SERVER = 2,
    DETA_SPAN_CLIENT = 3,
    DETA_SPAN_PRODUCER = 4,
    DETA_SPAN_CONSUMER = 5,
} deta_span_kind_t;

typedef struct deta_span deta_span_t;

/* A new span (NULL when tracing is off or out of memory). parent NULL: the
 * thread's current span; with neither, the root of a new trace. An invalid
 * parent (a header that did not parse) counts as none. */
deta_span_t *deta_span_begin(const char *name, deta_span_kind_t kind,
                             const deta_trace_ctx_t *parent);
/* Now, as span times are kept: Unix time in ns (CLOCK_REALTIME). */
int64_t deta_trace_now_ns(void);
/* The same, started at start_ns (Unix time in ns), for work measured before the
 * span could be made (a request, from when it arrived). */
deta_span_t *deta_span_begin_at(const char *name, deta_span_kind_t kind,
                                const deta_trace_ctx_t *parent, int64_t start_ns);
/* Attributes (the first DETA_SPAN_MAX_ATTRS kept; texts cut to fit). */
void deta_span_attr(deta_span_t *span, const char *key, const char *value);
void deta_span_attr_int(deta_span_t *span, const char *key, long long value);
/* An event at this moment with one optional text attribute (key NULL: none). */
void deta_span_event(deta_span_t *span, const char *name, const char *key, const char *value);
/* The span's outcome: ok, or an error with a message (NULL: none). Unset by default. */
void deta_span_set_error(deta_span_t *span, const char *message);
void deta_span_set_ok(deta_span_t *span);
/* Ends the span: queued for export when sampled; freed either way. If it is the
 * thread's current span, the one current before it (deta_span_enter) is again. */
void deta_span_end(deta_span_t *span);
/* The span's context (to pass on); NULL for NULL. */
const deta_trace_ctx_t *deta_span_ctx(const deta_span_t *span);

/* Makes span the thread's current span (NULL: none) and returns the one that was. */
deta_span_t *deta_span_enter(deta_span_t *span);
/* The thread's current span, NULL when none. */
deta_span_t *deta_span_current(void);
/* The current span's ids as hex (33 and 17 bytes); false when none. */
bool deta_span_current_ids(char trace_id[33], char span_id[17]);
/* The current span's context as headers: traceparent (DETA_TRACEPARENT_LEN + 1)
 * and tracestate (DETA_TRACESTATE_MAX + 1, "" when none); false when none. */
bool deta_span_current_headers(char *traceparent, char *tracestate);

/* The limits of a span's contents. */
#define DETA_SPAN_NAME_MAX 96
#define DETA_SPAN_MAX_ATTRS 12
#define DETA_SPAN_MAX_EVENTS 8

#endif
