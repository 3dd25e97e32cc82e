/*
 * config.h - configuration from environment variables: the library's settings,
 * read once.
 *
 * deta_config_load() reads every setting the shared library uses, with the seed's
 * defaults, and validates numbers. The library knows no service: a service
 * passes its identity (deta_service_def_t: its name, default HTTP port and
 * database, from services/services.tsv through the generated deta_services.h),
 * and reads its own settings in its settings.c with deta_config_str and
 * deta_config_int, so that every variable is validated alike (and is listed in
 * the README's configuration table).
 *
 *   KAFKA_BOOTSTRAP_SERVERS   localhost:9092
 *   KAFKA_SESSION_TIMEOUT_MS  45000   (the local stack sets 6000)
 *   KAFKA_FETCH_WAIT_MAX_MS   500     (1..500: how long a broker may hold a consumer's
 *                                      fetch that found no data, librdkafka's default;
 *                                      the local stack sets 10; see kafka_conf.c)
 *   KAFKA_STATIC_MEMBERSHIP   off     (on: each consumer joins its group as the static
 *                                      member <INSTANCE_ID>.<its first topic>, so that an
 *                                      instance restarted within the session timeout takes
 *                                      its partitions back without a rebalance; needs
 *                                      INSTANCE_ID set, stable across restarts, of
 *                                      [A-Za-z0-9._-]; see kafka_conf.c)
 *   KAFKA_STATISTICS_INTERVAL_MS 5000 (0 off, or 1000..3600000: how often librdkafka hands
 *                                      each consumer its statistics, read for the lag
 *                                      gauge deta_consumer_lag_messages; kafka_consumer.c)
 *   KAFKA_SECURITY_PROTOCOL   PLAINTEXT (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL; every
 *                                      handle the library makes; see config_kafka.c)
 *   KAFKA_SASL_MECHANISM      none    (with SASL_*, required: PLAIN, SCRAM-SHA-256,
 *                                      SCRAM-SHA-512)
 *   KAFKA_SASL_USERNAME       none    (with SASL_*, required)
 *   KAFKA_SASL_PASSWORD       none    (with SASL_*, required; a secret)
 *   KAFKA_SSL_CA_LOCATION     none    (with SSL, SASL_SSL: the CA file or directory the
 *                                      broker's certificate is verified with; none: the
 *                                      system's CAs; must be readable)
 *   KAFKA_SSL_CERTIFICATE_LOCATION, KAFKA_SSL_KEY_LOCATION
 *                             none    (with SSL, SASL_SSL: a client certificate and its
 *                                      key, both or neither; readable files)
 *   KAFKA_SSL_KEY_PASSWORD    none    (the key's passphrase, with the key; a secret)
 *   KAFKA_SSL_ENDPOINT_IDENTIFICATION https (https: the broker's certificate must name
 *                                      the host connected to; none: not checked)
 *   PGHOST PGPORT PGUSER PGPASSWORD   localhost 5432 postgres postgres
 *   PGDATABASE                the service's own database (deta_service_def_t)
 *   PG_PREPARED_STATEMENTS    on      (on/off: named prepared statements per connection, see
 *                                      db.c; off behind PgBouncer in transaction mode)
 *   PG_STATEMENT_TIMEOUT_MS   30000   (0..3600000, 0 none: the server cancels a longer
 *                                      statement; the failure is transient)
 *   PG_LOCK_TIMEOUT_MS        10000   (0..3600000, 0 none: the longest wait for a lock)
 *   PGSSLMODE                 verify-full when PGSSLROOTCERT is set, else prefer (libpq's
 *                                      modes: disable allow prefer require verify-ca
 *                                      verify-full; verify-ca and verify-full need
 *                                      PGSSLROOTCERT; passed to libpq explicitly, db_params.c)
 *   PGSSLROOTCERT             ""      (the CA file that must have signed the server's
 *                                      certificate; readable at start)
 *   PGSSLCERT PGSSLKEY        ""      (a client certificate and its key: both or neither)
 *   REDIS_HOST REDIS_PORT     localhost 6379
 *   REDIS_USERNAME            ""      (the ACL user; empty: AUTH with the password alone)
 *   REDIS_PASSWORD            ""      (empty: no AUTH; sent on every (re)connect, never logged)
 *   HTTP_PORT                 the service's port (deta_service_def_t; docs/contracts.md)
 *   HTTP_BODY_LIMIT           65536 bytes
 *   HTTP_THREADS              4
 *   HTTP_CORS_ORIGINS         ""      (comma-separated exact origins allowed to call the
 *                                      service from a browser, such as
 *                                      http://localhost:8080; no "*"; empty: no CORS
 *                                      headers at all; deta/http_cors.h)
 *   HTTP_MAX_CONNECTIONS      4096    (1..1000000: connections served at once; one more is
 *                                      answered 503, health and metrics excepted; the
 *                                      open-file limit must hold it, see service.c)
 *   HTTP_MAX_CONNECTIONS_PER_CLIENT 512 (1..HTTP_MAX_CONNECTIONS: from one client address;
 *                                      one more is answered 429)
 *   HTTP_HEADER_TIMEOUT_MS    10000   (100..3600000: request line and headers must be in
 *                                      this long after the accept or the previous answer,
 *                                      else the connection is closed)
 *   HTTP_BODY_TIMEOUT_MS      30000   (100..3600000: the body this long after the headers,
 *                                      else 408 and closed)
 *   HTTP_HEADER_LIMIT         8192    (1024..1048576 bytes: request line and headers; more
 *                                      is 431)
 *   LOG_LEVEL                 info    (debug, info, warn, error)
 *   INSTANCE_ID               <service>-<pid>
 *   OUTBOX_RETENTION_S        3600    (0..31536000: outbox rows kept this long in the table)
 *   INBOX_RETENTION_HOURS     168     (0..87600, 0 for ever: processed-event claims kept)
 *   DETA_SHUTDOWN_TIMEOUT_MS  10000   (SIGTERM to exit; past it the service exits non-zero)
 *   OPERATOR_TOKEN            none    (the bearer token of the operator routes, deta/auth.h:
 *                                      stock changes, the dead-letter administration;
 *                                      16..256 of A-Z a-z 0-9 - . _ ~ + / =; unset: those
 *                                      routes answer 503. Never logged)
 *   READER_TOKEN              none    (the bearer token of the reading endpoints when
 *                                      HTTP_READS_NEED_AUTH is on; same rules; must
 *                                      differ from OPERATOR_TOKEN)
 *   HTTP_READS_NEED_AUTH     off     (on: GET and HEAD below /api/ need the reader or the
 *                                      operator token; health, metrics and the console's
 *                                      files stay open. On needs one of the two tokens)
 *   OTEL_EXPORTER_OTLP_ENDPOINT       none    (tracing: spans are POSTed, OTLP/HTTP JSON, to
 *                                      <it>/v1/traces; http:// only; unset: tracing off.
 *                                      The other OTEL_* settings (TRACES_ENDPOINT, TIMEOUT,
 *                                      PROTOCOL, SERVICE_NAME, TRACES_SAMPLER(_ARG),
 *                                      TRACES_EXPORTER, SDK_DISABLED, BSP_MAX_QUEUE_SIZE,
 *                                      BSP_MAX_EXPORT_BATCH_SIZE, BSP_SCHEDULE_DELAY) are
 *                                      listed in lib/src/trace_config.c and
 *                                      docs/observability.md#traces)
 *
 * Secrets. PGPASSWORD, REDIS_PASSWORD, KAFKA_SASL_PASSWORD, KAFKA_SSL_KEY_PASSWORD,
 * OPERATOR_TOKEN and READER_TOKEN (and every secret a service
 * reads, with deta_config_secret) may instead come from a file: NAME_FILE names it
 * (a Docker or Kubernetes secret), its one trailing newline removed. Setting both
 * NAME and NAME_FILE is an error naming both. A secret's value is never echoed in
 * an error.
 */
