/*
 * test_db_roles.c - least privilege in Postgres (docs/security.md): each
 * service's login role, made by infra/compose/init-roles.sh (scripts/stack.sh
 * runs it, as compose and the image test do), reaches its own database and
 * nothing else, and the stack's services really run as those roles.
 *
 * For each role, with its password from stack.env (<X>_DB_PASSWORD) and the
 * stack's transport settings (PGSSLMODE/PGSSLROOTCERT when it runs TLS):
 *   - it connects to its own database, is no superuser, and may create a table
 *     there (its migrations);
 *   - it cannot connect to any other service's database, nor to postgres;
 *   - CREATE ROLE and CREATE DATABASE are refused;
 *   - a wrong password is refused.
 * And, as the superuser, every session of a service (pg_stat_activity's
 * application_name is the service's name) is its role's, none the superuser's.
 *
 * Replication (the outbox relays read the WAL, docs/security.md): each role
 * opens a logical replication connection (replication=database) to its own
 * database (IDENTIFY_SYSTEM names it), but not to another service's database,
 * and a physical one (replication=true: the whole cluster, BASE_BACKUP) is
 * refused by the stack's hba file; the server runs wal_level=logical with a
 * bound on what a slot may hold (max_slot_wal_keep_size).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testsupport.h"

typedef struct role_row {
    const char *service;
    const char *role;
    const char *database;
    const char *password_var;
} role_row_t;

/* infra/compose/init-roles.sh's table. */
static const role_row_t roles[] = {
    {"order-service", "order_svc", "order_db", "ORDER_DB_PASSWORD"},
    {"inventory-service", "inventory_svc", "inventory_db", "INVENTORY_DB_PASSWORD"},
    {"payment-service", "payment_svc", "delivery_eta", "PAYMENT_DB_PASSWORD"},
    {"delivery-service", "delivery_svc", "delivery_db", "DELIVERY_DB_PASSWORD"},
    {"query-api", "query_svc", "delivery_query", "QUERY_DB_PASSWORD"},
};
#define NROLES (sizeof roles / sizeof *roles)

/* A connection as user/password to dbname (sslmode and the CA from the
 * environment, as stack.env gives them); the caller checks PQstatus. */
static PGconn *connect_as(const char *user, const char *password, const char *dbname) {
    const char *keys[] = {"host", "port", "user", "password", "dbname", "connect_timeout", NULL};
    const char *vals[] = {ts_env("PGHOST"), ts_env("PGPORT"), user, password, dbname, "5", NULL};
    return PQconnectdbParams(keys, vals, 0);
}

/* The same, as a replication connection: "database" (logical) or "true"
 * (physical). */
static PGconn *connect_replication(const role_row_t *r, const char *dbname, const char *mode) {
    const char *keys[] = {"host",   "port",        "user", "password", "dbname",
                          "connect_timeout", "replication", NULL};
    const char *vals[] = {ts_env("PGHOST"), ts_env("PGPORT"), r->role, ts_env(r->password_var),
                          dbname, "5", mode, NULL};
    return PQconnectdbParams(keys, vals, 0);
}

static PGconn *connect_ok(const role_row_t *r, const char *dbname) {
    PGconn *c = connect_as(r->role, ts_env(r->password_var), dbname);
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("%s cannot connect to %s: %s", r->role, dbname, PQerrorMessage(c));
    return c;
}

/* sql must fail with a message containing want. */
static void refused(PGconn *c, const char *who, const char *sql, const char *want) {
    PGresult *res = PQexec(c, sql);
    if (PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK)
        fail_msg("%s: \"%s\" succeeded; it must be refused", who, sql);
    if (!strstr(PQerrorMessage(c), want))
        fail_msg("%s: \"%s\" failed, but not with \"%s\": %s", who, sql, want,
                 PQerrorMessage(c));
    PQclear(res);
}

static void each_role_owns_its_database(void **state) {
    (void)state;
    for (size_t i = 0; i < NROLES; i++) {
        const role_row_t *r = &roles[i];
        PGconn *c = connect_ok(r, r->database);
        assert_int_equal(ts_pg_long(c, "SELECT rolsuper::int + rolcreaterole::int + rolcreatedb::int"
                                       " FROM pg_roles WHERE rolname = current_user",
                                    0, NULL),
                         0);
        assert_int_equal(ts_pg_long(c, "SELECT (pg_get_userbyid(datdba) = current_user)::int"
                                       " FROM pg_database WHERE datname = current_database()",
                                    0, NULL),
                         1);
        PGresult *res = PQexec(c, "CREATE TEMP TABLE roles_probe (x int)");
        if (PQresultStatus(res) != PGRES_COMMAND_OK)
            fail_msg("%s cannot create a table in %s: %s", r->role, r->database,
                     PQerrorMessage(c));
        PQclear(res);
        PQfinish(c);
    }
}

static void no_role_reaches_another_database(void **state) {
    (void)state;
    for (size_t i = 0; i < NROLES; i++) {
        const role_row_t *r = &roles[i];
        for (size_t j = 0; j <= NROLES; j++) {
            const char *db = j < NROLES ? roles[j].database : "postgres";
            if (j == i)
                continue;
            PGconn *c = connect_as(r->role, ts_env(r->password_var), db);
            if (PQstatus(c) == CONNECTION_OK)
                fail_msg("%s connected to %s, another service's database", r->role, db);
            if (!strstr(PQerrorMessage(c), "permission denied for database"))
                fail_msg("%s to %s: refused, but not for want of CONNECT: %s", r->role, db,
                         PQerrorMessage(c));
            PQfinish(c);
        }
    }
}

