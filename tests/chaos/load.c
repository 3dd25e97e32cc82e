/*
 * load.c - the chaos run's clients: its items, then its orders.
 *
 * Items are created before the first fault, so their initial stock is known for
 * certain (each PUT is retried until it is answered 200/201).
 *
 * Orders: CHAOS_THREADS threads take plan indexes from one atomic counter and
 * place each order, paced to CHAOS_RATE in all by a shared schedule (each
 * order has its slot: start + index / rate). Each order has an Idempotency-Key
 * of its own (a random UUID, kept across its retries), so every failure (5xx,
 * a timeout, a connection refused or cut) is retried by the clients' library
 * (deta_order_create, bounded backoff) for up to PATIENCE_S: order-service
 * answers a repeat with the order the key made, so a killed order-service
 * loses and doubles nothing. The answer is recorded in the plan (accepted with
 * its orderId, or how the last attempt failed) for verify.c.
 *
 * Cancels: the orders the plan cancels right after create are cancelled by
 * their client at once; the others by one canceller thread, which reads their
 * status in the read model and cancels each once it reached its stage (after
 * reserved, paid, assigned or picked up: the last ones expect a refusal), so
 * that cancels land at every stage of the saga while the faults go on.
 */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chaos.h"
#include "deta/client_orders.h"
#include "deta/client_retry.h"
#include "deta/states.h"

#define PATIENCE_S 60.0     /* how long an order waits for order-service to be back */
#define REQUEST_TIMEOUT_MS 20000L
#define CONNECT_TIMEOUT_MS 3000L
#define RETRY_PAUSE_MS 200

/* A handle of its own for one request: a connection kept across the kills
 * would mostly be found dead. NULL (with err said) when out of memory. */
static deta_client_t *fresh_client(char *err, size_t errsize) {
    deta_client_t *c = deta_client_new(REQUEST_TIMEOUT_MS, CONNECT_TIMEOUT_MS);
    if (!c)
        snprintf(err, errsize, "out of memory");
    return c;
}

/* ---- items ---- */

/* One PUT of the item's stock, as the operator (OPERATOR_TOKEN, from the stack's
 * stack.env); true when answered 200 or 201. */
static bool put_once(const char *url, const char *body) {
    char err[512];
    deta_client_t *c = fresh_client(err, sizeof err);
    deta_client_resp_t r = {.body = ""};
    if (c && deta_client_set_token(c, deta_client_env_token(true)))
        deta_client_json(c, "PUT", url, body, &r, err, sizeof err);
    bool ok = r.status == 200 || r.status == 201;
    if (!ok)
        fprintf(stderr, "chaos: PUT %s: %s, status %ld; retrying\n", url,
                deta_client_strerror(r.error), r.status);
    deta_client_resp_clear(&r);
    deta_client_free(c);
    return ok;
}

static bool put_item(const chaos_run_t *run, const chaos_item_t *it) {
    char url[512], body[128];
    snprintf(url, sizeof url, "%s/api/inventory/%s", run->s.inventory_url, it->id);
    snprintf(body, sizeof body, "{\"available\": %ld}", it->initial);
    for (double until = chaos_now() + PATIENCE_S; chaos_now() < until;) {
        if (put_once(url, body))
            return true;
        chaos_sleep_ms(1000);
    }
    return false;
}

bool chaos_setup_items(chaos_run_t *run) {
    for (int i = 0; i < CHAOS_ITEMS; i++)
        if (!put_item(run, &run->items[i])) {
            fprintf(stderr, "chaos: cannot create item %s\n", run->items[i].id);
            return false;
        }
    printf("chaos: %d items created (%d scarce, %ld units each)\n", CHAOS_ITEMS,
           CHAOS_SCARCE_ITEMS, run->items[CHAOS_ITEMS - 1].initial);
    return true;
}

/* ---- orders ---- */

static char *order_body(const chaos_run_t *run, long i) {
    const chaos_order_t *o = &run->orders[i];
    char customer[96];
    chaos_customer_id(run, i, customer, sizeof customer);
    json_t *items = json_array();
    for (int l = 0; l < o->nlines; l++) {
        char price[32];
        snprintf(price, sizeof price, "%ld.%02ld", o->lines[l].cents / 100,
                 o->lines[l].cents % 100);
        json_array_append_new(items, json_pack("{s:s, s:i, s:s}", "itemId",
                                               run->items[o->lines[l].item].id, "quantity",
                                               o->lines[l].quantity, "unitPrice", price));
    }
    json_t *body = json_pack("{s:s, s:s, s:o}", "customerId", customer, "currency", "USD",
                             "items", items);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    return text;
}

