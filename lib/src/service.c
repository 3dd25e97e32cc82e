/*
 * service.c - the skeleton every service runs on (see deta/service.h).
 *
 * Signals: SIGTERM and SIGINT are blocked in every thread before any library
 * starts a thread of its own (libmicrohttpd, librdkafka, the relay), and the main
 * thread alone waits for them with sigtimedwait(). So no handler runs in an odd
 * context and shutdown is ordinary code, in phases, each logged with its
 * duration, all within DETA_SHUTDOWN_TIMEOUT_MS (T):
 *
 *   1. http intake     readiness turns 503; the listen socket is shut (new
 *                      connections are refused: a load balancer moves on);
 *   2. http requests   a short grace (T/20, 500 ms at most) for requests in
 *                      flight, then the server stops, waiting for its handlers;
 *   3. consumers       each stops after the messages in hand (a retry loop gives
 *                      up; its message stays uncommitted and is redelivered),
 *                      commits, and once all of them have committed (a member
 *                      leaving would fail the others' commits) leaves the group,
 *                      in parallel, by 0.6 T;
 *   4. outbox relay    finishes the batch in hand and publishes what is left,
 *                      by 0.85 T (what it cannot is published after the restart);
 *   5. producer        flushes what is in flight (dead letters), by 0.95 T.
 *
 * HTTP drains before the consumers stop and the relay stops last, so that the
 * rows written by requests and handlers in flight are published before exit.
 * The exit status is 0 when every phase finished cleanly, 1 when one had to be
 * cut short (the log says which and why). A watchdog thread, armed when the
 * shutdown begins, backs the bounds up: should anything still run at T (a handler
 * stuck in a call), it logs the phase and what was still running and exits the
 * process with status 1 rather than hang.
 *
 * Readiness for the consumers: deta_service_consume() gives each consumer the
 * service's required health checks (db, kafka) as its dependencies_up hook, so an
 * outage does not use up messages' retries (see kafka.h). Handlers call it after
 * failures, from many threads at once, so the answer is cached for
 * DETA_READINESS_CACHE_MS and refreshed by one caller at a time while the others
 * take the cached answer.
 *
 * Open files: every HTTP connection is a descriptor, and HTTP_MAX_CONNECTIONS (4096 by
 * default) is above the usual soft RLIMIT_NOFILE of 1024. At start the soft limit is
 * raised to the hard one (logged), and the service refuses to start (exit 2, naming
 * HTTP_MAX_CONNECTIONS) when libmicrohttpd's connection limit (HTTP_MAX_CONNECTIONS +
 * DETA_HTTP_RESERVED_CONNECTIONS) plus DETA_FD_MARGIN for everything else (Postgres,
 * Kafka, Redis, logs) does not fit below it.
 */
#include "clock.h"
#include "deta/service.h"

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <sys/resource.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "deta/inbox.h"
#include "deta/log.h"
#include "deta/openapi.h"
#include "deta/outbox.h"
#include "deta/trace.h"

#define DETA_MAX_CONSUMERS 8
#define DETA_MALLOC_ARENAS 2
#define DETA_MAX_TOPICS 8
#define DETA_READINESS_CACHE_MS 300
#define DETA_HTTP_GRACE_MAX_MS 500
#define DETA_FD_MARGIN 256 /* open files besides HTTP connections */
#define DETA_CONSUMER_CLOSE_MS 10000 /* a consumer that ended without a shutdown */
#define DETA_TRACE_FREE_FLUSH_MS 1000 /* spans of a service freed without run()'s shutdown */

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
    atomic_bool finished; /* run and close returned */
    deta_err_t close_result;
} deta_consumer_slot_t;

/* The cached answer of the required health checks (see the top). */
typedef struct readiness {
    pthread_mutex_t lock;
    long checked_ms; /* 0: never */
    bool up;
    bool refreshing;
} readiness_t;

typedef enum shutdown_phase {
    PHASE_HTTP_INTAKE,
    PHASE_HTTP_REQUESTS,
    PHASE_CONSUMERS,
    PHASE_OUTBOX,
    PHASE_PRODUCER,
    PHASE_COUNT,
} shutdown_phase_t;

static const char *const phase_names[PHASE_COUNT] = {"http intake", "http requests",
                                                     "consumers", "outbox relay", "producer"};

