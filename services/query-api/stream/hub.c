/*
 * hub.c - the open streams and the feed reader (hub.h).
 *
 * Threads. Handlers only append a new subscriber to `fresh` (under the lock) and
 * wake the reader; the reader moves it to its own list, which no other thread
 * touches, so writing to the streams needs no lock of the hub. `open` counts every
 * subscriber not yet reaped (checked and raised under the lock by hub_open, lowered
 * by the reader), so QUERY_STREAM_MAX holds even while closed ones wait to be
 * reaped (at most a second).
 */
#include "query-api/stream/hub.h"

#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "deta/clock.h"
#include "deta/http_stream.h"
#include "deta/log.h"
#include "query-api/stream/feed.h"
#include "query-api/stream/sse.h"

#define LIVE_PAGE 500   /* feed rows the reader takes per query */
#define CATCHUP_PAGE 200 /* rows of one stream's backlog per query */
#define IDLE_WAIT_MS 1000
#define GAP_POLL_MS 20 /* a rolled-back number sends no NOTIFY: the reader looks again */

typedef enum sub_state { SUB_NEW, SUB_CATCHUP, SUB_LIVE } sub_state_t;

typedef struct sub {
    deta_http_stream_t *stream;
    bool board;
    char order_id[DETA_ID_MAX + 1];
    stream_start_t start;
    sub_state_t state;
    int64_t cursor; /* the last seq it has (or its start point) */
    long last_write_ms;
    struct sub *next;
} sub_t;

struct hub {
    deta_service_t *svc;
    hub_settings_t set;
    pthread_mutex_t lock;
    sub_t *fresh; /* opened, not yet taken by the reader (under lock) */
    int open;     /* under lock */
    int wake_fd;
    pthread_t thread;
    bool started;
    atomic_bool stop;
    /* the reader's own */
    sub_t *subs;
    deta_db_t *db;
    unsigned long listen_session;
    bool listening;
    int64_t pos; /* every row up to it is fanned out; -1 before the first look */
    first_look_t first;
    long followed_ms; /* when the feed was last read */
    bool behind;      /* reads were skipped (no stream open): follow before starting one */
    gap_wait_t gap;
    char *holders;  /* the gap's holders (feed_holders), while gap.holders or first.pending */
    char *given_up; /* holders of given-up holes, still open when last looked at */
    bool failing;
    feed_row_t rows[LIVE_PAGE];
    /* metrics */
    deta_gauge_t *open_gauge;
    deta_counter_t *sent, *dropped_slow, *dropped_limit;
    deta_counter_t *gaps_rolled_back, *gaps_given_up;
    deta_histogram_t *delay;
};

static const double delay_buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                       0.25,  0.5,    1,     2.5,  5,     10};

static void wake(void *opaque) {
    hub_t *h = opaque;
    uint64_t one = 1;
    ssize_t n = write(h->wake_fd, &one, sizeof one);
    (void)n; /* a full counter wakes the reader all the same */
}

hub_t *hub_new(deta_service_t *svc, const hub_settings_t *settings) {
    hub_t *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->svc = svc;
    h->set = *settings;
    h->pos = -1;
    pthread_mutex_init(&h->lock, NULL);
    h->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (h->wake_fd < 0) {
        pthread_mutex_destroy(&h->lock);
        free(h);
        return NULL;
    }
    deta_metrics_t *m = deta_service_metrics(svc);
    h->open_gauge = deta_gauge(m, "query_streams_open", "Server-Sent Events streams open", NULL);
    h->sent = deta_counter(m, "query_stream_events_sent_total",
                           "Feed rows written to streams", NULL);
    h->dropped_slow = deta_counter(m, "query_streams_dropped_total",
                                   "Streams dropped or refused, by reason", "reason=\"slow\"");
    h->dropped_limit = deta_counter(m, "query_streams_dropped_total",
                                    "Streams dropped or refused, by reason", "reason=\"limit\"");
    h->gaps_rolled_back = deta_counter(m, "query_stream_gaps_total",
                                       "Holes in the feed's numbers skipped, by why",
                                       "outcome=\"rolled_back\"");
    h->gaps_given_up = deta_counter(m, "query_stream_gaps_total",
                                    "Holes in the feed's numbers skipped, by why",
                                    "outcome=\"given_up\"");
    h->delay = deta_histogram(m, "query_stream_delay_seconds",
                              "From a feed row's created_at to its write to a stream", NULL,
                              delay_buckets, sizeof delay_buckets / sizeof *delay_buckets);
    return h;
}

