/*
 * kafka.c - the producer and the consumer loop (see deta/kafka.h), over librdkafka.
 *
 * Producer. Idempotent (enable.idempotence, acks=all), linger.ms=1, and no
 * message timeout (message.timeout.ms=0): librdkafka never gives up a message
 * while the broker is slow or unreachable, it retries it in order until the
 * broker has it. A timeout there would fail a message that the broker may still
 * append, and let the messages behind it through: 1..5 could land as 1,4,5, and
 * the outbox relay's resend of 2..5 would put event 4 before event 2 (issue #22).
 * How long a caller waits is the caller's timeout; a message it stops waiting
 * for stays in flight. While such abandoned messages have no report yet, a new
 * send first waits (within its own timeout) for them, and fails with nothing
 * sent if they are still out: the relay retrying a batch every few seconds
 * through an outage would otherwise queue one more copy of it each time.
 * Such a sender sends the same messages again (the relay: the rows it could not
 * mark), and those the broker acknowledged after it stopped waiting are in the
 * log already. So the producer keeps a copy of each abandoned batch's messages
 * (those without headers, the relay's; at most DETA_KAFKA_KEEP_ABANDONED
 * batches): a send whose leading messages equal them (topic, key, value), in
 * order, while they were acknowledged, reports those as acknowledged without
 * producing them again, and the rest go out behind them. An outage then does
 * not publish a row twice.
 *
 * Delivery reports are served by one background thread per producer that does
 * nothing but rd_kafka_poll(): callers of send_batch just wait on a condition
 * variable, several threads may send at once (the outbox relay, consumers writing
 * dead letters), and an idle producer still has its error and log events served.
 *
 * A fatal error (an idempotence guarantee broken, e.g. the broker's
 * OUT_OF_ORDER_SEQUENCE_NUMBER) makes a librdkafka producer refuse everything
 * for good. The poll thread then replaces the handle by a new one (a new
 * producer id) made from the same settings: the old handle's messages are
 * purged, so their senders get a failure and send again (at-least-once), and
 * the old handle is destroyed once no caller uses it (each caller holds the
 * handle it uses, counted under the lock). Until then sends fail as transient.
 *
 * A batch's statuses live in a block that is referenced by the caller and by each
 * produced message still awaiting its report (the message's opaque points at its
 * slot). Whoever drops the last reference frees it, so a caller that gives up on
 * timeout returns at once, and the late reports land in memory that is still
 * there. deta_producer_free() flushes (bounded), purges what is left and serves
 * the purge reports, so no block outlives the producer.
 *
 * Consumer loop, workers 0 or 1. One message at a time, in the order of
 * rd_kafka_consumer_poll(). A message whose handler asks for a retry is kept and
 * re-handled after a backoff
 * (200 ms doubled up to 5 s, interruptible by *stop; a zero field of the options
 * selects that default, since services pass zeroed options) without polling:
 * this stalls the consumer's other partitions for the few seconds of the retries,
 * but keeps every partition strictly in order with no pause/seek bookkeeping, and
 * librdkafka's own thread keeps the group session alive (only a stall longer than
 * max.poll.interval.ms, 5 min, e.g. a dead-letter topic unreachable that long,
 * costs the membership; the message is then redelivered). Offsets are stored
 * (enable.auto.offset.store=false) only once a message is handled or its dead
 * letter acknowledged; auto-commit sends stored offsets, and close commits the
 * last ones. A message abandoned because of *stop is not stored: the group's next
 * member gets it again.
 *
 * Consumer loop, workers N > 1 (its own section below explains it in full). The
 * polling thread hands each message to worker hash(key) % N through a short
 * bounded queue, pausing a partition whose next message finds its queue full; the
 * workers run the same handling as above. A partition's offset is stored only up
 * to its completed watermark (offsets.h): the highest offset that, with every
 * earlier one dispatched, is finished. A revoke waits (bounded) for the revoked
 * partitions' running handlers; a stop lets each worker finish its message.
 *
 * Dead letters go to deta_topic_dlq_for(topic) (raw.X -> dlq.X) through the borrowed producer,
 * synchronously, retried forever with backoff (until *stop, or with workers until
 * its partition is revoked) since skipping the
 * message would lose it. A message on a topic with no dead-letter twin is logged
 * as an error and its offset stored: there is nowhere to put it, and blocking the
 * partition forever would be worse. The wait for a dead letter's acknowledgement
 * watches the same cancellation: once cancelled it allows DETA_KAFKA_CANCEL_GRACE_MS
 * more (an ack that is on its way saves a duplicate dead letter), then gives up,
 * so a stop never waits out the 12 s delivery timeout of an unreachable broker.
 *
 * Retry budget and outages. A transient failure first asks opts.dependencies_up.
 * Down: the failure is the outage's, not the message's; the message waits (the
 * same backoff, not counted) and the consumer's outage flag, set by the first
 * waiting message and cleared by the first one to find the dependencies back,
 * makes the outage one warning and one "back" line in the log whatever the
 * number of messages and retries. Up: the retry counts, and once max_retries
 * counted retries failed the message is dead-lettered. When the dependencies come
 * back the backoff restarts from backoff_ms, so the waiting messages are handled
 * within a few hundred ms. A message's attempt number (and x-retry-count) counts
 * every retry, waiting ones included. An inline consumer waiting out an outage
 * longer than max.poll.interval.ms (5 min) loses its membership; its message is
 * then redelivered to the group, which is what an outage that long deserves.
 *
 * Rebalance callback. Set in both modes: with workers it settles revoked
 * partitions (below); in both it keeps the assigned-partitions gauge, recounted
 * from rd_kafka_assignment() after each assign or unassign, and applied as a
 * difference, so two consumers of one group in a process add up.
 *
 * Commit. deta_consumer_commit() commits the stored offsets explicitly, before
 * the close: the commit librdkafka makes while closing comes after the unassign
 * and fails (REBALANCE_IN_PROGRESS, ILLEGAL_GENERATION) when another member of
 * the group (the service's other consumer, stopping at the same time) has just
 * left. An explicit commit that meets a rebalance is retried, serving the
 * rebalance, until its deadline.
 *
 * Close. deta_consumer_close() uses rd_kafka_consumer_close_queue() and serves
 * that queue (rebalances included) until the close is done or its time
 * is up, instead of rd_kafka_consumer_close(), which can block for as long as the
 * group coordinator is unreachable. The handle is then destroyed without a second
 * close. librdkafka 2.0.2 aborts when a cooperative-sticky consumer is destroyed
 * after its first JoinGroup answer but before its first assignment (its assignor
 * state is still NULL: librdkafka issue #4312, fixed in 2.3.0), which a service
 * stopped during its first rebalance would hit. So a consumer that never had a
 * rebalance callback (after each SyncGroup there is one, even for an empty
 * assignment) first polls, within the close's time, until it gets one; what it
 * polls meanwhile is dropped unstored, and so redelivered.
 *
 * Fetch latency. fetch.wait.max.ms is KAFKA_FETCH_WAIT_MAX_MS (default 10).
 * A real broker answers a fetch as soon as fetch.min.bytes (1) has arrived, so
 * there the setting only bounds how often an idle consumer asks (every 10 ms:
 * 100 small requests a second per broker it fetches from, cheap for a broker,
 * and what keeps an idle consumer's first message quick); librdkafka's mock
 * cluster (the local broker) answers only when the wait has passed, data or not,
 * so with the default 500 every hop of the saga cost half a second there.
 * Linger is 1 ms: the outbox relay and the dead letters send whole batches and
 * wait for them, so a longer linger is added to every hop of the saga.
 *
 * Out of memory. The memory a message needs (its copy for the handler, its job,
 * its partition's state and offset tracker) comes through alloc.h, which tests
 * can make fail. Failing it sets the consumer's halt flag: the message is not
 * handled and not counted finished, so no stored offset passes it; the consumer
 * stops as on *stop (workers finish their messages in hand, a worker that gave
 * one up drops its queue), and run() returns DETA_ERR_INTERNAL and refuses to
 * run again on the handle. Going on would let the next message's offset pass
 * the one left behind, losing it.
 *
 * Memory. librdkafka prefetches up to queued.max.messages.kbytes (64 MB) per
 * consumer, in fetch answers of up to fetch.max.bytes (50 MB): sized for big
 * brokers, and a service has a few consumers. With 8 MB and 1 MB, query-api
 * catching up on a 10000-event backlog peaked at 25 MB RSS instead of 29 to 32
 * MB, as fast; 2 MB with queued.min.messages 1000 kept it under 20 MB but cut
 * its catch-up rate several times (measured on the local stack, issue #6).
 *
 * Assignment strategy: cooperative-sticky (incremental rebalances: members that
 * keep their partitions keep consuming while another joins or leaves). It works
 * against librdkafka's mock cluster too, since the assignment is computed by the
 * group leader on the client side.
 */
#include "clock.h"
#include "deta/kafka.h"

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "deta/log.h"
#include "deta/topics.h"
#include "offsets.h"

#define DETA_KAFKA_MESSAGE_TIMEOUT "0" /* librdkafka never gives a message up */
#define DETA_KAFKA_FLUSH_MS 5000        /* deta_producer_free's bounded wait */
#define DETA_KAFKA_DLQ_SEND_MS 12000    /* one dead-letter send's wait, then again */
#define DETA_KAFKA_REPLACE_RETRY_MS 1000 /* a failed replacement of a fatal handle */
#define DETA_KAFKA_KEEP_ABANDONED 8      /* abandoned batches kept to recognize resends */
#define DETA_KAFKA_POLL_MS 100
#define DETA_KAFKA_LINGER_MS "1" /* the relay sends whole batches: waiting adds latency */
#define DETA_KAFKA_QUEUED_MAX_KBYTES "8192"   /* prefetch per consumer (default 64 MB) */
#define DETA_KAFKA_FETCH_MAX_BYTES "1048576"  /* one fetch answer (default 50 MB) */
#define DETA_KAFKA_ASSIGNMENT "cooperative-sticky"
#define DETA_KAFKA_MAX_WORKERS 256
#define DETA_KAFKA_WORKER_QUEUE 16      /* jobs queued per worker before the poller holds */
#define DETA_KAFKA_HELD_POLL_MS 10      /* poll wait while messages are held */
#define DETA_KAFKA_REVOKE_WAIT_MS 10000 /* a revoke waits this long for running handlers */
#define DETA_KAFKA_SEEK_MS 5000
#define DETA_KAFKA_CANCEL_GRACE_MS 1000 /* a cancelled dead letter's ack may still come */
#define DETA_KAFKA_GIVE_UP_POLL_MS 20   /* how often a wait looks at its give-up flag */
#define DETA_KAFKA_CLOSE_MS 10000       /* deta_consumer_free's close when none was made */

/* ---- shared helpers ---- */


/* The CLOCK_MONOTONIC time ms from now, for pthread_cond_timedwait. */

/* librdkafka's log lines go through deta_log. Its LOG_ERR lines (a refused
 * connection, a broker gone) are conditions it recovers from by itself: warnings
 * for us; a fatal error comes through the error callback. */
static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    deta_log_level_t lvl = level <= 4 ? DETA_LOG_WARN : level <= 6 ? DETA_LOG_INFO : DETA_LOG_DEBUG;
    deta_log(lvl, NULL, NULL, "kafka %s %s: %s", rd_kafka_name(rk), fac, buf);
}