/* The shutdown's clock, timeline and watchdog. */
typedef struct shutdown_clock {
    long started_ms, deadline_ms;
    long phase_ms[PHASE_COUNT]; /* durations of the phases done */
    atomic_int phase;           /* the phase running now */
    pthread_t watchdog;
    bool watching;
    pthread_mutex_t lock;
    pthread_cond_t done_cond;
    bool done;
} shutdown_clock_t;

struct deta_service {
    deta_config_t cfg;
    deta_metrics_t *metrics;
    deta_health_t *health;
    deta_http_server_t *http;
    deta_db_pool_t *db;
    deta_producer_t *producer;
    bool use_outbox;
    const deta_openapi_t *openapi; /* the OpenAPI document served; NULL: none */
    deta_outbox_relay_t *relay;
    deta_retention_t *inbox_purger; /* one of the tasks below */
    struct {
        deta_service_task_fn fn;
        void *opaque;
    } tasks[DETA_SERVICE_MAX_TASKS]; /* run by the main loop (deta_service_run) */
    size_t ntasks;
    deta_consumer_slot_t consumers[DETA_MAX_CONSUMERS];
    size_t nconsumers;
    atomic_bool stop;           /* asked to stop (signal, or the service itself) */
    atomic_bool consumer_failed; /* a consumer gave up (out of memory): exit non-zero */
    atomic_bool consumers_stop; /* phase 3 */
    atomic_long consumers_close_by_ms;
    pthread_mutex_t commit_lock; /* guards the two counts below */
    pthread_cond_t commit_cond;
    size_t nstarted, ncommitted; /* consumer threads; those that committed */
    readiness_t ready;
    shutdown_clock_t shutdown;
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

/* Readiness is the health report, except that a stopping service is out of
 * rotation whatever its dependencies say. */
static void handle_readiness(const deta_http_req_t *req, deta_http_resp_t *resp, void *opaque) {
    deta_service_t *s = opaque;
    if (!atomic_load(&s->stop)) {
        handle_health(req, resp, opaque);
        return;
    }
    deta_http_resp_json(resp, 503, json_pack("{s:s}", "status", "OUT_OF_SERVICE"));
}

/* The consumers' dependencies_up hook: the required checks, cached. */
static bool dependencies_up(void *opaque) {
    deta_service_t *s = opaque;
    readiness_t *r = &s->ready;
    pthread_mutex_lock(&r->lock);
    bool fresh = r->checked_ms && deta_clock_ms() - r->checked_ms < DETA_READINESS_CACHE_MS;
    bool up = r->up;
    if (fresh || r->refreshing) {
        pthread_mutex_unlock(&r->lock);
        return up;
    }
    r->refreshing = true;
    pthread_mutex_unlock(&r->lock);
    char why[512];
    up = deta_health_required_up(s->health, why, sizeof why);
    pthread_mutex_lock(&r->lock);
    if (r->up && !up)
        DETA_WARN("dependencies down: %s", why);
    else if (!r->up && up)
        DETA_INFO("dependencies up again");
    r->up = up;
    r->checked_ms = deta_clock_ms();
    r->refreshing = false;
    pthread_mutex_unlock(&r->lock);
    return up;
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
    static const char *const health_paths[] = {"/actuator/health", "/health"};
    static const char *const metrics_paths[] = {"/actuator/prometheus", "/metrics"};
    deta_err_t err = DETA_OK;
    for (size_t i = 0; i < sizeof health_paths / sizeof *health_paths && !err; i++)
        err = deta_http_route(s->http, "GET", health_paths[i], DETA_HTTP_ALWAYS, handle_health, s);
    for (size_t i = 0; i < sizeof metrics_paths / sizeof *metrics_paths && !err; i++)
        err = deta_http_route(s->http, "GET", metrics_paths[i], DETA_HTTP_ALWAYS, handle_metrics,
                              s);
    if (!err)
        err = deta_http_route(s->http, "GET", "/actuator/health/readiness", DETA_HTTP_ALWAYS,
                              handle_readiness, s);
    if (!err)
        err = deta_http_route(s->http, "GET", "/actuator/health/liveness", DETA_HTTP_ALWAYS,
                              handle_liveness, s);
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

/* glibc gives each thread that allocates an arena of its own, up to 8 per core,
 * and memory freed in an arena is rarely handed back. A service runs a dozen or
 * two threads (HTTP pool, consumer workers, librdkafka's), most allocating a
 * little now and then; DETA_MALLOC_ARENAS arenas keep that memory in few places,
 * at the cost of some lock contention that these allocation rates do not show.
 * (Set here rather than through MALLOC_ARENA_MAX so that every deployment gets it.) */
static void limit_malloc_arenas(void) { mallopt(M_ARENA_MAX, DETA_MALLOC_ARENAS); }

/* Raises the soft open-file limit to the hard one, and checks that the HTTP server's
 * connections fit below it (see the top of this file). */
static deta_err_t fit_open_files(const deta_config_t *cfg, char *errstr, size_t errsize) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return DETA_OK;
    if (rl.rlim_cur < rl.rlim_max) {
        rlim_t was = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) == 0) {
            DETA_INFO("open files: soft limit raised from %llu to the hard limit %llu",
                      (unsigned long long)was, (unsigned long long)rl.rlim_max);
        } else {
            DETA_WARN("open files: cannot raise the soft limit %llu to %llu: %s",
                      (unsigned long long)was, (unsigned long long)rl.rlim_max, strerror(errno));
            rl.rlim_cur = was;
        }
    }
    long need = (long)cfg->http_max_connections + DETA_HTTP_RESERVED_CONNECTIONS + DETA_FD_MARGIN;
    if (rl.rlim_cur != RLIM_INFINITY && (rlim_t)need > rl.rlim_cur)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "HTTP_MAX_CONNECTIONS: %d connections need %ld open files, and the "
                         "open-file limit is %llu: lower HTTP_MAX_CONNECTIONS or raise the "
                         "limit (ulimit -n, the container's nofile)",
                         cfg->http_max_connections, need, (unsigned long long)rl.rlim_cur);
    return DETA_OK;
}

