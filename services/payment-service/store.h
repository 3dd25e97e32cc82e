/*
 * store.h - payment-service's SQL (database delivery_eta): the payments table,
 * the idempotency check, the recording of a decided payment with its event, and
 * the payment of an order for the REST API.
 */
#ifndef PAYMENT_STORE_H
#define PAYMENT_STORE_H

#include <stdbool.h>
#include <jansson.h>

#include "deta/db.h"
#include "domain.h"

extern const deta_migration_t payment_migrations[];
extern const size_t payment_migrations_count;

/* Is there a payment for this idempotency key (event id) or this order already?
 * *found says; payment_id (37 bytes) receives its id when found. */
deta_err_t payment_store_find(deta_db_t *db, const char *event_id, const char *order_id,
                              bool *found, char *payment_id, char *errstr, size_t errsize);

/* One transaction: the payment row and its event in the outbox. When another
 * payment for the same key or order won (a unique violation), nothing is written
 * and *recorded is false: a duplicate, not an error. */
deta_err_t payment_store_record(deta_db_t *db, const payment_t *p, const deta_event_t *ev,
                                bool *recorded, char *errstr, size_t errsize);

/* The Redis lock's stand-in while Redis is down: a Postgres session advisory lock
 * on the order, tried without waiting (*got false: another consumer holds it).
 * Held on this thread's connection; a lost connection releases it by itself. */
deta_err_t payment_store_try_lock_order(deta_db_t *db, const char *order_id, bool *got,
                                        char *errstr, size_t errsize);
void payment_store_unlock_order(deta_db_t *db, const char *order_id);

/* The order's payment as the REST API shows it, or DETA_ERR_NOT_FOUND. */
deta_err_t payment_store_get(deta_db_t *db, const char *order_id, json_t **out, char *errstr,
                             size_t errsize);

#endif