static bool conf_set_all(rd_kafka_conf_t *conf, const char *const (*kv)[2], size_t n,
                         char *errstr, size_t errsize) {
    char why[256];
    for (size_t i = 0; i < n; i++) {
        if (rd_kafka_conf_set(conf, kv[i][0], kv[i][1], why, sizeof why) != RD_KAFKA_CONF_OK) {
            deta_errf(DETA_ERR_INVALID, errstr, errsize, "kafka setting %s=%s: %s", kv[i][0],
                      kv[i][1], why);
            return false;
        }
    }
    return true;
}

/* What a failed delivery means for the caller. */
static deta_err_t err_from_kafka(rd_kafka_resp_err_t e) {
    switch (e) {
    case RD_KAFKA_RESP_ERR_NO_ERROR:
        return DETA_OK;
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
        return DETA_ERR_INVALID;
    default: /* timeouts, transport, queue full, leader changes, purges, a fatal
              * error (the handle is being replaced)... */
        return DETA_ERR_TRANSIENT;
    }
}

/* ---- producer: delivery tracking ---- */

typedef struct dr_batch dr_batch_t;

typedef struct dr_slot {
    dr_batch_t *batch;
    rd_kafka_resp_err_t err;
    bool done;
    bool plain; /* produced without headers: its resend can be recognized */
} dr_slot_t;

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
} out_msg_t;

/* Drops one reference under p->lock; true when the caller must free the batch. */
static bool batch_unref(dr_batch_t *b) { return --b->refs == 0; }

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    deta_producer_t *p = opaque;
    dr_slot_t *slot = m->_private;
    if (!slot)
        return;
    pthread_mutex_lock(&p->lock);
    slot->err = m->err;
    slot->done = true;
    dr_batch_t *b = slot->batch;
    b->pending--;
    if (b->abandoned)
        p->orphans--;
    bool last = batch_unref(b);
    pthread_cond_broadcast(&p->reported);
    pthread_mutex_unlock(&p->lock);
    if (last)
        free(b);
}

static void on_producer_error(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    (void)opaque;
    deta_log(err == RD_KAFKA_RESP_ERR__FATAL ? DETA_LOG_ERROR : DETA_LOG_WARN, NULL, NULL,
             "kafka %s: %s: %s", rd_kafka_name(rk), rd_kafka_err2name(err), reason);
}

/* The current handle, held until handle_give: a replacement waits for it. */
static handle_t *handle_take(deta_producer_t *p) {
    pthread_mutex_lock(&p->lock);
    handle_t *h = p->cur;
    h->users++;
    pthread_mutex_unlock(&p->lock);
    return h;
}

static void handle_give(deta_producer_t *p, handle_t *h) {
    pthread_mutex_lock(&p->lock);
    if (--h->users == 0)
        pthread_cond_broadcast(&p->reported);
    pthread_mutex_unlock(&p->lock);
}

/* A new librdkafka handle with the producer's settings; NULL (errstr says why)
 * when it cannot be made. */
static handle_t *handle_new(deta_producer_t *p, char *errstr, size_t errsize) {
    handle_t *h = calloc(1, sizeof *h);
    rd_kafka_conf_t *conf = rd_kafka_conf_dup(p->conf);
    char why[512] = "out of memory";
    if (h && conf && (h->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof why)))
        return h;
    if (conf)
        rd_kafka_conf_destroy(conf);
    free(h);
    deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "cannot create the Kafka producer: %s", why);
    return NULL;
}

/* Fails what is still queued or in flight on h, serves those reports (so that
 * their senders are released), waits until nobody uses h, and destroys it. */
