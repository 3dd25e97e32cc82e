/*
 * kafka_workers.c - the consumer loop with per-key workers (opts.workers = N > 1;
 * kafka_consumer.c has the loop without them, kafka_internal.h the map).
 *
 * The polling thread hands each message to worker hash(key) % N through a short
 * bounded queue, waiting for room in a flowing worker's queue and otherwise
 * pausing a partition whose next message finds its queue full; the workers run
 * the same handling as the loop without workers (kafka_handle.c). A
 * partition's offset is stored only up to its completed watermark (offsets.h):
 * the highest offset that, with every earlier one dispatched, is finished. A
 * revoke waits (bounded) for the revoked partitions' running handlers; a stop
 * lets each worker finish its message. In full:
 *
 * Threads. The thread in deta_consumer_run() polls and dispatches; N workers
 * handle, each with the same retry and dead-letter logic (kafka_handle.c). A message
 * goes to worker hash(key) % N (no key: partition % N), so the messages of one
 * key are handled one after the other in partition order, while other keys go on
 * in parallel: a message being retried holds up its worker only.
 *
 * Backpressure. Each worker has a short bounded queue. When a message's queue is
 * full and the worker is flowing (between handler calls, or in one that began
 * less than DETA_KAFKA_ROOM_WAIT_MS ago), the poller waits for room until that
 * call has run that long (or that long from now, between calls): a worker that
 * keeps up makes room within a batch. Otherwise (a worker retrying, a long call,
 * still full after the wait) the poller holds the message (in its partition's
 * held list) and pauses that partition: librdkafka then drops what it prefetched
 * for it and, on resume, fetches again from just after the held message. The
 * poller keeps polling the other partitions meanwhile, so it never stops calling
 * poll for long and max.poll.interval.ms is not at risk even while a worker
 * retries for minutes. Held messages are dispatched in order as room appears;
 * then the partition resumes (deta_consumer_pauses_total counts the pauses).
 * Pausing is kept for a worker that does not flow because a resume is slow:
 * librdkafka 2.0 fetches a resumed partition again only at its broker thread's
 * next round, up to a second later when every partition was paused, so a
 * backlog taken a queueful per pause crawled (under 100 messages/s, issue 18).
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
 * queue still holds (at most c->queue_max messages, already fetched and
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
 * batch_max, and hands them to batch_fn, which applies
 * them in one transaction (deta_event_dispatch_batch, deta/batch.h). A message
 * it refused for good before its transaction is dead-lettered here, after the
 * commit; the others are finished. A batch that did not commit (a message's
 * failure, a transient one, anything) changed nothing, and its messages go one at a
 * time through handle_message, with its retries, backoff and dead letters. The
 * batch is handed over in key order: sorted by key, each key's jobs in queue
 * order (a stable sort), so the per-key order is as without batches, and the
 * watermark is too (offsets are marked finished one by one, in any order).
 * Handlers write rows keyed by the order, so every batch then locks its rows in
 * the same (ascending) order, and two batches of one group on two instances,
 * which can share orders since an order's topics need not be assigned to the
 * same instance, wait for each other instead of deadlocking: Postgres would
 * break such a deadlock only after deadlock_timeout (1 s) by failing one of
 * them, and that batch would then go one at a time. Each job is settled
 * (its offset recorded, or given up) as soon as its handling ends. A revoke
 * waits for the jobs in a handler now: the whole batch while the batch handler
 * runs, then the one being handled on its own; a job of a revoked partition not
 * started yet is left to the new owner, so one given up for the revoke is never
 * overtaken by the next message of its key (issue #22).
 *
 * Batch wait (opts.batch_wait_ms). A worker that finds fewer than batch_max
 * jobs queued waits up to batch_wait_ms, from when it woke to the first, for
 * the queue to fill, before it takes them: under a steady trickle one
 * transaction then carries what arrived in that time instead of one job. The
 * jobs stay queued (not running) while it waits, so a revoke drops them as any
 * queued job, and a stop ends the wait at once.
 *
 * Ownership. c->lock guards the queues, the workers' current jobs and took_ms,
 * the trackers, job->part, job->running and c->stopping. Only the poller's
 * thread creates, lists and frees parts and their held lists, and it calls
 * librdkafka (pause, resume, seek, assign) without holding the lock; workers call
 * only rd_kafka_offsets_store, under it.
 */
