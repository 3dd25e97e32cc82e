/*
 * otlp_http.c - the one HTTP request the OTLP exporter makes: POST <path> with a
 * JSON body to an http:// collector, bounded in time from the connect to the
 * last byte of the answer's status line.
 *
 * Why a small hand-written client rather than libcurl. libcurl is a well-kept
 * library, and the project already uses it, but only in its clients
 * (lib/client, tests, deta-cli): no service links it, and the service images
 * (infra/docker, FROM scratch) carry exactly the libraries the services load.
 * libcurl4 would add its own tree to every service image (nghttp2, ssh2, rtmp,
 * ldap, gssapi/krb5, psl, idn2, brotli, ...) and a large surface to a process
 * that otherwise speaks only Postgres, Kafka, Redis and answers HTTP. What the
 * exporter needs is narrow: one request of a fixed shape (POST, Content-Type,
 * Content-Length, Connection: close), whose answer matters only by its status
 * code, to a collector that is by design near (an OpenTelemetry Collector as a
 * sidecar, a node agent, or a service in the cluster), all within a deadline.
 * Non-blocking sockets and poll() do that in about a hundred lines whose every
 * wait is bounded by the deadline. What it costs: no TLS and no proxy. Traces
 * leave the pod through the collector, which is where TLS, authentication,
 * retries and fan-out belong (the collector's usual deployment); an https://
 * endpoint is refused at start (trace_config.c) rather than sent in clear.
 * Should services ever need to reach a remote collector directly, libcurl is
 * the right tool then, behind deta_otlp_post().
 *
 * The name is resolved (getaddrinfo) on each export, on the exporter's thread:
 * a collector's address may change (a Kubernetes service). getaddrinfo has no
 * timeout of its own; a resolver that hangs holds the exporter's thread only,
 * never a caller (spans queue, then drop), and the shutdown's flush is bounded
 * by not waiting for that thread past its bound (otlp.c).
 *
 * Only the status line of the answer is read (deta_otlp_status_code, fuzzed by
 * tests/fuzz/fuzz_trace_context.c); the rest is discarded.
 */
#include "trace_internal.h"
#include "deta/clock.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define STATUS_LINE_MAX 256

bool deta_otlp_url_parse(const char *url, otlp_url_t *out, char *why, size_t whysize) {
    memset(out, 0, sizeof *out);
    if (strncmp(url, "https://", 8) == 0) {
        snprintf(why, whysize,
                 "https is not supported: point it at a collector over http (a sidecar or "
                 "agent, which forwards with TLS)");
        return false;
    }
    if (strncmp(url, "http://", 7) != 0) {
        snprintf(why, whysize, "\"%.80s\" is not an http:// URL", url);
        return false;
    }
    const char *host = url + 7;
    const char *path = strchr(host, '/');
    size_t hostport = path ? (size_t)(path - host) : strlen(host);
    if (!path)
        path = "/";
    const char *colon = NULL;
    if (hostport > 0 && host[0] == '[') { /* [v6]:port */
        const char *close = memchr(host, ']', hostport);
        if (!close) {
            snprintf(why, whysize, "an IPv6 address without its ']'");
            return false;
        }
        if (close + 1 < host + hostport && close[1] != ':') {
            snprintf(why, whysize, "text after the IPv6 address");
            return false;
        }
        colon = close + 1 < host + hostport ? close + 1 : NULL;
        size_t hl = (size_t)(close - host - 1);
        if (hl == 0 || hl >= sizeof out->host)
            goto bad_host;
        memcpy(out->host, host + 1, hl);
    } else {
        colon = memchr(host, ':', hostport);
        size_t hl = colon ? (size_t)(colon - host) : hostport;
        if (hl == 0 || hl >= sizeof out->host)
            goto bad_host;
        memcpy(out->host, host, hl);
        for (size_t i = 0; i < hl; i++)
            if (out->host[i] == '@' || out->host[i] <= ' ' || out->host[i] > '~')
                goto bad_host;
    }
    if (colon) {
        size_t pl = (size_t)(host + hostport - colon - 1);
        long port = 0;
        for (size_t i = 0; i < pl; i++) {
            if (colon[1 + i] < '0' || colon[1 + i] > '9' || port > 65535)
                goto bad_port;
            port = port * 10 + (colon[1 + i] - '0');
        }
        if (pl == 0 || port < 1 || port > 65535)
            goto bad_port;
        snprintf(out->port, sizeof out->port, "%ld", port);
    } else {
        snprintf(out->port, sizeof out->port, "80");
    }
    if (strlen(path) >= sizeof out->path) {
        snprintf(why, whysize, "the path is longer than %zu bytes", sizeof out->path - 1);
        return false;
    }
    for (const char *p = path; *p; p++) {
        if (*p <= ' ' || *p > '~') {
            snprintf(why, whysize, "the path holds a blank or a control character");
            return false;
        }
    }
    snprintf(out->path, sizeof out->path, "%s", path);
    return true;
bad_host:
    snprintf(why, whysize, "no valid host in \"%.80s\"", url);
    return false;
bad_port:
    snprintf(why, whysize, "no valid port in \"%.80s\"", url);
    return false;
}

