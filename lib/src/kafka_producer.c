/*
 * kafka_producer.c - the producer (see deta/kafka.h; kafka_internal.h maps the
 * other kafka_ files), over librdkafka.
 *
 * No message timeout (kafka_conf.c): librdkafka never gives up a message while
 * the broker is slow or unreachable, it retries it in order until the broker
 * has it. A timeout there would fail a message that the broker may still
 * append, and let the messages behind it through: 1..5 could land as 1,4,5, and
 * the outbox relay's resend of 2..5 would put event 4 before event 2 (issue #22).
 * How long a caller waits is the caller's timeout; a message it stops waiting
 * for stays in flight. While such abandoned messages have no report yet, a new
 * send first waits (within its own timeout) for them, and fails with nothing
 * sent if they are still out: the relay retrying a batch every few seconds
 * through an outage would otherwise queue one more copy of it each time.
 * Such a sender sends the same messages again (the relay: the rows it could not
 * mark), and those the broker acknowledged after it stopped waiting are in the
 * log already: kafka_resend.c recognizes them, so that an outage does not
 * publish a row twice.
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
 */
#include "kafka_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "deta/log.h"

#define DETA_KAFKA_FLUSH_MS 5000        /* deta_producer_free's bounded wait */
#define DETA_KAFKA_REPLACE_RETRY_MS 1000 /* a failed replacement of a fatal handle */
#define DETA_KAFKA_GIVE_UP_POLL_MS 20   /* how often a wait looks at its give-up flag */

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
    bool last = deta_kafka_batch_unref(b);
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
    rd_kafka_conf_t *conf = deta_kafka_producer_conf(cfg, errstr, errsize);
    if (!conf)
        return NULL;
    rd_kafka_conf_set_opaque(conf, p);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_error_cb(conf, on_producer_error);
    rd_kafka_conf_set_log_cb(conf, deta_kafka_on_log);
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
    deta_kafka_abandoned_free_all(p);
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
        b->slots[i].plain = msgs[i].headers == NULL || msgs[i].resendable;
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

deta_err_t deta_kafka_send_out(deta_producer_t *p, out_msg_t *msgs, size_t n, int timeout_ms,
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
    size_t adopted = deta_kafka_adopt_locked(p, b, msgs, n);
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
    bool last = pending > 0 ? false : deta_kafka_batch_unref(b);
    pthread_mutex_unlock(&p->lock);
    if (pending > 0)
        deta_kafka_abandon(p, b, msgs, *nacked, produced); /* takes the caller's reference */
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

void deta_kafka_free_out_headers(out_msg_t *msgs, size_t n) {
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
                             .headers = msgs[i].nheaders ? headers_of(&msgs[i]) : NULL,
                             .resendable = msgs[i].resendable};
    }
    deta_err_t err = deta_kafka_send_out(p, out, n, timeout_ms, g, nacked, errstr, errsize);
    deta_kafka_free_out_headers(out, n);
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
