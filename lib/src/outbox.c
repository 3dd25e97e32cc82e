/*
 * outbox.c - the transactional outbox and its relay (see deta/outbox.h).
 *
 * deta_outbox_add() inserts the serialized envelope and calls
 * pg_notify('deta_outbox', '') in one statement (a CTE: one round trip), inside
 * the caller's transaction, so the row and its wake-up exist only if the
 * transaction commits. Postgres folds identical notifications of a transaction
 * into one.
 *
 * The relay is one thread with its own connection. Each turn of its loop:
 *
 *   1. make sure the session is set up: another session (first connect or after
 *      a reconnect, seen as a new deta_db_session number) needs LISTEN again and
 *      has lost the session advisory lock, which is then tried again;
 *   2. as the lock holder (the leader), publish: select up to 500 unsent rows by
 *      id, send them as one batch, keep the ids of the acknowledged prefix (the
 *      marks, see below), repeat while batches come back full; then purge old
 *      rows (once a minute) and
 *      update the pending gauges, rows and the oldest row's age (0 after a
 *      complete drain, without a query; counted only after a failed or
 *      cut-short turn). Standbys do nothing but
 *      try the lock each turn. A batch read on another session than the one
 *      that took the lock (deta_db reconnected under the drain: the backend was
 *      terminated, the server restarted) is dropped unsent and the drain ends:
 *      a standby may hold the lock by then, and the next turn takes it again
 *      before anything else. What was sent before the loss may go out twice
 *      (a send cannot be fenced), nothing is read and sent after it;
 *      Before its first drain on a newly locked session, and after a failed
 *      turn, the leader pings (deta_db_ping): a read-only server (a standby, a
 *      demoted primary) fails the turn before anything is published, instead of
 *      every turn publishing rows it cannot mark;
 *   2b. a row the broker refuses for good (larger than message.max.bytes, topic
 *      refused: the producer's DETA_ERR_INVALID) is parked (parked_at,
 *      parked_reason; deta_outbox_parked_total, the deta_outbox_parked gauge, an
 *      ERROR line) and the drain goes on with the rows behind it. Later rows of
 *      the same order (msg_key) are parked too, "held", so that one order's
 *      events never overtake each other; other orders are not held up. The
 *      lookup for held rows runs only while some row is parked;
 *   3. wait with poll() on the connection's socket and an eventfd (stop) for a
 *      notification, up to DETA_OUTBOX_POLL_MS, or the backoff after a failure.
 *
 * A notification read by some other call on the connection (libpq queues them)
 * is looked for before waiting, so none is slept through.
 *
 * Marks: one transaction per turn. The ids the broker acknowledged are not
 * marked by an UPDATE of their own (a second commit per turn, per order at
 * moderate rates, in every database): the next batch's SELECT carries them, as
 * a data-modifying CTE (WITH sent AS (UPDATE ... published_at = now() WHERE id =
 * ANY($2))), in one statement and round trip. That SELECT reads the snapshot
 * from before its own UPDATE, so it leaves the marked ids out by id (id <>
 * ALL($2)). Marks in hand wait at most OUTBOX_MARK_IDLE_MS (the fallback
 * poll's second) for the notification of the next commit; then a turn runs
 * anyway (it marks and finds nothing; not counted as a wake-up). A relay that
 * lost the lock (standby) writes its marks alone, and so does the final flush
 * when stopping: a row sent is a row to mark, on whichever session (the rows
 * went out under the lock). A turn is one transaction; a lone commit (nothing
 * else within a second) still costs two: the turn that sends it, the turn that
 * marks it.
 *
 * Marking happens after the broker's acknowledgement: a crash in between
 * republishes those rows (at-least-once; consumers are idempotent). What a
 * crash can republish is the last batch sent, at most OUTBOX_BATCH rows (as a
 * rule the rows of one turn), acknowledged less than OUTBOX_MARK_IDLE_MS before,
 * or whose marks were riding on a statement that did not commit (Postgres
 * away: they stay in hand and go with the next). The pending gauges count rows
 * not sent: rows sent whose marks are in hand are not pending (they are out),
 * so a complete drain sets both to 0, and a counting turn leaves their ids out.
 *
 * A failed turn (broker down or failing, Postgres away) backs off, doubling
 * from OUTBOX_BACKOFF_MIN_MS to OUTBOX_BACKOFF_MAX_MS; rows stay unpublished and go out, in id order, on the
 * first turn that works. Each wake-up is counted by reason in
 * deta_outbox_wakeups_total{reason="notify|poll"}, which shows (and lets tests
 * check) that notifications, not the fallback poll, drive the relay.
 *
 * Stopping is bounded (deta_outbox_relay_stop): the stop flag ends the drain
 * between batches, so the batch in hand completes; a final drain then publishes
 * what is left until the deadline. Every send waits with a give-up flag that
 * the stopping thread raises at the deadline if the relay has not finished by
 * then, so a broker that does not answer cannot hold the shutdown for the 12 s
 * of a send's timeout.
 */
#include "clock.h"
#include "deta/outbox.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "deta/log.h"
#include "deta/trace.h"

