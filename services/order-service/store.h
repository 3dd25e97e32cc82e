/*
 * store.h - order-service's SQL: its schema and the two things it does with it.
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

/* Deletes at most max_rows idempotency keys created more than ttl_s seconds ago;
 * *purged = how many went. */
deta_err_t order_store_purge_keys(deta_db_t *db, long ttl_s, int max_rows, long *purged,
                                  char *errstr, size_t errsize);

/* The order as the REST API shows it, or DETA_ERR_NOT_FOUND. */
deta_err_t order_store_get(deta_db_t *db, const char *order_id, json_t **out, char *errstr,
                           size_t errsize);

#endif
