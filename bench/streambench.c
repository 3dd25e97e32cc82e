/*
 * streambench - query-api's live streams (docs/console.md, "Live updates"), measured
 * from outside, as a browser sees them:
 *
 *   streambench delay URL ORDER_URL ITEM N RATE PGCONNINFO
 *     opens GET URL/api/stream, places N orders of ITEM through ORDER_URL at RATE
 *     per second, reads the board until every one of them is DELIVERED (or 10 min),
 *     then asks Postgres (PGCONNINFO: query-api's database) for each received row's
 *     created_at and prints the delay from it to the row's arrival here (p50, p90,
 *     p99, max). created_at is the feed insert's clock_timestamp(), a little
 *     before its commit, on the same machine's clock.
 *
 *   streambench idle URL PID N
 *     prints query-api's (PID) resident memory, opens N idle board streams, waits 3 s,
 *     prints it again and the difference per stream, then closes them.
 *
 * Each ends with key=value lines of its figures (scripts/bench.sh keeps them).
 *
 * Streams are read over plain sockets with HTTP/1.0 (no chunking). A client of the
 * system: it links libcurl, jansson and libpq, not libdeta.
 */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_ROWS 200000
#define MAX_ORDERS 10000

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double mono_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* host and port of an http://host:port URL */
static int open_stream(const char *url, const char *path) {
    char host[256] = "";
    int port = 80;
    if (sscanf(url, "http://%255[^:/]:%d", host, &port) < 1) {
        fprintf(stderr, "streambench: %s is not http://host:port\n", url);
        exit(2);
    }
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *ai;
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    if (getaddrinfo(host, portstr, &hints, &ai) != 0) {
        fprintf(stderr, "streambench: cannot resolve %s\n", host);
        exit(2);
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        perror("streambench: connect");
        exit(2);
    }
    freeaddrinfo(ai);
    char req[512];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n",
                     path);
    if (write(fd, req, (size_t)n) != n) {
        perror("streambench: write");
        exit(2);
    }
    return fd;
}

/* ---- delay ---- */

typedef struct order_list {
    char ids[MAX_ORDERS][37];
    int delivered[MAX_ORDERS];
    int n, ndelivered;
    pthread_mutex_t lock;
} order_list_t;

static order_list_t orders = {.lock = PTHREAD_MUTEX_INITIALIZER};
static long long seqs[MAX_ROWS];
static double arrived[MAX_ROWS];
static int nrows;

typedef struct placer {
    const char *order_url, *item;
    int n;
    double rate;
} placer_t;

static size_t collect(char *p, size_t size, size_t n, void *opaque) {
    json_t **out = opaque;
    json_t *j = json_loadb(p, size * n, 0, NULL);
    if (j) {
        json_decref(*out);
        *out = j;
    }
    return size * n;
}

static void *place_orders(void *arg) {
    placer_t *pl = arg;
    CURL *c = curl_easy_init();
    char url[512];
    snprintf(url, sizeof url, "%s/api/orders", pl->order_url);
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    double start = mono_s();
    for (int i = 0; i < pl->n; i++) {
        double due = start + i / pl->rate;
        while (mono_s() < due)
            usleep(1000);
        char body[256];
        snprintf(body, sizeof body,
                 "{\"customerId\":\"bench-stream\",\"currency\":\"USD\",\"items\":[{\"itemId\":"
                 "\"%s\",\"quantity\":1,\"unitPrice\":\"2.50\"}]}", pl->item);
        json_t *resp = NULL;
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &resp);
        if (curl_easy_perform(c) == CURLE_OK && resp) {
            const char *id = json_string_value(json_object_get(resp, "orderId"));
            pthread_mutex_lock(&orders.lock);
            if (id && orders.n < MAX_ORDERS)
                snprintf(orders.ids[orders.n++], 37, "%s", id);
            pthread_mutex_unlock(&orders.lock);
        }
        json_decref(resp);
    }
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return NULL;
}

