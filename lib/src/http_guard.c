/*
 * http_guard.c - the HTTP server's bounds under abuse (see http_guard.h, deta/http.h).
 *
 * What libmicrohttpd 0.9.75 does by itself, and why it is not enough:
 *   - MHD_OPTION_CONNECTION_LIMIT: with a thread pool each worker gets its share; a
 *     worker at its share stops polling the listen socket (new clients wait in the
 *     kernel's backlog), and one it accepts anyway is closed at once. No answer.
 *   - MHD_OPTION_PER_IP_CONNECTION_LIMIT: a connection from an address over it is
 *     closed right after accept(2). No answer either.
 *   - MHD_OPTION_CONNECTION_MEMORY_LIMIT: each connection's memory pool; the request
 *     line and headers must fit in its read buffer, else MHD answers 414 or 431 itself
 *     with a small HTML body and closes.
 *   - MHD_OPTION_CONNECTION_TIMEOUT and MHD_set_connection_option(.._TIMEOUT): an
 *     inactivity timeout (from the last byte read or written; whole seconds), so a
 *     client that sends one byte a second is never cut off. The per-connection option
 *     changes the same inactivity bound, may only be called from the connection's own
 *     thread, and that thread calls us only once the headers are in: it cannot bound
 *     the time of the headers, and bounds a body only between its pieces.
 * So the bounds are ours, with MHD's kept above them as a backstop:
 *
 * Admission (the soft bounds). MHD_OPTION_NOTIFY_CONNECTION tells us of every
 * connection it starts (STARTED, in the worker that accepted it) and of its end
 * (CLOSED). At STARTED a connection is admitted when fewer than max_connections are
 * admitted and its address has fewer than max_connections_per_client admitted; else
 * it is marked over (total or client) and counts against neither. Its request is then
 * answered 503 or 429 with the JSON error body as soon as its headers are in (http.c),
 * and the connection closed, unless the route is DETA_HTTP_ALWAYS (health, metrics),
 * which is served (and closed after). MHD's own limits are the soft ones plus
 * DETA_HTTP_RESERVED_CONNECTIONS (DETA_HTTP_RESERVED_PER_CLIENT per address): that
 * reserve is where the refused and the health checks live while the bound is held.
 * Only past the reserve does MHD's silent close (or backlog) take over.
 *
 * Time (the watchdog). Every connection has a phase and a deadline: from STARTED (and
 * again from the end of each request on a kept-alive connection) until its headers are
 * in, header_timeout_ms; from the headers until the whole body is in, body_timeout_ms;
 * none while the handler runs and the answer goes out (streams included: a Server-Sent
 * Events connection is in that phase for its whole life; MHD's inactivity timeout
 * still closes a client that stops reading an ordinary answer). The phases change in
 * the connection's thread (http.c's access handler and completion callback), under
 * the guard's lock. A watchdog thread wakes a few times per timeout, and for each
 * connection past its deadline calls shutdown(2) on its socket (SHUT_RDWR): MHD's next
 * read finds the end of the stream and closes the connection in its own thread, as if
 * the client had left. A body cut off is first answered 408 with the JSON error body
 * (a non-blocking send; MHD writes nothing to a connection whose body is still coming,
 * but for a "100 Continue", which goes out whole before or after it). Headers cut off
 * get no answer: an idle kept-alive connection is in that phase too, and nothing was
 * asked of it.
 *
 * Why the shutdown(2) can never hit a reused descriptor: the watchdog touches a socket
 * only while holding the guard's lock and only when the connection's record is still
 * registered; the record is unregistered by the CLOSED notification, under the same
 * lock; and MHD 0.9.75 calls CLOSED before it closes the socket, in both places where
 * a started connection ends (MHD_cleanup_connections: the notification, then close(2);
 * internal_add_connection's failure path: likewise). So while the record is
 * registered the descriptor is open and is this connection's. Connections are never
 * reached through MHD's own structures from the watchdog, only through the number.
 *
 * Per-address counts live in a small hash table (IPv4 and IPv6 addresses; other
 * families share one entry); all counts, the list and the deadlines are under one
 * mutex, taken a few times per request and per connection.
 */
