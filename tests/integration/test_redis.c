/*
 * test_redis.c - the Redis adapter (deta/redis.h) against the test stack's real
 * Redis: SET NX, expiries, owner-only compare-and-delete, GET into a buffer,
 * reconnection after the server dropped the connection, one connection per
 * thread from the pool, and an unreachable Redis answering TRANSIENT within the
 * timeout. Keys are fresh per run, with short expiries, so nothing lingers.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

/* A plain hiredis connection, to look at the server from outside the adapter. */
static redisContext *raw_redis(void) {
    struct timeval tv = {2, 0};
    redisContext *c =
        redisConnectWithTimeout(ts_env("REDIS_HOST"), atoi(ts_env("REDIS_PORT")), tv);
    if (!c || c->err)
        fail_msg("raw Redis connection: %s", c ? c->errstr : "out of memory");
    return c;
}

static long long raw_pttl(const char *key) {
    redisContext *c = raw_redis();
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
    redisContext *c = raw_redis();
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
