/*
 * batch.c - several messages in one transaction, a savepoint each (see
 * deta/batch.h).
 *
 * Inside a live transaction SAVEPOINT and RELEASE cannot fail: a failed message
 * is rolled back to its savepoint, so the transaction is never left aborted. A
 * lost connection fails the message's first statement and then the rollback to
 * its savepoint: that is transient, and the whole batch is rolled back.
 */
#include "deta/batch.h"

#include <stdio.h>

#define BATCH_SAVEPOINT "deta_batch_item"

/* One message under its savepoint: DETA_OK (applied, savepoint released), its
 * own non-transient error (rolled back alone) or TRANSIENT (the batch is lost). */
static deta_err_t apply_one(deta_db_t *db, size_t i, deta_batch_apply_fn apply, void *opaque,
                            char *why, size_t whysize) {
    if (deta_db_savepoint(db, BATCH_SAVEPOINT, why, whysize))
        return DETA_ERR_TRANSIENT;
    deta_err_t err = apply(db, i, opaque, why, whysize);
    if (err == DETA_ERR_TRANSIENT)
        return err;
    if (err) {
        char ignored[128];
        if (deta_db_rollback_to(db, BATCH_SAVEPOINT, ignored, sizeof ignored) != DETA_OK)
            return DETA_ERR_TRANSIENT;
        return err;
    }
    return deta_db_release(db, BATCH_SAVEPOINT, why, whysize) ? DETA_ERR_TRANSIENT : DETA_OK;
}

deta_err_t deta_batch_run(deta_db_t *db, size_t n, int lock_timeout_ms,
                          deta_batch_apply_fn apply, void *opaque, deta_err_t *results,
                          char (*why)[DETA_KAFKA_WHY_MAX], size_t *failed, char *errstr,
                          size_t errsize) {
    *failed = n;
    if (deta_db_begin(db, errstr, errsize) != DETA_OK)
        return DETA_ERR_TRANSIENT;
    if (lock_timeout_ms > 0) {
        char sql[64];
        snprintf(sql, sizeof sql, "SET LOCAL lock_timeout = %d", lock_timeout_ms);
        if (deta_db_run(db, sql, 0, NULL, errstr, errsize) != DETA_OK) {
            deta_db_rollback(db);
            return DETA_ERR_TRANSIENT;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (results[i] != DETA_OK)
            continue;
        results[i] = apply_one(db, i, apply, opaque, why[i], DETA_KAFKA_WHY_MAX);
        if (results[i] == DETA_ERR_TRANSIENT) {
            *failed = i;
            deta_db_rollback(db);
            return DETA_ERR_TRANSIENT;
        }
    }
    return deta_db_commit(db, errstr, errsize) ? DETA_ERR_TRANSIENT : DETA_OK;
}