#include "http_guard.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "clock.h"
#include "deta/log.h"

#define BUCKETS 1024
#define WATCH_MIN_MS 10
#define WATCH_MAX_MS 250

typedef enum phase {
    PHASE_HEADERS, /* waiting for the request line and headers */
    PHASE_BODY,    /* headers in, body coming */
    PHASE_SERVED,  /* request in (or answered early): no time bound */
    PHASE_CUT,     /* shut down by the watchdog */
} phase_t;

typedef struct client {
    unsigned char key[17]; /* family tag, then the address */
    int count;             /* admitted connections */
    struct client *next;
} client_t;

struct http_conn {
    http_guard_t *guard;
    MHD_socket fd;
    http_admission_t admission;
    client_t *client; /* when admitted */
    phase_t phase;
    long deadline; /* deta_clock_ms; 0: none */
    struct http_conn *prev, *next;
};

typedef enum reason {
    R_CONNECTIONS,
    R_PER_CLIENT,
    R_HEADER_TOO_LARGE,
    R_HEADER_TIMEOUT,
    R_BODY_TIMEOUT,
    R_COUNT
} reason_t;

static const char *const reason_names[R_COUNT] = {
    "connections", "connections_per_client", "header_too_large", "header_timeout",
    "body_timeout"};

struct http_guard {
    deta_http_limits_t limits;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_t watchdog;
    bool started, stop;
    http_conn_t *conns; /* every started connection */
    int admitted;
    client_t *buckets[BUCKETS];
    char *timeout_answer; /* the 408 of a body cut off, whole */
    size_t timeout_answer_len;
    deta_counter_t *refused[R_COUNT];
    deta_gauge_t *open;
};

/* ---- per-address counts (under the lock) ---- */

static void client_key(const struct sockaddr *addr, unsigned char key[17]) {
    memset(key, 0, 17);
    if (addr && addr->sa_family == AF_INET) {
        key[0] = 4;
        memcpy(key + 1, &((const struct sockaddr_in *)(const void *)addr)->sin_addr, 4);
    } else if (addr && addr->sa_family == AF_INET6) {
        key[0] = 6;
        memcpy(key + 1, &((const struct sockaddr_in6 *)(const void *)addr)->sin6_addr, 16);
    }
}

static size_t client_bucket(const unsigned char key[17]) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < 17; i++)
        h = (h ^ key[i]) * 16777619u;
    return h % BUCKETS;
}

static client_t *client_find(http_guard_t *g, const unsigned char key[17], bool create) {
    size_t b = client_bucket(key);
    for (client_t *c = g->buckets[b]; c; c = c->next)
        if (memcmp(c->key, key, sizeof c->key) == 0)
            return c;
    if (!create)
        return NULL;
    client_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    memcpy(c->key, key, sizeof c->key);
    c->next = g->buckets[b];
    g->buckets[b] = c;
    return c;
}

static void client_release(http_guard_t *g, client_t *client) {
    if (--client->count > 0)
        return;
    client_t **p = &g->buckets[client_bucket(client->key)];
    while (*p && *p != client)
        p = &(*p)->next;
    if (*p)
        *p = client->next;
    free(client);
}

/* ---- the guard ---- */

static char *timeout_answer(const deta_http_limits_t *limits, size_t *len) {
    char body[256], *text = NULL;
    int n = snprintf(body, sizeof body,
                     "{\"status\":408,\"error\":\"Request Timeout\",\"message\":\"the request "
                     "body took longer than HTTP_BODY_TIMEOUT_MS (%d ms)\"}",
                     limits->body_timeout_ms);
    if (n < 0 || (size_t)n >= sizeof body)
        return NULL;
    int total = asprintf(&text,
                         "HTTP/1.1 408 Request Timeout\r\n"
                         "Content-Type: application/json\r\n"
                         "Content-Length: %d\r\n"
                         "Connection: close\r\n"
                         "X-Content-Type-Options: nosniff\r\n"
                         "Referrer-Policy: no-referrer\r\n"
                         "X-Frame-Options: DENY\r\n"
                         "Content-Security-Policy: %s\r\n"
                         "Cache-Control: no-store\r\n"
                         "\r\n%s",
                         n, DETA_HTTP_API_CSP, body);
    if (total < 0)
        return NULL;
    *len = (size_t)total;
    return text;
}

