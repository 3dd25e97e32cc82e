/*
 * test_config_secret.c - secrets in the settings (lib/src/config.c): a secret from
 * NAME or from the file NAME_FILE names (real temporary files), both set refused
 * naming both, one trailing newline removed, an unreadable, non-regular, too long or
 * NUL-holding file refused naming NAME_FILE and never showing the content; and the
 * library's token settings (OPERATOR_TOKEN, READER_TOKEN, HTTP_READS_NEED_AUTH):
 * no default, checked, the two distinct, reads closed only with a token, a refused
 * configuration wiped.
 *
 * Every test starts with none of these variables set (setup clears them) and in a
 * fresh temporary directory (removed by teardown).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "deta/config.h"

#define SECRET "s3cr3t-Value-0123456789"
#define OP "0123456789abcdef0123456789abcdef"
#define RD "readerreaderreader-0123456789"

static const char *const vars[] = {
    "DETA_TEST_SECRET", "DETA_TEST_SECRET_FILE", "PGPASSWORD", "PGPASSWORD_FILE",
    "OPERATOR_TOKEN", "OPERATOR_TOKEN_FILE", "READER_TOKEN", "READER_TOKEN_FILE",
    "HTTP_READS_NEED_AUTH", "REDIS_USERNAME", "REDIS_PASSWORD", "REDIS_PASSWORD_FILE",
    "KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME",
    "KAFKA_SASL_PASSWORD", "KAFKA_SASL_PASSWORD_FILE"};

static char dir[64];

static int setup(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
        unsetenv(vars[i]);
    snprintf(dir, sizeof dir, "/tmp/deta-secret-XXXXXX");
    assert_non_null(mkdtemp(dir));
    return 0;
}

static int teardown(void **state) {
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    return 0;
}

/* A file in the test's directory holding len bytes of data; its path in path. */
static void write_file(const char *name, const char *data, size_t len, char *path, size_t size) {
    snprintf(path, size, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static deta_err_t secret(char *dst, size_t size, char *err, size_t errsize) {
    err[0] = '\0';
    return deta_config_secret("DETA_TEST_SECRET", "the-default", dst, size, err, errsize);
}

static void test_from_variable_or_default(void **state) {
    (void)state;
    char v[64], err[256];
    assert_int_equal(secret(v, sizeof v, err, sizeof err), DETA_OK);
    assert_string_equal(v, "the-default");
    setenv("DETA_TEST_SECRET", "", 1);
    assert_int_equal(secret(v, sizeof v, err, sizeof err), DETA_OK);
    assert_string_equal(v, "the-default");
    setenv("DETA_TEST_SECRET", SECRET, 1);
    assert_int_equal(secret(v, sizeof v, err, sizeof err), DETA_OK);
    assert_string_equal(v, SECRET);
    /* Too long: named, not shown, dst empty. */
    char small[8];
    assert_int_equal(secret(small, sizeof small, err, sizeof err), DETA_ERR_INVALID);
    assert_non_null(strstr(err, "DETA_TEST_SECRET"));
    assert_null(strstr(err, SECRET));
    assert_string_equal(small, "");
}

static void test_from_file(void **state) {
    (void)state;
    char path[256], v[64], err[256];
    /* As is, with one "\n", with one "\r\n": the same value. */
    const char *contents[] = {SECRET, SECRET "\n", SECRET "\r\n"};
    for (size_t i = 0; i < sizeof contents / sizeof *contents; i++) {
        write_file("s", contents[i], strlen(contents[i]), path, sizeof path);
        setenv("DETA_TEST_SECRET_FILE", path, 1);
        assert_int_equal(secret(v, sizeof v, err, sizeof err), DETA_OK);
        assert_string_equal(v, SECRET);
    }
    /* Only one newline goes; inner ones and spaces stay. */
    write_file("s", " a b\n\n", 6, path, sizeof path);
    assert_int_equal(secret(v, sizeof v, err, sizeof err), DETA_OK);
    assert_string_equal(v, " a b\n");
    /* An empty file, or one newline alone: the default. */
    write_file("s", "\n", 1, path, sizeof path);
    assert_int_equal(secret(v, sizeof v, err, sizeof err), DETA_OK);
    assert_string_equal(v, "the-default");
    /* Exactly as long as fits, with its newline. */
    char fits[sizeof v + 1];
    memset(fits, 'x', sizeof v - 1);
    fits[sizeof v - 1] = '\n';
    write_file("s", fits, sizeof v, path, sizeof path);
    assert_int_equal(secret(v, sizeof v, err, sizeof err), DETA_OK);
    assert_int_equal(strlen(v), sizeof v - 1);
}

static void refused_file(const char *why, const char *needle) {
    char v[32], err[512];
    strcpy(v, "junk");
    if (secret(v, sizeof v, err, sizeof err) != DETA_ERR_INVALID)
        fail_msg("%s: accepted", why);
    if (!strstr(err, "DETA_TEST_SECRET_FILE"))
        fail_msg("%s: the error does not name DETA_TEST_SECRET_FILE: %s", why, err);
    if (needle && !strstr(err, needle))
        fail_msg("%s: the error does not say %s: %s", why, needle, err);
    if (strstr(err, SECRET) || strstr(err, "s3cr3t"))
        fail_msg("%s: the error shows the secret: %s", why, err);
    assert_string_equal(v, "");
}

static void test_bad_files(void **state) {
    (void)state;
    char path[256];
    snprintf(path, sizeof path, "%s/absent", dir);
    setenv("DETA_TEST_SECRET_FILE", path, 1);
    refused_file("absent", "cannot read");
    setenv("DETA_TEST_SECRET_FILE", dir, 1);
    refused_file("a directory", "not a regular file");
    /* Longer than fits (32 bytes with the NUL), the secret in it. */
    const char *longer = SECRET SECRET SECRET;
    write_file("long", longer, strlen(longer), path, sizeof path);
    setenv("DETA_TEST_SECRET_FILE", path, 1);
    refused_file("too long", "longer than 31 bytes");
    write_file("nul", SECRET "\0x", sizeof SECRET + 1, path, sizeof path);
    setenv("DETA_TEST_SECRET_FILE", path, 1);
    refused_file("a NUL byte", "NUL");
    if (geteuid() != 0) { /* root reads any file */
        write_file("unreadable", SECRET, strlen(SECRET), path, sizeof path);
        setenv("DETA_TEST_SECRET_FILE", path, 1);
        assert_int_equal(chmod(path, 0), 0);
        refused_file("unreadable", "cannot read");
    }
}

static void test_both_set(void **state) {
    (void)state;
    char path[256], v[64], err[256];
    write_file("s", SECRET, strlen(SECRET), path, sizeof path);
    setenv("DETA_TEST_SECRET_FILE", path, 1);
    setenv("DETA_TEST_SECRET", SECRET, 1);
    assert_int_equal(secret(v, sizeof v, err, sizeof err), DETA_ERR_INVALID);
    assert_non_null(strstr(err, "DETA_TEST_SECRET and DETA_TEST_SECRET_FILE"));
    assert_null(strstr(err, SECRET));
}

/* ---- the library's secrets ---- */

static deta_err_t load(deta_config_t *cfg, char *err, size_t size) {
    err[0] = '\0';
    return deta_config_load(cfg, "test", err, size);
}

static void test_library_secrets_from_files(void **state) {
    (void)state;
    char path[256], err[256];
    deta_config_t cfg;
    assert_int_equal(load(&cfg, err, sizeof err), DETA_OK);
    assert_string_equal(cfg.pg_password, "postgres");
    assert_string_equal(cfg.auth.operator_token, ""); /* no default */
    assert_string_equal(cfg.auth.reader_token, "");
    assert_false(cfg.auth.reads_need_token);
    write_file("pg", SECRET "\n", strlen(SECRET) + 1, path, sizeof path);
    setenv("PGPASSWORD_FILE", path, 1);
    write_file("op", OP "\n", strlen(OP) + 1, path, sizeof path);
    setenv("OPERATOR_TOKEN_FILE", path, 1);
    setenv("READER_TOKEN", RD, 1);
    setenv("HTTP_READS_NEED_AUTH", "on", 1);
    if (load(&cfg, err, sizeof err) != DETA_OK)
        fail_msg("%s", err);
    assert_string_equal(cfg.pg_password, SECRET);
    assert_string_equal(cfg.auth.operator_token, OP);
    assert_string_equal(cfg.auth.reader_token, RD);
    assert_true(cfg.auth.reads_need_token);
    setenv("PGPASSWORD", "x", 1);
    assert_int_equal(load(&cfg, err, sizeof err), DETA_ERR_INVALID);
    assert_non_null(strstr(err, "PGPASSWORD and PGPASSWORD_FILE"));
}

/* Redis's and Kafka's passwords from files too. */
static void test_redis_and_kafka_secrets_from_files(void **state) {
    (void)state;
    char path[256], err[256];
    deta_config_t cfg;
    write_file("redis", SECRET "\n", strlen(SECRET) + 1, path, sizeof path);
    setenv("REDIS_USERNAME", "payment-service", 1);
    setenv("REDIS_PASSWORD_FILE", path, 1);
    write_file("kafka", OP, strlen(OP), path, sizeof path);
    setenv("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT", 1);
    setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512", 1);
    setenv("KAFKA_SASL_USERNAME", "payment-service", 1);
    setenv("KAFKA_SASL_PASSWORD_FILE", path, 1);
    if (load(&cfg, err, sizeof err) != DETA_OK)
        fail_msg("%s", err);
    assert_string_equal(cfg.redis_password, SECRET);
    assert_string_equal(cfg.kafka_security.sasl_password, OP);
    setenv("KAFKA_SASL_PASSWORD", OP, 1);
    assert_int_equal(load(&cfg, err, sizeof err), DETA_ERR_INVALID);
    assert_non_null(strstr(err, "KAFKA_SASL_PASSWORD and KAFKA_SASL_PASSWORD_FILE"));
    assert_null(strstr(err, OP));
}

/* A refused token setting: named, not shown, and nothing secret left behind. */
static void refused_config(const char *named) {
    deta_config_t cfg;
    char err[256];
    memset(&cfg, 0x55, sizeof cfg);
    if (load(&cfg, err, sizeof err) != DETA_ERR_INVALID)
        fail_msg("accepted (expected an error naming %s)", named);
    if (!strstr(err, named))
        fail_msg("the error does not name %s: %s", named, err);
    if (strstr(err, OP) || strstr(err, RD) || strstr(err, "short-tok"))
        fail_msg("the error shows a token: %s", err);
    assert_string_equal(cfg.auth.operator_token, "");
    assert_string_equal(cfg.auth.reader_token, "");
    assert_string_equal(cfg.pg_password, "");
}

static void test_token_settings_refused(void **state) {
    (void)state;
    setenv("OPERATOR_TOKEN", "short-tok", 1);
    refused_config("OPERATOR_TOKEN");
    setenv("OPERATOR_TOKEN", OP, 1);
    setenv("READER_TOKEN", "short-tok", 1);
    refused_config("READER_TOKEN");
    setenv("READER_TOKEN", OP, 1); /* the same as the operator's */
    refused_config("READER_TOKEN");
    unsetenv("READER_TOKEN");
    unsetenv("OPERATOR_TOKEN");
    setenv("HTTP_READS_NEED_AUTH", "on", 1); /* closed, and no token could open them */
    refused_config("HTTP_READS_NEED_AUTH");
    setenv("HTTP_READS_NEED_AUTH", "maybe", 1);
    refused_config("HTTP_READS_NEED_AUTH");
    setenv("HTTP_READS_NEED_AUTH", "off", 1);
    deta_config_t cfg;
    char err[256];
    assert_int_equal(load(&cfg, err, sizeof err), DETA_OK);
}

int main(void) {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_from_variable_or_default), T(test_from_file), T(test_bad_files),
        T(test_both_set), T(test_library_secrets_from_files), T(test_token_settings_refused),
        T(test_redis_and_kafka_secrets_from_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
