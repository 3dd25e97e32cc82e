/*
 * redis.h - the few Redis commands a service needs for locks and markers, through
 * hiredis, with the same habits as db.h.
 *
 * A deta_redis_t is one connection, used by one thread at a time, connected on
 * first use. Connecting and every command are bounded by DETA_REDIS_TIMEOUT_MS, so
 * a Redis that is gone or silent costs a caller at most that long per call. When
 * the server went away, the next call reconnects (once per call); if that fails,
 * or the command fails on the wire, the call returns DETA_ERR_TRANSIENT and the
 * connection is dropped, to be made again by the next call. A command is never
 * sent twice: after a failure the caller cannot know whether it ran.
 *
 * Several commands can share one round trip: deta_redis_pipeline() sends a batch
 * of independent single-key commands at once and reads their replies in order,
 * each into its own op. The batch is not atomic (other clients' commands may run
 * between ours), and no key need be in the same Redis Cluster slot as another.
 * The single-command functions below are pipelines of one.
 *
 * A deta_redis_pool_t hands each thread its own connection (created on first use,
 * closed when the thread exits or the pool is freed), like deta_db_pool_t.
 *
 * Expiries are in milliseconds. Keys and values are NUL-terminated text.
 */
#ifndef DETA_REDIS_H
#define DETA_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include "deta/config.h"
#include "deta/err.h"

#define DETA_REDIS_TIMEOUT_MS 500

typedef struct deta_redis deta_redis_t;
typedef struct deta_redis_pool deta_redis_pool_t;

/* For cfg's redis_host and redis_port, authenticating as redis_username with
 * redis_password when a password is set (on every connect). Never fails for an unreachable server: the
 * handle connects on first use. NULL only when out of memory. */
deta_redis_t *deta_redis_new(const deta_config_t *cfg);
void deta_redis_free(deta_redis_t *r);

/* SET key value NX PX ttl_ms: *set is true when the key was absent and now holds
 * value, false when it existed (and was left alone). */
deta_err_t deta_redis_set_nx(deta_redis_t *r, const char *key, const char *value, long ttl_ms,
                             bool *set, char *errstr, size_t errsize);
/* SET key value PX ttl_ms, whatever the key held. */
deta_err_t deta_redis_set(deta_redis_t *r, const char *key, const char *value, long ttl_ms,
                          char *errstr, size_t errsize);
/* GET key into buf: DETA_ERR_NOT_FOUND when absent, DETA_ERR_INVALID when the
 * value does not fit in bufsize (buf then holds ""). */
deta_err_t deta_redis_get(deta_redis_t *r, const char *key, char *buf, size_t bufsize,
                          char *errstr, size_t errsize);
/* Deletes key only while it holds value, atomically (a Lua script): the release
 * of a lock by its owner, which never removes a lock someone else took after
 * ours expired. *deleted tells whether it did. */
deta_err_t deta_redis_del_if_equal(deta_redis_t *r, const char *key, const char *value,
                                   bool *deleted, char *errstr, size_t errsize);

/* ---- several commands in one round trip ---- */

typedef enum deta_redis_op_kind {
    DETA_REDIS_GET,          /* GET key into buf */
    DETA_REDIS_SET,          /* SET key value PX ttl_ms */
    DETA_REDIS_SET_NX,       /* SET key value NX PX ttl_ms */
    DETA_REDIS_DEL_IF_EQUAL, /* deta_redis_del_if_equal's compare-and-delete */
} deta_redis_op_kind_t;

/* One command of a pipeline: the caller fills the inputs its kind uses, the
 * pipeline fills the outputs. */
typedef struct deta_redis_op {
    /* inputs */
    deta_redis_op_kind_t kind;
    const char *key;
    const char *value; /* SET, SET_NX, DEL_IF_EQUAL */
    long ttl_ms;       /* SET, SET_NX: positive */
    char *buf;         /* GET: receives the value; bufsize > 0 */
    size_t bufsize;
    /* outputs */
    deta_err_t err; /* this command's outcome (below) */
    bool found;     /* GET: the key existed (even when its value did not fit) */
    bool set;       /* SET, SET_NX: the key now holds value */
    bool deleted;   /* DEL_IF_EQUAL: the key held value and was deleted */
} deta_redis_op_t;

/* Sends the n commands of ops together and reads their n replies in order,
 * within DETA_REDIS_TIMEOUT_MS for all of them (after connecting). Each op's err:
 *   DETA_OK             the command ran: see found / set / deleted (a GET of an
 *                       absent key is OK with found false);
 *   DETA_ERR_INVALID    a malformed op (then nothing at all is sent, and every op
 *                       says INVALID), or a GET value that does not fit in
 *                       bufsize (found true, buf "");
 *   DETA_ERR_TRANSIENT  no reply: Redis unreachable, or the connection failed
 *                       before this command's reply came (it may have run); or a
 *                       passing server state (LOADING, BUSY, ...);
 *   DETA_ERR_INTERNAL   any other server error reply (such as WRONGTYPE), or out
 *                       of memory (then nothing is sent).
 * Replies that came before a failure keep their results. Returns DETA_OK when
 * every op is OK, else the err of the first op that is not, with errstr saying
 * which. n == 0 does nothing. */
deta_err_t deta_redis_pipeline(deta_redis_t *r, deta_redis_op_t *ops, size_t n, char *errstr,
                               size_t errsize);

/* PING within the timeout. */
bool deta_redis_ping(deta_redis_t *r, char *errstr, size_t errsize);

deta_redis_pool_t *deta_redis_pool_new(const deta_config_t *cfg);
/* The calling thread's connection. NULL only when out of memory. */
deta_redis_t *deta_redis_pool_get(deta_redis_pool_t *pool);
void deta_redis_pool_free(deta_redis_pool_t *pool);

#endif