#define OUTBOX_CHANNEL "deta_outbox"
#define OUTBOX_LOCK "deta_outbox_relay"
#define OUTBOX_BATCH 500
#define OUTBOX_SEND_TIMEOUT_MS 12000 /* a send waited for; the producer keeps what is left in flight */
#define OUTBOX_BACKOFF_MIN_MS 100
#define OUTBOX_BACKOFF_MAX_MS 5000
#define OUTBOX_PURGE_EVERY_MS 60000L
#define OUTBOX_DRAIN_SLICE_MS 10000L /* a long backlog still lets the loop look around */
#define OUTBOX_MARK_IDLE_MS DETA_OUTBOX_POLL_MS /* marks wait this long for a turn to carry them */

const deta_migration_t deta_outbox_migrations[] = {
    {1, "create outbox",
     "CREATE TABLE IF NOT EXISTS outbox ("
     " id bigserial PRIMARY KEY,"
     " topic text NOT NULL,"
     " msg_key text NOT NULL,"
     " payload text NOT NULL,"
     " created_at timestamptz NOT NULL DEFAULT now(),"
     " published_at timestamptz);"
     "CREATE INDEX IF NOT EXISTS outbox_unpublished_idx ON outbox (id)"
     " WHERE published_at IS NULL;"},
    {2, "park rows the broker refuses for good",
     "ALTER TABLE outbox ADD COLUMN IF NOT EXISTS parked_at timestamptz,"
     " ADD COLUMN IF NOT EXISTS parked_reason text;"
     "CREATE INDEX IF NOT EXISTS outbox_parked_key_idx ON outbox (msg_key)"
     " WHERE parked_at IS NOT NULL;"},
    {3, "carry the trace context of the transaction that wrote the row",
     "ALTER TABLE outbox ADD COLUMN IF NOT EXISTS traceparent text,"
     " ADD COLUMN IF NOT EXISTS tracestate text;"
     "CREATE INDEX IF NOT EXISTS outbox_traced_key_idx ON outbox (msg_key, id)"
     " WHERE traceparent IS NOT NULL;"},
};
const size_t deta_outbox_migrations_count =
    sizeof deta_outbox_migrations / sizeof deta_outbox_migrations[0];

/* ---- writing ---- */

deta_err_t deta_outbox_add(deta_db_t *db, const char *topic, const deta_event_t *ev,
                           char *errstr, size_t errsize) {
    if (!db || !topic || !*topic || !ev || !ev->order_id[0])
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "an outbox row needs a topic and an event with an orderId");
    PGconn *conn = deta_db_conn(db, errstr, errsize);
    if (!conn)
        return DETA_ERR_TRANSIENT;
    if (PQtransactionStatus(conn) == PQTRANS_IDLE)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "deta_outbox_add must run inside the caller's transaction");
    char *payload = deta_event_serialize(ev);
    if (!payload)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    /* The row's trace context (deta/trace.h): the current span's (the
     * transaction's); outside any span (a ticker, a sweeper), that of the
     * order's latest traced row, so that the order's saga stays one trace
     * (none found: the relay starts a new one); NULL with tracing off. */
    char traceparent[DETA_TRACEPARENT_LEN + 1], tracestate[DETA_TRACESTATE_MAX + 1];
    bool traced = deta_span_current_headers(traceparent, tracestate);
    deta_span_event(deta_span_current(), "outbox.add", "messaging.destination.name", topic);
    const char *params[] = {topic, ev->order_id, payload, traced ? traceparent : NULL,
                            traced && tracestate[0] ? tracestate : NULL};
    deta_err_t err;
    if (traced || !deta_trace_enabled())
        err = deta_db_run(db,
                          "WITH ins AS (INSERT INTO outbox (topic, msg_key, payload,"
                          " traceparent, tracestate)"
                          " VALUES ($1, $2, $3, $4, $5) RETURNING id)"
                          " SELECT pg_notify('" OUTBOX_CHANNEL "', '') FROM ins",
                          5, params, errstr, errsize);
    else
        err = deta_db_run(db,
                          "WITH ins AS (INSERT INTO outbox (topic, msg_key, payload,"
                          " traceparent, tracestate)"
                          " SELECT $1, $2, $3, p.traceparent, p.tracestate FROM (SELECT 1) one"
                          " LEFT JOIN LATERAL (SELECT traceparent, tracestate FROM outbox"
                          "  WHERE msg_key = $2 AND traceparent IS NOT NULL"
                          "  ORDER BY id DESC LIMIT 1) p ON true RETURNING id)"
                          " SELECT pg_notify('" OUTBOX_CHANNEL "', '') FROM ins",
                          3, params, errstr, errsize);
    free(payload);
    return err;
}

/* ---- the relay ---- */

struct deta_outbox_relay {
    deta_producer_t *producer;
    deta_db_t *db;
    long retention_s;
    int wake_fd; /* eventfd: written once to stop */
    atomic_bool stop;
    atomic_long stop_deadline_ms; /* set before stop */
    atomic_bool give_up;          /* the deadline passed: abandon the send in hand */
    pthread_t thread;
    bool started, stopped;
    pthread_mutex_t lock; /* guards finished and final_result */
    pthread_cond_t finished_cond;
    bool finished;
    deta_err_t final_result;

    unsigned long session; /* deta_db_session of the session LISTEN and the lock belong to */
    bool leader;
    bool lost;       /* the drain saw that session replaced: re-take the lock first */
    bool any_parked; /* some row is parked: rows of its order are held behind it */
    bool unchecked;  /* the lock was just taken: is the server writable? */
    int backoff_ms; /* 0 while things work */
    bool more;      /* the last drain stopped at its deadline, not at the end */
    char *marks;    /* ids sent and acknowledged, not yet marked: "{1,2,3}" or NULL */
    size_t nmarks;
    long last_purge_ms;