/* One frame's data line: note its seq and arrival; mark DELIVERED orders. */
static void on_frame(const char *data, double at) {
    json_t *j = json_loads(data, 0, NULL);
    if (!j)
        return;
    const char *order = json_string_value(json_object_get(j, "orderId"));
    const char *status = json_string_value(json_object_get(j, "status"));
    pthread_mutex_lock(&orders.lock);
    for (int i = 0; order && i < orders.n; i++) {
        if (strcmp(orders.ids[i], order) != 0)
            continue;
        if (nrows < MAX_ROWS) {
            seqs[nrows] = json_integer_value(json_object_get(j, "seq"));
            arrived[nrows++] = at;
        }
        if (status && strcmp(status, "DELIVERED") == 0 && !orders.delivered[i]) {
            orders.delivered[i] = 1;
            orders.ndelivered++;
        }
        break;
    }
    pthread_mutex_unlock(&orders.lock);
    json_decref(j);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int run_delay(const char *url, const char *order_url, const char *item, int n,
                     double rate, const char *conninfo) {
    int fd = open_stream(url, "/api/stream");
    sleep(2); /* the reader takes the stream; it starts at the newest row */
    placer_t pl = {order_url, item, n, rate};
    pthread_t t;
    pthread_create(&t, NULL, place_orders, &pl);
    static char buf[1 << 20];
    size_t len = 0;
    double deadline = mono_s() + 600;
    int placed_all = 0;
    while (mono_s() < deadline) {
        pthread_mutex_lock(&orders.lock);
        int done = placed_all && orders.ndelivered >= orders.n;
        pthread_mutex_unlock(&orders.lock);
        if (done)
            break;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 500) <= 0) {
            placed_all = placed_all || pthread_tryjoin_np(t, NULL) == 0;
            continue;
        }
        ssize_t k = read(fd, buf + len, sizeof buf - 1 - len);
        if (k <= 0)
            break;
        double at = now_s();
        len += (size_t)k;
        buf[len] = '\0';
        char *start = buf, *end;
        while ((end = strstr(start, "\n\n"))) {
            *end = '\0';
            char *data = strstr(start, "data: ");
            if (data && strstr(start, "event: order"))
                on_frame(data + 6, at);
            start = end + 2;
        }
        len = (size_t)(buf + len - start);
        memmove(buf, start, len);
        placed_all = placed_all || pthread_tryjoin_np(t, NULL) == 0;
    }
    if (!placed_all)
        pthread_join(t, NULL);
    close(fd);
    PGconn *pg = PQconnectdb(conninfo);
    if (PQstatus(pg) != CONNECTION_OK) {
        fprintf(stderr, "streambench: %s", PQerrorMessage(pg));
        return 1;
    }
    static double delays[MAX_ROWS];
    int nd = 0;
    for (int i = 0; i < nrows; i++) {
        char s[24];
        snprintf(s, sizeof s, "%lld", seqs[i]);
        const char *params[] = {s};
        PGresult *r = PQexecParams(pg,
                                   "SELECT extract(epoch FROM created_at) FROM stream_feed"
                                   " WHERE seq = $1::bigint", 1, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
            delays[nd++] = arrived[i] - atof(PQgetvalue(r, 0, 0));
        PQclear(r);
    }
    PQfinish(pg);
    qsort(delays, (size_t)nd, sizeof *delays, cmp_double);
    printf("orders %d placed, %d delivered on the stream; %d rows received\n", orders.n,
           orders.ndelivered, nd);
    if (nd > 0) {
        double p50 = 1000 * delays[nd / 2], p99 = 1000 * delays[(int)(nd * 0.99)];
        printf("delay feed row -> client: p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms\n",
               p50, 1000 * delays[(int)(nd * 0.9)], p99, 1000 * delays[nd - 1]);
        printf("stream_delay_samples=%d\nstream_delay_p50_ms=%.1f\nstream_delay_p99_ms=%.1f\n",
               nd, p50, p99);
    }
    return orders.ndelivered == orders.n && nd > 0 ? 0 : 1;
}

/* ---- idle ---- */

static long rss_kb(long pid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/status", pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb;
}

static int run_idle(const char *url, long pid, int n) {
    long before = rss_kb(pid);
    int *fds = calloc((size_t)n, sizeof *fds);
    for (int i = 0; i < n; i++)
        fds[i] = open_stream(url, "/api/stream");
    sleep(3);
    long after = rss_kb(pid);
    double per = n ? (double)(after - before) / n : 0.0;
    printf("query-api RSS: %ld kB with no stream of ours, %ld kB with %d idle streams: "
           "%.1f kB per stream\n", before, after, n, per);
    printf("stream_idle_streams=%d\nstream_kb_per_stream=%.1f\n", n, per);
    for (int i = 0; i < n; i++)
        close(fds[i]);
    free(fds);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 8 && strcmp(argv[1], "delay") == 0) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        int rc = run_delay(argv[2], argv[3], argv[4], atoi(argv[5]), atof(argv[6]), argv[7]);
        curl_global_cleanup();
        return rc;
    }
    if (argc == 5 && strcmp(argv[1], "idle") == 0)
        return run_idle(argv[2], atol(argv[3]), atoi(argv[4]));
    fprintf(stderr,
            "usage: streambench delay URL ORDER_URL ITEM N RATE PGCONNINFO\n"
            "       streambench idle URL PID N\n");
    return 2;
}
