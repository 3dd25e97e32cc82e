/*
 * events.h - consuming events idempotently: the part of every consumer that is the
 * same in every service, written once.
 *
 * For each message: the envelope is parsed and validated (a malformed one is a
 * dead letter); the message key must equal the envelope's orderId, and the
 * envelope's producer must be the owner of the message's topic (both checks in
 * deta/event_check.h; a refused message is a dead letter); an event type
 * the service has no route for is skipped (consumers ignore what they do not
 * handle); a payload the route's check refuses is a dead letter, before any
 * transaction; otherwise, in one transaction, the event id is claimed in
 * processed_events (a duplicate delivery stops here and changes nothing) and the
 * route's handler applies its effects and writes its own events to the outbox.
 * The transaction commits before the offset is stored. A handler returns DETA_OK,
 * DETA_ERR_TRANSIENT (rolled back, retried with backoff) or another code (rolled
 * back, dead-lettered with errstr as x-error).
 *
 * Without the claim (deta_event_dispatch_opts_t.own_key, for one dispatch): the
 * handler is called for every delivery, and is idempotent by a key of its own
 * (query-api's timeline row, keyed by the event id and written only when new,
 * every other effect following from that row being new). When its key
 * says the event was applied before, it returns DETA_ERR_CONFLICT (err.h: "a
 * duplicate"): the dispatcher rolls back the transaction (in a batch, where the
 * others go on, the handler must have written nothing before it answers so:
 * deta/batch.h), counts a duplicate, and the message is done, not dead-lettered. deta_db maps a unique violation to
 * DETA_ERR_CONFLICT as well, so such a handler must not let one through that is
 * not its key's (turn it into DETA_ERR_INTERNAL). The default is the claim.
 *
 * Metrics: deta_events_total{type,outcome="applied|duplicate|ignored|failed"}.
 */
#ifndef DETA_EVENTS_H
#define DETA_EVENTS_H

#include <stdbool.h>
#include <stddef.h>
#include "deta/db.h"
#include "deta/envelope.h"
#include "deta/kafka.h"
#include "deta/service.h"

/* Runs inside the open transaction on db, after the claim (if the dispatch claims). */
typedef deta_err_t (*deta_event_fn)(deta_db_t *db, const deta_event_t *ev, void *opaque,
                                    char *errstr, size_t errsize);

/* Checks an event's payload before any transaction, without I/O: DETA_OK, or the
 * code and reason of a payload the handler would refuse for good. */
typedef deta_err_t (*deta_event_check_fn)(const deta_event_t *ev, char *errstr, size_t errsize);

/* A type's handler, and its check (NULL: none). A check's refusal is a dead
 * letter, as a malformed envelope is: no transaction is opened for it, and in a
 * batch the other messages go on without it (deta/batch.h). */
typedef struct deta_event_route {
    const char *event_type;
    deta_event_fn fn;
    deta_event_check_fn check;
} deta_event_route_t;

/* Takes, in a batch's transaction before any of its events is applied, the
 * locks its handlers will take on rows shared between orders, all at once and in
 * one fixed order (deta/batch.h, prepare): events[0..n) are the batch's events
 * still to apply, opaque the dispatch's. */
typedef deta_err_t (*deta_event_batch_lock_fn)(deta_db_t *db, const deta_event_t *const *events,
                                               size_t n, void *opaque, char *errstr,
                                               size_t errsize);

/* Applies a batch's events at once, inside its transaction (own_key only):
 * events[0..n) in their order of arrival, n >= 2. duplicate[i] (false on entry)
 * is set for an event the handler's key shows applied before, which wrote
 * nothing. DETA_OK when every event was applied or is such a duplicate; any
 * failure rolls the batch back and its events go one at a time, through their
 * routes (so a handler may answer DETA_ERR_TRANSIENT for whatever it would
 * rather leave to them: a racing transaction's row, say). */
typedef deta_err_t (*deta_event_batch_apply_fn)(deta_db_t *db, const deta_event_t *const *events,
                                                size_t n, bool *duplicate, void *opaque,
                                                char *errstr, size_t errsize);

/* A dispatch's options; all zero is the default. */
typedef struct deta_event_dispatch_opts {
    /* true: no claim in processed_events; every route's handler is idempotent by
     * its own key and returns DETA_ERR_CONFLICT for a duplicate (above). A claim
     * is one statement, one round trip and one row (and its purge) per event. */
    bool own_key;
    /* Batches only (NULL: none): the batch's shared locks, taken first. Without
     * it, two batches that lock the same rows in opposite orders wait on each
     * other until one times out or Postgres breaks the deadlock. Called once
     * per batch that opens a transaction (a message handled alone takes its
     * locks as its handler does), with at least one event; its failure rolls
     * the batch back, whose events then go one at a time. */
    deta_event_batch_lock_fn batch_lock;
    /* Batches only, with own_key (NULL: none): the batch's events applied by one
     * call (above) instead of each by its route, when two or more are to apply
     * (after batch_lock, if any), e.g. in a statement or two for the whole batch
     * rather than one per event. The routes still check each event before the
     * transaction, and still apply each one alone: a single message, and every
     * message of a batch that rolled back. */
    deta_event_batch_apply_fn batch_apply;
} deta_event_dispatch_opts_t;