    deta_counter_t *published;
    deta_counter_t *errors;
    deta_counter_t *parked_total;
    deta_gauge_t *pending;
    deta_gauge_t *oldest_age;
    deta_gauge_t *parked;
    deta_counter_t *woke_notify;
    deta_counter_t *woke_poll;
};


static void register_metrics(deta_outbox_relay_t *r, deta_metrics_t *m) {
    if (!m)
        return;
    r->published = deta_counter(m, "deta_outbox_published_total",
                                "Outbox rows published to Kafka and marked sent", NULL);
    r->errors = deta_counter(m, "deta_outbox_publish_errors_total",
                             "Failed outbox publish or mark attempts", NULL);
    r->parked_total = deta_counter(m, "deta_outbox_parked_total",
                                   "Outbox rows parked: refused by the broker for good, or"
                                   " held behind such a row of the same order", NULL);
    r->pending = deta_gauge(m, "deta_outbox_pending", "Outbox rows not yet published", NULL);
    r->oldest_age = deta_gauge(m, "deta_outbox_oldest_pending_age_seconds",
                               "Age of the oldest outbox row not yet published (0 when none)",
                               NULL);
    r->parked = deta_gauge(m, "deta_outbox_parked", "Outbox rows parked now (alert when > 0)",
                           NULL);
    r->woke_notify = deta_counter(m, "deta_outbox_wakeups_total",
                                  "Relay wake-ups, by what woke it", "reason=\"notify\"");
    r->woke_poll = deta_counter(m, "deta_outbox_wakeups_total",
                                "Relay wake-ups, by what woke it", "reason=\"poll\"");
}

static void count(deta_counter_t *c, double v) {
    if (c && v > 0)
        deta_counter_add(c, v);
}

deta_outbox_relay_t *deta_outbox_relay_new(const deta_config_t *cfg, deta_producer_t *producer,
                                           deta_metrics_t *metrics, char *errstr,
                                           size_t errsize) {
    if (!cfg || !producer) {
        deta_errf(DETA_ERR_INVALID, errstr, errsize, "the relay needs a configuration and a producer");
        return NULL;
    }
    deta_outbox_relay_t *r = calloc(1, sizeof *r);
    if (!r) {
        deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
        return NULL;
    }
    r->producer = producer;
    r->retention_s = cfg->outbox_retention_s;
    r->last_purge_ms = deta_clock_ms() - OUTBOX_PURGE_EVERY_MS;
    atomic_init(&r->stop, false);
    atomic_init(&r->stop_deadline_ms, 0);
    atomic_init(&r->give_up, false);
    pthread_mutex_init(&r->lock, NULL);
    deta_cond_init_monotonic(&r->finished_cond);
    r->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    r->db = deta_db_new(cfg);
    if (r->wake_fd < 0 || !r->db) {
        deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "cannot create the relay: %s",
                  r->wake_fd < 0 ? strerror(errno) : "out of memory");
        if (r->wake_fd >= 0)
            close(r->wake_fd);
        deta_db_free(r->db);
        pthread_cond_destroy(&r->finished_cond);
        pthread_mutex_destroy(&r->lock);
        free(r);
        return NULL;
    }
    register_metrics(r, metrics);
    return r;
}

/* How many rows are parked: sets the gauge and whether the drain must look for
 * rows held behind them. */
static void refresh_parked(deta_outbox_relay_t *r) {
    deta_err_t err;
    char why[256];
    PGresult *res = deta_db_exec(r->db, "SELECT count(*) FROM outbox WHERE parked_at IS NOT NULL",
                                 0, NULL, &err, why, sizeof why);
    if (!res) {
        r->any_parked = true; /* not known: look, to be safe */
        DETA_WARN("outbox relay: cannot count parked rows: %s", why);
        return;
    }
    double n = atof(PQgetvalue(res, 0, 0));
    PQclear(res);
    r->any_parked = n > 0;
    if (r->parked)
        deta_gauge_set(r->parked, n);
}

/* LISTEN and the lock, again whenever the connection is another session (see
 * deta_db_session): a replaced connection has lost both. A statement reconnects
 * before it is sent, never after, so the session a statement ran on is the one
 * the handle has when it returns. */
static bool ensure_session(deta_outbox_relay_t *r, char *why, size_t whysize) {
    if (!deta_db_conn(r->db, why, whysize))
        return false;
    if (deta_db_session(r->db) != r->session) {
        r->leader = false;
        if (deta_db_run(r->db, "LISTEN " OUTBOX_CHANNEL, 0, NULL, why, whysize) != DETA_OK)
            return false;
        r->session = deta_db_session(r->db);
    }
    if (!r->leader) {
        const char *lock[] = {OUTBOX_LOCK};
        deta_err_t err;
        PGresult *res = deta_db_exec(r->db, "SELECT pg_try_advisory_lock(hashtext($1))", 1,
                                     lock, &err, why, whysize);
        if (!res)
            return false;
        bool got = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
        PQclear(res);
        if (deta_db_session(r->db) != r->session) {
            deta_errf(DETA_ERR_TRANSIENT, why, whysize,
                      "the connection was replaced while taking the lock");
            return false;
        }
        r->leader = got;
        r->unchecked = got;
        r->lost = false;
        if (r->leader) {
            DETA_INFO("outbox relay: this instance publishes (session %lu)", r->session);
            refresh_parked(r);
        }
    }
    return true;
}

