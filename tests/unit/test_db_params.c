/*
 * test_db_params.c - what a service's Postgres connection is opened with
 * (deta/db_params.h, lib/src/db_params.c): each setting reaches libpq's
 * keywords - the address, the role and its password, the database, the
 * service's name, and the transport (sslmode, sslrootcert, sslcert, sslkey),
 * passed explicitly, so that libpq's own defaults never decide it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "deta/config.h"
#include "deta/db_params.h"

static deta_config_t base_config(void) {
    deta_config_t cfg;
    memset(&cfg, 0, sizeof cfg);
    snprintf(cfg.service, sizeof cfg.service, "order-service");
    snprintf(cfg.pg_host, sizeof cfg.pg_host, "db.internal");
    cfg.pg_port = 15432;
    snprintf(cfg.pg_user, sizeof cfg.pg_user, "order_svc");
    snprintf(cfg.pg_password, sizeof cfg.pg_password, "s3cret");
    snprintf(cfg.pg_database, sizeof cfg.pg_database, "order_db");
    snprintf(cfg.pg_sslmode, sizeof cfg.pg_sslmode, "prefer");
    cfg.pg_statement_timeout_ms = 30000;
    cfg.pg_lock_timeout_ms = 10000;
    return cfg;
}

static void test_address_role_and_database(void **state) {
    (void)state;
    deta_config_t cfg = base_config();
    deta_db_params_t p;
    deta_db_params_init(&p, &cfg);
    assert_string_equal(deta_db_params_get(&p, "host"), "db.internal");
    assert_string_equal(deta_db_params_get(&p, "port"), "15432");
    assert_string_equal(deta_db_params_get(&p, "user"), "order_svc");
    assert_string_equal(deta_db_params_get(&p, "password"), "s3cret");
    assert_string_equal(deta_db_params_get(&p, "dbname"), "order_db");
    assert_string_equal(deta_db_params_get(&p, "application_name"), "order-service");
    assert_string_equal(deta_db_params_get(&p, "keepalives"), "1");
    assert_non_null(strstr(deta_db_params_get(&p, "options"), "statement_timeout=30000"));
    assert_non_null(strstr(deta_db_params_get(&p, "options"), "lock_timeout=10000"));
}

static void test_replication_connection(void **state) {
    (void)state;
    deta_config_t cfg = base_config();
    deta_db_params_t p;
    deta_db_params_init_replication(&p, &cfg);
    assert_string_equal(deta_db_params_get(&p, "replication"), "database");
    assert_string_equal(deta_db_params_get(&p, "dbname"), "order_db");
    assert_string_equal(deta_db_params_get(&p, "user"), "order_svc");
    assert_string_equal(deta_db_params_get(&p, "sslmode"), "prefer");
    assert_non_null(strstr(deta_db_params_get(&p, "options"), "tcp_keepalives_idle=10"));
    assert_null(strstr(deta_db_params_get(&p, "options"), "statement_timeout"));
    assert_null(strstr(deta_db_params_get(&p, "options"), "lock_timeout"));
    deta_db_params_init(&p, &cfg);
    assert_null(deta_db_params_get(&p, "replication"));
}

static void test_tls_default_is_passed(void **state) {
    (void)state;
    deta_config_t cfg = base_config();
    deta_db_params_t p;
    deta_db_params_init(&p, &cfg);
    assert_string_equal(deta_db_params_get(&p, "sslmode"), "prefer");
    assert_null(deta_db_params_get(&p, "sslrootcert"));
    assert_null(deta_db_params_get(&p, "sslcert"));
    assert_null(deta_db_params_get(&p, "sslkey"));
}

static void test_tls_settings_reach_libpq(void **state) {
    (void)state;
    deta_config_t cfg = base_config();
    snprintf(cfg.pg_sslmode, sizeof cfg.pg_sslmode, "verify-full");
    snprintf(cfg.pg_sslrootcert, sizeof cfg.pg_sslrootcert, "/etc/deta/ca.crt");
    snprintf(cfg.pg_sslcert, sizeof cfg.pg_sslcert, "/etc/deta/client.crt");
    snprintf(cfg.pg_sslkey, sizeof cfg.pg_sslkey, "/etc/deta/client.key");
    deta_db_params_t p;
    deta_db_params_init(&p, &cfg);
    assert_string_equal(deta_db_params_get(&p, "sslmode"), "verify-full");
    assert_string_equal(deta_db_params_get(&p, "sslrootcert"), "/etc/deta/ca.crt");
    assert_string_equal(deta_db_params_get(&p, "sslcert"), "/etc/deta/client.crt");
    assert_string_equal(deta_db_params_get(&p, "sslkey"), "/etc/deta/client.key");
}

/* The arrays are what PQconnectdbParams takes: parallel, NULL-terminated, each
 * keyword once. */
static void test_arrays_are_well_formed(void **state) {
    (void)state;
    deta_config_t cfg = base_config();
    snprintf(cfg.pg_sslrootcert, sizeof cfg.pg_sslrootcert, "/ca.crt");
    deta_db_params_t p;
    deta_db_params_init(&p, &cfg);
    int n = 0;
    while (p.keys[n]) {
        assert_non_null(p.vals[n]);
        for (int j = 0; j < n; j++)
            assert_string_not_equal(p.keys[j], p.keys[n]);
        n++;
    }
    assert_null(p.vals[n]);
    assert_true(n < DETA_DB_PARAMS_MAX);
    assert_int_equal(n, 15);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_address_role_and_database),
        cmocka_unit_test(test_replication_connection),
        cmocka_unit_test(test_tls_default_is_passed),
        cmocka_unit_test(test_tls_settings_reach_libpq),
        cmocka_unit_test(test_arrays_are_well_formed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
