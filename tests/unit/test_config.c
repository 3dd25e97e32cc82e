/*
 * test_config.c - configuration from environment variables: defaults per
 * service (the rows of services/services.tsv, through the generated
 * deta_services.h), overrides, and rejection of bad values (lib/src/config.c).
 *
 * Every test starts from an environment with none of the library's variables
 * set (setup clears them), so results never depend on the shell running ctest.
 * PG_PREPARED_STATEMENTS is a switch (on/off and the usual spellings, default
 * on) that refuses anything else. The library loads no service's own setting
 * (query-api's are in test_query_settings.c); its secrets and tokens are in
 * test_config_secret.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "deta/config.h"
#include "deta_services.h"

static const char *const all_vars[] = {
    "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_SESSION_TIMEOUT_MS", "KAFKA_FETCH_WAIT_MAX_MS",
    "KAFKA_STATISTICS_INTERVAL_MS", "KAFKA_STATIC_MEMBERSHIP", "PGHOST", "PGPORT", "PGUSER",
    "PGPASSWORD", "PGDATABASE", "REDIS_HOST", "REDIS_PORT", "HTTP_PORT", "HTTP_BODY_LIMIT",
    "HTTP_THREADS", "LOG_LEVEL", "INSTANCE_ID", "DETA_TEST_INT", "DETA_TEST_STR",
    "PG_PREPARED_STATEMENTS", "PG_STATEMENT_TIMEOUT_MS",
    "PG_LOCK_TIMEOUT_MS", "OUTBOX_RETENTION_S", "INBOX_RETENTION_HOURS", "HTTP_CORS_ORIGINS",
    "PGSSLMODE", "PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY", "REDIS_USERNAME", "REDIS_PASSWORD",
};

static int clear_env(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof all_vars / sizeof all_vars[0]; i++)
        unsetenv(all_vars[i]);
    return 0;
}

static void load_ok(deta_config_t *cfg, const char *service) {
    char err[256] = "";
    if (deta_config_load(cfg, service, err, sizeof err) != DETA_OK)
        fail_msg("load failed: %s", err);
}

/* The row of services.tsv for the named service; fails the test when none. */
static const deta_service_def_t *service_def(const char *service) {
    static const deta_service_def_t defs[] = DETA_SERVICES;
    for (size_t i = 0; i < sizeof defs / sizeof *defs; i++)
        if (strcmp(defs[i].name, service) == 0)
            return &defs[i];
    fail_msg("services.tsv has no %s", service);
    return NULL;
}

/* Loads as the named service does, with its row of the table. */
static void load_service_ok(deta_config_t *cfg, const char *service) {
    char err[256] = "";
    if (deta_config_load_service(cfg, service_def(service), err, sizeof err) != DETA_OK)
        fail_msg("load failed: %s", err);
}

/* Asserts that loading with name=value set fails naming the variable. */
static void load_bad(const char *name, const char *value) {
    clear_env(NULL);
    setenv(name, value, 1);
    deta_config_t cfg;
    char err[256] = "";
    deta_err_t rc = deta_config_load(&cfg, "order-service", err, sizeof err);
    unsetenv(name);
    if (rc != DETA_ERR_INVALID)
        fail_msg("%s=\"%s\" accepted (rc %s)", name, value, deta_err_name(rc));
    if (!strstr(err, name))
        fail_msg("%s=\"%s\": errstr \"%s\" does not name the variable", name, value, err);
}

static void test_defaults_per_service(void **state) {
    (void)state;
    struct {
        const char *service;
        int port;
        const char *db;
    } want[] = {
        {"query-api", 8080, "delivery_query"},       {"order-service", 8081, "order_db"},
        {"payment-service", 8082, "delivery_eta"},   {"inventory-service", 8083, "inventory_db"},
        {"delivery-service", 8084, "delivery_db"},
    };
    assert_int_equal(DETA_SERVICE_COUNT, sizeof want / sizeof want[0]);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        deta_config_t cfg;
        load_service_ok(&cfg, want[i].service);
        assert_string_equal(cfg.service, want[i].service);
        assert_int_equal(cfg.http_port, want[i].port);
        assert_string_equal(cfg.pg_database, want[i].db);
        assert_int_equal(service_def(want[i].service)->http_port, want[i].port);
        assert_string_equal(service_def(want[i].service)->database, want[i].db);
    }
}

