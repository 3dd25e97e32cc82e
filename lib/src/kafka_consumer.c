/*
 * kafka_consumer.c - the consumer handle (see deta/kafka.h; kafka_internal.h
 * maps the other kafka_ files): creation, the loop without workers, the
 * rebalance callback, commit and close.
 *
 * Loop, workers 0 or 1. One message at a time, in the order of
 * rd_kafka_consumer_poll(), handled on the polling thread (kafka_handle.c: a
 * message whose handler asks for a retry is kept and re-handled after a backoff
 * without polling). This stalls the consumer's other partitions for the few
 * seconds of the retries, but keeps every partition strictly in order with no
 * pause/seek bookkeeping, and librdkafka's own thread keeps the group session
 * alive (only a stall longer than max.poll.interval.ms, 5 min, e.g. a
 * dead-letter topic unreachable that long, costs the membership; the message is
 * then redelivered). Offsets are stored (enable.auto.offset.store=false) only
 * once a message is handled or its dead letter acknowledged; auto-commit sends
 * stored offsets, and close commits the last ones. A message abandoned because
 * of *stop is not stored: the group's next member gets it again. With workers
 * N > 1 the loop is kafka_workers.c's.
 *
 * Rebalance callback. Set in both modes: with workers it settles revoked
 * partitions (kafka_workers.c); in both it unsets the revoked partitions' lag
 * gauges (kafka_metrics.c) and keeps the assigned-partitions gauge,
 * recounted from rd_kafka_assignment() after each assign or unassign, and
 * applied as a difference, so two consumers of one group in a process add up.
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
 */
#include "kafka_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "deta/log.h"

#define DETA_KAFKA_MAX_WORKERS 256
#define DETA_KAFKA_CLOSE_MS 10000 /* deta_consumer_free's close when none was made */

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *partitions, void *opaque);

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

