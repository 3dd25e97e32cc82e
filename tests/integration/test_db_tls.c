/*
 * test_db_tls.c - Postgres over TLS (docs/security.md): the stack's Postgres
 * with PG_TLS=on (scripts/stack.sh; `make test` runs so) takes TLS connections
 * only, and a service's connection - libdeta's deta_db with the settings a
 * service reads (PGSSLMODE, PGSSLROOTCERT) - verifies the server.
 *
 *   - with the stack's CA, and PGSSLMODE left to its default (verify-full when a
 *     CA is given), a service's role connects, over TLS (pg_stat_ssl);
 *   - with a CA that did not sign the server's certificate (a second one, made
 *     here with openssl) the connection is refused by the client: the
 *     certificate does not verify;
 *   - a plain connection (PGSSLMODE=disable) is refused by the server (no
 *     pg_hba.conf line without encryption).
 * Skipped (77) when the stack does not run TLS (no PGSSLROOTCERT in stack.env).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "deta/config.h"
#include "deta/db.h"
#include "testsupport.h"

static char unrelated_dir[64];
static char unrelated_ca[128];
static const char *stack_ca;

/* order-service's settings, as stack.sh gives them, with the transport's
 * overridden: mode NULL leaves PGSSLMODE unset (the default), ca NULL
 * leaves PGSSLROOTCERT unset. */
static deta_db_t *service_db(const char *mode, const char *ca) {
    setenv("PGUSER", "order_svc", 1);
    setenv("PGPASSWORD", ts_env("ORDER_DB_PASSWORD"), 1);
    setenv("PGDATABASE", "order_db", 1);
    if (mode)
        setenv("PGSSLMODE", mode, 1);
    else
        unsetenv("PGSSLMODE");
    if (ca)
        setenv("PGSSLROOTCERT", ca, 1);
    else
        unsetenv("PGSSLROOTCERT");
    deta_config_t cfg;
    char err[256];
    if (deta_config_load(&cfg, "order-service", err, sizeof err) != DETA_OK)
        fail_msg("config: %s", err);
    if (!mode)
        assert_string_equal(cfg.pg_sslmode, ca ? "verify-full" : "prefer");
    deta_db_t *db = deta_db_new(&cfg);
    assert_non_null(db);
    return db;
}

static void verified_with_the_stack_ca(void **state) {
    (void)state;
    deta_db_t *db = service_db(NULL, stack_ca);
    char err[512] = "";
    PGconn *c = deta_db_conn(db, err, sizeof err);
    if (!c)
        fail_msg("a service's connection with the stack's CA failed: %s", err);
    assert_int_equal(ts_pg_long(c, "SELECT ssl::int FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                                0, NULL),
                     1);
    deta_db_free(db);
}

static void refused_when_the_certificate_does_not_verify(void **state) {
    (void)state;
    deta_db_t *db = service_db(NULL, unrelated_ca);
    char err[512] = "";
    assert_null(deta_db_conn(db, err, sizeof err));
    if (!strstr(err, "certificate verify failed"))
        fail_msg("refused, but not for the certificate: %s", err);
    deta_db_free(db);
    /* verify-ca, the weaker check, refuses it as well. */
    db = service_db("verify-ca", unrelated_ca);
    assert_null(deta_db_conn(db, err, sizeof err));
    assert_non_null(strstr(err, "certificate verify failed"));
    deta_db_free(db);
}

static void a_plain_connection_is_refused(void **state) {
    (void)state;
    deta_db_t *db = service_db("disable", NULL);
    char err[512] = "";
    assert_null(deta_db_conn(db, err, sizeof err));
    if (!strstr(err, "no encryption"))
        fail_msg("refused, but not for want of TLS: %s", err);
    deta_db_free(db);
}

/* The second CA: a self-signed certificate of its own, with nothing to do with
 * the stack's. */
static int make_unrelated_ca(void **state) {
    (void)state;
    snprintf(unrelated_dir, sizeof unrelated_dir, "/tmp/deta-tls-test.XXXXXX");
    if (!mkdtemp(unrelated_dir))
        return -1;
    snprintf(unrelated_ca, sizeof unrelated_ca, "%s/ca.crt", unrelated_dir);
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
             " -keyout %s/ca.key -out %s -days 1 -subj '/CN=unrelated test CA' >/dev/null 2>&1",
             unrelated_dir, unrelated_ca);
    return system(cmd) == 0 ? 0 : -1;
}

static int remove_unrelated_ca(void **state) {
    (void)state;
    char path[160];
    snprintf(path, sizeof path, "%s/ca.key", unrelated_dir);
    unlink(path);
    unlink(unrelated_ca);
    rmdir(unrelated_dir);
    return 0;
}

int main(void) {
    const char *ca = getenv("PGSSLROOTCERT");
    if (!ca || !*ca) {
        printf("test_db_tls: the stack's Postgres does not run TLS (PG_TLS=on): skipped\n");
        return 77;
    }
    static char ca_copy[512];
    snprintf(ca_copy, sizeof ca_copy, "%s", ca);
    stack_ca = ca_copy;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(verified_with_the_stack_ca),
        cmocka_unit_test(refused_when_the_certificate_does_not_verify),
        cmocka_unit_test(a_plain_connection_is_refused),
    };
    return cmocka_run_group_tests(tests, make_unrelated_ca, remove_unrelated_ca);
}
