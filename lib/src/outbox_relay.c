/*
 * outbox_relay.c - the outbox relay (deta/outbox.h): reads the outbox table's
 * inserts from the write-ahead log and publishes them.
 *
 * The relay is one thread with two connections to the service's database: a
 * logical replication stream (outbox_stream.c) of the slot
 * deta_outbox_<database>, through the publication deta_outbox (the outbox
 * table's inserts), and a SQL connection (deta_db) for the slot's creation,
 * parked rows, the purge and the slot metrics. Nothing polls the table and
 * nothing marks its rows: the slot's confirmed position is the relay's
 * progress. Each turn of its loop:
 *
 *   1. as a standby (no stream): make sure the slot exists and, unless
 *      another session streams it (asked with SQL: a standby holds no
 *      replication connection, see slot_in_use), try to stream it. Only one
 *      session can stream a slot, so of several instances one publishes (the
 *      leader) and the others look again every DETA_OUTBOX_POLL_MS; when the
 *      leader's session ends (stop, crash, a lost connection) the slot is free
 *      and a standby takes it over. A leader
 *      first loads the parked rows' orders, and finishes the migration from the
 *      polled outbox if one is pending (see legacy_drain below);
 *   2. as the leader: read the stream. Postgres sends each transaction that
 *      committed after the slot's confirmed position, whole and in commit
 *      order: Begin, the outbox rows it inserted, Commit. Rows are kept until
 *      no message is waiting (in libpq's buffer or the socket: see
 *      outbox_stream_next) or OUTBOX_BATCH rows (or OUTBOX_BATCH_BYTES of
 *      payload) are in hand; then they go to the broker as one batch, and
 *      once the broker acknowledged them the relay confirms the stream up to
 *      the end of the last transaction whose rows are all out (a Standby
 *      status update: no transaction, no write), at most every
 *      OUTBOX_CONFIRM_EVERY_MS rather than after every batch, which under
 *      load was about once per commit of the database's own
 *      (docs/architecture.md, "How often it confirms").
 *      A row with no topic, or of an order that is held (outbox_park.c), is
 *      parked instead of sent; a row the broker refuses for good is parked
 *      and the rows behind it go on. Parks are written before the position
 *      moves past them;
 *   3. every DETA_OUTBOX_POLL_MS without traffic, the leader asks for a
 *      keepalive: with nothing in hand, the position a keepalive reports (how
 *      far the server has decoded) is confirmed, with the next status update
 *      of that interval, so that a quiet outbox in a busy database does not
 *      hold the server's WAL back. Once a minute, rows
 *      older than OUTBOX_RETENTION_S are deleted (the stream reads the WAL,
 *      not the table); every 10 s the slots' metrics are read; while rows are
 *      cleared by hand, they are published again.
 *
 * At-least-once: the position moves only past rows the broker acknowledged
 * (or that were parked), so a crash at any point, or a lost stream, streams
 * again from the last confirmed position: rows sent but not yet confirmed go
 * out again. Per-order order: transactions arrive in commit order, and an
 * order's transactions serialize on its rows, so its events are sent in the
 * order they happened; after a failure the stream starts over from the first
 * unconfirmed transaction, never skipping one.
 *
 * A failed turn (broker down, Postgres away, a malformed message) closes the
 * stream, drops what was in hand (it is streamed again) and backs off,
 * doubling from OUTBOX_BACKOFF_MIN_MS to OUTBOX_BACKOFF_MAX_MS.
 *
 * Stopping is bounded (deta_outbox_relay_stop): the relay asks the server how
 * far its WAL is flushed and publishes until the stream has passed that point
 * or the deadline; every send waits with a give-up flag that the stopping
 * thread raises at the deadline.
 */
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

#include "clock.h"
#include "deta/log.h"
#include "deta/retention.h"
#include "deta/outbox.h"
#include "deta/trace.h"
#include "outbox_internal.h"
#include "outbox_stream.h"

#define OUTBOX_BATCH 500
#define OUTBOX_BATCH_BYTES (1024 * 1024) /* rows in hand: their payloads' bytes, at most about */
#define OUTBOX_SEND_TIMEOUT_MS 12000 /* a send waited for; the producer keeps what is left in flight */
#define OUTBOX_BACKOFF_MIN_MS 100
#define OUTBOX_BACKOFF_MAX_MS 5000
#define OUTBOX_PURGE_EVERY_MS 60000L
#define OUTBOX_SLOTS_EVERY_MS 10000L
/* A new confirmed position is reported at most this often (item 2 above). */
#define OUTBOX_CONFIRM_EVERY_MS 100L
#define OUTBOX_MAX_SLOTS 32 /* slots reported in the metrics */

typedef struct slot_metrics {
    char name[DETA_PGO_NAME_MAX];
    deta_gauge_t *retained;
    deta_gauge_t *lost;
    bool seen;
} slot_metrics_t;

struct deta_outbox_relay {
    deta_producer_t *producer;
    deta_db_t *db;
    outbox_stream_t *stream;
    deta_metrics_t *metrics;
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

    char slot[DETA_PGO_NAME_MAX]; /* "" until the database's name is known */
    bool leader;     /* streams the slot */
    int backoff_ms;  /* 0 while things work */
    outbox_held_t held;

