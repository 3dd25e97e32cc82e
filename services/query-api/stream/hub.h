/*
 * hub.h - the open streams of one query-api instance and the one feed reader that
 * serves them (docs/console.md, "Live updates").
 *
 * A request handler opens a stream (hub_open) and returns at once; everything
 * that is then sent on it is written by the reader, a thread of its own, so what
 * one stream gets is in seq order by construction:
 *   1. where it starts (rules.h: its resume point, or reset), then
 *   2. the rows it missed (from its start up to what the reader has fanned out),
 *      a page at a time and only while its buffer is less than half full, so a
 *      long backlog never counts as a slow client, then
 *   3. live: each feed row, as the reader takes it (gap rule), to every live
 *      stream it matches, and a heartbeat comment when a stream was quiet for
 *      QUERY_STREAM_HEARTBEAT_S.
 * The reader wakes on the feed's NOTIFY (LISTEN stream_feed on a connection of
 * its own), on a stream opened, emptied or closed, and at least once a second (a
 * NOTIFY lost with a dropped connection costs a second, no more).
 *
 * Metrics: query_streams_open, query_stream_events_sent_total,
 * query_streams_dropped_total{reason="slow"|"limit"}, query_stream_delay_seconds
 * (live rows: from the row's created_at to the write into the stream).
 */
#ifndef QUERY_STREAM_HUB_H
#define QUERY_STREAM_HUB_H

#include "deta/http.h"
#include "deta/service.h"
#include "query-api/settings.h"
#include "query-api/stream/rules.h"

/* QUERY_STREAM_* (settings.h). */
typedef query_stream_settings_t hub_settings_t;

typedef struct hub hub_t;

hub_t *hub_new(deta_service_t *svc, const hub_settings_t *settings);
/* Starts the reader (after the feed's table exists). */
deta_err_t hub_start(hub_t *h, char *errstr, size_t errsize);
/* Stops the reader and lets go of the streams (the HTTP server ends them). */
void hub_free(void *h);

/* From a handler: answers resp with a stream of order_id's rows (NULL: every
 * order's), or 503 with Retry-After when QUERY_STREAM_MAX are open. */
void hub_open(hub_t *h, deta_http_resp_t *resp, const char *order_id,
              const stream_start_t *start);

#endif
