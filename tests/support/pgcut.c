/*
 * pgcut.c - the relay that loses one COMMIT's answer (see pgcut.h).
 */
#include "pgcut.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define PGCUT_MARKER_MAX 128
#define PGCUT_ANSWER_WAIT_MS 2000

/* COMMIT as a simple query ('Q', length 11, the text and its NUL), and as the
 * unnamed statement of an extended-protocol Parse (the empty name's NUL, the
 * text and its NUL), which is how libpq sends PQexecParams("COMMIT"). */
static const char COMMIT_SIMPLE[] = "Q\0\0\0\x0b" "COMMIT"; /* + its NUL: 12 bytes */
static const char COMMIT_PARSE[] = "\0COMMIT";                  /* + its NUL: 8 bytes */

static bool has_commit(const char *buf, size_t n);

struct pgcut {
    int listener;
    char pg_socket[108]; /* sun_path's size */
    pthread_t acceptor;
    pthread_mutex_t lock;
    char marker[PGCUT_MARKER_MAX]; /* "" when not armed */
    bool marked;                   /* the marker went by: the next COMMIT is cut */
    atomic_bool done;
    atomic_bool stopping;
    atomic_int relays; /* relay threads still running (they use this struct) */
};

typedef struct pgcut_pair {
    pgcut_t *c;
    int client, server;
} pgcut_pair_t;

static bool contains(const char *hay, size_t n, const char *needle, size_t k) {
    for (size_t i = 0; k && i + k <= n; i++)
        if (memcmp(hay + i, needle, k) == 0)
            return true;
    return false;
}

static bool has_commit(const char *buf, size_t n) {
    return contains(buf, n, COMMIT_SIMPLE, sizeof COMMIT_SIMPLE) ||
           contains(buf, n, COMMIT_PARSE, sizeof COMMIT_PARSE);
}

/* Client bytes about to go to the server: true when this chunk's COMMIT is the
 * one to cut (the relay then forwards it and closes after the answer). */
static bool is_the_commit(pgcut_t *c, const char *buf, size_t n) {
    pthread_mutex_lock(&c->lock);
    bool cut = false;
    if (c->marker[0]) {
        if (c->marked && has_commit(buf, n)) {
            cut = true;
            c->marker[0] = '\0';
            c->marked = false;
        } else if (contains(buf, n, c->marker, strlen(c->marker))) {
            c->marked = true;
        }
    }
    pthread_mutex_unlock(&c->lock);
    return cut;
}

static bool send_all(int fd, const char *buf, size_t n) {
    while (n > 0) {
        ssize_t w = send(fd, buf, n, MSG_NOSIGNAL);
        if (w <= 0)
            return false;
        buf += w;
        n -= (size_t)w;
    }
    return true;
}

static void *relay(void *arg) {
    pgcut_pair_t *p = arg;
    char buf[65536];
    bool cutting = false;
    while (!atomic_load(&p->c->stopping)) {
        struct pollfd fds[2] = {{.fd = p->client, .events = POLLIN},
                                {.fd = p->server, .events = POLLIN}};
        int ready = poll(fds, 2, cutting ? PGCUT_ANSWER_WAIT_MS : 200);
        if (cutting) /* the answer came (or the wait ran out): it is dropped */
            break;
        if (ready <= 0)
            continue;
        if (fds[0].revents) {
            ssize_t n = recv(p->client, buf, sizeof buf, 0);
            if (n <= 0)
                break;
            cutting = is_the_commit(p->c, buf, (size_t)n);
            if (!send_all(p->server, buf, (size_t)n))
                break;
        }
        if (fds[1].revents && !cutting) {
            ssize_t n = recv(p->server, buf, sizeof buf, 0);
            if (n <= 0 || !send_all(p->client, buf, (size_t)n))
                break;
        }
    }
    pgcut_t *c = p->c;
    if (cutting)
        atomic_store(&c->done, true);
    close(p->client);
    close(p->server);
    free(p);
    atomic_fetch_sub(&c->relays, 1);
    return NULL;
}

static int connect_pg(const char *path) {
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

static void *accept_loop(void *arg) {
    pgcut_t *c = arg;
    while (!atomic_load(&c->stopping)) {
        struct pollfd pfd = {.fd = c->listener, .events = POLLIN};
        if (poll(&pfd, 1, 200) <= 0)
            continue;
        int client = accept(c->listener, NULL, NULL);
        if (client < 0)
            continue;
        pgcut_pair_t *p = malloc(sizeof *p);
        int server = connect_pg(c->pg_socket);
        pthread_t t;
        if (!p || server < 0) {
            close(client);
            if (server >= 0)
                close(server);
            free(p);
            continue;
        }
        *p = (pgcut_pair_t){c, client, server};
        atomic_fetch_add(&c->relays, 1);
        if (pthread_create(&t, NULL, relay, p) != 0) {
            atomic_fetch_sub(&c->relays, 1);
            close(client);
            close(server);
            free(p);
            continue;
        }
        pthread_detach(t);
    }
    return NULL;
}

pgcut_t *pgcut_start(const char *pg_socket, int *port) {
    if (strlen(pg_socket) >= sizeof((struct sockaddr_un *)0)->sun_path)
        return NULL;
    pgcut_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    snprintf(c->pg_socket, sizeof c->pg_socket, "%s", pg_socket);
    pthread_mutex_init(&c->lock, NULL);
    c->listener = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (c->listener < 0 || bind(c->listener, (struct sockaddr *)&a, sizeof a) != 0 ||
        listen(c->listener, 64) != 0 ||
        getsockname(c->listener, (struct sockaddr *)&a, &len) != 0 ||
        pthread_create(&c->acceptor, NULL, accept_loop, c) != 0) {
        if (c->listener >= 0)
            close(c->listener);
        free(c);
        return NULL;
    }
    *port = ntohs(a.sin_port);
    return c;
}

void pgcut_arm(pgcut_t *c, const char *marker) {
    pthread_mutex_lock(&c->lock);
    strncpy(c->marker, marker, sizeof c->marker - 1);
    c->marked = false;
    atomic_store(&c->done, false);
    pthread_mutex_unlock(&c->lock);
}

bool pgcut_done(pgcut_t *c) { return atomic_load(&c->done); }

void pgcut_stop(pgcut_t *c) {
    if (!c)
        return;
    atomic_store(&c->stopping, true);
    pthread_join(c->acceptor, NULL);
    close(c->listener);
    while (atomic_load(&c->relays) > 0) /* each sees stopping within one poll */
        usleep(10000);
    pthread_mutex_destroy(&c->lock);
    free(c);
}
