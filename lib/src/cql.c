/*
 * cql.c - the connection of the CQL v4 client (see deta/cql.h): contact points,
 * the socket, the handshake, requests and their answers, the prepared statements
 * of a connection, reconnecting, and the per-thread pool. The frames themselves
 * are cql_codec.c's; nothing here knows a body's layout.
 *
 * Design.
 *
 *   - One socket, non-blocking from the start. Connecting is bounded by
 *     connect_timeout_ms per contact point (every address it resolves to shares
 *     that time); each request, from its first byte written to the last byte of
 *     its answer read, by request_timeout_ms, with poll() before every read and
 *     write. A request that cannot finish in time loses the connection: its answer
 *     could still come, and a later request must never read it as its own.
 *     Writes use MSG_NOSIGNAL, so a node that went away is an error, not SIGPIPE.
 *
 *   - Requests are synchronous, yet each carries the next stream id (1..32767,
 *     wrapping), and its answer must carry the same one. EVENT frames (stream -1)
 *     are skipped (this client never REGISTERs, but a proxy might push them);
 *     any other stream is a protocol violation that drops the connection. So
 *     does anything the codec refuses: a header that is not a v4 response, a body
 *     larger than max_frame_bytes (checked before it is read or allocated), a
 *     body that does not parse. A connection is never used again after a frame
 *     went wrong, since where the next frame starts is no longer known.
 *
 *   - The handshake: STARTUP (CQL_VERSION 3.0.0); READY, or AUTHENTICATE answered
 *     with the PasswordAuthenticator's token ("\0user\0password"), whatever the
 *     class (DSE's and others' authenticators take the same plain token), then
 *     AUTH_CHALLENGE rounds (bounded) until AUTH_SUCCESS or an ERROR. Then USE of
 *     the keyspace (quoted, so its case is kept), and, with local_dc, a look at
 *     system.local: a node of another data center is kept (the read model works
 *     there too) but tried after the others next time, and a warning says so.
 *
 *   - A contact point that cannot be reached, or fails the handshake with a
 *     TRANSIENT error, gives way to the next; an ERROR answer that will not
 *     change from node to node (bad credentials, an unknown keyspace) ends the
 *     attempt at once. A failed attempt arms the backoff (reconnect_min_ms,
 *     doubling up to reconnect_max_ms, reset by a success): until it elapses,
 *     calls fail with TRANSIENT at once, without touching the network, saying
 *     when the next attempt comes and what the last one met.
 *
 *   - Before a request goes out on an idle connection, a socket that is readable
 *     is checked: a node that closed the connection (restart, idle timeout) has
 *     left an end of file there, and the connection is replaced before the
 *     request is written, so the first call after such a loss does not fail.
 *
 *   - Prepared statements are kept per connection, keyed by their text, in an
 *     array sorted by text (binary search), at most PREPARED_MAX of them, the
 *     oldest evicted first (a batch first marks its own as the newest). EXECUTE
 *     prepares on a miss; an UNPREPARED answer (the node forgot the id: restart,
 *     cache eviction) prepares again and executes once more, never twice. Losing the connection empties the cache: another node
 *     (or the same one restarted) may not know the ids.
 *
 * A deta_cql_t is used by one thread at a time: nothing in it is locked. The
 * pool gives each thread its own (perthread.c).
 */
#include "deta/cql.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "cql_codec.h"
#include "deta/log.h"
#include "perthread.h"

#define DEFAULT_PORT 9042
#define DEFAULT_CONNECT_TIMEOUT_MS 5000
#define DEFAULT_REQUEST_TIMEOUT_MS 12000
#define DEFAULT_RECONNECT_MIN_MS 100
#define DEFAULT_RECONNECT_MAX_MS 10000
#define DEFAULT_MAX_FRAME_BYTES ((size_t)16 << 20)
#define PREPARED_MAX 256
/* PasswordAuthenticator needs one round; a challenge loop that does not end is
 * a server we do not understand. */
#define AUTH_ROUNDS_MAX 8
#define CQL_VERSION "3.0.0"
#define HOST_MAX 256

typedef struct contact {
    char host[HOST_MAX];
    char port[8];
    bool other_dc; /* its node said another data center than local_dc */
} contact_t;

typedef struct prepared {
    char *cql;
    uint8_t *id;
    size_t idlen;
    unsigned long seq; /* when it was prepared: the smallest is evicted */
} prepared_t;

struct deta_cql {
    deta_cql_settings_t s; /* defaults applied; strings point to the copies below */
    char *contact_points, *username, *password, *keyspace, *local_dc;
    contact_t *contacts;
    size_t ncontacts;

    int fd; /* -1 when not connected */
    char node[HOST_MAX + 16];
    int16_t stream; /* the last stream id used */

    long retry_at;  /* deta_clock_ms() before which no connect is tried; 0: none */
    int backoff_ms; /* the wait armed by the last failure; 0 after a success */
    char connect_error[600]; /* why the last attempt failed, for the calls inside its backoff */

    int last_error;
    deta_cql_stats_t stats;

    prepared_t *prepared[PREPARED_MAX]; /* sorted by cql */
    size_t nprepared;
    unsigned long prepared_seq;
};

/* ---- errors ---- */

