/*
 * service.h - the skeleton every service shares, so that a service's main.c only
 * wires: config, connections, HTTP routes, consumers, shutdown.
 *
 * deta_service_new() takes the service's identity (deta_service_def_t of config.h:
 * name, default port, database, from the generated deta_services.h), reads the
 * configuration, starts logging, and prepares the
 * metrics registry, the health checks ("db" and "kafka", both required), the HTTP
 * server with /actuator/health (and /health, /actuator/health/liveness,
 * /actuator/health/readiness) and /actuator/prometheus (and /metrics), the
 * per-thread Postgres pool and the producer. deta_service_run() applies nothing by
 * itself: the service migrates, adds routes and consumers first, then runs. Run
 * blocks until SIGTERM or SIGINT, then shuts down in order, each phase logged with
 * its duration: stop HTTP intake (readiness 503, new connections refused), let the
 * requests in flight finish, stop consumers after the messages in hand (committing
 * offsets), stop the outbox relay after its batch in hand (publishing what it can),
 * flush the producer; all within DETA_SHUTDOWN_TIMEOUT_MS (config.h). It returns 0
 * when all of that finished cleanly, 1 when something had to be left (the log says
 * what; it is redelivered or published after the restart); should the bound pass
 * with something still running, the process logs it and exits with status 1.
 *
 * Consumers added with deta_service_consume() get the service's readiness (its
 * required checks, db and kafka, cached for a few hundred ms) as their
 * dependencies_up hook unless the options bring their own: an outage then makes
 * messages wait instead of using up their retries (kafka.h).
 */
#ifndef DETA_SERVICE_H
#define DETA_SERVICE_H

#include <stdatomic.h>
#include <stddef.h>
#include "deta/config.h"
#include "deta/db.h"
#include "deta/err.h"
#include "deta/health.h"
#include "deta/http.h"
#include "deta/kafka.h"
#include "deta/metrics.h"
#include "deta/openapi.h"

typedef struct deta_service deta_service_t;

deta_service_t *deta_service_new(const deta_service_def_t *def, char *errstr, size_t errsize);
void deta_service_free(deta_service_t *s);

const deta_config_t *deta_service_config(const deta_service_t *s);
deta_http_server_t *deta_service_http(deta_service_t *s);
deta_metrics_t *deta_service_metrics(deta_service_t *s);
deta_health_t *deta_service_health(deta_service_t *s);
deta_db_pool_t *deta_service_db(deta_service_t *s);
deta_producer_t *deta_service_producer(deta_service_t *s);
/* Becomes true when the service was asked to stop. */
atomic_bool *deta_service_stopping(deta_service_t *s);
/* Sleeps up to ms before run() (while a store's schema waits for its server, as
 * deta_service_migrate does for Postgres); returns true, the service then
 * stopping, when SIGTERM or SIGINT arrived meanwhile. */
bool deta_service_pause(deta_service_t *s, int ms);

/* Applies a component's migrations on the calling thread's connection, waiting
 * (with backoff, logged) while Postgres is unreachable; fails on a bad migration
 * or when asked to stop. */
deta_err_t deta_service_migrate(deta_service_t *s, const char *component,
                                const deta_migration_t *m, size_t n, char *errstr,
                                size_t errsize);
/* Migrates the outbox table and has run() start the relay. */
deta_err_t deta_service_use_outbox(deta_service_t *s, char *errstr, size_t errsize);
/* Serves openapi's document (the service's, deta_openapi of deta/openapi.h) at
 * GET /openapi.json; deta_service_run then refuses to start when the routes
 * registered by then differ from its operations. */
deta_err_t deta_service_openapi(deta_service_t *s, const deta_openapi_t *openapi, char *errstr,
                                size_t errsize);
/* Migrates the processed-events table (for idempotent consumers). */
deta_err_t deta_service_use_inbox(deta_service_t *s, char *errstr, size_t errsize);
/* A consumer thread in the service's group, started by run(). opts may be NULL;
 * a NULL opts->dependencies_up is filled with the service's readiness. */
deta_err_t deta_service_consume(deta_service_t *s, const char *const *topics, size_t ntopics,
                                deta_consume_fn fn, void *opaque,
                                const deta_consumer_opts_t *opts, char *errstr, size_t errsize);

/* The service frees obj with free_fn after it stopped (for objects that handlers
 * use until the very end). At most DETA_SERVICE_MAX_ADOPTED. */
#define DETA_SERVICE_MAX_ADOPTED 16
deta_err_t deta_service_adopt(deta_service_t *s, void *obj, void (*free_fn)(void *));

/* Periodic tasks (housekeeping such as purges; the inbox purger is one): run()
 * calls each fn(opaque, db) about once a second on its main thread, in the
 * order added, between waits for a stop signal, with that thread's Postgres
 * connection (outside any transaction; NULL only when out of memory), until the service is asked to stop. A
 * task keeps its own schedule (it returns at once while not due) and must be
 * short: the next task, and the start of a shutdown, wait for it. At most
 * DETA_SERVICE_MAX_TASKS; add them before run(). */
#define DETA_SERVICE_MAX_TASKS 8
typedef void (*deta_service_task_fn)(void *opaque, deta_db_t *db);
deta_err_t deta_service_add_task(deta_service_t *s, deta_service_task_fn fn, void *opaque);

/* Starts everything and blocks until asked to stop; returns the exit status (0
 * after a clean shutdown, 1 otherwise). */
int deta_service_run(deta_service_t *s);

#endif
