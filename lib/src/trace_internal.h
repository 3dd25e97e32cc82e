/*
 * trace_internal.h - what trace.c (spans) and otlp.c (their export) share: the
 * span's record as it is queued.
 */
#ifndef DETA_TRACE_INTERNAL_H
#define DETA_TRACE_INTERNAL_H

#include "deta/trace.h"

#define SPAN_KEY_MAX 48
#define SPAN_TEXT_MAX 160

typedef struct span_attr {
    char key[SPAN_KEY_MAX];
    bool is_int;
    long long ival;
    char sval[SPAN_TEXT_MAX];
} span_attr_t;

typedef struct span_event {
    char name[SPAN_KEY_MAX];
    int64_t time_ns;
    span_attr_t attr; /* key "" when none */
} span_event_t;

typedef enum span_status { SPAN_STATUS_UNSET = 0, SPAN_STATUS_OK = 1, SPAN_STATUS_ERROR = 2 } span_status_t;

struct deta_span {
    deta_trace_ctx_t ctx;
    uint8_t parent_id[8];
    bool has_parent;
    bool sampled; /* recorded: exported when it ends */
    deta_span_kind_t kind;
    char name[DETA_SPAN_NAME_MAX];
    int64_t start_ns, end_ns;
    span_status_t status;
    char status_message[SPAN_TEXT_MAX];
    span_attr_t attrs[DETA_SPAN_MAX_ATTRS];
    int nattrs;
    span_event_t events[DETA_SPAN_MAX_EVENTS];
    int nevents;
    int dropped_events;
    deta_span_t *prev_current; /* the thread's current span before enter */
    bool entered;
    deta_span_t **entered_on; /* the address of that thread's current-span variable */
};

/* otlp.c: the exporter. */
/* The exporter's counters in metrics (created at 0): deta_trace_spans_exported_total
 * and deta_trace_spans_dropped_total by reason. Registered with tracing off too, so
 * that every service exposes the families the alerts and the dashboard read. */
struct deta_counter;
void deta_otlp_counters(struct deta_metrics *metrics, struct deta_counter **exported,
                        struct deta_counter **dropped_full, struct deta_counter **dropped_failed);
deta_err_t deta_otlp_start(const deta_trace_config_t *cfg, const char *instance,
                           struct deta_metrics *metrics, char *errstr, size_t errsize);
/* Takes the span (frees it): queued, or dropped and counted when the queue is full. */
void deta_otlp_enqueue(deta_span_t *span);
int deta_otlp_stop(int within_ms);

/* The OTLP/HTTP JSON request body of spans[0..n) (malloc'd; NULL when out of memory). */
char *deta_otlp_encode(deta_span_t *const *spans, size_t n, const char *service_name,
                       const char *instance);

/* otlp_http.c: the POST. */
typedef struct otlp_url {
    char host[256];
    char port[8];
    char path[256];
} otlp_url_t;

/* An http:// URL; false (why says what) when it is not one. */
bool deta_otlp_url_parse(const char *url, otlp_url_t *out, char *why, size_t whysize);
/* The status code of an HTTP/1.x response's status line in buf[0..len), or 0 when
 * the status line is not complete or malformed. */
int deta_otlp_status_code(const char *buf, size_t len);
/* POSTs body as application/json within timeout_ms; the HTTP status, or 0 with why
 * when there was no answer in time. */
int deta_otlp_post(const otlp_url_t *url, const char *body, size_t len, int timeout_ms,
                   char *why, size_t whysize);

#endif
