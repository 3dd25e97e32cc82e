/*
 * dead_letter_events.h - query-api's capture of dead letters: a second consumer
 * of group query-api, on the five dlq.* topics, storing every message it reads
 * (dead_letters.h) for the administration (admin_api.h).
 */
#ifndef QUERY_DEAD_LETTER_EVENTS_H
#define QUERY_DEAD_LETTER_EVENTS_H

#include "dead_letters.h"
#include "deta/service.h"

typedef struct query_dlq_capture query_dlq_capture_t;

query_dlq_capture_t *query_dlq_capture_new(deta_service_t *svc, dead_letters_t *store);
/* After the service stopped (its consumer uses the handler until then). */
void query_dlq_capture_free(query_dlq_capture_t *c);

/* Adds the consumer to the service (started by deta_service_run). */
deta_err_t query_dlq_capture_subscribe(query_dlq_capture_t *c, char *errstr, size_t errsize);

#endif
