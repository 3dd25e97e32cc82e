/*
 * db.c - Postgres through libpq (see deta/db.h): connections, statements,
 * transactions and their errors. The migrations are migrate.c's, the health
 * check (ping) db_health.c's, the per-thread pool db_pool.c's.
 *
 * A deta_db_t owns one PGconn, connected lazily with PQconnectdbParams from the
 * configuration (connect_timeout 3 s, application_name = the service, so that
 * pg_stat_activity tells the services apart). Every call first makes sure the
 * connection is usable, at most one reconnect per call:
 *
 *   - a connection libpq already knows is bad is reset (PQreset);
 *   - an idle connection whose socket is readable has heard something from the
 *     server while we were not asking: usually the FATAL message and end of file
 *     of a backend that was terminated or a server that shut down. It is read
 *     (PQconsumeInput, which also queues any NOTIFY) and, if that shows the
 *     connection dead, reset before the statement is sent. So the first call after
 *     a lost connection normally succeeds instead of failing once.
 *
 * Inside a transaction a lost connection is never silently replaced: the
 * statements already run are gone, and running the rest in autocommit would
 * commit half a transaction. Calls then fail with TRANSIENT until the caller
 * rolls back (deta_db_rollback clears the state), and the next call reconnects.
 *
 * A statement is never resent after it may have reached the server: the caller
 * sees TRANSIENT and decides (its transaction decides what happened).
 *
 * Prepared statements. Sent through PQexecParams, every statement is parsed and
 * planned by the server on every call, which cost about as much server time as
 * running it. So deta_db_exec prepares each distinct statement once per
 * connection, under a name of its own ("deta_s<N>", N counting up and never
 * reused on the handle), and afterwards only binds and executes it
 * (PQexecPrepared); the server may then also keep a generic plan. Callers do not
 * change:
 *
 *   - The cache is keyed by the SQL text (a hash compared first, then strcmp),
 *     not by the pointer: some callers build their SQL in a stack buffer. It is
 *     a small array searched linearly, as it holds at most DB_STMT_MAX entries
 *     and a lookup costs nothing beside a round trip to the server.
 *   - It is bounded and never evicts: a statement past the bound runs unnamed,
 *     as before. Evicting would need a DEALLOCATE round trip, and the services
 *     have far fewer distinct statements than the bound.
 *   - Only SELECT, INSERT, UPDATE, DELETE and WITH are prepared. BEGIN, COMMIT,
 *     SAVEPOINT, LISTEN, SET, DEALLOCATE ... run as before: they gain nothing
 *     from a plan, and some cannot be prepared at all.
 *   - The statements live in the server session, so the cache belongs to the
 *     PGconn: it is emptied whenever the connection is reset, replaced or
 *     closed, and (should someone reset the raw PGconn of deta_db_conn) when the
 *     backend's pid is not the one the statements were prepared on.
 *   - The server can still lose them: DEALLOCATE ALL, or a transaction-mode
 *     pooler handing us another backend (SQLSTATE 26000: then they are all
 *     presumed gone and the whole cache is emptied), or a schema change that
 *     alters a statement's result columns ("cached plan must not change result
 *     type", 0A000: that one entry goes, DEALLOCATEd when outside a
 *     transaction). Either way the statement did not run. Outside a transaction
 *     it is prepared again and run once more; inside one the transaction is
 *     aborted anyway, so the call fails TRANSIENT and the caller's retry
 *     prepares it again.
 *   - A statement the server refuses to prepare (a syntax error, an aborted
 *     transaction) is reported exactly as PQexecParams would have reported it,
 *     and nothing is cached.
 *   - PG_PREPARED_STATEMENTS=off (for PgBouncer in transaction mode, where a
 *     session's statements do not follow it) runs everything unnamed, as
 *     before.
 *
 * Round trips. Under load most of the server's CPU goes not to the SQL but to
 * the exchanges themselves (half of it in the kernel, waking the peer of each
 * send), so a transaction should cost as few round trips as it has statements.
 * BEGIN, SAVEPOINT and RELEASE SAVEPOINT are therefore deferred: they are
 * queued on the handle (deta_db_begin still makes the connection usable first,
 * so an unreachable server fails begin as before) and go to the server with the
 * next statement, in one libpq pipeline with one sync (run_pipeline). Every
 * result is read, in order, before the call returns, and the connection always
 * leaves pipeline mode (NOTIFY and LISTEN users of deta_db_conn read the socket
 * between calls). How the rest follows:
 *
 *   - A queued command's failure makes the later ones PGRES_PIPELINE_ABORTED:
 *     the statement reports the first real failure (its SQLSTATE, mapped and
 *     worded as any other), and did not run.
 *   - A statement not yet prepared on the connection goes after the queue was
 *     sent on its own: a round trip more, once per statement and connection,
 *     which keeps the preparing path below in one place.
 *   - commit drops what is queued (nothing ran after it: RELEASEs COMMIT does
 *     anyway, BEGIN and SAVEPOINTs that guard nothing), and sends nothing at all
 *     when the transaction never sent its BEGIN; rollback drops the queue and
 *     sends ROLLBACK only when BEGIN was sent.
 *   - rollback_to of a SAVEPOINT still queued, with nothing but savepoints after
 *     it, cuts the queue back to before it (release of one does the same);
 *     otherwise the queue and ROLLBACK TO go in one pipeline.
 *   - A pipeline that could not be sent whole, or left, closes the connection:
 *     a half-sent queue must never let the rest run outside its transaction.
 *     A connection lost mid-pipeline follows the rules above (tx_lost).
 *   - Callers that send BEGIN or SAVEPOINT as text through deta_db_run are
 *     unaffected: their statements follow the queue like any other; raw users
 *     of deta_db_conn get the queue sent first, so PQtransactionStatus tells the
 *     truth.
 *   - The queue is small and fixed (DB_QUEUE_MAX); a full one is sent on its
 *     own before the next command is queued.
 */
