/*
 * test_query_settings.c - query-api's own settings (services/query-api/settings.c):
 * QUERY_API_CONSUMER_WORKERS within its bounds. (The dead-letter administration's
 * token is libdeta's OPERATOR_TOKEN: tests/unit/test_config_secret.c.)
 *
 * QUERY_STORE: postgres by default, cassandra, anything else refused naming it;
 * with cassandra, the CASSANDRA_* settings: defaults, CASSANDRA_CONTACT_POINTS
 * required, credentials both or neither (the password never echoed), the
 * keyspace and data center held to what may be written into CQL, consistency
 * levels by use, bounds.
 *
 * Every test starts with none of these variables set (setup clears them).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "deta/config.h"
#include "deta/cql.h"
#include "deta_services.h"
#include "query-api/settings.h"

static const char *const cassandra_vars[] = {
    "QUERY_STORE", "CASSANDRA_CONTACT_POINTS", "CASSANDRA_PORT", "CASSANDRA_USERNAME",
    "CASSANDRA_PASSWORD", "CASSANDRA_KEYSPACE", "CASSANDRA_LOCAL_DC",
    "CASSANDRA_REPLICATION_CLASS", "CASSANDRA_REPLICATION_FACTOR",
    "CASSANDRA_READ_CONSISTENCY", "CASSANDRA_WRITE_CONSISTENCY",
    "CASSANDRA_SERIAL_CONSISTENCY", "CASSANDRA_REQUEST_TIMEOUT_MS"};

static int clear_env(void **state) {
    (void)state;
    unsetenv("QUERY_API_CONSUMER_WORKERS");
    unsetenv("QUERY_API_BATCH_WAIT_MS");
    for (size_t i = 0; i < sizeof cassandra_vars / sizeof *cassandra_vars; i++)
        unsetenv(cassandra_vars[i]);
    unsetenv("QUERY_CONSOLE_DIR");
    unsetenv("QUERY_CONSOLE_ORDER_URL");
    unsetenv("QUERY_CONSOLE_INVENTORY_URL");
    return 0;
}

static void load_ok(query_settings_t *s) {
    char err[256] = "";
    if (query_settings_load(s, err, sizeof err) != DETA_OK)
        fail_msg("load failed: %s", err);
}

static void test_defaults(void **state) {
    (void)state;
    query_settings_t s;
    load_ok(&s);
    assert_int_equal(s.consumer_workers, 2);
    assert_int_equal(s.batch_wait_ms, 20);
}

static void test_batch_wait(void **state) {
    (void)state;
    query_settings_t s;
    setenv("QUERY_API_BATCH_WAIT_MS", "0", 1);
    load_ok(&s);
    assert_int_equal(s.batch_wait_ms, 0);
    setenv("QUERY_API_BATCH_WAIT_MS", "1000", 1);
    load_ok(&s);
    assert_int_equal(s.batch_wait_ms, 1000);
    const char *bad[] = {"1001", "-1", "5ms", "2 0"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char err[256] = "";
        setenv("QUERY_API_BATCH_WAIT_MS", bad[i], 1);
        assert_int_equal(query_settings_load(&s, err, sizeof err), DETA_ERR_INVALID);
        assert_non_null(strstr(err, "QUERY_API_BATCH_WAIT_MS"));
    }
}

static void test_consumer_workers(void **state) {
    (void)state;
    query_settings_t s;
    setenv("QUERY_API_CONSUMER_WORKERS", "32", 1);
    load_ok(&s);
    assert_int_equal(s.consumer_workers, 32);
    const char *bad[] = {"0", "33", "4x", "-1"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char err[256] = "";
        setenv("QUERY_API_CONSUMER_WORKERS", bad[i], 1);
        assert_int_equal(query_settings_load(&s, err, sizeof err), DETA_ERR_INVALID);
        assert_non_null(strstr(err, "QUERY_API_CONSUMER_WORKERS"));
    }
}

/* ---- the store ---- */

