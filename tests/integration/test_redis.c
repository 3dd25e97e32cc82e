/*
 * test_redis.c - the Redis adapter (deta/redis.h) against the test stack's real
 * Redis: SET NX, expiries, owner-only compare-and-delete, GET into a buffer,
 * reconnection after the server dropped the connection, one connection per
 * thread from the pool, and an unreachable Redis answering TRANSIENT within the
 * timeout. Keys are fresh per run, with short expiries, so nothing lingers.
 *
 * Pipelines: mixed commands in one call, each with its own result; a server
 * error is one command's alone; a malformed command stops the batch before
 * anything is sent; Redis stopped (scripts/stack.sh stop redis) fails the call
 * and the call after its restart reconnects. What real Redis cannot be made to
 * do on cue - close the connection between two replies of one batch, answer
 * each reply a little late - a scripted fake server does (fake_redis below): the
 * replies read before the loss keep their results, the connection is made
 * again without a stale reply, and a batch is cut at DETA_REDIS_TIMEOUT_MS in
 * all however its replies trickle in.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "deta/config.h"
#include "deta/redis.h"
#include "testsupport.h"

static deta_config_t config_for(const char *instance_id) {
    ts_env("REDIS_HOST");
    ts_env("REDIS_PORT");
    setenv("INSTANCE_ID", instance_id, 1);
    deta_config_t cfg;
    char err[256];
    if (deta_config_load(&cfg, "test-redis", err, sizeof err) != DETA_OK)
        fail_msg("config: %s", err);
    unsetenv("INSTANCE_ID");
    return cfg;
}

static deta_redis_t *connect_fresh(void) {
    char id[37], name[64];
    ts_uuid(id);
    snprintf(name, sizeof name, "test-redis-%s", id);
    deta_config_t cfg = config_for(name);
    deta_redis_t *r = deta_redis_new(&cfg);
    assert_non_null(r);
    return r;
}

static void fresh_key(char *out, size_t size, const char *what) {
    char id[37];
    ts_uuid(id);
    snprintf(out, size, "test:%s:%s", what, id);
}

static long long raw_pttl(const char *key) {
    redisContext *c = ts_redis_connect();
    redisReply *reply = redisCommand(c, "PTTL %s", key);
    assert_non_null(reply);
    long long ttl = reply->integer;
    freeReplyObject(reply);
    redisFree(c);
    return ttl;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void set_nx_takes_an_absent_key_only(void **state) {
    (void)state;
    deta_redis_t *r = connect_fresh();
    char key[96], buf[64], err[256];
    fresh_key(key, sizeof key, "nx");
    bool set = false;
    assert_int_equal(deta_redis_set_nx(r, key, "first", 10000, &set, err, sizeof err), DETA_OK);
    assert_true(set);
    assert_int_equal(deta_redis_set_nx(r, key, "second", 10000, &set, err, sizeof err), DETA_OK);
    assert_false(set);
    assert_int_equal(deta_redis_get(r, key, buf, sizeof buf, err, sizeof err), DETA_OK);
    assert_string_equal(buf, "first");
    long long ttl = raw_pttl(key);
    assert_in_range(ttl, 1, 10000);

    /* plain SET overwrites whatever was there, with its own expiry */
    assert_int_equal(deta_redis_set(r, key, "third", 60000, err, sizeof err), DETA_OK);
    assert_int_equal(deta_redis_get(r, key, buf, sizeof buf, err, sizeof err), DETA_OK);
    assert_string_equal(buf, "third");
    assert_in_range(raw_pttl(key), 10001, 60000);
    deta_redis_free(r);
}

static void keys_expire(void **state) {
    (void)state;
    deta_redis_t *r = connect_fresh();
    char lock[96], marker[96], buf[64], err[256];
    fresh_key(lock, sizeof lock, "expiring-lock");
    fresh_key(marker, sizeof marker, "expiring-marker");
    bool set = false;
    assert_int_equal(deta_redis_set_nx(r, lock, "owner", 300, &set, err, sizeof err), DETA_OK);
    assert_true(set);
    assert_int_equal(deta_redis_set(r, marker, "seen", 300, err, sizeof err), DETA_OK);
    assert_int_equal(deta_redis_get(r, marker, buf, sizeof buf, err, sizeof err), DETA_OK);
    ts_sleep_ms(700);
    assert_int_equal(deta_redis_get(r, lock, buf, sizeof buf, err, sizeof err),
                     DETA_ERR_NOT_FOUND);
    assert_int_equal(deta_redis_get(r, marker, buf, sizeof buf, err, sizeof err),
                     DETA_ERR_NOT_FOUND);
    /* an expired lock can be taken again */
    assert_int_equal(deta_redis_set_nx(r, lock, "next", 1000, &set, err, sizeof err), DETA_OK);
    assert_true(set);
    deta_redis_free(r);
}

