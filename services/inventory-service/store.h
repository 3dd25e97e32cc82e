/*
 * store.h - inventory-service's SQL (database inventory_db): the stock table, the
 * reservations and their items, and what the REST API, the event handlers and the
 * sweeper of expired holds do with them.
 *
 * Functions marked "in the caller's transaction" run inside the transaction the
 * events.h dispatcher opened for an event, so the stock, the reservation and the
 * outbox row commit together or not at all.
 */
#ifndef INVENTORY_STORE_H
#define INVENTORY_STORE_H

#include <stdbool.h>
#include <jansson.h>

#include "deta/db.h"
#include "domain.h"

extern const deta_migration_t inv_migrations[];
extern const size_t inv_migrations_count;

/* Inserts the catalog's items that are not there yet (a restart never resets
 * stock); *inserted receives how many were new. */
deta_err_t inv_store_seed(deta_db_t *db, const inv_catalog_t *c, long *inserted, char *errstr,
                          size_t errsize);

/* REST: every item (a JSON array sorted by itemId) and one item
 * (DETA_ERR_NOT_FOUND). Items are {itemId, name, available, held, sold, sellable,
 * version}. */
deta_err_t inv_store_list(deta_db_t *db, json_t **out, char *errstr, size_t errsize);
deta_err_t inv_store_get(deta_db_t *db, const char *item_id, json_t **out, char *errstr,
                         size_t errsize);

/* The admin's change, in its own transaction: locks the item's row, lets
 * inv_stock_apply decide, writes what it decided and answers the item as it is
 * then in *item (also after a refusal: the current state; NULL when the item
 * does not exist). A create that raced with another is decided again. */
deta_err_t inv_store_change(deta_db_t *db, const char *item_id, const inv_stock_change_t *c,
                            inv_change_outcome_t *outcome, inv_violation_t *v, json_t **item,
                            char *errstr, size_t errsize);

/* In a batch's transaction, before any of its events is applied, the locks its
 * events' steps will take, in the order every transaction of this service takes
 * them: the reservation rows of held (a JSON array of order ids) in order_id byte
 * order, then the stock rows of the items of lines (a JSON array of {itemId, ...}:
 * the orders to reserve) and of the reservations of settled (a JSON array of
 * order ids: the reservations to settle or give back) in itemId byte order. A
 * NULL array takes none. The handlers' own locks then find them held. */
deta_err_t inv_store_lock_batch(deta_db_t *db, const char *held, const char *lines,
                                const char *settled, char *errstr, size_t errsize);

/* In the caller's transaction: locks the stock rows of the lines' items in itemId
 * byte order (so that concurrent reservations never deadlock) and reads their
 * levels into levels[INV_MAX_LINES]; unknown items are simply absent. */
deta_err_t inv_store_lock_levels(deta_db_t *db, const inv_line_t *lines, size_t nlines,
                                 inv_level_t *levels, size_t *nlevels, char *errstr,
                                 size_t errsize);

/* In the caller's transaction: the order's one reservation row with status (HELD
 * or REJECTED), its saga's correlation id, the instant its hold expires (NULL
 * when rejected) and its lines, and for HELD the lines' quantities moved from
 * available to held (rows already locked by inv_store_lock_levels), in one
 * statement. *inserted is false when the order has one already (then nothing
 * was written). */
deta_err_t inv_store_insert_reservation(deta_db_t *db, const inv_request_t *r,
                                        const char *reservation_id, const char *correlation_id,
                                        const char *status, const char *reason, const char *at,
                                        const char *hold_expires_at, bool *inserted,
                                        char *errstr, size_t errsize);

/* In the caller's transaction: moves the lines' quantities from available to
 * sold (a late authorization retaking them); rows already locked by
 * inv_store_lock_levels. (A new HELD reservation's units are moved by
 * inv_store_insert_reservation.) */
deta_err_t inv_store_take(deta_db_t *db, const inv_line_t *lines, size_t nlines,
                          char *errstr, size_t errsize);

