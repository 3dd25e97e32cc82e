/*
 * service.c - the skeleton every service runs on (see deta/service.h).
 *
 * Signals: SIGTERM and SIGINT are blocked in every thread before any library
 * starts a thread of its own (libmicrohttpd, librdkafka, the relay), and the main
 * thread alone waits for them with sigtimedwait(). So no handler runs in an odd
 * context and shutdown is ordinary code: stop HTTP intake, stop the consumers
 * (each commits its stored offsets as it closes), let HTTP finish what is in
 * flight, let the outbox relay publish what it can, flush the producer.
 */
#include "deta/service.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "deta/inbox.h"
#include "deta/log.h"
#include "deta/outbox.h"

#define DETA_MAX_CONSUMERS 8
#define DETA_MAX_TOPICS 8

typedef struct deta_consumer_slot {
    deta_service_t *svc;
    const char *topics[DETA_MAX_TOPICS];
    size_t ntopics;
    deta_consume_fn fn;
    void *opaque;
    deta_consumer_opts_t opts;
    bool has_opts;
    deta_consumer_t *consumer;
    pthread_t thread;
    bool started;
} deta_consumer_slot_t;

struct deta_service {
    deta_config_t cfg;
    deta_metrics_t *metrics;
    deta_health_t *health;
    deta_http_server_t *http;
    deta_db_pool_t *db;
    deta_producer_t *producer;
    bool use_outbox;
    deta_outbox_relay_t *relay;
    deta_consumer_slot_t consumers[DETA_MAX_CONSUMERS];
    size_t nconsumers;
    atomic_bool stop;
    struct timespec started_at;
    struct {
        void *obj;
        void (*free_fn)(void *);
    } adopted[DETA_SERVICE_MAX_ADOPTED];
    size_t nadopted;
};

/* ---- health checks and observability routes ---- */

static bool check_db(void *opaque, char *detail, size_t detailsize) {
    deta_service_t *s = opaque;
    deta_db_t *db = deta_db_pool_get(s->db);
    return db && deta_db_ping(db, detail, detailsize);
}

static bool check_kafka(void *opaque, char *detail, size_t detailsize) {
    deta_service_t *s = opaque;
    return deta_producer_ping(s->producer, 1000, detail, detailsize);
}

static void handle_health(const deta_http_req_t *req, deta_http_resp_t *resp, void *opaque) {
    (void)req;
    deta_service_t *s = opaque;
    int status = 200;
    json_t *report = deta_health_report(s->health, &status);
    deta_http_resp_json(resp, status, report);
}

/* Liveness says only that the process answers: a dependency being down must not
 * get the service restarted, just taken out of rotation (readiness). */
static void handle_liveness(const deta_http_req_t *req, deta_http_resp_t *resp, void *opaque) {
    (void)req;
    (void)opaque;
    deta_http_resp_json(resp, 200, json_pack("{s:s}", "status", "UP"));
}

static void handle_metrics(const deta_http_req_t *req, deta_http_resp_t *resp, void *opaque) {
    (void)req;
    deta_service_t *s = opaque;
    char *text = deta_metrics_render(s->metrics);
    if (!text) {
        deta_http_resp_error(resp, 500, NULL, "out of memory");
        return;
    }
    deta_http_resp_text(resp, 200, "text/plain; version=0.0.4; charset=utf-8", text);
    free(text);
}

static deta_err_t mount_observability(deta_service_t *s) {
    static const char *const health_paths[] = {"/actuator/health", "/health",
                                               "/actuator/health/readiness"};
    static const char *const metrics_paths[] = {"/actuator/prometheus", "/metrics"};
    deta_err_t err = DETA_OK;
    for (size_t i = 0; i < sizeof health_paths / sizeof *health_paths && !err; i++)
        err = deta_http_route(s->http, "GET", health_paths[i], 0, handle_health, s);
    for (size_t i = 0; i < sizeof metrics_paths / sizeof *metrics_paths && !err; i++)
        err = deta_http_route(s->http, "GET", metrics_paths[i], 0, handle_metrics, s);
    if (!err)
        err = deta_http_route(s->http, "GET", "/actuator/health/liveness", 0, handle_liveness, s);
    return err;
}

/* ---- lifecycle ---- */

static void block_signals(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
}

