/*
 * testsupport.c - helpers for the integration tests (see testsupport.h).
 *
 * The Kafka reader assigns every partition explicitly from the beginning instead
 * of joining a consumer group: no group join delay, nothing committed, and the
 * services' own groups are untouched. HTTP and the order calls are the clients'
 * library's (lib/client: deta/client.h, deta/client_orders.h), each request on a
 * connection of its own (a wait for orders keeps one for its polls); what is
 * here only turns their answers into the tests' shape and failures.
 */
#include "testsupport.h"

#include <hiredis/hiredis.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <librdkafka/rdkafka.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "deta/client_orders.h"
#include "deta/envelope.h"
#include "deta/kafka.h"
#include "deta/states.h"
#include "deta/topics.h"

const char *ts_env(const char *name) {
    const char *v = getenv(name);
    if (!v || !*v)
        fail_msg("environment variable %s is not set: run the integration tests through "
                 "`make test` (scripts/test.sh), which starts the test stack",
                 name);
    return v;
}

void ts_sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- HTTP ---- */

/* An answer of the clients' library (deta/client.h) as the tests hold it: the
 * body copied out of the handle, the JSON kept only when it is an object or an
 * array (what the tests have always been given). */
static void keep_answer(const deta_client_resp_t *r, ts_http_resp_t *out) {
    out->status = r->status;
    out->body = malloc(r->body_len + 1);
    assert_non_null(out->body);
    memcpy(out->body, r->body, r->body_len + 1);
    out->json = json_is_object(r->json) || json_is_array(r->json) ? json_incref(r->json) : NULL;
}

/* One request to the service at base_var on a connection of its own: headers
 * are the request's lines (NULL-terminated), body may be NULL; resp_headers,
 * when not NULL, receives the answer's header block (malloc'd). Returns 0 when
 * an answer came; otherwise libcurl's code, with out's status 0 and body "". */
static int perform(const char *method, const char *base_var, const char *path,
                   const char *const *headers, const char *body, long timeout_ms,
                   ts_http_resp_t *out, char **resp_headers) {
    char url[1024], err[1200];
    snprintf(url, sizeof url, "%s%s", ts_env(base_var), path);
    deta_client_t *c = deta_client_new(timeout_ms, 0);
    assert_non_null(c);
    deta_client_req_t req = {.method = method, .url = url, .body = body, .headers = headers,
                             .keep_headers = resp_headers != NULL};
    deta_client_resp_t r;
    int error = deta_client_request(c, &req, &r, err, sizeof err) == 0 ? 0 : r.error;
    keep_answer(&r, out);
    if (resp_headers)
        *resp_headers = strdup(r.headers ? r.headers : "");
    deta_client_resp_clear(&r);
    deta_client_free(c);
    return error;
}

/* perform, failing the test when no answer came. */
static void perform_or_fail(const char *method, const char *base_var, const char *path,
                            const char *const *headers, const char *body, long timeout_ms,
                            ts_http_resp_t *out, char **resp_headers) {
    int error = perform(method, base_var, path, headers, body, timeout_ms, out, resp_headers);
    if (error)
        fail_msg("%s %s%s: %s", method, ts_env(base_var), path, deta_client_strerror(error));
}

/* "Content-Type: <type>", or "Content-Type:" (send none at all) for NULL. */
static void content_type_line(const char *content_type, char *line, size_t size) {
    snprintf(line, size, "Content-Type:%s%s", content_type ? " " : "",
             content_type ? content_type : "");
}

void ts_http(const char *method, const char *base_var, const char *path,
             const char *content_type, const char *body, ts_http_resp_t *out) {
    char ct[256];
    content_type_line(content_type, ct, sizeof ct);
    const char *const headers[] = {ct, NULL};
    perform_or_fail(method, base_var, path, headers, body, 30000L, out, NULL);
}

void ts_http_bearer(const char *method, const char *base_var, const char *path,
                    const char *token, const char *content_type, const char *body,
                    ts_http_resp_t *out) {
    char ct[256], *auth = NULL;
    content_type_line(content_type, ct, sizeof ct);
    if (token)
        assert_true(asprintf(&auth, "Authorization: Bearer %s", token) > 0);
    const char *const headers[] = {ct, auth, NULL};
    perform_or_fail(method, base_var, path, headers, body, 30000L, out, NULL);
    free(auth);
}

void ts_http_operator(const char *method, const char *base_var, const char *path,
                      const char *content_type, const char *body, ts_http_resp_t *out) {
    ts_http_bearer(method, base_var, path, ts_env("OPERATOR_TOKEN"), content_type, body, out);
}