void hub_open(hub_t *h, deta_http_resp_t *resp, const char *order_id,
              const stream_start_t *start) {
    sub_t *s = calloc(1, sizeof *s);
    if (!s) {
        deta_http_resp_error(resp, 500, NULL, "out of memory");
        return;
    }
    pthread_mutex_lock(&h->lock);
    if (h->open >= h->set.max) {
        pthread_mutex_unlock(&h->lock);
        free(s);
        deta_counter_inc(h->dropped_limit);
        deta_http_resp_error(resp, 503, NULL, "%d streams are open, retry later", h->set.max);
        deta_http_resp_header(resp, "Retry-After", "5");
        return;
    }
    deta_http_stream_opts_t opts = {.content_type = "text/event-stream",
                                    .buffer_limit = (size_t)h->set.buffer_bytes,
                                    .notify = wake,
                                    .opaque = h};
    s->stream = deta_http_resp_stream(resp, &opts);
    if (!s->stream) {
        pthread_mutex_unlock(&h->lock);
        free(s);
        return;
    }
    deta_http_stream_write(s->stream, SSE_PREAMBLE, strlen(SSE_PREAMBLE));
    s->board = order_id == NULL;
    if (order_id)
        snprintf(s->order_id, sizeof s->order_id, "%s", order_id);
    s->start = *start;
    s->last_write_ms = deta_clock_ms();
    s->next = h->fresh;
    h->fresh = s;
    h->open++;
    deta_gauge_set(h->open_gauge, h->open);
    pthread_mutex_unlock(&h->lock);
    wake(h);
}

/* ---- the reader ---- */

static void reader_fail(hub_t *h, const char *what, const char *why) {
    if (!h->failing)
        DETA_WARN("stream feed reader: %s: %s (retrying every second)", what, why);
    h->failing = true;
}

static void reader_ok(hub_t *h) {
    if (h->failing)
        DETA_INFO("stream feed reader: reading the feed again");
    h->failing = false;
}

static void sub_free(sub_t *s) {
    deta_http_stream_end(s->stream);
    deta_http_stream_release(s->stream);
    free(s);
}

/* Takes what handlers opened, and lets go of what closed. */
static void take_and_reap(hub_t *h) {
    pthread_mutex_lock(&h->lock);
    sub_t *fresh = h->fresh;
    h->fresh = NULL;
    pthread_mutex_unlock(&h->lock);
    while (fresh) {
        sub_t *next = fresh->next;
        fresh->next = h->subs;
        h->subs = fresh;
        fresh = next;
    }
    int reaped = 0;
    for (sub_t **p = &h->subs; *p;) {
        sub_t *s = *p;
        if (deta_http_stream_closed(s->stream)) {
            *p = s->next;
            sub_free(s);
            reaped++;
        } else {
            p = &s->next;
        }
    }
    if (reaped) {
        pthread_mutex_lock(&h->lock);
        h->open -= reaped;
        deta_gauge_set(h->open_gauge, h->open);
        pthread_mutex_unlock(&h->lock);
    }
}

/* Counts a drop (the write that passed the buffer's limit). */
static deta_http_stream_status_t sub_write(hub_t *h, sub_t *s, const char *data, size_t len) {
    deta_http_stream_status_t st = deta_http_stream_write(s->stream, data, len);
    if (st == DETA_HTTP_STREAM_DROPPED) {
        deta_counter_inc(h->dropped_slow);
        DETA_INFO("stream of %s dropped: its client left %ld bytes unread",
                  s->board ? "every order" : s->order_id, h->set.buffer_bytes);
    }
    s->last_write_ms = deta_clock_ms();
    return st;
}

/* Returns whether the row went out. */
static bool send_row(hub_t *h, sub_t *s, const feed_row_t *r) {
    size_t len;
    char *frame = sse_order_frame(r, &len);
    if (!frame)
        return false;
    bool ok = sub_write(h, s, frame, len) == DETA_HTTP_STREAM_OK;
    free(frame);
    s->cursor = r->seq;
    if (ok)
        deta_counter_inc(h->sent);
    return ok;
}

static const char *sub_order(const sub_t *s) { return s->board ? NULL : s->order_id; }

/* Where a new stream starts (one or two queries). False on a database error (it
 * is tried again on the next round). */
