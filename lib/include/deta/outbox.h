/*
 * outbox.h - the transactional outbox.
 *
 * A service writes its events with deta_outbox_add() inside the same transaction
 * as its state change; the insert also issues pg_notify('deta_outbox', ...), which
 * Postgres delivers on commit. The relay, a thread with its own connection,
 * LISTENs on that channel and wakes at once (with a fallback poll every
 * DETA_OUTBOX_POLL_MS in case a notification was lost across a reconnect). It
 * publishes unsent rows in id order, in batches, waits for the broker's
 * acknowledgement and only then marks them sent (the marks ride on the relay's
 * next statement, so a turn is one transaction; see outbox.c); a failed publish
 * is retried with backoff. Only one relay per database publishes at a time (a session advisory
 * lock), so rows keep their order even with several instances running; the
 * others wait as standby. A relay whose connection was replaced (deta_db
 * reconnects by itself) has lost the lock: it publishes nothing it reads on the
 * new session and takes the lock again first. The lock and LISTEN are session
 * state: the relay needs a session-mode connection (directly to Postgres, or a
 * pooler in session mode; not PgBouncer in transaction mode). Published rows are
 * deleted after a retention period (OUTBOX_RETENTION_S).
 *
 * A row the broker refuses for good (too large, topic not authorised) is parked
 * (columns parked_at, parked_reason) and the rows behind it go on; later rows of
 * the same order are parked behind it, so an order's events never overtake each
 * other. Parked rows stay until someone clears parked_at (they are published
 * again, in id order) or deletes them.
 *
 * Ordering: rows of one order are written by transactions that serialize on that
 * order's rows, so their ids ascend in commit order and they are published in the
 * order they happened.
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

/* Inside the caller's open transaction: queue ev for topic (key = ev->order_id). */
deta_err_t deta_outbox_add(deta_db_t *db, const char *topic, const deta_event_t *ev,
                           char *errstr, size_t errsize);

typedef struct deta_outbox_relay deta_outbox_relay_t;

/* producer borrowed; metrics optional (deta_outbox_published_total,
 * deta_outbox_publish_errors_total, deta_outbox_pending gauge (rows),
 * deta_outbox_oldest_pending_age_seconds gauge (0 when none pending),
 * deta_outbox_parked_total, deta_outbox_parked gauge: alert when above 0). */
deta_outbox_relay_t *deta_outbox_relay_new(const deta_config_t *cfg, deta_producer_t *producer,
                                           deta_metrics_t *metrics, char *errstr,
                                           size_t errsize);
deta_err_t deta_outbox_relay_start(deta_outbox_relay_t *r, char *errstr, size_t errsize);
/* Stops the relay within within_ms: it finishes the batch in hand, publishes what
 * else it can until then, and its thread has ended when this returns (a send
 * still unacknowledged at the deadline is abandoned: its rows stay unpublished
 * and go out after the restart, perhaps twice). DETA_OK when it left nothing
 * unpublished (or is a standby); DETA_ERR_TRANSIENT when rows were left. Once. */
deta_err_t deta_outbox_relay_stop(deta_outbox_relay_t *r, int within_ms);
/* Stops (within DETA_OUTBOX_FINAL_FLUSH_MS unless deta_outbox_relay_stop ran),
 * frees. NULL is fine. */
#define DETA_OUTBOX_FINAL_FLUSH_MS 5000
void deta_outbox_relay_free(deta_outbox_relay_t *r);

#endif
