/*
 * kafka.h - the producer and the consumer loop every service uses.
 *
 * Producer: idempotent (enable.idempotence=true, acks=all), keyed by orderId so
 * that the events of one order stay on one partition and in order. Sends are
 * synchronous from the caller's view: deta_producer_send_batch() returns when
 * every message was acknowledged by the broker, one failed, or the caller's
 * timeout passed, and reports how long the acknowledged prefix is, which is what
 * the outbox relay marks as sent. librdkafka never gives a message up while the
 * broker is slow or unreachable (no message timeout: a message failed by a
 * timeout could still land, after the ones behind it), so a message the caller
 * stopped waiting for stays in flight; until it has its report, a later send
 * waits for it (within its own timeout) and fails with nothing sent if it is
 * still out, so that retries do not queue copy after copy behind it; and when
 * that send begins with the same messages (topic, key, value; no headers) that
 * the broker acknowledged after their sender stopped waiting, those count as
 * acknowledged without being published twice (the relay's resend). After a
 * fatal error (an idempotence guarantee broken) the producer replaces its
 * librdkafka handle by itself; meanwhile sends fail as transient.
 *
 * Consumer loop: one group member (group = the service's name) that calls a
 * handler per message. The handler's return value decides what happens:
 *   DETA_OK            effects are durable: the offset is stored for commit;
 *   DETA_ERR_TRANSIENT retried with exponential backoff; dead-lettered once
 *                      max_retries retries were made while the dependencies
 *                      were up (see below; after an outage the retries go on
 *                      at the backoff they had reached);
 *   anything else      dead-lettered at once (malformed, fails validation, cannot
 *                      be applied).
 * Outages are not the message's fault. With opts.dependencies_up set (services
 * get their required health checks, db and kafka, wired in), a transient failure
 * while that hook says "down" does not count against max_retries: the message
 * waits (backoff up to backoff_max_ms, giving up only on stop or revocation),
 * for as long as the outage lasts, and is handled when the hook says "up" again.
 * The first message to wait logs the outage once (and its end once); meanwhile
 * deta_consumer_waiting_on_dependencies{group} counts the waiting messages and
 * deta_consumer_messages_total{topic,outcome="waiting"} each wait. A transient
 * failure while everything is up (a lock that stays taken, a timeout that keeps
 * happening) still uses up the budget and is dead-lettered.
 * A dead letter goes to the dlq. twin of the message's topic with the original key,
 * value and headers, plus x-retry-count, x-original-topic, x-original-partition,
 * x-original-offset, x-error and x-consumer-group (several groups read one topic:
 * the group says which consumer gave up on the message); the offset is stored only once the dead letter is
 * acknowledged. Offsets are committed (auto-commit of stored offsets, and a final
 * commit on close) only for messages whose handling finished, so delivery is
 * at-least-once and handlers must be idempotent (see inbox.h).
 *
 * With opts.metrics, deta_consumer_assigned_partitions{group,topic} is the number
 * of the topic's partitions assigned to this consumer, updated on every
 * rebalance (incremental with cooperative-sticky);
 * deta_consumer_messages_total{topic,outcome} counts each message processed,
 * each retry (retried), each wait for the dependencies (waiting), each dead
 * letter (dead_lettered) and each message dropped for want of a dead-letter
 * topic (dropped), in every mode (one at a time, workers, batches);
 * deta_consumer_lag_messages{group,topic,partition} is librdkafka's consumer lag
 * of each partition assigned here, every KAFKA_STATISTICS_INTERVAL_MS (the series
 * of a partition no longer assigned is left out), and
 * deta_consumer_last_message_timestamp_seconds{group,topic} the Unix time a
 * message last reached the handler, and the histogram
 * deta_consumer_batch_size{group,topic} the messages of the topic handed to the
 * handler at once (1 alone, n in a batch of opts.batch_fn) (kafka_metrics.c).
 *
 * Out of memory: a message the consumer cannot allocate for is never counted as
 * handled; the consumer stops as on *stop and run() fails (see below).
 *
 * Stopping: *stop makes run() return once the messages in hand are finished (a
 * retry or dead-letter loop gives up, leaving its message uncommitted for the
 * group's next member; a dead letter already sent gets a short grace for its
 * acknowledgement). deta_consumer_commit() then commits what was finished and
 * deta_consumer_close() leaves the group, each within a bounded time.
 */