/* The names of spec section 9. */
static const char *error_name(int code) {
    switch (code) {
    case DETA_CQL_E_SERVER: return "Server error";
    case DETA_CQL_E_PROTOCOL: return "Protocol error";
    case DETA_CQL_E_BAD_CREDENTIALS: return "Bad credentials";
    case DETA_CQL_E_UNAVAILABLE: return "Unavailable";
    case DETA_CQL_E_OVERLOADED: return "Overloaded";
    case DETA_CQL_E_BOOTSTRAPPING: return "Is_bootstrapping";
    case DETA_CQL_E_TRUNCATE: return "Truncate_error";
    case DETA_CQL_E_WRITE_TIMEOUT: return "Write_timeout";
    case DETA_CQL_E_READ_TIMEOUT: return "Read_timeout";
    case DETA_CQL_E_READ_FAILURE: return "Read_failure";
    case DETA_CQL_E_FUNCTION_FAILURE: return "Function_failure";
    case DETA_CQL_E_WRITE_FAILURE: return "Write_failure";
    case DETA_CQL_E_SYNTAX: return "Syntax_error";
    case DETA_CQL_E_UNAUTHORIZED: return "Unauthorized";
    case DETA_CQL_E_INVALID: return "Invalid";
    case DETA_CQL_E_CONFIG: return "Config_error";
    case DETA_CQL_E_ALREADY_EXISTS: return "Already_exists";
    case DETA_CQL_E_UNPREPARED: return "Unprepared";
    default: return "Unknown error";
    }
}

/* A failure that is not the server's answer: last_error -1. */
__attribute__((format(printf, 5, 6))) static deta_err_t fail(deta_cql_t *c, deta_err_t err,
                                                              char *errstr, size_t errsize,
                                                              const char *fmt, ...) {
    c->last_error = -1;
    va_list ap;
    va_start(ap, fmt);
    deta_verrf(err, errstr, errsize, fmt, ap);
    va_end(ap);
    return err;
}

/* An ERROR answer: its class, "<name> (0x....): <message>", and last_error. */
static deta_err_t server_error(deta_cql_t *c, const cql_error_t *e, char *errstr,
                               size_t errsize) {
    deta_errf(DETA_OK, errstr, errsize, "%s (0x%04x): %s", error_name(e->code),
              (unsigned)e->code, e->message);
    c->last_error = e->code;
    return deta_cql_error_class(e->code);
}

/* ---- settings and contact points ---- */

static bool parse_port(const char *s, size_t n, char out[8]) {
    if (n == 0 || n > 5)
        return false;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    if (v < 1 || v > 65535)
        return false;
    snprintf(out, 8, "%ld", v);
    return true;
}

/* One "host", "host:port", "[v6]", "[v6]:port" or bare "v6" (two colons or more:
 * no port can be told apart, so none is read). */
static bool parse_contact(const char *s, size_t n, int default_port, contact_t *out) {
    const char *host = s, *port = NULL;
    size_t hostlen = n, portlen = 0;
    if (n > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', n);
        if (!close)
            return false;
        host = s + 1;
        hostlen = (size_t)(close - host);
        size_t rest = n - (size_t)(close + 1 - s);
        if (rest > 0) {
            if (close[1] != ':')
                return false;
            port = close + 2;
            portlen = rest - 1;
        }
    } else {
        const char *colon = memchr(s, ':', n);
        if (colon && !memchr(colon + 1, ':', n - (size_t)(colon + 1 - s))) {
            hostlen = (size_t)(colon - s);
            port = colon + 1;
            portlen = n - hostlen - 1;
        }
    }
    if (hostlen == 0 || hostlen >= HOST_MAX)
        return false;
    memcpy(out->host, host, hostlen);
    out->host[hostlen] = '\0';
    if (port)
        return parse_port(port, portlen, out->port);
    snprintf(out->port, sizeof out->port, "%d", default_port);
    return true;
}

static bool parse_contacts(deta_cql_t *c, char *errstr, size_t errsize) {
    size_t n = 1;
    for (const char *p = c->contact_points; *p; p++)
        n += *p == ',';
    c->contacts = calloc(n, sizeof *c->contacts);
    if (!c->contacts) {
        deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
        return false;
    }
    const char *p = c->contact_points;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        while (len > 0 && (*p == ' ' || *p == '\t'))
            p++, len--;
        while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        if (!parse_contact(p, len, c->s.port, &c->contacts[c->ncontacts])) {
            deta_errf(DETA_ERR_INVALID, errstr, errsize,
                      "contact point \"%.*s\" is not host[:port] (in \"%s\")", (int)len, p,
                      c->contact_points);
            return false;
        }
        c->ncontacts++;
        if (!end)
            break;
        p = end + 1;
    }
    return true;
}

static bool copy_string(char **dst, const char *src) {
    *dst = strdup(src ? src : "");
    return *dst != NULL;
}

