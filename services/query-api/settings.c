/*
 * settings.c - reads query-api's variables (settings.h) through deta_config (so
 * they are validated like the library's own).
 *
 * The Cassandra password is a secret: a value that is refused is wiped, and the
 * error says what is wrong with it without echoing it. (The operator token is
 * libdeta's setting, OPERATOR_TOKEN: deta/config.h.)
 *
 * The Cassandra keyspace and data center are written into CQL text (CREATE
 * KEYSPACE, the tables' names), so they are held to the characters an unquoted
 * identifier and a plain string may have: nothing a setting says can change a
 * statement's meaning.
 */
#include "settings.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "deta/config.h"
#include "deta/cql.h"
#include "deta/http_cors.h"
#include "deta/kafka.h"

/* ---- the Cassandra store ---- */

/* A text variable copied into dst; def when unset or empty. */
static deta_err_t load_text(const char *name, const char *def, char *dst, size_t size,
                            char *errstr, size_t errsize) {
    const char *v = deta_config_str(name, def);
    if (strlen(v) >= size)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "%s: longer than %zu bytes", name,
                         size - 1);
    memcpy(dst, v, strlen(v) + 1);
    return DETA_OK;
}

/* Every character of v is one of `allowed` or alphanumeric. */
static bool made_of(const char *v, const char *allowed) {
    for (; *v; v++)
        if (!isalnum((unsigned char)*v) && !strchr(allowed, *v))
            return false;
    return true;
}

/* host[:port] entries separated by commas, none empty. */
static deta_err_t check_contact_points(const char *v, char *errstr, size_t errsize) {
    static const char name[] = "CASSANDRA_CONTACT_POINTS";
    if (!v[0])
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "%s: required with QUERY_STORE=cassandra (host[:port],...)", name);
    if (!made_of(v, ".-_:,[]"))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "%s: only host names, addresses, ports and commas", name);
    if (v[0] == ',' || v[strlen(v) - 1] == ',' || strstr(v, ",,"))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "%s: an empty entry", name);
    return DETA_OK;
}

/* An unquoted identifier that means itself: a-z first, then a-z 0-9 _. */
static deta_err_t check_keyspace(const char *v, char *errstr, size_t errsize) {
    bool ok = v[0] >= 'a' && v[0] <= 'z';
    for (const char *p = v; ok && *p; p++)
        ok = (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_';
    if (!ok)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "CASSANDRA_KEYSPACE: a lower-case letter, then a-z 0-9 _ "
                         "(at most %d)", QUERY_CASSANDRA_KEYSPACE_MAX);
    return DETA_OK;
}

typedef enum consistency_use { FOR_READ, FOR_WRITE, FOR_SERIAL } consistency_use_t;

/* A consistency level's name, among those that make sense for its use: SERIAL
 * and LOCAL_SERIAL are the Paxos levels (and may also serve reads); ANY and
 * EACH_QUORUM are write levels only. */
static deta_err_t load_consistency(const char *name, const char *def, consistency_use_t use,
                                   int *dst, char *errstr, size_t errsize) {
    const char *v = deta_config_str(name, def);
    int c = deta_cql_consistency_parse(v);
    bool serial = c == DETA_CQL_SERIAL || c == DETA_CQL_LOCAL_SERIAL;
    bool ok = c >= 0 && (use == FOR_SERIAL  ? serial
                         : use == FOR_WRITE ? !serial && c != DETA_CQL_ANY
                                            : c != DETA_CQL_ANY && c != DETA_CQL_EACH_QUORUM);
    if (!ok)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "%s: \"%.32s\" is not %s", name, v,
                         use == FOR_SERIAL  ? "SERIAL or LOCAL_SERIAL"
                         : use == FOR_WRITE ? "a write consistency level (ONE, QUORUM, "
                                              "LOCAL_QUORUM, ...)"
                                            : "a read consistency level (ONE, QUORUM, "
                                              "LOCAL_QUORUM, ...)");
    *dst = c;
    return DETA_OK;
}

static deta_err_t load_int(const char *name, long def, long min, long max, int *dst,
                           char *errstr, size_t errsize) {
    long v;
    deta_err_t err = deta_config_int(name, def, min, max, &v, errstr, errsize);
    if (err == DETA_OK)
        *dst = (int)v;
    return err;
}