/* The ids of rows idx[0..n) of a selected batch as a Postgres array literal
 * (malloc'd; NULL when out of memory). */
static char *ids_literal(PGresult *rows, const int *idx, size_t n) {
    size_t cap = 3 + n * 21;
    char *ids = malloc(cap);
    if (!ids)
        return NULL;
    size_t len = 0;
    ids[len++] = '{';
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(ids + len, cap - len, "%s%s", i ? "," : "",
                                PQgetvalue(rows, idx[i], 0));
    snprintf(ids + len, cap - len, "}");
    return ids;
}

/* Runs sql, an UPDATE of the rows idx[0..n) ($1, their ids) with an optional $2. */
static deta_err_t update_rows(deta_outbox_relay_t *r, const char *sql, PGresult *rows,
                              const int *idx, size_t n, const char *arg, char *why,
                              size_t whysize) {
    char *ids = ids_literal(rows, idx, n);
    if (!ids)
        return deta_errf(DETA_ERR_INTERNAL, why, whysize, "out of memory");
    const char *params[] = {ids, arg};
    deta_err_t err = deta_db_run(r->db, sql, arg ? 2 : 1, params, why, whysize);
    free(ids);
    return err;
}

/* The marks carried: what the broker acknowledged is marked published by the
 * relay's next statement (see the top), or here, alone, when no statement comes
 * soon enough (idle, stopping, standing by). */
static void marks_done(deta_outbox_relay_t *r) {
    count(r->published, (double)r->nmarks);
    free(r->marks);
    r->marks = NULL;
    r->nmarks = 0;
}

static deta_err_t flush_marks(deta_outbox_relay_t *r, char *why, size_t whysize) {
    if (!r->marks)
        return DETA_OK;
    const char *params[] = {r->marks};
    deta_err_t err = deta_db_run(r->db,
                                 "UPDATE outbox SET published_at = now()"
                                 " WHERE id = ANY($1::bigint[])",
                                 1, params, why, whysize);
    if (err == DETA_OK)
        marks_done(r);
    return err;
}

/* Keeps the ids of rows idx[0..n), sent and acknowledged, for the next statement
 * to mark. Marks not yet carried (none, as a rule: every batch is selected by a
 * statement that carries them) are written first. */
static deta_err_t mark_published(deta_outbox_relay_t *r, PGresult *rows, const int *idx,
                                 size_t n, char *why, size_t whysize) {
    deta_err_t err = flush_marks(r, why, whysize);
    if (err != DETA_OK)
        return err;
    r->marks = ids_literal(rows, idx, n);
    if (!r->marks)
        return deta_errf(DETA_ERR_INTERNAL, why, whysize, "out of memory");
    r->nmarks = n;
    return DETA_OK;
}

/* Takes rows out of the drain for good (until someone clears parked_at), with
 * the reason, an alert-worthy event: counted, the gauge refreshed, logged. */
static deta_err_t park(deta_outbox_relay_t *r, PGresult *rows, const int *idx, size_t n,
                       const char *reason, char *why, size_t whysize) {
    if (n == 0)
        return DETA_OK;
    deta_err_t err = update_rows(r,
                                 "UPDATE outbox SET parked_at = now(), parked_reason = $2"
                                 " WHERE id = ANY($1::bigint[]) AND published_at IS NULL",
                                 rows, idx, n, reason, why, whysize);
    if (err != DETA_OK)
        return err;
    for (size_t i = 0; i < n; i++)
        DETA_ERROR("outbox relay: parked row %s (topic %s, order %s): %s",
                   PQgetvalue(rows, idx[i], 0), PQgetvalue(rows, idx[i], 1),
                   PQgetvalue(rows, idx[i], 2), reason);
    count(r->parked_total, (double)n);
    refresh_parked(r);
    r->any_parked = true;
    return DETA_OK;
}

/* ---- a row's trace (deta/trace.h) ----
 *
 * Each row sent gets a producer span, "publish <topic>", child of the context
 * its transaction wrote in the row (or, without one, the root of a new trace:
 * rows written outside any request or message, old rows), and the message
 * carries that span's context as the headers traceparent and tracestate. The
 * span ends when the broker acknowledged the row (ok) or the send failed
 * (error). With tracing off no span is made, but a row that has a context
 * passes it on as it is. The headers differ from one send of a row to the next
 * (a new span each time): the messages are marked resendable, so that the
 * producer still recognizes a resend (deta/kafka.h). */
typedef struct publish_trace {
    deta_span_t *span;
    deta_kafka_header_t headers[2];
    char traceparent[DETA_TRACEPARENT_LEN + 1];
    char tracestate[DETA_TRACESTATE_MAX + 1];
} publish_trace_t;

