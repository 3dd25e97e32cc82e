/*
 * admin_api.h - query-api's dead-letter administration over REST, behind the
 * bearer token QUERY_API_ADMIN_TOKEN:
 *
 *   GET  /api/admin/dead-letters                       counts per dlq topic
 *   GET  /api/admin/dead-letters/{topic}               a page of one topic
 *   GET  /api/admin/dead-letters/{topic}/{id}          one dead letter, whole
 *   POST /api/admin/dead-letters/{topic}/{id}/replay   replay one
 *   POST /api/admin/dead-letters/{topic}/replay        replay every pending one
 */
#ifndef QUERY_ADMIN_API_H
#define QUERY_ADMIN_API_H

#include "dead_letters.h"
#include "deta/service.h"

typedef struct query_admin query_admin_t;

query_admin_t *query_admin_new(deta_service_t *svc, dead_letters_t *store, const char *token);
void query_admin_free(query_admin_t *a);
/* Adds the routes; warns when no token is configured (the routes then answer 503). */
deta_err_t query_admin_mount(query_admin_t *a, char *errstr, size_t errsize);

#endif