    /* The stream's state (reset whenever the stream is (re)opened). */
    uint32_t outbox_oid; /* the outbox relation's oid, 0 until its Relation message */
    int cols[OUTBOX_NCOLS]; /* the outbox's column positions in the stream's tuples */
    bool in_tx;
    int64_t tx_commit_ms;
    outbox_row_t **ready; /* rows of committed transactions, in commit order */
    size_t nready, capready;
    size_t ready_bytes; /* the payloads' bytes of the rows in hand */
    deta_lsn_t confirmed; /* everything up to here is out (or not ours) */
    deta_lsn_t reported;  /* the last position sent in a status update */
    bool published_unreported; /* confirmed moved past published rows since */
    deta_lsn_t server_lsn; /* how far the server has sent, as far as known */
    long last_status_ms;
    deta_pgo_msg_t msg; /* the message being read (large: kept here, not on the stack) */

    long last_purge_ms, last_slots_ms, last_republish_ms, oldest_failed_ms;
    bool slot_ready; /* the slot is known to exist */
    slot_metrics_t slots[OUTBOX_MAX_SLOTS];
    size_t nslots;

    deta_counter_t *published;
    deta_counter_t *errors;
    deta_counter_t *parked_total;
    deta_gauge_t *pending;
    deta_gauge_t *oldest_age;
    deta_gauge_t *parked;
};

static void count(deta_counter_t *c, double v) {
    if (c && v > 0)
        deta_counter_add(c, v);
}

static void set_gauge(deta_gauge_t *g, double v) {
    if (g)
        deta_gauge_set(g, v);
}

static void register_metrics(deta_outbox_relay_t *r, deta_metrics_t *m) {
    if (!m)
        return;
    r->published = deta_counter(m, "deta_outbox_published_total",
                                "Outbox rows published to Kafka (acknowledged by the broker)", NULL);
    r->errors = deta_counter(m, "deta_outbox_publish_errors_total",
                             "Failed relay turns: publishing, streaming or parking", NULL);
    r->parked_total = deta_counter(m, "deta_outbox_parked_total",
                                   "Outbox rows parked: refused by the broker for good, or"
                                   " held behind such a row of the same order", NULL);
    r->pending = deta_gauge(m, "deta_outbox_pending",
                            "Outbox rows in the relay's hands not yet acknowledged", NULL);
    r->oldest_age = deta_gauge(m, "deta_outbox_oldest_pending_age_seconds",
                               "Age of the oldest outbox row not yet published (0 when none)",
                               NULL);
    r->parked = deta_gauge(m, "deta_outbox_parked", "Outbox rows parked now (alert when > 0)",
                           NULL);
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
    r->metrics = metrics;
    r->retention_s = cfg->outbox_retention_s;
    r->last_purge_ms = deta_clock_ms() - OUTBOX_PURGE_EVERY_MS;
    r->last_slots_ms = deta_clock_ms() - OUTBOX_SLOTS_EVERY_MS;
    atomic_init(&r->stop, false);
    atomic_init(&r->stop_deadline_ms, 0);
    atomic_init(&r->give_up, false);
    pthread_mutex_init(&r->lock, NULL);
    deta_cond_init_monotonic(&r->finished_cond);
    r->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    r->db = deta_db_new(cfg);
    r->stream = outbox_stream_new(cfg);
    if (r->wake_fd < 0 || !r->db || !r->stream) {
        deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "cannot create the relay: %s",
                  r->wake_fd < 0 ? strerror(errno) : "out of memory");
        if (r->wake_fd >= 0)
            close(r->wake_fd);
        deta_db_free(r->db);
        outbox_stream_free(r->stream);
        pthread_cond_destroy(&r->finished_cond);
        pthread_mutex_destroy(&r->lock);
        free(r);
        return NULL;
    }
    register_metrics(r, metrics);
    return r;
}

/* ---- rows in hand ---- */

static void drop_ready(deta_outbox_relay_t *r) {
    for (size_t i = 0; i < r->nready; i++)
        free(r->ready[i]);
    r->nready = 0;
    r->ready_bytes = 0;
}

/* Whether a batch is full: OUTBOX_BATCH rows, or OUTBOX_BATCH_BYTES of payload. */
static bool batch_full(const deta_outbox_relay_t *r) {
    return r->nready >= OUTBOX_BATCH || r->ready_bytes >= OUTBOX_BATCH_BYTES;
}

static bool push_ready(deta_outbox_relay_t *r, outbox_row_t *row) {
    if (r->nready == r->capready) {
        size_t cap = r->capready ? r->capready * 2 : 64;
        outbox_row_t **ready = realloc(r->ready, cap * sizeof *ready);
        if (!ready)
            return false;
        r->ready = ready;
        r->capready = cap;
    }
    r->ready[r->nready++] = row;
    r->ready_bytes += row->payload_len;
    return true;
}

static deta_err_t send_status(deta_outbox_relay_t *r, bool reply, char *why, size_t whysize);

/* The stream is gone (or going): what was in hand is streamed again. What went
 * out is confirmed first if the stream still takes it (a failed turn need not
 * send that again). */
static void stream_reset(deta_outbox_relay_t *r) {
    if (outbox_stream_is_open(r->stream) && r->confirmed > r->reported)
        send_status(r, false, NULL, 0);
    outbox_stream_close(r->stream);
    drop_ready(r);
    r->leader = false;
    r->in_tx = false;
    r->outbox_oid = 0;
    r->reported = 0;
    r->published_unreported = false;
}

static void note_failure(deta_outbox_relay_t *r, const char *why) {
    count(r->errors, 1);
    r->backoff_ms = r->backoff_ms ? r->backoff_ms * 2 : OUTBOX_BACKOFF_MIN_MS;
    if (r->backoff_ms > OUTBOX_BACKOFF_MAX_MS)
        r->backoff_ms = OUTBOX_BACKOFF_MAX_MS;
    DETA_WARN("outbox relay: %s; retrying in %d ms", why, r->backoff_ms);
}