static deta_err_t load_credentials(query_cassandra_settings_t *c, char *errstr,
                                   size_t errsize) {
    deta_err_t err = load_text("CASSANDRA_USERNAME", "", c->username, sizeof c->username,
                               errstr, errsize);
    if (err)
        return err;
    /* CASSANDRA_PASSWORD or CASSANDRA_PASSWORD_FILE (deta/config.h). */
    err = deta_config_secret("CASSANDRA_PASSWORD", "", c->password, sizeof c->password, errstr,
                             errsize);
    if (err)
        return err;
    if (!c->username[0] != !c->password[0]) {
        memset(c->password, 0, sizeof c->password);
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "CASSANDRA_USERNAME and CASSANDRA_PASSWORD: set both or neither");
    }
    return DETA_OK;
}

static deta_err_t load_replication(query_cassandra_settings_t *c, char *errstr,
                                   size_t errsize) {
    const char *cls = deta_config_str("CASSANDRA_REPLICATION_CLASS", "SimpleStrategy");
    if (strcmp(cls, "NetworkTopologyStrategy") == 0)
        c->network_topology = true;
    else if (strcmp(cls, "SimpleStrategy") != 0)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "CASSANDRA_REPLICATION_CLASS: \"%.40s\" is not SimpleStrategy or "
                         "NetworkTopologyStrategy", cls);
    return load_int("CASSANDRA_REPLICATION_FACTOR", 1, 1, 32, &c->replication_factor, errstr,
                    errsize);
}

deta_err_t query_cassandra_settings_load(query_cassandra_settings_t *c, char *errstr,
                                         size_t errsize) {
    memset(c, 0, sizeof *c);
    deta_err_t err;
    if ((err = load_text("CASSANDRA_CONTACT_POINTS", "", c->contact_points,
                         sizeof c->contact_points, errstr, errsize)) ||
        (err = check_contact_points(c->contact_points, errstr, errsize)) ||
        (err = load_int("CASSANDRA_PORT", 9042, 1, 65535, &c->port, errstr, errsize)) ||
        (err = load_credentials(c, errstr, errsize)) ||
        (err = load_text("CASSANDRA_KEYSPACE", "delivery_query", c->keyspace,
                         sizeof c->keyspace, errstr, errsize)) ||
        (err = check_keyspace(c->keyspace, errstr, errsize)) ||
        (err = load_text("CASSANDRA_LOCAL_DC", "dc1", c->local_dc, sizeof c->local_dc, errstr,
                         errsize)))
        goto fail;
    if (!made_of(c->local_dc, "-_.")) {
        err = deta_errf(DETA_ERR_INVALID, errstr, errsize,
                        "CASSANDRA_LOCAL_DC: only A-Z a-z 0-9 - _ .");
        goto fail;
    }
    if ((err = load_replication(c, errstr, errsize)) ||
        (err = load_consistency("CASSANDRA_READ_CONSISTENCY", "LOCAL_QUORUM", FOR_READ,
                                &c->read_consistency, errstr, errsize)) ||
        (err = load_consistency("CASSANDRA_WRITE_CONSISTENCY", "LOCAL_QUORUM", FOR_WRITE,
                                &c->write_consistency, errstr, errsize)) ||
        (err = load_consistency("CASSANDRA_SERIAL_CONSISTENCY", "LOCAL_SERIAL", FOR_SERIAL,
                                &c->serial_consistency, errstr, errsize)) ||
        (err = load_int("CASSANDRA_REQUEST_TIMEOUT_MS", 12000, 100, 600000,
                        &c->request_timeout_ms, errstr, errsize)))
        goto fail;
    return DETA_OK;
fail:
    memset(c->password, 0, sizeof c->password);
    return err;
}

static deta_err_t load_store(query_settings_t *s, char *errstr, size_t errsize) {
    const char *v = deta_config_str("QUERY_STORE", "postgres");
    if (strcmp(v, "postgres") == 0)
        s->store = QUERY_STORE_POSTGRES;
    else if (strcmp(v, "cassandra") == 0)
        s->store = QUERY_STORE_CASSANDRA;
    else
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "QUERY_STORE: \"%.32s\" is not postgres or cassandra", v);
    if (s->store == QUERY_STORE_CASSANDRA)
        return query_cassandra_settings_load(&s->cassandra, errstr, errsize);
    return DETA_OK;
}