deta_cql_t *deta_cql_new(const deta_cql_settings_t *s, char *errstr, size_t errsize) {
    if (!s || !s->contact_points || !s->contact_points[0]) {
        deta_errf(DETA_ERR_INVALID, errstr, errsize, "no contact points");
        return NULL;
    }
    if (s->port < 0 || s->port > 65535) {
        deta_errf(DETA_ERR_INVALID, errstr, errsize, "port %d is out of range", s->port);
        return NULL;
    }
    deta_cql_t *c = calloc(1, sizeof *c);
    if (!c) {
        deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
        return NULL;
    }
    c->fd = -1;
    c->last_error = -1;
    c->s = *s;
    if (!copy_string(&c->contact_points, s->contact_points) ||
        !copy_string(&c->username, s->username) || !copy_string(&c->password, s->password) ||
        !copy_string(&c->keyspace, s->keyspace) || !copy_string(&c->local_dc, s->local_dc)) {
        deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
        deta_cql_free(c);
        return NULL;
    }
    c->s.contact_points = c->contact_points;
    c->s.username = c->username;
    c->s.password = c->password;
    c->s.keyspace = c->keyspace;
    c->s.local_dc = c->local_dc;
    if (c->s.port == 0)
        c->s.port = DEFAULT_PORT;
    if (c->s.connect_timeout_ms <= 0)
        c->s.connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT_MS;
    if (c->s.request_timeout_ms <= 0)
        c->s.request_timeout_ms = DEFAULT_REQUEST_TIMEOUT_MS;
    if (c->s.reconnect_min_ms <= 0)
        c->s.reconnect_min_ms = DEFAULT_RECONNECT_MIN_MS;
    if (c->s.reconnect_max_ms <= 0)
        c->s.reconnect_max_ms = DEFAULT_RECONNECT_MAX_MS;
    if (c->s.reconnect_max_ms < c->s.reconnect_min_ms)
        c->s.reconnect_max_ms = c->s.reconnect_min_ms;
    if (c->s.max_frame_bytes == 0)
        c->s.max_frame_bytes = DEFAULT_MAX_FRAME_BYTES;
    if (!parse_contacts(c, errstr, errsize)) {
        deta_cql_free(c);
        return NULL;
    }
    return c;
}

/* ---- the prepared statements of the connection ---- */

static void prepared_free(prepared_t *p) {
    if (!p)
        return;
    free(p->cql);
    free(p->id);
    free(p);
}

static void cache_clear(deta_cql_t *c) {
    for (size_t i = 0; i < c->nprepared; i++)
        prepared_free(c->prepared[i]);
    c->nprepared = 0;
}

/* The entry of cql, or NULL with *pos where it would go. */
static prepared_t *cache_find(deta_cql_t *c, const char *cql, size_t *pos) {
    size_t lo = 0, hi = c->nprepared;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int cmp = strcmp(cql, c->prepared[mid]->cql);
        if (cmp == 0) {
            if (pos)
                *pos = mid;
            return c->prepared[mid];
        }
        if (cmp < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    if (pos)
        *pos = lo;
    return NULL;
}

static void cache_remove_at(deta_cql_t *c, size_t i) {
    prepared_free(c->prepared[i]);
    memmove(&c->prepared[i], &c->prepared[i + 1], (c->nprepared - i - 1) * sizeof(prepared_t *));
    c->nprepared--;
}

static void cache_remove(deta_cql_t *c, const char *cql) {
    size_t pos;
    if (cache_find(c, cql, &pos))
        cache_remove_at(c, pos);
}

/* false when out of memory (the statement then stays unprepared here). */
static bool cache_put(deta_cql_t *c, const char *cql, const uint8_t *id, size_t idlen) {
    cache_remove(c, cql);
    if (c->nprepared == PREPARED_MAX) {
        size_t oldest = 0;
        for (size_t i = 1; i < c->nprepared; i++)
            if (c->prepared[i]->seq < c->prepared[oldest]->seq)
                oldest = i;
        cache_remove_at(c, oldest);
    }
    prepared_t *p = calloc(1, sizeof *p);
    if (p) {
        p->cql = strdup(cql);
        p->id = malloc(idlen ? idlen : 1);
    }
    if (!p || !p->cql || !p->id) {
        prepared_free(p);
        return false;
    }
    memcpy(p->id, id, idlen);
    p->idlen = idlen;
    p->seq = ++c->prepared_seq;
    size_t pos;
    cache_find(c, cql, &pos);
    memmove(&c->prepared[pos + 1], &c->prepared[pos], (c->nprepared - pos) * sizeof(prepared_t *));
    c->prepared[pos] = p;
    c->nprepared++;
    return true;
}

/* ---- the socket ---- */

static void drop_connection(deta_cql_t *c) {
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->node[0] = '\0';
    cache_clear(c);
}

void deta_cql_free(deta_cql_t *c) {
    if (!c)
        return;
    drop_connection(c);
    free(c->contacts);
    free(c->contact_points);
    free(c->username);
    free(c->password);
    free(c->keyspace);
    free(c->local_dc);
    free(c);
}

bool deta_cql_connected(const deta_cql_t *c) { return c && c->fd >= 0; }

void deta_cql_disconnect(deta_cql_t *c) {
    if (c)
        drop_connection(c);
}

const char *deta_cql_node(const deta_cql_t *c) { return c ? c->node : ""; }

int deta_cql_last_error(const deta_cql_t *c) { return c ? c->last_error : -1; }

void deta_cql_get_stats(const deta_cql_t *c, deta_cql_stats_t *out) {
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    if (c)
        *out = c->stats;
}

/* Waits for events on fd until the deadline: 1 ready, 0 timed out, -1 error. */
static int wait_fd(int fd, short events, long deadline) {
    for (;;) {
        long left = deadline - deta_clock_ms();
        if (left <= 0)
            return 0;
        struct pollfd p = {.fd = fd, .events = events};
        int r = poll(&p, 1, left > 1000000 ? 1000000 : (int)left);
        if (r > 0)
            return 1;
        if (r < 0 && errno != EINTR)
            return -1;
    }
}

/* Connects to one address within the deadline; -1 with the reason. */
static int connect_addr(const struct addrinfo *ai, long deadline, char *why, size_t whysize) {
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    ai->ai_protocol);
    if (fd < 0) {
        snprintf(why, whysize, "socket: %s", strerror(errno));
        return -1;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        if (errno != EINPROGRESS) {
            snprintf(why, whysize, "%s", strerror(errno));
            close(fd);
            return -1;
        }
        int r = wait_fd(fd, POLLOUT, deadline);
        int soerr = 0;
        socklen_t len = sizeof soerr;
        if (r <= 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0 || soerr != 0) {
            snprintf(why, whysize, "%s",
                     r == 0 ? "connect timed out" : strerror(soerr ? soerr : errno));
            close(fd);
            return -1;
        }
    }
    /* Requests are small and each waits for its answer: Nagle would only add
     * delay. Keepalive finds a peer that vanished while the connection idled. */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    return fd;
}

