/*
 * db_params.c - libpq's keywords and values for a service's connection (see
 * deta/db_params.h), from the settings alone: no I/O, so that a unit test
 * checks what reaches PQconnectdbParams.
 *
 * A peer that vanishes without closing (a partition, a frozen host) must not hold
 * a session, its advisory locks or its transaction for the kernel's default of
 * hours. Both ends therefore probe an idle connection (TCP keepalives) and give
 * up on unacknowledged data (TCP_USER_TIMEOUT): the client's side is set by the
 * keywords, the server's in options, so that a zombie client's backend, and the
 * relay lock it holds, are gone within about half a minute. Statements and lock
 * waits are bounded by the settings (PG_STATEMENT_TIMEOUT_MS, PG_LOCK_TIMEOUT_MS;
 * their failures are transient), and a transaction left idle by a stalled client
 * is ended by the server after DB_IDLE_IN_TX_TIMEOUT_MS.
 *
 * TLS: sslmode is always passed (config.c defaults it: verify-full with a CA,
 * else prefer); the certificate files only when set.
 */
#include "deta/db_params.h"

#include <stdio.h>
#include <string.h>

#define DB_CONNECT_TIMEOUT_S "3"
#define DB_KEEPALIVE_IDLE_S "10"       /* idle seconds before the first probe */
#define DB_KEEPALIVE_INTERVAL_S "5"    /* between unanswered probes */
#define DB_KEEPALIVE_COUNT "3"         /* unanswered probes that end the connection */
#define DB_TCP_USER_TIMEOUT_MS "20000" /* unacknowledged data that ends it */
#define DB_IDLE_IN_TX_TIMEOUT_MS 60000
/* The server's side of the same TCP settings, in every session's options. */
#define DB_TCP_OPTIONS                                                                         \
    "-c tcp_keepalives_idle=" DB_KEEPALIVE_IDLE_S                                              \
    " -c tcp_keepalives_interval=" DB_KEEPALIVE_INTERVAL_S                                     \
    " -c tcp_keepalives_count=" DB_KEEPALIVE_COUNT " -c tcp_user_timeout=" DB_TCP_USER_TIMEOUT_MS

static void add(deta_db_params_t *p, int *n, const char *key, const char *val) {
    if (*n >= DETA_DB_PARAMS_MAX - 1 || !val[0])
        return;
    p->keys[*n] = key;
    p->vals[*n] = val;
    (*n)++;
}

void deta_db_params_init(deta_db_params_t *p, const deta_config_t *cfg) {
    memset(p, 0, sizeof *p);
    snprintf(p->host, sizeof p->host, "%s", cfg->pg_host);
    snprintf(p->port, sizeof p->port, "%d", cfg->pg_port);
    snprintf(p->user, sizeof p->user, "%s", cfg->pg_user);
    snprintf(p->password, sizeof p->password, "%s", cfg->pg_password);
    snprintf(p->dbname, sizeof p->dbname, "%s", cfg->pg_database);
    snprintf(p->appname, sizeof p->appname, "%s", cfg->service[0] ? cfg->service : "deta");
    snprintf(p->options, sizeof p->options,
             "-c statement_timeout=%d -c lock_timeout=%d -c idle_in_transaction_session_timeout=%d "
             DB_TCP_OPTIONS,
             cfg->pg_statement_timeout_ms, cfg->pg_lock_timeout_ms, DB_IDLE_IN_TX_TIMEOUT_MS);
    snprintf(p->sslmode, sizeof p->sslmode, "%s", cfg->pg_sslmode);
    snprintf(p->sslrootcert, sizeof p->sslrootcert, "%s", cfg->pg_sslrootcert);
    snprintf(p->sslcert, sizeof p->sslcert, "%s", cfg->pg_sslcert);
    snprintf(p->sslkey, sizeof p->sslkey, "%s", cfg->pg_sslkey);
    int n = 0;
    add(p, &n, "host", p->host);
    add(p, &n, "port", p->port);
    add(p, &n, "user", p->user);
    add(p, &n, "password", p->password);
    add(p, &n, "dbname", p->dbname);
    add(p, &n, "connect_timeout", DB_CONNECT_TIMEOUT_S);
    add(p, &n, "application_name", p->appname);
    add(p, &n, "options", p->options);
    add(p, &n, "keepalives", "1");
    add(p, &n, "keepalives_idle", DB_KEEPALIVE_IDLE_S);
    add(p, &n, "keepalives_interval", DB_KEEPALIVE_INTERVAL_S);
    add(p, &n, "keepalives_count", DB_KEEPALIVE_COUNT);
    add(p, &n, "tcp_user_timeout", DB_TCP_USER_TIMEOUT_MS);
    add(p, &n, "sslmode", p->sslmode);
    add(p, &n, "sslrootcert", p->sslrootcert);
    add(p, &n, "sslcert", p->sslcert);
    add(p, &n, "sslkey", p->sslkey);
    p->keys[n] = NULL;
    p->vals[n] = NULL;
}

const char *deta_db_params_get(const deta_db_params_t *p, const char *key) {
    for (int i = 0; p->keys[i]; i++)
        if (strcmp(p->keys[i], key) == 0)
            return p->vals[i];
    return NULL;
}

void deta_db_params_init_replication(deta_db_params_t *p, const deta_config_t *cfg) {
    deta_db_params_init(p, cfg);
    /* A walsender runs no statement a statement or lock timeout should bound,
     * and the stream stays open as long as the service runs: the session keeps
     * only the TCP settings. */
    snprintf(p->options, sizeof p->options, "%s", DB_TCP_OPTIONS);
    int n = 0;
    while (p->keys[n])
        n++;
    add(p, &n, "replication", "database");
    p->keys[n] = NULL;
    p->vals[n] = NULL;
}
