/*
 * fuzz_settings.c - libFuzzer target of settings values: every variable the
 * library (lib/src/config.c) and the services (their settings.c, with the pure
 * parsers behind them: the catalog, the decline rules, origins, consistencies,
 * Cassandra's contact points ...) read at start. An input's first byte picks a
 * variable, the rest is its value (cut at a NUL: an environment value is a C
 * string), set with setenv; then the loader that reads it runs as a service's
 * start does. Every other variable is unset, so their defaults stand.
 *
 * Checks what must hold whatever the value, besides memory safety and no leak:
 *   - a refused value gives an error that names the variable;
 *   - a refused secret (the passwords and tokens: PGPASSWORD, OPERATOR_TOKEN, ...) is
 *     never quoted in the error. A secret may spell words the message has anyway
 *     (KAFKA_SASL_PASSWORD=SASL_SSL, refused because the protocol is not SASL_SSL):
 *     text found in the error is a leak only when it goes away with the secret,
 *     that is when the same variable set to a stand-in of the same shape (letters,
 *     digits and a token's punctuation rotated, the rest kept) gives an error
 *     without it. A value the rotation leaves alone is checked strictly;
 *   - the library's integer variables, when accepted, are decimal digits (with
 *     an optional '-') of the value loaded; its switches one of on/off, true/false,
 *     yes/no, 1/0 in any case; its texts kept whole.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "delivery-service/settings.h"
#include "deta/config.h"
#include "fuzz.h"
#include "inventory-service/settings.h"
#include "order-service/settings.h"
#include "payment-service/settings.h"
#include "query-api/settings.h"

typedef enum loader { LIBRARY, ORDER, PAYMENT, INVENTORY, DELIVERY, QUERY } loader_t;
typedef enum kind { OTHER, INT, LONG, BOOL, TEXT, SECRET } kind_t;

typedef struct var {
    const char *name;
    loader_t loader;
    kind_t kind;
    size_t offset; /* in deta_config_t, for the library's INT, LONG, BOOL, TEXT */
} var_t;