#ifndef DETA_CONFIG_H
#define DETA_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include "deta/auth.h"
#include "deta/err.h"
#include "deta/trace.h"

/* What the library is told about the program it runs in, since it knows no
 * service: its name, its default HTTP port (0: an ephemeral one) and its own
 * database (NULL: "postgres"). The services' come from services/services.tsv. */
typedef struct deta_service_def {
    const char *name;
    int http_port;
    const char *database;
} deta_service_def_t;

/* How the library's Kafka clients reach the brokers (KAFKA_SECURITY_PROTOCOL and
 * the KAFKA_SASL_* and KAFKA_SSL_* settings, config_kafka.c); applied to every
 * librdkafka handle by kafka_conf.c. An empty string is a setting not given. */
typedef struct deta_kafka_security {
    char protocol[16];       /* PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL */
    char sasl_mechanism[16]; /* PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; "" without SASL */
    char sasl_username[256];
    char sasl_password[256]; /* a secret: never logged */
    char ssl_ca_location[1024];
    char ssl_certificate_location[1024];
    char ssl_key_location[1024];
    char ssl_key_password[256];          /* a secret: never logged */
    char ssl_endpoint_identification[16]; /* https or none */
} deta_kafka_security_t;

typedef struct deta_config {
    char service[64];
    char instance_id[96];
    char kafka_bootstrap[512];
    int kafka_session_timeout_ms;
    int kafka_fetch_wait_max_ms;
    int kafka_statistics_interval_ms; /* KAFKA_STATISTICS_INTERVAL_MS; 0: no statistics */
    bool kafka_static_membership;     /* KAFKA_STATIC_MEMBERSHIP (kafka_conf.c) */
    deta_kafka_security_t kafka_security;
    char pg_host[256];
    int pg_port;
    char pg_user[64];
    char pg_password[128];
    char pg_database[64];
    bool pg_prepared_statements; /* PG_PREPARED_STATEMENTS */
    int pg_statement_timeout_ms; /* PG_STATEMENT_TIMEOUT_MS; 0: none */
    int pg_lock_timeout_ms;      /* PG_LOCK_TIMEOUT_MS; 0: none */
    char pg_sslmode[16];         /* PGSSLMODE, defaulted (see above) */
    char pg_sslrootcert[256];    /* PGSSLROOTCERT; "" none */
    char pg_sslcert[256];        /* PGSSLCERT; "" none */
    char pg_sslkey[256];         /* PGSSLKEY; "" none */
    char redis_host[256];
    int redis_port;
    char redis_username[64];  /* REDIS_USERNAME; "" the default user */
    char redis_password[128]; /* REDIS_PASSWORD; "" no AUTH */
    int http_port;
    long http_body_limit;
    int http_threads;
    char http_cors_origins[1024]; /* HTTP_CORS_ORIGINS, checked by deta_cors_origins_parse */
    int http_max_connections;            /* HTTP_MAX_CONNECTIONS */
    int http_max_connections_per_client; /* HTTP_MAX_CONNECTIONS_PER_CLIENT */
    int http_header_timeout_ms;          /* HTTP_HEADER_TIMEOUT_MS */
    int http_body_timeout_ms;            /* HTTP_BODY_TIMEOUT_MS */
    long http_header_limit;              /* HTTP_HEADER_LIMIT */
    char log_level[16];
    long outbox_retention_s;   /* OUTBOX_RETENTION_S */
    long inbox_retention_hours; /* INBOX_RETENTION_HOURS; 0: for ever */
    int shutdown_timeout_ms;
    deta_auth_t auth; /* OPERATOR_TOKEN, READER_TOKEN, HTTP_READS_NEED_AUTH (secrets) */
    deta_trace_config_t trace; /* the OTEL_* settings (deta/trace.h, trace_config.c) */
} deta_config_t;