void ts_http_resp_free(ts_http_resp_t *r) {
    free(r->body);
    json_decref(r->json);
    memset(r, 0, sizeof *r);
}

void ts_http_headers(const char *method, const char *base_var, const char *path,
                     const char *const *headers, ts_http_resp_t *out, char **resp_headers) {
    size_t n = 0;
    while (headers && headers[n])
        n++;
    const char **lines = calloc(n + 2, sizeof *lines);
    assert_non_null(lines);
    lines[0] = "Content-Type:";
    for (size_t i = 0; i < n; i++)
        lines[i + 1] = headers[i];
    perform_or_fail(method, base_var, path, lines, NULL, 60000L, out, resp_headers);
    free(lines);
}

/* ---- Redis, raw ---- */

redisContext *ts_redis_connect(void) {
    struct timeval tv = {2, 0};
    redisContext *c =
        redisConnectWithTimeout(ts_env("REDIS_HOST"), atoi(ts_env("REDIS_PORT")), tv);
    if (!c || c->err)
        fail_msg("raw Redis connection: %s", c ? c->errstr : "out of memory");
    /* The stack's Redis wants a user (stack.env: the admin's REDIS_USERNAME/_PASSWORD). */
    const char *user = getenv("REDIS_USERNAME"), *pass = getenv("REDIS_PASSWORD");
    if (pass && *pass) {
        const char *argv[] = {"AUTH", user && *user ? user : "default", pass};
        redisReply *reply = redisCommandArgv(c, 3, argv, NULL);
        if (!reply || reply->type == REDIS_REPLY_ERROR)
            fail_msg("raw Redis AUTH as %s: %s", argv[1], reply ? reply->str : c->errstr);
        freeReplyObject(reply);
    }
    return c;
}

void ts_redis_run(const char *fmt, const char *a, const char *b) {
    redisContext *c = ts_redis_connect();
    redisReply *reply = redisCommand(c, fmt, a, b);
    if (!reply || reply->type == REDIS_REPLY_ERROR)
        fail_msg("raw Redis %s: %s", fmt, reply ? reply->str : c->errstr);
    freeReplyObject(reply);
    redisFree(c);
}

char *ts_redis_get(const char *key) {
    redisContext *c = ts_redis_connect();
    redisReply *reply = redisCommand(c, "GET %s", key);
    if (!reply)
        fail_msg("raw Redis GET %s: %s", key, c->errstr);
    char *v = reply->type == REDIS_REPLY_STRING ? strdup(reply->str) : NULL;
    freeReplyObject(reply);
    redisFree(c);
    return v;
}

/* ---- Postgres ---- */

PGconn *ts_pg(const char *dbname) {
    const char *keys[] = {"host", "port", "user", "password", "dbname", NULL};
    const char *vals[] = {ts_env("PGHOST"), ts_env("PGPORT"), ts_env("PGUSER"),
                          ts_env("PGPASSWORD"), dbname, NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 0);
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("cannot connect to Postgres database %s: %s", dbname, PQerrorMessage(c));
    return c;
}

long ts_pg_long(PGconn *c, const char *sql, int nparams, const char *const *params) {
    PGresult *r = PQexecParams(c, sql, nparams, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) < 1)
        fail_msg("query failed: %s: %s", sql, PQerrorMessage(c));
    long v = PQgetisnull(r, 0, 0) ? 0 : atol(PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

long ts_db_long(const char *dbname, const char *sql, const char *param) {
    PGconn *c = ts_pg(dbname);
    const char *params[] = {param};
    long n = ts_pg_long(c, sql, 1, params);
    PQfinish(c);
    return n;
}

/* ---- Kafka ---- */

static rd_kafka_t *reader_new(const char *topic) {
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char group[64];
    snprintf(group, sizeof group, "testsupport-%d", (int)getpid());
    if (rd_kafka_conf_set(conf, "bootstrap.servers", ts_env("KAFKA_BOOTSTRAP_SERVERS"), err,
                          sizeof err) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "group.id", group, err, sizeof err) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof err) !=
            RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "enable.partition.eof", "true", err, sizeof err) !=
            RD_KAFKA_CONF_OK)
        fail_msg("kafka conf: %s", err);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    if (!rk)
        fail_msg("kafka consumer: %s", err);
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_topic_t *t = rd_kafka_topic_new(rk, topic, NULL);
    rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR_NO_ERROR;
    for (int i = 0; i < 50; i++) {
        e = rd_kafka_metadata(rk, 0, t, &md, 2000);
        if (!e && md->topic_cnt == 1 && md->topics[0].partition_cnt > 0)
            break;
        if (!e)
            rd_kafka_metadata_destroy(md);
        md = NULL;
        ts_sleep_ms(200);
    }
    rd_kafka_topic_destroy(t);
    if (!md)
        fail_msg("no metadata for topic %s: %s", topic, rd_kafka_err2str(e));
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(8);
    for (int p = 0; p < md->topics[0].partition_cnt; p++)
        rd_kafka_topic_partition_list_add(parts, topic, md->topics[0].partitions[p].id)->offset =
            RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_metadata_destroy(md);
    rd_kafka_assign(rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    return rk;
}

