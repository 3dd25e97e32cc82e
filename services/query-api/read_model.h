/*
 * read_model.h - where the read model is kept, behind an interface narrow enough
 * that the store is chosen at run time: QUERY_STORE=postgres (read_model_pg.c,
 * database delivery_query) or QUERY_STORE=cassandra (read_model_cql.c, keyspace
 * CASSANDRA_KEYSPACE; docs/read-model-cassandra.md). read_model.c picks one and
 * dispatches through its table of functions (read_model_ops_t).
 *
 * The interface is what the rest of the service needs and nothing more: prepare
 * the schema, apply one event, get one order, list a page, read a timeline, count
 * by status, and tell whether the store is there. Nothing here names SQL or CQL;
 * the rules of the fold live in domain.c. Both stores answer alike: the same
 * views (query_view_merge()'s fold), the same list order and cursor, the same
 * timeline order (occurredAt, then eventId).
 *
 * Whatever the store, the dead letters (deadletters/) stay in query-api's
 * Postgres database, and so do the consumer's inbox claims (processed_events)
 * where the store needs them (read_model_needs_claim: Cassandra's does, the
 * Postgres store's own key does their work).
 *
 * Threads: every function may be called from any thread; each store uses the
 * calling thread's connection of its pool.
 */
#ifndef QUERY_READ_MODEL_H
#define QUERY_READ_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>

#include "deta/db.h"
#include "deta/service.h"
#include "domain.h"
#include "settings.h"

typedef struct read_model read_model_t;

/* One page of the list, newest first (by first_seen_at, then order_id). */
typedef struct query_page {
    query_view_t *items; /* malloc'd */
    size_t n;
    bool more; /* rows follow the last item */
} query_page_t;

/* An order's events in occurredAt order, ties by eventId (so a timeline never
 * depends on the order the events arrived in). */
typedef struct query_timeline {
    query_timeline_entry_t *entries; /* malloc'd; each owns its payload */
    size_t n;
} query_timeline_t;

static inline void query_page_clear(query_page_t *p) {
    free(p->items);
    p->items = NULL;
    p->n = 0;
}

static inline void query_timeline_clear(query_timeline_t *t) {
    for (size_t i = 0; i < t->n; i++)
        json_decref(t->entries[i].payload);
    free(t->entries);
    t->entries = NULL;
    t->n = 0;
}

/* The most events a timeline returns (an order has about ten). */
#define QUERY_TIMELINE_MAX 1000

/* The store settings->store names (Postgres: the service's database pool;
 * Cassandra: a connection pool of its own, settings->cassandra). Never connects.
 * NULL, with errstr, when out of memory or the settings do not fit the store. */
read_model_t *read_model_new(deta_service_t *svc, const query_settings_t *settings,
                             char *errstr, size_t errsize);
void read_model_free(read_model_t *rm);
/* "postgres" or "cassandra". */
const char *read_model_store_name(const read_model_t *rm);

/* Creates or migrates the store's schema, waiting (logged, with backoff) while
 * the store is unreachable; fails at once on an error that waiting does not cure
 * (bad credentials, no permission, a statement refused). */
deta_err_t read_model_prepare(read_model_t *rm, char *errstr, size_t errsize);

typedef struct read_model_outcome {
    bool applied;        /* false: the event was in the timeline already */
    bool rolled_back;    /* with applied false: tx is aborted (below) */
    bool status_changed; /* this event moved the order's status */
    /* The view after the event, for the feed (stream/feed.h); "" when unset. */
    char status[DETA_STATE_MAX];
    char customer_id[DETA_ID_MAX + 1];
    /* The order's createdAt after the event, in µs since the epoch; 0 while no
     * order.created has been applied (for the saga's stage durations). */
    int64_t created_us;
    /* The store's statement wrote the event's row of the live streams' feed
     * (stream/feed.h) too: the Postgres store, for an applied event. Otherwise
     * the consumer appends it (feed_append). */
    bool feed_written;
} read_model_outcome_t;

/* Applies one event: its timeline entry and its fold into the order's view.
 * tx is the consumer's transaction (in which it claimed the event, if the store
 * needs the claim). The Postgres store writes in it, so entry and view commit
 * together, and an event already in the timeline (same eventId) changes nothing
 * (applied false): the timeline's key is the claim, and the consumer makes no
 * other. When a concurrent transaction (another instance, in a rebalance)
 * inserted the same event first, the statement fails on the key once that
 * transaction commits: applied false and rolled_back true, tx aborted, for the
 * caller to roll back, as it does for any duplicate. The
 * Cassandra store ignores tx: its writes are idempotent, so an event
 * whose claim rolls back after it wrote folds to the same row when it comes again
 * (applied is always true: the claim, not the store, counts events once).
 * DETA_ERR_TRANSIENT when the store is away or overloaded (the consumer retries);
 * DETA_ERR_INTERNAL when it refuses a statement. */
