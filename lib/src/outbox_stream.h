/*
 * outbox_stream.h - private to libdeta: the outbox relay's logical replication
 * connection (outbox_relay.c reads the outbox table's inserts through it).
 *
 * One libpq connection opened with replication=database to the service's own
 * database, as the service's role (it needs the REPLICATION attribute). It
 * streams one logical slot with the pgoutput plugin (protocol version 1, one
 * publication) from the slot's confirmed position: Postgres sends every
 * transaction that committed after that position, whole and in commit order.
 * Only one session can stream a slot: a second one is told the slot is in use,
 * which is how the relays of several instances elect the one that publishes.
 */
#ifndef DETA_OUTBOX_STREAM_H
#define DETA_OUTBOX_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "deta/config.h"
#include "deta/err.h"
#include "pgoutput.h"

typedef struct outbox_stream outbox_stream_t;

/* NULL only when out of memory; connects in outbox_stream_start. */
outbox_stream_t *outbox_stream_new(const deta_config_t *cfg);
void outbox_stream_free(outbox_stream_t *s);

/* Connects (when not connected) and starts streaming slot from its confirmed
 * position. DETA_OK: streaming; DETA_ERR_CONFLICT: another session streams the
 * slot (this relay stands by); DETA_ERR_TRANSIENT: the server cannot be reached
 * or refused. Unless streaming, the connection is closed (why says why). */
deta_err_t outbox_stream_start(outbox_stream_t *s, const char *slot, const char *publication,
                               char *why, size_t whysize);

/* The next CopyData message, waiting up to timeout_ms (and no longer once
 * wake_fd, when >= 0, is readable): 1 with *buf, *len set (valid until the next
 * call), 0 when nothing came in time or wake_fd woke it, -1 when the stream
 * ended or failed (why says why; the connection is closed). Once the time is up
 * (at once with timeout_ms <= 0) it still reads what has already arrived, in
 * the socket or held by TLS, so successive calls that do not wait return, one
 * by one, every message already received before they return 0. A readable
 * wake_fd wins even when messages are waiting. */
int outbox_stream_next(outbox_stream_t *s, int timeout_ms, int wake_fd, const uint8_t **buf,
                       size_t *len, char *why, size_t whysize);

/* Tells the server everything up to confirmed is done with (the slot may move
 * past it): a Standby status update; reply asks for a keepalive back. */
deta_err_t outbox_stream_status(outbox_stream_t *s, deta_lsn_t confirmed, bool reply, char *why,
                                size_t whysize);

bool outbox_stream_is_open(const outbox_stream_t *s);
void outbox_stream_close(outbox_stream_t *s);

#endif