static void handle_retire(deta_producer_t *p, handle_t *h) {
    rd_kafka_purge(h->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_flush(h->rk, DETA_KAFKA_FLUSH_MS);
    pthread_mutex_lock(&p->lock);
    while (h->users > 0)
        pthread_cond_wait(&p->reported, &p->lock);
    pthread_mutex_unlock(&p->lock);
    rd_kafka_destroy(h->rk);
    free(h);
}

/* The poll thread, after a fatal error of the current handle: a new one takes
 * its place (see the top). False when none could be made (tried again later). */
static bool replace_fatal_handle(deta_producer_t *p) {
    char fatal[512], err[512];
    rd_kafka_resp_err_t code = rd_kafka_fatal_error(p->cur->rk, fatal, sizeof fatal);
    handle_t *h = handle_new(p, err, sizeof err);
    if (!h) {
        DETA_ERROR("kafka producer failed fatally (%s: %s) and cannot be replaced yet: %s",
                   rd_kafka_err2name(code), fatal, err);
        return false;
    }
    pthread_mutex_lock(&p->lock);
    handle_t *old = p->cur;
    p->cur = h;
    pthread_mutex_unlock(&p->lock);
    DETA_ERROR("kafka producer failed fatally (%s: %s): replaced by a new one; its %d messages "
               "not yet acknowledged are reported failed, for their senders to send again",
               rd_kafka_err2name(code), fatal, rd_kafka_outq_len(old->rk));
    handle_retire(p, old);
    return true;
}

static void *producer_poll_main(void *arg) {
    deta_producer_t *p = arg;
    while (!atomic_load(&p->stop)) {
        rd_kafka_poll(p->cur->rk, DETA_KAFKA_POLL_MS); /* this thread alone swaps cur */
        if (rd_kafka_fatal_error(p->cur->rk, NULL, 0) != RD_KAFKA_RESP_ERR_NO_ERROR &&
            !replace_fatal_handle(p)) {
            struct timespec ts = {DETA_KAFKA_REPLACE_RETRY_MS / 1000,
                                  (DETA_KAFKA_REPLACE_RETRY_MS % 1000) * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

/* ---- producer: lifecycle ---- */

static rd_kafka_conf_t *producer_conf(const deta_config_t *cfg, deta_producer_t *p, char *errstr,
                                      size_t errsize) {
    const char *const kv[][2] = {
        {"bootstrap.servers", cfg->kafka_bootstrap},
        {"client.id", cfg->instance_id[0] ? cfg->instance_id : "deta"},
        {"enable.idempotence", "true"},
        {"acks", "all"},
        {"linger.ms", DETA_KAFKA_LINGER_MS},
        {"message.timeout.ms", DETA_KAFKA_MESSAGE_TIMEOUT},
    };
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (!conf_set_all(conf, kv, sizeof kv / sizeof *kv, errstr, errsize)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_opaque(conf, p);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_error_cb(conf, on_producer_error);
    rd_kafka_conf_set_log_cb(conf, on_log);
    return conf;
}

static void producer_release(deta_producer_t *p) {
    if (p->conf)
        rd_kafka_conf_destroy(p->conf);
    pthread_cond_destroy(&p->reported);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

deta_producer_t *deta_producer_new(const deta_config_t *cfg, char *errstr, size_t errsize) {
    if (!cfg || !cfg->kafka_bootstrap[0]) {
        deta_errf(DETA_ERR_INVALID, errstr, errsize, "no Kafka bootstrap servers configured");
        return NULL;
    }
    deta_producer_t *p = calloc(1, sizeof *p);
    if (!p) {
        deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
        return NULL;
    }
    atomic_init(&p->stop, false);
    pthread_mutex_init(&p->lock, NULL);
    deta_cond_init_monotonic(&p->reported);

    p->conf = producer_conf(cfg, p, errstr, errsize);
    if (p->conf && (p->cur = handle_new(p, errstr, errsize)) &&
        pthread_create(&p->poller, NULL, producer_poll_main, p) != 0) {
        deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "cannot start the producer's poll thread");
        rd_kafka_destroy(p->cur->rk);
        free(p->cur);
        p->cur = NULL;
    }
    if (!p->cur) {
        producer_release(p);
        return NULL;
    }
    return p;
}

static void abandoned_free_all(deta_producer_t *p);

void deta_producer_free(deta_producer_t *p) {
    if (!p)
        return;
    /* The poll thread goes first (it may be replacing the handle); flush serves
     * the reports itself. */
    atomic_store(&p->stop, true);
    pthread_join(p->poller, NULL);
    rd_kafka_t *rk = p->cur->rk;
    if (rd_kafka_flush(rk, DETA_KAFKA_FLUSH_MS) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        DETA_WARN("kafka producer closing with %d messages undelivered", rd_kafka_outq_len(rk));
        /* Their reports (purged) release the batches waiting for them. */
        rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_flush(rk, DETA_KAFKA_FLUSH_MS);
    }
    rd_kafka_destroy(rk);
    free(p->cur);
    abandoned_free_all(p);
    producer_release(p);
}

/* ---- producer: sending ---- */

static rd_kafka_resp_err_t produce_one(rd_kafka_t *rk, out_msg_t *m, dr_slot_t *slot) {
    rd_kafka_resp_err_t e = rd_kafka_producev(
        rk, RD_KAFKA_V_TOPIC(m->topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_KEY(m->key, m->key_len), RD_KAFKA_V_VALUE((void *)m->value, m->len),
        RD_KAFKA_V_HEADERS(m->headers), RD_KAFKA_V_OPAQUE(slot), RD_KAFKA_V_END);
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
        m->headers = NULL; /* librdkafka owns them now */
    return e;
}

/* What may end a wait for delivery reports before its deadline: when now(arg)
 * turns true, the wait goes on for at most grace_ms more. */
typedef struct give_up {
    bool (*now)(const void *arg);
    const void *arg;
    int grace_ms;
} give_up_t;

/* Waits under p->lock until *count (a batch's pending reports, the producer's
 * orphans) is 0, the deadline passes, or g says to give up (then true). */
static bool await_none(deta_producer_t *p, const size_t *count, long deadline,
                       const give_up_t *g) {
    bool gave_up = false;
    while (*count > 0) {
        long now = deta_clock_ms();
        if (g && !gave_up && g->now(g->arg)) {
            gave_up = true;
            if (now + g->grace_ms < deadline)
                deadline = now + g->grace_ms;
        }
        long left = deadline - now;
        if (left <= 0)
            break;
        if (g && !gave_up && left > DETA_KAFKA_GIVE_UP_POLL_MS)
            left = DETA_KAFKA_GIVE_UP_POLL_MS;
        struct timespec ts = deta_clock_after(left);
        pthread_cond_timedwait(&p->reported, &p->lock, &ts);
    }
    return gave_up && *count > 0;
}

/* Under p->lock: the acknowledged prefix and the error that ended it. */
static size_t acked_prefix(const dr_batch_t *b, size_t produced, rd_kafka_resp_err_t *first) {
    size_t i = 0;
    while (i < produced && b->slots[i].done && b->slots[i].err == RD_KAFKA_RESP_ERR_NO_ERROR)
        i++;
    *first = i < produced && b->slots[i].done ? b->slots[i].err : RD_KAFKA_RESP_ERR__TIMED_OUT;
    return i;
}

/* Hands msgs[from..n) to librdkafka in order, each holding a reference on b;
 * stops at the first that cannot be enqueued (a later one must not overtake
 * it). Returns the index after the last one enqueued. */
static size_t enqueue_all(deta_producer_t *p, rd_kafka_t *rk, dr_batch_t *b, out_msg_t *msgs,
                          size_t from, size_t n, rd_kafka_resp_err_t *err) {
    for (size_t i = from; i < n; i++) {
        b->slots[i].batch = b;
        b->slots[i].plain = msgs[i].headers == NULL;
        pthread_mutex_lock(&p->lock);
        b->refs++;
        b->pending++;
        pthread_mutex_unlock(&p->lock);
        *err = produce_one(rk, &msgs[i], &b->slots[i]);
        if (*err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            pthread_mutex_lock(&p->lock); /* no report will come for this one */
            b->refs--;
            b->pending--;
            pthread_mutex_unlock(&p->lock);
            return i;
        }
    }
    return n;
}

/* ---- producer: abandoned batches and their resends (see the top) ---- */

static void kept_free(kept_msg_t *k, size_t n) {
    for (size_t i = 0; k && i < n; i++) {
        free(k[i].topic);
        free(k[i].key);
        free(k[i].value);
    }
    free(k);
}

/* Copies of msgs[first..n) up to the first with headers; NULL when none or out
 * of memory (then the resend is produced again: a duplicate, never a loss). */
static kept_msg_t *kept_copy(const dr_batch_t *b, const out_msg_t *msgs, size_t first, size_t n,
                             size_t *count) {
    *count = 0;
    while (first + *count < n && b->slots[first + *count].plain)
        (*count)++;
    kept_msg_t *k = *count ? calloc(*count, sizeof *k) : NULL;
    for (size_t i = 0; k && i < *count; i++) {
        const out_msg_t *m = &msgs[first + i];
        k[i] = (kept_msg_t){.topic = strdup(m->topic),
                            .key = malloc(m->key_len + 1),
                            .value = malloc(m->len + 1),
                            .key_len = m->key_len,
                            .len = m->len};
        if (!k[i].topic || !k[i].key || !k[i].value) {
            kept_free(k, i + 1);
            return NULL;
        }
        if (m->key_len)
            memcpy(k[i].key, m->key, m->key_len);
        if (m->len)
            memcpy(k[i].value, m->value, m->len);
    }
    if (!k)
        *count = 0;
    return k;
}

/* Under p->lock: drops a kept batch and its reference; returns the batch when
 * that was the last reference, for the caller to free after unlocking. */
static dr_batch_t *abandoned_drop(abandoned_t *a) {
    dr_batch_t *b = batch_unref(a->b) ? a->b : NULL;
    kept_free(a->msgs, a->count);
    free(a);
    return b;
}

/* Hands the caller's reference on b (abandoned, msgs its messages) to the kept
 * list, keeping copies of the ones from first on; drops the oldest beyond the
 * limit. */
static void abandon(deta_producer_t *p, dr_batch_t *b, const out_msg_t *msgs, size_t first,
                    size_t n) {
    abandoned_t *a = calloc(1, sizeof *a);
    if (a)
        a->msgs = kept_copy(b, msgs, first, n, &a->count);
    dr_batch_t *to_free[2] = {NULL, NULL};
    pthread_mutex_lock(&p->lock);
    if (!a || !a->msgs) {
        to_free[0] = batch_unref(b) ? b : NULL;
        free(a);
    } else {
        a->b = b;
        a->first = first;
        abandoned_t **tail = &p->abandoned;
        while (*tail)
            tail = &(*tail)->next;
        *tail = a;
        if (++p->nabandoned > DETA_KAFKA_KEEP_ABANDONED) {
            abandoned_t *oldest = p->abandoned;
            p->abandoned = oldest->next;
            p->nabandoned--;
            to_free[1] = abandoned_drop(oldest);
        }
    }
    pthread_mutex_unlock(&p->lock);
    free(to_free[0]);
    free(to_free[1]);
}

static bool same_msg(const out_msg_t *m, const kept_msg_t *k) {
    return !m->headers && m->len == k->len && m->key_len == k->key_len &&
           strcmp(m->topic, k->topic) == 0 && (!m->len || !memcmp(m->value, k->value, m->len)) &&
           (!m->key_len || !memcmp(m->key, k->key, m->key_len));
}

/* Under p->lock, with no abandoned message in flight: marks b's leading slots
 * acknowledged while msgs resend kept messages, in order, that the broker
 * acknowledged; the kept batches passed by such a resend are dropped (into
 * *to_free, for the caller to free after unlocking). Returns how many. */
static size_t adopt_resends(deta_producer_t *p, dr_batch_t *b, const out_msg_t *msgs, size_t n,
                            dr_batch_t **to_free, size_t *nfree) {
    size_t i = 0;
    abandoned_t *a = p->abandoned;
    size_t k = 0;
    while (a && i < n) {
        if (k == a->count) {
            a = a->next;
            k = 0;
            continue;
        }
        const dr_slot_t *slot = &a->b->slots[a->first + k];
        if (!slot->done || slot->err != RD_KAFKA_RESP_ERR_NO_ERROR ||
            !same_msg(&msgs[i], &a->msgs[k]))
            break;
        b->slots[i].batch = b;
        b->slots[i].done = true;
        b->slots[i].err = RD_KAFKA_RESP_ERR_NO_ERROR;
        i++;
        k++;
    }
    if (i == 0)
        return 0; /* another sender's messages, maybe: the kept ones stay */
    abandoned_t *stop = a && k < a->count ? a : (a ? a->next : NULL);
    while (p->abandoned != stop) { /* superseded by this resend */
        abandoned_t *gone = p->abandoned;
        p->abandoned = gone->next;
        p->nabandoned--;
        dr_batch_t *f = abandoned_drop(gone);
        if (f)
            to_free[(*nfree)++] = f;
    }
    return i;
}

static void abandoned_free_all(deta_producer_t *p) {
    while (p->abandoned) {
        abandoned_t *a = p->abandoned;
        p->abandoned = a->next;
        free(abandoned_drop(a));
    }
    p->nabandoned = 0;
}

/* Waits (within the send's deadline) until no abandoned message is in flight:
 * DETA_OK, or why not. */
static deta_err_t await_orphans(deta_producer_t *p, long deadline, const give_up_t *g,
                                char *errstr, size_t errsize) {
    pthread_mutex_lock(&p->lock);
    await_none(p, &p->orphans, deadline, g);
    size_t orphans = p->orphans;
    pthread_mutex_unlock(&p->lock);
    if (orphans == 0)
        return DETA_OK;
    return deta_errf(DETA_ERR_TRANSIENT, errstr, errsize,
                     "%zu earlier messages still await the broker's acknowledgement (broker slow "
                     "or unreachable): nothing sent behind them",
                     orphans);
}

/* The current handle for a send, or NULL (errstr says why) after a fatal error. */
static handle_t *handle_for_send(deta_producer_t *p, char *errstr, size_t errsize) {
    handle_t *h = handle_take(p);
    char why[256];
    if (rd_kafka_fatal_error(h->rk, why, sizeof why) == RD_KAFKA_RESP_ERR_NO_ERROR)
        return h;
    handle_give(p, h);
    deta_errf(DETA_ERR_TRANSIENT, errstr, errsize,
              "kafka producer failed fatally, being replaced: %s", why);
    return NULL;
}

/* Under p->lock after await_orphans: marks the resent messages already
 * acknowledged (see adopt_resends) and frees what that released; returns how
 * many. */
static size_t adopt_locked(deta_producer_t *p, dr_batch_t *b, const out_msg_t *msgs, size_t n) {
    dr_batch_t *to_free[DETA_KAFKA_KEEP_ABANDONED + 1];
    size_t nfree = 0;
    size_t adopted = adopt_resends(p, b, msgs, n, to_free, &nfree);
    for (size_t i = 0; i < nfree; i++)
        free(to_free[i]); /* unreferenced: no report can reach them */
    return adopted;
}

static deta_err_t send_out_msgs(deta_producer_t *p, out_msg_t *msgs, size_t n, int timeout_ms,
                                const give_up_t *g, size_t *nacked, char *errstr,
                                size_t errsize) {
    *nacked = 0;
    long deadline = deta_clock_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    deta_err_t err = await_orphans(p, deadline, g, errstr, errsize);
    if (err != DETA_OK)
        return err;
    dr_batch_t *b = calloc(1, sizeof *b + n * sizeof b->slots[0]);
    if (!b)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    handle_t *h = handle_for_send(p, errstr, errsize);
    if (!h) {
        free(b);
        return DETA_ERR_TRANSIENT;
    }
    b->refs = 1;
    pthread_mutex_lock(&p->lock);
    size_t adopted = adopt_locked(p, b, msgs, n);
    pthread_mutex_unlock(&p->lock);
    rd_kafka_resp_err_t enqueue_err = RD_KAFKA_RESP_ERR_NO_ERROR;
    size_t produced = enqueue_all(p, h->rk, b, msgs, adopted, n, &enqueue_err);
    handle_give(p, h);
    pthread_mutex_lock(&p->lock);
    bool gave_up = await_none(p, &b->pending, deadline, g);
    rd_kafka_resp_err_t first;
    *nacked = acked_prefix(b, produced, &first);
    size_t pending = b->pending;
    if (pending > 0) { /* they stay in flight: later sends wait for them */
        b->abandoned = true;
        p->orphans += pending;
    }
    bool last = pending > 0 ? false : batch_unref(b);
    pthread_mutex_unlock(&p->lock);
    if (pending > 0)
        abandon(p, b, msgs, *nacked, produced); /* takes the caller's reference */
    else if (last)
        free(b);
    if (*nacked == n)
        return DETA_OK;
    if (*nacked == produced)
        first = enqueue_err;
    if (gave_up && first == RD_KAFKA_RESP_ERR__TIMED_OUT && pending > 0)
        return deta_errf(DETA_ERR_TRANSIENT, errstr, errsize,
                         "gave up waiting (stopping): %zu of %zu messages acknowledged", *nacked,
                         n);
    if (first == RD_KAFKA_RESP_ERR__TIMED_OUT && pending > 0)
        return deta_errf(DETA_ERR_TRANSIENT, errstr, errsize,
                         "timed out after %d ms: %zu of %zu messages acknowledged", timeout_ms,
                         *nacked, n);
    return deta_errf(err_from_kafka(first), errstr, errsize,
                     "message %zu of %zu to %s not delivered: %s", *nacked + 1, n,
                     msgs[*nacked].topic, rd_kafka_err2str(first));
}

static deta_err_t check_out(const deta_kafka_out_t *m, size_t i, char *errstr, size_t errsize) {
    if (!m->topic || !*m->topic || (!m->value && m->len > 0) || (!m->headers && m->nheaders))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "message %zu: bad topic, value or headers", i);
    for (size_t h = 0; h < m->nheaders; h++)
        if (!m->headers[h].name || !*m->headers[h].name || !m->headers[h].value)
            return deta_errf(DETA_ERR_INVALID, errstr, errsize, "message %zu: bad header %zu", i, h);
    return DETA_OK;
}

static rd_kafka_headers_t *headers_of(const deta_kafka_out_t *m) {
    rd_kafka_headers_t *h = rd_kafka_headers_new(m->nheaders);
    for (size_t i = 0; i < m->nheaders; i++)
        rd_kafka_header_add(h, m->headers[i].name, -1, m->headers[i].value, -1);
    return h;
}

static void free_out_headers(out_msg_t *msgs, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (msgs[i].headers)
            rd_kafka_headers_destroy(msgs[i].headers);
}

static bool flag_set(const void *flag) { return atomic_load((const atomic_bool *)flag); }

static deta_err_t send_batch(deta_producer_t *p, const deta_kafka_out_t *msgs, size_t n,
                             int timeout_ms, const give_up_t *g, size_t *nacked, char *errstr,
                             size_t errsize) {
    size_t ignored;
    if (!nacked)
        nacked = &ignored;
    *nacked = 0;
    if (!p || (!msgs && n > 0))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "bad arguments to send_batch");
    for (size_t i = 0; i < n; i++) {
        deta_err_t err = check_out(&msgs[i], i, errstr, errsize);
        if (err != DETA_OK)
            return err;
    }
    if (n == 0)
        return DETA_OK;
    out_msg_t *out = calloc(n, sizeof *out);
    if (!out)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    for (size_t i = 0; i < n; i++) {
        out[i] = (out_msg_t){.topic = msgs[i].topic,
                             .key = msgs[i].key,
                             .key_len = msgs[i].key ? strlen(msgs[i].key) : 0,
                             .value = msgs[i].value,
                             .len = msgs[i].len,
                             .headers = msgs[i].nheaders ? headers_of(&msgs[i]) : NULL};
    }
    deta_err_t err = send_out_msgs(p, out, n, timeout_ms, g, nacked, errstr, errsize);
    free_out_headers(out, n);
    free(out);
    return err;
}

deta_err_t deta_producer_send_batch(deta_producer_t *p, const deta_kafka_out_t *msgs, size_t n,
                                    int timeout_ms, size_t *nacked, char *errstr, size_t errsize) {
    return send_batch(p, msgs, n, timeout_ms, NULL, nacked, errstr, errsize);
}

deta_err_t deta_producer_send_batch_until(deta_producer_t *p, const deta_kafka_out_t *msgs,
                                          size_t n, int timeout_ms, const atomic_bool *give_up,
                                          size_t *nacked, char *errstr, size_t errsize) {
    give_up_t g = {.now = flag_set, .arg = give_up, .grace_ms = 0};
    return send_batch(p, msgs, n, timeout_ms, give_up ? &g : NULL, nacked, errstr, errsize);
}

int deta_producer_purge(deta_producer_t *p) {
    if (!p)
        return 0;
    handle_t *h = handle_take(p);
    int n = rd_kafka_outq_len(h->rk);
    rd_kafka_purge(h->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    handle_give(p, h);
    return n;
}

deta_err_t deta_producer_flush(deta_producer_t *p, int timeout_ms, char *errstr, size_t errsize) {
    if (!p)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "no producer");
    handle_t *h = handle_take(p);
    int left = rd_kafka_flush(h->rk, timeout_ms > 0 ? timeout_ms : 0) == RD_KAFKA_RESP_ERR_NO_ERROR
                   ? 0
                   : rd_kafka_outq_len(h->rk);
    handle_give(p, h);
    if (left == 0)
        return DETA_OK;
    return deta_errf(DETA_ERR_TRANSIENT, errstr, errsize,
                     "%d messages still without delivery report after %d ms", left, timeout_ms);
}

deta_err_t deta_producer_send(deta_producer_t *p, const deta_kafka_out_t *msg, int timeout_ms,
                              char *errstr, size_t errsize) {
    size_t nacked;
    if (!msg)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "no message");
    return deta_producer_send_batch(p, msg, 1, timeout_ms, &nacked, errstr, errsize);
}

bool deta_producer_ping(deta_producer_t *p, int timeout_ms, char *errstr, size_t errsize) {
    if (!p) {
        deta_errf(DETA_ERR_INVALID, errstr, errsize, "no producer");
        return false;
    }
    handle_t *h = handle_for_send(p, errstr, errsize);
    if (!h)
        return false;
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(h->rk, 0, NULL, &md, timeout_ms);
    handle_give(p, h);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        deta_errf(DETA_ERR_TRANSIENT, errstr, errsize, "no answer from the Kafka cluster: %s",
                  rd_kafka_err2str(e));
        return false;
    }
    bool ok = md->broker_cnt > 0;
    rd_kafka_metadata_destroy(md);
    if (!ok)
        deta_errf(DETA_ERR_TRANSIENT, errstr, errsize, "the Kafka cluster lists no broker");
    return ok;
}

/* ---- consumer ---- */

typedef struct worker worker_t;
typedef struct part part_t;

/* A subscribed topic and its share of the assigned-partitions gauge. */
typedef struct sub_topic {
    char *name;
    deta_gauge_t *assigned_gauge; /* NULL without metrics */
    int assigned;                 /* what this consumer added to the gauge */
} sub_topic_t;

struct deta_consumer {
    rd_kafka_t *rk;
    char group[128]; /* named in each dead letter: which consumer gave up on it */
    deta_consume_fn fn;
    deta_consume_batch_fn batch_fn; /* NULL: one message at a time */
    int batch_max;
    void *opaque;
    deta_producer_t *dlq;
    int max_retries;
    int backoff_ms;
    int backoff_max_ms;
    deta_metrics_t *metrics;
    bool (*dependencies_up)(void *opaque);
    void *dependencies_opaque;
    deta_gauge_t *waiting_gauge; /* messages waiting for their dependencies */
    atomic_bool outage;          /* a message is waiting: the outage was logged */
    atomic_int nwaiting;         /* messages waiting now */
    atomic_long outage_since_ms;
    sub_topic_t *topics;
    size_t ntopics;
    bool synced; /* a rebalance callback came: the group gave us an assignment */
    atomic_bool committed; /* deta_consumer_commit succeeded: the close's own commit is moot */
    bool closed;
    deta_err_t close_result;
    /* With workers (nworkers > 1; see "consumer: workers" below). */
    int nworkers;
    worker_t *workers;
    pthread_mutex_t lock;    /* guards the queues, current jobs, trackers, stopping */
    pthread_cond_t progress; /* a worker is done with a job */
    bool stopping;           /* workers take no more jobs */
    atomic_bool *stop;       /* deta_consumer_run's flag */
    atomic_bool halt;        /* stopping on its own (out of memory): run() fails */
    part_t *parts;           /* the poller's thread only */
    size_t nheld;            /* the poller's thread only */
};

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *partitions, void *opaque);
static bool workers_init(deta_consumer_t *c);
static void workers_destroy(deta_consumer_t *c);

const char *deta_kafka_msg_header(const deta_kafka_msg_t *msg, const char *name, char *buf,
                                  size_t bufsize) {
    if (!msg || !msg->impl || !name || !buf || bufsize == 0)
        return NULL;
    rd_kafka_headers_t *hdrs = NULL;
    const void *val = NULL;
    size_t size = 0;
    if (rd_kafka_message_headers(msg->impl, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        rd_kafka_header_get_last(hdrs, name, &val, &size) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return NULL;
    if (size > bufsize - 1)
        size = bufsize - 1;
    if (val)
        memcpy(buf, val, size);
    else
        size = 0;
    buf[size] = '\0';
    return buf;
}

/* The consumer's librdkafka log: as on_log, except that the commit librdkafka
 * makes while closing, after deta_consumer_commit() did it, failing because the
 * group is rebalancing (the service's other consumer left) is no news. */
static void on_consumer_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    const deta_consumer_t *c = rd_kafka_opaque(rk);
    if (c && atomic_load(&c->committed) && strcmp(fac, "COMMITFAIL") == 0) {
        deta_log(DETA_LOG_INFO, NULL, NULL,
                 "kafka %s: the commit on leaving failed, the offsets were committed before: %s",
                 rd_kafka_name(rk), buf);
        return;
    }
    on_log(rk, level, fac, buf);
}

static rd_kafka_conf_t *consumer_conf(const deta_config_t *cfg, const char *group,
                                      deta_consumer_t *c, char *errstr, size_t errsize) {
    int session = cfg->kafka_session_timeout_ms > 0 ? cfg->kafka_session_timeout_ms : 45000;
    int fetch_wait = cfg->kafka_fetch_wait_max_ms > 0 ? cfg->kafka_fetch_wait_max_ms : 10;
    char session_s[16], heartbeat_s[16], fetch_wait_s[16];
    snprintf(session_s, sizeof session_s, "%d", session);
    snprintf(fetch_wait_s, sizeof fetch_wait_s, "%d", fetch_wait);
    snprintf(heartbeat_s, sizeof heartbeat_s, "%d", session / 3 > 0 ? session / 3 : 1);
    const char *const kv[][2] = {
        {"bootstrap.servers", cfg->kafka_bootstrap},
        {"client.id", cfg->instance_id[0] ? cfg->instance_id : group},
        {"group.id", group},
        {"session.timeout.ms", session_s},
        {"heartbeat.interval.ms", heartbeat_s},
        {"enable.auto.commit", "true"},
        {"enable.auto.offset.store", "false"},
        {"auto.offset.reset", "earliest"},
        {"partition.assignment.strategy", DETA_KAFKA_ASSIGNMENT},
        {"fetch.wait.max.ms", fetch_wait_s},
        {"queued.max.messages.kbytes", DETA_KAFKA_QUEUED_MAX_KBYTES},
        {"fetch.max.bytes", DETA_KAFKA_FETCH_MAX_BYTES},
    };
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (!conf_set_all(conf, kv, sizeof kv / sizeof *kv, errstr, errsize)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_log_cb(conf, on_consumer_log);
    /* Revocations must wait for the workers; assignments feed the gauge. */
    rd_kafka_conf_set_opaque(conf, c);
    rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
    return conf;
}

static deta_err_t check_consumer_args(const deta_config_t *cfg, const char *group,
                                      const char *const *topics, size_t ntopics,
                                      deta_consume_fn fn, deta_producer_t *dlq,
                                      const deta_consumer_opts_t *opts, char *errstr,
                                      size_t errsize) {
    if (!cfg || !cfg->kafka_bootstrap[0] || !group || !*group || !fn || !dlq)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "a consumer needs a configuration, a group, a handler and a producer");
    if (!topics || ntopics == 0)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "a consumer needs topics");
    for (size_t i = 0; i < ntopics; i++)
        if (!topics[i] || !*topics[i])
            return deta_errf(DETA_ERR_INVALID, errstr, errsize, "topic %zu is empty", i);
    if (opts && (opts->max_retries < 0 || opts->backoff_ms < 0 || opts->backoff_max_ms < 0))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "negative retry settings");
    if (opts && opts->batch_max < 0)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "negative batch_max");
    if (opts && (opts->workers < 0 || opts->workers > DETA_KAFKA_MAX_WORKERS))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "workers must be 0..%d, not %d",
                         DETA_KAFKA_MAX_WORKERS, opts->workers);
    return DETA_OK;
}