/* Resolves a contact point and connects to the first of its addresses that
 * answers within connect_timeout_ms; -1 with the reason. */
static int open_contact(deta_cql_t *c, const contact_t *ct, char *node, size_t nodesize,
                        char *why, size_t whysize) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(ct->host, ct->port, &hints, &res);
    if (rc != 0) {
        snprintf(why, whysize, "%s", gai_strerror(rc));
        return -1;
    }
    long deadline = deta_clock_ms() + c->s.connect_timeout_ms;
    int fd = -1;
    for (const struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = connect_addr(ai, deadline, why, whysize);
        if (fd >= 0) {
            char h[NI_MAXHOST] = "", p[NI_MAXSERV] = "";
            getnameinfo(ai->ai_addr, ai->ai_addrlen, h, sizeof h, p, sizeof p,
                        NI_NUMERICHOST | NI_NUMERICSERV);
            snprintf(node, nodesize, ai->ai_family == AF_INET6 ? "[%s]:%s" : "%s:%s", h, p);
        }
    }
    freeaddrinfo(res);
    return fd;
}

/* An idle connection with something to read has been closed by the node (it
 * only ever speaks when asked: this client registers for no events). */
static bool idle_connection_died(int fd) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 0) <= 0)
        return false;
    if (p.revents & (POLLERR | POLLNVAL))
        return true;
    char ch;
    ssize_t n = recv(fd, &ch, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

static bool send_all(int fd, const uint8_t *p, size_t n, long deadline, char *why,
                     size_t whysize) {
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int r = wait_fd(fd, POLLOUT, deadline);
            if (r > 0)
                continue;
            snprintf(why, whysize, "%s", r == 0 ? "request timed out" : strerror(errno));
            return false;
        }
        snprintf(why, whysize, "write: %s", strerror(errno));
        return false;
    }
    return true;
}

/* Reads exactly n bytes before the deadline. `what` names the part in the reason. */
static bool recv_exact(int fd, uint8_t *p, size_t n, long deadline, const char *what,
                       char *why, size_t whysize) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = recv(fd, p + got, n - got, 0);
        if (r > 0) {
            got += (size_t)r;
            continue;
        }
        if (r == 0) {
            if (got == 0 && strcmp(what, "header") == 0)
                snprintf(why, whysize, "connection closed by the node");
            else
                snprintf(why, whysize, "connection cut mid-frame (%zu of %zu bytes of the %s)",
                         got, n, what);
            return false;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int w = wait_fd(fd, POLLIN, deadline);
            if (w > 0)
                continue;
            snprintf(why, whysize, "%s", w == 0 ? "request timed out" : strerror(errno));
            return false;
        }
        snprintf(why, whysize, "read: %s", strerror(errno));
        return false;
    }
    return true;
}

/* ---- one request and its answer ---- */

static int16_t next_stream(deta_cql_t *c) {
    c->stream = c->stream >= 32767 ? 1 : (int16_t)(c->stream + 1);
    return c->stream;
}

/* Writes the frame in b (a request on `stream`) and reads its answer into *resp.
 * Every failure drops the connection. */