#ifndef DETA_KAFKA_H
#define DETA_KAFKA_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "deta/config.h"
#include "deta/err.h"
#include "deta/metrics.h"

/* The transport settings of cfg (KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*,
 * KAFKA_SSL_*: deta/config.h) set on a librdkafka configuration (an
 * rd_kafka_conf_t *), for a program that makes librdkafka handles of its own (a
 * test's, a tool's): the library's own producer and consumers have them
 * already. DETA_ERR_INVALID when librdkafka refuses one (errstr names it). */
struct rd_kafka_conf_s;
struct deta_span; /* deta/trace.h */
deta_err_t deta_kafka_conf_security(struct rd_kafka_conf_s *conf, const deta_config_t *cfg,
                                    char *errstr, size_t errsize);

typedef struct deta_producer deta_producer_t;
typedef struct deta_consumer deta_consumer_t;

typedef struct deta_kafka_header {
    const char *name;
    const char *value; /* NUL-terminated text */
} deta_kafka_header_t;

typedef struct deta_kafka_out {
    const char *topic;
    const char *key; /* NUL-terminated; NULL for none */
    const char *value;
    size_t len;
    const deta_kafka_header_t *headers;
    size_t nheaders;
    /* Headers that may differ between two sends of the same message (the
     * relay's trace context): a resend is still recognized by topic, key and
     * value (see the producer above). */
    bool resendable;
} deta_kafka_out_t;

deta_producer_t *deta_producer_new(const deta_config_t *cfg, char *errstr, size_t errsize);
/* Flushes what is in flight (bounded wait) and frees. NULL is fine. */
void deta_producer_free(deta_producer_t *p);

/* Produces msgs[0..n) in order and waits up to timeout_ms for their delivery
 * reports. *nacked = the number of leading messages acknowledged. DETA_OK when all
 * were; DETA_ERR_TRANSIENT when the broker is unreachable or slow (timed out:
 * the messages without report stay in flight), earlier abandoned messages are
 * still in flight (nothing sent), or the producer is being replaced after a
 * fatal error. */
deta_err_t deta_producer_send_batch(deta_producer_t *p, const deta_kafka_out_t *msgs, size_t n,
                                    int timeout_ms, size_t *nacked, char *errstr, size_t errsize);
deta_err_t deta_producer_send(deta_producer_t *p, const deta_kafka_out_t *msg, int timeout_ms,
                              char *errstr, size_t errsize);
/* True when the producer has a live connection to the cluster (metadata request
 * answered within timeout_ms) and has not failed fatally. */
bool deta_producer_ping(deta_producer_t *p, int timeout_ms, char *errstr, size_t errsize);
/* send_batch that also stops waiting as soon as *give_up becomes true (polled every
 * few ms): for a caller that is shutting down. A message not acknowledged by then
 * may still be delivered later: the caller must treat it as maybe sent. */
deta_err_t deta_producer_send_batch_until(deta_producer_t *p, const deta_kafka_out_t *msgs,
                                          size_t n, int timeout_ms, const atomic_bool *give_up,
                                          size_t *nacked, char *errstr, size_t errsize);
/* Waits up to timeout_ms for every message in flight to get its delivery report.
 * DETA_OK when none is left; DETA_ERR_TRANSIENT with the count otherwise. */
deta_err_t deta_producer_flush(deta_producer_t *p, int timeout_ms, char *errstr, size_t errsize);
/* Drops every message still queued or in flight (each is reported failed to its
 * sender), so that freeing the producer does not wait for them: for a shutdown
 * out of time. Returns how many there were. */
