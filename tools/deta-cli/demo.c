/*
 * demo.c - `deta-cli demo`: a few hundred orders through the whole saga, then a
 * report that says whether the system kept its promises.
 *
 * The run has five phases, each a plain function:
 *   1. stock before: GET /api/inventory;
 *   2. intake: the seeded mix (mix.c) is POSTed by --concurrency threads, each
 *      with its own keep-alive HTTP handle, taking the next order from a shared
 *      counter, each under an Idempotency-Key of its own and retried by the
 *      clients' library (lib/client, deta_order_create); its round trip,
 *      retries included, is its intake latency; the orders to cancel right
 *      after create are cancelled then (deta_order_cancel);
 *   3. settling: rounds of GET /api/orders/{id} on the query-api for the orders
 *      not finished yet, until each is in an end state or --wait seconds pass;
 *      an order to cancel after payment or after assignment is cancelled in
 *      the round that first sees it there (or past it: the answer is then a
 *      refusal); a cancelled order that was paid is finished once its
 *      refundedAmount shows;
 *   4. timelines: for delivered orders, GET .../events gives delivery.assigned
 *      and delivery.delivered, the order-to-driver and order-to-door latencies;
 *   5. stock after: polled until nothing the demo touched is still held (the
 *      release of a declined order's stock may follow its PAYMENT_FAILED status).
 * Then report.c prints the numbers and the verdict.
 *
 * Threads never share an order: a pass hands out indices through an atomic
 * counter, a worker alone writes the order it took, and the main thread reads
 * orders only after joining the workers; while they run it reads only the
 * atomic counters, to draw the progress line.
 */
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "deta/states.h"
#include "deta/timestamp.h"
#include "deta/topics.h"

#define POLL_ROUND_MS 500
#define STOCK_SETTLE_SECONDS 30
#define MAX_THREADS 64

static const char DEMO_USAGE[] =
    "usage: deta-cli demo [--orders N] [--concurrency C] [--seed S] [--wait SECONDS]\n"
    "                     [--cancels K] [--order-url URL] [--query-url URL]\n"
    "                     [--inventory-url URL]\n"
    "  places N orders (default 300) with C threads (8), cancels K of them (default N/20)\n"
    "  right after create, after payment or after assignment, waits up to --wait seconds\n"
    "  (180) for every accepted order to reach an end state (CANCELLED is one), then\n"
    "  reports; exit 0 only when every order ended and the numbers add up\n";

