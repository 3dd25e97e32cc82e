/*
 * events.c - query-api's event handlers.
 *
 * One consumer reads all five raw topics through libdeta's dispatcher
 * (deta/events.h): parse, route by type, and apply the event in one transaction.
 * Every type has a route, and every route is the same handler: the
 * differences between types are data (domain.c's table), not code. An event
 * whose payload breaks the contract is refused as invalid and so dead-lettered.
 *
 * The claim: with the Cassandra store the dispatcher claims the event id in
 * processed_events first (the store's writes are outside the transaction). With
 * the Postgres store it does not (deta_event_dispatch_opts_t.own_key,
 * read_model_needs_claim): the timeline row, keyed by the event id and inserted
 * only when new in the same transaction, is the claim. Every effect of
 * the event follows from that row being new: the view's update (or insert) is
 * fed by the insert's RETURNING, and the feed row by the view's, all in one statement
 * (read_model_pg.c; a batch: its new events only, below); the notes behind the metrics and the log line come after
 * applied only. An event already in the
 * timeline is returned as DETA_ERR_CONFLICT, which the dispatcher counts as a
 * duplicate and rolls back. That saves a statement (a round trip and an index
 * entry, and the purge of the row) per event.
 *
 * Batches: a worker that finds several events queued applies them (up to
 * QUERY_BATCH_MAX) in one transaction (deta_event_dispatch_batch): one commit
 * instead of one per event. An event that breaks the contract is refused before
 * the transaction (the routes' check, query_change_from_event) and dead-lettered
 * alone; a duplicate writes nothing (the statement's insert into the timeline is
 * its first step, and every other write follows from it) and leaves the batch
 * going. With the Postgres store the batch's events are applied by one call,
 * apply_events (deta_event_dispatch_opts_t.batch_apply): read_model_apply_batch,
 * two statements for the whole batch, whose outcomes give the same notes and log
 * lines as one at a time. A worker with
 * fewer queued waits up to QUERY_API_BATCH_WAIT_MS for more (the consumer's
 * batch_wait_ms), so that a moderate, steady rate is applied in batches too, at
 * that much latency on the read model.
 *
 * Metrics count only what committed. The handler runs inside the transaction,
 * which may still roll back (and be retried), so it leaves what it applied in a
 * thread-local list of notes; the consume functions record the notes once the
 * dispatcher reports the commit. With several workers each message (or batch)
 * is handled wholly on one thread, so the notes never cross threads.
 *
 *   query_events_applied_total{type}   events folded into the read model
 *   query_view_status_changes_total    events that moved an order's status
 *   query_event_lag_seconds            now - occurredAt when applied
 *   query_saga_stage_duration_seconds{stage}
 *                                      the order's createdAt to the occurredAt of the
 *                                      event that reached the stage (domain.h's
 *                                      query_saga_stage_of)
 *
 * A stage is observed once per order: only an event the read model took as new
 * (read_model_apply's applied: its event id was not in the timeline; with
 * Cassandra, the inbox claim, which commits with the note, counts events once)
 * and committed is noted, and each stage has one event type, which an order's
 * saga emits once. A replay or a redelivery observes nothing. A stage event
 * applied before the order's order.created (query-api catching up on several
 * topics at once) has no creation to measure from and is not observed.
 *
 * The consumer runs QUERY_API_CONSUMER_WORKERS worker threads (settings.h); the
 * events of one order always go to the same worker, in order.
 */
#include "events.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "deta/events.h"
#include "deta/log.h"
#include "deta/topics.h"
#include "stream/feed.h"

