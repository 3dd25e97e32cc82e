/*
 * log.h - structured logs: one JSON object per line on stdout.
 *
 *   {"time":"2026-11-25T12:38:05.123Z","level":"info","service":"order-service",
 *    "message":"order created","orderId":"...","correlationId":"..."}
 *
 * orderId and correlationId appear only when given; trace_id and span_id (hex)
 * only inside a span (deta/trace.h). Lines are written whole
 * (thread-safe, never interleaved) and flushed.
 */
#ifndef DETA_LOG_H
#define DETA_LOG_H

#include <stdbool.h>

typedef enum deta_log_level {
    DETA_LOG_DEBUG = 0,
    DETA_LOG_INFO,
    DETA_LOG_WARN,
    DETA_LOG_ERROR,
} deta_log_level_t;

/* "debug", "info", "warn", "error"; false when name is none of them. */
bool deta_log_level_parse(const char *name, deta_log_level_t *out);

/* Before any deta_log: the service name and the lowest level written. */
void deta_log_init(const char *service, deta_log_level_t min_level);

void deta_log(deta_log_level_t level, const char *order_id, const char *correlation_id,
              const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Where a line's trace_id and span_id come from: tracing (deta/trace.h) sets
 * the thread's current span's ids when it starts; fn returns false outside a
 * span. NULL (the default): none. */
typedef bool (*deta_log_ids_fn)(char trace_id[33], char span_id[17]);
void deta_log_set_trace_ids(deta_log_ids_fn fn);

#define DETA_DEBUG(...) deta_log(DETA_LOG_DEBUG, NULL, NULL, __VA_ARGS__)
#define DETA_INFO(...) deta_log(DETA_LOG_INFO, NULL, NULL, __VA_ARGS__)
#define DETA_WARN(...) deta_log(DETA_LOG_WARN, NULL, NULL, __VA_ARGS__)
#define DETA_ERROR(...) deta_log(DETA_LOG_ERROR, NULL, NULL, __VA_ARGS__)

#endif