int deta_producer_purge(deta_producer_t *p);

typedef struct deta_kafka_msg {
    const char *topic;
    int32_t partition;
    int64_t offset;
    const char *key; /* not NUL-terminated; key_len bytes; NULL when none */
    size_t key_len;
    const char *value; /* NUL-terminated copy; len bytes before the NUL */
    size_t len;
    int attempt; /* 0 on first delivery to the handler, then 1, 2, ... on retries */
    /* In a batch handler's messages (deta_consume_batch_fn), the message's
     * consumer span (deta/trace.h), made before the batch so that what the
     * message causes is its child: deta_batch_run makes a db.transaction child
     * of it current while the message is applied. The consumer owns and ends it
     * once the handler returned: a handler never ends it nor keeps it. NULL
     * elsewhere (one at a time the span is the thread's current one), with
     * tracing off, and when it could not be made. */
    struct deta_span *span;
    void *impl;
} deta_kafka_msg_t;

/* A header of a consumed message by name, as NUL-terminated text in buf; NULL when
 * absent. */
const char *deta_kafka_msg_header(const deta_kafka_msg_t *msg, const char *name, char *buf,
                                  size_t bufsize);

typedef deta_err_t (*deta_consume_fn)(const deta_kafka_msg_t *msg, void *opaque, char *errstr,
                                      size_t errsize);

/* Room for the reason a batch handler gives for each message it refuses. */
#define DETA_KAFKA_WHY_MAX 512
/* The longest a worker may wait to fill a batch (deta_consumer_opts_t). */
#define DETA_KAFKA_BATCH_WAIT_MAX_MS 1000
/* The largest fetch_wait_min_ms (deta_consumer_opts_t): librdkafka's default. */
#define DETA_KAFKA_FETCH_WAIT_MIN_MAX_MS 500
/* The fetch_wait_min_ms of the services' consumers off the saga's critical path
 * (order-service following the statuses, inventory-service settling and reading
 * delivery verdicts, payment-service's refunds): half the 200 ms that
 * order-service's and inventory-service's settling batches wait to fill by
 * default (ORDER_BATCH_WAIT_MS lowered does not lower it), or rare events; a
 * tenth of the asks of an idle consumer at 10 ms. */
#define DETA_KAFKA_FETCH_WAIT_RELAXED_MS 100

/* Optional batch handler (workers > 1 only): applies msgs[0..n), n >= 2, the
 * messages already queued for one worker, in one transaction. They come sorted
 * by key, each key's in the order they arrived, so that batches lock rows keyed
 * by the order in one global order and never deadlock on them (rows shared
 * between keys, such as inventory's stock, are not covered: see deta/batch.h's
 * lock timeout), and messages of different keys are applied in key order, not
 * in the order they arrived. It
 * returns DETA_OK once that transaction committed (or when nothing needed it),
 * with results[i] DETA_OK for a message applied (or skipped) and another code,
 * not DETA_ERR_TRANSIENT, for one refused for good and rolled back alone (why[i]
 * says why): those are dead-lettered. Any other return means nothing was
 * applied: the consumer then handles the messages one at a time with fn,
 * retries and all. */
typedef deta_err_t (*deta_consume_batch_fn)(const deta_kafka_msg_t *msgs, size_t n, void *opaque,
                                            deta_err_t *results,
                                            char (*why)[DETA_KAFKA_WHY_MAX]);