deta_err_t read_model_apply(read_model_t *rm, deta_db_t *tx, const query_change_t *c,
                            read_model_outcome_t *out, char *errstr, size_t errsize);

/* Applies changes[0..n) in tx as read_model_apply would apply them one after
 * another, in their order: the same rows, and outs[i] what the i-th call would
 * have answered (an event given twice is the duplicate the second time). The
 * Postgres store does it in two statements for the whole batch, whatever n (a
 * redelivery it finds late costs one more: read_model_pg_batch.c). A concurrent transaction's row in the way (another
 * delivery of one of the events, or another first event of one of the new
 * orders) makes its statement fail once that transaction commits: then
 * *rolled_back, tx is aborted and outs mean nothing, and the caller rolls back
 * and applies the events one at a time, where read_model_apply settles the race.
 * Only for a store that read_model_batches (Postgres's): another answers
 * DETA_ERR_INTERNAL. */
deta_err_t read_model_apply_batch(read_model_t *rm, deta_db_t *tx, const query_change_t *changes,
                                  size_t n, read_model_outcome_t *outs, bool *rolled_back,
                                  char *errstr, size_t errsize);

/* Whether the store applies batches (read_model_apply_batch). */
bool read_model_batches(const read_model_t *rm);

/* DETA_ERR_NOT_FOUND when the read model has never heard of the order. */
deta_err_t read_model_get(read_model_t *rm, const char *order_id, query_view_t *out,
                          char *errstr, size_t errsize);

deta_err_t read_model_list(read_model_t *rm, const query_list_params_t *p, query_page_t *out,
                           char *errstr, size_t errsize);

/* DETA_ERR_NOT_FOUND when the order has no events. */
deta_err_t read_model_timeline(read_model_t *rm, const char *order_id, query_timeline_t *out,
                               char *errstr, size_t errsize);

deta_err_t read_model_stats(read_model_t *rm, query_stats_t *out, char *errstr,
                            size_t errsize);

/* For the health report: the store answers and its schema is in place. */
bool read_model_ping(read_model_t *rm, char *detail, size_t detailsize);

/* Whether the consumer must claim each event in processed_events before applying
 * it: true for Cassandra, whose writes ignore the consumer's transaction; false
 * for Postgres, where read_model_apply's applied is that claim, in the same
 * transaction (deta_event_dispatch_opts_t.own_key). */
bool read_model_needs_claim(const read_model_t *rm);

/* ---- the stores ---- */

/* One store's implementation of the functions above; impl is its own state. */
typedef struct read_model_ops {
    const char *name;
    bool needs_claim; /* read_model_needs_claim */
    void *(*open)(deta_service_t *svc, const query_settings_t *settings, char *errstr,
                  size_t errsize);
    void (*close)(void *impl);
    deta_err_t (*prepare)(void *impl, char *errstr, size_t errsize);
    deta_err_t (*apply)(void *impl, deta_db_t *tx, const query_change_t *c,
                        read_model_outcome_t *out, char *errstr, size_t errsize);
    /* NULL: no batches (read_model_batches). */
    deta_err_t (*apply_batch)(void *impl, deta_db_t *tx, const query_change_t *changes, size_t n,
                              read_model_outcome_t *outs, bool *rolled_back, char *errstr,
                              size_t errsize);
    deta_err_t (*get)(void *impl, const char *order_id, query_view_t *out, char *errstr,
                      size_t errsize);
    deta_err_t (*list)(void *impl, const query_list_params_t *p, query_page_t *out,
                       char *errstr, size_t errsize);
    deta_err_t (*timeline)(void *impl, const char *order_id, query_timeline_t *out,
                           char *errstr, size_t errsize);
    deta_err_t (*stats)(void *impl, query_stats_t *out, char *errstr, size_t errsize);
    bool (*ping)(void *impl, char *detail, size_t detailsize);
} read_model_ops_t;

/* rm's own state when its store is ops's, else NULL (for a store's test hooks). */
void *read_model_impl(read_model_t *rm, const read_model_ops_t *ops);

extern const read_model_ops_t read_model_pg_ops;  /* read_model_pg.c */
extern const read_model_ops_t read_model_cql_ops; /* read_model_cql.c */

#endif