/* The clients' retry policy for the run: only the patience bounds the
 * attempts, since each order must be placed whatever the faults do (its key
 * makes every retry safe), and a fresh connection each time (NULL handle). */
static deta_retry_policy_t chaos_policy(void) {
    deta_retry_policy_t p = deta_retry_policy_default();
    p.max_attempts = 0;
    p.first_backoff_ms = RETRY_PAUSE_MS;
    p.max_backoff_ms = 3000;
    p.deadline_ms = (long)(PATIENCE_S * 1000);
    p.request_timeout_ms = REQUEST_TIMEOUT_MS;
    p.connect_timeout_ms = CONNECT_TIMEOUT_MS;
    return p;
}

const char *chaos_cancel_at_name(chaos_cancel_at_t at) {
    static const char *const names[CANCEL_STAGES] = {"none", "after create", "after reserved",
                                                     "after paid", "after assigned",
                                                     "after picked up"};
    return (unsigned)at < CANCEL_STAGES ? names[at] : "?";
}

/* What the last attempt at order i's POST means for the order. */
static void judge_answer(chaos_order_t *o, long i, deta_outcome_t outcome,
                         const deta_call_result_t *r) {
    o->http_status = r->status;
    o->attempts = r->attempts;
    if (outcome == DETA_OUTCOME_CREATED || outcome == DETA_OUTCOME_REPLAYED) {
        o->replayed = outcome == DETA_OUTCOME_REPLAYED;
        if (deta_order_id_of(r->json, o->order_id, sizeof o->order_id)) {
            o->placed = PLACED_ACCEPTED;
        } else {
            chaos_violation("accepted without an orderId", "order %ld: HTTP %ld", i, r->status);
            o->placed = PLACED_CUT_OFF;
        }
    } else if (outcome == DETA_OUTCOME_TRANSIENT) {
        o->placed = r->status >= 500 ? PLACED_UNAVAILABLE
                    : strstr(r->error, "onnect") ? PLACED_UNREACHABLE
                                                 : PLACED_CUT_OFF;
        chaos_violation("order given up by its client", "order %ld: %d attempts in %.0f s: %s",
                        i, r->attempts, r->millis / 1000.0, r->error);
    } else {
        o->placed = PLACED_REFUSED;
        chaos_violation("valid order refused", "order %ld: %s: %.200s", i,
                        deta_outcome_name(outcome), r->error);
    }
}

static void send_cancel(chaos_run_t *run, chaos_order_t *o, const char *seen) {
    deta_retry_policy_t p = chaos_policy();
    deta_call_result_t r;
    o->cancel_outcome = (int)deta_order_cancel(&p, NULL, run->s.order_url, o->order_id,
                                               "chaos", &r);
    snprintf(o->cancel_seen, sizeof o->cancel_seen, "%s", seen);
    o->cancel_sent = true;
    if (r.outcome != DETA_OUTCOME_REQUESTED && r.outcome != DETA_OUTCOME_CANCELLED &&
        r.outcome != DETA_OUTCOME_REFUSED)
        chaos_violation("cancel not answered 202, 200 or 409", "order %s: %s: %.200s",
                        o->order_id, deta_outcome_name(r.outcome), r.error);
    deta_call_result_clear(&r);
}

/* Places order i under its key, retried through every fault within the
 * patience; an order the plan cancels right after create is cancelled then. */
static void place_one(chaos_run_t *run, long i) {
    chaos_order_t *o = &run->orders[i];
    char *body = order_body(run, i);
    if (!body || !deta_idempotency_key_new(o->key)) {
        o->placed = PLACED_UNREACHABLE;
        free(body);
        return;
    }
    deta_retry_policy_t p = chaos_policy();
    deta_call_result_t r;
    deta_outcome_t outcome = deta_order_create(&p, NULL, run->s.order_url, body, o->key, &r);
    judge_answer(o, i, outcome, &r);
    deta_call_result_clear(&r);
    free(body);
    if (o->placed == PLACED_ACCEPTED && o->cancel_at == CANCEL_AT_CREATED)
        send_cancel(run, o, DETA_STATE_CREATED);
}

/* ---- the canceller ---- */

#define CANCELLER_ROUND_MS 250
#define CANCEL_PATIENCE_S 90.0 /* after the last order is placed */