#include "clock.h"
#include "deta/db.h"
#include "deta/db_params.h"

#include <ctype.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "db_internal.h"
#include "deta/log.h"
#include "deta/trace.h"

#define DB_IDLE_READS 4 /* bounded: notifications may keep the socket readable */
#define DB_STMT_MAX 128 /* prepared statements per connection */
#define DB_STMT_NAME_SIZE 32
#define DB_QUEUE_MAX 16 /* deferred commands; a full queue is sent on its own */
#define DB_NAME_MAX 63  /* a savepoint's name: Postgres's identifier length */

/* One statement prepared on the current connection. */
typedef struct db_stmt {
    char *sql; /* the key, owned */
    uint32_t hash; /* of sql, compared before it */
    int nparams;
    unsigned long id; /* its server-side name is deta_s<id> */
} db_stmt_t;

/* A command deferred to the next round trip (see the top of this file). */
typedef enum db_cmd_kind { DB_CMD_BEGIN, DB_CMD_SAVEPOINT, DB_CMD_RELEASE } db_cmd_kind_t;

typedef struct db_cmd {
    db_cmd_kind_t kind;
    char name[DB_NAME_MAX + 1]; /* the savepoint's; empty for BEGIN */
} db_cmd_t;

struct deta_db {
    deta_db_params_t params; /* libpq's keywords and values (db_params.c) */
    unsigned long session; /* counts the connections made: another one, another session */
    PGconn *conn;
    bool in_tx; /* between a successful begin and commit/rollback */
    bool tx_lost; /* the connection died inside that transaction */
    bool tx_sent; /* that transaction's BEGIN went to the server */
    bool prepare; /* PG_PREPARED_STATEMENTS */
    int stmt_backend; /* PQbackendPID of the session holding stmts */
    int nstmts;
    unsigned long next_stmt_id;
    db_stmt_t stmts[DB_STMT_MAX];
    int nqueued;
    db_cmd_t queue[DB_QUEUE_MAX]; /* in the order they are to run */
    deta_span_t *tx_span; /* the open transaction's span, current meanwhile (below) */
    char violated[64];    /* the constraint of the last failure's unique violation */
};

/* ---- the transaction's span (deta/trace.h) ----
 *
 * A transaction begun inside a span (a request's, a consumer's) gets a span of
 * its own, "db.transaction", current until commit or rollback, so that the
 * outbox rows it writes (deta_outbox_add) are its children and the trace shows
 * the transaction between the request and the relay's publish. A transaction
 * outside any span (migrations, periodic tasks) gets none: its rows start their
 * own traces at the relay. */
static void tx_span_begin(deta_db_t *db) {
    if (!deta_span_current())
        return;
    db->tx_span = deta_span_begin("db.transaction", DETA_SPAN_INTERNAL, NULL);
    deta_span_attr(db->tx_span, "db.system", "postgresql");
    deta_span_enter(db->tx_span);
}

static void tx_span_end(deta_db_t *db, const char *error) {
    if (!db->tx_span)
        return;
    if (error)
        deta_span_set_error(db->tx_span, error);
    deta_span_end(db->tx_span);
    db->tx_span = NULL;
}

/* ---- the prepared statements' cache (see the top of this file) ---- */

/* FNV-1a: short, and good enough to tell a few dozen statements apart. */
static uint32_t sql_hash(const char *sql) {
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)sql; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h;
}

static db_stmt_t *stmts_find(deta_db_t *db, const char *sql, uint32_t hash) {
    for (int i = 0; i < db->nstmts; i++)
        if (db->stmts[i].hash == hash && strcmp(db->stmts[i].sql, sql) == 0)
            return &db->stmts[i];
    return NULL;
}

/* Takes ownership of sql, prepared on conn as deta_s<next_stmt_id>. */
static db_stmt_t *stmts_add(deta_db_t *db, PGconn *conn, char *sql, uint32_t hash, int nparams) {
    db_stmt_t *st = &db->stmts[db->nstmts++];
    *st = (db_stmt_t){.sql = sql, .hash = hash, .nparams = nparams, .id = db->next_stmt_id++};
    db->stmt_backend = PQbackendPID(conn);
    return st;
}