/* Zero (or no opts) selects a default: the service passes zeroed options. */
static void apply_opts(deta_consumer_t *c, const deta_consumer_opts_t *opts) {
    c->max_retries = opts && opts->max_retries ? opts->max_retries : 5;
    c->backoff_ms = opts && opts->backoff_ms ? opts->backoff_ms : 200;
    c->backoff_max_ms = opts && opts->backoff_max_ms ? opts->backoff_max_ms : 5000;
    if (c->backoff_max_ms < c->backoff_ms)
        c->backoff_max_ms = c->backoff_ms;
    c->metrics = opts ? opts->metrics : NULL;
    c->nworkers = opts && opts->workers > 1 ? opts->workers : 0;
    c->dependencies_up = opts ? opts->dependencies_up : NULL;
    c->dependencies_opaque = opts ? opts->dependencies_opaque : NULL;
    c->batch_fn = c->nworkers > 1 && opts ? opts->batch_fn : NULL;
    c->batch_max = opts && opts->batch_max > 0 && opts->batch_max < DETA_KAFKA_WORKER_QUEUE
                       ? opts->batch_max
                       : DETA_KAFKA_WORKER_QUEUE;
}

/* The gauges of this consumer's group (and topics), when it has metrics. */
static void register_gauges(deta_consumer_t *c) {
    if (!c->metrics)
        return;
    char labels[512];
    snprintf(labels, sizeof labels, "group=\"%s\"", c->group);
    c->waiting_gauge = deta_gauge(c->metrics, "deta_consumer_waiting_on_dependencies",
                                  "Messages whose handling waits for a dependency to come back",
                                  labels);
    for (size_t i = 0; i < c->ntopics; i++) {
        snprintf(labels, sizeof labels, "group=\"%s\",topic=\"%s\"", c->group,
                 c->topics[i].name);
        c->topics[i].assigned_gauge =
            deta_gauge(c->metrics, "deta_consumer_assigned_partitions",
                       "Partitions of the topic assigned to this consumer", labels);
    }
}