static void test_common_defaults(void **state) {
    (void)state;
    deta_config_t cfg;
    load_ok(&cfg, "payment-service");
    assert_string_equal(cfg.kafka_bootstrap, "localhost:9092");
    assert_int_equal(cfg.kafka_session_timeout_ms, 45000);
    assert_int_equal(cfg.kafka_fetch_wait_max_ms, 500);
    assert_int_equal(cfg.kafka_statistics_interval_ms, 5000);
    assert_string_equal(cfg.pg_host, "localhost");
    assert_int_equal(cfg.pg_port, 5432);
    assert_string_equal(cfg.pg_user, "postgres");
    assert_string_equal(cfg.pg_password, "postgres");
    assert_true(cfg.pg_prepared_statements);
    assert_int_equal(cfg.pg_statement_timeout_ms, 30000);
    assert_int_equal(cfg.pg_lock_timeout_ms, 10000);
    assert_string_equal(cfg.redis_host, "localhost");
    assert_int_equal(cfg.redis_port, 6379);
    assert_int_equal(cfg.http_body_limit, 65536);
    assert_int_equal(cfg.http_threads, 4);
    assert_string_equal(cfg.log_level, "info");
    assert_int_equal(cfg.outbox_retention_s, 3600);
    assert_int_equal(cfg.inbox_retention_hours, 168);
    char want[96];
    snprintf(want, sizeof want, "payment-service-%ld", (long)getpid());
    assert_string_equal(cfg.instance_id, want);
}

/* A program that is no service (or a service's name without its row: the
 * library knows no service) gets no port and the postgres database. */
static void test_unknown_service(void **state) {
    (void)state;
    deta_config_t cfg;
    load_ok(&cfg, "billing-service");
    assert_int_equal(cfg.http_port, 0);
    assert_string_equal(cfg.pg_database, "postgres");
    load_ok(&cfg, "order-service");
    assert_int_equal(cfg.http_port, 0);
    assert_string_equal(cfg.pg_database, "postgres");
    const deta_service_def_t bare = {"billing-service", 0, NULL};
    char err[256] = "";
    assert_int_equal(deta_config_load_service(&cfg, &bare, err, sizeof err), DETA_OK);
    assert_int_equal(cfg.http_port, 0);
    assert_string_equal(cfg.pg_database, "postgres");
    load_ok(&cfg, "local-broker");
    assert_int_equal(cfg.http_port, 0); /* no contract port: ephemeral */
    assert_string_equal(cfg.pg_database, "postgres");
    setenv("HTTP_PORT", "9000", 1);
    load_ok(&cfg, "local-broker");
    assert_int_equal(cfg.http_port, 9000);
}

static void test_overrides(void **state) {
    (void)state;
    setenv("KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2:9092", 1);
    setenv("KAFKA_SESSION_TIMEOUT_MS", "6000", 1);
    setenv("PGHOST", "db.internal", 1);
    setenv("PGPORT", "15432", 1);
    setenv("PGUSER", "deta", 1);
    setenv("PGPASSWORD", "s3cret", 1);
    setenv("PGDATABASE", "other_db", 1);
    setenv("REDIS_HOST", "cache", 1);
    setenv("REDIS_PORT", "16379", 1);
    setenv("HTTP_PORT", "18081", 1);
    setenv("HTTP_BODY_LIMIT", "1024", 1);
    setenv("HTTP_THREADS", "64", 1);
    setenv("LOG_LEVEL", "debug", 1);
    setenv("INSTANCE_ID", "order-a", 1);
    deta_config_t cfg;
    load_ok(&cfg, "order-service");
    assert_string_equal(cfg.kafka_bootstrap, "k1:9092,k2:9092");
    assert_int_equal(cfg.kafka_session_timeout_ms, 6000);
    assert_string_equal(cfg.pg_host, "db.internal");
    assert_int_equal(cfg.pg_port, 15432);
    assert_string_equal(cfg.pg_user, "deta");
    assert_string_equal(cfg.pg_password, "s3cret");
    assert_string_equal(cfg.pg_database, "other_db");
    assert_string_equal(cfg.redis_host, "cache");
    assert_int_equal(cfg.redis_port, 16379);
    assert_int_equal(cfg.http_port, 18081);
    assert_int_equal(cfg.http_body_limit, 1024);
    assert_int_equal(cfg.http_threads, 64);
    assert_string_equal(cfg.log_level, "debug");
    assert_string_equal(cfg.instance_id, "order-a");
}