static void stmts_drop(deta_db_t *db, db_stmt_t *st) {
    free(st->sql);
    *st = db->stmts[--db->nstmts];
}

/* Forgets every statement: their session is gone (or they are). */
static void stmts_clear(deta_db_t *db) {
    for (int i = 0; i < db->nstmts; i++)
        free(db->stmts[i].sql);
    db->nstmts = 0;
}

static void stmt_name(unsigned long id, char *buf, size_t size) {
    snprintf(buf, size, "deta_s%lu", id);
}

/* ---- connection ---- */

deta_db_t *deta_db_new(const deta_config_t *cfg) {
    if (!cfg)
        return NULL;
    deta_db_t *db = calloc(1, sizeof *db);
    if (!db)
        return NULL;
    deta_db_params_init(&db->params, cfg);
    db->prepare = cfg->pg_prepared_statements;
    return db;
}

void deta_db_free(deta_db_t *db) {
    if (!db)
        return;
    if (db->conn)
        PQfinish(db->conn);
    stmts_clear(db);
    tx_span_end(db, "the handle was freed inside the transaction");
    free(db);
}

/* libpq's messages end with a newline; errstr should not. */
static deta_err_t fail_with_conn(deta_db_t *db, deta_err_t err, char *errstr, size_t errsize,
                                 const char *what) {
    const char *msg = db->conn ? PQerrorMessage(db->conn) : "no connection (out of memory)";
    int len = (int)strlen(msg);
    while (len > 0 && (msg[len - 1] == '\n' || msg[len - 1] == ' '))
        len--;
    return deta_errf(err, errstr, errsize, "%s: %.*s", what, len, msg);
}

/* Server notices (NOTICE, WARNING, a dying backend's FATAL) go to our log, not
 * to stderr. */
static void log_notice(void *arg, const char *message) {
    (void)arg;
    int len = (int)strlen(message);
    while (len > 0 && message[len - 1] == '\n')
        len--;
    DETA_DEBUG("postgres: %.*s", len, message);
}

/* The keepalives, timeouts and TLS of the connection: db_params.c. */
static void open_connection(deta_db_t *db) {
    db->conn = PQconnectdbParams(db->params.keys, db->params.vals, 0);
    db->session++;
    if (db->conn)
        PQsetNoticeProcessor(db->conn, log_notice, NULL);
}

/* True when an idle connection has heard from the server unasked and, having read
 * it, libpq now knows the connection is dead. */
static bool idle_connection_died(PGconn *conn) {
    if (PQtransactionStatus(conn) != PQTRANS_IDLE)
        return false;
    /* A dying backend sends its FATAL message, then closes: two reads to see. */
    for (int i = 0; i < DB_IDLE_READS; i++) {
        struct pollfd pfd = {.fd = PQsocket(conn), .events = POLLIN};
        if (pfd.fd < 0)
            return true;
        if (poll(&pfd, 1, 0) <= 0)
            return false;
        if (!PQconsumeInput(conn) || PQstatus(conn) != CONNECTION_OK)
            return true;
    }
    return false;
}

/* A usable connection, reconnecting at most once; NULL with errstr otherwise. */
static PGconn *usable_connection(deta_db_t *db, char *errstr, size_t errsize) {
    if (db->tx_lost) {
        deta_errf(DETA_ERR_TRANSIENT, errstr, errsize,
                  "the connection was lost inside a transaction: roll back first");
        return NULL;
    }
    if (!db->conn) {
        stmts_clear(db);
        open_connection(db);
    } else if (PQstatus(db->conn) != CONNECTION_OK || idle_connection_died(db->conn)) {
        if (db->in_tx) {
            db->tx_lost = true;
            deta_errf(DETA_ERR_TRANSIENT, errstr, errsize,
                      "the connection was lost inside a transaction");
            return NULL;
        }
        stmts_clear(db);
        PQreset(db->conn);
        db->session++;
    }
    if (!db->conn || PQstatus(db->conn) != CONNECTION_OK) {
        fail_with_conn(db, DETA_ERR_TRANSIENT, errstr, errsize, "cannot connect to Postgres");
        return NULL;
    }
    return db->conn;
}

/* Closes a connection that cannot be trusted any more (a query may still be
 * running, a pipeline was left half sent); the next call opens another. */
static void drop_connection(deta_db_t *db) {
    if (db->in_tx)
        db->tx_lost = true;
    PQfinish(db->conn);
    db->conn = NULL;
    stmts_clear(db);
}

/* ---- statements ---- */

/* Which failures pass by themselves (waiting and trying again is right) and which
 * are the statement's own fault. Transient: the connection (class 08), the server
 * shutting down or starting (57P0x), a statement or lock timeout (57014, 55P03),
 * a serialization failure or deadlock (40001, 40P01), a read-only server (25006:
 * a primary demoted by a failover, until the client reaches the new one), and a
 * server short of resources or failing its disk (classes 53 and 58). */