/* The HTTP bounds of the settings, handed to the server. */
static deta_err_t set_http_limits(deta_service_t *s, char *errstr, size_t errsize) {
    const deta_http_limits_t limits = {
        .max_connections = s->cfg.http_max_connections,
        .max_connections_per_client = s->cfg.http_max_connections_per_client,
        .header_timeout_ms = s->cfg.http_header_timeout_ms,
        .body_timeout_ms = s->cfg.http_body_timeout_ms,
        .header_limit = s->cfg.http_header_limit,
    };
    return deta_http_server_set_limits(s->http, &limits, errstr, errsize);
}

deta_service_t *deta_service_new(const deta_service_def_t *def, char *errstr, size_t errsize) {
    limit_malloc_arenas();
    block_signals();
    deta_service_t *s = calloc(1, sizeof *s);
    if (!s) {
        deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
        return NULL;
    }
    clock_gettime(CLOCK_MONOTONIC, &s->started_at);
    atomic_init(&s->stop, false);
    atomic_init(&s->consumer_failed, false);
    atomic_init(&s->consumers_stop, false);
    atomic_init(&s->consumers_close_by_ms, 0);
    pthread_mutex_init(&s->ready.lock, NULL);
    s->ready.up = true;
    pthread_mutex_init(&s->commit_lock, NULL);
    atomic_init(&s->shutdown.phase, PHASE_HTTP_INTAKE);
    pthread_mutex_init(&s->shutdown.lock, NULL);
    deta_cond_init_monotonic(&s->shutdown.done_cond);
    deta_cond_init_monotonic(&s->commit_cond);
    if (deta_config_load_service(&s->cfg, def, errstr, errsize) != DETA_OK) {
        deta_service_free(s);
        return NULL;
    }
    deta_log_level_t level = DETA_LOG_INFO;
    deta_log_level_parse(s->cfg.log_level, &level);
    deta_log_init(s->cfg.service, level);
    if (fit_open_files(&s->cfg, errstr, errsize) != DETA_OK) {
        deta_service_free(s);
        return NULL;
    }

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
    /* Tracing (deta/trace.h): on when OTEL_EXPORTER_OTLP_ENDPOINT is set. */
    if (deta_trace_start(&s->cfg.trace, s->cfg.instance_id, s->metrics, errstr, errsize) !=
        DETA_OK) {
        deta_service_free(s);
        return NULL;
    }
    /* The tokens live in the HTTP server alone from here on. */
    deta_http_server_set_auth(s->http, &s->cfg.auth);
    deta_auth_wipe(&s->cfg.auth);
    if (set_http_limits(s, errstr, errsize) != DETA_OK ||
        deta_http_server_set_cors(s->http, s->cfg.http_cors_origins, errstr, errsize) != DETA_OK) {
        deta_service_free(s);
        return NULL;
    }
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

bool deta_service_pause(deta_service_t *s, int ms) {
    if (atomic_load(&s->stop))
        return true;
    if (!wait_for_signal(ms))
        return false;
    atomic_store(&s->stop, true);
    return true;
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

static void handle_openapi(const deta_http_req_t *req, deta_http_resp_t *resp, void *opaque) {
    (void)req;
    deta_service_t *s = opaque;
    deta_http_resp_text(resp, 200, "application/json", s->openapi->document);
}

deta_err_t deta_service_openapi(deta_service_t *s, const deta_openapi_t *openapi, char *errstr,
                                size_t errsize) {
    if (s->openapi)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "the OpenAPI document is set twice");
    s->openapi = openapi;
    if (deta_http_route(s->http, "GET", "/openapi.json", 0, handle_openapi, s) != DETA_OK)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "cannot register /openapi.json");
    return DETA_OK;
}