static bool start_sub(hub_t *h, sub_t *s) {
    char why[256] = "";
    feed_extent_t e = {.delivered = h->pos};
    if (feed_bounds(h->db, &e.oldest, &e.newest, why, sizeof why)) {
        reader_fail(h, "the feed's bounds", why);
        return false;
    }
    if (start_needs_count(&s->start) && s->start.resume < e.newest &&
        feed_count(h->db, s->start.resume, e.newest, sub_order(s), h->set.backlog_max + 1,
                   &e.behind, why, sizeof why)) {
        reader_fail(h, "a stream's backlog", why);
        return false;
    }
    int64_t cursor;
    if (stream_start_decide(&s->start, &e, h->set.backlog_max, &cursor) == START_RESET) {
        char frame[96];
        size_t len = sse_reset_frame(cursor, frame, sizeof frame);
        sub_write(h, s, frame, len);
    }
    s->cursor = cursor;
    s->state = SUB_CATCHUP;
    return true;
}

/* One page of a stream's backlog (rows after its cursor up to pos), when it has
 * room; true when more remains to be sent right away. */
static bool catch_up(hub_t *h, sub_t *s) {
    if (s->cursor >= h->pos) {
        s->state = SUB_LIVE;
        return false;
    }
    if (deta_http_stream_pending(s->stream) * 2 >= (size_t)h->set.buffer_bytes)
        return false; /* the buffer's drain wakes the reader */
    feed_row_t *rows = calloc(CATCHUP_PAGE, sizeof *rows);
    if (!rows)
        return false;
    size_t n = 0;
    bool settled;
    char why[256] = "";
    if (feed_read(h->db, s->cursor, h->pos, sub_order(s), NULL, rows, CATCHUP_PAGE, &n,
                  &settled, why, sizeof why)) {
        reader_fail(h, "a stream's backlog", why);
        free(rows);
        return false;
    }
    for (size_t i = 0; i < n && !deta_http_stream_closed(s->stream); i++)
        send_row(h, s, &rows[i]);
    free(rows);
    if (n < CATCHUP_PAGE) {
        s->cursor = h->pos; /* nothing else up to pos matches */
        s->state = SUB_LIVE;
        return false;
    }
    return true;
}

static double now_seconds_since_us(int64_t us) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    int64_t now = (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
    return now > us ? (double)(now - us) / 1e6 : 0.0;
}

static void fan_out(hub_t *h, const feed_row_t *r) {
    for (sub_t *s = h->subs; s; s = s->next) {
        if (s->state != SUB_LIVE || r->seq <= s->cursor || deta_http_stream_closed(s->stream))
            continue;
        if (!s->board && strcmp(s->order_id, r->order_id) != 0)
            continue;
        if (send_row(h, s, r))
            deta_histogram_observe(h->delay, now_seconds_since_us(r->created_us));
    }
}

/* Notes the gap's holders, leaving out those of given-up holes; false on a
 * database error. */
static bool note_holders(hub_t *h) {
    char why[256] = "";
    char *holders, *still_given_up;
    if (feed_holders(h->db, h->given_up, &holders, &still_given_up, why, sizeof why)) {
        reader_fail(h, "the feed's open transactions", why);
        return false;
    }
    free(h->holders);
    free(h->given_up);
    h->holders = holders;
    h->given_up = still_given_up;
    gap_holders_noted(&h->gap);
    return true;
}

/* "{a,b}" and "{c}" as "{a,b,c}" (xid8[] literals; NULL as empty). */
static char *join_lists(const char *a, const char *b) {
    size_t la = a && strlen(a) > 2 ? strlen(a) - 2 : 0, lb = b && strlen(b) > 2 ? strlen(b) - 2 : 0;
    char *out = malloc(la + lb + 4);
    if (!out)
        return NULL;
    snprintf(out, la + lb + 4, "{%.*s%s%.*s}", (int)la, la ? a + 1 : "", la && lb ? "," : "",
             (int)lb, lb ? b + 1 : "");
    return out;
}

/* A skipped hole: counted; a given-up one said, and its holders left out of the
 * next holes' (they are given up with it). */
static void skipped(hub_t *h, gap_verdict_t v, int64_t from, int64_t to) {
    if (v == GAP_SKIP) {
        deta_counter_inc(h->gaps_rolled_back);
        return;
    }
    deta_counter_inc(h->gaps_given_up);
    if (h->holders) {
        char *joined = join_lists(h->given_up, h->holders);
        if (joined) {
            free(h->given_up);
            h->given_up = joined;
        }
    }
    if (h->set.gap_ms > 0)
        DETA_WARN("stream feed reader: seq %" PRId64 "..%" PRId64 " given up after %ld ms with"
                  " a transaction of the database that may hold them still open (%s)",
                  from, to, h->set.gap_ms, h->holders ? h->holders : "not known");
}