static void reader_free(rd_kafka_t *rk) {
    rd_kafka_assign(rk, NULL);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
}

static void copy_msg(const rd_kafka_message_t *m, ts_kafka_msg_t *out) {
    memset(out, 0, sizeof *out);
    out->key = strndup(m->key ? (const char *)m->key : "", m->key_len);
    out->value = strndup(m->payload ? (const char *)m->payload : "", m->len);
    out->partition = m->partition;
    out->offset = m->offset;
    rd_kafka_headers_t *h = NULL;
    if (rd_kafka_message_headers(m, &h) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        const char *name;
        const void *val;
        size_t len;
        for (size_t i = 0; out->nheaders < 16 && !rd_kafka_header_get_all(h, i, &name, &val, &len);
             i++) {
            snprintf(out->headers[out->nheaders][0], 128, "%s", name);
            snprintf(out->headers[out->nheaders][1], 128, "%.*s", (int)len,
                     val ? (const char *)val : "");
            out->nheaders++;
        }
    }
}

static long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* Scans topic; calls visit for each message with the key. Stops when visit
 * returns nonzero, when every partition reached its end (if to_end) or on timeout. */
static int scan(const char *topic, const char *key, int timeout_ms, int to_end,
                int (*visit)(const rd_kafka_message_t *, void *), void *opaque) {
    rd_kafka_t *rk = reader_new(topic);
    long deadline = now_ms() + timeout_ms;
    int eofs = 0, nparts = 0, found = 0;
    rd_kafka_topic_partition_list_t *assigned = NULL;
    if (!rd_kafka_assignment(rk, &assigned)) {
        nparts = assigned->cnt;
        rd_kafka_topic_partition_list_destroy(assigned);
    }
    size_t klen = strlen(key);
    while (!found && now_ms() < deadline && !(to_end && eofs >= nparts)) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
            eofs++;
        else if (!m->err && m->key_len == klen && memcmp(m->key, key, klen) == 0)
            found = visit(m, opaque);
        rd_kafka_message_destroy(m);
    }
    reader_free(rk);
    return found;
}

static int visit_copy(const rd_kafka_message_t *m, void *opaque) {
    copy_msg(m, opaque);
    return 1;
}

int ts_kafka_find(const char *topic, const char *key, int timeout_ms, ts_kafka_msg_t *out) {
    memset(out, 0, sizeof *out);
    return scan(topic, key, timeout_ms, 0, visit_copy, out);
}

typedef struct {
    const char *header, *contains;
    ts_kafka_msg_t *out;
} where_t;

static int visit_where(const rd_kafka_message_t *m, void *opaque) {
    where_t *w = opaque;
    ts_kafka_msg_t tmp;
    copy_msg(m, &tmp);
    const char *v = ts_kafka_header(&tmp, w->header);
    if (v && strstr(v, w->contains)) {
        *w->out = tmp;
        return 1;
    }
    ts_kafka_msg_free(&tmp);
    return 0;
}

int ts_kafka_find_where(const char *topic, const char *key, const char *header,
                        const char *contains, int timeout_ms, ts_kafka_msg_t *out) {
    memset(out, 0, sizeof *out);
    where_t w = {header, contains, out};
    return scan(topic, key, timeout_ms, 0, visit_where, &w);
}

static int visit_count(const rd_kafka_message_t *m, void *opaque) {
    (void)m;
    (*(int *)opaque)++;
    return 0;
}

int ts_kafka_count(const char *topic, const char *key, int timeout_ms) {
    int n = 0;
    scan(topic, key, timeout_ms, 1, visit_count, &n);
    return n;
}

typedef struct {
    ts_kafka_msg_t *out;
    int want, max, n;
} collect_t;

static int visit_collect(const rd_kafka_message_t *m, void *opaque) {
    collect_t *c = opaque;
    copy_msg(m, &c->out[c->n++]);
    return c->n >= c->want || c->n >= c->max;
}

