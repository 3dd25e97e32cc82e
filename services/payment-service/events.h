/*
 * events.h - payment-service's consumer: inventory.reserved in, a payment and
 * payment.authorized / payment.failed (through the outbox) out, exactly once.
 */
#ifndef PAYMENT_EVENTS_H
#define PAYMENT_EVENTS_H

#include "deta/service.h"
#include "domain.h"
#include "gateway.h"
#include "guard.h"

typedef struct payment_events payment_events_t;

/* settings are copied; guard and gateway are borrowed and must outlive the
 * service's run. */
payment_events_t *payment_events_new(deta_service_t *svc, const payment_settings_t *settings,
                                     payment_guard_t *guard, payment_gateway_t *gateway);
void payment_events_free(payment_events_t *pe);

/* Subscribes the service's consumer group to raw.inventory-events. */
deta_err_t payment_events_subscribe(payment_events_t *pe, char *errstr, size_t errsize);

/* One message (the consumer's handler; public for tests). */
deta_err_t payment_events_handle(const deta_kafka_msg_t *msg, void *pe, char *errstr,
                                 size_t errsize);

#endif
