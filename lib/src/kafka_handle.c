/*
 * kafka_handle.c - handling one consumed message, on the poller (workers 0 or
 * 1) or on a worker: the handler's call, its retries and their backoff, waiting
 * out an outage, the dead letter of a message that failed for good
 * (kafka_dlq.c), running out of memory, and storing a finished offset.
 *
 * Retries. A message whose handler asks for a retry is kept and re-handled
 * after a backoff (200 ms doubled up to 5 s, interruptible by *stop or, with
 * workers, by its partition's revoke; a zero field of the options selects that
 * default, since services pass zeroed options). A transient failure while the
 * consumer is being stopped or revoked is left for redelivery, never
 * dead-lettered on a spent budget.
 *
 * Retry budget and outages. A transient failure first asks opts.dependencies_up.
 * Down: the failure is the outage's, not the message's; the message waits (the
 * same backoff, not counted) and the consumer's outage flag, set by the first
 * waiting message and cleared by the first one to find the dependencies back,
 * makes the outage one warning and one "back" line in the log whatever the
 * number of messages and retries. Up: the retry counts, and once max_retries
 * counted retries failed the message is dead-lettered. When the dependencies come
 * back the backoff goes back to the step of the retries counted so far (backoff_ms
 * for a message whose first attempt met the outage, so that waiting messages are
 * handled within a few hundred ms): the budget's retries span the same time
 * whether or not an outage came between them, which a handler may rely on
 * (payment-service waits out a crashed holder's 30 s lock with it). Restarting
 * the backoff at backoff_ms while the count went on left a budget of short waits
 * (a chaos run dead-lettered a payment after 12 retries in 17 s); restarting the
 * count too would leave none, a dependency blipping once per budget keeping a
 * message that fails on its own from ever being dead-lettered. A message's
 * attempt number (and x-retry-count) counts every retry, waiting ones included.
 * An inline consumer waiting out an outage longer than max.poll.interval.ms
 * (5 min) loses its membership; its message is then redelivered to the group,
 * which is what an outage that long deserves.
 *
 * Out of memory. The memory a message needs (its copy for the handler, its job,
 * its partition's state and offset tracker) comes through alloc.h, which tests
 * can make fail. Failing it sets the consumer's halt flag: the message is not
 * handled and not counted finished, so no stored offset passes it; the consumer
 * stops as on *stop (workers finish their messages in hand, a worker that gave
 * one up drops its queue), and run() returns DETA_ERR_INTERNAL and refuses to
 * run again on the handle. Going on would let the next message's offset pass
 * the one left behind, losing it.
 */
#include "kafka_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "clock.h"
#include "deta/log.h"
#include "deta/trace.h"

/* The consumer is to stop: run()'s flag, or a failure of its own (halt). */
bool deta_kafka_must_stop(const deta_consumer_t *c) {
    return atomic_load(c->stop) || atomic_load(&c->halt);
}

bool deta_kafka_cancelled(const cancel_t *x) {
    return deta_kafka_must_stop(x->c) || (x->revoked && atomic_load(x->revoked));
}

void deta_kafka_count_outcome(deta_consumer_t *c, const char *topic, const char *outcome) {
    if (!c->metrics)
        return;
    char labels[256];
    snprintf(labels, sizeof labels, "topic=\"%s\",outcome=\"%s\"", topic, outcome);
    deta_counter_inc(deta_counter(c->metrics, "deta_consumer_messages_total",
                                  "Messages the consumer loop finished or retried, by outcome",
                                  labels));
}

/* Sleeps ms in short steps; false when cancelled meanwhile. */
bool deta_kafka_sleep_unless_cancelled(int ms, const cancel_t *cancel) {
    long deadline = deta_clock_ms() + ms;
    for (;;) {
        if (deta_kafka_cancelled(cancel))
            return false;
        long left = deadline - deta_clock_ms();
        if (left <= 0)
            return true;
        long step = left < 50 ? left : 50;
        struct timespec ts = {0, step * 1000000L};
        nanosleep(&ts, NULL);
    }
}

int deta_kafka_next_backoff(const deta_consumer_t *c, int backoff) {
    return backoff >= c->backoff_max_ms / 2 ? c->backoff_max_ms : backoff * 2;
}

/* The backoff after n counted retries: backoff_ms doubled n times, capped. */
static int backoff_after(const deta_consumer_t *c, int n) {
    int backoff = c->backoff_ms;
    for (int i = 0; i < n && backoff < c->backoff_max_ms; i++)
        backoff = deta_kafka_next_backoff(c, backoff);
    return backoff;
}

