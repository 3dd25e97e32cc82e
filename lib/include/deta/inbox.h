/*
 * inbox.h - idempotent consumption: a processed-events table keyed by
 * (consumer, event id), written in the same transaction as the consumer's effects.
 *
 * A handler begins its transaction, calls deta_inbox_claim(); when *first is
 * false the event was applied before and the handler commits nothing else. Since
 * the claim and the effects commit together, a crash between them leaves neither.
 *
 * Claims are kept for INBOX_RETENTION_HOURS (default 168, a week; 0 keeps them
 * for ever), then purged in small batches by the retention purge
 * (deta/retention.h) that deta_service_use_inbox schedules on the main loop. A claim is what makes a redelivered
 * event a no-op, so the retention must be longer than any event can come back:
 * Kafka's retention of the raw topics (a consumer group reset to the earliest
 * offset) and the age of dead letters that may be replayed. Past it, such an
 * event would be applied a second time.
 */
#ifndef DETA_INBOX_H
#define DETA_INBOX_H

#include <stdbool.h>
#include <stddef.h>
#include "deta/config.h"
#include "deta/db.h"
#include "deta/metrics.h"
#include "deta/retention.h"

extern const deta_migration_t deta_inbox_migrations[];
extern const size_t deta_inbox_migrations_count;

/* DETA_ERR_TRANSIENT (from deta_db: a lost connection, a lock or statement
 * timeout, a read-only server) means retry: the consumer waits it out. */
deta_err_t deta_inbox_claim(deta_db_t *db, const char *consumer, const char *event_id,
                            bool *first, char *errstr, size_t errsize);

/* Deletes at most max_rows claims older than retention_s seconds (any consumer);
 * *purged = how many went. */
deta_err_t deta_inbox_purge(deta_db_t *db, long retention_s, int max_rows, long *purged,
                            char *errstr, size_t errsize);

/* The service's purge of claims older than cfg's INBOX_RETENTION_HOURS
 * (config.h), counted in deta_inbox_purged_total when metrics is given; run and
 * free it as any deta_retention_t. NULL with errstr when cfg is NULL or on no
 * memory. */
deta_retention_t *deta_inbox_purger_new(const deta_config_t *cfg, deta_metrics_t *metrics,
                                        char *errstr, size_t errsize);

#endif
