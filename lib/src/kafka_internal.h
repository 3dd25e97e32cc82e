/*
 * kafka_internal.h - private to libdeta: what the kafka_*.c files share
 * (deta/kafka.h is the public side).
 *
 * The producer and the consumer loop are split by subsystem, as librdkafka
 * splits its own:
 *
 *   kafka_conf.c       the settings of a librdkafka handle, producer's and
 *                      consumer's, and where librdkafka's log lines go
 *   kafka_producer.c   the producer: its handle (replaced after a fatal error),
 *                      its poll thread, delivery reports, sending batches
 *   kafka_resend.c     the producer's abandoned batches, kept to recognize a
 *                      resend of messages the broker acknowledged meanwhile
 *   kafka_consumer.c   the consumer handle: creation, the loop without workers,
 *                      the rebalance callback, commit and close
 *   kafka_handle.c     handling one message: retries with backoff, waiting out
 *                      an outage, out of memory, storing its offset
 *   kafka_dlq.c        dead letters: a message that failed for good goes to the
 *                      dlq. twin of its topic
 *   kafka_workers.c    the per-key workers (opts.workers > 1): dispatch,
 *                      backpressure, per-partition watermarks, revokes, stop
 *   kafka_metrics.c    the lag per partition (from librdkafka's statistics,
 *                      read by kafka_stats.c) and the last message's time
 *
 * Each file's top comment holds the design of its part. Names shared between
 * the files start with deta_kafka_ (libdeta is a static library: an extern
 * name must not meet a service's).
 */
#ifndef DETA_KAFKA_INTERNAL_H
#define DETA_KAFKA_INTERNAL_H

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "deta/kafka.h"

#define DETA_KAFKA_POLL_MS 100
/* Jobs queued per worker before the poller holds: DETA_KAFKA_WORKER_QUEUE, or the
 * consumer's batch_max where that is larger, which is at most DETA_KAFKA_BATCH_MAX. */
#define DETA_KAFKA_WORKER_QUEUE 16
#define DETA_KAFKA_BATCH_MAX 64

/* ---- the handles' settings (kafka_conf.c) ---- */

/* librdkafka's log lines, through deta_log. */
void deta_kafka_on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf);
/* The settings of a producer's or a group consumer's handle, callbacks not set;
 * NULL (errstr says why) when librdkafka refuses one. A consumer's
 * fetch.wait.max.ms is KAFKA_FETCH_WAIT_MAX_MS, or fetch_wait_min_ms when that
 * is larger (deta_consumer_opts_t). member names the consumer among its
 * process's consumers of the group (its first topic): with
 * KAFKA_STATIC_MEMBERSHIP on, its group.instance.id is <INSTANCE_ID>.<member>. */
rd_kafka_conf_t *deta_kafka_producer_conf(const deta_config_t *cfg, char *errstr,
                                          size_t errsize);
rd_kafka_conf_t *deta_kafka_consumer_conf(const deta_config_t *cfg, const char *group,
                                          const char *member, int fetch_wait_min_ms,
                                          char *errstr, size_t errsize);

/* ---- the producer (kafka_producer.c, kafka_resend.c) ---- */

typedef struct dr_batch dr_batch_t;

typedef struct dr_slot {
    dr_batch_t *batch;
    rd_kafka_resp_err_t err;
    bool done;
    bool plain; /* produced without headers: its resend can be recognized */
} dr_slot_t;

/* A batch's statuses, referenced by its sender and its messages in flight. */
struct dr_batch {
    size_t refs;    /* the caller + each produced message still without report */
    size_t pending; /* produced messages still without report */
    bool abandoned; /* the caller stopped waiting: pending ones count as orphans */
    dr_slot_t slots[];
};

/* A librdkafka handle of the producer; replaced after a fatal error. */
typedef struct handle {
    rd_kafka_t *rk;
    int users; /* callers using rk now (under the producer's lock) */
} handle_t;

/* A message kept from an abandoned batch, to recognize its resend. */
typedef struct kept_msg {
    char *topic, *key, *value;
    size_t key_len, len;
} kept_msg_t;

/* An abandoned batch: its slots first..first+count-1, the ones its sender did
 * not see acknowledged, with copies of their messages. Holds a reference on b. */
typedef struct abandoned {
    dr_batch_t *b;
    size_t first, count;
    kept_msg_t *msgs;
    struct abandoned *next;
} abandoned_t;