static bool copy_topics(deta_consumer_t *c, const char *const *topics, size_t ntopics) {
    c->topics = calloc(ntopics, sizeof *c->topics);
    if (!c->topics)
        return false;
    c->ntopics = ntopics;
    for (size_t i = 0; i < ntopics; i++)
        if (!(c->topics[i].name = strdup(topics[i])))
            return false;
    return true;
}

/* Recounts this consumer's partitions per topic and moves the gauges by the
 * difference (poller's thread, in the rebalance callback or at close). */
static void update_assigned(deta_consumer_t *c, bool none) {
    rd_kafka_topic_partition_list_t *list = NULL;
    if (!none && rd_kafka_assignment(c->rk, &list) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return;
    for (size_t t = 0; t < c->ntopics; t++) {
        int n = 0;
        for (int i = 0; list && i < list->cnt; i++)
            if (strcmp(list->elems[i].topic, c->topics[t].name) == 0)
                n++;
        if (c->topics[t].assigned_gauge && n != c->topics[t].assigned)
            deta_gauge_add(c->topics[t].assigned_gauge, n - c->topics[t].assigned);
        c->topics[t].assigned = n;
    }
    if (list)
        rd_kafka_topic_partition_list_destroy(list);
}

static deta_err_t subscribe(rd_kafka_t *rk, const char *const *topics, size_t ntopics,
                            char *errstr, size_t errsize) {
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new((int)ntopics);
    for (size_t i = 0; i < ntopics; i++)
        rd_kafka_topic_partition_list_add(list, topics[i], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(rk, list);
    rd_kafka_topic_partition_list_destroy(list);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "cannot subscribe: %s",
                         rd_kafka_err2str(e));
    return DETA_OK;
}

static void consumer_release(deta_consumer_t *c) {
    if (c->rk)
        rd_kafka_destroy_flags(c->rk, c->closed ? RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE : 0);
    workers_destroy(c);
    for (size_t i = 0; c->topics && i < c->ntopics; i++)
        free(c->topics[i].name);
    free(c->topics);
    free(c);
}

deta_consumer_t *deta_consumer_new(const deta_config_t *cfg, const char *group,
                                   const char *const *topics, size_t ntopics, deta_consume_fn fn,
                                   void *opaque, deta_producer_t *dlq,
                                   const deta_consumer_opts_t *opts, char *errstr,
                                   size_t errsize) {
    if (check_consumer_args(cfg, group, topics, ntopics, fn, dlq, opts, errstr, errsize))
        return NULL;
    deta_consumer_t *c = calloc(1, sizeof *c);
    if (!c) {
        deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
        return NULL;
    }
    c->fn = fn;
    c->opaque = opaque;
    c->dlq = dlq;
    atomic_init(&c->outage, false);
    atomic_init(&c->nwaiting, 0);
    atomic_init(&c->committed, false);
    atomic_init(&c->outage_since_ms, 0);
    atomic_init(&c->halt, false);
    snprintf(c->group, sizeof c->group, "%s", group);
    apply_opts(c, opts);
    if (!copy_topics(c, topics, ntopics) || !workers_init(c)) {
        deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
        consumer_release(c);
        return NULL;
    }
    char why[512];
    rd_kafka_conf_t *conf = consumer_conf(cfg, group, c, errstr, errsize);
    if (conf && !(c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof why))) {
        rd_kafka_conf_destroy(conf);
        deta_errf(DETA_ERR_INVALID, errstr, errsize, "cannot create the Kafka consumer: %s", why);
    }
    if (!c->rk) {
        consumer_release(c);
        return NULL;
    }
    register_gauges(c);
    rd_kafka_poll_set_consumer(c->rk);
    if (subscribe(c->rk, topics, ntopics, errstr, errsize) != DETA_OK) {
        consumer_release(c);
        return NULL;
    }
    return c;
}

/* An event of the close queue: a rebalance goes to the rebalance callback (the
 * queue hands it over as an event, not as a callback call); others are dropped. */
static void serve_close_event(deta_consumer_t *c, rd_kafka_event_t *ev) {
    if (!ev)
        return;
    if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_REBALANCE)
        on_rebalance(c->rk, rd_kafka_event_error(ev), rd_kafka_event_topic_partition_list(ev), c);
    rd_kafka_event_destroy(ev);
}

/* One commit of the stored offsets, waiting for its answer until the deadline:
 * the request's error, else the first partition's error. */
static rd_kafka_resp_err_t commit_once(deta_consumer_t *c, rd_kafka_queue_t *q, long deadline) {
    rd_kafka_resp_err_t e = rd_kafka_commit_queue(c->rk, NULL, q, NULL, NULL);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
        return e;
    e = RD_KAFKA_RESP_ERR__TIMED_OUT;
    long left;
    while ((left = deadline - deta_clock_ms()) > 0) {
        rd_kafka_event_t *ev = rd_kafka_queue_poll(q, (int)left);
        if (!ev)
            continue;
        bool answer = rd_kafka_event_type(ev) == RD_KAFKA_EVENT_OFFSET_COMMIT;
        if (answer) {
            e = rd_kafka_event_error(ev);
            const rd_kafka_topic_partition_list_t *list = rd_kafka_event_topic_partition_list(ev);
            for (int i = 0; e == RD_KAFKA_RESP_ERR_NO_ERROR && list && i < list->cnt; i++)
                e = list->elems[i].err;
        }
        rd_kafka_event_destroy(ev);
        if (answer)
            break;
    }
    return e;
}

deta_err_t deta_consumer_commit(deta_consumer_t *c, int timeout_ms) {
    if (!c || c->closed)
        return DETA_ERR_INVALID;
    long deadline = deta_clock_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    rd_kafka_queue_t *q = rd_kafka_queue_new(c->rk);
    rd_kafka_resp_err_t e;
    while ((e = commit_once(c, q, deadline)) != RD_KAFKA_RESP_ERR_NO_ERROR &&
           e != RD_KAFKA_RESP_ERR__NO_OFFSET && deta_clock_ms() < deadline) {
        /* A rebalance (someone left or joined) must finish first, and it needs
         * this consumer's callbacks: serve them for a while; polled messages are
         * dropped unstored, so redelivered. */
        long retry_at = deta_clock_ms() + DETA_KAFKA_POLL_MS;
        while (deta_clock_ms() < retry_at) {
            rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, DETA_KAFKA_POLL_MS / 4);
            if (m)
                rd_kafka_message_destroy(m);
        }
    }
    rd_kafka_queue_destroy(q);
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR || e == RD_KAFKA_RESP_ERR__NO_OFFSET) {
        atomic_store(&c->committed, true);
        return DETA_OK;
    }
    DETA_WARN("kafka consumer %s: offsets not committed within %d ms (%s): what was handled "
              "since the last commit is redelivered",
              c->group, timeout_ms, rd_kafka_err2str(e));
    return DETA_ERR_TRANSIENT;
}

/* Polls (dropping messages, unstored) until the first rebalance callback or the
 * deadline: see "Close" at the top. */
static void await_first_assignment(deta_consumer_t *c, long deadline) {
    if (!c->synced)
        DETA_INFO("kafka consumer %s: closing during its first rebalance; waiting for it",
                  c->group);
    while (!c->synced && deta_clock_ms() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, DETA_KAFKA_POLL_MS / 2);
        if (m)
            rd_kafka_message_destroy(m);
    }
}

