/*
 * config.c - settings from environment variables, read in one place
 * (see deta/config.h).
 *
 * Design: twelve-factor style, a flat set of named variables like librdkafka's
 * properties. deta_config_load_service() (deta_config_load() for a program that
 * is no service) is the only place that knows the shared library's variables and
 * their defaults, so the README's table can be checked against one function. Bad values stop the service at start with the variable's
 * name in the message ("HTTP_PORT: \"80x\" is not an integer") instead of being
 * silently replaced by a default: a typo in a deployment should be loud.
 * A value too long for its field is rejected the same way, never truncated.
 *
 * An unset variable and an empty one both mean "use the default", so that
 * `FOO= ./service` behaves like leaving FOO out.
 *
 * The library knows no service: the caller says who it is (deta_service_def_t,
 * from services/services.tsv) and so gives the defaults of HTTP_PORT and
 * PGDATABASE. A service's own settings are read in its settings.c.
 *
 * Secrets (deta_config_secret): a password or token may be set directly (NAME) or
 * as a file (NAME_FILE), the way Docker and Kubernetes hand secrets to a container;
 * never both, so that which one wins is never a question. A secret's value is never
 * part of an error message (only its variable's name, and a file's path), and the
 * buffer a file was read into is wiped before it is freed. The operator and reader
 * tokens (deta/auth.h) are library settings because libdeta's HTTP server enforces
 * them; a deployment gives them only to the services that need them.
 */
#include "deta/config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config_kafka.h"
#include "deta/http_cors.h"
#include "deta/log.h"

const char *deta_config_str(const char *name, const char *def) {
    const char *v = getenv(name);
    return v && *v ? v : def;
}

/* Decimal digits with an optional leading '-': no blanks, no '+', no hex. */
static bool parse_long(const char *s, long *out) {
    const char *p = *s == '-' ? s + 1 : s;
    if (*p < '0' || *p > '9')
        return false;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno == ERANGE || *end != '\0')
        return false;
    *out = v;
    return true;
}

deta_err_t deta_config_int(const char *name, long def, long min, long max, long *out,
                           char *errstr, size_t errsize) {
    const char *v = deta_config_str(name, NULL);
    if (!v) {
        *out = def;
        return DETA_OK;
    }
    long n;
    if (!parse_long(v, &n))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "%s: \"%.64s\" is not an integer",
                         name, v);
    if (n < min || n > max)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "%s: %ld is out of range (%ld..%ld)", name, n, min, max);
    *out = n;
    return DETA_OK;
}

/* A switch: on/off (also true/false, yes/no, 1/0), in any case; def when unset
 * or empty. Anything else is an error naming the variable, never "off". */
static deta_err_t config_bool(const char *name, bool def, bool *dst, char *errstr,
                              size_t errsize) {
    static const char *const yes[] = {"on", "true", "yes", "1"};
    static const char *const no[] = {"off", "false", "no", "0"};
    const char *v = deta_config_str(name, NULL);
    if (!v) {
        *dst = def;
        return DETA_OK;
    }
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++) {
        if (strcasecmp(v, yes[i]) == 0 || strcasecmp(v, no[i]) == 0) {
            *dst = strcasecmp(v, yes[i]) == 0;
            return DETA_OK;
        }
    }
    return deta_errf(DETA_ERR_INVALID, errstr, errsize, "%s: \"%.32s\" is not on or off", name,
                     v);
}

/* v (NULL: "") into dst, or an error naming the variable when it does not fit. */
static deta_err_t copy_value(const char *name, const char *v, char *dst, size_t dstsize,
                             char *errstr, size_t errsize) {
    v = v ? v : "";
    size_t len = strlen(v);
    if (len >= dstsize)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "%s: longer than %zu bytes", name,
                         dstsize - 1);
    memcpy(dst, v, len + 1);
    return DETA_OK;
}

deta_err_t deta_config_text(const char *name, const char *def, char *dst, size_t dstsize,
                            char *errstr, size_t errsize) {
    return copy_value(name, deta_config_str(name, def), dst, dstsize, errstr, errsize);
}

/* deta_config_int into an int field. */
static deta_err_t config_int(const char *name, long def, long min, long max, int *dst,
                             char *errstr, size_t errsize) {
    long v;
    deta_err_t err = deta_config_int(name, def, min, max, &v, errstr, errsize);
    if (err == DETA_OK)
        *dst = (int)v;
    return err;
}

/* ---- secrets ---- */

/* Reads path (a regular file) into a malloc'd buffer of at most max bytes; *len its
 * length. DETA_ERR_INVALID naming var when it cannot be read or is longer (said as
 * longer than limit bytes, the value's own bound). */