struct deta_producer {
    handle_t *cur;          /* under lock; only the poll thread replaces it */
    rd_kafka_conf_t *conf;  /* the settings, for a replacement handle */
    pthread_t poller;
    atomic_bool stop;
    pthread_mutex_t lock;    /* guards cur, the handles' users, orphans, every batch */
    pthread_cond_t reported; /* a report came, or a handle lost a user */
    size_t orphans;          /* messages of abandoned batches still without report */
    abandoned_t *abandoned;  /* kept, oldest first (under lock) */
    size_t nabandoned;
};

/* A message on its way out: headers owned until produced. */
typedef struct out_msg {
    const char *topic;
    const void *key;
    size_t key_len;
    const void *value;
    size_t len;
    rd_kafka_headers_t *headers;
    bool resendable; /* deta_kafka_out_t's: recognized by topic, key and value */
} out_msg_t;

/* What may end a wait for delivery reports before its deadline: when now(arg)
 * turns true, the wait goes on for at most grace_ms more. */
typedef struct give_up {
    bool (*now)(const void *arg);
    const void *arg;
    int grace_ms;
} give_up_t;

/* Drops one reference under p->lock; true when the caller must free the batch. */
static inline bool deta_kafka_batch_unref(dr_batch_t *b) { return --b->refs == 0; }

/* Sends msgs[0..n) and waits for their reports until timeout_ms passes or g
 * gives up; *nacked is the acknowledged prefix. */
deta_err_t deta_kafka_send_out(deta_producer_t *p, out_msg_t *msgs, size_t n, int timeout_ms,
                               const give_up_t *g, size_t *nacked, char *errstr,
                               size_t errsize);
/* Destroys the headers librdkafka did not take. */
void deta_kafka_free_out_headers(out_msg_t *msgs, size_t n);

/* kafka_resend.c. Hands the caller's reference on b (abandoned, msgs its
 * messages) to the kept list, keeping copies of msgs[first..n). */
void deta_kafka_abandon(deta_producer_t *p, dr_batch_t *b, const out_msg_t *msgs, size_t first,
                        size_t n);
/* Under p->lock, with no abandoned message in flight: marks b's leading slots
 * acknowledged while msgs resend kept messages the broker acknowledged; returns
 * how many. */
size_t deta_kafka_adopt_locked(deta_producer_t *p, dr_batch_t *b, const out_msg_t *msgs,
                               size_t n);
/* Frees every kept batch (the producer is being freed). */
void deta_kafka_abandoned_free_all(deta_producer_t *p);

/* ---- the consumer (kafka_consumer.c, kafka_handle.c, kafka_dlq.c, kafka_workers.c) ---- */

typedef struct worker worker_t;
typedef struct part part_t;
typedef struct lag_series lag_series_t; /* kafka_metrics.c */

/* A subscribed topic, its share of the assigned-partitions gauge and its
 * last-message gauge. */
typedef struct sub_topic {
    char *name;
    deta_gauge_t *assigned_gauge; /* NULL without metrics */
    int assigned;                 /* what this consumer added to the gauge */
    deta_gauge_t *last_gauge;     /* NULL without metrics */
    deta_histogram_t *batch_size; /* NULL without metrics */
} sub_topic_t;

struct deta_consumer {
    rd_kafka_t *rk;
    char group[128]; /* named in each dead letter: which consumer gave up on it */
    deta_consume_fn fn;
    deta_consume_batch_fn batch_fn; /* NULL: one message at a time */
    int batch_max;
    int queue_max;     /* jobs a worker queues before the poller holds */
    int batch_wait_ms; /* a worker waits this long to fill a batch (0: never) */
    int fetch_wait_min_ms; /* opts.fetch_wait_min_ms (0: as configured) */
    void *opaque;
    deta_producer_t *dlq;
    int max_retries;
    int backoff_ms;
    int backoff_max_ms;
    deta_metrics_t *metrics;
    bool (*dependencies_up)(void *opaque);
    void *dependencies_opaque;
    deta_gauge_t *waiting_gauge; /* messages waiting for their dependencies */
    deta_counter_t *pauses;      /* partitions paused for a full worker queue */
    atomic_bool outage;          /* a message is waiting: the outage was logged */
    atomic_int nwaiting;         /* messages waiting now */
    atomic_long outage_since_ms;
    sub_topic_t *topics;
    size_t ntopics;
    bool synced; /* a rebalance callback came: the group gave us an assignment */
    atomic_bool committed; /* deta_consumer_commit succeeded: the close's own commit is moot */
    bool closed;
    deta_err_t close_result;
    /* With workers (nworkers > 1; see kafka_workers.c). */
    int nworkers;
    worker_t *workers;
    pthread_mutex_t lock;    /* guards the queues, current jobs, trackers, stopping */
    pthread_cond_t progress; /* a worker is done with a job */
    bool stopping;           /* workers take no more jobs */
    atomic_bool *stop;       /* deta_consumer_run's flag */
    atomic_bool halt;        /* stopping on its own (out of memory): run() fails */
    part_t *parts;           /* the poller's thread only */
    size_t nheld;            /* the poller's thread only */
    /* The lag gauges (kafka_metrics.c; the poller's thread only). */
    lag_series_t *lags;
    size_t nlags, lags_cap;
    bool stats_refused; /* statistics were unreadable once: logged */
};

