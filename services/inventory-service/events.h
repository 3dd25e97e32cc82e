/*
 * events.h - inventory-service's event handlers: reserve or reject on
 * order.created (raw.order-events); sell or release a held reservation on
 * payment.authorized / payment.failed (raw.payment-events); the cancellation
 * saga's step (order.cancel_requested) and its compensation (payment.cancelled,
 * delivery.cancelled on raw.delivery-events); and the release of a hold that
 * expired, for the sweeper, so that every release is announced alike.
 */
#ifndef INVENTORY_EVENTS_H
#define INVENTORY_EVENTS_H

#include "deta/service.h"
#include "domain.h"
#include "store.h"

typedef struct inv_events inv_events_t;

/* settings is copied (the holds' TTL). */
inv_events_t *inv_events_new(deta_service_t *svc, const inv_settings_t *settings);
void inv_events_free(inv_events_t *e);
/* Three consumers in the service's group, one per topic, dispatched by event type. */
deta_err_t inv_events_subscribe(inv_events_t *e, char *errstr, size_t errsize);

/* In the caller's transaction: releases res, a HELD reservation whose hold
 * expired (reason HOLD_EXPIRED), and queues inventory.released. */
deta_err_t inv_events_expire(inv_events_t *e, deta_db_t *db, const inv_reservation_t *res,
                             char *errstr, size_t errsize);

#endif
