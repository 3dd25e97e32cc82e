/*
 * deta-healthcheck - the container HEALTHCHECK probe of the service images.
 *
 *   deta-healthcheck [-t timeout_ms] [path]
 *
 * Sends `GET <path> HTTP/1.0` (default /actuator/health) to 127.0.0.1 on the
 * port in $HTTP_PORT, the same variable the service reads, so a deployment that
 * moves the port moves the probe with it. Exit 0 when the answer's status is
 * 200, 1 otherwise: Docker reads 0 as healthy and 1 as unhealthy (2 is
 * reserved), so every failure, a bad argument included, is 1 with one line on
 * stderr saying why, which `docker inspect` shows.
 *
 * Design: a plain socket instead of curl in the runtime image: nothing to
 * install, nothing to resolve (the address is a literal, no NSS, so the probe
 * links statically), and only the status line is read. One deadline covers
 * connect, send and receive (non-blocking socket + poll), so a service that
 * accepts but never answers cannot hang the probe past its timeout.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_PATH "/actuator/health"
#define DEFAULT_TIMEOUT_MS 3000
#define MAX_TIMEOUT_MS 60000
#define MAX_PATH_LEN 512
#define MAX_STATUS_LINE 512

typedef struct probe {
    int port;
    long timeout_ms;
    const char *path;
    struct timespec deadline;
} probe_t;

/* Prints why the probe failed and returns the "unhealthy" exit code. */
__attribute__((format(printf, 1, 2))) static int fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("deta-healthcheck: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

/* A decimal number in [min, max] and nothing else, into *out. */
static bool parse_range(const char *s, long min, long max, long *out) {
    if (!s || *s < '0' || *s > '9')
        return false;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return false;
    *out = v;
    return true;
}

/* An absolute path that cannot break the request line: printable, no blanks. */
static bool path_is_safe(const char *p) {
    if (p[0] != '/' || strlen(p) > MAX_PATH_LEN)
        return false;
    for (; *p; p++)
        if (*p <= ' ' || *p == 0x7f)
            return false;
    return true;
}

/* Fills the probe from argv and $HTTP_PORT; 0, or the exit code of a failure. */
static int parse_args(int argc, char **argv, probe_t *pr) {
    pr->timeout_ms = DEFAULT_TIMEOUT_MS;
    pr->path = DEFAULT_PATH;
    int i = 1;
    if (i < argc && strcmp(argv[i], "-t") == 0) {
        if (i + 1 >= argc || !parse_range(argv[i + 1], 1, MAX_TIMEOUT_MS, &pr->timeout_ms))
            return fail("-t wants a timeout in milliseconds (1..60000)");
        i += 2;
    }
    if (i < argc)
        pr->path = argv[i++];
    if (i < argc)
        return fail("usage: deta-healthcheck [-t timeout_ms] [path]");
    if (!path_is_safe(pr->path))
        return fail("bad path \"%.64s\": absolute, no blanks", pr->path);
    long port;
    const char *env = getenv("HTTP_PORT");
    if (!env || !*env)
        return fail("HTTP_PORT is not set");
    if (!parse_range(env, 1, 65535, &port))
        return fail("HTTP_PORT: \"%.32s\" is not a port (1..65535)", env);
    pr->port = (int)port;
    return 0;
}

static void start_clock(probe_t *pr) {
    clock_gettime(CLOCK_MONOTONIC, &pr->deadline);
    pr->deadline.tv_sec += pr->timeout_ms / 1000;
    pr->deadline.tv_nsec += (pr->timeout_ms % 1000) * 1000000L;
    if (pr->deadline.tv_nsec >= 1000000000L) {
        pr->deadline.tv_sec++;
        pr->deadline.tv_nsec -= 1000000000L;
    }
}

/* Milliseconds left before the deadline, 0 when it has passed. */
static int ms_left(const probe_t *pr) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long ms = (pr->deadline.tv_sec - now.tv_sec) * 1000 +
              (pr->deadline.tv_nsec - now.tv_nsec) / 1000000L;
    return ms > 0 ? (int)ms : 0;
}