/* The consumer's librdkafka log: as deta_kafka_on_log, except that the commit librdkafka
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
    deta_kafka_on_log(rk, level, fac, buf);
}

static rd_kafka_conf_t *consumer_conf(const deta_config_t *cfg, const char *group,
                                      deta_consumer_t *c, char *errstr, size_t errsize) {
    rd_kafka_conf_t *conf =
        deta_kafka_consumer_conf(cfg, group, c->topics[0].name, c->fetch_wait_min_ms, errstr,
                                 errsize);
    if (!conf)
        return NULL;
    rd_kafka_conf_set_log_cb(conf, on_consumer_log);
    /* Revocations must wait for the workers; assignments feed the gauge. */
    rd_kafka_conf_set_opaque(conf, c);
    rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
    /* The lag gauges come from librdkafka's statistics (kafka_metrics.c). */
    int every = c->metrics ? cfg->kafka_statistics_interval_ms : 0;
    char every_s[16], why[256];
    snprintf(every_s, sizeof every_s, "%d", every > 0 ? every : 0);
    if (rd_kafka_conf_set(conf, "statistics.interval.ms", every_s, why, sizeof why) !=
        RD_KAFKA_CONF_OK) {
        deta_errf(DETA_ERR_INVALID, errstr, errsize, "kafka setting statistics.interval.ms=%s: %s",
                  every_s, why);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    if (every > 0)
        rd_kafka_conf_set_stats_cb(conf, deta_kafka_on_stats);
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
    if (opts && (opts->batch_wait_ms < 0 || opts->batch_wait_ms > DETA_KAFKA_BATCH_WAIT_MAX_MS))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "batch_wait_ms must be 0..%d, not %d",
                         DETA_KAFKA_BATCH_WAIT_MAX_MS, opts->batch_wait_ms);
    if (opts && (opts->fetch_wait_min_ms < 0 ||
                 opts->fetch_wait_min_ms > DETA_KAFKA_FETCH_WAIT_MIN_MAX_MS))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "fetch_wait_min_ms must be 0..%d, not %d",
                         DETA_KAFKA_FETCH_WAIT_MIN_MAX_MS, opts->fetch_wait_min_ms);
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
    c->batch_max = opts && opts->batch_max > 0 ? opts->batch_max : DETA_KAFKA_WORKER_QUEUE;
    if (c->batch_max > DETA_KAFKA_BATCH_MAX)
        c->batch_max = DETA_KAFKA_BATCH_MAX;
    /* A batch is taken from the worker's queue, so a larger batch needs a longer
     * queue; without batches the queue stays short (kafka_workers.c). */
    c->queue_max = c->batch_fn && c->batch_max > DETA_KAFKA_WORKER_QUEUE ? c->batch_max
                                                                          : DETA_KAFKA_WORKER_QUEUE;
    c->batch_wait_ms = c->batch_fn ? opts->batch_wait_ms : 0;
    c->fetch_wait_min_ms = opts ? opts->fetch_wait_min_ms : 0;
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
    c->pauses = deta_counter(c->metrics, "deta_consumer_pauses_total",
                             "Partitions paused because the worker of their next message had no room",
                             labels);
    for (size_t i = 0; i < c->ntopics; i++) {
        snprintf(labels, sizeof labels, "group=\"%s\",topic=\"%s\"", c->group,
                 c->topics[i].name);
        c->topics[i].assigned_gauge =
            deta_gauge(c->metrics, "deta_consumer_assigned_partitions",
                       "Partitions of the topic assigned to this consumer", labels);
    }
    deta_kafka_metrics_register(c);
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
    deta_kafka_workers_destroy(c);
    for (size_t i = 0; c->topics && i < c->ntopics; i++)
        free(c->topics[i].name);
    free(c->topics);
    free(c->lags);
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
    if (!copy_topics(c, topics, ntopics) || !deta_kafka_workers_init(c)) {
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

/* ---- rebalance (the poller's thread, inside poll or close) ---- */

void deta_kafka_log_error(const char *what, rd_kafka_error_t *error) {
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
            deta_kafka_log_error("assign", rd_kafka_incremental_assign(rk, partitions));
        else
            rd_kafka_assign(rk, partitions);
        update_assigned(c, false);
        return;
    }
    if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        if (c->nworkers > 1)
            deta_kafka_revoke_parts(c, partitions);
        deta_kafka_lag_forget(c, partitions);
    } else {
        DETA_WARN("kafka rebalance: %s", rd_kafka_err2str(err));
    }
    if (cooperative)
        deta_kafka_log_error("unassign", rd_kafka_incremental_unassign(rk, partitions));
    else
        rd_kafka_assign(rk, NULL);
    update_assigned(c, false);
}

/* ---- commit and close ---- */

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
    deta_kafka_lag_forget(c, NULL);
    return c->close_result;
}

void deta_consumer_free(deta_consumer_t *c) {
    if (!c)
        return;
    deta_consumer_close(c, DETA_KAFKA_CLOSE_MS);
    consumer_release(c);
}

/* ---- the loop: one message at a time on the poller (workers 0 or 1) ---- */

static void run_inline(deta_consumer_t *c) {
    cancel_t cancel = {.c = c, .revoked = NULL};
    while (!deta_kafka_must_stop(c)) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, DETA_KAFKA_POLL_MS);
        if (!m)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            const char *topic = rd_kafka_topic_name(m->rkt);
            deta_kafka_note_batch(c, &topic, 1);
            if (deta_kafka_handle_message(c, m, &cancel))
                deta_kafka_store_offset(c, rd_kafka_topic_name(m->rkt), m->partition,
                                        m->offset + 1);
        } else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            DETA_WARN("kafka consumer: %s", rd_kafka_message_errstr(m));
        }
        rd_kafka_message_destroy(m);
    }
}

deta_err_t deta_consumer_run(deta_consumer_t *c, atomic_bool *stop) {
    if (!c || !stop)
        return DETA_ERR_INVALID;
    if (atomic_load(&c->halt))
        return DETA_ERR_INTERNAL; /* what it could not handle must not be skipped */
    c->stop = stop;
    deta_err_t err = DETA_OK;
    if (c->nworkers > 1)
        err = deta_kafka_run_workers(c);
    else
        run_inline(c);
    return err == DETA_OK && atomic_load(&c->halt) ? DETA_ERR_INTERNAL : err;
}
