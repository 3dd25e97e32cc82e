/*
 * console.h - query-api serves the web console (docs/console.md): the files of
 * QUERY_CONSOLE_DIR at "/" (libdeta's static files, with the console's
 * Content-Security-Policy) and GET /console-config.json, the two origins the page
 * calls besides query-api.
 */
#ifndef QUERY_CONSOLE_H
#define QUERY_CONSOLE_H

#include <stddef.h>

#include "deta/err.h"
#include "deta/service.h"
#include "settings.h"

typedef struct query_console query_console_t;

/* Keeps a copy of the settings. NULL when out of memory. */
query_console_t *query_console_new(deta_service_t *svc, const query_console_settings_t *c);
/* Registers GET /console-config.json, and the files when QUERY_CONSOLE_DIR is set. */
deta_err_t query_console_mount(query_console_t *console, char *errstr, size_t errsize);
void query_console_free(query_console_t *console);

#endif