static void test_empty_means_default(void **state) {
    (void)state;
    setenv("PGHOST", "", 1);
    setenv("HTTP_PORT", "", 1);
    setenv("LOG_LEVEL", "", 1);
    deta_config_t cfg;
    load_service_ok(&cfg, "delivery-service");
    assert_string_equal(cfg.pg_host, "localhost");
    assert_int_equal(cfg.http_port, 8084);
    assert_string_equal(cfg.log_level, "info");
}

static void test_log_level_any_case(void **state) {
    (void)state;
    const char *in[] = {"DEBUG", "Info", "warn", "ERROR"};
    const char *want[] = {"debug", "info", "warn", "error"};
    for (size_t i = 0; i < 4; i++) {
        setenv("LOG_LEVEL", in[i], 1);
        deta_config_t cfg;
        load_ok(&cfg, "query-api");
        assert_string_equal(cfg.log_level, want[i]);
    }
}

static void test_bounds_accepted(void **state) {
    (void)state;
    setenv("KAFKA_SESSION_TIMEOUT_MS", "1000", 1);
    setenv("PGPORT", "1", 1);
    setenv("REDIS_PORT", "65535", 1);
    setenv("HTTP_BODY_LIMIT", "67108864", 1);
    setenv("HTTP_THREADS", "1", 1);
    deta_config_t cfg;
    load_ok(&cfg, "query-api");
    assert_int_equal(cfg.kafka_session_timeout_ms, 1000);
    assert_int_equal(cfg.pg_port, 1);
    assert_int_equal(cfg.redis_port, 65535);
    assert_int_equal(cfg.http_body_limit, 67108864);
    assert_int_equal(cfg.http_threads, 1);
    setenv("KAFKA_SESSION_TIMEOUT_MS", "300000", 1);
    load_ok(&cfg, "query-api");
    assert_int_equal(cfg.kafka_session_timeout_ms, 300000);
    setenv("KAFKA_FETCH_WAIT_MAX_MS", "1", 1);
    load_ok(&cfg, "query-api");
    assert_int_equal(cfg.kafka_fetch_wait_max_ms, 1);
    setenv("KAFKA_FETCH_WAIT_MAX_MS", "500", 1);
    load_ok(&cfg, "query-api");
    assert_int_equal(cfg.kafka_fetch_wait_max_ms, 500);
    setenv("KAFKA_STATISTICS_INTERVAL_MS", "0", 1); /* off */
    load_ok(&cfg, "query-api");
    assert_int_equal(cfg.kafka_statistics_interval_ms, 0);
    setenv("KAFKA_STATISTICS_INTERVAL_MS", "1000", 1);
    load_ok(&cfg, "query-api");
    assert_int_equal(cfg.kafka_statistics_interval_ms, 1000);
    setenv("KAFKA_STATISTICS_INTERVAL_MS", "3600000", 1);
    load_ok(&cfg, "query-api");
    assert_int_equal(cfg.kafka_statistics_interval_ms, 3600000);
    setenv("PG_STATEMENT_TIMEOUT_MS", "0", 1);
    setenv("PG_LOCK_TIMEOUT_MS", "3600000", 1);
    load_ok(&cfg, "query-api");
    assert_int_equal(cfg.pg_statement_timeout_ms, 0);
    assert_int_equal(cfg.pg_lock_timeout_ms, 3600000);
    setenv("OUTBOX_RETENTION_S", "0", 1);
    setenv("INBOX_RETENTION_HOURS", "87600", 1);
    load_ok(&cfg, "query-api");
    assert_int_equal(cfg.outbox_retention_s, 0);
    assert_int_equal(cfg.inbox_retention_hours, 87600);
    setenv("OUTBOX_RETENTION_S", "31536000", 1);
    setenv("INBOX_RETENTION_HOURS", "0", 1); /* for ever */
    load_ok(&cfg, "query-api");
    assert_int_equal(cfg.outbox_retention_s, 31536000);
    assert_int_equal(cfg.inbox_retention_hours, 0);
}