int deta_otlp_status_code(const char *buf, size_t len) {
    /* "HTTP/1.x SSS ..." up to the line's end */
    const char *eol = memchr(buf, '\n', len);
    if (!eol || len < 12 || memcmp(buf, "HTTP/1.", 7) != 0)
        return 0;
    if (buf[7] < '0' || buf[7] > '9' || buf[8] != ' ')
        return 0;
    int code = 0;
    for (int i = 9; i < 12; i++) {
        if (buf[i] < '0' || buf[i] > '9')
            return 0;
        code = code * 10 + (buf[i] - '0');
    }
    if (code < 100 || (len > 12 && buf + 12 < eol && buf[12] != ' ' && buf[12] != '\r'))
        return 0;
    return code;
}

/* Waits for events on fd until deadline; false on timeout or error. */
static bool wait_fd(int fd, short events, long deadline) {
    for (;;) {
        long left = deadline - deta_clock_ms();
        if (left <= 0)
            return false;
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, (int)left);
        if (n > 0)
            return true;
        if (n < 0 && errno != EINTR)
            return false;
    }
}

static int connect_by(const otlp_url_t *url, long deadline, char *why, size_t whysize) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(url->host, url->port, &hints, &res);
    if (rc != 0) {
        snprintf(why, whysize, "cannot resolve %s: %s", url->host, gai_strerror(rc));
        return -1;
    }
    int fd = -1;
    snprintf(why, whysize, "cannot connect to %s:%s", url->host, url->port);
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    ai->ai_protocol);
        if (fd < 0)
            continue;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        int soerr = errno;
        socklen_t sl = sizeof soerr;
        if (soerr == EINPROGRESS && wait_fd(fd, POLLOUT, deadline) &&
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0)
            break;
        snprintf(why, whysize, "cannot connect to %s:%s: %s", url->host, url->port,
                 soerr == EINPROGRESS ? "timed out" : strerror(soerr));
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

static bool send_all(int fd, const char *data, size_t len, long deadline) {
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n > 0) {
            data += n;
            len -= (size_t)n;
        } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
            return false;
        } else if (!wait_fd(fd, POLLOUT, deadline)) {
            return false;
        }
    }
    return true;
}

int deta_otlp_post(const otlp_url_t *url, const char *body, size_t len, int timeout_ms,
                   char *why, size_t whysize) {
    long deadline = deta_clock_ms() + timeout_ms;
    int fd = connect_by(url, deadline, why, whysize);
    if (fd < 0)
        return 0;
    char head[768];
    int hl = snprintf(head, sizeof head,
                      "POST %s HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\nConnection: close\r\nUser-Agent: deta-otlp\r\n\r\n",
                      url->path, url->host, url->port, len);
    int code = 0;
    if (hl <= 0 || (size_t)hl >= sizeof head || !send_all(fd, head, (size_t)hl, deadline) ||
        !send_all(fd, body, len, deadline)) {
        snprintf(why, whysize, "cannot send to %s:%s: %s", url->host, url->port,
                 deta_clock_ms() >= deadline ? "timed out" : "connection lost");
        close(fd);
        return 0;
    }
    char line[STATUS_LINE_MAX];
    size_t got = 0;
    while (got < sizeof line && !(code = deta_otlp_status_code(line, got))) {
        ssize_t n = recv(fd, line + got, sizeof line - got, 0);
        if (n > 0) {
            got += (size_t)n;
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
            break;
        } else if (!wait_fd(fd, POLLIN, deadline)) {
            break;
        }
    }
    if (!code)
        snprintf(why, whysize, "no answer from %s:%s%s", url->host, url->port,
                 deta_clock_ms() >= deadline ? " in time" : "");
    close(fd);
    return code;
}
