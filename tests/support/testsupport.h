/*
 * testsupport.h - what the integration tests share: the test stack's addresses,
 * an HTTP client (the clients' library, lib/client), Postgres queries, a Kafka reader and the local
 * broker's control channel. Everything fails the running cmocka test with a clear
 * message rather than returning errors the test would have to check.
 */
#ifndef DETA_TESTSUPPORT_H
#define DETA_TESTSUPPORT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <setjmp.h>
#include <cmocka.h>
#include <jansson.h>
#include <libpq-fe.h>

#include "deta/config.h"

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
/* ts_http with "Authorization: Bearer <token>" (token NULL: no such header). */
void ts_http_bearer(const char *method, const char *base_var, const char *path,
                    const char *token, const char *content_type, const char *body,
                    ts_http_resp_t *out);
/* ts_http as the operator: with the stack's OPERATOR_TOKEN (stock changes, the
 * dead-letter administration; docs/security.md). */
void ts_http_operator(const char *method, const char *base_var, const char *path,
                      const char *content_type, const char *body, ts_http_resp_t *out);
/* ts_http without a body, with extra request headers ("Name: value", a
 * NULL-terminated list; NULL for none). *resp_headers, when not NULL, receives the
 * response's status line and header lines as one malloc'd text. */
void ts_http_headers(const char *method, const char *base_var, const char *path,
                     const char *const *headers, ts_http_resp_t *out, char **resp_headers);

/* Connects to the test stack's Postgres, database dbname. */
PGconn *ts_pg(const char *dbname);
/* First column of the first row of a query with text parameters, as a long. */
long ts_pg_long(PGconn *c, const char *sql, int nparams, const char *const *params);
/* The same on a connection of its own to dbname, for a query with one parameter. */
long ts_db_long(const char *dbname, const char *sql, const char *param);

/* A fresh raw connection to the test stack's Redis (hiredis's redisContext,
 * declared opaque here); fails the test when it cannot connect. */
struct redisContext;
struct redisContext *ts_redis_connect(void);
/* A command on a fresh raw connection to the test stack's Redis (REDIS_HOST,
 * REDIS_PORT), outside the adapter under test: fmt is a hiredis format with up
 * to two %s arguments; an error reply fails the test. */
void ts_redis_run(const char *fmt, const char *a, const char *b);
/* GET key the same way: the value, malloc'd, or NULL when absent. */
char *ts_redis_get(const char *key);

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
/* Calls visit for every message of topic, whatever its key, from the beginning of
 * each partition up to its end as the reader finds it; returns how many were read.
 * The message lives only during the call. Fails the test when the ends are not
 * reached within timeout_ms. */
int ts_kafka_scan_all(const char *topic, int timeout_ms,
                      void (*visit)(const ts_kafka_msg_t *m, void *opaque), void *opaque);
/* Sends msgs (deta/kafka.h's deta_kafka_out_t) with a producer of the test's own
 * (client id `client`, the stack's Kafka settings) as one producer batch, so that
 * they reach a consumer together; fails the test unless every one was acked. */
struct deta_kafka_out;
void ts_kafka_send_together(const char *client, const struct deta_kafka_out *msgs, size_t n);
const char *ts_kafka_header(const ts_kafka_msg_t *m, const char *name);
void ts_kafka_msg_free(ts_kafka_msg_t *m);

/* Produces one message (key may be NULL) and waits for its acknowledgement. */
void ts_kafka_produce(const char *topic, const char *key, const char *value);
/* n messages with one producer and one flush (so that they arrive together). */
void ts_kafka_produce_many(const char *topic, const char *const *keys,
                          const char *const *values, size_t n);
/* A serialized, valid envelope of event_type for order_id carrying payload (a
 * reference is stolen); malloc'd. *event_id, when not NULL, receives its id
 * (37 bytes). correlation_id NULL means a fresh one. */
char *ts_event(const char *event_type, const char *order_id, const char *correlation_id,
               json_t *payload, char *event_id);
/* The same, written by producer (a test of who may write what). */
char *ts_event_by(const char *producer, const char *event_type, const char *order_id,
                  const char *correlation_id, json_t *payload, char *event_id);
/* A fresh UUID, for order ids and the like. */
void ts_uuid(char out[37]);

/* A TCP port on 127.0.0.1 that was free a moment ago, as decimal text: for a
 * service the test starts of its own. */
void ts_free_port(char *buf, size_t size);

/* A line for the local broker's control FIFO: "down all", "up all", ... */
void ts_broker(const char *command);

void ts_sleep_ms(int ms);

/* ---- the stack's parts (for the fault tests) ---- */

/* Runs scripts/stack.sh (of this repository) with the arguments, printf-style,
 * under the caller's environment (STACK_DIR, BUILD_DIR); returns its exit status. */