static const char *const event_types[] = {
    DETA_EVT_ORDER_CREATED,      DETA_EVT_INVENTORY_RESERVED, DETA_EVT_INVENTORY_REJECTED,
    DETA_EVT_INVENTORY_RELEASED, DETA_EVT_PAYMENT_AUTHORIZED, DETA_EVT_PAYMENT_FAILED,
    DETA_EVT_DELIVERY_WAITING,   DETA_EVT_DELIVERY_ASSIGNED,  DETA_EVT_DELIVERY_PICKED_UP,
    DETA_EVT_DELIVERY_DELIVERED, DETA_EVT_ETA_UPDATED,
    /* the cancellation saga */
    DETA_EVT_ORDER_CANCEL_REQUESTED, DETA_EVT_INVENTORY_CANCEL_FORWARDED,
    DETA_EVT_INVENTORY_CANCEL_REFUSED, DETA_EVT_INVENTORY_CANCELLED,
    DETA_EVT_PAYMENT_CANCEL_FORWARDED, DETA_EVT_PAYMENT_CANCEL_REFUSED,
    DETA_EVT_PAYMENT_CANCELLED, DETA_EVT_PAYMENT_REFUNDED,
    DETA_EVT_DELIVERY_CANCELLED, DETA_EVT_DELIVERY_CANCEL_REFUSED,
};
#define QUERY_EVENT_TYPES (sizeof event_types / sizeof *event_types)

/* Seconds; events are normally applied within milliseconds, a replay lags hours. */
static const double lag_buckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                     2.5,   5,    10,    30,   60,  300, 3600};

/* Seconds from an order's creation to a stage. Reserved and authorized come
 * within tens of milliseconds to a few seconds; assigned after a driver is free
 * (seconds, or minutes while every driver is busy); delivered after the
 * simulated pickup and ride: about 20 to 60 minutes at DELIVERY_CLOCK_SPEED 1
 * (real life), a few seconds at the test stack's 600. One set of bounds covers
 * both, 10 ms to 2 h. */
static const double stage_buckets[] = {0.01, 0.025, 0.05, 0.1,  0.25, 0.5,  1,    2.5,
                                       5,    10,    30,   60,   120,  300,  600,  900,
                                       1200, 1800,  2700, 3600, 5400, 7200};

struct query_events {
    deta_service_t *svc;
    read_model_t *rm;
    bool own_key; /* no claim: the store's timeline key is it */
    deta_event_route_t routes[QUERY_EVENT_TYPES];
    deta_event_dispatch_t *dispatch;
    deta_counter_t *applied[QUERY_EVENT_TYPES];
    deta_counter_t *status_changes;
    deta_histogram_t *lag;
    deta_histogram_t *stages[QUERY_STAGE_COUNT];
};

#define QUERY_BATCH_MAX 16

/* What the handler applied in the transaction now open on this thread. */
typedef struct applied_note {
    size_t type;
    int64_t occurred_us;
    bool status_changed;
    int stage;          /* query_saga_stage_of the type, -1 for none */
    int64_t created_us; /* the order's createdAt, 0 unknown */
} applied_note_t;

static _Thread_local applied_note_t notes[QUERY_BATCH_MAX];
static _Thread_local size_t nnotes;

static size_t type_index(const char *type) {
    for (size_t i = 0; i < QUERY_EVENT_TYPES; i++)
        if (strcmp(event_types[i], type) == 0)
            return i;
    return 0; /* unreachable: only routed types reach the handler */
}

/* The event's change, before any transaction (deta_event_route_t.check): an event
 * that does not give one is a dead letter, and leaves its batch going. */
static deta_err_t check_event(const deta_event_t *ev, char *errstr, size_t errsize) {
    query_change_t c;
    return query_change_from_event(ev, &c, errstr, errsize);
}

/* What an applied event leaves for the metrics (recorded once its transaction
 * commits), and its log line. */
static void note_applied(const deta_event_t *ev, const query_change_t *c,
                         const read_model_outcome_t *out) {
    if (nnotes < QUERY_BATCH_MAX) {
        applied_note_t *note = &notes[nnotes++];
        note->type = type_index(c->event_type);
        deta_timestamp_us(c->occurred_at, &note->occurred_us);
        note->status_changed = out->status_changed;
        note->stage = query_saga_stage_of(c->event_type);
        note->created_us = out->created_us;
    }
    if (out->status_changed)
        deta_log(DETA_LOG_INFO, ev->order_id, ev->correlation_id, "status %s after %s",
                 c->fields.status, c->event_type);
}