#define LIB(name, kind, member) {name, LIBRARY, kind, offsetof(deta_config_t, member)}
static const var_t vars[] = {
    LIB("INSTANCE_ID", TEXT, instance_id),
    LIB("KAFKA_BOOTSTRAP_SERVERS", TEXT, kafka_bootstrap),
    LIB("KAFKA_SESSION_TIMEOUT_MS", INT, kafka_session_timeout_ms),
    LIB("KAFKA_FETCH_WAIT_MAX_MS", INT, kafka_fetch_wait_max_ms),
    LIB("KAFKA_STATIC_MEMBERSHIP", BOOL, kafka_static_membership),
    LIB("PGHOST", TEXT, pg_host),
    LIB("PGPORT", INT, pg_port),
    LIB("PGUSER", TEXT, pg_user),
    LIB("PGPASSWORD", SECRET, pg_password),
    LIB("PGDATABASE", TEXT, pg_database),
    LIB("PG_PREPARED_STATEMENTS", BOOL, pg_prepared_statements),
    LIB("PG_STATEMENT_TIMEOUT_MS", INT, pg_statement_timeout_ms),
    LIB("PG_LOCK_TIMEOUT_MS", INT, pg_lock_timeout_ms),
    LIB("REDIS_HOST", TEXT, redis_host),
    LIB("REDIS_PORT", INT, redis_port),
    LIB("HTTP_PORT", INT, http_port),
    LIB("OPERATOR_TOKEN", SECRET, auth.operator_token),
    LIB("READER_TOKEN", SECRET, auth.reader_token),
    LIB("HTTP_READS_NEED_AUTH", OTHER, auth),
    LIB("REDIS_USERNAME", OTHER, redis_username),
    LIB("REDIS_PASSWORD", SECRET, redis_password),
    LIB("PGSSLMODE", OTHER, pg_sslmode),
    {"PGSSLROOTCERT", LIBRARY, OTHER, 0},
    LIB("HTTP_MAX_CONNECTIONS", INT, http_max_connections),
    LIB("HTTP_MAX_CONNECTIONS_PER_CLIENT", INT, http_max_connections_per_client),
    {"HTTP_HEADER_TIMEOUT_MS", LIBRARY, OTHER, 0},
    {"HTTP_BODY_TIMEOUT_MS", LIBRARY, OTHER, 0},
    {"HTTP_HEADER_LIMIT", LIBRARY, OTHER, 0},
    {"KAFKA_SECURITY_PROTOCOL", LIBRARY, OTHER, 0},
    {"KAFKA_SASL_MECHANISM", LIBRARY, OTHER, 0},
    LIB("KAFKA_SASL_PASSWORD", SECRET, kafka_security.sasl_password),
    LIB("KAFKA_SSL_KEY_PASSWORD", SECRET, kafka_security.ssl_key_password),
    LIB("HTTP_BODY_LIMIT", LONG, http_body_limit),
    LIB("HTTP_THREADS", INT, http_threads),
    LIB("HTTP_CORS_ORIGINS", TEXT, http_cors_origins),
    LIB("LOG_LEVEL", OTHER, log_level),
    LIB("OUTBOX_RETENTION_S", LONG, outbox_retention_s),
    LIB("INBOX_RETENTION_HOURS", LONG, inbox_retention_hours),
    LIB("DETA_SHUTDOWN_TIMEOUT_MS", INT, shutdown_timeout_ms),
    {"OTEL_EXPORTER_OTLP_ENDPOINT", LIBRARY, OTHER, 0},
    {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", LIBRARY, OTHER, 0},
    {"OTEL_EXPORTER_OTLP_PROTOCOL", LIBRARY, OTHER, 0},
    LIB("OTEL_EXPORTER_OTLP_TIMEOUT", INT, trace.export_timeout_ms),
    LIB("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", INT, trace.export_timeout_ms),
    LIB("OTEL_SERVICE_NAME", TEXT, trace.service_name),
    {"OTEL_TRACES_SAMPLER", LIBRARY, OTHER, 0},
    {"OTEL_TRACES_SAMPLER_ARG", LIBRARY, OTHER, 0},
    {"OTEL_TRACES_EXPORTER", LIBRARY, OTHER, 0},
    {"OTEL_SDK_DISABLED", LIBRARY, OTHER, 0},
    LIB("OTEL_BSP_MAX_QUEUE_SIZE", INT, trace.max_queue),
    LIB("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", INT, trace.max_batch),
    LIB("OTEL_BSP_SCHEDULE_DELAY", INT, trace.schedule_delay_ms),
    {"ORDER_IDEMPOTENCY_TTL_HOURS", ORDER, OTHER, 0},
    {"PAYMENT_DECLINE_ABOVE", PAYMENT, OTHER, 0},
    {"PAYMENT_DECLINE_CUSTOMERS", PAYMENT, OTHER, 0},
    {"PAYMENT_DECLINE_RATE", PAYMENT, OTHER, 0},
    {"PAYMENT_DECLINE_SEED", PAYMENT, OTHER, 0},
    {"PAYMENT_GATEWAY_LATENCY_MS", PAYMENT, OTHER, 0},
    {"PAYMENT_GATEWAY_LEDGER", PAYMENT, OTHER, 0},
    {"PAYMENT_WORKERS", PAYMENT, OTHER, 0},
    {"PAYMENT_DB_CONNECTIONS", PAYMENT, OTHER, 0},
    {"INVENTORY_CATALOG", INVENTORY, OTHER, 0},
    {"INVENTORY_HOLD_TTL_S", INVENTORY, OTHER, 0},
    {"INVENTORY_HOLD_GRACE_S", INVENTORY, OTHER, 0},
    {"DELIVERY_CLOCK_SPEED", DELIVERY, OTHER, 0},
    {"DELIVERY_DRIVERS", DELIVERY, OTHER, 0},
    {"DELIVERY_DRIVER_CAPACITY", DELIVERY, OTHER, 0},
    {"DELIVERY_PICKUP_MINUTES", DELIVERY, OTHER, 0},
    {"DELIVERY_SPEED_KMH", DELIVERY, OTHER, 0},
    {"DELIVERY_TICK_MS", DELIVERY, OTHER, 0},
    {"QUERY_API_CONSUMER_WORKERS", QUERY, OTHER, 0},
    {"QUERY_STORE", QUERY, OTHER, 0},
    {"QUERY_STREAM_BACKLOG_MAX", QUERY, OTHER, 0},
    {"QUERY_STREAM_BUFFER_BYTES", QUERY, OTHER, 0},
    {"QUERY_STREAM_GAP_MS", QUERY, OTHER, 0},
    {"QUERY_STREAM_HEARTBEAT_S", QUERY, OTHER, 0},
    {"QUERY_STREAM_MAX", QUERY, OTHER, 0},
    {"QUERY_STREAM_RETENTION_HOURS", QUERY, OTHER, 0},
    {"QUERY_CONSOLE_DIR", QUERY, OTHER, 0},
    {"QUERY_CONSOLE_INVENTORY_URL", QUERY, OTHER, 0},
    {"QUERY_CONSOLE_ORDER_URL", QUERY, OTHER, 0},
    {"CASSANDRA_CONTACT_POINTS", QUERY, OTHER, 0},
    {"CASSANDRA_KEYSPACE", QUERY, OTHER, 0},
    {"CASSANDRA_LOCAL_DC", QUERY, OTHER, 0},
    {"CASSANDRA_USERNAME", QUERY, OTHER, 0},
    {"CASSANDRA_PASSWORD", QUERY, SECRET, 0},
    {"CASSANDRA_PORT", QUERY, OTHER, 0},
    {"CASSANDRA_READ_CONSISTENCY", QUERY, OTHER, 0},
    {"CASSANDRA_WRITE_CONSISTENCY", QUERY, OTHER, 0},
    {"CASSANDRA_SERIAL_CONSISTENCY", QUERY, OTHER, 0},
    {"CASSANDRA_REPLICATION_CLASS", QUERY, OTHER, 0},
    {"CASSANDRA_REPLICATION_FACTOR", QUERY, OTHER, 0},
    {"CASSANDRA_REQUEST_TIMEOUT_MS", QUERY, OTHER, 0},
    LIB("KAFKA_STATISTICS_INTERVAL_MS", INT, kafka_statistics_interval_ms),
    {"QUERY_API_BATCH_WAIT_MS", QUERY, OTHER, 0},
    {"ORDER_BATCH_WAIT_MS", ORDER, OTHER, 0},
};
#undef LIB
#define NVARS (sizeof vars / sizeof *vars)

/* Decimal digits with an optional leading '-', the plain way. */
static bool decimal(const char *s, long *out) {
    const char *p = *s == '-' ? s + 1 : s;
    if (!*p || strspn(p, "0123456789") != strlen(p))
        return false;
    *out = strtol(s, NULL, 10);
    return true;
}

static void check_library(const var_t *var, const char *value, const deta_config_t *cfg) {
    const char *field = (const char *)cfg + var->offset;
    long n;
    switch (var->kind) {
    case INT:
        FUZZ_CHECK(decimal(value, &n) && n == *(const int *)(const void *)field);
        break;
    case LONG:
        FUZZ_CHECK(decimal(value, &n) && n == *(const long *)(const void *)field);
        break;
    case BOOL: {
        static const char *const words[] = {"on", "true", "yes", "1", "off", "false", "no", "0"};
        int found = -1;
        for (int i = 0; i < 8; i++)
            if (strcasecmp(value, words[i]) == 0)
                found = i;
        FUZZ_CHECK(found >= 0 && *(const bool *)(const void *)field == (found < 4));
        break;
    }
    case TEXT:
    case SECRET:
        FUZZ_CHECK(strcmp(field, value) == 0);
        break;
    case OTHER:
        break;
    }
}

static deta_err_t load(const var_t *var, const char *value, char *err, size_t errsize) {
    deta_err_t rc = DETA_ERR_INTERNAL;
    switch (var->loader) {
    case LIBRARY: {
        deta_config_t cfg;
        rc = deta_config_load(&cfg, "fuzz", err, errsize);
        if (rc == DETA_OK && value[0])
            check_library(var, value, &cfg);
        break;
    }
    case ORDER: {
        order_settings_t s;
        rc = order_settings_load(&s, err, errsize);
        break;
    }
    case PAYMENT: {
        payment_settings_t s;
        rc = payment_settings_load(&s, err, errsize);
        break;
    }
    case INVENTORY: {
        inv_settings_t s;
        inv_catalog_t c;
        memset(&c, 0, sizeof c);
        rc = inv_settings_load(&s, &c, err, errsize);
        inv_catalog_clear(&c);
        break;
    }
    case DELIVERY: {
        delivery_params_t p;
        rc = delivery_settings_load(&p, err, errsize);
        break;
    }
    case QUERY: {
        query_settings_t *s = calloc(1, sizeof *s);
        FUZZ_CHECK(s != NULL);
        rc = query_settings_load(s, err, errsize);
        free(s);
        break;
    }
    }
    return rc;
}

/* A stand-in for a secret that a loader treats alike: the same length and the
 * same kind of character at each place (letters rot13, digits rotated by 5, the
 * punctuation a token may hold rotated among itself). */
static char *stand_in(const char *value) {
    static const char token_punct[] = "-._~+/=";
    char *s = strdup(value);
    FUZZ_CHECK(s != NULL);
    for (char *p = s; *p; p++) {
        const char *t = *p ? strchr(token_punct, *p) : NULL;
        if (t)
            *p = token_punct[(size_t)(t - token_punct + 1) % (sizeof token_punct - 1)];
        else if (*p >= 'a' && *p <= 'z')
            *p = (char)('a' + (*p - 'a' + 13) % 26);
        else if (*p >= 'A' && *p <= 'Z')
            *p = (char)('A' + (*p - 'A' + 13) % 26);
        else if (*p >= '0' && *p <= '9')
            *p = (char)('0' + (*p - '0' + 5) % 10);
    }
    return s;
}

/* Whether the error err, given for the secret variable var set to value, quotes
 * the secret: value is in err and not in the error the stand-in gives. */
static bool quotes_secret(const var_t *var, const char *value, const char *err) {
    if (strstr(err, value) == NULL)
        return false;
    char *other = stand_in(value);
    if (strcmp(other, value) == 0) {
        free(other);
        return true;
    }
    FUZZ_CHECK(setenv(var->name, other, 1) == 0);
    char err2[512] = "";
    deta_err_t rc = load(var, other, err2, sizeof err2);
    FUZZ_CHECK(setenv(var->name, value, 1) == 0);
    free(other);
    return rc == DETA_OK || strstr(err2, value) == NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    const var_t *var = &vars[data[0] % NVARS];
    char *value = fuzz_text(data + 1, size - 1);
    for (size_t i = 0; i < NVARS; i++)
        unsetenv(vars[i].name);
    FUZZ_CHECK(setenv(var->name, value, 1) == 0);
    char err[512] = "";
    deta_err_t rc = load(var, value, err, sizeof err);
    if (rc != DETA_OK) {
        FUZZ_CHECK(strstr(err, var->name) != NULL);
        if (var->kind == SECRET && strlen(value) >= 6)
            FUZZ_CHECK(!quotes_secret(var, value, err));
    }
    unsetenv(var->name);
    free(value);
    return 0;
}