http_guard_t *http_guard_new(const deta_http_limits_t *limits, deta_metrics_t *metrics) {
    http_guard_t *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    g->limits = *limits;
    g->timeout_answer = timeout_answer(limits, &g->timeout_answer_len);
    if (!g->timeout_answer) {
        free(g);
        return NULL;
    }
    pthread_mutex_init(&g->lock, NULL);
    deta_cond_init_monotonic(&g->wake);
    for (int i = 0; metrics && i < R_COUNT; i++) {
        char labels[64];
        snprintf(labels, sizeof labels, "reason=\"%s\"", reason_names[i]);
        g->refused[i] = deta_counter(metrics, "http_refused_total",
                                     "Connections and requests refused by the HTTP bounds "
                                     "(HTTP_MAX_CONNECTIONS and the like), by reason",
                                     labels);
    }
    if (metrics)
        g->open = deta_gauge(metrics, "http_connections", "Open HTTP connections", NULL);
    return g;
}

static void count(http_guard_t *g, reason_t r) {
    if (g->refused[r])
        deta_counter_inc(g->refused[r]);
}

void http_guard_count(http_guard_t *g, const char *reason) {
    for (int i = 0; g && reason && i < R_COUNT; i++)
        if (strcmp(reason, reason_names[i]) == 0)
            count(g, (reason_t)i);
}

/* Under the lock: shuts c's socket (its descriptor is open and its own: see above). */
static void cut(http_guard_t *g, http_conn_t *c) {
    if (c->phase == PHASE_BODY) {
        ssize_t sent = send(c->fd, g->timeout_answer, g->timeout_answer_len,
                            MSG_DONTWAIT | MSG_NOSIGNAL);
        (void)sent; /* best effort: the socket is shut either way */
    }
    count(g, c->phase == PHASE_BODY ? R_BODY_TIMEOUT : R_HEADER_TIMEOUT);
    shutdown(c->fd, SHUT_RDWR);
    c->phase = PHASE_CUT;
    c->deadline = 0;
}

static void *watch(void *arg) {
    http_guard_t *g = arg;
    int shortest = g->limits.header_timeout_ms < g->limits.body_timeout_ms
                       ? g->limits.header_timeout_ms
                       : g->limits.body_timeout_ms;
    long period = shortest / 8;
    period = period < WATCH_MIN_MS ? WATCH_MIN_MS : period > WATCH_MAX_MS ? WATCH_MAX_MS : period;
    pthread_mutex_lock(&g->lock);
    while (!g->stop) {
        long now = deta_clock_ms();
        for (http_conn_t *c = g->conns; c; c = c->next)
            if (c->deadline && now >= c->deadline)
                cut(g, c);
        struct timespec until = deta_clock_after(period);
        pthread_cond_timedwait(&g->wake, &g->lock, &until);
    }
    pthread_mutex_unlock(&g->lock);
    return NULL;
}

deta_err_t http_guard_start(http_guard_t *g, char *errstr, size_t errsize) {
    if (pthread_create(&g->watchdog, NULL, watch, g) != 0)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "cannot start the HTTP watchdog");
    g->started = true;
    return DETA_OK;
}

void http_guard_stop(http_guard_t *g) {
    if (!g || !g->started)
        return;
    pthread_mutex_lock(&g->lock);
    g->stop = true;
    pthread_cond_signal(&g->wake);
    pthread_mutex_unlock(&g->lock);
    pthread_join(g->watchdog, NULL);
    g->started = false;
}

