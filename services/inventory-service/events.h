/*
 * events.h - inventory-service's event handlers: reserve or reject on
 * order.created (raw.order-events); sell or release a held reservation on
 * payment.authorized / payment.failed (raw.payment-events).
 */
#ifndef INVENTORY_EVENTS_H
#define INVENTORY_EVENTS_H

#include "deta/service.h"

typedef struct inv_events inv_events_t;

inv_events_t *inv_events_new(deta_service_t *svc);
void inv_events_free(inv_events_t *e);
/* One consumer in the service's group for both topics, dispatched by event type. */
deta_err_t inv_events_subscribe(inv_events_t *e, char *errstr, size_t errsize);

#endif
