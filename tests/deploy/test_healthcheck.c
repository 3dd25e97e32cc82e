/*
 * test_healthcheck.c - the container probe (tools/healthcheck) against a real
 * listening socket: 200 is healthy (exit 0); any other status, a malformed or
 * missing answer, a silent server, no listener, and bad arguments or a bad
 * $HTTP_PORT are unhealthy (exit 1, never 2, which Docker reserves).
 *
 * Design: each case starts a one-shot server thread on 127.0.0.1:<ephemeral>
 * that records the request line and answers with the case's bytes (in pieces
 * when asked, to prove the probe reads across short reads), then runs the probe
 * binary (its path is argv[1], given by ctest) with posix_spawn and a private
 * environment. No server outside the test is needed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *probe_path;

typedef enum { ANSWER, CLOSE_AT_ONCE, STAY_SILENT } server_mode_t;

typedef struct server {
    int listen_fd;
    int port;
    server_mode_t mode;
    const char *pieces[4]; /* the answer, written piece by piece; NULL ends */
    char request_line[256];
    atomic_int connections; /* accepted by the thread */
    bool woken;             /* server_stop had to connect to end the thread */
    pthread_t thread;
} server_t;

/* Reads the request head (up to the blank line) and keeps its first line. */
static void read_request(server_t *s, int fd) {
    char buf[2048];
    size_t used = 0;
    while (used + 1 < sizeof buf) {
        ssize_t n = recv(fd, buf + used, sizeof buf - 1 - used, 0);
        if (n <= 0)
            break;
        used += (size_t)n;
        buf[used] = '\0';
        if (strstr(buf, "\r\n\r\n"))
            break;
    }
    buf[used] = '\0';
    size_t line = strcspn(buf, "\r\n");
    snprintf(s->request_line, sizeof s->request_line, "%.*s", (int)line, buf);
}

static void *serve_one(void *arg) {
    server_t *s = arg;
    int fd = accept(s->listen_fd, NULL, NULL);
    if (fd < 0)
        return NULL;
    atomic_fetch_add(&s->connections, 1);
    if (s->mode != CLOSE_AT_ONCE)
        read_request(s, fd);
    if (s->mode == ANSWER) {
        for (int i = 0; i < 4 && s->pieces[i]; i++) {
            send(fd, s->pieces[i], strlen(s->pieces[i]), MSG_NOSIGNAL);
            usleep(20000);
        }
    } else if (s->mode == STAY_SILENT) {
        char c;
        while (recv(fd, &c, 1, 0) > 0) /* until the probe gives up and closes */
            ;
    }
    close(fd);
    return NULL;
}

/* Binds 127.0.0.1:0 and starts the thread that serves one connection. */
static void server_start(server_t *s) {
    s->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(s->listen_fd >= 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(s->listen_fd, (struct sockaddr *)&addr, sizeof addr), 0);
    assert_int_equal(listen(s->listen_fd, 4), 0);
    socklen_t len = sizeof addr;
    assert_int_equal(getsockname(s->listen_fd, (struct sockaddr *)&addr, &len), 0);
    s->port = ntohs(addr.sin_port);
    assert_int_equal(pthread_create(&s->thread, NULL, serve_one, s), 0);
}

/* Joins the thread; a probe that never connected leaves it in accept(), so a
 * throwaway connection wakes it first. */
static void server_stop(server_t *s) {
    if (atomic_load(&s->connections) == 0) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s->port)};
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        connect(fd, (struct sockaddr *)&addr, sizeof addr);
        close(fd);
        s->woken = true;
    }
    pthread_join(s->thread, NULL);
    close(s->listen_fd);
}

/* Runs the probe with HTTP_PORT=port_env (unset when NULL) and the extra
 * arguments (NULL-terminated); returns its exit status. */
