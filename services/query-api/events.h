/*
 * events.h - query-api's event handlers: every event type of docs/contracts.md, from
 * the five raw topics, folded into the read model.
 */
#ifndef QUERY_EVENTS_H
#define QUERY_EVENTS_H

#include "deta/service.h"
#include "read_model.h"

typedef struct query_events query_events_t;

query_events_t *query_events_new(deta_service_t *svc, read_model_t *rm);
/* After the service stopped (its consumer uses the handlers until then). */
void query_events_free(query_events_t *qe);

/* One consumer in group query-api on raw.order-events, raw.inventory-events,
 * raw.payment-events, raw.delivery-events and raw.eta-events; migrates the inbox table (written
 * only with a store that needs the claim, read_model_needs_claim). workers and
 * batch_wait_ms: QUERY_API_CONSUMER_WORKERS and QUERY_API_BATCH_WAIT_MS. */
deta_err_t query_events_subscribe(query_events_t *qe, int workers, int batch_wait_ms,
                                  char *errstr, size_t errsize);

#endif
