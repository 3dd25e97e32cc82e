/*
 * admin_api.h - query-api's dead-letter administration over REST, behind the
 * operator token (OPERATOR_TOKEN, deta/auth.h; checked by libdeta's HTTP server):
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

query_admin_t *query_admin_new(deta_service_t *svc, dead_letters_t *store);
void query_admin_free(query_admin_t *a);
/* Adds the routes, as operator routes (they answer 503 while OPERATOR_TOKEN is unset). */
deta_err_t query_admin_mount(query_admin_t *a, char *errstr, size_t errsize);

#endif
