/*
 * retention.h - rows deleted once they are older than a retention: the purge
 * that every table kept for a while needs (the inbox's claims, order-service's
 * idempotency keys), written once.
 *
 * A deta_retention_t names a table, its age column (a timestamptz) and how long
 * rows are kept. As a periodic task of the service's main loop
 * (deta_service_add_task, which calls it about once a second) it acts every
 * DETA_RETENTION_EVERY_MS: at most DETA_RETENTION_BATCHES DELETEs of
 * DETA_RETENTION_BATCH rows each, and at once again while a backlog is left.
 * Each DELETE removes by ctid what a LIMITed scan finds, so it locks a batch of
 * rows briefly; several instances purging at once only skip each other's rows.
 * A failure is logged and tried again at the next due time.
 *
 * Which scan: without a key, one of an index on the age column. With a key (a
 * column that ascends with the age, such as a bigserial primary key), the
 * batch's oldest rows by the key, of which those older than the retention go:
 * the table needs no index on its age, which every insert would write to (a
 * BRIN's ranges only widen, so once purged pages are reused every range matches
 * and the purge reads the whole table). A row whose age is out of step with its
 * key (its transaction began long before it took its number) goes when the rows
 * before it do, late by at most that transaction's length; a run ends when a
 * whole batch is too young.
 */
#ifndef DETA_RETENTION_H
#define DETA_RETENTION_H

#include <stdbool.h>
#include <stddef.h>
#include "deta/db.h"
#include "deta/err.h"
#include "deta/metrics.h"

#define DETA_RETENTION_EVERY_MS 10000
#define DETA_RETENTION_BATCH 1000 /* rows per DELETE: short row locks, short statements */
#define DETA_RETENTION_BATCHES 10 /* DELETEs per run at most: the caller's loop goes on */

typedef struct {
    const char *table;  /* an identifier of the program's own: [a-z_][a-z0-9_]* */
    const char *column; /* the rows' age, a timestamptz; same rule */
    const char *key;    /* NULL, or a column that ascends with the age; same rule */
    const char *only;   /* NULL, or SQL of the program's own (never outside text): a
                         * condition a row must meet as well to go */
    long keep_s;        /* rows older than this go; 0 keeps them for ever (in
                         * deta_retention_run; a sweep takes 0 as it is) */
    const char *what;   /* for the logs: "inbox claims", "idempotency keys" */
    const char *metric; /* counter of the rows deleted; NULL: none */
    const char *help;   /* the counter's help text */
} deta_retention_spec_t;

typedef struct deta_retention deta_retention_t;

/* Deletes at most max_rows rows of spec's table older than its keep_s seconds;
 * *purged = how many went. DETA_ERR_INVALID on a bad argument or identifier. */
deta_err_t deta_retention_purge(deta_db_t *db, const deta_retention_spec_t *spec, int max_rows,
                                long *purged, char *errstr, size_t errsize);
/* At most DETA_RETENTION_BATCHES purges of DETA_RETENTION_BATCH rows, while each
 * deletes a whole batch; *purged = how many went in all (those of the batches
 * before a failure too), *backlog (when not NULL) whether the last one still did:
 * then the caller sweeps again at once. For a caller with a schedule of its own. */
deta_err_t deta_retention_sweep(deta_db_t *db, const deta_retention_spec_t *spec, long *purged,
                                bool *backlog, char *errstr, size_t errsize);

/* The spec's strings are copied; metrics optional. NULL with errstr on a bad
 * spec (NULL, a bad identifier, a negative keep_s) or no memory. */
deta_retention_t *deta_retention_new(const deta_retention_spec_t *spec,
                                     deta_metrics_t *metrics, char *errstr, size_t errsize);
/* A deta_service_task_fn: when due, purges on db (the caller's connection,
 * outside a transaction). Does nothing with NULLs or when rows are kept for ever. */
void deta_retention_run(void *retention, deta_db_t *db);
void deta_retention_free(void *retention);

#endif