int ts_kafka_collect(const char *topic, const char *key, int want, int timeout_ms,
                     ts_kafka_msg_t *out, int max) {
    collect_t c = {out, want, max, 0};
    if (want > 0 && max > 0)
        scan(topic, key, timeout_ms, 0, visit_collect, &c);
    return c.n;
}

typedef struct {
    const char *header, *value;
    int n;
} count_where_t;

static int visit_count_where(const rd_kafka_message_t *m, void *opaque) {
    count_where_t *w = opaque;
    ts_kafka_msg_t tmp;
    copy_msg(m, &tmp);
    const char *v = ts_kafka_header(&tmp, w->header);
    w->n += v && strcmp(v, w->value) == 0;
    ts_kafka_msg_free(&tmp);
    return 0;
}

int ts_kafka_count_where(const char *topic, const char *key, const char *header,
                         const char *value, int timeout_ms) {
    count_where_t w = {header, value, 0};
    scan(topic, key, timeout_ms, 1, visit_count_where, &w);
    return w.n;
}

/* Marks partition p as having reached its end; true when it had not yet. */
static bool mark_end(int32_t p, bool *ended, int nparts) {
    if (p < 0 || p >= nparts || ended[p])
        return false;
    ended[p] = true;
    return true;
}

int ts_kafka_scan_all(const char *topic, int timeout_ms,
                      void (*visit)(const ts_kafka_msg_t *m, void *opaque), void *opaque) {
    rd_kafka_t *rk = reader_new(topic);
    rd_kafka_topic_partition_list_t *assigned = NULL;
    int nparts = 0, nended = 0, n = 0;
    if (!rd_kafka_assignment(rk, &assigned)) {
        nparts = assigned->cnt;
        rd_kafka_topic_partition_list_destroy(assigned);
    }
    bool *ended = calloc(nparts > 0 ? (size_t)nparts : 1, sizeof *ended);
    assert_non_null(ended);
    long deadline = now_ms() + timeout_ms;
    while (nended < nparts && now_ms() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            nended += mark_end(m->partition, ended, nparts);
        } else if (!m->err) {
            ts_kafka_msg_t tmp;
            copy_msg(m, &tmp);
            visit(&tmp, opaque);
            ts_kafka_msg_free(&tmp);
            n++;
        }
        rd_kafka_message_destroy(m);
    }
    free(ended);
    reader_free(rk);
    if (nended < nparts)
        fail_msg("%s: only %d of %d partitions read to their end in %d ms", topic, nended, nparts,
                 timeout_ms);
    return n;
}

void ts_kafka_send_together(const char *client, const struct deta_kafka_out *msgs, size_t n) {
    deta_config_t cfg;
    char err[256];
    if (deta_config_load(&cfg, client, err, sizeof err) != DETA_OK)
        fail_msg("config: %s", err);
    deta_producer_t *p = deta_producer_new(&cfg, err, sizeof err);
    if (!p)
        fail_msg("producer: %s", err);
    size_t nacked = 0;
    if (deta_producer_send_batch(p, msgs, n, 15000, &nacked, err, sizeof err) != DETA_OK)
        fail_msg("send_batch: %s", err);
    assert_int_equal(nacked, n);
    deta_producer_free(p);
}

const char *ts_kafka_header(const ts_kafka_msg_t *m, const char *name) {
    for (int i = 0; i < m->nheaders; i++)
        if (strcmp(m->headers[i][0], name) == 0)
            return m->headers[i][1];
    return NULL;
}

void ts_kafka_msg_free(ts_kafka_msg_t *m) {
    free(m->key);
    free(m->value);
    memset(m, 0, sizeof *m);
}

void ts_kafka_produce_many(const char *topic, const char *const *keys,
                          const char *const *values, size_t n) {
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", ts_env("KAFKA_BOOTSTRAP_SERVERS"), err,
                          sizeof err) != RD_KAFKA_CONF_OK)
        fail_msg("kafka conf: %s", err);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!rk)
        fail_msg("kafka producer: %s", err);
    for (size_t i = 0; i < n; i++) {
        rd_kafka_resp_err_t e = rd_kafka_producev(
            rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(keys[i], keys[i] ? strlen(keys[i]) : 0),
            RD_KAFKA_V_VALUE((void *)values[i], strlen(values[i])),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        if (e)
            fail_msg("produce to %s: %s", topic, rd_kafka_err2str(e));
    }
    rd_kafka_resp_err_t e = rd_kafka_flush(rk, 15000);
    rd_kafka_destroy(rk);
    if (e)
        fail_msg("flush to %s: %s", topic, rd_kafka_err2str(e));
}

void ts_kafka_produce(const char *topic, const char *key, const char *value) {
    ts_kafka_produce_many(topic, &key, &value, 1);
}

