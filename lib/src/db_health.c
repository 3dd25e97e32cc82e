/*
 * db_health.c - whether Postgres takes writes (deta_db_ping of deta/db.h), for
 * the services' health checks: one query on the handle's connection, answered
 * within DB_PING_TIMEOUT_MS, asking the server whether it is read-only (a
 * standby, or a primary demoted by a failover, answers but refuses every
 * write). A ping that times out drops the connection rather than wait on a
 * query that may still run; the next call opens another.
 */
#include "clock.h"
#include "deta/db.h"

#include <poll.h>
#include <string.h>

#include "db_internal.h"

#define DB_PING_TIMEOUT_MS 2000

/* Waits for the answer to PING_SQL up to timeout_ms; DB_PING_OK when the server
 * answered that it takes writes, DB_PING_READ_ONLY when it answered that it does
 * not, DB_PING_FAILED on a timeout or a failure (any results are consumed either
 * way when it succeeds). */
#define PING_SQL "SELECT current_setting('transaction_read_only')"
typedef enum { DB_PING_FAILED, DB_PING_OK, DB_PING_READ_ONLY } db_ping_t;

static db_ping_t await_ping(PGconn *conn, int timeout_ms) {
    long deadline = deta_clock_ms() + timeout_ms;
    db_ping_t got = DB_PING_FAILED;
    for (;;) {
        while (!PQisBusy(conn)) {
            PGresult *res = PQgetResult(conn);
            if (!res)
                return got;
            if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
                got = strcmp(PQgetvalue(res, 0, 0), "off") == 0 ? DB_PING_OK
                                                                 : DB_PING_READ_ONLY;
            else
                got = DB_PING_FAILED;
            PQclear(res);
        }
        long left = deadline - deta_clock_ms();
        if (left <= 0)
            return DB_PING_FAILED;
        struct pollfd pfd = {.fd = PQsocket(conn), .events = POLLIN};
        if (poll(&pfd, 1, (int)left) < 0 || !PQconsumeInput(conn))
            return DB_PING_FAILED;
    }
}

bool deta_db_ping(deta_db_t *db, char *errstr, size_t errsize) {
    if (!db) {
        deta_errf(DETA_ERR_INVALID, errstr, errsize, "no database handle");
        return false;
    }
    PGconn *conn = deta_db_usable_connection(db, errstr, errsize);
    if (!conn)
        return false;
    if (!PQsendQuery(conn, PING_SQL)) {
        deta_db_fail_with_conn(db, DETA_ERR_TRANSIENT, errstr, errsize, "ping failed");
        return false;
    }
    db_ping_t got = await_ping(conn, DB_PING_TIMEOUT_MS);
    if (got == DB_PING_OK)
        return true;
    if (got == DB_PING_READ_ONLY) {
        /* A demoted primary or a standby: reachable, but every write would fail. */
        deta_errf(DETA_ERR_TRANSIENT, errstr, errsize,
                  "Postgres answers but is read-only (a standby, or a primary demoted by a "
                  "failover)");
        return false;
    }
    deta_db_fail_with_conn(db, DETA_ERR_TRANSIENT, errstr, errsize, "ping failed or timed out");
    /* A query may still be running: drop the connection rather than wait on it. */
    deta_db_drop_connection(db);
    return false;
}
