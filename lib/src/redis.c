/*
 * redis.c - Redis through hiredis 0.14 (see deta/redis.h).
 *
 * Design, mirroring db.c. A deta_redis_t owns one blocking redisContext, made
 * lazily with a connect timeout and given a read/write timeout, so no call can
 * hang on a silent server for longer than DETA_REDIS_TIMEOUT_MS per step. Every
 * call first makes sure the connection is usable, at most one reconnect per call:
 *
 *   - a context hiredis has marked failed (err set) is dropped;
 *   - an idle connection whose socket is readable has heard from the server
 *     while we were not asking. Replies only ever follow our own commands, so
 *     this is the end of file of a connection the server closed (restart,
 *     CLIENT KILL, idle timeout): it is dropped before anything is sent on it.
 *     So the first call after a lost connection normally succeeds instead of
 *     failing once.
 *
 * A command that fails on the wire is never resent: it may have reached the
 * server (a SET NX that ran but whose reply was lost would look, if resent, like
 * someone else's lock). The caller gets TRANSIENT and decides.
 *
 * Server error replies map to TRANSIENT when they describe a passing state
 * (LOADING, BUSY, MASTERDOWN, TRYAGAIN, READONLY, OOM, CLUSTERDOWN) and to
 * INTERNAL otherwise (a bug of ours, such as a wrong command).
 *
 * Each connection names itself (CLIENT SETNAME) after the instance id, so that
 * CLIENT LIST tells the services apart, as application_name does in Postgres.
 *
 * Writing to a connection the peer closed raises SIGPIPE: services ignore it
 * (service.c), and so must any other program that uses this file.
 *
 * The pool keeps one deta_redis_t per thread (perthread.c, shared with db.c):
 * closed when its thread exits, and deta_redis_pool_free() closes those of
 * threads still alive. The pool must
 * outlive the threads that use it, or they must have exited before it is freed.
 */
#include "deta/redis.h"

#include <hiredis/hiredis.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include "perthread.h"

/* Atomic owner-only delete: compare and delete in one step on the server. */
static const char DEL_IF_EQUAL_SCRIPT[] =
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('del', KEYS[1]) else return 0 end";

struct deta_redis {
    char host[256];
    int port;
    char client_name[96];
    redisContext *ctx;
};

/* ---- connection ---- */

/* CLIENT SETNAME refuses blanks; anything else printable is kept. */
static void make_client_name(char *out, size_t outsize, const char *instance_id) {
    size_t n = 0;
    for (const char *p = instance_id; *p && n + 1 < outsize; p++)
        out[n++] = (*p > ' ' && *p < 127) ? *p : '-';
    out[n] = '\0';
}

deta_redis_t *deta_redis_new(const deta_config_t *cfg) {
    if (!cfg)
        return NULL;
    deta_redis_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    snprintf(r->host, sizeof r->host, "%s", cfg->redis_host);
    r->port = cfg->redis_port;
    make_client_name(r->client_name, sizeof r->client_name,
                     cfg->instance_id[0] ? cfg->instance_id : cfg->service);
    return r;
}

static void drop_connection(deta_redis_t *r) {
    if (r->ctx)
        redisFree(r->ctx);
    r->ctx = NULL;
}

void deta_redis_free(deta_redis_t *r) {
    if (!r)
        return;
    drop_connection(r);
    free(r);
}

static struct timeval timeout_tv(void) {
    struct timeval tv = {.tv_sec = DETA_REDIS_TIMEOUT_MS / 1000,
                         .tv_usec = (DETA_REDIS_TIMEOUT_MS % 1000) * 1000};
    return tv;
}

/* An idle socket with something to read (or hung up) is a closed connection. */
static bool idle_connection_died(const redisContext *ctx) {
    struct pollfd pfd = {.fd = ctx->fd, .events = POLLIN};
    if (pfd.fd < 0)
        return true;
    return poll(&pfd, 1, 0) != 0;
}

/* Names the connection; a failure on the wire means the connection is unusable. */
static bool name_connection(deta_redis_t *r) {
    if (!r->client_name[0])
        return true;
    redisReply *reply = redisCommand(r->ctx, "CLIENT SETNAME %s", r->client_name);
    freeReplyObject(reply);
    return reply != NULL;
}