char *ts_event_by(const char *producer, const char *event_type, const char *order_id,
                  const char *correlation_id, json_t *payload, char *event_id) {
    deta_event_t ev;
    char err[256];
    if (deta_event_init(&ev, event_type, order_id, correlation_id ? correlation_id : order_id,
                        producer, payload, err, sizeof err) != DETA_OK)
        fail_msg("ts_event: %s", err);
    if (event_id)
        memcpy(event_id, ev.event_id, sizeof ev.event_id);
    char *text = deta_event_serialize(&ev);
    deta_event_clear(&ev);
    assert_non_null(text);
    return text;
}

char *ts_event(const char *event_type, const char *order_id, const char *correlation_id,
               json_t *payload, char *event_id) {
    /* Written as the owner of the type's topic writes it: consumers refuse another
     * producer (deta/event_check.h). */
    const char *owner = deta_topic_owner(deta_topic_for_event_type(event_type));
    return ts_event_by(owner ? owner : "testsupport", event_type, order_id, correlation_id,
                       payload, event_id);
}

void ts_uuid(char out[37]) { deta_uuid_new(out); }

void ts_free_port(char *buf, size_t size) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    snprintf(buf, size, "%d", ntohs(a.sin_port));
    close(fd);
}

/* ---- the local broker's control FIFO ---- */

void ts_broker(const char *command) {
    char path[1024];
    snprintf(path, sizeof path, "%s/broker.ctl", ts_env("STACK_DIR"));
    int fd = open(path, O_WRONLY | O_NONBLOCK);
    if (fd < 0)
        fail_msg("cannot open the broker control FIFO %s", path);
    char line[256];
    int n = snprintf(line, sizeof line, "%s\n", command);
    ssize_t w = write(fd, line, (size_t)n);
    close(fd);
    assert_int_equal(w, n);
    ts_sleep_ms(300); /* let the broker apply it */
}

/* ---- the stack's parts ---- */

/* The repository's root, from this file's path (CMake compiles it by its
 * absolute path: tests/support/testsupport.c). */
static void repo_root(char *out, size_t size) {
    snprintf(out, size, "%s", __FILE__);
    for (int up = 0; up < 3; up++) {
        char *slash = strrchr(out, '/');
        if (!slash)
            fail_msg("cannot find the repository root from %s", __FILE__);
        *slash = '\0';
    }
}

int ts_stack(const char *fmt, ...) {
    char root[1024], args[512], cmd[2048];
    repo_root(root, sizeof root);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "'%s/scripts/stack.sh' %s 1>&2", root, args);
    fprintf(stderr, "ts_stack: %s\n", args);
    int rc = system(cmd);
    return rc == -1 ? -1 : WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc);
}

void ts_stack_ok(const char *args) {
    int rc = ts_stack("%s", args);
    if (rc != 0)
        fail_msg("scripts/stack.sh %s: exit status %d", args, rc);
}

long ts_stack_pid(const char *part) {
    char path[1024];
    snprintf(path, sizeof path, "%s/pids/%s.pid", ts_env("STACK_DIR"), part);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    long pid = 0;
    if (fscanf(f, "%ld", &pid) != 1)
        pid = 0;
    fclose(f);
    return pid;
}

int ts_http_try(const char *method, const char *base_var, const char *path,
                const char *content_type, const char *body, long timeout_ms,
                ts_http_resp_t *out) {
    char ct[256];
    content_type_line(content_type, ct, sizeof ct);
    const char *const headers[] = {ct, NULL};
    return perform(method, base_var, path, headers, body, timeout_ms, out, NULL) == 0;
}

double ts_metric(const char *base_var, const char *series) {
    ts_http_resp_t r;
    double v = -1;
    if (ts_http_try("GET", base_var, "/actuator/prometheus", NULL, NULL, 5000, &r) &&
        r.status == 200) {
        size_t n = strlen(series);
        for (const char *line = r.body; line && *line;) {
            if (strncmp(line, series, n) == 0 && line[n] == ' ') {
                v = atof(line + n + 1);
                break;
            }
            line = strchr(line, '\n');
            line = line ? line + 1 : NULL;
        }
    }
    ts_http_resp_free(&r);
    return v;
}

double ts_events(const char *base_var, const char *type, const char *outcome) {
    if (!outcome)
        return ts_events(base_var, type, "applied") + ts_events(base_var, type, "duplicate");
    char series[160];
    snprintf(series, sizeof series, "deta_events_total{type=\"%s\",outcome=\"%s\"}", type,
             outcome);
    double v = ts_metric(base_var, series);
    return v < 0 ? 0 : v;
}