static void no_role_creates_roles_or_databases(void **state) {
    (void)state;
    for (size_t i = 0; i < NROLES; i++) {
        const role_row_t *r = &roles[i];
        PGconn *c = connect_ok(r, r->database);
        refused(c, r->role, "CREATE ROLE roles_probe_role LOGIN PASSWORD 'x'",
                "permission denied to create role");
        refused(c, r->role, "CREATE DATABASE roles_probe_db", "permission denied to create database");
        /* A REPLICATION role may not be altered but by a superuser. */
        refused(c, r->role, "ALTER ROLE CURRENT_USER CREATEDB",
                "must be superuser to alter replication roles");
        PQfinish(c);
    }
}

static void a_wrong_password_is_refused(void **state) {
    (void)state;
    PGconn *c = connect_as(roles[0].role, "not-the-password", roles[0].database);
    assert_int_not_equal(PQstatus(c), CONNECTION_OK);
    assert_non_null(strstr(PQerrorMessage(c), "password authentication failed"));
    PQfinish(c);
}

/* The services of the stack log in as their roles: every session a service has
 * open is its role's. Each service is asked for its health first, which pings
 * its database, so that it has a session to look at. */
static void services_run_as_their_roles(void **state) {
    (void)state;
    PGconn *su = ts_pg("postgres");
    for (size_t i = 0; i < NROLES; i++) {
        const role_row_t *r = &roles[i];
        char url_var[64];
        snprintf(url_var, sizeof url_var, "%s", r->service);
        for (char *p = url_var; *p; p++)
            *p = *p == '-' ? '_' : (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
        strncat(url_var, "_URL", sizeof url_var - strlen(url_var) - 1);
        if (!getenv(url_var))
            continue; /* not running in this stack (STACK_SERVICES) */
        ts_http_resp_t resp;
        ts_http("GET", url_var, "/actuator/health", NULL, NULL, &resp);
        ts_http_resp_free(&resp);
        const char *p[] = {r->service, r->role};
        long theirs = ts_pg_long(su, "SELECT count(*) FROM pg_stat_activity"
                                     " WHERE application_name = $1 AND usename = $2", 2, p);
        long others = ts_pg_long(su, "SELECT count(*) FROM pg_stat_activity"
                                     " WHERE application_name = $1 AND usename <> $2", 2, p);
        if (theirs < 1 || others != 0)
            fail_msg("%s: %ld sessions as %s, %ld as another role", r->service, theirs, r->role,
                     others);
    }
    PQfinish(su);
}

static void logical_replication_to_its_own_database_only(void **state) {
    (void)state;
    PGconn *su = ts_pg("postgres");
    assert_int_equal(ts_pg_long(su, "SELECT (current_setting('wal_level') = 'logical')::int", 0,
                                NULL),
                     1);
    assert_int_equal(ts_pg_long(su, "SELECT (setting::bigint > 0)::int FROM pg_settings"
                                    " WHERE name = 'max_slot_wal_keep_size'",
                                0, NULL),
                     1);
    PQfinish(su);
    for (size_t i = 0; i < NROLES; i++) {
        const role_row_t *r = &roles[i];
        PGconn *c = connect_replication(r, r->database, "database");
        if (PQstatus(c) != CONNECTION_OK)
            fail_msg("%s: no logical replication connection to %s: %s", r->role, r->database,
                     PQerrorMessage(c));
        PGresult *res = PQexec(c, "IDENTIFY_SYSTEM");
        if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 || PQnfields(res) < 4)
            fail_msg("%s: IDENTIFY_SYSTEM on %s: %s", r->role, r->database, PQerrorMessage(c));
        assert_string_equal(PQgetvalue(res, 0, 3), r->database);
        PQclear(res);
        PQfinish(c);

        const char *other = roles[(i + 1) % NROLES].database;
        c = connect_replication(r, other, "database");
        if (PQstatus(c) == CONNECTION_OK)
            fail_msg("%s opened a logical replication connection to %s", r->role, other);
        if (!strstr(PQerrorMessage(c), "permission denied for database"))
            fail_msg("%s to %s (replication=database): refused, but not for want of CONNECT: %s",
                     r->role, other, PQerrorMessage(c));
        PQfinish(c);

        c = connect_replication(r, r->database, "true");
        if (PQstatus(c) == CONNECTION_OK)
            fail_msg("%s opened a physical replication connection", r->role);
        if (!strstr(PQerrorMessage(c), "no pg_hba.conf entry for replication connection"))
            fail_msg("%s (replication=true): refused, but not by the hba file: %s", r->role,
                     PQerrorMessage(c));
        PQfinish(c);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(each_role_owns_its_database),
        cmocka_unit_test(no_role_reaches_another_database),
        cmocka_unit_test(no_role_creates_roles_or_databases),
        cmocka_unit_test(a_wrong_password_is_refused),
        cmocka_unit_test(services_run_as_their_roles),
        cmocka_unit_test(logical_replication_to_its_own_database_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
