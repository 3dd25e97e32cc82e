/*
 * fuzz_trace_context.c - libFuzzer target of the trace context's parsers
 * (lib/src/trace_context.c) and of what the OTLP exporter reads
 * (lib/src/otlp_http.c): an input is up to four NUL-separated texts,
 *
 *   1. a traceparent header (an HTTP request's, a Kafka message's, an outbox row's);
 *   2. a tracestate header;
 *   3. an OTLP endpoint URL (OTEL_EXPORTER_OTLP_ENDPOINT);
 *   4. the first bytes of a collector's answer (its status line).
 *
 * Checks, besides memory safety:
 *   - a traceparent is accepted exactly when the rule written the plain way
 *     says so (below); an accepted one formats back to a version-00 header
 *     that parses to the same ids, and whose first 52 characters are the
 *     input's; a refused one leaves the context invalid;
 *   - a cleaned tracestate fits DETA_TRACESTATE_MAX, cleaning it again changes
 *     nothing, it has no blank at either end and no empty member; a refusal
 *     leaves "";
 *   - an accepted URL has a host, a port of 1..65535 and a path starting with
 *     '/', all without blanks;
 *   - a status code is 0 or 100..999, and not 0 only after "HTTP/1.".
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "deta/trace.h"
#include "fuzz.h"
#include "trace_internal.h"

static bool lower_hex(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

static bool zeros(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != '0')
            return false;
    return true;
}

/* The traceparent rule, the plain way. */
static bool plain_traceparent(const char *s, size_t n) {
    if (n < 55 || !lower_hex(s, 2) || memcmp(s, "ff", 2) == 0)
        return false;
    bool v00 = memcmp(s, "00", 2) == 0;
    if (v00 && n != 55)
        return false;
    if (!v00 && n > 55 && s[55] != '-')
        return false;
    return s[2] == '-' && s[35] == '-' && s[52] == '-' && lower_hex(s + 3, 32) &&
           lower_hex(s + 36, 16) && lower_hex(s + 53, 2) && !zeros(s + 3, 32) &&
           !zeros(s + 36, 16);
}

static void check_traceparent(const char *s) {
    size_t n = strlen(s);
    deta_trace_ctx_t c;
    bool ok = deta_traceparent_parse(s, n, &c);
    FUZZ_CHECK(ok == plain_traceparent(s, n));
    FUZZ_CHECK(ok == c.valid);
    if (!ok)
        return;
    char out[DETA_TRACEPARENT_LEN + 1];
    deta_traceparent_format(&c, out);
    FUZZ_CHECK(strlen(out) == DETA_TRACEPARENT_LEN);
    FUZZ_CHECK(memcmp(out, "00", 2) == 0 && memcmp(out + 2, s + 2, 50) == 0);
    deta_trace_ctx_t again;
    FUZZ_CHECK(deta_traceparent_parse(out, DETA_TRACEPARENT_LEN, &again));
    FUZZ_CHECK(memcmp(again.trace_id, c.trace_id, 16) == 0);
    FUZZ_CHECK(memcmp(again.span_id, c.span_id, 8) == 0);
    FUZZ_CHECK(again.flags == c.flags && (c.flags & ~DETA_TRACE_FLAG_SAMPLED) == 0);
}

static void check_tracestate(const char *s) {
    char out[DETA_TRACESTATE_MAX + 1], again[DETA_TRACESTATE_MAX + 1];
    bool ok = deta_tracestate_clean(s, strlen(s), out, sizeof out);
    if (!ok) {
        FUZZ_CHECK(out[0] == '\0');
        return;
    }
    size_t n = strlen(out);
    FUZZ_CHECK(n > 0 && n <= DETA_TRACESTATE_MAX);
    FUZZ_CHECK(out[0] != ' ' && out[0] != '\t' && out[0] != ',');
    FUZZ_CHECK(out[n - 1] != ' ' && out[n - 1] != '\t' && out[n - 1] != ',');
    FUZZ_CHECK(!strstr(out, ",,") && !strstr(out, ", ") && !strstr(out, " ,"));
    FUZZ_CHECK(deta_tracestate_clean(out, n, again, sizeof again));
    FUZZ_CHECK(strcmp(out, again) == 0);
}

static void check_url(const char *s) {
    otlp_url_t u;
    char why[256];
    if (!deta_otlp_url_parse(s, &u, why, sizeof why)) {
        FUZZ_CHECK(why[0] != '\0');
        return;
    }
    FUZZ_CHECK(u.host[0] != '\0' && u.path[0] == '/');
    long port = atol(u.port);
    FUZZ_CHECK(port >= 1 && port <= 65535);
    for (const char *p = u.path; *p; p++)
        FUZZ_CHECK(*p > ' ' && *p <= '~');
}

static void check_status(const char *s, size_t n) {
    int code = deta_otlp_status_code(s, n);
    FUZZ_CHECK(code == 0 || (code >= 100 && code <= 999));
    if (code)
        FUZZ_CHECK(n >= 12 && memcmp(s, "HTTP/1.", 7) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *texts[4];
    int n = fuzz_split(data, size, texts, 4);
    if (texts[0])
        check_traceparent(texts[0]);
    if (texts[1])
        check_tracestate(texts[1]);
    if (texts[2])
        check_url(texts[2]);
    if (texts[3])
        check_status(texts[3], strlen(texts[3]));
    fuzz_free(texts, n);
    return 0;
}