static deta_err_t roundtrip(deta_cql_t *c, cql_buf_t *b, int16_t stream, cql_response_t *resp,
                            char *errstr, size_t errsize) {
    memset(resp, 0, sizeof *resp);
    if (b->failed) {
        cql_buf_free(b);
        return fail(c, DETA_ERR_INTERNAL, errstr, errsize,
                    "cannot encode the request (out of memory, or a value too long)");
    }
    if (c->fd < 0) {
        cql_buf_free(b);
        return fail(c, DETA_ERR_TRANSIENT, errstr, errsize, "not connected");
    }
    char node[sizeof c->node];
    snprintf(node, sizeof node, "%s", c->node);
    char why[200];
    long deadline = deta_clock_ms() + c->s.request_timeout_ms;
    bool sent = send_all(c->fd, b->p, b->len, deadline, why, sizeof why);
    c->stats.requests++;
    c->stats.bytes_out += b->len;
    cql_buf_free(b);
    if (!sent) {
        drop_connection(c);
        return fail(c, DETA_ERR_TRANSIENT, errstr, errsize, "cassandra %s: %s", node, why);
    }
    for (;;) {
        uint8_t raw[CQL_HEADER_LEN];
        if (!recv_exact(c->fd, raw, sizeof raw, deadline, "header", why, sizeof why)) {
            drop_connection(c);
            return fail(c, DETA_ERR_TRANSIENT, errstr, errsize, "cassandra %s: %s", node, why);
        }
        cql_header_t h;
        if (!cql_header_decode(raw, c->s.max_frame_bytes, &h, why, sizeof why)) {
            drop_connection(c);
            return fail(c, DETA_ERR_INTERNAL, errstr, errsize,
                        "cassandra %s: malformed answer: %s", node, why);
        }
        uint8_t *body = malloc(h.length ? h.length : 1);
        if (!body) {
            drop_connection(c);
            return fail(c, DETA_ERR_INTERNAL, errstr, errsize,
                        "out of memory for an answer of %u bytes", (unsigned)h.length);
        }
        if (!recv_exact(c->fd, body, h.length, deadline, "body", why, sizeof why)) {
            free(body);
            drop_connection(c);
            return fail(c, DETA_ERR_TRANSIENT, errstr, errsize, "cassandra %s: %s", node, why);
        }
        c->stats.bytes_in += CQL_HEADER_LEN + h.length;
        if (h.stream == -1 && h.opcode == CQL_OP_EVENT) {
            free(body);
            /* Pushed events never extend a request's time: a node that kept
             * sending them would otherwise hold us past the deadline. */
            if (deta_clock_ms() >= deadline) {
                drop_connection(c);
                return fail(c, DETA_ERR_TRANSIENT, errstr, errsize,
                            "cassandra %s: timed out (events but no answer)", node);
            }
            continue;
        }
        if (h.stream != stream) {
            free(body);
            drop_connection(c);
            return fail(c, DETA_ERR_TRANSIENT, errstr, errsize,
                        "cassandra %s: protocol violation: answer on stream %d to a request "
                        "on stream %d",
                        node, h.stream, stream);
        }
        if (!cql_response_decode(&h, body, resp, why, sizeof why)) {
            drop_connection(c);
            return fail(c, DETA_ERR_INTERNAL, errstr, errsize,
                        "cassandra %s: malformed answer: %s", node, why);
        }
        return DETA_OK;
    }
}

/* An answer whose opcode the request does not allow: the node and we disagree
 * on the protocol, so the connection goes. */
static deta_err_t unexpected(deta_cql_t *c, cql_response_t *resp, const char *request,
                             char *errstr, size_t errsize) {
    unsigned op = resp->opcode;
    cql_response_clear(resp);
    char node[sizeof c->node];
    snprintf(node, sizeof node, "%s", c->node);
    drop_connection(c);
    return fail(c, DETA_ERR_INTERNAL, errstr, errsize,
                "cassandra %s: unexpected answer (opcode 0x%02x) to %s", node, op, request);
}

/* A RESULT (moved to *out, or dropped when out is NULL), an ERROR, or anything
 * else. resp is cleared. */
static deta_err_t take_result(deta_cql_t *c, cql_response_t *resp, const char *request,
                              deta_cql_result_t *out, char *errstr, size_t errsize) {
    if (resp->opcode == CQL_OP_RESULT) {
        if (out) {
            *out = resp->result;
            memset(&resp->result, 0, sizeof resp->result);
        }
        cql_response_clear(resp);
        return DETA_OK;
    }
    if (resp->opcode == CQL_OP_ERROR) {
        deta_err_t err = server_error(c, &resp->error, errstr, errsize);
        cql_response_clear(resp);
        return err;
    }
    return unexpected(c, resp, request, errstr, errsize);
}

static deta_err_t query_on(deta_cql_t *c, const deta_cql_query_t *q, deta_cql_result_t *out,
                           char *errstr, size_t errsize) {
    cql_buf_t b = {0};
    int16_t stream = next_stream(c);
    cql_encode_query(&b, stream, q);
    cql_response_t resp;
    deta_err_t err = roundtrip(c, &b, stream, &resp, errstr, errsize);
    return err ? err : take_result(c, &resp, "QUERY", out, errstr, errsize);
}