/* The reader's first look (rules.h): sets pos once the holders of the numbers
 * below the newest row have ended, or are given up. Returns how long the reader
 * may sleep before looking again, or 0 once pos is set. */
static long first_look(hub_t *h) {
    char why[256] = "";
    if (!h->first.pending) {
        int64_t oldest, newest;
        char *holders, *none;
        if (feed_bounds(h->db, &oldest, &newest, why, sizeof why) ||
            feed_holders(h->db, NULL, &holders, &none, why, sizeof why)) {
            reader_fail(h, "the feed's newest row", why);
            return IDLE_WAIT_MS;
        }
        free(none);
        free(h->holders);
        h->holders = holders;
        h->first = (first_look_t){.pending = true, .newest = newest, .since_ms = deta_clock_ms()};
    }
    bool ended;
    if (feed_ended(h->db, h->holders, &ended, why, sizeof why)) {
        reader_fail(h, "the feed's open transactions", why);
        return IDLE_WAIT_MS;
    }
    reader_ok(h);
    look_verdict_t v = first_look_check(&h->first, ended, deta_clock_ms(), h->set.gap_ms);
    if (v == LOOK_WAIT)
        return GAP_POLL_MS;
    if (v == LOOK_GIVE_UP) /* the numbers up to newest not committed, as a hole's */
        skipped(h, GAP_SKIP_BOUND, 1, h->first.newest);
    free(h->holders);
    h->holders = NULL;
    h->pos = h->first.newest;
    h->first = (first_look_t){0};
    return 0;
}

/* Takes the committed rows after pos, by the gap rule. Returns the longest the
 * reader may sleep (0: more is waiting). While a hole is waited for, a read takes
 * one row: only the first one matters until the hole is decided. */
static long follow(hub_t *h) {
    char why[256] = "";
    if (h->pos < 0) {
        long wait = first_look(h);
        if (h->pos < 0)
            return wait;
    }
    size_t n = 0, page = h->gap.missing ? 1 : LIVE_PAGE;
    bool settled = false;
    const char *holders = h->gap.holders ? h->holders : NULL;
    if (feed_read(h->db, h->pos, -1, NULL, holders, h->rows, page, &n, &settled, why,
                  sizeof why)) {
        reader_fail(h, "the feed", why);
        return IDLE_WAIT_MS;
    }
    for (size_t i = 0; i < n; i++) {
        long now = deta_clock_ms();
        int64_t seq = h->rows[i].seq;
        gap_verdict_t v = gap_check(&h->gap, h->pos, seq, settled, now, h->set.gap_ms);
        if (v == GAP_HOLDERS) {
            if (!note_holders(h))
                return IDLE_WAIT_MS;
            reader_ok(h);
            return 0; /* read again with them */
        }
        if (v == GAP_WAIT) {
            reader_ok(h);
            long left = gap_remaining_ms(&h->gap, now, h->set.gap_ms);
            return left < GAP_POLL_MS ? left : GAP_POLL_MS;
        }
        if (v == GAP_SKIP || v == GAP_SKIP_BOUND)
            skipped(h, v, h->pos + 1, seq - 1);
        fan_out(h, &h->rows[i]);
        h->pos = seq;
    }
    reader_ok(h);
    return n == page ? 0 : IDLE_WAIT_MS;
}

static void heartbeats(hub_t *h) {
    long now = deta_clock_ms();
    for (sub_t *s = h->subs; s; s = s->next)
        if (s->state != SUB_NEW && now - s->last_write_ms >= h->set.heartbeat_s * 1000L)
            sub_write(h, s, SSE_HEARTBEAT, strlen(SSE_HEARTBEAT));
}

/* LISTEN on the reader's session (again after a reconnect); the socket to wait
 * on, or -1 (then the reader polls). With no stream open the reader does not
 * listen (UNLISTEN): Postgres delivers each notification to a listening session
 * in a transaction of its own, one per consumer commit for nobody. *fresh says
 * that LISTEN was just issued: what committed before it sent no wake-up. */
