/*
 * sse.c - the frames of query-api's streams and the parse of a resume point
 * (sse.h). No I/O.
 */
#include "query-api/stream/sse.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static json_t *nullable(const char *s) { return s[0] ? json_string(s) : json_null(); }

char *sse_order_frame(const feed_row_t *row, size_t *len) {
    json_t *data = json_pack("{s:I,s:s,s:s,s:s,s:s,s:s,s:o,s:o}", "seq", (json_int_t)row->seq,
                             "orderId", row->order_id, "eventId", row->event_id, "eventType",
                             row->event_type, "topic", row->topic, "occurredAt",
                             row->occurred_at, "status", nullable(row->status), "customerId",
                             nullable(row->customer_id));
    char *json = data ? json_dumps(data, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(data);
    if (!json)
        return NULL;
    char *frame = NULL;
    int n = asprintf(&frame, "id: %" PRId64 "\nevent: order\ndata: %s\n\n", row->seq, json);
    free(json);
    if (n < 0)
        return NULL;
    *len = (size_t)n;
    return frame;
}

size_t sse_reset_frame(int64_t seq, char *buf, size_t size) {
    int n = snprintf(buf, size, "id: %" PRId64 "\nevent: reset\ndata: {\"seq\":%" PRId64 "}\n\n",
                     seq, seq);
    return n > 0 && (size_t)n < size ? (size_t)n : 0;
}

bool sse_parse_event_id(const char *text, int64_t *out) {
    if (!text)
        return false;
    size_t n = strlen(text);
    if (n == 0 || n > 19 || strspn(text, "0123456789") != n)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = v * 10 + (uint64_t)(text[i] - '0'); /* 19 digits cannot wrap 64 bits */
    if (v > (uint64_t)INT64_MAX)
        return false;
    *out = (int64_t)v;
    return true;
}
