/*
 * http_stream.h - long-lived streamed answers (Server-Sent Events and the like)
 * from libdeta's HTTP server (deta/http.h).
 *
 * A route handler answers with a stream instead of a body: deta_http_resp_stream
 * puts it into the response, and the handler returns as usual. The server then
 * sends the status and headers, and afterwards whatever is written into the stream
 * with deta_http_stream_write, from any thread, for as long as both ends keep it
 * open.
 *
 * An idle stream holds no thread: when nothing is waiting to be sent its
 * connection is suspended (libmicrohttpd's suspend/resume), and a write resumes
 * it. What waits for the client is bounded: a write that would take the bytes
 * waiting past buffer_limit is refused (DETA_HTTP_STREAM_DROPPED) and the
 * stream is dropped at once (its bytes are freed; the connection closes as soon as
 * the server gets to it). While suspended the server cannot notice that the client
 * went away; the next write (a heartbeat) finds out.
 *
 * When the server stops (deta_http_server_quiesce or _free) every stream is ended:
 * what was written is still sent, then the answer ends and the connection closes.
 *
 * References: the handler gets one reference and the server holds another until
 * the connection is done; each side drops its own (deta_http_stream_release).
 */
#ifndef DETA_HTTP_STREAM_H
#define DETA_HTTP_STREAM_H

#include <stdbool.h>
#include <stddef.h>

#include "deta/http.h"

typedef struct deta_http_stream deta_http_stream_t;

typedef struct deta_http_stream_opts {
    const char *content_type; /* static string, e.g. "text/event-stream" */
    size_t buffer_limit;      /* bytes that may wait for the client; > 0 */
    /* Optional: called (from a server thread, with no lock of the stream held)
     * when the stream's buffer ran empty or the stream closed: a writer that paces
     * itself (or reaps closed streams) wakes up on it. Must be short. */
    void (*notify)(void *opaque);
    void *opaque;
} deta_http_stream_opts_t;

/* Makes resp a 200 streamed answer (Cache-Control: no-store) and returns the
 * stream, with one reference for the caller; NULL (resp then a 500) when out of
 * memory. */
deta_http_stream_t *deta_http_resp_stream(deta_http_resp_t *resp,
                                          const deta_http_stream_opts_t *opts);

typedef enum deta_http_stream_status {
    DETA_HTTP_STREAM_OK = 0,
    DETA_HTTP_STREAM_DROPPED, /* this write would have passed buffer_limit: dropped now */
    DETA_HTTP_STREAM_CLOSED,  /* ended or gone already: nothing written */
} deta_http_stream_status_t;

/* Queues len bytes for the client (thread-safe). */
deta_http_stream_status_t deta_http_stream_write(deta_http_stream_t *s, const char *data,
                                                 size_t len);
/* Bytes written and not yet handed to the connection. */
size_t deta_http_stream_pending(deta_http_stream_t *s);
/* True once the stream was ended, dropped or its connection is done. */
bool deta_http_stream_closed(deta_http_stream_t *s);
/* Ends the stream from the server's side: what is queued is still sent. */
void deta_http_stream_end(deta_http_stream_t *s);
/* Drops the caller's reference. NULL is fine. */
void deta_http_stream_release(deta_http_stream_t *s);

#endif