static deta_err_t read_secret_file(const char *var, const char *path, size_t max, size_t limit,
                                   char **out, size_t *len, char *errstr, size_t errsize) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "%s: cannot read %.200s: %s", var,
                         path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "%s: %.200s is not a regular file",
                         var, path);
    }
    char *buf = malloc(max + 1);
    if (!buf) {
        close(fd);
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "%s: out of memory", var);
    }
    size_t n = 0;
    int saved = 0;
    while (n <= max) {
        ssize_t got = read(fd, buf + n, max + 1 - n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            saved = errno;
        if (got <= 0)
            break;
        n += (size_t)got;
    }
    close(fd);
    if (saved || n > max) {
        explicit_bzero(buf, max + 1);
        free(buf);
        if (saved)
            return deta_errf(DETA_ERR_INVALID, errstr, errsize, "%s: cannot read %.200s: %s",
                             var, path, strerror(saved));
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "%s: %.200s is longer than %zu bytes", var, path, limit);
    }
    *out = buf;
    *len = n;
    return DETA_OK;
}

deta_err_t deta_config_secret(const char *name, const char *def, char *dst, size_t dstsize,
                              char *errstr, size_t errsize) {
    if (dstsize == 0)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "%s: no room", name);
    dst[0] = '\0';
    char file_var[128];
    if (snprintf(file_var, sizeof file_var, "%s_FILE", name) >= (int)sizeof file_var)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "%.64s: name too long", name);
    const char *value = deta_config_str(name, NULL);
    const char *path = deta_config_str(file_var, NULL);
    if (value && path)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "%s and %s are both set: set one of them", name, file_var);
    if (!path)
        return copy_value(name, value ? value : def, dst, dstsize, errstr, errsize);
    /* Room for the value and a trailing "\r\n". */
    char *buf = NULL;
    size_t len = 0;
    deta_err_t err =
        read_secret_file(file_var, path, dstsize + 1, dstsize - 1, &buf, &len, errstr, errsize);
    if (err)
        return err;
    size_t n = len;
    if (n > 0 && buf[n - 1] == '\n') {
        n--;
        if (n > 0 && buf[n - 1] == '\r')
            n--;
    }
    if (memchr(buf, '\0', n))
        err = deta_errf(DETA_ERR_INVALID, errstr, errsize, "%s: %.200s holds a NUL byte",
                        file_var, path);
    else if (n >= dstsize)
        err = deta_errf(DETA_ERR_INVALID, errstr, errsize, "%s: %.200s is longer than %zu bytes",
                        file_var, path, dstsize - 1);
    else if (n == 0)
        err = copy_value(name, def, dst, dstsize, errstr, errsize);
    else {
        memcpy(dst, buf, n);
        dst[n] = '\0';
    }
    explicit_bzero(buf, len);
    free(buf);
    return err;
}

static deta_err_t load_identity(deta_config_t *cfg, const char *service, char *errstr,
                                size_t errsize) {
    if (!service || !*service)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "service name: empty");
    if (strlen(service) >= sizeof cfg->service)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "service name: longer than %zu bytes",
                         sizeof cfg->service - 1);
    strcpy(cfg->service, service);
    char def[sizeof cfg->instance_id];
    snprintf(def, sizeof def, "%s-%ld", service, (long)getpid());
    return deta_config_text("INSTANCE_ID", def, cfg->instance_id, sizeof cfg->instance_id, errstr,
                       errsize);
}

/* Static membership needs an instance id that survives a restart: one set in
 * INSTANCE_ID (a pod's name, say), not the pid-based default, and one Kafka
 * accepts in a group.instance.id. */
static deta_err_t load_static_membership(deta_config_t *cfg, char *errstr, size_t errsize) {
    deta_err_t err = config_bool("KAFKA_STATIC_MEMBERSHIP", false, &cfg->kafka_static_membership,
                                 errstr, errsize);
    if (err || !cfg->kafka_static_membership)
        return err;
    const char *set = getenv("INSTANCE_ID");
    if (!set || !*set)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "KAFKA_STATIC_MEMBERSHIP: on needs INSTANCE_ID, the same at every start "
                         "of this instance (the default, %s-<pid>, changes)",
                         cfg->service);
    static const char member_chars[] =
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-";
    if (strspn(cfg->instance_id, member_chars) != strlen(cfg->instance_id))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "INSTANCE_ID: with KAFKA_STATIC_MEMBERSHIP on, only letters, digits, "
                         "'.', '_' and '-' (it names the group member)");
    return DETA_OK;
}