deta_err_t deta_consumer_close(deta_consumer_t *c, int timeout_ms) {
    if (!c)
        return DETA_ERR_INVALID;
    if (c->closed)
        return c->close_result;
    long deadline = deta_clock_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    await_first_assignment(c, deadline);
    c->closed = true;
    c->close_result = DETA_OK;
    rd_kafka_queue_t *q = rd_kafka_queue_new(c->rk);
    rd_kafka_error_t *error = rd_kafka_consumer_close_queue(c->rk, q);
    if (error) {
        DETA_WARN("kafka consumer close: %s", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
        c->close_result = DETA_ERR_INTERNAL;
    } else {
        while (!rd_kafka_consumer_closed(c->rk) && deta_clock_ms() < deadline)
            serve_close_event(c, rd_kafka_queue_poll(q, DETA_KAFKA_POLL_MS / 2));
        if (!rd_kafka_consumer_closed(c->rk)) {
            DETA_WARN("kafka consumer %s: close not finished after %d ms (coordinator "
                      "unreachable?): offsets not committed are redelivered",
                      c->group, timeout_ms);
            c->close_result = DETA_ERR_TRANSIENT;
        }
    }
    rd_kafka_queue_destroy(q);
    update_assigned(c, true);
    return c->close_result;
}

void deta_consumer_free(deta_consumer_t *c) {
    if (!c)
        return;
    deta_consumer_close(c, DETA_KAFKA_CLOSE_MS);
    consumer_release(c);
}

/* ---- consumer: handling one message (on the poller or on a worker) ---- */

/* The consumer is to stop: run()'s flag, or a failure of its own (halt). */
static bool must_stop(const deta_consumer_t *c) {
    return atomic_load(c->stop) || atomic_load(&c->halt);
}

/* What makes a retry or dead-letter loop give up on its message: the consumer
 * stopping, or (with workers) the message's partition being revoked. */
typedef struct cancel {
    const deta_consumer_t *c;
    atomic_bool *revoked; /* NULL when only stopping applies */
} cancel_t;

static bool cancelled(const cancel_t *x) {
    return must_stop(x->c) || (x->revoked && atomic_load(x->revoked));
}

static bool cancelled_now(const void *x) { return cancelled(x); }

static void count_outcome(deta_consumer_t *c, const char *topic, const char *outcome) {
    if (!c->metrics)
        return;
    char labels[256];
    snprintf(labels, sizeof labels, "topic=\"%s\",outcome=\"%s\"", topic, outcome);
    deta_counter_inc(deta_counter(c->metrics, "deta_consumer_messages_total",
                                  "Messages the consumer loop finished or retried, by outcome",
                                  labels));
}

/* Sleeps ms in short steps; false when cancelled meanwhile. */
static bool sleep_unless_cancelled(int ms, const cancel_t *cancel) {
    long deadline = deta_clock_ms() + ms;
    for (;;) {
        if (cancelled(cancel))
            return false;
        long left = deadline - deta_clock_ms();
        if (left <= 0)
            return true;
        long step = left < 50 ? left : 50;
        struct timespec ts = {0, step * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static int next_backoff(const deta_consumer_t *c, int backoff) {
    return backoff >= c->backoff_max_ms / 2 ? c->backoff_max_ms : backoff * 2;
}

/* Stores next (the offset after the last finished message) for commit. */
static void store_offset(deta_consumer_t *c, const char *topic, int32_t partition, int64_t next) {
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(list, topic, partition)->offset = next;
    rd_kafka_resp_err_t e = rd_kafka_offsets_store(c->rk, list);
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
        e = list->elems[0].err;
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
        DETA_WARN("cannot store offset %s[%d]@%lld (partition revoked? it will be redelivered): %s",
                  topic, (int)partition, (long long)(next - 1), rd_kafka_err2str(e));
    rd_kafka_topic_partition_list_destroy(list);
}

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
        send_out_msgs(c->dlq, &out, 1, DETA_KAFKA_DLQ_SEND_MS, &g, &nacked, err, sizeof err);
        free_out_headers(&out, 1);
        if (nacked == 1)
            return true;
        if (cancelled(cancel)) {
            DETA_WARN("gave up dead-lettering %s[%d]@%lld (stopping or revoked): it will be "
                      "redelivered: %s",
                      rd_kafka_topic_name(m->rkt), (int)m->partition, (long long)m->offset, err);
            return false;
        }
        DETA_ERROR("cannot dead-letter %s[%d]@%lld to %s, retrying in %d ms: %s",
                   rd_kafka_topic_name(m->rkt), (int)m->partition, (long long)m->offset, dlq_topic,
                   backoff, err);
        if (!sleep_unless_cancelled(backoff, cancel))
            return false;
        backoff = next_backoff(c, backoff);
    }
}

/* Handles a message that failed for good; false when cancelled before it was done. */
static bool dead_letter(deta_consumer_t *c, const rd_kafka_message_t *m, int retries,
                        const char *why, const cancel_t *cancel) {
    const char *topic = rd_kafka_topic_name(m->rkt);
    char dlq_buf[DETA_TOPIC_MAX + 1];
    const char *dlq_topic = deta_topic_dlq_for(topic, dlq_buf, sizeof dlq_buf);
    if (!dlq_topic) {
        DETA_ERROR("dropping %s[%d]@%lld after %d retries, no dead-letter topic for it: %s", topic,
                   (int)m->partition, (long long)m->offset, retries, why);
        return true;
    }
    if (!send_dead_letter(c, m, dlq_topic, retries, why, cancel))
        return false;
    DETA_WARN("dead-lettered %s[%d]@%lld to %s after %d retries: %s", topic, (int)m->partition,
              (long long)m->offset, dlq_topic, retries, why);
    count_outcome(c, topic, "dead_lettered");
    return true;
}

/* ---- consumer: waiting out an outage ---- */

/* True unless the consumer's dependencies hook says they are down. */
static bool dependencies_up(const deta_consumer_t *c) {
    return !c->dependencies_up || c->dependencies_up(c->dependencies_opaque);
}

/* A message starts waiting for its dependencies; the first one logs the outage. */
static void wait_begins(deta_consumer_t *c, const rd_kafka_message_t *m, const char *why) {
    if (c->waiting_gauge)
        deta_gauge_add(c->waiting_gauge, 1);
    atomic_fetch_add(&c->nwaiting, 1);
    if (atomic_exchange(&c->outage, true))
        return;
    atomic_store(&c->outage_since_ms, deta_clock_ms());
    DETA_WARN("%s: dependencies are down (%s[%d]@%lld failed: %s); messages wait for them "
              "without using up their %d retries",
              c->group, rd_kafka_topic_name(m->rkt), (int)m->partition, (long long)m->offset,
              why, c->max_retries);
}

/* A waiting message is done waiting; up tells whether the dependencies came back
 * (the first to see it logs the end of the outage) or it gave up (stopping,
 * revoked: when the last waiting message gives up the flag goes quietly, so
 * that the next outage is logged). */
static void wait_ends(deta_consumer_t *c, bool up) {
    if (c->waiting_gauge)
        deta_gauge_add(c->waiting_gauge, -1);
    bool last = atomic_fetch_sub(&c->nwaiting, 1) == 1;
    if (up && atomic_exchange(&c->outage, false))
        DETA_INFO("%s: dependencies are back after %ld ms; waiting messages resume", c->group,
                  deta_clock_ms() - atomic_load(&c->outage_since_ms));
    else if (!up && last)
        atomic_store(&c->outage, false);
}

/* ---- consumer: handling one message ---- */

/* Out of memory for what message m needs: the consumer stops (run() fails),
 * leaving m and what follows it unfinished, so that no offset passes it. */
static void halt(deta_consumer_t *c, const rd_kafka_message_t *m, const char *doing) {
    DETA_ERROR("%s: out of memory %s %s[%d]@%lld: the consumer stops; that message and the "
               "ones after it are redelivered",
               c->group, doing, rd_kafka_topic_name(m->rkt), (int)m->partition,
               (long long)m->offset);
    atomic_store(&c->halt, true);
}

/* A copy of m as the handler sees it; value is a NUL-terminated copy to free. */
static bool msg_view(const rd_kafka_message_t *m, deta_kafka_msg_t *msg) {
    char *value = deta_malloc(m->len + 1);
    if (!value)
        return false;
    if (m->len)
        memcpy(value, m->payload, m->len);
    value[m->len] = '\0';
    *msg = (deta_kafka_msg_t){.topic = rd_kafka_topic_name(m->rkt),
                              .partition = m->partition,
                              .offset = m->offset,
                              .key = m->key,
                              .key_len = m->key ? m->key_len : 0,
                              .value = value,
                              .len = m->len,
                              .impl = (void *)m};
    return true;
}

/* Runs the handler, retrying transient failures, dead-lettering what fails for
 * good; retries made while the dependencies are down do not count (see the top).
 * True when the message is finished one way or the other (its offset may be
 * stored); false when cancelled first (it must be redelivered). */
static bool handle_message(deta_consumer_t *c, const rd_kafka_message_t *m,
                           const cancel_t *cancel) {
    deta_kafka_msg_t msg;
    if (!msg_view(m, &msg)) {
        halt(c, m, "copying");
        return false;
    }
    const char *topic = msg.topic;
    bool finished = false, waiting = false;
    int counted = 0, backoff = c->backoff_ms;
    for (;;) {
        char why[512] = "";
        deta_err_t err = c->fn(&msg, c->opaque, why, sizeof why);
        if (err == DETA_OK) {
            count_outcome(c, topic, "processed");
            finished = true;
            break;
        }
        if (!why[0])
            snprintf(why, sizeof why, "handler failed: %s", deta_err_name(err));
        bool up = err == DETA_ERR_TRANSIENT && dependencies_up(c);
        if (up && waiting) { /* back: a fresh start with the whole budget's backoff */
            waiting = false;
            wait_ends(c, true);
            backoff = c->backoff_ms;
        }
        /* A transient failure while the consumer is being stopped or revoked is
         * never the message's last word: it is left for redelivery (a handler
         * may fail transiently because the service stops, after work that the
         * next attempt resumes), not dead-lettered on a spent budget. */
        if (err == DETA_ERR_TRANSIENT && cancelled(cancel))
            break;
        if (err != DETA_ERR_TRANSIENT || (up && counted >= c->max_retries)) {
            finished = dead_letter(c, m, msg.attempt, why, cancel);
            break;
        }
        if (up) {
            counted++;
            DETA_WARN("retrying %s[%d]@%lld in %d ms (retry %d of %d): %s", topic,
                      (int)m->partition, (long long)m->offset, backoff, counted, c->max_retries,
                      why);
            count_outcome(c, topic, "retried");
        } else {
            if (!waiting)
                wait_begins(c, m, why);
            waiting = true;
            count_outcome(c, topic, "waiting");
        }
        if (!sleep_unless_cancelled(backoff, cancel))
            break;
        backoff = next_backoff(c, backoff);
        msg.attempt++;
    }
    if (waiting)
        wait_ends(c, finished);
    free((char *)msg.value);
    return finished;
}

/* ---- consumer: one message at a time on the poller (workers 0 or 1) ---- */

static void run_inline(deta_consumer_t *c) {
    cancel_t cancel = {.c = c, .revoked = NULL};
    while (!must_stop(c)) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, DETA_KAFKA_POLL_MS);
        if (!m)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            if (handle_message(c, m, &cancel))
                store_offset(c, rd_kafka_topic_name(m->rkt), m->partition, m->offset + 1);
        } else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            DETA_WARN("kafka consumer: %s", rd_kafka_message_errstr(m));
        }
        rd_kafka_message_destroy(m);
    }
}

/* ---- consumer: workers (opts.workers = N > 1) ----
 *
 * Threads. The thread in deta_consumer_run() polls and dispatches; N workers
 * handle, each with the same retry and dead-letter logic as above. A message
 * goes to worker hash(key) % N (no key: partition % N), so the messages of one
 * key are handled one after the other in partition order, while other keys go on
 * in parallel: a message being retried holds up its worker only.
 *
 * Backpressure. Each worker has a short bounded queue. When a message's queue is
 * full, the poller holds it (in its partition's held list) and pauses that
 * partition: librdkafka then drops what it prefetched for it and, on resume,
 * fetches again from just after the held message. The poller keeps polling the
 * other partitions meanwhile, so it never stops calling poll for long and
 * max.poll.interval.ms is not at risk even while a worker retries for minutes.
 * Held messages are dispatched in order as room appears; then the partition
 * resumes.
 *
 * Offsets. Per partition the poller has a part_t whose tracker (offsets.h) lists
 * the offsets dispatched, in order. A worker that finishes a message (handled or
 * dead-lettered) marks it and, if the partition's completed watermark moved,
 * stores it. Marking and storing happen under c->lock, so two workers never store
 * out of order. A message given up (stop, revoke) is never marked: the offset
 * stays before it.
 *
 * Rebalance (cooperative: only partitions that move are revoked). The revoke
 * callback runs on the poller's thread. It drops the revoked partitions' held and
 * queued messages (not started: their next owner gets them), tells their messages
 * in a retry or dead-letter loop to give up, and waits up to
 * DETA_KAFKA_REVOKE_WAIT_MS for their handler calls still running to end (each
 * storing its offset as usual). A call still running after that is orphaned: it
 * completes but stores nothing. Then the partitions' state is discarded, and
 * librdkafka commits the stored offsets as it unassigns them.
 *
 * Stop. The poller stops polling and tells the workers: each handles what its
 * queue still holds (at most DETA_KAFKA_WORKER_QUEUE messages, already fetched and
 * usually quick), so that every dispatched message is finished and the watermark,
 * which is what gets committed, passes them all: otherwise a message finished by
 * one worker behind one still queued on another would be past the watermark and
 * handled a second time after the restart (harmless, the inbox sees duplicates,
 * but work). A retry loop gives up at once; its worker then drops the rest of its
 * queue (same keys must not overtake it), and those messages come again. The
 * poller joins the workers, drops what was held, and rewinds every partition with
 * unfinished messages to the first of them, so that a later run() on this handle
 * does not skip them; deta_consumer_commit() and _close() then commit and leave.
 *
 * Batches (opts.batch_fn). A worker takes every job already in its queue, up to
 * batch_max, never waiting for more, and hands them to batch_fn, which applies
 * them in one transaction with a savepoint each (deta_event_dispatch_batch). A
 * message it refuses for good was rolled back alone and is dead-lettered here,
 * after the commit; the others are finished. A batch that did not commit (a
 * transient failure, anything) changed nothing, and its messages go one at a
 * time through handle_message, with its retries, backoff and dead letters. The
 * jobs are in queue order and their offsets are recorded in that order, so the
 * per-key order and the watermark are as without batches. Each job is settled
 * (its offset recorded, or given up) as soon as its handling ends. A revoke
 * waits for the jobs in a handler now: the whole batch while the batch handler
 * runs, then the one being handled on its own; a job of a revoked partition not
 * started yet is left to the new owner, so one given up for the revoke is never
 * overtaken by the next message of its key (issue #22).
 *
 * Ownership. c->lock guards the queues, the workers' current jobs, the trackers,
 * job->part, job->running and c->stopping. Only the poller's thread creates,
 * lists and frees parts and their held lists, and it calls librdkafka (pause,
 * resume, seek, assign) without holding the lock; workers call only
 * rd_kafka_offsets_store, under it.
 */