int ts_stack(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* ts_stack that fails the test when stack.sh exits other than 0. */
void ts_stack_ok(const char *args);
/* The pid in $STACK_DIR/pids/<part>.pid, or 0 when there is none. */
long ts_stack_pid(const char *part);
/* Like ts_http, but a request that gets no answer (connection refused, timeout
 * after timeout_ms) does not fail the test: returns false and out->status = 0. */
int ts_http_try(const char *method, const char *base_var, const char *path,
                const char *content_type, const char *body, long timeout_ms,
                ts_http_resp_t *out);
/* The value of one series of base_var's /actuator/prometheus, named with its
 * labels exactly as rendered ("deta_outbox_pending" or
 * "deta_consumer_assigned_partitions{group=\"g\",topic=\"t\"}"); -1 when the
 * series is absent or the service does not answer. */
double ts_metric(const char *base_var, const char *series);
/* base_var's deta_events_total{type,outcome} (0 when absent); outcome NULL: the
 * events of type handled, applied or found to change nothing (duplicate). */
double ts_events(const char *base_var, const char *type, const char *outcome);
/* Waits up to timeout_ms until ts_events(base_var, type, outcome) is n more than
 * before; fails the test otherwise. For a consumer that claims no event ids, this
 * is how a test knows that an event which must change nothing was handled. The
 * counts are the service's, so another order's event counts too: a lower bound,
 * and the order's own rows decide. */
void ts_events_await(const char *base_var, const char *type, const char *outcome, double before,
                     int n, int timeout_ms);
/* processed_events rows of consumer for event_id, in c's database. */
long ts_claims(PGconn *c, const char *consumer, const char *event_id);
/* The service parts of the stack, by name and URL variable (the five services). */
extern const char *const ts_services[5];
extern const char *const ts_service_urls[5];
/* Brings the stack back whole, whatever a fault test did: starts postgres, redis
 * and the broker if they are not running, clears the broker's injected errors and
 * brings its brokers up, starts every service that is not running, and waits up
 * to timeout_ms for every service's /actuator/health to say UP. True when it did;
 * for a test's teardown (it never fails the test itself). */
int ts_stack_heal(int timeout_ms);

/* ---- orders, through the services (for the fault tests) ---- */

/* Sets an item's available stock (inventory-service). */
void ts_stock_set(const char *item, int available);
/* POSTs an order of qty units of item at 2.50; returns the HTTP status (0 when
 * no answer) and, on 201, its id in id. */
long ts_order_place(const char *customer, const char *item, int qty, char id[37]);
/* The order's status in the query-api's read model into status ("" when absent). */
void ts_order_status(const char *order_id, char *status, size_t size);
/* Polls the read model until every order of ids has status want (NULL: any end
 * state, deta_state_is_end); false (with
 * the first one that has not, and its status, on stderr) after timeout_ms. */
int ts_orders_await(char (*ids)[37], size_t n, const char *want, int timeout_ms);
/* SELECT count(*) ... WHERE order_id = $1 in database db, for each order of ids:
 * how many of them do not have exactly want rows (each such is printed). */
int ts_orders_rows_not(const char *db, const char *table, char (*ids)[37], size_t n, long want);
/* How many messages whose key is one of ids the topic holds (reads to the end). */
int ts_kafka_count_keys(const char *topic, char (*ids)[37], size_t n, int timeout_ms);
/* Per order of ids, how many messages of the topic carry it as key, into counts. */
void ts_kafka_counts_by_key(const char *topic, char (*ids)[37], size_t n, int *counts,
                            int timeout_ms);

/* A new item named <tag>-<8 hex digits>, with 1000 in stock, into item. */
void ts_fresh_item(const char *tag, char *item, size_t size);
/* The orders ended DELIVERED within timeout_ms, with one reservation, payment
 * and delivery each; fails the test otherwise. */
void ts_assert_completed_once(char (*ids)[37], size_t n, int timeout_ms);
/* No dlq.* topic holds a message of these orders. */
void ts_assert_no_dead_letters(char (*ids)[37], size_t n);
/* Each order's order.created is on raw.order-events exactly once. */
void ts_assert_published_once(char (*ids)[37], size_t n);

/* ---- a scratch database of the test's own ---- */

/* Runs sql on the "postgres" database (CREATE, DROP, ALTER DATABASE): a failure
 * is printed, not fatal (for setups and teardowns). */
void ts_pg_admin(const char *sql);
/* Loads cfg for service, names its database it_<tag>_<pid> and creates it: 0 on
 * success, -1 (printed) otherwise; for a group setup. */
int ts_scratch_db_create(const char *service, const char *tag, deta_config_t *cfg);
/* Drops cfg's database, whoever is still connected, and the outbox relay's
 * replication slot in it (a database with a slot cannot be dropped). */
void ts_scratch_db_drop(const deta_config_t *cfg);

/* ---- the outbox relay's progress ---- */

/* Waits up to timeout_ms until the outbox relay of c's database has confirmed
 * its stream past everything committed before the call (the slot
 * deta_outbox_<database>: lib/src/outbox_relay.c): every outbox row written
 * by then is published or parked. true when it has. */
bool ts_outbox_relayed(PGconn *c, long timeout_ms);

/* ---- a service of the test's own ---- */

/* Starts $BUILD_DIR/services/<name> as the caller's child (its own session, its
 * output appended to $STACK_DIR/logs/<name>.log) on the port in port_var, with
 * the stack's settings (the environment) plus extra ("NAME=value", NULL-ended). */
pid_t ts_service_spawn(const char *name, const char *port_var, const char *const *extra);
/* Waits until that child answers url_var's /actuator/health with 200: 1 when it
 * did, 0 when the child exited first (it is reaped), -1 after timeout_ms. */
int ts_service_await_healthy(pid_t pid, const char *url_var, int timeout_ms);

/* ---- the simulated payment gateway ---- */

/* Charges the gateway's ledger ($PAYMENT_GATEWAY_LEDGER) holds under the order's
 * key (0 when there is no ledger yet). */
int ts_ledger_charges(const char *order_id);
/* Appends a line to the ledger, as the gateway would have written it. */
void ts_ledger_append(const char *line);

#endif