/* The routes registered against the OpenAPI document, when there is one. */
static deta_err_t check_openapi(deta_service_t *s, char *errstr, size_t errsize) {
    if (!s->openapi)
        return DETA_OK;
    size_t n = 0;
    const char *method, *pattern;
    while (deta_http_route_at(s->http, n, &method, &pattern))
        n++;
    deta_openapi_route_t *routes = calloc(n ? n : 1, sizeof *routes);
    if (!routes)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    for (size_t i = 0; i < n; i++)
        deta_http_route_at(s->http, i, &routes[i].method, &routes[i].pattern);
    deta_err_t err = deta_openapi_match_routes(s->openapi->operations, routes, n, errstr, errsize);
    free(routes);
    return err;
}

deta_err_t deta_service_use_outbox(deta_service_t *s, char *errstr, size_t errsize) {
    deta_err_t err = deta_service_migrate(s, "outbox", deta_outbox_migrations,
                                          deta_outbox_migrations_count, errstr, errsize);
    /* Postgres just answered: a server the relay cannot stream from stops the
     * service here, with the reason, not later in a relay that never publishes. */
    deta_db_t *db = err == DETA_OK ? deta_db_pool_get(s->db) : NULL;
    if (err == DETA_OK)
        err = db ? deta_outbox_check_server(db, errstr, errsize)
                 : deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    if (err == DETA_OK)
        s->use_outbox = true;
    return err;
}

deta_err_t deta_service_use_inbox(deta_service_t *s, char *errstr, size_t errsize) {
    deta_err_t err = deta_service_migrate(s, "inbox", deta_inbox_migrations,
                                          deta_inbox_migrations_count, errstr, errsize);
    if (err || s->inbox_purger)
        return err;
    if (!(s->inbox_purger = deta_inbox_purger_new(&s->cfg, s->metrics, errstr, errsize)))
        return DETA_ERR_INVALID;
    if (deta_service_add_task(s, deta_retention_run, s->inbox_purger))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "too many periodic tasks");
    return DETA_OK;
}

deta_err_t deta_service_add_task(deta_service_t *s, deta_service_task_fn fn, void *opaque) {
    if (!s || !fn || s->ntasks == DETA_SERVICE_MAX_TASKS)
        return DETA_ERR_INVALID;
    s->tasks[s->ntasks].fn = fn;
    s->tasks[s->ntasks].opaque = opaque;
    s->ntasks++;
    return DETA_OK;
}

deta_err_t deta_service_consume(deta_service_t *s, const char *const *topics, size_t ntopics,
                                deta_consume_fn fn, void *opaque,
                                const deta_consumer_opts_t *opts, char *errstr, size_t errsize) {
    if (s->nconsumers == DETA_MAX_CONSUMERS || ntopics == 0 || ntopics > DETA_MAX_TOPICS)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "too many consumers or topics");
    /* Every consumer is in the service's group, and a static member's id is
     * <INSTANCE_ID>.<its first topic> (kafka_conf.c): two with one first topic
     * would fence each other. */
    for (size_t i = 0; i < s->nconsumers; i++)
        if (strcmp(s->consumers[i].topics[0], topics[0]) == 0)
            return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                             "two consumers of the service begin with topic %s", topics[0]);
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
    if (!slot->opts.dependencies_up) {
        slot->opts.dependencies_up = dependencies_up;
        slot->opts.dependencies_opaque = s;
    }
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

