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

/* The order as the REST API shows it, or DETA_ERR_NOT_FOUND. */
deta_err_t order_store_get(deta_db_t *db, const char *order_id, json_t **out, char *errstr,
                           size_t errsize);

#endif