static deta_err_t err_from_sqlstate(const char *state) {
    static const char *const transient[] = {"08",    "57P0",  "57014", "55P03", "40001",
                                            "40P01", "25006", "53",    "58"};
    if (!state || strlen(state) != 5)
        return DETA_ERR_INTERNAL;
    if (strcmp(state, "23505") == 0)
        return DETA_ERR_CONFLICT;
    for (size_t i = 0; i < sizeof transient / sizeof *transient; i++)
        if (strncmp(state, transient[i], strlen(transient[i])) == 0)
            return DETA_ERR_TRANSIENT;
    return DETA_ERR_INTERNAL;
}

/* Maps a failed (or missing) result to an error and fills errstr. */
static deta_err_t result_error(deta_db_t *db, const PGresult *res, char *errstr, size_t errsize) {
    if (db->in_tx && PQstatus(db->conn) != CONNECTION_OK)
        db->tx_lost = true;
    if (!db->conn)
        return deta_errf(DETA_ERR_TRANSIENT, errstr, errsize,
                         "Postgres connection lost: closed after a pipeline failed");
    if (!res || PQstatus(db->conn) != CONNECTION_OK)
        return fail_with_conn(db, DETA_ERR_TRANSIENT, errstr, errsize, "Postgres connection lost");
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    deta_err_t err = err_from_sqlstate(state);
    const char *constraint = PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME);
    snprintf(db->violated, sizeof db->violated, "%s",
             err == DETA_ERR_CONFLICT && constraint ? constraint : "");
    return deta_errf(err, errstr, errsize, "%s (SQLSTATE %s)", msg ? msg : "query failed",
                     state ? state : "none");
}

static bool result_ok(const PGresult *res) {
    ExecStatusType st = PQresultStatus(res);
    return res && (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK);
}

/* The kinds of statement worth a plan: SELECT, INSERT, UPDATE, DELETE, WITH. */
static bool is_preparable(const char *sql) {
    static const char *const kinds[] = {"SELECT", "INSERT", "UPDATE", "DELETE", "WITH"};
    while (isspace((unsigned char)*sql))
        sql++;
    for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++) {
        size_t n = strlen(kinds[i]);
        if (strncasecmp(sql, kinds[i], n) == 0 && !isalnum((unsigned char)sql[n]) &&
            sql[n] != '_')
            return true;
    }
    return false;
}

static PGresult *exec_unnamed(PGconn *conn, const char *sql, int nparams,
                              const char *const *params) {
    return PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
}

/* Prepares sql (owned by the caller until it succeeds) under the next name and
 * caches it. NULL when the server refused: *failed is its answer (or libpq's
 * NULL), reported like any failed statement. */
static db_stmt_t *prepare_statement(deta_db_t *db, PGconn *conn, char *sql, uint32_t hash,
                                    int nparams, PGresult **failed) {
    char name[DB_STMT_NAME_SIZE];
    stmt_name(db->next_stmt_id, name, sizeof name);
    PGresult *res = PQprepare(conn, name, sql, nparams, NULL);
    if (!result_ok(res)) {
        *failed = res;
        return NULL;
    }
    PQclear(res);
    return stmts_add(db, conn, sql, hash, nparams);
}

/* Runs sql as the connection's prepared statement, preparing it first if new.
 * Unnamed, as without the cache, when the cache is full or holds the same text
 * with another number of parameters (the caller's mistake, reported as before). */
static PGresult *exec_cached(deta_db_t *db, PGconn *conn, const char *sql, int nparams,
                             const char *const *params) {
    uint32_t hash = sql_hash(sql);
    db_stmt_t *st = stmts_find(db, sql, hash);
    if (st ? st->nparams != nparams : db->nstmts == DB_STMT_MAX)
        return exec_unnamed(conn, sql, nparams, params);
    if (!st) {
        char *key = strdup(sql);
        if (!key)
            return exec_unnamed(conn, sql, nparams, params);
        PGresult *failed = NULL;
        st = prepare_statement(db, conn, key, hash, nparams, &failed);
        if (!st) {
            free(key);
            return failed;
        }
    }
    char name[DB_STMT_NAME_SIZE];
    stmt_name(st->id, name, sizeof name);
    return PQexecPrepared(conn, name, nparams, params, NULL, NULL, 0);
}

static bool has_sqlstate(const PGresult *res, const char *want) {
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    return state && strcmp(state, want) == 0;
}

/* 0A000 is any unsupported feature; this one is the plan cache's. The function
 * name is checked too as the message may be translated (lc_messages). */
static bool result_type_changed(const PGresult *res) {
    if (!has_sqlstate(res, "0A000"))
        return false;
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    const char *fn = PQresultErrorField(res, PG_DIAG_SOURCE_FUNCTION);
    return (msg && strstr(msg, "cached plan must not change result type")) ||
           (fn && strcmp(fn, "RevalidateCachedQuery") == 0);
}

/* The server no longer has (a usable form of) our prepared statement: it did
 * not run. */
