/*
 * cql_script_server.c - the scripted CQL v4 server of the client's tests (see
 * cql_script_server.h). Its frames are read and written here, from the
 * specification, byte by byte: nothing of lib/src/cql_codec.c.
 */
#include "cql_script_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* enough to fill the client's prepared cache (256) and go past it */
#define MAX_STEPS 320
#define MAX_VALUES 16
#define MAX_ITEMS 8
#define MAX_STREAMS 64

typedef struct buf {
    uint8_t *p;
    size_t len, cap;
} buf_t;

typedef struct blob {
    bool set;
    uint8_t *p;
    size_t n;
} blob_t;

typedef struct item {
    char *text; /* NULL: prepared */
    blob_t id;
    int nvalues;
} item_t;

typedef enum action {
    ANSWER = 0,
    CLOSE,
    CUT,
    SILENT,
    OVERSIZED,
    BAD_HEADER,
    WRONG_STREAM,
    ANSWER_CLOSE,
} action_t;

struct cqls_step {
    uint8_t opcode;
    char *query;
    int consistency; /* -1: unchecked */
    int nvalues;     /* -1: unchecked, unless values were given */
    int nexpected;
    blob_t values[MAX_VALUES];
    int value_len[MAX_VALUES];
    int page_size; /* -1: unchecked */
    bool check_paging;
    blob_t paging;
    blob_t id, token;
    int batch_type; /* -1: unchecked */
    int nitems;
    item_t items[MAX_ITEMS];

    bool answered;
    uint8_t reply_opcode;
    buf_t reply;
    bool event_first;
    action_t action;
    size_t action_n;
};

struct cqls {
    int listen_fd, port;
    pthread_t thread;
    bool started;
    pthread_mutex_t lock;
    bool stop;
    cqls_step_t *steps[MAX_STEPS];
    int nsteps, next;
    int connections, requests;
    int streams[MAX_STREAMS];
    char complaint[512];
};

/* ---- the writer ---- */

static void put(buf_t *b, const void *p, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 128;
        while (cap < b->len + n)
            cap *= 2;
        b->p = realloc(b->p, cap);
        if (!b->p)
            abort();
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, p, n);
    b->len += n;
}
static void w8(buf_t *b, unsigned v) {
    uint8_t x = (uint8_t)v;
    put(b, &x, 1);
}
static void w16(buf_t *b, unsigned v) {
    w8(b, (v >> 8) & 0xFF);
    w8(b, v & 0xFF);
}
static void w32(buf_t *b, uint32_t v) {
    w16(b, v >> 16);
    w16(b, v & 0xFFFF);
}
static void wstring(buf_t *b, const char *s) {
    w16(b, (unsigned)strlen(s));
    put(b, s, strlen(s));
}
static void wbytes(buf_t *b, const void *p, int n) {
    w32(b, (uint32_t)n);
    if (n > 0)
        put(b, p, (size_t)n);
}
static void wshortbytes(buf_t *b, const void *p, size_t n) {
    w16(b, (unsigned)n);
    put(b, p, n);
}

static void header(buf_t *b, int16_t stream, uint8_t opcode, uint32_t length) {
    w8(b, 0x84);
    w8(b, 0);
    w16(b, (uint16_t)stream);
    w8(b, opcode);
    w32(b, length);
}

/* ---- the reader of requests ---- */

typedef struct rd {
    const uint8_t *p;
    size_t n, at;
    bool bad;
} rd_t;

static const uint8_t *take(rd_t *r, size_t n) {
    if (r->bad || r->n - r->at < n) {
        r->bad = true;
        return NULL;
    }
    const uint8_t *p = r->p + r->at;
    r->at += n;
    return p;
}
static unsigned r8(rd_t *r) {
    const uint8_t *p = take(r, 1);
    return p ? p[0] : 0;
}
static unsigned r16(rd_t *r) {
    const uint8_t *p = take(r, 2);
    return p ? (unsigned)(p[0] << 8 | p[1]) : 0;
}
static int32_t r32(rd_t *r) {
    const uint8_t *p = take(r, 4);
    return p ? (int32_t)((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3])
             : 0;
}