void ts_events_await(const char *base_var, const char *type, const char *outcome, double before,
                     int n, int timeout_ms) {
    double got = ts_events(base_var, type, outcome);
    for (int waited = 0; got < before + n && waited < timeout_ms; waited += 100) {
        ts_sleep_ms(100);
        got = ts_events(base_var, type, outcome);
    }
    if (got < before + n)
        fail_msg("%s: %g more %s %s after %d ms, expected %d", base_var, got - before, type,
                 outcome ? outcome : "handled", timeout_ms, n);
}

long ts_claims(PGconn *c, const char *consumer, const char *event_id) {
    const char *params[] = {consumer, event_id};
    return ts_pg_long(c,
                      "SELECT count(*) FROM processed_events WHERE consumer = $1 AND"
                      " event_id = $2::uuid",
                      2, params);
}

const char *const ts_services[5] = {"order-service", "inventory-service", "payment-service",
                                    "delivery-service", "query-api"};
const char *const ts_service_urls[5] = {"ORDER_SERVICE_URL", "INVENTORY_SERVICE_URL",
                                        "PAYMENT_SERVICE_URL", "DELIVERY_SERVICE_URL",
                                        "QUERY_API_URL"};

/* True when the service answers /actuator/health with status UP. */
static int service_up(const char *url_var) {
    ts_http_resp_t r;
    int up = ts_http_try("GET", url_var, "/actuator/health", NULL, NULL, 3000, &r) &&
             r.status == 200;
    const char *status = up ? json_string_value(json_object_get(r.json, "status")) : NULL;
    up = status && strcmp(status, "UP") == 0;
    ts_http_resp_free(&r);
    return up;
}

int ts_stack_heal(int timeout_ms) {
    ts_stack("start postgres");
    ts_stack("start redis");
    ts_stack("start broker");
    ts_stack("broker clear");
    for (size_t i = 0; i < 5; i++)
        ts_stack("start %s", ts_services[i]);
    long deadline = now_ms() + timeout_ms;
    for (size_t i = 0; i < 5; i++) {
        while (!service_up(ts_service_urls[i])) {
            if (now_ms() > deadline) {
                fprintf(stderr, "ts_stack_heal: %s is not UP after %d ms\n", ts_services[i],
                        timeout_ms);
                return 0;
            }
            ts_sleep_ms(200);
        }
    }
    return 1;
}

/* ---- orders ---- */

void ts_fresh_item(const char *tag, char *item, size_t size) {
    char uuid[37];
    ts_uuid(uuid);
    snprintf(item, size, "%s-%.8s", tag, uuid);
    ts_stock_set(item, 1000);
}

void ts_assert_completed_once(char (*ids)[37], size_t n, int timeout_ms) {
    assert_true(ts_orders_await(ids, n, DETA_STATE_DELIVERED, timeout_ms));
    assert_int_equal(ts_orders_rows_not("inventory_db", "reservations", ids, n, 1), 0);
    assert_int_equal(ts_orders_rows_not("delivery_eta", "payments", ids, n, 1), 0);
    assert_int_equal(ts_orders_rows_not("delivery_db", "deliveries", ids, n, 1), 0);
}

void ts_assert_no_dead_letters(char (*ids)[37], size_t n) {
    for (size_t t = DETA_TOPICS_RAW_COUNT; t < DETA_TOPICS_COUNT; t++) {
        int found = ts_kafka_count_keys(deta_topics_all[t], ids, n, 30000);
        if (found != 0)
            fail_msg("%d dead letters of this test's orders on %s", found, deta_topics_all[t]);
    }
}

void ts_assert_published_once(char (*ids)[37], size_t n) {
    int *counts = calloc(n ? n : 1, sizeof *counts);
    assert_non_null(counts);
    ts_kafka_counts_by_key(DETA_TOPIC_ORDER_EVENTS, ids, n, counts, 30000);
    for (size_t i = 0; i < n; i++)
        if (counts[i] != 1)
            fail_msg("order %s is on raw.order-events %d times", ids[i], counts[i]);
    free(counts);
}

void ts_stock_set(const char *item, int available) {
    char path[160], body[64];
    snprintf(path, sizeof path, "/api/inventory/%s", item);
    snprintf(body, sizeof body, "{\"available\":%d}", available);
    ts_http_resp_t r;
    ts_http_operator("PUT", "INVENTORY_SERVICE_URL", path, "application/json", body, &r);
    if (r.status != 200 && r.status != 201)
        fail_msg("PUT %s: %ld %s", path, r.status, r.body);
    ts_http_resp_free(&r);
}

