/*
 * inbox.h - idempotent consumption: a processed-events table keyed by
 * (consumer, event id), written in the same transaction as the consumer's effects.
 *
 * A handler begins its transaction, calls deta_inbox_claim(); when *first is
 * false the event was applied before and the handler commits nothing else. Since
 * the claim and the effects commit together, a crash between them leaves neither.
 */
#ifndef DETA_INBOX_H
#define DETA_INBOX_H

#include <stdbool.h>
#include <stddef.h>
#include "deta/db.h"

extern const deta_migration_t deta_inbox_migrations[];
extern const size_t deta_inbox_migrations_count;

deta_err_t deta_inbox_claim(deta_db_t *db, const char *consumer, const char *event_id,
                            bool *first, char *errstr, size_t errsize);

#endif