#include "kafka_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "clock.h"
#include "deta/log.h"
#include "deta/trace.h"
#include "offsets.h"

#define DETA_KAFKA_HELD_POLL_MS 10      /* poll wait while messages are held */
#define DETA_KAFKA_ROOM_WAIT_MS 100     /* how long a worker's call may make the poller wait */
#define DETA_KAFKA_REVOKE_WAIT_MS 10000 /* a revoke waits this long for running handlers */
#define DETA_KAFKA_SEEK_MS 5000

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
    /* Three arrays of c->queue_max entries each, in one allocation, so that a
     * worker costs memory for the queue its consumer asked for, no more. */
    job_t **queue;   /* a ring */
    size_t head, count;
    job_t **current; /* being handled (a batch, or one) */
    size_t ncurrent;
    long took_ms;    /* when it took its current jobs (deta_clock_ms) */
    const char **topics; /* the current jobs' topics, for the batch metrics */
};

bool deta_kafka_workers_init(deta_consumer_t *c) {
    if (c->nworkers <= 1)
        return true;
    c->workers = calloc((size_t)c->nworkers, sizeof *c->workers);
    if (!c->workers)
        return false;
    pthread_mutex_init(&c->lock, NULL);
    deta_cond_init_monotonic(&c->progress);
    for (int i = 0; i < c->nworkers; i++) {
        c->workers[i].c = c;
        deta_cond_init_monotonic(&c->workers[i].wake);
    }
    size_t cap = (size_t)c->queue_max;
    for (int i = 0; i < c->nworkers; i++) {
        worker_t *w = &c->workers[i];
        void **slots = calloc(3 * cap, sizeof *slots);
        if (!slots) {
            deta_kafka_workers_destroy(c);
            return false;
        }
        w->queue = (job_t **)slots;
        w->current = (job_t **)(slots + cap);
        w->topics = (const char **)(slots + 2 * cap);
    }
    return true;
}