static deta_err_t apply_event(deta_db_t *db, const deta_event_t *ev, void *opaque,
                              char *errstr, size_t errsize) {
    query_events_t *qe = opaque;
    query_change_t c;
    deta_err_t err = query_change_from_event(ev, &c, errstr, errsize);
    if (err)
        return err; /* the dispatcher logs it with the order's ids, and dead-letters it */
    read_model_outcome_t out;
    /* a unique violation in the store's statements is a bug, never the duplicate */
    err = deta_event_own_result(read_model_apply(qe->rm, db, &c, &out, errstr, errsize), false);
    if (err)
        return err;
    /* In the timeline already: nothing else happens. (rolled_back: a racing
     * delivery put it there and the statement aborted the transaction; the
     * dispatcher rolls it back, one at a time, and a batch sees it aborted and
     * goes one at a time: deta/batch.h.) */
    if (!out.applied)
        return deta_event_own_result(DETA_OK, qe->own_key);
    /* The live streams' feed, after the view and in the same transaction: the
     * Postgres store's statement wrote it; with Cassandra's, it goes in the
     * claim's transaction here, which the claim lets through once per event. */
    if (!out.feed_written) {
        feed_entry_t fe = {c.event_id,    c.fields.order_id, c.event_type,  c.topic,
                           c.occurred_at, out.status,        out.customer_id};
        err = deta_event_own_result(feed_append(db, &fe, errstr, errsize), false);
        if (err)
            return err;
    }
    note_applied(ev, &c, &out);
    return DETA_OK;
}

/* deta_event_dispatch_opts_t.batch_apply (the Postgres store, own_key): the
 * batch's events in one read_model_apply_batch, which writes their feed rows
 * too. A racing transaction's row (rolled_back) is left to one at a time. */
static deta_err_t apply_events(deta_db_t *db, const deta_event_t *const *evs, size_t n,
                               bool *duplicate, void *opaque, char *errstr, size_t errsize) {
    query_events_t *qe = opaque;
    query_change_t *changes = calloc(n, sizeof *changes);
    read_model_outcome_t *outs = calloc(n, sizeof *outs);
    deta_err_t err = changes && outs ? DETA_OK
                                     : deta_errf(DETA_ERR_INTERNAL, errstr, errsize,
                                                 "out of memory");
    for (size_t i = 0; i < n && !err; i++)
        err = query_change_from_event(evs[i], &changes[i], errstr, errsize);
    bool rolled_back = false;
    if (!err)
        err = deta_event_own_result(
            read_model_apply_batch(qe->rm, db, changes, n, outs, &rolled_back, errstr, errsize),
            false);
    if (!err && rolled_back)
        err = deta_errf(DETA_ERR_TRANSIENT, errstr, errsize,
                        "a concurrent transaction applied one of the batch's events or orders");
    for (size_t i = 0; i < n && !err; i++) {
        duplicate[i] = !outs[i].applied;
        if (outs[i].applied)
            note_applied(evs[i], &changes[i], &outs[i]);
    }
    free(changes);
    free(outs);
    return err;
}

static double seconds_since(int64_t occurred_us) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t now_us = (int64_t)now.tv_sec * 1000000 + now.tv_nsec / 1000;
    return now_us > occurred_us ? (double)(now_us - occurred_us) / 1e6 : 0.0;
}

static void record(query_events_t *qe) {
    for (size_t i = 0; i < nnotes; i++) {
        deta_counter_inc(qe->applied[notes[i].type]);
        if (notes[i].status_changed)
            deta_counter_inc(qe->status_changes);
        deta_histogram_observe(qe->lag, seconds_since(notes[i].occurred_us));
        double stage = query_saga_stage_seconds(notes[i].created_us, notes[i].occurred_us);
        if (notes[i].stage >= 0 && stage >= 0)
            deta_histogram_observe(qe->stages[notes[i].stage], stage);
    }
    nnotes = 0;
}