static deta_err_t connect_now(deta_redis_t *r, char *errstr, size_t errsize) {
    r->ctx = redisConnectWithTimeout(r->host, r->port, timeout_tv());
    if (!r->ctx)
        return deta_errf(DETA_ERR_TRANSIENT, errstr, errsize,
                         "cannot connect to Redis at %s:%d: out of memory", r->host, r->port);
    if (r->ctx->err == 0 && redisSetTimeout(r->ctx, timeout_tv()) == REDIS_OK) {
        redisEnableKeepAlive(r->ctx);
        if (name_connection(r))
            return DETA_OK;
    }
    deta_errf(DETA_ERR_TRANSIENT, errstr, errsize, "cannot connect to Redis at %s:%d: %s",
              r->host, r->port, r->ctx->errstr[0] ? r->ctx->errstr : "failed");
    drop_connection(r);
    return DETA_ERR_TRANSIENT;
}

/* A usable connection, reconnecting at most once. */
static deta_err_t ensure_connection(deta_redis_t *r, char *errstr, size_t errsize) {
    if (r->ctx && (r->ctx->err || idle_connection_died(r->ctx)))
        drop_connection(r);
    return r->ctx ? DETA_OK : connect_now(r, errstr, errsize);
}

/* ---- commands ---- */

static bool is_passing_state(const char *msg) {
    static const char *const passing[] = {"LOADING", "BUSY",  "MASTERDOWN", "TRYAGAIN",
                                          "READONLY", "OOM", "CLUSTERDOWN"};
    for (size_t i = 0; i < sizeof passing / sizeof *passing; i++) {
        size_t n = strlen(passing[i]);
        if (strncmp(msg, passing[i], n) == 0 && (msg[n] == ' ' || msg[n] == '\0'))
            return true;
    }
    return false;
}

/* Sends argv once. DETA_OK with *out the reply (never an error reply; the caller
 * frees it), else an error with errstr filled and *out NULL. */
static deta_err_t run(deta_redis_t *r, int argc, const char **argv, redisReply **out,
                      char *errstr, size_t errsize) {
    *out = NULL;
    deta_err_t err = ensure_connection(r, errstr, errsize);
    if (err)
        return err;
    redisReply *reply = redisCommandArgv(r->ctx, argc, argv, NULL);
    if (!reply) {
        deta_errf(DETA_ERR_TRANSIENT, errstr, errsize, "Redis %s failed: %s", argv[0],
                  r->ctx->errstr[0] ? r->ctx->errstr : "connection lost");
        drop_connection(r);
        return DETA_ERR_TRANSIENT;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        const char *msg = reply->str ? reply->str : "";
        err = deta_errf(is_passing_state(msg) ? DETA_ERR_TRANSIENT : DETA_ERR_INTERNAL, errstr,
                        errsize, "Redis %s: %s", argv[0], msg);
        freeReplyObject(reply);
        return err;
    }
    *out = reply;
    return DETA_OK;
}

static deta_err_t unexpected(redisReply *reply, const char *cmd, char *errstr, size_t errsize) {
    int type = reply->type;
    freeReplyObject(reply);
    return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "Redis %s: unexpected reply type %d",
                     cmd, type);
}

static deta_err_t check_args(const deta_redis_t *r, const char *key, const char *value,
                             long ttl_ms, char *errstr, size_t errsize) {
    if (!r || !key || !*key || !value)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "Redis: missing handle, key or value");
    if (ttl_ms <= 0)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "Redis: expiry must be positive");
    return DETA_OK;
}

/* SET key value PX ttl [NX]: *set tells whether the key now holds value. */
static deta_err_t set_px(deta_redis_t *r, const char *key, const char *value, long ttl_ms,
                         bool nx, bool *set, char *errstr, size_t errsize) {
    deta_err_t err = check_args(r, key, value, ttl_ms, errstr, errsize);
    if (err)
        return err;
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%ld", ttl_ms);
    const char *argv[] = {"SET", key, value, "PX", ttl, "NX"};
    redisReply *reply;
    err = run(r, nx ? 6 : 5, argv, &reply, errstr, errsize);
    if (err)
        return err;
    if (reply->type == REDIS_REPLY_NIL && nx)
        *set = false;
    else if (reply->type == REDIS_REPLY_STATUS)
        *set = true;
    else
        return unexpected(reply, "SET", errstr, errsize);
    freeReplyObject(reply);
    return DETA_OK;
}

