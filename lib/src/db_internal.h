/*
 * db_internal.h - private to libdeta: what db.c lends to migrate.c and
 * db_health.c beyond the public deta/db.h.
 */
#ifndef DETA_DB_INTERNAL_H
#define DETA_DB_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include <libpq-fe.h>

#include "deta/db.h"

/* Runs sql through the simple-query protocol, so that it may hold several
 * statements (a migration), after the queued commands; DETA_OK or why not. */
deta_err_t deta_db_run_script(deta_db_t *db, const char *sql, char *errstr, size_t errsize);
/* Between a successful begin and its commit or rollback. */
bool deta_db_in_tx(const deta_db_t *db);
/* In a transaction that a failed statement aborted (Postgres refuses everything
 * else until the rollback), or that lost its connection; no I/O. */
bool deta_db_tx_aborted(const deta_db_t *db);

/* The handle's connection, reconnected first when it died (at most one
 * reconnect); NULL with errstr when Postgres cannot be reached. */
PGconn *deta_db_usable_connection(deta_db_t *db, char *errstr, size_t errsize);
/* err with errstr "what: <libpq's message>". */
deta_err_t deta_db_fail_with_conn(deta_db_t *db, deta_err_t err, char *errstr, size_t errsize,
                                  const char *what);
/* Closes a connection that cannot be trusted (a query may still be running);
 * the next call opens another. */
void deta_db_drop_connection(deta_db_t *db);

#endif