static void refused(const char *var, const char *value, const char *named) {
    setenv(var, value, 1);
    query_settings_t s;
    char err[256] = "";
    if (query_settings_load(&s, err, sizeof err) != DETA_ERR_INVALID)
        fail_msg("%s=%s accepted", var, value);
    if (!strstr(err, named))
        fail_msg("%s=%s: the error does not name %s: %s", var, value, named, err);
}

static void test_store_defaults_to_postgres(void **state) {
    (void)state;
    query_settings_t s;
    load_ok(&s);
    assert_int_equal(s.store, QUERY_STORE_POSTGRES);
    setenv("CASSANDRA_PORT", "not a port", 1); /* ignored without cassandra */
    load_ok(&s);
    setenv("QUERY_STORE", "postgres", 1);
    load_ok(&s);
    assert_int_equal(s.store, QUERY_STORE_POSTGRES);
    refused("QUERY_STORE", "cassandra-ish", "QUERY_STORE");
    refused("QUERY_STORE", "Postgres", "QUERY_STORE");
    refused("QUERY_STORE", "mongodb", "QUERY_STORE");
}

static void test_cassandra_defaults(void **state) {
    (void)state;
    setenv("QUERY_STORE", "cassandra", 1);
    refused("CASSANDRA_CONTACT_POINTS", "", "CASSANDRA_CONTACT_POINTS");
    setenv("CASSANDRA_CONTACT_POINTS", "cassandra-0.cassandra,10.0.0.7:9043", 1);
    query_settings_t s;
    load_ok(&s);
    const query_cassandra_settings_t *c = &s.cassandra;
    assert_int_equal(s.store, QUERY_STORE_CASSANDRA);
    assert_string_equal(c->contact_points, "cassandra-0.cassandra,10.0.0.7:9043");
    assert_int_equal(c->port, 9042);
    assert_string_equal(c->username, "");
    assert_string_equal(c->password, "");
    assert_string_equal(c->keyspace, "delivery_query");
    assert_string_equal(c->local_dc, "dc1");
    assert_false(c->network_topology);
    assert_int_equal(c->replication_factor, 1);
    assert_int_equal(c->read_consistency, DETA_CQL_LOCAL_QUORUM);
    assert_int_equal(c->write_consistency, DETA_CQL_LOCAL_QUORUM);
    assert_int_equal(c->serial_consistency, DETA_CQL_LOCAL_SERIAL);
    assert_int_equal(c->request_timeout_ms, 12000);
}

static void test_cassandra_values(void **state) {
    (void)state;
    setenv("QUERY_STORE", "cassandra", 1);
    setenv("CASSANDRA_CONTACT_POINTS", "127.0.0.1", 1);
    setenv("CASSANDRA_PORT", "19042", 1);
    setenv("CASSANDRA_USERNAME", "query_api", 1);
    setenv("CASSANDRA_PASSWORD", "a long secret", 1);
    setenv("CASSANDRA_KEYSPACE", "orders_2", 1);
    setenv("CASSANDRA_LOCAL_DC", "eu-west_1.a", 1);
    setenv("CASSANDRA_REPLICATION_CLASS", "NetworkTopologyStrategy", 1);
    setenv("CASSANDRA_REPLICATION_FACTOR", "3", 1);
    setenv("CASSANDRA_READ_CONSISTENCY", "ONE", 1);
    setenv("CASSANDRA_WRITE_CONSISTENCY", "EACH_QUORUM", 1);
    setenv("CASSANDRA_SERIAL_CONSISTENCY", "SERIAL", 1);
    setenv("CASSANDRA_REQUEST_TIMEOUT_MS", "2500", 1);
    query_settings_t s;
    load_ok(&s);
    const query_cassandra_settings_t *c = &s.cassandra;
    assert_int_equal(c->port, 19042);
    assert_string_equal(c->username, "query_api");
    assert_string_equal(c->password, "a long secret");
    assert_string_equal(c->keyspace, "orders_2");
    assert_string_equal(c->local_dc, "eu-west_1.a");
    assert_true(c->network_topology);
    assert_int_equal(c->replication_factor, 3);
    assert_int_equal(c->read_consistency, DETA_CQL_ONE);
    assert_int_equal(c->write_consistency, DETA_CQL_EACH_QUORUM);
    assert_int_equal(c->serial_consistency, DETA_CQL_SERIAL);
    assert_int_equal(c->request_timeout_ms, 2500);
}

