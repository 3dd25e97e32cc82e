/*
 * kafka_dlq.c - dead letters: a consumed message that failed for good goes to
 * the dlq. twin of its topic (see deta/kafka.h for its headers).
 *
 * Dead letters go to deta_topic_dlq_for(topic) (raw.X -> dlq.X) through the
 * borrowed producer, synchronously, retried forever with backoff (until *stop,
 * or with workers until its partition is revoked) since skipping the message
 * would lose it. A message on a topic with no dead-letter twin is logged as an
 * error, counted (deta_consumer_messages_total{outcome="dropped"}) and its
 * offset stored: there is nowhere to put it, and blocking the
 * partition forever would be worse. The wait for a dead letter's
 * acknowledgement watches the same cancellation: once cancelled it allows
 * DETA_KAFKA_CANCEL_GRACE_MS more (an ack that is on its way saves a duplicate
 * dead letter), then gives up, so a stop never waits out the 12 s delivery
 * timeout of an unreachable broker.
 */
#include "kafka_internal.h"

#include <stdio.h>

#include "deta/log.h"
#include "deta/topics.h"

#define DETA_KAFKA_DLQ_SEND_MS 12000    /* one dead-letter send's wait, then again */
#define DETA_KAFKA_CANCEL_GRACE_MS 1000 /* a cancelled dead letter's ack may still come */

static bool cancelled_now(const void *x) { return deta_kafka_cancelled(x); }

static const char *const dead_letter_header_names[] = {
    "x-retry-count", "x-original-topic", "x-original-partition", "x-original-offset", "x-error",
    "x-consumer-group"};

/* The original headers, minus any stale x-* of ours, plus the dead-letter facts. */
static rd_kafka_headers_t *dead_letter_headers(const deta_consumer_t *c,
                                               const rd_kafka_message_t *m, int retries,
                                               const char *why) {
    rd_kafka_headers_t *src = NULL;
    rd_kafka_headers_t *h = rd_kafka_message_headers(m, &src) == RD_KAFKA_RESP_ERR_NO_ERROR
                                ? rd_kafka_headers_copy(src)
                                : rd_kafka_headers_new(5);
    for (size_t i = 0; i < sizeof dead_letter_header_names / sizeof *dead_letter_header_names; i++)
        rd_kafka_header_remove(h, dead_letter_header_names[i]);
    char count[16], partition[16], offset[24];
    snprintf(count, sizeof count, "%d", retries);
    snprintf(partition, sizeof partition, "%d", (int)m->partition);
    snprintf(offset, sizeof offset, "%lld", (long long)m->offset);
    rd_kafka_header_add(h, "x-retry-count", -1, count, -1);
    rd_kafka_header_add(h, "x-original-topic", -1, rd_kafka_topic_name(m->rkt), -1);
    rd_kafka_header_add(h, "x-original-partition", -1, partition, -1);
    rd_kafka_header_add(h, "x-original-offset", -1, offset, -1);
    rd_kafka_header_add(h, "x-error", -1, why, -1);
    rd_kafka_header_add(h, "x-consumer-group", -1, c->group, -1);
    return h;
}

/* Publishes the dead letter until acknowledged; false when cancelled first. */
static bool send_dead_letter(deta_consumer_t *c, const rd_kafka_message_t *m, const char *dlq_topic,
                             int retries, const char *why, const cancel_t *cancel) {
    int backoff = c->backoff_ms;
    for (;;) {
        out_msg_t out = {.topic = dlq_topic,
                         .key = m->key,
                         .key_len = m->key_len,
                         .value = m->payload,
                         .len = m->len,
                         .headers = dead_letter_headers(c, m, retries, why)};
        char err[256] = "";
        size_t nacked = 0;
        give_up_t g = {.now = cancelled_now, .arg = cancel, .grace_ms = DETA_KAFKA_CANCEL_GRACE_MS};
        deta_kafka_send_out(c->dlq, &out, 1, DETA_KAFKA_DLQ_SEND_MS, &g, &nacked, err, sizeof err);
        deta_kafka_free_out_headers(&out, 1);
        if (nacked == 1)
            return true;
        if (deta_kafka_cancelled(cancel)) {
            DETA_WARN("gave up dead-lettering %s[%d]@%lld (stopping or revoked): it will be "
                      "redelivered: %s",
                      rd_kafka_topic_name(m->rkt), (int)m->partition, (long long)m->offset, err);
            return false;
        }
        DETA_ERROR("cannot dead-letter %s[%d]@%lld to %s, retrying in %d ms: %s",
                   rd_kafka_topic_name(m->rkt), (int)m->partition, (long long)m->offset, dlq_topic,
                   backoff, err);
        if (!deta_kafka_sleep_unless_cancelled(backoff, cancel))
            return false;
        backoff = deta_kafka_next_backoff(c, backoff);
    }
}

/* Handles a message that failed for good; false when cancelled before it was done. */
bool deta_kafka_dead_letter(deta_consumer_t *c, const rd_kafka_message_t *m, int retries,
                            const char *why, const cancel_t *cancel) {
    const char *topic = rd_kafka_topic_name(m->rkt);
    char dlq_buf[DETA_TOPIC_MAX + 1];
    const char *dlq_topic = deta_topic_dlq_for(topic, dlq_buf, sizeof dlq_buf);
    if (!dlq_topic) {
        DETA_ERROR("dropping %s[%d]@%lld after %d retries, no dead-letter topic for it: %s", topic,
                   (int)m->partition, (long long)m->offset, retries, why);
        deta_kafka_count_outcome(c, topic, "dropped");
        return true;
    }
    if (!send_dead_letter(c, m, dlq_topic, retries, why, cancel))
        return false;
    DETA_WARN("dead-lettered %s[%d]@%lld to %s after %d retries: %s", topic, (int)m->partition,
              (long long)m->offset, dlq_topic, retries, why);
    deta_kafka_count_outcome(c, topic, "dead_lettered");
    return true;
}
