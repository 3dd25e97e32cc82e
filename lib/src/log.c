/*
 * log.c - structured logs, one JSON object per line on stdout (see deta/log.h).
 *
 * Design: the line is built by jansson (so quoting and escaping are never done
 * by hand) and written under one process-wide mutex with a flush, so lines from
 * different threads never interleave and a crash loses at most the line being
 * written. The message is formatted with vsnprintf into a fixed buffer: a huge
 * message is cut (and marked with "...") rather than allocated. Log text often
 * quotes untrusted input, and jansson refuses strings that are not UTF-8, so
 * every string is cleaned first: bytes that do not form valid UTF-8 (including a
 * sequence cut by the truncation) become '?'. A log call therefore never fails
 * silently because of what it was asked to say.
 *
 * Before deta_log_init the service is "unknown" and the level filter is info.
 * A line written inside a span (the thread's current span, deta/trace.h) carries
 * "trace_id" and "span_id", so that logs and traces join.
 */
#include "deta/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "deta/envelope.h"

#define LOG_MSG_MAX 4096   /* longest message kept, in bytes */
#define LOG_ID_MAX 128     /* longest orderId / correlationId kept */
#define LOG_SERVICE_MAX 64 /* longest service name kept */

static const char *const level_names[] = {"debug", "info", "warn", "error"};

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_int log_min_level = DETA_LOG_INFO;
static char log_service[LOG_SERVICE_MAX] = "unknown";
static _Atomic(deta_log_ids_fn) log_trace_ids; /* NULL: none */

void deta_log_set_trace_ids(deta_log_ids_fn fn) { atomic_store(&log_trace_ids, fn); }

bool deta_log_level_parse(const char *name, deta_log_level_t *out) {
    if (!name)
        return false;
    for (int i = DETA_LOG_DEBUG; i <= DETA_LOG_ERROR; i++) {
        if (strcasecmp(name, level_names[i]) == 0) {
            *out = (deta_log_level_t)i;
            return true;
        }
    }
    return false;
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when s does not start
 * one: stray continuation bytes, overlong forms, surrogates, > U+10FFFF. */
static size_t utf8_seq_len(const unsigned char *s) {
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        lo = c == 0xE0 ? 0xA0 : 0x80; /* no overlong forms */
        hi = c == 0xED ? 0x9F : 0xBF; /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        lo = c == 0xF0 ? 0x90 : 0x80; /* no overlong forms */
        hi = c == 0xF4 ? 0x8F : 0xBF; /* nothing above U+10FFFF */
    } else {
        return 0;
    }
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return len;
}

/* Copies src into dst (dstsize > 0) as valid UTF-8, '?' for each bad byte,
 * stopping before a sequence that would not fit. */
static void copy_utf8(char *dst, size_t dstsize, const char *src) {
    const unsigned char *s = (const unsigned char *)src;
    size_t n = 0;
    while (*s) {
        size_t len = utf8_seq_len(s);
        const unsigned char *from = len ? s : (const unsigned char *)"?";
        size_t take = len ? len : 1;
        if (n + take >= dstsize)
            break;
        memcpy(dst + n, from, take);
        n += take;
        s += take;
    }
    dst[n] = '\0';
}

void deta_log_init(const char *service, deta_log_level_t min_level) {
    pthread_mutex_lock(&log_lock);
    copy_utf8(log_service, sizeof log_service, service && *service ? service : "unknown");
    pthread_mutex_unlock(&log_lock);
    atomic_store(&log_min_level, (int)min_level);
}

/* The message, formatted, bounded and cleaned, into out (LOG_MSG_MAX + 4). */
static void format_message(char *out, const char *fmt, va_list ap) {
    char raw[LOG_MSG_MAX];
    int n = vsnprintf(raw, sizeof raw, fmt, ap);
    if (n < 0) {
        strcpy(out, "(unformattable log message)");
        return;
    }
    copy_utf8(out, LOG_MSG_MAX, raw);
    if ((size_t)n >= sizeof raw)
        strcat(out, "...");
}

static bool add_text(json_t *obj, const char *key, const char *text, size_t max) {
    char clean[LOG_MSG_MAX + 4];
    copy_utf8(clean, max < sizeof clean ? max : sizeof clean, text);
    return json_object_set_new(obj, key, json_string(clean)) == 0;
}

/* The whole line as JSON text (malloc'd), or NULL when out of memory. */
static char *build_line(deta_log_level_t level, const char *order_id,
                        const char *correlation_id, const char *message) {
    char now[DETA_TS_LEN];
    deta_timestamp_now(now);
    json_t *j = json_object();
    if (!j)
        return NULL;
    pthread_mutex_lock(&log_lock);
    bool ok = add_text(j, "time", now, sizeof now) &&
              add_text(j, "level", level_names[level], 16) &&
              add_text(j, "service", log_service, sizeof log_service) &&
              json_object_set_new(j, "message", json_string(message)) == 0;
    pthread_mutex_unlock(&log_lock);
    if (ok && order_id)
        ok = add_text(j, "orderId", order_id, LOG_ID_MAX);
    if (ok && correlation_id)
        ok = add_text(j, "correlationId", correlation_id, LOG_ID_MAX);
    char trace_id[33], span_id[17];
    deta_log_ids_fn ids = atomic_load(&log_trace_ids);
    if (ok && ids && ids(trace_id, span_id)) /* inside a span (deta/trace.h) */
        ok = add_text(j, "trace_id", trace_id, sizeof trace_id) &&
             add_text(j, "span_id", span_id, sizeof span_id);
    char *line = ok ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return line;
}

static void write_line(const char *line) {
    pthread_mutex_lock(&log_lock);
    fputs(line, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    pthread_mutex_unlock(&log_lock);
}

void deta_log(deta_log_level_t level, const char *order_id, const char *correlation_id,
              const char *fmt, ...) {
    if ((int)level < DETA_LOG_DEBUG || (int)level > DETA_LOG_ERROR)
        level = DETA_LOG_ERROR;
    if ((int)level < atomic_load(&log_min_level))
        return;
    char message[LOG_MSG_MAX + 4];
    va_list ap;
    va_start(ap, fmt);
    format_message(message, fmt, ap);
    va_end(ap);
    char *line = build_line(level, order_id, correlation_id, message);
    if (!line)
        return;
    write_line(line);
    free(line);
}
