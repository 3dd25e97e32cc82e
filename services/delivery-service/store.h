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

/* Every driver, as rows for delivery_choose_driver; *rows is malloc'd (the caller
 * frees it), *n may be 0. */
deta_err_t delivery_store_load_drivers(deta_db_t *db, delivery_driver_t **rows, size_t *n,
                                       char *errstr, size_t errsize);

/* What a payment.authorized needs, in one round trip (after the order's lock):
 * *known, whether the order already has a delivery, waits for one, or was
 * cancelled (cancelled_orders), when the event does nothing; *waiting, whether
 * any order waits for a driver (delivery_store_anyone_waiting), when it joins
 * the queue; and, when neither, every driver's row as delivery_store_load_drivers
 * (else none). *rows is malloc'd either way (the caller frees it). */
deta_err_t delivery_store_intake(deta_db_t *db, const char *order_id, bool *known,
                                 bool *waiting, delivery_driver_t **rows, size_t *n,
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

/* A delivery the ticker claimed: its row and its saga's correlation id. */
typedef struct delivery_due {
    delivery_t d;
    char correlation_id[DETA_ID_MAX + 1];
} delivery_due_t;

/* In a transaction, one statement: up to max deliveries whose next stage is due
 * at now_ms, most overdue first, locked (FOR UPDATE SKIP LOCKED: rows other
 * instances hold are passed over), into out[0..*n). */
deta_err_t delivery_store_claim_due(deta_db_t *db, int64_t now_ms, size_t max,
                                    delivery_due_t *out, size_t *n, char *errstr,
                                    size_t errsize);

/* In a transaction, one statement: each of ds[0..n)'s status, instants, ETA and
 * next transition, each only if the delivery is still at the stage from[i]
 * (the drivers are released by the caller, delivery_store_release_drivers).
 * saved[i] false when it is not: another transaction (a cancel) changed it
 * first, and nothing was written for it. */
deta_err_t delivery_store_save_stages(deta_db_t *db, const delivery_due_t *ds,
                                      const delivery_stage_t *from, size_t n, bool *saved,
                                      char *errstr, size_t errsize);

/* ---- cancellation (in a transaction, each) ---- */

/* Serializes the consumer's transactions for one order (a transaction-scoped
 * advisory lock on the order id): a cancel and a payment.authorized of the order
 * never decide side by side, even while partitions move between instances. The
 * ticker does not take it. */
deta_err_t delivery_store_lock_order(deta_db_t *db, const char *order_id, char *errstr,
                                     size_t errsize);

/* What is known of the order, for delivery_cancel_decide. */
deta_err_t delivery_store_cancel_facts(deta_db_t *db, const char *order_id,
                                       delivery_cancel_facts_t *f, char *errstr,
                                       size_t errsize);

/* The order's delivery becomes CANCELLED at now_ms, only if it is ASSIGNED (a
 * row another transaction holds is waited for, and the condition checked again
 * on its latest version). *cancelled false when it was not; otherwise its id
 * and driver. The driver is released by the caller. */
deta_err_t delivery_store_cancel_delivery(deta_db_t *db, const char *order_id, int64_t now_ms,
                                          bool *cancelled, char delivery_id[DETA_UUID_LEN + 1],
                                          char driver_id[DELIVERY_DRIVER_ID_MAX + 1],
                                          char *errstr, size_t errsize);

/* Records at now_ms that the order's cancel was refused, only if its delivery
 * is PICKED_UP or DELIVERED and no refusal was recorded; *refused false when
 * not, else *stage the delivery's. */
deta_err_t delivery_store_refuse_cancel(deta_db_t *db, const char *order_id, int64_t now_ms,
                                        bool *refused, delivery_stage_t *stage, char *errstr,
                                        size_t errsize);

/* The order leaves the queue; *left false when it was not in it (any more: the
 * ticker's assignment of it committed first). */
deta_err_t delivery_store_leave_queue(deta_db_t *db, const char *order_id, bool *left,
                                      char *errstr, size_t errsize);

/* The order joins cancelled_orders with its stage ("NONE", "WAITING",
 * "ASSIGNED"), its delivery (NULL unless ASSIGNED) and payment; *recorded false
 * when it is there already. */
deta_err_t delivery_store_record_cancelled(deta_db_t *db, const char *order_id,
                                           const char *stage, const char *delivery_id,
                                           const char *payment_id, int64_t now_ms,
                                           bool *recorded, char *errstr, size_t errsize);

/* In a transaction: one event of type for the order to the outbox
 * (raw.delivery-events), occurring at occurred_ms. Takes payload (NULL is an
 * error: the payload could not be built). */
deta_err_t delivery_store_add_event(deta_db_t *db, const char *type, const char *order_id,
                                    const char *correlation_id, json_t *payload,
                                    int64_t occurred_ms, char *errstr, size_t errsize);

/* In a transaction: the event of d's current stage (raw.delivery-events), then
 * eta.updated (raw.eta-events), to the outbox. */
deta_err_t delivery_store_announce(deta_db_t *db, const delivery_t *d, const char *correlation_id,
                                   char *errstr, size_t errsize);

/* The same for the n deliveries of ds (at most DETA_OUTBOX_EACH_MAX / 2), in one
 * statement: a ticker's turn. */
deta_err_t delivery_store_announce_all(deta_db_t *db, const delivery_due_t *ds, size_t n,
                                       char *errstr, size_t errsize);

/* The delivery of an order as the REST API shows it (JSON text, malloc'd): the
 * delivery (cancelledAt null unless CANCELLED), or while the order waits
 * {orderId, status "WAITING", paymentId, waitingSince, position (1 = next)}, or
 * for an order cancelled without a delivery {orderId, status "CANCELLED", stage
 * ("WAITING" or "NONE"), deliveryId null, paymentId, cancelledAt};
 * DETA_ERR_NOT_FOUND for none of them. */
deta_err_t delivery_store_get_json(deta_db_t *db, const char *order_id, char **json,
                                   char *errstr, size_t errsize);

/* {"capacity":N,"drivers":[{driverId, name, activeDeliveries, available}]} (JSON
 * text, malloc'd). */
deta_err_t delivery_store_drivers_json(deta_db_t *db, long capacity, char **json, char *errstr,
                                       size_t errsize);

/* How many deliveries are active (ASSIGNED or PICKED_UP), and how many orders
 * wait. */
deta_err_t delivery_store_count_active(deta_db_t *db, long *n, long *waiting, char *errstr,
                                       size_t errsize);

#endif
