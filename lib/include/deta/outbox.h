/*
 * outbox.h - the transactional outbox.
 *
 * A service writes its events with deta_outbox_add() inside the same transaction
 * as its state change (deta_outbox_add_many: several events of one order in one
 * statement; deta_outbox_add_each: events of many orders in one): a row of
 * the outbox table, which exists only if the transaction commits. The relay,
 * a thread with its own connections, reads those rows from Postgres's
 * write-ahead log, not from the table: a logical replication slot
 * (deta_outbox_<database>) streams the publication deta_outbox (the table's
 * inserts) with the pgoutput plugin, and Postgres sends each committed
 * transaction whole, in commit order, as soon as it commits. The relay
 * publishes the rows in batches, waits for the broker's acknowledgement and
 * only then confirms the stream past them; a failure streams again from the
 * last confirmed position (at-least-once). Nothing
 * polls the table, and nothing marks its rows: the slot's confirmed position
 * is the relay's progress. Only one session can stream a slot, so with several
 * instances running one publishes and the others stand by, looking every
 * DETA_OUTBOX_POLL_MS (with SQL: a standby holds no replication connection),
 * and take over when its session ends. Rows are deleted
 * after a retention period (OUTBOX_RETENTION_S).
 *
 * The server needs wal_level = logical, and the service's role the
 * REPLICATION attribute (deta_outbox_check_server says so at start). A slot
 * keeps the WAL its relay has not confirmed: a service removed for good must
 * have its slot dropped (infra/README.md), and the server's
 * max_slot_wal_keep_size bounds what an abandoned slot can hold; the relay
 * reports every logical slot's retained WAL (deta_outbox_slot_retained_bytes)
 * and whether the server gave it up (deta_outbox_slot_lost).
 *
 * A row the broker refuses for good (too large, topic not authorised) is parked
 * (columns parked_at, parked_reason) and the rows behind it go on; later rows of
 * the same order are parked behind it, so an order's events never overtake each
 * other. After fixing the cause, clearing parked_at (leaving parked_reason)
 * publishes the cleared rows again, in id order; the relay then clears
 * parked_reason.
 *
 * Ordering: rows of one order are written by transactions that serialize on that
 * order's rows, so they commit, and are streamed and published, in the order
 * they happened.
 */
#ifndef DETA_OUTBOX_H
#define DETA_OUTBOX_H

#include <stddef.h>
#include "deta/config.h"
#include "deta/db.h"
#include "deta/envelope.h"
#include "deta/kafka.h"
#include "deta/metrics.h"

#define DETA_OUTBOX_POLL_MS 1000

/* The outbox table's migrations, component "outbox". */
extern const deta_migration_t deta_outbox_migrations[];
extern const size_t deta_outbox_migrations_count;

/* DETA_OK when the server can serve the relay: wal_level = logical and a role
 * with REPLICATION; DETA_ERR_INVALID with the reason otherwise. */
deta_err_t deta_outbox_check_server(deta_db_t *db, char *errstr, size_t errsize);

/* Inside the caller's open transaction: queue ev for topic (key = ev->order_id). */
deta_err_t deta_outbox_add(deta_db_t *db, const char *topic, const deta_event_t *ev,
                           char *errstr, size_t errsize);

#define DETA_OUTBOX_ADD_MAX 8
/* The same for n (1..DETA_OUTBOX_ADD_MAX) events of one order (one key), evs[i]
 * for topics[i], in one statement (one round trip), published in the order
 * given (each topic keeps that order; two topics are two streams);
 * DETA_ERR_INVALID when n is out of range, a topic is missing or the events'
 * orderIds differ. */
deta_err_t deta_outbox_add_many(deta_db_t *db, const char *const *topics,
                                const deta_event_t *const *evs, size_t n, char *errstr,
                                size_t errsize);

#define DETA_OUTBOX_EACH_MAX 256
/* The same for n (1..DETA_OUTBOX_EACH_MAX) events of any orders, each keyed by
 * its own orderId, in one statement whatever n (a batch's events: a ticker's
 * turn); published in the order given within each key and topic. */
deta_err_t deta_outbox_add_each(deta_db_t *db, const char *const *topics,
                                const deta_event_t *const *evs, size_t n, char *errstr,
                                size_t errsize);

typedef struct deta_outbox_relay deta_outbox_relay_t;

/* producer borrowed; metrics optional (deta_outbox_published_total,
 * deta_outbox_publish_errors_total, deta_outbox_pending gauge (rows in hand not
 * acknowledged), deta_outbox_oldest_pending_age_seconds gauge (the oldest row
 * not published after a failure; 0 when none), deta_outbox_parked_total,
 * deta_outbox_parked gauge: alert when above 0, and per logical slot of the
 * server deta_outbox_slot_retained_bytes and deta_outbox_slot_lost). */
deta_outbox_relay_t *deta_outbox_relay_new(const deta_config_t *cfg, deta_producer_t *producer,
                                           deta_metrics_t *metrics, char *errstr,
                                           size_t errsize);
deta_err_t deta_outbox_relay_start(deta_outbox_relay_t *r, char *errstr, size_t errsize);
/* Stops the relay within within_ms: it publishes what was committed before the
 * call, as far as it can until then, and its thread has ended when this returns
 * (a send still unacknowledged at the deadline is abandoned: its rows are
 * streamed again after the restart, perhaps twice). DETA_OK when it left nothing
 * unpublished (or is a standby); DETA_ERR_TRANSIENT when rows were left. Once. */
deta_err_t deta_outbox_relay_stop(deta_outbox_relay_t *r, int within_ms);
/* Stops (within DETA_OUTBOX_FINAL_FLUSH_MS unless deta_outbox_relay_stop ran),
 * frees. NULL is fine. */
#define DETA_OUTBOX_FINAL_FLUSH_MS 5000
void deta_outbox_relay_free(deta_outbox_relay_t *r);

#endif
