/*
 * config.h - configuration from environment variables, read in one place.
 *
 * deta_config_load() reads every setting the shared library uses, with the seed's
 * defaults, and validates numbers. Services read their own extra settings with
 * deta_config_str/deta_config_int so that every variable a service knows goes
 * through here (and is listed in the README's configuration table).
 *
 *   KAFKA_BOOTSTRAP_SERVERS   localhost:9092
 *   KAFKA_SESSION_TIMEOUT_MS  45000   (the local stack sets 6000)
 *   KAFKA_FETCH_WAIT_MAX_MS   10      (1..500: how long a broker may hold a consumer's
 *                                      fetch that found no data; see kafka_conf.c)
 *   PGHOST PGPORT PGUSER PGPASSWORD   localhost 5432 postgres postgres
 *   PGDATABASE                the service's own database (deta_service_default_db)
 *   PG_PREPARED_STATEMENTS    on      (on/off: named prepared statements per connection, see
 *                                      db.c; off behind PgBouncer in transaction mode)
 *   PG_STATEMENT_TIMEOUT_MS   30000   (0..3600000, 0 none: the server cancels a longer
 *                                      statement; the failure is transient)
 *   PG_LOCK_TIMEOUT_MS        10000   (0..3600000, 0 none: the longest wait for a lock)
 *   REDIS_HOST REDIS_PORT     localhost 6379
 *   HTTP_PORT                 the service's port of CONTRACTS.md (deta_service_default_port)
 *   HTTP_BODY_LIMIT           65536 bytes
 *   HTTP_THREADS              4
 *   LOG_LEVEL                 info    (debug, info, warn, error)
 *   INSTANCE_ID               <service>-<pid>
 *   DETA_SHUTDOWN_TIMEOUT_MS  10000   (SIGTERM to exit; past it the service exits non-zero)
 *
 * Settings of one service only, loaded for that service alone (the table
 * owned_settings in config.c says which; the other services never see them):
 *  - QUERY_API_ADMIN_TOKEN (query-api): the bearer token of the dead-letter
 *    administration. No default: unset or empty disables those routes. When set
 *    it must be 16 to 256 characters of A-Z a-z 0-9 - . _ ~ + / = (RFC 6750's
 *    token characters), so that a typo or a toy token stops the service.
 */
#ifndef DETA_CONFIG_H
#define DETA_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include "deta/err.h"

#define DETA_ADMIN_TOKEN_MIN 16
#define DETA_ADMIN_TOKEN_MAX 256

typedef struct deta_config {
    char service[64];
    char instance_id[96];
    char kafka_bootstrap[512];
    int kafka_session_timeout_ms;
    int kafka_fetch_wait_max_ms;
    char pg_host[256];
    int pg_port;
    char pg_user[64];
    char pg_password[128];
    char pg_database[64];
    bool pg_prepared_statements; /* PG_PREPARED_STATEMENTS */
    int pg_statement_timeout_ms; /* PG_STATEMENT_TIMEOUT_MS; 0: none */
    int pg_lock_timeout_ms;      /* PG_LOCK_TIMEOUT_MS; 0: none */
    char redis_host[256];
    int redis_port;
    int http_port;
    long http_body_limit;
    int http_threads;
    char log_level[16];
    char admin_token[DETA_ADMIN_TOKEN_MAX + 1]; /* query-api only; "" when not set */
    int shutdown_timeout_ms;
} deta_config_t;

/* Fills cfg for the named service. DETA_ERR_INVALID with the variable's name in
 * errstr when a value is malformed or out of range. */
deta_err_t deta_config_load(deta_config_t *cfg, const char *service, char *errstr, size_t errsize);

/* getenv, with def when unset or empty. */
const char *deta_config_str(const char *name, const char *def);
/* An integer variable within [min, max]; def when unset or empty. */
deta_err_t deta_config_int(const char *name, long def, long min, long max, long *out,
                           char *errstr, size_t errsize);

/* CONTRACTS.md: query-api 8080, order-service 8081, payment-service 8082,
 * inventory-service 8083, delivery-service 8084; 0 for an unknown name. */
int deta_service_default_port(const char *service);
/* The seed: order_db, delivery_eta (payment), inventory_db, delivery_db,
 * delivery_query (query-api); "postgres" for an unknown name. */
const char *deta_service_default_db(const char *service);

#endif
