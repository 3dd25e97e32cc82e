/*
 * feed.h - query-api's feed (docs/console.md, "Live updates"): the table
 * stream_feed in query-api's Postgres database, whatever QUERY_STORE is. One row
 * per event the read model applied, written after the event's view (in the
 * consumer's transaction, so with the Postgres store in the same transaction as
 * the view), with the view's status and customerId after the event. The insert's
 * transaction has a transaction id before it takes a sequence number, which the
 * reader's gap rule relies on (rules.h). A redelivered
 * event adds nothing: it never reaches the insert (FEED_INSERT_FROM), so it takes
 * no sequence number either and redeliveries leave no gaps for the reader to wait
 * on. The insert NOTIFYs channel stream_feed, delivered at commit, which wakes
 * the readers.
 */
#ifndef QUERY_STREAM_FEED_H
#define QUERY_STREAM_FEED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "deta/db.h"
#include "deta/service.h"
#include "query-api/stream/sse.h"

#define FEED_CHANNEL "stream_feed"

/* The feed's insert, as a part of the caller's statement: the rows of src (a
 * relation of that statement with the columns event_id uuid, order_id,
 * event_type, topic text, occurred_at timestamptz, status, customer_id text or
 * NULL), returning each new row's seq. The Postgres read model folds it into
 * its statement, so that an event costs one round trip (read_model_pg.c);
 * feed_append runs it alone (the Cassandra store).
 *   pg_current_xact_id() in the WHERE clause gives the transaction its id, if it
 * has none yet, before the projection that takes the sequence number: the gap
 * rule (rules.h) needs every holder of a number to be visible by its id.
 *   A redelivered event never reaches it, so it neither checks nor takes a number
 * for one: the Postgres read model inserts from its timeline's new row only (the
 * event id is the timeline's key; a batch, from the events its timeline insert
 * takes, in the same statement, which fails whole on that key), and with Cassandra's the dispatcher's claim of
 * the event id, in the same transaction, lets one delivery through (two racing
 * ones meet at the claim's key). No ON CONFLICT, so no speculative insertion (a
 * WAL record per event). The unique index on event_id stays: instances of the
 * previous version name it in their ON CONFLICT, and should a delivery ever get
 * past the rules above, its insert fails loudly (dead-lettered) rather than
 * adding a second row. */
#define FEED_INSERT_FROM(src)                                                             \
    "INSERT INTO stream_feed (event_id, order_id, event_type, topic, occurred_at,"        \
    "  status, customer_id, created_at)"                                                  \
    " SELECT s.event_id, s.order_id, s.event_type, s.topic, s.occurred_at, s.status,"     \
    "  s.customer_id, clock_timestamp() FROM " src " s"                                   \
    " WHERE pg_current_xact_id() IS NOT NULL RETURNING seq"
/* The NOTIFY that wakes the readers at commit, as an expression: select it from
 * the rows FEED_INSERT_FROM returned, so that it is sent only when one was new. */
#define FEED_NOTIFY "pg_notify('" FEED_CHANNEL "', '')"

/* Creates or migrates the table (component "query-feed"). */
deta_err_t feed_prepare(deta_service_t *svc, char *errstr, size_t errsize);

/* What one applied event adds. status and customer_id "" for NULL. */
typedef struct feed_entry {
    const char *event_id, *order_id, *event_type, *topic, *occurred_at;
    const char *status, *customer_id;
} feed_entry_t;

/* In tx (the consumer's transaction), one statement: for a store whose own
 * statement does not write the feed (read_model_outcome_t.feed_written). */
deta_err_t feed_append(deta_db_t *tx, const feed_entry_t *e, char *errstr, size_t errsize);

/* Rows with after < seq <= upto (upto < 0: no bound), of order_id (NULL: all),
 * in seq order, at most max into rows; *n how many. With holders (a list from
 * feed_holders, else NULL), *settled says whether the read's snapshot shows every
 * one of them ended (rules.h, the gap rule); without, it is false. */
deta_err_t feed_read(deta_db_t *db, int64_t after, int64_t upto, const char *order_id,
                     const char *holders, feed_row_t *rows, size_t max, size_t *n,
                     bool *settled, char *errstr, size_t errsize);
/* The transactions of query-api's database open now with a transaction id, as
 * Postgres xid8[] literals (malloc'd): into *holders those not in given_up (a
 * list from an earlier call, or NULL), into *still_given_up those that are. */
deta_err_t feed_holders(deta_db_t *db, const char *given_up, char **holders,
                        char **still_given_up, char *errstr, size_t errsize);
/* Whether this statement's snapshot shows every one of holders (a list from
 * feed_holders) ended. */
deta_err_t feed_ended(deta_db_t *db, const char *holders, bool *ended, char *errstr,
                      size_t errsize);
/* Oldest and newest seq (0 when empty). */
deta_err_t feed_bounds(deta_db_t *db, int64_t *oldest, int64_t *newest, char *errstr,
                       size_t errsize);
/* How many rows after < seq <= upto of order_id (NULL: all) there are, counting
 * at most limit. */
deta_err_t feed_count(deta_db_t *db, int64_t after, int64_t upto, const char *order_id,
                      long limit, long *n, char *errstr, size_t errsize);

/* The retention purge of the feed as a task of svc's main loop (rows older than
 * hours by created_at); the service frees it. */
deta_err_t feed_retain(deta_service_t *svc, long hours, char *errstr, size_t errsize);

#endif
