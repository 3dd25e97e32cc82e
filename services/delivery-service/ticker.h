/*
 * ticker.h - the simulated clock's hand: a thread that moves due deliveries on,
 * ASSIGNED -> PICKED_UP -> DELIVERED, and announces each step.
 */
#ifndef DELIVERY_TICKER_H
#define DELIVERY_TICKER_H

#include "deta/service.h"
#include "domain.h"

typedef struct delivery_ticker delivery_ticker_t;

/* params is copied. Registers the metrics and the "ticker" health check. */
delivery_ticker_t *delivery_ticker_new(deta_service_t *svc, const delivery_params_t *params);
deta_err_t delivery_ticker_start(delivery_ticker_t *t, char *errstr, size_t errsize);
/* Stops the thread (it also stops by itself once the service is stopping) and
 * waits for it. Call before deta_service_free: the thread uses the service's pool. */
void delivery_ticker_stop(delivery_ticker_t *t);
/* After deta_service_free (the health check refers to it until then). */
void delivery_ticker_free(delivery_ticker_t *t);

#endif