static void test_bad_numbers_rejected(void **state) {
    (void)state;
    const char *ints[] = {"KAFKA_SESSION_TIMEOUT_MS", "KAFKA_FETCH_WAIT_MAX_MS",
                          "KAFKA_STATISTICS_INTERVAL_MS",
                          "PGPORT", "REDIS_PORT", "HTTP_PORT",
                          "HTTP_BODY_LIMIT", "HTTP_THREADS", "PG_STATEMENT_TIMEOUT_MS",
                          "PG_LOCK_TIMEOUT_MS", "OUTBOX_RETENTION_S", "INBOX_RETENTION_HOURS"};
    const char *junk[] = {"abc", "12x", " 80", "80 ", "+80", "0x50", "1e3", "8.5", "-",
                          "99999999999999999999999"};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        for (size_t k = 0; k < sizeof junk / sizeof junk[0]; k++)
            load_bad(ints[i], junk[k]);
}

static void test_out_of_range_rejected(void **state) {
    (void)state;
    load_bad("PGPORT", "0");
    load_bad("PGPORT", "65536");
    load_bad("REDIS_PORT", "-1");
    load_bad("REDIS_PORT", "70000");
    load_bad("HTTP_PORT", "0");
    load_bad("HTTP_PORT", "65536");
    load_bad("KAFKA_SESSION_TIMEOUT_MS", "999");
    load_bad("KAFKA_SESSION_TIMEOUT_MS", "300001");
    load_bad("KAFKA_FETCH_WAIT_MAX_MS", "0");
    load_bad("KAFKA_FETCH_WAIT_MAX_MS", "501");
    load_bad("KAFKA_STATISTICS_INTERVAL_MS", "-1");
    load_bad("KAFKA_STATISTICS_INTERVAL_MS", "1");
    load_bad("KAFKA_STATISTICS_INTERVAL_MS", "999");
    load_bad("KAFKA_STATISTICS_INTERVAL_MS", "3600001");
    load_bad("HTTP_BODY_LIMIT", "1023");
    load_bad("HTTP_BODY_LIMIT", "67108865");
    load_bad("HTTP_THREADS", "0");
    load_bad("HTTP_THREADS", "65");
    load_bad("PG_STATEMENT_TIMEOUT_MS", "-1");
    load_bad("PG_STATEMENT_TIMEOUT_MS", "3600001");
    load_bad("PG_LOCK_TIMEOUT_MS", "-1");
    load_bad("PG_LOCK_TIMEOUT_MS", "3600001");
    load_bad("OUTBOX_RETENTION_S", "-1");
    load_bad("OUTBOX_RETENTION_S", "31536001");
    load_bad("INBOX_RETENTION_HOURS", "-1");
    load_bad("INBOX_RETENTION_HOURS", "87601");
}