static int run_probe(const char *port_env, const char *arg1, const char *arg2, const char *arg3) {
    char port_var[64];
    char *envp[2] = {NULL, NULL};
    if (port_env) {
        snprintf(port_var, sizeof port_var, "HTTP_PORT=%s", port_env);
        envp[0] = port_var;
    }
    char *argv[] = {(char *)probe_path, (char *)arg1, (char *)arg2, (char *)arg3, NULL};
    pid_t pid;
    assert_int_equal(posix_spawn(&pid, probe_path, NULL, NULL, argv, envp), 0);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

/* Serves one connection and runs the probe against it; the probe must have
 * connected (so a failure is the answer's, not a bad port's). */
static int probe_server(server_t *s, const char *path) {
    server_start(s);
    char port[16];
    snprintf(port, sizeof port, "%d", s->port);
    int rc = run_probe(port, path, NULL, NULL);
    server_stop(s);
    assert_false(s->woken);
    assert_int_equal(atomic_load(&s->connections), 1);
    return rc;
}

static void ok_200_is_healthy_and_asks_actuator_health(void **state) {
    (void)state;
    server_t s = {.mode = ANSWER, .pieces = {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"}};
    assert_int_equal(probe_server(&s, NULL), 0);
    assert_int_equal(atomic_load(&s.connections), 1);
    assert_string_equal(s.request_line, "GET /actuator/health HTTP/1.0");
}

static void http_1_0_answer_counts_too(void **state) {
    (void)state;
    server_t s = {.mode = ANSWER, .pieces = {"HTTP/1.0 200 OK\r\n\r\n"}};
    assert_int_equal(probe_server(&s, NULL), 0);
}

static void status_line_in_pieces_is_read_whole(void **state) {
    (void)state;
    server_t s = {.mode = ANSWER, .pieces = {"HTT", "P/1.1 2", "00 OK\r\n", "\r\n"}};
    assert_int_equal(probe_server(&s, NULL), 0);
}

static void path_argument_is_requested(void **state) {
    (void)state;
    server_t s = {.mode = ANSWER, .pieces = {"HTTP/1.1 200 OK\r\n\r\n"}};
    assert_int_equal(probe_server(&s, "/actuator/health/liveness"), 0);
    assert_string_equal(s.request_line, "GET /actuator/health/liveness HTTP/1.0");
}

static void status_503_is_unhealthy(void **state) {
    (void)state;
    server_t s = {.mode = ANSWER,
                  .pieces = {"HTTP/1.1 503 Service Unavailable\r\n\r\n{\"status\":\"DOWN\"}"}};
    assert_int_equal(probe_server(&s, NULL), 1);
    assert_int_equal(atomic_load(&s.connections), 1);
}

static void other_2xx_and_3xx_are_unhealthy(void **state) {
    (void)state;
    server_t s204 = {.mode = ANSWER, .pieces = {"HTTP/1.1 204 No Content\r\n\r\n"}};
    assert_int_equal(probe_server(&s204, NULL), 1);
    server_t s302 = {.mode = ANSWER, .pieces = {"HTTP/1.1 302 Found\r\nLocation: /\r\n\r\n"}};
    assert_int_equal(probe_server(&s302, NULL), 1);
}

static void malformed_answers_are_unhealthy(void **state) {
    (void)state;
    const char *answers[] = {"hello\r\n", "HTTP/1.1 2000 OK\r\n\r\n", "HTTP/1.1 20 OK\r\n\r\n",
                             "HTTP/2.0 200 OK\r\n\r\n", "http/1.1 200 OK\r\n\r\n",
                             "HTTP/1.1 2x0 OK\r\n\r\n"};
    for (size_t i = 0; i < sizeof answers / sizeof *answers; i++) {
        server_t s = {.mode = ANSWER, .pieces = {answers[i]}};
        int rc = probe_server(&s, NULL);
        if (rc != 1)
            fail_msg("answer \"%s\" gave exit %d, want 1", answers[i], rc);
    }
}

static void closed_without_answer_is_unhealthy(void **state) {
    (void)state;
    server_t s = {.mode = CLOSE_AT_ONCE};
    assert_int_equal(probe_server(&s, NULL), 1);
    assert_int_equal(atomic_load(&s.connections), 1);
}

static void silent_server_times_out(void **state) {
    (void)state;
    server_t s = {.mode = STAY_SILENT};
    char port[16];
    server_start(&s);
    snprintf(port, sizeof port, "%d", s.port);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = run_probe(port, "-t", "300", NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    server_stop(&s);
    assert_int_equal(rc, 1);
    long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    assert_true(ms >= 250);
    assert_true(ms < 3000); /* the -t deadline, not the 3 s default */
}

static void no_listener_is_unhealthy(void **state) {
    (void)state;
    server_t s = {.mode = ANSWER};
    server_start(&s);
    server_stop(&s); /* the port was just ours and is now closed */
    char port[16];
    snprintf(port, sizeof port, "%d", s.port);
    assert_int_equal(run_probe(port, NULL, NULL, NULL), 1);
}

static void bad_port_or_arguments_are_unhealthy_without_connecting(void **state) {
    (void)state;
    server_t s = {.mode = ANSWER, .pieces = {"HTTP/1.1 200 OK\r\n\r\n"}};
    server_start(&s);
    char port[16];
    snprintf(port, sizeof port, "%d", s.port);
    assert_int_equal(run_probe(NULL, NULL, NULL, NULL), 1);     /* HTTP_PORT unset */
    assert_int_equal(run_probe("", NULL, NULL, NULL), 1);       /* empty */
    assert_int_equal(run_probe("80x", NULL, NULL, NULL), 1);    /* not a number */
    assert_int_equal(run_probe("0", NULL, NULL, NULL), 1);      /* out of range */
    assert_int_equal(run_probe("65536", NULL, NULL, NULL), 1);  /* out of range */
    assert_int_equal(run_probe("-1", NULL, NULL, NULL), 1);     /* negative */
    assert_int_equal(run_probe(port, "actuator/health", NULL, NULL), 1);  /* relative */
    assert_int_equal(run_probe(port, "/a b", NULL, NULL), 1);             /* blank */
    assert_int_equal(run_probe(port, "/a\r\nX: y", NULL, NULL), 1);       /* header injection */
    assert_int_equal(run_probe(port, "-t", "0", NULL), 1);                /* timeout range */
    assert_int_equal(run_probe(port, "-t", NULL, NULL), 1);               /* missing value */
    assert_int_equal(run_probe(port, "/x", "/y", NULL), 1);               /* extra argument */
    server_stop(&s);
    assert_true(s.woken); /* the probe never connected: only the wake-up did */
    assert_int_equal(atomic_load(&s.connections), 1);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s <path of deta-healthcheck>\n", argv[0]);
        return 2;
    }
    probe_path = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ok_200_is_healthy_and_asks_actuator_health),
        cmocka_unit_test(http_1_0_answer_counts_too),
        cmocka_unit_test(status_line_in_pieces_is_read_whole),
        cmocka_unit_test(path_argument_is_requested),
        cmocka_unit_test(status_503_is_unhealthy),
        cmocka_unit_test(other_2xx_and_3xx_are_unhealthy),
        cmocka_unit_test(malformed_answers_are_unhealthy),
        cmocka_unit_test(closed_without_answer_is_unhealthy),
        cmocka_unit_test(silent_server_times_out),
        cmocka_unit_test(no_listener_is_unhealthy),
        cmocka_unit_test(bad_port_or_arguments_are_unhealthy_without_connecting),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