/* Subscribes the service's consumer group to topics and dispatches by type.
 * routes must stay valid while the service runs. Migrates the inbox table and
 * schedules its purge (deta_service_use_inbox), with own_key too: the purge then
 * takes away the claims an earlier version wrote, and costs one empty DELETE a
 * turn once they are gone. */
deta_err_t deta_service_on_events(deta_service_t *s, const char *const *topics, size_t ntopics,
                                  const deta_event_route_t *routes, size_t nroutes,
                                  void *opaque, const deta_consumer_opts_t *opts, char *errstr,
                                  size_t errsize);
/* The same with the dispatch's options (NULL: the defaults, as
 * deta_service_on_events), e.g. own_key for a consumer whose routes are all
 * idempotent by their own keys. The options are per call: each consumer of a
 * service chooses its own. */
deta_err_t deta_service_on_events_opts(deta_service_t *s, const char *const *topics,
                                       size_t ntopics, const deta_event_route_t *routes,
                                       size_t nroutes, void *opaque,
                                       const deta_consumer_opts_t *opts,
                                       const deta_event_dispatch_opts_t *dispatch_opts,
                                       char *errstr, size_t errsize);

/* What an own_key handler returns, from err (its statements' outcome) and
 * duplicate (its key showed the event applied before: nothing to do). A
 * DETA_ERR_CONFLICT in err is a unique violation of some other key, a bug, not
 * the duplicate that code tells the dispatcher: it becomes DETA_ERR_INTERNAL
 * (dead-lettered). Then duplicate gives DETA_ERR_CONFLICT, else err. */
deta_err_t deta_event_own_result(deta_err_t err, bool duplicate);

/* The same steps for one message, for a service that drives its own consumer
 * (and for tests): parse, check, claim (unless own_key), apply, commit. */
typedef struct deta_event_dispatch deta_event_dispatch_t;
deta_event_dispatch_t *deta_event_dispatch_new(deta_service_t *s, const deta_event_route_t *routes,
                                               size_t nroutes, void *opaque);
/* The same with options (NULL: the defaults, as deta_event_dispatch_new). */
deta_event_dispatch_t *deta_event_dispatch_new_opts(deta_service_t *s,
                                                    const deta_event_route_t *routes,
                                                    size_t nroutes, void *opaque,
                                                    const deta_event_dispatch_opts_t *opts);
void deta_event_dispatch_free(deta_event_dispatch_t *d);
deta_err_t deta_event_dispatch(const deta_kafka_msg_t *msg, void *dispatch, char *errstr,
                               size_t errsize);
/* The same for several messages at once, a deta_consume_batch_fn whose opaque is
 * the dispatch (deta_consumer_opts_t.batch_fn; deta_service_on_events passes the
 * dispatch as opaque, so setting opts.batch_fn to this batches its consumer):
 * one transaction, each message claimed (unless own_key) and applied
 * (deta/batch.h). A message that is malformed, has the wrong key or producer or
 * a payload its route's check refuses is left out before the transaction and
 * reported in results/why (to be dead-lettered), and a duplicate is left out;
 * the rest commit together. Any other failure of a handler (transient or not),
 * or a failed commit, rolls back the whole batch and is returned: the
 * consumer then handles the messages one at a time. A batch with nothing to
 * apply (ignored types and refusals only) opens no transaction. Metrics and log
 * lines are those of deta_event_dispatch, recorded once the batch committed (or
 * needed no transaction). */
deta_err_t deta_event_dispatch_batch(const deta_kafka_msg_t *msgs, size_t n, void *dispatch,
                                     deta_err_t *results, char (*why)[DETA_KAFKA_WHY_MAX]);
/* The same with the batch's row-lock waits bounded by lock_timeout_ms (0: the
 * connection's PG_LOCK_TIMEOUT_MS), for handlers that lock rows shared between
 * orders (deta/batch.h says why): a batch wrapper of the service's calls it with
 * the dispatch deta_service_on_events passes as opaque. */
deta_err_t deta_event_dispatch_batch_bounded(const deta_kafka_msg_t *msgs, size_t n,
                                             void *dispatch, int lock_timeout_ms,
                                             deta_err_t *results,
                                             char (*why)[DETA_KAFKA_WHY_MAX]);

#endif