/* A polled message on its way through a worker. */
typedef struct job {
    rd_kafka_message_t *m;
    part_t *part;        /* its partition's state; NULL once settled or orphaned */
    bool tracked;        /* its offset is in part's tracker */
    bool running;        /* in a handler (or the batch handler) now: a revoke waits */
    atomic_bool revoked; /* its partition is being revoked: give up retrying */
    struct job *next;    /* in its part's held list */
} job_t;

/* A partition the poller has dispatched from. */
struct part {
    char *topic;
    int32_t partition;
    deta_offsets_t offsets;   /* dispatched, not yet passed by the watermark */
    job_t *held, *held_tail;  /* waiting for room in their worker's queue */
    bool paused;              /* by us, while something is held */
    bool revoking;            /* in the revoke callback */
    part_t *next;
};

struct worker {
    deta_consumer_t *c;
    pthread_t thread;
    pthread_cond_t wake; /* a job was queued, or stopping */
    job_t *queue[DETA_KAFKA_WORKER_QUEUE];
    size_t head, count;
    job_t *current[DETA_KAFKA_WORKER_QUEUE]; /* being handled (a batch, or one) */
    size_t ncurrent;
};


static bool workers_init(deta_consumer_t *c) {
    if (c->nworkers <= 1)
        return true;
    c->workers = calloc((size_t)c->nworkers, sizeof *c->workers);
    if (!c->workers)
        return false;
    pthread_mutex_init(&c->lock, NULL);
    deta_cond_init_monotonic(&c->progress);
    for (int i = 0; i < c->nworkers; i++) {
        c->workers[i].c = c;
        pthread_cond_init(&c->workers[i].wake, NULL);
    }
    return true;
}

static void workers_destroy(deta_consumer_t *c) {
    if (!c->workers)
        return;
    for (int i = 0; i < c->nworkers; i++)
        pthread_cond_destroy(&c->workers[i].wake);
    pthread_cond_destroy(&c->progress);
    pthread_mutex_destroy(&c->lock);
    free(c->workers);
    c->workers = NULL;
}

/* FNV-1a: cheap, and spreads similar keys (UUIDs) well enough. */
static uint32_t key_hash(const unsigned char *key, size_t len) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ key[i]) * 16777619u;
    return h;
}

static worker_t *worker_for(deta_consumer_t *c, const rd_kafka_message_t *m) {
    uint32_t h = m->key ? key_hash(m->key, m->key_len) : (uint32_t)m->partition;
    return &c->workers[h % (uint32_t)c->nworkers];
}

/* -- jobs and queues (queues under c->lock) -- */

static job_t *job_new(rd_kafka_message_t *m, part_t *part) {
    job_t *j = deta_calloc(1, sizeof *j);
    if (!j)
        return NULL;
    j->m = m;
    j->part = part;
    atomic_init(&j->revoked, false);
    return j;
}

static void job_free(job_t *j) {
    rd_kafka_message_destroy(j->m);
    free(j);
}

static bool queue_full(const worker_t *w) { return w->count == DETA_KAFKA_WORKER_QUEUE; }

static void queue_push(worker_t *w, job_t *j) {
    w->queue[(w->head + w->count++) % DETA_KAFKA_WORKER_QUEUE] = j;
}

static job_t *queue_pop(worker_t *w) {
    job_t *j = w->queue[w->head];
    w->head = (w->head + 1) % DETA_KAFKA_WORKER_QUEUE;
    w->count--;
    return j;
}

/* Frees the queued jobs whose partition is being revoked (all when all),
 * keeping the others in order. */
static void queue_drop(worker_t *w, bool all) {
    size_t n = w->count;
    for (size_t i = 0; i < n; i++) {
        job_t *j = queue_pop(w);
        if (all || (j->part && j->part->revoking))
            job_free(j);
        else
            queue_push(w, j);
    }
}

/* -- partitions (the poller's thread) -- */

static part_t *part_find(deta_consumer_t *c, const char *topic, int32_t partition) {
    for (part_t *p = c->parts; p; p = p->next)
        if (p->partition == partition && strcmp(p->topic, topic) == 0)
            return p;
    return NULL;
}

static part_t *part_get(deta_consumer_t *c, const char *topic, int32_t partition) {
    part_t *p = part_find(c, topic, partition);
    if (p)
        return p;
    p = deta_calloc(1, sizeof *p);
    if (!p || !(p->topic = strdup(topic))) {
        free(p);
        return NULL;
    }
    p->partition = partition;
    deta_offsets_init(&p->offsets);
    p->next = c->parts;
    c->parts = p;
    return p;
}

/* Pauses or resumes the partition's fetching (without c->lock). */
static void part_set_paused(deta_consumer_t *c, part_t *p, bool pause) {
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(list, p->topic, p->partition);
    rd_kafka_resp_err_t e = pause ? rd_kafka_pause_partitions(c->rk, list)
                                  : rd_kafka_resume_partitions(c->rk, list);
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
        e = list->elems[0].err;
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
        DETA_WARN("cannot %s %s[%d]: %s", pause ? "pause" : "resume", p->topic, (int)p->partition,
                  rd_kafka_err2str(e));
    rd_kafka_topic_partition_list_destroy(list);
    p->paused = pause;
}

/* Frees the held jobs (never dispatched, so never tracked). */
static void part_drop_held(deta_consumer_t *c, part_t *p) {
    while (p->held) {
        job_t *j = p->held;
        p->held = j->next;
        c->nheld--;
        job_free(j);
    }
    p->held_tail = NULL;
}

/* Drops held messages, resumes, unlinks and frees p. No job may point to it. */
static void part_discard(deta_consumer_t *c, part_t *p) {
    part_drop_held(c, p);
    if (p->paused)
        part_set_paused(c, p, false); /* a pause would outlive the assignment */
    for (part_t **pp = &c->parts; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    deta_offsets_reset(&p->offsets);
    free(p->topic);
    free(p);
}

/* -- dispatching (the poller's thread) -- */

/* Under c->lock: records the job's offset and queues it on w; false (nothing
 * queued) when its offset cannot be recorded for want of memory. */
static bool dispatch_locked(worker_t *w, job_t *j) {
    deta_offsets_added_t added = deta_offsets_add(&j->part->offsets, j->m->offset);
    if (added == DETA_OFFSETS_NO_MEMORY)
        return false;
    j->tracked = added == DETA_OFFSETS_ADDED;
    if (!j->tracked) /* librdkafka went back (offset reset): the earlier copy is tracked */
        DETA_WARN("%s[%d]@%lld dispatched out of order: its offset will not be stored",
                  j->part->topic, (int)j->part->partition, (long long)j->m->offset);
    queue_push(w, j);
    pthread_cond_signal(&w->wake);
    return true;
}

/* Keeps j until its worker has room; the partition pauses meanwhile. */
static void hold(deta_consumer_t *c, job_t *j) {
    part_t *p = j->part;
    if (p->held_tail)
        p->held_tail->next = j;
    else
        p->held = j;
    p->held_tail = j;
    c->nheld++;
    if (!p->paused)
        part_set_paused(c, p, true);
}

static void dispatch_polled(deta_consumer_t *c, rd_kafka_message_t *m) {
    part_t *p = part_get(c, rd_kafka_topic_name(m->rkt), m->partition);
    job_t *j = p ? job_new(m, p) : NULL;
    if (!j) {
        halt(c, m, "dispatching it");
        rd_kafka_message_destroy(m);
        return;
    }
    worker_t *w = worker_for(c, m);
    pthread_mutex_lock(&c->lock);
    bool room = !p->held && !queue_full(w); /* never overtake a held message */
    bool lost = room && !dispatch_locked(w, j);
    if (lost) {
        halt(c, m, "tracking its offset");
        job_free(j);
    }
    pthread_mutex_unlock(&c->lock);
    if (!room)
        hold(c, j);
}

/* Dispatches held messages, in order, as far as their workers have room. */
static void dispatch_held(deta_consumer_t *c) {
    if (c->nheld == 0)
        return;
    for (part_t *p = c->parts; p; p = p->next) {
        pthread_mutex_lock(&c->lock);
        worker_t *w;
        while (p->held && !queue_full(w = worker_for(c, p->held->m))) {
            job_t *j = p->held;
            p->held = j->next;
            j->next = NULL;
            c->nheld--;
            if (!dispatch_locked(w, j)) {
                halt(c, j->m, "tracking its offset");
                job_free(j);
                break;
            }
        }
        if (!p->held)
            p->held_tail = NULL;
        pthread_mutex_unlock(&c->lock);
        if (!p->held && p->paused)
            part_set_paused(c, p, false);
    }
}

/* -- workers -- */

/* Under c->lock: a finished message moves its partition's watermark. */
static void record_finished(deta_consumer_t *c, job_t *j) {
    part_t *p = j->part;
    if (!p || !j->tracked || !deta_offsets_finish(&p->offsets, j->m->offset))
        return;
    int64_t next = deta_offsets_advance(&p->offsets);
    if (next >= 0)
        store_offset(c, p->topic, p->partition, next);
}

/* A job's handling ended: finished (its offset may be stored) or given up. A
 * revoke waiting for it may go on. */
static void job_settle(deta_consumer_t *c, job_t *j, bool finished) {
    pthread_mutex_lock(&c->lock);
    if (finished)
        record_finished(c, j);
    j->running = false;
    j->part = NULL;
    pthread_cond_broadcast(&c->progress);
    pthread_mutex_unlock(&c->lock);
}

/* A job of a failed batch is about to be handled on its own: false (and settled,
 * unhandled) when its partition was revoked meanwhile, the new owner's now. */
static bool job_begin(deta_consumer_t *c, job_t *j) {
    pthread_mutex_lock(&c->lock);
    bool go = j->part && !atomic_load(&j->revoked);
    j->running = go;
    if (!go)
        j->part = NULL;
    pthread_mutex_unlock(&c->lock);
    return go;
}

/* Handles one job (already running); true when it was given up. */
static bool handle_job(deta_consumer_t *c, job_t *j) {
    cancel_t cancel = {.c = c, .revoked = &j->revoked};
    bool finished = handle_message(c, j->m, &cancel);
    job_settle(c, j, finished);
    return !finished;
}

/* After the batch handler committed: the refused messages are dead-lettered,
 * the others are done. True when a dead letter was given up. */
static bool settle_committed_batch(deta_consumer_t *c, job_t **jobs, size_t n,
                                   const deta_err_t *results, char (*why)[DETA_KAFKA_WHY_MAX]) {
    bool gave_up = false;
    for (size_t i = 0; i < n; i++) {
        cancel_t cancel = {.c = c, .revoked = &jobs[i]->revoked};
        const rd_kafka_message_t *m = jobs[i]->m;
        bool finished = true;
        if (results[i] == DETA_OK)
            count_outcome(c, rd_kafka_topic_name(m->rkt), "processed");
        else
            finished = dead_letter(c, m, 0, why[i][0] ? why[i] : "refused in a batch", &cancel);
        job_settle(c, jobs[i], finished);
        gave_up = gave_up || !finished;
    }
    return gave_up;
}

/* The batch did not commit: its jobs one at a time, in order. None is in hand
 * until it starts, so a revoke waits only for the one running; a job whose
 * partition was revoked is left to the new owner, handler not called, and since
 * a revoke marks every job of the partition at once, so are the ones after a
 * job given up for it (they must not overtake it). A stop ends the fallback at
 * the first job given up. True when a job was given up or left. */
static bool handle_one_at_a_time(deta_consumer_t *c, job_t **jobs, size_t n) {
    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < n; i++)
        jobs[i]->running = false;
    pthread_cond_broadcast(&c->progress);
    pthread_mutex_unlock(&c->lock);
    bool gave_up = false;
    for (size_t i = 0; i < n; i++) {
        if (gave_up && must_stop(c)) {
            job_settle(c, jobs[i], false);
            continue;
        }
        if (!job_begin(c, jobs[i])) {
            gave_up = true;
            continue;
        }
        gave_up = handle_job(c, jobs[i]) || gave_up;
    }
    return gave_up;
}

