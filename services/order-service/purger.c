/*
 * purger.c - idempotency keys deleted once ORDER_IDEMPOTENCY_TTL_HOURS have passed
 * since their order was created.
 *
 * It runs on the service's main thread (deta_service_add_task), like libdeta's
 * inbox purge and with its batching: at most ORDER_PURGE_BATCHES DELETEs of
 * ORDER_PURGE_BATCH rows each time it is due, every ORDER_PURGE_EVERY_MS, and at
 * once again while a backlog is left. Several instances purging at once only skip
 * each other's rows.
 */
#include "purger.h"

#include <stdbool.h>
#include <stdlib.h>

#include "deta/clock.h"
#include "deta/log.h"
#include "store.h"

struct order_purger {
    long ttl_s;
    long next_ms;
    deta_counter_t *purged;
};

order_purger_t *order_purger_new(deta_service_t *svc, const order_settings_t *settings) {
    order_purger_t *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->ttl_s = settings->idempotency_ttl_hours * 3600;
    p->next_ms = deta_clock_ms();
    p->purged = deta_counter(deta_service_metrics(svc), "order_idempotency_keys_purged_total",
                             "Idempotency keys deleted after ORDER_IDEMPOTENCY_TTL_HOURS", NULL);
    return p;
}

void order_purger_run(void *purger, deta_db_t *db) {
    order_purger_t *p = purger;
    if (!p || !db || deta_clock_ms() < p->next_ms)
        return;
    long total = 0, n = ORDER_PURGE_BATCH;
    char why[256] = "";
    deta_err_t err = DETA_OK;
    for (int i = 0; i < ORDER_PURGE_BATCHES && n == ORDER_PURGE_BATCH && !err; i++) {
        err = order_store_purge_keys(db, p->ttl_s, ORDER_PURGE_BATCH, &n, why, sizeof why);
        total += err ? 0 : n;
    }
    if (err)
        DETA_WARN("idempotency key purge failed (tried again in %d ms): %s",
                  ORDER_PURGE_EVERY_MS, why);
    if (total > 0) {
        deta_counter_add(p->purged, (double)total);
        DETA_DEBUG("idempotency key purge: %ld keys older than %ld h deleted", total,
                   p->ttl_s / 3600);
    }
    bool backlog = !err && n == ORDER_PURGE_BATCH;
    p->next_ms = deta_clock_ms() + (backlog ? 0 : ORDER_PURGE_EVERY_MS);
}

void order_purger_free(void *purger) { free(purger); }