void deta_kafka_workers_destroy(deta_consumer_t *c) {
    if (!c->workers)
        return;
    for (int i = 0; i < c->nworkers; i++) {
        pthread_cond_destroy(&c->workers[i].wake);
        free(c->workers[i].queue); /* the three arrays' one allocation */
    }
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

static bool queue_full(const worker_t *w) { return w->count == (size_t)w->c->queue_max; }

static void queue_push(worker_t *w, job_t *j) {
    w->queue[(w->head + w->count++) % (size_t)w->c->queue_max] = j;
}

static job_t *queue_pop(worker_t *w) {
    job_t *j = w->queue[w->head];
    w->head = (w->head + 1) % (size_t)w->c->queue_max;
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
    if (!p->paused) {
        part_set_paused(c, p, true);
        if (c->pauses)
            deta_counter_inc(c->pauses);
    }
}

/* Under c->lock, w's queue full: waits for room while w is flowing, i.e. until
 * its current call (if any) has run DETA_KAFKA_ROOM_WAIT_MS, and at most that
 * long; true when there is room. See "Backpressure" above. */
static bool wait_for_room(deta_consumer_t *c, worker_t *w) {
    long wait_ms = DETA_KAFKA_ROOM_WAIT_MS;
    if (w->ncurrent > 0) {
        long left = w->took_ms + DETA_KAFKA_ROOM_WAIT_MS - deta_clock_ms();
        if (left <= 0)
            return false;
        if (left < wait_ms)
            wait_ms = left;
    }
    struct timespec until = deta_clock_after(wait_ms);
    while (queue_full(w) && !deta_kafka_must_stop(c))
        if (pthread_cond_timedwait(&c->progress, &c->lock, &until) != 0)
            break;
    return !queue_full(w);
}

static void dispatch_polled(deta_consumer_t *c, rd_kafka_message_t *m) {
    part_t *p = part_get(c, rd_kafka_topic_name(m->rkt), m->partition);
    job_t *j = p ? job_new(m, p) : NULL;
    if (!j) {
        deta_kafka_halt(c, m, "dispatching it");
        rd_kafka_message_destroy(m);
        return;
    }
    worker_t *w = worker_for(c, m);
    pthread_mutex_lock(&c->lock);
    /* never overtake a held message */
    bool room = !p->held && (!queue_full(w) || wait_for_room(c, w));
    bool lost = room && !dispatch_locked(w, j);
    if (lost) {
        deta_kafka_halt(c, m, "tracking its offset");
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
                deta_kafka_halt(c, j->m, "tracking its offset");
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
        deta_kafka_store_offset(c, p->topic, p->partition, next);
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
    bool finished = deta_kafka_handle_message(c, j->m, &cancel);
    job_settle(c, j, finished);
    return !finished;
}

/* After the batch handler committed: the refused messages are dead-lettered,
 * the others are done, and each message's span ends with its outcome. True
 * when a dead letter was given up. */
static bool settle_committed_batch(deta_consumer_t *c, job_t **jobs, size_t n,
                                   const deta_err_t *results, char (*why)[DETA_KAFKA_WHY_MAX],
                                   const deta_kafka_msg_t *msgs) {
    bool gave_up = false;
    for (size_t i = 0; i < n; i++) {
        cancel_t cancel = {.c = c, .revoked = &jobs[i]->revoked};
        const rd_kafka_message_t *m = jobs[i]->m;
        bool finished = true;
        deta_span_t *span = msgs[i].span;
        if (results[i] == DETA_OK) {
            deta_kafka_count_outcome(c, rd_kafka_topic_name(m->rkt), "processed");
            deta_span_set_ok(span);
        } else {
            const char *reason = why[i][0] ? why[i] : "refused in a batch";
            deta_span_event(span, "dead_letter", "error", reason);
            deta_span_set_error(span, reason);
            finished = deta_kafka_dead_letter(c, m, 0, reason, &cancel);
        }
        deta_span_end(span);
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
        if (gave_up && deta_kafka_must_stop(c)) {
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
    deta_kafka_msg_t *msgs = calloc(n, sizeof *msgs);
    deta_err_t *results = calloc(n, sizeof *results);
    char(*why)[DETA_KAFKA_WHY_MAX] = calloc(n, sizeof *why);
    size_t nviews = 0;
    while (msgs && results && why && nviews < n &&
           deta_kafka_msg_view(jobs[nviews]->m, &msgs[nviews]))
        nviews++;
    for (size_t i = 0; i < nviews; i++)
        deta_kafka_note_handed(c, msgs[i].topic);
    /* One consumer span per message, a child of its own message's context, made
     * before the handler so that what the message causes (its db.transaction,
     * the outbox rows it writes) is its child (deta_batch_run enters it). No
     * batch (a copy failed), no spans. */
    for (size_t i = 0; nviews == n && i < n; i++) {
        msgs[i].span = deta_kafka_span_begin(c, jobs[i]->m);
        deta_span_attr_int(msgs[i].span, "deta.batch.size", (long long)n);
    }
    deta_err_t err = nviews == n ? c->batch_fn(msgs, n, c->opaque, results, why)
                                 : DETA_ERR_INTERNAL;
    for (size_t i = 0; i < nviews; i++) {
        free((char *)msgs[i].value);
        if (err == DETA_OK)
            continue;
        /* The attempt is in the trace as it happened; the message is handled
         * again one at a time, under a span of its own. */
        deta_span_set_error(msgs[i].span, "rolled back with its batch: handled again alone");
        deta_span_end(msgs[i].span);
    }
    if (c->metrics)
        deta_counter_inc(deta_counter(c->metrics, "deta_consumer_batches_total",
                                      "Batches of messages handed to the batch handler, by outcome",
                                      err == DETA_OK ? "outcome=\"committed\""
                                                     : "outcome=\"one_at_a_time\""));
    bool gave_up = err == DETA_OK ? settle_committed_batch(c, jobs, n, results, why, msgs)
                                  : handle_one_at_a_time(c, jobs, n);
    free(msgs);
    free(results);
    free(why);
    return gave_up;
}

/* Orders jobs[0..n) by key, bytewise (a missing key as empty), keeping the queue
 * order of equal keys (see "Batches" above). An insertion sort: a batch holds at
 * most 64 jobs, mostly arriving in few runs. */
static int key_cmp(const rd_kafka_message_t *a, const rd_kafka_message_t *b) {
    size_t la = a->key ? a->key_len : 0, lb = b->key ? b->key_len : 0;
    int c = la && lb ? memcmp(a->key, b->key, la < lb ? la : lb) : 0;
    return c ? c : (la > lb) - (la < lb);
}

static void sort_by_key(job_t **jobs, size_t n) {
    for (size_t i = 1; i < n; i++) {
        job_t *j = jobs[i];
        size_t k = i;
        for (; k > 0 && key_cmp(jobs[k - 1]->m, j->m) > 0; k--)
            jobs[k] = jobs[k - 1];
        jobs[k] = j;
    }
}

/* Under c->lock, with jobs queued: waits up to batch_wait_ms for the worker's
 * queue to hold max jobs (see "Batch wait" above). */
static void wait_for_batch(deta_consumer_t *c, worker_t *w, size_t max) {
    if (c->batch_wait_ms <= 0 || max <= 1)
        return;
    struct timespec until = deta_clock_after(c->batch_wait_ms);
    while (!c->stopping && w->count > 0 && w->count < max)
        if (pthread_cond_timedwait(&w->wake, &c->lock, &until) != 0)
            break;
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
        if (w->count == 0 || (gave_up && deta_kafka_must_stop(c)))
            break;
        size_t max = c->batch_fn ? (size_t)c->batch_max : 1;
        wait_for_batch(c, w, max);
        if (w->count == 0)
            continue; /* revoked while it waited */
        while (w->ncurrent < max && w->count > 0) {
            job_t *j = queue_pop(w);
            j->running = true;
            w->current[w->ncurrent++] = j;
        }
        w->took_ms = deta_clock_ms();
        pthread_cond_broadcast(&c->progress); /* room in the queue */
        size_t n = w->ncurrent;
        sort_by_key(w->current, n); /* under the lock: a revoke reads current[] */
        pthread_mutex_unlock(&c->lock);

        for (size_t i = 0; i < n; i++)
            w->topics[i] = rd_kafka_topic_name(w->current[i]->m->rkt);
        deta_kafka_note_batch(c, w->topics, n);

        bool lost = n == 1 ? handle_job(c, w->current[0]) : handle_batch(c, w->current, n);

        pthread_mutex_lock(&c->lock);
        if (lost && deta_kafka_must_stop(c))
            gave_up = true;
        w->ncurrent = 0;
        pthread_cond_broadcast(&c->progress);
        pthread_mutex_unlock(&c->lock);
        /* Past ncurrent nobody else reads current[], and only this thread writes it. */
        for (size_t i = 0; i < n; i++)
            job_free(w->current[i]);
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

void deta_kafka_revoke_parts(deta_consumer_t *c, const rd_kafka_topic_partition_list_t *revoked) {
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
            deta_kafka_log_error("seek back", error);
        rd_kafka_topic_partition_list_destroy(list);
    }
}

deta_err_t deta_kafka_run_workers(deta_consumer_t *c) {
    int started = start_workers(c);
    if (started < c->nworkers) {
        stop_workers(c, started);
        DETA_ERROR("cannot start %d consumer workers (%d started)", c->nworkers, started);
        return DETA_ERR_INTERNAL;
    }
    while (!deta_kafka_must_stop(c)) {
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