/* Handles jobs[0..n) (all running) with the batch handler (see "Batches"
 * above), settling each; true when one was given up. */
static bool handle_batch(deta_consumer_t *c, job_t **jobs, size_t n) {
    deta_kafka_msg_t msgs[DETA_KAFKA_WORKER_QUEUE];
    deta_err_t results[DETA_KAFKA_WORKER_QUEUE];
    char(*why)[DETA_KAFKA_WHY_MAX] = calloc(n, sizeof *why);
    size_t nviews = 0;
    while (why && nviews < n && msg_view(jobs[nviews]->m, &msgs[nviews]))
        nviews++;
    deta_err_t err = nviews == n ? c->batch_fn(msgs, n, c->opaque, results, why)
                                 : DETA_ERR_INTERNAL;
    for (size_t i = 0; i < nviews; i++)
        free((char *)msgs[i].value);
    if (c->metrics)
        deta_counter_inc(deta_counter(c->metrics, "deta_consumer_batches_total",
                                      "Batches of messages handed to the batch handler, by outcome",
                                      err == DETA_OK ? "outcome=\"committed\""
                                                     : "outcome=\"one_at_a_time\""));
    bool gave_up = err == DETA_OK ? settle_committed_batch(c, jobs, n, results, why)
                                  : handle_one_at_a_time(c, jobs, n);
    free(why);
    return gave_up;
}

/* Handles the worker's queue in order: up to batch_max queued jobs at once with
 * a batch handler, else one. Once stopping it still empties the queue (see
 * "Stop" above), unless a message is given up: those after it in the queue may
 * share its key, so they must not overtake it. */
static void *worker_main(void *arg) {
    worker_t *w = arg;
    deta_consumer_t *c = w->c;
    bool gave_up = false;
    pthread_mutex_lock(&c->lock);
    for (;;) {
        while (!c->stopping && w->count == 0)
            pthread_cond_wait(&w->wake, &c->lock);
        if (w->count == 0 || (gave_up && must_stop(c)))
            break;
        size_t max = c->batch_fn ? (size_t)c->batch_max : 1;
        while (w->ncurrent < max && w->count > 0) {
            job_t *j = queue_pop(w);
            j->running = true;
            w->current[w->ncurrent++] = j;
        }
        size_t n = w->ncurrent;
        pthread_mutex_unlock(&c->lock);

        bool lost = n == 1 ? handle_job(c, w->current[0]) : handle_batch(c, w->current, n);

        pthread_mutex_lock(&c->lock);
        if (lost && must_stop(c))
            gave_up = true;
        job_t *done[DETA_KAFKA_WORKER_QUEUE];
        memcpy(done, w->current, n * sizeof *done);
        w->ncurrent = 0;
        pthread_cond_broadcast(&c->progress);
        pthread_mutex_unlock(&c->lock);
        for (size_t i = 0; i < n; i++)
            job_free(done[i]);
        pthread_mutex_lock(&c->lock);
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

/* Starts the workers; returns how many started. */
static int start_workers(deta_consumer_t *c) {
    c->stopping = false;
    for (int i = 0; i < c->nworkers; i++)
        if (pthread_create(&c->workers[i].thread, NULL, worker_main, &c->workers[i]) != 0)
            return i;
    return c->nworkers;
}

/* Lets the started workers finish their current message, joins them, and frees
 * what they had queued. */
static void stop_workers(deta_consumer_t *c, int started) {
    pthread_mutex_lock(&c->lock);
    c->stopping = true;
    for (int i = 0; i < c->nworkers; i++)
        pthread_cond_signal(&c->workers[i].wake);
    pthread_mutex_unlock(&c->lock);
    for (int i = 0; i < started; i++)
        pthread_join(c->workers[i].thread, NULL);
    for (int i = 0; i < c->nworkers; i++)
        queue_drop(&c->workers[i], true);
}

/* -- rebalance (the poller's thread, inside poll or close) -- */

/* Under c->lock: a worker is still handling a message of a revoked partition. */
static bool revoking_busy(const deta_consumer_t *c) {
    for (int i = 0; i < c->nworkers; i++)
        for (size_t k = 0; k < c->workers[i].ncurrent; k++) {
            const job_t *j = c->workers[i].current[k];
            if (j->running && j->part && j->part->revoking)
                return true;
        }
    return false;
}

/* Under c->lock: stops the revoked partitions' work and waits for it to end. */
static void settle_revoking_locked(deta_consumer_t *c) {
    for (int i = 0; i < c->nworkers; i++) {
        worker_t *w = &c->workers[i];
        queue_drop(w, false);
        for (size_t k = 0; k < w->ncurrent; k++)
            if (w->current[k]->part && w->current[k]->part->revoking)
                atomic_store(&w->current[k]->revoked, true);
    }
    struct timespec until = deta_clock_after(DETA_KAFKA_REVOKE_WAIT_MS);
    while (revoking_busy(c))
        if (pthread_cond_timedwait(&c->progress, &c->lock, &until) != 0)
            break;
    for (int i = 0; i < c->nworkers; i++)
        for (size_t k = 0; k < c->workers[i].ncurrent; k++) {
            job_t *j = c->workers[i].current[k];
            if (j->part && j->part->revoking) {
                if (j->running)
                    DETA_WARN("%s[%d]@%lld still being handled %d ms after its partition was "
                              "revoked: its offset will not be stored",
                              j->part->topic, (int)j->part->partition, (long long)j->m->offset,
                              DETA_KAFKA_REVOKE_WAIT_MS);
                j->part = NULL; /* not started: left to the new owner */
            }
        }
}

static void revoke_parts(deta_consumer_t *c, const rd_kafka_topic_partition_list_t *revoked) {
    bool any = false;
    for (int i = 0; i < revoked->cnt; i++) {
        part_t *p = part_find(c, revoked->elems[i].topic, revoked->elems[i].partition);
        if (p)
            any = p->revoking = true;
    }
    if (!any)
        return;
    pthread_mutex_lock(&c->lock);
    settle_revoking_locked(c);
    pthread_mutex_unlock(&c->lock);
    part_t *p = c->parts;
    while (p) {
        part_t *next = p->next;
        if (p->revoking)
            part_discard(c, p);
        p = next;
    }
}

static void log_assign_error(const char *what, rd_kafka_error_t *error) {
    if (!error)
        return;
    DETA_ERROR("kafka %s: %s", what, rd_kafka_error_string(error));
    rd_kafka_error_destroy(error);
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *partitions, void *opaque) {
    deta_consumer_t *c = opaque;
    bool cooperative = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    c->synced = true;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        if (cooperative)
            log_assign_error("assign", rd_kafka_incremental_assign(rk, partitions));
        else
            rd_kafka_assign(rk, partitions);
        update_assigned(c, false);
        return;
    }
    if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        if (c->nworkers > 1)
            revoke_parts(c, partitions);
    } else {
        DETA_WARN("kafka rebalance: %s", rd_kafka_err2str(err));
    }
    if (cooperative)
        log_assign_error("unassign", rd_kafka_incremental_unassign(rk, partitions));
    else
        rd_kafka_assign(rk, NULL);
    update_assigned(c, false);
}

/* -- the poll loop -- */

/* After the workers are joined: sends each partition back to its first
 * unfinished message (a later run must not skip it) and forgets it. */
static void rewind_and_discard_parts(deta_consumer_t *c) {
    while (c->parts) {
        part_t *p = c->parts;
        int64_t first = deta_offsets_first(&p->offsets);
        if (first < 0 && p->held)
            first = p->held->m->offset;
        char topic[256];
        snprintf(topic, sizeof topic, "%s", p->topic);
        int32_t partition = p->partition;
        part_discard(c, p); /* resumes first: a seek must come after */
        if (first < 0)
            continue;
        rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(list, topic, partition)->offset = first;
        rd_kafka_error_t *error = rd_kafka_seek_partitions(c->rk, list, DETA_KAFKA_SEEK_MS);
        if (error)
            log_assign_error("seek back", error);
        rd_kafka_topic_partition_list_destroy(list);
    }
}

static deta_err_t run_workers(deta_consumer_t *c) {
    int started = start_workers(c);
    if (started < c->nworkers) {
        stop_workers(c, started);
        DETA_ERROR("cannot start %d consumer workers (%d started)", c->nworkers, started);
        return DETA_ERR_INTERNAL;
    }
    while (!must_stop(c)) {
        dispatch_held(c);
        int wait_ms = c->nheld ? DETA_KAFKA_HELD_POLL_MS : DETA_KAFKA_POLL_MS;
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, wait_ms);
        if (!m)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            dispatch_polled(c, m);
            continue;
        }
        if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
            DETA_WARN("kafka consumer: %s", rd_kafka_message_errstr(m));
        rd_kafka_message_destroy(m);
    }
    stop_workers(c, started);
    rewind_and_discard_parts(c);
    return DETA_OK;
}

deta_err_t deta_consumer_run(deta_consumer_t *c, atomic_bool *stop) {
    if (!c || !stop)
        return DETA_ERR_INVALID;
    if (atomic_load(&c->halt))
        return DETA_ERR_INTERNAL; /* what it could not handle must not be skipped */
    c->stop = stop;
    deta_err_t err = DETA_OK;
    if (c->nworkers > 1)
        err = run_workers(c);
    else
        run_inline(c);
    return err == DETA_OK && atomic_load(&c->halt) ? DETA_ERR_INTERNAL : err;
}
