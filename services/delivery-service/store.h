/*
 * store.h - delivery-service's SQL (database delivery_db): drivers, deliveries and
 * the events announcing them, written to the outbox in the caller's transaction.
 *
 * Every function runs on the caller's connection; those marked "in a transaction"
 * expect the caller to have begun one and to commit or roll back.
 */
#ifndef DELIVERY_STORE_H
#define DELIVERY_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "deta/db.h"
#include "domain.h"

extern const deta_migration_t delivery_migrations[];
extern const size_t delivery_migrations_count;

/* Drivers 1..count with the names of delivery_driver_identity; existing ones are
 * left as they are (ON CONFLICT DO NOTHING), so restarts and several instances
 * seed once. */
deta_err_t delivery_store_seed_drivers(deta_db_t *db, long count, char *errstr, size_t errsize);

/* Whether the order already has a delivery. */
deta_err_t delivery_store_order_known(deta_db_t *db, const char *order_id, bool *known,
                                      char *errstr, size_t errsize);

/* Every driver, as rows for delivery_choose_driver; *rows is malloc'd (the caller
 * frees it), *n may be 0. */
deta_err_t delivery_store_load_drivers(deta_db_t *db, delivery_driver_t **rows, size_t *n,
                                       char *errstr, size_t errsize);

/* In a transaction: one more active delivery for the driver, only if it is still
 * available and below capacity (re-checked on the locked row, so concurrent
 * bookings never exceed it). *booked false when it no longer qualifies; the
 * driver's name goes to name. */
deta_err_t delivery_store_book_driver(deta_db_t *db, const char *driver_id, long capacity,
                                      bool *booked, char *name, size_t namesize, char *errstr,
                                      size_t errsize);

/* In a transaction: the new delivery. *inserted false when the order has one
 * already (order_id is unique). */
deta_err_t delivery_store_insert(deta_db_t *db, const delivery_t *d, const char *payment_id,
                                 const char *correlation_id, bool *inserted, char *errstr,
                                 size_t errsize);

/* In a transaction: the most overdue delivery whose next stage is due at now_ms,
 * locked (FOR UPDATE SKIP LOCKED: rows other instances hold are passed over).
 * *found false when none is due. */
deta_err_t delivery_store_claim_due(deta_db_t *db, int64_t now_ms, delivery_t *d,
                                    char correlation_id[DETA_ID_MAX + 1], bool *found,
                                    char *errstr, size_t errsize);

/* In a transaction: d's status, instants, ETA and next transition; at DELIVERED
 * also one active delivery less for its driver. */
deta_err_t delivery_store_save_stage(deta_db_t *db, const delivery_t *d, char *errstr,
                                     size_t errsize);

/* In a transaction: the event of d's current stage, then eta.updated, to the
 * outbox (raw.delivery-events). */
deta_err_t delivery_store_announce(deta_db_t *db, const delivery_t *d, const char *correlation_id,
                                   char *errstr, size_t errsize);

/* The delivery of an order as the REST API shows it (JSON text, malloc'd), or
 * DETA_ERR_NOT_FOUND. */
deta_err_t delivery_store_get_json(deta_db_t *db, const char *order_id, char **json,
                                   char *errstr, size_t errsize);

/* {"capacity":N,"drivers":[{driverId, name, activeDeliveries, available}]} (JSON
 * text, malloc'd). */
deta_err_t delivery_store_drivers_json(deta_db_t *db, long capacity, char **json, char *errstr,
                                       size_t errsize);

/* How many deliveries are not yet delivered. */
deta_err_t delivery_store_count_active(deta_db_t *db, long *n, char *errstr, size_t errsize);

#endif
