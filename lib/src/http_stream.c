/*
 * http_stream.c - streamed answers of libdeta's HTTP server (deta/http_stream.h).
 *
 * libmicrohttpd pulls a streamed body through a content-reader callback whenever
 * the socket can take more. Returning 0 ("nothing now") would have MHD call again
 * at once, a busy loop; so when the buffer is empty the callback suspends the
 * connection (MHD_suspend_connection, allowed from a content reader) and returns
 * 0, and the next write resumes it (MHD_resume_connection, allowed from any
 * thread; the server runs with MHD_ALLOW_SUSPEND_RESUME, which brings the
 * inter-thread channel that wakes the pool thread owning the connection). A
 * suspended connection is off MHD's event loop: no thread, no timeout.
 *
 * The flag `suspended` mirrors MHD's state under the stream's lock, so that a
 * write racing with the callback's decision to suspend either lands before it
 * (the callback sees the bytes and does not suspend) or after (the write sees the
 * flag and resumes): no lost wake-up. Lock order: the registry, then a stream,
 * then MHD's own (suspend and resume take MHD's); the notify callback is called
 * with no lock held.
 *
 * MHD_stop_daemon must find no suspended connection, so stopping a server ends
 * every stream of that server (each is resumed, sends what it has, then ends) and
 * marks the server so that a stream opened afterwards (a request already in
 * flight on a kept-alive connection) starts ended.
 *
 * A dropped stream (a write past the limit) frees its bytes at once; the callback
 * ends the answer with an error when MHD next asks, which makes MHD close the
 * connection. A client that reads nothing is not asked anything: MHD's connection
 * timeout closes it (the server's CONNECTION_TIMEOUT_SECONDS).
 */
#include "http_stream_internal.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define STREAM_BLOCK 16384 /* the most MHD asks for at once */
#define MAX_STOPPED 16     /* servers stopped and not yet freed, at once */