static bool statement_lost(const PGresult *res) {
    return has_sqlstate(res, "26000") || result_type_changed(res);
}

/* Drops what the failure res shows stale: every statement when the server lost
 * one by name (they went together: DEALLOCATE ALL, another backend), else the
 * one statement whose result changed, DEALLOCATEd when outside a transaction
 * (inside, the aborted transaction refuses it; the name stays unused until the
 * session ends). */
static void forget_lost(deta_db_t *db, PGconn *conn, const char *sql, const PGresult *res) {
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    bool all = has_sqlstate(res, "26000");
    DETA_WARN("postgres: %s: preparing again%s", msg ? msg : "prepared statement lost",
              all ? " (behind a transaction-mode pooler, set PG_PREPARED_STATEMENTS=off)" : "");
    if (all) {
        stmts_clear(db);
        return;
    }
    db_stmt_t *st = stmts_find(db, sql, sql_hash(sql));
    if (!st)
        return;
    if (PQtransactionStatus(conn) == PQTRANS_IDLE) {
        char cmd[DB_STMT_NAME_SIZE + 16] = "DEALLOCATE ";
        stmt_name(st->id, cmd + strlen(cmd), sizeof cmd - strlen(cmd));
        PQclear(PQexec(conn, cmd));
    }
    stmts_drop(db, st);
}

/* Whether the cache is still of this session (see the top of this file). */
static void stmts_check_backend(deta_db_t *db, PGconn *conn) {
    if (db->nstmts > 0 && PQbackendPID(conn) != db->stmt_backend)
        stmts_clear(db);
}

/* ---- deferred commands and pipelines (see the top of this file) ---- */

static void cmd_sql(const db_cmd_t *cmd, char *buf, size_t size) {
    switch (cmd->kind) {
    case DB_CMD_BEGIN:
        snprintf(buf, size, "BEGIN");
        break;
    case DB_CMD_SAVEPOINT:
        snprintf(buf, size, "SAVEPOINT %s", cmd->name);
        break;
    case DB_CMD_RELEASE:
        snprintf(buf, size, "RELEASE SAVEPOINT %s", cmd->name);
        break;
    }
}

/* The statement that ends a pipeline: by its prepared name, or unnamed. */
typedef struct db_final {
    const char *sql;
    const char *prepared; /* its server-side name, or NULL */
    int nparams;
    const char *const *params;
} db_final_t;

static bool send_final(PGconn *conn, const db_final_t *f) {
    if (f->prepared)
        return PQsendQueryPrepared(conn, f->prepared, f->nparams, f->params, NULL, NULL, 0);
    return PQsendQueryParams(conn, f->sql, f->nparams, NULL, f->params, NULL, NULL, 0);
}

/* Sends the queued commands in order; false when libpq refused one. */
static bool send_queue(deta_db_t *db, PGconn *conn) {
    for (int i = 0; i < db->nqueued; i++) {
        char sql[DB_NAME_MAX + 32];
        cmd_sql(&db->queue[i], sql, sizeof sql);
        if (db->queue[i].kind == DB_CMD_BEGIN)
            db->tx_sent = true; /* from here on it may have reached the server */
        if (!PQsendQueryParams(conn, sql, 0, NULL, NULL, NULL, NULL, 0))
            return false;
    }
    return true;
}

/* Keeps in *report the result to report: the first failure, else the latest. */
static void keep_result(PGresult **report, PGresult *res) {
    if (*report && !result_ok(*report)) {
        PQclear(res);
        return;
    }
    PQclear(*report);
    *report = res;
}

/* Reads the results of the n queries of a pipeline and its sync (or, the
 * connection lost, libpq's error in the sync's place). A failing query makes the
 * later ones PGRES_PIPELINE_ABORTED: the first failure is what is returned. NULL
 * when the connection failed before every query had answered. */
static PGresult *read_pipeline(PGconn *conn, int n) {
    PGresult *report = NULL, *res;
    bool complete = true;
    for (int i = 0; i < n && complete; i++) {
        res = PQgetResult(conn);
        complete = res != NULL;
        for (; res; res = PQgetResult(conn))
            keep_result(&report, res);
    }
    while ((res = PQgetResult(conn)) != NULL) {
        if (PQresultStatus(res) == PGRES_PIPELINE_SYNC) {
            PQclear(res);
            break;
        }
        keep_result(&report, res);
    }
    if (!complete && result_ok(report)) {
        PQclear(report);
        report = NULL;
    }
    return report;
}

/* Sends the queue, then final (NULL: the queue alone), in one pipeline with one
 * sync: one round trip. Returns the first failure, else the last result; NULL
 * when the connection failed. Never leaves the connection in pipeline mode: one
 * that cannot leave it, or that could not be sent the whole pipeline, is closed
 * (a half-sent queue must not let the rest run outside its transaction). */
