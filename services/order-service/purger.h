/*
 * purger.h - the purge of idempotency keys older than ORDER_IDEMPOTENCY_TTL_HOURS,
 * a periodic task of the service's main loop (deta_service_add_task).
 */
#ifndef ORDER_PURGER_H
#define ORDER_PURGER_H

#include "deta/service.h"
#include "settings.h"

#define ORDER_PURGE_EVERY_MS 10000
#define ORDER_PURGE_BATCH 1000  /* rows per DELETE: short row locks, short statements */
#define ORDER_PURGE_BATCHES 10  /* DELETEs per run at most: the main loop goes on */

typedef struct order_purger order_purger_t;

/* Counts in order_idempotency_keys_purged_total (svc's metrics). NULL when out of
 * memory. */
order_purger_t *order_purger_new(deta_service_t *svc, const order_settings_t *settings);
/* The task (deta_service_task_fn): when due, purges on db; a failure is logged and
 * tried again at the next due time, a full last batch (a backlog) at the next call. */
void order_purger_run(void *purger, deta_db_t *db);
void order_purger_free(void *purger);

#endif
