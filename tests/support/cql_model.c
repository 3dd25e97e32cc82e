/*
 * cql_model.c - the tests' Cassandra (see cql_model.h): the model server started
 * as a child in its own session, listening on ports of its choosing, which it
 * writes to a file this waits for.
 */
#include "cql_model.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <setjmp.h>
#include <cmocka.h>

#ifndef DETA_TESTS_SOURCE_DIR
#error "DETA_TESTS_SOURCE_DIR must name tests/ (tests/CMakeLists.txt)"
#endif

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

bool ts_cql_real(void) {
    const char *v = getenv("TEST_CASSANDRA_CONTACT_POINTS");
    return v && *v;
}

void ts_cql_start(ts_cql_t *c, const char *log_path, const char *const *extra) {
    memset(c, 0, sizeof *c);
    if (ts_cql_real()) {
        c->real = true;
        snprintf(c->contact_points, sizeof c->contact_points, "%s",
                 getenv("TEST_CASSANDRA_CONTACT_POINTS"));
        return;
    }
    snprintf(c->dir, sizeof c->dir, "/tmp/cql-model-XXXXXX");
    if (!mkdtemp(c->dir))
        fail_msg("mkdtemp: cannot make the model server's folder");
    char ports[300], out[300];
    snprintf(ports, sizeof ports, "%s/ports", c->dir);
    snprintf(out, sizeof out, "%s/server.out", c->dir);
    if (log_path)
        snprintf(c->log, sizeof c->log, "%s", log_path);
    const char *argv[32] = {"/usr/bin/python3", DETA_TESTS_SOURCE_DIR "/support/cql_model_server.py",
                            "--port-file", ports};
    size_t n = 4;
    if (log_path) {
        argv[n++] = "--log";
        argv[n++] = c->log;
    }
    for (size_t i = 0; extra && extra[i] && n < 30; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    fflush(NULL);
    c->pid = fork();
    assert_true(c->pid >= 0);
    if (c->pid == 0) {
        setsid();
        sigset_t none; /* a service in this process blocks SIGTERM for sigtimedwait */
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        if (!freopen(out, "a", stdout) || !freopen(out, "a", stderr))
            _exit(126);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    for (int waited = 0; waited < 10000; waited += 50) {
        FILE *f = fopen(ports, "r");
        if (f) {
            int ok = fscanf(f, "%d %d", &c->port, &c->control_port) == 2;
            fclose(f);
            if (ok) {
                snprintf(c->contact_points, sizeof c->contact_points, "127.0.0.1");
                return;
            }
        }
        int status;
        if (waitpid(c->pid, &status, WNOHANG) == c->pid) {
            c->pid = 0;
            fail_msg("the model CQL server exited at once (its output: %s)", out);
        }
        sleep_ms(50);
    }
    fail_msg("the model CQL server did not listen within 10 s (its output: %s)", out);
}

/* Stops the model and removes its folder (its ports and its output). */
void ts_cql_stop(ts_cql_t *c) {
    if (c->pid > 0) {
        kill(c->pid, SIGTERM);
        waitpid(c->pid, NULL, 0);
        c->pid = 0;
    }
    if (c->dir[0]) {
        char path[300];
        snprintf(path, sizeof path, "%s/ports", c->dir);
        unlink(path);
        snprintf(path, sizeof path, "%s/server.out", c->dir);
        unlink(path);
        rmdir(c->dir);
        c->dir[0] = '\0';
    }
}

void ts_cql_setenv(const ts_cql_t *c, const char *keyspace) {
    char port[16];
    setenv("CASSANDRA_CONTACT_POINTS", c->contact_points, 1);
    if (c->port > 0) {
        snprintf(port, sizeof port, "%d", c->port);
        setenv("CASSANDRA_PORT", port, 1);
    }
    setenv("CASSANDRA_KEYSPACE", keyspace, 1);
}

void ts_cql_control(const ts_cql_t *c, const char *line, char *reply, size_t size) {
    if (c->real)
        fail_msg("no control of a real Cassandra (%s)", line);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)c->control_port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        fail_msg("the model CQL server's control port does not answer");
    }
    size_t len = strlen(line);
    if (write(fd, line, len) != (ssize_t)len || write(fd, "\n", 1) != 1) {
        close(fd);
        fail_msg("cannot write to the model's control port");
    }
    size_t got = 0;
    while (got + 1 < size) {
        ssize_t r = read(fd, reply + got, 1);
        if (r <= 0 || reply[got] == '\n')
            break;
        got++;
    }
    reply[got] = '\0';
    close(fd);
    if (strncmp(reply, "error", 5) == 0)
        fail_msg("model control \"%s\": %s", line, reply);
}

long ts_cql_count(const ts_cql_t *c, const char *table_and_filter) {
    char line[512], reply[64];
    snprintf(line, sizeof line, "count %s", table_and_filter);
    ts_cql_control(c, line, reply, sizeof reply);
    return strtol(reply, NULL, 10);
}