static PGresult *run_pipeline(deta_db_t *db, PGconn *conn, const db_final_t *final) {
    int n = db->nqueued + (final ? 1 : 0);
    bool sent = PQenterPipelineMode(conn) && send_queue(db, conn);
    db->nqueued = 0;
    sent = sent && (!final || send_final(conn, final)) && PQpipelineSync(conn);
    PGresult *report = sent ? read_pipeline(conn, n) : NULL;
    if (!sent || !PQexitPipelineMode(conn)) {
        PQclear(report);
        report = NULL;
        drop_connection(db);
    }
    return report;
}

/* Sends the queued commands on their own (one round trip), if there are any. */
static deta_err_t flush_queue(deta_db_t *db, PGconn *conn, char *errstr, size_t errsize) {
    if (db->nqueued == 0)
        return DETA_OK;
    PGresult *res = run_pipeline(db, conn, NULL);
    deta_err_t err = result_ok(res) ? DETA_OK : result_error(db, res, errstr, errsize);
    PQclear(res);
    return err;
}

/* sql after the queued commands, in one pipeline. A statement still to be
 * prepared goes the usual way after the queue was sent on its own: a round
 * trip more, on its first use on the connection only. */
static PGresult *exec_after_queue(deta_db_t *db, PGconn *conn, const char *sql, int nparams,
                                  const char *const *params, bool prepared) {
    char name[DB_STMT_NAME_SIZE];
    db_final_t final = {.sql = sql, .nparams = nparams, .params = params};
    if (prepared) {
        db_stmt_t *st = stmts_find(db, sql, sql_hash(sql));
        if (!st && db->nstmts < DB_STMT_MAX) {
            PGresult *res = run_pipeline(db, conn, NULL);
            if (!result_ok(res))
                return res;
            PQclear(res);
            return exec_cached(db, conn, sql, nparams, params);
        }
        if (st && st->nparams == nparams) {
            stmt_name(st->id, name, sizeof name);
            final.prepared = name;
        }
    }
    return run_pipeline(db, conn, &final);
}

/* Runs one statement, after the queued commands, prepared when it should be.
 * *lost_in_tx: it failed only because its prepared form was lost inside a
 * transaction (see forget_lost). */
static PGresult *run_statement(deta_db_t *db, PGconn *conn, const char *sql, int nparams,
                               const char *const *params, bool *lost_in_tx) {
    *lost_in_tx = false;
    bool prepared = db->prepare && is_preparable(sql);
    if (prepared)
        stmts_check_backend(db, conn);
    PGresult *res;
    if (db->nqueued > 0)
        res = exec_after_queue(db, conn, sql, nparams, params, prepared);
    else if (prepared)
        res = exec_cached(db, conn, sql, nparams, params);
    else
        res = exec_unnamed(conn, sql, nparams, params);
    if (!prepared || !statement_lost(res))
        return res;
    forget_lost(db, conn, sql, res);
    if (PQtransactionStatus(conn) != PQTRANS_IDLE) {
        *lost_in_tx = true;
        return res;
    }
    PQclear(res);
    return exec_cached(db, conn, sql, nparams, params);
}

/* The error of a statement that run_statement could not run again. */
static deta_err_t lost_error(const PGresult *res, char *errstr, size_t errsize) {
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    return deta_errf(DETA_ERR_TRANSIENT, errstr, errsize,
                     "%s (SQLSTATE %s): the prepared statement was lost inside the"
                     " transaction; retry it",
                     msg ? msg : "prepared statement lost", state ? state : "none");
}

PGresult *deta_db_exec(deta_db_t *db, const char *sql, int nparams, const char *const *params,
                       deta_err_t *err, char *errstr, size_t errsize) {
    deta_err_t dummy;
    if (!err)
        err = &dummy;
    if (!db || !sql || nparams < 0 || (nparams > 0 && !params)) {
        *err = deta_errf(DETA_ERR_INVALID, errstr, errsize, "bad arguments to deta_db_exec");
        return NULL;
    }
    db->violated[0] = '\0'; /* set again by this statement's unique violation only */
    PGconn *conn = usable_connection(db, errstr, errsize);
    if (!conn) {
        *err = DETA_ERR_TRANSIENT;
        return NULL;
    }
    bool lost_in_tx;
    PGresult *res = run_statement(db, conn, sql, nparams, params, &lost_in_tx);
    if (result_ok(res)) {
        *err = DETA_OK;
        return res;
    }
    *err = lost_in_tx ? lost_error(res, errstr, errsize) : result_error(db, res, errstr, errsize);
    PQclear(res);
    return NULL;
}

deta_err_t deta_db_run(deta_db_t *db, const char *sql, int nparams, const char *const *params,
                       char *errstr, size_t errsize) {
    deta_err_t err;
    PGresult *res = deta_db_exec(db, sql, nparams, params, &err, errstr, errsize);
    PQclear(res);
    return err;
}

deta_err_t deta_db_run_script(deta_db_t *db, const char *sql, char *errstr, size_t errsize) {
    PGconn *conn = usable_connection(db, errstr, errsize);
    if (!conn)
        return DETA_ERR_TRANSIENT;
    deta_err_t queued = flush_queue(db, conn, errstr, errsize);
    if (queued != DETA_OK)
        return queued;
    PGresult *res = PQexec(conn, sql);
    deta_err_t err = result_ok(res) ? DETA_OK : result_error(db, res, errstr, errsize);
    PQclear(res);
    return err;
}