void http_guard_free(http_guard_t *g) {
    if (!g)
        return;
    http_guard_stop(g);
    for (size_t b = 0; b < BUCKETS; b++)
        while (g->buckets[b]) {
            client_t *next = g->buckets[b]->next;
            free(g->buckets[b]);
            g->buckets[b] = next;
        }
    pthread_cond_destroy(&g->wake);
    pthread_mutex_destroy(&g->lock);
    free(g->timeout_answer);
    free(g);
}

/* ---- connections ---- */

static void conn_started(http_guard_t *g, struct MHD_Connection *conn, void **socket_context) {
    const union MHD_ConnectionInfo *fd_info =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    const union MHD_ConnectionInfo *addr_info =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    http_conn_t *c = calloc(1, sizeof *c);
    if (!c || !fd_info) {
        free(c);
        return;
    }
    unsigned char key[17];
    client_key(addr_info ? addr_info->client_addr : NULL, key);
    c->guard = g;
    c->fd = fd_info->connect_fd;
    pthread_mutex_lock(&g->lock);
    if (g->admitted >= g->limits.max_connections) {
        c->admission = HTTP_OVER_TOTAL;
    } else {
        client_t *client = client_find(g, key, true);
        if (!client) {
            c->admission = HTTP_OVER_TOTAL; /* out of memory: refuse, as when full */
        } else if (client->count >= g->limits.max_connections_per_client) {
            c->admission = HTTP_OVER_CLIENT;
        } else {
            client->count++;
            g->admitted++;
            c->client = client;
            c->admission = HTTP_ADMITTED;
        }
    }
    c->phase = PHASE_HEADERS;
    c->deadline = deta_clock_ms() + g->limits.header_timeout_ms;
    c->next = g->conns;
    if (g->conns)
        g->conns->prev = c;
    g->conns = c;
    pthread_mutex_unlock(&g->lock);
    *socket_context = c;
    if (g->open)
        deta_gauge_add(g->open, 1);
}

static void conn_closed(http_guard_t *g, void **socket_context) {
    http_conn_t *c = *socket_context;
    if (!c)
        return;
    pthread_mutex_lock(&g->lock);
    if (c->prev)
        c->prev->next = c->next;
    else
        g->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->client) {
        client_release(g, c->client);
        g->admitted--;
    }
    pthread_mutex_unlock(&g->lock);
    *socket_context = NULL;
    free(c);
    if (g->open)
        deta_gauge_add(g->open, -1);
}

void http_guard_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                       enum MHD_ConnectionNotificationCode code) {
    http_guard_t *g = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED)
        conn_started(g, conn, socket_context);
    else if (code == MHD_CONNECTION_NOTIFY_CLOSED)
        conn_closed(g, socket_context);
}

http_conn_t *http_guard_conn(struct MHD_Connection *conn) {
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return info ? info->socket_context : NULL;
}

http_admission_t http_guard_admission(const http_conn_t *c) {
    return c ? c->admission : HTTP_ADMITTED; /* constant after STARTED */
}

/* false when the watchdog cut the connection: whatever is still buffered of its
 * request must not be served (its client was told 408, or nothing). */
static bool set_phase(http_guard_t *g, http_conn_t *c, phase_t phase, int timeout_ms) {
    if (!g || !c)
        return true;
    pthread_mutex_lock(&g->lock);
    bool live = c->phase != PHASE_CUT;
    if (live) {
        c->phase = phase;
        c->deadline = timeout_ms > 0 ? deta_clock_ms() + timeout_ms : 0;
    }
    pthread_mutex_unlock(&g->lock);
    return live;
}

bool http_guard_headers_in(http_guard_t *g, http_conn_t *c) {
    return set_phase(g, c, PHASE_BODY, g ? g->limits.body_timeout_ms : 0);
}

bool http_guard_request_in(http_guard_t *g, http_conn_t *c) {
    return set_phase(g, c, PHASE_SERVED, 0);
}

void http_guard_request_done(http_guard_t *g, http_conn_t *c) {
    (void)set_phase(g, c, PHASE_HEADERS, g ? g->limits.header_timeout_ms : 0);
}
