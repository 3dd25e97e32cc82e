/*
 * store.h - order-service's SQL: its schema, orders, cancel requests and the
 * order's events followed.
 */
#ifndef ORDER_STORE_H
#define ORDER_STORE_H

#include <jansson.h>

#include "deta/db.h"
#include "domain.h"

extern const deta_migration_t order_migrations[];
extern const size_t order_migrations_count;

/* One transaction: the order, its items and its order.created outbox row. */
deta_err_t order_store_create(deta_db_t *db, const order_t *o, char *errstr, size_t errsize);

/* What order_store_create_keyed did with a request that carries an idempotency key. */
typedef enum order_keyed_outcome {
    ORDER_KEYED_CREATED,  /* the key was new: the order was written with it */
    ORDER_KEYED_REPLAYED, /* the key's earlier request was this one: *existing is its order */
    ORDER_KEYED_REUSED,   /* the key was used with another request: nothing written */
} order_keyed_outcome_t;

/* order_store_create under an Idempotency-Key: one transaction writes the key
 * (with the SHA-256 of canonical, order_request_canonical's text, and the
 * order's id and creation instant), the order and its outbox row; when the key
 * exists (a transaction in flight with it is waited for) nothing is written and
 * the earlier order decides: REPLAYED with *existing (a new reference: the 201's
 * fields, status as it is now) or REUSED. */
deta_err_t order_store_create_keyed(deta_db_t *db, const order_t *o, const char *key,
                                    const char *canonical, order_keyed_outcome_t *outcome,
                                    json_t **existing, char *errstr, size_t errsize);


/* The order as the REST API shows it, or DETA_ERR_NOT_FOUND. */
deta_err_t order_store_get(deta_db_t *db, const char *order_id, json_t **out, char *errstr,
                           size_t errsize);

/* One transaction: the cancel request is written (with its order.cancel_requested
 * outbox row, at requested_at; reason NULL for none) when the order has none yet
 * and is in a cancellable state, *requested then true; either way *order is the
 * order as GET shows it afterwards (a new reference), or DETA_ERR_NOT_FOUND. */
deta_err_t order_store_request_cancel(deta_db_t *db, const char *order_id, const char *reason,
                                      const char *requested_at, bool *requested, json_t **order,
                                      char *errstr, size_t errsize);

/* One transaction: folds eff's state into the order's status (strictly higher
 * rank only) and records its verdict (over none or a request only). */
deta_err_t order_store_apply_event(deta_db_t *db, const order_event_effect_t *eff,
                                   order_event_result_t *result, char *errstr, size_t errsize);
/* The same statements inside the transaction the caller opened (a batch's:
 * deta/batch.h). */
deta_err_t order_store_apply_event_in(deta_db_t *db, const order_event_effect_t *eff,
                                      order_event_result_t *result, char *errstr,
                                      size_t errsize);

/* The status changes of n effects that set a state and record no verdict
 * (order_effect_foldable), applied in one statement inside the caller's
 * transaction (one per ORDER_STORE_FOLD_ROWS_MAX effects, a batch's most): each
 * order takes the highest rank among its effects when that is above its own.
 * before[i] is effs[i]'s order's rank as the statement found it, -1 when there
 * is no such order (for order_fold_outcomes). */
#define ORDER_STORE_FOLD_ROWS_MAX 64
deta_err_t order_store_fold_status(deta_db_t *db, const order_event_effect_t *const *effs,
                                   size_t n, int *before, char *errstr, size_t errsize);

#endif
