/*
 * store.h - inventory-service's SQL (database inventory_db): the stock table, the
 * reservations and their items, and what the REST API and the event handlers do
 * with them.
 *
 * Functions marked "in the caller's transaction" run inside the transaction the
 * events.h dispatcher opened for an event, so the stock, the reservation, the
 * processed-events claim and the outbox row commit together or not at all.
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

/* REST: every item (a JSON array sorted by itemId), one item (DETA_ERR_NOT_FOUND),
 * and the admin's update, which creates the item when needed (*created). Items
 * are {itemId, name, available, held, sold}. */
deta_err_t inv_store_list(deta_db_t *db, json_t **out, char *errstr, size_t errsize);
deta_err_t inv_store_get(deta_db_t *db, const char *item_id, json_t **out, char *errstr,
                         size_t errsize);
deta_err_t inv_store_set_available(deta_db_t *db, const char *item_id,
                                   const inv_stock_update_t *u, bool *created, json_t **out,
                                   char *errstr, size_t errsize);

/* In the caller's transaction: locks the stock rows of r's items in itemId byte
 * order (so that concurrent reservations never deadlock) and reads their levels
 * into levels[INV_MAX_LINES]; unknown items are simply absent. */
deta_err_t inv_store_lock_levels(deta_db_t *db, const inv_request_t *r, inv_level_t *levels,
                                 size_t *nlevels, char *errstr, size_t errsize);

/* In the caller's transaction: the order's one reservation row with status (HELD
 * or REJECTED) and its lines. *inserted is false when the order has one already
 * (then nothing was written). */
deta_err_t inv_store_insert_reservation(deta_db_t *db, const inv_request_t *r,
                                        const char *reservation_id, const char *status,
                                        const char *reason, const char *at, bool *inserted,
                                        char *errstr, size_t errsize);

/* In the caller's transaction: moves r's quantities from available to held (rows
 * already locked by inv_store_lock_levels). */
deta_err_t inv_store_hold(deta_db_t *db, const inv_request_t *r, char *errstr, size_t errsize);

typedef struct inv_reservation {
    char order_id[INV_ID_MAX + 1];
    char reservation_id[DETA_UUID_LEN + 1];
    char status[16];
    size_t nlines;
    inv_line_t lines[INV_MAX_LINES];
} inv_reservation_t;

/* In the caller's transaction: locks the order's reservation and reads it with
 * its lines; DETA_ERR_NOT_FOUND when the order has none. */
deta_err_t inv_store_lock_reservation(deta_db_t *db, const char *order_id, inv_reservation_t *res,
                                      char *errstr, size_t errsize);

/* In the caller's transaction: settles a HELD reservation, moving its quantities
 * from held to sold (status SOLD) or back to available (status RELEASED). */
deta_err_t inv_store_settle(deta_db_t *db, const inv_reservation_t *res, const char *status,
                            const char *at, char *errstr, size_t errsize);

#endif
