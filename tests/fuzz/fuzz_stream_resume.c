/*
 * fuzz_stream_resume.c - libFuzzer target of query-api's resume point: the
 * Last-Event-ID header or ?lastEventId= parameter a client sends to a stream
 * (sse_parse_event_id, services/query-api/stream/sse.c), then where the stream
 * starts from it (stream_start_decide, rules.c) against feed extents taken from
 * the input's bytes. The text is copied into a heap buffer of exactly its length
 * plus the NUL, so AddressSanitizer reports a read past it; UBSan (fatal) reports
 * an overflow in the start rule's arithmetic. Checks what must hold whatever the
 * input: a text is accepted exactly when it is 1 to 19 decimal digits with a value
 * of at most 2^63-1, the value is the text's, a refused text leaves the output
 * alone, and the start's cursor is the resume point, or on a reset the newest
 * row the reader delivered.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "query-api/stream/rules.h"
#include "query-api/stream/sse.h"

/* The rule, written again the plain way. */
static int expect_valid(const char *s, size_t n, uint64_t *value) {
    if (n == 0 || n > 19)
        return 0;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *value = v;
    return v <= (uint64_t)INT64_MAX;
}

/* Up to 8 bytes as a seq (0 to 2^63-1: seqs are never negative). */
static int64_t take(const uint8_t **p, size_t *left) {
    uint64_t v = 0;
    size_t k = *left < 8 ? *left : 8;
    for (size_t i = 0; i < k; i++)
        v = (v << 8) | (*p)[i];
    *p += k;
    *left -= k;
    return (int64_t)(v >> 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    size_t len = strlen(text); /* a NUL inside ends the header's text */
    int64_t got = -7;
    bool ok = sse_parse_event_id(text, &got);
    uint64_t want = 0;
    int valid = expect_valid(text, len, &want);
    if (ok != (valid == 1) || (ok && (uint64_t)got != want) || (!ok && got != -7))
        abort();
    free(text);
    if (!ok)
        return 0;

    /* The extents from the bytes after the text's NUL (or none). */
    const uint8_t *p = data + len;
    size_t left = size - len;
    feed_extent_t e = {0};
    e.newest = take(&p, &left);
    int64_t a = take(&p, &left), b = take(&p, &left);
    e.oldest = e.newest ? (a % e.newest) + 1 : 0;
    e.delivered = (int64_t)((uint64_t)b % ((uint64_t)e.newest + 1));
    e.behind = (long)(take(&p, &left) % 20001);
    stream_start_t s = {.has_resume = true, .resume = got, .order_stream = left % 2};
    int64_t cursor = -1;
    start_verdict_t v = stream_start_decide(&s, &e, 10000, &cursor);
    if (v == START_FROM && cursor != got)
        abort();
    if (v == START_RESET && cursor != (e.delivered < e.newest ? e.delivered : e.newest))
        abort();
    return 0;
}