static deta_err_t consume(const deta_kafka_msg_t *msg, void *opaque, char *errstr,
                          size_t errsize) {
    query_events_t *qe = opaque;
    nnotes = 0;
    deta_err_t err = deta_event_dispatch(msg, qe->dispatch, errstr, errsize);
    if (!err)
        record(qe);
    return err;
}

static deta_err_t consume_batch(const deta_kafka_msg_t *msgs, size_t n, void *opaque,
                                deta_err_t *results, char (*why)[DETA_KAFKA_WHY_MAX]) {
    query_events_t *qe = opaque;
    nnotes = 0;
    deta_err_t err = deta_event_dispatch_batch(msgs, n, qe->dispatch, results, why);
    if (!err)
        record(qe);
    nnotes = 0;
    return err;
}

static void register_metrics(query_events_t *qe) {
    deta_metrics_t *m = deta_service_metrics(qe->svc);
    for (size_t i = 0; i < QUERY_EVENT_TYPES; i++) {
        char labels[96];
        snprintf(labels, sizeof labels, "type=\"%s\"", event_types[i]);
        qe->applied[i] = deta_counter(m, "query_events_applied_total",
                                      "Events folded into the read model, by type", labels);
    }
    qe->status_changes = deta_counter(m, "query_view_status_changes_total",
                                      "Events that moved an order's status", NULL);
    qe->lag = deta_histogram(m, "query_event_lag_seconds",
                             "Time from an event's occurredAt to its application", NULL,
                             lag_buckets, sizeof lag_buckets / sizeof *lag_buckets);
    for (int i = 0; i < QUERY_STAGE_COUNT; i++) {
        char labels[64];
        snprintf(labels, sizeof labels, "stage=\"%s\"", query_saga_stage_name(i));
        qe->stages[i] = deta_histogram(
            m, "query_saga_stage_duration_seconds",
            "Seconds from an order's creation to the event that reached the stage, once per "
            "order and stage",
            labels, stage_buckets, sizeof stage_buckets / sizeof *stage_buckets);
    }
}

query_events_t *query_events_new(deta_service_t *svc, read_model_t *rm) {
    query_events_t *qe = calloc(1, sizeof *qe);
    if (!qe)
        return NULL;
    qe->svc = svc;
    qe->rm = rm;
    qe->own_key = !read_model_needs_claim(rm);
    for (size_t i = 0; i < QUERY_EVENT_TYPES; i++)
        qe->routes[i] = (deta_event_route_t){event_types[i], apply_event, check_event};
    /* Without claims, a store that can applies a batch at once. */
    const deta_event_dispatch_opts_t opts = {
        .own_key = qe->own_key,
        .batch_apply = qe->own_key && read_model_batches(rm) ? apply_events : NULL};
    qe->dispatch = deta_event_dispatch_new_opts(svc, qe->routes, QUERY_EVENT_TYPES, qe, &opts);
    if (!qe->dispatch) {
        free(qe);
        return NULL;
    }
    register_metrics(qe);
    return qe;
}

void query_events_free(query_events_t *qe) {
    if (!qe)
        return;
    deta_event_dispatch_free(qe->dispatch);
    free(qe);
}

deta_err_t query_events_subscribe(query_events_t *qe, int workers, int batch_wait_ms,
                                  char *errstr, size_t errsize) {
    /* Even without claims (the Postgres store): the table stays (migrations only
     * go forward), and the purge takes away the claims written before. */
    deta_err_t err = deta_service_use_inbox(qe->svc, errstr, errsize);
    if (err)
        return err;
    deta_consumer_opts_t opts = {.metrics = deta_service_metrics(qe->svc),
                                 .workers = workers,
                                 .batch_fn = consume_batch,
                                 .batch_max = QUERY_BATCH_MAX,
                                 .batch_wait_ms = batch_wait_ms};
    /* Every raw topic: deta_topics_all's first half. */
    return deta_service_consume(qe->svc, deta_topics_all, DETA_TOPICS_RAW_COUNT, consume, qe,
                                &opts, errstr, errsize);
}