static void complain(cqls_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void complain(cqls_t *s, const char *fmt, ...) {
    pthread_mutex_lock(&s->lock);
    if (!s->complaint[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(s->complaint, sizeof s->complaint, fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&s->lock);
}

static bool same(const void *a, size_t an, const void *b, size_t bn) {
    return an == bn && (an == 0 || memcmp(a, b, an) == 0);
}

/* <consistency><flags>[values][page size][paging state][serial][timestamp] */
static void check_params(cqls_t *s, int k, const cqls_step_t *st, rd_t *r) {
    unsigned consistency = r16(r);
    unsigned flags = r8(r);
    if (st->consistency >= 0 && (int)consistency != st->consistency)
        complain(s, "step %d: consistency 0x%04x, expected 0x%04x", k, consistency,
                 (unsigned)st->consistency);
    int n = 0;
    if (flags & 0x01) {
        n = (int)r16(r);
        for (int i = 0; i < n && !r->bad; i++) {
            int32_t len = r32(r);
            const uint8_t *p = len > 0 ? take(r, (size_t)len) : NULL;
            if (i < st->nexpected &&
                (len != st->value_len[i] ||
                 (len > 0 && (!p || memcmp(p, st->values[i].p, (size_t)len) != 0))))
                complain(s, "step %d: value %d differs (length %d, expected %d)", k, i,
                         (int)len, st->value_len[i]);
        }
    }
    int want = st->nexpected ? st->nexpected : st->nvalues;
    if (want >= 0 && n != want)
        complain(s, "step %d: %d values, expected %d", k, n, want);
    int page_size = -1;
    if (flags & 0x04)
        page_size = r32(r);
    if (st->page_size >= 0 && page_size != st->page_size)
        complain(s, "step %d: page size %d, expected %d", k, page_size, st->page_size);
    const uint8_t *paging = NULL;
    int32_t plen = -1;
    if (flags & 0x08) {
        plen = r32(r);
        paging = plen > 0 ? take(r, (size_t)plen) : NULL;
    }
    if (st->check_paging) {
        if (!st->paging.set && (flags & 0x08))
            complain(s, "step %d: a paging state, expected none", k);
        if (st->paging.set && (plen < 0 || !same(paging, (size_t)plen, st->paging.p, st->paging.n)))
            complain(s, "step %d: paging state differs", k);
    }
    if (flags & 0x10)
        r16(r);
    if (flags & 0x20)
        take(r, 8);
}

static void check_request(cqls_t *s, int k, const cqls_step_t *st, uint8_t opcode,
                          const uint8_t *body, size_t n) {
    if (opcode != st->opcode) {
        complain(s, "step %d: request opcode 0x%02x, expected 0x%02x", k, opcode, st->opcode);
        return;
    }
    rd_t r = {body, n, 0, false};
    switch (opcode) {
    case CQLS_STARTUP: {
        unsigned pairs = r16(&r);
        bool version = false;
        for (unsigned i = 0; i < pairs && !r.bad; i++) {
            unsigned kl = r16(&r);
            const uint8_t *key = take(&r, kl);
            unsigned vl = r16(&r);
            const uint8_t *val = take(&r, vl);
            if (key && val && same(key, kl, "CQL_VERSION", 11) && same(val, vl, "3.0.0", 5))
                version = true;
        }
        if (!version)
            complain(s, "step %d: STARTUP without CQL_VERSION 3.0.0", k);
        break;
    }
    case CQLS_AUTH_RESPONSE: {
        int32_t len = r32(&r);
        const uint8_t *p = len > 0 ? take(&r, (size_t)len) : NULL;
        if (st->token.set && (len < 0 || !same(p, (size_t)len, st->token.p, st->token.n)))
            complain(s, "step %d: auth token differs", k);
        break;
    }
    case CQLS_QUERY:
    case CQLS_PREPARE: {
        int32_t len = r32(&r);
        const uint8_t *p = len >= 0 ? take(&r, (size_t)len) : NULL;
        if (r.bad) {
            complain(s, "step %d: malformed query string", k);
            return;
        }
        if (st->query && !same(p, (size_t)len, st->query, strlen(st->query)))
            complain(s, "step %d: query \"%.*s\", expected \"%s\"", k, (int)len, (const char *)p,
                     st->query);
        if (opcode == CQLS_QUERY)
            check_params(s, k, st, &r);
        break;
    }
    case CQLS_EXECUTE: {
        unsigned len = r16(&r);
        const uint8_t *p = take(&r, len);
        if (st->id.set && (!p || !same(p, len, st->id.p, st->id.n)))
            complain(s, "step %d: prepared id differs", k);
        check_params(s, k, st, &r);
        break;
    }
    case CQLS_BATCH: {
        unsigned type = r8(&r);
        if (st->batch_type >= 0 && (int)type != st->batch_type)
            complain(s, "step %d: batch type %u, expected %d", k, type, st->batch_type);
        unsigned count = r16(&r);
        if (st->nitems && (int)count != st->nitems)
            complain(s, "step %d: %u batch items, expected %d", k, count, st->nitems);
        for (unsigned i = 0; i < count && !r.bad; i++) {
            unsigned kind = r8(&r);
            const uint8_t *p;
            size_t len;
            if (kind == 0) {
                len = (size_t)r32(&r);
                p = take(&r, len);
            } else {
                len = r16(&r);
                p = take(&r, len);
            }
            unsigned nv = r16(&r);
            for (unsigned v = 0; v < nv && !r.bad; v++) {
                int32_t vl = r32(&r);
                if (vl > 0)
                    take(&r, (size_t)vl);
            }
            if ((int)i >= st->nitems || r.bad)
                continue;
            const item_t *it = &st->items[i];
            if (it->text ? (kind != 0 || !same(p, len, it->text, strlen(it->text)))
                         : (kind != 1 || !same(p, len, it->id.p, it->id.n)))
                complain(s, "step %d: batch item %u differs", k, i);
            if ((int)nv != it->nvalues)
                complain(s, "step %d: batch item %u has %u values, expected %d", k, i, nv,
                         it->nvalues);
        }
        unsigned consistency = r16(&r);
        if (st->consistency >= 0 && (int)consistency != st->consistency)
            complain(s, "step %d: consistency 0x%04x, expected 0x%04x", k, consistency,
                     (unsigned)st->consistency);
        r8(&r);
        break;
    }
    default:
        break;
    }
    if (r.bad)
        complain(s, "step %d: malformed request body (opcode 0x%02x)", k, opcode);
}

/* ---- serving ---- */

static bool stopping(cqls_t *s) {
    pthread_mutex_lock(&s->lock);
    bool stop = s->stop;
    pthread_mutex_unlock(&s->lock);
    return stop;
}

/* Reads n bytes; false at end of file, on error, or when stopping. */
static bool read_exact(cqls_t *s, int fd, uint8_t *p, size_t n) {
    size_t got = 0;
    while (got < n) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        int r = poll(&pf, 1, 20);
        if (stopping(s))
            return false;
        if (r <= 0)
            continue;
        ssize_t k = recv(fd, p + got, n - got, 0);
        if (k <= 0)
            return false;
        got += (size_t)k;
    }
    return true;
}

static void send_all(int fd, const uint8_t *p, size_t n) {
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

static void send_event(int fd) {
    buf_t body = {0}, f = {0};
    wstring(&body, "STATUS_CHANGE");
    wstring(&body, "UP");
    w8(&body, 4);
    uint8_t ip[4] = {127, 0, 0, 1};
    put(&body, ip, 4);
    w32(&body, 9042);
    header(&f, -1, 0x0C, (uint32_t)body.len);
    put(&f, body.p, body.len);
    send_all(fd, f.p, f.len);
    free(body.p);
    free(f.p);
}

/* Serves one connection until it closes, or a step ends it. */
static void serve(cqls_t *s, int fd) {
    for (;;) {
        uint8_t h[9];
        if (!read_exact(s, fd, h, sizeof h))
            return;
        uint32_t len = (uint32_t)h[5] << 24 | (uint32_t)h[6] << 16 | (uint32_t)h[7] << 8 | h[8];
        if (h[0] != 0x04 || len > (1u << 20)) {
            complain(s, "request header version 0x%02x, length %u", h[0], len);
            return;
        }
        uint8_t *body = malloc(len ? len : 1);
        if (!body || !read_exact(s, fd, body, len)) {
            free(body);
            return;
        }
        int16_t stream = (int16_t)(h[2] << 8 | h[3]);
        pthread_mutex_lock(&s->lock);
        if (s->requests < MAX_STREAMS)
            s->streams[s->requests] = stream;
        s->requests++;
        int k = s->next < s->nsteps ? s->next++ : -1;
        cqls_step_t *st = k >= 0 ? s->steps[k] : NULL;
        pthread_mutex_unlock(&s->lock);
        if (!st) {
            complain(s, "request opcode 0x%02x after the last step", h[4]);
            free(body);
            return;
        }
        check_request(s, k, st, h[4], body, len);
        free(body);
        if (stream < 0)
            complain(s, "step %d: request on negative stream %d", k, stream);
        if (st->action == CLOSE)
            return;
        if (st->action == SILENT)
            continue; /* until the client gives up and closes */
        if (!st->answered)
            complain(s, "step %d has no answer scripted", k);
        buf_t f = {0};
        header(&f, st->action == WRONG_STREAM ? (int16_t)(stream + 1) : stream,
               st->reply_opcode, st->action == OVERSIZED ? (uint32_t)st->action_n
                                                         : (uint32_t)st->reply.len);
        if (st->action == BAD_HEADER)
            f.p[0] = 0x05;
        if (st->action != OVERSIZED)
            put(&f, st->reply.p, st->reply.len);
        if (st->event_first)
            send_event(fd);
        send_all(fd, f.p, st->action == CUT && st->action_n < f.len ? st->action_n : f.len);
        free(f.p);
        if (st->action == CUT || st->action == ANSWER_CLOSE)
            return;
    }
}

static void *run(void *arg) {
    cqls_t *s = arg;
    while (!stopping(s)) {
        struct pollfd pf = {.fd = s->listen_fd, .events = POLLIN};
        if (poll(&pf, 1, 20) <= 0)
            continue;
        int fd = accept(s->listen_fd, NULL, NULL);
        if (fd < 0)
            continue;
        pthread_mutex_lock(&s->lock);
        s->connections++;
        pthread_mutex_unlock(&s->lock);
        serve(s, fd);
        close(fd);
    }
    return NULL;
}

static int listen_local(int *port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &alen) != 0) {
        close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

cqls_t *cqls_start(void) {
    cqls_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    pthread_mutex_init(&s->lock, NULL);
    s->listen_fd = listen_local(&s->port);
    if (s->listen_fd < 0 || listen(s->listen_fd, 8) != 0 ||
        pthread_create(&s->thread, NULL, run, s) != 0) {
        cqls_free(s);
        return NULL;
    }
    s->started = true;
    return s;
}

int cqls_closed_port(void) {
    int port = 0;
    int fd = listen_local(&port);
    if (fd >= 0)
        close(fd);
    return port;
}

int cqls_port(const cqls_t *s) { return s->port; }

static void free_blob(blob_t *b) { free(b->p); }

void cqls_free(cqls_t *s) {
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    s->stop = true;
    pthread_mutex_unlock(&s->lock);
    if (s->started)
        pthread_join(s->thread, NULL);
    if (s->listen_fd >= 0)
        close(s->listen_fd);
    for (int i = 0; i < s->nsteps; i++) {
        cqls_step_t *st = s->steps[i];
        free(st->query);
        for (int v = 0; v < st->nexpected; v++)
            free_blob(&st->values[v]);
        free_blob(&st->paging);
        free_blob(&st->id);
        free_blob(&st->token);
        for (int t = 0; t < st->nitems; t++) {
            free(st->items[t].text);
            free_blob(&st->items[t].id);
        }
        free(st->reply.p);
        free(st);
    }
    pthread_mutex_destroy(&s->lock);
    free(s);
}

const char *cqls_verify(cqls_t *s) {
    pthread_mutex_lock(&s->lock);
    if (!s->complaint[0] && s->next < s->nsteps)
        snprintf(s->complaint, sizeof s->complaint, "step %d (opcode 0x%02x) never reached",
                 s->next, s->steps[s->next]->opcode);
    const char *r = s->complaint[0] ? s->complaint : NULL;
    pthread_mutex_unlock(&s->lock);
    return r;
}

int cqls_connections(cqls_t *s) {
    pthread_mutex_lock(&s->lock);
    int n = s->connections;
    pthread_mutex_unlock(&s->lock);
    return n;
}

int cqls_requests(cqls_t *s) {
    pthread_mutex_lock(&s->lock);
    int n = s->requests;
    pthread_mutex_unlock(&s->lock);
    return n;
}

int cqls_stream_of(cqls_t *s, int request) {
    pthread_mutex_lock(&s->lock);
    int v = request >= 0 && request < MAX_STREAMS && request < s->requests ? s->streams[request]
                                                                           : -1;
    pthread_mutex_unlock(&s->lock);
    return v;
}

/* ---- scripting ---- */

static void set_blob(blob_t *b, const void *p, size_t n) {
    free(b->p);
    b->set = p != NULL;
    b->n = p ? n : 0;
    b->p = malloc(n ? n : 1);
    if (!b->p)
        abort();
    if (p && n)
        memcpy(b->p, p, n);
}

cqls_step_t *cqls_expect(cqls_t *s, uint8_t opcode) {
    cqls_step_t *st = calloc(1, sizeof *st);
    if (!st)
        abort();
    st->opcode = opcode;
    st->consistency = -1;
    st->nvalues = -1;
    st->page_size = -1;
    st->batch_type = -1;
    pthread_mutex_lock(&s->lock);
    if (s->nsteps == MAX_STEPS)
        abort();
    s->steps[s->nsteps++] = st;
    pthread_mutex_unlock(&s->lock);
    return st;
}

void cqls_expect_query(cqls_step_t *st, const char *text) {
    free(st->query);
    st->query = strdup(text);
}
void cqls_expect_consistency(cqls_step_t *st, int consistency) { st->consistency = consistency; }
void cqls_expect_value(cqls_step_t *st, const void *p, int len) {
    if (st->nexpected == MAX_VALUES)
        abort();
    set_blob(&st->values[st->nexpected], p, len > 0 ? (size_t)len : 0);
    st->value_len[st->nexpected++] = len;
}
void cqls_expect_nvalues(cqls_step_t *st, int n) { st->nvalues = n; }
void cqls_expect_page_size(cqls_step_t *st, int page_size) { st->page_size = page_size; }
void cqls_expect_paging_state(cqls_step_t *st, const void *p, size_t n) {
    st->check_paging = true;
    set_blob(&st->paging, p, n);
}
void cqls_expect_id(cqls_step_t *st, const void *p, size_t n) { set_blob(&st->id, p, n); }
void cqls_expect_token(cqls_step_t *st, const void *p, size_t n) { set_blob(&st->token, p, n); }
void cqls_expect_batch_type(cqls_step_t *st, int type) { st->batch_type = type; }
void cqls_expect_batch_item(cqls_step_t *st, const char *text, const void *id, size_t idlen,
                            int nvalues) {
    if (st->nitems == MAX_ITEMS)
        abort();
    item_t *it = &st->items[st->nitems++];
    it->text = text ? strdup(text) : NULL;
    if (!text)
        set_blob(&it->id, id, idlen);
    it->nvalues = nvalues;
}

static buf_t *answer(cqls_step_t *st, uint8_t opcode) {
    st->answered = true;
    st->reply_opcode = opcode;
    st->reply.len = 0;
    return &st->reply;
}

void cqls_ready(cqls_step_t *st) { answer(st, 0x02); }
void cqls_authenticate(cqls_step_t *st, const char *authenticator) {
    wstring(answer(st, 0x03), authenticator);
}
void cqls_auth_challenge(cqls_step_t *st) { wbytes(answer(st, 0x0E), "more", 4); }
void cqls_auth_success(cqls_step_t *st) { wbytes(answer(st, 0x10), NULL, -1); }

void cqls_supported(cqls_step_t *st, int n, const char *const *keys,
                    const char *const *values) {
    buf_t *b = answer(st, 0x06);
    w16(b, (unsigned)n);
    for (int i = 0; i < n; i++) {
        wstring(b, keys[i]);
        unsigned count = 1;
        for (const char *p = values[i]; *p; p++)
            count += *p == ',';
        w16(b, count);
        const char *p = values[i];
        for (unsigned v = 0; v < count; v++) {
            const char *end = strchr(p, ',');
            size_t len = end ? (size_t)(end - p) : strlen(p);
            w16(b, (unsigned)len);
            put(b, p, len);
            p = end ? end + 1 : p + len;
        }
    }
}

void cqls_void(cqls_step_t *st) { w32(answer(st, 0x08), 0x0001); }
void cqls_set_keyspace(cqls_step_t *st, const char *keyspace) {
    buf_t *b = answer(st, 0x08);
    w32(b, 0x0003);
    wstring(b, keyspace);
}
void cqls_prepared(cqls_step_t *st, const void *id, size_t idlen, int nbind) {
    buf_t *b = answer(st, 0x08);
    w32(b, 0x0004);
    wshortbytes(b, id, idlen);
    w32(b, 0x0001); /* Global_tables_spec */
    w32(b, (uint32_t)nbind);
    w32(b, 0); /* no partition key markers */
    wstring(b, "ks");
    wstring(b, "t");
    for (int i = 0; i < nbind; i++) {
        char name[16];
        snprintf(name, sizeof name, "v%d", i);
        wstring(b, name);
        w16(b, 0x000D);
    }
    w32(b, 0x0004); /* result metadata: No_metadata */
    w32(b, 0);
}
void cqls_schema_change(cqls_step_t *st, const char *change, const char *target,
                        const char *keyspace, const char *name) {
    buf_t *b = answer(st, 0x08);
    w32(b, 0x0005);
    wstring(b, change);
    wstring(b, target);
    wstring(b, keyspace);
    if (strcmp(target, "KEYSPACE") != 0)
        wstring(b, name);
}
void cqls_rows(cqls_step_t *st, int ncols, const char *const *names, const uint16_t *types,
               int nrows, const cqls_cell_t *cells, const void *paging_state,
               size_t paging_len) {
    buf_t *b = answer(st, 0x08);
    w32(b, 0x0002);
    w32(b, 0x0001 | (paging_state ? 0x0002 : 0));
    w32(b, (uint32_t)ncols);
    if (paging_state)
        wbytes(b, paging_state, (int)paging_len);
    wstring(b, "ks");
    wstring(b, "t");
    for (int i = 0; i < ncols; i++) {
        wstring(b, names[i]);
        w16(b, types[i]);
    }
    w32(b, (uint32_t)nrows);
    for (int i = 0; i < nrows * ncols; i++)
        wbytes(b, cells[i].p, cells[i].len);
}

void cqls_error(cqls_step_t *st, int32_t code, const char *message) {
    buf_t *b = answer(st, 0x00);
    w32(b, (uint32_t)code);
    wstring(b, message);
    switch (code) {
    case 0x1000: /* Unavailable: <cl><required><alive> */
        w16(b, 0x0006);
        w32(b, 2);
        w32(b, 1);
        break;
    case 0x1100: /* Write_timeout: <cl><received><blockfor><writeType> */
        w16(b, 0x0006);
        w32(b, 1);
        w32(b, 2);
        wstring(b, "SIMPLE");
        break;
    case 0x1200: /* Read_timeout: <cl><received><blockfor><data_present> */
        w16(b, 0x0006);
        w32(b, 1);
        w32(b, 2);
        w8(b, 0);
        break;
    case 0x1300: /* Read_failure: <cl><received><blockfor><numfailures><data_present> */
        w16(b, 0x0006);
        w32(b, 1);
        w32(b, 2);
        w32(b, 1);
        w8(b, 0);
        break;
    case 0x1400: /* Function_failure: <keyspace><function><arg_types> */
        wstring(b, "ks");
        wstring(b, "f");
        w16(b, 0);
        break;
    case 0x1500: /* Write_failure: <cl><received><blockfor><numfailures><write_type> */
        w16(b, 0x0006);
        w32(b, 1);
        w32(b, 2);
        w32(b, 1);
        wstring(b, "SIMPLE");
        break;
    case 0x2400: /* Already_exists: <ks><table> */
        wstring(b, "ks");
        wstring(b, "t");
        break;
    case 0x2500: /* Unprepared: <id> */
        wshortbytes(b, "?", 1);
        break;
    default:
        break;
    }
}

void cqls_error_unprepared(cqls_step_t *st, const void *id, size_t idlen, const char *message) {
    buf_t *b = answer(st, 0x00);
    w32(b, 0x2500);
    wstring(b, message);
    wshortbytes(b, id, idlen);
}

void cqls_event_first(cqls_step_t *st) { st->event_first = true; }

void cqls_close(cqls_step_t *st) { st->action = CLOSE; }
void cqls_cut(cqls_step_t *st, size_t n) {
    st->action = CUT;
    st->action_n = n;
}
void cqls_silent(cqls_step_t *st) { st->action = SILENT; }
void cqls_oversized(cqls_step_t *st, uint32_t length) {
    st->action = OVERSIZED;
    st->action_n = length;
}
void cqls_answer_then_close(cqls_step_t *st) { st->action = ANSWER_CLOSE; }
void cqls_bad_header(cqls_step_t *st) { st->action = BAD_HEADER; }
void cqls_wrong_stream(cqls_step_t *st) { st->action = WRONG_STREAM; }