struct deta_http_stream {
    pthread_mutex_t lock;
    int refs;
    char *buf; /* bytes waiting: buf[head .. head + len) */
    size_t head, len, cap;
    size_t limit;
    bool suspended;  /* MHD has the connection suspended (by our callback) */
    bool ending;     /* send what is left, then end */
    bool dropped;    /* over the limit: end with an error */
    bool done;       /* the connection is gone (MHD freed the response) */
    bool high_water; /* the buffer went past half: notify when it empties */
    struct MHD_Connection *conn;
    const deta_http_server_t *owner;
    void (*notify)(void *opaque);
    void *opaque;
    struct deta_http_stream *prev, *next; /* the registry, while attached */
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static deta_http_stream_t *registry;
static const deta_http_server_t *stopped[MAX_STOPPED];

static void stream_unref(deta_http_stream_t *s) {
    pthread_mutex_lock(&s->lock);
    bool last = --s->refs == 0;
    pthread_mutex_unlock(&s->lock);
    if (!last)
        return;
    pthread_mutex_destroy(&s->lock);
    free(s->buf);
    free(s);
}

deta_http_stream_t *deta_http_resp_stream(deta_http_resp_t *resp,
                                          const deta_http_stream_opts_t *opts) {
    deta_http_stream_t *s = calloc(1, sizeof *s);
    if (!s) {
        deta_http_resp_error(resp, 500, NULL, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&s->lock, NULL);
    s->refs = 2; /* the caller's and the server's */
    s->limit = opts->buffer_limit ? opts->buffer_limit : 1;
    s->notify = opts->notify;
    s->opaque = opts->opaque;
    free(resp->body);
    resp->body = NULL;
    resp->status = 200;
    resp->content_type = opts->content_type;
    resp->stream = s;
    return s;
}

/* Under s->lock: let MHD go on with the connection. */
static void wake_locked(deta_http_stream_t *s) {
    if (s->suspended && s->conn) {
        s->suspended = false;
        MHD_resume_connection(s->conn);
    }
}

static void drop_bytes_locked(deta_http_stream_t *s) {
    free(s->buf);
    s->buf = NULL;
    s->head = s->len = s->cap = 0;
}

/* Room for n more bytes after the waiting ones (the buffer never outgrows the
 * limit, so a stream's memory is bounded by it). */
static bool reserve_locked(deta_http_stream_t *s, size_t n) {
    if (s->head > 0 && s->head + s->len + n > s->cap) {
        memmove(s->buf, s->buf + s->head, s->len);
        s->head = 0;
    }
    if (s->len + n <= s->cap)
        return true;
    size_t cap = s->cap ? s->cap : 1024;
    while (cap < s->len + n)
        cap *= 2;
    if (cap > s->limit)
        cap = s->limit;
    char *buf = realloc(s->buf, cap);
    if (!buf)
        return false;
    s->buf = buf;
    s->cap = cap;
    return true;
}

deta_http_stream_status_t deta_http_stream_write(deta_http_stream_t *s, const char *data,
                                                 size_t len) {
    pthread_mutex_lock(&s->lock);
    deta_http_stream_status_t st = DETA_HTTP_STREAM_OK;
    if (s->done || s->ending || s->dropped) {
        st = DETA_HTTP_STREAM_CLOSED;
    } else if (s->len + len > s->limit || !reserve_locked(s, len)) {
        s->dropped = true;
        drop_bytes_locked(s);
        wake_locked(s);
        st = DETA_HTTP_STREAM_DROPPED;
    } else {
        memcpy(s->buf + s->head + s->len, data, len);
        s->len += len;
        if (s->len * 2 >= s->limit)
            s->high_water = true;
        wake_locked(s);
    }
    pthread_mutex_unlock(&s->lock);
    return st;
}

size_t deta_http_stream_pending(deta_http_stream_t *s) {
    pthread_mutex_lock(&s->lock);
    size_t n = s->len;
    pthread_mutex_unlock(&s->lock);
    return n;
}

bool deta_http_stream_closed(deta_http_stream_t *s) {
    pthread_mutex_lock(&s->lock);
    bool closed = s->done || s->ending || s->dropped;
    pthread_mutex_unlock(&s->lock);
    return closed;
}

void deta_http_stream_end(deta_http_stream_t *s) {
    pthread_mutex_lock(&s->lock);
    s->ending = true;
    wake_locked(s);
    pthread_mutex_unlock(&s->lock);
}

void deta_http_stream_release(deta_http_stream_t *s) {
    if (s)
        stream_unref(s);
}

/* ---- the MHD side ---- */

static ssize_t read_stream(void *cls, uint64_t pos, char *out, size_t max) {
    (void)pos;
    deta_http_stream_t *s = cls;
    bool notify = false;
    ssize_t n;
    pthread_mutex_lock(&s->lock);
    if (s->dropped) {
        n = MHD_CONTENT_READER_END_WITH_ERROR;
    } else if (s->len > 0) {
        size_t k = s->len < max ? s->len : max;
        memcpy(out, s->buf + s->head, k);
        s->head += k;
        s->len -= k;
        if (s->len == 0) {
            s->head = 0;
            notify = s->high_water;
            s->high_water = false;
        }
        n = (ssize_t)k;
    } else if (s->ending) {
        n = MHD_CONTENT_READER_END_OF_STREAM;
    } else {
        s->suspended = true;
        MHD_suspend_connection(s->conn);
        n = 0;
    }
    pthread_mutex_unlock(&s->lock);
    if (notify && s->notify)
        s->notify(s->opaque);
    return n;
}

static void unregister(deta_http_stream_t *s) {
    pthread_mutex_lock(&registry_lock);
    if (s->prev)
        s->prev->next = s->next;
    else if (registry == s)
        registry = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
    pthread_mutex_unlock(&registry_lock);
}

/* MHD is done with the response: the connection closed or the answer ended. */
static void free_stream(void *cls) {
    deta_http_stream_t *s = cls;
    unregister(s);
    pthread_mutex_lock(&s->lock);
    s->done = true;
    s->suspended = false;
    s->conn = NULL;
    drop_bytes_locked(s);
    pthread_mutex_unlock(&s->lock);
    if (s->notify)
        s->notify(s->opaque);
    stream_unref(s);
}

static bool is_stopped_locked(const deta_http_server_t *d) {
    for (size_t i = 0; i < MAX_STOPPED; i++)
        if (d && stopped[i] == d)
            return true;
    return false;
}

struct MHD_Response *deta_http_stream_response(deta_http_stream_t *s,
                                               struct MHD_Connection *conn,
                                               const deta_http_server_t *srv) {
    struct MHD_Response *mr = MHD_create_response_from_callback(
        MHD_SIZE_UNKNOWN, STREAM_BLOCK, read_stream, s, free_stream);
    if (!mr) {
        pthread_mutex_lock(&s->lock);
        s->done = true;
        pthread_mutex_unlock(&s->lock);
        stream_unref(s);
        return NULL;
    }
    /* Cache-Control: no-store and the other headers of every answer: http.c. */
    /* A stream ends only when one side stops: nothing follows on the connection. */
    MHD_add_response_header(mr, MHD_HTTP_HEADER_CONNECTION, "close");
    pthread_mutex_lock(&registry_lock);
    pthread_mutex_lock(&s->lock);
    s->conn = conn;
    s->owner = srv;
    if (is_stopped_locked(s->owner))
        s->ending = true;
    pthread_mutex_unlock(&s->lock);
    s->next = registry;
    if (registry)
        registry->prev = s;
    registry = s;
    pthread_mutex_unlock(&registry_lock);
    return mr;
}

void deta_http_streams_stop(const deta_http_server_t *srv) {
    if (!srv)
        return;
    pthread_mutex_lock(&registry_lock);
    if (!is_stopped_locked(srv))
        for (size_t i = 0; i < MAX_STOPPED; i++)
            if (!stopped[i]) {
                stopped[i] = srv;
                break;
            }
    for (deta_http_stream_t *s = registry; s; s = s->next)
        if (s->owner == srv)
            deta_http_stream_end(s);
    pthread_mutex_unlock(&registry_lock);
}

void deta_http_streams_forget(const deta_http_server_t *srv) {
    pthread_mutex_lock(&registry_lock);
    for (size_t i = 0; i < MAX_STOPPED; i++)
        if (stopped[i] == srv)
            stopped[i] = NULL;
    pthread_mutex_unlock(&registry_lock);
}