/* Waits until fd is ready for events; false on timeout or poll error. */
static bool wait_ready(const probe_t *pr, int fd, short events) {
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = events};
        int left = ms_left(pr);
        if (left == 0)
            return false;
        int n = poll(&pfd, 1, left);
        if (n > 0)
            return true;
        if (n == 0 || errno != EINTR)
            return false;
    }
}

/* A non-blocking socket connected to 127.0.0.1:port, or -1 (reason on stderr). */
static int connect_local(const probe_t *pr) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fail("socket: %s", strerror(errno));
        return -1;
    }
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)pr->port)};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    int soerr = 0;
    socklen_t len = sizeof soerr;
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0)
        return fd;
    if (errno != EINPROGRESS)
        soerr = errno;
    else if (!wait_ready(pr, fd, POLLOUT))
        soerr = ETIMEDOUT;
    else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0)
        soerr = errno;
    if (soerr == 0)
        return fd;
    fail("connect to 127.0.0.1: %s", strerror(soerr));
    close(fd);
    return -1;
}

static bool send_all(const probe_t *pr, int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
        } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
            return false;
        } else if (!wait_ready(pr, fd, POLLOUT)) {
            return false;
        }
    }
    return true;
}

/* Reads until the end of the status line (or EOF, or the buffer is full). */
static bool read_status_line(const probe_t *pr, int fd, char *buf, size_t size) {
    size_t used = 0;
    buf[0] = '\0';
    while (used + 1 < size && !strchr(buf, '\n')) {
        if (!wait_ready(pr, fd, POLLIN))
            return false;
        ssize_t n = recv(fd, buf + used, size - 1 - used, 0);
        if (n == 0)
            break;
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            return false;
        }
        used += (size_t)n;
        buf[used] = '\0';
    }
    return used > 0;
}

/* The status of "HTTP/1.x NNN ...", or -1 when the line is not one. */
static int parse_status(const char *line) {
    if (strncmp(line, "HTTP/1.", 7) != 0 || (line[7] != '0' && line[7] != '1') || line[8] != ' ')
        return -1;
    const char *s = line + 9;
    for (int i = 0; i < 3; i++)
        if (s[i] < '0' || s[i] > '9')
            return -1;
    if (s[3] != ' ' && s[3] != '\r' && s[3] != '\n')
        return -1;
    return (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
}

/* Sends the request and returns the answer's status, or -1 (reason on stderr). */
static int fetch_status(const probe_t *pr, int fd) {
    char req[MAX_PATH_LEN + 160];
    int len = snprintf(req, sizeof req,
                       "GET %s HTTP/1.0\r\nHost: 127.0.0.1:%d\r\nUser-Agent: deta-healthcheck\r\n"
                       "Connection: close\r\n\r\n",
                       pr->path, pr->port);
    if (!send_all(pr, fd, req, (size_t)len)) {
        fail("cannot send the request");
        return -1;
    }
    char line[MAX_STATUS_LINE];
    if (!read_status_line(pr, fd, line, sizeof line)) {
        fail("no answer (connection closed, or timed out)");
        return -1;
    }
    int status = parse_status(line);
    if (status < 0) {
        line[strcspn(line, "\r\n")] = '\0';
        fail("not an HTTP answer: \"%.64s\"", line);
    }
    return status;
}

int main(int argc, char **argv) {
    probe_t pr;
    int rc = parse_args(argc, argv, &pr);
    if (rc)
        return rc;
    start_clock(&pr);
    int fd = connect_local(&pr);
    if (fd < 0)
        return 1;
    int status = fetch_status(&pr, fd);
    close(fd);
    if (status < 0)
        return 1;
    if (status != 200)
        return fail("unhealthy: HTTP %d", status);
    printf("healthy: HTTP 200 from 127.0.0.1:%d%s\n", pr.port, pr.path);
    return 0;
}