/* The span and headers of row i, message m. */
static void trace_row(PGresult *rows, int i, deta_kafka_out_t *m, publish_trace_t *t) {
    deta_trace_ctx_t row;
    bool has = deta_trace_ctx_from_headers(PQgetisnull(rows, i, 5) ? NULL : PQgetvalue(rows, i, 5),
                                           PQgetisnull(rows, i, 6) ? NULL : PQgetvalue(rows, i, 6),
                                           &row);
    char name[DETA_SPAN_NAME_MAX];
    snprintf(name, sizeof name, "publish %s", m->topic);
    t->span = deta_span_begin(name, DETA_SPAN_PRODUCER, has ? &row : NULL);
    deta_span_attr(t->span, "messaging.system", "kafka");
    deta_span_attr(t->span, "messaging.operation", "publish");
    deta_span_attr(t->span, "messaging.destination.name", m->topic);
    deta_span_attr(t->span, "messaging.kafka.message.key", m->key);
    deta_span_attr(t->span, "deta.outbox.id", PQgetvalue(rows, i, 0));
    const deta_trace_ctx_t *ctx = t->span ? deta_span_ctx(t->span) : has ? &row : NULL;
    if (!ctx)
        return;
    deta_traceparent_format(ctx, t->traceparent);
    snprintf(t->tracestate, sizeof t->tracestate, "%s", ctx->state);
    t->headers[0] = (deta_kafka_header_t){"traceparent", t->traceparent};
    t->headers[1] = (deta_kafka_header_t){"tracestate", t->tracestate};
    m->headers = t->headers;
    m->nheaders = t->tracestate[0] ? 2 : 1;
    m->resendable = true;
}

/* Ends the spans of msgs[0..n): the first nacked acknowledged, the rest not. */
static void trace_sent(publish_trace_t *t, size_t n, size_t nacked, const char *why) {
    for (size_t i = 0; i < n; i++) {
        if (!t[i].span)
            continue;
        if (i < nacked)
            deta_span_set_ok(t[i].span);
        else
            deta_span_set_error(t[i].span, why && *why ? why : "not acknowledged");
        deta_span_end(t[i].span);
        t[i].span = NULL;
    }
}

/* The rows of one selected batch, sorted by what happens to them. */
typedef struct batch {
    int *send;       /* row indexes to send, in id order */
    size_t nsend;
    int *held;       /* rows of an order with a parked row: parked too */
    size_t nheld;
    int *untopical;  /* rows without a topic (written around deta_outbox_add) */
    size_t nuntopical;
    deta_kafka_out_t *msgs; /* msgs[i] is row send[i] */
    publish_trace_t *traces; /* traces[i]: msgs[i]'s span and headers */
} batch_t;

static void batch_free(batch_t *b) {
    if (b->traces) /* spans of rows that were not sent (a park failed first) */
        trace_sent(b->traces, b->nsend, 0, "not sent");
    free(b->send);
    free(b->held);
    free(b->untopical);
    free(b->msgs);
    free(b->traces);
}

static bool batch_sort(batch_t *b, PGresult *rows) {
    size_t n = (size_t)PQntuples(rows);
    *b = (batch_t){.send = calloc(n, sizeof(int)),
                   .held = calloc(n, sizeof(int)),
                   .untopical = calloc(n, sizeof(int)),
                   .msgs = calloc(n, sizeof(deta_kafka_out_t)),
                   .traces = calloc(n, sizeof(publish_trace_t))};
    if (!b->send || !b->held || !b->untopical || !b->msgs || !b->traces)
        return false;
    for (int i = 0; i < (int)n; i++) {
        if (!*PQgetvalue(rows, i, 1)) {
            b->untopical[b->nuntopical++] = i;
        } else if (strcmp(PQgetvalue(rows, i, 4), "t") == 0) {
            b->held[b->nheld++] = i;
        } else {
            b->msgs[b->nsend] = (deta_kafka_out_t){.topic = PQgetvalue(rows, i, 1),
                                                   .key = PQgetvalue(rows, i, 2),
                                                   .value = PQgetvalue(rows, i, 3),
                                                   .len = (size_t)PQgetlength(rows, i, 3)};
            trace_row(rows, i, &b->msgs[b->nsend], &b->traces[b->nsend]);
            b->send[b->nsend++] = i;
        }
    }
    return true;
}

/* Sends the rows to send as one batch and marks what the broker acknowledged. A
 * row the broker refuses for good (too large, topic refused: the producer says
 * DETA_ERR_INVALID for the first unacknowledged one) is parked instead of
 * blocking every row behind it; *parked tells the drain to go on at once. */
static deta_err_t send_rows(deta_outbox_relay_t *r, PGresult *rows, const batch_t *b,
                            int send_timeout_ms, bool *parked, char *why, size_t whysize) {
    size_t nacked = 0;
    deta_err_t err = deta_producer_send_batch_until(r->producer, b->msgs, b->nsend,
                                                    send_timeout_ms, &r->give_up, &nacked, why,
                                                    whysize);
    trace_sent(b->traces, b->nsend, nacked, why);
    if (nacked > 0) {
        char mark_why[256];
        deta_err_t mark_err = mark_published(r, rows, b->send, nacked, mark_why, sizeof mark_why);
        if (mark_err != DETA_OK) {
            /* They are out: a later turn publishes them again (at-least-once). */
            snprintf(why, whysize, "published %zu rows but cannot mark them: %s", nacked, mark_why);
            return mark_err;
        }
    }
    if (err == DETA_ERR_INVALID && nacked < b->nsend) {
        char reason[512];
        snprintf(reason, sizeof reason, "refused by the broker: %s", why);
        err = park(r, rows, b->send + nacked, 1, reason, why, whysize);
        *parked = err == DETA_OK;
    }
    return err;
}