static deta_err_t load_kafka(deta_config_t *cfg, char *errstr, size_t errsize) {
    deta_err_t err = deta_config_text("KAFKA_BOOTSTRAP_SERVERS", "localhost:9092",
                                 cfg->kafka_bootstrap, sizeof cfg->kafka_bootstrap, errstr,
                                 errsize);
    if (err)
        return err;
    if ((err = config_int("KAFKA_SESSION_TIMEOUT_MS", 45000, 1000, 300000,
                          &cfg->kafka_session_timeout_ms, errstr, errsize)))
        return err;
    if ((err = config_int("KAFKA_FETCH_WAIT_MAX_MS", 500, 1, 500, &cfg->kafka_fetch_wait_max_ms,
                          errstr, errsize)))
        return err;
    if ((err = config_int("KAFKA_STATISTICS_INTERVAL_MS", 5000, 0, 3600000,
                          &cfg->kafka_statistics_interval_ms, errstr, errsize)))
        return err;
    if (cfg->kafka_statistics_interval_ms > 0 && cfg->kafka_statistics_interval_ms < 1000)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "KAFKA_STATISTICS_INTERVAL_MS must be 0 (off) or 1000..3600000 "
                         "(librdkafka's statistics come by the second), not %d",
                         cfg->kafka_statistics_interval_ms);
    if ((err = load_static_membership(cfg, errstr, errsize)))
        return err;
    /* The transport (protocol, SASL, TLS): config_kafka.c. */
    return deta_config_load_kafka_security(&cfg->kafka_security, errstr, errsize);
}

static deta_err_t load_postgres(deta_config_t *cfg, const char *database, char *errstr,
                                size_t errsize) {
    deta_err_t err;
    if ((err = deta_config_text("PGHOST", "localhost", cfg->pg_host, sizeof cfg->pg_host, errstr,
                           errsize)) ||
        (err = config_int("PGPORT", 5432, 1, 65535, &cfg->pg_port, errstr, errsize)) ||
        (err = deta_config_text("PGUSER", "postgres", cfg->pg_user, sizeof cfg->pg_user, errstr,
                           errsize)) ||
        (err = deta_config_secret("PGPASSWORD", "postgres", cfg->pg_password,
                                  sizeof cfg->pg_password, errstr, errsize)) ||
        (err = config_bool("PG_PREPARED_STATEMENTS", true, &cfg->pg_prepared_statements,
                           errstr, errsize)) ||
        (err = config_int("PG_STATEMENT_TIMEOUT_MS", 30000, 0, 3600000,
                          &cfg->pg_statement_timeout_ms, errstr, errsize)) ||
        (err = config_int("PG_LOCK_TIMEOUT_MS", 10000, 0, 3600000, &cfg->pg_lock_timeout_ms,
                          errstr, errsize)))
        return err;
    return deta_config_text("PGDATABASE", database ? database : "postgres", cfg->pg_database,
                       sizeof cfg->pg_database, errstr, errsize);
}

/* A file setting: copied like a string, and when set, readable now, so that a
 * wrong path stops the service at start rather than failing every connection. */
static deta_err_t config_file(const char *name, char *dst, size_t dstsize, char *errstr,
                              size_t errsize) {
    deta_err_t err = deta_config_text(name, "", dst, dstsize, errstr, errsize);
    if (err || !dst[0])
        return err;
    if (access(dst, R_OK) != 0)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "%s: cannot read \"%.200s\": %s",
                         name, dst, strerror(errno));
    return DETA_OK;
}

/* Postgres's transport: libpq's sslmode and certificate files (db_params.c
 * passes them to libpq). Unset, the mode is verify-full when a CA is given (a
 * CA is only worth giving to check the server against it), else libpq's own
 * prefer (TLS when the server offers it, without checking who it is). */