static void compare_and_delete_removes_only_the_owners_value(void **state) {
    (void)state;
    deta_redis_t *r = connect_fresh();
    char key[96], buf[64], err[256];
    fresh_key(key, sizeof key, "cad");
    bool set = false, deleted = true;
    assert_int_equal(deta_redis_set_nx(r, key, "token-A", 10000, &set, err, sizeof err), DETA_OK);
    assert_int_equal(deta_redis_del_if_equal(r, key, "token-B", &deleted, err, sizeof err),
                     DETA_OK);
    assert_false(deleted);
    assert_int_equal(deta_redis_get(r, key, buf, sizeof buf, err, sizeof err), DETA_OK);
    assert_string_equal(buf, "token-A");
    /* a prefix of the owner's token is not the owner */
    assert_int_equal(deta_redis_del_if_equal(r, key, "token-", &deleted, err, sizeof err),
                     DETA_OK);
    assert_false(deleted);
    assert_int_equal(deta_redis_del_if_equal(r, key, "token-A", &deleted, err, sizeof err),
                     DETA_OK);
    assert_true(deleted);
    assert_int_equal(deta_redis_get(r, key, buf, sizeof buf, err, sizeof err),
                     DETA_ERR_NOT_FOUND);
    deleted = true;
    assert_int_equal(deta_redis_del_if_equal(r, key, "token-A", &deleted, err, sizeof err),
                     DETA_OK);
    assert_false(deleted);
    deta_redis_free(r);
}

static void get_needs_room_and_arguments_are_checked(void **state) {
    (void)state;
    deta_redis_t *r = connect_fresh();
    char key[96], buf[8], err[256];
    fresh_key(key, sizeof key, "long");
    assert_int_equal(deta_redis_set(r, key, "0123456789", 10000, err, sizeof err), DETA_OK);
    assert_int_equal(deta_redis_get(r, key, buf, sizeof buf, err, sizeof err), DETA_ERR_INVALID);
    char exact[11];
    assert_int_equal(deta_redis_get(r, key, exact, sizeof exact, err, sizeof err), DETA_OK);
    assert_string_equal(exact, "0123456789");

    bool set;
    assert_int_equal(deta_redis_set_nx(r, NULL, "v", 1000, &set, err, sizeof err),
                     DETA_ERR_INVALID);
    assert_int_equal(deta_redis_set_nx(r, "", "v", 1000, &set, err, sizeof err),
                     DETA_ERR_INVALID);
    assert_int_equal(deta_redis_set_nx(r, key, NULL, 1000, &set, err, sizeof err),
                     DETA_ERR_INVALID);
    assert_int_equal(deta_redis_set(r, key, "v", 0, err, sizeof err), DETA_ERR_INVALID);
    assert_int_equal(deta_redis_set(r, key, "v", -5, err, sizeof err), DETA_ERR_INVALID);
    assert_int_equal(deta_redis_get(NULL, key, exact, sizeof exact, err, sizeof err),
                     DETA_ERR_INVALID);
    assert_int_equal(deta_redis_del_if_equal(r, key, NULL, &set, err, sizeof err),
                     DETA_ERR_INVALID);
    assert_false(deta_redis_ping(NULL, err, sizeof err));
    /* the invalid calls changed nothing */
    assert_int_equal(deta_redis_get(r, key, exact, sizeof exact, err, sizeof err), DETA_OK);
    assert_string_equal(exact, "0123456789");
    deta_redis_free(r);
}

/* CLIENT KILL every connection named name, from a raw connection. */
static int kill_clients_named(const char *name) {
    redisContext *c = ts_redis_connect();
    redisReply *list = redisCommand(c, "CLIENT LIST");
    assert_non_null(list);
    char needle[160];
    snprintf(needle, sizeof needle, " name=%s ", name);
    int killed = 0;
    for (char *line = strtok(list->str, "\n"); line; line = strtok(NULL, "\n")) {
        long long id;
        if (!strstr(line, needle) || sscanf(line, "id=%lld", &id) != 1)
            continue;
        redisReply *k = redisCommand(c, "CLIENT KILL ID %lld", id);
        killed += k && k->type == REDIS_REPLY_INTEGER ? (int)k->integer : 0;
        freeReplyObject(k);
    }
    freeReplyObject(list);
    redisFree(c);
    return killed;
}

