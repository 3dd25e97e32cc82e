/*
 * sse.h - the Server-Sent Events of query-api's streams (docs/console.md, "Live
 * updates"), as pure functions: the frames sent, and the strict parse of the
 * resume point a client sends (Last-Event-ID, ?lastEventId=).
 *
 * Frames:
 *   "retry: 2000\n\n"                       first, once
 *   "id: <seq>\nevent: order\ndata: {...}\n\n"   one feed row
 *   "id: <seq>\nevent: reset\ndata: {\"seq\":<seq>}\n\n"
 *   ": heartbeat\n\n"
 * data is one line of compact JSON (jansson escapes every control character, so
 * no newline can end it early).
 */
#ifndef QUERY_STREAM_SSE_H
#define QUERY_STREAM_SSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "deta/envelope.h"
#include "deta/states.h"
#include "deta/timestamp.h"

#define SSE_RETRY_MS 2000
#define SSE_PREAMBLE "retry: 2000\n\n"
#define SSE_HEARTBEAT ": heartbeat\n\n"

/* One row of the feed (stream_feed). Strings are "" for SQL NULL. */
typedef struct feed_row {
    int64_t seq;
    char order_id[DETA_ID_MAX + 1];
    char event_id[DETA_UUID_LEN + 1];
    char event_type[DETA_ID_MAX + 1];
    char topic[DETA_ID_MAX + 1];
    char occurred_at[DETA_TS_LEN];
    char status[DETA_STATE_MAX]; /* "" sends null */
    char customer_id[DETA_ID_MAX + 1]; /* "" sends null */
    int64_t created_us; /* the row's created_at, microseconds since the epoch */
} feed_row_t;

/* The frame of one row, malloc'd (NUL-terminated, *len its length); NULL when out
 * of memory. */
char *sse_order_frame(const feed_row_t *row, size_t *len);
/* The reset frame; returns its length (< size), or 0 when it does not fit. */
size_t sse_reset_frame(int64_t seq, char *buf, size_t size);

/* A resume point as the client sends it: decimal digits only (no sign, no space),
 * at most 19 of them, and at most INT64_MAX. */
bool sse_parse_event_id(const char *text, int64_t *out);

#endif