/* PREPARE, keeping the id in the connection's cache. */
static deta_err_t prepare_on(deta_cql_t *c, const char *cql, deta_cql_result_t *out,
                             char *errstr, size_t errsize) {
    cql_buf_t b = {0};
    int16_t stream = next_stream(c);
    cql_encode_prepare(&b, stream, cql);
    c->stats.prepares++;
    cql_response_t resp;
    deta_err_t err = roundtrip(c, &b, stream, &resp, errstr, errsize);
    if (err)
        return err;
    if (resp.opcode == CQL_OP_RESULT && resp.result.kind != DETA_CQL_RESULT_PREPARED)
        return unexpected(c, &resp, "PREPARE", errstr, errsize);
    deta_cql_result_t r;
    err = take_result(c, &resp, "PREPARE", &r, errstr, errsize);
    if (err)
        return err;
    if (!cache_put(c, cql, r.prepared_id, r.prepared_id_len)) {
        deta_cql_result_clear(&r);
        return fail(c, DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    }
    if (out)
        *out = r;
    else
        deta_cql_result_clear(&r);
    return DETA_OK;
}

/* ---- connecting ---- */

/* USE "ks": quoted so that its case is kept, inner quotes doubled. */
static deta_err_t use_keyspace(deta_cql_t *c, char *errstr, size_t errsize) {
    size_t n = strlen(c->keyspace);
    char *cql = malloc(2 * n + 8);
    if (!cql)
        return fail(c, DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    char *w = cql + sprintf(cql, "USE \"");
    for (const char *p = c->keyspace; *p; p++) {
        if (*p == '"')
            *w++ = '"';
        *w++ = *p;
    }
    strcpy(w, "\"");
    deta_cql_query_t q = {.cql = cql, .consistency = DETA_CQL_ONE};
    deta_err_t err = query_on(c, &q, NULL, errstr, errsize);
    free(cql);
    return err;
}

static deta_err_t authenticate(deta_cql_t *c, const char *authenticator, char *errstr,
                               size_t errsize) {
    if (!c->username[0])
        return fail(c, DETA_ERR_INTERNAL, errstr, errsize,
                    "cassandra %s: server requires authentication (%s) and no username is set",
                    c->node, authenticator);
    static const char password_auth[] = "PasswordAuthenticator";
    size_t n = strlen(authenticator), k = sizeof password_auth - 1;
    if (n < k || strcmp(authenticator + n - k, password_auth) != 0)
        DETA_DEBUG("cassandra %s: authenticator %s: answering with a username and password",
                   c->node, authenticator);
    for (int round = 0; round < AUTH_ROUNDS_MAX; round++) {
        cql_buf_t b = {0};
        int16_t stream = next_stream(c);
        cql_encode_auth_response_password(&b, stream, c->username, c->password);
        cql_response_t resp;
        deta_err_t err = roundtrip(c, &b, stream, &resp, errstr, errsize);
        if (err)
            return err;
        if (resp.opcode == CQL_OP_AUTH_SUCCESS) {
            cql_response_clear(&resp);
            return DETA_OK;
        }
        if (resp.opcode == CQL_OP_AUTH_CHALLENGE) {
            cql_response_clear(&resp);
            continue;
        }
        if (resp.opcode == CQL_OP_ERROR)
            return take_result(c, &resp, "AUTH_RESPONSE", NULL, errstr, errsize);
        return unexpected(c, &resp, "AUTH_RESPONSE", errstr, errsize);
    }
    drop_connection(c);
    return fail(c, DETA_ERR_INTERNAL, errstr, errsize,
                "authentication did not end after %d challenges", AUTH_ROUNDS_MAX);
}

/* Which data center the node is in: with local_dc set, a node of another one is
 * remembered (and tried last next time). Never fails the connection by itself. */
static void check_data_center(deta_cql_t *c, contact_t *ct) {
    deta_cql_query_t q = {.cql = "SELECT data_center FROM system.local",
                          .consistency = DETA_CQL_ONE};
    deta_cql_result_t r;
    char why[256], dc[DETA_CQL_NAME_MAX];
    if (query_on(c, &q, &r, why, sizeof why) != DETA_OK) {
        DETA_WARN("cassandra %s: cannot read its data center: %s", ct->host, why);
        return;
    }
    bool is_null = true;
    if (r.kind == DETA_CQL_RESULT_ROWS && r.nrows > 0 && r.ncolumns > 0 &&
        deta_cql_get_text(&r, 0, 0, dc, sizeof dc, &is_null, why, sizeof why) == DETA_OK &&
        !is_null) {
        ct->other_dc = strcmp(dc, c->local_dc) != 0;
        if (ct->other_dc)
            DETA_WARN("cassandra %s is in data center %s, not %s (the local one): connected "
                      "anyway; other contact points are tried first next time",
                      c->node, dc, c->local_dc);
    }
    deta_cql_result_clear(&r);
}

/* STARTUP, authentication, USE, the data center, on the new connection c->fd. */
static deta_err_t handshake(deta_cql_t *c, contact_t *ct, char *errstr, size_t errsize) {
    cql_buf_t b = {0};
    int16_t stream = next_stream(c);
    cql_encode_startup(&b, stream, CQL_VERSION);
    cql_response_t resp;
    deta_err_t err = roundtrip(c, &b, stream, &resp, errstr, errsize);
    if (err)
        return err;
    if (resp.opcode == CQL_OP_AUTHENTICATE) {
        char authenticator[sizeof resp.authenticator];
        snprintf(authenticator, sizeof authenticator, "%s", resp.authenticator);
        cql_response_clear(&resp);
        err = authenticate(c, authenticator, errstr, errsize);
    } else if (resp.opcode == CQL_OP_READY) {
        cql_response_clear(&resp);
    } else if (resp.opcode == CQL_OP_ERROR) {
        err = take_result(c, &resp, "STARTUP", NULL, errstr, errsize);
    } else {
        err = unexpected(c, &resp, "STARTUP", errstr, errsize);
    }
    if (!err && c->keyspace[0])
        err = use_keyspace(c, errstr, errsize);
    if (!err && c->local_dc[0])
        check_data_center(c, ct);
    if (!err && c->fd < 0) /* lost while reading the data center */
        err = fail(c, DETA_ERR_TRANSIENT, errstr, errsize, "connection lost after the handshake");
    return err;
}

/* Tries the contact points, those of the local data center (as far as known)
 * first, each in the order given. */
static deta_err_t connect_any(deta_cql_t *c, char *errstr, size_t errsize) {
    char tried[512] = "";
    deta_err_t err = DETA_ERR_TRANSIENT;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < c->ncontacts; i++) {
            contact_t *ct = &c->contacts[i];
            if (ct->other_dc != (pass == 1))
                continue;
            char why[256];
            c->fd = open_contact(c, ct, c->node, sizeof c->node, why, sizeof why);
            if (c->fd < 0) {
                c->node[0] = '\0';
                c->last_error = -1;
                err = DETA_ERR_TRANSIENT;
            } else {
                c->stream = 0;
                err = handshake(c, ct, why, sizeof why);
                if (!err)
                    return DETA_OK;
                drop_connection(c);
            }
            size_t at = strlen(tried);
            if (snprintf(tried + at, sizeof tried - at, "%s%s:%s: %s", at ? "; " : "",
                         ct->host, ct->port, why) < 0)
                tried[at] = '\0';
            /* A node's answer that the next node would repeat (bad credentials,
             * no such keyspace) ends the attempt. */
            if (err != DETA_ERR_TRANSIENT) {
                deta_errf(err, errstr, errsize, "%s", tried);
                return err;
            }
        }
    }
    deta_errf(err, errstr, errsize, "no contact point answered: %s", tried);
    return err;
}