static void test_cors_origins(void **state) {
    (void)state;
    deta_config_t cfg;
    load_ok(&cfg, "order-service");
    assert_string_equal(cfg.http_cors_origins, ""); /* no CORS by default */
    setenv("HTTP_CORS_ORIGINS", "http://localhost:8080, http://127.0.0.1:8080", 1);
    load_ok(&cfg, "order-service");
    assert_string_equal(cfg.http_cors_origins, "http://localhost:8080, http://127.0.0.1:8080");
    load_bad("HTTP_CORS_ORIGINS", "*");
    load_bad("HTTP_CORS_ORIGINS", "http://localhost:8080/");
    load_bad("HTTP_CORS_ORIGINS", "localhost:8080");
    load_bad("HTTP_CORS_ORIGINS", "http://localhost:8080,,http://a.example");
}

static void test_bad_log_level_rejected(void **state) {
    (void)state;
    load_bad("LOG_LEVEL", "verbose");
    load_bad("LOG_LEVEL", "warning");
    load_bad("LOG_LEVEL", "info ");
}

static void test_too_long_strings_rejected(void **state) {
    (void)state;
    char big[600];
    memset(big, 'h', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    const char *strs[] = {"KAFKA_BOOTSTRAP_SERVERS", "PGHOST", "PGUSER", "PGPASSWORD",
                          "PGDATABASE", "REDIS_HOST", "INSTANCE_ID"};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        load_bad(strs[i], big);
    /* Exactly the field's capacity is fine. */
    big[63] = '\0';
    setenv("PGDATABASE", big, 1);
    deta_config_t cfg;
    load_ok(&cfg, "order-service");
    assert_string_equal(cfg.pg_database, big);
}

static void test_bad_service_name(void **state) {
    (void)state;
    deta_config_t cfg;
    char err[128] = "";
    assert_int_equal(deta_config_load(&cfg, NULL, err, sizeof err), DETA_ERR_INVALID);
    assert_non_null(strstr(err, "service"));
    assert_int_equal(deta_config_load(&cfg, "", NULL, 0), DETA_ERR_INVALID);
    char name[65];
    memset(name, 's', 64);
    name[64] = '\0';
    assert_int_equal(deta_config_load(&cfg, name, err, sizeof err), DETA_ERR_INVALID);
    name[63] = '\0';
    load_ok(&cfg, name);
}

static void test_config_int(void **state) {
    (void)state;
    long v = 0;
    char err[128] = "";
    assert_int_equal(deta_config_int("DETA_TEST_INT", 7, 0, 10, &v, err, sizeof err), DETA_OK);
    assert_int_equal(v, 7);
    setenv("DETA_TEST_INT", "-5", 1);
    assert_int_equal(deta_config_int("DETA_TEST_INT", 7, -10, 10, &v, err, sizeof err), DETA_OK);
    assert_int_equal(v, -5);
    v = 99;
    assert_int_equal(deta_config_int("DETA_TEST_INT", 7, 0, 10, &v, err, sizeof err),
                     DETA_ERR_INVALID);
    assert_non_null(strstr(err, "DETA_TEST_INT"));
    assert_non_null(strstr(err, "out of range"));
    assert_int_equal(v, 99);
    setenv("DETA_TEST_INT", "--5", 1);
    assert_int_equal(deta_config_int("DETA_TEST_INT", 7, -10, 10, &v, err, sizeof err),
                     DETA_ERR_INVALID);
    assert_non_null(strstr(err, "not an integer"));
    assert_int_equal(deta_config_int("DETA_TEST_INT", 7, -10, 10, &v, NULL, 0),
                     DETA_ERR_INVALID);
}

static void test_config_str(void **state) {
    (void)state;
    assert_string_equal(deta_config_str("DETA_TEST_STR", "def"), "def");
    assert_null(deta_config_str("DETA_TEST_STR", NULL));
    setenv("DETA_TEST_STR", "", 1);
    assert_string_equal(deta_config_str("DETA_TEST_STR", "def"), "def");
    setenv("DETA_TEST_STR", "val", 1);
    assert_string_equal(deta_config_str("DETA_TEST_STR", "def"), "val");
}

/* ---- PG_PREPARED_STATEMENTS: a switch ---- */

static bool prepared_with(const char *value) {
    setenv("PG_PREPARED_STATEMENTS", value, 1);
    deta_config_t cfg;
    load_ok(&cfg, "order-service");
    return cfg.pg_prepared_statements;
}

static void test_prepared_statements_switch(void **state) {
    (void)state;
    const char *on[] = {"on", "ON", "On", "true", "yes", "1"};
    const char *off[] = {"off", "OFF", "Off", "false", "no", "0"};
    for (size_t i = 0; i < sizeof on / sizeof *on; i++) {
        assert_true(prepared_with(on[i]));
        assert_false(prepared_with(off[i]));
    }
    assert_true(prepared_with("")); /* empty: the default */
}

static void test_prepared_statements_bad_value(void **state) {
    (void)state;
    const char *junk[] = {"of", "onn", " on", "off ", "2", "-1", "enabled", "none"};
    for (size_t i = 0; i < sizeof junk / sizeof *junk; i++)
        load_bad("PG_PREPARED_STATEMENTS", junk[i]);
    /* The message says what is expected. */
    setenv("PG_PREPARED_STATEMENTS", "maybe", 1);
    deta_config_t cfg;
    char err[256] = "";
    assert_int_equal(deta_config_load(&cfg, "query-api", err, sizeof err), DETA_ERR_INVALID);
    assert_non_null(strstr(err, "\"maybe\""));
    assert_non_null(strstr(err, "on or off"));
}

/* The HTTP bounds under abuse: defaults, overrides, ranges, and the per-client bound
 * no larger than the total. */
static void test_http_bounds(void **state) {
    (void)state;
    static const char *const vars[] = {"HTTP_MAX_CONNECTIONS", "HTTP_MAX_CONNECTIONS_PER_CLIENT",
                                       "HTTP_HEADER_TIMEOUT_MS", "HTTP_BODY_TIMEOUT_MS",
                                       "HTTP_HEADER_LIMIT"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
        unsetenv(vars[i]);
    deta_config_t cfg;
    load_ok(&cfg, "order-service");
    assert_int_equal(cfg.http_max_connections, 4096);
    assert_int_equal(cfg.http_max_connections_per_client, 512);
    assert_int_equal(cfg.http_header_timeout_ms, 10000);
    assert_int_equal(cfg.http_body_timeout_ms, 30000);
    assert_int_equal(cfg.http_header_limit, 8192);
    setenv("HTTP_MAX_CONNECTIONS", "16", 1);
    setenv("HTTP_MAX_CONNECTIONS_PER_CLIENT", "16", 1);
    setenv("HTTP_HEADER_TIMEOUT_MS", "100", 1);
    setenv("HTTP_BODY_TIMEOUT_MS", "3600000", 1);
    setenv("HTTP_HEADER_LIMIT", "1024", 1);
    load_ok(&cfg, "order-service");
    assert_int_equal(cfg.http_max_connections, 16);
    assert_int_equal(cfg.http_max_connections_per_client, 16);
    assert_int_equal(cfg.http_header_timeout_ms, 100);
    assert_int_equal(cfg.http_body_timeout_ms, 3600000);
    assert_int_equal(cfg.http_header_limit, 1024);
    setenv("HTTP_MAX_CONNECTIONS_PER_CLIENT", "17", 1); /* more than the total */
    char err[256] = "";
    assert_int_equal(deta_config_load(&cfg, "order-service", err, sizeof err), DETA_ERR_INVALID);
    assert_non_null(strstr(err, "HTTP_MAX_CONNECTIONS_PER_CLIENT"));
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
        unsetenv(vars[i]);
    load_bad("HTTP_MAX_CONNECTIONS", "0");
    load_bad("HTTP_MAX_CONNECTIONS", "1000001");
    load_bad("HTTP_MAX_CONNECTIONS", "many");
    load_bad("HTTP_MAX_CONNECTIONS_PER_CLIENT", "0");
    load_bad("HTTP_MAX_CONNECTIONS_PER_CLIENT", "4097"); /* above the default total */
    load_bad("HTTP_HEADER_TIMEOUT_MS", "99");
    load_bad("HTTP_HEADER_TIMEOUT_MS", "3600001");
    load_bad("HTTP_BODY_TIMEOUT_MS", "99");
    load_bad("HTTP_BODY_TIMEOUT_MS", "10s");
    load_bad("HTTP_HEADER_LIMIT", "1023");
    load_bad("HTTP_HEADER_LIMIT", "1048577");
}

/* Postgres's TLS: prefer by default, verify-full once a CA is given, any of
 * libpq's modes by name; verify-* without a CA, a certificate without its key,
 * an unreadable file or an unknown mode stop the start, naming the variable. */
static void test_postgres_tls(void **state) {
    (void)state;
    char ca[] = "/tmp/deta-test-ca.XXXXXX";
    int fd = mkstemp(ca);
    assert_true(fd >= 0);
    close(fd);
    deta_config_t cfg;
    load_ok(&cfg, "order-service");
    assert_string_equal(cfg.pg_sslmode, "prefer");
    assert_string_equal(cfg.pg_sslrootcert, "");
    setenv("PGSSLROOTCERT", ca, 1);
    load_ok(&cfg, "order-service");
    assert_string_equal(cfg.pg_sslmode, "verify-full");
    assert_string_equal(cfg.pg_sslrootcert, ca);
    setenv("PGSSLMODE", "verify-ca", 1);
    load_ok(&cfg, "order-service");
    assert_string_equal(cfg.pg_sslmode, "verify-ca");
    setenv("PGSSLCERT", ca, 1);
    setenv("PGSSLKEY", ca, 1);
    load_ok(&cfg, "order-service");
    assert_string_equal(cfg.pg_sslcert, ca);
    assert_string_equal(cfg.pg_sslkey, ca);
    clear_env(NULL);
    setenv("PGSSLMODE", "require", 1);
    load_ok(&cfg, "order-service");
    assert_string_equal(cfg.pg_sslmode, "require");

    load_bad("PGSSLMODE", "verify_full");
    load_bad("PGSSLMODE", "on");
    load_bad("PGSSLMODE", "verify-full"); /* no CA */
    load_bad("PGSSLROOTCERT", "/nonexistent/ca.crt");
    load_bad("PGSSLCERT", ca);            /* no key */
    load_bad("PGSSLKEY", ca);             /* no certificate */
    unlink(ca);
}

/* Redis AUTH: none by default; a user and a password; a user needs one. */
static void test_redis_auth(void **state) {
    (void)state;
    deta_config_t cfg;
    load_ok(&cfg, "payment-service");
    assert_string_equal(cfg.redis_username, "");
    assert_string_equal(cfg.redis_password, "");
    setenv("REDIS_PASSWORD", "p4ss", 1);
    load_ok(&cfg, "payment-service");
    assert_string_equal(cfg.redis_password, "p4ss");
    setenv("REDIS_USERNAME", "payment-service", 1);
    load_ok(&cfg, "payment-service");
    assert_string_equal(cfg.redis_username, "payment-service");
    load_bad("REDIS_USERNAME", "payment-service"); /* without a password */
}

#define T(f) cmocka_unit_test_setup(f, clear_env)

int main(void) {
    const struct CMUnitTest tests[] = {
        T(test_defaults_per_service),  T(test_common_defaults),
        T(test_unknown_service),       T(test_overrides),
        T(test_empty_means_default),   T(test_log_level_any_case),
        T(test_bounds_accepted),       T(test_bad_numbers_rejected),
        T(test_out_of_range_rejected), T(test_bad_log_level_rejected),
        T(test_too_long_strings_rejected), T(test_bad_service_name),
        T(test_config_int),            T(test_config_str),
        T(test_prepared_statements_switch), T(test_prepared_statements_bad_value),
        T(test_cors_origins),          T(test_http_bounds),
        T(test_postgres_tls),
        T(test_redis_auth),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