static deta_err_t load_long(const char *name, long def, long min, long max, long *dst,
                            char *errstr, size_t errsize) {
    return deta_config_int(name, def, min, max, dst, errstr, errsize);
}

static deta_err_t load_stream(query_stream_settings_t *st, char *errstr, size_t errsize) {
    deta_err_t err;
    if ((err = load_int("QUERY_STREAM_MAX", 256, 1, 10000, &st->max, errstr, errsize)) ||
        (err = load_long("QUERY_STREAM_BUFFER_BYTES", 262144, 4096, 67108864,
                         &st->buffer_bytes, errstr, errsize)) ||
        (err = load_int("QUERY_STREAM_HEARTBEAT_S", 15, 1, 300, &st->heartbeat_s, errstr,
                        errsize)) ||
        (err = load_long("QUERY_STREAM_GAP_MS", 10000, 0, 60000, &st->gap_ms, errstr,
                         errsize)) ||
        (err = load_long("QUERY_STREAM_BACKLOG_MAX", 10000, 1, 1000000, &st->backlog_max,
                         errstr, errsize)))
        return err;
    return load_long("QUERY_STREAM_RETENTION_HOURS", 24, 1, 8760, &st->retention_hours,
                     errstr, errsize);
}

/* ---- the console ---- */

/* An origin the browser reaches (the same syntax as HTTP_CORS_ORIGINS' entries). */
static deta_err_t load_origin(const char *name, char *dst, size_t size, char *errstr,
                              size_t errsize) {
    deta_err_t err = load_text(name, "", dst, size, errstr, errsize);
    const char *why = NULL;
    if (err || !dst[0] || deta_cors_origin_valid(dst, strlen(dst), &why))
        return err;
    dst[0] = '\0';
    return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                     "%s: %s; want an origin such as http://localhost:8081", name, why);
}

deta_err_t query_console_settings_load(query_console_settings_t *c, char *errstr,
                                       size_t errsize) {
    memset(c, 0, sizeof *c);
    deta_err_t err;
    if ((err = load_text("QUERY_CONSOLE_DIR", "", c->dir, sizeof c->dir, errstr, errsize)))
        return err;
    struct stat st;
    if (c->dir[0] && (stat(c->dir, &st) != 0 || !S_ISDIR(st.st_mode))) {
        c->dir[0] = '\0';
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "QUERY_CONSOLE_DIR: not a directory");
    }
    if ((err = load_origin("QUERY_CONSOLE_ORDER_URL", c->order_url, sizeof c->order_url, errstr,
                           errsize)))
        return err;
    return load_origin("QUERY_CONSOLE_INVENTORY_URL", c->inventory_url, sizeof c->inventory_url,
                       errstr, errsize);
}

bool query_console_csp(const query_console_settings_t *c, char *buf, size_t size) {
    int n = snprintf(buf, size,
                     "default-src 'self'; script-src 'self'; style-src 'self'; "
                     "img-src 'self' data:; connect-src 'self'%s%s%s%s; "
                     "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
                     c->order_url[0] ? " " : "", c->order_url,
                     c->inventory_url[0] ? " " : "", c->inventory_url);
    return n > 0 && (size_t)n < size;
}

deta_err_t query_settings_load(query_settings_t *s, char *errstr, size_t errsize) {
    memset(s, 0, sizeof *s);
    long workers;
    deta_err_t err = deta_config_int("QUERY_API_CONSUMER_WORKERS", 2, 1, 32, &workers, errstr,
                                     errsize);
    if (err)
        return err;
    s->consumer_workers = (int)workers;
    long wait_ms;
    err = deta_config_int("QUERY_API_BATCH_WAIT_MS", 20, 0, DETA_KAFKA_BATCH_WAIT_MAX_MS, &wait_ms,
                          errstr, errsize);
    if (err)
        return err;
    s->batch_wait_ms = (int)wait_ms;
    err = load_stream(&s->stream, errstr, errsize);
    if (err)
        return err;
    err = load_store(s, errstr, errsize);
    if (!err)
        err = query_console_settings_load(&s->console, errstr, errsize);
    if (err) {
        memset(s->cassandra.password, 0, sizeof s->cassandra.password);
    }
    return err;
}