static deta_err_t load_postgres_tls(deta_config_t *cfg, char *errstr, size_t errsize) {
    static const char *const modes[] = {"disable", "allow",     "prefer",
                                        "require", "verify-ca", "verify-full"};
    deta_err_t err;
    if ((err = config_file("PGSSLROOTCERT", cfg->pg_sslrootcert, sizeof cfg->pg_sslrootcert,
                           errstr, errsize)) ||
        (err = config_file("PGSSLCERT", cfg->pg_sslcert, sizeof cfg->pg_sslcert, errstr,
                           errsize)) ||
        (err = config_file("PGSSLKEY", cfg->pg_sslkey, sizeof cfg->pg_sslkey, errstr, errsize)))
        return err;
    const char *mode = deta_config_str("PGSSLMODE", cfg->pg_sslrootcert[0] ? "verify-full"
                                                                            : "prefer");
    bool known = false;
    for (size_t i = 0; i < sizeof modes / sizeof *modes; i++)
        known = known || strcmp(mode, modes[i]) == 0;
    if (!known)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "PGSSLMODE: \"%.32s\" is not one of disable, allow, prefer, require, "
                         "verify-ca, verify-full",
                         mode);
    snprintf(cfg->pg_sslmode, sizeof cfg->pg_sslmode, "%s", mode);
    if (strncmp(mode, "verify-", 7) == 0 && !cfg->pg_sslrootcert[0])
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "PGSSLMODE: %s needs PGSSLROOTCERT (the CA to verify the server with)",
                         mode);
    if (!cfg->pg_sslcert[0] != !cfg->pg_sslkey[0])
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "%s: set without %s (a client certificate needs both)",
                         cfg->pg_sslcert[0] ? "PGSSLCERT" : "PGSSLKEY",
                         cfg->pg_sslcert[0] ? "PGSSLKEY" : "PGSSLCERT");
    return DETA_OK;
}

static deta_err_t load_redis(deta_config_t *cfg, char *errstr, size_t errsize) {
    deta_err_t err = deta_config_text("REDIS_HOST", "localhost", cfg->redis_host,
                                 sizeof cfg->redis_host, errstr, errsize);
    if (err)
        return err;
    if ((err = deta_config_text("REDIS_USERNAME", "", cfg->redis_username,
                           sizeof cfg->redis_username, errstr, errsize)) ||
        (err = deta_config_secret("REDIS_PASSWORD", "", cfg->redis_password,
                                  sizeof cfg->redis_password, errstr, errsize)))
        return err;
    if (cfg->redis_username[0] && !cfg->redis_password[0])
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "REDIS_USERNAME: set without REDIS_PASSWORD");
    return config_int("REDIS_PORT", 6379, 1, 65535, &cfg->redis_port, errstr, errsize);
}

/* The HTTP bounds under abuse (deta/http.h, lib/src/http_guard.c). */
static deta_err_t load_http_bounds(deta_config_t *cfg, char *errstr, size_t errsize) {
    deta_err_t err;
    if ((err = config_int("HTTP_MAX_CONNECTIONS", 4096, 1, 1000000, &cfg->http_max_connections,
                          errstr, errsize)) ||
        (err = config_int("HTTP_MAX_CONNECTIONS_PER_CLIENT", 512, 1, 1000000,
                          &cfg->http_max_connections_per_client, errstr, errsize)) ||
        (err = config_int("HTTP_HEADER_TIMEOUT_MS", 10000, 100, 3600000,
                          &cfg->http_header_timeout_ms, errstr, errsize)) ||
        (err = config_int("HTTP_BODY_TIMEOUT_MS", 30000, 100, 3600000, &cfg->http_body_timeout_ms,
                          errstr, errsize)) ||
        (err = deta_config_int("HTTP_HEADER_LIMIT", 8192, 1024, 1048576, &cfg->http_header_limit,
                               errstr, errsize)))
        return err;
    if (cfg->http_max_connections_per_client > cfg->http_max_connections)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "HTTP_MAX_CONNECTIONS_PER_CLIENT: %d is more than HTTP_MAX_CONNECTIONS (%d)",
                         cfg->http_max_connections_per_client, cfg->http_max_connections);
    return DETA_OK;
}

/* HTTP_PORT defaults to the service's port of docs/contracts.md; for a program that
 * has none (a tool, a test) the default is 0, which asks for an ephemeral port. */
static deta_err_t load_http(deta_config_t *cfg, int port, char *errstr, size_t errsize) {
    deta_err_t err;
    if ((err = config_int("HTTP_PORT", port, 1, 65535,
                          &cfg->http_port, errstr, errsize)) ||
        (err = deta_config_int("HTTP_BODY_LIMIT", 65536, 1024, 67108864, &cfg->http_body_limit,
                               errstr, errsize)))
        return err;
    if ((err = config_int("HTTP_THREADS", 4, 1, 64, &cfg->http_threads, errstr, errsize)) ||
        (err = deta_config_text("HTTP_CORS_ORIGINS", "", cfg->http_cors_origins,
                           sizeof cfg->http_cors_origins, errstr, errsize)))
        return err;
    if ((err = load_http_bounds(cfg, errstr, errsize)))
        return err;
    /* Checked here, so that a bad list stops the service with the others' errors. */
    deta_cors_origins_t origins;
    return deta_cors_origins_parse(cfg->http_cors_origins, "HTTP_CORS_ORIGINS", &origins, errstr,
                                   errsize);
}