/* ---- transactions ---- */

deta_err_t deta_db_query_json(deta_db_t *db, const char *sql, int nparams,
                              const char *const *params, json_t **out, char *errstr,
                              size_t errsize) {
    deta_err_t err;
    *out = NULL;
    PGresult *res = deta_db_exec(db, sql, nparams, params, &err, errstr, errsize);
    if (!res)
        return err;
    if (PQntuples(res) == 0 || PQnfields(res) == 0 || PQgetisnull(res, 0, 0)) {
        PQclear(res);
        return deta_errf(DETA_ERR_NOT_FOUND, errstr, errsize, "no such row");
    }
    json_error_t jerr;
    *out = json_loads(PQgetvalue(res, 0, 0), JSON_DECODE_ANY, &jerr);
    PQclear(res);
    if (!*out)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "row is not JSON: %s", jerr.text);
    return DETA_OK;
}

/* Queues a command; a full queue is sent on its own first. */
static deta_err_t queue_push(deta_db_t *db, db_cmd_kind_t kind, const char *name, char *errstr,
                             size_t errsize) {
    if (db->nqueued == DB_QUEUE_MAX) {
        PGconn *conn = usable_connection(db, errstr, errsize);
        if (!conn)
            return DETA_ERR_TRANSIENT;
        deta_err_t err = flush_queue(db, conn, errstr, errsize);
        if (err != DETA_OK)
            return err;
    }
    db_cmd_t *cmd = &db->queue[db->nqueued++];
    cmd->kind = kind;
    snprintf(cmd->name, sizeof cmd->name, "%s", name ? name : "");
    return DETA_OK;
}

static int last_queued_savepoint(const deta_db_t *db, const char *name) {
    for (int i = db->nqueued - 1; i >= 0; i--)
        if (db->queue[i].kind == DB_CMD_SAVEPOINT && strcmp(db->queue[i].name, name) == 0)
            return i;
    return -1;
}

/* Whether the RELEASE queue[i] names a SAVEPOINT queued after queue[from]. */
static bool releases_one_after(const deta_db_t *db, int from, int i) {
    for (int j = from + 1; j < i; j++)
        if (db->queue[j].kind == DB_CMD_SAVEPOINT &&
            strcmp(db->queue[j].name, db->queue[i].name) == 0)
            return true;
    return false;
}

/* Where the last queued SAVEPOINT name is, when cutting the queue back to
 * before it does what ROLLBACK TO or RELEASE of it would: inside a
 * transaction, and followed only by SAVEPOINTs and RELEASEs of those (no
 * statement ran after it: it would have been sent with it). -1 otherwise. */
static int droppable_savepoint(const deta_db_t *db, const char *name) {
    int at = db->in_tx ? last_queued_savepoint(db, name) : -1;
    for (int i = at + 1; at >= 0 && i < db->nqueued; i++) {
        db_cmd_kind_t kind = db->queue[i].kind;
        if (kind == DB_CMD_BEGIN || (kind == DB_CMD_RELEASE && !releases_one_after(db, at, i)))
            return -1;
    }
    return at;
}

/* [a-z_][a-z0-9_]*, at most DB_NAME_MAX: safe to put in SQL as it is. */
static bool is_plain_name(const char *name) {
    if (!name || !*name || strlen(name) > DB_NAME_MAX || isdigit((unsigned char)*name))
        return false;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
            return false;
    return true;
}

static deta_err_t check_savepoint(const deta_db_t *db, const char *name, char *errstr,
                                  size_t errsize) {
    if (!db)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "no database handle");
    if (!is_plain_name(name))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "a savepoint's name is [a-z_][a-z0-9_]*, at most %d characters",
                         DB_NAME_MAX);
    if (db->tx_lost)
        return deta_errf(DETA_ERR_TRANSIENT, errstr, errsize,
                         "the connection was lost inside a transaction: roll back first");
    return DETA_OK;
}

deta_err_t deta_db_savepoint(deta_db_t *db, const char *name, char *errstr, size_t errsize) {
    deta_err_t err = check_savepoint(db, name, errstr, errsize);
    return err ? err : queue_push(db, DB_CMD_SAVEPOINT, name, errstr, errsize);
}

deta_err_t deta_db_release(deta_db_t *db, const char *name, char *errstr, size_t errsize) {
    deta_err_t err = check_savepoint(db, name, errstr, errsize);
    if (err)
        return err;
    int at = droppable_savepoint(db, name);
    if (at >= 0) {
        db->nqueued = at; /* never sent, nothing ran since: as if never made */
        return DETA_OK;
    }
    return queue_push(db, DB_CMD_RELEASE, name, errstr, errsize);
}