static double monotonic(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- a pass of work over some orders, on a pool of threads ------------------ */

typedef bool (*order_work_fn)(demo_run_t *run, deta_client_t *h, demo_order_t *o);

typedef struct pass {
    demo_run_t *run;
    const size_t *indices;
    size_t n;
    order_work_fn work;
    atomic_size_t next, finished, succeeded;
} pass_t;

static void *pass_worker(void *arg) {
    pass_t *p = arg;
    deta_client_t *h = cli_client_new();
    size_t i;
    while ((i = atomic_fetch_add(&p->next, 1)) < p->n) {
        demo_order_t *o = &p->run->orders[p->indices[i]];
        bool ok = h && p->work(p->run, h, o);
        if (!h)
            snprintf(o->error, sizeof o->error, "out of memory");
        if (ok)
            atomic_fetch_add(&p->succeeded, 1);
        atomic_fetch_add(&p->finished, 1);
    }
    deta_client_free(h);
    return NULL;
}

/* Draws the progress of a running pass; called every 100 ms by run_pass. */
typedef void (*pass_progress_fn)(const pass_t *p, double started);

static void run_pass(demo_run_t *run, const size_t *indices, size_t n, order_work_fn work,
                     pass_progress_fn progress) {
    pass_t p = {.run = run, .indices = indices, .n = n, .work = work};
    atomic_init(&p.next, 0);
    atomic_init(&p.finished, 0);
    atomic_init(&p.succeeded, 0);
    pthread_t threads[MAX_THREADS];
    int nthreads = 0;
    double started = monotonic();
    for (int t = 0; t < run->concurrency && (size_t)t < n; t++)
        if (pthread_create(&threads[nthreads], NULL, pass_worker, &p) == 0)
            nthreads++;
    if (nthreads == 0 && n > 0)
        pass_worker(&p); /* no thread could start: do the work here */
    while (atomic_load(&p.finished) < n) {
        if (progress)
            progress(&p, started);
        sleep_ms(100);
    }
    for (int t = 0; t < nthreads; t++)
        pthread_join(threads[t], NULL);
    if (progress)
        progress(&p, started);
}

/* ---- intake ----------------------------------------------------------------- */

/* ---- cancels ----------------------------------------------------------------- */

demo_cancel_at_t demo_cancel_moment(size_t index, size_t norders, size_t ncancels) {
    if (ncancels == 0 || norders == 0)
        return CANCEL_NONE;
    if (ncancels > norders)
        ncancels = norders;
    /* the k-th cancel falls on index k * norders / ncancels (+ a third of the
     * step, so that it is not always the mix's first kind of order) */
    size_t step = norders / ncancels, shift = step / 3;
    if (index < shift || (index - shift) % step != 0)
        return CANCEL_NONE;
    size_t k = (index - shift) / step;
    if (k >= ncancels)
        return CANCEL_NONE;
    return (demo_cancel_at_t)(CANCEL_AT_CREATED + k % (CANCEL_MOMENTS - 1));
}

const char *demo_cancel_moment_name(demo_cancel_at_t at) {
    switch (at) {
    case CANCEL_AT_CREATED: return "right after create";
    case CANCEL_AT_PAID: return "after payment";
    case CANCEL_AT_ASSIGNED: return "after assignment";
    default: return "never";
    }
}

/* Whether the order, last seen in status, is due its cancel now. */
static bool cancel_due(const demo_order_t *o, const char *status) {
    if (o->cancel_at == CANCEL_NONE || o->cancel_sent || !o->id[0])
        return false;
    if (o->cancel_at == CANCEL_AT_CREATED || deta_order_is_end_state(status))
        return true; /* an order that ended first is asked anyway: the answer is 409 */
    return deta_order_reached(status, o->cancel_at == CANCEL_AT_PAID
                                          ? DETA_STATE_PAYMENT_AUTHORIZED
                                          : DETA_STATE_DELIVERY_ASSIGNED);
}

static void send_cancel(demo_run_t *run, deta_client_t *h, demo_order_t *o, const char *seen) {
    deta_retry_policy_t policy = cli_retry_policy();
    deta_call_result_t r;
    char reason[64];
    snprintf(reason, sizeof reason, "demo: %s", demo_cancel_moment_name(o->cancel_at));
    o->cancel_outcome = deta_order_cancel(&policy, h, run->ctx->order_url, o->id, reason, &r);
    o->cancel_sent = true;
    snprintf(o->cancel_seen, sizeof o->cancel_seen, "%s", seen && *seen ? seen : "CREATED");
    deta_call_result_clear(&r);
}

/* ---- intake ----------------------------------------------------------------- */

/* Places the order under its own key with the clients' retrying call: an
 * answer lost to a timeout is asked again, and order-service answers the
 * repeat with the order it made (a replay), never a second one. */
static bool place_one(demo_run_t *run, deta_client_t *h, demo_order_t *o) {
    char *body = mix_order_body(&o->plan);
    bool accepted = false;
    if (!body || !deta_idempotency_key_new(o->key)) {
        snprintf(o->error, sizeof o->error, "out of memory or no random source");
        free(body);
        return false;
    }
    deta_retry_policy_t policy = cli_retry_policy();
    deta_call_result_t r;
    deta_outcome_t outcome = deta_order_create(&policy, h, run->ctx->order_url, body, o->key, &r);
    o->http_status = r.status;
    o->attempts = r.attempts;
    char id[sizeof o->id];
    const char *created = json_string_value(json_object_get(r.json, "createdAt"));
    if ((outcome == DETA_OUTCOME_CREATED || outcome == DETA_OUTCOME_REPLAYED) &&
        deta_order_id_of(r.json, id, sizeof id) && created &&
        (o->created_ms = deta_timestamp_ms(created)) >= 0) {
        memcpy(o->id, id, sizeof id);
        o->intake_ms = r.millis;
        o->replayed = outcome == DETA_OUTCOME_REPLAYED;
        accepted = true;
    } else {
        snprintf(o->error, sizeof o->error, "%s after %d attempt(s): %.100s",
                 deta_outcome_name(outcome), r.attempts, r.error);
    }
    deta_call_result_clear(&r);
    free(body);
    if (accepted && o->cancel_at == CANCEL_AT_CREATED)
        send_cancel(run, h, o, DETA_STATE_CREATED);
    return accepted;
}

static void intake_progress(const pass_t *p, double started) {
    size_t done = atomic_load(&p->finished), ok = atomic_load(&p->succeeded);
    double secs = monotonic() - started;
    char extra[128];
    snprintf(extra, sizeof extra, "accepted %zu  failed %zu  %.0f orders/s", ok, done - ok,
             secs > 0 ? (double)done / secs : 0.0);
    progress_draw("placing orders", done, p->n, extra);
}

static void place_orders(demo_run_t *run) {
    size_t *all = malloc(run->norders * sizeof *all);
    if (!all)
        return;
    for (size_t i = 0; i < run->norders; i++)
        all[i] = i;
    double t0 = monotonic();
    run_pass(run, all, run->norders, place_one, intake_progress);
    run->intake_seconds = monotonic() - t0;
    progress_end();
    free(all);
}

/* ---- settling: every accepted order to an end state -------------------------- */

/* The money field of the view, or "" when null. */
static void money_field(const json_t *view, const char *key, char *out, size_t size) {
    const char *v = json_string_value(json_object_get(view, key));
    snprintf(out, size, "%s", v ? v : "");
}

/* One read of the order; sends its cancel when due. Done: an end state, and
 * for a cancelled order that was paid, its refund shown too (payment.refunded
 * follows delivery.cancelled, which set CANCELLED). */
static bool poll_one(demo_run_t *run, deta_client_t *h, demo_order_t *o) {
    deta_client_resp_t r;
    if (deta_order_read(h, run->ctx->query_url, o->id, &r, o->error, sizeof o->error) == 0) {
        const char *status = json_string_value(json_object_get(r.json, "status"));
        if (r.status == 200 && status) {
            snprintf(o->status, sizeof o->status, "%s", status);
            money_field(r.json, "refundedAmount", o->refunded, sizeof o->refunded);
            money_field(r.json, "totalAmount", o->total, sizeof o->total);
            o->paid_seen = json_is_string(json_object_get(r.json, "paymentId"));
            o->error[0] = '\0';
        } else if (r.status != 404) {
            deta_client_resp_describe(&r, o->error, sizeof o->error);
        }
        deta_client_resp_clear(&r);
    }
    if (cancel_due(o, o->status)) {
        send_cancel(run, h, o, o->status);
        return false; /* read again next round: the cancel may change where it ends */
    }
    bool cancelled = strcmp(o->status, DETA_STATE_CANCELLED) == 0;
    o->done = deta_order_is_end_state(o->status) &&
              (!cancelled || !o->paid_seen || o->refunded[0]) &&
              (o->cancel_at == CANCEL_NONE || o->cancel_sent);
    return o->done;
}

static size_t done_before_pass; /* settled orders when the current pass began */
static size_t accepted_total;

static void settle_progress(const pass_t *p, double started) {
    (void)started;
    char extra[64];
    size_t done = done_before_pass + atomic_load(&p->succeeded);
    snprintf(extra, sizeof extra, "in an end state");
    progress_draw("waiting for end states", done, accepted_total, extra);
}

/* Indices of accepted orders not finished yet; returns how many. */
static size_t pending_orders(const demo_run_t *run, size_t *out, size_t *done) {
    size_t n = 0;
    *done = 0;
    for (size_t i = 0; i < run->norders; i++) {
        const demo_order_t *o = &run->orders[i];
        if (!o->id[0])
            continue;
        if (o->done)
            (*done)++;
        else
            out[n++] = i;
    }
    return n;
}

static void wait_for_end_states(demo_run_t *run, double intake_started) {
    size_t *pending = malloc((run->norders ? run->norders : 1) * sizeof *pending);
    if (!pending)
        return;
    double deadline = monotonic() + run->wait_seconds;
    size_t n, done;
    while ((n = pending_orders(run, pending, &done)) > 0) {
        if (monotonic() >= deadline) {
            run->timed_out = true;
            break;
        }
        done_before_pass = done;
        accepted_total = done + n;
        run_pass(run, pending, n, poll_one, settle_progress);
        size_t still = pending_orders(run, pending, &done);
        if (still < n)
            run->settle_seconds = monotonic() - intake_started;
        if (still > 0)
            sleep_ms(POLL_ROUND_MS);
    }
    progress_end();
    free(pending);
}

/* ---- timelines ------------------------------------------------------------------ */

static int64_t event_instant(const json_t *timeline, const char *type) {
    size_t i;
    json_t *ev;
    int64_t ms;
    json_array_foreach(cli_timeline_events(timeline), i, ev) {
        const char *t = json_string_value(json_object_get(ev, "eventType"));
        const char *at = json_string_value(json_object_get(ev, "occurredAt"));
        if (t && at && !strcmp(t, type) && (ms = deta_timestamp_ms(at)) >= 0)
            return ms;
    }
    return -1;
}

static bool read_timeline(demo_run_t *run, deta_client_t *h, demo_order_t *o) {
    char path[128];
    snprintf(path, sizeof path, "/api/orders/%s/events", o->id);
    char *url = deta_client_url(run->ctx->query_url, path);
    deta_client_resp_t r;
    bool ok = false;
    if (url && deta_client_json(h, "GET", url, NULL, &r, o->error, sizeof o->error) == 0) {
        if (r.status == 200) {
            o->assigned_ms = event_instant(r.json, DETA_EVT_DELIVERY_ASSIGNED);
            o->delivered_ms = event_instant(r.json, DETA_EVT_DELIVERY_DELIVERED);
            ok = o->assigned_ms >= 0;
        }
        deta_client_resp_clear(&r);
    }
    free(url);
    return ok;
}

static void read_timelines(demo_run_t *run) {
    size_t *idx = malloc((run->norders ? run->norders : 1) * sizeof *idx), n = 0;
    if (!idx)
        return;
    for (size_t i = 0; i < run->norders; i++)
        if (run->orders[i].done && !strcmp(run->orders[i].status, DETA_STATE_DELIVERED))
            idx[n++] = i;
    run_pass(run, idx, n, read_timeline, NULL);
    free(idx);
}

/* ---- stock ---------------------------------------------------------------------- */

static bool touched(const demo_run_t *run, const char *item_id) {
    for (size_t i = 0; i < run->norders; i++) {
        const demo_order_t *o = &run->orders[i];
        for (int l = 0; o->id[0] && l < o->plan.nlines; l++)
            if (!strcmp(o->plan.lines[l].item_id, item_id))
                return true;
    }
    return false;
}

/* True when no item the demo touched still has units held. */
static bool nothing_held(const demo_run_t *run, const stock_t *s) {
    for (size_t i = 0; i < s->n; i++)
        if (s->rows[i].held != 0 && touched(run, s->rows[i].item_id))
            return false;
    return true;
}

/* Reads the stock until nothing is held (or STOCK_SETTLE_SECONDS pass). */
static bool read_stock_after(demo_run_t *run, char *errstr, size_t errsize) {
    deta_client_t *h = cli_client_new();
    double deadline = monotonic() + STOCK_SETTLE_SECONDS;
    bool ok = false;
    while (h) {
        stock_clear(&run->after);
        ok = stock_fetch(h, run->ctx->inventory_url, &run->after, errstr, errsize);
        if (!ok || nothing_held(run, &run->after) || monotonic() >= deadline)
            break;
        sleep_ms(POLL_ROUND_MS);
    }
    deta_client_free(h);
    return ok;
}

/* ---- the command ---------------------------------------------------------------- */

static int parse_demo_options(demo_run_t *run, cli_ctx_t *ctx, int argc, char **argv) {
    static const struct option opts[] = {{"orders", 1, NULL, 'n'}, {"concurrency", 1, NULL, 'c'},
                                         {"seed", 1, NULL, 's'},   {"wait", 1, NULL, 'w'},
                                         {"cancels", 1, NULL, 'x'}, CLI_URL_OPTIONS,
                                         {NULL, 0, NULL, 0}};
    long cancels = -1;
    long v;
    int opt;
    optind = 0;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        const char *bad = NULL;
        if (opt == 'n')
            cli_parse_long(optarg, 1, 100000, &v) ? (void)(run->norders = (size_t)v)
                                                  : (void)(bad = "--orders must be 1..100000");
        else if (opt == 'c')
            cli_parse_long(optarg, 1, MAX_THREADS, &v)
                ? (void)(run->concurrency = (int)v)
                : (void)(bad = "--concurrency must be 1..64");
        else if (opt == 's')
            cli_parse_long(optarg, 0, 2147483647L, &v) ? (void)(run->seed = (uint64_t)v)
                                                       : (void)(bad = "--seed must be a number");
        else if (opt == 'x')
            cli_parse_long(optarg, 0, 100000, &v) ? (void)(cancels = v)
                                                  : (void)(bad = "--cancels must be 0..100000");
        else if (opt == 'w')
            cli_parse_long(optarg, 1, 86400, &v) ? (void)(run->wait_seconds = (int)v)
                                                 : (void)(bad = "--wait must be 1..86400 seconds");
        else if (opt == CLI_OPT_HELP)
            return fputs(DEMO_USAGE, stdout), -1;
        else if (!cli_take_url_option(ctx, opt, optarg))
            bad = "unknown option or missing value: ";
        if (bad) {
            cli_fail(CLI_USAGE, "%s%s", bad, opt == '?' ? argv[optind - 1] : "");
            fputs(DEMO_USAGE, stderr);
            return CLI_USAGE;
        }
    }
    /* default: about one order in twenty */
    run->ncancels = cancels >= 0 ? (size_t)cancels : run->norders / 20;
    if (run->ncancels > run->norders)
        run->ncancels = run->norders;
    if (optind < argc) {
        cli_fail(CLI_USAGE, "unexpected argument '%s'", argv[optind]);
        fputs(DEMO_USAGE, stderr);
        return CLI_USAGE;
    }
    if (!cli_need_url(ctx->order_url, "ORDER_SERVICE_URL", "--order-url") ||
        !cli_need_url(ctx->query_url, "QUERY_API_URL", "--query-url") ||
        !cli_need_url(ctx->inventory_url, "INVENTORY_SERVICE_URL", "--inventory-url"))
        return CLI_USAGE;
    return CLI_OK;
}