static int ms_until(long by) {
    long left = by - deta_clock_ms();
    return left > 0 ? (int)left : 0;
}

/* Counts this consumer's commit done and waits (until by) for the others': the
 * first to leave the group would make the others' commits fail. */
static void await_all_committed(deta_service_t *s, long by) {
    struct timespec until = deta_clock_at(by);
    pthread_mutex_lock(&s->commit_lock);
    s->ncommitted++;
    pthread_cond_broadcast(&s->commit_cond);
    while (s->ncommitted < s->nstarted)
        if (pthread_cond_timedwait(&s->commit_cond, &s->commit_lock, &until) != 0)
            break;
    pthread_mutex_unlock(&s->commit_lock);
}

/* Runs the consumer until phase 3, then commits, and once every consumer of the
 * service has, leaves the group; all by the phase's deadline, every consumer in
 * parallel. A consumer that ends on its own (no shutdown) does the same with the
 * default bound. */
static void *consumer_main(void *arg) {
    deta_consumer_slot_t *slot = arg;
    deta_service_t *s = slot->svc;
    if (deta_consumer_run(slot->consumer, &s->consumers_stop) != DETA_OK &&
        !atomic_load(&s->consumers_stop)) {
        /* It stopped by itself, rather than skip a message it could not handle:
         * the whole service stops and exits non-zero, so that the orchestrator
         * starts it again (a service without its consumer is no use healthy). */
        DETA_ERROR("a consumer of %s stopped by itself: the service stops", s->cfg.service);
        atomic_store(&s->consumer_failed, true);
        atomic_store(&s->stop, true);
    }
    long by = atomic_load(&s->consumers_close_by_ms);
    if (!by)
        by = deta_clock_ms() + DETA_CONSUMER_CLOSE_MS;
    long commit_by = by - (by - deta_clock_ms()) / 3; /* two thirds of the time to commit */
    deta_err_t committed = deta_consumer_commit(slot->consumer, ms_until(commit_by));
    await_all_committed(s, commit_by);
    deta_err_t closed = deta_consumer_close(slot->consumer, ms_until(by));
    slot->close_result = committed ? committed : closed;
    atomic_store(&slot->finished, true);
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
        atomic_init(&slot->finished, false);
        pthread_mutex_lock(&s->commit_lock);
        bool started = pthread_create(&slot->thread, NULL, consumer_main, slot) == 0;
        if (started)
            s->nstarted++;
        pthread_mutex_unlock(&s->commit_lock);
        if (!started)
            return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "cannot start a consumer thread");
        slot->started = true;
    }
    return DETA_OK;
}

/* Stops, closes (by close_by_ms, a CLOCK_MONOTONIC time; 0: the default bound)
 * and frees the consumers; false when one could not commit and leave in time. */
static bool stop_consumers(deta_service_t *s, long close_by_ms) {
    atomic_store(&s->consumers_close_by_ms, close_by_ms);
    atomic_store(&s->consumers_stop, true);
    bool clean = true;
    for (size_t i = 0; i < s->nconsumers; i++) {
        deta_consumer_slot_t *slot = &s->consumers[i];
        if (slot->started) {
            pthread_join(slot->thread, NULL);
            clean = clean && slot->close_result == DETA_OK;
        }
        slot->started = false;
        deta_consumer_free(slot->consumer);
        slot->consumer = NULL;
    }
    return clean;
}

/* ---- shutdown ---- */

/* What the phase running now still waits for, into buf. */
static void describe_running(deta_service_t *s, shutdown_phase_t phase, char *buf, size_t size) {
    size_t len = (size_t)snprintf(buf, size, "%s", phase_names[phase]);
    if (phase != PHASE_CONSUMERS)
        return;
    for (size_t i = 0; i < s->nconsumers && len < size; i++) {
        deta_consumer_slot_t *slot = &s->consumers[i];
        if (!slot->started || atomic_load(&slot->finished))
            continue;
        len += (size_t)snprintf(buf + len, size - len, " [%s%s]", slot->topics[0],
                                slot->ntopics > 1 ? ",..." : "");
    }
}