/* Zero in any field means its default. */
typedef struct deta_consumer_opts {
    int max_retries;      /* default 5 */
    int backoff_ms;       /* first retry delay, doubled each time; default 200 */
    int backoff_max_ms;   /* default 5000 */
    deta_metrics_t *metrics; /* optional: deta_consumer_* counters by topic */
    /* Concurrency: 0 or 1 handles messages one at a time on the polling thread.
     * N > 1 hands them to N worker threads, every message of one key (one order)
     * always to the same worker, so the events of an order stay in order while
     * independent orders proceed in parallel; a partition's offset advances only
     * past messages that are all finished. The handler is then called from N
     * threads at once: it and its opaque must be thread-safe. */
    int workers;
    /* Optional: true when what the handler needs is reachable (called from the
     * polling or worker threads after a transient failure, so it must be cheap
     * and thread-safe: cache). NULL counts every transient failure against
     * max_retries. deta_service_consume() fills in the service's readiness. */
    bool (*dependencies_up)(void *opaque);
    void *dependencies_opaque;
    /* Optional, with workers > 1: a worker that finds several messages queued
     * hands up to batch_max of them (default 16, at most 64) to batch_fn, called
     * with the consumer's opaque, instead of one at a time to fn. A batch_max
     * above 16 lets each worker queue that many messages before the poller
     * holds their partitions (16 otherwise); each worker's queue is allocated at
     * that length, so a consumer pays only for the batches it asks for. */
    deta_consume_batch_fn batch_fn;
    int batch_max;
    /* Optional, with batch_fn: a worker that finds fewer than batch_max messages
     * queued waits up to batch_wait_ms (0, the default: never; at most
     * DETA_KAFKA_BATCH_WAIT_MAX_MS) for more before it starts, so that a steady
     * trickle is applied in fewer, larger transactions: each message may wait
     * that long more. A stop cuts the wait short. */
    int batch_wait_ms;
    /* Optional: the least fetch.wait.max.ms of this consumer's handle (0, the
     * default: KAFKA_FETCH_WAIT_MAX_MS as configured; a larger configured value
     * stays; at most DETA_KAFKA_FETCH_WAIT_MIN_MAX_MS). For a consumer off the
     * saga's critical path, whose messages may wait that long more (one that
     * already waits to fill its batches, or reads rare events): a broker that
     * answers a fetch only when its wait is over (the local mock) is asked
     * that much less often while there is nothing to read, each ask costing
     * the service and the broker CPU; a real broker answers as soon as data
     * comes, so there it changes only how often an idle consumer asks. */
    int fetch_wait_min_ms;
} deta_consumer_opts_t;

/* group: the consumer group (the service's name). dlq: the producer used for dead
 * letters (borrowed). opts may be NULL for the defaults. */
deta_consumer_t *deta_consumer_new(const deta_config_t *cfg, const char *group,
                                   const char *const *topics, size_t ntopics, deta_consume_fn fn,
                                   void *opaque, deta_producer_t *dlq,
                                   const deta_consumer_opts_t *opts, char *errstr, size_t errsize);
/* Polls and dispatches until *stop becomes true; then returns DETA_OK. Between
 * retries it also watches *stop. DETA_ERR_INTERNAL when it stopped on its own:
 * out of memory for a message (its copy for the handler, its job or offset
 * bookkeeping). That message and the ones after it are left unfinished, their
 * offsets not stored, and run() refuses to go on with this handle (it would
 * skip them): commit, close, and let the service be restarted. */
deta_err_t deta_consumer_run(deta_consumer_t *c, atomic_bool *stop);
/* After run() returned: commits the stored offsets now and waits for the
 * broker's answer, retrying (and serving rebalances meanwhile) while the group
 * is rebalancing, for at most timeout_ms. DETA_OK when committed or nothing was
 * stored. Several consumers of one group in one process should all commit
 * before any of them closes: a member leaving starts a rebalance that makes the
 * others' commits fail until it is over. */
deta_err_t deta_consumer_commit(deta_consumer_t *c, int timeout_ms);
/* After run() returned: commits stored offsets and leaves the group, waiting at
 * most timeout_ms. DETA_OK when that finished in time; otherwise the group
 * redelivers what was not committed. A second call does nothing. */
deta_err_t deta_consumer_close(deta_consumer_t *c, int timeout_ms);
/* Closes (bounded, if deta_consumer_close was not called) and frees. NULL is fine. */
void deta_consumer_free(deta_consumer_t *c);

#endif