static void a_dropped_connection_is_made_again(void **state) {
    (void)state;
    char id[37], name[64], key[96], buf[64], err[256];
    ts_uuid(id);
    snprintf(name, sizeof name, "test-redis-kill-%s", id);
    deta_config_t cfg = config_for(name);
    deta_redis_t *r = deta_redis_new(&cfg);
    assert_non_null(r);
    assert_true(deta_redis_ping(r, err, sizeof err));
    assert_int_equal(kill_clients_named(name), 1); /* it named itself after the instance */
    ts_sleep_ms(100);
    /* the very next call reconnects, and nothing is lost or doubled */
    fresh_key(key, sizeof key, "after-kill");
    bool set = false;
    if (deta_redis_set_nx(r, key, "v", 10000, &set, err, sizeof err) != DETA_OK)
        fail_msg("first call after CLIENT KILL failed: %s", err);
    assert_true(set);
    assert_int_equal(deta_redis_get(r, key, buf, sizeof buf, err, sizeof err), DETA_OK);
    assert_string_equal(buf, "v");
    deta_redis_free(r);
}

static void expect_transient_quickly(const char *host, int port) {
    deta_config_t cfg = config_for("test-redis-unreachable");
    snprintf(cfg.redis_host, sizeof cfg.redis_host, "%s", host);
    cfg.redis_port = port;
    deta_redis_t *r = deta_redis_new(&cfg);
    assert_non_null(r); /* never fails for an unreachable server */
    char buf[16], err[256] = "";
    bool set = true, deleted = true;
    double t0 = now_s();
    assert_int_equal(deta_redis_set_nx(r, "k", "v", 1000, &set, err, sizeof err),
                     DETA_ERR_TRANSIENT);
    assert_non_null(strstr(err, "Redis"));
    assert_int_equal(deta_redis_set(r, "k", "v", 1000, err, sizeof err), DETA_ERR_TRANSIENT);
    assert_int_equal(deta_redis_get(r, "k", buf, sizeof buf, err, sizeof err),
                     DETA_ERR_TRANSIENT);
    assert_int_equal(deta_redis_del_if_equal(r, "k", "v", &deleted, err, sizeof err),
                     DETA_ERR_TRANSIENT);
    err[0] = '\0';
    assert_false(deta_redis_ping(r, err, sizeof err));
    assert_true(strlen(err) > 0);
    double per_call = (now_s() - t0) / 5;
    if (per_call > 1.0)
        fail_msg("%s:%d: %.2f s per call, the timeout is %d ms", host, port, per_call,
                 DETA_REDIS_TIMEOUT_MS);
    deta_redis_free(r);
}

static void unreachable_redis_is_transient_within_the_timeout(void **state) {
    (void)state;
    expect_transient_quickly("127.0.0.1", 1); /* refused at once */
    expect_transient_quickly("192.0.2.1", 6379); /* TEST-NET-1: silent or unroutable */
}

/* ---- pipelines against the real Redis ---- */

static void assert_raw_value(const char *key, const char *want) {
    char *v = ts_redis_get(key);
    if (!want) {
        if (v)
            fail_msg("%s holds %s, expected absent", key, v);
        return;
    }
    if (!v)
        fail_msg("%s is absent, expected %s", key, want);
    assert_string_equal(v, want);
    free(v);
}

static deta_redis_op_t op_get(const char *key, char *buf, size_t bufsize) {
    return (deta_redis_op_t){.kind = DETA_REDIS_GET, .key = key, .buf = buf, .bufsize = bufsize};
}

static deta_redis_op_t op_set(deta_redis_op_kind_t kind, const char *key, const char *value,
                              long ttl_ms) {
    return (deta_redis_op_t){.kind = kind, .key = key, .value = value, .ttl_ms = ttl_ms};
}

static deta_redis_op_t op_del_if(const char *key, const char *value) {
    return (deta_redis_op_t){.kind = DETA_REDIS_DEL_IF_EQUAL, .key = key, .value = value};
}