/* Exits the process when the shutdown is not done by its deadline. */
static void *watchdog_main(void *arg) {
    deta_service_t *s = arg;
    shutdown_clock_t *sc = &s->shutdown;
    struct timespec until = deta_clock_at(sc->deadline_ms);
    pthread_mutex_lock(&sc->lock);
    while (!sc->done)
        if (pthread_cond_timedwait(&sc->done_cond, &sc->lock, &until) == ETIMEDOUT)
            break;
    bool done = sc->done;
    pthread_mutex_unlock(&sc->lock);
    if (done)
        return NULL;
    char running[512];
    describe_running(s, (shutdown_phase_t)atomic_load(&sc->phase), running, sizeof running);
    DETA_ERROR("shutdown did not finish within %d ms (DETA_SHUTDOWN_TIMEOUT_MS): still "
               "running: %s; exiting with status 1",
               s->cfg.shutdown_timeout_ms, running);
    _exit(1);
}

static void shutdown_begin(deta_service_t *s) {
    shutdown_clock_t *sc = &s->shutdown;
    sc->started_ms = deta_clock_ms();
    sc->deadline_ms = sc->started_ms + s->cfg.shutdown_timeout_ms;
    atomic_store(&sc->phase, PHASE_HTTP_INTAKE);
    sc->watching = pthread_create(&sc->watchdog, NULL, watchdog_main, s) == 0;
    if (!sc->watching)
        DETA_WARN("cannot start the shutdown watchdog: the shutdown is not bounded");
    DETA_INFO("stopping: within %d ms", s->cfg.shutdown_timeout_ms);
}

/* The time at fraction f of the shutdown's bound. */
static long shutdown_mark(const deta_service_t *s, double f) {
    return s->shutdown.started_ms + (long)(f * s->cfg.shutdown_timeout_ms);
}

/* Ends the phase running now (logged with its duration); the next one begins. */
static void phase_done(deta_service_t *s, long *phase_started, bool clean) {
    shutdown_clock_t *sc = &s->shutdown;
    int phase = atomic_load(&sc->phase);
    long now = deta_clock_ms();
    sc->phase_ms[phase] = now - *phase_started;
    deta_log(clean ? DETA_LOG_INFO : DETA_LOG_WARN, NULL, NULL, "shutdown: %s %s in %ld ms",
             phase_names[phase], clean ? "done" : "cut short", sc->phase_ms[phase]);
    *phase_started = now;
    if (phase + 1 < PHASE_COUNT)
        atomic_store(&sc->phase, phase + 1);
}

/* Disarms the watchdog (it has nothing to do once the shutdown is done). */
static void shutdown_end(deta_service_t *s) {
    shutdown_clock_t *sc = &s->shutdown;
    if (!sc->watching)
        return;
    pthread_mutex_lock(&sc->lock);
    sc->done = true;
    pthread_cond_broadcast(&sc->done_cond);
    pthread_mutex_unlock(&sc->lock);
    pthread_join(sc->watchdog, NULL);
    sc->watching = false;
}

/* Phases 1 and 2. */
static void stop_http(deta_service_t *s, long *t) {
    deta_http_server_quiesce(s->http);
    phase_done(s, t, true);
    long grace = s->cfg.shutdown_timeout_ms / 20;
    deta_sleep_ms(grace < DETA_HTTP_GRACE_MAX_MS ? grace : DETA_HTTP_GRACE_MAX_MS);
    deta_http_server_free(s->http);
    s->http = NULL;
    phase_done(s, t, true);
}

/* Phases 4 and 5; false when something was left unpublished. */
static bool stop_publishing(deta_service_t *s, long *t) {
    bool clean = true;
    if (s->relay) {
        int within = (int)(shutdown_mark(s, 0.85) - deta_clock_ms());
        clean = deta_outbox_relay_stop(s->relay, within > 0 ? within : 0) == DETA_OK;
        deta_outbox_relay_free(s->relay);
        s->relay = NULL;
    }
    phase_done(s, t, clean);
    char err[256];
    int within = (int)(shutdown_mark(s, 0.95) - deta_clock_ms());
    bool flushed = deta_producer_flush(s->producer, within > 0 ? within : 0, err, sizeof err) ==
                   DETA_OK;
    if (!flushed) {
        DETA_WARN("shutdown: producer: %s; dropping them (outbox rows are published after "
                  "the restart, unfinished messages redelivered)",
                  err);
        deta_producer_purge(s->producer);
    }
    phase_done(s, t, flushed);
    return clean && flushed;
}

