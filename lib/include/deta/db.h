/*
 * db.h - Postgres through libpq: connections that reconnect, parameterized queries
 * only, transactions, and versioned schema migrations.
 *
 * A deta_db_t is one connection, used by one thread at a time. When the server
 * went away, the next call reconnects (once per call); if that fails the call
 * returns DETA_ERR_TRANSIENT. Errors map from SQLSTATE: 23505 (unique violation)
 * -> CONFLICT; what passes by itself -> TRANSIENT: class 08 (connection), 57P0x
 * (shutdown, starting), 57014 and 55P03 (statement and lock timeouts), 40001 and
 * 40P01 (serialization failure, deadlock), 25006 (a read-only server: a demoted
 * primary), classes 53 and 58 (out of resources, disk failing); others -> INTERNAL.
 * Every session is bounded: PG_STATEMENT_TIMEOUT_MS, PG_LOCK_TIMEOUT_MS, an idle
 * transaction ended by the server after 60 s, and TCP keepalives and
 * tcp_user_timeout on both ends, so that a vanished peer's session (and the
 * advisory locks it holds) goes within about half a minute.
 * SELECT, INSERT, UPDATE, DELETE and WITH statements run as prepared statements
 * of the connection (at most 128 distinct ones, the rest unnamed; not with
 * PG_PREPARED_STATEMENTS=off), so one whose prepared form the server lost inside
 * a transaction (DEALLOCATE ALL, a changed result type) fails TRANSIENT.
 *
 * Round trips, not SQL, are what a transaction costs the server most (waking a
 * process for each message exchange). So BEGIN, SAVEPOINT and RELEASE SAVEPOINT
 * do not go to the server when called: they are queued on the handle and sent
 * in one pipeline (one round trip) together with the next statement. Their
 * errors therefore surface as the error of that next statement (which then did
 * not run), with the same mapping; a transaction that ran nothing costs nothing
 * (commit and rollback send nothing). deta_db_conn sends what is queued first,
 * so that the raw connection shows the transaction the caller opened.
 *
 * A deta_db_pool_t hands each thread its own connection (created on first use,
 * closed when the thread exits or the pool is freed): handlers in the HTTP pool
 * and consumer threads each keep one.
 */
#ifndef DETA_DB_H
#define DETA_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <jansson.h>
#include <libpq-fe.h>
#include "deta/config.h"
#include "deta/err.h"
#include "deta/metrics.h"

typedef struct deta_db deta_db_t;
typedef struct deta_db_pool deta_db_pool_t;

/* Connects to cfg's pg_* settings. Never fails for an unreachable server: the
 * handle is returned and connects on first use. NULL only when out of memory. */
deta_db_t *deta_db_new(const deta_config_t *cfg);
void deta_db_free(deta_db_t *db);

/* Runs sql with text parameters (NULL entries are SQL NULL). On success returns
 * the result (PGRES_COMMAND_OK or PGRES_TUPLES_OK; caller PQclear()s it) and
 * *err = DETA_OK; else NULL with *err set as above and errstr filled. */
PGresult *deta_db_exec(deta_db_t *db, const char *sql, int nparams, const char *const *params,
                       deta_err_t *err, char *errstr, size_t errsize);
/* The same, for statements whose rows are not needed. */
deta_err_t deta_db_run(deta_db_t *db, const char *sql, int nparams, const char *const *params,
                       char *errstr, size_t errsize);

/* A Postgres array literal of the n texts, for an array parameter ($1::text[],
 * ::uuid[], ::int[]): {"a","b"}, every element quoted (its quotes and
 * backslashes escaped), a NULL item the element NULL, {} for none. malloc'd;
 * NULL when out of memory. */
char *deta_db_array(const char *const *items, size_t n);

/* The first column of the first row, parsed as JSON (the services build their
 * REST answers with json_build_object in SQL). DETA_ERR_NOT_FOUND when there is
 * no row; *out is a new reference on success. */
deta_err_t deta_db_query_json(deta_db_t *db, const char *sql, int nparams,
                              const char *const *params, json_t **out, char *errstr,
                              size_t errsize);

/* begin makes the connection usable (TRANSIENT when it cannot: the server is
 * unreachable) and queues BEGIN. commit sends COMMIT only when something was
 * sent in the transaction (queued RELEASEs and SAVEPOINTs are dropped: COMMIT
 * releases every savepoint); rollback drops the queue and sends ROLLBACK only
 * when something was sent. */