/* What makes a retry or dead-letter loop give up on its message: the consumer
 * stopping, or (with workers) the message's partition being revoked. */
typedef struct cancel {
    const deta_consumer_t *c;
    atomic_bool *revoked; /* NULL when only stopping applies */
} cancel_t;

/* kafka_consumer.c: logs and destroys error, when there is one. */
void deta_kafka_log_error(const char *what, rd_kafka_error_t *error);

/* kafka_handle.c. The consumer is to stop: run()'s flag, or a failure of its
 * own (halt). */
bool deta_kafka_must_stop(const deta_consumer_t *c);
bool deta_kafka_cancelled(const cancel_t *x);
/* deta_consumer_messages_total{topic,outcome}, with metrics. */
void deta_kafka_count_outcome(deta_consumer_t *c, const char *topic, const char *outcome);
/* Sleeps ms in short steps; false when cancelled meanwhile. */
bool deta_kafka_sleep_unless_cancelled(int ms, const cancel_t *cancel);
int deta_kafka_next_backoff(const deta_consumer_t *c, int backoff);
/* Stores next (the offset after the last finished message) for commit. */
void deta_kafka_store_offset(deta_consumer_t *c, const char *topic, int32_t partition,
                             int64_t next);
/* Out of memory for what message m needs: the consumer stops (run() fails). */
void deta_kafka_halt(deta_consumer_t *c, const rd_kafka_message_t *m, const char *doing);
/* A copy of m as the handler sees it; value is a NUL-terminated copy to free. */
bool deta_kafka_msg_view(const rd_kafka_message_t *m, deta_kafka_msg_t *msg);
/* Runs the handler with retries and dead letters: true when the message is
 * finished (its offset may be stored), false when cancelled first. */
bool deta_kafka_handle_message(deta_consumer_t *c, const rd_kafka_message_t *m,
                               const cancel_t *cancel);

/* The consumer span of m ("process <topic>"), child of its traceparent header
 * (deta/trace.h), started now; NULL with tracing off. */
struct deta_span;
struct deta_span *deta_kafka_span_begin(const deta_consumer_t *c, const rd_kafka_message_t *m);

/* kafka_dlq.c: handles a message that failed for good; false when cancelled
 * before it was done. */
bool deta_kafka_dead_letter(deta_consumer_t *c, const rd_kafka_message_t *m, int retries,
                            const char *why, const cancel_t *cancel);

/* kafka_metrics.c. Registers the last-message gauges (with metrics). */
void deta_kafka_metrics_register(deta_consumer_t *c);
/* A message of topic is handed to the handler (its first attempt). */
void deta_kafka_note_handed(deta_consumer_t *c, const char *topic);
/* n messages (of topics[0..n)) are handed to the handler together (1: alone):
 * deta_consumer_batch_size{group,topic} observes, for each topic among them,
 * how many were of it. */
void deta_kafka_note_batch(deta_consumer_t *c, const char *const *topics, size_t n);
/* librdkafka's stats callback (the consumer is the handle's opaque). */
int deta_kafka_on_stats(rd_kafka_t *rk, char *json, size_t len, void *opaque);
/* Unsets the lag series of parts (all of them when NULL): no longer assigned. */
void deta_kafka_lag_forget(deta_consumer_t *c, const rd_kafka_topic_partition_list_t *parts);

/* kafka_workers.c (only with nworkers > 1). */
bool deta_kafka_workers_init(deta_consumer_t *c);
void deta_kafka_workers_destroy(deta_consumer_t *c);
deta_err_t deta_kafka_run_workers(deta_consumer_t *c);
/* The revoke callback's part: settles the revoked partitions' work. */
void deta_kafka_revoke_parts(deta_consumer_t *c, const rd_kafka_topic_partition_list_t *revoked);

#endif
