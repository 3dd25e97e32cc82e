/*
 * events.h - order-service's consumer: follows its orders' status and their
 * cancel's verdicts on raw.inventory-events, raw.payment-events and
 * raw.delivery-events (group order-service).
 */
#ifndef ORDER_EVENTS_H
#define ORDER_EVENTS_H

#include "deta/service.h"

typedef struct order_events order_events_t;

order_events_t *order_events_new(deta_service_t *svc);
/* After the service stopped (its consumer uses this object until then). */
void order_events_free(order_events_t *e);
/* Subscribes the service's consumer group to the three topics. */
deta_err_t order_events_subscribe(order_events_t *e, int batch_wait_ms, char *errstr,
                                  size_t errsize);

#endif