/* Parks what cannot go, then sends the rest. */
static deta_err_t publish_rows(deta_outbox_relay_t *r, PGresult *rows, int send_timeout_ms,
                               bool *parked, char *why, size_t whysize) {
    batch_t b;
    deta_err_t err = DETA_OK;
    if (!batch_sort(&b, rows))
        err = deta_errf(DETA_ERR_INTERNAL, why, whysize, "out of memory");
    if (!err)
        err = park(r, rows, b.untopical, b.nuntopical, "the row has no topic", why, whysize);
    if (!err)
        err = park(r, rows, b.held, b.nheld,
                   "held: an earlier row of the same order is parked (its events stay in order)",
                   why, whysize);
    *parked = b.nuntopical + b.nheld > 0;
    if (!err && b.nsend > 0) {
        bool refused = false;
        err = send_rows(r, rows, &b, send_timeout_ms, &refused, why, whysize);
        *parked = *parked || refused;
    }
    batch_free(&b);
    return err;
}

/* One batch; *full tells whether more rows may be waiting. The rows are used only
 * when they were read on the session that holds the lock: when the connection
 * was replaced (a reconnect after the backend was lost), a standby may hold the
 * lock by now, and publishing would double its rows. The drain then ends, and
 * the next turn takes the lock again before anything else. */
static deta_err_t publish_batch(deta_outbox_relay_t *r, int send_timeout_ms, bool *full, char *why,
                                size_t whysize) {
    char limit[16];
    snprintf(limit, sizeof limit, "%d", OUTBOX_BATCH);
    /* Without parked rows (the rule) nothing is held: no lookup per row. With
     * marks in hand the statement writes them first (a data-modifying CTE, in
     * the same transaction); its SELECT sees the snapshot from before that
     * UPDATE, so the rows just marked are left out by id. */
    const char *params[] = {limit, r->marks};
    static const char *const sql[2][2] = {
        {"SELECT id, topic, msg_key, payload, false, traceparent, tracestate FROM outbox"
         " WHERE published_at IS NULL AND parked_at IS NULL ORDER BY id LIMIT $1::int",
         "SELECT o.id, o.topic, o.msg_key, o.payload, EXISTS (SELECT 1 FROM outbox p"
         " WHERE p.parked_at IS NOT NULL AND p.msg_key = o.msg_key), o.traceparent,"
         " o.tracestate FROM outbox o WHERE o.published_at IS NULL AND o.parked_at IS NULL"
         " ORDER BY o.id LIMIT $1::int"},
        {"WITH sent AS (UPDATE outbox SET published_at = now() WHERE id = ANY($2::bigint[]))"
         " SELECT id, topic, msg_key, payload, false, traceparent, tracestate FROM outbox"
         " WHERE published_at IS NULL AND parked_at IS NULL AND id <> ALL($2::bigint[])"
         " ORDER BY id LIMIT $1::int",
         "WITH sent AS (UPDATE outbox SET published_at = now() WHERE id = ANY($2::bigint[]))"
         " SELECT o.id, o.topic, o.msg_key, o.payload, EXISTS (SELECT 1 FROM outbox p"
         " WHERE p.parked_at IS NOT NULL AND p.msg_key = o.msg_key), o.traceparent,"
         " o.tracestate FROM outbox o WHERE o.published_at IS NULL AND o.parked_at IS NULL"
         " AND o.id <> ALL($2::bigint[]) ORDER BY o.id LIMIT $1::int"}};
    deta_err_t err;
    PGresult *rows = deta_db_exec(r->db, sql[r->marks != NULL][r->any_parked], r->marks ? 2 : 1,
                                  params, &err, why, whysize);
    *full = false;
    if (!rows)
        return err;
    /* The marks are written, whichever session ran the statement: those rows
     * went out under the lock, and a row sent is a row to mark. */
    marks_done(r);
    if (deta_db_session(r->db) != r->session) {
        PQclear(rows);
        r->leader = false;
        r->lost = true;
        return deta_errf(DETA_ERR_TRANSIENT, why, whysize,
                         "the session holding the relay lock was lost (reconnected)");
    }
    bool parked = false;
    *full = PQntuples(rows) == OUTBOX_BATCH;
    if (PQntuples(rows) > 0)
        err = publish_rows(r, rows, send_timeout_ms, &parked, why, whysize);
    *full = *full || parked;
    PQclear(rows);
    return err;
}

/* Publishes batches until the outbox is empty, something fails or the deadline;
 * r->more tells whether the deadline left rows behind. A hard deadline (stopping)
 * also bounds the wait for the broker; otherwise a batch gets the full timeout,
 * and a stop request ends the drain after the batch in hand. */
static deta_err_t drain(deta_outbox_relay_t *r, long deadline, bool hard, char *why,
                        size_t whysize) {
    bool full = true;
    deta_err_t err = DETA_OK;
    long left;
    while (full && err == DETA_OK && (hard || !atomic_load(&r->stop)) &&
           !atomic_load(&r->give_up) && (left = deadline - deta_clock_ms()) > 0) {
        int timeout = hard && left < OUTBOX_SEND_TIMEOUT_MS ? (int)left : OUTBOX_SEND_TIMEOUT_MS;
        err = publish_batch(r, timeout, &full, why, whysize);
    }
    r->more = err == DETA_OK && full;
    return err;
}