/* The phases in order; returns the exit status. */
static int shut_down(deta_service_t *s) {
    shutdown_begin(s);
    long t = s->shutdown.started_ms;
    stop_http(s, &t);
    bool clean = stop_consumers(s, shutdown_mark(s, 0.6));
    phase_done(s, &t, clean);
    clean = stop_publishing(s, &t) && clean;
    /* The spans of all that (the relay's last publishes too), by 0.99 T; spans
     * left are dropped, counted, and never fail the shutdown. */
    int trace_left = deta_trace_stop(ms_until(shutdown_mark(s, 0.99)));
    if (trace_left > 0)
        DETA_WARN("shutdown: %d spans were not exported in time", trace_left);
    const long *ms = s->shutdown.phase_ms;
    deta_log(clean ? DETA_LOG_INFO : DETA_LOG_WARN, NULL, NULL,
             "stopped in %ld ms (bound %d ms): http intake %ld ms, http requests %ld ms, "
             "consumers %ld ms, outbox relay %ld ms, producer %ld ms; exit status %d",
             deta_clock_ms() - s->shutdown.started_ms, s->cfg.shutdown_timeout_ms,
             ms[PHASE_HTTP_INTAKE], ms[PHASE_HTTP_REQUESTS], ms[PHASE_CONSUMERS],
             ms[PHASE_OUTBOX], ms[PHASE_PRODUCER], clean ? 0 : 1);
    return clean && !atomic_load(&s->consumer_failed) ? 0 : 1;
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
    if (check_openapi(s, err, sizeof err) != DETA_OK) {
        DETA_ERROR("the OpenAPI document and the routes differ: %s", err);
        return 1;
    }
    if (s->use_outbox) {
        s->relay = deta_outbox_relay_new(&s->cfg, s->producer, s->metrics, err, sizeof err);
        if (!s->relay || deta_outbox_relay_start(s->relay, err, sizeof err) != DETA_OK) {
            DETA_ERROR("cannot start the outbox relay: %s", err);
            return 1;
        }
    }
    if (start_consumers(s, err, sizeof err) != DETA_OK) {
        DETA_ERROR("cannot start consumers: %s", err);
        stop_consumers(s, 0);
        return 1;
    }
    if (deta_http_server_start(s->http, err, sizeof err) != DETA_OK) {
        DETA_ERROR("cannot start HTTP on port %d: %s", s->cfg.http_port, err);
        stop_consumers(s, 0);
        return 1;
    }
    deta_gauge_set(deta_gauge(s->metrics, "deta_startup_seconds",
                              "Seconds from process start to serving HTTP", NULL),
                   seconds_since(&s->started_at));
    DETA_INFO("%s %s listening on port %d (kafka %s, postgres %s:%d/%s)", s->cfg.service,
              s->cfg.instance_id, deta_http_server_port(s->http), s->cfg.kafka_bootstrap,
              s->cfg.pg_host, s->cfg.pg_port, s->cfg.pg_database);

    /* The main thread waits for signals; between them it runs the periodic tasks
     * (the inbox purge, a service's own) on its connection (the one the
     * migrations used). */
    while (!wait_for_signal(1000) && !atomic_load(&s->stop))
        for (size_t i = 0; i < s->ntasks && !atomic_load(&s->stop); i++)
            s->tasks[i].fn(s->tasks[i].opaque, deta_db_pool_get(s->db));
    atomic_store(&s->stop, true);
    return shut_down(s);
}

void deta_service_free(deta_service_t *s) {
    if (!s)
        return;
    atomic_store(&s->stop, true);
    stop_consumers(s, 0);
    deta_http_server_free(s->http);
    deta_outbox_relay_free(s->relay);
    deta_retention_free(s->inbox_purger);
    deta_producer_free(s->producer);
    deta_trace_stop(DETA_TRACE_FREE_FLUSH_MS);
    deta_db_pool_free(s->db);
    for (size_t i = s->nadopted; i > 0; i--)
        s->adopted[i - 1].free_fn(s->adopted[i - 1].obj);
    deta_health_free(s->health);
    deta_metrics_free(s->metrics);
    shutdown_end(s); /* the watchdog covers the frees above too */
    pthread_cond_destroy(&s->shutdown.done_cond);
    pthread_mutex_destroy(&s->shutdown.lock);
    pthread_mutex_destroy(&s->ready.lock);
    pthread_cond_destroy(&s->commit_cond);
    pthread_mutex_destroy(&s->commit_lock);
    free(s);
}