static deta_err_t ensure_connected(deta_cql_t *c, char *errstr, size_t errsize) {
    if (c->fd >= 0) {
        if (!idle_connection_died(c->fd))
            return DETA_OK;
        DETA_INFO("cassandra %s closed the connection; reconnecting", c->node);
        drop_connection(c);
    }
    long now = deta_clock_ms();
    if (c->retry_at && now < c->retry_at)
        return fail(c, DETA_ERR_TRANSIENT, errstr, errsize,
                    "cassandra: reconnecting in %ld ms (last attempt: %s)", c->retry_at - now,
                    c->connect_error);
    char why[sizeof c->connect_error];
    deta_err_t err = connect_any(c, why, sizeof why);
    if (err == DETA_OK) {
        c->backoff_ms = 0;
        c->retry_at = 0;
        c->connect_error[0] = '\0';
        c->stats.connects++;
        return DETA_OK;
    }
    c->backoff_ms = c->backoff_ms == 0 ? c->s.reconnect_min_ms
                    : c->backoff_ms >= c->s.reconnect_max_ms / 2 ? c->s.reconnect_max_ms
                                                                 : c->backoff_ms * 2;
    c->retry_at = deta_clock_ms() + c->backoff_ms;
    if (c->retry_at == 0)
        c->retry_at = 1;
    memcpy(c->connect_error, why, sizeof why);
    return deta_errf(err, errstr, errsize, "%s", why);
}

deta_err_t deta_cql_connect(deta_cql_t *c, char *errstr, size_t errsize) {
    if (!c)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "no client");
    return ensure_connected(c, errstr, errsize);
}

/* ---- requests ---- */

deta_err_t deta_cql_options(deta_cql_t *c, char *out, size_t outsize, char *errstr,
                            size_t errsize) {
    if (out && outsize)
        out[0] = '\0';
    if (!c)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "no client");
    deta_err_t err = ensure_connected(c, errstr, errsize);
    if (err)
        return err;
    cql_buf_t b = {0};
    int16_t stream = next_stream(c);
    cql_encode_options(&b, stream);
    cql_response_t resp;
    err = roundtrip(c, &b, stream, &resp, errstr, errsize);
    if (err)
        return err;
    if (resp.opcode == CQL_OP_ERROR)
        return take_result(c, &resp, "OPTIONS", NULL, errstr, errsize);
    if (resp.opcode != CQL_OP_SUPPORTED)
        return unexpected(c, &resp, "OPTIONS", errstr, errsize);
    if (out && outsize)
        snprintf(out, outsize, "%s", resp.supported ? resp.supported : "");
    cql_response_clear(&resp);
    return DETA_OK;
}

static void clear_out(deta_cql_result_t *out) {
    if (out)
        memset(out, 0, sizeof *out);
}

deta_err_t deta_cql_query(deta_cql_t *c, const deta_cql_query_t *q, deta_cql_result_t *out,
                          char *errstr, size_t errsize) {
    clear_out(out);
    if (!c || !q || !q->cql)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "no client or no statement");
    deta_err_t err = ensure_connected(c, errstr, errsize);
    return err ? err : query_on(c, q, out, errstr, errsize);
}

deta_err_t deta_cql_prepare(deta_cql_t *c, const char *cql, deta_cql_result_t *out,
                            char *errstr, size_t errsize) {
    clear_out(out);
    if (!c || !cql)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "no client or no statement");
    deta_err_t err = ensure_connected(c, errstr, errsize);
    return err ? err : prepare_on(c, cql, out, errstr, errsize);
}

deta_err_t deta_cql_execute(deta_cql_t *c, const deta_cql_query_t *q, deta_cql_result_t *out,
                            char *errstr, size_t errsize) {
    clear_out(out);
    if (!c || !q || !q->cql)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "no client or no statement");
    deta_err_t err = ensure_connected(c, errstr, errsize);
    if (err)
        return err;
    for (int attempt = 0;; attempt++) {
        prepared_t *p = cache_find(c, q->cql, NULL);
        if (!p) {
            if (attempt > 0)
                c->stats.reprepares++;
            err = prepare_on(c, q->cql, NULL, errstr, errsize);
            if (err)
                return err;
            p = cache_find(c, q->cql, NULL);
        }
        cql_buf_t b = {0};
        int16_t stream = next_stream(c);
        cql_encode_execute(&b, stream, p->id, p->idlen, q);
        cql_response_t resp;
        err = roundtrip(c, &b, stream, &resp, errstr, errsize);
        if (err)
            return err;
        /* The node forgot the statement: prepare it again, and execute once more. */
        if (resp.opcode == CQL_OP_ERROR && resp.error.code == DETA_CQL_E_UNPREPARED &&
            attempt == 0) {
            cql_response_clear(&resp);
            cache_remove(c, q->cql);
            continue;
        }
        return take_result(c, &resp, "EXECUTE", out, errstr, errsize);
    }
}