static void test_cassandra_refusals(void **state) {
    (void)state;
    static const char *const bad[][3] = {
        {"CASSANDRA_CONTACT_POINTS", "a,,b", "CASSANDRA_CONTACT_POINTS"},
        {"CASSANDRA_CONTACT_POINTS", "host;DROP", "CASSANDRA_CONTACT_POINTS"},
        {"CASSANDRA_CONTACT_POINTS", "a,", "CASSANDRA_CONTACT_POINTS"},
        {"CASSANDRA_PORT", "0", "CASSANDRA_PORT"},
        {"CASSANDRA_PORT", "65536", "CASSANDRA_PORT"},
        {"CASSANDRA_KEYSPACE", "Delivery", "CASSANDRA_KEYSPACE"},
        {"CASSANDRA_KEYSPACE", "1st", "CASSANDRA_KEYSPACE"},
        {"CASSANDRA_KEYSPACE", "ks; DROP KEYSPACE x", "CASSANDRA_KEYSPACE"},
        {"CASSANDRA_KEYSPACE", "a234567890123456789012345678901234567890123456789",
         "CASSANDRA_KEYSPACE"},
        {"CASSANDRA_LOCAL_DC", "dc1'}", "CASSANDRA_LOCAL_DC"},
        {"CASSANDRA_REPLICATION_CLASS", "simplestrategy", "CASSANDRA_REPLICATION_CLASS"},
        {"CASSANDRA_REPLICATION_FACTOR", "0", "CASSANDRA_REPLICATION_FACTOR"},
        {"CASSANDRA_READ_CONSISTENCY", "ANY", "CASSANDRA_READ_CONSISTENCY"},
        {"CASSANDRA_READ_CONSISTENCY", "LOCAL_QUORUMS", "CASSANDRA_READ_CONSISTENCY"},
        {"CASSANDRA_READ_CONSISTENCY", "EACH_QUORUM", "CASSANDRA_READ_CONSISTENCY"},
        {"CASSANDRA_WRITE_CONSISTENCY", "LOCAL_SERIAL", "CASSANDRA_WRITE_CONSISTENCY"},
        {"CASSANDRA_SERIAL_CONSISTENCY", "QUORUM", "CASSANDRA_SERIAL_CONSISTENCY"},
        {"CASSANDRA_REQUEST_TIMEOUT_MS", "50", "CASSANDRA_REQUEST_TIMEOUT_MS"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        clear_env(NULL);
        setenv("QUERY_STORE", "cassandra", 1);
        setenv("CASSANDRA_CONTACT_POINTS", "127.0.0.1", 1);
        refused(bad[i][0], bad[i][1], bad[i][2]);
    }
}

/* Both or neither; the password is never in the error, and is wiped. */
static void test_cassandra_credentials(void **state) {
    (void)state;
    setenv("QUERY_STORE", "cassandra", 1);
    setenv("CASSANDRA_CONTACT_POINTS", "127.0.0.1", 1);
    setenv("CASSANDRA_USERNAME", "query_api", 1);
    refused("CASSANDRA_PASSWORD", "", "CASSANDRA_PASSWORD");
    unsetenv("CASSANDRA_USERNAME");
    refused("CASSANDRA_PASSWORD", "hunter2-but-longer", "CASSANDRA_USERNAME");
    setenv("CASSANDRA_USERNAME", "query_api", 1);
    setenv("CASSANDRA_PASSWORD", "hunter2-but-longer", 1);
    setenv("CASSANDRA_REQUEST_TIMEOUT_MS", "1", 1); /* a later refusal */
    query_settings_t s;
    char err[256] = "";
    assert_int_equal(query_settings_load(&s, err, sizeof err), DETA_ERR_INVALID);
    assert_null(strstr(err, "hunter2"));
    assert_string_equal(s.cassandra.password, "");
}

/* ---- the console ---- */

static void test_console_defaults(void **state) {
    (void)state;
    query_settings_t s;
    load_ok(&s);
    assert_string_equal(s.console.dir, ""); /* no console */
    assert_string_equal(s.console.order_url, "");
    assert_string_equal(s.console.inventory_url, "");
    char csp[512];
    assert_true(query_console_csp(&s.console, csp, sizeof csp));
    assert_string_equal(csp, "default-src 'self'; script-src 'self'; style-src 'self'; "
                             "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
                             "base-uri 'none'; form-action 'self'");
}

static void test_console_values(void **state) {
    (void)state;
    query_settings_t s;
    setenv("QUERY_CONSOLE_DIR", "/tmp", 1);
    setenv("QUERY_CONSOLE_ORDER_URL", "http://localhost:8081", 1);
    setenv("QUERY_CONSOLE_INVENTORY_URL", "https://stock.example", 1);
    load_ok(&s);
    assert_string_equal(s.console.dir, "/tmp");
    assert_string_equal(s.console.order_url, "http://localhost:8081");
    assert_string_equal(s.console.inventory_url, "https://stock.example");
    char csp[512];
    assert_true(query_console_csp(&s.console, csp, sizeof csp));
    assert_string_equal(csp, "default-src 'self'; script-src 'self'; style-src 'self'; "
                             "img-src 'self' data:; connect-src 'self' http://localhost:8081 "
                             "https://stock.example; frame-ancestors 'none'; base-uri 'none'; "
                             "form-action 'self'");
    assert_false(query_console_csp(&s.console, csp, 40)); /* too small: refused, not cut */
    unsetenv("QUERY_CONSOLE_ORDER_URL");
    load_ok(&s);
    assert_true(query_console_csp(&s.console, csp, sizeof csp));
    assert_non_null(strstr(csp, "connect-src 'self' https://stock.example;"));
}

static void console_bad(const char *name, const char *value) {
    clear_env(NULL);
    setenv(name, value, 1);
    query_settings_t s;
    char err[256] = "";
    if (query_settings_load(&s, err, sizeof err) != DETA_ERR_INVALID)
        fail_msg("%s=%s accepted", name, value);
    if (!strstr(err, name))
        fail_msg("%s=%s: \"%s\" does not name it", name, value, err);
}

static void test_console_refusals(void **state) {
    (void)state;
    console_bad("QUERY_CONSOLE_DIR", "/nonexistent/console");
    console_bad("QUERY_CONSOLE_DIR", "/etc/hostname"); /* a file */
    const char *urls[] = {"localhost:8081", "http://localhost:8081/", "http://localhost:8081/api",
                          "*", "ftp://localhost", "http://localhost:8081,http://x",
                          "javascript:alert(1)", "http://a b", "http://localhost:8081 'unsafe-inline'"};
    for (size_t i = 0; i < sizeof urls / sizeof *urls; i++) {
        console_bad("QUERY_CONSOLE_ORDER_URL", urls[i]);
        console_bad("QUERY_CONSOLE_INVENTORY_URL", urls[i]);
    }
}

#define T(f) cmocka_unit_test_setup(f, clear_env)

int main(void) {
    const struct CMUnitTest tests[] = {
        T(test_defaults),
        T(test_console_defaults),
        T(test_console_values),
        T(test_console_refusals),
        T(test_consumer_workers),
        T(test_batch_wait),
        T(test_store_defaults_to_postgres),
        T(test_cassandra_defaults),
        T(test_cassandra_values),
        T(test_cassandra_refusals),
        T(test_cassandra_credentials),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