deta_err_t deta_db_begin(deta_db_t *db, char *errstr, size_t errsize);
deta_err_t deta_db_commit(deta_db_t *db, char *errstr, size_t errsize);
/* Never fails from the caller's view: a lost connection has rolled back anyway. */
void deta_db_rollback(deta_db_t *db);

/* Savepoints inside the transaction. name is a plain identifier
 * ([a-z_][a-z0-9_]*, at most 63 characters), else DETA_ERR_INVALID.
 * savepoint and release are queued (see above): DETA_OK says only that; a
 * failure (no transaction open, no such savepoint) is the next statement's
 * error. rollback_to undoes the work since the savepoint name: when that
 * SAVEPOINT is still queued nothing is sent (the queue is cut back to before
 * it), otherwise the queue and ROLLBACK TO SAVEPOINT go in one round trip and
 * their first error is returned. All three are TRANSIENT after the connection
 * was lost inside the transaction, until rollback. */
deta_err_t deta_db_savepoint(deta_db_t *db, const char *name, char *errstr, size_t errsize);
deta_err_t deta_db_release(deta_db_t *db, const char *name, char *errstr, size_t errsize);
deta_err_t deta_db_rollback_to(deta_db_t *db, const char *name, char *errstr, size_t errsize);

/* Asks the server, within a short timeout, whether it takes writes: false (with
 * errstr) when it is unreachable, slow, or read-only (a standby, a demoted
 * primary). */
bool deta_db_ping(deta_db_t *db, char *errstr, size_t errsize);
/* After a deta_db_exec or deta_db_run that failed DETA_ERR_CONFLICT, the unique
 * constraint (or index) the violation named, so that a caller can tell its own
 * key's from another's; "" after any other outcome of those calls. */
const char *deta_db_violated(const deta_db_t *db);
/* Which server session the handle has: a number that changes whenever the
 * connection is replaced (a reconnect after a loss, a reset). Session state
 * (advisory locks, LISTEN, SET) belongs to one value of it: a caller that holds
 * such state checks the number before relying on it. */
unsigned long deta_db_session(const deta_db_t *db);
/* The raw connection (connected, or NULL): for LISTEN/NOTIFY and the like. The
 * queued commands are sent first (a round trip when there are any); if one
 * fails the connection is still returned, its transaction aborted. */
PGconn *deta_db_conn(deta_db_t *db, char *errstr, size_t errsize);

/* Migrations: component names a set ("order-service", "outbox", "inbox"); each
 * version runs once, in its own transaction, recorded in schema_migrations
 * (component, version, name, applied_at). Concurrent instances serialize on an
 * advisory lock. Versions must ascend. */
typedef struct deta_migration {
    int version;
    const char *name;
    const char *sql; /* may hold several statements */
} deta_migration_t;

deta_err_t deta_db_migrate(deta_db_t *db, const char *component, const deta_migration_t *m,
                           size_t n, char *errstr, size_t errsize);

deta_db_pool_t *deta_db_pool_new(const deta_config_t *cfg);
/* The calling thread's connection. NULL only when out of memory. */
deta_db_t *deta_db_pool_get(deta_db_pool_t *pool);
void deta_db_pool_free(deta_db_pool_t *pool);

/* Shared connections: at most `size`, borrowed by any thread for one unit of
 * work and given back outside a transaction (no session state may outlive the
 * loan). For threads that mostly wait on something else and must not each keep
 * a connection; take() waits while all `size` are lent, at most timeout_ms.
 * NULL: none was given back in time, or out of memory. */
typedef struct deta_db_shared deta_db_shared_t;
deta_db_shared_t *deta_db_shared_new(const deta_config_t *cfg, int size);
deta_db_t *deta_db_shared_take(deta_db_shared_t *s, long timeout_ms);
void deta_db_shared_give(deta_db_shared_t *s, deta_db_t *db);
/* Connections opened so far (never more than size). */
int deta_db_shared_opened(deta_db_shared_t *s);
/* Measures every take from now on in m: deta_db_shared_wait_seconds (histogram,
 * how long a take waited for a connection, 0 when one was free) and
 * deta_db_shared_timeouts_total (takes that got none in time). Before the
 * borrowers start; m outlives s. */
void deta_db_shared_metrics(deta_db_shared_t *s, deta_metrics_t *m);
/* After every borrower has given its connection back. */
void deta_db_shared_free(deta_db_shared_t *s);

#endif