/* Stores next (the offset after the last finished message) for commit. */
void deta_kafka_store_offset(deta_consumer_t *c, const char *topic, int32_t partition,
                             int64_t next) {
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

/* ---- waiting out an outage ---- */

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

/* ---- handling one message ---- */

/* Out of memory for what message m needs: the consumer stops (run() fails),
 * leaving m and what follows it unfinished, so that no offset passes it. */
void deta_kafka_halt(deta_consumer_t *c, const rd_kafka_message_t *m, const char *doing) {
    DETA_ERROR("%s: out of memory %s %s[%d]@%lld: the consumer stops; that message and the "
               "ones after it are redelivered",
               c->group, doing, rd_kafka_topic_name(m->rkt), (int)m->partition,
               (long long)m->offset);
    atomic_store(&c->halt, true);
}

/* A copy of m as the handler sees it; value is a NUL-terminated copy to free. */
bool deta_kafka_msg_view(const rd_kafka_message_t *m, deta_kafka_msg_t *msg) {
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

/* ---- the message's span (deta/trace.h) ---- */

/* The context of m's traceparent and tracestate headers; false when it has none
 * that parses (then its span starts a new trace). */
static bool message_ctx(const rd_kafka_message_t *m, deta_trace_ctx_t *ctx) {
    rd_kafka_headers_t *h = NULL;
    const void *v = NULL;
    size_t len = 0;
    if (rd_kafka_message_headers(m, &h) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        rd_kafka_header_get_last(h, "traceparent", &v, &len) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        !v || !deta_traceparent_parse(v, len, ctx))
        return false;
    if (rd_kafka_header_get_last(h, "tracestate", &v, &len) == RD_KAFKA_RESP_ERR_NO_ERROR && v)
        deta_tracestate_clean(v, len, ctx->state, sizeof ctx->state);
    return true;
}

deta_span_t *deta_kafka_span_begin(const deta_consumer_t *c, const rd_kafka_message_t *m) {
    if (!deta_trace_enabled())
        return NULL;
    deta_trace_ctx_t parent;
    bool has = message_ctx(m, &parent);
    const char *topic = rd_kafka_topic_name(m->rkt);
    char name[DETA_SPAN_NAME_MAX];
    snprintf(name, sizeof name, "process %s", topic);
    deta_span_t *span = deta_span_begin(name, DETA_SPAN_CONSUMER, has ? &parent : NULL);
    deta_span_attr(span, "messaging.system", "kafka");
    deta_span_attr(span, "messaging.operation", "process");
    deta_span_attr(span, "messaging.destination.name", topic);
    deta_span_attr(span, "messaging.kafka.consumer.group", c->group);
    deta_span_attr_int(span, "messaging.kafka.destination.partition", m->partition);
    deta_span_attr_int(span, "messaging.kafka.message.offset", m->offset);
    return span;
}

/* Runs the handler, retrying transient failures, dead-lettering what fails for
 * good; retries made while the dependencies are down do not count (see the top).
 * True when the message is finished one way or the other (its offset may be
 * stored); false when cancelled first (it must be redelivered). */
bool deta_kafka_handle_message(deta_consumer_t *c, const rd_kafka_message_t *m,
                               const cancel_t *cancel) {
    deta_kafka_msg_t msg;
    if (!deta_kafka_msg_view(m, &msg)) {
        deta_kafka_halt(c, m, "copying");
        return false;
    }
    const char *topic = msg.topic;
    bool finished = false, waiting = false;
    int counted = 0, backoff = c->backoff_ms;
    /* The consumer span covers every attempt (retries and waits are its events)
     * and the dead letter; current meanwhile, so the rows the handler writes
     * carry it on. */
    deta_span_t *span = deta_kafka_span_begin(c, m);
    deta_span_enter(span);
    deta_kafka_note_handed(c, topic);
    for (;;) {
        char why[512] = "";
        deta_err_t err = c->fn(&msg, c->opaque, why, sizeof why);
        if (err == DETA_OK) {
            deta_kafka_count_outcome(c, topic, "processed");
            deta_span_set_ok(span);
            finished = true;
            break;
        }
        if (!why[0])
            snprintf(why, sizeof why, "handler failed: %s", deta_err_name(err));
        bool up = err == DETA_ERR_TRANSIENT && dependencies_up(c);
        if (up && waiting) { /* back: the backoff of the retries counted so far */
            waiting = false;
            wait_ends(c, true);
            backoff = backoff_after(c, counted);
        }
        /* A transient failure while the consumer is being stopped or revoked is
         * never the message's last word: it is left for redelivery (a handler
         * may fail transiently because the service stops, after work that the
         * next attempt resumes), not dead-lettered on a spent budget. */
        if (err == DETA_ERR_TRANSIENT && deta_kafka_cancelled(cancel)) {
            deta_span_set_error(span, "stopped or revoked: left for redelivery");
            break;
        }
        if (err != DETA_ERR_TRANSIENT || (up && counted >= c->max_retries)) {
            deta_span_event(span, "dead_letter", "error", why);
            deta_span_set_error(span, why);
            finished = deta_kafka_dead_letter(c, m, msg.attempt, why, cancel);
            break;
        }
        if (up) {
            counted++;
            DETA_WARN("retrying %s[%d]@%lld in %d ms (retry %d of %d): %s", topic,
                      (int)m->partition, (long long)m->offset, backoff, counted, c->max_retries,
                      why);
            deta_kafka_count_outcome(c, topic, "retried");
            deta_span_event(span, "retry", "error", why);
        } else {
            if (!waiting)
                wait_begins(c, m, why);
            waiting = true;
            deta_kafka_count_outcome(c, topic, "waiting");
            deta_span_event(span, "waiting", "error", why);
        }
        if (!deta_kafka_sleep_unless_cancelled(backoff, cancel))
            break;
        backoff = deta_kafka_next_backoff(c, backoff);
        msg.attempt++;
    }
    if (waiting)
        wait_ends(c, finished);
    deta_span_attr_int(span, "messaging.kafka.retries", counted);
    deta_span_attr_int(span, "deta.attempts", msg.attempt + 1);
    deta_span_end(span);
    free((char *)msg.value);
    return finished;
}
