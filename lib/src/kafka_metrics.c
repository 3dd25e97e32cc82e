/*
 * kafka_metrics.c - the consumer's gauges that are not about one message's
 * outcome (those are kafka_handle.c's deta_consumer_messages_total): how far
 * behind the group is, per partition, and when a message last reached the
 * handler, per topic. docs/observability.md#metrics lists them with the others.
 *
 * Lag. librdkafka computes the consumer lag itself and hands it over in its
 * statistics, every KAFKA_STATISTICS_INTERVAL_MS (statistics.interval.ms), as
 * JSON to the stats callback, which runs on the poller's thread inside
 * rd_kafka_consumer_poll (the main queue is forwarded to the consumer's). That
 * text is read by kafka_stats.c (the rule is in kafka_stats.h), and each
 * partition of a subscribed topic it gives sets
 * deta_consumer_lag_messages{group,topic,partition}. The series of a partition
 * that the statistics no longer give (revoked, now another member's) is unset
 * (deta_gauge_unset): it leaves /metrics, so Prometheus sees it end, rather than
 * keep its last value or read 0, either of which would mislead an alert. A
 * revoke unsets its partitions at once (the rebalance callback), the close
 * unsets them all. The labels take the topic from the subscription, never from
 * the JSON, and a partition number, so outside text never reaches a label.
 * Statistics come only as often as the loop polls: an inline consumer (no
 * workers) retrying one message for a while polls only between that message's
 * attempts' end and the next message, so its lag stands still meanwhile; the
 * retried outcomes and the last-message time tell that story.
 *
 * Last message. deta_consumer_last_message_timestamp_seconds{group,topic} is the
 * Unix time at which the loop last handed a message of the topic to the handler
 * (its first attempt; retries do not move it), set to the consumer's creation
 * until the first message, so that "nothing for N minutes while the lag is above
 * 0" also catches a consumer stuck from its start.
 *
 * Batch sizes. deta_consumer_batch_size{group,topic} observes each handing of
 * messages to the handler: 1 for a message handled alone (the inline loop, a
 * worker that found one message queued), n for a batch of n (opts.batch_fn), by
 * topic: a batch of messages of two topics is one observation in each topic's
 * series, of the number of that topic's messages. Its count is how many times
 * the handler was called, its sum the messages: sum / count is the mean batch.
 * A batch that fell back to one at a time is observed once, as the batch.
 *
 * The lag series are the poller thread's (the stats and rebalance callbacks run
 * there, and the close after the loop): no lock. The last-message gauges are
 * written by the workers too; a gauge set is atomic.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "deta/log.h"
#include "kafka_internal.h"
#include "kafka_stats.h"

struct lag_series {
    size_t topic; /* index in c->topics */
    int32_t partition;
    deta_gauge_t *gauge;
    bool seen; /* in the statistics being read */
};

static double unix_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long topic_index(const deta_consumer_t *c, const char *topic) {
    for (size_t i = 0; i < c->ntopics; i++)
        if (strcmp(c->topics[i].name, topic) == 0)
            return (long)i;
    return -1;
}

/* Messages handed to the handler at once: 1 up to the largest batch_max
 * (DETA_KAFKA_BATCH_MAX, 64; 16 by default). */
static const double batch_buckets[] = {1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64};

void deta_kafka_metrics_register(deta_consumer_t *c) {
    if (!c->metrics)
        return;
    double now = unix_now();
    for (size_t i = 0; i < c->ntopics; i++) {
        char labels[512];
        snprintf(labels, sizeof labels, "group=\"%s\",topic=\"%s\"", c->group, c->topics[i].name);
        c->topics[i].batch_size = deta_histogram(
            c->metrics, "deta_consumer_batch_size",
            "Messages of the topic handed to the handler at once (1: alone; more: a batch "
            "in one transaction)",
            labels, batch_buckets, sizeof batch_buckets / sizeof *batch_buckets);
        c->topics[i].last_gauge = deta_gauge(
            c->metrics, "deta_consumer_last_message_timestamp_seconds",
            "Unix time the consumer last handed a message of the topic to its handler (its "
            "start until the first)",
            labels);
        deta_gauge_set(c->topics[i].last_gauge, now);
    }
}

