/*
 * healthtime.c - how long a service takes from its launch to its first healthy
 * answer, to the millisecond.
 *
 *   healthtime --pid-file F --port-file P --since-us T [--timeout S]
 *              [--interval-ms I] [--path /actuator/health]
 *
 * scripts/stack.sh launches a part through a shell that writes the part's pid
 * file and then execs the program, so the pid file's modification time is the
 * instant the process was forked (to within the shell's few hundred
 * microseconds). This program waits for a pid file written after --since-us
 * (the caller's instant just before `stack.sh start`), reads the port that
 * stack.sh chose, then asks http://127.0.0.1:<port><path> every --interval-ms
 * (5) until the answer is 200. stack.sh start polls too, but only every 200 ms.
 * It prints key=value lines: launched_us, first_answer_ms (any HTTP answer:
 * the listener is up) and healthy_ms, both from the launch. Exit 1 when the
 * process dies or --timeout (30 s) passes first.
 */
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

typedef struct target {
    const char *pid_file;
    const char *port_file;
    const char *path;
    int64_t since_us;
    double timeout_s;
    long interval_ms;
} target_t;

static int64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static long read_number(const char *file) {
    FILE *f = fopen(file, "r");
    long v = -1;
    if (f) {
        if (fscanf(f, "%ld", &v) != 1)
            v = -1;
        fclose(f);
    }
    return v;
}

/* The launch instant: the mtime of a pid file written after since_us; 0 if none yet. */
static int64_t launched_at(const target_t *t, long *pid) {
    struct stat st;
    if (stat(t->pid_file, &st) != 0)
        return 0;
    int64_t at = (int64_t)st.st_mtim.tv_sec * 1000000 + st.st_mtim.tv_nsec / 1000;
    if (at < t->since_us)
        return 0;
    *pid = read_number(t->pid_file);
    return *pid > 0 ? at : 0;
}

static size_t ignore_body(char *ptr, size_t size, size_t nmemb, void *userdata) {
    (void)ptr;
    (void)userdata;
    return size * nmemb;
}

/* The status of one health request; 0 when nothing answered. */
static long ask(CURL *easy) {
    long status = 0;
    if (curl_easy_perform(easy) == CURLE_OK)
        curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
    return status;
}

static int fail(const char *what, const char *where) {
    fprintf(stderr, "healthtime: %s%s\n", what, where);
    return 1;
}

static bool alive(long pid) { return kill((pid_t)pid, 0) == 0 || errno == EPERM; }

static int measure(const target_t *t) {
    int64_t give_up = now_us() + (int64_t)(t->timeout_s * 1e6), launched = 0, answered = 0;
    long pid = 0;
    while (!(launched = launched_at(t, &pid))) {
        if (now_us() > give_up)
            return fail("no new pid file at ", t->pid_file);
        sleep_ms(1);
    }
    long port = read_number(t->port_file);
    if (port <= 0)
        return fail("no port in ", t->port_file);
    char url[512];
    snprintf(url, sizeof url, "http://127.0.0.1:%ld%s", port, t->path);
    CURL *easy = curl_easy_init();
    if (!easy)
        return fail("no curl", "");
    curl_easy_setopt(easy, CURLOPT_URL, url);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, ignore_body);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, 1000L);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    int rc = 1;
    while (now_us() < give_up && alive(pid)) {
        long status = ask(easy);
        int64_t at = now_us();
        if (status && !answered)
            answered = at;
        if (status == 200) {
            printf("launched_us=%lld\nfirst_answer_ms=%.1f\nhealthy_ms=%.1f\n", (long long)launched,
                   (double)(answered - launched) / 1000.0, (double)(at - launched) / 1000.0);
            rc = 0;
            break;
        }
        sleep_ms(t->interval_ms);
    }
    if (rc)
        fprintf(stderr, "healthtime: %s never answered 200 (process %s)\n", url,
                alive(pid) ? "alive" : "gone");
    curl_easy_cleanup(easy);
    return rc;
}

static int usage(void) {
    fputs("usage: healthtime --pid-file F --port-file P --since-us T [--timeout S]\n"
          "                  [--interval-ms I] [--path /actuator/health]\n",
          stderr);
    return 2;
}

int main(int argc, char **argv) {
    static const struct option longs[] = {
        {"pid-file", required_argument, NULL, 'f'},    {"port-file", required_argument, NULL, 'p'},
        {"since-us", required_argument, NULL, 's'},    {"timeout", required_argument, NULL, 't'},
        {"interval-ms", required_argument, NULL, 'i'}, {"path", required_argument, NULL, 'a'},
        {NULL, 0, NULL, 0},
    };
    target_t t = {.path = "/actuator/health", .timeout_s = 30, .interval_ms = 5};
    int c;
    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (c) {
        case 'f': t.pid_file = optarg; break;
        case 'p': t.port_file = optarg; break;
        case 's': t.since_us = strtoll(optarg, NULL, 10); break;
        case 't': t.timeout_s = strtod(optarg, NULL); break;
        case 'i': t.interval_ms = strtol(optarg, NULL, 10); break;
        case 'a': t.path = optarg; break;
        default: return usage();
        }
    }
    if (!t.pid_file || !t.port_file || t.since_us <= 0 || t.timeout_s <= 0 || t.interval_ms < 1 ||
        optind < argc)
        return usage();
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = measure(&t);
    curl_global_cleanup();
    return rc;
}