/* Whether order o, seen in status, has reached the stage of its cancel. */
static bool cancel_due(const chaos_order_t *o, const char *status) {
    static const char *const want[CANCEL_STAGES] = {
        NULL, NULL, DETA_STATE_INVENTORY_RESERVED, DETA_STATE_PAYMENT_AUTHORIZED,
        DETA_STATE_DELIVERY_ASSIGNED, DETA_STATE_PICKED_UP};
    if (deta_order_is_end_state(status))
        return true; /* it ended first: the cancel is sent anyway, for a refusal */
    return want[o->cancel_at] && deta_order_reached(status, want[o->cancel_at]);
}

typedef struct canceller {
    chaos_run_t *run;
    atomic_bool placing_done;
} canceller_t;

/* Reads each accepted order awaiting a later-stage cancel from the read model
 * and cancels it when it got there; ends when none awaits (all placed), or
 * CANCEL_PATIENCE_S after the placing ended. One thread: the cancels are few. */
static void *canceller_main(void *arg) {
    canceller_t *c = arg;
    chaos_run_t *run = c->run;
    double placed_at = 0;
    long late = 0;
    for (;;) {
        bool done = atomic_load(&c->placing_done);
        if (done && placed_at == 0)
            placed_at = chaos_now();
        /* Past its patience (a backlog of paid orders waits for drivers while the
         * faults go on) a cancel is sent at whatever stage its order is in: it still
         * exercises the saga, only not at the planned stage. */
        bool overdue = done && chaos_now() - placed_at > CANCEL_PATIENCE_S;
        long waiting = 0;
        for (long i = 0; i < run->s.orders; i++) {
            chaos_order_t *o = &run->orders[i];
            if (o->cancel_at <= CANCEL_AT_CREATED || o->cancel_sent)
                continue;
            /* placed by a client thread: read only once its count says so */
            if (atomic_load(&o->ready) == 0) {
                waiting++;
                continue;
            }
            if (o->placed != PLACED_ACCEPTED)
                continue;
            waiting++;
            deta_client_t *h = deta_client_new(5000, CONNECT_TIMEOUT_MS);
            char status[32] = "";
            if (h)
                deta_order_status(h, run->s.query_url, o->order_id, status, sizeof status);
            deta_client_free(h);
            if ((status[0] && cancel_due(o, status)) || overdue) {
                late += !(status[0] && cancel_due(o, status));
                send_cancel(run, o, status[0] ? status : "unknown");
                waiting--;
            }
        }
        if (done && waiting == 0)
            break;
        chaos_sleep_ms(CANCELLER_ROUND_MS);
    }
    if (late > 0)
        printf("chaos: %ld cancel(s) sent before their order reached the planned stage (not "
               "seen in the read model within %.0f s of the last order)\n",
               late, CANCEL_PATIENCE_S);
    return NULL;
}

typedef struct pacer {
    chaos_run_t *run;
    double start;
} pacer_t;

static void *client_main(void *arg) {
    pacer_t *p = arg;
    chaos_run_t *run = p->run;
    for (;;) {
        long i = atomic_fetch_add(&run->next_order, 1);
        if (i >= run->s.orders)
            break;
        if (run->s.rate > 0) {
            double slot = p->start + (double)i / (double)run->s.rate;
            double wait = slot - chaos_now();
            if (wait > 0)
                chaos_sleep_ms((long)(wait * 1000));
        }
        place_one(run, i);
        atomic_store(&run->orders[i].ready, 1);
        long done = atomic_fetch_add(&run->placed_count, 1) + 1;
        if (done % 500 == 0 || done == run->s.orders)
            printf("chaos: %ld/%ld orders placed\n", done, run->s.orders);
    }
    return NULL;
}

void chaos_place_orders(chaos_run_t *run) {
    canceller_t canceller = {.run = run};
    atomic_init(&canceller.placing_done, false);
    pthread_t cancel_thread;
    bool cancelling = pthread_create(&cancel_thread, NULL, canceller_main, &canceller) == 0;
    pacer_t p = {run, chaos_now()};
    pthread_t threads[64];
    long n = run->s.threads;
    long started = 0;
    for (; started < n; started++)
        if (pthread_create(&threads[started], NULL, client_main, &p) != 0)
            break;
    if (started == 0)
        client_main(&p);
    for (long t = 0; t < started; t++)
        pthread_join(threads[t], NULL);
    atomic_store(&canceller.placing_done, true);
    if (cancelling)
        pthread_join(cancel_thread, NULL);
    else
        canceller_main(&canceller);
}