void deta_kafka_note_handed(deta_consumer_t *c, const char *topic) {
    long t = c->metrics ? topic_index(c, topic) : -1;
    if (t >= 0)
        deta_gauge_set(c->topics[t].last_gauge, unix_now());
}

void deta_kafka_note_batch(deta_consumer_t *c, const char *const *topics, size_t n) {
    if (!c->metrics)
        return;
    for (size_t t = 0; t < c->ntopics; t++) {
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            k += strcmp(topics[i], c->topics[t].name) == 0;
        if (k > 0)
            deta_histogram_observe(c->topics[t].batch_size, (double)k);
    }
}

/* The series of (topic, partition), registered when new; NULL out of memory. */
static lag_series_t *lag_series(deta_consumer_t *c, size_t topic, int32_t partition) {
    for (size_t i = 0; i < c->nlags; i++)
        if (c->lags[i].topic == topic && c->lags[i].partition == partition)
            return &c->lags[i];
    if (c->nlags == c->lags_cap) {
        size_t cap = c->lags_cap ? c->lags_cap * 2 : 16;
        lag_series_t *grown = realloc(c->lags, cap * sizeof *grown);
        if (!grown)
            return NULL;
        c->lags = grown;
        c->lags_cap = cap;
    }
    char labels[512];
    snprintf(labels, sizeof labels, "group=\"%s\",topic=\"%s\",partition=\"%d\"", c->group,
             c->topics[topic].name, (int)partition);
    deta_gauge_t *g = deta_gauge(c->metrics, "deta_consumer_lag_messages",
                                 "Messages of the partition the group has not committed past "
                                 "(librdkafka's consumer_lag), for the partitions assigned here",
                                 labels);
    if (!g)
        return NULL;
    lag_series_t *s = &c->lags[c->nlags++];
    *s = (lag_series_t){.topic = topic, .partition = partition, .gauge = g, .seen = false};
    return s;
}

static void on_lag(const deta_kafka_lag_t *lag, void *arg) {
    deta_consumer_t *c = arg;
    long t = topic_index(c, lag->topic);
    lag_series_t *s = t >= 0 ? lag_series(c, (size_t)t, lag->partition) : NULL;
    if (!s)
        return;
    deta_gauge_set(s->gauge, (double)lag->lag);
    s->seen = true;
}

int deta_kafka_on_stats(rd_kafka_t *rk, char *json, size_t len, void *opaque) {
    (void)rk;
    deta_consumer_t *c = opaque;
    if (!c || !c->metrics)
        return 0;
    for (size_t i = 0; i < c->nlags; i++)
        c->lags[i].seen = false;
    if (deta_kafka_stats_lags(json, len, on_lag, c) < 0) {
        if (!c->stats_refused) /* once: it would come every interval */
            DETA_WARN("kafka consumer %s: librdkafka's statistics are not the JSON expected; "
                      "the lag gauges keep their values",
                      c->group);
        c->stats_refused = true;
        return 0;
    }
    for (size_t i = 0; i < c->nlags; i++)
        if (!c->lags[i].seen)
            deta_gauge_unset(c->lags[i].gauge);
    return 0; /* librdkafka frees json */
}

void deta_kafka_lag_forget(deta_consumer_t *c, const rd_kafka_topic_partition_list_t *parts) {
    for (size_t i = 0; i < c->nlags; i++) {
        bool gone = !parts;
        for (int k = 0; parts && !gone && k < parts->cnt; k++)
            gone = parts->elems[k].partition == c->lags[i].partition &&
                   strcmp(parts->elems[k].topic, c->topics[c->lags[i].topic].name) == 0;
        if (gone)
            deta_gauge_unset(c->lags[i].gauge);
    }
}