deta_err_t deta_redis_set_nx(deta_redis_t *r, const char *key, const char *value, long ttl_ms,
                             bool *set, char *errstr, size_t errsize) {
    bool dummy;
    return set_px(r, key, value, ttl_ms, true, set ? set : &dummy, errstr, errsize);
}

deta_err_t deta_redis_set(deta_redis_t *r, const char *key, const char *value, long ttl_ms,
                          char *errstr, size_t errsize) {
    bool set;
    return set_px(r, key, value, ttl_ms, false, &set, errstr, errsize);
}

deta_err_t deta_redis_get(deta_redis_t *r, const char *key, char *buf, size_t bufsize,
                          char *errstr, size_t errsize) {
    if (!r || !key || !*key || !buf || bufsize == 0)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "Redis: missing handle, key or buffer");
    const char *argv[] = {"GET", key};
    redisReply *reply;
    deta_err_t err = run(r, 2, argv, &reply, errstr, errsize);
    if (err)
        return err;
    if (reply->type == REDIS_REPLY_NIL) {
        freeReplyObject(reply);
        return deta_errf(DETA_ERR_NOT_FOUND, errstr, errsize, "no key %s", key);
    }
    if (reply->type != REDIS_REPLY_STRING)
        return unexpected(reply, "GET", errstr, errsize);
    if (reply->len >= bufsize)
        err = deta_errf(DETA_ERR_INVALID, errstr, errsize,
                        "Redis GET %s: value of %zu bytes does not fit in %zu", key, reply->len,
                        bufsize);
    else
        memcpy(buf, reply->str, reply->len + 1);
    freeReplyObject(reply);
    return err;
}

deta_err_t deta_redis_del_if_equal(deta_redis_t *r, const char *key, const char *value,
                                   bool *deleted, char *errstr, size_t errsize) {
    if (!r || !key || !*key || !value)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "Redis: missing handle, key or value");
    const char *argv[] = {"EVAL", DEL_IF_EQUAL_SCRIPT, "1", key, value};
    redisReply *reply;
    deta_err_t err = run(r, 5, argv, &reply, errstr, errsize);
    if (err)
        return err;
    if (reply->type != REDIS_REPLY_INTEGER)
        return unexpected(reply, "EVAL", errstr, errsize);
    if (deleted)
        *deleted = reply->integer == 1;
    freeReplyObject(reply);
    return DETA_OK;
}

bool deta_redis_ping(deta_redis_t *r, char *errstr, size_t errsize) {
    if (!r) {
        deta_errf(DETA_ERR_INVALID, errstr, errsize, "no Redis handle");
        return false;
    }
    const char *argv[] = {"PING"};
    redisReply *reply;
    if (run(r, 1, argv, &reply, errstr, errsize) != DETA_OK)
        return false;
    bool ok = reply->type == REDIS_REPLY_STATUS && strcmp(reply->str, "PONG") == 0;
    if (!ok)
        deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "Redis PING: unexpected reply");
    freeReplyObject(reply);
    return ok;
}

/* ---- per-thread pool: perthread.c with this file's constructor ---- */

struct deta_redis_pool {
    deta_perthread_t *threads;
};

static void *pool_make(const deta_config_t *cfg) { return deta_redis_new(cfg); }
static void pool_destroy(void *obj) { deta_redis_free(obj); }

deta_redis_pool_t *deta_redis_pool_new(const deta_config_t *cfg) {
    deta_redis_pool_t *pool = calloc(1, sizeof *pool);
    if (pool)
        pool->threads = deta_perthread_new(cfg, pool_make, pool_destroy);
    if (pool && !pool->threads) {
        free(pool);
        return NULL;
    }
    return pool;
}

deta_redis_t *deta_redis_pool_get(deta_redis_pool_t *pool) {
    return pool ? deta_perthread_get(pool->threads) : NULL;
}

void deta_redis_pool_free(deta_redis_pool_t *pool) {
    if (!pool)
        return;
    deta_perthread_free(pool->threads);
    free(pool);
}
