/*
 * dead_letter_events.c - the capture of dead letters: one consumer in group
 * query-api (besides the read model's, as inventory-service runs two) on
 * dlq.order-events, dlq.inventory-events, dlq.payment-events,
 * dlq.delivery-events and dlq.eta-events. Each message becomes one record of the store.
 *
 * A dead letter is by definition a message someone could not handle, so the
 * capture trusts nothing in it (domain.c makes a record of whatever arrives) and
 * never refuses one: there is no dead-letter topic for dead letters, and the
 * library drops what a handler of a dlq.* topic gives up on. The only failure is
 * the store's. While Postgres is away the handler answers TRANSIENT and the
 * consumer retries with backoff practically forever (max_retries below), so a
 * dead letter waits rather than being lost; the offset advances only once the
 * record is stored, and a record stored twice (a redelivery) is one record.
 *
 * Every header is kept, including ones the library's message API cannot list
 * (deta_kafka_msg_header finds one by name): they are read from librdkafka's
 * message, which libdeta passes as deta_kafka_msg_t.impl (lib/src/kafka_handle.c). A
 * deta_kafka_msg_header_at() in kafka.h would remove that coupling.
 *
 *   query_api_dead_letters_total{topic}   dead letters stored (not counting
 *                                         redeliveries of one already stored)
 */
#include "dead_letter_events.h"

#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deta/log.h"

/* Retries of a store error: ~58 days at the 5 s cap, i.e. until the store is back. */
#define CAPTURE_MAX_RETRIES 1000000
#define CAPTURE_BACKOFF_MAX_MS 5000

struct query_dlq_capture {
    deta_service_t *svc;
    dead_letters_t *store;
    deta_counter_t *stored[QUERY_DLQ_TOPIC_COUNT];
};

query_dlq_capture_t *query_dlq_capture_new(deta_service_t *svc, dead_letters_t *store) {
    query_dlq_capture_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->svc = svc;
    c->store = store;
    deta_metrics_t *m = deta_service_metrics(svc);
    for (int i = 0; i < QUERY_DLQ_TOPIC_COUNT; i++) {
        char labels[96];
        snprintf(labels, sizeof labels, "topic=\"%s\"", query_dlq_topics[i]);
        c->stored[i] = deta_counter(m, "query_api_dead_letters_total",
                                    "Dead letters stored for the administration, by dlq topic",
                                    labels);
    }
    return c;
}

void query_dlq_capture_free(query_dlq_capture_t *c) { free(c); }

/* The message's headers as bytes (malloc'd array of *n, borrowing librdkafka's
 * memory, valid while the message is). */
static query_header_t *message_headers(const deta_kafka_msg_t *msg, size_t *n) {
    *n = 0;
    rd_kafka_headers_t *hdrs = NULL;
    if (!msg->impl || rd_kafka_message_headers(msg->impl, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return NULL;
    size_t count = rd_kafka_header_cnt(hdrs);
    query_header_t *out = calloc(count ? count : 1, sizeof *out);
    if (!out)
        return NULL;
    const char *name;
    const void *value;
    size_t size;
    while (*n < count &&
           rd_kafka_header_get_all(hdrs, *n, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR)
        out[(*n)++] = (query_header_t){name, value, size};
    return out;
}

/* The message's value, or NULL when it has none (a Kafka null value). */
static const void *message_value(const deta_kafka_msg_t *msg) {
    const rd_kafka_message_t *m = msg->impl;
    return m && !m->payload ? NULL : msg->value;
}

static deta_err_t record_of(const deta_kafka_msg_t *msg, query_dead_letter_t *d, char *errstr,
                            size_t errsize) {
    size_t n;
    query_header_t *headers = message_headers(msg, &n);
    deta_err_t err = query_dead_letter_from_message(msg->topic, msg->partition, msg->offset,
                                                    msg->key, msg->key_len, message_value(msg),
                                                    msg->len, headers, n, d);
    free(headers);
    if (err)
        return deta_errf(DETA_ERR_TRANSIENT, errstr, errsize, "out of memory for a dead letter");
    return DETA_OK;
}

static deta_err_t capture(const deta_kafka_msg_t *msg, void *opaque, char *errstr,
                          size_t errsize) {
    query_dlq_capture_t *c = opaque;
    query_dead_letter_t d;
    deta_err_t err = record_of(msg, &d, errstr, errsize);
    if (err)
        return err;
    bool added = false;
    err = dead_letters_add(c->store, &d, &added, errstr, errsize);
    int topic = query_dlq_topic_index(msg->topic);
    if (err == DETA_OK && added && topic >= 0)
        deta_counter_inc(c->stored[topic]);
    if (err == DETA_OK && added)
        DETA_INFO("dead letter %s[%d]@%lld stored: from %s, group %s: %s", msg->topic,
                  (int)msg->partition, (long long)msg->offset,
                  d.original_topic[0] ? d.original_topic : "an unknown topic",
                  d.consumer_group[0] ? d.consumer_group : "unknown", d.error);
    else if (err && err != DETA_ERR_TRANSIENT)
        DETA_ERROR("cannot store dead letter %s[%d]@%lld (it stays on the topic): %s",
                   msg->topic, (int)msg->partition, (long long)msg->offset, errstr);
    query_dead_letter_clear(&d);
    return err;
}

deta_err_t query_dlq_capture_subscribe(query_dlq_capture_t *c, char *errstr, size_t errsize) {
    deta_consumer_opts_t opts = {.metrics = deta_service_metrics(c->svc),
                                 .max_retries = CAPTURE_MAX_RETRIES,
                                 .backoff_max_ms = CAPTURE_BACKOFF_MAX_MS};
    return deta_service_consume(c->svc, query_dlq_topics, QUERY_DLQ_TOPIC_COUNT, capture, c,
                                &opts, errstr, errsize);
}
