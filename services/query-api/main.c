/*
 * main.c - query-api: the read model of every order, folded from the five raw
 * topics and served over REST, and the administration of the dead letters of
 * the five dlq topics (deadletters/: captured by a second consumer, listed and
 * replayed over REST behind the operator token). This file only wires. The read model's
 * store is QUERY_STORE's (read_model.h); the dead letters and the inbox are in
 * Postgres whatever it is.
 */
#include <stdio.h>
#include <string.h>

#include "api.h"
#include "console.h"
#include "deadletters/admin_api.h"
#include "deadletters/dead_letter_events.h"
#include "deadletters/dead_letters.h"
#include "deta/log.h"
#include "deta/openapi.h"
#include "deta/service.h"
#include "deta_services.h"
#include "events.h"
#include "read_model.h"
#include "settings.h"
#include "stream/feed.h"
#include "stream/hub.h"
#include "stream/stream_api.h"

static const deta_service_def_t self = DETA_SERVICE_QUERY_API;

int main(void) {
    char err[512] = "";
    deta_service_t *svc = deta_service_new(&self, err, sizeof err);
    if (!svc) {
        fprintf(stderr, "query-api: %s\n", err);
        return 2;
    }
    query_settings_t settings;
    if (query_settings_load(&settings, err, sizeof err) != DETA_OK) {
        DETA_ERROR("bad configuration: %s", err);
        deta_service_free(svc);
        return 2;
    }
    read_model_t *rm = read_model_new(svc, &settings, err, sizeof err);
    if (!rm) {
        DETA_ERROR("cannot open the read model: %s", err);
        memset(&settings, 0, sizeof settings); /* the secrets */
        deta_service_free(svc);
        return 2;
    }
    query_events_t *events = query_events_new(svc, rm);
    query_api_t *api = query_api_new(svc, rm);
    dead_letters_t *dl = dead_letters_new(svc);
    query_dlq_capture_t *capture = dl ? query_dlq_capture_new(svc, dl) : NULL;
    query_admin_t *admin = dl ? query_admin_new(svc, dl) : NULL;
    /* The service frees the hub after its HTTP server (which ends the streams). */
    hub_t *hub = hub_new(svc, &settings.stream);
    if (hub && deta_service_adopt(svc, hub, hub_free) != DETA_OK) {
        hub_free(hub);
        hub = NULL;
    }
    query_console_t *console = query_console_new(svc, &settings.console);
    int status = 1;
    if (!events || !api || !dl || !capture || !admin || !hub || !console)
        DETA_ERROR("out of memory");
    else if (read_model_prepare(rm, err, sizeof err) ||
             dead_letters_prepare(dl, err, sizeof err) || feed_prepare(svc, err, sizeof err) ||
             feed_retain(svc, settings.stream.retention_hours, err, sizeof err) ||
             hub_start(hub, err, sizeof err) || stream_api_mount(svc, hub, err, sizeof err) ||
             query_events_subscribe(events, settings.consumer_workers, settings.batch_wait_ms, err,
                                    sizeof err) ||
             query_dlq_capture_subscribe(capture, err, sizeof err) ||
             deta_service_openapi(svc, &deta_openapi, err, sizeof err) ||
             query_api_mount(api, err, sizeof err) || query_admin_mount(admin, err, sizeof err) ||
             query_console_mount(console, err, sizeof err))
        DETA_ERROR("cannot start: %s", err);
    else
        status = deta_service_run(svc);
    deta_service_free(svc);
    query_console_free(console);
    query_admin_free(admin);
    query_dlq_capture_free(capture);
    dead_letters_free(dl);
    query_api_free(api);
    query_events_free(events);
    read_model_free(rm);
    return status;
}
