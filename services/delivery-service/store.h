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

/* Whether the order already has a delivery or waits for one. */
deta_err_t delivery_store_order_known(deta_db_t *db, const char *order_id, bool *known,
                                      char *errstr, size_t errsize);

/* Every driver, as rows for delivery_choose_driver; *rows is malloc'd (the caller
 * frees it), *n may be 0. */
deta_err_t delivery_store_load_drivers(deta_db_t *db, delivery_driver_t **rows, size_t *n,
                                       char *errstr, size_t errsize);

/* In a transaction: one more active delivery for the driver, only if it is still
 * available and below capacity (re-checked on the locked row, so concurrent
 * bookings never exceed it) and not locked by another transaction right now
 * (SKIP LOCKED: a booking never waits for a driver's row, so it can take part in
 * no deadlock). *booked false when it does not qualify or is locked; the
 * driver's name goes to name. */
deta_err_t delivery_store_book_driver(deta_db_t *db, const char *driver_id, long capacity,
                                      bool *booked, char *name, size_t namesize, char *errstr,
                                      size_t errsize);

/* In a transaction: locks the rows of the drivers named in ids[0..n) (all
 * drivers when all is true), in driver_id order, in one statement. Every
 * transaction that waits for drivers' rows takes them this way, once, before it
 * changes any: so two transactions never hold each other's drivers (no
 * deadlock), whatever order their deliveries came in. */
deta_err_t delivery_store_lock_drivers(deta_db_t *db, const char *const *ids, size_t n, bool all,
                                       char *errstr, size_t errsize);

/* In a transaction, after delivery_store_lock_drivers: one active delivery less
 * for each entry of ids[0..n) (a driver named twice loses two). */
deta_err_t delivery_store_release_drivers(deta_db_t *db, const char *const *ids, size_t n,
                                          char *errstr, size_t errsize);

/* A paid order waiting for a driver. */
typedef struct delivery_waiting {
    char order_id[DETA_UUID_LEN + 1];
    char payment_id[DETA_ID_MAX + 1];
    char correlation_id[DETA_ID_MAX + 1];
    bool has_delivery; /* it got one meanwhile (two events of the order raced) */
} delivery_waiting_t;

/* Whether any order waits for a driver. */
deta_err_t delivery_store_anyone_waiting(deta_db_t *db, bool *waiting, char *errstr,
                                         size_t errsize);

/* In a transaction: the order joins the queue (paid_at is payment.authorized's
 * authorizedAt, the queue's order) at now_ms, and delivery.waiting goes to the
 * outbox with its position. *parked false when it waits already. */
deta_err_t delivery_store_park(deta_db_t *db, const delivery_waiting_t *w, const char *paid_at,
                               int64_t now_ms, bool *parked, char *errstr, size_t errsize);

/* In a transaction: the next waiting order (first paid, first served), locked;
 * *found false when none waits. */
deta_err_t delivery_store_next_waiting(deta_db_t *db, delivery_waiting_t *w, bool *found,
                                       char *errstr, size_t errsize);

/* In a transaction: the order leaves the queue (it got its delivery). */
deta_err_t delivery_store_unpark(deta_db_t *db, const char *order_id, char *errstr,
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

/* In a transaction: d's status, instants, ETA and next transition (the driver
 * is released by the caller, delivery_store_release_drivers). */
deta_err_t delivery_store_save_stage(deta_db_t *db, const delivery_t *d, char *errstr,
                                     size_t errsize);

/* In a transaction: the event of d's current stage, then eta.updated, to the
 * outbox (raw.delivery-events). */
deta_err_t delivery_store_announce(deta_db_t *db, const delivery_t *d, const char *correlation_id,
                                   char *errstr, size_t errsize);

/* The delivery of an order as the REST API shows it (JSON text, malloc'd): the
 * delivery, or while the order waits {orderId, status "WAITING", paymentId,
 * waitingSince, position (1 = next)}; DETA_ERR_NOT_FOUND for neither. */
deta_err_t delivery_store_get_json(deta_db_t *db, const char *order_id, char **json,
                                   char *errstr, size_t errsize);

/* {"capacity":N,"drivers":[{driverId, name, activeDeliveries, available}]} (JSON
 * text, malloc'd). */
deta_err_t delivery_store_drivers_json(deta_db_t *db, long capacity, char **json, char *errstr,
                                       size_t errsize);

/* How many deliveries are not yet delivered, and how many orders wait. */
deta_err_t delivery_store_count_active(deta_db_t *db, long *n, long *waiting, char *errstr,
                                       size_t errsize);

#endif