static void pipeline_returns_each_commands_own_result(void **state) {
    (void)state;
    deta_redis_t *r = connect_fresh();
    char held[96], mine[96], absent[96], marker[96], owned[96], err[256] = "";
    fresh_key(held, sizeof held, "p-held");
    fresh_key(mine, sizeof mine, "p-mine");
    fresh_key(absent, sizeof absent, "p-absent");
    fresh_key(marker, sizeof marker, "p-marker");
    fresh_key(owned, sizeof owned, "p-owned");
    ts_redis_run("SET %s %s PX 10000", held, "someone-else");
    ts_redis_run("SET %s %s PX 10000", owned, "token-A");

    char got_held[64] = "x", got_absent[64] = "x", got_mine[64] = "x";
    deta_redis_op_t ops[] = {
        op_get(held, got_held, sizeof got_held),                  /* found */
        op_get(absent, got_absent, sizeof got_absent),            /* not found */
        op_set(DETA_REDIS_SET_NX, held, "token-B", 10000),        /* not set: held */
        op_set(DETA_REDIS_SET_NX, mine, "token-B", 10000),        /* set */
        op_get(mine, got_mine, sizeof got_mine),                  /* sees the SET NX before it */
        op_set(DETA_REDIS_SET, marker, "seen", 60000),            /* set */
        op_del_if(held, "token-B"),                               /* not ours: kept */
        op_del_if(owned, "token-A"),                              /* ours: deleted */
    };
    size_t n = sizeof ops / sizeof *ops;
    for (size_t i = 0; i < n; i++)
        ops[i].err = DETA_ERR_INTERNAL; /* so that OK below was written by the call */
    assert_int_equal(deta_redis_pipeline(r, ops, n, err, sizeof err), DETA_OK);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(ops[i].err, DETA_OK);
    assert_true(ops[0].found);
    assert_string_equal(got_held, "someone-else");
    assert_false(ops[1].found);
    assert_string_equal(got_absent, "");
    assert_false(ops[2].set);
    assert_true(ops[3].set);
    assert_true(ops[4].found);
    assert_string_equal(got_mine, "token-B");
    assert_true(ops[5].set);
    assert_false(ops[6].deleted);
    assert_true(ops[7].deleted);

    /* and the server agrees */
    assert_raw_value(held, "someone-else");
    assert_raw_value(mine, "token-B");
    assert_in_range(raw_pttl(mine), 1, 10000);
    assert_raw_value(marker, "seen");
    assert_in_range(raw_pttl(marker), 10001, 60000);
    assert_raw_value(owned, NULL);
    deta_redis_free(r);
}

static void pipeline_value_too_long_is_that_commands_alone(void **state) {
    (void)state;
    deta_redis_t *r = connect_fresh();
    char longer[96], other[96], small[8] = "x", room[64], err[256] = "";
    fresh_key(longer, sizeof longer, "p-long");
    fresh_key(other, sizeof other, "p-other");
    ts_redis_run("SET %s %s PX 10000", longer, "0123456789");
    bool set = false;
    deta_redis_op_t ops[] = {
        op_get(longer, small, sizeof small),
        op_set(DETA_REDIS_SET_NX, other, "v", 10000),
        op_get(longer, room, sizeof room),
    };
    assert_int_equal(deta_redis_pipeline(r, ops, 3, err, sizeof err), DETA_ERR_INVALID);
    assert_non_null(strstr(err, longer)); /* errstr names the command that failed */
    assert_int_equal(ops[0].err, DETA_ERR_INVALID);
    assert_true(ops[0].found); /* the key exists, its value did not fit */
    assert_string_equal(small, "");
    assert_int_equal(ops[1].err, DETA_OK);
    assert_true(ops[1].set);
    assert_int_equal(ops[2].err, DETA_OK);
    assert_string_equal(room, "0123456789");
    /* the connection is still in step: the next call reads its own reply */
    assert_int_equal(deta_redis_set_nx(r, other, "w", 10000, &set, err, sizeof err), DETA_OK);
    assert_false(set);
    deta_redis_free(r);
}

static void pipeline_server_error_is_that_commands_alone(void **state) {
    (void)state;
    deta_redis_t *r = connect_fresh();
    char list[96], plain[96], buf[64], after[64], err[256] = "";
    fresh_key(list, sizeof list, "p-list");
    fresh_key(plain, sizeof plain, "p-plain");
    ts_redis_run("RPUSH %s %s", list, "item");
    ts_redis_run("PEXPIRE %s %s", list, "10000");
    deta_redis_op_t ops[] = {
        op_set(DETA_REDIS_SET, plain, "before", 10000),
        op_get(list, buf, sizeof buf),      /* WRONGTYPE */
        op_del_if(list, "item"),            /* WRONGTYPE inside the script */
        op_get(plain, after, sizeof after), /* still answered */
    };
    assert_int_equal(deta_redis_pipeline(r, ops, 4, err, sizeof err), DETA_ERR_INTERNAL);
    assert_non_null(strstr(err, "WRONGTYPE"));
    assert_int_equal(ops[0].err, DETA_OK);
    assert_int_equal(ops[1].err, DETA_ERR_INTERNAL);
    assert_false(ops[1].found);
    assert_int_equal(ops[2].err, DETA_ERR_INTERNAL);
    assert_false(ops[2].deleted);
    assert_int_equal(ops[3].err, DETA_OK);
    assert_string_equal(after, "before");
    assert_int_equal(deta_redis_get(r, plain, buf, sizeof buf, err, sizeof err), DETA_OK);
    assert_string_equal(buf, "before");
    deta_redis_free(r);
}

