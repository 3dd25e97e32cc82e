/*
 * report.c - what the demo saw, and whether the numbers add up.
 *
 * The report is for a person reading a terminal: each section is a few aligned
 * lines, and every check says what it compared, so that a FAIL explains itself.
 * The verdict is PASS only when
 *   - every order was accepted (201): the demo's orders are all valid;
 *   - every accepted order reached an end state (CANCELLED is one), and the end
 *     states add up to the accepted count;
 *   - every planned cancel was sent and answered 202, 200 or 409; a cancelled
 *     order that had been paid shows a refund of its whole total, and no other
 *     order shows one;
 *   - for each item the demo touched, available + held + sold is the same before
 *     and after, nothing is left held, and sold grew by exactly the units of the
 *     demo's paid orders (inventory-service sells at payment.authorized), which
 *     are its DELIVERED orders once every order has ended.
 * What is only informative (an ordinary order declined by a random gateway
 * decline, a decline-* customer that the gateway let through because the stack
 * runs with other settings) is printed as a note, not a failure.
 *
 * Latencies: intake is the POST round trip seen by the client; order-to-assigned
 * and order-to-delivered come from the events' occurredAt minus the order's
 * createdAt, both written by the services' clocks, so they measure the saga and
 * not the polling. Percentiles are nearest-rank.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "deta/states.h"

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The smallest value with at least pct% of the values at or below it. */
static double nearest_rank(const double *sorted, size_t n, size_t pct) {
    size_t rank = (pct * n + 99) / 100;
    if (rank < 1)
        rank = 1;
    return sorted[(rank > n ? n : rank) - 1];
}

lat_stats_t lat_stats_of(double *v, size_t n) {
    lat_stats_t s = {0};
    s.n = n;
    if (n == 0)
        return s;
    qsort(v, n, sizeof *v, compare_doubles);
    s.p50 = nearest_rank(v, n, 50);
    s.p95 = nearest_rank(v, n, 95);
    s.p99 = nearest_rank(v, n, 99);
    s.max = v[n - 1];
    return s;
}

/* Milliseconds shown as "3.1 ms" below a second, "12.40 s" above. */
static void format_ms(double ms, char *buf, size_t size) {
    if (ms < 1000)
        snprintf(buf, size, "%.1f ms", ms);
    else
        snprintf(buf, size, "%.2f s", ms / 1000);
}

void lat_stats_format(const lat_stats_t *s, char *buf, size_t size) {
    if (s->n == 0) {
        snprintf(buf, size, "no samples");
        return;
    }
    char a[24], b[24], c[24], d[24];
    format_ms(s->p50, a, sizeof a);
    format_ms(s->p95, b, sizeof b);
    format_ms(s->p99, c, sizeof c);
    format_ms(s->max, d, sizeof d);
    snprintf(buf, size, "p50 %s   p95 %s   p99 %s   max %s   (%zu orders)", a, b, c, d, s->n);
}

/* ---- the verdict's bookkeeping ---------------------------------------------- */

typedef struct verdict {
    int failures;
} verdict_t;

