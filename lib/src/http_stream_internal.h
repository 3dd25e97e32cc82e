/*
 * http_stream_internal.h - what http.c calls of http_stream.c (deta/http_stream.h):
 * the hook that turns a streamed answer into libmicrohttpd's response, and the
 * end of every stream when a server stops.
 */
#ifndef DETA_HTTP_STREAM_INTERNAL_H
#define DETA_HTTP_STREAM_INTERNAL_H

#include <microhttpd.h>

#include "deta/http_stream.h"

/* The response that sends s on conn; takes over the server's reference (also
 * when it fails: NULL, the stream then closed). */
struct MHD_Response *deta_http_stream_response(deta_http_stream_t *s,
                                               struct MHD_Connection *conn,
                                               const deta_http_server_t *srv);
/* Ends (and resumes) every stream of srv, and every one it opens from now on;
 * MHD_stop_daemon may then run (it must find no suspended connection). Keyed by
 * the server, not by MHD's daemon: with a thread pool a connection belongs to a
 * worker daemon, not to the one MHD_start_daemon returned. */
void deta_http_streams_stop(const deta_http_server_t *srv);
/* After MHD_stop_daemon: srv's address may be reused by another server. */
void deta_http_streams_forget(const deta_http_server_t *srv);

#endif
