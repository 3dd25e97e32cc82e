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

/* One transaction: the holder's claim ends, the payment row and its event go to
 * the outbox. When another payment for the same key or order won (a unique
 * violation), nothing is written and *recorded is false: a duplicate, not an
 * error. A claim that is no longer the holder's (it expired) writes nothing and
 * answers DETA_ERR_TRANSIENT. */
deta_err_t payment_store_record(deta_db_t *db, const payment_t *p, const deta_event_t *ev,
                                const char *holder, bool *recorded, char *errstr,
                                size_t errsize);

/* The order's claim for its gateway call (payment_claims), in its own
 * transaction: *got is false while another holder's claim has not expired.
 * Expires after PAYMENT_LOCK_TTL_MS; ends with payment_store_record, or with
 * payment_store_unclaim when the payment could not be recorded. */
deta_err_t payment_store_claim(deta_db_t *db, const char *order_id, const char *holder,
                               bool *got, char *errstr, size_t errsize);
/* Best effort: a claim left behind only delays a retry until it expires. */
void payment_store_unclaim(deta_db_t *db, const char *order_id, const char *holder);

/* The order's payment as the REST API shows it, or DETA_ERR_NOT_FOUND. */
deta_err_t payment_store_get(deta_db_t *db, const char *order_id, json_t **out, char *errstr,
                             size_t errsize);

#endif