/* ---- a row's trace (deta/trace.h) ----
 *
 * Each row sent gets a producer span, "publish <topic>", child of the context
 * its transaction wrote in the row (or, without one, the root of a new trace),
 * and the message carries that span's context as the headers traceparent and
 * tracestate. With tracing off no span is made, but a row that has a context
 * passes it on as it is. The headers differ from one send of a row to the next
 * (a new span each time): the messages are marked resendable, so that the
 * producer still recognizes a resend (deta/kafka.h). */
typedef struct publish_trace {
    deta_span_t *span;
    deta_kafka_header_t headers[2];
    char traceparent[DETA_TRACEPARENT_LEN + 1];
    char tracestate[DETA_TRACESTATE_MAX + 1];
} publish_trace_t;

static void trace_row(const outbox_row_t *row, deta_kafka_out_t *m, publish_trace_t *t) {
    deta_trace_ctx_t ctx_in;
    bool has = deta_trace_ctx_from_headers(row->traceparent, row->tracestate, &ctx_in);
    char name[DETA_SPAN_NAME_MAX];
    snprintf(name, sizeof name, "publish %s", m->topic);
    t->span = deta_span_begin(name, DETA_SPAN_PRODUCER, has ? &ctx_in : NULL);
    deta_span_attr(t->span, "messaging.system", "kafka");
    deta_span_attr(t->span, "messaging.operation", "publish");
    deta_span_attr(t->span, "messaging.destination.name", m->topic);
    deta_span_attr(t->span, "messaging.kafka.message.key", m->key);
    deta_span_attr(t->span, "deta.outbox.id", row->id);
    const deta_trace_ctx_t *ctx = t->span ? deta_span_ctx(t->span) : has ? &ctx_in : NULL;
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

/* ---- publishing ---- */

/* One pass over rows[0..n) not yet done: parks what cannot go, sends the rest
 * as one batch and marks what the broker acknowledged. *progress: some row
 * became done. A row the broker refuses for good (DETA_ERR_INVALID for the
 * first one not acknowledged) is parked, and DETA_OK returned so that the
 * caller makes another pass for the rows behind it. */
static deta_err_t publish_pass(deta_outbox_relay_t *r, outbox_row_t **rows, size_t n,
                               int send_timeout_ms, bool *progress, char *why, size_t whysize) {
    outbox_row_t **untopical = calloc(n, sizeof *untopical), **held = calloc(n, sizeof *held),
                 **sent = calloc(n, sizeof *sent);
    deta_kafka_out_t *msgs = calloc(n, sizeof *msgs);
    publish_trace_t *traces = calloc(n, sizeof *traces);
    size_t nuntopical = 0, nheld = 0, nsend = 0, nacked = 0;
    deta_err_t err = DETA_OK;
    *progress = false;
    if (!untopical || !held || !sent || !msgs || !traces) {
        err = deta_errf(DETA_ERR_INTERNAL, why, whysize, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        outbox_row_t *row = rows[i];
        if (row->done)
            continue;
        if (!row->topic || !row->topic[0] || !row->key || !row->payload)
            untopical[nuntopical++] = row;
        else if (r->held.n > 0 && outbox_held_has(&r->held, row->key))
            held[nheld++] = row;
        else
            sent[nsend++] = row;
    }
    err = outbox_park(r->db, &r->held, untopical, nuntopical, "the row has no topic", why,
                      whysize);
    if (!err)
        err = outbox_park(r->db, &r->held, held, nheld,
                          "held: an earlier row of the same order is parked (its events stay in"
                          " order)",
                          why, whysize);
    if (err)
        goto out;
    count(r->parked_total, (double)(nuntopical + nheld));
    *progress = nuntopical + nheld > 0;
    /* A row of an order parked in this pass is held: rows are in order, so
     * one behind it is also behind it in the batch. */
    size_t keep = 0;
    for (size_t i = 0; i < nsend; i++) {
        if (r->held.n > 0 && outbox_held_has(&r->held, sent[i]->key)) {
            err = outbox_park(r->db, &r->held, &sent[i], 1,
                              "held: an earlier row of the same order is parked (its events"
                              " stay in order)",
                              why, whysize);
            if (err)
                goto out;
            count(r->parked_total, 1);
            *progress = true;
            continue;
        }
        sent[keep++] = sent[i];
    }
    nsend = keep;
    if (nsend == 0)
        goto out;
    for (size_t i = 0; i < nsend; i++) {
        msgs[i] = (deta_kafka_out_t){.topic = sent[i]->topic, .key = sent[i]->key,
                                     .value = sent[i]->payload, .len = sent[i]->payload_len};
        trace_row(sent[i], &msgs[i], &traces[i]);
    }
    err = deta_producer_send_batch_until(r->producer, msgs, nsend, send_timeout_ms, &r->give_up,
                                         &nacked, why, whysize);
    trace_sent(traces, nsend, nacked, why);
    for (size_t i = 0; i < nacked; i++)
        sent[i]->done = true;
    count(r->published, (double)nacked);
    *progress = *progress || nacked > 0;
    if (err == DETA_ERR_INVALID && nacked < nsend) {
        char reason[512];
        snprintf(reason, sizeof reason, "refused by the broker: %s", why);
        err = outbox_park(r->db, &r->held, &sent[nacked], 1, reason, why, whysize);
        if (!err) {
            count(r->parked_total, 1);
            *progress = true;
        }
    }
out:
    free(untopical);
    free(held);
    free(sent);
    free(msgs);
    free(traces);
    return err;
}

/* Publishes rows[0..n) until each is done (sent or parked), a pass makes no
 * progress, or a failure. */
static deta_err_t publish_rows(deta_outbox_relay_t *r, outbox_row_t **rows, size_t n,
                               int send_timeout_ms, char *why, size_t whysize) {
    for (;;) {
        bool left = false;
        for (size_t i = 0; i < n && !left; i++)
            left = !rows[i]->done;
        if (!left)
            return DETA_OK;
        bool progress = false;
        deta_err_t err = publish_pass(r, rows, n, send_timeout_ms, &progress, why, whysize);
        if (err)
            return err;
        if (!progress)
            return deta_errf(DETA_ERR_TRANSIENT, why, whysize, "the broker took none of %zu rows", n);
    }
}

/* The position after the done prefix of the rows in hand. */
static deta_lsn_t done_position(const deta_outbox_relay_t *r, size_t *ndone) {
    deta_lsn_t pos = 0;
    size_t i = 0;
    for (; i < r->nready && r->ready[i]->done; i++)
        if (r->ready[i]->end_lsn > pos)
            pos = r->ready[i]->end_lsn;
    *ndone = i;
    return pos;
}

static deta_err_t send_status(deta_outbox_relay_t *r, bool reply, char *why, size_t whysize) {
    deta_err_t err = outbox_stream_status(r->stream, r->confirmed, reply, why, whysize);
    if (!err) {
        r->reported = r->confirmed;
        r->last_status_ms = deta_clock_ms();
        r->published_unreported = false;
    }
    return err;
}

/* Publishes the rows in hand and moves the position to confirm past what went
 * out: it is sent at once after a failure, else by leader_turn's cadence. */
static deta_err_t publish_ready(deta_outbox_relay_t *r, int send_timeout_ms, char *why,
                                size_t whysize) {
    deta_err_t err = publish_rows(r, r->ready, r->nready, send_timeout_ms, why, whysize);
    size_t ndone;
    deta_lsn_t pos = done_position(r, &ndone);
    if (pos > r->confirmed) {
        r->confirmed = pos;
        r->published_unreported = true;
    }
    if (err) {
        if (!r->oldest_failed_ms) {
            const outbox_row_t *first = ndone < r->nready ? r->ready[ndone] : NULL;
            r->oldest_failed_ms = first && first->commit_ms ? (long)first->commit_ms : 0;
        }
        set_gauge(r->pending, (double)(r->nready - ndone));
        if (r->confirmed > r->reported)
            send_status(r, false, NULL, 0); /* what went out need not go again */
        return err;
    }
    drop_ready(r);
    r->oldest_failed_ms = 0;
    set_gauge(r->pending, 0);
    set_gauge(r->oldest_age, 0);
    return DETA_OK; /* the new position is reported by the caller's cadence */
}

/* ---- the stream's messages ---- */

static const char *const col_names[OUTBOX_NCOLS] = {"id", "topic", "msg_key", "payload",
                                                    "traceparent", "tracestate"};

static deta_err_t on_relation(deta_outbox_relay_t *r, const deta_pgo_msg_t *m, char *why,
                              size_t whysize) {
    if (strcmp(m->u.relation.relname, "outbox") != 0)
        return DETA_OK; /* not in the publication: never sent */
    for (int c = 0; c < OUTBOX_NCOLS; c++) {
        r->cols[c] = -1;
        for (int i = 0; i < m->u.relation.ncols; i++)
            if (strcmp(m->u.relation.colnames[i], col_names[c]) == 0)
                r->cols[c] = i;
        if (r->cols[c] < 0 && c <= OUTBOX_COL_PAYLOAD)
            return deta_errf(DETA_ERR_INTERNAL, why, whysize,
                             "the stream's outbox relation has no column %s", col_names[c]);
    }
    r->outbox_oid = m->u.relation.oid;
    return DETA_OK;
}

static deta_err_t on_insert(deta_outbox_relay_t *r, const deta_pgo_msg_t *m, char *why,
                            size_t whysize) {
    if (!r->in_tx)
        return deta_errf(DETA_ERR_INTERNAL, why, whysize, "an insert outside a transaction");
    if (m->u.change.relid != r->outbox_oid)
        return r->outbox_oid ? DETA_OK
                             : deta_errf(DETA_ERR_INTERNAL, why, whysize,
                                         "an insert before the outbox's Relation message");
    const deta_pgo_tuple_t *t = &m->u.change.tuple;
    const char *vals[OUTBOX_NCOLS];
    size_t lens[OUTBOX_NCOLS];
    for (int c = 0; c < OUTBOX_NCOLS; c++) {
        int at = r->cols[c];
        const deta_pgo_value_t *v = at >= 0 && at < t->ncols ? &t->cols[at] : NULL;
        bool text = v && v->kind == 't';
        if (!text && c <= OUTBOX_COL_PAYLOAD)
            return deta_errf(DETA_ERR_INTERNAL, why, whysize,
                             "an outbox insert without its %s", col_names[c]);
        vals[c] = text ? (const char *)v->data : NULL;
        lens[c] = text ? v->len : 0;
    }
    outbox_row_t *row = outbox_row_new(vals, lens);
    if (!row || !push_ready(r, row)) {
        free(row);
        return deta_errf(DETA_ERR_INTERNAL, why, whysize, "out of memory");
    }
    row->commit_ms = r->tx_commit_ms;
    return DETA_OK;
}

/* One CopyData message of the stream. */
static deta_err_t on_frame(deta_outbox_relay_t *r, const uint8_t *buf, size_t len, char *why,
                           size_t whysize) {
    deta_repl_frame_t f;
    if (deta_repl_frame_parse(buf, len, &f) != 0)
        return deta_errf(DETA_ERR_INTERNAL, why, whysize, "a malformed replication message");
    if (f.kind == 'k') {
        if (f.wal_end > r->server_lsn)
            r->server_lsn = f.wal_end;
        /* Everything the server sent before this is in: with nothing in hand,
         * its position is done with. */
        if (!r->in_tx && r->nready == 0 && f.wal_end > r->confirmed)
            r->confirmed = f.wal_end;
        if (f.reply_requested)
            return send_status(r, false, why, whysize);
        return DETA_OK;
    }
    deta_pgo_msg_t *m = &r->msg;
    deta_err_t err = DETA_OK;
    if (deta_pgo_parse(f.data, f.len, m) != 0) {
        err = deta_errf(DETA_ERR_INTERNAL, why, whysize, "a malformed pgoutput message");
    } else if (m->kind == 'B') {
        r->in_tx = true;
        r->tx_commit_ms = deta_pg_time_to_unix_ms(m->u.begin.commit_time);
    } else if (m->kind == 'C') {
        r->in_tx = false;
        deta_lsn_t end = m->u.commit.end_lsn;
        if (end > r->server_lsn)
            r->server_lsn = end;
        if (r->nready > 0) {
            if (end > r->ready[r->nready - 1]->end_lsn)
                r->ready[r->nready - 1]->end_lsn = end;
        } else if (end > r->confirmed) {
            r->confirmed = end; /* nothing of ours in it, or all of it out already */
        }
    } else if (m->kind == 'R') {
        err = on_relation(r, m, why, whysize);
    } else if (m->kind == 'I') {
        err = on_insert(r, m, why, whysize);
    }
    return err;
}

/* ---- becoming the leader ---- */

/* The slot's name, from the database's: deta_outbox_<database>, in the
 * characters a slot name may have. */
static deta_err_t learn_slot(deta_outbox_relay_t *r, char *why, size_t whysize) {
    if (r->slot[0])
        return DETA_OK;
    deta_err_t err;
    PGresult *res = deta_db_exec(r->db, "SELECT current_database()", 0, NULL, &err, why, whysize);
    if (!res)
        return err;
    char name[DETA_PGO_NAME_MAX];
    int n = snprintf(name, sizeof name, OUTBOX_SLOT_PREFIX "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    for (int i = 0; i < n && name[i]; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
        name[i] = ok ? c : (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : '_';
    }
    snprintf(r->slot, sizeof r->slot, "%s", name);
    return DETA_OK;
}

/* Creates the slot unless it exists. *created: this call made it. Two
 * instances racing: the loser is told it exists (42710), which is fine.
 * Rows committed before a slot exists never come through it: when the table
 * holds rows and the slot is missing (dropped, or made again after Postgres
 * invalidated it), the table is published once more first (legacy_drain, set
 * before the slot is made so that a crash in between cannot skip it):
 * duplicates, never a loss, for the rows within OUTBOX_RETENTION_S. */
static deta_err_t ensure_slot(deta_outbox_relay_t *r, bool *created, char *why, size_t whysize) {
    *created = false;
    const char *params[] = {r->slot};
    deta_err_t err = deta_db_run(r->db,
                                 "UPDATE outbox_relay_state SET legacy_drain = true"
                                 " WHERE NOT legacy_drain AND NOT EXISTS (SELECT FROM"
                                 " pg_replication_slots WHERE slot_name = $1)"
                                 " AND EXISTS (SELECT FROM outbox WHERE published_at IS NULL)",
                                 1, params, why, whysize);
    if (err)
        return err;
    PGresult *res = deta_db_exec(r->db,
                                 "SELECT pg_create_logical_replication_slot($1, 'pgoutput')"
                                 " WHERE NOT EXISTS (SELECT FROM pg_replication_slots"
                                 " WHERE slot_name = $1)",
                                 1, params, &err, why, whysize);
    if (!res) {
        if (strstr(why, "already exists"))
            return DETA_OK;
        return err;
    }
    *created = PQntuples(res) == 1;
    PQclear(res);
    if (*created)
        DETA_INFO("outbox relay: created the replication slot %s", r->slot);
    return DETA_OK;
}

/* The migration from the polled outbox (outbox.c's migration 4): rows an
 * older relay had not marked published when this version first started. They
 * committed before the slot existed, so the stream will not bring them: they
 * are published from the table, in id order, and marked as the old relay did.
 * Rows that committed after the slot was made may go twice (at-least-once).
 * Done once per database; a crash on the way does it again. */
static deta_err_t legacy_drain(deta_outbox_relay_t *r, char *why, size_t whysize) {
    deta_err_t err;
    PGresult *res = deta_db_exec(r->db, "SELECT legacy_drain FROM outbox_relay_state", 0, NULL,
                                 &err, why, whysize);
    if (!res)
        return err;
    bool pending = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    char after[24] = "0";
    for (size_t n = OUTBOX_BATCH; pending && n == OUTBOX_BATCH;) {
        char limit[16];
        snprintf(limit, sizeof limit, "%d", OUTBOX_BATCH);
        const char *params[] = {after, limit};
        res = deta_db_exec(r->db,
                           "SELECT id, topic, msg_key, payload, traceparent, tracestate FROM outbox"
                           " WHERE published_at IS NULL AND parked_at IS NULL AND id > $1::bigint"
                           " ORDER BY id LIMIT $2::int",
                           2, params, &err, why, whysize);
        if (!res)
            return err;
        n = (size_t)PQntuples(res);
        outbox_row_t *rows[OUTBOX_BATCH];
        size_t made = 0;
        for (; made < n; made++) {
            if (!(rows[made] = outbox_row_from_result(res, (int)made)))
                break;
        }
        PQclear(res);
        err = made < n ? deta_errf(DETA_ERR_INTERNAL, why, whysize, "out of memory") : DETA_OK;
        if (!err && n > 0) {
            DETA_INFO("outbox relay: publishing %zu rows left by the polling relay", n);
            snprintf(after, sizeof after, "%s", rows[n - 1]->id);
            err = publish_rows(r, rows, n, OUTBOX_SEND_TIMEOUT_MS, why, whysize);
        }
        char *ids = !err && n > 0 ? outbox_ids_literal(rows, n, true) : NULL;
        if (!err && n > 0 && !ids)
            err = deta_errf(DETA_ERR_INTERNAL, why, whysize, "out of memory");
        if (ids) {
            const char *mark[] = {ids};
            err = deta_db_run(r->db,
                              "UPDATE outbox SET published_at = now()"
                              " WHERE id = ANY($1::bigint[]) AND parked_at IS NULL",
                              1, mark, why, whysize);
        }
        free(ids);
        for (size_t i = 0; i < made; i++)
            free(rows[i]);
        if (err)
            return err;
    }
    if (!pending)
        return DETA_OK;
    return deta_db_run(r->db, "UPDATE outbox_relay_state SET legacy_drain = false", 0, NULL, why,
                       whysize);
}

/* A slot Postgres invalidated (it held more WAL than max_slot_wal_keep_size)
 * can never stream again: it is dropped, so that the next turn makes it anew
 * and publishes the table again (ensure_slot). true when it was so. */
static bool drop_if_lost(deta_outbox_relay_t *r) {
    const char *params[] = {r->slot};
    deta_err_t err;
    char why[256];
    PGresult *res = deta_db_exec(r->db,
                                 "SELECT pg_drop_replication_slot(slot_name) FROM"
                                 " pg_replication_slots WHERE slot_name = $1 AND wal_status = 'lost'"
                                 " AND NOT active",
                                 1, params, &err, why, sizeof why);
    bool dropped = res && PQntuples(res) == 1;
    PQclear(res);
    if (dropped)
        DETA_ERROR("outbox relay: Postgres invalidated the slot %s (it held back more than"
                   " max_slot_wal_keep_size); dropped it: the next turn makes it again and"
                   " publishes the outbox table once more (duplicates, no loss within"
                   " OUTBOX_RETENTION_S)", r->slot);
    return dropped;
}

/* Whether another session streams the slot now (pg_replication_slots.active):
 * DETA_ERR_CONFLICT when one does. Asked on the SQL connection, so that a
 * standby holds no replication connection while a leader streams: Postgres
 * wakes every walsender on every flush of its WAL, in any database, streaming
 * or not, and each holds one of max_wal_senders. */
static deta_err_t slot_in_use(deta_outbox_relay_t *r, char *why, size_t whysize) {
    const char *params[] = {r->slot};
    deta_err_t err;
    PGresult *res = deta_db_exec(r->db,
                                 "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND active",
                                 1, params, &err, why, whysize);
    if (!res)
        return err;
    bool active = PQntuples(res) > 0;
    PQclear(res);
    return active ? DETA_ERR_CONFLICT : DETA_OK;
}

/* A standby's turn: unless another session streams the slot, try to stream it. */
static void standby_turn(deta_outbox_relay_t *r) {
    char why[512] = "";
    bool created = false;
    deta_err_t err = learn_slot(r, why, sizeof why);
    if (!err && !r->slot_ready)
        err = ensure_slot(r, &created, why, sizeof why);
    r->slot_ready = !err;
    if (!err)
        err = slot_in_use(r, why, sizeof why);
    if (!err)
        err = outbox_stream_start(r->stream, r->slot, OUTBOX_PUBLICATION, why, sizeof why);
    if (err && err != DETA_ERR_CONFLICT) {
        r->slot_ready = false; /* dropped or invalidated? look again next turn */
        if (r->slot[0])
            drop_if_lost(r);
    }
    if (err == DETA_ERR_CONFLICT) {
        r->backoff_ms = 0; /* another instance publishes */
        return;
    }
    if (!err) {
        r->outbox_oid = 0;
        r->in_tx = false;
        r->confirmed = r->reported = 0;
        r->published_unreported = false;
        err = outbox_held_load(r->db, &r->held, why, sizeof why);
        if (!err)
            err = legacy_drain(r, why, sizeof why);
        if (!err) {
            r->leader = true;
            r->backoff_ms = 0;
            set_gauge(r->parked, r->held.parked);
            DETA_INFO("outbox relay: this instance publishes (slot %s)", r->slot);
            return;
        }
    }
    stream_reset(r);
    note_failure(r, why);
}

/* ---- housekeeping ---- */

/* Published or streamed: the stream reads the WAL, so a row it has not reached
 * yet may go from the table. Parked rows stay until handled, and rows an older
 * relay left stay until the legacy drain took them. Oldest first by id (ids and
 * ages ascend together): the table has no index on its age (retention.h). */
static void purge_if_due(deta_outbox_relay_t *r) {
    if (deta_clock_ms() - r->last_purge_ms < OUTBOX_PURGE_EVERY_MS)
        return;
    r->last_purge_ms = deta_clock_ms();
    const deta_retention_spec_t spec = {
        .table = "outbox",
        .column = "created_at",
        .key = "id",
        .only = "parked_reason IS NULL AND NOT EXISTS (SELECT FROM outbox_relay_state"
                " WHERE legacy_drain)",
        .keep_s = r->retention_s};
    long purged;
    bool backlog;
    char why[256] = "";
    if (deta_retention_sweep(r->db, &spec, &purged, &backlog, why, sizeof why) != DETA_OK)
        DETA_WARN("outbox purge failed: %s", why);
    if (backlog)
        r->last_purge_ms -= OUTBOX_PURGE_EVERY_MS; /* due again at the next turn */
}

static slot_metrics_t *slot_entry(deta_outbox_relay_t *r, const char *name) {
    for (size_t i = 0; i < r->nslots; i++)
        if (strcmp(r->slots[i].name, name) == 0)
            return &r->slots[i];
    if (r->nslots == OUTBOX_MAX_SLOTS || !r->metrics)
        return NULL;
    slot_metrics_t *e = &r->slots[r->nslots++];
    snprintf(e->name, sizeof e->name, "%s", name);
    char labels[DETA_PGO_NAME_MAX + 16];
    snprintf(labels, sizeof labels, "slot=\"%s\"", e->name);
    e->retained = deta_gauge(r->metrics, "deta_outbox_slot_retained_bytes",
                             "WAL a logical replication slot holds back on the server", labels);
    e->lost = deta_gauge(r->metrics, "deta_outbox_slot_lost",
                         "1 when the server invalidated the slot (it held back more WAL than"
                         " max_slot_wal_keep_size)", labels);
    return e;
}

/* The cluster's logical slots, every OUTBOX_SLOTS_EVERY_MS: an abandoned one
 * (its service gone) shows in every other service's metrics. */
static void slots_if_due(deta_outbox_relay_t *r) {
    if (!r->metrics || deta_clock_ms() - r->last_slots_ms < OUTBOX_SLOTS_EVERY_MS)
        return;
    r->last_slots_ms = deta_clock_ms();
    deta_err_t err;
    char why[256];
    PGresult *res = deta_db_exec(r->db,
                                 "SELECT slot_name, COALESCE(pg_wal_lsn_diff(pg_current_wal_lsn(),"
                                 " restart_lsn), 0), COALESCE(wal_status = 'lost', false)"
                                 " FROM pg_replication_slots WHERE slot_type = 'logical'"
                                 " ORDER BY slot_name",
                                 0, NULL, &err, why, sizeof why);
    if (!res)
        return;
    for (size_t i = 0; i < r->nslots; i++)
        r->slots[i].seen = false;
    for (int i = 0; i < PQntuples(res); i++) {
        slot_metrics_t *e = slot_entry(r, PQgetvalue(res, i, 0));
        if (!e)
            continue;
        e->seen = true;
        set_gauge(e->retained, atof(PQgetvalue(res, i, 1)));
        set_gauge(e->lost, strcmp(PQgetvalue(res, i, 2), "t") == 0 ? 1 : 0);
    }
    PQclear(res);
    for (size_t i = 0; i < r->nslots; i++)
        if (!r->slots[i].seen) { /* dropped */
            set_gauge(r->slots[i].retained, 0);
            set_gauge(r->slots[i].lost, 0);
        }
}

/* Rows cleared by hand go out again, in id order, before anything newer of
 * their orders (which is held until then). */
static deta_err_t republish_cleared(deta_outbox_relay_t *r, char *why, size_t whysize) {
    if (r->held.n == 0)
        return DETA_OK;
    deta_err_t err = outbox_held_load(r->db, &r->held, why, whysize);
    set_gauge(r->parked, r->held.parked);
    if (err || r->held.cleared == 0)
        return err;
    outbox_row_t **rows = NULL;
    size_t n = 0;
    err = outbox_cleared_rows(r->db, OUTBOX_BATCH, &rows, &n, why, whysize);
    if (!err && n > 0) {
        /* Their own orders are held by them: sent, they must not be parked as held. */
        outbox_held_t held = r->held;
        r->held = (outbox_held_t){0};
        err = publish_rows(r, rows, n, OUTBOX_SEND_TIMEOUT_MS, why, whysize);
        outbox_held_t parked_now = r->held;
        r->held = held;
        for (size_t i = 0; i < parked_now.n; i++)
            outbox_held_add(&r->held, parked_now.keys[i]);
        outbox_held_free(&parked_now);
        if (!err)
            err = outbox_cleared_done(r->db, rows, n, why, whysize);
        if (!err)
            err = outbox_held_load(r->db, &r->held, why, whysize);
        set_gauge(r->parked, r->held.parked);
    }
    for (size_t i = 0; i < n; i++)
        free(rows[i]);
    free(rows);
    return err;
}

/* ---- the loop ---- */

/* A leader's turn: read what the stream has, publish, confirm. */
static void leader_turn(deta_outbox_relay_t *r) {
    char why[512] = "";
    const uint8_t *buf;
    size_t len;
    /* With rows in hand, only what is already there is read before they go;
     * with none, the wait ends when a status update is due. */
    long since = deta_clock_ms() - r->last_status_ms;
    long due = r->published_unreported ? OUTBOX_CONFIRM_EVERY_MS : DETA_OUTBOX_POLL_MS;
    int timeout = r->nready > 0 || since >= due ? 0 : (int)(due - since);
    int got = outbox_stream_next(r->stream, timeout, r->wake_fd, &buf, &len, why, sizeof why);
    deta_err_t err = DETA_OK;
    if (got < 0) {
        err = DETA_ERR_TRANSIENT;
    } else if (got > 0) {
        err = on_frame(r, buf, len, why, sizeof why);
        if (!err && !batch_full(r))
            return; /* read on while messages wait */
    }
    if (!err && r->nready > 0)
        err = publish_ready(r, OUTBOX_SEND_TIMEOUT_MS, why, sizeof why);
    /* A status update each DETA_OUTBOX_POLL_MS asks for a keepalive (how far
     * the server is, see on_frame); one that only confirms does not, or the
     * answers of a busy server would keep the two talking. A position past
     * published rows goes at most every OUTBOX_CONFIRM_EVERY_MS, one learned
     * only from keepalives with the interval's. */
    since = deta_clock_ms() - r->last_status_ms;
    bool interval = since >= DETA_OUTBOX_POLL_MS;
    bool confirm = r->published_unreported && since >= OUTBOX_CONFIRM_EVERY_MS;
    if (!err && (confirm || interval))
        err = send_status(r, interval && r->nready == 0 && !r->in_tx, why, sizeof why);
    if (!err && deta_clock_ms() - r->last_republish_ms >= DETA_OUTBOX_POLL_MS) {
        r->last_republish_ms = deta_clock_ms();
        err = republish_cleared(r, why, sizeof why);
    }
    if (err) {
        stream_reset(r);
        note_failure(r, why);
        return;
    }
    r->backoff_ms = 0;
    purge_if_due(r);
    slots_if_due(r);
}

/* Waits for the stop signal or ms. */
static void pause_ms(deta_outbox_relay_t *r, int ms) {
    struct pollfd fd = {.fd = r->wake_fd, .events = POLLIN};
    if (!atomic_load(&r->stop))
        poll(&fd, 1, ms);
}

static void failed_age(deta_outbox_relay_t *r) {
    if (!r->oldest_failed_ms)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double now = (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
    double age = (now - (double)r->oldest_failed_ms) / 1000.0;
    set_gauge(r->oldest_age, age > 0 ? age : 0);
}

/* The last publishing, until the stop deadline: the stream is read and
 * published until it has passed the server's flushed WAL as of now.
 * DETA_OK when nothing is left (or this relay is a standby). */
static deta_err_t final_flush(deta_outbox_relay_t *r) {
    char why[512] = "";
    if (!r->leader)
        return r->backoff_ms ? DETA_ERR_TRANSIENT : DETA_OK;
    deta_err_t err;
    PGresult *res = deta_db_exec(r->db, "SELECT pg_current_wal_flush_lsn()::text", 0, NULL, &err,
                                 why, sizeof why);
    deta_lsn_t target = 0;
    if (res && !deta_lsn_parse(PQgetvalue(res, 0, 0), &target))
        err = deta_errf(DETA_ERR_INTERNAL, why, sizeof why, "cannot read the flushed WAL position");
    PQclear(res);
    long deadline = atomic_load(&r->stop_deadline_ms);
    long asked = 0;
    while (!err && !(r->server_lsn >= target && r->nready == 0 && !r->in_tx)) {
        long left = deadline - deta_clock_ms();
        if (left <= 0 || atomic_load(&r->give_up)) {
            err = deta_errf(DETA_ERR_TRANSIENT, why, sizeof why, "out of time");
            break;
        }
        if (deta_clock_ms() - asked >= 50 && r->nready == 0) {
            err = send_status(r, true, why, sizeof why);
            asked = deta_clock_ms();
            if (err)
                break;
        }
        const uint8_t *buf;
        size_t len;
        int got = outbox_stream_next(r->stream, r->nready > 0 ? 0 : 50, -1, &buf, &len, why,
                                     sizeof why);
        if (got < 0) {
            err = DETA_ERR_TRANSIENT;
        } else if (got > 0) {
            err = on_frame(r, buf, len, why, sizeof why);
            if (!err && batch_full(r))
                err = publish_ready(r, (int)left, why, sizeof why);
        } else if (r->nready > 0) {
            err = publish_ready(r, (int)left, why, sizeof why);
        }
    }
    if (!err && r->nready > 0)
        err = publish_ready(r, (int)(deadline - deta_clock_ms()), why, sizeof why);
    if (outbox_stream_is_open(r->stream) && r->confirmed > r->reported)
        send_status(r, false, NULL, 0);
    if (err)
        DETA_WARN("outbox relay stopping with rows unpublished (they go out after the "
                  "restart): %s", why);
    return err;
}

static void *relay_main(void *arg) {
    deta_outbox_relay_t *r = arg;
    while (!atomic_load(&r->stop)) {
        if (r->leader)
            leader_turn(r);
        else
            standby_turn(r);
        failed_age(r);
        if (!r->leader && !atomic_load(&r->stop)) {
            slots_if_due(r);
            pause_ms(r, r->backoff_ms ? r->backoff_ms : DETA_OUTBOX_POLL_MS);
        }
    }
    deta_err_t result = final_flush(r);
    stream_reset(r);
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
    drop_ready(r);
    free(r->ready);
    outbox_held_free(&r->held);
    outbox_stream_free(r->stream);
    deta_db_free(r->db);
    pthread_cond_destroy(&r->finished_cond);
    pthread_mutex_destroy(&r->lock);
    free(r);
}
