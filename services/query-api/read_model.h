/*
 * read_model.h - where the read model is kept, behind an interface narrow enough
 * that another store can take Postgres's place.
 *
 * The seed keeps the read model in Cassandra (keyspace delivery_query, table
 * order_view). No Cassandra runs on the machines this project is built and tested
 * on, so the local stack keeps it in Postgres (database delivery_query), in
 * read_model_pg.c, the one implementation of these functions today. The interface is
 * what the rest of the service needs and nothing more: prepare the schema, apply
 * one event, get one order, list a page, read a timeline, count by status.
 * Nothing here names SQL; the rules of the fold live in domain.c.
 *
 * A Cassandra implementation (read_model_cql.c, chosen at build time instead of
 * read_model_pg.c) would keep:
 *   - order_view keyed by order_id, written by reading the row, folding the change
 *     with query_view_merge() and writing it back with a lightweight transaction
 *     conditioned on the row's version (retried on a lost race);
 *   - order_events keyed by (order_id, occurred_at, event_id), written with
 *     INSERT ... IF NOT EXISTS, so a duplicate adds no row;
 *   - for the list, a table partitioned by a time bucket and clustered by
 *     (first_seen_at DESC, order_id DESC), and one per filter it serves.
 * Both stores are safe without the processed-events claim: applying an event twice
 * folds to the same row (domain.h), which is what makes the swap possible.
 *
 * Threads: every function may be called from any thread; the Postgres model uses
 * the calling thread's connection of the service's pool.
 */
#ifndef QUERY_READ_MODEL_H
#define QUERY_READ_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>

#include "deta/db.h"
#include "deta/service.h"
#include "domain.h"

typedef struct read_model read_model_t;

/* One page of the list, newest first (by first_seen_at, then order_id). */
typedef struct query_page {
    query_view_t *items; /* malloc'd */
    size_t n;
    bool more; /* rows follow the last item */
} query_page_t;

/* An order's events in occurredAt order, ties in the order they were applied. */
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

read_model_t *read_model_new(deta_service_t *svc);
void read_model_free(read_model_t *rm);

/* Creates or migrates the store's schema (waits while the store is unreachable). */
deta_err_t read_model_prepare(read_model_t *rm, char *errstr, size_t errsize);

typedef struct read_model_outcome {
    bool applied;        /* false: the event was in the timeline already */
    bool status_changed; /* this event moved the order's status */
} read_model_outcome_t;

/* Applies one event: its timeline entry and its fold into the order's view.
 * tx is the transaction in which the consumer claimed the event; the Postgres
 * model writes in it, so claim, entry and view commit together. An event already
 * in the timeline (same eventId) changes nothing. DETA_ERR_TRANSIENT when the
 * store is away. */
deta_err_t read_model_apply(read_model_t *rm, deta_db_t *tx, const query_change_t *c,
                            read_model_outcome_t *out, char *errstr, size_t errsize);

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

#endif
