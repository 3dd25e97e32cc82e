/*
 * settings.h - query-api's own settings (env QUERY_API_*), read once at start.
 *
 *   QUERY_API_CONSUMER_WORKERS  4     read-model events applied concurrently (1..32;
 *                                     one order's in order)
 *   QUERY_API_ADMIN_TOKEN       none  the bearer token of the dead-letter
 *                                     administration. No default: unset or empty
 *                                     disables those routes (503). When set it must be
 *                                     16 to 256 characters of A-Z a-z 0-9 - . _ ~ + / =
 *                                     (RFC 6750's token characters), so that a typo or
 *                                     a toy token stops the service. Never logged.
 *
 * Only query-api reads these, so the token never sits in another service's memory.
 */
#ifndef QUERY_SETTINGS_H
#define QUERY_SETTINGS_H

#include <stddef.h>

#include "deta/err.h"

#define QUERY_ADMIN_TOKEN_MIN 16
#define QUERY_ADMIN_TOKEN_MAX 256

typedef struct query_settings {
    int consumer_workers;                        /* QUERY_API_CONSUMER_WORKERS */
    char admin_token[QUERY_ADMIN_TOKEN_MAX + 1]; /* QUERY_API_ADMIN_TOKEN; "" when not set */
} query_settings_t;

/* Reads and validates the settings above. DETA_ERR_INVALID with the variable's
 * name in errstr (never the token's value) when a value is malformed or out of
 * range; the token is then left empty. */
deta_err_t query_settings_load(query_settings_t *s, char *errstr, size_t errsize);

#endif