deta_service_t *deta_service_new(const char *name, char *errstr, size_t errsize) {
    block_signals();
    deta_service_t *s = calloc(1, sizeof *s);
    if (!s) {
        deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
        return NULL;
    }
    clock_gettime(CLOCK_MONOTONIC, &s->started_at);
    atomic_init(&s->stop, false);
    if (deta_config_load(&s->cfg, name, errstr, errsize) != DETA_OK) {
        free(s);
        return NULL;
    }
    deta_log_level_t level = DETA_LOG_INFO;
    deta_log_level_parse(s->cfg.log_level, &level);
    deta_log_init(s->cfg.service, level);

    s->metrics = deta_metrics_new();
    s->health = deta_health_new();
    s->db = deta_db_pool_new(&s->cfg);
    s->producer = s->metrics ? deta_producer_new(&s->cfg, errstr, errsize) : NULL;
    if (s->producer)
        s->http = deta_http_server_new(s->cfg.http_port, s->cfg.http_body_limit,
                                       s->cfg.http_threads, errstr, errsize);
    if (!s->metrics || !s->health || !s->db || !s->producer || !s->http) {
        if (errstr && errsize && !errstr[0])
            deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
        deta_service_free(s);
        return NULL;
    }
    deta_http_server_set_metrics(s->http, s->metrics);
    deta_health_add(s->health, "db", true, check_db, s);
    deta_health_add(s->health, "kafka", true, check_kafka, s);
    if (mount_observability(s) != DETA_OK) {
        deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "cannot register the actuator routes");
        deta_service_free(s);
        return NULL;
    }
    return s;
}

const deta_config_t *deta_service_config(const deta_service_t *s) { return &s->cfg; }
deta_http_server_t *deta_service_http(deta_service_t *s) { return s->http; }
deta_metrics_t *deta_service_metrics(deta_service_t *s) { return s->metrics; }
deta_health_t *deta_service_health(deta_service_t *s) { return s->health; }
deta_db_pool_t *deta_service_db(deta_service_t *s) { return s->db; }
deta_producer_t *deta_service_producer(deta_service_t *s) { return s->producer; }
atomic_bool *deta_service_stopping(deta_service_t *s) { return &s->stop; }

/* Sleeps up to ms, returning early (true) when a stop signal arrives meanwhile. */
static bool wait_for_signal(int ms) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    int sig = sigtimedwait(&set, NULL, &ts);
    return sig == SIGTERM || sig == SIGINT;
}

deta_err_t deta_service_migrate(deta_service_t *s, const char *component,
                                const deta_migration_t *m, size_t n, char *errstr,
                                size_t errsize) {
    int backoff_ms = 100;
    for (;;) {
        deta_db_t *db = deta_db_pool_get(s->db);
        if (!db)
            return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
        deta_err_t err = deta_db_migrate(db, component, m, n, errstr, errsize);
        if (err != DETA_ERR_TRANSIENT)
            return err;
        DETA_WARN("waiting for Postgres to apply %s migrations: %s", component,
                  errstr ? errstr : "unavailable");
        if (wait_for_signal(backoff_ms)) {
            atomic_store(&s->stop, true);
            return deta_errf(DETA_ERR_TRANSIENT, errstr, errsize, "stopped while waiting for Postgres");
        }
        backoff_ms = backoff_ms * 2 > 5000 ? 5000 : backoff_ms * 2;
    }
}

deta_err_t deta_service_use_outbox(deta_service_t *s, char *errstr, size_t errsize) {
    deta_err_t err = deta_service_migrate(s, "outbox", deta_outbox_migrations,
                                          deta_outbox_migrations_count, errstr, errsize);
    if (err == DETA_OK)
        s->use_outbox = true;
    return err;
}

deta_err_t deta_service_use_inbox(deta_service_t *s, char *errstr, size_t errsize) {
    return deta_service_migrate(s, "inbox", deta_inbox_migrations, deta_inbox_migrations_count,
                                errstr, errsize);
}

deta_err_t deta_service_consume(deta_service_t *s, const char *const *topics, size_t ntopics,
                                deta_consume_fn fn, void *opaque,
                                const deta_consumer_opts_t *opts, char *errstr, size_t errsize) {
    if (s->nconsumers == DETA_MAX_CONSUMERS || ntopics == 0 || ntopics > DETA_MAX_TOPICS)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "too many consumers or topics");
    deta_consumer_slot_t *slot = &s->consumers[s->nconsumers++];
    slot->svc = s;
    for (size_t i = 0; i < ntopics; i++)
        slot->topics[i] = topics[i];
    slot->ntopics = ntopics;
    slot->fn = fn;
    slot->opaque = opaque;
    if (opts) {
        slot->opts = *opts;
        slot->has_opts = true;
    }
    if (!slot->opts.metrics)
        slot->opts.metrics = s->metrics;
    slot->has_opts = true;
    return DETA_OK;
}

