/*
 * console.c - the web console's files and its configuration (see console.h).
 *
 * The page learns where order-service and inventory-service are from
 * /console-config.json rather than from text baked into its files, so the same files
 * serve the local stack, compose and Kubernetes. The same two origins are the only
 * other ones its Content-Security-Policy lets it connect to.
 */
#include "console.h"

#include <stdlib.h>

#include <jansson.h>

#include "deta/http.h"

struct query_console {
    deta_service_t *svc;
    query_console_settings_t settings;
};

query_console_t *query_console_new(deta_service_t *svc, const query_console_settings_t *c) {
    query_console_t *console = calloc(1, sizeof *console);
    if (!console)
        return NULL;
    console->svc = svc;
    console->settings = *c;
    return console;
}

void query_console_free(query_console_t *console) { free(console); }

/* A set origin, or null. */
static json_t *origin_or_null(const char *origin) {
    return origin[0] ? json_string(origin) : json_null();
}

static void get_config(const deta_http_req_t *req, deta_http_resp_t *resp, void *opaque) {
    (void)req;
    const query_console_t *console = opaque;
    deta_http_resp_json(resp, 200,
                        json_pack("{s:o,s:o}", "orderServiceUrl",
                                  origin_or_null(console->settings.order_url),
                                  "inventoryServiceUrl",
                                  origin_or_null(console->settings.inventory_url)));
}

deta_err_t query_console_mount(query_console_t *console, char *errstr, size_t errsize) {
    deta_http_server_t *http = deta_service_http(console->svc);
    if (deta_http_route(http, "GET", "/console-config.json", 0, get_config, console) != DETA_OK)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize,
                         "cannot register GET /console-config.json");
    if (!console->settings.dir[0])
        return DETA_OK;
    char csp[1024];
    if (!query_console_csp(&console->settings, csp, sizeof csp))
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "the console's policy is too long");
    return deta_http_static(http, console->settings.dir, csp, errstr, errsize);
}