/* One of the four level names, in any case; kept in lower case. */
static deta_err_t load_log_level(deta_config_t *cfg, char *errstr, size_t errsize) {
    const char *v = deta_config_str("LOG_LEVEL", "info");
    deta_log_level_t level;
    if (!deta_log_level_parse(v, &level))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "LOG_LEVEL: \"%.32s\" is not one of debug, info, warn, error", v);
    size_t i;
    for (i = 0; v[i] && i < sizeof cfg->log_level - 1; i++)
        cfg->log_level[i] = (char)tolower((unsigned char)v[i]);
    cfg->log_level[i] = '\0';
    return DETA_OK;
}

/* How long the outbox (outbox.c) and the inbox (inbox.c) keep what they hold. */
static deta_err_t load_retention(deta_config_t *cfg, char *errstr, size_t errsize) {
    deta_err_t err = deta_config_int("OUTBOX_RETENTION_S", 3600, 0, 365L * 24 * 3600,
                                     &cfg->outbox_retention_s, errstr, errsize);
    if (err)
        return err;
    return deta_config_int("INBOX_RETENTION_HOURS", 168, 0, 87600, &cfg->inbox_retention_hours,
                           errstr, errsize);
}

/* The bound on a graceful shutdown (service.c). */
static deta_err_t load_shutdown(deta_config_t *cfg, char *errstr, size_t errsize) {
    return config_int("DETA_SHUTDOWN_TIMEOUT_MS", 10000, 1000, 600000, &cfg->shutdown_timeout_ms,
                      errstr, errsize);
}

/* The operator and reader tokens (deta/auth.h) and whether reads need one. */
static deta_err_t load_auth(deta_auth_t *a, char *errstr, size_t errsize) {
    deta_err_t err;
    if ((err = deta_config_secret("OPERATOR_TOKEN", "", a->operator_token,
                                  sizeof a->operator_token, errstr, errsize)) ||
        (err = deta_auth_check_token("OPERATOR_TOKEN", a->operator_token, errstr, errsize)) ||
        (err = deta_config_secret("READER_TOKEN", "", a->reader_token, sizeof a->reader_token,
                                  errstr, errsize)) ||
        (err = deta_auth_check_token("READER_TOKEN", a->reader_token, errstr, errsize)) ||
        (err = config_bool("HTTP_READS_NEED_AUTH", false, &a->reads_need_token, errstr,
                           errsize)))
        return err;
    if (a->operator_token[0] && strcmp(a->operator_token, a->reader_token) == 0)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "OPERATOR_TOKEN and READER_TOKEN are the same: a reader would be an "
                         "operator");
    if (a->reads_need_token && !a->operator_token[0] && !a->reader_token[0])
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "HTTP_READS_NEED_AUTH: on, but neither READER_TOKEN nor "
                         "OPERATOR_TOKEN is set: nothing could read");
    return DETA_OK;
}

deta_err_t deta_config_load_service(deta_config_t *cfg, const deta_service_def_t *def,
                                    char *errstr, size_t errsize) {
    memset(cfg, 0, sizeof *cfg);
    deta_err_t err;
    if ((err = load_identity(cfg, def ? def->name : NULL, errstr, errsize)) ||
        (err = load_kafka(cfg, errstr, errsize)) ||
        (err = load_postgres(cfg, def->database, errstr, errsize)) ||
        (err = load_postgres_tls(cfg, errstr, errsize)) ||
        (err = load_redis(cfg, errstr, errsize)) ||
        (err = load_http(cfg, def->http_port, errstr, errsize)) ||
        (err = load_log_level(cfg, errstr, errsize)) ||
        (err = load_retention(cfg, errstr, errsize)) || (err = load_shutdown(cfg, errstr, errsize)) ||
        (err = load_auth(&cfg->auth, errstr, errsize)) ||
        (err = deta_trace_config_load(&cfg->trace, cfg->service, errstr, errsize))) {
        /* No secret outlives a refused configuration. */
        explicit_bzero(cfg->pg_password, sizeof cfg->pg_password);
        explicit_bzero(cfg->redis_password, sizeof cfg->redis_password);
        deta_auth_wipe(&cfg->auth);
        return err;
    }
    return DETA_OK;
}

deta_err_t deta_config_load(deta_config_t *cfg, const char *name, char *errstr,
                            size_t errsize) {
    const deta_service_def_t def = {name, 0, NULL};
    return deta_config_load_service(cfg, &def, errstr, errsize);
}