deta_err_t deta_service_adopt(deta_service_t *s, void *obj, void (*free_fn)(void *)) {
    if (s->nadopted == DETA_SERVICE_MAX_ADOPTED) {
        free_fn(obj);
        return DETA_ERR_INTERNAL;
    }
    s->adopted[s->nadopted].obj = obj;
    s->adopted[s->nadopted].free_fn = free_fn;
    s->nadopted++;
    return DETA_OK;
}

static void *consumer_main(void *arg) {
    deta_consumer_slot_t *slot = arg;
    deta_consumer_run(slot->consumer, &slot->svc->stop);
    return NULL;
}

static deta_err_t start_consumers(deta_service_t *s, char *errstr, size_t errsize) {
    for (size_t i = 0; i < s->nconsumers; i++) {
        deta_consumer_slot_t *slot = &s->consumers[i];
        slot->consumer = deta_consumer_new(&s->cfg, s->cfg.service, slot->topics, slot->ntopics,
                                           slot->fn, slot->opaque, s->producer,
                                           slot->has_opts ? &slot->opts : NULL, errstr, errsize);
        if (!slot->consumer)
            return DETA_ERR_INTERNAL;
        if (pthread_create(&slot->thread, NULL, consumer_main, slot) != 0)
            return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "cannot start a consumer thread");
        slot->started = true;
    }
    return DETA_OK;
}

static void stop_consumers(deta_service_t *s) {
    atomic_store(&s->stop, true);
    for (size_t i = 0; i < s->nconsumers; i++) {
        deta_consumer_slot_t *slot = &s->consumers[i];
        if (slot->started)
            pthread_join(slot->thread, NULL);
        slot->started = false;
        deta_consumer_free(slot->consumer);
        slot->consumer = NULL;
    }
}

static double seconds_since(const struct timespec *t0) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t0->tv_sec) + (double)(now.tv_nsec - t0->tv_nsec) / 1e9;
}

int deta_service_run(deta_service_t *s) {
    char err[512] = "";
    if (atomic_load(&s->stop))
        return 0;
    if (s->use_outbox) {
        s->relay = deta_outbox_relay_new(&s->cfg, s->producer, s->metrics, err, sizeof err);
        if (!s->relay || deta_outbox_relay_start(s->relay, err, sizeof err) != DETA_OK) {
            DETA_ERROR("cannot start the outbox relay: %s", err);
            return 1;
        }
    }
    if (start_consumers(s, err, sizeof err) != DETA_OK) {
        DETA_ERROR("cannot start consumers: %s", err);
        stop_consumers(s);
        return 1;
    }
    if (deta_http_server_start(s->http, err, sizeof err) != DETA_OK) {
        DETA_ERROR("cannot start HTTP on port %d: %s", s->cfg.http_port, err);
        stop_consumers(s);
        return 1;
    }
    deta_gauge_set(deta_gauge(s->metrics, "deta_startup_seconds",
                              "Seconds from process start to serving HTTP", NULL),
                   seconds_since(&s->started_at));
    DETA_INFO("%s %s listening on port %d (kafka %s, postgres %s:%d/%s)", s->cfg.service,
              s->cfg.instance_id, deta_http_server_port(s->http), s->cfg.kafka_bootstrap,
              s->cfg.pg_host, s->cfg.pg_port, s->cfg.pg_database);

    while (!wait_for_signal(1000) && !atomic_load(&s->stop))
        ;
    DETA_INFO("stopping: no new requests, finishing what is in flight");
    deta_http_server_quiesce(s->http);
    stop_consumers(s);
    deta_http_server_free(s->http);
    s->http = NULL;
    deta_outbox_relay_free(s->relay);
    s->relay = NULL;
    DETA_INFO("stopped");
    return 0;
}

void deta_service_free(deta_service_t *s) {
    if (!s)
        return;
    stop_consumers(s);
    deta_http_server_free(s->http);
    deta_outbox_relay_free(s->relay);
    deta_producer_free(s->producer);
    deta_db_pool_free(s->db);
    for (size_t i = s->nadopted; i > 0; i--)
        s->adopted[i - 1].free_fn(s->adopted[i - 1].obj);
    deta_health_free(s->health);
    deta_metrics_free(s->metrics);
    free(s);
}