static void purge_if_due(deta_outbox_relay_t *r) {
    if (deta_clock_ms() - r->last_purge_ms < OUTBOX_PURGE_EVERY_MS)
        return;
    r->last_purge_ms = deta_clock_ms();
    char secs[24], why[256];
    snprintf(secs, sizeof secs, "%ld", r->retention_s);
    const char *params[] = {secs};
    if (deta_db_run(r->db,
                    "DELETE FROM outbox WHERE published_at IS NOT NULL"
                    " AND published_at < now() - make_interval(secs => $1::bigint)",
                    1, params, why, sizeof why) != DETA_OK)
        DETA_WARN("outbox purge failed: %s", why);
}

/* The pending gauges, rows and the oldest row's age. A drain that ended on a
 * batch that was not full, all of it acknowledged and marked, left nothing behind
 * as of its last SELECT: both are 0 without asking (rows committed since then have
 * notified and are the next turn's). Only a turn that failed or stopped with rows
 * left counts them, in the same statement and scan (the rows left, through the
 * partial index of unpublished rows), so the relay does not run a count(*) per
 * wake-up, i.e. per order. While the relay fails (broker or Postgres away) each
 * turn, at most OUTBOX_BACKOFF_MAX_MS apart, counts again, so the age keeps
 * growing on /metrics as long as the rows stay; a turn that cannot reach
 * Postgres leaves both as they were. Rows sent and acknowledged whose marks are
 * still in hand are not pending: they are out, and left out of the count. */
static void update_pending(deta_outbox_relay_t *r, bool drained) {
    if (!r->pending)
        return;
    if (drained) {
        deta_gauge_set(r->pending, 0);
        deta_gauge_set(r->oldest_age, 0);
        return;
    }
    deta_err_t err;
    const char *params[] = {r->marks ? r->marks : "{}"};
    PGresult *res = deta_db_exec(r->db,
                                 "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM"
                                 " clock_timestamp() - min(created_at)), 0)"
                                 " FROM outbox WHERE published_at IS NULL AND parked_at IS NULL"
                                 " AND id <> ALL($1::bigint[])",
                                 1, params, &err, NULL, 0);
    if (res) {
        deta_gauge_set(r->pending, atof(PQgetvalue(res, 0, 0)));
        double age = atof(PQgetvalue(res, 0, 1));
        deta_gauge_set(r->oldest_age, age > 0 ? age : 0);
    }
    PQclear(res);
}

static void note_failure(deta_outbox_relay_t *r, const char *why) {
    count(r->errors, 1);
    r->backoff_ms = r->backoff_ms ? r->backoff_ms * 2 : OUTBOX_BACKOFF_MIN_MS;
    if (r->backoff_ms > OUTBOX_BACKOFF_MAX_MS)
        r->backoff_ms = OUTBOX_BACKOFF_MAX_MS;
    DETA_WARN("outbox relay: %s; retrying in %d ms", why, r->backoff_ms);
}

/* One turn as described at the top; failures set the backoff. */
static void relay_turn(deta_outbox_relay_t *r) {
    char why[512] = "";
    r->more = false;
    if (!ensure_session(r, why, sizeof why)) {
        r->leader = false;
        note_failure(r, why);
        return;
    }
    if (!r->leader) {
        /* Marks of rows sent while leading (the session was lost since): a
         * standby writes them alone, and the new leader need not send them
         * again. */
        if (flush_marks(r, why, sizeof why) != DETA_OK) {
            note_failure(r, why);
            return;
        }
        r->backoff_ms = 0;
        return;
    }
    /* On a session just locked, and again after a failed turn, ask whether the
     * server takes writes: one that answers read-only (a standby, a primary
     * demoted by a failover) could not mark what went out, and every turn would
     * publish the same rows again. */
    if ((r->unchecked || r->backoff_ms > 0) && !deta_db_ping(r->db, why, sizeof why)) {
        note_failure(r, why);
        return;
    }
    r->unchecked = false;
    bool drained = false;
    if (drain(r, deta_clock_ms() + OUTBOX_DRAIN_SLICE_MS, false, why, sizeof why) != DETA_OK) {
        if (r->lost) {
            /* Not a failure to back off from: take the lock again, at once. */
            count(r->errors, 1);
            DETA_WARN("outbox relay: %s; stopped publishing, taking the lock again", why);
            r->more = true;
            return;
        }
        note_failure(r, why);
    } else {
        r->backoff_ms = 0;
        drained = !r->more && !atomic_load(&r->stop);
        purge_if_due(r);
    }
    update_pending(r, drained);
}

/* True when a notification is queued on the connection; consumes them all. */
static bool take_notifications(deta_outbox_relay_t *r) {
    PGconn *conn = deta_db_conn(r->db, NULL, 0);
    if (!conn)
        return false;
    bool any = false;
    PGnotify *n;
    while ((n = PQnotifies(conn)) != NULL) {
        any = true;
        PQfreemem(n);
    }
    return any;
}

