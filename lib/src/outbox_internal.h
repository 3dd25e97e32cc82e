/*
 * outbox_internal.h - private to libdeta: what the outbox's files share.
 *
 *   outbox.c         the table's migrations and deta_outbox_add (writing)
 *   outbox_stream.c  the logical replication connection the relay reads
 *   outbox_relay.c   the relay: stream, publish, confirm (deta/outbox.h)
 *   outbox_park.c    rows the broker refuses for good, and their way back
 */
#ifndef DETA_OUTBOX_INTERNAL_H
#define DETA_OUTBOX_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "deta/db.h"
#include "pgoutput.h"

#define OUTBOX_PUBLICATION "deta_outbox"
#define OUTBOX_SLOT_PREFIX "deta_outbox_"

/* One outbox row in the relay's hands. The strings live in the same block as
 * the struct; traceparent and tracestate are NULL when the row has none. */
typedef struct outbox_row {
    char *id, *topic, *key, *payload, *traceparent, *tracestate;
    size_t payload_len;
    int64_t commit_ms;  /* Unix ms of its transaction's commit; 0: not known */
    deta_lsn_t end_lsn; /* on the last row of a transaction: the end of its commit */
    bool done;          /* acknowledged by the broker, or parked */
} outbox_row_t;

enum { OUTBOX_COL_ID, OUTBOX_COL_TOPIC, OUTBOX_COL_KEY, OUTBOX_COL_PAYLOAD,
       OUTBOX_COL_TRACEPARENT, OUTBOX_COL_TRACESTATE, OUTBOX_NCOLS };

/* A row from its columns' texts (vals[i] NULL: SQL NULL; lens[i] its length);
 * NULL when out of memory. free() frees it. */
outbox_row_t *outbox_row_new(const char *const vals[OUTBOX_NCOLS],
                             const size_t lens[OUTBOX_NCOLS]);

/* Row i of res, whose columns are the OUTBOX_COL_* in that order; NULL when
 * out of memory. */
outbox_row_t *outbox_row_from_result(const PGresult *res, int i);

/* ---- parked rows (outbox_park.c) ----
 *
 * A row the broker refuses for good is parked: parked_at and parked_reason
 * set. Its order's later rows are held: parked behind it, so that an order's
 * events never overtake each other. Someone who fixed the cause clears
 * parked_at (and leaves parked_reason): the relay then publishes the cleared
 * rows, in id order, and clears parked_reason once they are out. An order is
 * held as long as it has a row with a parked_reason (parked, or cleared and
 * not yet out). */
typedef struct outbox_held {
    char **keys;
    size_t n, cap;
    double parked;  /* rows parked now */
    double cleared; /* rows cleared, waiting to be published again */
} outbox_held_t;

/* Reads the held orders and the counts from the table. */
deta_err_t outbox_held_load(deta_db_t *db, outbox_held_t *h, char *why, size_t whysize);
bool outbox_held_has(const outbox_held_t *h, const char *key);
/* false when out of memory. */
bool outbox_held_add(outbox_held_t *h, const char *key);
void outbox_held_free(outbox_held_t *h);

/* Parks rows[0..n) with reason, and holds their orders. */
deta_err_t outbox_park(deta_db_t *db, outbox_held_t *h, outbox_row_t *const *rows, size_t n,
                       const char *reason, char *why, size_t whysize);

/* The rows cleared by hand, up to limit, in id order (free each, then the
 * array); *n their number. A cleared row behind a row of its order still
 * parked stays where it is: it would overtake that row. */
deta_err_t outbox_cleared_rows(deta_db_t *db, int limit, outbox_row_t ***rows, size_t *n,
                               char *why, size_t whysize);
/* Rows published again: their parked_reason cleared. */
deta_err_t outbox_cleared_done(deta_db_t *db, outbox_row_t *const *rows, size_t n, char *why,
                               size_t whysize);

/* The ids of rows[0..n) as a Postgres array literal ("{1,2}"), malloc'd; NULL
 * when out of memory. Rows not done are left out when only_done. */
char *outbox_ids_literal(outbox_row_t *const *rows, size_t n, bool only_done);

#endif