static int listen_socket(hub_t *h, bool *fresh) {
    char why[256] = "";
    *fresh = false;
    if (!h->subs) {
        if (h->listening && deta_db_session(h->db) == h->listen_session &&
            deta_db_run(h->db, "UNLISTEN " FEED_CHANNEL, 0, NULL, why, sizeof why))
            return -1; /* still listening: try again next time */
        h->listening = false;
        return -1;
    }
    if (h->listening && deta_db_session(h->db) == h->listen_session) {
        PGconn *c = deta_db_conn(h->db, why, sizeof why);
        return c ? PQsocket(c) : -1;
    }
    h->listening = false;
    if (deta_db_run(h->db, "LISTEN " FEED_CHANNEL, 0, NULL, why, sizeof why))
        return -1;
    h->listening = true;
    *fresh = true;
    h->listen_session = deta_db_session(h->db);
    PGconn *c = deta_db_conn(h->db, why, sizeof why);
    return c ? PQsocket(c) : -1;
}

/* Takes every notification libpq holds or the socket has; true when there was
 * one. libpq keeps a NOTIFY that arrives while a query runs in its own queue,
 * where poll() on the socket cannot see it. */
static bool drain_notifications(hub_t *h) {
    char why[64];
    PGconn *c = h->listening ? deta_db_conn(h->db, why, sizeof why) : NULL;
    if (!c)
        return false;
    PQconsumeInput(c);
    bool any = false;
    PGnotify *n;
    while ((n = PQnotifies(c))) {
        any = true;
        PQfreemem(n);
    }
    return any;
}

static void *reader_main(void *arg) {
    hub_t *h = arg;
    atomic_bool *stopping = deta_service_stopping(h->svc);
    while (!atomic_load(&h->stop) && !atomic_load(stopping)) {
        drain_notifications(h); /* what woke the reader: the reads below see it */
        take_and_reap(h);
        /* With no stream open the feed is read at most once a second, not on
         * every notification (one per consumer commit): nothing is fanned out,
         * and pos only has to stay near the newest row, by the same gap rule, so
         * that a stream opening finds the reader close behind. Such a stream
         * starts once the reader has caught up (follow returned a wait). */
        long now = deta_clock_ms(), wait;
        if (!h->subs && h->pos >= 0 && now - h->followed_ms < IDLE_WAIT_MS) {
            wait = IDLE_WAIT_MS - (now - h->followed_ms);
            h->behind = true;
        } else {
            wait = follow(h);
            h->followed_ms = now;
            h->behind = h->behind && wait == 0;
        }
        for (sub_t *s = h->subs; s && h->pos >= 0; s = s->next) {
            if (deta_http_stream_closed(s->stream))
                continue;
            if (s->state == SUB_NEW && h->behind)
                continue;
            if (s->state == SUB_NEW && !start_sub(h, s))
                wait = IDLE_WAIT_MS;
            if (s->state == SUB_CATCHUP && catch_up(h, s))
                wait = 0;
        }
        heartbeats(h);
        bool listened;
        int sock = listen_socket(h, &listened);
        /* A commit that came while this round's queries ran (or before LISTEN):
         * look again at once (it would otherwise wait for the next wake, up to a
         * second). */
        if (drain_notifications(h) || listened)
            wait = 0;
        struct pollfd fds[2] = {{.fd = h->wake_fd, .events = POLLIN},
                                {.fd = sock, .events = POLLIN}};
        if (wait > 0)
            poll(fds, sock >= 0 ? 2 : 1, (int)wait);
        uint64_t count;
        while (read(h->wake_fd, &count, sizeof count) > 0) {
        }
    }
    return NULL;
}

deta_err_t hub_start(hub_t *h, char *errstr, size_t errsize) {
    h->db = deta_db_new(deta_service_config(h->svc));
    if (!h->db)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    if (pthread_create(&h->thread, NULL, reader_main, h) != 0)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "cannot start the feed reader");
    h->started = true;
    return DETA_OK;
}

void hub_free(void *opaque) {
    hub_t *h = opaque;
    if (!h)
        return;
    atomic_store(&h->stop, true);
    wake(h);
    if (h->started)
        pthread_join(h->thread, NULL);
    take_and_reap(h);
    while (h->subs) {
        sub_t *s = h->subs;
        h->subs = s->next;
        sub_free(s);
    }
    deta_db_free(h->db);
    free(h->holders);
    free(h->given_up);
    close(h->wake_fd);
    pthread_mutex_destroy(&h->lock);
    free(h);
}