/* Fills cfg for the service def names, with its defaults. DETA_ERR_INVALID with
 * the variable's name in errstr when a value is malformed or out of range. */
deta_err_t deta_config_load_service(deta_config_t *cfg, const deta_service_def_t *def,
                                    char *errstr, size_t errsize);
/* The same for a program that is no service (a tool, a test): no default port
 * (ephemeral), the database "postgres". */
deta_err_t deta_config_load(deta_config_t *cfg, const char *name, char *errstr, size_t errsize);

/* getenv, with def when unset or empty. */
const char *deta_config_str(const char *name, const char *def);
/* A text variable (def when unset or empty) copied into dst; DETA_ERR_INVALID naming
 * the variable when it does not fit (never truncated). */
deta_err_t deta_config_text(const char *name, const char *def, char *dst, size_t dstsize,
                            char *errstr, size_t errsize);
/* An integer variable within [min, max]; def when unset or empty. */
deta_err_t deta_config_int(const char *name, long def, long min, long max, long *out,
                           char *errstr, size_t errsize);

/* A secret setting: the value of NAME, or else the content of the file that
 * NAME_FILE names (as Docker and Kubernetes provide secrets), with one trailing
 * newline ("\n" or "\r\n") removed; def (NULL: "") when neither is set or the value
 * is empty. Copied into dst (dstsize bytes, NUL included). DETA_ERR_INVALID when
 * both NAME and NAME_FILE are set (naming both), when the value does not fit
 * (naming the variable it came from), or when the file cannot be read, is not a
 * regular file or holds a NUL byte (naming NAME_FILE and the path); the error
 * never holds the value. On error dst is "". Example:
 *   char password[128];
 *   if (deta_config_secret("REDIS_PASSWORD", "", password, sizeof password, err,
 *                          sizeof err)) ... */
deta_err_t deta_config_secret(const char *name, const char *def, char *dst, size_t dstsize,
                              char *errstr, size_t errsize);

#endif