/* After UNPREPARED on a batch: forget the statement the node named, or, when it
 * names none of the batch's, all of them. */
static void forget_batch_statements(deta_cql_t *c, const deta_cql_batch_t *b,
                                    const cql_error_t *e) {
    bool found = false;
    for (size_t i = 0; i < b->nitems; i++) {
        prepared_t *p = b->items[i].prepared ? cache_find(c, b->items[i].cql, NULL) : NULL;
        if (p && p->idlen == e->unprepared_id_len &&
            memcmp(p->id, e->unprepared_id, p->idlen) == 0) {
            cache_remove(c, b->items[i].cql);
            found = true;
        }
    }
    for (size_t i = 0; i < b->nitems && !found; i++)
        if (b->items[i].prepared)
            cache_remove(c, b->items[i].cql);
}

deta_err_t deta_cql_batch(deta_cql_t *c, const deta_cql_batch_t *b, deta_cql_result_t *out,
                          char *errstr, size_t errsize) {
    clear_out(out);
    if (!c || !b || (b->nitems > 0 && !b->items))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "no client or no batch");
    for (size_t i = 0; i < b->nitems; i++)
        if (!b->items[i].cql)
            return deta_errf(DETA_ERR_INVALID, errstr, errsize, "batch item %zu has no statement",
                             i);
    deta_err_t err = ensure_connected(c, errstr, errsize);
    if (err)
        return err;
    const uint8_t **ids = calloc(b->nitems + 1, sizeof *ids);
    size_t *idlens = calloc(b->nitems + 1, sizeof *idlens);
    if (!ids || !idlens) {
        free(ids);
        free(idlens);
        return fail(c, DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    }
    for (int attempt = 0;; attempt++) {
        /* The batch's statements that are cached become the newest entries
         * first: preparing the missing ones evicts the oldest, which must not be
         * one of this batch while the cache holds others. */
        for (size_t i = 0; i < b->nitems; i++) {
            prepared_t *p = b->items[i].prepared ? cache_find(c, b->items[i].cql, NULL) : NULL;
            if (p)
                p->seq = ++c->prepared_seq;
        }
        for (size_t i = 0; i < b->nitems && !err; i++) {
            if (b->items[i].prepared && !cache_find(c, b->items[i].cql, NULL)) {
                if (attempt > 0)
                    c->stats.reprepares++;
                err = prepare_on(c, b->items[i].cql, NULL, errstr, errsize);
            }
        }
        /* Every id is looked up after all were prepared: preparing one may still
         * have evicted another's entry when the batch holds more than the cache. */
        for (size_t i = 0; i < b->nitems && !err; i++) {
            if (!b->items[i].prepared)
                continue;
            prepared_t *p = cache_find(c, b->items[i].cql, NULL);
            if (!p)
                err = fail(c, DETA_ERR_INVALID, errstr, errsize,
                           "a batch of more than %d prepared statements", PREPARED_MAX);
            else
                ids[i] = p->id, idlens[i] = p->idlen;
        }
        if (err)
            break;
        cql_buf_t buf = {0};
        int16_t stream = next_stream(c);
        cql_encode_batch(&buf, stream, b, ids, idlens);
        cql_response_t resp;
        err = roundtrip(c, &buf, stream, &resp, errstr, errsize);
        if (err)
            break;
        if (resp.opcode == CQL_OP_ERROR && resp.error.code == DETA_CQL_E_UNPREPARED &&
            attempt == 0) {
            forget_batch_statements(c, b, &resp.error);
            cql_response_clear(&resp);
            continue;
        }
        err = take_result(c, &resp, "BATCH", out, errstr, errsize);
        break;
    }
    free(ids);
    free(idlens);
    return err;
}

/* ---- the per-thread pool ---- */

struct deta_cql_pool {
    deta_cql_t *model; /* never connected: holds the settings each thread's copy gets */
    deta_perthread_t *threads;
};

static void *pool_make(const void *model) {
    return deta_cql_new(&((const deta_cql_t *)model)->s, NULL, 0);
}
static void pool_destroy(void *obj) { deta_cql_free(obj); }

deta_cql_pool_t *deta_cql_pool_new(const deta_cql_settings_t *s, char *errstr, size_t errsize) {
    deta_cql_pool_t *pool = calloc(1, sizeof *pool);
    if (!pool) {
        deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
        return NULL;
    }
    pool->model = deta_cql_new(s, errstr, errsize);
    if (pool->model)
        pool->threads = deta_perthread_new(pool->model, pool_make, pool_destroy);
    if (!pool->threads) {
        if (pool->model)
            deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
        deta_cql_free(pool->model);
        free(pool);
        return NULL;
    }
    return pool;
}

deta_cql_t *deta_cql_pool_get(deta_cql_pool_t *p) {
    return p ? deta_perthread_get(p->threads) : NULL;
}

void deta_cql_pool_free(deta_cql_pool_t *p) {
    if (!p)
        return;
    deta_perthread_free(p->threads);
    deta_cql_free(p->model);
    free(p);
}
