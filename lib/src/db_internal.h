/*
 * db_internal.h - private to libdeta: what db.c lends to migrate.c beyond the
 * public deta/db.h.
 */
#ifndef DETA_DB_INTERNAL_H
#define DETA_DB_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "deta/db.h"

/* Runs sql through the simple-query protocol, so that it may hold several
 * statements (a migration), after the queued commands; DETA_OK or why not. */
deta_err_t deta_db_run_script(deta_db_t *db, const char *sql, char *errstr, size_t errsize);
/* Between a successful begin and its commit or rollback. */
bool deta_db_in_tx(const deta_db_t *db);

#endif
