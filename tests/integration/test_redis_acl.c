/*
 * test_redis_acl.c - Redis authentication and least privilege
 * (docs/security.md): the stack's Redis runs with the default user off and an
 * ACL user for payment-service (scripts/stack.sh's users.acl; stack.env's
 * PAYMENT_REDIS_USERNAME and PAYMENT_REDIS_PASSWORD).
 *
 *   - libdeta's client (deta/redis.h) with payment-service's settings uses its
 *     key patterns: a marker (payment:dedup:*) and a lock (payment-lock:order:*)
 *     taken, read and released (the compare-and-delete script included);
 *   - the same user is refused (NOPERM) on another key, on admin commands
 *     (CONFIG, FLUSHALL, KEYS, ACL, INFO) and on Pub/Sub;
 *   - without AUTH every command is refused (NOAUTH), and a wrong password
 *     is refused, by the server (WRONGPASS) and through libdeta, whose error
 *     names the user but never the password.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

#include "deta/config.h"
#include "deta/redis.h"
#include "testsupport.h"

/* payment-service's settings: its user and password, as stack.sh gives them. */
static deta_config_t payment_config(const char *password) {
    ts_env("REDIS_HOST");
    ts_env("REDIS_PORT");
    setenv("REDIS_USERNAME", ts_env("PAYMENT_REDIS_USERNAME"), 1);
    setenv("REDIS_PASSWORD", password ? password : ts_env("PAYMENT_REDIS_PASSWORD"), 1);
    deta_config_t cfg;
    char err[256];
    deta_err_t rc = deta_config_load(&cfg, "test-redis-acl", err, sizeof err);
    if (rc != DETA_OK)
        fail_msg("config: %s", err);
    return cfg;
}

/* A raw connection, authenticated as user with password (NULL: none). */
static redisContext *raw_connect(const char *user, const char *password) {
    struct timeval tv = {2, 0};
    redisContext *c =
        redisConnectWithTimeout(ts_env("REDIS_HOST"), atoi(ts_env("REDIS_PORT")), tv);
    if (!c || c->err)
        fail_msg("raw Redis connection: %s", c ? c->errstr : "out of memory");
    if (password) {
        const char *argv[] = {"AUTH", user, password};
        redisReply *r = redisCommandArgv(c, 3, argv, NULL);
        if (!r || r->type == REDIS_REPLY_ERROR)
            fail_msg("AUTH as %s: %s", user, r ? r->str : c->errstr);
        freeReplyObject(r);
    }
    return c;
}

/* The command (argv) must be answered with an error starting with want. */
static void refused(redisContext *c, int argc, const char **argv, const char *want) {
    redisReply *r = redisCommandArgv(c, argc, argv, NULL);
    if (!r)
        fail_msg("%s: no reply: %s", argv[0], c->errstr);
    if (r->type != REDIS_REPLY_ERROR || strncmp(r->str, want, strlen(want)) != 0)
        fail_msg("%s %s: expected %s, got %s", argv[0], argc > 1 ? argv[1] : "", want,
                 r->type == REDIS_REPLY_ERROR ? r->str : "a reply");
    freeReplyObject(r);
}

static void payment_user_uses_its_keys(void **state) {
    (void)state;
    deta_config_t cfg = payment_config(NULL);
    deta_redis_t *r = deta_redis_new(&cfg);
    assert_non_null(r);
    char id[37], marker[96], lock[96], buf[64], err[256] = "";
    ts_uuid(id);
    snprintf(marker, sizeof marker, "payment:dedup:%s", id);
    snprintf(lock, sizeof lock, "payment-lock:order:%s", id);
    bool set = false, deleted = false;
    assert_true(deta_redis_ping(r, err, sizeof err));
    if (deta_redis_set(r, marker, "seen", 10000, err, sizeof err) != DETA_OK)
        fail_msg("SET %s: %s", marker, err);
    assert_int_equal(deta_redis_get(r, marker, buf, sizeof buf, err, sizeof err), DETA_OK);
    assert_string_equal(buf, "seen");
    if (deta_redis_set_nx(r, lock, "token", 10000, &set, err, sizeof err) != DETA_OK)
        fail_msg("SET NX %s: %s", lock, err);
    assert_true(set);
    if (deta_redis_del_if_equal(r, lock, "token", &deleted, err, sizeof err) != DETA_OK)
        fail_msg("compare-and-delete %s: %s", lock, err);
    assert_true(deleted);
    /* Through libdeta, another key is the server's refusal: an error, not data. */
    assert_int_not_equal(deta_redis_get(r, "order:secret", buf, sizeof buf, err, sizeof err),
                         DETA_OK);
    assert_non_null(strstr(err, "NOPERM"));
    deta_redis_free(r);
}

