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
 * Every command but PING (and the connection's own CLIENT SETNAME) goes through
 * deta_redis_pipeline(), the single-command functions as batches of one, so
 * replies are interpreted in one place. A batch is queued
 * whole in hiredis's output buffer (redisAppendCommandArgv), written at once by
 * the first redisGetReply, and its replies are read back in order, one per op:
 * n commands cost one round trip instead of n. The batch is bounded as a single
 * command is: the first reply waits the socket's timeout, and a later reply
 * that has not arrived yet only what is left of DETA_REDIS_TIMEOUT_MS since the
 * batch began (the socket's timeout is narrowed for it, and restored after).
 * Only independent single-key commands go in a batch, never a script over
 * several keys, so that it would still work with keys in different slots of a
 * Redis Cluster.
 *
 * A command that fails on the wire is never resent: it may have reached the
 * server (a SET NX that ran but whose reply was lost would look, if resent, like
 * someone else's lock). The caller gets TRANSIENT and decides. In a batch, the
 * replies read before the failure keep their results; the connection is dropped
 * with whatever was still pending on it, so a later call can never read a reply
 * meant for an earlier one.
 *
 * Server error replies map to TRANSIENT when they describe a passing state
 * (LOADING, BUSY, MASTERDOWN, TRYAGAIN, READONLY, OOM, CLUSTERDOWN) and to
 * INTERNAL otherwise (a bug of ours, such as a wrong command). They are one
 * op's outcome: the others of its batch are unaffected.
 *
 * Authentication: with REDIS_PASSWORD set, every connection, the first and each
 * reconnect, begins with AUTH [REDIS_USERNAME] REDIS_PASSWORD (Redis 6+ ACL users;
 * the password alone authenticates the default user). The password is sent as a
 * command argument and never appears in an error or a log line.
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
#include "clock.h"
#include "perthread.h"

/* Atomic owner-only delete: compare and delete in one step on the server. */
static const char DEL_IF_EQUAL_SCRIPT[] =
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('del', KEYS[1]) else return 0 end";

struct deta_redis {
    char host[256];
    int port;
    char username[64];  /* REDIS_USERNAME; "" AUTH with the password alone */
    char password[128]; /* REDIS_PASSWORD; "" no AUTH */
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
    snprintf(r->username, sizeof r->username, "%s", cfg->redis_username);
    snprintf(r->password, sizeof r->password, "%s", cfg->redis_password);
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

/* AUTH [username] password on a fresh connection, when a password is set.
 * Passed as arguments (never formatted into a command string), and never put in
 * a message: a refusal says only what the server answered. DETA_OK, or TRANSIENT
 * with errstr (a wrong password is a deployment's error, but a server restarted
 * before its ACL file was back is not, and the caller retries either way). */
static deta_err_t authenticate(deta_redis_t *r, char *errstr, size_t errsize) {
    if (!r->password[0])
        return DETA_OK;
    const char *argv[3] = {"AUTH", r->username, r->password};
    int argc = 3;
    if (!r->username[0]) {
        argv[1] = r->password;
        argc = 2;
    }
    redisReply *reply = redisCommandArgv(r->ctx, argc, argv, NULL);
    if (!reply)
        return deta_errf(DETA_ERR_TRANSIENT, errstr, errsize,
                         "cannot connect to Redis at %s:%d: %s", r->host, r->port,
                         r->ctx->errstr[0] ? r->ctx->errstr : "no reply to AUTH");
    deta_err_t err = DETA_OK;
    if (reply->type == REDIS_REPLY_ERROR)
        err = deta_errf(DETA_ERR_TRANSIENT, errstr, errsize,
                        "Redis at %s:%d refused AUTH as user %s: %.200s", r->host, r->port,
                        r->username[0] ? r->username : "default", reply->str ? reply->str : "");
    freeReplyObject(reply);
    return err;
}

static deta_err_t connect_now(deta_redis_t *r, char *errstr, size_t errsize) {
    r->ctx = redisConnectWithTimeout(r->host, r->port, timeout_tv());
    if (!r->ctx)
        return deta_errf(DETA_ERR_TRANSIENT, errstr, errsize,
                         "cannot connect to Redis at %s:%d: out of memory", r->host, r->port);
    if (r->ctx->err == 0 && redisSetTimeout(r->ctx, timeout_tv()) == REDIS_OK) {
        redisEnableKeepAlive(r->ctx);
        if (authenticate(r, errstr, errsize) != DETA_OK) {
            drop_connection(r);
            return DETA_ERR_TRANSIENT;
        }
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

/* ---- the ops of a pipeline ---- */

static const char *op_name(deta_redis_op_kind_t kind) {
    switch (kind) {
    case DETA_REDIS_GET: return "GET";
    case DETA_REDIS_SET: return "SET";
    case DETA_REDIS_SET_NX: return "SET NX";
    case DETA_REDIS_DEL_IF_EQUAL: return "compare-and-delete";
    }
    return "?";
}

/* Why op cannot be sent, or NULL when it can. */
static const char *op_flaw(const deta_redis_op_t *op) {
    if (!op->key || !*op->key)
        return "missing key";
    switch (op->kind) {
    case DETA_REDIS_GET:
        return op->buf && op->bufsize > 0 ? NULL : "missing buffer";
    case DETA_REDIS_SET:
    case DETA_REDIS_SET_NX:
        if (!op->value)
            return "missing value";
        return op->ttl_ms > 0 ? NULL : "expiry must be positive";
    case DETA_REDIS_DEL_IF_EQUAL:
        return op->value ? NULL : "missing value";
    }
    return "unknown kind";
}

/* All ops sendable, or every one marked INVALID (nothing of the batch is sent). */
static deta_err_t check_ops(deta_redis_op_t *ops, size_t n, char *errstr, size_t errsize) {
    for (size_t i = 0; i < n; i++) {
        const char *flaw = op_flaw(&ops[i]);
        if (!flaw)
            continue;
        for (size_t j = 0; j < n; j++)
            ops[j].err = DETA_ERR_INVALID;
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "Redis: command %zu of %zu: %s",
                         i + 1, n, flaw);
    }
    return DETA_OK;
}

/* Every op unanswered until its reply says otherwise. */
static void reset_outputs(deta_redis_op_t *ops, size_t n, deta_err_t err) {
    for (size_t i = 0; i < n; i++) {
        ops[i].err = err;
        ops[i].found = ops[i].set = ops[i].deleted = false;
        if (ops[i].kind == DETA_REDIS_GET)
            ops[i].buf[0] = '\0';
    }
}

/* The command line of op; ttl is the room for its expiry's digits. */
static int op_argv(const deta_redis_op_t *op, const char *argv[6], char ttl[24]) {
    switch (op->kind) {
    case DETA_REDIS_GET:
        argv[0] = "GET";
        argv[1] = op->key;
        return 2;
    case DETA_REDIS_SET:
    case DETA_REDIS_SET_NX:
        snprintf(ttl, 24, "%ld", op->ttl_ms);
        argv[0] = "SET";
        argv[1] = op->key;
        argv[2] = op->value;
        argv[3] = "PX";
        argv[4] = ttl;
        argv[5] = "NX";
        return op->kind == DETA_REDIS_SET_NX ? 6 : 5;
    case DETA_REDIS_DEL_IF_EQUAL:
        argv[0] = "EVAL";
        argv[1] = DEL_IF_EQUAL_SCRIPT;
        argv[2] = "1";
        argv[3] = op->key;
        argv[4] = op->value;
        return 5;
    }
    return 0;
}

/* Queues every command in hiredis's output buffer; nothing is written yet. On
 * failure (out of memory) the connection and what it had queued are dropped. */
static deta_err_t append_ops(deta_redis_t *r, const deta_redis_op_t *ops, size_t n,
                             char *errstr, size_t errsize) {
    for (size_t i = 0; i < n; i++) {
        const char *argv[6];
        char ttl[24];
        int argc = op_argv(&ops[i], argv, ttl);
        if (redisAppendCommandArgv(r->ctx, argc, argv, NULL) != REDIS_OK) {
            drop_connection(r);
            return deta_errf(DETA_ERR_INTERNAL, errstr, errsize,
                             "Redis %s %s: cannot queue the command (out of memory)",
                             op_name(ops[i].kind), ops[i].key);
        }
    }
    return DETA_OK;
}

/* ---- replies ---- */

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

/* The wire failed: the connection is dropped, and what it had pending with it. */
static deta_err_t connection_lost(deta_redis_t *r, const char *what, const char *key,
                                  const char *why, char *errstr, size_t errsize) {
    deta_errf(DETA_ERR_TRANSIENT, errstr, errsize, "Redis %s%s%s failed: %s", what,
              key ? " " : "", key ? key : "", why);
    drop_connection(r);
    return DETA_ERR_TRANSIENT;
}

static bool set_timeout_ms(redisContext *ctx, long ms) {
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    return redisSetTimeout(ctx, tv) == REDIS_OK;
}

/* The next reply, already read or from the socket. The first reply of a batch
 * waits the socket's own timeout (the whole budget, as the batch just began);
 * a later one that has not arrived yet only what is left until deadline, so
 * that a server answering slowly cannot stretch the batch past it. *narrowed
 * tells the caller to give the socket its full timeout back. */
static deta_err_t next_reply(deta_redis_t *r, const deta_redis_op_t *op, long deadline,
                             bool first, bool *narrowed, redisReply **out, char *errstr,
                             size_t errsize) {
    const char *what = op ? op_name(op->kind) : "PING", *key = op ? op->key : NULL;
    void *reply = NULL;
    if (!first && redisGetReplyFromReader(r->ctx, &reply) == REDIS_OK && !reply) {
        long left = deadline - deta_clock_ms();
        if (left <= 0)
            return connection_lost(r, what, key, "no reply within the timeout", errstr, errsize);
        if (!set_timeout_ms(r->ctx, left))
            return connection_lost(r, what, key, "cannot set the timeout", errstr, errsize);
        *narrowed = true;
    }
    if (!reply && redisGetReply(r->ctx, &reply) != REDIS_OK)
        reply = NULL;
    if (!reply)
        return connection_lost(r, what, key, r->ctx->errstr[0] ? r->ctx->errstr : "connection lost",
                               errstr, errsize);
    *out = reply;
    return DETA_OK;
}

static deta_err_t unexpected(const redisReply *reply, const deta_redis_op_t *op, char *errstr,
                             size_t errsize) {
    return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "Redis %s %s: unexpected reply type %d",
                     op_name(op->kind), op->key, reply->type);
}

static deta_err_t take_get(deta_redis_op_t *op, const redisReply *reply, char *errstr,
                           size_t errsize) {
    if (reply->type == REDIS_REPLY_NIL)
        return DETA_OK;
    if (reply->type != REDIS_REPLY_STRING)
        return unexpected(reply, op, errstr, errsize);
    op->found = true;
    if (reply->len >= op->bufsize)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "Redis GET %s: value of %zu bytes does not fit in %zu", op->key,
                         reply->len, op->bufsize);
    memcpy(op->buf, reply->str, reply->len + 1);
    return DETA_OK;
}

static deta_err_t take_set(deta_redis_op_t *op, const redisReply *reply, char *errstr,
                           size_t errsize) {
    if (reply->type == REDIS_REPLY_STATUS)
        op->set = true;
    else if (reply->type != REDIS_REPLY_NIL || op->kind != DETA_REDIS_SET_NX)
        return unexpected(reply, op, errstr, errsize);
    return DETA_OK;
}

static deta_err_t take_deleted(deta_redis_op_t *op, const redisReply *reply, char *errstr,
                               size_t errsize) {
    if (reply->type != REDIS_REPLY_INTEGER)
        return unexpected(reply, op, errstr, errsize);
    op->deleted = reply->integer == 1;
    return DETA_OK;
}

/* op's outcome from its reply. Server errors map to TRANSIENT when they
 * describe a passing state, else INTERNAL (a bug of ours, such as WRONGTYPE). */
static deta_err_t take_reply(deta_redis_op_t *op, const redisReply *reply, char *errstr,
                             size_t errsize) {
    if (reply->type == REDIS_REPLY_ERROR) {
        const char *msg = reply->str ? reply->str : "";
        return deta_errf(is_passing_state(msg) ? DETA_ERR_TRANSIENT : DETA_ERR_INTERNAL, errstr,
                         errsize, "Redis %s %s: %s", op_name(op->kind), op->key, msg);
    }
    switch (op->kind) {
    case DETA_REDIS_GET: return take_get(op, reply, errstr, errsize);
    case DETA_REDIS_SET:
    case DETA_REDIS_SET_NX: return take_set(op, reply, errstr, errsize);
    case DETA_REDIS_DEL_IF_EQUAL: return take_deleted(op, reply, errstr, errsize);
    }
    return unexpected(reply, op, errstr, errsize);
}

/* Reads the n replies in order into their ops. After a failure on the wire the
 * rest stay TRANSIENT (the connection is gone with their replies). errstr gets
 * the first failure's reason. */
static deta_err_t read_replies(deta_redis_t *r, deta_redis_op_t *ops, size_t n, char *errstr,
                               size_t errsize) {
    long deadline = deta_clock_ms() + DETA_REDIS_TIMEOUT_MS;
    bool narrowed = false;
    deta_err_t result = DETA_OK;
    for (size_t i = 0; i < n && r->ctx; i++) {
        char why[512];
        redisReply *reply;
        deta_err_t err = next_reply(r, &ops[i], deadline, i == 0, &narrowed, &reply, why,
                                    sizeof why);
        if (!err) {
            err = take_reply(&ops[i], reply, why, sizeof why);
            freeReplyObject(reply);
        }
        ops[i].err = err;
        if (err && !result)
            result = deta_errf(err, errstr, errsize, "%s", why);
    }
    if (narrowed && r->ctx && !set_timeout_ms(r->ctx, DETA_REDIS_TIMEOUT_MS))
        drop_connection(r);
    return result;
}

/* ---- the public commands ---- */

deta_err_t deta_redis_pipeline(deta_redis_t *r, deta_redis_op_t *ops, size_t n, char *errstr,
                               size_t errsize) {
    if (!r || (n > 0 && !ops))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "Redis: missing handle or commands");
    if (n == 0)
        return DETA_OK;
    deta_err_t err = check_ops(ops, n, errstr, errsize);
    if (err)
        return err;
    reset_outputs(ops, n, DETA_ERR_TRANSIENT);
    err = ensure_connection(r, errstr, errsize);
    if (!err)
        err = append_ops(r, ops, n, errstr, errsize);
    if (err) {
        reset_outputs(ops, n, err);
        return err;
    }
    return read_replies(r, ops, n, errstr, errsize);
}

deta_err_t deta_redis_set_nx(deta_redis_t *r, const char *key, const char *value, long ttl_ms,
                             bool *set, char *errstr, size_t errsize) {
    deta_redis_op_t op = {.kind = DETA_REDIS_SET_NX, .key = key, .value = value, .ttl_ms = ttl_ms};
    deta_err_t err = deta_redis_pipeline(r, &op, 1, errstr, errsize);
    if (!err && set)
        *set = op.set;
    return err;
}

deta_err_t deta_redis_set(deta_redis_t *r, const char *key, const char *value, long ttl_ms,
                          char *errstr, size_t errsize) {
    deta_redis_op_t op = {.kind = DETA_REDIS_SET, .key = key, .value = value, .ttl_ms = ttl_ms};
    return deta_redis_pipeline(r, &op, 1, errstr, errsize);
}

deta_err_t deta_redis_get(deta_redis_t *r, const char *key, char *buf, size_t bufsize,
                          char *errstr, size_t errsize) {
    deta_redis_op_t op = {.kind = DETA_REDIS_GET, .key = key, .buf = buf, .bufsize = bufsize};
    deta_err_t err = deta_redis_pipeline(r, &op, 1, errstr, errsize);
    if (!err && !op.found)
        return deta_errf(DETA_ERR_NOT_FOUND, errstr, errsize, "no key %s", key);
    return err;
}

deta_err_t deta_redis_del_if_equal(deta_redis_t *r, const char *key, const char *value,
                                   bool *deleted, char *errstr, size_t errsize) {
    deta_redis_op_t op = {.kind = DETA_REDIS_DEL_IF_EQUAL, .key = key, .value = value};
    deta_err_t err = deta_redis_pipeline(r, &op, 1, errstr, errsize);
    if (!err && deleted)
        *deleted = op.deleted;
    return err;
}

bool deta_redis_ping(deta_redis_t *r, char *errstr, size_t errsize) {
    if (!r) {
        deta_errf(DETA_ERR_INVALID, errstr, errsize, "no Redis handle");
        return false;
    }
    if (ensure_connection(r, errstr, errsize) != DETA_OK)
        return false;
    const char *argv[] = {"PING"};
    redisReply *reply;
    bool narrowed = false;
    if (redisAppendCommandArgv(r->ctx, 1, argv, NULL) != REDIS_OK) {
        connection_lost(r, "PING", NULL, "out of memory", errstr, errsize);
        return false;
    }
    if (next_reply(r, NULL, 0, true, &narrowed, &reply, errstr, errsize) != DETA_OK)
        return false;
    bool ok = reply->type == REDIS_REPLY_STATUS && strcmp(reply->str, "PONG") == 0;
    if (!ok)
        deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "Redis PING: unexpected reply");
    freeReplyObject(reply);
    return ok;
}

/* ---- per-thread pool: perthread.c with this file's constructor ---- */

struct deta_redis_pool {
    deta_config_t cfg; /* the constructor's argument, for the pool's lifetime */
    deta_perthread_t *threads;
};

static void *pool_make(const void *cfg) { return deta_redis_new(cfg); }
static void pool_destroy(void *obj) { deta_redis_free(obj); }

deta_redis_pool_t *deta_redis_pool_new(const deta_config_t *cfg) {
    if (!cfg)
        return NULL;
    deta_redis_pool_t *pool = calloc(1, sizeof *pool);
    if (pool) {
        pool->cfg = *cfg;
        pool->threads = deta_perthread_new(&pool->cfg, pool_make, pool_destroy);
    }
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