typedef struct inv_reservation {
    char order_id[INV_ID_MAX + 1];
    char reservation_id[DETA_UUID_LEN + 1];
    char status[16];
    char reason[32]; /* "" when none */
    char customer_id[INV_ID_MAX + 1];
    char correlation_id[DETA_ID_MAX + 1]; /* the order id for rows older than the column */
    char cancel_outcome[16]; /* INV_CANCEL_*, "" when no cancel was decided */
    size_t nlines;
    inv_line_t lines[INV_MAX_LINES];
} inv_reservation_t;

/* In the caller's transaction: locks the order's reservation and reads it with
 * its lines; DETA_ERR_NOT_FOUND when the order has none. */
deta_err_t inv_store_lock_reservation(deta_db_t *db, const char *order_id, inv_reservation_t *res,
                                      char *errstr, size_t errsize);

/* In the caller's transaction: locks the HELD reservation whose hold expired
 * longest ago, more than grace_s seconds ago, skipping any another transaction
 * has locked, and reads it like inv_store_lock_reservation; *found false when
 * there is none. */
deta_err_t inv_store_lock_expired(deta_db_t *db, long grace_s, inv_reservation_t *res,
                                  bool *found, char *errstr, size_t errsize);

/* The age in seconds of the oldest reservation still HELD (0 when none). */
deta_err_t inv_store_oldest_hold_age(deta_db_t *db, double *seconds, char *errstr,
                                     size_t errsize);

/* In the caller's transaction: settles a HELD reservation, moving its quantities
 * from held to sold (status SOLD) or back to available (status RELEASED), with
 * reason (NULL: the row's is kept). */
deta_err_t inv_store_settle(deta_db_t *db, const inv_reservation_t *res, const char *status,
                            const char *reason, const char *at, char *errstr, size_t errsize);

/* In the caller's transaction: the reservation's new status, no stock moved. */
deta_err_t inv_store_set_status(deta_db_t *db, const inv_reservation_t *res, const char *status,
                                const char *at, char *errstr, size_t errsize);

/* ---- the cancellation saga ---- */

/* In the caller's transaction, for an order.created whose order has a row
 * already (inv_store_insert_reservation inserted nothing): the row's status
 * ("" when it has none), and *first_after_cancel true when it is a CANCELLED row
 * that no order.created had reached: the order's customer, amount and currency
 * are then recorded on it, so that the next order.created of the order (a
 * redelivery, or a re-send under a new event id) finds them and is a duplicate. */
deta_err_t inv_store_created_again(deta_db_t *db, const inv_request_t *r, const char *at,
                                   char status[16], bool *first_after_cancel, char *errstr,
                                   size_t errsize);

/* In the caller's transaction: records a cancel that came before any
 * order.created, a CANCELLED row without items (customer, amount and currency
 * unknown: NULL, until an order.created comes: inv_store_created_again).
 * *inserted false when the order has a row already. */
deta_err_t inv_store_insert_cancelled(deta_db_t *db, const char *order_id,
                                      const char *reservation_id, const char *correlation_id,
                                      const char *requested_at, const char *at, bool *inserted,
                                      char *errstr, size_t errsize);

/* In the caller's transaction: what was decided about the order's cancel
 * (INV_CANCEL_FORWARDED or INV_CANCEL_REFUSED) on its locked reservation. */
deta_err_t inv_store_record_cancel(deta_db_t *db, const char *order_id, const char *outcome,
                                   const char *requested_at, char *errstr, size_t errsize);

/* In the caller's transaction: returns a SOLD reservation's units from sold to
 * available (status RELEASED, reason). */
deta_err_t inv_store_unsell(deta_db_t *db, const inv_reservation_t *res, const char *reason,
                            const char *at, char *errstr, size_t errsize);

/* In the caller's transaction: the reservation's reason, its status and stock
 * unchanged. */
deta_err_t inv_store_set_reason(deta_db_t *db, const inv_reservation_t *res, const char *reason,
                                const char *at, char *errstr, size_t errsize);

#endif