/* Waits for a notification, the stop signal, or the timeout. */
static void wait_for_work(deta_outbox_relay_t *r) {
    if (r->more)
        return;
    if (r->backoff_ms == 0 && take_notifications(r)) {
        count(r->woke_notify, 1);
        return;
    }
    PGconn *conn = r->backoff_ms ? NULL : deta_db_conn(r->db, NULL, 0);
    if (conn && deta_db_session(r->db) != r->session)
        return; /* reconnected just now: LISTEN first, then wait */
    struct pollfd fds[2] = {{.fd = r->wake_fd, .events = POLLIN},
                            {.fd = conn ? PQsocket(conn) : -1, .events = POLLIN}};
    /* Marks in hand wait up to OUTBOX_MARK_IDLE_MS for a notification's turn
     * to carry them; if none comes, the turn runs anyway (it marks and finds
     * nothing), uncounted: it is not a wake-up for new rows. */
    bool marking = r->marks && !r->backoff_ms;
    int timeout = r->backoff_ms ? r->backoff_ms : marking ? OUTBOX_MARK_IDLE_MS
                                                          : DETA_OUTBOX_POLL_MS;
    long deadline = deta_clock_ms() + timeout;
    for (;;) {
        int ready = poll(fds, 2, timeout);
        if (ready < 0 && errno != EINTR)
            return;
        if (atomic_load(&r->stop) || fds[0].revents)
            return;
        if (ready > 0 && fds[1].revents) {
            if (!PQconsumeInput(conn))
                return; /* lost: the next turn reconnects */
            if (take_notifications(r)) {
                count(r->woke_notify, 1);
                return;
            }
        }
        timeout = (int)(deadline - deta_clock_ms());
        if (timeout <= 0) {
            if (!marking)
                count(r->woke_poll, 1);
            return;
        }
    }
}

/* The last drain, until the stop deadline: DETA_OK when nothing is left (or this
 * relay is a standby, which has nothing to publish). */
static deta_err_t final_flush(deta_outbox_relay_t *r) {
    char why[512] = "";
    if (!r->leader && !r->marks)
        return DETA_OK;
    deta_err_t err = ensure_session(r, why, sizeof why) ? DETA_OK : DETA_ERR_TRANSIENT;
    if (!err && r->leader)
        err = drain(r, atomic_load(&r->stop_deadline_ms), true, why, sizeof why);
    /* The last batch's marks: no statement follows to carry them. */
    deta_err_t mark_err = flush_marks(r, err ? NULL : why, err ? 0 : sizeof why);
    if (!err && mark_err)
        err = mark_err;
    if (!err && r->more)
        err = deta_errf(DETA_ERR_TRANSIENT, why, sizeof why, "out of time");
    if (err)
        DETA_WARN("outbox relay stopping with rows unpublished (they go out after the "
                  "restart): %s", why);
    return err;
}

static void *relay_main(void *arg) {
    deta_outbox_relay_t *r = arg;
    while (!atomic_load(&r->stop)) {
        relay_turn(r);
        if (!atomic_load(&r->stop))
            wait_for_work(r);
    }
    deta_err_t result = final_flush(r);
    pthread_mutex_lock(&r->lock);
    r->final_result = result;
    r->finished = true;
    pthread_cond_broadcast(&r->finished_cond);
    pthread_mutex_unlock(&r->lock);
    return NULL;
}

deta_err_t deta_outbox_relay_start(deta_outbox_relay_t *r, char *errstr, size_t errsize) {
    if (!r)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "no relay");
    if (r->started)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "the relay is running already");
    if (pthread_create(&r->thread, NULL, relay_main, r) != 0)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "cannot start the relay thread");
    r->started = true;
    return DETA_OK;
}

/* Waits until the relay thread says it finished or the deadline passes. */
static bool await_finished(deta_outbox_relay_t *r, long deadline) {
    struct timespec ts = deta_clock_at(deadline);
    pthread_mutex_lock(&r->lock);
    while (!r->finished)
        if (pthread_cond_timedwait(&r->finished_cond, &r->lock, &ts) != 0)
            break;
    bool finished = r->finished;
    pthread_mutex_unlock(&r->lock);
    return finished;
}

deta_err_t deta_outbox_relay_stop(deta_outbox_relay_t *r, int within_ms) {
    if (!r)
        return DETA_ERR_INVALID;
    if (!r->started || r->stopped)
        return r->stopped ? r->final_result : DETA_OK;
    long deadline = deta_clock_ms() + (within_ms > 0 ? within_ms : 0);
    atomic_store(&r->stop_deadline_ms, deadline);
    atomic_store(&r->stop, true);
    uint64_t one = 1;
    if (write(r->wake_fd, &one, sizeof one) < 0)
        DETA_WARN("outbox relay: cannot signal stop: %s", strerror(errno));
    if (!await_finished(r, deadline)) {
        DETA_WARN("outbox relay: still publishing after %d ms: abandoning the batch in hand",
                  within_ms);
        atomic_store(&r->give_up, true);
    }
    pthread_join(r->thread, NULL);
    r->stopped = true;
    if (atomic_load(&r->give_up) && r->final_result == DETA_OK)
        r->final_result = DETA_ERR_TRANSIENT;
    return r->final_result;
}

void deta_outbox_relay_free(deta_outbox_relay_t *r) {
    if (!r)
        return;
    deta_outbox_relay_stop(r, DETA_OUTBOX_FINAL_FLUSH_MS);
    close(r->wake_fd);
    free(r->marks);
    deta_db_free(r->db);
    pthread_cond_destroy(&r->finished_cond);
    pthread_mutex_destroy(&r->lock);
    free(r);
}
