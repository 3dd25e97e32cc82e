/*
 * loadgen.c - one step of the benchmark: offer orders at a fixed rate for a
 * fixed time, follow each to the end of its saga, say whether the system kept
 * up.
 *
 *   loadgen --rate R --duration S [--drain S] [--connections C] [--poll-ms P]
 *           [--poll-budget N] [--window-ms W] [--prefix ID] [--csv FILE]
 *           [--p99-bound-ms B] [--max-outstanding N] [--timeout-ms T]
 *           [--order-url URL] [--query-url URL] [--label TEXT]
 *
 * The sender (sender.c) and the poller (poller.c) do the work; this file reads
 * the options, lays out the schedule, draws a progress line on stderr, then
 * writes one CSV row per order and a summary of key=value lines on stdout
 * (scripts/bench.sh reads it). All instants are CLOCK_REALTIME microseconds,
 * so that the CSV can be compared with instants stored by the services.
 *
 * The verdict. A step is sustained when every order offered was sent and
 * accepted (201), every accepted order reached DELIVERY_ASSIGNED (or a later
 * happy state) within --drain seconds of the last intended send, none ended in
 * failure, and the saga's p99 is at most --p99-bound-ms. Anything else is a
 * breakdown, and the summary's `reason` says which rule broke first.
 *
 * The saga distribution counts an order that never ended with the latency it
 * had reached at the deadline, so a broken step's saga percentiles are lower
 * bounds (the summary's `incomplete` says how many such orders there are);
 * intake latency counts accepted orders only (refused ones are in `refused`).
 */
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "loadgen.h"

/* The poller's default budget: about AUTO_POLLS_PER_ORDER list requests per
 * order offered, within [AUTO_BUDGET_MIN, AUTO_BUDGET_MAX] per second, so that
 * measuring a slow system at a low rate does not double its work. */
#define AUTO_POLLS_PER_ORDER 5.0
#define AUTO_BUDGET_MIN 20.0
#define AUTO_BUDGET_MAX 100.0

typedef struct options {
    lg_run_t run;
    double window_ms;
    double p99_bound_ms;
    const char *csv;
    const char *label;
} options_t;

static const char USAGE[] =
    "usage: loadgen --rate R --duration S [--drain S] [--connections C] [--poll-ms P]\n"
    "               [--poll-budget N] [--window-ms W] [--prefix ID] [--csv FILE]\n"
    "               [--p99-bound-ms B] [--max-outstanding N] [--timeout-ms T]\n"
    "               [--order-url URL] [--query-url URL] [--label TEXT]\n"
    "  offers R orders/s for S seconds (open loop), follows each order to\n"
    "  DELIVERY_ASSIGNED in the query-api, writes a CSV per order and a summary.\n"
    "  URLs default to $ORDER_SERVICE_URL and $QUERY_API_URL. --poll-budget (list\n"
    "  requests per second) defaults to 5 per order offered, within 20..100.\n";