static void payment_user_is_refused_elsewhere(void **state) {
    (void)state;
    redisContext *c = raw_connect(ts_env("PAYMENT_REDIS_USERNAME"), ts_env("PAYMENT_REDIS_PASSWORD"));
    const char *get_other[] = {"GET", "inventory:stock"};
    const char *set_other[] = {"SET", "paymentx:dedup:1", "v"};
    const char *del_other[] = {"DEL", "test:anything"};
    const char *config[] = {"CONFIG", "GET", "requirepass"};
    const char *flushall[] = {"FLUSHALL"};
    const char *keys_all[] = {"KEYS", "*"};
    const char *keys_own[] = {"KEYS", "payment:*"};
    const char *acl[] = {"ACL", "LIST"};
    const char *info[] = {"INFO", "server"};
    const char *publish[] = {"PUBLISH", "payments", "x"};
    const char *eval_other[] = {"EVAL", "return redis.call('get', KEYS[1])", "1", "order:x"};
    refused(c, 2, get_other, "NOPERM");
    refused(c, 3, set_other, "NOPERM");
    refused(c, 2, del_other, "NOPERM");
    refused(c, 3, config, "NOPERM");
    refused(c, 1, flushall, "NOPERM");
    refused(c, 2, keys_all, "NOPERM");
    refused(c, 2, keys_own, "NOPERM");
    refused(c, 2, acl, "NOPERM");
    refused(c, 2, info, "NOPERM");
    refused(c, 3, publish, "NOPERM");
    refused(c, 4, eval_other, ""); /* any error: NOPERM, or the script's call refused */
    redisFree(c);
}

static void no_password_no_access(void **state) {
    (void)state;
    redisContext *c = raw_connect(NULL, NULL);
    const char *get[] = {"GET", "payment:dedup:x"};
    const char *ping[] = {"PING"};
    refused(c, 2, get, "NOAUTH");
    refused(c, 1, ping, "NOAUTH");
    const char *wrong[] = {"AUTH", ts_env("PAYMENT_REDIS_USERNAME"), "not-the-password"};
    refused(c, 3, wrong, "WRONGPASS");
    const char *default_user[] = {"AUTH", "default", ""};
    refused(c, 3, default_user, "WRONGPASS");
    redisFree(c);
}

static void libdeta_with_a_wrong_password(void **state) {
    (void)state;
    const char *wrong = "wrong-password-d41d8cd9";
    deta_config_t cfg = payment_config(wrong);
    deta_redis_t *r = deta_redis_new(&cfg);
    char err[256] = "";
    bool set = false;
    assert_int_equal(deta_redis_set_nx(r, "payment:dedup:wrong", "v", 1000, &set, err, sizeof err),
                     DETA_ERR_TRANSIENT);
    assert_non_null(strstr(err, "refused AUTH"));
    assert_non_null(strstr(err, ts_env("PAYMENT_REDIS_USERNAME")));
    assert_null(strstr(err, wrong));
    assert_false(deta_redis_ping(r, err, sizeof err));
    assert_null(strstr(err, wrong));
    deta_redis_free(r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(payment_user_uses_its_keys),
        cmocka_unit_test(payment_user_is_refused_elsewhere),
        cmocka_unit_test(no_password_no_access),
        cmocka_unit_test(libdeta_with_a_wrong_password),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