long ts_order_place(const char *customer, const char *item, int qty, char id[37]) {
    char body[512], err[512];
    snprintf(body, sizeof body,
             "{\"customerId\":\"%s\",\"currency\":\"USD\",\"items\":[{\"itemId\":\"%s\","
             "\"quantity\":%d,\"unitPrice\":\"2.50\"}]}",
             customer, item, qty);
    deta_client_t *c = deta_client_new(10000, 0);
    assert_non_null(c);
    deta_client_resp_t r;
    id[0] = '\0';
    deta_order_place(c, ts_env("ORDER_SERVICE_URL"), body, &r, err, sizeof err);
    long status = r.status;
    if (status == 201 && !deta_order_id_of(r.json, id, 37))
        id[0] = '\0';
    deta_client_resp_clear(&r);
    deta_client_free(c);
    return status;
}

void ts_order_status(const char *order_id, char *status, size_t size) {
    deta_client_t *c = deta_client_new(5000, 0);
    assert_non_null(c);
    deta_order_status(c, ts_env("QUERY_API_URL"), order_id, status, size);
    deta_client_free(c);
}

int ts_orders_await(char (*ids)[37], size_t n, const char *want, int timeout_ms) {
    long deadline = now_ms() + timeout_ms;
    char status[64] = "";
    deta_client_t *c = deta_client_new(5000, 0);
    assert_non_null(c);
    const char *query_url = ts_env("QUERY_API_URL");
    for (size_t i = 0; i < n; i++) {
        if (!deta_order_await(c, query_url, ids[i], want, deadline - now_ms(), 200, status,
                              sizeof status)) {
            fprintf(stderr, "order %s: status \"%s\", not %s, after %d ms\n", ids[i], status,
                    want ? want : "an end state", timeout_ms);
            deta_client_free(c);
            return 0;
        }
    }
    deta_client_free(c);
    return 1;
}

int ts_orders_rows_not(const char *db, const char *table, char (*ids)[37], size_t n, long want) {
    PGconn *c = ts_pg(db);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE order_id = $1", table);
    int wrong = 0;
    for (size_t i = 0; i < n; i++) {
        const char *params[] = {ids[i]};
        long got = ts_pg_long(c, sql, 1, params);
        if (got != want) {
            fprintf(stderr, "%s.%s: %ld rows for order %s, expected %ld\n", db, table, got,
                    ids[i], want);
            wrong++;
        }
    }
    PQfinish(c);
    return wrong;
}

typedef struct key_counts {
    char (*ids)[37];
    size_t n;
    int *counts;
} key_counts_t;

static void visit_key_counts(const ts_kafka_msg_t *m, void *opaque) {
    key_counts_t *k = opaque;
    for (size_t i = 0; m->key && i < k->n; i++)
        if (strcmp(m->key, k->ids[i]) == 0)
            k->counts[i]++;
}

void ts_kafka_counts_by_key(const char *topic, char (*ids)[37], size_t n, int *counts,
                            int timeout_ms) {
    memset(counts, 0, n * sizeof *counts);
    key_counts_t k = {ids, n, counts};
    ts_kafka_scan_all(topic, timeout_ms, visit_key_counts, &k);
}

int ts_kafka_count_keys(const char *topic, char (*ids)[37], size_t n, int timeout_ms) {
    int *counts = calloc(n ? n : 1, sizeof *counts);
    assert_non_null(counts);
    ts_kafka_counts_by_key(topic, ids, n, counts, timeout_ms);
    int total = 0;
    for (size_t i = 0; i < n; i++)
        total += counts[i];
    free(counts);
    return total;
}

/* ---- the simulated payment gateway ---- */

int ts_ledger_charges(const char *order_id) {
    FILE *f = fopen(ts_env("PAYMENT_GATEWAY_LEDGER"), "r");
    if (!f)
        return 0;
    char line[512], want[64];
    snprintf(want, sizeof want, "charge %s ", order_id);
    int n = 0;
    while (fgets(line, sizeof line, f))
        n += strncmp(line, want, strlen(want)) == 0;
    fclose(f);
    return n;
}

void ts_ledger_append(const char *line) {
    FILE *f = fopen(ts_env("PAYMENT_GATEWAY_LEDGER"), "a");
    if (!f)
        fail_msg("cannot open the gateway's ledger %s", ts_env("PAYMENT_GATEWAY_LEDGER"));
    fputs(line, f);
    fclose(f);
}

/* ---- a service of the test's own ---- */