static void check(verdict_t *v, bool ok, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void check(verdict_t *v, bool ok, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("  [%s] ", ok ? " ok " : "FAIL");
    vprintf(fmt, ap);
    putchar('\n');
    va_end(ap);
    if (!ok)
        v->failures++;
}

/* ---- sections ------------------------------------------------------------------ */

static size_t count_accepted(const demo_run_t *run) {
    size_t n = 0;
    for (size_t i = 0; i < run->norders; i++)
        n += run->orders[i].id[0] != '\0';
    return n;
}

static void report_intake(const demo_run_t *run, verdict_t *v) {
    size_t accepted = 0;
    double *lat = malloc((run->norders ? run->norders : 1) * sizeof *lat);
    const demo_order_t *first_refused = NULL;
    for (size_t i = 0; i < run->norders; i++) {
        const demo_order_t *o = &run->orders[i];
        if (o->id[0]) {
            if (lat)
                lat[accepted] = o->intake_ms;
            accepted++;
        } else if (!first_refused) {
            first_refused = o;
        }
    }
    printf("\nintake (POST /api/orders)\n");
    size_t replayed = 0, retried = 0;
    for (size_t i = 0; i < run->norders; i++) {
        replayed += run->orders[i].replayed;
        retried += run->orders[i].attempts > 1;
    }
    printf("  placed %zu, accepted %zu, refused or failed %zu\n", run->norders, accepted,
           run->norders - accepted);
    printf("  each under an Idempotency-Key: %zu retried, %zu answered as a replay "
           "(the order a lost answer had made)\n",
           retried, replayed);
    char line[256];
    lat_stats_t s = lat_stats_of(lat, lat ? accepted : 0);
    lat_stats_format(&s, line, sizeof line);
    printf("  latency      %s\n", line);
    printf("  throughput   %.1f orders/s (%zu in %.2f s)\n",
           run->intake_seconds > 0 ? (double)accepted / run->intake_seconds : 0.0, accepted,
           run->intake_seconds);
    if (first_refused)
        printf("  first refusal: %s\n", first_refused->error[0] ? first_refused->error : "?");
    check(v, accepted == run->norders, "every order accepted (%zu of %zu)", accepted, run->norders);
    free(lat);
}

static size_t count_status(const demo_run_t *run, const char *status, int kind) {
    size_t n = 0;
    for (size_t i = 0; i < run->norders; i++) {
        const demo_order_t *o = &run->orders[i];
        n += o->id[0] && o->done && !strcmp(o->status, status) &&
             (kind < 0 || (int)o->plan.kind == kind);
    }
    return n;
}

static void report_stuck(const demo_run_t *run, size_t stuck) {
    printf("  not finished after %d s (%zu):\n", run->wait_seconds, stuck);
    size_t shown = 0;
    for (size_t i = 0; i < run->norders && shown < 20; i++) {
        const demo_order_t *o = &run->orders[i];
        if (!o->id[0] || o->done)
            continue;
        printf("    %s  %-18s %-18s %s\n", o->id, o->status[0] ? o->status : "(not in read model)",
               mix_kind_name(o->plan.kind), o->error);
        shown++;
    }
    if (stuck > shown)
        printf("    ... and %zu more\n", stuck - shown);
}

static void report_end_states(const demo_run_t *run, verdict_t *v) {
    size_t accepted = count_accepted(run), total = 0;
    printf("\nend states (read model, GET /api/orders/{id})\n");
    for (int e = 0; e < DETA_ORDER_END_STATES; e++) {
        size_t n = count_status(run, deta_order_end_states[e], -1);
        printf("  %-20s %6zu\n", deta_order_end_states[e], n);
        total += n;
    }
    printf("  %-20s %6zu\n", "total", total);
    if (total < accepted)
        report_stuck(run, accepted - total);
    check(v, total == accepted && accepted > 0,
          "end states add up to the accepted orders (%zu = %zu)", total, accepted);
    if (run->settle_seconds > 0 && total == accepted)
        printf("  all seen in an end state %.1f s after the first order (%.1f orders/s end to "
               "end; polled every 0.5 s)\n",
               run->settle_seconds, (double)total / run->settle_seconds);
}

static void report_kinds(const demo_run_t *run) {
    printf("\nby kind of order          %10s %10s %10s %10s   expected\n", "DELIVERED", "REJECTED",
           "PAY_FAILED", "CANCELLED");
    for (int k = 0; k < MIX_KINDS; k++) {
        size_t n[DETA_ORDER_END_STATES], all = 0;
        for (int e = 0; e < DETA_ORDER_END_STATES; e++)
            all += n[e] = count_status(run, deta_order_end_states[e], k);
        if (all == 0)
            continue;
        printf("  %-22s %10zu %10zu %10zu %10zu   %s\n", mix_kind_name((mix_kind_t)k), n[0], n[1],
               n[2], n[3], mix_kind_expectation((mix_kind_t)k));
    }
    size_t declined_ok = count_status(run, DETA_STATE_PAYMENT_FAILED, MIX_DECLINED_CUSTOMER),
           declined_all = 0,
           limited_rejected = count_status(run, DETA_STATE_INVENTORY_REJECTED, MIX_LIMITED);
    for (int e = 0; e < DETA_ORDER_END_STATES; e++)
        declined_all += count_status(run, deta_order_end_states[e], MIX_DECLINED_CUSTOMER);
    if (declined_ok < declined_all)
        printf("  note: %zu decline-* customers were not declined: does the stack run with "
               "PAYMENT_DECLINE_CUSTOMERS='decline-*'?\n",
               declined_all - declined_ok);
    if (limited_rejected == 0)
        printf("  note: no sku-limited order was rejected: too few orders to exhaust its stock\n");
}

static void report_saga_latency(const demo_run_t *run) {
    double *assigned = malloc((run->norders ? run->norders : 1) * sizeof *assigned);
    double *delivered = malloc((run->norders ? run->norders : 1) * sizeof *delivered);
    size_t na = 0, nd = 0;
    for (size_t i = 0; assigned && delivered && i < run->norders; i++) {
        const demo_order_t *o = &run->orders[i];
        if (o->assigned_ms >= 0)
            assigned[na++] = (double)(o->assigned_ms - o->created_ms);
        if (o->delivered_ms >= 0)
            delivered[nd++] = (double)(o->delivered_ms - o->created_ms);
    }
    char line[256];
    printf("\nsaga latency (event occurredAt - order createdAt)\n");
    lat_stats_t s = lat_stats_of(assigned, assigned ? na : 0);
    lat_stats_format(&s, line, sizeof line);
    printf("  order -> delivery.assigned    %s\n", line);
    s = lat_stats_of(delivered, delivered ? nd : 0);
    lat_stats_format(&s, line, sizeof line);
    printf("  order -> delivery.delivered   %s\n", line);
    free(assigned);
    free(delivered);
}

/* Paid: the status follows payment.authorized, when inventory-service sells. */
static bool is_paid(const char *status) {
    return deta_order_reached(status, DETA_STATE_PAYMENT_AUTHORIZED);
}

/* Units of item_id in the demo's paid orders (all of them DELIVERED, when every
 * order finished). */
static long paid_units(const demo_run_t *run, const char *item_id) {
    long units = 0;
    for (size_t i = 0; i < run->norders; i++) {
        const demo_order_t *o = &run->orders[i];
        if (!o->id[0] || !is_paid(o->status))
            continue;
        for (int l = 0; l < o->plan.nlines; l++)
            if (!strcmp(o->plan.lines[l].item_id, item_id))
                units += o->plan.lines[l].quantity;
    }
    return units;
}

static bool item_in_orders(const demo_run_t *run, const char *item_id) {
    for (size_t i = 0; i < run->norders; i++)
        for (int l = 0; run->orders[i].id[0] && l < run->orders[i].plan.nlines; l++)
            if (!strcmp(run->orders[i].plan.lines[l].item_id, item_id))
                return true;
    return false;
}

/* The cancels: when they were sent, what order-service answered, where the
 * orders ended, and the refunds of the cancelled ones that had been paid. */
static void report_cancels(const demo_run_t *run, verdict_t *v) {
    size_t asked[CANCEL_MOMENTS] = {0}, answers[DETA_OUTCOME_COUNT] = {0};
    size_t sent = 0, planned = 0, cancelled = 0, went_on = 0, paid = 0, refunded = 0,
           wrong_refund = 0, refund_elsewhere = 0;
    for (size_t i = 0; i < run->norders; i++) {
        const demo_order_t *o = &run->orders[i];
        bool is_cancelled = o->done && !strcmp(o->status, DETA_STATE_CANCELLED);
        if (o->refunded[0] && !is_cancelled)
            refund_elsewhere++;
        if (o->cancel_at == CANCEL_NONE || !o->id[0])
            continue;
        planned++;
        if (!o->cancel_sent)
            continue;
        sent++;
        asked[o->cancel_at]++;
        answers[o->cancel_outcome]++;
        if (is_cancelled) {
            cancelled++;
            if (o->paid_seen) {
                paid++;
                refunded += o->refunded[0] != '\0';
                wrong_refund += !o->refunded[0] || strcmp(o->refunded, o->total) != 0;
            }
        } else if (o->done) {
            went_on++;
        }
    }
    printf("\ncancels (POST /api/orders/{id}/cancel)\n");
    printf("  asked %zu of %zu planned:", sent, planned);
    for (int m = CANCEL_AT_CREATED; m < CANCEL_MOMENTS; m++)
        printf("%s %zu %s", m == CANCEL_AT_CREATED ? "" : ",", asked[m],
               demo_cancel_moment_name((demo_cancel_at_t)m));
    printf("\n  answered: %zu requested (202), %zu cancelled (200), %zu refused (409), "
           "%zu other\n",
           answers[DETA_OUTCOME_REQUESTED], answers[DETA_OUTCOME_CANCELLED],
           answers[DETA_OUTCOME_REFUSED],
           sent - answers[DETA_OUTCOME_REQUESTED] - answers[DETA_OUTCOME_CANCELLED] -
               answers[DETA_OUTCOME_REFUSED]);
    printf("  ended CANCELLED %zu, went on to another end state %zu (a cancel that came too "
           "late)\n",
           cancelled, went_on);
    printf("  refunds: %zu of the %zu cancelled orders that had been paid\n", refunded, paid);
    check(v, sent == planned, "every planned cancel was sent (%zu of %zu)", sent, planned);
    check(v, answers[DETA_OUTCOME_REQUESTED] + answers[DETA_OUTCOME_CANCELLED] +
                     answers[DETA_OUTCOME_REFUSED] == sent,
          "every cancel answered 202, 200 or 409 (%zu of %zu)",
          answers[DETA_OUTCOME_REQUESTED] + answers[DETA_OUTCOME_CANCELLED] +
              answers[DETA_OUTCOME_REFUSED],
          sent);
    check(v, wrong_refund == 0, "each paid cancelled order refunded its whole total (%zu not)",
          wrong_refund);
    check(v, refund_elsewhere == 0, "no refund on an order that was not cancelled (%zu)",
          refund_elsewhere);
}

static void report_stock(const demo_run_t *run, verdict_t *v) {
    printf("\nstock of the items ordered (GET /api/inventory): before -> after\n");
    printf("  %-12s %20s   %20s   %s\n", "ITEM", "available/held/sold", "available/held/sold",
           "sold +, units paid");
    size_t items = 0, unconserved = 0, still_held = 0, mismatched = 0;
    for (size_t i = 0; i < run->before.n; i++) {
        const stock_row_t *b = &run->before.rows[i];
        if (!item_in_orders(run, b->item_id))
            continue;
        const stock_row_t *a = stock_find(&run->after, b->item_id);
        if (!a) {
            printf("  %-12s missing after the run\n", b->item_id);
            unconserved++;
            continue;
        }
        long want = paid_units(run, b->item_id), got = a->sold - b->sold;
        char before[48], after[48];
        snprintf(before, sizeof before, "%ld/%ld/%ld", b->available, b->held, b->sold);
        snprintf(after, sizeof after, "%ld/%ld/%ld", a->available, a->held, a->sold);
        printf("  %-12s %20s -> %20s   +%ld, %ld\n", b->item_id, before, after, got, want);
        items++;
        unconserved += b->available + b->held + b->sold != a->available + a->held + a->sold;
        still_held += a->held != 0;
        mismatched += got != want;
    }
    check(v, run->after.n > 0 && unconserved == 0,
          "available + held + sold unchanged on each of %zu items (%zu differ)", items,
          unconserved);
    check(v, run->after.n > 0 && still_held == 0, "nothing left held (%zu items hold units)",
          still_held);
    check(v, run->after.n > 0 && mismatched == 0,
          "sold grew by the units of the paid orders (%zu items differ)", mismatched);
}

static const demo_order_t *first_with_status(const demo_run_t *run, const char *status) {
    for (size_t i = 0; i < run->norders; i++)
        if (run->orders[i].done && !strcmp(run->orders[i].status, status))
            return &run->orders[i];
    return NULL;
}

static void report_where_next(const demo_run_t *run) {
    printf("\nwhere to look next\n");
    for (int e = 0; e < DETA_ORDER_END_STATES; e++) {
        const demo_order_t *o = first_with_status(run, deta_order_end_states[e]);
        if (o)
            printf("  deta-cli get %s      # ended %s\n", o->id, deta_order_end_states[e]);
    }
    const demo_order_t *o = first_with_status(run, DETA_STATE_DELIVERED);
    if (o)
        printf("  deta-cli watch %s    # its timeline, event by event\n", o->id);
    printf("  deta-cli list --status PAYMENT_FAILED --limit 20\n");
    printf("  deta-cli list --status CANCELLED --limit 20\n");
    printf("  deta-cli list --customer %s\n", run->norders ? run->orders[0].plan.customer : "c-1");
    const char *stack_dir = getenv("STACK_DIR");
    printf("  logs:    %s/logs/ (one file per service)\n",
           stack_dir && *stack_dir ? stack_dir : ".local");
    static const char *const urls[] = {"ORDER_SERVICE_URL", "INVENTORY_SERVICE_URL",
                                       "PAYMENT_SERVICE_URL", "DELIVERY_SERVICE_URL",
                                       "QUERY_API_URL"};
    for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++) {
        const char *u = getenv(urls[i]);
        if (u && *u)
            printf("  metrics: %s/actuator/prometheus\n", u);
    }
}

int report_print(const demo_run_t *run) {
    verdict_t v = {0};
    report_intake(run, &v);
    report_end_states(run, &v);
    report_kinds(run);
    report_saga_latency(run);
    report_cancels(run, &v);
    report_stock(run, &v);
    report_where_next(run);
    if (v.failures == 0)
        printf("\ndemo PASSED: every order reached an end state and the numbers add up\n");
    else
        printf("\ndemo FAILED: %d check%s failed (marked FAIL above)\n", v.failures,
               v.failures == 1 ? "" : "s");
    fflush(stdout);
    return v.failures == 0 ? CLI_OK : CLI_FAIL;
}