deta_err_t deta_db_rollback_to(deta_db_t *db, const char *name, char *errstr, size_t errsize) {
    deta_err_t err = check_savepoint(db, name, errstr, errsize);
    if (err)
        return err;
    int at = droppable_savepoint(db, name);
    if (at >= 0) {
        db->nqueued = at;
        return DETA_OK;
    }
    char sql[DB_NAME_MAX + 32];
    snprintf(sql, sizeof sql, "ROLLBACK TO SAVEPOINT %s", name);
    return deta_db_run(db, sql, 0, NULL, errstr, errsize);
}

deta_err_t deta_db_begin(deta_db_t *db, char *errstr, size_t errsize) {
    if (!db)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "no database handle");
    if (db->in_tx)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "a transaction is already open");
    /* Nothing is sent, but an unreachable server fails here, as callers expect. */
    if (!usable_connection(db, errstr, errsize))
        return DETA_ERR_TRANSIENT;
    deta_err_t err = queue_push(db, DB_CMD_BEGIN, NULL, errstr, errsize);
    if (err == DETA_OK) {
        db->in_tx = true;
        db->tx_sent = false;
        tx_span_begin(db);
    }
    return err;
}

deta_err_t deta_db_commit(deta_db_t *db, char *errstr, size_t errsize) {
    if (!db)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "no database handle");
    if (!db->in_tx)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "no transaction is open");
    /* What is queued has no statement after it: BEGIN and SAVEPOINTs that
     * guard nothing, RELEASEs that COMMIT does anyway. */
    db->nqueued = 0;
    if (db->tx_lost) {
        db->in_tx = db->tx_lost = db->tx_sent = false;
        tx_span_end(db, "the connection was lost inside the transaction");
        return deta_errf(DETA_ERR_TRANSIENT, errstr, errsize,
                         "the connection was lost inside the transaction: nothing committed");
    }
    if (!db->tx_sent) {
        db->in_tx = false; /* nothing ran: nothing to commit */
        tx_span_end(db, NULL);
        return DETA_OK;
    }
    /* COMMIT of an aborted transaction "succeeds" as a ROLLBACK: report that. */
    bool aborted = PQtransactionStatus(db->conn) == PQTRANS_INERROR;
    deta_err_t err = deta_db_run(db, "COMMIT", 0, NULL, errstr, errsize);
    db->in_tx = db->tx_lost = db->tx_sent = false;
    if (err == DETA_OK && aborted)
        err = deta_errf(DETA_ERR_INTERNAL, errstr, errsize,
                        "the transaction had failed: it was rolled back");
    tx_span_end(db, err == DETA_OK ? NULL : "commit failed");
    return err;
}

void deta_db_rollback(deta_db_t *db) {
    if (!db)
        return;
    db->nqueued = 0;
    if (db->in_tx && db->tx_sent && !db->tx_lost && db->conn &&
        PQstatus(db->conn) == CONNECTION_OK) {
        PGresult *res = PQexec(db->conn, "ROLLBACK");
        PQclear(res);
    }
    db->in_tx = db->tx_lost = db->tx_sent = false;
    tx_span_end(db, "rolled back");
}

bool deta_db_in_tx(const deta_db_t *db) { return db->in_tx; }

bool deta_db_tx_aborted(const deta_db_t *db) {
    return db->in_tx && (db->tx_lost || (db->tx_sent && db->conn &&
                                         PQtransactionStatus(db->conn) == PQTRANS_INERROR));
}

const char *deta_db_violated(const deta_db_t *db) { return db ? db->violated : ""; }

unsigned long deta_db_session(const deta_db_t *db) {
    return db ? db->session : 0;
}

PGconn *deta_db_conn(deta_db_t *db, char *errstr, size_t errsize) {
    if (!db) {
        deta_errf(DETA_ERR_INVALID, errstr, errsize, "no database handle");
        return NULL;
    }
    PGconn *conn = usable_connection(db, errstr, errsize);
    if (!conn || db->nqueued == 0)
        return conn;
    /* The caller may look at the session (PQtransactionStatus): what is queued
     * goes first. A command that failed has aborted the transaction, which the
     * caller's next statement reports; only a lost connection is NULL here. */
    char why[256] = "";
    if (flush_queue(db, conn, why, sizeof why) != DETA_OK) {
        if (!db->conn || PQstatus(db->conn) != CONNECTION_OK) {
            deta_errf(DETA_ERR_TRANSIENT, errstr, errsize, "%s", why);
            return NULL;
        }
        DETA_WARN("postgres: a queued command failed: %s", why);
    }
    return db->conn;
}

/* ---- lent to db_health.c (db_internal.h) ---- */

PGconn *deta_db_usable_connection(deta_db_t *db, char *errstr, size_t errsize) {
    return usable_connection(db, errstr, errsize);
}

deta_err_t deta_db_fail_with_conn(deta_db_t *db, deta_err_t err, char *errstr, size_t errsize,
                                  const char *what) {
    return fail_with_conn(db, err, errstr, errsize, what);
}

void deta_db_drop_connection(deta_db_t *db) { drop_connection(db); }