/* $BUILD_DIR/services/<name>, BUILD_DIR relative to the repository's root. */
static void service_binary(const char *name, char *out, size_t size) {
    const char *build = ts_env("BUILD_DIR");
    if (build[0] == '/') {
        if ((size_t)snprintf(out, size, "%.512s/services/%.64s", build, name) >= size)
            fail_msg("path of %s too long", name);
        return;
    }
    char root[512];
    snprintf(root, sizeof root, "%s", __FILE__); /* <root>/tests/support/testsupport.c */
    for (int up = 0; up < 3; up++) {
        char *slash = strrchr(root, '/');
        assert_non_null(slash);
        *slash = '\0';
    }
    if ((size_t)snprintf(out, size, "%s/%.256s/services/%.64s", root, build, name) >= size)
        fail_msg("path of %s too long", name);
}

pid_t ts_service_spawn(const char *name, const char *port_var, const char *const *extra) {
    char bin[1024], log[1024];
    service_binary(name, bin, sizeof bin);
    snprintf(log, sizeof log, "%s/logs/%s.log", ts_env("STACK_DIR"), name);
    const char *port = ts_env(port_var);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        setsid();
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        setenv("HTTP_PORT", port, 1);
        setenv("KAFKA_SESSION_TIMEOUT_MS", "6000", 1);
        setenv("LOG_LEVEL", "info", 1);
        for (size_t i = 0; extra && extra[i]; i++)
            putenv((char *)extra[i]);
        printf("=== a test starts %s ===\n", name);
        fflush(stdout);
        execl(bin, bin, (char *)NULL);
        _exit(127);
    }
    return pid;
}

int ts_service_await_healthy(pid_t pid, const char *url_var, int timeout_ms) {
    for (int waited = 0; waited < timeout_ms; waited += 200) {
        ts_http_resp_t r;
        int ok = ts_http_try("GET", url_var, "/actuator/health", NULL, NULL, 2000, &r) &&
                 r.status == 200;
        ts_http_resp_free(&r);
        if (ok)
            return 1;
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return 0;
        ts_sleep_ms(200);
    }
    return -1;
}

/* ---- a scratch database of the test's own ---- */

void ts_pg_admin(const char *sql) {
    PGconn *admin = ts_pg("postgres");
    PGresult *r = PQexec(admin, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        fprintf(stderr, "%s: %s\n", sql, PQerrorMessage(admin));
    PQclear(r);
    PQfinish(admin);
}

int ts_scratch_db_create(const char *service, const char *tag, deta_config_t *cfg) {
    char err[256], sql[160];
    if (deta_config_load(cfg, service, err, sizeof err) != DETA_OK) {
        fprintf(stderr, "config: %s\n", err);
        return -1;
    }
    snprintf(cfg->pg_database, sizeof cfg->pg_database, "it_%.32s_%d", tag, (int)getpid());
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", cfg->pg_database);
    ts_pg_admin(sql);
    return 0;
}

void ts_scratch_db_drop(const deta_config_t *cfg) {
    char sql[160];
    PGconn *admin = ts_pg("postgres");
    const char *params[] = {cfg->pg_database};
    /* A slot still streamed is released when its walsender ends. */
    for (int i = 0; i < 50; i++) {
        PGresult *r = PQexecParams(admin,
                                   "SELECT pg_terminate_backend(active_pid) FROM"
                                   " pg_replication_slots WHERE database = $1 AND active_pid IS"
                                   " NOT NULL",
                                   1, NULL, params, NULL, NULL, 0);
        PQclear(r);
        r = PQexecParams(admin,
                         "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                         " WHERE database = $1",
                         1, NULL, params, NULL, NULL, 0);
        bool done = PQresultStatus(r) == PGRES_TUPLES_OK;
        PQclear(r);
        if (done)
            break;
        ts_sleep_ms(100);
    }
    PQfinish(admin);
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", cfg->pg_database);
    ts_pg_admin(sql);
}

bool ts_outbox_relayed(PGconn *c, long timeout_ms) {
    PGresult *r = PQexec(c, "SELECT pg_current_wal_flush_lsn()::text");
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        fprintf(stderr, "ts_outbox_relayed: %s", PQerrorMessage(c));
        PQclear(r);
        return false;
    }
    char target[32];
    snprintf(target, sizeof target, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    const char *params[] = {target};
    for (long waited = 0;; waited += 100) {
        if (ts_pg_long(c,
                       "SELECT count(*) FROM pg_replication_slots WHERE slot_name ="
                       " 'deta_outbox_' || current_database() AND confirmed_flush_lsn >="
                       " $1::pg_lsn",
                       1, params) == 1)
            return true;
        if (waited >= timeout_ms)
            return false;
        ts_sleep_ms(100);
    }
}
