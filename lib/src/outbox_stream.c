/*
 * outbox_stream.c - the relay's logical replication connection (see
 * outbox_stream.h).
 *
 * The connection takes the service's usual parameters with
 * replication=database (deta_db_params_init_replication: address,
 * credentials, TLS, keepalives; no statement or lock timeout). After START_REPLICATION the
 * connection is in COPY BOTH mode: the server's CopyData messages are read
 * without blocking (PQgetCopyData async) and waited for with poll(); the
 * relay's status updates go the other way.
 */
#include "outbox_stream.h"

#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "deta/db_params.h"

struct outbox_stream {
    deta_db_params_t params;
    PGconn *conn;
    char *frame; /* the last message handed out (PQfreemem on the next call) */
};

outbox_stream_t *outbox_stream_new(const deta_config_t *cfg) {
    outbox_stream_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    deta_db_params_init_replication(&s->params, cfg);
    return s;
}

static void drop_frame(outbox_stream_t *s) {
    if (s->frame)
        PQfreemem(s->frame);
    s->frame = NULL;
}

void outbox_stream_close(outbox_stream_t *s) {
    if (!s)
        return;
    drop_frame(s);
    if (s->conn)
        PQfinish(s->conn);
    s->conn = NULL;
}

void outbox_stream_free(outbox_stream_t *s) {
    outbox_stream_close(s);
    free(s);
}

bool outbox_stream_is_open(const outbox_stream_t *s) { return s && s->conn; }

/* The server's message, without its trailing newline. */
static void conn_error(PGconn *conn, const char *what, char *why, size_t whysize) {
    const char *msg = conn ? PQerrorMessage(conn) : "out of memory";
    size_t len = strlen(msg);
    while (len > 0 && (msg[len - 1] == '\n' || msg[len - 1] == ' '))
        len--;
    if (why && whysize)
        snprintf(why, whysize, "%s: %.*s", what, (int)len, msg);
}

deta_err_t outbox_stream_start(outbox_stream_t *s, const char *slot, const char *publication,
                               char *why, size_t whysize) {
    if (!s->conn) {
        s->conn = PQconnectdbParams(s->params.keys, s->params.vals, 0);
        if (!s->conn || PQstatus(s->conn) != CONNECTION_OK) {
            conn_error(s->conn, "cannot open the replication connection", why, whysize);
            outbox_stream_close(s);
            return DETA_ERR_TRANSIENT;
        }
    }
    /* Names are the relay's own ("deta_outbox..."), never outside input. */
    char sql[256];
    snprintf(sql, sizeof sql,
             "START_REPLICATION SLOT \"%s\" LOGICAL 0/0 (proto_version '1',"
             " publication_names '\"%s\"')",
             slot, publication);
    PGresult *res = PQexec(s->conn, sql);
    if (PQresultStatus(res) == PGRES_COPY_BOTH) {
        PQclear(res);
        if (PQsetnonblocking(s->conn, 1) != 0) {
            conn_error(s->conn, "cannot make the replication connection non-blocking", why,
                       whysize);
            outbox_stream_close(s);
            return DETA_ERR_TRANSIENT;
        }
        return DETA_OK;
    }
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    /* 55006 object_in_use: another walsender streams the slot. */
    deta_err_t err = state && strcmp(state, "55006") == 0 ? DETA_ERR_CONFLICT : DETA_ERR_TRANSIENT;
    conn_error(s->conn, "START_REPLICATION refused", why, whysize);
    PQclear(res);
    /* Even when only told the slot is in use: an open replication connection is
     * a walsender, which Postgres wakes on every WAL flush (outbox_relay.c's
     * slot_in_use). */
    outbox_stream_close(s);
    return err;
}

/* The reason the COPY ended, from the result that follows it. */
static void copy_ended(outbox_stream_t *s, char *why, size_t whysize) {
    PGresult *res = PQgetResult(s->conn);
    if (res && PQresultStatus(res) == PGRES_FATAL_ERROR)
        snprintf(why, whysize, "the replication stream failed: %s", PQresultErrorMessage(res));
    else if (why && whysize)
        snprintf(why, whysize, "the server ended the replication stream");
    PQclear(res);
}

int outbox_stream_next(outbox_stream_t *s, int timeout_ms, int wake_fd, const uint8_t **buf,
                       size_t *len, char *why, size_t whysize) {
    drop_frame(s);
    if (!s->conn) {
        snprintf(why, whysize, "the replication connection is closed");
        return -1;
    }
    long deadline = deta_clock_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    bool tls = PQsslInUse(s->conn), drained_tls = false;
    for (;;) {
        int n = PQgetCopyData(s->conn, &s->frame, 1);
        if (n > 0) {
            *buf = (const uint8_t *)s->frame;
            *len = (size_t)n;
            return 1;
        }
        if (n == -1) {
            copy_ended(s, why, whysize);
            outbox_stream_close(s);
            return -1;
        }
        if (n < -1) {
            conn_error(s->conn, "reading the replication stream", why, whysize);
            outbox_stream_close(s);
            return -1;
        }
        /* With TLS, bytes already read from the socket may wait decrypted in
         * the TLS library, which poll cannot see: libpq takes them first (it
         * never blocks), once between two polls. */
        if (tls && !drained_tls) {
            drained_tls = true;
            if (!PQconsumeInput(s->conn)) {
                conn_error(s->conn, "reading the replication stream", why, whysize);
                outbox_stream_close(s);
                return -1;
            }
            continue;
        }
        drained_tls = false;
        /* Even once the time is up the socket is polled, without waiting: bytes
         * the kernel already holds count as waiting too, not only libpq's
         * buffer (one read's worth); otherwise a caller that reads on while
         * messages wait gets one read's rows per batch. */
        long left = deadline - deta_clock_ms();
        struct pollfd fds[2] = {{.fd = PQsocket(s->conn), .events = POLLIN},
                                {.fd = wake_fd, .events = POLLIN}};
        int ready = poll(fds, wake_fd >= 0 ? 2 : 1, left > 0 ? (int)left : 0);
        if (ready < 0 && errno != EINTR) {
            snprintf(why, whysize, "poll: %s", strerror(errno));
            outbox_stream_close(s);
            return -1;
        }
        if (ready == 0 || (wake_fd >= 0 && fds[1].revents))
            return 0;
        if (ready > 0 && !PQconsumeInput(s->conn)) {
            conn_error(s->conn, "reading the replication stream", why, whysize);
            outbox_stream_close(s);
            return -1;
        }
    }
}

static int64_t wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

deta_err_t outbox_stream_status(outbox_stream_t *s, deta_lsn_t confirmed, bool reply, char *why,
                                size_t whysize) {
    if (!s->conn)
        return deta_errf(DETA_ERR_TRANSIENT, why, whysize, "the replication connection is closed");
    uint8_t msg[DETA_REPL_STATUS_LEN];
    size_t n = deta_repl_status(msg, confirmed, confirmed, confirmed,
                                deta_pg_time_from_unix_ms(wall_ms()), reply);
    if (PQputCopyData(s->conn, (const char *)msg, (int)n) != 1 || PQflush(s->conn) < 0) {
        conn_error(s->conn, "sending a status update", why, whysize);
        outbox_stream_close(s);
        return DETA_ERR_TRANSIENT;
    }
    return DETA_OK;
}