static void pipeline_refuses_a_malformed_batch_before_sending(void **state) {
    (void)state;
    deta_redis_t *r = connect_fresh();
    char key[96], buf[16], err[256] = "";
    fresh_key(key, sizeof key, "p-refused");
    /* a valid SET NX first: it must not run when a later command is malformed */
    deta_redis_op_t bad[][2] = {
        {op_set(DETA_REDIS_SET_NX, key, "v", 10000), op_set(DETA_REDIS_SET, key, "v", 0)},
        {op_set(DETA_REDIS_SET_NX, key, "v", 10000), op_set(DETA_REDIS_SET_NX, key, NULL, 5)},
        {op_set(DETA_REDIS_SET_NX, key, "v", 10000), op_set(DETA_REDIS_SET, "", "v", 5)},
        {op_set(DETA_REDIS_SET_NX, key, "v", 10000), op_get(NULL, buf, sizeof buf)},
        {op_set(DETA_REDIS_SET_NX, key, "v", 10000), op_get(key, NULL, 16)},
        {op_set(DETA_REDIS_SET_NX, key, "v", 10000), op_get(key, buf, 0)},
        {op_set(DETA_REDIS_SET_NX, key, "v", 10000), op_del_if(key, NULL)},
        {op_set(DETA_REDIS_SET_NX, key, "v", 10000),
         {.kind = (deta_redis_op_kind_t)99, .key = key, .value = "v"}},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err[0] = '\0';
        if (deta_redis_pipeline(r, bad[i], 2, err, sizeof err) != DETA_ERR_INVALID)
            fail_msg("malformed batch %zu was not refused", i);
        assert_non_null(strstr(err, "command 2 of 2"));
        assert_int_equal(bad[i][0].err, DETA_ERR_INVALID);
        assert_int_equal(bad[i][1].err, DETA_ERR_INVALID);
    }
    assert_raw_value(key, NULL); /* no SET NX of those batches ran */

    deta_redis_op_t one = op_set(DETA_REDIS_SET_NX, key, "v", 10000);
    assert_int_equal(deta_redis_pipeline(NULL, &one, 1, err, sizeof err), DETA_ERR_INVALID);
    assert_int_equal(deta_redis_pipeline(r, NULL, 1, err, sizeof err), DETA_ERR_INVALID);
    assert_int_equal(deta_redis_pipeline(r, NULL, 0, err, sizeof err), DETA_OK);
    assert_int_equal(deta_redis_pipeline(r, &one, 0, err, sizeof err), DETA_OK);
    assert_raw_value(key, NULL); /* an empty batch sends nothing */
    assert_int_equal(deta_redis_pipeline(r, &one, 1, NULL, 0), DETA_OK);
    assert_true(one.set);
    assert_raw_value(key, "v");
    deta_redis_free(r);
}

static void expect_all(const deta_redis_op_t *ops, size_t n, deta_err_t err) {
    for (size_t i = 0; i < n; i++)
        if (ops[i].err != err)
            fail_msg("op %zu: %s, expected %s", i, deta_err_name(ops[i].err), deta_err_name(err));
}

static void stack_or_fail(const char *args) {
    if (ts_stack("%s", args) != 0)
        fail_msg("scripts/stack.sh %s failed", args);
}

static void stopped_redis_fails_the_pipeline_and_the_next_call_reconnects(void **state) {
    (void)state;
    deta_redis_t *r = connect_fresh();
    char key[96], marker[96], buf[64], err[256] = "";
    fresh_key(key, sizeof key, "p-stop");
    fresh_key(marker, sizeof marker, "p-stop-marker");
    deta_redis_op_t ops[] = {
        op_get(marker, buf, sizeof buf),
        op_set(DETA_REDIS_SET_NX, key, "token", 60000),
    };
    assert_int_equal(deta_redis_pipeline(r, ops, 2, err, sizeof err), DETA_OK);
    assert_true(ops[1].set);

    stack_or_fail("stop redis");
    double t0 = now_s();
    assert_int_equal(deta_redis_pipeline(r, ops, 2, err, sizeof err), DETA_ERR_TRANSIENT);
    expect_all(ops, 2, DETA_ERR_TRANSIENT);
    assert_false(ops[1].set);
    assert_non_null(strstr(err, "Redis"));
    if (now_s() - t0 > 1.5)
        fail_msg("a stopped Redis took %.2f s to fail the call", now_s() - t0);

    stack_or_fail("start redis");
    /* the first call after the restart connects again */
    if (deta_redis_pipeline(r, ops, 2, err, sizeof err) != DETA_OK)
        fail_msg("the call after the restart failed: %s", err);
    expect_all(ops, 2, DETA_OK);
    assert_false(ops[0].found);
    assert_raw_value(key, "token"); /* kept by the restart (appendonly) or set again */
    bool deleted = false;
    assert_int_equal(deta_redis_del_if_equal(r, key, "token", &deleted, err, sizeof err), DETA_OK);
    assert_true(deleted);
    deta_redis_free(r);
}