static int run_demo(demo_run_t *run) {
    char err[512];
    printf("deta-cli demo: %zu orders (%zu to cancel), %d threads, seed %llu\n", run->norders,
           run->ncancels, run->concurrency, (unsigned long long)run->seed);
    printf("  order-service %s, query-api %s, inventory-service %s\n", run->ctx->order_url,
           run->ctx->query_url, run->ctx->inventory_url);
    fflush(stdout);
    deta_client_t *h = cli_client_new();
    bool have_stock = h && stock_fetch(h, run->ctx->inventory_url, &run->before, err, sizeof err);
    deta_client_free(h);
    if (!have_stock)
        return cli_fail(CLI_FAIL, "cannot read the stock before the run: %s", err);

    double started = monotonic();
    place_orders(run);
    wait_for_end_states(run, started);
    read_timelines(run);
    if (!read_stock_after(run, err, sizeof err))
        cli_fail(CLI_FAIL, "cannot read the stock after the run: %s", err);
    return report_print(run);
}

int cli_cmd_demo(cli_ctx_t *ctx, int argc, char **argv) {
    demo_run_t run = {
        .ctx = ctx, .norders = 300, .concurrency = 8, .seed = 42, .wait_seconds = 180};
    int status = parse_demo_options(&run, ctx, argc, argv);
    if (status != CLI_OK)
        return status < 0 ? CLI_OK : status;
    run.orders = calloc(run.norders, sizeof *run.orders);
    if (!run.orders)
        return cli_fail(CLI_FAIL, "out of memory for %zu orders", run.norders);
    mix_order_t *plan = calloc(run.norders, sizeof *plan);
    if (!plan) {
        free(run.orders);
        return cli_fail(CLI_FAIL, "out of memory for %zu orders", run.norders);
    }
    mix_plan(run.seed, run.norders, plan);
    for (size_t i = 0; i < run.norders; i++) {
        run.orders[i].plan = plan[i];
        run.orders[i].assigned_ms = run.orders[i].delivered_ms = -1;
        run.orders[i].cancel_at = demo_cancel_moment(i, run.norders, run.ncancels);
    }
    free(plan);
    status = run_demo(&run);
    stock_clear(&run.before);
    stock_clear(&run.after);
    free(run.orders);
    return status;
}