int64_t lg_now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void lg_sleep_us(int64_t us) {
    struct timespec ts = {(time_t)(us / 1000000), (long)(us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

void lg_customer_id(const lg_run_t *r, size_t i, char *buf, size_t size) {
    snprintf(buf, size, "%s-%zu", r->prefix, i / r->per_window);
}

/* ---- options ---- */

static bool parse_double(const char *s, double min, double max, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= min && v <= max))
        return false;
    *out = v;
    return true;
}

static bool prefix_valid(const char *p) {
    size_t n = strlen(p);
    if (n == 0 || n > 48)
        return false;
    for (; *p; p++)
        if (!(*p == '-' || *p == '_' || *p == '.' || (*p >= '0' && *p <= '9') ||
              (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')))
            return false;
    return true;
}

static void set_defaults(options_t *o) {
    static char prefix[64];
    snprintf(prefix, sizeof prefix, "bench-%ld", (long)getpid());
    memset(o, 0, sizeof *o);
    o->run.order_url = getenv("ORDER_SERVICE_URL");
    o->run.query_url = getenv("QUERY_API_URL");
    o->run.prefix = prefix;
    o->run.duration_s = 10;
    o->run.drain_s = 10;
    o->run.connections = 8;
    o->run.poll_ms = 20;
    o->run.poll_budget = 0; /* automatic: see lay_out */
    o->run.max_outstanding = 2000;
    o->run.timeout_ms = 10000;
    o->window_ms = 100;
    o->p99_bound_ms = 1000;
    o->label = "";
}

static bool parse_int(const char *s, long min, long max, int *out) {
    double v;
    if (!parse_double(s, (double)min, (double)max, &v) || v != floor(v))
        return false;
    *out = (int)v;
    return true;
}

/* One option's value into o; false when it is malformed. */
static bool apply_option(options_t *o, int c, const char *v) {
    lg_run_t *r = &o->run;
    int timeout_ms = 0;
    switch (c) {
    case 'r':
        return parse_double(v, 0.1, 100000, &r->rate);
    case 'd':
        return parse_double(v, 0.1, 3600, &r->duration_s);
    case 'D':
        return parse_double(v, 0, 3600, &r->drain_s);
    case 'w':
        return parse_double(v, 1, 10000, &o->window_ms);
    case 'B':
        return parse_double(v, 1, 100000, &r->poll_budget);
    case 'b':
        return parse_double(v, 1, 3600000, &o->p99_bound_ms);
    case 'c':
        return parse_int(v, 1, 1024, &r->connections);
    case 'p':
        return parse_int(v, 1, 10000, &r->poll_ms);
    case 'm':
        return parse_int(v, 1, 1000000, &r->max_outstanding);
    case 't':
        if (!parse_int(v, 100, 600000, &timeout_ms))
            return false;
        r->timeout_ms = timeout_ms;
        return true;
    case 'P':
        r->prefix = v;
        return prefix_valid(v);
    case 'o':
        r->order_url = v;
        return true;
    case 'q':
        r->query_url = v;
        return true;
    case 'C':
        o->csv = v;
        return true;
    case 'L':
        o->label = v;
        return true;
    default:
        return false;
    }
}

static const struct option LONG_OPTIONS[] = {
    {"rate", required_argument, NULL, 'r'},
    {"duration", required_argument, NULL, 'd'},
    {"drain", required_argument, NULL, 'D'},
    {"connections", required_argument, NULL, 'c'},
    {"poll-ms", required_argument, NULL, 'p'},
    {"window-ms", required_argument, NULL, 'w'},
    {"poll-budget", required_argument, NULL, 'B'},
    {"prefix", required_argument, NULL, 'P'},
    {"csv", required_argument, NULL, 'C'},
    {"p99-bound-ms", required_argument, NULL, 'b'},
    {"max-outstanding", required_argument, NULL, 'm'},
    {"timeout-ms", required_argument, NULL, 't'},
    {"order-url", required_argument, NULL, 'o'},
    {"query-url", required_argument, NULL, 'q'},
    {"label", required_argument, NULL, 'L'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static const char *option_name(int c) {
    for (const struct option *l = LONG_OPTIONS; l->name; l++)
        if (l->val == c)
            return l->name;
    return "?";
}

/* 0: run; 1: --help was shown; 2: bad usage. */
static int parse_options(int argc, char **argv, options_t *o) {
    set_defaults(o);
    int c;
    while ((c = getopt_long(argc, argv, "", LONG_OPTIONS, NULL)) != -1) {
        if (c == 'h') {
            fputs(USAGE, stdout);
            return 1;
        }
        if (c == '?') {
            fputs(USAGE, stderr);
            return 2;
        }
        if (!apply_option(o, c, optarg)) {
            fprintf(stderr, "loadgen: bad value for --%s: '%s'\n", option_name(c), optarg);
            return 2;
        }
    }
    if (optind < argc || o->run.rate <= 0 || !o->run.order_url || !o->run.query_url) {
        fprintf(stderr, "loadgen: --rate and both URLs are required\n");
        fputs(USAGE, stderr);
        return 2;
    }
    return 0;
}

/* ---- the schedule ---- */

static bool lay_out(options_t *o) {
    lg_run_t *r = &o->run;
    r->n = (size_t)floor(r->rate * r->duration_s);
    if (r->n == 0)
        r->n = 1;
    double per = floor(r->rate * o->window_ms / 1000.0);
    r->per_window = per < 1 ? 1 : per > LG_WINDOW_MAX ? LG_WINDOW_MAX : (size_t)per;
    if (r->poll_budget <= 0)
        r->poll_budget = fmin(AUTO_BUDGET_MAX, fmax(AUTO_BUDGET_MIN, AUTO_POLLS_PER_ORDER * r->rate));
    r->orders = calloc(r->n, sizeof *r->orders);
    if (!r->orders)
        return false;
    r->start_us = lg_now_us() + 50000; /* the threads are up by then */
    for (size_t i = 0; i < r->n; i++)
        r->orders[i].intended_us = r->start_us + (int64_t)llround((double)i * 1e6 / r->rate);
    r->deadline_us = r->start_us + (int64_t)llround((r->duration_s + r->drain_s) * 1e6);
    return true;
}

/* ---- progress ---- */

static void draw_progress(const options_t *o, bool final) {
    const lg_run_t *r = &o->run;
    static int64_t last_line_us;
    bool tty = isatty(STDERR_FILENO);
    int64_t now = lg_now_us();
    if (!tty && !final && now - last_line_us < 5000000)
        return;
    last_line_us = now;
    double t = (double)(now - r->start_us) / 1e6;
    size_t sent = atomic_load(&r->sent), acc = atomic_load(&r->accepted),
           ref = atomic_load(&r->refused), drop = atomic_load(&r->dropped),
           ok = atomic_load(&r->ended_ok), bad = atomic_load(&r->ended_failed);
    const char *phase = t < r->duration_s ? "sending" : "draining";
    fprintf(stderr,
            "%s%s %7.1f/s  %-8s %5.1f/%.0fs  sent %zu/%zu  201 %zu  errors %zu  "
            "sagas done %zu  failed %zu  in flight %zu%s",
            tty ? "\r\033[K" : "", o->label, r->rate, phase, t < 0 ? 0 : t, r->duration_s, sent,
            r->n, acc, ref + drop, ok, bad, sent - acc - ref, tty && !final ? "" : "\n");
    fflush(stderr);
}

static void watch(const options_t *o) {
    while (!atomic_load(&o->run.sender_done) || !atomic_load(&o->run.poller_done)) {
        draw_progress(o, false);
        lg_sleep_us(250000);
    }
    draw_progress(o, true);
}

/* ---- results ---- */

static bool write_csv(const options_t *o) {
    FILE *f = fopen(o->csv, "w");
    if (!f) {
        fprintf(stderr, "loadgen: cannot write %s: %s\n", o->csv, strerror(errno));
        return false;
    }
    fprintf(f, "seq,intended_us,sent_us,answered_us,http_status,order_id,saga_us,end_status\n");
    for (size_t i = 0; i < o->run.n; i++) {
        const lg_order_t *x = &o->run.orders[i];
        fprintf(f, "%zu,%lld,%lld,%lld,%d,%s,", i, (long long)x->intended_us,
                (long long)x->sent_us, (long long)x->answered_us, x->http_status, x->order_id);
        if (x->saga_us)
            fprintf(f, "%lld", (long long)x->saga_us);
        fprintf(f, ",%s\n", x->end_status);
    }
    return fclose(f) == 0;
}

typedef struct outcome {
    lg_dist_t intake, saga;
    size_t incomplete;
    double late_max_ms;    /* worst sent - intended: the generator's own lag */
    double completed_rate; /* sagas ended per second, between the first end and the last */
} outcome_t;

static void note_lateness(outcome_t *m, const lg_order_t *o) {
    double late_ms = (double)(o->sent_us - o->intended_us) / 1000.0;
    if (o->sent_us && late_ms > m->late_max_ms)
        m->late_max_ms = late_ms;
}

static outcome_t measure(const lg_run_t *r) {
    outcome_t m = {0};
    double *intake = calloc(r->n, sizeof *intake), *saga = calloc(r->n, sizeof *saga);
    size_t ni = 0, ns = 0, ended = 0;
    int64_t first_end = INT64_MAX, last_end = 0;
    for (size_t i = 0; intake && saga && i < r->n; i++) {
        const lg_order_t *o = &r->orders[i];
        note_lateness(&m, o);
        if (atomic_load(&o->state) != ORDER_ACCEPTED)
            continue;
        intake[ni++] = (double)(o->answered_us - o->intended_us) / 1000.0;
        if (o->end == END_NONE) { /* censored: it had waited this long at the deadline */
            m.incomplete++;
            saga[ns++] = (double)(r->deadline_us - o->intended_us) / 1000.0;
        } else if (o->end == END_ASSIGNED) {
            saga[ns++] = (double)(o->saga_us - o->intended_us) / 1000.0;
            ended++;
            first_end = o->saga_us < first_end ? o->saga_us : first_end;
            last_end = o->saga_us > last_end ? o->saga_us : last_end;
        }
    }
    m.intake = lg_dist_of(intake, ni);
    m.saga = lg_dist_of(saga, ns);
    if (ended > 1 && last_end > first_end)
        m.completed_rate = (double)(ended - 1) * 1e6 / (double)(last_end - first_end);
    free(intake);
    free(saga);
    return m;
}

/* The first rule of the verdict that the step broke, or NULL when sustained. */
static const char *breakdown(const options_t *o, const outcome_t *m, char *buf, size_t size) {
    const lg_run_t *r = &o->run;
    size_t dropped = atomic_load(&r->dropped), refused = atomic_load(&r->refused),
           failed = atomic_load(&r->ended_failed);
    if (dropped)
        snprintf(buf, size, "%zu orders not sent (generator queue of %d full)", dropped,
                 r->max_outstanding);
    else if (refused)
        snprintf(buf, size, "%zu orders refused or unanswered", refused);
    else if (failed)
        snprintf(buf, size, "%zu orders ended in failure", failed);
    else if (m->incomplete)
        snprintf(buf, size, "%zu orders not at DELIVERY_ASSIGNED %.0f s after the last send",
                 m->incomplete, r->drain_s);
    else if (m->saga.p99 > o->p99_bound_ms)
        snprintf(buf, size, "saga p99 %.0f ms above the %.0f ms bound", m->saga.p99,
                 o->p99_bound_ms);
    else
        return NULL;
    return buf;
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void print_dist(const char *name, const lg_dist_t *d) {
    printf("%s_n=%zu\n%s_p50_ms=%.1f\n%s_p95_ms=%.1f\n%s_p99_ms=%.1f\n%s_max_ms=%.1f\n"
           "%s_mean_ms=%.1f\n",
           name, d->n, name, d->p50, name, d->p95, name, d->p99, name, d->max, name, d->mean);
}

static void print_summary(const options_t *o, const outcome_t *m) {
    const lg_run_t *r = &o->run;
    char why[160];
    const char *reason = breakdown(o, m, why, sizeof why);
    size_t polls = atomic_load(&r->poll_requests);
    printf("rate=%.1f\nduration_s=%.1f\nconnections=%d\nprefix=%s\norders=%zu\n", r->rate,
           r->duration_s, r->connections, r->prefix, r->n);
    printf("sent=%zu\naccepted=%zu\nrefused=%zu\ndropped=%zu\nended_ok=%zu\nended_failed=%zu\n"
           "incomplete=%zu\n",
           atomic_load(&r->sent), atomic_load(&r->accepted), atomic_load(&r->refused),
           atomic_load(&r->dropped), atomic_load(&r->ended_ok), atomic_load(&r->ended_failed),
           m->incomplete);
    print_dist("intake", &m->intake);
    print_dist("saga", &m->saga);
    printf("completed_per_s=%.1f\nsend_late_max_ms=%.1f\nmax_in_flight=%zu\n", m->completed_rate,
           m->late_max_ms, atomic_load(&r->max_in_flight));
    printf("per_window=%zu\npoll_ms=%d\npoll_budget=%.0f\npoll_requests=%zu\npoll_errors=%zu\npoll_mean_ms=%.2f\n",
           r->per_window, r->poll_ms, r->poll_budget, polls, atomic_load(&r->poll_errors),
           polls ? (double)atomic_load(&r->poll_us_total) / 1000.0 / (double)polls : 0.0);
    printf("loadgen_cpu_s=%.2f\nsustained=%d\nreason=%s\n", cpu_seconds(), reason == NULL,
           reason ? reason : "");
}

int main(int argc, char **argv) {
    options_t o;
    int rc = parse_options(argc, argv, &o);
    if (rc)
        return rc == 1 ? 0 : rc;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || !lay_out(&o)) {
        fprintf(stderr, "loadgen: out of memory or no curl\n");
        return 1;
    }
    pthread_t sender, poller;
    if (pthread_create(&sender, NULL, lg_sender_main, &o.run) != 0 ||
        pthread_create(&poller, NULL, lg_poller_main, &o.run) != 0) {
        fprintf(stderr, "loadgen: cannot start threads\n");
        return 1;
    }
    watch(&o);
    pthread_join(sender, NULL);
    pthread_join(poller, NULL);
    outcome_t m = measure(&o.run);
    print_summary(&o, &m);
    bool ok = !o.csv || write_csv(&o);
    free(o.run.orders);
    curl_global_cleanup();
    return ok ? 0 : 1;
}