static int redis_started(void **state) {
    (void)state;
    ts_stack("start redis");
    return 0;
}

/* ---- a scripted fake Redis, for what a real one cannot be made to do ---- */

typedef enum fake_do { FAKE_ACCEPT, FAKE_READ, FAKE_SLEEP, FAKE_SEND, FAKE_END } fake_do_t;

typedef struct fake_step {
    fake_do_t what;
    int n;            /* READ: commands to wait for; SLEEP: milliseconds */
    const char *text; /* SEND: raw RESP */
} fake_step_t;

typedef struct fake_redis {
    const fake_step_t *script;
    int listener;
    int port;
    pthread_t thread;
    char failure[160]; /* what went wrong in the script, "" when nothing */
} fake_redis_t;

/* Complete RESP commands (arrays of bulk strings) at the start of buf[0..len). */
static size_t count_commands(const char *buf, size_t len, size_t *used) {
    size_t count = 0, at = 0;
    for (;;) {
        const char *end = memmem(buf + at, len - at, "\r\n", 2);
        if (!end || buf[at] != '*')
            break;
        long args = strtol(buf + at + 1, NULL, 10);
        size_t pos = (size_t)(end - buf) + 2;
        bool whole = true;
        for (long i = 0; i < args && whole; i++) {
            const char *e = pos < len ? memmem(buf + pos, len - pos, "\r\n", 2) : NULL;
            size_t size = e && buf[pos] == '$' ? (size_t)strtol(buf + pos + 1, NULL, 10) : 0;
            whole = e && (size_t)(e - buf) + 2 + size + 2 <= len;
            if (whole)
                pos = (size_t)(e - buf) + 2 + size + 2;
        }
        if (!whole)
            break;
        at = pos;
        count++;
    }
    *used = at;
    return count;
}

/* Reads until n whole commands have arrived on conn (5 s at most). */
static bool fake_read(fake_redis_t *f, int conn, int n) {
    char buf[8192];
    size_t len = 0, used = 0;
    while (count_commands(buf, len, &used) < (size_t)n) {
        ssize_t got = len < sizeof buf ? recv(conn, buf + len, sizeof buf - len, 0) : -1;
        if (got <= 0) {
            snprintf(f->failure, sizeof f->failure, "waiting for %d command(s): %s", n,
                     got == 0 ? "closed" : "error");
            return false;
        }
        len += (size_t)got;
    }
    if (used != len)
        snprintf(f->failure, sizeof f->failure, "more than %d command(s) arrived", n);
    return used == len;
}

static void *fake_run(void *p) {
    fake_redis_t *f = p;
    int conn = -1;
    struct timeval tv = {5, 0};
    for (const fake_step_t *s = f->script; s->what != FAKE_END && !f->failure[0]; s++) {
        switch (s->what) {
        case FAKE_ACCEPT:
            if (conn >= 0)
                close(conn);
            conn = accept(f->listener, NULL, NULL);
            if (conn < 0)
                snprintf(f->failure, sizeof f->failure, "accept failed");
            else
                setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
            break;
        case FAKE_READ: fake_read(f, conn, s->n); break;
        case FAKE_SLEEP: ts_sleep_ms(s->n); break;
        case FAKE_SEND: /* the client may have gone: not the script's failure */
            (void)!send(conn, s->text, strlen(s->text), MSG_NOSIGNAL);
            break;
        case FAKE_END: break;
        }
    }
    if (conn >= 0)
        close(conn);
    return NULL;
}

