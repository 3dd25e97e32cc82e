/*
 * assign.h - giving a paid order a driver and its delivery: the one step shared
 * by the consumer (an order that finds a driver free at once) and the ticker
 * (an order that waited, assigned when a driver has room), with the metrics and
 * the log line of an assignment; and freeing drivers' slots and giving them to
 * the waiting orders, shared by the ticker (deliveries handed over) and the
 * cancel (a delivery cancelled).
 */
#ifndef DELIVERY_ASSIGN_H
#define DELIVERY_ASSIGN_H

#include <stdbool.h>
#include <stddef.h>

#include "deta/service.h"
#include "domain.h"

typedef struct delivery_assigner delivery_assigner_t;

/* params is copied. Registers delivery_assigned_total, eta_updates_total,
 * delivery_active and delivery_eta_seconds (shared by name with the ticker). */
delivery_assigner_t *delivery_assigner_new(deta_service_t *svc, const delivery_params_t *params);
void delivery_assigner_free(delivery_assigner_t *a);

/* In a transaction: books the least busy driver of rows[0..n) that has room
 * (delivery_choose_driver; a driver whose row another transaction holds right
 * now is passed over), inserts the order's delivery and announces it
 * (delivery.assigned, eta.updated). rows[i].active counts the booking, so a
 * caller may assign several orders from one load. *assigned false, with nothing
 * written, when no driver could take it. DETA_ERR_TRANSIENT when the order got
 * a delivery meanwhile (another instance: the retry finds it). */
deta_err_t delivery_assign_order(delivery_assigner_t *a, deta_db_t *db, delivery_driver_t *rows,
                                 size_t n, const char *order_id, const char *payment_id,
                                 const char *correlation_id, delivery_t *d, bool *assigned,
                                 char *errstr, size_t errsize);

/* An assignment made in a transaction, to be reported once it committed. */
typedef struct delivery_assignment {
    delivery_t d;
    char correlation_id[DETA_ID_MAX + 1];
} delivery_assignment_t;

/* In a transaction, after the caller changed its deliveries (their rows come
 * first in the lock order): locks the drivers named in released[0..nreleased)
 * (every driver when orders wait) in driver_id order in one statement, frees
 * one slot for each entry (a driver named twice loses two), then, when orders
 * wait, gives the drivers with room to them in paid order, up to max, into
 * out[]; *assigned how many. So a slot freed goes to the first waiting order in
 * the very transaction that frees it. */
deta_err_t delivery_release_and_serve(delivery_assigner_t *a, deta_db_t *db,
                                      const char *const *released, size_t nreleased,
                                      delivery_assignment_t *out, int max, int *assigned,
                                      char *errstr, size_t errsize);

/* After the commit: the metrics and the log line of an assignment made by
 * delivery_assign_order. */
void delivery_assigner_report(delivery_assigner_t *a, const delivery_t *d,
                              const char *correlation_id);

#endif
