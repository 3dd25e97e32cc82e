/*
 * testsupport.h - what the integration tests share: the test stack's addresses,
 * an HTTP client (libcurl), Postgres queries, a Kafka reader and the local
 * broker's control channel. Everything fails the running cmocka test with a clear
 * message rather than returning errors the test would have to check.
 */
#ifndef DETA_TESTSUPPORT_H
#define DETA_TESTSUPPORT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <jansson.h>
#include <libpq-fe.h>

/* An environment variable the test stack exports; fails the test when missing
 * ("run through make test"). */
const char *ts_env(const char *name);

typedef struct ts_http_resp {
    long status;
    char *body;   /* NUL-terminated */
    json_t *json; /* parsed body, or NULL when not JSON */
} ts_http_resp_t;

/* method + base URL variable (e.g. "ORDER_SERVICE_URL") + path. body may be NULL. */
void ts_http(const char *method, const char *base_var, const char *path,
             const char *content_type, const char *body, ts_http_resp_t *out);
void ts_http_resp_free(ts_http_resp_t *r);

/* Connects to the test stack's Postgres, database dbname. */
PGconn *ts_pg(const char *dbname);
/* First column of the first row of a query with text parameters, as a long. */
long ts_pg_long(PGconn *c, const char *sql, int nparams, const char *const *params);

typedef struct ts_kafka_msg {
    char *key;
    char *value;
    int32_t partition;
    int64_t offset;
    char headers[16][2][128]; /* name, value */
    int nheaders;
} ts_kafka_msg_t;

/* Reads topic from the beginning (all partitions, no consumer group) until a
 * message with this key arrives; true when found within timeout_ms. */
int ts_kafka_find(const char *topic, const char *key, int timeout_ms, ts_kafka_msg_t *out);
/* Like ts_kafka_find, for the first message with this key whose header `header`
 * contains `contains` (several services may dead-letter the same message). */
int ts_kafka_find_where(const char *topic, const char *key, const char *header,
                        const char *contains, int timeout_ms, ts_kafka_msg_t *out);
/* Every message of key on topic, from the beginning, in order, until want of them
 * arrived or timeout_ms passed; returns how many were copied into out (at most
 * max; free each with ts_kafka_msg_free). */
int ts_kafka_collect(const char *topic, const char *key, int want, int timeout_ms,
                     ts_kafka_msg_t *out, int max);
/* How many messages with this key and a header `header` equal to `value`. */
int ts_kafka_count_where(const char *topic, const char *key, const char *header,
                         const char *value, int timeout_ms);
/* How many messages with this key the topic holds (reads to the end). */
int ts_kafka_count(const char *topic, const char *key, int timeout_ms);
const char *ts_kafka_header(const ts_kafka_msg_t *m, const char *name);
void ts_kafka_msg_free(ts_kafka_msg_t *m);

/* Produces one message (key may be NULL) and waits for its acknowledgement. */
void ts_kafka_produce(const char *topic, const char *key, const char *value);
/* A serialized, valid envelope of event_type for order_id carrying payload (a
 * reference is stolen); malloc'd. *event_id, when not NULL, receives its id
 * (37 bytes). correlation_id NULL means a fresh one. */
char *ts_event(const char *event_type, const char *order_id, const char *correlation_id,
               json_t *payload, char *event_id);
/* A fresh UUID, for order ids and the like. */
void ts_uuid(char out[37]);

/* A line for the local broker's control FIFO: "down all", "up all", ... */
void ts_broker(const char *command);

void ts_sleep_ms(int ms);

#endif