static void fake_start(fake_redis_t *f, const fake_step_t *script) {
    memset(f, 0, sizeof *f);
    f->script = script;
    f->listener = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(f->listener >= 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t size = sizeof addr;
    assert_int_equal(bind(f->listener, (struct sockaddr *)&addr, sizeof addr), 0);
    assert_int_equal(listen(f->listener, 4), 0);
    assert_int_equal(getsockname(f->listener, (struct sockaddr *)&addr, &size), 0);
    f->port = ntohs(addr.sin_port);
    assert_int_equal(pthread_create(&f->thread, NULL, fake_run, f), 0);
}

/* Waits for the script's end; fails the test when the script went wrong. */
static void fake_finish(fake_redis_t *f) {
    pthread_join(f->thread, NULL);
    close(f->listener);
    if (f->failure[0])
        fail_msg("fake Redis: %s", f->failure);
}

static deta_redis_t *connect_to_fake(const fake_redis_t *f) {
    deta_config_t cfg = config_for("test-redis-fake");
    snprintf(cfg.redis_host, sizeof cfg.redis_host, "127.0.0.1");
    cfg.redis_port = f->port;
    cfg.redis_username[0] = cfg.redis_password[0] = '\0'; /* its script has no AUTH */
    deta_redis_t *r = deta_redis_new(&cfg);
    assert_non_null(r);
    return r;
}

#define FAKE_HELLO {FAKE_ACCEPT, 0, NULL}, {FAKE_READ, 1, NULL}, {FAKE_SEND, 0, "+OK\r\n"}

/* The client's calls run first and the script is waited for before any
 * assertion, so that a failing test never leaves the fake's thread behind. */
static void connection_lost_mid_pipeline(void **state) {
    (void)state;
    static const fake_step_t script[] = {
        FAKE_HELLO, /* CLIENT SETNAME */
        {FAKE_READ, 3, NULL},
        {FAKE_SEND, 0, "$-1\r\n"}, /* the first reply only, then the connection ends */
        FAKE_HELLO,
        {FAKE_READ, 1, NULL},
        {FAKE_SEND, 0, "$5\r\nfresh\r\n"},
        {FAKE_END, 0, NULL},
    };
    fake_redis_t f;
    fake_start(&f, script);
    deta_redis_t *r = connect_to_fake(&f);
    char a[16] = "x", b[16] = "x", err[256] = "", next_err[256] = "";
    deta_redis_op_t ops[] = {
        op_get("k1", a, sizeof a),
        op_set(DETA_REDIS_SET_NX, "k2", "v", 1000),
        op_get("k3", b, sizeof b),
    };
    deta_err_t lost = deta_redis_pipeline(r, ops, 3, err, sizeof err);
    /* the next call connects again and reads its own reply, nothing stale */
    deta_err_t next = deta_redis_get(r, "k4", a, sizeof a, next_err, sizeof next_err);
    deta_redis_free(r);
    fake_finish(&f);

    assert_int_equal(lost, DETA_ERR_TRANSIENT);
    assert_int_equal(ops[0].err, DETA_OK); /* its reply came before the loss */
    assert_false(ops[0].found);
    assert_int_equal(ops[1].err, DETA_ERR_TRANSIENT);
    assert_false(ops[1].set);
    assert_int_equal(ops[2].err, DETA_ERR_TRANSIENT);
    assert_non_null(strstr(err, "k2")); /* the first command without a reply */
    if (next != DETA_OK)
        fail_msg("the call after the loss failed: %s", next_err);
    assert_string_equal(a, "fresh");
}

#define FAKE_STEP_MS (DETA_REDIS_TIMEOUT_MS * 3 / 5) /* shorter than the timeout */

static void slow_replies_are_cut_at_the_timeout_in_all(void **state) {
    (void)state;
    static const fake_step_t script[] = {
        FAKE_HELLO,
        {FAKE_READ, 3, NULL},
        {FAKE_SEND, 0, "+OK\r\n"},
        {FAKE_SLEEP, FAKE_STEP_MS, NULL},
        {FAKE_SEND, 0, "+OK\r\n"},
        {FAKE_SLEEP, FAKE_STEP_MS, NULL}, /* the third reply would come after 2 steps */
        {FAKE_SEND, 0, "+OK\r\n"},
        /* again, on a new connection: a narrowed wait that succeeds... */
        FAKE_HELLO,
        {FAKE_READ, 2, NULL},
        {FAKE_SLEEP, FAKE_STEP_MS, NULL},
        {FAKE_SEND, 0, "$1\r\na\r\n"},
        {FAKE_SLEEP, FAKE_STEP_MS / 6, NULL},
        {FAKE_SEND, 0, "$1\r\nb\r\n"},
        /* ...leaves the socket its whole timeout for the next call */
        {FAKE_READ, 1, NULL},
        {FAKE_SLEEP, FAKE_STEP_MS, NULL},
        {FAKE_SEND, 0, "$1\r\nc\r\n"},
        {FAKE_END, 0, NULL},
    };
    fake_redis_t f;
    fake_start(&f, script);
    deta_redis_t *r = connect_to_fake(&f);
    char a[8] = "", b[8] = "", c[8] = "", err[256] = "", gets_err[256] = "", c_err[256] = "";
    deta_redis_op_t sets[] = {
        op_set(DETA_REDIS_SET, "k1", "v", 1000),
        op_set(DETA_REDIS_SET, "k2", "v", 1000),
        op_set(DETA_REDIS_SET, "k3", "v", 1000),
    };
    double t0 = now_s();
    deta_err_t cut = deta_redis_pipeline(r, sets, 3, err, sizeof err);
    double took = now_s() - t0;
    deta_redis_op_t gets[] = {op_get("k1", a, sizeof a), op_get("k2", b, sizeof b)};
    deta_err_t narrowed = deta_redis_pipeline(r, gets, 2, gets_err, sizeof gets_err);
    deta_err_t whole = deta_redis_get(r, "k3", c, sizeof c, c_err, sizeof c_err);
    deta_redis_free(r);
    fake_finish(&f);

    assert_int_equal(cut, DETA_ERR_TRANSIENT);
    if (took > (DETA_REDIS_TIMEOUT_MS + FAKE_STEP_MS / 2) / 1000.0)
        fail_msg("the batch took %.3f s, the timeout is %d ms", took, DETA_REDIS_TIMEOUT_MS);
    assert_int_equal(sets[0].err, DETA_OK);
    assert_int_equal(sets[1].err, DETA_OK);
    assert_int_equal(sets[2].err, DETA_ERR_TRANSIENT);
    if (narrowed != DETA_OK)
        fail_msg("the batch on a new connection failed: %s", gets_err);
    assert_string_equal(a, "a");
    assert_string_equal(b, "b");
    if (whole != DETA_OK)
        fail_msg("the socket kept a narrowed timeout: %s", c_err);
    assert_string_equal(c, "c");
}

typedef struct thread_arg {
    deta_redis_pool_t *pool;
    deta_redis_t *got[2];
    bool ok;
} thread_arg_t;

static void *use_pool(void *p) {
    thread_arg_t *a = p;
    a->got[0] = deta_redis_pool_get(a->pool);
    a->got[1] = deta_redis_pool_get(a->pool);
    a->ok = a->got[0] && deta_redis_ping(a->got[0], NULL, 0);
    return NULL;
}

static void the_pool_gives_each_thread_its_own_connection(void **state) {
    (void)state;
    deta_config_t cfg = config_for("test-redis-pool");
    deta_redis_pool_t *pool = deta_redis_pool_new(&cfg);
    assert_non_null(pool);
    deta_redis_t *mine = deta_redis_pool_get(pool);
    assert_non_null(mine);
    assert_ptr_equal(deta_redis_pool_get(pool), mine);
    thread_arg_t a = {.pool = pool}, b = {.pool = pool};
    pthread_t ta, tb;
    assert_int_equal(pthread_create(&ta, NULL, use_pool, &a), 0);
    assert_int_equal(pthread_create(&tb, NULL, use_pool, &b), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    assert_true(a.ok && b.ok);
    assert_ptr_equal(a.got[0], a.got[1]);
    assert_ptr_equal(b.got[0], b.got[1]);
    assert_ptr_not_equal(a.got[0], mine);
    assert_ptr_not_equal(b.got[0], mine);
    assert_true(deta_redis_ping(mine, NULL, 0));
    deta_redis_pool_free(pool); /* closes the main thread's; the others closed at exit */
    assert_null(deta_redis_pool_get(NULL));
}

int main(void) {
    signal(SIGPIPE, SIG_IGN); /* as services do: a write to a dropped connection */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(set_nx_takes_an_absent_key_only),
        cmocka_unit_test(keys_expire),
        cmocka_unit_test(compare_and_delete_removes_only_the_owners_value),
        cmocka_unit_test(get_needs_room_and_arguments_are_checked),
        cmocka_unit_test(a_dropped_connection_is_made_again),
        cmocka_unit_test(unreachable_redis_is_transient_within_the_timeout),
        cmocka_unit_test(the_pool_gives_each_thread_its_own_connection),
        cmocka_unit_test(pipeline_returns_each_commands_own_result),
        cmocka_unit_test(pipeline_value_too_long_is_that_commands_alone),
        cmocka_unit_test(pipeline_server_error_is_that_commands_alone),
        cmocka_unit_test(pipeline_refuses_a_malformed_batch_before_sending),
        cmocka_unit_test(connection_lost_mid_pipeline),
        cmocka_unit_test(slow_replies_are_cut_at_the_timeout_in_all),
        cmocka_unit_test_teardown(stopped_redis_fails_the_pipeline_and_the_next_call_reconnects,
                                  redis_started),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
