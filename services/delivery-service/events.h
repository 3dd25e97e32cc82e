/*
 * events.h - delivery-service's consumer: payment.authorized on raw.payment-events
 * assigns a driver and announces the delivery; other payment events are ignored.
 */
#ifndef DELIVERY_EVENTS_H
#define DELIVERY_EVENTS_H

#include "deta/service.h"
#include "domain.h"

typedef struct delivery_events delivery_events_t;

/* params is copied. */
delivery_events_t *delivery_events_new(deta_service_t *svc, const delivery_params_t *params);
/* After the service stopped (its consumer uses this object until then). */
void delivery_events_free(delivery_events_t *e);
/* Migrates the processed-events table and subscribes the service's consumer group. */
deta_err_t delivery_events_subscribe(delivery_events_t *e, char *errstr, size_t errsize);

#endif
