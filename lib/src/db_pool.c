/*
 * db_pool.c - the per-thread pool of Postgres handles (deta_db_pool_* of
 * deta/db.h): perthread.c (shared with redis.c) with deta_db_new as the
 * constructor. Each thread gets a deta_db_t of its own, closed when the thread
 * exits; deta_db_pool_free() closes those of threads still alive (or of the
 * main thread, whose key destructors never run). The pool must outlive the
 * threads that use it, or they must have exited before it is freed.
 */
#include "deta/db.h"

#include <stdlib.h>

#include "perthread.h"

struct deta_db_pool {
    deta_config_t cfg; /* the constructor's argument, for the pool's lifetime */
    deta_perthread_t *threads;
};

static void *pool_make(const void *cfg) { return deta_db_new(cfg); }
static void pool_destroy(void *obj) { deta_db_free(obj); }

deta_db_pool_t *deta_db_pool_new(const deta_config_t *cfg) {
    if (!cfg)
        return NULL;
    deta_db_pool_t *pool = calloc(1, sizeof *pool);
    if (pool) {
        pool->cfg = *cfg;
        pool->threads = deta_perthread_new(&pool->cfg, pool_make, pool_destroy);
    }
    if (pool && !pool->threads) {
        free(pool);
        return NULL;
    }
    return pool;
}

deta_db_t *deta_db_pool_get(deta_db_pool_t *pool) {
    return pool ? deta_perthread_get(pool->threads) : NULL;
}

void deta_db_pool_free(deta_db_pool_t *pool) {
    if (!pool)
        return;
    deta_perthread_free(pool->threads);
    free(pool);
}
